//! [`KnownHosts`]: the client's trust-on-first-use store of pinned server fingerprints.
//!
//! The file has one `HOST:PORT SHA256:<base64>` entry per line, like OpenSSH `known_hosts`;
//! `#` comments and blank lines are kept when the file is rewritten. Saving is atomic with
//! mode 0600. This module records and looks up pins; asking the user is the caller's job.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::pem::write_atomic;
use crate::{CertError, Fingerprint};

/// What the store says about a fingerprint a server presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostStatus {
    /// No entry for this `HOST:PORT`: ask the user before pinning.
    Unknown,
    /// The presented fingerprint matches the pinned one.
    Trusted,
    /// A different fingerprint is pinned: refuse to connect.
    Changed {
        /// The fingerprint on record.
        pinned: Fingerprint,
        /// The 1-based line of the entry in the known-hosts file.
        line: usize,
    },
}

#[derive(Debug, Clone)]
enum Line {
    /// A comment or blank line, kept verbatim.
    Other(String),
    Entry {
        host_port: String,
        fp: Fingerprint,
    },
}

/// A known-hosts file loaded into memory; [`KnownHosts::pin`] and [`KnownHosts::forget`]
/// write it back.
#[derive(Debug, Clone)]
pub struct KnownHosts {
    path: PathBuf,
    lines: Vec<Line>,
}

impl KnownHosts {
    /// Loads the store at `path`; a missing file is an empty store.
    ///
    /// # Errors
    ///
    /// [`CertError::KnownHosts`] naming `file:line` for a malformed entry;
    /// [`CertError::Io`] if the file exists but cannot be read.
    pub fn load(path: &Path) -> Result<Self, CertError> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(CertError::io(path, e)),
        };
        let lines = text
            .lines()
            .enumerate()
            .map(|(i, raw)| parse_line(raw).map_err(|message| bad_line(path, i + 1, message)))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            path: path.to_owned(),
            lines,
        })
    }

    /// The file this store was loaded from and saves to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pinned fingerprint for `host_port` (compared case-insensitively) and its 1-based
    /// line number; the first entry wins if there are several.
    pub fn lookup(&self, host_port: &str) -> Option<(Fingerprint, usize)> {
        self.lines
            .iter()
            .enumerate()
            .find_map(|(i, line)| match line {
                Line::Entry { host_port: h, fp } if h.eq_ignore_ascii_case(host_port) => {
                    Some((*fp, i + 1))
                }
                _ => None,
            })
    }

    /// Compares a presented fingerprint with the pin for `host_port`.
    pub fn check(&self, host_port: &str, presented: &Fingerprint) -> HostStatus {
        match self.lookup(host_port) {
            None => HostStatus::Unknown,
            Some((pinned, _)) if pinned == *presented => HostStatus::Trusted,
            Some((pinned, line)) => HostStatus::Changed { pinned, line },
        }
    }

    /// Pins `fp` for `host_port` and saves: an existing entry is replaced in place (later
    /// duplicates are dropped), otherwise one is appended.
    ///
    /// # Errors
    ///
    /// [`CertError::KnownHosts`] if `host_port` is not a valid `HOST:PORT` (it would corrupt the
    /// file); any error from saving with [`write_atomic`].
    pub fn pin(&mut self, host_port: &str, fp: Fingerprint) -> Result<(), CertError> {
        let entry = Line::Entry {
            host_port: host_port.to_owned(),
            fp,
        };
        match self.lookup(host_port) {
            Some((_, line)) => {
                validate_host_port(host_port).map_err(|m| bad_line(&self.path, line, m))?;
                self.lines[line - 1] = entry;
                let mut index = 0;
                self.lines.retain(|l| {
                    index += 1;
                    index <= line || !is_entry_for(l, host_port)
                });
            }
            None => {
                validate_host_port(host_port)
                    .map_err(|m| bad_line(&self.path, self.lines.len() + 1, m))?;
                self.lines.push(entry);
            }
        }
        self.save()
    }

    /// Removes every entry for `host_port`, saves if anything changed, and returns whether an
    /// entry existed.
    ///
    /// # Errors
    ///
    /// Any error from saving with [`write_atomic`].
    pub fn forget(&mut self, host_port: &str) -> Result<bool, CertError> {
        let before = self.lines.len();
        self.lines.retain(|l| !is_entry_for(l, host_port));
        if self.lines.len() == before {
            return Ok(false);
        }
        self.save()?;
        Ok(true)
    }

    fn save(&self) -> Result<(), CertError> {
        let mut text = String::new();
        for line in &self.lines {
            match line {
                Line::Other(raw) => text.push_str(raw),
                Line::Entry { host_port, fp } => {
                    write!(text, "{host_port} {fp}").expect("writing to a String cannot fail");
                }
            }
            text.push('\n');
        }
        write_atomic(&self.path, text.as_bytes(), 0o600)
    }
}

