//! The visit report of a ticket on the generic webhook: a `dcguard.visit.report` CloudEvent.
//!
//! The service desk closes a visit ticket one working day after the activity (ITSM.3); the
//! access side produces the visit report then and hands it over as an update of the ticket.
//! It travels to the same receiver as the incidents (`[ticketing.webhook]`), with the same
//! signature and the same answer classification, but from its own durable queue
//! (`store::access`, the `access_visit_reports` table): the incident outbox is typed to
//! incident transitions.
//!
//! ```text
//! POST <url>
//! Content-Type: application/cloudevents+json
//! Idempotency-Key: visit-report:<ticket id>
//! X-Dcguard-Signature: sha256=<lower-case hex of HMAC-SHA256(key, body)>
//!
//! {"data":{...the report...},"datacontenttype":"application/json",
//!  "id":"visit-report:<ticket id>","source":"dcguard","specversion":"1.0",
//!  "subject":"<ticket id>","time":"<produced at, RFC 3339>","type":"dcguard.visit.report"}
//! ```
//!
//! A ticket has one report, so its key is stable across retries and restarts.

use serde_json::{Value, json};

use super::webhook::{CONTENT_TYPE, IDEMPOTENCY_HEADER, SIGNATURE_HEADER, signature};
use super::{SendError, deliver};

/// The CloudEvents `type` of a visit report.
pub const EVENT_TYPE: &str = "dcguard.visit.report";

/// The idempotency key (and CloudEvents `id`) of a ticket's report.
pub fn idempotency_key(ticket: &str) -> String {
    format!("visit-report:{ticket}")
}

/// The CloudEvents envelope of a ticket's report.
pub fn envelope(ticket: &str, produced_at: chrono::DateTime<chrono::Utc>, data: &Value) -> Value {
    json!({
        "specversion": "1.0",
        "id": idempotency_key(ticket),
        "source": "dcguard",
        "type": EVENT_TYPE,
        "subject": ticket,
        "time": produced_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "datacontenttype": "application/json",
        "data": data,
    })
}

/// Posts a ticket's report to `url`, signed with `key`; `Ok` only when the receiver
/// acknowledged it (2xx).
pub async fn send(
    client: &reqwest::Client,
    url: &str,
    key: &[u8],
    ticket: &str,
    produced_at: chrono::DateTime<chrono::Utc>,
    data: &Value,
) -> Result<(), SendError> {
    // A `Value` always serializes.
    let body = serde_json::to_vec(&envelope(ticket, produced_at, data)).unwrap_or_default();
    let sig = signature(key, &body);
    deliver(
        client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .header(IDEMPOTENCY_HEADER, idempotency_key(ticket))
            .header(SIGNATURE_HEADER, sig)
            .body(body),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_names_the_ticket_and_is_stable() {
        let at = chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap();
        let data = json!({"ticket": "ITSM-1"});
        let a = envelope("ITSM-1", at, &data);
        assert_eq!(a, envelope("ITSM-1", at, &data));
        assert_eq!(a["type"], EVENT_TYPE);
        assert_eq!(a["id"], "visit-report:ITSM-1");
        assert_eq!(a["subject"], "ITSM-1");
        assert_eq!(a["data"], data);
    }
}
