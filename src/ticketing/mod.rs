//! Ticketing adapters: each maps an incident transition onto one receiver's API and classifies its answers.
//!
//! The outbox (`store::outbox`) keeps one queue per adapter [`Adapter::name`]; the
//! dispatcher (`incidents::dispatcher`) takes the head of each incident's queue, calls
//! [`Adapter::send`] and branches only on the [`SendError`] variant: `Ok` removes the item
//! (the receiver acknowledged it), [`SendError::Retryable`] schedules a retry with backoff
//! (or at the receiver's `Retry-After`), [`SendError::Rejected`] parks the item after that
//! one attempt. Delivery is at-least-once: a transition may be offered again after a
//! crash or a timeout, so every adapter makes a re-sent transition harmless at its
//! receiver (webhook: `Idempotency-Key`; ServiceNow: look up by `correlation_id`;
//! PagerDuty: `dedup_key`).

/// PagerDuty Events API v2.
pub mod pagerduty;
/// ServiceNow Table API.
pub mod servicenow;
/// Visit reports on the generic webhook (`dcguard.visit.report`).
pub mod visit_report;
/// Generic CloudEvents webhook (DESIGN "Incident webhook").
pub mod webhook;

use std::{future::Future, pin::Pin, time::Duration};

use chrono::{DateTime, Utc};

use crate::incidents::incident::IncidentTransition;

/// The longest `Retry-After` a receiver can impose; a larger value is clamped to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// How a delivery failed; decided ONCE here, the dispatcher only branches on it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SendError {
    /// Try again later: connect failure, timeout, 5xx, 429 (with the receiver's Retry-After if given).
    #[error("retryable: {reason}")]
    Retryable {
        /// What happened, for logs and the parked list (never a secret).
        reason: String,
        /// The receiver's `Retry-After`, when it gave one (clamped to [`MAX_RETRY_AFTER`]).
        retry_after: Option<Duration>,
    },
    /// The receiver refused the content (4xx other than 408/429): park it, do not retry automatically.
    #[error("rejected: {reason}")]
    Rejected {
        /// The HTTP status, when there was one.
        status: Option<u16>,
        /// What happened.
        reason: String,
    },
}

impl SendError {
    /// A retryable error without `Retry-After`.
    pub fn retryable(reason: impl Into<String>) -> SendError {
        SendError::Retryable {
            reason: reason.into(),
            retry_after: None,
        }
    }

    /// Sorts a transport error: every failure to get an HTTP answer is retryable (the
    /// request may or may not have been applied; the receiver deduplicates).
    pub fn from_transport(e: &reqwest::Error) -> SendError {
        let what = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "cannot connect"
        } else if e.is_body() || e.is_decode() {
            "broken reply"
        } else if e.is_builder() {
            // A URL the client cannot use: sending again will not help.
            return SendError::Rejected {
                status: None,
                reason: format!("cannot build the request: {}", error_chain(e)),
            };
        } else {
            "request failed"
        };
        SendError::retryable(format!("{what}: {}", error_chain(e)))
    }
}

/// The error and its sources on one line (reqwest's top-level message alone hides the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}

/// The future [`Adapter::send`] returns.
pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<(), SendError>> + Send + 'a>>;

/// One receiver. Implementations know how their receiver deduplicates and make a re-sent transition harmless.
pub trait Adapter: Send + Sync {
    /// "webhook", "servicenow", "pagerduty": the outbox keeps one queue per adapter.
    fn name(&self) -> &'static str;
    /// Delivers one transition; `Ok` only when the receiver acknowledged it.
    fn send<'a>(&'a self, transition: &'a IncidentTransition) -> SendFuture<'a>;
}

/// Why an enabled adapter could not be built: which one, and its secret problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ticketing adapter {adapter}: {source}")]
pub struct AdapterSetupError {
    /// The adapter's name.
    pub adapter: &'static str,
    /// What is wrong with its secret (names the reference, never the value).
    pub source: webhook::SecretError,
}

/// Names of the enabled adapters: the outbox queues every transition once per name.
pub fn enabled_names(config: &crate::config::model::Config) -> Vec<&'static str> {
    let mut names = Vec::new();
    if config.webhook.as_ref().is_some_and(|w| w.enabled) {
        names.push(webhook::NAME);
    }
    if config.servicenow.as_ref().is_some_and(|s| s.enabled) {
        names.push(servicenow::NAME);
    }
    if config.pagerduty.as_ref().is_some_and(|p| p.enabled) {
        names.push(pagerduty::NAME);
    }
    names
}

