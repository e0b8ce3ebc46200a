//! The daemon's own alarms (pseudo-site [`DAEMON_SITE`]): conditions about dcguard itself
//! rather than the facility, fed through the same alarm book (state, acknowledge, shelve,
//! metrics, logs). Two rules: "incident delivery failing", one alarm per ticketing adapter,
//! and "time-series data lost", one per sink. Pure: built from a status or counters and an
//! explicit instant.
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

/// "Time-series data lost": the InfluxDB sink dropped lines (spool past its disk or age
/// budget, a full queue, a spool write that failed, corrupt spool records), so Grafana
/// will show a gap. Medium x medium (P3 on the shipped matrix, no incident: the daemon's
/// own). Active while lines were lost within the last [`DATA_LOSS_HOLD`]; **latching**, so
/// a loss stays on the list until someone acknowledges it, even after it stopped.
pub static TIMESERIES_DATA_LOST: RuleSpec = RuleSpec {
    id: "timeseries_data_lost",
    class: ConditionClass::Communication,
    impact: Impact::Medium,
    urgency: Urgency::Medium,
    params: AlarmParams {
        on_delay: Duration::ZERO,
        off_delay: Duration::ZERO,
        deadband: 0.0,
        latching: true,
        chatter_transitions: 0,
        chatter_window: Duration::from_secs(600),
    },
    what: "the time-series sink dropped lines (spool budget, full queue, spool errors): a gap in the dashboards",
};

/// How long "time-series data lost" stays active after the last lost line.
pub const DATA_LOSS_HOLD: Duration = Duration::from_secs(600);

/// The daemon's own rules.
pub static INTERNAL: &[&RuleSpec] = &[&INCIDENT_DELIVERY_FAILING, &TIMESERIES_DATA_LOST];

/// Lines a time-series sink lost since start, by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DataLoss {
    /// Dropped by the spool's disk budget (oldest first).
    pub budget: u64,
    /// Dropped by the spool's age budget.
    pub age: u64,
    /// Dropped because the sink's queue was full.
    pub queue_full: u64,
    /// Lost to spool write errors or corrupt spool records.
    pub spool_errors: u64,
}

impl DataLoss {
    /// Every lost line.
    pub fn total(&self) -> u64 {
        self.budget + self.age + self.queue_full + self.spool_errors
    }
}

/// The "time-series data lost" condition of sink `sink` at `now`: active when the last
/// loss (`last_loss_at`) is less than [`DATA_LOSS_HOLD`] ago.
pub fn data_loss_condition(
    sink: &str,
    lost: DataLoss,
    last_loss_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Condition {
    let spec = &TIMESERIES_DATA_LOST;
    let active = last_loss_at.is_some_and(|at| {
        now.signed_duration_since(at)
            .to_std()
            .map_or(true, |ago| ago < DATA_LOSS_HOLD)
    });
    let summary = format!(
        "dcguard: {} time-series lines lost by the {sink} sink since start (disk budget {}, age {}, queue full {}, spool errors {}){}",
        lost.total(),
        lost.budget,
        lost.age,
        lost.queue_full,
        lost.spool_errors,
        last_loss_at.map_or_else(String::new, |at| format!(
            ", last at {}",
            at.format("%Y-%m-%d %H:%M:%S UTC")
        ))
    );
    daemon_condition(
        spec,
        format!("sink:{sink}"),
        active,
        now,
        (lost.total() as f64, "lines"),
        summary,
    )
}

/// A condition of the daemon itself (site [`DAEMON_SITE`]) for rule `spec` in `scope`, with
/// its value and unit.
fn daemon_condition(
    spec: &RuleSpec,
    scope: String,
    active: bool,
    now: DateTime<Utc>,
    (value, unit): (f64, &'static str),
    summary: String,
) -> Condition {
    Condition {
        key: ConditionKey {
            rule: spec.id,
            site: Arc::from(DAEMON_SITE),
            scope: Arc::from(scope),
        },
        class: spec.class,
        verdict: if active {
            Verdict::Active
        } else {
            Verdict::Clear { margin: None }
        },
        at: now,
        impact: spec.impact,
        urgency: spec.urgency,
        value: Some(value),
        limit: None,
        unit,
        room: None,
        rack: None,
        device: None,
        point: None,
        summary,
    }
}

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
    daemon_condition(
        spec,
        format!("adapter:{adapter}"),
        failing,
        now,
        (status.parked as f64, ""),
        summary,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    #[test]
    fn data_loss_is_active_for_the_hold_after_the_last_lost_line() {
        let now = Utc::now();
        let none = data_loss_condition("influxdb", DataLoss::default(), None, now);
        assert_eq!(none.verdict, Verdict::Clear { margin: None });
        assert_eq!(&*none.key.scope, "sink:influxdb");
        let lost = DataLoss {
            budget: 1200,
            age: 0,
            queue_full: 3,
            spool_errors: 0,
        };
        let c = data_loss_condition("influxdb", lost, Some(now - TimeDelta::seconds(599)), now);
        assert_eq!(c.verdict, Verdict::Active);
        assert_eq!(c.value, Some(1203.0));
        assert!(
            c.summary.contains("1203 time-series lines lost"),
            "{}",
            c.summary
        );
        assert!(c.summary.contains("disk budget 1200"), "{}", c.summary);
        let later = data_loss_condition("influxdb", lost, Some(now - TimeDelta::seconds(600)), now);
        assert_eq!(later.verdict, Verdict::Clear { margin: None });
        // A loss stamped in the future (clock step) counts as now, never panics.
        let ahead = data_loss_condition("influxdb", lost, Some(now + TimeDelta::seconds(5)), now);
        assert_eq!(ahead.verdict, Verdict::Active);
        assert!(TIMESERIES_DATA_LOST.params.latching);
    }

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
