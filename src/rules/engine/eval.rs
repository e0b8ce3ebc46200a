//! The rules themselves: one site's conditions at one instant, from the engine's inputs.
//!
//! Each method of [`Eval`] covers one area of the catalogue (climate, racks, power,
//! gensets, fuel, cooling, fire and water, communication, load tests) and pushes one
//! condition per rule and scope; the models they rely on are stated in the parent module.

use std::sync::Arc;

use chrono::{DateTime, Months, Utc};

use super::{Comm, DeviceState, Input, RuleEngine, SiteState, Slot};
use crate::config::model::{ClimateLimits, DeviceKind, Feed, Redundancy, Role, RoomKind};
use crate::rules::catalogue::{self as cat, RuleSpec};
use crate::rules::climate::dew_point_c;
use crate::rules::condition::{Condition, ConditionKey, Verdict};
use crate::rules::overrides::Where;

/// Where a condition applies, for its fields and its summary.
#[derive(Debug, Clone, Default)]
struct Loc {
    room: Option<Arc<str>>,
    rack: Option<Arc<str>>,
    device: Option<Arc<str>>,
    point: Option<Arc<str>>,
    /// Extra words after the room/rack/device in the summary, e.g. "feed A".
    label: Option<String>,
}

impl Loc {
    fn room(room: &Arc<str>) -> Self {
        Loc {
            room: Some(room.clone()),
            ..Loc::default()
        }
    }

    fn device(dev: &DeviceState) -> Self {
        Loc {
            room: Some(dev.room.clone()),
            rack: dev.rack.clone(),
            device: Some(dev.id.clone()),
            ..Loc::default()
        }
    }

    fn point(dev: &DeviceState, slot: Option<&Slot>) -> Self {
        Loc {
            point: slot.map(|s| s.id.point.clone()),
            ..Loc::device(dev)
        }
    }
}

/// Which side of a limit is bad.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Side {
    /// Active when value > limit.
    Above,
    /// Active when value >= limit.
    AtOrAbove,
    /// Active when value < limit.
    Below,
    /// Active when value <= limit.
    AtOrBelow,
}

/// A numeric check: what the summary says around the value.
struct Numeric<'a> {
    spec: &'static RuleSpec,
    scope: String,
    loc: Loc,
    quantity: &'a str,
    unit: &'static str,
    limit: f64,
    side: Side,
    /// Words after the value when active, e.g. "above 27 degC".
    active: String,
    /// Appended to every summary, e.g. ", dew point 13.9 degC".
    extra: String,
}

/// Number for a summary: one decimal, without a trailing ".0".
fn num(v: f64) -> String {
    let r = (v * 10.0).round() / 10.0;
    if r.fract() == 0.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

fn redundancy_name(r: Redundancy) -> &'static str {
    match r {
        Redundancy::N => "N",
        Redundancy::NPlus1 => "N+1",
        Redundancy::TwoN => "2N",
    }
}

/// Units needed for a redundancy, of `n` (at least one).
fn needed(r: Redundancy, n: usize) -> usize {
    let need = match r {
        Redundancy::N => n,
        Redundancy::NPlus1 => n.saturating_sub(1),
        Redundancy::TwoN => n.div_ceil(2),
    };
    need.max(1)
}

fn feed_name(f: Feed) -> &'static str {
    match f {
        Feed::A => "A",
        Feed::B => "B",
    }
}

/// VESDA level from the enum name (or the raw value for an unnamed one).
fn vesda_level(raw: i64, name: Option<&str>) -> i64 {
    match name {
        Some("normal") => 0,
        Some("alert") => 1,
        Some("action") => 2,
        Some("fire1") => 3,
        Some("fire2") => 4,
        _ => raw,
    }
}

fn vesda_level_name(level: i64) -> &'static str {
    match level {
        i64::MIN..=0 => "normal",
        1 => "Alert",
        2 => "Action",
        3 => "Fire 1",
        _ => "Fire 2",
    }
}

/// One site's evaluation at one instant.
pub(super) struct Eval<'a> {
    pub(super) engine: &'a RuleEngine,
    pub(super) site: &'a SiteState,
    pub(super) now: DateTime<Utc>,
    pub(super) out: &'a mut Vec<Condition>,
}

