//! Operating a running daemon: reload (SIGHUP and `xferd reload`), systemd
//! notifications, and the control socket (`xferd status`, `kick`, `user del`).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use xfer_e2e::{
    CHUNK, Client, DEADLINE, Daemon, PASSWORD, Running, poll, random_bytes, write_file,
};

/// How long the test waits for a kick to reach the client. The daemon ends the
/// connection at once (a cancellation, no polling), well within the second;
/// the test allows for a loaded machine and prints what it saw instead of timing it.
const KICK_DEADLINE: Duration = DEADLINE;

fn logged_in(d: &Daemon, user: &str) -> Client {
    let c = Client::new();
    c.login(d, user, PASSWORD);
    c
}

/// Pushes `len` bytes as `name`; the finished command.
fn push(c: &Client, dir: &Path, name: &str, len: usize) -> xfer_e2e::Out {
    let path = write_file(dir, name, &random_bytes(len, len as u64));
    c.xfer(&["push", "-q", &path], "")
}

/// Rewrites the config file and sends SIGHUP, then waits for the outcome in the log.
fn reload_with(d: &Daemon, toml: &str, outcome: &str) {
    let before = d.log().matches(outcome).count();
    std::fs::write(d.config_file(), toml).unwrap();
    d.signal("HUP");
    assert!(
        d.wait_for_log_count(outcome, before),
        "no {outcome:?} after SIGHUP: {}",
        d.log()
    );
}

#[test]
fn sighup_lowers_a_quota_live_and_a_broken_config_keeps_the_old_one() {
    let d = Daemon::start_with(&["alice"], Some("[storage]\nquota_bytes = 0\n"));
    let c = logged_in(&d, "alice");
    let local = TempDir::new().unwrap();
    let first = push(&c, local.path(), "a.bin", 100_000);
    assert_eq!(first.code(), 0, "{}", first.stderr());

    reload_with(&d, "[storage]\nquota_bytes = 150000\n", "reloaded ");
    let over = push(&c, local.path(), "b.bin", 100_000);
    assert_ne!(over.code(), 0, "the lowered quota did not bite");
    assert!(over.stderr().contains("quota"), "{}", over.stderr());

    // A typo: the daemon names it in one line and keeps the 150 kB quota.
    reload_with(
        &d,
        "[storage]\nquota_bytes = 0\nquota_byte = 1\n",
        "reload failed",
    );
    let line = d
        .log()
        .lines()
        .find(|l| l.contains("reload failed"))
        .map(str::to_owned)
        .unwrap();
    assert!(
        line.contains("the running configuration stays") && line.contains("quota_byte"),
        "{line}"
    );
    let still = push(&c, local.path(), "b.bin", 100_000);
    assert!(still.stderr().contains("quota"), "{}", still.stderr());

    // `xferd reload` reports a failure the daemon finds (a missing certificate) and
    // exits non-zero; the old configuration still applies.
    std::fs::write(
        d.config_file(),
        "[tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n",
    )
    .unwrap();
    let out = d.admin(&["reload"]);
    assert_ne!(out.code(), 0, "{}", out.stdout());
    assert!(
        out.stderr().contains("/nonexistent/cert.pem")
            && out.stderr().contains("the running configuration stays"),
        "{}",
        out.stderr()
    );
    let still = push(&c, local.path(), "b.bin", 100_000);
    assert!(still.stderr().contains("quota"), "{}", still.stderr());

    // And a good one over the socket lifts it.
    std::fs::write(d.config_file(), "[storage]\nquota_bytes = 0\n").unwrap();
    let out = d.admin(&["reload"]);
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert!(out.stdout().starts_with("reloaded "), "{}", out.stdout());
    let fits = push(&c, local.path(), "b.bin", 100_000);
    assert_eq!(fits.code(), 0, "{}", fits.stderr());
}

