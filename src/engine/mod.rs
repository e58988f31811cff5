//! PLACEHOLDER (lead replaces).
