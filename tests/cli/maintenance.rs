//! Maintenance of the exchange clone and of the folder channel: automatic
//! repacks past the thresholds, `ferry maintenance` and its sizes, the grace
//! of unreachable objects, and runs killed at every step of a repack. The real
//! `git` is the oracle: `git fsck --full` after everything, `git count-objects`
//! for the sizes, `git cat-file -e` for what was kept and what was pruned.

use std::path::Path;
use std::process::Command;

use super::{World, git};

const CLONES: [&str; 2] = [
    "support/.ferry/exchange.git",
    "engineering/.ferry/exchange.git",
];

/// Sets low thresholds at both sites, so a handful of syncs passes them.
fn low_thresholds(w: &World, packs: u64, loose: u64) {
    for site in ["support", "engineering"] {
        let path = w.path(&format!("{site}/ferry.yaml"));
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(&format!(
            "\nmaintenance:\n  packs: {packs}\n  loose_objects: {loose}\n"
        ));
        std::fs::write(&path, text).unwrap();
    }
}

/// `git count-objects -v` of a repository, as (loose objects, packs).
fn count_objects(repo: &Path) -> (u64, u64) {
    let out = git(repo, &["count-objects", "-v"]);
    let field = |name: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    (field("count"), field("packs"))
}

/// `git fsck --full` of the channel and both clones.
fn fsck_all(w: &World) {
    for repo in ["exchange.git", CLONES[0], CLONES[1]] {
        git(&w.path(repo), &["fsck", "--full", "--no-dangling"]);
    }
}

/// The loose objects of `repo` that git finds nothing reaches.
fn unreachable_loose(repo: &Path) -> Vec<String> {
    git(repo, &["fsck", "--unreachable", "--no-progress"])
        .lines()
        .filter_map(|l| l.split(' ').nth(2))
        .filter(|oid| loose_path(repo, oid).exists())
        .map(str::to_string)
        .collect()
}

/// Whether `repo` holds object `oid`, by git.
fn has_object(repo: &Path, oid: &str) -> bool {
    Command::new("git")
        .args(["cat-file", "-e", oid])
        .current_dir(repo)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .status()
        .unwrap()
        .success()
}

/// The file of a loose object.
fn loose_path(repo: &Path, oid: &str) -> std::path::PathBuf {
    repo.join("objects").join(&oid[..2]).join(&oid[2..])
}

/// Sets a file's modification time `days` days back.
fn age(path: &Path, days: u64) {
    age_seconds(path, days * 24 * 60 * 60);
}

/// Sets a file's modification time `seconds` back.
fn age_seconds(path: &Path, seconds: u64) {
    let when = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - seconds;
    let status = Command::new("touch")
        .arg("-d")
        .arg(format!("@{when}"))
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Moves the times in a repository's list of superseded packs two hours back,
/// and the packs' own times three hours, as if the hour of grace had passed.
fn age_superseded(repo: &Path) -> usize {
    let path = repo.join("ferry-maintenance/superseded");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return 0;
    };
    let aged: Vec<String> = text
        .lines()
        .map(|line| {
            let (secs, name) = line.split_once(' ').unwrap();
            let pack = repo.join(format!("objects/pack/{name}.pack"));
            if pack.exists() {
                let modified = std::fs::metadata(&pack).unwrap().modified().unwrap();
                let age_secs = std::time::SystemTime::now()
                    .duration_since(modified)
                    .unwrap_or_default()
                    .as_secs();
                if age_secs < 3 * 60 * 60 {
                    age_seconds(&pack, 3 * 60 * 60);
                }
            }
            format!("{} {name}", secs.parse::<u64>().unwrap() - 2 * 60 * 60)
        })
        .collect();
    std::fs::write(&path, aged.join("\n") + "\n").unwrap();
    aged.len()
}

/// Every summary engineering sees, sorted.
fn summaries(w: &World, site: &str) -> Vec<String> {
    let mut found: Vec<String> = w
        .list(site)
        .iter()
        .map(|i| i["summary"].as_str().unwrap().to_string())
        .collect();
    found.sort();
    found
}

