use futures_util::{SinkExt, StreamExt};
use proptest::prelude::*;
use tokio::io::AsyncWriteExt;
use tokio_util::codec::{Decoder, Framed};

use super::*;
use crate::{ErrorCode, Secret, WhoAmI};

#[tokio::test]
async fn frames_round_trip_over_a_small_duplex() {
    let (a, b) = tokio::io::duplex(64);
    let mut client = Framed::new(a, ClientCodec::new(crate::MAX_FRAME_LEN));
    let mut server = Framed::new(b, ServerCodec::new(crate::MAX_FRAME_LEN));

    let data = Bytes::from(vec![7u8; 100_000]);
    let sent: Vec<Frame<Request>> = vec![
        Frame::Hello(Hello::current("xfer/test")),
        Frame::Message(Request::Login {
            user: "alice".into(),
            password: Secret::new("pw"),
        }),
        Frame::Message(Request::WhoAmI),
        Frame::Chunk(Chunk::raw(9, 1 << 40, Digest::of(&data), data.clone())),
        Frame::Chunk(Chunk::raw(9, 0, Digest::of(&data), data.clone()).compress(1)),
    ];
    let expected = sent.clone();
    let writer = tokio::spawn(async move {
        for f in sent {
            client.send(f).await.unwrap();
        }
        client
    });
    for want in expected {
        let got = server.next().await.unwrap().unwrap();
        assert_eq!(got, want);
    }
    let mut client = writer.await.unwrap();

    let replies = vec![
        Frame::Message(Response::error(ErrorCode::Throttled, "slow down")),
        Frame::Message(Response::WhoAmI(WhoAmI {
            user: "alice".into(),
            session_expires_unix: 1,
            quota_used_bytes: 2,
            quota_limit_bytes: None,
        })),
    ];
    for r in replies.clone() {
        server.send(r).await.unwrap();
    }
    for want in replies {
        assert_eq!(client.next().await.unwrap().unwrap(), want);
    }
}

#[test]
fn oversized_frame_is_refused_before_buffering() {
    let mut codec = ServerCodec::new(1024);
    let mut buf = BytesMut::new();
    buf.put_u32(1025);
    buf.put_u8(KIND_MESSAGE);
    let err = codec.decode(&mut buf).unwrap_err();
    assert!(matches!(
        err,
        ProtoError::FrameTooLarge {
            len: 1025,
            max: 1024
        }
    ));
    // Nothing was reserved for the announced body.
    assert!(buf.capacity() < 1024);
}

#[test]
fn limit_can_be_raised_after_authentication() {
    let mut codec = ServerCodec::default();
    let mut big = BytesMut::new();
    let mut enc = ClientCodec::new(crate::MAX_FRAME_LEN);
    let data = Bytes::from(vec![1u8; 100_000]);
    let chunk = Chunk::raw(1, 0, Digest::of(&data), data);
    enc.encode(Frame::Chunk(chunk.clone()), &mut big).unwrap();
    assert!(codec.decode(&mut big.clone()).is_err());
    codec.set_max_frame_length(crate::MAX_FRAME_LEN);
    assert_eq!(codec.decode(&mut big).unwrap(), Some(Frame::Chunk(chunk)));
}

#[test]
fn bad_hello_magic_and_unknown_kind_are_errors() {
    let mut codec = ServerCodec::default();
    let mut buf = BytesMut::new();
    buf.put_u32(7);
    buf.put_u8(KIND_HELLO);
    buf.put_slice(b"SSH-");
    buf.put_u16(1);
    assert!(matches!(codec.decode(&mut buf), Err(ProtoError::BadMagic)));

    let mut buf = BytesMut::new();
    buf.put_u32(1);
    buf.put_u8(0x7f);
    assert!(matches!(
        codec.decode(&mut buf),
        Err(ProtoError::Malformed(_))
    ));

    let mut buf = BytesMut::new();
    buf.put_u32(5);
    buf.put_u8(KIND_CHUNK);
    buf.put_u32(0);
    assert!(matches!(
        codec.decode(&mut buf),
        Err(ProtoError::Malformed(_))
    ));
}

