//! [`MeteredCodec`]: the server's codec with counting on the way through, so every
//! frame a session reads or writes is measured in one place whichever code path sends
//! it (request replies, early refusals during the handshake, streamed chunks, chat
//! events). It counts frame bytes both ways, chunk bytes sent, error replies by code,
//! and chat messages said (a `Said` reply) and delivered (a message event). It never
//! changes a frame.

use std::sync::Arc;

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};
use xfer_proto::{
    ChatEvent, Chunk, ChunkEncoding, Frame, ProtoError, Request, Response, ServerCodec,
};

use super::Metrics;

/// [`ServerCodec`] plus counters.
pub struct MeteredCodec {
    inner: ServerCodec,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for MeteredCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteredCodec")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl MeteredCodec {
    /// Wraps `inner`, counting into `metrics`.
    pub fn new(inner: ServerCodec, metrics: Arc<Metrics>) -> MeteredCodec {
        MeteredCodec { inner, metrics }
    }

    /// Changes the frame limit, e.g. raising it once the peer has authenticated.
    pub fn set_max_frame_length(&mut self, max: usize) {
        self.inner.set_max_frame_length(max);
    }

    /// Counts the file bytes of a chunk sent (its raw length, compressed or not).
    pub fn count_chunk(&self, chunk: &Chunk) {
        let raw = match chunk.encoding {
            ChunkEncoding::Raw => chunk.data.len() as u64,
            ChunkEncoding::Zstd { raw_len } => u64::from(raw_len),
        };
        self.metrics.file_bytes.outbound.inc_by(raw);
    }

    /// Counts `len` bytes written past the encoder (a chunk's data sent from its own
    /// buffer, `Transport::send_chunk`).
    pub fn count_wire(&self, len: usize) {
        self.metrics.wire_bytes.outbound.inc_by(len as u64);
    }
}

impl Decoder for MeteredCodec {
    type Item = Frame<Request>;
    type Error = ProtoError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame<Request>>, ProtoError> {
        let before = src.len();
        let frame = self.inner.decode(src)?;
        // A frame is consumed whole by the call that returns it (prefix and body).
        if frame.is_some() {
            let taken = before.saturating_sub(src.len());
            self.metrics.wire_bytes.inbound.inc_by(taken as u64);
        }
        Ok(frame)
    }
}

impl Encoder<Frame<Response>> for MeteredCodec {
    type Error = ProtoError;

    fn encode(&mut self, frame: Frame<Response>, dst: &mut BytesMut) -> Result<(), ProtoError> {
        let m = &self.metrics;
        match &frame {
            Frame::Chunk(chunk) => self.count_chunk(chunk),
            Frame::Message(Response::Error { code, .. }) => m.error_sent(*code),
            Frame::Message(Response::Said { .. }) => {
                m.chat_said.inc();
            }
            Frame::Message(Response::Event(event)) if matches!(**event, ChatEvent::Message(_)) => {
                m.chat_delivered.inc();
            }
            Frame::Hello(_) | Frame::Message(_) => {}
        }
        let before = dst.len();
        self.inner.encode(frame, dst)?;
        m.wire_bytes.outbound.inc_by((dst.len() - before) as u64);
        Ok(())
    }
}
