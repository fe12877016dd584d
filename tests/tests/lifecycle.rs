//! Start-up on defaults, config errors, graceful shutdown, TLS protocol versions.

use std::process::Command;

use xfer_e2e::{Daemon, bin, run};
use xfer_proto::{ErrorCode, Response};

#[test]
fn runs_on_defaults_in_an_empty_directory() {
    let tmp = tempfile::TempDir::new().unwrap();
    // No config and no data dir: run from an empty working directory, as a newcomer would.
    let mut child = Command::new(bin("xferd"))
        .args(["--listen", "127.0.0.1:0"])
        .current_dir(tmp.path())
        .env_remove("STATE_DIRECTORY")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let first = lines.next().unwrap().unwrap();
    let second = lines.next().unwrap().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(first.contains("listening on 127.0.0.1:"), "{first}");
    assert!(
        second.starts_with("certificate fingerprint SHA256:"),
        "{second}"
    );
    assert!(tmp.path().join("xferd-data/tls/key.pem").exists());
}

#[test]
fn an_unknown_config_key_is_refused_by_name() {
    let tmp = tempfile::TempDir::new().unwrap();
    let cfg = tmp.path().join("xferd.toml");
    std::fs::write(&cfg, "listen = \"127.0.0.1:0\"\nmax_conections = 5\n").unwrap();
    let out = run(
        Command::new(bin("xferd")).args(["--config", cfg.to_str().unwrap()]),
        "",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("max_conections") && err.contains("xferd.toml"),
        "{err}"
    );
}

#[test]
fn init_writes_config_certificate_and_prints_the_fingerprint() {
    let tmp = tempfile::TempDir::new().unwrap();
    let cfg = tmp.path().join("xferd.toml");
    let data = tmp.path().join("data");
    let out = xfer_e2e::xferd(&data, &["--config", cfg.to_str().unwrap(), "init"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let fp = xfer_e2e::xferd(&data, &["fingerprint"], "");
    assert!(
        text.contains(String::from_utf8_lossy(&fp.stdout).trim()),
        "{text}"
    );
    assert!(std::fs::read_to_string(&cfg).unwrap().contains("[limits]"));
    // Running init again keeps everything.
    let again = xfer_e2e::xferd(&data, &["--config", cfg.to_str().unwrap(), "init"], "");
    assert!(String::from_utf8_lossy(&again.stdout).contains("kept existing"));
}

#[tokio::test]
async fn sigterm_ends_sessions_cleanly_and_exits_zero() {
    let mut d = Daemon::start();
    let mut conn = d.raw_login("alice").await;
    let code = tokio::task::spawn_blocking(move || d.signal_and_wait("TERM"))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
    match conn.next().await {
        Some(Response::Error {
            code: ErrorCode::ShuttingDown,
            ..
        }) => {}
        other => panic!("expected a shutdown notice, got {other:?}"),
    }
}

/// Checks with the `openssl` command line, which CI installs (XFER_REQUIRE_INTEROP).
#[test]
fn tls_offers_only_tls13_with_aead_suites() {
    if Command::new("openssl").arg("version").output().is_err() {
        assert!(
            std::env::var_os("XFER_REQUIRE_INTEROP").is_none(),
            "openssl is required"
        );
        eprintln!("skipping: no openssl");
        return;
    }
    let d = Daemon::start();
    let connect = d.host_port();
    let s_client = |args: &[&str]| {
        let mut cmd = Command::new("openssl");
        cmd.args(["s_client", "-connect", &connect, "-alpn", "xfer/1"])
            .args(args);
        let out = run(&mut cmd, "");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    for old in ["-tls1", "-tls1_1", "-tls1_2"] {
        let (ok, text) = s_client(&[old]);
        assert!(
            !ok || text.contains("Cipher is (NONE)"),
            "{old} must be refused: {text}"
        );
    }
    let (ok, text) = s_client(&["-tls1_3"]);
    assert!(ok, "TLS 1.3 works: {text}");
    assert!(text.contains("TLSv1.3"), "{text}");
    let aead = [
        "TLS_AES_256_GCM_SHA384",
        "TLS_AES_128_GCM_SHA256",
        "TLS_CHACHA20_POLY1305_SHA256",
    ];
    assert!(aead.iter().any(|s| text.contains(s)), "{text}");
    // Offering only non-AEAD TLS 1.2 suites gets nowhere.
    let (ok, _) = s_client(&["-tls1_2", "-cipher", "AES128-SHA:AES256-SHA256"]);
    assert!(!ok);
}
