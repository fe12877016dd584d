//! Manifests: kept in files for large files, as a tag on the file itself for small ones
//! (computed from the data when the tag is missing or stale), and removed with the files
//! they describe.

use super::manifest::{COMPUTED_UP_TO, Manifest, Stamp};
use super::*;

fn manifests(f: &Fixture, user: &str) -> Vec<String> {
    let dir = f.tmp.path().join("users").join(user).join("manifests");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn ino(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).unwrap().ino()
}

#[tokio::test]
async fn small_files_keep_no_manifest_yet_list_and_serve_their_digest() {
    let f = fixture();
    let tiny = random_bytes(2048, 1);
    let edge = random_bytes(COMPUTED_UP_TO as usize, 2);
    let large = random_bytes(COMPUTED_UP_TO as usize + 1, 3);
    // Through the chunked upload, and through a batch of whole files.
    f.put("alice", "up/edge", &edge).await;
    f.put("alice", "up/large", &large).await;
    let batch = [
        ("b/tiny", &tiny),
        ("b/edge", &edge),
        ("b/large", &large),
        ("b/empty", &Vec::new()),
    ];
    let files = batch
        .iter()
        .map(|(path, data)| WholeFile {
            path: p(path),
            force: false,
            modified_unix: Some(1_700_000_000),
            digest: Digest::of(data),
            data: Bytes::copy_from_slice(data),
        })
        .collect();
    for done in f.storage.put_files("alice", files).await {
        assert!(matches!(done, Ok(PutFileDone::Committed(_))), "{done:?}");
    }

    // Only the two files above the limit have one.
    let home = f.home("alice");
    let mut want = vec![
        format!("{}.json", ino(&home.join("up/large"))),
        format!("{}.json", ino(&home.join("b/large"))),
    ];
    want.sort();
    assert_eq!(manifests(&f, "alice"), want);

    for (path, data) in [
        ("up/edge", &edge),
        ("up/large", &large),
        ("b/tiny", &tiny),
        ("b/edge", &edge),
        ("b/large", &large),
        ("b/empty", &Vec::new()),
    ] {
        let listed = f.list_all("alice", &p(path)).await.unwrap();
        assert_eq!(listed[0].digest, Some(Digest::of(data)), "{path} listed");
        let dl = f.storage.open_download("alice", &p(path)).await.unwrap();
        assert_eq!(dl.digest(), Digest::of(data), "{path} downloaded");
        if !data.is_empty() {
            let (digest, bytes) = dl.read_chunk(0).await.unwrap();
            assert_eq!(
                Digest::of_chunk(&bytes, 0, dl.size()),
                Some(digest),
                "{path}"
            );
        }
        let whole = f.storage.read_whole("alice", &p(path)).await.unwrap();
        assert_eq!(whole.digest, Digest::of(data), "{path} read whole");
        assert_eq!(&whole.data[..], &data[..]);
    }
    // The same content again is recognised from the computed digest: `Exists`.
    let again = WholeFile {
        path: p("b/tiny"),
        force: false,
        modified_unix: None,
        digest: Digest::of(&tiny),
        data: Bytes::copy_from_slice(&tiny),
    };
    let done = f.storage.put_files("alice", vec![again]).await;
    assert!(
        matches!(done[0], Ok(PutFileDone::Exists { digest: Some(d), .. }) if d == Digest::of(&tiny)),
        "{done:?}"
    );

    // A manifest file left for a small file (by an older xferd, or by a file whose
    // inode it reuses) with the right size and time but another digest is not trusted:
    // not by listings, downloads or `xferd migrate` (which uses `Manifest::load`).
    let edge_path = home.join("b/edge");
    let stamp = Stamp::of(&cap_std::fs::Metadata::from_just_metadata(
        std::fs::metadata(&edge_path).unwrap(),
    ));
    let wrong = Digest::of(b"something else");
    let space = f.storage.space("alice").unwrap();
    Manifest {
        digest: wrong,
        chunks: vec![wrong],
    }
    .store(&space.manifests, stamp)
    .unwrap();
    assert!(Manifest::load(&space.manifests, stamp).is_none());
    let listed = f.list_all("alice", &p("b/edge")).await.unwrap();
    assert_eq!(listed[0].digest, Some(Digest::of(&edge)));
    let dl = f
        .storage
        .open_download("alice", &p("b/edge"))
        .await
        .unwrap();
    assert_eq!(dl.digest(), Digest::of(&edge));
    std::fs::remove_file(
        f.tmp
            .path()
            .join("users/alice/manifests")
            .join(format!("{}.json", stamp.ino)),
    )
    .unwrap();

    // Damage that leaves the file's time as it was (bit rot): the digest recorded at
    // upload is what listings, whole reads and downloads give, so the receiver sees the
    // data does not match it.
    let stored = home.join("b/tiny");
    let modified = std::fs::metadata(&stored).unwrap().modified().unwrap();
    let mut rotten = tiny.clone();
    rotten[100] ^= 0x20;
    std::fs::write(&stored, &rotten).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&stored)
        .unwrap()
        .set_modified(modified)
        .unwrap();
    let listed = f.list_all("alice", &p("b/tiny")).await.unwrap();
    assert_eq!(
        listed[0].digest,
        Some(Digest::of(&tiny)),
        "listed as uploaded"
    );
    let whole = f.storage.read_whole("alice", &p("b/tiny")).await.unwrap();
    assert_eq!(whole.digest, Digest::of(&tiny));
    assert_eq!(&whole.data[..], &rotten[..]);
    let dl = f
        .storage
        .open_download("alice", &p("b/tiny"))
        .await
        .unwrap();
    let (digest, bytes) = dl.read_chunk(0).await.unwrap();
    assert_ne!(Digest::of_chunk(&bytes, 0, dl.size()), Some(digest));

    // A small file changed behind the daemon's back (a new time) lists its new digest,
    // never a stale one.
    let changed = random_bytes(2048, 4);
    std::fs::write(home.join("b/tiny"), &changed).unwrap();
    let listed = f.list_all("alice", &p("b/tiny")).await.unwrap();
    assert_eq!(listed[0].digest, Some(Digest::of(&changed)));
    assert_eq!(manifests(&f, "alice").len(), 2, "listing stored nothing");
}

