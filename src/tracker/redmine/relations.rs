//! Links and parents in Redmine: issue relations (`/issues/N/relations.json`,
//! `/relations/N.json`) and `parent_issue_id`.
//!
//! Redmine stores a relation from the issue that `blocks`, `duplicates`,
//! `precedes`, is `copied_to` or `relates` to the other, turning the reverse
//! types (`blocked`, `duplicated`, `follows`, `copied_from`) round as it saves
//! them; ferry names those link types as Jira does (`Blocks`, `Duplicate`,
//! `Precedes`, `Cloners`, `Relates`) so that a link keeps its name between
//! trackers. `relates` has no direction: one relation either way round.
//!
//! Redmine's relations, parent and children carry only ids. The keys and
//! origin markers of the issues at their other ends are read with the
//! project list (`issue_id=1,2,…`), a hundred to a request, once for a whole
//! page of issues.
//!
//! Making or removing a relation journals both issues but does not move their
//! `updated_on` (checked against Debian's Redmine 5.0), which is what an
//! export looks for: a link made in Redmine travels with the next change of
//! either issue. A parent set or cleared moves both.
use std::collections::{BTreeSet, HashMap};

use serde_json::{Value, json};

use super::http::Reply;
use super::{RedmineTracker, parse_id, text};
use crate::model::{Issue, IssueLink, LinkDirection, Origin, RelatedIssue};
use crate::tracker::{IssuePatch, LinkChange, TrackerError};

/// Redmine's relation types as stored, and ferry's names for them.
const TYPES: &[(&str, &str)] = &[
    ("blocks", "Blocks"),
    ("duplicates", "Duplicate"),
    ("precedes", "Precedes"),
    ("copied_to", "Cloners"),
    ("relates", "Relates"),
];

/// Redmine's own names of the reverse types, as an operator may write them.
const REVERSED: &[(&str, &str)] = &[
    ("blocked", "blocks"),
    ("duplicated", "duplicates"),
    ("follows", "precedes"),
    ("copied_from", "copied_to"),
];

/// ferry's name of a stored Redmine relation type (a type some plugin adds
/// keeps Redmine's name).
fn ferry_type(redmine: &str) -> String {
    TYPES
        .iter()
        .find(|(r, _)| *r == redmine)
        .map_or_else(|| redmine.to_string(), |(_, f)| f.to_string())
}

/// The stored Redmine type a link type names, and whether the name is the
/// reverse one (`blocked`: the link's ends swap); ferry's names and Redmine's
/// both, in any case.
fn redmine_type(name: &str) -> Option<(&'static str, bool)> {
    let lower = name.to_ascii_lowercase();
    TYPES
        .iter()
        .find(|(r, f)| *r == lower || f.eq_ignore_ascii_case(name))
        .map(|(r, _)| (*r, false))
        .or_else(|| {
            REVERSED
                .iter()
                .find(|(reverse, _)| *reverse == lower)
                .map(|(_, r)| (*r, true))
        })
}

fn placeholder(id: u64) -> RelatedIssue {
    RelatedIssue {
        id: id.to_string(),
        key: format!("#{id}"),
        origin: None,
    }
}

/// The links, parent and sub-tasks in Redmine's JSON of issue `id` (read with
/// `include=relations,children`), each other end known only by its id until
/// [`RedmineTracker::fill_related`].
pub(super) fn read(
    v: &Value,
    id: u64,
) -> (Vec<IssueLink>, Option<RelatedIssue>, Vec<RelatedIssue>) {
    let links = v["relations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let (from, to) = (r["issue_id"].as_u64()?, r["issue_to_id"].as_u64()?);
            let (direction, other) = if from == id {
                (LinkDirection::Outward, to)
            } else {
                (LinkDirection::Inward, from)
            };
            Some(IssueLink {
                link_type: ferry_type(r["relation_type"].as_str()?),
                direction,
                issue: placeholder(other),
            })
        })
        .collect();
    let parent = v["parent"]["id"].as_u64().map(placeholder);
    let subtasks = v["children"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["id"].as_u64().map(placeholder))
        .collect();
    (links, parent, subtasks)
}

/// `parent_issue_id` for a patch's parent: an issue number, or `""` to make
/// the issue one of its own.
pub(super) fn parent_value(parent: &Option<String>, issue: &str) -> Result<Value, TrackerError> {
    match parent {
        None => Ok(json!("")),
        Some(id) => parse_id(id)
            .map(Value::from)
            .ok_or_else(|| TrackerError::Rejected {
                issue: issue.into(),
                message: format!("Redmine has no issue {id:?} to be a sub-task of"),
            }),
    }
}

