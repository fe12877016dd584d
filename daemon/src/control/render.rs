//! `xferd status` for people: a few aligned lines, grouped by connection.

use std::fmt::Write as _;

use super::Status;
use crate::connections::Direction;

/// The status as printed by `xferd status` (without `--json`).
pub fn status(s: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "xferd {} (pid {}), up {}",
        s.version,
        s.pid,
        duration(s.uptime_secs)
    );
    let _ = writeln!(out, "certificate {}", s.fingerprint);
    let logged_in = s.connections.iter().filter(|c| c.user.is_some()).count();
    let _ = writeln!(
        out,
        "connections: {} ({logged_in} logged in)",
        s.connections.len()
    );
    for c in &s.connections {
        let user = c.user.as_deref().unwrap_or("-");
        let note = if c.user.is_none() {
            "  not logged in"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  {user:<16} {:<24} {:>9}{note}",
            c.peer,
            duration(c.connected_secs)
        );
        for t in &c.transfers {
            let dir = match t.direction {
                Direction::Upload => "upload",
                Direction::Download => "download",
            };
            let pct = (t.done_bytes * 100)
                .checked_div(t.total_bytes)
                .unwrap_or(100);
            let _ = writeln!(
                out,
                "    {dir:<8} {}  {} / {} ({pct}%)",
                t.path,
                bytes(t.done_bytes),
                bytes(t.total_bytes)
            );
        }
    }
    let _ = writeln!(out, "chat: {} online", s.chat_users.len());
    if !s.chat_users.is_empty() {
        let _ = writeln!(out, "  {}", s.chat_users.join(", "));
    }
    for ch in &s.channels {
        let _ = writeln!(out, "  {}: {}", ch.channel, ch.members.join(", "));
    }
    out
}

/// `1h 02m 03s`, `4m 05s`, `7s`.
fn duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s:02}s"),
        _ => format!("{h}h {m:02}m {s:02}s"),
    }
}

/// Binary units with one decimal: `512 B`, `4.0 MiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connections::{ConnectionInfo, TransferInfo};
    use crate::control::ChannelMembers;

    #[test]
    fn status_lists_connections_transfers_and_channels() {
        let s = Status {
            version: "0.1.0".into(),
            pid: 42,
            uptime_secs: 3723,
            fingerprint: "SHA256:abc".into(),
            connections: vec![
                ConnectionInfo {
                    id: 1,
                    peer: "127.0.0.1:5000".into(),
                    user: Some("bob".into()),
                    connected_secs: 65,
                    transfers: vec![TransferInfo {
                        path: "big.bin".into(),
                        direction: Direction::Upload,
                        done_bytes: 4 << 20,
                        total_bytes: 64 << 20,
                    }],
                },
                ConnectionInfo {
                    id: 2,
                    peer: "127.0.0.1:5001".into(),
                    user: None,
                    connected_secs: 0,
                    transfers: vec![],
                },
            ],
            chat_users: vec!["alice".into(), "bob".into()],
            channels: vec![ChannelMembers {
                channel: "#lab".into(),
                members: vec!["alice".into(), "bob".into()],
            }],
        };
        let text = status(&s);
        assert!(
            text.starts_with("xferd 0.1.0 (pid 42), up 1h 02m 03s\n"),
            "{text}"
        );
        assert!(text.contains("connections: 2 (1 logged in)"), "{text}");
        assert!(
            text.contains("upload   big.bin  4.0 MiB / 64.0 MiB (6%)"),
            "{text}"
        );
        assert!(text.contains("not logged in"), "{text}");
        assert!(text.contains("  #lab: alice, bob"), "{text}");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(duration(65), "1m 05s");
    }
}
