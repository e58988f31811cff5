//! Air-gapped exchange through git bundles: the two-site story with no shared
//! repository, `ferry bundle create/import`, incremental size, and every kind of
//! hostile bundle refused with nothing applied. The real `git` is the oracle and
//! the forger of hostile bundles.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{World, git};

/// The folders a person carries between the sites.
const TO_ENG: &str = "usb/support-to-engineering";
const TO_SUP: &str = "usb/engineering-to-support";

/// Creates site `name` whose only connection, to `peer`, is a bundle channel
/// (support writes to usb/support-to-engineering, engineering the other way).
pub fn bundle_site(w: &World, name: &str, peer: &str, projects: &str, query: &str) {
    let (outbox, inbox) = if name == "support" {
        (TO_ENG, TO_SUP)
    } else {
        (TO_SUP, TO_ENG)
    };
    for dir in [outbox, inbox] {
        std::fs::create_dir_all(w.path(dir)).unwrap();
    }
    std::fs::create_dir_all(w.path(name)).unwrap();
    w.ok(name, &["init", "--site", name, "--tracker", "local"]);
    w.ok(
        name,
        &[
            "connection",
            "add",
            peer,
            "--outbox",
            &format!("../{outbox}"),
            "--inbox",
            &format!("../{inbox}"),
            "--project",
            projects,
            "--query",
            query,
        ],
    );
    // Exchange signing keys once both sites exist, as operators do.
    if w.path(peer).join("ferry.yaml").exists() {
        w.trust(name, peer);
        w.trust(peer, name);
    }
}

/// Turns signature checks off on `site`'s connection to `peer` (a lab setting):
/// the forged bundles below are unsigned, and it is their trees these tests are
/// about; unsigned commits are refused by default (see
/// `an_unsigned_bundle_is_refused_before_its_tree_is_read`).
fn signatures_off(w: &World, site: &str, peer: &str) {
    let file = w.path(&format!("{site}/connections/{peer}.yaml"));
    let text = std::fs::read_to_string(&file).unwrap();
    let off = if text.contains("signatures: required") {
        text.replace("signatures: required", "signatures: off")
    } else {
        format!("{text}signatures: off\n")
    };
    std::fs::write(&file, off).unwrap();
}

fn two_bundle_sites() -> World {
    let w = World::new();
    bundle_site(&w, "support", "engineering", "SUP=ENG", "labels = escalate");
    bundle_site(&w, "engineering", "support", "ENG=SUP", "");
    w
}