#[test]
fn hello_from_a_future_version_still_decodes() {
    let mut codec = ServerCodec::default();
    let mut buf = BytesMut::new();
    ClientCodec::default()
        .encode(
            Frame::Hello(Hello {
                version: 42,
                software: "x".repeat(200),
            }),
            &mut buf,
        )
        .unwrap();
    let Some(Frame::Hello(h)) = codec.decode(&mut buf).unwrap() else {
        panic!("expected hello")
    };
    assert_eq!(h.version, 42);
    assert_eq!(h.software.len(), MAX_SOFTWARE_LEN);
}

/// The hello is frozen: version 5 writes the bytes every earlier version reads, and
/// reads a version-2 peer's hello, so either side can name the mismatch.
#[test]
fn the_hello_layout_is_frozen_across_versions() {
    let mut buf = BytesMut::new();
    ServerCodec::default()
        .encode(Frame::Hello(Hello::current("xferd/0.1.0")), &mut buf)
        .unwrap();
    let mut frozen = vec![0, 0, 0, 18, 0x00, b'X', b'F', b'E', b'R', 0, 5];
    frozen.extend_from_slice(b"xferd/0.1.0");
    assert_eq!(crate::PROTOCOL_VERSION, 5);
    assert_eq!(&buf[..], &frozen[..]);
    // What a version-2 client sends.
    let mut v2 = BytesMut::from(&[0, 0, 0, 13, 0x00, b'X', b'F', b'E', b'R', 0, 2][..]);
    v2.extend_from_slice(b"xfer/0");
    let Some(Frame::Hello(h)) = ServerCodec::default().decode(&mut v2).unwrap() else {
        panic!("expected hello")
    };
    assert_eq!((h.version, h.software.as_str()), (2, "xfer/0"));
}

#[tokio::test]
async fn partial_frames_wait_for_more_bytes() {
    let (mut a, b) = tokio::io::duplex(64);
    let mut server = Framed::new(b, ServerCodec::default());
    let mut buf = BytesMut::new();
    ClientCodec::default()
        .encode(Frame::Message(Request::Ping), &mut buf)
        .unwrap();
    for byte in buf.iter() {
        a.write_all(&[*byte]).await.unwrap();
    }
    assert_eq!(
        server.next().await.unwrap().unwrap(),
        Frame::Message(Request::Ping)
    );
}

#[test]
fn file_messages_round_trip() {
    let mut enc = ClientCodec::new(crate::MAX_FRAME_LEN);
    let mut dec = ServerCodec::new(crate::MAX_FRAME_LEN);
    let requests = vec![
        Request::List {
            path: "a/b".into(),
            after: None,
        },
        Request::List {
            path: "".into(),
            after: Some("photo-0999.jpg".into()),
        },
        Request::PutBegin {
            path: "x.bin".into(),
            size: 1 << 40,
            force: true,
            head: Bytes::from_static(b"\x89PNG"),
        },
        Request::Manifest {
            transfer_id: 3,
            first: 0,
            count: crate::MANIFEST_PAGE,
        },
        Request::PutCommit {
            transfer_id: 3,
            digest: Digest::of(b"x"),
        },
        Request::GetChunks {
            transfer_id: 4,
            first: 7,
            count: 9,
            compress: true,
        },
        Request::ChatOpen { after: Some(41) },
        Request::Join {
            channel: "general".parse().unwrap(),
            history: 20,
            after: None,
        },
        Request::Say {
            target: "@bob".parse().unwrap(),
            text: "é\u{1b}[2J".repeat(500),
        },
        Request::SendBegin {
            to: "bob".into(),
            name: "photo.png".into(),
            size: 12,
            force: false,
            head: Bytes::from_static(b"\x89PNG"),
        },
        Request::SetModified {
            path: "docs/a.txt".into(),
            modified_unix: 1_700_000_000,
        },
        Request::MarkRead {
            target: "#lab".parse().unwrap(),
            id: 41,
        },
        Request::Catchup,
    ];
    for r in requests {
        let mut buf = BytesMut::new();
        enc.encode(Frame::Message(r.clone()), &mut buf).unwrap();
        assert_eq!(dec.decode(&mut buf).unwrap(), Some(Frame::Message(r)));
    }
    // A full history page of the longest messages fits in one frame.
    let message = crate::ChatMessage {
        id: u64::MAX,
        time_unix_ms: u64::MAX,
        from: "u".repeat(crate::MAX_USER_LEN),
        target: format!("#{}", "c".repeat(crate::MAX_CHANNEL_LEN))
            .parse()
            .unwrap(),
        body: crate::MessageBody::Text("x".repeat(crate::MAX_MESSAGE_LEN)),
    };
    let history = Response::History {
        target: message.target.clone(),
        messages: vec![message; crate::MAX_HISTORY as usize],
    };
    let mut buf = BytesMut::new();
    ServerCodec::new(crate::MAX_FRAME_LEN)
        .encode(Frame::Message(history.clone()), &mut buf)
        .unwrap();
    assert!(buf.len() <= crate::MAX_FRAME_LEN);
    assert_eq!(
        ClientCodec::new(crate::MAX_FRAME_LEN)
            .decode(&mut buf)
            .unwrap(),
        Some(Frame::Message(history))
    );
    // A full manifest page fits in one frame.
    let page = Response::Manifest {
        first: 0,
        digests: vec![Some(Digest::of(b"y")); crate::MANIFEST_PAGE as usize],
    };
    let mut buf = BytesMut::new();
    ServerCodec::new(crate::MAX_FRAME_LEN)
        .encode(Frame::Message(page.clone()), &mut buf)
        .unwrap();
    assert!(buf.len() < crate::MAX_FRAME_LEN);
    let mut client = ClientCodec::new(crate::MAX_FRAME_LEN);
    assert_eq!(client.decode(&mut buf).unwrap(), Some(Frame::Message(page)));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut codec = ServerCodec::default();
        let mut buf = BytesMut::from(&data[..]);
        // Decode until the codec wants more or reports an error; either is fine.
        while let Ok(Some(_)) = codec.decode(&mut buf) {}
    }

    #[test]
    fn arbitrary_message_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut codec = ClientCodec::default();
        let mut buf = BytesMut::new();
        buf.put_u32(body.len() as u32 + 1);
        buf.put_u8(KIND_MESSAGE);
        buf.put_slice(&body);
        let _ = codec.decode(&mut buf);
    }
}

