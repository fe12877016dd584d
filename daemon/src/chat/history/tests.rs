use std::io::Write as _;

use super::logfile::MAX_RECORD_LEN;
use super::*;

const DAY_MS: u64 = 24 * 3600 * 1000;

fn config() -> HistoryConfig {
    HistoryConfig {
        max_messages: 0,
        retention_ms: 0,
        max_channels: 100,
        max_channels_per_user: 0,
        lone_message_ms: 0,
    }
}

fn lab() -> ConvKey {
    ConvKey::Channel("lab".into())
}

fn t(s: &str) -> Target {
    Target::parse(s).unwrap()
}

fn text(s: &str) -> MessageBody {
    MessageBody::Text(s.into())
}

fn texts(page: &Page) -> Vec<String> {
    page.messages
        .iter()
        .map(|m| match &m.body {
            MessageBody::Text(t) => t.clone(),
            MessageBody::File { path, .. } => path.clone(),
        })
        .collect()
}

async fn say(h: &History, key: &ConvKey, s: &str) -> ChatMessage {
    h.append(key, "alice", t("#lab"), text(s), |_| {})
        .await
        .unwrap()
}

fn raw_line(id: u64, ts: u64, s: &str) -> Vec<u8> {
    encode(&ChatMessage {
        id,
        time_unix_ms: ts,
        from: "alice".into(),
        target: t("#lab"),
        body: text(s),
    })
}