/// Bundle files directly in a folder, by name.
fn bundles(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "bundle"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// `git bundle verify` in `repo`; panics with git's words when it refuses.
fn git_verifies(repo: &Path, bundle: &Path) {
    git(repo, &["bundle", "verify", "-q", bundle.to_str().unwrap()]);
}

/// Every ref of a site's exchange repo, to compare before and after a refusal.
fn refs(w: &World, site: &str) -> String {
    git(
        &w.path(&format!("{site}/.ferry/exchange.git")),
        &["for-each-ref", "--format=%(objectname) %(refname)"],
    )
}

fn comments(issue: &serde_json::Value) -> Vec<String> {
    issue["comments"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| c["body"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn two_sites_over_bundles_only() {
    let w = two_bundle_sites();
    let key = w.new_issue(
        "support",
        &[
            "--project",
            "SUP",
            "--summary",
            "Printer on fire",
            "--label",
            "escalate",
        ],
    );
    w.ok(
        "support",
        &["tracker", "comment", &key, "Customer sent logs."],
    );
    w.ok(
        "support",
        &["tracker", "comment", &key, "--internal", "SECRET-NOTE"],
    );
    let out = w.ok("support", &["sync"]);
    let sent = bundles(&w.path(TO_ENG));
    assert_eq!(sent.len(), 1, "{out}");
    // The first bundle is full: git verifies it anywhere, and clones it.
    git(w.root.path(), &["init", "-q", "--bare", "oracle.git"]);
    git_verifies(&w.path("oracle.git"), &sent[0]);
    git(
        w.root.path(),
        &[
            "clone",
            "-q",
            "--bare",
            sent[0].to_str().unwrap(),
            "clone.git",
        ],
    );
    let files = git(
        &w.path("clone.git"),
        &["ls-tree", "-r", "--name-only", "support/engineering"],
    );
    assert_eq!(files, "issues/SUP/01/00/1.yaml\nsite.yaml\n");
    // A sync with nothing new writes no second bundle.
    w.ok("support", &["sync"]);
    assert_eq!(bundles(&w.path(TO_ENG)).len(), 1);

    let out = w.ok("engineering", &["sync"]);
    assert!(out.contains("SUP-1 → ENG-1 created"), "{out}");
    assert!(bundles(&w.path(TO_ENG)).is_empty(), "processed: archived");
    assert_eq!(bundles(&w.path(&format!("{TO_ENG}/archive"))).len(), 1);
    let eng1 = w.show("engineering", "ENG-1");
    assert_eq!(comments(&eng1), ["Customer sent logs."]);

    w.ok(
        "engineering",
        &["tracker", "comment", "ENG-1", "Fix in 2.1.1."],
    );
    w.ok(
        "engineering",
        &["tracker", "edit", "ENG-1", "--status", "In Progress"],
    );
    // Engineering's first sync already sent the issue back (it is now shared
    // both ways); this one writes a newer bundle holding that one's commits too,
    // which replaces it in the outbox.
    let answered = bundles(&w.path(TO_SUP));
    assert_eq!(answered.len(), 1);
    w.ok("engineering", &["sync"]);
    let answer = bundles(&w.path(TO_SUP));
    assert_eq!(answer.len(), 1);
    assert_ne!(answer, answered);
    w.ok("support", &["sync"]);
    assert!(bundles(&w.path(TO_SUP)).is_empty());
    let sup1 = w.show("support", &key);
    assert_eq!(sup1["status"], "In Progress");
    assert!(
        comments(&sup1).contains(&"Fix in 2.1.1.".to_string()),
        "{sup1}"
    );

    // Engineering acknowledged support's first commit, so support's next bundle
    // holds only what came after: git verifies it against engineering's repo.
    w.ok("support", &["tracker", "comment", &key, "Thanks!"]);
    w.ok("support", &["sync"]);
    // (One bundle of two commits: the import's own update of SUP-1, then the
    // comment; the bundle of the first alone was replaced.)
    let next = bundles(&w.path(TO_ENG));
    assert_eq!(next.len(), 1);
    for bundle in &next {
        let header = std::fs::read(bundle).unwrap();
        assert!(
            header.starts_with(b"# v2 git bundle\n-"),
            "a prerequisite line: {}",
            String::from_utf8_lossy(&header[..120])
        );
        git_verifies(&w.path("engineering/.ferry/exchange.git"), bundle);
    }
    let lacking = Command::new("git")
        .args(["bundle", "verify", next[0].to_str().unwrap()])
        .current_dir(w.path("oracle.git"))
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(!lacking.status.success(), "needs what engineering has");
    w.ok("engineering", &["sync"]);
    assert!(comments(&w.show("engineering", "ENG-1")).contains(&"Thanks!".to_string()));

    // Quiet: more syncs move nothing and write no bundle.
    for _ in 0..2 {
        w.ok("engineering", &["sync"]);
        w.ok("support", &["sync"]);
    }
    let pending = bundles(&w.path(TO_ENG)).len() + bundles(&w.path(TO_SUP)).len();
    assert!(pending <= 2, "at most the last acks in flight");
    for _ in 0..2 {
        w.ok("engineering", &["sync"]);
        w.ok("support", &["sync"]);
    }
    let before = (
        bundles(&w.path(TO_ENG)).len(),
        bundles(&w.path(TO_SUP)).len(),
    );
    w.ok("engineering", &["sync"]);
    w.ok("support", &["sync"]);
    assert_eq!(
        before,
        (
            bundles(&w.path(TO_ENG)).len(),
            bundles(&w.path(TO_SUP)).len()
        )
    );

    // No shared repository was involved, and no internal note crossed.
    assert_eq!(
        git(&w.path("exchange.git"), &["for-each-ref"]),
        "",
        "the shared repo stays empty"
    );
    for dir in [TO_ENG, TO_SUP] {
        for file in walk(&w.path(dir)) {
            let bytes = std::fs::read(&file).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains("SECRET-NOTE"),
                "{}",
                file.display()
            );
        }
    }
    let objects = git(
        &w.path("engineering/.ferry/exchange.git"),
        &["cat-file", "--batch-all-objects", "--batch"],
    );
    assert!(!objects.contains("SECRET-NOTE"));
}

/// Every file below `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn bundle_create_and_import_by_hand() {
    let w = two_bundle_sites();
    let key = w.new_issue(
        "support",
        &[
            "--project",
            "SUP",
            "--summary",
            "By hand",
            "--label",
            "escalate",
        ],
    );
    // Nothing exported yet: a clear error, no file.
    let run = w.ferry(
        "support",
        &[
            "bundle",
            "create",
            "--connection",
            "engineering",
            "--out",
            "../b1.bundle",
        ],
    );
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("ferry export"), "{}", run.stderr);
    assert!(!w.path("b1.bundle").exists());

    w.ok("support", &["export"]);
    let out = w.ok(
        "support",
        &[
            "bundle",
            "create",
            "--connection",
            "engineering",
            "--out",
            "../b1.bundle",
        ],
    );
    assert!(out.contains("1 commit, full"), "{out}");
    let out = w.ok("engineering", &["bundle", "import", "../b1.bundle"]);
    assert!(out.contains("SUP-1 → ENG-1 created"), "{out}");
    assert!(w.path("b1.bundle").exists(), "an operator's file stays");

    // The same file again is a replay: refused, nothing changes.
    let before = refs(&w, "engineering");
    let run = w.ferry("engineering", &["bundle", "import", "../b1.bundle"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("replay"), "{}", run.stderr);
    assert_eq!(refs(&w, "engineering"), before);

    // Engineering answers (its bundle carries the ack); support's next bundle is
    // incremental.
    w.ok("engineering", &["tracker", "comment", "ENG-1", "Seen."]);
    w.ok("engineering", &["export"]);
    w.ok(
        "engineering",
        &[
            "bundle",
            "create",
            "--connection",
            "support",
            "--out",
            "../e1.bundle",
        ],
    );
    w.ok(
        "support",
        &[
            "bundle",
            "import",
            "../e1.bundle",
            "--connection",
            "engineering",
        ],
    );
    assert_eq!(comments(&w.show("support", &key)), ["Seen."]);
    w.ok(
        "support",
        &["tracker", "edit", &key, "--summary", "By hand, edited"],
    );
    w.ok("support", &["export"]);
    let out = w.ok(
        "support",
        &[
            "bundle",
            "create",
            "--connection",
            "engineering",
            "--out",
            "../b2.bundle",
        ],
    );
    assert!(out.contains("which engineering acknowledged"), "{out}");
    git_verifies(
        &w.path("engineering/.ferry/exchange.git"),
        &w.path("b2.bundle"),
    );
    w.ok("engineering", &["bundle", "import", "../b2.bundle"]);
    assert_eq!(w.show("engineering", "ENG-1")["summary"], "By hand, edited");

    // --full forces the whole branch.
    let out = w.ok(
        "support",
        &[
            "bundle",
            "create",
            "--connection",
            "engineering",
            "--out",
            "../full.bundle",
            "--full",
        ],
    );
    assert!(out.contains("full"), "{out}");
    assert_eq!(
        crate_header_prerequisites(&w.path("full.bundle")),
        0,
        "no prerequisite"
    );
}

/// How many prerequisite lines a bundle's header has.
fn crate_header_prerequisites(bundle: &Path) -> usize {
    let bytes = std::fs::read(bundle).unwrap();
    let end = bytes.windows(2).position(|w| w == b"\n\n").unwrap();
    String::from_utf8_lossy(&bytes[..end])
        .lines()
        .filter(|l| l.starts_with('-'))
        .count()
}

#[test]
fn an_incremental_bundle_is_proportional_to_the_changes() {
    let w = World::new();
    bundle_site(&w, "support", "engineering", "GEN=ENG", "");
    bundle_site(&w, "engineering", "support", "ENG=GEN", "");
    w.ok(
        "support",
        &["tracker", "generate", "1000", "--project", "GEN"],
    );
    w.ok("support", &["sync"]);
    let full = bundles(&w.path(TO_ENG));
    assert_eq!(full.len(), 1);
    let full_size = std::fs::metadata(&full[0]).unwrap().len();
    w.ok("engineering", &["sync"]);
    w.ok("support", &["sync"]); // takes engineering's ack
    for n in 1..=10 {
        w.ok(
            "support",
            &[
                "tracker",
                "edit",
                &format!("GEN-{}", n * 97),
                "--summary",
                &format!("Changed {n}"),
            ],
        );
    }
    w.ok("support", &["sync"]);
    let all = bundles(&w.path(TO_ENG));
    let incremental = all.last().unwrap();
    let size = std::fs::metadata(incremental).unwrap().len();
    assert!(
        size * 50 < full_size,
        "10 changes of 1000 issues: {size} bytes against {full_size} for the full bundle (under 2% expected)"
    );
    // Thin, like git's own: git completes it from engineering's objects.
    git_verifies(&w.path("engineering/.ferry/exchange.git"), incremental);
    w.ok("engineering", &["sync"]);
    git(
        &w.path("engineering/.ferry/exchange.git"),
        &["fsck", "--strict"],
    );
    let changed = w.list("engineering");
    assert_eq!(
        changed
            .iter()
            .filter(|i| i["summary"].as_str().unwrap().starts_with("Changed "))
            .count(),
        10
    );
}

/// Total size of the bundle files directly in a folder.
fn bytes_of(files: &[PathBuf]) -> u64 {
    files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum()
}

/// Two bundle sites, support holding `issues` generated issues (GEN) that all
/// go to engineering.
fn generated_sites(issues: usize) -> World {
    let w = World::new();
    bundle_site(&w, "support", "engineering", "GEN=ENG", "");
    bundle_site(&w, "engineering", "support", "ENG=GEN", "");
    w.ok(
        "support",
        &[
            "tracker",
            "generate",
            &issues.to_string(),
            "--project",
            "GEN",
        ],
    );
    w
}

fn edit(w: &World, key: &str, summary: &str) {
    w.ok("support", &["tracker", "edit", key, "--summary", summary]);
}

/// Until the peer answers, every bundle holds everything; the outbox keeps only
/// the newest, so ten one-edit runs leave it barely bigger than the first
/// bundle, and that one bundle brings everything.
#[test]
fn the_outbox_holds_one_bundle_however_many_runs_wait_for_an_ack() {
    let w = generated_sites(1000);
    w.ok("support", &["sync"]);
    let first = bytes_of(&bundles(&w.path(TO_ENG)));
    for n in 1..=10 {
        edit(&w, "GEN-1", &format!("Edited {n}"));
        w.ok("support", &["sync"]);
    }
    let outbox = bundles(&w.path(TO_ENG));
    let total = bytes_of(&outbox);
    assert!(
        total * 10 <= first * 11,
        "outbox after 10 one-edit runs: {} files, {total} bytes against {first} for the first \
         bundle (at most 1.1 times expected)",
        outbox.len()
    );
    assert_eq!(outbox.len(), 1, "{outbox:?}");
    w.ok("engineering", &["sync"]);
    let got = w.list("engineering");
    assert_eq!(got.len(), 1000);
    assert!(got.iter().any(|i| i["summary"] == "Edited 10"));
}

/// Support's first bundle, copied away (carried) before a second run replaced
/// it in the outbox, and that second bundle; both as files outside the outbox.
fn carried_and_newer(w: &World) -> (PathBuf, PathBuf) {
    w.ok("support", &["sync"]);
    let carried = w.path("carried-1.bundle");
    std::fs::copy(&bundles(&w.path(TO_ENG))[0], &carried).unwrap();
    edit(w, "GEN-2", "Second");
    w.ok("support", &["sync"]);
    let outbox = bundles(&w.path(TO_ENG));
    assert_eq!(outbox.len(), 1, "the first is superseded: {outbox:?}");
    let newer = w.path("carried-2.bundle");
    std::fs::rename(&outbox[0], &newer).unwrap();
    (carried, newer)
}

/// A bundle carried away before a newer one replaced it still applies: before
/// the newer one, together with it, after it (archived, nothing moves back),
/// and either delivered twice.
#[test]
fn a_superseded_bundle_carried_away_still_applies_in_any_order() {
    // The older first, then the newer, then both again.
    let w = generated_sites(5);
    let (older, newer) = carried_and_newer(&w);
    std::fs::copy(&older, w.path(TO_ENG).join("x-1.bundle")).unwrap();
    w.ok("engineering", &["sync"]);
    assert_eq!(w.list("engineering").len(), 5);
    std::fs::copy(&newer, w.path(TO_ENG).join("x-2.bundle")).unwrap();
    w.ok("engineering", &["sync"]);
    assert!(
        w.list("engineering")
            .iter()
            .any(|i| i["summary"] == "Second")
    );
    std::fs::copy(&older, w.path(TO_ENG).join("x-3.bundle")).unwrap();
    std::fs::copy(&newer, w.path(TO_ENG).join("x-4.bundle")).unwrap();
    let out = w.ok("engineering", &["sync"]);
    assert!(
        out.contains("x-3.bundle brings") && out.contains("superseded"),
        "{out}"
    );
    assert!(
        out.contains("x-4.bundle brings") && out.contains("delivered twice"),
        "{out}"
    );
    assert!(!w.path(&format!("{TO_ENG}/rejected")).exists());

    // The newer first, then the older: archived with a note, nothing refused.
    let w = generated_sites(5);
    let (older, newer) = carried_and_newer(&w);
    std::fs::copy(&newer, w.path(TO_ENG).join("y-2.bundle")).unwrap();
    w.ok("engineering", &["sync"]);
    let before = refs(&w, "engineering");
    std::fs::copy(&older, w.path(TO_ENG).join("y-1.bundle")).unwrap();
    let out = w.ok("engineering", &["sync"]);
    assert!(
        out.contains("y-1.bundle brings") && out.contains("superseded"),
        "{out}"
    );
    assert!(w.path(TO_ENG).join("archive/y-1.bundle").exists());
    assert!(!w.path(&format!("{TO_ENG}/rejected")).exists());
    let peer_branch = |refs: &str| {
        refs.lines()
            .find(|l| l.ends_with(" refs/heads/support/engineering"))
            .map(str::to_string)
    };
    assert_eq!(peer_branch(&refs(&w, "engineering")), peer_branch(&before));
    assert!(
        w.list("engineering")
            .iter()
            .any(|i| i["summary"] == "Second")
    );

    // Both in the inbox at once: taken in name order.
    let w = generated_sites(5);
    let (older, newer) = carried_and_newer(&w);
    std::fs::copy(&older, w.path(TO_ENG).join("z-1.bundle")).unwrap();
    std::fs::copy(&newer, w.path(TO_ENG).join("z-2.bundle")).unwrap();
    w.ok("engineering", &["sync"]);
    assert_eq!(bundles(&w.path(&format!("{TO_ENG}/archive"))).len(), 2);
    assert!(
        w.list("engineering")
            .iter()
            .any(|i| i["summary"] == "Second")
    );
}

/// `ferry sync` killed while it replaces older bundles by a newer one: the
/// outbox always holds a bundle of everything, which engineering imports alone,
/// and the next run leaves one bundle.
#[test]
fn a_run_killed_while_replacing_bundles_leaves_a_complete_one() {
    for point in [
        "bundle-after-write",
        "bundle-after-remove-superseded",
        "bundle-after-remove-superseded:2",
    ] {
        let w = generated_sites(5);
        w.ok("support", &["sync"]);
        // Two older bundles, as an earlier ferry left them piled up.
        let first = bundles(&w.path(TO_ENG)).remove(0);
        std::fs::copy(
            &first,
            w.path(TO_ENG)
                .join("support-engineering-00000000-0000000000.bundle"),
        )
        .unwrap();
        edit(&w, "GEN-3", "Killed");
        w.killed_at("support", &["sync"], point);
        let outbox = bundles(&w.path(TO_ENG));
        assert!(!outbox.is_empty(), "{point}");
        let newest = outbox.last().unwrap();
        git_verifies(&w.path("support/.ferry/exchange.git"), newest);
        // Only the newest is carried.
        for older in &outbox[..outbox.len() - 1] {
            std::fs::remove_file(older).unwrap();
        }
        w.ok("engineering", &["sync"]);
        let got = w.list("engineering");
        assert_eq!(got.len(), 5, "{point}");
        assert!(
            got.iter().any(|i| i["summary"] == "Killed"),
            "{point}: the newest bundle lacks the last edit"
        );

        // Without the peer's answer, the next run finishes the replacement.
        let w = generated_sites(5);
        w.ok("support", &["sync"]);
        let first = bundles(&w.path(TO_ENG)).remove(0);
        std::fs::copy(
            &first,
            w.path(TO_ENG)
                .join("support-engineering-00000000-0000000000.bundle"),
        )
        .unwrap();
        edit(&w, "GEN-3", "Killed");
        w.killed_at("support", &["sync"], point);
        w.ok("support", &["sync"]);
        assert_eq!(bundles(&w.path(TO_ENG)).len(), 1, "{point}");
    }
}

// ---------------------------------------------------------------------------
// Hostile bundles: each is refused with the problem named, moved to rejected/
// with a reason, and the receiving site's refs and tracker stay as they were.

/// A git repository where a "support" forges commits on support/engineering.
struct Forge {
    dir: PathBuf,
}

const REPLICA: &str = "ferry: 1\nsite: support\nid: '1'\nkey: SUP-1\nproject: SUP\ntype: Bug\nsummary: Fine\nstatus: Open\ncreated: 2026-11-20T10:00:00Z\nupdated: 2026-11-20T10:00:00Z\n";

impl Forge {
    fn new(w: &World) -> Forge {
        let dir = w.path("forge");
        git(w.root.path(), &["init", "-q", "forge"]);
        git(&dir, &["checkout", "-q", "-b", "support/engineering"]);
        Forge { dir }
    }

    /// Commits files (written into the work tree) and returns the commit.
    fn commit(&self, files: &[(&str, &[u8])]) -> String {
        for (path, content) in files {
            let file = self.dir.join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, content).unwrap();
        }
        git(&self.dir, &["add", "-A"]);
        git(&self.dir, &["commit", "-q", "-m", "forged"]);
        self.head()
    }

    fn head(&self) -> String {
        git(&self.dir, &["rev-parse", "HEAD"]).trim().to_string()
    }

    /// Writes an object with `git hash-object --literally` (any tree git itself
    /// would never write) and returns its id.
    fn object(&self, kind: &str, bytes: &[u8]) -> String {
        let mut child = Command::new("git")
            .args(["hash-object", "-w", "--literally", "-t", kind, "--stdin"])
            .current_dir(&self.dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// A tree object of `(mode, name, id)` entries, written as given.
    fn tree(&self, entries: &[(&str, &str, &str)]) -> String {
        let mut bytes = Vec::new();
        for (mode, name, id) in entries {
            bytes.extend_from_slice(format!("{mode} {name}\0").as_bytes());
            bytes.extend((0..20).map(|i| u8::from_str_radix(&id[2 * i..2 * i + 2], 16).unwrap()));
        }
        self.object("tree", &bytes)
    }

    /// A commit of `root` on top of the branch, which moves to it.
    fn commit_tree(&self, root: &str) -> String {
        let commit = git(
            &self.dir,
            &["commit-tree", root, "-p", "HEAD", "-m", "forged tree"],
        )
        .trim()
        .to_string();
        git(
            &self.dir,
            &["update-ref", "refs/heads/support/engineering", &commit],
        );
        commit
    }

    /// `git bundle create` of `range` into `path`.
    fn bundle(&self, path: &Path, range: &[&str]) -> PathBuf {
        let mut args = vec!["bundle", "create", "-q", path.to_str().unwrap()];
        args.extend_from_slice(range);
        git(&self.dir, &args);
        path.to_path_buf()
    }
}

/// Engineering's site with a bundle inbox, and a forge for support's side.
fn receiving() -> (World, Forge) {
    let w = World::new();
    bundle_site(&w, "engineering", "support", "ENG=SUP", "");
    signatures_off(&w, "engineering", "support");
    let forge = Forge::new(&w);
    (w, forge)
}

#[test]
fn an_unsigned_bundle_is_refused_before_its_tree_is_read() {
    let w = World::new();
    bundle_site(&w, "support", "engineering", "SUP=ENG", "");
    bundle_site(&w, "engineering", "support", "ENG=SUP", "");
    let forge = Forge::new(&w);
    let unsigned = good_bundle(&w, &forge);
    refused(&w, &unsigned, "it is not signed");
}

/// Drops `bundle` into engineering's inbox, syncs, and checks the refusal:
/// exit 3, `fragment` named in the report and in the reason file, the bundle in
/// rejected/, refs and tracker unchanged.
fn refused(w: &World, bundle: &Path, fragment: &str) {
    let name = bundle.file_name().unwrap().to_str().unwrap().to_string();
    let inbox = w.path(TO_ENG);
    std::fs::copy(bundle, inbox.join(&name)).unwrap();
    let before = refs(w, "engineering");
    let repo = w.path("engineering/.ferry/exchange.git");
    let objects = git(&repo, &["count-objects", "-v"]);
    let issues = w.list("engineering").len();
    let run = w.ferry("engineering", &["sync"]);
    assert_eq!(run.code, 3, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(fragment),
        "{fragment:?} not in:\n{}",
        run.stdout
    );
    assert!(run.stdout.contains(&name), "{}", run.stdout);
    assert!(!inbox.join(&name).exists(), "moved out of the inbox");
    let rejected = inbox.join("rejected").join(&name);
    assert!(rejected.exists(), "kept for an operator");
    let reason =
        std::fs::read_to_string(inbox.join("rejected").join(format!("{name}.reason"))).unwrap();
    assert!(reason.contains(fragment), "{reason}");
    assert_eq!(refs(w, "engineering"), before, "refs unchanged");
    assert_eq!(
        git(&repo, &["count-objects", "-v"]),
        objects,
        "no object of the refused bundle joined the repository"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&repo)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("ferry-quarantine")
        })
        .collect();
    assert!(leftovers.is_empty(), "quarantine removed");
    assert_eq!(w.list("engineering").len(), issues, "tracker unchanged");
    let errors = w.ok("engineering", &["errors"]);
    assert!(errors.contains(&name), "{errors}");
}

/// A valid full bundle from the forge, with one good replica.
fn good_bundle(w: &World, forge: &Forge) -> PathBuf {
    forge.commit(&[("issues/SUP/1.yaml", REPLICA.as_bytes())]);
    forge.bundle(&w.path("good.bundle"), &["refs/heads/support/engineering"])
}

#[test]
fn hostile_truncated_pack() {
    let (w, forge) = receiving();
    let good = good_bundle(&w, &forge);
    let bytes = std::fs::read(&good).unwrap();
    let cut = w.path("truncated.bundle");
    std::fs::write(&cut, &bytes[..bytes.len() - 30]).unwrap();
    refused(&w, &cut, "truncated or corrupt");
}

#[test]
fn hostile_corrupt_pack() {
    let (w, forge) = receiving();
    let good = good_bundle(&w, &forge);
    let mut bytes = std::fs::read(&good).unwrap();
    let middle = bytes.len() - 40;
    bytes[middle] ^= 0xff;
    let bad = w.path("corrupt.bundle");
    std::fs::write(&bad, bytes).unwrap();
    refused(&w, &bad, "truncated or corrupt");
}

#[test]
fn hostile_not_a_bundle() {
    let (w, _forge) = receiving();
    let bad = w.path("text.bundle");
    std::fs::write(&bad, "hello\n").unwrap();
    refused(&w, &bad, "not a git bundle");
}

#[test]
fn a_missing_prerequisite_waits_in_the_inbox_and_is_refused_by_hand() {
    let (w, forge) = receiving();
    let first = forge.commit(&[("issues/SUP/1.yaml", REPLICA.as_bytes())]);
    forge.commit(&[(
        "issues/SUP/2.yaml",
        REPLICA
            .replace("'1'", "'2'")
            .replace("SUP-1", "SUP-2")
            .as_bytes(),
    )]);
    let second = forge.bundle(
        &w.path("2-second.bundle"),
        &[&format!("{first}..refs/heads/support/engineering")],
    );
    let before = refs(&w, "engineering");
    let run = w.ferry(
        "engineering",
        &["bundle", "import", second.to_str().unwrap()],
    );
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("needs commit {first}")),
        "{}",
        run.stderr
    );
    assert_eq!(refs(&w, "engineering"), before);

    // In the inbox it waits for its predecessor, which then lets it in.
    std::fs::copy(&second, w.path(TO_ENG).join("2-second.bundle")).unwrap();
    let out = w.ok("engineering", &["sync"]);
    assert!(out.contains("waits in the inbox"), "{out}");
    assert!(w.path(TO_ENG).join("2-second.bundle").exists());
    assert!(w.list("engineering").is_empty());
    let git_head = forge.head();
    git(
        &forge.dir,
        &["update-ref", "refs/heads/support/engineering", &first],
    );
    forge.bundle(
        &w.path(TO_ENG).join("1-first.bundle"),
        &["refs/heads/support/engineering"],
    );
    git(
        &forge.dir,
        &["update-ref", "refs/heads/support/engineering", &git_head],
    );
    let out = w.ok("engineering", &["sync"]);
    assert_eq!(w.list("engineering").len(), 2, "{out}");
    assert!(bundles(&w.path(TO_ENG)).is_empty());
    assert_eq!(bundles(&w.path(&format!("{TO_ENG}/archive"))).len(), 2);
}

