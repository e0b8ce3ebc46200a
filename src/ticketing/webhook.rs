//! The generic incident webhook (DESIGN "Incident webhook"): a CloudEvents 1.0 JSON
//! envelope per transition, POSTed with an `Idempotency-Key` and an HMAC-SHA256 signature.
//!
//! ## The request
//!
//! ```text
//! POST <url>
//! Content-Type: application/cloudevents+json
//! Idempotency-Key: <dedup_key>:<sequence>
//! X-Dcguard-Signature: sha256=<lower-case hex of HMAC-SHA256(key, body)>
//!
//! {"data":{...},"datacontenttype":"application/json","id":"<dedup_key>:<sequence>",
//!  "source":"dcguard","specversion":"1.0","subject":"<incident_id>",
//!  "time":"<transition instant, RFC 3339>","type":"dcguard.incident.opened"}
//! ```
//!
//! - `type` is `dcguard.incident.opened`, `dcguard.incident.updated` (joined,
//!   reactivated, escalated, acknowledged, one condition cleared, IT disaster) or
//!   `dcguard.incident.resolved`.
//! - `data` holds the incident after the transition: `incident_id`, `dedup_key`, `state`,
//!   `priority` (`P1`..`P5`), `impact`, `urgency`, `opened_at`, `due_at`, `site`, `room`,
//!   `rack`, `device`, `point`, `condition`, `class`, `value`, `limit`, `unit`,
//!   `summary`, `details`, plus `sequence` (1, 2, ... per incident), `transition` (what
//!   happened, e.g. `{"kind":"escalated","from":"P3","to":"P1",...}`) and `note`.
//! - The signature covers the exact bytes of the body; a receiver recomputes it with the
//!   shared key before parsing. The body is a function of the transition only (keys in
//!   a fixed order, `time` = the transition's instant), so a retry sends the same bytes.
//! - **Deduplication is the receiver's**: `Idempotency-Key` (equal to the CloudEvents
//!   `id`) is stable across retries and restarts; a receiver applies a key once and
//!   answers 2xx to repeats. Per incident, transitions arrive in `sequence` order: the
//!   next one is sent only after the previous one was acknowledged.
//! - Answers: 2xx = delivered; 408, 429 (with `Retry-After`) and 5xx, timeouts and
//!   connection errors = retried with backoff; any other status = parked after one attempt.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;

use super::{Adapter, SendError, SendFuture, deliver};
use crate::config::model::SecretRef;
use crate::incidents::incident::{IncidentEvent, IncidentTransition};

/// The adapter's queue name in the outbox.
pub const NAME: &str = "webhook";
/// The header carrying the stable per-transition key.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
/// The header carrying `sha256=<hex>` of the body.
pub const SIGNATURE_HEADER: &str = "X-Dcguard-Signature";
/// The CloudEvents structured-mode content type.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

/// The CloudEvents `type` of a transition.
pub fn event_type(event: IncidentEvent) -> &'static str {
    match event {
        IncidentEvent::Opened => "dcguard.incident.opened",
        IncidentEvent::Updated => "dcguard.incident.updated",
        IncidentEvent::Resolved => "dcguard.incident.resolved",
    }
}

/// The CloudEvents envelope of a transition.
pub fn envelope(t: &IncidentTransition) -> Value {
    let mut data = match serde_json::to_value(&t.incident) {
        Ok(Value::Object(map)) => map,
        // Serializing plain data with string keys cannot fail (invariant of serde_json).
        _ => Map::new(),
    };
    if let Some(id) = data.remove("id") {
        data.insert("incident_id".to_owned(), id);
    }
    data.insert("sequence".to_owned(), json!(t.sequence));
    data.insert(
        "transition".to_owned(),
        serde_json::to_value(&t.kind).unwrap_or(Value::Null),
    );
    data.insert("note".to_owned(), json!(t.note));
    json!({
        "specversion": "1.0",
        "id": t.idempotency_key,
        "source": "dcguard",
        "type": event_type(t.event()),
        "subject": t.incident.id,
        "time": t.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "datacontenttype": "application/json",
        "data": Value::Object(data),
    })
}

