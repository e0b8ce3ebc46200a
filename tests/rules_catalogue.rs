//! The rule catalogue of issue 4 against the shipped configuration: each rule fires with
//! its priority, value, limit and summary, and stays `Unknown` on bad or stale data.
//!
//! Readings are fed with explicit instants; points are found by role, so the tests follow
//! the shipped profiles.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use dcguard::config::{self, Config, Priority, ProfileTransport, Role};
use dcguard::model::{BadReason, PointId, Reading, Value};
use dcguard::rules::{Condition, LoadTestRecord, RuleEngine, Verdict};

fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap() + Duration::seconds(secs)
}

struct H {
    cfg: Config,
    eng: RuleEngine,
}

impl H {
    fn new() -> H {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let cfg = config::load(&dir).expect("shipped config loads");
        let eng = RuleEngine::new(&cfg);
        H { cfg, eng }
    }

    fn point(&self, site: &str, dev: &str, role: &str) -> PointId {
        let s = self.cfg.site(site).unwrap();
        let d = s.devices.iter().find(|d| d.id == dev).unwrap();
        let role = Role::parse(role).unwrap();
        let name = match &d.profile.transport {
            ProfileTransport::Modbus(m) => m
                .points
                .iter()
                .find(|p| p.role == role)
                .map(|p| p.name.clone()),
            ProfileTransport::Mqtt(m) => m
                .points
                .iter()
                .find(|p| p.role == role)
                .map(|p| p.name.clone()),
        };
        PointId::new(
            site,
            dev,
            &name.unwrap_or_else(|| panic!("{dev} has no {role}")),
        )
    }

    fn value(&mut self, site: &str, dev: &str, role: &str, v: Value, at: DateTime<Utc>) {
        let p = self.point(site, dev, role);
        assert!(self.eng.observe(&Reading::good(p, v, at)));
    }

    fn num(&mut self, dev: &str, role: &str, v: f64, at: DateTime<Utc>) {
        self.value("dc", dev, role, Value::Number(v), at);
    }

    fn flag(&mut self, dev: &str, role: &str, b: bool, at: DateTime<Utc>) {
        self.value("dc", dev, role, Value::Bool(b), at);
    }

    fn state(&mut self, dev: &str, role: &str, raw: i64, name: &str, at: DateTime<Utc>) {
        let v = Value::State {
            raw,
            name: Some(Arc::from(name)),
        };
        self.value("dc", dev, role, v, at);
    }

    fn bad(&mut self, dev: &str, role: &str, reason: BadReason, at: DateTime<Utc>) {
        let p = self.point("dc", dev, role);
        assert!(self.eng.observe(&Reading::bad(p, reason, at)));
    }

    fn devices(&self, site: &str, kind: &str) -> Vec<String> {
        let s = self.cfg.site(site).unwrap();
        s.devices
            .iter()
            .filter(|d| d.kind().as_str() == kind)
            .map(|d| d.id.clone())
            .collect()
    }

    fn prio(&self, c: &Condition) -> Priority {
        self.cfg.priority.priority(c.urgency, c.impact)
    }
}

fn get<'a>(cs: &'a [Condition], site: &str, rule: &str, scope: &str) -> &'a Condition {
    cs.iter()
        .find(|c| c.key.rule == rule && &*c.key.site == site && &*c.key.scope == scope)
        .unwrap_or_else(|| panic!("no condition {rule} {site} {scope:?}"))
}

fn dc<'a>(cs: &'a [Condition], rule: &str, scope: &str) -> &'a Condition {
    get(cs, "dc", rule, scope)
}

fn is_active(c: &Condition) -> bool {
    c.verdict == Verdict::Active
}

fn is_unknown(c: &Condition) -> bool {
    matches!(c.verdict, Verdict::Unknown { .. })
}

fn margin(c: &Condition) -> Option<f64> {
    match c.verdict {
        Verdict::Clear { margin } => margin,
        _ => panic!("{} not clear: {:?}", c.key.rule, c.verdict),
    }
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-6)
}

#[test]
fn with_no_readings_nothing_is_clear_and_nothing_is_active() {
    let mut h = H::new();
    let cs = h.eng.evaluate(t(0));
    assert!(cs.len() > 1000, "{}", cs.len());
    for c in &cs {
        assert!(
            is_unknown(c),
            "{:?} {} {}",
            c.verdict,
            c.key.rule,
            c.summary
        );
    }
    // Every rule of the catalogue appears for the DC.
    for spec in dcguard::rules::catalogue::CATALOGUE {
        assert!(
            cs.iter()
                .any(|c| c.key.rule == spec.id && &*c.key.site == "dc"),
            "{}",
            spec.id
        );
    }
}

