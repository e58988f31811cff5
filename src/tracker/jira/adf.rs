//! Atlassian Document Format (Jira Cloud, REST v3) ⇄ the replica's plain text.
//!
//! Replicas hold text, not rich documents: a peer may be a Data Center Jira, a
//! Redmine or the embedded tracker. So ADF becomes a small Markdown-like text that a
//! person reads without tooling (`# heading`, `- item`, `1. item`, fenced code,
//! `> quote`, `[text](url)`, `**strong**`, `` `code` ``), and text becomes ADF by
//! recognising exactly that subset again.
//!
//! The two directions are built so that text survives a trip through Jira
//! unchanged: [`to_text`]`(`[`from_text`]`(t)) == t` for text made of paragraphs
//! (lines separated by single newlines, blocks by one blank line), which is what
//! sync writes and reads back; any other text is stable after one trip, so sync
//! never sees a change that is only a formatting echo. Things plain text cannot
//! hold degrade to something readable: mentions to `@Name`, tables to `| a | b |`
//! rows, panels to their content, media to `[media: name]`, cards to their URL.

use serde_json::{Value, json};

/// Converts an ADF document (or any ADF node) to text.
pub fn to_text(doc: &Value) -> String {
    blocks_text(children(doc), "")
}

/// Converts text to an ADF document. Text nodes are never empty, as Jira requires.
pub fn from_text(text: &str) -> Value {
    let lines: Vec<&str> = text.lines().collect();
    json!({"version": 1, "type": "doc", "content": parse_blocks(&lines)})
}

fn children(node: &Value) -> &[Value] {
    node.get("content")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn node_type(node: &Value) -> &str {
    node.get("type").and_then(Value::as_str).unwrap_or("")
}

fn attr<'a>(node: &'a Value, name: &str) -> Option<&'a Value> {
    node.get("attrs").and_then(|a| a.get(name))
}

fn attr_str<'a>(node: &'a Value, name: &str) -> Option<&'a str> {
    attr(node, name).and_then(Value::as_str)
}

/// Block nodes separated by blank lines, every line prefixed with `indent`.
fn blocks_text(blocks: &[Value], indent: &str) -> String {
    blocks
        .iter()
        .map(|b| block_text(b, indent))
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n")
}

fn prefix_lines(text: &str, first: &str, rest: &str) -> String {
    let mut out = String::new();
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let p = if i == 0 { first } else { rest };
        if line.is_empty() {
            out.push_str(p.trim_end());
        } else {
            out.push_str(p);
            out.push_str(line);
        }
    }
    out
}

fn block_text(node: &Value, indent: &str) -> String {
    let text = match node_type(node) {
        // A hard break at either end of a paragraph shows as (almost) nothing in
        // Jira; as text it would make the blank line between blocks ambiguous.
        "paragraph" => inline_text(children(node)).trim_matches('\n').to_string(),
        "heading" => {
            let level = attr(node, "level")
                .and_then(Value::as_u64)
                .unwrap_or(1)
                .clamp(1, 6);
            format!(
                "{} {}",
                "#".repeat(level as usize),
                inline_text(children(node))
            )
        }
        "bulletList" | "orderedList" => return list_text(node, indent),
        "codeBlock" => {
            let lang = attr_str(node, "language").unwrap_or("");
            let code: String = children(node)
                .iter()
                .filter_map(|t| t.get("text").and_then(Value::as_str))
                .collect();
            format!("```{lang}\n{code}\n```")
        }
        "blockquote" => prefix_lines(&blocks_text(children(node), ""), "> ", "> "),
        "rule" => "---".into(),
        "table" => children(node)
            .iter()
            .map(|row| {
                let cells: Vec<String> = children(row)
                    .iter()
                    .map(|cell| blocks_text(children(cell), "").replace('\n', " "))
                    .collect();
                format!("| {} |", cells.join(" | "))
            })
            .collect::<Vec<_>>()
            .join("\n"),
        "mediaSingle" | "mediaGroup" => children(node)
            .iter()
            .map(media_text)
            .collect::<Vec<_>>()
            .join("\n"),
        "media" => media_text(node),
        "expand" | "nestedExpand" => {
            let body = blocks_text(children(node), "");
            match attr_str(node, "title").filter(|t| !t.is_empty()) {
                Some(title) => format!("{title}\n\n{body}"),
                None => body,
            }
        }
        // panel, layoutSection, layoutColumn, bodiedExtension and whatever Jira adds
        // next: their content is what a reader needs.
        _ if node.get("content").is_some() => blocks_text(children(node), ""),
        _ => inline_text(std::slice::from_ref(node)),
    };
    prefix_lines(&text, indent, indent)
}

