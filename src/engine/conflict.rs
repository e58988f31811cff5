//! Conflicts: both sites changed the same field since the last exchange.
//!
//! # Three-way, in this site's terms
//!
//! The incoming rule turns the peer's replica into the local issue it wants
//! (`target`); without more, import would apply every field where `target` differs
//! from the local issue. That loses edits: a replica still carrying the old value of
//! a field this site just changed would revert it, and two sites editing one field
//! between syncs would each take the other's value and swap.
//!
//! So the ledger keeps, per linked issue and field, a **baseline**: the last value
//! both sites are known to share. Values are compared *after* the incoming rule's
//! mapping (a status mapped through a table is compared as the local status), which
//! is why the baseline is kept in local terms and not as the peer's replica. For a
//! field where `target` and the local value differ:
//!
//! | local vs baseline | target vs baseline | outcome |
//! | --- | --- | --- |
//! | same | differs | the peer changed it: apply |
//! | differs | same | only this site changed it: keep it (it goes out with the next export) |
//! | differs | differs | a **conflict**: the connection's policy decides |
//! | no baseline | | apply, as before any baseline existed |
//!
//! # Where the baseline comes from
//!
//! Two events make a value shared:
//!
//! - an import after which the local value equals the rule's target: this site now
//!   holds what the peer holds;
//! - an export the peer has acknowledged: each export records the local values it
//!   carried and its commit; the peer's `site.yaml` says which of this site's
//!   commits it had applied (`ack`) when it wrote the replica being imported, so
//!   the newest recorded export at or before that commit is something the peer
//!   had seen when it wrote its values.
//!
//! Whichever is newer wins, per field (the ledger orders both by the export
//! sequence). The ack matters: without it a peer's echo of an older value of ours
//! would look like the peer's own change and overwrite a newer local edit, and a
//! local edit the peer never saw would look settled.
//!
//! # Policies
//!
//! Per connection (`conflicts:` in `connections/<peer>.yaml`), per field with a
//! default: `error` parks the replica as an issue-level error until an operator
//! makes both sites agree; `local` keeps this site's value; `remote` takes the
//! peer's; `rule` runs the incoming rule again with `conflicts` and applies what it
//! leaves for the field; `newest` (the default) takes the value changed last.
//!
//! `newest` is the default because it is the one policy that converges without an
//! operator whatever the other site chose: both sites compare the same two
//! timestamps and come to the same answer. The time of a value is the `updated` of
//! the replica that carried it (what the other site sees too); a local value not
//! exported yet has the local issue's `updated`. Equal times go to the site whose
//! name sorts first, so a tie is also decided alike on both sides. `local` on both
//! sides, by contrast, keeps each site's value forever, which is what it says.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use git2::Oid;
use serde_json::Value;

use crate::config::{ConflictPolicy, ConflictSettings, Connection};
use crate::ledger::{ExportRecord, Ledger, LedgerError, NewExport};
use crate::model::{Issue, LinkDirection, Origin};
use crate::rules::{FieldConflict, IncomingInput, RuleError, RuleScript, TargetIssue};
use crate::site::Site;

/// Field values of an issue by field name (`status`, `fields.Customer`); an unset
/// value is JSON `null`.
pub type FieldValues = BTreeMap<String, Value>;

/// The comparable fields of a local issue or of an incoming rule's target. The
/// project is left out: moving an issue is not a field edit.
pub fn field_values(issue: &TargetIssue) -> FieldValues {
    let Ok(Value::Object(map)) = serde_json::to_value(issue) else {
        return FieldValues::new();
    };
    let mut values = FieldValues::new();
    for (name, value) in map {
        match (name.as_str(), value) {
            ("project", _) => {}
            // Only some trackers keep a resolution: an absent one is no value,
            // as in the baselines recorded before the field existed.
            ("resolution", Value::Null) => {}
            ("fields", Value::Object(fields)) => {
                for (field, value) in fields {
                    values.insert(format!("fields.{field}"), value);
                }
            }
            (_, value) => {
                values.insert(name, value);
            }
        }
    }
    values
}

