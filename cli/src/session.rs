//! Opening a logged-in connection for the current saved login: what every command that
//! talks to a server starts with, and what the chat client opens (and reopens after a
//! dropped connection). Below both the commands ([`crate::cmd`]) and the chat client
//! ([`crate::chat`]), so neither imports the other.

use anyhow::Result;
use xfer_proto::ErrorCode;

use crate::client::Client;
use crate::error::{AuthError, is_remote};
use crate::home::{Home, SavedLogin};
use crate::trust;

/// Connects for the current saved login and authenticates with its token.
///
/// # Errors
/// [`AuthError`] if not logged in or the session is no longer valid; host key, network
/// and protocol errors as for any connection.
pub async fn open_session(home: &Home) -> Result<(SavedLogin, Client)> {
    let login = home.current_login()?;
    let mut client = trust::connect_saved(home, &login).await?;
    match client.authenticate(&login.token).await {
        Ok(_) => Ok((login, client)),
        Err(e) if is_remote(&e, ErrorCode::AuthFailed) => Err(session_expired(&login).into()),
        Err(e) => Err(e),
    }
}

/// The error for a saved session the server no longer accepts.
pub fn session_expired(login: &SavedLogin) -> AuthError {
    let key = login.key();
    AuthError(format!(
        "session for {key} expired or was revoked; run `xfer login {key}`"
    ))
}