impl Eval<'_> {
    fn cond(&self, spec: &'static RuleSpec, scope: String, loc: &Loc) -> Condition {
        Condition {
            key: ConditionKey {
                rule: spec.id,
                site: self.site.id.clone(),
                scope: Arc::from(scope),
            },
            class: spec.class,
            verdict: Verdict::Clear { margin: None },
            at: self.now,
            impact: spec.impact,
            urgency: spec.urgency,
            value: None,
            limit: None,
            unit: "",
            room: loc.room.clone(),
            rack: loc.rack.clone(),
            device: loc.device.clone(),
            point: loc.point.clone(),
            summary: String::new(),
        }
    }

    /// "DC dh1 th-a": site name, then room, then rack or device, then the label.
    fn label(&self, loc: &Loc) -> String {
        let mut s = self.site.name.to_string();
        for part in [
            &loc.room,
            &loc.device.as_ref().or(loc.rack.as_ref()).cloned(),
        ]
        .into_iter()
        .flatten()
        {
            s.push(' ');
            s.push_str(part);
        }
        if let Some(l) = &loc.label {
            s.push(' ');
            s.push_str(l);
        }
        s
    }

    /// A numeric check from the best known value and, when some input is unknown, why.
    /// Active as soon as a known value is beyond the limit; else unknown if anything is.
    fn numeric(&mut self, mut n: Numeric<'_>, value: Option<f64>, unknown: Option<Arc<str>>) {
        let overridden = self
            .engine
            .overrides
            .resolve(
                &self.site.id,
                n.spec.id,
                Where {
                    room: n.loc.room.as_deref(),
                    rack: n.loc.rack.as_deref(),
                    device: n.loc.device.as_deref(),
                },
            )
            .limit;
        if let Some(limit) = overridden {
            let side = match n.side {
                Side::Above => "above",
                Side::AtOrAbove => "at or above",
                Side::Below => "below",
                Side::AtOrBelow => "at or below",
            };
            n.limit = limit;
            n.active = format!("{side} {} {} (rule_overrides)", num(limit), n.unit);
        }
        let mut c = self.cond(n.spec, n.scope, &n.loc);
        let label = self.label(&n.loc);
        c.limit = Some(n.limit);
        c.unit = n.unit;
        c.value = value;
        let beyond = value.map(|v| match n.side {
            Side::Above => v > n.limit,
            Side::AtOrAbove => v >= n.limit,
            Side::Below => v < n.limit,
            Side::AtOrBelow => v <= n.limit,
        });
        let unit_sp = if n.unit.is_empty() {
            String::new()
        } else {
            format!(" {}", n.unit)
        };
        match (beyond, value, unknown) {
            (Some(true), Some(v), _) => {
                c.verdict = Verdict::Active;
                c.summary = format!(
                    "{label}: {} {}{unit_sp} {}{}",
                    n.quantity,
                    num(v),
                    n.active,
                    n.extra
                );
            }
            (_, _, Some(reason)) => {
                c.value = None;
                c.summary = format!("{label}: {} unknown ({reason}){}", n.quantity, n.extra);
                c.verdict = Verdict::Unknown { reason };
            }
            (_, Some(v), None) => {
                let margin = match n.side {
                    Side::Above | Side::AtOrAbove => n.limit - v,
                    Side::Below | Side::AtOrBelow => v - n.limit,
                };
                c.verdict = Verdict::Clear {
                    margin: Some(margin.max(0.0)),
                };
                c.summary = format!(
                    "{label}: {} {}{unit_sp}, limit {}{unit_sp}{}",
                    n.quantity,
                    num(v),
                    num(n.limit),
                    n.extra
                );
            }
            (_, None, None) => {
                let reason: Arc<str> = Arc::from("no input");
                c.summary = format!("{label}: {} unknown ({reason})", n.quantity);
                c.verdict = Verdict::Unknown { reason };
            }
        }
        self.out.push(c);
    }

    /// A discrete check: active, clear or unknown, with the summary's words.
    fn discrete(
        &mut self,
        spec: &'static RuleSpec,
        scope: String,
        loc: &Loc,
        active: Input<bool>,
        active_text: &str,
        clear_text: &str,
    ) -> Condition {
        let mut c = self.cond(spec, scope, loc);
        let label = self.label(loc);
        match active {
            Ok(true) => {
                c.verdict = Verdict::Active;
                c.summary = format!("{label}: {active_text}");
            }
            Ok(false) => {
                c.verdict = Verdict::Clear { margin: None };
                c.summary = format!("{label}: {clear_text}");
            }
            Err(reason) => {
                c.summary = format!("{label}: {} unknown ({reason})", spec.id);
                c.verdict = Verdict::Unknown { reason };
            }
        }
        c
    }

    /// Combines indicators: true if any known one is, else unknown if any is, else false.
    fn any(indicators: &[Input<bool>]) -> Input<bool> {
        if indicators.iter().any(|i| matches!(i, Ok(true))) {
            return Ok(true);
        }
        match indicators.iter().find_map(|i| i.as_ref().err()) {
            Some(e) => Err(e.clone()),
            None if indicators.is_empty() => Err(Arc::from("no input")),
            None => Ok(false),
        }
    }

    fn redundancy(
        &mut self,
        spec: &'static RuleSpec,
        scope: String,
        loc: &Loc,
        what: &str,
        units: &[Input<bool>],
        r: Redundancy,
    ) {
        let n = units.len();
        if n == 0 {
            return;
        }
        let need = needed(r, n);
        let avail = units.iter().filter(|u| matches!(u, Ok(true))).count();
        let unknown = units.iter().find_map(|u| u.as_ref().err()).cloned();
        let n_unknown = units.iter().filter(|u| u.is_err()).count();
        let mut c = self.cond(spec, scope, loc);
        let label = self.label(loc);
        c.value = Some(avail as f64);
        c.limit = Some(need as f64);
        c.unit = "units";
        let text = format!(
            "{avail} of {n} {what} available, {need} needed for {}",
            redundancy_name(r)
        );
        if avail >= need {
            c.verdict = Verdict::Clear {
                margin: Some((avail - need) as f64),
            };
            c.summary = format!("{label}: {text}");
        } else if avail + n_unknown >= need {
            let reason = unknown.unwrap_or_else(|| Arc::from("no input"));
            c.summary = format!("{label}: {text}, {n_unknown} unknown ({reason})");
            c.verdict = Verdict::Unknown { reason };
        } else {
            c.verdict = Verdict::Active;
            c.summary = format!("{label}: redundancy lost, {text}");
        }
        self.out.push(c);
    }

    pub(super) fn climate(&mut self) {
        let e = self.engine;
        let now = self.now;
        let band = e.settings.early_warning_band_c;
        for room in &self.site.rooms {
            let Some(lim) = room.climate else { continue };
            let sensors: Vec<&DeviceState> = self
                .site
                .devices
                .iter()
                .filter(|d| d.kind == DeviceKind::EnvSensor && d.room == room.id)
                .collect();
            if sensors.is_empty() {
                continue;
            }
            let mut temps = Vec::new();
            let mut hums = Vec::new();
            let mut dews = Vec::new();
            for d in &sensors {
                let t_slot = e.slot_of(d, &Role::EnvTemperatureC);
                let h_slot = e.slot_of(d, &Role::EnvHumidityPct);
                let t = e.number(d, &Role::EnvTemperatureC, now);
                let h = e.number(d, &Role::EnvHumidityPct, now);
                let dp = match (&t, &h) {
                    (Ok(t), Ok(h)) => dew_point_c(*t, *h),
                    _ => None,
                };
                if let Some(s) = t_slot {
                    let loc = Loc::point(d, Some(s));
                    let scope = format!("point:{}/{}", d.id, s.id.point);
                    self.temperature(
                        &scope,
                        &loc,
                        lim,
                        band,
                        t.as_ref().ok().copied(),
                        t.as_ref().err().cloned(),
                    );
                    self.rate(&scope, &loc, d, s);
                    temps.push(t);
                }
                if let Some(s) = h_slot {
                    let loc = Loc::point(d, Some(s));
                    let scope = format!("point:{}/{}", d.id, s.id.point);
                    self.humidity(
                        &scope,
                        &loc,
                        lim,
                        h.as_ref().ok().copied(),
                        h.as_ref().err().cloned(),
                        dp,
                    );
                    hums.push(h);
                }
                dews.extend(dp);
            }
            let loc = Loc::room(&room.id);
            let scope = format!("room:{}", room.id);
            let (t_max, t_min, t_unknown) = extremes(&temps);
            let (h_max, h_min, h_unknown) = extremes(&hums);
            let dp = dews.iter().copied().reduce(f64::max);
            if !temps.is_empty() {
                self.temperature_sides(&scope, &loc, lim, band, t_max, t_min, t_unknown);
            }
            if !hums.is_empty() {
                self.humidity_sides(&scope, &loc, lim, h_max, h_min, h_unknown, dp);
            }
        }
    }

    fn temperature(
        &mut self,
        scope: &str,
        loc: &Loc,
        lim: ClimateLimits,
        band: f64,
        value: Option<f64>,
        unknown: Option<Arc<str>>,
    ) {
        self.temperature_sides(scope, loc, lim, band, value, value, unknown);
    }

    #[allow(clippy::too_many_arguments)]
    fn temperature_sides(
        &mut self,
        scope: &str,
        loc: &Loc,
        lim: ClimateLimits,
        band: f64,
        max: Option<f64>,
        min: Option<f64>,
        unknown: Option<Arc<str>>,
    ) {
        let (hi, lo) = (lim.temperature_max_c, lim.temperature_min_c);
        let checks = [
            (
                &cat::HALL_TEMPERATURE_HIGH,
                hi,
                Side::Above,
                max,
                format!("above {} degC", num(hi)),
            ),
            (
                &cat::HALL_TEMPERATURE_LOW,
                lo,
                Side::Below,
                min,
                format!("below {} degC", num(lo)),
            ),
            (
                &cat::HALL_TEMPERATURE_NEAR_HIGH,
                hi - band,
                Side::AtOrAbove,
                max,
                format!("within {} degC of the maximum {} degC", num(band), num(hi)),
            ),
            (
                &cat::HALL_TEMPERATURE_NEAR_LOW,
                lo + band,
                Side::AtOrBelow,
                min,
                format!("within {} degC of the minimum {} degC", num(band), num(lo)),
            ),
        ];
        for (spec, limit, side, value, active) in checks {
            self.numeric(
                Numeric {
                    spec,
                    scope: scope.to_string(),
                    loc: loc.clone(),
                    quantity: "temperature",
                    unit: "degC",
                    limit,
                    side,
                    active,
                    extra: String::new(),
                },
                value,
                unknown.clone(),
            );
        }
    }

    fn humidity(
        &mut self,
        scope: &str,
        loc: &Loc,
        lim: ClimateLimits,
        value: Option<f64>,
        unknown: Option<Arc<str>>,
        dew_point: Option<f64>,
    ) {
        self.humidity_sides(scope, loc, lim, value, value, unknown, dew_point);
    }

    #[allow(clippy::too_many_arguments)]
    fn humidity_sides(
        &mut self,
        scope: &str,
        loc: &Loc,
        lim: ClimateLimits,
        max: Option<f64>,
        min: Option<f64>,
        unknown: Option<Arc<str>>,
        dew_point: Option<f64>,
    ) {
        let extra = match dew_point {
            Some(dp) => format!(", dew point {} degC", num(dp)),
            None => String::from(", dew point unknown"),
        };
        let (hi, lo) = (lim.humidity_max_pct, lim.humidity_min_pct);
        let checks = [
            (
                &cat::HALL_HUMIDITY_HIGH,
                hi,
                Side::Above,
                max,
                format!("above {} %RH", num(hi)),
            ),
            (
                &cat::HALL_HUMIDITY_LOW,
                lo,
                Side::Below,
                min,
                format!("below {} %RH", num(lo)),
            ),
        ];
        for (spec, limit, side, value, active) in checks {
            self.numeric(
                Numeric {
                    spec,
                    scope: scope.to_string(),
                    loc: loc.clone(),
                    quantity: "humidity",
                    unit: "%RH",
                    limit,
                    side,
                    active,
                    extra: extra.clone(),
                },
                value,
                unknown.clone(),
            );
        }
    }

    /// Temperature rate of change: the largest difference between the latest value and
    /// any good sample within the window.
    fn rate(&mut self, scope: &str, loc: &Loc, dev: &DeviceState, slot: &Slot) {
        let e = self.engine;
        let limit = e.settings.rate_limit_c;
        let window =
            chrono::Duration::from_std(e.settings.rate_window).unwrap_or(chrono::Duration::MAX);
        let minutes = num(e.settings.rate_window.as_secs_f64() / 60.0);
        let (change, unknown) = match e.number(dev, &Role::EnvTemperatureC, self.now) {
            Err(r) => (None, Some(r)),
            Ok(latest) => {
                let samples: Vec<f64> = slot
                    .history
                    .iter()
                    .flatten()
                    .filter(|(t, _)| self.now - *t <= window)
                    .map(|(_, v)| *v)
                    .collect();
                if samples.len() < 2 {
                    (
                        None,
                        Some(Arc::from(format!(
                            "fewer than 2 samples within {minutes} min"
                        ))),
                    )
                } else {
                    let d = samples
                        .iter()
                        .map(|v| latest - v)
                        .fold(0.0_f64, |a, d| if d.abs() > a.abs() { d } else { a });
                    (Some(d), None)
                }
            }
        };
        let dir = match change {
            Some(d) if d < 0.0 => "fell",
            _ => "rose",
        };
        self.numeric(
            Numeric {
                spec: &cat::HALL_TEMPERATURE_RATE,
                scope: scope.to_string(),
                loc: loc.clone(),
                quantity: "temperature change",
                unit: "degC",
                limit,
                side: Side::Above,
                active: format!(
                    "within {minutes} min ({dir}), more than {} degC",
                    num(limit)
                ),
                extra: String::new(),
            },
            change.map(f64::abs),
            unknown,
        );
    }
}

