//! The incident model: incidents, their transitions and the pure `IncidentBook` that turns
//! alarm-side signals into incident transitions.
//!
//! Pure code over data and explicit time (invariant 2): no IO, no async, no randomness.
//! The wiring maps the alarm lifecycle's transitions onto [`AlarmSignal`]s; the outbox
//! stores every returned [`IncidentTransition`] before it counts as raised.
//!
//! Rules the book keeps (tested in `tests/incident_model.rs`):
//!
//! * **One incident per alarm activation, one open incident per alarm.** An alarm (rule,
//!   site and scope: an [`AlarmId`]) is an active member of at most one open incident.
//!   `Open` for an alarm that is already a member of an open incident refreshes it (or
//!   reactivates it when it had cleared) instead of opening another one.
//! * **Stable dedup key.** `{site}/{rule}/{scope or "-"}/{activation instant, UTC, ms}`
//!   of the opening alarm, the activation instant being the `now` given with `Open`,
//!   plus `/{n}` in the unlikely case the same alarm activates twice in one millisecond.
//!   Nothing random: replaying the same signals into a new book gives the same keys, and a
//!   book restored from its serialized state continues identically. The incident id is
//!   `inc-` and 16 hex digits of the key's FNV-1a 64 hash; the transition's idempotency
//!   key is `{dedup_key}:{sequence}` with the sequence counting from 1 per incident.
//! * **Cascade.** A new activation in the same site and [`ConditionClass`] joins the most
//!   recently opened open incident of that site and class when it comes within the
//!   grouping window (default 10 min, inclusive) of that incident's opening, or when it
//!   shares a non-empty scope with one of its members (an early warning on a sensor that
//!   turns into a breach of the same sensor 30 minutes later is the same incident).
//! * **Escalation.** Priority (from the urgency x impact matrix) only rises. When a joined
//!   or updated condition has a higher priority, the incident takes it, with its impact and
//!   urgency, and its due time becomes the earlier of the old due time and the new
//!   priority's target counted from the escalation instant.
//! * **Never an alarm without an incident.** `Update` of an alarm that is in no open
//!   incident (e.g. the book was pruned or lost while the alarm side kept its state) is
//!   treated as `Open`.
//! * **Resolution.** `Resolve` clears one member; the incident resolves when no member is
//!   active. Acknowledging a member alarm acknowledges its open incident, once until the
//!   incident escalates again.
//! * **IT disaster (Bencana TIK).** [`IncidentBook::tick`] escalates, once, an unresolved
//!   P1 of class power (utility, UPS, genset, fuel), cooling (cooling, temperature) or fire
//!   whose due time has come (`now >= due_at`), with the DRC fail-over reminder
//!   (facility-spec: very critical and critical systems fail over to the DRC within 4 h).

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::sla::{WorkingClock, due_at};
use crate::config::model::{Impact, Priority, PriorityPolicy, Urgency};
use crate::rules::condition::{Condition, ConditionClass, ConditionKey};

/// Default cascade grouping window.
pub const DEFAULT_GROUPING_WINDOW: TimeDelta = TimeDelta::minutes(10);

/// facility-spec: very critical and critical systems fail over to the DRC within 4 h.
pub const DRC_FAILOVER: TimeDelta = TimeDelta::hours(4);

/// Settings of the incident book (shipped defaults in [`IncidentSettings::default`]).
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentSettings {
    /// A new activation within this time of an open incident's opening (same site and
    /// class) joins it.
    pub grouping_window: TimeDelta,
    /// Fail-over deadline to the DRC, counted from the incident's opening.
    pub drc_failover: TimeDelta,
    /// The site id of the DRC, so a disaster AT the DRC gets the right reminder.
    pub drc_site: Option<String>,
}

impl Default for IncidentSettings {
    fn default() -> Self {
        IncidentSettings {
            grouping_window: DEFAULT_GROUPING_WINDOW,
            drc_failover: DRC_FAILOVER,
            drc_site: Some("drc".to_owned()),
        }
    }
}

/// An alarm identity, borrowed: from a rule's [`ConditionKey`], from the alarm side's
/// owned key, or from a stored [`AlarmRef`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AlarmId<'a> {
    /// Rule id.
    pub rule: &'a str,
    /// Site id.
    pub site: &'a str,
    /// Scope ("" for site-wide).
    pub scope: &'a str,
}

impl<'a> From<&'a ConditionKey> for AlarmId<'a> {
    fn from(key: &'a ConditionKey) -> Self {
        AlarmId {
            rule: key.rule,
            site: &key.site,
            scope: &key.scope,
        }
    }
}

