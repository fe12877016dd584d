//! The chat server end to end at the protocol level: the real `xferd` killed with
//! SIGKILL mid-life, a torn log record, and hundreds of raw chat connections.

use std::collections::HashSet;
use std::time::Instant;

use xfer_e2e::{DEADLINE, Daemon, PASSWORD, RawConn};
use xfer_proto::{ChatEvent, ChatMessage, MessageBody, Request, Response, Secret};

/// A raw connection that keeps the events arriving between responses.
struct ChatConn {
    raw: RawConn,
    events: Vec<ChatEvent>,
    /// The session token of a password login.
    token: Option<Secret>,
}

impl ChatConn {
    async fn login(d: &Daemon, user: &str) -> ChatConn {
        let mut c = ChatConn {
            raw: RawConn::connect(d.addr, &d.fingerprint, None).await,
            events: Vec::new(),
            token: None,
        };
        let r = c
            .request(Request::Login {
                user: user.into(),
                password: Secret::new(PASSWORD),
            })
            .await;
        let Response::LoggedIn { token, .. } = r else {
            panic!("login refused: {r:?}")
        };
        c.token = token;
        c
    }

    async fn with_token(d: &Daemon, token: &Secret) -> ChatConn {
        let mut c = ChatConn {
            raw: RawConn::connect(d.addr, &d.fingerprint, None).await,
            events: Vec::new(),
            token: None,
        };
        let r = c
            .request(Request::Authenticate {
                token: token.clone(),
            })
            .await;
        assert!(matches!(r, Response::LoggedIn { .. }), "{r:?}");
        c
    }

    async fn next(&mut self) -> Response {
        self.raw.next().await.expect("the server answers in time")
    }

    async fn request(&mut self, req: Request) -> Response {
        use futures_util::SinkExt;
        self.raw
            .framed
            .send(xfer_proto::Frame::Message(req))
            .await
            .expect("send");
        loop {
            match self.next().await {
                Response::Event(e) => self.events.push(*e),
                r => return r,
            }
        }
    }

    async fn message(&mut self) -> ChatMessage {
        if let Some(i) = self
            .events
            .iter()
            .position(|e| matches!(e, ChatEvent::Message(_)))
        {
            let ChatEvent::Message(m) = self.events.remove(i) else {
                unreachable!()
            };
            return m;
        }
        loop {
            match self.next().await {
                Response::Event(e) => match *e {
                    ChatEvent::Message(m) => return m,
                    ChatEvent::Missed { target, count } => panic!("missed {count} of {target}"),
                    _ => {}
                },
                other => panic!("expected an event, got {other:?}"),
            }
        }
    }

    async fn say(&mut self, target: &str, text: &str) -> u64 {
        match self
            .request(Request::Say {
                target: target.parse().unwrap(),
                text: text.into(),
            })
            .await
        {
            Response::Said { id, .. } => id,
            other => panic!("say refused: {other:?}"),
        }
    }

    async fn history(&mut self, target: &str) -> Vec<ChatMessage> {
        match self
            .request(Request::History {
                target: target.parse().unwrap(),
                count: 200,
                before: None,
            })
            .await
        {
            Response::History { messages, .. } => messages,
            other => panic!("history refused: {other:?}"),
        }
    }
}

fn text(m: &ChatMessage) -> &str {
    match &m.body {
        MessageBody::Text(t) => t,
        MessageBody::File { path, .. } => path,
    }
}

#[tokio::test]
async fn acknowledged_messages_survive_kill_9() {
    let d = Daemon::start_with(&["alice", "bob"], None);
    let mut alice = ChatConn::login(&d, "alice").await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(alice.say("#lab", &format!("before kill {i}")).await);
    }
    let dm = alice.say("@bob", "for later").await;
    drop(alice);
    // No clean shutdown: only what was written before `Said` can be there.
    let d = d.kill9_and_restart();

    let mut bob = ChatConn::login(&d, "bob").await;
    let lab = bob.history("#lab").await;
    assert_eq!(lab.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
    assert_eq!(text(&lab[2]), "before kill 2");
    assert!(matches!(
        bob.request(Request::ChatOpen { after: None }).await,
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
    let mut alice = ChatConn::login(&d, "alice").await;
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
    let mut alice = ChatConn::login(&d, "alice").await;
    let id = alice.say("#lab", "next").await;
    assert!(id < 999_999, "the torn record's id was not taken up");
    let texts: Vec<String> = alice
        .history("#lab")
        .await
        .iter()
        .map(|m| text(m).to_owned())
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
        let c = ChatConn::login(&d, user).await;
        tokens.push(c.token.expect("a password login returns a token"));
    }
    let n = USERS.len() * PER_USER;
    let mut conns = Vec::new();
    for i in 0..n {
        let mut c = ChatConn::with_token(&d, &tokens[i % USERS.len()]).await;
        assert!(matches!(
            c.request(Request::ChatOpen { after: None }).await,
            Response::ChatOpened { .. }
        ));
        assert!(matches!(
            c.request(Request::Join {
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
                assert!(got.insert(text(&m).to_owned()), "duplicate {m:?}");
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
