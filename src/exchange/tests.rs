use super::blobs::{PACK_THRESHOLD, pack_index};
use super::*;

#[test]
fn blob_ids_are_gits() {
    for bytes in [
        &b""[..],
        b"x",
        &[0u8; 70_000],
        "ferry: 1\nsite: a\n".as_bytes(),
    ] {
        assert_eq!(
            blob_id(bytes),
            Oid::hash_object(ObjectType::Blob, bytes).unwrap()
        );
    }
}

/// Offsets from 2 GiB on are in the 8-byte table, referenced by position.
#[test]
fn a_pack_index_refers_to_large_offsets_through_its_table() {
    let small = Oid::from_bytes(&[1; 20]).unwrap();
    let large = Oid::from_bytes(&[2; 20]).unwrap();
    let index = pack_index(vec![(large, 5 << 31, 7), (small, 12, 9)], &[0; 20]);
    let offsets = 8 + 256 * 4 + 2 * 20 + 2 * 4;
    let word = |at: usize| u32::from_be_bytes(index[at..at + 4].try_into().unwrap());
    assert_eq!((word(offsets), word(offsets + 4)), (12, 0x8000_0000));
    let table = offsets + 8;
    let large_offset = u64::from_be_bytes(index[table..table + 8].try_into().unwrap());
    assert_eq!(large_offset, 5 << 31);
    assert_eq!(index.len(), table + 8 + 40);
}
use crate::signing::SiteKey;
use std::process::Command;

