//! Runs of chunks in one request (`PUT /api/uploads/{id}/runs/{first}`, docs/HTTP.md):
//! every chunk of a run checked before it is written, a chunk with a wrong digest refused
//! with nothing of it written, bodies longer or shorter than the declared run refused
//! (also when the body has no length and the excess only shows as it arrives), and a run
//! that finishes the upload commits the same file as single chunks would.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use xfer_e2e::{CHUNK, DEADLINE, Daemon, blake3_hex, random_bytes};
use xfer_proto::Digest;

use super::web_api::{Web, base64_head, begin, code, http1_tls};

/// The protocol digest of chunk `index` of `data`.
fn cv(data: &[u8], index: usize) -> String {
    let start = index * CHUNK;
    let end = (start + CHUNK).min(data.len());
    Digest::of_chunk(&data[start..end], start as u64, data.len() as u64)
        .unwrap()
        .to_string()
}

/// Bytes of chunks `first..first + count` of `data`.
fn run_bytes(data: &[u8], first: usize, count: usize) -> Vec<u8> {
    data[first * CHUNK..((first + count) * CHUNK).min(data.len())].to_vec()
}

async fn put_run(
    web: &Web,
    token: &str,
    id: &str,
    first: usize,
    digests: &[String],
    body: Vec<u8>,
) -> reqwest::Response {
    web.bearer(
        Method::PUT,
        &format!("/api/uploads/{id}/runs/{first}"),
        token,
    )
    .header("x-xfer-blake3", digests.join(","))
    .body(body)
    .send()
    .await
    .unwrap()
}

