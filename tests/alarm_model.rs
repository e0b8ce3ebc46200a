//! The alarm lifecycle (`dcguard::alarms`): unit tests per feature with explicit times, a
//! snapshot/restore test, and a model-based property test against a reference model.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use dcguard::alarms::{
    AlarmBook, AlarmError, AlarmKey, AlarmState, BookConfig, Cause, IncidentSignal,
    MaintenanceWindow, Scope, SuppressTarget, Transition,
};
use dcguard::config::model::{Impact, Urgency};
use dcguard::rules::condition::{
    AlarmParams, Condition, ConditionClass, ConditionKey, RuleId, Verdict,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Builders

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_790_000_000 + secs, 0)
        .single()
        .expect("valid test instant")
}

fn params(on: u64, off: u64) -> AlarmParams {
    AlarmParams {
        on_delay: Duration::from_secs(on),
        off_delay: Duration::from_secs(off),
        deadband: 0.0,
        latching: false,
        chatter_transitions: 0,
        chatter_window: Duration::from_secs(60),
    }
}

fn ckey(rule: RuleId, site: &str, scope: &str) -> ConditionKey {
    ConditionKey {
        rule,
        site: Arc::from(site),
        scope: Arc::from(scope),
    }
}

fn cond_in(
    rule: RuleId,
    site: &str,
    scope: &str,
    class: ConditionClass,
    verdict: Verdict,
    at: DateTime<Utc>,
) -> Condition {
    Condition {
        key: ckey(rule, site, scope),
        class,
        verdict,
        at,
        impact: Impact::High,
        urgency: Urgency::High,
        value: Some(28.0),
        limit: Some(27.0),
        unit: "degC",
        room: Some(Arc::from("dh1")),
        rack: None,
        device: Some(Arc::from("ups-1")),
        point: None,
        summary: format!("{site} {rule} {scope}"),
    }
}

const RULE: RuleId = "hall_temperature_high";

fn cond(verdict: Verdict, at: DateTime<Utc>) -> Condition {
    cond_in(
        RULE,
        "dc",
        "room:dh1",
        ConditionClass::Temperature,
        verdict,
        at,
    )
}

fn key() -> AlarmKey {
    AlarmKey::new(RULE, "dc", "room:dh1")
}

fn active() -> Verdict {
    Verdict::Active
}

fn clear() -> Verdict {
    Verdict::Clear { margin: None }
}

fn clear_by(margin: f64) -> Verdict {
    Verdict::Clear {
        margin: Some(margin),
    }
}

fn unknown() -> Verdict {
    Verdict::Unknown {
        reason: Arc::from("stale"),
    }
}

fn state(book: &AlarmBook) -> AlarmState {
    book.get(&key()).map_or(AlarmState::Normal, |a| a.state)
}

fn signals(ts: &[Transition]) -> Vec<IncidentSignal> {
    ts.iter().filter_map(|t| t.incident).collect()
}

