//! One admin path: every `xferd` command finds the same config (`--config`,
//! `$XFERD_CONFIG`, `./xferd.toml`, `/etc/xferd/xferd.toml`), resolves the paths in it
//! against the file's directory, names the files it changed, and never starts a second,
//! empty server by accident. Also `xferd check`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use xfer_e2e::{Client, Daemon, Out, PASSWORD, bin, run};

/// What `xferd CONFIG_ENV ARGS…` does when run from `cwd`; `env` is `$XFERD_CONFIG`
/// (unset when `None`).
fn xferd_at(cwd: &Path, env: Option<&Path>, args: &[&str], stdin: &str) -> Out {
    let mut cmd = Command::new(bin("xferd"));
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("XFERD_CONFIG")
        .env_remove("STATE_DIRECTORY");
    if let Some(path) = env {
        cmd.env("XFERD_CONFIG", path);
    }
    Out(run(&mut cmd, stdin))
}

/// Whether this machine has a system-wide config, which would be found before the
/// built-in defaults that some assertions are about.
fn system_config_present() -> bool {
    let present = Path::new("/etc/xferd/xferd.toml").exists();
    if present {
        eprintln!("/etc/xferd/xferd.toml exists here: skipping built-in-defaults checks");
    }
    present
}

/// A fresh tree: `x/` for the server's config, `elsewhere/` as an unrelated cwd.
fn dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::TempDir::new().unwrap();
    let (x, elsewhere) = (tmp.path().join("x"), tmp.path().join("elsewhere"));
    std::fs::create_dir(&x).unwrap();
    std::fs::create_dir(&elsewhere).unwrap();
    (tmp, x, elsewhere)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn an_absolute_config_from_another_directory_changes_that_server() {
    let (_tmp, x, elsewhere) = dirs();
    let cfg = x.join("xferd.toml");
    let init = xferd_at(
        &elsewhere,
        None,
        &["--config", s(&cfg), "--listen", "127.0.0.1:0", "init"],
        "",
    );
    assert_eq!(init.code(), 0, "{}", init.stderr());
    // The data directory sits next to the config, not in the working directory.
    let data = x.join("xferd-data");
    assert!(data.join("tls/cert.pem").exists(), "{}", init.stdout());
    // init wrote the listen address it was given, and says what to do next.
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(
        text.lines().any(|l| l == "listen = \"127.0.0.1:0\""),
        "{text}"
    );
    let stdout = init.stdout();
    let add_hint = format!("xferd --config {} user add NAME", cfg.display());
    assert!(stdout.contains(&add_hint), "{stdout}");
    assert!(
        stdout.contains("certificate fingerprint SHA256:"),
        "{stdout}"
    );

    let add = xferd_at(
        &elsewhere,
        None,
        &[
            "--config",
            s(&cfg),
            "user",
            "add",
            "carol",
            "--password-stdin",
        ],
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(add.code(), 0, "{}", add.stderr());
    let passwd = data.join("passwd");
    assert_eq!(
        add.stdout(),
        format!("added user carol to {}\n", passwd.display())
    );
    assert!(std::fs::read_to_string(&passwd).unwrap().contains("carol:"));
    assert_eq!(
        std::fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "nothing in cwd"
    );

    // A daemon started with that config (and no other flags) lets carol in.
    let mut cmd = Command::new(bin("xferd"));
    cmd.args(["--config", s(&cfg)])
        .current_dir(&elsewhere)
        .env_remove("XFERD_CONFIG")
        .env_remove("STATE_DIRECTORY");
    let d = Daemon::spawn(cmd, &data).expect("xferd starts");
    assert!(
        d.addr.ip().is_loopback(),
        "listens where the file says: {}",
        d.addr
    );
    Client::new().login(&d, "carol", PASSWORD);

    let del = xferd_at(
        &elsewhere,
        None,
        &["--config", s(&cfg), "user", "del", "carol"],
        "",
    );
    assert_eq!(del.code(), 0, "{}", del.stderr());
    assert!(
        del.stdout()
            .starts_with(&format!("deleted user carol from {}", passwd.display())),
        "{}",
        del.stdout()
    );
}

#[test]
fn init_writes_the_data_dir_it_was_given_as_an_absolute_path() {
    let (_tmp, x, elsewhere) = dirs();
    let cfg = x.join("xferd.toml");
    let args = ["--config", s(&cfg), "--data-dir", "rel/data", "init"];
    let init = xferd_at(&elsewhere, None, &args, "");
    assert_eq!(init.code(), 0, "{}", init.stderr());
    let data = elsewhere.join("rel/data");
    let line = format!("data_dir = \"{}\"", data.display());
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.lines().any(|l| l == line), "{text}");
    assert!(data.join("tls/key.pem").exists());
    // Without --data-dir, from anywhere, the file now leads to that directory.
    let fp = xferd_at(&x, None, &["--config", s(&cfg), "fingerprint"], "");
    assert_eq!(fp.code(), 0, "{}", fp.stderr());
    assert!(init.stdout().contains(fp.stdout().trim()));
}

