//! Error notifications by e-mail (SMTP).
//!
//! A site's `notify.yaml` (beside `ferry.yaml`, written by `ferry notify setup`,
//! a separate file for the same reason connections are: setup never rewrites a
//! file an admin edited by hand) names the mail server, the sender and who hears
//! about which error levels. After each `ferry sync`, [`send_pending`] sends one
//! message listing the ledger's unresolved errors that no message has mentioned
//! yet, to the union of the recipients of the levels present.
//!
//! Credentials never live in a file: they come from the environment
//! (`FERRY_SMTP_USER`, `FERRY_SMTP_PASSWORD`), as cron or a secret store sets
//! them. The URL scheme picks TLS: `smtp://` starts in plain text and upgrades with
//! STARTTLS whenever the server offers it; `smtps://` is TLS from the first byte.
//!
//! # Delivery guarantee
//!
//! At least once per error, and never twice within the resend window. Errors are
//! marked notified in the ledger only after the server accepted the message (its
//! `250` to the end of data); when the server is unreachable or refuses, nothing
//! is marked and the same errors go out with the next run's message. Before
//! sending, ferry records the attempt: a run that dies between the server's `250`
//! and the ledger write (the message may or may not have gone out) leaves it, and
//! those errors are sent again only once `resend_window_minutes` (default 60) has
//! passed. An error seen again while unresolved is only counted, never notified
//! twice; one that was resolved and comes back is a new error and is notified
//! again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::response::Response;
use lettre::{Message, SmtpTransport, Transport};
use serde::{Deserialize, Serialize};

use crate::failure::Level;
use crate::files::ConfigError;
use crate::ledger::{ErrorRecord, Ledger, LedgerError};

/// Environment variable holding the SMTP user name.
pub const USER_ENV: &str = "FERRY_SMTP_USER";
/// Environment variable holding the SMTP password.
pub const PASSWORD_ENV: &str = "FERRY_SMTP_PASSWORD";

/// How long to wait for the mail server before giving up on this run's notice; a
/// hung server must not hold the site's lock until the next cron run.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

const TEXT_TEMPLATE: &str = include_str!("../templates/notify.txt");
const HTML_TEMPLATE: &str = include_str!("../templates/notify.html");

/// One recipient as written in `notify.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipientSettings {
    /// An address, optionally with a name: `Ops <ops@example.com>`.
    pub address: String,
    /// The levels this recipient hears about; every level when omitted.
    #[serde(default = "all_levels")]
    pub levels: Vec<Level>,
}

fn all_levels() -> Vec<Level> {
    Level::ALL.to_vec()
}

/// `notify.yaml` as written on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySettings {
    /// `smtp://host[:port]` (STARTTLS when offered, port 25 by default) or
    /// `smtps://host[:port]` (implicit TLS, port 465 by default).
    pub url: String,
    /// The sender address.
    pub from: String,
    /// Who hears about which levels.
    pub to: Vec<RecipientSettings>,
    /// How long a notice that may have gone out (the run died before recording
    /// the server's answer) keeps its errors from being sent again.
    #[serde(
        default = "default_resend_window",
        skip_serializing_if = "is_default_resend_window"
    )]
    pub resend_window_minutes: u32,
    /// A PEM file (relative to the site folder) with the certificate of the CA
    /// that signed the mail server's certificate, for internal servers with a
    /// private CA; trusted in addition to the public roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
}

/// The resend window when `notify.yaml` does not set one.
pub const DEFAULT_RESEND_WINDOW_MINUTES: u32 = 60;

fn default_resend_window() -> u32 {
    DEFAULT_RESEND_WINDOW_MINUTES
}

fn is_default_resend_window(minutes: &u32) -> bool {
    *minutes == default_resend_window()
}

/// How the connection to the mail server is secured, from the URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// `smtp://`: plain, upgraded with STARTTLS when the server offers it.
    Opportunistic,
    /// `smtps://`: TLS from the first byte.
    Implicit,
}

/// A checked mail server address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpServer {
    /// Host name or IP address (also the name the TLS certificate must carry).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// TLS mode.
    pub tls: TlsMode,
}

