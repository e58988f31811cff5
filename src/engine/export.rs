//! Export: local issues → outgoing rule → replicas → one commit on this site's
//! branch for the peer.
//!
//! Crash safety comes from the order of writes, not from a transaction spanning git
//! and SQLite: the commit is made first, then the ledger (shared issues, cursor). A
//! crash in between only means the next run re-evaluates the same issues, finds
//! byte-identical replicas already committed, and makes no new commit.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use git2::{ObjectType, Oid};

use super::{IssueError, attachments, issue_error, load_rule};
use crate::config::Connection;
use rayon::prelude::*;

use crate::exchange::{Content, Exchange, FileWrite, NewBlobs, applied_ref, blob_id};
use crate::failpoint;
use crate::ledger::NewExport;
use crate::model::Issue;
use crate::replica::{
    Format, MAX_REPLICA_BYTES, Replica, SITE_FILE, SiteFile, parse_replica_path, parse_stored_path,
    stored_path,
};
use crate::rules::{MAX_STRING_SIZE, OutgoingContext, RuleScript};
use crate::site::Site;
use crate::tracker::Tracker;
use crate::words::plural;

#[cfg(test)]
mod tests;

/// What one export did.
#[derive(Debug, Clone, Default)]
pub struct ExportReport {
    /// The new commit, `None` when nothing changed.
    pub commit: Option<Oid>,
    /// Keys of issues whose replica was written (new or changed).
    pub written: Vec<String>,
    /// Keys of issues the rule stopped sharing (replica removed).
    pub removed: Vec<String>,
    /// Issues that failed.
    pub errors: Vec<IssueError>,
}

/// The issues changed since the oldest export cursor of the connections a run
/// exports on, read from the tracker once and shared by those exports: a no-op
/// run with many connections costs one read, not one per connection. More than
/// a `PAGE` of them (a first export, a mass change) are not held: only their
/// ids, and each export reads them a page at a time, so memory follows the
/// page, not the tracker.
pub struct Changed {
    since: Option<DateTime<Utc>>,
    issues: ChangedIssues,
    /// The tracker's clock just before the read.
    read_at: DateTime<Utc>,
}

enum ChangedIssues {
    /// Read once, shared by the connections.
    Read(Vec<Issue>),
    /// Ids, in the tracker's order, read a page at a time by each export.
    Listed(Vec<String>),
}

/// The most issues an export holds at once, when the tracker lists ids.
const PAGE: usize = 1_000;

impl Changed {
    /// Reads what `connections` need (`None` cursor: everything).
    pub fn read(site: &Site, connections: &[&Connection]) -> anyhow::Result<Changed> {
        let mut since = None;
        for (i, c) in connections.iter().enumerate() {
            let cursor = site.ledger.cursor(&c.peer)?;
            since = match (i, since, cursor) {
                (0, _, cursor) => cursor,
                (_, Some(a), Some(b)) => Some(a.min(b)),
                _ => None,
            };
        }
        // The clock first: a change made after it is stamped with its second or
        // a later one, whatever the read below saw.
        let read_at = site.tracker.now()?;
        let issues = match site.tracker.changed_ids(since)? {
            Some(ids) if ids.len() > PAGE => ChangedIssues::Listed(ids),
            Some(ids) => ChangedIssues::Read(site.tracker.get_many(&ids)?),
            None => ChangedIssues::Read(site.tracker.changed_since(since)?),
        };
        Ok(Changed {
            since,
            issues,
            read_at,
        })
    }

    /// How many issues there are to look at, at most.
    fn len(&self) -> usize {
        match &self.issues {
            ChangedIssues::Read(issues) => issues.len(),
            ChangedIssues::Listed(ids) => ids.len(),
        }
    }

