//! The pure incident book: priority, dedup keys, cascade, escalation, resolution, IT
//! disaster, and one open incident per alarm over random signal sequences.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Asia::Jakarta;
use dcguard::config::{self, model::Config, model::Impact, model::Priority, model::Urgency};
use dcguard::incidents::incident::{
    AlarmFacts, AlarmId, AlarmRef, AlarmSignal, BookState, IncidentBook, IncidentEvent,
    IncidentSettings, IncidentState, IncidentTransition, TransitionKind,
};
use dcguard::incidents::sla::WorkingClock;
use dcguard::rules::condition::{Condition, ConditionClass, ConditionKey, Verdict};
use proptest::prelude::*;

fn shipped() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config")).expect("shipped config")
    })
}

fn book() -> IncidentBook {
    IncidentBook::new(
        IncidentSettings::default(),
        shipped().priority.clone(),
        WorkingClock::new(&shipped().calendar),
    )
}

fn restored(state: BookState) -> IncidentBook {
    IncidentBook::restore(
        IncidentSettings::default(),
        shipped().priority.clone(),
        WorkingClock::new(&shipped().calendar),
        state,
    )
}

fn wib(y: i32, m: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Jakarta
        .with_ymd_and_hms(y, m, d, h, mi, 0)
        .single()
        .expect("valid WIB time")
        .with_timezone(&Utc)
}

fn key(rule: &'static str, site: &str, scope: &str) -> ConditionKey {
    ConditionKey {
        rule,
        site: Arc::from(site),
        scope: Arc::from(scope),
    }
}

/// A condition; the room is taken from a `room:` scope.
fn cond(
    k: &ConditionKey,
    class: ConditionClass,
    urgency: Urgency,
    impact: Impact,
    value: f64,
    at: DateTime<Utc>,
) -> Condition {
    let room = k.scope.strip_prefix("room:").map(Arc::from);
    Condition {
        key: k.clone(),
        class,
        verdict: Verdict::Active,
        at,
        impact,
        urgency,
        value: Some(value),
        limit: Some(27.0),
        unit: "degC",
        room,
        rack: None,
        device: None,
        point: None,
        summary: format!("{} {}: {} at {value}", k.site, k.scope, k.rule),
    }
}

fn hot(site: &str, room: &str, at: DateTime<Utc>) -> Condition {
    cond(
        &key("hall_temperature_high", site, &format!("room:{room}")),
        ConditionClass::Temperature,
        Urgency::High,
        Impact::High,
        27.8,
        at,
    )
}

fn early(site: &str, room: &str, at: DateTime<Utc>) -> Condition {
    cond(
        &key(
            "hall_temperature_early_warning",
            site,
            &format!("room:{room}"),
        ),
        ConditionClass::Temperature,
        Urgency::High,
        Impact::Low,
        26.3,
        at,
    )
}

fn ups_on_battery(site: &str, at: DateTime<Utc>) -> Condition {
    cond(
        &key("ups_on_battery", site, "device:ups-1"),
        ConditionClass::Ups,
        Urgency::High,
        Impact::High,
        1.0,
        at,
    )
}

fn open(b: &mut IncidentBook, c: &Condition) -> Vec<IncidentTransition> {
    b.apply(AlarmSignal::open(c), c.at)
}

fn min(m: i64) -> TimeDelta {
    TimeDelta::minutes(m)
}

