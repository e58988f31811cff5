//! A linear-time bound on how deeply YAML nests, checked before a parser sees
//! anything a peer wrote.
//!
//! libyaml (under serde_yaml) refuses nesting past a recursion limit, but the time
//! to get there grows faster than linearly with the depth: a 400 KB replica of
//! `[[[…]]]` 200 000 deep took about five minutes to be refused (20 000 deep took
//! 2.9 s, 40 000 deep 7.7 s), under the site lock, and again on every run. So
//! replicas and `site.yaml` first pass [`check`], one pass over the bytes that
//! follows libyaml's own scanner rules exactly where they decide what is structure
//! and what is text: flow brackets count only outside quoted scalars (`''` and
//! `\"` escapes), comments, plain scalars and block scalars (`|`, `>`, whose extent
//! depends on indentation), and block collections count by the indentation levels
//! the scanner opens (one per `- `, `? ` or `key:` at a deeper column, plus one for
//! a sequence written at its parent key's column).
//!
//! Where the input is something libyaml would reject, the check keeps reading it
//! as structure rather than text: libyaml stops at its first error, so counting
//! too much there can only refuse what would be refused anyway, while swallowing
//! text could hide nesting. The count is therefore never below the nesting the
//! parser builds. A replica ferry writes nests four levels at most (a comment's
//! origin inside a comment inside the list of comments); a custom field's value
//! can nest further, so the limit, [`MAX_DEPTH`], leaves room for that.

/// The deepest nesting accepted from a peer: a replica is a few levels deep, and
/// libyaml parses this depth in microseconds.
pub const MAX_DEPTH: usize = 64;

/// The YAML nests deeper than the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "line {line}: YAML nested more than {limit} levels deep; ferry refuses deeper nesting \
     unread (what ferry writes is a few levels deep)"
)]
pub struct TooDeep {
    /// The line (1-based) where the nesting passed the limit.
    pub line: u64,
    /// The limit.
    pub limit: usize,
}

/// Refuses `bytes` when the YAML in it nests more than `limit` levels deep (block
/// mappings and sequences and flow collections), in time linear in its length.
/// Only the prefix libyaml would read is looked at: it stops at the first byte
/// that is not UTF-8 or a character YAML forbids.
pub fn check(bytes: &[u8], limit: usize) -> Result<(), TooDeep> {
    let text = readable_prefix(bytes);
    Scanner {
        text,
        pos: 0,
        line: 0,
        column: 0,
        flow: 0,
        indent: -1,
        levels: Vec::new(),
        indentless: false,
        indentless_count: 0,
        key_allowed: true,
        key: None,
        limit,
    }
    .run()
}

/// The bytes libyaml decodes before it stops: valid UTF-8 of characters YAML allows.
fn readable_prefix(bytes: &[u8]) -> &[u8] {
    let valid = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default(),
    };
    let end = valid
        .char_indices()
        .find(|&(_, c)| !is_printable(c))
        .map_or(valid.len(), |(at, _)| at);
    &bytes[..end]
}

/// The characters libyaml's reader accepts (YAML 1.1's printable set).
fn is_printable(c: char) -> bool {
    matches!(u32::from(c),
        0x09 | 0x0A | 0x0D | 0x20..=0x7E | 0x85 | 0xA0..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FF_FFFF)
}

/// Where a possible simple key (`key:` without `?`) started.
#[derive(Clone, Copy)]
struct Mark {
    pos: usize,
    line: u64,
    column: i64,
}

/// libyaml's scanner, reduced to what decides nesting. Names follow libyaml's
/// (`indent`, `simple_key_allowed`, `roll_indent`, ...) so the two can be read
/// side by side.
struct Scanner<'a> {
    text: &'a [u8],
    pos: usize,
    line: u64,
    /// In characters, as libyaml counts.
    column: i64,
    /// Open flow collections.
    flow: usize,
    /// The column of the innermost block collection, -1 outside any.
    indent: i64,
    /// The enclosing block collections' indents, and whether each holds a
    /// sequence written at its own column (a sequence as a key's value).
    levels: Vec<(i64, bool)>,
    /// Whether the innermost block collection holds such a sequence.
    indentless: bool,
    /// How many block collections, the innermost included, hold one.
    indentless_count: usize,
    key_allowed: bool,
    /// The possible simple key of the block context.
    key: Option<Mark>,
    limit: usize,
}

