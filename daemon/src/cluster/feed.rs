//! The chat feed: every daemon reads the chat stream (`XFER_CHAT`) in order with one
//! ordered consumer and hands each message to its local connections through its
//! in-process hub, so live delivery follows the stream sequence (the message id) on
//! every daemon. The same pass keeps a small summary per conversation (count, newest
//! id, who started it), which answers [`ChatHistory`](crate::chat::ChatHistory)'s
//! synchronous questions without a request.
//!
//! At start-up the feed reads the whole stream (bounded by its retention limits) before
//! the daemon serves, so the summary is complete. When NATS goes away the consumer
//! fails; `supervise` starts a new one after the last sequence handled, so nothing is
//! skipped or handed out twice when NATS is back.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use futures_util::StreamExt as _;
use tracing::warn;
use xfer_proto::ChatMessage;

use super::{Cluster, token, untoken};
use crate::chat::{ChatBus as _, ConnId, ConvKey, InProcessHub};

/// The chat stream.
pub const STREAM: &str = "XFER_CHAT";
/// The header naming the daemon and connection a message came from
/// (`<node>/<conn>`), so that connection does not get its own message back.
pub const ORIGIN_HEADER: &str = "Xfer-Origin";

/// What the feed knows of one conversation.
#[derive(Debug, Clone, Default)]
pub struct ConvSummary {
    /// Messages seen (not lowered by retention on the server: an upper bound).
    pub count: u64,
    /// The newest id.
    pub last_id: u64,
    /// When its oldest seen message was stored.
    pub oldest_ms: u64,
    /// Who wrote its oldest seen message.
    pub starter: String,
}

/// The feed's state, shared by the bus and the history of `cluster/`.
pub struct Feed {
    hub: Arc<InProcessHub>,
    node: String,
    convs: Mutex<HashMap<ConvKey, ConvSummary>>,
    last_id: AtomicU64,
    /// Set once the start-up pass reached the end of the stream.
    caught_up: tokio::sync::watch::Sender<bool>,
}

impl Feed {
    /// A feed delivering into `hub`, for daemon `node`.
    pub fn new(hub: Arc<InProcessHub>, node: &str) -> Arc<Feed> {
        Arc::new(Feed {
            hub,
            node: node.to_owned(),
            convs: Mutex::default(),
            last_id: AtomicU64::new(0),
            caught_up: tokio::sync::watch::channel(false).0,
        })
    }

    fn convs(&self) -> std::sync::MutexGuard<'_, HashMap<ConvKey, ConvSummary>> {
        self.convs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The id of the last message handed to local connections.
    pub fn last_id(&self) -> u64 {
        self.last_id.load(Ordering::Acquire)
    }

    /// The summary of `key`, if it has messages.
    pub fn summary(&self, key: &ConvKey) -> Option<ConvSummary> {
        self.convs().get(key).cloned()
    }

    /// Every conversation with a summary.
    pub fn conversations(&self) -> Vec<(ConvKey, ConvSummary)> {
        self.convs()
            .iter()
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect()
    }

    /// Forgets a conversation (its messages were purged).
    pub fn forget(&self, key: &ConvKey) {
        self.convs().remove(key);
    }

    /// Waits until the start-up pass has read the whole stream.
    pub async fn wait_caught_up(&self) {
        let mut rx = self.caught_up.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Reads the stream from after the last message handled until it fails or ends.
    ///
    /// # Errors
    /// The consumer could not be made or failed (NATS went away).
    pub async fn run(self: Arc<Self>, cluster: Arc<Cluster>) -> anyhow::Result<()> {
        let stream = cluster
            .js()
            .get_stream(STREAM)
            .await
            .context("opening the chat stream")?;
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: self.last_id() + 1,
                },
                ..Default::default()
            })
            .await
            .context("creating the chat feed consumer")?;
        if consumer.cached_info().num_pending == 0 {
            self.caught_up.send_replace(true);
        }
        let mut messages = consumer
            .messages()
            .await
            .context("reading the chat stream")?;
        while let Some(message) = messages.next().await {
            let message = message.context("reading the chat stream")?;
            let Ok(info) = message.info() else {
                continue;
            };
            let (seq, pending) = (info.stream_sequence, info.pending);
            self.take(seq, &message);
            if pending == 0 {
                self.caught_up.send_replace(true);
            }
        }
        Ok(())
    }

    /// Handles one stored message: summary, then local delivery, then `last_id`.
    fn take(&self, seq: u64, message: &async_nats::jetstream::Message) {
        let Some(key) = conv_of_subject(message.subject.as_str()) else {
            warn!(subject = %message.subject, "ignoring a chat stream message on an unknown subject");
            return;
        };
        let Some(mut chat) = crate::chat::history::decode(&message.payload) else {
            warn!(seq, "ignoring a chat stream message that does not decode");
            self.last_id.fetch_max(seq, Ordering::AcqRel);
            return;
        };
        chat.id = seq;
        if ConvKey::of(&chat.target, &chat.from) != key {
            warn!(
                seq,
                "ignoring a chat stream message whose subject and target differ"
            );
            self.last_id.fetch_max(seq, Ordering::AcqRel);
            return;
        }
        let origin = message
            .headers
            .as_ref()
            .and_then(|h| h.get(ORIGIN_HEADER))
            .and_then(|v| {
                v.as_str()
                    .split_once('/')
                    .map(|(n, c)| (n.to_owned(), c.to_owned()))
            })
            .filter(|(node, _)| *node == self.node)
            .and_then(|(_, conn)| conn.parse().ok())
            .map(ConnId);
        {
            let mut convs = self.convs();
            let s = convs.entry(key).or_default();
            if s.count == 0 {
                s.oldest_ms = chat.time_unix_ms;
                s.starter = chat.from.clone();
            }
            s.count += 1;
            s.last_id = s.last_id.max(seq);
        }
        self.hub.publish(origin, &chat);
        self.last_id.fetch_max(seq, Ordering::AcqRel);
    }
}

/// The subject a conversation's messages are stored under.
pub fn subject_of(key: &ConvKey) -> String {
    match key {
        ConvKey::Channel(name) => format!("chat.channel.{}", token(name)),
        ConvKey::Direct(a, b) => format!("chat.direct.{}.{}", token(a), token(b)),
    }
}

/// The conversation a subject stands for, if it is one [`subject_of`] makes.
pub fn conv_of_subject(subject: &str) -> Option<ConvKey> {
    let mut parts = subject.split('.');
    let key = match (parts.next()?, parts.next()?) {
        ("chat", "channel") => ConvKey::Channel(untoken(parts.next()?)),
        ("chat", "direct") => {
            let a = untoken(parts.next()?);
            let b = untoken(parts.next()?);
            (a <= b).then_some(ConvKey::Direct(a, b))?
        }
        _ => return None,
    };
    parts.next().is_none().then_some(key)
}

/// A message as stored: the log record with id 0 (the stream sequence is the id).
pub fn payload_of(message: &ChatMessage) -> bytes::Bytes {
    let mut m = message.clone();
    m.id = 0;
    let mut line = crate::chat::history::encode(&m);
    line.pop();
    line.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_round_trip() {
        for key in [
            ConvKey::Channel("lab.2".into()),
            ConvKey::direct("bob.b", "alice"),
        ] {
            assert_eq!(conv_of_subject(&subject_of(&key)), Some(key));
        }
        assert_eq!(conv_of_subject("chat.direct.b.a"), None);
        assert_eq!(conv_of_subject("chat.channel.a.b"), None);
        assert_eq!(conv_of_subject("other.channel.a"), None);
    }
}
