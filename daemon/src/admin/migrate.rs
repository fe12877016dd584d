//! `xferd migrate`: copies every user's committed files from the local data directory
//! (`<data_dir>/users/<name>/files/…`) into the bucket of `[storage.s3]`, in the layout
//! the `s3` backend reads (`storage/s3/keys.rs`): the object under `files/`, its
//! manifest under `manifests/` (chunk digests computed while the file is read, the
//! file's modification time, the ETag of the stored object), and a `dirs/` marker for
//! each empty directory.
//!
//! It only reads the data directory: nothing local is ever deleted or changed, so the
//! single host keeps working until the admin switches `backend = "s3"`. A re-run skips
//! what is already in the bucket (same size, and a manifest of the stored object whose
//! digest is the local file's), so an interrupted migration resumes where it stopped.
//! Uploads in progress are not migrated: they are listed so their users push again.
//!
//! Files are read once, chunk by chunk, in a blocking task that hashes each chunk and
//! hands it on through a small channel; small files are one PUT, larger ones a
//! multipart upload with a few parts in flight, so memory stays bounded by the part
//! size whatever the file's size.

use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use futures_util::StreamExt as _;
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};
use xfer_proto::{ChunkLayout, Digest};

use crate::Config;
use crate::accounts::UserName;
use crate::storage::RelPath;
use crate::storage::local::manifest::{Manifest, Stamp};
use crate::storage::local::partial::PartialMeta;
use crate::storage::s3::client::{connect, get_record, put_record};
use crate::storage::s3::keys::{Area, Keys};
use crate::storage::s3::records::{FileManifest, bare_etag, part_chunks_for};

/// What `xferd migrate` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Only this user's files.
    pub user: Option<String>,
    /// List what would be copied; write nothing.
    pub dry_run: bool,
}

/// What the bucket holds where a file would be copied.
enum Stored {
    /// Nothing.
    Absent,
    /// An object a migration put there, with its digest if its manifest still matches.
    Migrated(Option<Digest>),
    /// An object a migration did not put there (uploaded through the bucket): left alone.
    Other,
}

/// What a migration did (or, for a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Files copied.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Empty directories created as markers.
    pub dirs: u64,
    /// Files and directories already in the bucket.
    pub skipped: u64,
    /// Uploads in progress, not migrated.
    pub partials: u64,
    /// Entries that cannot be named in the bucket (not UTF-8, reserved, not a regular
    /// file or directory), not migrated.
    pub unnamed: u64,
}

/// Files copied at once; each holds at most [`PARTS_IN_FLIGHT`] parts and a few chunks.
const FILES_AT_ONCE: usize = 4;
/// Parts of one multipart upload sent at once.
const PARTS_IN_FLIGHT: usize = 2;
/// Chunks read ahead of the upload, per file.
const READ_AHEAD: usize = 4;

/// Prints a line on stdout, ignoring a closed stdout (as `main.rs` does).
fn say(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// Runs the migration of `config`'s data directory into its `[storage.s3]` bucket.
///
/// # Errors
/// `[storage.s3]` not configured or unreachable, a data directory that cannot be read,
/// or the first file that cannot be copied (named, with what to do).
pub fn migrate(config: &Config, source: &str, options: &Options) -> anyhow::Result<Summary> {
    let s3 = &config.storage.s3;
    let mut missing = Vec::new();
    if s3.endpoint.trim().is_empty() {
        missing.push("endpoint");
    }
    if s3.bucket.trim().is_empty() {
        missing.push("bucket");
    }
    if !missing.is_empty() {
        bail!(
            "the config ({source}) names no bucket to migrate into: set {} in [storage.s3] (and region, prefix, credentials_file as for backend = \"s3\"; README, \"Moving a single host into a bucket\"), keep backend = \"local\" until the migration is done",
            missing
                .iter()
                .map(|k| format!("storage.s3.{k}"))
                .collect::<Vec<_>>()
                .join(" and ")
        );
    }
    config.validate_s3().map_err(|e| anyhow::anyhow!("{e}"))?;
    let homes = homes(config, options.user.as_deref())?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let store = connect(s3, config.s3_credentials_file().as_deref())?;
        let keys = Keys::new(&s3.prefix);
        crate::storage::s3::probe(&store, &keys, s3).await?;
        let run = Run {
            store,
            keys,
            dry_run: options.dry_run,
            files: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        };
        let start = Instant::now();
        let mut summary = Summary::default();
        for (user, home) in &homes {
            run.user(user, home, &mut summary).await?;
        }
        summary.files = run.files.load(Ordering::Relaxed);
        summary.bytes = run.bytes.load(Ordering::Relaxed);
        summary.skipped += run.skipped.load(Ordering::Relaxed);
        let secs = start.elapsed().as_secs_f64();
        say(&summary.line(options.dry_run, secs, &s3.bucket));
        Ok(summary)
    })
}

