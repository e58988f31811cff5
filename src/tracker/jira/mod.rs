//! The Jira connector: Jira Cloud (REST v3, Atlassian Document Format, e-mail and
//! API token) and Jira Server/Data Center (REST v2, wiki text, personal access
//! token).
//!
//! Jira cannot do three things the engine relies on, so the connector adds them
//! (docs/jira.md has the reasons and costs):
//!
//! - **Origin markers.** An issue sync created carries a label
//!   `ferry-origin:<site>:<id>`: labels are searchable by JQL on every Jira
//!   without an app, unlike entity properties. The label is hidden from
//!   [`Issue::labels`] and kept on every label update. A comment's origin (and its
//!   author on the peer) is a comment property `ferry`.
//! - **Tombstones.** Jira forgets a deleted issue. The connector remembers what it
//!   has seen in `<state>/jira-known.db`; an issue that has vanished from the
//!   scope and answers 404 in two runs is reported as a tombstone from then on
//!   (one 404 may be Jira's index or permissions for a moment).
//! - **Second-precise change queries.** JQL compares dates by the minute in the
//!   user's time zone. `changed_since` asks for a relative window
//!   (`updated >= "-Nm"`, measured on Jira's clock, time-zone free) a minute
//!   wider than needed and filters to the second itself.
//!
//! Status changes go through workflow transitions; a status no transition reaches
//! is refused for that issue, naming the issue type and project whose workflow
//! lacks it.

pub mod adf;
mod client;
mod config;
mod create;
pub mod fake;
mod preflight;
mod read;
mod relations;
mod workflow;

pub use config::{Flavour, InternalComments, JiraConfig};

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock, PoisonError};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use self::client::{Auth, Body, Client, Failure};
use super::retry::RetryPolicy;
use super::seen::{self, SeenStore};
use super::{
    Created, IssuePatch, Needs, NewAttachment, NewComment, NewIssue, NewIssueWithComments, Probe,
    Tracker, TrackerError, TrackerInstance, side_by_side,
};
use crate::model::{Attachment, Comment, FieldValue, Issue, Origin, normalize_set};

/// Environment variable with the Atlassian account e-mail (Cloud).
pub const ENV_EMAIL: &str = "FERRY_JIRA_EMAIL";
/// Environment variable with the Atlassian API token (Cloud).
pub const ENV_API_TOKEN: &str = "FERRY_JIRA_API_TOKEN";
/// Environment variable with the personal access token (Data Center).
pub const ENV_PAT: &str = "FERRY_JIRA_PAT";
/// File in the state folder where the connector remembers the issues it has seen.
pub const KNOWN_FILE: &str = "jira-known.db";
/// Where older versions remembered them (read into [`KNOWN_FILE`] once).
const LEGACY_KNOWN_FILE: &str = "jira-known.json";
/// The most issues one search page holds (Jira's cap for searches that return
/// fields), and so the most ids one `id in (…)` read names.
const SEARCH_PAGE: usize = 100;
/// The fields the connector reads of an issue (with those `fields:` names).
const READ_FIELDS: &[&str] = &[
    "summary",
    "description",
    "issuetype",
    "status",
    "priority",
    "resolution",
    "assignee",
    "reporter",
    "labels",
    "components",
    "created",
    "updated",
    "project",
    "attachment",
    "comment",
    "issuelinks",
    "parent",
    "subtasks",
];
/// The most issues one bulk create takes (Jira's cap).
const BULK: usize = 50;

const ORIGIN_LABEL: &str = "ferry-origin:";

const COMMENT_PROPERTY: &str = "ferry";
const SD_PROPERTY: &str = "sd.public.comment";

/// Transition lists by (project, issue type, status), shared by the issues of
/// one bulk create.
type SharedTransitions = Mutex<HashMap<(String, String, String), Value>>;

/// One field of Jira's field list.
#[derive(Debug, Clone)]
struct FieldDef {
    id: String,
    schema: Value,
}

/// A connector to one Jira project.
pub struct JiraTracker {
    client: Client,
    config: JiraConfig,
    state_dir: PathBuf,
    /// What the connector has seen, opened on first use.
    known: OnceLock<SeenStore>,
    field_defs: OnceLock<BTreeMap<String, FieldDef>>,
    /// Data Center's Epic Link field, found with the field list.
    epic_field: OnceLock<Option<String>>,
    link_types: OnceLock<Vec<relations::LinkType>>,
    me: OnceLock<String>,
    /// Issues this run found missing: a 404 in the run that first saw it cannot
    /// confirm itself.
    suspected_here: Mutex<BTreeSet<String>>,
    /// Origin labels looked up ahead ([`Tracker::prefetch_origins`]) or
    /// written by this run: the id of the issue carrying each, or none.
    origins: Mutex<HashMap<String, Option<String>>>,
}

/// The JSON file older versions kept: the last state of every issue seen,
/// deleted ones included.
#[derive(Debug, Default, Serialize, Deserialize)]
struct LegacyKnown {
    issues: BTreeMap<String, Issue>,
    /// Seen issues that answered 404 in some run, by id, with when that run
    /// began suspecting it: a deletion only once a later run confirms it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    suspected: BTreeMap<String, DateTime<Utc>>,
}

/// What a 404 on a remembered issue means.
enum Vanished {
    /// Never seen: nothing to bury.
    Unknown,
    /// Seen, and missing in this run only: the issue's key, for the message.
    Suspected(String),
    /// Deleted: missing in an earlier run too, or deleted through ferry.
    Confirmed(Box<Issue>),
}

