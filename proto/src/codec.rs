//! Framing: a 4-byte big-endian length, then a body whose first byte says what it is.
//!
//! | kind | body after the kind byte |
//! |------|--------------------------|
//! | `0x00` hello | `b"XFER"`, version `u16` BE, software name (UTF-8, ≤ 64 bytes) |
//! | `0x01` message | a postcard-encoded [`Request`] or [`Response`] |
//! | `0x02` chunk | transfer id `u64` BE, offset `u64` BE, BLAKE3 digest (32 bytes), data |
//! | `0x03` compressed chunk | as `0x02`, then raw length `u32` BE, then zstd data |
//!
//! The length is checked against the limit in force *before* any buffer grows, so a
//! peer cannot make this side allocate more than [`XferCodec::max_frame_length`].
//! The codec never touches sockets; it is used through `tokio_util::codec::Framed`.
//!
//! Large frames (file chunks, whole small files) are read into recycled receive buffers
//! ("slabs", see `Slabs`) instead of a fresh allocation per frame: a decoded chunk, or a
//! whole file's data (`crate::payload`), still holds the buffer it arrived in, so without
//! recycling every 1 MiB frame needs new memory, which the allocator tends to return to
//! the kernel in between and then fault back in, page by page (measured in
//! bench/RESULTS.md).

use std::marker::PhantomData;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncWrite, AsyncWriteExt as _};
use tokio_util::codec::{Decoder, Encoder};

use crate::{Chunk, ChunkEncoding, Digest, Hello, Payload, ProtoError, Request, Response};

const KIND_HELLO: u8 = 0x00;
const KIND_MESSAGE: u8 = 0x01;
const KIND_CHUNK: u8 = 0x02;
const KIND_ZSTD_CHUNK: u8 = 0x03;
const HELLO_MAGIC: &[u8; 4] = b"XFER";
const MAX_SOFTWARE_LEN: usize = 64;
const LEN_PREFIX: usize = 4;
const CHUNK_HEADER: usize = 8 + 8 + 32;

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<M> {
    /// The opening exchange.
    Hello(Hello),
    /// A control message.
    Message(M),
    /// File data.
    Chunk(Chunk),
}

/// Frames at least this long are read into a slab.
const SLAB_MIN_FRAME: usize = 64 * 1024;
/// Room in a slab after its frame, for the start of the next frame.
const SLAB_SLACK: usize = 16 * 1024;
/// Bytes of one slab: the largest frame after authentication, its prefix, the slack.
const SLAB_LEN: usize = LEN_PREFIX + crate::MAX_FRAME_LEN + SLAB_SLACK;
/// Where a raw chunk's data starts in its frame: prefix, kind, header.
const CHUNK_DATA_AT: usize = LEN_PREFIX + 1 + CHUNK_HEADER;
/// What a slab allocates: [`SLAB_LEN`] and room to place a frame so that a chunk's data
/// starts on a [`crate::CHUNK_BUF_ALIGN`] boundary.
const SLAB_ALLOC: usize = SLAB_LEN + crate::CHUNK_BUF_ALIGN;
/// Slabs tracked at once: every chunk a transfer pipeline holds (a window of
/// [`crate::PUT_WINDOW`] plus the ones being written and read), with some margin. Past
/// that, frames get plain allocations.
const MAX_SLABS: usize = crate::PUT_WINDOW + 4;
/// Slabs kept once a control message arrives (transfers send none mid-stream; a whole
/// file's message, which is as large as a chunk, does not count): an idle connection
/// holds at most this many.
const KEEP_SLABS: usize = 2;

/// Receive buffers for large frames, reused once every frame decoded from one has been
/// dropped. For each slab handed to the read buffer a zero-length handle on the same
/// allocation (its "shadow") is kept; when the shadow is the only handle left,
/// `BytesMut::try_reclaim` gives the whole buffer back without copying or allocating.
///
/// A frame is placed in its slab so that a raw chunk's data starts on a page boundary:
/// the receiver can then write it to the disk with `O_DIRECT` straight from this
/// buffer (crate xfer-disk), and the copies into it start aligned.
#[derive(Default)]
struct Slabs {
    shadows: Vec<BytesMut>,
    /// Slabs allocated so far (for tests and curiosity).
    allocated: usize,
}

