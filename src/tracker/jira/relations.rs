//! Links and parents in Jira: issue links (`issuelinks`, `/issueLink`),
//! sub-tasks (`parent`, `subtasks`) and epics (Cloud: `parent`; Data Center:
//! the Epic Link field).
//!
//! **Direction.** Jira stores a link from a source to a destination. An issue
//! lists each of its links with the issue at the other end under
//! `outwardIssue` when it is the source ("this *blocks* that") and under
//! `inwardIssue` when it is the destination ("this *is blocked by* that"). A
//! link is made with `POST /issueLink`, whose `inwardIssue` is the *source*
//! and `outwardIssue` the destination: the names read backwards from the
//! documentation, which is how Jira Cloud and Data Center behave (reported
//! against both by the maintainers of several public Jira clients, each of
//! whom first had it the other way round). A type whose two descriptions are
//! the same (`Relates`) has no direction: one link either way round.
//!
//! **Parents.** A sub-task gets its parent when it is made (`parent` of the
//! create); Cloud also moves it with an edit, Data Center's REST API cannot
//! (it is a "move" in the UI). An epic's children name it in `parent` on
//! Cloud, and in the Epic Link custom field (its key) on Data Center, where
//! either edit sets or clears it. An issue Jira will not take as a sub-task of
//! the parent the peer names (its type is not a sub-task type, or the parent
//! is one) is made on its own; setting the parent then fails with Jira's
//! reason, and the relation waits with it (an incoming rule can change the
//! type, or keep a mention instead).
//!
//! Jira lists the issue at the other end with its key, summary and status but
//! not its labels, where the origin marker is: one search (`id in (…)`) per
//! hundred related issues a page does not hold reads them.

use std::collections::{BTreeSet, HashMap};

use serde_json::{Value, json};

use super::client::{Body, Failure};
use super::{
    JiraTracker, SEARCH_PAGE, issue_error, jql_string, parse_origin_label, site_error, string_id,
};
use crate::model::{Issue, IssueLink, LinkDirection, Origin, RelatedIssue};
use crate::tracker::{IssuePatch, LinkChange, TrackerError};

/// The custom field type of Data Center's (and Software Server's) Epic Link.
pub(super) const EPIC_LINK_SCHEMA: &str = "com.pyxis.greenhopper.jira:gh-epic-link";

/// The issue type whose issues are epics (Jira's own name; a renamed epic
/// type is found by the Epic Link field pointing at it).
const EPIC_TYPE: &str = "Epic";

/// One of Jira's link types (`GET /issueLinkType`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LinkType {
    name: String,
    inward: String,
    outward: String,
}

impl LinkType {
    /// `Relates`: the same words either way, so no direction.
    fn symmetric(&self) -> bool {
        self.inward.eq_ignore_ascii_case(&self.outward)
    }
}

/// One link as an issue lists it, with its id (for a removal).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    id: String,
    name: String,
    source: String,
    destination: String,
}

fn related(v: &Value) -> Option<RelatedIssue> {
    let id = string_id(&v["id"]);
    let key = v["key"].as_str().unwrap_or_default().to_string();
    (!id.is_empty() || !key.is_empty()).then_some(RelatedIssue {
        id,
        key,
        origin: None,
    })
}

/// The links, parent and sub-tasks in an issue's `fields`, the other ends
/// known by id and key until [`JiraTracker::fill_related`]; on Data Center
/// an epic named by the Epic Link field (`epic_field`) is known by its key
/// only.
pub(super) fn read(
    fields: &Value,
    epic_field: Option<&str>,
) -> (Vec<IssueLink>, Option<RelatedIssue>, Vec<RelatedIssue>) {
    let links = fields["issuelinks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| {
            let name = l["type"]["name"].as_str()?.to_string();
            let (direction, other) = if l["outwardIssue"].is_object() {
                (LinkDirection::Outward, &l["outwardIssue"])
            } else {
                (LinkDirection::Inward, &l["inwardIssue"])
            };
            Some(IssueLink {
                link_type: name,
                direction,
                issue: related(other)?,
            })
        })
        .collect();
    let parent = related(&fields["parent"]).or_else(|| {
        let key = fields[epic_field?].as_str()?;
        Some(RelatedIssue {
            id: String::new(),
            key: key.to_string(),
            origin: None,
        })
    });
    let subtasks = fields["subtasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(related)
        .collect();
    (links, parent, subtasks)
}

