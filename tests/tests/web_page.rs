//! The web app's features driven in a real browser (headless chromium over WebDriver,
//! the same harness as `web_browser`): the sign-in page's fingerprint and its refusal,
//! new folder, rename and delete from the listing (the page's prompts answered), folder
//! uploads from the picker and files dropped on the page, the image viewer, progress with
//! rate and time left per file and in total, a phone-sized window, and the chat view's
//! "send a file to a person", file notices, history paging, presence, unread counts, the
//! "new since you left" mark and notifications. Every check reads the store on disk or
//! the CLI where there is one, not only the page.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use serde_json::{Value, json};
use tempfile::TempDir;
use xfer_e2e::{Client, DEADLINE, Daemon, PASSWORD, blake3_hex, poll, random_bytes, write_file};

use super::web_api::png;
use super::web_browser::{BROWSER_DEADLINE, Browser, browse};

/// Waits until the files view shows an error; its text.
async fn files_error(b: &Browser) -> Value {
    b.until(
        "the files view's error",
        "document.getElementById('files-error').textContent",
    )
    .await
}

/// Pushes each `(local name, bytes, remote path)` with `xfer push` as `c`.
fn push_all(c: &Client, files: &[(&str, &[u8], &str)]) {
    let src = TempDir::new().expect("source dir");
    for (name, data, remote) in files {
        let p = write_file(src.path(), name, data);
        let out = c.xfer(&["push", "-q", &p, remote], "");
        assert_eq!(out.code(), 0, "push {remote}: {}", out.stderr());
    }
}

/// Waits until the listing shows a row named `name`.
async fn row_shown(b: &Browser, name: &str) {
    b.find(&format!("#entries tr[data-name={}]", json!(name)))
        .await;
}

/// Waits until the listing has no row named `name`.
async fn row_gone(b: &Browser, name: &str) {
    b.until(
        &format!("{name} gone from the listing"),
        &format!(
            "!document.querySelector({})",
            json!(format!("#entries tr[data-name={}]", json!(name)))
        ),
    )
    .await;
}

/// Clicks the button `label` in the row named `name`; the text of the `prompt()` or
/// `confirm()` it opens. The click is the page's own (`HTMLElement.click()` from a
/// timer, so the script returns before the dialog blocks the page): a listing reloaded
/// under the test (after an action, or an upload's refresh) cannot make it miss.
async fn row_button(b: &Browser, name: &str, label: &str) -> String {
    let clicked = b
        .js(&format!(
            "const tr = document.querySelector({});
             const btn = tr && [...tr.querySelectorAll('button')].find(x => x.textContent === {});
             if (btn) setTimeout(() => btn.click());
             return !!btn;",
            json!(format!("#entries tr[data-name={}]", json!(name))),
            json!(label)
        ))
        .await;
    assert_eq!(clicked, json!(true), "no {label} button for {name}");
    b.dialog().await
}

#[test]
fn the_sign_in_page_shows_the_fingerprint_and_refuses_a_wrong_password() {
    browse(|| async {
        let d = Daemon::start_with(&["alice"], None);
        let Some(b) = Browser::start().await else {
            return;
        };
        b.web
            .goto(&format!("https://{}/", d.host_port()))
            .await
            .expect("page loads");
        let shown = b
            .until(
                "the fingerprint",
                "(() => { const t = document.getElementById('fingerprint').textContent; return t !== '…' && t; })()",
            )
            .await;
        assert_eq!(shown, json!(d.fingerprint), "the page's fingerprint");
        let status = d.admin(&["status"]);
        assert!(
            status.stdout().contains(&d.fingerprint),
            "xferd status shows the same: {}",
            status.stdout()
        );

        b.submit_sign_in("alice", "not the password").await;
        let said = b
            .until(
                "the refusal",
                "document.getElementById('signin-error').textContent",
            )
            .await;
        assert_eq!(said, json!("Wrong user or password."));
        assert_eq!(
            b.js("return document.getElementById('top').hidden;").await,
            json!(true),
            "still signed out"
        );
        // Audited like the CLI's wrong passwords.
        poll(DEADLINE, || {
            d.audit_events("login")
                .into_iter()
                .find(|l| l.contains("outcome=\"failure\"") && l.contains("user=\"alice\""))
        })
        .unwrap_or_else(|| panic!("no audited refusal: {:?}", d.audit_lines()));
        b.sign_in(&d, "alice").await;
        b.close().await;
    });
}