#[test]
fn sighup_serves_a_new_certificate_and_open_chat_stays_connected() {
    let d = Daemon::start_with(&["alice", "bob"], Some(""));
    let bob = logged_in(&d, "bob");
    let watching = bob.follow(&["#lab"]);

    let certs = TempDir::new().unwrap();
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let new_fp = xfer_certs::generate::ensure_identity(&cert, &key, &["127.0.0.1".into()])
        .unwrap()
        .expect("a new identity")
        .to_string();
    assert_ne!(new_fp, d.fingerprint);
    let toml = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    );
    reload_with(&d, &toml, "new connections get certificate");

    // A new client pinned to the new certificate gets in; one pinned to the old does not.
    let alice = Client::new();
    let target = format!("alice@{}", d.host_port());
    let login = |fp: &str| {
        alice.xfer(
            &["login", &target, "--password-stdin", "--fingerprint", fp],
            &format!("{PASSWORD}\n"),
        )
    };
    assert_ne!(
        login(&d.fingerprint).code(),
        0,
        "the old certificate is still served"
    );
    let ok = login(&new_fp);
    assert_eq!(ok.code(), 0, "{}", ok.stderr());

    // bob's connection, opened before the reload, still carries messages.
    let out = alice.xfer(&["chat", "#lab", "--say", "after the reload"], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert!(
        watching
            .wait_stdout(DEADLINE, |s| s.contains("after the reload"))
            .is_some(),
        "bob missed the message: {}",
        watching.stderr_so_far()
    );
    assert!(
        !watching.stderr_so_far().contains("connection lost"),
        "{}",
        watching.stderr_so_far()
    );
}

/// Reads the next READY, RELOADING or STOPPING notification (skipping others, such as
/// STATUS), failing after [`DEADLINE`].
fn next_notification(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    loop {
        let n = sock
            .recv(&mut buf)
            .expect("a notification before the deadline");
        let text = String::from_utf8_lossy(&buf[..n]).trim_end().to_owned();
        if ["READY=", "RELOADING=", "STOPPING="]
            .iter()
            .any(|k| text.lines().any(|l| l.starts_with(k)))
        {
            return text;
        }
    }
}

#[test]
fn notify_socket_sees_ready_reloading_ready_stopping_in_order() {
    let tmp = TempDir::new().unwrap();
    let notify_path = tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&notify_path).unwrap();
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    let data = tmp.path().join("data");
    let mut d = Daemon::start_with_env(
        &data,
        "127.0.0.1:0",
        &[],
        &[("NOTIFY_SOCKET", notify_path.as_path())],
    )
    .expect("xferd starts");

    assert_eq!(next_notification(&sock), "READY=1");
    d.signal("HUP");
    let reloading = next_notification(&sock);
    let mut lines = reloading.lines();
    assert_eq!(lines.next(), Some("RELOADING=1"), "{reloading}");
    let usec = lines
        .next()
        .and_then(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(usec.is_some_and(|u| u > 0), "{reloading}");
    assert_eq!(next_notification(&sock), "READY=1");
    assert_eq!(d.signal_and_wait("TERM"), Some(0));
    assert_eq!(next_notification(&sock), "STOPPING=1");
}

#[test]
fn status_lists_a_running_push_with_its_progress() {
    let d = Daemon::start_with(&["alice"], None);
    let c = logged_in(&d, "alice");
    let local = TempDir::new().unwrap();
    let size = 16 * CHUNK;
    let path = write_file(local.path(), "big.bin", &random_bytes(size, 3));
    let mut pushing = c.spawn(&["push", "-q", "--limit-rate", "2M", &path]);

    let in_flight = poll(DEADLINE, || {
        let out = d.admin(&["status", "--json"]);
        assert_eq!(out.code(), 0, "{}", out.stderr());
        let status: serde_json::Value = serde_json::from_str(&out.stdout()).unwrap();
        status["connections"]
            .as_array()?
            .iter()
            .filter(|c| c["user"] == "alice")
            .flat_map(|c| c["transfers"].as_array().cloned().unwrap_or_default())
            .find(|t| {
                t["path"] == "big.bin"
                    && t["direction"] == "upload"
                    && t["done_bytes"].as_u64().is_some_and(|n| n > 0)
            })
    })
    .expect("the push never showed in `xferd status` with progress");
    assert_eq!(in_flight["total_bytes"].as_u64(), Some(size as u64));
    assert!(in_flight["done_bytes"].as_u64().unwrap() < size as u64);

    let text = d.admin(&["status"]).stdout();
    assert!(
        text.contains("alice") && text.contains("127.0.0.1:"),
        "{text}"
    );
    assert!(text.contains("upload   big.bin"), "{text}");
    assert!(!pushing.finished(), "the push ended before it was seen");
}