impl<'a> From<&'a AlarmRef> for AlarmId<'a> {
    fn from(r: &'a AlarmRef) -> Self {
        AlarmId {
            rule: &r.rule,
            site: &r.site,
            scope: &r.scope,
        }
    }
}

/// What an incident needs to know of a raised alarm. Borrowed, so the wiring can build it
/// from a [`Condition`] (`From`) or from the alarm lifecycle's stored context alike.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlarmFacts<'a> {
    /// The alarm.
    pub alarm: AlarmId<'a>,
    /// Its class (cascade grouping, IT disaster).
    pub class: ConditionClass,
    /// Impact of the rule.
    pub impact: Impact,
    /// Urgency of the rule.
    pub urgency: Urgency,
    /// The value that decided.
    pub value: Option<f64>,
    /// Its limit.
    pub limit: Option<f64>,
    /// Their unit.
    pub unit: &'a str,
    /// Room, when it applies.
    pub room: Option<&'a str>,
    /// Rack, when it applies.
    pub rack: Option<&'a str>,
    /// Device, when it applies.
    pub device: Option<&'a str>,
    /// Point, when it applies.
    pub point: Option<&'a str>,
    /// One line for humans.
    pub summary: &'a str,
    /// Who was badged in the alarm's room when it raised (life safety: fire alarms; looked
    /// up by the alarm task from the access occupancy). `None`: not looked up.
    pub occupants: Option<&'a [String]>,
}

impl<'a> From<&'a Condition> for AlarmFacts<'a> {
    fn from(c: &'a Condition) -> Self {
        AlarmFacts {
            alarm: AlarmId::from(&c.key),
            class: c.class,
            impact: c.impact,
            urgency: c.urgency,
            value: c.value,
            limit: c.limit,
            unit: c.unit,
            room: c.room.as_deref(),
            rack: c.rack.as_deref(),
            device: c.device.as_deref(),
            point: c.point.as_deref(),
            summary: &c.summary,
            occupants: None,
        }
    }
}

/// What the alarm side tells the book.
#[derive(Debug, Clone, Copy)]
pub enum AlarmSignal<'a> {
    /// The alarm raised (after its on-delay): open or join an incident.
    Open(AlarmFacts<'a>),
    /// The raised alarm's context changed (value, or a higher priority).
    Update(AlarmFacts<'a>),
    /// An operator acknowledged the alarm.
    Acknowledged {
        /// The alarm.
        alarm: AlarmId<'a>,
        /// Who acknowledged (user name).
        by: &'a str,
        /// Their comment.
        comment: &'a str,
    },
    /// The alarm cleared and stayed clear past its off-delay.
    Resolve(AlarmId<'a>),
}

impl<'a> AlarmSignal<'a> {
    /// `Open` from a rule's condition.
    pub fn open(c: &'a Condition) -> Self {
        AlarmSignal::Open(c.into())
    }

    /// `Update` from a rule's condition.
    pub fn update(c: &'a Condition) -> Self {
        AlarmSignal::Update(c.into())
    }

    /// `Acknowledged` of a rule's alarm.
    pub fn acknowledged(key: &'a ConditionKey, by: &'a str, comment: &'a str) -> Self {
        AlarmSignal::Acknowledged {
            alarm: key.into(),
            by,
            comment,
        }
    }

    /// `Resolve` of a rule's alarm.
    pub fn resolve(key: &'a ConditionKey) -> Self {
        AlarmSignal::Resolve(key.into())
    }
}

/// Incident states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    /// Raised, not yet acknowledged.
    Open,
    /// An operator acknowledged it.
    Acknowledged,
    /// Priority rose or it became an IT disaster, not acknowledged since.
    Escalated,
    /// Every member alarm cleared.
    Resolved,
}

impl IncidentState {
    /// `open`, `acknowledged`, `escalated`, `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentState::Open => "open",
            IncidentState::Acknowledged => "acknowledged",
            IncidentState::Escalated => "escalated",
            IncidentState::Resolved => "resolved",
        }
    }
}

/// The webhook event a transition maps to (`dcguard.incident.opened|updated|resolved`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentEvent {
    /// The incident was opened.
    Opened,
    /// Anything in between.
    Updated,
    /// The incident was resolved.
    Resolved,
}

/// An alarm identity in serializable form (a [`ConditionKey`] borrows its rule id from
/// the catalogue and cannot be deserialized).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AlarmRef {
    /// Rule id.
    pub rule: String,
    /// Site id.
    pub site: String,
    /// Scope ("" for site-wide).
    pub scope: String,
}