impl Summary {
    /// The one-line summary printed at the end.
    pub fn line(&self, dry_run: bool, secs: f64, bucket: &str) -> String {
        let plural =
            |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let files = plural(self.files, "file", "files");
        let dirs = plural(self.dirs, "empty directory", "empty directories");
        let partials = plural(self.partials, "upload", "uploads");
        let mut tail = String::new();
        if self.unnamed > 0 {
            tail = format!(
                ", {} not migrated (not a name xferd serves)",
                plural(self.unnamed, "entry", "entries")
            );
        }
        if dry_run {
            format!(
                "dry run: would copy {files} ({} bytes) and {dirs} to bucket `{bucket}`, skip {} already there; {partials} in progress not migrated{tail}; nothing was written",
                self.bytes, self.skipped
            )
        } else {
            let mbps = if secs > 0.0 {
                self.bytes as f64 / secs / 1e6
            } else {
                0.0
            };
            format!(
                "migrated {files} ({} bytes) and {dirs} to bucket `{bucket}`, skipped {} already there, {partials} in progress not migrated{tail}; {secs:.1} s, {mbps:.1} MB/s",
                self.bytes, self.skipped
            )
        }
    }
}

/// The homes to migrate: `(name, <data_dir>/users/<name>)`, by name.
fn homes(config: &Config, only: Option<&str>) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let users = config.users_dir();
    if let Some(name) = only {
        let name = name.parse::<UserName>()?;
        let home = users.join(name.as_str());
        if !home.is_dir() {
            bail!(
                "{name} has no home in {}: nothing to migrate",
                users.display()
            );
        }
        return Ok(vec![(name.as_str().to_owned(), home)]);
    }
    let entries = match std::fs::read_dir(&users) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!(
                "{} does not exist: is data_dir the single host's data directory?",
                users.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("listing {}", users.display())),
    };
    let mut homes = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", users.display()))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.parse::<UserName>().is_ok() && entry.path().is_dir() {
            homes.push((name, entry.path()));
        }
    }
    homes.sort();
    Ok(homes)
}

/// One migration's connection and counters.
struct Run {
    store: Arc<AmazonS3>,
    keys: Keys,
    dry_run: bool,
    files: AtomicU64,
    bytes: AtomicU64,
    skipped: AtomicU64,
}

/// A committed file to copy.
struct Job {
    rel: RelPath,
    path: PathBuf,
    size: u64,
    stamp: Stamp,
}

/// What the walk of a home found.
#[derive(Default)]
struct Found {
    files: Vec<Job>,
    empty_dirs: Vec<RelPath>,
}

impl Run {
    async fn user(&self, user: &str, home: &FsPath, summary: &mut Summary) -> anyhow::Result<()> {
        for path in partials(home) {
            say(&format!(
                "not migrated: {user}/{path}: an upload in progress ({user} pushes it again after the move)"
            ));
            summary.partials += 1;
        }
        let files_dir = home.join("files");
        let mut found = Found::default();
        if files_dir.is_dir() {
            walk(
                &files_dir,
                &RelPath::home(),
                &mut found,
                &mut summary.unnamed,
            )?;
        }
        let manifests = cap_std::fs::Dir::open_ambient_dir(
            home.join("manifests"),
            cap_std::ambient_authority(),
        )
        .ok();
        let manifests = manifests.as_ref();
        let mut copies = futures_util::stream::iter(found.files)
            .map(|job| async move {
                let r = self.file(user, &job, manifests).await;
                (job, r)
            })
            .buffer_unordered(FILES_AT_ONCE);
        while let Some((job, r)) = copies.next().await {
            r.with_context(|| {
                format!(
                    "copying {user}/{} ({}) into the bucket failed; nothing local was changed: fix the cause and run `xferd migrate` again (what was copied is skipped)",
                    job.rel,
                    job.path.display()
                )
            })?;
        }
        drop(copies);
        for dir in found.empty_dirs {
            let key = self.keys.at(user, Area::Dirs, &dir);
            if exists(&self.store, &key).await? {
                summary.skipped += 1;
            } else if self.dry_run {
                say(&format!("would create directory {user}/{dir}/"));
                summary.dirs += 1;
            } else {
                self.store
                    .put(&key, PutPayload::from(Bytes::new()))
                    .await
                    .with_context(|| {
                        format!(
                            "creating the directory {user}/{dir}/ in the bucket failed; run `xferd migrate` again"
                        )
                    })?;
                say(&format!("created directory {user}/{dir}/"));
                summary.dirs += 1;
            }
        }
        Ok(())
    }

