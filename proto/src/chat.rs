//! Chat: targets (`#channel` or `@user`), messages, presence and the events a server
//! pushes to a chat connection.
//!
//! A connection becomes a chat connection with [`crate::Request::ChatOpen`]; from then on
//! the server may send [`crate::Response::Event`] frames at any moment, between the
//! answers to requests. Every other response still answers exactly one request, in order,
//! so a client tells them apart by variant alone.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Digest;
use crate::names::{ChannelName, UserName};

/// Longest message text in bytes (UTF-8). Longer texts are refused with `TooLarge`.
pub const MAX_MESSAGE_LEN: usize = 4000;

/// Most messages one `Join` or `History` answer carries (200 × 4,000 bytes fits a frame).
pub const MAX_HISTORY: u32 = 200;

/// Where a message goes: a channel or a direct conversation with one user.
///
/// On the wire (postcard) a target is its variant index (`0` channel, `1` user, one
/// byte) and the bare name as a length-prefixed string: `#lab` is `00 03 6c 61 62`,
/// exactly as long as the string `"#lab"` would be.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Target {
    /// `#name`: every member of the channel.
    Channel(ChannelName),
    /// `@name`: a direct conversation with that user.
    User(UserName),
}

/// Why a target string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Neither `#` nor `@` in front.
    #[error("a target is #channel or @user")]
    NoSigil,
    /// The channel name is empty, too long or has characters other than a-z 0-9 `-` `_` `.`.
    #[error("a channel name is 1 to 32 of a-z, 0-9, '-', '_', '.' after '#'")]
    BadChannel,
    /// The user name breaks the account-name rule.
    #[error(
        "a user name is 1 to 32 of a-z, A-Z, 0-9, '-', '_', '.' after '@', starting with a letter or digit"
    )]
    BadUser,
}

impl Target {
    /// Parses `#channel` (case-insensitive, stored lowercase) or `@user`.
    pub fn parse(s: &str) -> Result<Target, TargetError> {
        if let Some(name) = s.strip_prefix('#') {
            ChannelName::new(name)
                .map(Target::Channel)
                .map_err(|_| TargetError::BadChannel)
        } else if let Some(name) = s.strip_prefix('@') {
            UserName::new(name)
                .map(Target::User)
                .map_err(|_| TargetError::BadUser)
        } else {
            Err(TargetError::NoSigil)
        }
    }

    /// The bare name, without sigil.
    pub fn name(&self) -> &str {
        match self {
            Target::Channel(n) => n.as_str(),
            Target::User(n) => n.as_str(),
        }
    }

    /// The channel, if this is one.
    pub fn channel(&self) -> Option<&ChannelName> {
        match self {
            Target::Channel(c) => Some(c),
            Target::User(_) => None,
        }
    }

    /// The user, if this is a direct conversation.
    pub fn user(&self) -> Option<&UserName> {
        match self {
            Target::User(u) => Some(u),
            Target::Channel(_) => None,
        }
    }
}

impl std::str::FromStr for Target {
    type Err = TargetError;
    fn from_str(s: &str) -> Result<Target, TargetError> {
        Target::parse(s)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Channel(n) => write!(f, "{n}"),
            Target::User(n) => write!(f, "@{n}"),
        }
    }
}

/// Compares with the typed form, `#lab` or `@bob`.
impl PartialEq<str> for Target {
    fn eq(&self, other: &str) -> bool {
        match self {
            Target::Channel(c) => other.strip_prefix('#') == Some(c.as_str()),
            Target::User(u) => other.strip_prefix('@') == Some(u.as_str()),
        }
    }
}

impl PartialEq<&str> for Target {
    fn eq(&self, other: &&str) -> bool {
        *self == **other
    }
}

impl From<ChannelName> for Target {
    fn from(c: ChannelName) -> Target {
        Target::Channel(c)
    }
}

