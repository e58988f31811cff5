//! A small in-memory Jira on a loopback port: the repository's fake, for the
//! connector's tests and for `ferry bench`. It is not a Jira and never talks to
//! one.
//!
//! No Jira runs on a build machine, so this stands in for one. It is honest about
//! shapes, not behaviour: every response body is a recorded real Jira response
//! from `tests/fixtures/jira/` (see its README; the files are built into the
//! binary) with ids, keys, times and the fields the connector uses patched in;
//! the behaviour (workflow, search, paging, errors) is the small part of Jira's
//! the connector relies on. It records every request so tests can check method,
//! path, query and body, and can be told to answer the next requests with a
//! status of a test's choosing (429, 503), or to take a while over each answer.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

mod http;
mod search;

use http::{multipart_file, serve};
pub(crate) use http::{read_request, write_reply};

/// The status of an issue just created (the start of the fake's workflow).
const CREATED_STATUS: &str = "Backlog";

/// The Epic Link field of the recorded field list (Data Center's epics).
const EPIC_LINK: &str = "customfield_10014";

/// Issue types Jira makes sub-tasks of (Data Center's name, then Cloud's).
const SUBTASK_TYPES: [&str; 2] = ["Sub-task", "Subtask"];

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query parameters, decoded.
    pub query: BTreeMap<String, String>,
    /// The headers, names in lower case.
    pub headers: BTreeMap<String, String>,
    /// The body.
    pub body: Vec<u8>,
}

impl Recorded {
    /// The body as JSON (`null` when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The query parameter `name` as a number, `default` when absent or not one.
    fn number(&self, name: &str, default: usize) -> usize {
        self.query
            .get(name)
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    }
}

struct FakeIssue {
    id: u64,
    key: String,
    /// Its fields; empty for an issue [`FakeJira::seed`] made and nothing
    /// changed since, whose fields are made when asked for (`seeded_as`).
    fields: serde_json::Map<String, Value>,
    /// The number in its seed of a seeded issue not changed since.
    seeded_as: Option<usize>,
    /// Comments written in Jira by [`FakeJira::seed`], made when they are
    /// shown (a hundred thousand seeded issues stay small): how many, their
    /// first id, the author, and the issue's number in the seed.
    seeded: Option<Seeded>,
    comments: Vec<Value>,
    attachments: Vec<(Value, Vec<u8>)>,
    created: DateTime<Utc>,
    updated: DateTime<Utc>,
}

impl FakeIssue {
    /// Its fields, made for a seeded one: a hundred thousand seeded issues
    /// stay small, so the bench that holds them stays small too (a process it
    /// starts begins with its memory's high-water mark).
    fn field_map(&self) -> std::borrow::Cow<'_, serde_json::Map<String, Value>> {
        match self.seeded_as {
            Some(n) => std::borrow::Cow::Owned(seeded_fields(n)),
            None => std::borrow::Cow::Borrowed(&self.fields),
        }
    }

    /// Its fields, to change.
    fn field_map_mut(&mut self) -> &mut serde_json::Map<String, Value> {
        if let Some(n) = self.seeded_as.take() {
            self.fields = seeded_fields(n);
        }
        &mut self.fields
    }
}

/// The fields of the `n`th issue of a seed.
fn seeded_fields(n: usize) -> serde_json::Map<String, Value> {
    let mut fields = serde_json::Map::new();
    fields.insert("summary".into(), json!(format!("Seeded issue {n}")));
    fields.insert("status".into(), json!({"name": CREATED_STATUS}));
    fields.insert("issuetype".into(), json!({"name": "Task"}));
    fields
}

#[derive(Clone)]
struct Seeded {
    count: usize,
    first_id: u64,
    author: String,
    n: usize,
    at: DateTime<Utc>,
}

struct State {
    v3: bool,
    base: String,
    user: String,
    auth: String,
    project: String,
    issues: BTreeMap<u64, FakeIssue>,
    /// Issues that answer 404 and are missing from searches for now.
    hidden: BTreeSet<u64>,
    /// Permission keys the account lacks in the project.
    denied: BTreeSet<String>,
    next_id: u64,
    next_key: u64,
    log: Vec<Recorded>,
    faults: VecDeque<Reply>,
    /// The most issues (search) or comments (comment list) one page holds:
    /// two by default, to make every reader page; Jira's real caps are larger.
    page: usize,
    /// Time added to every answer, for a server across a network.
    latency: std::time::Duration,
    /// Requests being answered now, and the most there have been at once.
    in_flight: usize,
    most_in_flight: usize,
    /// Bumped by every change, so a search's matches can be kept for the
    /// pages that follow (a first read of 100 000 issues asks for 1 000 pages).
    generation: u64,
    searched: Option<Searched>,
    /// Issue links by id: type name, source, destination.
    links: BTreeMap<u64, (String, u64, u64)>,
    /// Sub-tasks (and, on Cloud, epics' children) by id, with their parent.
    parents: BTreeMap<u64, u64>,
}

/// The matches of the last search.
struct Searched {
    jql: String,
    generation: u64,
    at: std::time::Instant,
    ids: Vec<u64>,
}

/// A running fake Jira.
pub struct FakeJira {
    state: Arc<Mutex<State>>,
    url: String,
}

