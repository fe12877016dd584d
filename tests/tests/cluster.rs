//! Several daemons on one NATS (`[cluster] nats`, `[chat] bus = "nats"`), against a
//! real `nats-server -js` (skipped when it is not installed, unless
//! `XFER_REQUIRE_NATS=1`): sessions work on every daemon, guesses add up across them,
//! chat crosses them and survives restarts of everything, and a NATS outage costs
//! chat (with a clear error) but not file transfers.

use std::path::Path;

use tempfile::TempDir;
use xfer_e2e::nats::NatsServer;
use xfer_e2e::{Client, DEADLINE, Daemon, PASSWORD, Running, add_user, write_file};

use super::chat_tty::{chat_tty, wait_screen};

fn config(nats: &NatsServer, extra: &str) -> String {
    format!(
        "[cluster]\nnats = \"{}\"\n\n[chat]\nbus = \"nats\"\nmessages_per_sec = 1000\nmessage_burst = 1000\n{extra}",
        nats.url()
    )
}

/// Two daemons A and B on `nats`, separate data directories, the same password file
/// and certificate (as a cluster behind one name would have).
fn two_daemons(nats: &NatsServer, extra: &str) -> (Daemon, Daemon) {
    let tmp = TempDir::new().expect("temp dir");
    let a_data = tmp.path().join("a");
    for user in ["alice", "bob"] {
        add_user(&a_data, user, PASSWORD);
    }
    let a = Daemon::start_prepared(&a_data, &[], Some(&config(nats, extra)), tmp);
    let tmp = TempDir::new().expect("temp dir");
    let b_data = tmp.path().join("b");
    std::fs::create_dir_all(b_data.join("tls")).unwrap();
    std::fs::copy(a_data.join("passwd"), b_data.join("passwd")).unwrap();
    for f in ["cert.pem", "key.pem"] {
        std::fs::copy(a_data.join("tls").join(f), b_data.join("tls").join(f)).unwrap();
    }
    let b = Daemon::start_prepared(&b_data, &[], Some(&config(nats, extra)), tmp);
    (a, b)
}

/// Points a client's saved login (and trust) at daemon `to` instead of `from`, keeping
/// the token: the session made on `from` is then used against `to`.
fn move_login(c: &Client, from: &Daemon, to: &Daemon) {
    let logins = c.home().join("logins.toml");
    let text = std::fs::read_to_string(&logins).unwrap();
    let text = text.replace(&from.host_port(), &to.host_port()).replace(
        &format!("port = {}", from.addr.port()),
        &format!("port = {}", to.addr.port()),
    );
    std::fs::write(&logins, text).unwrap();
    let hosts = c.home().join("known_hosts");
    let mut known = std::fs::read_to_string(&hosts).unwrap_or_default();
    known.push_str(&format!("{} {}\n", to.host_port(), to.fingerprint));
    std::fs::write(&hosts, known).unwrap();
}

fn say(c: &Client, target: &str, text: &str) {
    let out = c.xfer(&["chat", target, "--say", text], "");
    assert_eq!(out.code(), 0, "--say {target} {text}: {}", out.stderr());
}

/// Whether `out` has a `TIME TARGET <FROM> TEXT` line.
fn has_message(out: &str, target: &str, from: &str, text: &str) -> bool {
    let rest = format!(" {target} <{from}> {text}");
    out.lines().any(|l| l.ends_with(&rest))
}

fn wait_message(f: &Running, target: &str, from: &str, text: &str) {
    assert!(
        f.wait_stdout(DEADLINE, |s| has_message(s, target, from, text))
            .is_some(),
        "no `{target} <{from}> {text}` within {DEADLINE:?}; stdout:\n{}\nstderr:\n{}",
        f.stdout_so_far(),
        f.stderr_so_far()
    );
}

fn history(c: &Client, target: &str) -> String {
    let out = c.xfer(&["chat", target, "--history", "20"], "");
    assert_eq!(out.code(), 0, "--history {target}: {}", out.stderr());
    out.stdout()
}

