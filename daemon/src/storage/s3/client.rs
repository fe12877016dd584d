//! The connection to the bucket: building the `object_store` client from
//! `[storage.s3]`, its credentials, and how its errors reach peers.

use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tracing::warn;

use super::records::MAX_RECORD;
use crate::config::S3Config;
use crate::storage::StorageError;

/// `credentials_file`: the S3 key pair.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    access_key_id: String,
    secret_access_key: String,
}

/// Reads the key pair from `file` (refused when group or others may read it) or, without
/// one, from `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
fn credentials(file: Option<&FsPath>) -> anyhow::Result<Credentials> {
    let Some(file) = file else {
        let id = std::env::var("AWS_ACCESS_KEY_ID").ok();
        let secret = std::env::var("AWS_SECRET_ACCESS_KEY").ok();
        return match (id, secret) {
            (Some(access_key_id), Some(secret_access_key)) => Ok(Credentials {
                access_key_id,
                secret_access_key,
            }),
            _ => bail!(
                "[storage.s3] has no credentials: set credentials_file, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in xferd's environment"
            ),
        };
    };
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(file)
        .with_context(|| format!("reading [storage.s3] credentials_file `{}`", file.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "[storage.s3] credentials_file `{}` may be read by group or others; run `chmod 600 {}`",
            file.display(),
            file.display()
        );
    }
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading [storage.s3] credentials_file `{}`", file.display()))?;
    // The parser's message could quote a line of the file, secret included: say only where.
    toml::from_str(&text).map_err(|e| {
        let at = e
            .span()
            .map(|s| format!(" near byte {}", s.start))
            .unwrap_or_default();
        anyhow::anyhow!(
            "[storage.s3] credentials_file `{}` is not `access_key_id = \"…\"` and `secret_access_key = \"…\"`{at}",
            file.display()
        )
    })
}

/// The client for `[storage.s3]`. Requests time out and are retried briefly, so that a
/// store that is down is reported in seconds, not minutes.
pub(crate) fn connect(
    config: &S3Config,
    credentials_file: Option<&FsPath>,
) -> anyhow::Result<Arc<AmazonS3>> {
    let creds = credentials(credentials_file)?;
    let endpoint = config.endpoint.trim_end_matches('/');
    let options = ClientOptions::new()
        .with_allow_http(endpoint.starts_with("http://"))
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(120));
    let retry = RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: 3,
        retry_timeout: Duration::from_secs(15),
    };
    let store = AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_bucket_name(&config.bucket)
        .with_region(&config.region)
        .with_access_key_id(creds.access_key_id)
        .with_secret_access_key(creds.secret_access_key)
        .with_virtual_hosted_style_request(!config.path_style)
        .with_client_options(options)
        .with_retry(retry)
        .build()
        .context("configuring the [storage.s3] client")?;
    Ok(Arc::new(store))
}

/// `map_err` for object-store calls: what a peer may know of the failure. Missing
/// objects and failed preconditions are ordinary answers; anything else means the store
/// is unreachable or failing, which is logged with its detail and reported as
/// [`StorageError::Unavailable`].
pub(super) fn os_err(context: &'static str) -> impl FnOnce(object_store::Error) -> StorageError {
    move |e| match e {
        object_store::Error::NotFound { .. } => {
            tracing::debug!(context, error = %e, "not found in the object store");
            StorageError::NotFound
        }
        object_store::Error::Precondition { .. } | object_store::Error::NotModified { .. } => {
            StorageError::Conflict(
                "the file changed on the server while it was read; try again".into(),
            )
        }
        other => {
            warn!(context, error = %other, "object store request failed");
            StorageError::Unavailable(context)
        }
    }
}

/// Reads a JSON record; `None` when it is absent or damaged (logged).
pub(crate) async fn get_record<T: DeserializeOwned>(
    store: &AmazonS3,
    key: &Path,
) -> Result<Option<T>, StorageError> {
    let got = match store.get_opts(key, GetOptions::default()).await {
        Ok(g) => g,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(os_err("reading a record")(e)),
    };
    if got.meta.size > MAX_RECORD {
        warn!(key = %key, size = got.meta.size, "ignoring an oversized record");
        return Ok(None);
    }
    let bytes = got.bytes().await.map_err(os_err("reading a record"))?;
    match serde_json::from_slice(&bytes) {
        Ok(r) => Ok(Some(r)),
        Err(e) => {
            warn!(key = %key, error = %e, "ignoring a damaged record");
            Ok(None)
        }
    }
}

/// Writes a JSON record (one PUT: it appears whole or not at all).
pub(crate) async fn put_record<T: serde::Serialize>(
    store: &AmazonS3,
    key: &Path,
    record: &T,
) -> Result<(), StorageError> {
    let body = serde_json::to_vec(record).expect("records serialize");
    store
        .put(key, PutPayload::from(Bytes::from(body)))
        .await
        .map_err(os_err("writing a record"))?;
    Ok(())
}

/// Deletes a key; an absent one is fine.
pub(super) async fn delete(store: &AmazonS3, key: &Path) -> Result<(), StorageError> {
    match store.delete(key).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(os_err("deleting an object")(e)),
    }
}
