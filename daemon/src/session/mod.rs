//! One connection: TLS handshake and hello under a deadline, then the request loop.
//!
//! A connection starts unauthenticated, with the small pre-auth frame limit and a
//! login deadline counted from accept, which covers the handshake too and which no
//! request extends; `Login` or `Authenticate` lifts both, and takes one of the
//! `max_connections` slots in place of the connection's unauthenticated place. Every failure a peer can
//! cause ends in an error reply (when the peer still speaks xfer) and a closed
//! connection, never in a panic or an effect on other sessions. File requests and
//! chunk frames are served in `files.rs`; chat requests and pushed events in `chat.rs`.

mod chat;
mod files;
mod send;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep_until, timeout, timeout_at};
use tokio_rustls::server::TlsStream;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use xfer_proto::{
    ErrorCode, Frame, Hello, PROTOCOL_VERSION, ProtoError, Request, Response, Secret, ServerCodec,
    WhoAmI,
};

use crate::accounts::{UserName, Verdict};
use crate::admission::PreAuthGuard;
use crate::audit::{self, Method};
use crate::connections::Registration;
use crate::metrics::{LoginResult, MeteredCodec};
use crate::server::ServerState;
use chat::ChatState;
use files::Files;

type Conn = Framed<TlsStream<TcpStream>, MeteredCodec>;

/// Longest user name kept as a throttle key; longer names are cut (they cannot exist).
const MAX_THROTTLE_NAME: usize = 64;

/// Why a connection ended, for the log.
#[derive(Debug)]
enum End {
    PeerClosed,
    Idle,
    LoginDeadline,
    Shutdown,
    Kicked,
    TooManyAttempts,
    Protocol(ProtoError),
}

/// Serves one accepted TCP connection to its end. Never panics on peer input.
/// `preauth` is the connection's unauthenticated place, given up at login.
pub async fn run(
    state: Arc<ServerState>,
    tcp: TcpStream,
    peer: SocketAddr,
    accepted: Instant,
    preauth: PreAuthGuard,
    shutdown: CancellationToken,
) {
    let config = state.config();
    let registration = state.connections.register(peer, &shutdown);
    // A kick or the shutdown: the session ends the same way on either.
    let stop = registration.stop_token();
    let limits = &config.limits;
    let login_deadline = accepted + Duration::from_secs(limits.login_timeout_secs);
    let deadline =
        (accepted + Duration::from_secs(limits.handshake_timeout_secs)).min(login_deadline);
    // A shutdown (or kick) does not wait for a handshake to finish or time out: an idle
    // peer must not hold the drain for the whole grace period.
    let handshook = tokio::select! {
        r = handshake(&state, tcp, deadline) => r,
        () = stop.cancelled() => {
            debug!("stopped during the handshake");
            return;
        }
    };
    let framed = match handshook {
        Ok(f) => f,
        Err(Refused::Timeout(reason)) => {
            state.admission.login_deadline_reached(peer, reason);
            return;
        }
        Err(Refused::Failed(reason)) => {
            state.admission.handshake_failed(peer, &reason);
            return;
        }
    };
    let mut session = Session {
        files: Files::new(state.storage.clone()),
        chat: ChatState::new(&config.chat),
        registration,
        state,
        peer,
        framed,
        auth: None,
        attempts: 0,
        login_deadline,
        preauth: Some(preauth),
        slot: None,
    };
    let end = session.serve(&stop).await;
    session.close_transfers().await;
    // Leaves channels and, with the user's last connection, goes offline.
    session.chat.close();
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
}