#[test]
fn folders_are_made_renamed_deleted_and_uploaded_from_the_page() {
    browse(|| async {
        let d = Daemon::start_with(&["alice"], None);
        let Some(b) = Browser::start().await else {
            return;
        };
        let home = d.files_dir("alice");
        b.sign_in(&d, "alice").await;

        // New folder: the page prompts for the name.
        b.find("#mkdir").await.click().await.expect("New folder");
        b.answer(Some("docs")).await;
        row_shown(&b, "docs").await;
        assert!(home.join("docs").is_dir(), "docs made on disk");
        // Cancelling the prompt makes nothing.
        b.find("#mkdir").await.click().await.expect("New folder");
        b.answer(None).await;

        // Into it by its link; the breadcrumbs follow.
        b.find("#entries tr[data-name=docs] a.dir")
            .await
            .click()
            .await
            .expect("open docs");
        b.until(
            "the docs breadcrumb",
            "document.querySelector('#crumbs span')?.textContent === 'docs'",
        )
        .await;

        // A folder from the picker keeps its tree under the current folder.
        let src = TempDir::new().expect("source dir");
        let tree = src.path().join("tree");
        let files = [
            ("tree/a.txt", random_bytes(1000, 1)),
            ("tree/sub/b.bin", random_bytes(3 << 20, 2)),
            ("tree/sub/deeper/c.bin", random_bytes(70_000, 3)),
        ];
        for (rel, data) in &files {
            let p = src.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).expect("mkdir");
            std::fs::write(&p, data).expect("write");
        }
        b.pick("#pick-folder", &[&tree]).await;
        for (rel, data) in &files {
            b.upload_done(&format!("docs/{rel}")).await;
            let stored = std::fs::read(home.join("docs").join(rel))
                .unwrap_or_else(|e| panic!("docs/{rel} stored: {e}"));
            assert_eq!(blake3_hex(&stored), blake3_hex(data), "docs/{rel}");
        }
        row_shown(&b, "tree").await;

        // Files dropped on the page land in the current folder. WebDriver cannot drag
        // from the desktop: the files are read from disk by an input the test adds, then
        // dropped on the page as a browser's drop event carries them.
        let dropped = [
            ("one.bin", random_bytes(2 << 20, 4)),
            ("two.txt", b"two".to_vec()),
        ];
        let paths: Vec<_> = dropped
            .iter()
            .map(|(name, data)| {
                let p = src.path().join(name);
                std::fs::write(&p, data).expect("write");
                p
            })
            .collect();
        b.js("const i = document.createElement('input');
             i.type = 'file'; i.multiple = true; i.id = 'test-source'; i.hidden = true;
             document.body.append(i); return null;")
            .await;
        let refs: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
        b.pick("#test-source", &refs).await;
        let dragging = b
            .js("const dt = new DataTransfer();
                 for (const f of document.getElementById('test-source').files) dt.items.add(f);
                 const at = document.getElementById('dropzone');
                 const fire = (type) => at.dispatchEvent(
                   new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: dt }));
                 fire('dragenter'); fire('dragover');
                 const highlighted = document.body.classList.contains('dragging');
                 fire('drop');
                 document.getElementById('test-source').remove();
                 return [highlighted, document.body.classList.contains('dragging')];")
            .await;
        assert_eq!(
            dragging,
            json!([true, false]),
            "the drop zone lights up, then not"
        );
        for (name, data) in &dropped {
            b.upload_done(&format!("docs/{name}")).await;
            let stored = std::fs::read(home.join("docs").join(name)).expect("stored");
            assert_eq!(blake3_hex(&stored), blake3_hex(data), "docs/{name}");
            row_shown(&b, name).await;
        }

        // Rename: the prompt starts with the old name.
        assert_eq!(
            row_button(&b, "two.txt", "Rename").await,
            "Rename two.txt to"
        );
        b.answer(Some("deux.txt")).await;
        row_shown(&b, "deux.txt").await;
        row_gone(&b, "two.txt").await;
        assert_eq!(
            std::fs::read(home.join("docs/deux.txt")).expect("renamed"),
            b"two"
        );
        assert!(!home.join("docs/two.txt").exists());
        // Onto a folder's name it is refused with the server's reason, nothing asked.
        assert_eq!(
            row_button(&b, "deux.txt", "Rename").await,
            "Rename deux.txt to"
        );
        b.answer(Some("tree")).await;
        assert_eq!(
            files_error(&b).await,
            json!("a directory exists at the destination")
        );
        b.assert_no_alert().await;
        assert!(home.join("docs/deux.txt").is_file() && home.join("docs/tree").is_dir());
        // Onto a taken file name the page asks first: cancelling moves nothing and says
        // why, accepting replaces it.
        for replace in [false, true] {
            assert_eq!(
                row_button(&b, "deux.txt", "Rename").await,
                "Rename deux.txt to"
            );
            b.answer(Some("one.bin")).await;
            let asked = b.dialog().await;
            assert_eq!(
                asked,
                "one.bin already exists here. Replace it with deux.txt?"
            );
            if replace {
                b.web.accept_alert().await.expect("replace");
            } else {
                b.answer(None).await;
                assert_eq!(
                    files_error(&b).await,
                    json!("one.bin already exists here; deux.txt was not renamed")
                );
                assert_eq!(
                    std::fs::read(home.join("docs/deux.txt")).expect("kept"),
                    b"two"
                );
                assert_eq!(
                    blake3_hex(&std::fs::read(home.join("docs/one.bin")).expect("kept")),
                    blake3_hex(&dropped[0].1)
                );
            }
        }
        row_gone(&b, "deux.txt").await;
        assert_eq!(
            std::fs::read(home.join("docs/one.bin")).expect("replaced"),
            b"two"
        );
        assert!(!home.join("docs/deux.txt").exists());

        // Delete asks first. Cancelled, nothing is sent: one.bin is still there after the
        // next action (a folder deleted with everything in it, after saying so) has been
        // to the server and back; accepted, it goes.
        assert_eq!(row_button(&b, "one.bin", "Delete").await, "Delete one.bin?");
        b.answer(None).await;
        assert_eq!(
            row_button(&b, "tree", "Delete").await,
            "Delete the folder tree and everything in it?"
        );
        b.web.accept_alert().await.expect("confirm");
        row_gone(&b, "tree").await;
        assert!(!home.join("docs/tree").exists(), "the tree deleted on disk");
        assert!(home.join("docs/one.bin").exists(), "cancel keeps it");
        row_shown(&b, "one.bin").await;
        assert_eq!(row_button(&b, "one.bin", "Delete").await, "Delete one.bin?");
        b.web.accept_alert().await.expect("confirm");
        row_gone(&b, "one.bin").await;
        assert!(!home.join("docs/one.bin").exists(), "deleted on disk");

        // Home again by the breadcrumb. The cancelled New folder made nothing: docs is
        // all there is.
        b.find("#crumbs a").await.click().await.expect("Home");
        row_shown(&b, "docs").await;
        let mut made: Vec<String> = std::fs::read_dir(&home)
            .expect("home")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n != "inbox")
            .collect();
        made.sort();
        assert_eq!(made, ["docs"]);
        b.assert_no_alert().await;
        b.close().await;
    });
}

