//! A message's large byte field, a whole file's data ([`crate::Request::PutFile`] and
//! [`crate::Response::File`]), travels without a copy on either side, as a chunk's data
//! does (`crate::codec`): the sender writes it from its own buffer after the rest of the
//! frame ([`crate::codec::write_message`], [`Payload`]), and the receiver's field is a
//! view of the frame it arrived in.
//!
//! A plain `Bytes` field is copied out of the frame into memory of its own. For a file of
//! 1 MiB that is a fresh allocation the kernel faults in page by page, a copy, and later
//! an unmap: a quarter of xferd's CPU when 200 files of 1 MiB were pushed
//! (bench/RESULTS.md). The codec names the frame being decoded (`decoding`) and a
//! field marked `#[serde(with = "crate::payload")]` takes a view of it instead of a copy
//! when it is large (below).
//!
//! A view keeps the whole receive buffer the frame was read into alive until the field
//! is dropped: a slab of about a chunk (`crate::codec`), whatever else was in it. So
//! only a field of at least [`VIEW_MIN`] bytes, half a chunk, that ends the frame and is
//! all of it but a few KiB becomes a view; smaller fields, and fields followed or
//! preceded by more, are copied. Memory held by views is then at most about twice the
//! data they are accounted as, however a peer lays its frames out. (A review found that
//! views of files from 64 KiB could each pin a slab of their own: a peer alternating
//! such files with a frame that needs a fresh slab (a chunk, or a frame padded past its
//! message) and a small message, after which the codec stops tracking the slabs in use,
//! made a connection hold 91 MiB for 5.3 MiB of files.)
//! Files between [`APART_MIN`] and [`VIEW_MIN`] are still written apart by the sender.

use std::cell::RefCell;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::ser::Serializer;

/// Fields at least this long are written apart from the rest of their frame, from their
/// own buffer.
pub const APART_MIN: usize = 64 * 1024;

/// Fields at least this long are kept as views of the frame they arrived in; shorter ones
/// are copied. Half a chunk: a view keeps its whole receive buffer (about a chunk) alive.
pub const VIEW_MIN: usize = crate::CHUNK_SIZE / 2;

/// A message that may carry a whole file's data: the field marked
/// `#[serde(with = "crate::payload")]`, which must stay the last field of its variant
/// (postcard writes it last, as its length and then its bytes, and
/// [`crate::codec::write_message`] writes those apart from the rest).
pub trait Payload {
    /// The file's data this message carries, if any.
    fn payload(&self) -> Option<&Bytes>;

    /// Takes the file's data out, leaving the field empty.
    fn take_payload(&mut self) -> Option<Bytes>;

    /// Whether the message carries at least [`APART_MIN`] bytes of a file, worth
    /// writing apart from the rest of its frame.
    fn has_large_payload(&self) -> bool {
        self.payload().is_some_and(|p| p.len() >= APART_MIN)
    }
}

impl Payload for crate::Request {
    fn payload(&self) -> Option<&Bytes> {
        match self {
            crate::Request::PutFile { data, .. } => Some(data),
            _ => None,
        }
    }

    fn take_payload(&mut self) -> Option<Bytes> {
        match self {
            crate::Request::PutFile { data, .. } => Some(std::mem::take(data)),
            _ => None,
        }
    }
}

impl Payload for crate::Response {
    fn payload(&self) -> Option<&Bytes> {
        match self {
            crate::Response::File { data, .. } => Some(data),
            _ => None,
        }
    }

    fn take_payload(&mut self) -> Option<Bytes> {
        match self {
            crate::Response::File { data, .. } => Some(std::mem::take(data)),
            _ => None,
        }
    }
}

thread_local! {
    /// The body of the frame being decoded on this thread, if any.
    static FRAME: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// Runs `decode` with `frame` as the frame large fields may be views of.
pub(crate) fn decoding<T>(frame: &Bytes, decode: impl FnOnce() -> T) -> T {
    /// Puts back the frame named before (none, unless decodes nest) however `decode`
    /// ends.
    struct Restore(Option<Bytes>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let before = self.0.take();
            FRAME.with_borrow_mut(|f| *f = before);
        }
    }
    let _restore = Restore(FRAME.with_borrow_mut(|f| f.replace(frame.clone())));
    decode()
}

/// Bytes of a frame besides a field that may be a view of it: the rest of the message
/// before the field (a path, a digest, a few numbers).
const SHARE_SLACK: usize = 16 * 1024;

/// `bytes` as a view of the frame being decoded, when it is at least [`VIEW_MIN`] and is
/// most of the frame, up to its end (where [`crate::codec::write_message`] puts it);
/// otherwise a copy. A view keeps the whole frame alive, so a peer that padded a small
/// field with bytes nobody reads would make this side hold far more than the field it
/// accounts for (the codec also refuses bytes after a message).
fn share(bytes: &[u8]) -> Bytes {
    if bytes.len() >= VIEW_MIN {
        let view = FRAME.with_borrow(|frame| {
            let frame = frame.as_ref()?;
            let (start, at) = (frame.as_ptr() as usize, bytes.as_ptr() as usize);
            let end = start + frame.len();
            let whole = at >= start && at + bytes.len() == end;
            (whole && frame.len() - bytes.len() <= SHARE_SLACK).then(|| frame.slice_ref(bytes))
        });
        if let Some(view) = view {
            return view;
        }
    }
    copy(bytes)
}

/// Copies of fields from [`APART_MIN`] up to [`VIEW_MIN`] go into buffers recycled by
/// size, in steps of this many bytes: a buffer has room for the largest field of its
/// step, so it holds at most twice its field.
const COPY_STEP: usize = 64 * 1024;