#[test]
fn hostile_wrong_prerequisite() {
    let (w, forge) = receiving();
    // A commit engineering has, but not on support's branch: its own export.
    w.new_issue("engineering", &["--project", "ENG", "--summary", "Ours"]);
    w.ok("engineering", &["export"]);
    let own = git(
        &w.path("engineering/.ferry/exchange.git"),
        &["rev-parse", "refs/heads/engineering/support"],
    );
    let good = good_bundle(&w, &forge);
    let bytes = std::fs::read(&good).unwrap();
    let split = bytes.windows(2).position(|w| w == b"\n\n").unwrap() + 2;
    let mut forged = format!("# v2 git bundle\n-{} ours\n", own.trim()).into_bytes();
    forged.extend_from_slice(&bytes["# v2 git bundle\n".len()..split]);
    forged.extend_from_slice(&bytes[split..]);
    let bad = w.path("wrong-prerequisite.bundle");
    std::fs::write(&bad, forged).unwrap();
    refused(&w, &bad, "is not part of support's branch");
}

#[test]
fn hostile_ref_outside_the_peer_branch() {
    let (w, forge) = receiving();
    forge.commit(&[("issues/SUP/1.yaml", REPLICA.as_bytes())]);
    git(&forge.dir, &["branch", "support/elsewhere"]);
    let bad = forge.bundle(&w.path("foreign.bundle"), &["refs/heads/support/elsewhere"]);
    refused(&w, &bad, "carries refs/heads/support/elsewhere");
    let both = forge.bundle(
        &w.path("two-refs.bundle"),
        &[
            "refs/heads/support/engineering",
            "refs/heads/support/elsewhere",
        ],
    );
    refused(
        &w,
        &both,
        "only refs/heads/support/engineering may come from support",
    );
}

