//! Chat and files to people, end to end: the real `xfer chat` (say, history, follow,
//! interactive with piped input) and `xfer send` against the real daemon, plus raw
//! protocol connections where a test needs hundreds of clients or a flood.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt as _;
use std::sync::Arc;
use std::time::Instant;

use tempfile::TempDir;
use xfer_e2e::{
    CHUNK, Client, DEADLINE, Daemon, MIB, PASSWORD, RawConn, Running, blake3_hex, poll,
    random_bytes, write_file,
};
use xfer_proto::{ChatEvent, MessageBody, Request, Response};

/// Most missed messages `xfer chat` fetches from history after one notice; a notice of
/// more leaves the oldest to `/history` (`MAX_CATCH_UP` in cli/src/chat/session.rs).
const MAX_CATCH_UP: usize = 2000;

/// Chat limits out of the way for tests that flood on purpose.
const FAST_CONFIG: &str = "[chat]\nmessages_per_sec = 1000000\nmessage_burst = 1000000\n";

fn users(names: &[&str], config: Option<&str>) -> (Daemon, Vec<Client>) {
    let d = Daemon::start_with(names, config);
    let clients = names
        .iter()
        .map(|n| {
            let c = Client::new();
            c.login(&d, n, PASSWORD);
            c
        })
        .collect();
    (d, clients)
}

fn alice_and_bob() -> (Daemon, Client, Client) {
    let (d, mut c) = users(&["alice", "bob"], None);
    let b = c.pop().expect("bob");
    let a = c.pop().expect("alice");
    (d, a, b)
}

fn say(c: &Client, target: &str, text: &str) {
    let out = c.xfer(&["chat", target, "--say", text], "");
    assert_eq!(out.code(), 0, "--say failed: {}", out.stderr());
    assert_eq!(out.stdout(), "", "--say prints nothing on success");
}

/// `2026-11-21T10:02:03Z`
fn is_stamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// Lines `TIME TARGET <FROM> TEXT` of `out` with this target, sender and text.
fn count_messages(out: &str, target: &str, from: &str, text: &str) -> usize {
    let rest = format!(" {target} <{from}> {text}");
    out.lines()
        .filter(|l| l.len() > 20 && is_stamp(&l[..20]) && l[20..] == rest)
        .count()
}

fn has_message(out: &str, target: &str, from: &str, text: &str) -> bool {
    count_messages(out, target, from, text) > 0
}

fn wait_message(f: &Running, target: &str, from: &str, text: &str) -> String {
    f.wait_stdout(DEADLINE, |s| has_message(s, target, from, text))
        .unwrap_or_else(|| {
            panic!(
                "no `{target} <{from}> {text}` line within {DEADLINE:?}; stdout:\n{}\nstderr:\n{}",
                f.stdout_so_far(),
                f.stderr_so_far()
            )
        })
}

#[test]
fn a_said_line_reaches_a_follower_and_outlives_a_daemon_restart() {
    let (d, a, b) = alice_and_bob();
    let f = b.follow(&["#general"]);
    let fj = b.follow(&["#general", "--json"]);
    say(&a, "#general", "hi");
    wait_message(&f, "#general", "alice", "hi");

    let json = fj
        .wait_stdout(DEADLINE, |s| s.contains("\"hi\""))
        .expect("json follower prints it");
    let v: serde_json::Value = serde_json::from_str(json.lines().next().expect("a line"))
        .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {json}"));
    assert!(v["id"].as_u64().is_some(), "{v}");
    assert!(is_stamp(v["time"].as_str().unwrap_or("")), "{v}");
    assert!(v["time_unix_ms"].as_u64().is_some(), "{v}");
    assert_eq!(v["from"], "alice");
    assert_eq!(v["target"], "#general");
    assert_eq!(v["text"], "hi");

    let d = d.kill9_and_restart();
    let h = b.xfer(&["chat", "#general", "--history", "10"], "");
    assert_eq!(h.code(), 0, "{}", h.stderr());
    assert!(
        has_message(&h.stdout(), "#general", "alice", "hi"),
        "history after a restart: {}",
        h.stdout()
    );

    // The follower reconnects by itself, replays what it missed, shows nothing twice.
    say(&a, "#general", "after the restart");
    let out = wait_message(&f, "#general", "alice", "after the restart");
    assert_eq!(count_messages(&out, "#general", "alice", "hi"), 1, "{out}");
    assert!(
        f.wait_stderr(DEADLINE, "reconnected"),
        "{}",
        f.stderr_so_far()
    );
    drop(d);
}

