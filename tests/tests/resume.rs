//! Resume: after the client or the daemon is killed mid-transfer, re-running the same
//! command continues from the verified state, sends about what was missing, detects a
//! changed local file and repairs corrupted server-side partial data.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use tempfile::TempDir;
use xfer_e2e::{
    CHUNK, Client, DEADLINE, Daemon, MIB, alice, audit_field, audit_u64, blake3_hex, poll,
    random_bytes, write_file,
};

const SIZE: usize = 50 * CHUNK + 4321;
/// How much must have arrived before the transfer is cut.
const CUT_AT: u64 = 10 * MIB;
/// How far the bytes sent on a re-run may differ from what was missing.
const SLACK: u64 = 3 * MIB;

/// Starts a slow push of `path` and waits until the server holds at least `at` bytes
/// of it (per `xfer ls --partial`); returns the still-running push.
fn push_until(c: &Client, path: &str, name: &str, at: u64) -> xfer_e2e::Running {
    let mut push = c.spawn(&["push", "-q", "--limit-rate", "5M", path]);
    let got = poll(DEADLINE, || {
        assert!(
            !push.finished(),
            "push ended before it could be cut: {}",
            push.stderr_so_far()
        );
        c.partial_received(name).filter(|&r| r >= at)
    });
    assert!(got.is_some(), "the server never held {at} bytes of {name}");
    push
}

/// The audit line of the committed upload of `name`.
fn upload_line(d: &Daemon, name: &str) -> String {
    let found = poll(DEADLINE, || {
        d.audit_events("upload")
            .into_iter()
            .rfind(|l| l.contains(name))
    });
    found.unwrap_or_else(|| panic!("no upload audit line for {name}:\n{}", d.log()))
}

/// Asserts the committed upload resumed from at least `CUT_AT` and received about what
/// was missing.
fn assert_resumed(line: &str, size: u64) {
    let resumed = audit_u64(line, "resumed_from").expect("resumed_from= in the audit line");
    let received = audit_u64(line, "bytes_received").expect("bytes_received= in the audit line");
    assert_eq!(audit_u64(line, "bytes"), Some(size), "{line}");
    assert!(
        resumed >= CUT_AT,
        "resumed from {resumed}, want >= {CUT_AT}: {line}"
    );
    let missing = size - resumed;
    assert!(
        received.abs_diff(missing) <= SLACK,
        "re-run received {received} bytes, {missing} were missing: {line}"
    );
}

fn assert_stored(d: &Daemon, c: &Client, name: &str, data: &[u8]) {
    let stored = std::fs::read(d.files_dir("alice").join(name)).expect("committed file");
    assert!(
        stored == data,
        "{name}: stored bytes differ from the local file"
    );
    let entry = c.ls_entry(&["-l"], name).expect("listed");
    assert_eq!(entry["kind"], "file", "{entry}");
    assert_eq!(entry["digest"], blake3_hex(data), "{entry}");
}

#[test]
fn push_resumes_after_client_kill() {
    let d = Daemon::start();
    let c = alice(&d);
    let local = TempDir::new().unwrap();
    let data = random_bytes(SIZE, 21);
    let path = write_file(local.path(), "big.bin", &data);

    let mut push = push_until(&c, &path, "big.bin", CUT_AT);
    push.kill9();
    assert!(!d.files_dir("alice").join("big.bin").exists());

    let out = c.xfer(&["push", "-q", &path], "");
    assert_eq!(out.code(), 0, "re-run: {}", out.stderr());
    assert_stored(&d, &c, "big.bin", &data);
    assert_resumed(&upload_line(&d, "big.bin"), SIZE as u64);
    assert!(
        d.partial_files("alice").is_empty(),
        "partial gone after commit"
    );
}

