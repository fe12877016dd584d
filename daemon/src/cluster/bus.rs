//! [`NatsBus`]: the [`ChatBus`] of several daemons on one NATS.
//!
//! Each daemon keeps its own connections in an [`InProcessHub`], which delivers to them
//! (channel broadcasts, inboxes) exactly as a daemon alone does. What crosses daemons:
//! - **messages** and file notices come from the chat stream through the feed
//!   (`feed.rs`), which hands them to the hub in id order; [`ChatBus::publish`] has
//!   nothing left to do;
//! - **presence and membership** are keys in the bucket `xfer_presence`:
//!   `presence.<user>.<node>` (`online`/`away`) and `members.<channel>.<user>.<node>`,
//!   written by this daemon for its own connections and refreshed every
//!   [`REFRESH`]; the bucket forgets keys after [`TTL`], so a daemon that died
//!   leaves no ghosts for long. A watcher of the bucket keeps a copy of the other
//!   daemons' keys: `who` and `channels` answer from it, and its changes become
//!   presence, join and part events for local connections.
//!
//! Methods never wait on NATS: they update the hub and wake the writer task.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use futures_util::StreamExt as _;
use tokio::sync::Notify;
use xfer_proto::{ChannelInfo, ChatEvent, ChatMessage, Presence, PresenceState};

use super::{Cluster, supervise, token, untoken};
use crate::chat::{ChatBus, ChatError, ConnId, Deliver, HubConfig, InProcessHub, JoinedChannel};

/// The bucket.
pub const BUCKET: &str = "xfer_presence";
/// How long a key lives without being refreshed.
pub const TTL: Duration = Duration::from_secs(30);
/// How often a daemon refreshes its keys.
pub const REFRESH: Duration = Duration::from_secs(10);

/// The other daemons' keys, as last seen, and when.
#[derive(Default)]
struct Remote {
    keys: HashMap<String, (String, Instant)>,
}

/// A key of the bucket, parsed.
enum Key {
    Presence { user: String },
    Member { channel: String, user: String },
}

fn parse_key(key: &str) -> Option<(Key, &str)> {
    let parts: Vec<&str> = key.split('.').collect();
    match parts.as_slice() {
        ["presence", user, node] => Some((
            Key::Presence {
                user: untoken(user),
            },
            node,
        )),
        ["members", channel, user, node] => Some((
            Key::Member {
                channel: untoken(channel),
                user: untoken(user),
            },
            node,
        )),
        _ => None,
    }
}

impl Remote {
    fn live(&self) -> impl Iterator<Item = (Key, &str)> {
        self.keys
            .iter()
            .filter(|(_, (_, at))| at.elapsed() < TTL)
            .filter_map(|(k, (v, _))| parse_key(k).map(|(key, _)| (key, v.as_str())))
    }

    /// Users with a connection on another daemon, and whether they are away
    /// everywhere.
    fn users(&self) -> BTreeMap<String, PresenceState> {
        let mut users = BTreeMap::new();
        for (key, value) in self.live() {
            if let Key::Presence { user } = key {
                let state = if value == "away" {
                    PresenceState::Away
                } else {
                    PresenceState::Online
                };
                let e = users.entry(user).or_insert(state);
                if state == PresenceState::Online {
                    *e = state;
                }
            }
        }
        users
    }

    /// Channels with members on other daemons, and those members.
    fn channels(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut channels: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (key, _) in self.live() {
            if let Key::Member { channel, user } = key {
                channels.entry(channel).or_default().insert(user);
            }
        }
        channels
    }
}

/// The bus of several daemons (see the module doc).
pub struct NatsBus {
    hub: Arc<InProcessHub>,
    cluster: Arc<Cluster>,
    remote: Arc<Mutex<Remote>>,
    changed: Arc<Notify>,
}

