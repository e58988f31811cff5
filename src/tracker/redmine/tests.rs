//! The contract against a live Redmine, and the fault levels against tiny local
//! servers that misbehave on purpose.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use super::*;
use crate::tracker::contract;

/// The live Redmine the contract runs against, from the environment; `None`
/// prints why the test does nothing, and fails under CI, which must run it.
fn live(prefix: &str) -> Option<(String, String)> {
    let url = std::env::var(format!("{prefix}_URL")).ok();
    let key = std::env::var(format!("{prefix}_KEY")).ok();
    match (url, key) {
        (Some(url), Some(key)) if !url.is_empty() && !key.is_empty() => Some((url, key)),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but {prefix}_URL and {prefix}_KEY are not: the live Redmine tests must run in CI"
            );
            eprintln!("SKIPPED: no Redmine configured ({prefix}_URL, {prefix}_KEY)");
            None
        }
    }
}

fn settings(url: &str, key: &str, project: &str) -> Settings {
    Settings {
        url: url.into(),
        project: project.into(),
        api_key: key.into(),
        users: BTreeMap::new(),
        statuses: BTreeMap::new(),
        labels_field: "Labels".into(),
        timeout: Duration::from_secs(30),
    }
}

/// The shared tracker contract against a real Redmine (see
/// scripts/redmine-test-setup.sh for what the instance needs).
#[test]
fn contract() {
    let Some((url, key)) = live("FERRY_TEST_REDMINE") else {
        return;
    };
    let project = std::env::var("FERRY_TEST_REDMINE_PROJECT").unwrap_or_else(|_| "sup".to_string());
    let setup = contract::Setup {
        project: &project,
        user: "admin",
        done: None,
    };
    eprintln!("running the tracker contract against Redmine at {url}, project {project}");
    contract::run_all(&setup, &mut |check| {
        let state = tempfile::tempdir().unwrap();
        let mut tracker =
            RedmineTracker::open(settings(&url, &key, &project), state.path()).expect("open");
        check(&mut tracker);
    });
}

/// An issue deleted in Redmine itself (which reports nothing) comes out of the
/// next `changed_since` as a tombstone, once per cursor, and `get` shows it.
#[test]
fn a_deletion_in_redmine_is_noticed() {
    let Some((url, key)) = live("FERRY_TEST_REDMINE") else {
        return;
    };
    let project = std::env::var("FERRY_TEST_REDMINE_PROJECT").unwrap_or_else(|_| "sup".to_string());
    let state = tempfile::tempdir().unwrap();
    let mut tracker = RedmineTracker::open(settings(&url, &key, &project), state.path()).unwrap();
    let new = NewIssue {
        project: project.clone(),
        patch: IssuePatch {
            summary: Some("Deleted behind ferry's back".into()),
            ..IssuePatch::default()
        },
        author: "admin".into(),
        origin: None,
    };
    let issue = tracker.create(&new).unwrap();
    let before = now();
    let client = Client::new(&url, &key, Duration::from_secs(30));
    assert!(matches!(
        client
            .delete(&format!("/issues/{}.json", issue.id))
            .unwrap(),
        Reply::Empty
    ));
    // A new connector on the same state folder: what it knows is on disk.
    let mut tracker = RedmineTracker::open(settings(&url, &key, &project), state.path()).unwrap();
    let changed = tracker.changed_since(Some(before)).unwrap();
    let tomb = changed
        .iter()
        .find(|i| i.id == issue.id)
        .expect("tombstone");
    assert!(tomb.deleted && tomb.updated >= before);
    assert_eq!((&tomb.key, &tomb.summary), (&issue.key, &issue.summary));
    assert_eq!(tracker.get(&issue.id).unwrap().as_ref(), Some(tomb));
    let later = tomb.updated + chrono::Duration::seconds(1);
    assert!(
        !tracker
            .changed_since(Some(later))
            .unwrap()
            .iter()
            .any(|i| i.id == issue.id),
        "a later cursor does not see it again"
    );
    tracker
        .delete(&issue.id, "admin")
        .expect("deleting a tombstone again (a retried step) is fine");
}

/// A Redmine that answers every request with `answer(request line)`; `None`
/// means it never answers.
fn fake(answer: fn(&str) -> Option<(u16, &'static str)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let mut length = 0;
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap() == 0 || header == "\r\n" {
                        break;
                    }
                    if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                match answer(&line) {
                    Some((status, body)) => {
                        let _ = write!(
                            stream,
                            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\
                             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                    }
                    None => std::thread::sleep(Duration::from_secs(10)),
                }
            });
        }
    });
    url
}

const ME: (u16, &str) = (200, r#"{"user":{"id":1,"login":"admin"}}"#);

fn open_fake(url: &str) -> Result<RedmineTracker, TrackerError> {
    let mut s = settings(url, "secret-key-123", "sup");
    s.timeout = Duration::from_secs(1);
    let state = tempfile::tempdir().unwrap();
    RedmineTracker::open(s, state.path())
}

fn message(e: TrackerError) -> String {
    let text = e.to_string();
    assert!(!text.contains("secret-key-123"), "the key leaked: {text}");
    text
}

#[test]
fn a_refused_key_is_a_site_level_error() {
    let url = fake(|_| Some((401, "")));
    match open_fake(&url) {
        Err(e @ TrackerError::Unavailable(_)) => {
            assert!(message(e).contains("refused the API key (401"));
        }
        other => panic!("{:?}", other.err()),
    }
}

#[test]
fn forbidden_is_a_site_level_error() {
    let url = fake(|line| {
        Some(if line.contains("/users/current") {
            ME
        } else {
            (403, "")
        })
    });
    let tracker = open_fake(&url).unwrap();
    match tracker.get("7") {
        Err(e @ TrackerError::Unavailable(_)) => assert!(message(e).contains("403 Forbidden")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_validation_error_fails_the_issue_with_redmines_words() {
    let url = fake(|line| {
        Some(if line.contains("/users/current") {
            ME
        } else {
            (
                422,
                r#"{"errors":["Status is invalid","Subject cannot be blank"]}"#,
            )
        })
    });
    let mut tracker = open_fake(&url).unwrap();
    let new = NewIssue {
        project: "sup".into(),
        patch: IssuePatch::default(),
        author: "admin".into(),
        origin: None,
    };
    match tracker.create(&new) {
        Err(TrackerError::Rejected { issue, message }) => {
            assert_eq!(issue, "new issue in sup");
            assert_eq!(message, "Status is invalid; Subject cannot be blank");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_server_error_stops_the_run() {
    let url = fake(|line| {
        Some(if line.contains("/users/current") {
            ME
        } else {
            (500, "boom")
        })
    });
    let tracker = open_fake(&url).unwrap();
    match tracker.changed_since(None) {
        Err(e @ TrackerError::Unavailable(_)) => {
            let text = message(e);
            assert!(text.contains("(500): boom"), "{text}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_server_that_hangs_times_out() {
    let url = fake(|line| {
        if line.contains("/users/current") {
            Some(ME)
        } else {
            None
        }
    });
    let tracker = open_fake(&url).unwrap();
    match tracker.get("1") {
        Err(e @ TrackerError::Unavailable(_)) => {
            let text = message(e);
            assert!(
                text.contains("did not answer GET /issues/1.json within 1 s"),
                "{text}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn nobody_listening_is_a_site_level_error() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    match open_fake(&url) {
        Err(e @ TrackerError::Unavailable(_)) => {
            assert!(message(e).contains("cannot reach Redmine"))
        }
        other => panic!("{:?}", other.err()),
    }
}
