use std::os::unix::fs::FileExt;

use bytes::Bytes;
use tempfile::TempDir;
use xfer_e2e::random_bytes;
use xfer_proto::{Digest, Entry, EntryKind, ErrorCode};

use super::*;
use crate::storage::{CHUNK_SIZE, Upload, chunk_count, chunk_len};
use std::path::PathBuf;
use std::sync::Arc;

mod index;
mod manifests;
mod reserve;
mod resume_state;
mod sealed;

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0";

struct Fixture {
    tmp: TempDir,
    storage: LocalStorage,
}

fn fixture_with(f: impl FnOnce(&mut StorageConfig)) -> Fixture {
    let tmp = TempDir::new().unwrap();
    let mut config = StorageConfig {
        min_free_bytes: 0,
        ..StorageConfig::default()
    };
    f(&mut config);
    let storage = LocalStorage::open(tmp.path(), config).unwrap();
    Fixture { tmp, storage }
}

fn fixture() -> Fixture {
    fixture_with(|_| {})
}

impl Fixture {
    fn home(&self, user: &str) -> PathBuf {
        self.storage.space(user).unwrap();
        self.tmp.path().join("users").join(user).join("files")
    }

    fn partials(&self, user: &str) -> PathBuf {
        self.tmp.path().join("users").join(user).join("partials")
    }

    async fn begin(
        &self,
        user: &str,
        path: &str,
        data: &[u8],
        force: bool,
    ) -> Result<PutBegun, StorageError> {
        self.storage
            .begin_upload(
                user,
                PutRequest {
                    path: RelPath::parse(path)?,
                    size: data.len() as u64,
                    force,
                    head: Bytes::copy_from_slice(&data[..data.len().min(512)]),
                },
            )
            .await
    }

    /// The whole listing of `path`, in one page.
    async fn list_all(&self, user: &str, path: &RelPath) -> Result<Vec<Entry>, StorageError> {
        let page = self.storage.list(user, path, None, usize::MAX).await?;
        Ok(page.entries)
    }

    async fn ready(&self, user: &str, path: &str, data: &[u8]) -> Arc<dyn Upload> {
        match self.begin(user, path, data, false).await.unwrap() {
            PutBegun::Ready(u) => u,
            PutBegun::Exists { .. } => panic!("{path} exists"),
        }
    }

    async fn put(&self, user: &str, path: &str, data: &[u8]) {
        let up = self.ready(user, path, data).await;
        send_chunks(&*up, data, 0..chunk_count(data.len() as u64)).await;
        up.commit(Digest::of(data)).await.unwrap();
    }
}

async fn send_chunks(up: &dyn Upload, data: &[u8], range: std::ops::Range<u64>) {
    for i in range {
        let start = (i * CHUNK_SIZE) as usize;
        let chunk = &data[start..start + chunk_len(data.len() as u64, i) as usize];
        let digest = Digest::of_chunk(chunk, i * CHUNK_SIZE, data.len() as u64).unwrap();
        up.write_chunk(i * CHUNK_SIZE, digest, Bytes::copy_from_slice(chunk))
            .await
            .unwrap();
    }
}

fn p(s: &str) -> RelPath {
    RelPath::parse(s).unwrap()
}

fn code<T>(r: Result<T, StorageError>) -> ErrorCode {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.code(),
    }
}

