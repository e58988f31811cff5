//! Attachments: content-addressed in the exchange, verified before upload,
//! deduplicated, limited, renamed safely, and streamed.

use sha2::{Digest, Sha256};

use super::bad_input::peer_commit;
use super::{World, git};

fn sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Attaches `content` as `name` to `key` at `site` (through a file in the world).
fn attach(w: &World, site: &str, key: &str, name: &str, content: &[u8]) {
    let file = w.path(&format!("upload-{site}-{name}"));
    std::fs::write(&file, content).unwrap();
    let out = w.ok(
        site,
        &[
            "tracker",
            "attach",
            key,
            file.to_str().unwrap(),
            "--name",
            name,
        ],
    );
    assert!(out.contains(&sha256(content)), "{out}");
}

/// `(name, size, sha256)` of an issue's attachments, in the tracker's order.
fn attachments(w: &World, site: &str, key: &str) -> Vec<(String, u64, String)> {
    w.show(site, key)["attachments"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|a| {
                    (
                        a["name"].as_str().unwrap().to_string(),
                        a["size"].as_u64().unwrap(),
                        a["sha256"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The content paths on a branch of the exchange repo, per the real git.
fn content_paths(w: &World, branch: &str) -> Vec<String> {
    git(
        &w.path("exchange.git"),
        &["ls-tree", "-r", "-d", "--name-only", branch, "attachments/"],
    )
    .lines()
    .chain(
        git(
            &w.path("exchange.git"),
            &["ls-tree", "-r", "--name-only", branch, "attachments/"],
        )
        .lines(),
    )
    .filter(|p| p.matches('/').count() == 2)
    .map(str::to_string)
    .collect::<std::collections::BTreeSet<_>>()
    .into_iter()
    .collect()
}

fn download(w: &World, site: &str, key: &str, name: &str) -> Vec<u8> {
    let out = w.path(&format!("download-{site}-{key}-{name}"));
    w.ok(
        site,
        &[
            "tracker",
            "download",
            key,
            name,
            "--out",
            out.to_str().unwrap(),
        ],
    );
    std::fs::read(out).unwrap()
}

/// Files cross both ways with their bytes, are stored once per branch however
/// many issues carry them, never travel back as echoes, are not re-sent when
/// only the issue changes, and a removal on one side removes the copy.
#[test]
fn attachments_cross_both_ways_once_and_come_back_byte_for_byte() {
    let w = World::escalating_pair();
    let log: Vec<u8> = (0..50_000u32).flat_map(|i| i.to_be_bytes()).collect();
    let patch = b"--- a/x\n+++ b/x\n@@ -1 +1 @@\n-old\n+new\n".to_vec();
    let first = w.escalate("Crash on save");
    let second = w.escalate("Crash on load");
    attach(&w, "support", &first, "crash.log", &log);
    attach(&w, "support", &second, "crash.log", &log);
    w.ok("support", &["sync"]);
    assert_eq!(
        content_paths(&w, "support/engineering"),
        [format!(
            "attachments/{}/{}",
            &sha256(&log)[..2],
            sha256(&log)
        )],
        "the same file on two issues is stored once"
    );
    w.ok("engineering", &["sync"]);
    for key in ["ENG-1", "ENG-2"] {
        assert_eq!(
            attachments(&w, "engineering", key),
            [("crash.log".to_string(), log.len() as u64, sha256(&log))]
        );
        assert!(download(&w, "engineering", key, "crash.log") == log);
    }

    attach(&w, "engineering", "ENG-1", "fix.patch", &patch);
    w.ok("engineering", &["sync"]);
    w.ok("support", &["sync"]);
    let at_support = attachments(&w, "support", &first);
    assert_eq!(at_support.len(), 2, "{at_support:?}");
    assert!(download(&w, "support", &first, "fix.patch") == patch);
    assert_eq!(
        content_paths(&w, "engineering/support"),
        [format!(
            "attachments/{}/{}",
            &sha256(&patch)[..2],
            sha256(&patch)
        )],
        "support's file does not travel back from engineering"
    );

    // Quiet runs: nothing is re-sent, nothing duplicated.
    let commits = (
        w.commits("support/engineering"),
        w.commits("engineering/support"),
    );
    w.ok("engineering", &["sync"]);
    w.ok("support", &["sync"]);
    w.ok("engineering", &["sync"]);
    assert_eq!(
        (
            w.commits("support/engineering"),
            w.commits("engineering/support")
        ),
        commits
    );
    assert_eq!(attachments(&w, "engineering", "ENG-1").len(), 2);
    assert_eq!(attachments(&w, "support", &first).len(), 2);

    // Only the issue changes: the commit touches its replica, not the content.
    w.ok(
        "support",
        &["tracker", "edit", &first, "--summary", "Crash on save (v2)"],
    );
    w.ok("support", &["sync"]);
    let touched = git(
        &w.path("exchange.git"),
        &[
            "diff",
            "--name-only",
            "support/engineering~1",
            "support/engineering",
        ],
    );
    assert!(!touched.contains("attachments/"), "{touched}");

    // A removal flows as a change; the default incoming rule removes the copy.
    w.ok("support", &["tracker", "detach", &first, "crash.log"]);
    w.ok("support", &["sync"]);
    w.ok("engineering", &["sync"]);
    let left: Vec<String> = attachments(&w, "engineering", "ENG-1")
        .into_iter()
        .map(|a| a.0)
        .collect();
    assert_eq!(left, ["fix.patch"]);
    assert_eq!(attachments(&w, "engineering", "ENG-2").len(), 1);
}

/// Content that does not match the SHA-256 its replica names is read twice, then
/// the issue fails with an error naming the file; nothing is uploaded.
#[test]
fn a_corrupted_attachment_is_retried_once_then_reported() {
    let w = World::escalating_pair();
    let claimed = b"the real log";
    let sha = sha256(claimed);
    let replica = format!(
        "ferry: 1\nsite: engineering\nid: '7'\nkey: ENG-7\nproject: ENG\ntype: Bug\n\
         summary: With a file\nstatus: Open\ncreated: 2026-11-20T10:00:00Z\n\
         updated: 2026-11-20T10:00:00Z\nattachments:\n- id: '1'\n  name: app.log\n  \
         size: {}\n  sha256: {sha}\n  created: 2026-11-20T10:00:00Z\n",
        claimed.len()
    );
    let content = format!("attachments/{}/{sha}", &sha[..2]);
    peer_commit(
        &w,
        &[
            ("issues/ENG/7.yaml", &replica),
            (&content, "tampered on the way"),
        ],
    );
    let run = w.ferry("support", &["sync"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("attempt 1 of 2") && run.stderr.contains("attempt 2 of 2"),
        "{}",
        run.stderr
    );
    let errors = w.ok("support", &["errors"]);
    assert!(
        errors.contains("app.log") && errors.contains("failed verification after 2 attempts"),
        "{errors}"
    );
    assert!(errors.contains(&sha), "{errors}");
    for issue in w.list("support") {
        assert!(issue["attachments"].as_array().is_none_or(Vec::is_empty));
    }
}

/// A connection's size limit and an outgoing rule keep files back.
#[test]
fn a_size_limit_and_the_outgoing_rule_keep_files_back() {
    let w = World::escalating_pair();
    let file = w.path("support/connections/engineering.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{text}attachments:\n  max_bytes: 1000\n")).unwrap();
    let rule = w.path("support/rules/outgoing.rhai");
    let mut script = std::fs::read_to_string(&rule).unwrap();
    script.push_str(
        "\nreplica.attachments = replica.attachments.filter(|a| !a.name.ends_with(\".dmp\"));\n",
    );
    std::fs::write(&rule, script).unwrap();

    let key = w.escalate("Files");
    attach(&w, "support", &key, "small.txt", b"small");
    attach(&w, "support", &key, "big.bin", &[7u8; 2000]);
    attach(&w, "support", &key, "core.dmp", b"private memory");
    let run = w.ferry("support", &["sync"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("big.bin") && run.stderr.contains("max_bytes"),
        "{}",
        run.stderr
    );
    w.ok("engineering", &["sync"]);
    let names: Vec<String> = attachments(&w, "engineering", "ENG-1")
        .into_iter()
        .map(|a| a.0)
        .collect();
    assert_eq!(names, ["small.txt"]);
    assert!(!w.exchange_objects().contains("private memory"));
}

/// Names from a hostile peer (climbing paths, control characters, device names)
/// are made safe for the tracker and the file system.
#[test]
fn hostile_names_are_made_safe() {
    let w = World::escalating_pair();
    let hostile = [
        ("../../etc/cron.d/evil", "evil"),
        ("C:\\\\temp\\\\CON.txt", "_CON.txt"),
        ("bell\\u0007.log", "bell_.log"),
    ];
    let mut replica = "ferry: 1\nsite: engineering\nid: '8'\nkey: ENG-8\nproject: ENG\n\
         type: Bug\nsummary: Hostile names\nstatus: Open\ncreated: 2026-11-20T10:00:00Z\n\
         updated: 2026-11-20T10:00:00Z\nattachments:\n"
        .to_string();
    let mut files = Vec::new();
    for (i, (name, _)) in hostile.iter().enumerate() {
        let content = format!("content {i}");
        let sha = sha256(content.as_bytes());
        replica += &format!(
            "- id: '{i}'\n  name: \"{name}\"\n  size: {}\n  sha256: {sha}\n  created: 2026-11-20T10:00:0{i}Z\n",
            content.len()
        );
        files.push((format!("attachments/{}/{sha}", &sha[..2]), content));
    }
    let mut commit: Vec<(&str, &str)> = vec![("issues/ENG/8.yaml", &replica)];
    commit.extend(files.iter().map(|(p, c)| (p.as_str(), c.as_str())));
    peer_commit(&w, &commit);
    w.ok("support", &["sync"]);
    let created = w
        .list("support")
        .into_iter()
        .find(|i| i["summary"] == "Hostile names")
        .expect("the issue was created");
    let mut names: Vec<String> = created["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    let mut expected: Vec<&str> = hostile.iter().map(|h| h.1).collect();
    expected.sort();
    assert_eq!(names, expected);
}

/// Runs ferry to completion and returns its peak resident memory in bytes, as
/// the kernel accounts it for that one process (`wait4`).
///
/// Linux carries a process's peak across `exec`: a child forked from this
/// test process would start its count at this process's size, which depends
/// on what the tests running beside it hold (332 MiB was seen once). So a
/// small Python process starts ferry and reports its peak: ferry is forked
/// from that, and its count starts at Python's few MiB.
fn peak_rss(w: &World, site: &str, args: &[&str]) -> u64 {
    const MEASURE: &str = "import os, subprocess, sys
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
_, status, usage = os.wait4(p.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)";
    let ferry = w.command(site, args);
    let mut measure = std::process::Command::new("python3");
    measure
        .arg("-c")
        .arg(MEASURE)
        .arg(ferry.get_program())
        .args(ferry.get_args());
    if let Some(dir) = ferry.get_current_dir() {
        measure.current_dir(dir);
    }
    for (key, value) in ferry.get_envs() {
        match value {
            Some(value) => measure.env(key, value),
            None => measure.env_remove(key),
        };
    }
    let out = measure
        .output()
        .expect("python3 runs (the notification tests need it too)");
    let said = String::from_utf8_lossy(&out.stdout);
    let (code, kib) = said.trim().split_once(' ').unwrap_or_else(|| {
        panic!(
            "the measuring process said {said:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(code, "0", "ferry {args:?} at {site} failed");
    kib.parse::<u64>().unwrap() * 1024
}

/// A 100 MiB file crosses an air gap (bundles) and back out of the tracker with
/// every ferry process's peak memory well under the file's size: content
/// streams in parts, it is never loaded whole.
#[test]
fn a_large_file_streams_through_bundles_with_bounded_memory() {
    let w = World::new();
    super::bundles::bundle_site(&w, "support", "engineering", "SUP=ENG", "labels = escalate");
    super::bundles::bundle_site(&w, "engineering", "support", "ENG=SUP", "labels = escalate");
    let key = w.escalate("Heap dump attached");
    // Incompressible content, so no step can cheat by compressing it away;
    // written in pieces, so this test process stays small too.
    let size = 100 << 20;
    let file = w.path("heap.bin");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    let mut hasher = Sha256::new();
    let mut x = 0x9E37_79B9_7F4A_7C15_u64;
    for _ in 0..size / 8 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        hasher.update(x.to_le_bytes());
        std::io::Write::write_all(&mut out, &x.to_le_bytes()).unwrap();
    }
    drop(out);
    let sha = format!("{:x}", hasher.finalize());

    // Bounded by the part size and libgit2's mapped-window limit, not by the file:
    // measured 17, 42, 64 and 17 MiB on the machine this was written on.
    let limit = 96 << 20;
    // This process made large on purpose: what is measured must be ferry's
    // own peak, not this process's size at the fork (see `peak_rss`).
    let ballast = vec![1u8; 256 << 20];
    let mut peaks = Vec::new();
    for (site, args) in [
        (
            "support",
            vec!["tracker", "attach", &key, file.to_str().unwrap()],
        ),
        ("support", vec!["sync"]),
        ("engineering", vec!["sync"]),
        (
            "engineering",
            vec![
                "tracker",
                "download",
                "ENG-1",
                "heap.bin",
                "--out",
                "../heap.out",
            ],
        ),
    ] {
        let peak = peak_rss(&w, site, &args);
        eprintln!("peak RSS of ferry {args:?} at {site}: {} MiB", peak >> 20);
        peaks.push(peak);
    }
    drop(std::hint::black_box(ballast));
    assert_eq!(
        attachments(&w, "engineering", "ENG-1"),
        [("heap.bin".to_string(), size as u64, sha.clone())]
    );
    let mut copy = std::fs::File::open(w.path("heap.out")).unwrap();
    let mut hasher = Sha256::new();
    std::io::copy(&mut copy, &mut hasher).unwrap();
    assert_eq!(format!("{:x}", hasher.finalize()), sha);
    assert!(
        peaks.iter().all(|&p| p < limit),
        "peak RSS {:?} MiB, over {} MiB",
        peaks.iter().map(|p| p >> 20).collect::<Vec<_>>(),
        limit >> 20
    );
}

/// A run killed right after the upload, before the journal hears of it, leaves
/// the step open; the next run finds the attachment by name and content and
/// does not upload it again.
#[test]
fn an_upload_interrupted_by_a_crash_is_not_repeated() {
    let w = World::escalating_pair();
    let key = w.escalate("Crash mid-upload");
    attach(&w, "support", &key, "trace.txt", b"stack trace");
    w.ok("support", &["sync"]);
    w.killed_at("engineering", &["sync"], "after-attach");
    let status = w.ok("engineering", &["status"]);
    assert!(
        status.contains("attach"),
        "the open step is shown: {status}"
    );
    w.ok("engineering", &["sync"]);
    assert_eq!(
        attachments(&w, "engineering", "ENG-1"),
        [("trace.txt".to_string(), 11, sha256(b"stack trace"))]
    );
    // And the copy is known as support's: it is not sent back.
    w.ok("support", &["sync"]);
    w.ok("engineering", &["sync"]);
    assert!(content_paths(&w, "engineering/support").is_empty());
}
