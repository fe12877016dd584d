//! [`InProcessHub`]: the [`ChatBus`] of one daemon.
//!
//! One `broadcast` channel per channel carries its messages, joins and parts; a reader
//! that falls more than `channel_buffer` events behind loses the oldest and is told how
//! many (`RecvError::Lagged`), and the room never waits for it. Direct messages, file
//! notices and presence go to each connection's bounded [`Inbox`](crate::chat::Inbox), which likewise
//! drops its oldest event to make room and counts it. Presence changes go to every chat
//! connection (a LAN server has few enough users that this is cheap, and `Who` without
//! a channel lists the same people).
//!
//! All state (`state.rs`) is behind one `std::sync::Mutex`, held only for map updates and
//! non-blocking sends, never across an `.await`.

mod state;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast;
use xfer_proto::{ChannelInfo, ChatEvent, ChatMessage, Presence, PresenceState, UserName};

pub use crate::chat::bus::HubConfig;
use crate::chat::bus::{ChatBus, Deliver, JoinedChannel};
use crate::chat::envelope::{ConnId, Envelope};
use crate::chat::error::ChatError;
use state::{ChannelEntry, ConnEntry, HubState};

/// The in-process chat bus.
pub struct InProcessHub {
    /// Replaced whole by a config reload; a leaf lock, never held with `state`'s.
    config: Mutex<HubConfig>,
    state: Mutex<HubState>,
}

impl InProcessHub {
    /// An empty hub.
    pub fn new(config: HubConfig) -> InProcessHub {
        InProcessHub {
            config: Mutex::new(config),
            state: Mutex::new(HubState::default()),
        }
    }

