//! Several xferd behind one name (README "Scaling out"): two daemons A and B with the
//! same certificate and password file, files in one real Garage bucket, sessions and
//! chat on one real NATS, and a TCP proxy in front standing for the load balancer.
//! Killing A mid-upload and sending clients to B loses nothing: the session goes on, the
//! upload resumes where A left it, the file comes back whole. And when Garage itself is
//! down, transfers fail with a clear "storage unavailable" and resume once it returns.

use tempfile::TempDir;
use xfer_e2e::garage::Garage;
use xfer_e2e::nats::NatsServer;
use xfer_e2e::{
    Client, DEADLINE, Daemon, MIB, PASSWORD, Proxy, add_user, audit_u64, blake3_hex, poll,
    random_bytes, write_file,
};

/// A cluster member's config: the bucket, NATS, and chat on NATS.
fn config(garage: &Garage, nats: &NatsServer, dir: &std::path::Path) -> String {
    let storage = garage.storage_config(&dir.join("s3-credentials.toml"), "team", "");
    format!(
        "{storage}\n[cluster]\nnats = \"{}\"\n\n[chat]\nbus = \"nats\"\n",
        nats.url()
    )
}

/// Starts A (fresh) and B (A's password file and certificate), as a deployment copies
/// them to every node.
fn pair(garage: &Garage, nats: &NatsServer) -> (Daemon, Daemon) {
    let tmp = TempDir::new().unwrap();
    let a_data = tmp.path().join("a");
    for user in ["alice", "bob"] {
        add_user(&a_data, user, PASSWORD);
    }
    let a_config = config(garage, nats, tmp.path());
    let a = Daemon::start_prepared(&a_data, &[], Some(&a_config), tmp);
    let tmp = TempDir::new().unwrap();
    let b_data = tmp.path().join("b");
    std::fs::create_dir_all(b_data.join("tls")).unwrap();
    std::fs::copy(a_data.join("passwd"), b_data.join("passwd")).unwrap();
    for f in ["cert.pem", "key.pem"] {
        std::fs::copy(a_data.join("tls").join(f), b_data.join("tls").join(f)).unwrap();
    }
    let b_config = config(garage, nats, tmp.path());
    let b = Daemon::start_prepared(&b_data, &[], Some(&b_config), tmp);
    assert_eq!(
        a.fingerprint, b.fingerprint,
        "one certificate for the whole cluster"
    );
    (a, b)
}

