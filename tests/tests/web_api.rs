//! The HTTPS API on the xfer port (docs/HTTP.md): a real `xferd`, real TLS on 127.0.0.1
//! (ALPN h2 and http/1.1), reqwest on rustls with an explicit provider and the daemon's
//! pinned fingerprint. Sign-in (cookie flags, CSRF and Origin refusals, sessions shared
//! with the CLI, throttling shared with the CLI), strict headers, Range downloads,
//! confinement (the CLI's path vectors, another user's files), verified resumable
//! uploads, policy refusals with their JSON codes, and the curl examples of
//! docs/HTTP.md run as written.

use std::ops::Range;
use std::path::Path;

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode, Version};
use serde_json::{Value, json};
use xfer_e2e::{
    CHUNK, Client, DEADLINE, Daemon, PASSWORD, alice, blake3_hex, random_bytes, write_file,
};
use xfer_proto::Digest;

/// An HTTPS client for one daemon.
pub(crate) struct Web {
    base: String,
    http: reqwest::Client,
}

/// A TLS client config that offers `alpn` and trusts exactly the daemon's certificate.
fn pinned_config(d: &Daemon, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let verifier = xfer_certs::PinnedVerifier::new(Some(d.fingerprint.parse().unwrap()));
    let mut config = (*xfer_certs::config::client_config_pinned(verifier)).clone();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// A raw TLS connection to the daemon that negotiated HTTP/1.1, for tests that write
/// requests by hand (chunked bodies, stalled heads, WebSocket upgrades).
pub(crate) async fn http1_tls(
    d: &Daemon,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let config = pinned_config(d, &[b"http/1.1"]);
    let tcp = tokio::net::TcpStream::connect(d.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    tls
}

impl Web {
    /// Offers `alpn` (e.g. `h2`, `http/1.1`), trusting exactly the daemon's certificate.
    pub(crate) fn with_alpn(d: &Daemon, alpn: &[&[u8]]) -> Web {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(pinned_config(d, alpn))
            .build()
            .expect("reqwest client");
        Web {
            base: format!("https://{}", d.addr),
            http,
        }
    }

    pub(crate) fn new(d: &Daemon) -> Web {
        Web::with_alpn(d, &[b"h2", b"http/1.1"])
    }

    fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    /// Signs in; returns the response (for its cookie) and its JSON.
    async fn login(&self, user: &str, password: &str) -> (StatusCode, HeaderMap, Value) {
        let r = self
            .req(Method::POST, "/api/login")
            .json(&json!({ "user": user, "password": password }))
            .send()
            .await
            .unwrap();
        let (status, headers) = (r.status(), r.headers().clone());
        (status, headers, r.json().await.unwrap_or(Value::Null))
    }

    /// Signs in as `user` and returns the session token (from the cookie) and CSRF token.
    pub(crate) async fn session(&self, user: &str) -> (String, String) {
        let (status, headers, body) = self.login(user, PASSWORD).await;
        assert_eq!(status, StatusCode::OK, "login: {body}");
        let cookie = headers["set-cookie"].to_str().unwrap();
        let token = cookie
            .strip_prefix("xfer_session=")
            .and_then(|c| c.split(';').next())
            .unwrap()
            .to_owned();
        (token, body["csrf"].as_str().unwrap().to_owned())
    }

    pub(crate) fn bearer(
        &self,
        method: Method,
        path: &str,
        token: &str,
    ) -> reqwest::RequestBuilder {
        self.req(method, path).bearer_auth(token)
    }
}

/// The JSON error code of a refusal.
pub(crate) async fn code(r: reqwest::Response) -> (StatusCode, String) {
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    (status, v["error"]["code"].as_str().unwrap_or("").to_owned())
}

fn q(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_flags_csrf_origin_csp_and_sessions_shared_with_the_cli() {
    let d = Daemon::start_with(&["alice"], None);
    let web = Web::new(&d);
    let server: Value = web
        .req(Method::GET, "/api/server")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(server["fingerprint"], d.fingerprint.as_str());
    assert_eq!(server["chunk_size"], CHUNK as u64);

    let (status, headers, body) = web.login("alice", PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let cookie = headers["set-cookie"].to_str().unwrap();
    for flag in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.split("; ").any(|f| f == flag), "{flag} in {cookie}");
    }
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    // Scripts only from the server; WebAssembly may be compiled (the page's BLAKE3), but
    // JavaScript eval and inline scripts stay forbidden.
    let script_src = csp.split("; ").find(|d| d.starts_with("script-src "));
    assert_eq!(
        script_src,
        Some("script-src 'self' 'wasm-unsafe-eval'"),
        "{csp}"
    );
    assert!(
        !csp.contains("'unsafe-eval'") && !csp.contains("'unsafe-inline'"),
        "{csp}"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["cache-control"], "no-store");
    let token = cookie["xfer_session=".len()..].split(';').next().unwrap();
    let csrf = body["csrf"].as_str().unwrap();
    let page = web.req(Method::GET, "/").send().await.unwrap();
    assert_eq!(page.headers()["content-security-policy"], csp);

    let mkdir = |dir: &str, origin: Option<&str>, csrf: Option<&str>| {
        let mut r = web
            .req(Method::POST, "/api/mkdir")
            .header("cookie", format!("xfer_session={token}"))
            .json(&json!({ "path": dir }));
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        if let Some(c) = csrf {
            r = r.header("x-csrf-token", c);
        }
        r.send()
    };
    let own_origin = format!("https://{}", d.addr);
    let refused = code(mkdir("no-token", None, None).await.unwrap()).await;
    assert_eq!(refused, (StatusCode::FORBIDDEN, "permission_denied".into()));
    let wrong = code(mkdir("wrong-token", None, Some("00ff")).await.unwrap()).await;
    assert_eq!(wrong, (StatusCode::FORBIDDEN, "permission_denied".into()));
    let foreign = mkdir("foreign", Some("https://evil.example"), Some(csrf));
    let foreign = code(foreign.await.unwrap()).await;
    assert_eq!(foreign, (StatusCode::FORBIDDEN, "permission_denied".into()));
    let files = d.files_dir("alice");
    for dir in ["no-token", "wrong-token", "foreign"] {
        assert!(!files.join(dir).exists(), "{dir} was created");
    }
    let ok = mkdir("ok", Some(&own_origin), Some(csrf)).await.unwrap();
    assert_eq!(ok.status(), StatusCode::CREATED);
    assert!(files.join("ok").is_dir());
    // Bearer requests need no CSRF token.
    let r = web
        .bearer(Method::POST, "/api/mkdir", token)
        .json(&json!({ "path": "bearer" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    // A browser session is a session: the CLI's token works here, the web's connection
    // shows in `xferd status`, logout ends it.
    let cli = alice(&d);
    let cli_token = cli.xfer(&["token"], "").stdout().trim().to_owned();
    assert!(
        cli_token.starts_with("xft"),
        "xfer token printed {cli_token:?}"
    );
    let r = web
        .bearer(Method::GET, "/api/session", &cli_token)
        .send()
        .await;
    assert_eq!(r.unwrap().json::<Value>().await.unwrap()["user"], "alice");
    let status = d.admin(&["status"]).stdout();
    assert!(status.contains("alice"), "xferd status: {status}");
    let r = web.bearer(Method::POST, "/api/logout", token).send().await;
    assert_eq!(r.unwrap().status(), StatusCode::NO_CONTENT);
    let after = web.bearer(Method::GET, "/api/list", token).send().await;
    assert_eq!(
        code(after.unwrap()).await,
        (StatusCode::UNAUTHORIZED, "auth_failed".into())
    );
    let none = web.req(Method::GET, "/api/list").send().await.unwrap();
    assert_eq!(
        code(none).await,
        (StatusCode::UNAUTHORIZED, "auth_required".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_del_ends_a_browser_session() {
    let d = Daemon::start_with(&["alice", "bob"], None);
    let web = Web::with_alpn(&d, &[b"http/1.1"]);
    let (token, _) = web.session("bob").await;
    let ok = web.bearer(Method::GET, "/api/list", &token).send().await;
    assert_eq!(ok.unwrap().status(), StatusCode::OK);
    let del = d.admin(&["user", "del", "bob"]);
    assert_eq!(del.code(), 0, "{}", del.stderr());
    // Removing bob also closes his open connections: a request the client sends on the
    // kept-alive one as it closes fails without an answer, and is sent again on a new
    // one. Whatever reaches the daemon is refused; nothing is served.
    for attempt in 1.. {
        match web.bearer(Method::GET, "/api/list", &token).send().await {
            Ok(r) => {
                assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
                break;
            }
            Err(e) => assert!(attempt < 3, "no answer after {attempt} tries: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_downloads_etag_and_disposition() {
    let d = Daemon::start_with(&["alice"], None);
    let cli = alice(&d);
    let local = tempfile::tempdir().unwrap();
    let data = random_bytes(3 * CHUNK + 12_345, 41);
    let src = write_file(local.path(), "big.bin", &data);
    assert_eq!(cli.xfer(&["push", "-q", &src], "").code(), 0);
    // A client offering both gets HTTP/1.1 (xferd lists it first); h2 alone still works.
    let offers: [(&[&[u8]], Version); 3] = [
        (&[b"h2"], Version::HTTP_2),
        (&[b"http/1.1"], Version::HTTP_11),
        (&[b"h2", b"http/1.1"], Version::HTTP_11),
    ];
    for (alpn, version) in offers {
        let web = Web::with_alpn(&d, alpn);
        let (token, _) = web.session("alice").await;
        let get = |range: Option<&str>| {
            let mut r = web.bearer(Method::GET, "/api/file?path=big.bin", &token);
            if let Some(v) = range {
                r = r.header("range", v);
            }
            r.send()
        };
        let full = get(None).await.unwrap();
        assert_eq!(full.status(), StatusCode::OK);
        assert_eq!(full.version(), version, "offering {alpn:?}");
        let etag = full.headers()["etag"].to_str().unwrap().to_owned();
        assert_eq!(etag, format!("\"{}\"", blake3_hex(&data)));
        assert_eq!(full.headers()["accept-ranges"], "bytes");
        assert_eq!(full.headers()["content-type"], "application/octet-stream");
        let disp = full.headers()["content-disposition"].to_str().unwrap();
        assert!(disp.starts_with("attachment;"), "{disp}");
        assert_eq!(full.bytes().await.unwrap(), data);

        let (a, b) = (CHUNK - 100, 2 * CHUNK + 99);
        let part = get(Some(&format!("bytes={a}-{b}"))).await.unwrap();
        assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
        let range = part.headers()["content-range"].to_str().unwrap().to_owned();
        assert_eq!(range, format!("bytes {a}-{b}/{}", data.len()));
        assert_eq!(part.bytes().await.unwrap(), data[a..=b]);
        // The audit line of a range counts what it sent, not where it ended; over
        // HTTP/1.1 too, whose writer stops polling the body at its Content-Length.
        let tens = || {
            let lines = d.audit_events("download");
            lines
                .into_iter()
                .filter(|l| l.contains(" bytes=10 "))
                .collect::<Vec<_>>()
        };
        let before = tens().len();
        let tail = get(Some("bytes=-10")).await.unwrap();
        assert_eq!(tail.bytes().await.unwrap(), data[data.len() - 10..]);
        let line = tokio::task::block_in_place(|| {
            xfer_e2e::poll(DEADLINE, || tens().get(before).cloned())
        });
        let line =
            line.unwrap_or_else(|| panic!("no audit line for the 10-byte range over {version:?}"));
        assert!(line.contains("resumed=true"), "{line}");
        let beyond = get(Some(&format!("bytes={}-", data.len()))).await.unwrap();
        assert_eq!(beyond.status(), StatusCode::RANGE_NOT_SATISFIABLE);

        let cached = web
            .bearer(Method::GET, "/api/file?path=big.bin", &token)
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
        let stale = web
            .bearer(Method::GET, "/api/file?path=big.bin", &token)
            .header("range", "bytes=0-9")
            .header("if-range", "\"0000\"")
            .send()
            .await
            .unwrap();
        assert_eq!(
            stale.status(),
            StatusCode::OK,
            "If-Range of another version"
        );
        let fresh = web
            .bearer(Method::GET, "/api/file?path=big.bin", &token)
            .header("range", "bytes=0-9")
            .header("if-range", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(fresh.status(), StatusCode::PARTIAL_CONTENT);
        // Not an image: inline=1 still downloads as an attachment.
        let inline = web
            .bearer(Method::GET, "/api/file?path=big.bin&inline=1", &token)
            .send()
            .await
            .unwrap();
        let disp = inline.headers()["content-disposition"].to_str().unwrap();
        assert!(disp.starts_with("attachment;"), "{disp}");
        let thumb = web
            .bearer(Method::GET, "/api/thumb?path=big.bin", &token)
            .send()
            .await
            .unwrap();
        assert_eq!(
            code(thumb).await,
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "type_rejected".into())
        );
    }
}

pub(crate) fn png() -> Vec<u8> {
    // A valid 1x1 RGBA PNG.
    let hex = "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489\
               0000000d4944415478da636460f85f0f0002870180eb47ba920000000049454e44ae426082";
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_put_images_inline_and_thumbnails() {
    let d = Daemon::start_with(&["alice"], None);
    let web = Web::new(&d);
    let (token, _) = web.session("alice").await;
    let put = |path: &str, body: Vec<u8>| {
        web.bearer(Method::PUT, &format!("/api/file?path={}", q(path)), &token)
            .body(body)
            .send()
    };
    let r = put("dot.png", png()).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["blake3"], blake3_hex(&png()));
    let again = put("dot.png", b"other".to_vec()).await.unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let v: Value = again.json().await.unwrap();
    assert_eq!(v["error"]["code"], "conflict");
    assert_eq!(v["existing"]["blake3"], blake3_hex(&png()));
    let inline = web
        .bearer(Method::GET, "/api/file?path=dot.png&inline=1", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(inline.headers()["content-type"], "image/png");
    let disp = inline.headers()["content-disposition"].to_str().unwrap();
    assert!(disp.starts_with("inline;"), "{disp}");
    let thumb = web
        .bearer(Method::GET, "/api/thumb?path=dot.png", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(thumb.status(), StatusCode::OK);
    assert!(thumb.bytes().await.unwrap().starts_with(b"\x89PNG"));
    // An HTML file is never rendered by the browser.
    let html = b"<script>alert(1)</script>".to_vec();
    assert_eq!(
        put("x.html", html).await.unwrap().status(),
        StatusCode::CREATED
    );
    let r = web
        .bearer(Method::GET, "/api/file?path=x.html&inline=1", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    let mv = web
        .bearer(Method::POST, "/api/mv", &token)
        .json(&json!({ "from": "x.html", "to": "y.html" }))
        .send()
        .await
        .unwrap();
    assert_eq!(mv.status(), StatusCode::NO_CONTENT);
    let rm = web
        .bearer(Method::POST, "/api/rm", &token)
        .json(&json!({ "path": "y.html" }))
        .send()
        .await
        .unwrap();
    assert_eq!(rm.status(), StatusCode::NO_CONTENT);
    let list: Value = web
        .bearer(Method::GET, "/api/list?path=", &token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = list["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dot.png"]);
}

/// The CLI's confinement vectors (tests/tests/confinement.rs), through every API route.
fn vectors(outside: &Path) -> Vec<String> {
    let outside = outside.display().to_string();
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
        "/etc/passwd".into(),
        "sysetc/passwd".into(),
    ]
}

const CANARY: &str = "CANARY-outside-the-home-3f9a1c";
const BOB_SECRET: &str = "BOB-SECRET-do-not-leak-51d0aa";

fn tree(dirs: &[&Path]) -> Vec<(std::path::PathBuf, u64)> {
    let mut all = Vec::new();
    for dir in dirs {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let len = e.metadata().map(|m| m.len()).unwrap_or(0);
            all.push((e.path(), len));
        }
    }
    all.sort();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confinement_vectors_and_other_users_files_are_refused() {
    use std::os::unix::fs::symlink;
    let d = Daemon::start_with(&["alice", "bob"], None);
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(d.data_dir.join("canary"), CANARY).unwrap();
    std::fs::write(outside.path().join("canary"), CANARY).unwrap();
    std::fs::create_dir(outside.path().join("etc")).unwrap();
    std::fs::write(outside.path().join("etc/passwd"), CANARY).unwrap();
    let bob = Client::new();
    bob.login(&d, "bob", PASSWORD);
    let local = tempfile::tempdir().unwrap();
    let secret = write_file(local.path(), "secret.txt", BOB_SECRET.as_bytes());
    assert_eq!(bob.xfer(&["push", "-q", &secret], "").code(), 0);
    let files = d.files_dir("alice");
    std::fs::create_dir_all(files.join("a")).unwrap();
    symlink("../../..", files.join("up")).unwrap();
    symlink(outside.path(), files.join("out")).unwrap();
    symlink(outside.path().join("etc"), files.join("etc")).unwrap();
    symlink("/etc", files.join("sysetc")).unwrap();
    let watched = [
        d.data_dir.as_path(),
        outside.path(),
        &outside.path().join("etc"),
        &d.files_dir("bob"),
        &files.join("a"),
    ];
    let web = Web::new(&d);
    let (token, _) = web.session("alice").await;
    let before = tree(&watched);
    let mut refusals = 0;
    for v in vectors(outside.path()) {
        let qv = q(&v);
        let requests = [
            web.bearer(Method::GET, &format!("/api/list?path={qv}"), &token),
            web.bearer(Method::GET, &format!("/api/file?path={qv}"), &token),
            web.bearer(Method::GET, &format!("/api/thumb?path={qv}"), &token),
            web.bearer(Method::PUT, &format!("/api/file?path={qv}"), &token)
                .body("payload"),
            web.bearer(Method::POST, "/api/mkdir", &token)
                .json(&json!({ "path": v, "parents": true })),
            web.bearer(Method::POST, "/api/rm", &token)
                .json(&json!({ "path": v, "recursive": true })),
            web.bearer(Method::POST, "/api/mv", &token)
                .json(&json!({ "from": "a", "to": v })),
            web.bearer(Method::POST, "/api/mv", &token)
                .json(&json!({ "from": v, "to": "moved" })),
            web.bearer(Method::POST, "/api/uploads", &token)
                .json(&json!({ "path": v, "size": 7 })),
        ];
        for r in requests {
            let r = r.send().await.unwrap();
            let status = r.status();
            let body = r.text().await.unwrap();
            assert!(status.is_client_error(), "{v:?} answered {status}: {body}");
            assert!(
                !body.contains(CANARY) && !body.contains(BOB_SECRET) && !body.contains("root:")
            );
            refusals += 1;
        }
    }
    assert!(refusals > 200);
    assert_eq!(
        tree(&watched),
        before,
        "something outside alice's home changed"
    );
    assert!(!files.join("moved").exists());

    // Bob's files and uploads: unreachable by alice's session.
    for p in ["secret.txt", "../bob/secret.txt", "inbox/bob/secret.txt"] {
        let r = web
            .bearer(Method::GET, &format!("/api/file?path={}", q(p)), &token)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error());
        assert!(!r.text().await.unwrap().contains(BOB_SECRET));
    }
    let bob_web = Web::new(&d);
    let (bob_token, _) = bob_web.session("bob").await;
    let begun: Value = bob_web
        .bearer(Method::POST, "/api/uploads", &bob_token)
        .json(&json!({ "path": "mine.bin", "size": 10 }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = begun["id"].as_str().unwrap();
    let hijack = web
        .bearer(Method::PUT, &format!("/api/uploads/{id}/chunks/0"), &token)
        .header("x-xfer-blake3", blake3_hex(b"0123456789"))
        .body("0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(hijack).await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_web_passwords_throttle_the_cli_too() {
    let config = "[login]\nsource_burst = 3\nsource_refill_secs = 600\nuser_burst = 50\n";
    let d = Daemon::start_with(&["alice"], Some(config));
    let web = Web::new(&d);
    let mut throttled = false;
    for _ in 0..6 {
        let (status, _, body) = web.login("alice", "wrong password").await;
        match body["error"]["code"].as_str() {
            Some("auth_failed") => assert_eq!(status, StatusCode::UNAUTHORIZED),
            Some("throttled") => {
                assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
                throttled = true;
            }
            other => panic!("unexpected answer {status} {other:?}"),
        }
    }
    assert!(throttled, "the web login was never throttled");
    // The CLI, from the same address with the right password, is throttled too.
    let cli = Client::new();
    let target = format!("alice@{}", d.host_port());
    let out = cli.xfer(
        &[
            "login",
            &target,
            "--password-stdin",
            "--fingerprint",
            &d.fingerprint,
        ],
        &format!("{PASSWORD}\n"),
    );
    assert_ne!(out.code(), 0, "CLI login was not throttled");
    assert!(
        out.stderr().contains("too many failed logins"),
        "{}",
        out.stderr()
    );
}

/// Sends chunks `range` of `data` to upload `id`, four at a time in flight. Even chunks
/// carry the plain BLAKE3 of their bytes, odd ones the protocol's chunk digest: the
/// server takes either.
async fn send_chunks(web: &Web, token: &str, id: &str, data: &[u8], range: Range<usize>) {
    let indexes: Vec<usize> = range.collect();
    for group in indexes.chunks(4) {
        let mut inflight = Vec::new();
        for &index in group {
            let start = index * CHUNK;
            let chunk = data[start..(start + CHUNK).min(data.len())].to_vec();
            let digest = if index % 2 == 0 {
                blake3_hex(&chunk)
            } else {
                Digest::of_chunk(&chunk, start as u64, data.len() as u64)
                    .unwrap()
                    .to_string()
            };
            let r = web
                .bearer(
                    Method::PUT,
                    &format!("/api/uploads/{id}/chunks/{index}"),
                    token,
                )
                .header("x-xfer-blake3", digest)
                .body(chunk);
            inflight.push(tokio::spawn(r.send()));
        }
        for r in inflight {
            let r = r.await.unwrap().unwrap();
            let status = r.status();
            assert_eq!(
                status,
                StatusCode::NO_CONTENT,
                "{}",
                r.text().await.unwrap()
            );
        }
    }
}

pub(crate) async fn begin(web: &Web, token: &str, body: Value) -> (StatusCode, Value) {
    let r = web
        .bearer(Method::POST, "/api/uploads", token)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumable_upload_in_two_halves_resumes_and_verifies() {
    let d = Daemon::start_with(&["alice", "bob"], None);
    let cli = alice(&d);
    let data = random_bytes(8 * CHUNK + 777, 42);
    let chunks = data.len().div_ceil(CHUNK);
    let head = base64_head(&data);
    let web = Web::new(&d);
    let (token, _) = web.session("alice").await;
    let request = json!({ "path": "up/big.bin", "size": data.len(), "head": head });
    let mkdir = web
        .bearer(Method::POST, "/api/mkdir", &token)
        .json(&json!({ "path": "up" }))
        .send()
        .await
        .unwrap();
    assert_eq!(mkdir.status(), StatusCode::CREATED);
    let (status, first) = begin(&web, &token, request.clone()).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["resumed_from"], 0);
    assert_eq!(first["chunk_size"], CHUNK as u64);
    let id = first["id"].as_str().unwrap();
    send_chunks(&web, &token, id, &data, 0..chunks / 2).await;
    // A chunk that does not match its digest is refused and not kept.
    let bad = web
        .bearer(
            Method::PUT,
            &format!("/api/uploads/{id}/chunks/{}", chunks / 2),
            &token,
        )
        .header("x-xfer-blake3", blake3_hex(b"something else"))
        .body(data[chunks / 2 * CHUNK..(chunks / 2 + 1) * CHUNK].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(bad).await,
        (StatusCode::UNPROCESSABLE_ENTITY, "checksum_mismatch".into())
    );
    // The browser-started partial shows in `xfer ls --partial`.
    let held = cli.xfer(&["ls", "--partial", "--json", "up"], "").stdout();
    assert!(
        held.contains("big.bin") && held.contains("partial"),
        "{held}"
    );

    // A reload: a fresh POST for the same path and size resumes.
    let (status, second) = begin(&web, &token, request).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let resumed = second["resumed_from"].as_u64().unwrap();
    assert_eq!(resumed, (chunks / 2 * CHUNK) as u64, "{second}");
    assert_eq!(second["chunks_held"], (chunks / 2) as u64);
    let id2 = second["id"].as_str().unwrap();
    assert_ne!(id, id2);
    let manifest: Value = web
        .bearer(
            Method::GET,
            &format!("/api/uploads/{id2}/manifest?first=0&count={chunks}"),
            &token,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let digests = manifest["digests"].as_array().unwrap();
    assert_eq!(digests.len(), chunks);
    for (i, d) in digests.iter().enumerate() {
        let want = (i < chunks / 2).then(|| {
            let start = i * CHUNK;
            Digest::of_chunk(&data[start..start + CHUNK], start as u64, data.len() as u64)
                .unwrap()
                .to_string()
        });
        assert_eq!(d.as_str().map(str::to_owned), want, "chunk {i}");
    }
    send_chunks(&web, &token, id2, &data, chunks / 2..chunks).await;
    let wrong = web
        .bearer(Method::POST, &format!("/api/uploads/{id2}/commit"), &token)
        .json(&json!({ "blake3": blake3_hex(b"not the file") }))
        .send()
        .await
        .unwrap();
    assert_eq!(code(wrong).await.1, "checksum_mismatch");
    // The failed commit closed the upload; reopen (everything is held) and commit.
    let (_, third) = begin(
        &web,
        &token,
        json!({ "path": "up/big.bin", "size": data.len(), "head": base64_head(&data) }),
    )
    .await;
    assert_eq!(third["chunks_held"], chunks as u64, "{third}");
    let id3 = third["id"].as_str().unwrap();
    let done = web
        .bearer(Method::POST, &format!("/api/uploads/{id3}/commit"), &token)
        .json(&json!({ "blake3": blake3_hex(&data) }))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    let done: Value = done.json().await.unwrap();
    assert_eq!(done["blake3"], blake3_hex(&data));
    let stored = std::fs::read(d.files_dir("alice").join("up/big.bin")).unwrap();
    assert_eq!(blake3_hex(&stored), blake3_hex(&data));
    let audit = d.audit_events("upload");
    assert!(
        audit
            .iter()
            .any(|l| l.contains("resumed_from=") && !l.contains("resumed_from=0")),
        "no resumed upload in the audit log: {audit:?}"
    );

    // A send to bob's inbox, as `xfer send` does.
    let note = b"hello bob".to_vec();
    let (status, sent) = begin(
        &web,
        &token,
        json!({ "to": "bob", "name": "note.txt", "size": note.len() }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    let id = sent["id"].as_str().unwrap();
    send_chunks(&web, &token, id, &note, 0..1).await;
    let done = web
        .bearer(Method::POST, &format!("/api/uploads/{id}/commit"), &token)
        .json(&json!({ "blake3": blake3_hex(&note) }))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    let inbox = d.files_dir("bob").join("inbox/alice/note.txt");
    assert_eq!(std::fs::read(inbox).unwrap(), note);
    assert!(!d.audit_events("send").is_empty());
}

pub(crate) fn base64_head(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let head = &data[..data.len().min(510)];
    let mut out = String::new();
    for c in head.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= c.len() {
                out.push(T[(n >> shift) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_and_type_policy_are_refused_with_their_codes() {
    let config = "[storage]\nquota_bytes = 3000000\n\n[[storage.type_rules]]\ndir = \"images\"\naccept = [\"image/png\"]\n";
    let d = Daemon::start_with(&["alice"], Some(config));
    let web = Web::new(&d);
    let (token, _) = web.session("alice").await;
    let (status, body) = begin(
        &web,
        &token,
        json!({ "path": "big.bin", "size": 4_000_000 }),
    )
    .await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    assert_eq!(body["error"]["code"], "quota_exceeded");
    // A single PUT is admitted by the bytes it carried, whatever it declared.
    let r = web
        .bearer(Method::PUT, "/api/file?path=big.bin", &token)
        .body(vec![7u8; 3_500_000])
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(r).await,
        (StatusCode::INSUFFICIENT_STORAGE, "quota_exceeded".into())
    );
    let mkdir = web
        .bearer(Method::POST, "/api/mkdir", &token)
        .json(&json!({ "path": "images" }))
        .send()
        .await
        .unwrap();
    assert_eq!(mkdir.status(), StatusCode::CREATED);
    let text = b"just some text, not a picture".to_vec();
    let r = web
        .bearer(Method::PUT, "/api/file?path=images/a.png", &token)
        .body(text.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(r).await,
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "type_rejected".into())
    );
    let (status, body) = begin(
        &web,
        &token,
        json!({ "path": "images/b.png", "size": text.len(), "head": base64_head(&text) }),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
    assert_eq!(body["error"]["code"], "type_rejected");
    assert!(!d.files_dir("alice").join("big.bin").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_would_eat_the_free_space_reserve_is_refused_with_no_space() {
    // A reserve larger than any disk: every upload would eat into it.
    let config = "[storage]\nmin_free_bytes = 1000000000000000000\n";
    let d = Daemon::start_with(&["alice", "bob"], Some(config));
    let web = Web::new(&d);
    let (token, _) = web.session("alice").await;
    let data = random_bytes(3 * CHUNK + 5, 3);
    for req in [
        json!({ "path": "big.bin", "size": data.len(), "head": base64_head(&data) }),
        json!({ "to": "bob", "name": "big.bin", "size": data.len(), "head": base64_head(&data) }),
    ] {
        let (status, body) = begin(&web, &token, req.clone()).await;
        assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{req}: {body}");
        assert_eq!(body["error"]["code"], "no_space", "{req}: {body}");
        assert_eq!(
            body["error"]["message"], "server out of space",
            "{req}: {body}"
        );
    }
    let r = web
        .bearer(Method::PUT, "/api/file?path=small.bin", &token)
        .body(vec![1u8; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(r).await,
        (StatusCode::INSUFFICIENT_STORAGE, "no_space".into())
    );
    // The CLI is refused the same way, before any data flows.
    let a = alice(&d);
    let src = tempfile::TempDir::new().unwrap();
    let path = write_file(src.path(), "big.bin", &data);
    let out = a.xfer(&["push", &path], "");
    assert_eq!(out.code(), 10, "{}", out.stderr());
    assert!(
        out.stderr().contains("server out of space"),
        "{}",
        out.stderr()
    );
    // Nothing was stored or kept partial by anyone.
    for user in ["alice", "bob"] {
        assert!(d.partial_files(user).is_empty(), "{user}'s partials");
        let stored: Vec<_> = std::fs::read_dir(d.files_dir(user))
            .map(|r| r.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            stored.iter().all(|n| n == "inbox"),
            "{user}'s files: {stored:?}"
        );
    }
}

/// The fenced `sh` blocks of docs/HTTP.md, run in order by bash against a real xferd,
/// with `XFER` (the server's URL), `TOKEN` (from `xfer token`) and `cert.pem` (its
/// certificate) set as the doc says; every curl there uses --fail, so a wrong example
/// fails this test.
#[test]
fn the_curl_examples_of_docs_http_md_run() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/HTTP.md"))
            .unwrap();
    let mut script = String::from("set -euo pipefail\n");
    let mut in_block = false;
    let mut blocks = 0;
    for line in doc.lines() {
        if in_block {
            if line.starts_with("```") {
                in_block = false;
            } else {
                script.push_str(line);
                script.push('\n');
            }
        } else if line.trim() == "```sh" {
            in_block = true;
            blocks += 1;
        }
    }
    assert!(blocks >= 5, "docs/HTTP.md has only {blocks} sh blocks");
    assert!(script.contains("curl"));
    let d = Daemon::start_with(&["alice"], None);
    let cli = alice(&d);
    let token = cli.xfer(&["token"], "").stdout().trim().to_owned();
    let work = tempfile::tempdir().unwrap();
    std::fs::copy(
        d.data_dir.join("tls/cert.pem"),
        work.path().join("cert.pem"),
    )
    .unwrap();
    std::fs::write(
        work.path().join("report.pdf"),
        random_bytes(2 * CHUNK + 5, 9),
    )
    .unwrap();
    std::fs::write(work.path().join("notes.txt"), "notes\n").unwrap();
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(work.path())
        .env("XFER", format!("https://localhost:{}", d.addr.port()))
        .env("TOKEN", &token)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docs/HTTP.md examples failed:\n{}\n{}\n--- script ---\n{script}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stored = d.files_dir("alice").join("docs/report.pdf");
    assert_eq!(
        blake3_hex(&std::fs::read(stored).unwrap()),
        blake3_hex(&std::fs::read(work.path().join("report.pdf")).unwrap())
    );
}

/// A modification time the store cannot set is refused before anything is written (not
/// after a commit, which would leave a file in place with no audit line).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_range_modified_time_is_refused_before_anything_is_stored() {
    let d = Daemon::start_with(&["alice"], None);
    let web = Web::new(&d);
    let (token, _) = web.session("alice").await;
    let huge = "9300000000000000000";
    let r = web
        .bearer(
            Method::PUT,
            &format!("/api/file?path=t.txt&modified={huge}"),
            &token,
        )
        .body(b"hello".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(r).await,
        (StatusCode::BAD_REQUEST, "bad_request".into())
    );
    let r = web
        .bearer(Method::POST, "/api/uploads", &token)
        .json(&json!({ "path": "u.bin", "size": 5, "modified": 9_300_000_000_000_000_000u64 }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(r).await,
        (StatusCode::BAD_REQUEST, "bad_request".into())
    );
    assert!(!d.files_dir("alice").join("t.txt").exists());
    assert!(d.audit_events("upload").is_empty());
    // A time in range is kept.
    let r = web
        .bearer(
            Method::PUT,
            "/api/file?path=t.txt&modified=1400000000",
            &token,
        )
        .body(b"hello".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let mtime = std::fs::metadata(d.files_dir("alice").join("t.txt"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(
        mtime
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        1_400_000_000
    );
    assert_eq!(d.audit_events("upload").len(), 1);
}
