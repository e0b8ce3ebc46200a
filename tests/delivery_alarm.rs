//! The internal alarm "incident delivery failing" (pseudo-site `daemon`) inside the running
//! daemon, against the fake webhook receiver of `firmware-stubs`: a 4xx parks the
//! transition and raises the alarm at once; 503s raise it only once they have lasted
//! `[ticketing.dispatch] delivery_failing_after_secs`; it shows in `/metrics` and the API's
//! alarm list, opens no incident, and clears when delivery recovers.

mod common;
mod common_api;

use std::time::Duration;

use common_api::{ApiRig, RigOptions, wait_for};
use dcguard::alarms::AlarmState;
use dcguard::alarms::task::AlarmView;
use dcguard::api::auth::Role;
use firmware_stubs::receivers::webhook::Behaviour;
use serde_json::{Value, json};

const OP: Option<Role> = Some(Role::Operator);
const VIEW: Option<Role> = Some(Role::Viewer);
const SCOPE: &str = "adapter:webhook";

fn delivery_alarm(view: &AlarmView) -> Option<AlarmState> {
    view.alarms
        .iter()
        .find(|a| {
            a.key.site == "daemon"
                && a.key.rule == "incident_delivery_failing"
                && a.key.scope == SCOPE
        })
        .map(|a| a.state)
}

fn failing(view: &AlarmView) -> bool {
    delivery_alarm(view).is_some_and(|s| s.is_active())
}

/// `/metrics` lines of `name` with `label` and a value other than 0.
async fn series(rig: &ApiRig, name: &str, label: &str) -> Vec<String> {
    let (status, _, text) = rig.call("GET", "/metrics", None, None).await;
    assert_eq!(status, 200, "{text}");
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .filter(|l| !l.ends_with(" 0"))
        .map(str::to_owned)
        .collect()
}

/// Retries every parked webhook delivery through the API.
async fn retry_parked(rig: &ApiRig) {
    let (status, parked) = rig
        .get("/api/v1/deliveries/parked?adapter=webhook", VIEW)
        .await;
    assert_eq!(status, 200, "{parked}");
    for p in parked.as_array().unwrap() {
        let id = p["delivery"]["id"].as_i64().unwrap();
        let (status, body) = rig
            .post(&format!("/api/v1/deliveries/{id}/retry"), OP, &json!({}))
            .await;
        assert_eq!(status, 200, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_failing_raises_a_daemon_alarm_shown_in_metrics_and_cleared_on_recovery() {
    let rig = ApiRig::start(RigOptions {
        webhook: true,
        daemon_toml: "\n[ticketing.dispatch]\ndelivery_failing_after_secs = 2\n".to_owned(),
        ..RigOptions::default()
    })
    .await;
    assert_eq!(
        rig.config.dispatch.delivery_failing_after,
        Duration::from_secs(2)
    );
    let receiver = rig.receiver.as_ref().unwrap();

    // 1. A 4xx: parked after one attempt, alarmed at once.
    receiver.set_behaviour(Behaviour::Status(422));
    rig.raise_smoke("vesda-dh1-1").await;
    assert!(
        wait_for(|| failing(&rig.alarms.view())).await,
        "no delivery alarm after a 422: {:#?}",
        rig.alarms.view().alarms
    );
    let view = rig.alarms.view();
    let alarm = view.alarms.iter().find(|a| a.key.site == "daemon").unwrap();
    assert!(alarm.info.summary.contains("parked"), "{alarm:#?}");
    assert!(alarm.info.summary.contains("422"), "{alarm:#?}");
    // It opens no incident (the incident would go to the failing receiver).
    assert!(
        view.incidents.iter().all(|i| i.site != "daemon"),
        "{:#?}",
        view.incidents
    );
    // In the metrics: the alarm of site "daemon" and the adapter's failing gauge.
    assert!(
        !series(&rig, "dcguard_alarms", "site=\"daemon\"")
            .await
            .is_empty()
    );
    assert_eq!(
        series(
            &rig,
            "dcguard_incident_delivery_failing",
            "adapter=\"webhook\""
        )
        .await
        .len(),
        1
    );
    // In the API's alarm list, filtered by the pseudo-site.
    let (status, list) = rig.get("/api/v1/alarms?site=daemon", VIEW).await;
    assert_eq!(status, 200, "{list}");
    let listed: Vec<&Value> = list["alarms"].as_array().unwrap().iter().collect();
    assert_eq!(listed.len(), 1, "{list}");
    assert_eq!(listed[0]["rule"], "incident_delivery_failing", "{list}");

    // Fixed receiver, parked transition retried: delivered, the alarm clears.
    receiver.set_behaviour(Behaviour::Normal);
    retry_parked(&rig).await;
    assert!(
        wait_for(|| !failing(&rig.alarms.view())).await,
        "the delivery alarm did not clear: {:#?}",
        rig.alarms.view().alarms
    );
    assert!(!receiver.applied().is_empty());
    assert!(
        series(
            &rig,
            "dcguard_incident_delivery_failing",
            "adapter=\"webhook\""
        )
        .await
        .is_empty()
    );
    // Acknowledge the returned alarm so the next raise is a fresh activation.
    if delivery_alarm(&rig.alarms.view()) == Some(AlarmState::ReturnedUnacked) {
        let (status, body) = rig
            .post(
                "/api/v1/alarms/acknowledge",
                OP,
                &json!({"site": "daemon", "rule": "incident_delivery_failing",
                        "scope": SCOPE, "comment": "receiver fixed"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    // 2. 503s are retried, not parked: alarmed once they have lasted the grace period
    //    (2 s here), cleared when a delivery succeeds.
    receiver.set_behaviour(Behaviour::Status(503));
    rig.raise_smoke("vesda-dh2-1").await;
    assert!(
        wait_for(|| failing(&rig.alarms.view())).await,
        "no delivery alarm after 503s past the grace period: {:#?}",
        rig.alarms.view().alarms
    );
    let view = rig.alarms.view();
    let alarm = view.alarms.iter().find(|a| a.key.site == "daemon").unwrap();
    assert!(alarm.info.summary.contains("503"), "{alarm:#?}");
    assert!(!alarm.info.summary.contains("parked"), "{alarm:#?}");
    let (_, parked) = rig
        .get("/api/v1/deliveries/parked?adapter=webhook", VIEW)
        .await;
    assert_eq!(parked.as_array().map(Vec::len), Some(0), "{parked}");
    receiver.set_behaviour(Behaviour::Normal);
    assert!(
        wait_for(|| !failing(&rig.alarms.view())).await,
        "the delivery alarm did not clear after recovery: {:#?}",
        rig.alarms.view().alarms
    );
    rig.stop().await;
}
