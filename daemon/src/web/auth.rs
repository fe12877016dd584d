//! Sign-in for the web: the same password file, argon2 verifier, throttle and session
//! store as the framed protocol's `Login`, so a browser session is a session like any
//! other (`xferd status` lists its connection, logout and `user del` end it), and wrong
//! passwords from a page count toward the same limits as the CLI's.
//!
//! A request is authenticated by `Authorization: Bearer TOKEN` (the CLI's token, or one
//! printed by `xfer token`) or by the `xfer_session` cookie. Cookie requests that change
//! state must also carry `X-CSRF-Token` (a WebSocket upgrade: `?csrf=`), and a present
//! `Origin` must be this server's own: a page elsewhere cannot act with the cookie.

use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::header::{AUTHORIZATION, COOKIE, HOST, ORIGIN, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use xfer_proto::ErrorCode;

use super::conn::ConnCtx;
use super::{ApiError, WebState};
use crate::accounts::{UserName, Verdict};
use crate::audit::{self, Method as AuthMethod};
use crate::metrics::LoginResult;

/// The session cookie's name.
pub const COOKIE_NAME: &str = "xfer_session";
/// The header carrying the CSRF token on cookie requests that change state.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Longest user name kept as a throttle key (as for the framed protocol).
const MAX_THROTTLE_NAME: usize = 64;

/// A signed-in request: extract it in any handler that needs a user.
#[derive(Clone)]
pub struct Authed {
    /// The account.
    pub user: String,
    /// Authenticated by the session cookie (a browser), not a Bearer token.
    pub via_cookie: bool,
    /// The session's token, for logout and the upload registry.
    pub(super) token: String,
    /// The connection it came on.
    pub(super) conn: Arc<ConnCtx>,
}

impl Authed {
    /// The CSRF token that goes with this session.
    pub fn csrf(&self) -> String {
        csrf_of(&self.token)
    }

    /// A stable key for this session that does not reveal its token.
    pub(super) fn session_key(&self) -> [u8; 32] {
        *blake3::hash(self.token.as_bytes()).as_bytes()
    }
}

/// The CSRF token of a session: derived from its secret token, so it needs no storage
/// and is useless without the cookie it belongs to.
fn csrf_of(token: &str) -> String {
    let key = blake3::derive_key("xfer web csrf v1", token.as_bytes());
    key[..16].iter().map(|b| format!("{b:02x}")).collect()
}

impl FromRequestParts<WebState> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Authed, ApiError> {
        let conn = parts
            .extensions
            .get::<Arc<ConnCtx>>()
            .cloned()
            .ok_or_else(|| ApiError::internal("finding the connection", &"no context"))?;
        let (token, via_cookie) = match bearer(&parts.headers) {
            Some(t) => (t, false),
            None => match cookie(&parts.headers) {
                Some(t) => (t, true),
                None => {
                    return Err(ApiError::new(
                        ErrorCode::AuthRequired,
                        "not signed in: sign in, or send `Authorization: Bearer TOKEN` (see `xfer token`)",
                    ));
                }
            },
        };
        if via_cookie && changes_state(parts) {
            check_origin(&parts.headers, parts.uri.authority().map(|a| a.as_str()))?;
            let given = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .or_else(|| query_param(parts.uri.query(), "csrf"));
            if given.as_deref() != Some(csrf_of(&token).as_str()) {
                return Err(ApiError::new(
                    ErrorCode::PermissionDenied,
                    "missing or wrong X-CSRF-Token; reload the page",
                ));
            }
        }
        let st = state.server.clone();
        let secret = token.clone();
        let validated = tokio::task::spawn_blocking(move || {
            st.sessions
                .validate(&secret, |user| st.passwords.lookup(user), crate::now_unix())
        })
        .await
        .map_err(|e| ApiError::internal("validating a session", &e))?;
        let Some(info) = validated else {
            return Err(ApiError::new(
                ErrorCode::AuthFailed,
                "session expired or was revoked; sign in again",
            ));
        };
        conn.signed_in(&state.server, &info.user)?;
        Ok(Authed {
            user: info.user,
            via_cookie,
            token,
            conn,
        })
    }
}

