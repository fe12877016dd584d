//! Measurements for the long suite (docs/TESTING.md, "Scale" and "Timing"), `#[ignore]`d
//! here: tests/long/suites/70-scale.sh and 80-timing.sh run them in release and record
//! what they print. Each still asserts what must hold whatever the figure: every
//! connection is served, every attempt is answered.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{Mutex, Semaphore};
use xfer_e2e::{Daemon, PASSWORD, RawConn};
use xfer_proto::{Request, Response, Secret};

use crate::kit::{self, Heard, ask, authenticate, hello, median_ms, timed_login};

/// Idle authenticated connections from this (client) process: the daemon's resident
/// memory per connection. `XFER_SCALE_CONNS` sets how many (10,000).
#[test]
#[ignore = "long suite: tests/long/suites/70-scale.sh"]
fn idle_authenticated_connections_cost_little_memory_each() {
    // The lock is held outside the runtime: never across an await.
    let _one = crate::serial();
    kit::runtime().block_on(idle_authenticated_connections_cost_little_memory_each_run());
}

async fn idle_authenticated_connections_cost_little_memory_each_run() {
    let n = kit::env_or("XFER_SCALE_CONNS", 10_000) as usize;
    kit::raise_nofile(n as u64 + 1024);
    let config = format!(
        "[limits]\nmax_connections = {}\nunauthenticated_per_source = 1024\n\
         unauthenticated_start = 100000\nunauthenticated_full = 100000\n",
        n + 64
    );
    let d = Daemon::start_with(&["alice"], Some(&config));
    let mut first = RawConn::connect(d.addr, &d.fingerprint, None).await;
    let token = first.login("alice", PASSWORD).await.expect("login");
    let pid = d.pid();
    let baseline = kit::rss_kib(pid);

    let held = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let connects = Arc::new(Semaphore::new(64));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (held, connects, token) = (held.clone(), connects.clone(), token.clone());
        let (addr, fp) = (d.addr, d.fingerprint.clone());
        // Four client addresses, so no one address runs short of ports.
        let source: IpAddr = format!("127.0.0.{}", 10 + i % 4).parse().unwrap();
        tasks.spawn(async move {
            let _permit = connects.acquire().await.expect("open");
            let mut peer = hello(addr, &fp, Some(source)).await?;
            authenticate(&mut peer, &token).await?;
            held.lock().await.push(peer);
            Ok::<_, String>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("task")
            .unwrap_or_else(|e| panic!("a connection failed: {e}"));
    }
    let took = started.elapsed();
    // The last answers went out before the daemon's bookkeeping settled; a login
    // round trip after them is a fence.
    let login = timed_login(d.addr, &d.fingerprint, None, "alice", PASSWORD)
        .await
        .expect("a login while all are held");
    let loaded = kit::rss_kib(pid);
    let per_conn = (loaded.saturating_sub(baseline)) as f64 / n as f64;
    println!(
        "figure scale: connections={n} open_secs={:.1} rss_baseline_kib={baseline} \
         rss_loaded_kib={loaded} per_connection_kib={per_conn:.1} login_while_held_ms={:.1}",
        took.as_secs_f64(),
        login.as_secs_f64() * 1000.0
    );
    let mut held = held.lock().await;
    assert_eq!(held.len(), n);
    // Every held connection is still served.
    for peer in held.iter_mut().step_by((n / 100).max(1)) {
        assert!(matches!(
            ask(peer, Request::Ping).await,
            Heard::Answer(Response::Pong)
        ));
    }
}

/// Wrong password vs unknown user, interleaved: the medians of the two must not tell
/// a prober which names exist. `XFER_TIMING_ROUNDS` sets how many of each (200).
#[test]
#[ignore = "long suite: tests/long/suites/80-timing.sh"]
fn wrong_password_and_unknown_user_take_the_same_time() {
    // The lock is held outside the runtime: never across an await.
    let _one = crate::serial();
    kit::runtime().block_on(wrong_password_and_unknown_user_take_the_same_time_run());
}

async fn wrong_password_and_unknown_user_take_the_same_time_run() {
    let rounds = kit::env_or("XFER_TIMING_ROUNDS", 200) as usize;
    // Throttling would answer later attempts without a password check: off here.
    let config = "[login]\nmax_attempts_per_connection = 100000\nsource_burst = 1000000\n\
                  user_burst = 1000000\n";
    let d = Daemon::start_with(&["alice"], Some(config));
    let mut peer = hello(d.addr, &d.fingerprint, None).await.expect("hello");
    let (mut wrong, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..rounds * 2 {
        let user = if i % 2 == 0 { "alice" } else { "mallory" };
        let req = Request::Login {
            user: user.into(),
            password: Secret::new("not the password at all"),
        };
        let start = Instant::now();
        let heard = ask(&mut peer, req).await;
        let took = start.elapsed();
        assert!(
            matches!(heard, Heard::Answer(Response::Error { .. })),
            "attempt {i} as {user}: {heard:?}"
        );
        if i % 2 == 0 { &mut wrong } else { &mut unknown }.push(took);
    }
    let (w, u) = (median_ms(&mut wrong), median_ms(&mut unknown));
    let diff = (w - u).abs() / w.max(u) * 100.0;
    println!(
        "figure timing: rounds={rounds} wrong_password_median_ms={w:.2} \
         unknown_user_median_ms={u:.2} difference_pct={diff:.2}"
    );
    assert!(w > 0.0 && u > 0.0, "both were timed");
}
