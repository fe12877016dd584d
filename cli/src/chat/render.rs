//! How chat messages and events are shown: stable lines and JSON objects for scripts
//! (`--follow`, `--history`), and lines for people with local times and optional
//! colour (interactive mode).
//!
//! Everything another user wrote (names aside, which the server validates, text and
//! file names) goes through [`escape_control`], so a message cannot move the cursor,
//! clear the screen or retitle the terminal. Colour is only ever added around text
//! already escaped.

use std::fmt::Write as _;
use std::hash::{Hash as _, Hasher as _};

use serde::Serialize;
use xfer_proto::{
    ChannelInfo, ChatEvent, ChatMessage, MessageBody, Presence, PresenceState, Target, UserName,
};

use crate::output::{escape_control, human_bytes, is_bidi_control};

/// `2026-11-21T10:02:03Z`: UTC, to the second (the `--follow` and `--json` time).
pub fn utc_stamp(time_unix_ms: u64) -> String {
    let ms = i64::try_from(time_unix_ms).unwrap_or(i64::MAX);
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(ts) => ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Err(_) => "9999-12-31T23:59:59Z".to_string(),
    }
}

/// One `--follow`/`--history` line:
/// `TIME TARGET <FROM> TEXT` for text, `TIME TARGET [FROM] file PATH SIZE BLAKE3` for a
/// file handed to the recipient. TARGET is `#channel`, or `@recipient` for a direct
/// message. Text is escaped, so a message is always exactly one line.
pub fn follow_line(msg: &ChatMessage) -> String {
    let time = utc_stamp(msg.time_unix_ms);
    let target = msg.target.to_string();
    let from = escape_control(&msg.from);
    match &msg.body {
        MessageBody::Text(text) => format!("{time} {target} <{from}> {}", escape_control(text)),
        MessageBody::File { path, size, digest } => format!(
            "{time} {target} [{from}] file {} {size} {digest}",
            escape_control(path)
        ),
    }
}

/// A message as `--json` prints it (one object per line).
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct MessageJson<'a> {
    id: u64,
    time: String,
    time_unix_ms: u64,
    from: &'a str,
    target: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<FileJson<'a>>,
}

/// The `file` field of [`MessageJson`].
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct FileJson<'a> {
    path: &'a str,
    size: u64,
    blake3: String,
}

