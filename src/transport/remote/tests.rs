use super::*;
use crate::exchange::FileWrite;
use crate::signing::{AdmitError, Refusal, SignaturePolicy, SiteKey};
use crate::transport::testing::replica_yaml;
use ssh_key::HashAlg;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SUPPORT: &str = "support";
const ENGINEERING: &str = "engineering";

/// A hermetic `git` CLI command: no user or system config, fixed identity.
fn git_command(dir: &Path) -> Command {
    let mut command = Command::new("git");
    command
        .arg("-C")
        .arg(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Mallory")
        .env("GIT_AUTHOR_EMAIL", "mallory@example.invalid")
        .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
        .env("GIT_COMMITTER_NAME", "Mallory")
        .env("GIT_COMMITTER_EMAIL", "mallory@example.invalid")
        .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z");
    command
}

/// Runs the git CLI in `dir` and returns its trimmed stdout.
fn git_cli(dir: &Path, args: &[&str]) -> String {
    let out = git_command(dir).args(args).output().expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A commit made in `repo` by git itself, signed with support's key for its
/// branch for engineering: support's own commit, made on another machine.
fn own_commit_tree(repo: &Path, root: &Path, tree: &str, parent: &str, subject: &str) -> String {
    let key = root.join(SUPPORT).join("signing_key");
    git_cli(
        repo,
        &[
            "-c",
            "gpg.format=ssh",
            "-c",
            &format!("user.signingkey={}", key.display()),
            "commit-tree",
            "-S",
            tree,
            "-p",
            parent,
            "-m",
            &format!("{subject}\n\nFerry-Branch: {SUPPORT}/{ENGINEERING}"),
        ],
    )
}

/// [`git_cli`] with `input` on standard input (hash-object, mktree).
fn git_cli_with_input(dir: &Path, args: &[&str], input: &str) -> String {
    use std::io::Write;
    let mut child = git_command(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("git runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Two sites, each with its exchange repo, and a bare channel made by `git`.
struct World {
    root: tempfile::TempDir,
    support: Exchange,
    engineering: Exchange,
    /// The key support signs with, as engineering trusts it.
    support_key: SiteKey,
    /// What engineering trusts on its connection to support.
    engineering_trusts: Trust,
    /// What support trusts on its connection to engineering.
    support_trusts: Trust,
}

/// A site's exchange, signing with a new key.
fn signing_site(root: &Path, site: &str) -> (Exchange, SiteKey) {
    let key = SiteKey::generate(&root.join(site).join("signing_key"), site).unwrap();
    let mut exchange = Exchange::open_or_init(&root.join(site).join("exchange.git")).unwrap();
    exchange.sign_with(key.clone());
    (exchange, key)
}

/// A connection's trust in exactly `keys`.
fn trusting(root: &Path, peer: &str, keys: &[&SiteKey]) -> Trust {
    Trust {
        peer: peer.to_string(),
        file: root.join(format!("{peer}.allowed_signers")),
        policy: SignaturePolicy::Required,
        keys: keys.iter().map(|k| k.public_key()).collect(),
    }
}

impl World {
    fn new() -> World {
        let root = tempfile::tempdir().unwrap();
        git_cli(root.path(), &["init", "--bare", "-q", "exchange.git"]);
        let (support, support_key) = signing_site(root.path(), SUPPORT);
        let (engineering, engineering_key) = signing_site(root.path(), ENGINEERING);
        let engineering_trusts = trusting(root.path(), SUPPORT, &[&support_key]);
        let support_trusts = trusting(root.path(), ENGINEERING, &[&engineering_key]);
        World {
            root,
            support,
            engineering,
            support_key,
            engineering_trusts,
            support_trusts,
        }
    }

    fn bare(&self) -> PathBuf {
        self.root.path().join("exchange.git")
    }

    /// The channel as a site configures it: relative to its own folder.
    fn channel(&self, site: &str) -> GitRemote {
        GitRemote::new("../exchange.git", &self.root.path().join(site))
    }
}

/// Support exports one issue revision to engineering.
fn export(exchange: &Exchange, summary: &str) -> Oid {
    exchange
        .commit(
            &own_branch(SUPPORT, ENGINEERING),
            &[FileWrite {
                path: "issues/SUP/1.yaml".into(),
                content: Some(crate::exchange::Content::Bytes(replica_yaml(
                    SUPPORT, "SUP", "1", summary,
                ))),
            }],
            &format!("export: {summary}"),
            SUPPORT,
        )
        .unwrap()
        .expect("a new commit")
}

#[test]
fn push_then_fetch_carries_history() {
    let w = World::new();
    let branch = own_branch(SUPPORT, ENGINEERING);
    let c1 = export(&w.support, "v1");
    let c2 = export(&w.support, "v2");
    let to_channel = w.channel(SUPPORT);
    assert_eq!(to_channel.describe(), "../exchange.git");
    assert_eq!(
        to_channel
            .push(&w.support, SUPPORT, ENGINEERING, None)
            .unwrap(),
        PushOutcome::Pushed(c2)
    );
    assert_eq!(git_cli(&w.bare(), &["rev-parse", &branch]), c2.to_string());
    assert_eq!(
        to_channel
            .push(&w.support, SUPPORT, ENGINEERING, None)
            .unwrap(),
        PushOutcome::UpToDate
    );

    let from_channel = w.channel(ENGINEERING);
    let got = from_channel
        .fetch(&w.engineering, ENGINEERING, SUPPORT, &w.engineering_trusts)
        .unwrap();
    assert_eq!(
        got,
        FetchOutcome {
            before: None,
            after: Some(c2),
            notes: Vec::new(),
            waiting: Vec::new(),
        }
    );
    assert_eq!(w.engineering.commits_between(None, c2).unwrap(), [c1, c2]);
    let (_, bytes) = w
        .engineering
        .read_file(c2, "issues/SUP/1.yaml")
        .unwrap()
        .unwrap();
    assert_eq!(bytes, replica_yaml(SUPPORT, "SUP", "1", "v2"));
    // Nothing new: before = after.
    let again = from_channel
        .fetch(&w.engineering, ENGINEERING, SUPPORT, &w.engineering_trusts)
        .unwrap();
    assert_eq!(
        again,
        FetchOutcome {
            before: Some(c2),
            after: Some(c2),
            notes: Vec::new(),
            waiting: Vec::new(),
        }
    );

    // A later export fast-forwards.
    let c3 = export(&w.support, "v3");
    to_channel
        .push(&w.support, SUPPORT, ENGINEERING, None)
        .unwrap();
    let next = from_channel
        .fetch(&w.engineering, ENGINEERING, SUPPORT, &w.engineering_trusts)
        .unwrap();
    assert_eq!(
        next,
        FetchOutcome {
            before: Some(c2),
            after: Some(c3),
            notes: Vec::new(),
            waiting: Vec::new(),
        }
    );
    assert_eq!(w.engineering.resolve(&branch).unwrap(), Some(c3));
}

/// Support shares v1 and engineering fetches it: the known starting point of
/// the refusal tests.
fn fetched_once(w: &World) -> Oid {
    let c1 = export(&w.support, "v1");
    w.channel(SUPPORT)
        .push(&w.support, SUPPORT, ENGINEERING, None)
        .unwrap();
    w.channel(ENGINEERING)
        .fetch(&w.engineering, ENGINEERING, SUPPORT, &w.engineering_trusts)
        .unwrap();
    c1
}

/// The bare channel opened as an exchange that signs with `key`: what someone
/// with write access to the channel and that key can make there.
fn channel_signing_as(w: &World, key: &SiteKey) -> Exchange {
    let mut channel = Exchange::open_or_init(&w.bare()).unwrap();
    channel.sign_with(key.clone());
    channel
}

/// An unsigned commit on top of `parent` in the channel, made by the git CLI
/// with a message naming the right branch.
fn unsigned_commit(w: &World, parent: Oid) -> String {
    let tree = git_cli(&w.bare(), &["rev-parse", &format!("{parent}^{{tree}}")]);
    git_cli(
        &w.bare(),
        &[
            "commit-tree",
            &tree,
            "-p",
            &parent.to_string(),
            "-m",
            "forged\n\nFerry-Branch: support/engineering",
        ],
    )
}

/// Engineering fetches `tip` from the channel and must refuse it because of
/// `culprit`; the peer branch stays at `known`, the tip is kept for inspection.
fn assert_refused(w: &World, known: Oid, tip: &str, culprit: &str) -> Refusal {
    let branch = own_branch(SUPPORT, ENGINEERING);
    git_cli(&w.bare(), &["update-ref", &branch, tip]);
    let err = w
        .channel(ENGINEERING)
        .fetch(&w.engineering, ENGINEERING, SUPPORT, &w.engineering_trusts)
        .unwrap_err();
    let message = err.to_string();
    let TransportError::Refused { source, .. } = err else {
        panic!("not a refusal: {message}");
    };
    let crate::transport::AdmitError::Signature(signature) = *source else {
        panic!("not a signature refusal: {message}");
    };
    let AdmitError::Refused { commit, reason, .. } = *signature else {
        panic!("not a refused commit: {message}");
    };
    assert_eq!(commit.to_string(), culprit, "{message}");
    assert!(message.contains(culprit), "the commit is named: {message}");
    assert!(message.contains("nothing was imported"), "{message}");
    assert_eq!(w.engineering.resolve(&branch).unwrap(), Some(known));
    assert_eq!(
        w.engineering
            .resolve(&format!("refs/ferry/fetched/{SUPPORT}"))
            .unwrap()
            .map(|o| o.to_string())
            .as_deref(),
        Some(tip)
    );
    reason
}

#[test]
fn an_unsigned_commit_is_refused() {
    let w = World::new();
    let c1 = fetched_once(&w);
    let forged = unsigned_commit(&w, c1);
    assert_eq!(assert_refused(&w, c1, &forged, &forged), Refusal::Unsigned);
}

#[test]
fn a_commit_signed_by_an_untrusted_key_is_refused() {
    let w = World::new();
    let c1 = fetched_once(&w);
    let mallory = SiteKey::generate(&w.root.path().join("mallory"), "mallory").unwrap();
    let channel = channel_signing_as(&w, &mallory);
    let forged = channel
        .commit(
            &own_branch(SUPPORT, ENGINEERING),
            &[FileWrite {
                path: "issues/SUP/1.yaml".into(),
                content: Some(crate::exchange::Content::Bytes(b"forged".to_vec())),
            }],
            "export: forged",
            SUPPORT,
        )
        .unwrap()
        .unwrap()
        .to_string();
    let reason = assert_refused(&w, c1, &forged, &forged);
    let Refusal::UnknownSigner { fingerprint, .. } = reason else {
        panic!("{reason}");
    };
    assert_eq!(
        fingerprint,
        mallory
            .public_key()
            .fingerprint(HashAlg::Sha256)
            .to_string()
    );
}

#[test]
fn a_tampered_commit_is_refused() {
    let w = World::new();
    let c1 = fetched_once(&w);
    let c2 = export(&w.support, "v2");
    w.channel(SUPPORT)
        .push(&w.support, SUPPORT, ENGINEERING, None)
        .unwrap();
    // The signature is kept, the message changed: what an edit of the object
    // on the server would look like.
    let raw = git_cli(&w.bare(), &["cat-file", "commit", &c2.to_string()]);
    let altered = raw.replace("export: v2", "export: v3");
    assert_ne!(raw, altered);
    let tampered = git_cli_with_input(
        &w.bare(),
        &["hash-object", "-t", "commit", "-w", "--stdin"],
        &format!("{altered}\n"),
    );
    assert_eq!(
        assert_refused(&w, c1, &tampered, &tampered),
        Refusal::BadSignature
    );
}

#[test]
fn a_genuine_commit_for_another_branch_is_refused() {
    let w = World::new();
    let c1 = fetched_once(&w);
    // Support's own, correctly signed commit for another peer, moved onto the
    // branch it shares with engineering.
    let channel = channel_signing_as(&w, &w.support_key);
    let lab = own_branch(SUPPORT, "lab");
    channel.set_ref(&lab, c1, "test").unwrap();
    let other = channel
        .commit(
            &lab,
            &[FileWrite {
                path: "issues/SUP/1.yaml".into(),
                content: Some(crate::exchange::Content::Bytes(b"for the lab".to_vec())),
            }],
            "export: lab",
            SUPPORT,
        )
        .unwrap()
        .unwrap()
        .to_string();
    assert_eq!(
        assert_refused(&w, c1, &other, &other),
        Refusal::WrongBranch {
            named: Some("support/lab".into())
        }
    );
}

#[test]
fn a_signed_merge_of_an_unsigned_commit_is_refused_by_the_unsigned_one() {
    let w = World::new();
    let c1 = fetched_once(&w);
    let unsigned = unsigned_commit(&w, c1);
    let channel = channel_signing_as(&w, &w.support_key);
    let merge = channel
        .merge_keep_ours(
            &own_branch(SUPPORT, ENGINEERING),
            Oid::from_str(&unsigned).unwrap(),
            "merge",
            SUPPORT,
        )
        .unwrap()
        .to_string();
    assert_eq!(assert_refused(&w, c1, &merge, &unsigned), Refusal::Unsigned);
}

#[test]
fn trusting_no_key_admits_nothing_unless_signatures_are_off() {
    let w = World::new();
    let c1 = export(&w.support, "v1");
    w.channel(SUPPORT)
        .push(&w.support, SUPPORT, ENGINEERING, None)
        .unwrap();
    let nobody = trusting(w.root.path(), SUPPORT, &[]);
    let err = w
        .channel(ENGINEERING)
        .fetch(&w.engineering, ENGINEERING, SUPPORT, &nobody)
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("ferry connection trust support KEY"),
        "{message}"
    );
    assert!(message.contains("signatures: off"), "{message}");
    assert_eq!(
        w.engineering
            .resolve(&own_branch(SUPPORT, ENGINEERING))
            .unwrap(),
        None
    );

    // A lab connection that opted out takes even an unsigned commit.
    let unsigned = unsigned_commit(&w, c1);
    git_cli(
        &w.bare(),
        &["update-ref", &own_branch(SUPPORT, ENGINEERING), &unsigned],
    );
    let off = Trust {
        policy: SignaturePolicy::Off,
        ..nobody
    };
    let got = w
        .channel(ENGINEERING)
        .fetch(&w.engineering, ENGINEERING, SUPPORT, &off)
        .unwrap();
    assert_eq!(got.after.map(|o| o.to_string()), Some(unsigned));
}

#[test]
fn nothing_to_send_or_receive_yet() {
    let w = World::new();
    let channel = w.channel(SUPPORT);
    assert_eq!(
        channel
            .push(&w.support, SUPPORT, ENGINEERING, None)
            .unwrap(),
        PushOutcome::UpToDate
    );
    assert_eq!(
        channel
            .fetch(&w.support, SUPPORT, ENGINEERING, &w.support_trusts)
            .unwrap(),
        FetchOutcome {
            before: None,
            after: None,
            notes: Vec::new(),
            waiting: Vec::new(),
        }
    );
}

#[test]
fn missing_local_channel_says_how_to_create_it() {
    let w = World::new();
    let channel = GitRemote::new("nowhere.git", w.root.path());
    let err = channel
        .fetch(&w.support, SUPPORT, ENGINEERING, &w.support_trusts)
        .unwrap_err();
    let expected = w.root.path().join("nowhere.git");
    assert_eq!(
        err.to_string(),
        format!(
            "exchange repository {} not found; create it with `git init --bare {}`",
            expected.display(),
            expected.display()
        )
    );
    assert!(matches!(
        channel.push(&w.support, SUPPORT, ENGINEERING, None),
        Err(TransportError::NotFound { .. })
    ));
}

#[test]
fn file_url_works_too() {
    let w = World::new();
    let url = format!("file://{}", w.bare().display());
    let channel = GitRemote::new(&url, Path::new("/unused"));
    let c1 = export(&w.support, "v1");
    assert_eq!(
        channel
            .push(&w.support, SUPPORT, ENGINEERING, None)
            .unwrap(),
        PushOutcome::Pushed(c1)
    );
    let got = channel
        .fetch(&w.engineering, ENGINEERING, SUPPORT, &w.engineering_trusts)
        .unwrap();
    assert_eq!(got.after, Some(c1));
}

#[test]
fn rewritten_peer_history_is_refused() {
    let w = World::new();
    let branch = own_branch(SUPPORT, ENGINEERING);
    let c1 = export(&w.support, "v1");
    w.channel(SUPPORT)
        .push(&w.support, SUPPORT, ENGINEERING, None)
        .unwrap();
    let from_channel = w.channel(ENGINEERING);
    from_channel
        .fetch(&w.engineering, ENGINEERING, SUPPORT, &w.engineering_trusts)
        .unwrap();

    // Someone rewrites the branch: a parentless commit with other content,
    // force-pushed with the real git CLI.
    let support_repo = w.support.repo().path().to_path_buf();
    let blob = git_cli_with_input(&support_repo, &["hash-object", "-w", "--stdin"], "forged");
    let tree = git_cli_with_input(
        &support_repo,
        &["mktree"],
        &format!("100644 blob {blob}\tforged.yaml\n"),
    );
    let forged = git_cli(&support_repo, &["commit-tree", &tree, "-m", "rewritten"]);
    git_cli(
        &support_repo,
        &[
            "push",
            "-q",
            "--force",
            &w.bare().display().to_string(),
            &format!("{forged}:{branch}"),
        ],
    );

    let err = from_channel
        .fetch(&w.engineering, ENGINEERING, SUPPORT, &w.engineering_trusts)
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, TransportError::Rewritten { .. }), "{message}");
    assert!(message.contains(SUPPORT), "{message}");
    assert!(
        message.contains(&forged) && message.contains(&c1.to_string()),
        "{message}"
    );
    assert_eq!(w.engineering.resolve(&branch).unwrap(), Some(c1));
    // The forged history was fetched for inspection, complete, beside it.
    let local = w.engineering.repo().path().to_path_buf();
    assert_eq!(
        git_cli(&local, &["rev-parse", "refs/ferry/fetched/support"]),
        forged
    );
    git_cli(&local, &["fsck", "--full", "--strict"]);
}

#[test]
fn moved_remote_is_merged_with_our_snapshot_winning() {
    let w = World::new();
    let branch = own_branch(SUPPORT, ENGINEERING);
    let c1 = export(&w.support, "v1");
    let channel = w.channel(SUPPORT);
    channel
        .push(&w.support, SUPPORT, ENGINEERING, None)
        .unwrap();

    // The channel moves behind our back (e.g. another machine of this site
    // pushed): a commit on top of c1 that this site does not have, made in the
    // bare repo by git and signed with this site's key.
    let bare = w.bare();
    let tree = git_cli(&bare, &["rev-parse", &format!("{c1}^{{tree}}")]);
    let theirs = own_commit_tree(&bare, w.root.path(), &tree, &c1.to_string(), "elsewhere");
    git_cli(&bare, &["update-ref", &branch, &theirs]);

    let c2 = export(&w.support, "v2");
    let PushOutcome::Pushed(merge) = channel
        .push(&w.support, SUPPORT, ENGINEERING, None)
        .unwrap()
    else {
        panic!("expected a push");
    };
    assert_ne!(merge, c2);
    assert_eq!(w.support.resolve(&branch).unwrap(), Some(merge));

    let parents = git_cli(&bare, &["log", "-1", "--format=%P", &branch]);
    assert_eq!(parents, format!("{c2} {theirs}"));
    let history = git_cli(&bare, &["log", "--format=%H", &branch]);
    assert!(
        history.contains(&c2.to_string()) && history.contains(&theirs),
        "{history}"
    );
    assert_eq!(
        git_cli(&bare, &["rev-parse", &format!("{branch}^{{tree}}")]),
        git_cli(&bare, &["rev-parse", &format!("{c2}^{{tree}}")])
    );
    let subject = git_cli(&bare, &["log", "-1", "--format=%s", &branch]);
    assert!(subject.contains("this site's snapshot wins"), "{subject}");
    git_cli(&bare, &["fsck", "--strict", "--no-dangling"]);
}

#[test]
fn a_moved_remote_holding_a_commit_not_ours_is_not_merged() {
    let w = World::new();
    let branch = own_branch(SUPPORT, ENGINEERING);
    let c1 = export(&w.support, "v1");
    let channel = w.channel(SUPPORT);
    channel
        .push(&w.support, SUPPORT, ENGINEERING, None)
        .unwrap();
    let bare = w.bare();
    let tree = git_cli(&bare, &["rev-parse", &format!("{c1}^{{tree}}")]);
    let theirs = git_cli(
        &bare,
        &["commit-tree", &tree, "-p", &c1.to_string(), "-m", "planted"],
    );
    git_cli(&bare, &["update-ref", &branch, &theirs]);
    let c2 = export(&w.support, "v2");
    let err = channel
        .push(&w.support, SUPPORT, ENGINEERING, None)
        .unwrap_err();
    let TransportError::ForeignOwnCommit { found, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(
        (found.commit.to_string(), found.tip.to_string()),
        (theirs.clone(), theirs.clone())
    );
    assert!(err.to_string().contains("it is not signed"), "{err}");
    assert_eq!(w.support.resolve(&branch).unwrap(), Some(c2));
    assert_eq!(git_cli(&bare, &["rev-parse", &branch]), theirs);
}

/// Writes replica `id` of each of `projects` with `summary` on support's
/// branch for engineering.
fn export_many(exchange: &Exchange, projects: &[&str], ids: &[&str], summary: &str) -> Oid {
    let writes: Vec<FileWrite> = projects
        .iter()
        .flat_map(|project| {
            ids.iter().map(move |id| FileWrite {
                path: format!("issues/{project}/{id}.yaml"),
                content: Some(crate::exchange::Content::Bytes(replica_yaml(
                    SUPPORT, project, id, summary,
                ))),
            })
        })
        .collect();
    exchange
        .commit(
            &own_branch(SUPPORT, ENGINEERING),
            &writes,
            &format!("export: {summary}"),
            SUPPORT,
        )
        .unwrap()
        .expect("a new commit")
}

/// The pack files of a repository.
fn packs(repo: &Path) -> std::collections::BTreeSet<PathBuf> {
    std::fs::read_dir(repo.join("objects/pack"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "idx"))
        .collect()
}

/// The objects of the one pack `repo` gained since `before`, as git lists them.
fn new_pack_objects(
    repo: &Path,
    before: &std::collections::BTreeSet<PathBuf>,
) -> std::collections::BTreeSet<String> {
    let new: Vec<PathBuf> = packs(repo).difference(before).cloned().collect();
    let [pack] = new.as_slice() else {
        panic!("expected one new pack in {}, got {new:?}", repo.display());
    };
    git_cli(repo, &["verify-pack", "-v", &pack.display().to_string()])
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|id| id.len() == 40 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_string)
        .collect()
}

/// What git says `to` has that `from` has not: `git rev-list --objects`.
fn git_new_objects(repo: &Path, from: Oid, to: Oid) -> std::collections::BTreeSet<String> {
    git_cli(
        repo,
        &[
            "rev-list",
            "--objects",
            &to.to_string(),
            &format!("^{from}"),
        ],
    )
    .lines()
    .map(|line| line.split_whitespace().next().unwrap().to_string())
    .collect()
}

#[test]
fn folder_transfers_send_exactly_what_git_says_is_new() {
    let w = World::new();
    let branch = own_branch(SUPPORT, ENGINEERING);
    let projects = ["OPS", "SUP", "WEB"];
    let c1 = export_many(&w.support, &projects, &["1", "2", "3"], "v1");
    let to_channel = w.channel(SUPPORT);
    let from_channel = w.channel(ENGINEERING);
    to_channel
        .push(&w.support, SUPPORT, ENGINEERING, None)
        .unwrap();
    from_channel
        .fetch(&w.engineering, ENGINEERING, SUPPORT, &w.engineering_trusts)
        .unwrap();

    // Two commits: one replica changed in one project, then one added in
    // another; the other project's tree is never read.
    let _ = export_many(&w.support, &["SUP"], &["2"], "v2");
    let c3 = export_many(&w.support, &["WEB"], &["4"], "v3");
    let bare = w.bare();
    let before = packs(&bare);
    assert_eq!(
        to_channel
            .push(&w.support, SUPPORT, ENGINEERING, None)
            .unwrap(),
        PushOutcome::Pushed(c3)
    );
    let expected = git_new_objects(&bare, c1, c3);
    // 2 commits, 2 root trees, 2 issues/ trees, SUP's and WEB's trees, 2 blobs.
    assert_eq!(expected.len(), 10, "{expected:?}");
    assert_eq!(new_pack_objects(&bare, &before), expected);

    let local = w.engineering.repo().path().to_path_buf();
    let before = packs(&local);
    let got = from_channel
        .fetch(&w.engineering, ENGINEERING, SUPPORT, &w.engineering_trusts)
        .unwrap();
    assert_eq!(got.after, Some(c3));
    assert_eq!(new_pack_objects(&local, &before), expected);
    for repo in [&bare, &local] {
        git_cli(repo, &["fsck", "--full", "--strict", "--no-dangling"]);
        assert_eq!(git_cli(repo, &["rev-parse", &branch]), c3.to_string());
    }
}

#[test]
fn a_push_that_lost_a_race_moves_nothing_and_then_reconciles() {
    let w = World::new();
    let branch = own_branch(SUPPORT, ENGINEERING);
    let c1 = export(&w.support, "v1");
    let remote = w.channel(SUPPORT);
    remote.push(&w.support, SUPPORT, ENGINEERING, None).unwrap();
    let bare = w.bare();
    let channel = Repository::open_bare(&bare).unwrap();

    // We read c1; then another push moves the branch before our
    // compare-and-swap: ours must fail and leave theirs.
    let tree = git_cli(&bare, &["rev-parse", &format!("{c1}^{{tree}}")]);
    let theirs = own_commit_tree(&bare, w.root.path(), &tree, &c1.to_string(), "x");
    git_cli(&bare, &["update-ref", &branch, &theirs]);
    let c2 = export(&w.support, "v2");
    pack::send(w.support.repo(), &[c1], c2, &channel, pack::Source::Own).unwrap();
    assert!(matches!(
        remote.move_folder_branch(&channel, &branch, Some(c1), c2),
        Ok(Attempt::Rejected(_))
    ));
    assert_eq!(git_cli(&bare, &["rev-parse", &branch]), theirs);

    // A branch created meanwhile, or locked by a push in progress, neither.
    let lab = own_branch(SUPPORT, "lab");
    git_cli(&bare, &["update-ref", &lab, &c1.to_string()]);
    assert!(matches!(
        remote.move_folder_branch(&channel, &lab, None, c2),
        Ok(Attempt::Rejected(_))
    ));
    assert_eq!(git_cli(&bare, &["rev-parse", &lab]), c1.to_string());
    let lock = bare.join(format!("{branch}.lock"));
    std::fs::write(&lock, format!("{c1}\n")).unwrap();
    let theirs_oid = Oid::from_str(&theirs).unwrap();
    assert!(matches!(
        remote.move_folder_branch(&channel, &branch, Some(theirs_oid), c2),
        Ok(Attempt::Rejected(_))
    ));
    assert_eq!(git_cli(&bare, &["rev-parse", &branch]), theirs);
    std::fs::remove_file(&lock).unwrap();

    // The push itself reconciles: both histories stay.
    let PushOutcome::Pushed(merge) = remote.push(&w.support, SUPPORT, ENGINEERING, None).unwrap()
    else {
        panic!("expected a push");
    };
    for kept in [theirs.clone(), c2.to_string()] {
        git_cli(
            &bare,
            &["merge-base", "--is-ancestor", &kept, &merge.to_string()],
        );
    }
    git_cli(&bare, &["fsck", "--full", "--strict", "--no-dangling"]);
}

#[test]
fn pushes_racing_from_two_clones_lose_no_commit() {
    let w = World::new();
    let branch = own_branch(SUPPORT, ENGINEERING);
    export(&w.support, "v0");
    w.channel(SUPPORT)
        .push(&w.support, SUPPORT, ENGINEERING, None)
        .unwrap();
    let root = w.root.path().to_path_buf();
    // Two machines of one site: one key.
    let key = root.join(SUPPORT).join("signing_key");
    // Both push at the same moment each round.
    let start = std::sync::Arc::new(std::sync::Barrier::new(2));
    let pushers: Vec<_> = ["first", "second"]
        .into_iter()
        .map(|name| {
            let root = root.clone();
            let branch = branch.clone();
            let start = start.clone();
            let key = key.clone();
            std::thread::spawn(move || {
                let mut exchange =
                    Exchange::open_or_init(&root.join(name).join("exchange.git")).unwrap();
                exchange.sign_with(SiteKey::load(&key).unwrap());
                let remote = GitRemote::new("../exchange.git", &root.join(name));
                remote
                    .fetch_into(exchange.repo(), &branch, &branch, None)
                    .unwrap();
                let mut tips = Vec::new();
                for round in 0..6 {
                    let tip = export(&exchange, &format!("{name} {round}"));
                    tips.push(tip);
                    start.wait();
                    // push() without its removal of a stale lock, which
                    // assumes one pusher per branch (the site lock).
                    for _ in 0..50 {
                        let tip = exchange.resolve(&branch).unwrap().unwrap();
                        match remote.push_once(&exchange, &branch, tip).unwrap() {
                            Attempt::Accepted | Attempt::UpToDate => break,
                            Attempt::Rejected(_) => remote
                                .reconcile(&exchange, SUPPORT, ENGINEERING, &branch, tip, None)
                                .unwrap(),
                        }
                    }
                }
                tips
            })
        })
        .collect();
    let tips: Vec<Oid> = pushers
        .into_iter()
        .flat_map(|pusher| pusher.join().unwrap())
        .collect();
    let bare = w.bare();
    let head = git_cli(&bare, &["rev-parse", &branch]);
    for tip in tips {
        git_cli(
            &bare,
            &["merge-base", "--is-ancestor", &tip.to_string(), &head],
        );
    }
    git_cli(&bare, &["fsck", "--full", "--strict", "--no-dangling"]);
}

/// A `git daemon` serving a folder, killed when dropped.
struct Daemon {
    child: Child,
    port: u16,
}

impl Daemon {
    fn start(base: &Path) -> Daemon {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = git_command(base)
            .args([
                "daemon",
                "--reuseaddr",
                &format!("--base-path={}", base.display()),
                "--export-all",
                "--enable=receive-pack",
                "--informative-errors",
                "--listen=127.0.0.1",
                &format!("--port={port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon starts");
        let daemon = Daemon { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "git daemon did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        daemon
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn through_a_real_git_server() {
    let w = World::new();
    let daemon = Daemon::start(w.root.path());
    let url = format!("git://127.0.0.1:{}/exchange.git", daemon.port);
    let channel = GitRemote::new(&url, Path::new("/unused"));
    assert_eq!(channel.describe(), url);

    let c1 = export(&w.support, "v1");
    assert_eq!(
        channel
            .push(&w.support, SUPPORT, ENGINEERING, None)
            .unwrap(),
        PushOutcome::Pushed(c1)
    );
    assert_eq!(
        channel
            .push(&w.support, SUPPORT, ENGINEERING, None)
            .unwrap(),
        PushOutcome::UpToDate
    );
    let got = channel
        .fetch(&w.engineering, ENGINEERING, SUPPORT, &w.engineering_trusts)
        .unwrap();
    assert_eq!(
        got,
        FetchOutcome {
            before: None,
            after: Some(c1),
            notes: Vec::new(),
            waiting: Vec::new(),
        }
    );

    // A server-side refusal arrives through push_update_reference, not as an
    // Err from push(): it must still be reported, after bounded retries.
    let hook = w.bare().join("hooks/pre-receive");
    std::fs::write(&hook, "#!/bin/sh\necho 'frozen by policy' >&2\nexit 1\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    export(&w.support, "v2");
    let err = channel
        .push(&w.support, SUPPORT, ENGINEERING, None)
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::Rejected {
                attempts: MAX_PUSH_ATTEMPTS,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        git_cli(&w.bare(), &["rev-parse", &own_branch(SUPPORT, ENGINEERING)]),
        c1.to_string()
    );
}

#[test]
fn unreachable_server_names_the_channel_and_hints() {
    let w = World::new();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("git://127.0.0.1:{port}/exchange.git");
    let err = GitRemote::new(&url, Path::new("/unused"))
        .fetch(&w.engineering, ENGINEERING, SUPPORT, &w.engineering_trusts)
        .unwrap_err();
    let message = err.to_string();
    assert!(message.starts_with(&url), "{message}");
    assert!(
        message.contains("fetching refs/heads/support/engineering"),
        "{message}"
    );
    assert!(message.contains("hint:"), "{message}");
}

#[test]
fn url_classification_and_redaction() {
    let site = Path::new("/sites/support");
    let local = GitRemote::new("../exchange.git", site);
    assert_eq!(local.target, "/sites/support/../exchange.git");
    assert_eq!(
        local.local_dir,
        Some(PathBuf::from("/sites/support/../exchange.git"))
    );
    assert_eq!(GitRemote::new("/srv/x.git", site).target, "/srv/x.git");
    for remote in [
        "ssh://git@host/x.git",
        "git@host:x.git",
        "https://host/x.git",
    ] {
        let channel = GitRemote::new(remote, site);
        assert_eq!(channel.target, remote);
        assert_eq!(channel.local_dir, None);
    }
    assert_eq!(
        redact("https://ann:s3cret@host/x.git"),
        "https://ann:***@host/x.git"
    );
    assert_eq!(redact("ssh://git@host/x.git"), "ssh://git@host/x.git");
    assert_eq!(Optional::of("ssh://git@host/x.git"), Some(Optional::Ssh));
    assert_eq!(Optional::of("git@host:x.git"), Some(Optional::Ssh));
    assert_eq!(Optional::of("HTTPS://host/x.git"), Some(Optional::Https));
    assert_eq!(Optional::of("git://host/x.git"), None);
    assert_eq!(Optional::of("../exchange.git"), None);
}

#[test]
fn missing_protocol_support_is_explained() {
    let w = World::new();
    for (url, needed) in [
        ("ssh://git@127.0.0.1:1/x.git", Optional::Ssh),
        ("https://127.0.0.1:1/x.git", Optional::Https),
    ] {
        if needed.available() {
            continue;
        }
        let err = GitRemote::new(url, Path::new("/unused"))
            .fetch(&w.support, SUPPORT, ENGINEERING, &w.support_trusts)
            .unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with(url), "{message}");
        assert!(message.contains("built without"), "{message}");
    }
}
