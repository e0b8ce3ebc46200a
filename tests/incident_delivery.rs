//! Durable incident delivery against the fake webhook receiver over real HTTP on loopback:
//! the outbox, the dispatcher and the webhook adapter under receiver faults
//! (reliability scenarios I1-I5 and I7), across a store reopen, and across kill -9 of a
//! delivering child process.
//!
//! Time is compressed, not simulated: the retry delays are milliseconds instead of
//! seconds (`retry_max` 200 ms stands for the shipped 300 s), so "receiver down for
//! 10 min" is a receiver down for many backoff periods at the cap. No assertion is about
//! speed; deadlines only keep a broken build from hanging.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone as _, Utc};
use dcguard::config::model::{Impact, Priority, Urgency};
use dcguard::incidents::dispatcher::{self, DispatchSettings, DispatcherStatus};
use dcguard::incidents::incident::{
    IncidentSnapshot, IncidentState, IncidentTransition, TransitionKind,
};
use dcguard::incidents::outbox::Outbox;
use dcguard::rules::condition::ConditionClass;
use dcguard::store::Store;
use dcguard::ticketing::Adapter;
use dcguard::ticketing::webhook::WebhookAdapter;
use firmware_stubs::receivers::webhook::{Behaviour, WebhookReceiver};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const KEY: &[u8] = b"test-signing-key-not-a-secret";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 1, 0, 0).unwrap()
}

/// Transition `sequence` of incident `n` (1 = opened, 2 = resolved, others updated).
fn transition(n: usize, sequence: u32) -> IncidentTransition {
    let dedup_key = format!("dc/dc.temp_high/dh1:r{n:04}/2026-11-21T01:00:00.000Z");
    let (kind, state) = match sequence {
        1 => (TransitionKind::Opened, IncidentState::Open),
        2 => (TransitionKind::Resolved, IncidentState::Resolved),
        _ => (
            TransitionKind::Acknowledged {
                by: "op".into(),
                comment: "on it".into(),
            },
            IncidentState::Acknowledged,
        ),
    };
    IncidentTransition {
        idempotency_key: format!("{dedup_key}:{sequence}"),
        sequence,
        at: t0() + chrono::TimeDelta::seconds(i64::from(sequence)),
        kind,
        note: format!("transition {sequence}"),
        incident: IncidentSnapshot {
            id: format!("inc-{n:016x}"),
            dedup_key,
            state,
            priority: Priority::P1,
            impact: Impact::High,
            urgency: Urgency::High,
            opened_at: t0(),
            due_at: t0() + chrono::TimeDelta::hours(3),
            site: "dc".into(),
            room: Some("dh1".into()),
            rack: Some(format!("r{n:04}")),
            device: Some("th-1".into()),
            point: Some("temperature".into()),
            condition: "dc.temp_high".into(),
            class: ConditionClass::Temperature,
            value: Some(29.5),
            limit: Some(27.0),
            unit: "degC".into(),
            summary: format!("DC dh1 r{n:04}: temperature 29.5 degC above 27.0"),
            details: String::new(),
        },
    }
}

/// Opened + resolved of incidents `0..incidents`, incident by incident.
fn batch(incidents: usize) -> Vec<IncidentTransition> {
    (0..incidents)
        .flat_map(|n| [transition(n, 1), transition(n, 2)])
        .collect()
}

fn settings(timeout_ms: u64, min_ms: u64, max_ms: u64) -> DispatchSettings {
    DispatchSettings {
        request_timeout: Duration::from_millis(timeout_ms),
        retry_min: Duration::from_millis(min_ms),
        retry_max: Duration::from_millis(max_ms),
        max_in_flight: 4,
        idle_poll: Duration::from_millis(500),
        retry_horizon: Duration::from_secs(3600),
    }
}

fn adapter(receiver: &WebhookReceiver, s: &DispatchSettings) -> Arc<dyn Adapter> {
    Arc::new(WebhookAdapter::new(receiver.url(), KEY, s.request_timeout))
}

/// Polls `f` every 10 ms; panics after `limit` (a guard against hanging, not a speed test).
async fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_status(
    status: &mut watch::Receiver<DispatcherStatus>,
    what: &str,
    f: impl Fn(&DispatcherStatus) -> bool,
) -> DispatcherStatus {
    tokio::time::timeout(Duration::from_secs(25), status.wait_for(|s| f(s)))
        .await
        .unwrap_or_else(|_| panic!("gave up waiting for {what}"))
        .expect("dispatcher alive")
        .clone()
}

