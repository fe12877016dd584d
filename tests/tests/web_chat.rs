//! The chat WebSocket, `GET /api/chat` (docs/HTTP.md "Chat"): the real `xferd`, real TLS
//! on 127.0.0.1 (ALPN http/1.1, the pinned fingerprint), tokio-tungstenite as the page.
//! Direct messages both ways with `xfer chat`, a direct message waiting for a user with
//! no connection, history paged backwards, presence, the upgrade's CSRF/Origin/Bearer
//! rules, the frame size and rate limits, and `xferd kick` ending the socket.

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{WebSocketStream, client_async};
use xfer_e2e::{Client, DEADLINE, Daemon, PASSWORD, alice};

use crate::web_api::{Web, http1_tls};

/// Frames a socket may send at once before it is told to slow down (docs/HTTP.md).
const FRAME_BURST: usize = 60;

/// One chat socket, as a page holds it.
struct Ws {
    ws: WebSocketStream<TlsStream<TcpStream>>,
    user: String,
}

/// How to authenticate the upgrade.
enum Auth<'a> {
    /// The session cookie, with `?csrf=` when given.
    Cookie {
        token: &'a str,
        csrf: Option<&'a str>,
    },
    Bearer(&'a str),
}

/// Opens TLS to the daemon (ALPN http/1.1, its pinned certificate) and asks for the
/// upgrade; `Err` is the handshake's refusal (e.g. `tungstenite::Error::Http`).
async fn upgrade(
    d: &Daemon,
    auth: &Auth<'_>,
    origin: Option<&str>,
) -> Result<WebSocketStream<TlsStream<TcpStream>>, tungstenite::Error> {
    let tls = http1_tls(d).await;
    let query = match auth {
        Auth::Cookie {
            csrf: Some(csrf), ..
        } => format!("?csrf={csrf}"),
        _ => String::new(),
    };
    let mut req = format!("wss://{}/api/chat{query}", d.addr)
        .into_client_request()
        .expect("request");
    let h = req.headers_mut();
    match auth {
        Auth::Cookie { token, .. } => {
            h.insert("cookie", hv(&format!("xfer_session={token}")));
        }
        Auth::Bearer(token) => {
            h.insert("authorization", hv(&format!("Bearer {token}")));
        }
    }
    if let Some(o) = origin {
        h.insert("origin", hv(o));
    }
    tokio::time::timeout(DEADLINE, client_async(req, tls))
        .await
        .expect("the upgrade is answered in time")
        .map(|(ws, _)| ws)
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).expect("header value")
}

/// The HTTP status and JSON error code of a refused upgrade.
fn refusal(r: Result<WebSocketStream<TlsStream<TcpStream>>, tungstenite::Error>) -> (u16, String) {
    match r {
        Ok(_) => panic!("the upgrade was accepted"),
        Err(tungstenite::Error::Http(resp)) => {
            let body: Value = resp
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            let code = body["error"]["code"].as_str().unwrap_or("").to_owned();
            (resp.status().as_u16(), code)
        }
        Err(e) => panic!("the upgrade failed otherwise: {e}"),
    }
}

impl Ws {
    /// Signs `user` in over HTTPS and opens a socket with the cookie and `?csrf=`, as the
    /// page does; waits for its `hello`.
    async fn open(d: &Daemon, user: &str) -> Ws {
        let (token, csrf) = Web::new(d).session(user).await;
        let auth = Auth::Cookie {
            token: &token,
            csrf: Some(&csrf),
        };
        let ws = upgrade(d, &auth, None).await.expect("upgrade");
        Ws::hello(ws, user).await
    }

    async fn hello(ws: WebSocketStream<TlsStream<TcpStream>>, user: &str) -> Ws {
        let mut ws = Ws {
            ws,
            user: user.to_owned(),
        };
        let hello = ws.next().await.expect("a first frame");
        assert_eq!(hello["type"], "hello", "{hello}");
        assert_eq!(hello["user"], user, "{hello}");
        ws
    }

