//! The operations samples are real: the systemd units pass `systemd-analyze
//! verify`, the crontab lines name commands that exist.

use std::process::Command;

use super::World;

#[test]
fn systemd_units_verify() {
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("skipped: systemd-analyze is not installed here");
        return;
    };
    assert!(probe.status.success());
    let w = World::new();
    let ferry = assert_cmd::cargo::cargo_bin("ferry");
    let samples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/ops");
    let mut units = Vec::new();
    for (sample, unit) in [
        ("ferry-sync@.service", "ferry-sync@support.service"),
        ("ferry-sync@.timer", "ferry-sync@support.timer"),
    ] {
        let text = std::fs::read_to_string(samples.join(sample))
            .unwrap()
            .replace("/usr/local/bin/ferry", ferry.to_str().unwrap());
        let path = w.path(unit);
        std::fs::write(&path, text).unwrap();
        units.push(path);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
        .unwrap();
    let complaints = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && complaints.trim().is_empty(),
        "systemd-analyze verify: {complaints}"
    );
}

#[test]
fn the_crontab_runs_commands_ferry_has() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/ops/crontab"),
    )
    .unwrap();
    let w = World::escalating_pair();
    for line in text.lines().filter(|l| l.contains("/usr/local/bin/ferry")) {
        let command = line.split("/usr/local/bin/ferry").nth(1).unwrap();
        let args: Vec<String> = command
            .split("||")
            .next()
            .unwrap()
            .split_whitespace()
            .map(|a| a.replace("/var/log/ferry/", &format!("{}/", w.root.path().display())))
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = w.ferry("support", &args);
        assert_eq!(run.code, 0, "{line}: {}", run.stderr);
        assert_eq!(run.stdout, "", "{line} must be quiet on success");
    }
}