/// One `--json` line. JSON escapes control characters itself; bidirectional-text
/// controls are escaped here (`\u202e`: the same text once parsed), so the line cannot
/// display reordered either.
pub fn json_line(msg: &ChatMessage) -> String {
    let (text, file) = match &msg.body {
        MessageBody::Text(t) => (Some(t.as_str()), None),
        MessageBody::File { path, size, digest } => (
            None,
            Some(FileJson {
                path,
                size: *size,
                blake3: digest.to_string(),
            }),
        ),
    };
    let json = MessageJson {
        id: msg.id,
        time: utc_stamp(msg.time_unix_ms),
        time_unix_ms: msg.time_unix_ms,
        from: &msg.from,
        target: &msg.target.to_string(),
        text,
        file,
    };
    let line = serde_json::to_string(&json).expect("a message always serialises");
    if !line.chars().any(is_bidi_control) {
        return line;
    }
    // Only string contents can hold them, where a `\uXXXX` escape means the same.
    let mut out = String::with_capacity(line.len() + 16);
    for c in line.chars() {
        if is_bidi_control(c) {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether to colour output on a stream: only on a terminal, never with `NO_COLOR` set
/// (non-empty, see no-color.org) or `TERM=dumb`.
pub fn colour_wanted(is_terminal: bool) -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
    is_terminal && !no_color && !dumb
}

/// Rendering for people: local times, `*name*` for direct messages, optional colour.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    colour: bool,
}

const DIM: &str = "2";
const BOLD: &str = "1";
const RED: &str = "31";
const YELLOW: &str = "33";
const CYAN: &str = "36";
const MAGENTA: &str = "35";
/// The marker line after the backlog already read.
pub const NEW_SINCE: &str = "— new since you left —";

/// Bold and reverse video: a line naming you.
const MENTION: &str = "1;7";
const NICK_COLOURS: [&str; 6] = ["32", "33", "34", "35", "36", "91"];

impl Style {
    /// With or without ANSI colour.
    pub fn new(colour: bool) -> Self {
        Style { colour }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    fn nick(&self, name: &str, me: &str) -> String {
        let name = escape_control(name);
        if name == me {
            return self.paint(BOLD, &name);
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        name.hash(&mut h);
        let code = NICK_COLOURS[(h.finish() % NICK_COLOURS.len() as u64) as usize];
        self.paint(code, &name)
    }

    /// `[10:02]` in local time, with the date in front when it is not today.
    pub fn clock(&self, time_unix_ms: u64) -> String {
        let ms = i64::try_from(time_unix_ms).unwrap_or(i64::MAX);
        let tz = jiff::tz::TimeZone::system();
        let stamp = match jiff::Timestamp::from_millisecond(ms) {
            Ok(ts) => {
                let zoned = ts.to_zoned(tz.clone());
                let today = jiff::Timestamp::now().to_zoned(tz).date();
                if zoned.date() == today {
                    zoned.strftime("%H:%M").to_string()
                } else {
                    zoned.strftime("%Y-%m-%d %H:%M").to_string()
                }
            }
            Err(_) => "--:--".to_string(),
        };
        self.paint(DIM, &format!("[{stamp}]"))
    }

    /// One message, seen by `me`.
    pub fn message(&self, msg: &ChatMessage, me: &str) -> String {
        self.message_in(msg, me, None)
    }

    /// One message, seen by `me` talking in `here`: a message of the channel being
    /// talked in goes without its `#channel` tag, as in irssi's window of it. A
    /// message naming `me` ([`mentions`]) has its text highlighted (with colour on).
    pub fn message_in(&self, msg: &ChatMessage, me: &str, here: Option<&Target>) -> String {
        let mut out = self.clock(msg.time_unix_ms);
        out.push(' ');
        let target = msg.target.to_string();
        let dm_to = msg.target.user().map(UserName::as_str);
        match (&msg.body, dm_to) {
            (MessageBody::Text(text), None) => {
                if here != Some(&msg.target) {
                    out.push_str(&self.paint(CYAN, &target));
                    out.push(' ');
                }
                let shown = escape_control(text);
                let shown = if msg.from != me && mentions(text, me) {
                    self.paint(MENTION, &shown)
                } else {
                    shown.into_owned()
                };
                let _ = write!(out, "<{}> {shown}", self.nick(&msg.from, me));
            }
            (MessageBody::Text(text), Some(to)) if msg.from == me => {
                let who = self.paint(MAGENTA, &format!("*{}*", escape_control(to)));
                let _ = write!(out, "-> {who} {}", escape_control(text));
            }
            (MessageBody::Text(text), Some(_)) => {
                let who = self.paint(MAGENTA, &format!("*{}*", escape_control(&msg.from)));
                let _ = write!(out, "{who} {}", escape_control(text));
            }
            (MessageBody::File { path, size, digest }, _) => {
                let name = path.rsplit('/').next().unwrap_or(path);
                let hex = digest.to_string();
                let what = format!(
                    "{} ({}, BLAKE3 {}…)",
                    escape_control(name),
                    human_bytes(*size),
                    &hex[..12]
                );
                if msg.from == me {
                    let to = dm_to.unwrap_or(&target);
                    let _ = write!(out, "-> sent {what} to {}", self.paint(MAGENTA, to));
                } else {
                    let _ = write!(
                        out,
                        "{} sent you {what}; get it with `xfer pull {}`",
                        self.nick(&msg.from, me),
                        escape_control(path)
                    );
                }
            }
        }
        out
    }

    /// A pushed event other than a message.
    pub fn event(&self, event: &ChatEvent) -> Option<String> {
        let text = match event {
            ChatEvent::Message(_) => return None,
            ChatEvent::Joined { channel, user } => format!(
                "{} joined {}",
                escape_control(user),
                escape_control(channel)
            ),
            ChatEvent::Parted { channel, user } => {
                format!("{} left {}", escape_control(user), escape_control(channel))
            }
            ChatEvent::Presence(p) => {
                format!("{} is {}", escape_control(&p.user), state_name(p.state))
            }
            ChatEvent::Missed { target, count } => {
                return Some(self.warning(&missed_text(target, *count)));
            }
        };
        Some(self.info(&text))
    }

    /// Between what was read and what came since: `— new since you left —`.
    pub fn new_since(&self) -> String {
        self.paint(YELLOW, NEW_SINCE)
    }

    /// A line from the client itself (`-- text`).
    pub fn info(&self, text: &str) -> String {
        self.paint(DIM, &format!("-- {text}"))
    }

    /// Something to notice (`!! text`).
    pub fn warning(&self, text: &str) -> String {
        self.paint(YELLOW, &format!("!! {text}"))
    }

    /// An error (`!! text`).
    pub fn error(&self, text: &str) -> String {
        self.paint(RED, &format!("!! {text}"))
    }
}

/// `line` laid out for a terminal `cols` wide: when it is longer, it breaks (between
/// words where it can) and every further row starts under the text column — after
/// `<nick> ` or `*nick* ` — as irssi's hanging indent does. Colour codes take no room.
pub fn hang(line: &str, cols: usize) -> String {
    let plain = console::strip_ansi_codes(line);
    if cols < 20 || console::measure_text_width(&plain) <= cols {
        return line.to_owned();
    }
    let indent = text_column(&plain).min(cols / 2);
    let mut out = String::with_capacity(line.len() + 16);
    let mut row = String::new();
    let mut width = 0;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // A colour code: copied whole, no width.
            row.push(c);
            for p in chars.by_ref() {
                row.push(p);
                if p != '[' && ('\x40'..='\x7e').contains(&p) {
                    break;
                }
            }
            continue;
        }
        let w = console::measure_text_width(c.encode_utf8(&mut [0; 4]));
        if width + w > cols {
            // Break after the row's last space past the indent, if there is one.
            let cut = row
                .rfind(' ')
                .filter(|&i| console::measure_text_width(&row[..i]) > indent);
            let rest = match cut {
                Some(i) => row.split_off(i + 1),
                None => String::new(),
            };
            out.push_str(row.trim_end());
            out.push('\n');
            row = " ".repeat(indent) + &rest;
            width = console::measure_text_width(&row);
        }
        row.push(c);
        width += w;
    }
    out.push_str(&row);
    out
}

/// Where a rendered message's text starts: after the first `> ` or `* ` (the sender),
/// else after the clock.
fn text_column(plain: &str) -> usize {
    let sender = [plain.find("> "), plain.find("* ")]
        .into_iter()
        .flatten()
        .min();
    let end = sender.map_or_else(|| plain.find("] ").map_or(0, |i| i + 2), |i| i + 2);
    console::measure_text_width(&plain[..end])
}

/// Whether `text` names `me` as a word (`hi alice`, `@alice:`, `Alice?`, not
/// `malice`), ignoring case.
pub fn mentions(text: &str, me: &str) -> bool {
    // The server counts mentions for `Catchup` with the same rule.
    xfer_proto::mentions(text, me)
}

/// `missed 12 messages in #lab; fetching them from history` (the server skipped this
/// connection ahead rather than wait for it, or had more to replay than it sends).
pub fn missed_text(target: &xfer_proto::Target, count: u64) -> String {
    let s = if count == 1 { "" } else { "s" };
    format!("missed {count} message{s} in {target}; fetching them from history")
}

/// `online`, `away`, `offline`.
pub fn state_name(state: PresenceState) -> &'static str {
    match state {
        PresenceState::Online => "online",
        PresenceState::Away => "away",
        PresenceState::Offline => "offline",
    }
}

