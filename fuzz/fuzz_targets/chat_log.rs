//! The chat log reader: a log file with any content (torn lines, huge lines, bad JSON,
//! records with wrong targets) opens, reads backwards and forwards, and takes a new
//! message after it; never a panic, and every message read back has an id the store
//! knows about.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xfer_proto::{MessageBody, Target};
use xferd::chat::history::{ConvKey, History, HistoryConfig};

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("channels")).expect("mkdir");
    std::fs::write(dir.path().join("channels/lab.log"), data).expect("write");
    let config = HistoryConfig {
        max_messages: 5,
        retention_ms: 0,
        max_channels: 10,
        max_channels_per_user: 3,
        lone_message_ms: 0,
    };
    let Ok(history) = History::open(dir.path(), config, 0) else {
        return;
    };
    let target: Target = "#lab".parse().expect("a channel");
    let key = ConvKey::of(&target, "alice");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        if let Ok(page) = history.last(&key, 50, None).await {
            for m in &page.messages {
                assert!(m.id <= history.last_id(), "read id {} past the last", m.id);
            }
        }
        let _ = history.after(&key, 0, 50, |_| true).await;
        let body = MessageBody::Text("after the fuzzed log".into());
        if let Ok(m) = history
            .append(&key, "alice", target.clone(), body, |_| {})
            .await
        {
            let page = history.last(&key, 1, None).await.expect("read back");
            assert_eq!(page.messages.last().map(|l| l.id), Some(m.id));
        }
    });
});
