//! Shared harness: a sealed environment (no global git config, fixed user) and
//! helpers to build sites and read what they did.

mod artifacts;
mod attachments;
mod bad_input;
mod batches;
mod bench;
mod browser;
mod bundles;
mod careless_operator;
mod docs;
mod doctor;
mod errors;
mod folder_channel;
mod format;
mod git_server;
mod hostile_input;
mod hostile_peer;
mod hostile_rules;
mod https;
mod interface;
mod jira;
mod maintenance;
mod many;
mod module_graph;
mod notify;
mod operators;
mod ops;
mod redmine;
mod relations;
mod release;
mod review;
mod rules;
mod samples;
mod semantics;
mod share;
mod signing;
mod story;
mod torture;

use std::path::{Path, PathBuf};
use std::process::Command;

use assert_cmd::cargo::CommandCargoExt;

/// A temporary world: an exchange repo and any number of sites beside it.
pub struct World {
    pub root: tempfile::TempDir,
    /// When set, every run sees this fixed clock (`FERRY_NOW`), for snapshots.
    pub now: Option<&'static str>,
}

/// What a command printed and how it ended.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl World {
    pub fn new() -> World {
        let world = World {
            root: tempfile::tempdir().unwrap(),
            now: None,
        };
        git(world.root.path(), &["init", "-q", "--bare", "exchange.git"]);
        world
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    /// Runs ferry in the site folder `site` (relative to the world root).
    pub fn ferry(&self, site: &str, args: &[&str]) -> Run {
        let out = self.command(site, args).output().unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The command [`World::ferry`] runs, for callers that spawn it themselves.
    pub fn command(&self, site: &str, args: &[&str]) -> Command {
        let mut cmd = Command::cargo_bin("ferry").unwrap();
        cmd.current_dir(self.path(site))
            .args(args)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("FERRY_USER", "tester")
            .env_remove("FERRY_DIR")
            .env_remove("FERRY_LOG")
            .env_remove("SSH_AUTH_SOCK");
        match self.now {
            Some(now) => cmd.env("FERRY_NOW", now),
            None => cmd.env_remove("FERRY_NOW"),
        };
        cmd
    }

    /// Runs ferry with the fail point `point` armed and insists that it killed
    /// the process there.
    pub fn killed_at(&self, site: &str, args: &[&str], point: &str) {
        use std::os::unix::process::ExitStatusExt;
        let out = self
            .command(site, args)
            .env("FERRY_FAILPOINT", point)
            .output()
            .unwrap();
        assert_eq!(
            out.status.signal(),
            Some(9),
            "fail point {point} did not fire: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs ferry and insists on exit 0; returns stdout.
    pub fn ok(&self, site: &str, args: &[&str]) -> String {
        let run = self.ferry(site, args);
        assert_eq!(
            run.code, 0,
            "ferry {args:?} at {site} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            run.code, run.stdout, run.stderr
        );
        run.stdout
    }

    /// Makes `to` trust `from`'s signing key the way two operators do it:
    /// `ferry key show` at `from`, `ferry connection trust FROM KEY` at `to`.
    pub fn trust(&self, to: &str, from: &str) {
        let key = self.ok(from, &["key", "show"]);
        self.ok(to, &["connection", "trust", from, key.trim()]);
    }

    /// Creates site `name` with one connection per `(peer, local=remote, query)`,
    /// and exchanges signing keys with every peer that already exists (each side
    /// trusts the other where it has a connection to it).
    pub fn site(&self, name: &str, connections: &[(&str, &str, &str)]) {
        std::fs::create_dir_all(self.path(name)).unwrap();
        self.ok(name, &["init", "--site", name, "--tracker", "local"]);
        for (peer, projects, query) in connections {
            self.ok(
                name,
                &[
                    "connection",
                    "add",
                    peer,
                    "--channel",
                    "../exchange.git",
                    "--project",
                    projects,
                    "--query",
                    query,
                ],
            );
            if self.path(peer).join("ferry.yaml").exists() {
                self.trust(name, peer);
                if self
                    .path(&format!("{peer}/connections/{name}.yaml"))
                    .exists()
                {
                    self.trust(peer, name);
                }
            }
        }
    }

    /// support ↔ engineering, each sharing what is labelled `escalate`.
    pub fn escalating_pair() -> World {
        let w = World::new();
        w.site(
            "support",
            &[("engineering", "SUP=ENG", "labels = escalate")],
        );
        w.site(
            "engineering",
            &[("support", "ENG=SUP", "labels = escalate")],
        );
        w
    }

    /// An escalated issue at support; returns its key.
    pub fn escalate(&self, summary: &str) -> String {
        self.new_issue(
            "support",
            &[
                "--project",
                "SUP",
                "--summary",
                summary,
                "--label",
                "escalate",
            ],
        )
    }

    /// `ferry tracker new` at a site; returns the new key.
    pub fn new_issue(&self, site: &str, args: &[&str]) -> String {
        let mut all = vec!["tracker", "new"];
        all.extend_from_slice(args);
        self.ok(site, &all).trim().to_string()
    }

    /// The `tracker show --json` of an issue.
    pub fn show(&self, site: &str, key: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(site, &["tracker", "show", key, "--json"])).unwrap()
    }

    /// The `tracker list --json` of a site.
    pub fn list(&self, site: &str) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.ok(site, &["tracker", "list", "--json"])).unwrap()
    }

    /// Every object of the exchange repo, as text, according to the real git.
    pub fn exchange_objects(&self) -> String {
        git(
            &self.path("exchange.git"),
            &["cat-file", "--batch-all-objects", "--batch"],
        )
    }

    /// Number of commits on a branch of the exchange repo (0 when absent).
    pub fn commits(&self, branch: &str) -> usize {
        let out = Command::new("git")
            .args(["rev-list", "--count", branch])
            .current_dir(self.path("exchange.git"))
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }
}

/// Runs the real git CLI and returns stdout, failing the test on error.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@example.invalid")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@example.invalid")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
