//! Accounts on disk: the password file, its mode, argon2 interoperability, user admin.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use xfer_e2e::{Client, Daemon, PASSWORD, add_user, xferd};

/// Interop tests need Python's argon2-cffi; `.ci/run` installs it and sets
/// XFER_REQUIRE_INTEROP=1 so that there a missing tool fails instead of skipping.
fn python_argon2() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import argon2"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("XFER_REQUIRE_INTEROP").is_none(),
            "python3 with argon2-cffi is required (pip install argon2-cffi)"
        );
        eprintln!("skipping: python3 -c 'import argon2' failed (pip install argon2-cffi)");
    }
    ok
}

fn python(script: &str, args: &[&str]) -> std::process::Output {
    xfer_e2e::run(Command::new("python3").arg("-c").arg(script).args(args), "")
}

#[test]
fn password_file_is_0600_and_its_hashes_are_standard_argon2id() {
    let tmp = tempfile::TempDir::new().unwrap();
    let data = tmp.path().join("data");
    add_user(&data, "alice", PASSWORD);
    let passwd = data.join("passwd");
    let mode = std::fs::metadata(&passwd).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&passwd).unwrap();
    let phc = text
        .lines()
        .find_map(|l| l.strip_prefix("alice:"))
        .expect("alice line");
    assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");

    if !python_argon2() {
        return;
    }
    // An independent implementation verifies xferd's hash…
    let verify =
        "import sys, argon2; argon2.PasswordHasher().verify(sys.argv[1], sys.argv[2]); print('ok')";
    let out = python(verify, &[phc, PASSWORD]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ok",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = python(verify, &[phc, "wrong password"]);
    assert!(!out.status.success());

    // …and xferd accepts a hash made by it.
    let make = "import sys, argon2; print(argon2.PasswordHasher(time_cost=3, memory_cost=65536, parallelism=4).hash(sys.argv[1]))";
    let out = python(make, &["bob's own password"]);
    let bob = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(bob.starts_with("$argon2id$"), "{bob}");
    std::fs::write(&passwd, format!("{text}bob:{bob}\n")).unwrap();
    let d = Daemon::start_in(&data, &[]).unwrap();
    let c = Client::new();
    c.login(&d, "bob", "bob's own password");
}