impl From<UserName> for Target {
    fn from(u: UserName) -> Target {
        Target::User(u)
    }
}

/// What a message says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// Text typed by a person. Receivers must escape control characters before printing.
    Text(String),
    /// A file handed to the recipient with `SendBegin`: now committed in their inbox.
    File {
        /// Where it is in the recipient's namespace, e.g. `inbox/alice/photo.png`.
        path: String,
        /// Size in bytes.
        size: u64,
        /// BLAKE3 of the whole file.
        digest: Digest,
    },
}

/// One stored chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Server-wide, strictly increasing, survives restarts: clients resume "after id".
    pub id: u64,
    /// When the server accepted it, milliseconds since the Unix epoch.
    pub time_unix_ms: u64,
    /// Sender's account name.
    pub from: String,
    /// The channel, or for a direct message the recipient. A client shows a direct
    /// conversation under the other party's name: see [`ChatMessage::conversation`].
    pub target: Target,
    /// The content.
    pub body: MessageBody,
}

impl ChatMessage {
    /// The conversation this message belongs to as `me` sees it: its channel, or for a
    /// direct message the other party (`@bob` for bob's message to `me` as for `me`'s
    /// message to bob; `@me` for a note to oneself). The one rule every side uses.
    pub fn conversation(&self, me: &str) -> Target {
        match &self.target {
            Target::User(_) if self.from != me => match UserName::new(self.from.as_str()) {
                Ok(from) => Target::User(from),
                // A sender is always an account; an impossible one keeps the target.
                Err(_) => self.target.clone(),
            },
            target => target.clone(),
        }
    }
}

/// Whether a user is reachable in chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PresenceState {
    /// At least one chat connection open.
    Online,
    /// Online but marked away (`SetAway`).
    Away,
    /// No chat connection open.
    Offline,
}

/// One user's presence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// Account name.
    pub user: String,
    /// Online, away or offline.
    pub state: PresenceState,
}

/// A channel in a [`crate::Response::Channels`] list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelInfo {
    /// Name with `#`.
    pub name: String,
    /// Members present now.
    pub members: u32,
}

/// Something the server pushes to a chat connection, unasked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChatEvent {
    /// A message in a joined channel, a direct message to or from this user, or a file
    /// handed to this user. Messages stored while the user was offline arrive right
    /// after `ChatOpen`.
    Message(ChatMessage),
    /// Someone joined a channel this connection is in.
    Joined {
        /// `#channel`.
        channel: String,
        /// Who.
        user: String,
    },
    /// Someone left a channel this connection is in (or their last connection closed).
    Parted {
        /// `#channel`.
        channel: String,
        /// Who.
        user: String,
    },
    /// A user's presence changed.
    Presence(Presence),
    /// This connection read too slowly and `count` messages of `target` were dropped for
    /// it (the room did not wait); `History` fetches them.
    Missed {
        /// The conversation, as [`ChatMessage::conversation`] names it.
        target: Target,
        /// How many.
        count: u64,
    },
}

/// What is new for a user since their read positions: the answer to
/// [`crate::Request::Catchup`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catchup {
    /// Every channel the user has a read position in and every direct conversation
    /// they have, sorted by target; those with nothing unread too (their position is
    /// what "new since you left" is measured from).
    pub conversations: Vec<Unread>,
    /// Files handed to the user after their read position in the sender's
    /// conversation, oldest first (at most [`MAX_CATCHUP_FILES`], the newest).
    pub files: Vec<ChatMessage>,
}

/// Most files one [`Catchup`] lists.
pub const MAX_CATCHUP_FILES: usize = 200;

/// One conversation in a [`Catchup`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unread {
    /// `#channel` or `@user`.
    pub target: Target,
    /// The user's read position (the largest id read), if they ever marked one.
    pub read: Option<u64>,
    /// Messages from others after the read position.
    pub unread: u64,
    /// Of those, text messages naming the user ([`mentions`]).
    pub mentions: u64,
    /// The conversation's newest message id.
    pub last_id: u64,
}