/// The links of an issue's `issuelinks`, with their ids and both ends.
fn listed(id: &str, fields: &Value) -> Vec<Listed> {
    fields["issuelinks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| {
            let name = l["type"]["name"].as_str()?.to_string();
            let (source, destination) = if l["outwardIssue"].is_object() {
                (id.to_string(), string_id(&l["outwardIssue"]["id"]))
            } else {
                (string_id(&l["inwardIssue"]["id"]), id.to_string())
            };
            Some(Listed {
                id: string_id(&l["id"]),
                name,
                source,
                destination,
            })
        })
        .collect()
}

/// The origin marker among an issue's labels.
fn origin_of(raw: &Value) -> Option<Origin> {
    raw["fields"]["labels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find_map(parse_origin_label)
}

/// The link type `name` names, by its name or by one of its descriptions
/// (`is blocked by`: the ends swap), in any case; and whether it swaps.
fn resolve<'t>(types: &'t [LinkType], name: &str) -> Option<(&'t LinkType, bool)> {
    types
        .iter()
        .find(|t| t.name.eq_ignore_ascii_case(name))
        .map(|t| (t, false))
        .or_else(|| {
            types
                .iter()
                .find(|t| t.outward.eq_ignore_ascii_case(name))
                .map(|t| (t, false))
        })
        .or_else(|| {
            types
                .iter()
                .find(|t| t.inward.eq_ignore_ascii_case(name))
                .map(|t| (t, true))
        })
}

impl JiraTracker {
    /// The Epic Link field's id on Data Center, where epics live in it; `None`
    /// on Cloud (epics are `parent` there) or when this Jira has no Jira
    /// Software.
    pub(super) fn epic_field(&self) -> Result<Option<&str>, TrackerError> {
        if self.cloud() {
            return Ok(None);
        }
        self.field_defs()?;
        Ok(self.epic_field.get().and_then(Option::as_deref))
    }