#[test]
fn push_resumes_after_daemon_kill_and_restart() {
    let d = Daemon::start();
    let c = alice(&d);
    let local = TempDir::new().unwrap();
    let data = random_bytes(SIZE, 22);
    let path = write_file(local.path(), "big.bin", &data);

    let push = push_until(&c, &path, "big.bin", CUT_AT);
    let d = d.kill9_and_restart();
    let cut = push.wait(DEADLINE);
    assert_eq!(
        cut.code(),
        8,
        "a push whose server died is a network error: {}",
        cut.stderr()
    );

    let out = c.xfer(&["push", "-q", &path], "");
    assert_eq!(out.code(), 0, "re-run: {}", out.stderr());
    assert_stored(&d, &c, "big.bin", &data);
    assert_resumed(&upload_line(&d, "big.bin"), SIZE as u64);
}

#[test]
fn pull_resumes_from_its_part_file_after_daemon_kill_and_restart() {
    let d = Daemon::start();
    let c = alice(&d);
    let local = TempDir::new().unwrap();
    let data = random_bytes(SIZE, 23);
    let path = write_file(local.path(), "big.bin", &data);
    let out = c.xfer(&["push", "-q", &path], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());

    let dest = TempDir::new().unwrap();
    let dest_arg = format!("{}/", dest.path().display());
    let part: PathBuf = dest.path().join("big.bin.xfer-part");
    let done = dest.path().join("big.bin");
    let mut pull = c.spawn(&["pull", "-q", "--limit-rate", "5M", "big.bin", &dest_arg]);
    let reached = poll(DEADLINE, || {
        assert!(
            !pull.finished(),
            "pull ended early: {}",
            pull.stderr_so_far()
        );
        let len = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        (len >= CUT_AT).then_some(len)
    });
    assert!(
        reached.is_some(),
        "the part file never reached {CUT_AT} bytes"
    );
    let d = d.kill9_and_restart();
    let cut = pull.wait(DEADLINE);
    assert_eq!(cut.code(), 8, "network error: {}", cut.stderr());
    assert!(
        !done.exists(),
        "nothing renamed into place before verification"
    );
    let kept = std::fs::metadata(&part).expect("part file kept for resume");
    // The data the part file holds so far is the file's prefix, verified.
    let held = std::fs::read(&part).unwrap();
    let verified_prefix = held.iter().zip(&data).take_while(|(a, b)| a == b).count() as u64;
    assert!(
        verified_prefix >= CUT_AT,
        "part holds {verified_prefix} good bytes"
    );

    // Re-run slowly, watching that the part file is continued, not started over.
    let mut again = c.spawn(&["pull", "-q", "--limit-rate", "20M", "big.bin", &dest_arg]);
    let mut min_len = u64::MAX;
    while !again.finished() {
        if let Ok(m) = std::fs::metadata(&part) {
            assert_eq!(
                m.ino(),
                kept.ino(),
                "the part file was replaced, not resumed"
            );
            min_len = min_len.min(m.len());
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let out = again.wait(DEADLINE);
    assert_eq!(out.code(), 0, "re-run: {}", out.stderr());
    assert!(
        min_len == u64::MAX || min_len >= kept.len().min(CUT_AT),
        "part shrank to {min_len}"
    );
    assert!(
        std::fs::read(&done).unwrap() == data,
        "pulled file identical"
    );
    assert!(!part.exists(), "part file renamed away");

    // The server saw a resumed download that sent about what was missing.
    let line = poll(DEADLINE, || d.audit_events("download").pop())
        .unwrap_or_else(|| panic!("no download audit line:\n{}", d.log()));
    assert_eq!(
        audit_field(&line, "resumed").as_deref(),
        Some("true"),
        "{line}"
    );
    let sent = audit_u64(&line, "bytes").expect("bytes= in the download line");
    let missing = SIZE as u64 - verified_prefix.min(SIZE as u64);
    assert!(
        sent <= missing + SLACK,
        "re-run sent {sent} bytes, {missing} were missing: {line}"
    );
}

#[test]
fn a_corrupted_byte_in_the_servers_partial_is_detected_and_repaired() {
    let d = Daemon::start();
    let c = alice(&d);
    let local = TempDir::new().unwrap();
    let data = random_bytes(SIZE, 24);
    let path = write_file(local.path(), "big.bin", &data);

    let mut push = push_until(&c, &path, "big.bin", CUT_AT);
    push.kill9();
    let parts = d.partial_files("alice");
    assert_eq!(parts.len(), 1, "one partial: {parts:?}");
    let mut bytes = std::fs::read(&parts[0]).unwrap();
    // Flip a byte in chunk 0 and one in chunk 3, both held and acknowledged.
    for at in [100_000, 3 * CHUNK + 17] {
        bytes[at] ^= 0x5a;
    }
    std::fs::write(&parts[0], &bytes).unwrap();

    let out = c.xfer(&["push", "-q", &path], "");
    assert_eq!(out.code(), 0, "re-run repairs: {}", out.stderr());
    assert_stored(&d, &c, "big.bin", &data);
}

/// What the server holds is trusted when it is exactly as synced and sealed (a resumed
/// push does not read it back); bit rot (data changed, file times not) is caught where
/// it is for every stored file: the download sends the digests verified on arrival and
/// the receiver checks them. Here, in a committed file.
#[test]
fn a_stored_file_that_rots_on_the_servers_disk_is_refused_by_pull() {
    let d = Daemon::start();
    let c = alice(&d);
    let local = TempDir::new().unwrap();
    let data = random_bytes(SIZE, 28);
    let path = write_file(local.path(), "big.bin", &data);
    let out = c.xfer(&["push", "-q", &path], "");
    assert_eq!(out.code(), 0, "push: {}", out.stderr());

    // One byte of chunk 3 flips on disk; the modification time is put back, so the
    // file still looks like the one its manifest describes.
    let stored = d.files_dir("alice").join("big.bin");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&stored)
        .unwrap();
    let modified = file.metadata().unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[3 * CHUNK + 5] ^= 0x08;
    std::os::unix::fs::FileExt::write_all_at(
        &file,
        &bytes[3 * CHUNK + 5..3 * CHUNK + 6],
        (3 * CHUNK + 5) as u64,
    )
    .unwrap();
    file.set_modified(modified).unwrap();
    drop(file);

    let into = local.path().join("back.bin");
    let out = c.xfer(&["pull", "-q", "big.bin", into.to_str().unwrap()], "");
    assert_ne!(out.code(), 0, "a rotten chunk was accepted");
    let err = out.stderr();
    assert!(err.trim().lines().count() == 1, "one line: {err}");
    assert!(
        err.contains("chunk 3 does not match the digest the server stored"),
        "{err}"
    );
    assert!(!into.exists(), "nothing lands under the name asked for");
}

#[test]
fn a_local_file_changed_between_runs_ends_equal_to_the_new_content() {
    let d = Daemon::start();
    let c = alice(&d);
    let local = TempDir::new().unwrap();
    let mut data = random_bytes(SIZE, 25);
    let path = write_file(local.path(), "big.bin", &data);

    let mut push = push_until(&c, &path, "big.bin", CUT_AT);
    push.kill9();
    // Change chunks the server already holds, and the tail.
    for at in [5, 2 * CHUNK + 999, 7 * CHUNK, SIZE - 1] {
        data[at] ^= 0xff;
    }
    std::fs::write(&path, &data).unwrap();

    let out = c.xfer(&["push", "-q", &path], "");
    assert_eq!(out.code(), 0, "re-run: {}", out.stderr());
    assert_stored(&d, &c, "big.bin", &data);
}

#[test]
fn a_local_file_that_changed_size_between_runs_ends_equal_to_the_new_content() {
    let d = Daemon::start();
    let c = alice(&d);
    let local = TempDir::new().unwrap();
    let data = random_bytes(SIZE, 26);
    let path = write_file(local.path(), "big.bin", &data);

    let mut push = push_until(&c, &path, "big.bin", CUT_AT);
    push.kill9();
    let shorter = random_bytes(12 * CHUNK + 5, 27);
    std::fs::write(&path, &shorter).unwrap();

    let out = c.xfer(&["push", "-q", &path], "");
    assert_eq!(out.code(), 0, "re-run: {}", out.stderr());
    assert_stored(&d, &c, "big.bin", &shorter);
}

/// The resume record the client keeps for its one interrupted push (`pushes/*.rec` in
/// its home), once it exists.
fn push_record(c: &Client) -> PathBuf {
    let found = poll(DEADLINE, || {
        let dir = std::fs::read_dir(c.home().join("pushes")).ok()?;
        let recs: Vec<PathBuf> = dir
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "rec"))
            .collect();
        (recs.len() == 1).then(|| recs[0].clone())
    });
    found.expect("the interrupted push left a resume record")
}

