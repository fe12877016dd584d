//! What a line typed in interactive chat means: a message for the current target, or
//! a slash command. Pure parsing; [`crate::chat::session`] carries the commands out.

use std::path::PathBuf;

use xfer_proto::{ChannelName, MAX_HISTORY, TargetError, UserName};

/// Messages `/history` shows when no count is given.
pub const DEFAULT_HISTORY: u32 = 20;

/// Most messages `/history N` pages through.
pub const MAX_HISTORY_COMMAND: u32 = 5 * MAX_HISTORY;

/// One parsed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Text for the current target (`//text` becomes `/text`).
    Say(String),
    /// `/join #channel`: join it (or switch to it) and make it the current target.
    Join(ChannelName),
    /// `/part [#channel]`: leave it (default: the current channel).
    Part(Option<ChannelName>),
    /// `/msg USER text`: a direct message, without changing the current target.
    Msg {
        /// The recipient.
        to: UserName,
        /// The text.
        text: String,
    },
    /// `/query USER`: make the direct conversation with USER the current target.
    Query(UserName),
    /// `/who [#channel|*]`: members of a channel (default: the current one), or with
    /// `*` (or outside a channel) everyone online.
    Who(WhoScope),
    /// `/channels`: channels with members now.
    Channels,
    /// `/send USER PATH`: hand a file to USER (into their inbox), in the background.
    Send {
        /// The recipient, without `@`.
        to: String,
        /// The local file (a leading `~/` is the home directory).
        path: PathBuf,
    },
    /// `/history [N]`: the last N messages of the current target.
    History(u32),
    /// `/away [on|off]`: mark yourself away or back (no argument toggles).
    Away(Option<bool>),
    /// `/clear`: clear the screen (at a terminal).
    Clear,
    /// `/catchup`: unread counts, mentions and new files since your read positions.
    Catchup,
    /// `/quit`.
    Quit,
    /// `/help`.
    Help,
}

/// Whose presence `/who` lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WhoScope {
    /// The current channel, or everyone online when the target is not a channel.
    Current,
    /// This channel.
    Channel(ChannelName),
    /// Everyone online.
    Everyone,
}