impl Slabs {
    /// Makes `src`, which holds the first bytes of a frame of `total` bytes (prefix
    /// included), a slab with room for all of it.
    fn install(&mut self, src: &mut BytesMut, total: usize) {
        let mut free = None;
        self.shadows.retain_mut(|shadow| {
            if free.is_some() || !shadow.try_reclaim(SLAB_ALLOC) {
                return true;
            }
            free = Some(std::mem::take(shadow));
            false
        });
        let mut slab = match free {
            Some(slab) => slab,
            None if self.shadows.len() < MAX_SLABS => {
                self.allocated += 1;
                BytesMut::with_capacity(SLAB_ALLOC)
            }
            None => {
                src.reserve(total - src.len());
                return;
            }
        };
        // Skip the bytes that put the chunk data on a boundary (`try_reclaim` gives the
        // slab back from the start of its allocation).
        let align = crate::CHUNK_BUF_ALIGN;
        let pad = (align - (slab.as_ptr() as usize + CHUNK_DATA_AT) % align) % align;
        slab.resize(pad, 0);
        slab.advance(pad);
        let end = slab.capacity();
        self.shadows.push(slab.split_off(end));
        slab.extend_from_slice(src);
        *src = slab;
    }

    /// Keeps at most [`KEEP_SLABS`] slabs, only free ones; a slab still in use is then
    /// freed when its last frame is dropped.
    fn trim(&mut self) {
        if self.shadows.len() <= KEEP_SLABS {
            return;
        }
        let mut kept = Vec::with_capacity(KEEP_SLABS);
        for mut shadow in self.shadows.drain(..) {
            if kept.len() < KEEP_SLABS && shadow.try_reclaim(SLAB_ALLOC) {
                kept.push(shadow);
            }
        }
        self.shadows = kept;
    }
}

/// Length-delimited framing plus (de)serialisation, decoding `In` and encoding `Out`.
pub struct XferCodec<In, Out> {
    max_frame_length: usize,
    slabs: Slabs,
    _types: PhantomData<fn(Out) -> In>,
}

impl<In, Out> std::fmt::Debug for XferCodec<In, Out> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XferCodec")
            .field("max_frame_length", &self.max_frame_length)
            .field("slabs", &self.slabs.shadows.len())
            .finish()
    }
}

/// The client's codec: reads responses, writes requests.
pub type ClientCodec = XferCodec<Response, Request>;
/// The server's codec: reads requests, writes responses.
pub type ServerCodec = XferCodec<Request, Response>;

impl<In, Out> XferCodec<In, Out> {
    /// A codec accepting frame bodies up to `max_frame_length` bytes.
    pub fn new(max_frame_length: usize) -> Self {
        XferCodec {
            max_frame_length,
            slabs: Slabs::default(),
            _types: PhantomData,
        }
    }

    /// The largest frame body accepted.
    pub fn max_frame_length(&self) -> usize {
        self.max_frame_length
    }

    /// Changes the limit, e.g. raising it once the peer has authenticated.
    pub fn set_max_frame_length(&mut self, max: usize) {
        self.max_frame_length = max;
    }
}

impl<In, Out> Default for XferCodec<In, Out> {
    /// A codec with the pre-authentication limit.
    fn default() -> Self {
        Self::new(crate::MAX_PREAUTH_FRAME_LEN)
    }
}

impl<In: DeserializeOwned, Out> Decoder for XferCodec<In, Out> {
    type Item = Frame<In>;
    type Error = ProtoError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame<In>>, ProtoError> {
        if src.len() < LEN_PREFIX {
            return Ok(None);
        }
        let len = u32::from_be_bytes(src[..LEN_PREFIX].try_into().expect("4 bytes")) as usize;
        if len > self.max_frame_length {
            return Err(ProtoError::FrameTooLarge {
                len,
                max: self.max_frame_length,
            });
        }
        let total = LEN_PREFIX + len;
        if src.len() < total {
            if src.capacity() < total {
                if len >= SLAB_MIN_FRAME && total + SLAB_SLACK <= SLAB_LEN {
                    self.slabs.install(src, total);
                } else {
                    src.reserve(total - src.len());
                }
            }
            return Ok(None);
        }
        src.advance(LEN_PREFIX);
        let body = src.split_to(len).freeze();
        let frame = decode_body(body)?;
        // A large message is a whole file, part of a transfer like a chunk.
        if matches!(frame, Frame::Message(_)) && len < SLAB_MIN_FRAME {
            self.slabs.trim();
        }
        Ok(Some(frame))
    }
}