fn is_entry_for(line: &Line, host_port: &str) -> bool {
    matches!(line, Line::Entry { host_port: h, .. } if h.eq_ignore_ascii_case(host_port))
}

fn bad_line(path: &Path, line: usize, message: String) -> CertError {
    CertError::KnownHosts {
        path: path.to_owned(),
        line,
        message,
    }
}

fn parse_line(raw: &str) -> Result<Line, String> {
    let trimmed = raw.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(Line::Other(raw.to_owned()));
    }
    let fields: Vec<&str> = trimmed.split_whitespace().collect();
    let [host_port, fp] = fields[..] else {
        return Err(format!(
            "expected `HOST:PORT SHA256:<base64>`, found {} fields",
            fields.len()
        ));
    };
    validate_host_port(host_port)?;
    let fp = fp.parse::<Fingerprint>().map_err(|e| e.to_string())?;
    Ok(Line::Entry {
        host_port: host_port.to_owned(),
        fp,
    })
}

/// `HOST:PORT` with a non-empty host, a numeric port, and nothing that would break the format.
fn validate_host_port(host_port: &str) -> Result<(), String> {
    let valid = match host_port.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !host_port.starts_with('#')
                && !host_port.chars().any(char::is_whitespace)
                && port.parse::<u16>().is_ok()
        }
        None => false,
    };
    if valid {
        Ok(())
    } else {
        Err(format!("invalid host `{host_port}`: expected HOST:PORT"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn fp(seed: &str) -> Fingerprint {
        Fingerprint::of_der(seed.as_bytes())
    }

    #[test]
    fn pin_lookup_replace_forget() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("home/known_hosts");
        let mut kh = KnownHosts::load(&path).unwrap();
        assert_eq!(kh.path(), path);
        assert_eq!(kh.check("lab:7070", &fp("a")), HostStatus::Unknown);

        kh.pin("lab:7070", fp("a")).unwrap();
        kh.pin("[::1]:7070", fp("b")).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );

        let kh2 = KnownHosts::load(&path).unwrap();
        assert_eq!(kh2.lookup("LAB:7070"), Some((fp("a"), 1)));
        assert_eq!(kh2.lookup("[::1]:7070"), Some((fp("b"), 2)));
        assert_eq!(kh2.check("lab:7070", &fp("a")), HostStatus::Trusted);

        kh.pin("Lab:7070", fp("c")).unwrap();
        let kh3 = KnownHosts::load(&path).unwrap();
        assert_eq!(kh3.lookup("lab:7070"), Some((fp("c"), 1)));
        assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 2);

        assert!(kh.forget("lab:7070").unwrap());
        assert!(!kh.forget("lab:7070").unwrap());
        let kh4 = KnownHosts::load(&path).unwrap();
        assert_eq!(kh4.lookup("lab:7070"), None);
        assert_eq!(kh4.lookup("[::1]:7070"), Some((fp("b"), 1)));
    }

    #[test]
    fn comments_preserved_and_changed_reports_line() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("known_hosts");
        let text = format!(
            "# pinned by hand\n\n  # indented comment\nlab:7070 {}\nother:1 {}\n",
            fp("a"),
            fp("b")
        );
        fs::write(&path, &text).unwrap();
        let mut kh = KnownHosts::load(&path).unwrap();
        assert_eq!(
            kh.check("lab:7070", &fp("x")),
            HostStatus::Changed {
                pinned: fp("a"),
                line: 4
            }
        );
        kh.pin("new:2", fp("n")).unwrap();
        kh.pin("lab:7070", fp("x")).unwrap();
        let expected = format!(
            "# pinned by hand\n\n  # indented comment\nlab:7070 {}\nother:1 {}\nnew:2 {}\n",
            fp("x"),
            fp("b"),
            fp("n")
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), expected);
    }

    #[test]
    fn malformed_line_names_file_and_line() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("known_hosts");
        for bad in [
            "lab:7070",
            "lab:7070 SHA256:nope",
            "lab:7070 x y",
            "lab SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU",
        ] {
            fs::write(&path, format!("# ok\nok:1 {}\n{bad}\n", fp("a"))).unwrap();
            match KnownHosts::load(&path) {
                Err(e @ CertError::KnownHosts { line: 3, .. }) => {
                    assert!(e.to_string().contains("known_hosts:3: "), "{e}");
                }
                other => panic!("{bad:?}: expected error on line 3, got {other:?}"),
            }
        }
    }

    #[test]
    fn pin_rejects_unwritable_host() {
        let tmp = tempfile::tempdir().unwrap();
        let mut kh = KnownHosts::load(&tmp.path().join("known_hosts")).unwrap();
        for bad in ["", "lab", "lab 1:2", "#x:1", ":7070", "lab:port"] {
            assert!(
                matches!(kh.pin(bad, fp("a")), Err(CertError::KnownHosts { .. })),
                "{bad:?}"
            );
        }
        assert!(!kh.path().exists());
    }
}