/// The recorded responses the fake answers with, built into the binary.
const FIXTURES: &[(&str, &str)] = &[
    (
        "v2/error-not-found.json",
        include_str!("../../../tests/fixtures/jira/v2/error-not-found.json"),
    ),
    (
        "v2/issue-create-errors.json",
        include_str!("../../../tests/fixtures/jira/v2/issue-create-errors.json"),
    ),
    (
        "v2/issue-get.json",
        include_str!("../../../tests/fixtures/jira/v2/issue-get.json"),
    ),
    (
        "v2/issue-restricted-comment.json",
        include_str!("../../../tests/fixtures/jira/v2/issue-restricted-comment.json"),
    ),
    (
        "v2/mypermissions.json",
        include_str!("../../../tests/fixtures/jira/v2/mypermissions.json"),
    ),
    (
        "v2/serverinfo.json",
        include_str!("../../../tests/fixtures/jira/v2/serverinfo.json"),
    ),
    (
        "v2/myself.json",
        include_str!("../../../tests/fixtures/jira/v2/myself.json"),
    ),
    (
        "v2/transitions.json",
        include_str!("../../../tests/fixtures/jira/v2/transitions.json"),
    ),
    (
        "v2/comments.json",
        include_str!("../../../tests/fixtures/jira/v2/comments.json"),
    ),
    (
        "v3/attachment-metadata.json",
        include_str!("../../../tests/fixtures/jira/v3/attachment-metadata.json"),
    ),
    (
        "v3/comment-get.json",
        include_str!("../../../tests/fixtures/jira/v3/comment-get.json"),
    ),
    (
        "v3/comments.json",
        include_str!("../../../tests/fixtures/jira/v3/comments.json"),
    ),
    (
        "v3/fields.json",
        include_str!("../../../tests/fixtures/jira/v3/fields.json"),
    ),
    (
        "v3/issue-create.json",
        include_str!("../../../tests/fixtures/jira/v3/issue-create.json"),
    ),
    (
        "v3/issue-get.json",
        include_str!("../../../tests/fixtures/jira/v3/issue-get.json"),
    ),
    (
        "v3/myself.json",
        include_str!("../../../tests/fixtures/jira/v3/myself.json"),
    ),
    (
        "v3/project-get.json",
        include_str!("../../../tests/fixtures/jira/v3/project-get.json"),
    ),
    (
        "v3/project-statuses.json",
        include_str!("../../../tests/fixtures/jira/v3/project-statuses.json"),
    ),
    (
        "v3/resolutions.json",
        include_str!("../../../tests/fixtures/jira/v3/resolutions.json"),
    ),
    (
        "v3/search.json",
        include_str!("../../../tests/fixtures/jira/v3/search.json"),
    ),
    (
        "v3/transitions.json",
        include_str!("../../../tests/fixtures/jira/v3/transitions.json"),
    ),
    (
        "v3/issue-link-types.json",
        include_str!("../../../tests/fixtures/jira/v3/issue-link-types.json"),
    ),
];

/// A recorded response, parsed once.
fn fixture(path: &str) -> Value {
    static PARSED: std::sync::OnceLock<BTreeMap<&'static str, Value>> = std::sync::OnceLock::new();
    let parsed = PARSED.get_or_init(|| {
        FIXTURES
            .iter()
            .map(|(name, text)| (*name, serde_json::from_str(text).unwrap_or(Value::Null)))
            .collect()
    });
    parsed.get(path).cloned().unwrap_or(Value::Null)
}

fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

impl FakeJira {
    /// Starts a fake Jira Cloud (`v3`) or Data Center (v2) with one project and
    /// one user, answering to `auth` (the `Authorization` header value).
    pub fn start(v3: bool, project: &str, user: &str, auth: &str) -> FakeJira {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(Mutex::new(State {
            v3,
            base: url.clone(),
            user: user.into(),
            auth: auth.into(),
            project: project.into(),
            issues: BTreeMap::new(),
            hidden: BTreeSet::new(),
            denied: BTreeSet::new(),
            next_id: 10_000,
            next_key: 1,
            log: Vec::new(),
            faults: VecDeque::new(),
            page: 2,
            latency: std::time::Duration::ZERO,
            in_flight: 0,
            most_in_flight: 0,
            generation: 0,
            links: BTreeMap::new(),
            parents: BTreeMap::new(),
            searched: None,
        }));
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || serve(stream, &shared));
            }
        });
        FakeJira { state, url }
    }

    /// Where it answers (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().log.clone()
    }

    /// How many requests it has answered.
    pub fn request_count(&self) -> usize {
        self.state.lock().unwrap().log.len()
    }

    /// Every issue it holds, as (key, labels, status, number of comments).
    pub fn overview(&self) -> Vec<(String, Vec<String>, String, usize)> {
        let state = self.state.lock().unwrap();
        state
            .issues
            .values()
            .map(|i| {
                let fields = i.field_map();
                let labels =
                    fields
                        .get("labels")
                        .and_then(Value::as_array)
                        .map_or_else(Vec::new, |l| {
                            l.iter()
                                .filter_map(Value::as_str)
                                .map(str::to_string)
                                .collect()
                        });
                let status = fields["status"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                (i.key.clone(), labels, status, state.comments_of(i).len())
            })
            .collect()
    }

    /// How many issues it holds.
    pub fn issue_count(&self) -> usize {
        self.state.lock().unwrap().issues.len()
    }

    /// Answers the next request with this status, headers and body.
    pub fn fail_next(&self, status: u16, headers: &[(&str, &str)], body: &str) {
        let headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.state
            .lock()
            .unwrap()
            .faults
            .push_back((status, headers, body.as_bytes().to_vec()));
    }

    /// Deletes an issue behind the connector's back, as a Jira user would.
    pub fn delete_directly(&self, id: &str) {
        let id: u64 = id.parse().expect("numeric id");
        let mut state = self.state.lock().unwrap();
        state.issues.remove(&id);
        state.generation += 1;
    }

    /// Makes an issue answer 404 and drop out of searches until
    /// [`FakeJira::unhide`], as real Jira does for a moment while a node's
    /// index lags or a permission scheme is edited.
    pub fn hide(&self, id: &str) {
        let id: u64 = id.parse().expect("numeric id");
        let mut state = self.state.lock().unwrap();
        state.hidden.insert(id);
        state.generation += 1;
    }

    /// Pages of up to `size` issues or comments, as Jira's own cap (100 for a
    /// search) instead of the paging-forcing default of two.
    pub fn page_size(&self, size: usize) {
        self.state.lock().unwrap().page = size;
    }

    /// Adds `latency` to every answer (served outside the lock, so concurrent
    /// requests overlap as they would on a real server).
    pub fn latency(&self, latency: std::time::Duration) {
        self.state.lock().unwrap().latency = latency;
    }

    /// The most requests the fake was answering at one time.
    pub fn most_in_flight(&self) -> usize {
        self.state.lock().unwrap().most_in_flight
    }

    /// Creates `count` issues with `comments` comments each, written in Jira by
    /// `author` (not through the connector), and returns their ids.
    pub fn seed(&self, count: usize, comments: usize, author: &str) -> Vec<String> {
        let mut state = self.state.lock().unwrap();
        state.generation += 1;
        let now = state.now();
        let mut ids = Vec::with_capacity(count);
        for n in 0..count {
            let id = state.next_id;
            state.next_id += 1 + comments as u64;
            let key = format!("{}-{}", state.project, state.next_key);
            state.next_key += 1;
            state.issues.insert(
                id,
                FakeIssue {
                    id,
                    key,
                    fields: serde_json::Map::new(),
                    seeded_as: Some(n),
                    seeded: (comments > 0).then(|| Seeded {
                        count: comments,
                        first_id: id + 1,
                        author: author.to_string(),
                        n,
                        at: now,
                    }),
                    comments: Vec::new(),
                    attachments: Vec::new(),
                    created: now,
                    updated: now,
                },
            );
            ids.push(id.to_string());
        }
        ids
    }

    /// Takes a project permission (`CREATE_ISSUES`) from the account.
    pub fn deny(&self, permission: &str) {
        self.state
            .lock()
            .unwrap()
            .denied
            .insert(permission.to_string());
    }

    /// Ends [`FakeJira::hide`].
    pub fn unhide(&self, id: &str) {
        let id: u64 = id.parse().expect("numeric id");
        let mut state = self.state.lock().unwrap();
        state.hidden.remove(&id);
        state.generation += 1;
    }
}

