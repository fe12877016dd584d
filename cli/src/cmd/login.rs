//! `xfer login USER@HOST[:PORT]`: verify the server, send the password, save the session.
//!
//! The server is verified (CA or pinned fingerprint, see [`crate::trust`]) before the
//! password is even asked for, so it is only ever typed for, and sent to, a trusted server.

use std::io::{self, BufRead as _, IsTerminal as _};
use std::path::PathBuf;

use anyhow::{Context as _, Result, anyhow};
use xfer_certs::Fingerprint;
use xfer_proto::{ErrorCode, Secret};

use crate::error::{UsageError, is_remote};
use crate::home::{Home, SavedLogin};
use crate::output::{escape_control, print_line};
use crate::target::Target;
use crate::trust::{self, OnUnknown, PinPolicy};

/// Password attempts on one connection when asking on a terminal.
const MAX_PASSWORD_TRIES: u32 = 3;

/// Arguments of `xfer login`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Who to log in as, where; the user defaults to $USER, the port to 7443.
    #[arg(value_name = "[USER@]HOST[:PORT]")]
    pub target: String,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    pub password_stdin: bool,
    /// Trust and pin the server's certificate on first contact without asking.
    #[arg(long, conflicts_with = "ca")]
    pub accept_new: bool,
    /// Require this certificate fingerprint (from `xferd fingerprint`) and pin it.
    #[arg(long, value_name = "SHA256:…", conflicts_with = "ca")]
    pub fingerprint: Option<String>,
    /// Verify the server with this CA certificate (PEM) instead of a pinned fingerprint.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

/// Runs `xfer login`.
///
/// # Errors
/// Bad target or fingerprint (usage), untrusted server (host key), wrong password (auth),
/// network and protocol errors.
pub async fn run(home: &Home, args: Args) -> Result<()> {
    let target = Target::with_default_user(&args.target, local_user().as_deref())?;
    let explicit = args
        .fingerprint
        .as_deref()
        .map(|s| {
            s.parse::<Fingerprint>()
                .map_err(|e| UsageError(format!("invalid --fingerprint `{s}`: {e}")))
        })
        .transpose()?;
    let ca = args
        .ca
        .as_deref()
        .map(|p| std::path::absolute(p).with_context(|| format!("resolving `{}`", p.display())))
        .transpose()?;
    let stdin_tty = io::stdin().is_terminal();

    let mut client = match &ca {
        Some(ca) => trust::connect_ca(&target.server, ca).await?,
        None => {
            let on_unknown = if args.accept_new {
                OnUnknown::Accept
            } else if stdin_tty && io::stderr().is_terminal() {
                OnUnknown::Ask
            } else {
                OnUnknown::Refuse
            };
            let policy = PinPolicy {
                explicit,
                on_unknown,
            };
            trust::connect_pinned(home, &target.user, &target.server, policy).await?
        }
    };

    if !args.password_stdin && !stdin_tty {
        return Err(anyhow!(
            "no terminal to ask for the password; use --password-stdin"
        ));
    }
    let interactive = !args.password_stdin;
    let mut tries = 0;
    let (user, token, expires_unix) = loop {
        tries += 1;
        let prompt = format!(
            "{}@{} password: ",
            escape_control(&target.user),
            target.server.host
        );
        let password = read_password(args.password_stdin, prompt).await?;
        match client.login(&target.user, password).await {
            Ok(session) => break session,
            Err(e)
                if interactive
                    && tries < MAX_PASSWORD_TRIES
                    && is_remote(&e, ErrorCode::AuthFailed) =>
            {
                eprintln!("{}", escape_control(&e.to_string()));
            }
            Err(e) => return Err(e.context(format!("login to {target} failed"))),
        }
    };

    let mut logins = home.load_logins()?;
    let replaced = logins.insert_current(SavedLogin {
        user: target.user.clone(),
        host: target.server.host.clone(),
        port: target.server.port,
        token: token.clone(),
        expires_unix,
        ca,
    });
    home.save_logins(&logins)?;
    // The session this login replaces would otherwise stay valid on the server until
    // it expires, with nothing on this machine able to use or revoke it any more.
    // Best effort: an old token the server already dropped (expired, password changed)
    // or a server that cannot be reached now changes nothing about this login.
    if let Some(old) = replaced.filter(|old| old.token != token) {
        let _ = super::logout::revoke(home, &old).await;
    }
    print_line(format_args!(
        "Logged in as {} on {}.",
        escape_control(&user),
        target.server
    ))?;
    Ok(())
}

/// The local account name, as ssh takes it: `$USER`, then `$LOGNAME`.
fn local_user() -> Option<String> {
    ["USER", "LOGNAME"]
        .into_iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|u| !u.is_empty())
}

/// The password: the first line of stdin (without its line ending), or asked on the terminal.
async fn read_password(from_stdin: bool, prompt: String) -> Result<Secret> {
    tokio::task::spawn_blocking(move || -> Result<Secret> {
        if !from_stdin {
            let pw = rpassword::prompt_password(prompt).context("reading the password")?;
            return Ok(Secret::new(pw));
        }
        let mut line = String::new();
        let n = io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        if n == 0 {
            return Err(anyhow!("--password-stdin: standard input is empty"));
        }
        let pw = line
            .strip_suffix('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .unwrap_or(&line);
        Ok(Secret::new(pw))
    })
    .await
    .context("password prompt task failed")?
}
