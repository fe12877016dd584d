//! Where things live in the bucket.
//!
//! ```text
//! <prefix>/users/<name>/files/<path>       a committed file: the object users see
//!                       dirs/<path>        an empty marker: a directory made by mkdir
//!                       manifests/<path>   chunk digests of the committed file (JSON)
//!                       partials/<path>    an upload in progress: its multipart upload
//!                                          id, verified chunks and part ETags (JSON)
//! ```
//!
//! Every path component becomes one key segment through `object_store`'s
//! [`PathPart`], which percent-encodes the characters S3 keys do not carry well;
//! [`decode`] turns a listed segment back into the name. Paths arrive validated as
//! [`RelPath`]s (no `..`, no empty or `.` components), so a key can never leave the
//! user's prefix.

use object_store::path::{Path, PathPart};

use crate::storage::RelPath;

/// The longest key S3 stores, in bytes (UTF-8 of the key, as sent).
pub(crate) const MAX_KEY_BYTES: usize = 1024;

/// The four key areas of a user (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Area {
    Files,
    Dirs,
    Manifests,
    Partials,
}

impl Area {
    fn segment(self) -> &'static str {
        match self {
            Area::Files => "files",
            Area::Dirs => "dirs",
            Area::Manifests => "manifests",
            Area::Partials => "partials",
        }
    }
}

/// Builds keys under the deployment's prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: Vec<String>,
}

impl Keys {
    /// `prefix`: the configured key prefix (`a/b` or empty).
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix
                .split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }

    /// `<prefix>/users`: where every user's keys start.
    pub fn users(&self) -> Path {
        self.parts(std::iter::empty(), None, None)
    }

    /// The key of `rel` in `user`'s `area` (the area's root for the home).
    pub fn at(&self, user: &str, area: Area, rel: &RelPath) -> Path {
        self.parts(rel.components(), Some(user), Some(area))
    }

    /// Whether every key of `rel` fits S3's [`MAX_KEY_BYTES`]: the manifest's, under
    /// the longest area name, is the longest.
    pub fn fits(&self, user: &str, rel: &RelPath) -> bool {
        self.at(user, Area::Manifests, rel).as_ref().len() <= MAX_KEY_BYTES
    }

    fn parts<'a>(
        &'a self,
        rel: impl Iterator<Item = &'a str>,
        user: Option<&'a str>,
        area: Option<Area>,
    ) -> Path {
        let mut segments: Vec<&str> = self.prefix.iter().map(String::as_str).collect();
        segments.push("users");
        segments.extend(user);
        segments.extend(area.map(Area::segment));
        segments.extend(rel);
        Path::from_iter(segments.into_iter().map(PathPart::from))
    }
}

/// The name of a listed key's last segment, decoded; `None` if it is not UTF-8.
pub(crate) fn decode(location: &Path) -> Option<String> {
    let raw = location.filename()?;
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// The path below `base` of a key listed under it (decoded, `/`-joined).
pub(super) fn below(base: &Path, location: &Path) -> Option<String> {
    let parts = location.prefix_match(base)?;
    let mut out = Vec::new();
    for part in parts {
        let s = percent_encoding::percent_decode_str(part.as_ref())
            .decode_utf8()
            .ok()?;
        out.push(s.into_owned());
    }
    (!out.is_empty()).then(|| out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_odd_characters_round_trip() {
        let keys = Keys::new("team/xfer/");
        for name in ["a#b", "100%", "x y", "ünï", "a{b}c", "~home", "back`tick"] {
            let rel = RelPath::parse(&format!("dir/{name}")).unwrap();
            let key = keys.at("alice", Area::Files, &rel);
            assert!(key.as_ref().starts_with("team/xfer/users/alice/files/dir/"));
            assert_eq!(decode(&key).as_deref(), Some(name), "{key}");
            let base = keys.at("alice", Area::Files, &RelPath::home());
            assert_eq!(below(&base, &key), Some(format!("dir/{name}")));
        }
    }

    #[test]
    fn a_path_fits_while_its_longest_key_does() {
        let keys = Keys::new("team");
        // `team/users/al/manifests/` is 24 bytes: 1000 are left for the path.
        let dirs = vec!["a".repeat(100); 9].join("/");
        let fits = RelPath::parse(&format!("{dirs}/{}", "b".repeat(91))).unwrap();
        assert_eq!(keys.at("al", Area::Manifests, &fits).as_ref().len(), 1024);
        assert!(keys.fits("al", &fits));
        let over = RelPath::parse(&format!("{dirs}/{}", "b".repeat(92))).unwrap();
        assert!(!keys.fits("al", &over));
        // Percent-encoding counts: `%` becomes three bytes in the key.
        let encoded = RelPath::parse(&"%".repeat(250)).unwrap();
        assert!(keys.fits("al", &encoded));
        let encoded = RelPath::parse(&format!("{}/{}", "%".repeat(250), "%".repeat(84))).unwrap();
        assert!(!keys.fits("al", &encoded));
    }

    #[test]
    fn users_are_kept_apart() {
        let keys = Keys::new("");
        let home = RelPath::home();
        assert_eq!(
            keys.at("bob", Area::Files, &home).as_ref(),
            "users/bob/files"
        );
        assert_eq!(keys.users().as_ref(), "users");
        let a = keys.at("bob", Area::Files, &RelPath::parse("x").unwrap());
        let b = keys.at("bobby", Area::Files, &home);
        assert!(a.prefix_match(&b).is_none());
    }
}
