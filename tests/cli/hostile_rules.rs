//! Rule scripts against big and hostile data: legitimate big issues sync, a rule
//! over its budget fails its issue and nothing else, values a rule returns are
//! bounded, and what a peer wrote cannot drive the reviewer's terminal.

use std::time::{Duration, Instant};

use super::World;

/// Sets an issue's description straight in the embedded tracker's database: a
/// command line cannot carry megabytes (one argument is at most 128 KiB).
fn set_description(w: &World, site: &str, number: i64, text: &str) {
    let db = rusqlite::Connection::open(w.path(&format!("{site}/tracker.db"))).unwrap();
    let changed = db
        .execute(
            "UPDATE issues SET description = ?1, updated = updated + 1 WHERE number = ?2",
            rusqlite::params![text, number],
        )
        .unwrap();
    assert_eq!(changed, 1);
}

/// The unresolved errors of a site, as `ferry errors --json` lists them.
fn errors(w: &World, site: &str) -> Vec<serde_json::Value> {
    serde_json::from_str(&w.ok(site, &["errors", "--json"])).unwrap()
}

#[test]
fn an_issue_with_a_megabyte_of_comments_syncs() {
    let w = World::escalating_pair();
    let key = w.escalate("Crash dumps pasted inline");
    for i in 0..12 {
        let body = format!("dump {i}: {}", "0123456789abcdef".repeat(6_250));
        w.ok("support", &["tracker", "comment", &key, &body]);
    }
    w.ok("support", &["sync"]);
    w.ok("engineering", &["sync"]);
    let copy = w.show("engineering", "ENG-1");
    let comments = copy["comments"].as_array().unwrap();
    assert_eq!(comments.len(), 12);
    assert!(
        comments
            .iter()
            .all(|c| c["body"].as_str().unwrap().len() > 100_000)
    );
}

#[test]
fn an_issue_with_a_two_megabyte_description_syncs() {
    let w = World::escalating_pair();
    w.escalate("Full log in the description");
    let log = "2026-11-20 10:00:00 printer: paper jam\n".repeat(55_000);
    assert!(log.len() > 2_000_000);
    set_description(&w, "support", 1, &log);
    w.ok("support", &["sync"]);
    w.ok("engineering", &["sync"]);
    assert_eq!(
        w.show("engineering", "ENG-1")["description"].as_str(),
        Some(log.as_str())
    );
}

#[test]
fn an_issue_over_the_replica_limit_names_the_limit() {
    let w = World::escalating_pair();
    w.escalate("Too big to travel");
    w.escalate("Small");
    set_description(&w, "support", 1, &"x".repeat(17 * 1024 * 1024));
    let run = w.ferry("support", &["sync"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let errors = errors(&w, "support");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["subject"], "SUP-1", "{errors:?}");
    let message = errors[0]["message"].as_str().unwrap();
    assert!(
        message.contains("16777216")
            && message.contains("replica limit")
            && !message.contains("outgoing.rhai:"),
        "{message}"
    );
    // The other issue went, and the peer is not blocked by a replica it refuses.
    w.ok("engineering", &["sync"]);
    assert_eq!(w.list("engineering").len(), 1);
}

/// Runs `ferry sync` at `site` under an address-space limit of `mib` MiB and a
/// two-minute timeout, so a rule that ran away fails the test instead of the
/// machine.
fn sync_limited(w: &World, site: &str, mib: u64) -> (super::Run, Duration) {
    let ferry = w.command(site, &["sync"]);
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "ulimit -v {}; exec timeout 120 \"$0\" \"$@\"",
            mib * 1024
        ))
        .arg(ferry.get_program())
        .args(ferry.get_args())
        .current_dir(w.path(site));
    for (key, value) in ferry.get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    let started = Instant::now();
    let out = cmd.output().unwrap();
    let run = super::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    (run, started.elapsed())
}