/// Every transition of `expected` applied exactly once, per incident in sequence order.
fn assert_exactly_once_in_order(receiver: &WebhookReceiver, expected: &[IncidentTransition]) {
    let applied = receiver.applied();
    let keys: Vec<&str> = applied.iter().map(|a| a.key.as_str()).collect();
    let unique: BTreeSet<&str> = keys.iter().copied().collect();
    assert_eq!(unique.len(), keys.len(), "a key applied twice");
    let want: BTreeSet<&str> = expected
        .iter()
        .map(|t| t.idempotency_key.as_str())
        .collect();
    assert_eq!(unique, want, "lost or unexpected transitions");
    let mut want_seq: HashMap<String, Vec<u64>> = HashMap::new();
    for t in expected {
        want_seq
            .entry(t.incident.id.clone())
            .or_default()
            .push(u64::from(t.sequence));
    }
    assert_eq!(
        receiver.sequences_by_incident(),
        want_seq,
        "order per incident"
    );
}

async fn store_in(dir: &tempfile::TempDir) -> Outbox {
    Outbox::new(Store::open(&dir.path().join("dcguard.sqlite")).unwrap())
}

// I1: receiver down (connections refused) for many backoff periods while 50 transitions
// are raised, then back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_down_during_50_transitions_then_all_delivered_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = store_in(&dir).await;
    let receiver = WebhookReceiver::start(KEY).await.unwrap();
    receiver.go_down().await;
    let s = settings(500, 20, 200);
    let cancel = CancellationToken::new();
    let mut d = dispatcher::spawn(outbox.clone(), adapter(&receiver, &s), s, cancel.clone());

    let all = batch(25);
    // Raised over time: opened first, resolved later, like 25 raise + 25 clear.
    let (opened, resolved): (Vec<_>, Vec<_>) = all.iter().cloned().partition(|t| t.sequence == 1);
    for chunk in opened.chunks(5).chain(resolved.chunks(5)) {
        outbox
            .enqueue(&["webhook"], chunk.to_vec(), Utc::now())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let failing = wait_status(&mut d.status, "failed attempts with all 50 queued", |s| {
        s.failed_attempts >= 20 && s.pending == 50
    })
    .await;
    assert!(failing.failing_since.is_some());
    assert_eq!(failing.pending, 50);
    assert!(receiver.requests().is_empty(), "the receiver was down");

    receiver.come_up().await.unwrap();
    let done = wait_status(&mut d.status, "everything delivered", |s| {
        s.pending == 0 && s.in_flight == 0
    })
    .await;
    assert_exactly_once_in_order(&receiver, &all);
    assert_eq!(receiver.duplicates_offered(), 0);
    assert_eq!(done.delivered, 50);
    assert_eq!(done.failing_since, None, "recovered");
    println!(
        "I1: 50 transitions, {} failed attempts while down, {} requests after recovery, 0 lost, 0 duplicates applied",
        done.failed_attempts,
        receiver.requests().len()
    );
    cancel.cancel();
    d.task.await.unwrap().unwrap();
}

// I3: 30 % 5xx and 10 % connection resets over 1000 transitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_receiver_over_1000_transitions_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = store_in(&dir).await;
    let receiver = WebhookReceiver::start(KEY).await.unwrap();
    receiver.set_behaviour(Behaviour::Flaky {
        error_pct: 30,
        reset_pct: 10,
        seed: 4,
    });
    let s = settings(2_000, 5, 50);
    let all = batch(500);
    outbox
        .enqueue(&["webhook"], all.clone(), Utc::now())
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    let status = tokio::time::timeout(
        Duration::from_secs(150),
        dispatcher::drain(outbox.clone(), adapter(&receiver, &s), s, cancel),
    )
    .await
    .expect("drained in time")
    .unwrap();
    assert_exactly_once_in_order(&receiver, &all);
    let requests = receiver.requests();
    let status_503 = requests.iter().filter(|r| r.status == Some(503)).count();
    let attempts = requests.len() + receiver.resets();
    assert!(
        status_503 > 0 && receiver.resets() > 0,
        "faults were injected"
    );
    assert_eq!(status.delivered, 1000);
    assert!(
        attempts <= 3 * all.len(),
        "attempts {attempts} > 3 x transitions"
    );
    let c = outbox.counts(Some("webhook")).await.unwrap();
    assert_eq!((c.pending, c.parked, c.delivered), (0, 0, 1000));
    println!(
        "I3: 1000 transitions, {attempts} attempts ({status_503} answered 503, {} connections reset), {} duplicates offered, 0 lost, 0 duplicates applied",
        receiver.resets(),
        receiver.duplicates_offered()
    );
}