impl AlarmRef {
    /// True when this refers to `alarm`.
    pub fn is(&self, alarm: AlarmId<'_>) -> bool {
        self.rule == alarm.rule && self.site == alarm.site && self.scope == alarm.scope
    }
}

impl From<AlarmId<'_>> for AlarmRef {
    fn from(a: AlarmId<'_>) -> Self {
        AlarmRef {
            rule: a.rule.to_owned(),
            site: a.site.to_owned(),
            scope: a.scope.to_owned(),
        }
    }
}

impl From<&ConditionKey> for AlarmRef {
    fn from(key: &ConditionKey) -> Self {
        AlarmId::from(key).into()
    }
}

impl std::fmt::Display for AlarmRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.scope.is_empty() {
            write!(f, "{}/{}", self.site, self.rule)
        } else {
            write!(f, "{}/{} {}", self.site, self.rule, self.scope)
        }
    }
}

/// One alarm joined to an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// The alarm.
    pub alarm: AlarmRef,
    /// Still raised.
    pub active: bool,
    /// Its priority from the matrix.
    #[serde(with = "priority_serde")]
    pub priority: Priority,
    /// When it (last) joined or reactivated.
    pub activated_at: DateTime<Utc>,
    /// When it last cleared.
    pub cleared_at: Option<DateTime<Utc>>,
    /// Its latest one-line summary.
    pub summary: String,
    /// Its latest value, limit and unit.
    pub value: Option<f64>,
    /// The limit.
    pub limit: Option<f64>,
    /// The unit.
    pub unit: String,
    /// Its room, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// Who was badged in its room when it joined (fire alarms; `None`: not looked up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occupants: Option<Vec<String>>,
}

/// An acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acknowledgement {
    /// Who.
    pub by: String,
    /// Their comment.
    pub comment: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// What happened in a transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TransitionKind {
    /// The incident opened with its first alarm.
    Opened,
    /// Another alarm of the cascade joined, without raising the priority.
    Joined {
        /// The alarm that joined.
        alarm: AlarmRef,
    },
    /// A member alarm that had cleared raised again while the incident was open.
    Reactivated {
        /// The alarm.
        alarm: AlarmRef,
    },
    /// The priority rose (e.g. an early warning became a breach).
    Escalated {
        /// The alarm that raised it.
        alarm: AlarmRef,
        /// Priority before.
        #[serde(with = "priority_serde")]
        from: Priority,
        /// Priority after.
        #[serde(with = "priority_serde")]
        to: Priority,
        /// True when the alarm joined with this transition.
        joined: bool,
    },
    /// An operator acknowledged.
    Acknowledged {
        /// Who.
        by: String,
        /// Their comment.
        comment: String,
    },
    /// One member cleared; others are still active.
    ConditionCleared {
        /// The alarm.
        alarm: AlarmRef,
        /// Members still active.
        still_active: usize,
    },
    /// Unresolved P1 on power, cooling or fire past its target: IT disaster (Bencana TIK).
    Disaster,
    /// Every member cleared.
    Resolved,
}

impl TransitionKind {
    /// The webhook event this transition is delivered as.
    pub fn event(&self) -> IncidentEvent {
        match self {
            TransitionKind::Opened => IncidentEvent::Opened,
            TransitionKind::Resolved => IncidentEvent::Resolved,
            _ => IncidentEvent::Updated,
        }
    }
}

/// The incident's fields at one transition: what a receiver is sent (DESIGN "Wire
/// contracts", incident webhook `data`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentSnapshot {
    /// Incident id.
    pub id: String,
    /// Stable dedup key (PagerDuty `dedup_key`, ServiceNow `correlation_id`).
    pub dedup_key: String,
    /// State after the transition.
    pub state: IncidentState,
    /// Priority after the transition.
    #[serde(with = "priority_serde")]
    pub priority: Priority,
    /// Impact.
    #[serde(with = "impact_serde")]
    pub impact: Impact,
    /// Urgency.
    #[serde(with = "urgency_serde")]
    pub urgency: Urgency,
    /// When it opened.
    pub opened_at: DateTime<Utc>,
    /// SLA due time.
    pub due_at: DateTime<Utc>,
    /// Site id.
    pub site: String,
    /// Room, rack, device and point of the leading condition, where they apply.
    pub room: Option<String>,
    /// Rack.
    pub rack: Option<String>,
    /// Device.
    pub device: Option<String>,
    /// Point.
    pub point: Option<String>,
    /// Rule id of the leading condition.
    pub condition: String,
    /// Condition class.
    #[serde(with = "class_serde")]
    pub class: ConditionClass,
    /// Value, limit and unit of the leading condition.
    pub value: Option<f64>,
    /// Limit.
    pub limit: Option<f64>,
    /// Unit.
    pub unit: String,
    /// One line for a ticket list.
    pub summary: String,
    /// Multi-line details: members, acknowledgement, IT-disaster reminder.
    pub details: String,
}

