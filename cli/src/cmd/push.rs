//! `xfer push LOCAL... [REMOTE] [-r] [--force] [--update] [--dry-run] [-q] [--limit-rate RATE] [--compress]`.
//!
//! With one argument it is LOCAL and REMOTE is the home; with two or more the last is
//! REMOTE. REMOTE is a directory (files go to `REMOTE/NAME`) when it ends with `/`, is
//! the home, is an existing remote directory, when there are several LOCALs, or with
//! `-r` and a directory LOCAL (the tree is recreated under `REMOTE/NAME`); otherwise it
//! is the exact destination path. Everything goes over one connection.
//!
//! `--update` and `--dry-run` decide each file first ([`crate::transfer::sync`]) from the
//! remote listing of its directory, asked for once.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use std::collections::VecDeque;

use anyhow::{Context as _, Result};
use tokio::sync::mpsc;
use xfer_proto::{EntryKind, Request, travels_whole};

use crate::client::Client;
use crate::cmd::{remote_kind, report_failures};
use crate::error::{ConflictError, LocalError, RemoteError, UsageError};
use crate::home::Home;
use crate::output::escape_control;
use crate::session::open_session;
use crate::transfer::batch::{
    Answer, Answered, Waiting, Window, is_bare_conflict, put_request, read_whole,
};
use crate::transfer::progress::{Direction, Progress};
use crate::transfer::resume::Records;
use crate::transfer::sync::{self, Action, DryRun, RemoteIndex, Stat};
use crate::transfer::{
    Failure, Options, Outcome, TransferFlags, local_basename, normalize_remote, outcome_line,
    push::push_file, remote_join, remote_names_dir, split_sources,
};

/// Arguments of `xfer push`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Local files (or directories with -r), then optionally the remote destination.
    #[arg(value_name = "LOCAL", required = true)]
    pub paths: Vec<OsString>,
    /// Push directories recursively.
    #[arg(short = 'r', long)]
    pub recursive: bool,
    /// Replace existing remote files.
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Send only files whose content differs (size and time, then BLAKE3), replacing
    /// them; a remote file newer than the local one is kept (with --force, replaced).
    #[arg(short = 'u', long)]
    pub update: bool,
    /// Print what would be sent, replaced, kept or created, and change nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Progress and rate.
    #[command(flatten)]
    pub transfer: TransferFlags,
    /// Send zstd-compressed chunks: helps for text, logs and sparse images over a slow
    /// link; chunks that do not shrink (media, archives) travel raw.
    #[arg(long)]
    pub compress: bool,
}

/// One step of a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Create a remote directory (and its parents).
    Mkdir(String),
    /// Upload a local file to this exact remote path.
    File(PathBuf, String),
}

/// Whether REMOTE names a directory, from everything known without asking the server.
pub fn remote_is_dir_by_rule(remote: &str, locals: usize, recursive_dir: bool) -> bool {
    remote_names_dir(remote) || locals > 1 || recursive_dir
}

/// The remote path for a local top-level argument.
///
/// # Errors
/// [`UsageError`] if the local path has no UTF-8 file name.
pub fn destination(local: &Path, remote: &str, remote_is_dir: bool) -> Result<String, UsageError> {
    if remote_is_dir {
        Ok(remote_join(remote, &local_basename(local)?))
    } else {
        Ok(normalize_remote(remote))
    }
}

