//! `AlarmBook`: the ISA-18.2 state machine of every alarm, driven by rule verdicts, operator
//! actions and clock ticks with explicit time, and the incident signals it derives.
//!
//! # Semantics (the decisions this file makes)
//!
//! * **Time.** Every call takes `now`; the book keeps the latest `now` it saw as its clock and
//!   never runs it backwards (an earlier `now` counts as the clock), so transitions are
//!   monotonic in time. A verdict whose `Condition::at` is older than the last verdict applied
//!   to the same alarm is late and is ignored (counted in [`AlarmBook::late_verdicts`]): a late
//!   reading never regresses state. Delays are measured on the book's clock.
//! * **Process state and delays.** `Active` verdicts must hold for `on_delay` before the alarm
//!   raises; counted `Clear` verdicts must hold for `off_delay` before it clears. A delay
//!   completes on the first verdict or [`AlarmBook::tick`] at or after its due time (exact at
//!   the boundary; with a zero delay the verdict itself completes it) while the latest verdict
//!   still agrees; the transition is stamped with the time of that call.
//! * **Deadband.** `Clear { margin: Some(m) }` with `m < deadband` (or NaN) is not a clear: it
//!   restarts a pending off-delay, and since the condition does not hold either, it also
//!   restarts a pending on-delay. `Clear { margin: None }` (discrete input) is always a clear.
//! * **Unknown (invariant 5).** `Unknown` never clears: it restarts a pending off-delay, so a
//!   clear needs `off_delay` of good clear verdicts after the last bad one. It neither starts
//!   nor restarts a pending on-delay (bad data is no evidence either way and must not postpone
//!   an alarm), and an on-delay cannot complete while the latest verdict is `Unknown`: the raise
//!   waits for the next good `Active` verdict. A normal alarm stays normal, an active one active.
//! * **States.** Raise: `Normal`/`ReturnedUnacked` -> `ActiveUnacked` (a new activation).
//!   Clear: `ActiveUnacked` -> `ReturnedUnacked`, `ActiveAcked` -> `Normal`. Acknowledge:
//!   `ActiveUnacked` -> `ActiveAcked`, `ReturnedUnacked` -> `Normal`.
//! * **Latching.** A latching alarm does not leave the active states when its condition clears:
//!   it goes (or stays) `ActiveUnacked`, latched, and only an acknowledgement after the return
//!   brings it to `Normal`. A raise while latched is not a new activation.
//! * **Shelve, out of service, suppression** are flags orthogonal to the state (OPC UA
//!   Part 9): the alarm is still evaluated and every transition recorded, flagged; no incident
//!   opens while any of them applies. An incident already open stays open and is still
//!   resolved when the alarm clears. When the last of them ends while the alarm is active and
//!   its activation has no incident yet, the incident opens then (re-notification at the end
//!   of a shelve or window). Maintenance windows and suppression by design never cover Fire or
//!   Water alarms. Operator actions act on the state as of the last verdict or tick; they do
//!   not complete delays or expiries themselves.
//! * **Incidents (invariant 6).** At most one incident per activation: `Open` when an active,
//!   unsilenced alarm's activation has none; `Resolve` when the alarm leaves the active states
//!   (for a latching alarm: at the reset acknowledgement); every other transition while an
//!   incident is open says `Update`.
//! * **Chattering.** Raises and clears are counted over `chatter_window` (an event exactly one
//!   window old no longer counts); `chatter_transitions` of them flag the alarm chattering. While
//!   it chatters its open incident is not resolved and a raise joins it (`Update`) instead of
//!   opening another. The incident is held the same way while the window holds two or more
//!   changes (a clear soon after the raise may be the start of chattering): so a chattering
//!   alarm yields at most one incident per episode, the one its first raise opened, instead of
//!   one per toggle until the flag trips. When the window holds at most one change (the clear)
//!   and the alarm is not chattering, the held incident is resolved if the alarm is clear
//!   (cause `ChatterEnded`). The cost: the incident of an activation shorter than the window
//!   resolves when the raise leaves the window, not at the clear. `chatter_transitions = 0`
//!   turns both off.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Deserializer, Serialize};

use crate::rules::condition::{AlarmParams, Condition, Verdict};

