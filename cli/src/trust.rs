//! Deciding whether to trust a server's certificate: a CA file, or a fingerprint pinned
//! in known hosts on first use (the OpenSSH model).
//!
//! Every connection verifies the server before anything is sent: the pinned verifier
//! fails the handshake unless the certificate matches the expected fingerprint, so on
//! first contact the first handshake always fails, the fingerprint it saw is shown or
//! checked, and a second, pinned connection is made once it is trusted.

use std::io::{self, BufRead as _, Write as _};
use std::path::Path;

use anyhow::{Context as _, Result};
use xfer_certs::config::{client_config_ca, client_config_pinned};
use xfer_certs::{Fingerprint, KnownHosts, PinnedVerifier};

use crate::client::{Client, ConnectError, Identity};
use crate::error::HostKeyError;
use crate::home::{Home, SavedLogin};
use crate::target::ServerAddr;

/// What to do with a server this machine has never pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnknown {
    /// Refuse (non-interactive, or a command other than `login`).
    Refuse,
    /// Pin whatever it presents (`--accept-new`).
    Accept,
    /// Show the fingerprint and ask on the terminal.
    Ask,
}

/// How `login` trusts a server without a CA.
#[derive(Debug, Clone, Copy)]
pub struct PinPolicy {
    /// `--fingerprint`: the certificate must be this one; it is pinned if it is.
    pub explicit: Option<Fingerprint>,
    /// What to do on first contact without `explicit`.
    pub on_unknown: OnUnknown,
}

/// Connects for the saved `login`, with its CA or its pinned fingerprint; never pins.
///
/// # Errors
/// [`HostKeyError`] if the server is not trusted; network and protocol errors.
pub async fn connect_saved(home: &Home, login: &SavedLogin) -> Result<Client> {
    let server = login.server();
    match &login.ca {
        Some(ca) => connect_ca(&server, ca).await,
        None => {
            let policy = PinPolicy {
                explicit: None,
                on_unknown: OnUnknown::Refuse,
            };
            connect_pinned(home, &login.user, &server, policy).await
        }
    }
}

/// Connects to `server`, verifying it against the CA in `ca`.
///
/// # Errors
/// The CA cannot be loaded; [`HostKeyError::NotValidForCa`]; network and protocol errors.
pub async fn connect_ca(server: &ServerAddr, ca: &Path) -> Result<Client> {
    let config = client_config_ca(ca)?;
    match Client::connect(server, config).await {
        Ok(client) => Ok(client.with_identity(Identity::Ca(ca.to_path_buf()))),
        Err(ConnectError::Tls {
            rustls: Some(rustls::Error::InvalidCertificate(reason)),
            ..
        }) => Err(HostKeyError::NotValidForCa {
            host_port: server.host_port(),
            ca: ca.to_path_buf(),
            reason: reason.to_string(),
        }
        .into()),
        Err(e) => Err(e.into_error()),
    }
}

/// Connects to `server`, trusting the fingerprint given in `policy`, else the one pinned
/// in known hosts, else (first contact) as `policy.on_unknown` says. `user` is only
/// used in the hint of a changed-certificate error.
///
/// # Errors
/// [`HostKeyError`] if the certificate is not trusted; network and protocol errors.
pub async fn connect_pinned(
    home: &Home,
    user: &str,
    server: &ServerAddr,
    policy: PinPolicy,
) -> Result<Client> {
    let key = server.host_port();
    let mut known = KnownHosts::load(&home.known_hosts_path())?;
    let pinned = known.lookup(&key);
    let expected = policy.explicit.or(pinned.map(|(fp, _)| fp));

    let actual = match attempt(server, expected).await {
        Ok(client) => {
            if let Some(fp) = policy.explicit
                && pinned.map(|(old, _)| old) != Some(fp)
            {
                if let Some((old, line)) = pinned {
                    eprintln!(
                        "xfer: replacing pinned {old} for {key} ({} line {line}) with {fp}",
                        known.path().display()
                    );
                }
                known.pin(&key, fp)?;
            }
            return Ok(client);
        }
        Err(Rejected::Other(e)) => return Err(e),
        Err(Rejected::Certificate(actual)) => actual,
    };

    let host_port = key.clone();
    if let Some(expected) = policy.explicit {
        return Err(HostKeyError::Mismatch {
            host_port,
            expected,
            actual,
        }
        .into());
    }
    if let Some((pinned, line)) = pinned {
        let path = known.path().to_path_buf();
        let user = user.to_string();
        return Err(HostKeyError::Changed {
            host_port,
            user,
            pinned,
            actual,
            path,
            line,
        }
        .into());
    }
    let trusted = match policy.on_unknown {
        OnUnknown::Accept => true,
        OnUnknown::Ask => ask_trust(&key, actual).await?,
        OnUnknown::Refuse => return Err(HostKeyError::Unknown { host_port, actual }.into()),
    };
    if !trusted {
        return Err(HostKeyError::Declined { host_port, actual }.into());
    }
    // Reconnect requiring exactly the certificate the user accepted; pin only once
    // that connection is up, so a server that swaps certificates is never pinned.
    match attempt(server, Some(actual)).await {
        Ok(client) => {
            known.pin(&key, actual)?;
            eprintln!("Pinned {actual} for {key}");
            Ok(client)
        }
        Err(Rejected::Other(e)) => Err(e),
        Err(Rejected::Certificate(now)) => Err(HostKeyError::Mismatch {
            host_port,
            expected: actual,
            actual: now,
        }
        .into()),
    }
}

enum Rejected {
    /// The server presented this certificate, which is not the expected one.
    Certificate(Fingerprint),
    /// Anything else.
    Other(anyhow::Error),
}

async fn attempt(server: &ServerAddr, expected: Option<Fingerprint>) -> Result<Client, Rejected> {
    let verifier = PinnedVerifier::new(expected);
    let config = client_config_pinned(verifier.clone());
    match Client::connect(server, config).await {
        Ok(client) => match expected {
            Some(fp) => Ok(client.with_identity(Identity::Pinned(fp))),
            None => Err(Rejected::Other(anyhow::anyhow!(
                "internal error: an unpinned connection to {server} was accepted"
            ))),
        },
        Err(e) => match verifier.seen() {
            Some(actual) if Some(actual) != expected => Err(Rejected::Certificate(actual)),
            _ => Err(Rejected::Other(e.into_error())),
        },
    }
}

async fn ask_trust(key: &str, actual: Fingerprint) -> Result<bool> {
    let prompt = format!(
        "{key} presents a certificate this machine has not seen:\n  {actual}\n\
         Compare it with `xferd fingerprint` on the server. Trust it? [y/N] "
    );
    let answer = tokio::task::spawn_blocking(move || -> io::Result<String> {
        let mut err = io::stderr().lock();
        err.write_all(prompt.as_bytes())?;
        err.flush()?;
        let mut line = String::new();
        io::stdin().lock().read_line(&mut line)?;
        Ok(line)
    })
    .await
    .context("terminal prompt task failed")?
    .context("reading the answer from the terminal")?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}
