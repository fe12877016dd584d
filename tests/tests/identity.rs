//! Server identity: trust on first use, pinning, refusing a changed certificate.

use xfer_e2e::{Client, Daemon, PASSWORD};

#[test]
fn first_contact_without_a_terminal_is_refused_and_shows_the_fingerprint() {
    let d = Daemon::start();
    let c = Client::new();
    let out = c.xfer(
        &[
            "login",
            &format!("alice@{}", d.host_port()),
            "--password-stdin",
        ],
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(out.code(), 4, "host-key refusals exit 4: {}", out.stderr());
    assert!(
        out.stderr().contains(&d.fingerprint),
        "fingerprint shown: {}",
        out.stderr()
    );
    assert!(out.stderr().contains("--accept-new"), "{}", out.stderr());
    assert_eq!(
        out.stderr().trim().lines().count(),
        1,
        "one line: {}",
        out.stderr()
    );
    assert!(
        !d.log().contains("event=\"login\""),
        "no credential may be sent before trust"
    );
}

#[test]
fn accept_new_pins_the_fingerprint() {
    let d = Daemon::start();
    let c = Client::new();
    let out = c.xfer(
        &[
            "login",
            &format!("alice@{}", d.host_port()),
            "--password-stdin",
            "--accept-new",
        ],
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(out.code(), 0, "{}", out.stderr());
    let known = std::fs::read_to_string(c.home().join("known_hosts")).unwrap();
    assert!(
        known.contains(&format!("{} {}", d.host_port(), d.fingerprint)),
        "{known}"
    );
}

#[test]
fn a_wrong_fingerprint_flag_is_refused() {
    let d = Daemon::start();
    let c = Client::new();
    let wrong = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let out = c.xfer(
        &[
            "login",
            &format!("alice@{}", d.host_port()),
            "--password-stdin",
            "--fingerprint",
            wrong,
        ],
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(out.code(), 4, "{}", out.stderr());
    assert!(
        out.stderr().contains(&d.fingerprint) && out.stderr().contains(wrong),
        "{}",
        out.stderr()
    );
}

#[test]
fn a_regenerated_certificate_is_refused_before_any_credential_is_sent() {
    let mut d = Daemon::start();
    let _keep = d.keep_data();
    let c = Client::new();
    c.login(&d, "alice", PASSWORD);
    let old_fp = d.fingerprint.clone();
    let listen = d.host_port();
    assert_eq!(d.signal_and_wait("TERM"), Some(0));

    // The server gets a new identity on the same address.
    std::fs::remove_dir_all(d.data_dir.join("tls")).unwrap();
    let d2 = Daemon::start_listening(&d.data_dir, &listen, &[]).expect("restart");
    assert_ne!(d2.fingerprint, old_fp);

    let login = c.xfer(
        &["login", &format!("alice@{listen}"), "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(login.code(), 4, "{}", login.stderr());
    let msg = login.stderr();
    assert!(
        msg.contains(&old_fp) && msg.contains(&d2.fingerprint),
        "names both: {msg}"
    );
    assert!(
        msg.contains("known_hosts line 1"),
        "names file and line: {msg}"
    );
    assert!(
        msg.contains("xferd fingerprint"),
        "says how to check: {msg}"
    );
    // A short block like OpenSSH's warning, not one 400-character line.
    assert!(msg.trim().lines().count() <= 6, "{msg}");
    assert!(msg.starts_with("xfer: the certificate of"), "{msg}");
    assert!(msg.contains("CHANGED"), "{msg}");

    // Saved-token commands are refused the same way.
    assert_eq!(c.xfer(&["whoami"], "").code(), 4);

    // The server saw failed handshakes, and not a single login attempt.
    assert!(d2.wait_for_log("TLS handshake failed"), "{}", d2.log());
    assert!(d2.audit_lines().is_empty(), "audit: {:?}", d2.audit_lines());

    // After checking `xferd fingerprint`, the user re-pins explicitly.
    let repin = c.xfer(
        &[
            "login",
            &format!("alice@{listen}"),
            "--password-stdin",
            "--fingerprint",
            &d2.fingerprint,
        ],
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(repin.code(), 0, "{}", repin.stderr());
    assert_eq!(c.xfer(&["whoami"], "").code(), 0);
}

#[test]
fn xferd_fingerprint_matches_what_the_daemon_serves() {
    let d = Daemon::start();
    let out = xfer_e2e::xferd(&d.data_dir, &["fingerprint"], "");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), d.fingerprint);
}

#[test]
fn ca_mode_verifies_the_certificate_chain_and_name() {
    let d = Daemon::start();
    let ca = d.data_dir.join("tls/cert.pem");
    let c = Client::new();
    // The self-signed certificate is its own CA; it names localhost and 127.0.0.1.
    let port = d.addr.port();
    let ok = c.xfer(
        &[
            "login",
            &format!("alice@localhost:{port}"),
            "--password-stdin",
            "--ca",
            ca.to_str().unwrap(),
        ],
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(ok.code(), 0, "{}", ok.stderr());
    assert_eq!(c.xfer(&["whoami"], "").code(), 0);

    // A CA that did not sign the server's certificate is refused.
    let other = tempfile::TempDir::new().unwrap();
    let other_data = other.path().join("data");
    let cfg = other.path().join("xferd.toml");
    let out = xfer_e2e::xferd(
        &other_data,
        &["--config", cfg.to_str().unwrap(), "init"],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c2 = Client::new();
    let bad = c2.xfer(
        &[
            "login",
            &format!("alice@localhost:{port}"),
            "--password-stdin",
            "--ca",
            other_data.join("tls/cert.pem").to_str().unwrap(),
        ],
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(bad.code(), 4, "{}", bad.stderr());
    assert!(
        d.audit_lines().len() == 2,
        "only the CA-verified login and whoami: {:?}",
        d.audit_lines()
    );
}
