//! The connector against the fake Jira: the shared contract for both flavours,
//! and the requests it sends.

use std::time::{Duration, Instant};

use super::fake::{FakeJira, Recorded};
use super::*;
use crate::tracker::DEFAULT_CONCURRENCY;
use crate::tracker::contract::{Setup, run_all};
use sites::ferry;

const CLOUD_USER: &str = "5b10ac8d82e05b22cc7d4ef5";
const DC_USER: &str = "fred";

struct Rig {
    fake: FakeJira,
    jira: JiraTracker,
    config: JiraConfig,
    auth: Auth,
    state: tempfile::TempDir,
}

impl Rig {
    /// The connector of a later run: same Jira, same state folder.
    fn next_run(&self) -> JiraTracker {
        JiraTracker::with_client(
            &self.config,
            Client::new(self.fake.url(), self.auth.clone(), quick_retries()),
            self.state.path(),
        )
    }
}

/// Four attempts with waits of milliseconds; a second of `Retry-After` is 20 ms.
fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        attempts: 4,
        base: Duration::from_millis(10),
        max_wait: Duration::from_secs(2),
        max_total: Duration::from_secs(10),
        second: Duration::from_millis(20),
    }
}

fn config(flavour: Flavour, url: &str) -> JiraConfig {
    JiraConfig {
        url: url.into(),
        flavour,
        project: "SUP".into(),
        jql: String::new(),
        fields: vec!["Severity".into(), "Customer".into()],
        default_type: "Task".into(),
        internal_comments: InternalComments::default(),
        token_file: None,
        transition_fields: BTreeMap::new(),
        concurrency: DEFAULT_CONCURRENCY,
        email: None,
    }
}

fn rig_with(flavour: Flavour, tweak: impl FnOnce(&mut JiraConfig)) -> Rig {
    let (auth, user) = match flavour {
        Flavour::Cloud => (Auth::basic("me@example.com", "token"), CLOUD_USER),
        Flavour::Datacenter => (Auth::bearer("pat"), DC_USER),
    };
    let fake = FakeJira::start(flavour == Flavour::Cloud, "SUP", user, &auth.0);
    let mut config = config(flavour, fake.url());
    tweak(&mut config);
    let state = tempfile::tempdir().expect("temp dir");
    let jira = JiraTracker::with_client(
        &config,
        Client::new(fake.url(), auth.clone(), quick_retries()),
        state.path(),
    );
    Rig {
        fake,
        jira,
        config,
        auth,
        state,
    }
}

fn rig(flavour: Flavour) -> Rig {
    rig_with(flavour, |_| {})
}

fn contract(flavour: Flavour, user: &str) {
    let setup = Setup {
        project: "SUP",
        user,
        done: Some(("Closed", "Fixed")),
        epic: Some("Epic"),
    };
    run_all(&setup, &mut |check| {
        let mut rig = rig(flavour);
        check(&mut rig.jira);
    });
}

#[test]
fn contract_cloud_v3() {
    contract(Flavour::Cloud, CLOUD_USER);
}

#[test]
fn contract_datacenter_v2() {
    contract(Flavour::Datacenter, DC_USER);
}

fn new_issue(summary: &str) -> NewIssue {
    NewIssue {
        project: "SUP".into(),
        patch: IssuePatch {
            summary: Some(summary.into()),
            ..IssuePatch::default()
        },
        author: CLOUD_USER.into(),
        origin: None,
    }
}

#[test]
fn cloud_sends_adf_basic_auth_and_the_origin_label() {
    let mut rig = rig(Flavour::Cloud);
    let mut issue = new_issue("Printer on fire");
    issue.patch.description = Some(Some("# Steps\n\n- plug in\n- smoke".into()));
    issue.origin = Some(Origin {
        site: "acme".into(),
        id: "42 a:b".into(),
    });
    let created = rig.jira.create(&issue).expect("create");
    assert_eq!(created.origin, issue.origin);
    assert!(created.labels.is_empty(), "the marker label is not a label");
    let post = rig
        .fake
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.path == "/rest/api/3/issue")
        .expect("a create");
    assert!(post.headers["authorization"].starts_with("Basic "));
    let body = post.json();
    assert_eq!(body["fields"]["description"]["type"], "doc");
    assert_eq!(
        body["fields"]["description"]["content"][1]["type"],
        "bulletList"
    );
    assert_eq!(
        body["fields"]["labels"],
        json!(["ferry-origin:acme:42%20a%3Ab"])
    );
    assert_eq!(body["fields"]["issuetype"], json!({"name": "Task"}));

    // The connector that made it knows where; a later run searches.
    let found = rig
        .jira
        .find_by_origin(issue.origin.as_ref().unwrap())
        .expect("find");
    assert_eq!(found.as_ref(), Some(&created));
    let found = rig
        .next_run()
        .find_by_origin(issue.origin.as_ref().unwrap())
        .expect("find");
    assert_eq!(found, Some(created));
    let search = rig.fake.requests().pop().expect("requests");
    let search = rig
        .fake
        .requests()
        .into_iter()
        .rfind(|r| r.path == "/rest/api/3/search/jql")
        .unwrap_or(search);
    assert_eq!(
        search.query["jql"],
        "labels = \"ferry-origin:acme:42%20a%3Ab\""
    );
}

