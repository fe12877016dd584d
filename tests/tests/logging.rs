//! Logging never takes the daemon down: with its stderr pipe closed (`xferd 2>&1 | tee
//! log`, then the pipe goes), xferd keeps serving logins and still stops on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use xfer_e2e::{Client, PASSWORD, add_user, xferd_command};

/// `limits.shutdown_grace_secs` by default, plus slack for a loaded machine.
const EXIT_DEADLINE: Duration = Duration::from_secs(10 + 5);

/// Kills the child if the test fails before it exits.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn a_closed_stderr_neither_stops_logins_nor_sigterm() {
    let tmp = tempfile::TempDir::new().unwrap();
    let data = tmp.path().join("data");
    add_user(&data, "alice", PASSWORD);
    let child = xferd_command()
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning xferd");
    let mut guard = Guard(Some(child));
    let mut lines = BufReader::new(child_of(&mut guard).stdout.take().unwrap()).lines();
    let addr = lines.next().unwrap().unwrap();
    let addr = addr.split(" listening on ").nth(1).expect("listening line");
    let fp = lines.next().unwrap().unwrap();
    let fp = fp
        .strip_prefix("certificate fingerprint ")
        .expect("fingerprint line");
    std::thread::spawn(move || lines.for_each(drop));
    // The reader goes away: from now on every write to stderr fails with EPIPE.
    drop(child_of(&mut guard).stderr.take());

    let c = Client::new();
    let login = |password: &str| {
        c.xfer(
            &[
                "login",
                &format!("alice@{addr}"),
                "--password-stdin",
                "--fingerprint",
                fp,
            ],
            &format!("{password}\n"),
        )
    };
    // Failed logins are logged (audit warnings, closed connections)…
    for _ in 0..2 {
        let out = login("not the password");
        assert_eq!(
            out.code(),
            3,
            "refused as a wrong password: {}",
            out.stderr()
        );
    }
    // …and the daemon still serves: a login and a request on its session.
    let out = login(PASSWORD);
    assert_eq!(out.code(), 0, "login after stderr closed: {}", out.stderr());
    let out = c.xfer(&["whoami"], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());

    // SIGTERM is logged too; it must still drain and exit 0.
    let pid = child_of(&mut guard).id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    // Wait for the exit itself, not in steps: a thread owns the child and reports it.
    let mut child = guard.0.take().expect("running");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = match rx.recv_timeout(EXIT_DEADLINE) {
        Ok(status) => status.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            panic!("xferd still running {EXIT_DEADLINE:?} after SIGTERM");
        }
    };
    assert_eq!(status.code(), Some(0), "{status}");
}

fn child_of(guard: &mut Guard) -> &mut Child {
    guard.0.as_mut().expect("running")
}
