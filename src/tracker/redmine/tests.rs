//! The contract against a live Redmine, and the fault levels against tiny local
//! servers that misbehave on purpose.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// The live tests share one Redmine and one project, and a Redmine on SQLite
/// answers 500 to writes that overlap; cargo runs tests side by side, so each
/// live test holds this while it runs.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LIVE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A failed test poisons the lock; the next one still runs alone.
    LIVE.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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
        retry: quick_retries(),
        concurrency: crate::tracker::DEFAULT_CONCURRENCY,
    }
}

/// Four attempts with waits of milliseconds: the retries of production, with
/// time shrunk.
fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        attempts: 4,
        base: Duration::from_millis(5),
        max_wait: Duration::from_millis(50),
        max_total: Duration::from_secs(1),
        second: Duration::from_millis(1),
    }
}

/// The shared tracker contract against a real Redmine (see
/// scripts/redmine-test-setup.sh for what the instance needs).
#[test]
fn contract() {
    let Some((url, key)) = live("FERRY_TEST_REDMINE") else {
        return;
    };
    let _one_at_a_time = one_at_a_time();
    let project = std::env::var("FERRY_TEST_REDMINE_PROJECT").unwrap_or_else(|_| "sup".to_string());
    let setup = contract::Setup {
        project: &project,
        user: "admin",
        done: None,
        epic: None,
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
    let _one_at_a_time = one_at_a_time();
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
    let client = Client::new(&url, &key, Duration::from_secs(30), quick_retries());
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

/// A proxy in front of the live Redmine that answers the requests `fail` picks
/// (by their number, from 0, and request line) with a 503 of its own and
/// forwards the others: Redmine having a moment in the middle of a run.
struct Proxy {
    url: String,
    seen: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
}

impl Proxy {
    fn start(upstream: &str, fail: impl Fn(usize, &str) -> bool + Send + Sync + 'static) -> Proxy {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let fail = Arc::new(fail);
        let (count, failures) = (seen.clone(), failed.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let (upstream, fail) = (upstream.clone(), fail.clone());
                let (count, failures) = (count.clone(), failures.clone());
                std::thread::spawn(move || {
                    let Some(request) = read_request(&client) else {
                        return;
                    };
                    let number = count.fetch_add(1, Ordering::SeqCst);
                    let line = String::from_utf8_lossy(
                        &request[..request.iter().position(|b| *b == b'\r').unwrap_or(0)],
                    )
                    .to_string();
                    let mut client = client;
                    if fail(number, &line) {
                        failures.fetch_add(1, Ordering::SeqCst);
                        let body = "<html>Service Unavailable</html>";
                        let _ = write!(
                            client,
                            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/html\r\n\
                             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        return;
                    }
                    let mut server = TcpStream::connect(&upstream).unwrap();
                    server.write_all(&request).unwrap();
                    let _ = std::io::copy(&mut server, &mut client);
                });
            }
        });
        Proxy { url, seen, failed }
    }

    fn seen(&self) -> usize {
        self.seen.load(Ordering::SeqCst)
    }

    fn failed(&self) -> usize {
        self.failed.load(Ordering::SeqCst)
    }
}

/// One whole request from `client`, its `Connection` header replaced by `close`
/// so that the server's answer ends where its connection does; the body as
/// sent (`Content-Length` or chunked). `None` when the client hung up.
fn read_request(client: &TcpStream) -> Option<Vec<u8>> {
    let mut reader = BufReader::new(client);
    let mut head = Vec::new();
    let mut length = 0;
    let mut chunked = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let lower = line.to_ascii_lowercase();
        if line == "\r\n" {
            head.extend_from_slice(b"Connection: close\r\n\r\n");
            break;
        }
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().ok()?;
        }
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
        if !lower.starts_with("connection:") {
            head.extend_from_slice(line.as_bytes());
        }
    }
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            head.extend_from_slice(size.as_bytes());
            let n = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk).ok()?;
            head.extend_from_slice(&chunk);
            if n == 0 {
                break;
            }
        }
    } else {
        let mut body = vec![0; length];
        reader.read_exact(&mut body).ok()?;
        head.extend_from_slice(&body);
    }
    Some(head)
}