    /// The issues one connection's export looks at, a page at a time: changed at
    /// or after its cursor (at-or-after, as
    /// [`crate::tracker::Tracker::changed_since`]).
    fn pages<'a>(
        &'a self,
        tracker: &'a dyn Tracker,
        cursor: Option<DateTime<Utc>>,
    ) -> impl Iterator<Item = anyhow::Result<Page<'a>>> + 'a {
        debug_assert!(self.since.is_none() || cursor.is_some_and(|c| Some(c) >= self.since));
        let keep = move |issue: &Issue| cursor.is_none_or(|c| issue.updated >= c);
        let pages: Box<dyn Iterator<Item = anyhow::Result<Page<'a>>>> = match &self.issues {
            // Shared by the connections: lent, not copied, to each.
            ChangedIssues::Read(issues) => Box::new(std::iter::once(Ok(Page::Lent(
                issues.iter().filter(|issue| keep(issue)).collect(),
            )))),
            ChangedIssues::Listed(ids) => Box::new(ids.chunks(PAGE).map(move |ids| {
                let mut issues = tracker.get_many(ids)?;
                issues.retain(|issue| keep(issue));
                Ok(Page::Read(issues))
            })),
        };
        pages
    }
}

/// A page of issues to export.
enum Page<'a> {
    /// From those [`Changed`] holds.
    Lent(Vec<&'a Issue>),
    /// Read for this page.
    Read(Vec<Issue>),
}

impl Page<'_> {
    fn issues(&self) -> Vec<&Issue> {
        match self {
            Page::Lent(issues) => issues.clone(),
            Page::Read(issues) => issues.iter().collect(),
        }
    }
}

/// Exports the issues of `connection` that changed since the last export, taken
/// from `changed` (read for this connection among others).
pub fn export(
    site: &mut Site,
    connection: &Connection,
    changed: &Changed,
) -> anyhow::Result<ExportReport> {
    let me = site.name().to_string();
    let peer = connection.peer.as_str();
    let rules = load_rule(&site.config, &connection.settings.outgoing)?;
    let cursor = site.ledger.cursor(peer)?;
    super::release::prepare(site, connection)?;
    let branch = super::release::export_ref(&me, connection);
    let head = site.exchange.resolve(&branch)?;
    let format = writing_format(site, peer, head)?;
    let head = match head {
        Some(head) => Some(upgrade_branch(site, (&me, peer, &branch), head, format)?),
        None => None,
    };
    // Baselines only serve imports (see `conflict`); a connection that never
    // imports keeps none.
    let keeps_baselines = connection.settings.direction.imports();
    site.ledger.drop_staged_exports(peer)?;
    let shared_now = Shared::read(&site.exchange, head, format, changed.len())?;
    tracing::info!(
        %peer,
        since = %cursor.map_or_else(|| "-".into(), |c| crate::model::format_timestamp(&c)),
        issues = changed.len(),
        "export"
    );
    let progress = crate::progress::bar(changed.len(), format!("export {peer}"));
    let mut run = Gathered {
        newest: cursor,
        // Issues shared or unshared by hand that no export acted on yet: looked
        // at in this run even if unchanged (in the follow-up page, unless a
        // page had them).
        waiting_picks: site.ledger.unexported_picks(peer)?,
        ..Gathered::default()
    };
    let mut follow_up = false;
    let mut pages = changed.pages(&*site.tracker, cursor);
    let mut next = pages.next();
    while let Some(page) = next.take() {
        let page = page?;
        let page = page.issues();
        // The last page re-renders issues already looked at (or unchanged):
        // it neither counts nor moves the cursor.
        let again = follow_up;
        if !again {
            progress.inc(page.len() as u64);
        }
        let ids: Vec<&str> = page.iter().map(|issue| issue.id.as_str()).collect();
        let known = Known {
            connected: site.ledger.connected_among(peer, &ids)?,
            picks: site.ledger.picks_among(peer, &ids)?,
        };
        let candidates = run.select(connection, &shared_now, format, page, &known, again)?;
        let shared = shared_relatives(site, peer, &candidates, &run.exported_now)?;

        // The rule and the serialisation are pure: they run on every core while
        // this thread reads the next page. What reads or writes the site
        // (attachments, ledger) stays on this thread, in order.
        let context = OutgoingContext {
            site: &me,
            peer,
            format,
            shared: &shared,
        };
        let rendered: Vec<Rendered> = std::thread::scope(|scope| {
            let worker = scope.spawn(|| {
                candidates
                    .par_iter()
                    .map(|(issue, _)| Rendered::new(&rules, &context, issue))
                    .collect()
            });
            if !again {
                next = pages.next();
            }
            worker
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        });
        let mut new = Vec::new();
        let mut carried = Vec::new();
        for (candidate, rendered) in candidates.into_iter().zip(rendered) {
            let outcome =
                finish_rendering(site, connection, head, candidate.0, rendered, &mut run)?;
            let taken = run.take(
                site,
                connection,
                &shared_now,
                candidate,
                outcome,
                &known,
                again,
            )?;
            if let Some((blob, kept)) = taken {
                new.push(blob);
                carried.extend(kept);
            }
        }
        run.blobs.add(&site.exchange, new)?;
        // The field values of the issues whose new replica goes into this
        // export's commit, staged in the ledger page by page until the commit
        // exists.
        if keeps_baselines && !carried.is_empty() {
            site.ledger.stage_exports(peer, &carried)?;
        }
        if next.is_none() && !follow_up {
            follow_up = true;
            let again = run.follow_up(site, peer)?;
            if !again.is_empty() {
                next = Some(Ok(Page::Read(site.tracker.get_many(&again)?)));
            }
        }
    }

    let acted = run.acted_picks();
    let cursor = next_cursor(run.oldest_failure, run.newest, changed.read_at);
    let Gathered {
        mut report,
        mut writes,
        blobs,
        exported_ids,
        issue_count,
        comment_count,
        ..
    } = run;
    if !report.written.is_empty() || !report.removed.is_empty() {
        writes.push(site_file(site, &me, peer)?);
        let message = commit_message(&me, peer, &report, issue_count, comment_count);
        report.commit = site
            .exchange
            .commit_with(blobs, &branch, &writes, &message, &me)?;
        failpoint::hit("after-commit");
    }
    site.ledger.mark_shared(peer, &exported_ids)?;
    site.ledger.mark_picks_exported(peer, &acted)?;
    match report.commit.filter(|_| keeps_baselines) {
        Some(commit) => site
            .ledger
            .record_staged_exports(peer, &commit.to_string())?,
        None => site.ledger.drop_staged_exports(peer)?,
    }
    site.ledger.set_cursor(peer, cursor)?;
    site.ledger.checkpoint()?;
    failpoint::hit("after-cursor");
    Ok(report)
}

