//! One connection after its transport's handshake: the hello under a deadline, then the
//! request loop, over any [`Transport`].
//!
//! A connection starts unauthenticated, with the small pre-auth frame limit and a
//! login deadline counted from accept, which covers the handshake too and which no
//! request extends; `Login` or `Authenticate` lifts both, and takes one of the
//! `max_connections` slots in place of the connection's unauthenticated place. Every
//! failure a peer can cause ends in an error reply (when the peer still speaks xfer) and
//! a closed connection, never in a panic or an effect on other sessions.
//!
//! Every request is routed in one place, `Session::route`, one `match` naming every
//! variant, to the handler that owns its state: `Auth` (`auth.rs`), `Files`
//! (`files/`, `send.rs`: transfers and the chunk pipeline; `batch.rs`: whole small
//! files), `ChatState` (`chat.rs`:
//! chat requests and pushed events). Handlers that write frames themselves get the
//! `Link` (`link.rs`).

mod auth;
mod batch;
pub(crate) mod chat;
mod files;
mod link;
mod reply;
mod send;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep_until, timeout_at};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use xfer_proto::{ErrorCode, Frame, ProtoError, Request, Response};

use crate::admission::PreAuthGuard;
use crate::chat::ChatError;
use crate::connections::Registration;
use crate::state::ServerState;
use auth::Auth;
use chat::ChatState;
use files::Files;
use link::{Link, Refused};
pub use link::{Transport, framed};
use reply::{End, not_logged_in};

/// A connection as the accept path hands it over, its transport's own handshake done.
pub struct Accepted {
    /// The peer's address, for the throttle and the audit log.
    pub peer: SocketAddr,
    /// This connection in the admin's registry; its stop token ends the session.
    pub registration: Registration,
    /// The connection's unauthenticated place, given up at login.
    pub preauth: PreAuthGuard,
    /// The hello must have arrived by then.
    pub hello_deadline: Instant,
    /// From accept: handshake, hello and login must be done by then.
    pub login_deadline: Instant,
}

/// Serves one connection to its end. Never panics on peer input.
pub async fn run<T: Transport>(state: Arc<ServerState>, io: T, accepted: Accepted) {
    let Accepted {
        peer,
        registration,
        preauth,
        hello_deadline,
        login_deadline,
    } = accepted;
    // A kick or the shutdown: the session ends the same way on either.
    let stop = registration.stop_token();
    let idle = Duration::from_secs(state.config().limits.idle_timeout_secs);
    let mut link = Link::new(io, idle);
    // A shutdown (or kick) does not wait for a hello: an idle peer must not hold the
    // drain for the whole grace period.
    let hello = tokio::select! {
        r = link.hello(hello_deadline) => r,
        () = stop.cancelled() => {
            debug!("stopped during the handshake");
            return;
        }
    };
    match hello {
        Ok(()) => {}
        Err(Refused::Timeout(reason)) => {
            state.admission.login_deadline_reached(peer, reason);
            return;
        }
        Err(Refused::Failed(reason)) => {
            state.admission.handshake_failed(peer, &reason);
            link.close().await;
            return;
        }
    }
    let mut session = Session {
        files: Files::new(state.clone()),
        chat: ChatState::new(state.clone()),
        auth: Auth::new(state.clone(), peer, preauth),
        registration,
        state,
        link,
        login_deadline,
        stashed: None,
    };
    let end = session.serve(&stop).await;
    session.files.close_transfers().await;
    // Leaves channels and, with the user's last connection, goes offline.
    session.chat.close();
    let linger = !matches!(end, End::PeerClosed | End::Protocol(ProtoError::Io(_)));
    match end {
        End::PeerClosed => debug!("connection closed by peer"),
        End::Protocol(ProtoError::Io(e)) => debug!(error = %e, "connection lost"),
        End::LoginDeadline => {
            debug!("not logged in within limits.login_timeout_secs");
            session
                .state
                .admission
                .login_deadline_reached(peer, "not logged in in time");
        }
        end => info!(?end, "connection closed"),
    }
    // The connection's places (admission, registry) are given back before the peer is
    // waited for: a closing connection must not hold what a new one needs.
    let Session {
        link,
        auth,
        registration,
        ..
    } = session;
    drop((auth, registration));
    if linger {
        link.close().await;
    }
}