fn decode_body<M: DeserializeOwned>(mut body: Bytes) -> Result<Frame<M>, ProtoError> {
    if body.is_empty() {
        return Err(ProtoError::Malformed("empty frame".into()));
    }
    match body.get_u8() {
        KIND_HELLO => decode_hello(body).map(Frame::Hello),
        // A whole file's data in the message stays where it arrived (crate::payload).
        // Nothing may follow the message: postcard would ignore it, and a peer could pad
        // a frame with bytes that are never accounted for.
        KIND_MESSAGE => crate::payload::decoding(&body, || postcard::take_from_bytes(&body))
            .map_err(|e| ProtoError::Malformed(format!("undecodable message: {e}")))
            .and_then(|(message, rest)| match rest.len() {
                0 => Ok(Frame::Message(message)),
                n => Err(ProtoError::Malformed(format!(
                    "undecodable message: {n} bytes follow it in its frame"
                ))),
            }),
        kind @ (KIND_CHUNK | KIND_ZSTD_CHUNK) => {
            let header = CHUNK_HEADER + if kind == KIND_ZSTD_CHUNK { 4 } else { 0 };
            if body.len() < header {
                return Err(ProtoError::Malformed("truncated chunk header".into()));
            }
            let transfer_id = body.get_u64();
            let offset = body.get_u64();
            let mut digest = [0u8; 32];
            body.copy_to_slice(&mut digest);
            let encoding = if kind == KIND_ZSTD_CHUNK {
                let raw_len = body.get_u32();
                if raw_len as usize > crate::CHUNK_SIZE {
                    return Err(ProtoError::Malformed(format!(
                        "compressed chunk claims {raw_len} bytes, more than a chunk"
                    )));
                }
                ChunkEncoding::Zstd { raw_len }
            } else {
                ChunkEncoding::Raw
            };
            Ok(Frame::Chunk(Chunk {
                transfer_id,
                offset,
                digest: Digest(digest),
                data: body,
                encoding,
            }))
        }
        other => Err(ProtoError::Malformed(format!(
            "unknown frame kind {other:#04x}"
        ))),
    }
}

fn decode_hello(mut body: Bytes) -> Result<Hello, ProtoError> {
    if body.len() < HELLO_MAGIC.len() || &body[..HELLO_MAGIC.len()] != HELLO_MAGIC {
        return Err(ProtoError::BadMagic);
    }
    body.advance(HELLO_MAGIC.len());
    if body.len() < 2 {
        return Err(ProtoError::Malformed("truncated hello".into()));
    }
    let version = body.get_u16();
    if body.len() > MAX_SOFTWARE_LEN {
        return Err(ProtoError::Malformed("hello software name too long".into()));
    }
    let software = String::from_utf8_lossy(&body).into_owned();
    Ok(Hello { version, software })
}

/// Writes the length prefix for a body of `len` bytes, refusing what the peer would
/// refuse anyway: an error here is a bug on this side, not a peer problem.
fn put_len(dst: &mut BytesMut, len: usize, max: usize) -> Result<(), ProtoError> {
    if len > max {
        return Err(ProtoError::FrameTooLarge { len, max });
    }
    dst.reserve(LEN_PREFIX + len);
    dst.put_u32(len as u32);
    Ok(())
}

impl<In, Out: Serialize> Encoder<Frame<Out>> for XferCodec<In, Out> {
    type Error = ProtoError;

    fn encode(&mut self, frame: Frame<Out>, dst: &mut BytesMut) -> Result<(), ProtoError> {
        // Outgoing frames are bounded by the largest limit either side ever uses; the
        // receiver enforces its own (smaller, pre-auth) limit.
        let max = self.max_frame_length.max(crate::MAX_FRAME_LEN);
        match frame {
            Frame::Hello(hello) => {
                let software = truncate_utf8(&hello.software, MAX_SOFTWARE_LEN);
                put_len(dst, 1 + HELLO_MAGIC.len() + 2 + software.len(), max)?;
                dst.put_u8(KIND_HELLO);
                dst.put_slice(HELLO_MAGIC);
                dst.put_u16(hello.version);
                dst.put_slice(software.as_bytes());
            }
            Frame::Message(msg) => put_message(&msg, max, dst)?,
            Frame::Chunk(chunk) => {
                dst.reserve(LEN_PREFIX + 1 + CHUNK_HEADER + 4 + chunk.data.len());
                put_chunk_header(&chunk, max, dst)?;
                dst.put_slice(&chunk.data);
            }
        }
        Ok(())
    }
}

/// Writes the frame of `chunk` to `io` with its data straight from the chunk's own
/// buffer, header and data in one vectored write, instead of through a codec's frame
/// buffer, where every byte would be copied once more (0.05-0.1 CPU-second per GiB on
/// the sending side; bench/RESULTS.md). The bytes on the wire are those of
/// [`Frame::Chunk`]; frames queued in a codec before it must be flushed first. It does
/// not flush: a writer that buffers, as TLS does, may keep the frame's last bytes until
/// the next flush. Returns the bytes written.
///
/// # Errors
/// [`ProtoError::FrameTooLarge`] for a chunk past [`crate::MAX_FRAME_LEN`] (nothing is
/// written), [`ProtoError::Io`] if the write fails.
pub async fn write_chunk<W: AsyncWrite + Unpin>(
    io: &mut W,
    chunk: &Chunk,
) -> Result<usize, ProtoError> {
    let mut header = BytesMut::with_capacity(LEN_PREFIX + 1 + CHUNK_HEADER + 4);
    put_chunk_header(chunk, crate::MAX_FRAME_LEN, &mut header)?;
    let len = header.len() + chunk.data.len();
    io.write_all_buf(&mut header.chain(chunk.data.clone()))
        .await?;
    Ok(len)
}