#[test]
fn hostile_path_outside_the_layout() {
    let (w, forge) = receiving();
    forge.commit(&[
        ("issues/SUP/1.yaml", REPLICA.as_bytes()),
        ("notes/escape.yaml", REPLICA.as_bytes()),
    ]);
    let bad = forge.bundle(
        &w.path("outside.bundle"),
        &["refs/heads/support/engineering"],
    );
    refused(&w, &bad, "notes/escape.yaml: outside the exchange layout");
}

#[test]
fn hostile_replica_in_both_layouts_or_the_wrong_bucket() {
    let (w, forge) = receiving();
    forge.commit(&[
        ("issues/SUP/1.yaml", REPLICA.as_bytes()),
        ("issues/SUP/01/00/1.yaml", REPLICA.as_bytes()),
    ]);
    let twice = forge.bundle(&w.path("twice.bundle"), &["refs/heads/support/engineering"]);
    refused(
        &w,
        &twice,
        "issues/SUP/01/00/1.yaml: the issue's replica is also stored at issues/SUP/1.yaml",
    );

    let (w, forge) = receiving();
    forge.commit(&[("issues/SUP/02/00/1.yaml", REPLICA.as_bytes())]);
    let astray = forge.bundle(
        &w.path("astray.bundle"),
        &["refs/heads/support/engineering"],
    );
    refused(&w, &astray, "issues/SUP/02/00/1.yaml: not a replica path");
}