use super::kpi::{self, Kpis};
use super::names;
use super::suppression::{DesignSuppression, MaintenanceWindow, SuppressTarget};
use super::types::{
    AlarmError, AlarmInfo, AlarmKey, AlarmState, BookConfig, Cause, IncidentSignal, Params,
    Transition,
};

/// A timed shelve in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shelf {
    /// Who shelved.
    pub user: String,
    /// Why.
    pub reason: String,
    /// Since when.
    pub since: DateTime<Utc>,
    /// Until when (the alarm unshelves itself at this instant).
    pub until: DateTime<Utc>,
}

/// An alarm taken out of service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutOfService {
    /// Who.
    pub user: String,
    /// Why.
    pub reason: String,
    /// Since when.
    pub since: DateTime<Utc>,
}

/// The kind of the latest verdict applied to an alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Seen {
    /// The condition holds.
    Active,
    /// A clear that counts (outside the deadband, or discrete).
    Clear,
    /// A clear inside the deadband: not a clear.
    InsideDeadband,
    /// Bad or stale inputs.
    Unknown,
}

/// One alarm: its state, its delays in progress, its flags and its counters. Read-only outside
/// the book.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alarm {
    /// Identity.
    pub key: AlarmKey,
    /// Context from the latest verdict.
    pub info: AlarmInfo,
    /// The parameters it was last applied with.
    pub params: Params,
    /// ISA-18.2 state.
    pub state: AlarmState,
    /// The condition, after delays and deadband, is active (differs from `state` only while
    /// latched).
    pub process_active: bool,
    /// The latest verdict applied.
    pub last_seen: Option<Seen>,
    /// Its `Condition::at`.
    pub last_verdict_at: Option<DateTime<Utc>>,
    /// A pending on-delay started here.
    pub on_since: Option<DateTime<Utc>>,
    /// A pending off-delay started here.
    pub off_since: Option<DateTime<Utc>>,
    /// Activations so far (the bad-actor count).
    pub activation: u64,
    /// When the current or latest activation raised.
    pub activated_at: Option<DateTime<Utc>>,
    /// The open incident, by the activation that opened it.
    pub incident: Option<u64>,
    /// The latest activation that got an incident (0: none).
    pub incident_for: u64,
    /// Times of recent raises and clears (at most `chatter_transitions` of them).
    pub chatter: VecDeque<DateTime<Utc>>,
    /// Chattering now.
    pub chattering: bool,
    /// How many times it started chattering.
    pub chatter_episodes: u64,
    /// A timed shelve in force. A snapshot whose shelve cannot be read restores unshelved.
    #[serde(default, deserialize_with = "lenient_shelf")]
    pub shelf: Option<Shelf>,
    /// Out of service.
    pub out_of_service: Option<OutOfService>,
}

fn lenient_shelf<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Shelf>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Maybe {
        Good(Option<Shelf>),
        Bad(serde::de::IgnoredAny),
    }
    Ok(match Maybe::deserialize(d)? {
        Maybe::Good(shelf) => shelf,
        Maybe::Bad(_) => None,
    })
}

/// Time from `since` to `now`, zero if `now` is earlier.
fn elapsed(since: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (now - since).to_std().unwrap_or(Duration::ZERO)
}

/// What an alarm's transitions need from the rest of the book.
struct Env<'a> {
    now: DateTime<Utc>,
    windows: &'a [MaintenanceWindow],
    suppressions: &'a [DesignSuppression],
}

impl Env<'_> {
    /// The reason an alarm is suppressed at `now`, if it is.
    fn suppressed(&self, a: &Alarm) -> Option<String> {
        if let Some(w) = self
            .windows
            .iter()
            .find(|w| w.covers(&a.key, &a.info, self.now))
        {
            return Some(format!("maintenance window {}: {}", w.id, w.reason));
        }
        self.suppressions
            .iter()
            .find(|s| s.covers(&a.key, &a.info))
            .map(|s| format!("suppressed by design {}: {}", s.id, s.reason))
    }
}

impl Alarm {
    fn new(key: AlarmKey, info: AlarmInfo, params: Params) -> Alarm {
        Alarm {
            key,
            info,
            params,
            state: AlarmState::Normal,
            process_active: false,
            last_seen: None,
            last_verdict_at: None,
            on_since: None,
            off_since: None,
            activation: 0,
            activated_at: None,
            incident: None,
            incident_for: 0,
            chatter: VecDeque::new(),
            chattering: false,
            chatter_episodes: 0,
            shelf: None,
            out_of_service: None,
        }
    }