#[test]
fn opening_sets_priority_due_time_location_and_keys() {
    let mut b = book();
    // Sunday 22 November 2026, 02:00 WIB.
    let t0 = wib(2026, 11, 22, 2, 0);
    let ts = open(&mut b, &hot("dc", "dh1", t0));
    assert_eq!(ts.len(), 1);
    let t = &ts[0];
    assert_eq!(t.kind, TransitionKind::Opened);
    assert_eq!(t.event(), IncidentEvent::Opened);
    assert_eq!(t.sequence, 1);
    let inc = &t.incident;
    assert_eq!(
        inc.dedup_key,
        "dc/hall_temperature_high/room:dh1/20261121T190000.000Z"
    );
    assert_eq!(t.idempotency_key, format!("{}:1", inc.dedup_key));
    assert!(
        inc.id.starts_with("inc-") && inc.id.len() == 20,
        "{}",
        inc.id
    );
    assert_eq!(inc.priority, Priority::P1);
    assert_eq!(inc.state, IncidentState::Open);
    assert_eq!(inc.due_at, wib(2026, 11, 22, 5, 0));
    assert_eq!(inc.site, "dc");
    assert_eq!(inc.room.as_deref(), Some("dh1"));
    assert_eq!(inc.condition, "hall_temperature_high");
    assert_eq!((inc.value, inc.limit), (Some(27.8), Some(27.0)));
    assert_eq!(inc.unit, "degC");
    assert!(
        inc.details.contains("hall_temperature_high"),
        "{}",
        inc.details
    );
    // The early warning is P3: 16 working hours from Monday 08:00.
    let mut b = book();
    let ts = open(&mut b, &early("dc", "dh1", t0));
    assert_eq!(ts[0].incident.priority, Priority::P3);
    assert_eq!(ts[0].incident.due_at, wib(2026, 11, 24, 15, 0));
    assert_eq!(b.incidents()[0].transitions, ts);
}

#[test]
fn one_open_incident_per_alarm() {
    let mut b = book();
    let t0 = wib(2026, 11, 23, 10, 0);
    assert_eq!(open(&mut b, &hot("dc", "dh1", t0)).len(), 1);
    // Raised again (a replay after a restart, or an Update): no new incident, no noise.
    assert!(open(&mut b, &hot("dc", "dh1", t0 + min(1))).is_empty());
    let mut warmer = hot("dc", "dh1", t0 + min(2));
    warmer.value = Some(28.5);
    assert!(b.apply(AlarmSignal::update(&warmer), warmer.at).is_empty());
    assert_eq!(b.incidents().len(), 1);
    assert_eq!(b.incidents()[0].value, Some(28.5));
    // Much later, still the same incident.
    assert!(open(&mut b, &hot("dc", "dh1", t0 + min(600))).is_empty());
    assert_eq!(b.incidents().len(), 1);
}

#[test]
fn cascade_window_boundaries() {
    let t0 = wib(2026, 11, 23, 10, 0);
    let other_room = |at| hot("dc", "dh2", at);
    // Exactly at the window's end: joins.
    let mut b = book();
    open(&mut b, &hot("dc", "dh1", t0));
    let ts = open(&mut b, &other_room(t0 + min(10)));
    assert_eq!(ts.len(), 1);
    assert_eq!(
        ts[0].kind,
        TransitionKind::Joined {
            alarm: AlarmRef::from(&key("hall_temperature_high", "dc", "room:dh2"))
        }
    );
    assert_eq!(ts[0].sequence, 2);
    assert_eq!(ts[0].event(), IncidentEvent::Updated);
    assert_eq!(b.incidents().len(), 1);
    assert!(ts[0].incident.details.contains("room:dh2"));
    // One millisecond later: a new incident.
    let mut b = book();
    open(&mut b, &hot("dc", "dh1", t0));
    let ts = open(
        &mut b,
        &other_room(t0 + min(10) + TimeDelta::milliseconds(1)),
    );
    assert_eq!(ts[0].kind, TransitionKind::Opened);
    assert_eq!(b.incidents().len(), 2);
    // Another class or another site inside the window: a new incident.
    let mut b = book();
    open(&mut b, &hot("dc", "dh1", t0));
    assert_eq!(
        open(&mut b, &ups_on_battery("dc", t0 + min(1)))[0].kind,
        TransitionKind::Opened
    );
    assert_eq!(
        open(&mut b, &hot("drc", "dh1", t0 + min(1)))[0].kind,
        TransitionKind::Opened
    );
    assert_eq!(b.incidents().len(), 3);
    // A resolved incident is never joined.
    let mut b = book();
    open(&mut b, &hot("dc", "dh1", t0));
    let k = key("hall_temperature_high", "dc", "room:dh1");
    b.apply(AlarmSignal::resolve(&k), t0 + min(2));
    assert_eq!(
        open(&mut b, &other_room(t0 + min(3)))[0].kind,
        TransitionKind::Opened
    );
}

