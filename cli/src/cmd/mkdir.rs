//! `xfer mkdir PATH [-p]`: create a remote directory.

use anyhow::{Context as _, Result};

use crate::home::Home;
use crate::output::escape_control;
use crate::session::open_session;
use crate::transfer::normalize_remote;

/// Arguments of `xfer mkdir`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Remote directory to create.
    #[arg(value_name = "PATH")]
    pub path: String,
    /// Create missing parents too, and succeed if it already exists.
    #[arg(short = 'p', long)]
    pub parents: bool,
}

/// Runs `xfer mkdir`.
///
/// # Errors
/// Conflict (6), not found (5, missing parent), refused (10), connection errors.
pub async fn run(home: &Home, args: Args) -> Result<()> {
    let (_login, mut client) = open_session(home).await?;
    let path = normalize_remote(&args.path);
    client
        .mkdir(&path, args.parents)
        .await
        .with_context(|| format!("creating `{}`", escape_control(&path)))
}
