//! Channel creation limits (audit item 14): one user cannot take the server's channels.

use xfer_e2e::{Client, Daemon, PASSWORD};

#[test]
fn one_user_may_start_only_max_channels_per_user_channels() {
    let d = Daemon::start_with(
        &["alice", "bob"],
        Some("[chat]\nmax_channels_per_user = 2\n"),
    );
    let a = Client::new();
    a.login(&d, "alice", PASSWORD);
    let b = Client::new();
    b.login(&d, "bob", PASSWORD);
    let say = |c: &Client, ch: &str, text: &str| c.xfer(&["chat", ch, "--say", text], "");
    for ch in ["#one", "#two"] {
        let out = say(&a, ch, "first");
        assert_eq!(out.code(), 0, "{}", out.stderr());
    }
    let out = say(&a, "#three", "one too many");
    assert_eq!(out.code(), 10, "{}", out.stderr());
    assert!(
        out.stderr()
            .contains("you have started 2 channels, the most one user may"),
        "{}",
        out.stderr()
    );
    // Posting in existing channels goes on; others start channels; alice may post in
    // a channel someone else started.
    assert_eq!(say(&a, "#one", "still here").code(), 0);
    let out = say(&b, "#three", "bob's");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    let out = say(&a, "#three", "in bob's channel");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    let h = b.xfer(&["chat", "#three", "--history", "5"], "");
    assert!(!h.stdout().contains("one too many"), "{}", h.stdout());
    assert!(h.stdout().contains("in bob's channel"), "{}", h.stdout());

    // A restart remembers who started what.
    let d = d.kill9_and_restart();
    let out = say(&a, "#four", "after restart");
    assert_eq!(out.code(), 10, "{}", out.stderr());
    drop(d);
}
