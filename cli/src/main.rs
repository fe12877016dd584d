//! `xfer`: parse the command line, run the subcommand, print any error as one line on
//! stderr and exit with the code of its kind (see [`xfer::ErrorKind`]). A stdout whose
//! reader went away (`xfer ls | head -1`) ends the command quietly with 0.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{CommandFactory as _, Parser, Subcommand};
use xfer::cmd;
use xfer::home::Home;
use xfer::output::{StdoutError, escape_control};

/// Log in to an xferd server, move files, chat.
#[derive(Debug, Parser)]
#[command(name = "xfer", version, about)]
struct Cli {
    /// Where to keep known hosts, saved logins and transfer state [env: XFER_HOME].
    // Read from the environment by hand: clap shows an env-backed value in every usage
    // line as if it were a required argument.
    #[arg(long, global = true, value_name = "DIR")]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Log in as USER on HOST and make it the current login.
    Login(cmd::login::Args),
    /// Revoke the current session and forget it.
    Logout(cmd::logout::Args),
    /// Show who the current session belongs to, the server, and quota used.
    Whoami(cmd::whoami::Args),
    /// Print the current session's token, for `Authorization: Bearer` on the HTTP API.
    Token(cmd::token::Args),
    /// List a remote directory.
    // `-h` is --human-readable, as in ls; help stays on --help.
    #[command(disable_help_flag = true)]
    Ls(cmd::ls::Args),
    /// Upload files (resumes an interrupted upload).
    #[command(override_usage = "xfer push [OPTIONS] LOCAL... [REMOTE]")]
    Push(cmd::push::Args),
    /// Download files (resumes an interrupted download).
    #[command(override_usage = "xfer pull [OPTIONS] REMOTE... [LOCAL]")]
    Pull(cmd::pull::Args),
    /// Remove a remote file or directory.
    Rm(cmd::rm::Args),
    /// Create a remote directory.
    Mkdir(cmd::mkdir::Args),
    /// Rename a remote file or directory.
    Mv(cmd::mv::Args),
    /// Hand files to another user: they land in their inbox (resumes an interrupted send).
    Send(cmd::send::Args),
    /// Chat in #channels and with @people (interactive, or --say/--history/--follow).
    Chat(cmd::chat::Args),
    /// Print a shell completion script: `xfer completions bash > /etc/bash_completion.d/xfer`.
    Completions(xfer_clidoc::CompletionsArgs),
    /// Write man pages: xfer.1 and one per subcommand into DIR, or xfer.1 to stdout.
    Man(xfer_clidoc::ManArgs),
}

fn main() -> ExitCode {
    xfer_glibc::reexec_with(&[xfer_glibc::REP_MOVSB_THRESHOLD]);
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader has what it wanted; saying so on stderr would be noise.
        Err(err) if StdoutError::is_closed(&err) => ExitCode::SUCCESS,
        Err(err) if err.is::<Interrupted>() => {
            eprintln!("\nxfer: {err}");
            ExitCode::from(130)
        }
        Err(err) => {
            eprintln!("xfer: {}", message(&err));
            ExitCode::from(xfer::exit_code(&err))
        }
    }
}

/// The error as printed: one line, escaped (invisible characters too), without `os error N` tails; a changed server
/// certificate is the one exception, a short block of lines (as OpenSSH's warning).
fn message(err: &anyhow::Error) -> String {
    let block = err.chain().find_map(|c| match c.downcast_ref() {
        Some(changed @ xfer::error::HostKeyError::Changed { .. }) => Some(changed.to_string()),
        _ => None,
    });
    match block {
        Some(block) => block
            .lines()
            .map(|l| escape_control(l).into_owned())
            .collect::<Vec<_>>()
            .join("\n"),
        // Names in an error are shown with even their joiners escaped: a message is no
        // place for emoji sequences, and a look-alike name must show what it holds.
        None => {
            let line =
                escape_control(&xfer::error::strip_os_error(&format!("{err:#}"))).into_owned();
            xfer_proto::text::escape_name(&line).into_owned()
        }
    }
}

/// An error of `xfer completions` or `xfer man`: a broken pipe can only be stdout's
/// (pages written into a directory are files); anything else stays as it was.
fn written(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        StdoutError::Closed.into()
    } else {
        e.into()
    }
}

fn run(cli: Cli) -> Result<()> {
    // These describe the command line itself: no home directory, no server.
    match &cli.command {
        Command::Completions(args) => {
            return xfer_clidoc::print_completions(Cli::command(), args).map_err(written);
        }
        Command::Man(args) => {
            return xfer_clidoc::print_man(Cli::command(), args).map_err(written);
        }
        _ => {}
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let home = Home::open(cli.home.or_else(|| {
        std::env::var_os("XFER_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    }))?;
    runtime.block_on(async {
        match cli.command {
            Command::Login(args) => cmd::login::run(&home, args).await,
            Command::Logout(args) => cmd::logout::run(&home, args).await,
            Command::Whoami(args) => cmd::whoami::run(&home, args).await,
            Command::Token(args) => cmd::token::run(&home, args).await,
            Command::Ls(args) => cmd::ls::run(&home, args).await,
            Command::Push(args) => interruptible(cmd::push::run(&home, args)).await,
            Command::Pull(args) => interruptible(cmd::pull::run(&home, args)).await,
            Command::Rm(args) => cmd::rm::run(&home, args).await,
            Command::Mkdir(args) => cmd::mkdir::run(&home, args).await,
            Command::Mv(args) => cmd::mv::run(&home, args).await,
            Command::Send(args) => interruptible(cmd::send::run(&home, args)).await,
            Command::Chat(args) => cmd::chat::run(&home, args).await,
            Command::Completions(_) | Command::Man(_) => unreachable!("handled above"),
        }
    })
}

/// Ctrl-C during a transfer, with what was kept and how to continue.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.as_deref().unwrap_or("interrupted"))]
struct Interrupted(Option<String>);

/// Runs a transfer command until it ends or Ctrl-C stops it. Whatever moved is kept
/// (the server's verified chunks, the local part file), so the note says how much and
/// that re-running the command resumes; the exit code is 130, as for a shell's SIGINT.
async fn interruptible(command: impl Future<Output = Result<()>>) -> Result<()> {
    // Pinned here, so the transfer (and what it says it moved) outlives the select.
    let command = std::pin::pin!(command);
    tokio::select! {
        done = command => done,
        Ok(()) = tokio::signal::ctrl_c() => {
            Err(Interrupted(xfer::transfer::progress::interrupted_note()).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn ca_conflicts_with_fingerprint_flags() {
        let r = Cli::try_parse_from(["xfer", "login", "a@h", "--ca", "x", "--accept-new"]);
        assert!(r.is_err());
    }
}
