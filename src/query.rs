//! PLACEHOLDER API (helper replaces): trigger queries.
use crate::model::Issue;

/// A parsed trigger query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    text: String,
}

/// A query that does not parse, with the position of the mistake.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("at column {column}: {message}")]
pub struct QueryError {
    /// 1-based column (in characters) of the mistake.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl Query {
    /// Parses a query; the empty query matches everything.
    pub fn parse(text: &str) -> Result<Query, QueryError> {
        Ok(Query {
            text: text.to_string(),
        })
    }
    /// Whether `issue` matches.
    pub fn matches(&self, _issue: &Issue) -> bool {
        true
    }
}
