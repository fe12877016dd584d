//! The client as people expect it: exit codes that match README's table, usage lines
//! that say what is required, errors that say their cause once and in plain words.

use std::io::Write as _;
use std::net::TcpListener;

use tempfile::TempDir;
use xfer_e2e::{CHUNK, Client, Daemon, PASSWORD, alice, random_bytes, write_file};

#[test]
fn a_missing_local_file_exits_5_for_push_send_and_push_r() {
    let d = Daemon::start();
    let c = alice(&d);
    let tmp = TempDir::new().unwrap();
    let missing = tmp.path().join("nope.bin").display().to_string();
    for args in [
        vec!["push", missing.as_str()],
        vec!["push", "-r", missing.as_str(), "dir/"],
        vec!["send", "alice", missing.as_str()],
    ] {
        let out = c.xfer(&args, "");
        assert_eq!(out.code(), 5, "{args:?}: {}", out.stderr());
        let err = out.stderr();
        assert!(err.contains("nope.bin"), "{args:?}: {err}");
        assert!(!err.contains("os error"), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    }
}

#[test]
fn pull_of_a_directory_without_r_is_a_usage_error_with_a_hint() {
    let d = Daemon::start();
    let c = alice(&d);
    assert_eq!(c.xfer(&["mkdir", "docs"], "").code(), 0);
    let tmp = TempDir::new().unwrap();
    let out = c.xfer(&["pull", "docs", &tmp.path().display().to_string()], "");
    assert_eq!(out.code(), 2, "{}", out.stderr());
    assert!(out.stderr().contains("use -r"), "{}", out.stderr());
    // The same for push: they agree.
    let dir = tmp.path().join("local-dir");
    std::fs::create_dir(&dir).unwrap();
    let out = c.xfer(&["push", &dir.display().to_string()], "");
    assert_eq!(out.code(), 2, "{}", out.stderr());
    assert!(out.stderr().contains("use -r"), "{}", out.stderr());
}

#[test]
fn usage_lines_do_not_claim_an_env_backed_flag_is_required() {
    let c = Client::new();
    // The harness sets XFER_HOME for every run, as a user with it exported would.
    let out = c.xfer(&["rm"], "");
    assert_eq!(out.code(), 2, "{}", out.stderr());
    assert!(!out.stderr().contains("--home <DIR>"), "{}", out.stderr());
    let out = c.xfer(&["push", "--help"], "");
    let usage = out
        .stdout()
        .lines()
        .find(|l| l.starts_with("Usage:"))
        .unwrap_or_default()
        .to_string();
    assert_eq!(usage.matches("...").count(), 1, "{usage}");
    let out = c.xfer(&["ls", "--help"], "");
    assert!(
        !out.stdout().contains("[default: \"\"]"),
        "{}",
        out.stdout()
    );
}

/// `xfer login alice@ADDR` against a plain TCP server that treats each connection with
/// `serve`; the client's stderr, after asserting the network exit code (8).
fn login_against(serve: fn(std::net::TcpStream)) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || listener.incoming().flatten().for_each(serve));
    let c = Client::new();
    let out = c.xfer(
        &[
            "login",
            &format!("alice@{addr}"),
            "--accept-new",
            "--password-stdin",
        ],
        "x\n",
    );
    assert_eq!(out.code(), 8, "{}", out.stderr());
    out.stderr()
}

#[test]
fn a_port_that_does_not_speak_tls_is_named_plainly() {
    // Answers garbage, as an HTTP server would.
    let err = login_against(|mut s| {
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
    });
    assert!(err.contains("does not speak TLS"), "{err}");
    assert!(!err.contains("InvalidContentType"), "{err}");
}

#[test]
fn a_peer_that_closes_at_once_is_reported_without_a_docs_url() {
    let err = login_against(drop);
    assert!(!err.contains("https://"), "{err}");
    assert!(err.contains("closed the connection"), "{err}");
}

#[test]
fn a_send_to_an_unknown_user_says_its_cause_once() {
    let d = Daemon::start();
    let c = alice(&d);
    let tmp = TempDir::new().unwrap();
    let f = write_file(tmp.path(), "f.txt", &random_bytes(CHUNK / 4, 3));
    let out = c.xfer(&["send", "carol", &f], "");
    assert_eq!(out.code(), 5, "{}", out.stderr());
    let err = out.stderr();
    assert_eq!(err.matches("carol").count(), 1, "{err}");
}

#[test]
fn login_without_a_user_takes_the_local_account_name_as_ssh_does() {
    let d = Daemon::start();
    let c = Client::new();
    let out = c.xfer_env(
        &[
            "login",
            &d.host_port(),
            "--password-stdin",
            "--fingerprint",
            &d.fingerprint,
        ],
        &[("USER", "alice")],
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert!(
        out.stdout().contains("Logged in as alice"),
        "{}",
        out.stdout()
    );
}

/// The last line of stdout, where a multi-file run puts its summary.
fn last_line(out: &xfer_e2e::Out) -> String {
    out.stdout().lines().last().unwrap_or_default().to_string()
}

#[test]
fn a_run_of_several_files_ends_with_one_summary_line() {
    let d = Daemon::start();
    let c = alice(&d);
    let tmp = TempDir::new().unwrap();
    let tree = tmp.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    write_file(&tree, "a.bin", &random_bytes(CHUNK + 7, 1));
    write_file(&tree, "b.txt", b"bee");
    write_file(&tree.join("sub"), "c.txt", b"sea");
    let tree = tree.display().to_string();

    let out = c.xfer(&["push", "-r", &tree], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    let summary = last_line(&out);
    assert!(
        summary.starts_with(
            "3 files: 3 transferred, 0 up to date, 0 conflicts, 0 failed; 1.0 MiB in "
        ),
        "{}",
        out.stdout()
    );

    // One file changed: the others are up to date, the changed one a conflict.
    write_file(&tmp.path().join("tree"), "b.txt", b"bumblebee");
    let out = c.xfer(&["push", "-r", &tree], "");
    assert_eq!(out.code(), 6, "{}", out.stderr());
    assert!(
        last_line(&out)
            .starts_with("3 files: 0 transferred, 2 up to date, 1 conflicts, 0 failed; 0 B in "),
        "{}",
        out.stdout()
    );

    let dest = tmp.path().join("back");
    let out = c.xfer(&["pull", "-r", "tree", &dest.display().to_string()], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert!(
        last_line(&out)
            .starts_with("3 files: 3 transferred, 0 up to date, 0 conflicts, 0 failed; "),
        "{}",
        out.stdout()
    );

    // One file alone: its result line says it all, no summary.
    let out = c.xfer(
        &["push", "--force", &format!("{tree}/b.txt"), "tree/b.txt"],
        "",
    );
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert_eq!(out.stdout().lines().count(), 1, "{}", out.stdout());
}
