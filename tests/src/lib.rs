//! End-to-end harness: runs the real `xferd` and `xfer` binaries on 127.0.0.1 with
//! temporary directories. The raw protocol client ([`raw`]) and the test data ([`data`])
//! live here too, once, for these scenarios and for the daemon's in-process tests (a
//! dev-dependency of `xferd`).
//!
//! The binaries are built once per test process (`cargo build --bins -p xferd -p xfer`
//! in the same profile), so `cargo test` alone is enough. `xferd` binds port 0 and
//! prints its address; [`Daemon::start`] reads that line instead of polling. Every
//! child process is killed when its handle drops.

pub mod data;
pub mod garage;
pub mod nats;
pub mod proxy;
pub mod pty;
pub mod raw;
pub mod screen;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub use data::{CHUNK, MIB, blake3_hex, random_bytes};
pub use proxy::{Action, Fault, Moved, Proxy, Way};
pub use raw::{Dial, RawConn, assert_error, tls_connect, tls_dial};

/// The password every test user gets unless a test says otherwise.
pub const PASSWORD: &str = "correct horse battery";

/// How long a test waits for something that should be quick before failing.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Path of a workspace binary, building the binaries on first use.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        // target/<profile>/deps/<test-exe> -> target/<profile>
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>")
            .to_owned();
        let profile = profile_dir
            .file_name()
            .and_then(|p| p.to_str())
            .unwrap_or("debug");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build", "--quiet", "--bins", "-p", "xferd", "-p", "xfer", "-p", "xfer-e2e",
        ]);
        cmd.args(["--features", "xfer-e2e/tokio-test-util"]);
        // `cargo test` gives the test its package's CARGO_PKG_*, CARGO_MANIFEST_* and
        // the like; ring's build script reruns when those change, so passing them on
        // would rebuild ring, rustls and both binaries here and again at the next
        // `cargo build` or `cargo test`.
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            let per_package = [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
            ];
            if per_package.iter().any(|p| k.starts_with(p))
                || k == "CARGO_PRIMARY_PACKAGE"
                || k == "CARGO_TARGET_TMPDIR"
            {
                cmd.env_remove(&key);
            }
        }
        if profile == "release" {
            cmd.arg("--release");
        } else if profile != "debug" {
            cmd.args(["--profile", profile]);
        }
        let status = cmd.status().expect("running cargo build for the binaries");
        assert!(status.success(), "building xferd and xfer failed");
        profile_dir
    });
    dir.join(name)
}

/// A running `xferd` with its own data directory; killed on drop.
pub struct Daemon {
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The certificate fingerprint it printed.
    pub fingerprint: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    log: PathBuf,
    /// Lines printed after the first two (e.g. `metrics listening on ADDR`).
    later_lines: std::sync::Mutex<std::sync::mpsc::Receiver<String>>,
    metrics_addr: OnceLock<SocketAddr>,
    _tmp: Option<TempDir>,
}

impl Daemon {
    /// Starts `xferd` on a fresh data directory with one user, `alice`.
    pub fn start() -> Daemon {
        let tmp = TempDir::new().expect("temp dir");
        let data = tmp.path().join("data");
        add_user(&data, "alice", PASSWORD);
        let mut d = Daemon::start_in(&data, &[]).expect("xferd starts");
        d._tmp = Some(tmp);
        d
    }

    /// Starts `xferd --data-dir DIR --listen 127.0.0.1:0 EXTRA…`, reading its address
    /// from stdout. Err carries the log (stderr) when it exits instead.
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Result<Daemon, String> {
        Self::start_listening(data_dir, "127.0.0.1:0", extra)
    }

    /// Like [`Daemon::start_in`] on a given listen address (to restart on the same port).
    pub fn start_listening(
        data_dir: &Path,
        listen: &str,
        extra: &[&str],
    ) -> Result<Daemon, String> {
        Self::start_with_env(data_dir, listen, extra, &[])
    }

    /// Like [`Daemon::start_listening`] with extra environment variables (e.g. a fake
    /// `NOTIFY_SOCKET`).
    pub fn start_with_env(
        data_dir: &Path,
        listen: &str,
        extra: &[&str],
        env: &[(&str, &Path)],
    ) -> Result<Daemon, String> {
        let mut cmd = xferd_command();
        cmd.arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", listen])
            .args(extra)
            .envs(env.iter().copied());
        Self::spawn(cmd, data_dir)
    }

