//! The ServiceNow Table API and PagerDuty Events v2 adapters over real HTTP against the
//! firmware stubs' fake receivers: fields and lifecycle, no duplicate after a re-sent
//! transition, and the sorting of failures into retryable and rejected.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Asia::Jakarta;
use dcguard::config::{self, model::Config, model::Impact, model::SecretRef, model::Urgency};
use dcguard::incidents::incident::{
    AlarmSignal, IncidentBook, IncidentSettings, IncidentTransition, TransitionKind,
};
use dcguard::incidents::sla::WorkingClock;
use dcguard::rules::condition::{Condition, ConditionClass, ConditionKey, Verdict};
use dcguard::ticketing::pagerduty::{self, PagerDutyAdapter};
use dcguard::ticketing::servicenow::{self, ServiceNowAdapter, Settings};
use dcguard::ticketing::{Adapter, SendError};
use firmware_stubs::receivers::pagerduty::{AlertStatus, FakePagerDuty};
use firmware_stubs::receivers::servicenow::{FakeServiceNow, Fault};

const USER: &str = "dcguard.integration";
const PASSWORD: &str = "n0t-a-real-pa55word";
const ROUTING_KEY: &str = "R0UT1NGKEY0000000000000000000000";
/// Bound of one request in the fault tests; the slow faults take longer.
const SHORT: Duration = Duration::from_millis(400);
const SLOW: Duration = Duration::from_millis(1500);

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

fn wib(y: i32, m: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Jakarta
        .with_ymd_and_hms(y, m, d, h, mi, 0)
        .single()
        .expect("valid WIB time")
        .with_timezone(&Utc)
}

fn key(rule: &'static str, scope: &str) -> ConditionKey {
    ConditionKey {
        rule,
        site: Arc::from("dc"),
        scope: Arc::from(scope),
    }
}

/// A temperature condition in hall dh1 of the DC.
fn temperature(
    k: &ConditionKey,
    impact: Impact,
    value: f64,
    limit: f64,
    at: DateTime<Utc>,
) -> Condition {
    Condition {
        key: k.clone(),
        class: ConditionClass::Temperature,
        verdict: Verdict::Active,
        at,
        impact,
        urgency: Urgency::High,
        value: Some(value),
        limit: Some(limit),
        unit: "degC",
        room: Some(Arc::from("dh1")),
        rack: None,
        device: None,
        point: None,
        summary: format!("DC dh1: temperature {value} degC above {limit} degC"),
    }
}