/// Every contract check passes through a Redmine that fails one request in the
/// middle of it (its third: after connecting, at work) with a 503.
#[test]
fn the_contract_holds_through_a_503_in_the_middle_of_each_check() {
    let Some((url, key)) = live("FERRY_TEST_REDMINE") else {
        return;
    };
    let _one_at_a_time = one_at_a_time();
    let project = std::env::var("FERRY_TEST_REDMINE_PROJECT").unwrap_or_else(|_| "sup".to_string());
    let setup = contract::Setup {
        project: &project,
        user: "admin",
        done: None,
        epic: None,
    };
    let failures = AtomicUsize::new(0);
    contract::run_all(&setup, &mut |check| {
        let proxy = Proxy::start(&url, |n, _| n == 2);
        let state = tempfile::tempdir().unwrap();
        let mut tracker =
            RedmineTracker::open(settings(&proxy.url, &key, &project), state.path()).expect("open");
        check(&mut tracker);
        if proxy.seen() > 2 {
            assert_eq!(proxy.failed(), 1, "the third request got its 503");
            failures.fetch_add(1, Ordering::SeqCst);
        }
    });
    assert!(
        failures.load(Ordering::SeqCst) >= contract::CHECKS.len() / 2,
        "most checks met the 503"
    );
}

/// A 503 on a write is sent again, and done once: Redmine did not do it.
#[test]
fn a_503_on_a_write_is_sent_again_and_done_once() {
    let Some((url, key)) = live("FERRY_TEST_REDMINE") else {
        return;
    };
    let _one_at_a_time = one_at_a_time();
    let project = std::env::var("FERRY_TEST_REDMINE_PROJECT").unwrap_or_else(|_| "sup".to_string());
    let proxy = Proxy::start(&url, |_, line| {
        static FAILED: AtomicUsize = AtomicUsize::new(0);
        let write = line.starts_with("POST /issues.json") || line.starts_with("PUT /issues/");
        write && FAILED.fetch_add(1, Ordering::SeqCst) < 2
    });
    let state = tempfile::tempdir().unwrap();
    let mut tracker =
        RedmineTracker::open(settings(&proxy.url, &key, &project), state.path()).unwrap();
    let summary = format!("Written through a 503 {:?}", std::time::SystemTime::now());
    let new = NewIssue {
        project: project.clone(),
        patch: IssuePatch {
            summary: Some(summary.clone()),
            ..IssuePatch::default()
        },
        author: "admin".into(),
        origin: None,
    };
    let issue = tracker.create(&new).expect("the create is sent again");
    let comment = NewComment {
        author: "admin".into(),
        body: "once".into(),
        internal: false,
        origin: None,
    };
    tracker
        .add_comment(&issue.id, &comment)
        .expect("the note is sent again");
    assert_eq!(proxy.failed(), 2, "both writes met a 503");

    let direct = RedmineTracker::open(settings(&url, &key, &project), state.path()).unwrap();
    let stored = direct.get(&issue.id).unwrap().expect("created");
    assert_eq!(stored.comments.len(), 1, "one note, not two");
    let twins = direct
        .changed_since(Some(issue.updated))
        .unwrap()
        .into_iter()
        .filter(|i| i.summary == summary)
        .count();
    assert_eq!(twins, 1, "one issue, not two");
}