/// Appends an entry for every chunk of a file of `size` bytes to the record at `path`,
/// each chunk's digest from `digest_of(index, offset, len)`; what a run that hashed the
/// whole file after it settled would have recorded (a killed run records fewer).
fn add_record_entries(
    path: &PathBuf,
    size: usize,
    digest_of: impl Fn(usize, usize, usize) -> [u8; 32],
) {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    for (i, offset) in (0..size).step_by(CHUNK).enumerate() {
        let len = CHUNK.min(size - offset);
        f.write_all(&(i as u64).to_le_bytes()).unwrap();
        f.write_all(&digest_of(i, offset, len)).unwrap();
    }
}

fn chunk_digest(data: &[u8], offset: usize, len: usize) -> [u8; 32] {
    let d = xfer_proto::Digest::of_chunk(
        &data[offset..offset + len],
        offset as u64,
        data.len() as u64,
    );
    d.expect("a protocol chunk").0
}

const BY_RECORD: &str = "by the record of the interrupted run";

#[test]
fn the_rerun_of_an_unchanged_file_takes_the_held_chunks_from_its_record() {
    let d = Daemon::start();
    let c = alice(&d);
    let local = TempDir::new().unwrap();
    let data = random_bytes(SIZE, 30);
    let path = write_file(local.path(), "big.bin", &data);
    let mut push = push_until(&c, &path, "big.bin", CUT_AT);
    push.kill9();
    let record = push_record(&c);
    add_record_entries(&record, SIZE, |_, offset, len| {
        chunk_digest(&data, offset, len)
    });

    let out = c.xfer(&["push", &path], "");
    assert_eq!(out.code(), 0, "re-run: {}", out.stderr());
    assert!(out.stderr().contains(BY_RECORD), "{}", out.stderr());
    assert_stored(&d, &c, "big.bin", &data);
    assert_resumed(&upload_line(&d, "big.bin"), SIZE as u64);
    assert!(!record.exists(), "the record is removed once committed");
}