/// What the ledger says of the issues of one page.
struct Known {
    /// Connected before this run: shared with the peer, or the peer's own.
    connected: HashSet<String>,
    /// Shared (`true`) or unshared (`false`) by hand.
    picks: HashMap<String, bool>,
}

/// What one export gathers, page by page, until its commit.
#[derive(Default)]
struct Gathered {
    report: ExportReport,
    /// The tree changes of the commit.
    writes: Vec<FileWrite>,
    /// The blobs they need, packed as the pages go.
    blobs: NewBlobs,
    /// Attachments already in the commit.
    shipped: attachments::Shipped,
    /// Issues whose replica the commit holds: recorded as shared.
    exported_ids: Vec<String>,
    /// The newest change looked at, for the cursor.
    newest: Option<DateTime<Utc>>,
    /// The oldest change of an issue that failed: the cursor stops at it.
    oldest_failure: Option<DateTime<Utc>>,
    /// For the commit message.
    issue_count: usize,
    comment_count: usize,
    /// Issues whose replica this run writes or keeps: relations to them travel.
    exported_now: BTreeSet<String>,
    /// Paths written in this run, so a second rendering replaces the first.
    written_paths: BTreeSet<String>,
    /// The issues related to those this run shares for the first time: their
    /// replicas were rendered (or left alone) while the relation could not
    /// travel yet, so they are rendered once more at the end (see
    /// [`render_again`]).
    related_to_new: BTreeSet<String>,
    /// Choices made by hand that no export acted on yet.
    waiting_picks: Vec<String>,
    /// Those a page had.
    picked: BTreeSet<String>,
    /// Issues that failed.
    failed_ids: BTreeSet<String>,
}

