//! The line editor's helper in interactive chat: Tab completes what the line needs at
//! the cursor — a slash command at the start, a user name after `/msg`, `/query` or
//! `/send` (and for any word starting with `@`), a channel after `/join`, `/part` and
//! `/who` (and any word starting with `#`), a local path after `/send USER `, and
//! otherwise a user name (irssi completes nicks anywhere on the line).
//!
//! The names come from what the session has seen ([`Names`], shared with the
//! terminal side): senders, joins, presence and `/who` answers, joined channels and
//! `/channels` answers. The helper also tells the terminal when Enter accepts a line
//! (its [`Validator`] runs then), so the line can be taken off the screen.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Helper};

/// Slash commands Tab completes (aliases left out: one spelling each).
pub const COMMANDS: &[&str] = &[
    "/away",
    "/catchup",
    "/channels",
    "/clear",
    "/help",
    "/history",
    "/join",
    "/msg",
    "/part",
    "/query",
    "/quit",
    "/send",
    "/who",
];

/// User and channel names the session knows of.
#[derive(Debug, Default)]
pub struct Names {
    /// User names, without `@`.
    pub users: BTreeSet<String>,
    /// Channels, as `#name`.
    pub channels: BTreeSet<String>,
}

/// Shared between the session (which learns names) and the editor (which completes).
pub type SharedNames = Arc<Mutex<Names>>;

/// Locks shared state, also after a panic elsewhere (it holds plain data).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The line being typed, as the editor last drew it: what a redrawn prompt puts back.
#[derive(Debug, Default)]
pub struct Draft {
    /// The text.
    pub line: String,
    /// The cursor, a byte offset into `line`.
    pub pos: usize,
    /// The editor has drawn its prompt (so it is reading keys and handling signals).
    pub drawn: bool,
}

/// Shared between the editor's helper (which records) and the reader thread.
pub type SharedDraft = Arc<Mutex<Draft>>;

/// The rustyline helper: completion, the accept notice and the draft.
pub struct ChatHelper {
    names: SharedNames,
    /// Called when Enter accepts a line, before the editor draws it a last time.
    on_accept: Box<dyn Fn() + Send + Sync>,
    draft: SharedDraft,
}

impl ChatHelper {
    /// Completes from `names`; runs `on_accept` as Enter accepts a line.
    pub fn new(names: SharedNames, on_accept: Box<dyn Fn() + Send + Sync>) -> Self {
        ChatHelper {
            names,
            on_accept,
            draft: SharedDraft::default(),
        }
    }

    /// Where the line being typed is recorded.
    pub fn draft(&self) -> SharedDraft {
        Arc::clone(&self.draft)
    }

    fn record(&self, line: &str, pos: usize) {
        let mut draft = lock(&self.draft);
        if draft.line != line {
            line.clone_into(&mut draft.line);
        }
        draft.pos = pos;
        draft.drawn = true;
    }
}

/// What to complete at the cursor: where the word starts and its candidates.
pub fn candidates(line: &str, pos: usize, names: &Names) -> (usize, Vec<String>) {
    let before = &line[..pos];
    let start = before.rfind(char::is_whitespace).map_or(0, |i| i + 1);
    let word = &before[start..];
    let words: Vec<&str> = before[..start].split_whitespace().collect();
    let command = words.first().map(|c| c.to_ascii_lowercase());
    if words.is_empty() && word.starts_with('/') {
        return (start, prefixed(COMMANDS.iter().copied(), word, " "));
    }
    let users = || prefixed(names.users.iter().map(String::as_str), word, " ");
    let channels = || prefixed(names.channels.iter().map(String::as_str), word, " ");
    match (command.as_deref(), words.len()) {
        (Some("/send"), n) if n >= 2 => {
            // The path is the rest of the line: it may hold spaces.
            let path_start = path_start(before);
            (path_start, paths(&before[path_start..]))
        }
        (Some("/msg" | "/m" | "/query" | "/send"), 1) => {
            let bare = word.strip_prefix('@').unwrap_or(word);
            let at = usize::from(word.starts_with('@'));
            (
                start + at,
                prefixed(names.users.iter().map(String::as_str), bare, " "),
            )
        }
        (Some("/join" | "/j" | "/part" | "/leave" | "/who" | "/w"), 1) => (start, channels()),
        _ if word.starts_with('#') => (start, channels()),
        _ if word.starts_with('@') => (
            start + 1,
            prefixed(names.users.iter().map(String::as_str), &word[1..], " "),
        ),
        _ if word.is_empty() => (start, Vec::new()),
        // A nick at the start of a line is addressed: `alice: `, as irssi does.
        (None, _) => (
            start,
            prefixed(names.users.iter().map(String::as_str), word, ": "),
        ),
        _ => (start, users()),
    }
}