/// A Redmine that fails every request stops the run with an error that names the
/// request and says a retry did not help.
#[test]
fn a_redmine_that_keeps_failing_is_a_site_level_error_naming_the_request() {
    let Some((url, key)) = live("FERRY_TEST_REDMINE") else {
        return;
    };
    let _one_at_a_time = one_at_a_time();
    let proxy = Proxy::start(&url, |_, _| true);
    let state = tempfile::tempdir().unwrap();
    match RedmineTracker::open(settings(&proxy.url, &key, "sup"), state.path()) {
        Err(TrackerError::Unavailable(text)) => {
            assert_eq!(
                text,
                format!(
                    "Redmine at {} failed on GET /users/current.json (503): \
                     <html>Service Unavailable</html> (4 tries)",
                    proxy.url
                )
            );
            assert!(!text.contains(&key));
        }
        other => panic!("{:?}", other.err()),
    }
    assert_eq!(proxy.seen(), 4, "four attempts, then it stops");
}

/// A Redmine that answers every request with `answer(request line)`; `None`
/// means it never answers.
fn fake(answer: fn(&str) -> Option<(u16, &'static str)>) -> String {
    fake_counting(move |_, line| answer(line)).0
}

/// [`fake`] with `answer` also given the request's number (from 0), and the
/// count of requests it got. A 429 comes with `Retry-After: 3`.
fn fake_counting(
    answer: impl Fn(usize, &str) -> Option<(u16, &'static str)> + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let answer = Arc::new(answer);
    let counter = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let (answer, counter) = (answer.clone(), counter.clone());
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
                let number = counter.fetch_add(1, Ordering::SeqCst);
                match answer(number, &line) {
                    Some((status, body)) => {
                        let retry_after = if status == 429 {
                            "Retry-After: 3\r\n"
                        } else {
                            ""
                        };
                        let _ = write!(
                            stream,
                            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\
                             {retry_after}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                    }
                    None => std::thread::sleep(Duration::from_secs(10)),
                }
            });
        }
    });
    (url, count)
}