/// Whether a request may change state (so needs CSRF proof when it carries the cookie).
fn changes_state(parts: &Parts) -> bool {
    let upgrade = parts
        .headers
        .get("upgrade")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    upgrade || !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// A present `Origin` must be `https://<Host>` (HTTP/1.1 `Host`, or h2's authority).
fn check_origin(headers: &HeaderMap, authority: Option<&str>) -> Result<(), ApiError> {
    let Some(origin) = headers.get(ORIGIN) else {
        return Ok(());
    };
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or(authority);
    let ok = host.is_some_and(|h| origin.as_bytes() == format!("https://{h}").as_bytes());
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::PermissionDenied,
            "request from another site refused (Origin does not match this server)",
        ))
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE_NAME)
        .map(|(_, v)| v.to_owned())
}

/// A query parameter's raw value (CSRF tokens are hex: nothing to decode).
pub(super) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// `GET /api/server`: what the sign-in page shows before anyone signs in.
pub async fn server_info(State(state): State<WebState>) -> Json<serde_json::Value> {
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "fingerprint": state.server.fingerprint().to_string(),
        "chunk_size": crate::storage::CHUNK_SIZE,
        "max_run_chunks": super::chunks::MAX_RUN_CHUNKS,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    user: String,
    password: String,
}

/// `POST /api/login`: the framed protocol's password login, answered with the cookie.
pub async fn login(
    State(state): State<WebState>,
    Extension(conn): Extension<Arc<ConnCtx>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Result<Json<LoginBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    // h2 carries the host as the URI's authority, HTTP/1.1 as the Host header.
    check_origin(&headers, uri.authority().map(|a| a.as_str()))?;
    let Json(body) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let state = &state.server;
    let peer = conn.peer;
    let throttle_key = truncate(&body.user, MAX_THROTTLE_NAME);
    if let Verdict::Deny { retry_after } = state.admit_login(peer.ip(), throttle_key).await {
        audit::login_throttled(&body.user, peer, retry_after);
        state.metrics.login(LoginResult::Throttled);
        let secs = retry_after.as_secs().max(1);
        return Err(ApiError::new(
            ErrorCode::Throttled,
            format!("too many failed logins; retry in {secs} s"),
        ));
    }
    // An impossible name is verified against the dummy hash, like an unknown one.
    let phc = match body.user.parse::<UserName>() {
        Ok(name) => state.passwords.find(name.as_str()).await,
        Err(_) => None,
    };
    let known = phc.is_some();
    let ok = state.verifier.verify(phc.clone(), body.password).await;
    let Some(phc) = phc.filter(|_| ok) else {
        audit::login_failed(&body.user, peer, known);
        state.metrics.login(LoginResult::Failed);
        return Err(ApiError::new(
            ErrorCode::AuthFailed,
            "invalid user name or password",
        ));
    };
    state.refund_login(peer.ip(), throttle_key).await;
    let st = state.clone();
    let name = body.user.clone();
    let session =
        tokio::task::spawn_blocking(move || st.sessions.create(&name, &phc, crate::now_unix()))
            .await
            .map_err(|e| ApiError::internal("creating a session", &e))?
            .map_err(|e| ApiError::internal("creating a session", &e))?;
    conn.signed_in(state, &body.user)?;
    audit::login_succeeded(&body.user, peer, AuthMethod::Password);
    state.metrics.login(LoginResult::PasswordOk);
    let max_age = session.expires_unix.saturating_sub(crate::now_unix());
    let cookie = format!(
        "{COOKIE_NAME}={}; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}",
        session.token
    );
    let mut response =
        Json(json!({ "user": body.user, "csrf": csrf_of(&session.token) })).into_response();
    set_cookie(&mut response, &cookie);
    Ok(response)
}

/// `POST /api/logout`: revokes the session (whichever way it came) and clears the cookie.
pub async fn logout(State(state): State<WebState>, authed: Authed) -> Result<Response, ApiError> {
    let st = state.server.clone();
    let token = authed.token.clone();
    tokio::task::spawn_blocking(move || st.sessions.revoke(&token))
        .await
        .map_err(|e| ApiError::internal("revoking a session", &e))?
        .map_err(|e| ApiError::internal("revoking a session", &e))?;
    state.uploads.forget_session(&authed.session_key()).await;
    audit::logout(&authed.user, authed.conn.peer);
    let mut response = StatusCode::NO_CONTENT.into_response();
    set_cookie(
        &mut response,
        &format!("{COOKIE_NAME}=; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    Ok(response)
}

/// `GET /api/session`: who is signed in, and the CSRF token for the page.
pub async fn session(authed: Authed) -> Json<serde_json::Value> {
    Json(json!({ "user": authed.user, "csrf": authed.csrf() }))
}

fn set_cookie(response: &mut Response, cookie: &str) {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(SET_COOKIE, v);
    }
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