/// Syncs both sites `rounds` times, each time after a new escalated issue at
/// support; returns the maintenance lines the runs printed.
fn rounds(w: &World, from: usize, rounds: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for i in from..from + rounds {
        w.escalate(&format!("issue {i:03}"));
        for site in ["support", "engineering"] {
            let out = w.ok(site, &["sync"]);
            lines.extend(
                out.lines()
                    .filter(|l| l.starts_with("maint"))
                    .map(str::to_string),
            );
        }
    }
    lines
}

#[test]
fn runs_repack_by_themselves_past_the_thresholds() {
    let w = World::escalating_pair();
    low_thresholds(&w, 4, 30);
    let lines = rounds(&w, 0, 12);
    // Every sync adds a pack to the channel (a push) and to the peer's clone
    // (a fetch), and loose trees and a commit to the exporting clone.
    assert!(
        lines.iter().any(|l| l.contains("channel engineering")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("exchange clone")),
        "{lines:#?}"
    );
    for repo in ["exchange.git", CLONES[0], CLONES[1]] {
        let (loose, packs) = count_objects(&w.path(repo));
        // Superseded packs wait an hour; the ones in use stay under the limit.
        let status: serde_json::Value =
            serde_json::from_str(&w.ok("support", &["status", "--json"])).unwrap();
        let storage = if repo == "exchange.git" {
            &status[0]["channel_storage"]
        } else if repo == CLONES[0] {
            &status[0]["clone_storage"]
        } else {
            continue;
        };
        assert!(
            storage["packs"].as_u64().unwrap() <= 4 + 1,
            "{repo}: {storage}"
        );
        assert!(loose <= 30 + 10, "{repo}: {loose} loose");
        assert!(
            packs >= storage["packs"].as_u64().unwrap(),
            "{repo}: git counts {packs} packs, ferry {storage}"
        );
    }
    fsck_all(&w);
    let expected: Vec<String> = (0..12).map(|i| format!("issue {i:03}")).collect();
    assert_eq!(summaries(&w, "engineering"), expected);
}

#[test]
fn maintenance_prints_sizes_before_and_after() {
    let w = World::escalating_pair();
    rounds(&w, 0, 3);
    let before = count_objects(&w.path("exchange.git"));
    assert!(before.1 >= 3, "{before:?}");
    let out = w.ok("support", &["maintenance"]);
    assert!(out.contains("exchange clone: "), "{out}");
    assert!(
        out.contains("channel engineering (../exchange.git): "),
        "{out}"
    );
    assert!(out.contains(" → "), "{out}");
    assert!(out.contains("objects in a new pack"), "{out}");

    // Everything is in one pack now; the old ones wait for their hour.
    let json: serde_json::Value =
        serde_json::from_str(&w.ok("engineering", &["maintenance", "--json"])).unwrap();
    let entries = json.as_array().unwrap();
    assert_eq!(entries.len(), 2, "{json:#}");
    let clone = entries.iter().find(|e| e["kind"] == "clone").unwrap();
    let channel = entries.iter().find(|e| e["kind"] == "folder").unwrap();
    assert_eq!(channel["peers"], serde_json::json!(["support"]));
    assert_eq!(channel["url"], "../exchange.git");
    // support's maintenance left one pack in use and superseded the rest.
    assert_eq!(channel["before"]["packs"], 1, "{channel:#}");
    assert!(channel["before"]["superseded_packs"].as_u64().unwrap() >= 3);
    for entry in [clone, channel] {
        for side in ["before", "after"] {
            for field in ["bytes", "packs", "loose_objects", "superseded_packs"] {
                assert!(entry[side][field].is_u64(), "{side}.{field}: {entry:#}");
            }
        }
        assert_eq!(entry["after"]["packs"], 1, "{entry:#}");
        // What is left loose is what nothing reaches and the grace keeps
        // (the empty tree a first commit is compared with).
        let repo = w.path(if entry == clone {
            CLONES[1]
        } else {
            "exchange.git"
        });
        let left = entry["after"]["loose_objects"].as_u64().unwrap() as usize;
        assert_eq!(left, unreachable_loose(&repo).len(), "{entry:#}");
        assert!(entry["packed_objects"].as_u64().unwrap() > 0);
        assert!(entry["error"].is_null());
    }
    assert!(clone["before"]["loose_objects"].as_u64().unwrap() > 0);

    // The hour passes: the next maintenance removes the superseded packs, and
    // git agrees on what is left.
    let listed = age_superseded(&w.path("exchange.git"));
    assert!(listed >= 3);
    let out = w.ok("support", &["maintenance"]);
    assert!(out.contains("superseded pack"), "{out}");
    let status: serde_json::Value =
        serde_json::from_str(&w.ok("support", &["status", "--json"])).unwrap();
    assert_eq!(status[0]["channel_storage"]["packs"], 1, "{status:#}");
    assert_eq!(status[0]["channel_storage"]["loose_objects"], 0);
    // git sees the pack in use and at most the one this maintenance superseded.
    let (loose, packs) = count_objects(&w.path("exchange.git"));
    assert_eq!(loose, 0);
    assert!(packs <= 2, "{packs}");

    // status and doctor show the sizes; doctor warns above the thresholds.
    let status = w.ok("support", &["status"]);
    assert!(status.contains("exchange clone "), "{status}");
    assert!(status.contains("  storage   "), "{status}");
    let doctor = w.ferry("support", &["doctor"]).stdout;
    assert!(doctor.contains("ok   storage exchange clone: "), "{doctor}");
    assert!(
        doctor.contains("ok   storage channel engineering (../exchange.git): "),
        "{doctor}"
    );
    low_thresholds(&w, 0, 0);
    rounds(&w, 3, 1);
    let doctor = w.ferry("engineering", &["doctor"]).stdout;
    assert!(doctor.contains("WARN storage "), "{doctor}");
    assert!(doctor.contains("→ run `ferry maintenance`"), "{doctor}");
    fsck_all(&w);
}

