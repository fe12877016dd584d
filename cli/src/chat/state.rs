//! What a chat session remembers so a dropped connection costs nothing: the channels
//! it is in, the current target, where each stream was read up to (to replay from),
//! the ids recently shown (to drop duplicates of a replay) and the reconnect backoff.
//!
//! Pure state, no I/O: [`crate::chat::session`] drives it.
//!
//! Replay watermarks. The server numbers messages server-wide, but a connection does
//! not receive them in id order across sources: each channel and the direct-message
//! queue are separate streams, answers to requests (`Said`) jump ahead of queued
//! events, and a restart drops what was still queued. Within one stream, though, ids
//! only grow. So a reconnect replays each stream from the last id *received on that
//! stream*: each channel from its own mark, direct messages and file notices from
//! the mark of the direct-message stream. Messages this client said itself and
//! `/history` answers never move a mark; duplicates of the overlap are dropped by id.
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher as _, Hasher as _};
use std::time::Duration;

use xfer_proto::{ChannelName, ChatMessage, Target};

/// How many recent message ids are remembered for de-duplication. A replay after a
/// reconnect covers at most a few pages of history, far fewer than this.
pub const RECENT_IDS: usize = 8192;

/// A paste of more lines than this is sent only after the user says yes (irssi asks
/// too): a wrong clipboard should not flood a channel.
pub const PASTE_ASK: usize = 5;

/// First reconnect delay (before jitter).
pub const BACKOFF_START: Duration = Duration::from_secs(1);

/// Longest reconnect delay (before jitter).
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// The last [`RECENT_IDS`] message ids seen, as a set.
#[derive(Debug, Default)]
pub struct RecentIds {
    order: VecDeque<u64>,
    set: HashSet<u64>,
}

impl RecentIds {
    /// Records `id`; false if it was already there (a duplicate).
    pub fn insert(&mut self, id: u64) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > RECENT_IDS
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }

    /// Whether `id` was seen recently.
    pub fn contains(&self, id: u64) -> bool {
        self.set.contains(&id)
    }
}

/// Everything a session keeps across reconnects.
#[derive(Debug)]
pub struct State {
    /// This user's account name.
    pub me: String,
    /// Channels joined, re-joined after a reconnect.
    pub joined: BTreeSet<ChannelName>,
    /// Where a line without `/` goes (interactive mode).
    pub target: Option<Target>,
    /// Marked away (re-applied after a reconnect).
    pub away: bool,
    /// User names seen in member and `/who` lists (for Tab completion).
    pub known_users: BTreeSet<String>,
    /// A paste of more than [`PASTE_ASK`] lines waiting for a yes before it is sent.
    pub paste: Vec<String>,
    /// Largest id shown per conversation (saved as the read mark when leaving).
    pub shown: HashMap<Target, u64>,
    /// The server's last id when the first connection opened: the mark of a stream
    /// nothing was received on yet.
    start: u64,
    /// Largest id received on the direct-message stream (direct messages to and from
    /// this user, file notices): `ChatOpen { after }` on a reconnect.
    direct: u64,
    /// Largest id received per conversation ([`ChatMessage::conversation`], as the
    /// server names it in `Missed`), in stream order or by a complete catch-up: where a
    /// re-`Join` replays from and a catch-up stops.
    last_in: HashMap<Target, u64>,
    /// Channels re-joined after a reconnect whose replay may have been cut short, and
    /// the id it started after: the server reports the cut as `Missed` before any live
    /// message of the channel, counting from there.
    rejoined: HashMap<ChannelName, u64>,
    seen: RecentIds,
}

impl State {
    /// State for `me` on a first connection whose `ChatOpened` said `last_id`.
    pub fn new(me: String, last_id: u64) -> Self {
        State {
            me,
            joined: BTreeSet::new(),
            target: None,
            away: false,
            known_users: BTreeSet::new(),
            paste: Vec::new(),
            shown: HashMap::new(),
            start: last_id,
            direct: last_id,
            last_in: HashMap::new(),
            rejoined: HashMap::new(),
            seen: RecentIds::default(),
        }
    }

    /// Records a message as shown; true if it is new and should be shown, false for a
    /// duplicate (a replay of something already shown). Moves no replay mark.
    pub fn accept(&mut self, msg: &ChatMessage) -> bool {
        let shown = self.shown.entry(msg.conversation(&self.me)).or_insert(0);
        *shown = (*shown).max(msg.id);
        self.seen.insert(msg.id)
    }

    /// A message received on its stream, in the server's order (a pushed event or a
    /// `Join` replay), shown or not: moves the marks of its conversation and, for a
    /// direct message or notice, of the direct-message stream.
    pub fn received(&mut self, msg: &ChatMessage) {
        let conversation = msg.conversation(&self.me);
        if conversation.channel().is_none() {
            self.direct = self.direct.max(msg.id);
        }
        self.covered(conversation, msg.id);
    }