/// Max and min of the good inputs, and the first reason of an unknown one.
fn extremes(inputs: &[Input<f64>]) -> (Option<f64>, Option<f64>, Option<Arc<str>>) {
    let goods = inputs.iter().filter_map(|i| i.as_ref().ok().copied());
    let max = goods.clone().reduce(f64::max);
    let min = goods.reduce(f64::min);
    let unknown = inputs.iter().find_map(|i| i.as_ref().err()).cloned();
    (max, min, unknown)
}

impl Eval<'_> {
    pub(super) fn racks(&mut self) {
        let e = self.engine;
        let now = self.now;
        for rack in &self.site.racks {
            if rack.feeds.is_empty() {
                continue;
            }
            let mut sum = 0.0;
            let mut unknown = None;
            for &(feed, di) in &rack.feeds {
                let d = &self.site.devices[di];
                let p = e.number(d, &Role::RackFeedPowerKw, now);
                let loc = Loc {
                    room: Some(rack.room.clone()),
                    rack: Some(rack.id.clone()),
                    device: Some(d.id.clone()),
                    point: e
                        .slot_of(d, &Role::RackFeedPowerKw)
                        .map(|s| s.id.point.clone()),
                    label: Some(format!("(rack {} feed {})", rack.id, feed_name(feed))),
                };
                self.numeric(
                    Numeric {
                        spec: &cat::RACK_FEED_OVERLOAD,
                        scope: format!("rack:{}/{}", rack.id, feed_name(feed)),
                        loc,
                        quantity: "power",
                        unit: "kW",
                        limit: rack.limit_kw,
                        side: Side::Above,
                        active: format!(
                            "above the rack limit {} kW (overload)",
                            num(rack.limit_kw)
                        ),
                        extra: String::new(),
                    },
                    p.as_ref().ok().copied(),
                    p.as_ref().err().cloned(),
                );
                match p {
                    Ok(p) => sum += p.max(0.0),
                    Err(r) => unknown = Some(r),
                }
            }
            let loc = Loc {
                room: Some(rack.room.clone()),
                rack: Some(rack.id.clone()),
                ..Loc::default()
            };
            self.numeric(
                Numeric {
                    spec: &cat::RACK_REDUNDANCY_LOST,
                    scope: format!("rack:{}", rack.id),
                    loc,
                    quantity: "power A+B",
                    unit: "kW",
                    limit: rack.limit_kw,
                    side: Side::Above,
                    active: format!(
                        "above the rack limit {} kW: the rack no longer survives losing a feed",
                        num(rack.limit_kw)
                    ),
                    extra: String::new(),
                },
                Some(sum),
                unknown,
            );
        }
    }

    pub(super) fn power(&mut self) {
        let e = self.engine;
        let now = self.now;
        let site = self.site;
        for d in site
            .devices
            .iter()
            .filter(|d| d.kind == DeviceKind::UtilityMeter)
        {
            let feed = d
                .facts
                .feed
                .map(|f| format!(" {}", feed_name(f)))
                .unwrap_or_default();
            let lost = e.flag(d, &Role::UtilityAvailable, now).map(|a| !a);
            let c = self.discrete(
                &cat::UTILITY_FEED_LOST,
                format!("device:{}", d.id),
                &Loc::point(d, e.slot_of(d, &Role::UtilityAvailable)),
                lost,
                &format!("utility feed{feed} lost"),
                &format!("utility feed{feed} available"),
            );
            self.out.push(c);
        }
        let mut units = Vec::new();
        for d in site.devices.iter().filter(|d| d.kind == DeviceKind::Ups) {
            let source = e.state(d, &Role::UpsOutputSource, now);
            let mut indicators = Vec::new();
            if e.slot_of(d, &Role::UpsOutputSource).is_some() {
                indicators.push(source.clone().map(|(raw, name)| match name.as_deref() {
                    Some(n) => n == "battery",
                    None => raw == 5,
                }));
            }
            if e.slot_of(d, &Role::UpsOnBattery).is_some() {
                indicators.push(e.flag(d, &Role::UpsOnBattery, now));
            }
            let c = self.discrete(
                &cat::UPS_ON_BATTERY,
                format!("device:{}", d.id),
                &Loc::device(d),
                Self::any(&indicators),
                "UPS on battery",
                "UPS not on battery",
            );
            self.out.push(c);

            let rt = e.number(d, &Role::UpsRuntimeRemainingMin, now);
            let backup = site.ups_backup_min;
            self.numeric(
                Numeric {
                    spec: &cat::UPS_RUNTIME_LOW,
                    scope: format!("device:{}", d.id),
                    loc: Loc::point(d, e.slot_of(d, &Role::UpsRuntimeRemainingMin)),
                    quantity: "UPS runtime left",
                    unit: "min",
                    limit: backup,
                    side: Side::Below,
                    active: format!("below the site's backup time {} min", num(backup)),
                    extra: String::new(),
                },
                rt.as_ref().ok().copied(),
                rt.as_ref().err().cloned(),
            );

            let fault = e.flag(d, &Role::UpsFault, now);
            let c = self.discrete(
                &cat::UPS_FAULT,
                format!("device:{}", d.id),
                &Loc::point(d, e.slot_of(d, &Role::UpsFault)),
                fault.clone(),
                "UPS fault",
                "no UPS fault",
            );
            self.out.push(c);

            let bypass = match &source {
                Ok((raw, name)) => Ok(match name.as_deref() {
                    Some(n) => n == "none" || n == "bypass",
                    None => *raw == 2 || *raw == 4,
                }),
                Err(_) if e.slot_of(d, &Role::UpsOutputSource).is_none() => Ok(false),
                Err(r) => Err(r.clone()),
            };
            units.push(match (fault, bypass) {
                (Ok(true), _) | (_, Ok(true)) => Ok(false),
                (Ok(false), Ok(false)) => Ok(true),
                (Err(r), _) | (_, Err(r)) => Err(r),
            });
        }
        let r = site.ups_redundancy;
        self.redundancy(
            &cat::UPS_REDUNDANCY_LOST,
            String::new(),
            &Loc::default(),
            "UPS modules",
            &units,
            r,
        );
    }

    pub(super) fn gensets(&mut self) {
        let e = self.engine;
        let now = self.now;
        let site = self.site;
        let gensets: Vec<&DeviceState> = site
            .devices
            .iter()
            .filter(|d| d.kind == DeviceKind::Genset)
            .collect();
        if gensets.is_empty() {
            return;
        }
        let utility = e.utility_lost(site, now);
        let mut units = Vec::new();
        for g in &gensets {
            let (mut warnings, mut shutdowns, mut unknown) = (Vec::new(), Vec::new(), None);
            for (role, i) in &g.roles {
                let Role::GensetAlarm(name) = role else {
                    continue;
                };
                match e.state(g, role, now) {
                    Ok((2, _)) => warnings.push(name.as_str()),
                    Ok((3, _)) => shutdowns.push(format!("{name} (shutdown)")),
                    Ok((4, _)) => shutdowns.push(format!("{name} (electrical trip)")),
                    Ok(_) => {}
                    Err(r) => unknown = unknown.or(Some((r, *i))),
                }
            }
            let unknown_reason = unknown.map(|(r, _)| r);
            let warn = if !warnings.is_empty() {
                Ok(true)
            } else {
                unknown_reason.clone().map_or(Ok(false), Err)
            };
            let c = self.discrete(
                &cat::GENSET_WARNING,
                format!("device:{}", g.id),
                &Loc::device(g),
                warn,
                &format!("genset warning: {}", warnings.join(", ")),
                "no genset warning",
            );
            self.out.push(c);

            let any_shutdown = !shutdowns.is_empty();
            let (shut, clear_text) = match (&utility, any_shutdown) {
                (Ok(Some(_)), true) => (Ok(true), String::new()),
                (Ok(None), true) => (
                    Ok(false),
                    format!(
                        "shutdown alarm {} present, gensets not needed (utility present)",
                        shutdowns.join(", ")
                    ),
                ),
                (Ok(None), false) => (
                    Ok(false),
                    String::from("gensets not needed (utility present)"),
                ),
                (Err(r), true) => (Err(r.clone()), String::new()),
                // No shutdown alarm: clear whether needed or not, unless a nibble is unknown.
                (Err(_) | Ok(Some(_)), false) => (
                    unknown_reason.clone().map_or(Ok(false), Err),
                    String::from("no shutdown alarm"),
                ),
            };
            let c = self.discrete(
                &cat::GENSET_SHUTDOWN,
                format!("device:{}", g.id),
                &Loc::device(g),
                shut,
                &format!(
                    "genset shutdown while needed (utility lost): {}",
                    shutdowns.join(", ")
                ),
                &clear_text,
            );
            self.out.push(c);

            let ready = match (
                e.state(g, &Role::GensetControlMode, now),
                e.flag(g, &Role::GensetEngineRunning, now),
            ) {
                (Ok((raw, name)), _)
                    if name.as_deref() == Some("auto") || (name.is_none() && raw == 1) =>
                {
                    Ok(true)
                }
                (_, Ok(true)) => Ok(true),
                (Ok(_), Ok(false)) => Ok(false),
                (Err(r), _) | (_, Err(r)) => Err(r),
            };
            units.push(if any_shutdown {
                Ok(false)
            } else {
                match (ready, unknown_reason) {
                    (Ok(false), _) => Ok(false),
                    (Err(r), _) | (Ok(true), Some(r)) => Err(r),
                    (Ok(true), None) => Ok(true),
                }
            });
        }
        let r = site.genset_redundancy;
        self.redundancy(
            &cat::GENSET_REDUNDANCY_LOST,
            String::new(),
            &Loc::default(),
            "gensets",
            &units,
            r,
        );

        // Gensets not carrying the load within the takeover time after utility loss.
        let takeover = e.settings.genset_takeover.as_secs_f64();
        let mut c = self.cond(
            &cat::GENSET_NOT_CARRYING_LOAD,
            String::new(),
            &Loc::default(),
        );
        let name = self.site.name.clone();
        c.unit = "s";
        c.limit = Some(takeover);
        match utility {
            Err(reason) => {
                c.summary = format!("{name}: utility state unknown ({reason})");
                c.verdict = Verdict::Unknown { reason };
            }
            Ok(None) => c.summary = format!("{name}: utility present"),
            Ok(Some(since)) => {
                let elapsed = ((now - since).num_milliseconds() as f64 / 1000.0).max(0.0);
                c.value = Some(elapsed);
                match e.genset_output(site, now) {
                    Ok((true, load, _)) => {
                        c.summary = format!(
                            "{name}: utility lost for {} s, gensets carry {} kW",
                            num(elapsed),
                            num(load)
                        );
                    }
                    _ if elapsed <= takeover => {
                        c.verdict = Verdict::Clear {
                            margin: Some(takeover - elapsed),
                        };
                        c.summary = format!(
                            "{name}: utility lost for {} s, within the {} s takeover time",
                            num(elapsed),
                            num(takeover)
                        );
                    }
                    Ok(_) => {
                        c.verdict = Verdict::Active;
                        c.summary = format!(
                            "{name}: utility lost for {} s and the gensets do not carry the load (takeover time {} s)",
                            num(elapsed),
                            num(takeover)
                        );
                    }
                    Err(reason) => {
                        c.summary = format!(
                            "{name}: utility lost for {} s, genset state unknown ({reason})",
                            num(elapsed)
                        );
                        c.verdict = Verdict::Unknown { reason };
                    }
                }
            }
        }
        self.out.push(c);
    }
}

