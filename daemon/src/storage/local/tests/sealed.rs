//! Resuming under a seal (`seal.rs`): the chunks of a partial a connection closed are
//! trusted at once, and still re-hashed before the commit, so damage the seal cannot
//! show (bit rot: data changed, file times not) is never committed.

use super::seal::Seal;
use super::*;

fn meta_path(f: &Fixture, path: &str) -> PathBuf {
    f.partials("alice").join(format!("{}.meta", p(path).key()))
}

fn sealed_in_meta(f: &Fixture, path: &str) -> Option<serde_json::Value> {
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(meta_path(f, path)).unwrap()).unwrap();
    meta.get("sealed").cloned()
}

#[tokio::test]
async fn a_sealed_partial_is_trusted_at_once_and_damage_is_still_caught_before_commit() {
    let f = fixture();
    let data = random_bytes(4 * CHUNK_SIZE as usize, 41);
    let up = f.ready("alice", "big", &data).await;
    send_chunks(&*up, &data, 0..3).await;
    up.persist().await.unwrap();
    drop(up);
    assert!(
        sealed_in_meta(&f, "big").is_some(),
        "closing the upload seals it"
    );

    // A byte of chunk 1 rots on disk, and the seal is made to match the file as it is
    // now, as if the damage had left no trace in the file's times.
    let part = f.partials("alice").join(format!("{}.part", p("big").key()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&part)
        .unwrap();
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, CHUNK_SIZE + 99).unwrap();
    file.write_all_at(&[b[0] ^ 0x10], CHUNK_SIZE + 99).unwrap();
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(meta_path(&f, "big")).unwrap()).unwrap();
    meta["sealed"] = serde_json::to_value(Seal::of(&file).unwrap()).unwrap();
    std::fs::write(meta_path(&f, "big"), serde_json::to_vec(&meta).unwrap()).unwrap();
    drop(file);

    // Trusted at once: all three are offered as held.
    let up = f.ready("alice", "big", &data).await;
    assert_eq!(up.chunks_held(), 3);
    send_chunks(&*up, &data, 3..4).await;
    // The re-check found chunk 1 damaged: no commit.
    match up.commit(Digest::of(&data)).await {
        Err(StorageError::ChecksumMismatch(m)) => assert!(m.contains("damaged"), "{m}"),
        other => panic!("a damaged chunk was committed: {other:?}"),
    }
    assert!(!f.home("alice").join("big").exists());
    drop(up);

    // The next attempt asks for chunk 1 again and ends with the right content.
    let up = f.ready("alice", "big", &data).await;
    let held = up.held_digests(0, 4);
    assert!(held[0].is_some() && held[1].is_none() && held[2].is_some() && held[3].is_some());
    send_chunks(&*up, &data, 1..2).await;
    up.commit(Digest::of(&data)).await.unwrap();
    assert_eq!(std::fs::read(f.home("alice").join("big")).unwrap(), data);
}

#[tokio::test]
async fn a_partial_written_after_its_seal_is_verified_before_the_resume_is_answered() {
    let f = fixture();
    let data = random_bytes(3 * CHUNK_SIZE as usize, 42);
    let up = f.ready("alice", "w", &data).await;
    send_chunks(&*up, &data, 0..2).await;
    up.persist().await.unwrap();
    drop(up);
    let sealed = sealed_in_meta(&f, "w").expect("sealed at close");

    // Someone else writes the data after the seal: its times change, the seal no longer
    // matches, and every recorded chunk is read back before the resume is answered.
    let part = f.partials("alice").join(format!("{}.part", p("w").key()));
    let file = std::fs::OpenOptions::new().write(true).open(&part).unwrap();
    file.write_all_at(b"x", 10).unwrap();
    drop(file);
    let up = f.ready("alice", "w", &data).await;
    assert_eq!(up.chunks_held(), 1, "chunk 0 was dropped before the answer");
    // Resumed and written to: the old seal is gone from the saved state.
    send_chunks(&*up, &data, 0..1).await;
    up.persist().await.unwrap();
    let resealed = sealed_in_meta(&f, "w").expect("sealed again at close");
    assert_ne!(resealed, sealed);
    send_chunks(&*up, &data, 2..3).await;
    up.commit(Digest::of(&data)).await.unwrap();
    assert_eq!(std::fs::read(f.home("alice").join("w")).unwrap(), data);
}
