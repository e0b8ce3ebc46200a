//! The rule engine: the latest reading of every configured point, addressed by site,
//! device and role, and the catalogue's conditions derived from them at an explicit instant.
//!
//! # Use
//!
//! Build one [`RuleEngine`] from the validated [`Config`] (it covers every site; a daemon
//! serving one site simply never sees the others' readings). Feed every reading with
//! [`RuleEngine::observe`], then call [`RuleEngine::evaluate`] with the current instant
//! (after each batch of readings, or on a tick): it returns the **full snapshot**, one
//! [`Condition`] per rule and scope, each `Active`, `Clear` (with its margin) or `Unknown`.
//! Unchanged conditions are repeated; the alarm lifecycle keys its state by
//! [`ConditionKey`](super::condition::ConditionKey) and applies on-delay, off-delay and
//! deadband. `evaluate` needs `&mut` only for the time-based state it keeps (genset
//! load-test detection).
//!
//! # Inputs and `Unknown`
//!
//! A rule input is usable only when its latest reading is good **and fresh**: younger
//! than `(daemon.stale_after_intervals + 1) x` the point's interval (poll class interval for
//! Modbus, publish interval for MQTT). A bad, stale, too old or missing input makes the
//! rule `Unknown` with the reason, never `Clear` (invariant 5). Aggregates use what they can
//! prove: a room is above its maximum as soon as one good sensor is, and clear only when
//! every sensor is good and inside; rack A+B is above the limit when one good feed alone is.
//!
//! Readings older than the point's latest one are ignored (out-of-order delivery).
//!
//! # Models, stated once
//!
//! * Utility is **lost** when every utility meter of the site reports `utility.available`
//!   false; it was lost at the latest of the instants each meter's value turned false.
//! * Gensets **carry the load** when at least one genset has its breaker closed and a
//!   positive `genset.load_kw`.
//! * The gensets are **needed** while utility is lost.
//! * A genset is **available** when it is in `auto` or running, with no shutdown or
//!   electrical-trip alarm nibble; a UPS when it reports no fault and its output source is
//!   not `none` or `bypass`; a PAC when it reports no fault and is not `off` (standby counts:
//!   it is the reserve of N+1).
//! * Redundancy needs, of `n` units: `N` all `n`; `N+1` `n - 1`; `2N` half, rounded up.
//! * Fuel autonomy = usable fuel (sum of `fuel_tank_l x level %`) / consumption at the
//!   present load, where consumption = load x (sum of `fuel_l_per_h_full` / sum of
//!   `rated_kw`) over the site's gensets (linear in load: a conservative simplification at
//!   high load, optimistic near idle). The present load is the gensets' output while utility
//!   is lost, else the utility meters' power (the load the gensets would take over).
//! * Device communication is lost when the device's newest reading is bad with
//!   "connection lost", "timeout" or a gateway exception (0x0A path unavailable, 0x0B
//!   target failed to respond), when every point is stale or so, or when it has sent
//!   nothing for its staleness limit (counted from the first evaluation if it never did).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::condition::Condition;
use super::loadtest::{LoadTestCriteria, LoadTestDetector, LoadTestRecord};
use super::overrides::{Overrides, cell_for};
use crate::config::model::{
    ClimateLimits, Config, DeviceFacts, DeviceKind, DeviceTransport, Feed, PriorityPolicy,
    ProfileTransport, Redundancy, Role, RoomKind,
};
use crate::model::{BadReason, PointId, Quality, Reading, Value};

mod eval;

use eval::Eval;

