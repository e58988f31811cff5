//! ferry: file-and-git-based offline sync of issues between trackers that cannot
//! reach each other.
//!
//! The data flow of one `ferry sync` (ARCHITECTURE.md in the repository has the
//! layers, the invariants and where each is enforced):
//! tracker → [`rules`] (outgoing) → [`replica`] → [`exchange`] commit →
//! [`transport`] → peer → tree diff → [`rules`] (incoming) → [`tracker`], with every
//! mapping and position kept in the [`ledger`]. The [`engine`] drives it; the
//! [`cli`] is a thin layer over the engine.

pub mod attachment;
pub mod cli;
pub mod clock;
pub mod config;
pub mod disk;
pub mod engine;
pub mod exchange;
pub mod failpoint;
pub mod failure;
pub mod files;
pub mod git_runtime;
pub mod identity;
pub mod ledger;
pub mod maintenance;
pub mod model;
pub mod notify;
pub mod pack;
pub mod progress;
pub mod query;
pub mod replica;
pub mod rules;
pub mod seal;
pub mod signing;
pub mod site;
pub mod tracker;
pub mod transport;
pub mod words;
pub mod yaml_depth;

/// Counts what each rule run allocates, for its memory budget (see
/// [`rules::budget`]); everything else goes straight to the system allocator.
#[global_allocator]
static ALLOCATOR: rules::budget::Counting = rules::budget::Counting;
