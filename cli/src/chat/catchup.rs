//! What `/catchup` and `xfer chat --catchup` print from the server's [`Catchup`]:
//! unread counts per conversation, mentions of you, and files handed to you since
//! your read positions.
//!
//! Three forms: lines for people (interactive), stable lines for scripts (one per
//! conversation with unread messages, `#lab unread=3 mentions=1`, then one per file,
//! `file from=bob size=1234 inbox/bob/notes.txt`, the path last as it may hold
//! spaces), and one JSON object (`--json`).

use serde::Serialize;
use xfer_proto::{Catchup, ChatMessage, MessageBody};

use super::render::json_line;
use crate::output::{escape_control, human_bytes};

/// The files of a catch-up: sender, path, size.
fn files(c: &Catchup) -> impl Iterator<Item = (&ChatMessage, &str, u64)> {
    c.files.iter().filter_map(|m| match &m.body {
        MessageBody::File { path, size, .. } => Some((m, path.as_str(), *size)),
        MessageBody::Text(_) => None,
    })
}

/// Stable lines for scripts; none when nothing is new.
pub fn script_lines(c: &Catchup) -> Vec<String> {
    let unread = c.conversations.iter().filter(|u| u.unread > 0);
    let mut lines: Vec<String> = unread
        .map(|u| format!("{} unread={} mentions={}", u.target, u.unread, u.mentions))
        .collect();
    lines.extend(files(c).map(|(m, path, size)| {
        format!(
            "file from={} size={size} {}",
            escape_control(&m.from),
            escape_control(path)
        )
    }));
    lines
}

/// Lines for people at a terminal: `#lab: 3 unread, 1 mention`.
pub fn human_lines(c: &Catchup) -> Vec<String> {
    let mut lines: Vec<String> = c
        .conversations
        .iter()
        .filter(|u| u.unread > 0)
        .map(|u| {
            let mut line = format!("{}: {} unread", u.target, u.unread);
            if u.mentions > 0 {
                let s = if u.mentions == 1 { "" } else { "s" };
                line.push_str(&format!(", {} mention{s} of you", u.mentions));
            }
            line
        })
        .collect();
    lines.extend(files(c).map(|(m, path, size)| {
        format!(
            "file from {}: {} ({})",
            escape_control(&m.from),
            escape_control(path),
            human_bytes(size)
        )
    }));
    if lines.is_empty() {
        lines.push("nothing new since you last read".into());
    }
    lines
}

#[derive(Serialize)]
struct CatchupJson {
    conversations: Vec<UnreadJson>,
    files: Vec<serde_json::Value>,
}

#[derive(Serialize)]
struct UnreadJson {
    target: String,
    read: Option<u64>,
    unread: u64,
    mentions: u64,
    last_id: u64,
}

/// One JSON object: every conversation (unread 0 too) and the files, each file as
/// `--follow --json` prints a message.
pub fn json(c: &Catchup) -> String {
    let conversations = c
        .conversations
        .iter()
        .map(|u| UnreadJson {
            target: u.target.to_string(),
            read: u.read,
            unread: u.unread,
            mentions: u.mentions,
            last_id: u.last_id,
        })
        .collect();
    let files = c
        .files
        .iter()
        .filter_map(|m| serde_json::from_str(&json_line(m)).ok())
        .collect();
    serde_json::to_string(&CatchupJson {
        conversations,
        files,
    })
    .expect("a catch-up always serialises")
}

#[cfg(test)]
mod tests {
    use xfer_proto::{Digest, Target, Unread};

    use super::*;

    fn sample() -> Catchup {
        let unread = |t: &str, n, m| Unread {
            target: Target::parse(t).unwrap(),
            read: Some(4),
            unread: n,
            mentions: m,
            last_id: 9,
        };
        Catchup {
            conversations: vec![
                unread("#lab", 3, 1),
                unread("#ops", 0, 0),
                unread("@bob", 2, 0),
            ],
            files: vec![ChatMessage {
                id: 8,
                time_unix_ms: 0,
                from: "bob".into(),
                target: Target::parse("@alice").unwrap(),
                body: MessageBody::File {
                    path: "inbox/bob/my notes.txt".into(),
                    size: 1234,
                    digest: Digest::of(b""),
                },
            }],
        }
    }

    #[test]
    fn script_lines_are_stable_and_skip_what_is_read() {
        assert_eq!(
            script_lines(&sample()),
            [
                "#lab unread=3 mentions=1",
                "@bob unread=2 mentions=0",
                "file from=bob size=1234 inbox/bob/my notes.txt",
            ]
        );
        assert!(script_lines(&Catchup::default()).is_empty());
        assert_eq!(
            human_lines(&Catchup::default()),
            ["nothing new since you last read"]
        );
        assert_eq!(
            human_lines(&sample())[0],
            "#lab: 3 unread, 1 mention of you"
        );
    }

    #[test]
    fn json_lists_every_conversation_and_the_files() {
        let v: serde_json::Value = serde_json::from_str(&json(&sample())).unwrap();
        assert_eq!(v["conversations"].as_array().unwrap().len(), 3);
        assert_eq!(v["conversations"][1]["target"], "#ops");
        assert_eq!(v["conversations"][0]["read"], 4);
        assert_eq!(v["files"][0]["file"]["path"], "inbox/bob/my notes.txt");
        assert_eq!(v["files"][0]["from"], "bob");
    }
}