/// One change of an incident, with a stable idempotency key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentTransition {
    /// `{dedup_key}:{sequence}`: the `Idempotency-Key` of delivery.
    pub idempotency_key: String,
    /// 1, 2, 3... per incident.
    pub sequence: u32,
    /// When (the signal's explicit time).
    pub at: DateTime<Utc>,
    /// What happened.
    pub kind: TransitionKind,
    /// One line for humans (work note).
    pub note: String,
    /// The incident after the transition.
    pub incident: IncidentSnapshot,
}

impl IncidentTransition {
    /// The webhook event.
    pub fn event(&self) -> IncidentEvent {
        self.kind.event()
    }
}

/// An incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// `inc-` and 16 hex digits of the dedup key's FNV-1a hash.
    pub id: String,
    /// Stable dedup key.
    pub dedup_key: String,
    /// State.
    pub state: IncidentState,
    /// Priority (only rises).
    #[serde(with = "priority_serde")]
    pub priority: Priority,
    /// Impact of the leading condition.
    #[serde(with = "impact_serde")]
    pub impact: Impact,
    /// Urgency of the leading condition.
    #[serde(with = "urgency_serde")]
    pub urgency: Urgency,
    /// When it opened.
    pub opened_at: DateTime<Utc>,
    /// SLA due time.
    pub due_at: DateTime<Utc>,
    /// Site id.
    pub site: String,
    /// Room of the leading condition.
    pub room: Option<String>,
    /// Rack of the leading condition.
    pub rack: Option<String>,
    /// Device of the leading condition.
    pub device: Option<String>,
    /// Point of the leading condition.
    pub point: Option<String>,
    /// Rule id of the leading condition (the opener, or the alarm that escalated it).
    pub condition: String,
    /// Condition class (shared by every member).
    #[serde(with = "class_serde")]
    pub class: ConditionClass,
    /// Value of the leading condition.
    pub value: Option<f64>,
    /// Limit of the leading condition.
    pub limit: Option<f64>,
    /// Unit of the leading condition.
    pub unit: String,
    /// One line for a ticket list (the leading condition's).
    pub summary: String,
    /// Multi-line details, rebuilt at every change.
    pub details: String,
    /// Member alarms, in joining order.
    pub members: Vec<Member>,
    /// Index in `members` of the leading condition.
    pub lead: usize,
    /// The last acknowledgement.
    pub acknowledged: Option<Acknowledgement>,
    /// When it became an IT disaster (Bencana TIK).
    pub disaster_at: Option<DateTime<Utc>>,
    /// When it resolved.
    pub resolved_at: Option<DateTime<Utc>>,
    /// Every transition so far, in order.
    pub transitions: Vec<IncidentTransition>,
}

impl Incident {
    /// True until resolved.
    pub fn is_open(&self) -> bool {
        self.state != IncidentState::Resolved
    }

    /// The active member alarms.
    pub fn active_members(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.active)
    }

    /// The wire fields now.
    pub fn snapshot(&self) -> IncidentSnapshot {
        IncidentSnapshot {
            id: self.id.clone(),
            dedup_key: self.dedup_key.clone(),
            state: self.state,
            priority: self.priority,
            impact: self.impact,
            urgency: self.urgency,
            opened_at: self.opened_at,
            due_at: self.due_at,
            site: self.site.clone(),
            room: self.room.clone(),
            rack: self.rack.clone(),
            device: self.device.clone(),
            point: self.point.clone(),
            condition: self.condition.clone(),
            class: self.class,
            value: self.value,
            limit: self.limit,
            unit: self.unit.clone(),
            summary: self.summary.clone(),
            details: self.details.clone(),
        }
    }

    fn member_index(&self, alarm: AlarmId<'_>) -> Option<usize> {
        self.members.iter().position(|m| m.alarm.is(alarm))
    }

    /// Takes the leading fields from a condition.
    fn lead_from(&mut self, c: &AlarmFacts<'_>) {
        self.condition = c.alarm.rule.to_owned();
        self.impact = c.impact;
        self.urgency = c.urgency;
        self.room = c.room.map(str::to_owned);
        self.rack = c.rack.map(str::to_owned);
        self.device = c.device.map(str::to_owned);
        self.point = c.point.map(str::to_owned);
        self.value = c.value;
        self.limit = c.limit;
        self.unit = c.unit.to_owned();
        self.summary = c.summary.to_owned();
    }
}