#[tokio::test]
async fn messages_come_back_in_order_and_survive_a_reopen() {
    let dir = tempfile::TempDir::new().unwrap();
    let h = History::open(dir.path(), config(), 0).unwrap();
    assert_eq!(h.last_id(), 0);
    let mut ids = Vec::new();
    for i in 0..5 {
        let delivered = std::cell::Cell::new(0);
        let m = h
            .append(&lab(), "alice", t("#lab"), text(&format!("m{i}")), |m| {
                delivered.set(m.id)
            })
            .await
            .unwrap();
        assert_eq!(delivered.get(), m.id, "delivered with its id");
        ids.push(m.id);
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(h.last_id(), ids[4]);
    let page = h.last(&lab(), 3, None).await.unwrap();
    assert_eq!(texts(&page), ["m2", "m3", "m4"]);
    assert_eq!(page.last_read, ids[4]);
    let page = h.last(&lab(), 10, Some(ids[2])).await.unwrap();
    assert_eq!(texts(&page), ["m0", "m1"]);
    let page = h.after(&lab(), ids[1], 2, |_| true).await.unwrap();
    assert_eq!(texts(&page), ["m3", "m4"], "the newest of what is after");
    assert_eq!(page.skipped, 1);
    h.sync().await;
    drop(h);

    let h = History::open(dir.path(), config(), 0).unwrap();
    let page = h.last(&lab(), 10, None).await.unwrap();
    assert_eq!(texts(&page), ["m0", "m1", "m2", "m3", "m4"]);
    let next = say(&h, &lab(), "after restart").await;
    assert!(next.id > ids[4], "ids keep increasing across a restart");
}

#[tokio::test]
async fn a_torn_last_record_is_cut_and_later_records_stay_readable() {
    let dir = tempfile::TempDir::new().unwrap();
    let h = History::open(dir.path(), config(), 0).unwrap();
    say(&h, &lab(), "one").await;
    say(&h, &lab(), "two").await;
    drop(h);
    let log = dir.path().join("channels/lab.log");
    let whole = std::fs::read(&log).unwrap();
    // What a kill in the middle of a write leaves.
    let torn = raw_line(3, 1, "three");
    OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(&torn[..torn.len() / 2])
        .unwrap();

    let h = History::open(dir.path(), config(), 0).unwrap();
    assert_eq!(
        std::fs::read(&log).unwrap(),
        whole,
        "the torn tail is cut off"
    );
    let four = say(&h, &lab(), "four").await;
    assert!(four.id > 3);
    let page = h.last(&lab(), 10, None).await.unwrap();
    assert_eq!(texts(&page), ["one", "two", "four"]);
}

#[tokio::test]
async fn damaged_lines_are_skipped_not_fatal() {
    let dir = tempfile::TempDir::new().unwrap();
    std::fs::create_dir_all(dir.path().join("channels")).unwrap();
    let mut data = raw_line(1, 1, "good");
    data.extend_from_slice(b"\x00\xffnot json at all\n");
    data.extend(vec![b'x'; MAX_RECORD_LEN + 10]);
    data.push(b'\n');
    data.extend(raw_line(2, 2, "also good"));
    data.extend(raw_line(2, 3, "duplicate id"));
    std::fs::write(dir.path().join("channels/lab.log"), &data).unwrap();
    std::fs::write(dir.path().join("channels/notes.txt"), b"not a log").unwrap();

    let h = History::open(dir.path(), config(), 0).unwrap();
    let page = h.last(&lab(), 10, None).await.unwrap();
    assert_eq!(texts(&page), ["good", "also good"]);
    assert!(h.last_id() >= 2);
    let rewritten = std::fs::read(dir.path().join("channels/lab.log")).unwrap();
    assert_eq!(rewritten.iter().filter(|&&b| b == b'\n').count(), 2);
}

#[tokio::test]
async fn reading_backwards_handles_lines_across_blocks() {
    let dir = tempfile::TempDir::new().unwrap();
    let h = History::open(dir.path(), config(), 0).unwrap();
    // Control characters are escaped six-fold by JSON: lines far longer than a block.
    let long = "\u{1b}[31m".repeat(300);
    let mut expected = Vec::new();
    for i in 0..40 {
        let s = if i % 3 == 0 {
            format!("{i}{long}")
        } else {
            format!("short {i}")
        };
        say(&h, &lab(), &s).await;
        expected.push(s);
    }
    let page = h.last(&lab(), 200, None).await.unwrap();
    assert_eq!(texts(&page), expected);
    let page = h.last(&lab(), 7, None).await.unwrap();
    assert_eq!(texts(&page), expected[33..]);
}

#[tokio::test]
async fn retention_by_count_keeps_the_newest() {
    let dir = tempfile::TempDir::new().unwrap();
    let cfg = HistoryConfig {
        max_messages: 4,
        ..config()
    };
    let h = History::open(dir.path(), cfg, 0).unwrap();
    for i in 0..6 {
        say(&h, &lab(), &format!("m{i}")).await;
    }
    // 4 + 4/4 = 5 allowed before a compaction: the sixth triggered one.
    let page = h.last(&lab(), 100, None).await.unwrap();
    assert_eq!(texts(&page), ["m2", "m3", "m4", "m5"]);
    say(&h, &lab(), "m6").await;
    drop(h);
    let h = History::open(dir.path(), cfg, 0).unwrap();
    let page = h.last(&lab(), 100, None).await.unwrap();
    assert_eq!(texts(&page), ["m3", "m4", "m5", "m6"], "compacted at start");
}

#[tokio::test]
async fn retention_by_age_and_ids_never_go_back() {
    let dir = tempfile::TempDir::new().unwrap();
    let h = History::open(dir.path(), config(), 0).unwrap();
    let last = say(&h, &lab(), "old").await;
    drop(h);
    let now = crate::chat::now_unix_ms();
    let cfg = HistoryConfig {
        retention_ms: DAY_MS,
        ..config()
    };
    // A day and a bit later: everything expired, the log goes.
    let h = History::open(dir.path(), cfg, now + DAY_MS + 60_000).unwrap();
    assert!(!h.exists(&lab()));
    assert!(!dir.path().join("channels/lab.log").exists());
    let next = say(&h, &lab(), "new").await;
    assert!(next.id > last.id, "ids stay above removed ones");

    // Periodic enforcement removes what aged while running.
    let d = ConvKey::direct("bob", "alice");
    h.append(&d, "alice", t("@bob"), text("hi bob"), |_| {})
        .await
        .unwrap();
    h.enforce_retention(now + 2 * DAY_MS).await;
    assert!(!h.exists(&d));
    assert!(h.conversations_of("bob").is_empty());
}

#[tokio::test]
async fn new_channel_logs_are_limited() {
    let dir = tempfile::TempDir::new().unwrap();
    let cfg = HistoryConfig {
        max_channels: 2,
        ..config()
    };
    let h = History::open(dir.path(), cfg, 0).unwrap();
    for name in ["a", "b"] {
        h.append(
            &ConvKey::Channel(name.into()),
            "alice",
            t(&format!("#{name}")),
            text("x"),
            |_| {},
        )
        .await
        .unwrap();
    }
    let err = h
        .append(
            &ConvKey::Channel("c".into()),
            "alice",
            t("#c"),
            text("x"),
            |_| {},
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, HistoryError::TooManyChannels { max: 2 }),
        "{err}"
    );
    // Existing channels and direct conversations still work.
    say(&h, &ConvKey::Channel("a".into()), "y").await;
    h.append(
        &ConvKey::direct("alice", "bob"),
        "alice",
        t("@bob"),
        text("z"),
        |_| {},
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn after_filters_and_reports_what_it_read() {
    let dir = tempfile::TempDir::new().unwrap();
    let h = History::open(dir.path(), config(), 0).unwrap();
    let key = ConvKey::direct("alice", "bob");
    let a = h
        .append(&key, "alice", t("@bob"), text("to bob"), |_| {})
        .await
        .unwrap();
    let b = h
        .append(&key, "bob", t("@alice"), text("to alice"), |_| {})
        .await
        .unwrap();
    assert_eq!(h.conversations_of("bob"), std::slice::from_ref(&key));
    assert_eq!(key.other("bob"), Some("alice"));
    let page = h
        .after(&key, 0, 10, |m| m.target == t("@bob"))
        .await
        .unwrap();
    assert_eq!(texts(&page), ["to bob"]);
    assert_eq!(page.last_read, b.id);
    let page = h.after(&key, b.id, 10, |_| true).await.unwrap();
    assert!(page.messages.is_empty());
    assert_eq!(page.last_read, b.id);
    assert!(a.id < b.id);
}

#[test]
fn log_names_round_trip_and_refuse_strangers() {
    for key in [
        ConvKey::Channel("lab.x_1".into()),
        ConvKey::direct("z", "a"),
    ] {
        let file = key.file();
        let dir = file.parent().unwrap().to_str().unwrap();
        let name = file.file_name().unwrap().to_str().unwrap();
        assert_eq!(ConvKey::from_file(dir, name), Some(key));
    }
    assert_eq!(ConvKey::from_file("direct", "b+a.log"), None, "unsorted");
    assert_eq!(ConvKey::from_file("channels", "Lab.log"), None);
    assert_eq!(ConvKey::from_file("channels", "lab.txt"), None);
    assert_eq!(ConvKey::from_file("direct", "a.log"), None);
}

#[tokio::test]
async fn a_read_walks_back_at_most_the_scan_limit() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut h = History::open(dir.path(), config(), 0).unwrap();
    let mut ids = Vec::new();
    for i in 0..200 {
        ids.push(say(&h, &lab(), &format!("message {i:04}")).await.id);
    }
    let full = h.last(&lab(), 1000, None).await.unwrap();
    assert_eq!(full.messages.len(), 200, "unlimited, everything is read");

    // Records are ~80 bytes: 3 blocks of 1,000 bytes hold a few dozen.
    h.scan_limit = 3000;
    let newest = h.last(&lab(), 5, None).await.unwrap();
    assert_eq!(texts(&newest).last().unwrap(), "message 0199");
    assert_eq!(
        newest.messages.len(),
        5,
        "the newest are well within the limit"
    );

    let far_back = h.last(&lab(), 10, Some(ids[0] + 1)).await.unwrap();
    assert!(
        far_back.messages.is_empty(),
        "paging far back in a huge log stops at the limit"
    );
    let page = h.after(&lab(), 0, 1000, |_| true).await.unwrap();
    let n = page.messages.len() as u64 + page.skipped;
    assert!(
        n > 10 && n < 60,
        "only the newest records are looked at: {n}"
    );
    assert_eq!(page.messages.last().unwrap().id, ids[199]);
    assert_eq!(page.last_read, ids[199]);
}

/// A history directory written by protocol version 2 (`fixtures/v2`, made with that
/// version's `History::append`: `#lab`, alice+bob with a file notice, Carol+alice)
/// opens with every message intact, and new messages continue its ids.
#[tokio::test]
async fn a_version_2_history_directory_opens_with_its_messages_intact() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/chat/history/fixtures/v2");
    let dir = tempfile::TempDir::new().unwrap();
    for sub in ["channels", "direct"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
        for entry in std::fs::read_dir(fixture.join(sub)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.path().join(sub).join(entry.file_name())).unwrap();
        }
    }
    std::fs::copy(fixture.join("ids"), dir.path().join("ids")).unwrap();
    let h = History::open(dir.path(), config(), 0).unwrap();
    assert!(h.last_id() >= 6, "{}", h.last_id());
    let summary = |page: &Page| -> Vec<(u64, String, String, String)> {
        page.messages
            .iter()
            .map(|m| (m.id, m.from.clone(), m.target.to_string(), texts_of(m)))
            .collect()
    };
    let channel = h.last(&lab(), 10, None).await.unwrap();
    assert_eq!(
        summary(&channel),
        [
            (1, "alice".into(), "#lab".into(), "hello lab".into()),
            (3, "bob".into(), "#lab".into(), "hi alice".into()),
        ]
    );
    let ab = h
        .last(&ConvKey::direct("alice", "bob"), 10, None)
        .await
        .unwrap();
    assert_eq!(
        summary(&ab),
        [
            (2, "alice".into(), "@bob".into(), "hi bob".into()),
            (
                4,
                "bob".into(),
                "@alice".into(),
                "hi alice, privately".into()
            ),
            (
                5,
                "alice".into(),
                "@bob".into(),
                "inbox/alice/hello.txt".into()
            ),
        ]
    );
    let MessageBody::File { size, digest, .. } = &ab.messages[2].body else {
        panic!("a file notice: {:?}", ab.messages[2]);
    };
    assert_eq!((*size, *digest), (6, xfer_proto::Digest::of(b"hello\n")));
    assert_eq!(ab.messages[1].conversation("alice"), t("@bob"));
    let key = ConvKey::direct("alice", "Carol");
    let carol = h.after(&key, 0, 10, |_| true).await.unwrap();
    assert_eq!(
        summary(&carol),
        [(6, "Carol".into(), "@alice".into(), "from Carol".into())]
    );
    assert_eq!(carol.messages[0].conversation("alice"), t("@Carol"));
    assert_eq!(h.conversations_of("alice").len(), 2);
    let before = h.last_id();
    let next = say(&h, &lab(), "after the upgrade").await;
    assert!(
        next.id > before,
        "ids keep increasing: {} after {before}",
        next.id
    );
    let reopened = History::open(dir.path(), config(), 0).unwrap();
    let channel = reopened.last(&lab(), 10, None).await.unwrap();
    assert_eq!(channel.messages.len(), 3);
}