#[test]
fn hall_temperature_per_sensor_and_per_room() {
    let mut h = H::new();
    h.num("th-a", "env.temperature_c", 27.8, t(0));
    let cs = h.eng.evaluate(t(5));

    let s = dc(&cs, "hall_temperature_high", "point:th-a/temperature");
    assert!(is_active(s));
    assert_eq!(h.prio(s), Priority::P1);
    assert_eq!((s.value, s.limit, s.unit), (Some(27.8), Some(27.0), "degC"));
    assert_eq!(
        s.summary,
        "DC dh1 th-a: temperature 27.8 degC above 27 degC"
    );
    assert_eq!(s.room.as_deref(), Some("dh1"));
    assert_eq!(s.device.as_deref(), Some("th-a"));
    assert_eq!(s.point.as_deref(), Some("temperature"));

    // The room is above as soon as one good sensor is, even with the others unheard.
    let r = dc(&cs, "hall_temperature_high", "room:dh1");
    assert!(is_active(r));
    assert_eq!(r.summary, "DC dh1: temperature 27.8 degC above 27 degC");
    assert_eq!(
        (r.device.as_deref(), r.room.as_deref()),
        (None, Some("dh1"))
    );
    // ... but it is not clear on the low side while sensors are unknown.
    assert!(is_unknown(dc(&cs, "hall_temperature_low", "room:dh1")));
    let low = dc(&cs, "hall_temperature_low", "point:th-a/temperature");
    assert!(close(margin(low), 9.8));

    // Early warning is active too (P3), and dh2 stays unknown.
    let w = dc(&cs, "hall_temperature_near_high", "room:dh1");
    assert!(is_active(w));
    assert_eq!(h.prio(w), Priority::P3);
    assert!(is_unknown(dc(&cs, "hall_temperature_high", "room:dh2")));

    // Every dh1 sensor good and inside: the room clears, with its margin; the room's
    // value is the hottest sensor.
    for (i, d) in ["th-a", "th-b", "th-c", "th-d", "th-e", "th-f"]
        .iter()
        .enumerate()
    {
        h.num(d, "env.temperature_c", 22.0 + i as f64 * 0.5, t(10));
    }
    let cs = h.eng.evaluate(t(12));
    let r = dc(&cs, "hall_temperature_high", "room:dh1");
    assert!(close(margin(r), 2.5));
    assert_eq!(r.value, Some(24.5));
    let low = dc(&cs, "hall_temperature_low", "room:dh1");
    assert!(close(margin(low), 4.0));
    assert_eq!(low.value, Some(22.0));
}

#[test]
fn temperature_below_minimum_and_early_warnings_at_the_band_edge() {
    let mut h = H::new();
    h.num("th-a", "env.temperature_c", 17.5, t(0));
    h.num("th-b", "env.temperature_c", 26.0, t(0));
    h.num("th-c", "env.temperature_c", 25.9, t(0));
    h.num("th-d", "env.temperature_c", 19.0, t(0));
    let cs = h.eng.evaluate(t(1));
    let low = dc(&cs, "hall_temperature_low", "point:th-a/temperature");
    assert!(is_active(low));
    assert_eq!(h.prio(low), Priority::P1);
    assert_eq!(
        low.summary,
        "DC dh1 th-a: temperature 17.5 degC below 18 degC"
    );
    // Within 1 degC of 27: 26.0 is, 25.9 is not.
    let near = dc(&cs, "hall_temperature_near_high", "point:th-b/temperature");
    assert!(is_active(near));
    assert_eq!(near.limit, Some(26.0));
    assert_eq!(
        near.summary,
        "DC dh1 th-b: temperature 26 degC within 1 degC of the maximum 27 degC"
    );
    assert!(!is_active(dc(
        &cs,
        "hall_temperature_high",
        "point:th-b/temperature"
    )));
    let c = dc(&cs, "hall_temperature_near_high", "point:th-c/temperature");
    assert!(close(margin(c), 0.1));
    let near_low = dc(&cs, "hall_temperature_near_low", "point:th-d/temperature");
    assert!(is_active(near_low));
    assert_eq!(h.prio(near_low), Priority::P3);
}

#[test]
fn bad_and_stale_inputs_are_unknown_never_clear() {
    let mut h = H::new();
    h.num("th-a", "env.temperature_c", 22.0, t(0));
    let cs = h.eng.evaluate(t(1));
    assert!(margin(dc(&cs, "hall_temperature_high", "point:th-a/temperature")).is_some());

    // A bad reading after a good one: unknown, with the reason.
    h.bad(
        "th-a",
        "env.temperature_c",
        BadReason::Decode("missing field".into()),
        t(10),
    );
    let cs = h.eng.evaluate(t(11));
    let c = dc(&cs, "hall_temperature_high", "point:th-a/temperature");
    match &c.verdict {
        Verdict::Unknown { reason } => assert!(reason.contains("th-a/temperature"), "{reason}"),
        v => panic!("{v:?}"),
    }
    assert_eq!(c.value, None);

    // An explicit stale reading.
    h.num("th-a", "env.temperature_c", 22.0, t(20));
    h.eng.observe(&Reading::stale(
        h.point("dc", "th-a", "env.temperature_c"),
        t(60),
    ));
    let cs = h.eng.evaluate(t(61));
    assert!(is_unknown(dc(
        &cs,
        "hall_temperature_high",
        "point:th-a/temperature"
    )));

    // A good value that grew too old: 10 s interval, stale after 3, one more of grace.
    h.num("th-b", "env.temperature_c", 30.0, t(100));
    let cs = h.eng.evaluate(t(140));
    assert!(is_active(dc(
        &cs,
        "hall_temperature_high",
        "point:th-b/temperature"
    )));
    let cs = h.eng.evaluate(t(141));
    let c = dc(&cs, "hall_temperature_high", "point:th-b/temperature");
    match &c.verdict {
        Verdict::Unknown { reason } => assert!(reason.contains("41 s old"), "{reason}"),
        v => panic!("{v:?}"),
    }

    // A reading older than the latest is ignored.
    h.num("th-c", "env.temperature_c", 23.0, t(200));
    h.num("th-c", "env.temperature_c", 35.0, t(150));
    let cs = h.eng.evaluate(t(201));
    assert!(!is_active(dc(
        &cs,
        "hall_temperature_high",
        "point:th-c/temperature"
    )));
}