    fn config(&self) -> HubConfig {
        *self.config.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn state(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells every local chat connection that `user`, whose connections are elsewhere
    /// (another daemon of a cluster), is now in `state`.
    pub fn announce_elsewhere(&self, user: &str, state: PresenceState) {
        // Connection ids start at 1: 0 is no local connection.
        self.state().announce(ConnId(0), user, state);
    }

    /// Hands a join or part that happened elsewhere to the local members of `channel`
    /// (none: nothing to do).
    pub fn channel_event_elsewhere(&self, channel: &str, event: ChatEvent) {
        if let Some(entry) = self.state().channels.get(channel) {
            let _ = entry.tx.send(Arc::new(Envelope {
                origin: None,
                event,
            }));
        }
    }

    /// Whether `user` has a chat connection here.
    pub fn is_connected(&self, user: &str) -> bool {
        self.state().users.contains_key(user)
    }

    /// Whether `user` is in `channel` here.
    pub fn is_member(&self, channel: &str, user: &str) -> bool {
        self.state()
            .channels
            .get(channel)
            .is_some_and(|c| c.members.contains_key(user))
    }
}

impl ChatBus for InProcessHub {
    fn reconfigure(&self, config: HubConfig) {
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = config;
    }

    fn connect(&self, conn: ConnId, user: &str, inbox: Box<dyn Deliver>) {
        let mut st = self.state();
        st.conns.insert(
            conn,
            ConnEntry {
                user: user.to_owned(),
                inbox,
                channels: HashSet::new(),
            },
        );
        let entry = st.users.entry(user.to_owned()).or_default();
        entry.conns.push(conn);
        if entry.conns.len() == 1 {
            st.announce(conn, user, PresenceState::Online);
        }
    }

    fn disconnect(&self, conn: ConnId) {
        let mut st = self.state();
        let Some(entry) = st.conns.remove(&conn) else {
            return;
        };
        for channel in &entry.channels {
            st.leave(conn, &entry.user, channel);
        }
        let last = match st.users.get_mut(&entry.user) {
            Some(u) => {
                u.conns.retain(|c| *c != conn);
                u.conns.is_empty()
            }
            None => false,
        };
        if last {
            st.users.remove(&entry.user);
            st.announce(conn, &entry.user, PresenceState::Offline);
        }
    }

    fn join(&self, conn: ConnId, channel: &str) -> Result<JoinedChannel, ChatError> {
        let mut st = self.state();
        let st = &mut *st;
        let Some(c) = st.conns.get_mut(&conn) else {
            return Err(ChatError::NotOpen);
        };
        let already = c.channels.contains(channel);
        if !already && c.channels.len() >= self.config().max_joined {
            return Err(ChatError::TooManyJoined {
                max: self.config().max_joined,
            });
        }
        if !st.channels.contains_key(channel) && st.channels.len() >= self.config().max_channels {
            return Err(ChatError::TooManyChannels {
                max: self.config().max_channels,
            });
        }
        let user = c.user.clone();
        let entry = st
            .channels
            .entry(channel.to_owned())
            .or_insert_with(|| ChannelEntry {
                tx: broadcast::channel(self.config().channel_buffer.max(1)).0,
                members: BTreeMap::new(),
            });
        if !already {
            c.channels.insert(channel.to_owned());
            let n = entry.members.entry(user.clone()).or_insert(0);
            *n += 1;
            if *n == 1 {
                let _ = entry.tx.send(Arc::new(Envelope {
                    origin: Some(conn),
                    event: ChatEvent::Joined {
                        channel: format!("#{channel}"),
                        user,
                    },
                }));
            }
        }
        // Subscribed after the announcement: the joiner has its answer instead.
        let receiver = entry.tx.subscribe();
        let members = entry.members.keys().cloned().collect::<Vec<_>>();
        let members = members.iter().map(|u| st.presence_of(u)).collect();
        Ok(JoinedChannel { receiver, members })
    }

    fn part(&self, conn: ConnId, channel: &str) -> Result<(), ChatError> {
        let mut st = self.state();
        let Some(c) = st.conns.get_mut(&conn) else {
            return Err(ChatError::NotOpen);
        };
        if !c.channels.remove(channel) {
            return Err(ChatError::NotMember(format!("#{channel}")));
        }
        let user = c.user.clone();
        st.leave(conn, &user, channel);
        Ok(())
    }

    fn publish(&self, origin: Option<ConnId>, message: &ChatMessage) {
        let st = self.state();
        let envelope = Arc::new(Envelope {
            origin,
            event: ChatEvent::Message(message.clone()),
        });
        if let Some(channel) = message.target.channel() {
            if let Some(entry) = st.channels.get(channel.as_str()) {
                // No receivers is not an error: the message is stored anyway.
                let _ = entry.tx.send(envelope);
            }
            return;
        }
        let Some(to) = message.target.user().map(UserName::as_str) else {
            return;
        };
        let parties = [to, message.from.as_str()];
        let parties = if to == message.from {
            &parties[..1]
        } else {
            &parties[..]
        };
        for user in parties {
            let Some(u) = st.users.get(*user) else {
                continue;
            };
            for id in &u.conns {
                if Some(*id) != origin
                    && let Some(c) = st.conns.get(id)
                {
                    c.inbox.deliver(envelope.clone());
                }
            }
        }
    }

    fn who(&self, channel: Option<&str>) -> Vec<Presence> {
        let st = self.state();
        match channel {
            Some(name) => st.channels.get(name).map_or_else(Vec::new, |c| {
                c.members.keys().map(|u| st.presence_of(u)).collect()
            }),
            None => st.users.keys().map(|u| st.presence_of(u)).collect(),
        }
    }

    fn channels(&self) -> Vec<ChannelInfo> {
        self.state()
            .channels
            .iter()
            .map(|(name, c)| ChannelInfo {
                name: format!("#{name}"),
                members: u32::try_from(c.members.len()).unwrap_or(u32::MAX),
            })
            .collect()
    }

    fn set_away(&self, conn: ConnId, away: bool) {
        let mut st = self.state();
        let Some(user) = st.conns.get(&conn).map(|c| c.user.clone()) else {
            return;
        };
        let Some(u) = st.users.get_mut(&user) else {
            return;
        };
        if u.away == away {
            return;
        }
        u.away = away;
        let state = if away {
            PresenceState::Away
        } else {
            PresenceState::Online
        };
        st.announce(conn, &user, state);
    }
}

#[cfg(test)]
mod tests;
