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
pub mod fake;
mod relations;

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
    Created, DEFAULT_CONCURRENCY, IssuePatch, Needs, NewAttachment, NewComment, NewIssue,
    NewIssueWithComments, Probe, Tracker, TrackerError, TrackerInstance, side_by_side,
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

/// A project permission ferry uses: Jira's key, its name in Jira's
/// administration pages, and what ferry cannot do without it.
struct Permission {
    key: &'static str,
    name: &'static str,
    without: &'static str,
    /// Another way out than the grant, when there is one.
    instead: &'static str,
}

const BROWSE: Permission = Permission {
    key: "BROWSE_PROJECTS",
    name: "Browse Projects",
    without: "read the project's issues",
    instead: "",
};
/// What importing a peer's replicas does in Jira.
const IMPORT_PERMISSIONS: [Permission; 5] = [
    Permission {
        key: "CREATE_ISSUES",
        name: "Create Issues",
        without: "create the issues a peer sends",
        instead: "",
    },
    Permission {
        key: "EDIT_ISSUES",
        name: "Edit Issues",
        without: "apply a peer's changes",
        instead: "",
    },
    Permission {
        key: "TRANSITION_ISSUES",
        name: "Transition Issues",
        without: "move issues to the status a peer's change maps to",
        instead: "",
    },
    Permission {
        key: "ADD_COMMENTS",
        name: "Add Comments",
        without: "add a peer's comments",
        instead: "",
    },
    Permission {
        key: "CREATE_ATTACHMENTS",
        name: "Create Attachments",
        without: "attach a peer's files",
        instead: "",
    },
];
const DELETE: Permission = Permission {
    key: "DELETE_ISSUES",
    name: "Delete Issues",
    without: "delete issues when an incoming rule sets delete_issue",
    instead: ", or make the incoming rules keep issues instead of setting delete_issue",
};
const COMMENT_PROPERTY: &str = "ferry";
const SD_PROPERTY: &str = "sd.public.comment";

/// Which Jira: the flavour decides API version, rich text and authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Flavour {
    /// Jira Cloud: REST v3, ADF, e-mail + API token.
    Cloud,
    /// Jira Server / Data Center: REST v2, wiki text, personal access token.
    Datacenter,
}

/// How an internal comment is restricted in Jira.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum InternalComments {
    /// Visible to one project role.
    Role {
        /// Role name.
        value: String,
    },
    /// Visible to one group.
    Group {
        /// Group name.
        value: String,
    },
    /// A Jira Service Management internal note (`sd.public.comment`).
    Servicedesk,
}

impl Default for InternalComments {
    fn default() -> Self {
        InternalComments::Role {
            value: "Administrators".into(),
        }
    }
}

/// `tracker:` of `ferry.yaml` for `kind: jira`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JiraConfig {
    /// Base URL (`https://example.atlassian.net`, `https://jira.example.com`).
    pub url: String,
    /// Cloud or Data Center.
    pub flavour: Flavour,
    /// The project whose issues sync sees.
    pub project: String,
    /// Extra JQL narrowing what sync sees, ANDed with the project (no ORDER BY).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jql: String,
    /// Fields beyond the standard ones that sync carries, by their Jira name
    /// (`Severity`, `Fix versions`): resolved to ids through the field list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// Issue type of a created issue that names none.
    #[serde(default = "default_type")]
    pub default_type: String,
    /// The restriction an internal comment gets.
    #[serde(default)]
    pub internal_comments: InternalComments,
    /// Values for fields a transition's screen requires (`Resolution: Done`),
    /// by Jira field name or id, used when the incoming rule gives none: a
    /// classic workflow will not enter a done status without a resolution.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub transition_fields: BTreeMap<String, FieldValue>,
    /// How many requests about single issues (comment lists) run at once: a
    /// first export is bound by round trips, not by Jira's work.
    #[serde(
        default = "default_concurrency",
        skip_serializing_if = "is_default_concurrency"
    )]
    pub concurrency: usize,
    /// A file (relative to the site folder) holding the API token (Cloud) or the
    /// personal access token (Data Center), for when the environment cannot carry
    /// it (systemd credentials, container secrets). The environment wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// The Atlassian account e-mail (Cloud), when not in the environment. Not a
    /// secret; the token never goes here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

