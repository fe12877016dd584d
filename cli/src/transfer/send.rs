//! Handing one file to another user over an open session: the [`push`](super::push)
//! engine aimed at the recipient's inbox (`inbox/<you>/<NAME>`), and the line that says
//! it arrived. Used by `xfer send` and by `/send` in interactive chat.

use std::path::Path;

use super::progress::Progress;
use super::push::{Destination, push_file};
use super::{Failure, Options, Outcome, local_basename, result_line};
use crate::client::Client;
use crate::output::escape_control;

/// Hands `local` to `to` under its file name over an open session.
///
/// # Errors
/// As [`push_file`]; a local name that is not UTF-8 is a [`Failure::File`].
pub async fn send_file(
    client: &mut Client,
    local: &Path,
    to: &str,
    opts: &Options,
    progress: &Progress,
) -> Result<(String, Outcome), Failure> {
    let name = local_basename(local).map_err(|e| Failure::File(e.into()))?;
    let dest = Destination::Inbox { to, name: &name };
    let outcome = push_file(client, local, dest, opts, progress).await?;
    Ok((name, outcome))
}

/// The line shown when a file reached the recipient, e.g.
/// `trip.mp4 -> bob  1.2 GiB  done, BLAKE3 9f2c0a11b3e4…`.
pub fn sent_line(name: &str, to: &str, outcome: &Outcome) -> String {
    let label = format!("{} -> {}", escape_control(name), escape_control(to));
    result_line(
        &label,
        "  already there (same content), nothing sent",
        outcome,
    )
}

#[cfg(test)]
mod tests {
    use xfer_proto::Digest;

    use super::*;

    #[test]
    fn result_lines() {
        let done = Outcome::Done {
            size: 2048,
            digest: Digest([0x9f; 32]),
            verified: 0,
            resumed_at: None,
            transferred: 2048,
        };
        assert_eq!(
            sent_line("a.png", "bob", &done),
            "a.png -> bob  2.0 KiB  done, BLAKE3 9f9f9f9f9f9f…"
        );
        assert!(sent_line("a", "bob", &Outcome::UpToDate).contains("already there"));
    }
}
