//! Crash loop (docs/TESTING.md, "Crash loop"): `kill -9` of the daemon and, separately,
//! of the client at random instants of pushes, pulls, sends and commits, each followed
//! by a restart and a re-run; and ([`inject`]) the daemon's unlink, rename, fsync and
//! write failing under strace while a push commits. After every cycle, and at the end:
//! no stored file differs from its source (BLAKE3), no partial is listed as a file, no
//! committed file is also listed as a partial, and no client-side part file sits beside
//! the complete file it was for.
//!
//! The instants come from a seeded generator; the seed is printed, and `XFER_SEED=N`
//! replays a run. `XFER_CRASH_CYCLES=N` sets the number of kill cycles (default 50; the
//! long run uses 500, tests/long/suites/30-crash-loop.sh).

mod batch;
mod inject;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use xfer_e2e::{
    CHUNK, Client, DEADLINE, Daemon, Out, PASSWORD, Running, add_user, blake3_hex, random_bytes,
    write_file,
};

/// A small seeded generator (xorshift64*): the same seed gives the same run.
pub struct Rng(u64);

impl Rng {
    /// From `XFER_SEED`, or the clock; prints the seed either way.
    pub fn from_env(what: &str) -> Rng {
        let seed = std::env::var("XFER_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        eprintln!("{what}: XFER_SEED={seed}");
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A data directory with alice and bob, its daemon (restarted on the same port), alice's
/// and bob's clients, and the sources of everything sent.
pub struct Rig {
    _tmp: TempDir,
    pub data: PathBuf,
    listen: String,
    pub d: Option<Daemon>,
    pub alice: Client,
    pub bob: Client,
    pub local: TempDir,
    pub dest: TempDir,
    /// BLAKE3 of every source, by file name (names are unique across the run).
    pub sources: BTreeMap<String, String>,
}

impl Rig {
    pub fn start() -> Rig {
        let tmp = TempDir::new().unwrap();
        let data = tmp.path().join("data");
        add_user(&data, "alice", PASSWORD);
        add_user(&data, "bob", PASSWORD);
        let d = Daemon::start_in(&data, &[]).expect("xferd starts");
        let (alice, bob) = (Client::new(), Client::new());
        alice.login(&d, "alice", PASSWORD);
        bob.login(&d, "bob", PASSWORD);
        Rig {
            listen: d.host_port(),
            _tmp: tmp,
            data,
            d: Some(d),
            alice,
            bob,
            local: TempDir::new().unwrap(),
            dest: TempDir::new().unwrap(),
            sources: BTreeMap::new(),
        }
    }

    /// The address the daemon listens on, the same after every restart.
    pub fn daemon_listen(&self) -> String {
        self.listen.clone()
    }

    pub fn daemon(&self) -> &Daemon {
        self.d.as_ref().expect("daemon running")
    }

    /// A new source file of one to three chunks and a random tail; returns its path.
    pub fn source(&mut self, name: &str, rng: &mut Rng) -> String {
        let len = (1 + rng.below(3) as usize) * CHUNK + rng.below(CHUNK as u64) as usize;
        let data = random_bytes(len, rng.next());
        self.sources.insert(name.to_owned(), blake3_hex(&data));
        write_file(self.local.path(), name, &data)
    }

    /// Starts the daemon (normally) on the same data directory and port.
    pub fn start_daemon(&mut self) {
        assert!(self.d.is_none(), "one daemon at a time");
        let start = Instant::now();
        self.d = Some(loop {
            match Daemon::start_listening(&self.data, &self.listen, &[]) {
                Ok(d) => break d,
                Err(log) if start.elapsed() > DEADLINE => panic!("restart failed: {log}"),
                // The port can linger for a moment after a kill.
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        });
    }

    /// `kill -9` of the daemon, then a normal start.
    pub fn kill9_daemon_and_restart(&mut self) {
        let mut d = self.d.take().expect("daemon running");
        assert_eq!(d.signal_and_wait("KILL"), None, "killed by the signal");
        drop(d);
        self.start_daemon();
    }

    /// Asserts the invariants; returns how many files are stored.
    pub fn check(&self, when: &str) -> usize {
        let mut stored = 0;
        for user in ["alice", "bob"] {
            let files = self.daemon().files_dir(user);
            for path in walk(&files) {
                stored += 1;
                let name = file_name(&path);
                let want = self
                    .sources
                    .get(&name)
                    .unwrap_or_else(|| panic!("{when}: {} is no file of ours", path.display()));
                let got = blake3_hex(&std::fs::read(&path).unwrap());
                assert_eq!(&got, want, "{when}: corrupt file {}", path.display());
            }
        }
        self.check_listing(&self.alice, &[], "alice", "", when);
        self.check_listing(&self.bob, &["inbox/alice"], "bob", "inbox/alice/", when);
        for path in walk(self.dest.path()) {
            let name = file_name(&path);
            // xfer's own state: a part file, its record, the record's temporary.
            if name.ends_with(".xfer-part")
                || name.ends_with(".xfer-part.json")
                || name.starts_with(".xfer-record-")
            {
                continue;
            }
            let want = &self.sources[&name];
            let got = blake3_hex(&std::fs::read(&path).unwrap());
            assert_eq!(&got, want, "{when}: pulled {name} differs from its source");
            let part = self.dest.path().join(format!("{name}.xfer-part"));
            assert!(
                !part.exists(),
                "{when}: {name} complete beside its part file"
            );
        }
        stored
    }

    /// `ls DIR -l --json` as `c`: no name both a file and a partial, every file complete
    /// with its source's digest, no partial whose file is committed on disk.
    fn check_listing(&self, c: &Client, dir: &[&str], user: &str, prefix: &str, when: &str) {
        let mut args = vec!["ls"];
        args.extend_from_slice(dir);
        args.extend(["-l", "--json"]);
        let out = c.xfer(&args, "");
        if out.code() == 5 {
            return; // bob's inbox does not exist before the first send
        }
        let entries = ls_entries(&out, &args);
        let mut kinds: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for e in &entries {
            let name = e["name"].as_str().unwrap_or("").to_owned();
            let kind = e["kind"].as_str().unwrap_or("").to_owned();
            if kind == "file" {
                let want = self
                    .sources
                    .get(&name)
                    .unwrap_or_else(|| panic!("{when}: {e}"));
                if let Some(digest) = e["digest"].as_str() {
                    assert_eq!(
                        digest, want,
                        "{when}: {user} lists {name} with another digest"
                    );
                }
            }
            if kind == "partial" {
                let committed = self.daemon().files_dir(user).join(prefix).join(&name);
                assert!(
                    !committed.exists(),
                    "{when}: ghost partial: {user}'s {name} is committed and listed as partial"
                );
            }
            kinds.entry(name).or_default().push(kind);
        }
        for (name, k) in kinds {
            assert!(k.len() == 1, "{when}: {user}'s {name} listed as {k:?}");
        }
    }
}

fn ls_entries(out: &Out, args: &[&str]) -> Vec<serde_json::Value> {
    assert_eq!(out.code(), 0, "xfer {args:?}: {}", out.stderr());
    match serde_json::from_str(&out.stdout()) {
        Ok(serde_json::Value::Array(v)) => v,
        other => panic!("xfer {args:?}: no JSON array: {other:?}"),
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned()
}

/// Every regular file beneath `dir`.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() {
            out.extend(walk(&e.path()));
        } else if t.is_file() {
            out.push(e.path());
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Push,
    Pull,
    Send,
    /// A push killed late, around its commit.
    Commit,
}

/// How one cycle's first run ended.
#[derive(Default)]
struct Tally {
    cycles: usize,
    daemon_kills: usize,
    client_kills: usize,
    finished_before_kill: usize,
    by_op: BTreeMap<String, usize>,
}

/// The command of `op` on `name` (`dest` for pulls).
fn command(op: Op, path: &str, name: &str, dest: &str) -> Vec<String> {
    let v: Vec<&str> = match op {
        Op::Push | Op::Commit => vec!["push", "-q", path],
        Op::Send => vec!["send", "bob", path, "-q"],
        Op::Pull => vec!["pull", "-q", name, dest],
    };
    v.into_iter().map(str::to_owned).collect()
}

fn run(c: &Client, args: &[String]) -> Out {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    c.xfer(&args, "")
}

fn spawn(c: &Client, args: &[String]) -> Running {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    c.spawn(&args)
}

#[test]
fn kill9_of_daemon_or_client_at_random_instants_leaves_no_corrupt_partial_or_ghost() {
    let _one = crate::serial();
    let cycles: usize = std::env::var("XFER_CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let mut rng = Rng::from_env("crash loop");
    let mut rig = Rig::start();
    let dest = format!("{}/", rig.dest.path().display());

    // How long each operation takes here: its kill instants are spread over that.
    let mut pulls = vec!["warm-push".to_owned()];
    let mut window = BTreeMap::new();
    for (op, name) in [
        (Op::Push, "warm-push"),
        (Op::Send, "warm-send"),
        (Op::Pull, "warm-push"),
    ] {
        let path = if op == Op::Pull {
            String::new()
        } else {
            rig.source(name, &mut rng)
        };
        let start = Instant::now();
        let out = run(&rig.alice, &command(op, &path, name, &dest));
        assert_eq!(out.code(), 0, "{op:?}: {}", out.stderr());
        window.insert(
            format!("{op:?}"),
            start.elapsed().max(Duration::from_millis(20)),
        );
    }
    window.insert("Commit".into(), window["Push"]);
    eprintln!("crash loop: kill instants within {window:?}");

    let mut tally = Tally::default();
    for cycle in 0..cycles {
        let op = [Op::Push, Op::Pull, Op::Send, Op::Commit][rng.below(4) as usize];
        let kill_daemon = rng.below(2) == 0;
        let name = format!("c{cycle}.bin");
        let (path, name) = if op == Op::Pull {
            // Pull a committed file afresh: its complete copy goes first.
            let name = pulls[rng.below(pulls.len() as u64) as usize].clone();
            let _ = std::fs::remove_file(rig.dest.path().join(&name));
            (String::new(), name)
        } else {
            (rig.source(&name, &mut rng), name)
        };
        let args = command(op, &path, &name, &dest);
        // Most kills land inside the run; a commit's near its end.
        let ms = window[&format!("{op:?}")].as_millis() as u64;
        let delay = match op {
            Op::Commit => ms * 6 / 10 + rng.below(ms * 4 / 10 + 1),
            _ => rng.below(ms * 7 / 10 + 1),
        };
        let when = format!(
            "cycle {cycle} ({op:?}, kill {}, after {delay} ms)",
            if kill_daemon { "daemon" } else { "client" }
        );

        let mut first = spawn(&rig.alice, &args);
        std::thread::sleep(Duration::from_millis(delay));
        if first.finished() {
            tally.finished_before_kill += 1;
        }
        if kill_daemon {
            rig.kill9_daemon_and_restart();
            tally.daemon_kills += 1;
        } else {
            first.kill9();
            tally.client_kills += 1;
        }
        let out = first.wait(DEADLINE);
        assert!(
            ![7, 101].contains(&out.code()),
            "{when}: first run failed on integrity or panicked: {}",
            out.stderr()
        );
        rig.check(&format!("{when}, after the kill"));

        let done_already = op == Op::Pull && out.code() == 0;
        if !done_already {
            let again = run(&rig.alice, &args);
            assert_eq!(again.code(), 0, "{when}: re-run: {}", again.stderr());
        }
        let stored = match op {
            Op::Pull => rig.dest.path().join(&name),
            Op::Send => rig
                .daemon()
                .files_dir("bob")
                .join("inbox/alice")
                .join(&name),
            _ => rig.daemon().files_dir("alice").join(&name),
        };
        assert!(
            stored.exists(),
            "{when}: re-run left no {}",
            stored.display()
        );
        if matches!(op, Op::Push | Op::Commit) {
            pulls.push(name.clone());
        }
        rig.check(&format!("{when}, after the re-run"));
        tally.cycles += 1;
        *tally.by_op.entry(format!("{op:?}")).or_default() += 1;
    }
    let stored = rig.check("at the end");
    assert!(
        rig.alice.ls_json(&["--partial"]).is_empty(),
        "no partial left once every re-run committed"
    );
    eprintln!(
        "crash loop: {} cycles ({:?}), {} daemon kills, {} client kills, {} runs had finished before their kill; {stored} files stored, 0 corrupt, 0 ghost",
        tally.cycles,
        tally.by_op,
        tally.daemon_kills,
        tally.client_kills,
        tally.finished_before_kill
    );
}
