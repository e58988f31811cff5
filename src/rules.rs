//! Rule scripts: the per-connection rhai programs that decide what a site shares
//! (`outgoing.rhai`) and how it applies what it receives (`incoming.rhai`).
//!
//! Each site's admin owns these scripts, and a replica comes from another
//! organisation, so a script is treated as untrusted code working on untrusted data:
//! it runs in a sandboxed [`rhai::Engine`] of its own, compiled once when loaded and
//! run once per issue in a fresh scope, so nothing leaks from one issue to the next.
//!
//! # Sandbox
//!
//! - no file, network, process or clock access (rhai has none by default, and
//!   nothing of the kind is registered);
//! - no `import` (modules resolve to nothing) and no `eval`;
//! - limits: [`MAX_OPERATIONS`] operations per run, [`MAX_CALL_LEVELS`] nested
//!   function calls, [`MAX_EXPR_DEPTH`] nested expressions, strings up to
//!   [`MAX_STRING_SIZE`] bytes, arrays up to [`MAX_ARRAY_SIZE`] items and maps up to
//!   [`MAX_MAP_SIZE`] entries (rhai applies these to one value at a time, adding
//!   up what it holds: the strings of all comments of a list count together);
//! - a memory budget per run ([`RuleSettings::max_memory_mib`], `rules:` in
//!   `ferry.yaml`), counted by the allocator (see [`budget`]): the bytes a run
//!   holds, four times that allocated in all, [`budget::MAX_STACK`] of stack
//!   below the run's start (values nested thousands deep), and
//!   [`budget::MAX_RUN_TIME`]; `split`, `split_rev` and `to_chars` count their
//!   pieces before making them;
//! - values a script leaves for ferry (the replica, the issue, new comments) nest
//!   arrays and maps at most [`MAX_VALUE_DEPTH`] deep;
//! - strict variables: a misspelt variable name is a load error, not a silent `()`;
//! - `print` and `debug` go to the log (`tracing`, level info) with the script path.
//!
//! Every failure is a [`RuleError`] naming the script, line and column; the engine
//! turns it into an issue-level error for that one issue.
//!
//! # Outgoing scripts
//!
//! | variable | |
//! | --- | --- |
//! | `issue` | the local issue (read-only): `id`, `key`, `project`, `type`, `summary`, `description`, `status`, `resolution` (or `()`), `priority`, `assignee`, `reporter`, `labels`, `components`, `created`, `updated` (RFC 3339 strings), `fields`, `comments` (each `id`, `author`, `created`, `body`, `internal`, `origin`), `attachments`, `links` (each `type`, `direction` (`outward`, `inward`), `issue` (`id`, `key`, `origin`) and `with_peer`: whether the other issue is shared with the peer), `parent` (`id`, `key`, `origin`, `with_peer`, or `()`), `subtasks` (same), `origin`, `deleted` |
//! | `replica` | what will be shared, pre-filled with the whole issue; the script edits it, or sets it to `()` to not share the issue. Its `links` (each `#{type, direction, issue: #{site, id}}`, the other issue by its identity across sites) and `parent` (`#{site, id}`) start as those to issues shared with the peer |
//! | `site`, `peer` | this site's name and the peer's (read-only) |
//! | `tables` | the mapping tables, `tables.users` for `tables/users.yaml` (read-only) |
//!
//! After the run ferry enforces two guarantees whatever the script did:
//!
//! - identity: `ferry`, `site`, `id`, `key`, `project`, `created`, `updated`,
//!   `origin` and `deleted` are taken from the issue, so a rule cannot make a
//!   replica pass for another issue or another site's;
//! - **internal comments never leave the site**: every comment flagged `internal`,
//!   and every comment whose id is that of an internal comment of the issue, is
//!   removed. (A rule that copies an internal comment's *text* into a new comment
//!   has chosen to publish that text; ferry cannot tell.)
//! - **relations name only issues the peer has**: a link or parent whose other
//!   issue is not one of the issue's relations shared with the peer is removed
//!   (a rule may drop, retype or turn around a link, not point it elsewhere);
//! - **the exchange format**: a peer that reads only the first exchange format
//!   gets none of the keys format 2 added (`resolution`, `parent`, `links`):
//!   it would refuse the whole commit ([`OutgoingContext::format`],
//!   [`Replica::downgrade_to`]).
//!
//! # Incoming scripts
//!
//! | variable | |
//! | --- | --- |
//! | `replica` | the replica as received (read-only), same keys as `issue` above plus `site`, `custom_keys` |
//! | `previous` | the replica last applied for this issue, or `()` (read-only) |
//! | `is_new` | `true` when no local issue exists yet (read-only) |
//! | `added_comments` | the replica's comments not yet present here (read-only) |
//! | `added_attachments` | the replica's attachments not yet present here (same name and SHA-256), each `#{id, name, size, sha256, author, created}` (read-only) |
//! | `removed_attachments` | attachments the peer removed since `previous` whose copy is here (read-only) |
//! | `changed_fields` | names of the replica keys that differ from `previous`, less those whose value is what this site last sent the peer (its own change coming back) (read-only) |
//! | `deleted` | the peer deleted the issue (read-only) |
//! | `conflicts` | fields both sites changed since the last exchange whose connection policy is `rule`, each `#{field, base, local, remote}` (local names and values, after this rule's mapping); empty unless the rule is asked to settle them (read-only, see [`crate::engine::conflict`]) |
//! | `site`, `peer`, `tables` | as for outgoing scripts |
//! | `issue` | the local issue to create or update: `project`, `type`, `summary`, `description`, `status`, `resolution`, `priority`, `assignee`, `reporter`, `labels`, `components`, `fields`; pre-filled from the local issue, or for a new one from the replica (in the connection's local project). Set it to `()` to skip this replica. |
//! | `new_comments` | comments to add, empty at first; each `#{author, body, source}` plus optional `internal`, where `source` is the `id` of one of `added_comments`; without `source` it is a note of the rule's own (written once per replica version) |
//! | `new_attachments` | attachments to upload here, empty at first: push entries of `added_attachments` (their content is verified against the SHA-256 before upload) |
//! | `remove_attachments` | copies to remove here, empty at first: push entries of `removed_attachments` |
//! | `delete_issue` | `false`; set it to `true` to delete the local issue |
//! | `links` | the links the local issue is to have with other shared issues, pre-filled with `replica.links` (each `#{type, direction, issue: #{site, id}}`); map `type` to this site's link types, remove what this site does not want. ferry makes a link once both issues are here, and removes a link it made when it leaves this list |
//! | `parent` | the issue the local issue is to be a sub-task of, `#{site, id}` or `()`; pre-filled with `replica.parent`. It counts only for a replica its issue's owner wrote (no `origin`): a parent is the owner's to set |
//!
//! # Helpers
//!
//! - `map_value(value, map, default)`: `map[value]`, or `default` when `value` is
//!   `()` or not a key of `map`; for small mappings written in the script.
//! - `lookup(table, key)`: the value for `key` in the table file `tables/<table>.yaml`,
//!   or `()` when the key is absent; `lookup(table, key, default)` returns `default`
//!   instead. An unknown table name is an error (most likely a typo).
//! - `comment_from(c)`: `#{author: c.author, body: c.body, source: c.id}`, a new
//!   comment copying the replica comment `c`.
//! - `attributed(c, site)`: the same with the body prefixed by
//!   `[<author>@<site>] `, so readers see who wrote it where
//!   (`[ann@support] Customer sent logs.`); a comment relayed from a third site
//!   names the site in its origin marker instead of `site`.
//!
//! A script can stop with its own message through `throw "..."`: the message
//! becomes the issue's error.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rhai::module_resolvers::DummyModuleResolver;
use rhai::serde::{from_dynamic, to_dynamic};
use rhai::{AST, Array, Dynamic, Engine, EvalAltResult, ImmutableString, Map, Position, Scope};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{Attachment, Comment, FieldValue, Issue, Origin, normalize_set};
use crate::replica::{MAX_REPLICA_BYTES, Replica, ReplicaLink};

pub mod budget;

use budget::Meter;

/// Operations one run may perform: generous for any real rule (a rule touching a
/// few hundred comments uses tens of thousands), small enough that an endless loop
/// fails in well under a second.
pub const MAX_OPERATIONS: u64 = 1_000_000;
/// Nested function calls: rules rarely define functions at all, so deep nesting
/// means runaway recursion.
pub const MAX_CALL_LEVELS: usize = 32;
/// Nesting depth of expressions at the top level (functions get half of it).
pub const MAX_EXPR_DEPTH: usize = 64;
/// Largest string a script may build, in bytes: the replica limit, since a value
/// can be no larger than the replica carrying it. rhai adds up the strings one
/// value holds (an array of comments, a whole replica), so this also bounds the
/// text of one value in all, which no replica a peer accepts exceeds either.
pub const MAX_STRING_SIZE: usize = MAX_REPLICA_BYTES;
/// Most items one array may hold, counting those of arrays inside it: more than
/// the comments of any replica (each takes over 60 bytes of YAML), while a single
/// operation on such an array (rhai checks its size by walking it) stays short.
pub const MAX_ARRAY_SIZE: usize = MAX_REPLICA_BYTES / 16;
/// Most entries one map may hold, counting those of maps inside it (a replica of
/// many comments is a map of that many comment maps of six entries each).
pub const MAX_MAP_SIZE: usize = MAX_REPLICA_BYTES / 16;
/// How deep arrays and maps may nest in what a script leaves for ferry: a replica
/// holds comments holding an origin (4 levels), leaving room for structured custom
/// fields. Deeper values are a runaway rule, and parsers (serde_json at 128
/// levels, the peer's YAML parser) refuse them later, far from the rule.
pub const MAX_VALUE_DEPTH: usize = 16;

/// The `rules:` settings of `ferry.yaml`: the budget of every rule run.
///
/// ```yaml
/// rules:
///   max_memory_mib: 256
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSettings {
    /// Memory one run of a rule script may hold, in MiB (and four times that
    /// allocated in all). The default holds the rule of the largest issue a
    /// replica can carry (16 MiB of text) several times over.
    #[serde(default = "default_memory_mib")]
    pub max_memory_mib: u64,
}

/// The default memory budget of a rule run, in MiB.
pub const DEFAULT_MEMORY_MIB: u64 = 256;

fn default_memory_mib() -> u64 {
    DEFAULT_MEMORY_MIB
}

impl Default for RuleSettings {
    fn default() -> Self {
        RuleSettings {
            max_memory_mib: DEFAULT_MEMORY_MIB,
        }
    }
}

impl RuleSettings {
    /// Whether these are the defaults (then `ferry.yaml` need not say them).
    pub fn is_default(&self) -> bool {
        *self == RuleSettings::default()
    }

    /// The memory budget in bytes.
    fn budget(&self) -> u64 {
        self.max_memory_mib.saturating_mul(1024 * 1024)
    }
}

/// Mapping tables loaded from `rules/tables/*.yaml`, by file stem.
pub type Tables = BTreeMap<String, serde_json::Value>;

/// A rule script failed to compile or run. Names the script, line and column.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}{}: {message}", script.display(), position(*line, *column))]
pub struct RuleError {
    /// The script file.
    pub script: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// What went wrong.
    pub message: String,
}

