//! The channel is any git URL: here a real `git daemon` on loopback, the way two
//! sites reach an intermediate server. And deletion travels as a tombstone.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::World;

/// `git daemon` serving the world's root on a free loopback port; killed on drop.
pub(super) struct Daemon {
    child: Child,
    pub(super) port: u16,
}

impl Daemon {
    pub(super) fn start(w: &World) -> Daemon {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("git")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--enable=receive-pack",
                "--listen=127.0.0.1",
            ])
            .arg(format!("--base-path={}", w.root.path().display()))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon starts");
        let daemon = Daemon { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "git daemon did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        daemon
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn two_sites_sync_through_a_git_daemon() {
    let w = World::new();
    let daemon = Daemon::start(&w);
    let url = format!("git://127.0.0.1:{}/exchange.git", daemon.port);
    for (site, peer, projects, query) in [
        ("support", "engineering", "SUP=ENG", "labels = escalate"),
        (
            "engineering",
            "support",
            "ENG=SUP",
            "labels = customer-facing",
        ),
    ] {
        std::fs::create_dir_all(w.path(site)).unwrap();
        w.ok(site, &["init", "--site", site]);
        w.ok(
            site,
            &[
                "connection",
                "add",
                peer,
                "--channel",
                &url,
                "--project",
                projects,
                "--query",
                query,
            ],
        );
    }
    w.trust("support", "engineering");
    w.trust("engineering", "support");
    w.new_issue(
        "support",
        &[
            "--project",
            "SUP",
            "--summary",
            "Over the wire",
            "--label",
            "escalate",
        ],
    );
    w.ok("support", &["sync"]);
    w.ok("engineering", &["sync"]);
    w.ok(
        "engineering",
        &["tracker", "comment", "ENG-1", "Seen on the server side."],
    );
    w.ok("engineering", &["sync"]);
    w.ok("support", &["sync"]);
    let sup = w.show("support", "SUP-1");
    assert_eq!(sup["comments"][0]["body"], "Seen on the server side.");
    assert_eq!(w.commits("support/engineering"), 2);
    assert_eq!(w.commits("engineering/support"), 2);
}

#[test]
fn a_deleted_issue_travels_as_a_tombstone_and_the_incoming_rule_decides() {
    let w = World::new();
    w.site(
        "support",
        &[("engineering", "SUP=ENG", "labels = escalate")],
    );
    w.site(
        "engineering",
        &[("support", "ENG=SUP", "labels = customer-facing")],
    );
    w.new_issue(
        "support",
        &[
            "--project",
            "SUP",
            "--summary",
            "Short-lived",
            "--label",
            "escalate",
        ],
    );
    w.ok("support", &["sync"]);
    w.ok("engineering", &["sync"]);
    w.ok("support", &["tracker", "delete", "SUP-1"]);
    w.ok("support", &["sync"]);
    let replica = super::git(
        &w.path("exchange.git"),
        &["show", "support/engineering:issues/SUP/01/00/1.yaml"],
    );
    assert!(replica.contains("deleted: true"), "{replica}");
    w.ok("engineering", &["sync"]);
    // Later syncs (and the peer's edits of the copy coming back) add nothing.
    w.ok("engineering", &["sync"]);
    w.ok("support", &["sync"]);
    w.ok("engineering", &["sync"]);
    // The default incoming rule keeps engineering's issue, closes it, marks it
    // and says so once.
    let eng = w.show("engineering", "ENG-1");
    assert_eq!(eng["status"], "Closed");
    let notes: Vec<&str> = eng["comments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["body"].as_str().unwrap())
        .filter(|b| b.contains("deleted its issue"))
        .collect();
    assert_eq!(
        notes,
        ["support deleted its issue SUP-1; closed here, nothing else was removed."]
    );
    assert!(eng.get("deleted").is_none(), "{eng}");
    let labels: Vec<&str> = eng["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(labels.contains(&"peer-deleted"), "{labels:?}");
}

/// A server that takes the connection and then says nothing: the fetch would
/// wait for ever, so the watchdog ends the run after the silence it allows
/// (shortened here), exit 3, naming the channel.
#[test]
fn a_server_that_stops_answering_ends_the_run() {
    let w = World::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let url = format!("git://127.0.0.1:{port}/exchange.git");
    std::fs::create_dir_all(w.path("support")).unwrap();
    w.ok("support", &["init", "--site", "support"]);
    w.ok(
        "support",
        &[
            "connection",
            "add",
            "engineering",
            "--channel",
            &url,
            "--project",
            "SUP=ENG",
        ],
    );
    let started = Instant::now();
    let out = w
        .command("support", &["pull"])
        .env("FERRY_FETCH_STALL_SECS", "2")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "fetching from git://127.0.0.1:{port}/exchange.git"
        )) && stderr.contains("the channel sent nothing for"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(120));
}
