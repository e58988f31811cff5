//! Fail points: named places where a test can kill the process on purpose.
//!
//! ferry's crash guarantees (no duplicate, nothing lost, the applied ref never
//! ahead of the tracker) are claims about every instant of a run. Killing a
//! process at a random moment finds most bugs slowly; killing it exactly between
//! two writes that must not be separated finds them at once. The torture test
//! (`tests/cli/torture.rs`) does both.
//!
//! `FERRY_FAILPOINT=after-create:3` kills the process with SIGKILL the third time
//! the run reaches the point `after-create`; several points may be given, comma
//! separated (`after-commit,before-applied-ref:2`), and `:N` defaults to 1. The
//! process dies as it would from `kill -9` or a power cut: no destructor, no
//! flush, no unwinding. With the variable unset a fail point costs one relaxed
//! atomic load.
//!
//! The names are listed in [`POINTS`] so the torture test can pick among them
//! and a typo in the variable is refused instead of silently never firing.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

/// The environment variable naming the fail points to arm.
pub const FAILPOINT_ENV: &str = "FERRY_FAILPOINT";

/// Every fail point in the code, in the order a sync reaches them.
pub const POINTS: &[&str] = &[
    // Pull from a bundle inbox: a bundle moved to applying/, then the peer's
    // branch moved to it (it is archived only after that).
    "bundle-after-applying",
    "bundle-after-ref",
    // Pull from a folder channel: the new objects are in the local clone, no
    // ref has moved.
    "fetch-after-pack",
    // Pull: the peer's branch moved in the local clone.
    "after-fetch",
    // Import, per replica.
    "before-create",
    "after-create",
    "after-update",
    "after-comment",
    "after-attach",
    "after-remove-attachment",
    "after-delete",
    "after-unlink",
    "after-mark-applied",
    // Import, once per connection: the relations whose other end is here are
    // in the tracker; the ledger still has them waiting.
    "after-relate",
    "before-applied-ref",
    // Export: a branch moved to another exchange format (or announcing the
    // formats this site reads), before the export's own commit.
    "after-format-commit",
    // Export: the commit exists; the ledger does not know yet.
    "after-commit",
    "after-cursor",
    // Push.
    "before-push",
    // Push to a folder channel: the new objects are in the channel, its branch
    // has not moved.
    "push-after-pack",
    // Push to a bundle outbox: the bundle is written, not yet recorded as sent;
    // then each older bundle it supersedes was removed.
    "bundle-after-write",
    "bundle-after-remove-superseded",
    "after-push",
    // `ferry release approve`: the release is recorded, the branch that
    // leaves has not moved yet.
    "after-release-recorded",
    // Notify: the server accepted the message; the ledger does not know yet.
    "after-notice-sent",
    // Maintenance (clone, then each folder channel): the new pack is written
    // and fsynced in its temporary folder; then it is in objects/pack, nothing
    // removed yet; then the first loose object it holds was removed; then the
    // old packs are listed as superseded; later, the index of a superseded pack
    // whose grace is over was removed, its pack not yet.
    "maintenance-after-pack",
    "maintenance-after-install",
    "maintenance-removing-loose",
    "maintenance-after-superseded",
    "maintenance-removing-pack",
];

/// Armed points: name → how many more hits before the kill.
struct Armed(Mutex<BTreeMap<String, u32>>);

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var(FAILPOINT_ENV).ok()?;
            match parse(&spec) {
                Ok(points) => Some(Armed(Mutex::new(points))),
                Err(message) => {
                    // A fail point that never fires would make a test pass for the
                    // wrong reason; refuse to run at all.
                    eprintln!("error: {FAILPOINT_ENV}={spec:?}: {message}");
                    std::process::exit(2);
                }
            }
        })
        .as_ref()
}

fn parse(spec: &str) -> Result<BTreeMap<String, u32>, String> {
    let mut points = BTreeMap::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, count) = match item.split_once(':') {
            Some((name, count)) => {
                let count: u32 = count
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("{count:?} in {item:?} is not a positive count"))?;
                (name, count)
            }
            None => (item, 1),
        };
        if !POINTS.contains(&name) {
            return Err(format!(
                "unknown fail point {name:?}; known: {}",
                POINTS.join(", ")
            ));
        }
        points.insert(name.to_string(), count);
    }
    Ok(points)
}

/// Marks the fail point `name`: when armed and this is the hit it waits for, the
/// process is killed here.
pub fn hit(name: &'static str) {
    debug_assert!(POINTS.contains(&name), "fail point {name} is not in POINTS");
    let Some(Armed(points)) = armed() else {
        return;
    };
    let mut points = points.lock().unwrap_or_else(|e| e.into_inner());
    let Some(left) = points.get_mut(name) else {
        return;
    };
    *left -= 1;
    if *left == 0 {
        eprintln!("ferry: fail point {name} reached; killing the process");
        // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
        // SIGKILL cannot be caught; this is only reached if kill(2) failed.
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_counts() {
        let points = parse("after-create:3, after-commit").unwrap();
        assert_eq!(points.get("after-create"), Some(&3));
        assert_eq!(points.get("after-commit"), Some(&1));
    }

    #[test]
    fn refuses_unknown_names_and_bad_counts() {
        assert!(
            parse("after-creat")
                .unwrap_err()
                .contains("unknown fail point")
        );
        assert!(parse("after-create:0").unwrap_err().contains("positive"));
        assert!(parse("after-create:x").unwrap_err().contains("positive"));
    }
}
