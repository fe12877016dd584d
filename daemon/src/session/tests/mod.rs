//! Request-level tests of the session over `tokio::io::duplex`, without TLS: a real
//! `ServerState` on a temporary directory (real password file with argon2 hashes, real
//! local storage, real chat history), one [`run`] per connection, and the test kit's raw
//! protocol client over the pipe. What TLS adds is tested end to end in `tests/`.

use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tempfile::TempDir;
use tokio::io::DuplexStream;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;
use xfer_e2e::RawConn;
use xfer_proto::{
    ChannelName, Chunk, Digest, ErrorCode, Frame, MessageBody, Request, Response, Secret, Target,
};

use super::{Accepted, framed, run};
use crate::accounts::{PasswordFile, UserName, hash_password};
use crate::config::Config;
use crate::state::ServerState;

mod batch;

const PASSWORD: &str = "correct horse battery";
/// How long any one answer may take on a loaded machine before the test fails.
const PATIENCE: Duration = Duration::from_secs(30);

/// A server without a listener: sessions are started by [`Server::connect`].
struct Server {
    state: Arc<ServerState>,
    shutdown: CancellationToken,
    next_port: u16,
    _dir: TempDir,
}

impl Server {
    async fn start(users: &[&str]) -> Server {
        Self::start_with(users, |_| {}).await
    }

    async fn start_with(users: &[&str], tweak: impl FnOnce(&mut Config)) -> Server {
        let dir = TempDir::new().expect("temp dir");
        let mut config = Config {
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        tweak(&mut config);
        config.storage.min_free_bytes = 0;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&config.data_dir)
            .expect("data dir");
        for user in users {
            let name: UserName = user.parse().expect("user name");
            let phc = hash_password(PASSWORD).expect("hash");
            PasswordFile::update(&config.password_file(), |f| f.add(&name, phc))
                .expect("password file");
        }
        let state = ServerState::open(config).await.expect("server state");
        Server {
            state: Arc::new(state),
            shutdown: CancellationToken::new(),
            next_port: 40000,
            _dir: dir,
        }
    }

