//! Interactive `xfer chat` at a real terminal (a pseudo-terminal): what a person sees
//! when typing, pasting, completing and being named. What is on screen is judged with
//! the test kit's [`Screen`] model, since a line editor writes a line several times
//! (each key, a redraw, an erase) for it to be shown once.

use std::process::Command;

use xfer_e2e::pty::Pty;
use xfer_e2e::screen::Screen;
use xfer_e2e::{Client, DEADLINE, Daemon, PASSWORD, Running, bin, poll};

/// The pty's width (tests/src/pty.rs).
const COLS: usize = 160;

fn alice_and_bob() -> (Daemon, Client, Client) {
    let d = Daemon::start_with(&["alice", "bob"], None);
    let a = Client::new();
    a.login(&d, "alice", PASSWORD);
    let b = Client::new();
    b.login(&d, "bob", PASSWORD);
    (d, a, b)
}

/// `xfer chat ARGS…` for `c` at a colour terminal.
pub(crate) fn chat_tty(c: &Client, args: &[&str]) -> Pty {
    let mut cmd = Command::new(bin("xfer"));
    cmd.arg("chat")
        .args(args)
        .env("XFER_HOME", c.home())
        .env("TERM", "xterm-256color")
        .env_remove("NO_COLOR");
    Pty::spawn(cmd)
}

/// Waits until the screen of `t` satisfies `ok`; panics showing it at the deadline.
pub(crate) fn wait_screen(t: &Pty, what: &str, ok: impl Fn(&Screen) -> bool) -> Screen {
    poll(DEADLINE, || {
        let s = Screen::parse(&t.output(), COLS);
        ok(&s).then_some(s)
    })
    .unwrap_or_else(|| {
        panic!(
            "the screen never showed {what}; it shows:\n{}\nwritten: {:?}",
            Screen::parse(&t.output(), COLS).text(),
            t.output()
        )
    })
}

/// Texts `from` said in `#lab`, in order, from a `--follow` line stream.
fn said(f: &Running, from: &str) -> Vec<String> {
    let tag = format!(" #lab <{from}> ");
    f.stdout_so_far()
        .lines()
        .filter_map(|l| l.split_once(&tag).map(|(_, t)| t.to_owned()))
        .collect()
}

fn wait_said(f: &Running, from: &str, texts: &[&str]) {
    let got = poll(DEADLINE, || (said(f, from) == texts).then_some(()));
    assert!(
        got.is_some(),
        "the follower has {:?}, not {texts:?}",
        said(f, from)
    );
}

#[test]
fn a_typed_line_shows_once_and_a_paste_is_one_message_per_line() {
    let (_d, a, b) = alice_and_bob();
    let f = b.follow(&["#lab"]);
    let mut t = chat_tty(&a, &["#lab"]);
    t.expect("#lab> ");

    t.send("hello there\r");
    let s = wait_screen(&t, "the echo, then the prompt", |s| {
        s.text().contains("<alice> hello there") && s.text().ends_with("#lab>")
    });
    let text = s.text();
    assert_eq!(
        text.matches("hello there").count(),
        1,
        "shown once:\n{text}"
    );
    let echo = s.lines().into_iter().find(|l| l.contains("hello there"));
    let echo = echo.unwrap_or_default();
    assert!(
        echo.starts_with('[') && echo.ends_with("] <alice> hello there"),
        "untagged: {echo}"
    );
    wait_said(&f, "alice", &["hello there"]);

    // A bracketed paste of three lines, then Enter: three messages, in order.
    t.send("\x1b[200~one\rtwo\rthree\x1b[201~");
    t.send("\r");
    wait_said(&f, "alice", &["hello there", "one", "two", "three"]);
    let s = wait_screen(&t, "the pasted lines", |s| {
        s.text().contains("<alice> three")
    });
    for line in ["one", "two", "three"] {
        let shown = s
            .lines()
            .iter()
            .filter(|l| l.ends_with(&format!("> {line}")))
            .count();
        assert_eq!(shown, 1, "{line}:\n{}", s.text());
    }
    assert!(!s.text().contains("\\x0a"), "{}", s.text());

    // More than five lines: asked first; anything but y cancels.
    let six = "\x1b[200~p1\rp2\rp3\rp4\rp5\rp6\x1b[201~\r";
    t.send(six);
    t.expect("pasting 6 lines: y sends them, anything else cancels");
    t.expect("send 6 lines to #lab? [y/N] ");
    t.send("n\r");
    t.expect("paste of 6 lines cancelled: nothing was sent");
    t.expect("#lab> ");
    t.send(six);
    t.expect("send 6 lines to #lab? [y/N] ");
    t.send("y\r");
    let mut all = vec!["hello there", "one", "two", "three"];
    all.extend(["p1", "p2", "p3", "p4", "p5", "p6"]);
    wait_said(&f, "alice", &all);
    t.send("/quit\r");
    assert!(t.wait().success(), "{}", t.output());
}