fn texts_of(m: &ChatMessage) -> String {
    match &m.body {
        MessageBody::Text(t) => t.clone(),
        MessageBody::File { path, .. } => path.clone(),
    }
}

#[tokio::test]
async fn one_user_may_start_only_so_many_channels() {
    let dir = tempfile::TempDir::new().unwrap();
    let cfg = HistoryConfig {
        max_channels_per_user: 2,
        ..config()
    };
    let h = History::open(dir.path(), cfg, 0).unwrap();
    let ch = |n: &str| ConvKey::Channel(n.into());
    for name in ["a", "b"] {
        h.append(
            &ch(name),
            "alice",
            t(&format!("#{name}")),
            text("x"),
            |_| {},
        )
        .await
        .unwrap();
    }
    let err = h
        .append(&ch("c"), "alice", t("#c"), text("x"), |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, HistoryError::TooManyChannelsOfUser { max: 2 }),
        "{err}"
    );
    assert!(
        err.to_string().contains("you have started 2 channels"),
        "{err}"
    );
    // Others still start channels; alice still posts in hers and in theirs.
    h.append(&ch("c"), "bob", t("#c"), text("x"), |_| {})
        .await
        .unwrap();
    h.append(&ch("c"), "alice", t("#c"), text("y"), |_| {})
        .await
        .unwrap();
    h.append(&ch("a"), "alice", t("#a"), text("y"), |_| {})
        .await
        .unwrap();
    // Who started a channel survives a restart.
    drop(h);
    let h = History::open(dir.path(), cfg, 0).unwrap();
    assert!(matches!(
        h.append(&ch("d"), "alice", t("#d"), text("x"), |_| {})
            .await,
        Err(HistoryError::TooManyChannelsOfUser { .. })
    ));
    h.append(&ch("d"), "bob", t("#d"), text("x"), |_| {})
        .await
        .unwrap();
}