impl JiraTracker {
    /// Opens the connector with credentials from the environment, or from
    /// `token_file` (resolved against `root`, the site folder).
    pub fn open(
        config: &JiraConfig,
        root: &std::path::Path,
        state_dir: &std::path::Path,
    ) -> Result<Self, TrackerError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let from_file = || -> Result<Option<String>, TrackerError> {
            let Some(file) = &config.token_file else {
                return Ok(None);
            };
            let path = root.join(file);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                TrackerError::Unavailable(format!(
                    "cannot read the Jira token file {}: {e}",
                    path.display()
                ))
            })?;
            Ok(text
                .lines()
                .next()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string))
        };
        let auth = match config.flavour {
            Flavour::Cloud => {
                let email = var(ENV_EMAIL).or_else(|| config.email.clone());
                let token = match var(ENV_API_TOKEN) {
                    Some(token) => Some(token),
                    None => from_file()?,
                };
                match (email, token) {
                    (Some(email), Some(token)) => Auth::basic(&email, &token),
                    _ => {
                        return Err(TrackerError::Unavailable(format!(
                            "Jira Cloud needs {ENV_EMAIL} and {ENV_API_TOKEN} in the environment \
                             (or tracker.email and tracker.token_file)"
                        )));
                    }
                }
            }
            Flavour::Datacenter => match var(ENV_PAT) {
                Some(token) => Auth::bearer(&token),
                None => match from_file()? {
                    Some(token) => Auth::bearer(&token),
                    None => {
                        return Err(TrackerError::Unavailable(format!(
                            "Jira Data Center needs a personal access token in {ENV_PAT} \
                             (or in tracker.token_file)"
                        )));
                    }
                },
            },
        };
        Ok(Self::with_client(
            config,
            Client::new(&config.url, auth, RetryPolicy::default()),
            state_dir,
        ))
    }

    fn with_client(config: &JiraConfig, client: Client, state_dir: &std::path::Path) -> Self {
        JiraTracker {
            client,
            config: config.clone(),
            state_dir: state_dir.to_path_buf(),
            known: OnceLock::new(),
            field_defs: OnceLock::new(),
            epic_field: OnceLock::new(),
            link_types: OnceLock::new(),
            me: OnceLock::new(),
            suspected_here: Mutex::new(BTreeSet::new()),
            origins: Mutex::new(HashMap::new()),
        }
    }

    fn cloud(&self) -> bool {
        self.config.flavour == Flavour::Cloud
    }

    fn api(&self, path: &str) -> String {
        let version = if self.cloud() { 3 } else { 2 };
        format!("/rest/api/{version}{path}")
    }

    fn get_json(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, Failure> {
        self.client
            .json("GET", &self.api(path), query, &Body::Empty)
    }

    /// The user field value Jira takes for a user name: accountId on Cloud.
    fn user_value(&self, user: &str) -> Value {
        if self.cloud() {
            json!({"accountId": user})
        } else {
            json!({"name": user})
        }
    }

    fn user_name(&self, value: &Value) -> Option<String> {
        let key = if self.cloud() { "accountId" } else { "name" };
        value.get(key).and_then(Value::as_str).map(str::to_string)
    }

    fn text_value(&self, text: &str) -> Value {
        if self.cloud() {
            adf::from_text(text)
        } else {
            Value::String(text.to_string())
        }
    }

    fn text_of(&self, value: &Value) -> Option<String> {
        match value {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            doc => Some(adf::to_text(doc)),
        }
        .filter(|t| !t.is_empty())
    }

    /// Who the credentials belong to, as [`Issue`] names users.
    fn me(&self) -> Result<&str, TrackerError> {
        if let Some(me) = self.me.get() {
            return Ok(me);
        }
        let value = self.get_json("/myself", &[]).map_err(site_error)?;
        let name = self.user_name(&value).ok_or_else(|| {
            TrackerError::Unavailable("Jira's /myself names no user for these credentials".into())
        })?;
        Ok(self.me.get_or_init(|| name))
    }

    fn field_defs(&self) -> Result<&BTreeMap<String, FieldDef>, TrackerError> {
        if let Some(defs) = self.field_defs.get() {
            return Ok(defs);
        }
        let list = self.get_json("/field", &[]).map_err(site_error)?;
        let mut defs = BTreeMap::new();
        let epic = list.as_array().into_iter().flatten().find_map(|field| {
            (field["schema"]["custom"] == relations::EPIC_LINK_SCHEMA)
                .then(|| field["id"].as_str().map(str::to_string))
                .flatten()
        });
        self.epic_field.get_or_init(|| epic);
        for field in list.as_array().into_iter().flatten() {
            if let (Some(name), Some(id)) = (
                field.get("name").and_then(Value::as_str),
                field.get("id").and_then(Value::as_str),
            ) && self.config.fields.iter().any(|f| f == name)
            {
                defs.insert(
                    name.to_string(),
                    FieldDef {
                        id: id.to_string(),
                        schema: field.get("schema").cloned().unwrap_or(Value::Null),
                    },
                );
            }
        }
        if let Some(missing) = self.config.fields.iter().find(|f| !defs.contains_key(*f)) {
            return Err(TrackerError::Unavailable(format!(
                "Jira has no field named {missing:?} (ferry.yaml tracker.fields)"
            )));
        }
        Ok(self.field_defs.get_or_init(|| defs))
    }

    /// The store of what the connector has seen (see [`crate::tracker::seen`]).
    fn known(&self) -> Result<&SeenStore, TrackerError> {
        if let Some(store) = self.known.get() {
            return Ok(store);
        }
        let store = SeenStore::open(
            &self.state_dir.join(KNOWN_FILE),
            &self.state_dir.join(LEGACY_KNOWN_FILE),
            |bytes| {
                let old: LegacyKnown = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
                Ok(old
                    .issues
                    .into_values()
                    .map(|mut issue| {
                        let deleted_at = issue.deleted.then_some(issue.updated);
                        issue.deleted = false;
                        let suspected_at = old.suspected.get(&issue.id).copied();
                        (
                            seen_row(&issue),
                            seen::Entry {
                                record: String::new(),
                                deleted_at,
                                suspected_at,
                            },
                        )
                    })
                    .collect())
            },
        )?;
        Ok(self.known.get_or_init(|| store))
    }

    /// The remembered issue `id` (its last state, a tombstone once its
    /// deletion is confirmed) and its entry.
    fn known_issue(&self, id: &str) -> Result<Option<(Issue, seen::Entry)>, TrackerError> {
        let Some(entry) = self.known()?.get(id)? else {
            return Ok(None);
        };
        let Ok(mut issue) = serde_json::from_str::<Issue>(&entry.record) else {
            return Ok(None);
        };
        if let Some(deleted) = entry.deleted_at {
            issue.deleted = true;
            issue.updated = deleted.max(issue.updated);
        }
        Ok(Some((issue, entry)))
    }

    /// Remembers issues as seen, without comments or attachments (a tombstone
    /// needs only the identity and the summary), in one transaction.
    fn remember<'a>(
        &self,
        issues: impl IntoIterator<Item = &'a Issue>,
    ) -> Result<(), TrackerError> {
        let rows: Vec<seen::Seen> = issues
            .into_iter()
            .filter(|issue| !issue.deleted)
            .map(seen_row)
            .collect();
        if rows.is_empty() {
            return Ok(());
        }
        self.known()?.seen(rows)
    }

    /// Marks a remembered issue deleted (at `when`) and returns its tombstone.
    fn bury(&self, id: &str, when: DateTime<Utc>) -> Result<Option<Issue>, TrackerError> {
        if self.known_issue(id)?.is_none() {
            return Ok(None);
        }
        self.known()?.bury(id, None, when)?;
        Ok(self.known_issue(id)?.map(|(issue, _)| issue))
    }

    /// A remembered issue answered 404. Jira says so for a deleted issue, but
    /// also for a while when a node's index lags or a permission scheme is being
    /// edited, and a tombstone is for good (the peer stops syncing the issue).
    /// So the first run that finds it missing only suspects it; a later run that
    /// finds it missing again confirms the deletion. An issue that answers in
    /// between is cleared ([`JiraTracker::remember`]).
    fn vanished(&self, id: &str) -> Result<Vanished, TrackerError> {
        let Some((issue, entry)) = self.known_issue(id)? else {
            return Ok(Vanished::Unknown);
        };
        if issue.deleted {
            return Ok(Vanished::Confirmed(Box::new(issue)));
        }
        let key = issue.key.clone();
        let earlier_run = entry.suspected_at.is_some()
            && !self
                .suspected_here
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(id);
        if earlier_run {
            let tomb = self.bury(id, self.now()?)?;
            return Ok(tomb.map_or(Vanished::Unknown, |t| Vanished::Confirmed(Box::new(t))));
        }
        if entry.suspected_at.is_none() {
            self.known()?.suspect(id, self.now()?)?;
        }
        self.suspected_here
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.to_string());
        tracing::warn!(
            "Jira answers 404 for {key}; it counts as deleted only if a later run \
             cannot find it either"
        );
        Ok(Vanished::Suspected(key))
    }

    /// What a 404 on `id` means to a reader: the tombstone of a confirmed
    /// deletion, nothing for an id never seen, an error to retry otherwise.
    fn missing(&self, id: &str) -> Result<Option<Issue>, TrackerError> {
        match self.vanished(id)? {
            Vanished::Unknown => Ok(None),
            Vanished::Confirmed(tomb) => Ok(Some(*tomb)),
            Vanished::Suspected(key) => Err(TrackerError::Transient {
                issue: key,
                message: "Jira answers that it does not exist (404); ferry takes it as \
                          deleted only if the next run cannot find it either, and tries \
                          again then"
                    .into(),
            }),
        }
    }

    /// How messages name an issue known by its Jira id: its key when the
    /// connector has seen it (people know issues by key, not by Jira's internal
    /// id).
    fn name_of(&self, id: &str) -> String {
        match self.known_issue(id) {
            Ok(Some((issue, _))) => issue.key,
            _ => format!("Jira issue id {id}"),
        }
    }

    /// Reads one issue by id or key, with all its comments; `None` on 404. A 403
    /// is about this issue (a security level), so it fails the issue, not the
    /// site.
    fn fetch(&self, id_or_key: &str) -> Result<Option<Issue>, TrackerError> {
        match self.get_json(&format!("/issue/{}", client::encode(id_or_key)), &[]) {
            Ok(raw) => self.complete(&raw).map(Some),
            Err(Failure::Status { status: 404, .. }) => Ok(None),
            Err(Failure::Status {
                status: 403,
                message,
            }) => Err(TrackerError::Transient {
                issue: self.name_of(id_or_key),
                message: format!("Jira refuses to show it (403: {message})"),
            }),
            Err(e) => Err(site_error(e)),
        }
    }

    /// Issues matching `jql`, all pages, raw.
    fn search(&self, jql: &str, fields: &str) -> Result<Vec<Value>, TrackerError> {
        let mut issues = Vec::new();
        self.search_pages(jql, fields, |page| {
            issues.extend(page);
            Ok(())
        })?;
        Ok(issues)
    }

    /// Issues matching `jql`, handed to `each` a page at a time (up to
    /// [`SEARCH_PAGE`] raw issues), so a listing of a large project is never
    /// held whole.
    fn search_pages(
        &self,
        jql: &str,
        fields: &str,
        mut each: impl FnMut(Vec<Value>) -> Result<(), TrackerError>,
    ) -> Result<(), TrackerError> {
        let mut start = 0usize;
        let mut token: Option<String> = None;
        let max = SEARCH_PAGE.to_string();
        loop {
            let at = start.to_string();
            let mut query = vec![
                ("jql", jql),
                ("maxResults", max.as_str()),
                ("fields", fields),
            ];
            let path = if self.cloud() {
                if let Some(t) = &token {
                    query.push(("nextPageToken", t));
                }
                "/search/jql"
            } else {
                query.push(("startAt", &at));
                "/search"
            };
            let mut page = self.get_json(path, &query).map_err(|e| match e {
                Failure::Status {
                    status: 400,
                    message,
                } => {
                    TrackerError::Unavailable(format!("Jira refused the query {jql:?}: {message}"))
                }
                other => site_error(other),
            })?;
            let items = match page["issues"].take() {
                Value::Array(items) => items,
                _ => Vec::new(),
            };
            start += items.len();
            let done = if self.cloud() {
                token = page["nextPageToken"].as_str().map(str::to_string);
                token.is_none() || page["isLast"] == Value::Bool(true)
            } else {
                start >= page["total"].as_u64().unwrap_or(0) as usize
            };
            let empty = items.is_empty();
            each(items)?;
            if done || empty {
                break;
            }
        }
        Ok(())
    }

    /// The JQL of the issues changed at or after `since` (a minute wider: see
    /// the module documentation), oldest change first.
    fn changed_jql(&self, since: Option<DateTime<Utc>>) -> Result<String, TrackerError> {
        let scope = self.scope();
        Ok(match since {
            Some(since) => {
                let minutes = (self.now()? - since).num_minutes().max(0) + 2;
                format!("{scope} AND updated >= \"-{minutes}m\" ORDER BY updated ASC")
            }
            None => format!("{scope} ORDER BY updated ASC"),
        })
    }

    /// Deletions: remembered issues of the project that `present` (the scope's
    /// ids now) lacks and that answer 404 in a second run; an issue moved out
    /// of the scope still answers and is forgotten. Returns the ids of the
    /// tombstones confirmed at or after `since`, in id order.
    fn deletions(
        &self,
        present: &HashSet<String>,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<String>, TrackerError> {
        let missing = self
            .known()?
            .live_ids_except(Some(&self.config.project), present)?;
        let mut forgotten = Vec::new();
        for id in missing {
            match self.get_json(&format!("/issue/{id}"), &[("fields", "summary")]) {
                Err(Failure::Status { status: 404, .. }) => {
                    self.vanished(&id)?;
                }
                // Hidden from this account for now (a security level): not
                // a deletion, and still remembered for the next run.
                Err(Failure::Status { status: 403, .. }) => {}
                Ok(_) => forgotten.push(id),
                Err(e) => return Err(site_error(e)),
            }
        }
        if !forgotten.is_empty() {
            self.known()?.forget(&forgotten)?;
        }
        Ok(self
            .known()?
            .tombstones(since)?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    /// The fields a search asks for to read issues: those [`Issue`] is made of
    /// and the ones `fields:` names, not `*all` (a real issue has dozens of
    /// custom fields, each in every answer).
    fn read_fields(&self) -> Result<String, TrackerError> {
        let mut fields: Vec<&str> = READ_FIELDS.to_vec();
        fields.extend(self.field_defs()?.values().map(|d| d.id.as_str()));
        fields.extend(self.epic_field()?);
        Ok(fields.join(","))
    }

    /// Reads up to [`SEARCH_PAGE`] issues by id with one search (`id in (…)`),
    /// their comments as [`JiraTracker::complete_all`] reads them; `None` when
    /// Jira refuses the query, which it does when one of the ids no longer
    /// names an issue the account can see.
    fn read_by_ids(&self, ids: &[&str]) -> Result<Option<Vec<Issue>>, TrackerError> {
        let jql = format!("id in ({})", ids.join(", "));
        let fields = self.read_fields()?;
        let mut raws = Vec::new();
        let searched = self.search_pages(&jql, &fields, |page| {
            raws.extend(page);
            Ok(())
        });
        match searched {
            Ok(()) => {}
            Err(TrackerError::Unavailable(message)) if message.starts_with("Jira refused") => {
                tracing::debug!("reading issues one by one: {message}");
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
        let issues = self.complete_all(&raws)?;
        self.remember(&issues)?;
        Ok(Some(issues))
    }

    fn scope(&self) -> String {
        let project = format!("project = {}", jql_string(&self.config.project));
        if self.config.jql.trim().is_empty() {
            project
        } else {
            format!("{project} AND ({})", self.config.jql)
        }
    }

    /// The JSON `fields` of a create or update: only what `patch` sets and, for an
    /// update, only what differs from `current`.
    fn fields_json(
        &self,
        patch: &IssuePatch,
        current: Option<&Issue>,
        origin_label: Option<String>,
    ) -> Result<serde_json::Map<String, Value>, TrackerError> {
        let mut out = serde_json::Map::new();
        let differs = |now: Option<&str>, new: Option<&str>| match current {
            Some(_) => now != new,
            None => new.is_some(),
        };
        let cur = |f: fn(&Issue) -> Option<&str>| current.and_then(f);
        if let Some(summary) = &patch.summary
            && differs(cur(|i| Some(&i.summary)), Some(summary))
        {
            out.insert("summary".into(), json!(summary));
        }
        if let Some(t) = &patch.issue_type
            && differs(cur(|i| Some(&i.issue_type)), Some(t))
        {
            out.insert("issuetype".into(), json!({"name": t}));
        }
        if let Some(d) = &patch.description {
            let d = d.as_deref().filter(|d| !d.is_empty());
            if differs(cur(|i| i.description.as_deref()), d) {
                out.insert(
                    "description".into(),
                    d.map_or(Value::Null, |d| self.text_value(d)),
                );
            }
        }
        if let Some(p) = &patch.priority
            && differs(cur(|i| i.priority.as_deref()), p.as_deref())
        {
            out.insert(
                "priority".into(),
                p.as_ref().map_or(Value::Null, |p| json!({"name": p})),
            );
        }
        for (key, value, now) in [
            ("assignee", &patch.assignee, cur(|i| i.assignee.as_deref())),
            ("reporter", &patch.reporter, cur(|i| i.reporter.as_deref())),
        ] {
            if let Some(user) = value
                && differs(now, user.as_deref())
            {
                out.insert(
                    key.into(),
                    user.as_ref().map_or(Value::Null, |u| self.user_value(u)),
                );
            }
        }
        let keep_origin =
            origin_label.or_else(|| current.and_then(|i| i.origin.as_ref()).map(origin_label_of));
        if let Some(labels) = &patch.labels {
            let mut new = labels.clone();
            normalize_set(&mut new);
            if current.is_none_or(|i| i.labels != new) {
                new.extend(keep_origin.clone());
                out.insert("labels".into(), json!(new));
            }
        } else if current.is_none()
            && let Some(label) = &keep_origin
        {
            out.insert("labels".into(), json!([label]));
        }
        if let Some(components) = &patch.components {
            let mut new = components.clone();
            normalize_set(&mut new);
            if current.is_none_or(|i| i.components != new) {
                let list: Vec<Value> = new.iter().map(|c| json!({"name": c})).collect();
                out.insert("components".into(), Value::Array(list));
            }
        }
        let defs = self.field_defs()?;
        for (name, value) in &patch.fields {
            let def = defs.get(name).ok_or_else(|| TrackerError::Rejected {
                issue: current.map_or_else(|| "a new issue".into(), |i| i.key.clone()),
                message: format!(
                    "field {name:?} is not one sync carries (add it to tracker.fields in ferry.yaml)"
                ),
            })?;
            let now = current
                .and_then(|i| i.fields.get(name))
                .unwrap_or(&Value::Null);
            if current.is_none() && value.is_null() {
                continue;
            }
            if current.is_none() || now != value {
                out.insert(def.id.clone(), write_field(value, &def.schema, self));
            }
        }
        Ok(out)
    }

    /// Posts a comment (no look for one with its origin: the caller did, or
    /// the issue is new) and returns it as stored: Jira's answer, with the
    /// properties it was posted with (the answer leaves them out, and they are
    /// stored as sent).
    fn post_comment(
        &self,
        id: &str,
        name: &str,
        comment: &NewComment,
    ) -> Result<Comment, TrackerError> {
        let me = self.me()?.to_string();
        let body_text = if comment.author == me {
            comment.body.clone()
        } else {
            format!("{}{}", attribution(&comment.author), comment.body)
        };
        let mut properties = vec![json!({"key": COMMENT_PROPERTY, "value": {
            "origin": comment.origin, "author": comment.author}})];
        let mut body = json!({"body": self.text_value(&body_text)});
        if comment.internal {
            match &self.config.internal_comments {
                InternalComments::Role { value } => {
                    body["visibility"] = json!({"type": "role", "value": value});
                }
                InternalComments::Group { value } => {
                    body["visibility"] = json!({"type": "group", "value": value});
                }
                InternalComments::Servicedesk => {
                    properties.push(json!({"key": SD_PROPERTY, "value": {"internal": true}}));
                }
            }
        }
        body["properties"] = Value::Array(properties.clone());
        let path = self.api(&format!("/issue/{id}/comment"));
        let mut posted = self
            .client
            .json("POST", &path, &[], &Body::Json(&body))
            .map_err(|e| issue_error(e, name))?;
        posted["properties"] = Value::Array(properties);
        self.parse_comment(&posted)
    }

    /// [`side_by_side`] at this connection's `concurrency`.
    fn side_by_side<T: Sync, R: Send>(
        &self,
        items: &[T],
        work: impl Fn(&T) -> Result<R, TrackerError> + Sync,
    ) -> Vec<Result<R, TrackerError>> {
        side_by_side(self.config.concurrency, items, work)
    }

    fn existing(&self, id: &str) -> Result<Issue, TrackerError> {
        match self.fetch(id)? {
            Some(issue) => Ok(issue),
            None => Err(TrackerError::NotFound(self.name_of(id))),
        }
    }

    fn comment_with_origin(
        &self,
        id: &str,
        name: &str,
        origin: &Origin,
    ) -> Result<Option<Comment>, TrackerError> {
        Ok(self
            .comments(id, name)?
            .into_iter()
            .find(|c| c.origin.as_ref() == Some(origin)))
    }

    fn server_info(&self) -> Result<Value, TrackerError> {
        self.get_json("/serverInfo", &[]).map_err(site_error)
    }
}

impl Tracker for JiraTracker {
    /// `serverInfo` answers anyone, signed in or not, so reaching Jira proves
    /// nothing about the token, the project key or the permissions: each is
    /// asked for here.
    fn preflight(&self, needs: Needs) -> Vec<Probe> {
        let account = self.probe_account();
        let failed = account.is_err();
        let mut probes = vec![Probe {
            name: "jira account".into(),
            outcome: account,
        }];
        let Some(me) = self.me.get().filter(|_| !failed) else {
            return probes;
        };
        let project = self.probe_project(me);
        let failed = project.is_err();
        probes.push(Probe {
            name: "jira project".into(),
            outcome: project,
        });
        if !failed {
            probes.extend(self.probe_permissions(me, needs));
        }
        probes
    }

    /// Every status of the project's workflows (`project/KEY/statuses` lists
    /// them per issue type).
    fn statuses(&self) -> Result<Option<Vec<String>>, TrackerError> {
        let path = format!("/project/{}/statuses", client::encode(&self.config.project));
        let listed = self.get_json(&path, &[]).map_err(site_error)?;
        Ok(Some(project_statuses(&listed)))
    }

    fn instance(&self) -> Result<TrackerInstance, TrackerError> {
        let info = self.server_info()?;
        let id = info["baseUrl"]
            .as_str()
            .map(|u| u.trim_end_matches('/').to_string())
            .ok_or_else(|| TrackerError::Unavailable("Jira's serverInfo has no baseUrl".into()))?;
        Ok(TrackerInstance {
            kind: "jira".into(),
            location: self.client.base().to_string(),
            id,
        })
    }

    fn now(&self) -> Result<DateTime<Utc>, TrackerError> {
        let info = self.server_info()?;
        jira_time(&info["serverTime"], "serverInfo")
    }

    fn changed_since(&self, since: Option<DateTime<Utc>>) -> Result<Vec<Issue>, TrackerError> {
        let ids = self.changed_ids(since)?.unwrap_or_default();
        self.get_many(&ids)
    }

    /// The changed issues' ids from a search that returns only `updated` (a
    /// request per 100 issues, no field data), then the tombstones: an export
    /// reads the issues a page at a time with [`Tracker::get_many`], so a first
    /// export of a large project never holds all of them. The deletion check
    /// lists the whole scope's ids; a first export's listing is that already.
    fn changed_ids(
        &self,
        since: Option<DateTime<Utc>>,
    ) -> Result<Option<Vec<String>>, TrackerError> {
        let jql = self.changed_jql(since)?;
        let mut ids = Vec::new();
        self.search_pages(&jql, "updated", |page| {
            for raw in &page {
                let id = string_id(&raw["id"]);
                let updated = jira_time(&raw["fields"]["updated"], &id)?;
                if since.is_none_or(|s| updated >= s) {
                    ids.push(id);
                }
            }
            Ok(())
        })?;
        let present: HashSet<String> = match since {
            None => ids.iter().cloned().collect(),
            Some(_) => {
                let mut present = HashSet::new();
                self.search_pages(&self.scope(), "id", |page| {
                    present.extend(page.iter().map(|raw| string_id(&raw["id"])));
                    Ok(())
                })?;
                present
            }
        };
        ids.extend(self.deletions(&present, since)?);
        Ok(Some(ids))
    }

    fn get(&self, id: &str) -> Result<Option<Issue>, TrackerError> {
        match self.fetch(id)? {
            Some(issue) => {
                self.remember([&issue])?;
                Ok(Some(issue))
            }
            None => self.missing(id),
        }
    }

    /// A search per 100 ids (`id in (…)`), comments read as a search's are;
    /// a confirmed deletion comes from what the connector remembers, with no
    /// request. Should Jira refuse the search (an id vanished since it was
    /// listed), that page is read issue by issue, and an issue that answers
    /// 404 or 403 then is left out: the deletion check of a later run decides
    /// about it.
    fn get_many(&self, ids: &[String]) -> Result<Vec<Issue>, TrackerError> {
        let mut found: HashMap<String, Issue> = HashMap::with_capacity(ids.len());
        let mut live = Vec::new();
        for id in ids {
            match self.known_issue(id)? {
                Some((issue, _)) if issue.deleted => {
                    found.insert(id.clone(), issue);
                }
                // Only numbers go into the query.
                _ if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) => {
                    live.push(id.as_str())
                }
                _ => {}
            }
        }
        for chunk in live.chunks(SEARCH_PAGE) {
            match self.read_by_ids(chunk)? {
                Some(issues) => found.extend(issues.into_iter().map(|i| (i.id.clone(), i))),
                None => {
                    for id in chunk {
                        match self.get(id) {
                            Ok(Some(issue)) => {
                                found.insert(id.to_string(), issue);
                            }
                            Ok(None) => {}
                            Err(TrackerError::Transient { issue, message }) => {
                                tracing::warn!("{issue}: {message}");
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
        }
        Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
    }

    fn get_by_key(&self, key: &str) -> Result<Option<Issue>, TrackerError> {
        match self.fetch(key)? {
            Some(issue) => {
                self.remember([&issue])?;
                Ok(Some(issue))
            }
            None => {
                let id = self.known()?.id_of_key(key)?;
                match id {
                    Some(id) => self.missing(&id),
                    None => Ok(None),
                }
            }
        }
    }

    fn find_by_origin(&self, origin: &Origin) -> Result<Option<Issue>, TrackerError> {
        let label = origin_label_of(origin);
        let looked_up = self
            .origins
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&label);
        match looked_up {
            Some(None) => return Ok(None),
            Some(Some(id)) => return self.fetch(&id),
            None => {}
        }
        let jql = format!("labels = {}", jql_string(&label));
        match self.search(&jql, "*all")?.first() {
            Some(raw) => self.complete(raw).map(Some),
            None => Ok(None),
        }
    }

    fn create(&mut self, issue: &NewIssue) -> Result<Issue, TrackerError> {
        self.create_one(issue)
    }

    /// Jira's bulk create takes `BULK` (50) issues.
    fn create_group(&self) -> usize {
        BULK
    }

    /// One search per `BULK` markers (`labels in (…)`), answers kept for the
    /// [`Tracker::find_by_origin`] that follows.
    fn prefetch_origins(&self, origins: &[Origin]) -> Result<(), TrackerError> {
        let mut labels: Vec<String> = {
            let cache = self.origins.lock().unwrap_or_else(PoisonError::into_inner);
            origins
                .iter()
                .map(origin_label_of)
                .filter(|label| !cache.contains_key(label))
                .collect()
        };
        labels.sort();
        labels.dedup();
        for chunk in labels.chunks(BULK) {
            let list: Vec<String> = chunk.iter().map(|l| jql_string(l)).collect();
            let jql = format!("labels in ({})", list.join(", "));
            let mut found: HashMap<String, String> = HashMap::new();
            self.search_pages(&jql, "labels", |page| {
                for raw in &page {
                    for label in raw["fields"]["labels"].as_array().into_iter().flatten() {
                        if let Some(label) = label.as_str().filter(|l| chunk.iter().any(|c| c == l))
                        {
                            found.insert(label.to_string(), string_id(&raw["id"]));
                        }
                    }
                }
                Ok(())
            })?;
            let mut cache = self.origins.lock().unwrap_or_else(PoisonError::into_inner);
            for label in chunk {
                cache.insert(label.clone(), found.remove(label));
            }
        }
        Ok(())
    }

    /// A bulk create per `BULK` issues, the rest side by side (see
    /// `create_chunk`).
    fn create_many(&mut self, issues: &[NewIssueWithComments]) -> Vec<Created> {
        let mut out = Vec::with_capacity(issues.len());
        for chunk in issues.chunks(BULK) {
            let created = self.create_chunk(chunk);
            let stop = created.iter().any(Created::unavailable);
            out.extend(created);
            if stop {
                break;
            }
        }
        out
    }

    fn update(
        &mut self,
        id: &str,
        patch: &IssuePatch,
        _author: &str,
    ) -> Result<Issue, TrackerError> {
        let current = self.existing(id)?;
        let mut fields = self.fields_json(patch, Some(&current), None)?;
        if let Some(parent) = &patch.parent
            && current.parent.as_ref().map(|p| &p.id) != parent.as_ref()
        {
            let (field, value) = self.parent_field(Some(&current), parent.as_deref())?;
            fields.insert(field, value);
        }
        let mut changed = false;
        if !fields.is_empty() {
            let body = json!({ "fields": fields });
            self.client
                .json(
                    "PUT",
                    &self.api(&format!("/issue/{id}")),
                    &[],
                    &Body::Json(&body),
                )
                .map_err(|e| issue_error(e, &current.key))?;
            changed = true;
        }
        changed |= self.write_links(&current, patch)?;
        if let Some(status) = &patch.status
            && !current.status.eq_ignore_ascii_case(status)
        {
            let resolution = patch.resolution.as_ref().and_then(Option::as_deref);
            self.transition(&current, status, resolution)?;
            changed = true;
        }
        let stored = if changed { self.existing(id)? } else { current };
        self.remember([&stored])?;
        Ok(stored)
    }

    fn add_comment(&mut self, id: &str, comment: &NewComment) -> Result<Comment, TrackerError> {
        let name = self.name_of(id);
        if let Some(origin) = &comment.origin
            && let Some(existing) = self.comment_with_origin(id, &name, origin)?
        {
            return Ok(existing);
        }
        self.post_comment(id, &name, comment)
    }

    fn delete(&mut self, id: &str, _author: &str) -> Result<(), TrackerError> {
        let current = self.existing(id)?;
        self.remember([&current])?;
        self.client
            .json(
                "DELETE",
                &self.api(&format!("/issue/{id}")),
                &[],
                &Body::Empty,
            )
            .map_err(|e| issue_error(e, &current.key))?;
        self.bury(id, self.now()?)?;
        Ok(())
    }

    fn read_attachment(
        &self,
        id: &str,
        attachment: &str,
        out: &mut dyn Write,
    ) -> Result<u64, TrackerError> {
        let raw = self
            .get_json(&format!("/issue/{id}"), &[("fields", "attachment")])
            .map_err(|e| issue_error(e, &self.name_of(id)))?;
        let meta = raw["fields"]["attachment"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| string_id(&a["id"]) == attachment)
            .ok_or_else(|| {
                TrackerError::NotFound(format!("{} attachment {attachment}", self.name_of(id)))
            })?;
        let url = meta["content"].as_str().map_or_else(
            || self.api(&format!("/attachment/content/{attachment}")),
            str::to_string,
        );
        let response = self
            .client
            .call("GET", &url, &[], &Body::Empty)
            .map_err(|e| issue_error(e, &self.name_of(id)))?;
        let mut reader = response.into_body().into_reader();
        std::io::copy(&mut reader, out).map_err(|e| {
            TrackerError::Unavailable(format!(
                "reading attachment {attachment} of {}: {e}",
                self.name_of(id)
            ))
        })
    }

    fn attach(&mut self, id: &str, file: &NewAttachment) -> Result<Attachment, TrackerError> {
        let body = Body::File {
            path: file.path.to_path_buf(),
            name: file.name,
        };
        let posted = self
            .client
            .json(
                "POST",
                &self.api(&format!("/issue/{id}/attachments")),
                &[],
                &body,
            )
            .map_err(|e| issue_error(e, &self.name_of(id)))?;
        let meta = posted
            .as_array()
            .and_then(|list| list.first())
            .ok_or_else(|| TrackerError::Rejected {
                issue: id.to_string(),
                message: "Jira stored no attachment".into(),
            })?;
        self.parse_attachment(meta)
    }

    fn delete_attachment(
        &mut self,
        id: &str,
        attachment: &str,
        _author: &str,
    ) -> Result<(), TrackerError> {
        let path = self.api(&format!("/attachment/{}", client::encode(attachment)));
        match self.client.json("DELETE", &path, &[], &Body::Empty) {
            Ok(_) | Err(Failure::Status { status: 404, .. }) => Ok(()),
            Err(e) => Err(issue_error(e, &self.name_of(id))),
        }
    }
}

/// How an issue is remembered: its last state without comments, attachments,
/// fields or description (a tombstone needs only the identity and the summary).
fn seen_row(issue: &Issue) -> seen::Seen {
    let slim = Issue {
        id: issue.id.clone(),
        key: issue.key.clone(),
        project: issue.project.clone(),
        issue_type: issue.issue_type.clone(),
        summary: issue.summary.clone(),
        description: None,
        status: issue.status.clone(),
        priority: issue.priority.clone(),
        resolution: issue.resolution.clone(),
        assignee: issue.assignee.clone(),
        reporter: issue.reporter.clone(),
        labels: issue.labels.clone(),
        components: issue.components.clone(),
        created: issue.created,
        updated: issue.updated,
        fields: BTreeMap::new(),
        comments: Vec::new(),
        attachments: Vec::new(),
        origin: issue.origin.clone(),
        links: issue.links.clone(),
        parent: issue.parent.clone(),
        subtasks: issue.subtasks.clone(),
        deleted: false,
    };
    seen::Seen {
        id: issue.id.clone(),
        key: issue.key.clone(),
        project: issue.project.clone(),
        record: serde_json::to_string(&slim).unwrap_or_default(),
    }
}

/// The line an incoming comment starts with when its author is not the account
/// ferry acts as.
fn attribution(author: &str) -> String {
    format!("{author} wrote:\n\n")
}

fn origin_label_of(origin: &Origin) -> String {
    format!(
        "{ORIGIN_LABEL}{}:{}",
        label_part(&origin.site),
        label_part(&origin.id)
    )
}

/// Labels cannot hold spaces; `:` separates the parts. Both are escaped as `%XX`.
fn label_part(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c == '%' || c == ':' || c.is_whitespace() {
            for b in c.to_string().bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn unlabel_part(s: &str) -> Option<String> {
    let mut bytes = Vec::new();
    let mut rest = s.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

fn parse_origin_label(label: &str) -> Option<Origin> {
    let rest = label.strip_prefix(ORIGIN_LABEL)?;
    let (site, id) = rest.split_once(':')?;
    Some(Origin {
        site: unlabel_part(site)?,
        id: unlabel_part(id)?,
    })
}

/// A JQL string literal.
fn jql_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Jira sends ids as strings, some fixtures as numbers.
fn string_id(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

/// Parses Jira's `2021-05-08T07:04:25.376+0100` into whole UTC seconds.
fn jira_time(v: &Value, what: &str) -> Result<DateTime<Utc>, TrackerError> {
    let s = v.as_str().unwrap_or_default();
    DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| DateTime::parse_from_rfc3339(s))
        .map(|t| crate::model::truncate_to_seconds(t.with_timezone(&Utc)))
        .map_err(|_| TrackerError::Unavailable(format!("Jira sent a bad time {s:?} in {what}")))
}

/// A field value as the replica holds it: options and versions by value or name,
/// users by account, lists element by element.
fn read_field(v: &Value, jira: &JiraTracker) -> FieldValue {
    match v {
        Value::Array(items) => Value::Array(items.iter().map(|i| read_field(i, jira)).collect()),
        Value::Object(map) => {
            if let Some(value) = map.get("value") {
                value.clone()
            } else if let Some(user) = jira.user_name(v).filter(|_| map.contains_key("self")) {
                Value::String(user)
            } else if let Some(name) = map.get("name") {
                name.clone()
            } else {
                v.clone()
            }
        }
        other => other.clone(),
    }
}

/// A replica value in the shape Jira's field schema wants.
fn write_field(v: &FieldValue, schema: &Value, jira: &JiraTracker) -> Value {
    let shape = |kind: &str, v: &Value| match (kind, v) {
        (_, Value::Null) => Value::Null,
        ("option", v) => json!({"value": v}),
        ("version" | "component" | "priority" | "resolution", v) => json!({"name": v}),
        ("user", Value::String(u)) => jira.user_value(u),
        (_, v) => v.clone(),
    };
    match (schema["type"].as_str().unwrap_or(""), v) {
        ("array", Value::Array(items)) => {
            let kind = schema["items"].as_str().unwrap_or("");
            Value::Array(items.iter().map(|i| shape(kind, i)).collect())
        }
        (kind, v) => shape(kind, v),
    }
}

/// The status names of a `project/KEY/statuses` answer (issue types, each with
/// its workflow's statuses), in Jira's order, each once.
fn project_statuses(listed: &Value) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let all = listed
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|t| t["statuses"].as_array().into_iter().flatten());
    for name in all.filter_map(|s| s["name"].as_str()) {
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    names
}

/// The same error again, for each issue of a request that failed for all.
fn copy_error(e: &TrackerError) -> TrackerError {
    match e {
        TrackerError::NotFound(what) => TrackerError::NotFound(what.clone()),
        TrackerError::Rejected { issue, message } => TrackerError::Rejected {
            issue: issue.clone(),
            message: message.clone(),
        },
        TrackerError::Transient { issue, message } => TrackerError::Transient {
            issue: issue.clone(),
            message: message.clone(),
        },
        TrackerError::Unavailable(message) => TrackerError::Unavailable(message.clone()),
    }
}

fn site_error(e: Failure) -> TrackerError {
    TrackerError::Unavailable(format!("Jira: {e}"))
}

/// Maps a failed call about one issue: 404 is that issue missing, other refusals
/// are about the issue, and credentials, outages and throttling are the site's.
fn issue_error(e: Failure, issue: &str) -> TrackerError {
    match e {
        Failure::Status { status: 404, .. } => TrackerError::NotFound(issue.to_string()),
        Failure::Status { status, message }
            if (400..500).contains(&status) && status != 401 && status != 429 =>
        {
            TrackerError::Rejected {
                issue: issue.to_string(),
                message,
            }
        }
        other => site_error(other),
    }
}

#[cfg(test)]
mod tests;
