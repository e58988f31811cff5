//! The review and release reports in a real browser: Debian's Chromium,
//! headless, reads the page (`--dump-dom`) and takes a screenshot. The
//! pending issue is on the page, a peer's markup is text, and nothing is
//! fetched: a loopback listener that the peer's `<img>` and `<script>` name
//! sees no connection. Without a Chromium the test says SKIPPED; under CI it
//! fails instead (`.ci/run` installs Debian's `chromium`).

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The browser, if this machine has one.
fn chromium() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser"].into_iter().find(|name| {
        Command::new(name)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have Debian's chromium for the browser test"
        );
        eprintln!("SKIPPED: no chromium on this machine");
    }
    found
}

/// Chromium headless on `page` with `extra` arguments; its stdout.
fn headless(browser: &str, page: &Path, extra: &[String]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{browser}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_browser_shows_the_pending_issue_runs_no_script_and_fetches_nothing() {
    let Some(browser) = chromium() else {
        return;
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    std::thread::spawn(move || {
        for _ in listener.incoming() {
            counted.fetch_add(1, Ordering::SeqCst);
        }
    });
    let w = super::review::world();
    let beacon = format!("http://127.0.0.1:{port}/beacon");
    w.new_issue(
        "support",
        &[
            "--project",
            "SUP",
            "--summary",
            &format!("<script>document.title='owned';fetch('{beacon}')</script>Printer"),
            "--description",
            &format!("<img src=\"{beacon}\"><link rel=stylesheet href=\"{beacon}\">"),
            "--label",
            "escalate",
        ],
    );
    w.ok("support", &["sync"]);
    w.ok("engineering", &["pull"]);
    let page = w.path("review.html");
    w.ok("engineering", &["review", "--html", page.to_str().unwrap()]);

    let dom = headless(browser, &page, &["--dump-dom".into()]);
    assert!(dom.contains("SUP-1 (new here)"), "{dom}");
    assert!(
        dom.contains("&lt;script&gt;document.title='owned'"),
        "the peer's script is text: {dom}"
    );
    assert!(
        dom.contains("<title>ferry review: engineering</title>"),
        "{dom}"
    );
    let body = &dom[dom.find("<body").unwrap()..];
    for tag in ["<script", "<img", "<link"] {
        assert!(!body.contains(tag), "{tag} became an element: {body}");
    }
    let shot = std::env::var_os("FERRY_SCREENSHOT_DIR")
        .map_or_else(|| w.path("shot.png"), |d| Path::new(&d).join("review.png"));
    headless(
        browser,
        &page,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1000,1400".into(),
        ],
    );
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);
    // Nothing the page named was fetched: give a straggler a moment.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the page fetched {beacon}");
}