impl Gathered {
    /// The issues of a page the rule is asked about, in the tracker's order,
    /// each with its replica path; what an issue unshared by hand, or moved to
    /// another project, leaves behind on the branch goes into the writes.
    fn select<'i>(
        &mut self,
        connection: &Connection,
        shared_now: &Shared,
        format: Format,
        page: Vec<&'i Issue>,
        known: &Known,
        again: bool,
    ) -> anyhow::Result<Vec<(&'i Issue, String)>> {
        let mut candidates = Vec::new();
        for issue in page {
            if !again {
                self.newest = self.newest.max(Some(issue.updated));
            }
            if connection.remote_project(&issue.project).is_none() {
                continue;
            }
            let pick = known.picks.get(&issue.id).copied();
            let path = stored_path(&issue.project, &issue.id, format);
            if pick == Some(false) {
                // Unshared by hand: its replica goes (the peer keeps its copy),
                // and nothing of it is written again, whatever the query says.
                if self.picked.insert(issue.id.clone()) {
                    let mut gone = shared_now.elsewhere(&issue.id, &path)?;
                    if shared_now.blob(&path)?.is_some() {
                        gone.push(path);
                    }
                    if !gone.is_empty() {
                        self.report.removed.push(issue.key.clone());
                    }
                    self.writes.extend(gone.into_iter().map(|path| FileWrite {
                        path,
                        content: None,
                    }));
                }
                continue;
            }
            if pick.is_none()
                && !known.connected.contains(&issue.id)
                && (issue.deleted || !connection.query.matches(issue))
            {
                continue;
            }
            if pick == Some(true) {
                self.picked.insert(issue.id.clone());
            }
            // An issue moved to another project: its replica moves with it (same
            // id, new path), so the old path goes, or the peer would hold two
            // replicas of one issue.
            for old in shared_now.elsewhere(&issue.id, &path)? {
                self.writes.push(FileWrite {
                    path: old,
                    content: None,
                });
            }
            candidates.push((issue, path));
        }
        Ok(candidates)
    }

    /// Takes what the rule made of one candidate: its replica written when it
    /// changed (returned with its blob and its baseline values), removed when the
    /// rule stopped sharing it, or its error recorded.
    #[allow(clippy::too_many_arguments)]
    fn take(
        &mut self,
        site: &Site,
        connection: &Connection,
        shared_now: &Shared,
        (issue, path): (&Issue, String),
        outcome: Result<Option<Outgoing>, String>,
        known: &Known,
        again: bool,
    ) -> anyhow::Result<Option<NewReplica>> {
        match outcome {
            Ok(Some(Outgoing {
                comments,
                blob: (oid, bytes),
                carried,
            })) => {
                if !again {
                    self.comment_count += comments;
                    self.issue_count += 1;
                }
                if !known.connected.contains(&issue.id) && !self.exported_now.contains(&issue.id) {
                    self.related_to_new.extend(relatives(issue));
                }
                self.exported_now.insert(issue.id.clone());
                self.exported_ids.push(issue.id.clone());
                // An unchanged replica is not written again: the commit's
                // cost follows the change, not the number of issues looked at.
                // One rendered again replaces this run's first rendering.
                let rewrite = self.written_paths.contains(&path);
                if !rewrite && shared_now.blob(&path)? == Some(oid) {
                    return Ok(None);
                }
                let carried = if rewrite {
                    None
                } else {
                    self.report.written.push(issue.key.clone());
                    carried
                };
                self.written_paths.insert(path.clone());
                self.writes.push(FileWrite {
                    path,
                    content: Some(Content::Blob(oid)),
                });
                Ok(Some(((oid, bytes), carried)))
            }
            Ok(None) => {
                if shared_now.blob(&path)?.is_some() {
                    self.report.removed.push(issue.key.clone());
                    self.writes.push(FileWrite {
                        path,
                        content: None,
                    });
                }
                Ok(None)
            }
            Err(e) => {
                self.failed_ids.insert(issue.id.clone());
                self.oldest_failure = Some(
                    self.oldest_failure
                        .map_or(issue.updated, |t| t.min(issue.updated)),
                );
                self.report
                    .errors
                    .push(issue_error(site, connection, &issue.key, e)?);
                Ok(None)
            }
        }
    }

    /// The issues to render once more after the last page: those related to an
    /// issue shared for the first time, and the choices by hand no page had.
    fn follow_up(&self, site: &Site, peer: &str) -> anyhow::Result<Vec<String>> {
        let mut again = render_again(site, peer, &self.related_to_new, &self.exported_now)?;
        let waiting: Vec<String> = self
            .waiting_picks
            .iter()
            .filter(|id| !self.picked.contains(*id) && !again.contains(id))
            .cloned()
            .collect();
        again.extend(waiting);
        Ok(again)
    }

    /// The choices by hand this run acted on: written or removed. One whose
    /// issue failed (or is gone from the tracker) is tried again next run.
    fn acted_picks(&self) -> Vec<String> {
        self.waiting_picks
            .iter()
            .filter(|id| self.picked.contains(*id) && !self.failed_ids.contains(*id))
            .cloned()
            .collect()
    }
}