type Reply = (u16, Vec<(String, String)>, Vec<u8>);

fn reply(status: u16, body: &Value) -> Reply {
    (status, Vec::new(), body.to_string().into_bytes())
}

fn no_content() -> Reply {
    (204, Vec::new(), Vec::new())
}

fn not_found() -> Reply {
    reply(404, &fixture("v2/error-not-found.json"))
}

/// The recorded error body of `v2/issue-create-errors.json` with this status.
fn recorded_error(status: u64) -> Value {
    fixture("v2/issue-create-errors.json")
        .as_object()
        .and_then(|m| m.values().find(|e| e["status_code"] == status).cloned())
        .unwrap_or_default()
}

fn bad_request(field: &str, message: &str) -> Reply {
    // The shape of the recorded 400, with the field and message Jira gives for
    // this case.
    let mut body = recorded_error(400);
    if let Some(m) = body.as_object_mut() {
        m.remove("status_code");
    }
    body["errors"] = json!({ field: message });
    reply(400, &body)
}

/// The comments [`FakeJira::seed`] wrote on one issue.
fn seeded_comments(seeded: &Seeded, v3: bool) -> Vec<Value> {
    (0..seeded.count)
        .map(|c| {
            let text = format!("Comment {c} on issue {}", seeded.n);
            let body = if v3 {
                json!({"version": 1, "type": "doc", "content": [{"type": "paragraph",
                       "content": [{"type": "text", "text": text}]}]})
            } else {
                json!(text)
            };
            json!({"id": (seeded.first_id + c as u64).to_string(), "author": seeded.author,
                "body": body, "created": stamp(seeded.at), "updated": stamp(seeded.at),
                "properties": []})
        })
        .collect()
}

impl State {
    /// An issue's comments, the seeded ones first.
    fn comments_of(&self, issue: &FakeIssue) -> Vec<Value> {
        let mut all = issue
            .seeded
            .as_ref()
            .map(|s| seeded_comments(s, self.v3))
            .unwrap_or_default();
        all.extend(issue.comments.iter().cloned());
        all
    }

