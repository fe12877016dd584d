//! [`S3Storage`]: users' files in an S3-compatible bucket (Garage, MinIO, Ceph RGW,
//! AWS), through the `object_store` crate. Several xferd nodes may share one bucket:
//! nothing a node needs from another lives anywhere but the bucket.
//!
//! - `keys.rs`: where things live (`users/<name>/{files,dirs,manifests,partials}/…`);
//! - `records.rs`: the JSON manifest of a committed file and the state of an upload;
//! - `client.rs`: the client, its credentials, and its errors as peers see them;
//! - `upload.rs`: resumable verified uploads on multipart uploads;
//! - `download.rs`: downloads by ranged GET;
//! - `namespace.rs`: listing, mkdir, remove, rename;
//! - `usage.rs`: bytes and unfinished uploads per user, without listing on every upload.
//!
//! An upload is a multipart upload straight to the final key: chunks are verified on
//! arrival, grouped into parts of 8 MiB, and each stored part is recorded (with the
//! digests of its chunks) in `partials/<path>`, so any node can resume it. The commit
//! checks the whole-file BLAKE3 from the chunk digests (no re-read), then completes the
//! multipart upload: the object appears whole or not at all.

pub(crate) mod client;
mod download;
pub(crate) mod keys;
mod namespace;
pub(crate) mod records;
mod upload;
mod usage;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt as _;
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::{GetOptions, ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};
use tracing::{info, warn};
use xfer_proto::Digest;

use self::client::{delete, get_record, os_err, put_record};
use self::keys::{Area, Keys};
use self::records::{FileManifest, PartialRecord};
use self::upload::S3Upload;
use crate::config::{S3Config, StorageConfig};
use crate::storage::{
    CHUNK_SIZE, Download, ListPage, PathError, PutBegun, PutFileDone, PutRequest, RelPath,
    Settings, Storage, StorageError, Usage, WholeFile, WholeRead, chunk_count, chunk_len,
    partial_bucket,
};

/// Users' files in a bucket. Cheap to share.
pub struct S3Storage {
    shared: Arc<Shared>,
}

/// What every operation and open upload shares.
struct Shared {
    store: Arc<AmazonS3>,
    keys: Keys,
    settings: RwLock<Arc<Settings>>,
    usage: usage::UsageCache,
    /// Per-user lock taken by admissions and mutations on this node, so that checks and
    /// the changes they allow do not interleave.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Uploads open on this node, by user and destination.
    live: Mutex<HashMap<(String, String), Weak<S3Upload>>>,
}

/// What is at a destination.
enum Dest {
    Free,
    /// A file, replaced (force): its size.
    Replaces(u64),
    /// A file, not replaced.
    Taken(ObjectMeta),
}

impl S3Storage {
    /// Connects to the bucket of `[storage.s3]` and checks that it answers (a listing of
    /// the deployment's prefix), so a wrong endpoint, bucket or key pair stops the
    /// daemon at start with one line naming it.
    ///
    /// # Errors
    /// Missing or unreadable credentials, or a bucket that cannot be listed.
    pub async fn open(
        s3: &S3Config,
        credentials_file: Option<&std::path::Path>,
        config: StorageConfig,
    ) -> anyhow::Result<S3Storage> {
        let store = client::connect(s3, credentials_file)?;
        let keys = Keys::new(&s3.prefix);
        probe(&store, &keys, s3).await?;
        info!(endpoint = %s3.endpoint, bucket = %s3.bucket, prefix = %s3.prefix, "storing files in an S3 bucket");
        Ok(S3Storage {
            shared: Arc::new(Shared {
                store,
                keys,
                settings: RwLock::new(Settings::new(config)),
                usage: usage::UsageCache::default(),
                locks: Mutex::new(HashMap::new()),
                live: Mutex::new(HashMap::new()),
            }),
        })
    }
}

