//! Downloads by ranged GET. Each chunk is sent with the digest its manifest records
//! (not recomputed), so the receiver catches data that changed in the store; every
//! range is asked for with `If-Match` on the object's ETag, so an object replaced while
//! it is read fails the download instead of mixing two files.
//!
//! Chunks are fetched a window ahead ([`READ_AHEAD`] ranges of [`SPAN`] chunks in
//! flight), so a download is not paced by one request's round trip per MiB.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared as SharedFuture};
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore};
use xfer_proto::Digest;

use super::Shared;
use super::client::os_err;
use crate::storage::{CHUNK_SIZE, Download, RelPath, StorageError, chunk_count};

/// Chunks per ranged GET.
const SPAN: u64 = 4;
/// Ranges fetched ahead of the one being read.
const READ_AHEAD: u64 = 3;

type Fetch = SharedFuture<BoxFuture<'static, Result<Bytes, Arc<StorageError>>>>;

pub(super) struct S3Download {
    store: Arc<AmazonS3>,
    location: Path,
    etag: Option<String>,
    size: u64,
    digest: Digest,
    modified_unix: u64,
    chunks: Vec<Digest>,
    /// Ranges requested and not yet consumed, by span index.
    fetches: Mutex<HashMap<u64, Fetch>>,
}

impl S3Download {
    pub async fn open(
        shared: &Shared,
        user: &str,
        path: &RelPath,
    ) -> Result<S3Download, StorageError> {
        let Some(meta) = shared.head_file(user, path).await? else {
            return Err(if shared.is_dir(user, path).await? {
                StorageError::Conflict("that is a directory; use -r to download it".into())
            } else {
                StorageError::NotFound
            });
        };
        let (m, digest, chunks) = shared.manifest_of(user, path, &meta).await?;
        Ok(S3Download {
            store: shared.store.clone(),
            location: meta.location.clone(),
            etag: meta.e_tag.clone(),
            size: meta.size,
            digest,
            modified_unix: m.modified_unix,
            chunks,
            fetches: Mutex::new(HashMap::new()),
        })
    }

    fn spans(&self) -> u64 {
        chunk_count(self.size).div_ceil(SPAN)
    }

    /// The fetch of span `s`, made if it is not in flight; `true` when made now.
    fn fetch(&self, fetches: &mut HashMap<u64, Fetch>, s: u64) -> (Fetch, bool) {
        if let Some(f) = fetches.get(&s) {
            return (f.clone(), false);
        }
        let f = fetches
            .entry(s)
            .or_insert_with(|| {
                let start = s * SPAN * CHUNK_SIZE;
                let end = ((s + 1) * SPAN * CHUNK_SIZE).min(self.size);
                let store = self.store.clone();
                let location = self.location.clone();
                let opts = GetOptions {
                    if_match: self.etag.clone(),
                    range: Some((start..end).into()),
                    ..GetOptions::default()
                };
                async move {
                    let got = store
                        .get_opts(&location, opts)
                        .await
                        .map_err(|e| Arc::new(os_err("reading a file")(e)))?;
                    got.bytes()
                        .await
                        .map_err(|e| Arc::new(os_err("reading a file")(e)))
                }
                .boxed()
                .shared()
            })
            .clone();
        (f, true)
    }
}

#[async_trait]
impl Download for S3Download {
    fn size(&self) -> u64 {
        self.size
    }

    fn digest(&self) -> Digest {
        self.digest
    }

    fn modified_unix(&self) -> u64 {
        self.modified_unix
    }

    fn chunk_digests(&self, first: u64, count: u64) -> Vec<Digest> {
        let end = first.saturating_add(count).min(self.chunks.len() as u64);
        self.chunks[first.min(end) as usize..end as usize].to_vec()
    }

    async fn read_chunk(&self, index: u64) -> Result<(Digest, Bytes), StorageError> {
        let Some(&digest) = self.chunks.get(index as usize) else {
            return Err(StorageError::BadRequest(format!(
                "chunk {index} is past the end of the file"
            )));
        };
        let span = index / SPAN;
        let fetch = {
            let mut fetches = self.fetches.lock().unwrap_or_else(|p| p.into_inner());
            // Only the window around this span is kept: spans behind it are done with, and
            // a reader jumping about does not pile up fetched spans.
            fetches.retain(|&s, _| s + 1 >= span && s <= span + READ_AHEAD);
            for ahead in span + 1..(span + 1 + READ_AHEAD).min(self.spans()) {
                // A shared future runs only when polled: a task drives each new one.
                if let (f, true) = self.fetch(&mut fetches, ahead) {
                    tokio::spawn(f);
                }
            }
            self.fetch(&mut fetches, span).0
        };
        let bytes = fetch.await.map_err(|e| match &*e {
            StorageError::NotFound => StorageError::NotFound,
            StorageError::Conflict(m) => StorageError::Conflict(m.clone()),
            _ => StorageError::Unavailable("reading a file"),
        })?;
        let at = ((index % SPAN) * CHUNK_SIZE) as usize;
        let len = crate::storage::chunk_len(self.size, index) as usize;
        if bytes.len() < at + len {
            return Err(StorageError::Conflict(
                "the file changed on the server while it was read; try again".into(),
            ));
        }
        Ok((digest, bytes.slice(at..at + len)))
    }
}
