//! Syscall faults at commit: the daemon runs under strace, which makes a chosen
//! syscall fail (`-e inject=SYSCALL:error=ERRNO:when=N`) where it touches one path
//! (`-P`: the upload's data file, its state's temporary, the partials directory or the
//! home the commit renames into). A push runs into the fault; then the daemon is killed,
//! started normally, and the push re-run. Under the fault, after the restart and after
//! the re-run, the crash loop's invariants hold, and the re-run ends with an identical
//! file.
//!
//! strace counts `when=N` per thread, and the daemon's blocking work moves between pool
//! threads, so N picks "an early one" rather than an exact call; `1+` (every call) is
//! exact. `XFER_FAULTS_RANDOM=N` adds N faults with random syscalls, paths, occurrences
//! and errors (the long run). Without strace the test is skipped, unless
//! `XFER_REQUIRE_INTEROP=1` (CI) makes that a failure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use xfer_e2e::{DEADLINE, Daemon, bin, blake3_hex};

use super::{Rig, Rng};

/// Where a fault applies.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// `partials/<key>.part`: chunk writes, the fsync before the commit's rename.
    Data,
    /// `partials/<key>.meta.tmp`: state checkpoints.
    StateTmp,
    /// The partials directory: checkpoint renames, the commit's rename, the state's
    /// removal after it.
    Partials,
    /// The home: the commit's rename into it, the directory's fsync after it.
    Home,
}

#[derive(Debug, Clone)]
struct Fault {
    what: &'static str,
    syscalls: &'static str,
    target: Target,
    when: String,
    errno: &'static str,
    /// Whether the push must reach it (a fixed fault); random ones may not.
    must_fire: bool,
}

const RENAMES: &str = "rename,renameat,renameat2";
const FSYNCS: &str = "fsync,fdatasync";
const UNLINKS: &str = "unlink,unlinkat";
const WRITES: &str = "write,pwrite64,writev,pwritev";

fn fixed() -> Vec<Fault> {
    let f = |what, syscalls, target, when: &str, errno| Fault {
        what,
        syscalls,
        target,
        when: when.to_owned(),
        errno,
        must_fire: true,
    };
    vec![
        f(
            "fsync of the data before the rename",
            FSYNCS,
            Target::Data,
            "1+",
            "EIO",
        ),
        f("the commit's rename", RENAMES, Target::Home, "1+", "EIO"),
        f(
            "fsync of the directory after the rename",
            FSYNCS,
            Target::Home,
            "1+",
            "EIO",
        ),
        f(
            "removal of the state after the commit",
            UNLINKS,
            Target::Partials,
            "1+",
            "EIO",
        ),
        f(
            "a state checkpoint's rename",
            RENAMES,
            Target::Partials,
            "1",
            "ENOSPC",
        ),
        f("a chunk write", WRITES, Target::Data, "1", "ENOSPC"),
        f(
            "every state write (disk full)",
            WRITES,
            Target::StateTmp,
            "1+",
            "ENOSPC",
        ),
        Fault {
            // A thread's second state write: only if one thread saves twice.
            must_fire: false,
            ..f(
                "state writes after the first",
                WRITES,
                Target::StateTmp,
                "2+",
                "ENOSPC",
            )
        },
    ]
}

/// A random fault among the syscalls each path sees (a write to a directory, say, would
/// never fire).
fn random(rng: &mut Rng) -> Fault {
    let pairs = [
        (WRITES, Target::Data),
        (FSYNCS, Target::Data),
        (WRITES, Target::StateTmp),
        (RENAMES, Target::Partials),
        (UNLINKS, Target::Partials),
        (RENAMES, Target::Home),
        (FSYNCS, Target::Home),
    ];
    let (syscalls, target) = pairs[rng.below(pairs.len() as u64) as usize];
    let n = 1 + rng.below(3);
    Fault {
        what: "random",
        syscalls,
        target,
        when: if rng.below(4) == 0 {
            format!("{n}+")
        } else {
            n.to_string()
        },
        errno: ["EIO", "ENOSPC", "EDQUOT"][rng.below(3) as usize],
        must_fire: false,
    }
}

