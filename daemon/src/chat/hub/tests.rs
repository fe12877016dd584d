use std::cell::Cell;
use std::ops::Deref;

use tokio::sync::broadcast::error::TryRecvError;
use xfer_proto::MessageBody;

use super::*;
use crate::chat::Inbox;

/// A hub, with inboxes made above it as [`Chat::connect`](crate::chat::Chat::connect)
/// makes them.
struct TestHub {
    hub: Arc<InProcessHub>,
    connection_buffer: usize,
    last_conn: Cell<u64>,
}

impl Deref for TestHub {
    type Target = InProcessHub;

    fn deref(&self) -> &InProcessHub {
        &self.hub
    }
}

impl TestHub {
    fn connect(&self, user: &str) -> Inbox {
        self.last_conn.set(self.last_conn.get() + 1);
        let id = ConnId(self.last_conn.get());
        let (inbox, sender) = Inbox::new(id, user, self.connection_buffer);
        self.hub.connect(id, user, Box::new(sender));
        inbox
    }
}

fn hub(connection_buffer: usize) -> TestHub {
    TestHub {
        hub: Arc::new(InProcessHub::new(HubConfig {
            channel_buffer: 4,
            connection_buffer,
            max_channels: 3,
            max_joined: 2,
        })),
        connection_buffer,
        last_conn: Cell::new(0),
    }
}

fn message(id: u64, from: &str, target: &str) -> ChatMessage {
    ChatMessage {
        id,
        time_unix_ms: 0,
        from: from.into(),
        target: xfer_proto::Target::parse(target).unwrap(),
        body: MessageBody::Text(format!("m{id}")),
    }
}

/// Everything queued in an inbox, as events.
fn drain(inbox: &mut Inbox) -> Vec<ChatEvent> {
    let mut v = Vec::new();
    while let Some(e) = inbox.try_recv() {
        v.push(e.event.clone());
    }
    v
}

fn presence(user: &str, state: PresenceState) -> ChatEvent {
    ChatEvent::Presence(Presence {
        user: user.into(),
        state,
    })
}

#[test]
fn channel_members_get_messages_joins_and_parts() {
    let hub = hub(16);
    let alice = hub.connect("alice");
    let bob = hub.connect("bob");
    let mut a = hub.join(alice.id, "lab").unwrap();
    let b = hub.join(bob.id, "lab").unwrap();
    assert_eq!(
        b.members
            .iter()
            .map(|p| p.user.as_str())
            .collect::<Vec<_>>(),
        ["alice", "bob"]
    );
    let joined = a.receiver.try_recv().unwrap();
    assert_eq!(joined.origin, Some(bob.id));
    assert!(
        matches!(&joined.event, ChatEvent::Joined { channel, user } if channel == "#lab" && user == "bob")
    );

    hub.publish(Some(bob.id), &message(7, "bob", "#lab"));
    let got = a.receiver.try_recv().unwrap();
    assert!(matches!(&got.event, ChatEvent::Message(m) if m.id == 7));
    assert_eq!(
        got.origin,
        Some(bob.id),
        "the sender's session skips its own"
    );

    hub.part(bob.id, "lab").unwrap();
    let parted = a.receiver.try_recv().unwrap();
    assert!(matches!(&parted.event, ChatEvent::Parted { user, .. } if user == "bob"));
    assert!(matches!(
        hub.part(bob.id, "lab"),
        Err(ChatError::NotMember(c)) if c == "#lab"
    ));
    assert_eq!(hub.who(Some("lab")).len(), 1);
    assert_eq!(
        hub.channels(),
        [ChannelInfo {
            name: "#lab".into(),
            members: 1
        }]
    );
}

#[test]
fn a_slow_channel_reader_lags_and_nobody_waits() {
    let hub = hub(16);
    let alice = hub.connect("alice");
    let mut a = hub.join(alice.id, "lab").unwrap();
    for id in 1..=10 {
        hub.publish(None, &message(id, "bob", "#lab"));
    }
    assert!(matches!(
        a.receiver.try_recv(),
        Err(TryRecvError::Lagged(6))
    ));
    let next = a.receiver.try_recv().unwrap();
    assert!(matches!(&next.event, ChatEvent::Message(m) if m.id == 7));
}