#[test]
fn humidity_with_dew_point_in_the_summary() {
    let mut h = H::new();
    h.num("th-a", "env.temperature_c", 25.0, t(0));
    h.num("th-a", "env.humidity_pct", 50.0, t(0));
    h.num("th-b", "env.temperature_c", 25.0, t(0));
    h.num("th-b", "env.humidity_pct", 65.0, t(0));
    h.num("th-c", "env.humidity_pct", 28.0, t(0));
    let cs = h.eng.evaluate(t(1));
    let a = dc(&cs, "hall_humidity_high", "point:th-a/humidity");
    assert!(close(margin(a), 10.0));
    assert_eq!(
        a.summary,
        "DC dh1 th-a: humidity 50 %RH, limit 60 %RH, dew point 13.9 degC"
    );
    let b = dc(&cs, "hall_humidity_high", "point:th-b/humidity");
    assert!(is_active(b));
    assert_eq!(h.prio(b), Priority::P1);
    assert_eq!((b.value, b.limit, b.unit), (Some(65.0), Some(60.0), "%RH"));
    assert_eq!(
        b.summary,
        "DC dh1 th-b: humidity 65 %RH above 60 %RH, dew point 18 degC"
    );
    let c = dc(&cs, "hall_humidity_low", "point:th-c/humidity");
    assert!(is_active(c));
    assert!(c.summary.ends_with("dew point unknown"), "{}", c.summary);
    // The room: highest humidity and highest dew point of its sensors.
    let r = dc(&cs, "hall_humidity_high", "room:dh1");
    assert!(is_active(r));
    assert_eq!(
        r.summary,
        "DC dh1: humidity 65 %RH above 60 %RH, dew point 18 degC"
    );
    assert!(is_active(dc(&cs, "hall_humidity_low", "room:dh1")));
}

#[test]
fn temperature_rate_of_change() {
    let mut h = H::new();
    let rate = |cs: &[Condition]| dc(cs, "hall_temperature_rate", "point:th-a/temperature").clone();
    h.num("th-a", "env.temperature_c", 20.0, t(0));
    let c = rate(&h.eng.evaluate(t(0)));
    assert!(is_unknown(&c), "one sample is not a rate");
    h.num("th-a", "env.temperature_c", 22.0, t(300));
    h.num("th-a", "env.temperature_c", 25.0, t(600));
    let c = rate(&h.eng.evaluate(t(600)));
    assert!(close(margin(&c), 0.0), "exactly 5 degC is not more than 5");
    h.num("th-a", "env.temperature_c", 25.5, t(610));
    let c = rate(&h.eng.evaluate(t(610)));
    assert!(is_active(&c));
    assert_eq!(h.prio(&c), Priority::P2);
    assert_eq!((c.value, c.limit), (Some(5.5), Some(5.0)));
    assert_eq!(
        c.summary,
        "DC dh1 th-a: temperature change 5.5 degC within 15 min (rose), more than 5 degC"
    );
    // 15 min later the 20 degC sample has left the window.
    h.num("th-a", "env.temperature_c", 25.5, t(910));
    let c = rate(&h.eng.evaluate(t(910)));
    assert!(close(margin(&c), 1.5), "{:?}", c.verdict);
    // A fall counts as well.
    h.num("th-a", "env.temperature_c", 19.0, t(1000));
    let c = rate(&h.eng.evaluate(t(1000)));
    assert!(is_active(&c));
    assert!(c.summary.contains("(fell)"), "{}", c.summary);
}

#[test]
fn rack_feed_overload_and_a_plus_b() {
    let mut h = H::new();
    h.num("A01-a", "rack_feed.power_kw", 5.4, t(0));
    h.num("A01-b", "rack_feed.power_kw", 0.2, t(0));
    h.num("A02-a", "rack_feed.power_kw", 3.0, t(0));
    h.num("A02-b", "rack_feed.power_kw", 2.5, t(0));
    h.num("A03-a", "rack_feed.power_kw", 2.0, t(0));
    h.bad("A03-b", "rack_feed.power_kw", BadReason::Timeout, t(0));
    h.num("A04-a", "rack_feed.power_kw", 5.2, t(0));
    h.bad("A04-b", "rack_feed.power_kw", BadReason::Timeout, t(0));
    let cs = h.eng.evaluate(t(1));
    let o = dc(&cs, "rack_feed_overload", "rack:A01/A");
    assert!(is_active(o));
    assert_eq!(h.prio(o), Priority::P1);
    assert_eq!((o.value, o.limit, o.unit), (Some(5.4), Some(5.0), "kW"));
    assert_eq!(o.rack.as_deref(), Some("A01"));
    assert_eq!(
        o.summary,
        "DC dh1 A01-a (rack A01 feed A): power 5.4 kW above the rack limit 5 kW (overload)"
    );
    let s = dc(&cs, "rack_redundancy_lost", "rack:A01");
    assert!(is_active(s));
    assert_eq!(h.prio(s), Priority::P2);
    assert!(close(s.value, 5.6));
    // Each feed fine, the sum not.
    assert!(!is_active(dc(&cs, "rack_feed_overload", "rack:A02/A")));
    let s2 = dc(&cs, "rack_redundancy_lost", "rack:A02");
    assert!(is_active(s2));
    assert_eq!(
        s2.summary,
        "DC dh1 A02: power A+B 5.5 kW above the rack limit 5 kW: the rack no longer survives losing a feed"
    );
    // One feed unknown: unknown, unless the other alone is already above.
    assert!(is_unknown(dc(&cs, "rack_redundancy_lost", "rack:A03")));
    assert!(is_unknown(dc(&cs, "rack_feed_overload", "rack:A03/B")));
    assert!(is_active(dc(&cs, "rack_redundancy_lost", "rack:A04")));
}

