//! Logging to stderr that can never take the daemon down.
//!
//! tracing-subscriber reports a failed write with `eprintln!`, which panics when stderr
//! itself is the broken thing (`xferd 2>&1 | tee log`, then the pipe closes): the task
//! that was logging dies, be it a connection or the signal handler. So the writer here
//! never fails: a write error drops the line and is counted, and internal error
//! reporting is off. Losing log lines beats losing the server.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use tracing_subscriber::fmt::MakeWriter;

/// Log writes that failed and were dropped since start.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// How many log writes failed (and were dropped) since the process started.
pub fn dropped_writes() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Installs the global subscriber: `RUST_LOG` filter (default `info`), stderr, colours
/// only on a terminal.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LossyStderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .log_internal_errors(false)
        .init();
}

/// A [`MakeWriter`] for stderr whose writers never return an error.
#[derive(Debug, Clone, Copy, Default)]
pub struct LossyStderr;

impl<'a> MakeWriter<'a> for LossyStderr {
    type Writer = Lossy<io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        Lossy(io::stderr())
    }
}

/// A writer that reports every write as done: errors are counted in
/// [`dropped_writes`] and the bytes discarded.
#[derive(Debug)]
pub struct Lossy<W>(pub W);

impl<W: Write> Write for Lossy<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0.write(buf) {
            Ok(n) => Ok(n),
            // `write_all` retries this one itself.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(_) => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
                Ok(buf.len())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.0.flush().is_err() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stands in for a stderr whose reader has gone away.
    struct BrokenPipe;

    impl Write for BrokenPipe {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
    }

    #[test]
    fn a_broken_writer_reports_success_and_counts_the_loss() {
        let before = dropped_writes();
        let mut w = Lossy(BrokenPipe);
        w.write_all(b"a log line\n").unwrap();
        w.flush().unwrap();
        assert!(dropped_writes() >= before + 2);
    }

    #[test]
    fn a_working_writer_passes_bytes_through() {
        let mut w = Lossy(Vec::new());
        w.write_all(b"kept").unwrap();
        assert_eq!(w.0, b"kept");
    }
}
