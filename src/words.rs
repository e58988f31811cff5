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