    /// Everything of `conversation` up to `id` is known (a complete catch-up): moves its
    /// mark, but not the direct-message stream's (other conversations may still have
    /// older messages queued there).
    pub fn covered(&mut self, conversation: Target, id: u64) {
        let last = self.last_in.entry(conversation).or_insert(0);
        *last = (*last).max(id);
    }

    /// `channel` was re-joined with a replay after `after`.
    pub fn rejoined(&mut self, channel: &ChannelName, after: u64) {
        self.rejoined.insert(channel.clone(), after);
    }

    /// A live message arrived on its stream: received, and for a re-joined channel the
    /// replay (and any `Missed` for it) is over.
    pub fn received_live(&mut self, msg: &ChatMessage) {
        if let Some(channel) = msg.target.channel() {
            self.rejoined.remove(channel);
        }
        self.received(msg);
    }

    /// Where a catch-up after `Missed` for `conversation` stops: its mark, or where a
    /// re-join's replay began if the server is reporting that replay cut short.
    pub fn missed_floor(&mut self, conversation: &Target) -> u64 {
        let floor = self.floor_of(conversation);
        conversation
            .channel()
            .and_then(|c| self.rejoined.remove(c))
            .map_or(floor, |after| after.min(floor))
    }

    /// Whether a message id was already shown.
    pub fn seen(&self, id: u64) -> bool {
        self.seen.contains(id)
    }

    /// Where a reconnect's `ChatOpen` replays direct messages and notices from.
    pub fn direct_after(&self) -> u64 {
        self.direct
    }

    /// Where `conversation` was read up to: where a re-`Join` replays from and a
    /// catch-up after lost messages stops; the session's start if nothing was received.
    pub fn floor_of(&self, conversation: &Target) -> u64 {
        self.last_in
            .get(conversation)
            .copied()
            .unwrap_or(self.start)
    }

    /// The prompt: `#general> `, `@bob> `, or `> `; `(offline) ` in front while
    /// reconnecting.
    pub fn prompt(&self, online: bool) -> String {
        let state = if online { "" } else { "(offline) " };
        if !self.paste.is_empty() {
            let to = self
                .target
                .as_ref()
                .map_or_else(String::new, |t| format!(" to {t}"));
            return format!("{state}send {} lines{to}? [y/N] ", self.paste.len());
        }
        match &self.target {
            Some(t) => format!("{state}{t}> "),
            None => format!("{state}> "),
        }
    }
}

/// Exponential reconnect backoff with jitter: 1 s, 2 s, 4 s … capped at 30 s, each
/// delay drawn between half and all of that, so clients cut off together do not all
/// come back in the same instant.
#[derive(Debug, Default)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    /// The delay before the next attempt (and counts the attempt).
    pub fn next_delay(&mut self) -> Duration {
        let base = self.base();
        self.attempt = self.attempt.saturating_add(1);
        jittered(base, random_fraction())
    }

    /// The delay before jitter for the next attempt.
    pub fn base(&self) -> Duration {
        BACKOFF_START
            .checked_mul(1u32.checked_shl(self.attempt).unwrap_or(u32::MAX))
            .unwrap_or(BACKOFF_CAP)
            .min(BACKOFF_CAP)
    }

    /// A connection worked: start again from the shortest delay.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// `base × (0.5 + fraction / 2)` for a fraction in `[0, 1)`.
pub fn jittered(base: Duration, fraction: f64) -> Duration {
    base.mul_f64(0.5 + fraction.clamp(0.0, 1.0) / 2.0)
}

