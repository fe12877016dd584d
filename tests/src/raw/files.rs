//! File transfers over a [`RawConn`], chunk by chunk as the protocol has them: begin,
//! chunks with at most `PUT_WINDOW` unacknowledged, commit; and a pull that checks every
//! chunk's digest and the whole file's.

use bytes::Bytes;
use futures_util::SinkExt;
use xfer_proto::{CHUNK_SIZE, Chunk, ChunkLayout, Digest, Frame, PUT_WINDOW, Request, Response};

use tokio::io::{AsyncRead, AsyncWrite};

use super::RawConn;

/// How many chunks `data` has.
pub fn chunk_count(data: &[u8]) -> u64 {
    ChunkLayout::standard(data.len() as u64).count()
}

/// The first bytes of `data`, as a begin request carries them for the type policy.
fn head(data: &[u8]) -> Bytes {
    Bytes::copy_from_slice(&data[..data.len().min(512)])
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawConn<S> {
    /// `PutBegin` of `data` to `path`; whatever the server answers.
    pub async fn put_begin(&mut self, path: &str, data: &[u8], force: bool) -> Response {
        self.call(Request::PutBegin {
            path: path.into(),
            size: data.len() as u64,
            force,
            head: head(data),
        })
        .await
    }

    /// `SendBegin` of `data` as `name` into `to`'s inbox; whatever the server answers.
    pub async fn send_begin(&mut self, to: &str, name: &str, data: &[u8]) -> Response {
        self.call(Request::SendBegin {
            to: to.into(),
            name: name.into(),
            size: data.len() as u64,
            force: false,
            head: head(data),
        })
        .await
    }

    /// Sends chunk `indices` of `data` with up to `PUT_WINDOW` unacknowledged, asserting
    /// each acknowledgement.
    pub async fn send_chunks(
        &mut self,
        id: u64,
        data: &[u8],
        indices: impl IntoIterator<Item = u64>,
    ) {
        let mut in_flight = 0;
        for i in indices {
            if in_flight == PUT_WINDOW {
                self.expect_ack(id).await;
                in_flight -= 1;
            }
            let start = i as usize * CHUNK_SIZE;
            let end = (start + CHUNK_SIZE).min(data.len());
            let chunk = Bytes::copy_from_slice(&data[start..end]);
            let digest = Digest::of_chunk(&chunk, start as u64, data.len() as u64)
                .expect("a chunk of the file");
            self.framed
                .feed(Frame::Chunk(Chunk::raw(id, start as u64, digest, chunk)))
                .await
                .expect("send chunk");
            in_flight += 1;
        }
        self.framed.flush().await.expect("flush");
        for _ in 0..in_flight {
            self.expect_ack(id).await;
        }
    }

    /// Reads one answer and asserts it acknowledges a chunk of transfer `id`.
    pub async fn expect_ack(&mut self, id: u64) {
        match self.response().await {
            Response::ChunkAck { transfer_id, .. } => assert_eq!(transfer_id, id),
            other => panic!("expected an ack, got {other:?}"),
        }
    }

    /// Uploads `data` to `path` from scratch and asserts the commit; the transfer id.
    pub async fn push(&mut self, path: &str, data: &[u8]) -> u64 {
        let Response::PutReady {
            transfer_id,
            chunks_held,
            ..
        } = self.put_begin(path, data, false).await
        else {
            panic!("put refused");
        };
        assert_eq!(chunks_held, 0);
        self.send_chunks(transfer_id, data, 0..chunk_count(data))
            .await;
        let r = self
            .call(Request::PutCommit {
                transfer_id,
                digest: Digest::of(data),
            })
            .await;
        assert_eq!(
            r,
            Response::Committed {
                size: data.len() as u64,
                digest: Digest::of(data)
            }
        );
        transfer_id
    }

    /// Downloads `path`, asserting the manifest, every chunk's offset and digest, and the
    /// whole file's digest; the bytes.
    pub async fn pull(&mut self, path: &str) -> Vec<u8> {
        let Response::GetReady {
            transfer_id,
            size,
            digest,
            ..
        } = self.call(Request::GetBegin { path: path.into() }).await
        else {
            panic!("get refused");
        };
        let n = ChunkLayout::standard(size).count();
        let Response::Manifest { digests, .. } = self
            .call(Request::Manifest {
                transfer_id,
                first: 0,
                count: n as u32,
            })
            .await
        else {
            panic!("no manifest");
        };
        assert_eq!(digests.len() as u64, n);
        let mut out = Vec::with_capacity(size as usize);
        if n > 0 {
            let req = Request::GetChunks {
                transfer_id,
                first: 0,
                count: n,
                compress: false,
            };
            self.framed.send(Frame::Message(req)).await.expect("send");
            for i in 0..n {
                match self.frame().await {
                    Frame::Chunk(c) => {
                        assert_eq!(c.offset, i * CHUNK_SIZE as u64);
                        assert_eq!(Some(c.digest), digests[i as usize]);
                        assert_eq!(Digest::of_chunk(&c.data, c.offset, size), Some(c.digest));
                        out.extend_from_slice(&c.data);
                    }
                    other => panic!("expected a chunk, got {other:?}"),
                }
            }
        }
        assert_eq!(Digest::of(&out), digest);
        assert_eq!(
            self.call(Request::Close { transfer_id }).await,
            Response::Ok
        );
        out
    }
}
