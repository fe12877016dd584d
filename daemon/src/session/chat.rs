//! Chat requests of a session (15–22, 25–26) and the events it pushes.
//!
//! `Say`, `History`, `Who` and `Channels` work on any authenticated connection.
//! `ChatOpen` makes the connection a chat connection: it gets an inbox on the bus
//! (direct messages, file notices, presence) and may `Join` channels, each a broadcast
//! receiver. The request loop waits on those next to the socket ([`ChatState::next`])
//! and writes what arrives as `Event` frames between responses. Replays (stored direct
//! messages at `ChatOpen`, `Missed` notes) are queued in [`ChatState::pending`] and
//! written right after the response that caused them.
//!
//! A connection that reads too slowly blocks only its own session on the socket
//! write; meanwhile the bus skips it past (`Missed`), and nobody else waits.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use tokio::sync::broadcast::error::RecvError;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use xfer_proto::{
    ChannelName, ChatEvent, ChatMessage, ErrorCode, Frame, MAX_HISTORY, MessageBody, PresenceState,
    Response, Target,
};

use super::link::{Link, Transport};
use super::reply::End;
use crate::chat::{
    ChatError, ConnId, ConvKey, Envelope, Inbox, Subscriptions, TokenBucket, check_text,
};
use crate::state::ServerState;

/// Events written per flush when many are ready at once.
const MAX_EVENT_BATCH: usize = 64;
/// Room left in a `Joined` frame for everything but the replayed messages' texts.
const JOINED_BUDGET: usize = xfer_proto::MAX_FRAME_LEN - 64 * 1024;

/// Something that arrived for this connection.
pub(crate) enum Incoming {
    /// From the inbox.
    Inbox(Arc<Envelope>),
    /// From a channel, or how far this connection fell behind it.
    Channel(ChannelName, Result<Arc<Envelope>, RecvError>),
    /// Inbox events that did not fit, by conversation.
    Dropped(Vec<(Target, u64)>),
}

struct OpenChat {
    inbox: Inbox,
    channels: Subscriptions<ChannelName, Arc<Envelope>>,
    /// Per channel (`#x`) or conversation (`@y`), the largest id already sent in a
    /// replay: live copies up to it are skipped.
    seen: HashMap<Target, u64>,
    /// Whether the `ChatOpen` replay included the user's own direct messages (it does
    /// only with `after`); if not, `seen` must not hide live copies of them.
    own_replayed: bool,
    /// Which source is polled first next time, so neither can starve the other.
    inbox_first: bool,
}

/// The chat side of a session.
pub(crate) struct ChatState {
    state: Arc<ServerState>,
    bucket: TokenBucket,
    open: Option<OpenChat>,
    /// Events to write right after the current response.
    pending: VecDeque<ChatEvent>,
}

impl ChatState {
    pub fn new(state: Arc<ServerState>) -> ChatState {
        let config = &state.config().chat;
        ChatState {
            state: state.clone(),
            bucket: TokenBucket::new(
                config.messages_per_sec,
                config.message_burst,
                Instant::now(),
            ),
            open: None,
            pending: VecDeque::new(),
        }
    }

    /// Whether `ChatOpen` was accepted on this connection.
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// This connection on the bus, once chat is open.
    pub fn open_conn(&self) -> Option<ConnId> {
        self.open.as_ref().map(|o| o.inbox.id)
    }

    /// Leaves the bus (channels, presence). Safe to call when not open.
    pub fn close(&mut self) {
        self.open = None;
        self.pending.clear();
    }

