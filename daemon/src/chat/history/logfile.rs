//! The on-disk form of a chat log: one JSON record per line, and the file operations
//! the store needs (scan, read backwards, append, compact, atomic rewrite). Nothing
//! here knows about conversations or ids beyond what a record says.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use serde::{Deserialize, Serialize};
use xfer_proto::{ChatMessage, MessageBody, Target};

/// A line longer than this is damage, not a record (a record is at most ~25 KB:
/// 4,000 bytes of text whose control characters JSON escapes six-fold).
pub(super) const MAX_RECORD_LEN: usize = 64 * 1024;
/// Bytes read per step when walking a log backwards.
#[cfg(not(test))]
const BLOCK: usize = 64 * 1024;
/// Tiny in tests, so that lines straddle blocks all the time.
#[cfg(test)]
const BLOCK: usize = 1000;

/// What the store keeps in memory per conversation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct ConvMeta {
    /// Records in the log.
    pub count: u64,
    /// Time of the oldest record (ms), for retention.
    pub oldest_ms: u64,
    /// Id of the newest record.
    pub last_id: u64,
    /// Who wrote the oldest record kept: for a channel, the user it counts against
    /// (`chat.max_channels_per_user`).
    pub starter: String,
}

/// A record as written (borrowing) and read. The target is stored as the text a user
/// types (`#lab`, `@bob`), as protocol version 2 wrote it, so logs of either version
/// read alike; it is parsed back into a [`Target`] here, at the edge.
#[derive(Serialize, Deserialize)]
struct Record<'a> {
    id: u64,
    ts: u64,
    #[serde(borrow)]
    from: Cow<'a, str>,
    #[serde(borrow)]
    to: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    file: Option<FileRecord<'a>>,
}

#[derive(Serialize, Deserialize)]
struct FileRecord<'a> {
    #[serde(borrow)]
    path: Cow<'a, str>,
    size: u64,
    blake3: String,
}

impl<'a> Record<'a> {
    fn of(m: &'a ChatMessage) -> Record<'a> {
        let (text, file) = match &m.body {
            MessageBody::Text(t) => (Some(Cow::Borrowed(t.as_str())), None),
            MessageBody::File { path, size, digest } => (
                None,
                Some(FileRecord {
                    path: Cow::Borrowed(path),
                    size: *size,
                    blake3: digest.to_string(),
                }),
            ),
        };
        Record {
            id: m.id,
            ts: m.time_unix_ms,
            from: Cow::Borrowed(&m.from),
            to: Cow::Owned(m.target.to_string()),
            text,
            file,
        }
    }

    fn into_message(self) -> Option<ChatMessage> {
        let body = match (self.text, self.file) {
            (Some(t), None) => MessageBody::Text(t.into_owned()),
            (None, Some(f)) => MessageBody::File {
                path: f.path.into_owned(),
                size: f.size,
                digest: f.blake3.parse().ok()?,
            },
            _ => return None,
        };
        Some(ChatMessage {
            id: self.id,
            time_unix_ms: self.ts,
            from: self.from.into_owned(),
            target: Target::parse(&self.to).ok()?,
            body,
        })
    }
}

/// Decodes one line; `None` for anything that is not a whole record.
pub(crate) fn decode(line: &[u8]) -> Option<ChatMessage> {
    serde_json::from_slice::<Record<'_>>(line)
        .ok()?
        .into_message()
}

pub(crate) fn encode(m: &ChatMessage) -> Vec<u8> {
    let mut line = serde_json::to_vec(&Record::of(m)).expect("a record always serialises");
    line.push(b'\n');
    line
}

/// Rewrites a log keeping only whole records in increasing id order, newer than
/// `cutoff_ms`, and at most `max` of them (the newest; 0 = all). Removes the file and
/// returns `None` when nothing is kept.
pub(super) fn compact(path: &Path, cutoff_ms: u64, max: u64) -> io::Result<Option<ConvMeta>> {
    let keep = |m: &ChatMessage, last: &mut u64| {
        let ok = m.time_unix_ms >= cutoff_ms && m.id > *last;
        if ok {
            *last = m.id;
        }
        ok
    };
    let mut total = 0u64;
    let mut last = 0;
    scan_lines(BufReader::new(File::open(path)?), |line| {
        if line.and_then(decode).is_some_and(|m| keep(&m, &mut last)) {
            total += 1;
        }
    })?;
    if total == 0 {
        std::fs::remove_file(path)?;
        if let Some(parent) = path.parent() {
            sync_dir(parent)?;
        }
        return Ok(None);
    }
    let mut skip = if max > 0 {
        total.saturating_sub(max)
    } else {
        0
    };
    let tmp = path.with_extension("log.tmp");
    let mut out = io::BufWriter::new(
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?,
    );
    let mut meta = ConvMeta::default();
    let mut last = 0;
    let mut write_err = None;
    scan_lines(BufReader::new(File::open(path)?), |line| {
        let Some(raw) = line else { return };
        let Some(m) = decode(raw) else { return };
        if !keep(&m, &mut last) {
            return;
        }
        if skip > 0 {
            skip -= 1;
            return;
        }
        if meta.count == 0 {
            meta.oldest_ms = m.time_unix_ms;
            meta.starter = m.from.clone();
        }
        meta.count += 1;
        meta.last_id = m.id;
        if write_err.is_none()
            && let Err(e) = out.write_all(raw).and_then(|()| out.write_all(b"\n"))
        {
            write_err = Some(e);
        }
    })?;
    if let Some(e) = write_err {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(Some(meta))
}

/// Calls `f` for each newline-terminated line (without the newline): `Some(line)`, or
/// `None` for a line longer than [`MAX_RECORD_LEN`] (not buffered). Returns the offset
/// just past the last newline: bytes after it are a torn tail.
pub(super) fn scan_lines(mut r: impl BufRead, mut f: impl FnMut(Option<&[u8]>)) -> io::Result<u64> {
    let mut line = Vec::new();
    let mut overlong = false;
    let mut pos = 0u64;
    let mut complete = 0u64;
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(complete);
        }
        let newline = buf.iter().position(|&b| b == b'\n');
        let part = &buf[..newline.unwrap_or(buf.len())];
        if !overlong {
            if line.len() + part.len() > MAX_RECORD_LEN {
                overlong = true;
                line = Vec::new();
            } else {
                line.extend_from_slice(part);
            }
        }
        let used = part.len() + usize::from(newline.is_some());
        r.consume(used);
        pos += used as u64;
        if newline.is_some() {
            f((!overlong).then_some(line.as_slice()));
            line.clear();
            overlong = false;
            complete = pos;
        }
    }
}

