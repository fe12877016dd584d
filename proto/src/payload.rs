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
//! when it is at least [`SHARE_MIN`] bytes.
//!
//! A view keeps the whole receive buffer the frame was read into alive until the field
//! is dropped. Only a field that ends the frame and is all of it but a few KiB becomes a
//! view, so the frame held is the field it is accounted as; smaller fields, and fields
//! followed or preceded by more, are copied. Frames this large are read into the
//! codec's slabs (at most [`crate::PUT_WINDOW`] + 4 of about 1 MiB per connection, as a
//! chunk transfer holds) or into buffers sized for them: files of 64 KiB held in slabs
//! keep at most those slabs, about 21 MiB, on one connection.

use std::cell::RefCell;

use bytes::Bytes;
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::ser::Serializer;

/// Fields at least this long are views of their frame, and are written apart from the
/// rest of it; shorter ones are copied.
pub const SHARE_MIN: usize = 64 * 1024;

/// A message that may carry a whole file's data: the field marked
/// `#[serde(with = "crate::payload")]`, which must stay the last field of its variant
/// (postcard writes it last, as its length and then its bytes, and
/// [`crate::codec::write_message`] writes those apart from the rest).
pub trait Payload {
    /// The file's data this message carries, if any.
    fn payload(&self) -> Option<&Bytes>;

    /// Takes the file's data out, leaving the field empty.
    fn take_payload(&mut self) -> Option<Bytes>;

    /// Whether the message carries at least [`SHARE_MIN`] bytes of a file, worth
    /// writing apart from the rest of its frame.
    fn has_large_payload(&self) -> bool {
        self.payload().is_some_and(|p| p.len() >= SHARE_MIN)
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
    /// Forgets the frame however `decode` ends.
    struct Forget;
    impl Drop for Forget {
        fn drop(&mut self) {
            FRAME.with_borrow_mut(|f| *f = None);
        }
    }
    FRAME.with_borrow_mut(|f| *f = Some(frame.clone()));
    let _forget = Forget;
    decode()
}

/// Bytes of a frame besides a field that may be a view of it: the rest of the message
/// before the field (a path, a digest, a few numbers).
const SHARE_SLACK: usize = 16 * 1024;

/// `bytes` as a view of the frame being decoded, when it is large and is most of the
/// frame, up to its end (where [`crate::codec::write_message`] puts it); otherwise a
/// copy. A view keeps the whole frame alive, so a peer that padded a small field with
/// bytes nobody reads (postcard ignores what follows a message) would make this side
/// hold far more than the field it accounts for.
fn share(bytes: &[u8]) -> Bytes {
    if bytes.len() >= SHARE_MIN {
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
    Bytes::copy_from_slice(bytes)
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