#[test]
fn group_readable_password_file_or_key_stops_xferd() {
    let tmp = tempfile::TempDir::new().unwrap();
    let data = tmp.path().join("data");
    add_user(&data, "alice", PASSWORD);
    let passwd = data.join("passwd");
    std::fs::set_permissions(&passwd, std::fs::Permissions::from_mode(0o640)).unwrap();
    let log = Daemon::start_in(&data, &[])
        .err()
        .expect("must refuse to start");
    assert!(
        log.contains("passwd") && log.contains("640") && log.contains("chmod"),
        "{log}"
    );

    std::fs::set_permissions(&passwd, std::fs::Permissions::from_mode(0o600)).unwrap();
    drop(Daemon::start_in(&data, &[]).expect("starts once fixed"));
    let key = data.join("tls/key.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let log = Daemon::start_in(&data, &[])
        .err()
        .expect("must refuse to start");
    assert!(log.contains("key.pem") && log.contains("644"), "{log}");
}

#[test]
fn a_malformed_password_file_line_is_named() {
    let tmp = tempfile::TempDir::new().unwrap();
    let data = tmp.path().join("data");
    add_user(&data, "alice", PASSWORD);
    let passwd = data.join("passwd");
    let mut text = std::fs::read_to_string(&passwd).unwrap();
    text.push_str("bob-without-a-hash\n");
    std::fs::write(&passwd, text).unwrap();
    let log = Daemon::start_in(&data, &[])
        .err()
        .expect("must refuse to start");
    let n = std::fs::read_to_string(&passwd).unwrap().lines().count();
    assert!(
        log.contains(&format!("passwd:{n}")),
        "names file:line {n}: {log}"
    );
}

#[test]
fn user_admin_commands_and_their_effect_on_sessions() {
    let d = Daemon::start();
    add_user(&d.data_dir, "bob", "bobs password");
    let list = xferd(&d.data_dir, &["user", "list"], "");
    assert_eq!(String::from_utf8_lossy(&list.stdout), "alice\nbob\n");

    let dup = xferd(
        &d.data_dir,
        &["user", "add", "bob", "--password-stdin"],
        "another one\n",
    );
    assert!(!dup.status.success());
    let short = xferd(
        &d.data_dir,
        &["user", "add", "carol", "--password-stdin"],
        "short\n",
    );
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 8"));
    let bad = xferd(
        &d.data_dir,
        &["user", "add", "../evil", "--password-stdin"],
        "long enough pw\n",
    );
    assert!(!bad.status.success());

    // The running daemon sees new users and password changes without a restart.
    let c = Client::new();
    c.login(&d, "bob", "bobs password");
    let out = xferd(
        &d.data_dir,
        &["user", "passwd", "bob", "--password-stdin"],
        "a new password\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        c.xfer(&["whoami"], "").code(),
        3,
        "a password change ends sessions"
    );
    c.login(&d, "bob", "a new password");

    let out = xferd(&d.data_dir, &["user", "del", "bob"], "");
    assert!(out.status.success());
    assert_eq!(
        c.xfer(&["whoami"], "").code(),
        3,
        "deleting a user ends sessions"
    );
    let list = xferd(&d.data_dir, &["user", "list"], "");
    assert_eq!(String::from_utf8_lossy(&list.stdout), "alice\n");
}

/// `user del bob` then `user add bob` (audit item 14): the new bob starts with an empty
/// home and no direct messages; the old bob's are archived (0700), reported, not deleted.
#[test]
fn a_deleted_users_home_and_direct_logs_are_archived_not_inherited() {
    let d = Daemon::start_with(&["alice", "bob"], None);
    let a = xfer_e2e::alice(&d);
    let old_bob = Client::new();
    old_bob.login(&d, "bob", PASSWORD);
    let local = tempfile::TempDir::new().unwrap();
    let p = xfer_e2e::write_file(local.path(), "old-bob.txt", b"old bob's file\n");
    assert_eq!(old_bob.xfer(&["push", "-q", &p], "").code(), 0);
    let out = a.xfer(&["chat", "@bob", "--say", "for the old bob only"], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());

    let out = xferd(&d.data_dir, &["user", "del", "bob"], "");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("archived bob's home and 1 direct-message log to "),
        "{said}"
    );
    let archive = d.data_dir.join("archive");
    let dirs: Vec<_> = std::fs::read_dir(&archive)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let dir = &dirs[0];
    let name = dir.file_name().unwrap().to_str().unwrap();
    assert!(
        name.starts_with("bob-") && name[4..].parse::<u64>().is_ok(),
        "{name}"
    );
    assert!(said.contains(&dir.display().to_string()), "{said}");
    for d in [&archive, dir] {
        assert_eq!(
            std::fs::metadata(d).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
    assert_eq!(
        std::fs::read(dir.join("home/files/old-bob.txt")).unwrap(),
        b"old bob's file\n"
    );
    let log = std::fs::read_to_string(dir.join("direct/alice+bob.log")).unwrap();
    assert!(log.contains("for the old bob only"), "{log}");

    // The new bob, while the same daemon runs: nothing of the old one.
    add_user(&d.data_dir, "bob", "new bobs password");
    let new_bob = Client::new();
    new_bob.login(&d, "bob", "new bobs password");
    let ls = new_bob.xfer(&["ls"], "");
    assert_eq!(ls.code(), 0, "{}", ls.stderr());
    assert_eq!(ls.stdout(), "", "the new bob sees the old bob's files");
    let h = new_bob.xfer(&["chat", "@alice", "--history", "10"], "");
    assert_eq!(h.code(), 0, "{}", h.stderr());
    assert!(!h.stdout().contains("old bob"), "{}", h.stdout());
    // Direct messages work again, from now on.
    let out = a.xfer(&["chat", "@bob", "--say", "hello new bob"], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    let h = new_bob.xfer(&["chat", "@alice", "--history", "10"], "");
    assert!(h.stdout().contains("hello new bob"), "{}", h.stdout());
    assert!(!h.stdout().contains("old bob"), "{}", h.stdout());
}

/// `xferd user add` at a terminal asks again after a too-short or mismatched password,
/// as passwd(1) does, and gives up after three rounds without changing anything.
#[test]
fn user_add_at_a_terminal_asks_again_then_gives_up_after_three_tries() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let add = |name: &str| {
        let mut cmd = xfer_e2e::xferd_command();
        cmd.arg("--data-dir")
            .arg(&data)
            .args(["user", "add", name, "--create"]);
        xfer_e2e::pty::Pty::spawn(cmd)
    };

    let mut term = add("bob");
    term.expect("New password: ");
    term.send("short\r");
    term.expect("password too short: use at least 8 characters; try again");
    term.expect("New password: ");
    term.send("long enough 1\r");
    term.expect("Repeat password: ");
    term.send("long enough 2\r");
    term.expect("the passwords do not match; try again");
    term.expect("New password: ");
    term.send("long enough 3\r");
    term.expect("Repeat password: ");
    term.send("long enough 3\r");
    assert!(term.wait().success(), "{}", term.output());
    let listed = xferd(&data, &["user", "list"], "");
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "bob");

    let mut term = add("carol");
    for _ in 0..3 {
        term.expect("New password: ");
        term.send("short\r");
    }
    term.expect("3 tries, nothing was changed");
    assert_eq!(term.wait().code(), Some(1), "{}", term.output());
    let listed = xferd(&data, &["user", "list"], "");
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "bob");

    // A taken name is refused before any password is asked for.
    let mut term = add("bob");
    term.expect("user `bob` already exists");
    assert_eq!(term.wait().code(), Some(1), "{}", term.output());
    assert!(!term.output().contains("New password"), "{}", term.output());
}