struct Session<T> {
    state: Arc<ServerState>,
    link: Link<T>,
    /// From accept: handshake, hello and login must be done by then.
    login_deadline: Instant,
    /// Who is logged in, attempts, the connection's admission places.
    auth: Auth,
    /// Open transfers and chunk frames being verified and written.
    files: Files,
    /// Chat: rate limit, and once `ChatOpen` was accepted, this connection on the bus.
    chat: ChatState,
    /// This connection in the admin's registry (`xferd status`, `xferd kick`).
    registration: Registration,
    /// A frame read ahead while gathering `PutFile`s or `GetFile`s (`batch.rs`), handled
    /// before the next read.
    stashed: Option<Option<Result<Frame<Request>, ProtoError>>>,
}

/// What woke the request loop.
enum Event {
    Frame(Result<Option<Result<Frame<Request>, ProtoError>>, tokio::time::error::Elapsed>),
    ChunkDone(files::ChunkOutcome),
    Chat(chat::Incoming),
    /// The bandwidth pause is over: frames may be read again.
    Resume,
}

/// Why a request got no response of its own from [`Session::route`]: it was refused
/// (the reply says why) or the connection ends.
enum Halt {
    Reply(Response),
    End(End),
}

impl From<Response> for Halt {
    fn from(response: Response) -> Halt {
        Halt::Reply(response)
    }
}

impl From<End> for Halt {
    fn from(end: End) -> Halt {
        Halt::End(end)
    }
}

impl From<ChatError> for Halt {
    fn from(e: ChatError) -> Halt {
        Halt::Reply(chat::chat_error(&e))
    }
}

impl<T: Transport> Session<T> {
    async fn serve(&mut self, shutdown: &CancellationToken) -> End {
        match self.serve_until_end(shutdown).await {
            End::Stopped => self.stopped().await,
            end => end,
        }
    }