    async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .expect("send a frame");
    }

    /// The next JSON frame, skipping pings; `None` once the socket is closed or broken.
    async fn next(&mut self) -> Option<Value> {
        let msg = tokio::time::timeout(DEADLINE, self.ws.next())
            .await
            .unwrap_or_else(|_| panic!("{}: no frame within {DEADLINE:?}", self.user));
        match msg? {
            Ok(Message::Text(t)) => Some(serde_json::from_str(t.as_str()).expect("JSON frame")),
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {
                Box::pin(self.next()).await
            }
            Ok(Message::Binary(b)) => panic!("{}: a binary frame ({} bytes)", self.user, b.len()),
            Ok(Message::Close(_)) | Err(_) => None,
        }
    }

    /// Reads frames until one satisfies `pred` (within [`DEADLINE`] each); returns it and
    /// the frames before it.
    async fn until(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> (Value, Vec<Value>) {
        let mut skipped = Vec::new();
        loop {
            match self.next().await {
                Some(v) if pred(&v) => return (v, skipped),
                Some(v) => skipped.push(v),
                None => panic!("{}: closed before {what}; got {skipped:?}", self.user),
            }
        }
    }

    /// Waits for a frame of `type` `kind`.
    async fn expect(&mut self, kind: &str) -> Value {
        self.until(kind, |v| v["type"] == kind).await.0
    }

    /// Waits (up to [`DEADLINE`]) for the server to end the socket; the frames it sent
    /// before (a close frame or a broken connection both count as the end).
    async fn closed(&mut self) -> Vec<Value> {
        let mut seen = Vec::new();
        while let Some(v) = self.next().await {
            seen.push(v);
        }
        seen
    }

    async fn say(&mut self, to: &str, text: &str) -> u64 {
        self.send(json!({"op": "say", "to": to, "text": text}))
            .await;
        let m = self.expect("message").await;
        assert_eq!(
            (&m["from"], &m["to"], &m["text"]),
            (&json!(self.user), &json!(to), &json!(text))
        );
        m["id"].as_u64().expect("an id")
    }

    async fn history(&mut self, to: &str, before: Option<u64>, limit: Option<u32>) -> Vec<u64> {
        let mut op = json!({"op": "history", "to": to});
        if let Some(b) = before {
            op["before"] = json!(b);
        }
        if let Some(l) = limit {
            op["limit"] = json!(l);
        }
        self.send(op).await;
        let h = self.expect("history").await;
        assert_eq!(h["to"], to, "{h}");
        ids(&h["messages"])
    }
}

fn ids(messages: &Value) -> Vec<u64> {
    messages
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["id"].as_u64().expect("id"))
        .collect()
}

