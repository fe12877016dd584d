//! Append-only chat history: one log per channel and per direct conversation.
//!
//! ```text
//! <data_dir>/chat/channels/<name>.log      one per channel
//!                 direct/<a>+<b>.log       one per pair of users, names sorted
//!                 ids                      message ids reserved so far (decimal)
//! ```
//!
//! A log is one JSON object per line (`{"id":7,"ts":…,"from":"alice","to":"#lab",
//! "text":"hi"}`, or `"file":{…}` for a file notice), ids increasing. A record is
//! written with one `write` of the whole line before the message is acknowledged, so
//! it survives the daemon being killed; logs are fsynced about once a second and at
//! shutdown, so a power loss may cost the last second. A line that does not decode (a
//! torn write, damage) is skipped, never fatal; a torn last line is cut off at start so
//! that later records begin on a line of their own.
//!
//! Ids are server-wide: one lock serialises allocation, the append and live delivery,
//! so every reader sees increasing ids. Blocks of ids are reserved in `ids` before use,
//! so ids keep increasing across restarts even when retention removed every record.
//!
//! Nothing is cached but counts: reads go to the file (usually in the page cache),
//! walking it backwards from the end, since what is asked for is nearly always the
//! newest messages. Memory stays small however much history there is.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::{info, warn};
use xfer_proto::{ChatMessage, MessageBody, Target};

pub use key::ConvKey;
pub(super) use logfile::write_atomic;
use logfile::{ConvMeta, append_line, compact, read_back, scan_lines, sync_dir};
pub(crate) use logfile::{decode, encode};

/// Ids reserved on disk at a time: a restart skips at most this many.
const ID_BLOCK: u64 = 1000;
/// Bytes one read may walk back through a log. A request that would need more (a
/// `before` or `after` far in the past of a huge log) gets what lies within it, so no
/// request can make the server read a whole unbounded log. With the default retention
/// (10,000 records, compacted at 12,500, each at most a few KB) a log stays below it.
const SCAN_LIMIT: u64 = 64 * 1024 * 1024;
/// Retention and limits of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Records kept per conversation; 0 = no limit.
    pub max_messages: u64,
    /// Records older than this are removed; 0 = kept forever.
    pub retention_ms: u64,
    /// Channel logs the store may hold.
    pub max_channels: usize,
    /// Channel logs one user may have started (their message is the oldest kept);
    /// 0 = no limit.
    pub max_channels_per_user: usize,
    /// A channel log holding a single message this old, with nobody in the channel, is
    /// removed; 0 = only by retention.
    pub lone_message_ms: u64,
}

/// Why the store refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// A new channel log would exceed the limit.
    #[error("too many channels (at most {max})")]
    TooManyChannels {
        /// The limit.
        max: usize,
    },
    /// A new channel log would exceed the per-user limit.
    #[error(
        "you have started {max} channels, the most one user may; post in one of them or wait until one expires"
    )]
    TooManyChannelsOfUser {
        /// The limit.
        max: usize,
    },
    /// A shared store cannot be reached now; the text says which and what to do.
    #[error("{0}")]
    Unavailable(String),
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl HistoryError {
    /// The disk cannot take more now (full, over quota, read-only): the peer is told
    /// so with the out-of-space code, not an internal error.
    pub fn out_of_space(&self) -> bool {
        matches!(self, HistoryError::Io { source, .. } if matches!(
            source.kind(),
            io::ErrorKind::StorageFull
                | io::ErrorKind::ReadOnlyFilesystem
                | io::ErrorKind::QuotaExceeded
        ))
    }
}

fn io_err(context: &'static str) -> impl FnOnce(io::Error) -> HistoryError {
    move |source| HistoryError::Io { context, source }
}

/// Id allocation state, under the writer lock.
#[derive(Debug)]
struct Writer {
    next_id: u64,
    /// Ids below this are reserved on disk.
    reserved: u64,
}

