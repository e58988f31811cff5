//! A small in-memory Redmine on a loopback port: the repository's fake, for
//! `ferry bench` and the connector's paging tests. It is not a Redmine and never
//! talks to one; the live tests run against a real Redmine
//! (`../shared/redmine/redmine-server.sh`).
//!
//! It serves only what the connector's export reads: who the key belongs to,
//! the project, the lists of statuses, trackers, priorities and custom fields,
//! the project's issue list (paged by `offset` and `limit`, at most 100 a page,
//! filtered by `updated_on`) and one issue with its journals. Every body is one
//! of the answers recorded from Debian's Redmine 5.0 in
//! `tests/fixtures/redmine/` (built into the binary) with ids, texts and times
//! patched in. As in that Redmine, the list ignores `include=journals` (journals
//! come only with `/issues/N.json`) and honours `include=attachments`. Issues
//! are seeded, with notes written in Redmine by the key's user; it keeps no
//! writes. It counts requests and the largest page asked for, and can take a
//! while over each answer.

use std::collections::BTreeMap;
use std::io::BufReader;
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::tracker::jira::fake::{Recorded, read_request, write_reply};

/// Redmine's largest page (its default `per_page` setting's top value).
const MAX_LIMIT: usize = 100;

const FIXTURES: &[(&str, &str)] = &[
    (
        "issue-show.json",
        include_str!("../../../tests/fixtures/redmine/issue-show.json"),
    ),
    (
        "issues-list.json",
        include_str!("../../../tests/fixtures/redmine/issues-list.json"),
    ),
    (
        "users-current.json",
        include_str!("../../../tests/fixtures/redmine/users-current.json"),
    ),
    (
        "project-show.json",
        include_str!("../../../tests/fixtures/redmine/project-show.json"),
    ),
    (
        "issue-statuses.json",
        include_str!("../../../tests/fixtures/redmine/issue-statuses.json"),
    ),
    (
        "trackers.json",
        include_str!("../../../tests/fixtures/redmine/trackers.json"),
    ),
    (
        "custom-fields.json",
        include_str!("../../../tests/fixtures/redmine/custom-fields.json"),
    ),
    (
        "issue-priorities.json",
        include_str!("../../../tests/fixtures/redmine/issue-priorities.json"),
    ),
];

/// A recorded answer, parsed once.
fn fixture(name: &str) -> Value {
    static PARSED: std::sync::OnceLock<BTreeMap<&'static str, Value>> = std::sync::OnceLock::new();
    PARSED
        .get_or_init(|| {
            FIXTURES
                .iter()
                .map(|(name, text)| (*name, serde_json::from_str(text).unwrap_or(Value::Null)))
                .collect()
        })
        .get(name)
        .cloned()
        .unwrap_or(Value::Null)
}

fn stamp(t: DateTime<Utc>) -> String {
    crate::model::format_timestamp(&t)
}

/// A seeded issue: what it is made from when shown.
struct Seeded {
    n: usize,
    notes: usize,
    created: DateTime<Utc>,
}

struct State {
    key: String,
    project: String,
    issues: BTreeMap<u64, Seeded>,
    latency: std::time::Duration,
    requests: usize,
    largest_page: usize,
    log: Vec<String>,
    /// Requests being answered now, and the most ever at once.
    busy: usize,
    most_at_once: usize,
}

/// A running fake Redmine.
pub struct FakeRedmine {
    state: Arc<Mutex<State>>,
    url: String,
}

impl FakeRedmine {
    /// Starts a fake Redmine with one project (identifier `project`) that
    /// answers to the API key `key`.
    pub fn start(project: &str, key: &str) -> std::io::Result<FakeRedmine> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(Mutex::new(State {
            key: key.into(),
            project: project.into(),
            issues: BTreeMap::new(),
            latency: std::time::Duration::ZERO,
            requests: 0,
            largest_page: 0,
            log: Vec::new(),
            busy: 0,
            most_at_once: 0,
        }));
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || serve(stream, &shared));
            }
        });
        Ok(FakeRedmine { state, url })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Where it answers (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Adds `latency` to every answer.
    pub fn latency(&self, latency: std::time::Duration) {
        self.state().latency = latency;
    }

    /// Creates `count` issues with `notes` notes each, written in Redmine.
    pub fn seed(&self, count: usize, notes: usize) {
        let mut state = self.state();
        let created = crate::model::truncate_to_seconds(Utc::now());
        let first = state.issues.keys().next_back().map_or(1, |id| id + 1);
        for n in 0..count {
            state
                .issues
                .insert(first + n as u64, Seeded { n, notes, created });
        }
    }

    /// How many requests it has answered.
    pub fn requests(&self) -> usize {
        self.state().requests
    }

    /// The largest `limit` an issue list asked for, as served.
    pub fn largest_page(&self) -> usize {
        self.state().largest_page
    }

    /// The most requests it was answering at one time.
    pub fn most_at_once(&self) -> usize {
        self.state().most_at_once
    }

    /// Every request so far, as `METHOD path?query`.
    pub fn log(&self) -> Vec<String> {
        self.state().log.clone()
    }
}

