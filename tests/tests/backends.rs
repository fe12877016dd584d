//! One storage suite, two implementations: each scenario runs against xferd on its
//! local data directory and against xferd on a real Garage bucket (`[storage] backend =
//! "s3"`), through the real `xfer` client, and must behave the same on both: listing,
//! conflicts, moves, removal, quota, the type policy, whole small files, resume.

use std::path::PathBuf;

use tempfile::TempDir;
use xfer_e2e::garage::Garage;
use xfer_e2e::{
    CHUNK, Client, DEADLINE, Daemon, MIB, alice, blake3_hex, poll, random_bytes, write_file,
};

/// Where the daemon under test keeps files.
#[derive(Debug, Clone, Copy)]
enum Backend {
    Local,
    S3,
}

/// A daemon on one backend, a client logged in as alice, and scratch space.
struct Setup {
    d: Daemon,
    c: Client,
    local: TempDir,
    garage: Option<Garage>,
}

impl Setup {
    /// `storage`: extra lines for `[storage]`. `None` when the backend is not available
    /// here (Garage not installed and not required).
    fn start(backend: Backend, storage: &str) -> Option<Setup> {
        let tmp = TempDir::new().unwrap();
        let (config, garage) = match backend {
            Backend::Local => (format!("[storage]\n{storage}\n"), None),
            Backend::S3 => {
                let g = Garage::start()?;
                let creds = tmp.path().join("s3-credentials.toml");
                (g.storage_config(&creds, "deploy1", storage), Some(g))
            }
        };
        let data = tmp.path().join("data");
        let d = Daemon::start_prepared(&data, &["alice", "bob"], Some(&config), tmp);
        let c = alice(&d);
        Some(Setup {
            d,
            c,
            local: TempDir::new().unwrap(),
            garage,
        })
    }

    fn file(&self, name: &str, data: &[u8]) -> String {
        write_file(self.local.path(), name, data)
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.c.xfer(args, "");
        assert_eq!(out.code(), 0, "xfer {args:?}: {}", out.stderr());
        out.stdout()
    }

    fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.c.xfer(args, "");
        assert_eq!(out.code(), code, "xfer {args:?}: {}", out.stderr());
        out.stderr()
    }

    fn names(&self, dir: &[&str]) -> Vec<String> {
        self.c
            .ls_json(dir)
            .iter()
            .map(|e| {
                format!(
                    "{}:{}",
                    e["name"].as_str().unwrap(),
                    e["kind"].as_str().unwrap()
                )
            })
            .collect()
    }

    fn pulled(&self, remote: &str) -> Vec<u8> {
        let dest = TempDir::new().unwrap();
        let to = dest.path().join("got");
        self.ok(&["pull", "-q", remote, to.to_str().unwrap()]);
        std::fs::read(to).unwrap()
    }
}

/// Each scenario as two tests: `name::local` and `name::s3`.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn local() {
                super::$name(super::Backend::Local);
            }
            #[test]
            fn s3() {
                super::$name(super::Backend::S3);
            }
        }
    )*};
}

on_both!(
    files_round_trip_with_conflicts_moves_and_removal,
    quota_holds,
    the_type_policy_holds,
    many_small_files_round_trip,
    an_interrupted_push_resumes,
    an_abandoned_upload_expires,
    a_file_changed_between_attempts_is_never_stored_mixed,
);

