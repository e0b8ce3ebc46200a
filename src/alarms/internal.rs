//! The daemon's own alarms (pseudo-site [`DAEMON_SITE`]): conditions about dcguard itself
//! rather than the facility, fed through the same alarm book (state, acknowledge, shelve,
//! metrics, logs). Today one rule: "incident delivery failing", one alarm per ticketing
//! adapter. Pure: built from a dispatcher's status and an explicit instant.
//!
//! These alarms open **no incident**: the incident would go to the very receiver that is
//! failing. They are what the control room sees instead (dashboards, `/metrics`
//! `dcguard_alarms{site="daemon"}`, the API's alarm list, the log).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::model::{Impact, Urgency};
use crate::incidents::dispatcher::DispatcherStatus;
use crate::rules::catalogue::RuleSpec;
use crate::rules::condition::{AlarmParams, Condition, ConditionClass, ConditionKey, Verdict};

/// The pseudo-site of the daemon's own alarms.
pub const DAEMON_SITE: &str = "daemon";

/// "Incident delivery failing": a transition is parked (rejected by the receiver, or
/// undeliverable within the retry horizon), or attempts have failed without a delivery for
/// longer than `[ticketing.dispatch] delivery_failing_after_secs`. High impact x medium
/// urgency (P2 on the shipped matrix): while it lasts, new incidents are not in the ticket
/// system and the control room must phone the service desk. No delays: the grace period is
/// already in the condition, and it clears as soon as delivery recovers.
pub static INCIDENT_DELIVERY_FAILING: RuleSpec = RuleSpec {
    id: "incident_delivery_failing",
    class: ConditionClass::Communication,
    impact: Impact::High,
    urgency: Urgency::Medium,
    params: AlarmParams {
        on_delay: Duration::ZERO,
        off_delay: Duration::ZERO,
        deadband: 0.0,
        latching: false,
        chatter_transitions: 5,
        chatter_window: Duration::from_secs(600),
    },
    what: "incident delivery to a ticketing adapter failing (parked transitions, or attempts failing past the grace period)",
};

/// The daemon's own rules.
pub static INTERNAL: &[&RuleSpec] = &[&INCIDENT_DELIVERY_FAILING];

/// True for an alarm of the daemon itself.
pub fn is_internal(site: &str) -> bool {
    site == DAEMON_SITE
}

/// The "incident delivery failing" condition of one adapter at `now`.
pub fn delivery_condition(
    status: &DispatcherStatus,
    now: DateTime<Utc>,
    grace: Duration,
) -> Condition {
    let spec = &INCIDENT_DELIVERY_FAILING;
    let failing = status.is_failing(now, grace);
    let adapter = status.adapter;
    let summary = if failing {
        let mut s = format!("dcguard: incident delivery to {adapter} failing");
        if status.parked > 0 {
            s.push_str(&format!(", {} parked", status.parked));
        }
        if let Some(since) = status.failing_since {
            s.push_str(&format!(
                ", since {}",
                since.format("%Y-%m-%d %H:%M:%S UTC")
            ));
        }
        if let Some(e) = &status.last_error {
            s.push_str(&format!(", last error: {e}"));
        }
        s
    } else {
        format!("dcguard: incident delivery to {adapter} working")
    };
    Condition {
        key: ConditionKey {
            rule: spec.id,
            site: Arc::from(DAEMON_SITE),
            scope: Arc::from(format!("adapter:{adapter}")),
        },
        class: spec.class,
        verdict: if failing {
            Verdict::Active
        } else {
            Verdict::Clear { margin: None }
        },
        at: now,
        impact: spec.impact,
        urgency: spec.urgency,
        value: Some(status.parked as f64),
        limit: None,
        unit: "",
        room: None,
        rack: None,
        device: None,
        point: None,
        summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn status() -> DispatcherStatus {
        DispatcherStatus {
            adapter: "webhook",
            pending: 0,
            parked: 0,
            in_flight: 0,
            delivered: 0,
            failed_attempts: 0,
            failing_since: None,
            last_error: None,
        }
    }

    #[test]
    fn parked_is_active_at_once_and_failing_only_after_the_grace() {
        let now = Utc::now();
        let grace = Duration::from_secs(60);
        let mut s = status();
        let c = delivery_condition(&s, now, grace);
        assert_eq!(c.verdict, Verdict::Clear { margin: None });
        assert_eq!(&*c.key.site, "daemon");
        assert_eq!(&*c.key.scope, "adapter:webhook");

        s.failing_since = Some(now - TimeDelta::seconds(59));
        s.last_error = Some("503 Service Unavailable".into());
        assert!(!matches!(
            delivery_condition(&s, now, grace).verdict,
            Verdict::Active
        ));
        s.failing_since = Some(now - TimeDelta::seconds(60));
        let c = delivery_condition(&s, now, grace);
        assert_eq!(c.verdict, Verdict::Active);
        assert!(c.summary.contains("503"), "{}", c.summary);

        let mut parked = status();
        parked.parked = 2;
        parked.failing_since = Some(now);
        let c = delivery_condition(&parked, now, grace);
        assert_eq!(c.verdict, Verdict::Active);
        assert!(c.summary.contains("2 parked"), "{}", c.summary);
        assert_eq!(c.value, Some(2.0));
    }
}
