//! `tracker:` of `ferry.yaml` for `kind: jira`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::model::FieldValue;
use crate::tracker::DEFAULT_CONCURRENCY;

/// Which Jira: the flavour decides API version, rich text and authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Flavour {
    /// Jira Cloud: REST v3, ADF, e-mail + API token.
    Cloud,
    /// Jira Server / Data Center: REST v2, wiki text, personal access token.
    Datacenter,
}

/// How an internal comment is restricted in Jira.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum InternalComments {
    /// Visible to one project role.
    Role {
        /// Role name.
        value: String,
    },
    /// Visible to one group.
    Group {
        /// Group name.
        value: String,
    },
    /// A Jira Service Management internal note (`sd.public.comment`).
    Servicedesk,
}

impl Default for InternalComments {
    fn default() -> Self {
        InternalComments::Role {
            value: "Administrators".into(),
        }
    }
}

/// `tracker:` of `ferry.yaml` for `kind: jira`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JiraConfig {
    /// Base URL (`https://example.atlassian.net`, `https://jira.example.com`).
    pub url: String,
    /// Cloud or Data Center.
    pub flavour: Flavour,
    /// The project whose issues sync sees.
    pub project: String,
    /// Extra JQL narrowing what sync sees, ANDed with the project (no ORDER BY).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jql: String,
    /// Fields beyond the standard ones that sync carries, by their Jira name
    /// (`Severity`, `Fix versions`): resolved to ids through the field list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// Issue type of a created issue that names none.
    #[serde(default = "default_type")]
    pub default_type: String,
    /// The restriction an internal comment gets.
    #[serde(default)]
    pub internal_comments: InternalComments,
    /// Values for fields a transition's screen requires (`Resolution: Done`),
    /// by Jira field name or id, used when the incoming rule gives none: a
    /// classic workflow will not enter a done status without a resolution.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub transition_fields: BTreeMap<String, FieldValue>,
    /// How many requests about single issues (comment lists) run at once: a
    /// first export is bound by round trips, not by Jira's work.
    #[serde(
        default = "default_concurrency",
        skip_serializing_if = "is_default_concurrency"
    )]
    pub concurrency: usize,
    /// A file (relative to the site folder) holding the API token (Cloud) or the
    /// personal access token (Data Center), for when the environment cannot carry
    /// it (systemd credentials, container secrets). The environment wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// The Atlassian account e-mail (Cloud), when not in the environment. Not a
    /// secret; the token never goes here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

impl JiraConfig {
    /// What a value's type cannot say: the URL is http(s) and the project is a
    /// key. The message names the key in `ferry.yaml`.
    pub fn check(&self) -> Result<(), String> {
        if !(self.url.starts_with("https://") || self.url.starts_with("http://")) {
            return Err(format!(
                "tracker.url {:?} is not an http(s) URL of a Jira",
                self.url
            ));
        }
        if self.project.is_empty()
            || self
                .project
                .contains(|c: char| c.is_whitespace() || c == '"')
        {
            return Err(format!(
                "tracker.project {:?} is not a Jira project key",
                self.project
            ));
        }
        if self.jql.to_ascii_uppercase().contains("ORDER BY") {
            return Err("tracker.jql must not contain ORDER BY: ferry orders by itself".into());
        }
        Ok(())
    }
}

fn default_type() -> String {
    "Task".into()
}

fn default_concurrency() -> usize {
    DEFAULT_CONCURRENCY
}

fn is_default_concurrency(n: &usize) -> bool {
    *n == DEFAULT_CONCURRENCY
}
