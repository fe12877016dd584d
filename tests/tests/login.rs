//! Logging in, token reuse, logout, identical failures, throttling.

use std::os::unix::fs::PermissionsExt;

use xfer_e2e::{Client, Daemon, PASSWORD, RawConn};
use xfer_proto::{ErrorCode, Request, Response, Secret};

#[test]
fn right_password_logs_in_and_whoami_reuses_the_saved_token() {
    let d = Daemon::start();
    let c = Client::new();
    let out = c.login(&d, "alice", PASSWORD);
    assert!(
        out.stdout().contains("Logged in as alice"),
        "{}",
        out.stdout()
    );

    let logins = c.home().join("logins.toml");
    let mode = std::fs::metadata(&logins).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "saved token file must be private");
    assert!(std::fs::read_to_string(&logins).unwrap().contains("xft1_"));

    let who = c.xfer(&["whoami", "--json"], "");
    assert_eq!(who.code(), 0, "{}", who.stderr());
    let v: serde_json::Value = serde_json::from_str(who.stdout().trim()).unwrap();
    assert_eq!(v["user"], "alice");
    assert_eq!(v["fingerprint"], d.fingerprint.as_str());
    assert!(
        d.wait_for_log("method=\"token\""),
        "whoami must use the token, not the password"
    );
    let human = c.xfer(&["whoami"], "");
    assert!(human.stdout().contains("alice"), "{}", human.stdout());
}

#[test]
fn wrong_password_and_unknown_user_fail_the_same_way() {
    let d = Daemon::start();
    let fp = d.fingerprint.clone();
    let c = Client::new();
    let wrong = c.xfer(
        &[
            "login",
            &format!("alice@{}", d.host_port()),
            "--password-stdin",
            "--fingerprint",
            &fp,
        ],
        "not the password\n",
    );
    let unknown = c.xfer(
        &[
            "login",
            &format!("mallory@{}", d.host_port()),
            "--password-stdin",
            "--fingerprint",
            &fp,
        ],
        "not the password\n",
    );
    assert_eq!(wrong.code(), 3, "auth failures exit 3: {}", wrong.stderr());
    assert_eq!(unknown.code(), wrong.code());
    // Identical apart from the name the user typed.
    assert_eq!(
        unknown.stderr().replace("mallory@", "alice@"),
        wrong.stderr()
    );
    assert!(!c.home().join("logins.toml").exists() || c.xfer(&["whoami"], "").code() == 3);
}

#[tokio::test]
async fn unknown_user_and_wrong_password_get_byte_identical_replies() {
    let d = Daemon::start();
    let mut conn = RawConn::connect(d.addr, &d.fingerprint, None).await;
    let a = conn
        .request(Request::Login {
            user: "alice".into(),
            password: Secret::new("nope-nope"),
        })
        .await;
    let b = conn
        .request(Request::Login {
            user: "nobody".into(),
            password: Secret::new("nope-nope"),
        })
        .await;
    assert!(
        matches!(
            a,
            Some(Response::Error {
                code: ErrorCode::AuthFailed,
                ..
            })
        ),
        "{a:?}"
    );
    assert_eq!(a, b);
}

#[test]
fn logging_in_again_revokes_the_session_it_replaces() {
    let d = Daemon::start();
    let c = Client::new();
    c.login(&d, "alice", PASSWORD);
    let first = std::fs::read(c.home().join("logins.toml")).unwrap();
    c.login(&d, "alice", PASSWORD);
    assert_eq!(c.xfer(&["whoami"], "").code(), 0, "the new session works");
    assert!(
        d.wait_for_log("event=\"logout\""),
        "the old session was revoked"
    );
    // Put the first token back: the server must refuse it now.
    std::fs::write(c.home().join("logins.toml"), first).unwrap();
    let out = c.xfer(&["whoami"], "");
    assert_eq!(
        out.code(),
        3,
        "replaced token still works: {}",
        out.stdout()
    );
}

