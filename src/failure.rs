//! How far a failure reaches.
//!
//! Every error ferry keeps has a level: one issue, one connection, the site (its
//! tracker), or the node (the machine: local state, the disk). The level decides
//! what a run does next (an issue error fails that issue, a connection error stops
//! that connection, a site or node error stops the run), who is told (recipients
//! subscribe by level) and what resolves it (a clean run resolves the site and
//! node levels). It is decided where the error is raised, as a [`Level`] value:
//! by the error types that know their reach whatever surfaces them (the ledger's
//! errors are the node's, an unavailable tracker is the site's), and by the code
//! that knows what it was doing (the engine records an issue that failed at
//! [`Level::Issue`], a run that stopped while opening local state at
//! [`Level::Node`]). ARCHITECTURE.md ("Errors") shows the whole path.

use serde::{Deserialize, Serialize};

/// How far a failure reaches, from one issue to the whole machine; ordered so a
/// wider level compares greater.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// One issue failed to import or export.
    Issue,
    /// One connection failed (channel unreachable, rule that does not compile).
    Connection,
    /// The site failed (tracker down, ledger unwritable).
    Site,
    /// The machine ferry runs on (disk, clock).
    Node,
}

impl Level {
    /// Every level, most specific first: the order messages list them in.
    pub const ALL: [Level; 4] = [Level::Issue, Level::Connection, Level::Site, Level::Node];

    /// The name the ledger, `notify.yaml` and the JSON outputs use.
    pub const fn as_str(self) -> &'static str {
        match self {
            Level::Issue => "issue",
            Level::Connection => "connection",
            Level::Site => "site",
            Level::Node => "node",
        }
    }

    /// The level named `name`, as [`Level::as_str`] writes it.
    pub fn from_name(name: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.as_str() == name)
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error that stopped a whole run, at the level decided where it was raised.
#[derive(Debug)]
pub struct RunFailure {
    /// How far it reaches: [`Level::Site`] or [`Level::Node`].
    pub level: Level,
    /// What went wrong.
    pub error: anyhow::Error,
}

impl RunFailure {
    /// The error, for a caller that only reports it.
    pub fn into_error(self) -> anyhow::Error {
        self.error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_wider_levels_compare_greater() {
        for level in Level::ALL {
            assert_eq!(Level::from_name(level.as_str()), Some(level));
            assert_eq!(level.to_string(), level.as_str());
            let yaml = serde_yaml::to_string(&level).unwrap();
            assert_eq!(yaml.trim(), level.as_str());
        }
        assert_eq!(Level::from_name("cluster"), None);
        assert!(Level::ALL.windows(2).all(|w| w[0] < w[1]));
    }
}