#[tokio::test]
async fn upload_commit_list_and_download_round_trip() {
    let f = fixture();
    let data = random_bytes(2 * CHUNK_SIZE as usize + 17, 1);
    let up = f.ready("alice", "docs/a.bin", &data).await;
    assert_eq!(up.chunks_held(), 0);
    // Out of order, as a pipelined client may send after a resume.
    send_chunks(&*up, &data, 2..3).await;
    send_chunks(&*up, &data, 0..2).await;
    up.persist().await.unwrap();
    // In progress: a partial in its directory, never a file; nothing under the name.
    let listing = f.list_all("alice", &p("docs")).await.unwrap();
    assert_eq!(listing.len(), 1);
    assert_eq!(listing[0].kind, EntryKind::Partial);
    assert_eq!(listing[0].received, Some(data.len() as u64));
    assert!(!f.home("alice").join("docs/a.bin").exists());
    let c = up.commit(Digest::of(&data)).await.unwrap();
    assert_eq!(c.digest, Digest::of(&data));
    assert_eq!(
        std::fs::read(f.home("alice").join("docs/a.bin")).unwrap(),
        data
    );
    let listing = f.list_all("alice", &p("docs")).await.unwrap();
    assert_eq!(listing.len(), 1);
    assert_eq!(listing[0].kind, EntryKind::File);
    assert_eq!(listing[0].digest, Some(Digest::of(&data)));
    assert_eq!(
        f.list_all("alice", &p("docs/a.bin")).await.unwrap(),
        listing
    );
    assert_eq!(
        std::fs::read_dir(f.partials("alice")).unwrap().count(),
        0,
        "no partial left behind"
    );
    let dl = f
        .storage
        .open_download("alice", &p("docs/a.bin"))
        .await
        .unwrap();
    assert_eq!(dl.digest(), Digest::of(&data));
    let mut back = Vec::new();
    for i in 0..chunk_count(dl.size()) {
        let (d, bytes) = dl.read_chunk(i).await.unwrap();
        assert_eq!(Digest::of_chunk(&bytes, i * CHUNK_SIZE, dl.size()), Some(d));
        back.extend_from_slice(&bytes);
    }
    assert_eq!(back, data);
    // Existing without force: Exists with the digest; with force: replaced.
    match f.begin("alice", "docs/a.bin", &data, false).await.unwrap() {
        PutBegun::Exists { size, digest } => {
            assert_eq!(size, data.len() as u64);
            assert_eq!(digest, Some(Digest::of(&data)));
        }
        PutBegun::Ready(_) => panic!("must not start over an existing file"),
    }
    let other = random_bytes(10, 2);
    let PutBegun::Ready(up) = f.begin("alice", "docs/a.bin", &other, true).await.unwrap() else {
        panic!("force must start");
    };
    send_chunks(&*up, &other, 0..1).await;
    up.commit(Digest::of(&other)).await.unwrap();
    assert_eq!(
        std::fs::read(f.home("alice").join("docs/a.bin")).unwrap(),
        other
    );
}

#[tokio::test]
async fn empty_file_commits_at_once() {
    let f = fixture();
    let up = f.ready("alice", "empty", b"").await;
    up.commit(Digest::of(b"")).await.unwrap();
    assert_eq!(std::fs::read(f.home("alice").join("empty")).unwrap(), b"");
    let dl = f.storage.open_download("alice", &p("empty")).await.unwrap();
    assert_eq!(dl.size(), 0);
    assert_eq!(dl.digest(), Digest::of(b""));
}

#[tokio::test]
async fn bad_chunks_are_discarded_and_commit_checks_everything() {
    let f = fixture();
    let data = random_bytes(CHUNK_SIZE as usize + 5, 3);
    let up = f.ready("alice", "x", &data).await;
    let first = &data[..CHUNK_SIZE as usize];
    // Wrong digest: refused before anything is written or recorded.
    let e = up
        .write_chunk(0, Digest::of(b"other"), Bytes::copy_from_slice(first))
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::ChecksumMismatch);
    assert_eq!(up.chunks_held(), 0);
    // Misaligned, out of range or wrongly sized chunks.
    assert_eq!(
        code(
            up.write_chunk(1, Digest::of(first), Bytes::copy_from_slice(first))
                .await
        ),
        ErrorCode::BadRequest
    );
    assert_eq!(
        code(
            up.write_chunk(
                2 * CHUNK_SIZE,
                Digest::of(b"a"),
                Bytes::copy_from_slice(b"a")
            )
            .await
        ),
        ErrorCode::BadRequest
    );
    assert_eq!(
        code(
            up.write_chunk(CHUNK_SIZE, Digest::of(b"a"), Bytes::copy_from_slice(b"a"))
                .await
        ),
        ErrorCode::BadRequest
    );
    send_chunks(&*up, &data, 0..1).await;
    // Incomplete.
    assert_eq!(
        code(up.commit(Digest::of(&data)).await),
        ErrorCode::BadRequest
    );
    send_chunks(&*up, &data, 1..2).await;
    // Wrong whole digest: refused, nothing in place, the partial kept.
    assert_eq!(
        code(up.commit(Digest::of(b"nope")).await),
        ErrorCode::ChecksumMismatch
    );
    assert!(!f.home("alice").join("x").exists());
    up.persist().await.unwrap();
    drop(up);
    let up = f.ready("alice", "x", &data).await;
    assert_eq!(up.chunks_held(), 2);
    up.commit(Digest::of(&data)).await.unwrap();
}

