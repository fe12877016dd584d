//! The web app in a real browser: Debian's `chromium` driven over WebDriver
//! (`chromedriver`, fantoccini), headless, against the real `xferd` on 127.0.0.1 with its
//! self-signed certificate. Sign-in, BLAKE3 in the page (WebAssembly SIMD, and the
//! JavaScript fallback) against the official vectors and the Rust crate, a 50 MiB upload
//! cut at about 40 % by a page reload and finished by picking the file again (the audit
//! shows where it resumed), the download compared byte for byte, chat both ways with
//! `xfer chat`, hostile names and lines rendered as text, and screenshots of both views
//! under `target/web-artifacts/`.
//!
//! Without chromium and chromedriver the tests are skipped, unless XFER_REQUIRE_INTEROP=1
//! (CI) makes that a failure. The browser tests take one lock: one browser at a time.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::wd::TimeoutConfiguration;
use fantoccini::{Client as Web, ClientBuilder, Locator};
use serde_json::{Value, json};
use tempfile::TempDir;
use xfer_e2e::{
    Client, DEADLINE, Daemon, PASSWORD, audit_u64, bin, blake3_hex, poll, random_bytes,
};

/// A browser may take long on a loaded 2-core machine: page loads, a 50 MiB upload.
pub(crate) const BROWSER_DEADLINE: Duration = Duration::from_secs(120);

static ONE_BROWSER: Mutex<()> = Mutex::new(());

/// chromedriver on a free port, a headless chromium session through it, and the
/// download directory. Dropping it ends the session's processes.
pub(crate) struct Browser {
    pub(crate) web: Web,
    driver: Child,
    pub(crate) downloads: TempDir,
    _profile: TempDir,
}

