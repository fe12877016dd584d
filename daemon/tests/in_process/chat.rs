//! In-process chat: `xferd::serve` on 127.0.0.1:0 with a temporary data directory,
//! driven by the test kit's raw protocol clients over real TLS.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use xfer_e2e::raw::chat::text_of;
use xfer_e2e::{assert_error, random_bytes};
use xfer_proto::{
    CHUNK_SIZE, ChatEvent, Digest, EntryKind, ErrorCode, MAX_MESSAGE_LEN, MessageBody,
    PresenceState, Request, Response,
};

use super::server::{self, Server};

/// Generous: the machine is shared with other builds.
const DEADLINE: Duration = Duration::from_secs(60);

async fn start(tweak: impl FnOnce(&mut xferd::Config)) -> Server {
    server::start(&["alice", "bob", "carol"], tweak).await
}

#[tokio::test]
async fn a_message_reaches_the_other_members_but_not_the_sender() {
    let server = start(|_| {}).await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    alice.open(None).await;
    bob.open(None).await;
    alice.join("#lab", 0).await;
    match bob
        .call(Request::Join {
            channel: "#LAB".parse().unwrap(),
            history: 0,
            after: None,
        })
        .await
    {
        Response::Joined {
            channel, members, ..
        } => {
            assert_eq!(channel, "#lab", "names are folded to lowercase");
            let names: Vec<_> = members.iter().map(|p| p.user.as_str()).collect();
            assert_eq!(names, ["alice", "bob"]);
        }
        other => panic!("{other:?}"),
    }
    let id = alice.say("#lab", "hello \u{1b}[31mbob").await;
    let m = bob.message().await;
    assert_eq!(
        (m.id, m.from.as_str(), m.target.to_string().as_str()),
        (id, "alice", "#lab")
    );
    assert_eq!(
        text_of(&m),
        "hello \u{1b}[31mbob",
        "control characters arrive as data"
    );
    let seen = alice.events_so_far().await;
    assert!(
        !seen.iter().any(|e| matches!(e, ChatEvent::Message(_))),
        "no echo to the sender: {seen:?}"
    );
    assert!(seen.contains(&ChatEvent::Joined {
        channel: "#lab".parse().unwrap(),
        user: "bob".into()
    }));

    // A script says one line without ChatOpen or membership.
    let mut script = server.login("carol").await;
    let id2 = script.say("#lab", "from a script").await;
    assert!(id2 > id);
    assert_eq!(bob.message().await.id, id2);
    assert_eq!(alice.message().await.id, id2);

    // A direct message reaches the recipient and the sender's other chat connections.
    let id3 = script.say("@bob", "psst").await;
    let m = bob.message().await;
    assert_eq!((m.id, m.target.to_string().as_str()), (id3, "@bob"));
    let mut carol = server.login("carol").await;
    carol.open(Some(id2)).await;
    assert_eq!(
        carol.message().await.id,
        id3,
        "after: replays both directions"
    );

    bob.call(Request::Part {
        channel: "#lab".parse().unwrap(),
    })
    .await;
    let parted = ChatEvent::Parted {
        channel: "#lab".parse().unwrap(),
        user: "bob".into(),
    };
    while alice.event().await != parted {}
    server.shutdown.cancel();
}