#[test]
fn compression_is_used_only_when_it_shrinks_and_round_trips() {
    let text = Bytes::from("all work and no play ".repeat(40_000));
    let chunk = Chunk::raw(3, 0, Digest::of(&text), text.clone()).compress(1);
    let ChunkEncoding::Zstd { raw_len } = chunk.encoding else {
        panic!("text did not compress");
    };
    assert_eq!(raw_len as usize, text.len());
    assert!(chunk.data.len() < text.len() / 10);
    let mut buf = BytesMut::new();
    ClientCodec::new(crate::MAX_FRAME_LEN)
        .encode(Frame::Chunk(chunk.clone()), &mut buf)
        .unwrap();
    assert_eq!(buf[4], KIND_ZSTD_CHUNK);
    let Some(Frame::Chunk(got)) = ServerCodec::new(crate::MAX_FRAME_LEN)
        .decode(&mut buf)
        .unwrap()
    else {
        panic!("not a chunk");
    };
    assert_eq!(got, chunk);
    let raw = got.into_raw().unwrap();
    assert_eq!(raw.data, text);
    assert_eq!(raw.encoding, ChunkEncoding::Raw);

    let mut noise = vec![0u8; 100_000];
    blake3::Hasher::new()
        .update(b"seed")
        .finalize_xof()
        .fill(&mut noise);
    let noise = Bytes::from(noise);
    let kept = Chunk::raw(3, 0, Digest::of(&noise), noise.clone()).compress(1);
    assert_eq!(kept.encoding, ChunkEncoding::Raw);
    assert_eq!(kept.data, noise);
}

#[test]
fn compressed_chunks_cannot_claim_more_than_a_chunk_or_lie_about_their_size() {
    let mut buf = BytesMut::new();
    buf.put_u32(1 + CHUNK_HEADER as u32 + 4 + 3);
    buf.put_u8(KIND_ZSTD_CHUNK);
    buf.put_u64(1);
    buf.put_u64(0);
    buf.put_slice(&[0u8; 32]);
    buf.put_u32(crate::CHUNK_SIZE as u32 + 1);
    buf.put_slice(b"abc");
    assert!(matches!(
        ServerCodec::new(crate::MAX_FRAME_LEN).decode(&mut buf),
        Err(ProtoError::Malformed(_))
    ));

    // A bomb: 1 MiB of zeros claimed as 10 bytes.
    let zeros = vec![0u8; crate::CHUNK_SIZE];
    let packed = zstd::bulk::compress(&zeros, 1).unwrap();
    let liar = Chunk {
        transfer_id: 1,
        offset: 0,
        digest: Digest::of(&zeros),
        data: Bytes::from(packed),
        encoding: ChunkEncoding::Zstd { raw_len: 10 },
    };
    assert!(liar.into_raw().is_err());
}

