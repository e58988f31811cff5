//! The two-site story between two real Redmine servers (support and
//! engineering) through an exchange repo, with the real ferry binary.
//!
//! Needs `FERRY_TEST_REDMINE_SUPPORT_URL/KEY` and
//! `FERRY_TEST_REDMINE_ENGINEERING_URL/KEY` (admin keys of instances that
//! `scripts/redmine-test-setup.sh` prepared; `.ci/run` starts them). Without
//! them the test says SKIPPED; under CI it fails instead. Each run makes fresh
//! projects, so it can run again on the same servers.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::World;

/// One Redmine server, spoken to directly, as its users would.
struct Redmine {
    url: String,
    key: String,
}

impl Redmine {
    fn from_env(name: &str) -> Option<Redmine> {
        let var = |what| std::env::var(format!("FERRY_TEST_REDMINE_{name}_{what}")).ok();
        match (var("URL"), var("KEY")) {
            (Some(url), Some(key)) if !url.is_empty() && !key.is_empty() => {
                Some(Redmine { url, key })
            }
            _ => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI is set but FERRY_TEST_REDMINE_{name}_URL/KEY are not: the live Redmine story must run in CI"
                );
                eprintln!("SKIPPED: no Redmine configured (FERRY_TEST_REDMINE_{name}_URL/KEY)");
                None
            }
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.url);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let response = match (method, body) {
            ("GET", _) => agent
                .get(&url)
                .header("X-Redmine-API-Key", &self.key)
                .call(),
            ("POST", Some(b)) => agent
                .post(&url)
                .header("X-Redmine-API-Key", &self.key)
                .send_json(b),
            ("PUT", Some(b)) => agent
                .put(&url)
                .header("X-Redmine-API-Key", &self.key)
                .send_json(b),
            ("DELETE", None) => agent
                .delete(&url)
                .header("X-Redmine-API-Key", &self.key)
                .call(),
            _ => panic!("{method} {path}"),
        };
        let mut response = response.unwrap();
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        assert!(status < 300, "{method} {path}: {status} {text}");
        if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        }
    }

    /// A fresh project with the admin as manager.
    fn project(&self, prefix: &str) -> String {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let identifier = format!("{prefix}{nanos}");
        let project = self.call(
            "POST",
            "/projects.json",
            Some(json!({"project": {
                "name": identifier, "identifier": identifier,
                "tracker_ids": [1, 2, 3], "is_public": false,
            }})),
        );
        let id = &project["project"]["id"];
        self.call(
            "POST",
            &format!("/projects/{id}/memberships.json"),
            Some(json!({"membership": {"user_id": 1, "role_ids": [3]}})),
        );
        identifier
    }

    fn field_id(&self, name: &str) -> u64 {
        self.call("GET", "/custom_fields.json", None)["custom_fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("custom field {name}: run scripts/redmine-test-setup.sh"))
            ["id"]
            .as_u64()
            .unwrap()
    }

    fn new_issue(&self, project: &str, subject: &str, labels: &str) -> u64 {
        let labels_id = self.field_id("Labels");
        self.call(
            "POST",
            "/issues.json",
            Some(json!({"issue": {
                "project_id": project, "subject": subject, "tracker_id": 1,
                "custom_fields": [{"id": labels_id, "value": labels}],
            }})),
        )["issue"]["id"]
            .as_u64()
            .unwrap()
    }

    fn note(&self, id: u64, text: &str, private: bool) {
        self.call(
            "PUT",
            &format!("/issues/{id}.json"),
            Some(json!({"issue": {"notes": text, "private_notes": private}})),
        );
    }

    fn attach(&self, id: u64, name: &str, content: &[u8]) {
        let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
        let upload: Value = agent
            .post(format!("{}/uploads.json", self.url))
            .query("filename", name)
            .header("X-Redmine-API-Key", &self.key)
            .header("Content-Type", "application/octet-stream")
            .send(content)
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap();
        self.call(
            "PUT",
            &format!("/issues/{id}.json"),
            Some(json!({"issue": {"uploads": [{"token": upload["upload"]["token"], "filename": name}]}})),
        );
    }

    fn download(&self, attachment: &Value) -> Vec<u8> {
        let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
        agent
            .get(attachment["content_url"].as_str().unwrap())
            .header("X-Redmine-API-Key", &self.key)
            .call()
            .unwrap()
            .body_mut()
            .read_to_vec()
            .unwrap()
    }

    fn issues(&self, project: &str) -> Vec<Value> {
        self.call(
            "GET",
            &format!("/issues.json?project_id={project}&status_id=*&limit=100"),
            None,
        )["issues"]
            .as_array()
            .unwrap()
            .clone()
    }

    fn issue(&self, id: &Value) -> Value {
        self.call(
            "GET",
            &format!("/issues/{id}.json?include=journals,attachments"),
            None,
        )["issue"]
            .clone()
    }
}

