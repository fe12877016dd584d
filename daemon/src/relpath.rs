//! Paths from peers: validated once into a [`RelPath`], then trusted.
//!
//! A path is UTF-8, `/`-separated and relative to the user's home. Refused (see
//! `docs/PROTOCOL.md`, "Paths"): absolute paths, `..` and `.` components, empty
//! components (`a//b`, a trailing `/`), NUL, backslashes, control characters, components
//! over 255 bytes, paths over 4,095 bytes and names beginning with `.xfer` (reserved).
//! Those two limits are what Linux filesystems take (`NAME_MAX`, and `PATH_MAX` less the
//! terminating NUL for the home-relative path handed to `openat`), so a valid path never
//! reaches the kernel only to fail there as "name too long".
//! Look-alike names (see `xfer_proto::text`): a path is normalised to Unicode NFC, so
//! `é` sent decomposed (as macOS spells it) and composed is one file, and invisible
//! characters (format characters such as U+200B or U+202E, line separators) are refused,
//! named as `U+XXXX`. A name read from a directory that is not NFC or holds an invisible
//! character (put there by other means) is skipped like one with a control character.
//! Validation is only the first line: resolution then happens beneath the home directory
//! with fd-relative opens (cap-std), so a symlink pointing out is refused as well.

use std::fmt;
use std::path::Path;

use xfer_proto::text::{CodePoint, first_invisible, is_invisible, nfc};

/// Longest path accepted, in bytes: Linux's `PATH_MAX` (4,096) counts the NUL.
pub const MAX_PATH_BYTES: usize = 4095;
/// Longest path component accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 255;
/// Names starting with this (ASCII case-insensitively) are reserved for xfer itself.
pub const RESERVED_PREFIX: &str = ".xfer";

/// Why a path was refused. The text goes to the peer: it never contains server paths.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Starts with `/`.
    #[error("path refused: absolute paths are not allowed")]
    Absolute,
    /// A `..` component.
    #[error("path refused: `..` components are not allowed")]
    DotDot,
    /// A `.` component.
    #[error("path refused: `.` components are not allowed")]
    Dot,
    /// `a//b` or a trailing `/`.
    #[error("path refused: empty component")]
    EmptyComponent,
    /// NUL byte.
    #[error("path refused: NUL byte")]
    Nul,
    /// `\`.
    #[error("path refused: backslashes are not allowed (use `/`)")]
    Backslash,
    /// C0, DEL or C1 control character.
    #[error("path refused: control character")]
    Control,
    /// A character that prints as nothing or reorders the text around it (a format
    /// character such as U+200B or U+202E, or a line separator): a look-alike name.
    #[error("path refused: it contains {0}, an invisible character; rename it without")]
    Invisible(CodePoint),
    /// A component over `MAX_NAME_BYTES`.
    #[error("path refused: a name is longer than {MAX_NAME_BYTES} bytes")]
    NameTooLong,
    /// Over `MAX_PATH_BYTES`.
    #[error("path refused: longer than {MAX_PATH_BYTES} bytes")]
    PathTooLong,
    /// The server's filesystem refused the name or path as too long (`ENAMETOOLONG`),
    /// e.g. one with a shorter name limit than 255 bytes.
    #[error("path refused: too long for the server's filesystem")]
    TooLongForServer,
    /// The S3 bucket's keys hold at most 1024 bytes, and this path (with the user's
    /// key prefix) would need more.
    #[error(
        "path refused: too long for the server's bucket (S3 keys hold at most 1024 bytes); use a shorter path"
    )]
    TooLongForBucket,
    /// A name beginning with `.xfer`.
    #[error("path refused: names beginning with `.xfer` are reserved")]
    Reserved,
    /// The home itself where a file or directory inside it is needed.
    #[error("path refused: the home directory itself cannot be used here")]
    Home,
}

/// A validated, normalized path relative to a user's home; empty means the home itself.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelPath(String);

impl RelPath {
    /// The home directory.
    pub fn home() -> RelPath {
        RelPath(String::new())
    }

    /// Validates a peer's path. `""` is the home.
    ///
    /// # Errors
    /// The first rule broken, as a [`PathError`].
    pub fn parse(s: &str) -> Result<RelPath, PathError> {
        // NFC grows a string at most threefold: past that it cannot come back in range,
        // and is not worth normalising.
        if s.len() > 3 * MAX_PATH_BYTES {
            return Err(PathError::PathTooLong);
        }
        let s = &*nfc(s);
        if s.len() > MAX_PATH_BYTES {
            return Err(PathError::PathTooLong);
        }
        if s.is_empty() {
            return Ok(RelPath::home());
        }
        if s.starts_with('/') {
            return Err(PathError::Absolute);
        }
        for c in s.chars() {
            match c {
                '\0' => return Err(PathError::Nul),
                '\\' => return Err(PathError::Backslash),
                c if c.is_control() => return Err(PathError::Control),
                c if is_invisible(c) => return Err(PathError::Invisible(CodePoint(c))),
                _ => {}
            }
        }
        for name in s.split('/') {
            check_name(name)?;
        }
        Ok(RelPath(s.to_owned()))
    }

