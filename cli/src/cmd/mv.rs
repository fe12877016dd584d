//! `xfer mv FROM TO [--force]`: rename a remote file or directory.

use anyhow::{Context as _, Result};

use crate::home::Home;
use crate::output::escape_control;
use crate::session::open_session;
use crate::transfer::{normalize_remote, remote_basename, remote_join, remote_names_dir};

/// Arguments of `xfer mv`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Existing remote path.
    #[arg(value_name = "FROM")]
    pub from: String,
    /// New remote path.
    #[arg(value_name = "TO")]
    pub to: String,
    /// Replace an existing file at TO.
    #[arg(short = 'f', long)]
    pub force: bool,
}

/// Runs `xfer mv`.
///
/// # Errors
/// Not found (5), conflict (6), refused (10), connection errors.
pub async fn run(home: &Home, args: Args) -> Result<()> {
    let (_login, mut client) = open_session(home).await?;
    let from = normalize_remote(&args.from);
    // `mv a dir/` moves into the directory, keeping the name.
    let to = if remote_names_dir(&args.to) {
        remote_join(&args.to, &remote_basename(&from))
    } else {
        normalize_remote(&args.to)
    };
    client
        .rename(&from, &to, args.force)
        .await
        .with_context(|| {
            format!(
                "moving `{}` to `{}`",
                escape_control(&from),
                escape_control(&to)
            )
        })
}