/// One stored relation of an issue.
struct Relation {
    id: u64,
    kind: String,
    from: u64,
    to: u64,
}

impl Relation {
    /// Whether it is the relation `kind` from `from` to `to` (`relates`
    /// either way round).
    fn is(&self, kind: &str, from: u64, to: u64) -> bool {
        self.kind == kind
            && ((self.from, self.to) == (from, to)
                || (kind == "relates" && (self.from, self.to) == (to, from)))
    }
}

impl RedmineTracker {
    /// Gives the related issues of `issues` their keys and origin markers.
    /// One that the API key's user cannot see keeps `#N` and no origin.
    pub(super) fn fill_related(&self, issues: &mut [Issue]) -> Result<(), TrackerError> {
        let mut known: HashMap<String, (String, Option<Origin>)> = issues
            .iter()
            .map(|i| (i.id.clone(), (i.key.clone(), i.origin.clone())))
            .collect();
        let wanted: BTreeSet<u64> = issues
            .iter()
            .flat_map(|i| {
                i.links
                    .iter()
                    .map(|l| &l.issue)
                    .chain(&i.parent)
                    .chain(&i.subtasks)
            })
            .filter(|r| !known.contains_key(&r.id))
            .filter_map(|r| parse_id(&r.id))
            .collect();
        let wanted: Vec<u64> = wanted.into_iter().collect();
        for chunk in wanted.chunks(100) {
            let ids: Vec<String> = chunk.iter().map(u64::to_string).collect();
            let query = [
                ("issue_id", ids.join(",")),
                ("status_id", "*".to_string()),
                ("limit", "100".to_string()),
            ];
            let page = match self.client.get("/issues.json", &query)? {
                Reply::Json(v) => v,
                other => return Err(self.client.unexpected("/issues.json", other)),
            };
            for v in page["issues"].as_array().into_iter().flatten() {
                let (Some(id), Some(project)) = (v["id"].as_u64(), v["project"]["id"].as_u64())
                else {
                    continue;
                };
                let key = format!("{}-{id}", self.project_identifier(project)?);
                let description = text::unix(v["description"].as_str().unwrap_or(""));
                let origin = text::split(&description).1.origin;
                known.insert(id.to_string(), (key, origin));
            }
        }
        for issue in issues.iter_mut() {
            let related = issue
                .links
                .iter_mut()
                .map(|l| &mut l.issue)
                .chain(issue.parent.as_mut())
                .chain(issue.subtasks.iter_mut());
            for other in related {
                if let Some((key, origin)) = known.get(&other.id) {
                    other.key.clone_from(key);
                    other.origin.clone_from(origin);
                }
            }
            issue.normalize();
        }
        Ok(())
    }

    /// The relations issue `number` has now, with their ids.
    fn relations_of(&self, number: u64) -> Result<Vec<Relation>, TrackerError> {
        let path = format!("/issues/{number}/relations.json");
        let v = match self.client.get(&path, &[])? {
            Reply::Json(v) => v,
            Reply::NotFound => return Err(TrackerError::NotFound(number.to_string())),
            other => return Err(self.client.unexpected(&path, other)),
        };
        Ok(v["relations"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| {
                Some(Relation {
                    id: r["id"].as_u64()?,
                    kind: r["relation_type"].as_str()?.to_string(),
                    from: r["issue_id"].as_u64()?,
                    to: r["issue_to_id"].as_u64()?,
                })
            })
            .collect())
    }

