//! Sending a request again when a tracker could not answer it this time: one
//! policy for every connector that speaks HTTP (Jira, Redmine).
//!
//! Servers throttle (429, with `Retry-After`) and answer 502/503 while a node
//! restarts or a proxy reloads. A cron run that gives up on the first such answer
//! fails a whole site for a blip, so a request is sent again a bounded number of
//! times: a 429 waits what the server asked for, the others wait with exponential
//! backoff, every wait is capped, and so is their sum, so that a server that is
//! really down still fails the run within minutes instead of hanging it.
//!
//! Only what is safe to send twice is sent twice. A read (GET, HEAD) is repeated
//! after any 5xx, a 429 or a lost answer (timeout, dropped connection). A write
//! is repeated only when it cannot have been done: the server said so (429, 503)
//! or no connection was made. A 500, 502 or 504, a timeout or a dropped
//! connection may come after the work was done (an issue created, a comment
//! added), so that error goes to the engine as it is: its own retry finds what a
//! write made by the origin marker instead of making it twice.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ureq::http::Response;

/// How often and how long a connector keeps trying one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// The wait after the first failure; doubled after each further one.
    pub base: Duration,
    /// The longest single wait, a server's `Retry-After` included.
    pub max_wait: Duration,
    /// The most time one request spends waiting, all its retries together: a
    /// retry whose wait would go past it is not made.
    pub max_total: Duration,
    /// How long one second of a server's `Retry-After` lasts here: a second,
    /// except in tests, which shrink time instead of sleeping.
    pub second: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(500),
            max_wait: Duration::from_secs(60),
            max_total: Duration::from_secs(120),
            second: Duration::from_secs(1),
        }
    }
}

/// Whether an attempt's outcome is worth another attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The outcome stands: a success, an answer that will not change, or a write
    /// that may have been done.
    Final,
    /// Try again, after the server's `Retry-After` when it sent one.
    Retry {
        /// The wait the server asked for.
        after: Option<Duration>,
    },
}

/// The outcome of the last attempt, and how many attempts there were.
#[derive(Debug)]
pub struct Attempts<T> {
    /// The last attempt's outcome.
    pub outcome: T,
    /// Attempts made, the first included.
    pub tries: u32,
}

impl<T> Attempts<T> {
    /// `" (N tries)"` for an error message when the request was sent more than
    /// once, so that the reader knows a retry did not help; empty otherwise.
    pub fn note(&self) -> String {
        if self.tries > 1 {
            format!(" ({} tries)", self.tries)
        } else {
            String::new()
        }
    }
}

impl RetryPolicy {
    /// The wait before the next attempt, after attempt number `attempt` (the
    /// first is number one) asked for a retry and `waited` has passed in waits
    /// so far; `None` when there is to be no next attempt.
    pub fn wait(
        &self,
        attempt: u32,
        waited: Duration,
        after: Option<Duration>,
    ) -> Option<Duration> {
        if attempt >= self.attempts {
            return None;
        }
        let wait = match after {
            Some(after) => self.second.mul_f64(after.as_secs_f64()),
            None => self
                .base
                .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1))),
        }
        .min(self.max_wait);
        (waited.saturating_add(wait) <= self.max_total).then_some(wait)
    }

    /// Runs `attempt` until its verdict is final or the policy allows no more
    /// attempts, sleeping between attempts, and returns the last outcome.
    pub fn run<T>(&self, mut attempt: impl FnMut() -> (T, Verdict)) -> Attempts<T> {
        let mut tries = 1;
        let mut waited = Duration::ZERO;
        loop {
            let (outcome, verdict) = attempt();
            let next = match verdict {
                Verdict::Final => None,
                Verdict::Retry { after } => self.wait(tries, waited, after),
            };
            let Some(wait) = next else {
                return Attempts { outcome, tries };
            };
            tracing::debug!(tries, ?wait, "the tracker could not answer; trying again");
            std::thread::sleep(wait);
            waited += wait;
            tries += 1;
        }
    }
}

/// The verdict on what an HTTP request sent with `method` got back.
pub fn verdict(method: &str, outcome: &Result<Response<ureq::Body>, ureq::Error>) -> Verdict {
    match outcome {
        Ok(response) => {
            let retry_after = response
                .headers()
                .get("Retry-After")
                .and_then(|v| v.to_str().ok());
            status_verdict(method, response.status().as_u16(), retry_after, Utc::now())
        }
        Err(error) => error_verdict(method, error),
    }
}

/// A read is safe to send again; a write may have been done.
fn is_read(method: &str) -> bool {
    matches!(method, "GET" | "HEAD")
}

/// [`verdict`] for an answer with `status` and a `Retry-After` header, at `now`.
fn status_verdict(
    method: &str,
    status: u16,
    retry_after: Option<&str>,
    now: DateTime<Utc>,
) -> Verdict {
    let after = retry_after.and_then(|v| parse_retry_after(v, now));
    match status {
        // The server did not do it and says so.
        429 | 503 => Verdict::Retry { after },
        500..=599 if is_read(method) => Verdict::Retry { after },
        _ => Verdict::Final,
    }
}

