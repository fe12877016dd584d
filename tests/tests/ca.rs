//! The local CA (`xferd ca`, `xferd init --ca`): the daemon serves `[leaf, CA]`, `xfer
//! login --ca` trusts it by name with no prompt and refuses another CA (exit 4), an HTTPS
//! client with the CA as its only root reaches the API by address and by an added name,
//! and re-issuing keeps the CA while a reload serves the new certificate.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use serde_json::Value;
use tempfile::TempDir;
use xfer_certs::Fingerprint;
use xfer_e2e::{Client, Daemon, Out, PASSWORD};

/// A data directory with user alice and a CA made by `xferd ca init EXTRA…`.
struct CaServer {
    _tmp: TempDir,
    data: PathBuf,
    ca: PathBuf,
    /// What `ca init` printed.
    init: Out,
}

impl CaServer {
    fn new(extra: &[&str]) -> CaServer {
        let tmp = TempDir::new().unwrap();
        let data = tmp.path().join("data");
        xfer_e2e::add_user(&data, "alice", PASSWORD);
        let mut args = vec!["ca", "init"];
        args.extend(extra);
        let init = Out(xfer_e2e::xferd(&data, &args, ""));
        assert_eq!(init.code(), 0, "{}", init.stderr());
        CaServer {
            ca: data.join("ca/ca.pem"),
            data,
            _tmp: tmp,
            init,
        }
    }

    fn start(&self) -> Daemon {
        Daemon::start_in(&self.data, &[]).expect("xferd starts")
    }
}

fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The value of the stdout line `PREFIX VALUE`.
fn line_value(out: &Out, prefix: &str) -> String {
    out.stdout()
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in {}", out.stdout()))
        .trim()
        .to_owned()
}

fn login(c: &Client, target: &str, ca: &Path) -> Out {
    c.xfer(
        &[
            "login",
            target,
            "--password-stdin",
            "--ca",
            ca.to_str().unwrap(),
        ],
        &format!("{PASSWORD}\n"),
    )
}

/// An HTTPS client like a browser that has the CA installed: WebPKI verification with
/// `ca` as the only root, h2 and http/1.1, `nas.lan` resolving to the daemon.
fn browser(ca: &Path, d: &Daemon) -> reqwest::Client {
    let mut config = (*xfer_certs::config::client_config_ca(ca).unwrap()).clone();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .resolve("nas.lan", d.addr)
        .resolve("elsewhere.lan", d.addr)
        .build()
        .unwrap()
}

#[test]
fn ca_init_writes_the_ca_and_the_daemon_serves_leaf_then_ca() {
    let s = CaServer::new(&["--name", "nas.lan"]);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&s.data.join("ca/ca-key.pem")), 0o600);
    assert_eq!(mode(&s.ca), 0o644);
    assert_eq!(mode(&s.data.join("tls/key.pem")), 0o600);

    let root = certs(&s.ca).remove(0);
    let ca_fp = Fingerprint::of_der(&root);
    let out = &s.init;
    assert!(
        out.stdout()
            .contains(&format!("created CA {}", s.ca.display())),
        "{}",
        out.stdout()
    );
    assert_eq!(line_value(out, "CA fingerprint "), ca_fp.to_string());
    assert_eq!(line_value(out, "  SHA-256 "), ca_fp.to_colon_hex());
    let issued = line_value(out, "issued certificate ");
    for name in ["localhost", "127.0.0.1", "nas.lan"] {
        assert!(issued.contains(name), "{issued}");
    }

    let chain = certs(&s.data.join("tls/cert.pem"));
    assert_eq!(chain.len(), 2, "leaf then CA");
    assert_eq!(chain[1], root);
    let d = s.start();
    assert_eq!(d.fingerprint, Fingerprint::of_der(&chain[0]).to_string());
    assert_eq!(d.fingerprint, line_value(out, "certificate fingerprint "));
    let show = d.admin(&["ca", "show"]);
    assert_eq!(show.code(), 0, "{}", show.stderr());
    assert!(
        show.stdout().contains("issued by this CA"),
        "{}",
        show.stdout()
    );
}