#[test]
fn a_kicked_upload_keeps_its_verified_chunks_and_resumes() {
    let d = Daemon::start_with(&["alice"], None);
    let c = logged_in(&d, "alice");
    let local = TempDir::new().unwrap();
    let data = random_bytes(16 * CHUNK, 5);
    let path = write_file(local.path(), "big.bin", &data);
    let pushing = c.spawn(&["push", "-q", "--limit-rate", "2M", &path]);
    // Wait until the server holds some of it.
    poll(DEADLINE, || {
        c.partial_received("big.bin").filter(|&n| n > 0)
    })
    .expect("the upload never started");
    // The look above was a connection of its own: wait until the server has seen it
    // close, so that the kick finds only the push.
    wait_for_connections(&d, "alice", 1);

    let out = d.admin(&["kick", "alice"]);
    assert!(
        out.stdout().contains("ended 1 connection of alice"),
        "{}",
        out.stdout()
    );
    let ended = pushing.wait(DEADLINE);
    assert_ne!(ended.code(), 0, "the push was not ended by the kick");
    assert!(
        ended
            .stderr()
            .contains("ended by the server's administrator"),
        "{}",
        ended.stderr()
    );

    let again = c.xfer(&["push", "-q", &path], "");
    assert_eq!(again.code(), 0, "{}", again.stderr());
    let line = d
        .audit_events("upload")
        .pop()
        .expect("an upload audit line");
    let resumed = xfer_e2e::audit_u64(&line, "resumed_from").expect("resumed_from=");
    assert!(resumed > 0, "the re-run started over: {line}");
    assert_eq!(
        std::fs::read(d.files_dir("alice").join("big.bin")).unwrap(),
        data
    );
}

/// Waits until `xferd status` shows exactly `n` connections of `user`: a client process
/// that has exited may still be registered for a moment, until the server reads its close.
fn wait_for_connections(d: &Daemon, user: &str, n: usize) {
    poll(DEADLINE, || {
        let out = d.admin(&["status", "--json"]);
        let status: serde_json::Value = serde_json::from_str(&out.stdout()).ok()?;
        let count = status["connections"]
            .as_array()?
            .iter()
            .filter(|c| c["user"] == user)
            .count();
        (count == n).then_some(())
    })
    .unwrap_or_else(|| panic!("{user} never had exactly {n} connections"));
}

/// `xferd ARGS…` must end bob's `--follow` at once, leaving alice's alone.
/// Returns the daemon and both clients with their `--follow`s, still running.
fn ends_bobs_chat(args: &[&str], expect_stdout: &str) -> (Daemon, [(Client, Running); 2]) {
    let d = Daemon::start_with(&["alice", "bob"], None);
    let (bob, alice) = (logged_in(&d, "bob"), logged_in(&d, "alice"));
    let bob_watch = bob.follow(&["#lab"]);
    let alice_watch = alice.follow(&["#lab"]);
    let status = d.admin(&["status"]).stdout();
    assert!(status.contains("  #lab: alice, bob"), "{status}");
    // Only the chats: the logins' own connections are gone.
    wait_for_connections(&d, "bob", 1);
    let out = d.admin(args);
    let kicked_at = Instant::now();
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert!(out.stdout().contains(expect_stdout), "{}", out.stdout());
    assert!(
        bob_watch.wait_stderr(KICK_DEADLINE, "ended by the server's administrator"),
        "bob's chat was not ended within {KICK_DEADLINE:?} (after {:?}): {}",
        kicked_at.elapsed(),
        bob_watch.stderr_so_far()
    );
    eprintln!(
        "bob's client reported the kick {:?} after the admin command returned",
        kicked_at.elapsed()
    );
    assert!(
        !alice_watch.stderr_so_far().contains("ended by"),
        "{}",
        alice_watch.stderr_so_far()
    );
    (d, [(bob, bob_watch), (alice, alice_watch)])
}

