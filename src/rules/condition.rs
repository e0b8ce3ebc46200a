//! A rule's verdict on one scope at one instant: the input of the alarm lifecycle.
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::model::{Impact, Urgency};

/// Which rule of the catalogue (stable, snake_case, e.g. "hall_temperature_high").
pub type RuleId = &'static str;

/// Where a condition applies; together with the rule it identifies one alarm.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConditionKey {
    /// The rule of the catalogue.
    pub rule: RuleId,
    /// The site id.
    pub site: Arc<str>,
    /// "" for site-wide conditions; else e.g. "room:dh1", "rack:A01", "device:ups-1", "point:ups-1/runtime".
    pub scope: Arc<str>,
}

/// Condition classes, for cascade grouping of incidents and the IT-disaster escalation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConditionClass {
    /// Data hall temperature, its early warning and its rate of change.
    Temperature,
    /// Data hall humidity.
    Humidity,
    /// Rack feed power.
    RackPower,
    /// Utility feeds.
    Utility,
    /// UPS state, runtime, faults and module redundancy.
    Ups,
    /// Genset state, alarms and redundancy.
    Genset,
    /// Fuel autonomy.
    Fuel,
    /// Precision cooling units and their redundancy.
    Cooling,
    /// Smoke detection (VESDA).
    Fire,
    /// Water leaks.
    Water,
    /// Device communication and monitoring blindness.
    Communication,
    /// Genset load tests.
    LoadTest,
    /// Physical-access findings raised as security incidents (`access::escalate`).
    Access,
}

impl ConditionClass {
    /// Every class, in declaration order: the one list the wire names and snapshots parse
    /// against.
    pub const ALL: [ConditionClass; 13] = [
        ConditionClass::Temperature,
        ConditionClass::Humidity,
        ConditionClass::RackPower,
        ConditionClass::Utility,
        ConditionClass::Ups,
        ConditionClass::Genset,
        ConditionClass::Fuel,
        ConditionClass::Cooling,
        ConditionClass::Fire,
        ConditionClass::Water,
        ConditionClass::Communication,
        ConditionClass::LoadTest,
        ConditionClass::Access,
    ];
}

/// What the rule saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The condition holds (value beyond the limit, or a discrete alarm present).
    Active,
    /// The condition does not hold; `margin` is how far inside the limit the value is (>= 0, in the
    /// unit), so the alarm lifecycle can apply a deadband before clearing; None for discrete inputs.
    Clear {
        /// Distance inside the limit, in the condition's unit.
        margin: Option<f64>,
    },
    /// The inputs were bad or stale: the rule cannot tell. Never clears an alarm (invariant 5).
    Unknown {
        /// Why the rule cannot tell, for humans.
        reason: Arc<str>,
    },
}

/// One rule's verdict for one key at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// Rule, site and scope: the alarm identity.
    pub key: ConditionKey,
    /// The class, for incident grouping.
    pub class: ConditionClass,
    /// What the rule saw.
    pub verdict: Verdict,
    /// The evaluation instant.
    pub at: DateTime<Utc>,
    /// Default impact of the rule.
    pub impact: Impact,
    /// Default urgency of the rule.
    pub urgency: Urgency,
    /// The value that decided (e.g. 27.8), its limit (27.0) and unit ("degC"), when numeric.
    pub value: Option<f64>,
    /// The limit the value was compared against.
    pub limit: Option<f64>,
    /// The unit of `value` and `limit` ("" for discrete conditions).
    pub unit: &'static str,
    /// Location for incidents; None where it does not apply.
    pub room: Option<Arc<str>>,
    /// Rack id, when the condition is about a rack.
    pub rack: Option<Arc<str>>,
    /// Device id, when the condition is about a device.
    pub device: Option<Arc<str>>,
    /// Point id, when the condition is about one point.
    pub point: Option<Arc<str>>,
    /// One line a human reads in a ticket list, e.g. "DC dh1: temperature 27.8 degC above 27 degC".
    pub summary: String,
}

/// Per-rule lifecycle parameters (shipped defaults, configurable later per site/room/rack/device).
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmParams {
    /// How long a condition must hold before the alarm raises.
    pub on_delay: Duration,
    /// How long a condition must be clear before the alarm clears.
    pub off_delay: Duration,
    /// Clear only when `Verdict::Clear { margin }` has margin >= deadband.
    pub deadband: f64,
    /// A latching alarm stays raised until acknowledged, even once clear.
    pub latching: bool,
    /// Chattering: this many transitions within `chatter_window` flags the alarm.
    pub chatter_transitions: u32,
    /// The window over which transitions are counted.
    pub chatter_window: Duration,
}
