//! Resuming under a seal (`seal.rs`): the chunks of a partial a connection closed are
//! trusted as recorded without being read back; damage the seal cannot show (bit rot:
//! data changed, file times not) is caught by the receiver, as for any stored file. A
//! partial written since its seal is read back before the resume is answered.

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
async fn a_sealed_partial_is_trusted_without_reading_it_back_and_the_receiver_catches_rot() {
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

    // Trusted as sealed: all three are held, nothing is read back, the commit goes
    // through on the digests verified when the chunks arrived.
    let up = f.ready("alice", "big", &data).await;
    assert_eq!(up.chunks_held(), 3);
    send_chunks(&*up, &data, 3..4).await;
    up.commit(Digest::of(&data)).await.unwrap();

    // The manifest keeps those digests, and a download sends them with the data as it
    // is on disk: chunk 1 no longer matches its digest, which is what the receiver
    // checks (as for a committed file that rots).
    let dl = f.storage.open_download("alice", &p("big")).await.unwrap();
    assert_eq!(dl.digest(), Digest::of(&data));
    for i in 0..4 {
        let (digest, bytes) = dl.read_chunk(i).await.unwrap();
        let intact = &data[(i * CHUNK_SIZE) as usize..((i + 1) * CHUNK_SIZE) as usize];
        assert_eq!(
            Digest::of_chunk(intact, i * CHUNK_SIZE, dl.size()),
            Some(digest)
        );
        let matches = Digest::of_chunk(&bytes, i * CHUNK_SIZE, dl.size()) == Some(digest);
        assert_eq!(matches, i != 1, "chunk {i}");
    }
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

#[tokio::test]
async fn the_first_write_after_a_sealed_resume_takes_the_seal_off_the_saved_state_first() {
    let f = fixture();
    let data = random_bytes(3 * CHUNK_SIZE as usize, 43);
    let up = f.ready("alice", "s", &data).await;
    send_chunks(&*up, &data, 0..2).await;
    up.persist().await.unwrap();
    drop(up);
    assert!(sealed_in_meta(&f, "s").is_some(), "sealed at close");

    let up = f.ready("alice", "s", &data).await;
    assert_eq!(up.chunks_held(), 2, "trusted under the seal");
    assert!(sealed_in_meta(&f, "s").is_some(), "nothing written yet");
    // The saved state no longer claims the seal once the data may differ from it,
    // before any save the chunk count would cause.
    send_chunks(&*up, &data, 2..3).await;
    assert!(
        sealed_in_meta(&f, "s").is_none(),
        "unsealed by the first write"
    );
    up.commit(Digest::of(&data)).await.unwrap();
    assert_eq!(std::fs::read(f.home("alice").join("s")).unwrap(), data);
}

#[tokio::test]
async fn an_upload_taken_over_is_sealed_so_the_new_connection_trusts_it() {
    let f = fixture();
    let data = random_bytes(4 * CHUNK_SIZE as usize, 43);
    let first = f.ready("alice", "over", &data).await;
    send_chunks(&*first, &data, 0..3).await;
    // The first connection is not closed (a push re-run before the daemon saw the
    // interrupted one go): the second takes the upload over and seals it first.
    let second = f.ready("alice", "over", &data).await;
    assert!(
        sealed_in_meta(&f, "over").is_some(),
        "the takeover sealed the state"
    );
    assert_eq!(second.chunks_held(), 3);
    drop(first);
    send_chunks(&*second, &data, 3..4).await;
    second.commit(Digest::of(&data)).await.unwrap();
    assert_eq!(std::fs::read(f.home("alice").join("over")).unwrap(), data);
}