/// Runs the real git CLI, hermetically, and returns its stdout.
fn git_cli(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn write(path: &str, content: &str) -> FileWrite {
    FileWrite {
        path: path.into(),
        content: Some(Content::Bytes(content.as_bytes().to_vec())),
    }
}

fn remove(path: &str) -> FileWrite {
    FileWrite {
        path: path.into(),
        content: None,
    }
}

/// Opens (or creates) the exchange at `path`, signing with the key beside it.
fn signing_exchange(path: &Path) -> Exchange {
    let key_file = path.with_extension("key");
    let key = match SiteKey::load(&key_file) {
        Ok(key) => key,
        Err(_) => SiteKey::generate(&key_file, "support").unwrap(),
    };
    let mut ex = Exchange::open_or_init(path).unwrap();
    ex.sign_with(key);
    ex
}

fn exchange() -> (tempfile::TempDir, Exchange) {
    let dir = tempfile::tempdir().unwrap();
    let ex = signing_exchange(&dir.path().join("exchange.git"));
    (dir, ex)
}

const BRANCH: &str = "refs/heads/support/engineering";

#[test]
fn commit_creates_nested_paths_that_git_agrees_with() {
    let (_dir, ex) = exchange();
    let c = ex
        .commit(
            BRANCH,
            &[
                write("site.yaml", "site: support\n"),
                write("issues/SUP/1.yaml", "id: 1\n"),
                write("issues/SUP/2.yaml", "id: 2\n"),
                write("attachments/9f/9f86", "bytes"),
            ],
            "export: 2 issues\n\nmore detail",
            "support",
        )
        .unwrap()
        .expect("a commit");
    assert_eq!(ex.resolve(BRANCH).unwrap(), Some(c));

    let files = ex.files(c, "").unwrap();
    let listed = git_cli(ex.repo().path(), &["ls-tree", "-r", &c.to_string()]);
    let from_git: BTreeMap<String, Oid> = listed
        .lines()
        .map(|line| {
            let (meta, path) = line.split_once('\t').unwrap();
            let oid = meta.split_whitespace().nth(2).unwrap();
            assert!(meta.starts_with("100644 blob "), "{line}");
            (path.to_string(), Oid::from_str(oid).unwrap())
        })
        .collect();
    assert_eq!(files, from_git);
    assert_eq!(files.len(), 4);

    let issues = ex.files(c, "issues/").unwrap();
    assert_eq!(
        issues.keys().collect::<Vec<_>>(),
        ["issues/SUP/1.yaml", "issues/SUP/2.yaml"]
    );
    assert!(ex.files(c, "nothing/here").unwrap().is_empty());

    let (oid, bytes) = ex.read_file(c, "issues/SUP/2.yaml").unwrap().unwrap();
    assert_eq!(bytes, b"id: 2\n");
    assert_eq!(ex.read_blob(oid).unwrap(), b"id: 2\n");
    assert_eq!(ex.blob_size(oid).unwrap(), 6);
    assert!(ex.read_file(c, "issues/SUP").unwrap().is_none());
    assert!(ex.read_file(c, "issues/SUP/3.yaml").unwrap().is_none());
    assert!(matches!(
        ex.blob_size(c),
        Err(ExchangeError::NotABlob { .. })
    ));

    git_cli(ex.repo().path(), &["fsck", "--strict", "--no-dangling"]);
    let authors = git_cli(ex.repo().path(), &["log", "--format=%an <%ae>", BRANCH]);
    assert_eq!(authors, "support (ferry) <support@ferry.invalid>\n");
}

#[test]
fn many_new_blobs_go_into_one_pack_that_git_agrees_with() {
    let (_dir, ex) = exchange();
    let files = |round: usize, n: usize| -> Vec<FileWrite> {
        (0..n)
            .map(|i| {
                write(
                    &format!("issues/P{}/{i}.yaml", i % 7),
                    &format!("id: {i}\nround: {round}\n"),
                )
            })
            .collect()
    };
    let first = ex
        .commit(BRANCH, &files(1, 3 * PACK_THRESHOLD), "many", "support")
        .unwrap()
        .expect("a commit");
    // A handful on top goes the loose way; then many again, packed, on a parent.
    let mut few = files(2, 3);
    few.push(remove("issues/P1/8.yaml"));
    let second = ex.commit(BRANCH, &few, "few", "support").unwrap().unwrap();
    let third = ex
        .commit(
            BRANCH,
            &files(3, 2 * PACK_THRESHOLD),
            "many again",
            "support",
        )
        .unwrap()
        .unwrap();
    assert_eq!(ex.resolve(BRANCH).unwrap(), Some(third));

    let repo = ex.repo().path();
    git_cli(repo, &["fsck", "--strict", "--no-dangling"]);
    let counts = git_cli(repo, &["count-objects", "-v"]);
    let count = |name: &str| -> usize {
        let prefix = format!("{name}: ");
        counts
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap()
            .parse()
            .unwrap()
    };
    // Every blob and tree of the two big commits is in their two packs (the
    // trees: the root, issues/ and the seven project trees each); loose are
    // the root commit's empty base tree, the commits, and the three blobs
    // and five trees of the small one.
    assert_eq!(count("packs"), 2, "{counts}");
    assert_eq!(count("in-pack"), 5 * PACK_THRESHOLD + 2 * 9, "{counts}");
    assert_eq!(count("count"), 1 + 1 + (3 + 5 + 1) + 1, "{counts}");
    for (commit, round) in [(first, 1), (third, 3)] {
        let listed = git_cli(repo, &["ls-tree", "-r", "--name-only", &commit.to_string()]);
        assert_eq!(listed.lines().count(), 3 * PACK_THRESHOLD);
        let (_, bytes) = ex.read_file(commit, "issues/P0/7.yaml").unwrap().unwrap();
        assert_eq!(bytes, format!("id: 7\nround: {round}\n").as_bytes());
    }
    assert!(ex.read_file(second, "issues/P1/8.yaml").unwrap().is_none());
    // Another handle sees the same, from the pack on disk.
    let reopened = Exchange::open_or_init(repo).unwrap();
    assert_eq!(
        reopened.files(third, "").unwrap(),
        ex.files(third, "").unwrap()
    );
}

#[test]
fn identical_commit_is_not_made() {
    let (_dir, ex) = exchange();
    let writes = [write("issues/SUP/1.yaml", "id: 1\n")];
    let first = ex.commit(BRANCH, &writes, "one", "support").unwrap();
    assert!(first.is_some());
    assert_eq!(
        ex.commit(BRANCH, &writes, "again", "support").unwrap(),
        None
    );
    assert_eq!(
        ex.commit(BRANCH, &[remove("issues/SUP/404.yaml")], "noop", "support")
            .unwrap(),
        None
    );
    assert_eq!(ex.resolve(BRANCH).unwrap(), first);
}

#[test]
fn empty_root_commit_is_not_made() {
    let (_dir, ex) = exchange();
    assert_eq!(ex.commit(BRANCH, &[], "hello", "support").unwrap(), None);
    assert_eq!(
        ex.commit(BRANCH, &[remove("a")], "hello", "support")
            .unwrap(),
        None
    );
    assert_eq!(ex.resolve(BRANCH).unwrap(), None);
}

#[test]
fn remove_prunes_empty_directories() {
    let (_dir, ex) = exchange();
    ex.commit(
        BRANCH,
        &[write("site.yaml", "s"), write("issues/SUP/1.yaml", "1")],
        "add",
        "support",
    )
    .unwrap();
    let c = ex
        .commit(BRANCH, &[remove("issues/SUP/1.yaml")], "rm", "support")
        .unwrap()
        .unwrap();
    let listed = git_cli(ex.repo().path(), &["ls-tree", "-r", "-t", &c.to_string()]);
    assert_eq!(listed.lines().count(), 1, "{listed}");
    assert!(listed.ends_with("\tsite.yaml\n"));
    git_cli(ex.repo().path(), &["fsck", "--strict", "--no-dangling"]);
}

#[test]
fn last_write_to_a_path_wins() {
    let (_dir, ex) = exchange();
    let c = ex
        .commit(
            BRANCH,
            &[write("a.yaml", "1"), remove("a.yaml"), write("b.yaml", "x")],
            "m",
            "support",
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        ex.files(c, "").unwrap().keys().collect::<Vec<_>>(),
        ["b.yaml"]
    );
}

#[test]
fn unsafe_paths_are_refused() {
    let (_dir, ex) = exchange();
    for bad in [
        "",
        "/abs",
        "a//b",
        "a/",
        "../x",
        "a/./b",
        ".git/config",
        "a\0b",
    ] {
        let err = ex
            .commit(BRANCH, &[write(bad, "x")], "m", "support")
            .unwrap_err();
        assert!(
            matches!(err, ExchangeError::InvalidPath { .. }),
            "{bad:?}: {err}"
        );
    }
    assert_eq!(ex.resolve(BRANCH).unwrap(), None);
}

#[test]
fn diff_paths_reports_add_modify_remove_without_renames() {
    let (_dir, ex) = exchange();
    let a = ex
        .commit(
            BRANCH,
            &[
                write("issues/SUP/1.yaml", "one"),
                write("issues/SUP/2.yaml", "two"),
                write(
                    "issues/SUP/3.yaml",
                    "three, long enough to look like a rename",
                ),
            ],
            "a",
            "support",
        )
        .unwrap()
        .unwrap();
    let b = ex
        .commit(
            BRANCH,
            &[
                write("issues/SUP/1.yaml", "ONE"),
                remove("issues/SUP/2.yaml"),
                remove("issues/SUP/3.yaml"),
                write(
                    "issues/ENG/3.yaml",
                    "three, long enough to look like a rename",
                ),
                write("issues/SUP/4.yaml", "four"),
            ],
            "b",
            "support",
        )
        .unwrap()
        .unwrap();
    let files_a = ex.files(a, "").unwrap();
    let files_b = ex.files(b, "").unwrap();
    let changes = ex.diff_paths(Some(a), b).unwrap();
    let expected: Vec<PathChange> = [
        "issues/ENG/3.yaml",
        "issues/SUP/1.yaml",
        "issues/SUP/2.yaml",
        "issues/SUP/3.yaml",
        "issues/SUP/4.yaml",
    ]
    .iter()
    .map(|p| PathChange {
        path: p.to_string(),
        old: files_a.get(*p).copied(),
        new: files_b.get(*p).copied(),
    })
    .collect();
    assert_eq!(changes, expected);

    let everything = ex.diff_paths(None, a).unwrap();
    assert_eq!(everything.len(), 3);
    assert!(
        everything
            .iter()
            .all(|c| c.old.is_none() && c.new.is_some())
    );
    assert!(ex.diff_paths(Some(b), b).unwrap().is_empty());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
    /// The tree diff that skips equal subtrees finds what git's own finds.
    #[test]
    fn the_tree_diff_agrees_with_git(
        first in proptest::collection::btree_map("[a-c]{1,2}(/[a-c]{1,2}){0,2}", "[xy]{1,2}", 0..12),
        second in proptest::collection::btree_map("[a-c]{1,2}(/[a-c]{1,2}){0,2}", "[xy]{1,2}", 0..12),
    ) {
        // A path cannot be a file and a folder in one tree; across the two
        // commits it may (a file that becomes a folder).
        let files_only = |mut files: BTreeMap<String, String>| {
            let folders: Vec<String> = files.keys().map(|p| format!("{p}/")).collect();
            files.retain(|p, _| !folders.iter().any(|f| p.starts_with(f.as_str())));
            files
        };
        let (first, second) = (files_only(first), files_only(second));
        let (dir, ex) = exchange();
        // The old files go in a commit of their own: one tree update
        // cannot turn a file into a folder.
        let commit = |files: &BTreeMap<String, String>, previous: &[String]| {
            let removals: Vec<FileWrite> = previous.iter().map(|p| remove(p)).collect();
            ex.commit(BRANCH, &removals, "rm", "support").unwrap();
            let mut writes: Vec<FileWrite> =
                files.iter().map(|(path, content)| write(path, content)).collect();
            writes.push(write("site.yaml", &format!("{}", files.len())));
            ex.commit(BRANCH, &writes, "c", "support").unwrap();
            ex.resolve(BRANCH).unwrap()
        };
        let Some(a) = commit(&first, &[]) else { return Ok(()) };
        let Some(b) = commit(&second, &first.keys().cloned().collect::<Vec<_>>()) else {
            return Ok(());
        };
        let ours: Vec<String> = ex
            .diff_paths(Some(a), b)
            .unwrap()
            .into_iter()
            .map(|c| c.path)
            .collect();
        let repo = dir.path().join("exchange.git");
        let theirs: Vec<String> = git_cli(
            &repo,
            &["diff-tree", "-r", "--no-renames", "--name-only", &a.to_string(), &b.to_string()],
        )
        .lines()
        .map(str::to_string)
        .collect();
        proptest::prop_assert_eq!(ours, theirs);
    }
}

#[test]
fn a_replica_moved_to_the_other_layout_is_no_change() {
    let (_dir, ex) = exchange();
    let flat = ex
        .commit(
            BRANCH,
            &[
                write("issues/SUP/142.yaml", "one"),
                write("issues/SUP/7.yaml", "seven"),
                write("issues/SUP/99.yaml", "gone"),
            ],
            "flat",
            "support",
        )
        .unwrap()
        .unwrap();
    assert_eq!(ex.layout(flat).unwrap(), Some(Format::V1));
    let fanned = ex
        .commit(
            BRANCH,
            &[
                remove("issues/SUP/142.yaml"),
                write("issues/SUP/42/01/142.yaml", "one"),
                remove("issues/SUP/7.yaml"),
                write("issues/SUP/07/00/7.yaml", "SEVEN"),
                remove("issues/SUP/99.yaml"),
                write("issues/SUP/08/00/8.yaml", "eight"),
            ],
            "fan out",
            "support",
        )
        .unwrap()
        .unwrap();
    assert_eq!(ex.layout(fanned).unwrap(), Some(Format::V2));
    let changes: Vec<(String, bool, bool)> = ex
        .diff_replicas(Some(flat), fanned)
        .unwrap()
        .into_iter()
        .map(|c| (c.path, c.old.is_some(), c.new.is_some()))
        .collect();
    assert_eq!(
        changes,
        [
            ("issues/SUP/7.yaml".to_string(), true, true),
            ("issues/SUP/8.yaml".to_string(), false, true),
            ("issues/SUP/99.yaml".to_string(), true, false),
        ]
    );
    let (stored, blob) = ex
        .find_replica(fanned, "issues/SUP/142.yaml")
        .unwrap()
        .unwrap();
    assert_eq!(stored, "issues/SUP/42/01/142.yaml");
    assert_eq!(ex.read_blob(blob).unwrap(), b"one");
    let (stored, _) = ex
        .find_replica(flat, "issues/SUP/142.yaml")
        .unwrap()
        .unwrap();
    assert_eq!(stored, "issues/SUP/142.yaml");
    assert!(
        ex.find_replica(fanned, "issues/SUP/99.yaml")
            .unwrap()
            .is_none()
    );
    assert_eq!(
        ex.replicas(fanned).unwrap().keys().collect::<Vec<_>>(),
        [
            "issues/SUP/142.yaml",
            "issues/SUP/7.yaml",
            "issues/SUP/8.yaml"
        ]
    );
}

#[test]
fn concurrent_ref_move_is_detected() {
    let (_dir, ex) = exchange();
    let first = ex
        .commit(BRANCH, &[write("a", "1")], "a", "support")
        .unwrap()
        .unwrap();
    let second = ex
        .commit(BRANCH, &[write("a", "2")], "b", "support")
        .unwrap()
        .unwrap();
    // Someone else read `first` and now tries to move the ref on from there.
    let err = ex
        .update_ref(BRANCH, Some(first), first, "stale")
        .unwrap_err();
    assert!(matches!(err, ExchangeError::Concurrent { .. }), "{err}");
    assert_eq!(ex.resolve(BRANCH).unwrap(), Some(second));
    // Creating a ref that appeared meanwhile is detected too.
    let err = ex.update_ref(BRANCH, None, first, "stale").unwrap_err();
    assert!(matches!(err, ExchangeError::Concurrent { .. }), "{err}");
    // A genuine compare-and-swap succeeds.
    ex.update_ref(BRANCH, Some(second), first, "rewind")
        .unwrap();
    assert_eq!(ex.resolve(BRANCH).unwrap(), Some(first));
}

#[test]
fn ancestry_and_history() {
    let (_dir, ex) = exchange();
    let ids: Vec<Oid> = (0..3)
        .map(|i| {
            ex.commit(BRANCH, &[write("n", &i.to_string())], "n", "support")
                .unwrap()
                .unwrap()
        })
        .collect();
    assert!(ex.is_ancestor(ids[0], ids[2]).unwrap());
    assert!(ex.is_ancestor(ids[2], ids[2]).unwrap());
    assert!(!ex.is_ancestor(ids[2], ids[0]).unwrap());
    assert_eq!(ex.commits_between(None, ids[2]).unwrap(), ids);
    assert_eq!(ex.commits_between(Some(ids[0]), ids[2]).unwrap(), &ids[1..]);
    assert!(ex.commits_between(Some(ids[2]), ids[2]).unwrap().is_empty());
}

#[test]
fn merge_keep_ours_keeps_our_tree_and_both_parents() {
    let (_dir, ex) = exchange();
    let base = ex
        .commit(BRANCH, &[write("a", "1")], "a", "support")
        .unwrap()
        .unwrap();
    let theirs = ex
        .commit(BRANCH, &[write("a", "theirs")], "t", "support")
        .unwrap()
        .unwrap();
    ex.set_ref(BRANCH, base, "back").unwrap();
    let ours = ex
        .commit(BRANCH, &[write("a", "ours")], "o", "support")
        .unwrap()
        .unwrap();
    let merge = ex
        .merge_keep_ours(BRANCH, theirs, "merge", "support")
        .unwrap();
    let commit = ex.repo().find_commit(merge).unwrap();
    assert_eq!(commit.parent_ids().collect::<Vec<_>>(), [ours, theirs]);
    assert_eq!(ex.read_file(merge, "a").unwrap().unwrap().1, b"ours");
    assert_eq!(ex.resolve(BRANCH).unwrap(), Some(merge));
}

#[test]
fn reopen_and_refuse_foreign_folders() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.git");
    let c = {
        let ex = signing_exchange(&path);
        ex.commit(BRANCH, &[write("a", "1")], "a", "support")
            .unwrap()
            .unwrap()
    };
    let ex = Exchange::open_or_init(&path).unwrap();
    assert_eq!(ex.resolve(BRANCH).unwrap(), Some(c));
    // The reflog is on, so the audit trail of ref moves exists.
    assert_eq!(ex.repo().reflog(BRANCH).unwrap().len(), 1);

    let foreign = dir.path().join("docs");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "hi").unwrap();
    assert!(matches!(
        Exchange::open_or_init(&foreign),
        Err(ExchangeError::NotARepository { .. })
    ));
}

