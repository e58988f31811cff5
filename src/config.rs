//! Site configuration: `ferry.yaml` and one file per connection.
//!
//! Raw YAML is turned into a checked [`Config`] once, before anything touches git,
//! SQLite or the network (ripgrep's LowArgs → HiArgs): a bad query or a typo in a
//! key is a configuration error (exit 2) at load time, naming file, line and column,
//! not a failure at 3 a.m. halfway through a run.
//!
//! Connections live in `connections/<peer>.yaml`, one file each, rather than in
//! `ferry.yaml`: `ferry connection add` then never rewrites a file an admin edited
//! by hand (serde would drop their comments), and configuration management can
//! drop in one file per peer. E-mail notifications live in an optional
//! `notify.yaml` for the same reason (see [`crate::notify`]).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ledger::RetryPolicy;
use crate::maintenance::Settings as MaintenanceSettings;
use crate::notify::{NotifyConfig, NotifySettings};
use crate::query::Query;
use crate::replica::is_plain_name;
use crate::rules::RuleSettings;
use crate::signing::{KEY_FILE, SignaturePolicy, Trust, trust_file};

/// Name of the site configuration file.
pub const CONFIG_FILE: &str = "ferry.yaml";
/// Folder holding one YAML file per connection.
pub const CONNECTIONS_DIR: &str = "connections";
/// Optional file of e-mail notification settings, beside `ferry.yaml`.
pub const NOTIFY_FILE: &str = "notify.yaml";

pub use crate::files::{ConfigError, write_atomic};

/// The tracker a site talks to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum TrackerConfig {
    /// The embedded SQLite tracker.
    Local {
        /// Database file, relative to the site folder.
        path: PathBuf,
    },
    /// A Redmine server, through its REST API (see docs/redmine.md).
    Redmine(crate::tracker::redmine::RedmineConfig),
    /// A Jira Cloud or Data Center project (credentials from the environment).
    Jira(crate::tracker::jira::JiraConfig),
}

/// `ferry.yaml` as written on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// This site's name: it names its branches in the exchange repo.
    pub site: String,
    /// The tracker connector.
    pub tracker: TrackerConfig,
    /// State folder (ledger, exchange clone, lock), relative to the site folder.
    #[serde(default = "default_state_dir")]
    pub state: PathBuf,
    /// User name ferry acts as in the tracker when the incoming rule names nobody.
    #[serde(default = "default_sync_user")]
    pub sync_user: String,
    /// This site's SSH ed25519 signing key (OpenSSH private key file, relative to
    /// the site folder); `<state>/signing_key`, made by `ferry init`, when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<PathBuf>,
    /// How failing imports are retried before they are parked for an operator.
    #[serde(default, skip_serializing_if = "is_default_retry")]
    pub retry: RetryPolicy,
    /// The budget of every rule run (see [`crate::rules`]).
    #[serde(default, skip_serializing_if = "RuleSettings::is_default")]
    pub rules: RuleSettings,
    /// When the exchange clone and the folder channels are compacted (see
    /// [`crate::maintenance`]).
    #[serde(default, skip_serializing_if = "MaintenanceSettings::is_default")]
    pub maintenance: MaintenanceSettings,
}

fn is_default_retry(policy: &RetryPolicy) -> bool {
    *policy == RetryPolicy::default()
}

fn default_state_dir() -> PathBuf {
    PathBuf::from(".ferry")
}

fn default_sync_user() -> String {
    "ferry".into()
}

/// Which way issues flow on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Export and import.
    Both,
    /// Export only.
    Out,
    /// Import only.
    In,
}

impl Direction {
    /// Whether this site exports on the connection.
    pub fn exports(self) -> bool {
        matches!(self, Direction::Both | Direction::Out)
    }
    /// Whether this site imports on the connection.
    pub fn imports(self) -> bool {
        matches!(self, Direction::Both | Direction::In)
    }
}

/// When a connection takes part in sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SyncMethod {
    /// Part of every `ferry sync`.
    Auto,
    /// Only when a command names the connection.
    Manual,
    /// Never.
    Disabled,
}