#[test]
fn a_rule_over_its_memory_budget_fails_its_issue_fast() {
    let w = World::escalating_pair();
    w.escalate("Hoarder");
    // 2000 entries of 512 KiB each: a gigabyte, in a map rhai counts as 2000.
    std::fs::write(
        w.path("support/rules/outgoing.rhai"),
        "let s = \"x\";\nwhile s.len() < 512 * 1024 { s += s; }\nlet m = #{};\n\
         for i in 0..2000 { m[\"k\" + i] = s + i; }\nreplica.fields.n = 1;\n",
    )
    .unwrap();
    let (run, took) = sync_limited(&w, "support", 1024);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let errors = errors(&w, "support");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["subject"], "SUP-1", "{errors:?}");
    let message = errors[0]["message"].as_str().unwrap();
    assert!(
        message.contains("outgoing.rhai:4")
            && message.contains("memory budget")
            && message.contains("rules.max_memory_mib"),
        "{message}"
    );
}

#[test]
fn nested_array_growth_is_cut_quickly() {
    let w = World::escalating_pair();
    w.escalate("Matryoshka");
    std::fs::write(
        w.path("support/rules/outgoing.rhai"),
        "let a = [];\nfor i in 0..20000 { a = [a]; }\nreplica.fields.n = 1;\n",
    )
    .unwrap();
    let (run, took) = sync_limited(&w, "support", 1024);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let errors = errors(&w, "support");
    assert_eq!(errors[0]["subject"], "SUP-1", "{errors:?}");
    let message = errors[0]["message"].as_str().unwrap();
    assert!(
        message.contains("outgoing.rhai:2") && message.contains("nests arrays or maps too deeply"),
        "{message}"
    );
}

/// A value nested `depth` deep, as rhai source.
fn nested(depth: usize) -> String {
    format!("let v = \"bottom\";\nfor i in 0..{depth} {{ v = [v]; }}\n")
}

