//! What the hostile-peer, abuse, scale and timing tests share: a peer that may be
//! refused (unlike the kit's strict [`RawConn`](xfer_e2e::RawConn), every step returns
//! what happened instead of panicking), the daemon's resident memory, and enough file
//! descriptors for thousands of connections in one process.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_util::codec::Framed;
use xfer_e2e::{DEADLINE, Dial, tls_dial};
use xfer_proto::{ClientCodec, Frame, Hello, MAX_FRAME_LEN, Request, Response, Secret};

/// A TLS connection past the hello, reading frames up to the post-login limit (so
/// answers near [`MAX_FRAME_LEN`] are read, not refused by this side).
pub type Peer = Framed<TlsStream<TcpStream>, ClientCodec>;

/// What a peer heard next.
#[derive(Debug)]
pub enum Heard {
    /// A message.
    Answer(Response),
    /// The server closed the connection (EOF, reset, or a frame this side cannot read).
    Closed(String),
    /// Nothing within the wait.
    Silent,
}

/// Opens TLS from `source` (any 127.0.0.0/8 address) and exchanges hellos.
pub async fn hello(
    addr: SocketAddr,
    fingerprint: &str,
    source: Option<IpAddr>,
) -> Result<Peer, String> {
    let dial = Dial {
        source,
        ..Dial::default()
    };
    let tls = tls_dial(addr, fingerprint, dial)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let mut peer = Framed::new(tls, ClientCodec::new(MAX_FRAME_LEN));
    peer.send(Frame::Hello(Hello::current("standing")))
        .await
        .map_err(|e| format!("sending hello: {e}"))?;
    match tokio::time::timeout(DEADLINE, peer.next()).await {
        Ok(Some(Ok(Frame::Hello(_)))) => Ok(peer),
        other => Err(format!("no hello back: {other:?}")),
    }
}

/// The next message within `wait`, skipping chat events.
pub async fn hear(peer: &mut Peer, wait: Duration) -> Heard {
    let until = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(until, peer.next()).await {
            Err(_) => return Heard::Silent,
            Ok(None) => return Heard::Closed("EOF".into()),
            Ok(Some(Err(e))) => return Heard::Closed(e.to_string()),
            Ok(Some(Ok(Frame::Message(Response::Event(_))))) => {}
            Ok(Some(Ok(Frame::Message(m)))) => return Heard::Answer(m),
            Ok(Some(Ok(other))) => return Heard::Closed(format!("unexpected frame {other:?}")),
        }
    }
}

/// Sends `req` and returns what came back within [`DEADLINE`].
pub async fn ask(peer: &mut Peer, req: Request) -> Heard {
    if let Err(e) = peer.send(Frame::Message(req)).await {
        return Heard::Closed(format!("send: {e}"));
    }
    hear(peer, DEADLINE).await
}

/// Reads until an error answer or a close; what ended it, or why that never came.
pub async fn error_or_close(peer: &mut Peer) -> Result<String, String> {
    loop {
        match hear(peer, DEADLINE).await {
            Heard::Answer(Response::Error { code, message }) => {
                return Ok(format!("{code:?}: {message}"));
            }
            Heard::Answer(_) => {}
            Heard::Closed(why) => return Ok(format!("closed ({why})")),
            Heard::Silent => return Err(format!("neither an error nor a close in {DEADLINE:?}")),
        }
    }
}

/// Authenticates `peer` with a session token.
pub async fn authenticate(peer: &mut Peer, token: &str) -> Result<(), String> {
    let req = Request::Authenticate {
        token: Secret::new(token),
    };
    match ask(peer, req).await {
        Heard::Answer(Response::LoggedIn { .. }) => Ok(()),
        other => Err(format!("authenticate: {other:?}")),
    }
}

/// A full login (TLS, hello, password) from `source`; how long it took.
pub async fn timed_login(
    addr: SocketAddr,
    fingerprint: &str,
    source: Option<IpAddr>,
    user: &str,
    password: &str,
) -> Result<Duration, String> {
    let start = Instant::now();
    let mut peer = hello(addr, fingerprint, source).await?;
    let req = Request::Login {
        user: user.into(),
        password: Secret::new(password),
    };
    match ask(&mut peer, req).await {
        Heard::Answer(Response::LoggedIn { .. }) => Ok(start.elapsed()),
        other => Err(format!("login: {other:?}")),
    }
}

/// A line of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`).
pub fn status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

/// The process's resident memory now, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}

/// Raises this process's open-file limit to at least `want` (up to the hard limit);
/// daemons started afterwards inherit it. Uses util-linux `prlimit` rather than a
/// dependency. Panics when the hard limit is lower.
pub fn raise_nofile(want: u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("/proc/self/limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("an open-files line");
    let mut fields = line["Max open files".len()..].split_whitespace();
    let mut next = || -> u64 {
        match fields.next() {
            Some("unlimited") | None => u64::MAX,
            Some(n) => n.parse().expect("a number"),
        }
    };
    let (soft, hard) = (next(), next());
    if soft >= want {
        return;
    }
    assert!(
        hard >= want,
        "need {want} open files, the hard limit is {hard} (raise it with ulimit -Hn)"
    );
    let status = std::process::Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={hard}:{hard}"))
        .status()
        .expect("running prlimit");
    assert!(status.success(), "prlimit --nofile={hard} failed");
}

/// The runtime these tests run in: two workers, as the CI machine has two cores.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A number from the environment (the long scripts scale the tests up), else `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Median of some durations, in milliseconds.
pub fn median_ms(samples: &mut [Duration]) -> f64 {
    samples.sort();
    let n = samples.len();
    if n == 0 {
        return f64::NAN;
    }
    let mid = if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2
    };
    mid.as_secs_f64() * 1000.0
}