/// The `/help` text, one command per line.
pub const HELP: &str = "\
text                 say text to the current channel or person (//text says /text)
/join #channel       join a channel and talk there
/part [#channel]     leave a channel (default: the current one)
/msg USER text       send USER a direct message
/query USER          talk to USER directly from now on
/who [#channel|*]    who is in a channel, or (*) everyone online
/channels            channels with people in them
/send USER PATH      hand a file to USER (it lands in their inbox)
/history [N]         show the last N messages here (default 20)
/away [on|off]       mark yourself away or back
/catchup             unread messages, mentions of you and new files, everywhere
/clear               clear the screen
/quit                leave (also Ctrl-D)
/help                this list";

/// Parses what the editor handed over. One typed line is one [`parse`]; a paste of
/// several lines (bracketed paste puts them in one input, joined by newlines) becomes one
/// message per non-empty line, sent as it is, like irssi: a pasted line that begins
/// with `/` is text, never a command, so pasting a log excerpt cannot run `/quit`.
///
/// # Errors
/// As [`parse`], for a single line.
pub fn parse_input(input: &str) -> Result<Vec<Command>, String> {
    let input = input.trim_end_matches(['\r', '\n']);
    if !input.contains('\n') {
        return Ok(parse(input)?.into_iter().collect());
    }
    Ok(input
        .split('\n')
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
        .map(|l| Command::Say(l.to_owned()))
        .collect())
}

/// Parses one line. `Ok(None)` for a blank line.
///
/// # Errors
/// A one-line explanation for a malformed command.
pub fn parse(line: &str) -> Result<Option<Command>, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Ok(None);
    }
    if let Some(literal) = line.strip_prefix("//") {
        return Ok(Some(Command::Say(format!("/{literal}"))));
    }
    let Some(rest) = line.strip_prefix('/') else {
        return Ok(Some(Command::Say(line.to_string())));
    };
    let (name, args) = match rest.split_once(char::is_whitespace) {
        Some((n, a)) => (n, a.trim()),
        None => (rest, ""),
    };
    let cmd = match name.to_ascii_lowercase().as_str() {
        "join" | "j" => Command::Join(channel(one_arg("/join #channel", args)?)?),
        "part" | "leave" => match args {
            "" => Command::Part(None),
            a => Command::Part(Some(channel(one_arg("/part [#channel]", a)?)?)),
        },
        "msg" | "m" => {
            let (to, text) = args
                .split_once(char::is_whitespace)
                .ok_or("usage: /msg USER text")?;
            let text = text.trim_start();
            if text.is_empty() {
                return Err("usage: /msg USER text".into());
            }
            Command::Msg {
                to: user(to)?,
                text: text.to_string(),
            }
        }
        "query" => Command::Query(user(one_arg("/query USER", args)?)?),
        "who" | "w" => match args {
            "" => Command::Who(WhoScope::Current),
            "*" => Command::Who(WhoScope::Everyone),
            a => Command::Who(WhoScope::Channel(channel(one_arg(
                "/who [#channel|*]",
                a,
            )?)?)),
        },
        "channels" | "list" => no_args("/channels", args, Command::Channels)?,
        "send" => {
            let (to, path) = args
                .split_once(char::is_whitespace)
                .ok_or("usage: /send USER PATH")?;
            let path = path.trim();
            if path.is_empty() {
                return Err("usage: /send USER PATH".into());
            }
            Command::Send {
                to: user(to)?.into(),
                path: expand_home(path),
            }
        }
        "history" | "h" => Command::History(match args {
            "" => DEFAULT_HISTORY,
            a => match a.parse::<u32>() {
                Ok(n) if (1..=MAX_HISTORY_COMMAND).contains(&n) => n,
                _ => {
                    return Err(format!(
                        "usage: /history [N], N from 1 to {MAX_HISTORY_COMMAND}"
                    ));
                }
            },
        }),
        "away" => Command::Away(match args.to_ascii_lowercase().as_str() {
            "" => None,
            "on" | "yes" => Some(true),
            "off" | "no" | "back" => Some(false),
            _ => return Err("usage: /away [on|off]".into()),
        }),
        "quit" | "exit" => no_args("/quit", args, Command::Quit)?,
        "clear" | "cls" => no_args("/clear", args, Command::Clear)?,
        "catchup" => no_args("/catchup", args, Command::Catchup)?,
        "help" | "?" => Command::Help,
        _ => {
            return Err(format!(
                "unknown command /{name}; /help lists them (type //{name} to say it)",
                name = crate::output::escape_control(name)
            ));
        }
    };
    Ok(Some(cmd))
}

fn one_arg<'a>(usage: &str, args: &'a str) -> Result<&'a str, String> {
    if args.is_empty() || args.contains(char::is_whitespace) {
        Err(format!("usage: {usage}"))
    } else {
        Ok(args)
    }
}

fn no_args(usage: &str, args: &str, cmd: Command) -> Result<Command, String> {
    if args.is_empty() {
        Ok(cmd)
    } else {
        Err(format!("usage: {usage}"))
    }
}

/// `#name` or `name`, validated and lowercased.
fn channel(arg: &str) -> Result<ChannelName, String> {
    ChannelName::new(arg.strip_prefix('#').unwrap_or(arg)).map_err(|_| {
        format!(
            "`{}` is not a channel: {}",
            crate::output::escape_control(arg),
            TargetError::BadChannel
        )
    })
}

/// A user name, with or without `@`.
fn user(arg: &str) -> Result<UserName, String> {
    UserName::new(arg.strip_prefix('@').unwrap_or(arg)).map_err(|_| {
        format!(
            "`{}` is not a user name: {}",
            crate::output::escape_control(arg),
            TargetError::BadUser
        )
    })
}