#[test]
fn a_server_channel_is_named_as_out_of_reach() {
    let w = World::escalating_pair();
    w.ok(
        "support",
        &[
            "connection",
            "add",
            "lab",
            "--channel",
            "ssh://git@hub.invalid/exchange.git",
            "--project",
            "SUP=LAB",
        ],
    );
    let out = w.ok("support", &["maintenance"]);
    assert!(
        out.contains("channel lab (ssh://git@hub.invalid/exchange.git): on a server"),
        "{out}"
    );
    let doctor = w.ferry("support", &["doctor"]).stdout;
    assert!(
        doctor.contains("storage channel lab (ssh://git@hub.invalid/exchange.git): on a server"),
        "{doctor}"
    );
}

#[test]
fn unreachable_objects_go_after_the_grace_and_not_before() {
    let w = World::escalating_pair();
    rounds(&w, 0, 2);
    let channel = w.path("exchange.git");
    let hash = |text: &str| {
        let file = w.path("object.txt");
        std::fs::write(&file, text).unwrap();
        git(&channel, &["hash-object", "-w", file.to_str().unwrap()])
            .trim()
            .to_string()
    };
    // Two loose objects nothing reaches: one written fifteen days ago, one now.
    let old = hash("unreachable, written long ago\n");
    let young = hash("unreachable, written just now\n");
    age(&loose_path(&channel, &old), 15);
    // And a pack of one unreachable object, fifteen days old, and a young one.
    let pack_of = |text: &str| {
        let oid = hash(text);
        let out = Command::new("git")
            .args(["pack-objects", "objects/pack/pack"])
            .current_dir(&channel)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(format!("{oid}\n").as_bytes())?;
                child.wait_with_output()
            })
            .unwrap();
        assert!(out.status.success());
        let name = String::from_utf8(out.stdout).unwrap().trim().to_string();
        std::fs::remove_file(loose_path(&channel, &oid)).unwrap();
        (oid, channel.join(format!("objects/pack/pack-{name}.pack")))
    };
    let (old_packed, old_pack) = pack_of("unreachable in a pack, long ago\n");
    age(&old_pack, 15);
    let (young_packed, young_pack) = pack_of("unreachable in a pack, just now\n");

    let out = w.ok("support", &["maintenance"]);
    assert!(
        out.contains("1 unreachable and older than the grace"),
        "{out}"
    );
    assert!(!has_object(&channel, &old), "the old loose object was kept");
    assert!(
        has_object(&channel, &young),
        "the young loose object was pruned"
    );
    // The old pack is superseded (its hour starts now), the young one stays.
    assert!(old_pack.exists());
    age_superseded(&channel);
    w.ok("support", &["maintenance"]);
    assert!(!old_pack.exists(), "the old unreachable pack was kept");
    assert!(!has_object(&channel, &old_packed));
    assert!(
        young_pack.exists(),
        "the young unreachable pack was removed"
    );
    assert!(has_object(&channel, &young_packed));
    fsck_all(&w);
    // Everything reachable is still there, and syncing goes on.
    rounds(&w, 2, 1);
    assert_eq!(
        summaries(&w, "engineering"),
        ["issue 000", "issue 001", "issue 002"]
    );
    fsck_all(&w);
}

