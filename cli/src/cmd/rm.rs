//! `xfer rm PATH [-r] [--partial]`: remove a remote file or directory, or an upload in
//! progress.

use anyhow::{Context as _, Result};

use crate::error::UsageError;
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
    client
        .remove(&path, args.recursive, args.partial)
        .await
        .with_context(|| format!("removing `{}`", escape_control(&path)))
}
