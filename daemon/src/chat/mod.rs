//! Chat: channels, direct messages, presence and file notices.
//!
//! Three parts, each small:
//! - [`ChatBus`] (`bus.rs`) moves live events between connections: presence,
//!   subscriptions, delivery. [`hub::InProcessHub`] is the in-process implementation: a
//!   bounded `tokio::sync::broadcast` per channel; private events go to each chat
//!   connection's bounded [`Inbox`] (direct messages, notices, presence). A slow
//!   reader is skipped past and told how much it missed; a sender never waits.
//! - [`ChatHistory`] (`store.rs`; locally [`history::History`]) is the append-only store: one log per channel and per direct
//!   conversation, server-wide message ids, retention.
//! - [`DeliveryMarkers`] (locally [`delivered::Delivered`]) remember, per user, up to which message id direct
//!   messages reached one of their connections, so that what arrived while they were
//!   offline is replayed at their next `ChatOpen`.
//! - [`ReadPositions`] (`reads.rs`) keeps, per user and conversation, the largest id
//!   the user read; `catchup.rs` counts what is unread since (`MarkRead`, `Catchup`).
//!
//! A daemon alone uses the in-process hub and local files ([`Chat::open`]); several
//! daemons on one NATS use the implementations in `cluster/` ([`Chat::with_stores`]).
//!
//! [`Chat`] ties them together for sessions. It does not parse requests or know about
//! connections' sockets: that is `session/chat.rs`.

mod bus;
mod catchup;
pub mod delivered;
mod envelope;
mod error;
pub mod history;
pub mod hub;
mod inbox;
mod ratelimit;
pub mod reads;
mod store;
mod subscriptions;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use xfer_proto::{ChatMessage, MessageBody, Target, UserName};

use crate::config::ChatConfig;
pub use bus::{ChannelReceiver, ChatBus, Deliver, HubConfig, JoinedChannel};
pub use delivered::Delivered;
pub use envelope::{ConnId, Envelope};
pub use error::ChatError;
pub use history::{ConvKey, History, HistoryError};
pub use hub::InProcessHub;
pub use inbox::{Drops, Inbox, InboxSender};
pub use ratelimit::TokenBucket;
pub use reads::{ReadFile, ReadPositions};
pub use store::{ChatHistory, DeliveryMarkers, Filter};
pub use subscriptions::Subscriptions;

pub use crate::now_unix_ms;

/// Checks a message text: not empty, at most `MAX_MESSAGE_LEN` bytes, no NUL. Other
/// control characters are kept as data; clients escape them when printing.
pub fn check_text(text: &str) -> Result<(), ChatError> {
    if text.is_empty() {
        return Err(ChatError::Empty);
    }
    if text.len() > xfer_proto::MAX_MESSAGE_LEN {
        return Err(ChatError::TooLong {
            len: text.len(),
            max: xfer_proto::MAX_MESSAGE_LEN,
        });
    }
    if text.contains('\0') {
        return Err(ChatError::Nul);
    }
    Ok(())
}

/// Keeps the `max` newest of `kept` (by id, in no particular order), counting what it
/// lets go of per conversation in `missed`.
fn keep_newest<K: Ord>(
    kept: &mut Vec<(K, ChatMessage)>,
    max: usize,
    missed: &mut BTreeMap<K, u64>,
) {
    if kept.len() <= max {
        return;
    }
    kept.sort_unstable_by_key(|(_, m)| std::cmp::Reverse(m.id));
    for (other, _) in kept.drain(max..) {
        *missed.entry(other).or_insert(0) += 1;
    }
}

/// Messages replayed to a user at `ChatOpen`, and what did not fit.
#[derive(Debug, Default)]
pub struct Replay {
    /// Conversations (`@user`) whose older messages were left out, and how many.
    pub missed: Vec<(Target, u64)>,
    /// The messages, oldest first.
    pub messages: Vec<ChatMessage>,
    /// Per conversation (`@user`), the largest id read: live events up to it are
    /// already in `messages` (or in `missed`).
    pub seen: HashMap<Target, u64>,
}