#[test]
fn logout_revokes_the_token_on_the_server() {
    let d = Daemon::start();
    let c = Client::new();
    c.login(&d, "alice", PASSWORD);
    let saved = std::fs::read(c.home().join("logins.toml")).unwrap();
    let out = c.xfer(&["logout"], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert_eq!(c.xfer(&["whoami"], "").code(), 3, "logged out locally");
    // Put the old token back: the server must refuse it now.
    std::fs::write(c.home().join("logins.toml"), saved).unwrap();
    let out = c.xfer(&["whoami"], "");
    assert_eq!(out.code(), 3, "revoked token still works: {}", out.stdout());
    assert!(out.stderr().contains("xfer login"), "{}", out.stderr());
    assert!(d.wait_for_log("event=\"logout\""));
}

#[tokio::test]
async fn login_attempts_per_connection_are_bounded() {
    let d = Daemon::start();
    let mut conn = RawConn::connect(d.addr, &d.fingerprint, None).await;
    for _ in 0..3 {
        let r = conn
            .request(Request::Login {
                user: "alice".into(),
                password: Secret::new("wrong-wrong"),
            })
            .await;
        assert!(
            matches!(
                r,
                Some(Response::Error {
                    code: ErrorCode::AuthFailed,
                    ..
                })
            ),
            "{r:?}"
        );
    }
    let r = conn
        .request(Request::Login {
            user: "alice".into(),
            password: Secret::new(PASSWORD),
        })
        .await;
    assert_eq!(r, None, "connection must be closed after 3 attempts");
}

/// Audit defect 11: a logged-in connection was an unlimited guessing channel.
#[tokio::test]
async fn failed_attempts_count_on_an_authenticated_connection_too() {
    let d = Daemon::start_with(&["alice", "bob"], None);
    let failed = |r: &Option<Response>| {
        matches!(
            r,
            Some(Response::Error {
                code: ErrorCode::AuthFailed,
                ..
            })
        )
    };
    for guess in ["password", "token"] {
        let mut conn = RawConn::connect(d.addr, &d.fingerprint, None).await;
        // Successful logins are not failures: logging in twice leaves all 3 attempts.
        for _ in 0..2 {
            assert!(conn.login("alice", PASSWORD).await.is_some());
        }
        for i in 0..3 {
            let req = match guess {
                "password" => Request::Login {
                    user: "bob".into(),
                    password: Secret::new(format!("wrong-{i}")),
                },
                _ => Request::Authenticate {
                    token: Secret::new(format!("xft1_not-a-token-{i}")),
                },
            };
            let r = conn.request(req).await;
            assert!(failed(&r), "{guess} guess {i}: {r:?}");
        }
        let r = conn.request(Request::Ping).await;
        assert_eq!(
            r, None,
            "{guess}: the authenticated connection must be closed after 3 failed attempts"
        );
    }
}

#[tokio::test]
async fn a_thousand_wrong_passwords_are_throttled_while_a_correct_login_elsewhere_succeeds() {
    let d = Daemon::start();
    let attacker = Some("127.0.0.2".parse().unwrap());
    let (mut throttled, mut refused) = (0, 0);
    let mut conn = RawConn::connect(d.addr, &d.fingerprint, attacker).await;
    for i in 0..1000 {
        let login = Request::Login {
            user: "alice".into(),
            password: Secret::new(format!("guess-{i}")),
        };
        let reply = match conn.request(login.clone()).await {
            Some(r) => r,
            None => {
                conn = RawConn::connect(d.addr, &d.fingerprint, attacker).await;
                conn.request(login)
                    .await
                    .expect("reply on a fresh connection")
            }
        };
        match reply {
            Response::Error {
                code: ErrorCode::Throttled,
                ..
            } => throttled += 1,
            Response::Error {
                code: ErrorCode::AuthFailed,
                ..
            } => refused += 1,
            other => panic!("guess {i} got {other:?}"),
        }
    }
    assert_eq!(throttled + refused, 1000);
    assert!(
        throttled >= 950,
        "only {throttled} of 1000 guesses were throttled"
    );

    // The legitimate user, from another address, still gets in while the flood is on.
    let c = Client::new();
    c.login(&d, "alice", PASSWORD);

    // Count the argon2 verifications that really ran, from the audit log.
    assert!(d.wait_for_log("outcome=\"success\""));
    let verified = d
        .audit_lines()
        .iter()
        .filter(|l| l.contains("verified=true"))
        .count();
    assert_eq!(verified, refused, "every refusal was a real verification");
    assert!(
        verified <= 25,
        "{verified} argon2 verifications ran for 1000 guesses"
    );
}

#[tokio::test]
async fn concurrent_guesses_cannot_outrun_the_throttle() {
    let d = Daemon::start();
    let attacker = Some("127.0.0.3".parse().unwrap());
    // 30 connections guess at once, before any verification has finished.
    let mut guesses = tokio::task::JoinSet::new();
    for i in 0..30 {
        let (addr, fp) = (d.addr, d.fingerprint.clone());
        guesses.spawn(async move {
            let mut conn = RawConn::connect(addr, &fp, attacker).await;
            let login = Request::Login {
                user: "alice".into(),
                password: Secret::new(format!("guess-{i}")),
            };
            conn.request(login).await
        });
    }
    let mut throttled = 0;
    while let Some(reply) = guesses.join_next().await {
        match reply.unwrap() {
            Some(Response::Error {
                code: ErrorCode::Throttled,
                ..
            }) => throttled += 1,
            Some(Response::Error {
                code: ErrorCode::AuthFailed,
                ..
            }) => {}
            other => panic!("unexpected reply {other:?}"),
        }
    }
    // The default source burst is 10: the other 20 never reach argon2.
    assert_eq!(throttled, 20);
    assert!(d.wait_for_log("outcome=\"throttled\""));
    let verified = d
        .audit_lines()
        .iter()
        .filter(|l| l.contains("verified=true"))
        .count();
    assert_eq!(
        verified, 10,
        "argon2 ran {verified} times for 30 concurrent guesses"
    );
}