/// `connections/<peer>.yaml` as written on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionFile {
    /// How commits travel: any git URL or path of the intermediate repository, or
    /// bundle folders (see [`ChannelSetting`]).
    pub channel: ChannelSetting,
    /// Which way issues flow.
    #[serde(default = "default_direction")]
    pub direction: Direction,
    /// When the connection syncs.
    #[serde(default = "default_method")]
    pub method: SyncMethod,
    /// Local project key → the peer's project key.
    pub projects: BTreeMap<String, String>,
    /// Which local issues start being shared (see `ferry help query`); empty means
    /// every issue of the mapped projects.
    #[serde(default)]
    pub query: String,
    /// Outgoing rule script, relative to the site folder.
    #[serde(default = "default_outgoing")]
    pub outgoing: PathBuf,
    /// Incoming rule script, relative to the site folder.
    #[serde(default = "default_incoming")]
    pub incoming: PathBuf,
    /// `required` (the default): every incoming commit must be signed by a key in
    /// `connections/<peer>.allowed_signers`; `off`: nothing is checked (labs only).
    #[serde(default)]
    pub signatures: SignaturePolicy,
    /// Raise a connection error when nothing new has arrived from the peer for
    /// this many hours: silence is how a broken air-gapped link looks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_after_hours: Option<u32>,
    /// What to do when both sites changed the same field since the last exchange.
    #[serde(default, skip_serializing_if = "ConflictSettings::is_default")]
    pub conflicts: ConflictSettings,
    /// Whether a person must approve the peer's commits before they are imported.
    #[serde(default, skip_serializing_if = "ReviewSettings::is_default")]
    pub review: ReviewSettings,
    /// Whether a person must release this site's commits before they leave.
    #[serde(default, skip_serializing_if = "ReleaseSettings::is_default")]
    pub release: ReleaseSettings,
    /// Limits on the attachments this site sends.
    #[serde(default, skip_serializing_if = "AttachmentSettings::is_default")]
    pub attachments: AttachmentSettings,
}

/// `attachments:` of a connection file.
///
/// ```yaml
/// attachments:
///   max_bytes: 20000000
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachmentSettings {
    /// Attachments larger than this are not sent (the replica leaves them out and
    /// the export log says so); no limit when absent. The outgoing rule can drop
    /// attachments on any other condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
}

impl AttachmentSettings {
    fn is_default(&self) -> bool {
        *self == AttachmentSettings::default()
    }
}

/// `review:` of a connection file.
///
/// ```yaml
/// review:
///   required: true
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewSettings {
    /// Import stops at the last commit approved with `ferry review approve`.
    #[serde(default)]
    pub required: bool,
}

impl ReviewSettings {
    fn is_default(&self) -> bool {
        *self == ReviewSettings::default()
    }
}

/// `release:` of a connection file.
///
/// ```yaml
/// release:
///   required: true
///   acks: auto
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseSettings {
    /// Exports are committed here but leave (push, bundle) only up to the last
    /// commit released with `ferry release approve`.
    #[serde(default)]
    pub required: bool,
    /// Whether a commit that carries only the acknowledgement of the peer's
    /// commits (`site.yaml`) leaves at once (`auto`) or waits for a release
    /// too (`review`).
    #[serde(default)]
    pub acks: AckRelease,
}

impl ReleaseSettings {
    fn is_default(&self) -> bool {
        *self == ReleaseSettings::default()
    }
}

/// How commits that carry only an acknowledgement are released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckRelease {
    /// At once: they hold no tracker data, and holding them would make the
    /// peer's bundles pile up and its review wait for this site's release.
    #[default]
    Auto,
    /// Like any commit, for sites that count the timing of acknowledgements
    /// as data.
    Review,
}

/// How a conflict on one field is settled: both sites changed it since the last
/// exchange, to different values. See [`crate::engine::conflict`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConflictPolicy {
    /// Park the replica as an issue-level error until an operator makes the two
    /// sites agree (or picks another policy); nothing of it is applied meanwhile.
    Error,
    /// Keep this site's value.
    Local,
    /// Take the peer's value.
    Remote,
    /// The value changed last wins; equal times go to the site whose name sorts
    /// first. The default: both sites decide alike, so they converge without an
    /// operator, and no edit is lost to a stale replica.
    #[default]
    Newest,
    /// The incoming rule decides: it runs again with `conflicts` (field, base,
    /// local, remote) and what it leaves in `issue` for that field is applied.
    Rule,
}

