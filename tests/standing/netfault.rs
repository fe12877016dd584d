//! Network faults (docs/TESTING.md, "Network faults"): pushes and pulls through the
//! fault-injecting proxy ([`xfer_e2e::Proxy`]), reset or stalled at a chunk boundary
//! (one byte before, at, one byte after) and at 10, 50 and 90 % of the file. Every
//! faulted run must end (with an error) well within its deadline, and a re-run without
//! the fault must resume to an identical file.
//!
//! Offsets are of the TLS stream, not of the file. A stream offset is taken as the
//! file offset plus the bytes a command exchanges before any file data (handshake,
//! hello, session login, the request), measured once through the proxy with
//! `xfer whoami`. Framing (each chunk's header and digest) and TLS records (22 bytes per
//! 16 KiB) add about 0.2 %, so "chunk" lands within a few KiB of the boundary, in the
//! first chunk's last record or the second's header: near enough to cut a chunk in
//! flight, which is what the boundary cases are for.
//!
//! A stall stops one direction; the daemon's idle timeout (2 s here) then closes the
//! connection, and the client must notice that and stop. A path that drops everything
//! both ways, where the client's own request timeout has to act, is the long run's
//! job (tests/long/suites/40-netns.sh).

use std::time::{Duration, Instant};

use tempfile::TempDir;
use xfer_e2e::{
    Action, CHUNK, Client, DEADLINE, Daemon, Fault, Moved, PASSWORD, Proxy, Way, blake3_hex, poll,
    random_bytes, write_file,
};

/// Four chunks and a tail, so 10/50/90 % fall inside chunks, not on boundaries.
const SIZE: usize = 4 * CHUNK + 4321;

/// Short limits so a stalled connection is closed quickly.
const CONFIG: &str =
    "[limits]\nidle_timeout_secs = 2\nhandshake_timeout_secs = 5\nlogin_timeout_secs = 5\n";

/// The offsets, by name, as file offsets.
fn offsets() -> Vec<(&'static str, u64)> {
    let (c, s) = (CHUNK as u64, SIZE as u64);
    vec![
        ("chunk-1", c - 1),
        ("chunk", c),
        ("chunk+1", c + 1),
        ("10%", s / 10),
        ("50%", s / 2),
        ("90%", s * 9 / 10),
    ]
}

/// A daemon behind a proxy, and alice logged in through the proxy.
struct Rig {
    d: Daemon,
    proxy: Proxy,
    c: Client,
    local: TempDir,
    /// Bytes a command moves each way before file data.
    lead: Moved,
}

impl Rig {
    fn start() -> Rig {
        let d = Daemon::start_with(&["alice"], Some(CONFIG));
        let proxy = Proxy::start(d.addr);
        let c = Client::new();
        let target = format!("alice@{}", proxy.addr());
        let out = c.xfer(
            &[
                "login",
                &target,
                "--password-stdin",
                "--fingerprint",
                &d.fingerprint,
            ],
            &format!("{PASSWORD}\n"),
        );
        assert_eq!(out.code(), 0, "login through the proxy: {}", out.stderr());
        let before = proxy.finished().len();
        let out = c.xfer(&["whoami"], "");
        assert_eq!(out.code(), 0, "whoami through the proxy: {}", out.stderr());
        let lead = poll(DEADLINE, || proxy.finished().get(before).copied())
            .expect("the proxy saw whoami's connection end");
        Rig {
            d,
            proxy,
            c,
            local: TempDir::new().unwrap(),
            lead,
        }
    }

    /// The stream offset of file offset `at` going `way`.
    fn stream_offset(&self, way: Way, at: u64) -> u64 {
        at + match way {
            Way::Up => self.lead.up,
            Way::Down => self.lead.down,
        }
    }

    /// Runs `args` with `fault` set; asserts it fired and the command failed within
    /// the deadline; returns how long it took.
    fn faulted(&self, args: &[&str], fault: Fault) -> Duration {
        self.proxy.set_fault(Some(fault));
        let fired = self.proxy.fired();
        let start = Instant::now();
        // `wait` fails the test if the command is still running at the deadline.
        let out = self.c.spawn(args).wait(DEADLINE);
        let took = start.elapsed();
        self.proxy.set_fault(None);
        assert!(
            self.proxy.fired() > fired,
            "{fault:?} never fired for {args:?}: {}",
            out.stderr()
        );
        assert_ne!(
            out.code(),
            0,
            "{args:?} with {fault:?} cannot have succeeded"
        );
        took
    }
}

#[test]
fn pushes_cut_or_stalled_anywhere_resume_to_identical_files() {
    let _one = crate::serial();
    let rig = Rig::start();
    for action in [Action::Reset, Action::Stall] {
        for (i, (label, at)) in offsets().into_iter().enumerate() {
            let name = format!("push-{action:?}-{i}.bin");
            let data = random_bytes(SIZE, 900 + i as u64 + 10 * (action == Action::Stall) as u64);
            let path = write_file(rig.local.path(), &name, &data);
            let fault = Fault {
                way: Way::Up,
                at: rig.stream_offset(Way::Up, at),
                action,
            };
            let took = rig.faulted(&["push", "-q", &path], fault);
            eprintln!("push {action:?} at {label}: failed after {took:?}");
            assert!(
                !rig.d.files_dir("alice").join(&name).exists(),
                "nothing committed by a cut push ({label})"
            );

            let out = rig.c.xfer(&["push", "-q", &path], "");
            assert_eq!(
                out.code(),
                0,
                "re-run after {action:?} at {label}: {}",
                out.stderr()
            );
            let stored = std::fs::read(rig.d.files_dir("alice").join(&name)).unwrap();
            assert_eq!(
                blake3_hex(&stored),
                blake3_hex(&data),
                "{name}: identical after {action:?} at {label}"
            );
        }
    }
    assert!(
        rig.c.ls_json(&["--partial"]).is_empty(),
        "no partial left after every re-run committed"
    );
}

#[test]
fn pulls_cut_or_stalled_anywhere_resume_to_identical_files() {
    let _one = crate::serial();
    let rig = Rig::start();
    let data = random_bytes(SIZE, 950);
    let path = write_file(rig.local.path(), "pull.bin", &data);
    let out = rig.c.xfer(&["push", "-q", &path], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    for action in [Action::Reset, Action::Stall] {
        for (label, at) in offsets() {
            let dest = TempDir::new().unwrap();
            let dest_arg = format!("{}/", dest.path().display());
            let fault = Fault {
                way: Way::Down,
                at: rig.stream_offset(Way::Down, at),
                action,
            };
            let took = rig.faulted(&["pull", "-q", "pull.bin", &dest_arg], fault);
            eprintln!("pull {action:?} at {label}: failed after {took:?}");
            let done = dest.path().join("pull.bin");
            assert!(!done.exists(), "nothing renamed into place ({label})");

            let out = rig.c.xfer(&["pull", "-q", "pull.bin", &dest_arg], "");
            assert_eq!(
                out.code(),
                0,
                "re-run after {action:?} at {label}: {}",
                out.stderr()
            );
            assert_eq!(
                blake3_hex(&std::fs::read(&done).unwrap()),
                blake3_hex(&data),
                "identical after {action:?} at {label}"
            );
            assert!(
                !dest.path().join("pull.bin.xfer-part").exists(),
                "part file renamed away ({label})"
            );
        }
    }
}