/// Walks a log from its end towards its start, calling `visit` with each record (newest
/// first) until it returns `false` or about `max_bytes` of the file have been read
/// (whole blocks; a record straddling the limit is not visited). Lines that do not
/// decode are skipped; bytes after the last newline (a torn write in progress or left
/// by a crash) are ignored.
pub(super) fn read_back(
    path: &Path,
    max_bytes: u64,
    mut visit: impl FnMut(ChatMessage) -> bool,
) -> io::Result<()> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let mut pos = len;
    let mut block = vec![0u8; BLOCK];
    // The later part of the line being assembled (it ends just before a newline).
    let mut carry: Vec<u8> = Vec::new();
    let mut torn = true;
    let mut overlong = false;
    let mut line = Vec::new();
    let mut emit = |head: &[u8], carry: &[u8], overlong: bool| -> bool {
        if overlong {
            return true;
        }
        let m = if carry.is_empty() {
            decode(head)
        } else {
            line.clear();
            line.extend_from_slice(head);
            line.extend_from_slice(carry);
            decode(&line)
        };
        m.is_none_or(&mut visit)
    };
    while pos > 0 {
        if len - pos >= max_bytes {
            return Ok(());
        }
        let start = pos.saturating_sub(BLOCK as u64);
        let n = (pos - start) as usize;
        file.read_exact_at(&mut block[..n], start)?;
        pos = start;
        let mut end = n;
        while let Some(i) = block[..end].iter().rposition(|&b| b == b'\n') {
            if torn {
                torn = false;
            } else if !emit(&block[i + 1..end], &carry, overlong) {
                return Ok(());
            }
            carry.clear();
            overlong = false;
            end = i;
        }
        if !torn && !overlong {
            if end + carry.len() > MAX_RECORD_LEN {
                overlong = true;
                carry = Vec::new();
            } else {
                carry.splice(0..0, block[..end].iter().copied());
            }
        }
    }
    if !torn {
        emit(&[], &carry, overlong);
    }
    Ok(())
}

/// Appends one line with a single write; on failure the file is cut back to where it
/// was, so a half-written record cannot glue itself to the next one. Returns whether
/// the file was created.
pub(super) fn append_line(path: &Path, line: &[u8]) -> io::Result<bool> {
    let mut file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    let before = file.metadata()?.len();
    if let Err(e) = file.write_all(line) {
        let _ = file.set_len(before);
        return Err(e);
    }
    Ok(before == 0)
}

/// Replaces `path` atomically with `data` (temporary file, fsync, rename, fsync dir).
pub(in crate::chat) fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
