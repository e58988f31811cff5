//! The whole engine and the CLI with a Jira on one side or both: a local site
//! and a Jira site, `ferry doctor` and `ferry init` against the fake, and the
//! README's Jira quick start between two fake Jiras.

use super::*;

/// Runs ferry in `dir` inside this process and returns what it printed.
pub(super) use crate::cli::run_ok as ferry;

/// The whole engine with a Jira on one side: an issue made on a local site
/// arrives in Jira (created with its origin label, moved through the workflow),
/// and a comment made in Jira comes back attributed.
#[test]
fn a_local_site_and_a_jira_site_sync_through_the_engine() {
    let world = tempfile::tempdir().unwrap();
    let exchange = world.path().join("exchange.git");
    git2::Repository::init_bare(&exchange).unwrap();
    let channel = exchange.to_str().unwrap();
    let fake = FakeJira::start(false, "ENG", "ferry-bot", &Auth::bearer("pat-123").0);
    let support = world.path().join("support");
    let eng = world.path().join("eng");
    std::fs::create_dir_all(&support).unwrap();
    std::fs::create_dir_all(&eng).unwrap();
    std::fs::write(
        eng.join("ferry.yaml"),
        format!(
            "site: eng\ntracker:\n  kind: jira\n  url: \"{}\"\n  flavour: datacenter\n  \
             project: ENG\n  token_file: jira.token\nsync_user: ferry-bot\n",
            fake.url()
        ),
    )
    .unwrap();
    std::fs::write(eng.join("jira.token"), "pat-123\n").unwrap();
    ferry(&support, &["init", "--site", "support"]);
    ferry(&eng, &["init", "--site", "eng"]);
    for (dir, peer, projects) in [(&support, "eng", "SUP=ENG"), (&eng, "support", "ENG=SUP")] {
        ferry(
            dir,
            &[
                "connection",
                "add",
                peer,
                "--channel",
                channel,
                "--project",
                projects,
            ],
        );
    }
    let support_key = ferry(&support, &["key", "show"]);
    let eng_key = ferry(&eng, &["key", "show"]);
    ferry(&support, &["connection", "trust", "eng", eng_key.trim()]);
    ferry(
        &eng,
        &["connection", "trust", "support", support_key.trim()],
    );

    ferry(
        &support,
        &[
            "tracker",
            "new",
            "--project",
            "SUP",
            "--summary",
            "Printer on fire",
            "--description",
            "Smoke.\nTwice.",
            "--status",
            "In Progress",
        ],
    );
    ferry(&support, &["sync"]);
    ferry(&eng, &["sync"]);

    // New issues go in groups: one bulk create.
    let created = fake
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.path == "/rest/api/2/issue/bulk")
        .expect("the issue was created in Jira");
    let body = created.json();
    assert_eq!(body["issueUpdates"].as_array().map(Vec::len), Some(1));
    let fields = &body["issueUpdates"][0]["fields"];
    assert_eq!(fields["summary"], "Printer on fire");
    assert_eq!(fields["description"], "Smoke.\nTwice.");
    assert!(
        fields["labels"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().starts_with("ferry-origin:support:")),
        "{fields}"
    );
    let state = tempfile::tempdir().unwrap();
    let mut jira = JiraTracker::with_client(
        &JiraConfig {
            project: "ENG".into(),
            ..config(Flavour::Datacenter, fake.url())
        },
        Client::new(fake.url(), Auth::bearer("pat-123"), RetryPolicy::default()),
        state.path(),
    );
    let issues = jira.changed_since(None).unwrap();
    assert_eq!(issues.len(), 1, "one issue, not a duplicate per run");
    assert_eq!(
        issues[0].status, "In Progress",
        "moved through a transition"
    );

    jira.add_comment(
        &issues[0].id,
        &NewComment {
            author: "ferry-bot".into(),
            body: "Fixed the fuser.".into(),
            internal: false,
            origin: None,
        },
    )
    .unwrap();
    jira.add_comment(
        &issues[0].id,
        &NewComment {
            author: "ferry-bot".into(),
            body: "Vendor owes us one.".into(),
            internal: true,
            origin: None,
        },
    )
    .unwrap();
    ferry(&eng, &["sync"]);
    ferry(&support, &["sync"]);
    let shown = ferry(&support, &["tracker", "show", "SUP-1"]);
    assert!(shown.contains("Fixed the fuser."), "{shown}");
    assert!(
        !shown.contains("Vendor owes us one."),
        "internal stays in Jira: {shown}"
    );
    ferry(&eng, &["sync"]);
    assert_eq!(
        jira.changed_since(None).unwrap().len(),
        1,
        "no echo, no duplicate"
    );

    // Closed on the embedded tracker, which keeps no resolution: Jira's
    // workflow wants one on the way into Closed, and nothing supplies it.
    ferry(
        &support,
        &["tracker", "edit", "SUP-1", "--status", "Closed"],
    );
    ferry(&support, &["sync"]);
    let (status, out) = ferry_run(&eng, &["sync"]);
    assert_eq!(
        status.unwrap(),
        crate::cli::ExitStatus::IssueErrors,
        "{out}"
    );
    let (_, errors) = ferry_run(&eng, &["errors"]);
    assert!(
        errors.contains("needs Resolution") && errors.contains("tracker.transition_fields"),
        "{errors}"
    );
    // A default in ferry.yaml supplies it on the retry.
    let yaml = std::fs::read_to_string(eng.join("ferry.yaml")).unwrap();
    std::fs::write(
        eng.join("ferry.yaml"),
        yaml.replace(
            "  token_file: jira.token\n",
            "  token_file: jira.token\n  transition_fields: {Resolution: Fixed}\n",
        ),
    )
    .unwrap();
    ferry(&eng, &["retry", "--all"]);
    ferry(&eng, &["sync"]);
    let closed = jira.get(&issues[0].id).unwrap().unwrap();
    assert_eq!(
        (closed.status.as_str(), closed.resolution.as_deref()),
        ("Closed", Some("Fixed"))
    );
}