#[test]
fn smart_dc_rack_limits_by_class() {
    let mut h = H::new();
    let s = h.cfg.site("smart-dc").unwrap();
    let net = s
        .racks
        .iter()
        .find(|r| r.class == config::RackClass::Network)
        .unwrap();
    let rack = net.id.clone();
    let meters: Vec<String> = s
        .devices
        .iter()
        .filter(|d| d.rack.as_deref() == Some(rack.as_str()))
        .map(|d| d.id.clone())
        .collect();
    assert_eq!(meters.len(), 2);
    for m in &meters {
        h.value(
            "smart-dc",
            m,
            "rack_feed.power_kw",
            Value::Number(1.2),
            t(0),
        );
    }
    let cs = h.eng.evaluate(t(1));
    let c = get(
        &cs,
        "smart-dc",
        "rack_redundancy_lost",
        &format!("rack:{rack}"),
    );
    assert!(is_active(c));
    assert_eq!((c.value, c.limit), (Some(2.4), Some(2.0)));
    assert!(c.summary.starts_with("Smart DC "), "{}", c.summary);
}

#[test]
fn utility_ups_and_battery_runtime() {
    let mut h = H::new();
    h.flag("util-a", "utility.available", false, t(0));
    h.flag("util-b", "utility.available", true, t(0));
    h.state("ups-1", "ups.output_source", 5, "battery", t(0));
    h.flag("ups-1", "ups.on_battery", true, t(0));
    h.num("ups-1", "ups.runtime_remaining_min", 8.0, t(0));
    h.state("ups-2", "ups.output_source", 3, "normal", t(0));
    h.flag("ups-2", "ups.on_battery", false, t(0));
    h.num("ups-2", "ups.runtime_remaining_min", 25.0, t(0));
    h.state("ups-3", "ups.output_source", 3, "normal", t(0));
    h.bad("ups-3", "ups.on_battery", BadReason::Exception(0x0B), t(0));
    let cs = h.eng.evaluate(t(1));

    let u = dc(&cs, "utility_feed_lost", "device:util-a");
    assert!(is_active(u));
    assert_eq!(h.prio(u), Priority::P2);
    assert_eq!(u.summary, "DC elec util-a: utility feed A lost");
    assert_eq!(margin(dc(&cs, "utility_feed_lost", "device:util-b")), None);

    let b = dc(&cs, "ups_on_battery", "device:ups-1");
    assert!(is_active(b));
    assert_eq!(h.prio(b), Priority::P1);
    assert_eq!(b.summary, "DC ups1 ups-1: UPS on battery");
    assert_eq!(margin(dc(&cs, "ups_on_battery", "device:ups-2")), None);
    assert!(is_unknown(dc(&cs, "ups_on_battery", "device:ups-3")));

    let r = dc(&cs, "ups_runtime_low", "device:ups-1");
    assert!(is_active(r));
    assert_eq!(h.prio(r), Priority::P1);
    assert_eq!((r.value, r.limit, r.unit), (Some(8.0), Some(10.0), "min"));
    assert_eq!(
        r.summary,
        "DC ups1 ups-1: UPS runtime left 8 min below the site's backup time 10 min"
    );
    assert!(close(
        margin(dc(&cs, "ups_runtime_low", "device:ups-2")),
        15.0
    ));
}

/// Feeds every genset of the DC a healthy, idle state at `at`.
fn gensets_idle(h: &mut H, at: DateTime<Utc>) {
    for g in h.devices("dc", "genset") {
        h.state(&g, "genset.control_mode", 1, "auto", at);
        h.flag(&g, "genset.engine_running", false, at);
        h.flag(&g, "genset.breaker_closed", false, at);
        h.num(&g, "genset.load_kw", 0.0, at);
        h.num(&g, "genset.fuel_level_pct", 100.0, at);
        let s = h.cfg.site("dc").unwrap();
        let d = s.devices.iter().find(|d| d.id == g).unwrap();
        let ProfileTransport::Modbus(m) = &d.profile.transport else {
            panic!()
        };
        let alarms: Vec<String> = m
            .points
            .iter()
            .filter(|p| matches!(p.role, Role::GensetAlarm(_)))
            .map(|p| p.role.name())
            .collect();
        for a in alarms {
            h.state(&g, &a, 1, "not_active", at);
        }
    }
}

fn utility(h: &mut H, available: bool, at: DateTime<Utc>) {
    h.flag("util-a", "utility.available", available, at);
    h.flag("util-b", "utility.available", available, at);
    h.num(
        "util-a",
        "utility.power_kw",
        if available { 750.0 } else { 0.0 },
        at,
    );
    h.num(
        "util-b",
        "utility.power_kw",
        if available { 750.0 } else { 0.0 },
        at,
    );
}

#[test]
fn gensets_must_carry_the_load_within_the_takeover_time() {
    let mut h = H::new();
    utility(&mut h, true, t(0));
    gensets_idle(&mut h, t(0));
    let cs = h.eng.evaluate(t(0));
    let c = dc(&cs, "genset_not_carrying_load", "");
    assert_eq!(margin(c), None);
    assert_eq!(c.summary, "DC: utility present");

    utility(&mut h, false, t(10));
    utility(&mut h, false, t(30));
    gensets_idle(&mut h, t(30));
    let cs = h.eng.evaluate(t(30));
    let c = dc(&cs, "genset_not_carrying_load", "");
    assert!(close(margin(c), 10.0), "{:?}", c.verdict);
    // The utility readings repeat "false": the loss still counts from t(10).
    utility(&mut h, false, t(40));
    gensets_idle(&mut h, t(41));
    let cs = h.eng.evaluate(t(41));
    let c = dc(&cs, "genset_not_carrying_load", "");
    assert!(is_active(c));
    assert_eq!(h.prio(c), Priority::P1);
    assert_eq!((c.value, c.limit, c.unit), (Some(31.0), Some(30.0), "s"));
    assert_eq!(
        c.summary,
        "DC: utility lost for 31 s and the gensets do not carry the load (takeover time 30 s)"
    );
    // Both feeds lost: each feed's own condition too.
    assert!(is_active(dc(&cs, "utility_feed_lost", "device:util-b")));

    utility(&mut h, false, t(45));
    h.flag("gen-1", "genset.breaker_closed", true, t(45));
    h.num("gen-1", "genset.load_kw", 800.0, t(45));
    let cs = h.eng.evaluate(t(45));
    let c = dc(&cs, "genset_not_carrying_load", "");
    assert_eq!(margin(c), None);
    assert_eq!(c.summary, "DC: utility lost for 35 s, gensets carry 800 kW");

    // Breaker state unknown after the takeover time: unknown, not clear.
    utility(&mut h, false, t(46));
    h.bad(
        "gen-1",
        "genset.breaker_closed",
        BadReason::ConnectionLost,
        t(46),
    );
    let cs = h.eng.evaluate(t(46));
    assert!(is_unknown(dc(&cs, "genset_not_carrying_load", "")));
}