/// A replica to write: its blob (id and bytes), and the issue's field values
/// for the conflict baselines when it is new in this run.
type NewReplica = ((Oid, Vec<u8>), Option<NewExport>);

/// A replica ready to write.
struct Outgoing {
    /// Its comments, for the commit message.
    comments: usize,
    /// Its bytes and blob id.
    blob: (Oid, Vec<u8>),
    /// The issue's field values, for the conflict baselines.
    carried: Option<NewExport>,
}

/// Completes what the rule made of `issue` off the site's thread: looks its
/// attachments up (on this thread: they read the site) before it is
/// serialised, and fails it, as this issue's error, when its replica is over
/// the limit every peer enforces (the peer would refuse the whole commit).
fn finish_rendering(
    site: &Site,
    connection: &Connection,
    head: Option<Oid>,
    issue: &Issue,
    rendered: Rendered,
    run: &mut Gathered,
) -> anyhow::Result<Result<Option<Outgoing>, String>> {
    let shared = match (rendered.replica, rendered.blob) {
        (Ok(Some(replica)), Some(blob)) => Ok(Some((replica, blob))),
        (Ok(Some(mut replica)), None) => attachments::export(
            site,
            connection,
            issue,
            head,
            &mut replica,
            &mut run.shipped,
            &mut run.writes,
        )?
        .map(|()| {
            let blob = serialise(&replica);
            Some((replica, blob))
        }),
        (Ok(None), _) => Ok(None),
        (Err(e), _) => Err(e),
    };
    Ok(shared.and_then(|shared| match shared {
        Some((_, (_, bytes))) if bytes.len() > MAX_REPLICA_BYTES => Err(format!(
            "its replica would be {} bytes, over the replica limit of {MAX_REPLICA_BYTES} \
             bytes that every peer enforces (fixed by the replica format; no setting \
             raises it): leave text or comments out of it in {}",
            bytes.len(),
            connection.settings.outgoing.display()
        )),
        Some((replica, blob)) => Ok(Some(Outgoing {
            comments: replica.comments.len(),
            blob,
            carried: rendered.carried,
        })),
        None => Ok(None),
    }))
}

/// The message of an export's commit.
fn commit_message(
    me: &str,
    peer: &str,
    report: &ExportReport,
    issues: usize,
    comments: usize,
) -> String {
    format!(
        "{me} → {peer}: {} issue{} written, {} removed\n\nShared in this run: {} issue{}, {} comment{}\n",
        report.written.len(),
        plural(report.written.len()),
        report.removed.len(),
        issues,
        plural(issues),
        comments,
        plural(comments),
    )
}

/// Where the next export starts. A failed issue must be looked at again, so
/// the cursor stops at the oldest one. Otherwise it is at-or-after the newest
/// change seen, so the issues of that second are read again next run; unless
/// the tracker's clock (`read_at`) had already left that second when they were
/// read: then no change can be stamped with it any more, and the cursor moves
/// past it (a quiet run then reads nothing).
fn next_cursor(
    oldest_failure: Option<DateTime<Utc>>,
    newest: Option<DateTime<Utc>>,
    read_at: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    match oldest_failure {
        Some(failed) => Some(failed),
        None => newest.map(|newest| {
            if newest < read_at {
                newest + chrono::Duration::seconds(1)
            } else {
                newest
            }
        }),
    }
}

/// The ids of the issues a link, the parent or a sub-task of `issue` names.
fn relatives(issue: &Issue) -> impl Iterator<Item = String> + '_ {
    issue
        .links
        .iter()
        .map(|link| &link.issue)
        .chain(&issue.parent)
        .chain(&issue.subtasks)
        .map(|other| other.id.clone())
}

/// Which of the issues the candidates' relations name are shared with `peer`:
/// connected before this run (shared, or the peer's own) or exported in it.
pub(super) fn shared_relatives(
    site: &Site,
    peer: &str,
    candidates: &[(&Issue, String)],
    exported_now: &BTreeSet<String>,
) -> anyhow::Result<BTreeSet<String>> {
    let mut named: BTreeSet<String> = candidates
        .iter()
        .flat_map(|(issue, _)| relatives(issue))
        .collect();
    if named.is_empty() {
        return Ok(named);
    }
    let ids: Vec<&str> = named.iter().map(String::as_str).collect();
    let connected = site.ledger.connected_among(peer, &ids)?;
    named.retain(|id| connected.contains(id) || exported_now.contains(id));
    Ok(named)
}