fn media_text(node: &Value) -> String {
    let name = attr_str(node, "alt")
        .or_else(|| attr_str(node, "id"))
        .or_else(|| attr_str(node, "url"))
        .unwrap_or("file");
    format!("[media: {name}]")
}

fn list_text(node: &Value, indent: &str) -> String {
    let ordered = node_type(node) == "orderedList";
    let start = attr(node, "order").and_then(Value::as_u64).unwrap_or(1);
    let mut lines = Vec::new();
    for (i, item) in children(node).iter().enumerate() {
        let marker = if ordered {
            format!("{}. ", start + i as u64)
        } else {
            "- ".into()
        };
        let inner = format!("{indent}{}", " ".repeat(marker.len()));
        let mut first = true;
        for child in children(item) {
            match node_type(child) {
                "bulletList" | "orderedList" => lines.push(list_text(child, &inner)),
                _ => {
                    let text = blocks_text(std::slice::from_ref(child), "");
                    if text.is_empty() && !first {
                        continue;
                    }
                    if first && text.is_empty() {
                        lines.push(format!("{indent}{}", marker.trim_end()));
                    } else if first {
                        lines.push(prefix_lines(&text, &format!("{indent}{marker}"), &inner));
                    } else {
                        lines.push(prefix_lines(&text, &inner, &inner));
                    }
                }
            }
            first = false;
        }
        if first {
            lines.push(format!("{indent}{}", marker.trim_end()));
        }
    }
    lines.join("\n")
}

fn inline_text(nodes: &[Value]) -> String {
    let mut out = String::new();
    for node in nodes {
        match node_type(node) {
            "text" => {
                let text = node.get("text").and_then(Value::as_str).unwrap_or("");
                out.push_str(&marked(text, node.get("marks")));
            }
            "hardBreak" => out.push('\n'),
            "mention" => {
                let name = attr_str(node, "text")
                    .map(str::to_string)
                    .or_else(|| attr_str(node, "id").map(|id| format!("@{id}")))
                    .unwrap_or_default();
                if name.starts_with('@') {
                    out.push_str(&name);
                } else {
                    out.push('@');
                    out.push_str(&name);
                }
            }
            "emoji" => out.push_str(
                attr_str(node, "text")
                    .or_else(|| attr_str(node, "shortName"))
                    .unwrap_or(""),
            ),
            "inlineCard" | "blockCard" | "embedCard" => {
                if let Some(url) = attr_str(node, "url") {
                    out.push('<');
                    out.push_str(url);
                    out.push('>');
                }
            }
            "date" => {
                let millis = attr(node, "timestamp").and_then(|t| match t {
                    Value::String(s) => s.parse::<i64>().ok(),
                    other => other.as_i64(),
                });
                if let Some(t) = millis.and_then(chrono::DateTime::from_timestamp_millis) {
                    out.push_str(&t.format("%Y-%m-%d").to_string());
                }
            }
            "status" => out.push_str(attr_str(node, "text").unwrap_or("")),
            _ => out.push_str(&inline_text(children(node))),
        }
    }
    out
}

fn marked(text: &str, marks: Option<&Value>) -> String {
    let mut out = text.to_string();
    let Some(marks) = marks.and_then(Value::as_array) else {
        return out;
    };
    let has = |t: &str| marks.iter().any(|m| node_type(m) == t);
    if has("code") {
        out = format!("`{out}`");
    }
    if has("em") {
        out = format!("_{out}_");
    }
    if has("strike") {
        out = format!("~~{out}~~");
    }
    if has("strong") {
        out = format!("**{out}**");
    }
    if let Some(href) = marks
        .iter()
        .find(|m| node_type(m) == "link")
        .and_then(|m| attr_str(m, "href"))
    {
        out = format!("[{out}]({href})");
    }
    out
}

