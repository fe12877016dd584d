//! `xfer pull --preview`: pulled images are drawn on a terminal (a real pseudo-terminal
//! from util-linux `script`), never into a pipe; a damaged image costs one line on
//! stderr and never the pull.

use std::path::Path;
use std::process::{Command, Stdio};

use tempfile::TempDir;
use xfer_e2e::{Client, DEADLINE, Daemon, alice, bin, poll, write_file};

/// A PNG of `width`×`height` RGB pixels, written by hand (stored deflate blocks) so the
/// test depends on no image library.
fn png(width: u32, height: u32, pixel: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
    let mut raw = Vec::new();
    for y in 0..height {
        raw.push(0); // filter: none
        for x in 0..width {
            raw.extend_from_slice(&pixel(x, y));
        }
    }
    let mut zlib = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, block) in blocks.iter().enumerate() {
        zlib.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        zlib.extend_from_slice(&len.to_le_bytes());
        zlib.extend_from_slice(&(!len).to_le_bytes());
        zlib.extend_from_slice(block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in &raw {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    zlib.extend_from_slice(&((b << 16) | a).to_be_bytes());

    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [(b"IHDR", &ihdr), (b"IDAT", &zlib), (b"IEND", &Vec::new())] {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut chunk = kind.to_vec();
        chunk.extend_from_slice(data);
        out.extend_from_slice(&chunk);
        out.extend_from_slice(&crc32(&chunk).to_be_bytes());
    }
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

const RED: [u8; 3] = [255, 0, 0];
const BLUE: [u8; 3] = [0, 0, 255];

/// 100×20 pixels, left half red, right half blue.
fn red_blue() -> Vec<u8> {
    png(100, 20, |x, _| if x < 50 { RED } else { BLUE })
}

/// One drawn line of [`red_blue`] on a 40-column truecolour terminal: 20 red cells,
/// 20 blue cells (foreground and background both, two pixels a cell), colours reset.
fn red_blue_line() -> String {
    format!(
        "\x1b[38;2;255;0;0;48;2;255;0;0m{}\x1b[38;2;0;0;255;48;2;0;0;255m{}\x1b[0m",
        "▀".repeat(20),
        "▀".repeat(20)
    )
}

/// Single-quotes `s` for sh.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs `xfer ARGS…` on a 40×20 pseudo-terminal (util-linux `script`) as a truecolour
/// xterm; returns the exit code and everything the terminal received (stdout and
/// stderr), with the terminal's `\r\n` turned back into `\n`.
fn xfer_on_terminal(c: &Client, args: &[&str]) -> (i32, String) {
    let script = ["/usr/bin/script", "/bin/script"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("these tests need `script` from util-linux (Debian: bsdutils)");
    let mut line = format!(
        "stty cols 40 rows 20 && exec {}",
        quote(&bin("xfer").display().to_string())
    );
    for a in args {
        line.push(' ');
        line.push_str(&quote(a));
    }
    let out_path = c.home().join("terminal.out");
    let mut cmd = Command::new(script);
    cmd.args(["-qec", &line, "/dev/null"])
        .env("SHELL", "/bin/sh")
        .env("XFER_HOME", c.home())
        .env("TERM", "xterm-256color")
        .env("COLORTERM", "truecolor")
        // Images are content: NO_COLOR does not hide them.
        .env("NO_COLOR", "1");
    for var in [
        "KITTY_WINDOW_ID",
        "TERM_PROGRAM",
        "LC_TERMINAL",
        "TMUX",
        "STY",
        "COLUMNS",
        "LINES",
    ] {
        cmd.env_remove(var);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("output file"))
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning script");
    let status = poll(DEADLINE, || child.try_wait().ok().flatten()).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("xfer on a terminal did not finish within {DEADLINE:?}");
    });
    let bytes = std::fs::read(&out_path).expect("terminal output");
    let text = String::from_utf8_lossy(&bytes).replace("\r\n", "\n");
    (status.code().unwrap_or(-1), text)
}

#[test]
fn preview_into_a_pipe_draws_nothing_and_the_pull_is_intact() {
    let d = Daemon::start();
    let c = alice(&d);
    let local = TempDir::new().unwrap();
    let image = red_blue();
    let path = write_file(local.path(), "pic.png", &image);
    assert_eq!(c.xfer(&["push", "-q", &path], "").code(), 0);

    let back = TempDir::new().unwrap();
    let dest = format!("{}/", back.path().display());
    let out = c.xfer(&["pull", "--preview", "pic.png", &dest], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert!(
        !out.stdout().contains('\x1b'),
        "no escapes into a pipe: {:?}",
        out.stdout()
    );
    assert!(
        !out.stderr().contains("preview"),
        "ignored without a word: {}",
        out.stderr()
    );
    assert!(
        out.stdout().contains("pic.png"),
        "the usual result line: {}",
        out.stdout()
    );
    assert!(std::fs::read(back.path().join("pic.png")).unwrap() == image);
}

#[test]
fn preview_on_a_terminal_draws_the_image_fit_to_the_window() {
    let d = Daemon::start();
    let c = alice(&d);
    let local = TempDir::new().unwrap();
    let image = red_blue();
    let path = write_file(local.path(), "wide.png", &image);
    assert_eq!(c.xfer(&["push", "-q", &path], "").code(), 0);

    let back = TempDir::new().unwrap();
    let dest = format!("{}/", back.path().display());
    let (code, screen) = xfer_on_terminal(&c, &["pull", "--preview", "wide.png", &dest]);
    assert_eq!(code, 0, "{screen}");
    // 100×20 px on 40 columns: 40 cells wide, 4 rows (aspect 5:1 with 2:1 cells).
    let line = red_blue_line();
    assert_eq!(screen.matches(&line).count(), 4, "{screen:?}");
    assert!(
        screen.contains(&format!("{line}\n{line}\n{line}\n{line}\n")),
        "four consecutive lines: {screen:?}"
    );
    assert!(std::fs::read(back.path().join("wide.png")).unwrap() == image);

    // -q: no preview either.
    let again = TempDir::new().unwrap();
    let dest = format!("{}/", again.path().display());
    let (code, screen) = xfer_on_terminal(&c, &["pull", "-q", "--preview", "wide.png", &dest]);
    assert_eq!(code, 0, "{screen}");
    assert!(!screen.contains('▀'), "quiet draws nothing: {screen:?}");
}

#[test]
fn recursive_preview_draws_each_image_skips_text_and_reports_a_corrupt_png_in_one_line() {
    let d = Daemon::start();
    let c = alice(&d);
    let local = TempDir::new().unwrap();
    let album = local.path().join("album");
    std::fs::create_dir(&album).unwrap();
    let good = red_blue();
    // A PNG signature and header, then garbage.
    let mut bad = good[..33].to_vec();
    bad.extend_from_slice(&[0xa5; 200]);
    write_file(&album, "a-good.png", &good);
    write_file(&album, "b-bad.png", &bad);
    write_file(&album, "c-notes.txt", b"not a picture\n");
    write_file(&album, "d-again.png", &good);
    let out = c.xfer(&["push", "-q", "-r", &album.display().to_string()], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());

    let back = TempDir::new().unwrap();
    let dest = format!("{}/", back.path().display());
    let (code, screen) = xfer_on_terminal(&c, &["pull", "-r", "--preview", "album", &dest]);
    assert_eq!(code, 0, "a failed preview does not fail the pull: {screen}");

    // Both good images drawn, each after its own file.
    assert_eq!(screen.matches(&red_blue_line()).count(), 8, "{screen:?}");
    let notes: Vec<&str> = screen.lines().filter(|l| l.contains("preview:")).collect();
    assert_eq!(notes.len(), 1, "exactly one preview note: {screen:?}");
    let note = notes[0];
    assert!(
        note.contains("b-bad.png: cannot decode ("),
        "names the file and says why: {note:?}"
    );
    assert!(
        !screen.contains("c-notes.txt: "),
        "text is skipped silently: {screen:?}"
    );

    // Every file arrived intact, the corrupt one too: only its preview failed.
    for (name, data) in [
        ("a-good.png", &good[..]),
        ("b-bad.png", &bad[..]),
        ("c-notes.txt", b"not a picture\n"),
        ("d-again.png", &good[..]),
    ] {
        let got = std::fs::read(back.path().join("album").join(name)).unwrap();
        assert!(got == data, "{name} differs");
    }
}