#[test]
fn datacenter_sends_plain_text_and_a_bearer_token() {
    let mut rig = rig(Flavour::Datacenter);
    let mut issue = new_issue("Printer on fire");
    issue.author = DC_USER.into();
    issue.patch.description = Some(Some("h1. Wiki stays wiki".into()));
    issue.patch.assignee = Some(Some(DC_USER.into()));
    let created = rig.jira.create(&issue).expect("create");
    assert_eq!(created.description.as_deref(), Some("h1. Wiki stays wiki"));
    let post = rig
        .fake
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.path == "/rest/api/2/issue")
        .expect("a create");
    assert_eq!(post.headers["authorization"], "Bearer pat");
    assert_eq!(post.json()["fields"]["description"], "h1. Wiki stays wiki");
    assert_eq!(post.json()["fields"]["assignee"], json!({"name": "fred"}));
}

#[test]
fn changed_since_asks_for_a_relative_window_within_the_scope() {
    let mut rig = rig_with(Flavour::Datacenter, |c| {
        c.jql = "status != \"Closed\"".into()
    });
    let a = rig.jira.create(&new_issue("one")).expect("create");
    let b = rig.jira.create(&new_issue("two")).expect("create");
    let c = rig.jira.create(&new_issue("three")).expect("create");
    let d = rig.jira.create(&new_issue("four")).expect("create");
    rig.jira
        .update(&c.id, &to_closed(Some("Fixed")), DC_USER)
        .expect("close");
    let since = a.updated - chrono::Duration::minutes(3);
    let changed = rig.jira.changed_since(Some(since)).expect("changed");
    let ids: Vec<&str> = changed.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(
        ids,
        [a.id.as_str(), b.id.as_str(), d.id.as_str()],
        "closed ones are outside the scope"
    );
    let searches: Vec<_> = rig
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.path == "/rest/api/2/search")
        .collect();
    assert_eq!(
        searches[0].query["jql"],
        "project = \"SUP\" AND (status != \"Closed\") AND updated >= \"-5m\" ORDER BY updated ASC"
    );
    assert!(
        searches
            .iter()
            .filter(|r| r.query["startAt"] != "0")
            .count()
            >= 1,
        "the fake pages by two, so the connector must page"
    );
}

#[test]
fn jql_errors_are_site_errors_with_jiras_message() {
    let rig = rig_with(Flavour::Cloud, |c| c.jql = "bugs AND".into());
    let err = rig.jira.changed_since(None).expect_err("bad JQL");
    let TrackerError::Unavailable(message) = err else {
        panic!("not a site error: {err:?}");
    };
    assert!(message.contains("Error in the JQL Query"), "{message}");
}

#[test]
fn a_status_without_a_transition_names_the_workflow() {
    let mut rig = rig(Flavour::Cloud);
    let issue = rig.jira.create(&new_issue("stuck")).expect("create");
    let err = rig
        .jira
        .update(
            &issue.id,
            &IssuePatch {
                status: Some("Resolved".into()),
                ..IssuePatch::default()
            },
            CLOUD_USER,
        )
        .expect_err("no path");
    let TrackerError::Rejected {
        issue: key,
        message,
    } = err
    else {
        panic!("not issue-level: {err:?}");
    };
    assert_eq!(key, issue.key);
    assert!(
        message.contains("workflow of Task issues in project SUP")
            && message.contains("\"Backlog\" to \"Resolved\"")
            && message.contains("In Progress, Closed"),
        "{message}"
    );
    let moved = rig
        .jira
        .update(
            &issue.id,
            &IssuePatch {
                status: Some("in progress".into()),
                ..IssuePatch::default()
            },
            CLOUD_USER,
        )
        .expect("a transition exists");
    assert_eq!(moved.status, "In Progress");
    let post = rig
        .fake
        .requests()
        .into_iter()
        .rfind(|r| r.method == "POST" && r.path.ends_with("/transitions"))
        .expect("a transition");
    assert_eq!(post.json(), json!({"transition": {"id": "2"}}));
}

#[test]
fn internal_comments_get_the_configured_restriction() {
    for (setting, expect_visibility, expect_sd) in [
        (
            InternalComments::default(),
            Some(json!({"type": "role", "value": "Administrators"})),
            false,
        ),
        (
            InternalComments::Group {
                value: "jira-developers".into(),
            },
            Some(json!({"type": "group", "value": "jira-developers"})),
            false,
        ),
        (InternalComments::Servicedesk, None, true),
    ] {
        let mut rig = rig_with(Flavour::Cloud, |c| c.internal_comments = setting.clone());
        let issue = rig.jira.create(&new_issue("secret")).expect("create");
        let comment = NewComment {
            author: "alice@peer".into(),
            body: "Looks like PEBKAC.".into(),
            internal: true,
            origin: None,
        };
        let stored = rig.jira.add_comment(&issue.id, &comment).expect("comment");
        assert!(stored.internal, "{setting:?}");
        assert_eq!(stored.author, "alice@peer");
        assert_eq!(stored.body, "Looks like PEBKAC.");
        let post = rig
            .fake
            .requests()
            .into_iter()
            .rfind(|r| r.method == "POST" && r.path.ends_with("/comment"))
            .expect("a comment");
        let body = post.json();
        assert_eq!(body.get("visibility").cloned(), expect_visibility);
        let sd = body["properties"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["key"] == "sd.public.comment" && p["value"]["internal"] == true);
        assert_eq!(sd, expect_sd);
        assert_eq!(
            adf::to_text(&body["body"]),
            "alice@peer wrote:\n\nLooks like PEBKAC.",
            "a peer's comment is attributed in the text people read"
        );
    }
}

