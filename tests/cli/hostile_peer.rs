//! A peer, or whoever can write to the channel, acting against this site: a
//! trusted peer's replica that claims a local issue it was never given, a
//! foreign commit on this site's own branch, a peer branch that disappears, a
//! bundle whose predecessor never comes, a channel that is not a bare repository.
//! Every hostile commit is made with git plumbing, as an attacker would.

use std::path::Path;
use std::process::Command;

use super::{World, git};

/// Runs git in `dir` with a throwaway index, for plumbing that must not touch
/// any work tree.
fn git_env(dir: &Path, args: &[&str], index: &Path) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_INDEX_FILE", index)
        .env("GIT_AUTHOR_NAME", "mallory")
        .env("GIT_AUTHOR_EMAIL", "mallory@example.invalid")
        .env("GIT_COMMITTER_NAME", "mallory")
        .env("GIT_COMMITTER_EMAIL", "mallory@example.invalid")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Commits `files` (path, content) on top of `branch` of the bare repository
/// `repo`, signed with the SSH key file `key` when given, with the
/// `Ferry-Branch` trailer naming `branch`; moves the branch there and returns
/// the commit id.
fn forge(repo: &Path, branch: &str, files: &[(&str, &str)], key: Option<&Path>) -> String {
    let index = repo.join("forge.index");
    let _ = std::fs::remove_file(&index);
    let parent = git_env(
        repo,
        &["rev-parse", &format!("refs/heads/{branch}")],
        &index,
    );
    git_env(repo, &["read-tree", &format!("{parent}^{{tree}}")], &index);
    for (path, content) in files {
        let blob_file = repo.join("forge.blob");
        std::fs::write(&blob_file, content).unwrap();
        let blob = git_env(
            repo,
            &["hash-object", "-w", blob_file.to_str().unwrap()],
            &index,
        );
        git_env(
            repo,
            &[
                "update-index",
                "--add",
                "--cacheinfo",
                &format!("100644,{blob},{path}"),
            ],
            &index,
        );
    }
    let tree = git_env(repo, &["write-tree"], &index);
    let message = format!("forged\n\nFerry-Branch: {branch}\n");
    let commit = match key {
        Some(key) => git_env(
            repo,
            &[
                "-c",
                "gpg.format=ssh",
                "-c",
                &format!("user.signingkey={}", key.display()),
                "commit-tree",
                "-S",
                &tree,
                "-p",
                &parent,
                "-m",
                &message,
            ],
            &index,
        ),
        None => git_env(
            repo,
            &["commit-tree", &tree, "-p", &parent, "-m", &message],
            &index,
        ),
    };
    git_env(
        repo,
        &["update-ref", &format!("refs/heads/{branch}"), &commit],
        &index,
    );
    let _ = std::fs::remove_file(&index);
    commit
}

/// A replica of engineering's issue `id`, claiming `origin` (site, id) when given.
fn eng_replica(id: &str, summary: &str, origin: Option<(&str, &str)>) -> String {
    let mut text = format!(
        "ferry: 1\nsite: engineering\nid: '{id}'\nkey: ENG-{id}\nproject: ENG\ntype: Bug\n\
         summary: {summary}\nstatus: Open\ncreated: 2026-11-20T10:00:00Z\n\
         updated: 2026-11-20T10:00:00Z\n"
    );
    if let Some((site, origin_id)) = origin {
        text.push_str(&format!("origin:\n  site: {site}\n  id: '{origin_id}'\n"));
    }
    text
}

/// The id of a local issue, by key.
fn local_id(w: &World, site: &str, key: &str) -> String {
    let issue = w.show(site, key);
    issue["id"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| issue["id"].to_string())
}

