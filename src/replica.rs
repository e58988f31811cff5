//! Replicas: the YAML documents in the exchange repo, and where they live.
//!
//! A replica is one issue *as its owner chose to share it*, after the outgoing rule.
//! The format is the contract between two sites that may run different ferry
//! versions, so it is a struct of its own rather than a serialisation of
//! [`Issue`]: the internal model may grow, the wire format changes only with
//! [`Format`]. Serialisation is deterministic (fixed key order, sorted
//! lists, UTC timestamps in whole seconds), so the same issue gives the same bytes
//! on every machine and git stores an unchanged issue as the same blob.
//!
//! Two sites of a pair may run different ferry versions for a while, so each
//! writes its branch in the newest [`Format`] both read: every `site.yaml`
//! announces the newest format its writer reads, and a site moves its branch to
//! a newer format (in one commit) only once the peer has announced it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{
    Attachment, Comment, FieldValue, Issue, IssueLink, LinkDirection, Origin, RelatedIssue,
    timestamp,
};

/// An exchange format: the layout of a branch's tree and the replica keys it may
/// hold. A site reads every format up to [`Format::NEWEST`] and writes, on its
/// branch for a peer, the newest one that peer has announced it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Format {
    /// `issues/<project>/<id>.yaml`: one tree per project, rewritten whole by
    /// every commit that touches one of its issues (megabytes at 100 000 issues).
    /// Replicas hold no key newer than the format.
    V1 = 1,
    /// `issues/<project>/<nn>/<mm>/<id>.yaml` ([`buckets`]): a commit writes
    /// the small trees of the issues it touches. Replicas may carry
    /// `resolution`, `parent` and `links`.
    V2 = 2,
}

/// Environment variable that holds a site at an older [`Format`].
pub const FORMAT_ENV: &str = "FERRY_EXCHANGE_FORMAT";

impl Format {
    /// The newest format this ferry reads and writes.
    pub const NEWEST: Format = Format::V2;

    /// What a peer's `site.yaml` announcing `ferry: <n>` lets this site write:
    /// the newest format both read. A peer newer than this ferry reads this
    /// ferry's newest format too.
    pub fn announced(n: u32) -> Format {
        if n >= Format::V2 as u32 {
            Format::V2
        } else {
            Format::V1
        }
    }

    /// The newest format this site announces and writes: [`Format::NEWEST`],
    /// unless `FERRY_EXCHANGE_FORMAT` names an older one, which holds the site
    /// back as if it ran the ferry that knew no newer format (to keep a pair on
    /// the old format while the other site is rolled back, and to test a pair
    /// of sites that differ).
    pub fn own() -> Format {
        std::env::var(FORMAT_ENV)
            .ok()
            .and_then(|value| value.trim().parse::<u32>().ok())
            .map_or(Format::NEWEST, |n| Format::announced(n).min(Format::NEWEST))
    }

    /// The number `site.yaml` and replicas carry.
    pub fn number(self) -> u32 {
        self as u32
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.number())
    }
}

/// Replicas larger than this are refused unread: a hostile or broken peer must not
/// make a site parse gigabytes of YAML.
pub const MAX_REPLICA_BYTES: usize = 16 * 1024 * 1024;

/// One shared issue, exactly as it is stored at `issues/<project>/<id>.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replica {
    /// The oldest [`Format`] that reads this replica: 1 unless it uses a key a
    /// newer format added, so an old replica keeps its bytes. Set by
    /// [`Replica::normalize`].
    pub ferry: u32,
    /// The site that owns and wrote this replica.
    pub site: String,
    /// Stable id at the owner.
    pub id: String,
    /// Human key at the owner.
    pub key: String,
    /// Project key at the owner.
    pub project: String,
    /// Issue type.
    #[serde(rename = "type")]
    pub issue_type: String,
    /// Summary.
    pub summary: String,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Status name at the owner.
    pub status: String,
    /// Priority name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    /// Resolution at the owner (Jira's Fixed, Won't Fix), when its tracker keeps
    /// one. Omitted when absent, so replicas of trackers without resolutions keep
    /// the bytes they had before the key existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    /// Assignee.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    /// Reporter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporter: Option<String>,
    /// Labels, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Components, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<String>,
    /// Creation time.
    #[serde(with = "timestamp")]
    pub created: DateTime<Utc>,
    /// Last change time.
    #[serde(with = "timestamp")]
    pub updated: DateTime<Utc>,
    /// Custom fields.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, FieldValue>,
    /// Shared comments, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub comments: Vec<Comment>,
    /// Shared attachments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
    /// The issue this one is a sub-task of, by its identity across sites; only
    /// when the parent is shared on this connection too. Omitted when absent, so
    /// replicas without relations keep the bytes they had before the key existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Origin>,
    /// Links to other issues shared on this connection, sorted; omitted when
    /// empty, like `parent`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<ReplicaLink>,
    /// Arbitrary data an outgoing rule passes to the peer's incoming rule.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_keys: BTreeMap<String, FieldValue>,
    /// Present when the owner's issue was itself created by sync from a peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// A tombstone: the owner deleted the issue.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// One link of a replica: its type and direction as the owner's tracker names