/// Whether `text` names `user` as a word (`alice`, `@alice`, `alice:`), ignoring
/// case: how clients highlight a mention and the server counts one.
pub fn mentions(text: &str, user: &str) -> bool {
    !user.is_empty()
        && text
            .split(|c: char| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.')))
            .map(|w| w.trim_matches(['.', '-']))
            .any(|w| w.eq_ignore_ascii_case(user))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(from: &str, target: &str) -> ChatMessage {
        ChatMessage {
            id: 1,
            time_unix_ms: 0,
            from: from.into(),
            target: Target::parse(target).unwrap(),
            body: MessageBody::Text("hi".into()),
        }
    }

    #[test]
    fn a_message_belongs_to_its_channel_or_to_the_other_party() {
        let t = |s: &str| Target::parse(s).unwrap();
        assert_eq!(message("bob", "#lab").conversation("alice"), t("#lab"));
        assert_eq!(message("alice", "#lab").conversation("alice"), t("#lab"));
        assert_eq!(message("bob", "@alice").conversation("alice"), t("@bob"));
        assert_eq!(message("alice", "@bob").conversation("alice"), t("@bob"));
        assert_eq!(
            message("alice", "@alice").conversation("alice"),
            t("@alice")
        );
        assert_eq!(message("alice", "@bob").conversation("bob"), t("@alice"));
    }

    #[test]
    fn targets_parse_print_and_refuse_clearly() {
        assert_eq!(Target::parse("#Lab").unwrap().to_string(), "#lab");
        assert_eq!(Target::parse("@Carol").unwrap().to_string(), "@Carol");
        assert_eq!(Target::parse("#lab").unwrap(), "#lab");
        assert_ne!(Target::parse("#lab").unwrap(), "@lab");
        assert_ne!(Target::parse("@bob").unwrap(), "bob");
        for (bad, says) in [
            ("lab", "#channel or @user"),
            ("#no spaces", "channel name"),
            ("#", "channel name"),
            ("@../bob", "user name"),
            ("@", "user name"),
        ] {
            let e = Target::parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn a_target_on_the_wire_is_a_variant_byte_and_the_bare_name() {
        let lab = postcard::to_stdvec(&Target::parse("#lab").unwrap()).unwrap();
        assert_eq!(lab, [0, 3, b'l', b'a', b'b']);
        let bob = postcard::to_stdvec(&Target::parse("@bob").unwrap()).unwrap();
        assert_eq!(bob, [1, 3, b'b', b'o', b'b']);
        assert_eq!(
            postcard::from_bytes::<Target>(&bob).unwrap(),
            Target::parse("@bob").unwrap()
        );
        assert!(postcard::from_bytes::<Target>(&[1, 2, b'.', b'x']).is_err());
        assert!(postcard::from_bytes::<Target>(&[2, 1, b'x']).is_err());
    }

    #[test]
    fn read_positions_are_the_appended_variants() {
        let mark = crate::Request::MarkRead {
            target: Target::parse("#lab").unwrap(),
            id: 300,
        };
        let bytes = postcard::to_stdvec(&mark).unwrap();
        assert_eq!(bytes, [25, 0, 3, b'l', b'a', b'b', 0xac, 0x02]);
        assert_eq!(postcard::to_stdvec(&crate::Request::Catchup).unwrap(), [26]);
        let answer = crate::Response::Catchup(Catchup::default());
        assert_eq!(postcard::to_stdvec(&answer).unwrap(), [19, 0, 0]);
    }

    #[test]
    fn a_mention_is_the_name_as_a_word() {
        assert!(mentions("alice: look", "alice"));
        assert!(mentions("hi @Alice.", "alice"));
        assert!(!mentions("malice", "alice"));
        assert!(!mentions("anything", ""));
    }
}
