//! Who is on this connection: `Login`, `Authenticate`, `Logout`, `WhoAmI`.
//!
//! [`Auth`] owns the connection's identity and what comes with it: the failed-attempt
//! count, its place among connections not yet logged in (given up at the first login)
//! and its `max_connections` slot (taken then). What a login changes elsewhere (open
//! transfers, chat, the frame limit, the registry) is done by the session around these
//! calls, so this file touches nothing but accounts.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;
use xfer_proto::{ErrorCode, Response, Secret, WhoAmI};

use super::reply::{answer, internal_error, not_logged_in};
use crate::accounts::{UserName, Verdict};
use crate::admission::PreAuthGuard;
use crate::audit::{self, Method};
use crate::metrics::LoginResult;
use crate::state::ServerState;

/// Longest user name kept as a throttle key; longer names are cut (they cannot exist).
const MAX_THROTTLE_NAME: usize = 64;

struct LoggedIn {
    user: String,
    token: Option<Secret>,
    expires_unix: u64,
}

/// The identity side of a session.
pub(super) struct Auth {
    state: Arc<ServerState>,
    peer: SocketAddr,
    current: Option<LoggedIn>,
    attempts: u32,
    /// This connection's place among those not yet logged in; `None` once logged in.
    preauth: Option<PreAuthGuard>,
    /// Its `max_connections` slot, taken at the first login.
    slot: Option<OwnedSemaphorePermit>,
}

impl Auth {
    pub fn new(state: Arc<ServerState>, peer: SocketAddr, preauth: PreAuthGuard) -> Auth {
        Auth {
            state,
            peer,
            current: None,
            attempts: 0,
            preauth: Some(preauth),
            slot: None,
        }
    }

    /// The logged-in user, if any.
    pub fn user(&self) -> Option<&str> {
        self.current.as_ref().map(|a| a.user.as_str())
    }

    /// Whether the connection used up `login.max_attempts_per_connection`.
    pub fn out_of_attempts(&self) -> bool {
        self.attempts >= self.state.config().login.max_attempts_per_connection
    }

    /// Counts a `Login` or `Authenticate` that did not log in (wrong secret, throttled,
    /// refused), whatever the connection's state; the loop closes it at the limit.
    fn count_attempt(&mut self, response: Response) -> Response {
        if !matches!(response, Response::LoggedIn { .. }) {
            self.attempts = self.attempts.saturating_add(1);
        }
        response
    }

    pub async fn login(&mut self, user: String, password: Secret) -> Response {
        let response = self.password_login(user, password).await;
        self.count_attempt(response)
    }

    pub async fn authenticate(&mut self, token: Secret) -> Response {
        let response = self.token_login(token).await;
        self.count_attempt(response)
    }

    async fn password_login(&mut self, user: String, password: Secret) -> Response {
        let state = self.state.clone();
        let ip = self.peer.ip();
        let throttle_key = truncate(&user, MAX_THROTTLE_NAME);
        // Admission reserves a failure up front, so parallel guesses cannot outrun the count.
        if let Verdict::Deny { retry_after } = state.admit_login(ip, throttle_key).await {
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
        let phc = match user.parse::<UserName>() {
            Ok(name) => state.passwords.find(name.as_str()).await,
            Err(_) => None,
        };
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
        state.refund_login(ip, throttle_key).await;
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
            // The shared session store of a cluster is unreachable: say so.
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotConnected => {
                tracing::warn!(error = %e, "login refused: no session store");
                return Response::error(ErrorCode::Busy, e.to_string());
            }
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

    async fn token_login(&mut self, token: Secret) -> Response {
        let state = self.state.clone();
        // The password file is stat'ed (maybe re-read) here: off the async threads.
        let st = state.clone();
        let secret = token.clone();
        let validated = tokio::task::spawn_blocking(move || {
            st.sessions.validate(
                secret.expose(),
                |user| st.passwords.lookup(user),
                crate::now_unix(),
            )
        })
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "validating a session token failed");
            None
        });
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
        // Counted among logged-in connections from now on.
        self.preauth = None;
        self.current = Some(LoggedIn {
            user,
            token,
            expires_unix,
        });
    }

    /// Forgets the identity and revokes its token. The session has closed the
    /// connection's transfers and chat first.
    pub async fn logout(&mut self) -> Response {
        let Some(auth) = self.current.take() else {
            return not_logged_in();
        };
        if let Some(token) = auth.token {
            let st = self.state.clone();
            let revoked =
                tokio::task::spawn_blocking(move || st.sessions.revoke(token.expose())).await;
            match revoked {
                Ok(Ok(_)) => {}
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotConnected => {
                    return Response::error(ErrorCode::Busy, e.to_string());
                }
                Ok(Err(e)) => return internal_error("revoking a session", &e),
                Err(e) => return internal_error("revoking a session", &e),
            }
        }
        audit::logout(&auth.user, self.peer);
        Response::Ok
    }

    pub async fn whoami(&self) -> Response {
        let Some(auth) = &self.current else {
            return not_logged_in();
        };
        let storage = self.state.storage.clone();
        let user = auth.user.clone();
        let usage = match answer(storage.usage(&user)).await {
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

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