/// The serializable state of a book (for the store).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookState {
    /// Every incident not yet pruned, in opening order.
    pub incidents: Vec<Incident>,
}

/// The pure incident book.
#[derive(Debug, Clone)]
pub struct IncidentBook {
    settings: IncidentSettings,
    policy: PriorityPolicy,
    clock: WorkingClock,
    incidents: Vec<Incident>,
}

impl IncidentBook {
    /// An empty book.
    pub fn new(settings: IncidentSettings, policy: PriorityPolicy, clock: WorkingClock) -> Self {
        Self::restore(settings, policy, clock, BookState { incidents: vec![] })
    }

    /// A book continuing from a stored state.
    pub fn restore(
        settings: IncidentSettings,
        policy: PriorityPolicy,
        clock: WorkingClock,
        state: BookState,
    ) -> Self {
        IncidentBook {
            settings,
            policy,
            clock,
            incidents: state.incidents,
        }
    }

    /// The state to store.
    pub fn state(&self) -> BookState {
        BookState {
            incidents: self.incidents.clone(),
        }
    }

    /// Every incident, in opening order.
    pub fn incidents(&self) -> &[Incident] {
        &self.incidents
    }

    /// The incident with this id.
    pub fn incident(&self, id: &str) -> Option<&Incident> {
        self.incidents.iter().find(|i| i.id == id)
    }

