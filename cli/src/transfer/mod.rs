//! The transfer engine shared by `push` and `pull`: chunk arithmetic, argument and
//! destination rules, validation of names a server sends, and the per-file engines
//! ([`push`], [`pull`], and [`send`] to another user's inbox) with their progress
//! display and rate limit.
//!
//! A chunk `i` covers bytes `[i × chunk_size, min((i+1) × chunk_size, size))`; every
//! chunk travels with its digest (its BLAKE3 subtree chaining value,
//! [`Digest::of_chunk`]) and is checked by the receiver before it is used. The
//! whole-file BLAKE3 follows from the chunk digests, so each byte is hashed once.

pub mod batch;
pub mod install;
pub mod part;
pub mod progress;
pub mod pull;
pub mod push;
pub mod ratelimit;
pub mod resume;
pub mod send;
pub mod sync;

#[cfg(test)]
mod engine_tests;

use std::path::{Path, PathBuf};

use xfer_proto::text::{escape_name, first_invisible, nfc};
use xfer_proto::{ChunkLayout, Digest};

use crate::error::{ProtocolError, UsageError};

/// Options common to `push` and `pull`.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Replace an existing destination.
    pub force: bool,
    /// Bytes per second, if limited.
    pub limit_rate: Option<u64>,
    /// Send (push) or ask for (pull) zstd-compressed chunks; a chunk that does not
    /// shrink travels raw.
    pub compress: bool,
    /// Where pushes keep their resume records ([`resume`]); `None`: no records.
    pub records: Option<resume::Records>,
}

/// zstd level for `--compress`: the protocol's.
pub use xfer_proto::COMPRESS_LEVEL;

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The destination already holds the same content; nothing travelled.
    UpToDate,
    /// `--update`: the destination differs but is newer than the source; it was kept.
    Kept,
    /// The file was transferred (possibly resuming earlier work).
    Done {
        /// File size in bytes.
        size: u64,
        /// Whole-file BLAKE3.
        digest: Digest,
        /// Bytes found already present and verified (0 for a fresh transfer).
        verified: u64,
        /// Offset of the first chunk that had to travel, when resuming.
        resumed_at: Option<u64>,
        /// Bytes that actually travelled.
        transferred: u64,
    },
}

/// Why one file failed, and whether the connection can go on with the next file.
#[derive(Debug)]
pub enum Failure {
    /// This file failed before any data flowed; the connection is in a clean state.
    File(anyhow::Error),
    /// The connection is in an unknown state or gone: stop the command.
    Fatal(anyhow::Error),
}

impl Failure {
    /// The error inside.
    pub fn into_error(self) -> anyhow::Error {
        match self {
            Failure::File(e) | Failure::Fatal(e) => e,
        }
    }
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Fatal(e.into())
    }
}

/// Marks an error as leaving the connection usable (see [`Failure::File`]).
pub trait FileFailure<T> {
    /// `Err(e)` becomes `Failure::File(e)`.
    fn file_failure(self) -> Result<T, Failure>;
}

impl<T, E: Into<anyhow::Error>> FileFailure<T> for Result<T, E> {
    fn file_failure(self) -> Result<T, Failure> {
        self.map_err(|e| Failure::File(e.into()))
    }
}

/// BLAKE3 of a whole local file, read in large blocks (blocking; run it off the runtime).
///
/// # Errors
/// The file cannot be read.
pub fn hash_file(path: &Path) -> std::io::Result<Digest> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Digest::hasher();
    let mut buf = vec![0u8; xfer_proto::CHUNK_SIZE];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finalize());
        }
        hasher.update(&buf[..n]);
    }
}

/// [`hash_file`] on the blocking pool, with the path in the error.
///
/// # Errors
/// The file cannot be read.
pub async fn hash_file_async(path: &Path) -> anyhow::Result<Digest> {
    use anyhow::Context as _;
    let p = path.to_owned();
    tokio::task::spawn_blocking(move || hash_file(&p))
        .await
        .context("hashing task failed")?
        .with_context(|| format!("reading `{}`", path.display()))
}

/// Flags every transfer command (`push`, `pull`, `send`) takes.
#[derive(Debug, clap::Args)]
pub struct TransferFlags {
    /// No progress and no per-file lines.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Limit the transfer rate, in bytes per second (e.g. 500K, 10M).
    #[arg(long, value_name = "RATE")]
    pub limit_rate: Option<String>,
}