#[tokio::test]
async fn resume_reverifies_and_drops_a_flipped_chunk() {
    let f = fixture();
    let data = random_bytes(4 * CHUNK_SIZE as usize, 4);
    let up = f.ready("alice", "big", &data).await;
    send_chunks(&*up, &data, 0..3).await;
    up.persist().await.unwrap();
    assert_eq!(up.resumed_from(), 0);
    drop(up);
    // A byte flipped on disk inside chunk 1.
    let part = f.partials("alice").join(format!("{}.part", p("big").key()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&part)
        .unwrap();
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, CHUNK_SIZE + 1234).unwrap();
    file.write_all_at(&[b[0] ^ 0x40], CHUNK_SIZE + 1234)
        .unwrap();
    drop(file);
    let up = f.ready("alice", "big", &data).await;
    assert_eq!(up.chunks_held(), 2);
    assert_eq!(up.resumed_from(), 2 * CHUNK_SIZE);
    let held = up.held_digests(0, 100);
    assert_eq!(held.len(), 4);
    assert!(held[0].is_some() && held[1].is_none() && held[2].is_some() && held[3].is_none());
    // Only chunk 1 is shown as received... the partial counts the verified bytes.
    let entry = &f.list_all("alice", &p("big")).await.unwrap()[0];
    assert_eq!(entry.kind, EntryKind::Partial);
    assert_eq!(entry.received, Some(2 * CHUNK_SIZE));
    send_chunks(&*up, &data, 1..2).await;
    send_chunks(&*up, &data, 3..4).await;
    up.commit(Digest::of(&data)).await.unwrap();
    assert_eq!(std::fs::read(f.home("alice").join("big")).unwrap(), data);
}

#[tokio::test]
async fn changed_local_file_resends_a_chunk_and_the_digest_follows() {
    let f = fixture();
    let old = random_bytes(3 * CHUNK_SIZE as usize, 5);
    let up = f.ready("alice", "c", &old).await;
    send_chunks(&*up, &old, 0..3).await;
    let mut new = old.clone();
    new[10] ^= 1; // chunk 0 changed after it was hashed into the whole digest
    send_chunks(&*up, &new, 0..1).await;
    up.commit(Digest::of(&new)).await.unwrap();
    assert_eq!(std::fs::read(f.home("alice").join("c")).unwrap(), new);
}

#[tokio::test]
async fn a_second_begin_takes_the_upload_over() {
    let f = fixture();
    let data = random_bytes(2 * CHUNK_SIZE as usize, 6);
    let first = f.ready("alice", "t", &data).await;
    send_chunks(&*first, &data, 0..1).await;
    let second = f.ready("alice", "t", &data).await;
    assert_eq!(second.chunks_held(), 1);
    let chunk = &data[CHUNK_SIZE as usize..];
    let digest = Digest::of_chunk(chunk, CHUNK_SIZE, data.len() as u64).unwrap();
    assert_eq!(
        code(
            first
                .write_chunk(CHUNK_SIZE, digest, Bytes::copy_from_slice(chunk))
                .await
        ),
        ErrorCode::Busy
    );
    send_chunks(&*second, &data, 1..2).await;
    second.commit(Digest::of(&data)).await.unwrap();
}