fn tool(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

impl Browser {
    /// `None` (the test is skipped) when chromium or chromedriver is missing.
    pub(crate) async fn start() -> Option<Browser> {
        let (Some(driver_bin), Some(_)) = (tool("chromedriver"), tool("chromium")) else {
            assert!(
                std::env::var("XFER_REQUIRE_INTEROP").as_deref() != Ok("1"),
                "chromium and chromedriver are required (apt-get install chromium chromium-driver)"
            );
            eprintln!("skipped: chromium or chromedriver not installed");
            return None;
        };
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            l.local_addr().expect("addr").port()
        };
        let mut driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        // chromedriver says when it listens; the rest of what it prints is drained.
        let out = BufReader::new(driver.stdout.take().expect("chromedriver's stdout"));
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut ready_tx = Some(ready_tx);
            for line in out.lines() {
                let Ok(line) = line else { break };
                if line.contains("started successfully")
                    && let Some(tx) = ready_tx.take()
                {
                    let _ = tx.send(());
                }
            }
        });
        tokio::time::timeout(BROWSER_DEADLINE, ready)
            .await
            .expect("chromedriver listens in time")
            .expect("chromedriver said it started");
        let profile = TempDir::new().expect("profile dir");
        let downloads = TempDir::new().expect("download dir");
        let caps = json!({
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,900", format!("--user-data-dir={}", profile.path().display())],
                "prefs": {
                    "download.default_directory": downloads.path().display().to_string(),
                    "download.prompt_for_download": false,
                    // Notifications allowed, as a user who said yes once.
                    "profile.default_content_setting_values.notifications": 1,
                },
            },
        });
        let caps = match caps {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        let url = format!("http://127.0.0.1:{port}");
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let web = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("no WebDriver session: {e}"));
        // `until` waits in the page, for at most this long.
        web.update_timeouts(TimeoutConfiguration::new(
            Some(BROWSER_DEADLINE),
            None,
            None,
        ))
        .await
        .expect("WebDriver timeouts");
        Some(Browser {
            web,
            driver,
            downloads,
            _profile: profile,
        })
    }

    pub(crate) async fn close(mut self) {
        let _ = self.web.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }

    pub(crate) async fn find(&self, css: &str) -> Element {
        self.web
            .wait()
            .at_most(BROWSER_DEADLINE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} in the page: {e}"))
    }

    pub(crate) async fn js(&self, script: &str) -> Value {
        self.web.execute(script, vec![]).await.expect("script runs")
    }

    /// Waits until `script` (an expression) is truthy in the page; its value. The page
    /// checks it on each animation frame and answers once it holds (the script timeout
    /// is [`BROWSER_DEADLINE`]).
    pub(crate) async fn until(&self, what: &str, script: &str) -> Value {
        let body = format!(
            "const done = arguments[arguments.length - 1];
             const check = () => {{
               const v = ({script});
               if (v) done(v); else requestAnimationFrame(check);
             }};
             check();"
        );
        self.web
            .execute_async(&body, vec![])
            .await
            .unwrap_or_else(|e| panic!("timed out waiting for {what}: {e}"))
    }

    pub(crate) async fn sign_in(&self, d: &Daemon, user: &str) {
        self.sign_in_at(&d.host_port(), user).await;
    }

    /// Signs in on the page at `host_port` (the daemon, or a relay to it).
    pub(crate) async fn sign_in_at(&self, host_port: &str, user: &str) {
        self.web
            .goto(&format!("https://{host_port}/"))
            .await
            .expect("page loads");
        self.submit_sign_in(user, PASSWORD).await;
        self.until(
            "signed in",
            &format!("document.getElementById('whoami').textContent === '{user}'"),
        )
        .await;
    }

    /// Fills in the sign-in form (whatever it held) and submits it, once it shows.
    pub(crate) async fn submit_sign_in(&self, user: &str, password: &str) {
        self.until(
            "the sign-in form",
            "!document.getElementById('signin').hidden",
        )
        .await;
        for (field, text) in [("#signin-user", user), ("#signin-password", password)] {
            let input = self.find(field).await;
            input.clear().await.expect("clear a field");
            input.send_keys(text).await.expect("type in a field");
        }
        self.find("#signin-submit")
            .await
            .click()
            .await
            .expect("submit");
    }

    /// Clicks the tab `files` or `chat` and waits until its view shows.
    pub(crate) async fn tab(&self, view: &str) {
        self.find(&format!("#tab-{view}"))
            .await
            .click()
            .await
            .expect("a tab");
        self.until(
            &format!("the {view} view"),
            &format!("!document.getElementById('{view}').hidden"),
        )
        .await;
    }

    /// Joins `channel` from the chat view's form and waits until it is open.
    pub(crate) async fn join(&self, channel: &str) {
        self.tab("chat").await;
        self.find("#join-name")
            .await
            .send_keys(channel)
            .await
            .expect("type channel");
        self.find("#join-form button")
            .await
            .click()
            .await
            .expect("join");
        self.until(
            &format!("{channel} open"),
            &format!(
                "document.getElementById('conv-title').textContent === {}",
                json!(channel)
            ),
        )
        .await;
    }

    /// Clicks the element `css` with the page's own `click()`: for elements the page
    /// rebuilds as it updates, which a WebDriver click could find stale.
    pub(crate) async fn click_js(&self, css: &str) {
        let clicked = self
            .js(&format!(
                "const e = document.querySelector({}); if (e) setTimeout(() => e.click()); return !!e;",
                json!(css)
            ))
            .await;
        assert_eq!(clicked, json!(true), "no {css} to click");
    }

    /// Waits until the upload list's entry for `label` (a path, or `name → user`) is
    /// done; fails with its status text if it ends any other way.
    pub(crate) async fn upload_done(&self, label: &str) {
        let sel = json!(format!("#upload-list li[data-path={}]", json!(label)));
        let state = self
            .until(
                &format!("the upload of {label}"),
                &format!(
                    "(() => {{ const li = document.querySelector({sel}); \
                     return li && ['done', 'failed', 'conflict'].includes(li.dataset.state) && li.dataset.state; }})()"
                ),
            )
            .await;
        if state != json!("done") {
            let status = self
                .js(&format!(
                    "return document.querySelector({sel}).textContent;"
                ))
                .await;
            panic!("{label} ended {state}: {status}");
        }
    }

    /// Picks `paths` in the file input `css` (chromedriver takes one path per line; a
    /// directory for a `webkitdirectory` input).
    pub(crate) async fn pick(&self, css: &str, paths: &[&Path]) {
        let keys: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        self.find(css)
            .await
            .send_keys(&keys.join("\n"))
            .await
            .unwrap_or_else(|e| panic!("pick {keys:?} in {css}: {e}"));
    }

    /// The text of the `prompt()` or `confirm()` the page opens, once it is open (a page
    /// may ask only after a request's answer).
    /// WebDriver has no event for a dialog opening (a script waiting in the page is cut
    /// off by it), so this asks with the test kit's `poll`.
    pub(crate) async fn dialog(&self) -> String {
        let rt = tokio::runtime::Handle::current();
        tokio::task::block_in_place(|| {
            poll(BROWSER_DEADLINE, || {
                rt.block_on(self.web.get_alert_text()).ok()
            })
        })
        .expect("no dialog opened")
    }

    /// Answers the `prompt()` or `confirm()` the page has open: `Some(text)` types it and
    /// accepts, `None` cancels.
    pub(crate) async fn answer(&self, text: Option<&str>) {
        match text {
            Some(t) => {
                self.web
                    .send_alert_text(t)
                    .await
                    .expect("type in the prompt");
                self.web.accept_alert().await.expect("accept the prompt");
            }
            None => self.web.dismiss_alert().await.expect("dismiss the prompt"),
        }
    }

    /// No `alert()` ran (WebDriver reports an open dialog).
    pub(crate) async fn assert_no_alert(&self) {
        if let Ok(text) = self.web.get_alert_text().await {
            panic!("the page opened an alert: {text}");
        }
    }

    pub(crate) async fn screenshot(&self, name: &str) {
        let png = self.web.screenshot().await.expect("screenshot");
        let dir = bin("xfer")
            .parent()
            .and_then(Path::parent)
            .expect("target/")
            .join("web-artifacts");
        std::fs::create_dir_all(&dir).expect("artifact dir");
        let path = dir.join(name);
        std::fs::write(&path, png).expect("write screenshot");
        println!("screenshot: {}", path.display());
    }
}

