//! `xfer chat [TARGET] [--say TEXT | --history N | --follow] [--json]`: talk in channels
//! (`#name`) and directly to people (`@name`).
//!
//! - `--say TEXT` says one line to TARGET and exits, printing nothing.
//! - `--history N` prints TARGET's last N messages and exits.
//! - `--follow` prints messages as they arrive, one stable line each (see
//!   [`crate::chat::render::follow_line`]), or JSON objects with `--json`: TARGET's if it
//!   is a channel (joined), and always the direct messages and file notices to you.
//!   With `--history N` it prints the last N first. It reconnects by itself.
//! - `--catchup` prints unread counts per conversation, mentions of you and files
//!   handed to you since your read positions (kept on the server), in stable lines or
//!   one JSON object with `--json`, and exits. It moves no read position.
//! - Otherwise it is interactive, with line editing and slash commands. Without a
//!   TARGET nothing is joined: direct messages still arrive, `/join` picks a channel.

use std::io::Write as _;

use anyhow::{Context as _, Result};
use xfer_proto::{ChatEvent, ChatMessage, MAX_MESSAGE_LEN, Target, TargetError};

use crate::chat::command::MAX_HISTORY_COMMAND;
use crate::chat::complete::SharedNames;
use crate::chat::conn::ChatConn;
use crate::chat::execute::JOIN_HISTORY;
use crate::chat::render::{follow_line, json_line, missed_text};
use crate::chat::session::{Session, Ui};
use crate::chat::terminal::{InteractiveUi, Terminal};
use crate::error::UsageError;
use crate::home::Home;
use crate::output::escape_control;
use crate::session::open_session;

/// Arguments of `xfer chat`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// `#channel` or `@user` (quote `#channel`: an unquoted `#` starts a shell comment).
    #[arg(value_name = "TARGET")]
    pub target: Option<String>,
    /// Say TEXT to TARGET and exit; prints nothing on success.
    #[arg(
        long,
        value_name = "TEXT",
        allow_hyphen_values = true,
        requires = "target",
        conflicts_with_all = ["follow", "history", "json"]
    )]
    pub say: Option<String>,
    /// Print TARGET's last N messages and exit (with --follow: first, then follow).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_HISTORY_COMMAND)))]
    pub history: Option<u32>,
    /// Print messages as they arrive, one line each: TARGET's, and direct messages and
    /// file notices to you. Reconnects by itself; stop it with Ctrl-C.
    #[arg(long)]
    pub follow: bool,
    /// With --follow or --history: one JSON object per message; with --catchup, one
    /// JSON object.
    #[arg(long)]
    pub json: bool,
    /// Print unread counts per conversation, mentions of you and new inbox files since
    /// you last read (positions kept on the server), then exit.
    #[arg(long, conflicts_with_all = ["target", "say", "follow", "history"])]
    pub catchup: bool,
    /// Interactive: do not ring the terminal bell when a message names you (it is
    /// still highlighted).
    #[arg(long)]
    pub no_bell: bool,
}

/// Parses a TARGET argument, with a hint for a missing sigil.
///
/// # Errors
/// [`UsageError`].
pub fn parse_target(s: &str) -> Result<Target, UsageError> {
    Target::parse(s).map_err(|e| {
        let s = escape_control(s);
        match e {
            TargetError::NoSigil => UsageError(format!(
                "`{s}` is not a target: '#{s}' is a channel (quote it: an unquoted # starts a shell comment), @{s} a person"
            )),
            e => UsageError(format!("`{s}` is not a valid target: {e}")),
        }
    })
}

/// Runs `xfer chat`.
///
/// # Errors
/// Usage (2: bad target or flags, message over 4,000 bytes), auth (3), not found (5: no
/// such user), refused (10: not allowed by the server), network (8), protocol (9).
pub async fn run(home: &Home, args: Args) -> Result<()> {
    let target = args.target.as_deref().map(parse_target).transpose()?;
    if args.catchup {
        return catchup(home, args.json).await;
    }
    if let Some(text) = &args.say {
        let target = target.ok_or_else(|| UsageError("--say needs a TARGET".into()))?;
        return say(home, &target, text).await;
    }
    if args.follow {
        return follow(home, target.as_ref(), args.history.unwrap_or(0), args.json).await;
    }
    if let Some(count) = args.history {
        let target = target.ok_or_else(|| {
            UsageError(
                "--history without --follow needs a TARGET: xfer chat '#channel' --history N"
                    .into(),
            )
        })?;
        return history(home, &target, count, args.json).await;
    }
    if args.json {
        return Err(UsageError("--json goes with --follow, --history or --catchup".into()).into());
    }
    interactive(home, target, !args.no_bell).await
}

async fn say(home: &Home, target: &Target, text: &str) -> Result<()> {
    if text.len() > MAX_MESSAGE_LEN {
        return Err(UsageError(format!(
            "the message is {} bytes; at most {MAX_MESSAGE_LEN} fit in one",
            text.len()
        ))
        .into());
    }
    let (_login, client) = open_session(home).await?;
    ChatConn::new(client)
        .say(target, text)
        .await
        .with_context(|| format!("saying to {target}"))?;
    Ok(())
}

