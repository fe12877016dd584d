//! The per-user index kept in memory (audit defect 7): the bound on unfinished uploads,
//! and usage and partials that stay what a fresh walk of the disk finds after every kind
//! of change.

use super::*;

/// The kept index equals one computed afresh from the disk.
fn assert_index_matches_disk(f: &Fixture, user: &str, after: &str) {
    let (kept, fresh) = f.storage.space(user).unwrap().index_and_recomputed();
    let kept = kept.unwrap_or_else(|| panic!("after {after}: the index was never computed"));
    assert_eq!(
        kept, fresh,
        "after {after}: the kept index drifted from the disk"
    );
}

#[tokio::test]
async fn unfinished_uploads_past_the_limit_are_refused_naming_the_way_out() {
    let f = fixture_with(|c| c.max_partials_per_user = 3);
    let data = random_bytes(2 * CHUNK_SIZE as usize, 3);
    let mut open = Vec::new();
    for i in 0..3 {
        open.push(f.ready("alice", &format!("p{i}.bin"), &data).await);
    }
    let refused = f.begin("alice", "p3.bin", &data, false).await.unwrap_err();
    assert_eq!(refused.code(), ErrorCode::QuotaExceeded);
    let message = refused.peer_message();
    assert!(
        message.contains("max_partials_per_user")
            && message.contains('3')
            && message.contains("xfer rm --partial"),
        "{message}"
    );
    // Resuming one of the three is not a new one; another user has their own count.
    drop(open);
    assert!(matches!(
        f.begin("alice", "p1.bin", &data, false).await.unwrap(),
        PutBegun::Ready(_)
    ));
    assert!(matches!(
        f.begin("bob", "p3.bin", &data, false).await.unwrap(),
        PutBegun::Ready(_)
    ));
    // Removing one makes room.
    f.storage
        .remove("alice", &p("p0.bin"), false, true)
        .await
        .unwrap();
    assert!(matches!(
        f.begin("alice", "p3.bin", &data, false).await.unwrap(),
        PutBegun::Ready(_)
    ));
    assert_index_matches_disk(&f, "alice", "the limit");
}

#[tokio::test]
async fn usage_and_partials_stay_right_through_push_rm_mv_and_overwrite() {
    let f = fixture();
    let small = random_bytes(1000, 1);
    let big = random_bytes(CHUNK_SIZE as usize + 7, 2);
    f.put("alice", "a.txt", &small).await;
    assert_index_matches_disk(&f, "alice", "a push");
    f.put("alice", "dir/b.txt", &big).await;
    f.put("alice", "dir/sub/c.txt", &small).await;
    assert_index_matches_disk(&f, "alice", "pushes into directories");

    // Overwrite with a different size.
    let up = match f.begin("alice", "a.txt", &big, true).await.unwrap() {
        PutBegun::Ready(u) => u,
        PutBegun::Exists { .. } => panic!("forced"),
    };
    send_chunks(up.as_ref(), &big, 0..2).await;
    up.commit(Digest::of(&big)).await.unwrap();
    assert_index_matches_disk(&f, "alice", "an overwrite");

    // A partial, half sent, saved.
    let part = f.ready("alice", "dir/part.bin", &big).await;
    send_chunks(part.as_ref(), &big, 0..1).await;
    part.persist().await.unwrap();
    assert_index_matches_disk(&f, "alice", "a partial");
    drop(part);

    f.storage
        .rename("alice", &p("dir/b.txt"), &p("moved.txt"), false)
        .await
        .unwrap();
    f.storage
        .rename("alice", &p("moved.txt"), &p("a.txt"), true)
        .await
        .unwrap();
    assert_index_matches_disk(&f, "alice", "mv and mv over a file");

    f.storage
        .remove("alice", &p("a.txt"), false, false)
        .await
        .unwrap();
    assert_index_matches_disk(&f, "alice", "rm of a file");
    f.storage
        .remove("alice", &p("dir"), true, false)
        .await
        .unwrap();
    assert_index_matches_disk(&f, "alice", "rm -r of a directory with a partial in it");
    assert_eq!(f.storage.usage("alice").await.unwrap().used_bytes, 0);
}

/// Issue 9 item 14: `mv` of a directory while an upload into it is open. The partial
/// moves with the directory (listed there, resumed by a push to the new place) instead
/// of committing at the old path later; the old connection is told why it stopped.
#[tokio::test]
async fn an_upload_into_a_moved_directory_moves_with_it() {
    let f = fixture();
    let data = random_bytes(3 * CHUNK_SIZE as usize + 9, 8);
    let up = f.ready("alice", "d/sub/f.bin", &data).await;
    send_chunks(up.as_ref(), &data, 0..2).await;
    f.storage
        .rename("alice", &p("d"), &p("e"), false)
        .await
        .unwrap();

    let rest = Bytes::copy_from_slice(&data[2 * CHUNK_SIZE as usize..3 * CHUNK_SIZE as usize]);
    let digest = Digest::of_chunk(&rest, 2 * CHUNK_SIZE, data.len() as u64).unwrap();
    let stopped = up
        .write_chunk(2 * CHUNK_SIZE, digest, rest)
        .await
        .unwrap_err();
    assert!(stopped.peer_message().contains("moved"), "{stopped}");
    drop(up);

    let listed = f.list_all("alice", &p("e/sub")).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].kind, EntryKind::Partial);
    assert_eq!(listed[0].received, Some(2 * CHUNK_SIZE));
    assert!(
        !f.home("alice").join("d").exists(),
        "the old directory came back"
    );
    assert_index_matches_disk(&f, "alice", "mv of a directory with an upload in it");

    let again = f.ready("alice", "e/sub/f.bin", &data).await;
    assert_eq!(again.resumed_from(), 2 * CHUNK_SIZE);
    send_chunks(again.as_ref(), &data, 2..4).await;
    again.commit(Digest::of(&data)).await.unwrap();
    assert_eq!(
        std::fs::read(f.home("alice").join("e/sub/f.bin")).unwrap(),
        data
    );
    assert!(!f.home("alice").join("d").exists());
    assert_index_matches_disk(&f, "alice", "the moved upload's commit");
}