fn logged_in(d: &Daemon, user: &str) -> Client {
    let c = Client::new();
    c.login(d, user, PASSWORD);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_messages_both_ways_with_the_cli_and_one_waiting_for_its_user() {
    let d = Daemon::start_with(&["alice", "bob", "carol"], None);
    let bob = logged_in(&d, "bob");
    let follow = bob.follow(&["--json"]);
    let mut a = Ws::open(&d, "alice").await;

    // Socket -> CLI.
    let id = a.say("bob", "hello from the page").await;
    let out = follow
        .wait_stdout(DEADLINE, |s| s.contains("hello from the page"))
        .unwrap_or_else(|| panic!("bob's follow: {}", follow.stderr_so_far()));
    let line = out
        .lines()
        .find(|l| l.contains("hello from the page"))
        .unwrap();
    let v: Value = serde_json::from_str(line).expect("a JSON line");
    assert_eq!(v["id"], id, "{v}");
    assert_eq!(
        (&v["from"], &v["target"]),
        (&json!("alice"), &json!("@bob")),
        "{v}"
    );

    // CLI -> socket.
    let said = bob.xfer(&["chat", "@alice", "--say", "hello from the cli"], "");
    assert_eq!(said.code(), 0, "{}", said.stderr());
    let (m, _) = a
        .until("bob's line", |v| {
            v["type"] == "message" && v["from"] == "bob"
        })
        .await;
    assert_eq!(
        (&m["to"], &m["text"]),
        (&json!("alice"), &json!("hello from the cli")),
        "{m}"
    );
    assert!(
        m["id"].as_u64().unwrap() > id && m["time"].as_u64().is_some(),
        "{m}"
    );

    // To a user with no connection: it waits, and comes right after carol's hello.
    let waiting = a.say("carol", "when you are back").await;
    let mut c = Ws::open(&d, "carol").await;
    let (m, before) = c
        .until("the waiting line", |v| v["type"] == "message")
        .await;
    assert_eq!(m["id"], waiting, "{m}");
    assert_eq!(
        (&m["from"], &m["to"], &m["text"]),
        (
            &json!("alice"),
            &json!("carol"),
            &json!("when you are back")
        )
    );
    assert!(before.iter().all(|v| v["type"] != "message"), "{before:?}");
    // Delivered once: a second socket of carol's does not get it again.
    let mut c2 = Ws::open(&d, "carol").await;
    c2.send(json!({"op": "channels"})).await;
    let (_, before) = c2.until("channels", |v| v["type"] == "channels").await;
    assert!(before.iter().all(|v| v["type"] != "message"), "{before:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_backwards_with_before_and_limit() {
    let d = Daemon::start_with(&["alice", "bob"], None);
    let mut a = Ws::open(&d, "alice").await;
    a.send(json!({"op": "join", "channel": "#lab"})).await;
    let joined = a.expect("joined").await;
    assert_eq!(joined["channel"], "#lab", "{joined}");
    let h = a.expect("history").await;
    assert_eq!(ids(&h["messages"]), Vec::<u64>::new(), "a new channel: {h}");

    const N: usize = 12;
    let mut said = Vec::new();
    for i in 0..N {
        said.push(a.say("#lab", &format!("line {i}")).await);
    }
    assert!(said.windows(2).all(|w| w[0] < w[1]), "ids rise: {said:?}");

    // Without `before`, the newest; each page oldest first; `before` is exclusive.
    assert_eq!(a.history("#lab", None, None).await, said);
    let newest = a.history("#lab", None, Some(5)).await;
    assert_eq!(newest, said[N - 5..]);
    let older = a.history("#lab", Some(newest[0]), Some(5)).await;
    assert_eq!(older, said[N - 10..N - 5]);
    let oldest = a.history("#lab", Some(older[0]), Some(5)).await;
    assert_eq!(oldest, said[..N - 10]);
    assert_eq!(
        a.history("#lab", Some(oldest[0]), Some(5)).await,
        Vec::<u64>::new()
    );
    // A `before` inside the log (not a page boundary).
    assert_eq!(a.history("#lab", Some(said[7]), Some(3)).await, said[4..7]);

    // Joining replays the channel to someone else, with the texts.
    let mut b = Ws::open(&d, "bob").await;
    b.send(json!({"op": "join", "channel": "#lab"})).await;
    let joined = b.expect("joined").await;
    let members: Vec<&str> = joined["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["user"].as_str())
        .collect();
    assert!(
        members.contains(&"alice") && members.contains(&"bob"),
        "{joined}"
    );
    let h = b.expect("history").await;
    assert_eq!(ids(&h["messages"]), said);
    assert_eq!(h["messages"][3]["text"], "line 3", "{h}");
    assert_eq!(h["messages"][3]["from"], "alice", "{h}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_of_another_socket_online_away_offline() {
    let d = Daemon::start_with(&["alice", "bob"], None);
    let mut a = Ws::open(&d, "alice").await;
    let presence = |state: &'static str| {
        move |v: &Value| v["type"] == "presence" && v["user"] == "bob" && v["state"] == state
    };

    let mut b = Ws::open(&d, "bob").await;
    a.until("bob online", presence("online")).await;
    b.send(json!({"op": "away", "away": true})).await;
    a.until("bob away", presence("away")).await;
    b.send(json!({"op": "who"})).await;
    let who = b.expect("who").await;
    let bob = who["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["user"] == "bob")
        .cloned();
    assert_eq!(bob, Some(json!({"user": "bob", "state": "away"})), "{who}");
    b.send(json!({"op": "away", "away": false})).await;
    a.until("bob back", presence("online")).await;

    b.ws.close(None).await.expect("close");
    drop(b);
    a.until("bob offline", presence("offline")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upgrade_needs_csrf_and_its_own_origin_or_a_bearer_token() {
    let d = Daemon::start_with(&["alice"], None);
    let (token, csrf) = Web::new(&d).session("alice").await;
    let forbidden = (
        StatusCode::FORBIDDEN.as_u16(),
        "permission_denied".to_owned(),
    );

    let no_csrf = Auth::Cookie {
        token: &token,
        csrf: None,
    };
    assert_eq!(refusal(upgrade(&d, &no_csrf, None).await), forbidden);
    let wrong = Auth::Cookie {
        token: &token,
        csrf: Some("00ff"),
    };
    assert_eq!(refusal(upgrade(&d, &wrong, None).await), forbidden);
    let cookie = Auth::Cookie {
        token: &token,
        csrf: Some(&csrf),
    };
    let foreign = upgrade(&d, &cookie, Some("https://evil.example")).await;
    assert_eq!(refusal(foreign), forbidden);
    let r = upgrade(&d, &Auth::Bearer("xft_not_a_session"), None).await;
    assert_eq!(refusal(r).0, StatusCode::UNAUTHORIZED.as_u16());

    // The page's own origin with the token works, and so does a Bearer token alone.
    let own = format!("https://{}", d.addr);
    let ws = upgrade(&d, &cookie, Some(&own)).await.expect("own origin");
    let mut ws = Ws::hello(ws, "alice").await;
    ws.send(json!({"op": "channels"})).await;
    ws.expect("channels").await;
    let cli = alice(&d);
    let cli_token = cli.xfer(&["token"], "").stdout().trim().to_owned();
    let ws = upgrade(&d, &Auth::Bearer(&cli_token), None)
        .await
        .expect("bearer");
    let mut ws = Ws::hello(ws, "alice").await;
    ws.send(json!({"op": "channels"})).await;
    ws.expect("channels").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_64_kib_ends_the_socket() {
    let d = Daemon::start_with(&["alice"], None);
    let mut a = Ws::open(&d, "alice").await;
    // Just under the limit is an ordinary request (refused by the chat: a line is at
    // most 4000 bytes), and the socket stays open.
    let text = "x".repeat(64 * 1024 - 100);
    a.send(json!({"op": "say", "to": "#lab", "text": text}))
        .await;
    let answer = a.next().await.expect("an answer, not a close");
    assert_eq!(
        (&answer["type"], &answer["code"]),
        (&json!("error"), &json!("too_large")),
        "{answer}"
    );

    let big = json!({"op": "say", "to": "#lab", "text": "x".repeat(64 * 1024 + 1)});
    // The server may close before the whole frame is written.
    let _ = a.ws.send(Message::Text(big.to_string().into())).await;
    let seen = a.closed().await;
    assert!(seen.iter().all(|v| v["type"] != "message"), "{seen:?}");
    // Nothing of it was stored.
    let mut b = Ws::open(&d, "alice").await;
    assert_eq!(b.history("#lab", None, None).await, Vec::<u64>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_faster_than_the_rate_are_answered_rate_limited() {
    let d = Daemon::start_with(&["alice"], None);
    let mut a = Ws::open(&d, "alice").await;
    // Well past the burst: even if the server takes seconds to read them (a loaded
    // machine refills 20 a second), some are over the limit.
    let sent = FRAME_BURST + 240;
    for _ in 0..sent {
        a.ws.feed(Message::Text(json!({"op": "channels"}).to_string().into()))
            .await
            .expect("feed");
    }
    a.ws.flush().await.expect("flush");
    let (mut answered, mut limited) = (0, 0);
    while answered + limited < sent {
        let v = a.next().await.expect("an answer per frame");
        match v["type"].as_str() {
            Some("channels") => answered += 1,
            Some("error") if v["code"] == "rate_limited" => limited += 1,
            _ => panic!("unexpected {v}"),
        }
    }
    assert!(
        answered >= FRAME_BURST,
        "{answered} answered, {limited} limited"
    );
    assert!(limited >= 1, "{answered} answered, {limited} limited");
    // The socket stays open, and is answered again once the bucket refills.
    let start = std::time::Instant::now();
    loop {
        a.send(json!({"op": "channels"})).await;
        let v = a.next().await.expect("still open");
        if v["type"] == "channels" {
            break;
        }
        assert_eq!(v["code"], "rate_limited", "{v}");
        // A refused frame takes no token, so each answer is the next try's cue while
        // the bucket refills (20 a second).
        assert!(start.elapsed() < DEADLINE, "never answered again");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kick_ends_the_chat_socket() {
    let d = Daemon::start_with(&["alice", "bob"], None);
    let mut a = Ws::open(&d, "alice").await;
    let mut b = Ws::open(&d, "bob").await;
    let out = d.admin(&["kick", "alice"]);
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert!(out.stdout().contains("of alice"), "{}", out.stdout());
    let seen = a.closed().await;
    assert!(seen.iter().all(|v| v["type"] == "presence"), "{seen:?}");
    // bob's socket stays, and sees alice go.
    b.until("alice offline", |v| {
        v["type"] == "presence" && v["user"] == "alice" && v["state"] == "offline"
    })
    .await;
    b.send(json!({"op": "channels"})).await;
    b.expect("channels").await;
}
