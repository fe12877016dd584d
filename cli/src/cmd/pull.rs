//! `xfer pull REMOTE... [LOCAL] [-r] [--force] [--update] [--dry-run] [-q] [--limit-rate RATE] [--compress] [--preview]`.
//!
//! With one argument it is REMOTE and LOCAL is `.`; with two or more the last is LOCAL.
//! LOCAL is a directory (files go to `LOCAL/NAME`) when it ends with `/`, is an existing
//! directory, when there are several REMOTEs, or with `-r` and a remote directory (the
//! tree is recreated under `LOCAL/NAME`); otherwise it is the exact destination path.
//! Names from remote listings are checked to be single components before they become
//! local paths. `--update` and `--dry-run` decide each file first
//! ([`crate::transfer::sync`]) from the remote listing of its directory.

use std::path::{Path, PathBuf};

use std::collections::HashMap;

use anyhow::{Context as _, Result};
use tokio::sync::{mpsc, oneshot};
use xfer_proto::{Digest, EntryKind, Request, travels_whole};

use crate::client::Client;
use crate::cmd::ls::check_listing;
use crate::cmd::{remote_kind, report_failures};
use crate::error::UsageError;
use crate::home::Home;
use crate::output::escape_control;
use crate::preview::Preview;
use crate::session::open_session;
use crate::transfer::batch::{Answer, Answered, Waiting, Window};
use crate::transfer::install::{self, Installed, Received, ToWriter};
use crate::transfer::progress::{Direction, Progress};
use crate::transfer::sync::{self, Action, DryRun, RemoteIndex, Stat};
use crate::transfer::{
    Failure, Options, Outcome, TransferFlags, check_name, normalize_remote, outcome_line,
    pull::{pull_file, set_time},
    remote_basename, remote_join, split_sources,
};

/// Arguments of `xfer pull`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Remote files (or directories with -r), then optionally the local destination.
    #[arg(value_name = "REMOTE", required = true)]
    pub paths: Vec<String>,
    /// Pull directories recursively.
    #[arg(short = 'r', long)]
    pub recursive: bool,
    /// Replace existing local files.
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Fetch only files whose content differs (size and time, then BLAKE3), replacing
    /// them; a local file newer than the remote one is kept (with --force, replaced).
    #[arg(short = 'u', long)]
    pub update: bool,
    /// Print what would be fetched, replaced, kept or created, and change nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Progress and rate.
    #[command(flatten)]
    pub transfer: TransferFlags,
    /// Ask for zstd-compressed chunks: helps for text, logs and sparse images over a slow
    /// link; chunks that do not shrink (media, archives) travel raw.
    #[arg(long)]
    pub compress: bool,
    /// Show pulled images in the terminal (ignored when stdout is not a terminal).
    #[arg(long)]
    pub preview: bool,
}

/// One step of a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Create a local directory (and its parents).
    Mkdir(PathBuf),
    /// Download a remote file to this exact local path.
    File(String, PathBuf),
}

/// Whether LOCAL names a directory.
pub fn local_is_dir(local: &str, remotes: usize, recursive_dir: bool) -> bool {
    local.ends_with('/') || remotes > 1 || recursive_dir || Path::new(local).is_dir()
}

/// The local path for a remote top-level argument.
///
/// # Errors
/// [`UsageError`] when the remote has no usable name (the home, `..`).
pub fn destination(remote: &str, local: &str, local_is_dir: bool) -> Result<PathBuf, UsageError> {
    if !local_is_dir {
        return Ok(PathBuf::from(local));
    }
    let name = remote_basename(remote);
    if name.is_empty() {
        return Ok(PathBuf::from(local));
    }
    check_name(&name).map_err(|_| {
        UsageError(format!(
            "`{}` has no usable file name",
            escape_control(remote)
        ))
    })?;
    Ok(Path::new(local).join(name))
}