impl Eval<'_> {
    pub(super) fn fuel(&mut self) {
        let e = self.engine;
        let now = self.now;
        let site = self.site;
        let fleet: Vec<&DeviceState> = site
            .devices
            .iter()
            .filter(|d| {
                d.kind == DeviceKind::Genset
                    && d.facts.fuel_tank_l.is_some()
                    && d.facts.fuel_l_per_h_full.is_some()
                    && d.facts.rated_kw.is_some_and(|r| r > 0.0)
            })
            .collect();
        if fleet.is_empty() {
            return;
        }
        let full: f64 = fleet.iter().filter_map(|d| d.facts.fuel_l_per_h_full).sum();
        let rated: f64 = fleet.iter().filter_map(|d| d.facts.rated_kw).sum();
        let l_per_kwh = full / rated;
        let mut fuel_l = 0.0;
        let mut unknown = None;
        for d in &fleet {
            match e.number(d, &Role::GensetFuelLevelPct, now) {
                Ok(pct) => {
                    fuel_l += d.facts.fuel_tank_l.unwrap_or(0.0) * pct.clamp(0.0, 100.0) / 100.0
                }
                Err(r) => unknown = Some(r),
            }
        }
        let load = e.site_load(site, now);
        for (spec, limit, what) in [
            (
                &cat::FUEL_AUTONOMY_LOW,
                site.autonomy_min_h,
                "the site design",
            ),
            (
                &cat::FUEL_AUTONOMY_CRITICAL,
                e.settings.autonomy_critical_h,
                "the critical minimum",
            ),
        ] {
            let (value, unk, extra) = match &load {
                Err(r) => (None, Some(r.clone()), String::new()),
                Ok(l) if *l < 0.5 => {
                    // No load: autonomy is unbounded, clear whatever the fuel.
                    let mut c = self.cond(spec, String::new(), &Loc::default());
                    c.limit = Some(limit);
                    c.unit = "h";
                    c.summary = format!("{}: no load, fuel {} L", site.name, num(fuel_l));
                    self.out.push(c);
                    continue;
                }
                Ok(l) => (
                    Some(fuel_l / (l * l_per_kwh)),
                    unknown.clone(),
                    format!(" (fuel {} L at {} kW)", num(fuel_l), num(*l)),
                ),
            };
            // With a tank level unknown the autonomy is a lower bound: it proves "clear"
            // when it reaches the limit, and nothing when it does not.
            let (value, unk) = match (value, unk) {
                (Some(v), Some(_)) if v >= limit => (Some(v), None),
                (_, Some(u)) => (None, Some(u)),
                (v, None) => (v, None),
            };
            self.numeric(
                Numeric {
                    spec,
                    scope: String::new(),
                    loc: Loc::default(),
                    quantity: "fuel autonomy",
                    unit: "h",
                    limit,
                    side: Side::Below,
                    active: format!("below {what} {} h", num(limit)),
                    extra,
                },
                value,
                unk,
            );
        }
    }

    pub(super) fn cooling(&mut self) {
        let e = self.engine;
        let now = self.now;
        let site = self.site;
        let mut by_room: Vec<(Arc<str>, Vec<Input<bool>>)> = Vec::new();
        for d in site.devices.iter().filter(|d| d.kind == DeviceKind::Pac) {
            let fault = e.flag(d, &Role::PacFault, now);
            let mut indicators = vec![fault.clone()];
            if e.slot_of(d, &Role::PacStatus).is_some() {
                indicators.push(
                    e.state(d, &Role::PacStatus, now)
                        .map(|(_, n)| matches!(n.as_deref(), Some("alarm" | "abnormal"))),
                );
            }
            let c = self.discrete(
                &cat::PAC_FAULT,
                format!("device:{}", d.id),
                &Loc::device(d),
                Self::any(&indicators),
                "PAC fault",
                "no PAC fault",
            );
            self.out.push(c);
            let state = e.state(d, &Role::PacOperatingState, now);
            let avail = match (fault, state) {
                (Ok(true), _) => Ok(false),
                (_, Ok((raw, name)))
                    if name.as_deref() == Some("off") || (name.is_none() && raw == 0) =>
                {
                    Ok(false)
                }
                (Ok(false), Ok(_)) => Ok(true),
                (Err(r), _) | (_, Err(r)) => Err(r),
            };
            match by_room.iter_mut().find(|(r, _)| *r == d.room) {
                Some((_, v)) => v.push(avail),
                None => by_room.push((d.room.clone(), vec![avail])),
            }
        }
        let r = site.cooling_redundancy;
        for (room, units) in by_room {
            self.redundancy(
                &cat::COOLING_REDUNDANCY_LOST,
                format!("room:{room}"),
                &Loc::room(&room),
                "PACs",
                &units,
                r,
            );
        }
    }

    pub(super) fn fire_and_water(&mut self) {
        let e = self.engine;
        let now = self.now;
        let site = self.site;
        for d in site.devices.iter().filter(|d| d.kind == DeviceKind::Vesda) {
            let level = e
                .state(d, &Role::VesdaAlarmLevel, now)
                .map(|(raw, name)| vesda_level(raw, name.as_deref()));
            let smoke = e
                .number(d, &Role::VesdaSmokePctObsM, now)
                .map(|s| format!(" (smoke {s:.3} %obs/m)"))
                .unwrap_or_default();
            let loc = Loc::point(d, e.slot_of(d, &Role::VesdaAlarmLevel));
            for (spec, k) in [
                (&cat::VESDA_ALERT, 1),
                (&cat::VESDA_ACTION, 2),
                (&cat::VESDA_FIRE1, 3),
                (&cat::VESDA_FIRE2, 4),
            ] {
                let lvl = level.clone();
                let current = lvl
                    .as_ref()
                    .map(|l| vesda_level_name(*l))
                    .unwrap_or("unknown");
                let mut c = self.discrete(
                    spec,
                    format!("device:{}", d.id),
                    &loc,
                    lvl.clone().map(|l| l >= k),
                    &format!("VESDA {current}{smoke}"),
                    &format!("VESDA {current}, below {}{smoke}", vesda_level_name(k)),
                );
                c.value = lvl.ok().map(|l| l as f64);
                c.limit = Some(k as f64);
                self.out.push(c);
            }
        }
        for d in site
            .devices
            .iter()
            .filter(|d| d.kind == DeviceKind::LeakSensor)
        {
            let room_kind = site.rooms.iter().find(|r| r.id == d.room).map(|r| r.kind);
            let mut c = self.discrete(
                &cat::WATER_DETECTED,
                format!("device:{}", d.id),
                &Loc::point(d, e.slot_of(d, &Role::LeakDetected)),
                e.flag(d, &Role::LeakDetected, now),
                "water detected",
                "no water",
            );
            // P1 where water threatens the IT or its power; P2 elsewhere.
            if !matches!(
                room_kind,
                Some(RoomKind::DataHall | RoomKind::UpsRoom | RoomKind::BatteryRoom)
            ) {
                c.urgency = crate::config::model::Urgency::Medium;
            }
            self.out.push(c);
        }
    }

    pub(super) fn communication(&mut self) {
        let e = self.engine;
        let site = self.site;
        let (mut lost, mut unknown, n) = (0usize, 0usize, site.devices.len());
        let mut first_unknown = None;
        for d in &site.devices {
            let state = match e.comm(site, d, self.now) {
                Comm::Ok => Ok(false),
                Comm::Lost(r) => {
                    lost += 1;
                    let c = self.discrete(
                        &cat::DEVICE_COMM_LOST,
                        format!("device:{}", d.id),
                        &Loc::device(d),
                        Ok(true),
                        &format!("communication lost ({r})"),
                        "",
                    );
                    self.out.push(c);
                    continue;
                }
                Comm::Unknown(r) => {
                    unknown += 1;
                    first_unknown.get_or_insert(r.clone());
                    Err(r)
                }
            };
            let c = self.discrete(
                &cat::DEVICE_COMM_LOST,
                format!("device:{}", d.id),
                &Loc::device(d),
                state,
                "communication lost",
                "communicating",
            );
            self.out.push(c);
        }
        if n == 0 {
            return;
        }
        let mut c = self.cond(&cat::MONITORING_BLIND, String::new(), &Loc::default());
        let half = n as f64 / 2.0;
        c.value = Some(lost as f64);
        c.limit = Some(half);
        c.unit = "devices";
        let text = format!("{lost} of {n} devices lost");
        if 2 * lost > n {
            c.verdict = Verdict::Active;
            c.summary = format!("{}: monitoring blind, {text}", site.name);
        } else if 2 * (lost + unknown) > n {
            let reason = first_unknown.unwrap_or_else(|| Arc::from("no input"));
            c.summary = format!("{}: {text}, {unknown} not heard from yet", site.name);
            c.verdict = Verdict::Unknown { reason };
        } else {
            c.verdict = Verdict::Clear {
                margin: Some(half - lost as f64),
            };
            c.summary = format!("{}: {text}", site.name);
        }
        self.out.push(c);
    }

    pub(super) fn load_test_overdue(&mut self) {
        let site = self.site;
        let now = self.now;
        let months = site.load_test_months;
        if months == 0 {
            return;
        }
        let mut c = self.cond(
            &cat::GENSET_LOAD_TEST_OVERDUE,
            String::new(),
            &Loc::default(),
        );
        c.unit = "d";
        let every = if months == 1 {
            String::from("every month")
        } else {
            format!("every {months} months")
        };
        let last = site
            .load_tests
            .iter()
            .filter(|r| r.qualifying)
            .map(|r| r.ended)
            .max();
        let origin = site.origin.unwrap_or(now);
        let since = last.unwrap_or(origin);
        let deadline = since
            .checked_add_months(Months::new(months))
            .unwrap_or(since);
        let days = |d: chrono::Duration| d.num_seconds() as f64 / 86_400.0;
        c.limit = Some(days(deadline - since));
        match last {
            Some(end) => {
                c.value = Some(days(now - end));
                let when = end.format("%Y-%m-%d");
                if now > deadline {
                    c.verdict = Verdict::Active;
                    c.summary = format!(
                        "{}: genset load test overdue, last qualifying test {when}, due {every}",
                        site.name
                    );
                } else {
                    c.verdict = Verdict::Clear {
                        margin: Some(days(deadline - now)),
                    };
                    c.summary = format!("{}: last qualifying genset load test {when}", site.name);
                }
            }
            None if now > deadline => {
                c.verdict = Verdict::Active;
                c.value = Some(days(now - origin));
                c.summary = format!(
                    "{}: genset load test overdue, no qualifying test since {}, due {every}",
                    site.name,
                    origin.format("%Y-%m-%d")
                );
            }
            None => {
                let reason: Arc<str> = Arc::from(format!(
                    "no load test on record since {}",
                    origin.format("%Y-%m-%d %H:%M UTC")
                ));
                c.summary = format!("{}: {reason}", site.name);
                c.verdict = Verdict::Unknown { reason };
            }
        }
        self.out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_needed_by_redundancy() {
        assert_eq!(needed(Redundancy::N, 3), 3);
        assert_eq!(needed(Redundancy::NPlus1, 3), 2);
        assert_eq!(needed(Redundancy::NPlus1, 1), 1);
        assert_eq!(needed(Redundancy::TwoN, 4), 2);
        assert_eq!(needed(Redundancy::TwoN, 5), 3);
        assert_eq!(needed(Redundancy::TwoN, 1), 1);
    }

    #[test]
    fn summary_numbers() {
        assert_eq!(num(27.0), "27");
        assert_eq!(num(27.84), "27.8");
        assert_eq!(num(27.96), "28");
        assert_eq!(num(-0.25), "-0.3");
        assert_eq!(num(9.0566), "9.1");
    }

    #[test]
    fn vesda_levels_by_name_or_raw() {
        assert_eq!(vesda_level(9, Some("fire1")), 3);
        assert_eq!(vesda_level(2, None), 2);
        assert_eq!(vesda_level_name(4), "Fire 2");
        assert_eq!(vesda_level_name(0), "normal");
    }

    #[test]
    fn extremes_keep_the_known_values_and_the_first_reason() {
        let inputs: Vec<Input<f64>> =
            vec![Ok(22.0), Err(Arc::from("x")), Ok(25.0), Err(Arc::from("y"))];
        let (max, min, unknown) = extremes(&inputs);
        assert_eq!((max, min), (Some(25.0), Some(22.0)));
        assert_eq!(unknown.as_deref(), Some("x"));
        assert_eq!(extremes(&[]), (None, None, None));
    }

    #[test]
    fn any_indicator() {
        let e = || Err(Arc::from("bad"));
        assert_eq!(Eval::any(&[e(), Ok(true)]), Ok(true));
        assert!(Eval::any(&[e(), Ok(false)]).is_err());
        assert_eq!(Eval::any(&[Ok(false), Ok(false)]), Ok(false));
        assert!(Eval::any(&[]).is_err());
    }
}