// I4: a 4xx parks the item after one attempt, holds back its incident only, raises the
// failing condition, and nothing is retried until an operator says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_transition_is_parked_after_one_attempt_and_alarmed() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = store_in(&dir).await;
    let receiver = WebhookReceiver::start(KEY).await.unwrap();
    receiver.set_behaviour(Behaviour::Status(422));
    let s = settings(500, 10, 50);
    let cancel = CancellationToken::new();
    let mut d = dispatcher::spawn(outbox.clone(), adapter(&receiver, &s), s, cancel.clone());
    let a = vec![transition(1, 1), transition(1, 2)];
    outbox
        .enqueue(&["webhook"], a.clone(), Utc::now())
        .await
        .unwrap();
    let st = wait_status(&mut d.status, "parked", |s| s.parked == 1).await;
    assert!(st.is_failing(Utc::now(), Duration::from_secs(60)));
    assert_eq!(st.last_error.as_deref(), Some("rejected: HTTP 422"));

    // Another incident still goes out (once the receiver accepts again).
    receiver.set_behaviour(Behaviour::Normal);
    outbox
        .enqueue(&["webhook"], vec![transition(2, 1)], Utc::now())
        .await
        .unwrap();
    wait_for("incident 2", Duration::from_secs(25), || {
        receiver.applied().len() == 1
    })
    .await;
    // Many retry periods later: still exactly one attempt for the parked head, none for
    // the transition behind it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let offered: Vec<String> = receiver
        .requests()
        .iter()
        .filter_map(|r| r.key.clone())
        .collect();
    assert_eq!(
        offered,
        [
            a[0].idempotency_key.clone(),
            transition(2, 1).idempotency_key
        ]
    );
    let parked = outbox.parked(Some("webhook")).await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].idempotency_key, a[0].idempotency_key);
    assert_eq!(parked[0].attempts, 1);
    assert!(
        d.status
            .borrow()
            .is_failing(Utc::now(), Duration::from_secs(60))
    );

    // The operator retries it: both go out, in order, and the condition clears.
    assert!(outbox.retry_parked(parked[0].id, Utc::now()).await.unwrap());
    let st = wait_status(&mut d.status, "recovered", |s| {
        s.pending == 0 && s.parked == 0 && s.failing_since.is_none()
    })
    .await;
    assert_eq!(st.delivered, 3);
    assert_exactly_once_in_order(&receiver, &[a[0].clone(), a[1].clone(), transition(2, 1)]);
    cancel.cancel();
    d.task.await.unwrap().unwrap();
}

// I5: a black-hole receiver: every attempt ends at the request timeout, at most
// max_in_flight are open, and the alarm side keeps raising transitions meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_hole_attempts_end_at_the_timeout_and_evaluation_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = store_in(&dir).await;
    let receiver = WebhookReceiver::start(KEY).await.unwrap();
    receiver.set_behaviour(Behaviour::BlackHole);
    let s = settings(300, 10, 50);
    let cancel = CancellationToken::new();
    let mut d = dispatcher::spawn(outbox.clone(), adapter(&receiver, &s), s, cancel.clone());
    outbox
        .enqueue(&["webhook"], batch(10), Utc::now())
        .await
        .unwrap();

    // "Alarm evaluation": a ticking task that raises a transition at every tick, while
    // every delivery attempt hangs.
    let evaluation = {
        let outbox = outbox.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            for n in 100..150 {
                tick.tick().await;
                outbox
                    .enqueue(&["webhook"], vec![transition(n, 1)], Utc::now())
                    .await
                    .unwrap();
            }
        })
    };
    tokio::time::timeout(Duration::from_secs(10), evaluation)
        .await
        .expect("evaluation never waits on delivery")
        .unwrap();

    // Attempts end (time out) and new ones start: more requests than can be open at once.
    let st = wait_status(&mut d.status, "timed-out attempts", |s| {
        s.failed_attempts >= 12
    })
    .await;
    assert!(
        st.last_error.as_deref().unwrap_or("").contains("timed out"),
        "{:?}",
        st.last_error
    );
    assert!(receiver.requests().len() >= 12);
    assert!(st.in_flight <= s.max_in_flight);
    assert!(receiver.applied().is_empty());

    receiver.set_behaviour(Behaviour::Normal);
    let st = wait_status(&mut d.status, "delivered", |s| {
        s.pending == 0 && s.in_flight == 0
    })
    .await;
    assert_eq!(st.delivered, 70);
    assert_eq!(receiver.applied().len(), 70);
    println!(
        "I5: {} black-holed attempts, each ended at the 300 ms timeout; 50 evaluation ticks raised meanwhile",
        st.failed_attempts
    );
    cancel.cancel();
    d.task.await.unwrap().unwrap();
}