/// them, and the other issue by its identity across sites (the site that owns
/// the original and its id there, as [`Replica::effective_origin`] gives it for
/// a whole replica), never by a key or a local id of the receiving site.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaLink {
    /// The link type's name at the owner (`Blocks`).
    #[serde(rename = "type")]
    pub link_type: String,
    /// Which end of the link this replica's issue is.
    pub direction: LinkDirection,
    /// The issue at the other end.
    pub issue: Origin,
}

impl ReplicaLink {
    /// The replica form of a tracker's link, for an issue of `site`.
    pub fn from_link(site: &str, link: &IssueLink) -> ReplicaLink {
        ReplicaLink {
            link_type: link.link_type.clone(),
            direction: link.direction,
            issue: link.issue.identity(site),
        }
    }
}

/// Why a replica was refused. Every variant names the path it came from, so an
/// operator can find the file in the exchange repo.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// Not parseable YAML, or the wrong shape.
    #[error("{path}: {message}")]
    Malformed {
        /// Path inside the exchange repo.
        path: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A schema version this ferry does not know.
    #[error(
        "{path}: replica format {found} is not supported (this ferry reads formats 1 to {}); upgrade ferry on this site", Format::NEWEST.number()
    )]
    UnknownSchema {
        /// Path inside the exchange repo.
        path: String,
        /// The version found.
        found: u32,
    },
    /// Structurally valid but semantically wrong (empty id, path mismatch...).
    #[error("{path}: {message}")]
    Invalid {
        /// Path inside the exchange repo.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Nested deeper than [`crate::yaml_depth::MAX_DEPTH`]; refused unparsed.
    #[error("{path}: {source}")]
    TooDeep {
        /// Path inside the exchange repo.
        path: String,
        /// Where and how deep.
        source: crate::yaml_depth::TooDeep,
    },
    /// Larger than [`MAX_REPLICA_BYTES`].
    #[error("{path}: replica is {size} bytes, over the limit of {MAX_REPLICA_BYTES}")]
    TooLarge {
        /// Path inside the exchange repo.
        path: String,
        /// Its size.
        size: usize,
    },
}

impl Replica {
    /// Builds the replica of `issue` as written by `site`. Lists are normalised so
    /// the bytes do not depend on the order a tracker returned things in.
    pub fn from_issue(site: &str, issue: &Issue) -> Replica {
        let mut issue = issue.clone();
        issue.normalize();
        let mut links: Vec<ReplicaLink> = issue
            .links
            .iter()
            .map(|link| ReplicaLink::from_link(site, link))
            .collect();
        links.sort();
        links.dedup();
        let mut replica = Replica {
            ferry: Format::V1.number(),
            site: site.to_string(),
            id: issue.id,
            key: issue.key,
            project: issue.project,
            issue_type: issue.issue_type,
            summary: issue.summary,
            description: issue.description,
            status: issue.status,
            priority: issue.priority,
            resolution: issue.resolution,
            assignee: issue.assignee,
            reporter: issue.reporter,
            labels: issue.labels,
            components: issue.components,
            created: issue.created,
            updated: issue.updated,
            fields: issue.fields,
            comments: issue.comments,
            attachments: issue.attachments,
            parent: issue.parent.as_ref().map(|p| p.identity(site)),
            links,
            custom_keys: BTreeMap::new(),
            origin: issue.origin,
            deleted: issue.deleted,
        };
        replica.ferry = replica.format().number();
        replica
    }

    /// The issue this replica describes, as seen by the owner. Related issues
    /// are named by their owner's ids (and keys, which a replica does not
    /// carry, by those ids too).
    pub fn to_issue(&self) -> Issue {
        let related = |origin: &Origin| RelatedIssue {
            id: origin.id.clone(),
            key: origin.id.clone(),
            origin: (origin.site != self.site).then(|| origin.clone()),
        };
        Issue {
            id: self.id.clone(),
            key: self.key.clone(),
            project: self.project.clone(),
            issue_type: self.issue_type.clone(),
            summary: self.summary.clone(),
            description: self.description.clone(),
            status: self.status.clone(),
            priority: self.priority.clone(),
            resolution: self.resolution.clone(),
            assignee: self.assignee.clone(),
            reporter: self.reporter.clone(),
            labels: self.labels.clone(),
            components: self.components.clone(),
            created: self.created,
            updated: self.updated,
            fields: self.fields.clone(),
            comments: self.comments.clone(),
            attachments: self.attachments.clone(),
            links: self
                .links
                .iter()
                .map(|link| IssueLink {
                    link_type: link.link_type.clone(),
                    direction: link.direction,
                    issue: related(&link.issue),
                })
                .collect(),
            parent: self.parent.as_ref().map(related),
            subtasks: Vec::new(),
            origin: self.origin.clone(),
            deleted: self.deleted,
        }
    }

