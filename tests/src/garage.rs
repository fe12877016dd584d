//! A real Garage (S3-compatible object store) for the `s3` backend's tests: one node on
//! 127.0.0.1 ports with a temporary metadata and data directory, a layout, a key and a
//! bucket, set up with Garage's own CLI. Started the way a user would (README "Scaling
//! out"), never mocked.
//!
//! Garage is a test tool installed by `.ci/run` (`cargo install garage`); where it is
//! missing the tests that need it are skipped with a note, unless `XFER_REQUIRE_S3=1`
//! (set by CI), which fails them instead.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use tempfile::TempDir;

use crate::DEADLINE;

/// A running single-node Garage with a bucket and a key; killed on drop.
pub struct Garage {
    child: Option<Child>,
    dir: TempDir,
    config: PathBuf,
    /// The S3 API, `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The bucket xferd uses.
    pub bucket: String,
    /// The key pair allowed on it.
    pub key_id: String,
    pub secret: String,
}

/// The `garage` binary: on PATH or where `cargo install` puts it.
fn garage_bin() -> Option<PathBuf> {
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin")));
    candidates.map(|d| d.join("garage")).find(|p| p.is_file())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Garage {
    /// Starts Garage, or `None` (with a note on stderr) when it is not installed and
    /// `XFER_REQUIRE_S3` is not set.
    pub fn start() -> Option<Garage> {
        let Some(_) = garage_bin() else {
            assert!(
                std::env::var_os("XFER_REQUIRE_S3").is_none(),
                "XFER_REQUIRE_S3 is set but `garage` is not installed (cargo install garage; see .ci/run)"
            );
            eprintln!("skipped: `garage` is not installed (see .ci/run)");
            return None;
        };
        let dir = TempDir::new().expect("temp dir");
        let (rpc, s3, admin) = (free_port(), free_port(), free_port());
        let config = dir.path().join("garage.toml");
        let secret: String = crate::random_bytes(32, u64::from(rpc))
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let toml = format!(
            r#"metadata_dir = "{d}/meta"
data_dir = "{d}/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
"#,
            d = dir.path().display()
        );
        std::fs::write(&config, toml).expect("write garage.toml");
        let mut g = Garage {
            child: None,
            dir,
            config,
            endpoint: format!("http://127.0.0.1:{s3}"),
            bucket: "xfer".into(),
            key_id: String::new(),
            secret: String::new(),
        };
        g.run_server();
        let id = g.cli(&["node", "id", "-q"]);
        let id = id.trim().split('@').next().expect("node id").to_owned();
        g.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &id]);
        g.cli(&["layout", "apply", "--version", "1"]);
        let key = g.cli(&["key", "create", "xfer-test"]);
        g.key_id = field(&key, "Key ID").expect("a key id in `garage key create`");
        g.secret = field(&key, "Secret key").expect("a secret in `garage key create`");
        g.cli(&["bucket", "create", &g.bucket.clone()]);
        g.cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            "xfer",
            "--key",
            "xfer-test",
        ]);
        Some(g)
    }

    /// Starts `garage server` and waits for its S3 API to listen (a log line).
    fn run_server(&mut self) {
        let mut child = Command::new(garage_bin().expect("garage"))
            .arg("-c")
            .arg(&self.config)
            .arg("server")
            .env("RUST_LOG", "garage=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn garage server");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        let log = self.dir.path().join("garage.log");
        std::thread::spawn(move || {
            let mut out = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .ok();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(f) = out.as_mut() {
                    use std::io::Write as _;
                    let _ = writeln!(f, "{line}");
                }
                if line.contains("S3 API server listening") {
                    let _ = tx.send(());
                }
            }
        });
        self.child = Some(child);
        assert!(
            rx.recv_timeout(DEADLINE).is_ok(),
            "garage did not start listening: {}",
            self.log()
        );
    }

    /// Runs `garage -c CONFIG ARGS…` and returns its stdout; panics when it fails.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(garage_bin().expect("garage"))
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("run garage");
        assert!(
            out.status.success(),
            "garage {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `[storage]` for an xferd on this bucket (with `extra` lines under `[storage]`),
    /// the key pair in `credentials` (written mode 0600); `prefix` keeps deployments in
    /// one bucket apart.
    pub fn storage_config(&self, credentials: &Path, prefix: &str, extra: &str) -> String {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::write(
            credentials,
            format!(
                "access_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
                self.key_id, self.secret
            ),
        )
        .expect("write credentials");
        std::fs::set_permissions(credentials, std::fs::Permissions::from_mode(0o600)).unwrap();
        format!(
            "[storage]\nbackend = \"s3\"\n{extra}\n\n[storage.s3]\nendpoint = \"{}\"\nbucket = \"{}\"\nregion = \"garage\"\nprefix = \"{prefix}\"\ncredentials_file = \"{}\"\n",
            self.endpoint,
            self.bucket,
            credentials.display()
        )
    }

    /// Kills the server (the data stays), for "storage down" tests.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same ports and data.
    pub fn restart(&mut self) {
        self.stop();
        self.run_server();
    }

    /// What the server logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("garage.log")).unwrap_or_default()
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The value after `name:` on a line of Garage's CLI output.
fn field(out: &str, name: &str) -> Option<String> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(name)?.trim_start().strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}
