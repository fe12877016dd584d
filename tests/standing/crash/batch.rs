//! `kill -9` of the daemon while `push -r` of many small files commits them in batches
//! (one `syncfs` before and one after each batch's renames), at a random moment once
//! some batches are in place; also `kill -9` of the client in the middle of a `pull -r`
//! that installs small files in batches. After each kill every stored or pulled file is
//! complete (the crash loop's invariants, [`Rig::check`]), and the re-run brings every
//! file, identical.

use std::path::Path;

use xfer_e2e::{DEADLINE, blake3_hex, poll, random_bytes, write_file};

use super::{Rig, Rng, walk};

/// Small files per tree, in five folders.
const FILES: u64 = 300;

/// Writes a tree of small files with unique names; returns its path.
fn small_tree(rig: &mut Rig, rng: &mut Rng, cycle: usize) -> String {
    let root = rig.local.path().join(format!("tree{cycle}"));
    for i in 0..FILES {
        let name = format!("s{cycle}-{i}.txt");
        let data = random_bytes(1 + rng.below(4096) as usize, rng.next());
        rig.sources.insert(name.clone(), blake3_hex(&data));
        let dir = root.join(format!("d{}", i % 5));
        std::fs::create_dir_all(&dir).unwrap();
        write_file(&dir, &name, &data);
    }
    root.display().to_string()
}

fn count(dir: &Path) -> u64 {
    walk(dir).len() as u64
}

#[test]
fn kill9_during_batched_commits_of_small_files_leaves_each_absent_or_complete() {
    let _one = crate::serial();
    let mut rng = Rng::from_env("batched commits");
    let mut rig = Rig::start();
    for cycle in 0..3 {
        let tree = small_tree(&mut rig, &mut rng, cycle);
        let args = ["push", "-q", "-r", tree.as_str(), "batch/"];
        let stored = rig
            .daemon()
            .files_dir("alice")
            .join(format!("batch/tree{cycle}"));
        // Kill once some batches are in place, before the last: mid-sequence.
        let threshold = 1 + rng.below(FILES / 2);
        let mut push = rig.alice.spawn(&args);
        let reached = poll(DEADLINE, || {
            (count(&stored) >= threshold || push.finished()).then_some(())
        });
        assert!(reached.is_some(), "cycle {cycle}: no file arrived");
        let when = format!(
            "cycle {cycle} (daemon killed with {} of {FILES} files in place)",
            count(&stored)
        );
        rig.kill9_daemon_and_restart();
        let out = push.wait(DEADLINE);
        assert!(
            ![7, 101].contains(&out.code()),
            "{when}: the push failed on integrity or panicked: {}",
            out.stderr()
        );
        rig.check(&format!("{when}, after the kill"));
        let again = rig.alice.xfer(&args, "");
        assert_eq!(again.code(), 0, "{when}: re-run: {}", again.stderr());
        assert_eq!(
            count(&stored),
            FILES,
            "{when}: the re-run brought every file"
        );
        rig.check(&format!("{when}, after the re-run"));

        // The client killed while it installs pulled small files in batches.
        let dest = rig.dest.path().join(format!("pull{cycle}"));
        let dest_arg = format!("{}/", dest.display());
        let remote = format!("batch/tree{cycle}");
        let pull = ["pull", "-q", "-r", remote.as_str(), dest_arg.as_str()];
        let mut first = rig.alice.spawn(&pull);
        let threshold = 1 + rng.below(FILES / 2);
        poll(DEADLINE, || {
            (count(&dest) >= threshold || first.finished()).then_some(())
        });
        first.kill9();
        let out = first.wait(DEADLINE);
        assert!(
            ![7, 101].contains(&out.code()),
            "cycle {cycle}: the pull failed on integrity or panicked: {}",
            out.stderr()
        );
        rig.check(&format!("cycle {cycle}, pull killed"));
        let again = rig.alice.xfer(&pull, "");
        assert_eq!(
            again.code(),
            0,
            "cycle {cycle}: pull re-run: {}",
            again.stderr()
        );
        rig.check(&format!("cycle {cycle}, pull re-run"));
        std::fs::remove_dir_all(&dest).unwrap();
    }
    assert!(
        rig.alice.ls_json(&["--partial"]).is_empty(),
        "no partial left once every re-run committed"
    );
}