/// Runs `xfer push`.
///
/// # Errors
/// Conflict (6), refused (10), integrity (7), network (8), local I/O (1), usage (2).
pub async fn run(home: &Home, args: Args) -> Result<()> {
    let limit_rate = args.transfer.limit_rate()?;
    let (locals, remote) = split_sources(args.paths);
    let remote = match remote {
        Some(r) => r.into_string().map_err(|r| {
            UsageError(format!(
                "remote path {} is not UTF-8",
                Path::new(&r).display()
            ))
        })?,
        None => String::new(),
    };
    let locals: Vec<PathBuf> = locals.into_iter().map(PathBuf::from).collect();
    let mut any_dir = false;
    for local in &locals {
        let meta = std::fs::metadata(local).map_err(|e| LocalError::reading(local, &e))?;
        if meta.is_dir() {
            if !args.recursive {
                return Err(UsageError(format!(
                    "`{}` is a directory; use -r to push it with its contents",
                    local.display()
                ))
                .into());
            }
            any_dir = true;
        } else if !meta.is_file() {
            return Err(UsageError(format!("`{}` is not a regular file", local.display())).into());
        }
    }

    let (login, mut client) = open_session(home).await?;
    let mut remote_is_dir = remote_is_dir_by_rule(&remote, locals.len(), any_dir);
    if !remote_is_dir {
        remote_is_dir = remote_kind(&mut client, &remote).await? == Some(EntryKind::Dir);
    }
    let mut steps = Vec::new();
    for local in &locals {
        let dest = destination(local, &remote, remote_is_dir)?;
        if local.is_dir() {
            walk_local(local, &dest, &mut steps)?;
        } else {
            steps.push(Step::File(local.clone(), dest));
        }
    }

    let files = steps.iter().filter(|s| matches!(s, Step::File(..))).count();
    let total: u64 = steps
        .iter()
        .filter_map(|s| match s {
            Step::File(local, _) => std::fs::metadata(local).ok().map(|m| m.len()),
            Step::Mkdir(_) => None,
        })
        .sum();
    let progress = Progress::new(args.transfer.quiet, files, Direction::Up).with_total_bytes(total);
    let opts = Options {
        force: args.force,
        limit_rate,
        compress: args.compress,
        records: Some(Records::new(home.dir(), &login.key())),
    };
    let mut failures = Vec::new();
    if !args.update && !args.dry_run {
        let mut run = Pipelined {
            client: &mut client,
            opts: &opts,
            progress: &progress,
            failures: &mut failures,
        };
        if let Err(e) = run.steps(steps).await {
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
                if !normalize_remote(&dir).is_empty()
                    && index.entry(&mut client, &dir).await?.is_none()
                {
                    dry.dirs += 1;
                    progress.result(&format!("create directory  {}", escape_control(&dir)));
                }
            }
            Step::Mkdir(dir) => client
                .mkdir(&dir, true)
                .await
                .with_context(|| format!("creating `{}`", escape_control(&dir)))?,
            Step::File(local, dest) => {
                let result = if args.update || args.dry_run {
                    let mut run = Decided {
                        client: &mut client,
                        index: &mut index,
                        opts: &opts,
                        update: args.update,
                        progress: &progress,
                    };
                    run.file(&local, &dest, args.dry_run.then_some(&mut dry))
                        .await
                } else {
                    push_file(&mut client, &local, &dest, &opts, &progress)
                        .await
                        .map(Some)
                };
                match result {
                    Ok(None) => {}
                    Ok(Some(outcome)) => {
                        if matches!(outcome, Outcome::UpToDate | Outcome::Kept) {
                            progress.skipped(std::fs::metadata(&local).map_or(0, |m| m.len()));
                        }
                        progress.finished(&outcome);
                        progress.result(&outcome_line(&dest, &outcome));
                    }
                    Err(Failure::File(e)) => {
                        progress.failed(&e);
                        failures.push(e);
                    }
                    Err(Failure::Fatal(e)) => {
                        progress.finish();
                        failures.push(e.context(format!("pushing to `{dest}`")));
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

/// Files read ahead of the sender by the reader task.
const READ_AHEAD_FILES: usize = 32;

/// A push of every step as it comes (no `--update`, no `--dry-run`): directories and
/// files of at most one chunk travel as requests in flight together ([`Window`]), read
/// ahead by a blocking task; a larger file waits for the window to empty, then goes
/// the chunked way ([`push_file`]).
struct Pipelined<'a> {
    client: &'a mut Client,
    opts: &'a Options,
    progress: &'a Progress,
    failures: &'a mut Vec<anyhow::Error>,
}

impl Pipelined<'_> {
    /// Runs `steps`; an error is fatal for the command (per-file failures are collected).
    async fn steps(&mut self, steps: Vec<Step>) -> Result<()> {
        let whole: Vec<(usize, PathBuf)> = steps
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                Step::File(local, dest) => std::fs::metadata(local)
                    .ok()
                    .filter(|m| travels_whole(m.len(), dest))
                    .map(|_| (i, local.clone())),
                Step::Mkdir(_) => None,
            })
            .collect();
        let mut reading: VecDeque<usize> = whole.iter().map(|(i, _)| *i).collect();
        let (tx, mut rx) = mpsc::channel(READ_AHEAD_FILES);
        let reader = tokio::task::spawn_blocking(move || {
            for (_, local) in whole {
                let read = read_whole(&local, xfer_proto::CHUNK_SIZE as u64);
                if tx.blocking_send(read).is_err() {
                    return;
                }
            }
        });
        let mut window: Window<(String, PathBuf)> = Window::default();
        for (i, step) in steps.into_iter().enumerate() {
            match step {
                Step::Mkdir(dir) => {
                    let req = Request::Mkdir {
                        path: dir.clone(),
                        parents: true,
                    };
                    let done = window
                        .send(self.client, req, Waiting::Mkdir(dir), 0)
                        .await?;
                    self.answered(done)?;
                }
                Step::File(local, dest) => {
                    let read = if reading.front() == Some(&i) {
                        reading.pop_front();
                        if rx.is_empty() {
                            window.flush(self.client).await?;
                        }
                        rx.recv().await.context("the file reader stopped")?
                    } else {
                        Ok(None)
                    };
                    match read {
                        Err(e) => self.file_done(&dest, &local, Err(Failure::File(e)))?,
                        Ok(Some(file)) => {
                            let (size, digest) = (file.data.len() as u64, file.digest);
                            let req = put_request(&dest, self.opts.force, file);
                            let waiting = Waiting::File {
                                tag: (dest, local),
                                size,
                                digest,
                            };
                            let done = window
                                .send(self.client, req, waiting, size as usize)
                                .await?;
                            self.answered(done)?;
                        }
                        Ok(None) => {
                            let done = window.drain(self.client).await?;
                            self.answered(done)?;
                            let r = push_file(self.client, &local, &dest, self.opts, self.progress)
                                .await;
                            self.file_done(&dest, &local, r)?;
                        }
                    }
                }
            }
        }
        let done = window.drain(self.client).await?;
        self.answered(done)?;
        drop(rx);
        let _ = reader.await;
        Ok(())
    }

    /// Reports answers in order; a directory that could not be made ends the push.
    fn answered(&mut self, done: Vec<Answered<(String, PathBuf)>>) -> Result<()> {
        for a in done {
            match a {
                Answered::Mkdir(_, Ok(())) => {}
                Answered::Mkdir(dir, Err(e)) => {
                    return Err(e.context(format!("creating `{}`", escape_control(&dir))));
                }
                Answered::File((dest, local), r) => {
                    let r = r.map(|a| match a {
                        Answer::Put(outcome) => {
                            if let Outcome::Done { transferred, .. } = outcome {
                                self.progress.moved(transferred);
                            }
                            outcome
                        }
                        Answer::Got { .. } => Outcome::UpToDate,
                    });
                    self.file_done(&dest, &local, r)?;
                }
            }
        }
        Ok(())
    }

    /// Prints one file's result and counts it; a fatal failure is returned.
    fn file_done(&mut self, dest: &str, local: &Path, r: Result<Outcome, Failure>) -> Result<()> {
        match r {
            Ok(outcome) => {
                if matches!(outcome, Outcome::UpToDate | Outcome::Kept) {
                    self.progress
                        .skipped(std::fs::metadata(local).map_or(0, |m| m.len()));
                }
                self.progress.finished(&outcome);
                self.progress.result(&outcome_line(dest, &outcome));
            }
            Err(Failure::File(e)) => {
                let e = if is_bare_conflict(&e) {
                    ConflictError(format!("{dest} exists; use --force to replace it")).into()
                } else if e.chain().any(|c| c.is::<RemoteError>()) {
                    e.context(format!("pushing to `{dest}`"))
                } else {
                    e
                };
                self.progress.failed(&e);
                self.failures.push(e);
            }
            Err(Failure::Fatal(e)) => return Err(e.context(format!("pushing to `{dest}`"))),
        }
        Ok(())
    }
}

/// A push that decides each file first (`--update`, `--dry-run`).
struct Decided<'a> {
    client: &'a mut Client,
    index: &'a mut RemoteIndex,
    opts: &'a Options,
    update: bool,
    progress: &'a Progress,
}