// I7: the receiver applies, then answers after the client gave up: the retry carries the
// same key and the receiver does not apply it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reply_after_applying_is_retried_with_the_same_key_and_deduplicated() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = store_in(&dir).await;
    let receiver = WebhookReceiver::start(KEY).await.unwrap();
    receiver.set_behaviour(Behaviour::SlowAfterApply(Duration::from_millis(900)));
    let s = settings(300, 10, 50);
    let all = batch(3);
    outbox
        .enqueue(&["webhook"], all.clone(), Utc::now())
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    let mut d = dispatcher::spawn(outbox.clone(), adapter(&receiver, &s), s, cancel.clone());
    // Opened transitions applied, their replies lost to the timeout, offered again.
    wait_for("duplicates offered", Duration::from_secs(25), || {
        receiver.duplicates_offered() >= 3
    })
    .await;
    receiver.set_behaviour(Behaviour::Normal);
    let st = wait_status(&mut d.status, "delivered", |s| {
        s.pending == 0 && s.in_flight == 0
    })
    .await;
    assert_eq!(st.delivered, 6);
    assert_exactly_once_in_order(&receiver, &all);
    let first_key = &all[0].idempotency_key;
    let offers = receiver
        .requests()
        .iter()
        .filter(|r| r.key.as_ref() == Some(first_key))
        .count();
    assert!(offers >= 2, "retried with the same key ({offers} offers)");
    println!(
        "I7: 6 transitions, {} duplicates offered, 0 applied twice",
        receiver.duplicates_offered()
    );
    cancel.cancel();
    d.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_survives_a_reopen_and_delivered_items_are_not_resent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dcguard.sqlite");
    let all = batch(2);
    {
        let store = Store::open(&path).unwrap();
        store.outbox_enqueue(&["webhook"], &all, t0()).unwrap();
        let due = store.outbox_due("webhook", t0(), 10, &[]).unwrap();
        assert!(store.outbox_mark_delivered(due[0].id, t0()).unwrap());
    }
    let store = Store::open(&path).unwrap();
    let c = store.outbox_counts(None).unwrap();
    assert_eq!((c.pending, c.delivered), (3, 1));
    // Enqueued again by a replay after restart: nothing new.
    assert_eq!(store.outbox_enqueue(&["webhook"], &all, t0()).unwrap(), 0);

    let receiver = WebhookReceiver::start(KEY).await.unwrap();
    let s = settings(1_000, 10, 50);
    let st = dispatcher::drain(
        Outbox::new(store),
        adapter(&receiver, &s),
        s,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(st.delivered, 3);
    let offered: Vec<String> = receiver
        .requests()
        .iter()
        .filter_map(|r| r.key.clone())
        .collect();
    assert!(!offered.contains(&all[0].idempotency_key));
    assert_eq!(offered.len(), 3);
}

