//! One module per subcommand; each has an `Args` (clap) and an async `run`.
//!
//! Commands that need a logged-in connection start with
//! [`crate::session::open_session`].

pub mod chat;
pub mod login;
pub mod logout;
pub mod ls;
pub mod mkdir;
pub mod mv;
pub mod pull;
pub mod push;
pub mod rm;
pub mod send;
pub mod token;
pub mod whoami;

use anyhow::Result;
use xfer_proto::{EntryKind, ErrorCode};

use crate::client::Client;
use crate::error::is_remote;
use crate::output::escape_control;
use crate::transfer::{normalize_remote, remote_basename, remote_parent};

/// What a remote path is, found by listing its parent: `None` if it does not exist
/// (or its parent does not). The home is a directory. A partial upload of the same
/// name does not count.
///
/// # Errors
/// Connection errors, and server refusals other than "not found".
pub async fn remote_kind(client: &mut Client, path: &str) -> Result<Option<EntryKind>> {
    let path = normalize_remote(path);
    if path.is_empty() {
        return Ok(Some(EntryKind::Dir));
    }
    let name = remote_basename(&path);
    match client.list(&remote_parent(&path)).await {
        Ok(entries) => Ok(entries
            .iter()
            .find(|e| e.name == name && e.kind != EntryKind::Partial)
            .map(|e| e.kind)),
        Err(e) if is_remote(&e, ErrorCode::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reports the per-file failures of a command that went on after them: all but the
/// last are printed on stderr, the last is returned (its kind sets the exit code).
///
/// # Errors
/// The last failure, if any.
pub fn report_failures(mut failures: Vec<anyhow::Error>) -> Result<()> {
    let Some(last) = failures.pop() else {
        return Ok(());
    };
    for e in failures {
        eprintln!("xfer: {}", escape_control(&format!("{e:#}")));
    }
    Err(last)
}
