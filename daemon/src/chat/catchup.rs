//! `MarkRead` and `Catchup`: what a user has read, and what is new since.
//!
//! A conversation's unread messages are those from others after the user's read
//! position in it. A direct conversation the user never marked is measured from their
//! delivery marker (what reached one of their chat connections), so a first catch-up
//! lists what arrived while they were away rather than every message ever; a channel
//! counts only once the user has read it somewhere. Files are the file notices among
//! the unread direct messages. Counting walks each log back to the position (within
//! the store's scan limit), one conversation at a time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use xfer_proto::{Catchup, MAX_CATCHUP_FILES, MessageBody, Target, Unread, UserName, mentions};

use super::history::{ConvKey, HistoryError};
use super::{Chat, ChatError};

impl Chat {
    /// Raises `user`'s read position in `target` to `id` (at most the conversation's
    /// newest id) and makes it durable.
    ///
    /// # Errors
    /// [`ChatError::NoConversation`] when `target` has no messages for this user; a
    /// failed write.
    pub async fn mark_read(&self, user: &str, target: &Target, id: u64) -> Result<(), ChatError> {
        let key = ConvKey::of(target, user);
        if !self.history.exists(&key) {
            return Err(ChatError::NoConversation(target.to_string()));
        }
        let id = id.min(self.history.last_id_of(&key));
        if !self.reads.mark(user, target, id) {
            return Ok(());
        }
        let reads = Arc::clone(&self.reads);
        let saved = tokio::task::spawn_blocking(move || reads.persist())
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r);
        saved.map_err(|source| {
            ChatError::Store(HistoryError::Io {
                context: "saving read positions",
                source,
            })
        })
    }

    /// What is new for `user` since their read positions (see the module doc).
    ///
    /// # Errors
    /// A store failure.
    pub async fn catchup(&self, user: &str) -> Result<Catchup, ChatError> {
        let positions = self.reads.positions(user);
        let mut targets: Vec<(Target, Option<u64>)> = positions
            .iter()
            .filter(|(t, _)| t.channel().is_some())
            .map(|(t, id)| (t.clone(), Some(*id)))
            .collect();
        for key in self.history.conversations_of(user) {
            let Some(other) = key.other(user).and_then(|o| UserName::new(o).ok()) else {
                continue;
            };
            let target = Target::User(other);
            let read = positions.get(&target).copied();
            targets.push((target, read));
        }
        targets.sort();
        let delivered = self.delivered.get(user);
        let mut answer = Catchup::default();
        for (target, read) in targets {
            let floor = read.unwrap_or(if target.user().is_some() {
                delivered
            } else {
                0
            });
            let (unread, files) = self.unread(user, &target, read, floor).await?;
            answer.conversations.push(unread);
            answer.files.extend(files);
        }
        answer.files.sort_by_key(|m| m.id);
        let extra = answer.files.len().saturating_sub(MAX_CATCHUP_FILES);
        answer.files.drain(..extra);
        Ok(answer)
    }

    /// Counts one conversation's unread messages and mentions after `floor`, and
    /// collects the files handed to `user` among them.
    async fn unread(
        &self,
        user: &str,
        target: &Target,
        read: Option<u64>,
        floor: u64,
    ) -> Result<(Unread, Vec<xfer_proto::ChatMessage>), ChatError> {
        let key = ConvKey::of(target, user);
        let counts = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        let page = {
            let counts = Arc::clone(&counts);
            let me = user.to_owned();
            self.history
                .after(
                    &key,
                    floor,
                    MAX_CATCHUP_FILES,
                    Box::new(move |m| {
                        if m.from == me {
                            return false;
                        }
                        counts.0.fetch_add(1, Ordering::Relaxed);
                        match &m.body {
                            MessageBody::Text(text) => {
                                if mentions(text, &me) {
                                    counts.1.fetch_add(1, Ordering::Relaxed);
                                }
                                false
                            }
                            MessageBody::File { .. } => {
                                m.target.user().is_some_and(|to| *to == *me)
                            }
                        }
                    }),
                )
                .await?
        };
        let unread = Unread {
            target: target.clone(),
            read,
            unread: counts.0.load(Ordering::Relaxed),
            mentions: counts.1.load(Ordering::Relaxed),
            last_id: self.history.last_id_of(&key),
        };
        Ok((unread, page.messages))
    }
}
