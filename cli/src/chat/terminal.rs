//! The terminal side of interactive chat: rustyline reads lines on its own thread
//! (it blocks), and incoming messages are printed through rustyline's external
//! printer, which redraws the line being typed below them instead of garbling it.
//!
//! The reader thread waits for a prompt before each line, so a line is read only after
//! the previous one was carried out (`/join #x` then `hello` goes to `#x`) and the
//! prompt always names the current target. When stdin or stdout is not a terminal,
//! rustyline reads plain lines and messages go straight to stdout.

use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;

use anyhow::{Context as _, Result};
use rustyline::error::ReadlineError;
use tokio::sync::mpsc;
use xfer_proto::{ChatEvent, ChatMessage};

use super::render::{Style, colour_wanted};
use super::session::{Input, Ui};
use super::state::State;

/// Where lines go.
enum Printer {
    /// Above the line being edited.
    External(Box<dyn rustyline::ExternalPrinter + Send>),
    /// Plain stdout (no terminal to edit on).
    Stdout,
}

/// The interactive terminal: prints above the editor, hands out prompts.
pub struct Terminal {
    printer: Printer,
    prompts: std_mpsc::Sender<String>,
    style: Style,
    /// Terminal settings before rustyline touched them, restored on drop: a session
    /// that ends while a line is being edited must not leave the terminal raw.
    saved: Option<nix::sys::termios::Termios>,
    /// The reader is inside `readline` (the terminal may be raw, a line half typed).
    reading: Arc<AtomicBool>,
}

impl Terminal {
    /// Starts the line reader thread; typed lines arrive on the returned channel.
    ///
    /// # Errors
    /// The line editor cannot be set up.
    pub fn start() -> Result<(Terminal, mpsc::Receiver<Input>)> {
        let saved = if std::io::stdin().is_terminal() {
            nix::sys::termios::tcgetattr(std::io::stdin()).ok()
        } else {
            None
        };
        let mut editor = rustyline::DefaultEditor::new().context("starting the line editor")?;
        let printer = match editor.create_external_printer() {
            Ok(p) => Printer::External(Box::new(p)),
            Err(_) => Printer::Stdout,
        };
        let (line_tx, line_rx) = mpsc::channel(16);
        let (prompt_tx, prompt_rx) = std_mpsc::channel::<String>();
        let reading = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&reading);
        std::thread::Builder::new()
            .name("chat-input".into())
            .spawn(move || read_lines(editor, &prompt_rx, &line_tx, &flag))
            .context("starting the line reader")?;
        let style = Style::new(colour_wanted(std::io::stdout().is_terminal()));
        Ok((
            Terminal {
                printer,
                prompts: prompt_tx,
                style,
                saved,
                reading,
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
        let _ = self.prompts.send(prompt);
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

/// The reader thread: one line per prompt until the end of input or the session goes.
fn read_lines(
    mut editor: rustyline::DefaultEditor,
    prompts: &std_mpsc::Receiver<String>,
    lines: &mpsc::Sender<Input>,
    reading: &AtomicBool,
) {
    while let Ok(prompt) = prompts.recv() {
        reading.store(true, Ordering::SeqCst);
        let read = editor.readline(&prompt);
        reading.store(false, Ordering::SeqCst);
        let input = match read {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                Input::Line(line)
            }
            // Ctrl-C, Ctrl-D, end of piped input, or an unreadable terminal: leave.
            Err(ReadlineError::Interrupted | ReadlineError::Eof) => Input::End,
            Err(e) => {
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

/// Interactive mode's [`Ui`]: everything as lines for people, via the [`Terminal`].
pub struct InteractiveUi {
    term: Terminal,
    style: Style,
}

impl InteractiveUi {
    /// Shows through `term`.
    pub fn new(term: Terminal) -> Self {
        let style = term.style();
        InteractiveUi { term, style }
    }
}

impl Ui for InteractiveUi {
    fn message(&mut self, msg: &ChatMessage, me: &str) {
        let line = self.style.message(msg, me);
        self.term.print(&line);
    }

    fn event(&mut self, event: &ChatEvent) {
        if let Some(line) = self.style.event(event) {
            self.term.print(&line);
        }
    }

    fn info(&mut self, text: &str) {
        let line = self.style.info(text);
        self.term.print(&line);
    }

    fn error(&mut self, text: &str) {
        let line = self.style.error(text);
        self.term.print(&line);
    }

    fn ready(&mut self, state: &State, online: bool) {
        self.term.prompt(state.prompt(online));
    }
}
