//! The HTTP side of the Jira connector: authentication, retries, Jira's error
//! envelope.
//!
//! Jira Cloud throttles with 429 and a `Retry-After` header, and both flavours
//! answer 502/503 while a node restarts: a call is sent again as the shared
//! [`RetryPolicy`] allows (429 waits what Jira asked for, capped; a read is
//! repeated after any 5xx, a write only when Jira cannot have done it). Other
//! answers are final and are returned as they are, for the connector to map
//! onto issue- or site-level errors.

use std::fs::File;
use std::io::{Cursor, Read};
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use serde_json::Value;
use ureq::http::Response;

use crate::tracker::retry::{self, RetryPolicy};

/// How a failed call ended.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Jira answered with an error status; `message` is Jira's own words.
    Status {
        /// HTTP status.
        status: u16,
        /// `errorMessages` and `errors` of Jira's envelope, or the start of the body.
        message: String,
    },
    /// No answer (connection refused, timeout, TLS).
    Transport(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Status { status, message } => write!(f, "HTTP {status}: {message}"),
            Failure::Transport(e) => write!(f, "{e}"),
        }
    }
}

/// A request body.
pub(crate) enum Body<'a> {
    /// No body.
    Empty,
    /// JSON.
    Json(&'a Value),
    /// A file as `multipart/form-data` field `file`, re-read from disk on a retry.
    File {
        /// Where the content is.
        path: PathBuf,
        /// File name Jira shows.
        name: &'a str,
    },
}

/// Credentials: Cloud takes e-mail and API token (basic), Data Center a personal
/// access token (bearer). Never printed: `Debug` shows the scheme only.
#[derive(Clone)]
pub(crate) struct Auth(pub(super) String);

impl Auth {
    /// Basic authentication with an Atlassian account e-mail and API token.
    pub fn basic(email: &str, token: &str) -> Auth {
        let pair = base64::engine::general_purpose::STANDARD.encode(format!("{email}:{token}"));
        Auth(format!("Basic {pair}"))
    }
    /// Bearer authentication with a personal access token.
    pub fn bearer(token: &str) -> Auth {
        Auth(format!("Bearer {token}"))
    }
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = self.0.split(' ').next().unwrap_or("");
        write!(f, "Auth({scheme} …)")
    }
}

/// A Jira REST client for one base URL.
pub(crate) struct Client {
    agent: ureq::Agent,
    base: String,
    auth: Auth,
    retry: RetryPolicy,
}

impl Client {
    /// A client for `base` (no trailing slash needed).
    pub fn new(base: &str, auth: Auth, retry: RetryPolicy) -> Client {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .build();
        Client {
            agent: ureq::Agent::new_with_config(config),
            base: base.trim_end_matches('/').to_string(),
            auth,
            retry,
        }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request and returns a 2xx response; anything else is a [`Failure`]
    /// once the retries are spent. `path` is relative to the base URL, or an
    /// absolute URL on the same server (attachment content).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        body: &Body,
    ) -> Result<Response<ureq::Body>, Failure> {
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        let attempts = self.retry.run(|| {
            let outcome = self.send(method, &url, query, body);
            let verdict = retry::verdict(method, &outcome);
            (outcome, verdict)
        });
        let tries = attempts.note();
        finish(attempts.outcome, &tries)
    }

    /// [`Client::call`] for a JSON answer (`null` for 204).
    pub fn json(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        body: &Body,
    ) -> Result<Value, Failure> {
        let mut response = self.call(method, path, query, body)?;
        if response.status().as_u16() == 204 {
            return Ok(Value::Null);
        }
        let text = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| Failure::Transport(format!("{method} {path}: {e}")))?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| Failure::Status {
            status: response.status().as_u16(),
            message: format!("{method} {path}: not JSON ({e})"),
        })
    }

    fn send(
        &self,
        method: &str,
        url: &str,
        query: &[(&str, &str)],
        body: &Body,
    ) -> Result<Response<ureq::Body>, ureq::Error> {
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(append_query(url, query))
            .header("Accept", "application/json");
        // Credentials go only to Jira itself, never to a host a URL points at.
        if url.starts_with(&self.base) {
            request = request.header("Authorization", &self.auth.0);
        }
        match body {
            Body::Empty => self.agent.run(request.body(())?),
            Body::Json(value) => {
                let bytes = serde_json::to_vec(value).unwrap_or_default();
                let request = request
                    .header("Content-Type", "application/json")
                    .body(bytes)?;
                self.agent.run(request)
            }
            Body::File { path, name } => {
                let boundary = format!("ferry-{:016x}", boundary_seed(name));
                let head = format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{}\"\r\n\
                     Content-Type: application/octet-stream\r\n\r\n",
                    name.replace(['"', '\r', '\n'], "_")
                );
                let tail = format!("\r\n--{boundary}--\r\n");
                let file = File::open(path)?;
                let reader = Cursor::new(head.into_bytes())
                    .chain(file)
                    .chain(Cursor::new(tail.into_bytes()));
                let request = request
                    // Jira refuses multipart uploads without it (its XSRF check).
                    .header("X-Atlassian-Token", "no-check")
                    .header(
                        "Content-Type",
                        format!("multipart/form-data; boundary={boundary}"),
                    )
                    .body(ureq::SendBody::from_owned_reader(reader))?;
                self.agent.run(request)
            }
        }
    }
}