/// Runs `xfer pull`.
///
/// # Errors
/// Not found (5), conflict (6), integrity (7), network (8), protocol (9), refused (10),
/// local I/O (1), usage (2).
pub async fn run(home: &Home, args: Args) -> Result<()> {
    let limit_rate = args.transfer.limit_rate()?;
    let (remotes, local) = split_sources(args.paths);
    let local = local.unwrap_or_else(|| ".".to_string());
    let (_login, mut client) = open_session(home).await?;

    let mut steps = Vec::new();
    let mut sizes = HashMap::new();
    for remote in &remotes {
        let remote = normalize_remote(remote);
        let is_dir = if args.recursive {
            remote_kind(&mut client, &remote).await? == Some(EntryKind::Dir)
        } else if remote.is_empty() {
            return Err(UsageError("your home is a directory; use -r to pull it".into()).into());
        } else {
            false
        };
        let into_dir = local_is_dir(&local, remotes.len(), is_dir);
        let dest = match destination(&remote, &local, into_dir) {
            Ok(d) => d,
            Err(e) => {
                // No local name can be made of it (e.g. `..`): the server's verdict on
                // the path comes first, it is the authority on what exists.
                let get = client
                    .get_begin(&remote)
                    .await
                    .with_context(|| format!("pulling `{}`", escape_control(&remote)))?;
                let _ = client.close(get.transfer_id).await;
                return Err(e.into());
            }
        };
        if into_dir {
            // LOCAL names a directory: create it if needed (`pull a b new-dir/`).
            let dir = Step::Mkdir(PathBuf::from(&local));
            if !steps.contains(&dir) {
                steps.push(dir);
            }
        }
        if is_dir {
            walk_remote(&mut client, &remote, &dest, &mut steps, &mut sizes).await?;
        } else {
            steps.push(Step::File(remote, dest));
        }
    }

    let files = steps.iter().filter(|s| matches!(s, Step::File(..))).count();
    let progress = Progress::new(args.transfer.quiet, files, Direction::Down);
    let opts = Options {
        force: args.force,
        limit_rate,
        compress: args.compress,
        records: None,
    };
    let preview = Preview::new(args.preview, args.transfer.quiet, &progress);
    let mut failures = Vec::new();
    if !args.update && !args.dry_run && !sizes.is_empty() {
        let mut run = Pipelined {
            client: &mut client,
            opts: &opts,
            progress: &progress,
            preview: &preview,
            failures: &mut failures,
        };
        if let Err(e) = run.steps(steps, &sizes).await {
            progress.finish();
            failures.push(e);
            return report_failures(failures);
        }
        progress.finish();
        progress.summary();
        return report_failures(failures);
    }
    let mut index = RemoteIndex::default();
    let mut dry = DryRun::default();
    for step in steps {
        match step {
            Step::Mkdir(dir) if args.dry_run => {
                if !dir.is_dir() {
                    dry.dirs += 1;
                    progress.result(&format!("create directory  {}", dir.display()));
                }
            }
            Step::Mkdir(dir) => std::fs::create_dir_all(&dir)
                .with_context(|| format!("creating `{}`", dir.display()))?,
            Step::File(remote, dest) => {
                let result = if args.update || args.dry_run {
                    let mut run = Decided {
                        client: &mut client,
                        index: &mut index,
                        opts: &opts,
                        update: args.update,
                        progress: &progress,
                    };
                    run.file(&remote, &dest, args.dry_run.then_some(&mut dry))
                        .await
                } else {
                    pull_file(&mut client, &remote, &dest, &opts, &progress)
                        .await
                        .map(Some)
                };
                match result {
                    Ok(None) => {}
                    Ok(Some(outcome)) => {
                        progress.finished(&outcome);
                        progress.result(&outcome_line(&dest.display().to_string(), &outcome));
                        if matches!(outcome, Outcome::Done { .. } | Outcome::UpToDate) {
                            preview.show(&dest, &progress).await;
                        }
                    }
                    Err(Failure::File(e)) => {
                        // A directory named without -r: say how to pull it, as push does.
                        if !args.recursive
                            && remote_kind(&mut client, &remote).await.ok().flatten()
                                == Some(EntryKind::Dir)
                        {
                            progress.finish();
                            return Err(UsageError(format!(
                                "`{}` is a directory; use -r to pull it with its contents",
                                escape_control(&remote)
                            ))
                            .into());
                        }
                        progress.failed(&e);
                        failures.push(e);
                    }
                    Err(Failure::Fatal(e)) => {
                        progress.finish();
                        failures.push(e.context(format!("pulling `{remote}`")));
                        return report_failures(failures);
                    }
                }
            }
        }
    }
    progress.finish();
    if args.dry_run {
        progress.result(&dry.summary());
    } else {
        progress.summary();
    }
    report_failures(failures)
}

/// A pull of a listed tree as it comes (no `--update`, no `--dry-run`): files of at
/// most one chunk are asked for whole, many in flight ([`Window`]), and handed to a
/// blocking writer that installs them in batches ([`install`]); a larger file waits
/// for both to finish, then goes the chunked way ([`pull_file`]).
struct Pipelined<'a> {
    client: &'a mut Client,
    opts: &'a Options,
    progress: &'a Progress,
    preview: &'a Preview,
    failures: &'a mut Vec<anyhow::Error>,
}