/// Writes a loose copy of the object `oid` that `repo` holds in a pack (git
/// itself would only touch the pack): a loose object the next repack finds in
/// its new pack and removes.
fn loose_copy(repo: &Path, oid: &str) {
    use std::io::Write;
    let kind = git(repo, &["cat-file", "-t", oid]);
    let body = Command::new("git")
        .args(["cat-file", kind.trim(), oid])
        .current_dir(repo)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap()
        .stdout;
    let mut raw = format!("{} {}\0", kind.trim(), body.len()).into_bytes();
    raw.extend_from_slice(&body);
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(&raw).unwrap();
    let path = loose_path(repo, oid);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, encoder.finish().unwrap()).unwrap();
}

/// Runs `ferry maintenance` at support with `point` armed, insists it was
/// killed there, and checks that git finds every repository whole.
fn killed_maintenance(w: &World, point: &str) {
    // The channel only ever gets packs: give it a loose object to remove.
    let channel = w.path("exchange.git");
    let tip = git(&channel, &["rev-parse", "refs/heads/support/engineering"]);
    loose_copy(&channel, tip.trim());
    w.killed_at("support", &["maintenance"], point);
    fsck_all(w);
}

#[test]
fn maintenance_killed_at_any_step_loses_nothing() {
    let w = World::escalating_pair();
    let mut next = 0;
    let points = [
        "maintenance-after-pack",
        "maintenance-after-install",
        "maintenance-removing-loose",
        "maintenance-after-superseded",
        "maintenance-removing-pack",
    ];
    for point in points {
        // The first hit is in the clone, the second in the channel.
        for hit in [1, 2] {
            next += 2;
            rounds(&w, next - 2, 2);
            if point == "maintenance-removing-pack" {
                // Superseded packs whose hour is over, in both repositories.
                w.ok("support", &["maintenance"]);
                age_superseded(&w.path(CLONES[0]));
                age_superseded(&w.path("exchange.git"));
            }
            killed_maintenance(&w, &format!("{point}:{hit}"));
            // The next run completes, and a repack after it too.
            rounds(&w, next, 1);
            next += 1;
            w.ok("support", &["maintenance"]);
            fsck_all(&w);
        }
    }
    // Nothing left behind but what the grace keeps, and the peer has it all.
    let expected: Vec<String> = (0..next).map(|i| format!("issue {i:03}")).collect();
    assert_eq!(summaries(&w, "engineering"), expected);
    for repo in ["exchange.git", CLONES[0]] {
        let leftovers: Vec<_> = std::fs::read_dir(w.path(repo).join("objects/pack"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("tmp_"))
            .collect();
        assert!(leftovers.is_empty(), "{repo}: {leftovers:?}");
    }
}

#[test]
fn a_sync_killed_in_its_automatic_maintenance_resumes() {
    let w = World::escalating_pair();
    rounds(&w, 0, 2);
    // Every run that changes something repacks.
    low_thresholds(&w, 0, 0);
    w.escalate("issue 002");
    w.killed_at("support", &["sync"], "maintenance-after-install");
    fsck_all(&w);
    w.ok("support", &["sync"]);
    w.ok("engineering", &["sync"]);
    assert_eq!(
        summaries(&w, "engineering"),
        ["issue 000", "issue 001", "issue 002"]
    );
    fsck_all(&w);
}
