//! One module per subcommand; each has an `Args` (clap) and an async `run`.
//!
//! Commands that need a logged-in connection start with [`open_session`].

pub mod login;
pub mod logout;
pub mod whoami;

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
