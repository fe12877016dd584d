//! Where each conversation was read up to. The positions live on the server
//! (`MarkRead`, `Catchup`), so they follow the user from machine to machine: a session
//! fetches them when it connects (and after each reconnect) to put `— new since you
//! left —` between the backlog already read and the rest, and marks what it showed as
//! read from time to time and when it ends.
//!
//! They are a hint for display: when the server cannot say, there is no marker, never
//! an error.

use std::collections::HashMap;

use xfer_proto::{Catchup, ChatMessage, Target};

/// The read positions of one user, as the server had them, and what this session
/// has marked since.
#[derive(Debug, Default, Clone)]
pub struct ReadMarks {
    /// As fetched when the session (or its last reconnect) began: what "since you
    /// left" means.
    pub before: HashMap<Target, u64>,
    /// Positions sent to the server, or known to be there.
    marked: HashMap<Target, u64>,
}

impl ReadMarks {
    /// The positions a [`Catchup`] answer carries.
    pub fn from_catchup(catchup: &Catchup) -> ReadMarks {
        let before: HashMap<Target, u64> = catchup
            .conversations
            .iter()
            .filter_map(|c| c.read.map(|id| (c.target.clone(), id)))
            .collect();
        ReadMarks {
            marked: before.clone(),
            before,
        }
    }

    /// Where `conversation` was read up to when the session began.
    pub fn mark(&self, conversation: &Target) -> Option<u64> {
        self.before.get(conversation).copied()
    }

    /// Splits `messages` (in id order) into those already read before this session
    /// and the new ones; `None` when the conversation was never read (no marker).
    pub fn split<'a>(
        &self,
        conversation: &Target,
        messages: &'a [ChatMessage],
    ) -> Option<(&'a [ChatMessage], &'a [ChatMessage])> {
        let mark = self.mark(conversation)?;
        let at = messages.partition_point(|m| m.id <= mark);
        Some(messages.split_at(at))
    }

    /// The positions to send: conversations where `shown` (largest id shown per
    /// conversation) went past what the server has.
    pub fn unsent(&self, shown: &HashMap<Target, u64>) -> Vec<(Target, u64)> {
        let mut out: Vec<(Target, u64)> = shown
            .iter()
            .filter(|(t, id)| self.marked.get(*t).is_none_or(|m| *id > m))
            .map(|(t, id)| (t.clone(), *id))
            .collect();
        out.sort();
        out
    }

    /// The server has `id` for `target` now.
    pub fn sent(&mut self, target: &Target, id: u64) {
        let m = self.marked.entry(target.clone()).or_insert(0);
        *m = (*m).max(id);
    }
}

#[cfg(test)]
mod tests {
    use xfer_proto::{MessageBody, Unread};

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

    fn unread(target: &str, read: Option<u64>) -> Unread {
        Unread {
            target: Target::parse(target).unwrap(),
            read,
            unread: 0,
            mentions: 0,
            last_id: 9,
        }
    }

    #[test]
    fn server_positions_split_the_backlog_and_only_new_marks_are_sent() {
        let lab = Target::parse("#lab").unwrap();
        let bob = Target::parse("@bob").unwrap();
        let catchup = Catchup {
            conversations: vec![unread("#lab", Some(2)), unread("@bob", None)],
            files: Vec::new(),
        };
        let mut marks = ReadMarks::from_catchup(&catchup);
        let backlog: Vec<_> = (1..=4).map(msg).collect();
        let (old, new) = marks.split(&lab, &backlog).unwrap();
        assert_eq!((old.len(), new.len()), (2, 2));
        assert!(
            marks.split(&bob, &backlog).is_none(),
            "never read: no marker"
        );

        let shown = HashMap::from([(lab.clone(), 2), (bob.clone(), 5)]);
        assert_eq!(marks.unsent(&shown), [(bob.clone(), 5)], "#lab is there");
        marks.sent(&bob, 5);
        let shown = HashMap::from([(lab.clone(), 4), (bob, 5)]);
        assert_eq!(marks.unsent(&shown), [(lab, 4)]);
    }
}