/// A boundary that cannot occur in the part headers: derived from the time and
/// the name, so two uploads in one run differ.
fn boundary_seed(name: &str) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    name.bytes()
        .fold(nanos, |h, b| h.rotate_left(5) ^ u64::from(b))
}

fn append_query(url: &str, query: &[(&str, &str)]) -> String {
    if query.is_empty() {
        return url.to_string();
    }
    let pairs: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{}", pairs.join("&"))
}

/// Percent-encodes a query component (RFC 3986 unreserved characters stay).
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The last attempt's outcome as a [`Failure`] unless it is a success; `tries`
/// ends the message when the request was sent more than once.
fn finish(
    response: Result<Response<ureq::Body>, ureq::Error>,
    tries: &str,
) -> Result<Response<ureq::Body>, Failure> {
    let mut response = response.map_err(|e| Failure::Transport(format!("{e}{tries}")))?;
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(response);
    }
    let text = response
        .body_mut()
        .with_config()
        .limit(1024 * 1024)
        .read_to_string()
        .unwrap_or_default();
    Err(Failure::Status {
        status,
        message: format!("{}{tries}", error_message(&text)),
    })
}

/// Jira's error envelope (`errorMessages` and field `errors`, or Cloud's list of
/// `errors` with a `message`) as one line; the start of the body when it is not
/// JSON (a proxy's HTML page).
pub(crate) fn error_message(body: &str) -> String {
    let Ok(value) = serde_json::from_str::<Value>(body) else {
        let start: String = body.trim().chars().take(200).collect();
        return if start.is_empty() {
            "no details".into()
        } else {
            start
        };
    };
    let mut parts: Vec<String> = value
        .get("errorMessages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    match value.get("errors") {
        Some(Value::Object(fields)) => parts.extend(
            fields
                .iter()
                .map(|(k, v)| format!("{k}: {}", v.as_str().unwrap_or(&v.to_string()))),
        ),
        Some(Value::Array(items)) => parts.extend(
            items
                .iter()
                .filter_map(|e| e.get("message").and_then(Value::as_str))
                .map(str::to_string),
        ),
        _ => {}
    }
    if let Some(m) = value.get("message").and_then(Value::as_str) {
        parts.push(m.to_string());
    }
    if parts.is_empty() {
        "no details".into()
    } else {
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(path: &str) -> String {
        let file = format!("{}/tests/fixtures/jira/{path}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(file).expect("fixture")
    }

    #[test]
    fn recorded_error_envelopes_become_one_line() {
        let errors: Value = serde_json::from_str(&fixture("v2/issue-create-errors.json")).unwrap();
        let by_status = |status: u64| {
            errors
                .as_object()
                .unwrap()
                .values()
                .find(|e| e["status_code"] == status)
                .unwrap()
                .to_string()
        };
        let labels = by_status(400);
        assert_eq!(
            error_message(&labels),
            "labels: Field 'labels' cannot be set. It is not on the appropriate screen, or unknown."
        );
        let auth = by_status(401);
        assert_eq!(
            error_message(&auth),
            "Authentication failed. Please check your credentials and try again."
        );
        assert_eq!(
            error_message(&fixture("v2/error-not-found.json")),
            "Issue does not exist or you do not have permission to see it."
        );
        assert_eq!(
            error_message("<html>Bad gateway</html>"),
            "<html>Bad gateway</html>"
        );
    }

    #[test]
    fn credentials_never_show_in_debug_output() {
        let auth = Auth::basic("me@example.com", "s3cret");
        assert_eq!(format!("{auth:?}"), "Auth(Basic …)");
        assert_eq!(auth.0, "Basic bWVAZXhhbXBsZS5jb206czNjcmV0");
    }
}