/// Tunables of the rules that the configuration does not (yet) carry; the defaults are
/// the catalogue.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSettings {
    /// Early warning band inside each temperature limit: 1 degC.
    pub early_warning_band_c: f64,
    /// Window of the temperature rate-of-change rule: 15 min.
    pub rate_window: Duration,
    /// Largest allowed change within the window: 5 degC (ASHRAE, other ITE).
    pub rate_limit_c: f64,
    /// Time the gensets have to carry the load after utility loss: 30 s (NFPA 110 Type 10
    /// restores power in 10 s; 30 s allows for the transfer switch and a second start
    /// attempt, far inside the 10 min UPS backup time).
    pub genset_takeover: Duration,
    /// Fuel autonomy below this is critical: 4 h.
    pub autonomy_critical_h: f64,
    /// What makes a genset load test qualify (NFPA 110).
    pub load_test: LoadTestCriteria,
}

impl Default for RuleSettings {
    fn default() -> Self {
        RuleSettings {
            early_warning_band_c: 1.0,
            rate_window: Duration::from_secs(15 * 60),
            rate_limit_c: 5.0,
            genset_takeover: Duration::from_secs(30),
            autonomy_critical_h: 4.0,
            load_test: LoadTestCriteria::default(),
        }
    }
}

/// An input value or why the rule cannot use it.
type Input<T> = Result<T, Arc<str>>;

#[derive(Debug, Clone)]
struct Latest {
    value: Option<Value>,
    quality: Quality,
    at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
struct Slot {
    id: PointId,
    max_age: chrono::Duration,
    latest: Option<Latest>,
    /// The last good value and the instant it took that value.
    good_since: Option<(Value, DateTime<Utc>)>,
    /// Good samples within the rate window (temperature points only).
    history: Option<VecDeque<(DateTime<Utc>, f64)>>,
}

#[derive(Debug, Clone)]
struct DeviceState {
    id: Arc<str>,
    room: Arc<str>,
    rack: Option<Arc<str>>,
    kind: DeviceKind,
    facts: DeviceFacts,
    /// Role -> slot index.
    roles: Vec<(Role, usize)>,
    /// Longest staleness limit of its points.
    silence: chrono::Duration,
}

#[derive(Debug, Clone)]
struct RoomState {
    id: Arc<str>,
    kind: RoomKind,
    climate: Option<ClimateLimits>,
}

#[derive(Debug, Clone)]
struct RackState {
    id: Arc<str>,
    room: Arc<str>,
    limit_kw: f64,
    /// Feed and device index.
    feeds: Vec<(Feed, usize)>,
}

#[derive(Debug, Clone)]
struct SiteState {
    id: Arc<str>,
    name: Arc<str>,
    ups_backup_min: f64,
    ups_redundancy: Redundancy,
    genset_redundancy: Redundancy,
    cooling_redundancy: Redundancy,
    autonomy_min_h: f64,
    load_test_months: u32,
    rooms: Vec<RoomState>,
    racks: Vec<RackState>,
    devices: Vec<DeviceState>,
    detector: LoadTestDetector,
    load_tests: Vec<LoadTestRecord>,
    /// First evaluation instant: the start of the evidence for the overdue rule.
    origin: Option<DateTime<Utc>>,
}

/// The facility rules over the latest readings; see the module documentation.
#[derive(Debug, Clone)]
pub struct RuleEngine {
    settings: RuleSettings,
    sites: Vec<SiteState>,
    slots: Vec<Slot>,
    index: HashMap<PointId, usize>,
    new_load_tests: Vec<LoadTestRecord>,
    /// `[[rule_overrides]]` of the sites served.
    overrides: Overrides,
    /// The priority matrix, to turn an overridden priority into impact x urgency.
    policy: PriorityPolicy,
}

impl RuleEngine {
    /// An engine for every site of `config`, with the default [`RuleSettings`].
    pub fn new(config: &Config) -> Self {
        Self::with_settings(config, RuleSettings::default())
    }

    /// An engine for every site of `config`.
    pub fn with_settings(config: &Config, settings: RuleSettings) -> Self {
        Self::build(config, settings, |_| true)
    }

    /// An engine for the listed sites only, for a daemon serving some of them: the
    /// others' devices would otherwise count as silent, and their sites as blind.
    pub fn for_sites(config: &Config, settings: RuleSettings, sites: &[&str]) -> Self {
        Self::build(config, settings, |id| sites.contains(&id))
    }

