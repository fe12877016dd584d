//! Upload state under abuse and crashes: memory grows with what was received, not what
//! was declared; a partial whose data was already committed is not shown or counted.

use super::*;
use crate::storage::upload::LocalUpload;

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
            3600,
            settings.policy.clone(),
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