#[test]
fn early_warning_becoming_a_breach_escalates() {
    let mut b = book();
    let t0 = wib(2026, 11, 23, 10, 0);
    let ts = open(&mut b, &early("dc", "dh1", t0));
    assert_eq!(ts[0].incident.priority, Priority::P3);
    // 30 min later (outside the grouping window) the same room breaches: same incident.
    let t1 = t0 + min(30);
    let ts = open(&mut b, &hot("dc", "dh1", t1));
    assert_eq!(ts.len(), 1);
    let t = &ts[0];
    assert_eq!(
        t.kind,
        TransitionKind::Escalated {
            alarm: AlarmRef::from(&key("hall_temperature_high", "dc", "room:dh1")),
            from: Priority::P3,
            to: Priority::P1,
            joined: true,
        }
    );
    assert_eq!(t.incident.priority, Priority::P1);
    assert_eq!(t.incident.state, IncidentState::Escalated);
    assert_eq!(t.incident.due_at, t1 + TimeDelta::hours(3));
    assert_eq!(t.incident.condition, "hall_temperature_high");
    assert_eq!(t.incident.value, Some(27.8));
    assert!(t.note.contains("escalated P3 -> P1"), "{}", t.note);
    assert_eq!(b.incidents().len(), 1);
    // A lower-priority update never lowers it.
    let again = early("dc", "dh1", t1 + min(1));
    assert!(b.apply(AlarmSignal::update(&again), again.at).is_empty());
    assert_eq!(b.incidents()[0].priority, Priority::P1);
}

#[test]
fn an_update_with_higher_priority_escalates_the_same_alarm() {
    let mut b = book();
    let t0 = wib(2026, 11, 23, 10, 0);
    let k = key("fuel_autonomy_low", "smart-dc", "");
    let p2 = cond(
        &k,
        ConditionClass::Fuel,
        Urgency::High,
        Impact::Medium,
        50.0,
        t0,
    );
    assert_eq!(open(&mut b, &p2)[0].incident.priority, Priority::P2);
    assert_eq!(
        b.incidents()[0].dedup_key,
        "smart-dc/fuel_autonomy_low/-/20261123T030000.000Z"
    );
    let p1 = cond(
        &k,
        ConditionClass::Fuel,
        Urgency::High,
        Impact::High,
        3.5,
        t0 + min(90),
    );
    let ts = b.apply(AlarmSignal::update(&p1), p1.at);
    assert_eq!(ts.len(), 1);
    assert!(matches!(
        ts[0].kind,
        TransitionKind::Escalated {
            from: Priority::P2,
            to: Priority::P1,
            joined: false,
            ..
        }
    ));
    assert_eq!(ts[0].incident.due_at, p1.at + TimeDelta::hours(3));
    assert_eq!(ts[0].incident.value, Some(3.5));
}

