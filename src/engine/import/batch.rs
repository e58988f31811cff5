//! Batches of replicas: their tracker writes and their ledger bookkeeping
//! committed together, instead of a transaction per write.
//!
//! Importing one replica with five comments used to cost some twenty-six
//! transactions (six tracker writes, a journal row before and after each, the
//! link, the baseline, the applied mark): on an embedded tracker, most of the
//! time of a large import. With a tracker that can batch
//! ([`Tracker::begin_batch`]), a batch of replicas is three commits, in this
//! order, which is what keeps a killed run honest:
//!
//! 1. the journal: a row per tracker write of the batch (one for consecutive
//!    writes of a kind to one issue, such as a replica's comments), unfinished;
//! 2. the tracker: every write of the batch at once;
//! 3. the bookkeeping: the journal rows finished, links, baselines, attachment
//!    records, applied marks.
//!
//! A run killed before 2 leaves nothing in the tracker: the next run redoes the
//! replicas, after saying (if 1 was done) which writes it is resuming. Killed
//! between 2 and 3, the journal tells what was written, and the next run finds
//! each write by its origin marker instead of repeating it, as after a kill
//! between a write and its journal row. The bookkeeping never runs before the
//! tracker has committed: a link or an applied mark to a write that was rolled
//! back would lose it (and a rolled-back issue's id may be given to the next).
//!
//! Reads in between see the batch's tracker writes (same connection) but not its
//! pending bookkeeping; a replica about an issue the batch already wrote or
//! keeps bookkeeping for commits the batch first ([`Batch::touches`]), so it
//! reads the ledger as a one-by-one import would, and whatever it records in
//! the ledger at once (an attachment's hash, say) is about committed writes.
//!
//! A tracker that cannot batch (a server) writes at once: each write is
//! journaled before and after it runs, the bookkeeping is done at once, and every
//! replica is its own batch.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::{ImportFailure, StepKind, fatal};
use crate::failpoint;
use crate::ledger::{Ledger, LedgerError, NewStep};
use crate::site::Site;
use crate::tracker::{Tracker, TrackerError};

/// At most this many replicas per batch: what a kill makes the next run redo.
const MAX_REPLICAS: usize = 500;

/// At most this long per batch: the tracker's write lock is held meanwhile, and
/// a person's edit in the tracker waits for it.
const MAX_TIME: Duration = Duration::from_millis(500);

/// A ledger write that waits for the tracker's commit.
type LedgerWrite = Box<dyn FnOnce(&mut Ledger) -> Result<(), LedgerError>>;

/// The replica a write or a ledger record belongs to.
pub(super) struct Subject<'a> {
    /// The replica path.
    pub path: &'a str,
    /// The replica blob.
    pub blob: &'a str,
}

/// The uncommitted part of an import; see the module documentation.
pub(super) struct Batch {
    peer: String,
    /// The tracker holds the writes until [`Batch::flush`] (it can batch).
    deferred: bool,
    /// Tracker writes done in the batch, to journal before the commit.
    steps: Vec<(NewStep, StepKind)>,
    /// Bookkeeping to do after the commit.
    later: Vec<LedgerWrite>,
    /// Replicas done, (path, blob): marked applied after the commit.
    applied: Vec<(String, String)>,
    /// The peer's issues and the local issues the batch wrote or keeps
    /// bookkeeping for.
    remote_ids: HashSet<String>,
    local_ids: HashSet<String>,
    /// Replicas in the batch, and when the first one came.
    replicas: usize,
    started: Option<Instant>,
}

impl Batch {
    /// Opens the first batch of an import from `peer`.
    pub fn open(site: &mut Site, peer: &str) -> Result<Batch, TrackerError> {
        Ok(Batch {
            peer: peer.to_string(),
            deferred: site.tracker.begin_batch()?,
            steps: Vec::new(),
            later: Vec::new(),
            applied: Vec::new(),
            remote_ids: HashSet::new(),
            local_ids: HashSet::new(),
            replicas: 0,
            started: None,
        })
    }

    /// Whether the tracker holds the writes until [`Batch::flush`].
    pub fn deferred(&self) -> bool {
        self.deferred
    }

    /// The peer the import is from.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Counts one more replica in the batch.
    pub fn enter(&mut self) {
        self.replicas += 1;
        self.started.get_or_insert_with(Instant::now);
    }

    /// Whether it is time to commit: the batch is at its size or age limit (a
    /// tracker that cannot batch: after every replica).
    pub fn full(&self) -> bool {
        !self.deferred
            || self.replicas >= MAX_REPLICAS
            || self.started.is_some_and(|t| t.elapsed() >= MAX_TIME)
    }

    /// Whether the batch wrote or keeps bookkeeping for the peer's issue
    /// `remote_id` or the local issue `local_id`: then it must be committed
    /// before the ledger is read or written about it.
    pub fn touches(&self, remote_id: Option<&str>, local_id: Option<&str>) -> bool {
        remote_id.is_some_and(|id| self.remote_ids.contains(id))
            || local_id.is_some_and(|id| self.local_ids.contains(id))
    }