/// Lists the deployment's prefix once, so that a wrong endpoint, bucket or key pair is
/// reported in one line naming it.
pub(crate) async fn probe(store: &AmazonS3, keys: &Keys, s3: &S3Config) -> anyhow::Result<()> {
    if let Err(e) = store.list_with_delimiter(Some(&keys.users())).await {
        anyhow::bail!(
            "the S3 bucket `{}` at {} cannot be listed ({e}); check [storage.s3] endpoint, bucket, region and the key's permissions",
            s3.bucket,
            s3.endpoint
        );
    }
    Ok(())
}

impl Shared {
    fn settings(&self) -> Arc<Settings> {
        self.settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn key(&self, user: &str, area: Area, rel: &RelPath) -> Path {
        self.keys.at(user, area, rel)
    }

    /// Refuses a path to be created whose keys would not fit the bucket.
    fn check_fits(&self, user: &str, rel: &RelPath) -> Result<(), StorageError> {
        if self.keys.fits(user, rel) {
            Ok(())
        } else {
            Err(PathError::TooLongForBucket.into())
        }
    }

    /// This node's lock for `user`'s admissions and mutations.
    async fn lock_user(&self, user: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks
                .entry(user.to_owned())
                .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
                .clone()
        };
        lock.lock_owned().await
    }

    fn live_upload(&self, user: &str, path: &str) -> Option<Arc<S3Upload>> {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.get(&(user.to_owned(), path.to_owned()))?.upgrade()
    }