impl TransferFlags {
    /// The `--limit-rate` in bytes per second, if one was given.
    ///
    /// # Errors
    /// [`crate::error::UsageError`] for a rate that does not parse.
    pub fn limit_rate(&self) -> Result<Option<u64>, crate::error::UsageError> {
        self.limit_rate
            .as_deref()
            .map_or(Ok(None), ratelimit::parse_rate)
    }
}

/// The result line printed on stdout for a file, e.g.
/// `docs/a.txt  1.0 MiB  done, BLAKE3 9f2c0a11b3e4…`.
pub fn outcome_line(name: &str, outcome: &Outcome) -> String {
    result_line(&crate::output::escape_control(name), " up to date", outcome)
}

/// A result line for `label` (already escaped for printing): `up_to_date` follows it
/// when nothing had to travel; otherwise size, resume point and digest.
pub fn result_line(label: &str, up_to_date: &str, outcome: &Outcome) -> String {
    match outcome {
        Outcome::UpToDate => format!("{label}{up_to_date}"),
        Outcome::Kept => format!("{label}  kept: newer at the destination (--force replaces it)"),
        Outcome::Done {
            size,
            digest,
            verified,
            resumed_at,
            ..
        } => {
            let hex = digest.to_string();
            let short = &hex[..12];
            let size = crate::output::human_bytes(*size);
            match resumed_at {
                Some(at) => format!(
                    "{label}  resuming at {} ({} verified)  …  done, {size}, BLAKE3 {short}…",
                    crate::output::human_bytes(*at),
                    crate::output::human_bytes(*verified),
                ),
                None => format!("{label}  {size}  done, BLAKE3 {short}…"),
            }
        }
    }
}

/// The chunks of a file of `size` bytes as the server announced them: a chunk size that
/// is a power of two (so chunks are subtrees of the file's BLAKE3 tree), at least 1 KiB,
/// and small enough to fit a frame.
///
/// # Errors
/// [`ProtocolError`] for any other chunk size.
pub fn chunk_layout(size: u64, chunk_size: u32) -> Result<ChunkLayout, ProtocolError> {
    ChunkLayout::new(size, chunk_size).map_err(|_| {
        ProtocolError(format!(
            "server announced an unusable chunk size of {chunk_size} bytes"
        ))
    })
}

/// Whether chunk `index`, whose local digest is `local`, must be uploaded given the
/// digests the server holds (`held`, from its manifest; empty when it holds nothing).
/// Only a chunk the server holds with exactly this digest is skipped, so a local file
/// changed since an interrupted push re-sends what changed.
pub fn must_send(held: &[Option<Digest>], index: u64, local: &Digest) -> bool {
    let held = usize::try_from(index)
        .ok()
        .and_then(|i| held.get(i))
        .copied()
        .flatten();
    held != Some(*local)
}

/// Groups the (ascending) chunk indices in `needed` into contiguous runs
/// `(first, count)` of at most `max_run` chunks, one `GetChunks` each.
pub fn batch_runs(needed: impl IntoIterator<Item = u64>, max_run: u64) -> Vec<(u64, u64)> {
    let max_run = max_run.max(1);
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for i in needed {
        match runs.last_mut() {
            Some((first, count)) if *first + *count == i && *count < max_run => *count += 1,
            _ => runs.push((i, 1)),
        }
    }
    runs
}

/// Checks that a name from a server is one path component: not empty, not `.` or `..`,
/// no `/`, no NUL. A listing with any other name is refused as a whole (a malicious
/// server must not make the client write outside the destination, CVE-2019-6111).
///
/// # Errors
/// [`ProtocolError`] naming the (escaped) offending name.
pub fn check_name(name: &str) -> Result<(), ProtocolError> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(ProtocolError(format!(
            "server sent an invalid name {:?} in a listing; refusing it",
            crate::output::escape_control(name)
        )));
    }
    Ok(())
}

/// Splits `ARG... [DEST]`: with one argument there is no destination; with two or more
/// the last one is the destination.
pub fn split_sources<T>(mut args: Vec<T>) -> (Vec<T>, Option<T>) {
    if args.len() >= 2 {
        let dest = args.pop();
        (args, dest)
    } else {
        (args, None)
    }
}