/// What the image viewer shows, once its image has loaded: the image's alt text, the
/// caption, whether Previous and Next are disabled, and the download link's query.
async fn viewer_state(b: &Browser) -> Value {
    b.until(
        "the viewer's image",
        "(() => { const img = document.getElementById('viewer-img');
           return document.getElementById('viewer').open && img.complete && img.naturalWidth > 0
             && [img.alt, document.getElementById('viewer-name').textContent,
                 document.getElementById('viewer-prev').disabled,
                 document.getElementById('viewer-next').disabled,
                 new URL(document.getElementById('viewer-download').href).search]; })()",
    )
    .await
}

#[test]
fn the_image_viewer_steps_through_a_folders_images() {
    browse(|| async {
        let d = Daemon::start_with(&["alice"], None);
        let c = Client::new();
        c.login(&d, "alice", PASSWORD);
        let png = png();
        push_all(
            &c,
            &[
                ("a.png", &png, "pics/a.png"),
                ("b.png", &png, "pics/b.png"),
                ("c.png", &png, "pics/c.png"),
                ("notes.txt", b"not a picture", "pics/notes.txt"),
            ],
        );

        let Some(b) = Browser::start().await else {
            return;
        };
        b.sign_in(&d, "alice").await;
        b.web
            .goto(&format!("https://{}/#/files/pics", d.host_port()))
            .await
            .expect("pics");
        row_shown(&b, "c.png").await;
        // Each image has a thumbnail the browser decoded; the text file has none.
        b.until(
            "three decoded thumbnails",
            "[...document.querySelectorAll('#entries img.thumb')].filter(i => i.complete && i.naturalWidth > 0).length === 3",
        )
        .await;
        assert_eq!(
            b.js("return document.querySelectorAll('#entries tr[data-name=\"notes.txt\"] img').length;")
                .await,
            json!(0)
        );

        // Open the second image: the dialog shows it, its name and a download link.
        b.find("#entries tr[data-name='b.png'] img.thumb")
            .await
            .click()
            .await
            .expect("open b.png");
        let v = viewer_state(&b).await;
        assert_eq!(v[0], "b.png", "{v}");
        assert_eq!(v[1], format!("b.png — {} B", png.len()), "{v}");
        assert_eq!((&v[2], &v[3]), (&json!(false), &json!(false)), "{v}");
        assert_eq!(v[4], "?path=pics%2Fb.png", "{v}");

        // Next, to the last one (Next disabled), then back with the arrow key.
        b.find("#viewer-next").await.click().await.expect("next");
        let v = viewer_state(&b).await;
        assert_eq!((&v[0], &v[3]), (&json!("c.png"), &json!(true)), "{v}");
        for _ in 0..2 {
            b.find("#viewer")
                .await
                .send_keys("\u{E012}")
                .await
                .expect("arrow left");
        }
        b.until(
            "the first image, Previous disabled",
            "document.getElementById('viewer-img').alt === 'a.png' && document.getElementById('viewer-prev').disabled",
        )
        .await;
        // The image is served inline, as an image, for the viewer only.
        let inline = b
            .js("return new URL(document.getElementById('viewer-img').src).search;")
            .await;
        assert_eq!(inline, json!("?path=pics%2Fa.png&inline=1"));
        b.screenshot("viewer.png").await;
        b.find("#viewer-close").await.click().await.expect("close");
        b.until(
            "the viewer closed",
            "!document.getElementById('viewer').open",
        )
        .await;
        b.close().await;
    });
}