fn position(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

impl RuleError {
    /// An error about the file as a whole (no position).
    fn in_file(script: &Path, message: impl Into<String>) -> RuleError {
        RuleError {
            script: script.to_path_buf(),
            line: None,
            column: None,
            message: message.into(),
        }
    }

    /// An error at a rhai source position.
    fn at(script: &Path, pos: Position, message: impl Into<String>) -> RuleError {
        RuleError {
            script: script.to_path_buf(),
            line: pos.line(),
            column: pos.position(),
            message: message.into(),
        }
    }
}

/// A compiled, sandboxed rule script. Compiled once, run for every issue; `Send`
/// and `Sync`, so one script can serve several threads.
pub struct RuleScript {
    path: PathBuf,
    engine: Engine,
    ast: AST,
    /// The tables as a rhai map, copied into each run's scope as `tables`.
    tables: Arc<Map>,
    /// The budget of each run.
    settings: RuleSettings,
}

/// What an outgoing rule knows besides the issue.
pub struct OutgoingContext<'a> {
    /// This site.
    pub site: &'a str,
    /// The peer the replica is for.
    pub peer: &'a str,
    /// The exchange format the peer reads: keys newer than it are left out of
    /// the replica, or the peer would refuse the whole commit holding it
    /// ([`Replica::downgrade_to`]).
    pub format: crate::replica::Format,
    /// Local ids of the issues shared with the peer, among those the issue links
    /// to or is a sub-task of: only relations to these travel.
    pub shared: &'a BTreeSet<String>,
}

/// What an incoming rule sees.
pub struct IncomingInput<'a> {
    /// This site.
    pub site: &'a str,
    /// The peer that sent the replica.
    pub peer: &'a str,
    /// The replica as received.
    pub replica: &'a Replica,
    /// The replica last applied for this issue, if any.
    pub previous: Option<&'a Replica>,
    /// The local issue, `None` when the replica is new here.
    pub local: Option<&'a Issue>,
    /// The local project the connection maps the replica's project to.
    pub local_project: &'a str,
    /// Comments of the replica not yet present locally (echoes already removed).
    pub added_comments: &'a [Comment],
    /// Attachments of the replica not yet present locally (same name and content).
    pub added_attachments: &'a [Attachment],
    /// Attachments the peer removed since `previous` that a copy of is here.
    pub removed_attachments: &'a [Attachment],
    /// Names of replica fields that differ from `previous`.
    pub changed_fields: &'a [String],
    /// Conflicts the rule is asked to settle (policy `rule`); empty otherwise.
    pub conflicts: &'a [FieldConflict],
}

/// Both sites changed one field since the last exchange, to different values. All
/// values are in this site's terms: `remote` is what the incoming rule made of the
/// peer's value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldConflict {
    /// `status`, `labels`, `fields.Customer`...
    pub field: String,
    /// The value both sites last shared (JSON `null` when unset).
    pub base: Value,
    /// This site's value now.
    pub local: Value,
    /// The peer's value now.
    pub remote: Value,
}

/// The local issue as an incoming rule wants it. Unknown keys are refused, so a
/// misspelt `issue.asignee` is an error rather than silently ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetIssue {
    /// Project key.
    pub project: String,
    /// Type.
    #[serde(rename = "type")]
    pub issue_type: String,
    /// Summary.
    pub summary: String,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Status.
    pub status: String,
    /// Priority.
    #[serde(default)]
    pub priority: Option<String>,
    /// Resolution, for a tracker that keeps one (Jira asks for it when an issue
    /// enters a done status).
    #[serde(default)]
    pub resolution: Option<String>,
    /// Assignee.
    #[serde(default)]
    pub assignee: Option<String>,
    /// Reporter.
    #[serde(default)]
    pub reporter: Option<String>,
    /// Labels.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Components.
    #[serde(default)]
    pub components: Vec<String>,
    /// Custom fields.
    #[serde(default)]
    pub fields: BTreeMap<String, FieldValue>,
}

impl From<&Issue> for TargetIssue {
    fn from(issue: &Issue) -> TargetIssue {
        TargetIssue {
            project: issue.project.clone(),
            issue_type: issue.issue_type.clone(),
            summary: issue.summary.clone(),
            description: issue.description.clone(),
            status: issue.status.clone(),
            priority: issue.priority.clone(),
            resolution: issue.resolution.clone(),
            assignee: issue.assignee.clone(),
            reporter: issue.reporter.clone(),
            labels: issue.labels.clone(),
            components: issue.components.clone(),
            fields: issue.fields.clone(),
        }
    }
}

/// A comment an incoming rule wants added. Unknown keys are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetComment {
    /// Author.
    pub author: String,
    /// Text.
    pub body: String,
    /// Keep it internal here.
    #[serde(default)]
    pub internal: bool,
    /// Id of the replica comment it copies (for the origin marker); `None` for a
    /// note the rule writes itself (a deletion notice, say).
    #[serde(default)]
    pub source: Option<String>,
}

/// What an incoming rule decided.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingResult {
    /// The wanted local issue.
    pub issue: TargetIssue,
    /// Comments to add.
    pub new_comments: Vec<TargetComment>,
    /// Ids of `added_attachments` to upload here.
    pub new_attachments: Vec<String>,
    /// Ids of `removed_attachments` whose copy here is to be removed.
    pub remove_attachments: Vec<String>,
    /// Delete the local issue.
    pub delete_issue: bool,
    /// Values `map_value` or `lookup` found no mapping for (the default was used),
    /// for reviewers: what the mappings cannot place.
    pub unmapped: Vec<String>,
    /// The links the local issue is to have with other shared issues, in this
    /// site's link types, sorted; ferry makes and removes links to follow it
    /// (see [`crate::engine`]'s import).
    pub links: Vec<ReplicaLink>,
    /// The parent the local issue is to have, by identity across sites.
    pub parent: Option<Origin>,
}

thread_local! {
    /// The mapping misses of the script running on this thread (scripts are
    /// shared between threads; each run is on one).
    static UNMAPPED: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Notes that a mapping helper used its default for `key`.
fn note_unmapped(what: String) {
    UNMAPPED.with(|u| {
        let mut u = u.borrow_mut();
        if !u.contains(&what) {
            u.push(what);
        }
    });
}

/// Loads `rules/tables/*.yaml`: each file is one table named after its stem, and
/// must hold a YAML mapping (an empty file is an empty table). A missing directory
/// means no tables. Files are read in name order, so errors are reproducible.
pub fn load_tables(dir: &Path) -> Result<Tables, RuleError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Tables::new()),
        Err(e) => return Err(RuleError::in_file(dir, format!("cannot list tables: {e}"))),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| RuleError::in_file(dir, format!("cannot list tables: {e}")))?
            .path();
        if path.extension().is_some_and(|ext| ext == "yaml") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    let mut tables = Tables::new();
    for path in files {
        let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
            return Err(RuleError::in_file(&path, "table file name is not UTF-8"));
        };
        let name = name.to_string();
        tables.insert(name, load_table(&path)?);
    }
    Ok(tables)
}

/// Reads one table file; see [`load_tables`].
fn load_table(path: &Path) -> Result<Value, RuleError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| RuleError::in_file(path, format!("cannot read table: {e}")))?;
    let value: Value = serde_yaml::from_str(&text).map_err(|e| {
        let message = e.to_string();
        match e.location() {
            Some(at) => {
                // serde_yaml appends the location to its message; it is already in
                // the `path:line:column` prefix.
                let suffix = format!(" at line {} column {}", at.line(), at.column());
                RuleError {
                    script: path.to_path_buf(),
                    line: Some(at.line()),
                    column: Some(at.column()),
                    message: message
                        .strip_suffix(&suffix)
                        .unwrap_or(&message)
                        .to_string(),
                }
            }
            None => RuleError::in_file(path, message),
        }
    })?;
    match value {
        Value::Object(_) => Ok(value),
        Value::Null => Ok(Value::Object(serde_json::Map::new())),
        _ => Err(RuleError::in_file(
            path,
            "a table must be a YAML mapping, one `key: value` per line",
        )),
    }
}

/// Names of the scope variables, shared by compilation (strict variables) and runs.
mod var {
    pub const ISSUE: &str = "issue";
    pub const REPLICA: &str = "replica";
    pub const SITE: &str = "site";
    pub const PEER: &str = "peer";
    pub const TABLES: &str = "tables";
    pub const PREVIOUS: &str = "previous";
    pub const IS_NEW: &str = "is_new";
    pub const ADDED_COMMENTS: &str = "added_comments";
    pub const CHANGED_FIELDS: &str = "changed_fields";
    pub const DELETED: &str = "deleted";
    pub const NEW_COMMENTS: &str = "new_comments";
    pub const DELETE_ISSUE: &str = "delete_issue";
    pub const CONFLICTS: &str = "conflicts";
    pub const ADDED_ATTACHMENTS: &str = "added_attachments";
    pub const REMOVED_ATTACHMENTS: &str = "removed_attachments";
    pub const NEW_ATTACHMENTS: &str = "new_attachments";
    pub const REMOVE_ATTACHMENTS: &str = "remove_attachments";
    pub const LINKS: &str = "links";
    pub const PARENT: &str = "parent";

    /// Every variable either kind of script may see. A script is compiled without
    /// knowing its direction, so it is checked against all of them; using an
    /// incoming-only variable in an outgoing script fails when it runs.
    pub const ALL: &[&str] = &[
        ISSUE,
        REPLICA,
        SITE,
        PEER,
        TABLES,
        PREVIOUS,
        IS_NEW,
        ADDED_COMMENTS,
        CHANGED_FIELDS,
        DELETED,
        NEW_COMMENTS,
        DELETE_ISSUE,
        CONFLICTS,
        ADDED_ATTACHMENTS,
        REMOVED_ATTACHMENTS,
        NEW_ATTACHMENTS,
        REMOVE_ATTACHMENTS,
        LINKS,
        PARENT,
    ];
}

/// Replica keys an outgoing rule cannot change: they say which issue of which site
/// a replica is, and are restored from the issue after the rule ran.
const IDENTITY_KEYS: &[&str] = &[
    "ferry", "site", "id", "key", "project", "created", "updated", "origin", "deleted",
];

impl RuleScript {
    /// Reads and compiles a script. `tables` are what `lookup` and `tables` see;
    /// `settings` the budget of each run.
    pub fn load(
        path: &Path,
        tables: Tables,
        settings: RuleSettings,
    ) -> Result<RuleScript, RuleError> {
        let source = std::fs::read_to_string(path)
            .map_err(|e| RuleError::in_file(path, format!("cannot read rule script: {e}")))?;
        RuleScript::from_source(path, &source, tables, settings)
    }

    /// Compiles `source`; `path` names the script in errors and log lines.
    pub fn from_source(
        path: &Path,
        source: &str,
        tables: Tables,
        settings: RuleSettings,
    ) -> Result<RuleScript, RuleError> {
        let mut table_map = Map::new();
        for (name, table) in &tables {
            let table = to_dynamic(table)
                .map_err(|e| RuleError::in_file(path, format!("table {name:?}: {e}")))?;
            table_map.insert(name.into(), table);
        }
        let tables = Arc::new(table_map);
        let engine = sandboxed_engine(path, Arc::clone(&tables), settings);
        let mut declared = Scope::new();
        for name in var::ALL {
            // Plain variables, not constants: the optimiser would fold constant
            // placeholder values into the compiled script.
            declared.push_dynamic(*name, Dynamic::UNIT);
        }
        let ast = engine
            .compile_with_scope(&declared, source)
            .map_err(|e| RuleError::at(path, e.position(), e.err_type().to_string()))?;
        Ok(RuleScript {
            path: path.to_path_buf(),
            engine,
            ast,
            tables,
            settings,
        })
    }

