//! Content-type policy: which MIME types may be stored where, decided from the
//! content's magic bytes (the `infer` crate), never from the name. Uploads are checked
//! as they arrive; a rename is checked by the content of every file it would bring
//! under a rule (the backend walks what it moves and asks [`TypePolicy::check_stored`]),
//! so `mv` is no way around the policy.

use crate::config::TypeRule;

use super::error::StorageError;
use crate::relpath::RelPath;

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
    pub fn rule_in(&self, dir: &RelPath) -> Option<&(RelPath, Vec<String>)> {
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
    pub fn applies_within(&self, dir: &RelPath) -> bool {
        self.rules
            .iter()
            .any(|(rule_dir, _)| dir.starts_with(rule_dir) || rule_dir.starts_with(dir))
    }

    /// Checks a stored file's first bytes for directory `dir`; a refusal names `shown`
    /// (the file as the user knows it), because a move may bring many files under a rule.
    ///
    /// # Errors
    /// [`StorageError::TypeRejected`] naming `shown`.
    pub fn check_stored(
        &self,
        dir: &RelPath,
        head: &[u8],
        shown: &str,
    ) -> Result<(), StorageError> {
        self.check_in(dir, head).map_err(|e| match e {
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