/// `target` with some fields replaced.
fn with_values(target: &TargetIssue, values: &FieldValues) -> TargetIssue {
    let mut out = target.clone();
    for (name, value) in values {
        let text = || value.as_str().map(str::to_string);
        match name.as_str() {
            "type" => out.issue_type = text().unwrap_or_default(),
            "summary" => out.summary = text().unwrap_or_default(),
            "status" => out.status = text().unwrap_or_default(),
            "description" => out.description = text(),
            "priority" => out.priority = text(),
            "resolution" => out.resolution = text(),
            "assignee" => out.assignee = text(),
            "reporter" => out.reporter = text(),
            "labels" => out.labels = string_list(value),
            "components" => out.components = string_list(value),
            other => {
                if let Some(field) = other.strip_prefix("fields.") {
                    if value.is_null() {
                        out.fields.remove(field);
                    } else {
                        out.fields.insert(field.to_string(), value.clone());
                    }
                }
            }
        }
    }
    out
}

fn string_list(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// What the ledger knows about one linked issue's shared state.
#[derive(Debug, Clone, Default)]
pub struct Baseline {
    /// Per field, the last value both sites share.
    pub values: FieldValues,
    /// Exports of the issue not yet superseded, oldest first.
    exports: Vec<ExportRecord>,
    /// The newest export the peer has acknowledged, to fold into the ledger's
    /// baseline once the import succeeds.
    acknowledged: Option<ExportRecord>,
    /// The fields whose shared value comes from that export; see [`Baseline::told`].
    told: FieldValues,
}

impl Baseline {
    /// Per field, the value this site's newest export the peer had applied
    /// carried, where that export is the newest thing both sites share (later
    /// than the last import that settled the field): what the peer was last
    /// told and has not answered since.
    pub fn told(&self) -> &FieldValues {
        &self.told
    }
}

/// Reads the baseline of a linked issue, folding in the newest export the peer
/// acknowledged: `ack` is [`crate::exchange::Exchange::peer_ack`], read once per
/// import rather than once per issue. Writes nothing.
pub fn baseline(
    site: &Site,
    peer: &str,
    ack: Option<Oid>,
    local_id: &str,
) -> anyhow::Result<Baseline> {
    let stored = site.ledger.baseline(peer, local_id)?;
    let exports = site.ledger.exports(peer, local_id)?;
    let acknowledged = match ack {
        Some(ack) => {
            let mut found = None;
            for export in exports.iter().rev() {
                let Ok(commit) = Oid::from_str(&export.commit) else {
                    continue;
                };
                // An ack naming a commit this clone does not hold (a peer's
                // mistake, or worse) acknowledges nothing; it must not stop the
                // import.
                if site.exchange.is_ancestor(commit, ack).unwrap_or(false) {
                    found = Some(export.clone());
                    break;
                }
            }
            found
        }
        None => None,
    };
    let mut values: FieldValues = stored
        .iter()
        .map(|(field, (value, _))| (field.clone(), value.clone()))
        .collect();
    let mut told = FieldValues::new();
    if let Some(acked) = &acknowledged {
        for (field, value) in &acked.fields {
            if stored.get(field).is_none_or(|(_, seq)| *seq < acked.seq) {
                values.insert(field.clone(), value.clone());
                told.insert(field.clone(), value.clone());
            }
        }
    }
    Ok(Baseline {
        values,
        exports,
        acknowledged,
        told,
    })
}

/// One settled conflict, for the report and the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    /// The conflict.
    pub conflict: FieldConflict,
    /// The policy that settled it.
    pub policy: ConflictPolicy,
    /// The value applied (equal to `conflict.local` when this site's value stays).
    pub value: Value,
}

