//! Confinement: every path is resolved beneath the user's home. Escapes by `..`,
//! absolute paths, backslashes, control characters, NUL, invalid UTF-8, over-long
//! names and symlinks pointing out are refused for every command; nothing outside the
//! home changes or leaks; users cannot see each other's files.
//!
//! Safety: the tests run as whatever user runs `cargo test`, possibly root. Destructive
//! vectors therefore only ever point at directories the test owns; `/etc/passwd` is
//! used for reads only.

use std::collections::BTreeSet;
use std::os::unix::fs::symlink;
use std::path::PathBuf;

use futures_util::SinkExt;
use tempfile::TempDir;
use tokio::io::AsyncWriteExt;
use xfer_e2e::{Client, Daemon, Out, PASSWORD, RawConn};
use xfer_proto::{Chunk, Digest, ErrorCode, Frame, Request, Response};

const CANARY: &str = "CANARY-outside-the-home-3f9a1c";
const OUTSIDE_CANARY: &str = "CANARY-in-a-foreign-dir-77b2e0";
const BOB_SECRET: &str = "BOB-SECRET-do-not-leak-51d0aa";

/// A daemon with alice and bob, canaries outside alice's home, and symlinks planted
/// in alice's files directory pointing out of it.
struct World {
    d: Daemon,
    alice: Client,
    bob: Client,
    /// A directory outside the data directory, owned by the test.
    outside: TempDir,
    /// A local file to push, and an empty local directory to pull into.
    local: TempDir,
    pulls: TempDir,
}

impl World {
    fn new() -> World {
        let d = Daemon::start_with(&["alice", "bob"], None);
        let alice = Client::new();
        alice.login(&d, "alice", PASSWORD);
        let bob = Client::new();
        bob.login(&d, "bob", PASSWORD);
        let outside = TempDir::new().unwrap();
        let local = TempDir::new().unwrap();
        let pulls = TempDir::new().unwrap();

        std::fs::write(d.data_dir.join("canary"), CANARY).unwrap();
        std::fs::write(outside.path().join("canary"), OUTSIDE_CANARY).unwrap();
        std::fs::create_dir(outside.path().join("etc")).unwrap();
        std::fs::write(outside.path().join("etc/passwd"), OUTSIDE_CANARY).unwrap();
        std::fs::write(local.path().join("payload.txt"), "payload\n").unwrap();
        std::fs::write(local.path().join("secret.txt"), BOB_SECRET).unwrap();
        std::fs::write(local.path().join("inside.txt"), "inside\n").unwrap();

        let push = |c: &Client, name: &str| {
            let p = local.path().join(name).display().to_string();
            let out = c.xfer(&["push", "-q", &p], "");
            assert_eq!(out.code(), 0, "setup push {name}: {}", out.stderr());
        };
        push(&bob, "secret.txt");
        push(&alice, "inside.txt");
        assert_eq!(alice.xfer(&["mkdir", "a"], "").code(), 0);

        // Planted beforehand, e.g. by someone with shell access or an older bug.
        let files = d.files_dir("alice");
        symlink("../../..", files.join("up")).unwrap();
        symlink(outside.path(), files.join("out")).unwrap();
        symlink(outside.path().join("etc"), files.join("etc")).unwrap();
        symlink("/etc", files.join("sysetc")).unwrap();
        World {
            d,
            alice,
            bob,
            outside,
            local,
            pulls,
        }
    }

    /// Remote paths that must be refused for every command.
    fn vectors(&self) -> Vec<String> {
        let outside = self.outside.path().display().to_string();
        let long = "n".repeat(300);
        vec![
            "..".into(),
            "../x".into(),
            "a/../../x".into(),
            "a/../../../../canary".into(),
            "../bob/files/secret.txt".into(),
            "../../bob/files/secret.txt".into(),
            format!("{outside}/canary"),
            format!("/{outside}/canary"),
            "//x".into(),
            "..\\x".into(),
            "..\\..\\canary".into(),
            "C:\\x".into(),
            "a\u{1}b".into(),
            "a\nb".into(),
            "a\rb".into(),
            "\u{1b}[31mred".into(),
            "a\u{7f}b".into(),
            "a\u{9b}b".into(),
            long.clone(),
            format!("a/{long}"),
            "up/canary".into(),
            "up/users/bob/files/secret.txt".into(),
            "out/canary".into(),
            "out/new".into(),
            "etc/passwd".into(),
        ]
    }