/// A fraction in `[0, 1)` that differs between processes and calls; enough for jitter
/// (std's hasher keys are random per process).
fn random_fraction() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use xfer_proto::MessageBody;

    use super::*;

    fn t(s: &str) -> Target {
        Target::parse(s).unwrap()
    }

    fn msg(id: u64, target: &str) -> ChatMessage {
        ChatMessage {
            id,
            time_unix_ms: 0,
            from: "bob".into(),
            target: t(target),
            body: MessageBody::Text("x".into()),
        }
    }

    fn from(id: u64, from: &str, target: &str) -> ChatMessage {
        ChatMessage {
            from: from.into(),
            ..msg(id, target)
        }
    }

    #[test]
    fn duplicates_are_dropped_and_marks_only_grow() {
        let mut s = State::new("alice".into(), 10);
        assert_eq!((s.direct_after(), s.floor_of(&t("#a"))), (10, 10));
        let old = msg(4, "@alice");
        assert!(s.accept(&old), "an older replayed message is new");
        s.received(&old);
        assert_eq!(s.direct_after(), 10, "a mark never goes back");
        assert_eq!(s.floor_of(&t("@bob")), 4);
        assert!(s.accept(&msg(12, "#a")));
        s.received(&msg(12, "#a"));
        assert!(!s.accept(&msg(12, "#a")), "a replay of 12 is a duplicate");
        assert!(s.accept(&msg(11, "#b")), "out of order but unseen");
        s.received(&msg(11, "#b"));
        assert!(s.seen(11) && !s.seen(13));
        assert_eq!(s.floor_of(&t("#a")), 12);
        assert_eq!(s.floor_of(&t("#b")), 11);
        assert_eq!(s.floor_of(&t("#c")), 10, "nothing received: the start");
        assert_eq!(s.direct_after(), 10, "channel messages leave the DM mark");
    }

    #[test]
    fn marks_move_per_stream_only_on_what_was_received() {
        // bob's 100 in #lab is still queued for alice when her own 101 is answered.
        let mut s = State::new("alice".into(), 90);
        s.received(&msg(95, "#lab"));
        assert!(s.accept(&from(101, "alice", "#lab")), "her own line, shown");
        assert!(s.accept(&from(102, "alice", "@bob")));
        assert_eq!(
            s.floor_of(&t("#lab")),
            95,
            "a reconnect re-joins #lab after 95"
        );
        assert_eq!(s.direct_after(), 90, "and replays direct messages after 90");
        // Direct messages: received from the DM stream, keyed by the other party.
        s.received(&from(103, "bob", "@alice"));
        s.received(&from(104, "alice", "@carol"));
        assert_eq!(
            (s.floor_of(&t("@bob")), s.floor_of(&t("@carol"))),
            (103, 104)
        );
        assert_eq!(s.floor_of(&t("@alice")), 90, "never keyed by the recipient");
        assert_eq!(s.direct_after(), 104);
        // A catch-up of one conversation moves its mark, not the DM stream's.
        s.covered(t("@bob"), 120);
        assert_eq!((s.floor_of(&t("@bob")), s.direct_after()), (120, 104));
    }

    #[test]
    fn a_cut_short_rejoin_replay_is_caught_up_from_where_it_began() {
        let mut s = State::new("alice".into(), 10);
        s.received(&msg(20, "#lab"));
        let lab = ChannelName::new("lab").unwrap();
        s.rejoined(&lab, 20);
        assert_eq!(s.missed_floor(&t("#lab")), 20);
        s.covered(t("#lab"), 500);
        assert_eq!(s.missed_floor(&t("#lab")), 500, "a Missed is answered once");
        s.rejoined(&lab, 500);
        s.received_live(&msg(501, "#lab"));
        assert_eq!(
            s.missed_floor(&t("#lab")),
            501,
            "live messages end the replay"
        );
    }

    #[test]
    fn conversations_are_named_as_the_server_names_them() {
        let s = State::new("alice".into(), 0);
        let of = |m: ChatMessage| m.conversation(&s.me);
        assert_eq!(of(from(1, "bob", "@alice")), t("@bob"));
        assert_eq!(of(from(1, "alice", "@bob")), t("@bob"));
        assert_eq!(of(from(1, "alice", "@alice")), t("@alice"));
        assert_eq!(of(from(1, "bob", "#lab")), t("#lab"));
    }

    #[test]
    fn recent_ids_are_bounded() {
        let mut r = RecentIds::default();
        for id in 0..(RECENT_IDS as u64 + 10) {
            assert!(r.insert(id));
        }
        assert!(!r.contains(0), "the oldest were forgotten");
        assert!(r.contains(RECENT_IDS as u64 + 9));
        assert_eq!(r.set.len(), RECENT_IDS);
        assert_eq!(r.order.len(), RECENT_IDS);
    }

    #[test]
    fn backoff_doubles_to_a_cap_with_jitter() {
        let mut b = Backoff::default();
        let mut bases = Vec::new();
        for _ in 0..12 {
            bases.push(b.base().as_secs());
            let d = b.next_delay();
            let base = Duration::from_secs(*bases.last().unwrap());
            assert!(d >= base / 2 && d <= base, "{d:?} for base {base:?}");
        }
        assert_eq!(bases, [1, 2, 4, 8, 16, 30, 30, 30, 30, 30, 30, 30]);
        for _ in 0..100 {
            b.next_delay();
        }
        assert_eq!(b.base(), BACKOFF_CAP, "no overflow after many attempts");
        b.reset();
        assert_eq!(b.base(), BACKOFF_START);
        assert_eq!(
            jittered(Duration::from_secs(10), 0.0),
            Duration::from_secs(5)
        );
        assert_eq!(
            jittered(Duration::from_secs(10), 1.0),
            Duration::from_secs(10)
        );
        let f = random_fraction();
        assert!((0.0..1.0).contains(&f));
    }

    #[test]
    fn prompts() {
        let mut s = State::new("alice".into(), 0);
        assert_eq!(s.prompt(true), "> ");
        s.target = Some(t("#lab"));
        assert_eq!(s.prompt(true), "#lab> ");
        s.target = Some(t("@bob"));
        assert_eq!(s.prompt(false), "(offline) @bob> ");
        s.paste = vec!["a".into(); 6];
        assert_eq!(s.prompt(true), "send 6 lines to @bob? [y/N] ");
    }
}
