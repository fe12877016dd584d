//! [`ConvKey`]: which conversation a message belongs to, and the name of its log.

use std::path::{Path, PathBuf};

use xfer_proto::{Target, valid_channel_name, valid_user_name};

/// One conversation: a channel, or a pair of users (sorted).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConvKey {
    /// `#name`, stored without `#`.
    Channel(String),
    /// Two users, `a <= b`.
    Direct(String, String),
}

impl ConvKey {
    /// The conversation a message from `from` to `target` belongs to.
    pub fn of(target: &Target, from: &str) -> ConvKey {
        match target {
            Target::Channel(name) => ConvKey::Channel(name.as_str().to_owned()),
            Target::User(to) => ConvKey::direct(from, to.as_str()),
        }
    }

    /// The direct conversation of two users.
    pub fn direct(a: &str, b: &str) -> ConvKey {
        if a <= b {
            ConvKey::Direct(a.to_owned(), b.to_owned())
        } else {
            ConvKey::Direct(b.to_owned(), a.to_owned())
        }
    }

    /// For a direct conversation involving `user`, the other party (`user` itself when
    /// they write to themselves).
    pub fn other(&self, user: &str) -> Option<&str> {
        match self {
            ConvKey::Direct(a, b) if a == user => Some(b),
            ConvKey::Direct(a, b) if b == user => Some(a),
            _ => None,
        }
    }

    /// Path of the log relative to the chat directory. Channel and user names cannot
    /// contain `/` or `+`, and the suffix keeps `.` and `..` from naming directories.
    pub(super) fn file(&self) -> PathBuf {
        match self {
            ConvKey::Channel(name) => Path::new("channels").join(format!("{name}.log")),
            ConvKey::Direct(a, b) => Path::new("direct").join(format!("{a}+{b}.log")),
        }
    }

    /// The key a log file name stands for, if it is one this store writes.
    pub(super) fn from_file(dir: &str, file_name: &str) -> Option<ConvKey> {
        let stem = file_name.strip_suffix(".log")?;
        match dir {
            "channels" if valid_channel_name(stem) => Some(ConvKey::Channel(stem.to_owned())),
            "direct" => {
                let (a, b) = stem.split_once('+')?;
                (valid_user_name(a) && valid_user_name(b) && a <= b)
                    .then(|| ConvKey::Direct(a.to_owned(), b.to_owned()))
            }
            _ => None,
        }
    }
}
