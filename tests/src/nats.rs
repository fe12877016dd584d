//! A real `nats-server` with JetStream for the cluster tests: started on a free port
//! of 127.0.0.1 with its own store directory, ready once it logs "Server is ready";
//! killed on drop. Restarting on the same port and directory keeps the streams.
//!
//! Without `nats-server` (Debian package `nats-server`) the tests that need it are
//! skipped, unless `XFER_REQUIRE_NATS=1` (CI) makes that a failure.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use tempfile::TempDir;

use crate::DEADLINE;

/// A running `nats-server -js`.
pub struct NatsServer {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    store: TempDir,
    exe: PathBuf,
    /// More arguments (e.g. `--user`, `--pass`).
    extra: Vec<String>,
}

/// The `nats-server` executable, if installed.
fn find() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/bin", "/usr/local/bin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

impl NatsServer {
    /// Starts one, or `None` when `nats-server` is not installed (a failure instead
    /// when `XFER_REQUIRE_NATS=1`).
    pub fn start() -> Option<NatsServer> {
        Self::start_with(&[])
    }

    /// Like [`NatsServer::start`] with more arguments (e.g. `["--user", "u", "--pass", "p"]`).
    pub fn start_with(extra: &[&str]) -> Option<NatsServer> {
        let Some(exe) = find() else {
            assert!(
                std::env::var("XFER_REQUIRE_NATS").as_deref() != Ok("1"),
                "nats-server is required (XFER_REQUIRE_NATS=1) but not installed: apt-get install nats-server"
            );
            eprintln!("skipping: nats-server is not installed");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut server = NatsServer {
            child: None,
            port,
            store: TempDir::new().expect("temp dir"),
            exe,
            extra: extra.iter().map(|a| a.to_string()).collect(),
        };
        server.run();
        Some(server)
    }

    /// `nats://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Its JetStream store directory.
    pub fn store(&self) -> &Path {
        self.store.path()
    }

    /// Kills it (SIGKILL) and waits for the exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and store directory.
    pub fn restart(&mut self) {
        self.kill();
        self.run();
    }

    /// Spawns the server and waits for its "Server is ready" line; the port may still
    /// be held briefly after a kill, so a start that fails is tried again.
    fn run(&mut self) {
        let start = std::time::Instant::now();
        loop {
            let mut child = Command::new(&self.exe)
                .args([
                    "-js",
                    "-a",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-sd",
                ])
                .arg(self.store.path())
                .args(&self.extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawning nats-server");
            let stderr = child.stderr.take().expect("piped stderr");
            let (tx, rx) = mpsc::channel();
            // Reads its log for good, so it never blocks on a full pipe.
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
            let mut log = String::new();
            let ready = loop {
                match rx.recv_timeout(DEADLINE) {
                    Ok(line) => {
                        log.push_str(&line);
                        log.push('\n');
                        if line.contains("Server is ready") {
                            break true;
                        }
                    }
                    Err(_) => break false,
                }
            };
            if ready {
                self.child = Some(child);
                return;
            }
            let _ = child.kill();
            let _ = child.wait();
            assert!(
                start.elapsed() < DEADLINE * 2,
                "nats-server did not get ready:\n{log}"
            );
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