#[tokio::test]
async fn history_survives_a_restart_and_join_replays_it() {
    let server = start(|_| {}).await;
    let mut alice = server.login("alice").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(alice.say("#lab", &format!("m{i}")).await);
    }
    let dm = alice.say("@bob", "private").await;
    let server = server.restart().await;

    let mut bob = server.login("bob").await;
    let Response::History { target, messages } = bob
        .call(Request::History {
            target: "#lab".parse().unwrap(),
            count: 3,
            before: None,
        })
        .await
    else {
        panic!("history refused")
    };
    assert_eq!(target, "#lab");
    assert_eq!(
        messages.iter().map(text_of).collect::<Vec<_>>(),
        ["m2", "m3", "m4"]
    );
    assert_eq!(messages.iter().map(|m| m.id).collect::<Vec<_>>(), ids[2..]);
    let Response::History { messages, .. } = bob
        .call(Request::History {
            target: "#lab".parse().unwrap(),
            count: 200,
            before: Some(ids[2]),
        })
        .await
    else {
        panic!()
    };
    assert_eq!(
        messages.iter().map(text_of).collect::<Vec<_>>(),
        ["m0", "m1"]
    );
    let Response::History { messages, .. } = bob
        .call(Request::History {
            target: "@alice".parse().unwrap(),
            count: 10,
            before: None,
        })
        .await
    else {
        panic!()
    };
    assert_eq!(messages.iter().map(|m| m.id).collect::<Vec<_>>(), [dm]);
    let Response::History { messages, .. } = server
        .login("carol")
        .await
        .call(Request::History {
            target: "@alice".parse().unwrap(),
            count: 10,
            before: None,
        })
        .await
    else {
        panic!()
    };
    assert!(messages.is_empty(), "carol sees only her own conversations");

    bob.open(None).await;
    let replayed = bob.join("#lab", 2).await;
    assert_eq!(
        replayed.iter().map(text_of).collect::<Vec<_>>(),
        ["m3", "m4"]
    );
    let Response::Joined { history, .. } = bob
        .call(Request::Join {
            channel: "#lab".parse().unwrap(),
            history: 0,
            after: Some(ids[3]),
        })
        .await
    else {
        panic!()
    };
    assert_eq!(history.iter().map(text_of).collect::<Vec<_>>(), ["m4"]);
    let next = alice_after_restart(&server).await;
    assert!(next > dm, "ids keep increasing across a restart");
    server.shutdown.cancel();
}

async fn alice_after_restart(server: &Server) -> u64 {
    server.login("alice").await.say("#lab", "again").await
}

#[tokio::test]
async fn an_offline_direct_message_is_delivered_once_at_next_chat_open() {
    let server = start(|_| {}).await;
    let mut alice = server.login("alice").await;
    let id = alice.say("@bob", "while you were out").await;
    let ch = alice.say("#lab", "not a direct message").await;

    let mut bob = server.login("bob").await;
    bob.open(None).await;
    let m = bob.message().await;
    assert_eq!((m.id, text_of(&m)), (id, "while you were out"));
    assert!(bob.events_so_far().await.is_empty(), "nothing else: {ch}");
    drop(bob);

    let mut bob = server.login("bob").await;
    bob.open(None).await;
    assert!(
        bob.events_so_far().await.is_empty(),
        "delivered once, not again"
    );
    let mut again = server.login("bob").await;
    again.open(Some(0)).await;
    assert_eq!(
        again.message().await.id,
        id,
        "with after: replayed on request"
    );
    drop((bob, again));

    // The marker survives a restart.
    let id2 = alice.say("@bob", "second").await;
    drop(alice);
    let server = server.restart().await;
    let mut bob = server.login("bob").await;
    bob.open(None).await;
    let m = bob.message().await;
    assert_eq!(m.id, id2);
    assert!(bob.events_so_far().await.is_empty());
    server.shutdown.cancel();
}