#[test]
fn kick_ends_a_users_chat_at_once() {
    let (d, [_, (_alice, alice_watch)]) =
        ends_bobs_chat(&["kick", "bob"], "ended 1 connection of bob");
    assert!(d.wait_for_log("connections ended by the admin"));
    assert!(!alice_watch.stderr_so_far().contains("connection lost"));
}

#[test]
fn user_del_ends_the_users_open_connections() {
    let (_d, [(_bob, bob_watch), _]) = ends_bobs_chat(
        &["user", "del", "bob"],
        "ended 1 connection of bob on the running xferd",
    );
    // The account is gone, so the client cannot come back and gives up.
    let out = bob_watch.wait(DEADLINE);
    assert_ne!(out.code(), 0, "{}", out.stderr());
}

#[test]
fn the_control_socket_is_owner_only_and_guards_against_a_second_daemon() {
    let d = Daemon::start_with(&["alice"], None);
    let socket = d.data_dir.join("control.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {:o}", mode & 0o777);

    let second = Daemon::start_in(&d.data_dir, &[]).err().expect("refused");
    assert!(
        second.contains("another xferd is running") && second.contains("control.sock"),
        "{second}"
    );
    // The first daemon still answers.
    assert_eq!(d.admin(&["status"]).code(), 0);
}

#[test]
fn control_commands_without_a_daemon_say_so() {
    let tmp = TempDir::new().unwrap();
    let out = xfer_e2e::xferd(&tmp.path().join("data"), &["status"], "");
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no xferd is running"), "{err}");
}

/// Whether strace is here to run; without it a test skips, unless CI, which installs
/// it, says it is required (XFER_REQUIRE_INTEROP).
fn have_strace() -> bool {
    if std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_ok()
    {
        return true;
    }
    assert!(
        std::env::var_os("XFER_REQUIRE_INTEROP").is_none(),
        "strace is required"
    );
    eprintln!("skipping: no strace");
    false
}

/// `xfer pull -q big.bin BACK` as `c`, under `strace STRACE...`, with `XFER_DIRECT_IO`
/// set to `direct`.
fn pull_under_strace(
    c: &Client,
    strace: &[&str],
    back: &Path,
    direct: &str,
) -> std::process::Output {
    std::process::Command::new("strace")
        .args(strace)
        .arg(xfer_e2e::bin("xfer"))
        .args(["pull", "-q", "big.bin"])
        .arg(back)
        .env("XFER_HOME", c.home())
        .env("XFER_DIRECT_IO", direct)
        .output()
        .expect("strace")
}

/// A pulled file written through the page cache (`XFER_DIRECT_IO=0`, or a filesystem
/// without direct I/O) is flushed as it arrives (crate xfer-disk), not all at the end:
/// past 64 MiB the part file gets an `fdatasync` of its own before the final `fsync`,
/// which then finds little left to write.
#[test]
fn a_big_pull_is_flushed_to_the_disk_as_it_arrives() {
    if !have_strace() {
        return;
    }
    let d = Daemon::start();
    let c = xfer_e2e::alice(&d);
    let tmp = TempDir::new().unwrap();
    let src = write_file(tmp.path(), "big.bin", &random_bytes(65 * CHUNK, 9));
    assert_eq!(c.xfer(&["push", "-q", &src], "").code(), 0);
    let back = tmp.path().join("back");
    std::fs::create_dir(&back).unwrap();
    let log = tmp.path().join("syncs");
    let log_arg = log.to_str().unwrap();
    let trace = [
        "-f",
        "-qq",
        "-y",
        "-e",
        "trace=fsync,fdatasync",
        "-o",
        log_arg,
    ];
    let out = pull_under_strace(&c, &trace, &back, "0");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read(back.join("big.bin")).unwrap(),
        std::fs::read(&src).unwrap()
    );
    // Where each call starts (strace splits a call that another thread interrupts
    // into `<unfinished ...>` and `<... resumed>` lines); none failed.
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(!log.contains("= -1"), "{log}");
    let started = |call: &str| {
        let start = format!("{call}(");
        log.lines()
            .position(|l| l.contains(&start) && l.contains(".xfer-part>"))
    };
    let flushed = started("fdatasync").unwrap_or_else(|| panic!("no flush before the end:\n{log}"));
    let synced = started("fsync").unwrap_or_else(|| panic!("no final sync:\n{log}"));
    assert!(
        flushed < synced,
        "the flush starts before the final sync:\n{log}"
    );
}