#[test]
fn ferry_now_fixes_the_commit_time() {
    let t = commit_time(crate::clock::parse("2026-11-22T09:30:00+02:00").unwrap());
    assert_eq!(t.seconds(), 1_795_332_600);
    assert_eq!(t.offset_minutes(), 120);
    let invalid = crate::clock::parse("yesterday").unwrap_err();
    assert!(
        ExchangeError::from(invalid)
            .to_string()
            .starts_with("FERRY_NOW=\"yesterday\" is not an RFC 3339 timestamp")
    );
}

/// Runs a command with the sealed git environment; returns (success, output).
fn run(mut command: Command, stdin: Option<&[u8]>) -> (bool, String) {
    use std::io::Write;
    use std::process::Stdio;
    command
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("the command runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.unwrap_or_default())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `git verify-commit` with `gpg.format=ssh` and an allowed signers file
/// listing `signer`: whether it accepts `commit`, and what it said.
fn git_verify(ex: &Exchange, signer: &SiteKey, commit: Oid) -> (bool, String) {
    let signers = ex.repo().path().join("allowed_signers");
    std::fs::write(
        &signers,
        format!("support namespaces=\"git\" {}\n", signer.public_line()),
    )
    .unwrap();
    let mut git = Command::new("git");
    git.arg("-C").arg(ex.repo().path()).args([
        "-c",
        "gpg.format=ssh",
        "-c",
        &format!("gpg.ssh.allowedSignersFile={}", signers.display()),
        "verify-commit",
        "-v",
        &commit.to_string(),
    ]);
    run(git, None)
}

#[test]
fn every_commit_is_signed_the_way_git_verify_commit_accepts() {
    let (dir, ex) = exchange();
    let key = SiteKey::load(&dir.path().join("exchange.key")).unwrap();
    let base = ex
        .commit(BRANCH, &[write("a", "1")], "export: one\n\nbody", "support")
        .unwrap()
        .unwrap();
    let (ok, said) = git_verify(&ex, &key, base);
    assert!(ok, "{said}");
    assert!(said.contains("Good \"git\" signature"), "{said}");

    // The message names the branch, inside what the signature covers.
    let message = git_cli(ex.repo().path(), &["log", "-1", "--format=%B", BRANCH]);
    assert_eq!(
        message,
        "export: one\n\nbody\n\nFerry-Branch: support/engineering\n\n"
    );

    // ssh-keygen checks the SSHSIG itself, without any signers file.
    let (signature, payload) = ex.repo().extract_signature(&base, None).unwrap();
    let sig_file = dir.path().join("commit.sig");
    std::fs::write(&sig_file, &*signature).unwrap();
    let mut keygen = Command::new("ssh-keygen");
    keygen
        .args(["-Y", "check-novalidate", "-n", "git", "-s"])
        .arg(&sig_file);
    let (ok, said) = run(keygen, Some(&payload));
    assert!(ok, "{said}");

    // The merge a moved channel forces is signed too.
    let theirs = ex
        .commit(BRANCH, &[write("a", "theirs")], "t", "support")
        .unwrap()
        .unwrap();
    ex.set_ref(BRANCH, base, "back").unwrap();
    ex.commit(BRANCH, &[write("a", "ours")], "o", "support")
        .unwrap();
    let merge = ex
        .merge_keep_ours(BRANCH, theirs, "merge", "support")
        .unwrap();
    let (ok, said) = git_verify(&ex, &key, merge);
    assert!(ok, "{said}");

    // Another key is not this site's: git agrees it is not a good signature.
    let other = SiteKey::generate(&dir.path().join("other"), "other").unwrap();
    let (ok, said) = git_verify(&ex, &other, merge);
    assert!(!ok, "{said}");
    git_cli(ex.repo().path(), &["fsck", "--strict", "--no-dangling"]);
}

#[test]
fn without_a_key_no_commit_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let ex = Exchange::open_or_init(&dir.path().join("exchange.git")).unwrap();
    let err = ex
        .commit(BRANCH, &[write("a", "1")], "a", "support")
        .unwrap_err();
    assert!(matches!(err, ExchangeError::NoSigningKey { .. }), "{err}");
    assert!(err.to_string().contains(BRANCH), "{err}");
    assert_eq!(ex.resolve(BRANCH).unwrap(), None);
}

#[test]
fn exchange_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Exchange>();
}