#[test]
fn a_session_chat_and_history_are_shared_by_two_daemons_and_survive_restarts() {
    let Some(mut nats) = NatsServer::start() else {
        return;
    };
    let (a, b) = two_daemons(&nats, "");

    // Logged in on A, the same token lists files through B.
    let alice = Client::new();
    alice.login(&a, "alice", PASSWORD);
    let alice_b = Client::new();
    alice_b.login(&a, "alice", PASSWORD);
    move_login(&alice_b, &a, &b);
    let out = alice_b.xfer(&["ls"], "");
    assert_eq!(out.code(), 0, "ls via B with A's token: {}", out.stderr());
    let out = alice_b.xfer(&["whoami"], "");
    assert!(out.stdout().contains("alice"), "{}", out.stdout());

    // A line said on A reaches a follower on B; each sees the other's users.
    let bob = Client::new();
    bob.login(&b, "bob", PASSWORD);
    let f = bob.follow(&["#lab"]);
    say(&alice, "#lab", "hello from A");
    wait_message(&f, "#lab", "alice", "hello from A");
    drop(f);

    // A direct message to an offline user, sent via A, arrives when they connect to B.
    say(&alice, "@bob", "are you there?");
    let f = bob.follow(&[]);
    wait_message(&f, "@bob", "alice", "are you there?");
    drop(f);

    // History survives stopping both daemons and restarting NATS (same port, same
    // store): daemons started afresh, with new data directories, read it back.
    drop((a, b));
    nats.restart();
    let (a2, b2) = restart_pair(&nats, &alice, &bob);
    let h = history(&bob, "#lab");
    assert!(
        has_message(&h, "#lab", "alice", "hello from A"),
        "history via B after restarts: {h}"
    );
    say(&bob, "#lab", "hello from B");
    let h = history(&alice, "#lab");
    assert!(has_message(&h, "#lab", "alice", "hello from A"), "{h}");
    assert!(has_message(&h, "#lab", "bob", "hello from B"), "{h}");
    let first = h.find("hello from A").unwrap();
    assert!(first < h.find("hello from B").unwrap(), "in id order: {h}");
    drop((a2, b2));
}

/// Starts new daemons on `nats` and logs `alice` in on the first and `bob` on the
/// second (their saved logins replaced).
fn restart_pair(nats: &NatsServer, alice: &Client, bob: &Client) -> (Daemon, Daemon) {
    let (a, b) = two_daemons(nats, "");
    alice.login(&a, "alice", PASSWORD);
    bob.login(&b, "bob", PASSWORD);
    (a, b)
}

#[test]
fn failed_logins_on_two_daemons_add_up() {
    let Some(nats) = NatsServer::start() else {
        return;
    };
    // Four failures allowed per source; two on each daemon use them up.
    let (a, b) = two_daemons(
        &nats,
        "\n[login]\nsource_burst = 4\nmax_attempts_per_connection = 1\n",
    );
    let c = Client::new();
    let attempt = |d: &Daemon| {
        c.xfer(
            &[
                "login",
                &format!("alice@{}", d.host_port()),
                "--password-stdin",
                "--fingerprint",
                &d.fingerprint,
            ],
            "wrong password\n",
        )
    };
    for d in [&a, &b, &a, &b] {
        let out = attempt(d);
        assert_ne!(out.code(), 0);
        assert!(
            !out.stderr().contains("too many"),
            "throttled too early: {}",
            out.stderr()
        );
    }
    for d in [&a, &b] {
        let out = attempt(d);
        assert!(
            out.stderr().contains("too many failed logins"),
            "the fifth guess, wherever it goes, is throttled: {}",
            out.stderr()
        );
    }
}