#[test]
fn genset_alarm_nibbles_and_redundancy() {
    let mut h = H::new();
    utility(&mut h, true, t(0));
    gensets_idle(&mut h, t(0));
    h.state(
        "gen-1",
        "genset.alarm.low_oil_pressure",
        3,
        "shutdown",
        t(0),
    );
    h.state(
        "gen-2",
        "genset.alarm.low_battery_voltage",
        2,
        "warning",
        t(0),
    );
    let cs = h.eng.evaluate(t(1));
    // Shutdown while not needed: not the P1 rule, but the genset is unavailable.
    let s = dc(&cs, "genset_shutdown", "device:gen-1");
    assert_eq!(margin(s), None);
    assert!(
        s.summary.contains("low_oil_pressure (shutdown) present"),
        "{}",
        s.summary
    );
    let w = dc(&cs, "genset_warning", "device:gen-2");
    assert!(is_active(w));
    assert_eq!(h.prio(w), Priority::P3);
    assert_eq!(
        w.summary,
        "DC gen gen-2: genset warning: low_battery_voltage"
    );
    let r = dc(&cs, "genset_redundancy_lost", "");
    assert!(close(margin(r), 0.0), "2 of 3 available, 2 needed");
    assert_eq!(r.summary, "DC: 2 of 3 gensets available, 2 needed for N+1");

    // A second genset out (stopped): redundancy lost (P2).
    h.state("gen-3", "genset.control_mode", 0, "stop", t(2));
    let cs = h.eng.evaluate(t(2));
    let r = dc(&cs, "genset_redundancy_lost", "");
    assert!(is_active(r));
    assert_eq!(h.prio(r), Priority::P2);
    assert_eq!((r.value, r.limit), (Some(1.0), Some(2.0)));

    // Utility lost: the shutdown alarm is now the P1.
    utility(&mut h, false, t(3));
    let cs = h.eng.evaluate(t(3));
    let s = dc(&cs, "genset_shutdown", "device:gen-1");
    assert!(is_active(s));
    assert_eq!(h.prio(s), Priority::P1);
    assert_eq!(
        s.summary,
        "DC gen gen-1: genset shutdown while needed (utility lost): low_oil_pressure (shutdown)"
    );
    // A nibble unknown: warning unknown, not clear.
    h.bad("gen-3", "genset.alarm.over_speed", BadReason::Timeout, t(4));
    let cs = h.eng.evaluate(t(4));
    assert!(is_unknown(dc(&cs, "genset_warning", "device:gen-3")));
}

#[test]
fn ups_and_pac_faults_and_their_redundancy() {
    let mut h = H::new();
    for u in ["ups-1", "ups-2", "ups-3"] {
        h.flag(u, "ups.fault", false, t(0));
        h.state(u, "ups.output_source", 3, "normal", t(0));
    }
    h.flag("ups-1", "ups.fault", true, t(0));
    for i in 1..=5 {
        let p = format!("pac-dh1-{i}");
        h.flag(&p, "pac.fault", false, t(0));
        h.state(&p, "pac.status", 1, "normal", t(0));
        h.state(
            &p,
            "pac.operating_state",
            if i == 5 { 2 } else { 1 },
            if i == 5 { "standby" } else { "on" },
            t(0),
        );
    }
    h.flag("pac-dh1-1", "pac.fault", true, t(0));
    let cs = h.eng.evaluate(t(1));
    let f = dc(&cs, "ups_fault", "device:ups-1");
    assert!(is_active(f));
    assert_eq!(h.prio(f), Priority::P2);
    assert!(close(margin(dc(&cs, "ups_redundancy_lost", "")), 0.0));
    let p = dc(&cs, "pac_fault", "device:pac-dh1-1");
    assert!(is_active(p));
    assert_eq!(h.prio(p), Priority::P2);
    assert_eq!(p.summary, "DC dh1 pac-dh1-1: PAC fault");
    // 4 of 5 (standby counts), 4 needed for N+1.
    assert!(close(
        margin(dc(&cs, "cooling_redundancy_lost", "room:dh1")),
        0.0
    ));
    assert!(is_unknown(dc(&cs, "cooling_redundancy_lost", "room:dh2")));

    h.state("ups-2", "ups.output_source", 4, "bypass", t(2));
    h.state("pac-dh1-2", "pac.operating_state", 0, "off", t(2));
    let cs = h.eng.evaluate(t(2));
    let u = dc(&cs, "ups_redundancy_lost", "");
    assert!(is_active(u));
    assert_eq!(h.prio(u), Priority::P2);
    assert_eq!(
        u.summary,
        "DC: redundancy lost, 1 of 3 UPS modules available, 2 needed for N+1"
    );
    let c = dc(&cs, "cooling_redundancy_lost", "room:dh1");
    assert!(is_active(c));
    assert_eq!(
        c.summary,
        "DC dh1: redundancy lost, 3 of 5 PACs available, 4 needed for N+1"
    );
}