    /// Shelved, out of service or suppressed at `env.now`.
    fn silenced(&self, env: &Env<'_>) -> bool {
        self.shelf.is_some() || self.out_of_service.is_some() || env.suppressed(self).is_some()
    }

    /// True while the open incident is held instead of resolved: the alarm chatters, or it
    /// changed more than once within the chatter window (a clear soon after its raise may be
    /// the start of chattering: resolving now and opening again at the next raise would give
    /// one ticket per toggle until the flag trips). Off when chatter detection is (n = 0).
    fn holds_incident(&self) -> bool {
        self.chattering || (self.params.chatter_transitions > 0 && self.chatter.len() >= 2)
    }

    /// True when an incident signal (open or resolve) is due without any state change.
    fn signal_due(&self, env: &Env<'_>) -> bool {
        match self.incident {
            Some(_) => !self.state.is_active() && !self.holds_incident(),
            None => {
                self.state.is_active()
                    && self.incident_for != self.activation
                    && !self.silenced(env)
            }
        }
    }

    /// Records a transition to `to` with the incident signal it implies.
    fn emit(
        &mut self,
        env: &Env<'_>,
        to: AlarmState,
        cause: Cause,
        actor: Option<&str>,
        comment: Option<&str>,
        out: &mut Vec<Transition>,
    ) {
        let from = self.state;
        self.state = to;
        let suppressed = env.suppressed(self);
        let silenced =
            self.shelf.is_some() || self.out_of_service.is_some() || suppressed.is_some();
        let before = self.incident;
        let incident = match self.incident {
            Some(_) if !to.is_active() && !self.holds_incident() => {
                self.incident = None;
                Some(IncidentSignal::Resolve)
            }
            Some(_) => Some(IncidentSignal::Update),
            None if to.is_active() && !silenced && self.incident_for != self.activation => {
                self.incident = Some(self.activation);
                self.incident_for = self.activation;
                Some(IncidentSignal::Open)
            }
            None => None,
        };
        out.push(Transition {
            key: self.key.clone(),
            from,
            to,
            at: env.now,
            cause,
            actor: actor.map(str::to_owned),
            comment: comment.filter(|c| !c.is_empty()).map(str::to_owned),
            incident,
            incident_id: before.or(self.incident),
            activation: self.activation,
            shelved: self.shelf.is_some(),
            out_of_service: self.out_of_service.is_some(),
            suppressed,
            chattering: self.chattering,
            info: self.info.clone(),
        });
    }

    /// Counts a raise or clear for chattering.
    fn count_change(&mut self, now: DateTime<Utc>) {
        let n = self.params.chatter_transitions as usize;
        if n == 0 {
            self.chatter.clear();
            self.chattering = false;
            return;
        }
        self.chatter.push_back(now);
        while self.chatter.len() > n {
            self.chatter.pop_front();
        }
        self.prune_chatter(now);
    }

    /// Forgets changes a window old or older; updates the flag.
    fn prune_chatter(&mut self, now: DateTime<Utc>) {
        let window = self.params.chatter_window;
        while self
            .chatter
            .front()
            .is_some_and(|t| elapsed(*t, now) >= window)
        {
            self.chatter.pop_front();
        }
        let n = self.params.chatter_transitions as usize;
        let was = self.chattering;
        self.chattering = n > 0 && self.chatter.len() >= n;
        if self.chattering && !was {
            self.chatter_episodes += 1;
        }
    }

    fn raise(&mut self, env: &Env<'_>, cause: Cause, out: &mut Vec<Transition>) {
        self.process_active = true;
        self.on_since = None;
        self.off_since = None;
        self.count_change(env.now);
        match self.state {
            AlarmState::Normal | AlarmState::ReturnedUnacked => {
                self.activation += 1;
                self.activated_at = Some(env.now);
                self.emit(env, AlarmState::ActiveUnacked, cause, None, None, out);
            }
            // Latched (or already active): the alarm never left the active states.
            AlarmState::ActiveUnacked | AlarmState::ActiveAcked => {}
        }
    }

