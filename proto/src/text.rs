//! The character policy for names both ends agree on: user names, channel names and
//! file paths.
//!
//! Two names that look the same must be the same name, and a name must show everything
//! it holds. So names are kept in Unicode NFC ([`nfc`]: `é` typed as `e` + U+0301 on
//! macOS and as U+00E9 elsewhere is one name), and characters that print as nothing are
//! refused ([`first_invisible`]): controls (Cc), format characters (Cf: the zero-width
//! space, joiners, word joiner, byte-order mark, bidirectional controls, soft hyphen)
//! and the line and paragraph separators. A refusal names the character as `U+XXXX`
//! ([`CodePoint`]), since showing it would show nothing. Text that is not a name (chat
//! messages) is not refused; receivers print it through [`escape_invisible`].

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use unicode_normalization::{UnicodeNormalization, is_nfc};

/// A character named by its code point, `U+200B`, for messages about characters that
/// cannot be shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodePoint(pub char);

impl fmt::Display for CodePoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "U+{:04X}", self.0 as u32)
    }
}

/// `s` in Unicode Normalization Form C; borrowed when it already is (the common case).
pub fn nfc(s: &str) -> Cow<'_, str> {
    if is_nfc(s) {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(s.nfc().collect())
    }
}

/// Whether `c` prints as nothing or changes how its neighbours print: a control (Cc), a
/// format character (Cf, Unicode 16), the line or paragraph separator (Zl, Zp), or
/// another default-ignorable character that draws nothing (the combining grapheme
/// joiner, Hangul fillers, Khmer inherent vowels, Mongolian variation selectors).
/// Variation selectors U+FE00–FE0F stay allowed: emoji and CJK names use them.
pub fn is_invisible(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{0600}'..='\u{0605}'
                | '\u{061C}'
                | '\u{06DD}'
                | '\u{070F}'
                | '\u{0890}'..='\u{0891}'
                | '\u{08E2}'
                | '\u{115F}'..='\u{1160}'
                | '\u{17B4}'..='\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206F}'
                | '\u{3164}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{110BD}'
                | '\u{110CD}'
                | '\u{13430}'..='\u{1343F}'
                | '\u{1BCA0}'..='\u{1BCA3}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0001}'
                | '\u{E0020}'..='\u{E007F}'
        )
}

/// The first character of `s` that [`is_invisible`], if any.
pub fn first_invisible(s: &str) -> Option<CodePoint> {
    s.chars().find(|&c| is_invisible(c)).map(CodePoint)
}

/// Whether a receiver should show `c` escaped in running text. Everything
/// [`is_invisible`] except what ordinary text needs: the zero-width joiner and
/// non-joiner (emoji sequences, Persian and Indic scripts) and the tag characters
/// (subdivision flags such as Scotland's).
pub fn escape_in_text(c: char) -> bool {
    is_invisible(c) && !matches!(c, '\u{200C}' | '\u{200D}' | '\u{E0020}'..='\u{E007F}')
}

/// `s` with every character that [`escape_in_text`] written as `\u{XXXX}`, so nothing
/// in it can move the cursor, reorder the line or hide between two letters.
pub fn escape_invisible(s: &str) -> Cow<'_, str> {
    escape_where(s, escape_in_text)
}

/// `s` with every [`is_invisible`] character written as `\u{XXXX}`: for names, where
/// even a joiner is a look-alike.
pub fn escape_name(s: &str) -> Cow<'_, str> {
    escape_where(s, is_invisible)
}

fn escape_where(s: &str, escape: fn(char) -> bool) -> Cow<'_, str> {
    if !s.chars().any(escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if escape(c) {
            let _ = write!(out, "\\u{{{:04x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nfc_composes_and_borrows_what_is_composed() {
        assert_eq!(nfc("e\u{301}"), "\u{e9}");
        assert_eq!(nfc("Cafe\u{301}/n\u{303}"), "Caf\u{e9}/\u{f1}");
        assert!(matches!(nfc("caf\u{e9} 日本"), Cow::Borrowed(_)));
        // Compatibility forms are not folded: NFC, not NFKC.
        assert_eq!(nfc("\u{fb01}"), "\u{fb01}");
    }

    #[test]
    fn invisible_characters_are_named_by_code_point() {
        for (s, c) in [
            ("a\u{200b}b", "U+200B"),
            ("a\u{200c}b", "U+200C"),
            ("a\u{200d}b", "U+200D"),
            ("a\u{2060}b", "U+2060"),
            ("\u{feff}bom", "U+FEFF"),
            ("x\u{202e}gpj.exe", "U+202E"),
            ("\u{2066}", "U+2066"),
            ("\u{2069}", "U+2069"),
            ("soft\u{ad}hyphen", "U+00AD"),
            ("a\u{34f}b.pdf", "U+034F"),
            ("\u{3164}", "U+3164"),
            ("a\u{ffa0}", "U+FFA0"),
            ("a\u{180b}", "U+180B"),
            ("line\u{2028}sep", "U+2028"),
            ("tab\t", "U+0009"),
            ("del\u{7f}", "U+007F"),
            ("tag\u{e0041}", "U+E0041"),
        ] {
            assert_eq!(
                first_invisible(s).map(|c| c.to_string()).as_deref(),
                Some(c)
            );
        }
        for s in [
            "plain",
            "caf\u{e9}",
            "e\u{301}",
            "日本",
            "שלום",
            "a b",
            "🙂",
        ] {
            assert_eq!(first_invisible(s), None, "{s:?}");
        }
    }

    #[test]
    fn escaping_keeps_joiners_in_text_but_not_in_names() {
        let family = "\u{1f468}\u{200d}\u{1f469}";
        assert!(matches!(escape_invisible(family), Cow::Borrowed(_)));
        assert_eq!(escape_name(family), "\u{1f468}\\u{200d}\u{1f469}");
        assert_eq!(escape_invisible("a\u{200b}b"), "a\\u{200b}b");
        assert_eq!(
            escape_invisible("x\u{202e}y\u{feff}"),
            "x\\u{202e}y\\u{feff}"
        );
        assert!(escape_invisible("\u{1b}[31m\u{2060}").is_ascii());
    }
}