/// Runs a browser scenario on its own runtime, one browser at a time.
pub(crate) fn browse<F: std::future::Future<Output = ()>>(f: impl FnOnce() -> F) {
    let _one = ONE_BROWSER.lock().unwrap_or_else(|p| p.into_inner());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f());
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn blake3_in_the_page_matches_the_vectors_and_the_rust_crate() {
    browse(|| async {
        let d = Daemon::start_with(&["alice"], None);
        let Some(b) = Browser::start().await else {
            return;
        };
        b.web
            .goto(&format!(
                "https://{}/assets/selftest.html?speed=16",
                d.host_port()
            ))
            .await
            .expect("self-test page loads");
        b.until(
            "the self-test",
            "document.getElementById('result').dataset.done",
        )
        .await;
        let text = b.find("#result").await.text().await.expect("result text");
        let r: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(r["ok"], true, "{text}");
        // The path the workers choose on their own is WebAssembly SIMD (a silent fallback
        // to JavaScript fails here); the forced JavaScript path is checked the same way.
        for (path, engine) in [("chosen", "wasm-simd"), ("js", "js")] {
            let p = &r[path];
            assert_eq!(p["page"], engine, "{path}: {text}");
            assert_eq!(p["workers"], engine, "{path}: {text}");
            assert_eq!(p["vectors"]["passed"], 22, "{path}: {text}");
            assert_eq!(p["in_workers"]["passed"], 22, "{path}: {text}");
            // Whole-file digests joined from 1 MiB chunks' chaining values equal the crate's.
            let joined = p["joined"].as_object().expect("joined digests");
            assert_eq!(joined.len(), 6, "{path}: {text}");
            for (len, hex) in joined {
                let len: usize = len.parse().expect("a length");
                assert_eq!(
                    hex.as_str(),
                    Some(blake3::hash(&pattern(len)).to_hex().as_str()),
                    "{path}: {len} bytes"
                );
            }
            println!(
                "BLAKE3 in headless chromium, {engine}: {} (stage times {})",
                p["speed"], p["ms"]
            );
        }
        b.close().await;
    });
}