    /// Paths refused for reads only (they point at the real `/etc`).
    fn read_vectors(&self) -> Vec<String> {
        vec![
            "/etc/passwd".into(),
            "/etc".into(),
            "sysetc/passwd".into(),
            "sysetc".into(),
            "up".into(),
            "out".into(),
            "etc".into(),
        ]
    }

    /// Names present in the places a broken server would write to.
    fn snapshot(&self) -> BTreeSet<PathBuf> {
        let mut names = BTreeSet::new();
        let users = self.d.data_dir.join("users");
        for dir in [
            self.d.data_dir.clone(),
            users.clone(),
            users.join("alice"),
            users.join("bob"),
            self.d.files_dir("bob"),
            self.outside.path().to_owned(),
            self.outside.path().join("etc"),
            self.d.files_dir("alice").join("a"),
        ] {
            if let Ok(rd) = std::fs::read_dir(&dir) {
                names.extend(rd.filter_map(|e| e.ok().map(|e| e.path())));
            }
        }
        names
    }

    /// Nothing outside alice's home changed.
    fn assert_canaries(&self) {
        let read =
            |p: PathBuf| std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p:?}: {e}"));
        assert_eq!(read(self.d.data_dir.join("canary")), CANARY);
        assert_eq!(read(self.outside.path().join("canary")), OUTSIDE_CANARY);
        assert_eq!(read(self.outside.path().join("etc/passwd")), OUTSIDE_CANARY);
        assert_eq!(read(self.d.files_dir("bob").join("secret.txt")), BOB_SECRET);
        assert_eq!(
            read(self.d.files_dir("alice").join("inside.txt")),
            "inside\n"
        );
        let pulled: Vec<_> = std::fs::read_dir(self.pulls.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(pulled.is_empty(), "nothing pulled: {pulled:?}");
    }

    /// Asserts `out` is a refusal (exit 10 or 5) that leaks nothing.
    fn assert_refused(&self, what: &str, out: &Out) {
        let said = format!("{}{}", out.stdout(), out.stderr());
        assert!(
            matches!(out.code(), 5 | 10),
            "{what}: want exit 10 or 5, got {}: {said}",
            out.code()
        );
        for secret in [CANARY, OUTSIDE_CANARY, BOB_SECRET, "root:x:0:0"] {
            assert!(!said.contains(secret), "{what} leaked {secret}: {said}");
        }
        let data = self.d.data_dir.display().to_string();
        assert!(!said.contains(&data), "{what} leaked a server path: {said}");
    }
}

