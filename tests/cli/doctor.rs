//! `ferry doctor`: each check made to fail, and to pass again.

use std::fs;

use super::World;

fn doctor(w: &World, args: &[&str]) -> (i32, String) {
    let mut all = vec!["doctor"];
    all.extend_from_slice(args);
    let run = w.ferry("support", &all);
    (run.code, run.stdout)
}

/// Breaks something with `break_it`, expects `check` to fail with `fix` in its
/// advice, repairs with `repair`, expects every check to pass again.
fn fails_then_passes(check: &str, fix: &str, break_it: impl Fn(&World), repair: impl Fn(&World)) {
    let w = World::escalating_pair();
    let (code, out) = doctor(&w, &[]);
    assert_eq!(code, 0, "a fresh site is healthy:\n{out}");
    break_it(&w);
    let (code, out) = doctor(&w, &[]);
    assert_eq!(code, 1, "{out}");
    let line = out
        .lines()
        .position(|l| l.starts_with(&format!("FAIL {check}")))
        .unwrap_or_else(|| panic!("no failing {check:?} check in\n{out}"));
    let advice = out.lines().nth(line + 1).unwrap_or_default();
    assert!(
        advice.contains(fix),
        "advice {advice:?} lacks {fix:?}\n{out}"
    );
    repair(&w);
    let (code, out) = doctor(&w, &[]);
    assert_eq!(code, 0, "repaired:\n{out}");
    assert!(out.contains(&format!("ok   {check}")), "{out}");
}

/// Moves `rel` aside and back.
fn aside(rel: &'static str) -> (impl Fn(&World), impl Fn(&World)) {
    (
        move |w: &World| fs::rename(w.path(rel), w.path(&format!("{rel}.aside"))).unwrap(),
        move |w: &World| fs::rename(w.path(&format!("{rel}.aside")), w.path(rel)).unwrap(),
    )
}

#[test]
fn a_healthy_site_passes_every_check() {
    let w = World::escalating_pair();
    let (code, out) = doctor(&w, &[]);
    assert_eq!(code, 0, "{out}");
    for check in [
        "config",
        "ledger",
        "signing key",
        "tracker",
        "rules engineering incoming",
        "rules engineering outgoing",
        "trust engineering",
        "channel engineering",
        "disk",
    ] {
        assert!(
            out.contains(&format!("ok   {check}: ")),
            "{check} missing:\n{out}"
        );
    }
    let json: serde_json::Value = serde_json::from_str(&doctor(&w, &["--json"]).1).unwrap();
    assert!(json.as_array().unwrap().iter().all(|c| c["ok"] == true));
    assert!(json[0]["name"].is_string() && json[0]["detail"].is_string());
}

#[test]
fn config() {
    let (break_it, repair) = aside("support/ferry.yaml");
    fails_then_passes("config", "ferry init", break_it, repair);
}

#[test]
fn ledger() {
    fails_then_passes(
        "ledger",
        "ferry relink",
        |w| {
            fs::rename(w.path("support/.ferry/ledger.db"), w.path("ledger.bak")).unwrap();
            fs::write(w.path("support/.ferry/ledger.db"), vec![b'x'; 8192]).unwrap();
        },
        |w| fs::rename(w.path("ledger.bak"), w.path("support/.ferry/ledger.db")).unwrap(),
    );
}

#[test]
fn signing_key() {
    let (break_it, repair) = aside("support/.ferry/signing_key");
    fails_then_passes("signing key", "ferry init", break_it, repair);
}

#[test]
fn tracker() {
    fails_then_passes(
        "tracker",
        "tracker is up",
        |w| {
            fs::rename(w.path("support/tracker.db"), w.path("tracker.bak")).unwrap();
            fs::create_dir(w.path("support/tracker.db")).unwrap();
        },
        |w| {
            fs::remove_dir(w.path("support/tracker.db")).unwrap();
            fs::rename(w.path("tracker.bak"), w.path("support/tracker.db")).unwrap();
        },
    );
}

#[test]
fn rules() {
    fails_then_passes(
        "rules engineering incoming",
        "ferry rules test",
        |w| {
            let path = w.path("support/rules/incoming.rhai");
            let text = fs::read_to_string(&path).unwrap();
            fs::write(w.path("incoming.bak"), &text).unwrap();
            fs::write(&path, format!("{text}\nlet = ;\n")).unwrap();
        },
        |w| {
            fs::rename(
                w.path("incoming.bak"),
                w.path("support/rules/incoming.rhai"),
            )
            .unwrap()
        },
    );
}

#[test]
fn trust() {
    let (break_it, repair) = aside("support/connections/engineering.allowed_signers");
    fails_then_passes(
        "trust engineering",
        "ferry connection trust engineering",
        break_it,
        repair,
    );
}

#[test]
fn channel() {
    let (break_it, repair) = aside("exchange.git");
    fails_then_passes("channel engineering", "channel URL", break_it, repair);
}

#[test]
fn disk() {
    let w = World::escalating_pair();
    let (code, out) = doctor(&w, &["--min-free-mib", "999999999999"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL disk: only ") && out.contains("free some space"),
        "{out}"
    );
    let (code, out) = doctor(&w, &["--min-free-mib", "1"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_bundle_channel_needs_its_folders() {
    let w = World::new();
    super::bundles::bundle_site(&w, "support", "engineering", "SUP=ENG", "labels = escalate");
    super::bundles::bundle_site(&w, "engineering", "support", "ENG=SUP", "labels = escalate");
    let (code, out) = doctor(&w, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ok   channel engineering: ")
            && out.contains("0 bundles waiting in the inbox"),
        "{out}"
    );
    fs::rename(w.path("usb"), w.path("usb.unplugged")).unwrap();
    let (code, out) = doctor(&w, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL channel engineering: ") && out.contains("does not exist"),
        "{out}"
    );
}
