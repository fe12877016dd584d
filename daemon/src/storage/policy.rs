//! Content-type policy: which MIME types may be stored where, decided from the
//! content's magic bytes (the `infer` crate), never from the name. Uploads are checked
//! as they arrive; a rename is checked by the content of every file it would bring
//! under a rule ([`TypePolicy::check_move`]), so `mv` is no way around the policy.

use std::io::Read;

use cap_std::fs::Dir;

use crate::config::TypeRule;

use super::{RelPath, StorageError, io_err};

/// Detected type of content no rule of `infer` recognises (plain text, random data).
pub const UNKNOWN_TYPE: &str = "unknown";

/// Bytes of a stored file read for detection: `infer`'s deepest signature (ISO 9660,
/// at 32 KiB) lies within, so this decides as the upload's first chunk did.
pub const STORED_SNIFF_BYTES: u64 = 64 * 1024;

/// Most entries a directory may hold for a move under a type rule to be checked; a
/// larger one is refused rather than walked under the user's lock.
pub const MAX_MOVE_CHECK_ENTRIES: usize = 10_000;

/// The configured rules, each for a directory and everything below it.
#[derive(Debug, Clone, Default)]
pub struct TypePolicy {
    rules: Vec<(RelPath, Vec<String>)>,
}

impl TypePolicy {
    /// Builds the policy from validated config rules (invalid directories are skipped;
    /// `Config::validate` refuses them before this is reached).
    pub fn new(rules: &[TypeRule]) -> TypePolicy {
        TypePolicy {
            rules: rules
                .iter()
                .filter_map(|r| Some((RelPath::parse(&r.dir).ok()?, r.accept.clone())))
                .collect(),
        }
    }

    /// The most specific rule covering a file at `path`: its directory and types.
    fn rule_for(&self, path: &RelPath) -> Option<&(RelPath, Vec<String>)> {
        self.rule_in(&path.parent().unwrap_or_else(RelPath::home))
    }

    /// The most specific rule covering files directly in `dir`.
    fn rule_in(&self, dir: &RelPath) -> Option<&(RelPath, Vec<String>)> {
        self.rules
            .iter()
            .filter(|(rule_dir, _)| dir.starts_with(rule_dir))
            .max_by_key(|(rule_dir, _)| rule_dir.as_str().len())
    }

    /// Checks the first bytes of a file bound for `path`.
    ///
    /// # Errors
    /// [`StorageError::TypeRejected`] naming the detected type and the accepted ones.
    pub fn check(&self, path: &RelPath, head: &[u8]) -> Result<(), StorageError> {
        self.check_in(&path.parent().unwrap_or_else(RelPath::home), head)
    }

    /// Checks the first bytes of a file bound for directory `dir`.
    fn check_in(&self, dir: &RelPath, head: &[u8]) -> Result<(), StorageError> {
        let Some((dir, accepted)) = self.rule_in(dir) else {
            return Ok(());
        };
        let detected = infer::get(head).map_or(UNKNOWN_TYPE, |t| t.mime_type());
        if accepted.iter().any(|a| a.eq_ignore_ascii_case(detected)) {
            return Ok(());
        }
        Err(StorageError::TypeRejected {
            detected: if detected == UNKNOWN_TYPE {
                "content of unknown type".into()
            } else {
                detected.to_owned()
            },
            dir: dir.to_string(),
            accepted: accepted.clone(),
            file: None,
        })
    }

    /// Whether any rule applies to a file at `path`.
    pub fn applies(&self, path: &RelPath) -> bool {
        self.rule_for(path).is_some()
    }

    /// Whether a rule could apply to something at or beneath `dir`.
    fn applies_within(&self, dir: &RelPath) -> bool {
        self.rules
            .iter()
            .any(|(rule_dir, _)| dir.starts_with(rule_dir) || rule_dir.starts_with(dir))
    }