async fn held(web: &Web, token: &str, id: &str, chunks: usize) -> Vec<bool> {
    let manifest: Value = web
        .bearer(
            Method::GET,
            &format!("/api/uploads/{id}/manifest?first=0&count={chunks}"),
            token,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    manifest["digests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| !d.is_null())
        .collect()
}

/// Opens an upload of `data` to `path`; the server's answer (with its `id`).
async fn open_upload(web: &Web, token: &str, path: &str, data: &[u8]) -> Value {
    let (status, open) = begin(
        web,
        token,
        json!({ "path": path, "size": data.len(), "head": base64_head(data) }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{open}");
    open
}

/// Asserts a run was taken whole (204).
async fn accepted(r: reqwest::Response) {
    assert_eq!(
        r.status(),
        StatusCode::NO_CONTENT,
        "{}",
        r.text().await.unwrap()
    );
}

/// Commits upload `id` as `data` and asserts it was committed.
async fn commit(web: &Web, token: &str, id: &str, data: &[u8]) {
    let done = web
        .bearer(Method::POST, &format!("/api/uploads/{id}/commit"), token)
        .json(&json!({ "blake3": blake3_hex(data) }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        done.status(),
        StatusCode::OK,
        "{}",
        done.text().await.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_chunks_is_verified_chunk_by_chunk_and_bounded() {
    let d = Daemon::start_with(&["alice"], None);
    let data = random_bytes(6 * CHUNK + 321, 7);
    let n = data.len().div_ceil(CHUNK);
    let web = Web::new(&d);
    let (token, _) = web.session("alice").await;
    let open = open_upload(&web, &token, "run.bin", &data).await;
    assert_eq!(open["max_run_chunks"], 16);
    let id = open["id"].as_str().unwrap();

    // Chunks 0..3 in one request; the server takes the plain BLAKE3 of a chunk too.
    let digests = vec![
        cv(&data, 0),
        blake3_hex(&run_bytes(&data, 1, 1)),
        cv(&data, 2),
    ];
    let r = put_run(&web, &token, id, 0, &digests, run_bytes(&data, 0, 3)).await;
    accepted(r).await;

    // Chunk 4 of the run 3..6 does not match its digest: 3 is written, 4 and 5 are not.
    let digests = vec![cv(&data, 3), cv(&data, 3), cv(&data, 5)];
    let r = put_run(&web, &token, id, 3, &digests, run_bytes(&data, 3, 3)).await;
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "checksum_mismatch", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("chunk 4") && message.contains("3..=3"),
        "{message}"
    );
    assert_eq!(
        held(&web, &token, id, n).await,
        [true, true, true, true, false, false, false]
    );

    // Longer than the declared run (by its length), shorter, past the end, too many.
    let run = vec![cv(&data, 4), cv(&data, 5)];
    let mut long = run_bytes(&data, 4, 2);
    long.push(0);
    let r = put_run(&web, &token, id, 4, &run, long).await;
    assert_eq!(
        code(r).await,
        (StatusCode::PAYLOAD_TOO_LARGE, "too_large".into())
    );
    let short = run_bytes(&data, 4, 2)[..CHUNK + 10].to_vec();
    let r = put_run(&web, &token, id, 4, &run, short).await;
    assert_eq!(
        code(r).await,
        (StatusCode::BAD_REQUEST, "bad_request".into())
    );
    let r = put_run(&web, &token, id, 6, &run, run_bytes(&data, 6, 1)).await;
    assert_eq!(
        code(r).await,
        (StatusCode::BAD_REQUEST, "bad_request".into())
    );
    let many = vec![cv(&data, 0); 17];
    let r = put_run(&web, &token, id, 0, &many, Vec::new()).await;
    assert_eq!(
        code(r).await,
        (StatusCode::BAD_REQUEST, "bad_request".into())
    );
    assert_eq!(
        held(&web, &token, id, n).await,
        [true, true, true, true, false, false, false]
    );

    // Without a length (HTTP/1.1 chunked), the excess is refused as it arrives: chunk 4
    // is written as it completes, the last one of the run only once the body has ended.
    let (status, response) =
        put_run_unsized(&d, &token, id, 4, &run, &run_bytes(&data, 4, 2), 64 * 1024).await;
    assert_eq!(status, 413, "{response}");
    assert_eq!(
        held(&web, &token, id, n).await,
        [true, true, true, true, true, false, false]
    );

    // The rest, including the short last chunk, in one run; the file commits.
    let run = vec![cv(&data, 4), cv(&data, 5), cv(&data, 6)];
    let r = put_run(&web, &token, id, 4, &run, run_bytes(&data, 4, 3)).await;
    accepted(r).await;
    commit(&web, &token, id, &data).await;
    let stored = std::fs::read(d.files_dir("alice").join("run.bin")).unwrap();
    assert_eq!(blake3_hex(&stored), blake3_hex(&data));
}

/// Sends `body` followed by `excess` more bytes as a run from `first`, over HTTP/1.1 with
/// chunked transfer coding (no length given), writing while the answer is read. Returns
/// the response's status and text.
async fn put_run_unsized(
    d: &Daemon,
    token: &str,
    id: &str,
    first: usize,
    digests: &[String],
    body: &[u8],
    excess: usize,
) -> (u16, String) {
    let (mut rx, mut tx) = tokio::io::split(http1_tls(d).await);
    let head = format!(
        "PUT /api/uploads/{id}/runs/{first} HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {token}\r\nX-Xfer-Blake3: {}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        digests.join(",")
    );
    let mut all = body.to_vec();
    all.extend(std::iter::repeat_n(0u8, excess));
    let writer = tokio::spawn(async move {
        tx.write_all(head.as_bytes()).await?;
        for piece in all.chunks(16 * 1024) {
            tx.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                .await?;
            tx.write_all(piece).await?;
            tx.write_all(b"\r\n").await?;
        }
        tx.write_all(b"0\r\n\r\n").await?;
        tx.flush().await
    });
    let mut response = Vec::new();
    // The server may close before reading everything; what it answered is what counts.
    let _ = rx.read_to_end(&mut response).await;
    let _ = writer.await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// On the S3 backend, a chunk it holds sent again with its plain BLAKE3 (`b3sum` of the
/// piece, as docs/HTTP.md's curl loop does on a re-run) is the same chunk: accepted, the
/// upload kept (that backend starts an upload over when a held chunk changes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_chunk_sent_again_with_its_plain_blake3_keeps_an_s3_upload() {
    let Some(garage) = tokio::task::block_in_place(xfer_e2e::garage::Garage::start) else {
        return;
    };
    let tmp = tempfile::TempDir::new().unwrap();
    let config = garage.storage_config(&tmp.path().join("s3-credentials.toml"), "web", "");
    let data_dir = tmp.path().join("data");
    let d = tokio::task::block_in_place(|| {
        Daemon::start_prepared(&data_dir, &["alice"], Some(&config), tmp)
    });
    // Ten chunks: the first eight make the first 8 MiB part, stored while the rest comes.
    let data = random_bytes(9 * CHUNK + 99, 8);
    let web = Web::new(&d);
    let (token, _) = web.session("alice").await;
    let open = open_upload(&web, &token, "again.bin", &data).await;
    let id = open["id"].as_str().unwrap();
    let all: Vec<String> = (0..10).map(|i| cv(&data, i)).collect();
    let r = put_run(&web, &token, id, 0, &all[..8], run_bytes(&data, 0, 8)).await;
    accepted(r).await;
    let part_stored = [vec![true; 8], vec![false; 2]].concat();
    let runtime = tokio::runtime::Handle::current();
    let stored = tokio::task::block_in_place(|| {
        xfer_e2e::poll(DEADLINE, || {
            (runtime.block_on(held(&web, &token, id, 10)) == part_stored).then_some(())
        })
    });
    assert!(stored.is_some(), "the first part was never stored");

    let plain = vec![blake3_hex(&run_bytes(&data, 1, 1))];
    let r = put_run(&web, &token, id, 1, &plain, run_bytes(&data, 1, 1)).await;
    accepted(r).await;
    assert_eq!(
        held(&web, &token, id, 10).await,
        part_stored,
        "the upload was kept"
    );

    let r = put_run(&web, &token, id, 8, &all[8..], run_bytes(&data, 8, 2)).await;
    accepted(r).await;
    commit(&web, &token, id, &data).await;
}

/// A chunked upload onto a name that is taken is refused with `conflict` and the file that
/// is there; with `force` it replaces that file only at commit, as `xfer push --force` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_upload_onto_a_taken_name_conflicts_and_force_replaces_it_at_commit() {
    let d = Daemon::start_with(&["alice"], None);
    let web = Web::new(&d);
    let (token, _) = web.session("alice").await;
    let old = random_bytes(CHUNK + 17, 11);
    let open = open_upload(&web, &token, "taken.bin", &old).await;
    let id = open["id"].as_str().unwrap();
    let all: Vec<String> = (0..2).map(|i| cv(&old, i)).collect();
    accepted(put_run(&web, &token, id, 0, &all, old.clone()).await).await;
    commit(&web, &token, id, &old).await;

    let new = random_bytes(3 * CHUNK + 5, 12);
    let body = json!({ "path": "taken.bin", "size": new.len(), "head": base64_head(&new) });
    let (status, refused) = begin(&web, &token, body).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["error"]["code"], "conflict", "{refused}");
    assert_eq!(refused["existing"]["size"], old.len(), "{refused}");

    let body = json!({
        "path": "taken.bin", "size": new.len(), "head": base64_head(&new), "force": true,
    });
    let (status, open) = begin(&web, &token, body).await;
    assert_eq!(status, StatusCode::OK, "{open}");
    let id = open["id"].as_str().unwrap();
    let all: Vec<String> = (0..4).map(|i| cv(&new, i)).collect();
    accepted(put_run(&web, &token, id, 0, &all, new.clone()).await).await;
    // Until the commit, the old file is what a download gets.
    let get = || async {
        let r = web.bearer(Method::GET, "/api/file?path=taken.bin", &token);
        r.send().await.unwrap().bytes().await.unwrap()
    };
    assert_eq!(get().await, old);
    commit(&web, &token, id, &new).await;
    assert_eq!(get().await, new);
}