/// Why a handshake did not complete.
enum Refused {
    /// The deadline passed.
    Timeout(&'static str),
    /// The peer did something else.
    Failed(String),
}

/// TLS handshake and hello exchange, both within `deadline`. The server always answers
/// a well-formed hello with its own, so a client of another version can say which.
async fn handshake(
    state: &ServerState,
    tcp: TcpStream,
    deadline: Instant,
) -> Result<Conn, Refused> {
    let tls = match timeout_at(deadline, state.tls().accept(tcp)).await {
        Err(_) => return Err(Refused::Timeout("TLS handshake timed out")),
        Ok(Err(e)) => return Err(Refused::Failed(format!("TLS handshake failed: {e}"))),
        Ok(Ok(tls)) => tls,
    };
    let codec = MeteredCodec::new(ServerCodec::default(), state.metrics.clone());
    let mut framed = Framed::new(tls, codec);
    let hello = match timeout_at(deadline, framed.next()).await {
        Err(_) => return Err(Refused::Timeout("no hello before the handshake deadline")),
        Ok(None) => return Err(Refused::Failed("closed before hello".into())),
        Ok(Some(Ok(Frame::Hello(h)))) => h,
        Ok(Some(Ok(_))) => {
            reply_error(
                &mut framed,
                ErrorCode::BadRequest,
                "expected a hello frame first",
            )
            .await;
            return Err(Refused::Failed("first frame was not a hello".into()));
        }
        Ok(Some(Err(e))) => {
            reply_error(
                &mut framed,
                ErrorCode::BadRequest,
                &format!("expected an xfer hello: {e}"),
            )
            .await;
            return Err(Refused::Failed(format!("bad hello: {e}")));
        }
    };
    let ours = Frame::Hello(Hello::current(crate::SOFTWARE));
    if timeout_at(deadline, framed.send(ours))
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
    Ok(framed)
}

/// Best effort: tells the peer why it is being dropped. Failure to send is ignored,
/// because the connection is being closed anyway.
async fn reply_error(framed: &mut Conn, code: ErrorCode, message: &str) {
    let reply = Frame::Message(Response::error(code, message));
    let _ = timeout(Duration::from_secs(2), framed.send(reply)).await;
}

struct Auth {
    user: String,
    token: Option<Secret>,
    expires_unix: u64,
}

struct Session {
    state: Arc<ServerState>,
    peer: SocketAddr,
    framed: Conn,
    auth: Option<Auth>,
    attempts: u32,
    /// From accept: handshake, hello and login must be done by then.
    login_deadline: Instant,
    /// This connection's place among those not yet logged in; `None` once logged in.
    preauth: Option<PreAuthGuard>,
    /// Its `max_connections` slot, taken at the first login.
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
    /// Open transfers and chunk frames being verified and written.
    files: Files,
    /// Chat: rate limit, and once `ChatOpen` was accepted, this connection on the bus.
    chat: ChatState,
    /// This connection in the admin's registry (`xferd status`, `xferd kick`).
    registration: Registration,
}

/// What woke the request loop.
enum Event {
    Frame(Result<Option<Result<Frame<Request>, ProtoError>>, tokio::time::error::Elapsed>),
    ChunkDone(files::ChunkOutcome),
    Chat(chat::Incoming),
    /// The bandwidth pause is over: frames may be read again.
    Resume,
}

impl Session {
    async fn serve(&mut self, shutdown: &CancellationToken) -> End {
        let idle = Duration::from_secs(self.state.config().limits.idle_timeout_secs);
        loop {
            // Checked here too because a peer that keeps frames coming never lets the
            // read below time out: requests before login do not extend the deadline.
            if self.auth.is_none() && Instant::now() >= self.login_deadline {
                reply_error(
                    &mut self.framed,
                    ErrorCode::Timeout,
                    "not logged in for too long; closing",
                )
                .await;
                return End::LoginDeadline;
            }
            let deadline = match self.auth {
                Some(_) => Instant::now() + idle,
                None => self.login_deadline,
            };
            // Every branch is cancel-safe: `Framed::next` keeps partial frames in its
            // buffer, and a chunk job is polled through `&mut JoinHandle`, never dropped.
            // Frames are not read while enough chunks wait: that is the backpressure.
            // Chat events come last, so a busy room cannot starve this client's requests.
            let can_read = self.files.can_queue();
            let chat_open = self.chat.is_open();
            let paused = self.files.paused_until();
            let event = tokio::select! {
                biased;
                () = shutdown.cancelled() => return self.stopped().await,
                done = self.files.next_done() => Event::ChunkDone(done),
                () = sleep_until(paused.unwrap_or_else(Instant::now)), if paused.is_some() => Event::Resume,
                r = timeout_at(deadline, self.framed.next()), if can_read => Event::Frame(r),
                incoming = self.chat.next(), if chat_open => Event::Chat(incoming),
            };
            let next = match event {
                Event::Resume => {
                    self.files.resume();
                    continue;
                }
                Event::ChunkDone(done) => {
                    if let Err(end) = self.chunk_done(done).await {
                        return end;
                    }
                    continue;
                }
                Event::Chat(incoming) => {
                    if let Err(end) = self.deliver_chat(incoming, shutdown).await {
                        return end;
                    }
                    continue;
                }
                Event::Frame(r) => r,
            };
            let frame = match next {
                // Before login this is the login deadline, checked at the loop's top.
                Err(_) if self.auth.is_none() => continue,
                Err(_) => {
                    reply_error(
                        &mut self.framed,
                        ErrorCode::Timeout,
                        "idle for too long; closing",
                    )
                    .await;
                    return End::Idle;
                }
                Ok(None) => return End::PeerClosed,
                Ok(Some(Err(e))) => {
                    let code = match e {
                        ProtoError::FrameTooLarge { .. } => ErrorCode::TooLarge,
                        _ => ErrorCode::BadRequest,
                    };
                    if !matches!(e, ProtoError::Io(_)) {
                        warn!(error = %e, "protocol error from peer");
                        reply_error(&mut self.framed, code, &e.to_string()).await;
                    }
                    return End::Protocol(e);
                }
                Ok(Some(Ok(frame))) => frame,
            };
            let request = match frame {
                Frame::Message(request) => request,
                Frame::Hello(_) => {
                    reply_error(&mut self.framed, ErrorCode::BadRequest, "hello sent twice").await;
                    return End::Protocol(ProtoError::Malformed("second hello".into()));
                }
                Frame::Chunk(_) if self.auth.is_none() => {
                    reply_error(
                        &mut self.framed,
                        ErrorCode::BadRequest,
                        "file data outside a transfer",
                    )
                    .await;
                    return End::Protocol(ProtoError::Malformed("stray chunk".into()));
                }
                Frame::Chunk(chunk) => {
                    if let Err(end) = self.queue_chunk(chunk).await {
                        return end;
                    }
                    continue;
                }
            };
            // Responses go out in request order: acknowledge every chunk received
            // before this request first.
            if let Err(end) = self.drain_chunks().await {
                return end;
            }
            if let Request::GetChunks {
                transfer_id,
                first,
                count,
                compress,
            } = request
            {
                if let Err(end) = self
                    .stream_chunks(transfer_id, first, count, compress, shutdown)
                    .await
                {
                    return end;
                }
                continue;
            }
            let response = self.handle(request).await;
            if timeout(idle, self.framed.send(Frame::Message(response)))
                .await
                .map_or(true, |r| r.is_err())
            {
                return End::PeerClosed;
            }
            // Replays and notes a chat request queued go right after its answer.
            if let Err(end) = self.write_pending_chat(shutdown).await {
                return end;
            }
            // Authenticated or not: a logged-in connection is no free guessing channel.
            if self.attempts >= self.state.config().login.max_attempts_per_connection {
                return End::TooManyAttempts;
            }
        }
    }