// I2: kill -9 of the delivering process at random moments (also between a send and the
// commit of its outcome), restart, repeat; at the end every transition was applied at the
// receiver exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_delivering_repeated_applies_each_transition_once() {
    use rand::{Rng as _, SeedableRng as _};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dcguard.sqlite");
    let all = batch(100);
    Store::open(&path)
        .unwrap()
        .outbox_enqueue(&["webhook"], &all, t0())
        .unwrap();
    let receiver = WebhookReceiver::start(KEY).await.unwrap();
    // Replies take a while after applying: kills land between send and commit.
    receiver.set_behaviour(Behaviour::SlowAfterApply(Duration::from_millis(40)));
    let child = |dir: &std::path::Path| {
        tokio::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "delivery_child_process", "--nocapture"])
            .env("DCGUARD_TEST_CHILD_STORE", dir.join("dcguard.sqlite"))
            .env("DCGUARD_TEST_CHILD_URL", receiver.url())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let mut kills = 0;
    for _ in 0..10 {
        let mut c = child(dir.path());
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..350))).await;
        if c.try_wait().unwrap().is_none() {
            c.kill().await.unwrap(); // SIGKILL
            kills += 1;
        }
    }
    let exit = tokio::time::timeout(Duration::from_secs(20), child(dir.path()).wait())
        .await
        .expect("the last run drains")
        .unwrap();
    assert!(exit.success());
    assert!(kills >= 3, "only {kills} runs were killed while delivering");
    assert_exactly_once_in_order(&receiver, &all);
    let c = Store::open(&path).unwrap().outbox_counts(None).unwrap();
    assert_eq!((c.pending, c.delivered), (0, 200));
    println!(
        "I2: {kills} kill -9 while delivering; 200 transitions applied once each; {} duplicates offered (resent after a kill) and deduplicated",
        receiver.duplicates_offered()
    );
}

/// The child process of the kill -9 test: drains the outbox given in the environment.
/// Run directly (no environment), it drains an empty outbox, which ends at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_child_process() {
    let s = settings(2_000, 10, 50);
    let (store, url) = match (
        std::env::var_os("DCGUARD_TEST_CHILD_STORE"),
        std::env::var("DCGUARD_TEST_CHILD_URL"),
    ) {
        (Some(path), Ok(url)) => (Store::open(std::path::Path::new(&path)).unwrap(), url),
        _ => (
            Store::in_memory().unwrap(),
            "http://127.0.0.1:9/".to_owned(),
        ),
    };
    let adapter: Arc<dyn Adapter> = Arc::new(WebhookAdapter::new(url, KEY, s.request_timeout));
    let outbox = Outbox::new(store);
    let st = dispatcher::drain(outbox.clone(), adapter, s, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(st.pending, 0);
    assert_eq!(outbox.counts(None).await.unwrap().pending, 0);
}

// I8: a transition that cannot be delivered within the retry horizon is parked, so it is
// never retried after the receiver may have forgotten its idempotency key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transition_past_the_retry_horizon_is_parked_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = store_in(&dir).await;
    let receiver = WebhookReceiver::start(KEY).await.unwrap();
    receiver.set_behaviour(Behaviour::Status(503));
    let s = DispatchSettings {
        retry_horizon: Duration::from_millis(500),
        ..settings(500, 20, 50)
    };
    outbox
        .enqueue(&["webhook"], vec![transition(1, 1)], Utc::now())
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    let mut d = dispatcher::spawn(outbox.clone(), adapter(&receiver, &s), s, cancel.clone());
    let st = wait_status(&mut d.status, "parked", |s| s.parked == 1).await;
    // Retried (503 is retryable) until the next retry would fall past the horizon.
    assert!(st.failed_attempts >= 1);
    let parked = outbox.parked(None).await.unwrap();
    let error = parked[0].last_error.clone().unwrap();
    assert_eq!(
        error,
        "retry horizon of 500ms exceeded; last error: HTTP 503"
    );
    let offered = receiver.requests().len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.requests().len(), offered, "no retry after parking");
    cancel.cancel();
    d.task.await.unwrap().unwrap();
}

// I6 (part): a 429 with Retry-After is honoured: the next attempt of that transition never
// comes earlier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = store_in(&dir).await;
    let receiver = WebhookReceiver::start(KEY).await.unwrap();
    receiver.set_behaviour(Behaviour::RateLimited {
        retry_after_secs: 1,
    });
    let s = settings(500, 10, 20);
    outbox
        .enqueue(&["webhook"], vec![transition(1, 1)], Utc::now())
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    let mut d = dispatcher::spawn(outbox.clone(), adapter(&receiver, &s), s, cancel.clone());
    wait_status(&mut d.status, "a 429", |s| s.failed_attempts >= 1).await;
    receiver.set_behaviour(Behaviour::Normal);
    wait_status(&mut d.status, "delivered", |s| s.delivered == 1).await;
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2, "one 429, then one delivery");
    assert_eq!(requests[0].status, Some(429));
    let gap = requests[1].at - requests[0].at;
    assert!(gap >= Duration::from_secs(1), "retried after {gap:?}");
    cancel.cancel();
    d.task.await.unwrap().unwrap();
}

