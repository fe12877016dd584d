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

/// Longest message text in bytes (UTF-8). Longer texts are refused with `TooLarge`.
pub const MAX_MESSAGE_LEN: usize = 4000;

/// Most messages one `Join` or `History` answer carries (200 × 4,000 bytes fits a frame).
pub const MAX_HISTORY: u32 = 200;

/// Longest channel name in bytes, without the `#`.
pub const MAX_CHANNEL_LEN: usize = 32;

/// Longest user name in bytes (the daemon's account-name rule).
pub const MAX_USER_LEN: usize = 32;

/// Where a message goes: a channel or a direct conversation with one user.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// `#name`: every member of the channel. The name is stored without `#`, lowercase.
    Channel(String),
    /// `@name`: a direct conversation with that user. Stored without `@`.
    User(String),
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
            let name = name.to_ascii_lowercase();
            if valid_channel_name(&name) {
                Ok(Target::Channel(name))
            } else {
                Err(TargetError::BadChannel)
            }
        } else if let Some(name) = s.strip_prefix('@') {
            if valid_user_name(name) {
                Ok(Target::User(name.to_owned()))
            } else {
                Err(TargetError::BadUser)
            }
        } else {
            Err(TargetError::NoSigil)
        }
    }

    /// The bare name, without sigil.
    pub fn name(&self) -> &str {
        match self {
            Target::Channel(n) | Target::User(n) => n,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Channel(n) => write!(f, "#{n}"),
            Target::User(n) => write!(f, "@{n}"),
        }
    }
}

/// A channel name without `#`: 1 to [`MAX_CHANNEL_LEN`] of `a-z 0-9 - _ .`.
pub fn valid_channel_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_CHANNEL_LEN
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
}

/// A user name: 1 to [`MAX_USER_LEN`] of `a-z A-Z 0-9 - _ .`, starting with a letter or digit.
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_USER_LEN
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
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
    /// `#channel`, or `@user` for a direct message (the recipient as the sender named it).
    /// A client shows a direct conversation under the other party's name.
    pub target: String,
    /// The content.
    pub body: MessageBody,
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
        /// `#channel` or `@user`.
        target: String,
        /// How many.
        count: u64,
    },
}
