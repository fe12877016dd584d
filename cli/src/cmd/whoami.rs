//! `xfer whoami`: who the saved session belongs to, on which server, verified how,
//! until when, and how much space it uses.

use anyhow::Result;
use serde::Serialize;

use crate::client::Identity;
use crate::home::Home;
use crate::output::{Format, escape_control, format_utc, human_bytes, print_line, print_lines};
use crate::session::open_session;

/// Arguments of `xfer whoami`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What `whoami --json` prints.
#[derive(Debug, Serialize)]
struct WhoAmIJson {
    user: String,
    server: String,
    fingerprint: Option<String>,
    session_expires_unix: u64,
    quota_used_bytes: u64,
    quota_limit_bytes: Option<u64>,
}

/// Runs `xfer whoami`.
///
/// # Errors
/// Not logged in or session expired (auth); host key, network and protocol errors.
pub async fn run(home: &Home, args: Args) -> Result<()> {
    let (login, mut client) = open_session(home).await?;
    let who = client.whoami().await?;
    let server = login.server().host_port();
    match Format::from_flag(args.json) {
        Format::Json => {
            let fingerprint = match client.identity() {
                Some(Identity::Pinned(fp)) => Some(fp.to_string()),
                _ => None,
            };
            let json = WhoAmIJson {
                user: who.user,
                server,
                fingerprint,
                session_expires_unix: who.session_expires_unix,
                quota_used_bytes: who.quota_used_bytes,
                quota_limit_bytes: who.quota_limit_bytes,
            };
            print_line(serde_json::to_string(&json)?)?;
        }
        Format::Human => {
            let verified = match client.identity() {
                Some(Identity::Pinned(fp)) => fp.to_string(),
                Some(Identity::Ca(ca)) => format!("verified by CA {}", ca.display()),
                None => "unverified".to_string(),
            };
            let used = human_bytes(who.quota_used_bytes);
            let quota = match who.quota_limit_bytes {
                Some(limit) => format!("quota used {used} of {}", human_bytes(limit)),
                None => format!("quota used {used} (no limit)"),
            };
            print_lines([
                format!("{} on {server} ({verified})", escape_control(&who.user)),
                format!("session expires {}", format_utc(who.session_expires_unix)),
                quota,
            ])?;
        }
    }
    Ok(())
}