    /// Tells the peer why the connection ends: the admin kicked it, or the server is
    /// shutting down.
    async fn stopped(&mut self) -> End {
        // Data first: the upload is saved before the peer hears why it ends.
        self.checkpoint().await;
        if self.registration.kicked() {
            let message = "your connection was ended by the server's administrator";
            reply_error(&mut self.framed, ErrorCode::PermissionDenied, message).await;
            return End::Kicked;
        }
        let message = "server is shutting down; retry shortly";
        reply_error(&mut self.framed, ErrorCode::ShuttingDown, message).await;
        End::Shutdown
    }

    /// One request, one response.
    async fn handle(&mut self, request: Request) -> Response {
        match request {
            Request::Ping => Response::Pong,
            Request::Login { user, password } => {
                let response = self.login(user, password).await;
                self.count_attempt(response)
            }
            Request::Authenticate { token } => {
                let response = self.authenticate(token).await;
                self.count_attempt(response)
            }
            Request::Logout => self.logout().await,
            Request::WhoAmI => self.whoami().await,
            chat_request if chat_request.is_chat() => self.handle_chat(chat_request).await,
            file_request => self.handle_file(file_request).await,
        }
    }

    /// Counts a `Login` or `Authenticate` that did not log in (wrong secret, throttled,
    /// refused), whatever the connection's state; the loop closes it at the limit.
    fn count_attempt(&mut self, response: Response) -> Response {
        if !matches!(response, Response::LoggedIn { .. }) {
            self.attempts = self.attempts.saturating_add(1);
        }
        response
    }

    async fn login(&mut self, user: String, password: Secret) -> Response {
        // Transfers belong to the identity that opened them.
        self.close_transfers().await;
        let state = self.state.clone();
        let ip = self.peer.ip();
        let throttle_key = truncate(&user, MAX_THROTTLE_NAME);
        // Admission reserves a failure up front, so parallel guesses cannot outrun the count.
        if let Verdict::Deny { retry_after } =
            state
                .throttle
                .admit(ip, throttle_key, std::time::Instant::now())
        {
            audit::login_throttled(&user, self.peer, retry_after);
            state.metrics.login(LoginResult::Throttled);
            let secs = retry_after.as_secs().max(1);
            return Response::error(
                ErrorCode::Throttled,
                format!("too many failed logins; retry in {secs} s"),
            );
        }
        // A name that cannot exist is treated exactly like an unknown one: the dummy
        // hash is verified, so timing and reply are the same as for a wrong password.
        let phc = user
            .parse::<UserName>()
            .ok()
            .and_then(|name| state.passwords.lookup(name.as_str()));
        let user_known = phc.is_some();
        let ok = state
            .verifier
            .verify(phc.clone(), password.expose().to_owned())
            .await;
        let Some(phc) = phc.filter(|_| ok) else {
            audit::login_failed(&user, self.peer, user_known);
            state.metrics.login(LoginResult::Failed);
            return Response::error(ErrorCode::AuthFailed, "invalid user name or password");
        };
        state
            .throttle
            .refund(ip, throttle_key, std::time::Instant::now());
        if let Err(busy) = self.take_slot(&user) {
            return busy;
        }
        let st = state.clone();
        let name = user.clone();
        let created =
            tokio::task::spawn_blocking(move || st.sessions.create(&name, &phc, crate::now_unix()))
                .await;
        let session = match created {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return internal_error("creating a session", &e),
            Err(e) => return internal_error("creating a session", &e),
        };
        audit::login_succeeded(&user, self.peer, Method::Password);
        state.metrics.login(LoginResult::PasswordOk);
        let token = Secret::new(session.token);
        self.authenticated(user.clone(), Some(token.clone()), session.expires_unix);
        Response::LoggedIn {
            user,
            token: Some(token),
            expires_unix: session.expires_unix,
        }
    }