/// The enabled adapters, built from the configuration (their secrets are read now), in
/// the order of [`enabled_names`].
pub fn from_config(
    config: &crate::config::model::Config,
) -> Result<Vec<std::sync::Arc<dyn Adapter>>, AdapterSetupError> {
    let timeout = config.dispatch.request_timeout;
    let mut adapters: Vec<std::sync::Arc<dyn Adapter>> = Vec::new();
    if let Some(w) = config.webhook.as_ref().filter(|w| w.enabled) {
        let a = webhook::WebhookAdapter::from_config(w, timeout).map_err(|source| {
            AdapterSetupError {
                adapter: webhook::NAME,
                source,
            }
        })?;
        adapters.push(std::sync::Arc::new(a));
    }
    if let Some(s) = config.servicenow.as_ref().filter(|s| s.enabled) {
        let a = servicenow::ServiceNowAdapter::from_config(s, timeout).map_err(|source| {
            AdapterSetupError {
                adapter: servicenow::NAME,
                source,
            }
        })?;
        adapters.push(std::sync::Arc::new(a));
    }
    if let Some(p) = config.pagerduty.as_ref().filter(|p| p.enabled) {
        let a = pagerduty::PagerDutyAdapter::from_config(p, timeout).map_err(|source| {
            AdapterSetupError {
                adapter: pagerduty::NAME,
                source,
            }
        })?;
        adapters.push(std::sync::Arc::new(a));
    }
    Ok(adapters)
}

/// Shared HTTP client (reqwest, rustls, connect + request timeouts).
///
/// `timeout` bounds a whole request (connect, send, wait for and read the reply); the
/// connect timeout is the smaller of it and 5 s. No redirects are followed: a receiver
/// that moved is a configuration problem, not something to chase with signed payloads.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    let builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("dcguard/", env!("CARGO_PKG_VERSION")));
    match builder.build() {
        Ok(client) => client,
        Err(e) => {
            // Only fails when the TLS backend cannot initialise; a client without the
            // custom settings still honours the per-request timeout set by the adapters.
            tracing::warn!(error = %error_chain(&e), "HTTP client setup failed; using defaults");
            reqwest::Client::new()
        }
    }
}

/// Shared status classification: 2xx Ok; 408/429/5xx Retryable (Retry-After seconds or HTTP date parsed);
/// other 4xx Rejected.
///
/// 1xx and 3xx (redirects are not followed) are rejected too: sending the same request
/// again gets the same answer.
pub fn classify(
    status: reqwest::StatusCode,
    retry_after: Option<&reqwest::header::HeaderValue>,
) -> Result<(), SendError> {
    classify_at(status, retry_after, Utc::now())
}

/// Sends one request whose answer carries nothing but its status: transport errors,
/// then the status (with `Retry-After`), classified once.
///
/// The body is read and dropped so the connection can be reused; a failure while
/// reading it after a 2xx does not undo the receiver's acknowledgement.
pub async fn deliver(request: reqwest::RequestBuilder) -> Result<(), SendError> {
    let reply = request
        .send()
        .await
        .map_err(|e| SendError::from_transport(&e))?;
    let outcome = classify(
        reply.status(),
        reply.headers().get(reqwest::header::RETRY_AFTER),
    );
    let _ = reply.bytes().await;
    outcome
}

/// [`classify`] with an explicit `now` (for an HTTP-date `Retry-After`).
pub fn classify_at(
    status: reqwest::StatusCode,
    retry_after: Option<&reqwest::header::HeaderValue>,
    now: DateTime<Utc>,
) -> Result<(), SendError> {
    let code = status.as_u16();
    if status.is_success() {
        return Ok(());
    }
    if code == 408 || code == 429 || status.is_server_error() {
        return Err(SendError::Retryable {
            reason: format!("HTTP {code}"),
            retry_after: retry_after.and_then(|v| parse_retry_after(v.to_str().ok()?, now)),
        });
    }
    Err(SendError::Rejected {
        status: Some(code),
        reason: format!("HTTP {code}"),
    })
}

/// `Retry-After`: delay-seconds or an HTTP-date (RFC 9110 section 10.2.3), clamped to
/// 0..=[`MAX_RETRY_AFTER`]; `None` when unreadable.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    let delay = (at - now).to_std().unwrap_or(Duration::ZERO);
    Some(delay.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;
    use reqwest::header::HeaderValue;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn success_is_ok_and_server_errors_retry() {
        let now = at("2026-11-21T12:00:00Z");
        assert_eq!(classify_at(StatusCode::NO_CONTENT, None, now), Ok(()));
        for code in [408, 429, 500, 502, 503, 504] {
            let s = StatusCode::from_u16(code).unwrap();
            assert!(
                matches!(classify_at(s, None, now), Err(SendError::Retryable { .. })),
                "{code}"
            );
        }
    }

    #[test]
    fn other_client_errors_and_redirects_are_rejected_with_their_status() {
        let now = at("2026-11-21T12:00:00Z");
        for code in [301, 400, 401, 403, 404, 409, 413, 422] {
            let s = StatusCode::from_u16(code).unwrap();
            assert_eq!(
                classify_at(s, None, now),
                Err(SendError::Rejected {
                    status: Some(code),
                    reason: format!("HTTP {code}")
                })
            );
        }
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date_is_read_and_clamped() {
        let now = at("2026-11-21T12:00:00Z");
        let ra = |v: &str| match classify_at(
            StatusCode::TOO_MANY_REQUESTS,
            Some(&HeaderValue::from_str(v).unwrap()),
            now,
        ) {
            Err(SendError::Retryable { retry_after, .. }) => retry_after,
            other => panic!("{other:?}"),
        };
        assert_eq!(ra("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            ra("Sat, 21 Nov 2026 12:00:30 GMT"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(ra("Sat, 21 Nov 2026 11:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(ra("999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(ra("soon"), None);
        assert_eq!(ra("-5"), None);
    }
}