/// Runs ferry in `dir` inside this process: its exit status and output, or
/// its error.
pub(super) fn ferry_run(
    dir: &std::path::Path,
    args: &[&str],
) -> (anyhow::Result<crate::cli::ExitStatus>, String) {
    let mut out = Vec::new();
    let status = crate::cli::run_in(dir, args, &mut out);
    (status, String::from_utf8(out).unwrap())
}

/// The line after `FAIL <check>`: the advice.
pub(super) fn advice<'a>(out: &'a str, check: &str) -> &'a str {
    let mut lines = out.lines();
    lines
        .find(|l| l.starts_with(&format!("FAIL {check}: ")))
        .unwrap_or_else(|| panic!("no failing {check:?} in\n{out}"));
    lines.next().unwrap_or_default()
}

/// A Data Center site folder on the fake, its token in a file.
pub(super) fn jira_site(fake: &FakeJira, project: &str) -> tempfile::TempDir {
    let site = tempfile::tempdir().unwrap();
    std::fs::write(
        site.path().join("ferry.yaml"),
        format!(
            "site: eng\ntracker:\n  kind: jira\n  url: \"{}\"\n  flavour: datacenter\n  \
             project: {project}\n  token_file: jira.token\nsync_user: ferry-bot\n",
            fake.url()
        ),
    )
    .unwrap();
    std::fs::write(site.path().join("jira.token"), "pat-123\n").unwrap();
    site
}