#[test]
fn fuel_autonomy_at_the_present_load() {
    let mut h = H::new();
    utility(&mut h, true, t(0));
    gensets_idle(&mut h, t(0));
    // 1500 kW on utility; 3 x 4000 L, 265 L/h at 1000 kW each: 397.5 L/h.
    let cs = h.eng.evaluate(t(1));
    let c = dc(&cs, "fuel_autonomy_low", "");
    assert!(close(margin(c), 12000.0 / 397.5 - 12.0));
    for g in ["gen-1", "gen-2", "gen-3"] {
        h.num(g, "genset.fuel_level_pct", 30.0, t(2));
    }
    let cs = h.eng.evaluate(t(2));
    let c = dc(&cs, "fuel_autonomy_low", "");
    assert!(is_active(c));
    assert_eq!(h.prio(c), Priority::P2);
    assert!(close(c.value, 3600.0 / 397.5));
    assert_eq!((c.limit, c.unit), (Some(12.0), "h"));
    assert_eq!(
        c.summary,
        "DC: fuel autonomy 9.1 h below the site design 12 h (fuel 3600 L at 1500 kW)"
    );
    assert!(!is_active(dc(&cs, "fuel_autonomy_critical", "")));
    for g in ["gen-1", "gen-2", "gen-3"] {
        h.num(g, "genset.fuel_level_pct", 10.0, t(3));
    }
    let cs = h.eng.evaluate(t(3));
    let c = dc(&cs, "fuel_autonomy_critical", "");
    assert!(is_active(c));
    assert_eq!(h.prio(c), Priority::P1);
    assert_eq!(c.limit, Some(4.0));
    // A tank level unknown and the known fuel not enough: unknown.
    h.bad(
        "gen-3",
        "genset.fuel_level_pct",
        BadReason::Sentinel {
            raw: 0xFFFC,
            reason: "transducer fault".into(),
        },
        t(4),
    );
    let cs = h.eng.evaluate(t(4));
    assert!(is_unknown(dc(&cs, "fuel_autonomy_low", "")));
}

#[test]
fn vesda_levels_and_water() {
    let mut h = H::new();
    h.state("vesda-dh1-1", "vesda.alarm_level", 3, "fire1", t(0));
    h.num("vesda-dh1-1", "vesda.smoke_pct_obs_m", 0.12, t(0));
    h.state("vesda-dh1-2", "vesda.alarm_level", 1, "alert", t(0));
    h.flag("leak-dh1-1", "leak.detected", true, t(0));
    h.flag("leak-ups1-1", "leak.detected", false, t(0));
    let cs = h.eng.evaluate(t(1));
    let expect = [
        ("vesda_alert", true, Priority::P3),
        ("vesda_action", true, Priority::P2),
        ("vesda_fire1", true, Priority::P1),
        ("vesda_fire2", false, Priority::P1),
    ];
    for (rule, active, p) in expect {
        let c = dc(&cs, rule, "device:vesda-dh1-1");
        assert_eq!(is_active(c), active, "{rule}");
        assert_eq!(h.prio(c), p, "{rule}");
    }
    let f = dc(&cs, "vesda_fire1", "device:vesda-dh1-1");
    assert_eq!(
        f.summary,
        "DC dh1 vesda-dh1-1: VESDA Fire 1 (smoke 0.120 %obs/m)"
    );
    assert_eq!((f.value, f.limit), (Some(3.0), Some(3.0)));
    assert!(is_active(dc(&cs, "vesda_alert", "device:vesda-dh1-2")));
    assert!(!is_active(dc(&cs, "vesda_action", "device:vesda-dh1-2")));
    assert!(is_unknown(dc(&cs, "vesda_fire1", "device:vesda-dh2-1")));

    let w = dc(&cs, "water_detected", "device:leak-dh1-1");
    assert!(is_active(w));
    assert_eq!(h.prio(w), Priority::P1);
    assert_eq!(w.summary, "DC dh1 leak-dh1-1: water detected");
    assert_eq!(
        margin(dc(&cs, "water_detected", "device:leak-ups1-1")),
        None
    );
}

