//! Sync-friendly recursion: modification times travel with files (rsync `-t`, `scp -p`),
//! `--update` moves only what differs, `--dry-run` shows the plan and changes nothing.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use tempfile::TempDir;
use xfer_e2e::{Client, Daemon, alice, write_file};

/// Sets a local file's modification time to `secs` after the epoch.
fn set_mtime(path: &Path, secs: u64) {
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(UNIX_EPOCH + Duration::from_secs(secs))
        .unwrap();
}

/// A local file's modification time in whole seconds.
fn mtime(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `src/{a.txt, b.txt, sub/c.txt}` with distinct old times.
fn tree(root: &Path) -> Vec<(&'static str, u64)> {
    let files = [
        ("a.txt", 1_500_000_000),
        ("b.txt", 1_500_000_100),
        ("sub/c.txt", 1_500_000_200),
    ];
    std::fs::create_dir_all(root.join("sub")).unwrap();
    for (name, secs) in files {
        write_file(root, name, format!("content of {name}\n").as_bytes());
        set_mtime(&root.join(name), secs);
    }
    files.to_vec()
}

/// The `modified_unix` that `xfer ls DIR --json` shows for `name`.
fn remote_mtime(c: &Client, dir: &str, name: &str) -> u64 {
    let e = c.ls_entry(&[dir], name).expect("listed");
    e["modified_unix"].as_u64().expect("modified_unix")
}

#[test]
fn push_keeps_modification_times_and_pull_sets_them() {
    let d = Daemon::start();
    let c = alice(&d);
    let local = TempDir::new().unwrap();
    let one = write_file(local.path(), "old.txt", b"written long ago\n");
    set_mtime(Path::new(&one), 1_234_567_890);
    let out = c.xfer(&["push", "-q", &one], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert_eq!(remote_mtime(&c, "", "old.txt"), 1_234_567_890);
    let stored = d.files_dir("alice").join("old.txt");
    assert_eq!(
        mtime(&stored),
        1_234_567_890,
        "the daemon set the file's time"
    );
    // The digest stays listed after the time was set (the manifest follows the time).
    assert!(c.ls_entry(&["-l"], "old.txt").unwrap()["digest"].is_string());

    let src = local.path().join("src");
    let files = tree(&src);
    let out = c.xfer(&["push", "-r", "-q", &src.display().to_string()], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert_eq!(remote_mtime(&c, "src/sub", "c.txt"), 1_500_000_200);

    let back = TempDir::new().unwrap();
    let dest = format!("{}/", back.path().display());
    let out = c.xfer(&["pull", "-r", "-q", "src", &dest], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    for (name, secs) in files {
        assert_eq!(mtime(&back.path().join("src").join(name)), secs, "{name}");
    }
}

/// Edits `a.txt` (new content, a newer time) and touches `b.txt` (same content, a newer
/// time) in the tree made by [`tree`].
fn edit_one_touch_another(root: &Path) {
    write_file(root, "a.txt", b"content of a.txt, edited\n");
    set_mtime(&root.join("a.txt"), 1_600_000_000);
    set_mtime(&root.join("b.txt"), 1_600_000_100);
}

/// The summary line of a multi-file run.
fn summary(out: &str) -> &str {
    out.lines()
        .find(|l| l.contains(" files: "))
        .unwrap_or_else(|| panic!("no summary line in:\n{out}"))
}

#[test]
fn push_update_sends_only_the_file_whose_content_changed() {
    let d = Daemon::start();
    let c = alice(&d);
    let local = TempDir::new().unwrap();
    let src = local.path().join("src");
    tree(&src);
    let src_arg = src.display().to_string();
    let out = c.xfer(&["push", "-r", &src_arg], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    let uploads = d.audit_events("upload").len();
    assert_eq!(uploads, 3);

    edit_one_touch_another(&src);
    // Without --update the edited file is a conflict, as before.
    assert_eq!(c.xfer(&["push", "-r", &src_arg], "").code(), 6);

    let out = c.xfer(&["push", "-r", "--update", &src_arg], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    let line = summary(&out.stdout()).to_string();
    assert!(
        line.starts_with("3 files: 1 transferred, 2 up to date, 0 conflicts, 0 failed;"),
        "{line}"
    );
    assert_eq!(
        d.audit_events("upload").len(),
        uploads + 1,
        "exactly one upload"
    );
    let stored = std::fs::read(d.files_dir("alice").join("src/a.txt")).unwrap();
    assert_eq!(stored, b"content of a.txt, edited\n");
    // The touched file only had its time set, and keeps its digest in the listing.
    assert_eq!(remote_mtime(&c, "src", "b.txt"), 1_600_000_100);
    assert!(c.ls_entry(&["src", "-l"], "b.txt").unwrap()["digest"].is_string());

    // Everything is in sync now: a pull gives the same bytes and times.
    let back = TempDir::new().unwrap();
    let dest = format!("{}/", back.path().display());
    let out = c.xfer(&["pull", "-r", "-q", "src", &dest], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    for name in ["a.txt", "b.txt", "sub/c.txt"] {
        let (mine, theirs) = (src.join(name), back.path().join("src").join(name));
        assert_eq!(
            std::fs::read(&mine).unwrap(),
            std::fs::read(&theirs).unwrap()
        );
        assert_eq!(mtime(&mine), mtime(&theirs), "{name}");
    }
    let out = c.xfer(&["push", "-r", "--update", &src_arg], "");
    assert!(
        summary(&out.stdout()).starts_with("3 files: 0 transferred, 3 up to date,"),
        "{}",
        out.stdout()
    );

    // A remote file newer than the local one is kept (rsync -u); --force replaces it.
    write_file(&src, "sub/c.txt", b"an older edit\n");
    set_mtime(&src.join("sub/c.txt"), 1_400_000_000);
    let out = c.xfer(&["push", "-r", "--update", &src_arg], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert!(
        out.stdout().contains("kept: newer at the destination"),
        "{}",
        out.stdout()
    );
    assert!(
        summary(&out.stdout())
            .contains("0 transferred, 2 up to date, 0 conflicts, 0 failed, 1 kept"),
        "{}",
        out.stdout()
    );
    let stored = d.files_dir("alice").join("src/sub/c.txt");
    assert_eq!(std::fs::read(&stored).unwrap(), b"content of sub/c.txt\n");
    let out = c.xfer(&["push", "-r", "--update", "--force", &src_arg], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert_eq!(std::fs::read(&stored).unwrap(), b"an older edit\n");
    assert_eq!(remote_mtime(&c, "src/sub", "c.txt"), 1_400_000_000);
}

#[test]
fn pull_update_fetches_only_the_file_whose_content_changed() {
    let d = Daemon::start();
    let c = alice(&d);
    let local = TempDir::new().unwrap();
    let src = local.path().join("src");
    tree(&src);
    let src_arg = src.display().to_string();
    assert_eq!(c.xfer(&["push", "-r", "-q", &src_arg], "").code(), 0);
    let back = TempDir::new().unwrap();
    let dest = format!("{}/", back.path().display());
    assert_eq!(c.xfer(&["pull", "-r", "-q", "src", &dest], "").code(), 0);
    let downloads = d.audit_events("download").len();
    assert_eq!(downloads, 3);

    // The server's copy changes (from this tree), then the other copy catches up.
    edit_one_touch_another(&src);
    assert_eq!(
        c.xfer(&["push", "-r", "-q", "--update", &src_arg], "")
            .code(),
        0
    );
    assert_eq!(
        c.xfer(&["pull", "-r", "src", &dest], "").code(),
        6,
        "a conflict without --update"
    );
    let out = c.xfer(&["pull", "-r", "--update", "src", &dest], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    let line = summary(&out.stdout()).to_string();
    assert!(
        line.starts_with("3 files: 1 transferred, 2 up to date, 0 conflicts, 0 failed;"),
        "{line}"
    );
    assert_eq!(
        d.audit_events("download").len(),
        downloads + 1,
        "exactly one download"
    );
    for name in ["a.txt", "b.txt", "sub/c.txt"] {
        let (mine, theirs) = (src.join(name), back.path().join("src").join(name));
        assert_eq!(
            std::fs::read(&mine).unwrap(),
            std::fs::read(&theirs).unwrap()
        );
        assert_eq!(mtime(&mine), mtime(&theirs), "{name}");
    }

    // A local file newer than the server's is kept.
    let pulled_c = back.path().join("src/sub/c.txt");
    std::fs::write(&pulled_c, b"edited here later\n").unwrap();
    set_mtime(&pulled_c, 1_700_000_000);
    let out = c.xfer(&["pull", "-r", "--update", "src", &dest], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert!(
        summary(&out.stdout()).contains("1 kept"),
        "{}",
        out.stdout()
    );
    assert_eq!(std::fs::read(&pulled_c).unwrap(), b"edited here later\n");
    assert_eq!(d.audit_events("download").len(), downloads + 1);
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let d = Daemon::start();
    let c = alice(&d);
    let local = TempDir::new().unwrap();
    let src = local.path().join("src");
    tree(&src);
    let src_arg = src.display().to_string();
    assert_eq!(c.xfer(&["push", "-r", "-q", &src_arg], "").code(), 0);
    edit_one_touch_another(&src);
    write_file(&src, "d.txt", b"new\n");
    std::fs::create_dir(src.join("new")).unwrap();
    write_file(&src, "new/e.txt", b"new too\n");
    let uploads = d.audit_events("upload").len();

    let out = c.xfer(&["push", "-r", "--update", "--dry-run", &src_arg], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    let plan = out.stdout();
    let has = |verb: &str, remote: &str| {
        plan.lines()
            .any(|l| l.starts_with(&format!("{verb}  ")) && l.ends_with(&format!("-> {remote}")))
    };
    assert!(has("replace", "src/a.txt"), "{plan}");
    assert!(has("set time (same content)", "src/b.txt"), "{plan}");
    assert!(has("up to date", "src/sub/c.txt"), "{plan}");
    assert!(has("new", "src/d.txt"), "{plan}");
    assert!(has("new", "src/new/e.txt"), "{plan}");
    assert!(
        plan.lines().any(|l| l == "create directory  src/new"),
        "{plan}"
    );
    assert!(
        plan.contains("dry run: 5 files: 3 to transfer (")
            && plan.contains(
                "2 up to date, 0 kept, 0 conflicts; 1 directories to create; nothing was changed"
            ),
        "{plan}"
    );
    // Nothing changed on the server.
    assert_eq!(d.audit_events("upload").len(), uploads);
    assert!(c.ls_entry(&["src"], "d.txt").is_none());
    assert!(c.ls_entry(&["src"], "new").is_none());
    assert_eq!(remote_mtime(&c, "src", "b.txt"), 1_500_000_100);

    // Without --update the edited file shows as the conflict it would be; still exit 0.
    let out = c.xfer(&["push", "-r", "-n", &src_arg], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert!(
        out.stdout()
            .contains("conflict (exists; use --update or --force)  "),
        "{}",
        out.stdout()
    );

    // A pull's plan creates nothing locally.
    let back = TempDir::new().unwrap();
    let fresh = back.path().join("fresh");
    let out = c.xfer(
        &[
            "pull",
            "-r",
            "--dry-run",
            "src",
            &format!("{}/", fresh.display()),
        ],
        "",
    );
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert!(
        out.stdout().contains("dry run: 3 files: 3 to transfer"),
        "{}",
        out.stdout()
    );
    assert!(
        out.stdout().contains("create directory  "),
        "{}",
        out.stdout()
    );
    assert!(!fresh.exists(), "a dry run created {}", fresh.display());
    assert_eq!(d.audit_events("download").len(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn set_modified_refuses_what_it_cannot_do_and_the_daemon_stays_up() {
    use xfer_proto::{ErrorCode, Request, Response};
    let d = tokio::task::block_in_place(Daemon::start);
    let mut conn = d.raw_login("alice").await;
    conn.push("f.txt", b"data").await;
    let set = |path: &str, t: u64| Request::SetModified {
        path: path.into(),
        modified_unix: t,
    };
    assert_eq!(conn.call(set("f.txt", 1_000_000_000)).await, Response::Ok);
    let stored = d.files_dir("alice").join("f.txt");
    assert_eq!(mtime(&stored), 1_000_000_000);
    for (req, code) in [
        (set("f.txt", u64::MAX), ErrorCode::BadRequest),
        (set("missing.txt", 1), ErrorCode::NotFound),
        (set("../x", 1), ErrorCode::InvalidPath),
        (set("", 1), ErrorCode::InvalidPath),
    ] {
        match conn.call(req.clone()).await {
            Response::Error { code: c, .. } => assert_eq!(c, code, "{req:?}"),
            other => panic!("{req:?}: {other:?}"),
        }
    }
    assert_eq!(mtime(&stored), 1_000_000_000);
    assert_eq!(conn.call(Request::Ping).await, Response::Pong);
}
