//! Manifests: kept for large files, not for small ones (whose digest is computed from
//! the data when asked, listings included), and removed with the files they describe.

use super::manifest::COMPUTED_UP_TO;
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

    // A small file changed behind the daemon's back lists its new digest, never a
    // stale one.
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
