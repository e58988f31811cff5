//! The Redmine connector: Redmine's REST API, authenticated with an API key.
//!
//! Redmine has no notion of ferry's origin markers, labels, tombstones or
//! per-comment origins, so this connector maps them onto what Redmine has (the
//! decisions and their costs are in `docs/redmine.md`):
//!
//! - Keys are `PROJECT-ID` (`sup-42`): Redmine numbers issues globally, so the id
//!   is the number people say (`#42`) and the project identifier in front tells a
//!   peer which project the issue is in. `#42` is accepted as a key too.
//! - Origin markers are a last line `ferry-origin: SITE:ID` in the description (of
//!   an issue) or in the note (of a comment), after a blank line. Redmine can
//!   search descriptions (`description=~TEXT`), so a retried create finds the
//!   issue it already made; ferry strips the line when it reads the text back.
//! - A note written for someone who is not the API key's user carries a line
//!   `ferry-author: NAME` beside the marker, read back as the comment's author.
//! - Labels live in one text custom field (`Labels` unless configured),
//!   comma-separated; other custom fields are read and written by name.
//! - Categories are components (Redmine allows one per issue); private notes are
//!   internal comments; journals that only record field changes are not comments.
//! - Redmine forgets deleted issues. The connector keeps the ids it has seen in a
//!   small state file and, on every `changed_since`, lists the project's ids to
//!   notice the ones that vanished: those become tombstones.

mod config;
pub mod fake;
mod http;
mod known;
mod relations;
mod text;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::retry::RetryPolicy;
use super::{
    IssuePatch, NewAttachment, NewComment, NewIssue, Tracker, TrackerError, TrackerInstance,
    side_by_side,
};
use crate::model::{
    Attachment, Comment, FieldValue, Issue, Origin, normalize_set, parse_timestamp,
    truncate_to_seconds,
};
pub use config::RedmineConfig;
use http::{Client, Reply};
use known::Known;

/// The environment variable holding the API key when no key file is configured.
pub const API_KEY_ENV: &str = "FERRY_REDMINE_API_KEY";

/// The file (in the state folder) where the connector remembers the issues it has
/// seen, to notice deletions.
pub const KNOWN_FILE: &str = known::STORE_FILE;

/// Where older versions remembered them (read into [`KNOWN_FILE`] once).
const LEGACY_KNOWN_FILE: &str = "redmine-known.json";

/// How many issues Redmine returns per page (its maximum).
const PAGE: usize = 100;

/// Everything the connector needs to know, from `ferry.yaml` and the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Base URL (`https://redmine.example.com`).
    pub url: String,
    /// The project identifier whose issues `changed_since` reads.
    pub project: String,
    /// The API key (never logged, never written anywhere).
    pub api_key: String,
    /// ferry user name → Redmine login, for users whose names differ.
    pub users: BTreeMap<String, String>,
    /// ferry status → Redmine status name, for statuses whose names differ.
    pub statuses: BTreeMap<String, String>,
    /// The text custom field that holds the labels.
    pub labels_field: String,
    /// How long one request may take.
    pub timeout: Duration,
    /// How often a request Redmine could not answer is sent again.
    pub retry: RetryPolicy,
    /// How many issues are read at once (each its own request, since only an
    /// issue's own page carries its journals).
    pub concurrency: usize,
}

/// Names and ids of the things Redmine refers to by id.
#[derive(Default)]
struct Cache {
    statuses: Option<BTreeMap<String, u64>>,
    trackers: Option<BTreeMap<String, u64>>,
    priorities: Option<BTreeMap<String, u64>>,
    /// Custom field name → (id, format, multiple).
    fields: Option<BTreeMap<String, (u64, String, bool)>>,
    /// Project id → identifier.
    projects: BTreeMap<u64, String>,
    /// User id → login.
    logins: BTreeMap<u64, String>,
    /// Login → user id.
    users: BTreeMap<String, Option<u64>>,
}

/// A Redmine server, seen through one project.
pub struct RedmineTracker {
    settings: Settings,
    client: Client,
    /// The login of the API key's user.
    me: String,
    cache: RefCell<Cache>,
    known: RefCell<Known>,
}

impl RedmineTracker {
    /// Connects to Redmine and checks the key; the state folder holds the ids it
    /// has seen.
    pub fn open(settings: Settings, state: &Path) -> Result<RedmineTracker, TrackerError> {
        let client = Client::new(
            &settings.url,
            &settings.api_key,
            settings.timeout,
            settings.retry,
        );
        let me = match client.get("/users/current.json", &[])? {
            Reply::Json(v) => v["user"]["login"].as_str().unwrap_or_default().to_string(),
            other => return Err(client.unexpected("/users/current.json", other)),
        };
        let known = Known::load(state, LEGACY_KNOWN_FILE)?;
        Ok(RedmineTracker {
            settings,
            client,
            me,
            cache: RefCell::new(Cache::default()),
            known: RefCell::new(known),
        })
    }

    // ---- names and ids ------------------------------------------------------