/// The exact body bytes sent for a transition.
pub fn body(t: &IncidentTransition) -> Vec<u8> {
    // A `Value` always serializes.
    serde_json::to_vec(&envelope(t)).unwrap_or_default()
}

/// `sha256=<lower-case hex of HMAC-SHA256(key, body)>`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length (invariant of the `hmac` crate's `new_from_slice`).
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256=");
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Why a secret could not be read; names the reference, never the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The environment variable is not set (or not UTF-8).
    #[error("environment variable {0} is not set")]
    Env(String),
    /// The file cannot be read.
    #[error("cannot read {path}: {kind}")]
    File {
        /// The file.
        path: String,
        /// The IO error kind.
        kind: String,
    },
    /// The secret is empty.
    #[error("the secret in {0} is empty")]
    Empty(String),
}

/// Reads a secret by reference (a file's trailing newline removed).
pub fn read_secret(secret: &SecretRef) -> Result<String, SecretError> {
    let (value, place) = match secret {
        SecretRef::Env(var) => (
            std::env::var(var).map_err(|_| SecretError::Env(var.clone()))?,
            var.clone(),
        ),
        SecretRef::File(path) => (
            std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
                .map_err(|e| SecretError::File {
                    path: path.display().to_string(),
                    kind: e.kind().to_string(),
                })?,
            path.display().to_string(),
        ),
    };
    if value.is_empty() {
        return Err(SecretError::Empty(place));
    }
    Ok(value)
}

/// The webhook adapter.
pub struct WebhookAdapter {
    client: reqwest::Client,
    url: String,
    key: Vec<u8>,
}

impl std::fmt::Debug for WebhookAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("WebhookAdapter")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl WebhookAdapter {
    /// An adapter posting to `url`, signing with `key`, each request bounded by `timeout`.
    pub fn new(url: impl Into<String>, key: impl Into<Vec<u8>>, timeout: Duration) -> Self {
        WebhookAdapter {
            client: super::http_client(timeout),
            url: url.into(),
            key: key.into(),
        }
    }

    /// From `[ticketing.webhook]`: reads the signing key now.
    pub fn from_config(
        webhook: &crate::config::model::Webhook,
        timeout: Duration,
    ) -> Result<Self, SecretError> {
        let key = match &webhook.hmac_secret {
            Some(r) => read_secret(r)?,
            None => return Err(SecretError::Empty("ticketing.webhook".to_owned())),
        };
        Ok(WebhookAdapter::new(webhook.url.clone(), key, timeout))
    }

    async fn post(&self, t: &IncidentTransition) -> Result<(), SendError> {
        let body = body(t);
        let sig = signature(&self.key, &body);
        deliver(
            self.client
                .post(&self.url)
                .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
                .header(IDEMPOTENCY_HEADER, &t.idempotency_key)
                .header(SIGNATURE_HEADER, sig)
                .body(body),
        )
        .await
    }
}

impl Adapter for WebhookAdapter {
    fn name(&self) -> &'static str {
        NAME
    }

    fn send<'a>(&'a self, transition: &'a IncidentTransition) -> SendFuture<'a> {
        Box::pin(self.post(transition))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_hmac_sha256_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_missing_secret_names_the_variable_only() {
        let err = read_secret(&SecretRef::Env("DCGUARD_TEST_NO_SUCH_VAR_4".into())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable DCGUARD_TEST_NO_SUCH_VAR_4 is not set"
        );
    }

    #[test]
    fn a_secret_file_loses_its_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "k3y\n").unwrap();
        assert_eq!(read_secret(&SecretRef::File(path)).unwrap(), "k3y");
    }
}
