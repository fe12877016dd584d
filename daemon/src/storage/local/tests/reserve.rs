//! `min_free_bytes` is a reserve: admitted uploads hold the bytes they still have to
//! write, so a second upload that would eat into the reserve is refused up front.

use super::*;

const GIB: u64 = 1 << 30;

/// Sets `min_free_bytes` so that exactly `room` bytes are admissible on `f`'s disk now
/// (re-read before each admission: other processes write to the same disk).
fn leave_room(f: &Fixture, room: u64) {
    let free = space::free_bytes(f.tmp.path()).unwrap();
    assert!(
        free > room,
        "the test needs {room} bytes free on the temporary disk"
    );
    let mut config = f.storage.settings().config.clone();
    config.min_free_bytes = free - room;
    f.storage.reconfigure(config);
}

async fn begin_sized(f: &Fixture, path: &str, size: u64) -> Result<PutBegun, StorageError> {
    f.storage
        .begin_upload(
            "alice",
            PutRequest {
                path: p(path),
                size,
                force: false,
                head: Bytes::from_static(b"plain text"),
            },
        )
        .await
}

fn promised(f: &Fixture) -> u64 {
    f.storage.local.reserve.promised()
}

#[tokio::test]
async fn a_second_upload_that_would_eat_the_reserve_is_refused_until_the_first_ends() {
    let f = fixture();
    // Room for 2 GiB: a 1.5 GiB upload fits; a second one only once the first is gone.
    // Margins of 0.5 GiB either way absorb other writers on the disk.
    let size = 3 * GIB / 2;
    leave_room(&f, 2 * GIB);
    let first = begin_sized(&f, "one.bin", size).await.unwrap();
    assert_eq!(promised(&f), size);

    leave_room(&f, 2 * GIB);
    let refused = begin_sized(&f, "two.bin", size).await;
    assert_eq!(
        code(refused),
        ErrorCode::NoSpace,
        "admitted over the reserve"
    );

    // The connection of the first ends: its promise is given back.
    drop(first);
    assert_eq!(promised(&f), 0);
    leave_room(&f, 2 * GIB);
    assert!(matches!(
        begin_sized(&f, "two.bin", size).await.unwrap(),
        PutBegun::Ready(_)
    ));
}

#[tokio::test]
async fn written_chunks_and_the_commit_give_the_reservation_back() {
    let f = fixture();
    let data = random_bytes(CHUNK_SIZE as usize + 10, 7);
    let up = f.ready("alice", "a.bin", &data).await;
    assert_eq!(promised(&f), data.len() as u64);
    let first = Bytes::copy_from_slice(&data[..CHUNK_SIZE as usize]);
    let digest = Digest::of_chunk(&first, 0, data.len() as u64).unwrap();
    up.write_chunk(0, digest, first).await.unwrap();
    assert_eq!(
        promised(&f),
        10,
        "a written chunk is on the disk, no longer promised"
    );
    let tail = Bytes::copy_from_slice(&data[CHUNK_SIZE as usize..]);
    let digest = Digest::of_chunk(&tail, CHUNK_SIZE, data.len() as u64).unwrap();
    up.write_chunk(CHUNK_SIZE, digest, tail).await.unwrap();
    up.commit(Digest::of(&data)).await.unwrap();
    assert_eq!(promised(&f), 0);

    // A takeover: the old handle's promise goes, the new one's counts once.
    let again = f.ready("alice", "b.bin", &data).await;
    let taken = f.ready("alice", "b.bin", &data).await;
    assert_eq!(promised(&f), data.len() as u64);
    drop((again, taken));
    assert_eq!(promised(&f), 0);
}