impl Decided<'_> {
    /// Decides what to do with `local` pushed to `dest`, then does it; with `dry` only
    /// prints and counts it (`Ok(None)`).
    async fn file(
        &mut self,
        local: &Path,
        dest: &str,
        dry: Option<&mut DryRun>,
    ) -> Result<Option<Outcome>, Failure> {
        let Some(src) = Stat::local(local) else {
            if dry.is_some() {
                // A dry run never transfers, even what appeared since the walk.
                return Err(Failure::File(
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("`{}` is not a regular file here", local.display()),
                    )
                    .into(),
                ));
            }
            // Not a regular file (any more): the engine says what is wrong.
            return self.push(local, dest, false).await.map(Some);
        };
        let entry = self.index.entry(self.client, dest).await?;
        let action = sync::plan(
            src,
            sync::remote_dest(entry.as_ref()),
            local,
            entry.as_ref().and_then(|e| e.digest),
            self.update,
            self.opts.force,
        )
        .await
        .map_err(Failure::File)?;
        if let Some(dry) = dry {
            dry.count(action, src.size);
            let from = local.display().to_string();
            self.progress.result(&sync::dry_line(action, &from, dest));
            return Ok(None);
        }
        let outcome = match action {
            Action::New | Action::Conflict => self.push(local, dest, false).await?,
            Action::Replace => self.push(local, dest, true).await?,
            Action::UpToDate => Outcome::UpToDate,
            Action::Retime => {
                self.client
                    .set_modified(dest, src.modified_unix)
                    .await
                    .with_context(|| format!("setting the modification time of `{dest}`"))
                    .map_err(Failure::File)?;
                Outcome::UpToDate
            }
            Action::KeepNewer => Outcome::Kept,
        };
        Ok(Some(outcome))
    }

    async fn push(&mut self, local: &Path, dest: &str, force: bool) -> Result<Outcome, Failure> {
        let opts = Options {
            force,
            ..self.opts.clone()
        };
        push_file(self.client, local, dest, &opts, self.progress).await
    }
}