impl SmtpServer {
    /// Parses `smtp://host[:port]` or `smtps://host[:port]`. Credentials in the URL
    /// are refused: they would end up in a file.
    pub fn parse(url: &str) -> Result<SmtpServer, String> {
        let (tls, rest, default_port) = if let Some(rest) = url.strip_prefix("smtp://") {
            (TlsMode::Opportunistic, rest, 25)
        } else if let Some(rest) = url.strip_prefix("smtps://") {
            (TlsMode::Implicit, rest, 465)
        } else {
            return Err(format!(
                "`url` {url:?} must start with smtp:// (STARTTLS when offered) or smtps:// (implicit TLS)"
            ));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('@') {
            return Err(format!(
                "`url` {url:?} carries credentials; set {USER_ENV} and {PASSWORD_ENV} in the environment instead"
            ));
        }
        if rest.contains(['/', '?', '#']) {
            return Err(format!(
                "`url` {url:?} must be only scheme, host and port, like smtp://mail.example.com:587"
            ));
        }
        let bad_port = |port: &str| format!("`url` {url:?} has a bad port {port:?}");
        // `[::1]:2525`: an IPv6 address is bracketed, its colons are not the port's.
        let (host, port) = match rest.strip_prefix('[') {
            Some(bracketed) => match bracketed.split_once(']') {
                Some((host, "")) => (host, None),
                Some((host, after)) => (host, Some(after.strip_prefix(':').unwrap_or(after))),
                None => return Err(format!("`url` {url:?} has an unclosed '['")),
            },
            None => match rest.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            },
        };
        let port = match port {
            Some(port) => port.parse::<u16>().map_err(|_| bad_port(port))?,
            None => default_port,
        };
        if host.is_empty() {
            return Err(format!("`url` {url:?} names no host"));
        }
        Ok(SmtpServer {
            host: host.into(),
            port,
            tls,
        })
    }
}

impl std::fmt::Display for SmtpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = match self.tls {
            TlsMode::Opportunistic => "smtp",
            TlsMode::Implicit => "smtps",
        };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

/// One checked recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// Where to send.
    pub mailbox: Mailbox,
    /// What it hears about.
    pub levels: BTreeSet<Level>,
}

/// Checked notification settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyConfig {
    /// The mail server.
    pub server: SmtpServer,
    /// The sender.
    pub from: Mailbox,
    /// The recipients, as listed.
    pub to: Vec<Recipient>,
    /// See [`NotifySettings::resend_window_minutes`].
    pub resend_window: chrono::Duration,
    /// The plain-text message template: the site's `templates/notify.txt`, else
    /// the built-in one.
    pub text_template: String,
    /// The HTML alternative: the site's `templates/notify.html`, else built in.
    pub html_template: String,
    /// The PEM of [`NotifySettings::ca_file`], checked to parse.
    pub ca_pem: Option<Vec<u8>>,
}

impl NotifyConfig {
    /// Checks settings read from `file`: URL, addresses, at least one recipient
    /// with at least one level. Errors name the file.
    pub fn check(file: &Path, settings: &NotifySettings) -> Result<NotifyConfig, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: file.to_path_buf(),
            message,
        };
        let server = SmtpServer::parse(&settings.url).map_err(invalid)?;
        let from = parse_mailbox("from", &settings.from).map_err(invalid)?;
        if settings.to.is_empty() {
            return Err(invalid("`to` lists no recipient".into()));
        }
        let to = settings
            .to
            .iter()
            .map(|r| {
                let mailbox = parse_mailbox("to", &r.address)?;
                if r.levels.is_empty() {
                    return Err(format!(
                        "recipient {:?} has no `levels`; omit the key for every level",
                        r.address
                    ));
                }
                Ok(Recipient {
                    mailbox,
                    levels: r.levels.iter().copied().collect(),
                })
            })
            .collect::<Result<Vec<_>, String>>()
            .map_err(invalid)?;
        let root = file.parent().unwrap_or(Path::new("."));
        let templates = root.join("templates");
        let ca_pem = match &settings.ca_file {
            Some(ca_file) => {
                let path = root.join(ca_file);
                let pem = std::fs::read(&path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                Certificate::from_pem(&pem).map_err(|e| {
                    invalid(format!(
                        "ca_file {}: not a PEM certificate: {e}",
                        path.display()
                    ))
                })?;
                Some(pem)
            }
            None => None,
        };
        Ok(NotifyConfig {
            server,
            from,
            to,
            resend_window: chrono::Duration::minutes(settings.resend_window_minutes.into()),
            text_template: template(&templates.join("notify.txt"), TEXT_TEMPLATE)?,
            html_template: template(&templates.join("notify.html"), HTML_TEMPLATE)?,
            ca_pem,
        })
    }

    /// The recipients of a message listing errors of these levels, each once.
    fn recipients_for(&self, levels: &BTreeSet<Level>) -> Vec<Mailbox> {
        let mut seen = BTreeSet::new();
        self.to
            .iter()
            .filter(|r| !r.levels.is_disjoint(levels))
            .filter(|r| seen.insert(r.mailbox.email.to_string()))
            .map(|r| r.mailbox.clone())
            .collect()
    }

    /// Every recipient, each once (for `ferry notify test`).
    fn all_recipients(&self) -> Vec<Mailbox> {
        self.recipients_for(&Level::ALL.into_iter().collect())
    }
}

