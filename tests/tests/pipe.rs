//! A reader that stops early (`xfer ls | head -1`): the command exits quietly with 0,
//! as ripgrep does, instead of panicking on the closed pipe.

use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{Command, Stdio};

use xfer_e2e::{DEADLINE, Daemon, alice, bin, poll};

/// Files in the listing, with names long enough that `xfer ls` prints several times
/// what a pipe holds (64 KiB on Linux): it is still writing when the reader goes.
const FILES: usize = 1500;

#[test]
fn ls_into_a_pipe_closed_after_one_line_exits_quietly() {
    let d = Daemon::start_with(&["alice"], None);
    let c = alice(&d);
    let files = d.files_dir("alice");
    std::fs::create_dir_all(&files).unwrap();
    let pad = "x".repeat(200);
    for i in 0..FILES {
        std::fs::write(files.join(format!("f{i:05}-{pad}")), b"").unwrap();
    }
    // The whole listing, read to the end, is far larger than a pipe.
    let all = c.xfer(&["ls"], "");
    assert_eq!(all.code(), 0, "{}", all.stderr());
    assert_eq!(all.stdout().lines().count(), FILES);
    assert!(all.stdout().len() > 4 * 64 * 1024);

    let mut child = Command::new(bin("xfer"))
        .arg("ls")
        .env("XFER_HOME", c.home())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning xfer");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.starts_with("f00000-"), "{first:?}");
    // `head -1` exits: the read end of the pipe closes while xfer is still writing.
    drop(stdout);

    let status = poll(DEADLINE, || child.try_wait().ok().flatten());
    let Some(status) = status else {
        let _ = child.kill();
        panic!("xfer ls did not exit after its reader went away");
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("piped stderr")
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr, "", "a closed stdout is not worth a message");
    assert_eq!(status.code(), Some(0), "{stderr}");
}
