//! Trackers: one trait, one module per connector.
//!
//! The engine never knows which tracker it talks to. Everything it needs (find what
//! changed, read one issue, create, update, comment, delete, and find an issue or
//! comment by its origin marker so that a retried create never duplicates) is on
//! [`Tracker`]. Each connector is exercised by the same contract tests.

#[cfg(test)]
mod contract;
pub mod jira;
pub mod local;
mod parallel;
pub mod redmine;
pub mod retry;
pub use parallel::DEFAULT_CONCURRENCY;
pub(crate) use parallel::side_by_side;
mod seen;

use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use crate::model::{Attachment, Comment, FieldValue, Issue, LinkDirection, Origin};

/// What a tracker can fail with. The variants are the engine's error levels: an
/// issue-level failure fails one issue, the others stop the run.
#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    /// No issue with that id or key.
    #[error("no issue {0} in the tracker")]
    NotFound(String),
    /// The tracker refused the change for this issue (validation, workflow).
    #[error("the tracker refused the change to {issue}: {message}")]
    Rejected {
        /// Issue id or key.
        issue: String,
        /// The tracker's own words.
        message: String,
    },
    /// The tracker did not give this issue this time but may on the next run (an
    /// issue ferry has seen answering 404 before a later run confirms the
    /// deletion, a 403 on one issue): fails that issue, which is retried.
    #[error("{issue}: {message}")]
    Transient {
        /// Issue key.
        issue: String,
        /// What happened and what ferry does about it.
        message: String,
    },
    /// The tracker cannot be used at all (unreachable, bad credentials, corrupt db).
    #[error("tracker unavailable: {0}")]
    Unavailable(String),
}

impl TrackerError {
    /// How far this failure reaches wherever it surfaces: a tracker that cannot
    /// be used at all is the site's. The others concern one issue; the step that
    /// meets them decides their level.
    pub fn level(&self) -> Option<crate::failure::Level> {
        match self {
            TrackerError::Unavailable(_) => Some(crate::failure::Level::Site),
            TrackerError::NotFound(_)
            | TrackerError::Rejected { .. }
            | TrackerError::Transient { .. } => None,
        }
    }
}

/// Fields a create or an update sets. `None` leaves a field as it is; for the
/// optional text fields `Some(None)` clears them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IssuePatch {
    /// Issue type.
    pub issue_type: Option<String>,
    /// Summary.
    pub summary: Option<String>,
    /// Description (`Some(None)` clears it).
    pub description: Option<Option<String>>,
    /// Status.
    pub status: Option<String>,
    /// Priority (`Some(None)` clears it).
    pub priority: Option<Option<String>>,
    /// Resolution, for a tracker that keeps one (Jira sets it with the status
    /// change that needs it); others ignore it.
    pub resolution: Option<Option<String>>,
    /// Assignee (`Some(None)` clears it).
    pub assignee: Option<Option<String>>,
    /// Reporter (`Some(None)` clears it).
    pub reporter: Option<Option<String>>,
    /// The full new label set.
    pub labels: Option<Vec<String>>,
    /// The full new component set.
    pub components: Option<Vec<String>>,
    /// Custom fields to set; a JSON `null` removes the field.
    pub fields: BTreeMap<String, FieldValue>,
    /// Links to make; one that is already there is left as it is.
    pub add_links: Vec<LinkChange>,
    /// Links to remove; one that is not there is not an error.
    pub remove_links: Vec<LinkChange>,
    /// The parent, by issue id (`Some(None)` makes the issue a top-level one).
    pub parent: Option<Option<String>>,
}

/// A link to make or remove, from the issue a patch is for to the issue `other`
/// of the same tracker.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LinkChange {
    /// The link type's name (`Blocks`).
    pub link_type: String,
    /// Which end of the link the patched issue is.
    pub direction: LinkDirection,
    /// The other issue's id.
    pub other: String,
}

impl IssuePatch {
    /// True when applying it would change nothing.
    pub fn is_empty(&self) -> bool {
        *self == IssuePatch::default()
    }
}

/// An issue to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewIssue {
    /// Project key; the tracker creates the project if it has to and can.
    pub project: String,
    /// Values; unset ones take the tracker's defaults.
    pub patch: IssuePatch,
    /// Who creates it.
    pub author: String,
    /// The origin marker a retried create looks up with [`Tracker::find_by_origin`].
    pub origin: Option<Origin>,
}

/// A comment to add.
#[derive(Debug, Clone, PartialEq)]
pub struct NewComment {
    /// Author user name.
    pub author: String,
    /// Text.
    pub body: String,
    /// Internal comments stay on this site.
    pub internal: bool,
    /// The origin marker of a comment sync copies from a peer.
    pub origin: Option<Origin>,
}

/// An issue to create with the comments it gets at once
/// ([`Tracker::create_many`]).
#[derive(Debug, Clone, PartialEq)]
pub struct NewIssueWithComments {
    /// The issue.
    pub issue: NewIssue,
    /// Its comments, in order.
    pub comments: Vec<NewComment>,
}