/// `items` that start with `word`, each followed by `tail`.
fn prefixed<'a>(items: impl Iterator<Item = &'a str>, word: &str, tail: &str) -> Vec<String> {
    items
        .filter(|i| i.starts_with(word))
        .map(|i| format!("{i}{tail}"))
        .collect()
}

/// Where the path of `/send USER PATH…` starts in `before`.
fn path_start(before: &str) -> usize {
    let mut seen = 0;
    let mut in_word = false;
    for (i, c) in before.char_indices() {
        if c.is_whitespace() {
            in_word = false;
        } else if !in_word {
            in_word = true;
            seen += 1;
            if seen == 3 {
                return i;
            }
        }
    }
    before.len()
}

/// Local paths completing `typed` (`~/` is the home directory); directories end in `/`.
fn paths(typed: &str) -> Vec<String> {
    let (dir, prefix) = match typed.rfind('/') {
        Some(i) => (&typed[..=i], &typed[i + 1..]),
        None => ("", typed),
    };
    let on_disk: PathBuf = match (dir.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ if dir.is_empty() => PathBuf::from("."),
        _ => PathBuf::from(dir),
    };
    let Ok(entries) = std::fs::read_dir(on_disk) else {
        return Vec::new();
    };
    let mut found: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            if !name.starts_with(prefix) || (prefix.is_empty() && name.starts_with('.')) {
                return None;
            }
            let slash = if e.path().is_dir() { "/" } else { "" };
            Some(format!("{dir}{name}{slash}"))
        })
        .collect();
    found.sort();
    found
}

impl Completer for ChatHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let names = lock(&self.names);
        let (start, found) = candidates(line, pos, &names);
        let pairs = found
            .into_iter()
            .map(|c| Pair {
                display: c.trim_end().to_owned(),
                replacement: c,
            })
            .collect();
        Ok((start, pairs))
    }
}

impl Hinter for ChatHelper {
    type Hint = String;

    /// Called after each edit (and when the prompt is first drawn): records the draft.
    fn hint(&self, line: &str, pos: usize, _ctx: &Context<'_>) -> Option<String> {
        self.record(line, pos);
        None
    }
}

impl Highlighter for ChatHelper {
    /// Called when the cursor moves: records where it is.
    fn highlight_char(&self, line: &str, pos: usize, _kind: rustyline::highlight::CmdKind) -> bool {
        self.record(line, pos);
        false
    }
}

impl Validator for ChatHelper {
    fn validate(&self, _ctx: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        (self.on_accept)();
        Ok(ValidationResult::Valid(None))
    }
}

impl Helper for ChatHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        let mut n = Names::default();
        for u in ["alice", "albert", "bob"] {
            n.users.insert(u.into());
        }
        for c in ["#lab", "#lounge"] {
            n.channels.insert(c.into());
        }
        n
    }

    fn complete(line: &str) -> (usize, Vec<String>) {
        candidates(line, line.len(), &names())
    }

    #[test]
    fn commands_nicks_and_channels_complete_where_they_belong() {
        assert_eq!(complete("/ms"), (0, vec!["/msg ".into()]));
        assert_eq!(
            complete("/msg al"),
            (5, vec!["albert ".into(), "alice ".into()])
        );
        assert_eq!(complete("/msg ali"), (5, vec!["alice ".into()]));
        assert_eq!(complete("/query @b"), (8, vec!["bob ".into()]));
        assert_eq!(complete("/join #l").1, ["#lab ", "#lounge "]);
        assert_eq!(complete("/join #la").1, ["#lab "]);
        assert_eq!(complete("see #lo").1, ["#lounge "]);
        assert_eq!(complete("bo"), (0, vec!["bob: ".into()]));
        assert_eq!(complete("thanks bo"), (7, vec!["bob ".into()]));
        assert_eq!(complete("/msg bob hi al").1, ["albert ", "alice "]);
        assert!(complete("/nothing").1.is_empty());
        assert!(complete("hello ").1.is_empty());
    }

    #[test]
    fn paths_complete_after_send_user() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("notes one.txt"), b"x").unwrap();
        std::fs::create_dir(tmp.path().join("notebook")).unwrap();
        let dir = tmp.path().display().to_string();
        let line = format!("/send bob {dir}/note");
        let (start, found) = complete(&line);
        assert_eq!(start, 10);
        assert_eq!(
            found,
            [format!("{dir}/notebook/"), format!("{dir}/notes one.txt")]
        );
        let line = format!("/send bob {dir}/notes o");
        assert_eq!(complete(&line).1, [format!("{dir}/notes one.txt")]);
    }
}
