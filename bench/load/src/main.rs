//! Load on a running `xferd`, for `bench/run.sh` (case `load`): what many connections
//! cost the daemon, measured from one client process over the raw protocol (TLS pinned
//! to the server's fingerprint, hello, login), so the figures are the daemon's and not
//! those of a thousand `xfer` processes.
//!
//! ```text
//! xfer-load fanout  ADDR FINGERPRINT PASSWORD [MEMBERS] [MESSAGES] [INTERVAL_MS] [ONE_BY_ONE]
//! xfer-load idle    ADDR FINGERPRINT PASSWORD PID [CONNECTIONS]
//! xfer-load relogin ADDR FINGERPRINT PASSWORD [SECONDS] [CONCURRENCY]
//! ```
//!
//! - `fanout`: users `fan0001`… (MEMBERS of them, 1,000; each logs in once with
//!   PASSWORD) join `#fanout` on a connection each. User `bench` first says ONE_BY_ONE
//!   (50) messages there one at a time: each is said once every member has the one
//!   before, so each fan-out is measured alone (the issue's case: one message to a
//!   channel of 1,000). Then it says MESSAGES (200), one every INTERVAL_MS (10), without
//!   waiting: a sustained 100 messages a second, 100,000 deliveries a second. Each
//!   message carries the time it was sent; every member notes when it arrives. Prints,
//!   for each of the two, the delivery time's p50, p99 and maximum, and how many
//!   deliveries were lost (never arrived, or reported `Missed`).
//! - `idle`: CONNECTIONS (10,000) connections authenticated with `bench`'s token, opened
//!   64 at a time from four source addresses and held idle; prints the resident memory
//!   of the daemon (process PID) before and after, per connection. Needs that many file
//!   descriptors (`ulimit -n`) here and in the daemon.
//! - `relogin`: for SECONDS (5), CONCURRENCY (8) loops each open a connection, log in
//!   with `bench`'s token (no password hashing) and close it; prints logins per second.
//!
//! Each prints one line, `figure NAME: key=value …`, for the case script to read.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Mutex, Semaphore};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::codec::Framed;
use xfer_certs::{Fingerprint, PinnedVerifier};
use xfer_proto::{
    ChatEvent, ClientCodec, Frame, Hello, MessageBody, Request, Response, Secret, Target,
};

type Conn = Framed<TlsStream<TcpStream>, ClientCodec>;

/// How long any one answer may take before the benchmark gives up.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections opened at once (as the long suite's scale test does).
const OPENING: usize = 64;
/// The channel `fanout` uses.
const CHANNEL: &str = "#fanout";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        bail!(
            "usage: xfer-load fanout|idle|relogin ADDR FINGERPRINT PASSWORD … (see the source's header)"
        );
    };
    let [addr, fp, password, more @ ..] = rest else {
        bail!("xfer-load {cmd}: ADDR FINGERPRINT PASSWORD are needed");
    };
    let server = Server {
        addr: addr.parse().with_context(|| format!("address `{addr}`"))?,
        connector: connector(fp)?,
    };
    let num = |i: usize, default: u64| -> Result<u64> {
        more.get(i).map_or(Ok(default), |s| {
            s.parse().with_context(|| format!("number `{s}`"))
        })
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let server = Arc::new(server);
    match cmd.as_str() {
        "fanout" => runtime.block_on(fanout(
            server,
            password,
            num(0, 1000)? as usize,
            num(1, 200)? as usize,
            Duration::from_millis(num(2, 10)?),
            num(3, 50)? as usize,
        )),
        "idle" => {
            let pid = more
                .first()
                .context("xfer-load idle: PID of xferd is needed")?;
            let pid: u32 = pid.parse().context("PID")?;
            runtime.block_on(idle(server, password, pid, num(1, 10_000)? as usize))
        }
        "relogin" => runtime.block_on(relogin(
            server,
            password,
            Duration::from_secs(num(0, 5)?),
            num(1, 8)? as usize,
        )),
        other => bail!("xfer-load: unknown benchmark `{other}` (fanout, idle, relogin)"),
    }
}