    /// The open incident `alarm` is a member of (active or cleared), if any.
    pub fn open_incident_of<'k>(&self, alarm: impl Into<AlarmId<'k>>) -> Option<&Incident> {
        self.open_index_of(alarm.into()).map(|i| &self.incidents[i])
    }

    /// Drops resolved incidents resolved before `before` (after the outbox delivered them).
    pub fn prune_resolved(&mut self, before: DateTime<Utc>) -> usize {
        let n = self.incidents.len();
        self.incidents
            .retain(|i| i.is_open() || i.resolved_at.is_none_or(|r| r >= before));
        n - self.incidents.len()
    }

    /// Applies one alarm-side signal at `now`; returns the transitions it caused (often
    /// none, e.g. a value update without escalation).
    pub fn apply(
        &mut self,
        signal: AlarmSignal<'_>,
        now: DateTime<Utc>,
    ) -> Vec<IncidentTransition> {
        match signal {
            AlarmSignal::Open(c) | AlarmSignal::Update(c) => self.raise(&c, now),
            AlarmSignal::Acknowledged { alarm, by, comment } => {
                self.acknowledge(alarm, by, comment, now)
            }
            AlarmSignal::Resolve(alarm) => self.resolve(alarm, now),
        }
    }

    /// Escalates, once each, open P1 incidents of class power, cooling or fire whose due
    /// time has come, as IT disasters (Bencana TIK).
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<IncidentTransition> {
        let tz = self.clock.time_zone();
        let mut out = vec![];
        for inc in self.incidents.iter_mut() {
            if inc.is_open()
                && inc.priority == Priority::P1
                && is_disaster_class(inc.class)
                && inc.disaster_at.is_none()
                && now >= inc.due_at
            {
                inc.disaster_at = Some(now);
                inc.state = IncidentState::Escalated;
                let note = disaster_text(inc, &self.settings, tz);
                rebuild_details(inc, &self.settings, tz);
                out.push(push_transition(inc, now, TransitionKind::Disaster, note));
            }
        }
        out
    }

    fn open_index_of(&self, alarm: AlarmId<'_>) -> Option<usize> {
        self.incidents
            .iter()
            .position(|i| i.is_open() && i.member_index(alarm).is_some())
    }

    /// `Open` and `Update`: refresh, reactivate, escalate, join or open.
    fn raise(&mut self, c: &AlarmFacts<'_>, now: DateTime<Utc>) -> Vec<IncidentTransition> {
        let priority = self.policy.priority(c.urgency, c.impact);
        if let Some(i) = self.open_index_of(c.alarm) {
            return self.refresh_member(i, c, priority, now);
        }
        match self.cascade_target(c, now) {
            Some(i) => self.join(i, c, priority, now),
            None => vec![self.open(c, priority, now)],
        }
    }

    fn refresh_member(
        &mut self,
        i: usize,
        c: &AlarmFacts<'_>,
        priority: Priority,
        now: DateTime<Utc>,
    ) -> Vec<IncidentTransition> {
        let tz = self.clock.time_zone();
        let inc = &mut self.incidents[i];
        let Some(m) = inc.member_index(c.alarm) else {
            return vec![];
        };
        let was_active = inc.members[m].active;
        let member = &mut inc.members[m];
        member.active = true;
        member.priority = member.priority.min(priority);
        member.summary = c.summary.to_owned();
        member.value = c.value;
        member.limit = c.limit;
        member.unit = c.unit.to_owned();
        if !was_active {
            member.activated_at = now;
            member.cleared_at = None;
        }
        let alarm = member.alarm.clone();
        if priority < inc.priority {
            let t = self.escalate(i, m, c, priority, now, false);
            return vec![t];
        }
        if inc.lead == m {
            inc.lead_from(c);
        }
        rebuild_details(inc, &self.settings, tz);
        if was_active {
            return vec![];
        }
        let note = format!("reactivated: {}", c.summary);
        vec![push_transition(
            inc,
            now,
            TransitionKind::Reactivated { alarm },
            note,
        )]
    }

    fn join(
        &mut self,
        i: usize,
        c: &AlarmFacts<'_>,
        priority: Priority,
        now: DateTime<Utc>,
    ) -> Vec<IncidentTransition> {
        let tz = self.clock.time_zone();
        let inc = &mut self.incidents[i];
        inc.members.push(new_member(c, priority, now));
        let m = inc.members.len() - 1;
        if priority < inc.priority {
            return vec![self.escalate(i, m, c, priority, now, true)];
        }
        rebuild_details(inc, &self.settings, tz);
        let alarm = AlarmRef::from(c.alarm);
        let note = format!("joined: {}", c.summary);
        vec![push_transition(
            inc,
            now,
            TransitionKind::Joined { alarm },
            note,
        )]
    }

    fn escalate(
        &mut self,
        i: usize,
        m: usize,
        c: &AlarmFacts<'_>,
        priority: Priority,
        now: DateTime<Utc>,
        joined: bool,
    ) -> IncidentTransition {
        let tz = self.clock.time_zone();
        let new_due = due_at(now, priority, &self.policy, &self.clock);
        let inc = &mut self.incidents[i];
        let from = inc.priority;
        inc.priority = priority;
        inc.due_at = inc.due_at.min(new_due);
        inc.lead = m;
        inc.lead_from(c);
        inc.state = IncidentState::Escalated;
        rebuild_details(inc, &self.settings, tz);
        let note = format!(
            "escalated {} -> {}, due {}: {}",
            from.as_str(),
            priority.as_str(),
            local(inc.due_at, tz),
            c.summary
        );
        let kind = TransitionKind::Escalated {
            alarm: AlarmRef::from(c.alarm),
            from,
            to: priority,
            joined,
        };
        push_transition(inc, now, kind, note)
    }

    /// The open incident a new activation joins, if any (see the module documentation).
    fn cascade_target(&self, c: &AlarmFacts<'_>, now: DateTime<Utc>) -> Option<usize> {
        let window = self.settings.grouping_window;
        self.incidents
            .iter()
            .enumerate()
            .filter(|(_, inc)| inc.is_open() && inc.class == c.class && inc.site == c.alarm.site)
            .filter(|(_, inc)| {
                now - inc.opened_at <= window
                    || (!c.alarm.scope.is_empty()
                        && inc.members.iter().any(|m| m.alarm.scope == c.alarm.scope))
            })
            .max_by_key(|(idx, inc)| (inc.opened_at, *idx))
            .map(|(idx, _)| idx)
    }

    fn open(
        &mut self,
        c: &AlarmFacts<'_>,
        priority: Priority,
        now: DateTime<Utc>,
    ) -> IncidentTransition {
        let tz = self.clock.time_zone();
        let dedup_key = self.fresh_dedup_key(c.alarm, now);
        let mut inc = Incident {
            id: incident_id(&dedup_key),
            dedup_key,
            state: IncidentState::Open,
            priority,
            impact: c.impact,
            urgency: c.urgency,
            opened_at: now,
            due_at: due_at(now, priority, &self.policy, &self.clock),
            site: c.alarm.site.to_owned(),
            room: None,
            rack: None,
            device: None,
            point: None,
            condition: String::new(),
            class: c.class,
            value: None,
            limit: None,
            unit: String::new(),
            summary: String::new(),
            details: String::new(),
            members: vec![new_member(c, priority, now)],
            lead: 0,
            acknowledged: None,
            disaster_at: None,
            resolved_at: None,
            transitions: vec![],
        };
        inc.lead_from(c);
        rebuild_details(&mut inc, &self.settings, tz);
        let note = format!(
            "opened {} due {}: {}",
            priority.as_str(),
            local(inc.due_at, tz),
            c.summary
        );
        let t = push_transition(&mut inc, now, TransitionKind::Opened, note);
        self.incidents.push(inc);
        t
    }

    fn fresh_dedup_key(&self, key: AlarmId<'_>, at: DateTime<Utc>) -> String {
        let scope = if key.scope.is_empty() { "-" } else { key.scope };
        let base = format!(
            "{}/{}/{}/{}",
            key.site,
            key.rule,
            scope,
            at.format("%Y%m%dT%H%M%S%.3fZ")
        );
        let taken = |k: &str| self.incidents.iter().any(|i| i.dedup_key == k);
        if !taken(&base) {
            return base;
        }
        (2u32..)
            .map(|n| format!("{base}/{n}"))
            .find(|k| !taken(k))
            .unwrap_or(base) // unreachable: the incidents are finite
    }

    fn acknowledge(
        &mut self,
        alarm: AlarmId<'_>,
        by: &str,
        comment: &str,
        now: DateTime<Utc>,
    ) -> Vec<IncidentTransition> {
        let tz = self.clock.time_zone();
        let Some(i) = self.open_index_of(alarm) else {
            return vec![];
        };
        let inc = &mut self.incidents[i];
        if inc.state == IncidentState::Acknowledged {
            return vec![];
        }
        inc.state = IncidentState::Acknowledged;
        inc.acknowledged = Some(Acknowledgement {
            by: by.to_owned(),
            comment: comment.to_owned(),
            at: now,
        });
        rebuild_details(inc, &self.settings, tz);
        let note = format!("acknowledged by {by}: {comment}");
        let kind = TransitionKind::Acknowledged {
            by: by.to_owned(),
            comment: comment.to_owned(),
        };
        vec![push_transition(inc, now, kind, note)]
    }

    fn resolve(&mut self, alarm: AlarmId<'_>, now: DateTime<Utc>) -> Vec<IncidentTransition> {
        let tz = self.clock.time_zone();
        let Some(i) = self.open_index_of(alarm) else {
            return vec![];
        };
        let inc = &mut self.incidents[i];
        let Some(m) = inc.member_index(alarm) else {
            return vec![];
        };
        if !inc.members[m].active {
            return vec![];
        }
        inc.members[m].active = false;
        inc.members[m].cleared_at = Some(now);
        let alarm = inc.members[m].alarm.clone();
        let still_active = inc.active_members().count();
        if still_active == 0 {
            inc.state = IncidentState::Resolved;
            inc.resolved_at = Some(now);
            rebuild_details(inc, &self.settings, tz);
            let note = format!("resolved: every condition cleared ({alarm} last)");
            return vec![push_transition(inc, now, TransitionKind::Resolved, note)];
        }
        rebuild_details(inc, &self.settings, tz);
        let note = format!("{alarm} cleared; {still_active} condition(s) still active");
        let kind = TransitionKind::ConditionCleared {
            alarm,
            still_active,
        };
        vec![push_transition(inc, now, kind, note)]
    }
}