/// # Relations
///
/// A relation travels only when both ends are shared with the peer, so an issue
/// shared for the first time in a run changes what its relatives' replicas say:
/// one rendered earlier in the run (or before the run, and unchanged since)
/// left the relation out. The issues related to such an issue that are shared
/// themselves are rendered once more, after every page, when the run knows all
/// it shares: links are seen from both ends, and a parent from its sub-tasks.
/// One more pass is enough: it shares nothing new.
fn render_again(
    site: &Site,
    peer: &str,
    related_to_new: &BTreeSet<String>,
    exported_now: &BTreeSet<String>,
) -> anyhow::Result<Vec<String>> {
    if related_to_new.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = related_to_new.iter().map(String::as_str).collect();
    let connected = site.ledger.connected_among(peer, &ids)?;
    Ok(related_to_new
        .iter()
        .filter(|id| connected.contains(*id) || exported_now.contains(*id))
        .cloned()
        .collect())
}

/// What the outgoing rule made of one issue, made off the site's thread.
struct Rendered {
    /// The replica, `None` when the rule does not share the issue.
    replica: Result<Option<Replica>, String>,
    /// The replica serialised, with its blob id; `None` until its attachments
    /// were looked up, when it has any.
    blob: Option<(Oid, Vec<u8>)>,
    /// The issue's field values, for the conflict baselines if it is written.
    carried: Option<NewExport>,
}

impl Rendered {
    fn new(rules: &RuleScript, context: &OutgoingContext, issue: &Issue) -> Rendered {
        let text = issue_text(issue);
        let replica = if issue.deleted {
            Ok(Some(tombstone(context.site, issue)))
        } else if text > MAX_STRING_SIZE {
            // rhai refuses any value holding more text, the issue included, so
            // the rule would fail on the first line that reads the issue.
            Err(format!(
                "it holds {text} bytes of text (summary, description and comments, internal \
                 ones included), over the replica limit of {MAX_REPLICA_BYTES} bytes: no rule \
                 can work on it and no peer would accept it (the limit is fixed by the replica \
                 format; no setting raises it)"
            ))
        } else {
            rules
                .run_outgoing(issue, context)
                .map_err(|e| e.to_string())
        };
        let blob = match &replica {
            Ok(Some(replica)) if replica.attachments.is_empty() => Some(serialise(replica)),
            _ => None,
        };
        Rendered {
            replica,
            blob,
            carried: (!issue.deleted).then(|| super::conflict::carried(context.site, issue)),
        }
    }
}

/// The bytes of the texts of an issue that can be long: a lower bound of what the
/// rule sandbox counts as the issue's text, cheap enough to take for every issue.
fn issue_text(issue: &Issue) -> usize {
    issue.summary.len()
        + issue.description.as_ref().map_or(0, String::len)
        + issue.comments.iter().map(|c| c.body.len()).sum::<usize>()
}

/// A replica's bytes and blob id.
fn serialise(replica: &Replica) -> (Oid, Vec<u8>) {
    let bytes = replica.to_yaml().into_bytes();
    (blob_id(&bytes), bytes)
}

/// Up to this many issues to look at, an export looks their replicas up in the
/// branch's tree one by one (its cost follows the change); beyond, it lists the
/// whole tree once.
const LOOKUP_LIMIT: usize = 1_000;

/// The replicas on this site's branch for the peer, as the export asks for them:
/// the blob at a path, and the paths an issue's replica had in other projects.
/// The branch is in the layout of the format the export writes (see
/// [`upgrade_branch`]).
enum Shared<'repo> {
    /// Nothing exported yet.
    Empty,
    /// Looked up in the tree path by path: `issues/` and its project trees.
    Lookup {
        format: Format,
        repo: &'repo git2::Repository,
        projects: Vec<(String, git2::Tree<'repo>)>,
    },
    /// Every replica path with its blob, and the paths of each issue id.
    Listed {
        blobs: BTreeMap<String, Oid>,
        by_id: HashMap<String, Vec<String>>,
    },
}

