//! Many small files over one connection: `push -r` and `pull -r` of a tree of small files
//! (each travels whole, many in flight, committed in batches) with a larger file among
//! them (the chunked way, in between). Every file arrives byte-identical with its time,
//! each gets its own result line, the summary counts them all, and a re-run finds them
//! up to date; a changed file is a conflict, the others are untouched. No part file or
//! record is left behind, and the daemon holds no temporary once the push is answered.

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use tempfile::TempDir;
use xfer_e2e::{CHUNK, Daemon, alice, blake3_hex, random_bytes, write_file};

/// Files in the tree: 6 folders of small files (0 B to 4 KiB), two on either side of
/// the size whose data is written apart from its message (64 KiB), one file of exactly
/// one chunk and one a byte larger.
fn tree(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for dir in 0..6 {
        let d = root.join(format!("d{dir}"));
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..40u64 {
            let seed = dir * 1000 + i;
            let data = random_bytes((seed as usize * 97) % 4097, seed);
            let name = format!("f{i:03}.txt");
            write_file(&d, &name, &data);
            // Distinct times, to see each one kept.
            let t = UNIX_EPOCH + Duration::from_secs(1_600_000_000 + seed);
            std::fs::File::options()
                .write(true)
                .open(d.join(&name))
                .unwrap()
                .set_modified(t)
                .unwrap();
            files.push((PathBuf::from(format!("d{dir}/{name}")), data));
        }
    }
    for (name, len) in [
        // Whole files whose data travels apart from the rest of their frame, and below.
        ("apart.bin", 64 * 1024),
        ("not-apart.bin", 64 * 1024 - 1),
        ("one-chunk.bin", CHUNK),
        ("chunk-and-a-byte.bin", CHUNK + 1),
    ] {
        let data = random_bytes(len, len as u64);
        write_file(&root.join("d3"), name, &data);
        files.push((PathBuf::from(format!("d3/{name}")), data));
    }
    files
}

fn mtime(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn leftovers(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().unwrap().is_dir() {
            out.extend(leftovers(&e.path()));
        } else if name.contains(".xfer-part") || name.starts_with(".xfer-record-") {
            out.push(e.path().display().to_string());
        }
    }
    out
}

#[test]
fn push_and_pull_of_many_small_files_arrive_whole_with_results_summary_and_times() {
    let d = Daemon::start();
    let c = alice(&d);
    let local = TempDir::new().unwrap();
    let src = local.path().join("tree");
    let files = tree(&src);
    let n = files.len();
    let src_arg = src.display().to_string();

    let out = c.xfer(&["push", "-r", &src_arg, "backup/"], "");
    assert_eq!(out.code(), 0, "push -r: {}", out.stderr());
    let stdout = out.stdout();
    let home = d.files_dir("alice").join("backup/tree");
    for (rel, data) in &files {
        let stored = home.join(rel);
        assert!(
            std::fs::read(&stored).unwrap() == *data,
            "{} differs",
            rel.display()
        );
        let line = format!("backup/tree/{}  ", rel.display());
        assert_eq!(
            stdout.lines().filter(|l| l.starts_with(&line)).count(),
            1,
            "one result line for {}: {stdout}",
            rel.display()
        );
        assert_eq!(mtime(&stored), mtime(&src.join(rel)), "{}", rel.display());
    }
    assert!(
        stdout.contains(&format!(
            "{n} files: {n} transferred, 0 up to date, 0 conflicts, 0 failed"
        )),
        "{stdout}"
    );
    assert!(
        d.partial_files("alice").is_empty(),
        "no temporary stays on the server: {:?}",
        d.partial_files("alice")
    );
    let entry = c
        .ls_entry(&["-l", "backup/tree/d2"], "f007.txt")
        .expect("listed");
    assert_eq!(entry["kind"], "file", "{entry}");
    assert_eq!(entry["digest"], blake3_hex(&files[87].1), "{entry}");

    // Again: everything is there already.
    let out = c.xfer(&["push", "-r", &src_arg, "backup/"], "");
    assert_eq!(out.code(), 0, "re-push: {}", out.stderr());
    assert!(
        out.stdout().contains(&format!(
            "{n} files: 0 transferred, {n} up to date, 0 conflicts, 0 failed"
        )),
        "{}",
        out.stdout()
    );

    // One file changed locally: a conflict for it alone, the stored one untouched.
    std::fs::write(src.join("d1/f005.txt"), b"changed").unwrap();
    let out = c.xfer(&["push", "-r", &src_arg, "backup/"], "");
    assert_eq!(out.code(), 6, "conflict: {}", out.stderr());
    assert!(
        out.stderr()
            .contains("backup/tree/d1/f005.txt exists; use --force"),
        "{}",
        out.stderr()
    );
    assert!(
        out.stdout().contains(&format!(
            "{n} files: 0 transferred, {} up to date, 1 conflicts, 0 failed",
            n - 1
        )),
        "{}",
        out.stdout()
    );
    assert!(std::fs::read(home.join("d1/f005.txt")).unwrap() == files[45].1);

    // Back down: identical, with the server's times, nothing of xfer's left beside.
    let back = TempDir::new().unwrap();
    let back_arg = format!("{}/", back.path().display());
    let out = c.xfer(&["pull", "-r", "backup/tree", &back_arg], "");
    assert_eq!(out.code(), 0, "pull -r: {}", out.stderr());
    for (rel, data) in &files {
        let got = back.path().join("tree").join(rel);
        assert!(
            std::fs::read(&got).unwrap() == *data,
            "pulled {} differs",
            rel.display()
        );
        assert_eq!(mtime(&got), mtime(&home.join(rel)), "{}", rel.display());
    }
    assert!(
        out.stdout().contains(&format!(
            "{n} files: {n} transferred, 0 up to date, 0 conflicts, 0 failed"
        )),
        "{}",
        out.stdout()
    );
    assert_eq!(leftovers(back.path()), Vec::<String>::new());
    let out = c.xfer(&["pull", "-r", "backup/tree", &back_arg], "");
    assert_eq!(out.code(), 0, "re-pull: {}", out.stderr());
    assert!(
        out.stdout().contains(&format!(
            "{n} files: 0 transferred, {n} up to date, 0 conflicts, 0 failed"
        )),
        "{}",
        out.stdout()
    );
}