#[test]
fn resolves_when_every_joined_condition_cleared() {
    let mut b = book();
    let t0 = wib(2026, 11, 23, 10, 0);
    let (k1, k2) = (
        key("hall_temperature_high", "dc", "room:dh1"),
        key("hall_temperature_high", "dc", "room:dh2"),
    );
    open(&mut b, &hot("dc", "dh1", t0));
    open(&mut b, &hot("dc", "dh2", t0 + min(5)));
    let ts = b.apply(AlarmSignal::resolve(&k1), t0 + min(20));
    assert_eq!(ts.len(), 1);
    assert!(matches!(
        ts[0].kind,
        TransitionKind::ConditionCleared {
            still_active: 1,
            ..
        }
    ));
    assert_eq!(ts[0].incident.state, IncidentState::Open);
    // A repeated resolve and a resolve of an unknown alarm do nothing.
    assert!(b.apply(AlarmSignal::resolve(&k1), t0 + min(21)).is_empty());
    let unknown = key("water_detected", "dc", "room:dh1");
    assert!(
        b.apply(AlarmSignal::resolve(&unknown), t0 + min(21))
            .is_empty()
    );
    // The cleared member raises again while the incident is open: reactivated.
    let ts = open(&mut b, &hot("dc", "dh1", t0 + min(25)));
    assert!(matches!(ts[0].kind, TransitionKind::Reactivated { .. }));
    b.apply(AlarmSignal::resolve(&k1), t0 + min(26));
    let ts = b.apply(AlarmSignal::resolve(&k2), t0 + min(30));
    assert_eq!(ts[0].kind, TransitionKind::Resolved);
    assert_eq!(ts[0].event(), IncidentEvent::Resolved);
    assert_eq!(ts[0].incident.state, IncidentState::Resolved);
    assert_eq!(b.incidents()[0].resolved_at, Some(t0 + min(30)));
    let seqs: Vec<u32> = b.incidents()[0]
        .transitions
        .iter()
        .map(|t| t.sequence)
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as u32).collect::<Vec<_>>());
    // A new activation after resolution is a new incident with a new key.
    let ts = open(&mut b, &hot("dc", "dh1", t0 + min(40)));
    assert_eq!(ts[0].kind, TransitionKind::Opened);
    assert_ne!(ts[0].incident.dedup_key, b.incidents()[0].dedup_key);
    assert_eq!(b.incidents().len(), 2);
}

#[test]
fn acknowledged_once_and_again_after_escalation() {
    let mut b = book();
    let t0 = wib(2026, 11, 23, 10, 0);
    let k = key("hall_temperature_early_warning", "dc", "room:dh1");
    open(&mut b, &early("dc", "dh1", t0));
    let ack = |b: &mut IncidentBook, at| {
        b.apply(
            AlarmSignal::acknowledged(&k, "operator1", "checking PAC-2"),
            at,
        )
    };
    let ts = ack(&mut b, t0 + min(1));
    assert_eq!(ts.len(), 1);
    assert_eq!(ts[0].incident.state, IncidentState::Acknowledged);
    assert!(ts[0].incident.details.contains("operator1"));
    assert!(ack(&mut b, t0 + min(2)).is_empty());
    open(&mut b, &hot("dc", "dh1", t0 + min(3)));
    assert_eq!(b.incidents()[0].state, IncidentState::Escalated);
    assert_eq!(ack(&mut b, t0 + min(4)).len(), 1);
    assert_eq!(b.incidents()[0].state, IncidentState::Acknowledged);
}

#[test]
fn unresolved_power_p1_becomes_an_it_disaster_at_its_due_time() {
    let mut b = book();
    let t0 = wib(2026, 11, 22, 2, 0);
    open(&mut b, &ups_on_battery("dc", t0));
    let due = t0 + TimeDelta::hours(3);
    assert!(b.tick(due - TimeDelta::milliseconds(1)).is_empty());
    let ts = b.tick(due);
    assert_eq!(ts.len(), 1);
    assert_eq!(ts[0].kind, TransitionKind::Disaster);
    assert_eq!(ts[0].incident.state, IncidentState::Escalated);
    assert!(ts[0].note.contains("Bencana TIK"), "{}", ts[0].note);
    assert!(ts[0].note.contains("power"), "{}", ts[0].note);
    // Fail over to the DRC within 4 h of the disruption: by 06:00 WIB.
    assert!(
        ts[0].note.contains("to the DRC within 4 h"),
        "{}",
        ts[0].note
    );
    assert!(
        ts[0].note.contains("2026-11-22 06:00 WIB"),
        "{}",
        ts[0].note
    );
    assert!(ts[0].incident.details.contains("Bencana TIK"));
    // Once only.
    assert!(b.tick(due + min(1)).is_empty());
    assert!(b.tick(due + TimeDelta::hours(5)).is_empty());
}