    /// Jira's link types, read once.
    fn link_types(&self) -> Result<&[LinkType], TrackerError> {
        if let Some(types) = self.link_types.get() {
            return Ok(types);
        }
        let listed = self.get_json("/issueLinkType", &[]).map_err(site_error)?;
        let types = listed["issueLinkTypes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| {
                Some(LinkType {
                    name: t["name"].as_str()?.to_string(),
                    inward: t["inward"].as_str().unwrap_or_default().to_string(),
                    outward: t["outward"].as_str().unwrap_or_default().to_string(),
                })
            })
            .collect();
        Ok(self.link_types.get_or_init(|| types))
    }

    /// Gives the related issues of `issues` their ids, keys and origin
    /// markers, and on Data Center an epic its children (the issues whose
    /// Epic Link names it). One that the account cannot see keeps what the
    /// issue listed and no origin.
    pub(super) fn fill_related(&self, issues: &mut [Issue]) -> Result<(), TrackerError> {
        let mut by_id: HashMap<String, (String, Option<Origin>)> = issues
            .iter()
            .map(|i| (i.id.clone(), (i.key.clone(), i.origin.clone())))
            .collect();
        let epic_field = self.epic_field()?.map(str::to_string);
        let mut children: HashMap<String, Vec<RelatedIssue>> = HashMap::new();
        if let Some(field) = &epic_field {
            let epics: Vec<String> = issues
                .iter()
                .filter(|i| i.issue_type.eq_ignore_ascii_case(EPIC_TYPE))
                .map(|i| jql_string(&i.key))
                .collect();
            let number = field.trim_start_matches("customfield_");
            for chunk in epics.chunks(SEARCH_PAGE) {
                let jql = format!("cf[{number}] in ({})", chunk.join(", "));
                self.search_pages(&jql, &format!("labels,{field}"), |page| {
                    for raw in &page {
                        let (Some(epic), Some(child)) =
                            (raw["fields"][field].as_str(), related(raw))
                        else {
                            continue;
                        };
                        by_id.insert(child.id.clone(), (child.key.clone(), origin_of(raw)));
                        children.entry(epic.to_string()).or_default().push(child);
                    }
                    Ok(())
                })?;
            }
        }
        for issue in issues.iter_mut() {
            if let Some(found) = children.remove(&issue.key) {
                issue.subtasks.extend(found);
            }
        }
        let others_of = |issue: &Issue| -> Vec<RelatedIssue> {
            issue
                .links
                .iter()
                .map(|l| &l.issue)
                .chain(&issue.parent)
                .chain(&issue.subtasks)
                .cloned()
                .collect()
        };
        let mut ids = BTreeSet::new();
        let mut keys = BTreeSet::new();
        for other in issues.iter().flat_map(others_of) {
            if other.id.is_empty() {
                keys.insert(other.key);
            } else if !by_id.contains_key(&other.id) {
                ids.insert(other.id);
            }
        }
        let mut by_key: HashMap<String, String> = by_id
            .iter()
            .map(|(id, (key, _))| (key.clone(), id.clone()))
            .collect();
        keys.retain(|k| !by_key.contains_key(k));
        let ids: Vec<String> = ids.into_iter().collect();
        let keys: Vec<String> = keys.iter().map(|k| jql_string(k)).collect();
        for (clause, list) in [("id", &ids), ("key", &keys)] {
            for chunk in list.chunks(SEARCH_PAGE) {
                for raw in self.labels_of(clause, chunk)? {
                    let Some(other) = related(&raw) else { continue };
                    by_key.insert(other.key.clone(), other.id.clone());
                    by_id.insert(other.id, (other.key, origin_of(&raw)));
                }
            }
        }
        for issue in issues.iter_mut() {
            let others = issue
                .links
                .iter_mut()
                .map(|l| &mut l.issue)
                .chain(issue.parent.as_mut())
                .chain(issue.subtasks.iter_mut());
            for other in others {
                if other.id.is_empty()
                    && let Some(id) = by_key.get(&other.key)
                {
                    other.id.clone_from(id);
                }
                if let Some((key, origin)) = by_id.get(&other.id) {
                    other.key.clone_from(key);
                    other.origin.clone_from(origin);
                }
            }
            // An epic Jira would not show (its key unknown) cannot be named.
            if issue.parent.as_ref().is_some_and(|p| p.id.is_empty()) {
                issue.parent = None;
            }
            issue.normalize();
        }
        Ok(())
    }

    /// The labels of the issues `clause in (list)` names. Jira refuses the
    /// whole query when one of them is gone or hidden from the account, so
    /// then each is read on its own and the missing ones are left out.
    pub(super) fn labels_of(
        &self,
        clause: &str,
        list: &[String],
    ) -> Result<Vec<Value>, TrackerError> {
        let jql = format!("{clause} in ({})", list.join(", "));
        match self.search(&jql, "labels") {
            Ok(found) => Ok(found),
            Err(TrackerError::Unavailable(message)) if message.starts_with("Jira refused") => {
                let mut found = Vec::new();
                for one in list {
                    let one = one.trim_matches('"');
                    let path = format!("/issue/{}", super::client::encode(one));
                    match self.get_json(&path, &[("fields", "labels")]) {
                        Ok(raw) => found.push(raw),
                        Err(Failure::Status {
                            status: 403 | 404, ..
                        }) => {}
                        Err(e) => return Err(site_error(e)),
                    }
                }
                Ok(found)
            }
            Err(e) => Err(e),
        }
    }

    /// Makes the link changes of `patch` on `current`: removals first, then
    /// additions; a link already there, or already gone, is left as it is.
    /// Whether anything changed.
    pub(super) fn write_links(
        &self,
        current: &Issue,
        patch: &IssuePatch,
    ) -> Result<bool, TrackerError> {
        if patch.add_links.is_empty() && patch.remove_links.is_empty() {
            return Ok(false);
        }
        let types = self.link_types()?;
        let path = format!("/issue/{}", current.id);
        let raw = self
            .get_json(&path, &[("fields", "issuelinks")])
            .map_err(|e| issue_error(e, &current.key))?;
        let mut existing = listed(&current.id, &raw["fields"]);
        let mut changed = false;
        for link in &patch.remove_links {
            let (kind, source, destination) = self.ends(types, current, link)?;
            let Some(at) = existing
                .iter()
                .position(|l| is(l, kind, &source, &destination))
            else {
                continue;
            };
            let path = self.api(&format!("/issueLink/{}", existing[at].id));
            match self.client.json("DELETE", &path, &[], &Body::Empty) {
                Ok(_) | Err(Failure::Status { status: 404, .. }) => {}
                Err(e) => return Err(issue_error(e, &current.key)),
            }
            existing.remove(at);
            changed = true;
        }
        for link in &patch.add_links {
            let (kind, source, destination) = self.ends(types, current, link)?;
            if existing.iter().any(|l| is(l, kind, &source, &destination)) {
                continue;
            }
            let body = json!({
                "type": {"name": kind.name},
                "inwardIssue": {"id": source},
                "outwardIssue": {"id": destination},
            });
            let made = self
                .client
                .json("POST", &self.api("/issueLink"), &[], &Body::Json(&body));
            match made {
                Ok(_) => {}
                Err(Failure::Status { status: 404, .. }) => {
                    return Err(TrackerError::Rejected {
                        issue: current.key.clone(),
                        message: format!("Jira has no issue {:?} to link", link.other),
                    });
                }
                Err(e) => return Err(issue_error(e, &current.key)),
            }
            existing.push(Listed {
                id: String::new(),
                name: kind.name.clone(),
                source,
                destination,
            });
            changed = true;
        }
        Ok(changed)
    }

    /// The link type and the two ends, source and destination, of `link`
    /// made on `current`.
    fn ends<'t>(
        &self,
        types: &'t [LinkType],
        current: &Issue,
        link: &LinkChange,
    ) -> Result<(&'t LinkType, String, String), TrackerError> {
        let (kind, swapped) =
            resolve(types, &link.link_type).ok_or_else(|| TrackerError::Rejected {
                issue: current.key.clone(),
                message: format!(
                    "Jira has no link type {:?}; it has {} (an incoming rule can rename link types)",
                    link.link_type,
                    types
                        .iter()
                        .map(|t| t.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })?;
        if link.other.is_empty() || link.other.contains(['/', '?', '#']) {
            return Err(TrackerError::Rejected {
                issue: current.key.clone(),
                message: format!("Jira has no issue {:?} to link", link.other),
            });
        }
        let outward = (link.direction == LinkDirection::Outward) != swapped;
        Ok(if outward {
            (kind, current.id.clone(), link.other.clone())
        } else {
            (kind, link.other.clone(), current.id.clone())
        })
    }

    /// The field and value that give an issue the parent `parent` (`None`:
    /// none), for a create (`current` is `None`) or an edit of `current`.
    /// Cloud takes `parent` for both sub-tasks and epics. Data Center takes
    /// an epic in the Epic Link field, and a sub-task's parent only when it
    /// makes the sub-task.
    pub(super) fn parent_field(
        &self,
        current: Option<&Issue>,
        parent: Option<&str>,
    ) -> Result<(String, Value), TrackerError> {
        let name = current.map_or_else(|| "a new issue".to_string(), |c| c.key.clone());
        if self.cloud() {
            return Ok((
                "parent".into(),
                parent.map_or(Value::Null, |id| json!({"id": id})),
            ));
        }
        let epic_field = self.epic_field()?.map(str::to_string);
        // The epic or parent issue named, or now in place.
        let named = parent.or_else(|| current.and_then(|c| c.parent.as_ref()).map(|p| &*p.id));
        let Some(named) = named else {
            return Ok(("parent".into(), Value::Null));
        };
        let other = self.existing(named).map_err(|e| match e {
            TrackerError::NotFound(_) => TrackerError::Rejected {
                issue: name.clone(),
                message: format!("Jira has no issue {named:?} to be the parent"),
            },
            e => e,
        })?;
        if other.issue_type.eq_ignore_ascii_case(EPIC_TYPE) {
            let field = epic_field.ok_or_else(|| TrackerError::Rejected {
                issue: name.clone(),
                message: format!(
                    "{} is an epic, and this Jira has no Epic Link field to put an issue in it",
                    other.key
                ),
            })?;
            return Ok((field, parent.map_or(Value::Null, |_| json!(other.key))));
        }
        match (current, parent) {
            (None, Some(id)) => Ok(("parent".into(), json!({"id": id}))),
            _ => Err(TrackerError::Rejected {
                issue: name,
                message: format!(
                    "Jira Data Center sets a sub-task's parent only when it makes the sub-task, \
                     and its REST API cannot move one (to or from {}); move it in Jira",
                    other.key
                ),
            }),
        }
    }
}

/// Whether `listed` is the link `kind` from `source` to `destination` (either
/// way round for a type without direction).
fn is(listed: &Listed, kind: &LinkType, source: &str, destination: &str) -> bool {
    listed.name == kind.name
        && ((listed.source == source && listed.destination == destination)
            || (kind.symmetric() && listed.source == destination && listed.destination == source))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(path: &str) -> Value {
        let text = std::fs::read_to_string(format!(
            "{}/tests/fixtures/jira/{path}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("fixture");
        serde_json::from_str(&text).expect("json")
    }

    fn types() -> Vec<LinkType> {
        recorded("v3/issue-link-types.json")["issueLinkTypes"]
            .as_array()
            .expect("types")
            .iter()
            .map(|t| LinkType {
                name: t["name"].as_str().unwrap().into(),
                inward: t["inward"].as_str().unwrap().into(),
                outward: t["outward"].as_str().unwrap().into(),
            })
            .collect()
    }

    #[test]
    fn links_are_read_from_a_recorded_issue_from_either_end() {
        let raw = recorded("v2/issue-restricted-comment.json");
        let (links, parent, subtasks) = read(&raw["fields"], None);
        let seen: Vec<(&str, LinkDirection, &str, &str)> = links
            .iter()
            .map(|l| {
                (
                    l.link_type.as_str(),
                    l.direction,
                    l.issue.id.as_str(),
                    l.issue.key.as_str(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("Dependent", LinkDirection::Outward, "10004L", "PRJ-2"),
                ("Dependent", LinkDirection::Inward, "10004", "PRJ-3"),
            ]
        );
        assert_eq!(parent, None);
        assert!(subtasks.is_empty());
        let ends = listed("10002", &raw["fields"]);
        assert_eq!(
            (ends[0].source.as_str(), ends[0].destination.as_str()),
            ("10002", "10004L")
        );
        assert_eq!(
            (ends[1].source.as_str(), ends[1].destination.as_str()),
            ("10004", "10002")
        );
    }

    #[test]
    fn parents_come_from_parent_or_the_epic_link() {
        let fields = json!({
            "parent": {"id": "10", "key": "ENG-1", "fields": {"summary": "x"}},
            "subtasks": [{"id": "12", "key": "ENG-3"}],
            "customfield_10014": "ENG-9",
        });
        let (_, parent, subtasks) = read(&fields, Some("customfield_10014"));
        assert_eq!(parent.map(|p| p.id), Some("10".to_string()));
        assert_eq!(subtasks.len(), 1);
        let epic_only = json!({"parent": null, "customfield_10014": "ENG-9"});
        let (_, parent, _) = read(&epic_only, Some("customfield_10014"));
        let parent = parent.expect("the epic");
        assert_eq!((parent.id.as_str(), parent.key.as_str()), ("", "ENG-9"));
        assert_eq!(read(&epic_only, None).1, None);
    }

    #[test]
    fn link_types_are_found_by_name_or_description_of_a_recorded_list() {
        let types = types();
        let (blocks, swapped) = resolve(&types, "blocks").expect("Blocks");
        assert_eq!((blocks.name.as_str(), swapped), ("Blocks", false));
        let (blocks, swapped) = resolve(&types, "is blocked by").expect("Blocks");
        assert_eq!((blocks.name.as_str(), swapped), ("Blocks", true));
        assert_eq!(resolve(&types, "Cloners").map(|t| t.1), Some(false));
        assert!(resolve(&types, "Causes").is_some());
        assert!(resolve(&types, "Precedes").is_none());
        let relates = resolve(&types, "Relates").expect("Relates").0;
        assert!(relates.symmetric() && !blocks.symmetric());
        let one = Listed {
            id: "1".into(),
            name: "Relates".into(),
            source: "7".into(),
            destination: "3".into(),
        };
        assert!(is(&one, relates, "3", "7"));
        assert!(!is(&one, blocks, "7", "3"));
    }
}
