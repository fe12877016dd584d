//! Look-alike names (audit defect 13): a name spelled decomposed (NFD, as macOS spells
//! `é`) and composed (NFC) is one name on both ends; invisible characters in names and
//! paths are refused with one line naming them as `U+XXXX`; and text from a peer never
//! reaches the terminal with an invisible character in it.

use tempfile::TempDir;
use xfer_e2e::{Daemon, PASSWORD, alice, write_file, xferd};

const NFD: &str = "cafe\u{301}.txt";
const NFC: &str = "caf\u{e9}.txt";

fn ls_names(c: &xfer_e2e::Client, dir: &str) -> Vec<String> {
    c.ls_json(&[dir])
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_decomposed_and_a_composed_name_are_one_file() {
    let d = Daemon::start();
    let a = alice(&d);
    let local = TempDir::new().unwrap();
    let nfd = write_file(local.path(), NFD, b"first\n");
    let out = a.xfer(&["push", "-q", &nfd], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    // Stored and listed composed, once.
    assert_eq!(ls_names(&a, ""), [NFC]);
    assert!(d.files_dir("alice").join(NFC).is_file());
    assert!(!d.files_dir("alice").join(NFD).exists());

    // The composed spelling names the same file: a second push of it replaces that
    // file (with --force), never adds a twin.
    let other = TempDir::new().unwrap();
    let nfc = write_file(other.path(), NFC, b"second\n");
    let out = a.xfer(&["push", "-q", "--force", &nfc], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert_eq!(ls_names(&a, ""), [NFC]);

    // Either spelling reaches it for every command.
    let dest = TempDir::new().unwrap();
    let dest_arg = format!("{}/", dest.path().display());
    let out = a.xfer(&["pull", "-q", NFD, &dest_arg], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert_eq!(std::fs::read(dest.path().join(NFC)).unwrap(), b"second\n");
    let out = a.xfer(&["mkdir", "dir\u{e9}"], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    let out = a.xfer(&["mv", NFD, "dire\u{301}/"], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert_eq!(ls_names(&a, "dire\u{301}"), [NFC]);
    let out = a.xfer(&["rm", &format!("dir\u{e9}/{NFD}")], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert!(ls_names(&a, "dir\u{e9}").is_empty());
}

#[test]
fn invisible_characters_in_paths_are_refused_by_name() {
    let d = Daemon::start();
    let a = alice(&d);
    for (name, code) in [
        ("zero\u{200b}width", "U+200B"),
        ("joi\u{200d}ner", "U+200D"),
        ("word\u{2060}joiner", "U+2060"),
        ("\u{feff}bom", "U+FEFF"),
        ("invoice\u{202e}gpj.exe", "U+202E"),
        ("iso\u{2066}late", "U+2066"),
    ] {
        // The daemon refuses it (mkdir sends the path as typed).
        let out = a.xfer(&["mkdir", name], "");
        assert_ne!(out.code(), 0, "{name:?} accepted");
        let err = out.stderr();
        assert!(err.contains(code), "{name:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.is_ascii() || !err.contains(name), "shown raw: {err}");
        // The client refuses to push a local file so named before sending anything.
        let local = TempDir::new().unwrap();
        let p = write_file(local.path(), name, b"x");
        let out = a.xfer(&["push", "-q", &p], "");
        assert_eq!(out.code(), 2, "{name:?}: {}", out.stderr());
        assert!(out.stderr().contains(code), "{}", out.stderr());
    }
    assert!(ls_names(&a, "").is_empty());
    assert!(
        std::fs::read_dir(d.files_dir("alice"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[test]
fn user_names_with_invisible_or_decomposed_characters_are_refused() {
    let d = Daemon::start();
    for (name, code) in [
        ("ali\u{200b}ce", "U+200B"),
        ("alice\u{feff}", "U+FEFF"),
        ("ali\u{202e}ce", "U+202E"),
    ] {
        let out = xferd(
            &d.data_dir,
            &["user", "add", name, "--password-stdin"],
            "pw-long-enough-1\n",
        );
        assert_ne!(out.status.code(), Some(0), "{name:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(err.contains(code), "{name:?}: {err}");
        assert!(!err.contains(name), "shown raw: {err}");
    }
    // Names are ASCII: a decomposed accent is refused, named, as a composed one is.
    for name in ["jose\u{301}", "jos\u{e9}"] {
        let out = xferd(
            &d.data_dir,
            &["user", "add", name, "--password-stdin"],
            "pw-long-enough-1\n",
        );
        assert_ne!(out.status.code(), Some(0), "{name:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(err.contains("is not allowed"), "{name:?}: {err}");
    }
    // A look-alike of alice cannot log in as anyone either.
    let c = xfer_e2e::Client::new();
    let target = format!("ali\u{200b}ce@{}", d.host_port());
    let out = c.xfer(
        &[
            "login",
            &target,
            "--password-stdin",
            "--fingerprint",
            &d.fingerprint,
        ],
        &format!("{PASSWORD}\n"),
    );
    assert_ne!(out.code(), 0);
    assert!(!out.stderr().contains('\u{200b}'), "{}", out.stderr());
}

#[test]
fn invisible_characters_in_chat_text_are_shown_escaped() {
    let d = Daemon::start_with(&["alice", "bob"], None);
    let a = alice(&d);
    let b = xfer_e2e::Client::new();
    b.login(&d, "bob", PASSWORD);
    let text = "pay\u{200b}pal \u{2060}x\u{feff} \u{1f468}\u{200d}\u{1f469}";
    let out = a.xfer(&["chat", "#general", "--say", text], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    let h = b.xfer(&["chat", "#general", "--history", "5"], "");
    assert_eq!(h.code(), 0, "{}", h.stderr());
    let shown = h.stdout();
    assert!(
        shown.contains("pay\\u{200b}pal \\u{2060}x\\u{feff} \u{1f468}\u{200d}\u{1f469}"),
        "{shown}"
    );
    for c in ['\u{200b}', '\u{2060}', '\u{feff}'] {
        assert!(!shown.contains(c), "{c:?} reached the terminal: {shown}");
    }
}