    /// Copies one file unless the bucket already holds it.
    async fn file(
        &self,
        user: &str,
        job: &Job,
        manifests: Option<&cap_std::fs::Dir>,
    ) -> anyhow::Result<()> {
        let key = self.keys.at(user, Area::Files, &job.rel);
        let mkey = self.keys.at(user, Area::Manifests, &job.rel);
        match self.stored_digest(&key, &mkey, job.size).await? {
            Stored::Absent | Stored::Migrated(None) => {}
            Stored::Migrated(Some(stored)) => {
                let local = match manifests.and_then(|m| Manifest::load(m, job.stamp)) {
                    Some(m) => m.digest,
                    None => hash_file(job.path.clone(), job.size).await?,
                };
                if local == stored {
                    self.skipped.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
            }
            Stored::Other => {
                // Put there by a user through the bucket, not by a migration: newer than
                // the host's copy, never replaced.
                say(&format!(
                    "left alone: {user}/{}: the bucket holds a file there that was not migrated (uploaded since?); remove it from the bucket first to migrate the host's copy",
                    job.rel
                ));
                self.skipped.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        }
        if self.dry_run {
            say(&format!(
                "would copy {user}/{} ({} bytes)",
                job.rel, job.size
            ));
        } else {
            let started = Instant::now();
            self.upload(&key, &mkey, job).await?;
            let secs = started.elapsed().as_secs_f64();
            say(&format!(
                "copied {user}/{} ({} bytes, {secs:.1} s)",
                job.rel, job.size
            ));
        }
        self.files.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(job.size, Ordering::Relaxed);
        Ok(())
    }

    /// The digest of the object at `key` when it has `size` bytes and a manifest that
    /// belongs to it (same ETag and size).
    async fn stored_digest(&self, key: &Path, mkey: &Path, size: u64) -> anyhow::Result<Stored> {
        let meta = match self.store.head(key).await {
            Ok(m) => m,
            Err(object_store::Error::NotFound { .. }) => return Ok(Stored::Absent),
            Err(e) => return Err(e).context("checking the bucket"),
        };
        let m = get_record::<FileManifest>(&self.store, mkey)
            .await
            .map_err(|e| anyhow::anyhow!("reading a manifest in the bucket: {e}"))?;
        let Some(m) = m else {
            return Ok(Stored::Other);
        };
        if m.migrated.is_none() {
            return Ok(Stored::Other);
        }
        if !m.describes(&meta) || meta.size != size {
            return Ok(Stored::Migrated(None));
        }
        Ok(Stored::Migrated(m.digests().map(|(d, _)| d)))
    }

    /// Uploads the file, checks the stored object, then writes its manifest.
    async fn upload(&self, key: &Path, mkey: &Path, job: &Job) -> anyhow::Result<()> {
        let size = job.size;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(READ_AHEAD);
        let reader = tokio::task::spawn_blocking({
            let (path, stamp) = (job.path.clone(), job.stamp);
            move || read_chunks(&path, stamp, &tx)
        });
        let part = part_chunks_for(size) * crate::storage::CHUNK_SIZE;
        let put = if size <= part {
            let mut pieces = Vec::new();
            while let Some(b) = rx.recv().await {
                pieces.push(b);
            }
            let chunks = join_reader(reader).await?;
            let put = self
                .store
                .put(key, pieces.into_iter().collect::<PutPayload>())
                .await
                .context("storing the object")?;
            (put, chunks)
        } else {
            let upload = self
                .store
                .put_multipart(key)
                .await
                .context("starting a multipart upload")?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, part as usize);
            let mut failed = None;
            while let Some(b) = rx.recv().await {
                if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                    failed = Some(e);
                    break;
                }
                writer.put(b);
            }
            drop(rx);
            let read = join_reader(reader).await;
            match (failed, read) {
                (None, Ok(chunks)) => (
                    writer
                        .finish()
                        .await
                        .context("completing the multipart upload")?,
                    chunks,
                ),
                (Some(e), _) => {
                    let _ = writer.abort().await;
                    return Err(e).context("storing a part");
                }
                (None, Err(e)) => {
                    let _ = writer.abort().await;
                    return Err(e);
                }
            }
        };
        let (put, chunks) = put;
        // Verify: the object is there, whole, and the one just written.
        let meta = self
            .store
            .head(key)
            .await
            .context("checking the stored object")?;
        let etag = meta.e_tag.clone().unwrap_or_default();
        if meta.size != size {
            bail!(
                "the bucket holds {} bytes after the upload, not {size}",
                meta.size
            );
        }
        if let Some(put_etag) = &put.e_tag
            && bare_etag(put_etag) != bare_etag(&etag)
        {
            bail!("the bucket's object changed during the upload (ETag {etag}, not {put_etag})");
        }
        let mut manifest = FileManifest::new(size, etag, &chunks, job.stamp.modified_unix());
        manifest.migrated = Some(job.stamp.modified_unix());
        put_record(&self.store, mkey, &manifest)
            .await
            .map_err(|e| anyhow::anyhow!("writing the manifest: {e}"))?;
        Ok(())
    }
}

