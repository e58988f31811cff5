//! The tracker-neutral issue model.
//!
//! Every connector translates its tracker's issues into [`Issue`] and back, so the
//! engine, the rules and the replica format only ever see one shape. The same
//! struct is what an outgoing rule reads (`issue`) and, after the rule, what becomes
//! a [`crate::replica::Replica`].

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// A custom field value: any YAML/JSON value. `serde_json::Value` is used because
/// its maps are sorted, which keeps replicas byte-for-byte deterministic.
pub type FieldValue = serde_json::Value;

/// Where an issue or a comment was first created, when sync created it from a
/// peer's replica. Echo avoidance and idempotent creates both rely on it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Origin {
    /// The site that owns the original.
    pub site: String,
    /// The original's stable id at that site.
    pub id: String,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.site, self.id)
    }
}

/// One issue as a tracker holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Issue {
    /// Stable id at the owning tracker; never changes.
    pub id: String,
    /// Human key (`SUP-42`); may change when the issue moves between projects.
    pub key: String,
    /// Project key.
    pub project: String,
    /// Issue type (Bug, Task, ...).
    #[serde(rename = "type")]
    pub issue_type: String,
    /// One-line summary.
    pub summary: String,
    /// Free text description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Workflow status name.
    pub status: String,
    /// Priority name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    /// Why a done issue is done (Jira's Fixed, Won't Fix, Duplicate), where the
    /// tracker keeps one; absent otherwise, and then absent from the replica too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    /// Assignee user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    /// Reporter user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporter: Option<String>,
    /// Labels, sorted and unique once normalised.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Components, sorted and unique once normalised.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<String>,
    /// Creation time (UTC, whole seconds).
    #[serde(with = "timestamp")]
    pub created: DateTime<Utc>,
    /// Last change time (UTC, whole seconds).
    #[serde(with = "timestamp")]
    pub updated: DateTime<Utc>,
    /// Custom fields by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, FieldValue>,
    /// Comments, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub comments: Vec<Comment>,
    /// Attachment metadata.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
    /// Links to other issues of the same tracker ("blocks", "relates to"),
    /// sorted; empty for a tracker whose connector does not read them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<IssueLink>,
    /// The issue this one is a sub-task of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<RelatedIssue>,
    /// The sub-tasks of this issue, sorted by id. Read-only: a replica carries
    /// the parent on each sub-task, never this list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subtasks: Vec<RelatedIssue>,
    /// Set when sync created this issue from a peer's replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// A tombstone: the issue was deleted at its tracker.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// Which way a link points, seen from the issue that lists it: `SUP-1 blocks
/// SUP-2` is `outward` on SUP-1 and `inward` on SUP-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkDirection {
    /// This issue is the link's source: "this *blocks* the other".
    Outward,
    /// This issue is the link's target: "this *is blocked by* the other".
    Inward,
}

impl LinkDirection {
    /// The other end's view of the same link.
    pub fn reversed(self) -> LinkDirection {
        match self {
            LinkDirection::Outward => LinkDirection::Inward,
            LinkDirection::Inward => LinkDirection::Outward,
        }
    }

    /// `outward` or `inward`, as replicas and the ledger write it.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkDirection::Outward => "outward",
            LinkDirection::Inward => "inward",
        }
    }

    /// Parses [`LinkDirection::as_str`].
    pub fn parse(text: &str) -> Option<LinkDirection> {
        match text {
            "outward" => Some(LinkDirection::Outward),
            "inward" => Some(LinkDirection::Inward),
            _ => None,
        }
    }
}

/// Another issue of the same tracker, as a link, a parent or a sub-task names it.
///
/// Its identity across sites is [`RelatedIssue::identity`]: the site that owns
/// the original and the id there, never a key (keys change when an issue moves).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RelatedIssue {
    /// Its stable id at this tracker.
    pub id: String,
    /// Its key at this tracker, for people (and rules that mention it in a text);
    /// never used to find it.
    pub key: String,
    /// Its origin marker, when sync created it from a peer's replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

impl RelatedIssue {
    /// Who the issue is across sites, as seen from `site` (the site whose tracker
    /// holds it): the origin sync created it from, else this site's own id.
    pub fn identity(&self, site: &str) -> Origin {
        self.origin.clone().unwrap_or_else(|| Origin {
            site: site.to_string(),
            id: self.id.clone(),
        })
    }
}

/// One link from an issue to another issue of the same tracker.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IssueLink {
    /// The link type's name (`Blocks`, `Relates`, `Duplicate`): one name for both
    /// ends, `direction` says which end this issue is.
    #[serde(rename = "type")]
    pub link_type: String,
    /// Which end of the link this issue is.
    pub direction: LinkDirection,
    /// The issue at the other end.
    pub issue: RelatedIssue,
}

/// One comment on an issue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment {
    /// Stable id at the owning tracker.
    pub id: String,
    /// Author user name.
    pub author: String,
    /// Creation time.
    #[serde(with = "timestamp")]
    pub created: DateTime<Utc>,
    /// Text.
    pub body: String,
    /// Internal comments never leave the site (ferry strips them after the
    /// outgoing rule, whatever the rule does).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
    /// Set when sync created this comment from a peer's replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// Metadata of one attached file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// Stable id at the owning tracker.
    pub id: String,
    /// File name as the user gave it.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex SHA-256 of the content.
    pub sha256: String,
    /// Who attached it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// When it was attached.
    #[serde(with = "timestamp")]
    pub created: DateTime<Utc>,
}

impl Issue {
    /// Sorts and deduplicates the list-valued fields so that equal issues compare
    /// (and serialise) equal whatever order a tracker returned them in.
    pub fn normalize(&mut self) {
        normalize_set(&mut self.labels);
        normalize_set(&mut self.components);
        sort_comments(&mut self.comments);
        sort_attachments(&mut self.attachments);
        self.links.sort();
        self.links.dedup();
        self.subtasks.sort_by(|a, b| compare_ids(&a.id, &b.id));
        self.subtasks.dedup();
    }
}

/// Orders ids the way trackers hand them out: numerically when both are numbers
/// ("9" before "10"), as text otherwise.
pub fn compare_ids(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

/// Puts comments in their canonical order: by time, then by id.
pub fn sort_comments(comments: &mut [Comment]) {
    comments.sort_by(|a, b| {
        a.created
            .cmp(&b.created)
            .then_with(|| compare_ids(&a.id, &b.id))
    });
}

/// Puts attachments in their canonical order: by time, then by id.
pub fn sort_attachments(attachments: &mut [Attachment]) {
    attachments.sort_by(|a, b| {
        a.created
            .cmp(&b.created)
            .then_with(|| compare_ids(&a.id, &b.id))
    });
}

/// Sorts and removes duplicates and empty strings.
pub fn normalize_set(values: &mut Vec<String>) {
    values.retain(|v| !v.is_empty());
    values.sort();
    values.dedup();
}

/// Truncates a timestamp to whole seconds: the precision every tracker keeps.
pub fn truncate_to_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

/// Formats a timestamp as ferry writes it everywhere: RFC 3339, UTC, whole seconds.
pub fn format_timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Parses an RFC 3339 timestamp into UTC.
pub fn parse_timestamp(s: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc))
}

/// Serde adapter writing timestamps as `2026-11-20T10:00:00Z`.
pub mod timestamp {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises as RFC 3339 UTC with whole seconds.
    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_timestamp(t))
    }

    /// Accepts any RFC 3339 timestamp and converts it to UTC.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_timestamp(&s).map_err(serde::de::Error::custom)
    }
}
