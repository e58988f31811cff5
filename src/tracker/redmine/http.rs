//! Redmine's REST API over HTTP: one place that turns statuses into ferry's
//! error levels.
//!
//! - 429, 5xx, timeouts and refused connections are first sent again as
//!   [`crate::tracker::retry`] allows (a read always, a write only when Redmine
//!   cannot have done it); when that does not help they stop the run, as 401
//!   (the key is wrong) does: [`TrackerError::Unavailable`], a site-level error
//!   that names the request and how often it was tried.
//! - 422 is Redmine refusing one change (validation, workflow); its messages come
//!   back as [`Reply::Invalid`] for the caller to name the issue.
//! - 404 and 403 come back as replies: what they mean depends on the request (an
//!   issue that does not exist; a list only administrators may read). A caller
//!   that did not expect them turns them into an error with
//!   [`Client::unexpected`], which makes a 403 site-level too.
//!
//! The API key travels in the `X-Redmine-API-Key` header only, never in a URL,
//! so no error message or log line can contain it.

use std::io::{Seek, Write};
use std::time::Duration;

use serde_json::Value;
use ureq::Agent;
use ureq::http::Response;

use crate::tracker::retry::{self, RetryPolicy};
use crate::tracker::{NewAttachment, TrackerError};

/// What Redmine answered, when it is not a failure of the whole site.
#[derive(Debug)]
pub(super) enum Reply {
    /// 2xx with a JSON body.
    Json(Value),
    /// 2xx without a body.
    Empty,
    /// 404.
    NotFound,
    /// 403.
    Forbidden,
    /// 422, with Redmine's messages.
    Invalid(String),
    /// Anything else, with a short part of the body.
    Other(u16, String),
}

/// A Redmine server and the key to it.
pub(super) struct Client {
    agent: Agent,
    base: String,
    key: String,
    timeout: Duration,
    retry: RetryPolicy,
}

impl Client {
    pub fn new(url: &str, key: &str, timeout: Duration, retry: RetryPolicy) -> Client {
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            // Per step, not for the whole exchange: a large attachment may take
            // longer than `timeout` to stream, a silent server may not.
            .timeout_connect(Some(timeout))
            .timeout_send_request(Some(timeout))
            .timeout_recv_response(Some(timeout))
            .build()
            .into();
        Client {
            agent,
            base: url.trim_end_matches('/').to_string(),
            key: key.to_string(),
            timeout,
            retry,
        }
    }

    /// GET `path` with query parameters (encoded here).
    pub fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Reply, TrackerError> {
        let sent = self.call("GET", path, || {
            let mut request = self
                .agent
                .get(format!("{}{path}", self.base))
                .header("X-Redmine-API-Key", &self.key);
            for (k, v) in query {
                request = request.query(*k, v);
            }
            request.call()
        })?;
        self.reply("GET", path, sent)
    }

    /// POST or PUT a JSON body.
    pub fn send(&self, method: &str, path: &str, body: &Value) -> Result<Reply, TrackerError> {
        let url = format!("{}{path}", self.base);
        let sent = self.call(method, path, || {
            match method {
                "POST" => self.agent.post(&url),
                _ => self.agent.put(&url),
            }
            .header("X-Redmine-API-Key", &self.key)
            .send_json(body)
        })?;
        self.reply(method, path, sent)
    }

    pub fn delete(&self, path: &str) -> Result<Reply, TrackerError> {
        let sent = self.call("DELETE", path, || {
            self.agent
                .delete(format!("{}{path}", self.base))
                .header("X-Redmine-API-Key", &self.key)
                .call()
        })?;
        self.reply("DELETE", path, sent)
    }

    /// Streams a file to `/uploads.json` and returns the token that attaches it.
    pub fn upload(&self, file: &NewAttachment) -> Result<String, TrackerError> {
        let path = "/uploads.json";
        let content = std::fs::File::open(file.path).map_err(|e| {
            TrackerError::Unavailable(format!("cannot read {}: {e}", file.path.display()))
        })?;
        let sent = self.call("POST", path, || {
            // A retry sends the file from its start again.
            let mut again = content.try_clone()?;
            again.rewind()?;
            self.agent
                .post(format!("{}{path}", self.base))
                .header("X-Redmine-API-Key", &self.key)
                .header("Content-Type", "application/octet-stream")
                .query("filename", file.name)
                .send(again)
        })?;
        match self.reply("POST", path, sent)? {
            Reply::Json(v) => v["upload"]["token"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| self.unexpected(path, Reply::Json(v.clone()))),
            Reply::Invalid(message) => Err(TrackerError::Rejected {
                issue: file.name.to_string(),
                message,
            }),
            other => Err(self.unexpected(path, other)),
        }
    }