/// A flush of a pulled file that fails (`EIO`, injected by strace) fails the pull and
/// empties the part file: the data may not be on the disk although it still reads back
/// from memory, and a later run's fsync would not hear of the error. The next run
/// starts over and gets the whole file.
#[test]
fn a_failed_flush_fails_the_pull_and_the_next_run_starts_over() {
    if !have_strace() {
        return;
    }
    let d = Daemon::start();
    let c = xfer_e2e::alice(&d);
    let tmp = TempDir::new().unwrap();
    let data = random_bytes(65 * CHUNK, 13);
    let src = write_file(tmp.path(), "big.bin", &data);
    assert_eq!(c.xfer(&["push", "-q", &src], "").code(), 0);
    let back = tmp.path().join("back");
    std::fs::create_dir(&back).unwrap();
    let inject = ["-f", "-qq", "-o", "/dev/null", "-e", "trace=fdatasync"];
    let inject = [&inject[..], &["-e", "inject=fdatasync:error=EIO"]].concat();
    let out = pull_under_strace(&c, &inject, &back, "0");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the pull succeeded: {stderr}");
    assert!(stderr.contains("it was emptied: pull again"), "{stderr}");
    assert!(
        !back.join("big.bin").exists(),
        "installed after a failed flush"
    );
    let part = back.join("big.bin.xfer-part");
    assert!(
        std::fs::metadata(&part).map_or(true, |m| m.len() == 0),
        "the part file keeps data the disk may not hold"
    );
    let again = c.xfer(&["pull", "-q", "big.bin", back.to_str().unwrap()], "");
    assert_eq!(again.code(), 0);
    assert!(std::fs::read(back.join("big.bin")).unwrap() == data);
}

/// A flush of an upload's data that fails (`EIO`, injected by strace into the running
/// daemon) fails the commit and makes the daemon forget every chunk it held: the data
/// may not be on the disk although it still reads back from memory. The next push
/// sends the whole file again and it is stored whole.
#[test]
fn a_failed_flush_of_an_upload_fails_the_commit_and_the_next_push_sends_it_all() {
    use std::io::BufRead as _;
    if !have_strace() {
        return;
    }
    // Through the page cache, so the upload is flushed every 64 MiB.
    let d = Daemon::start_with(&["alice"], Some("[storage]\ndirect_io = false\n"));
    let c = xfer_e2e::alice(&d);
    let tmp = TempDir::new().unwrap();
    let data = random_bytes(65 * CHUNK, 14);
    let src = write_file(tmp.path(), "big.bin", &data);
    // Only the flushes of this upload's data file (`-P`): the daemon's other files,
    // its state among them, sync as usual.
    let partials = d.partials_dir("alice");
    std::fs::create_dir_all(&partials).unwrap();
    let part = partials
        .canonicalize()
        .unwrap()
        .join(format!("{}.part", xfer_e2e::blake3_hex(b"big.bin")));
    let mut strace = std::process::Command::new("strace")
        .args(["-f", "-o", "/dev/null", "-e", "trace=fdatasync"])
        .args(["-e", "inject=fdatasync:error=EIO", "-P"])
        .arg(&part)
        .arg("-p")
        .arg(d.pid().to_string())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("strace");
    // strace says "Process N attached" once it holds the daemon's threads.
    let mut lines = std::io::BufReader::new(strace.stderr.take().unwrap()).lines();
    assert!(
        lines.any(|l| l.is_ok_and(|l| l.contains("attached"))),
        "strace never attached"
    );
    let out = c.xfer(&["push", "-q", &src], "");
    let _ = std::process::Command::new("kill")
        .args(["-INT", &strace.id().to_string()])
        .status();
    let _ = strace.wait();
    assert_ne!(out.code(), 0, "the push succeeded");
    assert!(
        out.stderr().contains("the disk lost some"),
        "{}",
        out.stderr()
    );
    assert!(!d.files_dir("alice").join("big.bin").exists());

    let again = c.xfer(&["push", "-q", &src], "");
    assert_eq!(again.code(), 0, "{}", again.stderr());
    let stored = std::fs::read(d.files_dir("alice").join("big.bin")).unwrap();
    assert!(stored == data, "stored whole");
    let uploads = d.audit_events("upload");
    let last = uploads.last().expect("an upload event");
    assert!(
        last.contains("resumed_from=0"),
        "the second push reused chunks the daemon had forgotten: {last}"
    );
}