#[tokio::test]
async fn a_stalled_reader_delays_nobody_and_learns_what_it_missed() {
    let server = start(|c| {
        c.chat.channel_buffer = 64;
        c.chat.messages_per_sec = 1_000_000;
        c.chat.message_burst = 1_000_000;
    })
    .await;
    // Never reads: its session blocks on the socket once the kernel buffers are full.
    let mut stalled = server.login_with("carol", Some(16 * 1024)).await;
    stalled.open(None).await;
    stalled.join("#room", 0).await;
    let mut healthy = server.login("bob").await;
    healthy.open(None).await;
    healthy.join("#room", 0).await;
    let reader = tokio::spawn(async move {
        loop {
            if let ChatEvent::Message(m) = healthy.event().await
                && text_of(&m) == "last"
            {
                return m.id;
            }
        }
    });

    // ~14 MB: far more than the stalled connection's buffers hold.
    let mut sender = server.login("alice").await;
    let filler = "x".repeat(3500);
    for _ in 0..4000 {
        sender.say("#room", &filler).await;
    }
    let last = sender.say("#room", "last").await;
    let got = tokio::time::timeout(DEADLINE, reader)
        .await
        .expect("the healthy member is not held up by the stalled one")
        .unwrap();
    assert_eq!(got, last);

    // Now the stalled one reads: the room went on without it, and it is told so.
    let mut missed = 0;
    let mut previous = 0;
    loop {
        match stalled.event().await {
            ChatEvent::Missed { target, count } => {
                assert_eq!(target, "#room");
                missed += count;
            }
            ChatEvent::Message(m) => {
                assert!(m.id > previous, "in order");
                previous = m.id;
                if m.id == last {
                    break;
                }
            }
            _ => {}
        }
    }
    assert!(missed > 0, "a slow reader is told how much it missed");
    server.shutdown.cancel();
}

#[tokio::test]
async fn a_stalled_reader_of_direct_messages_is_told_what_it_missed() {
    let server = start(|c| {
        c.chat.connection_buffer = 16;
        c.chat.messages_per_sec = 1_000_000;
        c.chat.message_burst = 1_000_000;
        c.chat.replay_max = 10_000;
    })
    .await;
    let mut bob = server.login_with("bob", Some(16 * 1024)).await;
    bob.open(None).await;
    let mut alice = server.login("alice").await;
    let filler = "y".repeat(3500);
    let mut sent = Vec::new();
    for _ in 0..4000 {
        sent.push(alice.say("@bob", &filler).await);
    }
    let last = alice.say("@bob", "last").await;
    sent.push(last);
    let mut missed = 0;
    let mut received = std::collections::HashSet::new();
    loop {
        match bob.event().await {
            ChatEvent::Missed { target, count } => {
                assert_eq!(target, "@alice", "counted against the conversation");
                missed += count;
            }
            ChatEvent::Message(m) => {
                received.insert(m.id);
                if m.id == last {
                    break;
                }
            }
            _ => {}
        }
    }
    assert!(missed > 0);
    let lost: Vec<u64> = sent
        .iter()
        .copied()
        .filter(|id| !received.contains(id))
        .collect();
    assert_eq!(lost.len() as u64, missed, "every lost message was counted");
    // History has what the queue could not hold.
    let Response::History { messages, .. } = bob
        .call(Request::History {
            target: "@alice".parse().unwrap(),
            count: 200,
            before: None,
        })
        .await
    else {
        panic!()
    };
    assert_eq!(messages.len(), 200);

    // The delivery marker did not jump over what the queue dropped: bob's next chat
    // connection replays it (with whatever followed, which may come twice).
    drop(bob);
    let mut bob = server.login("bob").await;
    bob.open(None).await;
    let replayed: std::collections::HashSet<u64> = bob
        .events_so_far()
        .await
        .into_iter()
        .map(|e| match e {
            ChatEvent::Message(m) => m.id,
            other => panic!("only messages expected, got {other:?}"),
        })
        .collect();
    assert!(
        lost.iter().all(|id| replayed.contains(id)),
        "{} lost, {} replayed",
        lost.len(),
        replayed.len()
    );
    server.shutdown.cancel();
}