/// Whether `key` exists.
async fn exists(store: &AmazonS3, key: &Path) -> anyhow::Result<bool> {
    match store.head(key).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(e).context("checking the bucket"),
    }
}

async fn join_reader(
    reader: tokio::task::JoinHandle<anyhow::Result<Vec<Digest>>>,
) -> anyhow::Result<Vec<Digest>> {
    reader.await.context("the reading task failed")?
}

/// Reads the file chunk by chunk (the protocol's layout), hashing each chunk and sending
/// it on; returns the chunk digests. Fails when the file is not as `stamp` says, before
/// or after (it changed while it was copied).
fn read_chunks(
    path: &FsPath,
    stamp: Stamp,
    tx: &tokio::sync::mpsc::Sender<Bytes>,
) -> anyhow::Result<Vec<Digest>> {
    let changed = || {
        anyhow::anyhow!(
            "{} changed while it was copied (is xferd still running on it?); run `xferd migrate` again",
            path.display()
        )
    };
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let size = stamp.size;
    let layout = ChunkLayout::standard(size);
    let mut chunks = Vec::with_capacity(layout.count() as usize);
    for i in 0..layout.count() {
        let len = layout.chunk_len(i) as usize;
        let mut buf = vec![0u8; len];
        file.read_exact(&mut buf).map_err(|_| changed())?;
        let digest = Digest::of_chunk(&buf, layout.offset(i), size).ok_or_else(changed)?;
        chunks.push(digest);
        if tx.blocking_send(Bytes::from(buf)).is_err() {
            bail!("the upload stopped");
        }
    }
    let after = file
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?;
    if stamp_of(&after) != stamp {
        return Err(changed());
    }
    Ok(chunks)
}

/// The whole-file digest of a local file, read without keeping it.
async fn hash_file(path: PathBuf, size: u64) -> anyhow::Result<Digest> {
    tokio::task::spawn_blocking(move || {
        let file =
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        Manifest::compute(&file, size)
            .map(|m| m.digest)
            .map_err(|e| anyhow::anyhow!("hashing {}: {e}", path.display()))
    })
    .await
    .context("the hashing task failed")?
}

fn stamp_of(meta: &std::fs::Metadata) -> Stamp {
    Stamp {
        ino: meta.ino(),
        size: meta.len(),
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
    }
}

/// Collects the regular files and empty directories under `dir` (at `rel` in the
/// home). Entries that cannot be named as xferd names them are reported and counted.
fn walk(dir: &FsPath, rel: &RelPath, found: &mut Found, unnamed: &mut u64) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("listing {}", dir.display()))?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    if entries.is_empty() && !rel.is_home() {
        found.empty_dirs.push(rel.clone());
        return Ok(());
    }
    for entry in entries {
        let path = entry.path();
        let child = entry.file_name().to_str().and_then(|n| rel.join(n));
        let meta = std::fs::symlink_metadata(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let Some(child) = child.filter(|_| meta.is_file() || meta.is_dir()) else {
            say(&format!(
                "not migrated: {} (not a regular file or directory, or not a name xferd serves)",
                path.display()
            ));
            *unnamed += 1;
            continue;
        };
        if meta.is_dir() {
            walk(&path, &child, found, unnamed)?;
        } else {
            found.files.push(Job {
                rel: child,
                path,
                size: meta.len(),
                stamp: stamp_of(&meta),
            });
        }
    }
    Ok(())
}

/// The destinations of `home`'s uploads in progress (their `.meta` files, read only).
fn partials(home: &FsPath) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(home.join("partials")) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "meta"))
        .filter(|e| e.path().with_extension("part").exists())
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice::<PartialMeta>(&b).ok())
        .map(|m| m.path)
        .collect();
    out.sort();
    out
}
