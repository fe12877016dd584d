//! A pseudo-terminal, to drive the interactive parts (password prompts, the chat line
//! editor) as a person at a terminal does: the child gets the pty as its controlling
//! terminal and as stdin, stdout and stderr; the test reads what it prints and types
//! into it. [`Pty::expect`] waits for text with a deadline, never for a fixed time.

use std::fs::File;
use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::pty::{Winsize, openpty};

use crate::{DEADLINE, poll};

/// A child process on a terminal of 160×45 cells.
pub struct Pty {
    child: Child,
    input: File,
    output: Arc<Mutex<Vec<u8>>>,
    /// How much of `output` earlier [`Pty::expect`] calls consumed.
    seen: usize,
}

impl Pty {
    /// Starts `cmd` with the pty as its controlling terminal.
    pub fn spawn(cmd: Command) -> Pty {
        let size = Winsize {
            ws_row: 45,
            ws_col: 160,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(Some(&size), None).expect("openpty");
        // util-linux `setsid --ctty` makes the pty the controlling terminal (what
        // /dev/tty opens, as password prompts do) and then execs the program itself,
        // so the child's pid is the program's.
        let mut wrapped = Command::new("setsid");
        wrapped
            .arg("--ctty")
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (key, value) in cmd.get_envs() {
            match value {
                Some(value) => wrapped.env(key, value),
                None => wrapped.env_remove(key),
            };
        }
        if let Some(dir) = cmd.get_current_dir() {
            wrapped.current_dir(dir);
        }
        let slave = |what| Stdio::from(pty.slave.try_clone().expect(what));
        wrapped
            .stdin(slave("pty stdin"))
            .stdout(slave("pty stdout"))
            .stderr(slave("pty stderr"));
        let mut cmd = wrapped;
        let child = cmd.spawn().expect("spawning a child on the pty");
        drop(cmd);
        drop(pty.slave);
        let master = File::from(pty.master);
        let input = master.try_clone().expect("pty master");
        let output = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&output);
        std::thread::spawn(move || {
            let mut master = master;
            let mut buf = [0u8; 4096];
            // Ends with EIO once the child and its descendants closed the terminal.
            while let Ok(n @ 1..) = master.read(&mut buf) {
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Pty {
            child,
            input,
            output,
            seen: 0,
        }
    }

    /// Everything the child printed so far, escapes included.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Waits until the child prints `needle` after what earlier calls consumed, and
    /// returns the text between; panics with the whole output at the deadline.
    pub fn expect(&mut self, needle: &str) -> String {
        let found = poll(DEADLINE, || {
            let out = self.output.lock().unwrap();
            let rest = String::from_utf8_lossy(&out[self.seen..]).into_owned();
            rest.find(needle).map(|at| {
                let before = rest[..at].to_owned();
                (before, rest[..at + needle.len()].len())
            })
        });
        match found {
            Some((before, used)) => {
                self.seen += used;
                before
            }
            None => panic!(
                "no {needle:?} on the terminal; it shows:\n{}",
                self.output()
            ),
        }
    }

    /// Types `text` (include `\r` for Enter, as a terminal sends it).
    pub fn send(&mut self, text: &str) {
        self.input
            .write_all(text.as_bytes())
            .expect("typing into the pty");
    }

    /// Waits for the child to exit.
    pub fn wait(&mut self) -> ExitStatus {
        poll(DEADLINE, || self.child.try_wait().expect("child status"))
            .unwrap_or_else(|| panic!("the child did not exit; it shows:\n{}", self.output()))
    }

    /// Waits for the child to exit within `deadline`.
    pub fn wait_for(&mut self, deadline: Duration) -> Option<ExitStatus> {
        poll(deadline, || self.child.try_wait().expect("child status"))
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