/// The public and private notes of an issue, as (text, private).
fn notes(issue: &Value) -> Vec<(String, bool)> {
    issue["journals"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| !j["notes"].as_str().unwrap_or("").is_empty())
        .map(|j| {
            (
                j["notes"].as_str().unwrap().replace("\r\n", "\n"),
                j["private_notes"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// A site on Redmine `r`, project `project`, with one connection.
fn redmine_site(w: &World, r: &Redmine, name: &str, project: &str, connection: (&str, &str, &str)) {
    std::fs::create_dir_all(w.path(name)).unwrap();
    std::fs::write(w.path(name).join("redmine.key"), &r.key).unwrap();
    w.ok(
        name,
        &[
            "init",
            "--site",
            name,
            "--tracker",
            "redmine",
            "--url",
            &r.url,
            "--project",
            project,
            "--api-key-file",
            "redmine.key",
        ],
    );
    let (peer, projects, query) = connection;
    w.ok(
        name,
        &[
            "connection",
            "add",
            peer,
            "--channel",
            "../exchange.git",
            "--project",
            projects,
            "--query",
            query,
        ],
    );
}

/// Support and engineering, each on a fresh project of its Redmine (`sup`
/// and `eng`), support sending what is labelled `escalate` and engineering
/// what `engineering_query` selects: the world and the two projects.
fn two_sites(sup: &Redmine, eng: &Redmine, engineering_query: &str) -> (World, String, String) {
    let (sp, ep) = (sup.project("sup"), eng.project("eng"));
    let w = World::new();
    redmine_site(
        &w,
        sup,
        "support",
        &sp,
        ("engineering", &format!("{sp}={ep}"), "labels = escalate"),
    );
    redmine_site(
        &w,
        eng,
        "engineering",
        &ep,
        ("support", &format!("{ep}={sp}"), engineering_query),
    );
    (w, sp, ep)
}

#[test]
fn escalation_between_two_redmines() {
    let (Some(sup), Some(eng)) = (
        Redmine::from_env("SUPPORT"),
        Redmine::from_env("ENGINEERING"),
    ) else {
        return;
    };
    eprintln!(
        "running the two-site story between {} and {}",
        sup.url, eng.url
    );
    let (w, sp, ep) = two_sites(&sup, &eng, "labels = customer-facing");
    // Engineering calls Redmine's "Feedback" "In Progress", and its Redmine
    // login "admin" is kevin to ferry: the mapping tables of ferry.yaml.
    let config = w.path("engineering/ferry.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    let mapped = text.replace(
        "  api_key_file: \"redmine.key\"\n",
        "  api_key_file: \"redmine.key\"\n  statuses:\n    \"In Progress\": Feedback\n  users:\n    kevin: admin\n",
    );
    assert_ne!(text, mapped);
    std::fs::write(&config, mapped).unwrap();
    w.trust("support", "engineering");
    w.trust("engineering", "support");
    let config = std::fs::read_to_string(w.path("support/ferry.yaml")).unwrap();
    assert!(
        config.contains("kind: redmine") && !config.contains(&sup.key),
        "{config}"
    );

    // Support escalates one issue, with a public note, a private one and a file.
    let id = sup.new_issue(&sp, "Printer on fire", "escalate");
    sup.new_issue(&sp, "Not escalated", "");
    sup.note(id, "Customer sent logs.", false);
    sup.note(id, "SECRET-SUPPORT-NOTE", true);
    let trace: Vec<u8> = (0..50_000u32).flat_map(|i| i.to_le_bytes()).collect();
    sup.attach(id, "trace.log", &trace);

    w.ok("support", &["sync"]);
    // Engineering dies right after Redmine created the issue, before its ledger
    // knew: the next run must find that issue by its origin marker, not make a
    // second one.
    w.killed_at("engineering", &["sync"], "after-create");
    assert_eq!(eng.issues(&ep).len(), 1, "the killed run created the issue");
    w.ok("engineering", &["sync"]);
    let issues = eng.issues(&ep);
    assert_eq!(
        issues.len(),
        1,
        "one issue after the retried create: {issues:?}"
    );
    let eng1 = eng.issue(&issues[0]["id"]);
    assert_eq!(eng1["subject"], "Printer on fire");
    let eng_notes = notes(&eng1);
    assert_eq!(eng_notes.len(), 1, "{eng_notes:?}");
    assert!(
        eng_notes[0].0.starts_with("Customer sent logs."),
        "{eng_notes:?}"
    );
    assert!(!eng_notes.iter().any(|(n, _)| n.contains("SECRET")));
    let files = eng1["attachments"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0]["filename"], "trace.log");
    assert!(
        eng.download(&files[0]) == trace,
        "the file crosses byte for byte"
    );

    // Engineering answers, keeps a private note, and starts work.
    let eid = eng1["id"].as_u64().unwrap();
    eng.note(eid, "Reproduced, fix in 2.1.1.", false);
    eng.note(eid, "SECRET-ENG-NOTE", true);
    eng.call(
        "PUT",
        &format!("/issues/{eid}.json"),
        Some(json!({"issue": {"status_id": 4}})),
    );
    w.ok("engineering", &["sync"]);
    w.ok("support", &["sync"]);

    let sup1 = sup.issue(&json!(id));
    assert_eq!(sup1["status"]["name"], "In Progress");
    let sup_notes = notes(&sup1);
    assert_eq!(
        sup_notes
            .iter()
            .filter(|(n, _)| n.starts_with("Reproduced, fix in 2.1.1."))
            .count(),
        1,
        "{sup_notes:?}"
    );
    assert!(!sup_notes.iter().any(|(n, _)| n.contains("SECRET-ENG-NOTE")));
    let answer = &sup_notes
        .iter()
        .find(|(n, _)| n.starts_with("Reproduced"))
        .unwrap()
        .0;
    assert!(
        answer.contains("ferry-author: kevin"),
        "attributed to engineering's kevin: {answer}"
    );
    assert_eq!(
        sup_notes
            .iter()
            .filter(|(n, _)| n.starts_with("Customer sent logs."))
            .count(),
        1,
        "no echo of support's own note: {sup_notes:?}"
    );
    assert_eq!(
        sup1["attachments"].as_array().unwrap().len(),
        1,
        "no echo of the file"
    );

    // Let acknowledgements settle; then a further round is completely quiet.
    w.ok("engineering", &["sync"]);
    w.ok("support", &["sync"]);
    let before = (
        w.commits("support/engineering"),
        w.commits("engineering/support"),
    );
    let s = w.ok("support", &["sync"]);
    let e = w.ok("engineering", &["sync"]);
    assert_eq!(
        before,
        (
            w.commits("support/engineering"),
            w.commits("engineering/support")
        )
    );
    assert!(s.contains("no change, no commit"), "{s}");
    assert!(e.contains("no change, no commit"), "{e}");
    assert_eq!(eng.issues(&ep).len(), 1);
    assert_eq!(sup.issues(&sp).len(), 2);

    let objects = w.exchange_objects();
    assert!(
        objects.contains("Customer sent logs."),
        "the oracle sees the replicas"
    );
    assert!(!objects.contains("SECRET-SUPPORT-NOTE"));
    assert!(!objects.contains("SECRET-ENG-NOTE"));
    assert!(!objects.contains(&sup.key) && !objects.contains(&eng.key));
}

/// Links and parents made in support's Redmine reach engineering's, between
/// the copies; a link made later in Redmine (which does not move either
/// issue's `updated_on`) travels with the next change of one of them, and a
/// link removed at engineering goes at support too.
#[test]
fn links_and_parents_between_two_redmines() {
    let (Some(sup), Some(eng)) = (
        Redmine::from_env("SUPPORT"),
        Redmine::from_env("ENGINEERING"),
    ) else {
        return;
    };
    let (w, sp, ep) = two_sites(&sup, &eng, "labels = escalate");
    w.trust("support", "engineering");
    w.trust("engineering", "support");

    let epic = sup.new_issue(&sp, "Printers", "escalate");
    let blocked = sup.new_issue(&sp, "Printer on fire", "escalate");
    let task = sup.new_issue(&sp, "Replace the fuser", "escalate");
    sup.call(
        "PUT",
        &format!("/issues/{task}.json"),
        Some(json!({"issue": {"parent_issue_id": epic}})),
    );
    let relate = |r: &Redmine, from: u64, to: u64, kind: &str| {
        r.call(
            "POST",
            &format!("/issues/{from}/relations.json"),
            Some(json!({"relation": {"issue_to_id": to, "relation_type": kind}})),
        );
    };
    relate(&sup, epic, blocked, "blocks");
    for _ in 0..2 {
        w.ok("support", &["sync"]);
        w.ok("engineering", &["sync"]);
    }
    let copy = |subject: &str| -> u64 {
        eng.issues(&ep)
            .iter()
            .find(|i| i["subject"] == subject)
            .unwrap_or_else(|| panic!("no {subject:?} at engineering"))["id"]
            .as_u64()
            .unwrap()
    };
    let (e_epic, e_blocked, e_task) = (
        copy("Printers"),
        copy("Printer on fire"),
        copy("Replace the fuser"),
    );
    let relations = |r: &Redmine, id: u64| -> Vec<(u64, String, u64)> {
        let mut found: Vec<(u64, String, u64)> =
            r.call("GET", &format!("/issues/{id}/relations.json"), None)["relations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| {
                    (
                        x["issue_id"].as_u64().unwrap(),
                        x["relation_type"].as_str().unwrap().to_string(),
                        x["issue_to_id"].as_u64().unwrap(),
                    )
                })
                .collect();
        found.sort();
        found
    };
    assert_eq!(
        relations(&eng, e_epic),
        [(e_epic, "blocks".to_string(), e_blocked)]
    );
    let parent = |r: &Redmine, id: u64| r.issue(&json!(id))["parent"]["id"].as_u64();
    assert_eq!(parent(&eng, e_task), Some(e_epic));

    // Made in Redmine later: it waits for a change of one of its issues.
    relate(&sup, task, blocked, "relates");
    w.ok("support", &["sync"]);
    w.ok("engineering", &["sync"]);
    assert_eq!(relations(&eng, e_task), []);
    sup.note(task, "Fuser ordered.", false);
    w.ok("support", &["sync"]);
    w.ok("engineering", &["sync"]);
    // `relates` has no direction: Redmine stores it from whichever end made it.
    let relates = relations(&eng, e_task);
    assert!(
        relates == [(e_task, "relates".to_string(), e_blocked)]
            || relates == [(e_blocked, "relates".to_string(), e_task)],
        "{relates:?}"
    );

    // Removed in engineering's Redmine, then one of its issues changes: gone
    // at support too.
    let listed = eng.call("GET", &format!("/issues/{e_epic}/relations.json"), None);
    let relation = listed["relations"][0]["id"].as_u64().unwrap();
    eng.call("DELETE", &format!("/relations/{relation}.json"), None);
    eng.note(e_blocked, "Not blocked any more.", false);
    for _ in 0..2 {
        w.ok("engineering", &["sync"]);
        w.ok("support", &["sync"]);
    }
    assert_eq!(relations(&sup, epic), []);
    assert_eq!(relations(&eng, e_epic), []);
}

/// `ferry init --tracker redmine` writes the tracker section without the key;
/// a server nobody answers on is a site-level failure (exit 3) that names the
/// URL and not the key, and a missing `--url` is a usage error.
#[test]
fn init_writes_a_redmine_site_and_an_unreachable_server_fails_the_site() {
    let w = World::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    std::fs::create_dir_all(w.path("s")).unwrap();
    std::fs::write(w.path("s/redmine.key"), "secret-key-42\n").unwrap();
    let run = w.ferry(
        "s",
        &[
            "init",
            "--site",
            "s",
            "--tracker",
            "redmine",
            "--url",
            &url,
            "--project",
            "sup",
            "--api-key-file",
            "redmine.key",
        ],
    );
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("cannot reach Redmine at {url}")),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("secret-key-42"), "{}", run.stderr);
    let config = std::fs::read_to_string(w.path("s/ferry.yaml")).unwrap();
    assert!(
        config.contains(&format!(
            "kind: redmine\n  url: \"{url}\"\n  project: \"sup\"\n  api_key_file: \"redmine.key\"\n"
        )),
        "{config}"
    );
    assert!(!config.contains("secret-key-42"));
    let again = w.ferry("s", &["init", "--site", "s"]);
    assert!(
        again
            .stdout
            .contains("note: ferry.yaml already configures the redmine tracker; it was kept"),
        "{}",
        again.stdout
    );

    std::fs::create_dir_all(w.path("t")).unwrap();
    let run = w.ferry(
        "t",
        &[
            "init",
            "--site",
            "t",
            "--tracker",
            "redmine",
            "--project",
            "sup",
        ],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--url"), "{}", run.stderr);
}

/// Even at `FERRY_LOG=trace` the API key reaches no log: the HTTP client's wire
/// dumps (which show every header) are switched off.
#[test]
fn the_api_key_stays_out_of_trace_logs() {
    use assert_cmd::cargo::CommandCargoExt;
    use std::io::{Read, Write};

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    let w = World::new();
    std::fs::create_dir_all(w.path("s")).unwrap();
    let key = "0123456789abcdef-secret";
    let out = std::process::Command::cargo_bin("ferry")
        .unwrap()
        .current_dir(w.path("s"))
        .args(["init", "--site", "s", "--tracker", "redmine", "--url", &url])
        .args(["--project", "sup", "--log-file", "ferry.log"])
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("FERRY_LOG", "trace")
        .env("FERRY_REDMINE_API_KEY", key)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("refused the API key (401"), "{stderr}");
    assert!(stderr.contains("TRACE"), "the trace level is on: {stderr}");
    let log = std::fs::read_to_string(w.path("s/ferry.log")).unwrap();
    for text in [stderr.as_ref(), log.as_str()] {
        // A wire dump is rows of hex with the bytes as text on the right; joined,
        // those columns are what went over the wire.
        let wire: String = text
            .lines()
            .filter_map(|l| l.rsplit_once("  ").map(|(_, ascii)| ascii))
            .collect();
        for seen in [text, wire.as_str()] {
            assert!(!seen.to_lowercase().contains("x-redmine-api-key"), "{text}");
            assert!(!seen.contains(key), "{text}");
        }
    }
}