/// Appends the frame of `msg` to `dst`, serialized in place (not into a buffer of its own
/// and copied). Nothing is appended if it fails.
fn put_message<M: Serialize>(msg: &M, max: usize, dst: &mut BytesMut) -> Result<(), ProtoError> {
    let start = dst.len();
    dst.put_u32(0);
    dst.put_u8(KIND_MESSAGE);
    let len = match postcard::serialize_with_flavor(msg, Append(dst)) {
        Ok(()) => dst.len() - start - LEN_PREFIX,
        Err(e) => {
            dst.truncate(start);
            return Err(ProtoError::Malformed(format!("unencodable message: {e}")));
        }
    };
    if len > max {
        dst.truncate(start);
        return Err(ProtoError::FrameTooLarge { len, max });
    }
    dst[start..start + LEN_PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// A postcard output that appends to a frame buffer.
struct Append<'a>(&'a mut BytesMut);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.put_u8(byte);
        Ok(())
    }

    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Writes the frame of `msg` to `io`, with a whole file's data ([`Payload`]) straight from
/// its own buffer after the rest of the frame, in one vectored write, as [`write_chunk`]
/// does for a chunk's: through a frame buffer every byte would be copied once more. The
/// bytes on the wire are those of [`Frame::Message`]; frames queued in a codec before it
/// must be flushed first. It does not flush. Returns the bytes written.
///
/// # Errors
/// [`ProtoError::FrameTooLarge`] for a frame past [`crate::MAX_FRAME_LEN`] (nothing is
/// written), [`ProtoError::Io`] if the write fails.
pub async fn write_message<M: Serialize + Payload, W: AsyncWrite + Unpin>(
    io: &mut W,
    mut msg: M,
) -> Result<usize, ProtoError> {
    let max = crate::MAX_FRAME_LEN;
    let data = msg.take_payload();
    let mut head = BytesMut::new();
    put_message(&msg, max, &mut head)?;
    let data = match data {
        Some(data) => {
            // The data is the message's last field: postcard wrote it, empty, as one
            // byte, its length 0. Its real length goes there, and its bytes after.
            if head.last() != Some(&0) {
                return Err(ProtoError::Malformed(
                    "a message's file data is not its last field".into(),
                ));
            }
            head.truncate(head.len() - 1);
            put_varint(&mut head, data.len());
            let len = head.len() - LEN_PREFIX + data.len();
            if len > max {
                return Err(ProtoError::FrameTooLarge { len, max });
            }
            head[..LEN_PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
            data
        }
        None => Bytes::new(),
    };
    let written = head.len() + data.len();
    io.write_all_buf(&mut head.chain(data)).await?;
    Ok(written)
}

/// Appends `n` as postcard writes a length: 7 bits a byte, least significant first, the
/// top bit set on every byte but the last.
fn put_varint(dst: &mut BytesMut, mut n: usize) {
    while n >= 0x80 {
        dst.put_u8(n as u8 | 0x80);
        n >>= 7;
    }
    dst.put_u8(n as u8);
}

fn put_chunk_header(chunk: &Chunk, max: usize, dst: &mut BytesMut) -> Result<(), ProtoError> {
    let (kind, extra) = match chunk.encoding {
        ChunkEncoding::Raw => (KIND_CHUNK, 0),
        ChunkEncoding::Zstd { .. } => (KIND_ZSTD_CHUNK, 4),
    };
    let len = 1 + CHUNK_HEADER + extra + chunk.data.len();
    if len > max {
        return Err(ProtoError::FrameTooLarge { len, max });
    }
    dst.put_u32(len as u32);
    dst.put_u8(kind);
    dst.put_u64(chunk.transfer_id);
    dst.put_u64(chunk.offset);
    dst.put_slice(chunk.digest.as_bytes());
    if let ChunkEncoding::Zstd { raw_len } = chunk.encoding {
        dst.put_u32(raw_len);
    }
    Ok(())
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Convenience for encoding a request, for callers that do not hold a codec.
impl From<Request> for Frame<Request> {
    fn from(r: Request) -> Self {
        Frame::Message(r)
    }
}

/// Convenience for encoding a response, for callers that do not hold a codec.
impl From<Response> for Frame<Response> {
    fn from(r: Response) -> Self {
        Frame::Message(r)
    }
}

#[cfg(test)]
mod tests;