/// A remote path in Unicode NFC (as the server keeps names: `e` + U+0301 typed on macOS
/// names the same file as `é`), with leading `./` and trailing slashes removed; `""`,
/// `"."` and `./` mean the home. Nothing else is interpreted: the server validates
/// paths, so `/` stays `/` (and is refused there), never the home.
pub fn normalize_remote(path: &str) -> String {
    let path = &*nfc(path);
    let mut p = path;
    while let Some(rest) = p.strip_prefix("./") {
        p = rest;
    }
    let trimmed = p.trim_end_matches('/');
    if trimmed.is_empty() {
        // "" stays the home; "/" or "//" stay as they are (absolute: refused).
        return p.to_string();
    }
    if trimmed == "." {
        String::new()
    } else {
        trimmed.to_string()
    }
}

/// `dir/name` for remote paths; the home (`""`) gives `name`.
pub fn remote_join(dir: &str, name: &str) -> String {
    let dir = normalize_remote(dir);
    let name = nfc(name);
    if dir.is_empty() {
        name.into_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// Whether a remote destination names a directory by its spelling alone: the home
/// (empty or `.`), or a trailing `/` (after something other than slashes).
pub fn remote_names_dir(remote: &str) -> bool {
    let n = normalize_remote(remote);
    n.is_empty() || (remote.ends_with('/') && !n.ends_with('/'))
}

/// The last component of a remote path (`""` for the home).
pub fn remote_basename(remote: &str) -> String {
    let n = normalize_remote(remote);
    n.rsplit('/').next().unwrap_or("").to_string()
}

/// The parent of a remote path (`""` for a top-level name or the home).
pub fn remote_parent(remote: &str) -> String {
    let n = normalize_remote(remote);
    match n.rsplit_once('/') {
        Some((parent, _)) => parent.to_string(),
        None => String::new(),
    }
}

/// The file name of a local path as UTF-8 in NFC, for use as a remote name.
///
/// # Errors
/// [`UsageError`] when the path has no file name (`/`, `..`), it is not UTF-8, or it
/// holds an invisible character (named as `U+XXXX`), which the server would refuse.
pub fn local_basename(path: &Path) -> Result<String, UsageError> {
    let name = path
        .file_name()
        .ok_or_else(|| UsageError(format!("`{}` has no file name", path.display())))?;
    let name = name.to_str().ok_or_else(|| {
        UsageError(format!(
            "`{}`: file names must be UTF-8 to be sent",
            path.display()
        ))
    })?;
    if let Some(c) = first_invisible(name) {
        return Err(UsageError(format!(
            "`{}`: the name contains {c}, an invisible character the server refuses; rename it without",
            escape_name(&path.display().to_string())
        )));
    }
    Ok(nfc(name).into_owned())
}

/// The part file a download of `dest` is written to: `NAME.xfer-part` beside it.
pub fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".xfer-part");
    dest.with_file_name(name)
}