/// The chat service shared by sessions: live bus, history and delivery markers.
pub struct Chat {
    bus: Arc<dyn ChatBus>,
    history: Arc<dyn ChatHistory>,
    delivered: Arc<dyn DeliveryMarkers>,
    /// What each user has read.
    reads: Arc<dyn ReadPositions>,
    /// The last connection id handed out.
    last_conn: AtomicU64,
    /// Replaced by a config reload; a leaf lock.
    config: std::sync::Mutex<ChatConfig>,
}

impl Chat {
    /// Opens `<data_dir>/chat`: loads and compacts the history, reads the markers, and
    /// starts an in-process bus.
    ///
    /// # Errors
    /// When the directory or its files cannot be created or read (damaged records are
    /// skipped, never fatal).
    pub fn open(data_dir: &Path, config: &ChatConfig) -> std::io::Result<Chat> {
        let dir = data_dir.join("chat");
        let history = History::open(&dir, config.history_config(), now_unix_ms())?;
        let delivered = Delivered::open(&dir.join("delivered.json"))?;
        let reads = ReadFile::open(&dir.join("read.json"))?;
        Ok(Chat::with_stores(
            Arc::new(InProcessHub::new(config.hub_config())),
            Arc::new(history),
            Arc::new(delivered),
            Arc::new(reads),
            config,
        ))
    }

    /// Chat on the given bus and stores (e.g. those of `cluster/`).
    pub fn with_stores(
        bus: Arc<dyn ChatBus>,
        history: Arc<dyn ChatHistory>,
        delivered: Arc<dyn DeliveryMarkers>,
        reads: Arc<dyn ReadPositions>,
        config: &ChatConfig,
    ) -> Chat {
        Chat {
            bus,
            history,
            delivered,
            reads,
            last_conn: AtomicU64::new(0),
            config: std::sync::Mutex::new(config.clone()),
        }
    }

    /// Registers a chat connection of `user` with an inbox of `[chat]`'s size; dropping
    /// the inbox disconnects it.
    pub fn connect(&self, user: &str) -> Inbox {
        let id = ConnId(self.last_conn.fetch_add(1, Ordering::Relaxed) + 1);
        let capacity = self.config().hub_config().connection_buffer;
        let (mut inbox, sender) = Inbox::new(id, user, capacity);
        self.bus.connect(id, user, Box::new(sender));
        inbox.disconnect_on_drop(self.bus.clone());
        inbox
    }

    /// The live bus.
    pub fn bus(&self) -> &Arc<dyn ChatBus> {
        &self.bus
    }

    /// The history store.
    pub fn history(&self) -> &dyn ChatHistory {
        &*self.history
    }

    /// The delivery markers.
    pub fn delivered(&self) -> &dyn DeliveryMarkers {
        &*self.delivered
    }