    /// A new connection, served by a session over an in-memory pipe, past the hello.
    async fn connect(&mut self) -> Client {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        self.next_port += 1;
        let peer = SocketAddr::from(([127, 0, 0, 1], self.next_port));
        let limits = self.state.config().limits.clone();
        let preauth = self.state.admission.admit(peer, &limits).expect("admitted");
        let now = Instant::now();
        let accepted = Accepted {
            peer,
            registration: self.state.connections.register(peer, &self.shutdown),
            preauth,
            hello_deadline: now + PATIENCE,
            login_deadline: now + PATIENCE,
        };
        let io = framed(theirs, self.state.metrics.clone());
        tokio::spawn(run(self.state.clone(), io, accepted));
        RawConn::over(ours).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The test kit's raw protocol client, over the in-memory pipe.
type Client = RawConn<DuplexStream>;

/// Logs in with a password; the server's answer.
async fn login(c: &mut Client, user: &str, password: &str) -> Response {
    c.call(Request::Login {
        user: user.into(),
        password: Secret::new(password.to_owned()),
    })
    .await
}

fn general() -> ChannelName {
    "#general".parse().expect("a channel name")
}

fn code(response: &Response) -> Option<ErrorCode> {
    match response {
        Response::Error { code, .. } => Some(*code),
        _ => None,
    }
}

#[tokio::test]
async fn requests_before_login_are_refused_and_only_the_right_password_logs_in() {
    let mut server = Server::start(&["alice"]).await;
    let mut c = server.connect().await;
    assert_eq!(c.call(Request::Ping).await, Response::Pong);
    let refused = c
        .call(Request::List {
            path: String::new(),
            after: None,
        })
        .await;
    assert_eq!(code(&refused), Some(ErrorCode::AuthRequired), "{refused:?}");
    let refused = c.call(Request::Channels).await;
    assert_eq!(code(&refused), Some(ErrorCode::AuthRequired), "{refused:?}");
    let refused = c.call(Request::WhoAmI).await;
    assert_eq!(code(&refused), Some(ErrorCode::AuthRequired), "{refused:?}");

    let wrong = login(&mut c, "alice", "not the password").await;
    assert_eq!(code(&wrong), Some(ErrorCode::AuthFailed), "{wrong:?}");
    let unknown = login(&mut c, "mallory", PASSWORD).await;
    assert_eq!(
        wrong, unknown,
        "an unknown user must look like a wrong password"
    );
    let refused = c
        .call(Request::List {
            path: String::new(),
            after: None,
        })
        .await;
    assert_eq!(code(&refused), Some(ErrorCode::AuthRequired), "{refused:?}");

    let token = match login(&mut c, "alice", PASSWORD).await {
        Response::LoggedIn { user, token, .. } => {
            assert_eq!(user, "alice");
            token.expect("a password login returns a token")
        }
        other => panic!("expected LoggedIn, got {other:?}"),
    };
    match c.call(Request::WhoAmI).await {
        Response::WhoAmI(who) => assert_eq!(who.user, "alice"),
        other => panic!("expected WhoAmI, got {other:?}"),
    }

    // The token logs in another connection until it is revoked by a logout.
    let mut other = server.connect().await;
    let again = other
        .call(Request::Authenticate {
            token: token.clone(),
        })
        .await;
    assert!(matches!(again, Response::LoggedIn { .. }), "{again:?}");
    assert_eq!(c.call(Request::Logout).await, Response::Ok);
    let refused = c.call(Request::WhoAmI).await;
    assert_eq!(code(&refused), Some(ErrorCode::AuthRequired), "{refused:?}");
    let mut third = server.connect().await;
    let revoked = third.call(Request::Authenticate { token }).await;
    assert_eq!(code(&revoked), Some(ErrorCode::AuthFailed), "{revoked:?}");
}

#[tokio::test]
async fn a_chunk_frame_before_login_closes_the_connection() {
    let mut server = Server::start(&["alice"]).await;
    let mut c = server.connect().await;
    let data = Bytes::from_static(b"sneaky");
    let chunk = Chunk::raw(1, 0, Digest::of(&data), data);
    c.framed
        .send(Frame::Chunk(chunk))
        .await
        .expect("send chunk");
    let refused = c.response().await;
    assert_eq!(code(&refused), Some(ErrorCode::BadRequest), "{refused:?}");
    let end = timeout(PATIENCE, c.framed.next())
        .await
        .expect("closed in time");
    assert!(end.is_none(), "the connection must close, got {end:?}");
}

/// Pushes `data` to `path` through `PutBegin`, one chunk and `PutCommit`.
async fn push(c: &mut Client, path: &str, data: &[u8]) -> Response {
    let begun = c
        .call(Request::PutBegin {
            path: path.into(),
            size: data.len() as u64,
            force: false,
            head: Bytes::copy_from_slice(&data[..data.len().min(16)]),
        })
        .await;
    let Response::PutReady { transfer_id, .. } = begun else {
        return begun;
    };
    let digest = Digest::of(data);
    let chunk = Chunk::raw(transfer_id, 0, digest, Bytes::copy_from_slice(data));
    c.framed
        .send(Frame::Chunk(chunk))
        .await
        .expect("send chunk");
    assert_eq!(
        c.response().await,
        Response::ChunkAck {
            transfer_id,
            offset: 0
        }
    );
    c.call(Request::PutCommit {
        transfer_id,
        digest,
    })
    .await
}

#[tokio::test]
async fn a_pushed_file_is_listed_and_pulls_back_identical() {
    let mut server = Server::start(&["alice"]).await;
    let mut c = server.connect().await;
    assert!(matches!(
        login(&mut c, "alice", PASSWORD).await,
        Response::LoggedIn { .. }
    ));
    let data = b"hello over a pipe, no TLS in sight\n".repeat(100);
    let committed = push(&mut c, "notes.txt", &data).await;
    assert_eq!(
        committed,
        Response::Committed {
            size: data.len() as u64,
            digest: Digest::of(&data)
        }
    );

    match c
        .call(Request::List {
            path: String::new(),
            after: None,
        })
        .await
    {
        Response::Listing { entries, .. } => {
            let entry = entries.iter().find(|e| e.name == "notes.txt");
            assert_eq!(
                entry.map(|e| e.size),
                Some(data.len() as u64),
                "{entries:?}"
            );
        }
        other => panic!("expected a listing, got {other:?}"),
    }

    let transfer_id = match c
        .call(Request::GetBegin {
            path: "notes.txt".into(),
        })
        .await
    {
        Response::GetReady {
            transfer_id,
            size,
            digest,
            ..
        } => {
            assert_eq!((size, digest), (data.len() as u64, Digest::of(&data)));
            transfer_id
        }
        other => panic!("expected GetReady, got {other:?}"),
    };
    c.framed
        .send(Frame::Message(Request::GetChunks {
            transfer_id,
            first: 0,
            count: 1,
            compress: true,
        }))
        .await
        .expect("send");
    let chunk = match c.frame().await {
        Frame::Chunk(chunk) => chunk.into_raw().expect("decompresses"),
        other => panic!("expected a chunk, got {other:?}"),
    };
    assert_eq!(chunk.data.as_ref(), data.as_slice());
    assert_eq!(chunk.digest, Digest::of(&data));
    assert_eq!(c.call(Request::Close { transfer_id }).await, Response::Ok);
}

#[tokio::test]
async fn file_errors_are_answered_and_the_session_goes_on() {
    let mut server = Server::start(&["alice"]).await;
    let mut c = server.connect().await;
    assert!(matches!(
        login(&mut c, "alice", PASSWORD).await,
        Response::LoggedIn { .. }
    ));
    let missing = c
        .call(Request::GetBegin {
            path: "nope.txt".into(),
        })
        .await;
    assert_eq!(code(&missing), Some(ErrorCode::NotFound), "{missing:?}");
    let escape = c
        .call(Request::List {
            path: "../bob".into(),
            after: None,
        })
        .await;
    assert_eq!(code(&escape), Some(ErrorCode::InvalidPath), "{escape:?}");
    let unknown = c
        .call(Request::GetChunks {
            transfer_id: 99,
            first: 0,
            count: 1,
            compress: false,
        })
        .await;
    assert_eq!(code(&unknown), Some(ErrorCode::BadRequest), "{unknown:?}");

    let data = b"first version";
    assert!(matches!(
        push(&mut c, "a.txt", data).await,
        Response::Committed { .. }
    ));
    // The same name again without force: the server says what it holds.
    let exists = push(&mut c, "a.txt", b"second version").await;
    assert!(matches!(exists, Response::Exists { .. }), "{exists:?}");
    assert_eq!(c.call(Request::Ping).await, Response::Pong);
}

#[tokio::test]
async fn two_sessions_exchange_a_channel_message_and_it_is_in_the_history() {
    let mut server = Server::start(&["alice", "bob"]).await;
    let mut alice = server.connect().await;
    let mut bob = server.connect().await;
    for (c, name) in [(&mut alice, "alice"), (&mut bob, "bob")] {
        assert!(matches!(
            login(c, name, PASSWORD).await,
            Response::LoggedIn { .. }
        ));
        let opened = c.call(Request::ChatOpen { after: None }).await;
        assert!(matches!(opened, Response::ChatOpened { .. }), "{opened:?}");
        let join = Request::Join {
            channel: general(),
            history: 10,
            after: None,
        };
        let joined = c.call(join).await;
        assert!(matches!(joined, Response::Joined { .. }), "{joined:?}");
    }
    let say = Request::Say {
        target: Target::Channel(general()),
        text: "hello bob".into(),
    };
    let Response::Said { id, .. } = alice.call(say).await else {
        panic!("alice's line was not said");
    };
    let heard = bob.message().await;
    assert_eq!((heard.id, heard.from.as_str()), (id, "alice"));
    assert_eq!(heard.body, MessageBody::Text("hello bob".into()));

    let history = bob
        .call(Request::History {
            target: Target::Channel(general()),
            count: 10,
            before: None,
        })
        .await;
    match history {
        Response::History { messages, .. } => {
            assert_eq!(messages.iter().map(|m| m.id).collect::<Vec<_>>(), [id]);
        }
        other => panic!("expected history, got {other:?}"),
    }
    // Chat needs `ChatOpen` before `Join`, and a user that exists for a direct message.
    let mut carol = server.connect().await;
    assert!(matches!(
        login(&mut carol, "alice", PASSWORD).await,
        Response::LoggedIn { .. }
    ));
    let early = carol
        .call(Request::Join {
            channel: general(),
            history: 0,
            after: None,
        })
        .await;
    assert_eq!(code(&early), Some(ErrorCode::BadRequest), "{early:?}");
    assert!(
        format!("{early:?}").contains("open chat first"),
        "{early:?}"
    );
    let nobody = alice
        .call(Request::Say {
            target: Target::parse("@nobody").expect("a user target"),
            text: "hi".into(),
        })
        .await;
    assert_eq!(code(&nobody), Some(ErrorCode::NotFound), "{nobody:?}");
}

#[tokio::test]
async fn a_kick_or_the_shutdown_tells_the_peer_which_and_ends_the_session() {
    let mut server = Server::start(&["alice"]).await;
    let mut kicked = server.connect().await;
    assert!(matches!(
        login(&mut kicked, "alice", PASSWORD).await,
        Response::LoggedIn { .. }
    ));
    assert_eq!(server.state.connections.kick("alice"), 1);
    let told = kicked.response().await;
    assert_eq!(code(&told), Some(ErrorCode::PermissionDenied), "{told:?}");
    let end = timeout(PATIENCE, kicked.framed.next())
        .await
        .expect("closed in time");
    assert!(end.is_none(), "the connection must close, got {end:?}");

    let mut stopped = server.connect().await;
    assert!(matches!(
        login(&mut stopped, "alice", PASSWORD).await,
        Response::LoggedIn { .. }
    ));
    server.shutdown.cancel();
    let told = stopped.response().await;
    assert_eq!(code(&told), Some(ErrorCode::ShuttingDown), "{told:?}");
}

/// A send is the sender's transfer: it takes the sender's place under
/// `limits.max_transfers_per_user`, never the recipient's, so nobody can use up
/// another user's places by sending to them.
#[tokio::test]
async fn a_send_counts_against_the_sender_not_the_recipient() {
    let max = 3;
    let mut server =
        Server::start_with(&["alice", "bob"], |c| c.limits.max_transfers_per_user = max).await;
    let mut alice = server.connect().await;
    let mut bob = server.connect().await;
    for (c, user) in [(&mut alice, "alice"), (&mut bob, "bob")] {
        assert!(matches!(
            login(c, user, PASSWORD).await,
            Response::LoggedIn { .. }
        ));
    }
    let put = |i: u32| Request::PutBegin {
        path: format!("own-{i}.bin"),
        size: 10,
        force: false,
        head: Bytes::new(),
    };
    let send = |i: u32| Request::SendBegin {
        to: "bob".into(),
        name: format!("gift-{i}.bin"),
        size: 10,
        force: false,
        head: Bytes::new(),
    };
    // Bob uses all his places; alice can still send to him.
    for i in 0..max as u32 {
        let r = bob.call(put(i)).await;
        assert!(
            matches!(r, Response::PutReady { .. }),
            "bob's upload {i}: {r:?}"
        );
    }
    let r = bob.call(put(max as u32)).await;
    assert_eq!(
        code(&r),
        Some(ErrorCode::Busy),
        "bob is at his limit: {r:?}"
    );
    for i in 0..max as u32 {
        let r = alice.call(send(i)).await;
        assert!(
            matches!(r, Response::PutReady { .. }),
            "alice's send {i}: {r:?}"
        );
    }
    // Her sends took her places, not his.
    let r = alice.call(put(0)).await;
    assert_eq!(
        code(&r),
        Some(ErrorCode::Busy),
        "alice is at her limit: {r:?}"
    );
    assert!(format!("{r:?}").contains("alice already has"), "{r:?}");
}