/// What [`Tracker::create_many`] did for one issue.
#[derive(Debug)]
pub struct Created {
    /// The issue as stored (its comments included), or why it was not made.
    pub issue: Result<Issue, TrackerError>,
    /// Each comment as stored, in order, up to the first one that failed
    /// (whose error is last); empty when the issue was not made.
    pub comments: Vec<Result<Comment, TrackerError>>,
}

impl Created {
    /// Whether a failure here stops the run (the tracker is unavailable).
    pub fn unavailable(&self) -> bool {
        matches!(self.issue, Err(TrackerError::Unavailable(_)))
            || self
                .comments
                .iter()
                .any(|c| matches!(c, Err(TrackerError::Unavailable(_))))
    }
}

/// A file to attach. The content is a file on disk that the engine has already
/// checked against `sha256`: connectors stream it from there (and can read it again
/// for a retried upload) instead of holding it in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAttachment<'a> {
    /// File name as the tracker should show it, already made safe by the engine.
    pub name: &'a str,
    /// Who attaches it.
    pub author: &'a str,
    /// The content.
    pub path: &'a Path,
    /// Size of the content in bytes.
    pub size: u64,
    /// Lower-case hex SHA-256 of the content.
    pub sha256: &'a str,
}

/// Which tracker a connector talks to, as the ledger remembers it (see
/// [`crate::identity`]): a copy of a site must not pass for the original.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TrackerInstance {
    /// Connector kind (`local`).
    pub kind: String,
    /// Where it is: the database file, or the server's URL.
    pub location: String,
    /// An id the tracker itself keeps, the same from every machine: the local
    /// database's instance id, a server's own id.
    pub id: String,
}

/// What a site asks of its tracker, for the checks `init` and `doctor` make
/// before any run: the permissions they check follow from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// Some connection imports: issues are created, edited, moved through the
    /// workflow, commented and attached to.
    pub import: bool,
    /// Some incoming rule may delete issues (`delete_issue = true`).
    pub delete: bool,
}

/// One check of [`Tracker::preflight`]: its name, and what was found or what
/// is wrong and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Short name (`jira project`).
    pub name: String,
    /// `Ok(what was found)` or `Err((what is wrong, what to do))`.
    pub outcome: Result<String, (String, String)>,
}

/// A connector to one issue tracker.
pub trait Tracker {
    /// Checks beyond reaching the tracker that catch a wrong setting before the
    /// first run does: who the credentials belong to, that the project exists,
    /// the permissions `needs` call for. None for a tracker that has nothing to
    /// check beyond [`Tracker::instance`].
    fn preflight(&self, needs: Needs) -> Vec<Probe> {
        let _ = needs;
        Vec::new()
    }

    /// The statuses an issue of the project can be in, in the tracker's order,
    /// for `init` to write the incoming rule's status map with the names this
    /// tracker really has; `None` for a tracker that does not list them.
    fn statuses(&self) -> Result<Option<Vec<String>>, TrackerError> {
        Ok(None)
    }

    /// Whether making or removing a link moves both issues' `updated`, so that
    /// an export sees a link made in the tracker at once. Where it does not
    /// (Redmine), such a link travels with the next change of either issue.
    fn link_changes_move_updated(&self) -> bool {
        true
    }

    /// Which tracker this is.
    fn instance(&self) -> Result<TrackerInstance, TrackerError>;

    /// The time by the tracker's own clock, the one that stamps `updated`, in
    /// whole seconds. Once that clock has passed a second, no change can be
    /// stamped with it any more: an export cursor can then move past it.
    fn now(&self) -> Result<DateTime<Utc>, TrackerError>;

    /// Issues (with comments and attachments, including deleted ones as
    /// tombstones) whose `updated` is at or after `since`; all of them when `None`.
    /// At-or-after, not after: a cursor in whole seconds must not miss a change made
    /// in the same second as the previous run's last one.
    fn changed_since(&self, since: Option<DateTime<Utc>>) -> Result<Vec<Issue>, TrackerError>;

    /// The ids of the issues [`Tracker::changed_since`] returns, in its order,
    /// for a tracker that can list them without reading the issues; `None` for
    /// one that cannot. An export of many issues then reads them a page at a
    /// time with [`Tracker::get_many`] instead of holding all of them at once.
    fn changed_ids(
        &self,
        since: Option<DateTime<Utc>>,
    ) -> Result<Option<Vec<String>>, TrackerError> {
        let _ = since;
        Ok(None)
    }

    /// One issue by stable id, `None` when it does not exist.
    fn get(&self, id: &str) -> Result<Option<Issue>, TrackerError>;

    /// The issues with these ids, in this order; ids with no issue are left out.
    fn get_many(&self, ids: &[String]) -> Result<Vec<Issue>, TrackerError> {
        let mut issues = Vec::with_capacity(ids.len());
        for id in ids {
            issues.extend(self.get(id)?);
        }
        Ok(issues)
    }

