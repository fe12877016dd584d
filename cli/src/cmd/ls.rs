//! `xfer ls [PATH] [-l] [--json] [--partial]`: list a remote directory (or describe one
//! file). Every name the server sends is checked to be one path component before
//! anything is printed, and control characters are escaped on output.

use std::io::IsTerminal;

use anyhow::{Context as _, Result};
use serde::Serialize;
use xfer_proto::{Entry, EntryKind};

use crate::home::Home;
use crate::output::{Format, escape_control, format_utc, human_bytes, print_line, print_lines};
use crate::session::open_session;
use crate::transfer::{check_name, normalize_remote};

/// Arguments of `xfer ls`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Remote directory or file (default: your home).
    #[arg(value_name = "PATH", default_value = "", hide_default_value = true)]
    pub path: String,
    /// Long format: size, modification time (UTC), BLAKE3, upload progress.
    #[arg(short = 'l', long = "long")]
    pub long: bool,
    /// Print one JSON array instead of text.
    #[arg(long)]
    pub json: bool,
    /// Show only uploads in progress.
    #[arg(long)]
    pub partial: bool,
    /// Sizes as 1.5 MiB (the default for -l on a terminal; piped output has exact bytes).
    #[arg(short = 'h', long = "human-readable")]
    pub human: bool,
    /// Print help (`-h` is --human-readable here, as in ls).
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

/// One entry as `ls --json` prints it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct EntryJson {
    name: String,
    kind: &'static str,
    size: u64,
    modified_unix: u64,
    digest: Option<String>,
    received: Option<u64>,
    expires_unix: Option<u64>,
}

impl From<&Entry> for EntryJson {
    fn from(e: &Entry) -> Self {
        EntryJson {
            name: e.name.clone(),
            kind: kind_name(e.kind),
            size: e.size,
            modified_unix: e.modified_unix,
            digest: e.digest.map(|d| d.to_string()),
            received: e.received,
            expires_unix: e.expires_unix,
        }
    }
}

fn kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::File => "file",
        EntryKind::Dir => "dir",
        EntryKind::Partial => "partial",
    }
}

/// Runs `xfer ls`.
///
/// # Errors
/// Not found (5), refused (10), a listing with an invalid name (protocol, 9), and the
/// usual auth, host key and network errors.
pub async fn run(home: &Home, args: Args) -> Result<()> {
    let (_login, mut client) = open_session(home).await?;
    let path = normalize_remote(&args.path);
    let entries = client
        .list(&path)
        .await
        .with_context(|| format!("listing `{}`", display_path(&path)))?;
    check_listing(&entries)?;
    let entries: Vec<&Entry> = entries
        .iter()
        .filter(|e| !args.partial || e.kind == EntryKind::Partial)
        .collect();
    match Format::from_flag(args.json) {
        Format::Json => {
            let json: Vec<EntryJson> = entries.iter().map(|e| EntryJson::from(*e)).collect();
            print_line(serde_json::to_string(&json)?)?;
        }
        Format::Human => {
            let style = Style {
                long: args.long,
                human: args.human || std::io::stdout().is_terminal(),
            };
            print_lines(entries.iter().map(|e| render(e, style)))?;
        }
    }
    Ok(())
}

fn display_path(path: &str) -> String {
    if path.is_empty() {
        "~".into()
    } else {
        escape_control(path).into_owned()
    }
}

/// Refuses a listing that contains any name that is not one path component.
///
/// # Errors
/// [`crate::error::ProtocolError`].
pub fn check_listing(entries: &[Entry]) -> Result<(), crate::error::ProtocolError> {
    entries.iter().try_for_each(|e| check_name(&e.name))
}

fn partial_note(e: &Entry) -> String {
    let received = e.received.unwrap_or(0);
    let pct = received
        .min(e.size)
        .saturating_mul(100)
        .checked_div(e.size)
        .unwrap_or(0);
    match e.expires_unix {
        Some(t) => format!("partial {pct}%, expires {}", format_utc(t)),
        None => format!("partial {pct}%"),
    }
}