#[test]
fn only_p1_power_cooling_fire_incidents_become_disasters() {
    let t0 = wib(2026, 11, 22, 2, 0);
    let late = t0 + TimeDelta::hours(100);
    let humid = cond(
        &key("hall_humidity", "dc", "room:dh1"),
        ConditionClass::Humidity,
        Urgency::High,
        Impact::High,
        65.0,
        t0,
    );
    let fire = cond(
        &key("vesda_fire1", "dc", "room:dh1"),
        ConditionClass::Fire,
        Urgency::High,
        Impact::High,
        1.0,
        t0,
    );
    let pac_fault = cond(
        &key("pac_fault", "dc", "device:pac-1"),
        ConditionClass::Cooling,
        Urgency::High,
        Impact::Medium,
        1.0,
        t0,
    );
    let mut b = book();
    open(&mut b, &humid);
    open(&mut b, &pac_fault);
    assert!(
        b.tick(late).is_empty(),
        "humidity and a P2 are no IT disaster"
    );
    open(&mut b, &fire);
    let ts = b.tick(late);
    assert_eq!(ts.len(), 1);
    assert_eq!(ts[0].incident.class, ConditionClass::Fire);
    // A resolved P1 is no disaster.
    let mut b = book();
    open(&mut b, &ups_on_battery("dc", t0));
    let k = key("ups_on_battery", "dc", "device:ups-1");
    b.apply(AlarmSignal::resolve(&k), t0 + min(30));
    assert!(b.tick(late).is_empty());
    // At the DRC itself the reminder says so.
    let mut b = book();
    open(&mut b, &ups_on_battery("drc", t0));
    let ts = b.tick(late);
    assert!(ts[0].note.contains("DRC itself"), "{}", ts[0].note);
}

/// A scripted day: cascade, escalation, acknowledgement, disaster, resolution.
fn script() -> Vec<(u8, i64)> {
    vec![
        (0, 0),
        (1, 2),
        (2, 5),
        (3, 40),
        (4, 41),
        (5, 200),
        (6, 210),
        (7, 220),
        (0, 300),
    ]
}

fn run_script(b: &mut IncidentBook, steps: &[(u8, i64)]) -> Vec<IncidentTransition> {
    let t0 = wib(2026, 11, 23, 10, 0);
    let k_hot = key("hall_temperature_high", "dc", "room:dh1");
    let k_early = key("hall_temperature_early_warning", "dc", "room:dh1");
    let mut out = vec![];
    for &(step, m) in steps {
        let at = t0 + min(m);
        out.extend(match step {
            0 => open(b, &early("dc", "dh1", at)),
            1 => open(b, &ups_on_battery("dc", at)),
            2 => open(b, &hot("dc", "dh2", at)),
            3 => open(b, &hot("dc", "dh1", at)),
            4 => b.apply(AlarmSignal::acknowledged(&k_hot, "op", "on it"), at),
            5 => b.tick(at),
            6 => b.apply(AlarmSignal::resolve(&k_early), at),
            _ => {
                let mut v = b.apply(AlarmSignal::resolve(&k_hot), at);
                let k2 = key("hall_temperature_high", "dc", "room:dh2");
                v.extend(b.apply(AlarmSignal::resolve(&k2), at));
                v
            }
        });
    }
    out
}

#[test]
fn keys_are_stable_across_a_rebuild_and_a_restore() {
    let steps = script();
    let mut a = book();
    let ta = run_script(&mut a, &steps);
    let mut b = book();
    let tb = run_script(&mut b, &steps);
    assert_eq!(ta, tb);
    let kinds: Vec<_> = ta.iter().map(|t| t.kind.clone()).collect();
    assert!(kinds.contains(&TransitionKind::Disaster), "{kinds:?}");
    assert!(kinds.contains(&TransitionKind::Resolved), "{kinds:?}");
    let keys: BTreeSet<&str> = ta.iter().map(|t| t.idempotency_key.as_str()).collect();
    assert_eq!(keys.len(), ta.len(), "idempotency keys are unique");
    // Stop half way, store as JSON, restore, continue: the same transitions.
    let (first, second) = steps.split_at(4);
    let mut c = book();
    let mut tc = run_script(&mut c, first);
    let json = serde_json::to_string(&c.state()).expect("serialize");
    let state: BookState = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(state, c.state());
    let mut d = restored(state);
    tc.extend(run_script(&mut d, second));
    assert_eq!(tc, ta);
    assert_eq!(d.state(), a.state());
}

