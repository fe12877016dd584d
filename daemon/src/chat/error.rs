//! [`ChatError`]: why a chat request failed, and what of it the peer sees.

use xfer_proto::ErrorCode;

use super::history::HistoryError;

/// Why a chat request failed. [`ChatError::code`] and the `Display` text are what the
/// peer sees; `Store` details are only logged.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// A direct message or file to an account that does not exist.
    #[error("no user {0}")]
    NoUser(String),
    /// The request needs `ChatOpen` first.
    #[error("open chat first")]
    NotOpen,
    /// `ChatOpen` twice on one connection.
    #[error("chat is already open on this connection")]
    AlreadyOpen,
    /// `MarkRead` of a conversation with no messages.
    #[error("{0} has no messages to mark read")]
    NoConversation(String),
    /// `Part` of a channel the connection is not in.
    #[error("you are not in {0}")]
    NotMember(String),
    /// The connection is in as many channels as allowed.
    #[error("at most {max} channels per connection; part one first")]
    TooManyJoined {
        /// The limit.
        max: usize,
    },
    /// The server has as many channels as allowed.
    #[error("this server already has its maximum of {max} channels; use an existing one")]
    TooManyChannels {
        /// The limit.
        max: usize,
    },
    /// A message with no text.
    #[error("empty message")]
    Empty,
    /// A message over the length limit.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A message containing NUL.
    #[error("a message may not contain NUL characters")]
    Nul,
    /// Over the connection's rate limit.
    #[error(
        "too many chat requests: at most {per_sec} per second (bursts of {burst}); wait a moment"
    )]
    Throttled {
        /// Sustained rate.
        per_sec: u32,
        /// Burst.
        burst: u32,
    },
    /// A shared bus or store cannot be reached now (e.g. NATS is down).
    #[error("chat unavailable: {0}")]
    Unavailable(String),
    /// The history store failed.
    #[error("chat history: {0}")]
    Store(#[from] HistoryError),
}

impl ChatError {
    /// The stable code for the peer.
    pub fn code(&self) -> ErrorCode {
        match self {
            ChatError::NotOpen | ChatError::AlreadyOpen | ChatError::Empty | ChatError::Nul => {
                ErrorCode::BadRequest
            }
            ChatError::NoUser(_) | ChatError::NotMember(_) | ChatError::NoConversation(_) => {
                ErrorCode::NotFound
            }
            ChatError::TooManyJoined { .. } | ChatError::TooManyChannels { .. } => ErrorCode::Busy,
            ChatError::TooLong { .. } => ErrorCode::TooLarge,
            ChatError::Throttled { .. } => ErrorCode::RateLimited,
            ChatError::Unavailable(_) | ChatError::Store(HistoryError::Unavailable(_)) => {
                ErrorCode::Busy
            }
            ChatError::Store(HistoryError::TooManyChannels { .. }) => ErrorCode::Busy,
            ChatError::Store(HistoryError::TooManyChannelsOfUser { .. }) => {
                ErrorCode::QuotaExceeded
            }
            ChatError::Store(e) if e.out_of_space() => ErrorCode::NoSpace,
            ChatError::Store(_) => ErrorCode::Internal,
        }
    }

    /// One line for the peer: no server paths, no OS errors.
    pub fn peer_message(&self) -> String {
        match self {
            ChatError::Store(HistoryError::TooManyChannels { max }) => {
                ChatError::TooManyChannels { max: *max }.to_string()
            }
            ChatError::Store(e @ HistoryError::TooManyChannelsOfUser { .. }) => e.to_string(),
            ChatError::Store(HistoryError::Unavailable(why)) => {
                ChatError::Unavailable(why.clone()).to_string()
            }
            ChatError::Store(e) if e.out_of_space() => {
                "the server is out of disk space: the message was not stored or sent".into()
            }
            ChatError::Store(_) => "chat history failed on the server; see its log".into(),
            other => other.to_string(),
        }
    }
}
