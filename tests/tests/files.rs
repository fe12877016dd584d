//! Files: push and pull are byte-identical, listings show verified digests, uploads in
//! progress never look complete, conflicts and admission (quota, type policy, size,
//! disk space) are decided before data flows.

use std::path::Path;
use std::process::Command;

use tempfile::TempDir;
use xfer_e2e::{
    CHUNK, Client, DEADLINE, Daemon, MIB, alice, blake3_hex, poll, random_bytes, write_file,
};

/// Pulls `remote` into `dir` and returns the bytes (asserting success).
fn pull_bytes(c: &Client, remote: &str, dir: &Path) -> Vec<u8> {
    let out = c.xfer(&["pull", remote, &format!("{}/", dir.display())], "");
    assert_eq!(out.code(), 0, "pull {remote}: {}", out.stderr());
    let name = remote.rsplit('/').next().unwrap();
    std::fs::read(dir.join(name)).expect("pulled file")
}

#[test]
fn push_then_pull_is_byte_identical_at_chunk_boundaries_and_digests_match() {
    let d = Daemon::start();
    let c = alice(&d);
    let local = TempDir::new().unwrap();
    let back = TempDir::new().unwrap();
    let sizes = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 50 * CHUNK + 12_345];
    for (i, &size) in sizes.iter().enumerate() {
        let data = random_bytes(size, i as u64 + 1);
        let name = format!("f{size}.bin");
        let path = write_file(local.path(), &name, &data);
        let out = c.xfer(&["push", "-q", &path], "");
        assert_eq!(out.code(), 0, "push {size} B: {}", out.stderr());

        let got = pull_bytes(&c, &name, back.path());
        assert!(got == data, "{size} B: pulled bytes differ from pushed");
        assert!(
            !back.path().join(format!("{name}.xfer-part")).exists(),
            "part file renamed away"
        );

        // The server's copy, and the digest it lists, are those of the data.
        let stored = std::fs::read(d.files_dir("alice").join(&name)).unwrap();
        assert!(stored == data, "{size} B: stored bytes differ");
        let entry = c.ls_entry(&["-l"], &name).expect("listed");
        assert_eq!(entry["kind"], "file", "{entry}");
        assert_eq!(entry["size"], size as u64, "{entry}");
        assert_eq!(entry["digest"], blake3_hex(&data), "{size} B: {entry}");
    }
}