    async fn authenticate(&mut self, token: Secret) -> Response {
        self.close_transfers().await;
        let state = self.state.clone();
        let validated = state.sessions.validate(
            token.expose(),
            |user| state.passwords.lookup(user),
            crate::now_unix(),
        );
        let Some(info) = validated else {
            audit::token_refused(self.peer);
            state.metrics.login(LoginResult::TokenRefused);
            return Response::error(
                ErrorCode::AuthFailed,
                "session expired or was revoked; log in again",
            );
        };
        if let Err(busy) = self.take_slot(&info.user) {
            return busy;
        }
        audit::login_succeeded(&info.user, self.peer, Method::Token);
        state.metrics.login(LoginResult::TokenOk);
        self.authenticated(info.user.clone(), Some(token), info.expires_unix);
        Response::LoggedIn {
            user: info.user,
            token: None,
            expires_unix: info.expires_unix,
        }
    }

    /// Takes one of the `max_connections` slots (once per connection), or the reply
    /// refusing the login.
    fn take_slot(&mut self, user: &str) -> Result<(), Response> {
        if self.slot.is_none() {
            self.slot = Some(self.state.admission.connection_slot(user).ok_or_else(|| {
                Response::error(
                    ErrorCode::Busy,
                    "server is at its connection limit (limits.max_connections); retry shortly",
                )
            })?);
        }
        Ok(())
    }

    fn authenticated(&mut self, user: String, token: Option<Secret>, expires_unix: u64) {
        tracing::Span::current().record("user", user.as_str());
        self.registration.set_user(Some(&user));
        // Counted among logged-in connections from now on.
        self.preauth = None;
        // A chat connection belongs to the identity that opened it.
        self.chat.close();
        // Only an authenticated peer may send full-size chunk frames.
        self.framed
            .codec_mut()
            .set_max_frame_length(xfer_proto::MAX_FRAME_LEN);
        self.auth = Some(Auth {
            user,
            token,
            expires_unix,
        });
    }

    async fn logout(&mut self) -> Response {
        if self.auth.is_none() {
            return not_logged_in();
        }
        self.close_transfers().await;
        let Some(auth) = self.auth.take() else {
            return not_logged_in();
        };
        self.chat.close();
        if let Some(token) = auth.token {
            let st = self.state.clone();
            let revoked =
                tokio::task::spawn_blocking(move || st.sessions.revoke(token.expose())).await;
            match revoked {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return internal_error("revoking a session", &e),
                Err(e) => return internal_error("revoking a session", &e),
            }
        }
        self.framed
            .codec_mut()
            .set_max_frame_length(xfer_proto::MAX_PREAUTH_FRAME_LEN);
        self.registration.set_user(None);
        audit::logout(&auth.user, self.peer);
        Response::Ok
    }

    async fn whoami(&self) -> Response {
        let Some(auth) = &self.auth else {
            return not_logged_in();
        };
        let storage = self.state.storage.clone();
        let user = auth.user.clone();
        let usage = match files::answer(storage.usage(&user)).await {
            Ok(u) => u,
            Err(response) => return response,
        };
        Response::WhoAmI(WhoAmI {
            user: auth.user.clone(),
            session_expires_unix: auth.expires_unix,
            quota_used_bytes: usage.used_bytes,
            quota_limit_bytes: usage.limit_bytes,
        })
    }
}

fn not_logged_in() -> Response {
    Response::error(ErrorCode::AuthRequired, "not logged in")
}

fn internal_error(what: &str, e: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %e, "{what} failed");
    Response::error(
        ErrorCode::Internal,
        format!("{what} failed on the server; see its log"),
    )
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
