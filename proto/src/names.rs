//! The two names of the chat vocabulary, validated once where they enter a program and
//! carried typed from then on: [`UserName`] (the account-name rule, shared by the
//! daemon's password file and the protocol) and [`ChannelName`].
//!
//! On the wire both are postcard strings; decoding one that breaks its rule fails like
//! any undecodable message, so a receiver never holds an invalid name.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::text::{CodePoint, escape_name};

/// Longest channel name in bytes, without the `#`.
pub const MAX_CHANNEL_LEN: usize = 32;

/// Longest user name in bytes (the account-name rule).
pub const MAX_USER_LEN: usize = 32;

/// An account name: 1 to [`MAX_USER_LEN`] of `a-z A-Z 0-9 - _ .`, starting with a
/// letter or digit. It becomes a directory name on the server, so it can hold no `/`
/// and never starts with `.`. Case is kept: `Carol` and `carol` are two accounts.
/// Being ASCII, a valid name is its own NFC form and holds no invisible character, so
/// no two accounts can look alike except by case (see [`crate::text`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserName(String);

/// A string that breaks the account-name rule. The text shows the name with invisible
/// characters escaped and names the first character not allowed as `U+XXXX`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid user name `{}`{}: use 1 to 32 ASCII letters, digits, '_', '-' or '.', starting with a letter or digit",
    escape_name(.0),
    culprit(.0, user_char)
)]
pub struct InvalidUserName(pub String);

impl UserName {
    /// Validates `name` against the account-name rule.
    ///
    /// # Errors
    /// [`InvalidUserName`] naming the refused string.
    pub fn new(name: impl Into<String>) -> Result<UserName, InvalidUserName> {
        let name = name.into();
        if valid_user_name(&name) {
            Ok(UserName(name))
        } else {
            Err(InvalidUserName(name))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A channel name, stored lowercase and without `#`: 1 to [`MAX_CHANNEL_LEN`] of
/// `a-z 0-9 - _ .`. [`fmt::Display`] writes it with its `#`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ChannelName(String);

/// A string that breaks the channel-name rule (shown as [`InvalidUserName`] is).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid channel name `{}`{}: use 1 to 32 of a-z, 0-9, '-', '_', '.'",
    escape_name(.0),
    culprit(.0, channel_char)
)]
pub struct InvalidChannelName(pub String);

impl ChannelName {
    /// Validates a bare name (no `#`), folding ASCII capitals to lowercase as a typed
    /// `#Lab` is meant.
    ///
    /// # Errors
    /// [`InvalidChannelName`] naming the refused string.
    pub fn new(name: impl Into<String>) -> Result<ChannelName, InvalidChannelName> {
        let mut name = name.into();
        name.make_ascii_lowercase();
        if valid_channel_name(&name) {
            Ok(ChannelName(name))
        } else {
            Err(InvalidChannelName(name))
        }
    }

