//! The local backend's own state files, as a crash, a full disk or a hand edit may leave
//! them: the fuzzed bytes replace an upload's resume state (`partials/*.meta`) and a
//! stored file's manifest (`manifests/*.json`), then the backend lists, resumes the
//! upload, finishes it, and serves the file. Never a panic; a resume never claims more
//! than the file's size; what is served is the stored file's true content.
//!
//! `@SIZE@`, `@MTIME@` and `@PATH@` in the input become the real values first, so the
//! fuzzer can reach past the checks that tie a state file to its data.
#![no_main]

use std::path::Path;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use xfer_proto::Digest;
use xferd::config::StorageConfig;
use xferd::storage::local::LocalStorage;
use xferd::storage::{PutBegun, PutRequest, RelPath, Storage, chunk_count, chunk_len};

const SIZE: usize = 1 << 20 | 7;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let config = StorageConfig {
        min_free_bytes: 0,
        ..StorageConfig::default()
    };
    let storage = LocalStorage::open(dir.path(), config).expect("storage");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(&storage, dir.path(), text));
});

async fn run(storage: &LocalStorage, root: &Path, text: &str) {
    let content: Vec<u8> = (0..SIZE).map(|i| (i * 31 % 251) as u8).collect();
    let stored = RelPath::parse("kept.bin").unwrap();
    put(storage, &stored, &content, chunk_count(SIZE as u64)).await;
    let partial = RelPath::parse("dir/p.bin").unwrap();
    put(storage, &partial, &content, 1).await;

    let user = root.join("users/alice");
    let stamp = std::fs::metadata(user.join("files/kept.bin")).expect("stored file");
    let mtime_ns = std::os::unix::fs::MetadataExt::mtime(&stamp) as i128 * 1_000_000_000
        + std::os::unix::fs::MetadataExt::mtime_nsec(&stamp) as i128;
    let fill = |path: &str| {
        text.replace("@SIZE@", &SIZE.to_string())
            .replace("@MTIME@", &mtime_ns.to_string())
            .replace("@PATH@", path)
    };
    overwrite(&user.join("partials"), ".meta", &fill("dir/p.bin"));
    overwrite(&user.join("manifests"), ".json", &fill("kept.bin"));

    let _ = storage.list("alice", &RelPath::home(), None, 100).await;
    if let Ok(page) = storage
        .list("alice", &RelPath::parse("dir").unwrap(), None, 100)
        .await
    {
        for e in &page.entries {
            assert!(e.received.unwrap_or(0) <= e.size.max(SIZE as u64), "{e:?}");
        }
    }
    let _ = storage.usage("alice").await;
    // Resume and finish the upload: whatever the state said, the result is the content.
    if let Ok(PutBegun::Ready(up)) = storage.begin_upload("alice", request(&partial)).await {
        assert!(up.resumed_from() <= SIZE as u64);
        let missing: Vec<u64> = up
            .held_digests(0, chunk_count(SIZE as u64))
            .iter()
            .enumerate()
            .filter(|(_, d)| d.is_none())
            .map(|(i, _)| i as u64)
            .collect();
        for i in missing {
            let _ = up
                .write_chunk(i << 20, chunk_digest(&content, i), chunk(&content, i))
                .await;
        }
        if up.commit(Digest::of(&content)).await.is_ok() {
            let back = std::fs::read(user.join("files/dir/p.bin")).expect("committed");
            assert!(back == content, "a commit stored other bytes");
        }
    }
    // Serving trusts the manifest only if it matches the file; a reader checks chunks.
    if let Ok(down) = storage.open_download("alice", &stored).await {
        assert_eq!(down.size(), SIZE as u64);
        for i in 0..chunk_count(SIZE as u64) {
            if let Ok((digest, bytes)) = down.read_chunk(i).await {
                assert!(
                    bytes == chunk(&content, i),
                    "chunk {i} read back other bytes"
                );
                let _ = digest;
            }
        }
    }
    let _ = storage.expire_partials(u64::MAX / 2).await;
}

fn request(path: &RelPath) -> PutRequest {
    PutRequest {
        path: path.clone(),
        size: SIZE as u64,
        force: false,
        head: Bytes::new(),
    }
}

fn chunk(content: &[u8], i: u64) -> Bytes {
    let start = (i << 20) as usize;
    Bytes::copy_from_slice(&content[start..start + chunk_len(SIZE as u64, i) as usize])
}

fn chunk_digest(content: &[u8], i: u64) -> Digest {
    Digest::of_chunk(&chunk(content, i), i << 20, SIZE as u64).expect("a chunk digest")
}

/// Uploads the first `chunks` chunks of `content` to `path`; commits when that is all.
async fn put(storage: &LocalStorage, path: &RelPath, content: &[u8], chunks: u64) {
    let Ok(PutBegun::Ready(up)) = storage.begin_upload("alice", request(path)).await else {
        panic!("a fresh upload opens");
    };
    for i in 0..chunks {
        up.write_chunk(i << 20, chunk_digest(content, i), chunk(content, i))
            .await
            .expect("a good chunk");
    }
    if chunks == chunk_count(SIZE as u64) {
        up.commit(Digest::of(content)).await.expect("commit");
    } else {
        up.persist().await.expect("persist");
    }
}

/// Replaces every `*{ext}` file in `dir` with `text`.
fn overwrite(dir: &Path, ext: &str, text: &str) {
    for entry in std::fs::read_dir(dir).expect("state dir").flatten() {
        if entry.file_name().to_string_lossy().ends_with(ext) {
            std::fs::write(entry.path(), text).expect("overwrite");
        }
    }
}
