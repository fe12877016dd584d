//! `PutFile` and `GetFile` batches: answers in request order, with other requests
//! between them.

use super::*;

fn put_file(path: &str, data: Vec<u8>) -> Request {
    Request::PutFile {
        path: path.into(),
        force: false,
        modified_unix: Some(1_700_000_000),
        digest: Digest::of(&data),
        data: Bytes::from(data),
    }
}

/// 1 MiB of bytes that differ from file to file.
fn content(i: usize) -> Vec<u8> {
    let mut data = vec![0u8; 1 << 20];
    for (j, b) in data.iter_mut().enumerate() {
        *b = (i.wrapping_mul(31) ^ j.wrapping_mul(7)) as u8;
    }
    data
}

#[tokio::test]
async fn put_files_sent_ahead_are_answered_in_order_around_another_request() {
    let mut server = Server::start(&["alice"]).await;
    let mut c = server.connect().await;
    assert!(matches!(
        login(&mut c, "alice", PASSWORD).await,
        Response::LoggedIn { .. }
    ));

    // 40 MiB of files (more than a batch holds), a listing, then more files, one of them
    // with a digest that does not match and one with a path that escapes, all sent
    // before any answer is read.
    let mut expected = Vec::new();
    for i in 0..40 {
        let data = content(i);
        expected.push(Some(Digest::of(&data)));
        assert!(c.send(put_file(&format!("f{i:02}.bin"), data)).await);
    }
    assert!(
        c.send(Request::List {
            path: String::new(),
            after: None,
        })
        .await
    );
    for i in 40..50 {
        let data = content(i);
        let request = match i {
            44 => {
                let Request::PutFile {
                    path,
                    force,
                    modified_unix,
                    data,
                    ..
                } = put_file(&format!("f{i:02}.bin"), data)
                else {
                    unreachable!()
                };
                Request::PutFile {
                    path,
                    force,
                    modified_unix,
                    digest: Digest::of(b"something else"),
                    data,
                }
            }
            45 => put_file("../escape.bin", data),
            _ => {
                expected.push(Some(Digest::of(&data)));
                put_file(&format!("f{i:02}.bin"), data)
            }
        };
        if matches!(i, 44 | 45) {
            expected.push(None);
        }
        assert!(c.send(request).await);
    }

    let mut listed = None;
    let mut answers = Vec::new();
    while answers.len() < expected.len() {
        match timeout(PATIENCE, c.response())
            .await
            .expect("an answer in time")
        {
            Response::Listing { entries, .. } => {
                assert_eq!(
                    answers.len(),
                    40,
                    "the listing comes right after the files before it"
                );
                listed = Some(entries);
            }
            other => answers.push(other),
        }
    }
    for (i, (answer, want)) in answers.iter().zip(&expected).enumerate() {
        match (answer, want) {
            (Response::Committed { size, digest }, Some(d)) => {
                assert_eq!((*size, digest), (1 << 20, d), "file {i}");
            }
            (Response::Error { code, .. }, None) if i == 44 => {
                assert_eq!(*code, ErrorCode::ChecksumMismatch, "{answer:?}");
            }
            (Response::Error { code, .. }, None) if i == 45 => {
                assert_eq!(*code, ErrorCode::InvalidPath, "{answer:?}");
            }
            _ => panic!("answer {i}: {answer:?}, expected {want:?}"),
        }
    }
    // The listing saw every file sent before it, committed, and none sent after it.
    let mut names: Vec<String> = listed
        .expect("a listing")
        .into_iter()
        .map(|e| e.name)
        .collect();
    names.sort();
    let before: Vec<String> = (0..40).map(|i| format!("f{i:02}.bin")).collect();
    assert_eq!(names, before);

    // Still serving, and what was refused is not there.
    match c
        .call(Request::List {
            path: String::new(),
            after: None,
        })
        .await
    {
        Response::Listing { entries, .. } => {
            assert_eq!(entries.len(), 48, "{entries:?}");
            assert!(entries.iter().all(|e| e.name != "f44.bin"));
        }
        other => panic!("expected a listing, got {other:?}"),
    }
}

#[tokio::test]
async fn get_files_sent_ahead_are_answered_in_order_each_with_its_file_or_why_not() {
    let mut server = Server::start(&["alice"]).await;
    let mut c = server.connect().await;
    assert!(matches!(
        login(&mut c, "alice", PASSWORD).await,
        Response::LoggedIn { .. }
    ));
    // 40 files of 1 MiB: more than one read of MAX_BATCH_BYTES.
    for i in 0..40 {
        assert!(matches!(
            c.call(put_file(&format!("f{i:02}.bin"), content(i))).await,
            Response::Committed { .. }
        ));
    }
    let get = |path: &str| Request::GetFile { path: path.into() };
    let mut asked = Vec::new();
    for i in 0..40 {
        asked.push(Some(i));
        assert!(c.send(get(&format!("f{i:02}.bin"))).await);
        match i {
            10 => {
                asked.push(None);
                assert!(c.send(get("../outside.bin")).await);
            }
            20 => {
                asked.push(None);
                assert!(c.send(get("missing.bin")).await);
            }
            30 => {
                asked.push(None);
                assert!(
                    c.send(Request::Mkdir {
                        path: "made".into(),
                        parents: false
                    })
                    .await
                );
            }
            _ => {}
        }
    }
    for (n, want) in asked.iter().enumerate() {
        let answer = timeout(PATIENCE, c.response())
            .await
            .expect("an answer in time");
        match (want, &answer) {
            (
                Some(i),
                Response::File {
                    data,
                    digest,
                    modified_unix,
                },
            ) => {
                assert_eq!(data.as_ref(), content(*i).as_slice(), "file {i}");
                assert_eq!(*digest, Digest::of(data));
                assert_eq!(*modified_unix, 1_700_000_000);
            }
            (None, _) if n == 11 => assert_eq!(code(&answer), Some(ErrorCode::InvalidPath)),
            (None, _) if n == 22 => assert_eq!(code(&answer), Some(ErrorCode::NotFound)),
            (None, Response::Ok) if n == 33 => {}
            _ => panic!("answer {n}: {answer:?}, expected {want:?}"),
        }
    }
    // Still serving.
    assert!(matches!(
        c.call(get("f00.bin")).await,
        Response::File { .. }
    ));
}
