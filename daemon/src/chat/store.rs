//! [`ChatHistory`] and [`DeliveryMarkers`]: the stores behind [`Chat`](super::Chat), as
//! traits so that a store shared by several daemons sits beside the local one.
//!
//! The local implementations are [`History`] (one log file per conversation) and
//! [`Delivered`] (one JSON file), unchanged in behaviour; `cluster/` has the NATS ones
//! (a JetStream stream, a key-value bucket). Methods that a networked store answers
//! from a local replica stay synchronous; reads and writes of messages are async.

use async_trait::async_trait;
use xfer_proto::{ChatMessage, MessageBody, Target};

use super::delivered::Delivered;
use super::envelope::ConnId;
use super::history::{ConvKey, History, HistoryConfig, HistoryError, Page};

/// Which messages of a page a reader wants.
pub type Filter = Box<dyn Fn(&ChatMessage) -> bool + Send + Sync>;

/// The message store: append-only conversations with ids increasing server-wide (or
/// cluster-wide), paged reads and retention. See [`History`] for the contract.
#[async_trait]
pub trait ChatHistory: Send + Sync + 'static {
    /// Applies new retention and channel limits (a config reload).
    fn reconfigure(&self, config: HistoryConfig);
    /// The largest id whose message every reader here has been handed (0 if none):
    /// anything stored later arrives live.
    fn last_id(&self) -> u64;
    /// Whether `key` has stored messages.
    fn exists(&self, key: &ConvKey) -> bool;
    /// The newest message id of `key` (0 if it has none).
    fn last_id_of(&self, key: &ConvKey) -> u64;
    /// Direct conversations `user` takes part in that have stored messages.
    fn conversations_of(&self, user: &str) -> Vec<ConvKey>;
    /// Stores a message from `from` (on connection `origin`) and has it delivered live,
    /// in id order: by calling `deliver`, or, for a store that delivers itself, from
    /// its own feed.
    ///
    /// # Errors
    /// A limit, a failed write, or the store being unreachable; nothing is stored then.
    async fn append(
        &self,
        key: &ConvKey,
        origin: Option<ConnId>,
        from: &str,
        target: Target,
        body: MessageBody,
        deliver: &(dyn for<'m> Fn(&'m ChatMessage) + Send + Sync),
    ) -> Result<ChatMessage, HistoryError>;
    /// The last `count` messages of `key` (with `before`, only smaller ids), oldest
    /// first.
    ///
    /// # Errors
    /// A failed read.
    async fn last(
        &self,
        key: &ConvKey,
        count: usize,
        before: Option<u64>,
    ) -> Result<Page, HistoryError>;
    /// The messages of `key` above `after` that `filter` accepts, at most `max` (the
    /// newest), oldest first; the rest counted in `skipped`.
    ///
    /// # Errors
    /// A failed read.
    async fn after(
        &self,
        key: &ConvKey,
        after: u64,
        max: usize,
        filter: Filter,
    ) -> Result<Page, HistoryError>;
    /// Makes what was stored durable (the local store fsyncs about once a second).
    async fn sync(&self);
    /// Applies retention (age and count).
    async fn enforce_retention(&self, now_ms: u64);
    /// Removes abandoned one-message channels nobody is in; returns their names.
    async fn expire_lone_channels(
        &self,
        now_ms: u64,
        occupied: &(dyn for<'n> Fn(&'n str) -> bool + Send + Sync),
    ) -> Vec<String>;
}

#[async_trait]
impl ChatHistory for History {
    fn reconfigure(&self, config: HistoryConfig) {
        History::reconfigure(self, config);
    }

    fn last_id(&self) -> u64 {
        History::last_id(self)
    }

    fn exists(&self, key: &ConvKey) -> bool {
        History::exists(self, key)
    }

    fn last_id_of(&self, key: &ConvKey) -> u64 {
        History::last_id_of(self, key)
    }

    fn conversations_of(&self, user: &str) -> Vec<ConvKey> {
        History::conversations_of(self, user)
    }

    async fn append(
        &self,
        key: &ConvKey,
        _origin: Option<ConnId>,
        from: &str,
        target: Target,
        body: MessageBody,
        deliver: &(dyn for<'m> Fn(&'m ChatMessage) + Send + Sync),
    ) -> Result<ChatMessage, HistoryError> {
        History::append(self, key, from, target, body, |m: &ChatMessage| deliver(m)).await
    }

    async fn last(
        &self,
        key: &ConvKey,
        count: usize,
        before: Option<u64>,
    ) -> Result<Page, HistoryError> {
        History::last(self, key, count, before).await
    }

    async fn after(
        &self,
        key: &ConvKey,
        after: u64,
        max: usize,
        filter: Filter,
    ) -> Result<Page, HistoryError> {
        History::after(self, key, after, max, filter).await
    }

    async fn sync(&self) {
        History::sync(self).await;
    }

    async fn enforce_retention(&self, now_ms: u64) {
        History::enforce_retention(self, now_ms).await;
    }

    async fn expire_lone_channels(
        &self,
        now_ms: u64,
        occupied: &(dyn for<'n> Fn(&'n str) -> bool + Send + Sync),
    ) -> Vec<String> {
        History::expire_lone_channels(self, now_ms, |name: &str| occupied(name)).await
    }
}

/// Per-user delivery markers (see [`Delivered`] for the contract): answered from
/// memory, made durable by [`DeliveryMarkers::persist`].
pub trait DeliveryMarkers: Send + Sync + 'static {
    /// The user's marker (0 if nothing was ever delivered).
    fn get(&self, user: &str) -> u64;
    /// Raises the user's marker to `id` (never lowers it).
    fn advance(&self, user: &str, id: u64);
    /// Saves changed markers. Blocking.
    ///
    /// # Errors
    /// When they cannot be saved (they stay to be saved next time).
    fn persist(&self) -> std::io::Result<()>;
}

impl DeliveryMarkers for Delivered {
    fn get(&self, user: &str) -> u64 {
        Delivered::get(self, user)
    }

    fn advance(&self, user: &str, id: u64) {
        Delivered::advance(self, user, id);
    }

    fn persist(&self) -> std::io::Result<()> {
        if !self.is_dirty() {
            return Ok(());
        }
        self.save()
    }
}