    /// The bare name, without `#` (as in log file names).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Both names share their conversions; a macro keeps the two lists identical.
macro_rules! name_impls {
    ($name:ident, $err:ident) => {
        impl TryFrom<String> for $name {
            type Error = $err;
            fn try_from(s: String) -> Result<Self, $err> {
                $name::new(s)
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                *self == **other
            }
        }
    };
}

name_impls!(UserName, InvalidUserName);
name_impls!(ChannelName, InvalidChannelName);

impl FromStr for UserName {
    type Err = InvalidUserName;
    fn from_str(s: &str) -> Result<Self, InvalidUserName> {
        UserName::new(s)
    }
}

/// Parses what a person types: `#name` or `name`.
impl FromStr for ChannelName {
    type Err = InvalidChannelName;
    fn from_str(s: &str) -> Result<Self, InvalidChannelName> {
        ChannelName::new(s.strip_prefix('#').unwrap_or(s))
    }
}

impl PartialEq<str> for UserName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

/// Compares with the typed form, `#lab`, as [`fmt::Display`] writes it.
impl PartialEq<str> for ChannelName {
    fn eq(&self, other: &str) -> bool {
        other.strip_prefix('#') == Some(self.0.as_str())
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Whether `name` (without `#`) is a valid channel name as stored: lowercase.
pub fn valid_channel_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_CHANNEL_LEN && name.chars().all(channel_char)
}

/// Whether `name` follows the account-name rule (see [`UserName`]).
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_USER_LEN
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.chars().all(user_char)
}

fn user_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

fn channel_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
}

/// ` (U+200B is not allowed)` for the first character of `name` outside `allowed`, so
/// a character that shows as nothing (or as a look-alike of an allowed one) is named.
fn culprit(name: &str, allowed: fn(char) -> bool) -> String {
    match name.chars().find(|&c| !allowed(c)) {
        Some(c) => format!(" ({} is not allowed)", CodePoint(c)),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_account_name_rule() {
        let max = "a".repeat(MAX_USER_LEN);
        let over = "a".repeat(MAX_USER_LEN + 1);
        for (name, ok) in [
            ("", false),
            (over.as_str(), false),
            (max.as_str(), true),
            ("../x", false),
            (".hidden", false),
            ("a b", false),
            ("ünï", false),
            ("a:b", false),
            ("-x", false),
            ("alice", true),
            ("Carol", true),
            ("bob-2.x_y", true),
            ("7", true),
        ] {
            let parsed = name.parse::<UserName>();
            assert_eq!(parsed.is_ok(), ok, "{name:?}");
            if let Err(e) = parsed {
                assert!(e.to_string().contains("starting with a letter or digit"));
            }
        }
        assert_eq!(UserName::new("Carol").unwrap().as_str(), "Carol");
    }

    #[test]
    fn look_alike_names_are_refused_naming_the_character() {
        // Invisible characters: the message shows the name escaped and names the code
        // point, on one line.
        let e = UserName::new("bo\u{200b}b").unwrap_err().to_string();
        assert!(
            e.starts_with("invalid user name `bo\\u{200b}b` (U+200B is not allowed)"),
            "{e}"
        );
        assert!(!e.contains('\u{200b}') && !e.contains('\n'), "{e}");
        let e = UserName::new("admin\u{202e}").unwrap_err().to_string();
        assert!(e.contains("U+202E is not allowed"), "{e}");
        // Decomposed and composed accents are both refused: names are ASCII, so an NFD
        // variant of a valid name is the name itself.
        let e = UserName::new("jose\u{301}").unwrap_err().to_string();
        assert!(e.contains("U+0301 is not allowed"), "{e}");
        assert!(UserName::new("jos\u{e9}").is_err());
        let e = ChannelName::new("la\u{2060}b").unwrap_err().to_string();
        assert!(
            e.starts_with("invalid channel name `la\\u{2060}b` (U+2060 is not allowed)"),
            "{e}"
        );
        let e = ChannelName::new("la\u{feff}b").unwrap_err().to_string();
        assert!(e.contains("U+FEFF"), "{e}");
        // Too long or empty: nothing to name.
        let e = UserName::new("").unwrap_err().to_string();
        assert!(e.starts_with("invalid user name ``: use"), "{e}");
    }

    #[test]
    fn channel_names_fold_case_and_print_with_their_sigil() {
        let lab = ChannelName::new("Lab").unwrap();
        assert_eq!(lab.as_str(), "lab");
        assert_eq!(lab.to_string(), "#lab");
        assert_eq!(lab, "#lab");
        assert_ne!(lab, "lab");
        assert_eq!("#Lab".parse::<ChannelName>().unwrap(), lab);
        assert_eq!("lab".parse::<ChannelName>().unwrap(), lab);
        assert!("##lab".parse::<ChannelName>().is_err());
        for bad in [
            "",
            "no spaces",
            "#lab",
            "a/b",
            &"x".repeat(MAX_CHANNEL_LEN + 1),
        ] {
            assert!(ChannelName::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn decoding_checks_the_rule() {
        let ok = postcard::to_stdvec("bob").unwrap();
        assert_eq!(postcard::from_bytes::<UserName>(&ok).unwrap(), "bob");
        let bad = postcard::to_stdvec("../bob").unwrap();
        assert!(postcard::from_bytes::<UserName>(&bad).is_err());
        let upper = postcard::to_stdvec("LAB").unwrap();
        // A channel name on the wire is already lowercase; decoding folds like parsing.
        assert_eq!(postcard::from_bytes::<ChannelName>(&upper).unwrap(), "#lab");
        let bad = postcard::to_stdvec("no spaces").unwrap();
        assert!(postcard::from_bytes::<ChannelName>(&bad).is_err());
    }
}