/// Whether xfer-disk writes a big file in `dir` past the page cache: not on tmpfs, nor
/// where the filesystem or the kernel (before 6.1) does not declare direct I/O.
fn takes_direct(dir: &Path) -> bool {
    let probe = tempfile::tempfile_in(dir).unwrap();
    probe.set_len(xfer_disk::DIRECT_MIN).unwrap();
    xfer_disk::Writer::new(&probe, xfer_disk::DIRECT_MIN, true, "probe", |_| {}).is_direct()
}

/// `O_DIRECT` in an open file description's flags (x86_64 and aarch64 differ).
#[cfg(target_arch = "x86_64")]
const O_DIRECT: u32 = 0o40000;
#[cfg(not(target_arch = "x86_64"))]
const O_DIRECT: u32 = 0o200000;

/// Looks at the daemon's descriptors of files under `dir` until `run` ends (each look
/// is an event of `poll`'s): how many looks saw one open, and how many saw one with
/// `O_DIRECT`. Asserts that `run` succeeded and that the file was seen open.
fn watch_flags_until_done(d: &Daemon, dir: &Path, mut run: Running, what: &str) -> usize {
    let (mut open_seen, mut direct_seen) = (0, 0);
    let ended = poll(4 * DEADLINE, || {
        let flags = daemon_flags_under(d, dir);
        open_seen += usize::from(!flags.is_empty());
        direct_seen += usize::from(flags.iter().any(|f| f & O_DIRECT != 0));
        run.finished().then_some(())
    });
    assert!(ended.is_some(), "{what} did not end");
    assert_eq!(run.wait(DEADLINE).code(), 0, "{what}");
    assert!(open_seen > 0, "{what}: the file was never seen open");
    direct_seen
}

/// The open flags of each descriptor the daemon holds on a file under `dir`.
fn daemon_flags_under(d: &Daemon, dir: &Path) -> Vec<u32> {
    let pid = d.pid();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    fds.flatten()
        .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t.starts_with(dir)))
        .filter_map(|fd| {
            let info = std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .ok()?;
            let flags = info.lines().find_map(|l| l.strip_prefix("flags:"))?;
            u32::from_str_radix(flags.trim(), 8).ok()
        })
        .collect()
}