const ME: (u16, &str) = (200, r#"{"user":{"id":1,"login":"admin"}}"#);

fn open_fake(url: &str) -> Result<RedmineTracker, TrackerError> {
    let mut s = settings(url, "secret-key-123", "sup");
    s.timeout = Duration::from_secs(1);
    s.retry.attempts = 2;
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
            assert!(text.ends_with("(500): boom (2 tries)"), "{text}");
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
                text.contains("did not answer GET /issues/1.json within 1 s (2 tries)"),
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

const PROJECT: (u16, &str) = (
    200,
    r#"{"project":{"id":1,"identifier":"sup","created_on":"2024-01-02T03:04:05Z"}}"#,
);

#[test]
fn throttling_and_outages_are_waited_out() {
    let (url, count) = fake_counting(|n, line| {
        Some(if line.contains("/users/current") {
            ME
        } else {
            match n {
                1 => (429, "{}"),
                2 => (503, "<html>maintenance</html>"),
                _ => PROJECT,
            }
        })
    });
    let mut s = settings(&url, "secret-key-123", "sup");
    s.retry.second = Duration::from_millis(20);
    let state = tempfile::tempdir().unwrap();
    let tracker = RedmineTracker::open(s, state.path()).unwrap();
    let started = std::time::Instant::now();
    let instance = tracker.instance().expect("retried");
    assert_eq!(instance.id, "project 1 created 2024-01-02T03:04:05Z");
    assert!(
        started.elapsed() >= Duration::from_millis(60),
        "Retry-After (3 s, scaled to 60 ms) honoured"
    );
    assert_eq!(count.load(Ordering::SeqCst), 4);
}

#[test]
fn a_write_that_may_have_been_done_is_not_sent_again() {
    for status in [500, 502, 504] {
        let (url, count) = fake_counting(move |_, line| {
            Some(if line.contains("/users/current") {
                ME
            } else {
                (status, "proxy error")
            })
        });
        let client = Client::new(
            &url,
            "secret-key-123",
            Duration::from_secs(1),
            quick_retries(),
        );
        match client.send(
            "PUT",
            "/issues/7.json",
            &json!({"issue": {"notes": "once"}}),
        ) {
            Err(e @ TrackerError::Unavailable(_)) => {
                let text = message(e);
                assert!(
                    text.ends_with(&format!(
                        "failed on PUT /issues/7.json ({status}): proxy error"
                    )),
                    "{text}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(count.load(Ordering::SeqCst), 1, "sent once");
    }
}

/// A first read of a project lists its ids a page of 100 at a time (no
/// journals: Redmine's list has none), then reads each issue on its own with
/// its journals, `concurrency` requests at a time, as many as the caller asks
/// for at once.
#[test]
fn a_first_read_lists_ids_a_page_at_a_time_then_reads_each_issue() {
    let fake = fake::FakeRedmine::start("sup", "key").unwrap();
    fake.seed(250, 2);
    let state = tempfile::tempdir().unwrap();
    let tracker = RedmineTracker::open(settings(fake.url(), "key", "sup"), state.path()).unwrap();
    let before = fake.log().len();
    let ids = tracker.changed_ids(None).unwrap().unwrap();
    assert_eq!(ids.len(), 250);
    assert_eq!((ids[0].as_str(), ids[249].as_str()), ("1", "250"));
    let listing = fake.log()[before..].to_vec();
    assert_eq!(listing.len(), 3, "{listing:?}");
    assert!(listing.iter().all(|l| l.starts_with("GET /issues.json?")));
    assert_eq!(fake.largest_page(), 100);
    let before = fake.log().len();
    let page = tracker.get_many(&ids[..10]).unwrap();
    assert_eq!(page.len(), 10);
    assert!(page.iter().all(|i| i.comments.len() == 2));
    let reads: Vec<String> = fake.log()[before..]
        .iter()
        .filter(|l| l.starts_with("GET /issues/"))
        .cloned()
        .collect();
    assert_eq!(reads.len(), 10, "{reads:?}");
    assert!(reads.iter().all(|l| l.contains("include=journals")));
    assert_eq!(
        page.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        ids[..10].iter().map(String::as_str).collect::<Vec<_>>(),
        "in the order asked for"
    );

    // Side by side, never more than the setting.
    let fake = fake::FakeRedmine::start("sup", "key").unwrap();
    fake.seed(12, 1);
    fake.latency(std::time::Duration::from_millis(20));
    let mut two = settings(fake.url(), "key", "sup");
    two.concurrency = 2;
    let state = tempfile::tempdir().unwrap();
    let tracker = RedmineTracker::open(two, state.path()).unwrap();
    assert_eq!(tracker.get_many(&ids[..12]).unwrap().len(), 12);
    assert_eq!(fake.most_at_once(), 2);
}

/// What an older version remembered in `redmine-known.json` moves into the
/// store on the first open; an issue it knew that Redmine no longer has is a
/// tombstone of the next read, through the listing and the paged read alike.
#[test]
fn an_older_known_file_is_taken_over() {
    let fake = fake::FakeRedmine::start("sup", "key").unwrap();
    fake.seed(3, 0);
    let state = tempfile::tempdir().unwrap();
    let legacy = state.path().join(LEGACY_KNOWN_FILE);
    std::fs::write(
        &legacy,
        r#"{"issues": {"77": {"key": "sup-77", "project": "sup", "summary": "Gone",
            "type": "Bug", "status": "New", "created": "2026-01-01T00:00:00Z"}}}"#,
    )
    .unwrap();
    let tracker = RedmineTracker::open(settings(fake.url(), "key", "sup"), state.path()).unwrap();
    assert!(!legacy.exists());
    assert!(state.path().join(KNOWN_FILE).exists());
    let ids = tracker.changed_ids(None).unwrap().unwrap();
    assert_eq!(ids, ["1", "2", "3", "77"]);
    let read = tracker.get_many(&ids).unwrap();
    let tomb = read.last().unwrap();
    assert!(tomb.deleted);
    assert_eq!(
        (tomb.key.as_str(), tomb.summary.as_str()),
        ("sup-77", "Gone")
    );
}

/// The engine's first export of a Redmine project larger than its page goes
/// through the paged read and writes every replica.
#[test]
fn a_first_export_of_a_large_redmine_project_pages() {
    let fake = fake::FakeRedmine::start("sup", "key").unwrap();
    let total = 1_050;
    fake.seed(total, 1);
    let world = tempfile::tempdir().unwrap();
    let exchange = world.path().join("exchange.git");
    git2::Repository::init_bare(&exchange).unwrap();
    let site = world.path().join("sup");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(
        site.join("ferry.yaml"),
        format!(
            "site: sup\ntracker:\n  kind: redmine\n  url: \"{}\"\n  project: sup\n  \
             api_key_file: redmine.key\nsync_user: admin\n",
            fake.url()
        ),
    )
    .unwrap();
    std::fs::write(site.join("redmine.key"), "key\n").unwrap();
    let run = |args: &[&str]| crate::cli::run_ok(&site, args);
    run(&["init", "--site", "sup"]);
    run(&[
        "connection",
        "add",
        "eng",
        "--channel",
        exchange.to_str().unwrap(),
        "--project",
        "sup=ENG",
    ]);
    run(&["export"]);
    let opened = crate::site::Site::open(&site).unwrap();
    let head = opened
        .exchange
        .resolve(&crate::exchange::own_branch("sup", "eng"))
        .unwrap()
        .expect("exported");
    assert_eq!(opened.exchange.files(head, "issues/").unwrap().len(), total);
    let listed = fake
        .log()
        .iter()
        .filter(|l| l.starts_with("GET /issues.json?"))
        .count();
    assert_eq!(listed, total.div_ceil(100), "one listing of the project");
}

/// Against the live Redmine: a first read lists the project's ids a page of
/// 100 at a time, without journals, and reads the issues it is asked for one
/// request each, with their notes; a paged read gives what `changed_since`
/// gives.
#[test]
fn a_first_read_pages_on_a_live_redmine() {
    let Some((url, key)) = live("FERRY_TEST_REDMINE") else {
        return;
    };
    let _one_at_a_time = one_at_a_time();
    let project = std::env::var("FERRY_TEST_REDMINE_PROJECT").unwrap_or_else(|_| "sup".to_string());
    let state = tempfile::tempdir().unwrap();
    let mut tracker = RedmineTracker::open(settings(&url, &key, &project), state.path()).unwrap();
    let mut made = Vec::new();
    for n in 0..3 {
        let new = NewIssue {
            project: project.clone(),
            patch: IssuePatch {
                summary: Some(format!("Paged read {n}")),
                ..IssuePatch::default()
            },
            author: "admin".into(),
            origin: None,
        };
        let issue = tracker.create(&new).unwrap();
        tracker
            .add_comment(
                &issue.id,
                &NewComment {
                    author: "admin".into(),
                    body: format!("Note on {n}"),
                    internal: false,
                    origin: None,
                },
            )
            .unwrap();
        made.push(issue.id);
    }
    let proxy = Proxy::start(&url, |_, _| false);
    let state = tempfile::tempdir().unwrap();
    let fresh = RedmineTracker::open(settings(&proxy.url, &key, &project), state.path()).unwrap();
    let opened = proxy.seen();
    let ids = fresh.changed_ids(None).unwrap().unwrap();
    let pages = proxy.seen() - opened;
    assert!(made.iter().all(|id| ids.contains(id)));
    assert_eq!(pages, ids.len().div_ceil(100).max(1), "{} ids", ids.len());
    let before = proxy.seen();
    let read = fresh.get_many(&made).unwrap();
    assert_eq!(
        read.iter().map(|i| &i.id).collect::<Vec<_>>(),
        made.iter().collect::<Vec<_>>()
    );
    assert!(read.iter().all(|i| i.comments.len() == 1));
    // One read per issue, and the names of what they refer to once.
    assert!(
        proxy.seen() - before <= made.len() + 4,
        "{}",
        proxy.seen() - before
    );
    let whole = fresh.changed_since(None).unwrap();
    let listed: Vec<&String> = whole.iter().map(|i| &i.id).collect();
    assert_eq!(listed, ids.iter().collect::<Vec<_>>());
}