#[test]
fn a_stale_or_tampered_push_record_changes_nothing_that_is_committed() {
    let d = Daemon::start();
    let c = alice(&d);
    let local = TempDir::new().unwrap();

    // Stale: true digests of the content the file had, but the file changed since
    // (same size, other bytes in chunks the server holds).
    let old = random_bytes(SIZE, 31);
    let path = write_file(local.path(), "stale.bin", &old);
    let mut push = push_until(&c, &path, "stale.bin", CUT_AT);
    push.kill9();
    let record = push_record(&c);
    add_record_entries(&record, SIZE, |_, offset, len| {
        chunk_digest(&old, offset, len)
    });
    let mut new = old.clone();
    for at in [5, 3 * CHUNK + 17, SIZE - 1] {
        new[at] ^= 0xff;
    }
    std::fs::write(&path, &new).unwrap();
    let out = c.xfer(&["push", &path], "");
    assert_eq!(out.code(), 0, "re-run: {}", out.stderr());
    assert!(!out.stderr().contains(BY_RECORD), "{}", out.stderr());
    assert_stored(&d, &c, "stale.bin", &new);

    // Tampered: the file is unchanged, the record's digests are not the file's.
    let data = random_bytes(SIZE, 32);
    let path = write_file(local.path(), "tampered.bin", &data);
    let mut push = push_until(&c, &path, "tampered.bin", CUT_AT);
    push.kill9();
    let record = push_record(&c);
    add_record_entries(&record, SIZE, |i, _, _| [i as u8 ^ 0x5a; 32]);
    let out = c.xfer(&["push", &path], "");
    assert_eq!(out.code(), 0, "re-run: {}", out.stderr());
    assert!(!out.stderr().contains(BY_RECORD), "{}", out.stderr());
    assert_stored(&d, &c, "tampered.bin", &data);
    assert!(!record.exists());
}

