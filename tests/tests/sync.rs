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
