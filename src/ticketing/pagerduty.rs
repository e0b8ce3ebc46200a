//! The PagerDuty Events API v2 adapter: one alert per dcguard incident, keyed by
//! `dedup_key`, driven by trigger / acknowledge / resolve events.
//!
//! ## The request
//!
//! ```text
//! POST <events_url>            (https://events.pagerduty.com/v2/enqueue)
//! Content-Type: application/json
//!
//! {"routing_key":"<secret>","event_action":"trigger","dedup_key":"<dedup key>",
//!  "client":"dcguard","payload":{"summary":"[P1] ...","source":"dc/pac-2",
//!  "severity":"critical","timestamp":"<transition instant>","component":"pac-2",
//!  "group":"dc/dh1","class":"Temperature","custom_details":{...}}}
//! ```
//!
//! - `event_action`: an opening and every update (joined, reactivated, escalated, a
//!   condition cleared, IT disaster) are `trigger`s with the same `dedup_key`, which
//!   PagerDuty folds into the open alert (an update after a person resolved the alert in
//!   PagerDuty opens a new alert with the same key: the condition is still active); an
//!   acknowledgement is `acknowledge`, the resolution `resolve`.
//! - `severity` from the priority: P1 `critical`, P2 `error`, P3 `warning`, P4/P5 `info`.
//! - `summary` is `[P1] <summary>` cut to 1024 characters; `custom_details` hold the
//!   incident's wire fields (site, room, value, limit, priority, due time, ...), the
//!   transition and its note.
//! - **Deduplication is PagerDuty's**: the same `dedup_key` and routing key address one
//!   open alert, so a re-sent trigger is folded in, and an acknowledge or resolve sent
//!   twice changes nothing. The dedup key is used as is up to 255 characters, else
//!   bounded like ServiceNow's correlation id ([`super::servicenow::bounded_key`]).
//! - Answers: 202 (any 2xx) = accepted; 429 and 5xx (and timeouts, connection errors)
//!   retry, honouring `Retry-After` when given; 400 (invalid event) and other 4xx park.
//!
//! The routing key is read once from its reference and never logged.

use std::time::Duration;

use serde_json::{Value, json};

use super::webhook::{SecretError, read_secret};
use super::{Adapter, SendError, SendFuture, deliver};
use crate::config::model::Priority;
use crate::incidents::incident::{IncidentSnapshot, IncidentTransition, TransitionKind};

/// The adapter's queue name in the outbox.
pub const NAME: &str = "pagerduty";
/// Longest `dedup_key` PagerDuty accepts.
pub const DEDUP_KEY_MAX: usize = 255;
/// Longest `payload.summary` PagerDuty accepts.
pub const SUMMARY_MAX: usize = 1024;

/// `critical`, `error`, `warning`, `info`.
pub fn severity(p: Priority) -> &'static str {
    match p {
        Priority::P1 => "critical",
        Priority::P2 => "error",
        Priority::P3 => "warning",
        Priority::P4 | Priority::P5 => "info",
    }
}

/// `trigger`, `acknowledge` or `resolve`.
pub fn event_action(kind: &TransitionKind) -> &'static str {
    match kind {
        TransitionKind::Acknowledged { .. } => "acknowledge",
        TransitionKind::Resolved => "resolve",
        _ => "trigger",
    }
}

/// The alert's `dedup_key` (at most [`DEDUP_KEY_MAX`] characters).
pub fn dedup_key(incident: &IncidentSnapshot) -> String {
    super::servicenow::bounded_key(incident, DEDUP_KEY_MAX, &[])
}

/// `[P1] <summary>`, cut to [`SUMMARY_MAX`] characters.
pub fn summary(i: &IncidentSnapshot) -> String {
    let s = format!("[{}] {}", i.priority.as_str(), i.summary);
    if s.chars().count() <= SUMMARY_MAX {
        return s;
    }
    let mut cut: String = s.chars().take(SUMMARY_MAX - 3).collect();
    cut.push_str("...");
    cut
}