impl Pipelined<'_> {
    /// Runs `steps` (`sizes`: the listed size of each remote file); an error is fatal
    /// for the command (per-file failures are collected).
    async fn steps(&mut self, steps: Vec<Step>, sizes: &HashMap<String, u64>) -> Result<()> {
        let (tx, rx) = mpsc::channel(install::BATCH_FILES);
        let (done_tx, mut done) = mpsc::unbounded_channel();
        let writer = tokio::task::spawn_blocking(move || install::run(rx, done_tx));
        let mut window: Window<(String, PathBuf)> = Window::default();
        let server = self.client.server().to_string();
        for step in steps {
            match step {
                Step::Mkdir(dir) => std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating `{}`", dir.display()))?,
                Step::File(remote, dest) => {
                    let size = sizes.get(&remote).copied();
                    // A file already here goes the chunked way, which compares before it
                    // downloads (up to date, or a conflict without --force).
                    let fresh = self.opts.force || std::fs::symlink_metadata(&dest).is_err();
                    if let Some(size) = size.filter(|&s| fresh && travels_whole(s, &remote)) {
                        let req = Request::GetFile {
                            path: remote.clone(),
                        };
                        let waiting = Waiting::File {
                            tag: (remote, dest),
                            size,
                            digest: Digest([0; 32]),
                        };
                        let answers = window
                            .send(self.client, req, waiting, size as usize)
                            .await?;
                        self.hand_over(&tx, answers, &server).await?;
                    } else {
                        let answers = window.drain(self.client).await?;
                        self.hand_over(&tx, answers, &server).await?;
                        let (ack, acked) = oneshot::channel();
                        if tx.send(ToWriter::Sync(ack)).await.is_ok() {
                            let _ = acked.await;
                        }
                        self.report_installed(&mut done).await;
                        let r =
                            pull_file(self.client, &remote, &dest, self.opts, self.progress).await;
                        self.file_done(&remote, &dest, r).await?;
                    }
                }
            }
            self.report_installed(&mut done).await;
        }
        let answers = window.drain(self.client).await?;
        self.hand_over(&tx, answers, &server).await?;
        drop(tx);
        let written = writer.await;
        self.report_installed(&mut done).await;
        // A writer that died (it cannot, short of a bug) must not pass for one whose
        // files were all reported.
        written.map_err(|e| anyhow::anyhow!("the file writer failed: {e}"))?;
        Ok(())
    }

    /// Passes answers to the writer, in order.
    async fn hand_over(
        &mut self,
        tx: &mpsc::Sender<ToWriter>,
        answers: Vec<Answered<(String, PathBuf)>>,
        server: &str,
    ) -> Result<()> {
        for a in answers {
            let Answered::File((remote, dest), r) = a else {
                continue;
            };
            let msg = match r {
                Ok(Answer::Got {
                    data,
                    digest,
                    modified_unix,
                }) => ToWriter::File(Box::new(Received {
                    remote,
                    dest,
                    data,
                    digest,
                    modified_unix,
                    force: self.opts.force,
                    server: server.to_owned(),
                })),
                Ok(Answer::Put(_)) => continue,
                Err(Failure::File(e)) => ToWriter::Failed {
                    error: e.context(format!("pulling `{remote}`")),
                    remote,
                    dest,
                },
                Err(Failure::Fatal(e)) => return Err(e.context(format!("pulling `{remote}`"))),
            };
            if tx.send(msg).await.is_err() {
                anyhow::bail!("the file writer stopped");
            }
        }
        Ok(())
    }

    /// Reports what the writer has finished so far.
    async fn report_installed(&mut self, done: &mut mpsc::UnboundedReceiver<Installed>) {
        while let Ok((remote, dest, r)) = done.try_recv() {
            if let Ok(Outcome::Done { transferred, .. }) = &r {
                self.progress.moved(*transferred);
            }
            // Only a chunked pull can fail fatally; these never do.
            let _ = self
                .file_done(&remote, &dest, r.map_err(Failure::File))
                .await;
        }
    }

    /// Prints one file's result and counts it; a fatal failure is returned.
    async fn file_done(
        &mut self,
        remote: &str,
        dest: &Path,
        r: Result<Outcome, Failure>,
    ) -> Result<()> {
        match r {
            Ok(outcome) => {
                self.progress.finished(&outcome);
                self.progress
                    .result(&outcome_line(&dest.display().to_string(), &outcome));
                if matches!(outcome, Outcome::Done { .. } | Outcome::UpToDate) {
                    self.preview.show(dest, self.progress).await;
                }
            }
            Err(Failure::File(e)) => {
                self.progress.failed(&e);
                self.failures.push(e);
            }
            Err(Failure::Fatal(e)) => return Err(e.context(format!("pulling `{remote}`"))),
        }
        Ok(())
    }
}