    /// Runs an outgoing rule; `None` when the rule does not share the issue.
    ///
    /// The replica's identity keys come from the issue whatever the rule did, and
    /// internal comments are always removed (see the module documentation).
    pub fn run_outgoing(
        &self,
        issue: &Issue,
        ctx: &OutgoingContext,
    ) -> Result<Option<Replica>, RuleError> {
        let mut base = Replica::from_issue(ctx.site, issue);
        // Relations travel only to issues the peer has: the rule starts from
        // those, and sees every relation of the issue with its `shared` flag.
        let related = shared_relations(issue, ctx);
        keep_shared_relations(&mut base, &related);
        let mut scope = self.scope(ctx.site, ctx.peer);
        let mut issue_map = issue_value(self.script_value(issue)?);
        mark_shared(&mut issue_map, ctx.shared);
        scope.push_constant_dynamic(var::ISSUE, issue_map);
        scope.push_dynamic(var::REPLICA, replica_value(self.script_value(&base)?));
        self.run(&mut scope, "outgoing")?;

        let shared = take(&mut scope, var::REPLICA).flatten();
        if shared.is_unit() {
            return Ok(None);
        }
        self.check_depth(var::REPLICA, &shared)?;
        let mut replica = match from_dynamic::<Replica>(&shared) {
            // What nearly every rule leaves: a replica as is. Its identity is
            // put back field by field.
            Ok(mut replica) => {
                keep_identity(&mut replica, &base);
                replica
            }
            // Otherwise the identity keys are put back first (a rule may have
            // removed one), and what still does not fit is named precisely.
            Err(_) => {
                let mut shared = self.read_back(var::REPLICA, shared)?;
                let base = to_json(&base);
                if let (Value::Object(shared), Value::Object(base)) = (&mut shared, &base) {
                    for key in IDENTITY_KEYS {
                        match base.get(*key) {
                            Some(value) => shared.insert((*key).to_string(), value.clone()),
                            None => shared.remove(*key),
                        };
                    }
                }
                self.decode(var::REPLICA, shared)?
            }
        };
        let internal: BTreeSet<&str> = issue
            .comments
            .iter()
            .filter(|c| c.internal)
            .map(|c| c.id.as_str())
            .collect();
        replica
            .comments
            .retain(|c| !c.internal && !internal.contains(c.id.as_str()));
        // Whatever the rule did, a relation names an issue the peer has.
        keep_shared_relations(&mut replica, &related);
        replica.downgrade_to(ctx.format);
        replica.normalize();
        Ok(Some(replica))
    }

    /// Runs an incoming rule; `None` when the rule skips the replica.
    pub fn run_incoming(&self, input: &IncomingInput) -> Result<Option<IncomingResult>, RuleError> {
        let mut scope = self.scope(input.site, input.peer);
        let replica = replica_value(self.script_value(input.replica)?);
        scope.push_constant_dynamic(var::REPLICA, replica);
        let previous = match input.previous {
            Some(previous) => replica_value(self.script_value(previous)?),
            None => Dynamic::UNIT,
        };
        scope.push_constant_dynamic(var::PREVIOUS, previous);
        scope.push_constant(var::IS_NEW, input.local.is_none());
        let mut added = self.script_value(input.added_comments)?;
        complete_all(&mut added, COMMENT_KEYS);
        scope.push_constant_dynamic(var::ADDED_COMMENTS, added);
        for (name, list) in [
            (var::ADDED_ATTACHMENTS, input.added_attachments),
            (var::REMOVED_ATTACHMENTS, input.removed_attachments),
        ] {
            scope.push_constant_dynamic(name, self.script_value(list)?);
        }
        let changed: Array = input
            .changed_fields
            .iter()
            .map(|f| Dynamic::from(f.clone()))
            .collect();
        scope.push_constant(var::CHANGED_FIELDS, changed);
        scope.push_constant(var::DELETED, input.replica.deleted);
        scope.push_constant_dynamic(var::CONFLICTS, self.script_value(input.conflicts)?);
        let target = match input.local {
            Some(local) => TargetIssue::from(local),
            None => TargetIssue {
                project: input.local_project.to_string(),
                ..TargetIssue::from(&input.replica.to_issue())
            },
        };
        scope.push_dynamic(var::ISSUE, self.script_value(&target)?);
        scope.push(var::NEW_COMMENTS, Array::new());
        scope.push(var::NEW_ATTACHMENTS, Array::new());
        scope.push(var::REMOVE_ATTACHMENTS, Array::new());
        scope.push(var::DELETE_ISSUE, false);
        scope.push_dynamic(var::LINKS, self.script_value(&input.replica.links)?);
        let parent = match &input.replica.parent {
            Some(parent) => self.script_value(parent)?,
            None => Dynamic::UNIT,
        };
        scope.push_dynamic(var::PARENT, parent);
        UNMAPPED.with(|u| u.borrow_mut().clear());
        self.run(&mut scope, "incoming")?;
        let unmapped = UNMAPPED.with(|u| std::mem::take(&mut *u.borrow_mut()));

        let wanted = take(&mut scope, var::ISSUE);
        if wanted.is_unit() {
            return Ok(None);
        }
        self.check_depth(var::ISSUE, &wanted)?;
        let mut issue: TargetIssue =
            self.decode(var::ISSUE, self.read_back(var::ISSUE, wanted)?)?;
        normalize_set(&mut issue.labels);
        normalize_set(&mut issue.components);

        let comments = take(&mut scope, var::NEW_COMMENTS);
        self.check_depth(var::NEW_COMMENTS, &comments)?;
        let comments = comments.into_array().map_err(|found| {
            self.after_run(format!("`new_comments` must be an array, not {found}"))
        })?;
        let mut sources = BTreeSet::new();
        let mut new_comments = Vec::with_capacity(comments.len());
        for (i, comment) in comments.into_iter().enumerate() {
            let name = format!("{}[{i}]", var::NEW_COMMENTS);
            let comment: TargetComment = self.decode(&name, self.read_back(&name, comment)?)?;
            let Some(source) = &comment.source else {
                new_comments.push(comment);
                continue;
            };
            if !input.added_comments.iter().any(|c| &c.id == source) {
                let ids: Vec<&str> = input.added_comments.iter().map(|c| c.id.as_str()).collect();
                return Err(self.after_run(format!(
                    "`{name}.source` is {source:?}, which is not the id of one of `added_comments` ({}): a copied comment must come from a comment the peer added (leave `source` out for a note of your own)",
                    if ids.is_empty() { "there are none".to_string() } else { ids.join(", ") },
                )));
            }
            if !sources.insert(source.clone()) {
                return Err(self.after_run(format!(
                    "`{name}.source` is {source:?}, like an earlier new comment: each added comment can be imported once"
                )));
            }
            new_comments.push(comment);
        }

        let new_attachments = self.attachment_choice(
            &mut scope,
            var::NEW_ATTACHMENTS,
            var::ADDED_ATTACHMENTS,
            input.added_attachments,
        )?;
        let remove_attachments = self.attachment_choice(
            &mut scope,
            var::REMOVE_ATTACHMENTS,
            var::REMOVED_ATTACHMENTS,
            input.removed_attachments,
        )?;
        let delete_issue = take(&mut scope, var::DELETE_ISSUE)
            .as_bool()
            .map_err(|found| {
                self.after_run(format!("`delete_issue` must be true or false, not {found}"))
            })?;
        let (links, parent) = self.relations(&mut scope)?;
        Ok(Some(IncomingResult {
            unmapped,
            issue,
            new_comments,
            new_attachments,
            remove_attachments,
            delete_issue,
            links,
            parent,
        }))
    }

    /// Reads back `links` and `parent` after an incoming run.
    fn relations(
        &self,
        scope: &mut Scope,
    ) -> Result<(Vec<ReplicaLink>, Option<Origin>), RuleError> {
        let links = take(scope, var::LINKS);
        self.check_depth(var::LINKS, &links)?;
        let mut links: Vec<ReplicaLink> =
            self.decode(var::LINKS, self.read_back(var::LINKS, links)?)?;
        if let Some(i) = links.iter().position(|l| l.link_type.trim().is_empty()) {
            return Err(self.after_run(format!(
                "`links[{i}].type` is empty: map every link type to one of this site's (or remove the link)"
            )));
        }
        links.sort();
        links.dedup();
        let parent = take(scope, var::PARENT);
        let parent = if parent.is_unit() {
            None
        } else {
            self.check_depth(var::PARENT, &parent)?;
            Some(self.decode(var::PARENT, self.read_back(var::PARENT, parent)?)?)
        };
        Ok((links, parent))
    }

    /// Reads back `new_attachments` or `remove_attachments`: a list of entries of
    /// `offered` (the maps themselves, or their ids), each at most once.
    fn attachment_choice(
        &self,
        scope: &mut Scope,
        name: &str,
        offered_name: &str,
        offered: &[Attachment],
    ) -> Result<Vec<String>, RuleError> {
        let chosen = take(scope, name)
            .into_array()
            .map_err(|found| self.after_run(format!("`{name}` must be an array, not {found}")))?;
        let mut ids = Vec::with_capacity(chosen.len());
        for (i, entry) in chosen.into_iter().enumerate() {
            let id = if entry.is_map() {
                entry
                    .cast::<Map>()
                    .get("id")
                    .and_then(|id| id.clone().into_string().ok())
            } else {
                entry.into_string().ok()
            };
            let Some(id) = id.filter(|id| offered.iter().any(|a| &a.id == id)) else {
                return Err(self.after_run(format!(
                    "`{name}[{i}]` is not one of `{offered_name}`: push entries of `{offered_name}` (or their ids)"
                )));
            };
            if ids.contains(&id) {
                return Err(self.after_run(format!(
                    "`{name}[{i}]` repeats attachment {id}: each one can be chosen once"
                )));
            }
            ids.push(id);
        }
        Ok(ids)
    }

    /// A fresh scope with the variables both kinds of script see.
    fn scope(&self, site: &str, peer: &str) -> Scope<'static> {
        let mut scope = Scope::new();
        scope.push_constant(var::SITE, ImmutableString::from(site));
        scope.push_constant(var::PEER, ImmutableString::from(peer));
        scope.push_constant(var::TABLES, Map::clone(&self.tables));
        scope
    }

    /// Runs the script in `scope`; `kind` ("outgoing", "incoming") explains a
    /// variable the script uses but this kind of script does not have.
    fn run(&self, scope: &mut Scope, kind: &str) -> Result<(), RuleError> {
        let meter = Meter::start();
        let outcome = self.engine.run_ast_with_scope(scope, &self.ast);
        let usage = Meter::usage();
        drop(meter);
        tracing::debug!(
            script = %self.path.display(),
            live = usage.live,
            allocated = usage.allocated,
            stack = usage.stack,
            "rule run: bytes held at the end, allocated in all, and of stack"
        );
        let Err(err) = outcome else {
            return Ok(());
        };
        // Compilation accepted every variable of either kind of script.
        if let EvalAltResult::ErrorVariableNotFound(name, pos) = &*err
            && var::ALL.contains(&name.as_str())
        {
            let known: Vec<&str> = var::ALL
                .iter()
                .copied()
                .filter(|name| scope.contains(name))
                .collect();
            return Err(RuleError::at(
                &self.path,
                *pos,
                format!(
                    "`{name}` does not exist in {kind} scripts, which see: {}",
                    known.join(", ")
                ),
            ));
        }
        Err(runtime_error(&self.path, err, &self.settings))
    }

    /// Converts ferry data into a script value.
    fn script_value<T: Serialize + ?Sized>(&self, value: &T) -> Result<Dynamic, RuleError> {
        to_dynamic(value).map_err(|e| RuleError::in_file(&self.path, e.to_string()))
    }

    /// Converts a variable the script left into JSON, the common form for checking
    /// it against a Rust type.
    fn read_back(&self, name: &str, value: Dynamic) -> Result<Value, RuleError> {
        from_dynamic(&value.flatten())
            .map_err(|e| self.after_run(format!("`{name}` cannot be read back: {e}")))
    }

    /// Deserialises what the script left in `name`, naming the offending key when
    /// it does not fit.
    fn decode<T: DeserializeOwned>(&self, name: &str, value: Value) -> Result<T, RuleError> {
        T::deserialize(&value).map_err(|e| {
            let message = e.to_string();
            let path = error_path::<T>(&value, &message);
            self.after_run(format!("`{name}{path}`: {message}"))
        })
    }

    /// Refuses a value the script left in `name` whose arrays and maps nest
    /// deeper than [`MAX_VALUE_DEPTH`], naming the field that holds the deep part.
    fn check_depth(&self, name: &str, value: &Dynamic) -> Result<(), RuleError> {
        let mut path = Vec::new();
        if !too_deep(value, MAX_VALUE_DEPTH, &mut path) {
            return Ok(());
        }
        // The field, not every index of the runaway nesting below it.
        let field: String = path
            .iter()
            .map_while(|step| match step {
                Step::Key(key) => Some(format!(".{key}")),
                Step::Index(_) => None,
            })
            .collect();
        Err(self.after_run(format!(
            "`{name}{field}` holds arrays or maps nested deeper than {MAX_VALUE_DEPTH} levels, \
             the most a value a rule leaves for ferry may have"
        )))
    }

    /// An error found in what the script left behind.
    fn after_run(&self, message: String) -> RuleError {
        RuleError::in_file(&self.path, format!("after the script ran: {message}"))
    }
}