/// A TCP relay to `to` that passes what clients send at most `rate` bytes a second over
/// all its connections together, like a slow Wi-Fi link; what comes back is not slowed.
/// TLS runs end to end through it.
async fn slow_link(to: SocketAddr, rate: u64) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    // When the link is free again: an idle link builds up no credit to burst with.
    let free_at = Arc::new(Mutex::new(Instant::now()));
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let free_at = free_at.clone();
            tokio::spawn(async move {
                let Ok(outbound) = TcpStream::connect(to).await else {
                    return;
                };
                let (mut from_client, mut to_client) = inbound.into_split();
                let (mut from_server, mut to_server) = outbound.into_split();
                let up = async {
                    let mut buf = vec![0u8; 16 << 10];
                    loop {
                        let n = from_client.read(&mut buf).await?;
                        if n == 0 {
                            return to_server.shutdown().await;
                        }
                        to_server.write_all(&buf[..n]).await?;
                        // These bytes occupy the link for n / rate seconds after it is
                        // next free; the next read waits until then.
                        let due = {
                            let mut free = free_at.lock().expect("the link's clock");
                            *free = (*free).max(Instant::now())
                                + Duration::from_secs_f64(n as f64 / rate as f64);
                            *free
                        };
                        tokio::time::sleep_until(due).await;
                    }
                };
                let down = tokio::io::copy(&mut from_server, &mut to_client);
                let _: (std::io::Result<()>, _) = tokio::join!(up, down);
            });
        }
    });
    addr
}