fn new_member(c: &AlarmFacts<'_>, priority: Priority, now: DateTime<Utc>) -> Member {
    Member {
        alarm: AlarmRef::from(c.alarm),
        active: true,
        priority,
        activated_at: now,
        cleared_at: None,
        summary: c.summary.to_owned(),
        value: c.value,
        limit: c.limit,
        unit: c.unit.to_owned(),
        room: c.room.map(str::to_owned),
        occupants: c.occupants.map(<[String]>::to_vec),
    }
}

fn push_transition(
    inc: &mut Incident,
    at: DateTime<Utc>,
    kind: TransitionKind,
    note: String,
) -> IncidentTransition {
    let sequence = u32::try_from(inc.transitions.len())
        .unwrap_or(u32::MAX - 1)
        .saturating_add(1);
    let t = IncidentTransition {
        idempotency_key: format!("{}:{sequence}", inc.dedup_key),
        sequence,
        at,
        kind,
        note,
        incident: inc.snapshot(),
    };
    inc.transitions.push(t.clone());
    t
}

/// The classes whose unresolved P1 becomes an IT disaster: power, cooling, fire.
pub fn is_disaster_class(class: ConditionClass) -> bool {
    use ConditionClass as C;
    matches!(
        class,
        C::Utility | C::Ups | C::Genset | C::Fuel | C::Cooling | C::Temperature | C::Fire
    )
}

fn disaster_area(class: ConditionClass) -> &'static str {
    use ConditionClass as C;
    match class {
        C::Utility | C::Ups | C::Genset | C::Fuel => "power",
        C::Fire => "fire",
        _ => "cooling",
    }
}

