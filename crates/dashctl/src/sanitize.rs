//! Neutralising terminal control characters in text that came from a customer or a
//! tenant (message texts, names, flow sources, errors dashd relays) before dashctl prints
//! it, so that nobody can move the cursor, clear the screen, retitle the window, write
//! hyperlinks or reorder text on an operator's terminal.
//!
//! Each control character is replaced by a visible placeholder, never dropped silently:
//!
//! - C0 controls (U+0000–U+001F) other than newline and tab, in caret notation: ESC
//!   becomes `^[`, BEL `^G`, carriage return `^M`. With its ESC replaced, a CSI or OSC
//!   sequence (`ESC [ ...`, `ESC ] ... BEL`) is left as inert, readable text.
//! - DEL (U+007F) becomes `^?`.
//! - C1 controls (U+0080–U+009F, which include the 8-bit CSI and OSC) and the bidi
//!   embedding, override and isolate characters (U+202A–U+202E, U+2066–U+2069) become
//!   U+FFFD, the replacement character.
//!
//! The result holds no control character but newline and tab, so sanitising twice
//! changes nothing. JSON output needs none of this: serde escapes control characters.

use std::borrow::Cow;

/// What is shown for a C1 control or a bidi control.
const PLACEHOLDER: char = '\u{FFFD}';

/// `text` with every terminal control character replaced by a visible placeholder (see
/// the module documentation); borrowed when there is nothing to replace.
pub fn sanitize(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_control) {
        return Cow::Borrowed(text);
    }
    let mut clean = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if !is_control(c) => clean.push(c),
            '\u{7f}' => clean.push_str("^?"),
            // Caret notation: the control's code plus 0x40 is the printable letter.
            '\u{0}'..='\u{1f}' => {
                clean.push('^');
                clean.push(char::from(c as u8 + 0x40));
            }
            _ => clean.push(PLACEHOLDER),
        }
    }
    Cow::Owned(clean)
}

/// Whether a terminal could act on `c` rather than print it.
fn is_control(c: char) -> bool {
    match c {
        '\n' | '\t' => false,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' => true,
        '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        for text in [
            "",
            "hello",
            "line one\nline two\ttabbed",
            "héllo wörld ✓ 日本語 🎉",
        ] {
            assert!(
                matches!(sanitize(text), Cow::Borrowed(t) if t == text),
                "{text:?}"
            );
        }
    }

    #[test]
    fn escape_sequences_are_left_inert() {
        assert_eq!(sanitize("\x1b]0;pwned\x07\x1b[2Jhi"), "^[]0;pwned^G^[[2Jhi");
        assert_eq!(
            sanitize("\x1b]8;;https://evil.test\x1b\\click\x1b]8;;\x1b\\"),
            "^[]8;;https://evil.test^[\\click^[]8;;^[\\"
        );
        assert_eq!(sanitize("red \x1b[31mtext\x1b[0m"), "red ^[[31mtext^[[0m");
    }

    #[test]
    fn every_c0_control_but_newline_and_tab_and_del_is_shown_in_caret_notation() {
        assert_eq!(sanitize("a\0b"), "a^@b");
        assert_eq!(sanitize("over\rwrite"), "over^Mwrite");
        assert_eq!(sanitize("back\x08space"), "back^Hspace");
        assert_eq!(sanitize("del\x7f"), "del^?");
        assert_eq!(sanitize("\x1f"), "^_");
        for code in 0u8..0x20 {
            let c = char::from(code);
            let clean = sanitize(&c.to_string()).into_owned();
            if c == '\n' || c == '\t' {
                assert_eq!(clean, c.to_string());
            } else {
                assert!(
                    clean.starts_with('^') && clean.len() == 2,
                    "{code:#x}: {clean:?}"
                );
            }
        }
    }

    #[test]
    fn c1_and_bidi_controls_become_replacement_characters() {
        // 8-bit CSI and OSC.
        assert_eq!(
            sanitize("\u{9b}2J\u{9d}0;x\u{9c}"),
            "\u{FFFD}2J\u{FFFD}0;x\u{FFFD}"
        );
        for code in 0x80u32..=0x9f {
            let c = char::from_u32(code).unwrap();
            assert_eq!(sanitize(&c.to_string()), "\u{FFFD}", "{code:#x}");
        }
        for c in [
            '\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}', '\u{202e}', '\u{2066}', '\u{2067}',
            '\u{2068}', '\u{2069}',
        ] {
            assert_eq!(sanitize(&format!("a{c}b")), "a\u{FFFD}b", "{:#x}", c as u32);
        }
        // Neighbours of the ranges stay as they are.
        for c in [
            '\u{a0}', '\u{2029}', '\u{202f}', '\u{2065}', '\u{206a}', '~',
        ] {
            assert_eq!(sanitize(&c.to_string()), c.to_string(), "{:#x}", c as u32);
        }
    }

    #[test]
    fn sanitising_twice_changes_nothing() {
        let once = sanitize("\x1b[2J\u{9b}\u{202e}\r\x7f").into_owned();
        assert_eq!(sanitize(&once), once);
        assert!(!once.chars().any(is_control));
    }
}