#[test]
fn targets_parse_and_refuse_what_they_should() {
    use crate::{Target, TargetError};
    assert_eq!(
        Target::parse("#General"),
        Ok(Target::Channel("general".parse().unwrap()))
    );
    assert_eq!(
        Target::parse("@bob"),
        Ok(Target::User("bob".parse().unwrap()))
    );
    assert_eq!(Target::parse("bob"), Err(TargetError::NoSigil));
    assert_eq!(Target::parse("#"), Err(TargetError::BadChannel));
    assert_eq!(Target::parse("#a b"), Err(TargetError::BadChannel));
    assert_eq!(Target::parse("#\x1b[2J"), Err(TargetError::BadChannel));
    assert_eq!(
        Target::parse(&format!("#{}", "a".repeat(33))),
        Err(TargetError::BadChannel)
    );
    assert_eq!(Target::parse("@.bob"), Err(TargetError::BadUser));
    assert_eq!(Target::parse("@bob/../x"), Err(TargetError::BadUser));
    assert_eq!(Target::parse("#lab").unwrap().to_string(), "#lab");
}

/// Streams `n` chunk frames through a real `Framed`, keeping the last `hold` decoded
/// chunks alive (as a transfer pipeline does), then one control message; returns the
/// receiving codec's slab state as (slabs allocated, slabs kept).
async fn stream_chunks(n: u64, hold: usize) -> (usize, usize) {
    let (a, b) = tokio::io::duplex(256 * 1024);
    let mut tx = Framed::new(a, ClientCodec::new(crate::MAX_FRAME_LEN));
    let mut rx = Framed::new(b, ServerCodec::new(crate::MAX_FRAME_LEN));
    let data: Bytes = (0..crate::CHUNK_SIZE).map(|i| (i % 251) as u8).collect();
    let digest = Digest::of(&data);
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        for i in 0..n {
            let chunk = Chunk::raw(1, i * crate::CHUNK_SIZE as u64, digest, sent.clone());
            tx.send(Frame::Chunk(chunk)).await.unwrap();
        }
        tx.send(Frame::Message(Request::Ping)).await.unwrap();
        tx
    });
    let mut held = std::collections::VecDeque::new();
    for i in 0..n {
        match rx.next().await.unwrap().unwrap() {
            Frame::Chunk(c) => {
                assert_eq!(c.offset, i * crate::CHUNK_SIZE as u64);
                if (i as usize) < MAX_SLABS {
                    // In a slab: placed so the data can go to the disk with O_DIRECT.
                    let at = c.data.as_ptr() as usize % crate::CHUNK_BUF_ALIGN;
                    assert_eq!(at, 0, "chunk {i}'s data starts {at} bytes past a page");
                }
                assert!(c.data == data, "chunk {i} arrived intact");
                held.push_back(c);
                if held.len() > hold {
                    held.pop_front();
                }
            }
            other => panic!("expected a chunk, got {other:?}"),
        }
    }
    drop(held);
    let last = rx.next().await.unwrap().unwrap();
    assert_eq!(last, Frame::Message(Request::Ping));
    let _tx = writer.await.unwrap();
    let slabs = &rx.codec().slabs;
    (slabs.allocated, slabs.shadows.len())
}

#[tokio::test]
async fn chunk_frames_reuse_receive_buffers() {
    // Four chunks alive at a time: a handful of buffers serve forty frames.
    let (allocated, kept) = stream_chunks(40, 4).await;
    assert!(
        allocated <= 4 + 3,
        "{allocated} receive buffers for 40 frames"
    );
    assert!(kept <= KEEP_SLABS, "an idle connection keeps {kept}");
}