impl<'repo> Shared<'repo> {
    fn read(
        exchange: &'repo Exchange,
        head: Option<Oid>,
        format: Format,
        issues: usize,
    ) -> anyhow::Result<Self> {
        let Some(head) = head else {
            return Ok(Shared::Empty);
        };
        if issues > LOOKUP_LIMIT {
            let blobs = exchange.files(head, "issues/")?;
            let mut by_id: HashMap<String, Vec<String>> = HashMap::new();
            for path in blobs.keys() {
                if let Ok((_, id)) = parse_replica_path(path) {
                    by_id.entry(id).or_default().push(path.clone());
                }
            }
            return Ok(Shared::Listed { blobs, by_id });
        }
        let repo = exchange.repo();
        let root = repo.find_commit(head)?.tree()?;
        let Some(issues) = root
            .get_name("issues")
            .filter(|e| e.kind() == Some(ObjectType::Tree))
        else {
            return Ok(Shared::Lookup {
                format,
                repo,
                projects: Vec::new(),
            });
        };
        let issues = repo.find_tree(issues.id())?;
        let mut projects = Vec::new();
        for entry in issues.iter() {
            if let (Ok(name), Some(ObjectType::Tree)) = (entry.name(), entry.kind()) {
                projects.push((name.to_string(), repo.find_tree(entry.id())?));
            }
        }
        Ok(Shared::Lookup {
            format,
            repo,
            projects,
        })
    }

    /// The blob of the replica stored at `path`.
    fn blob(&self, path: &str) -> anyhow::Result<Option<Oid>> {
        Ok(match self {
            Shared::Empty => None,
            Shared::Listed { blobs, .. } => blobs.get(path).copied(),
            Shared::Lookup {
                format,
                repo,
                projects,
            } => {
                let Ok((project, id)) = parse_replica_path(path) else {
                    return Ok(None);
                };
                match projects.iter().find(|(name, _)| *name == project) {
                    Some((_, tree)) => Self::file(repo, tree, &id, *format)?,
                    None => None,
                }
            }
        })
    }

    /// Paths of replicas of the issue `id` other than `path`: what an issue that
    /// moved to another project left at its old path.
    fn elsewhere(&self, id: &str, path: &str) -> anyhow::Result<Vec<String>> {
        Ok(match self {
            Shared::Empty => Vec::new(),
            Shared::Listed { by_id, .. } => by_id
                .get(id)
                .into_iter()
                .flatten()
                .filter(|p| p.as_str() != path)
                .cloned()
                .collect(),
            Shared::Lookup {
                format,
                repo,
                projects,
            } => {
                let mut found = Vec::new();
                for (project, tree) in projects {
                    if Self::file(repo, tree, id, *format)?.is_some() {
                        found.push(stored_path(project, id, *format));
                    }
                }
                found.retain(|p| p != path);
                found
            }
        })
    }

    /// The blob of `id`'s replica in a project's tree laid out for `format`.
    fn file(
        repo: &git2::Repository,
        tree: &git2::Tree<'_>,
        id: &str,
        format: Format,
    ) -> anyhow::Result<Option<Oid>> {
        let name = format!("{id}.yaml");
        let blob = |tree: &git2::Tree<'_>| {
            tree.get_name(&name)
                .filter(|e| e.kind() == Some(ObjectType::Blob))
                .map(|e| e.id())
        };
        Ok(match format {
            Format::V1 => blob(tree),
            Format::V2 => {
                let mut tree = tree.clone();
                for bucket in crate::replica::buckets(id) {
                    let sub = tree
                        .get_name(&bucket)
                        .filter(|e| e.kind() == Some(ObjectType::Tree))
                        .map(|e| e.id());
                    match sub {
                        Some(sub) => tree = repo.find_tree(sub)?,
                        None => return Ok(None),
                    }
                }
                blob(&tree)
            }
        })
    }
}

/// The format this site writes on its branch for `peer`, whose head is `head`:
/// the newest one the peer's `site.yaml` announces it reads. While the peer has
/// announced nothing (it has written no branch yet, or never will: a peer that
/// only imports), a branch keeps the layout it has, and a new branch starts in
/// the newest format: a peer on an older ferry announces that when it first
/// writes, and the branch then moves back.
pub(super) fn writing_format(site: &Site, peer: &str, head: Option<Oid>) -> anyhow::Result<Format> {
    let own = Format::own();
    if let Some(announced) = site.exchange.peer_format(site.name(), peer)? {
        return Ok(announced.min(own));
    }
    Ok(match head {
        Some(head) => site
            .exchange
            .layout(head)?
            .map_or(own, |layout| layout.min(own)),
        None => own,
    })
}