/// How the three-way comparison came out for one replica.
#[derive(Debug, Clone, Default)]
pub struct Resolution {
    /// The target to apply: the rule's target with every field this site keeps
    /// set back to the local value.
    pub target: Option<TargetIssue>,
    /// Conflicts settled by a policy.
    pub settled: Vec<Settled>,
    /// Conflicts whose policy is `error`: nothing may be applied.
    pub errors: Vec<FieldConflict>,
    /// Conflicts whose policy is `rule`: the rule must run again with them.
    pub for_rule: Vec<FieldConflict>,
}

/// What [`resolve`] compares.
pub struct Sides<'a> {
    /// This site.
    pub me: &'a str,
    /// The peer.
    pub peer: &'a str,
    /// The local issue as it is.
    pub local: &'a Issue,
    /// When the peer's replica was last changed (its `updated`).
    pub remote_updated: DateTime<Utc>,
    /// The connection's policies.
    pub settings: &'a ConflictSettings,
}

/// Compares the rule's `target` with the local issue and the baseline, field by
/// field, and settles the conflicts the policies can settle alone.
pub fn resolve(sides: &Sides, baseline: &Baseline, target: &TargetIssue) -> Resolution {
    let local_values = field_values(&TargetIssue::from(sides.local));
    let target_values = field_values(target);
    let mut keep = FieldValues::new();
    let mut resolution = Resolution::default();
    let names: std::collections::BTreeSet<&String> =
        local_values.keys().chain(target_values.keys()).collect();
    for name in names {
        let local = local_values.get(name).cloned().unwrap_or(Value::Null);
        let remote = target_values.get(name).cloned().unwrap_or(Value::Null);
        if local == remote {
            continue;
        }
        // No baseline at all: an issue linked before baselines existed, or whose
        // ledger was rebuilt; the peer's value is applied as it always was.
        if baseline.values.is_empty() {
            continue;
        }
        // A field the baseline does not list was unset when it was recorded.
        let base = baseline.values.get(name).cloned().unwrap_or(Value::Null);
        if remote == base {
            keep.insert(name.clone(), local);
            continue;
        }
        if local == base {
            continue;
        }
        let conflict = FieldConflict {
            field: name.clone(),
            base,
            local,
            remote,
        };
        let policy = sides.settings.policy(name);
        let keep_local = match policy {
            ConflictPolicy::Error => {
                resolution.errors.push(conflict);
                continue;
            }
            ConflictPolicy::Rule => {
                resolution.for_rule.push(conflict);
                continue;
            }
            ConflictPolicy::Local => true,
            ConflictPolicy::Remote => false,
            ConflictPolicy::Newest => {
                let local_time = local_time(sides.local, &baseline.exports, name, &conflict.local);
                match local_time.cmp(&sides.remote_updated) {
                    std::cmp::Ordering::Greater => true,
                    std::cmp::Ordering::Less => false,
                    std::cmp::Ordering::Equal => sides.me < sides.peer,
                }
            }
        };
        let value = if keep_local {
            keep.insert(name.clone(), conflict.local.clone());
            conflict.local.clone()
        } else {
            conflict.remote.clone()
        };
        resolution.settled.push(Settled {
            conflict,
            policy,
            value,
        });
    }
    resolution.target = Some(with_values(target, &keep));
    resolution
}

/// Settles the `rule` conflicts with what the rule left in `ruled` (its second
/// run, which saw them): that value for each of their fields, the first run's
/// resolution for every other field.
pub fn settle_by_rule(mut resolution: Resolution, ruled: &TargetIssue) -> Resolution {
    let ruled_values = field_values(ruled);
    let mut take = FieldValues::new();
    for conflict in std::mem::take(&mut resolution.for_rule) {
        let value = ruled_values
            .get(&conflict.field)
            .cloned()
            .unwrap_or(Value::Null);
        take.insert(conflict.field.clone(), value.clone());
        resolution.settled.push(Settled {
            conflict,
            policy: ConflictPolicy::Rule,
            value,
        });
    }
    resolution.target = resolution.target.map(|t| with_values(&t, &take));
    resolution
}