    /// Runs one tracker write of a replica's import. Batched, the write is
    /// journaled (and its fail point `after-<kind>` reached) at the commit;
    /// otherwise it is journaled before and after it runs, and the step is
    /// closed whether the write succeeded or failed: only a run killed during the
    /// write leaves it open. The fail point sits after the write, before the
    /// journal hears that it is done.
    pub fn write<T>(
        &mut self,
        site: &mut Site,
        subject: &Subject,
        kind: StepKind,
        target: Option<&str>,
        write: impl FnOnce(&mut dyn Tracker) -> Result<T, TrackerError>,
    ) -> Result<T, ImportFailure> {
        if self.deferred {
            // A failed write left nothing in the batch: nothing to journal.
            let value = write(site.tracker.as_mut())?;
            self.local_ids.extend(target.map(str::to_string));
            let step = NewStep {
                path: subject.path.to_string(),
                blob: subject.blob.to_string(),
                kind: kind.name(),
                target: target.map(str::to_string),
            };
            self.steps.push((step, kind));
            return Ok(value);
        }
        let step = site
            .ledger
            .begin_step(&self.peer, subject.path, subject.blob, kind.name(), target)
            .map_err(fatal)?;
        let result = write(site.tracker.as_mut());
        failpoint::hit(kind.failpoint());
        site.ledger.finish_step(step).map_err(fatal)?;
        Ok(result?)
    }

    /// Ledger bookkeeping about the local issue `local_id` (and the peer's issue
    /// `remote_id`) that must wait for the batch's tracker writes: done at the
    /// commit, or at once when the tracker does not batch.
    pub fn later(
        &mut self,
        site: &mut Site,
        remote_id: Option<&str>,
        local_id: &str,
        write: impl FnOnce(&mut Ledger) -> Result<(), LedgerError> + 'static,
    ) -> Result<(), ImportFailure> {
        if !self.deferred {
            return write(&mut site.ledger).map_err(fatal);
        }
        self.remote_ids.extend(remote_id.map(str::to_string));
        self.local_ids.insert(local_id.to_string());
        self.later.push(Box::new(write));
        Ok(())
    }

    /// Records a replica as done: marked applied (its journal cleared, its
    /// errors resolved) at the commit.
    pub fn applied(&mut self, subject: &Subject) {
        self.applied
            .push((subject.path.to_string(), subject.blob.to_string()));
    }

    /// Commits the batch (journal, tracker, bookkeeping, in that order) and, with
    /// `reopen`, opens the next one.
    pub fn flush(&mut self, site: &mut Site, reopen: bool) -> anyhow::Result<()> {
        let steps = std::mem::take(&mut self.steps);
        let later = std::mem::take(&mut self.later);
        let applied = std::mem::take(&mut self.applied);
        self.remote_ids.clear();
        self.local_ids.clear();
        self.replicas = 0;
        self.started = None;
        if !self.deferred {
            return mark_applied(site, &self.peer, &applied, Vec::new(), later);
        }
        let (mut journal, kinds): (Vec<NewStep>, Vec<StepKind>) = steps.into_iter().unzip();
        // One row for a replica's run of writes of one kind to one issue (its
        // five comments, say): all a later run or an operator learns from it.
        journal.dedup();
        let ids = if journal.is_empty() {
            Vec::new()
        } else {
            site.ledger.begin_steps(&self.peer, &journal)?
        };
        site.tracker.commit_batch()?;
        for kind in kinds {
            failpoint::hit(kind.failpoint());
        }
        // The steps of replicas marked applied go with the mark; only those of
        // replicas that failed after some writes are kept, finished.
        let done: HashSet<&str> = applied.iter().map(|(path, _)| path.as_str()).collect();
        let finished = ids
            .into_iter()
            .zip(&journal)
            .filter(|(_, step)| !done.contains(step.path.as_str()))
            .map(|(id, _)| id)
            .collect();
        mark_applied(site, &self.peer, &applied, finished, later)?;
        if reopen {
            self.deferred = site.tracker.begin_batch()?;
        }
        Ok(())
    }

    /// Drops the batch after a failure that stops the run: its tracker writes are
    /// rolled back, and with them its bookkeeping goes, as if the run had been
    /// killed before the commit.
    pub fn abandon(self, site: &mut Site) {
        if self.deferred
            && let Err(e) = site.tracker.rollback_batch()
        {
            tracing::warn!("rolling back the import's last batch: {e}");
        }
    }
}

/// The bookkeeping of a committed batch, in one ledger transaction: journal rows
/// finished, the pending writes, the applied marks.
fn mark_applied(
    site: &mut Site,
    peer: &str,
    applied: &[(String, String)],
    finished: Vec<i64>,
    later: Vec<LedgerWrite>,
) -> anyhow::Result<()> {
    if applied.is_empty() && finished.is_empty() && later.is_empty() {
        return Ok(());
    }
    site.ledger.in_transaction(|ledger| {
        for id in finished {
            ledger.finish_step(id)?;
        }
        for write in later {
            write(ledger)?;
        }
        for (path, blob) in applied {
            ledger.mark_applied(peer, path, blob)?;
            ledger.resolve_subject(peer, path)?;
        }
        Ok(())
    })?;
    for _ in applied {
        failpoint::hit("after-mark-applied");
    }
    Ok(())
}