    /// Checks renaming `from` (beneath `home`) to `to`: a file by its content, a
    /// directory by the content of every regular file in it that would land under a
    /// rule. Symlinks are not followed (peers cannot create them).
    ///
    /// # Errors
    /// [`StorageError::TypeRejected`] naming the first file refused, or
    /// [`StorageError::Unchecked`] for a directory over `MAX_MOVE_CHECK_ENTRIES` entries.
    pub fn check_move(
        &self,
        home: &Dir,
        from: &RelPath,
        to: &RelPath,
        is_dir: bool,
    ) -> Result<(), StorageError> {
        let mut buf = Vec::new();
        if !is_dir {
            if !self.applies(to) {
                return Ok(());
            }
            let file = home
                .open(from.as_path())
                .map_err(io_err("opening a file"))?;
            let target = to.parent().unwrap_or_else(RelPath::home);
            return self.check_stored(file, &target, from.as_str(), &mut buf);
        }
        if !self.applies_within(to) {
            return Ok(());
        }
        let mut seen = 0;
        // (directory beneath the home, its name for messages, where it will be)
        let mut stack = vec![(from.as_path().to_owned(), from.to_string(), to.clone())];
        while let Some((src, shown, dst)) = stack.pop() {
            let dir = home.open_dir(&src).map_err(io_err("opening a directory"))?;
            for e in dir.entries().map_err(io_err("reading a directory"))? {
                let e = e.map_err(io_err("reading a directory"))?;
                seen += 1;
                if seen > MAX_MOVE_CHECK_ENTRIES {
                    return Err(StorageError::Unchecked(format!(
                        "`{from}` holds more than {MAX_MOVE_CHECK_ENTRIES} entries, too many to \
                         check against the file type rules at `{to}`; move its contents in parts"
                    )));
                }
                let name = e.file_name();
                let text = name.to_string_lossy();
                let child_shown = format!("{shown}/{text}");
                let ft = e.file_type().map_err(io_err("reading a directory"))?;
                if ft.is_dir() {
                    // A name no path can spell is under no deeper rule than its parent.
                    let child_dst = dst.join(&text).unwrap_or_else(|| dst.clone());
                    stack.push((src.join(&name), child_shown, child_dst));
                } else if ft.is_file() && self.rule_in(&dst).is_some() {
                    let file = e.open().map_err(io_err("opening a file"))?;
                    self.check_stored(file, &dst, &child_shown, &mut buf)?;
                }
            }
        }
        Ok(())
    }

    /// Checks a stored file's first bytes for directory `dir`; a refusal names `shown`.
    fn check_stored(
        &self,
        file: cap_std::fs::File,
        dir: &RelPath,
        shown: &str,
        buf: &mut Vec<u8>,
    ) -> Result<(), StorageError> {
        buf.clear();
        file.take(STORED_SNIFF_BYTES)
            .read_to_end(buf)
            .map_err(io_err("reading a file"))?;
        self.check_in(dir, buf).map_err(|e| match e {
            StorageError::TypeRejected {
                detected,
                dir,
                accepted,
                ..
            } => StorageError::TypeRejected {
                detected,
                dir,
                accepted,
                file: Some(shown.to_owned()),
            },
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const PNG: &[u8] =
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0";

    fn policy() -> TypePolicy {
        TypePolicy::new(&crate::config::StorageConfig::default().type_rules)
    }

    fn p(s: &str) -> RelPath {
        RelPath::parse(s).unwrap()
    }

    #[test]
    fn content_decides_not_the_name() {
        let pol = policy();
        pol.check(&p("images/pic.txt"), PNG).unwrap();
        pol.check(&p("images/deep/er/pic.bin"), PNG).unwrap();
        let err = pol
            .check(&p("images/pic.png"), b"just some text\n")
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("unknown type"), "{msg}");
        assert!(
            msg.contains("image/png") && msg.contains("image/jpeg"),
            "{msg}"
        );
        assert!(msg.contains("`images`"), "{msg}");
        // A recognised but refused type is named.
        let err = pol.check(&p("images/a.png"), b"%PDF-1.7\n").unwrap_err();
        assert!(err.to_string().starts_with("application/pdf"), "{err}");
        // Outside the rule's directory anything goes.
        pol.check(&p("notes.png"), b"text").unwrap();
        pol.check(&p("imagesx/a"), b"text").unwrap();
        pol.check(&p("images"), b"text").unwrap(); // a file named `images` in the home
        assert!(pol.applies(&p("images/x")));
        assert!(!pol.applies(&p("x")));
    }

    #[test]
    fn most_specific_rule_wins() {
        let pol = TypePolicy::new(&[
            TypeRule {
                dir: "media".into(),
                accept: vec!["image/png".into()],
            },
            TypeRule {
                dir: "media/docs".into(),
                accept: vec!["application/pdf".into()],
            },
        ]);
        pol.check(&p("media/a"), PNG).unwrap();
        pol.check(&p("media/docs/a"), b"%PDF-1.7\n").unwrap();
        assert!(pol.check(&p("media/docs/a"), PNG).is_err());
    }
}