    fn clear(&mut self, env: &Env<'_>, cause: Cause, out: &mut Vec<Transition>) {
        self.process_active = false;
        self.on_since = None;
        self.off_since = None;
        self.count_change(env.now);
        let to = match (self.state, self.params.latching) {
            (AlarmState::ActiveUnacked, false) => AlarmState::ReturnedUnacked,
            (AlarmState::ActiveAcked, false) => AlarmState::Normal,
            (AlarmState::ActiveUnacked | AlarmState::ActiveAcked, true) => {
                AlarmState::ActiveUnacked
            }
            (s, _) => s,
        };
        if to != self.state {
            self.emit(env, to, cause, None, None, out);
        }
    }

    /// Completes an on- or off-delay that is due at `env.now`.
    fn complete_delays(&mut self, env: &Env<'_>, cause: Cause, out: &mut Vec<Transition>) {
        let now = env.now;
        if !self.process_active {
            if self.last_seen == Some(Seen::Active)
                && self
                    .on_since
                    .is_some_and(|s| elapsed(s, now) >= self.params.on_delay)
            {
                self.raise(env, cause, out);
            }
        } else if self.last_seen == Some(Seen::Clear)
            && self
                .off_since
                .is_some_and(|s| elapsed(s, now) >= self.params.off_delay)
        {
            self.clear(env, cause, out);
        }
    }

    /// Brings the alarm up to `env.now`: shelve expiry, due delays, chattering, and an incident
    /// signal due without a state change.
    fn settle(&mut self, env: &Env<'_>, out: &mut Vec<Transition>) {
        if self.shelf.as_ref().is_some_and(|s| s.until <= env.now) {
            self.shelf = None;
            self.emit(env, self.state, Cause::ShelveExpired, None, None, out);
        }
        self.complete_delays(env, Cause::DelayElapsed, out);
        let held = self.holds_incident();
        self.prune_chatter(env.now);
        let hold_ended = held && !self.holds_incident();
        if self.signal_due(env) {
            let cause = if hold_ended {
                Cause::ChatterEnded
            } else {
                Cause::MaintenanceEnded
            };
            self.emit(env, self.state, cause, None, None, out);
        }
    }

    /// Records a verdict (after `settle` with the previous one).
    fn observe(&mut self, verdict: &Verdict, now: DateTime<Utc>) {
        match verdict {
            Verdict::Active => {
                self.last_seen = Some(Seen::Active);
                if self.process_active {
                    self.off_since = None;
                } else {
                    self.on_since.get_or_insert(now);
                }
            }
            Verdict::Clear { margin } => {
                let counted = margin.is_none_or(|m| m >= self.params.deadband);
                if counted {
                    self.last_seen = Some(Seen::Clear);
                    if self.process_active {
                        self.off_since.get_or_insert(now);
                    } else {
                        self.on_since = None;
                    }
                } else {
                    self.last_seen = Some(Seen::InsideDeadband);
                    self.off_since = None;
                    self.on_since = None;
                }
            }
            Verdict::Unknown { .. } => {
                self.last_seen = Some(Seen::Unknown);
                self.off_since = None;
            }
        }
    }
}

/// Every alarm of the daemon (or of one site), with maintenance windows, suppressions by
/// design and the annunciation log for the KPIs. Pure: no IO, explicit time. Serializable as a
/// whole: a snapshot restores shelves with their expiry, latches and delays in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmBook {
    config: BookConfig,
    clock: Option<DateTime<Utc>>,
    #[serde(with = "names::map_as_pairs")]
    alarms: BTreeMap<AlarmKey, Alarm>,
    windows: Vec<MaintenanceWindow>,
    suppressions: Vec<DesignSuppression>,
    /// Per site, the instants of recent annunciated raises (within the flood window).
    annunciations: BTreeMap<String, VecDeque<DateTime<Utc>>>,
    late_verdicts: u64,
}

impl Default for AlarmBook {
    fn default() -> AlarmBook {
        AlarmBook::new(BookConfig::default())
    }
}

fn required(text: &str, what: &'static str) -> Result<(), AlarmError> {
    if text.trim().is_empty() {
        Err(AlarmError::Missing(what))
    } else {
        Ok(())
    }
}