#[test]
fn tab_completes_commands_and_nicks() {
    let (_d, a, b) = alice_and_bob();
    // bob is in #lab: alice's client learns his name from the members list.
    let f = b.follow(&["#lab"]);
    let mut t = chat_tty(&a, &["#lab"]);
    t.expect("#lab> ");
    t.send("/ms\t");
    wait_screen(&t, "`/ms` completed", |s| s.text().ends_with("#lab> /msg"));
    // Ctrl-U empties the line.
    t.send("\x15/msg al\t");
    wait_screen(&t, "`/msg al` completed", |s| {
        s.text().ends_with("#lab> /msg alice")
    });
    t.send("\x15/msg b\t");
    wait_screen(&t, "`/msg b` completed", |s| {
        s.text().ends_with("#lab> /msg bob")
    });
    t.send("psst\r");
    let got = f.wait_stdout(DEADLINE, |s| s.contains(" @bob <alice> psst"));
    assert!(got.is_some(), "{}", f.stdout_so_far());
}

#[test]
fn a_line_naming_you_is_highlighted_and_rings_unless_told_not_to() {
    let (_d, a, b) = alice_and_bob();
    let mut t = chat_tty(&a, &["#lab"]);
    t.expect("#lab> ");
    let out = b.xfer(&["chat", "#lab", "--say", "hi alice"], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    t.expect("\x1b[1;7mhi alice\x1b[0m\x07");
    let out = b.xfer(&["chat", "#lab", "--say", "malice is not you"], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    let plain = t.expect("malice is not you");
    assert!(!plain.contains('\x07'), "{plain:?}");
    t.send("/quit\r");
    assert!(t.wait().success(), "{}", t.output());

    let mut t = chat_tty(&a, &["#lab", "--no-bell"]);
    t.expect("#lab> ");
    let out = b.xfer(&["chat", "#lab", "--say", "alice, quiet now"], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    t.expect("\x1b[1;7malice, quiet now\x1b[0m");
    t.send("/quit\r");
    assert!(t.wait().success(), "{}", t.output());
    assert!(!t.output().contains('\x07'), "{:?}", t.output());
}

/// The marker between the backlog already read and what came since (render.rs).
const NEW_SINCE: &str = "— new since you left —";

fn say(c: &Client, target: &str, text: &str) {
    let out = c.xfer(&["chat", target, "--say", text], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
}

/// Opens `#lab` as `c`, waits for the backlog ending in `last` and the prompt, leaves;
/// returns the screen's lines.
fn visit_lab(c: &Client, last: &str) -> Vec<String> {
    let mut t = chat_tty(c, &["#lab"]);
    let s = wait_screen(&t, "the backlog and the prompt", |s| {
        s.text().contains(last) && s.text().ends_with("#lab>")
    });
    t.send("/quit\r");
    assert!(t.wait().success(), "{}", t.output());
    s.lines()
}

#[test]
fn what_came_while_you_were_away_follows_a_marker() {
    let (_d, a, b) = alice_and_bob();
    say(&b, "#lab", "before");
    let first = visit_lab(&a, "<bob> before");
    assert!(!first.iter().any(|l| l.contains(NEW_SINCE)), "{first:?}");

    say(&b, "#lab", "second");
    say(&b, "#lab", "third");
    let lines = visit_lab(&a, "<bob> third");
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in {lines:#?}"))
    };
    assert!(at("<bob> before") < at(NEW_SINCE), "{lines:#?}");
    assert!(at(NEW_SINCE) < at("<bob> second"), "{lines:#?}");
    assert!(at("<bob> second") < at("<bob> third"), "{lines:#?}");
    assert_eq!(lines.iter().filter(|l| l.contains(NEW_SINCE)).count(), 1);

    // Everything read: no marker.
    let again = visit_lab(&a, "<bob> third");
    assert!(!again.iter().any(|l| l.contains(NEW_SINCE)), "{again:?}");
}

/// `xfer chat --catchup` for `c`: its stdout lines.
fn catchup(c: &Client, json: bool) -> String {
    let args: &[&str] = if json {
        &["chat", "--catchup", "--json"]
    } else {
        &["chat", "--catchup"]
    };
    let out = c.xfer(args, "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    out.stdout()
}

#[test]
fn where_you_read_up_to_follows_you_to_another_machine() {
    let (d, a, b) = alice_and_bob();
    say(&b, "#lab", "one");
    // alice reads #lab on her first machine; the server keeps the position, durably.
    visit_lab(&a, "<bob> one");
    let d = d.kill9_and_restart();
    say(&b, "#lab", "two, alice look");
    say(&b, "#lab", "three");
    say(&b, "@alice", "psst");
    let dir = tempfile::TempDir::new().unwrap();
    let file = xfer_e2e::write_file(dir.path(), "notes.txt", b"twelve bytes");
    let out = b.xfer(&["send", "alice", &file], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());

    // Her second machine: another home, the same user.
    let other = Client::new();
    other.login(&d, "alice", PASSWORD);
    let lines = catchup(&other, false);
    assert_eq!(
        lines.lines().collect::<Vec<_>>(),
        [
            "#lab unread=2 mentions=1",
            "@bob unread=2 mentions=0",
            "file from=bob size=12 inbox/bob/notes.txt",
        ],
        "{lines}"
    );
    let json: serde_json::Value = serde_json::from_str(catchup(&other, true).trim()).unwrap();
    let lab = &json["conversations"][0];
    assert_eq!(
        (lab["target"].as_str(), lab["unread"].as_u64()),
        (Some("#lab"), Some(2))
    );
    assert_eq!(json["files"][0]["file"]["path"], "inbox/bob/notes.txt");

    // The marker on the second machine sits where the first one left off.
    let lines = visit_lab(&other, "<bob> three");
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in {lines:#?}"))
    };
    assert!(at("<bob> one") < at(NEW_SINCE), "{lines:#?}");
    assert!(at(NEW_SINCE) < at("<bob> two, alice look"), "{lines:#?}");

    // Read there (the direct messages were shown there too), so read here.
    let out = a.xfer(&["chat", "--catchup"], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert_eq!(out.stdout(), "");
    assert!(
        out.stderr().contains("nothing new since you last read"),
        "{}",
        out.stderr()
    );

    // At the terminal, /catchup covers what is not on the screen.
    say(&b, "#lab", "alice?");
    let mut t = chat_tty(&a, &[]);
    t.expect("/join #channel");
    t.send("/catchup\r");
    t.expect("#lab: 1 unread, 1 mention of you");
    t.send("/quit\r");
    assert!(t.wait().success(), "{}", t.output());
}

#[test]
fn someone_leaving_leaves_the_channel_before_going_offline() {
    let (_d, a, b) = alice_and_bob();
    let mut t = chat_tty(&a, &["#lab"]);
    t.expect("#lab> ");
    // Each visit of bob's joins #lab and leaves at the end of its (empty) input; the
    // two notes come through different queues, so a few rounds give a reversal room.
    for round in 1..=3 {
        let out = b.xfer(&["chat", "#lab"], "");
        assert_eq!(out.code(), 0, "{}", out.stderr());
        let s = wait_screen(&t, "bob going offline", |s| {
            s.text().matches("bob is offline").count() == round
        });
        let notes: Vec<String> = s
            .lines()
            .into_iter()
            .filter(|l| l.contains("-- bob "))
            .collect();
        let expected = [
            "bob is online",
            "bob joined #lab",
            "bob left #lab",
            "bob is offline",
        ];
        let last = &notes[notes.len() - 4..];
        for (line, want) in last.iter().zip(expected) {
            assert!(line.ends_with(want), "round {round}: {notes:#?}");
        }
    }
    t.send("/quit\r");
    assert!(t.wait().success(), "{}", t.output());
}

#[test]
fn the_prompt_follows_the_connection_and_keeps_the_line_being_typed() {
    let (mut d, a, _b) = alice_and_bob();
    let mut t = chat_tty(&a, &["#lab"]);
    t.expect("#lab> ");
    t.send("half");
    wait_screen(&t, "the line being typed", |s| {
        s.text().ends_with("#lab> half")
    });

    // The server goes away: the prompt says so at once, the typed text stays.
    let data = d.data_dir.clone();
    let listen = d.host_port();
    let _keep = d.keep_data();
    d.signal_and_wait("KILL");
    wait_screen(&t, "the offline prompt over the same text", |s| {
        s.text().ends_with("(offline) #lab> half")
    });
    // A line finished during the outage is not sent, and says so.
    t.send(" typed\r");
    t.expect("not connected: nothing was sent");
    t.send("later");
    wait_screen(&t, "a new offline line", |s| {
        s.text().ends_with("(offline) #lab> later")
    });

    // Back: the prompt is online again, still holding the text, which then goes out.
    let start = std::time::Instant::now();
    let _d = loop {
        match Daemon::start_listening(&data, &listen, &[]) {
            Ok(d) => break d,
            Err(log) if start.elapsed() > DEADLINE => panic!("restart failed: {log}"),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    };
    let s = wait_screen(&t, "the online prompt over the same text", |s| {
        s.text().contains("-- reconnected") && s.text().ends_with("#lab> later")
    });
    assert!(
        !s.lines().iter().any(|l| l.contains("#lab> half")),
        "the old copies are gone:\n{}",
        s.text()
    );
    t.send("\r");
    wait_screen(&t, "the line said", |s| {
        s.text().contains("<alice> later") && s.text().ends_with("#lab>")
    });
    t.send("/quit\r");
    assert!(t.wait().success(), "{}", t.output());
}
