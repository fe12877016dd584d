//! The terminal side of interactive chat: rustyline reads lines on its own thread
//! (it blocks), and incoming messages are printed through rustyline's external
//! printer, which redraws the line being typed below them instead of garbling it.
//!
//! The reader thread waits for a prompt before each line, so a line is read only after
//! the previous one was carried out (`/join #x` then `hello` goes to `#x`) and the
//! prompt always names the current target. When stdin or stdout is not a terminal,
//! rustyline reads plain lines and messages go straight to stdout.
//!
//! A typed line is shown once, as irssi does: when Enter is pressed the editor's copy
//! (prompt and text, every row it took) is erased and the server's echo is the copy
//! that stays. Lines printed between Enter and that erase wait for it (`Screen`), so
//! the erase never takes a message with it.
//!
//! When the connection is lost or comes back while a line is being typed, the prompt
//! is redrawn in place with the half-typed line kept ([`super::redraw`]): the editor's
//! copy is erased the same way and the editor starts again with the new prompt.

use std::io::{IsTerminal as _, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result};
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use tokio::sync::mpsc;
use xfer_proto::{ChatEvent, ChatMessage, MessageBody, Target};

use super::complete::{ChatHelper, Draft, SharedDraft, SharedNames, lock};
use super::render::{Style, colour_wanted, hang, mentions};
use super::session::{Input, Ui};
use super::state::State;

/// Where lines go.
enum Printer {
    /// Above the line being edited.
    External(Box<dyn rustyline::ExternalPrinter + Send>),
    /// Plain stdout (no terminal to edit on).
    Stdout,
}

/// Who may write to the screen while a typed line is being taken off it.
#[derive(Debug, Default)]
struct Screen {
    /// Enter was pressed: the editor is leaving its line on screen for the reader
    /// thread to erase; lines to print wait in `deferred` until then.
    accepting: bool,
    deferred: Vec<String>,
}

/// The line editor with chat's helper.
type Editor = rustyline::Editor<ChatHelper, DefaultHistory>;

/// The interactive terminal: prints above the editor, hands out prompts.
pub struct Terminal {
    printer: Printer,
    screen: Arc<Mutex<Screen>>,
    prompts: std_mpsc::Sender<String>,
    style: Style,
    /// Terminal settings before rustyline touched them, restored on drop: a session
    /// that ends while a line is being edited must not leave the terminal raw.
    saved: Option<nix::sys::termios::Termios>,
    /// The reader is inside `readline` (the terminal may be raw, a line half typed).
    reading: Arc<AtomicBool>,
    /// The prompt the reader should show now.
    current: Arc<Mutex<String>>,
    /// The line being typed.
    draft: SharedDraft,
    /// The prompt can be redrawn in place (stdin and stdout are a terminal).
    redraws: bool,
}

impl Terminal {
    /// Starts the line reader thread; typed lines arrive on the returned channel.
    ///
    /// # Errors
    /// The line editor cannot be set up.
    pub fn start(names: SharedNames) -> Result<(Terminal, mpsc::Receiver<Input>)> {
        let saved = if std::io::stdin().is_terminal() {
            nix::sys::termios::tcgetattr(std::io::stdin()).ok()
        } else {
            None
        };
        let config = rustyline::Config::builder()
            .completion_type(rustyline::CompletionType::List)
            .build();
        let mut editor = Editor::with_config(config).context("starting the line editor")?;
        let printer = match editor.create_external_printer() {
            Ok(p) => Printer::External(Box::new(p)),
            Err(_) => Printer::Stdout,
        };
        let screen = Arc::new(Mutex::new(Screen::default()));
        // Only a line typed at a terminal is on screen to be erased.
        let erase = saved.is_some() && std::io::stdout().is_terminal();
        let accepting = Arc::clone(&screen);
        let on_accept = Box::new(move || lock(&accepting).accepting = erase);
        let helper = ChatHelper::new(names, on_accept);
        let draft = helper.draft();
        editor.set_helper(Some(helper));
        let (line_tx, line_rx) = mpsc::channel(16);
        let (prompt_tx, prompt_rx) = std_mpsc::channel::<String>();
        let reading = Arc::new(AtomicBool::new(false));
        let current = Arc::new(Mutex::new(String::new()));
        // Only the editor at a terminal turns the nudge into an interrupt.
        let redraws = erase && super::redraw::listen(line_tx.clone()).is_ok();
        let reader = Reader {
            reading: Arc::clone(&reading),
            screen: Arc::clone(&screen),
            erase,
            current: Arc::clone(&current),
            draft: Arc::clone(&draft),
        };
        std::thread::Builder::new()
            .name("chat-input".into())
            .spawn(move || reader.read_lines(editor, &prompt_rx, &line_tx))
            .context("starting the line reader")?;
        let style = Style::new(colour_wanted(std::io::stdout().is_terminal()));
        Ok((
            Terminal {
                printer,
                screen,
                prompts: prompt_tx,
                style,
                saved,
                reading,
                current,
                draft,
                redraws,
            },
            line_rx,
        ))
    }