#[tokio::test]
async fn the_replay_keeps_the_newest_across_conversations_and_counts_the_rest() {
    let users = ["bob", "u1", "u2", "u3", "u4", "u5"];
    let server = server::start(&users, |c| c.chat.replay_max = 4).await;
    let mut senders = Vec::new();
    for u in &users[1..] {
        senders.push(server.login(u).await);
    }
    let mut ids = Vec::new();
    for round in 0..3 {
        for s in &mut senders {
            ids.push(s.say("@bob", &format!("round {round}")).await);
        }
    }
    let mut bob = server.login("bob").await;
    bob.open(None).await;
    let events = bob.events_so_far().await;
    let mut missed = std::collections::BTreeMap::new();
    let mut got = Vec::new();
    for e in events {
        match e {
            ChatEvent::Missed { target, count } => {
                *missed.entry(target.to_string()).or_insert(0) += count;
            }
            ChatEvent::Message(m) => got.push(m.id),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, ids[ids.len() - 4..], "the newest 4, oldest first");
    // u1 lost all three (its newest is the 5th newest); u2..u5 two each.
    let expected: std::collections::BTreeMap<String, u64> = [
        ("@u1".to_string(), 3),
        ("@u2".to_string(), 2),
        ("@u3".to_string(), 2),
        ("@u4".to_string(), 2),
        ("@u5".to_string(), 2),
    ]
    .into();
    assert_eq!(missed, expected);
    server.shutdown.cancel();
}

#[tokio::test]
async fn chat_open_after_an_id_acknowledges_what_lies_below_it() {
    let server = start(|_| {}).await;
    let mut alice = server.login("alice").await;
    alice.say("@bob", "one").await;
    let two = alice.say("@bob", "two").await;
    let mut bob = server.login("bob").await;
    bob.open(Some(two)).await;
    assert!(bob.events_so_far().await.is_empty());
    drop(bob);
    let mut bob = server.login("bob").await;
    bob.open(None).await;
    assert!(
        bob.events_so_far().await.is_empty(),
        "the client said it had everything up to {two}"
    );
    let three = alice.say("@bob", "three").await;
    assert_eq!(bob.message().await.id, three);
    server.shutdown.cancel();
}

#[tokio::test]
async fn the_rate_limit_refuses_then_recovers_and_the_connection_stays() {
    let server = start(|c| {
        c.chat.messages_per_sec = 1;
        c.chat.message_burst = 3;
    })
    .await;
    let mut alice = server.login("alice").await;
    for i in 0..3 {
        alice.say("#lab", &format!("{i}")).await;
    }
    assert_error(
        alice.try_say("#lab", "one too many").await,
        ErrorCode::RateLimited,
        "too many chat requests",
    );
    assert_eq!(alice.call(Request::Ping).await, Response::Pong);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    alice.say("#lab", "after a pause").await;

    // Reading history and opening chat take from the same bucket: a loop of them
    // cannot make the server walk logs without limit.
    let history = || Request::History {
        target: "#lab".parse().unwrap(),
        count: 200,
        before: Some(1),
    };
    let mut bob = server.login("bob").await;
    for _ in 0..3 {
        let r = bob.call(history()).await;
        assert!(matches!(r, Response::History { .. }), "{r:?}");
    }
    assert_error(
        bob.call(history()).await,
        ErrorCode::RateLimited,
        "too many chat requests",
    );
    assert_error(
        bob.call(Request::ChatOpen { after: None }).await,
        ErrorCode::RateLimited,
        "too many chat requests",
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    bob.open(None).await;
    server.shutdown.cancel();
}

#[tokio::test]
async fn bad_targets_texts_and_states_are_refused_clearly() {
    let server = start(|_| {}).await;
    // Since protocol 3 a target is typed: one that breaks the name rules cannot be
    // built (`Target::parse` says why), and hand-encoded on the wire it is a malformed
    // message, refused before any handler runs.
    for (variant, fields) in [
        (18, [&[0, 9][..], b"no spaces", &[1, b'x']].concat()), // Say #no spaces
        (18, [&[1, 6][..], b"../bob", &[1, b'x']].concat()),    // Say @../bob
        (16, [&[3][..], b"@ob", &[0, 0]].concat()),             // Join "@ob"
    ] {
        let mut raw = server.login("alice").await;
        let mut frame = ((fields.len() + 2) as u32).to_be_bytes().to_vec();
        frame.extend([0x01, variant]);
        frame.extend(fields);
        let stream = raw.framed.get_mut();
        stream.write_all(&frame).await.unwrap();
        stream.flush().await.unwrap();
        assert_error(raw.response().await, ErrorCode::BadRequest, "undecodable");
    }
    let mut alice = server.login("alice").await;
    assert_error(
        alice.try_say("@nobody", "x").await,
        ErrorCode::NotFound,
        "no user nobody",
    );
    assert_error(
        alice.try_say("#lab", "").await,
        ErrorCode::BadRequest,
        "empty",
    );
    assert_error(
        alice
            .try_say("#lab", &"y".repeat(MAX_MESSAGE_LEN + 1))
            .await,
        ErrorCode::TooLarge,
        "4000",
    );
    assert_error(
        alice.try_say("#lab", "a\0b").await,
        ErrorCode::BadRequest,
        "NUL",
    );
    alice.say("#lab", &"é".repeat(MAX_MESSAGE_LEN / 2)).await;
    let join = Request::Join {
        channel: "#lab".parse().unwrap(),
        history: 0,
        after: None,
    };
    assert_error(
        alice.call(join.clone()).await,
        ErrorCode::BadRequest,
        "open chat first",
    );
    assert_error(
        alice.call(Request::SetAway { away: true }).await,
        ErrorCode::BadRequest,
        "open chat first",
    );
    alice.open(None).await;
    assert_error(
        alice.call(Request::ChatOpen { after: None }).await,
        ErrorCode::BadRequest,
        "already open",
    );
    assert_error(
        alice
            .call(Request::Part {
                channel: "#elsewhere".parse().unwrap(),
            })
            .await,
        ErrorCode::NotFound,
        "not in #elsewhere",
    );
    assert_error(
        alice
            .call(Request::History {
                target: "@nobody".parse().unwrap(),
                count: 5,
                before: None,
            })
            .await,
        ErrorCode::NotFound,
        "no user nobody",
    );
    // Still usable after every refusal.
    alice.join("#lab", 1).await;
    let mut anon_history = server.login("bob").await;
    assert!(matches!(
        anon_history
            .call(Request::Who { channel: None })
            .await,
        Response::Who { users } if users.iter().any(|p| p.user == "alice")
    ));
    server.shutdown.cancel();
}

#[tokio::test]
async fn presence_who_and_channels_follow_connections() {
    let server = start(|_| {}).await;
    let mut alice = server.login("alice").await;
    alice.open(None).await;
    alice.join("#lab", 0).await;
    let mut bob = server.login("bob").await;
    bob.open(None).await;
    bob.join("#lab", 0).await;
    bob.join("#other", 0).await;
    assert_eq!(
        alice.event().await,
        ChatEvent::Presence(xfer_proto::Presence {
            user: "bob".into(),
            state: PresenceState::Online
        })
    );
    assert_eq!(
        bob.call(Request::SetAway { away: true }).await,
        Response::Ok
    );
    let Response::Who { users } = alice
        .call(Request::Who {
            channel: Some("#lab".parse().unwrap()),
        })
        .await
    else {
        panic!()
    };
    let states: Vec<_> = users.iter().map(|p| (p.user.as_str(), p.state)).collect();
    assert_eq!(
        states,
        [
            ("alice", PresenceState::Online),
            ("bob", PresenceState::Away)
        ]
    );
    let Response::Channels { channels } = alice.call(Request::Channels).await else {
        panic!()
    };
    let listed: Vec<_> = channels
        .iter()
        .map(|c| (c.name.as_str(), c.members))
        .collect();
    assert_eq!(listed, [("#lab", 2), ("#other", 1)]);

    drop(bob);
    // Both arrive, in either order: presence by the inbox, the part by the channel.
    let mut expected = vec![
        ChatEvent::Presence(xfer_proto::Presence {
            user: "bob".into(),
            state: PresenceState::Offline,
        }),
        ChatEvent::Parted {
            channel: "#lab".parse().unwrap(),
            user: "bob".into(),
        },
    ];
    while !expected.is_empty() {
        let e = alice.event().await;
        expected.retain(|x| *x != e);
    }
    let Response::Channels { channels } = alice.call(Request::Channels).await else {
        panic!()
    };
    assert_eq!(channels.len(), 1, "an empty channel is gone: {channels:?}");
    server.shutdown.cancel();
}

// ---------------------------------------------------------------------------------------
// Files handed to people.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_sent_file_lands_in_the_inbox_with_a_notice_and_resumes() {
    let server = start(|_| {}).await;
    let payload = random_bytes(3 * CHUNK_SIZE + 123, 1);
    let mut alice = server.login("alice").await;
    assert_error(
        alice.send_begin("nobody", "f.bin", &payload).await,
        ErrorCode::NotFound,
        "no user nobody",
    );
    assert_error(
        alice.send_begin("../bob", "f.bin", &payload).await,
        ErrorCode::BadRequest,
        "user name",
    );
    assert_error(
        alice.send_begin("bob", "dir/f.bin", &payload).await,
        ErrorCode::InvalidPath,
        "one path component",
    );
    assert_error(
        alice.send_begin("bob", "..", &payload).await,
        ErrorCode::InvalidPath,
        "",
    );

    // Interrupted after two chunks: the same send resumes from there.
    let Response::PutReady { transfer_id, .. } = alice.send_begin("bob", "f.bin", &payload).await
    else {
        panic!("send refused")
    };
    alice.send_chunks(transfer_id, &payload, 0..2).await;
    drop(alice);
    let mut alice = server.login("alice").await;
    let Response::PutReady {
        transfer_id,
        chunks_held,
        ..
    } = alice.send_begin("bob", "f.bin", &payload).await
    else {
        panic!("resume refused")
    };
    assert_eq!(chunks_held, 2, "resumed, not restarted");
    alice.send_chunks(transfer_id, &payload, 2..4).await;
    let digest = Digest::of(&payload);
    assert_eq!(
        alice
            .call(Request::PutCommit {
                transfer_id,
                digest
            })
            .await,
        Response::Committed {
            size: payload.len() as u64,
            digest
        }
    );
    // Alice cannot see it: "inbox" is her own (empty) namespace.
    assert_error(
        alice
            .call(Request::List {
                path: "inbox".into(),
                after: None,
            })
            .await,
        ErrorCode::NotFound,
        "",
    );

    // Bob was offline: the notice waits for his next chat connection.
    let mut bob = server.login("bob").await;
    bob.open(None).await;
    let m = bob.message().await;
    assert_eq!(
        (m.from.as_str(), m.target.to_string().as_str()),
        ("alice", "@bob")
    );
    assert_eq!(
        m.body,
        MessageBody::File {
            path: "inbox/alice/f.bin".into(),
            size: payload.len() as u64,
            digest
        }
    );
    let Response::Listing { entries, .. } = bob
        .call(Request::List {
            path: "inbox/alice".into(),
            after: None,
        })
        .await
    else {
        panic!()
    };
    assert_eq!(entries.len(), 1);
    assert_eq!(
        (entries[0].name.as_str(), entries[0].kind),
        ("f.bin", EntryKind::File)
    );
    let Response::GetReady {
        digest: got, size, ..
    } = bob
        .call(Request::GetBegin {
            path: "inbox/alice/f.bin".into(),
        })
        .await
    else {
        panic!()
    };
    assert_eq!((got, size), (digest, payload.len() as u64));

    // Live this time, and a second send of the same name without force conflicts.
    let small = random_bytes(100, 2);
    let Response::PutReady { transfer_id, .. } = alice.send_begin("bob", "g.bin", &small).await
    else {
        panic!()
    };
    alice.send_chunks(transfer_id, &small, 0..1).await;
    alice
        .call(Request::PutCommit {
            transfer_id,
            digest: Digest::of(&small),
        })
        .await;
    let m = bob.message().await;
    assert!(matches!(m.body, MessageBody::File { ref path, .. } if path == "inbox/alice/g.bin"));
    assert!(matches!(
        alice.send_begin("bob", "g.bin", &small).await,
        Response::Exists { size: 100, .. }
    ));
    server.shutdown.cancel();
}
