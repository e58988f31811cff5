//! Human output, made safe to show: what trackers and peers wrote is escaped on
//! its way to the terminal.
//!
//! A summary, a comment or a user name can come from another organisation. Sent
//! raw to a terminal, `ESC [2J` clears what a reviewer was reading, an OSC
//! sequence retitles the window, C1 controls act like their escape sequences on
//! some terminals, and the bidirectional overrides and isolates reorder text so
//! that what a reviewer approves is not what it says (the "Trojan Source" class,
//! CVE-2021-42574). Every command's human output goes through [`Human`], which
//! writes such characters visibly as `\u{1b}`; newlines and tabs stay, since
//! bodies are multi-line. A field that must stay on one line (a summary in a
//! list) goes through [`one_line`] first, so a newline cannot forge a line of
//! ferry's own. `--json` output is written through [`Human::raw`], exact: JSON
//! escapes what it must, and a program reading it gets the peer's text as it is.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, Write};

/// Whether `c` must not reach a terminal as it is: C0 controls but newline and
/// tab, DEL, C1 controls, and the bidirectional marks, embeddings, overrides and
/// isolates.
fn is_unsafe(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{8}' | '\u{b}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        | '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}')
}

/// Appends `text` to `out` with every unsafe character written as `\u{..}`;
/// newlines too unless `newlines` (then written as `\n`, and `\r` as `\r`).
fn escape_into(out: &mut String, text: &str, newlines: bool) {
    for c in text.chars() {
        match c {
            '\n' if !newlines => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if is_unsafe(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// `text` for a terminal, on one line: newlines and every unsafe character
/// escaped.
pub fn one_line(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c == '\n' || c == '\r' || is_unsafe(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    escape_into(&mut out, text, false);
    Cow::Owned(out)
}

/// `text` for a terminal, newlines kept: for messages written to stderr.
pub fn escaped(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c == '\r' || is_unsafe(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    escape_into(&mut out, text, true);
    Cow::Owned(out)
}

/// A writer for one log record on stderr (tracing formats each record and writes
/// it whole, through a writer made for it): written on drop, its line breaks but
/// the last one escaped, and the bidirectional characters. The log formatter
/// escapes control characters in what it logs itself but not these, and its own
/// colour codes must stay.
pub struct LogRecord<W: Write> {
    inner: W,
    record: Vec<u8>,
}

impl<W: Write> LogRecord<W> {
    /// A record to be written to `inner`.
    pub fn new(inner: W) -> LogRecord<W> {
        LogRecord {
            inner,
            record: Vec::new(),
        }
    }
}

impl<W: Write> Write for LogRecord<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.record.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for LogRecord<W> {
    fn drop(&mut self) {
        let record = String::from_utf8_lossy(&self.record);
        let (body, end) = match record.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (&*record, ""),
        };
        let mut text = String::with_capacity(record.len() + 8);
        for c in body.chars() {
            match c {
                '\n' => text.push_str("\\n"),
                '\r' => text.push_str("\\r"),
                '\u{61c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}' => {
                    let _ = write!(text, "\\u{{{:x}}}", c as u32);
                }
                c => text.push(c),
            }
        }
        text.push_str(end);
        let _ = self.inner.write_all(text.as_bytes());
    }
}

/// The writer of every command's human output: escapes what it is given (see the
/// module documentation). Bytes that are not UTF-8 are written as `\xNN`; a
/// character split across two writes is put together first.
pub struct Human<'a> {
    inner: &'a mut dyn Write,
    /// The start of a character whose other bytes the next write brings.
    partial: Vec<u8>,
}

impl<'a> Human<'a> {
    /// Escapes what is written to it into `inner`.
    pub fn new(inner: &'a mut dyn Write) -> Human<'a> {
        Human {
            inner,
            partial: Vec::new(),
        }
    }

    /// The underlying writer, for output that is exact by design: `--json`, and
    /// ferry's own colour codes.
    pub fn raw(&mut self) -> &mut dyn Write {
        &mut *self.inner
    }

    /// Writes `text` in the ANSI style `code` (`31` red...) when `colour`, as
    /// plain text otherwise; the text itself is escaped either way.
    pub fn styled(&mut self, colour: bool, code: &str, text: &str) -> io::Result<()> {
        if colour {
            write!(self.inner, "\x1b[{code}m")?;
            self.write_all(text.as_bytes())?;
            self.inner.write_all(b"\x1b[m")
        } else {
            self.write_all(text.as_bytes())
        }
    }

    /// Escapes `bytes` into `inner`; keeps an incomplete last character.
    fn escape(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        let mut text = String::with_capacity(bytes.len());
        loop {
            match std::str::from_utf8(bytes) {
                Ok(valid) => {
                    escape_into(&mut text, valid, true);
                    break;
                }
                Err(e) => {
                    let (valid, rest) = bytes.split_at(e.valid_up_to());
                    // Checked by from_utf8 just now.
                    escape_into(&mut text, &String::from_utf8_lossy(valid), true);
                    match e.error_len() {
                        Some(bad) => {
                            for b in &rest[..bad] {
                                let _ = write!(text, "\\x{b:02x}");
                            }
                            bytes = &rest[bad..];
                        }
                        None => {
                            self.partial.extend_from_slice(rest);
                            break;
                        }
                    }
                }
            }
        }
        self.inner.write_all(text.as_bytes())
    }
}

impl Write for Human<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.partial.is_empty() {
            self.escape(buf)?;
        } else {
            let mut joined = std::mem::take(&mut self.partial);
            joined.extend_from_slice(buf);
            self.escape(&joined)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Drop for Human<'_> {
    /// A character never completed is written as the bytes it had.
    fn drop(&mut self) {
        let partial = std::mem::take(&mut self.partial);
        let mut text = String::new();
        for b in partial {
            let _ = write!(text, "\\x{b:02x}");
        }
        let _ = self.inner.write_all(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn through_human(chunks: &[&[u8]]) -> String {
        let mut out = Vec::new();
        {
            let mut human = Human::new(&mut out);
            for chunk in chunks {
                human.write_all(chunk).unwrap();
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn controls_and_bidi_are_written_visibly() {
        let text = "a\x1b[2Jb\x1b]0;title\x07c\u{9b}d\u{202e}e\u{2066}f\u{200f}g\x7fh\ti\nj\rk";
        assert_eq!(
            through_human(&[text.as_bytes()]),
            "a\\u{1b}[2Jb\\u{1b}]0;title\\u{7}c\\u{9b}d\\u{202e}e\\u{2066}f\\u{200f}g\\u{7f}h\ti\nj\\rk"
        );
        assert_eq!(one_line("two\nlines\u{202e}"), "two\\nlines\\u{202e}");
        assert!(matches!(one_line("Printer on fire"), Cow::Borrowed(_)));
        assert_eq!(escaped("a\nb\x1bc"), "a\nb\\u{1b}c");
    }

    #[test]
    fn characters_split_between_writes_and_bad_bytes() {
        let rlo = "\u{202e}".as_bytes();
        assert_eq!(
            through_human(&[b"x", &rlo[..1], &rlo[1..], b"\xffy", "é".as_bytes()]),
            "x\\u{202e}\\xffyé"
        );
        assert_eq!(through_human(&[b"z", &rlo[..2]]), "z\\xe2\\x80");
    }

    #[test]
    fn a_log_record_stays_one_line_and_keeps_its_colours() {
        let mut out = Vec::new();
        {
            let mut record = LogRecord::new(&mut out);
            write!(record, "\x1b[33mWARN\x1b[0m two\nlines \u{202e}x\n").unwrap();
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\x1b[33mWARN\x1b[0m two\\nlines \\u{202e}x\n"
        );
    }

    #[test]
    fn styles_are_ferrys_own_and_the_text_is_still_escaped() {
        let mut out = Vec::new();
        Human::new(&mut out)
            .styled(true, "32", "ok\x1b[8m")
            .unwrap();
        assert_eq!(out, b"\x1b[32mok\\u{1b}[8m\x1b[m");
    }
}
