//! Progress on stderr: an indicatif bar per file (bytes, rate, ETA) and a total bar
//! with a file count when several files move, on a terminal; plain periodic lines
//! otherwise; nothing with `-q`. Result lines go to stdout through
//! [`Progress::result`], which keeps the bars from garbling them (and is silent with
//! `-q` too); a run of several files ends with one [`Progress::summary`] line, as
//! rsync's closing "sent … received …" does.
//!
//! The file moving now is also kept where an interrupt can read it
//! ([`interrupted_note`]), so Ctrl-C says what was kept and how to go on.

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::error::{ErrorKind, error_kind};
use crate::output::{escape_control, human_bytes};
use crate::transfer::Outcome;

/// How often a plain (non-terminal) progress line is printed per file.
const PLAIN_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Quiet,
    Plain,
    Bars,
}

/// Which way the files move: what an interrupted transfer leaves, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `push` and `send`: the server keeps the verified chunks.
    Up,
    /// `pull`: the part file beside the destination keeps them.
    Down,
}

/// The file moving now, for [`interrupted_note`].
struct Current {
    name: String,
    size: u64,
    direction: Direction,
    /// Bytes present at the destination, verified or acknowledged.
    done: Arc<AtomicU64>,
}

static CURRENT: Mutex<Option<Current>> = Mutex::new(None);

/// What Ctrl-C leaves behind and how to continue, if a file was moving:
/// "interrupted at 766.0 MiB of 2.0 GiB of big.iso; …".
pub fn interrupted_note() -> Option<String> {
    let current = CURRENT.lock().ok()?;
    let c = current.as_ref()?;
    let kept = match c.direction {
        Direction::Up => "the server keeps what it verified (see `xfer ls --partial`)",
        Direction::Down => "its .xfer-part file keeps what arrived",
    };
    Some(format!(
        "interrupted at {} of {} of {}; {kept} — run the same command to resume",
        human_bytes(c.done.load(Ordering::Relaxed).min(c.size)),
        human_bytes(c.size),
        c.name
    ))
}

/// What a run of several files did, for its closing line.
#[derive(Debug, Default)]
struct Tally {
    moved: usize,
    up_to_date: usize,
    conflicts: usize,
    failed: usize,
    /// `--update` kept a newer destination.
    kept: usize,
    /// Bytes that crossed the network in this run.
    bytes: u64,
}

/// Progress for one command (one or more files).
pub struct Progress {
    mode: Mode,
    multi: Option<MultiProgress>,
    total: Option<ProgressBar>,
    /// The total bar's length was given up front (else it grows as files start).
    total_known: bool,
    files: usize,
    direction: Direction,
    started: Instant,
    tally: Mutex<Tally>,
}