// ---- text → ADF ----

fn is_heading(line: &str) -> Option<(usize, &str)> {
    let level = line.bytes().take_while(|b| *b == b'#').count();
    let rest = line[level..].strip_prefix(' ')?;
    ((1..=6).contains(&level) && !rest.is_empty()).then_some((level, rest))
}

/// `(indent, ordered, number, text)` of a list item line.
fn list_item(line: &str) -> Option<(usize, bool, u64, &str)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    let rest = &line[indent..];
    if let Some(text) = rest.strip_prefix("- ") {
        return Some((indent, false, 0, text));
    }
    if rest == "-" {
        return Some((indent, false, 0, ""));
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 9 {
        return None;
    }
    let number = rest[..digits].parse().ok()?;
    let after = &rest[digits..];
    if let Some(text) = after.strip_prefix(". ") {
        Some((indent, true, number, text))
    } else if after == "." {
        Some((indent, true, number, ""))
    } else {
        None
    }
}

fn parse_blocks(lines: &[&str]) -> Vec<Value> {
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.is_empty() {
            i += 1;
            continue;
        }
        if let Some(lang) = line.strip_prefix("```")
            && let Some(len) = lines[i + 1..].iter().position(|l| *l == "```")
        {
            let code = lines[i + 1..i + 1 + len].join("\n");
            let mut node = json!({"type": "codeBlock"});
            if !lang.is_empty() {
                node["attrs"] = json!({"language": lang});
            }
            if !code.is_empty() {
                node["content"] = json!([{"type": "text", "text": code}]);
            }
            blocks.push(node);
            i += len + 2;
            continue;
        }
        // Every other block runs to the next blank line.
        let end = lines[i..]
            .iter()
            .position(|l| l.is_empty())
            .map_or(lines.len(), |n| i + n);
        let block = &lines[i..end];
        i = end;
        if let [single] = block {
            if let Some((level, text)) = is_heading(single) {
                blocks.push(json!({"type": "heading", "attrs": {"level": level},
                                   "content": parse_inline(text)}));
                continue;
            }
            if *single == "---" {
                blocks.push(json!({"type": "rule"}));
                continue;
            }
        }
        if block.iter().all(|l| l.starts_with('>')) {
            let inner: Vec<&str> = block
                .iter()
                .map(|l| l.strip_prefix("> ").unwrap_or(&l[1..]))
                .collect();
            blocks.push(json!({"type": "blockquote", "content": parse_blocks(&inner)}));
            continue;
        }
        if let Some((0, ..)) = list_item(block[0]) {
            blocks.push(parse_list(block, &mut 0, 0));
            continue;
        }
        blocks.push(paragraph(&block.join("\n")));
    }
    blocks
}

fn paragraph(text: &str) -> Value {
    let content = parse_inline(text);
    if content.is_empty() {
        json!({"type": "paragraph"})
    } else {
        json!({"type": "paragraph", "content": content})
    }
}

/// Parses list items at `indent` starting at `lines[*at]` into one list node.
fn parse_list(lines: &[&str], at: &mut usize, indent: usize) -> Value {
    let (_, ordered, start, _) = list_item(lines[*at]).unwrap_or((indent, false, 1, ""));
    let marker_len = |l: &str| -> usize {
        list_item(l).map_or(2, |(i, o, n, _)| {
            if o {
                i + n.to_string().len() + 2
            } else {
                i + 2
            }
        })
    };
    let mut items = Vec::new();
    while *at < lines.len() {
        let Some((item_indent, item_ordered, _, text)) = list_item(lines[*at]) else {
            break;
        };
        if item_indent != indent || item_ordered != ordered {
            break;
        }
        let inner = marker_len(lines[*at]);
        let mut text_lines = vec![text.to_string()];
        *at += 1;
        let mut content = Vec::new();
        while *at < lines.len() {
            let line = lines[*at];
            match list_item(line) {
                Some((i, ..)) if i >= inner => content.push(parse_list(lines, at, i)),
                Some(_) => break,
                None => {
                    let spaces = line.len() - line.trim_start_matches(' ').len();
                    if spaces >= inner && content.is_empty() {
                        text_lines.push(line[inner..].to_string());
                        *at += 1;
                    } else {
                        // Not part of the list: keep it as text of this item so
                        // nothing is lost.
                        text_lines.push(line.to_string());
                        *at += 1;
                    }
                }
            }
        }
        let first = paragraph(&text_lines.join("\n"));
        let mut item_content = vec![first];
        item_content.extend(content);
        items.push(json!({"type": "listItem", "content": item_content}));
    }
    if ordered {
        json!({"type": "orderedList", "attrs": {"order": start}, "content": items})
    } else {
        json!({"type": "bulletList", "content": items})
    }
}