/// Whether arrays and maps nest in `value` more than `left` levels deep; `path`
/// then leads to the first place where they do. Descends at most `left + 1`
/// levels, so a runaway value costs no deeper recursion than a legal one.
fn too_deep(value: &Dynamic, left: usize, path: &mut Vec<Step>) -> bool {
    if let Some(items) = value.read_lock::<Array>() {
        if left == 0 {
            return true;
        }
        for (i, item) in items.iter().enumerate() {
            path.push(Step::Index(i));
            if too_deep(item, left - 1, path) {
                return true;
            }
            path.pop();
        }
    } else if let Some(entries) = value.read_lock::<Map>() {
        if left == 0 {
            return true;
        }
        for (key, item) in entries.iter() {
            path.push(Step::Key(key.to_string()));
            if too_deep(item, left - 1, path) {
                return true;
            }
            path.pop();
        }
    }
    false
}

/// One step into a JSON value.
enum Step {
    Key(String),
    Index(usize),
}

/// Finds where inside `root` deserialising `T` fails with `message`, as a suffix
/// like `.comments[2].body`. serde's errors on a `Value` carry no location, so this
/// descends into the child whose removal changes the error, as long as there is
/// one. Runs only on the error path.
fn error_path<T: DeserializeOwned>(root: &Value, message: &str) -> String {
    let mut path: Vec<Step> = Vec::new();
    'descend: loop {
        let children: Vec<Step> = match node(root, &path) {
            Some(Value::Object(map)) => map.keys().cloned().map(Step::Key).collect(),
            Some(Value::Array(items)) => (0..items.len()).map(Step::Index).collect(),
            _ => break,
        };
        for child in children {
            let mut pruned = root.clone();
            match node_mut(&mut pruned, &path) {
                Some(Value::Object(map)) => {
                    if let Step::Key(key) = &child {
                        map.remove(key);
                    }
                }
                Some(Value::Array(items)) => {
                    if let Step::Index(i) = child {
                        items.remove(i);
                    }
                }
                _ => break 'descend,
            }
            let same =
                matches!(serde_json::from_value::<T>(pruned), Err(e) if e.to_string() == message);
            if !same {
                path.push(child);
                continue 'descend;
            }
        }
        break;
    }
    path.iter()
        .map(|step| match step {
            Step::Key(key) => format!(".{key}"),
            Step::Index(i) => format!("[{i}]"),
        })
        .collect()
}

fn node<'a>(root: &'a Value, path: &[Step]) -> Option<&'a Value> {
    path.iter().try_fold(root, |value, step| match step {
        Step::Key(key) => value.get(key),
        Step::Index(i) => value.get(i),
    })
}

fn node_mut<'a>(root: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    path.iter().try_fold(root, |value, step| match step {
        Step::Key(key) => value.get_mut(key),
        Step::Index(i) => value.get_mut(i),
    })
}

/// Takes a variable out of the scope after a run. A script may have shadowed it
/// with `let`; the latest binding wins, as it would inside the script.
fn take(scope: &mut Scope, name: &str) -> Dynamic {
    scope
        .remove::<Dynamic>(name)
        .map(Dynamic::flatten)
        .unwrap_or(Dynamic::UNIT)
}

fn to_json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("ferry's model types always serialise to JSON")
}

/// The empty value of a key serde omits when empty.
#[derive(Clone, Copy)]
enum Empty {
    Unit,
    False,
    List,
    Map,
}

/// Keys of an issue (and a replica) that serialisation leaves out when empty; a
/// script must find them all, so `issue.labels.push(..)` and `c.internal` work on
/// every issue.
const ISSUE_KEYS: &[(&str, Empty)] = &[
    ("description", Empty::Unit),
    ("priority", Empty::Unit),
    ("resolution", Empty::Unit),
    ("assignee", Empty::Unit),
    ("reporter", Empty::Unit),
    ("labels", Empty::List),
    ("components", Empty::List),
    ("fields", Empty::Map),
    ("comments", Empty::List),
    ("attachments", Empty::List),
    ("parent", Empty::Unit),
    ("links", Empty::List),
    ("origin", Empty::Unit),
    ("deleted", Empty::False),
];
const COMMENT_KEYS: &[(&str, Empty)] = &[("internal", Empty::False), ("origin", Empty::Unit)];
const ATTACHMENT_KEYS: &[(&str, Empty)] = &[("author", Empty::Unit)];

impl Empty {
    fn value(self) -> Dynamic {
        match self {
            Empty::Unit => Dynamic::UNIT,
            Empty::False => Dynamic::FALSE,
            Empty::List => Dynamic::from_array(Array::new()),
            Empty::Map => Dynamic::from_map(Map::new()),
        }
    }
}

/// Adds the keys of `keys` that the map `value` lacks.
fn complete(value: &mut Dynamic, keys: &[(&str, Empty)]) {
    if let Some(mut map) = value.write_lock::<Map>() {
        for (key, empty) in keys {
            map.entry((*key).into()).or_insert_with(|| empty.value());
        }
    }
}

/// [`complete`] on each map of the list `value`.
fn complete_all(value: &mut Dynamic, keys: &[(&str, Empty)]) {
    if let Some(mut items) = value.write_lock::<Array>() {
        items.iter_mut().for_each(|item| complete(item, keys));
    }
}

/// [`complete_all`] on the list under `list` of the map `value`.
fn complete_each(value: &mut Dynamic, list: &str, keys: &[(&str, Empty)]) {
    if let Some(mut map) = value.write_lock::<Map>()
        && let Some(items) = map.get_mut(list)
    {
        complete_all(items, keys);
    }
}

/// An issue as scripts see it, every key present.
fn issue_value(mut value: Dynamic) -> Dynamic {
    complete(&mut value, ISSUE_KEYS);
    complete_each(&mut value, "comments", COMMENT_KEYS);
    complete_each(&mut value, "attachments", ATTACHMENT_KEYS);
    value
}

/// The identities (across sites) of the issue's related issues that are shared
/// with the peer: what its replica's relations may name.
fn shared_relations(issue: &Issue, ctx: &OutgoingContext) -> BTreeSet<Origin> {
    issue
        .links
        .iter()
        .map(|link| &link.issue)
        .chain(&issue.parent)
        .filter(|other| ctx.shared.contains(&other.id))
        .map(|other| other.identity(ctx.site))
        .collect()
}

/// Removes the relations of `replica` to issues not in `shared`.
fn keep_shared_relations(replica: &mut Replica, shared: &BTreeSet<Origin>) {
    replica.links.retain(|link| shared.contains(&link.issue));
    replica.parent = replica.parent.take().filter(|p| shared.contains(p));
}

/// Adds `with_peer` (whether the other issue is shared with the peer) to each
/// link, the parent and each sub-task of the issue map `value`, and the
/// `subtasks` key when there are none.
fn mark_shared(value: &mut Dynamic, shared: &BTreeSet<String>) {
    fn mark(related: &mut Dynamic, shared: &BTreeSet<String>) {
        if let Some(mut map) = related.write_lock::<Map>() {
            let id = map.get("id").and_then(|id| id.clone().into_string().ok());
            let is_shared = id.is_some_and(|id| shared.contains(&id));
            map.insert("with_peer".into(), Dynamic::from_bool(is_shared));
        }
    }
    let Some(mut map) = value.write_lock::<Map>() else {
        return;
    };
    map.entry("subtasks".into())
        .or_insert_with(|| Empty::List.value());
    if let Some(parent) = map.get_mut("parent") {
        mark(parent, shared);
    }
    for list in ["subtasks", "links"] {
        let Some(items) = map.get_mut(list) else {
            continue;
        };
        if let Some(mut items) = items.write_lock::<Array>() {
            for item in items.iter_mut() {
                if list == "subtasks" {
                    mark(item, shared);
                    continue;
                }
                // A link: `with_peer` on the link, as the other issue's.
                let is_shared = item
                    .read_lock::<Map>()
                    .and_then(|link| link.get("issue").cloned())
                    .and_then(|other| other.read_lock::<Map>().and_then(|o| o.get("id").cloned()))
                    .and_then(|id| id.into_string().ok())
                    .is_some_and(|id| shared.contains(&id));
                if let Some(mut link) = item.write_lock::<Map>() {
                    link.insert("with_peer".into(), Dynamic::from_bool(is_shared));
                }
            }
        }
    }
}

/// A replica as scripts see it, every key present.
fn replica_value(value: Dynamic) -> Dynamic {
    let mut value = issue_value(value);
    complete(&mut value, &[("custom_keys", Empty::Map)]);
    value
}

/// Puts back the keys of `replica` that only the issue decides
/// ([`IDENTITY_KEYS`]), from `base`.
fn keep_identity(replica: &mut Replica, base: &Replica) {
    replica.ferry = base.ferry;
    replica.site.clone_from(&base.site);
    replica.id.clone_from(&base.id);
    replica.key.clone_from(&base.key);
    replica.project.clone_from(&base.project);
    replica.created = base.created;
    replica.updated = base.updated;
    replica.origin.clone_from(&base.origin);
    replica.deleted = base.deleted;
}

/// Builds the sandboxed engine of one script; see the module documentation.
fn sandboxed_engine(path: &Path, tables: Arc<Map>, settings: RuleSettings) -> Engine {
    let mut engine = Engine::new();
    engine
        .set_module_resolver(DummyModuleResolver::new())
        .disable_symbol("eval")
        .set_strict_variables(true)
        .set_max_operations(MAX_OPERATIONS)
        .set_max_call_levels(MAX_CALL_LEVELS)
        .set_max_expr_depths(MAX_EXPR_DEPTH, MAX_EXPR_DEPTH / 2)
        .set_max_string_size(MAX_STRING_SIZE)
        .set_max_array_size(MAX_ARRAY_SIZE)
        .set_max_map_size(MAX_MAP_SIZE);
    // Before every operation: the run's memory, as the allocator counted it.
    let budget = settings.budget();
    engine.on_progress(move |_| Meter::exceeded(budget).map(|over| Dynamic::from_int(over.code())));

    let script = path.display().to_string();
    let name = script.clone();
    engine.on_print(move |text| tracing::info!(script = %name, "{text}"));
    engine.on_debug(move |text, _source, pos| {
        tracing::info!(script = %script, line = pos.line(), "{text}");
    });

    register_bounded_splits(&mut engine);
    engine.register_fn("map_value", map_value);
    let table_of = Arc::clone(&tables);
    engine.register_fn(
        "lookup",
        move |table: &str, key: Dynamic| -> Result<Dynamic, Box<EvalAltResult>> {
            lookup(&table_of, table, &key, Dynamic::UNIT)
        },
    );
    engine.register_fn(
        "lookup",
        move |table: &str, key: Dynamic, default: Dynamic| -> Result<Dynamic, Box<EvalAltResult>> {
            lookup(&tables, table, &key, default)
        },
    );
    engine.register_fn(
        "comment_from",
        |c: Map| -> Result<Map, Box<EvalAltResult>> {
            let (author, body, source) = comment_parts("comment_from", &c)?;
            Ok(new_comment(author, body, source))
        },
    );
    engine.register_fn(
        "attributed",
        |c: Map, site: &str| -> Result<Map, Box<EvalAltResult>> {
            let (author, body, source) = comment_parts("attributed", &c)?;
            // A comment relayed through several sites names where it was written.
            let written_at = c
                .get("origin")
                .and_then(|o| o.read_lock::<Map>().and_then(|o| o.get("site").cloned()))
                .and_then(|s| s.into_string().ok())
                .unwrap_or_else(|| site.to_string());
            let body = format!("[{author}@{written_at}] {body}");
            Ok(new_comment(author, body.into(), source))
        },
    );
    engine
}