impl AlarmBook {
    /// An empty book.
    pub fn new(config: BookConfig) -> AlarmBook {
        AlarmBook {
            config,
            clock: None,
            alarms: BTreeMap::new(),
            windows: Vec::new(),
            suppressions: Vec::new(),
            annunciations: BTreeMap::new(),
            late_verdicts: 0,
        }
    }

    /// The book-wide settings.
    pub fn config(&self) -> &BookConfig {
        &self.config
    }

    /// Replaces the settings (e.g. after restoring a snapshot under a newer configuration).
    pub fn set_config(&mut self, config: BookConfig) {
        self.config = config;
    }

    /// One alarm.
    pub fn get(&self, key: &AlarmKey) -> Option<&Alarm> {
        self.alarms.get(key)
    }

    /// Every alarm, in key order.
    pub fn alarms(&self) -> impl Iterator<Item = &Alarm> {
        self.alarms.values()
    }

    /// The maintenance windows known (past, running and future).
    pub fn windows(&self) -> &[MaintenanceWindow] {
        &self.windows
    }

    /// The suppressions by design in force.
    pub fn suppressions(&self) -> &[DesignSuppression] {
        &self.suppressions
    }

    /// Verdicts ignored because they were older than one already applied.
    pub fn late_verdicts(&self) -> u64 {
        self.late_verdicts
    }

    /// The book's clock: the latest `now` it saw.
    pub fn clock(&self) -> Option<DateTime<Utc>> {
        self.clock
    }

    /// Why the alarm is suppressed (maintenance window or by design) at `now`, if it is.
    pub fn suppression_of(&self, key: &AlarmKey, now: DateTime<Utc>) -> Option<String> {
        let alarm = self.alarms.get(key)?;
        let env = Env {
            now,
            windows: &self.windows,
            suppressions: &self.suppressions,
        };
        env.suppressed(alarm)
    }

    fn advance(&mut self, now: DateTime<Utc>) -> DateTime<Utc> {
        let t = self.clock.map_or(now, |c| c.max(now));
        self.clock = Some(t);
        t
    }

    /// Logs annunciated raises for the flood KPI.
    fn annunciate(&mut self, transitions: &[Transition]) {
        let window = self.config.flood_window;
        for t in transitions {
            let raised = matches!(t.cause, Cause::Condition | Cause::DelayElapsed)
                && !t.from.is_active()
                && t.to.is_active();
            if raised && !t.silenced() {
                let log = self.annunciations.entry(t.key.site.clone()).or_default();
                log.push_back(t.at);
                while log.front().is_some_and(|x| elapsed(*x, t.at) >= window) {
                    log.pop_front();
                }
            }
        }
    }

    /// Applies one rule verdict.
    pub fn apply(
        &mut self,
        condition: &Condition,
        params: &AlarmParams,
        now: DateTime<Utc>,
    ) -> Vec<Transition> {
        let now = self.advance(now);
        let key = AlarmKey::from(&condition.key);
        let AlarmBook {
            alarms,
            windows,
            suppressions,
            late_verdicts,
            ..
        } = self;
        let alarm = alarms.entry(key).or_insert_with_key(|key| {
            Alarm::new(
                key.clone(),
                AlarmInfo::from_condition(condition),
                params.into(),
            )
        });
        if alarm.last_verdict_at.is_some_and(|t| condition.at < t) {
            *late_verdicts += 1;
            return Vec::new();
        }
        let env = Env {
            now,
            windows,
            suppressions,
        };
        let mut out = Vec::new();
        alarm.settle(&env, &mut out);
        alarm.last_verdict_at = Some(condition.at);
        alarm.params = params.into();
        if matches!(condition.verdict, Verdict::Unknown { .. }) {
            alarm.info.class = condition.class;
            alarm.info.impact = condition.impact;
            alarm.info.urgency = condition.urgency;
        } else {
            alarm.info = AlarmInfo::from_condition(condition);
        }
        alarm.observe(&condition.verdict, now);
        alarm.complete_delays(&env, Cause::Condition, &mut out);
        self.annunciate(&out);
        out
    }

