//! What a chat session remembers so a dropped connection costs nothing: the channels
//! it is in, the current target, the last message id seen (to replay from), the ids
//! recently shown (to drop duplicates of a replay) and the reconnect backoff.
//!
//! Pure state, no I/O: [`crate::chat::session`] drives it.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher as _, Hasher as _};
use std::time::Duration;

use xfer_proto::{ChatMessage, Target};

/// How many recent message ids are remembered for de-duplication. A replay after a
/// reconnect covers at most a few pages of history, far fewer than this.
pub const RECENT_IDS: usize = 8192;

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
    /// Channels joined (`#name`), re-joined after a reconnect.
    pub joined: BTreeSet<String>,
    /// Where a line without `/` goes (interactive mode).
    pub target: Option<Target>,
    /// Marked away (re-applied after a reconnect).
    pub away: bool,
    /// Largest message id known to be covered: the server's last id when the first
    /// connection opened, or a larger id seen since. Replays start after it.
    cursor: u64,
    /// Largest id seen per target, where a catch-up after lost messages stops.
    last_in: HashMap<String, u64>,
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
            cursor: last_id,
            last_in: HashMap::new(),
            seen: RecentIds::default(),
        }
    }

    /// Records a message; true if it is new and should be shown, false for a duplicate
    /// (a replay of something already shown).
    pub fn accept(&mut self, msg: &ChatMessage) -> bool {
        if !self.seen.insert(msg.id) {
            return false;
        }
        self.cursor = self.cursor.max(msg.id);
        let last = self.last_in.entry(msg.target.clone()).or_insert(0);
        *last = (*last).max(msg.id);
        true
    }

    /// Whether a message id was already shown.
    pub fn seen(&self, id: u64) -> bool {
        self.seen.contains(id)
    }

    /// Replay after this id when reconnecting (`ChatOpen` and every re-`Join`).
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Where a catch-up of `target` can stop: the last id seen there, or the cursor's
    /// start if nothing was.
    pub fn floor_of(&self, target: &str, otherwise: u64) -> u64 {
        self.last_in.get(target).copied().unwrap_or(otherwise)
    }

    /// The prompt: `#general> `, `@bob> `, or `> `; `(offline) ` in front while
    /// reconnecting.
    pub fn prompt(&self, online: bool) -> String {
        let state = if online { "" } else { "(offline) " };
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

    fn msg(id: u64, target: &str) -> ChatMessage {
        ChatMessage {
            id,
            time_unix_ms: 0,
            from: "bob".into(),
            target: target.into(),
            body: MessageBody::Text("x".into()),
        }
    }

    #[test]
    fn duplicates_are_dropped_and_the_cursor_only_grows() {
        let mut s = State::new("alice".into(), 10);
        assert_eq!(s.cursor(), 10);
        assert!(
            s.accept(&msg(4, "@alice")),
            "an older replayed message is new"
        );
        assert_eq!(s.cursor(), 10, "the cursor never goes back");
        assert!(s.accept(&msg(12, "#a")));
        assert!(!s.accept(&msg(12, "#a")), "a replay of 12 is a duplicate");
        assert!(s.accept(&msg(11, "#b")), "out of order but unseen");
        assert_eq!(s.cursor(), 12);
        assert!(s.seen(11) && !s.seen(13));
        assert_eq!(s.floor_of("#a", 0), 12);
        assert_eq!(s.floor_of("#b", 0), 11);
        assert_eq!(s.floor_of("#c", 7), 7);
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
        s.target = Some(Target::Channel("lab".into()));
        assert_eq!(s.prompt(true), "#lab> ");
        s.target = Some(Target::User("bob".into()));
        assert_eq!(s.prompt(false), "(offline) @bob> ");
    }
}