#[tokio::test]
async fn removing_a_tree_removes_the_manifests_of_its_files() {
    let f = fixture();
    let large = random_bytes(COMPUTED_UP_TO as usize + 10, 5);
    f.put("alice", "keep", &large).await;
    for path in ["t/a", "t/b/c", "t/b/d/e"] {
        f.put("alice", path, &large).await;
    }
    f.put("alice", "t/small", b"small").await;
    assert_eq!(manifests(&f, "alice").len(), 4);
    f.storage
        .remove("alice", &p("t"), true, false)
        .await
        .unwrap();
    assert_eq!(
        manifests(&f, "alice"),
        vec![format!("{}.json", ino(&f.home("alice").join("keep")))],
        "only the manifest of the file that stayed"
    );
}

#[tokio::test]
async fn whole_files_are_read_into_recycled_buffers_and_small_ones_into_their_own() {
    let f = fixture();
    let big = random_bytes(CHUNK_SIZE as usize - 5, 61);
    let other = random_bytes(70_000, 62);
    let small = random_bytes(1000, 63);
    for (path, data) in [("big", &big), ("other", &other), ("small", &small)] {
        f.put("alice", path, data).await;
    }
    let first = f.storage.read_whole("alice", &p("big")).await.unwrap();
    assert!(first.data == big);
    let at = first.data.as_ptr();
    drop(first);
    // The buffer went back to the pool: the next file of that size is read into it.
    let second = f.storage.read_whole("alice", &p("other")).await.unwrap();
    assert!(second.data == other);
    assert_eq!(second.data.as_ptr(), at, "the buffer was recycled");
    // One in use is not handed out twice.
    let third = f.storage.read_whole("alice", &p("big")).await.unwrap();
    assert!(third.data == big);
    assert_ne!(third.data.as_ptr(), second.data.as_ptr());
    let pooled = [at, third.data.as_ptr()];
    drop((second, third));
    let tiny = f.storage.read_whole("alice", &p("small")).await.unwrap();
    assert!(tiny.data == small);
    assert!(
        !pooled.contains(&tiny.data.as_ptr()),
        "a small file has a buffer of its own"
    );
}