fn disaster_text(inc: &Incident, settings: &IncidentSettings, tz: Tz) -> String {
    let failover_by = inc
        .opened_at
        .checked_add_signed(settings.drc_failover)
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    let hours = settings.drc_failover.num_minutes() as f64 / 60.0;
    let mut text = format!(
        "Bencana TIK (IT disaster): P1 {} incident at {} unresolved past its target (due {}). \
         Handle as P1 under the IT continuity procedure.",
        disaster_area(inc.class),
        inc.site,
        local(inc.due_at, tz),
    );
    if settings.drc_site.as_deref() == Some(inc.site.as_str()) {
        text.push_str(&format!(
            " The affected site is the DRC itself: keep production at the DC and restore the \
             DRC's readiness (fail-over target {hours} h, by {}).",
            local(failover_by, tz)
        ));
    } else {
        text.push_str(&format!(
            " DRC fail-over reminder: fail over very critical and critical systems to the DRC \
             within {hours} h of the disruption, by {}.",
            local(failover_by, tz)
        ));
    }
    text
}

fn rebuild_details(inc: &mut Incident, settings: &IncidentSettings, tz: Tz) {
    use std::fmt::Write;
    let mut d = String::new();
    let active = inc.active_members().count();
    let _ = writeln!(
        d,
        "{} {} at {}, opened {}, due {}.",
        inc.priority.as_str(),
        inc.state.as_str(),
        inc.site,
        local(inc.opened_at, tz),
        local(inc.due_at, tz)
    );
    let _ = writeln!(
        d,
        "Conditions ({} joined, {active} active):",
        inc.members.len()
    );
    for m in &inc.members {
        let status = match m.cleared_at {
            Some(at) if !m.active => format!("cleared {}", local(at, tz)),
            _ => "active".to_owned(),
        };
        let _ = writeln!(
            d,
            "- [{status}] {} {}: {}",
            m.alarm,
            m.priority.as_str(),
            m.summary
        );
        if let Some(people) = &m.occupants {
            let room = m.room.as_deref().unwrap_or("the room");
            if people.is_empty() {
                let _ = writeln!(
                    d,
                    "  Nobody badged in {room} when it raised (readers' occupancy: a tailgater is not counted)."
                );
            } else {
                let _ = writeln!(
                    d,
                    "  LIFE SAFETY: {} badged in {room} when it raised: {}.",
                    people.len(),
                    people.join("; ")
                );
            }
        }
    }
    if let Some(a) = &inc.acknowledged {
        let _ = writeln!(
            d,
            "Acknowledged by {} at {}: {}",
            a.by,
            local(a.at, tz),
            a.comment
        );
    }
    if inc.disaster_at.is_some() {
        let _ = writeln!(d, "{}", disaster_text(inc, settings, tz));
    }
    inc.details = d.trim_end().to_owned();
}

fn local(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string()
}

/// `inc-` and the FNV-1a 64 hash of the dedup key, hex (stable across builds and
/// versions, unlike `std`'s hasher).
fn incident_id(dedup_key: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in dedup_key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("inc-{h:016x}")
}

/// `P1`..`P5` (config's `Priority` only derives `Deserialize`).
mod priority_serde {
    use super::Priority;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &Priority, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(p.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Priority, D::Error> {
        Priority::deserialize(d)
    }
}

/// Three-level scale as `high` / `medium` / `low`.
macro_rules! level_serde {
    ($module:ident, $ty:ident) => {
        mod $module {
            use super::$ty;
            use serde::{Deserialize, Deserializer, Serializer, de::Error};

            pub fn serialize<S: Serializer>(v: &$ty, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(match v {
                    $ty::High => "high",
                    $ty::Medium => "medium",
                    $ty::Low => "low",
                })
            }

            pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                match String::deserialize(d)?.as_str() {
                    "high" => Ok($ty::High),
                    "medium" => Ok($ty::Medium),
                    "low" => Ok($ty::Low),
                    other => Err(D::Error::custom(format!(
                        "unknown level {other:?}; expected high, medium or low"
                    ))),
                }
            }
        }
    };
}
level_serde!(impact_serde, Impact);
level_serde!(urgency_serde, Urgency);

/// Condition classes by their variant name (`Temperature`, `RackPower`, ...).
/// `ConditionClass` has no serde derives; a class added later serializes by name and is
/// read back once it is listed in `KNOWN`.
mod class_serde {
    use super::ConditionClass;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    const KNOWN: [ConditionClass; 13] = ConditionClass::ALL;

    pub fn serialize<S: Serializer>(c: &ConditionClass, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{c:?}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ConditionClass, D::Error> {
        let name = String::deserialize(d)?;
        KNOWN
            .into_iter()
            .find(|c| format!("{c:?}") == name)
            .ok_or_else(|| D::Error::custom(format!("unknown condition class {name:?}")))
    }
}