    /// Where this replica lives in the exchange repo.
    pub fn path(&self) -> String {
        replica_path(&self.project, &self.id)
    }

    /// The origin that identifies this issue across all sites: the first site it was
    /// created on. An issue ferry created from a peer's replica carries that origin;
    /// an issue born at the owner is identified by the owner's own site and id.
    pub fn effective_origin(&self) -> Origin {
        self.origin.clone().unwrap_or_else(|| Origin {
            site: self.site.clone(),
            id: self.id.clone(),
        })
    }

    /// Puts lists in their canonical order (sorted labels and components, comments
    /// and attachments by time then id, links by type, direction and issue).
    pub fn normalize(&mut self) {
        self.ferry = self.format().number();
        crate::model::normalize_set(&mut self.labels);
        crate::model::normalize_set(&mut self.components);
        crate::model::sort_comments(&mut self.comments);
        crate::model::sort_attachments(&mut self.attachments);
        self.links.sort();
        self.links.dedup();
    }

    /// Refuses relations that cannot name an issue: an empty link type, site or
    /// id, or the replica's own issue at the other end.
    fn check_relations(&self) -> Result<(), String> {
        let me = self.effective_origin();
        let check = |what: &str, other: &Origin| {
            if other.site.trim().is_empty() || other.id.trim().is_empty() {
                Err(format!(
                    "{what} names an issue with an empty `site` or `id`"
                ))
            } else if *other == me {
                Err(format!("{what} names the replica's own issue ({other})"))
            } else {
                Ok(())
            }
        };
        if let Some(parent) = &self.parent {
            check("`parent`", parent)?;
        }
        for (i, link) in self.links.iter().enumerate() {
            let what = format!("`links[{i}]`");
            if link.link_type.trim().is_empty() {
                return Err(format!("{what} has an empty `type`"));
            }
            check(&what, &link.issue)?;
        }
        Ok(())
    }

    /// The oldest format whose readers know every key this replica uses.
    pub fn format(&self) -> Format {
        if self.resolution.is_some() || self.parent.is_some() || !self.links.is_empty() {
            Format::V2
        } else {
            Format::V1
        }
    }

    /// Leaves out what a peer reading only `format` would refuse, with the
    /// whole commit holding it.
    pub fn downgrade_to(&mut self, format: Format) {
        if format < Format::V2 {
            self.resolution = None;
            self.parent = None;
            self.links.clear();
        }
        self.ferry = self.format().number();
    }

    /// The canonical bytes. Normalises a copy first, so two equal replicas always
    /// give equal bytes.
    pub fn to_yaml(&self) -> String {
        let mut canonical = self.clone();
        canonical.normalize();
        serde_yaml::to_string(&canonical).expect("a replica always serialises to YAML")
    }

    /// Parses and validates the replica stored at `path` (a path inside the exchange
    /// repo, used in errors and checked against the replica's own project and id).
    pub fn parse(path: &str, bytes: &[u8]) -> Result<Replica, ReplicaError> {
        if bytes.len() > MAX_REPLICA_BYTES {
            return Err(ReplicaError::TooLarge {
                path: path.to_string(),
                size: bytes.len(),
            });
        }
        let (project, id) = parse_replica_path(path)?;
        crate::yaml_depth::check(bytes, crate::yaml_depth::MAX_DEPTH).map_err(|source| {
            ReplicaError::TooDeep {
                path: path.to_string(),
                source,
            }
        })?;
        let malformed = |e: serde_yaml::Error| ReplicaError::Malformed {
            path: path.to_string(),
            message: e.to_string(),
        };
        // One parse when all is well (an import parses thousands); only a
        // replica that does not parse, or has another version, is looked at
        // again for its version alone, so that a newer schema is reported as
        // such and not as a pile of unknown fields.
        let replica = match serde_yaml::from_slice::<Replica>(bytes) {
            Ok(replica) if (1..=Format::NEWEST.number()).contains(&replica.ferry) => replica,
            full => {
                #[derive(Deserialize)]
                struct Version {
                    ferry: Option<u32>,
                }
                let version: Version = serde_yaml::from_slice(bytes).map_err(malformed)?;
                return Err(match (version.ferry, full) {
                    (None, _) => ReplicaError::Invalid {
                        path: path.to_string(),
                        message: "missing `ferry:` schema version".into(),
                    },
                    (Some(found), Err(e)) if found <= Format::NEWEST.number() => malformed(e),
                    (Some(found), _) => ReplicaError::UnknownSchema {
                        path: path.to_string(),
                        found,
                    },
                });
            }
        };
        let invalid = |message: String| ReplicaError::Invalid {
            path: path.to_string(),
            message,
        };
        for (name, value) in [("site", &replica.site), ("id", &replica.id)] {
            if value.trim().is_empty() {
                return Err(invalid(format!("`{name}` is empty")));
            }
        }
        if replica.id != id || replica.project != project {
            return Err(invalid(format!(
                "replica says project {:?} id {:?} but is stored at {path}; a replica must live at {} (or in its bucket below the project)",
                replica.project,
                replica.id,
                replica.path()
            )));
        }
        if let Some(c) = replica.comments.iter().find(|c| c.id.trim().is_empty()) {
            return Err(invalid(format!(
                "a comment by {:?} has an empty `id`",
                c.author
            )));
        }
        replica.check_relations().map_err(invalid)?;
        Ok(replica)
    }
}