#[test]
fn direct_messages_reach_every_connection_of_both_parties_but_the_origin() {
    let hub = hub(16);
    let mut alice1 = hub.connect("alice");
    let mut alice2 = hub.connect("alice");
    let mut bob = hub.connect("bob");
    let mut carol = hub.connect("carol");
    drain(&mut alice1);
    drain(&mut alice2);
    drain(&mut bob);
    drain(&mut carol);
    hub.publish(Some(alice1.id), &message(9, "alice", "@bob"));
    assert!(drain(&mut alice1).is_empty(), "origin skipped");
    assert_eq!(drain(&mut alice2).len(), 1, "the sender's other connection");
    assert_eq!(drain(&mut bob).len(), 1);
    assert!(drain(&mut carol).is_empty());
    // To oneself: once per connection.
    hub.publish(None, &message(10, "bob", "@bob"));
    assert_eq!(drain(&mut bob).len(), 1);
}

#[test]
fn a_full_inbox_drops_the_oldest_and_counts_them_by_conversation() {
    let hub = hub(2);
    let mut bob = hub.connect("bob");
    hub.publish(None, &message(1, "bob", "@carol"));
    for id in 2..=6 {
        hub.publish(None, &message(id, "alice", "@bob"));
    }
    let kept: Vec<u64> = drain(&mut bob)
        .into_iter()
        .map(|e| match e {
            ChatEvent::Message(m) => m.id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(kept, [5, 6], "the newest are kept");
    assert_eq!(
        bob.take_drops(),
        [
            (xfer_proto::Target::parse("@alice").unwrap(), 3),
            (xfer_proto::Target::parse("@carol").unwrap(), 1)
        ]
    );
    assert!(bob.take_drops().is_empty(), "taken once");
}

#[test]
fn presence_goes_to_everyone_and_follows_the_last_connection() {
    let hub = hub(16);
    let mut alice = hub.connect("alice");
    let mut bob1 = hub.connect("bob");
    assert_eq!(drain(&mut alice), [presence("bob", PresenceState::Online)]);
    let mut bob2 = hub.connect("bob");
    assert!(drain(&mut alice).is_empty(), "bob was online already");
    hub.join(bob1.id, "lab").unwrap();
    hub.join(bob2.id, "lab").unwrap();
    hub.set_away(bob2.id, true);
    assert_eq!(drain(&mut alice), [presence("bob", PresenceState::Away)]);
    assert_eq!(drain(&mut bob1), [presence("bob", PresenceState::Away)]);
    assert_eq!(
        hub.who(None)[1],
        Presence {
            user: "bob".into(),
            state: PresenceState::Away
        }
    );
    let a = hub.join(alice.id, "lab").unwrap();
    let mut rx = a.receiver;
    // Dropping an inbox that knows its bus disconnects it.
    bob2.disconnect_on_drop(hub.hub.clone());
    drop(bob2);
    assert!(
        drain(&mut alice).is_empty(),
        "one connection of bob remains"
    );
    assert!(rx.try_recv().is_err(), "bob is still in #lab");
    hub.disconnect(bob1.id);
    assert_eq!(drain(&mut alice), [presence("bob", PresenceState::Offline)]);
    assert!(
        matches!(&rx.try_recv().unwrap().event, ChatEvent::Parted { user, .. } if user == "bob")
    );
    assert_eq!(hub.who(None).len(), 1);
    drop(bob1);
}

#[test]
fn limits_on_channels() {
    let hub = hub(16);
    let alice = hub.connect("alice");
    let bob = hub.connect("bob");
    hub.join(alice.id, "a").unwrap();
    hub.join(alice.id, "b").unwrap();
    hub.join(alice.id, "a").unwrap(); // again: not a new one
    assert!(matches!(
        hub.join(alice.id, "c"),
        Err(ChatError::TooManyJoined { max: 2 })
    ));
    hub.join(bob.id, "c").unwrap();
    assert!(matches!(
        hub.join(bob.id, "d"),
        Err(ChatError::TooManyChannels { max: 3 })
    ));
    hub.part(alice.id, "a").unwrap();
    hub.join(bob.id, "d").unwrap();
    assert!(matches!(
        hub.join(ConnId(999), "a"),
        Err(ChatError::NotOpen)
    ));
}