#[test]
fn recorded_comments_with_visibility_or_jsd_private_are_internal() {
    let rig = rig(Flavour::Datacenter);
    let page = fixture_json("v2/issue-restricted-comment.json");
    let restricted = rig
        .jira
        .parse_comment(&page["fields"]["comment"]["comments"][0])
        .expect("parse");
    assert!(restricted.internal);
    assert_eq!(restricted.author, "fred");
    let mut public = page["fields"]["comment"]["comments"][0].clone();
    public.as_object_mut().unwrap().remove("visibility");
    assert!(!rig.jira.parse_comment(&public).unwrap().internal);
    public["jsdPublic"] = json!(false);
    assert!(rig.jira.parse_comment(&public).unwrap().internal);
}

#[test]
fn recorded_issues_parse_in_both_flavours() {
    let read = fixture_json;
    let cloud = rig_with(Flavour::Cloud, |c| c.fields.clear());
    let issue = cloud
        .jira
        .parse_issue(&read("v3/issue-get.json"))
        .expect("v3 issue");
    assert_eq!(
        (
            issue.id.as_str(),
            issue.key.as_str(),
            issue.project.as_str()
        ),
        ("10032", "KP-19", "KP")
    );
    assert_eq!(
        (issue.issue_type.as_str(), issue.status.as_str()),
        ("Story", "Backlog")
    );
    assert_eq!(issue.priority.as_deref(), Some("Medium"));
    assert_eq!(issue.created.to_rfc3339(), "2021-05-08T06:04:25+00:00");
    assert!(issue.description.unwrap().starts_with("**Lorem Ipsum**"));
    let dc = rig_with(Flavour::Datacenter, |c| c.fields.clear());
    let issue = dc
        .jira
        .parse_issue(&read("v2/issue-get.json"))
        .expect("v2 issue");
    assert_eq!(issue.key, "KP-19");
    assert!(
        issue.description.unwrap().starts_with("*Lorem Ipsum*"),
        "wiki text as it is"
    );
    let restricted = read("v2/issue-restricted-comment.json");
    let attachment = dc
        .jira
        .parse_attachment(&restricted["fields"]["attachment"][0])
        .expect("v2 attachment");
    assert_eq!(
        (
            attachment.id.as_str(),
            attachment.name.as_str(),
            attachment.size
        ),
        ("10000", "picture.jpg", 23123)
    );
    assert_eq!(attachment.author.as_deref(), Some("fred"));
    assert!(attachment.sha256.is_empty(), "Jira knows no content hash");
    let v3 = cloud
        .jira
        .parse_attachment(&read("v3/attachment-metadata.json"))
        .expect("v3 attachment");
    assert_eq!(
        (v3.id.as_str(), v3.author.as_deref()),
        ("10000", Some("5b10a2844c20165700ede21g"))
    );
    let search = read("v3/search.json");
    for raw in search["issues"].as_array().unwrap() {
        cloud.jira.parse_issue(raw).expect("search hit");
    }
}

#[test]
fn throttling_and_outages_are_retried_with_bounds() {
    let rig = rig(Flavour::Cloud);
    rig.fake.fail_next(429, &[("Retry-After", "1")], "{}");
    rig.fake.fail_next(503, &[], "<html>maintenance</html>");
    let started = Instant::now();
    rig.jira.now().expect("retried");
    assert!(
        started.elapsed() >= Duration::from_millis(20),
        "Retry-After honoured (1 s, scaled to 20 ms)"
    );
    assert_eq!(rig.fake.requests().len(), 3);

    for _ in 0..4 {
        rig.fake.fail_next(503, &[], "<html>maintenance</html>");
    }
    let err = rig.jira.now().expect_err("gives up");
    assert!(
        matches!(&err, TrackerError::Unavailable(m) if m.contains("503") && m.contains("maintenance") && m.contains("(4 tries)")),
        "{err:?}"
    );
    assert_eq!(
        rig.fake.requests().len(),
        3 + 4,
        "four attempts, then it stops"
    );
}

#[test]
fn attachments_go_up_as_multipart_with_the_no_check_header() {
    let mut rig = rig(Flavour::Datacenter);
    let issue = rig.jira.create(&new_issue("with file")).expect("create");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.txt");
    std::fs::write(&path, b"hello").unwrap();
    let file = NewAttachment {
        name: "a \"quoted\".txt",
        author: DC_USER,
        path: &path,
        size: 5,
        sha256: "",
    };
    let stored = rig.jira.attach(&issue.id, &file).expect("attach");
    assert_eq!(stored.name, "a _quoted_.txt");
    let post = rig
        .fake
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/attachments"))
        .expect("upload");
    assert_eq!(post.headers["x-atlassian-token"], "no-check");
    assert!(post.headers["content-type"].starts_with("multipart/form-data; boundary="));
}