    /// Makes the link changes of `patch` on issue `number` (`key` names it in
    /// errors): removals first, then additions; a link already there, or
    /// already gone, is left as it is.
    pub(super) fn write_links(
        &self,
        number: u64,
        key: &str,
        patch: &IssuePatch,
    ) -> Result<(), TrackerError> {
        if patch.add_links.is_empty() && patch.remove_links.is_empty() {
            return Ok(());
        }
        let mut existing = self.relations_of(number)?;
        for link in &patch.remove_links {
            let (kind, from, to) = ends(number, key, link)?;
            let Some(at) = existing.iter().position(|r| r.is(kind, from, to)) else {
                continue;
            };
            let path = format!("/relations/{}.json", existing[at].id);
            match self.client.delete(&path)? {
                Reply::Empty | Reply::Json(_) | Reply::NotFound => {}
                other => return Err(self.client.unexpected(&path, other)),
            }
            existing.remove(at);
        }
        for link in &patch.add_links {
            let (kind, from, to) = ends(number, key, link)?;
            if existing.iter().any(|r| r.is(kind, from, to)) {
                continue;
            }
            let path = format!("/issues/{from}/relations.json");
            let body = json!({"relation": {"issue_to_id": to, "relation_type": kind}});
            match self.client.send("POST", &path, &body)? {
                Reply::Json(v) => existing.push(Relation {
                    id: v["relation"]["id"].as_u64().unwrap_or(0),
                    kind: kind.to_string(),
                    from,
                    to,
                }),
                Reply::Empty => {}
                Reply::Invalid(message) => {
                    return Err(TrackerError::Rejected {
                        issue: key.into(),
                        message: format!(
                            "Redmine refused the link {} {} #{}: {message}",
                            link.link_type,
                            match link.direction {
                                LinkDirection::Outward => "to",
                                LinkDirection::Inward => "from",
                            },
                            link.other
                        ),
                    });
                }
                Reply::NotFound => {
                    return Err(TrackerError::Rejected {
                        issue: key.into(),
                        message: format!("Redmine has no issue #{from} to link"),
                    });
                }
                other => return Err(self.client.unexpected(&path, other)),
            }
        }
        Ok(())
    }
}

/// The stored type and the two ends, from and to, of `link` made on issue
/// `number`.
fn ends(
    number: u64,
    key: &str,
    link: &LinkChange,
) -> Result<(&'static str, u64, u64), TrackerError> {
    let (kind, reversed) = redmine_type(&link.link_type).ok_or_else(|| TrackerError::Rejected {
        issue: key.into(),
        message: format!(
            "Redmine has no link type {:?}; it has {} (an incoming rule can rename link types)",
            link.link_type,
            TYPES.iter().map(|(_, f)| *f).collect::<Vec<_>>().join(", ")
        ),
    })?;
    let other = parse_id(&link.other).ok_or_else(|| TrackerError::Rejected {
        issue: key.into(),
        message: format!("Redmine has no issue {:?} to link", link.other),
    })?;
    let outward = (link.direction == LinkDirection::Outward) != reversed;
    Ok(if outward {
        (kind, number, other)
    } else {
        (kind, other, number)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_types_keep_their_names_and_directions() {
        assert_eq!(redmine_type("Blocks"), Some(("blocks", false)));
        assert_eq!(redmine_type("blocked"), Some(("blocks", true)));
        assert_eq!(redmine_type("duplicate"), Some(("duplicates", false)));
        assert_eq!(redmine_type("Cloners"), Some(("copied_to", false)));
        assert_eq!(redmine_type("Causes"), None);
        for (redmine, ferry) in TYPES {
            assert_eq!(ferry_type(redmine), *ferry);
            assert_eq!(redmine_type(ferry), Some((*redmine, false)));
        }
        let inward = LinkChange {
            link_type: "Blocks".into(),
            direction: LinkDirection::Inward,
            other: "7".into(),
        };
        assert_eq!(ends(3, "sup-3", &inward).unwrap(), ("blocks", 7, 3));
        let reversed = LinkChange {
            link_type: "blocked".into(),
            ..inward.clone()
        };
        assert_eq!(ends(3, "sup-3", &reversed).unwrap(), ("blocks", 3, 7));
        let relates = Relation {
            id: 1,
            kind: "relates".into(),
            from: 7,
            to: 3,
        };
        assert!(relates.is("relates", 3, 7));
        assert!(!relates.is("blocks", 7, 3));
    }

    #[test]
    fn relations_parent_and_children_are_read_from_either_end() {
        let v = json!({
            "id": 3,
            "parent": {"id": 1},
            "children": [{"id": 9, "subject": "x"}],
            "relations": [
                {"id": 1, "issue_id": 2, "issue_to_id": 3, "relation_type": "blocks"},
                {"id": 2, "issue_id": 3, "issue_to_id": 4, "relation_type": "relates"}
            ]
        });
        let (links, parent, subtasks) = read(&v, 3);
        let seen: Vec<(String, LinkDirection, String)> = links
            .iter()
            .map(|l| (l.link_type.clone(), l.direction, l.issue.id.clone()))
            .collect();
        assert_eq!(
            seen,
            [
                ("Blocks".to_string(), LinkDirection::Inward, "2".to_string()),
                (
                    "Relates".to_string(),
                    LinkDirection::Outward,
                    "4".to_string()
                )
            ]
        );
        assert_eq!(parent.map(|p| p.key), Some("#1".to_string()));
        assert_eq!(subtasks.len(), 1);
    }
}
