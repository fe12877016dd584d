//! `xferd migrate` (README "Moving a single host into a bucket"): a single host on its
//! local data directory gets files through the real `xfer` client, is stopped, and its
//! data is copied into a real Garage bucket; the same config with `backend = "s3"` then
//! serves the same names, sizes, digests and modified times, and the same bytes. A run
//! limited to one user, then a full run, then another skip what is already there; an
//! upload in progress is named and left out, and a config without `[storage.s3]` is
//! refused naming the keys to set.

use std::path::Path;

use tempfile::TempDir;
use xfer_e2e::garage::Garage;
use xfer_e2e::{
    Client, DEADLINE, Daemon, MIB, Out, alice, blake3_hex, poll, random_bytes, write_file,
};

/// A modified time far from now, so that a kept time cannot be a coincidence.
const OLD_TIME: u64 = 1_000_000_000;

/// Every entry under `dir`, recursively: `(path, kind, size, digest, modified)`.
fn tree(c: &Client, dir: &str) -> Vec<(String, String, u64, Option<String>, u64)> {
    let mut out = Vec::new();
    let args: Vec<&str> = if dir.is_empty() {
        vec!["-l"]
    } else {
        vec![dir, "-l"]
    };
    for e in c.ls_json(&args) {
        let name = e["name"].as_str().unwrap().to_owned();
        let path = if dir.is_empty() {
            name
        } else {
            format!("{dir}/{name}")
        };
        let kind = e["kind"].as_str().unwrap().to_owned();
        let modified = if kind == "file" {
            e["modified_unix"].as_u64().unwrap()
        } else {
            0
        };
        out.push((
            path.clone(),
            kind.clone(),
            e["size"].as_u64().unwrap(),
            e["digest"].as_str().map(str::to_owned),
            modified,
        ));
        if kind == "dir" {
            out.extend(tree(c, &path));
        }
    }
    out
}

fn ok(c: &Client, args: &[&str]) -> String {
    let out = c.xfer(args, "");
    assert_eq!(out.code(), 0, "xfer {args:?}: {}", out.stderr());
    out.stdout()
}

fn migrate(d: &Path, config: &Path, args: &[&str]) -> Out {
    let mut all = vec!["--config", config.to_str().unwrap(), "migrate"];
    all.extend_from_slice(args);
    Out(xfer_e2e::xferd(d, &all, ""))
}

/// The number before `what` in the summary line (`skipped 3 already there`).
fn count(summary: &str, before: &str) -> u64 {
    let rest = summary
        .split(before)
        .nth(1)
        .unwrap_or_else(|| panic!("no `{before}` in {summary:?}"));
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

fn set_mtime(path: &str, unix: u64) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix))
        .unwrap();
}

