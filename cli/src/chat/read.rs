//! Where each conversation was read up to, kept in the client's home
//! (`chat-read.json`, per login) so the next session can mark what is new since the
//! user left: `— new since you left —` between the backlog already seen and the rest.
//!
//! It is a hint for display only: a missing or unreadable file means no marker, never
//! an error, and the file is written atomically (0600) when a session ends.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use xfer_proto::{ChatMessage, Target};

use crate::home::Home;

const READ_FILE: &str = "chat-read.json";

/// The marks of one login: conversation (`#lab`, `@bob`) to the largest id shown.
#[derive(Debug, Default, Clone)]
pub struct ReadMarks {
    path: Option<PathBuf>,
    login: String,
    /// As loaded when the session began: what "since you left" means.
    pub before: HashMap<String, u64>,
}

type File = BTreeMap<String, BTreeMap<String, u64>>;

impl ReadMarks {
    /// The marks saved for `login` in `home` (none if there is no file yet).
    pub fn load(home: &Home, login: &str) -> ReadMarks {
        let path = home.dir().join(READ_FILE);
        let before = read(&path)
            .remove(login)
            .map(|m| m.into_iter().collect())
            .unwrap_or_default();
        ReadMarks {
            path: Some(path),
            login: login.to_owned(),
            before,
        }
    }

    /// Where `conversation` was read up to when the session began.
    pub fn mark(&self, conversation: &Target) -> Option<u64> {
        self.before.get(&conversation.to_string()).copied()
    }

    /// Splits `messages` (in id order) into those already read before this session
    /// and the new ones; `None` when the conversation was never read here (no marker).
    pub fn split<'a>(
        &self,
        conversation: &Target,
        messages: &'a [ChatMessage],
    ) -> Option<(&'a [ChatMessage], &'a [ChatMessage])> {
        let mark = self.mark(conversation)?;
        let at = messages.partition_point(|m| m.id <= mark);
        Some(messages.split_at(at))
    }

    /// Saves `shown` (largest id shown per conversation) over what was there.
    pub fn save(&self, shown: &HashMap<Target, u64>) {
        let Some(path) = &self.path else {
            return;
        };
        let mut file = read(path);
        let mine = file.entry(self.login.clone()).or_default();
        for (conversation, id) in shown {
            let mark = mine.entry(conversation.to_string()).or_insert(0);
            *mark = (*mark).max(*id);
        }
        if let Ok(text) = serde_json::to_vec_pretty(&file) {
            let _ = xfer_certs::pem::write_atomic(path, &text, 0o600);
        }
    }
}

fn read(path: &std::path::Path) -> File {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use xfer_proto::MessageBody;

    use super::*;

    fn msg(id: u64) -> ChatMessage {
        ChatMessage {
            id,
            time_unix_ms: 0,
            from: "bob".into(),
            target: Target::parse("#lab").unwrap(),
            body: MessageBody::Text("x".into()),
        }
    }

    #[test]
    fn marks_survive_a_session_and_split_the_backlog() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::open(Some(tmp.path().join("h"))).unwrap();
        let lab = Target::parse("#lab").unwrap();
        let first = ReadMarks::load(&home, "alice@h:1");
        let backlog: Vec<_> = (1..=4).map(msg).collect();
        assert!(
            first.split(&lab, &backlog).is_none(),
            "never read: no marker"
        );
        first.save(&HashMap::from([(lab.clone(), 2)]));
        let next = ReadMarks::load(&home, "alice@h:1");
        let (old, new) = next.split(&lab, &backlog).unwrap();
        assert_eq!((old.len(), new.len()), (2, 2));
        assert!(ReadMarks::load(&home, "bob@h:1").mark(&lab).is_none());
        next.save(&HashMap::from([(lab.clone(), 1)]));
        assert_eq!(ReadMarks::load(&home, "alice@h:1").mark(&lab), Some(2));
    }
}