    /// Like [`RelPath::parse`], refusing the home itself.
    ///
    /// # Errors
    /// As `parse`, plus [`PathError::Home`] for `""`.
    pub fn parse_entry(s: &str) -> Result<RelPath, PathError> {
        let p = Self::parse(s)?;
        if p.is_home() {
            return Err(PathError::Home);
        }
        Ok(p)
    }

    /// Whether this is the home directory.
    pub fn is_home(&self) -> bool {
        self.0.is_empty()
    }

    /// The path as `/`-separated text (`""` for the home).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path for fd-relative calls beneath the home (`.` for the home).
    pub fn as_path(&self) -> &Path {
        if self.is_home() {
            Path::new(".")
        } else {
            Path::new(&self.0)
        }
    }

    /// The components, in order (none for the home).
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|c| !c.is_empty())
    }

    /// The containing directory (the home for a top-level name); `None` for the home.
    pub fn parent(&self) -> Option<RelPath> {
        if self.is_home() {
            return None;
        }
        Some(match self.0.rfind('/') {
            Some(i) => RelPath(self.0[..i].to_owned()),
            None => RelPath::home(),
        })
    }

    /// The last component; `None` for the home.
    pub fn file_name(&self) -> Option<&str> {
        if self.is_home() {
            return None;
        }
        Some(self.0.rsplit('/').next().unwrap_or(&self.0))
    }

    /// `self/name`, for a name already read from a directory. `None` if the result would
    /// not be a valid path (such names are skipped by callers).
    pub fn join(&self, name: &str) -> Option<RelPath> {
        check_name(name).ok()?;
        if first_invisible(name).is_some() || *nfc(name) != *name {
            return None;
        }
        let s = if self.is_home() {
            name.to_owned()
        } else {
            format!("{}/{name}", self.0)
        };
        RelPath::parse(&s).ok()
    }

    /// Whether `self` is `ancestor` or lies beneath it (every path lies beneath the home).
    pub fn starts_with(&self, ancestor: &RelPath) -> bool {
        ancestor.is_home()
            || self.0 == ancestor.0
            || (self.0.starts_with(&ancestor.0) && self.0.as_bytes()[ancestor.0.len()] == b'/')
    }

    /// Stable key naming this path's partial upload: hex BLAKE3 of the normalized path.
    pub fn key(&self) -> String {
        blake3::hash(self.0.as_bytes()).to_hex().to_string()
    }
}