#[test]
fn a_single_host_moves_into_the_bucket() {
    let Some(garage) = Garage::start() else {
        return;
    };
    let tmp = TempDir::new().unwrap();
    let data = tmp.path().join("data");
    let creds = tmp.path().join("s3-credentials.toml");
    let s3_config = garage.storage_config(&creds, "site", "");
    let local_config = s3_config.replace("backend = \"s3\"", "backend = \"local\"");
    let keep = TempDir::new().unwrap();
    let mut d = Daemon::start_prepared(&data, &["alice", "bob"], Some(&local_config), keep);
    let config_file = d.config_file();

    // Alice's tree: nested directories, an empty file, a file over 8 MiB (a multipart
    // upload), a name with odd characters, a file with an old modified time; an empty
    // directory; and an upload left unfinished.
    let src = TempDir::new().unwrap();
    let root = src.path().join("tree");
    std::fs::create_dir_all(root.join("docs/deep")).unwrap();
    let big = random_bytes(8 * MIB as usize + 12_345, 1);
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("docs/a.txt", b"hello from the single host\n".to_vec()),
        ("docs/deep/b.bin", random_bytes(3 * MIB as usize + 7, 2)),
        ("a#b %.txt", b"odd name".to_vec()),
        ("empty", Vec::new()),
        ("big.bin", big),
    ];
    for (name, bytes) in &files {
        write_file(&root, name, bytes);
    }
    set_mtime(root.join("docs/a.txt").to_str().unwrap(), OLD_TIME);
    let c = alice(&d);
    ok(&c, &["push", "-q", "-r", root.to_str().unwrap()]);
    ok(&c, &["mkdir", "-p", "tree/nothing/here"]);
    let unfinished = write_file(
        src.path(),
        "unfinished.bin",
        &random_bytes(40 * MIB as usize, 3),
    );
    let mut push = c.spawn(&["push", "-q", "--limit-rate", "5M", &unfinished]);
    assert!(
        poll(DEADLINE, || c
            .partial_received("unfinished.bin")
            .filter(|&r| r >= MIB))
        .is_some(),
        "the unfinished upload never started: {}",
        push.stderr_so_far()
    );
    push.kill9();
    let b = Client::new();
    b.login(&d, "bob", xfer_e2e::PASSWORD);
    let bobs = write_file(src.path(), "bob.txt", b"bob's file");
    ok(&b, &["push", "-q", &bobs]);

    let before = tree(&c, "");
    let bob_before = tree(&b, "");
    let old = before
        .iter()
        .find(|e| e.0 == "tree/docs/a.txt")
        .expect("listed");
    assert_eq!(old.4, OLD_TIME, "push kept the modified time: {before:?}");
    assert_eq!(d.signal_and_wait("TERM"), Some(0));

    // A dry run lists and writes nothing.
    let dry = migrate(&data, &config_file, &["--dry-run"]);
    assert_eq!(dry.code(), 0, "{}", dry.stderr());
    let dry_out = dry.stdout();
    assert!(
        dry_out.contains("would copy alice/tree/a#b %.txt (8 bytes)"),
        "{dry_out}"
    );
    assert!(dry_out.contains("would create directory alice/tree/nothing/here/"));
    assert!(dry_out.contains("not migrated: alice/unfinished.bin: an upload in progress"));
    let summary = dry_out.lines().last().unwrap();
    assert!(
        summary.starts_with("dry run: would copy 6 files"),
        "{summary}"
    );

    // One user first (as a run cut short would leave it): the full run skips bob's file.
    let bob_run = migrate(&data, &config_file, &["--user", "bob"]);
    assert_eq!(bob_run.code(), 0, "{}", bob_run.stderr());
    let bob_out = bob_run.stdout();
    assert!(
        bob_out.contains("copied bob/bob.txt (10 bytes"),
        "{bob_out}"
    );
    assert!(!bob_out.contains("alice/"), "{bob_out}");
    let summary = bob_out.lines().last().unwrap();
    assert!(
        summary.starts_with("migrated 1 file (10 bytes)"),
        "{summary}"
    );

    let run = migrate(&data, &config_file, &[]);
    assert_eq!(run.code(), 0, "{}\n{}", run.stdout(), run.stderr());
    let out = run.stdout();
    assert!(
        out.contains("copied alice/tree/big.bin (8400953 bytes"),
        "{out}"
    );
    assert!(out.contains("not migrated: alice/unfinished.bin: an upload in progress"));
    let summary = out.lines().last().unwrap();
    assert!(summary.starts_with("migrated 5 files ("), "{summary}");
    assert_eq!(count(summary, "skipped "), 1, "{summary}");
    assert!(summary.contains("MB/s"), "{summary}");
    // The local data is untouched.
    for (name, bytes) in &files {
        let local = std::fs::read(d.files_dir("alice").join("tree").join(name)).unwrap();
        assert_eq!(&local, bytes, "{name}");
    }

    // The same config on the bucket.
    std::fs::write(&config_file, &s3_config).unwrap();
    let d2 = Daemon::start_in(&data, &["--config", config_file.to_str().unwrap()])
        .expect("xferd starts on the bucket");
    let c2 = alice(&d2);
    let after = tree(&c2, "");
    let files_before: Vec<_> = before.iter().filter(|e| e.1 != "partial").collect();
    assert_eq!(after.len(), files_before.len(), "{after:?}\n{before:?}");
    for (a, b) in after.iter().zip(files_before) {
        assert_eq!((&a.0, &a.1, a.2, a.4), (&b.0, &b.1, b.2, b.4), "{after:?}");
    }
    for (name, bytes) in &files {
        let e = after
            .iter()
            .find(|e| e.0 == format!("tree/{name}"))
            .unwrap_or_else(|| panic!("tree/{name} not listed: {after:?}"));
        assert_eq!(e.3.as_deref(), Some(blake3_hex(bytes).as_str()), "{name}");
    }
    let b2 = Client::new();
    b2.login(&d2, "bob", xfer_e2e::PASSWORD);
    let bob_after = tree(&b2, "");
    assert_eq!(bob_after.len(), bob_before.len());
    assert_eq!(bob_after[0].2, 10);
    let dest = TempDir::new().unwrap();
    ok(
        &c2,
        &["pull", "-q", "-r", "tree", dest.path().to_str().unwrap()],
    );
    for (name, bytes) in &files {
        let got = std::fs::read(dest.path().join("tree").join(name)).unwrap();
        assert_eq!(&got, bytes, "{name}");
    }
    assert!(dest.path().join("tree/nothing/here").is_dir());
    drop(d2);

    // Again: everything is skipped.
    let again = migrate(&data, &config_file, &[]);
    assert_eq!(again.code(), 0, "{}", again.stderr());
    let out = again.stdout();
    assert!(!out.contains("copied "), "{out}");
    let summary = out.lines().last().unwrap();
    assert!(
        summary.starts_with("migrated 0 files (0 bytes)"),
        "{summary}"
    );
    // 5 of alice's files, her empty directory, bob's file.
    assert_eq!(count(summary, "skipped "), 7, "{summary}");
    drop(tmp);
}

#[test]
fn migrate_refuses_without_a_bucket() {
    let tmp = TempDir::new().unwrap();
    let data = tmp.path().join("data");
    xfer_e2e::add_user(&data, "alice", xfer_e2e::PASSWORD);
    let config = tmp.path().join("xferd.toml");
    std::fs::write(&config, "[storage]\nbackend = \"local\"\n").unwrap();
    let out = migrate(&data, &config, &[]);
    assert_ne!(out.code(), 0);
    let err = out.stderr();
    assert!(
        err.contains("set storage.s3.endpoint and storage.s3.bucket in [storage.s3]"),
        "{err}"
    );
}
