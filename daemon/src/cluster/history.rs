//! [`NatsHistory`]: chat history in the JetStream stream `XFER_CHAT`, one subject per
//! conversation (`chat.channel.<name>`, `chat.direct.<a>.<b>`, names sorted). The
//! stream sequence is the message id: unique and increasing across every daemon on
//! the stream, and kept across restarts of daemons and of NATS (file storage).
//! Retention maps onto the stream's limits: `history_retention_days` is its maximum
//! age, `history_max_messages` its limit per subject.
//!
//! Pages are read with a short-lived ordered consumer filtered to one conversation,
//! forward from a sequence, keeping at most the page in memory; a conversation holds
//! at most `history_max_messages`, which bounds the walk. Live delivery is the feed's
//! (`feed.rs`), not this store's.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::stream;
use async_trait::async_trait;
use futures_util::StreamExt as _;
use tracing::info;
use xfer_proto::{ChatMessage, MessageBody, Target};

use super::feed::{Feed, ORIGIN_HEADER, STREAM, payload_of, subject_of};
use super::{Cluster, REQUEST_TIMEOUT};
use crate::chat::history::{HistoryConfig, Page};
use crate::chat::{ChatHistory, ConnId, ConvKey, Filter, HistoryError};

/// The history of every daemon on the stream.
pub struct NatsHistory {
    cluster: Arc<Cluster>,
    feed: Arc<Feed>,
    /// Replaced by a reload; the stream's limits follow at the next sweep.
    config: Mutex<HistoryConfig>,
    /// The limits last applied to the stream.
    applied: Mutex<HistoryConfig>,
}

fn stream_config(c: &HistoryConfig) -> stream::Config {
    stream::Config {
        name: STREAM.to_owned(),
        subjects: vec!["chat.channel.*".into(), "chat.direct.*.*".into()],
        storage: stream::StorageType::File,
        max_age: Duration::from_millis(c.retention_ms),
        max_messages_per_subject: if c.max_messages == 0 {
            -1
        } else {
            i64::try_from(c.max_messages).unwrap_or(i64::MAX)
        },
        // A message is at most a few KB (MAX_MESSAGE_LEN plus names).
        max_message_size: 64 * 1024,
        ..Default::default()
    }
}

impl NatsHistory {
    /// Creates the stream, or applies `config`'s limits to it.
    ///
    /// # Errors
    /// When JetStream cannot be reached or refuses.
    pub async fn open(
        cluster: Arc<Cluster>,
        feed: Arc<Feed>,
        config: HistoryConfig,
    ) -> anyhow::Result<NatsHistory> {
        use anyhow::Context as _;
        cluster
            .js()
            .create_or_update_stream(stream_config(&config))
            .await
            .with_context(|| {
                format!(
                    "opening the chat stream {STREAM} on NATS (is JetStream on: nats-server -js?)"
                )
            })?;
        Ok(NatsHistory {
            cluster,
            feed,
            config: Mutex::new(config),
            applied: Mutex::new(config),
        })
    }

    fn config(&self) -> HistoryConfig {
        *self.config.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn unavailable(&self, e: &dyn std::fmt::Display) -> HistoryError {
        if self.cluster.check().is_err() {
            HistoryError::Unavailable(self.cluster.unreachable().to_string())
        } else {
            HistoryError::Io {
                context: "a chat stream request",
                source: std::io::Error::other(e.to_string()),
            }
        }
    }

    /// Refuses a new channel beyond `max_channels` (or the user's share), counting the
    /// channels the feed knows of.
    fn check_new_channel(&self, key: &ConvKey, from: &str) -> Result<(), HistoryError> {
        if !matches!(key, ConvKey::Channel(_)) || self.feed.summary(key).is_some() {
            return Ok(());
        }
        let config = self.config();
        let channels: Vec<_> = self
            .feed
            .conversations()
            .into_iter()
            .filter(|(k, _)| matches!(k, ConvKey::Channel(_)))
            .collect();
        if channels.len() >= config.max_channels {
            return Err(HistoryError::TooManyChannels {
                max: config.max_channels,
            });
        }
        let per_user = config.max_channels_per_user;
        if per_user > 0 && channels.iter().filter(|(_, s)| s.starter == from).count() >= per_user {
            return Err(HistoryError::TooManyChannelsOfUser { max: per_user });
        }
        Ok(())
    }

    /// Calls `each` with the messages of `key` from sequence `from` on, in order, until
    /// it returns false or the conversation's end (as of the start) is reached.
    async fn scan(
        &self,
        key: &ConvKey,
        from: u64,
        mut each: impl FnMut(ChatMessage) -> bool + Send,
    ) -> Result<(), HistoryError> {
        match self.feed.summary(key) {
            Some(s) if s.last_id >= from => {}
            _ => return Ok(()),
        }
        self.cluster.check().map_err(|e| self.unavailable(&e))?;
        let stream = self
            .cluster
            .js()
            .get_stream_no_info(STREAM)
            .await
            .map_err(|e| self.unavailable(&e))?;
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: subject_of(key),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: from.max(1),
                },
                ..Default::default()
            })
            .await
            .map_err(|e| self.unavailable(&e))?;
        if consumer.cached_info().num_pending == 0 {
            return Ok(());
        }
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| self.unavailable(&e))?;
        loop {
            let next = tokio::time::timeout(REQUEST_TIMEOUT, messages.next())
                .await
                .map_err(|e| self.unavailable(&e))?;
            let Some(message) = next else {
                return Ok(());
            };
            let message = message.map_err(|e| self.unavailable(&e))?;
            let Ok(info) = message.info() else {
                continue;
            };
            let (seq, pending) = (info.stream_sequence, info.pending);
            if let Some(mut m) = crate::chat::history::decode(&message.payload) {
                m.id = seq;
                if !each(m) {
                    return Ok(());
                }
            }
            if pending == 0 {
                return Ok(());
            }
        }
    }
}