/// The event of a transition (with the routing key in place).
pub fn event(t: &IncidentTransition, routing_key: &str) -> Value {
    let i = &t.incident;
    let mut details = match serde_json::to_value(i) {
        Ok(Value::Object(map)) => map,
        // Serializing plain data with string keys cannot fail (invariant of serde_json).
        _ => serde_json::Map::new(),
    };
    let class = details.get("class").cloned().unwrap_or(Value::Null);
    if let Some(id) = details.remove("id") {
        details.insert("incident_id".to_owned(), id);
    }
    details.insert("sequence".to_owned(), json!(t.sequence));
    details.insert(
        "transition".to_owned(),
        serde_json::to_value(&t.kind).unwrap_or(Value::Null),
    );
    details.insert("note".to_owned(), json!(t.note));
    let source = match (&i.device, &i.room) {
        (Some(d), _) => format!("{}/{d}", i.site),
        (None, Some(r)) => format!("{}/{r}", i.site),
        (None, None) => i.site.clone(),
    };
    let group = match &i.room {
        Some(r) => format!("{}/{r}", i.site),
        None => i.site.clone(),
    };
    let component = i
        .device
        .clone()
        .or_else(|| i.point.clone())
        .unwrap_or_else(|| i.condition.clone());
    json!({
        "routing_key": routing_key,
        "event_action": event_action(&t.kind),
        "dedup_key": dedup_key(i),
        "client": "dcguard",
        "payload": {
            "summary": summary(i),
            "source": source,
            "severity": severity(i.priority),
            "timestamp": t.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "component": component,
            "group": group,
            "class": class,
            "custom_details": Value::Object(details),
        },
    })
}

/// The PagerDuty adapter.
pub struct PagerDutyAdapter {
    client: reqwest::Client,
    url: String,
    routing_key: String,
}

impl std::fmt::Debug for PagerDutyAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the routing key.
        f.debug_struct("PagerDutyAdapter")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl PagerDutyAdapter {
    /// An adapter posting to `events_url` with `routing_key`, each request bounded by `timeout`.
    pub fn new(
        events_url: impl Into<String>,
        routing_key: impl Into<String>,
        timeout: Duration,
    ) -> Self {
        PagerDutyAdapter {
            client: super::http_client(timeout),
            url: events_url.into(),
            routing_key: routing_key.into(),
        }
    }

    /// From `[ticketing.pagerduty]`: reads the routing key now.
    pub fn from_config(
        pd: &crate::config::model::PagerDuty,
        timeout: Duration,
    ) -> Result<Self, SecretError> {
        let key = match &pd.routing_key {
            Some(r) => read_secret(r)?,
            None => return Err(SecretError::Empty("ticketing.pagerduty".to_owned())),
        };
        Ok(PagerDutyAdapter::new(pd.events_url.clone(), key, timeout))
    }

    async fn post(&self, t: &IncidentTransition) -> Result<(), SendError> {
        deliver(
            self.client
                .post(&self.url)
                .json(&event(t, &self.routing_key)),
        )
        .await
    }
}

impl Adapter for PagerDutyAdapter {
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
    fn priorities_map_to_severities() {
        assert_eq!(severity(Priority::P1), "critical");
        assert_eq!(severity(Priority::P2), "error");
        assert_eq!(severity(Priority::P3), "warning");
        assert_eq!(severity(Priority::P4), "info");
        assert_eq!(severity(Priority::P5), "info");
    }

    #[test]
    fn transitions_map_to_event_actions() {
        assert_eq!(event_action(&TransitionKind::Opened), "trigger");
        assert_eq!(event_action(&TransitionKind::Disaster), "trigger");
        assert_eq!(
            event_action(&TransitionKind::Acknowledged {
                by: "op".into(),
                comment: String::new()
            }),
            "acknowledge"
        );
        assert_eq!(event_action(&TransitionKind::Resolved), "resolve");
    }

    #[test]
    fn the_adapter_debug_output_hides_the_routing_key() {
        let a = PagerDutyAdapter::new(
            "http://127.0.0.1:9/v2/enqueue",
            "R0UTINGKEYSECRET",
            Duration::from_secs(1),
        );
        assert!(!format!("{a:?}").contains("R0UTINGKEYSECRET"));
    }
}