fn check_name(name: &str) -> Result<(), PathError> {
    match name {
        "" => Err(PathError::EmptyComponent),
        ".." => Err(PathError::DotDot),
        "." => Err(PathError::Dot),
        _ if name.len() > MAX_NAME_BYTES => Err(PathError::NameTooLong),
        _ if name.contains('/') => Err(PathError::EmptyComponent),
        _ if name.contains('\0') => Err(PathError::Nul),
        _ if name.contains('\\') => Err(PathError::Backslash),
        _ if name.chars().any(char::is_control) => Err(PathError::Control),
        _ if name.len() >= RESERVED_PREFIX.len()
            && name.as_bytes()[..RESERVED_PREFIX.len()]
                .eq_ignore_ascii_case(RESERVED_PREFIX.as_bytes()) =>
        {
            Err(PathError::Reserved)
        }
        _ => Ok(()),
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(s: &str) -> PathError {
        RelPath::parse(s).expect_err(s)
    }

    #[test]
    fn every_hostile_vector_is_refused() {
        assert_eq!(refused(".."), PathError::DotDot);
        assert_eq!(refused("../x"), PathError::DotDot);
        assert_eq!(refused("a/../../x"), PathError::DotDot);
        assert_eq!(refused("a/.."), PathError::DotDot);
        assert_eq!(refused("/abs"), PathError::Absolute);
        assert_eq!(refused("/etc/passwd"), PathError::Absolute);
        assert_eq!(refused("//x"), PathError::Absolute);
        assert_eq!(refused("a//b"), PathError::EmptyComponent);
        assert_eq!(refused("a/"), PathError::EmptyComponent);
        assert_eq!(refused("a\0b"), PathError::Nul);
        assert_eq!(refused("..\\x"), PathError::Backslash);
        assert_eq!(refused("C:\\x"), PathError::Backslash);
        assert_eq!(refused("a\\b"), PathError::Backslash);
        assert_eq!(refused("a\nb"), PathError::Control);
        assert_eq!(refused("a\rb"), PathError::Control);
        assert_eq!(refused("\x1b[31mred"), PathError::Control);
        assert_eq!(refused("del\x7f"), PathError::Control);
        assert_eq!(refused("c1\u{85}"), PathError::Control);
        assert_eq!(refused(&"n".repeat(256)), PathError::NameTooLong);
        assert_eq!(
            refused(&format!("a/{}", "n".repeat(256))),
            PathError::NameTooLong
        );
        let long = vec!["d".repeat(200); 21].join("/");
        assert!(long.len() > MAX_PATH_BYTES);
        assert_eq!(refused(&long), PathError::PathTooLong);
        // Exactly 4,096 bytes of valid names: one more than the kernel takes.
        let over = vec!["d".repeat(240); 17].join("/");
        assert_eq!(over.len(), 4096);
        assert_eq!(refused(&over), PathError::PathTooLong);
        assert_eq!(refused(".xfer-part"), PathError::Reserved);
        assert_eq!(refused("a/.xferstate"), PathError::Reserved);
        assert_eq!(refused("a/.XFER"), PathError::Reserved);
        assert_eq!(refused("."), PathError::Dot);
        assert_eq!(refused("a/./b"), PathError::Dot);
        assert_eq!(RelPath::parse_entry(""), Err(PathError::Home));
    }

    #[test]
    fn ordinary_paths_are_accepted_and_normalized() {
        assert!(RelPath::parse("").unwrap().is_home());
        for ok in [
            "a",
            "a/b/c.txt",
            "C:",
            "...",
            "..a",
            "a..",
            ".hidden",
            "xfer",
            "é/日本",
            "with space",
        ] {
            assert_eq!(RelPath::parse(ok).unwrap().as_str(), ok);
        }
        assert!(RelPath::parse(&"n".repeat(255)).is_ok());
        let max = vec!["d".repeat(255); 16].join("/");
        assert_eq!(max.len(), MAX_PATH_BYTES);
        assert!(RelPath::parse(&max).is_ok());
    }

    #[test]
    fn paths_are_nfc_and_hold_no_invisible_character() {
        // Decomposed and composed spellings are one path.
        let nfd = RelPath::parse("cafe\u{301}/n\u{303}o.txt").unwrap();
        assert_eq!(nfd.as_str(), "caf\u{e9}/\u{f1}o.txt");
        assert_eq!(nfd, RelPath::parse("caf\u{e9}/\u{f1}o.txt").unwrap());
        assert_eq!(
            nfd.key(),
            RelPath::parse("caf\u{e9}/\u{f1}o.txt").unwrap().key()
        );
        for (s, c) in [
            ("a\u{200b}b", "U+200B"),
            ("a\u{200c}b", "U+200C"),
            ("a\u{200d}b", "U+200D"),
            ("dir/\u{2060}x", "U+2060"),
            ("\u{feff}x", "U+FEFF"),
            ("invoice\u{202e}gpj.exe", "U+202E"),
            ("\u{2066}x\u{2069}", "U+2066"),
            ("soft\u{ad}", "U+00AD"),
            ("l\u{2028}s", "U+2028"),
        ] {
            let e = refused(s);
            assert_eq!(
                e.to_string(),
                format!("path refused: it contains {c}, an invisible character; rename it without")
            );
        }
        // A decomposed path over the limit that composes within it is accepted.
        let name = "e\u{301}".repeat(85); // 255 bytes decomposed, 170 composed
        let nfd_long = vec![name; 20].join("/");
        assert!(nfd_long.len() > MAX_PATH_BYTES);
        assert!(RelPath::parse(&nfd_long).unwrap().as_str().len() <= MAX_PATH_BYTES);
        assert_eq!(refused(&"e\u{301}".repeat(5000)), PathError::PathTooLong);
        // Names read from a directory in another form are skipped, not listed twice.
        assert!(RelPath::home().join("e\u{301}").is_none());
        assert!(RelPath::home().join("a\u{200b}").is_none());
        assert_eq!(RelPath::home().join("\u{e9}").unwrap().as_str(), "\u{e9}");
    }

    #[test]
    fn parent_name_join_and_prefix() {
        let p = RelPath::parse("a/b/c").unwrap();
        assert_eq!(p.parent().unwrap().as_str(), "a/b");
        assert_eq!(p.file_name(), Some("c"));
        assert!(RelPath::parse("c").unwrap().parent().unwrap().is_home());
        assert!(RelPath::home().parent().is_none());
        assert_eq!(RelPath::home().join("x").unwrap().as_str(), "x");
        assert_eq!(p.join("d").unwrap().as_str(), "a/b/c/d");
        assert!(p.join("..").is_none());
        assert!(p.join("x/y").is_none());
        let a = RelPath::parse("a").unwrap();
        assert!(p.starts_with(&a));
        assert!(a.starts_with(&a));
        assert!(!RelPath::parse("ab").unwrap().starts_with(&a));
        assert!(a.starts_with(&RelPath::home()));
        assert_ne!(a.key(), RelPath::parse("b").unwrap().key());
        assert_eq!(a.key().len(), 64);
    }
}