fn files_round_trip_with_conflicts_moves_and_removal(backend: Backend) {
    let Some(s) = Setup::start(backend, "") else {
        return;
    };
    let big = random_bytes(20 * CHUNK + 777, 1);
    let small = random_bytes(1000, 2);
    let (bigp, smallp) = (s.file("big.bin", &big), s.file("small.txt", &small));
    let empty = s.file("empty", b"");

    s.ok(&["mkdir", "docs"]);
    s.ok(&["push", "-q", &bigp, "docs/"]);
    s.ok(&["push", "-q", &smallp, "docs/"]);
    s.ok(&["push", "-q", &empty]);
    assert_eq!(
        s.names(&["docs"]),
        ["big.bin:file", "small.txt:file"],
        "{backend:?}"
    );
    let entry = s.c.ls_entry(&["docs", "-l"], "big.bin").expect("listed");
    assert_eq!(entry["size"], big.len() as u64);
    assert_eq!(entry["digest"], blake3_hex(&big), "{backend:?} {entry}");
    assert_eq!(s.pulled("docs/big.bin"), big);
    assert_eq!(s.pulled("empty"), b"");

    // Conflicts: an existing file without --force, a file as a parent, a dir in the way.
    let other = s.file("other.bin", &random_bytes(3 * CHUNK, 3));
    let err = s.fails(&["push", "-q", &other, "docs/big.bin"], 6);
    assert!(err.contains("exists"), "{backend:?}: {err}");
    s.fails(&["push", "-q", &other, "docs/small.txt/x"], 6);
    s.ok(&["push", "-q", "--force", &other, "docs/big.bin"]);
    assert_eq!(s.pulled("docs/big.bin"), random_bytes(3 * CHUNK, 3));

    // Moves: a file, then a directory; the digest follows.
    s.ok(&["mv", "docs/small.txt", "notes.txt"]);
    assert_eq!(s.pulled("notes.txt"), small);
    s.ok(&["mkdir", "-p", "archive/2026"]);
    s.fails(&["mv", "docs", "archive"], 6);
    s.ok(&["mv", "docs", "archive/2026/docs"]);
    assert_eq!(s.names(&["archive/2026/docs"]), ["big.bin:file"]);
    let moved =
        s.c.ls_entry(&["archive/2026/docs", "-l"], "big.bin")
            .unwrap();
    assert_eq!(moved["digest"], blake3_hex(&random_bytes(3 * CHUNK, 3)));
    s.fails(&["ls", "docs"], 5);

    // Removal: a non-empty directory needs -r; an emptied one stays until removed.
    s.fails(&["rm", "archive"], 6);
    s.ok(&["rm", "archive/2026/docs/big.bin"]);
    assert_eq!(s.names(&["archive/2026"]), ["docs:dir"]);
    s.ok(&["rm", "-r", "archive"]);
    s.fails(&["rm", "nothing-here"], 5);
    assert_eq!(s.names(&[]), ["empty:file", "notes.txt:file"]);
}

fn quota_holds(backend: Backend) {
    let Some(s) = Setup::start(backend, &format!("quota_bytes = {}", 10 * MIB)) else {
        return;
    };
    let six = s.file("six.bin", &random_bytes(6 * CHUNK, 4));
    s.ok(&["push", "-q", &six]);
    let err = s.fails(&["push", "-q", &six, "again.bin"], 10);
    assert!(err.contains("quota"), "{backend:?}: {err}");
    let out = s.ok(&["whoami", "--json"]);
    assert!(out.contains(&(6 * MIB).to_string()), "{backend:?}: {out}");
    s.ok(&["rm", "six.bin"]);
    s.ok(&["push", "-q", &six, "again.bin"]);
}

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0";

fn the_type_policy_holds(backend: Backend) {
    let Some(s) = Setup::start(backend, "") else {
        return;
    };
    let text = s.file("notes.txt", &[b'a'; 5000]);
    let mut png = PNG.to_vec();
    png.extend(random_bytes(3 * CHUNK, 5));
    let png = s.file("pic.png", &png);
    s.ok(&["mkdir", "images"]);
    let err = s.fails(&["push", "-q", &text, "images/"], 10);
    assert!(err.contains("not accepted"), "{backend:?}: {err}");
    s.ok(&["push", "-q", &png, "images/"]);
    s.ok(&["push", "-q", &text]);
    let err = s.fails(&["mv", "notes.txt", "images/notes.txt"], 10);
    assert!(err.contains("not accepted"), "{backend:?}: {err}");
    assert_eq!(s.names(&["images"]), ["pic.png:file"]);
}

