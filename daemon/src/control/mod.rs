//! The admin's control socket: `xferd status`, `xferd kick USER`, `xferd reload`, and
//! `xferd user passwd|del` ending a user's open connections.
//!
//! A unix stream socket (mode 0600, and only the daemon's own user or root may talk on
//! it, checked by peer credentials) carries one JSON request line and one JSON reply
//! line per connection. The types here are shared by the daemon ([`server`]) and the
//! admin commands ([`client`]); [`render`] prints a status for people. Nothing here
//! is reachable from the network.

pub mod client;
pub mod render;
pub mod server;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::connections::ConnectionInfo;
use crate::reload::Reloader;
use crate::state::ServerState;

/// One request line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase")]
pub enum ControlRequest {
    /// What the daemon is doing.
    Status,
    /// End every connection of `user` now.
    Kick {
        /// Account name.
        user: String,
    },
    /// Re-read the configuration file.
    Reload,
}

/// One reply line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ControlReply {
    /// Answer to `Status`.
    Status(Status),
    /// Answer to `Kick`: how many connections were ended.
    Kicked {
        /// Account name.
        user: String,
        /// Connections ended.
        connections: usize,
    },
    /// Answer to a successful `Reload`.
    Reloaded {
        /// What changed, in one line.
        message: String,
    },
    /// The request failed.
    Error {
        /// Why, in one line.
        message: String,
    },
}

/// `xferd status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Daemon version.
    pub version: String,
    /// Process id.
    pub pid: u32,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Fingerprint of the certificate new connections get.
    pub fingerprint: String,
    /// Live connections, oldest first, with their transfers.
    pub connections: Vec<ConnectionInfo>,
    /// Users with chat open, sorted.
    pub chat_users: Vec<String>,
    /// Channels with members now, sorted.
    pub channels: Vec<ChannelMembers>,
}

/// A channel and who is in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelMembers {
    /// `#name`.
    pub channel: String,
    /// Members, sorted.
    pub members: Vec<String>,
}

/// What the control socket acts on.
pub struct Control {
    state: Arc<ServerState>,
    reloader: Arc<Reloader>,
}

impl Control {
    /// Commands on `state`; reloads go through `reloader` (shared with SIGHUP).
    pub fn new(state: Arc<ServerState>, reloader: Arc<Reloader>) -> Control {
        Control { state, reloader }
    }

    /// Serves one request.
    pub async fn handle(&self, request: ControlRequest) -> ControlReply {
        match request {
            ControlRequest::Status => ControlReply::Status(self.status()),
            ControlRequest::Kick { user } => {
                let connections = self.state.connections.kick(&user);
                tracing::info!(user, connections, "connections ended by the admin");
                ControlReply::Kicked { user, connections }
            }
            ControlRequest::Reload => match self.reloader.reload("control socket").await {
                Ok(reloaded) => ControlReply::Reloaded {
                    message: reloaded.summary(),
                },
                Err(message) => ControlReply::Error { message },
            },
        }
    }

    fn status(&self) -> Status {
        let bus = self.state.chat.bus();
        let channels = bus
            .channels()
            .into_iter()
            .map(|c| ChannelMembers {
                // The bus names channels without their `#`.
                members: bus
                    .who(Some(c.name.trim_start_matches('#')))
                    .into_iter()
                    .map(|p| p.user)
                    .collect(),
                channel: c.name,
            })
            .collect();
        Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            uptime_secs: self.state.started.elapsed().as_secs(),
            fingerprint: self.state.fingerprint().to_string(),
            connections: self.state.connections.snapshot(),
            chat_users: bus.who(None).into_iter().map(|p| p.user).collect(),
            channels,
        }
    }
}