#[tokio::test]
async fn receive_buffers_are_bounded_when_every_chunk_is_held() {
    // Nothing is ever released: past MAX_SLABS frames get plain allocations.
    let n = MAX_SLABS as u64 + 10;
    let (allocated, kept) = stream_chunks(n, n as usize).await;
    assert_eq!(allocated, MAX_SLABS);
    assert!(kept <= KEEP_SLABS, "an idle connection keeps {kept}");
}

/// A full listing page of the longest names, with every optional field set, fits one
/// frame: listings never end a connection for being too large.
#[test]
fn a_full_listing_page_of_the_longest_names_fits_a_frame() {
    let entry = |i: usize| crate::Entry {
        name: format!("{i:05}{}", "n".repeat(250)),
        kind: crate::EntryKind::Partial,
        size: u64::MAX,
        modified_unix: u64::MAX,
        digest: Some(Digest::of(b"x")),
        received: Some(u64::MAX),
        expires_unix: Some(u64::MAX),
    };
    let page = Response::Listing {
        entries: (0..crate::LIST_PAGE).map(entry).collect(),
        more: true,
    };
    let mut enc = ServerCodec::new(crate::MAX_FRAME_LEN);
    let mut buf = BytesMut::new();
    enc.encode(Frame::Message(page.clone()), &mut buf)
        .expect("a full page fits a frame");
    let mut dec = ClientCodec::new(crate::MAX_FRAME_LEN);
    assert_eq!(dec.decode(&mut buf).unwrap(), Some(Frame::Message(page)));
}

/// `SetModified` is appended (variant 24): every earlier variant keeps its encoding.
#[test]
fn set_modified_is_the_appended_variant_24() {
    let bytes = postcard::to_stdvec(&Request::SetModified {
        path: "a".into(),
        modified_unix: 300,
    })
    .unwrap();
    assert_eq!(bytes, vec![24, 1, b'a', 0xac, 0x02]);
}

/// A chunk written from its own buffer is byte for byte the frame the encoder makes, raw
/// or compressed, and one past the frame limit is refused before anything is written.
#[tokio::test]
async fn write_chunk_puts_the_encoders_bytes_on_the_wire() {
    let text = Bytes::from("all work and no play ".repeat(40_000));
    let raw = Chunk::raw(9, 3 << 20, Digest::of(&text), text.clone());
    let zstd = raw.clone().compress(1);
    assert!(matches!(zstd.encoding, ChunkEncoding::Zstd { .. }));
    for chunk in [raw, zstd] {
        let mut expected = BytesMut::new();
        ClientCodec::new(crate::MAX_FRAME_LEN)
            .encode(Frame::Chunk(chunk.clone()), &mut expected)
            .unwrap();
        let mut wire = Vec::new();
        let written = write_chunk(&mut wire, &chunk).await.unwrap();
        assert_eq!(written, expected.len());
        assert!(wire == expected, "{:?}: the bytes differ", chunk.encoding);
    }

    let big = Bytes::from(vec![1u8; crate::MAX_FRAME_LEN]);
    let too_big = Chunk::raw(9, 0, Digest::of(&big), big);
    let mut wire = Vec::new();
    let err = write_chunk(&mut wire, &too_big).await.unwrap_err();
    assert!(matches!(err, ProtoError::FrameTooLarge { .. }), "{err}");
    assert!(wire.is_empty());
}

/// The frame of `msg` as the encoder writes it, decoded from a buffer of its own; returns
/// the message and the address range of that buffer.
fn decode_alone(msg: Request) -> (Request, std::ops::Range<usize>) {
    let mut buf = BytesMut::new();
    ClientCodec::new(crate::MAX_FRAME_LEN)
        .encode(Frame::Message(msg), &mut buf)
        .unwrap();
    let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    match ServerCodec::new(crate::MAX_FRAME_LEN).decode(&mut buf) {
        Ok(Some(Frame::Message(m))) => (m, range),
        other => panic!("expected a message, got {other:?}"),
    }
}

fn put_file(len: usize) -> Request {
    let data: Bytes = (0..len).map(|i| (i % 253) as u8).collect();
    Request::PutFile {
        path: "d/f.bin".into(),
        force: false,
        modified_unix: Some(7),
        digest: Digest::of(&data),
        data,
    }
}

