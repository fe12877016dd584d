//! Upload state under abuse and crashes: memory grows with what was received, not what
//! was declared; a partial whose data was already committed is not shown or counted.

use super::upload::LocalUpload;
use super::*;

const TIB: u64 = 1 << 40;

#[test]
fn a_declared_terabyte_allocates_nothing_until_chunks_arrive() {
    let f = fixture();
    let space = f.storage.space("alice").unwrap();
    let settings = f.storage.settings();
    let open = || {
        LocalUpload::open(
            space.clone(),
            p("huge.bin"),
            TIB,
            false,
            &settings,
            crate::now_unix(),
        )
        .unwrap()
    };
    let up = open();
    // 1 TiB is 1,048,576 chunks: an index sized by the declaration would hold them all.
    assert_eq!(up.held_slots(), 0, "state allocated for chunks never sent");
    assert_eq!(up.chunks_held(), 0);
    assert_eq!(up.held_digests(0, 4), vec![None; 4]);
    assert_eq!(up.held_digests(TIB / CHUNK_SIZE - 1, 4), vec![None]);

    // One chunk received (the last, short one would do too): one entry.
    let data = vec![7u8; CHUNK_SIZE as usize];
    let index = 5;
    let digest = Digest::of_chunk(&data, index * CHUNK_SIZE, TIB).unwrap();
    up.write_chunk(index * CHUNK_SIZE, &digest, &data).unwrap();
    up.persist().unwrap();
    assert!(up.held_slots() <= 16, "{} slots", up.held_slots());
    assert_eq!(up.held_digests(4, 3), vec![None, Some(digest), None]);
    drop(up);

    // Resumed: the recorded chunk is re-verified and is still the only entry.
    let up = open();
    assert_eq!(up.chunks_held(), 1);
    assert_eq!(up.resumed_from(), CHUNK_SIZE);
    assert!(
        up.held_slots() <= 16,
        "{} slots after resume",
        up.held_slots()
    );
    assert!(matches!(
        up.commit(&Digest::of(b"")),
        Err(StorageError::BadRequest(_))
    ));
}

/// The state a crash (or a failed unlink) leaves between the commit's rename and the
/// removal of the upload's state: the file in place, its `.meta` still there.
async fn ghost_after_commit(f: &Fixture, path: &str, data: &[u8]) -> PathBuf {
    let up = f.ready("alice", path, data).await;
    send_chunks(&*up, data, 0..chunk_count(data.len() as u64)).await;
    up.persist().await.unwrap();
    let meta = f
        .partials("alice")
        .join(super::partial::meta_name(&p(path).key()));
    let saved = std::fs::read(&meta).unwrap();
    up.commit(Digest::of(data)).await.unwrap();
    drop(up);
    assert!(!meta.exists(), "commit removes the state");
    std::fs::write(&meta, saved).unwrap();
    meta
}

#[tokio::test]
async fn a_partial_left_behind_by_a_commit_is_neither_listed_nor_counted() {
    let f = fixture();
    let data = random_bytes(2 * CHUNK_SIZE as usize + 10, 9);
    let meta = ghost_after_commit(&f, "a.bin", &data).await;

    let entries = f.list_all("alice", &RelPath::home()).await.unwrap();
    let kinds: Vec<_> = entries.iter().map(|e| (e.name.as_str(), e.kind)).collect();
    assert_eq!(kinds, vec![("a.bin", EntryKind::File)]);
    assert!(!meta.exists(), "the listing cleaned the stale state");

    let used = f.storage.usage("alice").await.unwrap().used_bytes;
    assert_eq!(used, data.len() as u64, "counted once");
}

#[tokio::test]
async fn a_partial_left_behind_by_a_commit_is_cleaned_at_start_and_by_put_begin() {
    let f = fixture();
    let data = random_bytes(CHUNK_SIZE as usize + 3, 4);
    // At start (the expiry sweep runs when the daemon starts), long before it expires.
    let meta = ghost_after_commit(&f, "a.bin", &data).await;
    f.storage.expire_partials(crate::now_unix()).await.unwrap();
    assert!(!meta.exists(), "the sweep cleaned the stale state");

    // On a new upload to the same name: the quota check does not count it twice.
    let f = fixture_with(|c| c.quota_bytes = 2 * data.len() as u64 + 1);
    let meta = ghost_after_commit(&f, "a.bin", &data).await;
    let other = random_bytes(data.len(), 5);
    assert!(matches!(
        f.begin("alice", "b.bin", &other, false).await.unwrap(),
        PutBegun::Ready(_)
    ));
    assert!(!meta.exists());
}

/// Audit defect 10: the state save fails (a full disk; here a directory in the way of
/// its temporary), the connection ends; the next upload still resumes from every chunk
/// that was verified, not from the last state that reached the disk.
#[tokio::test]
async fn verified_chunks_survive_a_state_save_that_fails() {
    let f = fixture();
    let data = random_bytes(3 * CHUNK_SIZE as usize + 5, 10);
    let up = f.ready("alice", "big.bin", &data).await;
    let key = p("big.bin").key();
    let blocker = f.partials("alice").join(format!("{key}.meta.tmp"));
    std::fs::create_dir(&blocker).unwrap();
    send_chunks(up.as_ref(), &data, 0..2).await;
    assert!(up.persist().await.is_err(), "the save should have failed");
    drop(up);

    std::fs::remove_dir(&blocker).unwrap();
    let again = f.ready("alice", "big.bin", &data).await;
    assert_eq!(
        again.resumed_from(),
        2 * CHUNK_SIZE,
        "verified chunks forgotten"
    );
    send_chunks(again.as_ref(), &data, 2..4).await;
    again.commit(Digest::of(&data)).await.unwrap();
    assert_eq!(
        std::fs::read(f.home("alice").join("big.bin")).unwrap(),
        data
    );
}