/// When this site's value of a field was changed, as the peer sees it: the
/// `updated` of the newest export, when it carried this value (the peer reads that
/// replica's `updated`), or else the local issue's `updated` (not exported yet).
fn local_time(
    local: &Issue,
    exports: &[ExportRecord],
    field: &str,
    value: &Value,
) -> DateTime<Utc> {
    match exports.last() {
        Some(export) if export.fields.get(field).unwrap_or(&Value::Null) == value => export.updated,
        _ => local.updated,
    }
}

/// What the import of one replica may do after the three-way comparison.
#[derive(Debug, Clone)]
pub enum Settlement {
    /// Apply this target; the conflicts settled on the way.
    Apply {
        /// The rule's target with every field this site keeps set back (boxed: an
        /// issue is large next to the other variants).
        target: Box<TargetIssue>,
        /// Conflicts settled by a policy.
        settled: Vec<Settled>,
    },
    /// A conflict with policy `error`: apply nothing; the message says why.
    Parked(String),
    /// The rule, asked to settle a conflict, skipped the replica.
    Skip,
}

/// Runs the three-way comparison of a replica against an existing local issue and
/// settles what the policies can: `target` is the incoming rule's first result for
/// `input`; a `rule` conflict runs the rule again with `conflicts`. Import applies
/// the outcome; review shows it.
pub fn settle(
    connection: &Connection,
    rules: &RuleScript,
    input: &IncomingInput,
    local: &Issue,
    baseline: &Baseline,
    target: &TargetIssue,
) -> Result<Settlement, RuleError> {
    let sides = Sides {
        me: input.site,
        peer: input.peer,
        local,
        remote_updated: input.replica.updated,
        settings: &connection.settings.conflicts,
    };
    let mut resolution = resolve(&sides, baseline, target);
    if !resolution.errors.is_empty() {
        return Ok(Settlement::Parked(error_message(
            &local.key,
            input.peer,
            &connection.file,
            &resolution.errors,
        )));
    }
    if !resolution.for_rule.is_empty() {
        let again = IncomingInput {
            conflicts: &resolution.for_rule,
            ..*input
        };
        let Some(ruled) = rules.run_incoming(&again)? else {
            return Ok(Settlement::Skip);
        };
        resolution = settle_by_rule(resolution, &ruled.issue);
    }
    Ok(Settlement::Apply {
        target: Box::new(resolution.target.unwrap_or_else(|| target.clone())),
        settled: resolution.settled,
    })
}

/// The message of a replica parked by `error` conflicts: each field with its three
/// values and what the operator can do.
pub fn error_message(
    local_key: &str,
    peer: &str,
    connection_file: &std::path::Path,
    conflicts: &[FieldConflict],
) -> String {
    let fields: Vec<String> = conflicts
        .iter()
        .map(|c| {
            format!(
                "{} (last shared {}, here {}, {peer}'s {})",
                c.field,
                show(&c.base),
                show(&c.local),
                show(&c.remote)
            )
        })
        .collect();
    format!(
        "{local_key}: conflict: both sites changed {} since the last exchange, and the policy \
         is `error`; nothing of this change is applied. Make both sites agree (set it here to \
         {peer}'s value, or have {peer} set it to this site's) and `ferry retry`, or choose \
         another policy under `conflicts:` in {}.",
        fields.join("; "),
        connection_file.display()
    )
}