/// Open (early warning, P3), update (breach: escalated to P1), acknowledge, one condition
/// cleared, resolve: five transitions of one incident.
fn lifecycle(scope: &str) -> Vec<IncidentTransition> {
    let mut b = book();
    let t0 = wib(2026, 11, 23, 10, 0);
    let min = TimeDelta::minutes;
    let early = key("hall_temperature_early_warning", scope);
    let hot = key("hall_temperature_high", scope);
    let mut ts = vec![];
    ts.extend(b.apply(
        AlarmSignal::open(&temperature(&early, Impact::Low, 26.3, 26.0, t0)),
        t0,
    ));
    ts.extend(b.apply(
        AlarmSignal::open(&temperature(&hot, Impact::High, 27.8, 27.0, t0 + min(5))),
        t0 + min(5),
    ));
    ts.extend(b.apply(
        AlarmSignal::acknowledged(&hot, "operator1", "PAC-2 tripped, technician called"),
        t0 + min(7),
    ));
    ts.extend(b.apply(AlarmSignal::resolve(&hot), t0 + min(40)));
    ts.extend(b.apply(AlarmSignal::resolve(&early), t0 + min(50)));
    let kinds: Vec<&str> = ts
        .iter()
        .map(|t| match t.kind {
            TransitionKind::Opened => "opened",
            TransitionKind::Escalated { .. } => "escalated",
            TransitionKind::Acknowledged { .. } => "acknowledged",
            TransitionKind::ConditionCleared { .. } => "cleared",
            TransitionKind::Resolved => "resolved",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        ["opened", "escalated", "acknowledged", "cleared", "resolved"]
    );
    ts
}

fn settings(fake: &FakeServiceNow) -> Settings {
    Settings {
        instance_url: fake.url(),
        table: "incident".into(),
        username: USER.into(),
        assignment_group: Some("DC Facility".into()),
        caller_id: Some("dcguard".into()),
        close_code: servicenow::DEFAULT_CLOSE_CODE.into(),
    }
}

async fn servicenow_fake() -> FakeServiceNow {
    FakeServiceNow::start("incident", USER, PASSWORD)
        .await
        .expect("fake ServiceNow starts")
}

fn retry_after(r: Result<(), SendError>) -> Option<Duration> {
    match r {
        Err(SendError::Retryable { retry_after, .. }) => retry_after,
        other => panic!("expected a retryable error, got {other:?}"),
    }
}

fn rejected_status(r: Result<(), SendError>) -> Option<u16> {
    match r {
        Err(SendError::Rejected { status, .. }) => status,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn servicenow_lifecycle_creates_one_record_with_notes_escalation_and_resolution() {
    let fake = servicenow_fake().await;
    // The password comes from a file reference, as in production.
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("sn-password");
    std::fs::write(&secret, format!("{PASSWORD}\n")).unwrap();
    let cfg = dcguard::config::model::ServiceNow {
        enabled: true,
        instance_url: format!("{}/", fake.url()),
        table: "incident".into(),
        username: USER.into(),
        password: Some(SecretRef::File(secret)),
        assignment_group: Some("DC Facility".into()),
        caller_id: Some("dcguard".into()),
    };
    let adapter = ServiceNowAdapter::from_config(&cfg, Duration::from_secs(5)).unwrap();
    assert_eq!(adapter.name(), "servicenow");
    assert!(!format!("{adapter:?}").contains(PASSWORD));

    let ts = lifecycle("room:dh1");
    let dedup_key = ts[0].incident.dedup_key.clone();
    adapter.send(&ts[0]).await.unwrap();
    let created = fake.records_with(&dedup_key);
    assert_eq!(created.len(), 1);
    let r = &created[0];
    assert!(r.get("short_description").starts_with("[P3] DC dh1"));
    assert_eq!((r.get("impact"), r.get("urgency")), ("3", "1"));
    assert_eq!(r.get("priority"), "3");
    assert_eq!(r.get("state"), "1");
    assert_eq!(r.get("correlation_display"), "dcguard");
    assert_eq!(r.get("assignment_group"), "DC Facility");
    let d = r.get("description");
    for needle in [
        "Site: dc",
        "Room: dh1",
        "Value: 26.3 degC",
        "Limit: 26 degC",
        "Priority: P3",
    ] {
        assert!(d.contains(needle), "{needle:?} not in {d}");
    }

    for t in &ts[1..] {
        adapter.send(t).await.unwrap();
    }
    let records = fake.records();
    assert_eq!(records.len(), 1, "one record for the whole incident");
    let r = &records[0];
    // Escalated to P1: impact and urgency 1, the instance derives priority 1.
    assert_eq!((r.get("impact"), r.get("urgency")), ("1", "1"));
    assert_eq!(r.get("priority"), "1");
    assert!(
        r.get("short_description")
            .starts_with("[P1] DC dh1: temperature 27.8")
    );
    assert_eq!(r.get("state"), "6");
    assert_eq!(r.get("close_code"), servicenow::DEFAULT_CLOSE_CODE);
    assert!(!r.get("close_notes").is_empty());
    // One work note per transition, each carrying its idempotency key.
    assert_eq!(r.work_notes.len(), ts.len());
    for (note, t) in r.work_notes.iter().zip(&ts) {
        assert!(
            note.text.starts_with(&servicenow::marker(t)),
            "{}",
            note.text
        );
    }
    assert!(r.work_notes[2].text.contains("operator1"));
    // Every transition looked the record up first; one create, then updates.
    let methods: Vec<String> = fake.log().into_iter().map(|l| l.method).collect();
    assert_eq!(
        methods,
        [
            "GET", "POST", "GET", "PATCH", "GET", "PATCH", "GET", "PATCH", "GET", "PATCH"
        ]
    );
}

#[tokio::test]
async fn servicenow_resent_transitions_after_a_timeout_make_no_duplicate() {
    let fake = servicenow_fake().await;
    let adapter = ServiceNowAdapter::new(settings(&fake), PASSWORD, SHORT);
    let ts = lifecycle("room:dh1");

    // The create is applied, but its reply comes after the client gave up.
    fake.faults(|f| f.script([Fault::Normal, Fault::SlowAfterApply(SLOW)]));
    assert!(retry_after(adapter.send(&ts[0]).await).is_none());
    assert_eq!(fake.records().len(), 1);
    // The dispatcher sends it again: found by correlation_id, nothing created or added.
    adapter.send(&ts[0]).await.unwrap();
    assert_eq!(fake.records().len(), 1);
    assert_eq!(fake.records()[0].work_notes.len(), 1);

    // Same for an update: the note is not added twice.
    fake.faults(|f| f.script([Fault::Normal, Fault::SlowAfterApply(SLOW)]));
    assert!(adapter.send(&ts[1]).await.is_err());
    adapter.send(&ts[1]).await.unwrap();
    // And for a request that timed out WITHOUT being applied: applied once on the retry.
    fake.faults(|f| f.script([Fault::Normal, Fault::Timeout(SLOW)]));
    assert!(adapter.send(&ts[2]).await.is_err());
    adapter.send(&ts[2]).await.unwrap();
    let r = &fake.records()[0];
    assert_eq!(r.work_notes.len(), 3);
    assert_eq!(fake.records().len(), 1);
    let marked = |t: &IncidentTransition| {
        r.work_notes
            .iter()
            .filter(|n| n.text.contains(&servicenow::marker(t)))
            .count()
    };
    assert_eq!((marked(&ts[1]), marked(&ts[2])), (1, 1));

    // A restart between send and commit re-sends the resolution: resolved once.
    for t in &ts[3..] {
        adapter.send(t).await.unwrap();
    }
    adapter.send(&ts[4]).await.unwrap();
    let r = &fake.records()[0];
    assert_eq!(r.get("state"), "6");
    assert_eq!(r.work_notes.len(), ts.len());
}

#[tokio::test]
async fn servicenow_a_dedup_key_longer_than_correlation_id_still_finds_its_record() {
    let fake = servicenow_fake().await;
    let adapter = ServiceNowAdapter::new(settings(&fake), PASSWORD, Duration::from_secs(5));
    // A scope long enough to push the dedup key past the field's 100 characters (the
    // instance would cut it silently, and a look-up by the full key would never match).
    let ts = lifecycle(&format!("point:{}", "rack-row-A-sensor-".repeat(6)));
    assert!(ts[0].incident.dedup_key.chars().count() > servicenow::CORRELATION_ID_MAX);
    adapter.send(&ts[0]).await.unwrap();
    adapter.send(&ts[0]).await.unwrap();
    adapter.send(&ts[1]).await.unwrap();
    let records = fake.records();
    assert_eq!(records.len(), 1);
    let cid = records[0].get("correlation_id");
    assert_eq!(cid, servicenow::correlation_id(&ts[0].incident));
    assert_eq!(cid.chars().count(), servicenow::CORRELATION_ID_MAX);
    assert_eq!(records[0].work_notes.len(), 2);
}

#[tokio::test]
async fn servicenow_failures_are_sorted_into_rejected_and_retryable() {
    let fake = servicenow_fake().await;
    let adapter = ServiceNowAdapter::new(settings(&fake), PASSWORD, SHORT);
    let ts = lifecycle("room:dh1");

    fake.faults(|f| f.script([Fault::Status(400)]));
    assert_eq!(rejected_status(adapter.send(&ts[0]).await), Some(400));
    fake.faults(|f| f.script([Fault::Normal, Fault::Status(503)]));
    assert_eq!(retry_after(adapter.send(&ts[0]).await), None);
    fake.faults(|f| {
        f.script([Fault::RateLimited {
            retry_after_secs: 7,
        }])
    });
    assert_eq!(
        retry_after(adapter.send(&ts[0]).await),
        Some(Duration::from_secs(7))
    );
    fake.faults(|f| f.script([Fault::BlackHole]));
    assert!(retry_after(adapter.send(&ts[0]).await).is_none());
    assert!(fake.records().is_empty(), "nothing applied so far");

    // Wrong credentials: 401, parked (retrying cannot help).
    let wrong = ServiceNowAdapter::new(settings(&fake), "wrong", SHORT);
    assert_eq!(rejected_status(wrong.send(&ts[0]).await), Some(401));
    // A server that is not there: retryable.
    let mut gone = settings(&fake);
    gone.instance_url = "http://127.0.0.1:9".into();
    let gone = ServiceNowAdapter::new(gone, PASSWORD, SHORT);
    assert!(retry_after(gone.send(&ts[0]).await).is_none());

    adapter.send(&ts[0]).await.unwrap();
    assert_eq!(fake.records().len(), 1);
}

async fn pagerduty_fake() -> FakePagerDuty {
    FakePagerDuty::start(ROUTING_KEY)
        .await
        .expect("fake PagerDuty starts")
}

#[tokio::test]
async fn pagerduty_lifecycle_is_one_alert_triggered_acknowledged_and_resolved() {
    let fake = pagerduty_fake().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("pd-routing-key");
    std::fs::write(&secret, ROUTING_KEY).unwrap();
    let cfg = dcguard::config::model::PagerDuty {
        enabled: true,
        events_url: fake.events_url(),
        routing_key: Some(SecretRef::File(secret)),
    };
    let adapter = PagerDutyAdapter::from_config(&cfg, Duration::from_secs(5)).unwrap();
    assert_eq!(adapter.name(), "pagerduty");
    assert!(!format!("{adapter:?}").contains(ROUTING_KEY));

    let ts = lifecycle("room:dh1");
    let dedup_key = ts[0].incident.dedup_key.clone();
    adapter.send(&ts[0]).await.unwrap();
    let a = &fake.alerts_with(&dedup_key)[0];
    assert_eq!(a.status, AlertStatus::Triggered);
    let p = &a.first_payload;
    assert_eq!(p["severity"], "warning", "P3");
    assert_eq!(p["source"], "dc/dh1");
    assert_eq!(p["class"], "Temperature");
    assert!(p["summary"].as_str().unwrap().starts_with("[P3] DC dh1"));
    let d = &p["custom_details"];
    assert_eq!(
        (&d["site"], &d["room"], &d["priority"]),
        (&"dc".into(), &"dh1".into(), &"P3".into())
    );
    assert_eq!(
        (d["value"].as_f64(), d["limit"].as_f64()),
        (Some(26.3), Some(26.0))
    );
    let due: DateTime<Utc> = d["due_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(due, ts[0].incident.due_at);

    adapter.send(&ts[1]).await.unwrap();
    let a = &fake.alerts()[0];
    assert_eq!(a.last_payload["severity"], "critical", "escalated to P1");
    assert_eq!(
        a.last_payload["custom_details"]["value"].as_f64(),
        Some(27.8)
    );
    adapter.send(&ts[2]).await.unwrap();
    assert_eq!(fake.alerts()[0].status, AlertStatus::Acknowledged);
    for t in &ts[3..] {
        adapter.send(t).await.unwrap();
    }
    let alerts = fake.alerts();
    assert_eq!(alerts.len(), 1, "one alert for the whole incident");
    assert_eq!(alerts[0].status, AlertStatus::Resolved);
    assert_eq!(
        alerts[0].actions,
        ["trigger", "trigger", "acknowledge", "trigger", "resolve"]
    );
    assert_eq!(fake.dropped(), 0);
}

#[tokio::test]
async fn pagerduty_resent_events_after_a_timeout_make_no_duplicate_alert() {
    let fake = pagerduty_fake().await;
    let adapter = PagerDutyAdapter::new(fake.events_url(), ROUTING_KEY, SHORT);
    let ts = lifecycle("room:dh1");

    fake.faults(|f| f.script([Fault::SlowAfterApply(SLOW)]));
    assert!(adapter.send(&ts[0]).await.is_err());
    adapter.send(&ts[0]).await.unwrap();
    let alerts = fake.alerts();
    assert_eq!(
        alerts.len(),
        1,
        "the re-sent trigger is folded in by dedup_key"
    );
    assert_eq!(alerts[0].triggers, 2);

    for t in &ts[1..4] {
        adapter.send(t).await.unwrap();
    }
    fake.faults(|f| f.script([Fault::SlowAfterApply(SLOW)]));
    assert!(adapter.send(&ts[4]).await.is_err());
    adapter.send(&ts[4]).await.unwrap();
    let alerts = fake.alerts();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].status, AlertStatus::Resolved);
    assert_eq!(fake.dropped(), 1, "the second resolve changed nothing");
}

#[tokio::test]
async fn pagerduty_failures_are_sorted_into_rejected_and_retryable() {
    let fake = pagerduty_fake().await;
    let adapter = PagerDutyAdapter::new(fake.events_url(), ROUTING_KEY, SHORT);
    let ts = lifecycle("room:dh1");

    // The fake's own validation: an unknown routing key is an invalid event (400).
    let wrong = PagerDutyAdapter::new(fake.events_url(), "not-the-key", SHORT);
    assert_eq!(rejected_status(wrong.send(&ts[0]).await), Some(400));
    fake.faults(|f| f.script([Fault::Status(503)]));
    assert_eq!(retry_after(adapter.send(&ts[0]).await), None);
    fake.faults(|f| {
        f.script([Fault::RateLimited {
            retry_after_secs: 30,
        }])
    });
    assert_eq!(
        retry_after(adapter.send(&ts[0]).await),
        Some(Duration::from_secs(30))
    );
    fake.faults(|f| f.script([Fault::Status(403)]));
    assert_eq!(rejected_status(adapter.send(&ts[0]).await), Some(403));
    fake.faults(|f| f.script([Fault::BlackHole]));
    assert!(retry_after(adapter.send(&ts[0]).await).is_none());
    assert!(fake.alerts().is_empty(), "nothing applied so far");
    adapter.send(&ts[0]).await.unwrap();
    assert_eq!(fake.alerts().len(), 1);
    assert_eq!(
        pagerduty::dedup_key(&ts[0].incident),
        ts[0].incident.dedup_key
    );
}

#[tokio::test]
async fn through_the_dispatcher_30_percent_503s_over_200_transitions_make_no_duplicate_ticket() {
    use dcguard::incidents::dispatcher::{self, DispatchSettings};
    use dcguard::incidents::outbox::Outbox;
    use dcguard::store::Store;

    let fake = servicenow_fake().await;
    // Every request (look-ups, creates, updates) fails with 503 at a 30 % rate, and 5 %
    // are applied but answered after the client gave up (the duplicate window).
    fake.faults(|f| {
        f.random_mix(
            [
                (0.30, Fault::Status(503)),
                (0.05, Fault::SlowAfterApply(Duration::from_millis(600))),
            ],
            4,
        )
    });
    let adapter = Arc::new(ServiceNowAdapter::new(
        settings(&fake),
        PASSWORD,
        Duration::from_millis(200),
    ));
    let outbox = Outbox::new(Store::in_memory().unwrap());
    // 40 incidents (one per hall) of 5 transitions each.
    let incidents: Vec<Vec<IncidentTransition>> =
        (0..40).map(|i| lifecycle(&format!("room:dh{i}"))).collect();
    let all: Vec<IncidentTransition> = incidents.iter().flatten().cloned().collect();
    assert_eq!(all.len(), 200);
    outbox
        .enqueue(&[servicenow::NAME], all, Utc::now())
        .await
        .unwrap();
    let settings = DispatchSettings {
        request_timeout: Duration::from_millis(200),
        retry_min: Duration::from_millis(5),
        retry_max: Duration::from_millis(40),
        max_in_flight: 4,
        idle_poll: Duration::from_millis(200),
        ..DispatchSettings::from(&dcguard::config::model::Dispatch::default())
    };
    let status = dispatcher::drain(
        outbox.clone(),
        adapter,
        settings,
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!((status.pending, status.parked), (0, 0));

    let records = fake.records();
    assert_eq!(records.len(), 40, "one record per incident, no duplicate");
    for ts in &incidents {
        let found = fake.records_with(&servicenow::correlation_id(&ts[0].incident));
        assert_eq!(found.len(), 1);
        let r = &found[0];
        assert_eq!(r.get("state"), "6");
        // Every transition once, in order.
        let notes: Vec<&str> = r.work_notes.iter().map(|n| n.text.as_str()).collect();
        assert_eq!(notes.len(), ts.len());
        for (note, t) in notes.iter().zip(ts) {
            assert!(note.starts_with(&servicenow::marker(t)), "{note}");
        }
    }
    let log = fake.log();
    let count = |f: &Fault| log.iter().filter(|l| l.fault == *f).count();
    assert!(count(&Fault::Status(503)) > 100, "the plan injected 503s");
    let late = count(&Fault::SlowAfterApply(Duration::from_millis(600)));
    assert!(late > 5, "the plan applied requests the client gave up on");
    assert!(status.failed_attempts >= late as u64);
}