// The wire contract (DESIGN "Incident webhook"): a CloudEvents 1.0 envelope with the
// incident's fields, accepted by a receiver that checks the signature; a wrong key is
// refused (401) and parked after that one attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_envelope_carries_the_design_fields_and_a_bad_signature_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = store_in(&dir).await;
    let receiver = WebhookReceiver::start(KEY).await.unwrap();
    let s = settings(1_000, 10, 50);
    let t = transition(7, 1);
    outbox
        .enqueue(&["webhook"], vec![t.clone()], Utc::now())
        .await
        .unwrap();
    let st = dispatcher::drain(
        outbox.clone(),
        adapter(&receiver, &s),
        s,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(st.delivered, 1);
    let applied = receiver.applied();
    let e = &applied[0].envelope;
    assert_eq!(e["specversion"], "1.0");
    assert_eq!(e["id"], t.idempotency_key.as_str());
    assert_eq!(e["source"], "dcguard");
    assert_eq!(e["type"], "dcguard.incident.opened");
    assert_eq!(e["time"], "2026-11-21T01:00:01.000Z");
    assert_eq!(e["datacontenttype"], "application/json");
    let data = &e["data"];
    for key in [
        "incident_id",
        "dedup_key",
        "state",
        "priority",
        "impact",
        "urgency",
        "opened_at",
        "due_at",
        "site",
        "room",
        "rack",
        "device",
        "point",
        "condition",
        "value",
        "limit",
        "unit",
        "summary",
        "details",
        "sequence",
    ] {
        assert!(data.get(key).is_some(), "data.{key} missing in {data}");
    }
    assert_eq!(data["incident_id"], t.incident.id.as_str());
    assert_eq!(data["priority"], "P1");
    assert_eq!(data["site"], "dc");
    assert_eq!(data["value"], 29.5);
    assert_eq!(data["limit"], 27.0);
    assert_eq!(data["due_at"], "2026-11-21T04:00:00Z");

    // The same transition signed with another key: refused, parked after one attempt.
    let other_dir = tempfile::tempdir().unwrap();
    let other = store_in(&other_dir).await;
    other
        .enqueue(&["webhook"], vec![t.clone()], Utc::now())
        .await
        .unwrap();
    let wrong: Arc<dyn Adapter> = Arc::new(WebhookAdapter::new(
        receiver.url(),
        b"another-key".to_vec(),
        s.request_timeout,
    ));
    let st = dispatcher::drain(other.clone(), wrong, s, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!((st.delivered, st.parked), (0, 1));
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    assert!(!requests[1].signature_ok);
    assert_eq!(requests[1].status, Some(401));
    assert_eq!(receiver.applied().len(), 1);
}

// "Deliver now" from the configuration: the enabled webhook, its key from a file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_now_drains_every_enabled_adapter_of_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("webhook.key");
    std::fs::write(&key_file, [KEY, b"\n"].concat()).unwrap();
    let receiver = WebhookReceiver::start(KEY).await.unwrap();
    let mut cfg = dcguard::config::load(std::path::Path::new("config")).unwrap();
    cfg.webhook = Some(dcguard::config::model::Webhook {
        enabled: true,
        url: receiver.url(),
        hmac_secret: Some(dcguard::config::model::SecretRef::File(key_file)),
    });
    cfg.servicenow = None;
    cfg.pagerduty = None;
    let names = dcguard::ticketing::enabled_names(&cfg);
    assert_eq!(names, ["webhook"]);
    let outbox = store_in(&dir).await;
    let all = batch(5);
    outbox
        .enqueue(&names, all.clone(), Utc::now())
        .await
        .unwrap();
    let statuses = dispatcher::deliver_now(&cfg, outbox, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(statuses.len(), 1);
    assert_eq!(
        (statuses[0].adapter, statuses[0].delivered),
        ("webhook", 10)
    );
    assert_exactly_once_in_order(&receiver, &all);
}