/// The path of the [`SiteFile`] at the root of every branch.
pub const SITE_FILE: &str = "site.yaml";

/// The contents of `site.yaml` at the root of a site's branch: who wrote the
/// branch, for whom, and the acknowledgement that travels back with it. The
/// schema is strict (a key no ferry writes is refused): it comes from a peer.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteFile {
    /// The newest [`Format`] the writing site reads: its peer may write that
    /// one (or its own newest, if older). Not the format of the branch itself,
    /// which its paths show; ferry before format 2 wrote 1 and ignored it.
    pub ferry: u32,
    /// The writing site.
    pub site: String,
    /// The peer the branch is for.
    pub peer: String,
    /// The last commit of the peer's branch this site has applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack: Option<String>,
}

/// Why a `site.yaml` was refused.
#[derive(Debug, thiserror::Error)]
pub enum SiteFileError {
    /// Nested deeper than [`crate::yaml_depth::MAX_DEPTH`]; refused unparsed.
    #[error(transparent)]
    TooDeep(#[from] crate::yaml_depth::TooDeep),
    /// Not parseable YAML, or not the schema (with line and column).
    #[error("malformed YAML: {0}")]
    Malformed(#[from] serde_yaml::Error),
}

impl SiteFile {
    /// Parses a `site.yaml`, refusing deep nesting before the parser sees it.
    pub fn parse(bytes: &[u8]) -> Result<SiteFile, SiteFileError> {
        crate::yaml_depth::check(bytes, crate::yaml_depth::MAX_DEPTH)?;
        Ok(serde_yaml::from_slice(bytes)?)
    }
}

/// `issues/<project>/<id>.yaml`: the name of an issue's replica whatever the
/// layout it is stored in. The ledger and every message use it; [`stored_path`]
/// says where a format keeps it.
pub fn replica_path(project: &str, id: &str) -> String {
    format!("issues/{project}/{id}.yaml")
}

/// Where `format` stores the replica of `project`/`id`.
pub fn stored_path(project: &str, id: &str, format: Format) -> String {
    match format {
        Format::V1 => replica_path(project, id),
        Format::V2 => {
            let [nn, mm] = buckets(id);
            format!("issues/{project}/{nn}/{mm}/{id}.yaml")
        }
    }
}

/// The two trees below the project that [`Format::V2`] keeps the replica of
/// `id` in: its last two characters, then the two before them (`10042` in
/// `42/00`, `7` in `07/00`), left-padded with `0`, with `.` as `_` (a name like
/// `..` or `.x` would not be a plain name). Trackers number issues in sequence,
/// so the last characters spread them evenly: at 100 000 issues in one project
/// each tree holds about a hundred entries and the leaves ten, so a commit that
/// changes k issues writes about 3k small trees, not the project's.
pub fn buckets(id: &str) -> [String; 2] {
    let chars: Vec<char> = id.chars().collect();
    let level = |from_end: usize| -> String {
        (0..2)
            .rev()
            .map(|i| {
                let back = from_end + i;
                match chars.len().checked_sub(back + 1) {
                    Some(at) if chars[at] == '.' => '_',
                    Some(at) => chars[at],
                    None => '0',
                }
            })
            .collect()
    };
    [level(0), level(2)]
}

/// Splits a replica path of either layout into project and id, refusing anything
/// that is not exactly `issues/<project>/<id>.yaml` or
/// `issues/<project>/<nn>/<mm>/<id>.yaml` (with `nn` and `mm` the id's
/// [`buckets`]) with plain names (no `..`, no hidden files).
pub fn parse_replica_path(path: &str) -> Result<(String, String), ReplicaError> {
    parse_stored_path(path).map(|(project, id, _)| (project, id))
}

/// [`parse_replica_path`], with the format whose layout the path has.
pub fn parse_stored_path(path: &str) -> Result<(String, String, Format), ReplicaError> {
    let invalid = || ReplicaError::Invalid {
        path: path.to_string(),
        message: "not a replica path: replicas live at issues/<project>/<id>.yaml or \
                  issues/<project>/<nn>/<mm>/<id>.yaml, <nn> being the id's last two \
                  characters and <mm> the two before"
            .into(),
    };
    let parts: Vec<&str> = path.split('/').collect();
    let (project, in_buckets, file, format) = match parts.as_slice() {
        ["issues", project, file] => (*project, None, *file, Format::V1),
        ["issues", project, nn, mm, file] => (*project, Some([*nn, *mm]), *file, Format::V2),
        _ => return Err(invalid()),
    };
    let id = file.strip_suffix(".yaml").ok_or_else(invalid)?;
    if !is_plain_name(project) || !is_plain_name(id) {
        return Err(invalid());
    }
    if in_buckets.is_some_and(|found| found != buckets(id)) {
        return Err(invalid());
    }
    Ok((project.to_string(), id.to_string(), format))
}

/// The [`replica_path`] of a stored replica path, `None` when it is not one.
pub fn canonical_path(path: &str) -> Option<String> {
    parse_replica_path(path)
        .ok()
        .map(|(project, id)| replica_path(&project, &id))
}

/// A name safe as one path component on every file system ferry runs on.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse_timestamp;
    use proptest::prelude::*;

    fn time(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn text() -> impl Strategy<Value = String> {
        // Printable text including YAML's troublemakers: quotes, colons, '#',
        // leading spaces, newlines, "yes"/"null"-like words, unicode.
        prop_oneof![
            "[ -~]{0,40}",
            "[a-zA-Z0-9 :#'\"\\n-]{0,60}",
            Just("null".to_string()),
            Just("yes".to_string()),
            Just("0x1F".to_string()),
            "\\PC{0,20}",
        ]
    }

    fn name() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_-]{1,12}"
    }