#[test]
fn owned_alarm_context_works_like_a_condition() {
    // The wiring builds signals from the alarm side's owned keys and stored context,
    // without a `Condition` (whose rule id and unit are `&'static str`).
    let t0 = wib(2026, 11, 23, 10, 0);
    let stored = AlarmRef {
        rule: "hall_temperature_high".to_owned(),
        site: "dc".to_owned(),
        scope: "room:dh1".to_owned(),
    };
    let unit = String::from("degC");
    let summary = String::from("DC dh1: temperature 27.8 degC above 27 degC");
    let facts = AlarmFacts {
        alarm: AlarmId::from(&stored),
        class: ConditionClass::Temperature,
        impact: Impact::High,
        urgency: Urgency::High,
        value: Some(27.8),
        limit: Some(27.0),
        unit: &unit,
        room: Some("dh1"),
        rack: None,
        device: None,
        point: None,
        summary: &summary,
        occupants: None,
    };
    let mut owned = book();
    let a = owned.apply(AlarmSignal::Open(facts), t0);
    let mut from_condition = book();
    let b = open(&mut from_condition, &hot("dc", "dh1", t0));
    assert_eq!(a[0].incident.dedup_key, b[0].incident.dedup_key);
    assert_eq!(a[0].incident.summary, summary);
    let k = key("hall_temperature_high", "dc", "room:dh1");
    assert!(owned.open_incident_of(&k).is_some());
    let ts = owned.apply(AlarmSignal::Resolve(AlarmId::from(&stored)), t0 + min(1));
    assert_eq!(ts[0].kind, TransitionKind::Resolved);
    assert!(owned.open_incident_of(&k).is_none());
}

#[test]
fn pruning_drops_only_old_resolved_incidents() {
    let mut b = book();
    let t0 = wib(2026, 11, 23, 10, 0);
    open(&mut b, &hot("dc", "dh1", t0));
    open(&mut b, &ups_on_battery("dc", t0));
    let k = key("hall_temperature_high", "dc", "room:dh1");
    b.apply(AlarmSignal::resolve(&k), t0 + min(5));
    assert_eq!(b.prune_resolved(t0 + min(5)), 0);
    assert_eq!(b.prune_resolved(t0 + min(6)), 1);
    assert_eq!(b.incidents().len(), 1);
    assert_eq!(b.incidents()[0].condition, "ups_on_battery");
}

// ---- model-based property test -----------------------------------------------------

const SITES: [&str; 2] = ["dc", "drc"];
const SCOPES: [&str; 3] = ["room:dh1", "room:dh2", ""];
const RULES: [(&str, ConditionClass); 3] = [
    ("hall_temperature_high", ConditionClass::Temperature),
    (
        "hall_temperature_early_warning",
        ConditionClass::Temperature,
    ),
    ("ups_on_battery", ConditionClass::Ups),
];

#[derive(Debug, Clone)]
enum Op {
    Open(usize, Urgency, Impact),
    Update(usize, Urgency, Impact),
    Ack(usize),
    Resolve(usize),
    Tick,
}

fn alarm(i: usize) -> (ConditionKey, ConditionClass) {
    let (rule, class) = RULES[i % 3];
    let scope = SCOPES[(i / 3) % 3];
    let site = SITES[(i / 9) % 2];
    (key(rule, site, scope), class)
}