    fn register(&self, user: &str, upload: &Arc<S3Upload>) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.retain(|_, w| w.strong_count() > 0);
        live.insert(
            (user.to_owned(), upload.path.as_str().to_owned()),
            Arc::downgrade(upload),
        );
    }

    /// The committed file at `rel`, if there is one.
    async fn head_file(
        &self,
        user: &str,
        rel: &RelPath,
    ) -> Result<Option<ObjectMeta>, StorageError> {
        if rel.is_home() {
            return Ok(None);
        }
        match self.store.head(&self.key(user, Area::Files, rel)).await {
            Ok(m) => Ok(Some(m)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(os_err("checking a file")(e)),
        }
    }

    /// Whether anything is stored under `prefix` (one listing request).
    async fn any_under(&self, prefix: &Path) -> Result<bool, StorageError> {
        match self.store.list(Some(prefix)).next().await {
            None => Ok(false),
            Some(Ok(_)) => Ok(true),
            Some(Err(e)) => Err(os_err("listing")(e)),
        }
    }

    /// Whether `rel` is a directory: the home, a marker, or a prefix of anything stored.
    async fn is_dir(&self, user: &str, rel: &RelPath) -> Result<bool, StorageError> {
        if rel.is_home() {
            return Ok(true);
        }
        match self.store.head(&self.key(user, Area::Dirs, rel)).await {
            Ok(_) => return Ok(true),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(os_err("checking a directory")(e)),
        }
        for area in [Area::Files, Area::Dirs, Area::Partials] {
            if self.any_under(&self.key(user, area, rel)).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Refuses a destination whose parent path runs through a file.
    async fn check_parents(&self, user: &str, dest: &RelPath) -> Result<(), StorageError> {
        let mut ancestor = dest.parent();
        let mut checks = Vec::new();
        while let Some(a) = ancestor.filter(|a| !a.is_home()) {
            ancestor = a.parent();
            checks.push(a);
        }
        let found =
            futures_util::future::join_all(checks.iter().map(|a| self.head_file(user, a))).await;
        for (a, f) in checks.iter().zip(found) {
            if f?.is_some() {
                return Err(StorageError::Conflict(format!(
                    "`{a}` is a file, not a directory"
                )));
            }
        }
        Ok(())
    }

    /// What is at `dest`, for an upload or a move there.
    async fn destination(
        &self,
        user: &str,
        dest: &RelPath,
        force: bool,
    ) -> Result<Dest, StorageError> {
        self.check_parents(user, dest).await?;
        if let Some(m) = self.head_file(user, dest).await? {
            return Ok(if force {
                Dest::Replaces(m.size)
            } else {
                Dest::Taken(m)
            });
        }
        if self.is_dir(user, dest).await? {
            return Err(StorageError::Conflict(
                "a directory exists at the destination".into(),
            ));
        }
        Ok(Dest::Free)
    }

    /// The manifest of the committed file `meta` (at `rel`), computed from the object
    /// when it has none or an outdated one (a file put there by `xferd migrate` or
    /// another tool, or a crash between a commit and its manifest).
    async fn manifest_of(
        &self,
        user: &str,
        rel: &RelPath,
        meta: &ObjectMeta,
    ) -> Result<(FileManifest, Digest, Vec<Digest>), StorageError> {
        let mkey = self.key(user, Area::Manifests, rel);
        let etag = meta.e_tag.clone().unwrap_or_default();
        if let Some(m) = get_record::<FileManifest>(&self.store, &mkey).await?
            && m.describes(meta)
            && let Some((digest, chunks)) = m.digests()
        {
            return Ok((m, digest, chunks));
        }
        let chunks = self.hash_object(&meta.location, meta.size, &etag).await?;
        let m = FileManifest::new(
            meta.size,
            etag,
            &chunks,
            meta.last_modified.timestamp().max(0) as u64,
        );
        put_record(&self.store, &mkey, &m).await?;
        let digest = Digest::of_chunks(&chunks);
        Ok((m, digest, chunks))
    }

    /// Reads an object and hashes it chunk by chunk (the object must keep `etag`).
    async fn hash_object(
        &self,
        key: &Path,
        size: u64,
        etag: &str,
    ) -> Result<Vec<Digest>, StorageError> {
        let opts = GetOptions {
            if_match: (!etag.is_empty()).then(|| etag.to_owned()),
            ..GetOptions::default()
        };
        let got = self
            .store
            .get_opts(key, opts)
            .await
            .map_err(os_err("reading a file"))?;
        let mut stream = got.into_stream();
        let mut chunks = Vec::with_capacity(chunk_count(size) as usize);
        let mut buf = bytes::BytesMut::new();
        let mut offset = 0u64;
        let changed = || {
            StorageError::Conflict(
                "the file changed on the server while it was read; try again".into(),
            )
        };
        while let Some(piece) = stream.next().await {
            buf.extend_from_slice(&piece.map_err(os_err("reading a file"))?);
            loop {
                let want = chunk_len(size, offset / CHUNK_SIZE) as usize;
                if want == 0 || buf.len() < want {
                    break;
                }
                let chunk = buf.split_to(want).freeze();
                let at = offset;
                let d = tokio::task::spawn_blocking(move || Digest::of_chunk(&chunk, at, size))
                    .await
                    .map_err(|_| StorageError::Unavailable("hashing a file"))?
                    .ok_or_else(changed)?;
                chunks.push(d);
                offset += want as u64;
            }
        }
        if offset != size || !buf.is_empty() {
            return Err(changed());
        }
        Ok(chunks)
    }
}

#[async_trait]
impl Storage for S3Storage {
    fn reconfigure(&self, config: StorageConfig) {
        *self
            .shared
            .settings
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Settings::new(config);
    }

    async fn usage(&self, user: &str) -> Result<Usage, StorageError> {
        check_user(user)?;
        let used = self
            .shared
            .usage
            .get(&self.shared, user)
            .await?
            .used_bytes();
        let limit = self.shared.settings().config.quota_bytes;
        Ok(Usage {
            used_bytes: used,
            limit_bytes: (limit > 0).then_some(limit),
        })
    }

    async fn list(
        &self,
        user: &str,
        path: &RelPath,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StorageError> {
        check_user(user)?;
        namespace::list(&self.shared, user, path, after, limit).await
    }

    async fn mkdir(&self, user: &str, path: &RelPath, parents: bool) -> Result<(), StorageError> {
        check_user(user)?;
        namespace::mkdir(&self.shared, user, path, parents).await
    }

    async fn remove(
        &self,
        user: &str,
        path: &RelPath,
        recursive: bool,
        partial: bool,
    ) -> Result<(), StorageError> {
        check_user(user)?;
        namespace::remove(&self.shared, user, path, recursive, partial).await
    }

    async fn rename(
        &self,
        user: &str,
        from: &RelPath,
        to: &RelPath,
        force: bool,
    ) -> Result<(), StorageError> {
        check_user(user)?;
        namespace::rename(&self.shared, user, from, to, force).await
    }

    async fn set_modified(
        &self,
        user: &str,
        path: &RelPath,
        modified_unix: u64,
    ) -> Result<(), StorageError> {
        check_user(user)?;
        let shared = &self.shared;
        let meta = shared
            .head_file(user, path)
            .await?
            .ok_or(StorageError::NotFound)?;
        let (mut m, _, _) = shared.manifest_of(user, path, &meta).await?;
        m.modified_unix = modified_unix;
        put_record(&shared.store, &shared.key(user, Area::Manifests, path), &m).await
    }

    async fn begin_upload(
        &self,
        user: &str,
        request: PutRequest,
    ) -> Result<PutBegun, StorageError> {
        check_user(user)?;
        upload::begin(&self.shared, user, request).await
    }

    async fn open_download(
        &self,
        user: &str,
        path: &RelPath,
    ) -> Result<Arc<dyn Download>, StorageError> {
        check_user(user)?;
        Ok(Arc::new(
            download::S3Download::open(&self.shared, user, path).await?,
        ))
    }

    async fn put_files(
        &self,
        user: &str,
        files: Vec<WholeFile>,
    ) -> Vec<Result<PutFileDone, StorageError>> {
        if let Err(e) = check_user(user) {
            return files
                .iter()
                .map(|_| Err(StorageError::BadRequest(e.to_string())))
                .collect();
        }
        let shared = &self.shared;
        futures_util::stream::iter(files)
            .map(|f| put_whole(shared, user, f))
            .buffered(16)
            .collect()
            .await
    }

    async fn read_whole(&self, user: &str, path: &RelPath) -> Result<WholeRead, StorageError> {
        check_user(user)?;
        let shared = &self.shared;
        let meta = shared
            .head_file(user, path)
            .await?
            .ok_or_else(|| not_a_file(shared, user, path))?;
        if meta.size > CHUNK_SIZE {
            return Err(StorageError::TooLarge {
                size: meta.size,
                max: CHUNK_SIZE,
            });
        }
        let (m, digest, _) = shared.manifest_of(user, path, &meta).await?;
        let opts = GetOptions {
            if_match: meta.e_tag.clone(),
            ..GetOptions::default()
        };
        let data = shared
            .store
            .get_opts(&meta.location, opts)
            .await
            .map_err(os_err("reading a file"))?
            .bytes()
            .await
            .map_err(os_err("reading a file"))?;
        Ok(WholeRead {
            digest,
            modified_unix: m.modified_unix,
            data,
        })
    }

    async fn expire_partials(&self, now_unix: u64) -> Result<usize, StorageError> {
        upload::expire(&self.shared, now_unix).await
    }
}

/// A path that is not a committed file: a directory is a conflict, nothing is not found.
fn not_a_file(_shared: &Shared, _user: &str, _path: &RelPath) -> StorageError {
    StorageError::NotFound
}

fn check_user(user: &str) -> Result<(), StorageError> {
    if user.parse::<crate::accounts::UserName>().is_err() {
        return Err(StorageError::BadRequest("invalid user name".into()));
    }
    Ok(())
}

/// One whole small file of a batch: admitted under the user's lock, then written (one
/// PUT: it appears whole), then its manifest.
async fn put_whole(
    shared: &Shared,
    user: &str,
    file: WholeFile,
) -> Result<PutFileDone, StorageError> {
    let WholeFile {
        path,
        force,
        modified_unix,
        digest,
        data,
    } = file;
    if path.is_home() {
        return Err(PathError::Home.into());
    }
    shared.check_fits(user, &path)?;
    let size = data.len() as u64;
    if size > CHUNK_SIZE {
        return Err(StorageError::TooLarge {
            size,
            max: CHUNK_SIZE,
        });
    }
    let settings = shared.settings();
    let max = settings.config.max_file_bytes;
    if max > 0 && size > max {
        return Err(StorageError::TooLarge { size, max });
    }
    let actual = Digest::of(&data);
    if actual != digest {
        return Err(StorageError::ChecksumMismatch(format!(
            "`{path}`: the server received data hashing to {actual}, the client announced {digest}"
        )));
    }
    let lock = shared.lock_user(user).await;
    let replaced = match shared.destination(user, &path, force).await? {
        Dest::Free => 0,
        Dest::Replaces(n) => n,
        Dest::Taken(meta) => {
            let (_, existing, _) = shared.manifest_of(user, &path, &meta).await?;
            if existing == digest
                && let Some(t) = modified_unix
            {
                let mut m = shared.manifest_of(user, &path, &meta).await?.0;
                m.modified_unix = t;
                put_record(&shared.store, &shared.key(user, Area::Manifests, &path), &m).await?;
            }
            return Ok(PutFileDone::Exists {
                size: meta.size,
                digest: Some(existing),
            });
        }
    };
    settings
        .policy
        .check(&path, &data[..data.len().min(xfer_proto::SNIFF_LEN)])?;
    let usage = shared.usage.get(shared, user).await?;
    let quota = settings.config.quota_bytes;
    if quota > 0 {
        let used = usage.used_bytes().saturating_sub(replaced);
        if used.saturating_add(size) > quota {
            return Err(StorageError::QuotaExceeded {
                used,
                limit: quota,
                size,
            });
        }
    }
    let key = shared.key(user, Area::Files, &path);
    let put = shared
        .store
        .put(&key, PutPayload::from(data))
        .await
        .map_err(os_err("storing a file"))?;
    shared.usage.add_files(user, size as i64 - replaced as i64);
    drop(lock);
    let chunks = if size == 0 { Vec::new() } else { vec![digest] };
    let m = FileManifest::new(
        size,
        put.e_tag.unwrap_or_default(),
        &chunks,
        modified_unix.unwrap_or_else(crate::now_unix),
    );
    put_record(&shared.store, &shared.key(user, Area::Manifests, &path), &m).await?;
    Ok(PutFileDone::Committed(crate::storage::Committed {
        size,
        digest,
    }))
}

/// Writes an empty object (a directory marker).
async fn put_marker(shared: &Shared, key: &Path) -> Result<(), StorageError> {
    shared
        .store
        .put(key, PutPayload::from(Bytes::new()))
        .await
        .map_err(os_err("creating a directory"))?;
    Ok(())
}

/// Deletes every key under `prefix`; returns the bytes of what went.
async fn delete_all(shared: &Shared, prefix: &Path) -> Result<u64, StorageError> {
    let metas: Vec<ObjectMeta> = shared
        .store
        .list(Some(prefix))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(os_err("listing"))?;
    let bytes = metas.iter().map(|m| m.size).sum();
    let results: Vec<_> = futures_util::stream::iter(metas)
        .map(|m| async move { delete(&shared.store, &m.location).await })
        .buffer_unordered(16)
        .collect()
        .await;
    for r in results {
        r?;
    }
    Ok(bytes)
}

/// Logs and drops the error of a clean-up step that does not change the answer.
fn best_effort(what: &'static str, r: Result<(), StorageError>) {
    if let Err(e) = r {
        warn!(error = %e, "{what} failed; it is retried by the next sweep");
    }
}

/// `user`'s uploads in progress, counted per share of `max_partials_per_user`.
fn partials_in_bucket<'a>(partials: impl Iterator<Item = &'a String>, path: &str) -> usize {
    let bucket = partial_bucket(path);
    partials
        .filter(|p| p.as_str() != path && partial_bucket(p) == bucket)
        .count()
}

/// Reads the state of the upload to `rel`, if one is recorded.
async fn load_partial(
    shared: &Shared,
    user: &str,
    rel: &RelPath,
) -> Result<Option<PartialRecord>, StorageError> {
    let r =
        get_record::<PartialRecord>(&shared.store, &shared.key(user, Area::Partials, rel)).await?;
    Ok(r.filter(|r| r.is_sound() && r.path == rel.as_str()))
}