#[test]
fn ctrl_c_says_what_was_kept_and_the_rerun_says_it_resumes_as_it_starts() {
    let d = Daemon::start();
    let c = alice(&d);
    let local = TempDir::new().unwrap();
    let data = random_bytes(20 * CHUNK, 29);
    let path = write_file(local.path(), "big.bin", &data);
    let push = push_until(&c, &path, "big.bin", 2 * MIB);
    push.signal("INT");
    let out = push.wait(DEADLINE);
    assert_eq!(out.code(), 130, "{}", out.stderr());
    let said = out.stderr();
    assert!(said.contains("xfer: interrupted at "), "{said}");
    assert!(
        said.contains(" of 20.0 MiB of big.bin; the server keeps what it verified (see `xfer ls --partial`) — run the same command to resume"),
        "{said}"
    );

    // Slowed, so the note is seen while the rest still moves: it comes first.
    let rerun = c.spawn(&["push", "--limit-rate", "5M", &path]);
    let note = poll(DEADLINE, || {
        let err = rerun.stderr_so_far();
        err.contains("big.bin: resuming; the server holds ")
            .then_some(err)
    });
    assert!(note.is_some(), "no resume note: {}", rerun.stderr_so_far());
    assert!(
        c.partial_received("big.bin").is_some(),
        "noted before it ended"
    );
    let out = rerun.wait(DEADLINE);
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert!(
        out.stderr()
            .contains(" of 20.0 MiB (each chunk is checked against this file"),
        "{}",
        out.stderr()
    );
    assert_stored(&d, &c, "big.bin", &data);
}

