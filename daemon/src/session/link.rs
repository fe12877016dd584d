//! The session's side of a connection, whatever carries it.
//!
//! [`Transport`] is all the request loop asks of a connection: a stream of request
//! frames, a sink for response frames, and a knob for the largest frame accepted (small
//! before login). Any `AsyncRead + AsyncWrite` framed with [`MeteredCodec`] is one (TLS
//! over TCP in production, `tokio::io::duplex` in tests); a transport that carries
//! frames differently (a browser's) implements the trait itself. [`Link`] adds the idle
//! timeout every write obeys, so handlers get one frame sink with one failure rule.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::codec::Framed;
use tracing::debug;
use xfer_proto::codec::{write_chunk, write_message};
use xfer_proto::{
    Chunk, ErrorCode, Frame, Hello, PROTOCOL_VERSION, Payload as _, ProtoError, Request, Response,
    ServerCodec,
};

use super::reply::End;
use crate::metrics::{MeteredCodec, Metrics};

/// A connection carrying xfer frames, after any handshake of its own (TLS, upgrade).
pub trait Transport:
    Stream<Item = Result<Frame<Request>, ProtoError>>
    + Sink<Frame<Response>, Error = ProtoError>
    + Unpin
    + Send
{
    /// Changes the largest frame accepted from the peer (raised at login, lowered at
    /// logout).
    fn set_max_frame_length(&mut self, max: usize);

    /// Sends a chunk frame (a download's data), flushed.
    fn send_chunk(&mut self, chunk: Chunk) -> impl Future<Output = Result<(), ProtoError>> + Send {
        self.send(Frame::Chunk(chunk))
    }

    /// Queues a response behind the frames before it, for the next flush.
    fn feed_response(
        &mut self,
        response: Response,
    ) -> impl Future<Output = Result<(), ProtoError>> + Send {
        self.feed(Frame::Message(response))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for Framed<T, MeteredCodec> {
    fn set_max_frame_length(&mut self, max: usize) {
        self.codec_mut().set_max_frame_length(max);
    }

    /// Behind the frames queued before it, from the chunk's own buffer
    /// ([`write_chunk`]: through the frame buffer every byte would be copied once more),
    /// then flushed: TLS keeps what the socket did not take, and the last chunk of a
    /// `GetChunks` run is followed by no other write that would push it out.
    async fn send_chunk(&mut self, chunk: Chunk) -> Result<(), ProtoError> {
        SinkExt::<Frame<Response>>::flush(self).await?;
        let io = self.get_mut();
        let sent = write_chunk(io, &chunk).await?;
        io.flush().await?;
        self.codec().count_chunk(&chunk);
        self.codec().count_wire(sent);
        Ok(())
    }

    /// A whole file's answer (`Response::File`) of at least
    /// [`xfer_proto::payload::APART_MIN`] bytes is written at once behind the frames
    /// queued before it, its data from its own buffer ([`write_message`]), as a chunk's
    /// is; the caller's flush sends what TLS keeps of it.
    async fn feed_response(&mut self, response: Response) -> Result<(), ProtoError> {
        if !response.has_large_payload() {
            return self.feed(Frame::Message(response)).await;
        }
        SinkExt::<Frame<Response>>::flush(self).await?;
        let sent = write_message(self.get_mut(), response).await?;
        self.codec().count_wire(sent);
        Ok(())
    }
}

/// Frames `io` with the server's codec, counting into `metrics`, with the pre-auth limit.
pub fn framed<T: AsyncRead + AsyncWrite>(io: T, metrics: Arc<Metrics>) -> Framed<T, MeteredCodec> {
    Framed::new(io, MeteredCodec::new(ServerCodec::default(), metrics))
}

/// Why a connection did not get past the hello.
pub(super) enum Refused {
    /// The deadline passed.
    Timeout(&'static str),
    /// The peer did something else.
    Failed(String),
}

/// A transport plus the idle timeout its writes obey.
/// How long a closing connection waits for the peer to close its side.
const LINGER: Duration = Duration::from_secs(2);

pub(super) struct Link<T> {
    io: T,
    /// How long a write may wait for the peer to read (`limits.idle_timeout_secs`).
    idle: Duration,
}

impl<T: Transport> Link<T> {
    pub fn new(io: T, idle: Duration) -> Link<T> {
        Link { io, idle }
    }

    /// Takes a reloaded `limits.idle_timeout_secs`.
    pub fn set_idle(&mut self, idle: Duration) {
        self.idle = idle;
    }

    pub fn idle(&self) -> Duration {
        self.idle
    }

    /// The hello exchange, within `deadline`. The server always answers a well-formed
    /// hello with its own, so a client of another version can say which.
    pub async fn hello(&mut self, deadline: Instant) -> Result<(), Refused> {
        let hello = match timeout_at(deadline, self.io.next()).await {
            Err(_) => return Err(Refused::Timeout("no hello before the handshake deadline")),
            Ok(None) => return Err(Refused::Failed("closed before hello".into())),
            Ok(Some(Ok(Frame::Hello(h)))) => h,
            Ok(Some(Ok(_))) => {
                self.reply_error(ErrorCode::BadRequest, "expected a hello frame first")
                    .await;
                return Err(Refused::Failed("first frame was not a hello".into()));
            }
            Ok(Some(Err(e))) => {
                self.reply_error(
                    ErrorCode::BadRequest,
                    &format!("expected an xfer hello: {e}"),
                )
                .await;
                return Err(Refused::Failed(format!("bad hello: {e}")));
            }
        };
        let ours = Frame::Hello(Hello::current(crate::SOFTWARE));
        if timeout_at(deadline, self.io.send(ours))
            .await
            .map_or(true, |r| r.is_err())
        {
            return Err(Refused::Failed("could not send hello".into()));
        }
        if hello.version != PROTOCOL_VERSION {
            return Err(Refused::Failed(format!(
                "client {:?} speaks protocol v{}, this server v{PROTOCOL_VERSION}",
                hello.software, hello.version
            )));
        }
        debug!(client = ?hello.software, "hello");
        Ok(())
    }

    /// The next frame from the peer; `None` when it closed.
    ///
    /// # Cancel safety
    /// Cancel-safe: a partly read frame stays in the transport's buffer.
    pub async fn next(&mut self) -> Option<Result<Frame<Request>, ProtoError>> {
        self.io.next().await
    }

    /// Sends one response; a peer that does not read within the idle time is gone.
    pub async fn send(&mut self, response: Response) -> Result<(), End> {
        match timeout(self.idle, self.io.send(Frame::Message(response))).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(End::PeerClosed),
        }
    }

    /// Sends one chunk frame under the idle timeout ([`Transport::send_chunk`]).
    pub async fn send_chunk(&mut self, chunk: Chunk) -> Result<(), End> {
        match timeout(self.idle, self.io.send_chunk(chunk)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(End::PeerClosed),
        }
    }

    /// Sends `responses` in order with one flush, under the idle timeout.
    pub async fn send_answers(&mut self, responses: Vec<Response>) -> Result<(), End> {
        let frames = responses.into_iter().map(Frame::Message);
        match timeout(self.idle, self.send_all(frames)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(End::PeerClosed),
        }
    }

    /// Writes `frames` and flushes once, without a timeout: the caller bounds it.
    pub async fn send_all(
        &mut self,
        frames: impl IntoIterator<Item = Frame<Response>>,
    ) -> Result<(), ProtoError> {
        for frame in frames {
            match frame {
                Frame::Message(response) => self.io.feed_response(response).await?,
                frame => self.io.feed(frame).await?,
            }
        }
        self.io.flush().await
    }

    /// Ends the connection gracefully: closes the write half (the transport's close, for
    /// TLS a close_notify and a FIN), then reads and discards what the peer still sends
    /// until it closes too, for at most [`LINGER`]. Dropping a socket with unread input
    /// resets the connection, and a reset can discard the last answer (why it is being
    /// closed) before the peer reads it; a peer that is still writing (a flood) is the
    /// one that would never see it.
    pub async fn close(mut self) {
        let _ = timeout(LINGER, async {
            if self.io.close().await.is_err() {
                return;
            }
            while let Some(Ok(_)) = self.io.next().await {}
        })
        .await;
    }

    /// Best effort: tells the peer why it is being dropped. Failure to send is ignored,
    /// because the connection is being closed anyway.
    pub async fn reply_error(&mut self, code: ErrorCode, message: &str) {
        let reply = Frame::Message(Response::error(code, message));
        let _ = timeout(Duration::from_secs(2), self.io.send(reply)).await;
    }

    pub fn set_max_frame_length(&mut self, max: usize) {
        self.io.set_max_frame_length(max);
    }
}
