//! Signed commits and trust: the real `git verify-commit` and `ssh-keygen` accept
//! what ferry signs, and a commit that is unsigned, signed by an unknown key or
//! altered is refused before anything is imported.

use std::process::{Command, Stdio};

use super::bad_input::ssh_key;
use super::{World, git};

/// support ↔ engineering, keys exchanged by the harness.
fn two_sites() -> World {
    let w = World::new();
    w.site(
        "support",
        &[("engineering", "SUP=ENG", "labels = escalate")],
    );
    w.site("engineering", &[("support", "ENG=SUP", "")]);
    w
}

/// `git verify-commit` with `gpg.format=ssh` and `signers` as allowed signers
/// file; returns whether git accepted and what it said.
fn git_verify(w: &World, signers: &str, commit: &str) -> (bool, String) {
    let out = Command::new("git")
        .current_dir(w.path("exchange.git"))
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .args([
            "-c",
            "gpg.format=ssh",
            "-c",
            &format!("gpg.ssh.allowedSignersFile={}", w.path(signers).display()),
            "verify-commit",
            "-v",
            commit,
        ])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The local exchange clone's peer branch at `site`, `None` when absent.
fn local_peer_branch(w: &World, site: &str, branch: &str) -> Option<String> {
    let out = Command::new("git")
        .current_dir(w.path(&format!("{site}/.ferry/exchange.git")))
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .args(["rev-parse", "--verify", "-q", branch])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn git_verify_commit_and_ssh_keygen_accept_every_commit_ferry_makes() {
    let w = two_sites();
    w.new_issue(
        "support",
        &[
            "--project",
            "SUP",
            "--summary",
            "Signed",
            "--label",
            "escalate",
        ],
    );
    w.ok("support", &["sync"]);
    w.ok("engineering", &["sync"]);
    w.ok("engineering", &["tracker", "comment", "ENG-1", "Seen."]);
    w.ok("engineering", &["sync"]);
    w.ok("support", &["sync"]);

    let mut checked = 0;
    for (branch, signers) in [
        (
            "support/engineering",
            "engineering/connections/support.allowed_signers",
        ),
        (
            "engineering/support",
            "support/connections/engineering.allowed_signers",
        ),
    ] {
        let owner = branch.split('/').next().unwrap();
        for commit in git(&w.path("exchange.git"), &["rev-list", branch]).lines() {
            let (ok, said) = git_verify(&w, signers, commit);
            assert!(ok, "{branch} {commit}: {said}");
            assert!(
                said.contains(&format!("Good \"git\" signature for {owner}")),
                "{said}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 3, "{checked}");

    // ssh-keygen checks a signature on its own, with the payload git would give it.
    let raw = git(
        &w.path("exchange.git"),
        &["cat-file", "commit", "support/engineering"],
    );
    let (signature, payload) = split_signature(&raw);
    std::fs::write(w.path("commit.sig"), signature).unwrap();
    let mut keygen = Command::new("ssh-keygen")
        .args(["-Y", "check-novalidate", "-n", "git", "-s"])
        .arg(w.path("commit.sig"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    keygen
        .stdin
        .take()
        .unwrap()
        .write_all(payload.as_bytes())
        .unwrap();
    let out = keygen.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The other site's key is not support's: git refuses it as support's signer.
    let (ok, said) = git_verify(
        &w,
        "engineering/connections/support.allowed_signers",
        "engineering/support",
    );
    assert!(!ok, "{said}");
}

/// Splits a raw commit into its armored `gpgsig` and the rest, which is what
/// the signature covers.
fn split_signature(raw: &str) -> (String, String) {
    let mut signature = String::new();
    let mut payload = String::new();
    let mut in_sig = false;
    let mut in_headers = true;
    for line in raw.split_inclusive('\n') {
        if in_headers && let Some(first) = line.strip_prefix("gpgsig ") {
            signature.push_str(first);
            in_sig = true;
        } else if in_sig && let Some(more) = line.strip_prefix(' ') {
            signature.push_str(more);
        } else {
            in_sig = false;
            if line == "\n" {
                in_headers = false;
            }
            payload.push_str(line);
        }
    }
    (signature, payload)
}

#[test]
fn key_show_and_connection_trust() {
    let w = World::new();
    w.site("support", &[("engineering", "SUP=ENG", "")]);
    let shown = w.ok("support", &["key", "show"]);
    assert_eq!(shown.lines().count(), 1, "{shown}");
    assert!(shown.starts_with("ssh-ed25519 AAAA"), "{shown}");
    assert!(shown.trim_end().ends_with("ferry@support"), "{shown}");
    assert_eq!(
        shown,
        std::fs::read_to_string(w.path("support/.ferry/signing_key.pub")).unwrap()
    );
    // init again keeps the key: peers trust it.
    let again = w.ok("support", &["init", "--site", "support"]);
    assert!(again.contains("kept    signing key"), "{again}");
    assert_eq!(w.ok("support", &["key", "show"]), shown);

    let list = w.ok("support", &["connection", "list"]);
    assert!(list.contains("trusts no key"), "{list}");

    // A .pub file made by ssh-keygen, then the same key again as text.
    let key = ssh_key(&w, "engineering.key");
    let out = w.ok(
        "support",
        &["connection", "trust", "engineering", &format!("{key}.pub")],
    );
    assert!(out.contains("now trusts SHA256:"), "{out}");
    let text = std::fs::read_to_string(format!("{key}.pub")).unwrap();
    let out = w.ok(
        "support",
        &["connection", "trust", "engineering", text.trim()],
    );
    assert!(out.contains("already trusted"), "{out}");
    let signers =
        std::fs::read_to_string(w.path("support/connections/engineering.allowed_signers")).unwrap();
    assert_eq!(
        signers.lines().filter(|l| !l.starts_with('#')).count(),
        1,
        "{signers}"
    );
    assert!(
        signers.contains("engineering namespaces=\"git\" ssh-ed25519 "),
        "{signers}"
    );
    let list = w.ok("support", &["connection", "list"]);
    assert!(list.contains("trusts 1 key"), "{list}");

    for (args, needle) in [
        (
            vec!["connection", "trust", "engineering", "ssh-ed25519 garbage"],
            "ferry key show",
        ),
        (
            vec!["connection", "trust", "lab", text.trim()],
            "no connection to \"lab\"",
        ),
    ] {
        let run = w.ferry("support", &args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(needle), "{}", run.stderr);
    }
}

#[test]
fn a_missing_key_is_a_configuration_error_saying_how_to_fix_it() {
    let w = World::new();
    w.site("support", &[]);
    std::fs::remove_file(w.path("support/.ferry/signing_key")).unwrap();
    let run = w.ferry("support", &["sync"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("signing_key"), "{}", run.stderr);
    assert!(run.stderr.contains("ferry init"), "{}", run.stderr);
    // init makes a new one (the peers must then trust the new key).
    let out = w.ok("support", &["init", "--site", "support"]);
    assert!(out.contains("created signing key"), "{out}");
}

/// A clone of the exchange repo on engineering's branch for support, where a
/// hostile writer commits with the git CLI.
fn hostile(w: &World) -> std::path::PathBuf {
    let work = w.path("mallory");
    git(w.root.path(), &["clone", "-q", "exchange.git", "mallory"]);
    git(&work, &["checkout", "-q", "-b", "engineering/support"]);
    work
}

const REPLICA: &str = "ferry: 1\nsite: engineering\nid: '7'\nkey: ENG-7\nproject: ENG\ntype: Bug\nsummary: Forged\nstatus: Open\ncreated: 2026-11-20T10:00:00Z\nupdated: 2026-11-20T10:00:00Z\n";

/// Commits a replica in `work`, signed by git with the SSH key `signing_key`
/// when given, pushes it (forced) to the channel, returns the commit id.
fn push_replica(work: &std::path::Path, signing_key: Option<&str>) -> String {
    std::fs::create_dir_all(work.join("issues/ENG")).unwrap();
    std::fs::write(work.join("issues/ENG/7.yaml"), REPLICA).unwrap();
    git(work, &["add", "-A"]);
    let mut args = vec!["commit", "-q"];
    if let Some(key) = signing_key {
        git(work, &["config", "gpg.format", "ssh"]);
        git(work, &["config", "user.signingkey", key]);
        args.push("-S");
    }
    args.extend_from_slice(&["-m", "peer", "-m", "Ferry-Branch: engineering/support"]);
    git(work, &args);
    git(
        work,
        &["push", "-q", "--force", "origin", "engineering/support"],
    );
    git(work, &["rev-parse", "HEAD"]).trim().to_string()
}

/// Support syncs and must refuse `commit` (named in the report) with nothing
/// imported and its copy of engineering's branch unchanged.
fn assert_refused(w: &World, commit: &str, why: &str) {
    let before = local_peer_branch(w, "support", "engineering/support");
    let run = w.ferry("support", &["sync"]);
    let all = format!("{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.code, 3, "a refused connection exits 3:\n{all}");
    assert!(all.contains(commit), "commit {commit} not named:\n{all}");
    assert!(all.contains(why), "{why:?} not said:\n{all}");
    assert!(all.contains("nothing was imported"), "{all}");
    assert_eq!(
        local_peer_branch(w, "support", "engineering/support"),
        before
    );
    assert!(w.list("support").is_empty(), "nothing imported");
    let errors = w.ok("support", &["errors"]);
    assert!(errors.contains(commit), "{errors}");
}

#[test]
fn an_unsigned_commit_is_refused_and_nothing_imported() {
    let w = two_sites();
    let work = hostile(&w);
    let commit = push_replica(&work, None);
    assert_refused(&w, &commit, "it is not signed");
}

#[test]
fn a_commit_signed_by_an_unknown_key_is_refused() {
    let w = two_sites();
    let work = hostile(&w);
    let key = ssh_key(&w, "mallory.key");
    let commit = push_replica(&work, Some(&key));
    let raw = git(&work, &["cat-file", "commit", "HEAD"]);
    assert!(raw.contains("-----BEGIN SSH SIGNATURE-----"), "{raw}");
    assert_refused(&w, &commit, "a key this connection does not trust");
}

#[test]
fn a_tampered_commit_is_refused() {
    let w = two_sites();
    // A genuine engineering commit, then its message altered on the channel with
    // the signature kept.
    w.new_issue("engineering", &["--project", "ENG", "--summary", "Real"]);
    w.ok("engineering", &["export"]);
    w.ok("engineering", &["push"]);
    let bare = w.path("exchange.git");
    let raw = git(&bare, &["cat-file", "commit", "engineering/support"]);
    let altered = raw.replace("engineering → support", "engineering -> support");
    assert_ne!(raw, altered);
    std::fs::write(w.path("altered"), altered).unwrap();
    let tampered = git(
        &bare,
        &[
            "hash-object",
            "-t",
            "commit",
            "-w",
            w.path("altered").to_str().unwrap(),
        ],
    )
    .trim()
    .to_string();
    git(
        &bare,
        &["update-ref", "refs/heads/engineering/support", &tampered],
    );
    assert_refused(&w, &tampered, "does not match its content");
}

#[test]
fn a_connection_that_trusts_no_key_says_how_to_trust_one() {
    let w = World::new();
    w.site("engineering", &[("support", "ENG=SUP", "")]);
    w.new_issue("engineering", &["--project", "ENG", "--summary", "Hello"]);
    w.ok("engineering", &["sync"]);
    std::fs::create_dir_all(w.path("support")).unwrap();
    w.ok("support", &["init", "--site", "support"]);
    w.ok(
        "support",
        &[
            "connection",
            "add",
            "engineering",
            "--channel",
            "../exchange.git",
            "--project",
            "SUP=ENG",
        ],
    );
    let run = w.ferry("support", &["sync"]);
    assert_eq!(run.code, 3, "{}\n{}", run.stdout, run.stderr);
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(
        all.contains("ferry connection trust engineering KEY"),
        "{all}"
    );
    assert!(all.contains("ferry key show"), "{all}");
    assert!(w.list("support").is_empty());

    // What the message says works.
    w.trust("support", "engineering");
    w.ok("support", &["sync"]);
    assert_eq!(w.list("support").len(), 1);
}

#[test]
fn signatures_off_is_an_explicit_opt_out_for_labs() {
    let w = World::new();
    std::fs::create_dir_all(w.path("support")).unwrap();
    w.ok("support", &["init", "--site", "support"]);
    w.ok(
        "support",
        &[
            "connection",
            "add",
            "engineering",
            "--channel",
            "../exchange.git",
            "--project",
            "SUP=ENG",
            "--signatures",
            "off",
        ],
    );
    let yaml = std::fs::read_to_string(w.path("support/connections/engineering.yaml")).unwrap();
    assert!(yaml.contains("signatures: off"), "{yaml}");
    let list = w.ok("support", &["connection", "list"]);
    assert!(list.contains("signatures off"), "{list}");
    let work = hostile(&w);
    push_replica(&work, None);
    w.ok("support", &["sync"]);
    assert_eq!(w.list("support").len(), 1);
}

#[test]
fn a_key_named_in_ferry_yaml_is_used_and_never_created() {
    let w = World::new();
    w.site("support", &[]);
    let key = ssh_key(&w, "own.key");
    let config = std::fs::read_to_string(w.path("support/ferry.yaml")).unwrap();
    std::fs::write(
        w.path("support/ferry.yaml"),
        format!("{config}\nsigning_key: ../own.key\n"),
    )
    .unwrap();
    assert_eq!(
        w.ok("support", &["key", "show"]),
        std::fs::read_to_string(format!("{key}.pub")).unwrap()
    );

    // A named key that does not exist is the admin's to provide: init refuses
    // instead of creating a key where it was pointed.
    std::fs::write(
        w.path("support/ferry.yaml"),
        format!("{config}\nsigning_key: ../absent.key\n"),
    )
    .unwrap();
    let run = w.ferry("support", &["init", "--site", "support"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("absent.key"), "{}", run.stderr);
    assert!(!w.path("absent.key").exists());
}