#[test]
fn communication_lost_and_monitoring_blind() {
    let mut h = H::new();
    let all: Vec<(String, Role, String)> = h
        .cfg
        .site("dc")
        .unwrap()
        .devices
        .iter()
        .map(|d| {
            let (role, name) = match &d.profile.transport {
                ProfileTransport::Modbus(m) => (m.points[0].role.clone(), m.points[0].name.clone()),
                ProfileTransport::Mqtt(m) => (m.points[0].role.clone(), m.points[0].name.clone()),
            };
            (d.id.clone(), role, name)
        })
        .collect();
    let n = all.len();
    for (d, _, p) in &all {
        h.eng.observe(&Reading::good(
            PointId::new("dc", d, p),
            Value::Number(1.0),
            t(0),
        ));
    }
    h.bad("ups-1", "ups.fault", BadReason::ConnectionLost, t(1));
    // A gateway whose target does not answer is lost too; an illegal address is an answer.
    h.bad("ups-3", "ups.fault", BadReason::Exception(0x0B), t(1));
    h.bad(
        "gen-1",
        "genset.fuel_level_pct",
        BadReason::Exception(0x02),
        t(1),
    );
    let cs = h.eng.evaluate(t(1));
    let c = dc(&cs, "device_comm_lost", "device:ups-1");
    assert!(is_active(c));
    assert_eq!(h.prio(c), Priority::P3);
    assert_eq!(
        c.summary,
        "DC ups1 ups-1: communication lost (connection lost)"
    );
    assert_eq!(margin(dc(&cs, "device_comm_lost", "device:ups-2")), None);
    assert!(is_active(dc(&cs, "device_comm_lost", "device:ups-3")));
    assert_eq!(margin(dc(&cs, "device_comm_lost", "device:gen-1")), None);
    let b = dc(&cs, "monitoring_blind", "");
    assert!(margin(b).is_some());

    // Just over half the devices time out.
    for (d, _, p) in all.iter().take(n / 2 + 1) {
        h.eng.observe(&Reading::bad(
            PointId::new("dc", d, p),
            BadReason::Timeout,
            t(2),
        ));
    }
    let cs = h.eng.evaluate(t(2));
    let b = dc(&cs, "monitoring_blind", "");
    assert!(is_active(b));
    assert_eq!(h.prio(b), Priority::P1);
    let first_half = |id: &str| all.iter().take(n / 2 + 1).any(|(d, _, _)| d == id);
    let lost = n / 2 + 1 + usize::from(!first_half("ups-1")) + usize::from(!first_half("ups-3"));
    assert_eq!(b.value, Some(lost as f64));
    assert!(
        b.summary.starts_with("DC: monitoring blind"),
        "{}",
        b.summary
    );

    // A device silent past its staleness limit counts as lost too.
    let cs = h.eng.evaluate(t(1000));
    assert!(is_active(dc(&cs, "device_comm_lost", "device:ups-2")));
}

/// Runs a utility-off period with gen-1 carrying `kw` (of 1000 kW nameplate) from `start`
/// for `minutes`, evaluating every minute.
fn load_test(h: &mut H, start: i64, minutes: i64, kw: f64) -> Vec<LoadTestRecord> {
    for m in 0..=minutes {
        let at = t(start + m * 60);
        utility(h, m == minutes, at);
        gensets_idle(h, at);
        if m < minutes {
            h.flag("gen-1", "genset.breaker_closed", true, at);
            h.num("gen-1", "genset.load_kw", kw, at);
        }
        h.eng.evaluate(at);
    }
    h.eng.take_new_load_tests()
}

#[test]
fn load_test_detection_at_the_nfpa_thresholds() {
    let mut h = H::new();
    let r = load_test(&mut h, 0, 30, 300.0);
    assert_eq!(r.len(), 1);
    assert_eq!(&*r[0].site, "dc");
    assert_eq!((r[0].started, r[0].ended), (t(0), t(1800)));
    assert!(r[0].qualifying, "30 min at 30 % qualifies");
    assert!((r[0].avg_load_pct - 30.0).abs() < 1e-9);
    assert!((r[0].max_load_pct - 30.0).abs() < 1e-9);

    let r = load_test(&mut h, 10_000, 30, 299.0);
    assert!(!r[0].qualifying, "29.9 % does not");
    let r = load_test(&mut h, 20_000, 29, 800.0);
    assert!(!r[0].qualifying, "29 min does not");
    assert_eq!(h.eng.load_tests("dc").len(), 3);
}

#[test]
fn load_test_overdue_needs_evidence() {
    let mut h = H::new();
    // No record: unknown until the interval has passed since the engine started.
    let cs = h.eng.evaluate(t(0));
    assert!(is_unknown(dc(&cs, "genset_load_test_overdue", "")));
    let cs = h.eng.evaluate(t(31 * 86_400));
    let c = dc(&cs, "genset_load_test_overdue", "");
    assert!(is_active(c));
    assert_eq!(h.prio(c), Priority::P4);

    // A qualifying test recorded earlier (from the store): clear for one month.
    let mut h = H::new();
    h.eng.record_load_test(LoadTestRecord {
        site: Arc::from("dc"),
        started: t(0) - Duration::minutes(40),
        ended: t(0),
        max_load_pct: 45.0,
        avg_load_pct: 40.0,
        qualifying: true,
    });
    // 2026-11-02 + 1 month = 2026-12-02.
    let cs = h.eng.evaluate(t(29 * 86_400));
    let c = dc(&cs, "genset_load_test_overdue", "");
    assert!(close(margin(c), 1.0));
    assert_eq!(c.summary, "DC: last qualifying genset load test 2026-11-02");
    let cs = h.eng.evaluate(t(30 * 86_400 + 1));
    let c = dc(&cs, "genset_load_test_overdue", "");
    assert!(is_active(c));
    assert_eq!(
        c.summary,
        "DC: genset load test overdue, last qualifying test 2026-11-02, due every month"
    );
    // The DRC tests every 2 months.
    let drc = get(&cs, "drc", "genset_load_test_overdue", "");
    assert!(is_unknown(drc));

    // A detected qualifying test clears it.
    let r = load_test(&mut h, 31 * 86_400, 35, 400.0);
    assert!(r[0].qualifying);
    let cs = h.eng.evaluate(t(32 * 86_400));
    assert!(!is_active(dc(&cs, "genset_load_test_overdue", "")));
}

/// A small site: a data hall, a genset room with a leak sensor, four 2N gensets.
const SMALL_SITE: &str = r#"[site]
id = "dc"
name = "DC"
building = "Gd. Syafrudin Prawiranegara I"
time_zone = "Asia/Jakarta"
rack_positions = 4
floor_load_max_kg_m2 = 1200
utility_feeds = 2
fire_suppression = "FM200/NOVEC"
ups = { backup_time_min = 10, battery = "lithium", redundancy = "N+1" }
genset = { rating = "prime", redundancy = "2N", autonomy_min_h = 96, load_test_interval_months = 1 }
cooling = { kind = "pac", redundancy = "N+1" }
data_hall = { temperature_min_c = 18.0, temperature_max_c = 27.0, humidity_min_pct = 30.0, humidity_max_pct = 60.0 }
rack_limit_kw = { storage = 5.0, server = 3.0, network = 2.0 }