/// `pull -r` into a tree where some files exist: free names get the new file (written
/// unnamed, linked in at install), `--force` replaces the others (through part files),
/// a user's own `NAME.xfer-part` is never touched, and the files get the modes any new
/// file gets under the same umask.
#[test]
fn pull_r_fills_free_names_replaces_with_force_and_leaves_a_users_part_file_alone() {
    use std::os::unix::fs::PermissionsExt as _;
    let d = Daemon::start();
    let c = alice(&d);
    let local = TempDir::new().unwrap();
    let src = local.path().join("tree");
    let files = tree(&src);
    let n = files.len();
    let out = c.xfer(&["push", "-r", &src.display().to_string()], "");
    assert_eq!(out.code(), 0, "push -r: {}", out.stderr());

    let back = TempDir::new().unwrap();
    let dest = back.path().join("tree");
    std::fs::create_dir_all(dest.join("d1")).unwrap();
    // Two files there already with other content, and a user's own part file beside a
    // free name.
    std::fs::write(dest.join("d1/f005.txt"), b"mine").unwrap();
    std::fs::write(dest.join("d1/f006.txt"), b"mine too").unwrap();
    std::fs::write(dest.join("d1/f007.txt.xfer-part"), b"the user's").unwrap();
    let back_arg = format!("{}/", back.path().display());

    let out = c.xfer(&["pull", "-r", "tree", &back_arg], "");
    assert_eq!(out.code(), 6, "conflicts: {}", out.stderr());
    assert!(
        out.stdout().contains(&format!(
            "{n} files: {} transferred, 0 up to date, 3 conflicts, 0 failed",
            n - 3
        )),
        "{}",
        out.stdout()
    );
    assert_eq!(std::fs::read(dest.join("d1/f005.txt")).unwrap(), b"mine");
    assert_eq!(
        std::fs::read(dest.join("d1/f007.txt.xfer-part")).unwrap(),
        b"the user's"
    );
    assert!(!dest.join("d1/f007.txt").exists());

    std::fs::remove_file(dest.join("d1/f007.txt.xfer-part")).unwrap();
    let out = c.xfer(&["pull", "-r", "--force", "tree", &back_arg], "");
    assert_eq!(out.code(), 0, "pull -r --force: {}", out.stderr());
    let probe = back.path().join("probe");
    std::fs::write(&probe, b"").unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    for (rel, data) in &files {
        let got = dest.join(rel);
        assert!(
            std::fs::read(&got).unwrap() == *data,
            "{} differs",
            rel.display()
        );
        assert_eq!(mode(&got), mode(&probe), "{}", rel.display());
    }
    assert_eq!(leftovers(back.path()), Vec::<String>::new());
}

/// Under a low limit on open files (`ulimit -n 64`), `pull -r` of many small files
/// installs smaller batches instead of failing files for want of descriptors: each
/// file waits for its batch in a file of its own, held open.
#[test]
fn pull_of_many_small_files_fits_a_low_limit_on_open_files() {
    let d = Daemon::start();
    let c = alice(&d);
    let local = TempDir::new().unwrap();
    let src = local.path().join("flat");
    std::fs::create_dir(&src).unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..400u64)
        .map(|i| (format!("f{i:03}"), random_bytes(1024 + i as usize, i)))
        .collect();
    for (name, data) in &files {
        write_file(&src, name, data);
    }
    let out = c.xfer(&["push", "-r", "-q", &src.display().to_string()], "");
    assert_eq!(out.code(), 0, "push -r: {}", out.stderr());
    let back = local.path().join("back");
    std::fs::create_dir(&back).unwrap();
    let out = std::process::Command::new("bash")
        .args(["-c", "ulimit -n 64 && exec \"$0\" \"$@\""])
        .arg(xfer_e2e::bin("xfer"))
        .args(["pull", "-r", "-q", "flat"])
        .arg(&back)
        .env("XFER_HOME", c.home())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let first: Vec<&str> = err.lines().take(5).collect();
    assert!(out.status.success(), "pull -r: {first:?}");
    for (name, data) in &files {
        assert!(
            std::fs::read(back.join("flat").join(name)).unwrap() == *data,
            "{name} differs"
        );
    }
    assert!(leftovers(&back).is_empty(), "{:?}", leftovers(&back));
}