    /// One issue by its current key (`SUP-1`), the way people name issues; deleted
    /// ones included (with `deleted: true`) so that a caller can say the issue was
    /// deleted rather than never existed.
    fn get_by_key(&self, key: &str) -> Result<Option<Issue>, TrackerError>;

    /// The issue carrying this origin marker, if sync already created it.
    fn find_by_origin(&self, origin: &Origin) -> Result<Option<Issue>, TrackerError>;

    /// Creates an issue and returns it as stored.
    fn create(&mut self, issue: &NewIssue) -> Result<Issue, TrackerError>;

    /// How many new issues an import hands to [`Tracker::create_many`] at once,
    /// and whose origins it looks up ahead with [`Tracker::prefetch_origins`]:
    /// more than one for a tracker whose round trips cost more than its work
    /// (a server), one for a tracker that gains nothing from it.
    fn create_group(&self) -> usize {
        1
    }

    /// Looks up, ahead, the issues carrying these origin markers, so that the
    /// [`Tracker::find_by_origin`] of each that follows costs no round trip. A
    /// hint: a tracker may ignore it.
    fn prefetch_origins(&self, origins: &[Origin]) -> Result<(), TrackerError> {
        let _ = origins;
        Ok(())
    }

    /// Creates several new issues, each with its comments, and says what
    /// became of each, in order. The issues are independent: one refused does
    /// not stop the others, but once the tracker is unavailable the ones left
    /// are not tried (the answer is shorter than `issues`). A caller journals
    /// the creates before, since a run killed inside may have made any of them
    /// (each carries its origin marker for the next run to find).
    fn create_many(&mut self, issues: &[NewIssueWithComments]) -> Vec<Created> {
        let mut out = Vec::with_capacity(issues.len());
        for new in issues {
            let created = match self.create(&new.issue) {
                Ok(issue) => {
                    let mut comments = Vec::new();
                    for comment in &new.comments {
                        let added = self.add_comment(&issue.id, comment);
                        let failed = added.is_err();
                        comments.push(added);
                        if failed {
                            break;
                        }
                    }
                    Created {
                        issue: Ok(issue),
                        comments,
                    }
                }
                Err(e) => Created {
                    issue: Err(e),
                    comments: Vec::new(),
                },
            };
            let stop = created.unavailable();
            out.push(created);
            if stop {
                break;
            }
        }
        out
    }

    /// Applies a patch to an existing issue (bumping `updated` only when something
    /// really changed) and returns the issue as stored.
    fn update(&mut self, id: &str, patch: &IssuePatch, author: &str)
    -> Result<Issue, TrackerError>;

    /// Adds a comment and returns it as stored.
    fn add_comment(&mut self, id: &str, comment: &NewComment) -> Result<Comment, TrackerError>;

    /// Deletes an issue (it then appears to `changed_since` as a tombstone).
    fn delete(&mut self, id: &str, author: &str) -> Result<(), TrackerError>;

    /// Streams the content of attachment `attachment` of issue `id` into `out` and
    /// returns how many bytes it wrote. Trackers that do not know an attachment's
    /// SHA-256 report it empty in [`Issue::attachments`]; the engine hashes what this
    /// writes, so it never trusts a hash it has not computed.
    fn read_attachment(
        &self,
        id: &str,
        attachment: &str,
        out: &mut dyn Write,
    ) -> Result<u64, TrackerError>;

    /// Attaches a file to issue `id` (bumping its `updated`) and returns it as stored.
    fn attach(&mut self, id: &str, file: &NewAttachment) -> Result<Attachment, TrackerError>;

    /// Removes one attachment from issue `id` (bumping its `updated`); removing one
    /// that is already gone is not an error, so a retried step succeeds.
    fn delete_attachment(
        &mut self,
        id: &str,
        attachment: &str,
        author: &str,
    ) -> Result<(), TrackerError>;

    /// Starts a batch: the writes that follow take effect together at
    /// [`Tracker::commit_batch`], or not at all ([`Tracker::rollback_batch`], or
    /// the process dying first), while reads in between already see them. A write
    /// that fails inside a batch leaves no trace and does not undo the others.
    ///
    /// An import groups many replicas' writes this way, because a transaction per
    /// write is most of its cost on an embedded database. Returns `false` when
    /// the tracker cannot (a server's writes take effect one by one): its writes
    /// then take effect at once, and the caller journals each on its own.
    fn begin_batch(&mut self) -> Result<bool, TrackerError> {
        Ok(false)
    }

    /// Makes the writes of the batch take effect; nothing when there is none.
    fn commit_batch(&mut self) -> Result<(), TrackerError> {
        Ok(())
    }

    /// Drops the writes of the batch; nothing when there is none.
    fn rollback_batch(&mut self) -> Result<(), TrackerError> {
        Ok(())
    }
}