#[test]
fn without_nats_chat_says_so_files_still_move_and_chat_comes_back() {
    let Some(mut nats) = NatsServer::start() else {
        return;
    };
    let (a, _b) = two_daemons(&nats, "");
    let alice = Client::new();
    alice.login(&a, "alice", PASSWORD);
    say(&alice, "#ops", "before");

    nats.kill();
    let out = poll_until(|| {
        let out = alice.xfer(&["chat", "#ops", "--say", "during"], "");
        (out.code() != 0).then_some(out)
    });
    let err = out.stderr();
    assert!(
        err.contains("chat unavailable") && err.contains(&nats.url()),
        "one clear line naming the bus: {err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // Files do not need NATS (the session was made before, and is known here).
    let dir = TempDir::new().unwrap();
    let file = write_file(dir.path(), "report.txt", b"still moving");
    let out = alice.xfer(&["push", &file], "");
    assert_eq!(out.code(), 0, "push during the outage: {}", out.stderr());
    assert!(Path::new(&a.files_dir("alice")).join("report.txt").exists());

    // NATS back on the same port and store: chat recovers by itself.
    nats.restart();
    let out = poll_until(|| {
        let out = alice.xfer(&["chat", "#ops", "--say", "after"], "");
        (out.code() == 0).then_some(out)
    });
    assert_eq!(out.code(), 0);
    let h = history(&alice, "#ops");
    assert!(has_message(&h, "#ops", "alice", "before"), "{h}");
    assert!(has_message(&h, "#ops", "alice", "after"), "{h}");
    assert!(!has_message(&h, "#ops", "alice", "during"), "{h}");
}

/// Runs `f` until it gives an answer, for at most twice [`DEADLINE`] (NATS client
/// reconnects and disconnect detection take seconds).
fn poll_until<T>(mut f: impl FnMut() -> Option<T>) -> T {
    xfer_e2e::poll(DEADLINE * 2, &mut f).expect("condition not reached in time")
}

/// `config(nats, "")` with `lines` added to its `[cluster]` table (credentials, TLS).
fn config_with_cluster(nats: &NatsServer, lines: &str) -> String {
    config(nats, "").replacen("[cluster]\n", &format!("[cluster]\n{lines}"), 1)
}

/// One daemon on `config`: alice's line in `channel` reaches bob following there.
fn chat_goes_through(config: &str, channel: &str) {
    let tmp = TempDir::new().unwrap();
    let data = tmp.path().join("a");
    add_user(&data, "alice", PASSWORD);
    add_user(&data, "bob", PASSWORD);
    let d = Daemon::start_prepared(&data, &[], Some(config), tmp);
    let alice = Client::new();
    alice.login(&d, "alice", PASSWORD);
    let bob = Client::new();
    bob.login(&d, "bob", PASSWORD);
    let f = bob.follow(&[channel]);
    say(&alice, channel, "through the bus");
    wait_message(&f, channel, "alice", "through the bus");
}

/// The log of a daemon on `config` that must not start (`why`: what it would mean if it
/// did).
fn refused_at_start(config: &str, why: &str) -> String {
    let tmp = TempDir::new().unwrap();
    let data = tmp.path().join("b");
    add_user(&data, "alice", PASSWORD);
    let conf = data.with_extension("toml");
    std::fs::write(&conf, config).unwrap();
    match Daemon::start_in(&data, &["--config", conf.to_str().unwrap()]) {
        Ok(_) => panic!("xferd started, {why}"),
        Err(log) => log,
    }
}

#[test]
fn nats_credentials_are_used_and_a_wrong_password_is_named_at_start() {
    let Some(nats) = NatsServer::start_with(&["--user", "xferd", "--pass", "nats-secret-1"]) else {
        return;
    };
    let secrets = TempDir::new().unwrap();
    // The file's name never holds the password: the log may name the file.
    let with_password = |name: &str, password: &str| {
        let file = secrets.path().join(name);
        std::fs::write(&file, format!("{password}\n")).unwrap();
        config_with_cluster(
            &nats,
            &format!("user = \"xferd\"\npassword_file = \"{}\"\n", file.display()),
        )
    };
    chat_goes_through(&with_password("nats.password", "nats-secret-1"), "#auth");

    // A wrong password: the daemon does not start, and says why in one line naming NATS.
    let log = refused_at_start(
        &with_password("wrong.password", "not-the-password"),
        "with a wrong NATS password",
    );
    assert!(log.to_lowercase().contains("nats"), "{log}");
    assert!(
        !log.contains("not-the-password"),
        "the password was logged: {log}"
    );
}

#[test]
fn who_is_here_and_who_joins_or_leaves_is_seen_across_daemons() {
    let Some(nats) = NatsServer::start() else {
        return;
    };
    let (a, b) = two_daemons(&nats, "");
    let alice = Client::new();
    alice.login(&a, "alice", PASSWORD);
    let bob = Client::new();
    bob.login(&b, "bob", PASSWORD);

    // alice at a terminal on A, in #hall.
    let mut t = chat_tty(&alice, &["#hall"]);
    t.expect("#hall> ");

    // bob comes to #hall on B: A's terminal shows him arrive and /who lists him.
    let f = bob.follow(&["#hall"]);
    wait_screen(&t, "bob joining from B", |s| {
        s.text().contains("bob joined #hall")
    });
    t.send("/who\r");
    wait_screen(&t, "/who listing bob", |s| {
        s.text().contains("#hall: alice, bob")
    });

    // From B, /who in #hall lists alice, who is on A (a second connection of bob's
    // changes nothing A would show: he is already there).
    poll_until(|| {
        let out = bob.xfer(&["chat"], "/join #hall\n/who\n/quit\n");
        out.stdout().contains("#hall: alice, bob").then_some(())
    });

    // bob leaves: A shows him leave the channel and go offline.
    drop(f);
    let s = wait_screen(&t, "bob leaving", |s| {
        let text = s.text();
        text.contains("bob left #hall") && text.contains("bob is offline")
    });
    let text = s.text();
    assert!(
        text.find("bob joined #hall") < text.find("bob left #hall"),
        "{text}"
    );
    t.send("/quit\r");
    assert!(t.wait().success(), "{}", t.output());
    drop((a, b));
}

#[test]
fn nats_over_tls_is_verified_against_the_configured_ca() {
    // A CA of the deployment's, and NATS serving a certificate it issued for 127.0.0.1.
    let pki = TempDir::new().unwrap();
    let ca = xfer_certs::ca::LocalCa::generate("nats-test").unwrap();
    let ca_pem = pki.path().join("nats-ca.pem");
    std::fs::write(&ca_pem, ca.cert_pem()).unwrap();
    let issued = ca.issue(&["127.0.0.1".to_owned()]).unwrap();
    let (cert, key) = (pki.path().join("nats.pem"), pki.path().join("nats.key"));
    xfer_certs::generate::write_identity(&issued.identity, &cert, &key).unwrap();
    let Some(nats) = NatsServer::start_with(&[
        "--tls",
        "--tlscert",
        cert.to_str().unwrap(),
        "--tlskey",
        key.to_str().unwrap(),
    ]) else {
        return;
    };
    let with_ca =
        |ca: &Path| config_with_cluster(&nats, &format!("ca_file = \"{}\"\n", ca.display()));

    // Trusting that CA, sessions and chat go through.
    chat_goes_through(&with_ca(&ca_pem), "#tls");

    // Trusting another CA: NATS's certificate is refused and xferd says so at start.
    let other = xfer_certs::ca::LocalCa::generate("someone-else").unwrap();
    let other_pem = pki.path().join("other-ca.pem");
    std::fs::write(&other_pem, other.cert_pem()).unwrap();
    let log = refused_at_start(
        &with_ca(&other_pem),
        "trusting a NATS certificate its CA did not issue",
    );
    assert!(log.to_lowercase().contains("nats"), "{log}");
}