/// [`verdict`] for a request that got no answer.
fn error_verdict(method: &str, error: &ureq::Error) -> Verdict {
    let never_sent = match error {
        ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => true,
        ureq::Error::Timeout(t) => {
            matches!(t, ureq::Timeout::Resolve | ureq::Timeout::Connect)
        }
        ureq::Error::Io(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
        _ => false,
    };
    let lost = matches!(
        error,
        ureq::Error::Timeout(_) | ureq::Error::Io(_) | ureq::Error::Protocol(_)
    );
    if never_sent || (lost && is_read(method)) {
        Verdict::Retry { after: None }
    } else {
        Verdict::Final
    }
}

/// `Retry-After` as seconds or as an HTTP date (RFC 9110); a date in the past
/// is no wait.
fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            attempts: 6,
            base: Duration::from_millis(10),
            max_wait: Duration::from_millis(50),
            max_total: Duration::from_millis(1000),
            second: Duration::from_millis(2),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn backoff_doubles_each_wait_up_to_the_cap_and_stops_after_the_last_attempt() {
        let p = policy();
        let waits: Vec<_> = (1..=6).map(|a| p.wait(a, Duration::ZERO, None)).collect();
        assert_eq!(
            waits,
            [
                Some(ms(10)),
                Some(ms(20)),
                Some(ms(40)),
                Some(ms(50)),
                Some(ms(50)),
                None
            ]
        );
    }

    #[test]
    fn retry_after_is_honoured_scaled_and_capped() {
        let p = policy();
        let secs = |n| Some(Duration::from_secs(n));
        assert_eq!(p.wait(1, Duration::ZERO, secs(7)), Some(ms(14)));
        assert_eq!(p.wait(1, Duration::ZERO, secs(0)), Some(ms(0)));
        assert_eq!(p.wait(1, Duration::ZERO, secs(3600)), Some(ms(50)));
        assert_eq!(
            RetryPolicy::default().wait(1, Duration::ZERO, secs(7)),
            Some(Duration::from_secs(7)),
            "a real second by default"
        );
    }

    #[test]
    fn the_total_wait_is_capped() {
        let p = RetryPolicy {
            max_total: ms(60),
            ..policy()
        };
        assert_eq!(p.wait(2, ms(10), None), Some(ms(20)), "10 + 20 fits in 60");
        assert_eq!(p.wait(3, ms(30), None), None, "30 + 40 does not");
        assert_eq!(
            p.wait(2, ms(10), Some(Duration::from_secs(25))),
            Some(ms(50))
        );
        assert_eq!(p.wait(2, ms(11), Some(Duration::from_secs(25))), None);
    }

    #[test]
    fn run_stops_at_a_final_verdict_or_when_the_attempts_are_spent() {
        let p = policy();
        let mut calls = 0;
        let done = p.run(|| {
            calls += 1;
            let verdict = if calls < 3 {
                Verdict::Retry { after: None }
            } else {
                Verdict::Final
            };
            (calls, verdict)
        });
        assert_eq!(
            (done.outcome, done.tries, done.note().as_str()),
            (3, 3, " (3 tries)")
        );

        let mut calls = 0;
        let spent = p.run(|| {
            calls += 1;
            (calls, Verdict::Retry { after: None })
        });
        assert_eq!((spent.outcome, spent.tries), (6, 6));

        let once = p.run(|| ((), Verdict::Final));
        assert_eq!((once.tries, once.note().as_str()), (1, ""));
    }

    #[test]
    fn reads_are_repeated_after_any_server_error_writes_only_when_not_done() {
        let now = Utc::now();
        let retry = Verdict::Retry { after: None };
        for method in ["GET", "POST", "PUT", "DELETE"] {
            assert_eq!(status_verdict(method, 503, None, now), retry, "{method}");
            assert_eq!(
                status_verdict(method, 429, Some("3"), now),
                Verdict::Retry {
                    after: Some(Duration::from_secs(3))
                },
                "{method}"
            );
            for status in [200, 204, 400, 401, 403, 404, 422] {
                assert_eq!(status_verdict(method, status, None, now), Verdict::Final);
            }
        }
        for status in [500, 502, 504] {
            assert_eq!(status_verdict("GET", status, None, now), retry);
            assert_eq!(status_verdict("POST", status, None, now), Verdict::Final);
            assert_eq!(status_verdict("PUT", status, None, now), Verdict::Final);
        }
    }

    #[test]
    fn a_lost_answer_is_asked_again_only_for_a_read_a_refused_connection_always() {
        let timeout = ureq::Error::Timeout(ureq::Timeout::RecvResponse);
        assert_eq!(
            error_verdict("GET", &timeout),
            Verdict::Retry { after: None }
        );
        assert_eq!(error_verdict("POST", &timeout), Verdict::Final);
        let refused = ureq::Error::Io(std::io::ErrorKind::ConnectionRefused.into());
        assert_eq!(
            error_verdict("POST", &refused),
            Verdict::Retry { after: None }
        );
        let connect = ureq::Error::Timeout(ureq::Timeout::Connect);
        assert_eq!(
            error_verdict("PUT", &connect),
            Verdict::Retry { after: None }
        );
        assert_eq!(
            error_verdict("GET", &ureq::Error::BadUri("x".into())),
            Verdict::Final
        );
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_as_an_http_date() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:27:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:20:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