#[test]
fn rm_partial_discards_an_interrupted_upload() {
    let d = Daemon::start();
    let c = alice(&d);
    let local = TempDir::new().unwrap();
    let data = random_bytes(20 * CHUNK, 28);
    let path = write_file(local.path(), "big.bin", &data);
    let mut push = push_until(&c, &path, "big.bin", 2 * MIB);
    push.kill9();
    assert!(c.partial_received("big.bin").is_some());

    // Without --partial there is no file to remove; the error says what to run instead.
    let out = c.xfer(&["rm", "big.bin"], "");
    assert_eq!(out.code(), 5, "{}", out.stderr());
    assert!(
        out.stderr()
            .contains("`big.bin` is an upload in progress, not a file yet; discard it with `xfer rm --partial big.bin`"),
        "{}",
        out.stderr()
    );
    assert!(c.partial_received("big.bin").is_some(), "kept");

    let out = c.xfer(&["rm", "--partial", "big.bin"], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert!(c.partial_received("big.bin").is_none(), "no longer listed");
    assert!(d.partial_files("alice").is_empty(), "partial data removed");
}

#[test]
fn abandoned_partials_expire_and_are_removed_by_the_daemon() {
    let d = Daemon::start_with(&["alice"], Some("[storage]\npartial_ttl_secs = 1\n"));
    let c = alice(&d);
    let local = TempDir::new().unwrap();
    let data = random_bytes(20 * CHUNK, 29);
    let path = write_file(local.path(), "big.bin", &data);
    let mut push = push_until(&c, &path, "big.bin", 2 * MIB);
    push.kill9();

    let gone = poll(2 * DEADLINE, || {
        (d.partial_files("alice").is_empty() && c.partial_received("big.bin").is_none())
            .then_some(())
    });
    assert!(gone.is_some(), "the expired partial was removed");
    assert!(!d.files_dir("alice").join("big.bin").exists());
}

#[test]
fn a_users_own_part_file_is_left_untouched_by_pull() {
    let d = Daemon::start();
    let c = alice(&d);
    let local = TempDir::new().unwrap();
    let data = random_bytes(3 * CHUNK + 7, 31);
    let path = write_file(local.path(), "x", &data);
    let out = c.xfer(&["push", "-q", &path], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());

    // The user's own file, named like a part file and holding the remote file's prefix
    // (so a resume would even find chunks that verify).
    let dest = TempDir::new().unwrap();
    let mine = dest.path().join("x.xfer-part");
    let content = data[..2 * CHUNK].to_vec();
    std::fs::write(&mine, &content).unwrap();
    let before = std::fs::metadata(&mine).unwrap();
    let dest_arg = format!("{}/", dest.path().display());
    let out = c.xfer(&["pull", "x", &dest_arg], "");
    assert_eq!(out.code(), 6, "a conflict: {}", out.stderr());
    assert!(
        out.stderr()
            .contains("x.xfer-part exists and was not made by xfer"),
        "says which file and why: {}",
        out.stderr()
    );
    let after = std::fs::metadata(&mine).expect("the user's file is still there");
    assert_eq!(std::fs::read(&mine).unwrap(), content, "not modified");
    assert_eq!((after.ino(), after.mtime()), (before.ino(), before.mtime()));
    assert!(
        !dest.path().join("x").exists(),
        "nothing renamed into place"
    );

    // Moved away, the pull goes through and leaves neither part file nor record.
    std::fs::rename(&mine, dest.path().join("mine")).unwrap();
    let out = c.xfer(&["pull", "-q", "x", &dest_arg], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert_eq!(std::fs::read(dest.path().join("x")).unwrap(), data);
    assert!(!dest.path().join("x.xfer-part").exists());
    assert!(!dest.path().join("x.xfer-part.json").exists());
}

#[test]
fn upload_state_left_by_a_crash_after_commit_is_not_a_partial() {
    let d = Daemon::start();
    let c = alice(&d);
    let local = TempDir::new().unwrap();
    let data = random_bytes(SIZE, 37);
    let path = write_file(local.path(), "big.bin", &data);

    // The upload's saved state as it was while data still arrived...
    let mut push = push_until(&c, &path, "big.bin", CUT_AT);
    push.kill9();
    let metas: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(d.partials_dir("alice"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "meta"))
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    assert_eq!(metas.len(), 1, "one upload in progress");
    // ...then committed, then the state put back: what a crash (or a failed unlink)
    // between the commit's rename and the state's removal leaves.
    let out = c.xfer(&["push", "-q", &path], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    for (p, bytes) in &metas {
        std::fs::write(p, bytes).unwrap();
    }

    let entries: Vec<_> = c
        .ls_json(&[])
        .into_iter()
        .filter(|e| e["name"] == "big.bin")
        .map(|e| e["kind"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(entries, ["file"], "listed once, as the file");
    assert!(c.ls_json(&["--partial"]).is_empty(), "no partial");
    let who: serde_json::Value =
        serde_json::from_str(&c.xfer(&["whoami", "--json"], "").stdout()).unwrap();
    assert_eq!(who["quota_used_bytes"], SIZE as u64, "counted once: {who}");
    assert!(!metas[0].0.exists(), "the stale state was removed");
}
