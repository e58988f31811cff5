//! The steps of one replica's import, each against a real site on the embedded
//! tracker: its SQLite database, ledger and exchange clone in a temporary folder.

use std::collections::HashMap;

use git2::Oid;

use super::batch::{Batch, Subject};
use super::one::{Imported, Range, Resumed, import_one, read_replica, taken_here};
use super::{ImportAction, ImportFailure};
use crate::engine::tests::{Fixture, PEER, fixture};
use crate::ledger::Step;
use crate::model::Issue;
use crate::site::Site;

/// `eng`'s replica of ENG-`id`, as its export writes it.
fn replica(site: &str, id: &str, summary: &str) -> String {
    format!(
        "ferry: 1\nsite: {site}\nid: '{id}'\nkey: ENG-{id}\nproject: ENG\n\
         type: Bug\nsummary: {summary}\nstatus: Open\ncreated: 2026-11-20T10:00:00Z\n\
         updated: 2026-11-20T10:00:00Z\n"
    )
}

fn blob(site: &Site, bytes: &[u8]) -> Oid {
    site.exchange.repo().blob(bytes).unwrap()
}

fn issue_message(failure: ImportFailure) -> String {
    match failure {
        ImportFailure::Issue(message) => message,
        ImportFailure::Fatal(e) => panic!("fatal instead of an issue error: {e:#}"),
    }
}

trait Import {
    fn import(&mut self, path: &str, bytes: &[u8], rule: Option<&str>) -> Imported;
}

impl Import for Fixture {
    /// Imports `bytes` at `path` with the connection's rule (or `rule`), in a
    /// batch of its own committed at once, as `apply_range` does.
    fn import(&mut self, path: &str, bytes: &[u8], rule: Option<&str>) -> Imported {
        let script = match rule {
            Some(text) => {
                let file = self.root.join("rules/under-test.rhai");
                std::fs::write(&file, text).unwrap();
                file
            }
            None => self.connection.settings.incoming.clone(),
        };
        let rules = crate::engine::load_rule(&self.site.config, &script).unwrap();
        let range = Range {
            connection: &self.connection,
            rules: &rules,
            ack: None,
            head: Oid::ZERO_SHA1,
            group_size: 1,
        };
        let oid = blob(&self.site, bytes);
        let blob_id = oid.to_string();
        let subject = Subject {
            path,
            blob: &blob_id,
        };
        let mut batch = Batch::open(&mut self.site, PEER).unwrap();
        batch.enter();
        let imported = import_one(
            &mut self.site,
            &range,
            &subject,
            oid,
            &mut batch,
            &mut HashMap::new(),
        );
        let imported = match imported {
            Ok(imported) => imported,
            Err(failure) => panic!("{path}: {}", issue_message(failure)),
        };
        if let Imported::Done(_) = &imported {
            batch.applied(&subject);
        }
        batch.flush(&mut self.site, false).unwrap();
        imported
    }
}

fn done(imported: Imported) -> super::ImportedIssue {
    match imported {
        Imported::Done(done) => *done,
        Imported::Deferred(create) => panic!("{} deferred", create.path),
    }
}

#[test]
fn a_replica_is_read_only_when_it_is_the_peers_and_within_the_limit() {
    let f = fixture();
    let path = "issues/ENG/1.yaml";
    let good = blob(&f.site, replica(PEER, "1", "Printer on fire").as_bytes());
    let read =
        read_replica(&f.site, PEER, path, good).unwrap_or_else(|e| panic!("{}", issue_message(e)));
    assert_eq!(
        (read.key.as_str(), read.summary.as_str()),
        ("ENG-1", "Printer on fire")
    );

    let forged = blob(&f.site, replica("ops", "1", "Forged").as_bytes());
    let message = issue_message(read_replica(&f.site, PEER, path, forged).unwrap_err());
    assert!(message.contains("written by \"ops\""), "{message}");
    assert!(message.contains("eng's branch"), "{message}");

    let huge = format!(
        "{}description: {}\n",
        replica(PEER, "1", "Big"),
        "x".repeat(crate::replica::MAX_REPLICA_BYTES)
    );
    let huge = blob(&f.site, huge.as_bytes());
    let message = issue_message(read_replica(&f.site, PEER, path, huge).unwrap_err());
    assert!(message.starts_with(path), "{message}");
    assert!(message.contains("over the limit"), "{message}");

    let garbage = blob(&f.site, b"ferry: 1\nsite: [\n");
    let message = issue_message(read_replica(&f.site, PEER, path, garbage).unwrap_err());
    assert!(message.contains(path), "{message}");
}