#[test]
fn hostile_dot_dot_and_absolute_paths() {
    let (w, forge) = receiving();
    good_bundle(&w, &forge);
    let blob = forge.object("blob", REPLICA.as_bytes());
    let sneaky = forge.tree(&[("100644", "..", &blob)]);
    let issues = forge.tree(&[("40000", "SUP", &sneaky)]);
    let root = forge.tree(&[("40000", "issues", &issues)]);
    forge.commit_tree(&root);
    let bad = forge.bundle(
        &w.path("dotdot.bundle"),
        &["refs/heads/support/engineering"],
    );
    refused(&w, &bad, "a '..' component");

    let (w, forge) = receiving();
    good_bundle(&w, &forge);
    let blob = forge.object("blob", REPLICA.as_bytes());
    let root = forge.tree(&[("100644", "/etc", &blob)]);
    forge.commit_tree(&root);
    let bad = forge.bundle(
        &w.path("absolute.bundle"),
        &["refs/heads/support/engineering"],
    );
    refused(&w, &bad, "/etc: an empty path component (absolute path");
}

#[test]
fn hostile_symlink() {
    let (w, forge) = receiving();
    forge.commit(&[("issues/SUP/1.yaml", REPLICA.as_bytes())]);
    std::os::unix::fs::symlink("/etc/passwd", forge.dir.join("issues/SUP/2.yaml")).unwrap();
    forge.commit(&[]);
    let bad = forge.bundle(
        &w.path("symlink.bundle"),
        &["refs/heads/support/engineering"],
    );
    refused(&w, &bad, "issues/SUP/2.yaml: a symbolic link (mode 120000)");
}