fn serve(stream: TcpStream, state: &Mutex<State>) {
    let _ = stream.set_nodelay(true);
    let Ok(clone) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(clone);
    while let Some(request) = read_request(&mut reader) {
        let (latency, (status, body)) = {
            let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
            state.requests += 1;
            let query: Vec<String> = request
                .query
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let line = format!("{} {}?{}", request.method, request.path, query.join("&"));
            state.log.push(line);
            state.busy += 1;
            state.most_at_once = state.most_at_once.max(state.busy);
            (state.latency, state.handle(&request))
        };
        std::thread::sleep(latency);
        let written = write_reply(&stream, status, &[], body.to_string().as_bytes());
        state.lock().unwrap_or_else(PoisonError::into_inner).busy -= 1;
        if !written {
            return;
        }
    }
}

impl State {
    fn handle(&mut self, r: &Recorded) -> (u16, Value) {
        if r.headers.get("x-redmine-api-key") != Some(&self.key) {
            return (401, Value::Null);
        }
        let not_found = (404, Value::Null);
        if r.method != "GET" {
            return (
                422,
                json!({"errors": ["this fake Redmine serves reads only"]}),
            );
        }
        let path = r.path.as_str();
        match path {
            "/users/current.json" | "/users/1.json" => (200, fixture("users-current.json")),
            "/issue_statuses.json" => (200, fixture("issue-statuses.json")),
            "/trackers.json" => (200, fixture("trackers.json")),
            "/custom_fields.json" => (200, fixture("custom-fields.json")),
            "/enumerations/issue_priorities.json" => (200, fixture("issue-priorities.json")),
            "/issues.json" => self.list(r),
            _ => {
                if let Some(which) = path
                    .strip_prefix("/projects/")
                    .and_then(|p| p.strip_suffix(".json"))
                {
                    if which != self.project && which != "1" {
                        return not_found;
                    }
                    let mut project = fixture("project-show.json");
                    project["project"]["identifier"] = json!(self.project);
                    return (200, project);
                }
                let id = path
                    .strip_prefix("/issues/")
                    .and_then(|p| p.strip_suffix(".json"))
                    .and_then(|id| id.parse::<u64>().ok());
                match id.and_then(|id| self.issues.get(&id).map(|s| (id, s))) {
                    Some((id, seeded)) => {
                        let include = r.query.get("include").map_or("", String::as_str);
                        let journals = include.split(',').any(|i| i == "journals");
                        let attachments = include.split(',').any(|i| i == "attachments");
                        let mut show = fixture("issue-show.json");
                        show["issue"] = self.render(id, seeded, journals, attachments);
                        (200, show)
                    }
                    None => not_found,
                }
            }
        }
    }

    /// `GET /issues.json`: the project's issues by id, paged; only the filters
    /// the connector's export sends are understood.
    fn list(&mut self, r: &Recorded) -> (u16, Value) {
        let project = r.query.get("project_id").map(String::as_str);
        if project.is_some_and(|p| p != self.project && p != "1") {
            return (404, Value::Null);
        }
        let since = r
            .query
            .get("updated_on")
            .and_then(|v| v.strip_prefix(">="))
            .and_then(|t| crate::model::parse_timestamp(t).ok());
        let offset: usize = r
            .query
            .get("offset")
            .and_then(|o| o.parse().ok())
            .unwrap_or(0);
        let limit = r
            .query
            .get("limit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(25usize)
            .min(MAX_LIMIT);
        self.largest_page = self.largest_page.max(limit);
        let attachments = r
            .query
            .get("include")
            .is_some_and(|i| i.split(',').any(|i| i == "attachments"));
        let matching: Vec<(&u64, &Seeded)> = self
            .issues
            .iter()
            .filter(|(_, s)| since.is_none_or(|t| updated(s) >= t))
            .collect();
        let total = matching.len();
        let page: Vec<Value> = matching
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|(id, s)| self.render(*id, s, false, attachments))
            .collect();
        let mut out = fixture("issues-list.json");
        out["issues"] = Value::Array(page);
        out["total_count"] = json!(total);
        out["offset"] = json!(offset);
        out["limit"] = json!(limit);
        (200, out)
    }

    /// One issue in the recorded shape.
    fn render(&self, id: u64, seeded: &Seeded, journals: bool, attachments: bool) -> Value {
        let template = fixture("issue-show.json")["issue"].clone();
        let mut issue = template.clone();
        let Some(fields) = issue.as_object_mut() else {
            return Value::Null;
        };
        fields.remove("journals");
        fields.remove("attachments");
        fields.insert("id".into(), json!(id));
        fields.insert(
            "subject".into(),
            json!(format!("Seeded issue {}", seeded.n)),
        );
        fields.insert(
            "description".into(),
            json!(format!(
                "Issue {} of the fake Redmine.\r\nSecond line.",
                seeded.n
            )),
        );
        fields.insert("created_on".into(), json!(stamp(seeded.created)));
        fields.insert("updated_on".into(), json!(stamp(updated(seeded))));
        if attachments {
            fields.insert("attachments".into(), json!([]));
        }
        if journals {
            let shape = template["journals"][0].clone();
            let list: Vec<Value> = (0..seeded.notes)
                .map(|c| {
                    let mut j = shape.clone();
                    j["id"] = json!(id * 100 + c as u64);
                    j["notes"] = json!(format!("Note {c} on issue {}", seeded.n));
                    j["created_on"] = json!(stamp(seeded.created));
                    j
                })
                .collect();
            fields.insert("journals".into(), Value::Array(list));
        }
        issue
    }
}

/// A seeded issue's last change: its last note, written when it was made.
fn updated(seeded: &Seeded) -> DateTime<Utc> {
    seeded.created
}