/// Applies the same verdict at each of `secs`, collecting transitions.
fn feed(book: &mut AlarmBook, p: &AlarmParams, v: Verdict, secs: &[i64]) -> Vec<Transition> {
    let mut out = Vec::new();
    for s in secs {
        out.extend(book.apply(&cond(v.clone(), t(*s)), p, t(*s)));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// States, acknowledge, incidents

#[test]
fn raise_clear_and_acknowledge_follow_isa_18_2() {
    let mut book = AlarmBook::default();
    let p = params(0, 0);
    let ts = book.apply(&cond(active(), t(0)), &p, t(0));
    assert_eq!(ts.len(), 1);
    assert_eq!(
        (ts[0].from, ts[0].to),
        (AlarmState::Normal, AlarmState::ActiveUnacked)
    );
    assert_eq!(ts[0].cause, Cause::Condition);
    assert_eq!(ts[0].incident, Some(IncidentSignal::Open));
    assert_eq!(ts[0].activation, 1);
    assert_eq!(
        ts[0].incident_key().as_deref(),
        Some("dc/hall_temperature_high/room:dh1#1")
    );
    assert_eq!(ts[0].info.summary, "dc hall_temperature_high room:dh1");

    // The same active verdict again changes nothing and raises no second incident.
    assert!(book.apply(&cond(active(), t(5)), &p, t(5)).is_empty());

    let ts = book.apply(&cond(clear(), t(10)), &p, t(10));
    assert_eq!(ts[0].to, AlarmState::ReturnedUnacked);
    assert_eq!(signals(&ts), vec![IncidentSignal::Resolve]);
    assert_eq!(ts[0].incident_id, Some(1));

    let ts = book
        .acknowledge(&key(), "op1", "checked CRAC", t(20))
        .unwrap();
    assert_eq!(ts[0].to, AlarmState::Normal);
    assert_eq!(ts[0].actor.as_deref(), Some("op1"));
    assert_eq!(ts[0].comment.as_deref(), Some("checked CRAC"));
    assert_eq!(ts[0].incident, None, "the incident is already resolved");

    // Nothing left to acknowledge.
    assert!(matches!(
        book.acknowledge(&key(), "op1", "", t(21)),
        Err(AlarmError::NothingToAcknowledge { .. })
    ));
    assert!(matches!(
        book.acknowledge(&key(), " ", "", t(21)),
        Err(AlarmError::Missing("user"))
    ));
    assert!(matches!(
        book.acknowledge(&AlarmKey::new("x", "dc", ""), "op1", "", t(21)),
        Err(AlarmError::UnknownAlarm(_))
    ));
}

#[test]
fn acknowledged_alarm_returns_to_normal_and_a_new_raise_is_a_new_incident() {
    let mut book = AlarmBook::default();
    let p = params(0, 0);
    feed(&mut book, &p, active(), &[0]);
    let ts = book.acknowledge(&key(), "op1", "on it", t(1)).unwrap();
    assert_eq!(ts[0].to, AlarmState::ActiveAcked);
    assert_eq!(signals(&ts), vec![IncidentSignal::Update]);
    let ts = feed(&mut book, &p, clear(), &[2]);
    assert_eq!(ts[0].to, AlarmState::Normal);
    assert_eq!(signals(&ts), vec![IncidentSignal::Resolve]);
    let ts = feed(&mut book, &p, active(), &[3]);
    assert_eq!(signals(&ts), vec![IncidentSignal::Open]);
    assert_eq!(ts[0].incident_id, Some(2));
}

// ---------------------------------------------------------------------------------------------
// Delays, deadband, Unknown

#[test]
fn on_delay_raises_exactly_at_the_boundary() {
    let mut book = AlarmBook::default();
    let p = params(60, 0);
    assert!(feed(&mut book, &p, active(), &[0, 30, 59]).is_empty());
    let ts = feed(&mut book, &p, active(), &[60]);
    assert_eq!(ts.len(), 1);
    assert_eq!(ts[0].at, t(60));
    // The verdicts before held for the whole delay: it elapsed, this verdict only told us.
    assert_eq!(ts[0].cause, Cause::DelayElapsed);
    // With no delay the verdict itself raises.
    let mut book = AlarmBook::default();
    let ts = feed(&mut book, &params(0, 0), active(), &[0]);
    assert_eq!(ts[0].cause, Cause::Condition);

    // The same by clock tick, with no new verdict.
    let mut book = AlarmBook::default();
    feed(&mut book, &p, active(), &[0]);
    assert!(book.tick(t(59)).is_empty());
    let ts = book.tick(t(60));
    assert_eq!(ts.len(), 1);
    assert_eq!(ts[0].cause, Cause::DelayElapsed);
    assert_eq!(ts[0].to, AlarmState::ActiveUnacked);
}

#[test]
fn a_clear_restarts_the_on_delay() {
    let mut book = AlarmBook::default();
    let p = params(60, 0);
    feed(&mut book, &p, active(), &[0]);
    feed(&mut book, &p, clear(), &[30]);
    assert!(feed(&mut book, &p, active(), &[40, 99]).is_empty());
    assert_eq!(feed(&mut book, &p, active(), &[100]).len(), 1);
}

#[test]
fn unknown_pauses_but_does_not_restart_the_on_delay() {
    let mut book = AlarmBook::default();
    let p = params(60, 0);
    feed(&mut book, &p, active(), &[0]);
    feed(&mut book, &p, unknown(), &[30]);
    // Due at 60, but the latest verdict is Unknown: no raise from bad data.
    assert!(book.tick(t(70)).is_empty());
    assert_eq!(state(&book), AlarmState::Normal);
    // The next good Active verdict completes the delay counted from 0.
    let ts = feed(&mut book, &p, active(), &[75]);
    assert_eq!(ts.len(), 1);
    assert_eq!(ts[0].at, t(75));
}

#[test]
fn off_delay_clears_exactly_at_the_boundary() {
    let mut book = AlarmBook::default();
    let p = params(0, 60);
    feed(&mut book, &p, active(), &[0]);
    assert!(feed(&mut book, &p, clear(), &[100, 159]).is_empty());
    let ts = book.tick(t(160));
    assert_eq!(ts.len(), 1);
    assert_eq!(ts[0].to, AlarmState::ReturnedUnacked);
    assert_eq!(ts[0].cause, Cause::DelayElapsed);

    // An active verdict inside the off-delay restarts it.
    let mut book = AlarmBook::default();
    feed(&mut book, &p, active(), &[0]);
    feed(&mut book, &p, clear(), &[10]);
    feed(&mut book, &p, active(), &[20]);
    assert!(feed(&mut book, &p, clear(), &[30, 89]).is_empty());
    assert_eq!(feed(&mut book, &p, clear(), &[90]).len(), 1);
}

#[test]
fn unknown_never_clears_an_alarm() {
    let mut book = AlarmBook::default();
    let p = params(0, 60);
    feed(&mut book, &p, active(), &[0]);
    // Hours of bad data and ticks: still active.
    for s in (10..36_000).step_by(10) {
        assert!(feed(&mut book, &p, unknown(), &[s]).is_empty());
        assert!(book.tick(t(s + 5)).is_empty());
    }
    assert_eq!(state(&book), AlarmState::ActiveUnacked);

    // Unknown inside the off-delay restarts it: 60 s of good clears after the last bad one.
    feed(&mut book, &p, clear(), &[40_000]);
    feed(&mut book, &p, unknown(), &[40_030]);
    assert!(feed(&mut book, &p, clear(), &[40_040]).is_empty());
    assert!(book.tick(t(40_099)).is_empty());
    assert_eq!(book.tick(t(40_100)).len(), 1);
    assert_eq!(state(&book), AlarmState::ReturnedUnacked);

    // A normal alarm stays normal on Unknown.
    let mut book = AlarmBook::default();
    assert!(feed(&mut book, &params(0, 0), unknown(), &[0, 10, 20]).is_empty());
    assert_eq!(state(&book), AlarmState::Normal);
}

#[test]
fn a_clear_inside_the_deadband_is_not_a_clear() {
    let mut book = AlarmBook::default();
    let mut p = params(0, 0);
    p.deadband = 1.0;
    feed(&mut book, &p, active(), &[0]);
    assert!(feed(&mut book, &p, clear_by(0.5), &[10, 20, 3_600]).is_empty());
    assert!(feed(&mut book, &p, clear_by(f64::NAN), &[3_700]).is_empty());
    assert_eq!(state(&book), AlarmState::ActiveUnacked);
    // Exactly the deadband clears.
    assert_eq!(feed(&mut book, &p, clear_by(1.0), &[3_800]).len(), 1);
    // A discrete clear (no margin) always clears.
    feed(&mut book, &p, active(), &[3_900]);
    assert_eq!(feed(&mut book, &p, clear(), &[3_901]).len(), 1);
}

#[test]
fn a_deadband_clear_restarts_the_off_delay() {
    let mut book = AlarmBook::default();
    let mut p = params(0, 60);
    p.deadband = 1.0;
    feed(&mut book, &p, active(), &[0]);
    feed(&mut book, &p, clear_by(2.0), &[10]);
    feed(&mut book, &p, clear_by(0.5), &[50]);
    assert!(feed(&mut book, &p, clear_by(2.0), &[60, 119]).is_empty());
    assert_eq!(feed(&mut book, &p, clear_by(2.0), &[120]).len(), 1);
}

#[test]
fn late_verdicts_are_ignored() {
    let mut book = AlarmBook::default();
    let p = params(0, 0);
    feed(&mut book, &p, active(), &[100]);
    // A clear sampled before the active verdict arrives late: no regression.
    assert!(book.apply(&cond(clear(), t(50)), &p, t(101)).is_empty());
    assert_eq!(state(&book), AlarmState::ActiveUnacked);
    assert_eq!(book.late_verdicts(), 1);
    // A `now` earlier than the book's clock does not run the clock back.
    book.tick(t(10));
    assert_eq!(book.clock(), Some(t(101)));
}

// ---------------------------------------------------------------------------------------------
// Latching

#[test]
fn latching_alarm_stays_active_until_acknowledged_after_return() {
    let mut book = AlarmBook::default();
    let mut p = params(0, 0);
    p.latching = true;
    feed(&mut book, &p, active(), &[0]);
    // Clear: latched, still active, incident still open.
    assert!(feed(&mut book, &p, clear(), &[10]).is_empty());
    assert_eq!(state(&book), AlarmState::ActiveUnacked);
    assert_eq!(book.get(&key()).and_then(|a| a.incident), Some(1));
    // Re-raise while latched is not a new activation.
    assert!(feed(&mut book, &p, active(), &[20]).is_empty());
    assert_eq!(book.get(&key()).map(|a| a.activation), Some(1));
    // Acknowledged while active: acked; the return then needs a reset acknowledgement.
    let ts = book.acknowledge(&key(), "op1", "", t(30)).unwrap();
    assert_eq!(ts[0].to, AlarmState::ActiveAcked);
    let ts = feed(&mut book, &p, clear(), &[40]);
    assert_eq!(
        (ts[0].from, ts[0].to),
        (AlarmState::ActiveAcked, AlarmState::ActiveUnacked)
    );
    assert_eq!(signals(&ts), vec![IncidentSignal::Update]);
    let ts = book.acknowledge(&key(), "op1", "reset", t(50)).unwrap();
    assert_eq!(ts[0].to, AlarmState::Normal);
    assert_eq!(signals(&ts), vec![IncidentSignal::Resolve]);
}

// ---------------------------------------------------------------------------------------------
// Shelve, out of service, suppression, maintenance windows

#[test]
fn shelve_is_bounded_recorded_and_expires_exactly() {
    let mut book = AlarmBook::new(BookConfig {
        max_shelve: Duration::from_secs(3_600),
        ..BookConfig::default()
    });
    let p = params(0, 0);
    feed(&mut book, &p, clear(), &[0]);
    assert_eq!(
        book.shelve(
            &key(),
            "op1",
            "sensor swap",
            Duration::from_secs(3_601),
            t(1)
        ),
        Err(AlarmError::ShelveTooLong {
            requested: Duration::from_secs(3_601),
            max: Duration::from_secs(3_600)
        })
    );
    assert_eq!(
        book.shelve(&key(), "op1", "sensor swap", Duration::ZERO, t(1)),
        Err(AlarmError::ShelveZero)
    );
    assert_eq!(
        book.shelve(&key(), "op1", "", Duration::from_secs(60), t(1)),
        Err(AlarmError::Missing("reason"))
    );
    let ts = book
        .shelve(
            &key(),
            "op1",
            "sensor swap",
            Duration::from_secs(3_600),
            t(100),
        )
        .unwrap();
    assert_eq!(ts[0].cause, Cause::Shelve);
    assert!(ts[0].shelved);
    assert_eq!(ts[0].comment.as_deref(), Some("sensor swap"));
    assert_eq!(
        book.get(&key())
            .and_then(|a| a.shelf.as_ref())
            .map(|s| s.until),
        Some(t(3_700))
    );

    // Raised while shelved: recorded, flagged, no incident.
    let ts = feed(&mut book, &p, active(), &[200]);
    assert_eq!(ts.len(), 1);
    assert!(ts[0].shelved);
    assert_eq!(ts[0].incident, None);

    assert!(book.tick(t(3_699)).is_empty());
    let ts = book.tick(t(3_700));
    assert_eq!(ts.len(), 1);
    assert_eq!(ts[0].cause, Cause::ShelveExpired);
    assert!(!ts[0].shelved);
    // Still active at expiry: its incident opens now.
    assert_eq!(ts[0].incident, Some(IncidentSignal::Open));
    assert_eq!(
        book.unshelve(&key(), "op1", t(3_701)),
        Err(AlarmError::NotShelved(key()))
    );
}

#[test]
fn unshelve_of_a_cleared_alarm_opens_nothing() {
    let mut book = AlarmBook::default();
    let p = params(0, 0);
    feed(&mut book, &p, clear(), &[0]);
    book.shelve(&key(), "op1", "noisy", Duration::from_secs(600), t(1))
        .unwrap();
    feed(&mut book, &p, active(), &[10]);
    feed(&mut book, &p, clear(), &[20]);
    let ts = book.unshelve(&key(), "op1", t(30)).unwrap();
    assert_eq!(ts[0].cause, Cause::Unshelve);
    assert_eq!(ts[0].incident, None);
    assert_eq!(state(&book), AlarmState::ReturnedUnacked);
}

#[test]
fn out_of_service_is_audited_and_holds_incidents_back() {
    let mut book = AlarmBook::default();
    let p = params(0, 0);
    feed(&mut book, &p, clear(), &[0]);
    let ts = book
        .out_of_service(&key(), "tech1", "sensor replaced", t(1))
        .unwrap();
    assert_eq!(ts[0].cause, Cause::OutOfService);
    assert_eq!(ts[0].actor.as_deref(), Some("tech1"));
    assert!(ts[0].out_of_service);
    assert_eq!(
        book.out_of_service(&key(), "tech1", "again", t(2)),
        Err(AlarmError::AlreadyOutOfService(key()))
    );
    let ts = feed(&mut book, &p, active(), &[10]);
    assert!(ts[0].out_of_service);
    assert_eq!(ts[0].incident, None);
    let ts = book.return_to_service(&key(), "tech1", t(20)).unwrap();
    assert_eq!(ts[0].cause, Cause::ReturnToService);
    assert_eq!(ts[0].incident, Some(IncidentSignal::Open));
    assert_eq!(
        book.return_to_service(&key(), "tech1", t(21)),
        Err(AlarmError::NotOutOfService(key()))
    );
}

#[test]
fn suppression_by_design_records_but_opens_nothing_and_spares_fire() {
    let mut book = AlarmBook::default();
    let p = params(0, 0);
    let pac = |v, s| {
        cond_in(
            "pac_unit_fault",
            "dc",
            "device:pac-3",
            ConditionClass::Cooling,
            v,
            t(s),
        )
    };
    let fire = |v, s| {
        cond_in(
            "vesda_fire_1",
            "dc",
            "device:vesda-1",
            ConditionClass::Fire,
            v,
            t(s),
        )
    };
    book.apply(&pac(clear(), 0), &p, t(0));
    book.apply(&fire(clear(), 0), &p, t(0));
    let ts = book
        .suppress(
            "pac-3-standby",
            SuppressTarget::Matching {
                site: "dc".into(),
                scope: Scope::default(),
            },
            "PAC-3 in standby",
            t(1),
        )
        .unwrap();
    // The whole-site scope covers the PAC alarm, never the fire alarm.
    assert_eq!(ts.len(), 1);
    assert_eq!(ts[0].key.rule, "pac_unit_fault");
    assert_eq!(ts[0].cause, Cause::Suppress);
    assert!(
        book.suppress("pac-3-standby", SuppressTarget::Key(key()), "x", t(1))
            .is_err()
    );

    let ts = book.apply(&pac(active(), 10), &p, t(10));
    assert_eq!(ts.len(), 1, "recorded");
    assert!(
        ts[0]
            .suppressed
            .as_deref()
            .is_some_and(|r| r.contains("PAC-3 in standby"))
    );
    assert_eq!(ts[0].incident, None);
    let ts = book.apply(&fire(active(), 11), &p, t(11));
    assert_eq!(ts[0].suppressed, None);
    assert_eq!(ts[0].incident, Some(IncidentSignal::Open));

    let ts = book.unsuppress("pac-3-standby", t(20)).unwrap();
    assert_eq!(ts.len(), 1);
    assert_eq!(ts[0].cause, Cause::Unsuppress);
    assert_eq!(ts[0].incident, Some(IncidentSignal::Open));
    assert_eq!(
        book.unsuppress("pac-3-standby", t(21)),
        Err(AlarmError::UnknownSuppression("pac-3-standby".into()))
    );
}

#[test]
fn maintenance_window_suppresses_its_scope_but_records_and_spares_fire_and_water() {
    let mut book = AlarmBook::default();
    let p = params(0, 0);
    let window = MaintenanceWindow {
        id: "wo-2026-11-genset".into(),
        site: "dc".into(),
        scope: Scope::genset_load_test(),
        start: t(1_000),
        end: t(4_600),
        reason: "monthly genset load test".into(),
    };
    assert_eq!(
        book.add_window(MaintenanceWindow {
            end: t(1_000),
            ..window.clone()
        }),
        Err(AlarmError::WindowEndsBeforeStart(window.id.clone()))
    );
    book.add_window(window.clone()).unwrap();
    assert_eq!(
        book.add_window(window.clone()),
        Err(AlarmError::DuplicateWindow(window.id.clone()))
    );
    let c = |rule: RuleId, site: &str, class, v, s| cond_in(rule, site, "", class, v, t(s));

    // Before the window: an incident as usual.
    let ts = book.apply(
        &c(
            "utility_feed_lost",
            "dc",
            ConditionClass::Utility,
            active(),
            999,
        ),
        &p,
        t(999),
    );
    assert_eq!(ts[0].incident, Some(IncidentSignal::Open));
    book.apply(
        &c(
            "utility_feed_lost",
            "dc",
            ConditionClass::Utility,
            clear(),
            999,
        ),
        &p,
        t(999),
    );

    // During: utility, UPS and genset alarms are recorded, flagged and open nothing.
    for (rule, class) in [
        ("utility_feed_lost", ConditionClass::Utility),
        ("ups_on_battery", ConditionClass::Ups),
        ("genset_running", ConditionClass::Genset),
    ] {
        let ts = book.apply(&c(rule, "dc", class, active(), 1_000), &p, t(1_000));
        assert_eq!(ts.len(), 1, "{rule} recorded");
        assert!(
            ts[0]
                .suppressed
                .as_deref()
                .is_some_and(|r| r.contains("wo-2026-11-genset"))
        );
        assert_eq!(ts[0].incident, None, "{rule}");
    }
    // Not in scope: another class, another site, and never fire or water.
    for (rule, site, class) in [
        ("hall_temperature_high", "dc", ConditionClass::Temperature),
        ("ups_on_battery", "drc", ConditionClass::Ups),
        ("vesda_fire_1", "dc", ConditionClass::Fire),
        ("water_detected", "dc", ConditionClass::Water),
    ] {
        let ts = book.apply(&c(rule, site, class, active(), 1_001), &p, t(1_001));
        assert_eq!(ts[0].suppressed, None, "{rule} at {site}");
        assert_eq!(
            ts[0].incident,
            Some(IncidentSignal::Open),
            "{rule} at {site}"
        );
    }
    // The UPS alarm clears inside the window: it never opens an incident.
    book.apply(
        &c("ups_on_battery", "dc", ConditionClass::Ups, clear(), 2_000),
        &p,
        t(2_000),
    );

    assert!(book.tick(t(4_599)).is_empty());
    // The window ends with the utility and genset alarms still active: their incidents open.
    let ts = book.tick(t(4_600));
    let opened: BTreeSet<&str> = ts
        .iter()
        .filter(|t| t.incident == Some(IncidentSignal::Open))
        .map(|t| t.key.rule.as_str())
        .collect();
    assert_eq!(
        opened,
        BTreeSet::from(["genset_running", "utility_feed_lost"])
    );
    assert!(
        ts.iter()
            .all(|t| t.cause == Cause::MaintenanceEnded && t.from == t.to)
    );
    assert!(book.tick(t(4_601)).is_empty(), "opened once");
}

#[test]
fn removing_a_running_window_releases_its_alarms() {
    let mut book = AlarmBook::default();
    let p = params(0, 0);
    book.add_window(MaintenanceWindow {
        id: "w1".into(),
        site: "dc".into(),
        scope: Scope::genset_load_test(),
        start: t(0),
        end: t(10_000),
        reason: "test".into(),
    })
    .unwrap();
    let c = cond_in(
        "ups_on_battery",
        "dc",
        "",
        ConditionClass::Ups,
        active(),
        t(5),
    );
    assert_eq!(book.apply(&c, &p, t(5))[0].incident, None);
    let ts = book.remove_window("w1", t(6)).unwrap();
    assert_eq!(signals(&ts), vec![IncidentSignal::Open]);
    assert_eq!(
        book.remove_window("w1", t(7)),
        Err(AlarmError::UnknownWindow("w1".into()))
    );
}

// ---------------------------------------------------------------------------------------------
// Chattering

#[test]
fn chattering_alarm_is_flagged_counted_and_holds_one_incident() {
    let mut book = AlarmBook::default();
    let mut p = params(0, 0);
    p.chatter_transitions = 4;
    p.chatter_window = Duration::from_secs(60);
    let mut all = Vec::new();
    // Toggle every 5 s for 2 min (24 raises and clears).
    for i in 0..24 {
        let v = if i % 2 == 0 { active() } else { clear() };
        all.extend(feed(&mut book, &p, v, &[i * 5]));
    }
    let alarm = book.get(&key()).unwrap();
    assert!(alarm.chattering);
    assert_eq!(alarm.chatter_episodes, 1);
    assert_eq!(alarm.activation, 12);
    // The first raise opened the one incident. Its clear 5 s later (two changes within the
    // window) held it instead of resolving it, and every later raise joined it; from the 4th
    // change (t = 15) on the alarm is flagged chattering as well.
    let opens: Vec<&Transition> = all
        .iter()
        .filter(|t| t.incident == Some(IncidentSignal::Open))
        .collect();
    assert_eq!(opens.len(), 1);
    assert_eq!(opens[0].at, t(0));
    let first_chattering = all.iter().position(|t| t.chattering).unwrap();
    assert_eq!(all[first_chattering].at, t(15));
    assert!(
        all[1..]
            .iter()
            .all(|t| t.incident == Some(IncidentSignal::Update))
    );
    assert_eq!(state(&book), AlarmState::ReturnedUnacked);

    // Quiet: the last four changes were at 100..=115. The one at 100 leaves the window at
    // 160 (three left: no longer chattering, the incident still held); at 170 only the
    // clear at 115 is left and the held incident resolves.
    assert!(book.tick(t(160)).is_empty());
    assert!(!book.get(&key()).unwrap().chattering);
    assert!(book.tick(t(169)).is_empty());
    let ts = book.tick(t(170));
    assert_eq!(ts.len(), 1);
    assert_eq!(ts[0].cause, Cause::ChatterEnded);
    assert_eq!(ts[0].incident, Some(IncidentSignal::Resolve));

    let k = book.kpis(t(200));
    assert_eq!(k.chatter_episodes, 1);
    assert_eq!(k.bad_actors[0].activations, 12);
}

/// The promise with the shipped parameters (5 changes in 10 min): an alarm that
/// toggles every 30 s for 10 min is one chattering episode and yields exactly one incident,
/// opened by its first raise and resolved once it has been quiet for a window.
#[test]
fn a_chattering_episode_with_the_shipped_parameters_yields_one_incident() {
    let mut p = dcguard::rules::catalogue::default_params("hall_temperature_high").unwrap();
    p.on_delay = Duration::ZERO;
    p.off_delay = Duration::ZERO;
    let mut book = AlarmBook::default();
    let mut all = Vec::new();
    for i in 0..20 {
        let v = if i % 2 == 0 { active() } else { clear() };
        all.extend(feed(&mut book, &p, v, &[i * 30]));
    }
    let alarm = book.get(&key()).unwrap();
    assert!(alarm.chattering);
    assert_eq!(alarm.chatter_episodes, 1);
    assert_eq!(alarm.activation, 10);
    let signals = |s: IncidentSignal| all.iter().filter(|t| t.incident == Some(s)).count();
    assert_eq!(signals(IncidentSignal::Open), 1, "{all:#?}");
    assert_eq!(signals(IncidentSignal::Resolve), 0, "{all:#?}");
    // Quiet: the last clear was at 570; held until only it is left in the window (the raise
    // at 540 leaves it at 1140), then resolved, once.
    let mut later = Vec::new();
    for s in (600..=1200).step_by(10) {
        later.extend(book.tick(t(s)));
    }
    assert_eq!(later.len(), 1, "{later:#?}");
    assert_eq!(later[0].incident, Some(IncidentSignal::Resolve));
    assert_eq!(later[0].at, t(1140));
    assert_eq!(later[0].cause, Cause::ChatterEnded);
}

// ---------------------------------------------------------------------------------------------
// KPIs

#[test]
fn kpis_count_floods_standing_alarms_and_bad_actors() {
    let mut book = AlarmBook::default();
    let p = params(0, 0);
    let c = |i: usize, v, s| {
        const RULES: [RuleId; 12] = [
            "r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11",
        ];
        cond_in(RULES[i], "dc", "", ConditionClass::Temperature, v, t(s))
    };
    // r0 raised long ago and standing.
    book.apply(&c(0, active(), 0), &p, t(0));
    // r1 raised three times.
    for s in [100, 200, 300] {
        book.apply(&c(1, active(), s), &p, t(s));
        book.apply(&c(1, clear(), s + 1), &p, t(s + 1));
    }
    let day = 24 * 3_600;
    // Ten more raises within 10 min a day later: with r1 below, 11 in the window.
    book.apply(&c(1, active(), day), &p, t(day));
    for i in 2..12 {
        let s = day + i as i64 * 30;
        book.apply(&c(i, active(), s), &p, t(s));
    }
    let k = book.kpis(t(day + 400));
    let dc = &k.sites["dc"];
    assert_eq!(dc.annunciated, 11);
    assert!(dc.flood);
    assert_eq!(dc.active, 12);
    assert_eq!(dc.standing, 1, "r0 has been active more than 24 h");
    assert_eq!(k.bad_actors.len(), 10);
    assert_eq!(k.bad_actors[0].key.rule, "r1");
    assert_eq!(k.bad_actors[0].activations, 4);

    // Ten minutes later the window has moved on.
    let k = book.kpis(t(day + 400 + 600));
    assert_eq!(k.sites["dc"].annunciated, 0);
    assert!(!k.sites["dc"].flood);
}

#[test]
fn shelved_and_suppressed_raises_are_not_annunciated() {
    let mut book = AlarmBook::default();
    let p = params(0, 0);
    feed(&mut book, &p, clear(), &[0]);
    book.shelve(&key(), "op1", "noisy", Duration::from_secs(600), t(1))
        .unwrap();
    feed(&mut book, &p, active(), &[2]);
    let k = book.kpis(t(3));
    assert_eq!(k.sites["dc"].annunciated, 0);
    assert_eq!(k.sites["dc"].shelved, 1);
}

// ---------------------------------------------------------------------------------------------
// Restart

fn restart_rule(i: usize) -> RuleId {
    const RULES: [RuleId; 24] = [
        "a00", "a01", "a02", "a03", "a04", "a05", "a06", "a07", "a08", "a09", "a10", "a11", "a12",
        "a13", "a14", "a15", "a16", "a17", "a18", "a19", "a20", "a21", "a22", "a23",
    ];
    RULES[i]
}

#[test]
fn state_survives_a_restart_and_raises_no_new_incident() {
    let mut book = AlarmBook::default();
    let p = params(0, 120);
    let mut latching = params(0, 0);
    latching.latching = true;
    let c = |i: usize, v, s| {
        cond_in(
            restart_rule(i),
            "dc",
            "room:dh1",
            ConditionClass::Temperature,
            v,
            t(s),
        )
    };
    // 20 active alarms, 5 of them acknowledged, 3 shelved.
    let mut opened = 0;
    for i in 0..20 {
        let ts = book.apply(&c(i, active(), 0), &p, t(0));
        opened += signals(&ts).len();
    }
    assert_eq!(opened, 20);
    for i in 0..5 {
        let k = AlarmKey::new(restart_rule(i), "dc", "room:dh1");
        book.acknowledge(&k, "op1", "seen", t(10)).unwrap();
    }
    for i in 5..8 {
        let k = AlarmKey::new(restart_rule(i), "dc", "room:dh1");
        book.shelve(&k, "op1", "probe swap", Duration::from_secs(3_600), t(20))
            .unwrap();
    }
    // Delays in progress and a latch: an off-delay running on a19, a pending on-delay on
    // a20, a latched alarm a21.
    book.apply(&c(19, clear(), 30), &p, t(30));
    book.apply(&c(20, active(), 30), &params(300, 0), t(30));
    book.apply(&c(21, active(), 30), &latching, t(30));
    book.apply(&c(21, clear(), 31), &latching, t(31));
    book.add_window(MaintenanceWindow {
        id: "w".into(),
        site: "dc".into(),
        scope: Scope::genset_load_test(),
        start: t(0),
        end: t(100_000),
        reason: "load test".into(),
    })
    .unwrap();

    let json = serde_json::to_string(&book).unwrap();
    let mut restored: AlarmBook = serde_json::from_str(&json).unwrap();
    assert_eq!(restored, book, "identical state after restore");
    let active_count = restored.alarms().filter(|a| a.state.is_active()).count();
    assert_eq!(active_count, 21, "20 active plus the latched one");
    let acked = restored
        .alarms()
        .filter(|a| a.state == AlarmState::ActiveAcked)
        .count();
    assert_eq!(acked, 5);
    let shelves: Vec<DateTime<Utc>> = restored
        .alarms()
        .filter_map(|a| a.shelf.as_ref().map(|s| s.until))
        .collect();
    assert_eq!(shelves, vec![t(3_620); 3]);

    // Re-applying the same active conditions after the restart: no new incident.
    let mut after = Vec::new();
    for i in 0..19 {
        after.extend(restored.apply(&c(i, active(), 40), &p, t(40)));
    }
    assert!(
        after
            .iter()
            .all(|t| t.incident != Some(IncidentSignal::Open)),
        "{after:?}"
    );
    assert!(after.is_empty(), "no transition at all: {after:?}");
    // Delays in progress continue: a19's off-delay (started at 30) completes at 150, a20's
    // on-delay (started at 30) at 330; shelves expire at 3620.
    restored.apply(&c(19, clear(), 149), &p, t(149));
    assert_eq!(
        restored
            .get(&AlarmKey::new("a19", "dc", "room:dh1"))
            .unwrap()
            .state,
        AlarmState::ActiveUnacked
    );
    let ts = restored.apply(&c(19, clear(), 150), &p, t(150));
    assert_eq!(signals(&ts), vec![IncidentSignal::Resolve]);
    let ts = restored.apply(&c(20, active(), 330), &params(300, 0), t(330));
    assert_eq!(signals(&ts), vec![IncidentSignal::Open]);
    let ts = restored.tick(t(3_620));
    assert_eq!(ts.len(), 3);
    assert!(ts.iter().all(|t| t.cause == Cause::ShelveExpired));
    // Shelved at 20 while active with their incidents open: nothing new to open.
    assert!(
        ts.iter()
            .all(|t| t.incident == Some(IncidentSignal::Update))
    );
}

#[test]
fn an_unreadable_shelve_restores_unshelved() {
    let mut book = AlarmBook::default();
    feed(&mut book, &params(0, 0), active(), &[0]);
    book.shelve(&key(), "op1", "x", Duration::from_secs(60), t(1))
        .unwrap();
    let mut value = serde_json::to_value(&book).unwrap();
    // alarms is a list of [key, alarm] pairs.
    value["alarms"][0][1]["shelf"] = serde_json::json!({"user": 7});
    let restored: AlarmBook = serde_json::from_value(value).unwrap();
    let alarm = restored.get(&key()).unwrap();
    assert_eq!(alarm.shelf, None);
    assert_eq!(alarm.state, AlarmState::ActiveUnacked);
}

// ---------------------------------------------------------------------------------------------
// Model-based property test

/// The keys of the property test: two independent alarms.
const KEYS: [RuleId; 2] = ["m0", "m1"];
const MAX_SHELVE: i64 = 3_600;

#[derive(Debug, Clone)]
enum Op {
    Verdict(usize, Verdict),
    Ack(usize),
    Shelve(usize, i64),
    Unshelve(usize),
    /// Out of service (true) or back in service (false).
    Service(usize, bool),
    Tick,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let verdict = prop_oneof![
        3 => Just(Verdict::Active),
        2 => Just(Verdict::Clear { margin: None }),
        1 => Just(Verdict::Clear { margin: Some(0.2) }),
        1 => Just(Verdict::Clear { margin: Some(1.0) }),
        2 => Just(Verdict::Clear { margin: Some(1.5) }),
        2 => Just(Verdict::Unknown { reason: Arc::from("stale") }),
    ];
    prop_oneof![
        10 => (0..KEYS.len(), verdict).prop_map(|(k, v)| Op::Verdict(k, v)),
        2 => (0..KEYS.len()).prop_map(Op::Ack),
        1 => (0..KEYS.len(), prop_oneof![Just(30i64), Just(300), Just(MAX_SHELVE + 1)])
            .prop_map(|(k, d)| Op::Shelve(k, d)),
        1 => (0..KEYS.len()).prop_map(Op::Unshelve),
        1 => (0..KEYS.len(), any::<bool>()).prop_map(|(k, oos)| Op::Service(k, oos)),
        2 => Just(Op::Tick),
    ]
}

fn params_strategy() -> impl Strategy<Value = AlarmParams> {
    (
        prop_oneof![Just(0u64), Just(30), Just(60)],
        prop_oneof![Just(0u64), Just(30), Just(60)],
        prop_oneof![Just(0.0), Just(1.0)],
        any::<bool>(),
        prop_oneof![Just(0u32), Just(3), Just(4)],
        prop_oneof![Just(60u64), Just(300)],
    )
        .prop_map(|(on, off, deadband, latching, n, window)| AlarmParams {
            on_delay: Duration::from_secs(on),
            off_delay: Duration::from_secs(off),
            deadband,
            latching,
            chatter_transitions: n,
            chatter_window: Duration::from_secs(window),
        })
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Last {
    Active,
    Clear,
    Other,
    Unknown,
}

/// The reference model of one alarm: the documented semantics, written out plainly, with
/// time in whole seconds and the full history of raises and clears.
#[derive(Debug, Clone)]
struct Model {
    state: AlarmState,
    process: bool,
    last: Option<Last>,
    on_since: Option<i64>,
    off_since: Option<i64>,
    activation: u64,
    incident: Option<u64>,
    incident_for: u64,
    changes: Vec<i64>,
    chattering: bool,
    /// The incident is held: chattering, or two or more changes within the window (with
    /// chatter detection on).
    held: bool,
    shelf_until: Option<i64>,
    oos: bool,
}

impl Model {
    fn new() -> Model {
        Model {
            state: AlarmState::Normal,
            process: false,
            last: None,
            on_since: None,
            off_since: None,
            activation: 0,
            incident: None,
            incident_for: 0,
            changes: Vec::new(),
            chattering: false,
            held: false,
            shelf_until: None,
            oos: false,
        }
    }

    fn active(s: AlarmState) -> bool {
        matches!(s, AlarmState::ActiveUnacked | AlarmState::ActiveAcked)
    }

    fn emit(&mut self, to: AlarmState, out: &mut Vec<Option<IncidentSignal>>) {
        self.state = to;
        let signal = if self.incident.is_some() {
            if !Self::active(to) && !self.held {
                self.incident = None;
                Some(IncidentSignal::Resolve)
            } else {
                Some(IncidentSignal::Update)
            }
        } else if Self::active(to)
            && self.shelf_until.is_none()
            && !self.oos
            && self.incident_for != self.activation
        {
            self.incident = Some(self.activation);
            self.incident_for = self.activation;
            Some(IncidentSignal::Open)
        } else {
            None
        };
        out.push(signal);
    }

    fn chatter_now(&self, p: &AlarmParams, now: i64) -> bool {
        let n = p.chatter_transitions as usize;
        let window = p.chatter_window.as_secs() as i64;
        n > 0 && self.changes.iter().filter(|c| now - **c < window).count() >= n
    }

    fn held_now(&self, p: &AlarmParams, now: i64) -> bool {
        let window = p.chatter_window.as_secs() as i64;
        self.chatter_now(p, now)
            || (p.chatter_transitions > 0
                && self.changes.iter().filter(|c| now - **c < window).count() >= 2)
    }

    fn change(&mut self, p: &AlarmParams, now: i64) {
        self.changes.push(now);
        self.chattering = self.chatter_now(p, now);
        self.held = self.held_now(p, now);
    }

    fn raise(&mut self, p: &AlarmParams, now: i64, out: &mut Vec<Option<IncidentSignal>>) {
        self.process = true;
        self.on_since = None;
        self.off_since = None;
        self.change(p, now);
        if !Self::active(self.state) {
            self.activation += 1;
            self.emit(AlarmState::ActiveUnacked, out);
        }
    }

    fn clear(&mut self, p: &AlarmParams, now: i64, out: &mut Vec<Option<IncidentSignal>>) {
        self.process = false;
        self.on_since = None;
        self.off_since = None;
        self.change(p, now);
        let to = if p.latching {
            AlarmState::ActiveUnacked
        } else if self.state == AlarmState::ActiveAcked {
            AlarmState::Normal
        } else {
            AlarmState::ReturnedUnacked
        };
        if to != self.state {
            self.emit(to, out);
        }
    }

    fn delays(&mut self, p: &AlarmParams, now: i64, out: &mut Vec<Option<IncidentSignal>>) {
        let on = p.on_delay.as_secs() as i64;
        let off = p.off_delay.as_secs() as i64;
        if !self.process
            && self.last == Some(Last::Active)
            && self.on_since.is_some_and(|s| now - s >= on)
        {
            self.raise(p, now, out);
        } else if self.process
            && self.last == Some(Last::Clear)
            && self.off_since.is_some_and(|s| now - s >= off)
        {
            self.clear(p, now, out);
        }
    }

    fn settle(&mut self, p: &AlarmParams, now: i64, out: &mut Vec<Option<IncidentSignal>>) {
        if self.shelf_until.is_some_and(|u| u <= now) {
            self.shelf_until = None;
            self.emit(self.state, out);
        }
        self.delays(p, now, out);
        self.chattering = self.chatter_now(p, now);
        self.held = self.held_now(p, now);
        let due = match self.incident {
            Some(_) => !Self::active(self.state) && !self.held,
            None => {
                Self::active(self.state)
                    && self.shelf_until.is_none()
                    && !self.oos
                    && self.incident_for != self.activation
            }
        };
        if due {
            self.emit(self.state, out);
        }
    }

    fn verdict(
        &mut self,
        p: &AlarmParams,
        v: &Verdict,
        now: i64,
        out: &mut Vec<Option<IncidentSignal>>,
    ) {
        self.settle(p, now, out);
        match v {
            Verdict::Active => {
                self.last = Some(Last::Active);
                if self.process {
                    self.off_since = None;
                } else if self.on_since.is_none() {
                    self.on_since = Some(now);
                }
            }
            Verdict::Clear { margin } if margin.is_none_or(|m| m >= p.deadband) => {
                self.last = Some(Last::Clear);
                if self.process {
                    if self.off_since.is_none() {
                        self.off_since = Some(now);
                    }
                } else {
                    self.on_since = None;
                }
            }
            Verdict::Clear { .. } => {
                self.last = Some(Last::Other);
                self.on_since = None;
                self.off_since = None;
            }
            Verdict::Unknown { .. } => {
                self.last = Some(Last::Unknown);
                self.off_since = None;
            }
        }
        self.delays(p, now, out);
    }

    fn ack(&mut self, out: &mut Vec<Option<IncidentSignal>>) -> bool {
        let to = match self.state {
            AlarmState::ActiveUnacked if self.process => AlarmState::ActiveAcked,
            AlarmState::ActiveUnacked | AlarmState::ReturnedUnacked => AlarmState::Normal,
            _ => return false,
        };
        self.emit(to, out);
        true
    }
}

fn check_stream(
    transitions: &[Transition],
    last_state: &mut BTreeMap<String, (AlarmState, DateTime<Utc>)>,
    open: &mut BTreeMap<String, u64>,
    opened: &mut BTreeSet<(String, u64)>,
    raised_once: &mut BTreeSet<String>,
) -> Result<(), TestCaseError> {
    for tr in transitions {
        let k = tr.key.rule.clone();
        let (prev, prev_at) = last_state
            .get(&k)
            .copied()
            .unwrap_or((AlarmState::Normal, t(0)));
        prop_assert_eq!(tr.from, prev, "transition sequence broken: {:?}", tr);
        prop_assert!(tr.at >= prev_at, "time went back: {:?}", tr);
        let valid = match (tr.from, tr.to) {
            (a, b) if a == b => !matches!(tr.cause, Cause::Condition | Cause::DelayElapsed),
            (AlarmState::Normal | AlarmState::ReturnedUnacked, AlarmState::ActiveUnacked) => {
                matches!(tr.cause, Cause::Condition | Cause::DelayElapsed)
            }
            (AlarmState::ActiveUnacked, AlarmState::ReturnedUnacked)
            | (AlarmState::ActiveAcked, AlarmState::Normal)
            | (AlarmState::ActiveAcked, AlarmState::ActiveUnacked) => {
                matches!(tr.cause, Cause::Condition | Cause::DelayElapsed)
            }
            (AlarmState::ActiveUnacked, AlarmState::ActiveAcked)
            | (AlarmState::ActiveUnacked | AlarmState::ReturnedUnacked, AlarmState::Normal) => {
                tr.cause == Cause::Acknowledge
            }
            _ => false,
        };
        prop_assert!(valid, "not a transition of the state machine: {:?}", tr);
        if tr.to.is_active() && !tr.from.is_active() {
            raised_once.insert(k.clone());
        }
        if tr.from.is_active() && !tr.to.is_active() {
            prop_assert!(raised_once.contains(&k), "clear without a raise: {:?}", tr);
        }
        match tr.incident {
            Some(IncidentSignal::Open) => {
                prop_assert!(!open.contains_key(&k), "second open incident: {:?}", tr);
                let id = tr.incident_id.unwrap_or(0);
                prop_assert!(
                    opened.insert((k.clone(), id)),
                    "reopened activation: {:?}",
                    tr
                );
                open.insert(k.clone(), id);
            }
            Some(IncidentSignal::Update) => {
                prop_assert_eq!(open.get(&k).copied(), tr.incident_id);
            }
            Some(IncidentSignal::Resolve) => {
                prop_assert_eq!(open.remove(&k), tr.incident_id);
                prop_assert!(!tr.to.is_active());
            }
            None => {}
        }
        last_state.insert(k, (tr.to, tr.at));
    }
    Ok(())
}

proptest! {
    // 256 cases by default; `PROPTEST_CASES=10000` for the nightly run (scenario A5).
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    fn book_equals_the_reference_model(
        p in params_strategy(),
        steps in prop::collection::vec((0i64..90, op_strategy()), 1..80),
    ) {
        let mut book = AlarmBook::new(BookConfig {
            max_shelve: Duration::from_secs(MAX_SHELVE as u64),
            ..BookConfig::default()
        });
        let mut models: Vec<Option<Model>> = vec![None; KEYS.len()];
        let mut now = 0i64;
        let mut last_state = BTreeMap::new();
        let mut open = BTreeMap::new();
        let mut opened = BTreeSet::new();
        let mut raised_once = BTreeSet::new();
        for (dt, op) in steps {
            now += dt;
            let at = t(now);
            let mut expected: Vec<(usize, Option<IncidentSignal>)> = Vec::new();
            let got: Vec<Transition> = match &op {
                Op::Verdict(k, v) => {
                    let m = models[*k].get_or_insert_with(Model::new);
                    let mut out = Vec::new();
                    m.verdict(&p, v, now, &mut out);
                    expected.extend(out.into_iter().map(|s| (*k, s)));
                    let c = cond_in(KEYS[*k], "dc", "", ConditionClass::Temperature, v.clone(), at);
                    let ts = book.apply(&c, &p, at);
                    if matches!(v, Verdict::Unknown { .. }) {
                        prop_assert!(
                            ts.iter().all(|t| !(t.cause == Cause::Condition && t.from.is_active() && !t.to.is_active())),
                            "Unknown cleared: {:?}", ts
                        );
                    }
                    ts
                }
                Op::Ack(k) => {
                    let key = AlarmKey::new(KEYS[*k], "dc", "");
                    let r = book.acknowledge(&key, "op", "ack", at);
                    match models[*k].as_mut() {
                        None => {
                            prop_assert!(matches!(r, Err(AlarmError::UnknownAlarm(_))));
                            Vec::new()
                        }
                        Some(m) => {
                            let mut out = Vec::new();
                            let ok = m.ack(&mut out);
                            expected.extend(out.into_iter().map(|s| (*k, s)));
                            prop_assert_eq!(ok, r.is_ok(), "ack acceptance: {:?}", r);
                            r.unwrap_or_default()
                        }
                    }
                }
                Op::Shelve(k, d) => {
                    let key = AlarmKey::new(KEYS[*k], "dc", "");
                    let r = book.shelve(&key, "op", "noisy", Duration::from_secs(*d as u64), at);
                    match models[*k].as_mut() {
                        None => {
                            prop_assert!(r.is_err());
                            Vec::new()
                        }
                        Some(_) if *d > MAX_SHELVE => {
                            let too_long = matches!(r, Err(AlarmError::ShelveTooLong { .. }));
                            prop_assert!(too_long, "{:?}", r);
                            Vec::new()
                        }
                        Some(m) => {
                            m.shelf_until = Some(now + d);
                            let mut out = Vec::new();
                            m.emit(m.state, &mut out);
                            expected.extend(out.into_iter().map(|s| (*k, s)));
                            r.map_err(|e| TestCaseError::fail(format!("shelve refused: {e}")))?
                        }
                    }
                }
                Op::Unshelve(k) => {
                    let key = AlarmKey::new(KEYS[*k], "dc", "");
                    let r = book.unshelve(&key, "op", at);
                    match models[*k].as_mut() {
                        Some(m) if m.shelf_until.is_some() => {
                            m.shelf_until = None;
                            let mut out = Vec::new();
                            m.emit(m.state, &mut out);
                            expected.extend(out.into_iter().map(|s| (*k, s)));
                            r.map_err(|e| TestCaseError::fail(format!("unshelve refused: {e}")))?
                        }
                        _ => {
                            prop_assert!(r.is_err());
                            Vec::new()
                        }
                    }
                }
                Op::Service(k, oos) => {
                    let key = AlarmKey::new(KEYS[*k], "dc", "");
                    let r = if *oos {
                        book.out_of_service(&key, "tech", "maintenance", at)
                    } else {
                        book.return_to_service(&key, "tech", at)
                    };
                    match models[*k].as_mut() {
                        Some(m) if m.oos != *oos => {
                            m.oos = *oos;
                            let mut out = Vec::new();
                            m.emit(m.state, &mut out);
                            expected.extend(out.into_iter().map(|s| (*k, s)));
                            r.map_err(|e| TestCaseError::fail(format!("service refused: {e}")))?
                        }
                        _ => {
                            prop_assert!(r.is_err());
                            Vec::new()
                        }
                    }
                }
                Op::Tick => {
                    for (k, m) in models.iter_mut().enumerate() {
                        if let Some(m) = m {
                            let mut out = Vec::new();
                            m.settle(&p, now, &mut out);
                            expected.extend(out.into_iter().map(|s| (k, s)));
                        }
                    }
                    book.tick(at)
                }
            };
            let got_signals: Vec<(usize, Option<IncidentSignal>)> = got
                .iter()
                .map(|t| (KEYS.iter().position(|k| *k == t.key.rule).unwrap_or(99), t.incident))
                .collect();
            prop_assert_eq!(&got_signals, &expected, "after {:?} at {}", op, now);
            check_stream(&got, &mut last_state, &mut open, &mut opened, &mut raised_once)?;
            for (k, m) in models.iter().enumerate() {
                let Some(m) = m else { continue };
                let a = book.get(&AlarmKey::new(KEYS[k], "dc", ""));
                prop_assert!(a.is_some());
                let Some(a) = a else { continue };
                prop_assert_eq!(a.state, m.state, "state of {} after {:?}", KEYS[k], op);
                prop_assert_eq!(a.process_active, m.process);
                prop_assert_eq!(a.activation, m.activation);
                prop_assert_eq!(a.incident, m.incident);
                prop_assert_eq!(a.chattering, m.chattering);
                prop_assert_eq!(a.shelf.as_ref().map(|s| s.until), m.shelf_until.map(t));
                prop_assert_eq!(a.out_of_service.is_some(), m.oos);
            }
        }
    }
}

#[test]
fn suppression_of_one_key_covers_it_before_it_is_first_seen_but_never_fire() {
    let mut book = AlarmBook::default();
    let p = params(0, 0);
    let pac_key = AlarmKey::new("pac_unit_fault", "dc", "device:pac-3");
    // Not seen yet: nothing to mark now, but it covers the alarm when it appears.
    let ts = book
        .suppress(
            "pac-3-standby",
            SuppressTarget::Key(pac_key.clone()),
            "PAC-3 in standby",
            t(0),
        )
        .unwrap();
    assert!(ts.is_empty());
    let c = cond_in(
        "pac_unit_fault",
        "dc",
        "device:pac-3",
        ConditionClass::Cooling,
        active(),
        t(1),
    );
    let ts = book.apply(&c, &p, t(1));
    assert!(ts[0].suppressed.is_some());
    assert_eq!(ts[0].incident, None);
    assert!(book.suppression_of(&pac_key, t(1)).is_some());

    // A key suppression naming a fire alarm does not hold it back.
    let fire_key = AlarmKey::new("vesda_fire_2", "dc", "device:vesda-1");
    book.suppress("oops", SuppressTarget::Key(fire_key), "wrong key", t(2))
        .unwrap();
    let c = cond_in(
        "vesda_fire_2",
        "dc",
        "device:vesda-1",
        ConditionClass::Fire,
        active(),
        t(3),
    );
    let ts = book.apply(&c, &p, t(3));
    assert_eq!(ts[0].suppressed, None);
    assert_eq!(ts[0].incident, Some(IncidentSignal::Open));
}