#[test]
fn hostile_submodule() {
    let (w, forge) = receiving();
    let first = forge.commit(&[("issues/SUP/1.yaml", REPLICA.as_bytes())]);
    git(
        &forge.dir,
        &[
            "update-index",
            "--add",
            "--cacheinfo",
            &format!("160000,{first},issues/SUP/sub"),
        ],
    );
    git(&forge.dir, &["commit", "-q", "-m", "submodule"]);
    let bad = forge.bundle(
        &w.path("submodule.bundle"),
        &["refs/heads/support/engineering"],
    );
    refused(&w, &bad, "issues/SUP/sub: a submodule (mode 160000)");
}

#[test]
fn hostile_replica_over_the_size_limit() {
    let (w, forge) = receiving();
    let mut huge = REPLICA.replace("summary: Fine", "summary: ").into_bytes();
    let at = huge.len() - 1;
    huge.splice(at..at, std::iter::repeat_n(b'x', 16 * 1024 * 1024 + 1));
    forge.commit(&[("issues/SUP/1.yaml", &huge)]);
    let bad = forge.bundle(&w.path("huge.bundle"), &["refs/heads/support/engineering"]);
    refused(&w, &bad, "over the limit of 16777216 bytes");
}

#[test]
fn hostile_bundle_over_the_configured_limit() {
    let (w, forge) = receiving();
    let file = w.path("engineering/connections/support.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace("max_bytes: 1073741824", "max_bytes: 100"),
    )
    .unwrap();
    let good = good_bundle(&w, &forge);
    refused(&w, &good, "over the limit of 100 bytes");
}

#[test]
fn hostile_malformed_yaml() {
    let (w, forge) = receiving();
    forge.commit(&[(
        "issues/SUP/1.yaml",
        b"ferry: 1\nsite: support\nid: [unclosed\n",
    )]);
    let bad = forge.bundle(
        &w.path("malformed.bundle"),
        &["refs/heads/support/engineering"],
    );
    refused(&w, &bad, "issues/SUP/1.yaml: ");
    let (w, forge) = receiving();
    forge.commit(&[
        ("issues/SUP/1.yaml", REPLICA.as_bytes()),
        ("site.yaml", b"ferry: 1\nsite: [\n"),
    ]);
    let bad = forge.bundle(
        &w.path("site-yaml.bundle"),
        &["refs/heads/support/engineering"],
    );
    refused(&w, &bad, "site.yaml: malformed YAML");
}

#[test]
fn hostile_replica_site_or_id_not_matching() {
    let (w, forge) = receiving();
    forge.commit(&[(
        "issues/SUP/1.yaml",
        REPLICA.replace("site: support", "site: mallory").as_bytes(),
    )]);
    let bad = forge.bundle(&w.path("site.bundle"), &["refs/heads/support/engineering"]);
    refused(&w, &bad, "written by site \"mallory\"");
    let (w, forge) = receiving();
    forge.commit(&[(
        "issues/SUP/1.yaml",
        REPLICA.replace("'1'", "'2'").as_bytes(),
    )]);
    let bad = forge.bundle(&w.path("id.bundle"), &["refs/heads/support/engineering"]);
    refused(&w, &bad, "but is stored at issues/SUP/1.yaml");
}