#[test]
fn push_into_a_directory_and_pull_back_by_path() {
    let d = Daemon::start();
    let c = alice(&d);
    let local = TempDir::new().unwrap();
    let data = random_bytes(3 * CHUNK + 7, 99);
    let path = write_file(local.path(), "doc.bin", &data);
    assert_eq!(c.xfer(&["mkdir", "-p", "a/b"], "").code(), 0);
    let out = c.xfer(&["push", "-q", &path, "a/b/"], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    let entry = c
        .ls_entry(&["a/b", "-l"], "doc.bin")
        .expect("listed in a/b");
    assert_eq!(entry["digest"], blake3_hex(&data));
    let back = TempDir::new().unwrap();
    assert!(pull_bytes(&c, "a/b/doc.bin", back.path()) == data);
}

#[test]
fn an_upload_in_progress_is_never_listed_or_stored_as_a_file() {
    let d = Daemon::start();
    let uploader = alice(&d);
    let watcher = alice(&d);
    let local = TempDir::new().unwrap();
    let data = random_bytes(20 * CHUNK, 7);
    let path = write_file(local.path(), "slow.bin", &data);
    let final_path = d.files_dir("alice").join("slow.bin");

    let mut push = uploader.spawn(&["push", "-q", "--limit-rate", "5M", &path]);
    // The server commits a moment before the client exits, so a look may see the
    // committed file while the process still runs. What must never be seen is a file
    // under the final name, on disk or in a listing, that is not the complete upload.
    let digest = blake3_hex(&data);
    let mut looks = 0;
    let mut saw_partial = false;
    while !push.finished() {
        let mut complete = false;
        if let Ok(on_disk) = std::fs::read(&final_path) {
            assert!(
                on_disk == data,
                "a file exists under the final name before the upload completed"
            );
            complete = true;
        }
        let listed = watcher.ls_json(&[]);
        let partials = watcher.ls_json(&["--partial"]);
        for e in listed.iter().chain(&partials) {
            if e["name"] != "slow.bin" {
                continue;
            }
            if e["kind"] == "file" {
                assert_eq!(e["digest"], digest, "listed as a file before complete: {e}");
                complete = true;
            } else if e["kind"] == "partial" {
                saw_partial = true;
            }
        }
        if !complete {
            looks += 1;
        }
    }
    let out = push.wait(DEADLINE);
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert!(
        looks >= 3,
        "the upload was observed while running ({looks} times)"
    );
    assert!(saw_partial, "`ls --partial` showed the upload in progress");
    let entry = watcher
        .ls_entry(&[], "slow.bin")
        .expect("listed after commit");
    assert_eq!(entry["kind"], "file");
    assert!(std::fs::read(&final_path).unwrap() == data);
}

#[test]
fn push_onto_an_existing_name_needs_force_and_same_content_is_up_to_date() {
    let d = Daemon::start();
    let c = alice(&d);
    let local = TempDir::new().unwrap();
    let old = random_bytes(2 * CHUNK + 3, 1);
    let new = random_bytes(CHUNK + 5, 2);
    let old_path = write_file(local.path(), "x.bin", &old);
    assert_eq!(c.xfer(&["push", "-q", &old_path], "").code(), 0);

    let newdir = TempDir::new().unwrap();
    let new_path = write_file(newdir.path(), "x.bin", &new);
    let refused = c.xfer(&["push", "-q", &new_path], "");
    assert_eq!(
        refused.code(),
        6,
        "conflict exit code: {}",
        refused.stderr()
    );
    let stored = d.files_dir("alice").join("x.bin");
    assert!(std::fs::read(&stored).unwrap() == old, "remote unchanged");
    assert_eq!(
        c.ls_entry(&["-l"], "x.bin").unwrap()["digest"],
        blake3_hex(&old)
    );

    let forced = c.xfer(&["push", "-q", "--force", &new_path], "");
    assert_eq!(forced.code(), 0, "{}", forced.stderr());
    assert!(std::fs::read(&stored).unwrap() == new, "replaced");
    assert_eq!(
        c.ls_entry(&["-l"], "x.bin").unwrap()["digest"],
        blake3_hex(&new)
    );

    // Same content again: nothing travels.
    assert!(d.wait_for_log("event=\"upload\""));
    let uploads_before = d.audit_events("upload").len();
    let same = c.xfer(&["push", &new_path], "");
    assert_eq!(same.code(), 0, "{}", same.stderr());
    let said = format!("{}{}", same.stdout(), same.stderr());
    assert!(said.contains("up to date"), "{said}");
    // A later marker proves the log has caught up before counting.
    assert_eq!(c.xfer(&["logout"], "").code(), 0);
    assert!(d.wait_for_log("event=\"logout\""));
    let uploads = d.audit_events("upload");
    assert_eq!(
        uploads.len(),
        uploads_before,
        "no upload event: {uploads:#?}"
    );
    assert!(std::fs::read(&stored).unwrap() == new);
}

#[test]
fn a_forced_replace_leaves_the_old_file_intact_until_the_commit() {
    let d = Daemon::start();
    let c = alice(&d);
    let local = TempDir::new().unwrap();
    let old = random_bytes(CHUNK, 3);
    let new = random_bytes(15 * CHUNK, 4);
    let old_path = write_file(local.path(), "r.bin", &old);
    assert_eq!(c.xfer(&["push", "-q", &old_path], "").code(), 0);
    let newdir = TempDir::new().unwrap();
    let new_path = write_file(newdir.path(), "r.bin", &new);
    let stored = d.files_dir("alice").join("r.bin");

    let mut push = c.spawn(&["push", "-q", "--force", "--limit-rate", "5M", &new_path]);
    // The server renames the new file into place a moment before the client
    // exits, so every read must see either the whole old file or the whole new
    // one, and once the new one has appeared the old one never comes back.
    let mut looks_at_old = 0;
    let mut committed = false;
    while !push.finished() {
        let now = std::fs::read(&stored).unwrap();
        if now == new {
            committed = true;
        } else {
            assert!(now == old, "a read saw neither the old nor the new file");
            assert!(!committed, "the old file came back after the commit");
            looks_at_old += 1;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(push.wait(DEADLINE).code(), 0);
    assert!(
        looks_at_old >= 3,
        "the old file was observed while the push ran ({looks_at_old} times)"
    );
    assert!(std::fs::read(&stored).unwrap() == new);
}

/// A big file whose last name goes (replaced by a push or a move, removed, alone or with
/// its folder) is let go of after the answer, on a thread of the daemon's: the change
/// is in place at once, and the daemon soon holds no descriptor of the old file (its
/// space is given back).
#[test]
fn a_big_file_replaced_or_removed_is_let_go_of_after_the_answer() {
    use std::os::unix::fs::MetadataExt as _;
    let d = Daemon::start();
    let c = alice(&d);
    let local = TempDir::new().unwrap();
    let stored = d.files_dir("alice").join("big.bin");
    let fds = format!("/proc/{}/fd", d.pid());
    // Pushes `seed`'s 17 MiB as `name`; returns its data and which file it is on the
    // server (device, inode).
    let push = |name: &str, seed: u64, force: bool| {
        let data = random_bytes(17 * CHUNK, seed);
        let path = write_file(local.path(), name, &data);
        let mut args = vec!["push", "-q", &path];
        if force {
            args.push("--force");
        }
        assert_eq!(c.xfer(&args, "").code(), 0);
        let m = std::fs::metadata(d.files_dir("alice").join(name)).unwrap();
        (data, (m.dev(), m.ino()))
    };
    // Waits until no descriptor the daemon holds is file `id`.
    let let_go = |id: (u64, u64), what: &str| {
        let holds = || {
            std::fs::read_dir(&fds)
                .unwrap()
                .flatten()
                .any(|fd| std::fs::metadata(fd.path()).is_ok_and(|m| (m.dev(), m.ino()) == id))
        };
        assert!(
            poll(DEADLINE, || (!holds()).then_some(())).is_some(),
            "the daemon still holds the file {what} open"
        );
    };
    let (_, first) = push("big.bin", 5, false);
    let (second_data, second) = push("big.bin", 6, true);
    assert!(std::fs::read(&stored).unwrap() == second_data);
    let_go(first, "a push replaced");

    let (third_data, third) = push("other.bin", 7, false);
    assert_eq!(
        c.xfer(&["mv", "other.bin", "big.bin", "--force"], "")
            .code(),
        0
    );
    assert!(std::fs::read(&stored).unwrap() == third_data);
    let_go(second, "a move replaced");

    assert_eq!(c.xfer(&["rm", "big.bin"], "").code(), 0);
    assert!(!stored.exists());
    let_go(third, "removed");

    let (_, fourth) = push("in-a-folder.bin", 8, false);
    assert_eq!(c.xfer(&["mkdir", "folder"], "").code(), 0);
    assert_eq!(
        c.xfer(&["mv", "in-a-folder.bin", "folder/in-a-folder.bin"], "")
            .code(),
        0
    );
    assert_eq!(c.xfer(&["rm", "-r", "folder"], "").code(), 0);
    assert!(!d.files_dir("alice").join("folder").exists());
    let_go(fourth, "removed with its folder");
}

fn start_with_storage(storage: &str) -> Daemon {
    Daemon::start_with(&["alice"], Some(&format!("[storage]\n{storage}\n")))
}

#[test]
fn over_quota_is_refused_before_any_chunk_travels() {
    let d = start_with_storage(&format!("quota_bytes = {}", 6 * MIB));
    let c = alice(&d);
    let local = TempDir::new().unwrap();
    let fits = write_file(local.path(), "fits.bin", &random_bytes(4 * CHUNK, 5));
    assert_eq!(c.xfer(&["push", "-q", &fits], "").code(), 0);

    let big = write_file(local.path(), "big.bin", &random_bytes(3 * CHUNK, 6));
    let out = c.xfer(&["push", "-q", &big], "");
    assert_eq!(out.code(), 10, "refused by the server: {}", out.stderr());
    assert!(
        out.stderr().to_lowercase().contains("quota"),
        "{}",
        out.stderr()
    );
    assert!(d.partial_files("alice").is_empty(), "no partial created");
    assert!(c.ls_entry(&["--partial"], "big.bin").is_none());
    assert!(!d.files_dir("alice").join("big.bin").exists());
    assert!(
        d.audit_events("upload")
            .iter()
            .all(|l| !l.contains("big.bin")),
        "{:#?}",
        d.audit_events("upload")
    );
}

#[test]
fn a_file_over_the_size_limit_is_refused_up_front() {
    let d = start_with_storage(&format!("max_file_bytes = {}", 2 * MIB));
    let c = alice(&d);
    let local = TempDir::new().unwrap();
    let big = write_file(local.path(), "big.bin", &random_bytes(2 * CHUNK + 1, 6));
    let out = c.xfer(&["push", "-q", &big], "");
    assert_eq!(out.code(), 10, "{}", out.stderr());
    assert!(d.partial_files("alice").is_empty(), "no partial created");
    let ok = write_file(local.path(), "ok.bin", &random_bytes(2 * CHUNK, 6));
    assert_eq!(c.xfer(&["push", "-q", &ok], "").code(), 0);
}

/// A complete 1×1 PNG.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0xf0,
    0x1f, 0x00, 0x05, 0x00, 0x01, 0xff, 0x89, 0x99, 0x3d, 0x1d, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

#[test]
fn type_policy_goes_by_content_not_by_extension() {
    let d = start_with_storage(
        "[[storage.type_rules]]\ndir = \"images\"\n\
         accept = [\"image/jpeg\", \"image/png\", \"image/gif\", \"image/webp\"]",
    );
    let c = alice(&d);
    assert_eq!(c.xfer(&["mkdir", "images"], "").code(), 0);
    let local = TempDir::new().unwrap();

    let png_as_txt = write_file(local.path(), "picture.txt", PNG);
    let out = c.xfer(&["push", "-q", &png_as_txt, "images/"], "");
    assert_eq!(
        out.code(),
        0,
        "a PNG named .txt is accepted: {}",
        out.stderr()
    );
    assert!(std::fs::read(d.files_dir("alice").join("images/picture.txt")).unwrap() == PNG);

    let text_as_png = write_file(local.path(), "notes.png", b"just some text, not an image\n");
    let out = c.xfer(&["push", "-q", &text_as_png, "images/"], "");
    assert_eq!(
        out.code(),
        10,
        "text named .png is refused: {}",
        out.stderr()
    );
    assert!(
        out.stderr().to_lowercase().contains("type"),
        "clear rejection: {}",
        out.stderr()
    );
    assert!(!d.files_dir("alice").join("images/notes.png").exists());
    assert!(d.partial_files("alice").is_empty(), "no partial created");

    // The rule is per directory: outside images/ the same file is fine.
    let out = c.xfer(&["push", "-q", &text_as_png], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
}

/// Audit defect 5: `push evil.exe tmp/` then `mv tmp/evil.exe images/` (or
/// `mv staging images`) put refused content under the rule. A move is checked like an
/// upload: a file by its content, a directory by the content of every file in it.
#[test]
fn mv_cannot_bring_refused_content_under_a_type_rule() {
    let d = start_with_storage(
        "[[storage.type_rules]]\ndir = \"images\"\n\
         accept = [\"image/jpeg\", \"image/png\", \"image/gif\", \"image/webp\"]",
    );
    let c = alice(&d);
    let files = d.files_dir("alice");
    let local = TempDir::new().unwrap();
    let mut exe = b"MZ\x90\0\x03\0\0\0\x04\0\0\0\xff\xff\0\0".to_vec();
    exe.resize(4096, 0);
    let evil = write_file(local.path(), "evil.exe", &exe);
    let pic = write_file(local.path(), "pic.png", PNG);
    let ok = |args: &[&str]| {
        let out = c.xfer(args, "");
        assert_eq!(out.code(), 0, "{args:?}: {}", out.stderr());
    };
    let refused = |args: &[&str], naming: &str| {
        let out = c.xfer(args, "");
        assert_eq!(out.code(), 10, "{args:?} must be refused: {}", out.stderr());
        let said = out.stderr();
        assert!(
            said.contains(naming) && said.contains("not accepted in `images`"),
            "{args:?}: the refusal names {naming}: {said}"
        );
    };
    ok(&["mkdir", "-p", "images"]);
    ok(&["mkdir", "-p", "tmp"]);
    ok(&["push", "-q", &evil, "tmp/"]);
    ok(&["push", "-q", &pic, "tmp/"]);

    // A file, by its content, whatever its new name.
    refused(&["mv", "tmp/evil.exe", "images/"], "`tmp/evil.exe`");
    refused(
        &["mv", "tmp/evil.exe", "images/holiday.png"],
        "`tmp/evil.exe`",
    );
    assert!(files.join("tmp/evil.exe").exists());
    assert!(!files.join("images/evil.exe").exists());
    assert!(!files.join("images/holiday.png").exists());
    ok(&["mv", "tmp/pic.png", "images/"]);

    // A directory, by its contents at any depth: moved in, or renamed to be the rule's.
    ok(&["mkdir", "-p", "staging/deep"]);
    ok(&["push", "-q", &pic, "staging/"]);
    ok(&["push", "-q", &evil, "staging/deep/"]);
    refused(
        &["mv", "staging", "images/staging"],
        "`staging/deep/evil.exe`",
    );
    ok(&["mv", "images", "gallery"]);
    refused(&["mv", "staging", "images"], "`staging/deep/evil.exe`");
    assert!(files.join("staging/deep/evil.exe").exists());
    assert!(!files.join("images").exists());
    // Once the directory holds only accepted content it may go there.
    ok(&["rm", "staging/deep/evil.exe"]);
    ok(&["mv", "staging", "images"]);
    assert!(files.join("images/pic.png").exists());
    // Outside any rule, anything moves.
    ok(&["mv", "tmp/evil.exe", "gallery/evil.exe"]);

    // The walk is bounded: a directory too large to check is refused, clearly.
    let big = files.join("big");
    for i in 0..10_001 {
        std::fs::create_dir_all(big.join(format!("d{i}"))).unwrap();
    }
    let out = c.xfer(&["mv", "big", "images/big"], "");
    assert_eq!(out.code(), 10, "{}", out.stderr());
    assert!(
        out.stderr().contains("more than 10000 entries"),
        "{}",
        out.stderr()
    );
    assert!(big.exists() && !files.join("images/big").exists());
}

/// A tmpfs mounted for one test, unmounted on drop (after the daemon using it is gone).
struct Tmpfs {
    dir: std::path::PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "80m") at `dir`; `None` (skip) without privileges,
    /// unless XFER_REQUIRE_INTEROP is set.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let out = xfer_e2e::run(
            Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={size},mode=0700"),
                    "tmpfs",
                ])
                .arg(dir),
            "",
        );
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr);
            assert!(
                std::env::var_os("XFER_REQUIRE_INTEROP").is_none(),
                "mounting a tmpfs failed: {why}"
            );
            eprintln!("skipping: cannot mount a tmpfs (needs root): {why}");
            return None;
        }
        Some(Tmpfs {
            dir: dir.to_owned(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Fills the filesystem holding `path` with a file there, until it is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 1 << 20];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
}

/// What every out-of-space case ends with: a clear refusal, a daemon that keeps
/// serving, nothing complete, and a re-run that completes once `filler` is deleted.
fn assert_out_of_space_then_resume(
    d: &Daemon,
    c: &Client,
    other: &Client,
    out: &xfer_e2e::Out,
    path: &str,
    filler: &Path,
    content: &[u8],
) {
    assert_eq!(out.code(), 10, "refused by the server: {}", out.stderr());
    assert!(
        out.stderr().to_lowercase().contains("out of space"),
        "clear error: {}",
        out.stderr()
    );
    assert_eq!(out.stderr().trim().lines().count(), 1, "{}", out.stderr());

    // Nothing appears complete, and the daemon keeps serving.
    assert!(!d.files_dir("alice").join("huge.bin").exists());
    for client in [c, other] {
        assert_eq!(client.xfer(&["whoami"], "").code(), 0);
        if let Some(e) = client.ls_entry(&[], "huge.bin") {
            assert_ne!(e["kind"], "file", "{e}");
        }
    }

    // Space is freed: the re-run completes and the file is identical.
    std::fs::remove_file(filler).unwrap();
    let fresh = alice(d);
    assert_eq!(fresh.xfer(&["whoami"], "").code(), 0, "new logins work");
    let out = c.xfer(&["push", "-q", path], "");
    assert_eq!(out.code(), 0, "after freeing space: {}", out.stderr());
    assert!(std::fs::read(d.files_dir("alice").join("huge.bin")).unwrap() == content);
    let entry = c.ls_entry(&["-l"], "huge.bin").unwrap();
    assert_eq!(entry["digest"], blake3_hex(content));
    assert!(
        poll(DEADLINE, || d
            .partial_files("alice")
            .is_empty()
            .then_some(()))
        .is_some()
    );
}

#[test]
fn a_full_disk_refuses_the_upload_clearly_and_the_rerun_completes_once_space_is_freed() {
    let tmp = TempDir::new().unwrap();
    let data = tmp.path().join("data");
    let Some(_mount) = Tmpfs::mount(&data, "80m") else {
        return;
    };
    // Declared after the mount guard, so the daemon is dropped (killed) first.
    let d = Daemon::start_prepared(
        &data,
        &["alice"],
        Some("[storage]\nmin_free_bytes = 0\n"),
        TempDir::new().unwrap(),
    );
    let c = alice(&d);
    let other = alice(&d);
    // Leave about 38 MiB free for a 64 MiB file.
    let filler = data.join("filler");
    std::fs::write(&filler, vec![0u8; 40 << 20]).unwrap();

    let local = TempDir::new().unwrap();
    let content = random_bytes(64 * CHUNK, 11);
    let path = write_file(local.path(), "huge.bin", &content);
    let out = c.xfer(&["push", "-q", &path], "");
    assert_out_of_space_then_resume(&d, &c, &other, &out, &path, &filler, &content);
}

#[test]
fn a_disk_filling_up_mid_upload_gives_a_clear_error_keeps_serving_and_resumes() {
    let tmp = TempDir::new().unwrap();
    let data = tmp.path().join("data");
    let Some(_mount) = Tmpfs::mount(&data, "100m") else {
        return;
    };
    let d = Daemon::start_prepared(
        &data,
        &["alice"],
        Some("[storage]\nmin_free_bytes = 0\n"),
        TempDir::new().unwrap(),
    );
    let c = alice(&d);
    let other = alice(&d);
    let local = TempDir::new().unwrap();
    let content = random_bytes(64 * CHUNK, 12);
    let path = write_file(local.path(), "huge.bin", &content);

    // Admitted with room to spare; then something else takes the space.
    let push = c.spawn(&["push", "-q", "--limit-rate", "10M", &path]);
    let started = poll(DEADLINE, || {
        other.partial_received("huge.bin").filter(|&r| r >= 8 * MIB)
    });
    assert!(
        started.is_some(),
        "upload under way: {}",
        push.stderr_so_far()
    );
    let filler = data.join("filler");
    fill(&filler);
    let out = push.wait(DEADLINE);
    assert_out_of_space_then_resume(&d, &c, &other, &out, &path, &filler, &content);
}

/// A directory whose listing is larger than a frame (audit defect 4: the connection used
/// to end without a word) lists completely, page by page, for `ls` and `pull -r` alike.
#[test]
fn a_directory_listing_larger_than_a_frame_comes_whole() {
    const FILES: usize = 4_600;
    let d = Daemon::start();
    let c = alice(&d);
    let big = d.files_dir("alice").join("big");
    std::fs::create_dir_all(&big).unwrap();
    // 4,600 names of 240 bytes: about 1.2 MB of entries, more than MAX_FRAME_LEN.
    let pad = "n".repeat(234);
    for i in 0..FILES {
        std::fs::write(big.join(format!("{i:05}-{pad}")), b"x").unwrap();
    }
    let listed = c.ls_json(&["big"]);
    assert_eq!(listed.len(), FILES, "every entry, once");
    let names: Vec<&str> = listed.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert!(names.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
    let plain = c.xfer(&["ls", "big"], "");
    assert_eq!(plain.code(), 0, "{}", plain.stderr());
    assert_eq!(plain.stdout().lines().count(), FILES);
    // The session is still fine afterwards, and a recursive pull walks the whole listing.
    let back = TempDir::new().unwrap();
    let dest = back.path().to_str().unwrap();
    let out = c.xfer(&["pull", "-q", "-r", "big", dest], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert_eq!(
        std::fs::read_dir(back.path().join("big")).unwrap().count(),
        FILES
    );
}
