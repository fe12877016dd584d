//! A lingering close for HTTP connections, as nginx's `lingering_close`.
//!
//! A handler may refuse a request before reading its body (a run longer than declared, a
//! chunk past the end, a digest that does not match halfway through a run). hyper then
//! answers and closes the connection; closing a socket that still has unread data makes
//! the kernel send a reset, which can reach the client before it has read the answer, so
//! the client sees a broken connection instead of the 413 or 422 that says what to fix
//! (h2 refuses one stream and keeps the connection; HTTP/1.1 cannot). [`Linger`] wraps
//! the stream of an HTTP/1.1 connection: its shutdown sends the close, then reads and
//! drops what the client still sends, until the client closes, [`LINGER_BYTES`] or
//! [`LINGER_TIME`]. A kick or the daemon's shutdown skips it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;

/// Most bytes read and dropped after the close: a whole run of chunks and then some.
pub const LINGER_BYTES: u64 = 20 * 1024 * 1024;
/// Longest wait for the client to close after the server has.
pub const LINGER_TIME: Duration = Duration::from_secs(5);

/// A stream whose shutdown lingers (module docs).
pub struct Linger<T> {
    io: T,
    /// Off for h2 (which refuses a stream, not the connection).
    enabled: bool,
    /// The connection's kick and shutdown: no lingering once cancelled.
    stop: CancellationToken,
    /// Set once the close was sent: draining until it fires.
    deadline: Option<Pin<Box<Sleep>>>,
    drained: u64,
}

impl<T> Linger<T> {
    pub fn new(io: T, enabled: bool, stop: CancellationToken) -> Linger<T> {
        Linger {
            io,
            enabled,
            stop,
            deadline: None,
            drained: 0,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Linger<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Linger<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.deadline.is_none() {
            ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
            if !this.enabled || this.stop.is_cancelled() {
                return Poll::Ready(Ok(()));
            }
            this.deadline = Some(Box::pin(tokio::time::sleep(LINGER_TIME)));
        }
        let mut scratch = [0u8; 16 * 1024];
        loop {
            if let Some(deadline) = &mut this.deadline
                && deadline.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.io).poll_read(cx, &mut buf) {
                Poll::Pending => return Poll::Pending,
                // The client closed, or the connection broke: nothing left to protect.
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    this.drained += buf.filled().len() as u64;
                    if this.drained > LINGER_BYTES {
                        return Poll::Ready(Ok(()));
                    }
                }
            }
        }
    }
}
