//! The rule scripts' reference (`docs/rules.md`) is the documentation of the
//! `rules` module, so the two cannot drift apart: the test writes the page
//! from the module's `//!` lines and compares. `FERRY_UPDATE_DOCS=1` rewrites
//! the page instead.

use std::path::Path;

/// `docs/rules.md` as made from the `//!` lines of `src/rules.rs`: headings one
/// level down, intra-doc links as plain code.
fn rules_page(source: &str) -> String {
    let mut page = String::from(
        "# Rule scripts\n\n<!-- Made from the documentation of src/rules.rs by \
         tests/cli/docs.rs: edit it there. -->\n\n",
    );
    for line in source.lines() {
        let Some(doc) = line.strip_prefix("//!") else {
            if line.trim().is_empty() {
                continue;
            }
            break;
        };
        let doc = doc.strip_prefix(' ').unwrap_or(doc);
        let doc = if doc.starts_with('#') {
            format!("#{doc}")
        } else {
            doc.to_string()
        };
        // [`Name`] and [`path::Name`] are links for rustdoc only.
        let mut out = String::new();
        let mut rest = doc.as_str();
        while let Some(at) = rest.find("[`") {
            match rest[at..].find("`]") {
                Some(end) => {
                    out.push_str(&rest[..at]);
                    out.push_str(&rest[at + 1..at + end + 1]);
                    rest = &rest[at + end + 2..];
                }
                None => break,
            }
        }
        out.push_str(rest);
        page.push_str(out.trim_end());
        page.push('\n');
    }
    page
}

#[test]
fn the_rules_reference_is_the_rules_module_documentation() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let source = std::fs::read_to_string(root.join("src/rules.rs")).unwrap();
    let page = rules_page(&source);
    assert!(page.contains("## Incoming scripts"), "{page}");
    let file = root.join("docs/rules.md");
    if std::env::var_os("FERRY_UPDATE_DOCS").is_some() {
        std::fs::write(&file, &page).unwrap();
    }
    let written = std::fs::read_to_string(&file).unwrap_or_default();
    assert!(
        written == page,
        "docs/rules.md is not the documentation of src/rules.rs; run \
         FERRY_UPDATE_DOCS=1 cargo test --test integration docs"
    );
}

/// GitHub's anchor of a heading: lower case, letters, digits, `-` and `_`
/// kept, spaces to `-`, the rest dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a Markdown file's headings (outside code blocks).
fn anchors(text: &str) -> Vec<String> {
    let mut fenced = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            out.push(anchor(line.trim_start_matches('#')));
        }
    }
    out
}

/// Every `](target)` of a Markdown text, outside code blocks and inline code.
fn links(text: &str) -> Vec<String> {
    let mut fenced = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Inline code is text: `[text](url)` there is no link.
        let line: String = line
            .split('`')
            .enumerate()
            .filter(|(n, _)| n % 2 == 0)
            .map(|(_, part)| part)
            .collect();
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            if let Some(end) = rest.find(')') {
                out.push(rest[..end].to_string());
                rest = &rest[end..];
            }
        }
    }
    out
}

/// Every link between the repository's documents leads to a file that exists
/// and, with a `#`, to a heading in it: the docs read offline, as a guide.
#[test]
fn the_documents_link_only_to_what_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut documents = vec![root.join("README.md"), root.join("ARCHITECTURE.md")];
    for dir in ["docs", "docs/design"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "md") {
                documents.push(path);
            }
        }
    }
    let mut broken = Vec::new();
    let mut checked = 0;
    for document in &documents {
        let text = std::fs::read_to_string(document).unwrap();
        for link in links(&text) {
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            let (file, fragment) = match link.split_once('#') {
                Some((file, fragment)) => (file, Some(fragment)),
                None => (link.as_str(), None),
            };
            let target = if file.is_empty() {
                document.clone()
            } else {
                document.parent().unwrap().join(file)
            };
            checked += 1;
            if !target.exists() {
                broken.push(format!("{}: {link} (no such file)", document.display()));
                continue;
            }
            if let Some(fragment) = fragment {
                let there = std::fs::read_to_string(&target).unwrap_or_default();
                if !anchors(&there).iter().any(|a| a == fragment) {
                    broken.push(format!("{}: {link} (no such heading)", document.display()));
                }
            }
        }
    }
    assert!(checked > 50, "the reader finds the links: {checked}");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}