    async fn serve_until_end(&mut self, shutdown: &CancellationToken) -> End {
        loop {
            let idle = Duration::from_secs(self.state.config().limits.idle_timeout_secs);
            self.link.set_idle(idle);
            // Checked here too because a peer that keeps frames coming never lets the
            // read below time out: requests before login do not extend the deadline.
            let logged_in = self.auth.user().is_some();
            if !logged_in && Instant::now() >= self.login_deadline {
                self.link
                    .reply_error(ErrorCode::Timeout, "not logged in for too long; closing")
                    .await;
                return End::LoginDeadline;
            }
            let deadline = match logged_in {
                true => Instant::now() + idle,
                false => self.login_deadline,
            };
            // Every branch is cancel-safe: the transport keeps partial frames in its
            // buffer, and a chunk job is polled through `&mut JoinHandle`, never dropped.
            // Frames are not read while enough chunks wait: that is the backpressure.
            // Chat events come last, so a busy room cannot starve this client's requests.
            let can_read = self.files.can_queue();
            let chat_open = self.chat.is_open();
            let paused = self.files.paused_until();
            let event = if let Some(read) = self.stashed.take() {
                Event::Frame(Ok(read))
            } else {
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return End::Stopped,
                    done = self.files.next_done() => Event::ChunkDone(done),
                    () = sleep_until(paused.unwrap_or_else(Instant::now)), if paused.is_some() => Event::Resume,
                    r = timeout_at(deadline, self.link.next()), if can_read => Event::Frame(r),
                    incoming = self.chat.next(), if chat_open => Event::Chat(incoming),
                }
            };
            let handled = match event {
                Event::Resume => {
                    self.files.resume();
                    Ok(())
                }
                Event::ChunkDone(done) => self.files.chunk_done(done, &mut self.link).await,
                Event::Chat(incoming) => {
                    let me = self.auth.user();
                    self.chat
                        .deliver(incoming, me, &mut self.link, shutdown)
                        .await
                }
                Event::Frame(r) => self.frame(r, shutdown).await,
            };
            if let Err(end) = handled {
                return end;
            }
            // Authenticated or not: a logged-in connection is no free guessing channel.
            if self.auth.out_of_attempts() {
                return End::TooManyAttempts;
            }
        }
    }

    /// What the read brought: a request, a chunk, or why the connection ends.
    async fn frame(
        &mut self,
        read: Result<Option<Result<Frame<Request>, ProtoError>>, tokio::time::error::Elapsed>,
        shutdown: &CancellationToken,
    ) -> Result<(), End> {
        let frame = match read {
            // Before login this is the login deadline, checked at the loop's top.
            Err(_) if self.auth.user().is_none() => return Ok(()),
            Err(_) => {
                self.link
                    .reply_error(ErrorCode::Timeout, "idle for too long; closing")
                    .await;
                return Err(End::Idle);
            }
            Ok(None) => return Err(End::PeerClosed),
            Ok(Some(Err(e))) => {
                let code = match e {
                    ProtoError::FrameTooLarge { .. } => ErrorCode::TooLarge,
                    _ => ErrorCode::BadRequest,
                };
                if !matches!(e, ProtoError::Io(_)) {
                    warn!(error = %e, "protocol error from peer");
                    self.link.reply_error(code, &e.to_string()).await;
                }
                return Err(End::Protocol(e));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        match frame {
            Frame::Message(request) => self.apply(request, shutdown).await,
            Frame::Hello(_) => {
                self.link
                    .reply_error(ErrorCode::BadRequest, "hello sent twice")
                    .await;
                Err(End::Protocol(ProtoError::Malformed("second hello".into())))
            }
            Frame::Chunk(chunk) => match self.auth.user() {
                Some(user) => self.files.queue_chunk(user, chunk, &mut self.link).await,
                None => {
                    self.link
                        .reply_error(ErrorCode::BadRequest, "file data outside a transfer")
                        .await;
                    Err(End::Protocol(ProtoError::Malformed("stray chunk".into())))
                }
            },
        }
    }

    /// One request: its response, then the chat events it queued.
    async fn apply(&mut self, request: Request, shutdown: &CancellationToken) -> Result<(), End> {
        // Responses go out in request order: acknowledge every chunk received
        // before this request first.
        self.files.drain_chunks(&mut self.link).await?;
        let response = match self.route(request, shutdown).await {
            Ok(Some(response)) | Err(Halt::Reply(response)) => response,
            // Streamed: the handler wrote its frames.
            Ok(None) => return Ok(()),
            Err(Halt::End(end)) => return Err(end),
        };
        self.link.send(response).await?;
        // Replays and notes a chat request queued go right after its answer.
        let me = self.auth.user();
        self.chat.write_pending(me, &mut self.link, shutdown).await
    }

    /// The one place requests are routed: every variant is named, so a new one does not
    /// compile until it is handled here. `None`: the handler answered by itself.
    async fn route(
        &mut self,
        request: Request,
        shutdown: &CancellationToken,
    ) -> Result<Option<Response>, Halt> {
        let caller = self.auth.user().map(str::to_owned);
        let me = || caller.as_deref().ok_or_else(not_logged_in);
        let response = match request {
            Request::Ping => Response::Pong,
            Request::Login { user, password } => {
                // Transfers belong to the identity that opened them.
                self.files.close_transfers().await;
                let response = self.auth.login(user, password).await;
                self.logged_in(response)
            }
            Request::Authenticate { token } => {
                self.files.close_transfers().await;
                let response = self.auth.authenticate(token).await;
                self.logged_in(response)
            }
            Request::Logout => self.logout().await?,
            Request::WhoAmI => self.auth.whoami().await,
            Request::List { path, after } => {
                self.files.list(me()?, &path, after.as_deref()).await?
            }
            Request::Mkdir { path, parents } => self.files.mkdir(me()?, &path, parents).await?,
            Request::Remove {
                path,
                recursive,
                partial,
            } => self.files.remove(me()?, &path, recursive, partial).await?,
            Request::Rename { from, to, force } => {
                self.files.rename(me()?, &from, &to, force).await?
            }
            Request::SetModified {
                path,
                modified_unix,
            } => self.files.set_modified(me()?, &path, modified_unix).await?,
            Request::PutBegin {
                path,
                size,
                force,
                head,
            } => {
                let user = me()?;
                self.files
                    .put_begin(&self.registration, user, &path, size, force, head, None)
                    .await?
            }
            Request::Manifest {
                transfer_id,
                first,
                count,
            } => {
                me()?;
                self.files.manifest(transfer_id, first, count)
            }
            Request::PutCommit {
                transfer_id,
                digest,
            } => {
                let origin = self.chat.open_conn();
                self.files
                    .put_commit(me()?, transfer_id, digest, origin)
                    .await?
            }
            Request::GetBegin { path } => {
                self.files
                    .get_begin(&self.registration, me()?, &path)
                    .await?
            }
            Request::GetChunks {
                transfer_id,
                first,
                count,
                compress,
            } => {
                self.files
                    .stream_chunks(
                        me()?,
                        &mut self.link,
                        transfer_id,
                        first,
                        count,
                        compress,
                        shutdown,
                    )
                    .await?;
                return Ok(None);
            }
            Request::Close { transfer_id } => {
                me()?;
                self.files.close(transfer_id).await
            }
            Request::SendBegin {
                to,
                name,
                size,
                force,
                head,
            } => {
                self.files
                    .send_begin(&self.registration, me()?, to, &name, size, force, head)
                    .await?
            }
            Request::ChatOpen { after } => self.chat.chat_open(me()?, after).await?,
            Request::Join {
                channel,
                history,
                after,
            } => {
                me()?;
                self.chat.join(&channel, history, after).await?
            }
            Request::Part { channel } => {
                me()?;
                self.chat.part(&channel)?
            }
            Request::Say { target, text } => self.chat.say(me()?, &target, text).await?,
            Request::History {
                target,
                count,
                before,
            } => {
                self.chat
                    .chat_history(me()?, &target, count, before)
                    .await?
            }
            Request::Who { channel } => {
                me()?;
                self.chat.who(channel.as_ref())?
            }
            Request::Channels => {
                me()?;
                self.chat.channels()
            }
            Request::SetAway { away } => {
                me()?;
                self.chat.set_away(away)?
            }
            Request::MarkRead { target, id } => self.chat.mark_read(me()?, &target, id).await?,
            Request::Catchup => self.chat.catchup(me()?).await?,
            Request::PutFile {
                path,
                force,
                modified_unix,
                digest,
                data,
            } => {
                let first = batch::PutFile {
                    path,
                    force,
                    modified_unix,
                    digest,
                    data,
                };
                self.put_files(me()?, first, shutdown).await?;
                return Ok(None);
            }
            Request::GetFile { path } => {
                self.get_files(me()?, path, shutdown).await?;
                return Ok(None);
            }
        };
        Ok(Some(response))
    }

    /// After `Login` or `Authenticate`: a new identity gets the full frame limit, a
    /// fresh chat connection and its name in the registry and the log.
    fn logged_in(&mut self, response: Response) -> Response {
        if let Response::LoggedIn { user, .. } = &response {
            tracing::Span::current().record("user", user.as_str());
            self.registration.set_user(Some(user));
            // A chat connection belongs to the identity that opened it.
            self.chat.close();
            // Only an authenticated peer may send full-size chunk frames.
            self.link.set_max_frame_length(xfer_proto::MAX_FRAME_LEN);
        }
        response
    }

    async fn logout(&mut self) -> Result<Response, Halt> {
        if self.auth.user().is_none() {
            return Err(not_logged_in().into());
        }
        self.files.close_transfers().await;
        self.chat.close();
        let response = self.auth.logout().await;
        if let Response::Ok = response {
            self.link
                .set_max_frame_length(xfer_proto::MAX_PREAUTH_FRAME_LEN);
            self.registration.set_user(None);
        }
        Ok(response)
    }

    /// Tells the peer why the connection ends: the admin kicked it, or the server is
    /// shutting down.
    async fn stopped(&mut self) -> End {
        // Data first: the upload is saved before the peer hears why it ends.
        self.files.checkpoint().await;
        if self.registration.kicked() {
            let message = "your connection was ended by the server's administrator";
            self.link
                .reply_error(ErrorCode::PermissionDenied, message)
                .await;
            return End::Kicked;
        }
        let message = "server is shutting down; retry shortly";
        self.link
            .reply_error(ErrorCode::ShuttingDown, message)
            .await;
        End::Shutdown
    }
}
