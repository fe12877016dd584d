//! The hub's state: connections, users and channels, and the presence and membership
//! changes they announce. Behind the hub's one lock.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::broadcast;
use xfer_proto::{ChatEvent, Presence, PresenceState};

use crate::chat::bus::Deliver;
use crate::chat::envelope::{ConnId, Envelope};

pub(super) struct ConnEntry {
    pub user: String,
    pub inbox: Box<dyn Deliver>,
    pub channels: HashSet<String>,
}

#[derive(Default)]
pub(super) struct UserEntry {
    pub conns: Vec<ConnId>,
    pub away: bool,
}

pub(super) struct ChannelEntry {
    pub tx: broadcast::Sender<Arc<Envelope>>,
    /// Users in the channel and how many of their connections are.
    pub members: BTreeMap<String, u32>,
}

#[derive(Default)]
pub(super) struct HubState {
    pub conns: HashMap<ConnId, ConnEntry>,
    pub users: BTreeMap<String, UserEntry>,
    pub channels: BTreeMap<String, ChannelEntry>,
}

impl HubState {
    pub fn presence_of(&self, user: &str) -> Presence {
        let state = match self.users.get(user) {
            Some(u) if u.away => PresenceState::Away,
            Some(_) => PresenceState::Online,
            None => PresenceState::Offline,
        };
        Presence {
            user: user.to_owned(),
            state,
        }
    }

    /// Tells every chat connection but `except` that `user` is now in `state`.
    pub fn announce(&self, except: ConnId, user: &str, state: PresenceState) {
        let envelope = Arc::new(Envelope {
            origin: Some(except),
            event: ChatEvent::Presence(Presence {
                user: user.to_owned(),
                state,
            }),
        });
        for (id, c) in &self.conns {
            if *id != except {
                c.inbox.deliver(envelope.clone());
            }
        }
    }

    /// One connection of `user` leaves `channel`; the user leaves it with their last.
    pub fn leave(&mut self, conn: ConnId, user: &str, channel: &str) {
        let Some(entry) = self.channels.get_mut(channel) else {
            return;
        };
        let gone = match entry.members.get_mut(user) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                entry.members.remove(user);
                true
            }
            None => false,
        };
        if gone {
            let _ = entry.tx.send(Arc::new(Envelope {
                origin: Some(conn),
                event: ChatEvent::Parted {
                    channel: format!("#{channel}"),
                    user: user.to_owned(),
                },
            }));
        }
        if entry.members.is_empty() {
            self.channels.remove(channel);
        }
    }
}
