//! `xfer rm PATH [-r] [--partial]`: remove a remote file or directory, or an upload in
//! progress.

use anyhow::{Context as _, Result};

use xfer_proto::{EntryKind, ErrorCode};

use crate::client::Client;
use crate::error::{RemoteError, UsageError, is_remote};
use crate::home::Home;
use crate::output::escape_control;
use crate::session::open_session;
use crate::transfer::normalize_remote;

/// Arguments of `xfer rm`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Remote path.
    #[arg(value_name = "PATH")]
    pub path: String,
    /// Remove a directory and everything in it.
    #[arg(short = 'r', long)]
    pub recursive: bool,
    /// Remove the upload in progress to PATH instead of a file.
    #[arg(long)]
    pub partial: bool,
}

/// Runs `xfer rm`.
///
/// # Errors
/// Not found (5), refused (10), and the usual connection errors.
pub async fn run(home: &Home, args: Args) -> Result<()> {
    let path = normalize_remote(&args.path);
    if path.is_empty() {
        return Err(UsageError("refusing to remove your home directory".into()).into());
    }
    let (_login, mut client) = open_session(home).await?;
    match client.remove(&path, args.recursive, args.partial).await {
        Err(e)
            if !args.partial
                && is_remote(&e, ErrorCode::NotFound)
                && is_upload_in_progress(&mut client, &path).await =>
        {
            Err(RemoteError {
                code: ErrorCode::NotFound,
                message: format!(
                    "`{shown}` is an upload in progress, not a file yet; \
                     discard it with `xfer rm --partial {shown}`, or resume it by pushing again",
                    shown = escape_control(&path)
                ),
            }
            .into())
        }
        done => done.with_context(|| format!("removing `{}`", escape_control(&path))),
    }
}

/// Whether the parent directory lists `path` as an upload in progress. Only asked after
/// a remove found nothing, for the hint; any failure here means no hint.
async fn is_upload_in_progress(client: &mut Client, path: &str) -> bool {
    let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
    client.list(parent).await.is_ok_and(|entries| {
        entries
            .iter()
            .any(|e| e.name == name && e.kind == EntryKind::Partial)
    })
}