impl Progress {
    /// Progress for `files` files moving `direction` (a total bar appears when there
    /// are several).
    pub fn new(quiet: bool, files: usize, direction: Direction) -> Self {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bars
        } else {
            Mode::Plain
        };
        let multi = (mode == Mode::Bars)
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        let total = match &multi {
            Some(m) if files > 1 => {
                let bar = m.add(ProgressBar::new(0));
                bar.set_style(style(
                    "{msg:>12} [{wide_bar}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
                ));
                bar.set_message(format!("0/{files} files"));
                Some(bar)
            }
            _ => None,
        };
        Progress {
            mode,
            multi,
            total,
            total_known: false,
            files,
            direction,
            started: Instant::now(),
            tally: Mutex::new(Tally::default()),
        }
    }

    /// Sets the total bar's length when every file's size is known up front.
    pub fn with_total_bytes(mut self, bytes: u64) -> Self {
        if let Some(t) = &self.total {
            t.set_length(bytes);
            self.total_known = true;
        }
        self
    }

    /// Starts a file of `size` bytes, `already` of which are present and verified.
    pub fn file(&self, name: &str, size: u64, already: u64) -> FileProgress {
        let name = escape_control(name).into_owned();
        if let Some(total) = &self.total {
            if !self.total_known {
                total.inc_length(size);
            }
            skip_ahead(total, already);
        }
        let bar = self.multi.as_ref().map(|m| {
            let bar = match &self.total {
                Some(t) => m.insert_before(t, ProgressBar::new(size)),
                None => m.add(ProgressBar::new(size)),
            };
            bar.set_style(style(
                "{msg} {binary_bytes}/{binary_total_bytes} [{bar:30}] {binary_bytes_per_sec} ETA {eta}",
            ));
            bar.set_message(name.clone());
            skip_ahead(&bar, already);
            bar
        });
        let done = Arc::new(AtomicU64::new(already));
        if let Ok(mut current) = CURRENT.lock() {
            *current = Some(Current {
                name: name.clone(),
                size,
                direction: self.direction,
                done: Arc::clone(&done),
            });
        }
        FileProgress {
            mode: self.mode,
            name,
            size,
            bar,
            total: self.total.clone(),
            done,
            plain: Mutex::new(Plain {
                done: already,
                moved: 0,
                started: Instant::now(),
                last: Instant::now(),
            }),
        }
    }

    /// A file of `bytes` needed no transfer (it was up to date): advance the total.
    pub fn skipped(&self, bytes: u64) {
        if let (Some(t), true) = (&self.total, self.total_known) {
            t.inc(bytes);
        }
    }

    /// A file of `bytes` moved whole, without a bar of its own: advance the total.
    pub fn moved(&self, bytes: u64) {
        if let Some(t) = &self.total {
            if !self.total_known {
                t.inc_length(bytes);
            }
            t.inc(bytes);
        }
    }

    /// One file ended with `outcome`: count it for the summary and the file count.
    pub fn finished(&self, outcome: &Outcome) {
        self.count(|t| match outcome {
            Outcome::UpToDate => t.up_to_date += 1,
            Outcome::Kept => t.kept += 1,
            Outcome::Done { transferred, .. } => {
                t.moved += 1;
                t.bytes += transferred;
            }
        });
    }

    /// One file failed with `err`: a conflict (exit 6) or another failure.
    pub fn failed(&self, err: &anyhow::Error) {
        self.count(|t| match error_kind(err) {
            ErrorKind::Conflict => t.conflicts += 1,
            _ => t.failed += 1,
        });
    }

    fn count(&self, f: impl FnOnce(&mut Tally)) {
        let ended = {
            let mut tally = self.tally.lock().expect("progress lock is never poisoned");
            f(&mut tally);
            tally.moved + tally.up_to_date + tally.conflicts + tally.failed + tally.kept
        };
        if let Some(total) = &self.total {
            total.set_message(format!("{ended}/{} files", self.files));
        }
    }

    /// The closing line of a run of several files (none for one file, whose result
    /// line says it all): "3 files: 1 transferred, 2 up to date, 0 conflicts, 0 failed;
    /// 1.0 MiB in 0.4 s, 2.5 MiB/s". Printed like a result line.
    pub fn summary(&self) {
        if self.files < 2 {
            return;
        }
        let t = self.tally.lock().expect("progress lock is never poisoned");
        let secs = self.started.elapsed().as_secs_f64();
        let rate = (t.bytes as f64 / secs.max(1e-3)) as u64;
        // Only `--update` keeps newer files: the count appears when there are some.
        let kept = if t.kept > 0 {
            format!(", {} kept (newer at the destination)", t.kept)
        } else {
            String::new()
        };
        self.result(&format!(
            "{} files: {} transferred, {} up to date, {} conflicts, {} failed{kept}; {} in {secs:.1} s, {}/s",
            self.files,
            t.moved,
            t.up_to_date,
            t.conflicts,
            t.failed,
            human_bytes(t.bytes),
            human_bytes(rate),
        ));
    }

    /// Prints a result line on stdout (unless quiet), without garbling the bars. A
    /// stdout that cannot be written (its reader went away) is ignored: the line
    /// reports a transfer, and the transfers still to come are what was asked for.
    pub fn result(&self, line: &str) {
        if self.mode == Mode::Quiet {
            return;
        }
        let print = || {
            let _ = crate::output::print_line(line);
        };
        match &self.multi {
            Some(m) => m.suspend(print),
            None => print(),
        }
    }

    /// Prints what is happening on stderr, unless quiet.
    pub fn info(&self, line: &str) {
        if self.mode != Mode::Quiet {
            self.note(line);
        }
    }

    /// Prints a note on stderr (even when quiet: notes say something went wrong).
    pub fn note(&self, line: &str) {
        match &self.multi {
            Some(m) => m.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    /// Removes the bars.
    pub fn finish(&self) {
        if let Some(t) = &self.total {
            t.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Ok(mut current) = CURRENT.lock() {
            *current = None;
        }
    }
}

/// Advances `bar` by `n` bytes that did not move in this run (held by the peer, or
/// already verified here), keeping them out of the rate and the ETA: the tick makes the
/// estimator take in the new position, and the reset then forgets the jump.
fn skip_ahead(bar: &ProgressBar, n: u64) {
    if n == 0 {
        return;
    }
    bar.inc(n);
    bar.tick();
    bar.reset_eta();
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .expect("progress templates are valid")
        .progress_chars("=> ")
}

struct Plain {
    done: u64,
    moved: u64,
    started: Instant,
    last: Instant,
}

/// Progress of one file.
pub struct FileProgress {
    mode: Mode,
    name: String,
    size: u64,
    bar: Option<ProgressBar>,
    total: Option<ProgressBar>,
    /// Shared with [`CURRENT`] while this file moves.
    done: Arc<AtomicU64>,
    plain: Mutex<Plain>,
}

impl FileProgress {
    /// `n` more bytes moved.
    pub fn inc(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
        if let Some(total) = &self.total {
            total.inc(n);
        }
        if self.mode == Mode::Plain {
            let mut p = self.plain.lock().expect("progress lock is never poisoned");
            p.done += n;
            p.moved += n;
            let now = Instant::now();
            if now.duration_since(p.last) >= PLAIN_INTERVAL && p.done < self.size {
                p.last = now;
                let secs = now.duration_since(p.started).as_secs_f64().max(1e-3);
                let pct = p.done.saturating_mul(100) / self.size.max(1);
                eprintln!(
                    "{}  {pct}%  {} of {}  {}/s",
                    self.name,
                    human_bytes(p.done),
                    human_bytes(self.size),
                    human_bytes((p.moved as f64 / secs) as u64)
                );
            }
        }
    }

    /// `n` more bytes are already there (the peer holds them, verified): progress, but
    /// not counted in the rate or the ETA, which describe what moves in this run.
    pub fn held(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            skip_ahead(bar, n);
        }
        if let Some(total) = &self.total {
            skip_ahead(total, n);
        }
        if self.mode == Mode::Plain {
            self.plain
                .lock()
                .expect("progress lock is never poisoned")
                .done += n;
        }
    }

    /// The file is finished (or abandoned): remove its bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if let Ok(mut current) = CURRENT.lock()
            && current
                .as_ref()
                .is_some_and(|c| Arc::ptr_eq(&c.done, &self.done))
        {
            *current = None;
        }
    }
}

impl Drop for FileProgress {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_bytes_advance_the_bar_but_not_the_rate() {
        let bar = ProgressBar::hidden();
        bar.set_length(10 << 30);
        skip_ahead(&bar, 8 << 30);
        assert_eq!(bar.position(), 8 << 30);
        // Nothing moved since: a rate built from the 8 GiB jump would be huge.
        bar.tick();
        assert!(bar.per_sec() < 1.0, "{}", bar.per_sec());
    }
}