/// Replaces rhai's `split`, `split_rev` and `to_chars` of strings with the same
/// functions that count the pieces before making them. rhai refuses a list over
/// [`MAX_ARRAY_SIZE`] only once it is built: splitting a 15 MB description into
/// characters held about 1 GB for a moment, enough to kill the process under a
/// memory limit, since the budget is checked between operations. Registered
/// functions take precedence over rhai's packages; the results are rhai's own.
fn register_bounded_splits(engine: &mut Engine) {
    type Pieces = Result<Array, Box<EvalAltResult>>;
    /// Refuses `count` pieces over the array limit, or makes them.
    fn bounded<'a>(
        name: &str,
        count: usize,
        pieces: impl Iterator<Item = &'a str>,
    ) -> Result<Array, Box<EvalAltResult>> {
        if count > MAX_ARRAY_SIZE {
            return Err(format!(
                "{name}: the text would split into {count} pieces, over the limit of {MAX_ARRAY_SIZE} items"
            )
            .into());
        }
        Ok(pieces
            .map(|piece| Dynamic::from(piece.to_string()))
            .collect())
    }
    /// Pieces of `text` split by `delimiter`, as `str::split` makes them.
    fn count(text: &str, delimiter: &str) -> usize {
        if delimiter.is_empty() {
            text.chars().count() + 2
        } else {
            text.matches(delimiter).count() + 1
        }
    }
    /// At most `segments` (rhai: up to 1 means the whole text).
    fn segments(segments: i64) -> usize {
        usize::try_from(segments).unwrap_or(usize::MAX).max(1)
    }
    fn whole(text: &str) -> Array {
        vec![Dynamic::from(text.to_string())]
    }

    engine.register_fn("to_chars", |s: &str| -> Pieces {
        let count = s.chars().count();
        if count > MAX_ARRAY_SIZE {
            return bounded("to_chars", count, std::iter::empty());
        }
        Ok(s.chars().map(Dynamic::from).collect())
    });
    engine.register_fn("split", |s: &str| -> Pieces {
        if s.is_empty() {
            return Ok(whole(s));
        }
        bounded("split", s.split_whitespace().count(), s.split_whitespace())
    });
    engine.register_fn("split", |s: &str, d: &str| -> Pieces {
        if s.is_empty() || (!d.is_empty() && !s.contains(d)) {
            return Ok(whole(s));
        }
        bounded("split", count(s, d), s.split(d))
    });
    engine.register_fn("split", |s: &str, d: &str, n: i64| -> Pieces {
        if n <= 1 || s.is_empty() || (!d.is_empty() && !s.contains(d)) {
            return Ok(whole(s));
        }
        let n = segments(n);
        bounded("split", count(s, d).min(n), s.splitn(n, d))
    });
    engine.register_fn("split", |s: &str, d: char| -> Pieces {
        if s.is_empty() || !s.contains(d) {
            return Ok(whole(s));
        }
        bounded("split", s.matches(d).count() + 1, s.split(d))
    });
    engine.register_fn("split", |s: &str, d: char, n: i64| -> Pieces {
        if n <= 1 || s.is_empty() || !s.contains(d) {
            return Ok(whole(s));
        }
        let n = segments(n);
        bounded("split", (s.matches(d).count() + 1).min(n), s.splitn(n, d))
    });
    engine.register_fn("split_rev", |s: &str, d: &str| -> Pieces {
        if s.is_empty() || (!d.is_empty() && !s.contains(d)) {
            return Ok(whole(s));
        }
        bounded("split_rev", count(s, d), s.rsplit(d))
    });
    engine.register_fn("split_rev", |s: &str, d: &str, n: i64| -> Pieces {
        if n <= 1 || s.is_empty() || (!d.is_empty() && !s.contains(d)) {
            return Ok(whole(s));
        }
        let n = segments(n);
        bounded("split_rev", count(s, d).min(n), s.rsplitn(n, d))
    });
    engine.register_fn("split_rev", |s: &str, d: char| -> Pieces {
        if s.is_empty() || !s.contains(d) {
            return Ok(whole(s));
        }
        bounded("split_rev", s.matches(d).count() + 1, s.rsplit(d))
    });
    engine.register_fn("split_rev", |s: &str, d: char, n: i64| -> Pieces {
        if n <= 1 || s.is_empty() || !s.contains(d) {
            return Ok(whole(s));
        }
        let n = segments(n);
        bounded(
            "split_rev",
            (s.matches(d).count() + 1).min(n),
            s.rsplitn(n, d),
        )
    });
}

/// The text of a key used to look something up; `None` for `()`.
fn key_text(key: &Dynamic) -> Option<String> {
    if key.is_unit() {
        None
    } else if key.is_string() {
        key.clone().into_string().ok()
    } else {
        Some(key.to_string())
    }
}

/// `map_value(value, map, default)`.
fn map_value(value: Dynamic, map: Map, default: Dynamic) -> Dynamic {
    let Some(key) = key_text(&value) else {
        return default;
    };
    match map.get(key.as_str()) {
        Some(mapped) => mapped.clone(),
        None => {
            note_unmapped(format!("{key:?} has no mapping (map_value gave {default})"));
            default
        }
    }
}

/// `lookup(table, key[, default])`.
fn lookup(
    tables: &Map,
    table: &str,
    key: &Dynamic,
    default: Dynamic,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let Some(entries) = tables.get(table).and_then(|t| t.read_lock::<Map>()) else {
        let known: Vec<&str> = tables.keys().map(|k| k.as_str()).collect();
        return Err(format!(
            "lookup: there is no table {table:?} (a file tables/{table}.yaml); tables: {}",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )
        .into());
    };
    let Some(key) = key_text(key) else {
        return Ok(default);
    };
    Ok(match entries.get(key.as_str()) {
        Some(value) => value.clone(),
        None => {
            let got = if default.is_unit() {
                "()".to_string()
            } else {
                default.to_string()
            };
            note_unmapped(format!(
                "{key:?} is not in table {table} (lookup gave {got})"
            ));
            default
        }
    })
}

/// Author, body and id of a comment map passed to a helper.
fn comment_parts(
    helper: &str,
    c: &Map,
) -> Result<(ImmutableString, ImmutableString, ImmutableString), Box<EvalAltResult>> {
    let text = |key: &str| -> Result<ImmutableString, Box<EvalAltResult>> {
        c.get(key)
            .and_then(|v| v.clone().into_immutable_string().ok())
            .ok_or_else(|| {
                format!("{helper}: the comment has no `{key}` text; pass one of `added_comments`")
                    .into()
            })
    };
    Ok((text("author")?, text("body")?, text("id")?))
}

fn new_comment(author: ImmutableString, body: ImmutableString, source: ImmutableString) -> Map {
    let mut comment = Map::new();
    comment.insert("author".into(), author.into());
    comment.insert("body".into(), body.into());
    comment.insert("source".into(), source.into());
    comment
}

/// Turns a rhai runtime error into a [`RuleError`] at the innermost position: for
/// an error inside a script function, the line in that function.
fn runtime_error(path: &Path, err: Box<EvalAltResult>, settings: &RuleSettings) -> RuleError {
    let mut function = None;
    let mut pos = err.position();
    let mut inner = err;
    while let EvalAltResult::ErrorInFunctionCall(name, _, next, _)
    | EvalAltResult::ErrorInModule(name, next, _) = *inner
    {
        if !name.starts_with("anon$") {
            function = Some(name);
        }
        if !next.position().is_none() {
            pos = next.position();
        }
        inner = next;
    }
    let mut message = describe(*inner, settings);
    if let Some(function) = function {
        message.push_str(&format!(" (in function `{function}`)"));
    }
    RuleError::at(path, pos, message)
}