/// support ↔ engineering sharing what is labelled `escalate`; support has one
/// escalated issue (shared, round trip done) and one private issue with a
/// description that must never leave support. Returns (shared key, private key).
fn pair_with_private_issue() -> (World, String, String) {
    let w = World::escalating_pair();
    let shared = w.escalate("Printer on fire");
    let private = w.new_issue(
        "support",
        &[
            "--project",
            "SUP",
            "--summary",
            "Salary list",
            "--description",
            "confidential",
        ],
    );
    w.ok("support", &["sync"]);
    w.ok("engineering", &["sync"]);
    w.ok("support", &["sync"]);
    (w, shared, private)
}

/// Whether support's branch for engineering in the channel holds a replica of
/// the local issue `id`.
fn support_sends(w: &World, id: &str) -> bool {
    let files = git(
        &w.path("exchange.git"),
        &["ls-tree", "-r", "--name-only", "support/engineering"],
    );
    files.lines().any(|l| l == format!("issues/SUP/{id}.yaml"))
}

/// engineering, with its real key, sends a replica of its own claiming support's
/// local issue `id`; returns the commit.
fn claim_as_engineering(w: &World, id: &str) -> String {
    let key = w.path("engineering/.ferry/signing_key");
    forge(
        &w.path("exchange.git"),
        "engineering/support",
        &[(
            "issues/ENG/666.yaml",
            &eng_replica("666", "Taken", Some(("support", id))),
        )],
        Some(&key),
    )
}