/// `~/x` is `$HOME/x`; anything else is taken as it is.
fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_multi_line_paste_is_one_message_per_line_and_never_a_command() {
        let said = |texts: &[&str]| -> Vec<Command> {
            texts
                .iter()
                .map(|t| Command::Say((*t).to_owned()))
                .collect()
        };
        assert_eq!(
            parse_input("first\nsecond").unwrap(),
            said(&["first", "second"])
        );
        assert_eq!(
            parse_input("a\r\n\r\n  \nb\r\n").unwrap(),
            said(&["a", "b"]),
            "CRLF and blank lines"
        );
        assert_eq!(
            parse_input("log:\n/quit\n/send bob x").unwrap(),
            said(&["log:", "/quit", "/send bob x"]),
            "pasted commands are text"
        );
        assert_eq!(parse_input("/quit").unwrap(), vec![Command::Quit]);
        assert_eq!(parse_input("hello\n").unwrap(), said(&["hello"]));
        assert!(parse_input("").unwrap().is_empty());
    }

    use super::*;

    fn ch(name: &str) -> ChannelName {
        ChannelName::new(name).unwrap()
    }

    fn u(name: &str) -> UserName {
        UserName::new(name).unwrap()
    }

    fn ok(line: &str) -> Command {
        parse(line).unwrap().unwrap()
    }

    #[test]
    fn plain_lines_are_messages() {
        assert_eq!(ok("hello there"), Command::Say("hello there".into()));
        assert_eq!(ok("  indented"), Command::Say("  indented".into()));
        assert_eq!(ok("//join us"), Command::Say("/join us".into()));
        assert_eq!(ok("//"), Command::Say("/".into()));
        assert_eq!(ok("hi\r\n"), Command::Say("hi".into()));
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("   ").unwrap(), None);
    }

    #[test]
    fn channel_commands() {
        assert_eq!(ok("/join #Lab"), Command::Join(ch("lab")));
        assert_eq!(ok("/join lab"), Command::Join(ch("lab")));
        assert_eq!(ok("/JOIN #a-b_c.d"), Command::Join(ch("a-b_c.d")));
        assert!(parse("/join").is_err());
        assert!(parse("/join #a #b").is_err());
        assert!(parse("/join #bad!name").is_err());
        assert!(parse("/join @bob").is_err());
        assert_eq!(ok("/part"), Command::Part(None));
        assert_eq!(ok("/part #x"), Command::Part(Some(ch("x"))));
        assert_eq!(ok("/who"), Command::Who(WhoScope::Current));
        assert_eq!(ok("/who *"), Command::Who(WhoScope::Everyone));
        assert_eq!(ok("/who #x"), Command::Who(WhoScope::Channel(ch("x"))));
        assert_eq!(ok("/channels"), Command::Channels);
        assert!(parse("/channels extra").is_err());
    }

    #[test]
    fn people_commands() {
        assert_eq!(
            ok("/msg bob  hi  there "),
            Command::Msg {
                to: u("bob"),
                text: "hi  there".into()
            }
        );
        assert_eq!(
            ok("/msg @bob hi").clone(),
            Command::Msg {
                to: u("bob"),
                text: "hi".into()
            }
        );
        assert!(parse("/msg bob").is_err());
        assert!(parse("/msg bob   ").is_err());
        assert!(parse("/msg b\x1bad hi").is_err());
        assert_eq!(ok("/query @Bob"), Command::Query(u("Bob")));
        assert_eq!(
            ok("/send bob my file.png"),
            Command::Send {
                to: "bob".into(),
                path: PathBuf::from("my file.png")
            }
        );
        assert!(parse("/send bob").is_err());
        assert!(parse("/send").is_err());
    }

    #[test]
    fn home_is_expanded_in_send_paths() {
        let Some(home) = std::env::var_os("HOME") else {
            return;
        };
        assert_eq!(
            ok("/send bob ~/x.txt"),
            Command::Send {
                to: "bob".into(),
                path: PathBuf::from(home).join("x.txt")
            }
        );
    }

    #[test]
    fn other_commands() {
        assert_eq!(ok("/history"), Command::History(DEFAULT_HISTORY));
        assert_eq!(ok("/history 5"), Command::History(5));
        assert!(parse("/history 0").is_err());
        assert!(parse("/history lots").is_err());
        assert!(parse(&format!("/history {}", MAX_HISTORY_COMMAND + 1)).is_err());
        assert_eq!(ok("/away"), Command::Away(None));
        assert_eq!(ok("/away on"), Command::Away(Some(true)));
        assert_eq!(ok("/away OFF"), Command::Away(Some(false)));
        assert!(parse("/away maybe").is_err());
        assert_eq!(ok("/quit"), Command::Quit);
        assert_eq!(ok("/clear"), Command::Clear);
        assert!(parse("/clear all").is_err());
        assert_eq!(ok("/help"), Command::Help);
    }

    #[test]
    fn unknown_commands_are_refused_with_a_hint() {
        let e = parse("/frobnicate now").unwrap_err();
        assert!(e.contains("/frobnicate"), "{e}");
        assert!(e.contains("//frobnicate"), "{e}");
        let e = parse("/x\x1b[2J").unwrap_err();
        assert!(!e.contains('\x1b'), "{e}");
    }
}