/// An upload of 64 MiB and more goes to the disk past the page cache where the data
/// directory's filesystem allows it: while it runs, the daemon holds its partial open
/// with `O_DIRECT` too, and the file arrives whole (its last, shorter chunk through the
/// cache). A download of it reads past the cache the same way, and arrives whole. With
/// `direct_io = false` no descriptor of either ever has `O_DIRECT`.
#[test]
fn a_big_file_goes_past_the_page_cache_both_ways_unless_configured_not_to() {
    let data = random_bytes(65 * CHUNK + 1000, 11);
    let local = TempDir::new().unwrap();
    let src = write_file(local.path(), "big.bin", &data);
    for direct in [true, false] {
        let d = Daemon::start_with(
            &["alice"],
            Some(&format!("[storage]\ndirect_io = {direct}\n")),
        );
        let c = xfer_e2e::alice(&d);
        let partials = d.partials_dir("alice");
        std::fs::create_dir_all(&partials).unwrap();
        if !takes_direct(&partials) {
            eprintln!("skipped: the test's data directory takes no direct I/O");
            return;
        }
        let partials = partials.canonicalize().unwrap();
        let push = c.spawn(&["push", "-q", "--limit-rate", "16M", &src]);
        let what = format!("the push (direct_io = {direct})");
        let direct_seen = watch_flags_until_done(&d, &partials, push, &what);
        assert_eq!(
            direct_seen > 0,
            direct,
            "{what}: {direct_seen} looks saw O_DIRECT"
        );
        let stored = std::fs::read(d.files_dir("alice").join("big.bin")).unwrap();
        assert!(
            stored == data,
            "the file arrived whole (direct_io = {direct})"
        );

        let files = d.files_dir("alice").canonicalize().unwrap();
        let back = local.path().join(format!("back-{direct}"));
        std::fs::create_dir(&back).unwrap();
        let back_arg = back.to_str().unwrap();
        let pull = c.spawn(&["pull", "-q", "--limit-rate", "16M", "big.bin", back_arg]);
        let what = format!("the pull (direct_io = {direct})");
        let direct_seen = watch_flags_until_done(&d, &files, pull, &what);
        assert_eq!(
            direct_seen > 0,
            direct,
            "{what}: {direct_seen} looks saw O_DIRECT"
        );
        let pulled = std::fs::read(back.join("big.bin")).unwrap();
        assert!(
            pulled == data,
            "the file came back whole (direct_io = {direct})"
        );
    }
}

/// A pull of 64 MiB and more is written past the page cache where the destination's
/// filesystem allows it: every whole chunk through an `O_DIRECT` descriptor of the part
/// file, the short last one through the other; `XFER_DIRECT_IO=0` turns it off.
#[test]
fn a_big_pull_goes_past_the_page_cache_unless_told_not_to() {
    if !have_strace() {
        return;
    }
    let d = Daemon::start();
    let c = xfer_e2e::alice(&d);
    let tmp = TempDir::new().unwrap();
    if !takes_direct(tmp.path()) {
        eprintln!("skipped: the test's directory takes no direct I/O");
        return;
    }
    let src = write_file(tmp.path(), "big.bin", &random_bytes(65 * CHUNK + 1000, 12));
    assert_eq!(c.xfer(&["push", "-q", &src], "").code(), 0);
    for direct in ["1", "0"] {
        let back = tmp.path().join(format!("back{direct}"));
        std::fs::create_dir(&back).unwrap();
        // One log per thread (`-ff`), so no call is split by another thread's.
        let logs = tmp.path().join(format!("writes{direct}"));
        std::fs::create_dir(&logs).unwrap();
        let prefix = logs.join("t");
        let trace = ["-ff", "-qq", "-y", "-e", "trace=openat,pwrite64", "-o"];
        let trace = [&trace[..], &[prefix.to_str().unwrap()]].concat();
        let out = pull_under_strace(&c, &trace, &back, direct);
        assert!(out.status.success(), "{out:?}");
        assert!(
            std::fs::read(back.join("big.bin")).unwrap() == std::fs::read(&src).unwrap(),
            "the file arrived whole (XFER_DIRECT_IO={direct})"
        );
        let log: String = std::fs::read_dir(&logs)
            .unwrap()
            .flatten()
            .map(|f| std::fs::read_to_string(f.path()).unwrap())
            .collect();
        // The descriptor opened with O_DIRECT on the part file, as `N<path>`.
        let direct_fd = log
            .lines()
            .filter(|l| {
                l.contains("openat(") && l.contains("O_DIRECT") && l.contains(".xfer-part>")
            })
            .find_map(|l| l.rsplit_once(" = ").map(|(_, fd)| fd.to_owned()));
        // Writes of `len` bytes to the part file through descriptor `fd` (any: "").
        let writes_on = |fd: &str, len: usize| {
            let start = format!("pwrite64({fd}");
            log.lines()
                .filter(|l| l.starts_with(&start) && l.contains(".xfer-part>"))
                .filter(|l| l.ends_with(&format!(" = {len}")))
                .count()
        };
        match (direct, direct_fd) {
            ("1", Some(fd)) => {
                assert_eq!(writes_on(&fd, CHUNK), 65, "whole chunks through {fd}");
                assert_eq!(writes_on(&fd, 1000), 0, "the short chunk not through {fd}");
                assert_eq!(writes_on("", 1000), 1, "the short chunk through the cache");
            }
            ("0", None) => {}
            (_, fd) => panic!("XFER_DIRECT_IO={direct}: O_DIRECT descriptor {fd:?}"),
        }
    }
}

