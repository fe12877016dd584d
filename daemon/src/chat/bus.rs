//! [`ChatBus`]: the live side of chat, narrowed to what a networked bus can do too.
//!
//! A bus does three things: **presence** (which users have a chat connection, away or
//! not, and who is in which channel), **subscription** (a connection joins and parts
//! channels and receives their live events) and **delivery** (a stored message goes to
//! a channel's members or to both parties of a direct conversation). Everything else is
//! local policy above the trait, in [`Chat`](super::Chat) and the session: message ids,
//! history and replay, delivery markers, rate limits, text checks, connection ids and
//! the size of each connection's inbox.
//!
//! [`InProcessHub`](super::hub::InProcessHub) is the bus of one daemon. A bus for
//! several daemons maps onto a message system as NATS offers it: a subject per channel
//! (`chat.channel.<name>`: messages, joins, parts) and per user (`chat.user.<name>`:
//! direct messages, notices), presence and channel membership in a key-value bucket
//! (`presence.<user>`, `members.<channel>.<user>`, with a TTL refreshed while
//! connected), and its subscriptions forwarding into the same local queues these
//! methods hand back (a broadcast receiver per channel, the connection's inbox).
//! Methods never wait on a reader: delivery goes into bounded queues that drop their
//! oldest entry when full; a networked bus publishes and returns. Users' read positions
//! sit beside the bus behind [`ReadPositions`](super::ReadPositions), which such a bus
//! maps onto its key-value bucket too (`read.<user>`).

use std::sync::Arc;

use tokio::sync::broadcast;
use xfer_proto::{ChannelInfo, ChatMessage, Presence};

use super::envelope::{ConnId, Envelope};
use super::error::ChatError;

/// Limits of a bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubConfig {
    /// Events buffered per channel for its slowest reader.
    pub channel_buffer: usize,
    /// Events buffered per connection inbox (applied above the bus, where inboxes are
    /// made).
    pub connection_buffer: usize,
    /// Channels with members at once.
    pub max_channels: usize,
    /// Channels one connection may be in.
    pub max_joined: usize,
}

/// What a connection in a channel receives: messages, joins and parts, in order.
pub type ChannelReceiver = broadcast::Receiver<Arc<Envelope>>;

/// What [`ChatBus::join`] hands back.
pub struct JoinedChannel {
    /// Live events of the channel from now on.
    pub receiver: ChannelReceiver,
    /// Who is in it now, including the joiner.
    pub members: Vec<Presence>,
}

/// Where a bus delivers a connection's private events (direct messages, notices,
/// presence): its inbox. Never waits.
pub trait Deliver: Send + Sync {
    /// Queues `envelope`, dropping the oldest queued event if full.
    fn deliver(&self, envelope: Arc<Envelope>);
}

/// The live side of chat: presence, subscriptions and delivery (see the module doc).
pub trait ChatBus: Send + Sync + 'static {
    /// Applies new limits (a config reload) to joins from now on.
    fn reconfigure(&self, config: HubConfig);

    /// Whether the bus can serve requests now; a networked bus says why not (e.g. its
    /// server is unreachable) in one line.
    ///
    /// # Errors
    /// [`ChatError::Unavailable`].
    fn check(&self) -> Result<(), ChatError> {
        Ok(())
    }

    // Presence.

    /// Registers chat connection `conn` of `user`, whose private events go to `inbox`.
    /// When it is the user's first, everyone is told they are online.
    fn connect(&self, conn: ConnId, user: &str, inbox: Box<dyn Deliver>);
    /// Ends a chat connection: it leaves its channels; a user's last one goes offline.
    fn disconnect(&self, conn: ConnId);
    /// Marks the connection's user away or back.
    fn set_away(&self, conn: ConnId, away: bool);
    /// The members of `channel` (empty if nobody is in it), or with `None` everyone
    /// with a chat connection; sorted by name.
    fn who(&self, channel: Option<&str>) -> Vec<Presence>;
    /// Channels with members, sorted by name.
    fn channels(&self) -> Vec<ChannelInfo>;

    // Subscription.

    /// Puts a connection in a channel (created on first use) and subscribes it.
    ///
    /// # Errors
    /// [`ChatError::TooManyJoined`], [`ChatError::TooManyChannels`].
    fn join(&self, conn: ConnId, channel: &str) -> Result<JoinedChannel, ChatError>;
    /// Takes a connection out of a channel.
    ///
    /// # Errors
    /// [`ChatError::NotMember`].
    fn part(&self, conn: ConnId, channel: &str) -> Result<(), ChatError>;

    // Delivery.

    /// Delivers a stored message: to a channel's members, or to both parties of a direct
    /// conversation (every connection of each except `origin`).
    fn publish(&self, origin: Option<ConnId>, message: &ChatMessage);
}
