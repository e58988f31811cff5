//! E-mail notifications against a real SMTP server: aiosmtpd (Python), writing
//! what it receives to a Maildir that Python's own `mailbox` and `email` modules
//! read back, so the messages are checked by an independent MIME parser.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{World, bad_input::peer_commit};

/// A free TCP port on the loopback interface (free when this returns; the test
/// binds it right after).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// aiosmtpd listening on 127.0.0.1:port, storing mail in a Maildir; killed on
/// drop.
struct MailServer {
    child: Child,
    maildir: PathBuf,
}

impl MailServer {
    fn start(port: u16, maildir: PathBuf) -> MailServer {
        MailServer::start_with(port, maildir, &[])
    }

    /// Starts the server with extra aiosmtpd options (TLS certificates).
    fn start_with(port: u16, maildir: PathBuf, options: &[&str]) -> MailServer {
        let probe = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .output()
            .expect("python3 is needed for the SMTP tests");
        assert!(
            probe.status.success(),
            "the SMTP tests need aiosmtpd: pip install aiosmtpd\n{}",
            String::from_utf8_lossy(&probe.stderr)
        );
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(options)
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = MailServer { child, maildir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "aiosmtpd did not start on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// Every message received, as "To: ...\nSubject: ...\n" plus the decoded
    /// text and HTML parts.
    fn messages(&self) -> Vec<String> {
        const READ: &str = r#"
import json, mailbox, sys
out = []
for m in sorted(mailbox.Maildir(sys.argv[1], create=False), key=lambda m: m["Date"] or ""):
    text = "To: %s\nSubject: %s\nContent-Type: %s\n" % (m["To"], m["Subject"], m.get_content_type())
    for part in m.walk():
        if part.get_content_type() in ("text/plain", "text/html"):
            text += "--- %s\n%s" % (part.get_content_type(), part.get_payload(decode=True).decode())
    out.append(text)
print(json.dumps(out))
"#;
        if !self.maildir.join("new").exists() {
            return Vec::new();
        }
        let out = Command::new("python3")
            .args(["-c", READ])
            .arg(&self.maildir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for MailServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A replica that passes every check at the channel; support's incoming rule
/// then fails on it, an issue-level error.
const REFUSED_BY_RULE: &str = "ferry: 1\nsite: engineering\nid: '8'\nkey: ENG-8\nproject: ENG\ntype: Bug\nsummary: Cannot map\nstatus: Open\ncreated: 2026-11-20T10:00:00Z\nupdated: 2026-11-20T10:00:00Z\n";

/// A site `support` whose peer shares one replica its incoming rule fails on,
/// notifying through the mail server on `port`.
fn site_with_broken_replica(port: u16) -> World {
    let w = World::new();
    w.site(
        "support",
        &[("engineering", "SUP=ENG", "labels = escalate")],
    );
    std::fs::write(
        w.path("support/rules/incoming.rhai"),
        "throw \"this site cannot map the issue\";\n",
    )
    .unwrap();
    peer_commit(&w, &[("issues/ENG/8.yaml", REFUSED_BY_RULE)]);
    let out = w.ok(
        "support",
        &[
            "notify",
            "setup",
            "--url",
            &format!("smtp://127.0.0.1:{port}"),
            "--from",
            "ferry <ferry@support.example>",
            "--to",
            "dev@support.example",
            "--level",
            "issue",
        ],
    );
    assert!(out.contains("notify.yaml"), "{out}");
    w
}

#[test]
fn new_errors_are_mailed_once() {
    let port = free_port();
    let w = site_with_broken_replica(port);
    let server = MailServer::start(port, w.path("maildir"));

    let run = w.ferry("support", &["sync"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("notify sent 1 new error to dev@support.example"),
        "{}",
        run.stdout
    );
    let messages = server.messages();
    assert_eq!(messages.len(), 1, "{messages:#?}");
    let mail = &messages[0];
    assert!(mail.contains("To: dev@support.example"), "{mail}");
    assert!(
        mail.contains("Subject: ferry support: 1 new error"),
        "{mail}"
    );
    assert!(
        mail.contains("Content-Type: multipart/alternative"),
        "{mail}"
    );
    for part in ["--- text/plain", "--- text/html"] {
        let body = &mail[mail.find(part).unwrap()..];
        assert!(
            body.contains("issues/ENG/8.yaml"),
            "{part} lacks the path:\n{mail}"
        );
        assert!(body.contains("ferry errors"), "{mail}");
    }

    // The same error on the next run: counted in the ledger, not mailed again.
    let run = w.ferry("support", &["sync"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(!run.stdout.contains("notify"), "{}", run.stdout);
    assert_eq!(server.messages().len(), 1);
}

#[test]
fn a_mail_server_that_is_down_delays_the_notice_and_not_the_run() {
    let port = free_port();
    let w = site_with_broken_replica(port);

    let run = w.ferry("support", &["sync"]);
    assert_eq!(
        run.code, 1,
        "exit status unchanged:\n{}\n{}",
        run.stdout, run.stderr
    );
    assert!(
        run.stdout
            .contains(&format!("notify: smtp://127.0.0.1:{port}: ")),
        "{}",
        run.stdout
    );

    let server = MailServer::start(port, w.path("maildir"));
    let run = w.ferry("support", &["sync"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout.contains("notify sent 1 new error"),
        "{}",
        run.stdout
    );
    let messages = server.messages();
    assert_eq!(messages.len(), 1, "{messages:#?}");
    assert!(messages[0].contains("issues/ENG/8.yaml"), "{}", messages[0]);
}

#[test]
fn notify_test_prints_the_servers_answer() {
    let port = free_port();
    let w = World::new();
    w.site("support", &[]);
    let run = w.ferry("support", &["notify", "test"]);
    assert_eq!(
        run.code, 2,
        "no notify.yaml is a usage error: {}",
        run.stderr
    );
    assert!(run.stderr.contains("ferry notify setup"), "{}", run.stderr);

    w.ok(
        "support",
        &[
            "notify",
            "setup",
            "--url",
            &format!("smtp://127.0.0.1:{port}"),
            "--from",
            "ferry@support.example",
            "--to",
            "ops@support.example",
            "--to",
            "dev@support.example",
        ],
    );
    let server = MailServer::start(port, w.path("maildir"));
    let out = w.ok("support", &["notify", "test"]);
    assert!(
        out.starts_with(&format!("smtp://127.0.0.1:{port}: 250 ")),
        "{out}"
    );
    let messages = server.messages();
    assert_eq!(messages.len(), 1, "{messages:#?}");
    assert!(
        messages[0].contains("To: ops@support.example, dev@support.example"),
        "{}",
        messages[0]
    );
}

#[test]
fn bad_notify_settings_are_refused_naming_the_file() {
    let w = World::new();
    w.site("support", &[]);
    let run = w.ferry(
        "support",
        &[
            "notify",
            "setup",
            "--url",
            "http://mail",
            "--from",
            "f@x.example",
            "--to",
            "t@x.example",
        ],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("notify.yaml"), "{}", run.stderr);
    assert!(!w.path("support/notify.yaml").exists());

    std::fs::write(
        w.path("support/notify.yaml"),
        "url: smtp://mail\nfrom: nobody\nto:\n- address: t@x.example\n",
    )
    .unwrap();
    let run = w.ferry("support", &["sync"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("notify.yaml"), "{}", run.stderr);
    assert!(run.stderr.contains("nobody"), "{}", run.stderr);
}

#[test]
fn the_sites_template_is_used_and_a_notice_cut_off_by_a_crash_waits_for_the_window() {
    let port = free_port();
    let mut w = site_with_broken_replica(port);
    std::fs::write(
        w.path("support/templates/notify.txt"),
        "CUSTOM notice from {{site}}: {{count}}\n{{errors}}",
    )
    .unwrap();
    let server = MailServer::start(port, w.path("maildir"));

    // The server accepts the message, and the run dies before recording that.
    w.killed_at("support", &["sync"], "after-notice-sent");
    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    assert!(
        messages[0].contains("CUSTOM notice from support: 1"),
        "{}",
        messages[0]
    );
    assert!(messages[0].contains("ferry retry "), "{}", messages[0]);

    // Within the resend window: not sent again.
    let run = w.ferry("support", &["sync"]);
    assert!(!run.stdout.contains("notify"), "{}", run.stdout);
    assert_eq!(server.messages().len(), 1);

    // Once the window has passed it may have been lost: sent again.
    w.now = Some("2099-01-01T00:00:00Z");
    let run = w.ferry("support", &["sync"]);
    assert!(
        run.stdout.contains("notify sent 1 new error"),
        "{}",
        run.stdout
    );
    assert_eq!(server.messages().len(), 2);
}

/// A private CA and a certificate it signed for 127.0.0.1, made by trustme (the
/// Python test-CA library `.ci/run` installs): `ca.pem`, `cert.pem`, `key.pem`.
fn private_ca(dir: &std::path::Path) {
    const MAKE: &str = r#"
import sys, trustme
ca = trustme.CA()
cert = ca.issue_cert("127.0.0.1")
ca.cert_pem.write_to_path(sys.argv[1] + "/ca.pem")
cert.cert_chain_pems[0].write_to_path(sys.argv[1] + "/cert.pem")
cert.private_key_pem.write_to_path(sys.argv[1] + "/key.pem")
"#;
    std::fs::create_dir_all(dir).unwrap();
    let out = Command::new("python3")
        .args(["-c", MAKE])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the TLS test needs trustme: pip install trustme\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn setup_with_ca(w: &World, url: &str) {
    w.ok(
        "support",
        &[
            "notify",
            "setup",
            "--force",
            "--url",
            url,
            "--from",
            "ferry <ferry@support.example>",
            "--to",
            "dev@support.example",
            "--ca-file",
            "../certs/ca.pem",
        ],
    );
}

#[test]
fn starttls_and_smtps_to_a_server_with_a_private_ca() {
    let port = free_port();
    let w = site_with_broken_replica(port);
    let certs = w.path("certs");
    private_ca(&certs);
    let cert = certs.join("cert.pem");
    let key = certs.join("key.pem");
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    // STARTTLS required: the server refuses mail on a plain connection.
    let server = MailServer::start_with(
        port,
        w.path("maildir"),
        &["--tlscert", cert, "--tlskey", key],
    );

    // The public roots do not know the private CA: refused, reported, kept.
    let run = w.ferry("support", &["sync"]);
    assert!(run.stdout.contains("notify: "), "{}", run.stdout);
    assert!(server.messages().is_empty());

    setup_with_ca(&w, &format!("smtp://127.0.0.1:{port}"));
    let run = w.ferry("support", &["sync"]);
    assert!(
        run.stdout.contains("notify sent 1 new error"),
        "{}",
        run.stdout
    );
    assert_eq!(server.messages().len(), 1);

    let smtps_port = free_port();
    let smtps = MailServer::start_with(
        smtps_port,
        w.path("maildir-smtps"),
        &["--smtpscert", cert, "--smtpskey", key],
    );
    setup_with_ca(&w, &format!("smtps://127.0.0.1:{smtps_port}"));
    let answer = w.ok("support", &["notify", "test"]);
    assert!(answer.contains("250"), "{answer}");
    assert_eq!(smtps.messages().len(), 1);
}

#[test]
fn doctor_checks_the_mail_server_without_sending() {
    let port = free_port();
    let w = site_with_broken_replica(port);
    let down = w.ferry("support", &["doctor"]);
    assert_eq!(down.code, 1, "{}", down.stdout);
    assert!(
        down.stdout
            .contains(&format!("FAIL mail server: smtp://127.0.0.1:{port}")),
        "{}",
        down.stdout
    );
    let server = MailServer::start(port, w.path("maildir"));
    let up = w.ferry("support", &["doctor"]);
    assert!(
        up.stdout.contains(&format!(
            "ok   mail server: smtp://127.0.0.1:{port} accepts connections"
        )),
        "{}",
        up.stdout
    );
    assert!(server.messages().is_empty(), "doctor sends nothing");
}