/// The `GLIBC_TUNABLES` of each program image `bin ARGS…` executes, in order (the
/// first is what it was started with), as strace sees the `execve` calls. (glibc cuts
/// the variable short in place once it has parsed it, so `/proc/PID/environ` cannot
/// tell.)
#[cfg(target_env = "gnu")]
fn tunables_executed(bin: &str, args: &[&str], given: Option<&str>) -> Vec<Option<String>> {
    let tmp = TempDir::new().unwrap();
    let log = tmp.path().join("execve");
    let mut cmd = std::process::Command::new("strace");
    cmd.args(["-f", "-qq", "-v", "-s", "4096", "-e", "trace=execve", "-o"])
        .arg(&log)
        .arg(xfer_e2e::bin(bin))
        .args(args)
        .env_remove("GLIBC_TUNABLES");
    if let Some(given) = given {
        cmd.env("GLIBC_TUNABLES", given);
    }
    let out = cmd.output().expect("strace (apt-get install strace)");
    assert!(out.status.success(), "{bin} {args:?}: {out:?}");
    std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| l.contains("execve(") && l.ends_with("= 0"))
        .map(|l| {
            // Each image is the program's own file, so the process keeps its name.
            let path = l.split('"').nth(1).unwrap_or_default();
            assert!(path.ends_with(&format!("/{bin}")), "{bin} executed {path}");
            l.split_once("\"GLIBC_TUNABLES=")
                .and_then(|(_, rest)| rest.split_once('"'))
                .map(|(value, _)| value.to_owned())
        })
        .collect()
}

/// Both programs execute themselves again once at start with their glibc tunables (a
/// fixed mmap threshold for the daemon; on AMD CPUs, a memcpy without `rep movsb` for
/// both). Tunables given by whoever starts them are kept as they are, with no re-exec.
/// Needs strace, which CI installs (XFER_REQUIRE_INTEROP).
#[cfg(target_env = "gnu")]
#[test]
fn both_programs_run_with_their_glibc_tunables_unless_given_their_own() {
    use xfer_glibc::{FIXED_MMAP_THRESHOLD, REP_MOVSB_THRESHOLD};
    if !have_strace() {
        return;
    }
    let amd = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap()
        .contains("AuthenticAMD");
    let (daemon_wants, client_wants) = if amd && cfg!(target_arch = "x86_64") {
        (
            vec![
                None,
                Some(format!("{FIXED_MMAP_THRESHOLD}:{REP_MOVSB_THRESHOLD}")),
            ],
            vec![None, Some(REP_MOVSB_THRESHOLD.to_owned())],
        )
    } else {
        (
            vec![None, Some(FIXED_MMAP_THRESHOLD.to_owned())],
            vec![None],
        )
    };
    assert_eq!(
        tunables_executed("xferd", &["--version"], None),
        daemon_wants
    );
    assert_eq!(
        tunables_executed("xfer", &["--version"], None),
        client_wants
    );
    let own = "glibc.malloc.arena_max=2";
    for bin in ["xferd", "xfer"] {
        assert_eq!(
            tunables_executed(bin, &["--version"], Some(own)),
            [Some(own.to_owned())],
            "{bin}"
        );
    }
}

/// After executing itself again for its tunables, the daemon still goes by its file's
/// name, as `ps`, `pgrep xferd`, `top` and the journal's `_COMM` see it.
#[test]
fn the_daemon_keeps_its_name_after_executing_itself_again() {
    let d = Daemon::start();
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", d.pid())).unwrap();
    assert_eq!(comm.trim_end(), "xferd");
}
