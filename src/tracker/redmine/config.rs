//! `tracker:` of `ferry.yaml` for `kind: redmine`, and the connector's
//! settings made from it (the API key from its file or the environment).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{API_KEY_ENV, Settings};
use crate::tracker::retry::RetryPolicy;
use crate::tracker::{DEFAULT_CONCURRENCY, TrackerError};

/// `tracker:` of `ferry.yaml` for `kind: redmine` (see docs/redmine.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedmineConfig {
    /// Base URL of the server.
    pub url: String,
    /// The project identifier whose issues this site shares.
    pub project: String,
    /// A file holding the API key, relative to the site folder; without it
    /// the key comes from `FERRY_REDMINE_API_KEY`. Never the key itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<PathBuf>,
    /// ferry user name → Redmine login, for users named differently.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub users: BTreeMap<String, String>,
    /// ferry status → Redmine status, for statuses named differently.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub statuses: BTreeMap<String, String>,
    /// The text custom field holding labels (comma-separated).
    #[serde(default = "default_labels_field")]
    pub labels_field: String,
    /// Seconds one request may take.
    #[serde(default = "default_timeout")]
    pub timeout: u64,
    /// How many requests about single issues run at once.
    #[serde(
        default = "default_concurrency",
        skip_serializing_if = "is_default_concurrency"
    )]
    pub concurrency: usize,
}

fn default_labels_field() -> String {
    "Labels".into()
}

fn default_timeout() -> u64 {
    30
}

fn default_concurrency() -> usize {
    DEFAULT_CONCURRENCY
}

fn is_default_concurrency(n: &usize) -> bool {
    *n == DEFAULT_CONCURRENCY
}

impl RedmineConfig {
    /// The connector's settings, with the API key read from the key file
    /// (relative to `root`, the site folder) or else from the environment.
    /// Neither the key nor any part of it appears in a message.
    pub fn settings(&self, root: &Path) -> Result<Settings, TrackerError> {
        let key = match &self.api_key_file {
            Some(file) => {
                let path = root.join(file);
                std::fs::read_to_string(&path).map_err(|e| {
                    TrackerError::Unavailable(format!(
                        "cannot read the Redmine API key file {}: {e}",
                        path.display()
                    ))
                })?
            }
            None => std::env::var(API_KEY_ENV).unwrap_or_default(),
        };
        let api_key = key.trim().to_string();
        if api_key.is_empty() {
            return Err(TrackerError::Unavailable(format!(
                "no Redmine API key: set {API_KEY_ENV} or name a key file (api_key_file)"
            )));
        }
        Ok(Settings {
            url: self.url.clone(),
            project: self.project.clone(),
            api_key,
            users: self.users.clone(),
            statuses: self.statuses.clone(),
            labels_field: self.labels_field.clone(),
            timeout: Duration::from_secs(self.timeout),
            retry: RetryPolicy::default(),
            concurrency: self.concurrency,
        })
    }
}
