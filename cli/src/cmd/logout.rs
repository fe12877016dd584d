//! `xfer logout`: revoke the session on the server and forget it locally.
//!
//! The saved login is removed even when the server cannot be reached or no longer
//! accepts the token: a token left on disk after `logout` would be a surprise. The
//! exit code then still says what went wrong.

use anyhow::Result;
use xfer_proto::ErrorCode;

use crate::error::{AuthError, is_remote};
use crate::home::{Home, SavedLogin};
use crate::output::print_line;
use crate::trust;

/// Arguments of `xfer logout`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `xfer logout`.
///
/// # Errors
/// Not logged in (auth); the session could not be revoked (auth, host key, network,
/// protocol), after the saved login was removed anyway.
pub async fn run(home: &Home, _args: Args) -> Result<()> {
    let login = home.current_login()?;
    let revoked = revoke(home, &login).await;

    let key = login.key();
    let mut logins = home.load_logins()?;
    logins.remove(&key);
    home.save_logins(&logins)?;

    match revoked {
        Ok(()) => {
            print_line(format_args!(
                "Logged out {} from {}.",
                login.user,
                login.server()
            ))?;
            Ok(())
        }
        Err(e) if is_remote(&e, ErrorCode::AuthFailed) => Err(AuthError(format!(
            "removed the saved login {key}; the server no longer accepted its session (expired or revoked)"
        ))
        .into()),
        Err(e) => Err(e.context(format!(
            "removed the saved login {key}, but the server did not revoke its session"
        ))),
    }
}

/// Revokes `login`'s session on its server.
///
/// # Errors
/// The server cannot be reached or verified, or no longer accepts the token.
pub(crate) async fn revoke(home: &Home, login: &SavedLogin) -> Result<()> {
    let mut client = trust::connect_saved(home, login).await?;
    client.authenticate(&login.token).await?;
    client.logout().await
}