impl NatsBus {
    /// Opens the presence bucket and starts the writer and the watcher.
    ///
    /// # Errors
    /// When JetStream cannot be reached or refuses.
    pub async fn open(cluster: &Arc<Cluster>, hub: Arc<InProcessHub>) -> anyhow::Result<NatsBus> {
        let kv = cluster.bucket(BUCKET, TTL, 1).await?;
        let bus = NatsBus {
            hub,
            cluster: cluster.clone(),
            remote: Arc::default(),
            changed: Arc::new(Notify::new()),
        };
        {
            let (kv, hub, changed) = (kv.clone(), bus.hub.clone(), bus.changed.clone());
            supervise(cluster, "chat presence writer", move |c| {
                write_keys(c, kv.clone(), hub.clone(), changed.clone())
            });
        }
        {
            let (hub, remote) = (bus.hub.clone(), bus.remote.clone());
            supervise(cluster, "chat presence watcher", move |c| {
                watch_keys(c, kv.clone(), hub.clone(), remote.clone())
            });
        }
        Ok(bus)
    }

    fn remote(&self) -> std::sync::MutexGuard<'_, Remote> {
        self.remote.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn changed(&self) {
        self.changed.notify_one();
    }
}

/// This daemon's keys, from its hub.
fn own_keys(hub: &InProcessHub, node: &str) -> HashMap<String, String> {
    let mut keys = HashMap::new();
    for p in hub.who(None) {
        let value = if p.state == PresenceState::Away {
            "away"
        } else {
            "online"
        };
        keys.insert(
            format!("presence.{}.{node}", token(&p.user)),
            value.to_owned(),
        );
    }
    for c in hub.channels() {
        let name = c.name.trim_start_matches('#');
        for p in hub.who(Some(name)) {
            keys.insert(
                format!("members.{}.{}.{node}", token(name), token(&p.user)),
                "1".to_owned(),
            );
        }
    }
    keys
}

/// Writes this daemon's keys whenever they change, and all of them every [`REFRESH`].
async fn write_keys(
    cluster: Arc<Cluster>,
    kv: kv::Store,
    hub: Arc<InProcessHub>,
    changed: Arc<Notify>,
) -> anyhow::Result<()> {
    // Everything is written at (re)start: a new NATS, or keys that expired meanwhile.
    let mut written: HashMap<String, String> = HashMap::new();
    let mut refresh = tokio::time::interval(REFRESH);
    loop {
        let all = tokio::select! {
            _ = changed.notified() => false,
            _ = refresh.tick() => true,
        };
        let wanted = own_keys(&hub, cluster.node());
        for (key, value) in &wanted {
            if all || written.get(key) != Some(value) {
                kv.put(key, value.clone().into()).await?;
            }
        }
        for key in written.keys() {
            if !wanted.contains_key(key) {
                kv.delete(key).await?;
            }
        }
        written = wanted;
    }
}

/// Keeps the copy of the other daemons' keys, turning their changes into events for
/// local connections.
async fn watch_keys(
    cluster: Arc<Cluster>,
    kv: kv::Store,
    hub: Arc<InProcessHub>,
    remote: Arc<Mutex<Remote>>,
) -> anyhow::Result<()> {
    let mut watch = kv.watch_all().await?;
    let lock = || remote.lock().unwrap_or_else(|p| p.into_inner());
    // Rebuilt from the bucket's current keys, which the watch delivers first.
    lock().keys.clear();
    while let Some(entry) = watch.next().await {
        let entry = entry?;
        let Some((key, node)) = parse_key(&entry.key) else {
            continue;
        };
        if node == cluster.node() {
            continue;
        }
        let (before, after) = {
            let mut r = lock();
            let before = view(&r, &key);
            match entry.operation {
                kv::Operation::Put => {
                    let value = String::from_utf8_lossy(&entry.value).into_owned();
                    r.keys.insert(entry.key.clone(), (value, Instant::now()));
                }
                kv::Operation::Delete | kv::Operation::Purge => {
                    r.keys.remove(&entry.key);
                }
            }
            (before, view(&r, &key))
        };
        if before == after {
            continue;
        }
        match key {
            Key::Presence { user } if !hub.is_connected(&user) => {
                hub.announce_elsewhere(&user, after.unwrap_or(PresenceState::Offline));
            }
            Key::Member { channel, user } if !hub.is_member(&channel, &user) => {
                let name = format!("#{channel}");
                let event = if after.is_some() {
                    ChatEvent::Joined {
                        channel: name,
                        user,
                    }
                } else {
                    ChatEvent::Parted {
                        channel: name,
                        user,
                    }
                };
                hub.channel_event_elsewhere(&channel, event);
            }
            _ => {}
        }
    }
    Ok(())
}

