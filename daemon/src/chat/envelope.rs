//! What travels on a chat bus: events, and the connection that caused them.

use xfer_proto::ChatEvent;

/// Identifies one chat connection on a bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// An event as it travels on the bus: `origin` is the connection that caused it, which
/// does not get it back (it has its own answer, e.g. `Said`).
#[derive(Debug)]
pub struct Envelope {
    /// The connection that caused the event, if any.
    pub origin: Option<ConnId>,
    /// The event.
    pub event: ChatEvent,
}