struct Server {
    addr: SocketAddr,
    connector: TlsConnector,
}

fn connector(fp: &str) -> Result<TlsConnector> {
    let fp: Fingerprint = fp.parse().map_err(|e| anyhow!("fingerprint `{fp}`: {e}"))?;
    let config = xfer_certs::config::client_config_pinned(PinnedVerifier::new(Some(fp)));
    Ok(TlsConnector::from(config))
}

impl Server {
    /// A connection past the hello, from `source` if given.
    async fn connect(&self, source: Option<IpAddr>) -> Result<Conn> {
        let socket = TcpSocket::new_v4()?;
        if let Some(ip) = source {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let tcp = socket.connect(self.addr).await.context("connecting")?;
        tcp.set_nodelay(true)?;
        let name = rustls::pki_types::ServerName::try_from("localhost")?;
        let tls = self.connector.connect(name, tcp).await.context("TLS")?;
        let mut conn = Framed::new(tls, ClientCodec::new(xfer_proto::MAX_FRAME_LEN));
        conn.send(Frame::Hello(Hello::current("xfer-load"))).await?;
        match next(&mut conn).await? {
            Frame::Hello(_) => Ok(conn),
            other => bail!("expected a hello, got {other:?}"),
        }
    }

    /// A connection logged in with `user`'s password; the session token with it.
    async fn login(&self, user: &str, password: &str) -> Result<(Conn, String)> {
        let mut conn = self.connect(None).await?;
        let req = Request::Login {
            user: user.into(),
            password: Secret::new(password),
        };
        match call(&mut conn, req).await? {
            Response::LoggedIn {
                token: Some(token), ..
            } => Ok((conn, token.expose().to_owned())),
            other => bail!("login as {user}: {other:?}"),
        }
    }

    /// A connection authenticated with `token`.
    async fn authenticated(&self, token: &str, source: Option<IpAddr>) -> Result<Conn> {
        let mut conn = self.connect(source).await?;
        let req = Request::Authenticate {
            token: Secret::new(token),
        };
        match call(&mut conn, req).await? {
            Response::LoggedIn { .. } => Ok(conn),
            other => bail!("token login: {other:?}"),
        }
    }
}

/// The next frame, within [`ANSWER_TIMEOUT`].
async fn next(conn: &mut Conn) -> Result<Frame<Response>> {
    match tokio::time::timeout(ANSWER_TIMEOUT, conn.next()).await {
        Err(_) => bail!("no answer within {ANSWER_TIMEOUT:?}"),
        Ok(None) => bail!("the server closed the connection"),
        Ok(Some(frame)) => Ok(frame?),
    }
}

/// Sends `req` and returns its answer, skipping chat events that arrive first.
async fn call(conn: &mut Conn, req: Request) -> Result<Response> {
    conn.send(Frame::Message(req)).await?;
    loop {
        match next(conn).await? {
            Frame::Message(Response::Event(_)) => {}
            Frame::Message(r) => return Ok(r),
            other => bail!("unexpected frame {other:?}"),
        }
    }
}

/// Microseconds since `epoch`: the clock messages carry (sender and members share it).
fn micros(epoch: Instant) -> u64 {
    epoch.elapsed().as_micros() as u64
}

async fn fanout(
    server: Arc<Server>,
    password: &str,
    members: usize,
    messages: usize,
    interval: Duration,
    one_by_one: usize,
) -> Result<()> {
    let epoch = Instant::now();
    // Deliveries of the one-at-a-time messages so far; the member that completes a
    // message's fan-out wakes the sender.
    let arrived = Arc::new(AtomicU64::new(0));
    let all_there = Arc::new(tokio::sync::Notify::new());
    let alone = Arc::new(Mutex::new(Vec::with_capacity(members * one_by_one)));
    let opening = Arc::new(Semaphore::new(OPENING));
    let sending = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(members * messages)));
    let missed = Arc::new(AtomicU64::new(0));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<Result<()>>(members.max(1));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 1..=members {
        let (server, opening, sending) = (server.clone(), opening.clone(), sending.clone());
        let (latencies, missed, ready) = (latencies.clone(), missed.clone(), ready_tx.clone());
        let (arrived, all_there, alone) = (arrived.clone(), all_there.clone(), alone.clone());
        let password = password.to_owned();
        tasks.spawn(async move {
            let joined = async {
                let _permit = opening.acquire().await?;
                let (mut conn, _) = server.login(&format!("fan{i:04}"), &password).await?;
                let open = call(&mut conn, Request::ChatOpen { after: None }).await?;
                anyhow::ensure!(matches!(open, Response::ChatOpened { .. }), "{open:?}");
                let join = Request::Join {
                    channel: CHANNEL.parse()?,
                    history: 0,
                    after: None,
                };
                let joined = call(&mut conn, join).await?;
                anyhow::ensure!(matches!(joined, Response::Joined { .. }), "{joined:?}");
                Ok(conn)
            }
            .await;
            let mut conn = match joined {
                Ok(c) => {
                    let _ = ready.send(Ok(())).await;
                    c
                }
                Err(e) => {
                    let _ = ready.send(Err(e)).await;
                    return;
                }
            };
            drop(ready);
            let mut mine = Vec::with_capacity(messages);
            let mut first = Vec::with_capacity(one_by_one);
            let mut lost = 0u64;
            // Until every message is here, or the sender says it is over.
            while first.len() + mine.len() + (lost as usize) < one_by_one + messages {
                let frame = match tokio::time::timeout(ANSWER_TIMEOUT, conn.next()).await {
                    Ok(Some(Ok(f))) => f,
                    _ => break,
                };
                let Frame::Message(Response::Event(event)) = frame else {
                    continue;
                };
                match *event {
                    ChatEvent::Message(m) => {
                        let MessageBody::Text(t) = &m.body else {
                            continue;
                        };
                        let sent =
                            |tag: &str| t.strip_prefix(tag).and_then(|s| s.parse::<u64>().ok());
                        if let Some(sent) = sent("t=") {
                            mine.push(micros(epoch).saturating_sub(sent));
                        } else if let Some(sent) = sent("o=") {
                            first.push(micros(epoch).saturating_sub(sent));
                            if (arrived.fetch_add(1, Ordering::SeqCst) + 1) % members as u64 == 0 {
                                all_there.notify_one();
                            }
                        }
                    }
                    ChatEvent::Missed { count, .. } if sending.load(Ordering::SeqCst) => {
                        lost += count
                    }
                    _ => {}
                }
            }
            missed.fetch_add(lost, Ordering::SeqCst);
            latencies.lock().await.extend(mine);
            alone.lock().await.extend(first);
        });
    }
    drop(ready_tx);
    let setup = Instant::now();
    for _ in 0..members {
        ready_rx
            .recv()
            .await
            .context("a member task ended early")?
            .context("a member could not join")?;
    }
    let setup_secs = setup.elapsed().as_secs_f64();

    let (mut sender, _) = server.login("bench", password).await?;
    let say = |tag: &str| Request::Say {
        target: Target::Channel(CHANNEL.parse().expect("a channel name")),
        text: format!("{tag}{}", micros(epoch)),
    };
    sending.store(true, Ordering::SeqCst);
    for _ in 0..one_by_one {
        match call(&mut sender, say("o=")).await? {
            Response::Said { .. } => {}
            other => bail!("say refused: {other:?}"),
        }
        tokio::time::timeout(ANSWER_TIMEOUT, all_there.notified())
            .await
            .context("a message did not reach every member")?;
    }
    let mut tick = tokio::time::interval(interval);
    let sent_from = Instant::now();
    for _ in 0..messages {
        tick.tick().await;
        match call(&mut sender, say("t=")).await? {
            Response::Said { .. } => {}
            other => bail!("say refused: {other:?} (raise [chat] messages_per_sec)"),
        }
    }
    let send_secs = sent_from.elapsed().as_secs_f64();
    while let Some(r) = tasks.join_next().await {
        r.context("a member task panicked")?;
    }
    let mut lat = std::mem::take(&mut *latencies.lock().await);
    lat.sort_unstable();
    let mut one = std::mem::take(&mut *alone.lock().await);
    one.sort_unstable();
    let pct = |lat: &[u64], p: f64| -> f64 {
        lat.get(((lat.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .map_or(f64::NAN, |&us| us as f64 / 1000.0)
    };
    println!(
        "figure fanout_one: members={members} messages={one_by_one} deliveries={} \
         expected={} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        one.len(),
        members * one_by_one,
        pct(&one, 0.50),
        pct(&one, 0.99),
        pct(&one, 1.0),
    );
    let expected = (members * messages) as u64;
    let delivered = lat.len() as u64;
    println!(
        "figure fanout: members={members} messages={messages} interval_ms={} \
         deliveries={delivered} expected={expected} lost={} missed={} p50_ms={:.2} \
         p99_ms={:.2} max_ms={:.2} setup_secs={setup_secs:.1} send_secs={send_secs:.2}",
        interval.as_millis(),
        expected - delivered,
        missed.load(Ordering::SeqCst),
        pct(&lat, 0.50),
        pct(&lat, 0.99),
        pct(&lat, 1.0),
    );
    Ok(())
}

/// Resident memory of process `pid`, KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

async fn idle(server: Arc<Server>, password: &str, pid: u32, n: usize) -> Result<()> {
    let (mut first, token) = server.login("bench", password).await?;
    let baseline = rss_kib(pid)?;
    let opening = Arc::new(Semaphore::new(OPENING));
    let held = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (server, opening, held, token) =
            (server.clone(), opening.clone(), held.clone(), token.clone());
        // Four source addresses, so no one address runs short of ports.
        let source: IpAddr = format!("127.0.0.{}", 10 + i % 4).parse()?;
        tasks.spawn(async move {
            let _permit = opening.acquire().await?;
            let conn = server.authenticated(&token, Some(source)).await?;
            held.lock().await.push(conn);
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.context("a connection task panicked")?
            .context("a connection failed")?;
    }
    let open_secs = started.elapsed().as_secs_f64();
    // A round trip after the last login: the daemon's bookkeeping for them is done.
    anyhow::ensure!(call(&mut first, Request::Ping).await? == Response::Pong);
    let loaded = rss_kib(pid)?;
    let mut held = held.lock().await;
    // Every held connection is still served (a sample of them).
    for conn in held.iter_mut().step_by((n / 100).max(1)) {
        anyhow::ensure!(call(conn, Request::Ping).await? == Response::Pong);
    }
    println!(
        "figure idle: connections={n} open_secs={open_secs:.1} rss_baseline_kib={baseline} \
         rss_loaded_kib={loaded} per_connection_kib={:.1}",
        loaded.saturating_sub(baseline) as f64 / n as f64
    );
    Ok(())
}

async fn relogin(
    server: Arc<Server>,
    password: &str,
    seconds: Duration,
    concurrency: usize,
) -> Result<()> {
    let (_first, token) = server.login("bench", password).await?;
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + seconds;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..concurrency {
        let (server, token, done) = (server.clone(), token.clone(), done.clone());
        let source: IpAddr = format!("127.0.0.{}", 20 + i % 8).parse()?;
        tasks.spawn(async move {
            while Instant::now() < until {
                let conn = server.authenticated(&token, Some(source)).await?;
                drop(conn);
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.context("a login task panicked")?
            .context("a token login failed")?;
    }
    let secs = started.elapsed().as_secs_f64();
    let n = done.load(Ordering::SeqCst);
    println!(
        "figure relogin: logins={n} seconds={secs:.2} concurrency={concurrency} per_second={:.0}",
        n as f64 / secs
    );
    Ok(())
}
