//! `xfer send USER LOCAL... [--force] [-q] [--limit-rate RATE]`: hand files to another
//! user. Each lands in their inbox as `inbox/<you>/<NAME>`, uploaded with the same
//! verified, resumable engine as `push` (re-running an interrupted send continues it);
//! when it is committed the server tells the recipient in chat, at once if they are
//! online, or when they next connect. Only the recipient can list or read their inbox.

use std::path::PathBuf;

use anyhow::Result;
use xfer_proto::valid_user_name;

use crate::cmd::report_failures;
use crate::error::{LocalError, UsageError};
use crate::home::Home;
use crate::output::escape_control;
use crate::session::open_session;
use crate::transfer::progress::{Direction, Progress};
use crate::transfer::resume::Records;
use crate::transfer::send::{send_file, sent_line};
use crate::transfer::{Failure, Options, Outcome, TransferFlags, local_basename};

/// Arguments of `xfer send`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The recipient's user name (`@` in front is allowed).
    #[arg(value_name = "USER")]
    pub user: String,
    /// Files to hand over.
    #[arg(value_name = "LOCAL", required = true)]
    pub files: Vec<PathBuf>,
    /// Replace a different file you sent earlier under the same name.
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Progress and rate.
    #[command(flatten)]
    pub transfer: TransferFlags,
}

/// A recipient as typed (`bob` or `@bob`), checked against the account-name rule.
///
/// # Errors
/// [`UsageError`] for anything else.
pub fn recipient(user: &str) -> Result<String, UsageError> {
    let name = user.strip_prefix('@').unwrap_or(user);
    if valid_user_name(name) {
        Ok(name.to_string())
    } else {
        Err(UsageError(format!(
            "`{}` is not a user name (1 to 32 of a-z, A-Z, 0-9, '-', '_', '.', starting with a letter or digit)",
            escape_control(user)
        )))
    }
}

/// Runs `xfer send`.
///
/// # Errors
/// Not found (5: no such user or local file), conflict (6), refused (10: quota, type,
/// size), integrity (7), network (8), local I/O (1), usage (2).
pub async fn run(home: &Home, args: Args) -> Result<()> {
    let to = recipient(&args.user)?;
    let limit_rate = args.transfer.limit_rate()?;
    let mut total = 0;
    for local in &args.files {
        let meta = std::fs::metadata(local).map_err(|e| LocalError::reading(local, &e))?;
        if !meta.is_file() {
            return Err(UsageError(format!(
                "`{}` is not a regular file; only files can be sent",
                local.display()
            ))
            .into());
        }
        local_basename(local)?;
        total += meta.len();
    }
    let (login, mut client) = open_session(home).await?;
    let progress =
        Progress::new(args.transfer.quiet, args.files.len(), Direction::Up).with_total_bytes(total);
    let opts = Options {
        force: args.force,
        limit_rate,
        records: Some(Records::new(home.dir(), &login.key())),
        ..Options::default()
    };
    let mut failures = Vec::new();
    for local in &args.files {
        match send_file(&mut client, local, &to, &opts, &progress).await {
            Ok((name, outcome)) => {
                if outcome == Outcome::UpToDate {
                    progress.skipped(std::fs::metadata(local).map_or(0, |m| m.len()));
                }
                progress.finished(&outcome);
                progress.result(&sent_line(&name, &to, &outcome));
            }
            Err(Failure::File(e)) => {
                progress.failed(&e);
                failures.push(e);
            }
            // The engine's error already names the file and the recipient.
            Err(Failure::Fatal(e)) => {
                progress.finish();
                failures.push(e);
                return report_failures(failures);
            }
        }
    }
    progress.finish();
    progress.summary();
    report_failures(failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_follow_the_account_rule() {
        assert_eq!(recipient("bob").unwrap(), "bob");
        assert_eq!(recipient("@Bob.x").unwrap(), "Bob.x");
        for bad in ["", "@", "-bob", "a/b", "../x", "b\x1bob", &"x".repeat(33)] {
            let e = recipient(bad).unwrap_err().to_string();
            assert!(!e.contains('\x1b'), "{e}");
        }
    }
}