async fn catchup(home: &Home, json: bool) -> Result<()> {
    let (_login, client) = open_session(home).await?;
    let catchup = ChatConn::new(client)
        .catchup()
        .await
        .context("reading what is new")?;
    let lines = if json {
        vec![crate::chat::catchup::json(&catchup)]
    } else {
        crate::chat::catchup::script_lines(&catchup)
    };
    if lines.is_empty() {
        FollowUi::note("nothing new since you last read");
    }
    let mut out = std::io::stdout().lock();
    for line in lines {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(())
}

async fn history(home: &Home, target: &Target, count: u32, json: bool) -> Result<()> {
    let (_login, client) = open_session(home).await?;
    let messages = ChatConn::new(client)
        .history_last(target, count)
        .await
        .with_context(|| format!("reading the history of {target}"))?;
    let mut ui = FollowUi::new(json);
    for m in &messages {
        ui.message(m, "");
    }
    Ok(())
}

async fn follow(home: &Home, target: Option<&Target>, count: u32, json: bool) -> Result<()> {
    let mut ui = FollowUi::new(json);
    let mut session = Session::open(home).await?;
    let me = escape_control(&session.state.me).into_owned();
    let what = match target {
        Some(t @ Target::Channel(c)) => {
            let (members, replay) = session
                .join(c, count)
                .await
                .with_context(|| format!("joining {t}"))?;
            session.show_new(replay, &mut ui);
            format!("{members}, and direct messages and file notices to {me}")
        }
        Some(t @ Target::User(_)) => {
            if count > 0 {
                let messages = session.conn()?.history_last(t, count).await?;
                session.show_new(messages, &mut ui);
            }
            format!("direct messages and file notices to {me}")
        }
        None => format!("direct messages and file notices to {me}"),
    };
    // On stderr, so scripts reading stdout see messages only; it also says when
    // following has begun.
    ui.info(&format!("following {what}"));
    session.run(&mut ui, None).await
}

async fn interactive(home: &Home, target: Option<Target>, bell: bool) -> Result<()> {
    let mut session = Session::open(home).await?;
    session.keep_read_positions().await?;
    let names = SharedNames::default();
    let (term, input) = Terminal::start(std::sync::Arc::clone(&names))?;
    let mut ui = InteractiveUi::new(term, names, bell);
    ui.talking_in(target.as_ref());
    ui.info(&format!(
        "connected as {}; /help lists commands, /quit leaves",
        escape_control(&session.state.me)
    ));
    match &target {
        Some(t @ Target::Channel(c)) => {
            let (members, replay) = session
                .join(c, JOIN_HISTORY)
                .await
                .with_context(|| format!("joining {t}"))?;
            ui.info(&format!("joined {members}"));
            session.show_backlog(t, replay, &mut ui);
        }
        Some(t @ Target::User(_)) => {
            let messages = session.conn()?.history_last(t, JOIN_HISTORY).await?;
            ui.info(&format!("talking to {t}"));
            session.show_backlog(t, messages, &mut ui);
        }
        None => ui.info("no channel joined: /join #channel, /msg USER text, /channels"),
    }
    session.state.target = target;
    session.run(&mut ui, Some(input)).await
}

/// `--follow` and `--history` output: messages on stdout, one line each; notes on
/// stderr. A closed stdout ends the session quietly.
struct FollowUi {
    json: bool,
    closed: bool,
}

impl FollowUi {
    fn new(json: bool) -> Self {
        FollowUi {
            json,
            closed: false,
        }
    }

    fn note(text: &str) {
        let _ = writeln!(std::io::stderr(), "xfer: {text}");
    }
}

impl Ui for FollowUi {
    fn message(&mut self, msg: &ChatMessage, _me: &str) {
        let line = if self.json {
            json_line(msg)
        } else {
            follow_line(msg)
        };
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            self.closed = true;
        }
    }

    fn event(&mut self, event: &ChatEvent) {
        if let ChatEvent::Missed { target, count } = event {
            Self::note(&missed_text(target, *count));
        }
    }

    fn info(&mut self, text: &str) {
        Self::note(text);
    }

    fn error(&mut self, text: &str) {
        Self::note(text);
    }

    fn closed(&self) -> bool {
        self.closed
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(argv: &[&str]) -> Result<Args, clap::Error> {
        let mut all = vec!["chat"];
        all.extend_from_slice(argv);
        Cli::try_parse_from(all).map(|c| c.args)
    }

    #[test]
    fn script_flags_combine_sensibly() {
        let a = parse(&["#lab", "--say", "-1 is a number"]).unwrap();
        assert_eq!(a.say.as_deref(), Some("-1 is a number"));
        assert!(parse(&["--say", "hi"]).is_err(), "--say needs a target");
        assert!(parse(&["#lab", "--say", "hi", "--follow"]).is_err());
        assert!(parse(&["#lab", "--say", "hi", "--json"]).is_err());
        let a = parse(&["#lab", "--follow", "--history", "5", "--json"]).unwrap();
        assert!(a.follow && a.json && a.history == Some(5));
        assert!(parse(&["--follow"]).is_ok(), "follow without a target");
        assert!(parse(&["#lab", "--history", "1001"]).is_err());
        assert!(parse(&["--catchup", "--json"]).is_ok());
        assert!(
            parse(&["#lab", "--catchup"]).is_err(),
            "catch-up is everywhere"
        );
        assert!(parse(&["--catchup", "--follow"]).is_err());
    }

    #[test]
    fn targets_need_a_sigil() {
        assert_eq!(
            parse_target("#General").unwrap(),
            Target::Channel("general".parse().unwrap())
        );
        assert_eq!(
            parse_target("@bob").unwrap(),
            Target::User("bob".parse().unwrap())
        );
        let e = parse_target("general").unwrap_err().to_string();
        assert!(e.contains("'#general'") && e.contains("@general"), "{e}");
        let e = parse_target("#no way").unwrap_err().to_string();
        assert!(e.contains("not a valid target"), "{e}");
        let e = parse_target("@\x1b[2J").unwrap_err().to_string();
        assert!(!e.contains('\x1b'), "{e}");
    }
}