    fn build(config: &Config, settings: RuleSettings, keep: impl Fn(&str) -> bool) -> Self {
        let after = i32::try_from(config.daemon.stale_after_intervals.max(1))
            .unwrap_or(i32::MAX)
            .saturating_add(1);
        let mut slots = Vec::new();
        let mut index = HashMap::new();
        let mut sites = Vec::new();
        for site in config.sites.iter().filter(|s| keep(&s.id)) {
            let mut devices = Vec::new();
            for d in &site.devices {
                let mut roles = Vec::new();
                let mut silence = chrono::Duration::zero();
                let points: Vec<(&str, &Role, Duration)> =
                    match (&d.profile.transport, &d.transport) {
                        (ProfileTransport::Modbus(p), DeviceTransport::Modbus { poll, .. }) => p
                            .points
                            .iter()
                            .map(|pt| (pt.name.as_str(), &pt.role, poll.of(pt.class)))
                            .collect(),
                        (ProfileTransport::Modbus(p), _) => p
                            .points
                            .iter()
                            .map(|pt| (pt.name.as_str(), &pt.role, p.poll.of(pt.class)))
                            .collect(),
                        (ProfileTransport::Mqtt(p), _) => p
                            .points
                            .iter()
                            .map(|pt| (pt.name.as_str(), &pt.role, p.interval))
                            .collect(),
                    };
                for (name, role, interval) in points {
                    let max_age = chrono::Duration::from_std(interval)
                        .unwrap_or(chrono::Duration::MAX)
                        .checked_mul(after)
                        .unwrap_or(chrono::Duration::MAX);
                    silence = silence.max(max_age);
                    let id = PointId::new(&site.id, &d.id, name);
                    let history = (*role == Role::EnvTemperatureC)
                        .then(VecDeque::<(DateTime<Utc>, f64)>::new);
                    index.insert(id.clone(), slots.len());
                    roles.push((role.clone(), slots.len()));
                    slots.push(Slot {
                        id,
                        max_age,
                        latest: None,
                        good_since: None,
                        history,
                    });
                }
                devices.push(DeviceState {
                    id: Arc::from(d.id.as_str()),
                    room: Arc::from(d.room.as_str()),
                    rack: d.rack.as_deref().map(Arc::from),
                    kind: d.kind(),
                    facts: d.facts.clone(),
                    roles,
                    silence,
                });
            }
            let racks = site
                .racks
                .iter()
                .map(|r| RackState {
                    id: Arc::from(r.id.as_str()),
                    room: Arc::from(r.room.as_str()),
                    limit_kw: r.limit_kw,
                    feeds: devices
                        .iter()
                        .enumerate()
                        .filter(|(_, d)| {
                            d.kind == DeviceKind::RackMeter && d.rack.as_deref() == Some(&r.id)
                        })
                        .filter_map(|(i, d)| d.facts.feed.map(|f| (f, i)))
                        .collect(),
                })
                .collect();
            let id: Arc<str> = Arc::from(site.id.as_str());
            sites.push(SiteState {
                id: id.clone(),
                name: Arc::from(site.name.as_str()),
                ups_backup_min: site.ups.backup_time.as_secs_f64() / 60.0,
                ups_redundancy: site.ups.redundancy,
                genset_redundancy: site.genset.redundancy,
                cooling_redundancy: site.cooling.redundancy,
                autonomy_min_h: site.genset.autonomy_min_h,
                load_test_months: site.genset.load_test_interval_months,
                rooms: site
                    .rooms
                    .iter()
                    .map(|r| RoomState {
                        id: Arc::from(r.id.as_str()),
                        kind: r.kind,
                        climate: r.climate,
                    })
                    .collect(),
                racks,
                devices,
                detector: LoadTestDetector::new(id, settings.load_test),
                load_tests: Vec::new(),
                origin: None,
            });
        }
        let overrides = Overrides::new(
            config
                .sites
                .iter()
                .filter(|s| keep(&s.id))
                .flat_map(|s| s.rule_overrides.iter().cloned()),
        );
        RuleEngine {
            settings,
            sites,
            slots,
            index,
            new_load_tests: Vec::new(),
            overrides,
            policy: config.priority.clone(),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &RuleSettings {
        &self.settings
    }

    /// The `[[rule_overrides]]` in force.
    pub fn overrides(&self) -> &Overrides {
        &self.overrides
    }

    /// Applies the overrides that act on a condition after its rule ran: a disabled rule
    /// reports `Clear`, an overridden priority becomes impact x urgency. (`limit` acts
    /// inside the rule; delays and deadband in the alarm lifecycle.)
    fn apply_overrides(&self, c: &mut Condition) {
        let r = self.overrides.for_condition(c);
        if !r.enabled() {
            c.verdict = super::condition::Verdict::Clear { margin: None };
            c.summary = format!("{} disabled by [[rule_overrides]]", c.key.rule);
            c.value = None;
            return;
        }
        if let Some(p) = r.priority
            && let Some((impact, urgency)) = cell_for(&self.policy, p, c.impact)
        {
            c.impact = impact;
            c.urgency = urgency;
        }
    }

    /// Takes a reading as the latest of its point. Returns false for a point the
    /// configuration does not know (the reading is ignored). A reading older than the
    /// point's latest is ignored too.
    pub fn observe(&mut self, reading: &Reading) -> bool {
        let Some(&i) = self.index.get(reading.point()) else {
            return false;
        };
        let window =
            chrono::Duration::from_std(self.settings.rate_window).unwrap_or(chrono::Duration::MAX);
        let slot = &mut self.slots[i];
        let at = reading.sampled_at();
        if slot.latest.as_ref().is_some_and(|l| at < l.at) {
            return true;
        }
        if let Some(v) = reading.value() {
            let same = slot.good_since.as_ref().is_some_and(|(old, _)| old == v);
            if !same {
                slot.good_since = Some((v.clone(), at));
            }
            if let (Some(h), Some(x)) = (slot.history.as_mut(), v.as_f64()) {
                h.push_back((at, x));
                while h.front().is_some_and(|(t, _)| at - *t > window) {
                    h.pop_front();
                }
            }
        }
        slot.latest = Some(Latest {
            value: reading.value().cloned(),
            quality: reading.quality().clone(),
            at,
        });
        true
    }

    /// Adds a load test recorded earlier (e.g. loaded from the store at start), so the
    /// overdue rule has its evidence across restarts. Unknown sites are ignored.
    pub fn record_load_test(&mut self, record: LoadTestRecord) {
        if let Some(s) = self.sites.iter_mut().find(|s| s.id == record.site) {
            s.load_tests.push(record);
        }
    }

    /// The load tests known for a site, oldest first.
    pub fn load_tests(&self, site: &str) -> &[LoadTestRecord] {
        self.sites
            .iter()
            .find(|s| &*s.id == site)
            .map(|s| s.load_tests.as_slice())
            .unwrap_or(&[])
    }

    /// Load tests detected since the last call, for the caller to store.
    pub fn take_new_load_tests(&mut self) -> Vec<LoadTestRecord> {
        std::mem::take(&mut self.new_load_tests)
    }

    /// Every condition of every site at `now`: see the module documentation.
    pub fn evaluate(&mut self, now: DateTime<Utc>) -> Vec<Condition> {
        let mut out = Vec::new();
        for i in 0..self.sites.len() {
            self.sites[i].origin.get_or_insert(now);
            let sample = {
                let site = &self.sites[i];
                self.load_test_sample(site, now)
            };
            if let Ok(sample) = sample {
                let site = &mut self.sites[i];
                if let Some(rec) = site.detector.sample(now, sample) {
                    site.load_tests.push(rec.clone());
                    self.new_load_tests.push(rec);
                }
            }
            let site = &self.sites[i];
            let mut ev = Eval {
                engine: self,
                site,
                now,
                out: &mut out,
            };
            ev.climate();
            ev.racks();
            ev.power();
            ev.gensets();
            ev.fuel();
            ev.cooling();
            ev.fire_and_water();
            ev.communication();
            ev.load_test_overdue();
        }
        if !self.overrides.is_empty() {
            for c in &mut out {
                self.apply_overrides(c);
            }
        }
        out
    }
}

/// Communication state of one device.
enum Comm {
    Ok,
    Lost(Arc<str>),
    Unknown(Arc<str>),
}

impl RuleEngine {
    fn slot_of(&self, dev: &DeviceState, role: &Role) -> Option<&Slot> {
        dev.roles
            .iter()
            .find(|(r, _)| r == role)
            .map(|&(_, i)| &self.slots[i])
    }

    /// The good, fresh value of a device's role at `now`, or why not.
    fn value(&self, dev: &DeviceState, role: &Role, now: DateTime<Utc>) -> Input<&Value> {
        let Some(slot) = self.slot_of(dev, role) else {
            return Err(format!("{} has no {role} point", dev.id).into());
        };
        let name = || format!("{}/{}", slot.id.device, slot.id.point);
        let Some(l) = &slot.latest else {
            return Err(format!("{}: no reading yet", name()).into());
        };
        match (&l.quality, &l.value) {
            (Quality::Good, Some(v)) => {
                let age = now - l.at;
                if age > slot.max_age {
                    Err(format!("{}: last reading {} s old", name(), age.num_seconds()).into())
                } else {
                    Ok(v)
                }
            }
            (Quality::Bad(r), _) => Err(format!("{}: {r}", name()).into()),
            _ => Err(format!("{}: stale", name()).into()),
        }
    }

    fn number(&self, dev: &DeviceState, role: &Role, now: DateTime<Utc>) -> Input<f64> {
        let v = self.value(dev, role, now)?;
        v.as_f64()
            .ok_or_else(|| Arc::from(format!("{}: {role} is not a number", dev.id)))
    }

    fn flag(&self, dev: &DeviceState, role: &Role, now: DateTime<Utc>) -> Input<bool> {
        self.number(dev, role, now).map(|x| x != 0.0)
    }

    /// An enum point: its raw value and its name when the profile names it.
    fn state(
        &self,
        dev: &DeviceState,
        role: &Role,
        now: DateTime<Utc>,
    ) -> Input<(i64, Option<Arc<str>>)> {
        match self.value(dev, role, now)? {
            Value::State { raw, name } => Ok((*raw, name.clone())),
            Value::Number(n) => Ok((*n as i64, None)),
            Value::Bool(b) => Ok((i64::from(*b), None)),
            Value::Text(_) => Err(format!("{}: {role} is text", dev.id).into()),
        }
    }

    /// Utility lost since when (`Some`), or present (`None`).
    fn utility_lost(&self, site: &SiteState, now: DateTime<Utc>) -> Input<Option<DateTime<Utc>>> {
        let mut since: Option<DateTime<Utc>> = None;
        let mut unknown = None;
        let mut any = false;
        for d in site
            .devices
            .iter()
            .filter(|d| d.kind == DeviceKind::UtilityMeter)
        {
            any = true;
            match self.flag(d, &Role::UtilityAvailable, now) {
                Ok(true) => return Ok(None),
                Ok(false) => {
                    let t = self
                        .slot_of(d, &Role::UtilityAvailable)
                        .and_then(|s| s.good_since.as_ref().map(|(_, t)| *t))
                        .unwrap_or(now);
                    since = Some(since.map_or(t, |s| s.max(t)));
                }
                Err(e) => unknown = Some(e),
            }
        }
        if !any {
            return Err(Arc::from("no utility meter configured"));
        }
        match (unknown, since) {
            (Some(e), _) => Err(e),
            (None, since) => Ok(since),
        }
    }

    /// Whether the gensets carry the load, with the carrying gensets' load and nameplate kW.
    fn genset_output(&self, site: &SiteState, now: DateTime<Utc>) -> Input<(bool, f64, f64)> {
        let (mut carrying, mut load, mut rated, mut unknown) = (false, 0.0, 0.0, None);
        for g in site.devices.iter().filter(|d| d.kind == DeviceKind::Genset) {
            match (
                self.flag(g, &Role::GensetBreakerClosed, now),
                self.number(g, &Role::GensetLoadKw, now),
            ) {
                (Ok(true), Ok(l)) if l > 0.0 => {
                    carrying = true;
                    load += l;
                    rated += g.facts.rated_kw.unwrap_or(0.0);
                }
                (Ok(false), _) | (Ok(true), Ok(_)) => {}
                (Err(e), _) | (Ok(true), Err(e)) => unknown = Some(e),
            }
        }
        match unknown {
            Some(e) if !carrying => Err(e),
            _ => Ok((carrying, load, rated)),
        }
    }

    /// The load-test detector's input: `Some(load pct)` while utility is lost and the
    /// gensets carry the load.
    fn load_test_sample(&self, site: &SiteState, now: DateTime<Utc>) -> Input<Option<f64>> {
        if self.utility_lost(site, now)?.is_none() {
            return Ok(None);
        }
        let (carrying, load, rated) = self.genset_output(site, now)?;
        if !carrying {
            return Ok(None);
        }
        if rated <= 0.0 {
            return Err(Arc::from("carrying gensets have no rated_kw"));
        }
        Ok(Some(load / rated * 100.0))
    }

    /// The site's present load, kW: the gensets' output while utility is lost, else the
    /// utility meters' power.
    fn site_load(&self, site: &SiteState, now: DateTime<Utc>) -> Input<f64> {
        let (kind, role) = match self.utility_lost(site, now)? {
            Some(_) => (DeviceKind::Genset, Role::GensetLoadKw),
            None => (DeviceKind::UtilityMeter, Role::UtilityPowerKw),
        };
        let mut sum = 0.0;
        for d in site.devices.iter().filter(|d| d.kind == kind) {
            sum += self.number(d, &role, now)?.max(0.0);
        }
        Ok(sum)
    }

    fn comm(&self, site: &SiteState, dev: &DeviceState, now: DateTime<Utc>) -> Comm {
        let comm_bad = |q: &Quality| match q {
            Quality::Stale => true,
            Quality::Bad(r) => transport_failure(r),
            Quality::Good => false,
        };
        let slots = || dev.roles.iter().map(|&(_, i)| &self.slots[i]);
        let newest = slots()
            .filter_map(|s| s.latest.as_ref())
            .max_by_key(|l| l.at);
        let Some(newest) = newest else {
            let origin = site.origin.unwrap_or(now);
            return if now - origin > dev.silence {
                Comm::Lost(
                    format!(
                        "no reading since {}",
                        origin.format("%Y-%m-%d %H:%M:%S UTC")
                    )
                    .into(),
                )
            } else {
                Comm::Unknown(Arc::from("no reading yet"))
            };
        };
        if let Quality::Bad(r) = &newest.quality
            && transport_failure(r)
        {
            return Comm::Lost(r.to_string().into());
        }
        if slots().all(|s| s.latest.as_ref().is_none_or(|l| comm_bad(&l.quality))) {
            return Comm::Lost(Arc::from("every point stale"));
        }
        let age = now - newest.at;
        if age > dev.silence {
            return Comm::Lost(format!("no reading for {} s", age.num_seconds()).into());
        }
        Comm::Ok
    }
}

/// A bad reason that says the device did not answer at all (rather than answering badly).
fn transport_failure(r: &BadReason) -> bool {
    matches!(
        r,
        BadReason::ConnectionLost | BadReason::Timeout | BadReason::Exception(0x0A | 0x0B)
    )
}