#[test]
fn progress_shows_rate_and_time_left_per_file_and_in_total() {
    browse(|| async {
        let d = Daemon::start_with(&["alice"], None);
        let Some(b) = Browser::start().await else {
            return;
        };
        // Through a link slow enough that the page reports several times while it sends,
        // however fast this machine is.
        let link = slow_link(d.addr, 4_000_000).await;
        b.sign_in_at(&link.to_string(), "alice").await;
        b.js(
            "window.seen = { file: [], total: [] };
             new MutationObserver(() => {
               const s = document.querySelector('#upload-list li .ustatus');
               if (s) window.seen.file.push(s.textContent);
               window.seen.total.push(document.getElementById('total-text').textContent);
             }).observe(document.getElementById('uploads'), { subtree: true, childList: true, characterData: true });
             return null;",
        )
        .await;
        let src = TempDir::new().expect("source dir");
        let a = write_file(src.path(), "a.bin", &random_bytes(12 << 20, 5));
        let bb = write_file(src.path(), "b.bin", &random_bytes(4 << 20, 6));
        b.pick("#pick-files", &[Path::new(&a), Path::new(&bb)])
            .await;
        b.upload_done("a.bin").await;
        b.upload_done("b.bin").await;
        // "sending: 37 %, 8.0 MB/s, 1 s left" and "5.0 MiB of 16 MiB (31 %), 8.0 MB/s,
        // 1 s left", matched in the page by JavaScript regular expressions.
        let seen: Value = b
            .js(r"const left = String.raw`\d+(\.\d)? MB/s, \d+ (s|min \d+ s) left$`;
                  const file = new RegExp(String.raw`^sending: \d+ %, ` + left);
                  const total = new RegExp(String.raw`^\d+(\.\d)? [KM]?i?B of 16 MiB \(\d+ %\), ` + left);
                  return [window.seen.file.some(t => file.test(t)),
                          window.seen.total.some(t => total.test(t)), window.seen];")
            .await;
        assert_eq!(
            seen[0],
            json!(true),
            "no per-file rate and time left: {seen}"
        );
        assert_eq!(seen[1], json!(true), "no total rate and time left: {seen}");
        let last = b
            .until(
                "the total at 100 %",
                "(() => { const t = document.getElementById('total-text').textContent; return t.includes('(100 %)') && t; })()",
            )
            .await;
        assert_eq!(last, json!("16 MiB of 16 MiB (100 %)"));
        b.close().await;
    });
}

#[test]
fn a_phone_sized_window_gets_one_column_without_sideways_scrolling() {
    browse(|| async {
        let d = Daemon::start_with(&["alice"], None);
        let c = Client::new();
        c.login(&d, "alice", PASSWORD);
        let long = "a-rather-long-file-name-from-a-camera-2026-12-01-IMG_20261201_101530.jpeg.bin";
        push_all(
            &c,
            &[
                (long, b"some bytes", long),
                ("notes.txt", b"some bytes", "notes.txt"),
            ],
        );
        let Some(b) = Browser::start().await else {
            return;
        };
        b.web.set_window_size(390, 844).await.expect("phone size");
        b.sign_in(&d, "alice").await;
        row_shown(&b, long).await;
        // The page's phone layout applies, nothing is wider than the screen, and the
        // columns that give way are the digest and the time.
        let fit = |what: &'static str| {
            format!(
                "(() => {{
                   const w = window.innerWidth;
                   const over = [...document.querySelectorAll('{what}')]
                     .filter(e => e.offsetParent && e.getBoundingClientRect().right > w + 1)
                     .map(e => e.id || e.className || e.tagName);
                   return [matchMedia('(max-width: 640px)').matches,
                           document.documentElement.scrollWidth <= w, over]; }})()"
            )
        };
        let files = b
            .js(&format!(
                "return {};",
                fit("#top *, #files *, #crumbs *, .toolbar *")
            ))
            .await;
        assert_eq!(files, json!([true, true, []]), "files view: {files}");
        let hidden = b
            .js(
                "return ['th.hash', 'td.hash', 'th.time', 'td.time'].map(s =>
                   getComputedStyle(document.querySelector('#listing ' + s)).display);",
            )
            .await;
        assert_eq!(hidden, json!(["none", "none", "none", "none"]));
        b.screenshot("phone-files.png").await;

        // Chat: the side list stacks above the conversation.
        b.join("#lab").await;
        let chat = b
            .js(&format!(
                "const side = document.getElementById('chat-side').getBoundingClientRect();
                 const main = document.getElementById('chat-main').getBoundingClientRect();
                 return [side.bottom <= main.top, {}];",
                fit("#chat *")
            ))
            .await;
        assert_eq!(chat, json!([true, [true, true, []]]), "chat view: {chat}");
        b.screenshot("phone-chat.png").await;
        b.close().await;
    });
}