/// `conflicts:` of a connection file: a default policy and per-field exceptions.
///
/// ```yaml
/// conflicts:
///   default: newest
///   fields: {status: error, fields.Customer: local}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConflictSettings {
    /// The policy of every field not listed in `fields`.
    #[serde(default)]
    pub default: ConflictPolicy,
    /// Per-field policies: `type`, `summary`, `description`, `status`, `priority`,
    /// `assignee`, `reporter`, `labels`, `components`, or `fields.<Name>` for a
    /// custom field.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, ConflictPolicy>,
}

/// The issue fields a conflict policy can name (custom fields are `fields.<Name>`).
pub const CONFLICT_FIELDS: &[&str] = &[
    "type",
    "summary",
    "description",
    "status",
    "priority",
    "resolution",
    "assignee",
    "reporter",
    "labels",
    "components",
];

impl ConflictPolicy {
    /// The name as written in a connection file.
    pub fn name(self) -> &'static str {
        match self {
            ConflictPolicy::Error => "error",
            ConflictPolicy::Local => "local",
            ConflictPolicy::Remote => "remote",
            ConflictPolicy::Newest => "newest",
            ConflictPolicy::Rule => "rule",
        }
    }
}

impl ConflictSettings {
    fn is_default(&self) -> bool {
        *self == ConflictSettings::default()
    }

    /// The policy for one field.
    pub fn policy(&self, field: &str) -> ConflictPolicy {
        self.fields.get(field).copied().unwrap_or(self.default)
    }
}

/// A connection's `channel:` setting.
///
/// A string is the intermediate git repository (any git URL, or a path relative
/// to the site folder), as before. A mapping is an air-gapped bundle channel:
///
/// ```yaml
/// channel:
///   outbox: /media/usb/support-to-engineering   # ferry writes bundles here
///   inbox: /media/usb/engineering-to-support    # and imports the peer's from here
///   max_bytes: 268435456                        # optional, refuses larger bundles
/// ```
///
/// Two shapes under one key, rather than a second key beside `channel`, so a
/// connection can never name both kinds at once.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ChannelSetting {
    /// The intermediate git repository.
    Git(String),
    /// Bundle files carried between an outbox and an inbox folder.
    Bundles(BundleSettings),
}

/// The folders of a bundle channel, relative to the site folder unless absolute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleSettings {
    /// Where `ferry sync` writes this site's bundles for the peer.
    pub outbox: PathBuf,
    /// Where the peer's bundles arrive; processed ones move to `archive/` below
    /// it, refused ones to `rejected/` with a reason file.
    pub inbox: PathBuf,
    /// Bundles larger than this are refused unread (default
    /// [`DEFAULT_MAX_BUNDLE_BYTES`]).
    #[serde(default = "default_max_bundle_bytes")]
    pub max_bytes: u64,
    /// Encrypt bundles (age) to the peer's signing keys this connection trusts,
    /// written as `.bundle.age` files; incoming ones are opened with this site's
    /// signing key. No second set of keys to exchange.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypt: bool,
}

/// The default size limit of an incoming bundle: 1 GiB.
pub const DEFAULT_MAX_BUNDLE_BYTES: u64 = 1 << 30;

fn default_max_bundle_bytes() -> u64 {
    DEFAULT_MAX_BUNDLE_BYTES
}

impl<'de> Deserialize<'de> for ChannelSetting {
    /// A string or a mapping, each with its own error messages: serde's
    /// `untagged` would only say that "data did not match any variant".
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ChannelSetting;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a git URL or path, or a mapping with `outbox` and `inbox` folders")
            }
            fn visit_str<E: serde::de::Error>(self, url: &str) -> Result<ChannelSetting, E> {
                Ok(ChannelSetting::Git(url.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<ChannelSetting, A::Error> {
                BundleSettings::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(ChannelSetting::Bundles)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl std::fmt::Display for ChannelSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChannelSetting::Git(url) => f.write_str(url),
            ChannelSetting::Bundles(b) => write!(
                f,
                "bundles (outbox {}, inbox {})",
                b.outbox.display(),
                b.inbox.display()
            ),
        }
    }
}

fn default_direction() -> Direction {
    Direction::Both
}
fn default_method() -> SyncMethod {
    SyncMethod::Auto
}
fn default_outgoing() -> PathBuf {
    PathBuf::from("rules/outgoing.rhai")
}
fn default_incoming() -> PathBuf {
    PathBuf::from("rules/incoming.rhai")
}

/// A checked connection.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The peer site's name.
    pub peer: String,
    /// The file it was loaded from.
    pub file: PathBuf,
    /// The settings as written.
    pub settings: ConnectionFile,
    /// The parsed trigger query.
    pub query: Query,
    /// The peer keys this connection trusts (`connections/<peer>.allowed_signers`).
    pub trust: Trust,
}