#[tokio::test]
async fn quota_counts_files_and_partials() {
    let f = fixture_with(|c| c.quota_bytes = 3 * CHUNK_SIZE);
    let two = random_bytes(2 * CHUNK_SIZE as usize, 7);
    f.put("alice", "two", &two).await;
    assert_eq!(
        f.storage.usage("alice").await.unwrap().used_bytes,
        2 * CHUNK_SIZE
    );
    assert_eq!(
        f.storage.usage("alice").await.unwrap().limit_bytes,
        Some(3 * CHUNK_SIZE)
    );
    assert_eq!(
        code(f.begin("alice", "more", &two, false).await),
        ErrorCode::QuotaExceeded
    );
    let one = random_bytes(CHUNK_SIZE as usize, 8);
    let _partial = f.ready("alice", "p1", &one).await;
    assert_eq!(
        f.storage.usage("alice").await.unwrap().used_bytes,
        3 * CHUNK_SIZE
    );
    assert_eq!(
        code(f.begin("alice", "p2", b"x", false).await),
        ErrorCode::QuotaExceeded
    );
    // Resuming the same partial does not count it twice; replacing counts the new size.
    drop(_partial);
    let _again = f.ready("alice", "p1", &one).await;
    let PutBegun::Ready(_) = f.begin("alice", "two", &two, true).await.unwrap() else {
        panic!("replacing a file of the same size fits");
    };
    // Another user has their own quota.
    f.put("bob", "two", &two).await;
}

#[tokio::test]
async fn size_space_and_type_admission() {
    let f = fixture_with(|c| c.max_file_bytes = 100);
    assert_eq!(
        code(f.begin("alice", "big", &[0; 101], false).await),
        ErrorCode::TooLarge
    );
    // A PNG named .txt goes into images/, text named .png does not.
    let mut png = PNG.to_vec();
    png.resize(90, 0);
    f.put("alice", "images/pic.txt", &png).await;
    let e = f
        .begin("alice", "images/pic.png", b"hello, plain text", false)
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::TypeRejected);
    assert!(
        e.peer_message().contains("image/png"),
        "{}",
        e.peer_message()
    );
    // The head lies; the first chunk is checked again.
    let up = match f
        .storage
        .begin_upload(
            "alice",
            PutRequest {
                path: p("images/liar.png"),
                size: 20,
                force: false,
                head: Bytes::from_static(PNG),
            },
        )
        .await
        .unwrap()
    {
        PutBegun::Ready(u) => u,
        PutBegun::Exists { .. } => panic!(),
    };
    let text = b"not an image at all!";
    assert_eq!(
        code(
            up.write_chunk(0, Digest::of(text), Bytes::copy_from_slice(text))
                .await
        ),
        ErrorCode::TypeRejected
    );
    let f = fixture_with(|c| c.min_free_bytes = u64::MAX);
    assert_eq!(
        code(f.begin("alice", "x", b"x", false).await),
        ErrorCode::NoSpace
    );
}

#[tokio::test]
async fn partials_expire_and_stop_counting() {
    let f = fixture_with(|c| c.partial_ttl_secs = 60);
    let data = random_bytes(CHUNK_SIZE as usize + 1, 9);
    let up = f.ready("alice", "dir/p", &data).await;
    send_chunks(&*up, &data, 0..1).await;
    up.persist().await.unwrap();
    // Open on a connection: never expired.
    let later = crate::now_unix() + 3600;
    assert_eq!(f.storage.expire_partials(later).await.unwrap(), 0);
    drop(up);
    assert_eq!(f.list_all("alice", &p("dir")).await.unwrap().len(), 1);
    assert_eq!(
        f.storage.expire_partials(crate::now_unix()).await.unwrap(),
        0
    );
    assert_eq!(f.storage.expire_partials(later).await.unwrap(), 1);
    assert!(f.list_all("alice", &p("dir")).await.unwrap().is_empty());
    assert_eq!(f.storage.usage("alice").await.unwrap().used_bytes, 0);
    assert_eq!(std::fs::read_dir(f.partials("alice")).unwrap().count(), 0);
}

