//! Site identity: a copy of a site must not sync as if it were the original.
//!
//! A staging clone made from production's folder (or from its tracker database)
//! carries production's ledger and configuration. Were it to sync, it would export
//! staging's test edits as production's, import the peer's changes into the wrong
//! tracker and move production's applied positions in the shared repo. So the
//! ledger remembers which site and which tracker it belongs to: the site name, the
//! tracker kind, where the tracker is (the database file or server URL) and the id
//! the tracker keeps itself (the local database's instance id, born with the file,
//! the same on every machine). The first run records them; every later run compares
//! and refuses to work on a mismatch until an operator confirms, with
//! `ferry site confirm`, that this folder really is that site (it was moved, the
//! tracker was restored from a backup).
//!
//! The check is on the whole identity rather than only on the tracker's own id
//! because each half catches a different copy: a copied folder keeps the tracker's
//! id but sits elsewhere; a tracker database copied over another site's keeps the
//! location but brings another id.

use std::path::Path;

use crate::ledger::{Ledger, LedgerError};
use crate::tracker::{Tracker, TrackerError, TrackerInstance};

/// The `identity` table key holding the recorded identity (JSON).
const KEY: &str = "site";

/// Who a site is: its name and its tracker.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SiteIdentity {
    /// The site name from `ferry.yaml`.
    pub site: String,
    /// The tracker it syncs.
    pub tracker: TrackerInstance,
}

impl SiteIdentity {
    /// What differs from `other`, one phrase per difference.
    fn differences(&self, now: &SiteIdentity) -> Vec<String> {
        let mut out = Vec::new();
        let mut differ = |what: &str, was: &str, is: &str| {
            if was != is {
                out.push(format!("{what} was {was:?}, is now {is:?}"));
            }
        };
        differ("the site name", &self.site, &now.site);
        differ("the tracker kind", &self.tracker.kind, &now.tracker.kind);
        differ(
            "the tracker's location",
            &self.tracker.location,
            &now.tracker.location,
        );
        differ(
            "the tracker's instance id",
            &self.tracker.id,
            &now.tracker.id,
        );
        out
    }
}

/// Why a site's identity could not be checked, or that it did not match.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The site is not the one its ledger belongs to.
    #[error(
        "this is not the site the ledger {ledger} belongs to: {}. A copy of a site \
         (a staging clone, a copied folder or tracker database) must not sync as the \
         original; if this really is that site (moved, or its tracker restored from a \
         backup), confirm it with: {command}",
        .differences.join("; ")
    )]
    Mismatch {
        /// The ledger file.
        ledger: String,
        /// What differs, one phrase each.
        differences: Vec<String>,
        /// The exact command that confirms.
        command: String,
    },
    /// The tracker could not say which it is.
    #[error(transparent)]
    Tracker(#[from] TrackerError),
    /// The ledger could not be read or written.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// The identity the site has now.
pub fn current(site: &str, tracker: &dyn Tracker) -> Result<SiteIdentity, TrackerError> {
    Ok(SiteIdentity {
        site: site.to_string(),
        tracker: tracker.instance()?,
    })
}

/// Compares the site with the identity its ledger recorded; records it on the
/// first run. `dir` and `ledger_path` only go into the message.
pub fn verify(
    ledger: &Ledger,
    now: &SiteIdentity,
    dir: &Path,
    ledger_path: &Path,
) -> Result<(), IdentityError> {
    let recorded = ledger
        .identity(KEY)?
        .and_then(|text| serde_json::from_str::<SiteIdentity>(&text).ok());
    match recorded {
        None => record(ledger, now),
        Some(recorded) if recorded == *now => Ok(()),
        Some(recorded) => Err(IdentityError::Mismatch {
            ledger: std::fs::canonicalize(ledger_path)
                .unwrap_or_else(|_| ledger_path.to_path_buf())
                .display()
                .to_string(),
            differences: recorded.differences(now),
            command: confirm_command(dir),
        }),
    }
}

/// Records `now` as the site's identity (first run, or `ferry site confirm`).
/// Returns what differed from the identity recorded before.
pub fn confirm(ledger: &Ledger, now: &SiteIdentity) -> Result<Vec<String>, IdentityError> {
    let before = ledger
        .identity(KEY)?
        .and_then(|text| serde_json::from_str::<SiteIdentity>(&text).ok());
    record(ledger, now)?;
    Ok(before.map(|b| b.differences(now)).unwrap_or_default())
}

fn record(ledger: &Ledger, now: &SiteIdentity) -> Result<(), IdentityError> {
    let text = serde_json::to_string(now).expect("an identity always serialises");
    ledger.set_identity(KEY, &text)?;
    Ok(())
}

/// `ferry --dir DIR site confirm`, with the folder as the operator would type it.
fn confirm_command(dir: &Path) -> String {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let text = dir.display().to_string();
    if text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c))
    {
        format!("ferry --dir {text} site confirm")
    } else {
        format!("ferry --dir '{}' site confirm", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::local::LocalTracker;

    #[test]
    fn the_first_run_records_and_a_copied_tracker_is_refused_until_confirmed() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&dir.path().join("ledger.db")).unwrap();
        let original = LocalTracker::open(&dir.path().join("tracker.db")).unwrap();
        let other = LocalTracker::open(&dir.path().join("other.db")).unwrap();
        let ledger_path = dir.path().join("ledger.db");

        let first = current("support", &original).unwrap();
        verify(&ledger, &first, dir.path(), &ledger_path).unwrap();
        verify(&ledger, &first, dir.path(), &ledger_path).unwrap();

        let copy = current("support", &other).unwrap();
        let err = verify(&ledger, &copy, dir.path(), &ledger_path).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("the tracker's location was"), "{message}");
        assert!(
            message.contains("the tracker's instance id was"),
            "{message}"
        );
        assert!(message.contains("site confirm"), "{message}");

        let differences = confirm(&ledger, &copy).unwrap();
        assert_eq!(differences.len(), 2);
        verify(&ledger, &copy, dir.path(), &ledger_path).unwrap();
        assert!(verify(&ledger, &first, dir.path(), &ledger_path).is_err());
    }

    #[test]
    fn a_database_keeps_its_instance_id_across_opens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tracker.db");
        let id = LocalTracker::open(&path).unwrap().instance().unwrap().id;
        assert_eq!(id.len(), 32);
        assert_eq!(
            LocalTracker::open(&path).unwrap().instance().unwrap().id,
            id
        );
        let fresh = LocalTracker::open(&dir.path().join("fresh.db")).unwrap();
        assert_ne!(fresh.instance().unwrap().id, id);
    }
}