[access]
third_party_escort = "required"
destination_room_required = false

[[rooms]]
id = "dh1"
name = "Data Hall 1"
kind = "data_hall"

[[rooms]]
id = "gen"
name = "Genset Room"
kind = "genset_room"

[[devices]]
id = "leak-gen"
profile = "leak-json"
room = "gen"
mqtt = { broker = "sim", topic = "dcguard/dc/gen/leak/leak-gen" }

[[devices]]
id = "th-1"
profile = "env-th-json"
room = "dh1"
mqtt = { broker = "sim", topic = "dcguard/dc/dh1/th/th-1" }

[[devices]]
id = "gen-1"
profile = "genset-dse"
room = "gen"
modbus = { endpoint = "127.0.0.1:15005", unit = 1 }

[[devices]]
id = "gen-2"
profile = "genset-dse"
room = "gen"
modbus = { endpoint = "127.0.0.1:15006", unit = 1 }

[[devices]]
id = "gen-3"
profile = "genset-dse"
room = "gen"
modbus = { endpoint = "127.0.0.1:15007", unit = 1 }

[[devices]]
id = "gen-4"
profile = "genset-dse"
room = "gen"
modbus = { endpoint = "127.0.0.1:15008", unit = 1 }
"#;

/// The shipped daemon file and profiles with [`SMALL_SITE`], in a temporary directory.
fn small_config() -> (tempfile::TempDir, Config) {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("sites")).unwrap();
    std::fs::create_dir_all(dir.path().join("profiles")).unwrap();
    std::fs::copy(
        shipped.join("dcguard.toml"),
        dir.path().join("dcguard.toml"),
    )
    .unwrap();
    for p in ["leak-json", "env-th-json", "genset-dse"] {
        let f = format!("profiles/{p}.toml");
        std::fs::copy(shipped.join(&f), dir.path().join(&f)).unwrap();
    }
    std::fs::write(dir.path().join("sites/dc.toml"), SMALL_SITE).unwrap();
    let cfg = config::load(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    (dir, cfg)
}

#[test]
fn small_site_water_elsewhere_is_p2_and_2n_needs_half() {
    let (_dir, cfg) = small_config();
    let mut h = H {
        eng: RuleEngine::new(&cfg),
        cfg,
    };
    h.flag("leak-gen", "leak.detected", true, t(0));
    for (g, mode) in [
        ("gen-1", "auto"),
        ("gen-2", "auto"),
        ("gen-3", "stop"),
        ("gen-4", "stop"),
    ] {
        h.state(
            g,
            "genset.control_mode",
            if mode == "auto" { 1 } else { 0 },
            mode,
            t(0),
        );
        h.flag(g, "genset.engine_running", false, t(0));
    }
    let gensets = ["gen-1", "gen-2", "gen-3", "gen-4"];
    for g in gensets {
        let alarms: Vec<String> = {
            let d = h
                .cfg
                .site("dc")
                .unwrap()
                .devices
                .iter()
                .find(|d| d.id == g)
                .unwrap();
            let ProfileTransport::Modbus(m) = &d.profile.transport else {
                panic!()
            };
            m.points
                .iter()
                .filter(|p| matches!(p.role, Role::GensetAlarm(_)))
                .map(|p| p.role.name())
                .collect()
        };
        for a in alarms {
            h.state(g, &a, 1, "not_active", t(0));
        }
    }
    let cs = h.eng.evaluate(t(1));
    let w = dc(&cs, "water_detected", "device:leak-gen");
    assert!(is_active(w));
    assert_eq!(h.prio(w), Priority::P2);
    assert_eq!(w.summary, "DC gen leak-gen: water detected");
    // 2N of 4: 2 needed, 2 available.
    let r = dc(&cs, "genset_redundancy_lost", "");
    assert!(close(margin(r), 0.0));
    assert_eq!(r.summary, "DC: 2 of 4 gensets available, 2 needed for 2N");
    h.state("gen-2", "genset.control_mode", 2, "manual", t(2));
    let cs = h.eng.evaluate(t(2));
    assert!(is_active(dc(&cs, "genset_redundancy_lost", "")));
    // Without utility meters the utility state is unknown, and so are the genset rules
    // that depend on it.
    assert!(is_unknown(dc(&cs, "genset_not_carrying_load", "")));
    // ... but no shutdown alarm at all is clear whether the gensets are needed or not.
    assert_eq!(margin(dc(&cs, "genset_shutdown", "device:gen-1")), None);
    // Gensets without fuel facts: no autonomy rule at all.
    assert!(!cs.iter().any(|c| c.key.rule == "fuel_autonomy_low"));
}

#[test]
fn an_engine_for_some_sites_ignores_the_others() {
    let h = H::new();
    let mut eng = RuleEngine::for_sites(&h.cfg, Default::default(), &["drc"]);
    let p = h.point("dc", "th-a", "env.temperature_c");
    assert!(!eng.observe(&Reading::good(p, Value::Number(30.0), t(0))));
    let cs = eng.evaluate(t(10_000));
    assert!(cs.iter().all(|c| &*c.key.site == "drc"));
    // A device never heard from is lost once its staleness limit has passed.
    let lost = cs
        .iter()
        .filter(|c| c.key.rule == "device_comm_lost")
        .all(|c| {
            c.verdict
                == Verdict::Unknown {
                    reason: Arc::from("no reading yet"),
                }
        });
    assert!(lost);
    let cs = eng.evaluate(t(20_000));
    assert!(is_active(get(&cs, "drc", "monitoring_blind", "")));
}