#[tokio::test]
async fn remove_partial_and_namespace_operations() {
    let f = fixture();
    let data = random_bytes(100, 10);
    let up = f.ready("alice", "a/b/file", &data).await;
    drop(up);
    f.storage
        .remove("alice", &p("a/b/file"), false, true)
        .await
        .unwrap();
    assert_eq!(
        code(f.storage.remove("alice", &p("a/b/file"), false, true).await),
        ErrorCode::NotFound
    );
    f.put("alice", "a/b/file", &data).await;
    f.storage.mkdir("alice", &p("x/y/z"), true).await.unwrap();
    f.storage.mkdir("alice", &p("x/y/z"), true).await.unwrap();
    assert_eq!(
        code(f.storage.mkdir("alice", &p("x/y/z"), false).await),
        ErrorCode::Conflict
    );
    assert_eq!(
        code(f.storage.mkdir("alice", &p("no/such"), false).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(f.storage.mkdir("alice", &p("a/b/file/sub"), true).await),
        ErrorCode::Conflict
    );
    // Rename: no overwrite without force, never into itself.
    f.put("alice", "other", b"other").await;
    assert_eq!(
        code(
            f.storage
                .rename("alice", &p("other"), &p("a/b/file"), false)
                .await
        ),
        ErrorCode::Conflict
    );
    f.storage
        .rename("alice", &p("other"), &p("a/b/file"), true)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(f.home("alice").join("a/b/file")).unwrap(),
        b"other"
    );
    assert_eq!(
        code(f.storage.rename("alice", &p("a"), &p("a/b/c"), false).await),
        ErrorCode::BadRequest
    );
    assert_eq!(
        code(f.storage.rename("alice", &p("a"), &p("x"), true).await),
        ErrorCode::Conflict
    );
    f.storage
        .rename("alice", &p("a"), &p("x/a"), false)
        .await
        .unwrap();
    assert_eq!(
        code(f.storage.rename("alice", &p("gone"), &p("y"), false).await),
        ErrorCode::NotFound
    );
    // Remove: a non-empty directory needs recursive.
    assert_eq!(
        code(f.storage.remove("alice", &p("x"), false, false).await),
        ErrorCode::Conflict
    );
    f.storage
        .remove("alice", &p("x"), true, false)
        .await
        .unwrap();
    assert_eq!(
        code(f.list_all("alice", &p("x")).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(
            f.storage
                .remove("alice", &RelPath::home(), true, false)
                .await
        ),
        ErrorCode::InvalidPath
    );
    let names: Vec<String> = f
        .list_all("alice", &RelPath::home())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

#[tokio::test]
async fn symlinks_pointing_out_are_refused_everywhere() {
    let f = fixture();
    let outside = f.tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("canary"), b"canary").unwrap();
    f.put("bob", "secret", b"bob's secret").await;
    let home = f.home("alice");
    std::os::unix::fs::symlink(&outside, home.join("evil")).unwrap();
    std::os::unix::fs::symlink("/etc", home.join("etc")).unwrap();
    std::os::unix::fs::symlink("../../bob/files", home.join("link")).unwrap();
    f.put("alice", "mine", b"mine").await;
    let refused = |c: ErrorCode| matches!(c, ErrorCode::InvalidPath | ErrorCode::NotFound);
    let s = &f.storage;
    for dir in ["evil", "etc", "link"] {
        let inside = |n: &str| p(&format!("{dir}/{n}"));
        assert!(
            refused(code(f.list_all("alice", &p(dir)).await)),
            "list {dir}"
        );
        assert!(
            refused(code(f.list_all("alice", &inside("canary")).await)),
            "list {dir}/canary"
        );
        assert!(refused(code(
            s.open_download("alice", &inside("canary")).await
        )));
        assert!(refused(code(
            s.open_download("alice", &inside("passwd")).await
        )));
        assert!(refused(code(
            s.open_download("alice", &inside("secret")).await
        )));
        assert!(refused(code(
            f.begin("alice", &format!("{dir}/new"), b"x", true).await
        )));
        assert!(refused(code(
            f.begin("alice", &format!("{dir}/canary"), b"x", true).await
        )));
        assert!(refused(code(
            s.remove("alice", &inside("canary"), false, false).await
        )));
        assert!(refused(code(
            s.remove("alice", &inside("secret"), false, false).await
        )));
        assert!(refused(code(s.mkdir("alice", &inside("made"), true).await)));
        assert!(refused(code(
            s.rename("alice", &inside("secret"), &p("stolen"), true)
                .await
        )));
        assert!(refused(code(
            s.rename("alice", &p("mine"), &inside("planted"), true)
                .await
        )));
    }
    // The home listing does not resolve them either.
    let names: Vec<String> = f
        .list_all("alice", &RelPath::home())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["mine"]);
    // Nothing outside changed.
    let mut outside_names: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    outside_names.sort();
    assert_eq!(outside_names, ["canary"]);
    assert_eq!(std::fs::read(outside.join("canary")).unwrap(), b"canary");
    assert_eq!(
        std::fs::read(f.home("bob").join("secret")).unwrap(),
        b"bob's secret"
    );
    assert_eq!(std::fs::read_dir(f.home("bob")).unwrap().count(), 1);
    assert!(!f.home("alice").join("stolen").exists());
}