    /// Runs `cmd` (from [`xferd_command`], arguments set by the caller) as a daemon
    /// whose data directory is `data_dir`, reading its address from stdout; its log
    /// goes to a file next to `data_dir`. Err carries the log when it exits instead.
    pub fn spawn(mut cmd: Command, data_dir: &Path) -> Result<Daemon, String> {
        std::fs::create_dir_all(data_dir.parent().expect("data dir has a parent")).unwrap();
        let log = data_dir.with_extension(format!("log.{}", unique()));
        let mut child = cmd
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawning xferd");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut addr = None;
        let mut fingerprint = None;
        while addr.is_none() || fingerprint.is_none() {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(a) = line.split(" listening on ").nth(1) {
                        addr = Some(a.trim().parse().expect("address in listening line"));
                    } else if let Some(f) = line.strip_prefix("certificate fingerprint ") {
                        fingerprint = Some(f.trim().to_owned());
                    }
                }
                _ => {
                    let _ = child.wait();
                    return Err(std::fs::read_to_string(&log).unwrap_or_default());
                }
            }
        }
        // Keep draining stdout so the daemon never blocks on a full pipe; later lines
        // are kept for `Daemon::stdout_line`.
        let (tx, later_lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Ok(Daemon {
            child: Some(child),
            addr: addr.expect("set above"),
            fingerprint: fingerprint.expect("set above"),
            data_dir: data_dir.to_owned(),
            log,
            later_lines: std::sync::Mutex::new(later_lines),
            metrics_addr: OnceLock::new(),
            _tmp: None,
        })
    }

    /// A raw protocol connection logged in as `user` with [`PASSWORD`].
    pub async fn raw_login(&self, user: &str) -> RawConn {
        RawConn::logged_in(self.addr, &self.fingerprint, user, Dial::default()).await
    }

    /// `127.0.0.1:PORT` for use in `alice@…` targets.
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    /// The next line the daemon printed on stdout after its address and fingerprint
    /// that starts with `prefix`, without the prefix; `None` if none came within
    /// [`DEADLINE`]. Skipped lines are consumed.
    pub fn stdout_line(&self, prefix: &str) -> Option<String> {
        let later = self.later_lines.lock().expect("not poisoned");
        let start = Instant::now();
        loop {
            let left = DEADLINE.checked_sub(start.elapsed())?;
            let line = later.recv_timeout(left).ok()?;
            if let Some(rest) = line.strip_prefix(prefix) {
                return Some(rest.trim().to_owned());
            }
        }
    }

    /// The metrics listener's address, from its `metrics listening on ADDR` line.
    pub fn metrics_addr(&self) -> SocketAddr {
        *self.metrics_addr.get_or_init(|| {
            self.stdout_line("metrics listening on ")
                .expect("xferd printed `metrics listening on ADDR`")
                .parse()
                .expect("an address after `metrics listening on`")
        })
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Audit lines logged so far.
    pub fn audit_lines(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(" audit:"))
            .map(str::to_owned)
            .collect()
    }

    /// Waits until the log contains `needle` (logs are written asynchronously).
    pub fn wait_for_log(&self, needle: &str) -> bool {
        let start = Instant::now();
        while start.elapsed() < DEADLINE {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends a signal (e.g. "TERM") and waits for exit, returning the exit code.
    pub fn signal_and_wait(&mut self, sig: &str) -> Option<i32> {
        let pid = self.pid().to_string();
        Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .expect("kill");
        let mut child = self.child.take().expect("running");
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.code();
            }
            if start.elapsed() > DEADLINE {
                let _ = child.kill();
                panic!("xferd did not exit within {DEADLINE:?} after SIG{sig}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal (e.g. "HUP") without waiting for anything.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{sig} failed");
    }

    /// Waits until `needle` occurs in the log more than `seen` times (for events that
    /// repeat, such as reloads); false at the deadline.
    pub fn wait_for_log_count(&self, needle: &str, seen: usize) -> bool {
        poll(DEADLINE, || {
            (self.log().matches(needle).count() > seen).then_some(())
        })
        .is_some()
    }

    /// Runs an admin command (`xferd ARGS…`) against this daemon's data directory and
    /// config file, as an admin on the same host would.
    pub fn admin(&self, args: &[&str]) -> Out {
        let mut all = config_args(&self.data_dir);
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        Out(xferd(&self.data_dir, &all, ""))
    }

    /// The config file [`Daemon::start_with`] wrote (it may not exist).
    pub fn config_file(&self) -> PathBuf {
        config_path(&self.data_dir)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Takes the temp dir guard, so the data survives this handle (for restarts).
    pub fn keep_data(&mut self) -> Option<TempDir> {
        self._tmp.take()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// `xferd` on built-in defaults, whatever config files this machine has: tests name
/// their files and directories themselves. An empty config file (`/dev/null`, as with
/// `ssh -F /dev/null`) stops the search for `./xferd.toml` and `/etc/xferd/xferd.toml`.
pub fn xferd_command() -> Command {
    let mut cmd = Command::new(bin("xferd"));
    cmd.env("XFERD_CONFIG", "/dev/null")
        // Under systemd this would put every test daemon's control socket in one place.
        .env_remove("RUNTIME_DIRECTORY");
    cmd
}

/// Runs `xferd --data-dir DIR ARGS…` with `stdin` and returns its output.
pub fn xferd(data_dir: &Path, args: &[&str], stdin: &str) -> Output {
    run(
        xferd_command().arg("--data-dir").arg(data_dir).args(args),
        stdin,
    )
}

/// Adds a user with `xferd user add NAME --password-stdin --create` (the data directory
/// is made on the first user).
pub fn add_user(data_dir: &Path, name: &str, password: &str) {
    let out = xferd(
        data_dir,
        &["user", "add", name, "--password-stdin", "--create"],
        &format!("{password}\n"),
    );
    assert!(
        out.status.success(),
        "user add failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a command to completion, feeding `stdin`.
pub fn run(cmd: &mut Command, stdin: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut input = child.stdin.take().expect("piped stdin");
    let stdin = stdin.to_owned();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(stdin.as_bytes());
    });
    let out = child.wait_with_output().expect("wait");
    let _ = writer.join();
    out
}

/// A client machine: its own `XFER_HOME`.
pub struct Client {
    home: TempDir,
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    /// A client with an empty home.
    pub fn new() -> Client {
        Client {
            home: TempDir::new().expect("temp dir"),
        }
    }

    /// The client's home directory.
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// `xfer ARGS…` with this home and `stdin`.
    pub fn xfer(&self, args: &[&str], stdin: &str) -> Out {
        Out(run(
            Command::new(bin("xfer"))
                .args(args)
                .env("XFER_HOME", self.home.path())
                .env("NO_COLOR", "1"),
            stdin,
        ))
    }

    /// `xfer ARGS…` with this home, `stdin` and extra environment variables.
    pub fn xfer_env(&self, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Out {
        let mut cmd = Command::new(bin("xfer"));
        cmd.args(args)
            .env("XFER_HOME", self.home.path())
            .env("NO_COLOR", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Out(run(&mut cmd, stdin))
    }

    /// Logs in as `user` trusting the daemon's printed fingerprint; asserts success.
    pub fn login(&self, d: &Daemon, user: &str, password: &str) -> Out {
        let target = format!("{user}@{}", d.host_port());
        let out = self.xfer(
            &[
                "login",
                &target,
                "--password-stdin",
                "--fingerprint",
                &d.fingerprint,
            ],
            &format!("{password}\n"),
        );
        assert_eq!(out.code(), 0, "login failed: {}", out.stderr());
        out
    }
}

/// A finished command's output, with helpers.
pub struct Out(pub Output);

impl Out {
    /// Exit code (-1 if killed by a signal).
    pub fn code(&self) -> i32 {
        self.0.status.code().unwrap_or(-1)
    }
    /// Standard output as text.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }
    /// Standard error as text.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
}

// ---------------------------------------------------------------------------------------
// File transfers: polling, background clients, audit fields, restarts.
// ---------------------------------------------------------------------------------------

/// Calls `f` every 20 ms until it returns `Some`, or `deadline` passes (`None`).
pub fn poll<T>(deadline: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The value of `key=` in a log line (quotes stripped), e.g. `audit_field(l, "bytes")`.
pub fn audit_field(line: &str, key: &str) -> Option<String> {
    let needle = format!(" {key}=");
    let rest = &line[line.find(&needle)? + needle.len()..];
    let value = if let Some(quoted) = rest.strip_prefix('"') {
        &quoted[..quoted.find('"').unwrap_or(quoted.len())]
    } else {
        rest.split_whitespace().next().unwrap_or("")
    };
    Some(value.to_owned())
}

/// A numeric `key=` field of a log line.
pub fn audit_u64(line: &str, key: &str) -> Option<u64> {
    audit_field(line, key)?.parse().ok()
}

impl Daemon {
    /// Starts `xferd` on a fresh data directory with `users` (password [`PASSWORD`]) and,
    /// when given, a config file with `config` (TOML) passed as `--config`. The file sits
    /// next to the data directory, so [`Daemon::kill9_and_restart`] finds it again.
    pub fn start_with(users: &[&str], config: Option<&str>) -> Daemon {
        let tmp = TempDir::new().expect("temp dir");
        let data = tmp.path().join("data");
        Self::start_prepared(&data, users, config, tmp)
    }

    /// Like [`Daemon::start_with`] on a data directory the caller chose (e.g. on a
    /// small tmpfs); `tmp` is kept alive as long as the daemon.
    pub fn start_prepared(
        data: &Path,
        users: &[&str],
        config: Option<&str>,
        tmp: TempDir,
    ) -> Daemon {
        for user in users {
            add_user(data, user, PASSWORD);
        }
        if let Some(toml) = config {
            std::fs::write(config_path(data), toml).expect("write config");
        }
        let extra = config_args(data);
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let mut d = Daemon::start_in(data, &extra).expect("xferd starts");
        d._tmp = Some(tmp);
        d
    }

    /// `kill -9` the daemon, then start it again on the same data directory, address and
    /// config. The returned handle owns the temp dir from now on.
    pub fn kill9_and_restart(self) -> Daemon {
        let (code, _, d) = self.stop_and_restart("KILL");
        assert_eq!(code, None, "killed by a signal");
        d
    }

    /// Sends `sig` (e.g. "TERM"), waits for the exit, then starts the daemon again on the
    /// same data directory, address and config. Returns the exit code, how long the
    /// exit took after the signal, and the new handle (which owns the temp dir).
    pub fn stop_and_restart(mut self, sig: &str) -> (Option<i32>, Duration, Daemon) {
        let tmp = self.keep_data();
        let listen = self.host_port();
        let start = Instant::now();
        let code = self.signal_and_wait(sig);
        let took = start.elapsed();
        let extra = config_args(&self.data_dir);
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        // The port can linger briefly; retry binding it for a while.
        let start = Instant::now();
        let mut d = loop {
            match Daemon::start_listening(&self.data_dir, &listen, &extra) {
                Ok(d) => break d,
                Err(log) if start.elapsed() > DEADLINE => panic!("restart failed: {log}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        d._tmp = tmp;
        (code, took, d)
    }

    /// `<data>/users/<user>/files`: the user's committed files.
    pub fn files_dir(&self, user: &str) -> PathBuf {
        self.data_dir.join("users").join(user).join("files")
    }

    /// `<data>/users/<user>/partials`: uploads in progress.
    pub fn partials_dir(&self, user: &str) -> PathBuf {
        self.data_dir.join("users").join(user).join("partials")
    }

    /// The partial data files (`*.part`) of `user`'s uploads in progress.
    pub fn partial_files(&self, user: &str) -> Vec<PathBuf> {
        let Ok(dir) = std::fs::read_dir(self.partials_dir(user)) else {
            return Vec::new();
        };
        let mut v: Vec<PathBuf> = dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "part"))
            .collect();
        v.sort();
        v
    }

    /// Audit lines of one event kind (`"upload"`, `"download"`).
    pub fn audit_events(&self, event: &str) -> Vec<String> {
        let needle = format!("event=\"{event}\"");
        self.audit_lines()
            .into_iter()
            .filter(|l| l.contains(&needle))
            .collect()
    }
}

fn config_path(data: &Path) -> PathBuf {
    data.with_extension("toml")
}

fn config_args(data: &Path) -> Vec<String> {
    let path = config_path(data);
    if path.exists() {
        vec!["--config".into(), path.display().to_string()]
    } else {
        Vec::new()
    }
}

/// A client command running in the background (stdout and stderr go to files);
/// killed on drop.
pub struct Running {
    child: Option<Child>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Running {
    /// `kill -9` it and reap it.
    pub fn kill9(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether it has exited.
    pub fn finished(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    /// Waits (up to `deadline`) for it to exit and returns its output.
    pub fn wait(mut self, deadline: Duration) -> Out {
        let mut child = self.child.take().expect("running");
        let status = poll(deadline, || child.try_wait().ok().flatten()).unwrap_or_else(|| {
            let _ = child.kill();
            panic!("xfer did not finish within {deadline:?}");
        });
        Out(Output {
            status,
            stdout: std::fs::read(&self.stdout).unwrap_or_default(),
            stderr: std::fs::read(&self.stderr).unwrap_or_default(),
        })
    }

    /// What it printed on stderr so far.
    pub fn stderr_so_far(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.stderr).unwrap_or_default()).into_owned()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill9();
    }
}

impl Client {
    /// Starts `xfer ARGS…` in the background with this home.
    pub fn spawn(&self, args: &[&str]) -> Running {
        let n = unique();
        let stdout = self.home().join(format!("bg-{n}.out"));
        let stderr = self.home().join(format!("bg-{n}.err"));
        let child = Command::new(bin("xfer"))
            .args(args)
            .env("XFER_HOME", self.home())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("spawning xfer");
        Running {
            child: Some(child),
            stdout,
            stderr,
        }
    }

    /// Starts `xfer chat ARGS… --follow` and waits until it says it is following.
    pub fn follow(&self, args: &[&str]) -> Running {
        let mut all = vec!["chat"];
        all.extend_from_slice(args);
        all.push("--follow");
        let f = self.spawn(&all);
        assert!(
            f.wait_stderr(DEADLINE, "xfer: following "),
            "xfer {all:?} did not start following: {}",
            f.stderr_so_far()
        );
        f
    }

    /// `xfer ls ARGS… --json`, asserting success; the parsed array.
    pub fn ls_json(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let mut all = vec!["ls"];
        all.extend_from_slice(args);
        all.push("--json");
        let out = self.xfer(&all, "");
        assert_eq!(out.code(), 0, "xfer {all:?}: {}", out.stderr());
        match serde_json::from_str(&out.stdout()) {
            Ok(serde_json::Value::Array(v)) => v,
            other => panic!(
                "xfer {all:?} printed no JSON array: {other:?}\n{}",
                out.stdout()
            ),
        }
    }

    /// The entry called `name` in `xfer ls [DIR] ARGS… --json`.
    pub fn ls_entry(&self, args: &[&str], name: &str) -> Option<serde_json::Value> {
        self.ls_json(args).into_iter().find(|e| e["name"] == name)
    }

    /// Bytes received so far of the upload in progress to `name` (in the home), from
    /// `xfer ls --partial --json`; `None` while the server shows no partial for it.
    pub fn partial_received(&self, name: &str) -> Option<u64> {
        let out = self.xfer(&["ls", "--partial", "--json"], "");
        if out.code() != 0 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&out.stdout()).ok()?;
        v.as_array()?
            .iter()
            .find(|e| e["name"] == name && e["kind"] == "partial")
            .and_then(|e| e["received"].as_u64())
    }
}

/// A client logged in as alice (with [`PASSWORD`]) on `d`.
pub fn alice(d: &Daemon) -> Client {
    let c = Client::new();
    c.login(d, "alice", PASSWORD);
    c
}

/// Writes `data` to `<dir>/<name>`, returning the path as a string.
pub fn write_file(dir: &Path, name: &str, data: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p.display().to_string()
}

// ---------------------------------------------------------------------------------------
// Chat: output of background clients as it grows, signals.
// ---------------------------------------------------------------------------------------

impl Running {
    /// What it printed on stdout so far.
    pub fn stdout_so_far(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.stdout).unwrap_or_default()).into_owned()
    }

    /// Its stdout bytes so far, exactly as written.
    pub fn stdout_bytes(&self) -> Vec<u8> {
        std::fs::read(&self.stdout).unwrap_or_default()
    }

    /// The last `n` bytes of its stdout (cheap on a large output).
    pub fn stdout_tail(&self, n: u64) -> String {
        use std::io::{Read as _, Seek as _, SeekFrom};
        let Ok(mut f) = std::fs::File::open(&self.stdout) else {
            return String::new();
        };
        let len = f.metadata().map_or(0, |m| m.len());
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(n)));
        let mut buf = Vec::new();
        let _ = f.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Sends a signal by name (`"STOP"`, `"CONT"`, `"TERM"`).
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{sig} {pid} failed");
    }

    /// Waits (up to `deadline`) until its stdout satisfies `pred`; returns that stdout,
    /// or `None` (with the output seen so far left to the caller to report).
    pub fn wait_stdout(&self, deadline: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        poll(deadline, || Some(self.stdout_so_far()).filter(|s| pred(s)))
    }

    /// Waits (up to `deadline`) until its stderr contains `needle`.
    pub fn wait_stderr(&self, deadline: Duration, needle: &str) -> bool {
        poll(deadline, || {
            self.stderr_so_far().contains(needle).then_some(())
        })
        .is_some()
    }
}