#[test]
fn login_with_the_ca_needs_no_prompt_and_another_ca_is_refused() {
    let s = CaServer::new(&[]);
    let d = s.start();
    let port = d.addr.port();

    // No terminal and no --accept-new: only the CA can make this succeed.
    let c = Client::new();
    let ok = login(&c, &format!("alice@127.0.0.1:{port}"), &s.ca);
    assert_eq!(ok.code(), 0, "{}", ok.stderr());
    assert!(!ok.stderr().contains("Trust it?"), "{}", ok.stderr());
    assert_eq!(c.xfer(&["whoami"], "").code(), 0);
    assert!(
        !c.home().join("known_hosts").exists(),
        "nothing pinned with a CA"
    );
    let by_name = login(&Client::new(), &format!("alice@localhost:{port}"), &s.ca);
    assert_eq!(by_name.code(), 0, "{}", by_name.stderr());

    let logins = || {
        d.audit_lines()
            .into_iter()
            .filter(|l| l.contains("event=\"login\""))
            .count()
    };
    let before = logins();

    // A CA that did not issue the server's certificate.
    let other = TempDir::new().unwrap();
    let other_data = other.path().join("data");
    std::fs::create_dir(&other_data).unwrap();
    let made = xfer_e2e::xferd(&other_data, &["ca", "init"], "");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let other_ca = other_data.join("ca/ca.pem");
    let bad = login(
        &Client::new(),
        &format!("alice@127.0.0.1:{port}"),
        &other_ca,
    );
    assert_eq!(bad.code(), 4, "host-key refusals exit 4: {}", bad.stderr());
    assert!(
        bad.stderr().contains(other_ca.to_str().unwrap()),
        "names the CA: {}",
        bad.stderr()
    );
    assert_eq!(bad.stderr().trim().lines().count(), 1, "{}", bad.stderr());
    assert!(bad.stderr().contains("UnknownIssuer"), "{}", bad.stderr());
    assert!(bad.stderr().contains("xferd ca show"), "{}", bad.stderr());
    assert_eq!(
        logins(),
        before,
        "no login attempt over the refused connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_trusting_the_ca_reaches_the_api_by_address_and_name() {
    let s = CaServer::new(&["--name", "nas.lan"]);
    let d = s.start();
    let web = browser(&s.ca, &d);
    let port = d.addr.port();
    for host in ["127.0.0.1", "localhost", "nas.lan"] {
        let r = web
            .get(format!("https://{host}:{port}/api/server"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{host}: {e:?}"));
        assert_eq!(r.status(), reqwest::StatusCode::OK, "{host}");
        // The sign-in page shows this fingerprint (app.js), the leaf's as before.
        let server: Value = r.json().await.unwrap();
        assert_eq!(server["fingerprint"], d.fingerprint.as_str(), "{host}");
    }
    let page = web
        .get(format!("https://nas.lan:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), reqwest::StatusCode::OK);
    assert!(page.text().await.unwrap().contains("id=\"fingerprint\""));

    // A name the certificate does not carry is refused, as a browser would.
    let err = web
        .get(format!("https://elsewhere.lan:{port}/api/server"))
        .send()
        .await
        .expect_err("not a name of the certificate");
    assert!(format!("{err:?}").contains("NotValidForName"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_issue_keeps_the_ca_and_a_reload_serves_the_new_certificate() {
    let s = CaServer::new(&["--name", "nas.lan"]);
    let d = s.start();
    let c = Client::new();
    let ok = login(&c, &format!("alice@{}", d.host_port()), &s.ca);
    assert_eq!(ok.code(), 0, "{}", ok.stderr());
    let ca_before = std::fs::read(&s.ca).unwrap();
    let key_before = std::fs::read(s.data.join("ca/ca-key.pem")).unwrap();

    // Running init again is refused in one line that says what to do; nothing changes.
    let again = d.admin(&["ca", "init"]);
    assert_eq!(again.code(), 1);
    let msg = again.stderr();
    assert_eq!(msg.trim().lines().count(), 1, "{msg}");
    assert!(
        msg.contains("already exists") && msg.contains("xferd ca issue"),
        "{msg}"
    );
    assert!(msg.contains("--force"), "{msg}");
    assert_eq!(std::fs::read(&s.ca).unwrap(), ca_before);

    let issue = d.admin(&["ca", "issue", "--ip", "10.9.8.7"]);
    assert_eq!(issue.code(), 0, "{}", issue.stderr());
    assert!(issue.stdout().starts_with("kept CA "), "{}", issue.stdout());
    assert_eq!(std::fs::read(&s.ca).unwrap(), ca_before, "the CA is kept");
    assert_eq!(
        std::fs::read(s.data.join("ca/ca-key.pem")).unwrap(),
        key_before
    );
    let names = line_value(&issue, "issued certificate ");
    assert!(
        names.contains("nas.lan") && names.contains("10.9.8.7"),
        "keeps the old names, adds the new: {names}"
    );
    let new_fp = line_value(&issue, "certificate fingerprint ");
    assert_ne!(new_fp, d.fingerprint);

    let reload = d.admin(&["reload"]);
    assert_eq!(reload.code(), 0, "{}", reload.stderr());
    assert!(reload.stdout().contains(&new_fp), "{}", reload.stdout());
    // New connections get the new certificate; the saved login trusts it through the CA.
    assert_eq!(c.xfer(&["whoami"], "").code(), 0);
    let server: Value = browser(&s.ca, &d)
        .get(format!("https://nas.lan:{}/api/server", d.addr.port()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(server["fingerprint"], new_fp.as_str());
}

#[test]
fn init_with_ca_sets_up_a_server_and_keeps_its_ca_when_run_again() {
    let tmp = TempDir::new().unwrap();
    let data = tmp.path().join("data");
    let cfg = tmp.path().join("xferd.toml");
    let cfg = cfg.to_str().unwrap();
    let first = Out(xfer_e2e::xferd(
        &data,
        &["--config", cfg, "init", "--ca", "--name", "nas.lan"],
        "",
    ));
    assert_eq!(first.code(), 0, "{}", first.stderr());
    assert!(first.stdout().contains("created CA "), "{}", first.stdout());
    assert!(first.stdout().contains("install "), "{}", first.stdout());
    let ca = std::fs::read(data.join("ca/ca.pem")).unwrap();

    let second = Out(xfer_e2e::xferd(
        &data,
        &["--config", cfg, "init", "--ca"],
        "",
    ));
    assert_eq!(second.code(), 0, "{}", second.stderr());
    assert!(second.stdout().contains("kept CA "), "{}", second.stdout());
    assert_eq!(std::fs::read(data.join("ca/ca.pem")).unwrap(), ca);
    assert_eq!(
        line_value(&first, "CA fingerprint "),
        line_value(&second, "CA fingerprint ")
    );

    // Names only make sense with --ca; the self-signed default stays as it was.
    let names_alone = Out(xfer_e2e::xferd(
        &data,
        &["--config", cfg, "init", "--name", "x.lan"],
        "",
    ));
    assert_eq!(names_alone.code(), 1);
    assert!(
        names_alone.stderr().contains("add --ca"),
        "{}",
        names_alone.stderr()
    );
}

#[test]
fn a_certificate_of_the_admins_own_is_never_replaced() {
    let tmp = TempDir::new().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let cfg = tmp.path().join("xferd.toml");
    std::fs::write(&cfg, "[tls]\ncert = \"mine.pem\"\nkey = \"mine-key.pem\"\n").unwrap();
    let out = Out(xfer_e2e::xferd(
        &data,
        &["--config", cfg.to_str().unwrap(), "ca", "init"],
        "",
    ));
    assert_eq!(out.code(), 1);
    assert!(
        out.stderr().contains("[tls] cert and key are set"),
        "{}",
        out.stderr()
    );
    assert!(!data.join("ca").exists());
}