#[test]
fn an_issue_deleted_in_jira_becomes_a_tombstone_once_a_later_run_confirms_it() {
    let mut rig = rig(Flavour::Cloud);
    let issue = rig.jira.create(&new_issue("gone")).expect("create");
    let before = rig.jira.now().unwrap();
    rig.fake.delete_directly(&issue.id);
    let changed = rig.jira.changed_since(Some(before)).expect("changed");
    assert!(
        changed.iter().all(|i| i.id != issue.id),
        "one run's 404 is not yet a deletion: {changed:?}"
    );
    let err = rig.jira.get(&issue.id).expect_err("unconfirmed");
    assert!(
        matches!(&err, TrackerError::Transient { issue: key, .. } if *key == issue.key),
        "{err:?}"
    );

    let later = rig.next_run();
    let changed = later.changed_since(Some(before)).expect("changed");
    let tomb = changed
        .iter()
        .find(|i| i.id == issue.id)
        .expect("tombstone");
    assert!(tomb.deleted && tomb.key == issue.key && tomb.summary == "gone");
    assert!(later.get(&issue.id).unwrap().unwrap().deleted);
    assert!(later.get_by_key(&issue.key).unwrap().unwrap().deleted);
}

/// Jira answers 404 for a moment while a node's index lags or a permission
/// scheme is being edited; the issue is back on the next run and was never
/// deleted.
#[test]
fn a_transient_404_is_an_error_to_retry_naming_the_key() {
    let rig = rig(Flavour::Datacenter);
    let mut jira = rig.next_run();
    let issue = jira.create(&new_issue("flaky")).expect("create");
    let before = jira.now().unwrap();
    rig.fake.hide(&issue.id);
    assert!(
        jira.changed_since(Some(before))
            .unwrap()
            .iter()
            .all(|i| i.id != issue.id)
    );
    let err = jira.get(&issue.id).expect_err("a 404 this run");
    let message = err.to_string();
    assert!(
        matches!(err, TrackerError::Transient { .. })
            && message.contains(&issue.key)
            && !message.contains(&issue.id),
        "{message}"
    );
    let err = jira
        .add_comment(
            &issue.id,
            &NewComment {
                author: DC_USER.into(),
                body: "x".into(),
                internal: false,
                origin: None,
            },
        )
        .expect_err("gone for now");
    assert!(
        err.to_string().contains(&issue.key) && !err.to_string().contains(&issue.id),
        "{err}"
    );

    rig.fake.unhide(&issue.id);
    let later = rig.next_run();
    assert!(
        later
            .changed_since(Some(before))
            .unwrap()
            .iter()
            .all(|i| !i.deleted),
        "back, and never buried"
    );
    assert!(!later.get(&issue.id).unwrap().unwrap().deleted);
    // Its suspicion is cleared: a single 404 in a third run is again only that.
    rig.fake.hide(&issue.id);
    let third = rig.next_run();
    assert!(matches!(
        third.get(&issue.id),
        Err(TrackerError::Transient { .. })
    ));
}

/// A 403 on an issue is about that issue (a security level, a permission
/// scheme), not about the site, and never a deletion.
#[test]
fn a_403_on_one_issue_fails_that_issue_only() {
    let rig = rig(Flavour::Cloud);
    let mut jira = rig.next_run();
    let issue = jira.create(&new_issue("secret")).expect("create");
    rig.fake.fail_next(
        403,
        &[],
        r#"{"errorMessages":["You do not have the permission to see the specified issue."],"errors":{}}"#,
    );
    let err = jira.get(&issue.id).expect_err("403");
    assert!(
        matches!(&err, TrackerError::Transient { issue: key, message } if *key == issue.key && message.contains("permission")),
        "{err:?}"
    );
}

#[test]
fn bad_credentials_are_a_site_error() {
    let fake = FakeJira::start(true, "SUP", CLOUD_USER, "Basic right");
    let state = tempfile::tempdir().unwrap();
    let jira = JiraTracker::with_client(
        &config(Flavour::Cloud, fake.url()),
        Client::new(
            fake.url(),
            Auth::basic("me@example.com", "wrong"),
            RetryPolicy::default(),
        ),
        state.path(),
    );
    let err = jira.get("10000").expect_err("401");
    assert!(
        matches!(&err, TrackerError::Unavailable(m) if m.contains("401") && m.contains("Authentication failed")),
        "{err:?}"
    );
}

#[test]
fn origin_labels_round_trip() {
    for (site, id) in [("acme", "42"), ("a:b", "x y%z"), ("s", "ünï")] {
        let origin = Origin {
            site: site.into(),
            id: id.into(),
        };
        let label = origin_label_of(&origin);
        assert!(!label.contains(' '));
        assert_eq!(parse_origin_label(&label), Some(origin));
    }
    assert_eq!(parse_origin_label("customer"), None);
}

#[test]
fn the_block_init_writes_parses_with_every_option() {
    let yaml = "kind: jira\nurl: \"https://acme.atlassian.net\"\nflavour: cloud\nproject: \"SUP\"\n\
                jql: component = Printers\nfields: [Severity, Fix versions]\ndefault_type: Bug\n\
                internal_comments: {type: group, value: jira-developers}\n";
    let parsed: crate::config::TrackerConfig = serde_yaml::from_str(yaml).expect("parses");
    let crate::config::TrackerConfig::Jira(jira) = parsed else {
        panic!("not jira: {parsed:?}");
    };
    assert_eq!(jira.fields, ["Severity", "Fix versions"]);
    assert_eq!(
        jira.internal_comments,
        InternalComments::Group {
            value: "jira-developers".into()
        }
    );
    let sd: crate::config::TrackerConfig = serde_yaml::from_str(
        "kind: jira\nurl: x\nflavour: datacenter\nproject: P\ninternal_comments: {type: servicedesk}\n",
    )
    .expect("parses");
    assert!(
        matches!(sd, crate::config::TrackerConfig::Jira(j) if j.internal_comments == InternalComments::Servicedesk)
    );
    let typo = serde_yaml::from_str::<crate::config::TrackerConfig>(
        "kind: jira\nurl: x\nflavour: cloud\nproject: P\ntoken: oops\n",
    );
    assert!(
        typo.is_err(),
        "unknown keys are refused (no secrets in ferry.yaml)"
    );
}