#[test]
fn the_steps_a_killed_run_left_open_say_what_to_look_up() {
    let step = |path: &str, kind: &str| Step {
        id: 1,
        path: path.into(),
        blob: "b".into(),
        kind: kind.into(),
        target: None,
        started_at: "2026-11-20T10:00:00Z".into(),
    };
    let mut open: HashMap<String, Vec<Step>> = HashMap::new();
    open.insert("a".into(), vec![step("a", "create"), step("a", "comment")]);
    open.insert("b".into(), vec![step("b", "attach")]);
    assert_eq!(
        Resumed::take(&mut open, "a"),
        Resumed {
            create: true,
            upload: false
        }
    );
    assert_eq!(
        Resumed::take(&mut open, "b"),
        Resumed {
            create: false,
            upload: true
        }
    );
    // Taken once: a second replica of the same path resumes nothing.
    assert_eq!(Resumed::take(&mut open, "a"), Resumed::default());
    assert!(open.is_empty());
}

#[test]
fn an_issue_unshared_here_or_deleted_takes_no_change_and_a_tombstone_makes_nothing() {
    let mut f = fixture();
    let peers = crate::replica::Replica::parse(
        "issues/ENG/1.yaml",
        replica(PEER, "1", "Printer on fire").as_bytes(),
    )
    .unwrap();
    let local = f.create_local("Printer on fire");
    let mut batch = Batch::open(&mut f.site, PEER).unwrap();
    let taken = |f: &mut Fixture, batch: &mut Batch, local: Option<&Issue>| {
        taken_here(&mut f.site, batch, PEER, &peers, local)
            .unwrap_or_else(|e| panic!("{}", issue_message(e)))
    };
    assert!(taken(&mut f, &mut batch, Some(&local)));
    f.site.ledger.pick(PEER, &local.id, false, false).unwrap();
    assert!(!taken(&mut f, &mut batch, Some(&local)));
    // Unshared by the peer, then back: shared again.
    f.site.ledger.pick(PEER, &local.id, false, true).unwrap();
    assert!(taken(&mut f, &mut batch, Some(&local)));
    let pick = f.site.ledger.pick_for(PEER, &local.id).unwrap().unwrap();
    assert!(pick.shared);

    let deleted = Issue {
        deleted: true,
        ..local.clone()
    };
    assert!(!taken(&mut f, &mut batch, Some(&deleted)));
    let tombstone = crate::replica::Replica {
        deleted: true,
        ..peers.clone()
    };
    assert!(
        !taken_here(&mut f.site, &mut batch, PEER, &tombstone, None)
            .unwrap_or_else(|e| panic!("{}", issue_message(e)))
    );
    assert!(
        taken_here(&mut f.site, &mut batch, PEER, &peers, None)
            .unwrap_or_else(|e| panic!("{}", issue_message(e)))
    );
    batch.flush(&mut f.site, false).unwrap();
    assert_eq!(
        f.site.ledger.local_for(PEER, "1").unwrap().as_deref(),
        Some(local.id.as_str()),
        "the issue found is linked once the batch is in"
    );
}

#[test]
fn a_new_replica_creates_then_a_change_updates_and_the_same_bytes_change_nothing() {
    let mut f = fixture();
    let path = "issues/ENG/7.yaml";
    let created = done(f.import(path, replica(PEER, "7", "Printer on fire").as_bytes(), None));
    assert_eq!(created.action, ImportAction::Created);
    let key = created.local_key.clone().unwrap();
    assert!(key.starts_with("SUP-"), "{key}");
    let local = f.local(&key);
    assert_eq!(local.summary, "Printer on fire");
    assert_eq!(
        f.site.ledger.local_for(PEER, "7").unwrap().as_deref(),
        Some(local.id.as_str())
    );

    let again = done(f.import(path, replica(PEER, "7", "Printer on fire").as_bytes(), None));
    assert_eq!(again.action, ImportAction::Unchanged);
    assert_eq!(again.local_key.as_deref(), Some(key.as_str()));

    let changed = done(f.import(
        path,
        replica(PEER, "7", "Printer still on fire").as_bytes(),
        None,
    ));
    assert_eq!(changed.action, ImportAction::Updated);
    assert_eq!(f.local(&key).summary, "Printer still on fire");
    assert_eq!(
        f.site.tracker.changed_since(None).unwrap().len(),
        1,
        "one issue, never two"
    );
}

#[test]
fn a_rule_that_skips_or_comments_is_followed() {
    let mut f = fixture();
    let skipped = done(f.import(
        "issues/ENG/1.yaml",
        replica(PEER, "1", "Not for us").as_bytes(),
        Some("issue = ();\n"),
    ));
    assert_eq!(skipped.action, ImportAction::Skipped);
    assert!(f.site.tracker.changed_since(None).unwrap().is_empty());

    let noted = done(f.import(
        "issues/ENG/2.yaml",
        replica(PEER, "2", "Needs a note").as_bytes(),
        Some("new_comments.push(#{ author: \"ferry\", body: \"from eng\", internal: true });\n"),
    ));
    assert_eq!(noted.action, ImportAction::Created);
    assert_eq!(noted.comments_added, 1);
    let local = f.local(noted.local_key.as_deref().unwrap());
    assert_eq!(local.comments.len(), 1);
    assert_eq!(local.comments[0].body, "from eng");
    assert!(local.comments[0].internal);
}