fn strace_present() -> bool {
    Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The daemon under strace with `fault` on the upload of `name`; the trace goes to
/// `trace` (injected calls are marked `(INJECTED)` there).
fn traced_daemon(rig: &Rig, fault: &Fault, name: &str, trace: &Path) -> Daemon {
    let partials = rig.data.join("users/alice/partials");
    let key = blake3_hex(name.as_bytes());
    let path: PathBuf = match fault.target {
        Target::Data => partials.join(format!("{key}.part")),
        Target::StateTmp => partials.join(format!("{key}.meta.tmp")),
        Target::Partials => partials,
        Target::Home => rig.data.join("users/alice/files"),
    };
    let start = Instant::now();
    loop {
        let mut cmd = Command::new("strace");
        cmd.args(["-f", "-qq", "-o"])
            .arg(trace)
            .args(["-e", &format!("trace={}", fault.syscalls)])
            .args([
                "-e",
                &format!(
                    "inject={}:error={}:when={}",
                    fault.syscalls, fault.errno, fault.when
                ),
            ])
            .arg("-P")
            .arg(&path)
            .arg("--")
            .arg(bin("xferd"))
            .env("XFERD_CONFIG", "/dev/null")
            .env_remove("RUNTIME_DIRECTORY")
            .arg("--data-dir")
            .arg(&rig.data)
            .args(["--listen", &rig.daemon_listen()]);
        match Daemon::spawn(cmd, &rig.data) {
            Ok(d) => return d,
            Err(log) if start.elapsed() > DEADLINE => panic!("xferd under strace: {log}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// `kill -9` of the processes strace `strace` runs: killing strace alone detaches them,
/// and they run on.
fn kill_tracees(strace: u32) {
    let children = std::fs::read_to_string(format!("/proc/{strace}/task/{strace}/children"))
        .unwrap_or_default();
    for pid in children.split_whitespace() {
        let _ = Command::new("kill").args(["-KILL", pid]).status();
    }
}

/// `kill -9` of the xferd that strace runs, then of strace.
fn kill_traced(mut d: Daemon) {
    kill_tracees(d.pid());
    d.signal_and_wait("KILL");
}

/// Kills the current traced xferd when dropped, so a failing test leaves none behind
/// (dropping the [`Daemon`] kills only strace).
#[derive(Default)]
struct Reaper(std::cell::Cell<Option<u32>>);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(strace) = self.0.get() {
            kill_tracees(strace);
        }
    }
}

#[test]
fn syscalls_failing_at_commit_leave_no_corrupt_partial_or_ghost() {
    let _one = crate::serial();
    if !strace_present() {
        assert!(
            std::env::var("XFER_REQUIRE_INTEROP").is_err(),
            "strace is required (XFER_REQUIRE_INTEROP=1) but not installed"
        );
        eprintln!("skipped: strace not installed");
        return;
    }
    let mut rng = Rng::from_env("syscall faults");
    let extra: usize = std::env::var("XFER_FAULTS_RANDOM")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut faults = fixed();
    faults.extend((0..extra).map(|_| random(&mut rng)));

    let mut rig = Rig::start();
    let trace_dir = tempfile::TempDir::new().unwrap();
    // Declared after the rig, so dropped before it.
    let reaper = Reaper::default();
    let (mut injected, mut fired, mut failed_runs) = (0usize, 0usize, 0usize);
    for (i, fault) in faults.iter().enumerate() {
        let name = format!("f{i}.bin");
        let path = rig.source(&name, &mut rng);
        let when = format!("fault {i} ({}: {fault:?})", fault.what);
        let trace = trace_dir.path().join(format!("{i}.trace"));

        let normal = rig.d.take().expect("daemon running");
        drop(normal); // killed on drop
        let traced = traced_daemon(&rig, fault, &name, &trace);
        reaper.0.set(Some(traced.pid()));
        rig.d = Some(traced);
        let out = rig.alice.spawn(&["push", "-q", &path]).wait(DEADLINE);
        assert!(
            ![7, 101].contains(&out.code()),
            "{when}: integrity error or panic: {}",
            out.stderr()
        );
        if out.code() != 0 {
            failed_runs += 1;
        }
        rig.check(&format!("{when}, under the fault"));
        kill_traced(rig.d.take().expect("traced daemon"));
        reaper.0.set(None);
        let n = std::fs::read_to_string(&trace)
            .unwrap_or_default()
            .matches("(INJECTED)")
            .count();
        assert!(
            n > 0 || !fault.must_fire,
            "{when}: the push never reached the fault (exit {}): {}",
            out.code(),
            out.stderr()
        );
        injected += n;
        fired += usize::from(n > 0);

        rig.start_daemon();
        rig.check(&format!("{when}, after a restart"));
        let again = rig.alice.xfer(&["push", "-q", &path], "");
        assert_eq!(again.code(), 0, "{when}: re-run: {}", again.stderr());
        let stored = std::fs::read(rig.daemon().files_dir("alice").join(&name)).unwrap();
        assert_eq!(&blake3_hex(&stored), &rig.sources[&name], "{when}");
        rig.check(&format!("{when}, after the re-run"));
    }
    assert!(
        rig.alice.ls_json(&["--partial"]).is_empty(),
        "no partial left once every re-run committed"
    );
    eprintln!(
        "syscall faults: {} faults, {fired} reached, {injected} calls failed, {failed_runs} pushes failed and were re-run; 0 corrupt, 0 ghost",
        faults.len()
    );
}
