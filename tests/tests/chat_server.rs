//! The chat server end to end at the protocol level: the real `xferd` killed with
//! SIGKILL mid-life, a torn log record, and hundreds of raw chat connections.

use std::collections::HashSet;
use std::time::Instant;

use xfer_e2e::raw::chat::text_of;
use xfer_e2e::{DEADLINE, Daemon, PASSWORD, RawConn};
use xfer_proto::{Request, Response};

#[tokio::test]
async fn acknowledged_messages_survive_kill_9() {
    let d = Daemon::start_with(&["alice", "bob"], None);
    let mut alice = d.raw_login("alice").await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(alice.say("#lab", &format!("before kill {i}")).await);
    }
    let dm = alice.say("@bob", "for later").await;
    drop(alice);
    // No clean shutdown: only what was written before `Said` can be there.
    let d = d.kill9_and_restart();

    let mut bob = d.raw_login("bob").await;
    let lab = bob.history("#lab").await;
    assert_eq!(lab.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
    assert_eq!(text_of(&lab[2]), "before kill 2");
    assert!(matches!(
        bob.call(Request::ChatOpen { after: None }).await,
        Response::ChatOpened { last_id, .. } if last_id >= dm
    ));
    assert_eq!(
        bob.message().await.id,
        dm,
        "the offline message is still due"
    );
    let later = bob.say("#lab", "after restart").await;
    assert!(later > dm, "ids keep rising across a crash");
}

#[tokio::test]
async fn a_torn_record_after_a_crash_is_cut_and_the_log_goes_on() {
    let mut d = Daemon::start_with(&["alice"], None);
    let mut alice = d.raw_login("alice").await;
    alice.say("#lab", "whole").await;
    drop(alice);
    let tmp = d.keep_data();
    let listen = d.host_port();
    let data = d.data_dir.clone();
    assert_eq!(d.signal_and_wait("KILL"), None);
    // What a crash in the middle of a write leaves behind.
    let log = data.join("chat/channels/lab.log");
    let mut bytes = std::fs::read(&log).expect("the channel log exists");
    bytes.extend_from_slice(br##"{"id":999999,"ts":1,"from":"alice","to":"#lab","te"##);
    std::fs::write(&log, &bytes).unwrap();

    let d = Daemon::start_listening(&data, &listen, &[]).expect("restarts on a torn log");
    assert!(d.wait_for_log("cutting a torn record"));
    let mut alice = d.raw_login("alice").await;
    let id = alice.say("#lab", "next").await;
    assert!(id < 999_999, "the torn record's id was not taken up");
    let texts: Vec<String> = alice
        .history("#lab")
        .await
        .iter()
        .map(|m| text_of(m).to_owned())
        .collect();
    assert_eq!(texts, ["whole", "next"]);
    drop(tmp);
}

#[tokio::test]
async fn two_hundred_chat_connections_lose_nothing() {
    const USERS: [&str; 4] = ["alice", "bob", "carol", "dave"];
    const PER_USER: usize = 50;
    let d = Daemon::start_with(&USERS, None);
    let mut tokens = Vec::new();
    for user in USERS {
        let mut c = RawConn::connect(d.addr, &d.fingerprint, None).await;
        let token = c.login(user, PASSWORD).await;
        tokens.push(token.expect("a password login returns a token"));
    }
    let n = USERS.len() * PER_USER;
    let mut conns = Vec::new();
    for i in 0..n {
        let mut c = RawConn::connect(d.addr, &d.fingerprint, None).await;
        assert!(c.authenticate(&tokens[i % USERS.len()]).await);
        assert!(matches!(
            c.call(Request::ChatOpen { after: None }).await,
            Response::ChatOpened { .. }
        ));
        assert!(matches!(
            c.call(Request::Join {
                channel: "#all".parse().unwrap(),
                history: 0,
                after: None,
            })
            .await,
            Response::Joined { .. }
        ));
        conns.push(c);
    }
    let start = Instant::now();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(n));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, mut c) in conns.into_iter().enumerate() {
        let barrier = barrier.clone();
        tasks.spawn(async move {
            barrier.wait().await;
            c.say("#all", &format!("m{i}")).await;
            let mut got = HashSet::new();
            while got.len() < n - 1 {
                let m = c.message().await;
                assert!(got.insert(text_of(&m).to_owned()), "duplicate {m:?}");
            }
            assert!(!got.contains(&format!("m{i}")), "no echo of its own");
            got.len()
        });
    }
    let mut delivered = 0;
    while let Some(r) = tokio::time::timeout(DEADLINE * 4, tasks.join_next())
        .await
        .expect("every connection gets every message in time")
    {
        delivered += r.expect("a connection task failed");
    }
    assert_eq!(delivered, n * (n - 1));
    eprintln!(
        "chat fan-out: {n} connections, {} deliveries in {:?}",
        delivered,
        start.elapsed()
    );
}