/// Adds the steps that recreate the local tree `dir` at remote `dest`: the directory
/// itself, its files, then its subdirectories, in name order. Symbolic links to
/// directories are not followed.
fn walk_local(dir: &Path, dest: &str, steps: &mut Vec<Step>) -> Result<()> {
    steps.push(Step::Mkdir(dest.to_string()));
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading `{}`", dir.display()))?
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("reading `{}`", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    let mut subdirs = Vec::new();
    for entry in entries {
        let path = entry.path();
        let name = local_basename(&path)?;
        let ty = entry
            .file_type()
            .with_context(|| format!("reading `{}`", path.display()))?;
        let target = remote_join(dest, &name);
        if ty.is_dir() {
            subdirs.push((path, target));
        } else if ty.is_file() || (ty.is_symlink() && path.is_file()) {
            steps.push(Step::File(path, target));
        } else {
            eprintln!(
                "xfer: skipping `{}`: not a regular file or directory",
                path.display()
            );
        }
    }
    for (path, target) in subdirs {
        walk_local(&path, &target, steps)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_rules() {
        // One file to an exact path, to a directory by spelling, to the home.
        assert!(!remote_is_dir_by_rule("b.txt", 1, false));
        assert!(remote_is_dir_by_rule("docs/", 1, false));
        assert!(remote_is_dir_by_rule("", 1, false));
        assert!(remote_is_dir_by_rule("docs", 2, false));
        assert!(remote_is_dir_by_rule("docs", 1, true));
        let a = Path::new("/tmp/x/a.txt");
        assert_eq!(destination(a, "b.txt", false).unwrap(), "b.txt");
        assert_eq!(destination(a, "docs/", true).unwrap(), "docs/a.txt");
        assert_eq!(destination(a, "", true).unwrap(), "a.txt");
        assert_eq!(destination(Path::new("dir/"), "d", true).unwrap(), "d/dir");
        assert!(destination(Path::new("/"), "d", true).is_err());
    }

    #[test]
    fn tree_is_recreated_under_the_destination() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("photos");
        std::fs::create_dir_all(root.join("2024/jan")).unwrap();
        std::fs::write(root.join("a.png"), b"a").unwrap();
        std::fs::write(root.join("2024/jan/b.png"), b"b").unwrap();
        let mut steps = Vec::new();
        walk_local(&root, "backup/photos", &mut steps).unwrap();
        assert_eq!(
            steps,
            vec![
                Step::Mkdir("backup/photos".into()),
                Step::File(root.join("a.png"), "backup/photos/a.png".into()),
                Step::Mkdir("backup/photos/2024".into()),
                Step::Mkdir("backup/photos/2024/jan".into()),
                Step::File(
                    root.join("2024/jan/b.png"),
                    "backup/photos/2024/jan/b.png".into()
                ),
            ]
        );
    }
}