/// `sent`, a `PutFile`, decoded as [`decode_alone`] does and checked: its data, and the
/// address range of the frame it was decoded from.
fn file_data_alone(sent: Request) -> (Bytes, std::ops::Range<usize>) {
    let (got, frame) = decode_alone(sent.clone());
    assert_eq!(got, sent);
    let Request::PutFile { data, .. } = got else {
        unreachable!()
    };
    (data, frame)
}

#[test]
fn a_whole_files_data_is_a_view_of_its_frame_not_a_copy() {
    let (data, frame) = file_data_alone(put_file(crate::CHUNK_SIZE));
    let at = data.as_ptr() as usize;
    assert!(
        frame.contains(&at) && frame.contains(&(at + data.len() - 1)),
        "the data was copied out of the frame"
    );
    // Smaller files are copied: a view keeps its whole receive buffer alive.
    for len in [crate::payload::APART_MIN, crate::payload::VIEW_MIN - 1] {
        let (data, frame) = file_data_alone(put_file(len));
        assert!(
            !frame.contains(&(data.as_ptr() as usize)),
            "a file of {len} bytes is a copy"
        );
    }
    let (data, frame) = file_data_alone(put_file(crate::payload::VIEW_MIN));
    assert!(
        frame.contains(&(data.as_ptr() as usize)),
        "half a chunk is a view"
    );
}

#[test]
fn a_message_with_bytes_after_it_is_refused() {
    // postcard ignores what follows a message: a peer could pad a small file's frame to
    // a megabyte, which nothing would account for.
    let mut buf = BytesMut::new();
    ClientCodec::new(crate::MAX_FRAME_LEN)
        .encode(Frame::Message(put_file(64 * 1024)), &mut buf)
        .unwrap();
    buf.extend_from_slice(&vec![0u8; 900_000]);
    let len = (buf.len() - LEN_PREFIX) as u32;
    buf[..LEN_PREFIX].copy_from_slice(&len.to_be_bytes());
    let err = ServerCodec::new(crate::MAX_FRAME_LEN)
        .decode(&mut buf)
        .unwrap_err();
    assert!(err.to_string().contains("900000 bytes follow it"), "{err}");
}

#[test]
fn a_file_after_a_long_preamble_is_copied_not_kept_with_it() {
    // A view keeps the whole frame alive: only data that is nearly all of it is a view.
    let Request::PutFile { digest, data, .. } = put_file(crate::payload::VIEW_MIN) else {
        unreachable!()
    };
    let sent = Request::PutFile {
        path: "p".repeat(100_000),
        force: false,
        modified_unix: None,
        digest,
        data,
    };
    let (data, frame) = file_data_alone(sent);
    assert!(
        !frame.contains(&(data.as_ptr() as usize)),
        "data behind a long path is a copy"
    );
}

#[tokio::test]
async fn small_files_held_between_frames_that_take_fresh_buffers_pin_none_of_them() {
    // A peer alternates a 64 KiB file (held, as a batch holds it until stored), a chunk
    // (which needs a slab of its own, and is dropped once written) and a small message
    // (after which the codec keeps only free slabs). Were each file a view of its slab,
    // every round would pin a slab the codec no longer tracks: 40 MiB held for 2.5 MiB
    // of files.
    let (a, b) = tokio::io::duplex(256 * 1024);
    let mut tx = Framed::new(a, ClientCodec::new(crate::MAX_FRAME_LEN));
    let mut rx = Framed::new(b, ServerCodec::new(crate::MAX_FRAME_LEN));
    let file = put_file(64 * 1024);
    let data: Bytes = (0..crate::CHUNK_SIZE).map(|i| (i % 251) as u8).collect();
    let chunk = Chunk::raw(1, 0, Digest::of(&data), data);
    let frames = [
        Frame::Message(file.clone()),
        Frame::Chunk(chunk),
        Frame::Message(Request::Ping),
    ];
    let sent = frames.clone();
    let writer = tokio::spawn(async move {
        for _ in 0..40 {
            for f in sent.clone() {
                tx.send(f).await.unwrap();
            }
        }
        tx
    });
    let mut files = Vec::new();
    for _ in 0..40 {
        for want in &frames {
            let got = rx.next().await.unwrap().unwrap();
            assert_eq!(&got, want);
            if let Frame::Message(m @ Request::PutFile { .. }) = got {
                files.push(m);
            }
        }
    }
    let _tx = writer.await.unwrap();
    let allocated = rx.codec().slabs.allocated;
    assert!(
        allocated <= 3,
        "{allocated} receive buffers for 40 files of 64 KiB held"
    );
    drop(files);
}

