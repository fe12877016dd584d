//! Protocol errors: what can go wrong decoding frames ([`ProtoError`]) and the stable
//! codes a peer reports failures with ([`ErrorCode`]).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A failure to read or write a frame.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The underlying stream failed.
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer announced a frame longer than this side accepts; nothing was allocated.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Announced body length.
        len: usize,
        /// Limit in force.
        max: usize,
    },
    /// A hello frame did not start with the xfer magic: the peer does not speak xfer.
    #[error("peer does not speak the xfer protocol (bad hello magic)")]
    BadMagic,
    /// A frame could not be decoded.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// Stable, numbered reasons a request failed, carried in `Response::Error`.
///
/// The numbers are part of the protocol and never change meaning. A code this build
/// does not know decodes as [`ErrorCode::Unknown`], so newer peers can add codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request was malformed or not valid in this state.
    BadRequest,
    /// The peers speak different protocol versions.
    UnsupportedVersion,
    /// Wrong user name or password, or an invalid, expired or revoked token.
    AuthFailed,
    /// The request needs a logged-in session.
    AuthRequired,
    /// Too many failed logins; retry later.
    Throttled,
    /// No such file, directory or user.
    NotFound,
    /// The target already exists (and overwriting was not asked for).
    Conflict,
    /// Data did not match its digest.
    ChecksumMismatch,
    /// The user's quota would be exceeded.
    QuotaExceeded,
    /// The server is out of disk space.
    NoSpace,
    /// Not allowed.
    PermissionDenied,
    /// The server is at a limit (connections, concurrent work); retry later.
    Busy,
    /// A frame, file or name exceeds a limit.
    TooLarge,
    /// A path was refused (escape attempt, bad characters, too long).
    InvalidPath,
    /// The content type is not accepted at this place.
    TypeRejected,
    /// The server is shutting down.
    ShuttingDown,
    /// The peer took too long.
    Timeout,
    /// Requests (e.g. chat messages) arrive faster than this connection may send them;
    /// slow down. Not a login failure: that is [`ErrorCode::Throttled`].
    RateLimited,
    /// The server failed internally; details are in its log.
    Internal,
    /// A code this build does not know.
    Unknown(u16),
}

impl ErrorCode {
    /// The code's wire number.
    pub fn to_u16(self) -> u16 {
        use ErrorCode::*;
        match self {
            BadRequest => 1,
            UnsupportedVersion => 2,
            AuthFailed => 3,
            AuthRequired => 4,
            Throttled => 5,
            NotFound => 6,
            Conflict => 7,
            ChecksumMismatch => 8,
            QuotaExceeded => 9,
            NoSpace => 10,
            PermissionDenied => 11,
            Busy => 12,
            TooLarge => 13,
            InvalidPath => 14,
            TypeRejected => 15,
            ShuttingDown => 16,
            Timeout => 17,
            RateLimited => 18,
            Internal => 255,
            Unknown(n) => n,
        }
    }

    /// The code for a wire number.
    pub fn from_u16(n: u16) -> Self {
        use ErrorCode::*;
        match n {
            1 => BadRequest,
            2 => UnsupportedVersion,
            3 => AuthFailed,
            4 => AuthRequired,
            5 => Throttled,
            6 => NotFound,
            7 => Conflict,
            8 => ChecksumMismatch,
            9 => QuotaExceeded,
            10 => NoSpace,
            11 => PermissionDenied,
            12 => Busy,
            13 => TooLarge,
            14 => InvalidPath,
            15 => TypeRejected,
            16 => ShuttingDown,
            17 => Timeout,
            18 => RateLimited,
            255 => Internal,
            n => Unknown(n),
        }
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.to_u16())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u16::deserialize(d).map(ErrorCode::from_u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_is_kept() {
        for n in 0..=300u16 {
            assert_eq!(ErrorCode::from_u16(n).to_u16(), n);
        }
        assert_eq!(ErrorCode::from_u16(3), ErrorCode::AuthFailed);
        assert_eq!(ErrorCode::from_u16(999), ErrorCode::Unknown(999));
    }
}
