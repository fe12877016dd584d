//! The standing suite's fast part: the real binaries under faults, abuse and full
//! disks (docs/TESTING.md, "The standing suite"). Each test holds [`serial`] for its
//! whole run: these tests load the machine on purpose, and two at once would measure
//! each other instead of the daemon.

mod crash;
mod disk;
mod netfault;

use std::sync::{Mutex, MutexGuard};

/// Taken first by every test in this binary, so they run one at a time.
#[allow(dead_code)] // until the first suite module lands
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    // A failed test poisons the lock; the next one still runs.
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
