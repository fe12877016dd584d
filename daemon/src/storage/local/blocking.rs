//! The bridge from the async traits to the local backend's blocking filesystem work.

use crate::storage::StorageError;

/// Runs `f` in a blocking task. A task that panicked is reported as an internal error
/// of `context` (the peer is told to look at the log; the panic is logged by tokio).
pub(crate) async fn blocking<T: Send + 'static>(
    context: &'static str,
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) => Err(StorageError::Io {
            context,
            source: std::io::Error::other(e),
        }),
    }
}
