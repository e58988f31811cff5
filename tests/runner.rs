//! Integration tests: the real `ferry` binary in temporary folders, with the real
//! `git` CLI as the oracle. One test binary (cargo's `autotests = false`) so it
//! links once.

mod cli;