/// How [`render`] lays a line out.
#[derive(Debug, Clone, Copy, Default)]
pub struct Style {
    /// `-l`: size, time, digest or progress, name.
    pub long: bool,
    /// Sizes in binary units instead of exact bytes.
    pub human: bool,
}

/// One line of human output.
pub fn render(e: &Entry, style: Style) -> String {
    let mut name = escape_control(&e.name).into_owned();
    if e.kind == EntryKind::Dir {
        name.push('/');
    }
    if !style.long {
        return match e.kind {
            EntryKind::Partial => format!("{name}  ({})", partial_note(e)),
            _ => name,
        };
    }
    let size = match e.kind {
        EntryKind::Dir => "-".to_string(),
        _ if style.human => human_bytes(e.size),
        _ => e.size.to_string(),
    };
    let info = match e.kind {
        EntryKind::Partial => partial_note(e),
        EntryKind::Dir => "-".to_string(),
        EntryKind::File => match e.digest {
            Some(d) => format!("{}…", &d.to_string()[..16]),
            None => "-".to_string(),
        },
    };
    format!(
        "{size:>12}  {}  {info:<17}  {name}",
        format_utc(e.modified_unix)
    )
}

#[cfg(test)]
mod tests {
    use xfer_proto::Digest;

    use super::*;

    fn entry(name: &str, kind: EntryKind) -> Entry {
        Entry {
            name: name.into(),
            kind,
            size: 200,
            modified_unix: 0,
            digest: (kind == EntryKind::File).then_some(Digest([0xab; 32])),
            received: (kind == EntryKind::Partial).then_some(84),
            expires_unix: (kind == EntryKind::Partial).then_some(86_400),
        }
    }

    #[test]
    fn listing_with_a_bad_name_is_refused_whole() {
        let good = vec![entry("a", EntryKind::File), entry("d", EntryKind::Dir)];
        assert!(check_listing(&good).is_ok());
        for bad in ["../x", "a/b", "..", ".", "", "a\0"] {
            let mut l = good.clone();
            l.push(entry(bad, EntryKind::File));
            let err = anyhow::Error::from(check_listing(&l).unwrap_err());
            assert_eq!(crate::exit_code(&err), 9, "{bad:?}");
        }
    }

    #[test]
    fn rendering() {
        let short = Style::default();
        let long = Style {
            long: true,
            human: false,
        };
        assert_eq!(render(&entry("d", EntryKind::Dir), short), "d/");
        assert_eq!(
            render(&entry("a\x1b[2J", EntryKind::File), short),
            "a\\x1b[2J"
        );
        assert_eq!(
            render(&entry("p", EntryKind::Partial), short),
            "p  (partial 42%, expires 1970-01-02 00:00:00 UTC)"
        );
        let line = render(&entry("a", EntryKind::File), long);
        assert!(line.contains(" 200  "), "{line}");
        assert!(line.contains("1970-01-01 00:00:00 UTC"), "{line}");
        assert!(line.contains("abababababababab…"), "{line}");
        let line = render(&entry("p", EntryKind::Partial), long);
        assert!(line.contains("partial 42%, expires 1970-01-02"), "{line}");
        let mut big = entry("big", EntryKind::File);
        big.size = 3 << 29;
        let human = Style {
            long: true,
            human: true,
        };
        assert!(
            render(&big, human).contains("  1.5 GiB  "),
            "{}",
            render(&big, human)
        );
        assert!(
            render(&big, long).contains("  1610612736  "),
            "{}",
            render(&big, long)
        );
    }

    #[test]
    fn json_shape() {
        let j = serde_json::to_value(EntryJson::from(&entry("a", EntryKind::File))).unwrap();
        assert_eq!(j["kind"], "file");
        assert_eq!(j["digest"], "ab".repeat(32));
        assert!(j["received"].is_null());
        let j = serde_json::to_value(EntryJson::from(&entry("p", EntryKind::Partial))).unwrap();
        assert_eq!(j["kind"], "partial");
        assert_eq!(j["received"], 84);
        assert!(j["digest"].is_null());
    }
}