impl Scanner<'_> {
    fn at(&self, k: usize) -> Option<u8> {
        self.text.get(self.pos + k).copied()
    }

    fn is(&self, k: usize, byte: u8) -> bool {
        self.at(k) == Some(byte)
    }

    fn is_end(&self, k: usize) -> bool {
        self.pos + k >= self.text.len()
    }

    fn is_break(&self, k: usize) -> bool {
        match self.at(k) {
            Some(b'\r' | b'\n') => true,
            Some(0xC2) => self.is(k + 1, 0x85),
            Some(0xE2) => self.is(k + 1, 0x80) && matches!(self.at(k + 2), Some(0xA8 | 0xA9)),
            _ => false,
        }
    }

    fn is_blank(&self, k: usize) -> bool {
        matches!(self.at(k), Some(b' ' | b'\t'))
    }

    fn is_breakz(&self, k: usize) -> bool {
        self.is_end(k) || self.is_break(k)
    }

    fn is_blankz(&self, k: usize) -> bool {
        self.is_blank(k) || self.is_breakz(k)
    }

    /// One character forward.
    fn skip(&mut self) {
        let width = match self.at(0) {
            Some(b) if b < 0x80 => 1,
            Some(b) if b >= 0xF0 => 4,
            Some(b) if b >= 0xE0 => 3,
            Some(_) => 2,
            None => return,
        };
        self.pos = (self.pos + width).min(self.text.len());
        self.column += 1;
    }

    /// Past one line break (`\r\n` is one).
    fn skip_line(&mut self) {
        if self.is(0, b'\r') && self.is(1, b'\n') {
            self.pos += 2;
        } else {
            self.skip();
        }
        self.line += 1;
        self.column = 0;
    }

    /// The nesting the parser may be at: the open collections, plus the block
    /// mapping a possible simple key would open around what is being read (a
    /// flow collection can be a key: `[[a]]: b`; the scanner opens that mapping
    /// only when it meets the colon).
    fn depth(&self) -> usize {
        let pending_mapping = self.key.is_some_and(|key| key.column > self.indent);
        self.levels.len() + self.indentless_count + self.flow + usize::from(pending_mapping)
    }

    fn check_depth(&self) -> Result<(), TooDeep> {
        if self.depth() > self.limit {
            return Err(TooDeep {
                line: self.line + 1,
                limit: self.limit,
            });
        }
        Ok(())
    }

    /// A block collection starts at `column` if it is deeper than the current one.
    fn roll_indent(&mut self, column: i64) -> Result<(), TooDeep> {
        if self.flow == 0 && self.indent < column {
            self.levels.push((self.indent, self.indentless));
            self.indentless = false;
            self.indent = column;
            self.check_depth()?;
        }
        Ok(())
    }

    /// Block collections deeper than `column` end.
    fn unroll_indent(&mut self, column: i64) {
        if self.flow > 0 {
            return;
        }
        while self.indent > column {
            if self.indentless {
                self.indentless_count -= 1;
            }
            match self.levels.pop() {
                Some((indent, indentless)) => {
                    self.indent = indent;
                    self.indentless = indentless;
                }
                None => {
                    self.indent = -1;
                    self.indentless = false;
                }
            }
        }
    }

    fn save_key(&mut self) {
        if self.flow == 0 && self.key_allowed {
            self.key = Some(Mark {
                pos: self.pos,
                line: self.line,
                column: self.column,
            });
        }
    }

    fn remove_key(&mut self) {
        if self.flow == 0 {
            self.key = None;
        }
    }

    fn at_document_indicator(&self) -> bool {
        self.column == 0
            && ((self.is(0, b'-') && self.is(1, b'-') && self.is(2, b'-'))
                || (self.is(0, b'.') && self.is(1, b'.') && self.is(2, b'.')))
            && self.is_blankz(3)
    }

    fn run(mut self) -> Result<(), TooDeep> {
        loop {
            self.scan_to_next_token();
            self.unroll_indent(self.column);
            let Some(c) = self.at(0) else {
                return Ok(());
            };
            if self.column == 0 && c == b'%' {
                // A directive: one line.
                self.unroll_indent(-1);
                self.remove_key();
                self.key_allowed = false;
                while !self.is_breakz(0) {
                    self.skip();
                }
                continue;
            }
            if self.at_document_indicator() {
                self.unroll_indent(-1);
                self.remove_key();
                self.key_allowed = false;
                self.skip();
                self.skip();
                self.skip();
                continue;
            }
            match c {
                b'[' | b'{' => {
                    self.save_key();
                    self.flow += 1;
                    self.check_depth()?;
                    self.key_allowed = true;
                    self.skip();
                }
                b']' | b'}' => {
                    self.remove_key();
                    self.flow = self.flow.saturating_sub(1);
                    self.key_allowed = false;
                    self.skip();
                }
                b',' => {
                    self.remove_key();
                    self.key_allowed = true;
                    self.skip();
                }
                b'-' if self.is_blankz(1) => {
                    if self.flow == 0 {
                        if self.indent == self.column && !self.indentless {
                            // A sequence at its parent key's column: the parser
                            // nests it though the scanner opens no level.
                            self.indentless = true;
                            self.indentless_count += 1;
                            self.check_depth()?;
                        }
                        self.roll_indent(self.column)?;
                    }
                    self.remove_key();
                    self.key_allowed = true;
                    self.skip();
                }
                b'?' if self.flow > 0 || self.is_blankz(1) => {
                    self.roll_indent(self.column)?;
                    self.remove_key();
                    self.key_allowed = self.flow == 0;
                    self.skip();
                }
                b':' if self.flow > 0 || self.is_blankz(1) => {
                    self.value()?;
                    self.skip();
                }
                b'*' | b'&' => {
                    self.save_key();
                    self.key_allowed = false;
                    self.skip();
                    while self
                        .at(0)
                        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                    {
                        self.skip();
                    }
                }
                b'!' => {
                    self.save_key();
                    self.key_allowed = false;
                    self.tag();
                }
                b'|' | b'>' if self.flow == 0 => {
                    self.remove_key();
                    self.key_allowed = true;
                    self.block_scalar();
                }
                b'\'' | b'"' => {
                    self.save_key();
                    self.key_allowed = false;
                    self.quoted(c);
                }
                _ if self.starts_plain(c) => {
                    self.save_key();
                    self.key_allowed = false;
                    self.plain();
                }
                // No token starts here: libyaml stops; reading on is harmless.
                _ => self.skip(),
            }
        }
    }

    /// Whitespace, comments and line breaks up to the next token.
    fn scan_to_next_token(&mut self) {
        loop {
            if self.column == 0 && self.text[self.pos..].starts_with("\u{FEFF}".as_bytes()) {
                self.skip();
            }
            while self.is(0, b' ') || ((self.flow > 0 || !self.key_allowed) && self.is(0, b'\t')) {
                self.skip();
            }
            if self.is(0, b'#') {
                while !self.is_breakz(0) {
                    self.skip();
                }
            }
            if !self.is_break(0) {
                return;
            }
            self.skip_line();
            if self.flow == 0 {
                self.key_allowed = true;
            }
        }
    }

    /// `:` as a mapping value: a block mapping starts at its key's column (or at
    /// the colon, for a key-less value).
    fn value(&mut self) -> Result<(), TooDeep> {
        if self.flow > 0 {
            self.key_allowed = false;
            return Ok(());
        }
        let fresh = self
            .key
            .take()
            .filter(|key| key.line == self.line && key.pos + 1024 >= self.pos);
        match fresh {
            Some(key) => {
                self.roll_indent(key.column)?;
                self.key_allowed = false;
            }
            None => {
                self.roll_indent(self.column)?;
                self.key_allowed = true;
            }
        }
        Ok(())
    }

    fn starts_plain(&self, c: u8) -> bool {
        !(self.is_blankz(0) || b"-?:,[]{}#&*!|>'\"%@`".contains(&c))
            || (c == b'-' && !self.is_blank(1))
            || (self.flow == 0 && (c == b'?' || c == b':') && !self.is_blankz(1))
    }

    /// `!tag`, `!!tag`, `!<verbatim>`: up to the blank (or, in a flow collection,
    /// the comma) libyaml requires after it.
    fn tag(&mut self) {
        self.skip();
        if self.is(0, b'<') {
            while !self.is_blankz(0) && !self.is(0, b'>') {
                self.skip();
            }
            self.skip();
            return;
        }
        while !(self.is_blankz(0) || (self.flow > 0 && self.is(0, b','))) {
            self.skip();
        }
    }

    /// A single- or double-quoted scalar, which may span lines.
    fn quoted(&mut self, quote: u8) {
        self.skip();
        loop {
            if self.at_document_indicator() {
                // libyaml stops here; read on as structure.
                return;
            }
            match self.at(0) {
                None => return,
                Some(b'\'') if quote == b'\'' => {
                    self.skip();
                    if !self.is(0, b'\'') {
                        return;
                    }
                    self.skip();
                }
                Some(b'"') if quote == b'"' => {
                    self.skip();
                    return;
                }
                Some(b'\\') if quote == b'"' => {
                    self.skip();
                    if self.is_break(0) {
                        self.skip_line();
                    } else {
                        self.skip();
                    }
                }
                Some(_) if self.is_break(0) => self.skip_line(),
                Some(_) => self.skip(),
            }
        }
    }

    /// A plain scalar: it ends at `: `, ` #`, a line less indented than the
    /// block it is in, and in a flow collection at `,[]{}`.
    fn plain(&mut self) {
        let indent = self.indent + 1;
        let mut leading_blanks = false;
        loop {
            if self.at_document_indicator() || self.is(0, b'#') {
                break;
            }
            while !self.is_blankz(0) {
                let c = self.at(0);
                if self.flow > 0
                    && c == Some(b':')
                    && matches!(self.at(1), Some(b',' | b'?' | b'[' | b']' | b'{' | b'}'))
                {
                    // libyaml stops here; read on as structure.
                    return;
                }
                if (c == Some(b':') && self.is_blankz(1))
                    || (self.flow > 0 && matches!(c, Some(b',' | b'[' | b']' | b'{' | b'}')))
                {
                    break;
                }
                leading_blanks = false;
                self.skip();
            }
            if !(self.is_blank(0) || self.is_break(0)) {
                break;
            }
            while self.is_blank(0) || self.is_break(0) {
                if self.is_blank(0) {
                    if leading_blanks && self.column < indent && self.is(0, b'\t') {
                        // libyaml stops here; read on as structure.
                        return;
                    }
                    self.skip();
                } else {
                    self.skip_line();
                    leading_blanks = true;
                }
            }
            if self.flow == 0 && self.column < indent {
                break;
            }
        }
        if leading_blanks {
            self.key_allowed = true;
        }
    }

    /// A literal or folded block scalar: its header line, then every line indented
    /// at least as far as its first non-empty one (or as its header says).
    fn block_scalar(&mut self) {
        self.skip();
        let mut increment = 0;
        let digit = |b: Option<u8>| b.filter(u8::is_ascii_digit).map(|d| i64::from(d - b'0'));
        if matches!(self.at(0), Some(b'+' | b'-')) {
            self.skip();
            if let Some(d) = digit(self.at(0)) {
                if d == 0 {
                    return;
                }
                increment = d;
                self.skip();
            }
        } else if let Some(d) = digit(self.at(0)) {
            if d == 0 {
                return;
            }
            increment = d;
            self.skip();
            if matches!(self.at(0), Some(b'+' | b'-')) {
                self.skip();
            }
        }
        while self.is_blank(0) {
            self.skip();
        }
        if self.is(0, b'#') {
            while !self.is_breakz(0) {
                self.skip();
            }
        }
        if !self.is_breakz(0) {
            // libyaml stops here; read on as structure.
            return;
        }
        if self.is_break(0) {
            self.skip_line();
        }
        let mut indent = match increment {
            0 => 0,
            _ if self.indent >= 0 => self.indent + increment,
            _ => increment,
        };
        if !self.block_scalar_breaks(&mut indent) {
            return;
        }
        while self.column == indent && !self.is_end(0) {
            while !self.is_breakz(0) {
                self.skip();
            }
            if self.is_end(0) {
                return;
            }
            self.skip_line();
            if !self.block_scalar_breaks(&mut indent) {
                return;
            }
        }
    }

    /// Empty lines and indentation of a block scalar; settles an undetermined
    /// `indent` (0) from the first non-empty line. False where libyaml stops.
    fn block_scalar_breaks(&mut self, indent: &mut i64) -> bool {
        let mut max_indent = 0;
        loop {
            while (*indent == 0 || self.column < *indent) && self.is(0, b' ') {
                self.skip();
            }
            max_indent = max_indent.max(self.column);
            if (*indent == 0 || self.column < *indent) && self.is(0, b'\t') {
                return false;
            }
            if !self.is_break(0) {
                break;
            }
            self.skip_line();
        }
        if *indent == 0 {
            *indent = max_indent.max(self.indent + 1).max(1);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_ok(text: &str, limit: usize) -> bool {
        check(text.as_bytes(), limit).is_ok()
    }

    #[test]
    fn flow_brackets_count_and_the_line_is_named() {
        let ok = format!("a:\n  b: {}{}\n", "[".repeat(62), "]".repeat(62));
        assert!(depth_ok(&ok, 64));
        let deep = format!("a:\n  b: {}{}\n", "[".repeat(63), "]".repeat(63));
        assert_eq!(
            check(deep.as_bytes(), 64),
            Err(TooDeep { line: 2, limit: 64 })
        );
        // A flow collection as a key nests inside the mapping it opens.
        let key = format!("{}x{}: v\n", "[".repeat(64), "]".repeat(64));
        assert!(!depth_ok(&key, 64), "found by the fuzz harness");
        let mixed = format!("x: {}\n", "{a: [".repeat(40));
        assert!(!depth_ok(&mixed, 64));
    }

    #[test]
    fn brackets_in_text_do_not_count() {
        let many = "[".repeat(200);
        for text in [
            format!("a: '{many}'\n"),
            format!("a: 'it''s {many}'\n"),
            format!("a: \"\\\" {many}\"\n"),
            format!("a: \"line\n  {many} still text\"\n"),
            format!("a: b # {many}\n"),
            format!("# {many}\na: b\n"),
            format!("a: x{many}\n"),
            format!("a: x {many} y\n"),
            format!("a: |\n  {many}\n  more {many}\nb: c\n"),
            format!("a: >-\n\n   {many}\n  \n   x\n"),
            format!("- |2\n   {many}\n"),
            format!("a:\n- b: |\n    {many}\n"),
            format!("a: !tag x{many}\n"),
            format!("a: &anchor x{many}\n"),
        ] {
            assert!(depth_ok(&text, 64), "{text}");
        }
    }

    #[test]
    fn text_ends_where_libyaml_ends_it() {
        let deep = format!("{}{}", "[".repeat(70), "]".repeat(70));
        for text in [
            format!("a: 'x''' {deep}\n"),
            format!("a: \"\\\\\" {deep}\n"),
            format!("a: |\n  text\n{deep}\n"),
            format!("a:\n  b: |\n    text\n  c: {deep}\n"),
            format!("a: b #\n{deep}\n"),
            format!("a: x\n  y\nb: {deep}\n"),
            format!("[a, b]: {deep}\n"),
            format!("a: [x, 'y', \"z\", {deep}]\n"),
            format!("'a\n---\n{deep}\n"),
        ] {
            assert!(!depth_ok(&text, 64), "{text}");
        }
    }

    #[test]
    fn block_nesting_counts_by_indentation_and_indicators() {
        let mut nested = String::new();
        for level in 0..70 {
            nested.push_str(&format!("{}k{level}:\n", " ".repeat(level)));
        }
        let err = check(nested.as_bytes(), 64).unwrap_err();
        assert_eq!(err.line, 65);
        assert!(!depth_ok(&format!("{}x\n", "- ".repeat(65)), 64));
        assert!(depth_ok(&format!("{}x\n", "- ".repeat(63)), 64));
        assert!(!depth_ok(&format!("{}x\n", "? ".repeat(65)), 64));
        // A sequence at its key's column nests too: map, seq, map, seq...
        let mut alternating = String::new();
        for level in 0..40 {
            alternating.push_str(&format!("{}- k:\n", " ".repeat(2 * level)));
        }
        assert!(!depth_ok(&alternating, 64));
    }

    #[test]
    fn what_ferry_writes_passes_and_counts_as_serde_nests() {
        fn nest(depth: usize) -> serde_json::Value {
            (0..depth).fold(serde_json::json!("leaf"), |inner, level| {
                if level % 2 == 0 {
                    serde_json::json!({ "k": inner, "other": [1, 2] })
                } else {
                    serde_json::json!([inner, "x"])
                }
            })
        }
        for depth in [1, 10, 40, 62] {
            let text = serde_yaml::to_string(&nest(depth)).unwrap();
            assert!(depth_ok(&text, 64), "{depth}:\n{text}");
        }
        let text = serde_yaml::to_string(&nest(66)).unwrap();
        assert!(!depth_ok(&text, 64));
    }

    #[test]
    fn only_what_libyaml_reads_is_checked() {
        let deep = "[".repeat(100);
        let mut bytes = b"a: b\n".to_vec();
        bytes.push(0xFF);
        bytes.extend_from_slice(deep.as_bytes());
        assert!(check(&bytes, 64).is_ok());
        assert!(depth_ok(&format!("a: b\u{1}{deep}"), 64));
        assert!(!depth_ok(&format!("\u{FEFF}a: {deep}"), 64));
        assert!(!depth_ok(&format!("a: b\r\nc: {deep}"), 64));
    }

    #[test]
    fn a_long_input_is_checked_in_linear_time() {
        let text = "[".repeat(4_000_000);
        let started = std::time::Instant::now();
        assert!(!depth_ok(&text, 64));
        let lines = "- a: 'b'\n  c: [d, {e: f}]\n  g: |\n    text\n".repeat(100_000);
        assert!(depth_ok(&lines, 64));
        // Generous: this is about quadratic blow-ups, not speed.
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }
}