/// The directory `path` is in (`.` for a bare name).
pub fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Whether the first bytes of a file are those of an image type worth previewing
/// (PNG, JPEG, GIF, WebP).
pub fn looks_like_image(head: &[u8]) -> bool {
    head.starts_with(b"\x89PNG\r\n\x1a\n")
        || head.starts_with(b"\xff\xd8\xff")
        || head.starts_with(b"GIF87a")
        || head.starts_with(b"GIF89a")
        || (head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(b: u8) -> Digest {
        Digest([b; 32])
    }

    #[test]
    fn chunk_math() {
        let count = |size| chunk_layout(size, 1024).unwrap().count();
        assert_eq!((count(0), count(1), count(1024), count(1025)), (0, 1, 1, 2));
        let l = chunk_layout(2500, 1024).unwrap();
        assert_eq!((l.offset(0), l.chunk_len(0)), (0, 1024));
        assert_eq!((l.offset(2), l.chunk_len(2)), (2048, 452));
        let check = |cs| chunk_layout(10, cs).map(|_| ());
        assert!(check(0).is_err());
        assert!(check(1 << 20).is_ok());
        assert!(check(1024).is_ok());
        assert!(check(512).is_err(), "smaller than a BLAKE3 chunk");
        assert!(check(1000).is_err(), "not a power of two");
        assert!(check((1 << 20) + 1).is_err());
        let e = check(1 << 21).unwrap_err().to_string();
        assert!(e.contains("unusable chunk size of 2097152 bytes"), "{e}");
    }

    #[test]
    fn resume_planning_sends_missing_and_changed_chunks() {
        let held = vec![Some(d(1)), None, Some(d(3))];
        assert!(!must_send(&held, 0, &d(1)), "held and equal: skipped");
        assert!(must_send(&held, 1, &d(2)), "missing: sent");
        assert!(must_send(&held, 2, &d(9)), "local changed: sent");
        assert!(must_send(&held, 3, &d(4)), "beyond the manifest: sent");
        assert!(must_send(&[], 0, &d(1)), "nothing held: sent");
    }

    #[test]
    fn runs_are_contiguous_and_bounded() {
        assert_eq!(batch_runs([], 8), vec![]);
        assert_eq!(
            batch_runs([0, 1, 2, 5, 6, 9], 8),
            vec![(0, 3), (5, 2), (9, 1)]
        );
        assert_eq!(batch_runs(0..10, 4), vec![(0, 4), (4, 4), (8, 2)]);
        assert_eq!(batch_runs([3], 0), vec![(3, 1)]);
    }

    #[test]
    fn listing_names_are_single_components() {
        for ok in ["a", "a b", "..a", ".hidden", "ünï", "x\x1b[31m"] {
            assert!(check_name(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", ".", "..", "a/b", "/etc", "../x", "a\0b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        let msg = check_name("../\x1b]0;x").unwrap_err().to_string();
        assert!(!msg.contains('\x1b'), "{msg}");
    }

    #[test]
    fn sources_and_destination() {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(split_sources(v(&["a"])), (v(&["a"]), None));
        assert_eq!(split_sources(v(&["a", "b"])), (v(&["a"]), Some("b".into())));
        assert_eq!(
            split_sources(v(&["a", "b", "c/"])),
            (v(&["a", "b"]), Some("c/".into()))
        );
    }

    #[test]
    fn remote_paths() {
        assert_eq!(normalize_remote("a/b/"), "a/b");
        assert_eq!(normalize_remote("./a"), "a");
        assert_eq!(normalize_remote("."), "");
        assert_eq!(normalize_remote("./"), "");
        assert_eq!(normalize_remote("/"), "/", "never the home");
        assert_eq!(normalize_remote("//x/"), "//x");
        assert_eq!(remote_join("", "x"), "x");
        assert_eq!(remote_join(".", "x"), "x");
        assert_eq!(remote_join("d/", "x"), "d/x");
        assert!(remote_names_dir(""));
        assert!(remote_names_dir("."));
        assert!(remote_names_dir("d/"));
        assert!(!remote_names_dir("d"));
        assert!(!remote_names_dir("/"));
        assert_eq!(remote_basename("a/b/"), "b");
        assert_eq!(remote_basename("b"), "b");
        assert_eq!(remote_basename(""), "");
        assert_eq!(remote_parent("a/b/c"), "a/b");
        assert_eq!(remote_parent("c"), "");
        // Paths go out in NFC, as the server keeps them.
        assert_eq!(normalize_remote("cafe\u{301}/"), "caf\u{e9}");
        assert_eq!(remote_join("cafe\u{301}", "n\u{303}"), "caf\u{e9}/\u{f1}");
    }

    #[test]
    fn local_names_are_sent_in_nfc_and_invisible_ones_refused() {
        assert_eq!(
            local_basename(Path::new("d/cafe\u{301}.txt")).unwrap(),
            "caf\u{e9}.txt"
        );
        let e = local_basename(Path::new("d/a\u{200b}b"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("U+200B") && e.contains("a\\u{200b}b"), "{e}");
        assert!(!e.contains('\u{200b}'), "{e}");
    }

    #[test]
    fn part_file_is_beside_the_destination() {
        assert_eq!(
            part_path(Path::new("dir/a.txt")),
            PathBuf::from("dir/a.txt.xfer-part")
        );
    }

    #[test]
    fn image_sniffing() {
        assert!(looks_like_image(b"\x89PNG\r\n\x1a\n...."));
        assert!(looks_like_image(b"\xff\xd8\xff\xe0"));
        assert!(looks_like_image(b"RIFF\0\0\0\0WEBPVP8 "));
        assert!(!looks_like_image(b"hello"));
    }
}