fn level() -> impl Strategy<Value = (Urgency, Impact)> {
    let u = prop_oneof![
        Just(Urgency::High),
        Just(Urgency::Medium),
        Just(Urgency::Low)
    ];
    let i = prop_oneof![Just(Impact::High), Just(Impact::Medium), Just(Impact::Low)];
    (u, i)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0usize..18, level()).prop_map(|(a, (u, i))| Op::Open(a, u, i)),
        2 => (0usize..18, level()).prop_map(|(a, (u, i))| Op::Update(a, u, i)),
        1 => (0usize..18).prop_map(Op::Ack),
        3 => (0usize..18).prop_map(Op::Resolve),
        1 => Just(Op::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn one_open_incident_per_alarm_over_random_sequences(
        ops in proptest::collection::vec((op(), 0i64..900), 1..80)
    ) {
        let mut b = book();
        let mut at = wib(2026, 11, 23, 10, 0);
        // Reference model: which alarms are raised.
        let mut raised: BTreeSet<AlarmRef> = BTreeSet::new();
        let mut all: Vec<IncidentTransition> = vec![];
        for (op, dt_s) in ops {
            at += TimeDelta::seconds(dt_s);
            let ts = match op {
                Op::Open(a, u, i) | Op::Update(a, u, i) => {
                    let (k, class) = alarm(a);
                    let c = cond(&k, class, u, i, 1.0, at);
                    raised.insert(AlarmRef::from(&k));
                    if matches!(op, Op::Open(..)) {
                        b.apply(AlarmSignal::open(&c), at)
                    } else {
                        b.apply(AlarmSignal::update(&c), at)
                    }
                }
                Op::Ack(a) => {
                    let (k, _) = alarm(a);
                    b.apply(AlarmSignal::acknowledged(&k, "op", ""), at)
                }
                Op::Resolve(a) => {
                    let (k, _) = alarm(a);
                    raised.remove(&AlarmRef::from(&k));
                    b.apply(AlarmSignal::resolve(&k), at)
                }
                Op::Tick => b.tick(at),
            };
            all.extend(ts);

            // At most one open incident per alarm; the active members are exactly the
            // raised alarms; open incidents have an active member, resolved ones none.
            let mut active: BTreeMap<AlarmRef, usize> = BTreeMap::new();
            for inc in b.incidents() {
                let mut member_alarms = BTreeSet::new();
                for m in &inc.members {
                    prop_assert!(member_alarms.insert(m.alarm.clone()), "member twice");
                    prop_assert_eq!(&m.alarm.site, &inc.site);
                    if m.active {
                        *active.entry(m.alarm.clone()).or_default() += 1;
                    }
                }
                if inc.is_open() {
                    prop_assert!(inc.active_members().count() > 0, "open without active member");
                } else {
                    prop_assert_eq!(inc.active_members().count(), 0);
                }
                prop_assert!(inc.priority <= inc.members.iter().map(|m| m.priority).min().unwrap_or(Priority::P5));
                let seqs: Vec<u32> = inc.transitions.iter().map(|t| t.sequence).collect();
                prop_assert_eq!(seqs, (1..=inc.transitions.len() as u32).collect::<Vec<_>>());
                prop_assert_eq!(inc.transitions[0].kind.clone(), TransitionKind::Opened);
            }
            let mut open_per_alarm: BTreeMap<AlarmRef, usize> = BTreeMap::new();
            for inc in b.incidents().iter().filter(|i| i.is_open()) {
                for m in &inc.members {
                    *open_per_alarm.entry(m.alarm.clone()).or_default() += 1;
                }
            }
            prop_assert!(open_per_alarm.values().all(|&n| n == 1), "{open_per_alarm:?}");
            prop_assert!(active.values().all(|&n| n == 1));
            let active: BTreeSet<AlarmRef> = active.into_keys().collect();
            prop_assert_eq!(&active, &raised);
        }
        // Idempotency keys are unique over the whole run.
        let keys: BTreeSet<&str> = all.iter().map(|t| t.idempotency_key.as_str()).collect();
        prop_assert_eq!(keys.len(), all.len());
        // A restore from JSON yields the same state.
        let json = serde_json::to_string(&b.state()).expect("serialize");
        let back: BookState = serde_json::from_str(&json).expect("deserialize");
        prop_assert_eq!(back, b.state());
    }
}