#[tokio::test]
async fn a_directory_move_that_would_land_an_upload_on_another_is_refused() {
    let f = fixture();
    let first = random_bytes(2 * CHUNK_SIZE as usize, 11);
    let second = random_bytes(2 * CHUNK_SIZE as usize, 12);
    let up = f.ready("alice", "e/f.bin", &first).await;
    send_chunks(up.as_ref(), &first, 0..1).await;
    // `e` holds no file (the data is kept aside), so a plain rm takes it.
    f.storage
        .remove("alice", &p("e"), false, false)
        .await
        .unwrap();
    let other = f.ready("alice", "d/f.bin", &second).await;
    send_chunks(other.as_ref(), &second, 0..1).await;
    other.persist().await.unwrap();
    drop(other);

    let refused = f
        .storage
        .rename("alice", &p("d"), &p("e"), false)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), ErrorCode::Conflict);
    assert!(
        refused
            .peer_message()
            .contains("an upload in progress to `e/f.bin` is in the way"),
        "{refused}"
    );
    // Neither upload lost anything: the first commits its own bytes.
    send_chunks(up.as_ref(), &first, 1..2).await;
    up.commit(Digest::of(&first)).await.unwrap();
    assert_eq!(
        std::fs::read(f.home("alice").join("e/f.bin")).unwrap(),
        first
    );
    let again = f.ready("alice", "d/f.bin", &second).await;
    assert_eq!(again.resumed_from(), CHUNK_SIZE);
    assert_index_matches_disk(&f, "alice", "a refused move");
}

#[tokio::test]
async fn an_upload_moved_under_a_type_rule_is_judged_by_its_content_at_commit() {
    let f = fixture();
    let text = vec![b'x'; CHUNK_SIZE as usize + 10];
    let up = f.ready("alice", "tmp/x.png", &text).await;
    send_chunks(up.as_ref(), &text, 0..1).await;
    up.persist().await.unwrap();
    drop(up);
    f.storage
        .rename("alice", &p("tmp"), &p("images"), false)
        .await
        .unwrap();
    // The resume declares a PNG head; chunk 0, already held, is text.
    let resumed = match f
        .storage
        .begin_upload(
            "alice",
            PutRequest {
                path: p("images/x.png"),
                size: text.len() as u64,
                force: false,
                head: Bytes::from_static(PNG),
            },
        )
        .await
        .unwrap()
    {
        PutBegun::Ready(u) => u,
        PutBegun::Exists { .. } => panic!("nothing is stored there"),
    };
    assert_eq!(resumed.resumed_from(), CHUNK_SIZE);
    send_chunks(resumed.as_ref(), &text, 1..2).await;
    let refused = resumed.commit(Digest::of(&text)).await.unwrap_err();
    assert_eq!(refused.code(), ErrorCode::TypeRejected);
    assert!(!f.home("alice").join("images/x.png").exists());
}

#[tokio::test]
async fn unfinished_sends_count_against_their_senders_share_not_the_owners() {
    let f = fixture_with(|c| c.max_partials_per_user = 2);
    let data = random_bytes(2 * CHUNK_SIZE as usize, 13);
    let mut open = Vec::new();
    for name in ["a", "b"] {
        open.push(f.ready("bob", &format!("inbox/alice/{name}"), &data).await);
    }
    let refused = f
        .begin("bob", "inbox/alice/c", &data, false)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), ErrorCode::QuotaExceeded);
    // bob's own uploads and other senders are not held up by alice's.
    open.push(f.ready("bob", "own.bin", &data).await);
    open.push(f.ready("bob", "inbox/carol/x", &data).await);
}

#[tokio::test]
async fn names_stored_before_nfc_are_renamed_to_it_and_stay_reachable() {
    let f = fixture();
    // Written as an older xferd left them, before the space is first opened.
    let home = f.tmp.path().join("users/alice/files");
    let decomposed = "Re\u{301}sume\u{301}";
    std::fs::create_dir_all(home.join(decomposed)).unwrap();
    std::fs::write(home.join(format!("{decomposed}/cv.txt")), b"cv").unwrap();
    // Taken in both forms: left alone (and logged), never overwritten.
    std::fs::write(home.join("cafe\u{301}"), b"old").unwrap();
    std::fs::write(home.join("caf\u{e9}"), b"new").unwrap();

    let listed = f.list_all("alice", &RelPath::home()).await.unwrap();
    let names: Vec<&str> = listed.iter().map(|e| e.name.as_str()).collect();
    assert!(names.contains(&"R\u{e9}sum\u{e9}"), "{names:?}");
    let inside = f.list_all("alice", &p("R\u{e9}sum\u{e9}")).await.unwrap();
    assert_eq!(inside.len(), 1, "{inside:?}");
    assert_eq!(
        std::fs::read(f.home("alice").join("caf\u{e9}")).unwrap(),
        b"new"
    );
    assert_eq!(
        std::fs::read(f.home("alice").join("cafe\u{301}")).unwrap(),
        b"old"
    );
}
