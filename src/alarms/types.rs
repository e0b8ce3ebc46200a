//! The vocabulary of the alarm lifecycle: alarm keys, ISA-18.2 states, transitions with their
//! incident signals, the context an incident needs, parameters and the typed operator errors.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::model::{Impact, Urgency};
use crate::rules::condition::{AlarmParams, Condition, ConditionClass, ConditionKey};

use super::names;

/// The identity of one alarm: rule, site and scope. The owned, serializable twin of
/// [`ConditionKey`] (whose rule id is a `&'static str`), so alarm state survives a restart.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AlarmKey {
    /// The rule of the catalogue, e.g. `hall_temperature_high`.
    pub rule: String,
    /// The site id.
    pub site: String,
    /// `""` for site-wide conditions; else e.g. `room:dh1`, `device:ups-1`.
    pub scope: String,
}

impl AlarmKey {
    /// Builds a key from its parts.
    pub fn new(rule: &str, site: &str, scope: &str) -> AlarmKey {
        AlarmKey {
            rule: rule.to_owned(),
            site: site.to_owned(),
            scope: scope.to_owned(),
        }
    }

    /// True when this key names the same alarm as a rule's condition key.
    pub fn matches(&self, key: &ConditionKey) -> bool {
        self.rule == key.rule && *self.site == *key.site && *self.scope == *key.scope
    }
}

impl From<&ConditionKey> for AlarmKey {
    fn from(key: &ConditionKey) -> AlarmKey {
        AlarmKey::new(key.rule, &key.site, &key.scope)
    }
}

impl fmt::Display for AlarmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.scope.is_empty() {
            write!(f, "{}/{}", self.site, self.rule)
        } else {
            write!(f, "{}/{}/{}", self.site, self.rule, self.scope)
        }
    }
}

/// The ISA-18.2 alarm states (OPC UA Part 9 `ActiveState` x `AckedState`). Shelving, out of
/// service and suppression are orthogonal flags, as in OPC UA, not states here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AlarmState {
    /// Not active, nothing to acknowledge.
    Normal,
    /// Active and not yet acknowledged (also: latched, waiting for the reset acknowledgement).
    ActiveUnacked,
    /// Active and acknowledged.
    ActiveAcked,
    /// The condition returned to normal before anyone acknowledged the alarm.
    ReturnedUnacked,
}

impl AlarmState {
    /// Active (raised) states: `ActiveUnacked` and `ActiveAcked`.
    pub fn is_active(self) -> bool {
        matches!(self, AlarmState::ActiveUnacked | AlarmState::ActiveAcked)
    }

    /// States waiting for an acknowledgement.
    pub fn is_unacked(self) -> bool {
        matches!(
            self,
            AlarmState::ActiveUnacked | AlarmState::ReturnedUnacked
        )
    }
}

/// Why a transition happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Cause {
    /// The verdict being applied raised or cleared the alarm (no delay, or the delay was
    /// waiting for a good verdict after `Unknown` ones).
    Condition,
    /// The verdicts before held for the whole on- or off-delay; noticed on a clock tick or when
    /// the next verdict arrived.
    DelayElapsed,
    /// An operator acknowledged.
    Acknowledge,
    /// An operator shelved the alarm.
    Shelve,
    /// An operator unshelved the alarm.
    Unshelve,
    /// A shelve reached its expiry.
    ShelveExpired,
    /// An operator took the alarm out of service.
    OutOfService,
    /// An operator returned the alarm to service.
    ReturnToService,
    /// Suppression by design started (e.g. a PAC in standby).
    Suppress,
    /// Suppression by design ended.
    Unsuppress,
    /// A maintenance window covering the alarm ended or was removed while it was active.
    MaintenanceEnded,
    /// The alarm stopped chattering; the incident held open while it chattered is resolved.
    ChatterEnded,
}

/// What a transition asks of the incident layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IncidentSignal {
    /// Open the one incident of this alarm activation.
    Open,
    /// Add to the open incident (acknowledged, re-raised while chattering, shelved, ...).
    Update,
    /// Resolve the open incident: the alarm cleared and stayed clear past its off-delay.
    Resolve,
}

/// The context of an alarm an incident needs, kept from the latest verdict so transitions that
/// no verdict caused (acknowledge, shelve expiry, ...) still carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmInfo {
    /// Condition class (incident grouping; maintenance-window scope).
    #[serde(with = "names::class")]
    pub class: ConditionClass,
    /// Default impact of the rule.
    #[serde(with = "names::impact")]
    pub impact: Impact,
    /// Default urgency of the rule.
    #[serde(with = "names::urgency")]
    pub urgency: Urgency,
    /// The value that decided, from the latest verdict that was not `Unknown`.
    pub value: Option<f64>,
    /// Its limit.
    pub limit: Option<f64>,
    /// Their unit.
    pub unit: String,
    /// Room id, when it applies.
    pub room: Option<String>,
    /// Rack id, when it applies.
    pub rack: Option<String>,
    /// Device id, when it applies.
    pub device: Option<String>,
    /// Point id, when it applies.
    pub point: Option<String>,
    /// One line for humans, from the latest verdict that was not `Unknown`.
    pub summary: String,
}

impl AlarmInfo {
    /// The context of a condition.
    pub fn from_condition(c: &Condition) -> AlarmInfo {
        AlarmInfo {
            class: c.class,
            impact: c.impact,
            urgency: c.urgency,
            value: c.value,
            limit: c.limit,
            unit: c.unit.to_owned(),
            room: c.room.as_deref().map(str::to_owned),
            rack: c.rack.as_deref().map(str::to_owned),
            device: c.device.as_deref().map(str::to_owned),
            point: c.point.as_deref().map(str::to_owned),
            summary: c.summary.clone(),
        }
    }
}