/// Logs `c` in as `user` through the proxy (one name for the cluster).
fn login_via(c: &Client, proxy: &Proxy, fingerprint: &str, user: &str) {
    let target = format!("{user}@{}", proxy.addr());
    let out = c.xfer(
        &[
            "login",
            &target,
            "--password-stdin",
            "--fingerprint",
            fingerprint,
        ],
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(out.code(), 0, "login via the proxy: {}", out.stderr());
}

#[test]
fn a_node_killed_mid_upload_loses_nothing_behind_one_name() {
    let Some(garage) = Garage::start() else {
        return;
    };
    let Some(nats) = NatsServer::start() else {
        return;
    };
    let (mut a, b) = pair(&garage, &nats);
    let lb = Proxy::start(a.addr);
    let alice = Client::new();
    login_via(&alice, &lb, &a.fingerprint, "alice");

    // Chat crosses the nodes: bob follows on B, alice speaks through the name (A).
    let bob = Client::new();
    bob.login(&b, "bob", PASSWORD);
    let f = bob.follow(&["#ops"]);
    let out = alice.xfer(&["chat", "#ops", "--say", "moving the backups"], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert!(
        f.wait_stdout(DEADLINE, |s| s.contains("<alice> moving the backups"))
            .is_some(),
        "B's follower never saw A's line: {}",
        f.stdout_so_far()
    );
    drop(f);

    // 200 MiB pushed to A, which is killed at about 40 %.
    let local = TempDir::new().unwrap();
    let data = random_bytes(200 * MIB as usize, 13);
    let path = write_file(local.path(), "backup.img", &data);
    let mut push = alice.spawn(&["push", "-q", "--limit-rate", "40M", &path]);
    let cut = 80 * MIB;
    let held = poll(DEADLINE * 2, || {
        assert!(
            !push.finished(),
            "push ended early: {}",
            push.stderr_so_far()
        );
        alice.partial_received("backup.img").filter(|&r| r >= cut)
    });
    assert!(held.is_some(), "A never held {cut} bytes");
    a.signal("KILL");
    assert!(poll(DEADLINE, || (!a.is_running()).then_some(())).is_some());
    push.kill9();

    // The balancer now sends everyone to B. The same saved session works there, and the
    // re-run resumes from what A stored in the bucket.
    lb.set_target(b.addr);
    let out = alice.xfer(&["push", "-q", &path], "");
    assert_eq!(out.code(), 0, "re-run via B: {}", out.stderr());
    let line = poll(DEADLINE, || {
        b.audit_events("upload")
            .into_iter()
            .rfind(|l| l.contains("backup.img"))
    })
    .unwrap_or_else(|| panic!("no upload audit line on B:\n{}", b.log()));
    let resumed = audit_u64(&line, "resumed_from").unwrap();
    let received = audit_u64(&line, "bytes_received").unwrap();
    assert!(resumed >= cut, "B resumed from {resumed}: {line}");
    assert!(
        received.abs_diff(data.len() as u64 - resumed) <= 8 * MIB,
        "B received {received} of {} missing: {line}",
        data.len() as u64 - resumed
    );

    // The object is whole: its digest is the source's, and it comes back intact.
    let entry = alice.ls_entry(&["-l"], "backup.img").expect("listed via B");
    assert_eq!(entry["digest"], blake3_hex(&data), "{entry}");
    let back = TempDir::new().unwrap();
    let to = back.path().join("backup.img");
    let out = alice.xfer(&["pull", "-q", "backup.img", to.to_str().unwrap()], "");
    assert_eq!(out.code(), 0, "pull via B: {}", out.stderr());
    assert_eq!(blake3_hex(&std::fs::read(&to).unwrap()), blake3_hex(&data));
}

#[test]
fn storage_down_is_a_clear_error_and_the_upload_resumes_when_it_returns() {
    let Some(mut garage) = Garage::start() else {
        return;
    };
    let tmp = TempDir::new().unwrap();
    let storage = garage.storage_config(&tmp.path().join("creds.toml"), "", "");
    let data_dir = tmp.path().join("data");
    let d = Daemon::start_prepared(&data_dir, &["alice"], Some(&storage), tmp);
    let c = xfer_e2e::alice(&d);
    let local = TempDir::new().unwrap();
    let data = random_bytes(64 * MIB as usize, 14);
    let path = write_file(local.path(), "data.bin", &data);
    let mut push = c.spawn(&["push", "-q", "--limit-rate", "8M", &path]);
    let held = poll(DEADLINE, || {
        assert!(
            !push.finished(),
            "push ended early: {}",
            push.stderr_so_far()
        );
        c.partial_received("data.bin").filter(|&r| r >= 16 * MIB)
    });
    assert!(held.is_some());

    garage.stop();
    let out = push.wait(DEADLINE * 2);
    assert_ne!(out.code(), 0);
    assert!(
        out.stderr().contains("storage unavailable"),
        "the push's error: {}",
        out.stderr()
    );
    let out = c.xfer(&["ls"], "");
    assert!(
        out.stderr().contains("storage unavailable"),
        "ls: {}",
        out.stderr()
    );
    // The daemon keeps serving what needs no storage.
    let out = c.xfer(&["whoami"], "");
    assert_eq!(
        out.code(),
        0,
        "whoami while storage is down: {}",
        out.stderr()
    );

    garage.restart();
    let out = c.xfer(&["push", "-q", &path], "");
    assert_eq!(out.code(), 0, "after storage returned: {}", out.stderr());
    let line = poll(DEADLINE, || {
        d.audit_events("upload")
            .into_iter()
            .rfind(|l| l.contains("data.bin"))
    })
    .expect("an upload audit line");
    assert!(
        audit_u64(&line, "resumed_from").unwrap() >= 16 * MIB,
        "{line}"
    );
    let entry = c.ls_entry(&["-l"], "data.bin").unwrap();
    assert_eq!(entry["digest"], blake3_hex(&data));
}

/// `xfer send` through A into the bucket: bob, following on B, is told in chat (the
/// notice carries size and BLAKE3), and pulls the file from his inbox through B.
#[test]
fn a_file_sent_through_one_node_is_announced_and_pulled_on_the_other() {
    let Some(garage) = Garage::start() else {
        return;
    };
    let Some(nats) = NatsServer::start() else {
        return;
    };
    let (a, b) = pair(&garage, &nats);
    let alice = Client::new();
    alice.login(&a, "alice", PASSWORD);
    let bob = Client::new();
    bob.login(&b, "bob", PASSWORD);
    let f = bob.follow(&[]);

    let tmp = TempDir::new().unwrap();
    let data = random_bytes(20 * MIB as usize + 321, 15);
    let path = write_file(tmp.path(), "scan.bin", &data);
    let out = alice.xfer(&["send", "-q", "bob", &path], "");
    assert_eq!(out.code(), 0, "send via A: {}", out.stderr());

    let notice = format!(
        " @bob [alice] file inbox/alice/scan.bin {} {}",
        data.len(),
        blake3_hex(&data)
    );
    let seen = f.wait_stdout(DEADLINE, |s| s.lines().any(|l| l.ends_with(&notice)));
    assert!(
        seen.is_some(),
        "no notice `{notice}` on B:\n{}\n{}",
        f.stdout_so_far(),
        f.stderr_so_far()
    );
    let got = tmp.path().join("got.bin");
    let out = bob.xfer(
        &["pull", "-q", "inbox/alice/scan.bin", got.to_str().unwrap()],
        "",
    );
    assert_eq!(out.code(), 0, "pull via B: {}", out.stderr());
    assert_eq!(blake3_hex(&std::fs::read(&got).unwrap()), blake3_hex(&data));
    drop(f);
}
