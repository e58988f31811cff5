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
mod sandbox;

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
        let engine = sandbox::sandboxed_engine(path, Arc::clone(&tables), settings);
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
mod tests;