fn parse_mailbox(key: &str, address: &str) -> Result<Mailbox, String> {
    address
        .parse()
        .map_err(|e| format!("`{key}`: {address:?} is not an e-mail address ({e})"))
}

/// A notification could not be sent; the errors stay pending.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The ledger could not be read or written.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// Only one of the credential variables is set.
    #[error("{set} is set but {missing} is not; set both, or neither for a server without login")]
    Credentials {
        /// The variable that is set.
        set: &'static str,
        /// The one that is missing.
        missing: &'static str,
    },
    // lettre's errors print their own causes, so they are kept out of the
    // `source()` chain: `error: {:#}` would otherwise print them two or three times.
    /// The message could not be built.
    #[error("cannot build the message: {error}")]
    Message {
        /// What lettre reported.
        error: lettre::error::Error,
    },
    /// The server was unreachable, refused, or the TLS handshake failed.
    #[error("{server}: {error}")]
    Smtp {
        /// The server.
        server: String,
        /// What lettre reported.
        error: lettre::transport::smtp::Error,
    },
}

/// What [`send_pending`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyOutcome {
    /// No unresolved error is waiting for a notice; nothing was sent.
    NothingNew,
    /// New errors exist, but no recipient subscribes to their levels; they stay
    /// pending, so a recipient added later hears about them.
    NoRecipient {
        /// How many errors wait.
        errors: usize,
    },
    /// One message went out and its errors are marked notified.
    Sent {
        /// How many errors it listed.
        errors: usize,
        /// Who got it.
        recipients: Vec<String>,
        /// The server's answer, like `250 OK`.
        answer: String,
    },
}