#[test]
fn a_file_sent_from_the_chat_lands_in_the_inbox_and_a_notice_links_to_it() {
    browse(|| async {
        let d = Daemon::start_with(&["alice", "bob"], None);
        let bob = Client::new();
        bob.login(&d, "bob", PASSWORD);
        let follower = bob.follow(&[]);
        let Some(b) = Browser::start().await else {
            return;
        };
        b.sign_in(&d, "alice").await;
        b.tab("chat").await;
        b.find("#dm-name")
            .await
            .send_keys("bob")
            .await
            .expect("type user");
        b.find("#dm-form button")
            .await
            .click()
            .await
            .expect("message");
        b.until(
            "the conversation with bob",
            "document.getElementById('conv-title').textContent === 'Direct: bob'
               && !document.getElementById('send-file-label').hidden",
        )
        .await;

        // alice sends a file from the conversation: it is uploaded into bob's inbox (the
        // same verified upload), and bob's `xfer chat` hears of it.
        let src = TempDir::new().expect("source dir");
        let data = random_bytes(5 << 20, 9);
        let path = write_file(src.path(), "report.bin", &data);
        b.pick("#send-file", &[Path::new(&path)]).await;
        b.upload_done("report.bin → bob").await;
        let stored = std::fs::read(d.files_dir("bob").join("inbox/alice/report.bin"))
            .expect("in bob's inbox");
        assert_eq!(blake3_hex(&stored), blake3_hex(&data));
        let notice = format!(
            " @bob [alice] file inbox/alice/report.bin {} {}",
            data.len(),
            blake3_hex(&data)
        );
        follower
            .wait_stdout(DEADLINE, |s| s.lines().any(|l| l.ends_with(&notice)))
            .unwrap_or_else(|| {
                panic!(
                    "bob's xfer chat has no `{notice}`: {}{}",
                    follower.stdout_so_far(),
                    follower.stderr_so_far()
                )
            });
        // In alice's page the notice is hers, without a link (the file is bob's now).
        let mine = b
            .until(
                "alice's own notice",
                "[...document.querySelectorAll('#messages li')].find(li => li.textContent.includes('sent a file: report.bin'))?.outerHTML",
            )
            .await;
        assert!(!mine.as_str().unwrap().contains("<a "), "{mine}");

        // bob sends one back with the CLI: alice's page shows the notice with a link that
        // downloads it.
        let back = random_bytes(300_000, 10);
        let back_path = write_file(src.path(), "answer.bin", &back);
        let out = bob.xfer(&["send", "-q", "alice", &back_path], "");
        assert_eq!(out.code(), 0, "{}", out.stderr());
        let link = b.find("#messages li a[download='answer.bin']").await;
        let text = b
            .js("return [...document.querySelectorAll('#messages li')].find(li => li.textContent.includes('answer.bin')).textContent;")
            .await;
        assert!(
            text.as_str().unwrap().contains(&format!(
                "bobsent a file: answer.bin (293 KiB) BLAKE3 {}…",
                &blake3_hex(&back)[..16]
            )),
            "{text}"
        );
        b.screenshot("chat-file.png").await;
        link.click().await.expect("download");
        let got = b.downloads.path().join("answer.bin");
        poll(BROWSER_DEADLINE, || {
            (std::fs::metadata(&got).ok()?.len() == back.len() as u64).then_some(())
        })
        .unwrap_or_else(|| panic!("no download at {}", got.display()));
        assert_eq!(
            blake3_hex(&std::fs::read(&got).expect("read")),
            blake3_hex(&back)
        );

        // In a channel there is no one to send a file to.
        b.join("#lab").await;
        b.until(
            "#lab without Send file",
            "document.getElementById('conv-title').textContent === '#lab'
               && document.getElementById('send-file-label').hidden",
        )
        .await;
        b.close().await;
    });
}