#[test]
fn every_escaping_path_is_refused_by_every_command_and_nothing_outside_changes() {
    let w = World::new();
    let before = w.snapshot();
    let payload = w.local.path().join("payload.txt").display().to_string();
    let pulls = format!("{}/", w.pulls.path().display());
    let c = &w.alice;

    for v in w.vectors() {
        let v = v.as_str();
        let cases: Vec<(&str, Vec<&str>)> = vec![
            ("push", vec!["push", "-q", "--force", &payload, v]),
            ("pull", vec!["pull", "-q", "--force", v, &pulls]),
            ("ls", vec!["ls", "-l", v]),
            ("ls --json", vec!["ls", "--json", v]),
            ("rm -r", vec!["rm", "-r", v]),
            ("rm --partial", vec!["rm", "--partial", v]),
            ("mkdir -p", vec!["mkdir", "-p", v]),
            ("mv from", vec!["mv", "--force", v, "moved.txt"]),
            ("mv to", vec!["mv", "--force", "inside.txt", v]),
        ];
        for (what, args) in cases {
            let out = c.xfer(&args, "");
            w.assert_refused(&format!("{what} {v:?}"), &out);
        }
        w.assert_canaries();
    }
    for v in w.read_vectors() {
        let v = v.as_str();
        for (what, args) in [
            ("pull", vec!["pull", "-q", "--force", v, &pulls]),
            ("pull -r", vec!["pull", "-q", "-r", v, &pulls]),
            ("ls", vec!["ls", "-l", v]),
        ] {
            let out = c.xfer(&args, "");
            w.assert_refused(&format!("{what} {v:?}"), &out);
        }
        w.assert_canaries();
    }
    assert_eq!(
        w.snapshot(),
        before,
        "no file appeared outside alice's home"
    );
    assert!(!w.d.files_dir("alice").join("moved.txt").exists());
    // The daemon is fine and alice's own files still work.
    assert!(w.alice.ls_entry(&[], "inside.txt").is_some());
}

#[test]
fn a_user_can_neither_list_nor_read_another_users_files() {
    let w = World::new();
    let listed = w.alice.ls_json(&[]);
    assert!(
        listed.iter().all(|e| e["name"] != "secret.txt"),
        "{listed:?}"
    );
    let pulls = format!("{}/", w.pulls.path().display());
    for path in [
        "secret.txt",
        "bob/secret.txt",
        "bob/files/secret.txt",
        "users/bob/files/secret.txt",
    ] {
        let out = w.alice.xfer(&["pull", "-q", path, &pulls], "");
        w.assert_refused(&format!("pull {path}"), &out);
        let out = w.alice.xfer(&["ls", path], "");
        w.assert_refused(&format!("ls {path}"), &out);
    }
    for path in ["bob", "../bob", "../bob/files", "users"] {
        let out = w.alice.xfer(&["ls", "--json", path], "");
        w.assert_refused(&format!("ls {path}"), &out);
    }
    // Alice's actions did not touch bob's space, and bob sees only his own.
    let bobs = w.bob.ls_json(&[]);
    let names: Vec<_> = bobs.iter().map(|e| e["name"].clone()).collect();
    assert_eq!(names, vec![serde_json::json!("secret.txt")], "{bobs:?}");
    w.assert_canaries();
}

async fn login(w: &World) -> RawConn {
    w.d.raw_login("alice").await
}

