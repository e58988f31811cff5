//! The library's top-level modules form no cycle (ARCHITECTURE.md, "Layers"):
//! read from the sources, every `crate::<module>` a module names outside its
//! tests is an edge, and the graph must sort topologically. A cycle fails the
//! test naming its modules and one file line per edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a source file belongs to, `None` for the crate root
/// and for test-only files (`tests.rs`, `tests/`, the fakes of trackers).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let parts: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts
        .iter()
        .any(|p| p == "tests" || p == "fake" || p == "contract")
    {
        return None;
    }
    match parts.first()?.as_str() {
        "lib" | "main" => None,
        top => Some(top.to_string()),
    }
}

/// The code of a file before its `#[cfg(test)] mod tests` block, comment
/// lines blanked (so line numbers stay).
fn code(text: &str) -> String {
    let end = text.find("#[cfg(test)]\nmod tests").unwrap_or(text.len());
    text[..end]
        .lines()
        .map(|line| {
            if line.trim_start().starts_with("//") {
                ""
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Module → module it names → where.
fn edges(src: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut files = Vec::new();
    sources(src, &mut files);
    let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for file in files {
        let Some(from) = module_of(src, &file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in code(&text).lines().enumerate() {
            let mut rest = line;
            while let Some(at) = rest.find("crate::") {
                rest = &rest[at + "crate::".len()..];
                let to: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                    .collect();
                if !to.is_empty() && to != from {
                    edges
                        .entry(from.clone())
                        .or_default()
                        .entry(to)
                        .or_insert_with(|| format!("{}:{}", file.display(), n + 1));
                }
            }
        }
    }
    edges
}

#[test]
fn the_top_level_modules_form_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = edges(&src);
    assert!(
        edges.get("cli").is_some_and(|to| to.contains_key("engine")),
        "the reader sees the edges: {edges:?}"
    );
    // Kahn's algorithm both ways: modules that depend on nothing left, then
    // modules nothing left depends on, go until none does; what remains is on
    // a cycle.
    let mut left: BTreeSet<&String> = edges
        .keys()
        .chain(edges.values().flat_map(|to| to.keys()))
        .collect();
    let names = |m: &String, t: &String| edges.get(m).is_some_and(|to| to.contains_key(t));
    loop {
        let free: Vec<&String> = left
            .iter()
            .copied()
            .filter(|m| !left.iter().any(|t| names(m, t)) || !left.iter().any(|f| names(f, m)))
            .collect();
        if free.is_empty() {
            break;
        }
        for m in free {
            left.remove(m);
        }
    }
    let cycle: Vec<String> = left
        .iter()
        .flat_map(|m| {
            edges[*m]
                .iter()
                .filter(|(to, _)| left.contains(to))
                .map(move |(to, at)| format!("{m} -> {to} ({at})"))
        })
        .collect();
    assert!(cycle.is_empty(), "module cycle:\n{}", cycle.join("\n"));
}

/// No source file grows past 1 500 lines: a file that long holds several jobs
/// (ARCHITECTURE.md); split it along its seams.
#[test]
fn no_source_file_is_over_1500_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 50, "the reader finds the sources");
    let long: Vec<String> = files
        .iter()
        .map(|f| (f, std::fs::read_to_string(f).unwrap().lines().count()))
        .filter(|(_, lines)| *lines > 1500)
        .map(|(f, lines)| format!("{} ({lines} lines)", f.display()))
        .collect();
    assert!(long.is_empty(), "split these: {}", long.join(", "));
}