#[tokio::test]
async fn whole_files_reuse_receive_buffers_like_chunks() {
    // Many 1 MiB files, four alive at a time (as a batch holds them until they are
    // stored): a handful of receive buffers serve them all, as they serve chunks.
    let (a, b) = tokio::io::duplex(256 * 1024);
    let mut tx = Framed::new(a, ClientCodec::new(crate::MAX_FRAME_LEN));
    let mut rx = Framed::new(b, ServerCodec::new(crate::MAX_FRAME_LEN));
    let sent = put_file(crate::CHUNK_SIZE);
    let want = sent.clone();
    let writer = tokio::spawn(async move {
        for _ in 0..40 {
            tx.send(Frame::Message(sent.clone())).await.unwrap();
        }
        tx
    });
    let mut held = std::collections::VecDeque::new();
    for _ in 0..40 {
        let got = rx.next().await.unwrap().unwrap();
        assert_eq!(got, Frame::Message(want.clone()));
        held.push_back(got);
        if held.len() > 4 {
            held.pop_front();
        }
    }
    drop(held);
    let _tx = writer.await.unwrap();
    let allocated = rx.codec().slabs.allocated;
    assert!(
        allocated <= 4 + 3,
        "{allocated} receive buffers for 40 files"
    );
}

#[test]
fn a_message_is_encoded_in_place_and_a_refused_one_leaves_nothing() {
    let msg = put_file(5000);
    let mut buf = BytesMut::from(&b"queued"[..]);
    ClientCodec::new(crate::MAX_FRAME_LEN)
        .encode(Frame::Message(msg.clone()), &mut buf)
        .unwrap();
    let body = postcard::to_stdvec(&msg).unwrap();
    let mut want = b"queued".to_vec();
    want.extend_from_slice(&(1 + body.len() as u32).to_be_bytes());
    want.push(KIND_MESSAGE);
    want.extend_from_slice(&body);
    assert_eq!(&buf[..], &want[..]);
    // Past the limit: refused, and what was queued before is untouched.
    let mut codec = ClientCodec::new(100);
    let mut buf = BytesMut::from(&b"queued"[..]);
    let big = put_file(crate::MAX_FRAME_LEN);
    assert!(matches!(
        codec.encode(Frame::Message(big), &mut buf),
        Err(ProtoError::FrameTooLarge { .. })
    ));
    assert_eq!(&buf[..], b"queued");
}

/// A message written with its file's data apart is byte for byte the frame the encoder
/// makes, for every size of length postcard writes, requests and responses alike; one
/// past the frame limit is refused before anything is written.
#[tokio::test]
async fn write_message_puts_the_encoders_bytes_on_the_wire() {
    async fn same<M: Serialize + Payload + Clone + std::fmt::Debug>(msg: M) {
        let mut expected = BytesMut::new();
        XferCodec::<Request, M>::new(crate::MAX_FRAME_LEN)
            .encode(Frame::Message(msg.clone()), &mut expected)
            .unwrap();
        let mut wire = Vec::new();
        let written = write_message(&mut wire, msg.clone()).await.unwrap();
        assert_eq!(written, expected.len());
        assert!(wire == expected, "{msg:?}: the bytes differ");
    }
    for len in [0, 1, 127, 128, 16_383, 16_384, crate::CHUNK_SIZE] {
        let data: Bytes = (0..len).map(|i| (i % 251) as u8).collect();
        same(Request::PutFile {
            path: "a/b.bin".into(),
            force: true,
            modified_unix: None,
            digest: Digest::of(&data),
            data: data.clone(),
        })
        .await;
        same(Response::File {
            digest: Digest::of(&data),
            modified_unix: u64::MAX,
            data,
        })
        .await;
    }
    same(Response::Ok).await;
    same(Request::GetFile { path: "x".into() }).await;

    let mut wire = Vec::new();
    let err = write_message(&mut wire, put_file(crate::MAX_FRAME_LEN))
        .await
        .unwrap_err();
    assert!(matches!(err, ProtoError::FrameTooLarge { .. }), "{err}");
    assert!(wire.is_empty());
}
