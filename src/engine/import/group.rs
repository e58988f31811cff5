//! New issues for a tracker on a server, created together.
//!
//! A server tracker's cost is round trips: a Jira 50 ms away creates, moves
//! and comments one new issue in some five of them, one after the other, so an
//! import of new issues one at a time is bound to a few issues a second
//! whatever Jira's work. A tracker that says so ([`Tracker::create_group`])
//! gets the new issues of a range in groups instead: their origin markers
//! looked up ahead in one request ([`Tracker::prefetch_origins`]), and their
//! creates and comments handed over at once ([`Tracker::create_many`]), which
//! Jira answers with one bulk create and the rest side by side.
//!
//! The order of writes keeps a killed run honest as the one-by-one import
//! does: each new issue's create (its comments with it) is journaled before
//! any of the group's writes, and finished with its link, baseline and applied
//! mark in one ledger transaction after them. A run killed in between leaves
//! the journal saying a create was under way, and the next run finds each
//! issue made by its origin marker (and each comment by its own) instead of
//! making it again; a create never tried leaves the same, and the lookup finds
//! nothing. A replica whose origin is that of a create still waiting in the
//! group waits for the group's writes first, so its lookup sees them.
//!
//! Only brand-new issues with no files to upload are grouped; everything else
//! (updates, attachments, deletions) is imported one by one as before. The
//! links and parent a grouped issue's replica asks for are recorded with its
//! link, to be made once their other end is here, as for any new issue.

use std::collections::{BTreeSet, HashSet};

use super::ImportedIssue;
use crate::ledger::Relation;
use crate::model::Origin;
use crate::rules::TargetIssue;
use crate::tracker::NewIssueWithComments;

/// A new issue waiting for the group's writes.
pub(super) struct PendingCreate {
    /// The replica path and blob.
    pub path: String,
    pub blob: String,
    /// The peer's issue.
    pub remote_id: String,
    pub remote_key: String,
    /// What to create.
    pub new: NewIssueWithComments,
    /// What the incoming rule wanted, for the baseline.
    pub remote_target: TargetIssue,
    /// The links and parent the replica asks for, recorded once the issue
    /// exists (they wait for their other end as the one-by-one import's do).
    pub wanted: BTreeSet<Relation>,
    /// The report line, filled in once the issue exists.
    pub done: ImportedIssue,
}

/// The creates waiting.
#[derive(Default)]
pub(super) struct Group {
    pending: Vec<PendingCreate>,
    origins: HashSet<Origin>,
}

impl Group {
    /// Adds a create.
    pub fn push(&mut self, create: PendingCreate) {
        self.origins.extend(create.new.issue.origin.clone());
        self.pending.push(create);
    }

    /// How many are waiting.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether a waiting create carries this origin.
    pub fn has(&self, origin: &Origin) -> bool {
        self.origins.contains(origin)
    }

    /// Takes the waiting creates.
    pub fn take(&mut self) -> Vec<PendingCreate> {
        self.origins.clear();
        std::mem::take(&mut self.pending)
    }
}