#[test]
fn a_trusted_peer_cannot_take_over_an_issue_never_shared_with_it() {
    let (w, _shared, private) = pair_with_private_issue();
    let id = local_id(&w, "support", &private);
    assert!(!support_sends(&w, &id));
    let commit = claim_as_engineering(&w, &id);

    let run = w.ferry("support", &["sync"]);
    let all = format!("{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.code, 1, "an issue-level refusal:\n{all}");
    assert!(all.contains(&commit[..7]), "the commit is named:\n{all}");
    assert!(
        all.contains("issues/ENG/666.yaml"),
        "the path is named:\n{all}"
    );
    let issue = w.show("support", &private);
    assert_eq!(issue["summary"], "Salary list");
    assert_eq!(issue["description"], "confidential");
    let errors = w.ok("support", &["errors"]);
    assert!(errors.contains("issues/ENG/666.yaml"), "{errors}");
    assert!(errors.contains("never shared"), "{errors}");

    // Never linked: the next runs do not send it to the peer.
    w.ferry("support", &["sync"]);
    assert!(!support_sends(&w, &id), "the private issue was sent");
}

/// A trusted peer cannot relate an issue this site never shared with it: a
/// link naming one waits, and the issue is left as it was (not linked, not
/// changed, never sent). The parent it names for this site's own issue is not
/// the peer's to set at all.
#[test]
fn a_trusted_peer_cannot_link_an_issue_never_shared_with_it() {
    let (w, shared, private) = pair_with_private_issue();
    let shared_id = local_id(&w, "support", &shared);
    let private_id = local_id(&w, "support", &private);
    let before = w.show("support", &private);
    let eng_id = local_id(&w, "engineering", "ENG-1");
    let mut replica = eng_replica(&eng_id, "Printer on fire", Some(("support", &shared_id)));
    replica.push_str(&format!(
        "parent:\n  site: support\n  id: '{private_id}'\n\
         links:\n- type: Blocks\n  direction: outward\n  issue:\n    site: support\n    id: '{private_id}'\n"
    ));
    let key = w.path("engineering/.ferry/signing_key");
    forge(
        &w.path("exchange.git"),
        "engineering/support",
        &[(
            &ferry::replica::stored_path("ENG", &eng_id, ferry::replica::Format::V2),
            &replica,
        )],
        Some(&key),
    );
    let out = w.ok("support", &["sync"]);
    assert!(
        out.contains("links and parents: 1 waiting for the other issue to arrive"),
        "{out}"
    );
    assert_eq!(w.show("support", &private), before);
    let shared_now = w.show("support", &shared);
    assert!(shared_now.get("links").is_none() && shared_now.get("parent").is_none());
    w.ok("support", &["sync"]);
    assert!(
        !support_sends(&w, &private_id),
        "the private issue was sent"
    );
    assert_eq!(w.show("support", &private), before);
}

#[test]
fn of_two_peer_replicas_claiming_one_issue_only_its_own_applies() {
    let (w, shared, _private) = pair_with_private_issue();
    let id = local_id(&w, "support", &shared);
    // engineering's legitimate copy of the shared issue.
    let eng = w.list("engineering");
    assert_eq!(eng.len(), 1);
    let eng_key = eng[0]["key"].as_str().unwrap().to_string();
    let key = w.path("engineering/.ferry/signing_key");
    // Sorted before the genuine one, so a first-come rule would pick it.
    let commit = forge(
        &w.path("exchange.git"),
        "engineering/support",
        &[(
            "issues/ENG/0.yaml",
            &eng_replica("0", "Hijacked", Some(("support", &id))),
        )],
        Some(&key),
    );
    let run = w.ferry("support", &["sync"]);
    let all = format!("{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.code, 1, "{all}");
    assert!(all.contains(&commit[..7]), "{all}");
    assert!(all.contains("issues/ENG/0.yaml"), "{all}");
    assert_eq!(w.show("support", &shared)["summary"], "Printer on fire");

    // The genuine replica still applies.
    w.ok(
        "engineering",
        &[
            "tracker",
            "edit",
            &eng_key,
            "--summary",
            "Printer still on fire",
        ],
    );
    w.ok("engineering", &["sync"]);
    w.ferry("support", &["sync"]);
    assert_eq!(
        w.show("support", &shared)["summary"],
        "Printer still on fire"
    );
}

#[test]
fn relink_does_not_link_an_issue_never_shared_with_the_peer() {
    let (w, _shared, private) = pair_with_private_issue();
    let id = local_id(&w, "support", &private);
    claim_as_engineering(&w, &id);
    // support fetches it, nothing imported yet, then loses its ledger.
    w.ok("support", &["pull"]);
    std::fs::remove_file(w.path("support/.ferry/ledger.db")).unwrap();
    let _ = std::fs::remove_file(w.path("support/.ferry/ledger.db-wal"));
    let _ = std::fs::remove_file(w.path("support/.ferry/ledger.db-shm"));
    let out = w.ferry("support", &["relink"]);
    assert!(out.code == 0 || out.code == 1, "{}", out.stderr);
    w.ferry("support", &["sync"]);
    assert_eq!(w.show("support", &private)["description"], "confidential");
    assert!(!support_sends(&w, &id), "the private issue was sent");
}

#[test]
fn two_new_replicas_claiming_one_issue_in_one_range_link_once() {
    let w = World::escalating_pair();
    let shared = w.escalate("Printer on fire");
    let id = local_id(&w, "support", &shared);
    w.ok("support", &["sync"]);
    w.ok("engineering", &["sync"]);
    // Before support hears of engineering's genuine copy, a second replica
    // claiming the same issue lands on top of it.
    let key = w.path("engineering/.ferry/signing_key");
    forge(
        &w.path("exchange.git"),
        "engineering/support",
        &[(
            "issues/ENG/0.yaml",
            &eng_replica("0", "Hijacked", Some(("support", &id))),
        )],
        Some(&key),
    );
    let run = w.ferry("support", &["sync"]);
    let all = format!("{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.code, 1, "{all}");
    assert!(all.contains("already linked"), "{all}");
    assert_eq!(w.list("support").len(), 1, "no second issue: {all}");
    let status = w.ok("support", &["status", &shared, "--json"]);
    assert_eq!(
        status.matches("ENG-").count(),
        1,
        "linked to one peer issue only: {status}"
    );
}

/// How a test reaches the channel.
#[derive(Clone, Copy, Debug)]
enum Via {
    /// A path relative to the site folder.
    Path,
    /// `file://` and an absolute path.
    FileUrl,
    /// `git://` through a real `git daemon`.
    Daemon,
}

/// support ↔ engineering through `exchange.git` reached `via`, keys exchanged,
/// one escalated issue synced both ways. Returns the world, the channel URL as
/// the sites know it, the daemon (kept alive) and the issue's key.
fn pair_via(via: Via) -> (World, String, Option<super::git_server::Daemon>, String) {
    let w = World::new();
    let daemon = matches!(via, Via::Daemon).then(|| super::git_server::Daemon::start(&w));
    let url = match (via, &daemon) {
        (Via::Path, _) => "../exchange.git".to_string(),
        (Via::FileUrl, _) => format!("file://{}", w.path("exchange.git").display()),
        (Via::Daemon, Some(d)) => format!("git://127.0.0.1:{}/exchange.git", d.port),
        (Via::Daemon, None) => unreachable!(),
    };
    for (site, peer, projects) in [
        ("support", "engineering", "SUP=ENG"),
        ("engineering", "support", "ENG=SUP"),
    ] {
        std::fs::create_dir_all(w.path(site)).unwrap();
        w.ok(site, &["init", "--site", site, "--tracker", "local"]);
        w.ok(
            site,
            &[
                "connection",
                "add",
                peer,
                "--channel",
                &url,
                "--project",
                projects,
                "--query",
                "labels = escalate",
            ],
        );
    }
    w.trust("support", "engineering");
    w.trust("engineering", "support");
    let key = w.escalate("Printer on fire");
    w.ok("support", &["sync"]);
    w.ok("engineering", &["sync"]);
    (w, url, daemon, key)
}

/// The channel's tip of `branch`.
fn channel_tip(w: &World, branch: &str) -> String {
    git(&w.path("exchange.git"), &["rev-parse", branch])
        .trim()
        .to_string()
}

/// Whether `commit` is in the history of `branch` of the repository at `repo`.
fn in_history(repo: &Path, commit: &str, branch: &str) -> bool {
    Command::new("git")
        .current_dir(repo)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .args(["merge-base", "--is-ancestor", commit, branch])
        .status()
        .unwrap()
        .success()
}

fn a_foreign_commit_on_our_own_branch_is_refused_never_merged(via: Via) {
    let (w, url, _daemon, key) = pair_via(via);
    let forged = forge(
        &w.path("exchange.git"),
        "support/engineering",
        &[("issues/SUP/999.yaml", "planted\n")],
        None,
    );
    w.ok("support", &["tracker", "edit", &key, "--summary", "Smoke"]);
    let run = w.ferry("support", &["sync"]);
    let all = format!("{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.code, 3, "{via:?}: a connection error:\n{all}");
    assert!(
        all.contains(&forged),
        "{via:?}: the commit is named:\n{all}"
    );
    assert!(all.contains("was not made by this site"), "{via:?}: {all}");
    assert!(all.contains("it is not signed"), "{via:?}: {all}");
    assert_eq!(channel_tip(&w, "support/engineering"), forged, "{via:?}");
    assert!(
        !in_history(
            &w.path("support/.ferry/exchange.git"),
            &forged,
            "support/engineering"
        ),
        "{via:?}: merged into this site's branch"
    );
    let errors = w.ok("support", &["errors"]);
    assert!(errors.contains(&forged), "{via:?}: {errors}");

    let doctor = w.ferry("support", &["doctor"]);
    assert_eq!(doctor.code, 1, "{via:?}: {}", doctor.stdout);
    let line = doctor
        .stdout
        .lines()
        .find(|l| l.starts_with("FAIL") && l.contains(&forged))
        .unwrap_or_else(|| panic!("{via:?}: no failing line names it:\n{}", doctor.stdout));
    assert!(line.contains("support/engineering"), "{line}");
    assert!(doctor.stdout.contains("push --force"), "{}", doctor.stdout);

    // The documented way out: the channel's branch back to this site's tip.
    git(
        &w.path("support"),
        &[
            "--git-dir",
            ".ferry/exchange.git",
            "push",
            "-q",
            "--force",
            &url,
            "support/engineering",
        ],
    );
    w.ok("support", &["sync"]);
    w.ok("engineering", &["sync"]);
    assert_eq!(w.list("engineering")[0]["summary"], "Smoke", "{via:?}");
    assert!(!in_history(
        &w.path("exchange.git"),
        &forged,
        "support/engineering"
    ));
    assert_eq!(w.ferry("support", &["doctor"]).code, 0, "{via:?}");
}

#[test]
fn a_foreign_commit_on_our_own_branch_in_a_folder_channel_is_refused() {
    a_foreign_commit_on_our_own_branch_is_refused_never_merged(Via::Path);
}

#[test]
fn a_foreign_commit_on_our_own_branch_in_a_file_url_channel_is_refused() {
    a_foreign_commit_on_our_own_branch_is_refused_never_merged(Via::FileUrl);
}

#[test]
fn a_foreign_commit_on_our_own_branch_on_a_server_is_refused() {
    a_foreign_commit_on_our_own_branch_is_refused_never_merged(Via::Daemon);
}

/// The case the merge is for: the channel's copy of this site's branch moved,
/// but every new commit is signed by this site's own key for this branch
/// (another machine of this site, or the channel restored from a backup).
#[test]
fn our_own_signed_commits_on_the_channel_are_still_merged() {
    let (w, _url, _daemon, key) = pair_via(Via::Path);
    let own = forge(
        &w.path("exchange.git"),
        "support/engineering",
        &[("issues/SUP/998.yaml", "from another machine\n")],
        Some(&w.path("support/.ferry/signing_key")),
    );
    w.ok("support", &["tracker", "edit", &key, "--summary", "Smoke"]);
    w.ok("support", &["sync"]);
    assert!(in_history(
        &w.path("exchange.git"),
        &own,
        "support/engineering"
    ));
    let files = git(
        &w.path("exchange.git"),
        &["ls-tree", "-r", "--name-only", "support/engineering"],
    );
    assert!(!files.contains("998"), "our snapshot wins: {files}");
    w.ok("engineering", &["sync"]);
    assert_eq!(w.list("engineering")[0]["summary"], "Smoke");
}

/// A site that lost its key (state folder gone) finds its old commits on the
/// channel signed by a key it no longer has: refused until the operator adopts
/// that tip by name, and then merged once.
#[test]
fn an_old_key_s_tip_is_merged_only_when_adopted_by_name() {
    let (w, _url, _daemon, key) = pair_via(Via::Path);
    let old = super::bad_input::ssh_key(&w, "old.key");
    w.ok(
        "engineering",
        &["connection", "trust", "support", &format!("{old}.pub")],
    );
    let tip = forge(
        &w.path("exchange.git"),
        "support/engineering",
        &[("issues/SUP/997.yaml", "made with the old key\n")],
        Some(Path::new(&old)),
    );
    w.ok("support", &["tracker", "edit", &key, "--summary", "Smoke"]);
    let run = w.ferry("support", &["sync"]);
    let all = format!("{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.code, 3, "{all}");
    assert!(all.contains(&format!("--adopt {tip}")), "{all}");

    let wrong = w.ferry(
        "support",
        &[
            "push",
            "--connection",
            "engineering",
            "--adopt",
            &key_of(&w),
        ],
    );
    assert_eq!(wrong.code, 3, "only the named tip: {}", wrong.stderr);

    w.ok(
        "support",
        &["push", "--connection", "engineering", "--adopt", &tip],
    );
    assert!(in_history(
        &w.path("exchange.git"),
        &tip,
        "support/engineering"
    ));
    w.ok("support", &["sync"]);
    w.ok("engineering", &["sync"]);
    assert_eq!(w.list("engineering")[0]["summary"], "Smoke");
}

/// Some commit that is not the channel's tip: this site's own local tip.
fn key_of(w: &World) -> String {
    git(
        &w.path("support/.ferry/exchange.git"),
        &["rev-parse", "support/engineering"],
    )
    .trim()
    .to_string()
}

#[test]
fn a_peer_branch_deleted_from_the_channel_is_said_everywhere() {
    let (w, _url, _daemon, _key) = pair_via(Via::Path);
    w.ok("support", &["sync"]);
    // Nothing shared yet is not a problem: a new site's peer has no branch.
    git(
        &w.path("exchange.git"),
        &["update-ref", "-d", "refs/heads/engineering/support"],
    );
    let run = w.ferry("support", &["sync"]);
    let all = format!("{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.code, 3, "the link is down:\n{all}");
    assert!(
        all.contains("engineering's branch refs/heads/engineering/support is gone"),
        "{all}"
    );
    let status = w.ok("support", &["status"]);
    assert!(
        status.contains("failing") && status.contains("is gone"),
        "{status}"
    );
    let doctor = w.ferry("support", &["doctor"]);
    assert_eq!(doctor.code, 1, "{}", doctor.stdout);
    assert!(
        doctor
            .stdout
            .lines()
            .any(|l| l.starts_with("FAIL") && l.contains("is gone")),
        "{}",
        doctor.stdout
    );
    // The peer's next sync pushes it again, and the link heals.
    w.ok("engineering", &["sync"]);
    w.ok("support", &["sync"]);
    assert!(!w.ok("support", &["status"]).contains("failing"));
    assert_eq!(w.ferry("support", &["doctor"]).code, 0);
}

/// support with one connection whose channel is `channel` (relative to its folder).
fn site_with_channel(w: &World, channel: &str) {
    std::fs::create_dir_all(w.path("support")).unwrap();
    w.ok(
        "support",
        &["init", "--site", "support", "--tracker", "local"],
    );
    w.ok(
        "support",
        &[
            "connection",
            "add",
            "engineering",
            "--channel",
            channel,
            "--project",
            "SUP=ENG",
            "--signatures",
            "off",
        ],
    );
    w.escalate("Printer on fire");
}

#[test]
fn a_channel_with_a_working_tree_says_it_must_be_bare() {
    let w = World::new();
    git(w.root.path(), &["init", "-q", "worktree-repo"]);
    site_with_channel(&w, "../worktree-repo");
    for args in [&["sync"][..], &["doctor"][..]] {
        let run = w.ferry("support", args);
        let all = format!("{}\n{}", run.stdout, run.stderr);
        assert_ne!(run.code, 0, "{all}");
        assert!(all.contains("working tree"), "{args:?}: {all}");
        assert!(all.contains("git init --bare"), "{args:?}: {all}");
        assert!(!all.contains("not a repository"), "{args:?}: {all}");
    }
}

#[test]
fn a_channel_that_is_a_plain_folder_says_it_must_be_a_bare_repository() {
    let w = World::new();
    std::fs::create_dir_all(w.path("plain")).unwrap();
    site_with_channel(&w, "../plain");
    for args in [&["sync"][..], &["doctor"][..]] {
        let run = w.ferry("support", args);
        let all = format!("{}\n{}", run.stdout, run.stderr);
        assert_ne!(run.code, 0, "{all}");
        assert!(all.contains("not a git repository"), "{args:?}: {all}");
        assert!(all.contains("git init --bare"), "{args:?}: {all}");
    }
}

/// Bundle files directly in `dir`, by name.
fn bundle_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".bundle"))
        .collect();
    names.sort();
    names
}

#[test]
fn a_bundle_whose_predecessor_never_comes_is_a_silent_link() {
    let mut w = World::new();
    w.now = Some("2026-11-20T10:00:00Z");
    let inbox = w.path("usb/support-to-engineering");
    super::bundles::bundle_site(&w, "support", "engineering", "SUP=ENG", "labels = escalate");
    super::bundles::bundle_site(&w, "engineering", "support", "ENG=SUP", "");
    let file = w.path("engineering/connections/support.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{text}stale_after_hours: 48\n")).unwrap();
    w.ok("engineering", &["sync"]);

    // The first bundle is lost on the way; the second, made by hand after it,
    // needs it.
    let key = w.escalate("Printer on fire");
    w.ok("support", &["sync"]);
    let first = bundle_files(&inbox);
    assert_eq!(first.len(), 1, "{first:?}");
    std::fs::rename(inbox.join(&first[0]), w.path("lost.bundle")).unwrap();
    let after = git(
        &w.path("support/.ferry/exchange.git"),
        &["rev-parse", "support/engineering"],
    );
    w.ok("support", &["tracker", "edit", &key, "--summary", "Smoke"]);
    w.ok("support", &["export"]);
    w.ok(
        "support",
        &[
            "bundle",
            "create",
            "--connection",
            "engineering",
            "--out",
            "../usb/support-to-engineering/later.bundle",
            "--after",
            after.trim(),
        ],
    );
    let second = &"later.bundle".to_string();

    w.now = Some("2026-11-20T11:00:00Z");
    let out = w.ok("engineering", &["sync"]);
    assert!(out.contains(second.as_str()), "{out}");
    let status = w.ok("engineering", &["status"]);
    let line = status
        .lines()
        .find(|l| l.trim_start().starts_with("waiting"))
        .unwrap_or_else(|| panic!("status does not show it:\n{status}"));
    assert!(line.contains(second.as_str()), "{line}");
    let json = w.ok("engineering", &["status", "--json"]);
    assert!(json.contains("waiting_bundles"), "{json}");
    let doctor = w.ferry("engineering", &["doctor"]);
    assert_eq!(
        doctor.code, 0,
        "a warning, not a failure:\n{}",
        doctor.stdout
    );
    assert!(
        doctor
            .stdout
            .lines()
            .any(|l| l.starts_with("WARN") && l.contains(second.as_str())),
        "{}",
        doctor.stdout
    );

    // Past stale_after_hours, the silence error names the waiting bundle.
    w.now = Some("2026-11-23T11:00:00Z");
    w.ferry("engineering", &["sync"]);
    let errors = w.ok("engineering", &["errors"]);
    assert!(errors.contains("nothing has arrived"), "{errors}");
    assert!(errors.contains(second.as_str()), "{errors}");
}

/// The other side of a foreign commit: the site that receives the branch
/// refuses it on every run, and its doctor says so too.
#[test]
fn doctor_names_a_commit_on_the_peer_branch_that_this_site_refuses() {
    let (w, _url, _daemon, _key) = pair_via(Via::Path);
    w.ok("support", &["sync"]);
    let forged = forge(
        &w.path("exchange.git"),
        "engineering/support",
        &[("issues/ENG/5.yaml", &eng_replica("5", "Planted", None))],
        None,
    );
    assert_eq!(w.ferry("support", &["sync"]).code, 3);
    let doctor = w.ferry("support", &["doctor"]);
    assert_eq!(doctor.code, 1, "{}", doctor.stdout);
    let line = doctor
        .stdout
        .lines()
        .find(|l| l.starts_with("FAIL") && l.contains(&forged))
        .unwrap_or_else(|| panic!("no failing line names it:\n{}", doctor.stdout));
    assert!(line.contains("it is not signed"), "{line}");
}

/// Review shows the refusal the import would make, not a change to apply.
#[test]
fn review_shows_a_claim_on_an_issue_never_shared_as_refused() {
    let (w, _shared, private) = pair_with_private_issue();
    let id = local_id(&w, "support", &private);
    claim_as_engineering(&w, &id);
    w.ok("support", &["pull"]);
    let run = w.ferry("support", &["review"]);
    let all = format!("{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.code, 0, "review lists it among the rest:\n{all}");
    assert!(
        run.stdout.contains("never shared with engineering"),
        "{all}"
    );
    assert!(!all.contains(&format!("→ {private}")), "{all}");
}