fn show(value: &Value) -> String {
    match value {
        Value::Null => "(unset)".into(),
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// Records what an import settled: every field where the local issue now holds
/// the peer's value (`remote`, the rule's target before any field was kept) is
/// shared; the acknowledged export is folded in and older exports are forgotten.
pub fn record_import(
    ledger: &mut Ledger,
    peer: &str,
    local: &Issue,
    remote: &TargetIssue,
    baseline: &Baseline,
) -> Result<(), LedgerError> {
    if let Some(acked) = &baseline.acknowledged {
        ledger.merge_baseline(peer, &local.id, &acked.fields, Some(acked.seq))?;
        ledger.forget_exports_before(peer, &local.id, acked.seq)?;
    }
    let local_values = field_values(&TargetIssue::from(local));
    let remote_values = field_values(remote);
    let names: std::collections::BTreeSet<&String> =
        local_values.keys().chain(remote_values.keys()).collect();
    let shared: FieldValues = names
        .into_iter()
        .filter_map(|name| {
            let value = local_values.get(name).cloned().unwrap_or(Value::Null);
            let wanted = remote_values.get(name).cloned().unwrap_or(Value::Null);
            (value == wanted).then(|| (name.clone(), value))
        })
        .collect();
    ledger.merge_baseline(peer, &local.id, &shared, None)
}

/// What an export carries of one issue, for the baselines: its local values
/// now, and its links (see [`LINKS`]). `site` is this site, whose name is the
/// identity of its own issues at the other ends.
pub fn carried(site: &str, issue: &Issue) -> NewExport {
    let mut values = field_values(&TargetIssue::from(issue));
    values.insert(LINKS.into(), links_value(site, issue));
    NewExport::new(issue.id.clone(), issue.updated, values)
}

/// The baseline entry of an issue's links. It is no field the three-way
/// compares: links are a set either site may change, made and removed
/// through the ledger's relations (`import::relations`). It answers one
/// question there: a link a peer's replica asks for that is gone here was
/// either asked for anew, or removed here after this site told the peer of
/// it (the peer's replica, written before it heard of the removal, echoes
/// it). Only the second is in the link baseline, and it must not be made
/// again.
pub const LINKS: &str = "links";

/// An issue's links as the baseline keeps them: `[type, direction, site, id]`
/// each, sorted.
fn links_value(site: &str, issue: &Issue) -> Value {
    let mut links: Vec<Value> = issue
        .links
        .iter()
        .map(|link| {
            let other = link.issue.identity(site);
            serde_json::json!([
                link.link_type,
                link.direction.as_str(),
                other.site,
                other.id
            ])
        })
        .collect();
    links.sort_by_key(Value::to_string);
    Value::Array(links)
}

impl Baseline {
    /// Whether the link `link_type` (`direction`, to `other`) is in what both
    /// sites last shared of the issue's links: what this site last told the
    /// peer, or what an import last settled. See [`LINKS`].
    pub fn shares_link(&self, link_type: &str, direction: LinkDirection, other: &Origin) -> bool {
        let wanted = serde_json::json!([link_type, direction.as_str(), other.site, other.id]);
        self.values
            .get(LINKS)
            .and_then(Value::as_array)
            .is_some_and(|links| links.contains(&wanted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse_timestamp;

    fn time(s: &str) -> DateTime<Utc> {
        parse_timestamp(s).unwrap()
    }

    fn issue(status: &str, summary: &str, updated: &str) -> Issue {
        Issue {
            resolution: None,
            id: "7".into(),
            key: "SUP-7".into(),
            project: "SUP".into(),
            issue_type: "Bug".into(),
            summary: summary.into(),
            description: None,
            status: status.into(),
            priority: None,
            assignee: None,
            reporter: None,
            labels: vec![],
            components: vec![],
            created: time("2026-11-20T10:00:00Z"),
            updated: time(updated),
            fields: Default::default(),
            comments: vec![],
            attachments: vec![],
            links: Vec::new(),
            parent: None,
            subtasks: Vec::new(),
            origin: None,
            deleted: false,
        }
    }

    fn baseline_of(issue: &Issue) -> Baseline {
        Baseline {
            values: field_values(&TargetIssue::from(issue)),
            ..Baseline::default()
        }
    }

    /// `resolve` as support, with the peer engineering's replica dated `remote_updated`.
    fn resolve_at(
        local: &Issue,
        baseline: &Baseline,
        target: &TargetIssue,
        settings: &ConflictSettings,
        remote_updated: &str,
    ) -> Resolution {
        let sides = Sides {
            me: "support",
            peer: "engineering",
            local,
            remote_updated: time(remote_updated),
            settings,
        };
        resolve(&sides, baseline, target)
    }

    fn settings(default: ConflictPolicy) -> ConflictSettings {
        ConflictSettings {
            default,
            fields: Default::default(),
        }
    }

    /// Base: Open / "Printer". Here: status In Progress at 11:00. Peer: status
    /// Resolved (replica updated 12:00) and summary "Printer on fire".
    fn case(policy: ConflictPolicy, remote_updated: &str) -> (Issue, Resolution) {
        let base = issue("Open", "Printer", "2026-11-20T10:00:00Z");
        let local = issue("In Progress", "Printer", "2026-11-20T11:00:00Z");
        let target = TargetIssue::from(&issue(
            "Resolved",
            "Printer on fire",
            "2026-11-20T12:00:00Z",
        ));
        let settings = settings(policy);
        let resolution = resolve_at(
            &local,
            &baseline_of(&base),
            &target,
            &settings,
            remote_updated,
        );
        (local, resolution)
    }

    fn status(resolution: &Resolution) -> &str {
        &resolution.target.as_ref().unwrap().status
    }

    #[test]
    fn a_field_only_the_peer_changed_is_applied_and_one_only_this_site_changed_is_kept() {
        let base = issue("Open", "Printer", "2026-11-20T10:00:00Z");
        let local = issue("In Progress", "Printer", "2026-11-20T11:00:00Z");
        // The peer changed the summary; its replica still has the old status.
        let target = TargetIssue::from(&issue("Open", "Printer on fire", "2026-11-20T12:00:00Z"));
        let settings = settings(ConflictPolicy::Error);
        let resolution = resolve_at(
            &local,
            &baseline_of(&base),
            &target,
            &settings,
            "2026-11-20T12:00:00Z",
        );
        assert!(resolution.errors.is_empty() && resolution.settled.is_empty());
        let target = resolution.target.unwrap();
        assert_eq!(target.status, "In Progress");
        assert_eq!(target.summary, "Printer on fire");
    }

    #[test]
    fn without_a_baseline_the_peer_s_values_apply() {
        let local = issue("In Progress", "Printer", "2026-11-20T11:00:00Z");
        let target = TargetIssue::from(&issue("Resolved", "Printer", "2026-11-20T12:00:00Z"));
        let settings = settings(ConflictPolicy::Error);
        let resolution = resolve_at(
            &local,
            &Baseline::default(),
            &target,
            &settings,
            "2026-11-20T12:00:00Z",
        );
        assert!(resolution.errors.is_empty());
        assert_eq!(status(&resolution), "Resolved");
    }

    #[test]
    fn error_parks_the_conflict_with_its_three_values() {
        let (_, resolution) = case(ConflictPolicy::Error, "2026-11-20T12:00:00Z");
        assert_eq!(
            resolution.errors,
            vec![FieldConflict {
                field: "status".into(),
                base: "Open".into(),
                local: "In Progress".into(),
                remote: "Resolved".into(),
            }]
        );
        let message = error_message(
            "SUP-7",
            "engineering",
            std::path::Path::new("connections/engineering.yaml"),
            &resolution.errors,
        );
        assert!(
            message.contains(
                r#"status (last shared "Open", here "In Progress", engineering's "Resolved")"#
            ),
            "{message}"
        );
        assert!(
            message.contains("connections/engineering.yaml"),
            "{message}"
        );
    }

    #[test]
    fn local_keeps_and_remote_takes() {
        let (_, local) = case(ConflictPolicy::Local, "2026-11-20T12:00:00Z");
        assert_eq!(status(&local), "In Progress");
        assert_eq!(local.target.as_ref().unwrap().summary, "Printer on fire");
        assert_eq!(local.settled[0].policy, ConflictPolicy::Local);
        let (_, remote) = case(ConflictPolicy::Remote, "2026-11-20T12:00:00Z");
        assert_eq!(status(&remote), "Resolved");
    }

    #[test]
    fn newest_takes_the_later_value_and_a_tie_goes_to_the_first_site_name() {
        let (_, later_peer) = case(ConflictPolicy::Newest, "2026-11-20T12:00:00Z");
        assert_eq!(status(&later_peer), "Resolved");
        let (_, earlier_peer) = case(ConflictPolicy::Newest, "2026-11-20T10:30:00Z");
        assert_eq!(status(&earlier_peer), "In Progress");
        // A tie: "engineering" sorts before "support", so the peer's value wins here,
        // and the peer (deciding the mirror case) keeps its own.
        let (_, tie) = case(ConflictPolicy::Newest, "2026-11-20T11:00:00Z");
        assert_eq!(status(&tie), "Resolved");
    }

    #[test]
    fn newest_dates_an_exported_value_by_the_replica_that_carried_it() {
        let base = issue("Open", "Printer", "2026-11-20T10:00:00Z");
        // Changed at 09:00 in an export, then touched again (another field) at 13:00.
        let mut exported = issue("In Progress", "Printer", "2026-11-20T10:30:00Z");
        exported.updated = time("2026-11-20T10:30:00Z");
        let local = issue("In Progress", "Printer", "2026-11-20T13:00:00Z");
        let baseline = Baseline {
            exports: vec![ExportRecord {
                seq: 1,
                commit: "0".repeat(40),
                updated: exported.updated,
                fields: field_values(&TargetIssue::from(&exported)),
            }],
            ..baseline_of(&base)
        };
        let target = TargetIssue::from(&issue("Resolved", "Printer", "2026-11-20T12:00:00Z"));
        let settings = settings(ConflictPolicy::Newest);
        // The peer saw In Progress dated 10:30, older than its 12:00: it wins on
        // both sides.
        let resolution = resolve_at(
            &local,
            &baseline,
            &target,
            &settings,
            "2026-11-20T12:00:00Z",
        );
        assert_eq!(status(&resolution), "Resolved");
    }

    #[test]
    fn rule_hands_the_conflict_over_and_takes_the_rule_s_value() {
        let settings = ConflictSettings {
            default: ConflictPolicy::Newest,
            fields: [("status".to_string(), ConflictPolicy::Rule)].into(),
        };
        let base = issue("Open", "Printer", "2026-11-20T10:00:00Z");
        let local = issue("In Progress", "Printer", "2026-11-20T11:00:00Z");
        let target = TargetIssue::from(&issue("Resolved", "Fire", "2026-11-20T12:00:00Z"));
        let resolution = resolve_at(
            &local,
            &baseline_of(&base),
            &target,
            &settings,
            "2026-11-20T12:00:00Z",
        );
        assert_eq!(resolution.for_rule.len(), 1);
        assert_eq!(resolution.for_rule[0].field, "status");
        let mut ruled = target.clone();
        ruled.status = "Needs decision".into();
        ruled.summary = "ignored for fields without a rule conflict".into();
        let settled = settle_by_rule(resolution, &ruled);
        let target = settled.target.unwrap();
        assert_eq!(target.status, "Needs decision");
        assert_eq!(target.summary, "Fire");
        assert_eq!(settled.settled[0].policy, ConflictPolicy::Rule);
    }

    #[test]
    fn custom_fields_round_trip_through_field_values() {
        let mut local = issue("Open", "Printer", "2026-11-20T10:00:00Z");
        local.fields.insert("Customer".into(), "ACME".into());
        local.labels = vec!["a".into(), "b".into()];
        let target = TargetIssue::from(&local);
        let values = field_values(&target);
        assert_eq!(values["fields.Customer"], Value::from("ACME"));
        assert!(!values.contains_key("project"));
        let mut changed = values.clone();
        changed.insert("fields.Customer".into(), Value::Null);
        changed.insert("labels".into(), serde_json::json!(["c"]));
        let back = with_values(&target, &changed);
        assert!(back.fields.is_empty());
        assert_eq!(back.labels, vec!["c".to_string()]);
        assert_eq!(with_values(&target, &values), target);
    }
}