#[test]
fn a_browser_upload_cut_by_a_reload_resumes_verified_and_downloads_the_same() {
    browse(|| async {
        let d = Daemon::start_with(&["alice"], None);
        let Some(b) = Browser::start().await else {
            return;
        };
        b.sign_in(&d, "alice").await;
        b.find("#entries").await;
        b.screenshot("signed-in.png").await;

        let src = TempDir::new().expect("source dir");
        let data = random_bytes(50 << 20, 12);
        let path = src.path().join("big.bin");
        std::fs::write(&path, &data).expect("write source");
        let want = blake3_hex(&data);

        // Pause at 40 % (what the page's Pause button does), then reload: requests in
        // flight are cut, the page forgets everything.
        b.js("sessionStorage.setItem('xfer.pauseAt', '0.4'); return null;")
            .await;
        b.find("#pick-files")
            .await
            .send_keys(&path.display().to_string())
            .await
            .expect("pick");
        b.until(
            "the pause at 40 %",
            "document.querySelector('#upload-list li[data-state=paused]')",
        )
        .await;
        // Signing out now would stop it: the page asks, and cancelling keeps the session.
        b.find("#logout").await.click().await.expect("sign out");
        assert_eq!(
            b.dialog().await,
            "Uploads in progress will stop; pick the same files again later to resume them. Sign out?"
        );
        b.answer(None).await;
        assert_eq!(
            b.js("return document.getElementById('whoami').textContent;")
                .await,
            json!("alice")
        );
        b.web.refresh().await.expect("reload");
        b.until(
            "signed in again",
            "document.getElementById('whoami').textContent === 'alice'",
        )
        .await;
        // The listing shows what the server holds as an upload in progress, not a file.
        let partial = b
            .until(
                "the partial in the listing",
                "document.querySelector('#entries tr.partial[data-name=\"big.bin\"]')?.textContent",
            )
            .await;
        let partial = partial.as_str().unwrap();
        assert!(
            partial.contains("partial: ")
                && partial.contains("of 50 MiB held")
                && partial.contains("(pick the file again to resume)"),
            "{partial}"
        );
        assert_eq!(
            b.js(
                "return document.querySelectorAll('#entries tr[data-name=\"big.bin\"] a').length;"
            )
            .await,
            json!(0),
            "no download link for a partial"
        );

        // Picking the same file again resumes and finishes.
        b.find("#pick-files")
            .await
            .send_keys(&path.display().to_string())
            .await
            .expect("pick again");
        b.upload_done("big.bin").await;
        let status = b
            .js("return document.querySelector('#upload-list li').textContent;")
            .await;
        let page_digest = b
            .js("return document.querySelector('#upload-list li').dataset.blake3;")
            .await;
        assert_eq!(page_digest, json!(want), "{status}");
        let engine = b
            .js("return document.querySelector('#upload-list li').dataset.engine;")
            .await;
        assert_eq!(engine, json!("wasm-simd"), "the workers' BLAKE3: {status}");

        let stored = std::fs::read(d.files_dir("alice").join("big.bin")).expect("stored file");
        assert_eq!(blake3_hex(&stored), want, "the stored file's BLAKE3");
        let line = poll(DEADLINE, || {
            d.audit_events("upload")
                .into_iter()
                .find(|l| l.contains("big.bin"))
        })
        .expect("an upload audit line");
        let resumed = audit_u64(&line, "resumed_from").expect("resumed_from= in the audit line");
        assert!(
            resumed > 0 && resumed < data.len() as u64,
            "resumed from {resumed}: {line}"
        );

        // The listing shows it; its link downloads the same bytes.
        let link = b.find("#entries tr[data-name='big.bin'] a.file").await;
        b.screenshot("files.png").await;
        link.click().await.expect("download click");
        let got = b.downloads.path().join("big.bin");
        poll(BROWSER_DEADLINE, || {
            (std::fs::metadata(&got).ok()?.len() == data.len() as u64).then_some(())
        })
        .unwrap_or_else(|| panic!("no download at {}", got.display()));
        assert_eq!(blake3_hex(&std::fs::read(&got).expect("downloaded")), want);

        // A hostile file name is shown as text: no element made from it, no alert.
        let evil = "<img src=x onerror=alert(1)>";
        let c = Client::new();
        c.login(&d, "alice", PASSWORD);
        let evil_src = src.path().join("evil.txt");
        std::fs::write(&evil_src, b"x").expect("write");
        let out = c.xfer(&["push", &evil_src.display().to_string(), evil], "");
        assert_eq!(out.code(), 0, "{}", out.stderr());
        b.web.refresh().await.expect("reload");
        b.until(
            "the hostile name as text",
            &format!("[...document.querySelectorAll('#entries td.name')].some(td => td.textContent.includes({}))",
                json!(evil)),
        )
        .await;
        assert_eq!(
            b.js("return document.querySelectorAll('img[src=\"x\"]').length;")
                .await,
            json!(0)
        );
        b.assert_no_alert().await;
        b.close().await;
    });
}