#[test]
fn xferd_config_and_a_config_in_the_working_directory_are_found() {
    let (_tmp, x, elsewhere) = dirs();
    let cfg = x.join("xferd.toml");
    std::fs::write(&cfg, "data_dir = \"srv\"\n").unwrap();
    let init = xferd_at(&elsewhere, Some(&cfg), &["init"], "");
    assert_eq!(init.code(), 0, "{}", init.stderr());
    assert!(init.stdout().contains("kept existing"), "{}", init.stdout());
    assert!(
        x.join("srv/tls/cert.pem").exists(),
        "data_dir resolved against x/"
    );

    // $XFERD_CONFIG from an unrelated directory.
    let args = ["user", "add", "bob", "--password-stdin"];
    let add = xferd_at(&elsewhere, Some(&cfg), &args, "bobs password\n");
    assert_eq!(add.code(), 0, "{}", add.stderr());
    let passwd = x.join("srv/passwd");
    assert_eq!(
        add.stdout(),
        format!("added user bob to {}\n", passwd.display())
    );

    // ./xferd.toml when run in its directory.
    let list = xferd_at(&x, None, &["user", "list"], "");
    assert_eq!(
        (list.code(), list.stdout()),
        (0, "bob\n".into()),
        "{}",
        list.stderr()
    );
    let check = xferd_at(&x, None, &["check"], "");
    assert_eq!(check.stdout(), format!("config OK: {}\n", cfg.display()));

    // A named file that does not exist is an error, not a silent fallback.
    let missing = x.join("typo.toml");
    let out = xferd_at(&x, Some(&missing), &["user", "list"], "");
    assert_eq!(out.code(), 1);
    let err = out.stderr();
    assert!(
        err.contains(s(&missing)) && err.contains("$XFERD_CONFIG") && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn user_commands_refuse_to_start_a_new_data_directory_unless_asked() {
    let (_tmp, x, elsewhere) = dirs();
    let add = ["user", "add", "carol", "--password-stdin"];
    // With a config whose data directory does not exist.
    let cfg = x.join("xferd.toml");
    std::fs::write(&cfg, "data_dir = \"data\"\n").unwrap();
    let out = xferd_at(&elsewhere, Some(&cfg), &add, &format!("{PASSWORD}\n"));
    assert_eq!(out.code(), 1);
    let err = out.stderr();
    let data = x.join("data");
    assert!(
        err.contains(s(&data)) && err.contains(s(&cfg)) && err.contains("--create"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!data.exists());
    let out = xferd_at(&elsewhere, Some(&cfg), &["user", "list"], "");
    assert!(
        out.code() == 1 && out.stderr().contains(s(&data)),
        "{}",
        out.stderr()
    );

    // Asked with --create: made, private.
    let create: Vec<&str> = add.iter().copied().chain(["--create"]).collect();
    let out = xferd_at(&elsewhere, Some(&cfg), &create, &format!("{PASSWORD}\n"));
    assert_eq!(out.code(), 0, "{}", out.stderr());
    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    assert!(
        out.stdout().contains(s(&data.join("passwd"))),
        "{}",
        out.stdout()
    );

    // With no config at all, the error says so.
    if !system_config_present() {
        let out = xferd_at(&elsewhere, None, &add, &format!("{PASSWORD}\n"));
        let err = out.stderr();
        assert_eq!(out.code(), 1);
        assert!(
            err.contains(s(&elsewhere.join("xferd-data"))) && err.contains("built-in defaults"),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    }
}

#[test]
fn fingerprint_in_the_wrong_directory_points_at_the_config_instead_of_init() {
    let (_tmp, _x, elsewhere) = dirs();
    if system_config_present() {
        return;
    }
    let out = xferd_at(&elsewhere, None, &["fingerprint"], "");
    assert_eq!(out.code(), 1);
    let err = out.stderr();
    assert!(
        err.contains(s(&elsewhere.join("xferd-data")))
            && err.contains("built-in defaults")
            && err.contains("--config FILE"),
        "{err}"
    );
    assert!(
        !err.contains("init"),
        "must not suggest a second identity: {err}"
    );
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
}

#[test]
fn check_accepts_a_good_config_and_names_the_key_at_fault() {
    let (_tmp, x, elsewhere) = dirs();
    let cfg = x.join("xferd.toml");
    let init = xferd_at(&elsewhere, None, &["--config", s(&cfg), "init"], "");
    assert_eq!(init.code(), 0, "{}", init.stderr());
    let check = |text: Option<&str>| {
        if let Some(text) = text {
            std::fs::write(&cfg, text).unwrap();
        }
        xferd_at(&elsewhere, None, &["--config", s(&cfg), "check"], "")
    };
    let ok = check(None);
    assert_eq!(ok.code(), 0, "{}", ok.stderr());
    assert_eq!(ok.stdout(), format!("config OK: {}\n", cfg.display()));

    let bad = |out: Out, needles: &[&str]| {
        let err = out.stderr();
        assert_ne!(out.code(), 0, "{err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        for n in needles {
            assert!(err.contains(n), "names {n}: {err}");
        }
        assert!(out.stdout().is_empty(), "{}", out.stdout());
    };
    let good = std::fs::read_to_string(&cfg).unwrap();
    bad(
        check(Some(&format!("{good}\nmax_conections = 5\n"))),
        &["max_conections", s(&cfg)],
    );
    bad(
        check(Some(
            &good.replace("max_connections = 1024", "max_connections = 0"),
        )),
        &["limits.max_connections", s(&cfg)],
    );
    let missing_cert = good.replace(
        "[tls]\n",
        "[tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n",
    );
    bad(
        check(Some(&missing_cert)),
        &["[tls] cert", "/nonexistent/cert.pem"],
    );
    std::fs::write(&cfg, &good).unwrap();
    let passwd = x.join("xferd-data/passwd");
    std::fs::write(&passwd, "bob-without-a-hash\n").unwrap();
    std::fs::set_permissions(&passwd, std::fs::Permissions::from_mode(0o600)).unwrap();
    bad(
        check(None),
        &["password_file", &format!("{}:1", passwd.display())],
    );
}