    fn named_ids(
        &self,
        path: &str,
        list: &str,
        slot: fn(&mut Cache) -> &mut Option<BTreeMap<String, u64>>,
    ) -> Result<BTreeMap<String, u64>, TrackerError> {
        if let Some(map) = slot(&mut self.cache.borrow_mut()) {
            return Ok(map.clone());
        }
        let map: BTreeMap<String, u64> = match self.client.get(path, &[])? {
            Reply::Json(v) => v[list]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| Some((e["name"].as_str()?.to_string(), e["id"].as_u64()?)))
                .collect(),
            other => return Err(self.client.unexpected(path, other)),
        };
        *slot(&mut self.cache.borrow_mut()) = Some(map.clone());
        Ok(map)
    }

    fn id_of(
        &self,
        what: &str,
        name: &str,
        issue: &str,
        path: &str,
        list: &str,
        slot: fn(&mut Cache) -> &mut Option<BTreeMap<String, u64>>,
    ) -> Result<u64, TrackerError> {
        let map = self.named_ids(path, list, slot)?;
        map.get(name)
            .copied()
            .ok_or_else(|| TrackerError::Rejected {
                issue: issue.into(),
                message: format!(
                    "Redmine has no {what} {name:?} (it has: {})",
                    map.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            })
    }

    fn status_id(&self, status: &str, issue: &str) -> Result<u64, TrackerError> {
        let name = self
            .settings
            .statuses
            .get(status)
            .map_or(status, String::as_str);
        self.id_of(
            "status",
            name,
            issue,
            "/issue_statuses.json",
            "issue_statuses",
            |c| &mut c.statuses,
        )
    }

    fn tracker_id(&self, name: &str, issue: &str) -> Result<u64, TrackerError> {
        self.id_of(
            "tracker (issue type)",
            name,
            issue,
            "/trackers.json",
            "trackers",
            |c| &mut c.trackers,
        )
    }

    fn priority_id(&self, name: &str, issue: &str) -> Result<u64, TrackerError> {
        self.id_of(
            "priority",
            name,
            issue,
            "/enumerations/issue_priorities.json",
            "issue_priorities",
            |c| &mut c.priorities,
        )
    }

    /// The ferry name of a Redmine status (the reverse of the status table).
    fn status_name(&self, redmine: &str) -> String {
        self.settings
            .statuses
            .iter()
            .find(|(_, r)| *r == redmine)
            .map_or_else(|| redmine.to_string(), |(ferry, _)| ferry.clone())
    }

    /// Custom fields by name: the admin list when the key may read it, else the
    /// fields the issues themselves show.
    fn custom_fields(&self) -> Result<BTreeMap<String, (u64, String, bool)>, TrackerError> {
        if let Some(map) = &self.cache.borrow().fields {
            return Ok(map.clone());
        }
        let map: BTreeMap<String, (u64, String, bool)> =
            match self.client.get("/custom_fields.json", &[])? {
                Reply::Json(v) => v["custom_fields"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|f| f["customized_type"] == "issue")
                    .filter_map(|f| {
                        Some((
                            f["name"].as_str()?.to_string(),
                            (
                                f["id"].as_u64()?,
                                f["field_format"].as_str().unwrap_or("string").to_string(),
                                f["multiple"].as_bool().unwrap_or(false),
                            ),
                        ))
                    })
                    .collect(),
                // Only administrators may list custom fields; others learn them
                // from the issues they read.
                Reply::NotFound | Reply::Forbidden => BTreeMap::new(),
                other => return Err(self.client.unexpected("/custom_fields.json", other)),
            };
        self.cache.borrow_mut().fields = Some(map.clone());
        Ok(map)
    }

    fn field(&self, name: &str, issue: &str) -> Result<(u64, String, bool), TrackerError> {
        self.custom_fields()?
            .get(name)
            .cloned()
            .ok_or_else(|| TrackerError::Rejected {
                issue: issue.into(),
                message: format!(
                    "Redmine has no issue custom field {name:?}; an administrator creates it \
                     (Administration → Custom fields) for this project's trackers"
                ),
            })
    }

    fn project_identifier(&self, id: u64) -> Result<String, TrackerError> {
        if let Some(p) = self.cache.borrow().projects.get(&id) {
            return Ok(p.clone());
        }
        let path = format!("/projects/{id}.json");
        let identifier = match self.client.get(&path, &[])? {
            Reply::Json(v) => v["project"]["identifier"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            other => return Err(self.client.unexpected(&path, other)),
        };
        self.cache
            .borrow_mut()
            .projects
            .insert(id, identifier.clone());
        Ok(identifier)
    }

    /// The ferry name of a Redmine user: its login (through the user table), or
    /// its display name when the key may not read logins.
    fn user_name(&self, user: &Value) -> Result<Option<String>, TrackerError> {
        let Some(id) = user["id"].as_u64() else {
            return Ok(None);
        };
        let cached = self.cache.borrow().logins.get(&id).cloned();
        let login = match cached {
            Some(login) => login,
            None => {
                let path = format!("/users/{id}.json");
                let login = match self.client.get(&path, &[])? {
                    Reply::Json(v) => v["user"]["login"].as_str().map(str::to_string),
                    Reply::NotFound | Reply::Forbidden => None,
                    other => return Err(self.client.unexpected(&path, other)),
                }
                .or_else(|| user["name"].as_str().map(str::to_string))
                .unwrap_or_else(|| id.to_string());
                self.cache.borrow_mut().logins.insert(id, login.clone());
                login
            }
        };
        Ok(Some(
            self.settings
                .users
                .iter()
                .find(|(_, l)| **l == login)
                .map_or(login, |(ferry, _)| ferry.clone()),
        ))
    }

    /// The Redmine login of a ferry user name.
    fn login(&self, name: &str) -> String {
        self.settings
            .users
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_string())
    }

    fn user_id(&self, name: &str, issue: &str) -> Result<u64, TrackerError> {
        let login = self.login(name);
        let cached = self.cache.borrow().users.get(&login).copied();
        let id = match cached {
            Some(id) => id,
            None => {
                let id = match self.client.get("/users.json", &[("name", login.clone())])? {
                    Reply::Json(v) => v["users"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|u| u["login"].as_str() == Some(login.as_str()))
                        .and_then(|u| u["id"].as_u64()),
                    Reply::Forbidden | Reply::NotFound => None,
                    other => return Err(self.client.unexpected("/users.json", other)),
                };
                let id = match id {
                    None if login == self.me => self.my_id()?,
                    id => id,
                };
                self.cache.borrow_mut().users.insert(login.clone(), id);
                id
            }
        };
        id.ok_or_else(|| TrackerError::Rejected {
            issue: issue.into(),
            message: format!(
                "Redmine has no user with login {login:?} (map ferry's user {name:?} \
                 in the tracker's `users` table)"
            ),
        })
    }

    fn my_id(&self) -> Result<Option<u64>, TrackerError> {
        match self.client.get("/users/current.json", &[])? {
            Reply::Json(v) => Ok(v["user"]["id"].as_u64()),
            other => Err(self.client.unexpected("/users/current.json", other)),
        }
    }

    fn category_id(&self, project: &str, name: &str, issue: &str) -> Result<u64, TrackerError> {
        let path = format!("/projects/{project}/issue_categories.json");
        let existing = match self.client.get(&path, &[])? {
            Reply::Json(v) => v["issue_categories"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["name"].as_str() == Some(name))
                .and_then(|c| c["id"].as_u64()),
            Reply::NotFound => return Err(no_project(project, issue)),
            other => return Err(self.client.unexpected(&path, other)),
        };
        if let Some(id) = existing {
            return Ok(id);
        }
        match self
            .client
            .send("POST", &path, &json!({"issue_category": {"name": name}}))?
        {
            Reply::Json(v) => v["issue_category"]["id"]
                .as_u64()
                .ok_or_else(|| self.client.unexpected(&path, Reply::Json(v.clone()))),
            Reply::Invalid(message) => Err(TrackerError::Rejected {
                issue: issue.into(),
                message: format!("cannot create category {name:?}: {message}"),
            }),
            other => Err(self.client.unexpected(&path, other)),
        }
    }

    // ---- reading --------------------------------------------------------------

    /// The issue as Redmine has it now, `None` when Redmine does not know it.
    fn fetch(&self, id: u64) -> Result<Option<Issue>, TrackerError> {
        let path = issue_path(id);
        let reply = self.client.get(&path, &issue_query())?;
        let mut issue = self.issue_from(&path, reply)?;
        self.fill_related(issue.as_mut_slice())?;
        Ok(issue)
    }

    /// The issue in Redmine's answer to a GET of `path`, the issues it is
    /// related to known by their ids only (see [`RedmineTracker::fill_related`]).
    fn issue_from(&self, path: &str, reply: Reply) -> Result<Option<Issue>, TrackerError> {
        match reply {
            Reply::Json(v) => {
                let issue = self.convert(&v["issue"])?;
                self.known.borrow_mut().seen(&issue);
                Ok(Some(issue))
            }
            Reply::NotFound => Ok(None),
            other => Err(self.client.unexpected(path, other)),
        }
    }

    /// [`RedmineTracker::fetch`], or the tombstone of an issue this connector saw
    /// before and Redmine no longer has.
    fn fetch_or_tombstone(&self, id: u64) -> Result<Option<Issue>, TrackerError> {
        let path = issue_path(id);
        let reply = self.client.get(&path, &issue_query())?;
        let mut result = self.issue_or_tombstone(id, &path, reply)?;
        self.fill_related(result.as_mut_slice())?;
        self.known.borrow_mut().save()?;
        Ok(result)
    }

    /// The issue in Redmine's answer about issue `id`, or its tombstone, leaving
    /// what it saw for the caller to save (a page of issues is saved at once).
    fn issue_or_tombstone(
        &self,
        id: u64,
        path: &str,
        reply: Reply,
    ) -> Result<Option<Issue>, TrackerError> {
        match self.issue_from(path, reply)? {
            Some(issue) => Ok(Some(issue)),
            None => self.known.borrow_mut().vanished(&id.to_string(), now()),
        }
    }

    /// Redmine's JSON issue → ferry's [`Issue`].
    fn convert(&self, v: &Value) -> Result<Issue, TrackerError> {
        let bad = |what: &str| {
            TrackerError::Unavailable(format!(
                "Redmine sent an issue without a valid {what}: {}",
                v.to_string().chars().take(200).collect::<String>()
            ))
        };
        let id = v["id"].as_u64().ok_or_else(|| bad("id"))?;
        let project =
            self.project_identifier(v["project"]["id"].as_u64().ok_or_else(|| bad("project"))?)?;
        let time = |field: &str| {
            v[field]
                .as_str()
                .and_then(|s| parse_timestamp(s).ok())
                .map(truncate_to_seconds)
                .ok_or_else(|| bad(field))
        };
        let (description, origin) =
            text::split(&text::unix(v["description"].as_str().unwrap_or("")));
        let origin = origin.origin;
        let (links, parent, subtasks) = relations::read(v, id);
        let formats = self.custom_fields()?;
        let mut labels = Vec::new();
        let mut fields = BTreeMap::new();
        for f in v["custom_fields"].as_array().into_iter().flatten() {
            let Some(name) = f["name"].as_str() else {
                continue;
            };
            let value = &f["value"];
            if name == self.settings.labels_field {
                labels = value
                    .as_str()
                    .unwrap_or("")
                    .split(',')
                    .map(|l| l.trim().to_string())
                    .collect();
                continue;
            }
            let format = formats.get(name).map_or("string", |(_, f, _)| f.as_str());
            if let Some(value) = field_value(value, format) {
                fields.insert(name.to_string(), value);
            }
        }
        normalize_set(&mut labels);
        let mut comments = Vec::new();
        for j in v["journals"].as_array().into_iter().flatten() {
            let notes = text::unix(j["notes"].as_str().unwrap_or(""));
            if notes.is_empty() {
                // A journal of field changes only: history, not a comment.
                continue;
            }
            let (body, trailer) = text::split(&notes);
            let author = match trailer.author {
                Some(author) => author,
                None => self.user_name(&j["user"])?.unwrap_or_default(),
            };
            comments.push(Comment {
                id: j["id"]
                    .as_u64()
                    .ok_or_else(|| bad("journal id"))?
                    .to_string(),
                author,
                created: j["created_on"]
                    .as_str()
                    .and_then(|s| parse_timestamp(s).ok())
                    .map(truncate_to_seconds)
                    .ok_or_else(|| bad("journal time"))?,
                body: body.unwrap_or_default(),
                internal: j["private_notes"].as_bool().unwrap_or(false),
                origin: trailer.origin,
            });
        }
        let mut attachments = Vec::new();
        for a in v["attachments"].as_array().into_iter().flatten() {
            attachments.push(Attachment {
                id: a["id"]
                    .as_u64()
                    .ok_or_else(|| bad("attachment id"))?
                    .to_string(),
                name: a["filename"].as_str().unwrap_or_default().to_string(),
                size: a["filesize"].as_u64().unwrap_or(0),
                // Redmine keeps a digest but does not show it; the engine hashes
                // the content itself.
                sha256: String::new(),
                author: self.user_name(&a["author"])?,
                created: a["created_on"]
                    .as_str()
                    .and_then(|s| parse_timestamp(s).ok())
                    .map(truncate_to_seconds)
                    .ok_or_else(|| bad("attachment time"))?,
            });
        }
        let mut issue = Issue {
            resolution: None,
            id: id.to_string(),
            key: format!("{project}-{id}"),
            project,
            issue_type: v["tracker"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            summary: v["subject"].as_str().unwrap_or_default().to_string(),
            description,
            status: self.status_name(v["status"]["name"].as_str().unwrap_or_default()),
            priority: v["priority"]["name"].as_str().map(str::to_string),
            assignee: self.user_name(&v["assigned_to"])?,
            reporter: self.user_name(&v["author"])?,
            labels,
            components: v["category"]["name"]
                .as_str()
                .map(|c| vec![c.to_string()])
                .unwrap_or_default(),
            created: time("created_on")?,
            updated: time("updated_on")?,
            fields,
            comments,
            attachments,
            links,
            parent,
            subtasks,
            origin,
            deleted: false,
        };
        issue.normalize();
        Ok(issue)
    }

    /// The ids of the issues in the configured project, all statuses, optionally
    /// only those updated at or after `since`, oldest id first.
    fn list_ids(&self, since: Option<DateTime<Utc>>) -> Result<Vec<u64>, TrackerError> {
        let mut ids = Vec::new();
        let mut offset = 0;
        loop {
            let mut query = vec![
                ("project_id", self.settings.project.clone()),
                ("subproject_id", "!*".to_string()),
                ("status_id", "*".to_string()),
                ("sort", "id".to_string()),
                ("limit", PAGE.to_string()),
                ("offset", offset.to_string()),
            ];
            if let Some(since) = since {
                query.push((
                    "updated_on",
                    format!(">={}", crate::model::format_timestamp(&since)),
                ));
            }
            let page = match self.client.get("/issues.json", &query)? {
                Reply::Json(v) => v,
                Reply::NotFound => {
                    return Err(TrackerError::Unavailable(format!(
                        "Redmine at {} has no project {:?} (or the API key's user cannot see it)",
                        self.settings.url, self.settings.project
                    )));
                }
                other => return Err(self.client.unexpected("/issues.json", other)),
            };
            let batch = page["issues"].as_array().cloned().unwrap_or_default();
            let total = page["total_count"].as_u64().unwrap_or(0) as usize;
            offset += batch.len();
            // Redmine's `>=` is `> T - 1s` on times it keeps with fractions of a
            // second, so it also returns issues updated in the second before T.
            ids.extend(
                batch
                    .iter()
                    .filter(|i| {
                        since.is_none_or(|since| {
                            i["updated_on"]
                                .as_str()
                                .and_then(|t| parse_timestamp(t).ok())
                                .is_none_or(|t| t >= since)
                        })
                    })
                    .filter_map(|i| i["id"].as_u64()),
            );
            if batch.is_empty() || offset >= total {
                break;
            }
        }
        Ok(ids)
    }

    // ---- writing --------------------------------------------------------------

    /// The JSON fields that move `current` (or a new issue) to what `patch` says;
    /// empty when nothing would change.
    fn payload(
        &self,
        issue: &str,
        project: &str,
        current: Option<&Issue>,
        patch: &IssuePatch,
    ) -> Result<serde_json::Map<String, Value>, TrackerError> {
        let mut out = serde_json::Map::new();
        let differs = |now: Option<&str>, want: &str| now != Some(want);
        if let Some(t) = &patch.issue_type
            && differs(current.map(|c| c.issue_type.as_str()), t)
        {
            out.insert("tracker_id".into(), self.tracker_id(t, issue)?.into());
        }
        if let Some(s) = &patch.summary
            && differs(current.map(|c| c.summary.as_str()), s)
        {
            out.insert("subject".into(), s.clone().into());
        }
        if let Some(d) = &patch.description
            && current.is_none_or(|c| c.description != *d)
        {
            let text = text::join(d.as_deref(), current.and_then(|c| c.origin.as_ref()), None);
            out.insert("description".into(), text.into());
        }
        if let Some(s) = &patch.status
            && differs(current.map(|c| c.status.as_str()), s)
        {
            out.insert("status_id".into(), self.status_id(s, issue)?.into());
        }
        if let Some(p) = &patch.priority
            && current.is_none_or(|c| c.priority != *p)
        {
            // Redmine requires a priority: clearing one means its default.
            if let Some(p) = p {
                out.insert("priority_id".into(), self.priority_id(p, issue)?.into());
            }
        }
        if let Some(a) = &patch.assignee
            && current.is_none_or(|c| c.assignee != *a)
        {
            let id = match a {
                Some(a) => Value::from(self.user_id(a, issue)?),
                None => Value::from(""),
            };
            out.insert("assigned_to_id".into(), id);
        }
        if let Some(c) = &patch.components {
            let mut want = c.clone();
            normalize_set(&mut want);
            if current.is_none_or(|cur| cur.components != want) {
                let id = match want.as_slice() {
                    [] => Value::from(""),
                    [one] => self.category_id(project, one, issue)?.into(),
                    _ => {
                        return Err(TrackerError::Rejected {
                            issue: issue.into(),
                            message: format!(
                                "Redmine allows one category per issue, not {}",
                                want.join(", ")
                            ),
                        });
                    }
                };
                out.insert("category_id".into(), id);
            }
        }
        let mut custom = Vec::new();
        if let Some(l) = &patch.labels {
            let mut want = l.clone();
            normalize_set(&mut want);
            if current.is_none_or(|c| c.labels != want) && !(current.is_none() && want.is_empty()) {
                let (id, _, _) = self.field(&self.settings.labels_field, issue)?;
                custom.push(json!({"id": id, "value": want.join(", ")}));
            }
        }
        for (name, value) in &patch.fields {
            if current.is_none_or(|c| c.fields.get(name).unwrap_or(&Value::Null) != value)
                && !(current.is_none() && value.is_null())
            {
                let (id, _, multiple) = self.field(name, issue)?;
                custom.push(json!({"id": id, "value": redmine_value(value, multiple)}));
            }
        }
        if !custom.is_empty() {
            out.insert("custom_fields".into(), custom.into());
        }
        Ok(out)
    }

    /// Sends a change to an issue; `None` when Redmine does not know it.
    fn put(&self, id: u64, issue: Value) -> Result<Option<()>, TrackerError> {
        let path = format!("/issues/{id}.json");
        match self.client.send("PUT", &path, &json!({ "issue": issue }))? {
            Reply::Empty | Reply::Json(_) => Ok(Some(())),
            Reply::NotFound => Ok(None),
            Reply::Invalid(message) => Err(TrackerError::Rejected {
                issue: format!("#{id}"),
                message,
            }),
            other => Err(self.client.unexpected(&path, other)),
        }
    }

    fn existing(&self, id: &str) -> Result<(u64, Issue), TrackerError> {
        let number = parse_id(id).ok_or_else(|| TrackerError::NotFound(id.into()))?;
        let issue = self
            .fetch(number)?
            .ok_or_else(|| TrackerError::NotFound(id.into()))?;
        Ok((number, issue))
    }

    fn reread(&self, id: u64) -> Result<Issue, TrackerError> {
        let issue = self.fetch(id)?.ok_or_else(|| {
            TrackerError::Unavailable(format!("issue #{id} vanished while ferry wrote to it"))
        })?;
        self.known.borrow_mut().save()?;
        Ok(issue)
    }
}

impl Tracker for RedmineTracker {
    /// Redmine journals a relation made or removed on both issues, but
    /// leaves their `updated_on` as it was (see `relations.rs`).
    fn link_changes_move_updated(&self) -> bool {
        false
    }

    fn instance(&self) -> Result<TrackerInstance, TrackerError> {
        let path = format!("/projects/{}.json", self.settings.project);
        let project = match self.client.get(&path, &[])? {
            Reply::Json(v) => v["project"].clone(),
            Reply::NotFound => {
                return Err(TrackerError::Unavailable(format!(
                    "Redmine at {} has no project {:?} (or the API key's user cannot see it)",
                    self.settings.url, self.settings.project
                )));
            }
            other => return Err(self.client.unexpected(&path, other)),
        };
        Ok(TrackerInstance {
            kind: "redmine".into(),
            location: format!("{} project {}", self.settings.url, self.settings.project),
            // Redmine has no instance id; the project's own id and creation time
            // are the same from every machine and differ on a fresh server.
            id: format!(
                "project {} created {}",
                project["id"],
                project["created_on"].as_str().unwrap_or("?")
            ),
        })
    }

    fn now(&self) -> Result<DateTime<Utc>, TrackerError> {
        // Redmine (behind Puma) sends no Date header and has no clock endpoint: the
        // server's clock is assumed to agree with this machine's (NTP), see
        // docs/redmine.md.
        Ok(now())
    }

    fn changed_since(&self, since: Option<DateTime<Utc>>) -> Result<Vec<Issue>, TrackerError> {
        let ids = self.changed_ids(since)?.unwrap_or_default();
        self.get_many(&ids)
    }

    /// The changed issues' ids from the project's listing (a request per 100
    /// issues, no journals), then the tombstones; the issues themselves are
    /// read a page at a time by [`Tracker::get_many`], so a first export of a
    /// large project never holds all of them.
    fn changed_ids(
        &self,
        since: Option<DateTime<Utc>>,
    ) -> Result<Option<Vec<String>>, TrackerError> {
        let all = self.list_ids(None)?;
        let mut ids: Vec<String> = match since {
            None => all.iter().map(u64::to_string).collect(),
            Some(since) => self
                .list_ids(Some(since))?
                .iter()
                .map(u64::to_string)
                .collect(),
        };
        // Reconcile: ids seen before and no longer listed were deleted, or moved
        // to a project this connector does not read; Redmine tells which.
        let listed: std::collections::HashSet<String> = all.iter().map(u64::to_string).collect();
        drop(all);
        let missing = self.known.borrow_mut().live_ids_except(&listed)?;
        drop(listed);
        for id in missing {
            let Some(number) = parse_id(&id) else {
                continue;
            };
            match self.fetch(number)? {
                Some(_) => self.known.borrow_mut().forget(&id)?,
                None => {
                    self.known.borrow_mut().vanished(&id, now())?;
                }
            }
        }
        let mut known = self.known.borrow_mut();
        ids.extend(known.tombstones_since(since)?.into_iter().map(|t| t.id));
        known.save()?;
        Ok(Some(ids))
    }

    /// One request per issue (Redmine's list has no journals), `concurrency`
    /// at a time; what was read is remembered once for the whole call.
    fn get_many(&self, ids: &[String]) -> Result<Vec<Issue>, TrackerError> {
        // Answers are parsed JSON, several times the issue they make: a few
        // rounds of requests at a time are turned into issues and dropped.
        const ROUNDS: usize = 8;
        let numbers: Vec<u64> = ids.iter().filter_map(|id| parse_id(id)).collect();
        let client = &self.client;
        let concurrency = self.settings.concurrency.max(1);
        let mut issues = Vec::with_capacity(ids.len());
        for chunk in numbers.chunks(concurrency * ROUNDS) {
            let replies = side_by_side(concurrency, chunk, |&number| {
                let path = issue_path(number);
                client.get(&path, &issue_query()).map(|reply| (path, reply))
            });
            for (&number, reply) in chunk.iter().zip(replies) {
                let (path, reply) = reply?;
                issues.extend(self.issue_or_tombstone(number, &path, reply)?);
            }
        }
        self.fill_related(&mut issues)?;
        self.known.borrow_mut().save()?;
        Ok(issues)
    }

    fn get(&self, id: &str) -> Result<Option<Issue>, TrackerError> {
        match parse_id(id) {
            Some(number) => self.fetch_or_tombstone(number),
            None => Ok(None),
        }
    }

    fn get_by_key(&self, key: &str) -> Result<Option<Issue>, TrackerError> {
        let (project, number) = match key.strip_prefix('#') {
            Some(number) => (None, number),
            None => match key.rsplit_once('-') {
                Some((project, number)) => (Some(project), number),
                None => return Ok(None),
            },
        };
        let Some(number) = parse_id(number) else {
            return Ok(None);
        };
        Ok(self
            .fetch_or_tombstone(number)?
            .filter(|issue| project.is_none_or(|p| issue.project == p)))
    }

    fn find_by_origin(&self, origin: &Origin) -> Result<Option<Issue>, TrackerError> {
        let marker = text::origin_line(origin);
        // A contains-search (`support:2` also finds `support:20`): the exact last
        // line is checked on each page, and the pages are read until it is found.
        let mut offset = 0;
        loop {
            let query = [
                ("status_id", "*".to_string()),
                ("description", format!("~{marker}")),
                ("sort", "id".to_string()),
                ("limit", PAGE.to_string()),
                ("offset", offset.to_string()),
            ];
            let page = match self.client.get("/issues.json", &query)? {
                Reply::Json(v) => v,
                other => return Err(self.client.unexpected("/issues.json", other)),
            };
            let batch = page["issues"].as_array().cloned().unwrap_or_default();
            let found = batch.iter().find(|i| {
                let description = text::unix(i["description"].as_str().unwrap_or(""));
                text::split(&description).1.origin.as_ref() == Some(origin)
            });
            if let Some(id) = found.and_then(|i| i["id"].as_u64()) {
                let issue = self.fetch(id)?;
                self.known.borrow_mut().save()?;
                return Ok(issue);
            }
            offset += batch.len();
            if batch.is_empty() || offset as u64 >= page["total_count"].as_u64().unwrap_or(0) {
                return Ok(None);
            }
        }
    }

    fn create(&mut self, new: &NewIssue) -> Result<Issue, TrackerError> {
        let label = format!("new issue in {}", new.project);
        let mut issue = self.payload(&label, &new.project, None, &new.patch)?;
        if let Some(Some(parent)) = &new.patch.parent {
            issue.insert(
                "parent_issue_id".into(),
                relations::parent_value(&Some(parent.clone()), &label)?,
            );
        }
        issue.insert("project_id".into(), new.project.clone().into());
        issue.insert(
            "subject".into(),
            new.patch.summary.clone().unwrap_or_default().into(),
        );
        let description = new.patch.description.clone().flatten();
        issue.insert(
            "description".into(),
            text::join(description.as_deref(), new.origin.as_ref(), None).into(),
        );
        match self
            .client
            .send("POST", "/issues.json", &json!({ "issue": issue }))?
        {
            Reply::Json(v) => {
                let id = v["issue"]["id"].as_u64().ok_or_else(|| {
                    TrackerError::Unavailable(format!(
                        "Redmine's answer to a create has no id: {v}"
                    ))
                })?;
                self.write_links(id, &format!("{}-{id}", new.project), &new.patch)?;
                self.reread(id)
            }
            Reply::Invalid(message) => Err(TrackerError::Rejected {
                issue: label,
                message,
            }),
            Reply::NotFound => Err(no_project(&new.project, &label)),
            other => Err(self.client.unexpected("/issues.json", other)),
        }
    }

    fn update(
        &mut self,
        id: &str,
        patch: &IssuePatch,
        _author: &str,
    ) -> Result<Issue, TrackerError> {
        let (number, current) = self.existing(id)?;
        let mut change = self.payload(&current.key, &current.project, Some(&current), patch)?;
        if let Some(parent) = &patch.parent
            && current.parent.as_ref().map(|p| &p.id) != parent.as_ref()
        {
            change.insert(
                "parent_issue_id".into(),
                relations::parent_value(parent, &current.key)?,
            );
        }
        let links = !patch.add_links.is_empty() || !patch.remove_links.is_empty();
        if change.is_empty() && !links {
            self.known.borrow_mut().save()?;
            return Ok(current);
        }
        if !change.is_empty() {
            self.put(number, change.into())?
                .ok_or_else(|| TrackerError::NotFound(id.into()))?;
        }
        self.write_links(number, &current.key, patch)?;
        self.reread(number)
    }

    fn add_comment(&mut self, id: &str, comment: &NewComment) -> Result<Comment, TrackerError> {
        let (number, current) = self.existing(id)?;
        if let Some(origin) = &comment.origin
            && let Some(done) = current
                .comments
                .iter()
                .find(|c| c.origin.as_ref() == Some(origin))
        {
            return Ok(done.clone());
        }
        // Notes are written by the API key's user; anyone else is named in the note.
        let author = (self.login(&comment.author) != self.me).then_some(comment.author.as_str());
        let notes = text::join(Some(&comment.body), comment.origin.as_ref(), author);
        self.put(
            number,
            json!({"notes": notes, "private_notes": comment.internal}),
        )?
        .ok_or_else(|| TrackerError::NotFound(id.into()))?;
        let after = self.reread(number)?;
        after
            .comments
            .iter()
            .rev()
            .find(|c| {
                c.body == comment.body
                    && c.origin == comment.origin
                    && !current.comments.iter().any(|old| old.id == c.id)
            })
            .cloned()
            .ok_or_else(|| {
                TrackerError::Unavailable(format!(
                    "Redmine accepted a note on #{number} but does not show it"
                ))
            })
    }

    fn delete(&mut self, id: &str, _author: &str) -> Result<(), TrackerError> {
        // A retried delete (the run died after Redmine's answer) finds a tombstone.
        if self.known.borrow_mut().is_tombstone(id)? {
            return Ok(());
        }
        let (number, current) = self.existing(id)?;
        let path = format!("/issues/{number}.json");
        match self.client.delete(&path)? {
            Reply::Empty | Reply::Json(_) => {}
            Reply::NotFound => return Err(TrackerError::NotFound(id.into())),
            Reply::Invalid(message) => {
                return Err(TrackerError::Rejected {
                    issue: current.key,
                    message,
                });
            }
            other => return Err(self.client.unexpected(&path, other)),
        }
        let mut known = self.known.borrow_mut();
        known.seen(&current);
        known.vanished(id, now())?;
        known.save()
    }

    fn read_attachment(
        &self,
        id: &str,
        attachment: &str,
        out: &mut dyn Write,
    ) -> Result<u64, TrackerError> {
        let missing = || TrackerError::NotFound(format!("{id} attachment {attachment}"));
        let number = parse_id(attachment).ok_or_else(missing)?;
        let path = format!("/attachments/{number}.json");
        let url = match self.client.get(&path, &[])? {
            Reply::Json(v) => v["attachment"]["content_url"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            Reply::NotFound => return Err(missing()),
            other => return Err(self.client.unexpected(&path, other)),
        };
        let url = match url.find("/attachments/download/") {
            // The server may name itself differently than the configured URL
            // (behind a proxy); the path is what counts.
            Some(at) => url[at..].to_string(),
            None => format!("/attachments/download/{number}"),
        };
        self.client.download(&url, out)?.ok_or_else(missing)
    }

    fn attach(&mut self, id: &str, file: &NewAttachment) -> Result<Attachment, TrackerError> {
        let (number, current) = self.existing(id)?;
        let token = self.client.upload(file)?;
        let upload = json!({"uploads": [{
            "token": token,
            "filename": file.name,
            "content_type": "application/octet-stream",
        }]});
        self.put(number, upload)?
            .ok_or_else(|| TrackerError::NotFound(id.into()))?;
        let after = self.reread(number)?;
        after
            .attachments
            .iter()
            .rev()
            .find(|a| a.name == file.name && !current.attachments.iter().any(|o| o.id == a.id))
            .cloned()
            .ok_or_else(|| {
                TrackerError::Unavailable(format!(
                    "Redmine accepted {} on #{number} but does not show it",
                    file.name
                ))
            })
    }

    fn delete_attachment(
        &mut self,
        id: &str,
        attachment: &str,
        _author: &str,
    ) -> Result<(), TrackerError> {
        let (number, current) = self.existing(id)?;
        if !current.attachments.iter().any(|a| a.id == attachment) {
            return Ok(());
        }
        // Through the issue, not DELETE /attachments/N: only a change made through
        // the issue moves its updated_on, which is what changed_since reads.
        let aid = parse_id(attachment).ok_or_else(|| TrackerError::NotFound(attachment.into()))?;
        self.put(number, json!({ "deleted_attachment_ids": [aid] }))?
            .ok_or_else(|| TrackerError::NotFound(id.into()))?;
        self.known.borrow_mut().save()
    }
}

fn now() -> DateTime<Utc> {
    truncate_to_seconds(Utc::now())
}

/// The API path of issue `id`.
fn issue_path(id: u64) -> String {
    format!("/issues/{id}.json")
}

/// What an issue is read with: its journals (comments and history),
/// attachments, relations and sub-tasks, which the list endpoint does not give.
fn issue_query() -> [(&'static str, String); 1] {
    [(
        "include",
        "journals,attachments,relations,children".to_string(),
    )]
}

fn parse_id(id: &str) -> Option<u64> {
    id.parse().ok().filter(|n| *n > 0)
}

fn no_project(project: &str, issue: &str) -> TrackerError {
    TrackerError::Rejected {
        issue: issue.into(),
        message: format!(
            "Redmine has no project {project:?} (or the API key's user cannot add issues to it)"
        ),
    }
}

/// A Redmine custom field value as ferry shows it: numbers for numeric formats,
/// lists for multi-value fields, `None` for empty.
fn field_value(value: &Value, format: &str) -> Option<FieldValue> {
    let one = |s: &str| -> Option<FieldValue> {
        if s.is_empty() {
            return None;
        }
        Some(match format {
            "int" => s.parse::<i64>().map_or_else(|_| s.into(), Value::from),
            "float" => s.parse::<f64>().map_or_else(|_| s.into(), Value::from),
            "bool" => match s {
                "1" => true.into(),
                "0" => false.into(),
                other => other.into(),
            },
            _ => s.into(),
        })
    };
    match value {
        Value::String(s) => one(s),
        Value::Array(items) => {
            let items: Vec<Value> = items.iter().filter_map(|i| one(i.as_str()?)).collect();
            (!items.is_empty()).then(|| items.into())
        }
        _ => None,
    }
}

/// ferry's value → what Redmine's custom field takes (text; `""` clears).
fn redmine_value(value: &FieldValue, multiple: bool) -> Value {
    let text = |v: &Value| match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "1" } else { "0" }.into(),
        other => other.to_string(),
    };
    match value {
        Value::Array(items) if multiple => items.iter().map(text).collect::<Vec<_>>().into(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(", ").into(),
        other => text(other).into(),
    }
}

#[cfg(test)]
mod tests;
