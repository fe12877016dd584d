//! Free space promised to admitted uploads, so that `min_free_bytes` is a reserve.
//!
//! Partial data files are sparse: an admitted upload takes disk space only as its chunks
//! arrive. Checking each `PutBegin` against free space alone would let two concurrent
//! uploads each see the whole disk and both be admitted, and the second would run into a
//! full disk halfway. So every admitted upload holds a [`Reservation`] of the bytes it
//! still has to write; admission counts the reservations of every open upload against
//! free space minus `min_free_bytes`. A reservation shrinks as chunks are written (free
//! space then shrinks by as much) and is given back when the upload commits, is taken
//! over or stops (its handle is dropped when the connection ends).

use std::sync::{Arc, Mutex, MutexGuard};

use crate::storage::StorageError;

/// Bytes promised to every open upload of the daemon.
#[derive(Default)]
pub(crate) struct Reserve(Arc<Mutex<u64>>);

impl Reserve {
    /// Admits an upload that still has `needed` bytes to write when the filesystem has
    /// `free` bytes and `keep` must stay free; refused with [`StorageError::NoSpace`]
    /// when the bytes already promised leave too little.
    pub fn admit(&self, needed: u64, free: u64, keep: u64) -> Result<Reservation, StorageError> {
        let mut promised = lock(&self.0);
        let available = free.saturating_sub(keep).saturating_sub(*promised);
        if needed > available {
            return Err(StorageError::NoSpace);
        }
        *promised += needed;
        Ok(Reservation {
            pool: self.0.clone(),
            left: needed,
        })
    }

    /// Bytes promised now (tests).
    #[cfg(test)]
    pub fn promised(&self) -> u64 {
        *lock(&self.0)
    }
}

/// The bytes one open upload may still write; given back when dropped.
pub(crate) struct Reservation {
    pool: Arc<Mutex<u64>>,
    left: u64,
}

impl Reservation {
    /// `bytes` were written: free space went down by as much, so the promise does too.
    pub fn consume(&mut self, bytes: u64) {
        let used = bytes.min(self.left);
        self.left -= used;
        let mut promised = lock(&self.pool);
        *promised = promised.saturating_sub(used);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut promised = lock(&self.pool);
        *promised = promised.saturating_sub(self.left);
    }
}

fn lock(m: &Mutex<u64>) -> MutexGuard<'_, u64> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