/// Brings the branch at `head` to `format` before an export writes on it, in
/// one commit (nothing when it is there already): every replica moves to
/// `format`'s layout, keeping its blob, so the peer sees no issue change; going
/// back to an older format (a peer that went back to an older ferry) also
/// rewrites the replicas that hold keys it would refuse. The commit's
/// `site.yaml` announces the formats this site reads, and a branch whose
/// `site.yaml` does not announce them yet gets that commit even with no
/// replica to move, so that the peer learns it may move its own branch.
///
/// One commit keeps the peer's view consistent whatever it fetches: the branch
/// is in one layout before the commit and in the other after it. A run killed
/// before the ref moves leaves the branch as it was; after, the migration is
/// done and the next export finds nothing to move.
fn upgrade_branch(
    site: &Site,
    (me, peer, branch): (&str, &str, &str),
    head: Oid,
    format: Format,
) -> anyhow::Result<Oid> {
    let announced = site
        .exchange
        .read_file(head, SITE_FILE)?
        .and_then(|(_, bytes)| SiteFile::parse(&bytes).ok())
        .map(|file| file.ferry);
    let layout = site.exchange.layout(head)?;
    let moves = layout.is_some_and(|layout| layout != format);
    if !moves && announced == Some(Format::own().number()) {
        return Ok(head);
    }
    let mut writes = Vec::new();
    let mut moved = 0;
    if moves {
        for (path, blob) in site.exchange.files(head, "issues/")? {
            let Ok((project, id, stored)) = parse_stored_path(&path) else {
                continue;
            };
            let mut content = Content::Blob(blob);
            if format < Format::NEWEST {
                // Going back: a replica may hold a key the peer's format lacks.
                let replica = Replica::parse(&path, &site.exchange.read_blob(blob)?)?;
                if replica.format() > format {
                    let mut older = replica;
                    older.downgrade_to(format);
                    content = Content::Bytes(older.to_yaml().into_bytes());
                }
            }
            if stored == format && matches!(content, Content::Blob(_)) {
                continue;
            }
            writes.push(FileWrite {
                path,
                content: None,
            });
            writes.push(FileWrite {
                path: stored_path(&project, &id, format),
                content: Some(content),
            });
            moved += 1;
        }
    }
    writes.push(site_file(site, me, peer)?);
    let message = if moves {
        format!(
            "{me} → {peer}: exchange format {format}, {moved} replica{} moved to {}\n\n\
             The newest format both sites read is {format}; the replicas keep their \
             content.\n",
            plural(moved),
            match format {
                Format::V1 => "issues/<project>/<id>.yaml",
                Format::V2 => "issues/<project>/<nn>/<mm>/<id>.yaml",
            }
        )
    } else {
        format!(
            "{me} → {peer}: reads exchange formats up to {}\n",
            Format::own()
        )
    };
    let commit = site.exchange.commit(branch, &writes, &message, me)?;
    if commit.is_some() {
        failpoint::hit("after-format-commit");
    }
    Ok(commit.unwrap_or(head))
}

/// What a deleted issue leaves in the exchange: identity and the deletion, nothing
/// the owner's outgoing rule did not already share.
fn tombstone(site: &str, issue: &Issue) -> Replica {
    let mut stripped = issue.clone();
    stripped.description = None;
    stripped.comments.clear();
    stripped.attachments.clear();
    stripped.fields.clear();
    stripped.assignee = None;
    stripped.reporter = None;
    stripped.links.clear();
    stripped.parent = None;
    Replica::from_issue(site, &stripped)
}

fn site_file(site: &Site, me: &str, peer: &str) -> anyhow::Result<FileWrite> {
    let ack = site
        .exchange
        .resolve(&applied_ref(peer))?
        .map(|oid| oid.to_string());
    let file = SiteFile {
        ferry: Format::own().number(),
        site: me.to_string(),
        peer: peer.to_string(),
        ack,
    };
    Ok(FileWrite {
        path: SITE_FILE.into(),
        content: Some(Content::Bytes(serde_yaml::to_string(&file)?.into_bytes())),
    })
}