    /// Advances the clock: expires shelves, completes due delays, ends chattering and emits the
    /// incident signals that became due (e.g. a maintenance window ended over an active alarm).
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<Transition> {
        let now = self.advance(now);
        let env = Env {
            now,
            windows: &self.windows,
            suppressions: &self.suppressions,
        };
        let mut out = Vec::new();
        for alarm in self.alarms.values_mut() {
            alarm.settle(&env, &mut out);
        }
        self.annunciate(&out);
        out
    }

    /// Runs one operator action on one alarm.
    fn act(
        &mut self,
        key: &AlarmKey,
        now: DateTime<Utc>,
        action: impl FnOnce(&mut Alarm, &Env<'_>, &mut Vec<Transition>) -> Result<(), AlarmError>,
    ) -> Result<Vec<Transition>, AlarmError> {
        if !self.alarms.contains_key(key) {
            return Err(AlarmError::UnknownAlarm(key.clone()));
        }
        let now = self.advance(now);
        let env = Env {
            now,
            windows: &self.windows,
            suppressions: &self.suppressions,
        };
        let Some(alarm) = self.alarms.get_mut(key) else {
            return Err(AlarmError::UnknownAlarm(key.clone()));
        };
        let mut out = Vec::new();
        action(alarm, &env, &mut out)?;
        Ok(out)
    }

    /// Acknowledges an alarm (user required; the comment goes to the audit trail).
    pub fn acknowledge(
        &mut self,
        key: &AlarmKey,
        user: &str,
        comment: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Transition>, AlarmError> {
        required(user, "user")?;
        self.act(key, now, |a, env, out| {
            let to = match (a.state, a.process_active) {
                (AlarmState::ActiveUnacked, true) => AlarmState::ActiveAcked,
                (AlarmState::ActiveUnacked, false) | (AlarmState::ReturnedUnacked, _) => {
                    AlarmState::Normal
                }
                (state, _) => {
                    return Err(AlarmError::NothingToAcknowledge {
                        key: a.key.clone(),
                        state,
                    });
                }
            };
            a.emit(env, to, Cause::Acknowledge, Some(user), Some(comment), out);
            Ok(())
        })
    }

    /// Shelves an alarm for `duration` (at most the configured maximum; reason required). A
    /// shelve of a shelved alarm replaces it.
    pub fn shelve(
        &mut self,
        key: &AlarmKey,
        user: &str,
        reason: &str,
        duration: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<Transition>, AlarmError> {
        required(user, "user")?;
        required(reason, "reason")?;
        let max = self.config.max_shelve;
        if duration.is_zero() {
            return Err(AlarmError::ShelveZero);
        }
        let too_long = AlarmError::ShelveTooLong {
            requested: duration,
            max,
        };
        if duration > max {
            return Err(too_long);
        }
        let Some(step) = TimeDelta::from_std(duration).ok() else {
            return Err(too_long);
        };
        self.act(key, now, |a, env, out| {
            let until = env.now.checked_add_signed(step).ok_or(too_long)?;
            a.shelf = Some(Shelf {
                user: user.to_owned(),
                reason: reason.to_owned(),
                since: env.now,
                until,
            });
            a.emit(env, a.state, Cause::Shelve, Some(user), Some(reason), out);
            Ok(())
        })
    }

    /// Ends a shelve before its expiry.
    pub fn unshelve(
        &mut self,
        key: &AlarmKey,
        user: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Transition>, AlarmError> {
        required(user, "user")?;
        self.act(key, now, |a, env, out| {
            if a.shelf.take().is_none() {
                return Err(AlarmError::NotShelved(a.key.clone()));
            }
            a.emit(env, a.state, Cause::Unshelve, Some(user), None, out);
            Ok(())
        })
    }

    /// Takes an alarm out of service (maintenance; audited, reason required).
    pub fn out_of_service(
        &mut self,
        key: &AlarmKey,
        user: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Transition>, AlarmError> {
        required(user, "user")?;
        required(reason, "reason")?;
        self.act(key, now, |a, env, out| {
            if a.out_of_service.is_some() {
                return Err(AlarmError::AlreadyOutOfService(a.key.clone()));
            }
            a.out_of_service = Some(OutOfService {
                user: user.to_owned(),
                reason: reason.to_owned(),
                since: env.now,
            });
            a.emit(
                env,
                a.state,
                Cause::OutOfService,
                Some(user),
                Some(reason),
                out,
            );
            Ok(())
        })
    }

    /// Returns an alarm to service.
    pub fn return_to_service(
        &mut self,
        key: &AlarmKey,
        user: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Transition>, AlarmError> {
        required(user, "user")?;
        self.act(key, now, |a, env, out| {
            if a.out_of_service.take().is_none() {
                return Err(AlarmError::NotOutOfService(a.key.clone()));
            }
            a.emit(env, a.state, Cause::ReturnToService, Some(user), None, out);
            Ok(())
        })
    }

    /// Starts a suppression by design (e.g. `"pac-3-standby"` over one alarm or a scope). It
    /// also covers alarms first seen later; Fire and Water alarms never. Each alarm it covers
    /// now gets a `Suppress` transition.
    pub fn suppress(
        &mut self,
        id: &str,
        target: SuppressTarget,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Transition>, AlarmError> {
        required(id, "suppression id")?;
        required(reason, "reason")?;
        if self.suppressions.iter().any(|s| s.id == id) {
            return Err(AlarmError::DuplicateSuppression(id.to_owned()));
        }
        let now = self.advance(now);
        let suppression = DesignSuppression {
            id: id.to_owned(),
            target,
            reason: reason.to_owned(),
            since: now,
        };
        let covered: Vec<AlarmKey> = self
            .alarms
            .values()
            .filter(|a| suppression.covers(&a.key, &a.info))
            .map(|a| a.key.clone())
            .collect();
        self.suppressions.push(suppression);
        Ok(self.mark(&covered, now, Cause::Suppress, reason))
    }

    /// Lifts a suppression by design; each alarm it covered gets an `Unsuppress` transition
    /// (which opens the incident of an active alarm nothing else silences).
    pub fn unsuppress(
        &mut self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Transition>, AlarmError> {
        let Some(i) = self.suppressions.iter().position(|s| s.id == id) else {
            return Err(AlarmError::UnknownSuppression(id.to_owned()));
        };
        let now = self.advance(now);
        let suppression = self.suppressions.remove(i);
        let covered: Vec<AlarmKey> = self
            .alarms
            .values()
            .filter(|a| suppression.covers(&a.key, &a.info))
            .map(|a| a.key.clone())
            .collect();
        Ok(self.mark(&covered, now, Cause::Unsuppress, &suppression.reason))
    }

    fn mark(
        &mut self,
        keys: &[AlarmKey],
        now: DateTime<Utc>,
        cause: Cause,
        reason: &str,
    ) -> Vec<Transition> {
        let env = Env {
            now,
            windows: &self.windows,
            suppressions: &self.suppressions,
        };
        let mut out = Vec::new();
        for key in keys {
            if let Some(a) = self.alarms.get_mut(key) {
                a.emit(&env, a.state, cause, None, Some(reason), &mut out);
            }
        }
        out
    }

    /// Adds a planned maintenance window (id unique, end after start).
    pub fn add_window(&mut self, window: MaintenanceWindow) -> Result<(), AlarmError> {
        required(&window.id, "window id")?;
        required(&window.reason, "reason")?;
        if self.windows.iter().any(|w| w.id == window.id) {
            return Err(AlarmError::DuplicateWindow(window.id));
        }
        if window.end <= window.start {
            return Err(AlarmError::WindowEndsBeforeStart(window.id));
        }
        self.windows.push(window);
        Ok(())
    }

    /// Removes a maintenance window (cancelled or finished early) and settles every alarm at
    /// `now`, which opens the incidents of active alarms it was holding back.
    pub fn remove_window(
        &mut self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Transition>, AlarmError> {
        let Some(i) = self.windows.iter().position(|w| w.id == id) else {
            return Err(AlarmError::UnknownWindow(id.to_owned()));
        };
        self.windows.remove(i);
        Ok(self.tick(now))
    }

    /// Drops maintenance windows that ended before `now` (housekeeping; they no longer matter).
    pub fn prune_windows(&mut self, now: DateTime<Utc>) {
        self.windows.retain(|w| w.end > now);
    }

    /// The alarm-management KPIs at `now`.
    pub fn kpis(&self, now: DateTime<Utc>) -> Kpis {
        kpi::compute(&self.config, self.alarms.values(), &self.annunciations, now)
    }
}