#[test]
fn doctor_checks_the_account_the_project_and_each_permission() {
    let fake = FakeJira::start(false, "ENG", "ferry-bot", &Auth::bearer("pat-123").0);
    let site = jira_site(&fake, "ENG");
    ferry(site.path(), &["init", "--site", "eng"]);
    let (status, out) = ferry_run(site.path(), &["doctor"]);
    assert_eq!(status.unwrap(), crate::cli::ExitStatus::Success, "{out}");
    assert!(
        out.contains("ok   jira account: ") && out.contains("ferry-bot"),
        "{out}"
    );
    assert!(out.contains("ok   jira project: ENG"), "{out}");
    for permission in [
        "Browse Projects",
        "Create Issues",
        "Edit Issues",
        "Transition Issues",
        "Add Comments",
        "Create Attachments",
    ] {
        assert!(
            out.contains(&format!("ok   jira permission {permission}: ")),
            "{permission}:\n{out}"
        );
    }
    assert!(
        !out.contains("Delete Issues"),
        "the default incoming rule deletes nothing: {out}"
    );
    let asked = fake
        .requests()
        .into_iter()
        .find(|r| r.path == "/rest/api/2/mypermissions")
        .expect("mypermissions asked");
    assert_eq!(asked.query["projectKey"], "ENG");

    fake.deny("TRANSITION_ISSUES");
    let (status, out) = ferry_run(site.path(), &["doctor"]);
    assert_eq!(
        status.unwrap(),
        crate::cli::ExitStatus::IssueErrors,
        "{out}"
    );
    let fix = advice(&out, "jira permission Transition Issues");
    assert!(
        fix.contains("permission scheme") && fix.contains("ENG") && fix.contains("ferry-bot"),
        "{fix}"
    );

    // An incoming rule that deletes needs Delete Issues.
    let exchange = tempfile::tempdir().unwrap();
    git2::Repository::init_bare(exchange.path()).unwrap();
    ferry(
        site.path(),
        &[
            "connection",
            "add",
            "support",
            "--channel",
            exchange.path().to_str().unwrap(),
            "--project",
            "ENG=SUP",
        ],
    );
    let rule = site.path().join("rules/incoming.rhai");
    let mut script = std::fs::read_to_string(&rule).unwrap();
    script.push_str("\nif deleted { delete_issue = true; }\n");
    std::fs::write(&rule, script).unwrap();
    fake.deny("DELETE_ISSUES");
    let (_, out) = ferry_run(site.path(), &["doctor"]);
    assert!(
        advice(&out, "jira permission Delete Issues").contains("delete_issue"),
        "{out}"
    );

    let yaml = std::fs::read_to_string(site.path().join("ferry.yaml")).unwrap();
    std::fs::write(
        site.path().join("ferry.yaml"),
        yaml.replace("project: ENG", "project: NOPE"),
    )
    .unwrap();
    let (_, out) = ferry_run(site.path(), &["doctor"]);
    let fix = advice(&out, "jira project");
    assert!(fix.contains("tracker.project"), "{out}");
    assert!(
        !out.contains("jira permission"),
        "no permission lines without a project: {out}"
    );
    std::fs::write(site.path().join("ferry.yaml"), yaml).unwrap();

    // serverInfo answers anyone: a wrong token passes the reachability check
    // and fails the account check.
    std::fs::write(site.path().join("jira.token"), "expired\n").unwrap();
    let (_, out) = ferry_run(site.path(), &["doctor"]);
    assert!(out.contains("ok   tracker: "), "{out}");
    let fix = advice(&out, "jira account");
    assert!(
        fix.contains("tracker.token_file") && fix.contains(ENV_PAT),
        "{fix}"
    );
}

#[test]
fn init_refuses_a_project_jira_does_not_have_and_takes_a_token_file() {
    let fake = FakeJira::start(false, "ENG", "ferry-bot", &Auth::bearer("pat-123").0);
    let init = |project: &str| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("jira.token"), "pat-123\n").unwrap();
        let (status, out) = ferry_run(
            dir.path(),
            &[
                "init",
                "--site",
                "eng",
                "--tracker",
                "jira",
                "--url",
                fake.url(),
                "--flavour",
                "datacenter",
                "--project",
                project,
                "--token-file",
                "jira.token",
            ],
        );
        (dir, status, out)
    };
    let (_dir, status, out) = init("NOPE");
    let err = status.expect_err("no such project");
    let message = format!("{err:#}");
    assert!(
        message.contains("NOPE") && message.contains("tracker.project"),
        "{message}\n{out}"
    );
    assert!(
        err.chain().any(|c| matches!(
            c.downcast_ref::<TrackerError>(),
            Some(TrackerError::Unavailable(_))
        )),
        "a site failure (exit 3): {err:?}"
    );

    let (dir, status, out) = init("ENG");
    assert_eq!(status.unwrap(), crate::cli::ExitStatus::Success, "{out}");
    assert!(out.contains("ok   jira permission Create Issues"), "{out}");
    let yaml = std::fs::read_to_string(dir.path().join("ferry.yaml")).unwrap();
    assert!(yaml.contains("  token_file: \"jira.token\"\n"), "{yaml}");
}

/// Two Data Center sites, support (SUP) and engineering (ENG), set up as the
/// README's Jira quick start does, with one shared repository between them.
pub(super) struct TwoSites {
    /// Holds the two site folders and the repository.
    _world: tempfile::TempDir,
    pub(super) sup: FakeJira,
    pub(super) eng: FakeJira,
    pub(super) support: std::path::PathBuf,
    pub(super) engineering: std::path::PathBuf,
    state: tempfile::TempDir,
}

