//! Rendering for people and for scripts: `--json`, control-character escaping of
//! server-provided text, byte sizes and dates, and writing results on stdout.
//!
//! Anything a server sends (error messages, user names, file names) can contain terminal
//! escape sequences; it goes through [`escape_control`] before it reaches a terminal.
//!
//! Results go through [`print_line`] and [`print_lines`], never `println!`: Rust ignores
//! SIGPIPE, so `println!` panics when the reader of a pipe has gone (`xfer ls | head -1`).
//! A closed stdout is [`StdoutError::Closed`] instead, which `main` turns into a quiet
//! exit 0, as ripgrep does.

use std::borrow::Cow;
use std::fmt::{Display, Write as _};
use std::io::{self, Write as _};

use xfer_proto::text::escape_in_text;

/// Writing a result on stdout failed.
#[derive(Debug, thiserror::Error)]
pub enum StdoutError {
    /// The reader went away (`| head -1`): nothing more is wanted, so the command
    /// stops and exits 0 without a message.
    #[error("stdout was closed")]
    Closed,
    /// Any other write error (e.g. a full disk behind a redirection): reported.
    #[error("writing to stdout")]
    Write(#[source] io::Error),
}

impl From<io::Error> for StdoutError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            StdoutError::Closed
        } else {
            StdoutError::Write(e)
        }
    }
}

impl StdoutError {
    /// Whether `err` (anywhere in its chain) is a closed stdout.
    pub fn is_closed(err: &anyhow::Error) -> bool {
        err.chain()
            .any(|c| matches!(c.downcast_ref(), Some(StdoutError::Closed)))
    }
}

/// Writes `line` and a newline on stdout (flushed, as `println!` does).
///
/// # Errors
/// [`StdoutError::Closed`] when the reader has gone; [`StdoutError::Write`] otherwise.
pub fn print_line(line: impl Display) -> Result<(), StdoutError> {
    print_lines([line])
}

/// Writes each of `lines` and a newline on stdout, holding the lock throughout; stops
/// at the first failed write.
///
/// # Errors
/// As [`print_line`].
pub fn print_lines<T: Display>(lines: impl IntoIterator<Item = T>) -> Result<(), StdoutError> {
    let mut out = io::stdout().lock();
    for line in lines {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(())
}

/// How a command renders its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Lines for people.
    Human,
    /// One JSON object (or one per line, for streams).
    Json,
}

impl Format {
    /// `Json` if `json` is set.
    pub fn from_flag(json: bool) -> Self {
        if json { Format::Json } else { Format::Human }
    }
}

/// Replaces C0 and C1 control characters and DEL with `\xNN` escapes, and the
/// bidirectional-text controls and other invisible characters (zero-width space, word
/// joiner, byte-order mark, line separators: see `xfer_proto::text::escape_in_text`)
/// with `\u{NNNN}` escapes, so text from a server cannot move the cursor, recolour or
/// retitle a terminal, make `invoice\u{202e}gpj.exe` read as `invoice…exe.jpg`, nor
/// hide a character between two letters.
pub fn escape_control(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            // `is_control` is exactly C0, DEL and C1 (category Cc), all below U+0100.
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if is_bidi_control(c) || escape_in_text(c) => {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control() || is_bidi_control(c) || escape_in_text(c)
}

/// The characters that reorder displayed text: the Arabic letter mark, LRM and RLM,
/// the embeddings and overrides (LRE, RLE, PDF, LRO, RLO) and the isolates (LRI, RLI,
/// FSI, PDI).
pub fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
    )
}

/// `1.5 MiB`-style size with binary units; exact bytes below 1 KiB.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `2026-05-01 12:00:00 UTC` for seconds since the Unix epoch.
pub fn format_utc(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Proleptic Gregorian date for a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_control_escapes_c0_c1_and_del() {
        assert!(matches!(escape_control("plain ünïcode"), Cow::Borrowed(_)));
        assert_eq!(escape_control("a\x1b[31mred"), "a\\x1b[31mred");
        assert_eq!(escape_control("nl\nnul\0tab\t"), "nl\\x0anul\\x00tab\\x09");
        assert_eq!(escape_control("del\x7f"), "del\\x7f");
        assert_eq!(escape_control("csi\u{9b}x"), "csi\\x9bx");
        assert_eq!(escape_control("back\\slash"), "back\\slash");
    }

    #[test]
    fn escape_control_escapes_bidi_controls() {
        assert_eq!(
            escape_control("invoice\u{202e}gpj.exe"),
            "invoice\\u{202e}gpj.exe"
        );
        for c in [
            '\u{061c}', '\u{200e}', '\u{200f}', '\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}',
            '\u{202e}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
        ] {
            let s = format!("a{c}b");
            let escaped = escape_control(&s);
            assert_eq!(escaped, format!("a\\u{{{:04x}}}b", c as u32));
            assert!(escaped.is_ascii(), "{escaped}");
        }
        // Neighbours that do not reorder text stay: ZWJ (emoji), the Hebrew and
        // Arabic letters themselves.
        for s in ["\u{200d}", "\u{2065}", "\u{202f}", "שלום", "سلام"] {
            assert!(matches!(escape_control(s), Cow::Borrowed(_)), "{s:?}");
        }
    }

    #[test]
    fn escape_control_escapes_invisible_characters() {
        for c in ['\u{200b}', '\u{2060}', '\u{feff}', '\u{2028}', '\u{ad}'] {
            let s = format!("a{c}b");
            assert_eq!(escape_control(&s), format!("a\\u{{{:04x}}}b", c as u32));
        }
        // Emoji sequences keep their joiner.
        assert!(matches!(
            escape_control("\u{1f468}\u{200d}\u{1f469}"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn only_a_broken_pipe_is_a_closed_stdout() {
        let closed = StdoutError::from(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(matches!(closed, StdoutError::Closed));
        let err = anyhow::Error::from(closed).context("listing");
        assert!(StdoutError::is_closed(&err));
        let full = StdoutError::from(io::Error::from(io::ErrorKind::StorageFull));
        assert!(!StdoutError::is_closed(&full.into()));
        // A server that went away is a network error, never a closed stdout.
        let net = anyhow::Error::from(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(!StdoutError::is_closed(&net));
    }

    #[test]
    fn sizes_are_human() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1536 * 1024), "1.5 MiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_utc(1_777_636_800), "2026-05-01 12:00:00 UTC");
    }
}