/// An old bundle played again (or one the peer superseded, arriving late) is
/// archived with a note: the branch never moves back.
#[test]
fn hostile_replay_of_an_old_bundle() {
    let (w, forge) = receiving();
    let old = good_bundle(&w, &forge);
    std::fs::copy(&old, w.path(TO_ENG).join("1.bundle")).unwrap();
    forge.commit(&[(
        "issues/SUP/2.yaml",
        REPLICA
            .replace("'1'", "'2'")
            .replace("SUP-1", "SUP-2")
            .as_bytes(),
    )]);
    let newer = forge.bundle(&w.path("2.bundle"), &["refs/heads/support/engineering"]);
    std::fs::copy(&newer, w.path(TO_ENG).join("2.bundle")).unwrap();
    w.ok("engineering", &["sync"]);
    assert_eq!(w.list("engineering").len(), 2);
    let before = refs(&w, "engineering");
    std::fs::copy(&old, w.path(TO_ENG).join("1-again.bundle")).unwrap();
    let out = w.ok("engineering", &["sync"]);
    assert!(out.contains("1-again.bundle brings"), "{out}");
    assert!(out.contains("superseded"), "{out}");
    assert!(w.path(TO_ENG).join("archive/1-again.bundle").exists());
    assert!(!w.path(&format!("{TO_ENG}/rejected")).exists());
    assert_eq!(refs(&w, "engineering"), before);
    assert_eq!(w.list("engineering").len(), 2);
}

/// The same bundle delivered twice (its writer died between writing it and
/// recording it, and wrote it again) applies nothing and is only archived.
#[test]
fn a_bundle_delivered_twice_is_archived_with_a_note() {
    let (w, forge) = receiving();
    let good = good_bundle(&w, &forge);
    std::fs::copy(&good, w.path(TO_ENG).join("1.bundle")).unwrap();
    w.ok("engineering", &["sync"]);
    let before = refs(&w, "engineering");
    std::fs::copy(&good, w.path(TO_ENG).join("1-again.bundle")).unwrap();
    let out = w.ok("engineering", &["sync"]);
    assert!(out.contains("1-again.bundle brings"), "{out}");
    assert!(out.contains("delivered twice"), "{out}");
    assert!(w.path(TO_ENG).join("archive/1-again.bundle").exists());
    assert_eq!(w.list("engineering").len(), 1);
    let peer_branch = |refs: &str| {
        refs.lines()
            .find(|l| l.ends_with(" refs/heads/support/engineering"))
            .map(str::to_string)
    };
    assert_eq!(peer_branch(&refs(&w, "engineering")), peer_branch(&before));
}

/// `ferry sync` killed (SIGKILL) at each bundle fail point: the next run finishes
/// the work, nothing is lost, nothing is refused, nothing is applied twice.
#[test]
fn sync_killed_at_each_bundle_fail_point_recovers() {
    for point in ["bundle-after-applying", "bundle-after-ref"] {
        let w = two_bundle_sites();
        w.new_issue(
            "support",
            &[
                "--project",
                "SUP",
                "--summary",
                "Killed",
                "--label",
                "escalate",
            ],
        );
        w.ok("support", &["sync"]);
        let run = killed(&w, "engineering", point);
        assert_eq!(run, Some(9), "{point} fired");
        let out = w.ok("engineering", &["sync"]);
        assert_eq!(w.list("engineering").len(), 1, "{point}: {out}");
        assert_eq!(bundles(&w.path(&format!("{TO_ENG}/archive"))).len(), 1);
        assert!(bundles(&w.path(&format!("{TO_ENG}/applying"))).is_empty());
        assert!(!w.path(&format!("{TO_ENG}/rejected")).exists(), "{point}");
    }

    // Killed after writing a bundle, before recording it: the peer takes it, the
    // writer writes it again, and the second delivery is only archived.
    let w = two_bundle_sites();
    w.new_issue(
        "support",
        &[
            "--project",
            "SUP",
            "--summary",
            "Twice",
            "--label",
            "escalate",
        ],
    );
    assert_eq!(killed(&w, "support", "bundle-after-write"), Some(9));
    w.ok("engineering", &["sync"]);
    // Engineering's answer (with its ack) has not travelled back yet.
    for answer in bundles(&w.path(TO_SUP)) {
        std::fs::remove_file(answer).unwrap();
    }
    w.ok("support", &["sync"]);
    let out = w.ok("engineering", &["sync"]);
    assert!(out.contains("delivered twice"), "{out}");
    assert_eq!(w.list("engineering").len(), 1);
    assert!(!w.path(&format!("{TO_ENG}/rejected")).exists());
}

/// Runs `ferry sync` at `site` with the fail point armed; returns the signal
/// that ended it.
fn killed(w: &World, site: &str, point: &str) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    let out = Command::new(assert_cmd::cargo::cargo_bin("ferry"))
        .arg("sync")
        .current_dir(w.path(site))
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("FERRY_USER", "tester")
        .env_remove("FERRY_DIR")
        .env("FERRY_FAILPOINT", point)
        .output()
        .unwrap();
    out.status.signal()
}

