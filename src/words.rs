//! Small helpers for the words ferry prints, so every report says things the same
//! way.

use git2::Oid;

/// `"s"` unless there is exactly one.
pub fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// A commit id shortened the way ferry's reports print it (10 hex digits, enough
/// to be unique in any exchange repo and to paste into `git show`).
pub fn short_id(oid: Oid) -> String {
    let mut id = oid.to_string();
    id.truncate(10);
    id
}

/// An error and its causes on one line, `a: b: c`, each cause once.
///
/// Most of ferry's error types name their cause in their own message (so a
/// message read alone is complete) and also expose it as `source()` (so code can
/// inspect it); anyhow's `{:#}` would print such a cause twice. A cause whose text
/// the line already holds is left out.
pub fn error_chain(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[test]
    fn causes_already_in_the_message_are_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        #[derive(Debug, thiserror::Error)]
        #[error("cannot read ferry.yaml: {source}")]
        struct Read {
            source: std::io::Error,
        }
        let err = anyhow::Error::from(Read { source: io }).context("loading the site");
        assert_eq!(
            error_chain(&err),
            "loading the site: cannot read ferry.yaml: no such file"
        );
    }
}
