//! What a terminal shows after a program's output, for tests that must tell what is on
//! screen from what was merely written (a line editor redraws, erases and moves the
//! cursor): a small model of the escapes line editors and chat use — cursor moves,
//! erase in line and display, carriage return, line feed, wrapping at the last column.
//! Colour and mode changes are ignored; the scrollback is kept whole.

/// The screen: rows of text (scrollback included) and where the cursor is.
#[derive(Debug, Default)]
pub struct Screen {
    rows: Vec<Vec<char>>,
    row: usize,
    col: usize,
    cols: usize,
    /// Bell characters seen.
    pub bells: usize,
}

impl Screen {
    /// What `output` leaves on a terminal `cols` wide.
    pub fn parse(output: &str, cols: usize) -> Screen {
        let mut s = Screen {
            rows: vec![Vec::new()],
            cols,
            ..Screen::default()
        };
        let mut chars = output.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\x1b' => match chars.next() {
                    Some('[') => {
                        let mut params = String::new();
                        for p in chars.by_ref() {
                            if ('\x40'..='\x7e').contains(&p) {
                                s.csi(&params, p);
                                break;
                            }
                            params.push(p);
                        }
                    }
                    Some(']') => {
                        // OSC: up to BEL or ESC \.
                        while let Some(p) = chars.next() {
                            if p == '\x07' || (p == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                                break;
                            }
                        }
                    }
                    _ => {}
                },
                '\r' => s.col = 0,
                '\n' => s.down(1),
                '\x08' => s.col = s.col.saturating_sub(1),
                '\x07' => s.bells += 1,
                c if c < ' ' => {}
                c => s.put(c),
            }
        }
        s
    }

    /// The rows, trailing blanks trimmed, one per line.
    pub fn text(&self) -> String {
        let rows: Vec<String> = self
            .rows
            .iter()
            .map(|r| r.iter().collect::<String>().trim_end().to_owned())
            .collect();
        rows.join("\n")
    }

    /// The non-empty rows.
    pub fn lines(&self) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    fn down(&mut self, n: usize) {
        self.row += n;
        while self.rows.len() <= self.row {
            self.rows.push(Vec::new());
        }
    }

    fn put(&mut self, c: char) {
        if self.col >= self.cols {
            self.down(1);
            self.col = 0;
        }
        let row = &mut self.rows[self.row];
        while row.len() <= self.col {
            row.push(' ');
        }
        row[self.col] = c;
        self.col += 1;
    }

    fn csi(&mut self, params: &str, op: char) {
        let private = params.starts_with('?');
        let nums: Vec<usize> = params
            .trim_start_matches('?')
            .split(';')
            .map(|p| p.parse().unwrap_or(0))
            .collect();
        let n = nums.first().copied().unwrap_or(0).max(1);
        let first = nums.first().copied().unwrap_or(0);
        match (private, op) {
            (true, _) => {}
            (_, 'A') => self.row = self.row.saturating_sub(n),
            (_, 'B') => self.down(n),
            (_, 'C') => self.col = (self.col + n).min(self.cols.saturating_sub(1)),
            (_, 'D') => self.col = self.col.saturating_sub(n),
            (_, 'G') => self.col = n - 1,
            (_, 'H' | 'f') => {
                // Home: the scrollback is not a screen of its own here; a clear follows.
                self.col = nums.get(1).copied().unwrap_or(1).max(1) - 1;
            }
            (_, 'K') => {
                let row = &mut self.rows[self.row];
                match first {
                    0 => row.truncate(self.col),
                    1 => row.iter_mut().take(self.col + 1).for_each(|c| *c = ' '),
                    _ => row.clear(),
                }
            }
            (_, 'J') => match first {
                0 => {
                    self.rows[self.row].truncate(self.col);
                    self.rows.truncate(self.row + 1);
                }
                _ => {
                    self.rows = vec![Vec::new()];
                    self.row = 0;
                    self.col = 0;
                }
            },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Screen;

    #[test]
    fn erased_and_redrawn_text_is_shown_once() {
        let out = "> hello\r\n\x1b[1A\r\x1b[J[10:00] <a> hello\r\n> \x1b[1;7mx\x1b[0m\x07";
        let s = Screen::parse(out, 80);
        assert_eq!(s.lines(), ["[10:00] <a> hello", "> x"]);
        assert_eq!(s.bells, 1);
        let s = Screen::parse("abcdef\r\x1b[1C\x1b[K!", 4);
        assert_eq!(s.text(), "abcd\ne!");
        let s = Screen::parse("a\r\nb\x1b[H\x1b[2Jc", 80);
        assert_eq!(s.text(), "c");
    }
}