/// A page of messages read from a log.
#[derive(Debug, Default)]
pub struct Page {
    /// Oldest first.
    pub messages: Vec<ChatMessage>,
    /// Matching messages left out because of the page size.
    pub skipped: u64,
    /// The largest id read from the log (0 if none): anything up to it that a reader
    /// could also receive live is already accounted for by this page.
    pub last_read: u64,
}

/// The history store. See the module documentation.
pub struct History {
    dir: PathBuf,
    /// Replaced by a config reload; a leaf lock.
    config: Mutex<HistoryConfig>,
    /// Serialises id allocation, appends, live delivery and compaction.
    writer: tokio::sync::Mutex<Writer>,
    last_id: AtomicU64,
    convs: Mutex<HashMap<ConvKey, ConvMeta>>,
    /// Logs written since the last fsync; `true` entries were created (their directory
    /// needs an fsync too).
    dirty: Mutex<HashMap<PathBuf, bool>>,
    /// Bytes one read may walk back ([`SCAN_LIMIT`]; smaller in tests).
    scan_limit: u64,
}

impl History {
    fn config(&self) -> HistoryConfig {
        *self.config.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies new retention and channel limits (a config reload); the next sweep
    /// enforces them.
    pub fn reconfigure(&self, config: HistoryConfig) {
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = config;
    }

    /// Opens (creating) the store in `dir`: scans every log, cuts torn tails, applies
    /// retention, and reserves the next block of ids. Blocking: call it at start-up.
    ///
    /// # Errors
    /// When a directory or the id file cannot be created, read or written.
    pub fn open(dir: &Path, config: HistoryConfig, now_ms: u64) -> io::Result<History> {
        let mut convs = HashMap::new();
        let mut max_id = 0;
        for sub in ["channels", "direct"] {
            let d = dir.join(sub);
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&d)?;
            for entry in std::fs::read_dir(&d)? {
                let entry = entry?;
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                if name.ends_with(".tmp") {
                    let _ = std::fs::remove_file(entry.path());
                    continue;
                }
                let Some(key) = ConvKey::from_file(sub, &name) else {
                    warn!(file = %entry.path().display(), "ignoring a file that is not a chat log");
                    continue;
                };
                let path = entry.path();
                let meta = load_log(&path, &config, now_ms)?;
                if let Some(meta) = meta {
                    max_id = max_id.max(meta.last_id);
                    convs.insert(key, meta);
                }
            }
        }
        let ids_path = dir.join("ids");
        let stored = match std::fs::read_to_string(&ids_path) {
            Ok(s) => s.trim().parse::<u64>().unwrap_or_else(|_| {
                warn!(file = %ids_path.display(), "chat id file unreadable; continuing after the largest stored id");
                0
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        let next_id = stored.max(max_id + 1).max(1);
        let reserved = next_id + ID_BLOCK;
        write_atomic(&ids_path, format!("{reserved}\n").as_bytes())?;
        info!(conversations = convs.len(), next_id, "chat history loaded");
        Ok(History {
            dir: dir.to_owned(),
            config: Mutex::new(config),
            writer: tokio::sync::Mutex::new(Writer { next_id, reserved }),
            last_id: AtomicU64::new(next_id - 1),
            convs: Mutex::new(convs),
            dirty: Mutex::new(HashMap::new()),
            scan_limit: SCAN_LIMIT,
        })
    }

    fn convs(&self) -> std::sync::MutexGuard<'_, HashMap<ConvKey, ConvMeta>> {
        self.convs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, key: &ConvKey) -> PathBuf {
        self.dir.join(key.file())
    }

    /// The largest message id handed out so far (0 if none).
    pub fn last_id(&self) -> u64 {
        self.last_id.load(Ordering::Acquire)
    }

    /// Whether `key` has stored messages. A log moved away while the daemon runs
    /// (`xferd user del` archives the deleted user's direct logs) is forgotten here, so a
    /// new account of that name starts with no history.
    pub fn exists(&self, key: &ConvKey) -> bool {
        if !self.convs().contains_key(key) {
            return false;
        }
        if self.path(key).exists() {
            return true;
        }
        self.convs().remove(key);
        info!(log = %key.file().display(), "chat log moved away; conversation forgotten");
        false
    }

    /// The newest message id of `key` (0 if it has none).
    pub fn last_id_of(&self, key: &ConvKey) -> u64 {
        self.convs().get(key).map_or(0, |m| m.last_id)
    }

    /// Direct conversations `user` takes part in that have stored messages.
    pub fn conversations_of(&self, user: &str) -> Vec<ConvKey> {
        let mut keys: Vec<ConvKey> = self
            .convs()
            .keys()
            .filter(|k| k.other(user).is_some())
            .cloned()
            .collect();
        keys.retain(|k| self.exists(k));
        keys.sort();
        keys
    }

    /// Stores a message and, still in id order, hands it to `deliver`. The record is
    /// written (not yet fsynced) when this returns.
    ///
    /// # Errors
    /// A new channel log beyond the limit, or a failed write (nothing is stored then).
    pub async fn append(
        &self,
        key: &ConvKey,
        from: &str,
        target: Target,
        body: MessageBody,
        deliver: impl FnOnce(&ChatMessage),
    ) -> Result<ChatMessage, HistoryError> {
        let mut w = self.writer.lock().await;
        if let ConvKey::Channel(_) = key {
            let convs = self.convs();
            if !convs.contains_key(key) {
                let channels = convs
                    .keys()
                    .filter(|k| matches!(k, ConvKey::Channel(_)))
                    .count();
                if channels >= self.config().max_channels {
                    return Err(HistoryError::TooManyChannels {
                        max: self.config().max_channels,
                    });
                }
                let per_user = self.config().max_channels_per_user;
                if per_user > 0 {
                    let started = convs
                        .iter()
                        .filter(|(k, m)| matches!(k, ConvKey::Channel(_)) && m.starter == from)
                        .count();
                    if started >= per_user {
                        return Err(HistoryError::TooManyChannelsOfUser { max: per_user });
                    }
                }
            }
        }
        // Taken before any await: if this future were dropped mid-write, the id is
        // simply never used, not handed out twice.
        let id = w.next_id;
        w.next_id += 1;
        let message = ChatMessage {
            id,
            time_unix_ms: crate::now_unix_ms(),
            from: from.to_owned(),
            target,
            body,
        };
        let line = encode(&message);
        let path = self.path(key);
        let reserve = (id >= w.reserved).then(|| (self.dir.join("ids"), id + ID_BLOCK));
        let p = path.clone();
        let r = reserve.clone();
        let created = tokio::task::spawn_blocking(move || -> Result<bool, HistoryError> {
            if let Some((ids, upto)) = r {
                write_atomic(&ids, format!("{upto}\n").as_bytes())
                    .map_err(io_err("reserving message ids"))?;
            }
            append_line(&p, &line).map_err(io_err("appending to a chat log"))
        })
        .await
        .map_err(|e| HistoryError::Io {
            context: "a chat log task",
            source: io::Error::other(e.to_string()),
        })??;
        if let Some((_, upto)) = reserve {
            w.reserved = upto;
        }
        let count = {
            let mut convs = self.convs();
            let meta = convs.entry(key.clone()).or_default();
            if meta.count == 0 {
                meta.oldest_ms = message.time_unix_ms;
                meta.starter = message.from.clone();
            }
            meta.count += 1;
            meta.last_id = id;
            meta.count
        };
        self.last_id.store(id, Ordering::Release);
        {
            let mut dirty = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
            *dirty.entry(path).or_insert(false) |= created;
        }
        deliver(&message);
        let max = self.config().max_messages;
        if max > 0 && count > max + max / 4 {
            self.compact_locked(key, crate::now_unix_ms()).await;
        }
        drop(w);
        Ok(message)
    }

    /// The last `count` messages of `key` (with `before`, only those with smaller ids),
    /// oldest first; only the newest 64 MiB of the log are looked at.
    ///
    /// # Errors
    /// When the log cannot be read.
    pub async fn last(
        &self,
        key: &ConvKey,
        count: usize,
        before: Option<u64>,
    ) -> Result<Page, HistoryError> {
        if count == 0 || !self.exists(key) {
            return Ok(Page::default());
        }
        let path = self.path(key);
        let before = before.unwrap_or(u64::MAX);
        let limit = self.scan_limit;
        blocking(move || {
            let mut page = Page::default();
            read_back(&path, limit, |m| {
                page.last_read = page.last_read.max(m.id);
                if m.id < before {
                    page.messages.push(m);
                }
                page.messages.len() < count
            })
            .map_err(io_err("reading a chat log"))?;
            page.messages.reverse();
            Ok(page)
        })
        .await
    }

    /// The messages of `key` with ids above `after` that `filter` accepts, at most
    /// `max` (the newest), oldest first; the rest are counted in `skipped`. Only the
    /// newest 64 MiB of the log are looked at: beyond that nothing is returned or
    /// counted.
    ///
    /// # Errors
    /// When the log cannot be read.
    pub async fn after(
        &self,
        key: &ConvKey,
        after: u64,
        max: usize,
        filter: impl Fn(&ChatMessage) -> bool + Send + 'static,
    ) -> Result<Page, HistoryError> {
        if !self.exists(key) {
            return Ok(Page::default());
        }
        let newest = self.convs().get(key).map_or(0, |m| m.last_id);
        if newest <= after {
            return Ok(Page {
                last_read: newest,
                ..Page::default()
            });
        }
        let path = self.path(key);
        let limit = self.scan_limit;
        blocking(move || {
            let mut page = Page::default();
            read_back(&path, limit, |m| {
                if m.id <= after {
                    page.last_read = page.last_read.max(m.id);
                    return false;
                }
                page.last_read = page.last_read.max(m.id);
                if filter(&m) {
                    if page.messages.len() < max {
                        page.messages.push(m);
                    } else {
                        page.skipped += 1;
                    }
                }
                true
            })
            .map_err(io_err("reading a chat log"))?;
            page.messages.reverse();
            Ok(page)
        })
        .await
    }

    /// Fsyncs every log written since the last call (and the directories of new ones).
    pub async fn sync(&self) {
        let dirty = std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|p| p.into_inner()));
        if dirty.is_empty() {
            return;
        }
        let dir = self.dir.clone();
        let result = blocking(move || {
            let mut dirs = HashSet::new();
            for (path, created) in dirty {
                match File::open(&path) {
                    Ok(f) => f.sync_data().map_err(io_err("syncing a chat log"))?,
                    // Compacted away meanwhile: nothing left to sync.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err("syncing a chat log")(e)),
                }
                if created && let Some(parent) = path.parent() {
                    dirs.insert(parent.to_owned());
                }
            }
            for d in dirs.into_iter().chain(std::iter::once(dir)) {
                sync_dir(&d).map_err(io_err("syncing the chat directory"))?;
            }
            Ok(())
        })
        .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "chat history sync failed");
        }
    }

    /// Applies retention: removes records older than the retention period and, beyond
    /// the per-conversation count, the oldest ones. Takes the writer lock one log at a
    /// time, so messages keep flowing during a sweep.
    pub async fn enforce_retention(&self, now_ms: u64) {
        let keys: Vec<ConvKey> = self
            .convs()
            .iter()
            .filter(|(_, m)| needs_compaction(m, &self.config(), now_ms))
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            let _w = self.writer.lock().await;
            self.compact_locked(&key, now_ms).await;
        }
    }

    /// Removes abandoned channels: a log holding one message older than
    /// `lone_message_ms`, of a channel nobody is in now (`occupied` says who is).
    /// Such a channel was one line and nobody came; keeping it for the whole retention
    /// period would let one user hold channel names (and `max_channels`) for a year.
    /// Returns the channels removed.
    pub async fn expire_lone_channels(
        &self,
        now_ms: u64,
        occupied: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let lone_ms = self.config().lone_message_ms;
        if lone_ms == 0 {
            return Vec::new();
        }
        let cutoff = now_ms.saturating_sub(lone_ms);
        let lone = |k: &ConvKey, m: &ConvMeta| {
            matches!(k, ConvKey::Channel(name) if !occupied(name))
                && m.count == 1
                && m.oldest_ms < cutoff
        };
        let keys: Vec<ConvKey> = self
            .convs()
            .iter()
            .filter(|(k, m)| lone(k, m))
            .map(|(k, _)| k.clone())
            .collect();
        let mut removed = Vec::new();
        for key in keys {
            let _w = self.writer.lock().await;
            // A message may have arrived meanwhile.
            if !self.convs().get(&key).is_some_and(|m| lone(&key, m)) {
                continue;
            }
            let path = self.path(&key);
            match blocking(move || {
                std::fs::remove_file(&path).map_err(io_err("removing a chat log"))
            })
            .await
            {
                Ok(()) => {
                    self.convs().remove(&key);
                    if let ConvKey::Channel(name) = key {
                        info!(channel = %name, "abandoned one-message channel expired");
                        removed.push(name);
                    }
                }
                Err(e) => tracing::error!(error = %e, ?key, "expiring a channel failed"),
            }
        }
        removed
    }

    /// Rewrites one log under the writer lock (held by the caller).
    async fn compact_locked(&self, key: &ConvKey, now_ms: u64) {
        let path = self.path(key);
        let config = self.config();
        let result = blocking(move || {
            compact(&path, cutoff(&config, now_ms), config.max_messages)
                .map_err(io_err("compacting a chat log"))
        })
        .await;
        match result {
            Ok(Some(meta)) => {
                self.convs().insert(key.clone(), meta);
            }
            Ok(None) => {
                self.convs().remove(key);
            }
            Err(e) => tracing::error!(error = %e, ?key, "chat retention failed"),
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, HistoryError> + Send + 'static,
) -> Result<T, HistoryError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| HistoryError::Io {
            context: "a chat history task",
            source: io::Error::other(e.to_string()),
        })?
}