#[tokio::test]
async fn a_symlink_swapped_in_during_an_upload_is_refused_at_commit() {
    let f = fixture();
    let outside = f.tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let data = b"payload".to_vec();
    let up = f.ready("alice", "d/file", &data).await;
    send_chunks(&*up, &data, 0..1).await;
    let home = f.home("alice");
    std::fs::remove_dir(home.join("d")).unwrap();
    std::os::unix::fs::symlink(&outside, home.join("d")).unwrap();
    assert_eq!(
        code(up.commit(Digest::of(&data)).await),
        ErrorCode::InvalidPath
    );
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
}

#[tokio::test]
async fn users_are_separate() {
    let f = fixture();
    f.put("bob", "secret", b"bob's").await;
    assert_eq!(
        code(f.list_all("alice", &p("secret")).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(f.storage.open_download("alice", &p("secret")).await),
        ErrorCode::NotFound
    );
    assert!(
        f.list_all("alice", &RelPath::home())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        code(f.list_all("../bob", &RelPath::home()).await),
        ErrorCode::BadRequest
    );
}

/// The refusal's text, checking it is a conflict.
fn conflict<T>(r: Result<T, StorageError>) -> String {
    match r {
        Ok(_) => panic!("expected a conflict"),
        Err(e) => {
            assert_eq!(e.code(), ErrorCode::Conflict, "{e}");
            e.to_string()
        }
    }
}

#[tokio::test]
async fn upload_commit_and_rename_share_one_destination_check() {
    let f = fixture();
    let s = &f.storage;
    f.put("alice", "file", b"a file").await;
    f.put("alice", "other", b"another").await;
    s.mkdir("alice", &p("dir"), false).await.unwrap();
    // A directory at the destination: the same refusal from all three.
    let at_begin = conflict(f.begin("alice", "dir", b"x", true).await);
    let at_rename = conflict(s.rename("alice", &p("other"), &p("dir"), true).await);
    let up = f.ready("alice", "late", b"late").await;
    send_chunks(&*up, b"late", 0..1).await;
    s.mkdir("alice", &p("late"), false).await.unwrap();
    let at_commit = conflict(up.commit(Digest::of(b"late")).await);
    assert_eq!(at_begin, "a directory exists at the destination");
    assert_eq!(at_rename, at_begin);
    assert_eq!(at_commit, at_begin);
    // A file where the parent directory should be.
    let at_begin = conflict(f.begin("alice", "file/x", b"x", true).await);
    let at_rename = conflict(s.rename("alice", &p("other"), &p("file/x"), true).await);
    assert_eq!(at_begin, "`file` is a file, not a directory");
    assert_eq!(at_rename, at_begin);
    // A file at the destination: replaced only with force.
    let taken = conflict(s.rename("alice", &p("other"), &p("file"), false).await);
    assert!(taken.contains("use force"), "{taken}");
    s.rename("alice", &p("other"), &p("file"), true)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(f.home("alice").join("file")).unwrap(),
        b"another"
    );
}