impl Connection {
    /// The peer's project for a local one, if the connection maps it.
    pub fn remote_project(&self, local: &str) -> Option<&str> {
        self.settings.projects.get(local).map(String::as_str)
    }

    /// The local project for a peer's one, if the connection maps it.
    pub fn local_project(&self, remote: &str) -> Option<&str> {
        self.settings
            .projects
            .iter()
            .find(|(_, r)| r.as_str() == remote)
            .map(|(l, _)| l.as_str())
    }
}

/// A site's whole checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The site folder all relative paths are resolved against.
    pub root: PathBuf,
    /// `ferry.yaml`.
    pub site: SiteConfig,
    /// Connections by peer name.
    pub connections: BTreeMap<String, Connection>,
    /// E-mail notifications, when `notify.yaml` exists.
    pub notify: Option<NotifyConfig>,
}

impl Config {
    /// Loads and checks `ferry.yaml` and every connection file under `root`.
    pub fn load(root: &Path) -> Result<Config, ConfigError> {
        let root = root.to_path_buf();
        let site_path = root.join(CONFIG_FILE);
        let site: SiteConfig = read_yaml(&site_path)?;
        check_name(&site_path, "site", &site.site)?;
        if let TrackerConfig::Jira(jira) = &site.tracker
            && let Err(message) = jira.check()
        {
            return Err(ConfigError::Invalid {
                path: site_path,
                message,
            });
        }
        if site.rules.max_memory_mib == 0 {
            return Err(ConfigError::Invalid {
                path: site_path,
                message: format!(
                    "rules.max_memory_mib is 0: no rule could run; leave it out for the default \
                     of {} MiB",
                    crate::rules::DEFAULT_MEMORY_MIB
                ),
            });
        }
        let mut connections = BTreeMap::new();
        let dir = root.join(CONNECTIONS_DIR);
        if dir.is_dir() {
            let entries = fs::read_dir(&dir).map_err(|source| ConfigError::Read {
                path: dir.clone(),
                source,
            })?;
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
                .collect();
            files.sort();
            for file in files {
                let connection = load_connection(&file)?;
                if connection.peer == site.site {
                    return Err(ConfigError::Invalid {
                        path: file,
                        message: format!("a site cannot connect to itself ({})", site.site),
                    });
                }
                connections.insert(connection.peer.clone(), connection);
            }
        }
        let notify_path = root.join(NOTIFY_FILE);
        let notify = if notify_path.exists() {
            let settings: NotifySettings = read_yaml(&notify_path)?;
            Some(NotifyConfig::check(&notify_path, &settings)?)
        } else {
            None
        };
        Ok(Config {
            root,
            site,
            connections,
            notify,
        })
    }

    /// The site's name.
    pub fn site_name(&self) -> &str {
        &self.site.site
    }

    /// The state folder.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join(&self.site.state)
    }

    /// This site's signing key file: `signing_key` from `ferry.yaml`, or the one
    /// `ferry init` makes in the state folder.
    pub fn signing_key_path(&self) -> PathBuf {
        match &self.site.signing_key {
            Some(path) => self.resolve(path),
            None => self.state_dir().join(KEY_FILE),
        }
    }

    /// A path from the configuration, resolved against the site folder.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        self.root.join(path)
    }

    /// One connection by peer name, with a message listing the known ones.
    pub fn connection(&self, peer: &str) -> Result<&Connection, ConfigError> {
        self.connections.get(peer).ok_or_else(|| {
            let known: Vec<&str> = self.connections.keys().map(String::as_str).collect();
            ConfigError::Invalid {
                path: self.root.join(CONNECTIONS_DIR),
                message: if known.is_empty() {
                    format!("no connection to {peer:?}; add one with `ferry connection add {peer} --channel URL --project LOCAL=REMOTE`")
                } else {
                    format!("no connection to {peer:?}; known connections: {}", known.join(", "))
                },
            }
        })
    }
}

