//! PLACEHOLDER API (helper replaces).
use std::path::Path;

use super::{Channel, FetchOutcome, PushOutcome, TransportError};
use crate::exchange::Exchange;

/// An intermediate git repository reached by URL or path.
pub struct GitRemote {
    url: String,
}

impl GitRemote {
    /// A remote for `url`; relative paths are resolved against `site_root`.
    pub fn new(url: &str, site_root: &Path) -> GitRemote {
        let _ = site_root;
        GitRemote {
            url: url.to_string(),
        }
    }
}

impl Channel for GitRemote {
    fn fetch(&self, _e: &Exchange, _s: &str, _p: &str) -> Result<FetchOutcome, TransportError> {
        Ok(FetchOutcome {
            before: None,
            after: None,
        })
    }
    fn push(&self, _e: &Exchange, _s: &str, _p: &str) -> Result<PushOutcome, TransportError> {
        Ok(PushOutcome::UpToDate)
    }
    fn describe(&self) -> String {
        self.url.clone()
    }
}