fn many_small_files_round_trip(backend: Backend) {
    let Some(s) = Setup::start(backend, "") else {
        return;
    };
    let tree = s.local.path().join("tree");
    let mut files = Vec::new();
    for i in 0..60u64 {
        let dir = tree.join(format!("d{}", i % 4));
        std::fs::create_dir_all(&dir).unwrap();
        let data = random_bytes((i as usize * 997) % 50_000, i);
        std::fs::write(dir.join(format!("f{i}.bin")), &data).unwrap();
        files.push((format!("d{}/f{i}.bin", i % 4), data));
    }
    s.ok(&["push", "-q", "-r", tree.to_str().unwrap()]);
    let back = TempDir::new().unwrap();
    s.ok(&["pull", "-q", "-r", "tree", back.path().to_str().unwrap()]);
    for (rel, data) in &files {
        let got: PathBuf = back.path().join("tree").join(rel);
        assert_eq!(&std::fs::read(&got).unwrap(), data, "{backend:?} {rel}");
    }
    // A second push finds everything in place.
    s.ok(&["push", "-q", "-r", tree.to_str().unwrap()]);
}

fn an_interrupted_push_resumes(backend: Backend) {
    let Some(s) = Setup::start(backend, "") else {
        return;
    };
    let data = random_bytes(48 * CHUNK + 99, 6);
    let path = s.file("big.bin", &data);
    let mut push = s.c.spawn(&["push", "-q", "--limit-rate", "8M", &path]);
    let cut = 16 * MIB;
    let held = poll(DEADLINE, || {
        assert!(
            !push.finished(),
            "push ended early: {}",
            push.stderr_so_far()
        );
        s.c.partial_received("big.bin").filter(|&r| r >= cut)
    });
    assert!(
        held.is_some(),
        "{backend:?}: the server never held {cut} bytes"
    );
    push.kill9();
    s.ok(&["push", "-q", &path]);
    let line = poll(DEADLINE, || {
        s.d.audit_events("upload")
            .into_iter()
            .rfind(|l| l.contains("big.bin"))
    })
    .expect("an upload audit line");
    let resumed = xfer_e2e::audit_u64(&line, "resumed_from").unwrap();
    let received = xfer_e2e::audit_u64(&line, "bytes_received").unwrap();
    assert!(
        resumed >= cut - 8 * MIB,
        "{backend:?}: resumed from {resumed}: {line}"
    );
    assert!(
        received.abs_diff(data.len() as u64 - resumed) <= 3 * MIB,
        "{backend:?}: {line}"
    );
    assert_eq!(s.pulled("big.bin"), data);
    assert!(
        s.names(&["--partial"])
            .iter()
            .all(|n| !n.ends_with(":partial"))
    );
}

fn an_abandoned_upload_expires(backend: Backend) {
    let Some(s) = Setup::start(backend, "partial_ttl_secs = 2") else {
        return;
    };
    let data = random_bytes(40 * CHUNK, 7);
    let path = s.file("left.bin", &data);
    let mut push = s.c.spawn(&["push", "-q", "--limit-rate", "8M", &path]);
    let held = poll(DEADLINE, || {
        assert!(
            !push.finished(),
            "push ended early: {}",
            push.stderr_so_far()
        );
        s.c.partial_received("left.bin").filter(|&r| r >= 8 * MIB)
    });
    assert!(held.is_some(), "{backend:?}: no partial to abandon");
    push.kill9();
    let gone = poll(DEADLINE, || {
        s.c.partial_received("left.bin").is_none().then_some(())
    });
    assert!(
        gone.is_some(),
        "{backend:?}: the abandoned upload was never removed"
    );
    if let Some(g) = &s.garage {
        // Aborted in the store too, not only forgotten by xferd.
        let aborted = poll(DEADLINE, || {
            let info = g.cli(&["bucket", "info", &g.bucket]);
            (!info.contains("Unfinished uploads")
                || info.contains("Unfinished uploads:                    0"))
            .then_some(())
        });
        assert!(
            aborted.is_some(),
            "multipart upload left in the bucket: {}",
            g.cli(&["bucket", "info", &g.bucket])
        );
    }
    if let Backend::Local = backend {
        let swept = poll(DEADLINE, || {
            s.d.partial_files("alice").is_empty().then_some(())
        });
        assert!(
            swept.is_some(),
            "partial data left: {:?}",
            s.d.partial_files("alice")
        );
    }
}

