//! What the engine's unit tests share: a real site on the embedded tracker,
//! its ledger and exchange clone in a temporary folder, set up by the real
//! `ferry init` and `ferry connection add`.

use crate::config::Connection;
use crate::model::Issue;
use crate::site::Site;
use crate::tracker::{IssuePatch, NewIssue};

/// The peer of the fixture's connection.
pub const PEER: &str = "eng";

/// A site `sup` on the embedded tracker with a connection to `eng`, which
/// maps `eng`'s project ENG to the local SUP.
pub struct Fixture {
    _dir: tempfile::TempDir,
    pub root: std::path::PathBuf,
    pub site: Site,
    pub connection: Connection,
}

/// A new [`Fixture`].
pub fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sup");
    std::fs::create_dir(&root).unwrap();
    let exchange = dir.path().join("exchange.git");
    git2::Repository::init_bare(&exchange).unwrap();
    let run = |args: &[&str]| crate::cli::run_ok(&root, args);
    run(&["init", "--site", "sup"]);
    run(&[
        "connection",
        "add",
        PEER,
        "--channel",
        exchange.to_str().unwrap(),
        "--project",
        "SUP=ENG",
    ]);
    let site = Site::open(&root).unwrap();
    let connection = site.config.connection(PEER).unwrap().clone();
    Fixture {
        _dir: dir,
        root,
        site,
        connection,
    }
}

impl Fixture {
    /// The local issue with `key`, as the tracker has it now.
    pub fn local(&self, key: &str) -> Issue {
        let id = self
            .site
            .tracker
            .changed_since(None)
            .unwrap()
            .into_iter()
            .find(|issue| issue.key == key)
            .unwrap_or_else(|| panic!("no {key}"))
            .id;
        self.site.tracker.get(&id).unwrap().unwrap()
    }

    /// Creates an issue in the local project SUP.
    pub fn create_local(&mut self, summary: &str) -> Issue {
        self.site
            .tracker
            .create(&NewIssue {
                project: "SUP".into(),
                patch: IssuePatch {
                    issue_type: Some("Bug".into()),
                    summary: Some(summary.into()),
                    status: Some("Open".into()),
                    ..Default::default()
                },
                author: "alice".into(),
                origin: None,
            })
            .unwrap()
    }
}