#[async_trait]
impl ChatHistory for NatsHistory {
    fn reconfigure(&self, config: HistoryConfig) {
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = config;
    }

    fn last_id(&self) -> u64 {
        self.feed.last_id()
    }

    fn exists(&self, key: &ConvKey) -> bool {
        self.feed.summary(key).is_some()
    }

    fn last_id_of(&self, key: &ConvKey) -> u64 {
        self.feed.summary(key).map_or(0, |s| s.last_id)
    }

    fn conversations_of(&self, user: &str) -> Vec<ConvKey> {
        let mut keys: Vec<ConvKey> = self
            .feed
            .conversations()
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k.other(user).is_some())
            .collect();
        keys.sort();
        keys
    }

    async fn append(
        &self,
        key: &ConvKey,
        origin: Option<ConnId>,
        from: &str,
        target: Target,
        body: MessageBody,
        _deliver: &(dyn for<'m> Fn(&'m ChatMessage) + Send + Sync),
    ) -> Result<ChatMessage, HistoryError> {
        self.cluster.check().map_err(|e| self.unavailable(&e))?;
        self.check_new_channel(key, from)?;
        let mut message = ChatMessage {
            id: 0,
            time_unix_ms: crate::now_unix_ms(),
            from: from.to_owned(),
            target,
            body,
        };
        let mut headers = async_nats::HeaderMap::new();
        if let Some(conn) = origin {
            headers.insert(
                ORIGIN_HEADER,
                format!("{}/{}", self.cluster.node(), conn.0).as_str(),
            );
        }
        let ack = self
            .cluster
            .js()
            .publish_with_headers(subject_of(key), headers, payload_of(&message))
            .await
            .map_err(|e| self.unavailable(&e))?;
        let ack = tokio::time::timeout(REQUEST_TIMEOUT, ack)
            .await
            .map_err(|e| self.unavailable(&e))?
            .map_err(|e| self.unavailable(&e))?;
        message.id = ack.sequence;
        Ok(message)
    }

    async fn last(
        &self,
        key: &ConvKey,
        count: usize,
        before: Option<u64>,
    ) -> Result<Page, HistoryError> {
        if count == 0 {
            return Ok(Page::default());
        }
        let before = before.unwrap_or(u64::MAX);
        let mut kept: VecDeque<ChatMessage> = VecDeque::new();
        let mut last_read = 0;
        self.scan(key, 1, |m| {
            last_read = last_read.max(m.id);
            if m.id >= before {
                return false;
            }
            kept.push_back(m);
            if kept.len() > count {
                kept.pop_front();
            }
            true
        })
        .await?;
        Ok(Page {
            messages: kept.into(),
            skipped: 0,
            last_read,
        })
    }

    async fn after(
        &self,
        key: &ConvKey,
        after: u64,
        max: usize,
        filter: Filter,
    ) -> Result<Page, HistoryError> {
        let newest = self.last_id_of(key);
        if newest <= after {
            return Ok(Page {
                last_read: newest,
                ..Page::default()
            });
        }
        let mut kept: VecDeque<ChatMessage> = VecDeque::new();
        let mut skipped = 0;
        let mut last_read = after;
        self.scan(key, after + 1, |m| {
            last_read = last_read.max(m.id);
            if filter(&m) {
                kept.push_back(m);
                if kept.len() > max {
                    kept.pop_front();
                    skipped += 1;
                }
            }
            true
        })
        .await?;
        Ok(Page {
            messages: kept.into(),
            skipped,
            last_read,
        })
    }

    async fn sync(&self) {
        // JetStream acknowledged each message once stored; nothing is pending here.
    }

    async fn enforce_retention(&self, _now_ms: u64) {
        // The stream applies its limits itself; a reload's new limits go to it here.
        let config = self.config();
        if *self.applied.lock().unwrap_or_else(|p| p.into_inner()) == config {
            return;
        }
        match self
            .cluster
            .js()
            .update_stream(stream_config(&config))
            .await
        {
            Ok(_) => {
                info!("chat stream limits updated");
                *self.applied.lock().unwrap_or_else(|p| p.into_inner()) = config;
            }
            Err(e) => {
                tracing::warn!(error = %e, "updating the chat stream's limits failed; retrying at the next sweep")
            }
        }
    }

    async fn expire_lone_channels(
        &self,
        now_ms: u64,
        occupied: &(dyn for<'n> Fn(&'n str) -> bool + Send + Sync),
    ) -> Vec<String> {
        let lone_ms = self.config().lone_message_ms;
        if lone_ms == 0 || self.cluster.check().is_err() {
            return Vec::new();
        }
        let cutoff = now_ms.saturating_sub(lone_ms);
        let lone: Vec<ConvKey> = self
            .feed
            .conversations()
            .into_iter()
            .filter(|(k, s)| {
                let in_use = match k {
                    ConvKey::Channel(name) => occupied(name.as_str()),
                    ConvKey::Direct(..) => true,
                };
                !in_use && s.count == 1 && s.oldest_ms < cutoff
            })
            .map(|(k, _)| k)
            .collect();
        let mut removed = Vec::new();
        let Ok(stream) = self.cluster.js().get_stream_no_info(STREAM).await else {
            return removed;
        };
        for key in lone {
            if stream.purge().filter(subject_of(&key)).await.is_ok() {
                self.feed.forget(&key);
                if let ConvKey::Channel(name) = key {
                    info!(channel = %name, "abandoned one-message channel expired");
                    removed.push(name);
                }
            }
        }
        removed
    }
}