/// Pages cover a directory once, in order, and never split a file from the upload in
/// progress to the same name.
#[tokio::test]
async fn listing_pages_cover_a_directory_once_in_name_order() {
    let f = fixture();
    let dir = f.home("alice").join("many");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..25 {
        std::fs::write(dir.join(format!("f{i:02}")), b"x").unwrap();
    }
    // An upload replacing f09: the file and the partial share a name at a page edge.
    let data = random_bytes(100, 4);
    let PutBegun::Ready(up) = f.begin("alice", "many/f09", &data, true).await.unwrap() else {
        panic!("an upload over f09 with force");
    };
    send_chunks(&*up, &data, 0..1).await;
    up.persist().await.unwrap();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = f
            .storage
            .list("alice", &p("many"), after.as_deref(), 10)
            .await
            .unwrap();
        pages += 1;
        assert!(
            page.entries.len() <= 11,
            "a page holds the limit, plus a same-name entry"
        );
        if let Some(last) = page.entries.last() {
            after = Some(last.name.clone());
        }
        seen.extend(page.entries.into_iter().map(|e| (e.name, e.kind)));
        if !page.more {
            break;
        }
    }
    assert_eq!(pages, 3);
    let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    let mut expected: Vec<String> = (0..25).map(|i| format!("f{i:02}")).collect();
    expected.insert(10, "f09".into());
    assert_eq!(
        names, expected,
        "each name once, the upload beside its file"
    );
    assert_eq!(seen[9].1, EntryKind::File);
    assert_eq!(seen[10].1, EntryKind::Partial);
}

/// A big file whose last name goes is handed to the release thread, to be closed after
/// the answer: replaced by a commit, replaced by `mv --force`, removed alone and with its
/// folder. (The e2e test checks the daemon then lets go of it.)
#[tokio::test]
async fn big_files_replaced_or_removed_go_to_the_release_thread() {
    use std::os::unix::fs::MetadataExt as _;

    use super::release::tests::{released_mark, released_since};
    let f = fixture();
    let size = release::HOLD_FROM as usize + 1;
    let id = |path: &str| {
        let m = std::fs::metadata(f.home("alice").join(path)).unwrap();
        (m.dev(), m.ino())
    };
    let put_forced = |path: &'static str, seed: u64| {
        let data = random_bytes(size, seed);
        let f = &f;
        async move {
            let PutBegun::Ready(up) = f.begin("alice", path, &data, true).await.unwrap() else {
                panic!("{path}: not ready");
            };
            send_chunks(&*up, &data, 0..chunk_count(size as u64)).await;
            up.commit(Digest::of(&data)).await.unwrap();
        }
    };
    put_forced("big", 1).await;
    let first = id("big");
    let mark = released_mark();
    put_forced("big", 2).await;
    assert!(released_since(mark, first), "a commit's replaced file");

    let second = id("big");
    put_forced("other", 3).await;
    let mark = released_mark();
    f.storage
        .rename("alice", &p("other"), &p("big"), true)
        .await
        .unwrap();
    assert!(released_since(mark, second), "a move's replaced file");

    let third = id("big");
    let mark = released_mark();
    f.storage
        .remove("alice", &p("big"), false, false)
        .await
        .unwrap();
    assert!(released_since(mark, third), "a removed file");

    put_forced("dir/in", 4).await;
    let fourth = id("dir/in");
    let mark = released_mark();
    f.storage
        .remove("alice", &p("dir"), true, false)
        .await
        .unwrap();
    assert!(
        released_since(mark, fourth),
        "a file removed with its folder"
    );

    // A file with a second name frees nothing when its first goes: freed in place.
    put_forced("linked", 5).await;
    let fifth = id("linked");
    std::fs::hard_link(f.home("alice").join("linked"), f.tmp.path().join("backup")).unwrap();
    let mark = released_mark();
    f.storage
        .remove("alice", &p("linked"), false, false)
        .await
        .unwrap();
    assert!(
        !released_since(mark, fifth),
        "a file with another link is not held"
    );
}