#[test]
fn named_fields_read_and_write_in_jiras_shapes() {
    let rig = rig(Flavour::Cloud);
    let fields = fixture_json("v3/fields.json");
    let schema = |id: &str| {
        fields
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == id)
            .map(|f| f["schema"].clone())
            .unwrap()
    };
    let issue = fixture_json("v3/issue-get.json");
    // An option field as recorded, and its write shape from the recorded schema.
    let option = read_field(&issue["fields"]["customfield_10038"], &rig.jira);
    assert_eq!(option, json!("App 3"));
    assert_eq!(
        write_field(&option, &schema("customfield_10005"), &rig.jira),
        json!({"value": "App 3"})
    );
    // Fix versions: an array of versions, by name.
    let versions = json!([{"self": "x", "id": "10000", "name": "1.0", "released": false}]);
    assert_eq!(read_field(&versions, &rig.jira), json!(["1.0"]));
    assert_eq!(
        write_field(&json!(["1.0", "1.1"]), &schema("fixVersions"), &rig.jira),
        json!([{"name": "1.0"}, {"name": "1.1"}])
    );
    // Users by account id; numbers as they are; null clears.
    let user = fixture_json("v3/comment-get.json")["author"].clone();
    assert_eq!(
        read_field(&user, &rig.jira),
        json!("5b10a2844c20165700ede21g")
    );
    assert_eq!(
        write_field(&json!(3), &json!({"type": "number"}), &rig.jira),
        json!(3)
    );
    assert_eq!(
        write_field(&Value::Null, &schema("fixVersions"), &rig.jira),
        Value::Null
    );
}