    /// Streams a download into `out`; `None` when Redmine has no such file.
    pub fn download(&self, path: &str, out: &mut dyn Write) -> Result<Option<u64>, TrackerError> {
        let (mut response, tries) = self.call("GET", path, || {
            self.agent
                .get(format!("{}{path}", self.base))
                .header("X-Redmine-API-Key", &self.key)
                .call()
        })?;
        match response.status().as_u16() {
            200 => std::io::copy(&mut response.body_mut().as_reader(), out)
                .map(Some)
                .map_err(|e| {
                    TrackerError::Unavailable(format!(
                        "reading {path} from Redmine at {} failed: {e}",
                        self.base
                    ))
                }),
            404 => Ok(None),
            _ => {
                let reply = self.reply("GET", path, (response, tries))?;
                Err(self.unexpected(path, reply))
            }
        }
    }

    /// The site-level error for an answer the caller cannot use.
    pub fn unexpected(&self, path: &str, reply: Reply) -> TrackerError {
        let what = match reply {
            Reply::Forbidden => "403 Forbidden: the API key's user may not do this".to_string(),
            Reply::NotFound => "404 Not Found".to_string(),
            Reply::Invalid(m) => format!("422 {m}"),
            Reply::Other(status, body) => format!("{status} {body}"),
            Reply::Json(v) => format!(
                "an unexpected body: {}",
                v.to_string().chars().take(200).collect::<String>()
            ),
            Reply::Empty => "no body".to_string(),
        };
        TrackerError::Unavailable(format!(
            "Redmine at {} answered {path} with {what}",
            self.base
        ))
    }

    /// Sends the request `send` makes, again as the retry policy allows, and
    /// returns Redmine's last answer with the note on how often it was tried
    /// (for an error message); no answer at all is the site-level error.
    fn call(
        &self,
        method: &str,
        path: &str,
        send: impl Fn() -> Result<Response<ureq::Body>, ureq::Error>,
    ) -> Result<(Response<ureq::Body>, String), TrackerError> {
        let attempts = self.retry.run(|| {
            let outcome = send();
            let verdict = retry::verdict(method, &outcome);
            (outcome, verdict)
        });
        let tries = attempts.note();
        match attempts.outcome {
            Ok(response) => Ok((response, tries)),
            Err(ureq::Error::Timeout(_)) => Err(TrackerError::Unavailable(format!(
                "Redmine at {} did not answer {method} {path} within {} s{tries}",
                self.base,
                self.timeout.as_secs()
            ))),
            Err(e) => Err(TrackerError::Unavailable(format!(
                "cannot reach Redmine at {} ({method} {path}): {e}{tries}",
                self.base
            ))),
        }
    }

    fn reply(
        &self,
        method: &str,
        path: &str,
        (mut response, tries): (Response<ureq::Body>, String),
    ) -> Result<Reply, TrackerError> {
        let status = response.status().as_u16();
        let reply = self.classify(status, &mut response)?;
        match reply {
            Reply::Other(401, _) => Err(TrackerError::Unavailable(format!(
                "Redmine at {} refused the API key (401 Unauthorized): check {} or the key file",
                self.base,
                super::API_KEY_ENV
            ))),
            Reply::Other(429, _) => Err(TrackerError::Unavailable(format!(
                "Redmine at {} kept answering {method} {path} with 429 Too Many \
                 Requests{tries}: its rate limit; the next run tries again",
                self.base
            ))),
            Reply::Other(status @ 500..=599, body) => Err(TrackerError::Unavailable(format!(
                "Redmine at {} failed on {method} {path} ({status}): {body}{tries}",
                self.base
            ))),
            reply => Ok(reply),
        }
    }

    fn classify(
        &self,
        status: u16,
        response: &mut Response<ureq::Body>,
    ) -> Result<Reply, TrackerError> {
        let body = response.body_mut().read_to_string().map_err(|e| {
            TrackerError::Unavailable(format!(
                "reading Redmine's answer from {} failed: {e}",
                self.base
            ))
        })?;
        Ok(match status {
            200..=299 if body.trim().is_empty() => Reply::Empty,
            200..=299 => Reply::Json(serde_json::from_str(&body).map_err(|e| {
                TrackerError::Unavailable(format!(
                    "Redmine at {} sent something that is not JSON ({e}); is the REST API \
                     enabled (Administration → Settings → API)?",
                    self.base
                ))
            })?),
            404 => Reply::NotFound,
            403 => Reply::Forbidden,
            422 => Reply::Invalid(
                serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| {
                        v["errors"].as_array().map(|e| {
                            e.iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join("; ")
                        })
                    })
                    .unwrap_or(body),
            ),
            status => Reply::Other(status, body.chars().take(200).collect()),
        })
    }
}