#[test]
fn a_deeply_nested_field_from_the_incoming_rule_is_the_rules_error() {
    let w = World::escalating_pair();
    w.escalate("Deep");
    w.ok("support", &["sync"]);
    let incoming = std::fs::read_to_string(w.path("engineering/rules/incoming.rhai")).unwrap();
    std::fs::write(
        w.path("engineering/rules/incoming.rhai"),
        format!("{incoming}\n{}issue.fields.deep = v;\n", nested(200)),
    )
    .unwrap();
    let run = w.ferry("engineering", &["sync"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let errors = errors(&w, "engineering");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["level"], "issue", "{errors:?}");
    let message = errors[0]["message"].as_str().unwrap();
    assert!(
        message.contains("incoming.rhai")
            && message.contains("`issue.fields.deep`")
            && message.contains("nested deeper than"),
        "{message}"
    );
}

#[test]
fn a_deeply_nested_field_from_the_outgoing_rule_is_the_rules_error() {
    let w = World::escalating_pair();
    w.escalate("Deep");
    std::fs::write(
        w.path("support/rules/outgoing.rhai"),
        format!("{}replica.fields.deep = v;\n", nested(200)),
    )
    .unwrap();
    let run = w.ferry("support", &["sync"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let errors = errors(&w, "support");
    let message = errors[0]["message"].as_str().unwrap();
    assert!(
        message.contains("outgoing.rhai")
            && message.contains("`replica.fields.deep`")
            && message.contains("nested deeper than"),
        "{message}"
    );
    // Nothing the peer would refuse was sent.
    w.ok("engineering", &["sync"]);
}

/// What a hostile peer puts in a summary: clear the screen, retitle the window,
/// a C1 CSI, DEL, a right-to-left override hiding the order of "fire", and a
/// newline forging a line of ferry's own.
const SUMMARY: &str = "Printer\x1b[2J\x1b]0;owned\x07 on \u{202e}erif\u{202c}\u{9b}31m\x7f\n    => nothing changes here";
/// A comment author with an isolate and a mark, and a body that hides itself.
const AUTHOR: &str = "kev\u{2066}in\u{200f}";
const BODY: &str = "Looks fine.\x1b[8m hidden\x1b[0m\r\nApprove it.";

/// Raw characters that must never reach a terminal from peer data.
const RAW: &[char] = &[
    '\x1b', '\x07', '\x7f', '\r', '\u{9b}', '\u{202e}', '\u{202c}', '\u{2066}', '\u{200f}',
];

fn assert_escaped(what: &str, out: &str) {
    assert!(
        !out.contains(RAW),
        "{what} printed a raw control character:\n{}",
        out.escape_debug()
    );
    assert!(
        !out.contains("\n    => nothing changes here"),
        "{what} let a newline forge a line:\n{out}"
    );
}

#[test]
fn what_a_peer_wrote_cannot_drive_the_reviewers_terminal() {
    let mut w = World::new();
    w.now = Some("2026-11-20T10:00:00Z");
    w.site(
        "support",
        &[("engineering", "SUP=ENG", "labels = escalate")],
    );
    w.site(
        "engineering",
        &[("support", "ENG=SUP", "labels = escalate")],
    );
    w.new_issue(
        "engineering",
        &[
            "--project",
            "ENG",
            "--summary",
            SUMMARY,
            "--label",
            "escalate",
        ],
    );
    w.ok(
        "engineering",
        &["tracker", "comment", "ENG-1", "--as", AUTHOR, BODY],
    );
    for (what, args) in [
        ("tracker list", &["tracker", "list"][..]),
        ("tracker show", &["tracker", "show", "ENG-1"]),
        ("status", &["status", "ENG-1"]),
    ] {
        assert_escaped(what, &w.ok("engineering", args));
    }
    w.ok("engineering", &["sync"]);
    w.ok("support", &["pull"]);

    let review = w.ok("support", &["review"]);
    assert_escaped("review", &review);
    insta::assert_snapshot!(review, @r"
    engineering: 1 commit pending, 1 issue

      ENG-1 (new here)
        summary: Printer\u{1b}[2J\u{1b}]0;owned\u{7} on \u{202e}erif\u{202c}\u{9b}31m\u{7f}\n    => nothing changes here
        type: Task   status: Open
        + comment by kev\u{2066}in\u{200f} at 2026-11-20T10:00:00Z:
          Looks fine.\u{1b}[8m hidden\u{1b}[0m
          Approve it.
        => create an issue in SUP
    ");
    assert!(
        review.contains("summary: Printer\\u{1b}[2J\\u{1b}]0;owned\\u{7} on \\u{202e}erif\\u{202c}\\u{9b}31m\\u{7f}\\n    => nothing changes here\n"),
        "{review}"
    );
    assert!(
        review.contains("+ comment by kev\\u{2066}in\\u{200f} at "),
        "{review}"
    );
    assert!(
        review.contains("Looks fine.\\u{1b}[8m hidden\\u{1b}[0m\n"),
        "{review}"
    );
    // The JSON is exact.
    let json: serde_json::Value =
        serde_json::from_str(&w.ok("support", &["review", "--json"])).unwrap();
    let issue = &json[0]["issues"][0];
    assert_eq!(issue["new_issue"]["summary"], SUMMARY, "{issue}");
    assert_eq!(issue["added_comments"][0]["author"], AUTHOR, "{issue}");

    // An error quoting the peer's text.
    let incoming = w.path("support/rules/incoming.rhai");
    let rule = std::fs::read_to_string(&incoming).unwrap();
    std::fs::write(&incoming, "throw replica.summary;").unwrap();
    let run = w.ferry("support", &["import"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_escaped("import", &run.stdout);
    assert_escaped("import's stderr", &run.stderr);
    assert_escaped("errors", &w.ok("support", &["errors"]));
    let errors = errors(&w, "support");
    assert!(
        errors[0]["message"].as_str().unwrap().ends_with(SUMMARY),
        "{errors:?}"
    );

    std::fs::write(&incoming, rule).unwrap();
    w.ok("support", &["retry", "--all"]);
    w.ok("support", &["import"]);
    for (what, args) in [
        ("tracker list", &["tracker", "list"][..]),
        ("tracker show", &["tracker", "show", "SUP-1"]),
        ("status", &["status", "SUP-1"]),
        ("status", &["status"]),
    ] {
        assert_escaped(what, &w.ok("support", args));
    }
    let copy = w.show("support", "SUP-1");
    assert_eq!(copy["summary"], SUMMARY);
    assert_eq!(copy["comments"][0]["author"], AUTHOR);
    assert_eq!(copy["comments"][0]["body"], BODY);
}