/// The page's lines in the open conversation: `[from, text]` of each message.
async fn shown_lines(b: &Browser) -> Vec<(String, String)> {
    let v = b
        .js("return [...document.querySelectorAll('#messages li[data-id]')].map(li =>
               [li.querySelector('.from').textContent, li.querySelector('.text')?.textContent ?? '']);")
        .await;
    serde_json::from_value(v).expect("pairs")
}

#[test]
fn chat_history_presence_unread_marks_and_notifications_in_the_page() {
    browse(|| async {
        let config = "[chat]\nmessages_per_sec = 1000\nmessage_burst = 1000\n";
        let d = Daemon::start_with(&["alice", "bob"], Some(config));
        let bob = Client::new();
        bob.login(&d, "bob", PASSWORD);
        let lines: String = (1..=60).map(|i| format!("line {i}\n")).collect();
        let out = bob.xfer(&["chat", "#lab"], &lines);
        assert_eq!(out.code(), 0, "{}", out.stderr());

        let Some(b) = Browser::start().await else {
            return;
        };
        b.sign_in(&d, "alice").await;
        b.join("#lab").await;

        // History: the last 50 first, then the earlier ones on request, then no more.
        b.until(
            "50 lines of history",
            "document.querySelectorAll('#messages li[data-id]').length === 50",
        )
        .await;
        let shown = shown_lines(&b).await;
        assert_eq!(shown[0], ("bob".into(), "line 11".into()));
        assert_eq!(shown[49], ("bob".into(), "line 60".into()));
        b.find("#older").await.click().await.expect("earlier");
        b.until(
            "60 lines",
            "document.querySelectorAll('#messages li[data-id]').length === 60",
        )
        .await;
        let shown = shown_lines(&b).await;
        let want: Vec<(String, String)> = (1..=60)
            .map(|i| ("bob".to_owned(), format!("line {i}")))
            .collect();
        assert_eq!(shown, want, "all of it, in order");
        b.find("#older").await.click().await.expect("earlier");
        b.until(
            "no earlier messages",
            "document.getElementById('older').hidden",
        )
        .await;

        // Presence: bob online while his `xfer chat` runs, offline when it ends.
        let mut follower = bob.follow(&["#lab"]);
        b.until(
            "bob online",
            "document.querySelector('#people-list li[data-conv=bob] .dot.online')",
        )
        .await;
        follower.kill9();
        b.until(
            "bob offline",
            "document.querySelector('#people-list li[data-conv=bob] .dot.offline')",
        )
        .await;

        // Away from the conversation: a line arriving while alice looks at her files is
        // unread (the Chat tab says 1). She signs out, bob says two more, she signs in
        // again: the Chat tab and the channel say 3, and the conversation marks where
        // she left.
        b.tab("files").await;
        let out = bob.xfer(&["chat", "#lab", "--say", "while you browse files"], "");
        assert_eq!(out.code(), 0, "{}", out.stderr());
        b.until(
            "1 unread on the Chat tab",
            "document.getElementById('chat-badge').textContent === '1'
               && !document.getElementById('chat-badge').hidden",
        )
        .await;
        let mut signed_out_url = b.web.current_url().await.expect("url");
        signed_out_url.set_fragment(None);
        b.find("#logout").await.click().await.expect("sign out");
        for line in ["while you were out", "and one more"] {
            let out = bob.xfer(&["chat", "#lab", "--say", line], "");
            assert_eq!(out.code(), 0, "{}", out.stderr());
        }
        // Signing out loaded the page afresh (its address lost the view's `#/files/`):
        // nothing of alice's is left in it.
        b.web
            .wait()
            .at_most(BROWSER_DEADLINE)
            .for_url(&signed_out_url)
            .await
            .unwrap_or_else(|e| panic!("no reload to {signed_out_url} after signing out: {e}"));
        b.until(
            "the sign-in page",
            "!document.getElementById('signin').hidden",
        )
        .await;
        let left = b
            .js("return [document.querySelectorAll('#chan-list li, #entries tr, #upload-list li, #messages li').length,
                         document.getElementById('chat-badge').hidden];")
            .await;
        assert_eq!(left, json!([0, true]));
        b.submit_sign_in("alice", PASSWORD).await;
        b.until(
            "3 unread on the Chat tab",
            "document.getElementById('chat-badge').textContent === '3'
               && !document.getElementById('chat-badge').hidden",
        )
        .await;
        b.tab("chat").await;
        b.until(
            "3 unread on #lab and on the tab",
            "document.querySelector('#chan-list li[data-conv=\"#lab\"] .badge')?.textContent === '3'
               && document.getElementById('chat-badge').textContent === '3'
               && !document.getElementById('chat-badge').hidden",
        )
        .await;
        b.click_js("#chan-list li[data-conv='#lab']").await;
        let after_mark = b
            .until(
                "the new-since-you-left mark",
                "(() => { const m = document.querySelector('#messages li.newmark');
                   return m && m.nextElementSibling && m.nextElementSibling.querySelector('.text')?.textContent; })()",
            )
            .await;
        assert_eq!(after_mark, json!("while you browse files"));
        assert_eq!(
            b.js("return document.querySelector('#messages li.newmark').previousElementSibling.querySelector('.text').textContent;")
                .await,
            json!("line 60")
        );
        b.until(
            "read: no badge",
            "document.getElementById('chat-badge').hidden",
        )
        .await;
        b.screenshot("chat-unread.png").await;

        // A line arriving while the page is in a background tab raises a browser
        // notification. The page's Notification calls are recorded on their way through,
        // in localStorage, where a second tab of the same origin (the one in front) reads
        // them.
        b.js("const Real = window.Notification;
              window.Notification = class extends Real {
                constructor(title, opts) {
                  super(title, opts);
                  localStorage.setItem('test.notes', JSON.stringify([title, opts.body, document.hidden]));
                }
              };
              return null;")
            .await;
        let other = b.web.new_window(true).await.expect("another tab");
        b.web
            .switch_to_window(other.handle)
            .await
            .expect("to the other tab");
        b.web
            .goto(&format!("https://{}/api/server", d.host_port()))
            .await
            .expect("same origin");
        let out = bob.xfer(&["chat", "#lab", "--say", "ping while you look away"], "");
        assert_eq!(out.code(), 0, "{}", out.stderr());
        let note = b
            .until("a notification", "localStorage.getItem('test.notes')")
            .await;
        assert_eq!(
            note,
            json!(r##"["bob in #lab","ping while you look away",true]"##)
        );
        b.close().await;
    });
}