    fn comment() -> impl Strategy<Value = Comment> {
        (
            name(),
            name(),
            0i64..4_000_000_000,
            text(),
            proptest::option::of((name(), name())),
        )
            .prop_map(|(id, author, t, body, origin)| Comment {
                id,
                author,
                created: time(t),
                body,
                internal: false,
                origin: origin.map(|(site, id)| Origin { site, id }),
            })
    }

    fn field_value() -> impl Strategy<Value = FieldValue> {
        prop_oneof![
            text().prop_map(FieldValue::from),
            any::<i64>().prop_map(FieldValue::from),
            any::<bool>().prop_map(FieldValue::from),
            proptest::collection::vec(name(), 0..4).prop_map(FieldValue::from),
        ]
    }

    fn related() -> impl Strategy<Value = RelatedIssue> {
        // Longer ids than the issue's own, so no relation names the issue itself.
        ("[0-9]{7,8}", proptest::option::of((name(), name()))).prop_map(|(id, origin)| {
            RelatedIssue {
                key: format!("OTHER-{id}"),
                id,
                origin: origin.map(|(site, id)| Origin { site, id }),
            }
        })
    }

    fn link() -> impl Strategy<Value = IssueLink> {
        (
            text().prop_filter("a link type has a name", |t| !t.trim().is_empty()),
            any::<bool>(),
            related(),
        )
            .prop_map(|(link_type, outward, issue)| IssueLink {
                link_type,
                direction: if outward {
                    LinkDirection::Outward
                } else {
                    LinkDirection::Inward
                },
                issue,
            })
    }

    prop_compose! {
        fn issue()(
            id in "[0-9]{1,6}", project in "[A-Z]{2,5}", issue_type in name(),
            summary in text(), description in proptest::option::of(text()),
            status in text(), priority in proptest::option::of(name()),
            resolution in proptest::option::of(name()),
            assignee in proptest::option::of(name()),
            labels in proptest::collection::vec(name(), 0..5),
            components in proptest::collection::vec(name(), 0..3),
            created in 0i64..4_000_000_000, updated in 0i64..4_000_000_000,
            fields in proptest::collection::btree_map(text(), field_value(), 0..4),
            comments in proptest::collection::vec(comment(), 0..4),
            links in proptest::collection::vec(link(), 0..4),
            parent in proptest::option::of(related()),
            deleted in any::<bool>(),
        ) -> Issue {
            Issue {
                key: format!("{project}-{id}"), id, project, issue_type, summary, description,
                status, priority, resolution, assignee, reporter: None, labels, components,
                created: time(created), updated: time(updated), fields,
                // Comment ids are unique within an issue at every tracker.
                comments: comments.into_iter().enumerate().map(|(i, mut c)| { c.id = i.to_string(); c }).collect(),
                attachments: Vec::new(), links, parent, subtasks: Vec::new(), origin: None, deleted,
            }
        }
    }