fn text_node(text: &str, marks: &[Value]) -> Value {
    if marks.is_empty() {
        json!({"type": "text", "text": text})
    } else {
        json!({"type": "text", "text": text, "marks": marks})
    }
}

/// Inline text: `**strong**`, `` `code` ``, `[text](url)` and hard breaks.
fn parse_inline(text: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for (n, line) in text.split('\n').enumerate() {
        if n > 0 {
            out.push(json!({"type": "hardBreak"}));
        }
        parse_marks(line, &mut out);
    }
    out
}

fn parse_marks(mut rest: &str, out: &mut Vec<Value>) {
    let mut plain = String::new();
    let flush = |plain: &mut String, out: &mut Vec<Value>| {
        if !plain.is_empty() {
            out.push(text_node(plain, &[]));
            plain.clear();
        }
    };
    while let Some(c) = rest.chars().next() {
        let found = match c {
            '*' if rest.starts_with("**") => rest[2..].find("**").filter(|n| *n > 0).map(|n| {
                (
                    text_node(&rest[2..2 + n], &[json!({"type": "strong"})]),
                    n + 4,
                )
            }),
            '`' => rest[1..].find('`').filter(|n| *n > 0).map(|n| {
                (
                    text_node(&rest[1..1 + n], &[json!({"type": "code"})]),
                    n + 2,
                )
            }),
            '[' => link(rest),
            _ => None,
        };
        match found {
            Some((node, len)) => {
                flush(&mut plain, out);
                out.push(node);
                rest = &rest[len..];
            }
            None => {
                plain.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    flush(&mut plain, out);
}

/// `[text](url)` at the start of `s`: the node and the length it takes.
fn link(s: &str) -> Option<(Value, usize)> {
    let close = s.find("](")?;
    let text = &s[1..close];
    if text.is_empty() || text.contains('[') || text.contains(']') {
        return None;
    }
    let href_start = close + 2;
    let href_len = s[href_start..].find(')')?;
    let href = &s[href_start..href_start + href_len];
    if href.is_empty() || href.contains(char::is_whitespace) {
        return None;
    }
    let node = text_node(text, &[json!({"type": "link", "attrs": {"href": href}})]);
    Some((node, href_start + href_len + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fixture(path: &str) -> Value {
        let file = format!("{}/tests/fixtures/jira/{path}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(&file).expect("fixture")).expect("json")
    }

    /// Every ADF document in the recorded responses.
    fn recorded_docs() -> Vec<(String, Value)> {
        fn walk(name: &str, v: &Value, out: &mut Vec<(String, Value)>) {
            match v {
                Value::Object(map) => {
                    if map.get("type").and_then(Value::as_str) == Some("doc") {
                        out.push((name.to_string(), v.clone()));
                    } else {
                        map.values().for_each(|x| walk(name, x, out));
                    }
                }
                Value::Array(items) => items.iter().for_each(|x| walk(name, x, out)),
                _ => {}
            }
        }
        let mut docs = Vec::new();
        for file in [
            "adf/md.json",
            "v3/issue-get.json",
            "v3/search.json",
            "v3/comments.json",
            "v3/comment-get.json",
        ] {
            walk(file, &fixture(file), &mut docs);
        }
        docs
    }

    fn has_empty_text(v: &Value) -> bool {
        match v {
            Value::Object(map) => {
                (map.get("type").and_then(Value::as_str) == Some("text")
                    && map
                        .get("text")
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty))
                    || map.values().any(has_empty_text)
            }
            Value::Array(items) => items.iter().any(has_empty_text),
            _ => false,
        }
    }

    #[test]
    fn recorded_documents_are_stable_after_one_trip() {
        let docs = recorded_docs();
        assert!(docs.len() >= 20, "found {} documents", docs.len());
        for (file, doc) in docs {
            let text = to_text(&doc);
            let back = from_text(&text);
            assert!(!has_empty_text(&back), "{file}: empty text node");
            assert_eq!(
                to_text(&back),
                text,
                "{file}: text changed on a second trip"
            );
        }
    }

    #[test]
    fn the_large_sample_keeps_its_structure() {
        let text = to_text(&fixture("adf/md.json"));
        insta::assert_snapshot!(text);
    }

    #[test]
    fn mentions_tables_and_panels_degrade_to_readable_text() {
        let docs = recorded_docs();
        let all: String = docs.iter().map(|(_, d)| to_text(d) + "\n").collect();
        assert!(all.contains("| "), "a table row");
        let issue = to_text(&fixture("v3/issue-get.json")["fields"]["description"]);
        assert!(issue.starts_with("**Lorem Ipsum**\u{a0}es simplemente"));
        assert!(
            issue.ends_with("Lorem Ipsum.\n\nsadsadsad"),
            "the panel's content"
        );
        let mention = json!({"type": "doc", "version": 1, "content": [{"type": "paragraph",
            "content": [{"type": "mention", "attrs": {"id": "5b10", "text": "@Mia Krystof"}},
                        {"type": "text", "text": " please check"}]}]});
        assert_eq!(to_text(&mention), "@Mia Krystof please check");
    }

    #[test]
    fn text_with_markup_becomes_adf_and_back() {
        let text = "# Crash on start\n\n\
                    Steps, see [the log](https://example.com/log) and `ferry.yaml`:\n\n\
                    1. open it\n2. **click**\n   twice\n   - really\n\n\
                    - one\n- two\n\n\
                    > quoted\n> more\n\n\
                    ```rust\nfn main() {}\n\nlet x = 1;\n```\n\n\
                    ---\n\n\
                    Done.\nThanks";
        let doc = from_text(text);
        assert_eq!(doc["content"][0]["type"], "heading");
        assert_eq!(doc["content"][2]["type"], "orderedList");
        assert_eq!(
            doc["content"][2]["content"][1]["content"][1]["type"],
            "bulletList"
        );
        assert_eq!(doc["content"][5]["attrs"]["language"], "rust");
        assert_eq!(
            doc["content"][1]["content"][1]["marks"][0]["attrs"]["href"],
            "https://example.com/log"
        );
        assert_eq!(to_text(&doc), text);
    }

    #[test]
    fn plain_text_keeps_its_line_breaks() {
        let text = "Smoke after the update.\nTwice.";
        let doc = from_text(text);
        assert_eq!(
            doc,
            json!({"version": 1, "type": "doc", "content": [{"type": "paragraph", "content": [
                {"type": "text", "text": "Smoke after the update."},
                {"type": "hardBreak"},
                {"type": "text", "text": "Twice."}]}]})
        );
        assert_eq!(to_text(&doc), text);
    }

    proptest! {
        /// Paragraph text (what people type) comes back exactly.
        #[test]
        fn paragraphs_come_back_exactly(
            paragraphs in prop::collection::vec(
                prop::collection::vec("[a-zA-Z0-9,.:;!?()'\" äöü/=+-]{1,30}", 1..4)
                    .prop_map(|lines| lines.join("\n")),
                1..4)
        ) {
            let text = paragraphs.join("\n\n");
            prop_assume!(text.lines().all(|l| !l.trim().is_empty()
                && is_heading(l).is_none() && list_item(l).is_none()
                && !l.starts_with('>') && l != "---" && !l.starts_with("```")));
            prop_assert_eq!(to_text(&from_text(&text)), text);
        }

        /// Any text is stable after one trip and never makes an empty text node.
        #[test]
        fn any_text_is_stable_after_one_trip(text in "([-#>*`\\[\\]()1. a-z\n]|```){0,80}") {
            let once = from_text(&text);
            prop_assert!(!has_empty_text(&once));
            let t1 = to_text(&once);
            prop_assert_eq!(to_text(&from_text(&t1)), t1);
        }
    }
}