/// The oldest record time kept (0 = keep everything).
fn cutoff(config: &HistoryConfig, now_ms: u64) -> u64 {
    if config.retention_ms == 0 {
        0
    } else {
        now_ms.saturating_sub(config.retention_ms)
    }
}

fn needs_compaction(meta: &ConvMeta, config: &HistoryConfig, now_ms: u64) -> bool {
    (config.max_messages > 0 && meta.count > config.max_messages)
        || (meta.count > 0 && meta.oldest_ms < cutoff(config, now_ms))
}

/// Scans one log at start-up: cuts a torn tail, compacts when retention or damage
/// calls for it. `None` when nothing is left (the file is removed).
fn load_log(path: &Path, config: &HistoryConfig, now_ms: u64) -> io::Result<Option<ConvMeta>> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let mut meta = ConvMeta::default();
    let mut damaged = 0u64;
    let mut ordered = true;
    let complete = scan_lines(BufReader::new(&file), |line| match line.and_then(decode) {
        Some(m) => {
            if meta.count == 0 {
                meta.oldest_ms = m.time_unix_ms;
                meta.starter = m.from;
            }
            ordered &= m.id > meta.last_id;
            meta.count += 1;
            meta.last_id = meta.last_id.max(m.id);
        }
        None => damaged += 1,
    })?;
    let len = file.metadata()?.len();
    if complete < len {
        warn!(file = %path.display(), bytes = len - complete, "cutting a torn record off the end of a chat log");
        file.set_len(complete)?;
        file.sync_all()?;
    }
    drop(file);
    if damaged > 0 || !ordered {
        warn!(file = %path.display(), damaged, "chat log has damaged records; rewriting it without them");
    }
    if damaged > 0 || !ordered || needs_compaction(&meta, config, now_ms) || meta.count == 0 {
        return compact(path, cutoff(config, now_ms), config.max_messages);
    }
    Ok(Some(meta))
}

mod key;
mod logfile;
#[cfg(test)]
mod tests;