    proptest! {
        #[test]
        fn any_issue_survives_yaml_and_gives_the_same_bytes(issue in issue()) {
            let replica = Replica::from_issue("support", &issue);
            let yaml = replica.to_yaml();
            let parsed = Replica::parse(&replica.path(), yaml.as_bytes()).unwrap();
            prop_assert_eq!(&parsed, &replica);
            prop_assert_eq!(parsed.to_yaml(), yaml.clone());
            // Same issue with its lists shuffled: same bytes.
            let mut shuffled = issue.clone();
            shuffled.labels.reverse();
            shuffled.comments.reverse();
            shuffled.links.reverse();
            prop_assert_eq!(Replica::from_issue("support", &shuffled).to_yaml(), yaml);
        }

        #[test]
        fn the_parser_never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Replica::parse("issues/SUP/1.yaml", &bytes);
        }
    }

    fn sample() -> Replica {
        Replica::from_issue(
            "support",
            &Issue {
                resolution: None,
                id: "10042".into(),
                key: "SUP-42".into(),
                project: "SUP".into(),
                issue_type: "Bug".into(),
                summary: "Printer on fire".into(),
                description: Some("Smoke seen.\nTwice.".into()),
                status: "Open".into(),
                priority: Some("High".into()),
                assignee: None,
                reporter: Some("ann".into()),
                labels: vec!["escalate".into(), "customer".into()],
                components: vec![],
                created: parse_timestamp("2026-11-20T10:00:00Z").unwrap(),
                updated: parse_timestamp("2026-11-22T09:30:00+01:00").unwrap(),
                fields: [("Customer".to_string(), FieldValue::from("ACME"))].into(),
                comments: vec![],
                attachments: vec![],
                links: Vec::new(),
                parent: None,
                subtasks: Vec::new(),
                origin: None,
                deleted: false,
            },
        )
    }

    #[test]
    fn layout_matches_the_documented_schema() {
        insta::assert_snapshot!(sample().to_yaml(), @r"
        ferry: 1
        site: support
        id: '10042'
        key: SUP-42
        project: SUP
        type: Bug
        summary: Printer on fire
        description: |-
          Smoke seen.
          Twice.
        status: Open
        priority: High
        reporter: ann
        labels:
        - customer
        - escalate
        created: 2026-11-20T10:00:00Z
        updated: 2026-11-22T08:30:00Z
        fields:
          Customer: ACME
        ");
    }

    /// The canonical bytes of text that YAML could read as something else, or
    /// that needs quoting or escapes: the wire format pinned against a change
    /// of the YAML library or of its emitter, which the property tests (a
    /// replica reads back, and gives the same bytes twice) would not notice.
    #[test]
    fn text_that_needs_quoting_keeps_its_bytes() {
        let mut issue = sample().to_issue();
        issue.summary = "yes: it's \"on\" # not a comment".into();
        issue.description =
            Some("  indented first line\nsecond\ttabbed\n\ntrailing newline\n".into());
        issue.status = " Open ".into();
        issue.labels = ["null", "0x1F", "2026-11-20", "~", "- dash", "日本語", "1e3"]
            .map(String::from)
            .into();
        issue.fields = [
            ("yes", FieldValue::from("no")),
            ("CRLF", FieldValue::from("one\r\ntwo")),
            (
                "unicode",
                FieldValue::from("e\u{301} 🚀 nbsp\u{a0} bom\u{feff} ls\u{2028}"),
            ),
            ("empty", FieldValue::from("")),
            ("number as text", FieldValue::from("012")),
            ("number", FieldValue::from(-12)),
            ("flag", FieldValue::from(true)),
            ("list", FieldValue::from(vec!["on", "off", "[x]", "{y}"])),
            ("long", FieldValue::from("word ".repeat(24).trim_end())),
            ("control", FieldValue::from("bell\u{7} nul\u{0} nel\u{85}")),
        ]
        .map(|(k, v)| (k.to_string(), v))
        .into();
        let replica = Replica::from_issue("support", &issue);
        let yaml = replica.to_yaml();
        let expected = concat!(
            "ferry: 1\n",
            "site: support\n",
            "id: '10042'\n",
            "key: SUP-42\n",
            "project: SUP\n",
            "type: Bug\n",
            "summary: 'yes: it''s \"on\" # not a comment'\n",
            "description: \"  indented first line\\nsecond\\ttabbed\\n\\ntrailing newline\\n\"\n",
            "status: ' Open '\n",
            "priority: High\n",
            "reporter: ann\n",
            "labels:\n",
            "- '- dash'\n",
            "- '0x1F'\n",
            "- '1e3'\n",
            "- 2026-11-20\n",
            "- 'null'\n",
            "- '~'\n",
            "- 日本語\n",
            "created: 2026-11-20T10:00:00Z\n",
            "updated: 2026-11-22T08:30:00Z\n",
            "fields:\n",
            "  CRLF: \"one\\r\\ntwo\"\n",
            "  control: \"bell\\a nul\\0 nel\\N\"\n",
            "  empty: ''\n",
            "  flag: true\n",
            "  list:\n",
            "  - on\n",
            "  - off\n",
            "  - '[x]'\n",
            "  - '{y}'\n",
            "  long: word word word word word word word word word word word word word word word word word word word word word word word word\n",
            "  number: -12\n",
            "  number as text: '012'\n",
            "  unicode: \"e\u{301} 🚀 nbsp\u{a0} bom\\uFEFF ls\\L\"\n",
            "  yes: no\n",
        );
        assert_eq!(yaml, expected);
        // `yes`, `on` and a date go plain and still read back as text.
        let parsed = Replica::parse("issues/SUP/10042.yaml", yaml.as_bytes()).unwrap();
        assert_eq!(parsed, replica);
        assert_eq!(parsed.to_issue().fields, issue.fields);
    }

    /// A resolution is written after the priority when there is one, and a
    /// replica without one keeps the bytes of a replica from before the key
    /// existed (the snapshot above).
    #[test]
    fn a_resolution_is_written_only_when_present() {
        let mut issue = sample().to_issue();
        issue.resolution = Some("Won't Fix".into());
        let replica = Replica::from_issue("support", &issue);
        let yaml = replica.to_yaml();
        assert!(
            yaml.contains("priority: High\nresolution: Won't Fix\nreporter: ann\n"),
            "{yaml}"
        );
        let parsed = Replica::parse("issues/SUP/10042.yaml", yaml.as_bytes()).unwrap();
        assert_eq!(parsed, replica);
        assert_eq!(parsed.to_issue().resolution.as_deref(), Some("Won't Fix"));
        assert!(!sample().to_yaml().contains("resolution"));
    }

    /// Relations are written after the attachments, the parent first, links
    /// sorted, the other issue by its identity across sites; a replica without
    /// them keeps the bytes of a replica from before the keys existed (the
    /// snapshot above).
    #[test]
    fn relations_name_the_other_issue_by_its_identity_across_sites() {
        let mut issue = sample().to_issue();
        let related = |id: &str, key: &str, origin: Option<(&str, &str)>| RelatedIssue {
            id: id.into(),
            key: key.into(),
            origin: origin.map(|(site, id)| Origin {
                site: site.into(),
                id: id.into(),
            }),
        };
        issue.parent = Some(related("10040", "SUP-40", None));
        issue.links = vec![
            IssueLink {
                link_type: "Relates".into(),
                direction: LinkDirection::Inward,
                issue: related("10050", "SUP-50", Some(("engineering", "7"))),
            },
            IssueLink {
                link_type: "Blocks".into(),
                direction: LinkDirection::Outward,
                issue: related("10043", "SUP-43", None),
            },
        ];
        let replica = Replica::from_issue("support", &issue);
        let yaml = replica.to_yaml();
        let tail = &yaml[yaml.find("fields:").unwrap()..];
        insta::assert_snapshot!(tail, @r"
        fields:
          Customer: ACME
        parent:
          site: support
          id: '10040'
        links:
        - type: Blocks
          direction: outward
          issue:
            site: support
            id: '10043'
        - type: Relates
          direction: inward
          issue:
            site: engineering
            id: '7'
        ");
        let parsed = Replica::parse("issues/SUP/10042.yaml", yaml.as_bytes()).unwrap();
        assert_eq!(parsed, replica);
        assert!(!sample().to_yaml().contains("links") && !sample().to_yaml().contains("parent"));
    }

    #[test]
    fn relations_that_name_no_other_issue_are_refused() {
        let good = sample().to_yaml();
        let cases = [
            (
                "parent:\n  site: support\n  id: '10042'\n",
                "`parent` names the replica's own issue (support:10042)",
            ),
            (
                "parent:\n  site: ''\n  id: '1'\n",
                "`parent` names an issue with an empty `site` or `id`",
            ),
            (
                "links:\n- type: ' '\n  direction: outward\n  issue:\n    site: a\n    id: '1'\n",
                "`links[0]` has an empty `type`",
            ),
            (
                "links:\n- type: Blocks\n  direction: sideways\n  issue:\n    site: a\n    id: '1'\n",
                "unknown variant `sideways`",
            ),
            (
                "links:\n- type: Blocks\n  direction: outward\n  key: SUP-1\n  issue:\n    site: a\n    id: '1'\n",
                "unknown field `key`",
            ),
        ];
        for (relations, expected) in cases {
            let text = format!("{good}{relations}");
            let err = Replica::parse("issues/SUP/10042.yaml", text.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{err:?} lacks {expected:?}");
        }
    }

    #[test]
    fn both_layouts_name_the_same_replica() {
        assert_eq!(buckets("10042"), ["42", "00"]);
        assert_eq!(buckets("123456"), ["56", "34"]);
        assert_eq!(buckets("7"), ["07", "00"]);
        assert_eq!(buckets("a.b"), ["_b", "0a"]);
        assert_eq!(buckets("x.."), ["__", "0x"]);
        assert_eq!(
            stored_path("SUP", "10042", Format::V1),
            "issues/SUP/10042.yaml"
        );
        assert_eq!(
            stored_path("SUP", "10042", Format::V2),
            "issues/SUP/42/00/10042.yaml"
        );
        for format in [Format::V1, Format::V2] {
            let path = stored_path("SUP", "10042", format);
            assert_eq!(
                parse_stored_path(&path).unwrap(),
                ("SUP".into(), "10042".into(), format)
            );
            assert_eq!(canonical_path(&path).unwrap(), "issues/SUP/10042.yaml");
        }
        // A replica in the wrong bucket, or deeper, is no replica.
        for path in [
            "issues/SUP/43/00/10042.yaml",
            "issues/SUP/42/10042.yaml",
            "issues/SUP/42/00/0/10042.yaml",
            "issues/SUP/../10042.yaml",
            "issues/SUP/.x/a.x.yaml",
        ] {
            assert!(parse_replica_path(path).is_err(), "{path}");
        }
    }

    proptest! {
        /// Every id a tracker may give has exactly one place in each layout,
        /// a plain path that names it back.
        #[test]
        fn stored_paths_are_plain_and_name_their_issue(id in "[A-Za-z0-9_-][A-Za-z0-9._-]{0,12}") {
            for format in [Format::V1, Format::V2] {
                let path = stored_path("P", &id, format);
                prop_assert!(path.split('/').all(is_plain_name), "{}", path);
                let (project, parsed, layout) = parse_stored_path(&path).unwrap();
                prop_assert_eq!((project.as_str(), parsed.as_str(), layout), ("P", id.as_str(), format));
            }
        }
    }

    #[test]
    fn a_replica_needs_the_oldest_format_that_knows_its_keys() {
        let mut replica = Replica::from_issue("a", &issue_with_resolution(None));
        replica.normalize();
        assert_eq!(replica.format(), Format::V1);
        assert!(replica.to_yaml().starts_with("ferry: 1\n"));
        let mut resolved = Replica::from_issue("a", &issue_with_resolution(Some("Fixed")));
        resolved.normalize();
        assert!(resolved.to_yaml().starts_with("ferry: 2\n"));
        assert_eq!(
            Replica::parse(&resolved.path(), resolved.to_yaml().as_bytes())
                .unwrap()
                .resolution
                .as_deref(),
            Some("Fixed")
        );
        resolved.downgrade_to(Format::V1);
        assert_eq!(resolved.resolution, None);
        assert!(resolved.to_yaml().starts_with("ferry: 1\n"));
        let newer = resolved.to_yaml().replacen("ferry: 1", "ferry: 3", 1);
        let err = Replica::parse(&resolved.path(), newer.as_bytes()).unwrap_err();
        assert!(
            err.to_string().contains("format 3 is not supported"),
            "{err}"
        );
    }

    fn issue_with_resolution(resolution: Option<&str>) -> Issue {
        let mut issue = sample().to_issue();
        issue.resolution = resolution.map(str::to_string);
        issue
    }

    #[test]
    fn site_file_is_strict_and_shallow() {
        let good = "ferry: 1\nsite: a\npeer: b\nack: 0123456789abcdef0123456789abcdef01234567\n";
        assert_eq!(SiteFile::parse(good.as_bytes()).unwrap().peer, "b");
        let extra = SiteFile::parse(format!("{good}more: x\n").as_bytes()).unwrap_err();
        assert!(
            extra.to_string().contains("unknown field `more`"),
            "{extra}"
        );
        let deep = format!("{good}x: {}\n", "[".repeat(10_000));
        let err = SiteFile::parse(deep.as_bytes()).unwrap_err().to_string();
        assert!(err.starts_with("line 5: YAML nested more than 64"), "{err}");
    }

    #[test]
    fn deep_replicas_are_refused_naming_path_and_line() {
        let deep = format!(
            "{}fields:\n  x: {}\n",
            sample().to_yaml(),
            "{a: ".repeat(100)
        );
        let err = Replica::parse("issues/SUP/10042.yaml", deep.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("issues/SUP/10042.yaml: line 22: YAML nested more than 64"),
            "{err}"
        );
    }

    #[test]
    fn refusals_name_the_path_and_the_problem() {
        let good = sample().to_yaml();
        let cases = [
            (
                "issues/SUP/10042.yaml",
                good.replace("ferry: 1", "ferry: 3"),
                "format 3 is not supported",
            ),
            (
                "issues/SUP/10042.yaml",
                good.replace("ferry: 1\n", ""),
                "missing `ferry:`",
            ),
            (
                "issues/SUP/10042.yaml",
                good.replace("id: '10042'\n", ""),
                "missing field `id`",
            ),
            (
                "issues/SUP/10042.yaml",
                good.replace("summary:", "summry:"),
                "unknown field `summry`",
            ),
            (
                "issues/SUP/10042.yaml",
                "ferry: 1\nsite: [\n".to_string(),
                "line",
            ),
            (
                "issues/SUP/99.yaml",
                good.clone(),
                "stored at issues/SUP/99.yaml",
            ),
            ("issues/../10042.yaml", good.clone(), "not a replica path"),
            ("notes/SUP/10042.yaml", good.clone(), "not a replica path"),
            ("issues/SUP/10042.yml", good.clone(), "not a replica path"),
        ];
        for (path, text, expected) in cases {
            let err = Replica::parse(path, text.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(path), "{err}");
            assert!(err.contains(expected), "{path}: {err:?} lacks {expected:?}");
        }
    }
}