/// Every request kind that takes a path, with `p` in each path position.
fn path_requests(p: &str) -> Vec<Request> {
    vec![
        Request::List {
            path: p.into(),
            after: None,
        },
        Request::Mkdir {
            path: p.into(),
            parents: true,
        },
        Request::Remove {
            path: p.into(),
            recursive: true,
            partial: false,
        },
        Request::Remove {
            path: p.into(),
            recursive: false,
            partial: true,
        },
        Request::Rename {
            from: p.into(),
            to: "moved.txt".into(),
            force: true,
        },
        Request::Rename {
            from: "inside.txt".into(),
            to: p.into(),
            force: true,
        },
        Request::PutBegin {
            path: p.into(),
            size: 8,
            force: true,
            head: b"payload\n".to_vec().into(),
        },
        Request::GetBegin { path: p.into() },
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_itself_refuses_every_escaping_path_including_nul() {
    // The client validates paths too; a raw peer shows the server does not rely on it.
    let w = tokio::task::block_in_place(World::new);
    let before = w.snapshot();
    let mut conn = login(&w).await;
    let mut vectors = w.vectors();
    vectors.extend([
        "a\0b".to_owned(),
        "\0".to_owned(),
        "inside.txt\0.png".to_owned(),
        "/".to_owned(),
    ]);
    let mut requests: Vec<Request> = vectors.iter().flat_map(|v| path_requests(v)).collect();
    // Bare symlink names exist inside the home (mkdir may say Conflict, rm may remove
    // the link itself); reading through them must be refused.
    for v in w.read_vectors() {
        requests.push(Request::List {
            path: v.clone(),
            after: None,
        });
        requests.push(Request::GetBegin { path: v });
    }
    for req in requests {
        let shown = format!("{req:?}");
        match conn.request(req).await {
            Some(Response::Error { code, message }) => {
                assert!(
                    matches!(
                        code,
                        ErrorCode::InvalidPath
                            | ErrorCode::NotFound
                            | ErrorCode::PermissionDenied
                            | ErrorCode::TooLarge
                    ),
                    "{shown}: refused with {code:?} ({message})"
                );
                for secret in [CANARY, OUTSIDE_CANARY, BOB_SECRET] {
                    assert!(!message.contains(secret), "{shown} leaked: {message}");
                }
            }
            other => panic!("{shown}: not refused: {other:?}"),
        }
    }
    tokio::task::block_in_place(|| {
        w.assert_canaries();
        assert_eq!(
            w.snapshot(),
            before,
            "no file appeared outside alice's home"
        );
    });
}

/// A message frame whose postcard body is written by hand: `variant`, then `fields`.
fn raw_message(variant: u8, fields: &[&[u8]]) -> Vec<u8> {
    let mut body = vec![0x01, variant];
    for f in fields {
        body.extend_from_slice(f);
    }
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend(body);
    frame
}

/// A postcard string field with arbitrary (possibly invalid UTF-8) bytes.
fn raw_str(bytes: &[u8]) -> Vec<u8> {
    assert!(bytes.len() < 128, "one-byte varint length");
    let mut v = vec![bytes.len() as u8];
    v.extend_from_slice(bytes);
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_utf8_paths_are_refused_and_the_daemon_keeps_serving() {
    let w = tokio::task::block_in_place(World::new);
    let before = w.snapshot();
    let bad: &[&[u8]] = &[b"a\xffb", b"\xc0\xaf", b"..\xc0\xafcanary", b"\xed\xa0\x80"];
    for path in bad {
        let p = raw_str(path);
        let ok = raw_str(b"inside.txt");
        let frames = [
            raw_message(5, &[&p]),                                     // List
            raw_message(6, &[&p, &[1]]),                               // Mkdir parents
            raw_message(7, &[&p, &[1], &[0]]),                         // Remove -r
            raw_message(8, &[&p, &ok, &[1]]),                          // Rename from
            raw_message(8, &[&ok, &p, &[1]]),                          // Rename to
            raw_message(9, &[&p, &[8], &[1], &raw_str(b"payload\n")]), // PutBegin
            raw_message(12, &[&p]),                                    // GetBegin
        ];
        for frame in frames {
            let mut conn = login(&w).await;
            let stream = conn.framed.get_mut();
            stream.write_all(&frame).await.unwrap();
            stream.flush().await.unwrap();
            match conn.next().await {
                Some(Response::Error {
                    code: ErrorCode::BadRequest | ErrorCode::InvalidPath,
                    ..
                })
                | None => {}
                other => panic!("{path:?} in {frame:?}: not refused: {other:?}"),
            }
        }
    }
    tokio::task::block_in_place(|| {
        w.assert_canaries();
        assert_eq!(w.snapshot(), before);
        assert!(
            w.alice.ls_entry(&[], "inside.txt").is_some(),
            "still serving"
        );
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_symlink_swapped_in_during_an_upload_is_not_followed_at_commit() {
    let w = tokio::task::block_in_place(World::new);
    let mut conn = login(&w).await;
    let r = conn
        .request(Request::Mkdir {
            path: "sub".into(),
            parents: false,
        })
        .await;
    assert_eq!(r, Some(Response::Ok));
    let data = b"swapped!".to_vec();
    let r = conn
        .request(Request::PutBegin {
            path: "sub/f.txt".into(),
            size: data.len() as u64,
            force: false,
            head: data.clone().into(),
        })
        .await;
    let Some(Response::PutReady { transfer_id, .. }) = r else {
        panic!("upload not admitted: {r:?}");
    };
    conn.framed
        .send(Frame::Chunk(Chunk::raw(
            transfer_id,
            0,
            Digest::of(&data),
            data.clone().into(),
        )))
        .await
        .unwrap();
    let ack = conn.next().await;
    assert!(matches!(ack, Some(Response::ChunkAck { .. })), "{ack:?}");

    // Swap the directory for a symlink pointing out, then commit.
    let files = w.d.files_dir("alice");
    std::fs::rename(files.join("sub"), files.join("sub-real")).unwrap();
    symlink(w.outside.path(), files.join("sub")).unwrap();
    let r = conn
        .request(Request::PutCommit {
            transfer_id,
            digest: Digest::of(&data),
        })
        .await;
    let escaped = w.outside.path().join("f.txt");
    assert!(
        !escaped.exists(),
        "the commit followed the swapped-in symlink ({r:?})"
    );
    match r {
        Some(Response::Error { .. }) => {}
        Some(Response::Committed { .. }) => {
            // Acceptable only if it landed inside the home (the directory it opened).
            assert!(
                files.join("sub-real/f.txt").exists(),
                "committed, but where? {:?}",
                std::fs::read_dir(&files).unwrap().collect::<Vec<_>>()
            );
        }
        other => panic!("unexpected answer to the commit: {other:?}"),
    }
    tokio::task::block_in_place(|| w.assert_canaries());
}

/// Audit defect 8: a path of valid names that the kernel refuses as too long (4,096
/// bytes; Linux's limit counts the NUL) passed validation, and `ls`, `rm`, `mkdir`,
/// `push` answered "internal error" with an ERROR line in the log — a peer could write
/// ERROR lines at will. It is the peer's error: `InvalidPath` (exit 10), logged quietly.
#[tokio::test(flavor = "multi_thread")]
async fn a_path_too_long_for_the_filesystem_is_an_invalid_path_not_an_internal_error() {
    let w = tokio::task::block_in_place(World::new);
    let over = vec!["d".repeat(240); 17].join("/");
    assert_eq!(over.len(), 4096);
    tokio::task::block_in_place(|| {
        let payload = w.local.path().join("payload.txt").display().to_string();
        let over = over.as_str();
        for (what, args) in [
            ("ls", vec!["ls", "-l", over]),
            ("rm", vec!["rm", "-r", over]),
            ("mkdir", vec!["mkdir", "-p", over]),
            ("push", vec!["push", "-q", "--force", &payload, over]),
            ("mv", vec!["mv", "--force", "inside.txt", over]),
        ] {
            let out = w.alice.xfer(&args, "");
            assert_eq!(out.code(), 10, "{what}: {}", out.stderr());
            assert!(
                out.stderr().contains("path refused"),
                "{what}: {}",
                out.stderr()
            );
        }
    });
    let mut conn = login(&w).await;
    for req in path_requests(&over) {
        let shown = format!("{req:?}");
        let r = conn.request(req).await;
        assert!(
            matches!(
                r,
                Some(Response::Error {
                    code: ErrorCode::InvalidPath,
                    ..
                })
            ),
            "{}…: {r:?}",
            &shown[..40]
        );
    }
    tokio::task::block_in_place(|| {
        // The longest path accepted (16 names of 255 bytes: 4,095) works end to end.
        let max = vec!["m".repeat(255); 16].join("/");
        let payload = w.local.path().join("payload.txt").display().to_string();
        let out = w.alice.xfer(&["push", "-q", &payload, &max], "");
        assert_eq!(out.code(), 0, "push to 4,095 bytes: {}", out.stderr());
        let listed = w.alice.ls_json(&[&max]);
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0]["size"], 8, "{listed:?}");
        let out = w.alice.xfer(&["rm", &max], "");
        assert_eq!(out.code(), 0, "rm at 4,095 bytes: {}", out.stderr());
        w.assert_canaries();
        let log = w.d.log();
        let errors: Vec<_> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
        assert!(errors.is_empty(), "ERROR lines a peer caused: {errors:#?}");
    });
}

/// Every file and directory beneath `dir` whose mode is not 0600 (files) or 0700
/// (directories), with the mode; and the names seen.
fn not_private(dir: &std::path::Path) -> (Vec<String>, Vec<String>) {
    use std::os::unix::fs::PermissionsExt;
    let (mut wrong, mut seen) = (Vec::new(), Vec::new());
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            let mode = meta.permissions().mode() & 0o777;
            let shown = e.path().strip_prefix(dir).unwrap().display().to_string();
            let want = if meta.is_dir() { 0o700 } else { 0o600 };
            if meta.is_dir() {
                stack.push(e.path());
            }
            if mode != want {
                wrong.push(format!("{shown}: {mode:o}"));
            }
            seen.push(shown);
        }
    }
    (wrong, seen)
}

/// Audit defect 14 (modes): `.meta` and manifest files were created as the umask
/// allowed (0644) while everything else is 0600. Under a permissive umask (022), every
/// file the daemon writes for a user is 0600 and every directory 0700: committed files,
/// partial data and state, manifests, and directories made by `mkdir` and by uploads.
#[tokio::test(flavor = "multi_thread")]
async fn a_users_files_and_upload_state_are_private_whatever_the_umask() {
    let tmp = TempDir::new().unwrap();
    let data = tmp.path().join("data");
    xfer_e2e::add_user(&data, "alice", PASSWORD);
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", "umask 022 && exec \"$0\" \"$@\""])
        .arg(xfer_e2e::bin("xferd"))
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", "127.0.0.1:0"])
        .env("XFERD_CONFIG", "/dev/null")
        .env_remove("RUNTIME_DIRECTORY");
    let d = Daemon::spawn(cmd, &data).expect("xferd starts");
    tokio::task::block_in_place(|| {
        let alice = xfer_e2e::alice(&d);
        let local = TempDir::new().unwrap();
        let f = xfer_e2e::write_file(
            local.path(),
            "f.bin",
            &xfer_e2e::random_bytes(xfer_e2e::CHUNK + 5, 1),
        );
        for args in [
            vec!["mkdir", "-p", "made/by/mkdir"],
            vec!["push", "-q", &f, "made/by/push/"],
        ] {
            let out = alice.xfer(&args, "");
            assert_eq!(out.code(), 0, "{args:?}: {}", out.stderr());
        }
    });
    // An interrupted push: admitted (data and state saved), then the peer goes away.
    let mut conn = d.raw_login("alice").await;
    let r = conn
        .request(Request::PutBegin {
            path: "half/way/done.bin".into(),
            size: 3 * xfer_e2e::CHUNK as u64,
            force: false,
            head: b"data".to_vec().into(),
        })
        .await;
    assert!(matches!(r, Some(Response::PutReady { .. })), "{r:?}");
    drop(conn);
    tokio::task::block_in_place(|| {
        let user = data.join("users/alice");
        let (wrong, seen) = not_private(&user);
        for expected in [
            "files/made/by/mkdir",
            "files/made/by/push/f.bin",
            "files/half/way",
            "manifests",
        ] {
            assert!(seen.iter().any(|s| s == expected), "{expected} in {seen:?}");
        }
        for ext in [".part", ".meta"] {
            assert!(
                seen.iter()
                    .any(|s| s.starts_with("partials/") && s.ends_with(ext)),
                "a partial's {ext} in {seen:?}"
            );
        }
        assert!(
            seen.iter()
                .any(|s| s.starts_with("manifests/") && s.ends_with(".json")),
            "a manifest in {seen:?}"
        );
        assert!(wrong.is_empty(), "not 0600/0700: {wrong:#?}");
    });
}