#[tokio::test]
async fn abandoned_one_message_channels_expire() {
    let dir = tempfile::TempDir::new().unwrap();
    let cfg = HistoryConfig {
        max_channels_per_user: 3,
        lone_message_ms: DAY_MS,
        ..config()
    };
    let h = History::open(dir.path(), cfg, 0).unwrap();
    let ch = |n: &str| ConvKey::Channel(n.into());
    for name in ["lone", "busy", "occupied"] {
        h.append(
            &ch(name),
            "alice",
            t(&format!("#{name}")),
            text("x"),
            |_| {},
        )
        .await
        .unwrap();
    }
    h.append(&ch("busy"), "bob", t("#busy"), text("y"), |_| {})
        .await
        .unwrap();
    let now = crate::now_unix_ms();
    // Too young: nothing goes.
    assert!(h.expire_lone_channels(now, |_| false).await.is_empty());
    let removed = h
        .expire_lone_channels(now + 2 * DAY_MS, |name| name == "occupied")
        .await;
    assert_eq!(removed, ["lone"]);
    assert!(!h.exists(&ch("lone")));
    assert!(!dir.path().join("channels/lone.log").exists());
    assert!(h.exists(&ch("busy")) && h.exists(&ch("occupied")));
    // The slot is alice's again.
    h.append(&ch("new"), "alice", t("#new"), text("x"), |_| {})
        .await
        .unwrap();
}