    fn api(&self) -> &'static str {
        if self.v3 {
            "/rest/api/3"
        } else {
            "/rest/api/2"
        }
    }

    /// A user object from a recorded one, naming `user`.
    fn user_object(&self, user: &str) -> Value {
        if self.v3 {
            let mut u = fixture("v3/comment-get.json")["author"].clone();
            u["accountId"] = json!(user);
            u["self"] = json!(format!("{}/rest/api/3/user?accountId={user}", self.base));
            u
        } else {
            let mut u = fixture("v2/issue-restricted-comment.json")["fields"]["comment"]
                ["comments"][0]["author"]
                .clone();
            u["name"] = json!(user);
            u["self"] = json!(format!("{}/rest/api/2/user?username={user}", self.base));
            u
        }
    }

    fn read_user(&self, v: &Value) -> Option<String> {
        let key = if self.v3 { "accountId" } else { "name" };
        v.get(key).and_then(Value::as_str).map(str::to_string)
    }

    fn field_list(&self) -> Value {
        let mut list = fixture("v3/fields.json");
        let items = list.as_array_mut().expect("field list");
        let template = items
            .iter()
            .find(|f| f["custom"] == true)
            .cloned()
            .expect("a custom field");
        for (id, name, kind) in [(90001, "Severity", "number"), (90002, "Customer", "string")] {
            let mut f = template.clone();
            f["id"] = json!(format!("customfield_{id}"));
            f["key"] = f["id"].clone();
            f["name"] = json!(name);
            f["untranslatedName"] = json!(name);
            f["clauseNames"] = json!([format!("cf[{id}]"), name]);
            f["schema"] = json!({"type": kind, "custom": "com.atlassian.jira.plugin.system.customfieldtypes:float", "customId": id});
            items.push(f);
        }
        list
    }

    fn find(&self, id_or_key: &str) -> Option<u64> {
        if let Ok(id) = id_or_key.parse::<u64>() {
            return Some(id).filter(|id| self.issues.contains_key(id) && !self.hidden.contains(id));
        }
        self.issues
            .values()
            .filter(|i| !self.hidden.contains(&i.id))
            .find(|i| i.id.to_string() == id_or_key || i.key == id_or_key)
            .map(|i| i.id)
    }

    fn render_comment(&self, issue: u64, c: &Value, with_properties: bool) -> Value {
        let mut out = if self.v3 {
            fixture("v3/comment-get.json")
        } else {
            fixture("v2/issue-restricted-comment.json")["fields"]["comment"]["comments"][0].clone()
        };
        let obj = out.as_object_mut().expect("comment");
        obj.remove("visibility");
        for key in ["id", "body", "created", "updated", "visibility"] {
            if let Some(v) = c.get(key) {
                obj.insert(key.into(), v.clone());
            }
        }
        let author = self.user_object(c["author"].as_str().unwrap_or_default());
        obj.insert("author".into(), author.clone());
        obj.insert("updateAuthor".into(), author);
        obj.insert(
            "self".into(),
            json!(format!(
                "{}{}/issue/{issue}/comment/{}",
                self.base,
                self.api(),
                c["id"].as_str().unwrap_or_default()
            )),
        );
        if with_properties {
            obj.insert("properties".into(), c["properties"].clone());
        }
        out
    }

    fn render_attachment(&self, meta: &Value) -> Value {
        let mut out = if self.v3 {
            fixture("v3/attachment-metadata.json")
        } else {
            fixture("v2/issue-restricted-comment.json")["fields"]["attachment"][0].clone()
        };
        let id = meta["id"].as_str().unwrap_or_default();
        out["id"] = if self.v3 {
            json!(id.parse::<u64>().unwrap_or(0))
        } else {
            json!(id)
        };
        out["filename"] = meta["filename"].clone();
        out["size"] = meta["size"].clone();
        out["created"] = meta["created"].clone();
        out["author"] = self.user_object(meta["author"].as_str().unwrap_or_default());
        out["self"] = json!(format!("{}{}/attachment/{id}", self.base, self.api()));
        out["content"] = json!(format!("{}/secure/attachment/{id}/file", self.base));
        out
    }

    fn render(&self, issue: &FakeIssue) -> Value {
        let (mut out, objects) = if self.v3 {
            let t = fixture("v3/issue-get.json");
            let objects = t["fields"].clone();
            (t, objects)
        } else {
            (
                fixture("v2/issue-restricted-comment.json"),
                fixture("v2/issue-get.json")["fields"].clone(),
            )
        };
        out["id"] = json!(issue.id.to_string());
        out["key"] = json!(issue.key);
        out["self"] = json!(format!("{}{}/issue/{}", self.base, self.api(), issue.id));
        let f = &mut out["fields"];
        let named = |template: &Value, name: &Value| {
            if name.is_null() {
                return Value::Null;
            }
            let mut o = template.clone();
            o["name"] = name.clone();
            o
        };
        let fields = issue.field_map();
        let fields = &*fields;
        f["summary"] = fields.get("summary").cloned().unwrap_or_default();
        f["description"] = fields.get("description").cloned().unwrap_or(Value::Null);
        f["status"] = named(&objects["status"], &fields["status"]["name"]);
        f["issuetype"] = named(&objects["issuetype"], &fields["issuetype"]["name"]);
        f["priority"] = named(
            &objects["priority"],
            fields.get("priority").map_or(&Value::Null, |p| &p["name"]),
        );
        let mut project = objects["project"].clone();
        project["key"] = json!(self.project);
        f["project"] = project;
        for key in ["assignee", "reporter"] {
            f[key] = match fields.get(key).and_then(|u| self.read_user(u)) {
                Some(u) => self.user_object(&u),
                None => Value::Null,
            };
        }
        f["resolution"] = match fields.get("resolution") {
            Some(r) => {
                let mut o = fixture("v3/resolutions.json")[0].clone();
                o["name"] = r["name"].clone();
                o
            }
            None => Value::Null,
        };
        f["labels"] = fields.get("labels").cloned().unwrap_or(json!([]));
        f["components"] = fields.get("components").cloned().unwrap_or(json!([]));
        for (k, v) in fields {
            if k.starts_with("customfield_") {
                f[k] = v.clone();
            }
        }
        f["created"] = json!(stamp(issue.created));
        f["updated"] = json!(stamp(issue.updated));
        f["attachment"] = Value::Array(
            issue
                .attachments
                .iter()
                .map(|(m, _)| self.render_attachment(m))
                .collect(),
        );
        let comments: Vec<Value> = self
            .comments_of(issue)
            .iter()
            .map(|c| self.render_comment(issue.id, c, false))
            .collect();
        f["comment"] = json!({"comments": comments, "maxResults": comments.len(),
                              "total": comments.len(), "startAt": 0});
        f["issuelinks"] = self.issue_links(issue.id);
        let parent = self
            .parents
            .get(&issue.id)
            .and_then(|p| self.linked_issue(*p));
        if let (Some(fields), Some(parent)) = (f.as_object_mut(), parent) {
            fields.insert("parent".into(), parent);
        }
        f["subtasks"] = self
            .parents
            .iter()
            .filter(|(_, p)| **p == issue.id)
            .filter_map(|(child, _)| self.linked_issue(*child))
            .collect();
        out
    }

    /// An issue as a link, a parent or a sub-task names it: shaped as the
    /// linked issue of the recorded `issuelinks`.
    fn linked_issue(&self, id: u64) -> Option<Value> {
        let issue = self
            .issues
            .get(&id)
            .filter(|_| !self.hidden.contains(&id))?;
        let mut out =
            fixture("v2/issue-restricted-comment.json")["fields"]["issuelinks"][0]["outwardIssue"]
                .clone();
        out["id"] = json!(id.to_string());
        out["key"] = json!(issue.key);
        out["self"] = json!(format!("{}{}/issue/{id}", self.base, self.api()));
        let fields = issue.field_map();
        out["fields"]["summary"] = fields.get("summary").cloned().unwrap_or_default();
        out["fields"]["status"]["name"] = fields["status"]["name"].clone();
        out["fields"]["issuetype"] = json!({"name": fields["issuetype"]["name"]});
        Some(out)
    }

    /// An issue's `issuelinks`: each link with the issue at its other end,
    /// under `outwardIssue` where this issue is the source.
    fn issue_links(&self, id: u64) -> Value {
        let recorded =
            fixture("v2/issue-restricted-comment.json")["fields"]["issuelinks"][0].clone();
        let types = fixture("v3/issue-link-types.json");
        self.links
            .iter()
            .filter_map(|(link_id, (name, source, destination))| {
                let (side, other) = if *source == id {
                    ("outwardIssue", *destination)
                } else if *destination == id {
                    ("inwardIssue", *source)
                } else {
                    return None;
                };
                let mut link = recorded.clone();
                let obj = link.as_object_mut()?;
                obj.remove("outwardIssue");
                obj.insert("id".into(), json!(link_id.to_string()));
                obj.insert(
                    "type".into(),
                    types["issueLinkTypes"]
                        .as_array()?
                        .iter()
                        .find(|t| t["name"] == json!(name))?
                        .clone(),
                );
                obj.insert(side.into(), self.linked_issue(other)?);
                Some(link)
            })
            .collect()
    }

    /// The type name of an issue, as a create or an edit leaves it.
    fn type_of(issue: &FakeIssue, fields: &serde_json::Map<String, Value>) -> String {
        fields
            .get("issuetype")
            .unwrap_or(&issue.field_map()["issuetype"])["name"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Jira's checks of a parent: a sub-task's is a standard issue, made
    /// with the sub-task (Data Center cannot move one by an edit); on Cloud
    /// an epic's children name it in `parent` too.
    fn check_parent(
        &self,
        issue: &FakeIssue,
        fields: &serde_json::Map<String, Value>,
        value: &Value,
        creating: bool,
    ) -> Result<Option<Value>, Reply> {
        if !self.v3 && !creating {
            return Err(bad_request(
                "parent",
                "Field 'parent' cannot be set. It is not on the appropriate screen, or unknown.",
            ));
        }
        if value.is_null() {
            return Ok(None);
        }
        let named = value["id"].as_str().or_else(|| value["key"].as_str());
        let Some(parent) = named.and_then(|n| self.find(n)) else {
            return Err(bad_request("parent", "Could not find issue by id or key."));
        };
        let kind = Self::type_of(issue, fields);
        let parent_kind = Self::type_of(&self.issues[&parent], &serde_json::Map::new());
        let subtask = |t: &str| SUBTASK_TYPES.iter().any(|s| s.eq_ignore_ascii_case(t));
        let fits = if subtask(&kind) {
            !subtask(&parent_kind) && parent_kind != "Epic"
        } else if !self.v3 {
            return Err(bad_request(
                "issuetype",
                "Issue type is not a sub-task but parent issue key or id specified.",
            ));
        } else {
            parent_kind == "Epic"
        };
        if !fits {
            return Err(bad_request(
                "parent",
                "Given parent work item does not belong to appropriate hierarchy.",
            ));
        }
        Ok(Some(json!({"id": parent.to_string()})))
    }

    /// The recorded transitions from the issue's status. With `expand`
    /// (`expand=transitions.fields`) each carries its screen's fields, and, as
    /// in Jira's classic workflows, a transition into a done status asks for a
    /// Resolution (the field's schema from the recorded field list, its allowed
    /// values the recorded resolutions).
    fn transitions(&self, issue: &FakeIssue, expand: bool) -> Value {
        let mut t = fixture(if self.v3 {
            "v3/transitions.json"
        } else {
            "v2/transitions.json"
        });
        let current = issue.field_map()["status"]["name"].clone();
        let resolution = json!({
            "required": true,
            "schema": fixture("v3/fields.json")
                .as_array()
                .and_then(|l| l.iter().find(|f| f["id"] == "resolution"))
                .map(|f| f["schema"].clone())
                .unwrap_or_default(),
            "name": "Resolution",
            "key": "resolution",
            "hasDefaultValue": false,
            "operations": ["set"],
            "allowedValues": fixture("v3/resolutions.json"),
        });
        if let Some(list) = t["transitions"].as_array_mut() {
            list.retain(|t| t["to"]["name"] != current);
            for transition in list.iter_mut() {
                let Some(obj) = transition.as_object_mut() else {
                    continue;
                };
                if !expand {
                    obj.remove("fields");
                } else if done_category(&obj["to"]) {
                    obj["fields"]["resolution"] = resolution.clone();
                }
            }
        }
        t
    }

    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    /// The recorded `project/KEY/statuses` answer with this fake's workflow in
    /// it: the status issues are created in, then the recorded transitions'
    /// targets, each shaped as a recorded status (id, name and URLs patched).
    fn project_statuses(&self) -> Value {
        let mut listed = fixture("v3/project-statuses.json");
        let transitions = fixture(if self.v3 {
            "v3/transitions.json"
        } else {
            "v2/transitions.json"
        });
        let mut names = vec![(CREATED_STATUS.to_string(), "1".to_string())];
        for t in transitions["transitions"].as_array().into_iter().flatten() {
            let name = t["to"]["name"].as_str().unwrap_or_default().to_string();
            let id = t["to"]["id"].as_str().unwrap_or_default().to_string();
            if !names.iter().any(|(n, _)| *n == name) {
                names.push((name, id));
            }
        }
        let api = self.api();
        for issue_type in listed.as_array_mut().into_iter().flatten() {
            let shape = issue_type["statuses"][0].clone();
            issue_type["self"] = json!(format!(
                "{}{api}/issuetype/{}",
                self.base,
                issue_type["id"].as_str().unwrap_or_default()
            ));
            issue_type["statuses"] = names
                .iter()
                .map(|(name, id)| {
                    let mut status = shape.clone();
                    status["name"] = json!(name);
                    status["id"] = json!(id);
                    status["self"] = json!(format!("{}{api}/status/{id}", self.base));
                    status
                })
                .collect();
        }
        listed
    }

    /// Applies `fields` of a create or an edit, Jira's checks included.
    fn apply(
        &self,
        issue: &mut FakeIssue,
        fields: &serde_json::Map<String, Value>,
        creating: bool,
    ) -> Option<Reply> {
        for (k, v) in fields {
            match k.as_str() {
                "parent" => match self.check_parent(issue, fields, v, creating) {
                    Ok(Some(parent)) => {
                        issue.field_map_mut().insert(k.clone(), parent);
                    }
                    Ok(None) => {
                        issue.field_map_mut().remove(k);
                    }
                    Err(refused) => return Some(refused),
                },
                EPIC_LINK if !self.v3 => {
                    if v.is_null() {
                        issue.field_map_mut().remove(k);
                        continue;
                    }
                    let epic = v.as_str().and_then(|key| self.find(key));
                    match epic.map(|e| &self.issues[&e]) {
                        Some(epic) if Self::type_of(epic, &serde_json::Map::new()) == "Epic" => {
                            let key = json!(epic.key);
                            issue.field_map_mut().insert(k.clone(), key);
                        }
                        _ => {
                            return Some(bad_request(
                                k,
                                &format!("Issue '{}' is not an epic.", v.as_str().unwrap_or("")),
                            ));
                        }
                    }
                }
                "summary" if v.as_str().is_none_or(|s| s.trim().is_empty()) => {
                    return Some(bad_request(
                        "summary",
                        "You must specify a summary of the issue.",
                    ));
                }
                "description" if !v.is_null() && (self.v3 != v.is_object()) => {
                    return Some(bad_request(
                        "description",
                        "Operation value must be a string",
                    ));
                }
                "labels"
                    if v.as_array().is_some_and(|l| {
                        l.iter().any(|x| x.as_str().is_none_or(|s| s.contains(' ')))
                    }) =>
                {
                    return Some(bad_request("labels", "The label must not contain spaces."));
                }
                "project" | "summary" | "description" | "issuetype" | "priority" | "assignee"
                | "reporter" | "labels" | "components" | "customfield_90001"
                | "customfield_90002" => {
                    if v.is_null() {
                        issue.field_map_mut().remove(k);
                    } else {
                        issue.field_map_mut().insert(k.clone(), v.clone());
                    }
                }
                other => {
                    return Some(bad_request(
                        other,
                        &format!(
                            "Field '{other}' cannot be set. It is not on the appropriate screen, or unknown."
                        ),
                    ));
                }
            }
        }
        None
    }

    /// Makes an issue from a create's `fields`, Jira's checks included.
    fn create_issue(
        &mut self,
        fields: &serde_json::Map<String, Value>,
        now: DateTime<Utc>,
    ) -> Result<u64, Reply> {
        if fields.get("project").map(|p| &p["key"]) != Some(&json!(self.project)) {
            return Err(bad_request("project", "valid project is required"));
        }
        let id = self.next_id;
        let mut issue = FakeIssue {
            id,
            key: format!("{}-{}", self.project, self.next_key),
            fields: serde_json::Map::new(),
            seeded_as: None,
            seeded: None,
            comments: Vec::new(),
            attachments: Vec::new(),
            created: now,
            updated: now,
        };
        issue
            .fields
            .insert("status".into(), json!({"name": CREATED_STATUS}));
        if let Some(err) = self.apply(&mut issue, fields, true) {
            return Err(err);
        }
        let kind = Self::type_of(&issue, &serde_json::Map::new());
        if SUBTASK_TYPES.contains(&kind.as_str()) && !issue.fields.contains_key("parent") {
            return Err(bad_request(
                "parent",
                "Parent-Id is required for a sub-task.",
            ));
        }
        if !issue.fields.contains_key("summary") {
            return Err(bad_request(
                "summary",
                "You must specify a summary of the issue.",
            ));
        }
        self.next_id += 1;
        self.next_key += 1;
        self.index_parent(&issue);
        self.issues.insert(id, issue);
        Ok(id)
    }

    /// `POST /issueLink`: `inwardIssue` is the link's source (see the
    /// connector's `relations`). A link that exists is not made twice. Both
    /// issues' `updated` move, as Jira's change history on each does.
    fn make_link(&mut self, body: &Value, now: DateTime<Utc>) -> Reply {
        let name = body["type"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let known = fixture("v3/issue-link-types.json")["issueLinkTypes"]
            .as_array()
            .is_some_and(|l| l.iter().any(|t| t["name"] == json!(name)));
        if !known {
            return reply(
                404,
                &json!({"errorMessages": [format!("No issue link type with name '{name}' found.")], "errors": {}}),
            );
        }
        let end = |side: &str| {
            let named = body[side]["id"]
                .as_str()
                .or_else(|| body[side]["key"].as_str());
            named.and_then(|n| self.find(n))
        };
        let (Some(source), Some(destination)) = (end("inwardIssue"), end("outwardIssue")) else {
            return reply(
                404,
                &json!({"errorMessages": ["Issue Does Not Exist"], "errors": {}}),
            );
        };
        let link = (name, source, destination);
        if !self.links.values().any(|l| *l == link) {
            let id = self.next_id;
            self.next_id += 1;
            self.links.insert(id, link);
            self.touch(&[source, destination], now);
        }
        (201, Vec::new(), Vec::new())
    }

    /// Moves the issues' `updated` to `now`.
    fn touch(&mut self, ids: &[u64], now: DateTime<Utc>) {
        for id in ids {
            if let Some(issue) = self.issues.get_mut(id) {
                issue.field_map_mut();
                issue.updated = now;
            }
        }
    }

    /// Keeps [`State::parents`] in step with an issue's `parent` field.
    fn index_parent(&mut self, issue: &FakeIssue) {
        let parent = issue
            .fields
            .get("parent")
            .and_then(|p| p["id"].as_str())
            .and_then(|p| p.parse().ok());
        match parent {
            Some(parent) => self.parents.insert(issue.id, parent),
            None => self.parents.remove(&issue.id),
        };
    }

    /// Jira's answer for a project key it does not know (made by the fake: the
    /// envelope is the recorded one, the words Jira's).
    fn no_project(key: &str) -> Reply {
        reply(
            404,
            &json!({"errorMessages": [format!("No project could be found with key '{key}'.")], "errors": {}}),
        )
    }

    fn handle(&mut self, r: &Recorded) -> Reply {
        // Jira answers serverInfo to anyone, signed in or not: reaching it
        // proves nothing about the credentials.
        if r.path == format!("{}/serverInfo", self.api()) {
            let mut info = fixture("v2/serverinfo.json");
            info["baseUrl"] = json!(self.base);
            info["serverTime"] = json!(stamp(self.now()));
            info["deploymentType"] = json!(if self.v3 { "Cloud" } else { "Server" });
            return reply(200, &info);
        }
        if r.headers.get("authorization") != Some(&self.auth) {
            return reply(401, &json!({"errors": recorded_error(401)["errors"]}));
        }
        let api = self.api();
        if let Some(id) = r.path.strip_prefix("/secure/attachment/") {
            let id = id.split('/').next().unwrap_or_default();
            for issue in self.issues.values() {
                if let Some((_, content)) = issue.attachments.iter().find(|(m, _)| m["id"] == id) {
                    let headers = vec![("Content-Type".into(), "application/octet-stream".into())];
                    return (200, headers, content.clone());
                }
            }
            return not_found();
        }
        let Some(path) = r.path.strip_prefix(api) else {
            return not_found();
        };
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let now = self.now();
        match (r.method.as_str(), segments.as_slice()) {
            ("GET", ["myself"]) => {
                let mut me = fixture(if self.v3 {
                    "v3/myself.json"
                } else {
                    "v2/myself.json"
                });
                let key = if self.v3 { "accountId" } else { "name" };
                me[key] = json!(self.user);
                me["self"] = self.user_object(&self.user)["self"].clone();
                reply(200, &me)
            }
            ("GET", ["project", key]) => {
                if *key != self.project {
                    return Self::no_project(key);
                }
                let mut project = fixture("v3/project-get.json");
                project["key"] = json!(self.project);
                project["name"] = json!(format!("{} project", self.project));
                project["self"] = json!(format!("{}{api}/project/{}", self.base, self.project));
                reply(200, &project)
            }
            ("GET", ["project", key, "statuses"]) => {
                if *key != self.project {
                    return Self::no_project(key);
                }
                reply(200, &self.project_statuses())
            }
            ("GET", ["mypermissions"]) => {
                let key = r.query.get("projectKey").cloned().unwrap_or_default();
                if key != self.project {
                    return Self::no_project(&key);
                }
                let mut all = fixture("v2/mypermissions.json");
                let asked: Option<BTreeSet<&str>> =
                    r.query.get("permissions").map(|p| p.split(',').collect());
                if let Some(map) = all["permissions"].as_object_mut() {
                    map.retain(|k, _| asked.as_ref().is_none_or(|a| a.contains(k.as_str())));
                    for (k, v) in map.iter_mut() {
                        v["havePermission"] = json!(!self.denied.contains(k));
                    }
                }
                reply(200, &all)
            }
            ("GET", ["field"]) => reply(200, &self.field_list()),
            ("GET", ["search"]) if !self.v3 => self.search(r, false),
            ("GET", ["search", "jql"]) if self.v3 => self.search(r, true),
            ("POST", ["issue"]) => {
                let fields = r.json()["fields"].as_object().cloned().unwrap_or_default();
                match self.create_issue(&fields, now) {
                    Ok(id) => {
                        let mut created = fixture("v3/issue-create.json");
                        created["id"] = json!(id.to_string());
                        created["key"] = json!(self.issues[&id].key);
                        created["self"] = json!(format!("{}{api}/issue/{id}", self.base));
                        if let Some(m) = created.as_object_mut() {
                            m.remove("transition");
                        }
                        reply(201, &created)
                    }
                    Err(refused) => refused,
                }
            }
            // Jira's bulk create: each issue checked and made on its own (a
            // partial success is a 201 listing the failures by position, all
            // failing a 400), at most 50 at once.
            ("POST", ["issue", "bulk"]) => {
                let body = r.json();
                let updates = body["issueUpdates"].as_array().cloned().unwrap_or_default();
                if updates.len() > 50 {
                    return reply(
                        400,
                        &json!({"errorMessages": ["You can create at most 50 issues in one bulk request."], "errors": {}}),
                    );
                }
                let mut issues = Vec::new();
                let mut errors = Vec::new();
                for (n, update) in updates.iter().enumerate() {
                    let fields = update["fields"].as_object().cloned().unwrap_or_default();
                    match self.create_issue(&fields, now) {
                        Ok(id) => issues
                            .push(json!({"id": id.to_string(), "key": self.issues[&id].key,
                            "self": format!("{}{api}/issue/{id}", self.base)})),
                        Err((status, _, refused)) => {
                            let refused: Value =
                                serde_json::from_slice(&refused).unwrap_or_default();
                            errors.push(json!({"status": status, "failedElementNumber": n,
                                "elementErrors": {"errorMessages": refused["errorMessages"].clone(),
                                                  "errors": refused["errors"].clone()}}));
                        }
                    }
                }
                let status = if issues.is_empty() && !errors.is_empty() {
                    400
                } else {
                    201
                };
                reply(status, &json!({"issues": issues, "errors": errors}))
            }
            (method, ["issue", key, rest @ ..]) => {
                let Some(id) = self.find(key) else {
                    return not_found();
                };
                self.issue_route(method, id, rest, r, now)
            }
            ("GET", ["issueLinkType"]) => reply(200, &fixture("v3/issue-link-types.json")),
            ("POST", ["issueLink"]) => self.make_link(&r.json(), now),
            ("DELETE", ["issueLink", link]) => {
                let Some((_, source, destination)) =
                    link.parse().ok().and_then(|l| self.links.remove(&l))
                else {
                    return not_found();
                };
                self.touch(&[source, destination], now);
                no_content()
            }
            ("DELETE", ["attachment", aid]) => {
                for issue in self.issues.values_mut() {
                    let before = issue.attachments.len();
                    issue.attachments.retain(|(m, _)| m["id"] != *aid);
                    if issue.attachments.len() != before {
                        issue.updated = now;
                        return no_content();
                    }
                }
                not_found()
            }
            _ => not_found(),
        }
    }

    fn issue_route(
        &mut self,
        method: &str,
        id: u64,
        rest: &[&str],
        r: &Recorded,
        now: DateTime<Utc>,
    ) -> Reply {
        match (method, rest) {
            ("GET", []) => reply(200, &self.render(&self.issues[&id])),
            ("PUT", []) => {
                let fields = r.json()["fields"].as_object().cloned().unwrap_or_default();
                let mut issue = self.issues.remove(&id).expect("issue");
                issue.field_map_mut();
                let before = issue.fields.clone();
                let err = self.apply(&mut issue, &fields, false);
                if err.is_some() {
                    issue.fields = before;
                } else if issue.fields != before {
                    issue.updated = now;
                }
                self.index_parent(&issue);
                self.issues.insert(id, issue);
                err.unwrap_or_else(no_content)
            }
            ("DELETE", []) => {
                self.issues.remove(&id);
                self.links.retain(|_, (_, s, d)| *s != id && *d != id);
                self.parents
                    .retain(|child, parent| *child != id && *parent != id);
                no_content()
            }
            ("GET", ["transitions"]) => {
                let expand = r
                    .query
                    .get("expand")
                    .is_some_and(|e| e.contains("transitions.fields"));
                reply(200, &self.transitions(&self.issues[&id], expand))
            }
            ("POST", ["transitions"]) => {
                let body = r.json();
                let wanted = body["transition"]["id"].clone();
                let list = self.transitions(&self.issues[&id], true);
                let Some(t) = list["transitions"]
                    .as_array()
                    .and_then(|l| l.iter().find(|t| t["id"] == wanted))
                else {
                    return reply(
                        400,
                        &json!({"errorMessages": ["Transition id is not valid for this issue."], "errors": {}}),
                    );
                };
                // Jira's checks of the transition screen: required fields
                // without a default must come with the request, and a
                // resolution must be one Jira has.
                let screen = t["fields"].as_object().cloned().unwrap_or_default();
                for (field, meta) in &screen {
                    let given = &body["fields"][field];
                    if meta["required"] == true
                        && meta["hasDefaultValue"] != true
                        && given.is_null()
                    {
                        let name = meta["name"].as_str().unwrap_or(field);
                        return bad_request(field, &format!("Field {name} is required."));
                    }
                    if field == "resolution"
                        && !given.is_null()
                        && !meta["allowedValues"]
                            .as_array()
                            .is_some_and(|l| l.iter().any(|v| v["name"] == given["name"]))
                    {
                        return bad_request(
                            field,
                            "Could not find valid 'id' or 'name' in resolution object.",
                        );
                    }
                }
                let done = done_category(&t["to"]);
                let issue = self.issues.get_mut(&id).expect("issue");
                issue
                    .field_map_mut()
                    .insert("status".into(), json!({"name": t["to"]["name"]}));
                match &body["fields"]["resolution"] {
                    resolution if done && !resolution.is_null() => {
                        issue.fields.insert("resolution".into(), resolution.clone());
                    }
                    // Reopening clears it, as the classic workflows' post
                    // functions do.
                    _ if !done => {
                        issue.fields.remove("resolution");
                    }
                    _ => {}
                }
                issue.updated = now;
                no_content()
            }
            ("GET", ["comment"]) => {
                let issue = &self.issues[&id];
                let all = self.comments_of(issue);
                let start = r.number("startAt", 0);
                let max = r.number("maxResults", 50).min(self.page);
                let props = r
                    .query
                    .get("expand")
                    .is_some_and(|e| e.contains("properties"));
                let page: Vec<Value> = all
                    .iter()
                    .skip(start)
                    .take(max)
                    .map(|c| self.render_comment(id, c, props))
                    .collect();
                let mut out = fixture(if self.v3 {
                    "v3/comments.json"
                } else {
                    "v2/comments.json"
                });
                out["startAt"] = json!(start);
                out["maxResults"] = json!(max);
                out["total"] = json!(all.len());
                out["comments"] = Value::Array(page);
                reply(200, &out)
            }
            ("POST", ["comment"]) => {
                let body = r.json();
                if body["body"].is_null() || (self.v3 != body["body"].is_object()) {
                    return bad_request("comment", "Comment body can not be empty!");
                }
                let cid = self.next_id;
                self.next_id += 1;
                let mut c = json!({"id": cid.to_string(), "author": self.user, "body": body["body"],
                    "created": stamp(now), "updated": stamp(now),
                    "properties": body.get("properties").cloned().unwrap_or(json!([]))});
                if let Some(v) = body.get("visibility") {
                    c["visibility"] = v.clone();
                }
                let rendered = self.render_comment(id, &c, false);
                let v3 = self.v3;
                let issue = self.issues.get_mut(&id).expect("issue");
                if let Some(seeded) = issue.seeded.take() {
                    let mut all = seeded_comments(&seeded, v3);
                    all.append(&mut issue.comments);
                    issue.comments = all;
                }
                issue.comments.push(c);
                issue.updated = now;
                reply(201, &rendered)
            }
            ("GET", ["comment", cid]) => {
                let issue = &self.issues[&id];
                match self.comments_of(issue).iter().find(|c| c["id"] == *cid) {
                    Some(c) => {
                        let props = r
                            .query
                            .get("expand")
                            .is_some_and(|e| e.contains("properties"));
                        reply(200, &self.render_comment(id, c, props))
                    }
                    None => not_found(),
                }
            }
            ("POST", ["attachments"]) => {
                if r.headers.get("x-atlassian-token").map(String::as_str) != Some("no-check") {
                    return reply(403, &json!({"errorMessages": ["XSRF check failed"]}));
                }
                let Some((name, content)) = multipart_file(r) else {
                    return bad_request("file", "no file in the request");
                };
                let aid = self.next_id;
                self.next_id += 1;
                let meta = json!({"id": aid.to_string(), "filename": name, "size": content.len(),
                                  "created": stamp(now), "author": self.user});
                let rendered = self.render_attachment(&meta);
                let issue = self.issues.get_mut(&id).expect("issue");
                issue.attachments.push((meta, content));
                issue.updated = now;
                reply(200, &json!([rendered]))
            }
            _ => not_found(),
        }
    }
}

/// Whether a transition's target status is in the done category (`done` on
/// current Jira, `completed` in the recorded older answers).
fn done_category(status: &Value) -> bool {
    matches!(
        status["statusCategory"]["key"].as_str(),
        Some("done" | "completed")
    )
}