/// A message for one rhai error, with advice where the cause is usually the same.
fn describe(err: EvalAltResult, settings: &RuleSettings) -> String {
    match err {
        EvalAltResult::ErrorTooManyOperations(_) => {
            format!("too many operations (limit {MAX_OPERATIONS}): does the script loop forever?")
        }
        EvalAltResult::ErrorStackOverflow(_) => format!(
            "functions nested too deeply (limit {MAX_CALL_LEVELS} calls): does a function call itself forever?"
        ),
        EvalAltResult::ErrorDataTooLarge(what, _) => {
            let limit = if what.contains("string") {
                format!(
                    "{MAX_STRING_SIZE} bytes: the text of one value (a string, or all strings of a list or map) can be no larger than the replica limit, which is fixed"
                )
            } else if what.contains("array") {
                format!("{MAX_ARRAY_SIZE} items (counting those of nested lists)")
            } else {
                format!("{MAX_MAP_SIZE} entries (counting those of nested maps)")
            };
            format!("{} over the limit of {limit}", what.to_lowercase())
        }
        EvalAltResult::ErrorTerminated(token, _) => {
            match token.as_int().ok().and_then(budget::Over::from_code) {
                Some(budget::Over::Memory) => format!(
                    "the rule went over its memory budget of {} MiB \
                     (rules.max_memory_mib in ferry.yaml raises it): does it build ever larger values?",
                    settings.max_memory_mib
                ),
                Some(budget::Over::Work) => format!(
                    "the rule allocated more than {} MiB in all, {}× its memory budget \
                     (rules.max_memory_mib in ferry.yaml raises it): does it copy large values over and over?",
                    settings.max_memory_mib.saturating_mul(budget::WORK_FACTOR),
                    budget::WORK_FACTOR
                ),
                Some(budget::Over::Nesting) => format!(
                    "the rule nests arrays or maps too deeply (thousands of levels: over the \
                     budget of {} KiB of stack for copying them): does it put a value inside itself?",
                    budget::MAX_STACK / 1024
                ),
                Some(budget::Over::Time) => format!(
                    "the rule ran longer than {} s: does it loop over ever larger values?",
                    budget::MAX_RUN_TIME.as_secs()
                ),
                None => format!("the rule was stopped: {token}"),
            }
        }
        EvalAltResult::ErrorModuleNotFound(name, _) => {
            format!("cannot import {name:?}: rule scripts cannot import modules")
        }
        EvalAltResult::ErrorRuntime(value, _) => value.to_string(),
        mut other => {
            other.clear_position();
            other.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse_timestamp;

    fn ts(s: &str) -> chrono::DateTime<chrono::Utc> {
        parse_timestamp(s).unwrap()
    }

    fn comment(id: &str, author: &str, body: &str, internal: bool) -> Comment {
        Comment {
            id: id.into(),
            author: author.into(),
            created: ts(&format!("2026-11-20T10:0{}:00Z", id.len() % 10)),
            body: body.into(),
            internal,
            origin: None,
        }
    }

    fn sample_issue() -> Issue {
        Issue {
            resolution: None,
            id: "10042".into(),
            key: "SUP-42".into(),
            project: "SUP".into(),
            issue_type: "Bug".into(),
            summary: "Printer on fire".into(),
            description: Some("Smoke seen after the last firmware update.".into()),
            status: "Open".into(),
            priority: Some("High".into()),
            assignee: Some("kevin".into()),
            reporter: Some("ann".into()),
            labels: vec!["customer".into(), "escalate".into()],
            components: vec!["printing".into()],
            created: ts("2026-11-20T10:00:00Z"),
            updated: ts("2026-11-22T09:30:00Z"),
            fields: BTreeMap::from([
                ("Customer".to_string(), Value::from("ACME")),
                ("Severity".to_string(), Value::from(2)),
                ("Cost".to_string(), Value::from(1200)),
            ]),
            comments: vec![
                comment("881", "ann", "Customer sent logs.", false),
                comment("882", "kevin", "ACME is behind on payments.", true),
            ],
            attachments: vec![],
            links: Vec::new(),
            parent: None,
            subtasks: Vec::new(),
            origin: None,
            deleted: false,
        }
    }

    /// The engineering side's replica of the sample issue, as support receives it.
    fn peer_replica() -> Replica {
        let mut issue = sample_issue();
        issue.id = "5521".into();
        issue.key = "ENG-7".into();
        issue.project = "ENG".into();
        issue.status = "In Progress".into();
        issue.assignee = Some("zoe".into());
        issue.comments = vec![
            comment("901", "zoe", "Reproduced on firmware 2.1.", false),
            comment("902", "raj", "Fix is in review.", false),
        ];
        Replica::from_issue("engineering", &issue)
    }

    fn script(source: &str) -> RuleScript {
        RuleScript::from_source(
            Path::new("test.rhai"),
            source,
            Tables::new(),
            RuleSettings::default(),
        )
        .unwrap()
    }

    fn template(name: &str) -> RuleScript {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("templates")
            .join(name);
        RuleScript::load(&path, Tables::new(), RuleSettings::default()).unwrap()
    }

    /// A peer on the first exchange format: the gate is closed.
    const CTX: OutgoingContext<'static> = OutgoingContext {
        site: "support",
        peer: "engineering",
        format: crate::replica::Format::V1,
        shared: &BTreeSet::new(),
    };

    fn incoming<'a>(
        replica: &'a Replica,
        previous: Option<&'a Replica>,
        local: Option<&'a Issue>,
        changed: &'a [String],
    ) -> IncomingInput<'a> {
        IncomingInput {
            site: "support",
            peer: "engineering",
            replica,
            previous,
            local,
            local_project: "SUP",
            added_comments: &replica.comments,
            added_attachments: &replica.attachments,
            removed_attachments: &[],
            changed_fields: changed,
            conflicts: &[],
        }
    }

    fn outgoing_error(source: &str) -> RuleError {
        script(source)
            .run_outgoing(&sample_issue(), &CTX)
            .expect_err("the script must fail")
    }

    fn compile_error(source: &str) -> RuleError {
        match RuleScript::from_source(
            Path::new("test.rhai"),
            source,
            Tables::new(),
            RuleSettings::default(),
        ) {
            Ok(_) => panic!("the script must not compile"),
            Err(e) => e,
        }
    }

    #[test]
    fn scripts_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<RuleScript>();
    }

    #[test]
    fn default_outgoing_shares_everything_but_internal_comments() {
        let issue = sample_issue();
        let replica = template("outgoing.rhai")
            .run_outgoing(&issue, &CTX)
            .unwrap()
            .unwrap();
        let mut expected = Replica::from_issue("support", &issue);
        expected.comments.retain(|c| c.id == "881");
        assert_eq!(replica, expected);
        assert_eq!(replica.fields["Customer"], Value::from("ACME"));
    }

    #[test]
    fn a_resolution_is_sent_only_to_peers_that_read_format_2() {
        let mut issue = sample_issue();
        issue.resolution = Some("Fixed".into());
        let rule = script("replica.resolution = issue.resolution;");
        let new_peer = OutgoingContext {
            format: crate::replica::Format::V2,
            ..CTX
        };
        let sent = rule.run_outgoing(&issue, &new_peer).unwrap().unwrap();
        assert_eq!(sent.resolution.as_deref(), Some("Fixed"));
        assert!(sent.to_yaml().starts_with("ferry: 2\n"));
        let kept = rule.run_outgoing(&issue, &CTX).unwrap().unwrap();
        assert_eq!(kept.resolution, None);
        assert!(!kept.to_yaml().contains("resolution"));
        assert!(kept.to_yaml().starts_with("ferry: 1\n"));
    }

    /// The gate open: a peer that reads the keys newer than the first exchange
    /// format. Issues 1 and 3 are shared with it, 2 is not.
    fn ctx_newer(shared: &BTreeSet<String>) -> OutgoingContext<'_> {
        OutgoingContext {
            site: "support",
            peer: "engineering",
            format: crate::replica::Format::V2,
            shared,
        }
    }

    fn related(id: &str, key: &str) -> crate::model::RelatedIssue {
        crate::model::RelatedIssue {
            id: id.into(),
            key: key.into(),
            origin: None,
        }
    }

    /// The sample issue blocking SUP-1 (shared), duplicating SUP-2 (not
    /// shared), a sub-task of SUP-3 (shared).
    fn related_issue() -> (Issue, BTreeSet<String>) {
        use crate::model::{IssueLink, LinkDirection};
        let mut issue = sample_issue();
        issue.links = vec![
            IssueLink {
                link_type: "Blocks".into(),
                direction: LinkDirection::Outward,
                issue: related("1", "SUP-1"),
            },
            IssueLink {
                link_type: "Duplicate".into(),
                direction: LinkDirection::Inward,
                issue: related("2", "SUP-2"),
            },
        ];
        issue.parent = Some(related("3", "SUP-3"));
        (issue, ["1".to_string(), "3".to_string()].into())
    }

    fn origin(site: &str, id: &str) -> Origin {
        Origin {
            site: site.into(),
            id: id.into(),
        }
    }

    #[test]
    fn relations_travel_to_shared_issues_once_the_peer_reads_them() {
        let (issue, shared) = related_issue();
        let open = script("")
            .run_outgoing(&issue, &ctx_newer(&shared))
            .unwrap()
            .unwrap();
        assert_eq!(
            open.links,
            [ReplicaLink {
                link_type: "Blocks".into(),
                direction: crate::model::LinkDirection::Outward,
                issue: origin("support", "1"),
            }]
        );
        assert_eq!(open.parent, Some(origin("support", "3")));
        // The gate closed (a peer on the first exchange format): nothing.
        let closed = script("").run_outgoing(&issue, &CTX).unwrap().unwrap();
        assert!(closed.links.is_empty() && closed.parent.is_none());
        assert_eq!(closed.to_yaml(), {
            let mut plain = sample_issue();
            plain.comments.retain(|c| !c.internal);
            Replica::from_issue("support", &plain).to_yaml()
        });
    }

    #[test]
    fn the_rule_sees_every_relation_and_may_drop_one_or_send_text() {
        let (issue, shared) = related_issue();
        let rule = script(
            "if issue.links.len() != 2 || issue.links[1].with_peer || !issue.links[0].with_peer
                 || !issue.parent.with_peer || issue.subtasks != [] || replica.links.len() != 1 {
                 throw `unexpected: ${issue.links} ${replica.links}`;
             }
             for l in issue.links {
                 replica.description += \"\\n\" + `${l.type} ${l.direction} ${l.issue.key}`;
             }
             replica.links = replica.links.filter(|l| l.type != \"Blocks\");
             replica.parent = ();",
        );
        let replica = rule
            .run_outgoing(&issue, &ctx_newer(&shared))
            .unwrap()
            .unwrap();
        assert!(replica.links.is_empty() && replica.parent.is_none());
        let description = replica.description.unwrap();
        assert!(
            description.ends_with("\nBlocks outward SUP-1\nDuplicate inward SUP-2"),
            "{description:?}"
        );
        let sample = template("outgoing.rhai");
        let default = sample
            .run_outgoing(&issue, &ctx_newer(&shared))
            .unwrap()
            .unwrap();
        assert_eq!(default.links.len(), 1);
        let text = RuleScript::load(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("samples/rules/links-as-text-outgoing.rhai"),
            Tables::new(),
            RuleSettings::default(),
        )
        .unwrap();
        let all: BTreeSet<String> = ["1", "2", "3"].map(String::from).into();
        let replica = text
            .run_outgoing(&issue, &ctx_newer(&all))
            .unwrap()
            .unwrap();
        assert_eq!(replica.links.len(), 1, "{:?}", replica.links);
        assert!(
            replica
                .description
                .unwrap()
                .ends_with("\n\nDuplicate links at support: inward SUP-2")
        );
    }

    #[test]
    fn a_rule_cannot_send_a_relation_to_an_issue_the_peer_lacks() {
        let (issue, shared) = related_issue();
        let replica = script(
            "replica.links.push(#{type: \"Relates\", direction: \"outward\",
                                 issue: #{site: \"support\", id: \"2\"}});
             replica.links.push(#{type: \"Relates\", direction: \"outward\",
                                 issue: #{site: \"elsewhere\", id: \"9\"}});
             replica.links[0].type = \"Precedes\";
             replica.parent = #{site: \"support\", id: \"2\"};",
        )
        .run_outgoing(&issue, &ctx_newer(&shared))
        .unwrap()
        .unwrap();
        // Retyping a shared link is the rule's to do; naming another issue is not.
        assert_eq!(replica.links.len(), 1);
        assert_eq!(replica.links[0].link_type, "Precedes");
        assert_eq!(replica.parent, None);
    }

    #[test]
    fn incoming_links_and_parent_start_as_the_peer_s_and_map_through_the_rule() {
        use crate::model::LinkDirection;
        let mut replica = peer_replica();
        let link = |link_type: &str, id: &str| ReplicaLink {
            link_type: link_type.into(),
            direction: LinkDirection::Inward,
            issue: origin("engineering", id),
        };
        replica.links = vec![
            link("blocks", "1"),
            link("Cloners", "2"),
            link("Epic-ish", "3"),
        ];
        replica.parent = Some(origin("support", "10041"));
        let untouched = script("")
            .run_incoming(&incoming(&replica, None, None, &[]))
            .unwrap()
            .unwrap();
        replica.normalize();
        assert_eq!(untouched.links, replica.links);
        assert_eq!(untouched.parent, replica.parent);
        let mapped = template("incoming.rhai")
            .run_incoming(&incoming(&replica, None, None, &[]))
            .unwrap()
            .unwrap();
        let types: Vec<&str> = mapped.links.iter().map(|l| l.link_type.as_str()).collect();
        assert_eq!(types, ["Blocks", "Cloners", "Epic-ish"]);
        assert_eq!(mapped.parent, replica.parent);
        let none = script("links = []; parent = ();")
            .run_incoming(&incoming(&replica, None, None, &[]))
            .unwrap()
            .unwrap();
        assert!(none.links.is_empty() && none.parent.is_none());
        let bad = script("links[0].type = \"\";")
            .run_incoming(&incoming(&replica, None, None, &[]))
            .unwrap_err()
            .to_string();
        assert!(bad.contains("`links[0].type` is empty"), "{bad}");
        let typo = script("links[0].kind = \"x\";")
            .run_incoming(&incoming(&replica, None, None, &[]))
            .unwrap_err()
            .to_string();
        assert!(typo.contains("`links[0]"), "{typo}");
        assert!(typo.contains("unknown field `kind`"), "{typo}");
    }

    #[test]
    fn internal_comments_never_leave_whatever_the_rule_does() {
        let replica = script(
            "replica.comments = issue.comments;
             for i in 0..replica.comments.len() { replica.comments[i].internal = false; }
             replica.comments.push(#{id: \"999\", author: \"eve\", created: \"2026-11-21T00:00:00Z\",
                                    body: \"leak\", internal: true});",
        )
        .run_outgoing(&sample_issue(), &CTX)
        .unwrap()
        .unwrap();
        let ids: Vec<&str> = replica.comments.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["881"]);
    }

    #[test]
    fn outgoing_identity_cannot_be_forged() {
        let issue = sample_issue();
        let replica = script(
            "replica.id = \"1\"; replica.site = \"engineering\"; replica.key = \"X-1\";
             replica.project = \"X\"; replica.created = \"not a date\"; replica.ferry = 99;
             replica.origin = #{site: \"x\", id: \"y\"}; replica.deleted = true;
             replica.summary = \"Shared summary\";",
        )
        .run_outgoing(&issue, &CTX)
        .unwrap()
        .unwrap();
        assert_eq!(
            (replica.ferry, replica.site.as_str(), replica.id.as_str()),
            (1, "support", "10042")
        );
        assert_eq!(
            (replica.key.as_str(), replica.project.as_str()),
            ("SUP-42", "SUP")
        );
        assert_eq!(
            (replica.created, replica.updated),
            (issue.created, issue.updated)
        );
        assert_eq!((replica.origin, replica.deleted), (None, false));
        assert_eq!(replica.summary, "Shared summary");
    }

    /// Well-formed forgeries decode as they are (the fast path of
    /// `run_outgoing`); the identity is put back all the same.
    #[test]
    fn outgoing_identity_cannot_be_forged_with_well_formed_values() {
        let issue = sample_issue();
        let replica = script(
            "replica.id = \"1\"; replica.site = \"engineering\"; replica.key = \"X-1\";
             replica.project = \"X\"; replica.created = \"2001-01-01T00:00:00Z\";
             replica.updated = \"2001-01-01T00:00:00Z\"; replica.ferry = 99;
             replica.origin = #{site: \"x\", id: \"y\"}; replica.deleted = true;",
        )
        .run_outgoing(&issue, &CTX)
        .unwrap()
        .unwrap();
        let mut expected = Replica::from_issue("support", &issue);
        expected.comments.retain(|c| !c.internal);
        assert_eq!(replica, expected);
    }

    #[test]
    fn unit_replica_means_not_shared() {
        let shared = script("if issue.status == \"Open\" { replica = (); }")
            .run_outgoing(&sample_issue(), &CTX)
            .unwrap();
        assert_eq!(shared, None);
    }

    #[test]
    fn outgoing_scope_has_site_peer_and_normalises() {
        let replica = script(
            "replica.labels = [\"zeta\", site, peer, \"zeta\"]; replica.custom_keys.from = site;",
        )
        .run_outgoing(&sample_issue(), &CTX)
        .unwrap()
        .unwrap();
        assert_eq!(replica.labels, ["engineering", "support", "zeta"]);
        assert_eq!(replica.custom_keys["from"], Value::from("support"));
    }

    #[test]
    fn a_wrong_type_names_the_variable_and_field() {
        let err = outgoing_error("replica.comments[0].body = 5;");
        assert_eq!(err.line, None);
        assert!(
            err.message.contains("`replica.comments[0].body`"),
            "{}",
            err.message
        );
        let err = outgoing_error("replica.summary = [1];");
        assert!(err.message.contains("`replica.summary`"), "{}", err.message);
        let err = outgoing_error("replica.colour = \"red\";");
        assert!(err.message.contains("`replica.colour`"), "{}", err.message);
    }

    #[test]
    fn default_incoming_creates_a_new_issue() {
        let replica = peer_replica();
        let result = template("incoming.rhai")
            .run_incoming(&incoming(&replica, None, None, &[]))
            .unwrap()
            .unwrap();
        let issue = result.issue;
        assert_eq!(issue.project, "SUP");
        assert_eq!(issue.issue_type, "Bug");
        assert_eq!(issue.summary, "Printer on fire");
        assert_eq!(issue.status, "In Progress");
        assert_eq!(issue.priority.as_deref(), Some("High"));
        assert_eq!(issue.reporter.as_deref(), Some("ann"));
        assert_eq!(issue.assignee, None);
        assert!(issue.fields.is_empty());
        assert_eq!(issue.labels, ["customer", "escalate"]);
        assert_eq!(
            result.new_comments,
            [
                TargetComment {
                    author: "zoe".into(),
                    body: "Reproduced on firmware 2.1.".into(),
                    internal: false,
                    source: Some("901".into()),
                },
                TargetComment {
                    author: "raj".into(),
                    body: "Fix is in review.".into(),
                    internal: false,
                    source: Some("902".into()),
                },
            ]
        );
        assert!(!result.delete_issue);
    }

    #[test]
    fn default_incoming_updates_an_existing_issue() {
        let local = sample_issue();
        let previous = peer_replica();
        let mut replica = peer_replica();
        replica.summary = "Printer on fire again".into();
        replica.status = "Resolved".into();
        replica.labels = vec!["fixed".into()];
        replica.priority = Some("Low".into());
        replica.comments = vec![comment("903", "raj", "Released in 2.2.", false)];
        let changed = ["summary".to_string(), "status".to_string()];
        let result = template("incoming.rhai")
            .run_incoming(&incoming(&replica, Some(&previous), Some(&local), &changed))
            .unwrap()
            .unwrap();
        let issue = result.issue;
        assert_eq!(issue.summary, "Printer on fire again");
        assert_eq!(issue.status, "Resolved");
        assert_eq!(issue.labels, ["fixed"]);
        // Not taken on updates: the local values stay.
        assert_eq!(issue.priority.as_deref(), Some("High"));
        assert_eq!(issue.assignee.as_deref(), Some("kevin"));
        assert_eq!(issue.fields, local.fields);
        assert_eq!(result.new_comments.len(), 1);
        assert_eq!(result.new_comments[0].source.as_deref(), Some("903"));
    }

    #[test]
    fn default_incoming_keeps_local_status_when_unknown() {
        let local = sample_issue();
        let mut replica = peer_replica();
        replica.status = "Needs Triage".into();
        let result = template("incoming.rhai")
            .run_incoming(&incoming(&replica, None, Some(&local), &[]))
            .unwrap()
            .unwrap();
        assert_eq!(result.issue.status, "Open");
    }

    #[test]
    fn default_incoming_closes_on_deletion_with_one_note() {
        let local = sample_issue();
        let mut replica = peer_replica();
        replica.deleted = true;
        let result = template("incoming.rhai")
            .run_incoming(&incoming(&replica, None, Some(&local), &[]))
            .unwrap()
            .unwrap();
        assert_eq!(result.issue.status, "Closed");
        assert!(result.issue.labels.contains(&"peer-deleted".to_string()));
        assert!(!result.delete_issue);
        let note = &result.new_comments.last().unwrap();
        assert_eq!(note.source, None);
        assert!(note.body.contains("deleted its issue"), "{}", note.body);

        // Already deleted in the previous version: no second note.
        let again = template("incoming.rhai")
            .run_incoming(&incoming(&replica, Some(&replica), Some(&local), &[]))
            .unwrap()
            .unwrap();
        assert!(again.new_comments.iter().all(|c| c.source.is_some()));
    }

    #[test]
    fn incoming_sees_the_change_set() {
        let previous = peer_replica();
        let replica = peer_replica();
        let changed = ["status".to_string()];
        let result = script(
            "if changed_fields.contains(\"status\") && previous.status == replica.status
                 && !is_new && !deleted && site == \"support\" && peer == \"engineering\" {
                 issue.summary = \"seen\";
             }
             new_comments.push(comment_from(added_comments[1]));
             delete_issue = true;",
        )
        .run_incoming(&incoming(
            &replica,
            Some(&previous),
            Some(&sample_issue()),
            &changed,
        ))
        .unwrap()
        .unwrap();
        assert_eq!(result.issue.summary, "seen");
        assert_eq!(result.new_comments[0].body, "Fix is in review.");
        assert_eq!(result.new_comments[0].source.as_deref(), Some("902"));
        assert!(result.delete_issue);
    }

    #[test]
    fn unit_issue_skips_the_replica() {
        let replica = peer_replica();
        let result = script("if is_new { issue = (); }")
            .run_incoming(&incoming(&replica, None, None, &[]))
            .unwrap();
        assert_eq!(result, None);
    }

    #[test]
    fn new_comments_must_come_from_added_comments() {
        let replica = peer_replica();
        let run = |source: &str| {
            script(source)
                .run_incoming(&incoming(&replica, None, None, &[]))
                .expect_err("the script must fail")
                .message
        };
        let message = run("new_comments.push(#{author: \"x\", body: \"y\", source: \"42\"});");
        assert!(
            message.contains("`new_comments[0].source` is \"42\"") && message.contains("901, 902"),
            "{message}"
        );
        let message = run("new_comments.push(comment_from(added_comments[0]));
                           new_comments.push(comment_from(added_comments[0]));");
        assert!(message.contains("`new_comments[1].source`"), "{message}");
        let message = run("new_comments.push(#{author: \"x\", body: 7});");
        assert!(message.contains("new_comments[0]"), "{message}");
        let message = run("issue.asignee = \"x\";");
        assert!(message.contains("`issue.asignee`"), "{message}");
    }

    #[test]
    fn inputs_are_read_only() {
        let replica = peer_replica();
        let err = script("\nreplica.summary = \"x\";")
            .run_incoming(&incoming(&replica, None, None, &[]))
            .unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
    }

    #[test]
    fn helpers_map_and_look_up() {
        let tables = Tables::from([(
            "users".to_string(),
            serde_json::json!({"zoe": "z.kowalski", "raj": "r.patel"}),
        )]);
        let mut replica = peer_replica();
        replica.resolution = Some("Fixed".into());
        let result = RuleScript::from_source(
            Path::new("test.rhai"),
            "issue.assignee = lookup(\"users\", replica.assignee);
             issue.reporter = lookup(\"users\", replica.reporter, \"nobody\");
             issue.status = map_value(replica.status, #{\"In Progress\": \"Escalated\"}, \"?\");
             issue.priority = map_value((), #{}, \"Normal\");
             issue.resolution = map_value(replica.resolution, #{\"Fixed\": \"Done\"}, issue.resolution);
             issue.description = tables.users.raj;",
            tables,
            RuleSettings::default(),
        )
        .unwrap()
        .run_incoming(&incoming(&replica, None, None, &[]))
        .unwrap()
        .unwrap();
        assert_eq!(result.issue.assignee.as_deref(), Some("z.kowalski"));
        assert_eq!(result.issue.reporter.as_deref(), Some("nobody"));
        assert_eq!(result.issue.status, "Escalated");
        assert_eq!(result.issue.resolution.as_deref(), Some("Done"));
        assert_eq!(result.issue.priority.as_deref(), Some("Normal"));
        assert_eq!(result.issue.description.as_deref(), Some("r.patel"));
    }

    #[test]
    fn an_unknown_table_is_an_error() {
        let err = outgoing_error("\n  let x = lookup(\"usres\", \"ann\");");
        assert_eq!((err.line, err.column), (Some(2), Some(11)), "{err}");
        assert!(err.message.contains("no table \"usres\""), "{err}");
    }

    #[test]
    fn throw_gives_the_script_message() {
        let err = outgoing_error("throw \"no customer set\";");
        assert_eq!(err.to_string(), "test.rhai:1:1: no customer set");
    }

    #[test]
    fn an_endless_loop_hits_the_operations_limit() {
        let err = outgoing_error("let x = 0;\nloop {\n    x += 1;\n}");
        assert!(
            err.message.contains("too many operations (limit 1000000)"),
            "{err}"
        );
        assert!(err.line.is_some() && err.column.is_some(), "{err}");
    }

    #[test]
    fn endless_recursion_hits_the_call_limit() {
        // rhai reports the overflow at the outermost call.
        let err = outgoing_error("fn down(n) {\n    down(n + 1)\n}\ndown(0);");
        assert!(err.message.contains("nested too deeply (limit 32"), "{err}");
        assert_eq!((err.line, err.column), (Some(4), Some(1)), "{err}");
    }

    #[test]
    fn an_error_in_a_function_names_the_function_and_its_line() {
        let err = outgoing_error("fn half(x) {\n    x / 0\n}\nlet y = half(4);");
        assert!(err.message.contains("(in function `half`)"), "{err}");
        assert_eq!(err.line, Some(2), "{err}");
    }

    #[test]
    fn a_huge_string_hits_the_size_limit() {
        let err = outgoing_error("let s = \"x\";\nwhile true {\n    s += s;\n}");
        assert!(
            err.message
                .contains("string over the limit of 16777216 bytes"),
            "{err}"
        );
        assert_eq!(err.line, Some(3), "{err}");
    }

    #[test]
    fn a_huge_array_hits_the_size_limit() {
        let err = outgoing_error("let a = [];\na.pad(2000000, 0);");
        assert!(
            err.message.contains("over the limit of 1048576 items"),
            "{err}"
        );
    }

    #[test]
    fn one_value_may_hold_as_much_text_as_a_replica() {
        // Fifteen strings of 1 MiB in one list: 15 MiB of text in one value.
        let shared = script(
            "let s = \"x\";\nwhile s.len() < 1024 * 1024 { s += s; }\n\
             let all = [];\nfor i in 0..15 { all.push(s + i); }\n\
             replica.description = all[14];",
        )
        .run_outgoing(&sample_issue(), &CTX)
        .unwrap()
        .unwrap();
        assert!(shared.description.unwrap().len() > 1024 * 1024);
    }

    #[test]
    fn a_rule_over_its_memory_budget_is_stopped_naming_the_budget() {
        let source = "let s = \"x\";\nwhile s.len() < 1024 * 1024 { s += s; }\n\
                      let m = #{};\nfor i in 0..100 { m[\"k\" + i] = s + i; }";
        let small = RuleSettings { max_memory_mib: 16 };
        let err = RuleScript::from_source(Path::new("test.rhai"), source, Tables::new(), small)
            .unwrap()
            .run_outgoing(&sample_issue(), &CTX)
            .unwrap_err();
        assert_eq!(err.line, Some(4), "{err}");
        assert!(
            err.message.contains("memory budget of 16 MiB")
                && err.message.contains("rules.max_memory_mib"),
            "{err}"
        );
        // The default budget holds it (100 MiB).
        script(source).run_outgoing(&sample_issue(), &CTX).unwrap();
    }

    #[test]
    fn copying_a_value_over_and_over_hits_the_allocation_budget() {
        let source = "let s = \"x\";\nwhile s.len() < 1024 * 1024 { s += s; }\n\
                      for i in 0..200 { let t = s + i; }";
        let err = RuleScript::from_source(
            Path::new("test.rhai"),
            source,
            Tables::new(),
            RuleSettings { max_memory_mib: 16 },
        )
        .unwrap()
        .run_outgoing(&sample_issue(), &CTX)
        .unwrap_err();
        assert!(err.message.contains("more than 64 MiB in all"), "{err}");
    }

    #[test]
    fn a_value_put_inside_itself_is_stopped_quickly() {
        let started = std::time::Instant::now();
        let err = outgoing_error("let a = [];\nfor i in 0..100000 {\n    a = [a];\n}");
        assert!(
            err.message.contains("nests arrays or maps too deeply"),
            "{err}"
        );
        assert_eq!(err.line, Some(3), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn splitting_counts_the_pieces_before_making_them() {
        let mut issue = sample_issue();
        issue.description = Some("x\n".repeat(1_100_000));
        for call in [
            "split(\"\")",
            "split(\"\\n\")",
            "split('\\n')",
            "split_rev(\"\\n\")",
            "split()",
            "to_chars()",
        ] {
            let source = format!("let parts = issue.description.{call};");
            let err = script(&source).run_outgoing(&issue, &CTX).unwrap_err();
            assert!(
                err.message
                    .contains("pieces, over the limit of 1048576 items"),
                "{call}: {err}"
            );
        }
        // Otherwise they are rhai's.
        let replica = script(
            "let a = \"a,b,,c\".split(\",\");\n\
             let b = \"a,b,c\".split(\",\", 2);\n\
             let c = \"a b  c\".split();\n\
             let d = \"a-b-c\".split_rev('-', 2);\n\
             let e = \"ab\".split(\"\");\n\
             let f = \"\".split(\",\");\n\
             replica.fields.parts = [a, b, c, d, e, f, \"héllo\".to_chars()];",
        )
        .run_outgoing(&sample_issue(), &CTX)
        .unwrap()
        .unwrap();
        assert_eq!(
            serde_json::to_value(&replica.fields["parts"]).unwrap(),
            serde_json::json!([
                ["a", "b", "", "c"],
                ["a", "b,c"],
                ["a", "b", "c"],
                ["c", "a-b"],
                ["", "a", "b", ""],
                [""],
                ["h", "é", "l", "l", "o"]
            ])
        );
    }

    #[test]
    fn values_left_for_ferry_nest_at_most_the_depth_limit() {
        let deep = |depth: usize, target: &str| {
            format!("let v = 1;\nfor i in 0..{depth} {{ v = [v]; }}\n{target} = v;")
        };
        let fits = MAX_VALUE_DEPTH - 2; // replica, fields, then the value's own
        script(&deep(fits, "replica.fields.deep"))
            .run_outgoing(&sample_issue(), &CTX)
            .unwrap();
        let err = outgoing_error(&deep(fits + 1, "replica.fields.deep"));
        assert_eq!(
            err.to_string(),
            "test.rhai: after the script ran: `replica.fields.deep` holds arrays or maps nested \
             deeper than 16 levels, the most a value a rule leaves for ferry may have"
        );
        let replica = peer_replica();
        let err = script(&deep(40, "new_comments"))
            .run_incoming(&incoming(&replica, None, None, &[]))
            .unwrap_err();
        assert!(err.message.contains("`new_comments`"), "{err}");
    }

    #[test]
    fn modules_cannot_be_imported() {
        let err = outgoing_error("import \"x\" as x;");
        assert!(err.message.contains("cannot import"), "{err}");
        assert_eq!(err.line, Some(1), "{err}");
    }

    #[test]
    fn eval_is_disabled() {
        let err = compile_error("let x = eval(\"40 + 2\");");
        assert_eq!(err.line, Some(1), "{err}");
    }

    #[test]
    fn a_syntax_error_names_path_line_and_column() {
        let err = compile_error("let x = 1;\nlet y = ;\n");
        assert_eq!(err.script, Path::new("test.rhai"));
        assert_eq!((err.line, err.column), (Some(2), Some(9)), "{err}");
        assert!(err.to_string().starts_with("test.rhai:2:9: "), "{err}");
    }

    #[test]
    fn a_variable_of_the_other_direction_is_explained() {
        let err = outgoing_error("\nlet x = added_comments;");
        assert_eq!(err.line, Some(2), "{err}");
        assert!(
            err.message.contains(
                "`added_comments` does not exist in outgoing scripts, which see: issue, replica, site, peer, tables"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_misspelt_variable_is_a_compile_error() {
        let err = compile_error("\nreplica.summary = isue.summary;");
        assert_eq!(err.line, Some(2), "{err}");
        assert!(err.message.contains("isue"), "{err}");
    }

    #[test]
    fn a_runtime_type_error_names_line_and_column() {
        let err = outgoing_error("let n = 1;\nlet s = \"a\" - n;");
        assert_eq!((err.line, err.column), (Some(2), Some(13)), "{err}");
    }

    #[test]
    fn a_missing_script_names_its_path() {
        let err = RuleScript::load(
            Path::new("/nonexistent/outgoing.rhai"),
            Tables::new(),
            RuleSettings::default(),
        )
        .err()
        .unwrap();
        assert!(
            err.to_string()
                .starts_with("/nonexistent/outgoing.rhai: cannot read"),
            "{err}"
        );
    }

    #[test]
    fn tables_load_from_yaml_files() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_tables(&dir.path().join("missing")).unwrap().is_empty());
        std::fs::write(
            dir.path().join("users.yaml"),
            "ann: anna\n\"Jane Doe\": jdoe\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("empty.yaml"), "# nothing yet\n").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a table").unwrap();
        let tables = load_tables(dir.path()).unwrap();
        assert_eq!(tables.keys().collect::<Vec<_>>(), ["empty", "users"]);
        assert_eq!(tables["users"]["Jane Doe"], Value::from("jdoe"));

        std::fs::write(dir.path().join("bad.yaml"), "ann: anna\n  bob: [\n").unwrap();
        let err = load_tables(dir.path()).unwrap_err();
        assert!(err.script.ends_with("bad.yaml"), "{err}");
        assert!(err.line.is_some() && err.column.is_some(), "{err}");
        assert!(!err.message.contains(" at line "), "{err}");

        std::fs::write(dir.path().join("bad.yaml"), "- a\n- b\n").unwrap();
        let err = load_tables(dir.path()).unwrap_err();
        assert!(err.message.contains("must be a YAML mapping"), "{err}");
    }

    #[test]
    fn template_tables_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/tables");
        assert_eq!(load_tables(&dir).unwrap()["users"], serde_json::json!({}));
    }

    #[test]
    fn every_sample_compiles_and_runs() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/rules");
        let tables = load_tables(&dir.join("tables")).unwrap();
        assert!(tables.contains_key("users"));
        let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "rhai"))
            .collect();
        names.sort();
        assert_eq!(names.len(), 5);

        let issue = sample_issue();
        let mut other = sample_issue();
        other.components = vec!["scanning".into()];
        let replica = peer_replica();
        for path in names {
            let script = RuleScript::load(&path, tables.clone(), RuleSettings::default()).unwrap();
            let name = path.file_name().unwrap().to_str().unwrap();
            if name.ends_with("-outgoing.rhai") {
                let shared = script.run_outgoing(&issue, &CTX).unwrap();
                assert!(shared.is_some(), "{name}");
                script.run_outgoing(&other, &CTX).unwrap();
            } else {
                script
                    .run_incoming(&incoming(&replica, None, None, &[]))
                    .unwrap();
                script
                    .run_incoming(&incoming(&replica, Some(&replica), Some(&issue), &[]))
                    .unwrap()
                    .unwrap();
            }
        }
    }

    #[test]
    fn samples_do_what_they_say() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/rules");
        let tables = load_tables(&dir.join("tables")).unwrap();
        let load = |name: &str| {
            RuleScript::load(&dir.join(name), tables.clone(), RuleSettings::default()).unwrap()
        };
        let issue = sample_issue();

        let replica = load("drop-custom-field-outgoing.rhai")
            .run_outgoing(&issue, &CTX)
            .unwrap()
            .unwrap();
        assert!(!replica.fields.contains_key("Customer") && !replica.fields.contains_key("Cost"));
        assert!(replica.fields.contains_key("Severity"));

        let one = load("one-component-outgoing.rhai");
        assert!(one.run_outgoing(&issue, &CTX).unwrap().is_some());
        let mut other = sample_issue();
        other.components = vec!["scanning".into()];
        assert_eq!(one.run_outgoing(&other, &CTX).unwrap(), None);

        let peer = peer_replica();
        let result = load("status-mapping-incoming.rhai")
            .run_incoming(&incoming(&peer, None, Some(&issue), &[]))
            .unwrap()
            .unwrap();
        assert_eq!(result.issue.status, "Escalated");

        let result = load("rewrite-users-incoming.rhai")
            .run_incoming(&incoming(&peer, None, None, &[]))
            .unwrap()
            .unwrap();
        assert_eq!(result.issue.assignee.as_deref(), Some("z.kowalski"));
        assert_eq!(result.new_comments[0].author, "z.kowalski");
    }
}
