//! What `ferry init` and `ferry doctor` check of a Jira: the account, the
//! project, and each project permission sync uses.

use super::*;

/// A project permission ferry uses: Jira's key, its name in Jira's
/// administration pages, and what ferry cannot do without it.
pub(super) struct Permission {
    key: &'static str,
    name: &'static str,
    without: &'static str,
    /// Another way out than the grant, when there is one.
    instead: &'static str,
}

pub(super) const BROWSE: Permission = Permission {
    key: "BROWSE_PROJECTS",
    name: "Browse Projects",
    without: "read the project's issues",
    instead: "",
};
/// What importing a peer's replicas does in Jira.
pub(super) const IMPORT_PERMISSIONS: [Permission; 5] = [
    Permission {
        key: "CREATE_ISSUES",
        name: "Create Issues",
        without: "create the issues a peer sends",
        instead: "",
    },
    Permission {
        key: "EDIT_ISSUES",
        name: "Edit Issues",
        without: "apply a peer's changes",
        instead: "",
    },
    Permission {
        key: "TRANSITION_ISSUES",
        name: "Transition Issues",
        without: "move issues to the status a peer's change maps to",
        instead: "",
    },
    Permission {
        key: "ADD_COMMENTS",
        name: "Add Comments",
        without: "add a peer's comments",
        instead: "",
    },
    Permission {
        key: "CREATE_ATTACHMENTS",
        name: "Create Attachments",
        without: "attach a peer's files",
        instead: "",
    },
];
pub(super) const DELETE: Permission = Permission {
    key: "DELETE_ISSUES",
    name: "Delete Issues",
    without: "delete issues when an incoming rule sets delete_issue",
    instead: ", or make the incoming rules keep issues instead of setting delete_issue",
};

impl JiraTracker {
    /// What to do about credentials Jira refuses.
    pub(super) fn credentials_fix(&self) -> String {
        match self.config.flavour {
            Flavour::Cloud => format!(
                "set {ENV_EMAIL} and {ENV_API_TOKEN} (or tracker.email and tracker.token_file in \
                 ferry.yaml) to the account's e-mail and a current API token"
            ),
            Flavour::Datacenter => format!(
                "put a current personal access token (Jira: profile → Personal Access Tokens) in \
                 {ENV_PAT} or in the file tracker.token_file names"
            ),
        }
    }

    /// The account check of [`Tracker::preflight`]: who the credentials are.
    pub(super) fn probe_account(&self) -> Result<String, (String, String)> {
        let me = match self.get_json("/myself", &[]) {
            Ok(me) => me,
            Err(Failure::Status {
                status: status @ (401 | 403),
                message,
            }) => {
                return Err((
                    format!("Jira refuses these credentials ({status}: {message})"),
                    self.credentials_fix(),
                ));
            }
            Err(e) => {
                return Err((
                    format!("cannot ask Jira who these credentials belong to: {e}"),
                    "check tracker.url in ferry.yaml and that Jira is up".into(),
                ));
            }
        };
        let Some(name) = self.user_name(&me) else {
            return Err((
                "Jira's /myself names no user for these credentials".into(),
                self.credentials_fix(),
            ));
        };
        let display = me["displayName"].as_str().unwrap_or(&name).to_string();
        let _ = self.me.set(name.clone());
        Ok(format!("signed in as {display} ({name})"))
    }

    /// The project check of [`Tracker::preflight`].
    pub(super) fn probe_project(&self, me: &str) -> Result<String, (String, String)> {
        let key = &self.config.project;
        match self.get_json(&format!("/project/{}", client::encode(key)), &[]) {
            Ok(project) => Ok(format!(
                "{key} ({})",
                project["name"].as_str().unwrap_or_default()
            )),
            Err(Failure::Status {
                status: 404,
                message,
            }) => Err((
                format!("Jira has no project {key} that {me} can see ({message})"),
                format!(
                    "set tracker.project in ferry.yaml to the project's key (the part before the \
                     dash in its issue keys), or ask a Jira administrator to let {me} browse {key}"
                ),
            )),
            Err(e) => Err((
                format!("cannot read project {key}: {e}"),
                "check tracker.url in ferry.yaml and that Jira is up".into(),
            )),
        }
    }

    /// The permission checks of [`Tracker::preflight`]: one per permission
    /// `needs` calls for, from one `mypermissions` request.
    pub(super) fn probe_permissions(&self, me: &str, needs: Needs) -> Vec<Probe> {
        let key = &self.config.project;
        let mut wanted = vec![&BROWSE];
        if needs.import {
            wanted.extend(IMPORT_PERMISSIONS.iter());
        }
        if needs.delete {
            wanted.push(&DELETE);
        }
        let asked: Vec<&str> = wanted.iter().map(|p| p.key).collect();
        let asked = asked.join(",");
        let answer = match self.get_json(
            "/mypermissions",
            &[("projectKey", key), ("permissions", &asked)],
        ) {
            Ok(answer) => answer,
            Err(e) => {
                return vec![Probe {
                    name: "jira permissions".into(),
                    outcome: Err((
                        format!("cannot ask Jira for {me}'s permissions in {key}: {e}"),
                        "check tracker.project in ferry.yaml and that Jira is up".into(),
                    )),
                }];
            }
        };
        wanted
            .into_iter()
            .map(|p| {
                // Some Data Center versions ignore `permissions` and send every
                // permission: pick the ones asked for.
                let granted = answer["permissions"][p.key]["havePermission"] == Value::Bool(true);
                Probe {
                    name: format!("jira permission {}", p.name),
                    outcome: if granted {
                        Ok(format!("{me} has it in {key}"))
                    } else {
                        Err((
                            format!("{me} lacks it in {key}, so ferry cannot {}", p.without),
                            format!(
                                "ask a Jira administrator to grant {} ({}) to {me} in the \
                                 permission scheme of project {key}{}",
                                p.name, p.key, p.instead
                            ),
                        ))
                    },
                }
            })
            .collect()
    }
}
