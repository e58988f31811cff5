//! The sample configurations load and every sample rule compiles in a site.

use super::World;

#[test]
fn sample_sites_load_and_their_rules_compile() {
    let w = World::new();
    let samples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    for site in ["support", "engineering"] {
        let dir = w.path(site);
        std::fs::create_dir_all(dir.join("connections")).unwrap();
        std::fs::copy(
            samples.join(site).join("ferry.yaml"),
            dir.join("ferry.yaml"),
        )
        .unwrap();
        for entry in std::fs::read_dir(samples.join(site).join("connections")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(
                entry.path(),
                dir.join("connections").join(entry.file_name()),
            )
            .unwrap();
        }
        // init fills in the default rules and keeps the sample ferry.yaml.
        let out = w.ok(site, &["init", "--site", site]);
        assert!(out.contains("kept    ferry.yaml"), "{out}");
        for entry in std::fs::read_dir(samples.join("rules")).unwrap() {
            let entry = entry.unwrap();
            let target = dir.join("rules").join(entry.file_name());
            if entry.path().is_file() {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
        let list = w.ok(site, &["connection", "list"]);
        assert!(list.contains("exchange.example.org"), "{list}");
        assert!(list.contains("trusts 1 key"), "{list}");
        // A local export runs every outgoing rule of the site (no network needed).
        w.new_issue(
            site,
            &[
                "--project",
                if site == "support" { "SUP" } else { "ENG" },
                "--summary",
                "x",
                "--label",
                "escalate",
            ],
        );
        w.ok(site, &["export"]);
    }
}