impl JiraConfig {
    /// What a value's type cannot say: the URL is http(s) and the project is a
    /// key. The message names the key in `ferry.yaml`.
    pub fn check(&self) -> Result<(), String> {
        if !(self.url.starts_with("https://") || self.url.starts_with("http://")) {
            return Err(format!(
                "tracker.url {:?} is not an http(s) URL of a Jira",
                self.url
            ));
        }
        if self.project.is_empty()
            || self
                .project
                .contains(|c: char| c.is_whitespace() || c == '"')
        {
            return Err(format!(
                "tracker.project {:?} is not a Jira project key",
                self.project
            ));
        }
        if self.jql.to_ascii_uppercase().contains("ORDER BY") {
            return Err("tracker.jql must not contain ORDER BY: ferry orders by itself".into());
        }
        Ok(())
    }
}

fn default_type() -> String {
    "Task".into()
}

fn default_concurrency() -> usize {
    DEFAULT_CONCURRENCY
}

fn is_default_concurrency(n: &usize) -> bool {
    *n == DEFAULT_CONCURRENCY
}

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

    /// One issue from its JSON (an issue GET or a search hit) with its comments.
    fn complete(&self, raw: &Value) -> Result<Issue, TrackerError> {
        let mut issue = self.parse_issue(raw)?;
        issue.comments = match self.embedded_comments(raw)? {
            Some(comments) => comments,
            None => self.comments(&issue.id, &issue.key)?,
        };
        self.fill_related(std::slice::from_mut(&mut issue))?;
        Ok(issue)
    }

    /// [`JiraTracker::complete`] for many search hits: the comment lists that
    /// must be read on their own are read side by side, `concurrency` at a
    /// time, since each costs a round trip and not Jira's work.
    fn complete_all(&self, raws: &[Value]) -> Result<Vec<Issue>, TrackerError> {
        let mut issues = Vec::with_capacity(raws.len());
        let mut pending = Vec::new();
        for raw in raws {
            let mut issue = self.parse_issue(raw)?;
            match self.embedded_comments(raw)? {
                Some(comments) => issue.comments = comments,
                None => pending.push(issues.len()),
            }
            issues.push(issue);
        }
        let wanted: Vec<(String, String)> = pending
            .iter()
            .map(|&i| (issues[i].id.clone(), issues[i].key.clone()))
            .collect();
        let read = self.side_by_side(&wanted, |(id, key)| self.comments(id, key));
        for (&i, comments) in pending.iter().zip(read) {
            issues[i].comments = comments?;
        }
        self.fill_related(&mut issues)?;
        Ok(issues)
    }

    /// The comments an issue GET or search hit carries in its `comment` field,
    /// when they are all of them and none was posted by ferry's account. A
    /// request per issue for its comments would bound a first export by round
    /// trips; but embedded comments come without their properties, and ferry's
    /// origin marker and the peer author are a property of the comments ferry
    /// posted (all as its own account), so those issues' comments are read
    /// from the comment endpoint instead (`None`), as are truncated lists.
    fn embedded_comments(&self, raw: &Value) -> Result<Option<Vec<Comment>>, TrackerError> {
        let embedded = &raw["fields"]["comment"];
        let Some(list) = embedded["comments"].as_array() else {
            return Ok(None);
        };
        let total = embedded["total"]
            .as_u64()
            .map_or(list.len(), |t| t as usize);
        if total > list.len() {
            return Ok(None);
        }
        let me = self.me()?;
        if list
            .iter()
            .any(|c| self.user_name(&c["author"]).as_deref() == Some(me))
        {
            return Ok(None);
        }
        list.iter()
            .map(|c| self.parse_comment(c))
            .collect::<Result<_, _>>()
            .map(Some)
    }

    fn parse_issue(&self, raw: &Value) -> Result<Issue, TrackerError> {
        let f = &raw["fields"];
        let name = |v: &Value| v.get("name").and_then(Value::as_str).map(str::to_string);
        let mut labels = Vec::new();
        let mut origin = None;
        for label in f["labels"].as_array().into_iter().flatten() {
            let Some(label) = label.as_str() else {
                continue;
            };
            match parse_origin_label(label) {
                Some(o) => origin = Some(o),
                None => labels.push(label.to_string()),
            }
        }
        let mut fields = BTreeMap::new();
        for (field, def) in self.field_defs()? {
            let value = read_field(&f[&def.id], self);
            if !value.is_null() {
                fields.insert(field.clone(), value);
            }
        }
        let id = string_id(&raw["id"]);
        let (links, parent, subtasks) = relations::read(f, self.epic_field()?);
        let issue = Issue {
            resolution: name(&f["resolution"]),
            key: raw["key"].as_str().unwrap_or_default().to_string(),
            project: f["project"]["key"].as_str().unwrap_or_default().to_string(),
            issue_type: name(&f["issuetype"]).unwrap_or_default(),
            summary: f["summary"].as_str().unwrap_or_default().to_string(),
            description: self.text_of(&f["description"]),
            status: name(&f["status"]).unwrap_or_default(),
            priority: name(&f["priority"]),
            assignee: self.user_name(&f["assignee"]),
            reporter: self.user_name(&f["reporter"]),
            labels,
            components: f["components"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(name)
                .collect(),
            created: jira_time(&f["created"], &id)?,
            updated: jira_time(&f["updated"], &id)?,
            fields,
            comments: Vec::new(),
            attachments: f["attachment"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| self.parse_attachment(a))
                .collect::<Result<_, _>>()?,
            links,
            parent,
            subtasks,
            origin,
            deleted: false,
            id,
        };
        Ok(issue)
    }

    fn parse_attachment(&self, a: &Value) -> Result<Attachment, TrackerError> {
        let mut id = string_id(&a["id"]);
        if id.is_empty() {
            // Some Server versions send only `self` (`…/attachment/10000`).
            id = a["self"]
                .as_str()
                .and_then(|s| s.rsplit('/').next())
                .unwrap_or_default()
                .to_string();
        }
        Ok(Attachment {
            name: a["filename"].as_str().unwrap_or_default().to_string(),
            size: a["size"].as_u64().unwrap_or(0),
            // Jira does not know content hashes; the engine computes them.
            sha256: String::new(),
            author: self.user_name(&a["author"]),
            created: jira_time(&a["created"], &id)?,
            id,
        })
    }

    /// All comments of issue `id` (`name` for messages), with their properties.
    fn comments(&self, id: &str, name: &str) -> Result<Vec<Comment>, TrackerError> {
        let mut comments = Vec::new();
        let mut start = 0usize;
        loop {
            let at = start.to_string();
            let page = self
                .get_json(
                    &format!("/issue/{id}/comment"),
                    &[
                        ("startAt", &at),
                        ("maxResults", "100"),
                        ("expand", "properties"),
                    ],
                )
                .map_err(|e| issue_error(e, name))?;
            let items = page["comments"].as_array().cloned().unwrap_or_default();
            for c in &items {
                comments.push(self.parse_comment(c)?);
            }
            start += items.len();
            let total = page["total"].as_u64().unwrap_or(0) as usize;
            if items.is_empty() || start >= total {
                break;
            }
        }
        Ok(comments)
    }

    fn parse_comment(&self, c: &Value) -> Result<Comment, TrackerError> {
        let id = string_id(&c["id"]);
        let property = |key: &str| {
            c["properties"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["key"] == key)
                .map(|p| &p["value"])
        };
        let ferry = property(COMMENT_PROPERTY);
        let internal = c.get("visibility").is_some_and(|v| !v.is_null())
            || c["jsdPublic"] == Value::Bool(false)
            || property(SD_PROPERTY).is_some_and(|v| v["internal"] == Value::Bool(true));
        let mut body = self.text_of(&c["body"]).unwrap_or_default();
        let mut author = self.user_name(&c["author"]).unwrap_or_default();
        if let Some(by) = ferry.and_then(|p| p["author"].as_str()) {
            if let Some(rest) = body.strip_prefix(&attribution(by)) {
                body = rest.to_string();
            }
            author = by.to_string();
        }
        let origin = ferry.and_then(|p| serde_json::from_value(p["origin"].clone()).ok());
        Ok(Comment {
            author,
            created: jira_time(&c["created"], &id)?,
            body,
            internal,
            origin,
            id,
        })
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

    /// Moves an issue to `status` through the workflow. The transition's screen
    /// (`expand=transitions.fields`) may require fields: a classic workflow asks
    /// for a Resolution on the way into a done status and refuses the move
    /// without one. The resolution comes from the replica (as the incoming rule
    /// mapped it), any required field from `tracker.transition_fields`; one
    /// neither supplies fails the issue before anything is sent, naming the
    /// field and where to supply it.
    fn transition(
        &self,
        issue: &Issue,
        status: &str,
        resolution: Option<&str>,
    ) -> Result<(), TrackerError> {
        self.transition_with(issue, status, resolution, None)
    }

    /// [`JiraTracker::transition`], taking the transition list from `shared`
    /// when an issue of the same project and type in the same status has read
    /// it (new issues of one kind start alike), and adding it there otherwise.
    /// Should Jira refuse a transition from a shared list, or the list not
    /// reach the status, the issue reads its own list and tries once more.
    fn transition_with(
        &self,
        issue: &Issue,
        status: &str,
        resolution: Option<&str>,
        shared: Option<&SharedTransitions>,
    ) -> Result<(), TrackerError> {
        if issue.status.eq_ignore_ascii_case(status) {
            return Ok(());
        }
        let path = self.api(&format!("/issue/{}/transitions", issue.id));
        let kind = (
            issue.project.clone(),
            issue.issue_type.clone(),
            issue.status.clone(),
        );
        let fetch = || {
            self.client
                .json(
                    "GET",
                    &path,
                    &[("expand", "transitions.fields")],
                    &Body::Empty,
                )
                .map_err(|e| issue_error(e, &issue.key))
        };
        // The first issue of a kind reads the list while the others of that
        // group wait for it: one round trip for all of them.
        let (list, from_shared) = match shared {
            Some(shared) => {
                let mut lists = shared.lock().unwrap_or_else(PoisonError::into_inner);
                match lists.get(&kind) {
                    Some(list) => (list.clone(), true),
                    None => {
                        let list = fetch()?;
                        lists.insert(kind, list.clone());
                        (list, false)
                    }
                }
            }
            None => (fetch()?, false),
        };
        let transitions = list["transitions"].as_array().cloned().unwrap_or_default();
        let found = transitions.iter().find(|t| {
            t["to"]["name"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(status))
        });
        if found.is_none() && from_shared {
            return self.transition_with(issue, status, resolution, None);
        }
        let Some(t) = found else {
            let reachable: Vec<&str> = transitions
                .iter()
                .filter_map(|t| t["to"]["name"].as_str())
                .collect();
            return Err(TrackerError::Rejected {
                issue: issue.key.clone(),
                message: format!(
                    "the workflow of {} issues in project {} has no transition from {:?} to {status:?} \
                     (reachable now: {})",
                    issue.issue_type,
                    issue.project,
                    issue.status,
                    if reachable.is_empty() {
                        "none".to_string()
                    } else {
                        reachable.join(", ")
                    }
                ),
            });
        };
        let fields = self.screen_fields(issue, status, t, resolution)?;
        let mut body = json!({"transition": {"id": t["id"]}});
        if !fields.is_empty() {
            body["fields"] = Value::Object(fields);
        }
        match self.client.json("POST", &path, &[], &Body::Json(&body)) {
            Ok(_) => Ok(()),
            Err(Failure::Status { status: 400, .. }) if from_shared => {
                self.transition_with(issue, status, resolution, None)
            }
            Err(e) => Err(issue_error(e, &issue.key)),
        }
    }

    /// The `fields` of a transition request: the resolution when the screen
    /// has one and the replica gives one, and every required field without a
    /// default, from the replica or `tracker.transition_fields` (by name or id).
    fn screen_fields(
        &self,
        issue: &Issue,
        status: &str,
        transition: &Value,
        resolution: Option<&str>,
    ) -> Result<serde_json::Map<String, Value>, TrackerError> {
        let mut out = serde_json::Map::new();
        let Some(screen) = transition["fields"].as_object() else {
            return Ok(out);
        };
        for (id, meta) in screen {
            let required = meta["required"] == Value::Bool(true)
                && meta["hasDefaultValue"] != Value::Bool(true);
            let name = meta["name"].as_str().unwrap_or(id);
            let from_replica = resolution
                .filter(|_| id == "resolution")
                .map(|r| Value::String(r.to_string()));
            let configured = || {
                self.config
                    .transition_fields
                    .get(name)
                    .or_else(|| self.config.transition_fields.get(id))
                    .cloned()
            };
            let value = match from_replica {
                Some(v) => Some(v),
                None if required => configured(),
                None => None,
            };
            match value {
                Some(v) => {
                    out.insert(id.clone(), write_field(&v, &meta["schema"], self));
                }
                None if required => {
                    let offered: Vec<String> = meta["allowedValues"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|v| v.get("name").or_else(|| v.get("value")))
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect();
                    let example = offered.first().map_or("…", String::as_str);
                    let rule = if id == "resolution" {
                        "set `issue.resolution` in the incoming rule (map the peer's resolutions \
                         there as its statuses are), or "
                    } else {
                        ""
                    };
                    return Err(TrackerError::Rejected {
                        issue: issue.key.clone(),
                        message: format!(
                            "moving it from {:?} to {status:?} needs {name}, which the workflow \
                             of {} issues in project {} requires on that transition and nothing \
                             supplied: {rule}give a default in ferry.yaml with \
                             tracker.transition_fields: {{{name}: {example}}}{}",
                            issue.status,
                            issue.issue_type,
                            issue.project,
                            if offered.is_empty() {
                                String::new()
                            } else {
                                format!(" (Jira offers: {})", offered.join(", "))
                            }
                        ),
                    });
                }
                None => {}
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

    /// The `fields` of a create.
    fn create_fields(
        &self,
        issue: &NewIssue,
    ) -> Result<serde_json::Map<String, Value>, TrackerError> {
        if !issue.patch.add_links.is_empty() || !issue.patch.remove_links.is_empty() {
            return Err(TrackerError::Rejected {
                issue: format!("new issue in {}", issue.project),
                message: "Jira links issues that exist: make the issue, then link it".into(),
            });
        }
        let mut fields = self.fields_json(
            &issue.patch,
            None,
            issue.origin.as_ref().map(origin_label_of),
        )?;
        fields.insert("project".into(), json!({"key": issue.project}));
        if let Some(Some(parent)) = &issue.patch.parent {
            let (field, value) = self.parent_field(None, Some(parent))?;
            fields.insert(field, value);
        }
        fields
            .entry("issuetype")
            .or_insert_with(|| json!({"name": self.config.default_type}));
        fields.entry("summary").or_insert_with(|| json!(""));
        Ok(fields)
    }

    /// [`side_by_side`] at this connection's `concurrency`.
    fn side_by_side<T: Sync, R: Send>(
        &self,
        items: &[T],
        work: impl Fn(&T) -> Result<R, TrackerError> + Sync,
    ) -> Vec<Result<R, TrackerError>> {
        side_by_side(self.config.concurrency, items, work)
    }

    /// Issues just made, read back by id with one search (fields and the
    /// comments embedded in it, which are all an issue this run made can have
    /// besides the ones it posted); an id the search misses (an index not yet
    /// caught up) is read on its own.
    fn read_back(&self, ids: &[String]) -> Result<HashMap<String, Issue>, TrackerError> {
        let mut found = HashMap::new();
        if ids.is_empty() {
            return Ok(found);
        }
        let jql = format!("id in ({})", ids.join(", "));
        let fields = self.read_fields()?;
        let searched = self.search_pages(&jql, &fields, |page| {
            for raw in &page {
                let mut issue = self.parse_issue(raw)?;
                issue.comments = raw["fields"]["comment"]["comments"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| self.parse_comment(c))
                    .collect::<Result<_, _>>()?;
                found.insert(issue.id.clone(), issue);
            }
            Ok(())
        });
        match searched {
            Ok(()) => {}
            Err(TrackerError::Unavailable(message)) if message.starts_with("Jira refused") => {}
            Err(e) => return Err(e),
        }
        for id in ids {
            if !found.contains_key(id) {
                found.insert(id.clone(), self.existing(id)?);
            }
        }
        Ok(found)
    }

    /// [`Tracker::create_many`] for up to [`BULK`] issues: one bulk create,
    /// one search to read them back, then for each, side by side, its
    /// transition (the issues of one kind sharing a transition list) and its
    /// comments, and one more search for how they ended.
    fn create_chunk(&self, chunk: &[NewIssueWithComments]) -> Vec<Created> {
        let failed = |e: TrackerError| Created {
            issue: Err(e),
            comments: Vec::new(),
        };
        let mut results: Vec<Option<Created>> = chunk.iter().map(|_| None).collect();
        let mut bodies = Vec::new();
        let mut sent = Vec::new();
        let mut made: Vec<(usize, String)> = Vec::new();
        for (i, item) in chunk.iter().enumerate() {
            // A parent Jira may refuse; one by one, so that it can be left out.
            if item.issue.patch.parent.is_some() {
                match self.post_create(&item.issue) {
                    Ok(id) => made.push((i, id)),
                    Err(e) => results[i] = Some(failed(e)),
                }
                continue;
            }
            match self.create_fields(&item.issue) {
                Ok(fields) => {
                    bodies.push(json!({ "fields": fields }));
                    sent.push(i);
                }
                Err(e) => results[i] = Some(failed(e)),
            }
        }
        let body = json!({ "issueUpdates": bodies });
        if !sent.is_empty() {
            match self
                .client
                .json("POST", &self.api("/issue/bulk"), &[], &Body::Json(&body))
            {
                Ok(answer) => {
                    let mut refused: HashMap<usize, String> = HashMap::new();
                    for e in answer["errors"].as_array().into_iter().flatten() {
                        let n = e["failedElementNumber"].as_u64().unwrap_or(u64::MAX) as usize;
                        refused.insert(n, client::error_message(&e["elementErrors"].to_string()));
                    }
                    let mut ids = answer["issues"].as_array().into_iter().flatten();
                    for (n, &i) in sent.iter().enumerate() {
                        match refused.remove(&n) {
                            Some(message) => {
                                results[i] = Some(failed(TrackerError::Rejected {
                                    issue: "a new issue".into(),
                                    message,
                                }));
                            }
                            None => match ids.next() {
                                Some(created) => made.push((i, string_id(&created["id"]))),
                                None => {
                                    results[i] = Some(failed(TrackerError::Unavailable(
                                        "Jira's answer to a bulk create lists fewer issues than                                          it made"
                                            .into(),
                                    )))
                                }
                            },
                        }
                    }
                }
                // Every one refused: sent one by one, for each one's reason.
                Err(Failure::Status { status: 400, .. }) => {
                    for &i in &sent {
                        match self.post_create(&chunk[i].issue) {
                            Ok(id) => made.push((i, id)),
                            Err(e) => results[i] = Some(failed(e)),
                        }
                    }
                }
                Err(e) => {
                    let e = issue_error(e, "a new issue");
                    for &i in &sent {
                        results[i] = Some(failed(copy_error(&e)));
                    }
                }
            }
        }
        // Each made issue: moved to its status, its comments posted.
        let ids: Vec<String> = made.iter().map(|(_, id)| id.clone()).collect();
        let first = match self.read_back(&ids) {
            Ok(first) => first,
            Err(e) => {
                for (i, _) in &made {
                    results[*i] = Some(failed(copy_error(&e)));
                }
                return results.into_iter().flatten().collect();
            }
        };
        let work: Vec<(usize, Issue)> = made
            .iter()
            .filter_map(|(i, id)| first.get(id).map(|issue| (*i, issue.clone())))
            .collect();
        let transitions = SharedTransitions::default();
        let done = self.side_by_side(&work, |(i, issue)| {
            let new = &chunk[*i];
            if let Some(status) = &new.issue.patch.status {
                let resolution = new
                    .issue
                    .patch
                    .resolution
                    .as_ref()
                    .and_then(Option::as_deref);
                self.transition_with(issue, status, resolution, Some(&transitions))?;
            }
            let mut comments = Vec::new();
            for comment in &new.comments {
                let posted = self.post_comment(&issue.id, &issue.key, comment);
                let stop = posted.is_err();
                comments.push(posted);
                if stop {
                    break;
                }
            }
            Ok(comments)
        });
        let changed: Vec<String> = work
            .iter()
            .filter(|(i, _)| {
                chunk[*i].issue.patch.status.is_some() || !chunk[*i].comments.is_empty()
            })
            .map(|(_, issue)| issue.id.clone())
            .collect();
        let last = self.read_back(&changed);
        for ((i, issue), comments) in work.into_iter().zip(done) {
            let created = match (comments, &last) {
                (Err(e), _) => failed(e),
                (Ok(comments), Ok(last)) => {
                    let mut stored = last.get(&issue.id).cloned().unwrap_or(issue);
                    // The posted ones as posted (with their origins), any other
                    // (an automation's) as embedded.
                    let posted: Vec<Comment> = comments
                        .iter()
                        .filter_map(|c| c.as_ref().ok())
                        .cloned()
                        .collect();
                    stored
                        .comments
                        .retain(|c| !posted.iter().any(|p| p.id == c.id));
                    stored.comments.extend(posted);
                    stored.normalize();
                    Created {
                        issue: Ok(stored),
                        comments,
                    }
                }
                (Ok(_), Err(e)) => failed(copy_error(e)),
            };
            results[i] = Some(created);
        }
        let mut out: Vec<Created> = Vec::with_capacity(chunk.len());
        for (i, created) in results.into_iter().enumerate() {
            let created = created.unwrap_or_else(|| {
                failed(TrackerError::Unavailable(format!(
                    "Jira's answer to a bulk create says nothing of issue {} of {}",
                    i + 1,
                    chunk.len()
                )))
            });
            if let (Ok(issue), Some(origin)) = (&created.issue, &chunk[i].issue.origin) {
                self.origins
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(origin_label_of(origin), Some(issue.id.clone()));
            }
            out.push(created);
        }
        let made: Vec<&Issue> = out.iter().filter_map(|c| c.issue.as_ref().ok()).collect();
        if let Err(e) = self.remember(made) {
            tracing::warn!("remembering the issues just made: {e}");
        }
        out
    }

    /// Sends one create and returns the new issue's id. One with a parent
    /// that Jira will not take as a sub-task of it is made on its own: the
    /// engine sets the parent afterwards, and where Jira refuses that too the
    /// relation waits with Jira's reason (see `relations`).
    fn post_create(&self, issue: &NewIssue) -> Result<String, TrackerError> {
        match self.post_create_once(issue) {
            Err(TrackerError::Rejected { message, .. }) if issue.patch.parent.is_some() => {
                tracing::info!("Jira made a new issue without its parent: {message}");
                let mut alone = issue.clone();
                alone.patch.parent = None;
                self.post_create_once(&alone)
            }
            other => other,
        }
    }

    fn post_create_once(&self, issue: &NewIssue) -> Result<String, TrackerError> {
        let body = json!({ "fields": self.create_fields(issue)? });
        let created = self
            .client
            .json("POST", &self.api("/issue"), &[], &Body::Json(&body))
            .map_err(|e| issue_error(e, "a new issue"))?;
        let id = string_id(&created["id"]);
        if let Some(origin) = &issue.origin {
            self.origins
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(origin_label_of(origin), Some(id.clone()));
        }
        Ok(id)
    }

    /// One create: the issue, moved to its status.
    fn create_one(&self, issue: &NewIssue) -> Result<Issue, TrackerError> {
        let id = self.post_create(issue)?;
        let mut stored = self.existing(&id)?;
        if let Some(status) = &issue.patch.status {
            let resolution = issue.patch.resolution.as_ref().and_then(Option::as_deref);
            self.transition(&stored, status, resolution)?;
            stored = self.existing(&id)?;
        }
        self.remember([&stored])?;
        Ok(stored)
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

    /// What to do about credentials Jira refuses.
    fn credentials_fix(&self) -> String {
        match self.config.flavour {
            Flavour::Cloud => format!(
                "set {ENV_EMAIL} and {ENV_API_TOKEN} (or tracker.email and tracker.token_file in \
                 ferry.yaml) to the account's e-mail and a current API token"
            ),
            Flavour::Datacenter => format!(
                "put a current personal access token (Jira: profile → Personal Access Tokens) in \
                 {ENV_PAT} or in the file tracker.token_file names"
            ),
        }
    }

    /// The account check of [`Tracker::preflight`]: who the credentials are.
    fn probe_account(&self) -> Result<String, (String, String)> {
        let me = match self.get_json("/myself", &[]) {
            Ok(me) => me,
            Err(Failure::Status {
                status: status @ (401 | 403),
                message,
            }) => {
                return Err((
                    format!("Jira refuses these credentials ({status}: {message})"),
                    self.credentials_fix(),
                ));
            }
            Err(e) => {
                return Err((
                    format!("cannot ask Jira who these credentials belong to: {e}"),
                    "check tracker.url in ferry.yaml and that Jira is up".into(),
                ));
            }
        };
        let Some(name) = self.user_name(&me) else {
            return Err((
                "Jira's /myself names no user for these credentials".into(),
                self.credentials_fix(),
            ));
        };
        let display = me["displayName"].as_str().unwrap_or(&name).to_string();
        let _ = self.me.set(name.clone());
        Ok(format!("signed in as {display} ({name})"))
    }

    /// The project check of [`Tracker::preflight`].
    fn probe_project(&self, me: &str) -> Result<String, (String, String)> {
        let key = &self.config.project;
        match self.get_json(&format!("/project/{}", client::encode(key)), &[]) {
            Ok(project) => Ok(format!(
                "{key} ({})",
                project["name"].as_str().unwrap_or_default()
            )),
            Err(Failure::Status {
                status: 404,
                message,
            }) => Err((
                format!("Jira has no project {key} that {me} can see ({message})"),
                format!(
                    "set tracker.project in ferry.yaml to the project's key (the part before the \
                     dash in its issue keys), or ask a Jira administrator to let {me} browse {key}"
                ),
            )),
            Err(e) => Err((
                format!("cannot read project {key}: {e}"),
                "check tracker.url in ferry.yaml and that Jira is up".into(),
            )),
        }
    }

    /// The permission checks of [`Tracker::preflight`]: one per permission
    /// `needs` calls for, from one `mypermissions` request.
    fn probe_permissions(&self, me: &str, needs: Needs) -> Vec<Probe> {
        let key = &self.config.project;
        let mut wanted = vec![&BROWSE];
        if needs.import {
            wanted.extend(IMPORT_PERMISSIONS.iter());
        }
        if needs.delete {
            wanted.push(&DELETE);
        }
        let asked: Vec<&str> = wanted.iter().map(|p| p.key).collect();
        let asked = asked.join(",");
        let answer = match self.get_json(
            "/mypermissions",
            &[("projectKey", key), ("permissions", &asked)],
        ) {
            Ok(answer) => answer,
            Err(e) => {
                return vec![Probe {
                    name: "jira permissions".into(),
                    outcome: Err((
                        format!("cannot ask Jira for {me}'s permissions in {key}: {e}"),
                        "check tracker.project in ferry.yaml and that Jira is up".into(),
                    )),
                }];
            }
        };
        wanted
            .into_iter()
            .map(|p| {
                // Some Data Center versions ignore `permissions` and send every
                // permission: pick the ones asked for.
                let granted = answer["permissions"][p.key]["havePermission"] == Value::Bool(true);
                Probe {
                    name: format!("jira permission {}", p.name),
                    outcome: if granted {
                        Ok(format!("{me} has it in {key}"))
                    } else {
                        Err((
                            format!("{me} lacks it in {key}, so ferry cannot {}", p.without),
                            format!(
                                "ask a Jira administrator to grant {} ({}) to {me} in the \
                                 permission scheme of project {key}{}",
                                p.name, p.key, p.instead
                            ),
                        ))
                    },
                }
            })
            .collect()
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