impl TwoSites {
    pub(super) fn new() -> TwoSites {
        let world = tempfile::tempdir().unwrap();
        let exchange = world.path().join("exchange.git");
        git2::Repository::init_bare(&exchange).unwrap();
        let channel = exchange.to_str().unwrap();
        let sup = FakeJira::start(false, "SUP", "ferry-bot", &Auth::bearer("pat-sup").0);
        let eng = FakeJira::start(false, "ENG", "ferry-bot", &Auth::bearer("pat-eng").0);
        let support = world.path().join("support");
        let engineering = world.path().join("engineering");
        for (dir, site, fake, project, token, peer, map, query) in [
            (
                &support,
                "support",
                &sup,
                "SUP",
                "pat-sup",
                "engineering",
                "SUP=ENG",
                "labels = escalate AND status != Closed",
            ),
            (
                &engineering,
                "engineering",
                &eng,
                "ENG",
                "pat-eng",
                "support",
                "ENG=SUP",
                "labels = customer-facing",
            ),
        ] {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join("jira.token"), format!("{token}\n")).unwrap();
            let out = ferry(
                dir,
                &[
                    "init",
                    "--site",
                    site,
                    "--tracker",
                    "jira",
                    "--url",
                    fake.url(),
                    "--flavour",
                    "datacenter",
                    "--project",
                    project,
                    "--token-file",
                    "jira.token",
                ],
            );
            assert!(
                out.contains("status map in rules/incoming.rhai: this tracker's statuses Backlog, In Progress, Closed"),
                "{out}"
            );
            ferry(
                dir,
                &[
                    "connection",
                    "add",
                    peer,
                    "--channel",
                    channel,
                    "--project",
                    map,
                    "--query",
                    query,
                ],
            );
        }
        // Replicas carry no resolution yet: the one a done status asks for comes
        // from the setting.
        let yaml = engineering.join("ferry.yaml");
        let text = std::fs::read_to_string(&yaml).unwrap().replace(
            "  # transition_fields: {Resolution: Done}",
            "  transition_fields: {Resolution: Fixed}",
        );
        assert!(
            text.contains("\n  transition_fields: {Resolution: Fixed}"),
            "{text}"
        );
        std::fs::write(&yaml, text).unwrap();
        let support_key = ferry(&support, &["key", "show"]);
        let engineering_key = ferry(&engineering, &["key", "show"]);
        ferry(
            &support,
            &["connection", "trust", "engineering", engineering_key.trim()],
        );
        ferry(
            &engineering,
            &["connection", "trust", "support", support_key.trim()],
        );

        TwoSites {
            _world: world,
            sup,
            eng,
            support,
            engineering,
            state: tempfile::tempdir().unwrap(),
        }
    }

    /// A connector to one of the two (`sup` or `eng`).
    pub(super) fn jira(&self, fake: &FakeJira, project: &str, token: &str) -> JiraTracker {
        JiraTracker::with_client(
            &JiraConfig {
                project: project.into(),
                ..config(Flavour::Datacenter, fake.url())
            },
            Client::new(fake.url(), Auth::bearer(token), quick_retries()),
            self.state.path(),
        )
    }

    pub(super) fn round(&self) {
        ferry(&self.support, &["sync"]);
        ferry(&self.engineering, &["sync"]);
    }
}

/// The README's Jira quick start against two fake Jiras (both Data Center
/// here, the commands are the same): init reads each project's statuses, the
/// connections share what `--query` picks, a status set in one Jira arrives
/// in the other through the map `init` wrote, and a done status there takes
/// its Resolution from `tracker.transition_fields`.
#[test]
fn the_readme_quick_start_syncs_two_jira_sites() {
    let sites = TwoSites::new();
    let mut in_sup = sites.jira(&sites.sup, "SUP", "pat-sup");
    let mut escalated = new_issue("Printer on fire");
    escalated.author = DC_USER.into();
    escalated.patch.labels = Some(vec!["escalate".into()]);
    let mut quiet = new_issue("Not shared");
    quiet.author = DC_USER.into();
    let issue = in_sup.create(&escalated).unwrap();
    in_sup.create(&quiet).unwrap();
    let round = || sites.round();
    round();
    let in_eng = sites.jira(&sites.eng, "ENG", "pat-eng");
    let shared = in_eng.changed_since(None).unwrap();
    assert_eq!(
        shared
            .iter()
            .map(|i| i.summary.as_str())
            .collect::<Vec<_>>(),
        ["Printer on fire"],
        "only what --query picks"
    );
    let copy = shared[0].id.clone();

    let to_progress = IssuePatch {
        status: Some("In Progress".into()),
        ..IssuePatch::default()
    };
    in_sup.update(&issue.id, &to_progress, DC_USER).unwrap();
    round();
    assert_eq!(in_eng.get(&copy).unwrap().unwrap().status, "In Progress");

    in_sup
        .update(&issue.id, &to_closed(Some("Fixed")), DC_USER)
        .unwrap();
    round();
    let closed = in_eng.get(&copy).unwrap().unwrap();
    assert_eq!(
        (closed.status.as_str(), closed.resolution.as_deref()),
        ("Closed", Some("Fixed"))
    );
}
