//! `xferd status`, `xferd kick USER`, `xferd reload`: ask the running daemon over its
//! control socket, found through the same configuration the daemon reads.

use std::io::Write as _;

use anyhow::bail;

use crate::Config;
use crate::control::client::{ClientError, request};
use crate::control::{ControlReply, ControlRequest, render};

fn ask(config: &Config, req: &ControlRequest) -> anyhow::Result<ControlReply> {
    match request(&config.control_socket_path(), req)? {
        ControlReply::Error { message } => bail!("{message}"),
        reply => Ok(reply),
    }
}

/// Prints the daemon's status, as text or (`json`) one JSON object.
///
/// # Errors
/// No daemon answers, or it refused.
pub fn status(config: &Config, json: bool) -> anyhow::Result<()> {
    let ControlReply::Status(status) = ask(config, &ControlRequest::Status)? else {
        bail!("unexpected reply from xferd to `status`");
    };
    if json {
        say(&format!("{}\n", serde_json::to_string_pretty(&status)?));
    } else {
        say(&render::status(&status));
    }
    Ok(())
}

/// Ends every connection of `user` and says how many there were.
///
/// # Errors
/// No daemon answers, or it refused.
pub fn kick(config: &Config, user: &str) -> anyhow::Result<()> {
    let ControlReply::Kicked { connections, .. } = ask(
        config,
        &ControlRequest::Kick {
            user: user.to_owned(),
        },
    )?
    else {
        bail!("unexpected reply from xferd to `kick`");
    };
    say(&format!("ended {}\n", connections_of(connections, user)));
    Ok(())
}

/// Asks the daemon to reload and prints what it did.
///
/// # Errors
/// No daemon answers, or the reload failed (the daemon's error line).
pub fn reload(config: &Config) -> anyhow::Result<()> {
    let ControlReply::Reloaded { message } = ask(config, &ControlRequest::Reload)? else {
        bail!("unexpected reply from xferd to `reload`");
    };
    say(&format!("{message}\n"));
    Ok(())
}

/// After `user passwd|del`: ends the user's open connections on a running daemon, if
/// one answers. No daemon is fine (nothing is open); any other failure is a warning,
/// since the account change itself succeeded.
pub fn end_connections(config: &Config, user: &str) {
    let req = ControlRequest::Kick {
        user: user.to_owned(),
    };
    match request(&config.control_socket_path(), &req) {
        Ok(ControlReply::Kicked { connections, .. }) if connections > 0 => {
            say(&format!(
                "ended {} on the running xferd\n",
                connections_of(connections, user)
            ));
        }
        Ok(ControlReply::Kicked { .. }) | Err(ClientError::NotRunning(_)) => {}
        Ok(ControlReply::Error { message }) => {
            warn(&format!(
                "could not end {user}'s open connections: {message}"
            ));
        }
        Ok(_) => warn("unexpected reply from xferd to `kick`"),
        Err(e) => warn(&format!(
            "could not end {user}'s open connections: {e}; they stay open until they close"
        )),
    }
}

fn connections_of(n: usize, user: &str) -> String {
    let s = if n == 1 { "" } else { "s" };
    format!("{n} connection{s} of {user}")
}

/// Writes to stdout, ignoring a closed pipe (`xferd status | head -1`): what it reports
/// has already happened.
fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

fn warn(text: &str) {
    let _ = writeln!(std::io::stderr(), "xferd: warning: {text}");
}