/// A pull that decides each file first (`--update`, `--dry-run`).
struct Decided<'a> {
    client: &'a mut Client,
    index: &'a mut RemoteIndex,
    opts: &'a Options,
    update: bool,
    progress: &'a Progress,
}

impl Decided<'_> {
    /// Decides what to do with `remote` pulled to `dest`, then does it; with `dry` only
    /// prints and counts it (`Ok(None)`).
    async fn file(
        &mut self,
        remote: &str,
        dest: &Path,
        dry: Option<&mut DryRun>,
    ) -> Result<Option<Outcome>, Failure> {
        let entry = match self.index.entry(self.client, remote).await? {
            Some(e) if e.kind == EntryKind::File => e,
            // A dry run never transfers, even what appeared since the listing.
            _ if dry.is_some() => {
                return Err(Failure::File(
                    crate::error::RemoteError {
                        code: xfer_proto::ErrorCode::NotFound,
                        message: format!(
                            "`{}` is not a file on the server",
                            crate::output::escape_control(remote)
                        ),
                    }
                    .into(),
                ));
            }
            // Missing, or a directory: the engine's error (and its hint) says so.
            _ => return self.pull(remote, dest, false).await.map(Some),
        };
        let src = Stat::remote(&entry);
        let action = sync::plan(
            src,
            sync::local_dest(dest),
            dest,
            entry.digest,
            self.update,
            self.opts.force,
        )
        .await
        .map_err(Failure::File)?;
        if let Some(dry) = dry {
            dry.count(action, src.size);
            let to = dest.display().to_string();
            self.progress.result(&sync::dry_line(action, remote, &to));
            return Ok(None);
        }
        let outcome = match action {
            Action::New | Action::Conflict => self.pull(remote, dest, false).await?,
            Action::Replace => self.pull(remote, dest, true).await?,
            Action::UpToDate => Outcome::UpToDate,
            Action::Retime => {
                set_time(dest, src.modified_unix)
                    .with_context(|| format!("setting the time of `{}`", dest.display()))
                    .map_err(Failure::File)?;
                Outcome::UpToDate
            }
            Action::KeepNewer => Outcome::Kept,
        };
        Ok(Some(outcome))
    }

    async fn pull(&mut self, remote: &str, dest: &Path, force: bool) -> Result<Outcome, Failure> {
        let opts = Options {
            force,
            ..self.opts.clone()
        };
        pull_file(self.client, remote, dest, &opts, self.progress).await
    }
}

/// Adds the steps that recreate the remote tree `remote` at local `dest`. Partial uploads
/// are skipped; every listed name is checked before it becomes part of a local path.
async fn walk_remote(
    client: &mut Client,
    remote: &str,
    dest: &Path,
    steps: &mut Vec<Step>,
    sizes: &mut HashMap<String, u64>,
) -> Result<()> {
    let mut stack = vec![(remote.to_string(), dest.to_path_buf())];
    while let Some((dir, local)) = stack.pop() {
        steps.push(Step::Mkdir(local.clone()));
        let entries = client
            .list(&dir)
            .await
            .with_context(|| format!("listing `{}`", escape_control(&dir)))?;
        check_listing(&entries)?;
        let mut subdirs = Vec::new();
        for e in entries {
            let r = remote_join(&dir, &e.name);
            let l = local.join(&e.name);
            match e.kind {
                EntryKind::File => {
                    sizes.insert(r.clone(), e.size);
                    steps.push(Step::File(r, l));
                }
                EntryKind::Dir => subdirs.push((r, l)),
                EntryKind::Partial => {}
            }
        }
        // Reverse so that the stack yields subdirectories in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_rules() {
        assert!(local_is_dir("out/", 1, false));
        assert!(local_is_dir("x", 2, false));
        assert!(local_is_dir("x", 1, true));
        assert!(local_is_dir(".", 1, false), "an existing directory");
        assert!(!local_is_dir("surely-not-here.bin", 1, false));
        assert_eq!(
            destination("a/b.txt", ".", true).unwrap(),
            Path::new("./b.txt")
        );
        assert_eq!(
            destination("a/b.txt", "c.txt", false).unwrap(),
            Path::new("c.txt")
        );
        assert_eq!(
            destination("a/b/", "out/", true).unwrap(),
            Path::new("out/b")
        );
        assert_eq!(destination("", "out", true).unwrap(), Path::new("out"));
    }
}