fn fixture_json(path: &str) -> Value {
    let file = format!("{}/tests/fixtures/jira/{path}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap()
}

fn to_closed(resolution: Option<&str>) -> IssuePatch {
    IssuePatch {
        status: Some("Closed".into()),
        resolution: resolution.map(|r| Some(r.to_string())),
        ..IssuePatch::default()
    }
}

/// Jira's classic workflows ask for a Resolution on the way into a done
/// status: the connector reads the transition's screen and fills it.
#[test]
fn a_done_status_gets_the_resolution_its_screen_requires() {
    for flavour in [Flavour::Cloud, Flavour::Datacenter] {
        let mut rig = rig(flavour);
        let issue = rig.jira.create(&new_issue("fixed soon")).expect("create");
        let user = if flavour == Flavour::Cloud {
            CLOUD_USER
        } else {
            DC_USER
        };
        let done = rig
            .jira
            .update(&issue.id, &to_closed(Some("Fixed")), user)
            .expect("closed");
        assert_eq!(
            (done.status.as_str(), done.resolution.as_deref()),
            ("Closed", Some("Fixed"))
        );
        let requests = rig.fake.requests();
        let listed = requests
            .iter()
            .find(|r| r.method == "GET" && r.path.ends_with("/transitions"))
            .expect("transitions listed");
        assert_eq!(listed.query["expand"], "transitions.fields");
        let posted = requests
            .iter()
            .find(|r| r.method == "POST" && r.path.ends_with("/transitions"))
            .expect("transition posted");
        assert_eq!(
            posted.json()["fields"]["resolution"],
            json!({"name": "Fixed"})
        );
    }
}

#[test]
fn a_required_field_nobody_supplies_fails_naming_it_and_where_to_set_it() {
    let mut rig = rig(Flavour::Datacenter);
    let issue = rig.jira.create(&new_issue("stuck")).expect("create");
    // The fake refuses what Jira refuses.
    let path = format!("/rest/api/2/issue/{}/transitions", issue.id);
    let bare = json!({"transition": {"id": "711"}});
    let refused = rig
        .jira
        .client
        .json("POST", &path, &[], &Body::Json(&bare))
        .expect_err("400");
    assert!(
        refused
            .to_string()
            .contains("resolution: Field Resolution is required."),
        "{refused}"
    );

    let before = rig.fake.requests().len();
    let err = rig
        .jira
        .update(&issue.id, &to_closed(None), DC_USER)
        .expect_err("no resolution");
    let TrackerError::Rejected {
        issue: key,
        message,
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(key, &issue.key);
    for part in [
        "Resolution",
        "issue.resolution",
        "tracker.transition_fields",
        "Fixed",
    ] {
        assert!(message.contains(part), "{part}: {message}");
    }
    assert!(
        rig.fake.requests()[before..]
            .iter()
            .all(|r| r.method != "POST"),
        "nothing posted that Jira would refuse"
    );

    // A default in ferry.yaml supplies it.
    let mut rig = rig_with(Flavour::Datacenter, |c| {
        c.transition_fields
            .insert("Resolution".into(), json!("Works as designed"));
    });
    let issue = rig.jira.create(&new_issue("by design")).expect("create");
    let done = rig
        .jira
        .update(&issue.id, &to_closed(None), DC_USER)
        .expect("default resolution");
    assert_eq!(done.resolution.as_deref(), Some("Works as designed"));
}

/// Reading issues takes their comments from the search (or the issue GET)
/// itself; only an issue holding a comment ferry posted (whose origin marker is
/// a comment property, which embedded comments lack) has its comments fetched.
#[test]
fn comments_come_with_the_search_unless_ferry_posted_one() {
    for flavour in [Flavour::Cloud, Flavour::Datacenter] {
        let mut rig = rig(flavour);
        rig.fake.page_size(100);
        let ids = rig.fake.seed(200, 2, "alice");
        let posted = rig
            .jira
            .add_comment(
                &ids[7],
                &NewComment {
                    author: "zoe".into(),
                    body: "From the peer.".into(),
                    internal: false,
                    origin: Some(Origin {
                        site: "eng".into(),
                        id: "c-1".into(),
                    }),
                },
            )
            .expect("comment");
        let before = rig.fake.requests().len();
        let issues = rig.jira.changed_since(None).expect("changed");
        let requests = &rig.fake.requests()[before..];
        assert_eq!(issues.len(), 200);
        assert!(issues.iter().all(|i| i.comments.len() >= 2));
        let copied = &issues.iter().find(|i| i.id == ids[7]).unwrap().comments;
        assert_eq!(copied.last(), Some(&posted), "origin and author kept");
        let comment_reads = requests
            .iter()
            .filter(|r| r.method == "GET" && r.path.ends_with("/comment"))
            .count();
        assert_eq!(comment_reads, 1, "only the issue holding ferry's comment");
        // Two search pages of issues, two of ids for deletion detection, the
        // clock, and that one comment list.
        assert!(
            requests.len() <= 10,
            "{} requests for 200 issues: {:?}",
            requests.len(),
            requests.iter().map(|r| &r.path).collect::<Vec<_>>()
        );
    }
}

/// Comment lists read on their own (here: every issue holds a comment of
/// ferry's account) are read `concurrency` at a time, not one round trip after
/// the other.
#[test]
fn comment_lists_are_read_side_by_side_up_to_the_setting() {
    let rig = rig_with(Flavour::Datacenter, |c| c.concurrency = 8);
    rig.fake.page_size(100);
    rig.fake.seed(40, 1, DC_USER);
    rig.fake.latency(Duration::from_millis(100));
    let started = Instant::now();
    let issues = rig.jira.changed_since(None).expect("changed");
    let took = started.elapsed();
    assert_eq!(issues.len(), 40);
    assert!(issues.iter().all(|i| i.comments.len() == 1));
    let most = rig.fake.most_in_flight();
    assert!((2..=8).contains(&most), "{most} at once");
    // One after the other, the 40 comment lists alone would take 4 s.
    assert!(took < Duration::from_secs(3), "{took:?}");
}

/// The project's statuses come from Jira (v3 on Cloud, v2 on Data Center), in
/// Jira's order, once each however many issue types share them.
#[test]
fn the_projects_statuses_are_read_from_jira() {
    let recorded = fixture_json("v3/project-statuses.json");
    assert_eq!(project_statuses(&recorded), ["In Progress", "Closed"]);
    for (flavour, api) in [(Flavour::Cloud, "3"), (Flavour::Datacenter, "2")] {
        let rig = rig(flavour);
        assert_eq!(
            rig.jira.statuses().unwrap(),
            Some(vec![
                "Backlog".to_string(),
                "In Progress".into(),
                "Closed".into()
            ])
        );
        assert!(
            rig.fake
                .requests()
                .iter()
                .any(|r| r.method == "GET"
                    && r.path == format!("/rest/api/{api}/project/SUP/statuses")),
            "{flavour:?}"
        );
    }
}

/// `init` on a Jira site writes the incoming rule's status map from the
/// project's real statuses, and leaves a map someone edited alone.
#[test]
fn init_scaffolds_the_status_map_from_the_projects_statuses() {
    let fake = FakeJira::start(false, "ENG", "ferry-bot", &Auth::bearer("pat-123").0);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jira.token"), "pat-123\n").unwrap();
    let args = [
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
        "ENG",
        "--token-file",
        "jira.token",
    ];
    let out = ferry(dir.path(), &args);
    let rule = dir.path().join("rules/incoming.rhai");
    let text = std::fs::read_to_string(&rule).unwrap();
    assert!(
        text.contains(
            "let statuses = #{ \"Backlog\": \"Backlog\", \"In Progress\": \"In Progress\", \
             \"Closed\": \"Closed\" };"
        ),
        "{text}"
    );
    assert!(!text.contains("\"Resolved\""), "{text}");
    assert!(out.contains("Backlog, In Progress, Closed"), "{out}");
    crate::rules::RuleScript::load(
        &rule,
        crate::rules::Tables::default(),
        crate::rules::RuleSettings::default(),
    )
    .expect("the scaffolded rule compiles");

    let edited = text.replace("\"Backlog\": \"Backlog\"", "\"To Do\": \"Backlog\"");
    std::fs::write(&rule, &edited).unwrap();
    ferry(dir.path(), &args);
    assert_eq!(std::fs::read_to_string(&rule).unwrap(), edited, "kept");
}

/// A first read of a project lists ids with a search that returns only
/// `updated` (a request per 100 issues), then reads the issues by id, at most
/// a search page at a time: what an export holds follows the page, not the
/// project.
#[test]
fn a_first_read_lists_ids_then_reads_pages_by_id() {
    for flavour in [Flavour::Cloud, Flavour::Datacenter] {
        let rig = rig(flavour);
        rig.fake.page_size(100);
        let ids = rig.fake.seed(250, 2, "alice");
        let before = rig.fake.request_count();
        let listed = rig.jira.changed_ids(None).expect("ids").expect("listed");
        assert_eq!(listed, ids);
        let listing = &rig.fake.requests()[before..];
        assert_eq!(listing.len(), 3, "three pages of ids, nothing else");
        for r in listing {
            assert_eq!(r.query["fields"], "updated", "{r:?}");
            assert!(r.query["maxResults"].parse::<usize>().unwrap() <= 100);
        }
        let before = rig.fake.request_count();
        let wanted = listed[..150].to_vec();
        let page = rig.jira.get_many(&wanted).expect("page");
        assert_eq!(
            page.iter().map(|i| i.id.clone()).collect::<Vec<_>>(),
            wanted
        );
        assert!(page.iter().all(|i| i.comments.len() == 2));
        let searches: Vec<Recorded> = rig.fake.requests()[before..]
            .iter()
            .filter(|r| r.path.contains("/search"))
            .cloned()
            .collect();
        assert_eq!(searches.len(), 2, "100 ids, then 50");
        for r in &searches {
            let jql = &r.query["jql"];
            assert!(jql.starts_with("id in ("), "{jql}");
            assert!(jql.matches(',').count() < 100, "{jql}");
        }
        assert!(
            rig.fake.requests().len() - before <= 4,
            "two searches, the field list and who ferry is"
        );
    }
}

/// An id that vanished between the listing and the read makes Jira refuse
/// the `id in (…)` search; that page is read issue by issue, and the vanished
/// issue is left for the deletion check of a later run.
#[test]
fn a_page_with_a_vanished_id_is_read_one_by_one() {
    let rig = rig(Flavour::Datacenter);
    rig.fake.page_size(100);
    let ids = rig.fake.seed(4, 1, "alice");
    let listed = rig.jira.changed_ids(None).unwrap().unwrap();
    rig.jira.get_many(&listed).unwrap();
    rig.fake.delete_directly(&ids[1]);
    let read = rig.jira.get_many(&listed).unwrap();
    assert_eq!(
        read.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        [&ids[0], &ids[2], &ids[3]]
    );
    // A later run confirms the deletion: its tombstone comes without a request.
    let later = rig.next_run();
    let changed = later.changed_since(None).unwrap();
    let tomb = changed.iter().find(|i| i.id == ids[1]).expect("tombstone");
    assert!(tomb.deleted);
    let before = rig.fake.request_count();
    let again = later.get_many(std::slice::from_ref(&ids[1])).unwrap();
    assert_eq!(again.as_slice(), std::slice::from_ref(tomb));
    assert_eq!(rig.fake.request_count(), before);
}

/// What an older version remembered in `jira-known.json` is taken over by
/// the store once, suspicions included, and the file goes.
#[test]
fn an_older_known_file_is_taken_over() {
    let rig = rig(Flavour::Datacenter);
    let ids = rig.fake.seed(2, 0, "alice");
    let elsewhere = tempfile::tempdir().unwrap();
    let reader = JiraTracker::with_client(
        &rig.config,
        Client::new(rig.fake.url(), rig.auth.clone(), quick_retries()),
        elsewhere.path(),
    );
    let issues: BTreeMap<String, Issue> = ids
        .iter()
        .map(|id| (id.clone(), reader.get(id).unwrap().unwrap()))
        .collect();
    let suspected: BTreeMap<String, DateTime<Utc>> =
        [(ids[1].clone(), Utc::now() - chrono::Duration::hours(1))].into();
    let legacy = rig.state.path().join(LEGACY_KNOWN_FILE);
    std::fs::write(
        &legacy,
        serde_json::to_vec(&LegacyKnown { issues, suspected }).unwrap(),
    )
    .unwrap();
    rig.fake.delete_directly(&ids[1]);
    let later = rig.next_run();
    let changed = later.changed_since(None).unwrap();
    assert!(!legacy.exists());
    assert!(rig.state.path().join(KNOWN_FILE).exists());
    let tomb = changed.iter().find(|i| i.id == ids[1]).expect("tombstone");
    assert!(
        tomb.deleted,
        "suspected by an earlier run, confirmed by this one"
    );
    assert!(changed.iter().any(|i| i.id == ids[0] && !i.deleted));
}

/// The engine's first export of a Jira project larger than its page reads it
/// in pages: the issues' fields only ever come from searches by id of at most
/// a hundred, and the whole costs a few requests per hundred issues.
#[test]
fn a_first_export_of_a_large_jira_project_pages() {
    let world = tempfile::tempdir().unwrap();
    let exchange = world.path().join("exchange.git");
    git2::Repository::init_bare(&exchange).unwrap();
    let fake = FakeJira::start(false, "ENG", "ferry-bot", &Auth::bearer("pat-123").0);
    fake.page_size(100);
    let total = 1_150;
    fake.seed(total, 1, "alice");
    let eng = world.path().join("eng");
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
    ferry(&eng, &["init", "--site", "eng"]);
    ferry(
        &eng,
        &[
            "connection",
            "add",
            "support",
            "--channel",
            exchange.to_str().unwrap(),
            "--project",
            "ENG=SUP",
        ],
    );
    let before = fake.request_count();
    let out = ferry(&eng, &["export"]);
    let requests = &fake.requests()[before..];
    let with_fields: Vec<&Recorded> = requests
        .iter()
        .filter(|r| r.path.contains("/search") && r.query["fields"].contains("comment"))
        .collect();
    assert_eq!(with_fields.len(), total.div_ceil(100), "{out}");
    for r in &with_fields {
        assert!(r.query["jql"].starts_with("id in ("), "{r:?}");
    }
    assert!(
        requests.len() <= 2 * total.div_ceil(100) + 10,
        "{} requests",
        requests.len()
    );
    let site = crate::site::Site::open(&eng).unwrap();
    let head = site
        .exchange
        .resolve(&crate::exchange::own_branch("eng", "support"))
        .unwrap()
        .expect("exported");
    let replicas = site.exchange.files(head, "issues/").unwrap();
    assert_eq!(replicas.len(), total);
}

/// New issues go to Jira in one bulk create; one it refuses fails alone;
/// the rest are read back together, moved to their status with one transition
/// list for issues that start alike, and get their comments, each posted once
/// and not read back; a later run finds each by its origin.
#[test]
fn new_issues_go_in_one_bulk_create_and_share_a_transition_list() {
    for flavour in [Flavour::Cloud, Flavour::Datacenter] {
        let mut rig = rig(flavour);
        let items: Vec<NewIssueWithComments> = (0..6)
            .map(|n| {
                let mut issue = new_issue(&format!("Bulk {n}"));
                if n == 2 {
                    issue.patch.summary = Some(String::new());
                }
                issue.patch.status = Some("In Progress".into());
                issue.origin = Some(Origin {
                    site: "peer".into(),
                    id: format!("i{n}"),
                });
                NewIssueWithComments {
                    issue,
                    comments: vec![NewComment {
                        author: "zoe".into(),
                        body: format!("Hello {n}"),
                        internal: false,
                        origin: Some(Origin {
                            site: "peer".into(),
                            id: format!("c{n}"),
                        }),
                    }],
                }
            })
            .collect();
        let before = rig.fake.request_count();
        let created = rig.jira.create_many(&items);
        let requests = &rig.fake.requests()[before..];
        assert_eq!(created.len(), 6);
        for (n, c) in created.iter().enumerate() {
            if n == 2 {
                assert!(
                    matches!(&c.issue, Err(TrackerError::Rejected { message, .. }) if message.contains("summary")),
                    "{:?}",
                    c.issue
                );
                continue;
            }
            let issue = c.issue.as_ref().expect("made");
            assert_eq!(issue.status, "In Progress");
            assert_eq!(issue.origin, items[n].issue.origin);
            assert_eq!(c.comments.len(), 1);
            let comment = c.comments[0].as_ref().expect("comment");
            assert_eq!(comment.origin, items[n].comments[0].origin);
            assert_eq!(issue.comments.as_slice(), std::slice::from_ref(comment));
        }
        let count = |method: &str, end: &str| {
            requests
                .iter()
                .filter(|r| r.method == method && r.path.ends_with(end))
                .count()
        };
        assert_eq!(count("POST", "/issue/bulk"), 1);
        assert_eq!(count("POST", "/issue"), 0);
        assert_eq!(count("GET", "/transitions"), 1, "one list for five alike");
        assert_eq!(count("POST", "/transitions"), 5);
        assert_eq!(count("POST", "/comment"), 5);
        assert_eq!(
            requests
                .iter()
                .filter(|r| r.method == "GET" && r.path.contains("/comment"))
                .count(),
            0,
            "nothing looked up or read back"
        );
        let later = rig.next_run();
        for (n, c) in created.iter().enumerate().filter(|(n, _)| *n != 2) {
            let found = later
                .find_by_origin(items[n].issue.origin.as_ref().unwrap())
                .unwrap()
                .expect("found by origin");
            assert_eq!(
                Some(found.id.as_str()),
                c.issue.as_ref().ok().map(|i| i.id.as_str())
            );
        }
    }
}

/// Origins looked up ahead answer `find_by_origin` without a request; one
/// looked up and absent is absent, one this connector made since is found.
#[test]
fn origins_looked_up_ahead_answer_from_memory() {
    let mut rig = rig(Flavour::Datacenter);
    let origin = |id: &str| Origin {
        site: "peer".into(),
        id: id.into(),
    };
    let mut made = new_issue("Made before");
    made.origin = Some(origin("1"));
    let made = rig.jira.create(&made).unwrap();
    let later = rig.next_run();
    later.prefetch_origins(&[origin("1"), origin("2")]).unwrap();
    let before = rig.fake.request_count();
    assert_eq!(later.find_by_origin(&origin("2")).unwrap(), None);
    assert_eq!(rig.fake.request_count(), before, "absent, from memory");
    let found = later.find_by_origin(&origin("1")).unwrap().unwrap();
    assert_eq!(found.id, made.id);
    let search = rig.fake.requests()[..before]
        .iter()
        .rfind(|r| r.path.contains("/search"))
        .cloned()
        .unwrap();
    assert!(
        search.query["jql"].starts_with("labels in (\"ferry-origin:peer:"),
        "{:?}",
        search.query
    );
}

mod relations;
mod sites;
