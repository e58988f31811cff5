//! Status changes through Jira's workflow: the transition that reaches a
//! status, and the fields its screen requires.

use super::*;

impl JiraTracker {
    /// Moves an issue to `status` through the workflow. The transition's screen
    /// (`expand=transitions.fields`) may require fields: a classic workflow asks
    /// for a Resolution on the way into a done status and refuses the move
    /// without one. The resolution comes from the replica (as the incoming rule
    /// mapped it), any required field from `tracker.transition_fields`; one
    /// neither supplies fails the issue before anything is sent, naming the
    /// field and where to supply it.
    pub(super) fn transition(
        &self,
        issue: &Issue,
        status: &str,
        resolution: Option<&str>,
    ) -> Result<(), TrackerError> {
        self.transition_with(issue, status, resolution, None)
    }

    /// [`JiraTracker::transition`], taking the transition list from `shared`
    /// when an issue of the same project and type in the same status has read
    /// it (new issues of one kind start alike), and adding it there otherwise.
    /// Should Jira refuse a transition from a shared list, or the list not
    /// reach the status, the issue reads its own list and tries once more.
    pub(super) fn transition_with(
        &self,
        issue: &Issue,
        status: &str,
        resolution: Option<&str>,
        shared: Option<&SharedTransitions>,
    ) -> Result<(), TrackerError> {
        if issue.status.eq_ignore_ascii_case(status) {
            return Ok(());
        }
        let path = self.api(&format!("/issue/{}/transitions", issue.id));
        let kind = (
            issue.project.clone(),
            issue.issue_type.clone(),
            issue.status.clone(),
        );
        let fetch = || {
            self.client
                .json(
                    "GET",
                    &path,
                    &[("expand", "transitions.fields")],
                    &Body::Empty,
                )
                .map_err(|e| issue_error(e, &issue.key))
        };
        // The first issue of a kind reads the list while the others of that
        // group wait for it: one round trip for all of them.
        let (list, from_shared) = match shared {
            Some(shared) => {
                let mut lists = shared.lock().unwrap_or_else(PoisonError::into_inner);
                match lists.get(&kind) {
                    Some(list) => (list.clone(), true),
                    None => {
                        let list = fetch()?;
                        lists.insert(kind, list.clone());
                        (list, false)
                    }
                }
            }
            None => (fetch()?, false),
        };
        let transitions = list["transitions"].as_array().cloned().unwrap_or_default();
        let found = transitions.iter().find(|t| {
            t["to"]["name"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(status))
        });
        if found.is_none() && from_shared {
            return self.transition_with(issue, status, resolution, None);
        }
        let Some(t) = found else {
            let reachable: Vec<&str> = transitions
                .iter()
                .filter_map(|t| t["to"]["name"].as_str())
                .collect();
            return Err(TrackerError::Rejected {
                issue: issue.key.clone(),
                message: format!(
                    "the workflow of {} issues in project {} has no transition from {:?} to {status:?} \
                     (reachable now: {})",
                    issue.issue_type,
                    issue.project,
                    issue.status,
                    if reachable.is_empty() {
                        "none".to_string()
                    } else {
                        reachable.join(", ")
                    }
                ),
            });
        };
        let fields = self.screen_fields(issue, status, t, resolution)?;
        let mut body = json!({"transition": {"id": t["id"]}});
        if !fields.is_empty() {
            body["fields"] = Value::Object(fields);
        }
        match self.client.json("POST", &path, &[], &Body::Json(&body)) {
            Ok(_) => Ok(()),
            Err(Failure::Status { status: 400, .. }) if from_shared => {
                self.transition_with(issue, status, resolution, None)
            }
            Err(e) => Err(issue_error(e, &issue.key)),
        }
    }

    /// The `fields` of a transition request: the resolution when the screen
    /// has one and the replica gives one, and every required field without a
    /// default, from the replica or `tracker.transition_fields` (by name or id).
    pub(super) fn screen_fields(
        &self,
        issue: &Issue,
        status: &str,
        transition: &Value,
        resolution: Option<&str>,
    ) -> Result<serde_json::Map<String, Value>, TrackerError> {
        let mut out = serde_json::Map::new();
        let Some(screen) = transition["fields"].as_object() else {
            return Ok(out);
        };
        for (id, meta) in screen {
            let required = meta["required"] == Value::Bool(true)
                && meta["hasDefaultValue"] != Value::Bool(true);
            let name = meta["name"].as_str().unwrap_or(id);
            let from_replica = resolution
                .filter(|_| id == "resolution")
                .map(|r| Value::String(r.to_string()));
            let configured = || {
                self.config
                    .transition_fields
                    .get(name)
                    .or_else(|| self.config.transition_fields.get(id))
                    .cloned()
            };
            let value = match from_replica {
                Some(v) => Some(v),
                None if required => configured(),
                None => None,
            };
            match value {
                Some(v) => {
                    out.insert(id.clone(), write_field(&v, &meta["schema"], self));
                }
                None if required => {
                    let offered: Vec<String> = meta["allowedValues"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|v| v.get("name").or_else(|| v.get("value")))
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect();
                    let example = offered.first().map_or("…", String::as_str);
                    let rule = if id == "resolution" {
                        "set `issue.resolution` in the incoming rule (map the peer's resolutions \
                         there as its statuses are), or "
                    } else {
                        ""
                    };
                    return Err(TrackerError::Rejected {
                        issue: issue.key.clone(),
                        message: format!(
                            "moving it from {:?} to {status:?} needs {name}, which the workflow \
                             of {} issues in project {} requires on that transition and nothing \
                             supplied: {rule}give a default in ferry.yaml with \
                             tracker.transition_fields: {{{name}: {example}}}{}",
                            issue.status,
                            issue.issue_type,
                            issue.project,
                            if offered.is_empty() {
                                String::new()
                            } else {
                                format!(" (Jira offers: {})", offered.join(", "))
                            }
                        ),
                    });
                }
                None => {}
            }
        }
        Ok(out)
    }
}