    /// The next thing that arrived; pending forever while chat is not open.
    ///
    /// # Cancel safety
    /// Cancel-safe: the inbox and the channel receivers lose nothing unless it is
    /// returned.
    pub async fn next(&mut self) -> Incoming {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    /// What has already arrived, without waiting.
    fn try_next(&mut self) -> Option<Incoming> {
        match self.poll_next(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(incoming) => Some(incoming),
            Poll::Pending => None,
        }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Incoming> {
        let Some(open) = &mut self.open else {
            return Poll::Pending;
        };
        let dropped = open.inbox.take_drops();
        if !dropped.is_empty() {
            return Poll::Ready(Incoming::Dropped(dropped));
        }
        open.inbox_first = !open.inbox_first;
        let order: [Source; 2] = if open.inbox_first {
            [poll_inbox, poll_channels]
        } else {
            [poll_channels, poll_inbox]
        };
        // Both are polled before `Pending`, so both have registered a waker.
        for poll in order {
            if let Poll::Ready(incoming) = poll(open, cx) {
                return Poll::Ready(incoming);
            }
        }
        Poll::Pending
    }

    /// Turns what arrived into the events to write: skips this connection's own
    /// events and live copies of what a replay already sent.
    fn accept(&mut self, incoming: Incoming, me: &str, out: &mut Vec<ChatEvent>) {
        let Some(open) = &mut self.open else {
            return;
        };
        let envelope = match incoming {
            Incoming::Dropped(counts) => {
                out.extend(
                    counts
                        .into_iter()
                        .map(|(target, count)| ChatEvent::Missed { target, count }),
                );
                return;
            }
            Incoming::Channel(channel, Err(RecvError::Lagged(count))) => {
                out.push(ChatEvent::Missed {
                    target: Target::Channel(channel),
                    count,
                });
                return;
            }
            Incoming::Channel(_, Err(RecvError::Closed)) => return,
            Incoming::Inbox(envelope) | Incoming::Channel(_, Ok(envelope)) => envelope,
        };
        if envelope.origin == Some(open.inbox.id) {
            return;
        }
        if let ChatEvent::Message(m) = &envelope.event {
            let conversation = m.conversation(me);
            let replayable = open.own_replayed || m.from != me || m.target.channel().is_some();
            if replayable
                && open
                    .seen
                    .get(&conversation)
                    .is_some_and(|&seen| m.id <= seen)
            {
                return;
            }
        }
        out.push(envelope.event.clone());
    }
}

type Source = fn(&mut OpenChat, &mut Context<'_>) -> Poll<Incoming>;

fn poll_inbox(open: &mut OpenChat, cx: &mut Context<'_>) -> Poll<Incoming> {
    open.inbox.poll_recv(cx).map(Incoming::Inbox)
}

fn poll_channels(open: &mut OpenChat, cx: &mut Context<'_>) -> Poll<Incoming> {
    open.channels
        .poll_next(cx)
        .map(|(key, r)| Incoming::Channel(key, r))
}

pub(super) fn chat_error(e: &ChatError) -> Response {
    if let ChatError::Store(inner) = e
        && e.code() == ErrorCode::Internal
    {
        tracing::error!(error = %inner, "chat store failure");
    }
    Response::error(e.code(), e.peer_message())
}

/// Puts each "went offline" after the same user's "left #channel" in `events`.
///
/// A user's last connection closing parts them from their channels (the channels'
/// queues) and takes them offline (every inbox) at once. This connection reads those
/// queues in turn, so it may take the offline note first; both are queued before
/// either is read, so they meet in one batch, and this restores their order.
fn parts_before_offline(events: &mut Vec<ChatEvent>) {
    let mut i = 0;
    while i < events.len() {
        if let ChatEvent::Presence(p) = &events[i]
            && p.state == PresenceState::Offline
            && let Some(last) = events
                .iter()
                .rposition(|e| matches!(e, ChatEvent::Parted { user, .. } if *user == p.user))
            && last > i
        {
            let offline = events.remove(i);
            events.insert(last, offline);
            continue;
        }
        i += 1;
    }
}

/// Drops the oldest messages until the texts fit `budget` bytes; returns how many.
fn fit(messages: &mut Vec<ChatMessage>, budget: usize) -> u64 {
    let size = |m: &ChatMessage| {
        128 + m.from.len()
            + m.target.name().len()
            + match &m.body {
                MessageBody::Text(t) => t.len(),
                MessageBody::File { path, .. } => path.len() + 48,
            }
    };
    let mut total: usize = messages.iter().map(size).sum();
    let mut cut = 0;
    while total > budget && cut < messages.len() {
        total -= size(&messages[cut]);
        cut += 1;
    }
    messages.drain(..cut);
    cut as u64
}

impl ChatState {
    /// Refuses when the connection's bucket is empty; the connection stays usable.
    /// Takes one request from the connection's rate limit, after checking that chat can
    /// be served at all (a shared bus may be unreachable).
    fn throttle(&mut self) -> Result<(), ChatError> {
        self.state.chat.bus().check()?;
        if self.bucket.take(Instant::now()) {
            Ok(())
        } else {
            Err(ChatError::Throttled {
                per_sec: self.bucket.per_sec(),
                burst: self.bucket.burst(),
            })
        }
    }

    fn open_id(&self) -> Result<ConnId, ChatError> {
        self.open_conn().ok_or(ChatError::NotOpen)
    }

    pub async fn chat_open(
        &mut self,
        user: &str,
        after: Option<u64>,
    ) -> Result<Response, ChatError> {
        if self.is_open() {
            return Err(ChatError::AlreadyOpen);
        }
        self.throttle()?;
        let chat = self.state.chat.clone();
        // Connect first, then read: whatever is stored from here on arrives live too,
        // and `seen` tells the copies apart.
        let inbox = chat.connect(user);
        let replay = chat.replay(user, after).await?;
        if let Some(id) = after {
            // The client has everything up to `id`: later replays need not repeat it.
            chat.delivered()
                .advance(user, id.min(chat.history().last_id()));
        }
        self.open = Some(OpenChat {
            inbox,
            channels: Subscriptions::default(),
            seen: replay.seen,
            own_replayed: after.is_some(),
            inbox_first: true,
        });
        let pending = &mut self.pending;
        pending.extend(
            replay
                .missed
                .into_iter()
                .map(|(target, count)| ChatEvent::Missed { target, count }),
        );
        pending.extend(replay.messages.into_iter().map(ChatEvent::Message));
        Ok(Response::ChatOpened {
            user: user.to_owned(),
            last_id: chat.history().last_id(),
        })
    }

    pub async fn join(
        &mut self,
        channel: &ChannelName,
        history: u32,
        after: Option<u64>,
    ) -> Result<Response, ChatError> {
        let id = self.open_id()?;
        let name = channel.as_str();
        self.throttle()?;
        let chat = self.state.chat.clone();
        let joined = chat.bus().join(id, name)?;
        let key = ConvKey::Channel(name.to_owned());
        let limit = MAX_HISTORY as usize;
        let page = match after {
            Some(after) => {
                chat.history()
                    .after(&key, after, limit, Box::new(|_| true))
                    .await
            }
            None => {
                let n = (history as usize).min(limit);
                chat.history().last(&key, n, None).await
            }
        };
        let mut page = match page {
            Ok(p) => p,
            Err(e) => {
                let _ = chat.bus().part(id, name);
                return Err(e.into());
            }
        };
        let members_size: usize = joined.members.iter().map(|p| p.user.len() + 8).sum();
        let cut = fit(
            &mut page.messages,
            JOINED_BUDGET.saturating_sub(members_size),
        );
        let target = Target::Channel(channel.clone());
        let skipped = page.skipped + cut;
        if skipped > 0 {
            self.pending.push_back(ChatEvent::Missed {
                target: target.clone(),
                count: skipped,
            });
        }
        if let Some(open) = &mut self.open {
            open.channels.insert(channel.clone(), joined.receiver);
            open.seen.insert(target, page.last_read);
        }
        Ok(Response::Joined {
            channel: channel.clone(),
            members: joined.members,
            history: page.messages,
        })
    }

    pub fn part(&mut self, channel: &ChannelName) -> Result<Response, ChatError> {
        let id = self.open_id()?;
        self.throttle()?;
        self.state.chat.bus().part(id, channel.as_str())?;
        if let Some(open) = &mut self.open {
            open.channels.remove(channel.as_str());
            open.seen.remove(&Target::Channel(channel.clone()));
        }
        Ok(Response::Ok)
    }

    pub async fn say(
        &mut self,
        user: &str,
        target: &Target,
        text: String,
    ) -> Result<Response, ChatError> {
        check_text(&text)?;
        if let Target::User(to) = target
            && self.state.passwords.find(to.as_str()).await.is_none()
        {
            return Err(ChatError::NoUser(to.to_string()));
        }
        self.throttle()?;
        let origin = self.open_conn();
        let message = self
            .state
            .chat
            .post(origin, user, target, MessageBody::Text(text))
            .await?;
        Ok(Response::Said {
            id: message.id,
            time_unix_ms: message.time_unix_ms,
        })
    }

    pub async fn chat_history(
        &mut self,
        user: &str,
        target: &Target,
        count: u32,
        before: Option<u64>,
    ) -> Result<Response, ChatError> {
        let key = ConvKey::of(target, user);
        if let Target::User(to) = target
            && !self.state.chat.history().exists(&key)
            && self.state.passwords.find(to.as_str()).await.is_none()
        {
            return Err(ChatError::NoUser(to.to_string()));
        }
        self.throttle()?;
        let history = self.state.chat.history();
        let count = count.min(MAX_HISTORY) as usize;
        let page = history.last(&key, count, before).await?;
        Ok(Response::History {
            target: target.clone(),
            messages: page.messages,
        })
    }

    /// `MarkRead`: rate-limited like any chat request; durable when answered.
    pub async fn mark_read(
        &mut self,
        user: &str,
        target: &Target,
        id: u64,
    ) -> Result<Response, ChatError> {
        self.throttle()?;
        self.state.chat.mark_read(user, target, id).await?;
        Ok(Response::Ok)
    }

    /// `Catchup`: unread counts, mentions and new files since the read positions.
    pub async fn catchup(&mut self, user: &str) -> Result<Response, ChatError> {
        self.throttle()?;
        Ok(Response::Catchup(self.state.chat.catchup(user).await?))
    }

    pub fn channels(&self) -> Response {
        Response::Channels {
            channels: self.state.chat.bus().channels(),
        }
    }

    pub fn who(&self, channel: Option<&ChannelName>) -> Result<Response, ChatError> {
        Ok(Response::Who {
            users: self.state.chat.bus().who(channel.map(ChannelName::as_str)),
        })
    }

    pub fn set_away(&mut self, away: bool) -> Result<Response, ChatError> {
        let id = self.open_id()?;
        self.throttle()?;
        self.state.chat.bus().set_away(id, away);
        Ok(Response::Ok)
    }

    /// Writes what arrived, with whatever else is ready (one flush per batch).
    pub(super) async fn deliver<T: Transport>(
        &mut self,
        first: Incoming,
        me: Option<&str>,
        link: &mut Link<T>,
        shutdown: &CancellationToken,
    ) -> Result<(), End> {
        let Some(me) = me else {
            self.close();
            return Ok(());
        };
        let mut events = Vec::new();
        self.accept(first, me, &mut events);
        while events.len() < MAX_EVENT_BATCH {
            let Some(more) = self.try_next() else {
                break;
            };
            self.accept(more, me, &mut events);
        }
        parts_before_offline(&mut events);
        self.write_events(events, me, link, shutdown).await
    }

    /// Writes the events queued by the last request.
    pub(super) async fn write_pending<T: Transport>(
        &mut self,
        me: Option<&str>,
        link: &mut Link<T>,
        shutdown: &CancellationToken,
    ) -> Result<(), End> {
        let Some(me) = me else {
            self.pending.clear();
            return Ok(());
        };
        while !self.pending.is_empty() {
            let n = self.pending.len().min(MAX_EVENT_BATCH);
            let batch: Vec<ChatEvent> = self.pending.drain(..n).collect();
            self.write_events(batch, me, link, shutdown).await?;
        }
        Ok(())
    }

    /// Writes events and flushes, giving up on a peer that does not read for the idle
    /// time or when the server shuts down. Direct messages to this user that were
    /// written raise the user's delivery marker, but never to or past one that this
    /// connection's queue dropped: that one is replayed at the next `ChatOpen`.
    async fn write_events<T: Transport>(
        &mut self,
        events: Vec<ChatEvent>,
        me: &str,
        link: &mut Link<T>,
        shutdown: &CancellationToken,
    ) -> Result<(), End> {
        if events.is_empty() {
            return Ok(());
        }
        let delivered = self.delivered_mark(&events, me);
        let idle = link.idle();
        let frames = events
            .into_iter()
            .map(|event| Frame::Message(Response::Event(Box::new(event))));
        let write = link.send_all(frames);
        let stopped = tokio::select! {
            r = timeout(idle, write) => match r {
                Ok(Ok(())) => false,
                _ => return Err(End::PeerClosed),
            },
            () = shutdown.cancelled() => true,
        };
        // A kick or the shutdown: uploads are checkpointed and the peer told which.
        if stopped {
            return Err(End::Stopped);
        }
        if let Some(id) = delivered {
            self.state.chat.delivered().advance(me, id);
        }
        Ok(())
    }
}

/// The same events for a transport other than the framed link (the web's WebSocket):
/// the caller writes them itself and then reports them with [`ChatState::written`].
impl ChatState {
    /// What arrived and whatever else is ready, as events to write (own events and
    /// replayed copies skipped).
    pub fn collect(&mut self, first: Incoming, me: &str) -> Vec<ChatEvent> {
        let mut events = Vec::new();
        self.accept(first, me, &mut events);
        while events.len() < MAX_EVENT_BATCH {
            let Some(more) = self.try_next() else {
                break;
            };
            self.accept(more, me, &mut events);
        }
        parts_before_offline(&mut events);
        events
    }

    /// The events queued by the last request (the `ChatOpen` replay, `Missed` notes).
    pub fn take_pending(&mut self) -> Vec<ChatEvent> {
        self.pending.drain(..).collect()
    }

    /// Events were written to `me`: raises the delivery marker as `write_events` does.
    pub fn written(&mut self, events: &[ChatEvent], me: &str) {
        if let Some(id) = self.delivered_mark(events, me) {
            self.state.chat.delivered().advance(me, id);
        }
    }

    /// The highest direct message to `me` among `events`, but never at or past one that
    /// this connection's queue dropped: that one is replayed at the next `ChatOpen`.
    fn delivered_mark(&self, events: &[ChatEvent], me: &str) -> Option<u64> {
        let delivered = events
            .iter()
            .filter_map(|e| match e {
                ChatEvent::Message(m) if m.target.user().is_some_and(|to| *to == *me) => Some(m.id),
                _ => None,
            })
            .max();
        // Read after the events were taken from the queue: a drop before any of them is
        // already recorded.
        let hole = self
            .open
            .as_ref()
            .and_then(|o| o.inbox.first_dropped_to_user());
        match (delivered, hole) {
            (Some(id), Some(hole)) => Some(id.min(hole.saturating_sub(1))),
            (d, _) => d,
        }
    }
}

#[cfg(test)]
mod tests {
    use xfer_proto::Presence;

    use super::*;

    fn presence(user: &str, state: PresenceState) -> ChatEvent {
        ChatEvent::Presence(Presence {
            user: user.into(),
            state,
        })
    }

    fn parted(user: &str, channel: &str) -> ChatEvent {
        ChatEvent::Parted {
            channel: channel.into(),
            user: user.into(),
        }
    }

    #[test]
    fn a_user_leaves_their_channels_before_going_offline() {
        let mut events = vec![
            presence("bob", PresenceState::Offline),
            presence("carol", PresenceState::Offline),
            parted("bob", "#lab"),
            parted("dave", "#lab"),
            parted("bob", "#ops"),
            presence("dave", PresenceState::Online),
        ];
        parts_before_offline(&mut events);
        assert_eq!(
            events,
            [
                presence("carol", PresenceState::Offline),
                parted("bob", "#lab"),
                parted("dave", "#lab"),
                parted("bob", "#ops"),
                presence("bob", PresenceState::Offline),
                presence("dave", PresenceState::Online),
            ]
        );
        let mut ordered = events.clone();
        parts_before_offline(&mut ordered);
        assert_eq!(ordered, events, "an ordered batch stays as it is");
    }
}