/// Steps of [`COPY_STEP`] below [`VIEW_MIN`].
const STEPS: usize = VIEW_MIN / COPY_STEP;

/// Bytes of spare copy buffers kept in each process, all steps together: a batch's worth
/// of files in flight (a pull's window, the daemon's batch).
const COPY_SPARES: usize = 16 << 20;

/// Spare copy buffers, by step, within a number of bytes in all.
struct Spares {
    steps: [Vec<Vec<u8>>; STEPS],
    bytes: usize,
    max: usize,
}

impl Spares {
    const fn new(max: usize) -> Spares {
        Spares {
            steps: [const { Vec::new() }; STEPS],
            bytes: 0,
            max,
        }
    }

    fn take(&mut self, step: usize) -> Option<Vec<u8>> {
        let buf = self.steps[step].pop()?;
        self.bytes -= buf.capacity();
        Some(buf)
    }

    fn give(&mut self, step: usize, mut buf: Vec<u8>) {
        if self.bytes + buf.capacity() <= self.max {
            buf.clear();
            self.bytes += buf.capacity();
            self.steps[step].push(buf);
        }
    }
}

/// The process's spare copy buffers.
static SPARES: Mutex<Spares> = Mutex::new(Spares::new(COPY_SPARES));

fn lock(spares: &Mutex<Spares>) -> MutexGuard<'_, Spares> {
    // Plain buffers are consistent whatever a panicking holder did.
    spares.lock().unwrap_or_else(|p| p.into_inner())
}

/// `bytes` in memory of its own. A field from [`APART_MIN`] up to [`VIEW_MIN`] goes into
/// a recycled buffer: a fresh one per file is an allocation the kernel faults in page
/// by page (xferd maps anything from 128 KiB apart), a fifth of the receiver's CPU for
/// files of 256 KiB (bench/RESULTS.md).
fn copy(bytes: &[u8]) -> Bytes {
    copy_with(&SPARES, bytes)
}

fn copy_with(spares: &'static Mutex<Spares>, bytes: &[u8]) -> Bytes {
    if !(APART_MIN..VIEW_MIN).contains(&bytes.len()) {
        return Bytes::copy_from_slice(bytes);
    }
    let step = bytes.len() / COPY_STEP;
    let spare = lock(spares).take(step);
    let mut buf = spare.unwrap_or_else(|| Vec::with_capacity((step + 1) * COPY_STEP));
    buf.extend_from_slice(bytes);
    Bytes::from_owner(Copied { buf, step, spares })
}

/// A copy's buffer, given back to its spares when its last `Bytes` is dropped.
struct Copied {
    buf: Vec<u8>,
    step: usize,
    spares: &'static Mutex<Spares>,
}

impl AsRef<[u8]> for Copied {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Copied {
    fn drop(&mut self) {
        lock(self.spares).give(self.step, std::mem::take(&mut self.buf));
    }
}

/// Serializes as `Bytes` does.
pub(crate) fn serialize<S: Serializer>(bytes: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(bytes)
}

/// Deserializes as `Bytes` does, as a view of the frame where `share` allows it.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
    d.deserialize_bytes(Shared)
}

struct Shared;

impl<'de> Visitor<'de> for Shared {
    type Value = Bytes;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("bytes")
    }

    fn visit_borrowed_bytes<E>(self, v: &'de [u8]) -> Result<Bytes, E> {
        Ok(share(v))
    }

    fn visit_bytes<E>(self, v: &[u8]) -> Result<Bytes, E> {
        Ok(Bytes::copy_from_slice(v))
    }

    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Bytes, E> {
        Ok(Bytes::from(v))
    }

    /// Formats without a bytes type (JSON) write a sequence.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(b) = seq.next_element()? {
            v.push(b);
        }
        Ok(Bytes::from(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nested_decode_gives_the_outer_one_its_frame_back() {
        let (outer, inner) = (Bytes::from_static(b"outer"), Bytes::from_static(b"inner"));
        let named = || FRAME.with_borrow(Clone::clone);
        decoding(&outer, || {
            decoding(&inner, || assert_eq!(named(), Some(inner.clone())));
            assert_eq!(named(), Some(outer.clone()));
        });
        assert_eq!(named(), None);
    }

    #[test]
    fn spare_copies_are_reused_and_stay_within_their_bytes() {
        static SPARES: Mutex<Spares> = Mutex::new(Spares::new(4 << 20));
        let data = vec![7u8; 300 * 1024];
        let copies: Vec<Bytes> = (0..100).map(|_| copy_with(&SPARES, &data)).collect();
        assert!(copies.iter().all(|c| c[..] == data[..]));
        drop(copies);
        let kept: Vec<usize> = {
            let spares = lock(&SPARES);
            // 4 MiB of buffers of 320 KiB, each with room for its step's largest field.
            assert_eq!(spares.steps[4].len(), 12);
            assert!(spares.steps[4].iter().all(|b| b.capacity() == 320 * 1024));
            assert_eq!(spares.bytes, 12 * 320 * 1024);
            spares.steps[4]
                .iter()
                .map(|b| b.as_ptr() as usize)
                .collect()
        };
        let again = copy_with(&SPARES, &data[1..]);
        assert_eq!(again[..], data[1..]);
        assert!(
            kept.contains(&(again.as_ptr() as usize)),
            "a spare is reused"
        );
        assert_eq!(lock(&SPARES).bytes, 11 * 320 * 1024);
        // Outside the steps: plain copies, no spares.
        let small = copy_with(&SPARES, &data[..APART_MIN - 1]);
        assert_eq!(small[..], data[..APART_MIN - 1]);
        drop((again, small));
        assert_eq!(lock(&SPARES).bytes, 12 * 320 * 1024);
    }
}