    /// The style lines are rendered in.
    pub fn style(&self) -> Style {
        self.style
    }

    /// Prints one line above the editor (or on stdout).
    pub fn print(&mut self, line: &str) {
        {
            let mut screen = lock(&self.screen);
            if screen.accepting {
                screen.deferred.push(line.to_owned());
                return;
            }
        }
        // Not under the lock: the external printer blocks while its queue is full, and
        // only the reader empties it, whose Enter hook takes the lock. What is queued
        // here is drawn by the reader itself, before the Enter or after the erase.
        match &mut self.printer {
            Printer::External(p) => {
                if p.print(format!("{line}\n")).is_err() {
                    self.printer = Printer::Stdout;
                    println_quiet(line);
                }
            }
            Printer::Stdout => println_quiet(line),
        }
    }

    /// Lets the reader take the next line, with this prompt.
    pub fn prompt(&mut self, prompt: String) {
        prompt.clone_into(&mut lock(&self.current));
        let _ = self.prompts.send(prompt);
    }

    /// Shows `prompt` from now on: a line being typed is redrawn under it, its text
    /// and cursor kept; otherwise the next line is read with it.
    pub fn restart(&mut self, prompt: String) {
        {
            let mut current = lock(&self.current);
            if *current == prompt {
                return;
            }
            *current = prompt;
        }
        if !self.redraws || !lock(&self.draft).drawn {
            return;
        }
        // Lines printed until the old copy is erased wait, as after Enter.
        lock(&self.screen).accepting = true;
        super::redraw::nudge();
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                saved,
            );
            if self.reading.load(Ordering::SeqCst) {
                // Leave the half-typed line, so what is printed next starts on its own.
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(b"\r\n");
                let _ = out.flush();
            }
        }
    }
}