    /// The `[chat]` configuration in force.
    pub fn config(&self) -> ChatConfig {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Applies a new `[chat]` configuration (a config reload): limits on joins, new
    /// connections and replays apply from now on, retention at the next sweep.
    pub fn reconfigure(&self, config: &ChatConfig) {
        self.history.reconfigure(config.history_config());
        self.bus.reconfigure(config.hub_config());
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = config.clone();
    }

    /// Stores a message from `from` to `target`, then delivers it live. Ids are
    /// allocated, written and delivered in one order, so every reader sees increasing
    /// ids and "after id" never skips anything.
    ///
    /// # Errors
    /// A store failure, or too many channel logs.
    pub async fn post(
        &self,
        origin: Option<ConnId>,
        from: &str,
        target: &Target,
        body: MessageBody,
    ) -> Result<ChatMessage, ChatError> {
        self.bus.check()?;
        let key = ConvKey::of(target, from);
        let bus = &self.bus;
        let message = self
            .history
            .append(&key, origin, from, target.clone(), body, &|m| {
                bus.publish(origin, m);
            })
            .await?;
        Ok(message)
    }

    /// The direct messages and notices to replay at `ChatOpen`: with `after`, every
    /// one to or from `user` with a larger id; without, those to `user` above their
    /// delivery marker. At most `[chat] replay_max`, the newest; the rest are counted
    /// per conversation in `missed`. Conversations are read one at a time and merged
    /// into the newest `replay_max`, so memory stays at about twice that however many
    /// conversations the user has.
    ///
    /// # Errors
    /// A store failure.
    pub async fn replay(&self, user: &str, after: Option<u64>) -> Result<Replay, ChatError> {
        let (floor, only_to_user) = match after {
            Some(id) => (id, false),
            None => (self.delivered.get(user), true),
        };
        let max = self.config().replay_max as usize;
        // One point in time for every conversation: messages stored while the logs are
        // read come live (the connection's inbox is registered before this), so the
        // replay never holds a later id of one conversation than a message of another
        // that is still on its way — a client that resumes "after" the last id it saw
        // then skips nothing.
        let ceiling = self.history.last_id();
        let mut kept: Vec<(Target, ChatMessage)> = Vec::new();
        let mut missed: BTreeMap<Target, u64> = BTreeMap::new();
        let mut replay = Replay::default();
        for key in self.history.conversations_of(user) {
            // A direct log's names were checked when the store was opened.
            let Some(other) = key.other(user).and_then(|o| UserName::new(o).ok()) else {
                continue;
            };
            let other = Target::User(other);
            let page = self
                .history
                .after(&key, floor, max, {
                    let me = user.to_owned();
                    Box::new(move |m| {
                        m.id <= ceiling
                            && (!only_to_user || m.target.user().is_some_and(|to| *to == *me))
                    })
                })
                .await?;
            replay
                .seen
                .insert(other.clone(), page.last_read.min(ceiling));
            if page.skipped > 0 {
                *missed.entry(other.clone()).or_insert(0) += page.skipped;
            }
            kept.extend(page.messages.into_iter().map(|m| (other.clone(), m)));
            keep_newest(&mut kept, max, &mut missed);
        }
        kept.sort_unstable_by_key(|(_, m)| m.id);
        replay.missed = missed.into_iter().collect();
        replay.messages = kept.into_iter().map(|(_, m)| m).collect();
        Ok(replay)
    }

    /// Makes stored messages durable: fsyncs logs written since the last call and
    /// saves changed delivery markers (and read positions a failed write left).
    pub async fn sync(&self) {
        self.history.sync().await;
        let reads = Arc::clone(&self.reads);
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || reads.persist()).await {
            tracing::error!(error = %e, "saving chat read positions failed");
        }
        let delivered = Arc::clone(&self.delivered);
        match tokio::task::spawn_blocking(move || delivered.persist()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "saving chat delivery markers failed"),
            Err(e) => tracing::error!(error = %e, "chat marker task failed"),
        }
    }

    /// Applies retention to every log (age and count), and expires abandoned
    /// one-message channels nobody is in.
    pub async fn enforce_retention(&self) {
        self.history.enforce_retention(now_unix_ms()).await;
        let occupied: std::collections::HashSet<String> = self
            .bus()
            .channels()
            .into_iter()
            .map(|c| c.name.trim_start_matches('#').to_owned())
            .collect();
        self.history
            .expire_lone_channels(now_unix_ms(), &|name| occupied.contains(name))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: u64) -> ChatMessage {
        ChatMessage {
            id,
            time_unix_ms: 0,
            from: "x".into(),
            target: Target::parse("@me").unwrap(),
            body: MessageBody::Text(id.to_string()),
        }
    }

    #[test]
    fn merging_conversations_keeps_the_newest_and_counts_the_rest() {
        let mut kept = Vec::new();
        let mut missed = BTreeMap::new();
        // 50 conversations of 10 messages, ids interleaved across them.
        for c in 0..50u64 {
            let other = Target::parse(&format!("@u{c:02}")).unwrap();
            kept.extend((0..10u64).map(|i| (other.clone(), message(i * 50 + c + 1))));
            keep_newest(&mut kept, 20, &mut missed);
            assert!(kept.len() <= 20, "never more than replay_max held");
        }
        let mut ids: Vec<u64> = kept.iter().map(|(_, m)| m.id).collect();
        ids.sort_unstable();
        assert_eq!(ids, (481..=500).collect::<Vec<_>>(), "the 20 newest");
        assert_eq!(missed.values().sum::<u64>(), 480);
        assert_eq!(
            missed.get(&Target::parse("@u00").unwrap()),
            Some(&10),
            "all of the oldest conversation"
        );
        assert_eq!(
            missed.get(&Target::parse("@u49").unwrap()),
            Some(&9),
            "all but its newest"
        );
    }
}
