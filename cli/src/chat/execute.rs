//! Carrying out what was typed in interactive chat: messages to the current target and
//! the slash commands of [`crate::chat::command`]. A refusal by the server (no such
//! user, not a member) is shown and the session goes on; a lost connection is returned
//! so the session reconnects.

use std::path::PathBuf;

use anyhow::Result;
use xfer_proto::{ChannelName, ChatMessage, MAX_MESSAGE_LEN, MessageBody, Target};

use super::command::{self, Command, HELP, WhoScope};
use super::render::{channel_list, presence_list};
use super::session::{Session, Ui, retryable};
use super::state::PASTE_ASK;
use crate::error::RemoteError;
use crate::output::escape_control;
use crate::session::open_session;
use crate::transfer::progress::{Direction, Progress};
use crate::transfer::send::{send_file, sent_line};
use crate::transfer::{Options, local_basename};

/// Messages shown when joining a channel in interactive mode.
pub const JOIN_HISTORY: u32 = 20;

impl Session {
    /// Carries out one typed line; true when it asks to leave.
    ///
    /// # Errors
    /// Only what the session must act on: a lost connection, or a failure that ends it.
    pub async fn execute_line(&mut self, line: &str, ui: &mut impl Ui) -> Result<bool> {
        let commands = if self.state.paste.is_empty() {
            match command::parse_input(line) {
                Ok(commands) => commands,
                Err(e) => {
                    ui.error(&e);
                    return Ok(false);
                }
            }
        } else {
            // The answer to "send N lines?".
            let lines = std::mem::take(&mut self.state.paste);
            if !matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
                ui.info(&format!(
                    "paste of {} lines cancelled: nothing was sent",
                    lines.len()
                ));
                return Ok(false);
            }
            lines.into_iter().map(Command::Say).collect()
        };
        if line.contains('\n') && commands.len() > PASTE_ASK {
            let n = commands.len();
            self.state.paste = commands
                .into_iter()
                .filter_map(|c| match c {
                    Command::Say(text) => Some(text),
                    _ => None,
                })
                .collect();
            ui.info(&format!(
                "pasting {n} lines: y sends them, anything else cancels"
            ));
            return Ok(false);
        }
        for cmd in commands {
            match self.execute(cmd, ui).await {
                Err(e) if !retryable(&e) && e.chain().any(|c| c.is::<RemoteError>()) => {
                    ui.error(&escape_control(&format!("{e:#}")));
                    // The rest of a paste is not sent after a refused line.
                    return Ok(false);
                }
                Ok(false) => {}
                other => return other,
            }
        }
        Ok(false)
    }

    async fn execute(&mut self, cmd: Command, ui: &mut impl Ui) -> Result<bool> {
        match cmd {
            Command::Say(text) => match self.state.target.clone() {
                Some(target) => self.say(&target, &text, ui).await?,
                None => ui.error("no current target: /join #channel or /query USER first"),
            },
            Command::Msg { to, text } => self.say(&Target::User(to), &text, ui).await?,
            Command::Join(channel) => self.join_command(&channel, ui).await?,
            Command::Part(channel) => self.part_command(channel, ui).await?,
            Command::Query(user) => {
                ui.info(&format!(
                    "now talking to @{user} (/history shows earlier messages)"
                ));
                self.state.target = Some(Target::User(user));
            }
            Command::Who(scope) => {
                let channel = match scope {
                    WhoScope::Current => match &self.state.target {
                        Some(Target::Channel(c)) => Some(c.clone()),
                        _ => None,
                    },
                    WhoScope::Channel(c) => Some(c),
                    WhoScope::Everyone => None,
                };
                let users = self.conn()?.who(channel.as_ref()).await?;
                let names = users.iter().map(|p| p.user.to_string());
                self.state.known_users.extend(names);
                let scope = channel.map_or_else(|| "online".to_owned(), |c| c.to_string());
                ui.info(&format!("{scope}: {}", presence_list(&users)));
            }
            Command::Channels => {
                let channels = self.conn()?.channels().await?;
                ui.info(&channel_list(&channels));
            }
            Command::Send { to, path } => self.send_command(to, path, ui),
            Command::History(n) => self.history_command(n, ui).await?,
            Command::Away(away) => {
                let away = away.unwrap_or(!self.state.away);
                self.conn()?.set_away(away).await?;
                self.state.away = away;
                ui.info(if away {
                    "you are marked away"
                } else {
                    "you are back"
                });
            }
            Command::Quit => return Ok(true),
            Command::Clear => ui.clear(),
            Command::Catchup => {
                // What is on screen counts as read first.
                self.send_read_marks().await?;
                let catchup = self.conn()?.catchup().await?;
                super::catchup::human_lines(&catchup)
                    .iter()
                    .for_each(|l| ui.info(l));
            }
            Command::Help => HELP.lines().for_each(|l| ui.info(l)),
        }
        Ok(false)
    }

    /// Says `text` to `target` and shows it as the server stored it. Its id moves no
    /// replay mark: messages queued for this connection may have smaller ids.
    async fn say(&mut self, target: &Target, text: &str, ui: &mut impl Ui) -> Result<()> {
        if text.len() > MAX_MESSAGE_LEN {
            ui.error(&format!(
                "not sent: the message is {} bytes; at most {MAX_MESSAGE_LEN} fit",
                text.len()
            ));
            return Ok(());
        }
        let (id, time_unix_ms) = self.conn()?.say(target, text).await?;
        let msg = ChatMessage {
            id,
            time_unix_ms,
            from: self.state.me.clone(),
            target: target.clone(),
            body: MessageBody::Text(text.to_string()),
        };
        self.show_new(vec![msg], ui);
        Ok(())
    }

    async fn join_command(&mut self, channel: &ChannelName, ui: &mut impl Ui) -> Result<()> {
        let here = Target::Channel(channel.clone());
        if !self.state.joined.contains(channel) {
            let (members, replay) = self.join(channel, JOIN_HISTORY).await?;
            ui.info(&format!("joined {members}"));
            ui.talking_in(Some(&here));
            self.show_backlog(&here, replay, ui);
        } else {
            ui.info(&format!("now talking in {channel}"));
        }
        self.state.target = Some(here);
        Ok(())
    }

    async fn part_command(&mut self, channel: Option<ChannelName>, ui: &mut impl Ui) -> Result<()> {
        let channel = match (channel, &self.state.target) {
            (Some(c), _) => c,
            (None, Some(Target::Channel(c))) => c.clone(),
            (None, _) => {
                ui.error("not in a channel: /part #channel");
                return Ok(());
            }
        };
        if !self.state.joined.contains(&channel) {
            ui.error(&format!("you are not in {channel}"));
            return Ok(());
        }
        self.conn()?.part(&channel).await?;
        self.state.joined.remove(&channel);
        if self.state.target.as_ref().and_then(Target::channel) == Some(&channel) {
            self.state.target = self.state.joined.first().cloned().map(Target::Channel);
        }
        ui.info(&format!("left {channel}"));
        Ok(())
    }

    async fn history_command(&mut self, count: u32, ui: &mut impl Ui) -> Result<()> {
        let Some(target) = self.state.target.clone() else {
            ui.error("no current target: /join #channel or /query USER first");
            return Ok(());
        };
        let messages = self.conn()?.history_last(&target, count).await?;
        ui.info(&format!("last {} message(s) in {target}", messages.len()));
        for m in &messages {
            // Shown again even if seen: the user asked for them. Not a stream: no
            // replay mark moves.
            self.state.accept(m);
            ui.message(m, &self.state.me);
        }
        Ok(())
    }

    /// Starts handing a file to `to` on its own connection, in the background; the
    /// session shows the result when it ends.
    fn send_command(&mut self, to: String, path: PathBuf, ui: &mut impl Ui) {
        let name = match local_basename(&path) {
            Ok(n) => n,
            Err(e) => return ui.error(&e.to_string()),
        };
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return ui.error(&format!("`{}` is not a regular file", path.display())),
            Err(e) => return ui.error(&format!("cannot read `{}`: {e}", path.display())),
        }
        ui.info(&format!(
            "sending {} to {} in the background",
            escape_control(&name),
            escape_control(&to)
        ));
        let home = self.home.clone();
        self.transfers.spawn(async move {
            let failed = |e: anyhow::Error| {
                format!(
                    "sending {} to {} failed: {}",
                    escape_control(&name),
                    escape_control(&to),
                    escape_control(&format!("{e:#}"))
                )
            };
            let (_login, mut client) = open_session(&home).await.map_err(failed)?;
            let progress = Progress::new(true, 1, Direction::Up);
            match send_file(&mut client, &path, &to, &Options::default(), &progress).await {
                Ok((name, outcome)) => Ok(sent_line(&name, &to, &outcome)),
                // The engine's error names the file and the recipient already.
                Err(e) => Err(escape_control(&format!("{:#}", e.into_error())).into_owned()),
            }
        });
    }
}