fn load_connection(file: &Path) -> Result<Connection, ConfigError> {
    let peer = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    check_name(file, "peer (file name)", &peer)?;
    let settings: ConnectionFile = read_yaml(file)?;
    let query = validate_connection(file, &settings)?;
    let trust = Trust::load(&peer, &trust_file(file), settings.signatures)?;
    Ok(Connection {
        peer,
        file: file.to_path_buf(),
        settings,
        query,
        trust,
    })
}

/// The URL schemes a git channel may use: libgit2's transports. Anything else
/// (a typo such as `htps://`) would reach libgit2 as a local path or fail with
/// a message about some unrelated part of the URL.
const CHANNEL_SCHEMES: &[&str] = &["file", "git", "ssh", "git+ssh", "ssh+git", "http", "https"];

/// Checks a connection's settings and parses its query; shared by loading and by
/// `ferry connection add`, so a bad query is refused before it is ever written.
pub fn validate_connection(file: &Path, settings: &ConnectionFile) -> Result<Query, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        path: file.to_path_buf(),
        message,
    };
    match &settings.channel {
        ChannelSetting::Git(url) if url.trim().is_empty() => {
            return Err(invalid("`channel` is empty".into()));
        }
        ChannelSetting::Bundles(b) => {
            if b.outbox.as_os_str().is_empty() || b.inbox.as_os_str().is_empty() {
                return Err(invalid(
                    "`channel` needs both an `outbox` and an `inbox` folder".into(),
                ));
            }
            if b.outbox == b.inbox {
                return Err(invalid(format!(
                    "`channel`: outbox and inbox are the same folder {}; this site would \
                     read its own bundles",
                    b.inbox.display()
                )));
            }
            if b.max_bytes == 0 {
                return Err(invalid("`channel`: `max_bytes` must be above 0".into()));
            }
        }
        ChannelSetting::Git(url) => {
            if let Some((scheme, _)) = url.split_once("://")
                && !CHANNEL_SCHEMES.contains(&scheme.to_ascii_lowercase().as_str())
            {
                return Err(invalid(format!(
                    "`channel: {url}`: ferry does not know the scheme {scheme:?}; a channel is \
                     a path to a bare repository, or a URL starting with {}",
                    CHANNEL_SCHEMES
                        .iter()
                        .map(|s| format!("{s}://"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
    }
    if settings.projects.is_empty() {
        return Err(invalid(
            "`projects` maps no project; add at least one LOCAL: REMOTE pair".into(),
        ));
    }
    for field in settings.conflicts.fields.keys() {
        let custom = field
            .strip_prefix("fields.")
            .is_some_and(|name| !name.is_empty());
        if !custom && !CONFLICT_FIELDS.contains(&field.as_str()) {
            return Err(invalid(format!(
                "`conflicts.fields` names {field:?}, which is not an issue field; use one of {}, or fields.<Name> for a custom field",
                CONFLICT_FIELDS.join(", ")
            )));
        }
    }
    let mut remotes = std::collections::BTreeSet::new();
    for (local, remote) in &settings.projects {
        for key in [local, remote] {
            if !is_plain_name(key) {
                return Err(invalid(format!("{key:?} is not a valid project key")));
            }
        }
        if !remotes.insert(remote) {
            return Err(invalid(format!(
                "the peer's project {remote} is mapped twice; each remote project maps to one local project"
            )));
        }
    }
    Query::parse(&settings.query).map_err(|e| {
        let rendered = e.render(&settings.query);
        invalid(format!("bad query\n  {}", rendered.replace('\n', "\n  ")))
    })
}

fn check_name(path: &Path, what: &str, name: &str) -> Result<(), ConfigError> {
    if is_plain_name(name) {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            message: format!(
                "{what} {name:?} is not a valid name: use letters, digits, '-', '_' and '.', not starting with '.'"
            ),
        })
    }
}

fn read_yaml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_yaml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<ConnectionFile, String> {
        serde_yaml::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn a_channel_is_a_url_or_bundle_folders() {
        let git = parse("channel: ../exchange.git\nprojects: {SUP: ENG}\n").unwrap();
        assert_eq!(git.channel, ChannelSetting::Git("../exchange.git".into()));
        let bundles =
            parse("channel:\n  outbox: usb/out\n  inbox: usb/in\nprojects: {SUP: ENG}\n").unwrap();
        assert_eq!(
            bundles.channel,
            ChannelSetting::Bundles(BundleSettings {
                outbox: "usb/out".into(),
                inbox: "usb/in".into(),
                max_bytes: DEFAULT_MAX_BUNDLE_BYTES,
                encrypt: false,
            })
        );
        assert_eq!(
            bundles.channel.to_string(),
            "bundles (outbox usb/out, inbox usb/in)"
        );
        // What `connection add` writes reads back the same.
        let written = serde_yaml::to_string(&bundles).unwrap();
        assert_eq!(parse(&written).unwrap(), bundles);
    }

    #[test]
    fn a_channel_url_with_an_unknown_scheme_is_refused_naming_it() {
        let file = Path::new("connections/eng.yaml");
        for url in ["htps://host/x.git", "sftp://host/x.git"] {
            let settings = parse(&format!("channel: {url}\nprojects: {{SUP: ENG}}\n")).unwrap();
            let e = validate_connection(file, &settings)
                .unwrap_err()
                .to_string();
            let scheme = url.split_once("://").unwrap().0;
            assert!(e.contains(&format!("scheme {scheme:?}")), "{e}");
            assert!(
                e.contains("https://") && e.contains("connections/eng.yaml"),
                "{e}"
            );
        }
        for url in [
            "HTTPS://host/x.git",
            "ssh://git@host/x.git",
            "git@host:x.git",
            "../ex.git",
        ] {
            let settings = parse(&format!("channel: {url}\nprojects: {{SUP: ENG}}\n")).unwrap();
            validate_connection(file, &settings).unwrap();
        }
    }

    #[test]
    fn a_bad_channel_says_what_is_wrong_and_where() {
        let typo = parse("channel:\n  outbox: a\n  inbx: b\nprojects: {SUP: ENG}\n").unwrap_err();
        assert!(typo.contains("unknown field `inbx`"), "{typo}");
        assert!(typo.contains("line 3"), "{typo}");
        let missing = parse("channel:\n  outbox: a\nprojects: {SUP: ENG}\n").unwrap_err();
        assert!(missing.contains("missing field `inbox`"), "{missing}");
        let list = parse("channel: [a, b]\nprojects: {SUP: ENG}\n").unwrap_err();
        assert!(
            list.contains("a git URL or path, or a mapping with `outbox` and `inbox`"),
            "{list}"
        );
        let same = parse("channel: {outbox: usb, inbox: usb}\nprojects: {SUP: ENG}\n").unwrap();
        let err = validate_connection(Path::new("c.yaml"), &same).unwrap_err();
        assert!(
            err.to_string().contains("would read its own bundles"),
            "{err}"
        );
    }

    #[test]
    fn the_rules_budget_is_a_setting_and_never_zero() {
        let dir = tempfile::tempdir().unwrap();
        let site = "site: support\ntracker: {kind: local, path: tracker.db}\n";
        fs::write(dir.path().join(CONFIG_FILE), site).unwrap();
        let config = Config::load(dir.path()).unwrap();
        assert_eq!(config.site.rules.max_memory_mib, 256);
        fs::write(
            dir.path().join(CONFIG_FILE),
            format!("{site}rules:\n  max_memory_mib: 1024\n"),
        )
        .unwrap();
        let config = Config::load(dir.path()).unwrap();
        assert_eq!(config.site.rules.max_memory_mib, 1024);
        fs::write(
            dir.path().join(CONFIG_FILE),
            format!("{site}rules:\n  max_memory_mib: 0\n"),
        )
        .unwrap();
        let err = Config::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("rules.max_memory_mib is 0"), "{err}");
    }
}
