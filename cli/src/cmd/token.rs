//! `xfer token`: prints the current session's token, for
//! `Authorization: Bearer TOKEN` on xferd's HTTP API (docs/HTTP.md). It is the CLI's own
//! session, checked with the server first, so it never prints a dead token: it lives as
//! long as that session and ends with `xfer logout` (or `xferd user del`). No new
//! session is minted, so nothing accumulates on the server.

use anyhow::Result;
use serde_json::json;

use crate::home::Home;
use crate::output::print_line;
use crate::session::open_session;

/// Arguments of `xfer token`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print one JSON object (token, user, server) instead of the bare token.
    #[arg(long)]
    pub json: bool,
}

/// Runs `xfer token`.
///
/// # Errors
/// Not logged in or session expired (auth); host key, network and protocol errors.
pub async fn run(home: &Home, args: Args) -> Result<()> {
    let (login, mut client) = open_session(home).await?;
    let who = client.whoami().await?;
    let token = login.token.expose().to_owned();
    if args.json {
        let server = login.server().host_port();
        print_line(serde_json::to_string(&json!({
            "token": token,
            "user": who.user,
            "server": server,
            "url": format!("https://{server}/"),
            "expires_unix": who.session_expires_unix,
        }))?)?;
    } else {
        print_line(token)?;
    }
    Ok(())
}