fn a_file_changed_between_attempts_is_never_stored_mixed(backend: Backend) {
    let Some(s) = Setup::start(backend, "") else {
        return;
    };
    let mut data = random_bytes(40 * CHUNK, 8);
    let path = s.file("moving.bin", &data);
    let mut push = s.c.spawn(&["push", "-q", "--limit-rate", "8M", &path]);
    let held = poll(DEADLINE, || {
        assert!(
            !push.finished(),
            "push ended early: {}",
            push.stderr_so_far()
        );
        s.c.partial_received("moving.bin")
            .filter(|&r| r >= 10 * MIB)
    });
    assert!(held.is_some(), "{backend:?}: nothing held");
    push.kill9();
    // The first chunks, already stored, change on the client's side.
    data[..1000].fill(0xAB);
    std::fs::write(&path, &data).unwrap();
    let first = s.c.xfer(&["push", "-q", &path], "");
    if first.code() != 0 {
        // The S3 backend cannot take stored parts back: it discards the upload and says
        // so; the next push starts over.
        assert!(
            first.stderr().contains("push again"),
            "{backend:?}: {}",
            first.stderr()
        );
        s.ok(&["push", "-q", &path]);
    }
    assert_eq!(s.pulled("moving.bin"), data, "{backend:?}");
    let entry = s.c.ls_entry(&["-l"], "moving.bin").unwrap();
    assert_eq!(entry["digest"], blake3_hex(&data));
}

/// S3 keys hold at most 1024 bytes: a path that fits a local disk but not the bucket is
/// refused with one line before anything is stored, for an upload, a `mkdir` and a move
/// (whose every file is checked first).
#[test]
fn a_path_too_long_for_the_bucket_is_refused_before_anything_is_stored() {
    let Some(s) = Setup::start(Backend::S3, "") else {
        return;
    };
    // The keys start `deploy1/users/alice/manifests/` (30 bytes): 994 are left.
    let dirs = vec!["d".repeat(100); 9].join("/");
    let long = format!("{dirs}/{}", "f".repeat(120));
    let src = s.file("small.txt", b"fits a disk, not a key");
    for args in [vec!["push", "-q", &src, &long], vec!["mkdir", "-p", &long]] {
        let err = s.fails(&args, 10);
        assert!(
            err.contains("too long for the server's bucket"),
            "{args:?}: {err}"
        );
    }
    assert!(s.names(&[]).is_empty(), "{:?}", s.names(&[]));

    // Nine levels deep fits; one level more, by a move, does not.
    let fits = format!("{dirs}/x.txt");
    s.ok(&["push", "-q", &src, &fits]);
    s.ok(&["mkdir", &"e".repeat(100)]);
    let top = "d".repeat(100);
    let deeper = format!("{}/{top}", "e".repeat(100));
    let err = s.fails(&["mv", &top, &deeper], 10);
    assert!(err.contains("too long for the server's bucket"), "{err}");
    let got = s.local.path().join("back.txt");
    s.ok(&["pull", "-q", &fits, got.to_str().unwrap()]);
    assert_eq!(std::fs::read(&got).unwrap(), b"fits a disk, not a key");
    assert!(s.c.ls_json(&[&"e".repeat(100)]).is_empty());
}