/// `alice, bob (away)` for `/who`.
pub fn presence_list(users: &[Presence]) -> String {
    if users.is_empty() {
        return "nobody".to_string();
    }
    let names: Vec<String> = users
        .iter()
        .map(|p| match p.state {
            PresenceState::Online => escape_control(&p.user).into_owned(),
            s => format!("{} ({})", escape_control(&p.user), state_name(s)),
        })
        .collect();
    names.join(", ")
}

/// `#general (3), #lab (1)` for `/channels`.
pub fn channel_list(channels: &[ChannelInfo]) -> String {
    if channels.is_empty() {
        return "no channels have members".to_string();
    }
    let names: Vec<String> = channels
        .iter()
        .map(|c| format!("{} ({})", escape_control(&c.name), c.members))
        .collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use xfer_proto::Digest;

    use super::*;

    const HOSTILE: &str = "\x1b[2J\x1b]0;pwned\x07";

    fn text(from: &str, target: &str, t: &str) -> ChatMessage {
        ChatMessage {
            id: 7,
            time_unix_ms: 1_795_773_723_456,
            from: from.into(),
            target: target.parse().unwrap(),
            body: MessageBody::Text(t.into()),
        }
    }

    fn file(from: &str, to: &str) -> ChatMessage {
        ChatMessage {
            id: 8,
            time_unix_ms: 0,
            from: from.into(),
            target: format!("@{to}").parse().unwrap(),
            body: MessageBody::File {
                path: format!("inbox/{from}/a\x1bb.png"),
                size: 1536,
                digest: Digest([0xab; 32]),
            },
        }
    }

    #[test]
    fn stamps_are_utc_to_the_second() {
        assert_eq!(utc_stamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_stamp(1_795_773_723_456), "2026-11-27T10:02:03Z");
        assert_eq!(utc_stamp(u64::MAX), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn follow_lines_are_stable_and_escaped() {
        assert_eq!(
            follow_line(&text("bob", "#general", "hi there")),
            "2026-11-27T10:02:03Z #general <bob> hi there"
        );
        assert_eq!(
            follow_line(&text("alice", "@bob", "psst")),
            "2026-11-27T10:02:03Z @bob <alice> psst"
        );
        let line = follow_line(&text("eve", "#general", HOSTILE));
        assert_eq!(
            line,
            "2026-11-27T10:02:03Z #general <eve> \\x1b[2J\\x1b]0;pwned\\x07"
        );
        let line = follow_line(&text("eve", "#general", "two\nlines"));
        assert!(!line.contains('\n'), "{line}");
        assert_eq!(
            follow_line(&file("alice", "bob")),
            format!(
                "1970-01-01T00:00:00Z @bob [alice] file inbox/alice/a\\x1bb.png 1536 {}",
                "ab".repeat(32)
            )
        );
    }

    #[test]
    fn bidi_controls_are_escaped_everywhere_a_message_is_shown() {
        let spoof = "invoice\u{202e}gpj.exe";
        let shown = [
            follow_line(&text("eve", "#g", spoof)),
            Style::new(false).message(&text("eve", "#g", spoof), "bob"),
            json_line(&text("eve", "#g", spoof)),
        ];
        for line in &shown {
            assert!(!line.contains('\u{202e}'), "{line}");
            assert!(line.contains("invoice\\u"), "{line}");
        }
        let v: serde_json::Value = serde_json::from_str(&shown[2]).unwrap();
        assert_eq!(v["text"], spoof, "JSON still carries the text exactly");
        let tricky = "\\\u{2066}\"";
        let v: serde_json::Value =
            serde_json::from_str(&json_line(&text("eve", "#g", tricky))).unwrap();
        assert_eq!(v["text"], tricky);
    }

    #[test]
    fn json_lines_carry_every_field_and_no_raw_control_bytes() {
        let v: serde_json::Value =
            serde_json::from_str(&json_line(&text("eve", "#general", HOSTILE))).unwrap();
        assert_eq!(v["id"], 7);
        assert_eq!(v["time"], "2026-11-27T10:02:03Z");
        assert_eq!(v["time_unix_ms"], 1_795_773_723_456u64);
        assert_eq!(v["from"], "eve");
        assert_eq!(v["target"], "#general");
        assert_eq!(v["text"], HOSTILE);
        assert!(v.get("file").is_none());
        assert!(!json_line(&text("eve", "#g", HOSTILE)).contains('\x1b'));
        let v: serde_json::Value = serde_json::from_str(&json_line(&file("alice", "bob"))).unwrap();
        assert_eq!(v["file"]["path"], "inbox/alice/a\x1bb.png");
        assert_eq!(v["file"]["size"], 1536);
        assert_eq!(v["file"]["blake3"], "ab".repeat(32));
        assert!(v.get("text").is_none());
    }

    #[test]
    fn people_see_escaped_text_and_who_a_direct_message_is_with() {
        let plain = Style::new(false);
        let line = plain.message(&text("eve", "#general", HOSTILE), "bob");
        assert!(!line.contains('\x1b'), "{line}");
        assert!(
            line.ends_with("#general <eve> \\x1b[2J\\x1b]0;pwned\\x07"),
            "{line}"
        );
        let line = plain.message(&text("alice", "@bob", "psst"), "bob");
        assert!(line.ends_with("] *alice* psst"), "{line}");
        let line = plain.message(&text("bob", "@alice", "hey"), "bob");
        assert!(line.ends_with("] -> *alice* hey"), "{line}");
        let line = plain.message(&file("alice", "bob"), "bob");
        assert!(
            line.contains("alice sent you a\\x1bb.png (1.5 KiB, BLAKE3 abababababab…)"),
            "{line}"
        );
        assert!(line.contains("xfer pull inbox/alice/a\\x1bb.png"), "{line}");
        let line = plain.message(&file("alice", "bob"), "alice");
        assert!(line.contains("-> sent a\\x1bb.png (1.5 KiB"), "{line}");
    }

    #[test]
    fn colour_only_wraps_escaped_text() {
        let colour = Style::new(true);
        let line = colour.message(&text("eve", "#general", HOSTILE), "bob");
        assert!(line.contains("\x1b[36m#general\x1b[0m"), "{line}");
        // The only escape sequences are the colour codes: the hostile ones are escaped.
        assert!(
            !line.contains("\x1b[2J") && !line.contains("\x1b]0"),
            "{line}"
        );
        assert!(line.contains("\\x1b[2J"), "{line}");
        assert!(colour.error("x").starts_with("\x1b[31m"));
        assert_eq!(Style::new(false).error("x"), "!! x");
    }

    #[test]
    fn the_current_channel_goes_untagged_and_mentions_stand_out() {
        let plain = Style::new(false);
        let lab = Target::parse("#lab").unwrap();
        let line = plain.message_in(&text("bob", "#lab", "hi alice"), "alice", Some(&lab));
        assert!(line.ends_with("] <bob> hi alice"), "{line}");
        let line = plain.message_in(&text("bob", "#other", "x"), "alice", Some(&lab));
        assert!(line.ends_with("] #other <bob> x"), "{line}");
        let colour = Style::new(true);
        let line = colour.message_in(&text("bob", "#lab", "hi alice"), "alice", Some(&lab));
        assert!(line.contains("\x1b[1;7mhi alice\x1b[0m"), "{line:?}");
        let line = colour.message_in(&text("bob", "#lab", "malice"), "alice", Some(&lab));
        assert!(!line.contains("\x1b[1;7m"), "{line:?}");
        assert!(mentions("@Alice: look", "alice"));
        assert!(mentions("thanks alice.", "alice"));
        assert!(mentions("a.lice alice-", "alice"));
        assert!(!mentions("malice aliceb", "alice"));
        assert!(!mentions("anything", ""));
    }

    #[test]
    fn long_lines_hang_under_the_text_column() {
        let text = "word ".repeat(12);
        let line = format!("[10:02] <bob> {}", text.trim_end());
        let laid = hang(&line, 30);
        let rows: Vec<&str> = laid.lines().collect();
        assert!(rows.len() > 1, "{laid}");
        for r in &rows {
            assert!(r.chars().count() <= 30, "{r:?}");
        }
        for r in &rows[1..] {
            assert!(r.starts_with("              word"), "{r:?}");
        }
        assert_eq!(laid.split_whitespace().filter(|w| *w == "word").count(), 12);
        assert_eq!(hang("[10:02] <bob> short", 30), "[10:02] <bob> short");
        let coloured = "\x1b[2m[10:02]\x1b[0m <\x1b[32mbob\x1b[0m> ".to_owned() + &"x".repeat(40);
        let laid = hang(&coloured, 30);
        assert!(
            laid.contains("\x1b[32mbob\x1b[0m"),
            "codes kept whole: {laid:?}"
        );
        let second = laid.lines().nth(1).unwrap();
        assert!(second.starts_with("              x"), "{second:?}");
    }

    #[test]
    fn colour_needs_a_terminal() {
        assert!(!colour_wanted(false));
    }

    #[test]
    fn lists() {
        let users = vec![
            Presence {
                user: "alice".into(),
                state: PresenceState::Online,
            },
            Presence {
                user: "bob".into(),
                state: PresenceState::Away,
            },
        ];
        assert_eq!(presence_list(&users), "alice, bob (away)");
        assert_eq!(presence_list(&[]), "nobody");
        let chans = vec![ChannelInfo {
            name: "#lab".into(),
            members: 2,
        }];
        assert_eq!(channel_list(&chans), "#lab (2)");
        let missed = Style::new(false)
            .event(&ChatEvent::Missed {
                target: "#lab".parse().unwrap(),
                count: 3,
            })
            .unwrap();
        assert!(
            missed.starts_with("!! missed 3 messages in #lab"),
            "{missed}"
        );
    }
}
