//! The frame and message decoders, both directions, fed arbitrary bytes in arbitrary
//! pieces: they return frames or errors, never panic, and never buffer more than the
//! frame limit allows.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;
use xfer_proto::{ClientCodec, ServerCodec};

fn feed<D: Decoder>(mut codec: D, data: &[u8], split: usize, max: usize) {
    let mut buf = BytesMut::new();
    let (head, tail) = data.split_at(split.min(data.len()));
    for piece in [head, tail] {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(_) => return,
            }
        }
        // What stays buffered is at most one frame in progress.
        assert!(buf.len() <= max + 4 + piece.len());
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let split = usize::from(first) * rest.len() / 255;
    for max in [xfer_proto::MAX_PREAUTH_FRAME_LEN, xfer_proto::MAX_FRAME_LEN] {
        feed(ServerCodec::new(max), rest, split, max);
        feed(ClientCodec::new(max), rest, split, max);
    }
});