/// One change of an alarm, for the audit trail and the incident layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// Which alarm.
    pub key: AlarmKey,
    /// State before.
    pub from: AlarmState,
    /// State after; equal to `from` for changes of the orthogonal flags (shelve, suppression,
    /// out of service) and for incident-only signals.
    pub to: AlarmState,
    /// When (the book's clock; never earlier than the alarm's previous transition).
    pub at: DateTime<Utc>,
    /// Why.
    pub cause: Cause,
    /// The operator, for operator actions; `None` for the system.
    pub actor: Option<String>,
    /// The operator's comment or reason, when given.
    pub comment: Option<String>,
    /// What the incident layer must do, if anything.
    pub incident: Option<IncidentSignal>,
    /// The incident this transition belongs to: the activation number that opened it. Set
    /// whenever an incident is open before or after the transition.
    pub incident_id: Option<u64>,
    /// The alarm's activation count after the transition (1 for its first raise).
    pub activation: u64,
    /// The alarm is shelved after the transition.
    pub shelved: bool,
    /// The alarm is out of service after the transition.
    pub out_of_service: bool,
    /// Suppressed by design or by a maintenance window, with the reason: recorded, not
    /// annunciated, no incident opened.
    pub suppressed: Option<String>,
    /// The alarm is chattering: it yields at most one incident while it is.
    pub chattering: bool,
    /// The alarm's context.
    pub info: AlarmInfo,
}

impl Transition {
    /// A stable dedup key for the incident of this transition, `site/rule[/scope]#N`, when the
    /// transition belongs to an incident. Equal across restarts and retries.
    pub fn incident_key(&self) -> Option<String> {
        self.incident_id.map(|n| format!("{}#{n}", self.key))
    }

    /// True when the transition is silenced (shelved, out of service or suppressed).
    pub fn silenced(&self) -> bool {
        self.shelved || self.out_of_service || self.suppressed.is_some()
    }
}

/// The lifecycle parameters an alarm was last applied with (the serializable copy of
/// [`AlarmParams`], so delays in progress keep their length across a restart).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Params {
    /// How long a condition must hold before the alarm raises.
    pub on_delay: Duration,
    /// How long a condition must be clear before the alarm clears.
    pub off_delay: Duration,
    /// Clear only when the margin inside the limit is at least this.
    pub deadband: f64,
    /// A latching alarm stays active until acknowledged after its return.
    pub latching: bool,
    /// This many raises and clears within `chatter_window` flag chattering (0: never).
    pub chatter_transitions: u32,
    /// The chattering window.
    pub chatter_window: Duration,
}

impl From<&AlarmParams> for Params {
    fn from(p: &AlarmParams) -> Params {
        Params {
            on_delay: p.on_delay,
            off_delay: p.off_delay,
            deadband: p.deadband,
            latching: p.latching,
            chatter_transitions: p.chatter_transitions,
            chatter_window: p.chatter_window,
        }
    }
}

/// Book-wide settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookConfig {
    /// The longest shelve an operator may ask for.
    pub max_shelve: Duration,
    /// The window of the annunciation rate (EEMUA 191: 10 min).
    pub flood_window: Duration,
    /// More annunciations than this within `flood_window` on one site is a flood (EEMUA: 10).
    pub flood_threshold: usize,
    /// An alarm active longer than this is standing (stale in ISA-18.2 terms; 24 h).
    pub standing_after: Duration,
    /// How many bad actors the KPI snapshot lists (10).
    pub bad_actors: usize,
}

impl Default for BookConfig {
    fn default() -> BookConfig {
        BookConfig {
            max_shelve: Duration::from_secs(8 * 3600),
            flood_window: Duration::from_secs(600),
            flood_threshold: 10,
            standing_after: Duration::from_secs(24 * 3600),
            bad_actors: 10,
        }
    }
}

/// Why an operator action or a suppression request was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AlarmError {
    /// No alarm with this key has been seen.
    #[error("no alarm {0}")]
    UnknownAlarm(AlarmKey),
    /// Acknowledge on an alarm that is normal or already acknowledged.
    #[error("alarm {key} has nothing to acknowledge (state {state:?})")]
    NothingToAcknowledge {
        /// The alarm.
        key: AlarmKey,
        /// Its state.
        state: AlarmState,
    },
    /// A shelve longer than the configured maximum.
    #[error("shelving for {requested:?} exceeds the maximum of {max:?}")]
    ShelveTooLong {
        /// What the operator asked for.
        requested: Duration,
        /// The configured maximum.
        max: Duration,
    },
    /// A shelve of zero length.
    #[error("a shelve needs a positive duration")]
    ShelveZero,
    /// Unshelve on an alarm that is not shelved.
    #[error("alarm {0} is not shelved")]
    NotShelved(AlarmKey),
    /// Out of service on an alarm already out of service.
    #[error("alarm {0} is already out of service")]
    AlreadyOutOfService(AlarmKey),
    /// Return to service on an alarm in service.
    #[error("alarm {0} is not out of service")]
    NotOutOfService(AlarmKey),
    /// A required text (user, reason, id) was empty.
    #[error("{0} must not be empty")]
    Missing(&'static str),
    /// A suppression id already in use.
    #[error("suppression {0:?} already exists")]
    DuplicateSuppression(String),
    /// No suppression with this id.
    #[error("no suppression {0:?}")]
    UnknownSuppression(String),
    /// A maintenance window id already in use.
    #[error("maintenance window {0:?} already exists")]
    DuplicateWindow(String),
    /// A maintenance window that ends before it starts.
    #[error("maintenance window {0:?} ends before it starts")]
    WindowEndsBeforeStart(String),
    /// No maintenance window with this id.
    #[error("no maintenance window {0:?}")]
    UnknownWindow(String),
}