#[test]
fn the_demo_tells_the_story_over_bundles() {
    let w = World::new();
    let out = w.ok(".", &["demo", "--bundles", "--keep", "demo"]);
    for line in [
        "SUP-1 → ENG-1 created, 1 comment",
        "on the USB stick:",
        "usb/support-to-engineering/archive/support-engineering-00000001-",
        "kevin (via engineering)",
        "export support: no change, no commit",
        "objects containing an internal comment's text: 0",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    assert!(!w.path("demo/exchange.git").exists(), "no shared repo");
    for bundle in bundles(&w.path("demo/usb/support-to-engineering/archive")) {
        git_verifies(&w.path("demo/engineering/.ferry/exchange.git"), &bundle);
    }
    assert_eq!(w.list("demo/support").len(), 2);
    assert_eq!(w.list("demo/engineering").len(), 1);
}

/// A run that dies between taking a bundle and archiving it leaves the bundle in
/// `applying/`; the next run finishes the job, whichever side of the ref move it
/// died on, and never calls the bundle a replay.
#[test]
fn a_run_that_died_halfway_is_finished_by_the_next() {
    let (w, forge) = receiving();
    let applying = w.path(TO_ENG).join("applying");
    std::fs::create_dir_all(&applying).unwrap();

    // Died before the ref moved: the bundle is applied now.
    let good = good_bundle(&w, &forge);
    std::fs::copy(&good, applying.join("1.bundle")).unwrap();
    let out = w.ok("engineering", &["sync"]);
    assert!(out.contains("SUP-1 → ENG-1 created"), "{out}");
    assert!(!applying.join("1.bundle").exists());
    assert!(w.path(TO_ENG).join("archive/1.bundle").exists());

    // Died after the ref moved: the bundle is only archived.
    forge.commit(&[(
        "issues/SUP/2.yaml",
        REPLICA
            .replace("'1'", "'2'")
            .replace("SUP-1", "SUP-2")
            .as_bytes(),
    )]);
    let second = forge.bundle(&w.path("2.bundle"), &["refs/heads/support/engineering"]);
    w.ok(
        "engineering",
        &["bundle", "import", second.to_str().unwrap()],
    );
    std::fs::copy(&second, applying.join("2.bundle")).unwrap();
    let before = refs(&w, "engineering");
    w.ok("engineering", &["sync"]);
    assert!(w.path(TO_ENG).join("archive/2.bundle").exists());
    assert!(!w.path(TO_ENG).join("rejected/2.bundle").exists());
    assert_eq!(w.list("engineering").len(), 2);
    let after = refs(&w, "engineering");
    let peer_branch = |refs: &str| {
        refs.lines()
            .find(|l| l.ends_with(" refs/heads/support/engineering"))
            .map(str::to_string)
    };
    assert_eq!(peer_branch(&after), peer_branch(&before));
}

/// The shared-repo channel refuses the same hostile trees as bundles, through the
/// same check.
#[test]
fn a_symlink_through_the_shared_repo_is_refused_like_one_in_a_bundle() {
    let w = World::new();
    w.site("support", &[("engineering", "SUP=ENG", "")]);
    signatures_off(&w, "support", "engineering");
    let work = w.path("hostile");
    git(w.root.path(), &["clone", "-q", "exchange.git", "hostile"]);
    git(&work, &["checkout", "-q", "-b", "engineering/support"]);
    std::fs::create_dir_all(work.join("issues/ENG")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", work.join("issues/ENG/1.yaml")).unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "link"]);
    git(&work, &["push", "-q", "origin", "engineering/support"]);
    let run = w.ferry("support", &["sync"]);
    assert_eq!(run.code, 3, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("issues/ENG/1.yaml: a symbolic link (mode 120000)"),
        "{}",
        run.stdout
    );
    let refs = refs(&w, "support");
    assert!(!refs.contains("refs/heads/engineering/support"), "{refs}");
}

/// Turns on `encrypt: true` on a site's bundle channel: bundles are sealed for
/// the peer's trusted signing keys.
fn encrypt_channel(w: &World, site: &str, peer: &str) {
    let file = w.path(&format!("{site}/connections/{peer}.yaml"));
    let text = std::fs::read_to_string(&file).unwrap();
    let sealed = text.replace(
        "  max_bytes: 1073741824\n",
        "  max_bytes: 1073741824\n  encrypt: true\n",
    );
    assert_ne!(sealed, text);
    std::fs::write(&file, sealed).unwrap();
}

#[test]
fn sealed_bundles_travel_unreadable_and_only_the_right_key_opens_them() {
    use ferry::seal::{decrypt_with, encrypt_for};
    use ferry::signing::SiteKey;
    let w = two_bundle_sites();
    encrypt_channel(&w, "support", "engineering");
    encrypt_channel(&w, "engineering", "support");
    let key = w.new_issue(
        "support",
        &[
            "--project",
            "SUP",
            "--summary",
            "Printer on fire",
            "--label",
            "escalate",
        ],
    );
    w.ok("support", &["sync"]);
    let sent: Vec<PathBuf> = walk(&w.path(TO_ENG));
    assert_eq!(sent.len(), 1);
    let name = sent[0].file_name().unwrap().to_str().unwrap().to_string();
    assert!(name.ends_with(".bundle.age"), "{name}");
    let sealed = std::fs::read(&sent[0]).unwrap();
    assert!(sealed.starts_with(b"age-encryption.org/v1\n"));
    let text = String::from_utf8_lossy(&sealed);
    assert!(!text.contains("Printer on fire") && !text.contains("git bundle"));

    // Inside is a plain git bundle, for the holder of engineering's signing key.
    let engineering_key = SiteKey::load(&w.path("engineering/.ferry/signing_key")).unwrap();
    let plain = decrypt_with(&engineering_key, &sealed).unwrap();
    std::fs::write(w.path("inner.bundle"), &plain).unwrap();
    git(w.root.path(), &["init", "-q", "--bare", "oracle.git"]);
    git_verifies(&w.path("oracle.git"), &w.path("inner.bundle"));
    let support_key = SiteKey::load(&w.path("support/.ferry/signing_key")).unwrap();
    assert!(
        decrypt_with(&support_key, &sealed).is_err(),
        "sealed for the peer only"
    );

    let out = w.ok("engineering", &["sync"]);
    assert!(out.contains("SUP-1 → ENG-1 created"), "{out}");
    assert!(w.path(TO_ENG).join("archive").join(&name).exists());
    w.ok("engineering", &["tracker", "comment", "ENG-1", "Seen."]);
    w.ok("engineering", &["sync"]);
    assert!(
        walk(&w.path(TO_SUP))
            .iter()
            .all(|f| f.to_str().unwrap().ends_with(".bundle.age"))
    );
    w.ok("support", &["sync"]);
    assert_eq!(comments(&w.show("support", &key)), ["Seen."]);

    // A bundle sealed for someone else's key is refused, nothing applied.
    w.ok("engineering", &["sync"]); // takes what support sent meanwhile
    let stranger = SiteKey::generate(&w.path("stranger_key"), "stranger").unwrap();
    let foreign = encrypt_for(&[stranger.public_key()], &plain).unwrap();
    std::fs::write(w.path("stranger.bundle.age"), foreign).unwrap();
    refused(
        &w,
        &w.path("stranger.bundle.age"),
        "cannot open the sealed bundle",
    );

    // By hand: the file must say it is encrypted, and then opens on the other side.
    w.ok("support", &["tracker", "comment", &key, "By hand."]);
    w.ok("support", &["export"]);
    let run = w.ferry(
        "support",
        &[
            "bundle",
            "create",
            "--connection",
            "engineering",
            "--out",
            "../hand.bundle",
        ],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains(".bundle.age"), "{}", run.stderr);
    w.ok(
        "support",
        &[
            "bundle",
            "create",
            "--connection",
            "engineering",
            "--out",
            "../hand.bundle.age",
        ],
    );
    let run = w.ferry("engineering", &["bundle", "import", "../hand.bundle.age"]);
    assert_eq!(run.code, 2, "needs --connection: {}", run.stderr);
    assert!(run.stderr.contains("sealed"), "{}", run.stderr);
    w.ok(
        "engineering",
        &[
            "bundle",
            "import",
            "../hand.bundle.age",
            "--connection",
            "support",
        ],
    );
    assert!(comments(&w.show("engineering", "ENG-1")).contains(&"By hand.".to_string()));
}