/// A site's override of a message template, or the built-in one.
fn template(path: &Path, built_in: &str) -> Result<String, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(built_in.to_string()),
        Err(source) => Err(ConfigError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Sends one message listing the unresolved errors no message has mentioned yet,
/// then marks them notified. See the module documentation for the guarantee.
pub fn send_pending(
    config: &NotifyConfig,
    site: &str,
    ledger: &mut Ledger,
) -> Result<NotifyOutcome, NotifyError> {
    let pending = ledger.unnotified_errors(config.resend_window)?;
    if pending.is_empty() {
        return Ok(NotifyOutcome::NothingNew);
    }
    let levels: BTreeSet<Level> = pending.iter().map(|e| e.level).collect();
    let recipients = config.recipients_for(&levels);
    if recipients.is_empty() {
        return Ok(NotifyOutcome::NoRecipient {
            errors: pending.len(),
        });
    }
    let subject = subject(site, pending.len());
    let (text, html) = render(config, site, &pending);
    let message = build(config, &recipients, &subject, text, html)?;
    let ids: Vec<i64> = pending.iter().map(|e| e.id).collect();
    ledger.mark_notice_attempt(&ids)?;
    let response = match send(config, &message) {
        Ok(response) => response,
        Err(e) => {
            // The server refused or could not be reached: nothing went out, so
            // the next run may send at once.
            ledger.clear_notice_attempt(&ids)?;
            return Err(e);
        }
    };
    crate::failpoint::hit("after-notice-sent");
    ledger.mark_notified(&ids)?;
    Ok(NotifyOutcome::Sent {
        errors: pending.len(),
        recipients: recipients.iter().map(|m| m.email.to_string()).collect(),
        answer: answer(&response),
    })
}

/// Sends a test message to every recipient now and returns the server's answer.
pub fn send_test(config: &NotifyConfig, site: &str) -> Result<String, NotifyError> {
    let text = format!(
        "A test message from ferry site {site}: its error notifications reach you\n\
         from this sender, through this mail server.\n"
    );
    let html = format!(
        "<p>A test message from ferry site <b>{}</b>: its error notifications reach you \
         from this sender, through this mail server.</p>",
        escape_html(site)
    );
    let subject = format!("ferry {site}: test message");
    let message = build(config, &config.all_recipients(), &subject, text, html)?;
    Ok(answer(&send(config, &message)?))
}

fn build(
    config: &NotifyConfig,
    recipients: &[Mailbox],
    subject: &str,
    text: String,
    html: String,
) -> Result<Message, NotifyError> {
    let mut builder = Message::builder()
        .from(config.from.clone())
        .subject(subject);
    for r in recipients {
        builder = builder.to(r.clone());
    }
    builder
        .multipart(MultiPart::alternative_plain_html(text, html))
        .map_err(|error| NotifyError::Message { error })
}

fn send(config: &NotifyConfig, message: &Message) -> Result<Response, NotifyError> {
    transport(config)?
        .send(message)
        .map_err(|error| NotifyError::Smtp {
            server: config.server.to_string(),
            error,
        })
}

/// Connects to the mail server (TLS and login included) and says goodbye,
/// sending nothing: what `ferry doctor` checks. `false`: something answered, but
/// not as a working SMTP server.
pub fn check_server(config: &NotifyConfig) -> Result<bool, NotifyError> {
    transport(config)?
        .test_connection()
        .map_err(|error| NotifyError::Smtp {
            server: config.server.to_string(),
            error,
        })
}

fn transport(config: &NotifyConfig) -> Result<SmtpTransport, NotifyError> {
    let server = &config.server;
    let smtp = |error| NotifyError::Smtp {
        server: server.to_string(),
        error,
    };
    let mut params = TlsParameters::builder(server.host.clone());
    if let Some(pem) = &config.ca_pem {
        params = params.add_root_certificate(Certificate::from_pem(pem).map_err(smtp)?);
    }
    let params = params.build().map_err(smtp)?;
    let tls = match server.tls {
        TlsMode::Opportunistic => Tls::Opportunistic(params),
        TlsMode::Implicit => Tls::Wrapper(params),
    };
    let mut builder = SmtpTransport::builder_dangerous(server.host.as_str())
        .port(server.port)
        .tls(tls)
        .timeout(Some(SMTP_TIMEOUT));
    if let Some(credentials) = credentials()? {
        builder = builder.credentials(credentials);
    }
    Ok(builder.build())
}

/// Credentials from the environment: both variables, or neither.
fn credentials() -> Result<Option<Credentials>, NotifyError> {
    let user = std::env::var(USER_ENV).ok().filter(|v| !v.is_empty());
    let password = std::env::var(PASSWORD_ENV).ok().filter(|v| !v.is_empty());
    match (user, password) {
        (Some(user), Some(password)) => Ok(Some(Credentials::new(user, password))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(NotifyError::Credentials {
            set: USER_ENV,
            missing: PASSWORD_ENV,
        }),
        (None, Some(_)) => Err(NotifyError::Credentials {
            set: PASSWORD_ENV,
            missing: USER_ENV,
        }),
    }
}

fn answer(response: &Response) -> String {
    let lines: Vec<&str> = response.message().collect();
    format!("{} {}", response.code(), lines.join(" "))
}

/// The subject line of a notice.
fn subject(site: &str, errors: usize) -> String {
    format!(
        "ferry {site}: {errors} new error{}",
        crate::words::plural(errors)
    )
}

/// Renders the plain-text and HTML bodies: errors grouped by level (most specific
/// first), then connection.
fn render(config: &NotifyConfig, site: &str, errors: &[ErrorRecord]) -> (String, String) {
    let mut groups: BTreeMap<(Level, &str), Vec<&ErrorRecord>> = BTreeMap::new();
    for e in errors {
        let connection = e.connection.as_deref().unwrap_or("");
        groups.entry((e.level, connection)).or_default().push(e);
    }
    let mut text = String::new();
    let mut html = String::new();
    for ((level, connection), group) in &groups {
        let heading = if connection.is_empty() {
            format!("{level} errors")
        } else {
            format!("{level} errors, connection {connection}")
        };
        text.push_str(&format!("{heading}\n"));
        html.push_str(&format!("<h3>{}</h3>\n<ul>\n", escape_html(&heading)));
        for e in group {
            let subject = match (&e.subject, &e.connection) {
                (Some(subject), _) => subject.as_str(),
                (None, Some(_)) => "(whole connection)",
                (None, None) => "(whole site)",
            };
            let seen = if e.count == 1 {
                "seen once".to_string()
            } else {
                format!("seen {} times", e.count)
            };
            let commands = format!(
                "retry: ferry retry {id}   handled: ferry resolve {id}",
                id = e.id
            );
            text.push_str(&format!(
                "  #{} {subject} ({seen}, last {})\n    {}\n    {commands}\n",
                e.id,
                e.last_seen,
                e.message.replace('\n', "\n    ")
            ));
            html.push_str(&format!(
                "<li><b>#{} {}</b> ({seen}, last {})<pre>{}</pre><code>{}</code></li>\n",
                e.id,
                escape_html(subject),
                escape_html(&e.last_seen),
                escape_html(&e.message),
                escape_html(&commands)
            ));
        }
        text.push('\n');
        html.push_str("</ul>\n");
    }
    let count = errors.len().to_string();
    let text = fill(
        &config.text_template,
        &[("site", site), ("count", &count), ("errors", &text)],
    );
    let html = fill(
        &config.html_template,
        &[
            ("site", &escape_html(site)),
            ("count", &count),
            ("errors", &html),
        ],
    );
    (text, html)
}

/// Replaces each `{{name}}` in a template by its value. Values are inserted as
/// given: HTML callers escape them first.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    values
        .iter()
        .fold(template.to_string(), |acc, (name, value)| {
            acc.replace(&format!("{{{{{name}}}}}"), value)
        })
}

/// Escapes text for HTML element content and attribute values.
fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: i64, level: &str, connection: Option<&str>, subject: &str) -> ErrorRecord {
        ErrorRecord {
            id,
            level: Level::from_name(level).unwrap(),
            connection: connection.map(Into::into),
            subject: Some(subject.into()),
            message: "bad <yaml> & more".into(),
            count: 2,
            first_seen: "2026-11-23T09:00:00Z".into(),
            last_seen: "2026-11-23T10:00:00Z".into(),
            tries: Some(2),
            parked: false,
            next_try: None,
        }
    }

    fn settings(url: &str) -> NotifySettings {
        NotifySettings {
            url: url.into(),
            from: "Ferry <ferry@example.com>".into(),
            to: vec![
                RecipientSettings {
                    address: "dev@example.com".into(),
                    levels: vec![Level::Issue],
                },
                RecipientSettings {
                    address: "ops@example.com".into(),
                    levels: vec![Level::Connection, Level::Site],
                },
                RecipientSettings {
                    address: "dev@example.com".into(),
                    levels: vec![Level::Connection],
                },
            ],
            resend_window_minutes: DEFAULT_RESEND_WINDOW_MINUTES,
            ca_file: None,
        }
    }

    #[test]
    fn urls_pick_tls_and_default_ports() {
        let s = SmtpServer::parse("smtp://mail.example.com").unwrap();
        assert_eq!((s.port, s.tls), (25, TlsMode::Opportunistic));
        let s = SmtpServer::parse("smtps://mail.example.com:2465/").unwrap();
        assert_eq!((s.port, s.tls), (2465, TlsMode::Implicit));
        assert_eq!(s.to_string(), "smtps://mail.example.com:2465");
        let s = SmtpServer::parse("smtp://[::1]:2525").unwrap();
        assert_eq!((s.host.as_str(), s.port), ("::1", 2525));
        for bad in [
            "http://mail.example.com",
            "smtp://user:pw@mail.example.com",
            "smtp://mail.example.com:99999",
            "smtp://:25",
            "smtp://mail.example.com/path",
        ] {
            assert!(SmtpServer::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn bad_settings_name_the_file() {
        let file = Path::new("site/notify.yaml");
        let mut s = settings("smtp://localhost:25");
        s.to[0].address = "not an address".into();
        let err = NotifyConfig::check(file, &s).unwrap_err().to_string();
        assert!(err.starts_with("site/notify.yaml: "), "{err}");
        assert!(err.contains("not an address"), "{err}");
        let err = NotifyConfig::check(file, &settings("ftp://x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("smtp://"), "{err}");
    }

    #[test]
    fn recipients_are_the_union_of_the_levels_present() {
        let config = NotifyConfig::check(Path::new("n"), &settings("smtp://h")).unwrap();
        let emails = |levels: &[&str]| -> Vec<String> {
            config
                .recipients_for(
                    &levels
                        .iter()
                        .map(|l| Level::from_name(l).unwrap())
                        .collect(),
                )
                .iter()
                .map(|m| m.email.to_string())
                .collect()
        };
        assert_eq!(emails(&["issue"]), ["dev@example.com"]);
        assert_eq!(emails(&["site"]), ["ops@example.com"]);
        assert_eq!(
            emails(&["issue", "connection"]),
            ["dev@example.com", "ops@example.com"]
        );
        assert!(emails(&["node"]).is_empty());
    }

    /// The message a person reads, kept in docs/snapshots/ so the documentation
    /// shows exactly what ferry sends (docs/notifications.md).
    #[test]
    fn a_rendered_notice_as_the_docs_show_it() {
        let error = |id,
                     level: &str,
                     connection: Option<&str>,
                     subject: Option<&str>,
                     message: &str,
                     count| ErrorRecord {
            id,
            level: Level::from_name(level).unwrap(),
            connection: connection.map(Into::into),
            subject: subject.map(Into::into),
            message: message.into(),
            count,
            first_seen: "2026-11-23T02:00:00Z".into(),
            last_seen: "2026-11-23T03:00:00Z".into(),
            tries: None,
            parked: false,
            next_try: None,
        };
        let errors = [
            error(
                14,
                "issue",
                Some("engineering"),
                Some("issues/ENG/8.yaml"),
                "commit 4f1c2a9e01: rules/incoming.rhai:12:5: unknown status \"Needs Triage\"",
                1,
            ),
            error(
                15,
                "connection",
                Some("engineering"),
                Some("silence"),
                "nothing has arrived from engineering since 2026-11-21T03:00:00Z (more than stale_after_hours: 48); check the channel (a bundle not carried over, a full inbox) and engineering's scheduled sync",
                1,
            ),
            error(
                16,
                "site",
                None,
                None,
                "tracker unavailable: /srv/support/tracker.db: unable to open database file",
                3,
            ),
        ];
        let config = NotifyConfig::check(Path::new("n"), &settings("smtp://h")).unwrap();
        let (text, html) = render(&config, "support", &errors);
        let subject = subject("support", errors.len());
        insta::with_settings!({snapshot_path => "../docs/snapshots", prepend_module_to_snapshot => false}, {
            insta::assert_snapshot!("notification.txt", format!("Subject: {subject}\n\n{text}"));
            insta::assert_snapshot!("notification.html", html);
        });
    }

    #[test]
    fn bodies_group_by_level_then_connection_and_escape_html() {
        let errors = [
            record(3, "connection", Some("qa"), "x"),
            record(1, "issue", Some("eng"), "issues/ENG/8.yaml"),
            record(2, "issue", Some("qa"), "issues/QA/1.yaml"),
        ];
        let config = NotifyConfig::check(Path::new("n"), &settings("smtp://h")).unwrap();
        let (text, html) = render(&config, "support", &errors);
        let eng = text.find("issue errors, connection eng").unwrap();
        let qa = text.find("issue errors, connection qa").unwrap();
        let conn = text.find("connection errors, connection qa").unwrap();
        assert!(eng < qa && qa < conn, "{text}");
        assert!(
            text.contains("#1 issues/ENG/8.yaml (seen 2 times"),
            "{text}"
        );
        assert!(text.contains("ferry errors"), "{text}");
        assert!(
            text.contains("retry: ferry retry 1   handled: ferry resolve 1"),
            "{text}"
        );
        assert!(text.contains("bad <yaml> & more"), "{text}");
        assert!(html.contains("bad &lt;yaml&gt; &amp; more"), "{html}");
        for body in [&text, &html] {
            assert!(!body.contains("{{"), "unfilled placeholder in {body}");
        }
    }
}