#[test]
fn a_direct_message_to_an_offline_user_arrives_when_they_connect() {
    let (_d, a, b) = alice_and_bob();
    say(&a, "@bob", "are you there?");
    let f = b.follow(&[]);
    wait_message(&f, "@bob", "alice", "are you there?");

    // And live, while connected.
    say(&a, "@bob", "still there?");
    wait_message(&f, "@bob", "alice", "still there?");

    let out = a.xfer(&["chat", "@nobody", "--say", "hello?"], "");
    assert_eq!(out.code(), 5, "unknown user: {}", out.stderr());
    assert_eq!(out.stderr().lines().count(), 1, "{}", out.stderr());
    let out = a.xfer(&["chat", "general", "--say", "x"], "");
    assert_eq!(out.code(), 2, "a target needs # or @: {}", out.stderr());
    let long = "x".repeat(4001);
    let out = a.xfer(&["chat", "#general", "--say", &long], "");
    assert_eq!(out.code(), 2, "too long: {}", out.stderr());
}

#[test]
fn a_file_sent_to_an_offline_user_is_announced_pulled_intact_and_private() {
    let (d, a, b) = alice_and_bob();
    let tmp = TempDir::new().unwrap();
    let data = random_bytes(3 * CHUNK + 123, 7);
    let path = write_file(tmp.path(), "photo.bin", &data);
    let out = a.xfer(&["send", "bob", &path], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert!(
        out.stdout().contains("photo.bin -> bob"),
        "{}",
        out.stdout()
    );

    // Stored in bob's space, complete, and not in alice's.
    let stored = std::fs::read(d.files_dir("bob").join("inbox/alice/photo.bin"))
        .expect("the file is in bob's inbox");
    assert_eq!(blake3_hex(&stored), blake3_hex(&data));
    assert!(!d.files_dir("alice").join("inbox/alice/photo.bin").exists());

    let out = a.xfer(&["send", "nobody", &path], "");
    assert_eq!(out.code(), 5, "unknown recipient: {}", out.stderr());

    // Sending the same content again is a no-op; different content needs --force.
    let out = a.xfer(&["send", "bob", &path], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert!(out.stdout().contains("already there"), "{}", out.stdout());
    let other = TempDir::new().unwrap();
    let changed = write_file(other.path(), "photo.bin", b"different");
    let out = a.xfer(&["send", "bob", &changed], "");
    assert_eq!(out.code(), 6, "conflict: {}", out.stderr());
    assert!(
        out.stderr()
            .contains("bob's inbox already has photo.bin from you; use --force to replace it"),
        "{}",
        out.stderr()
    );

    // bob hears of it when he next connects.
    let f = b.follow(&[]);
    let notice = format!(
        " @bob [alice] file inbox/alice/photo.bin {} {}",
        data.len(),
        blake3_hex(&data)
    );
    let seen = f.wait_stdout(DEADLINE, |s| {
        s.lines()
            .any(|l| l.len() > 20 && is_stamp(&l[..20]) && l[20..] == notice)
    });
    assert!(
        seen.is_some(),
        "no notice `{notice}`:\n{}\n{}",
        f.stdout_so_far(),
        f.stderr_so_far()
    );

    let dest = tmp.path().join("got.bin");
    let dest_arg = dest.display().to_string();
    let out = b.xfer(&["pull", "-q", "inbox/alice/photo.bin", &dest_arg], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert_eq!(
        blake3_hex(&std::fs::read(&dest).unwrap()),
        blake3_hex(&data)
    );

    // alice sees her own namespace only: her inbox holds what was sent to her, and
    // nothing of bob's is reachable by any path.
    let note = write_file(tmp.path(), "note.txt", b"thanks!");
    let out = b.xfer(&["send", "-q", "alice", &note], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    let out = a.xfer(&["ls", "inbox"], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert_eq!(out.stdout(), "bob/\n", "alice's inbox");
    let out = a.xfer(&["ls", "inbox/bob"], "");
    assert_eq!(out.stdout(), "note.txt\n");
    let stolen = tmp.path().join("stolen.bin");
    let stolen_arg = stolen.display().to_string();
    for p in [
        "inbox/alice/photo.bin",
        "/inbox/alice/photo.bin",
        "../bob/files/inbox/alice/photo.bin",
        "../../bob/files/inbox/alice/photo.bin",
        "inbox/../../bob/files/inbox/alice/photo.bin",
        "bob/inbox/alice/photo.bin",
        "@bob/inbox/alice/photo.bin",
        "~bob/inbox/alice/photo.bin",
        "users/bob/files/inbox/alice/photo.bin",
    ] {
        let out = a.xfer(&["pull", "-q", p, &stolen_arg], "");
        assert_ne!(out.code(), 0, "alice pulled {p}");
        assert!(!stolen.exists(), "alice got bob's file through {p}");
        let out = a.xfer(&["ls", "-l", p], "");
        assert!(
            out.code() != 0 && !out.stdout().contains("photo.bin"),
            "alice listed {p}: {}",
            out.stdout()
        );
    }

    // --force replaces what alice sent before, and bob, online now, is told at once.
    let out = a.xfer(&["send", "--force", "bob", &changed], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    let stored = std::fs::read(d.files_dir("bob").join("inbox/alice/photo.bin")).unwrap();
    assert_eq!(stored, b"different");
    let live = format!(
        " @bob [alice] file inbox/alice/photo.bin 9 {}",
        blake3_hex(b"different")
    );
    let seen = f.wait_stdout(DEADLINE, |s| s.lines().any(|l| l.ends_with(&live)));
    assert!(seen.is_some(), "no live notice: {}", f.stdout_so_far());
}

#[test]
fn an_interrupted_send_resumes_when_run_again() {
    let (d, a, _b) = alice_and_bob();
    let tmp = TempDir::new().unwrap();
    let data = random_bytes(16 * CHUNK + 5, 9);
    let path = write_file(tmp.path(), "big.bin", &data);
    let mut send = a.spawn(&["send", "-q", "--limit-rate", "2M", "bob", &path]);
    let held = poll(DEADLINE, || {
        assert!(
            !send.finished(),
            "send ended before it could be cut: {}",
            send.stderr_so_far()
        );
        d.partial_files("bob")
            .first()
            .and_then(|p| std::fs::metadata(p).ok())
            .map(|m| m.blocks() * 512)
            .filter(|&bytes| bytes >= 4 * MIB)
    });
    assert!(held.is_some(), "bob's inbox never held 4 MiB of the send");
    send.kill9();

    let out = a.xfer(&["send", "bob", &path], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert!(
        out.stdout().contains("big.bin -> bob  resuming at"),
        "{}",
        out.stdout()
    );
    let stored = std::fs::read(d.files_dir("bob").join("inbox/alice/big.bin")).unwrap();
    assert_eq!(blake3_hex(&stored), blake3_hex(&data));
}

#[test]
fn escape_sequences_in_messages_are_shown_escaped() {
    let (_d, a, b) = alice_and_bob();
    let f = b.follow(&["#general"]);
    let hostile = "\x1b[2J\x1b]0;pwned\x07";
    say(&a, "#general", hostile);
    wait_message(&f, "#general", "alice", "\\x1b[2J\\x1b]0;pwned\\x07");
    let raw = f.stdout_bytes();
    assert!(
        !raw.contains(&0x1b) && !raw.contains(&0x07),
        "raw control bytes reached the terminal: {raw:?}"
    );

    // A right-to-left override would show "invoice\u{202e}gpj.exe" as "invoice…exe.jpg".
    let spoof = "invoice\u{202e}gpj.exe";
    let rlo = "\u{202e}".as_bytes();
    let has_rlo = |b: &[u8]| b.windows(rlo.len()).any(|w| w == rlo);
    say(&a, "#general", spoof);
    wait_message(&f, "#general", "alice", "invoice\\u{202e}gpj.exe");
    assert!(!has_rlo(&f.stdout_bytes()), "{}", f.stdout_so_far());

    let h = b.xfer(&["chat", "#general", "--history", "5"], "");
    assert!(!h.0.stdout.contains(&0x1b), "{}", h.stdout());
    assert!(!has_rlo(&h.0.stdout), "{}", h.stdout());
    let j = b.xfer(&["chat", "#general", "--history", "5", "--json"], "");
    assert!(!j.0.stdout.contains(&0x1b), "{}", j.stdout());
    assert!(!has_rlo(&j.0.stdout), "{}", j.stdout());
    let texts: Vec<serde_json::Value> = j
        .stdout()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["text"].clone())
        .collect();
    assert_eq!(texts, [hostile, spoof], "JSON carries the texts exactly");

    // Interactive mode escapes too.
    let out = b.xfer(&["chat", "#general"], "/quit\n");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert!(out.stdout().contains("\\x1b[2J"), "{}", out.stdout());
    assert!(
        out.stdout().contains("invoice\\u{202e}gpj.exe"),
        "{}",
        out.stdout()
    );
    assert!(!out.0.stdout.contains(&0x1b), "{}", out.stdout());
    assert!(!has_rlo(&out.0.stdout), "{}", out.stdout());
}

#[test]
fn interactive_chat_reads_piped_lines() {
    let (_d, a, b) = alice_and_bob();
    let f = b.follow(&["#x"]);
    let script = "/join #x\nhello from a pipe\n//slash literal\n/who\n/nonsense\n/quit\nnot sent\n";
    let out = a.xfer(&["chat"], script);
    assert_eq!(out.code(), 0, "{}", out.stderr());
    let shown = out.stdout();
    assert!(shown.contains("joined #x"), "{shown}");
    assert!(shown.contains("#x <alice> hello from a pipe"), "{shown}");
    assert!(shown.contains("#x: alice, bob"), "/who: {shown}");
    assert!(shown.contains("unknown command /nonsense"), "{shown}");
    let seen = wait_message(&f, "#x", "alice", "/slash literal");
    assert!(
        has_message(&seen, "#x", "alice", "hello from a pipe"),
        "{seen}"
    );
    assert!(!seen.contains("not sent"), "lines after /quit are not read");

    // A direct conversation, ended by the end of input.
    let out = a.xfer(&["chat", "@bob"], "psst\n");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    wait_message(&f, "@bob", "alice", "psst");
}

/// Sends `count` messages of about 4,000 bytes to `#flood` as alice over one raw
/// connection, then a marker; returns when the marker was accepted.
async fn flood(d: &Daemon, count: usize) -> Instant {
    let mut conn = RawConn::connect(d.addr, &d.fingerprint, None).await;
    conn.login("alice", PASSWORD).await.expect("alice logs in");
    let filler = "x".repeat(3990);
    for i in 0..count {
        let req = Request::Say {
            target: "#flood".parse().unwrap(),
            text: format!("{i:05} {filler}"),
        };
        let r = conn.request(req).await;
        assert!(matches!(r, Some(Response::Said { .. })), "say {i}: {r:?}");
    }
    let sent = Instant::now();
    let req = Request::Say {
        target: "#flood".parse().unwrap(),
        text: "MARKER".into(),
    };
    let r = conn.request(req).await;
    assert!(matches!(r, Some(Response::Said { .. })), "marker: {r:?}");
    sent
}

#[test]
fn a_stopped_reader_does_not_delay_the_others() {
    const FLOOD: usize = 3000;
    let (d, c) = users(&["alice", "bob", "carol"], Some(FAST_CONFIG));
    let healthy = c[1].follow(&["#flood"]);
    let stopped = c[2].follow(&["#flood"]);
    stopped.signal("STOP");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let flood_started = Instant::now();
    let sent = rt.block_on(flood(&d, FLOOD));
    let flood_took = flood_started.elapsed();
    let marker = |s: &str| s.contains("<alice> MARKER");
    let got = poll(DEADLINE, || {
        marker(&healthy.stdout_tail(4096)).then_some(())
    });
    let delivered = sent.elapsed();
    stopped.signal("CONT");
    assert!(got.is_some(), "the healthy reader never got the marker");
    eprintln!(
        "flood of {FLOOD} x 4 KB took {flood_took:?}; marker reached the healthy reader in {delivered:?}"
    );
    let out = healthy.stdout_so_far();
    assert_eq!(
        out.lines().filter(|l| l.contains(" <alice> ")).count(),
        FLOOD + 1,
        "the healthy reader got every message"
    );

    // The stopped reader, resumed, is told what it missed (the server skipped it rather
    // than wait) and fetches that from history: every message shows, once, unless one
    // notice told of more than the client catches up at a time.
    let resumed = Instant::now();
    let missed = || -> usize {
        stopped
            .stderr_so_far()
            .lines()
            .filter_map(|l| {
                l.strip_prefix("xfer: missed ")?
                    .split(' ')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .max()
            .unwrap_or(0)
    };
    // The catch-up moves some 8 MB through a debug build (9 s seen at load 12): it is
    // waited for as an event, with room to spare.
    let done = stopped.wait_stdout(2 * DEADLINE, |s| {
        marker(s) && (flood_indexes(s).len() == FLOOD + 1 || missed() > MAX_CATCH_UP)
    });
    let out = stopped.stdout_so_far();
    let shown = flood_indexes(&out);
    eprintln!(
        "the resumed reader showed {} messages after {:?}; it said: {}",
        shown.len(),
        resumed.elapsed(),
        stopped.stderr_so_far()
    );
    assert!(
        done.is_some(),
        "the resumed reader shows {} of {} messages; the largest missed notice was {}: {}",
        shown.len(),
        FLOOD + 1,
        missed(),
        stopped.stderr_so_far()
    );
    let dupes: Vec<_> = shown.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dupes.is_empty(), "shown twice: {dupes:?}");
}

/// How often each flood message (by its 5-digit index, or `MARKER`) appears in `out`.
fn flood_indexes(out: &str) -> HashMap<&str, usize> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for l in out.lines().filter_map(|l| l.split(" <alice> ").nth(1)) {
        *seen.entry(l.get(..5).unwrap_or(l)).or_default() += 1;
    }
    seen
}

#[test]
fn two_hundred_clients_lose_no_messages() {
    const CONNS: usize = 200;
    const PER_CONN: usize = 2;
    const TOTAL: usize = CONNS * PER_CONN;
    const PROCESSES: usize = 3;
    let names: Vec<String> = (0..20).map(|i| format!("u{i:02}")).collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    // 200 connections from one address at once, all before login: more than the
    // default `unauthenticated_per_source` (32) and `unauthenticated_start` (64) allow.
    let config = format!(
        "{FAST_CONFIG}[limits]\nunauthenticated_per_source = 256\nunauthenticated_start = 256\n"
    );
    let d = Daemon::start_with(&name_refs, Some(&config));

    // A few real `xfer chat --follow` processes...
    let followers: Vec<(Client, Running)> = (0..PROCESSES)
        .map(|i| {
            let c = Client::new();
            c.login(&d, &names[i], PASSWORD);
            let f = c.follow(&["#crowd"]);
            (c, f)
        })
        .collect();

    // ...and raw connections for the rest: one login per user, tokens reused.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let results = rt.block_on(async {
        let mut tokens = Vec::new();
        for n in &names {
            let mut c = RawConn::connect(d.addr, &d.fingerprint, None).await;
            tokens.push(c.login(n, PASSWORD).await.expect("login"));
        }
        let barrier = Arc::new(tokio::sync::Barrier::new(CONNS));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..CONNS {
            let token = tokens[i % tokens.len()].clone();
            let (addr, fp) = (d.addr, d.fingerprint.clone());
            let barrier = Arc::clone(&barrier);
            tasks.spawn(
                async move { crowd_member(i, addr, fp, token, barrier, PER_CONN, TOTAL).await },
            );
        }
        let mut results = Vec::new();
        while let Some(r) = tasks.join_next().await {
            results.push(r.expect("member task"));
        }
        results
    });
    eprintln!(
        "{CONNS} raw connections logged in, joined and exchanged {TOTAL} messages \
         ({} deliveries) in {:?}",
        TOTAL * (CONNS + PROCESSES),
        started.elapsed()
    );
    let short: Vec<_> = results.iter().filter(|(_, n, _)| *n != TOTAL).collect();
    assert!(
        short.is_empty(),
        "connections that lost messages (id, seen, missed): {short:?}"
    );
    assert!(results.iter().all(|(_, _, missed)| *missed == 0));

    for (_, f) in &followers {
        let distinct = |s: &str| {
            s.lines()
                .filter(|l| l.contains(" #crowd <u"))
                .filter_map(|l| l.rsplit(' ').next().map(str::to_owned))
                .collect::<HashSet<_>>()
                .len()
        };
        let all = f.wait_stdout(DEADLINE, |s| distinct(s) == TOTAL);
        assert!(
            all.is_some(),
            "an xfer follower printed {} of {TOTAL} messages: {}",
            distinct(&f.stdout_so_far()),
            f.stderr_so_far()
        );
        assert_eq!(
            f.stdout_so_far().lines().count(),
            TOTAL,
            "each message exactly once"
        );
    }
}

/// One of the crowd: joins `#crowd`, waits for everyone, says `per_conn` messages and
/// reads until it has seen all `total` (its own included); returns (index, messages
/// seen, missed count).
async fn crowd_member(
    i: usize,
    addr: std::net::SocketAddr,
    fingerprint: String,
    token: String,
    barrier: Arc<tokio::sync::Barrier>,
    per_conn: usize,
    total: usize,
) -> (usize, usize, u64) {
    let mut c = RawConn::connect(addr, &fingerprint, None).await;
    assert!(c.authenticate(&token).await, "authenticate {i}");
    let mut events = Vec::new();
    let r = c
        .request_collecting(Request::ChatOpen { after: None }, &mut events)
        .await;
    assert!(matches!(r, Some(Response::ChatOpened { .. })), "{i}: {r:?}");
    let join = Request::Join {
        channel: "#crowd".parse().unwrap(),
        history: 0,
        after: None,
    };
    let r = c.request_collecting(join, &mut events).await;
    assert!(matches!(r, Some(Response::Joined { .. })), "{i}: {r:?}");
    barrier.wait().await;
    let mut seen: HashSet<String> = HashSet::new();
    for k in 0..per_conn {
        let text = format!("c{i:03}-{k}");
        let say = Request::Say {
            target: "#crowd".parse().unwrap(),
            text: text.clone(),
        };
        let r = c.request_collecting(say, &mut events).await;
        assert!(matches!(r, Some(Response::Said { .. })), "{i}: {r:?}");
        seen.insert(text);
    }
    let mut missed = 0;
    let mut take = |events: &mut Vec<ChatEvent>, seen: &mut HashSet<String>| {
        for e in events.drain(..) {
            match e {
                ChatEvent::Message(m) if m.target == "#crowd" => {
                    if let MessageBody::Text(t) = m.body {
                        seen.insert(t);
                    }
                }
                ChatEvent::Missed { count, .. } => missed += count,
                _ => {}
            }
        }
    };
    take(&mut events, &mut seen);
    while seen.len() < total {
        match c.next().await {
            Some(Response::Event(e)) => events.push(*e),
            _ => break,
        }
        take(&mut events, &mut seen);
    }
    (i, seen.len(), missed)
}
