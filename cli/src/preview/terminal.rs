//! What the terminal on stdout can show, decided from the environment and its window
//! size, without querying it: a query needs an answer on stdin, and a terminal (or a
//! bare pseudo-terminal) that does not answer would stall the pull.

use std::io::IsTerminal as _;

/// How an image is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// kitty's graphics protocol (kitty, Ghostty).
    Kitty,
    /// iTerm2's inline images (iTerm2, WezTerm).
    Iterm,
    /// Upper half blocks `▀` with a foreground and a background colour: two pixels a cell.
    Blocks(Palette),
}

/// Colours available to [`Protocol::Blocks`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Palette {
    /// 24-bit colour (`COLORTERM=truecolor` or `24bit`).
    TrueColor,
    /// The xterm 256-colour palette.
    Ansi256,
}

/// The terminal a preview is drawn on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Terminal {
    /// How to draw.
    pub protocol: Protocol,
    /// Window width in cells.
    pub cols: u32,
    /// Window height in cells.
    pub rows: u32,
    /// Cell size in pixels, when the terminal reports it.
    pub cell_px: Option<(u32, u32)>,
}

/// Window size assumed when neither the terminal nor `COLUMNS`/`LINES` tell it.
const DEFAULT_SIZE: (u32, u32) = (80, 24);

impl Terminal {
    /// The terminal on stdout, or `None` when stdout is not a terminal or `TERM=dumb`.
    pub fn stdout() -> Option<Terminal> {
        let stdout = std::io::stdout();
        if !stdout.is_terminal() {
            return None;
        }
        let env = |k: &str| std::env::var(k).ok();
        let protocol = protocol(&env)?;
        let ws = rustix::termios::tcgetwinsize(&stdout).ok();
        let (cols, rows) = match ws {
            Some(w) if w.ws_col > 0 && w.ws_row > 0 => (u32::from(w.ws_col), u32::from(w.ws_row)),
            _ => (
                env_number(&env, "COLUMNS").unwrap_or(DEFAULT_SIZE.0),
                env_number(&env, "LINES").unwrap_or(DEFAULT_SIZE.1),
            ),
        };
        let cell_px = ws.and_then(|w| {
            let (x, y) = (u32::from(w.ws_xpixel), u32::from(w.ws_ypixel));
            (x >= cols && y >= rows && cols > 0 && rows > 0).then(|| (x / cols, y / rows))
        });
        Some(Terminal {
            protocol,
            cols,
            rows,
            cell_px,
        })
    }
}

fn env_number(env: &dyn Fn(&str) -> Option<String>, key: &str) -> Option<u32> {
    env(key)?.trim().parse().ok().filter(|&n| n > 0)
}

/// Chooses the protocol from environment variables; `None` for `TERM=dumb`.
///
/// Inside tmux or screen the graphics protocols would need passthrough wrapping (and
/// `KITTY_WINDOW_ID` leaks in from the outer terminal), so only blocks are used there.
pub fn protocol(env: &dyn Fn(&str) -> Option<String>) -> Option<Protocol> {
    let has = |k: &str| env(k).is_some_and(|v| !v.is_empty());
    let term = env("TERM").unwrap_or_default();
    let term_program = env("TERM_PROGRAM").unwrap_or_default();
    if term == "dumb" {
        return None;
    }
    let multiplexed = has("TMUX")
        || has("STY")
        || term.starts_with("screen")
        || term.starts_with("tmux")
        || term_program == "tmux";
    if !multiplexed {
        if term == "xterm-kitty"
            || has("KITTY_WINDOW_ID")
            || term == "xterm-ghostty"
            || term_program == "ghostty"
        {
            return Some(Protocol::Kitty);
        }
        if term_program == "iTerm.app"
            || term_program == "WezTerm"
            || env("LC_TERMINAL").as_deref() == Some("iTerm2")
        {
            return Some(Protocol::Iterm);
        }
    }
    let colorterm = env("COLORTERM").unwrap_or_default();
    Some(Protocol::Blocks(
        if colorterm.eq_ignore_ascii_case("truecolor") || colorterm.eq_ignore_ascii_case("24bit") {
            Palette::TrueColor
        } else {
            Palette::Ansi256
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detect(vars: &[(&str, &str)]) -> Option<Protocol> {
        let env = |k: &str| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| (*v).to_string())
        };
        protocol(&env)
    }

    #[test]
    fn protocol_follows_the_environment() {
        use Palette::*;
        use Protocol::*;
        assert_eq!(detect(&[("TERM", "xterm-kitty")]), Some(Kitty));
        assert_eq!(
            detect(&[("TERM", "xterm-256color"), ("KITTY_WINDOW_ID", "3")]),
            Some(Kitty)
        );
        assert_eq!(detect(&[("TERM", "xterm-ghostty")]), Some(Kitty));
        assert_eq!(detect(&[("TERM_PROGRAM", "ghostty")]), Some(Kitty));
        assert_eq!(detect(&[("TERM_PROGRAM", "iTerm.app")]), Some(Iterm));
        assert_eq!(detect(&[("LC_TERMINAL", "iTerm2")]), Some(Iterm));
        assert_eq!(detect(&[("TERM_PROGRAM", "WezTerm")]), Some(Iterm));
        assert_eq!(
            detect(&[("TERM", "xterm-256color"), ("COLORTERM", "truecolor")]),
            Some(Blocks(TrueColor))
        );
        assert_eq!(detect(&[("COLORTERM", "24bit")]), Some(Blocks(TrueColor)));
        assert_eq!(detect(&[("TERM", "xterm")]), Some(Blocks(Ansi256)));
        assert_eq!(detect(&[]), Some(Blocks(Ansi256)));
        assert_eq!(
            detect(&[("TERM", "dumb"), ("COLORTERM", "truecolor")]),
            None
        );
    }

    #[test]
    fn multiplexers_get_blocks() {
        use Palette::*;
        use Protocol::*;
        assert_eq!(
            detect(&[
                ("TERM", "tmux-256color"),
                ("TMUX", "/tmp/tmux-0/default,1,0"),
                ("KITTY_WINDOW_ID", "1"),
                ("COLORTERM", "truecolor"),
            ]),
            Some(Blocks(TrueColor))
        );
        assert_eq!(
            detect(&[("TERM", "screen"), ("TERM_PROGRAM", "iTerm.app")]),
            Some(Blocks(Ansi256))
        );
    }
}