/// What the other daemons say of the user (and channel) a key is about: their
/// presence, or `Online` for membership; `None` for absent.
fn view(r: &Remote, key: &Key) -> Option<PresenceState> {
    match key {
        Key::Presence { user } => r.users().get(user).copied(),
        Key::Member { channel, user } => r
            .channels()
            .get(channel)
            .is_some_and(|m| m.contains(user))
            .then_some(PresenceState::Online),
    }
}

impl ChatBus for NatsBus {
    fn reconfigure(&self, config: HubConfig) {
        self.hub.reconfigure(config);
    }

    fn check(&self) -> Result<(), ChatError> {
        self.cluster
            .check()
            .map_err(|e| ChatError::Unavailable(e.to_string()))
    }

    fn connect(&self, conn: ConnId, user: &str, inbox: Box<dyn Deliver>) {
        self.hub.connect(conn, user, inbox);
        self.changed();
    }

    fn disconnect(&self, conn: ConnId) {
        self.hub.disconnect(conn);
        self.changed();
    }

    fn set_away(&self, conn: ConnId, away: bool) {
        self.hub.set_away(conn, away);
        self.changed();
    }

    fn who(&self, channel: Option<&str>) -> Vec<Presence> {
        let remote = self.remote();
        let users = remote.users();
        let mut all: BTreeMap<String, PresenceState> = BTreeMap::new();
        match channel {
            Some(name) => {
                let members = remote.channels().remove(name).unwrap_or_default();
                for user in members {
                    let state = users.get(&user).copied().unwrap_or(PresenceState::Online);
                    all.insert(user, state);
                }
            }
            None => all.extend(users),
        }
        drop(remote);
        for p in self.hub.who(channel) {
            all.insert(p.user, p.state);
        }
        all.into_iter()
            .map(|(user, state)| Presence { user, state })
            .collect()
    }

    fn channels(&self) -> Vec<ChannelInfo> {
        let mut channels = self.remote().channels();
        for c in self.hub.channels() {
            let name = c.name.trim_start_matches('#').to_owned();
            let members = channels.entry(name.clone()).or_default();
            members.extend(self.hub.who(Some(&name)).into_iter().map(|p| p.user));
        }
        channels
            .into_iter()
            .map(|(name, members)| ChannelInfo {
                name: format!("#{name}"),
                members: u32::try_from(members.len()).unwrap_or(u32::MAX),
            })
            .collect()
    }

    fn join(&self, conn: ConnId, channel: &str) -> Result<JoinedChannel, ChatError> {
        let mut joined = self.hub.join(conn, channel)?;
        self.changed();
        let local: BTreeSet<String> = joined.members.iter().map(|p| p.user.clone()).collect();
        let remote = self.remote();
        let users = remote.users();
        for user in remote.channels().remove(channel).unwrap_or_default() {
            if !local.contains(&user) {
                let state = users.get(&user).copied().unwrap_or(PresenceState::Online);
                joined.members.push(Presence { user, state });
            }
        }
        joined.members.sort_by(|a, b| a.user.cmp(&b.user));
        Ok(joined)
    }

    fn part(&self, conn: ConnId, channel: &str) -> Result<(), ChatError> {
        self.hub.part(conn, channel)?;
        self.changed();
        Ok(())
    }

    fn publish(&self, _origin: Option<ConnId>, _message: &ChatMessage) {
        // Stored messages reach every daemon's connections through the feed.
    }
}
