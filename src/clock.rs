//! The one clock of a run: the system's, or the fixed time the environment
//! variable `FERRY_NOW` names (an RFC 3339 timestamp), so that tests, demos
//! and benchmarks repeat byte for byte. The ledger's records, the embedded
//! tracker's changes and the exchange's commits all read it here.

use chrono::{DateTime, FixedOffset, Utc};

/// The environment variable holding a fixed clock (RFC 3339) for reproducible runs.
pub const NOW_ENV: &str = "FERRY_NOW";

/// `FERRY_NOW` is set but is not an RFC 3339 timestamp.
#[derive(Debug, thiserror::Error)]
#[error("{NOW_ENV}={value:?} is not an RFC 3339 timestamp: {source}")]
pub struct InvalidNow {
    /// The variable's value.
    pub value: String,
    /// The parse error.
    pub source: chrono::ParseError,
}

/// The time `FERRY_NOW` fixes, with its UTC offset; `None` when unset.
pub fn fixed() -> Result<Option<DateTime<FixedOffset>>, InvalidNow> {
    match std::env::var(NOW_ENV) {
        Ok(value) => parse(&value).map(Some),
        Err(_) => Ok(None),
    }
}

/// Parses a `FERRY_NOW` value.
pub fn parse(value: &str) -> Result<DateTime<FixedOffset>, InvalidNow> {
    DateTime::parse_from_rfc3339(value).map_err(|source| InvalidNow {
        value: value.to_string(),
        source,
    })
}

/// The fixed time in UTC, `None` when unset or invalid (the embedded tracker
/// and the exchange report an invalid value; what only keeps records does
/// not stop for it).
pub fn fixed_utc() -> Option<DateTime<Utc>> {
    fixed().ok().flatten().map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_text_must_be_rfc3339_and_keeps_its_offset() {
        let at = parse("2026-11-20T11:00:00.7+01:00").unwrap();
        assert_eq!(at.offset().local_minus_utc(), 3600);
        assert_eq!(
            at.with_timezone(&Utc).to_rfc3339(),
            "2026-11-20T10:00:00.700+00:00"
        );
        let err = parse("yesterday").unwrap_err();
        assert!(
            err.to_string().starts_with("FERRY_NOW=\"yesterday\""),
            "{err}"
        );
    }
}
