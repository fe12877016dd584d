//! A chat connection's [`Inbox`]: a bounded queue that never makes its sender wait.
//! When it is full the oldest event goes, and a dropped message is counted against its
//! conversation, so a slow reader finds the newest events (including everyone's latest
//! presence) and learns how many it lost.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use xfer_proto::{ChatEvent, Target};

use super::bus::{ChatBus, Deliver};
use super::envelope::{ConnId, Envelope};

/// Counts what a connection's queue let go of, by conversation, until it is read.
#[derive(Debug, Default)]
pub struct Drops {
    any: AtomicBool,
    by_target: Mutex<BTreeMap<Target, u64>>,
}

impl Drops {
    fn count(&self, target: Target) {
        let mut map = self.by_target.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(target).or_insert(0) += 1;
        self.any.store(true, Ordering::Release);
    }

    /// Takes the counts accumulated since the last call.
    pub fn take(&self) -> Vec<(Target, u64)> {
        if !self.any.swap(false, Ordering::Acquire) {
            return Vec::new();
        }
        let mut map = self.by_target.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *map).into_iter().collect()
    }
}

/// The queue shared by an [`Inbox`] and its [`InboxSender`].
#[derive(Debug)]
struct Queue {
    user: String,
    capacity: usize,
    items: Mutex<VecDeque<Arc<Envelope>>>,
    waker: AtomicWaker,
    drops: Drops,
    /// The smallest id of a message to `user` that was dropped (`u64::MAX`: none).
    /// Set while the queue is locked, so whoever pops a later message sees it.
    first_dropped_to_user: AtomicU64,
}

/// The sending half of a connection's [`Inbox`], kept by the bus.
#[derive(Debug, Clone)]
pub struct InboxSender {
    queue: Arc<Queue>,
}

impl InboxSender {
    /// Queues an event without waiting, making room by dropping the oldest. Dropped
    /// messages are counted per conversation (`@other`); dropped presence changes are
    /// not (`Who` tells the current state).
    pub fn deliver(&self, envelope: Arc<Envelope>) {
        let q = &self.queue;
        let evicted = {
            let mut items = q.items.lock().unwrap_or_else(|p| p.into_inner());
            let evicted = (items.len() >= q.capacity)
                .then(|| items.pop_front())
                .flatten();
            if let Some(old) = &evicted
                && let ChatEvent::Message(m) = &old.event
                && m.target.user().is_some_and(|to| to == q.user.as_str())
            {
                q.first_dropped_to_user.fetch_min(m.id, Ordering::AcqRel);
            }
            items.push_back(envelope);
            evicted
        };
        if let Some(old) = evicted
            && let ChatEvent::Message(m) = &old.event
        {
            q.drops.count(m.conversation(&q.user));
        }
        q.waker.wake();
    }
}

impl Deliver for InboxSender {
    fn deliver(&self, envelope: Arc<Envelope>) {
        InboxSender::deliver(self, envelope);
    }
}

/// A chat connection's private queue: direct messages and notices to or from its user,
/// and presence changes.
pub struct Inbox {
    /// This connection on the bus.
    pub id: ConnId,
    queue: Arc<Queue>,
    bus: Option<Arc<dyn ChatBus>>,
}

impl Inbox {
    /// A bounded inbox for `user` (capacity at least 1) and its sending half.
    pub fn new(id: ConnId, user: &str, capacity: usize) -> (Inbox, InboxSender) {
        let queue = Arc::new(Queue {
            user: user.to_owned(),
            capacity: capacity.max(1),
            items: Mutex::new(VecDeque::new()),
            waker: AtomicWaker::new(),
            drops: Drops::default(),
            first_dropped_to_user: AtomicU64::new(u64::MAX),
        });
        let sender = InboxSender {
            queue: queue.clone(),
        };
        let inbox = Inbox {
            id,
            queue,
            bus: None,
        };
        (inbox, sender)
    }

    /// The next queued event, or `Pending` (woken when one arrives).
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Arc<Envelope>> {
        // Registered before looking, so an event queued in between still wakes us.
        self.queue.waker.register(cx.waker());
        match self.try_recv() {
            Some(e) => Poll::Ready(e),
            None => Poll::Pending,
        }
    }

    /// The next queued event, if any.
    pub fn try_recv(&self) -> Option<Arc<Envelope>> {
        let mut items = self.queue.items.lock().unwrap_or_else(|p| p.into_inner());
        items.pop_front()
    }

    /// Messages dropped since the last call, by conversation.
    pub fn take_drops(&self) -> Vec<(Target, u64)> {
        self.queue.drops.take()
    }

    /// The smallest id of a direct message or notice to this user that the queue let
    /// go of, if any. Whatever this connection writes after popping a later event, this
    /// already tells of the drop.
    pub fn first_dropped_to_user(&self) -> Option<u64> {
        let id = self.queue.first_dropped_to_user.load(Ordering::Acquire);
        (id != u64::MAX).then_some(id)
    }

    /// Makes dropping the inbox disconnect it from `bus`, so a session that ends in
    /// any way leaves its channels and goes offline.
    pub fn disconnect_on_drop(&mut self, bus: Arc<dyn ChatBus>) {
        self.bus = Some(bus);
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        if let Some(bus) = self.bus.take() {
            bus.disconnect(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use xfer_proto::{ChatMessage, MessageBody, Presence, PresenceState};

    use super::*;

    fn dm(id: u64, from: &str, to: &str) -> Arc<Envelope> {
        Arc::new(Envelope {
            origin: None,
            event: ChatEvent::Message(ChatMessage {
                id,
                time_unix_ms: 0,
                from: from.into(),
                target: Target::parse(&format!("@{to}")).unwrap(),
                body: MessageBody::Text("hi".into()),
            }),
        })
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_remembers_the_first_dropped_message_to_its_user() {
        let (inbox, sender) = Inbox::new(ConnId(1), "bob", 2);
        sender.deliver(dm(3, "bob", "alice"));
        sender.deliver(dm(5, "alice", "bob"));
        sender.deliver(dm(7, "alice", "bob"));
        assert_eq!(
            inbox.first_dropped_to_user(),
            None,
            "bob's own message went"
        );
        sender.deliver(Arc::new(Envelope {
            origin: None,
            event: ChatEvent::Presence(Presence {
                user: "carol".into(),
                state: PresenceState::Online,
            }),
        }));
        sender.deliver(dm(9, "alice", "bob"));
        assert_eq!(inbox.first_dropped_to_user(), Some(5));
        assert_eq!(inbox.take_drops(), [(Target::parse("@alice").unwrap(), 3)]);
        let left: Vec<_> = std::iter::from_fn(|| inbox.try_recv()).collect();
        assert_eq!(left.len(), 2);
        assert!(matches!(&left[1].event, ChatEvent::Message(m) if m.id == 9));
    }
}