/// Writes a line to stdout, ignoring a closed stdout (the session ends on input).
fn println_quiet(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The reader thread's side.
struct Reader {
    /// Inside `readline` (the terminal may be raw, a line half typed).
    reading: Arc<AtomicBool>,
    screen: Arc<Mutex<Screen>>,
    /// Erase each accepted line (stdin and stdout are a terminal).
    erase: bool,
    /// The prompt to show now.
    current: Arc<Mutex<String>>,
    /// The line being typed, as the editor last drew it.
    draft: SharedDraft,
}

impl Reader {
    /// One line per prompt until the end of input or the session goes.
    fn read_lines(
        &self,
        mut editor: Editor,
        prompts: &std_mpsc::Receiver<String>,
        lines: &mpsc::Sender<Input>,
    ) {
        while let Ok(mut prompt) = prompts.recv() {
            let mut kept: Option<(String, usize)> = None;
            let read = loop {
                let read = self.read_line(&mut editor, &prompt, kept.as_ref());
                if !matches!(read, Err(ReadlineError::Interrupted)) || !super::redraw::take_nudge()
                {
                    break read;
                }
                // Nudged: the prompt changed. Off with the old copy, on with the new.
                let draft = std::mem::take(&mut *lock(&self.draft));
                self.take_off_screen(&prompt, &draft.line);
                prompt = lock(&self.current).clone();
                kept = Some((draft.line, draft.pos));
            };
            let input = match read {
                Ok(line) => {
                    self.take_off_screen(&prompt, &line);
                    if !line.trim().is_empty() {
                        let _ = editor.add_history_entry(line.as_str());
                    }
                    Input::Line(line)
                }
                // Ctrl-C, Ctrl-D, end of piped input, or an unreadable terminal: leave.
                Err(ReadlineError::Interrupted | ReadlineError::Eof) => {
                    self.release();
                    Input::End
                }
                Err(e) => {
                    self.release();
                    eprintln!("xfer: reading the terminal failed: {e}");
                    Input::End
                }
            };
            let end = matches!(input, Input::End);
            if lines.blocking_send(input).is_err() || end {
                return;
            }
        }
    }

    /// One `readline`, starting from `kept` (text and cursor) if given.
    fn read_line(
        &self,
        editor: &mut Editor,
        prompt: &str,
        kept: Option<&(String, usize)>,
    ) -> rustyline::Result<String> {
        *lock(&self.draft) = Draft::default();
        self.reading.store(true, Ordering::SeqCst);
        let read = match kept {
            Some((line, pos)) => {
                let pos = (*pos).min(line.len());
                let pos = (0..=pos)
                    .rev()
                    .find(|p| line.is_char_boundary(*p))
                    .unwrap_or(0);
                editor.readline_with_initial(prompt, (&line[..pos], &line[pos..]))
            }
            None => editor.readline(prompt),
        };
        self.reading.store(false, Ordering::SeqCst);
        lock(&self.draft).drawn = false;
        read
    }

    /// The line was left without a line (leaving): prints what waited, erasing nothing.
    fn release(&self) {
        let mut screen = lock(&self.screen);
        screen.accepting = false;
        let deferred = std::mem::take(&mut screen.deferred);
        let mut out = std::io::stdout().lock();
        for l in deferred {
            let _ = writeln!(out, "{l}");
        }
        let _ = out.flush();
    }

    /// Erases the rows the prompt and `line` took (the editor left the cursor on the row
    /// below them), then prints what waited meanwhile.
    fn take_off_screen(&self, prompt: &str, line: &str) {
        let mut screen = lock(&self.screen);
        let deferred = std::mem::take(&mut screen.deferred);
        let mut out = std::io::stdout().lock();
        if self.erase && screen.accepting {
            let cols = console::Term::stdout()
                .size_checked()
                .map_or(80, |(_, c)| c);
            let rows = rows_taken(&format!("{prompt}{line}"), usize::from(cols));
            let _ = write!(out, "\x1b[{rows}A\r\x1b[J");
        }
        screen.accepting = false;
        for l in deferred {
            let _ = writeln!(out, "{l}");
        }
        let _ = out.flush();
    }
}

/// Terminal rows `text` takes when drawn from the first column of a terminal `cols`
/// wide, as the line editor lays it out: a row per `\n`, and a row more each time the
/// text goes past the last column.
fn rows_taken(text: &str, cols: usize) -> usize {
    let cols = cols.max(1);
    text.split('\n')
        .map(|l| console::measure_text_width(l).div_ceil(cols).max(1))
        .sum()
}

/// The terminal's rows and columns, if stdout is one.
fn terminal_size() -> Option<(u16, u16)> {
    std::io::stdout()
        .is_terminal()
        .then(|| console::Term::stdout().size_checked())
        .flatten()
}

/// Interactive mode's [`Ui`]: everything as lines for people, via the [`Terminal`].
pub struct InteractiveUi {
    term: Terminal,
    style: Style,
    /// Names for Tab completion, learned from what is shown.
    names: SharedNames,
    /// Where lines typed go: its messages are shown without their tag.
    here: Option<Target>,
    /// Ring the terminal bell for a message naming you (`--no-bell` turns it off).
    bell: bool,
    /// The backlog shown at start is over: mentions from now on ring.
    live: bool,
    /// The terminal's rows and columns, to wrap long lines (none: not a terminal).
    width: Option<(u16, u16)>,
}

impl InteractiveUi {
    /// Shows through `term`; completion learns into `names`. The bell rings only on a
    /// terminal.
    pub fn new(term: Terminal, names: SharedNames, bell: bool) -> Self {
        let style = term.style();
        InteractiveUi {
            term,
            style,
            names,
            here: None,
            bell: bell && std::io::stdout().is_terminal(),
            live: false,
            width: terminal_size(),
        }
    }
}

impl Ui for InteractiveUi {
    fn message(&mut self, msg: &ChatMessage, me: &str) {
        // Off a terminal every line keeps its tag: a stable format for scripts.
        let here = self.here.as_ref().filter(|_| self.width.is_some());
        let mut line = self.style.message_in(msg, me, here);
        if let Some((_, cols)) = self.width {
            line = hang(&line, usize::from(cols));
        }
        lock(&self.names).users.insert(msg.from.to_string());
        if self.bell
            && self.live
            && msg.from != me
            && let MessageBody::Text(text) = &msg.body
            && mentions(text, me)
        {
            line.push('\x07');
        }
        self.term.print(&line);
    }

    fn event(&mut self, event: &ChatEvent) {
        match event {
            ChatEvent::Joined { user, .. } | ChatEvent::Parted { user, .. } => {
                lock(&self.names).users.insert(user.to_string());
            }
            ChatEvent::Presence(p) => {
                lock(&self.names).users.insert(p.user.to_string());
            }
            _ => {}
        }
        if let Some(line) = self.style.event(event) {
            self.term.print(&line);
        }
    }

    fn clear(&mut self) {
        if std::io::stdout().is_terminal() {
            // Home, then erase the whole screen: the prompt comes back at the top.
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(b"\x1b[H\x1b[2J");
            let _ = out.flush();
        }
    }

    fn new_since(&mut self) {
        let line = self.style.new_since();
        self.term.print(&line);
    }

    fn info(&mut self, text: &str) {
        let line = self.style.info(text);
        self.term.print(&line);
    }

    fn error(&mut self, text: &str) {
        let line = self.style.error(text);
        self.term.print(&line);
    }

    fn talking_in(&mut self, here: Option<&Target>) {
        self.here = here.cloned();
    }

    fn connection(&mut self, state: &State, online: bool) {
        self.term.restart(state.prompt(online));
    }

    fn ready(&mut self, state: &State, online: bool) {
        self.live = true;
        // Taken again before each line: the window may have been resized.
        self.width = terminal_size();
        self.here.clone_from(&state.target);
        {
            let mut names = lock(&self.names);
            names.users.extend(state.known_users.iter().cloned());
            names.channels = state.joined.iter().map(|c| c.to_string()).collect();
        }
        self.term.prompt(state.prompt(online));
    }
}
