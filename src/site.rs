//! PLACEHOLDER (lead replaces).
/// Another run holds the lock.
#[derive(Debug, thiserror::Error)]
#[error("another ferry run holds the lock")]
pub struct LockError;
