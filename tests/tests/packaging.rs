//! What the Debian package ships from the binaries themselves: shell completions and man
//! pages (`xfer|xferd completions SHELL`, `xfer|xferd man [DIR]`), generated from the
//! real command lines with no config file, home directory or server to lean on.

use std::process::Command;

use tempfile::TempDir;
use xfer_e2e::{Out, bin, run};

/// Subcommands each binary's completions and pages must know (nested ones for xferd).
const XFER_WORDS: &[&str] = &[
    "login",
    "logout",
    "whoami",
    "ls",
    "push",
    "pull",
    "send",
    "chat",
    "completions",
    "man",
];
const XFERD_WORDS: &[&str] = &[
    "serve",
    "init",
    "user",
    "add",
    "passwd",
    "fingerprint",
    "completions",
    "man",
];

/// Runs `name ARGS…` in an empty directory where every place a config or home could be
/// is unusable: a path below a regular file cannot be created, even by root.
struct Bare {
    cwd: TempDir,
}

impl Bare {
    fn new() -> Bare {
        let cwd = TempDir::new().unwrap();
        Bare { cwd }
    }

    fn run(&self, name: &str, args: &[&str]) -> Out {
        let blocker = self.cwd.path().join("not-a-dir");
        std::fs::write(&blocker, "").unwrap();
        let out = run(
            Command::new(bin(name))
                .args(args)
                .current_dir(self.cwd.path())
                .env("XFER_HOME", blocker.join("home"))
                .env("XFERD_CONFIG", blocker.join("xferd.toml"))
                .env_remove("STATE_DIRECTORY"),
            "",
        );
        std::fs::remove_file(&blocker).unwrap();
        Out(out)
    }

    /// Everything in the working directory: a command that wrote nothing leaves it empty.
    fn leftovers(&self) -> Vec<String> {
        std::fs::read_dir(self.cwd.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }
}

fn words_of(name: &str) -> &'static [&'static str] {
    if name == "xfer" {
        XFER_WORDS
    } else {
        XFERD_WORDS
    }
}

#[test]
fn completions_for_bash_zsh_and_fish_name_the_real_subcommands() {
    let bare = Bare::new();
    for name in ["xfer", "xferd"] {
        for shell in ["bash", "zsh", "fish"] {
            let out = bare.run(name, &["completions", shell]);
            assert_eq!(
                out.code(),
                0,
                "{name} completions {shell}: {}",
                out.stderr()
            );
            let script = out.stdout();
            let registers = match shell {
                "bash" => format!("-F _{name} "),
                "zsh" => format!("#compdef {name}\n"),
                _ => format!("complete -c {name} "),
            };
            assert!(
                script.contains(&registers),
                "{name} {shell} script lacks `{registers}`"
            );
            for word in words_of(name) {
                assert!(
                    script.contains(word),
                    "{name} {shell} completions do not mention `{word}`"
                );
            }
        }
    }
    assert!(bare.leftovers().is_empty(), "{:?}", bare.leftovers());
}

#[test]
fn bash_accepts_the_completion_script() {
    if Command::new("bash").arg("--version").output().is_err() {
        eprintln!("skipping: no bash");
        return;
    }
    for name in ["xfer", "xferd"] {
        let script = Bare::new().run(name, &["completions", "bash"]).stdout();
        // Sourcing defines the function and registers it for the command.
        let check = format!("{script}\ncomplete -p {name}");
        let out = Out(run(Command::new("bash").args(["--norc", "-c", &check]), ""));
        assert_eq!(out.code(), 0, "{name}: {}", out.stderr());
        assert!(
            out.stdout().contains(&format!("_{name} {name}")),
            "{}",
            out.stdout()
        );
    }
}

#[test]
fn man_without_dir_prints_the_top_page_as_roff() {
    let bare = Bare::new();
    for name in ["xfer", "xferd"] {
        let out = bare.run(name, &["man"]);
        assert_eq!(out.code(), 0, "{name} man: {}", out.stderr());
        let page = out.stdout();
        // Only roff requests come before the title: string definitions, then `.TH`.
        let th = page
            .lines()
            .position(|l| l.starts_with(".TH "))
            .unwrap_or_else(|| panic!("{name}: no .TH line:\n{page}"));
        assert!(page.lines().take(th).all(|l| l.starts_with('.')), "{page}");
        assert!(
            page.lines()
                .nth(th)
                .unwrap()
                .starts_with(&format!(".TH {name} 1 ")),
            "{page}"
        );
        assert!(page.contains(&format!(".SH NAME\n{name} \\- ")), "{page}");
        assert!(page.contains(".SH SYNOPSIS"), "{page}");
        for word in words_of(name)
            .iter()
            .filter(|w| !["add", "passwd"].contains(w))
        {
            assert!(page.contains(word), "{name}.1 does not list `{word}`");
        }
        assert_renders_cleanly(name, page.as_bytes());
    }
    assert!(bare.leftovers().is_empty(), "{:?}", bare.leftovers());
}

#[test]
fn man_dir_writes_a_page_per_subcommand_and_names_each() {
    let bare = Bare::new();
    let out_dir = TempDir::new().unwrap();
    let dir = out_dir.path().join("new/man1");
    let dir_arg = dir.to_str().unwrap();
    for (name, sub, flag) in [
        ("xfer", "push", "recursive"),
        ("xferd", "user-add", "password\\-stdin"),
    ] {
        let out = bare.run(name, &["man", dir_arg]);
        assert_eq!(out.code(), 0, "{name} man DIR: {}", out.stderr());
        let page = dir.join(format!("{name}-{sub}.1"));
        assert!(
            out.stdout()
                .contains(&format!("wrote {}\n", page.display())),
            "{}",
            out.stdout()
        );
        let text = std::fs::read_to_string(&page).unwrap();
        // The title, then the program and version the page documents (the workspace's).
        let title = format!(
            ".TH {name}-{sub} 1  \"{name} {}\"",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&title), "{text}");
        assert!(text.contains(flag), "{name}-{sub}.1 lacks {flag}:\n{text}");
        assert_renders_cleanly(&format!("{name}-{sub}"), text.as_bytes());
    }
    let pages = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    for word in XFER_WORDS {
        assert!(pages.contains(&format!("xfer-{word}.1")), "{pages:?}");
    }
    for page in [
        "xfer.1",
        "xferd.1",
        "xferd-user.1",
        "xferd-user-passwd.1",
        "xferd-fingerprint.1",
        "xferd-man.1",
    ] {
        assert!(
            pages.contains(&page.to_owned()),
            "{page} missing: {pages:?}"
        );
    }
    // clap's implicit `help` subcommand gets no page of its own.
    assert!(!pages.iter().any(|p| p.contains("help")), "{pages:?}");
    assert!(bare.leftovers().is_empty(), "{:?}", bare.leftovers());
}

/// groff (man-db's formatter) renders the page without a warning, when it is installed.
fn assert_renders_cleanly(what: &str, page: &[u8]) {
    let Ok(mut child) = Command::new("groff")
        .args(["-man", "-Tutf8", "-k", "-ww", "-z"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        eprintln!("skipping the groff check of {what}: no groff");
        return;
    };
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(page).unwrap();
    let out = child.wait_with_output().unwrap();
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && warnings.is_empty(),
        "{what}: {warnings}"
    );
}