#[test]
fn chat_lines_flow_between_the_page_and_xfer_chat() {
    browse(|| async {
        let d = Daemon::start_with(&["alice", "bob"], None);
        let bob = Client::new();
        bob.login(&d, "bob", PASSWORD);
        let follower = bob.follow(&["#lab", "--json"]);
        let Some(b) = Browser::start().await else {
            return;
        };
        b.sign_in(&d, "alice").await;
        b.join("#lab").await;

        // Page → CLI, with markup that must stay text.
        let line = "<script>alert(1)</script> hello from the page";
        b.find("#say").await.send_keys(line).await.expect("type");
        b.find("#composer button[type=submit]")
            .await
            .click()
            .await
            .expect("send");
        let out = follower
            .wait_stdout(BROWSER_DEADLINE, |s| s.contains("hello from the page"))
            .unwrap_or_else(|| {
                panic!(
                    "xfer chat --follow did not get it: {}",
                    follower.stderr_so_far()
                )
            });
        let v: Value = serde_json::from_str(
            out.lines()
                .find(|l| l.contains("hello from the page"))
                .unwrap(),
        )
        .expect("one JSON object per line");
        assert_eq!(v["from"], "alice");
        assert_eq!(v["text"], line);

        // CLI → page.
        let said = bob.xfer(&["chat", "#lab", "--say", "hello from the cli"], "");
        assert_eq!(said.code(), 0, "{}", said.stderr());
        b.until(
            "the CLI's line in the page",
            "[...document.querySelectorAll('#messages li')].some(li => li.textContent.includes('hello from the cli'))",
        )
        .await;
        let shown = b
            .until(
                "the hostile line as text",
                "[...document.querySelectorAll('#messages .text')].map(e => e.textContent).find(t => t.includes('hello from the page'))",
            )
            .await;
        assert_eq!(shown, json!(line));
        assert_eq!(
            b.js("return document.querySelectorAll('#messages script').length;")
                .await,
            json!(0)
        );
        b.assert_no_alert().await;
        b.screenshot("chat.png").await;
        b.close().await;
    });
}
