//! Every API route against the running daemon (firmware stubs, Mosquitto, the shipped
//! configuration): the happy path, and bad input answered with the exact error shape
//! `{"error":{"code","message"}}`.

mod common;
mod common_api;

use std::time::Duration;

use common_api::{ApiRig, RigOptions, assert_error, wait_for};
use dcguard::api::auth::Role;
use firmware_stubs::receivers::webhook::Behaviour;
use serde_json::{Value, json};

const OP: Option<Role> = Some(Role::Operator);
const VIEW: Option<Role> = Some(Role::Viewer);
/// Hang guard for a finding that waits for the escort gap and the settle time.
const ESCORT_HANG: Duration = Duration::from_secs(150);

/// `/healthz`, `/readyz`, the OpenAPI document, and axum's own refusals (404, 405, 413,
/// 415, malformed JSON) in the error shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_routes_and_refusals_in_the_error_shape() {
    let rig = ApiRig::start(RigOptions::default()).await;
    let (status, _, text) = rig.call("GET", "/healthz", None, None).await;
    assert_eq!((status, text.as_str()), (200, "ok\n"));
    let (status, ready) = rig.get("/readyz", None).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["status"], "ready");
    for check in ["config", "store", "sources", "alarms"] {
        assert_eq!(ready["checks"][check], "ok", "{ready}");
    }
    assert_eq!(ready["api_tokens"], 5);
    let (status, doc) = rig.get("/api/v1/openapi.json", None).await;
    assert_eq!(status, 200);
    assert_eq!(doc["info"]["title"], "dcguard API");
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());

    let (status, body) = rig.get("/api/v1/nothing-here", VIEW).await;
    assert_error(status, &body, 404, "not_found");
    let (status, headers, text) = rig
        .call(
            "DELETE",
            "/api/v1/sites",
            Some(rig.token(Role::Admin)),
            None,
        )
        .await;
    assert_error(status, &common_api::parse(&text), 405, "method_not_allowed");
    assert!(headers.get("allow").is_some());
    let big = json!({ "site": "dc", "rule": "x", "comment": "a".repeat(70 * 1024) });
    let (status, headers, text) = rig
        .call(
            "POST",
            "/api/v1/alarms/acknowledge",
            Some(rig.token(Role::Operator)),
            Some(&big),
        )
        .await;
    assert_error(status, &common_api::parse(&text), 413, "payload_too_large");
    // The unread body ends the connection, and the answer says so (no client reuses it).
    assert_eq!(
        headers.get("connection").and_then(|v| v.to_str().ok()),
        Some("close")
    );
    let (status, _, text) = rig
        .client
        .post(rig.url("/api/v1/alarms/acknowledge"))
        .bearer_auth(rig.token(Role::Operator))
        .body("site=dc")
        .send()
        .await
        .map(|r| (r.status().as_u16(), (), r))
        .unwrap();
    let text = text.text().await.unwrap();
    assert_error(
        status,
        &common_api::parse(&text),
        415,
        "unsupported_media_type",
    );
    let (status, _, text) = rig
        .client
        .post(rig.url("/api/v1/alarms/acknowledge"))
        .bearer_auth(rig.token(Role::Operator))
        .header("content-type", "application/json")
        .body("{\"site\": ")
        .send()
        .await
        .map(|r| (r.status().as_u16(), (), r))
        .unwrap();
    let body = common_api::parse(&text.text().await.unwrap());
    assert_error(status, &body, 400, "bad_request");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    rig.stop().await;
}

/// Sites, rooms, racks, devices, points, power and cooling: live data once the stubs
/// answer, 404 for unknown sites and devices, 400 for bad filters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facility_routes_show_live_state_and_refuse_bad_input() {
    let rig = ApiRig::start(RigOptions::default()).await;
    // Wait until the DC's UPS reads good through the API.
    let mut ups_good = false;
    for _ in 0..300 {
        let (_, points) = rig
            .get(
                "/api/v1/sites/dc/points?role=ups.load_pct&quality=good",
                VIEW,
            )
            .await;
        if !points.as_array().unwrap().is_empty() {
            ups_good = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ups_good, "no good UPS load reading through the API");

    let (status, sites) = rig.get("/api/v1/sites", VIEW).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = sites
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{sites}");
    assert!(ids.contains(&"dc") && ids.contains(&"smart-dc") && ids.contains(&"drc"));
    assert!(sites[0]["points"]["good"].as_u64().unwrap() > 0, "{sites}");

    let (status, site) = rig.get("/api/v1/sites/dc", VIEW).await;
    assert_eq!(status, 200);
    assert_eq!(site["site"]["time_zone"], "Asia/Jakarta");
    assert!(
        site["data_hall_limits"]["temperature_max_c"]
            .as_f64()
            .is_some()
    );
    let (status, body) = rig.get("/api/v1/sites/atlantis", VIEW).await;
    assert_error(status, &body, 404, "not_found");
    assert!(body["error"]["message"].as_str().unwrap().contains("dc, "));

    let (status, rooms) = rig.get("/api/v1/sites/dc/rooms", VIEW).await;
    assert_eq!(status, 200);
    let hall = rooms
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "data_hall")
        .expect("a data hall");
    assert!(
        hall["limits"]["temperature_max_c"].as_f64().is_some(),
        "{hall}"
    );

    let (status, racks) = rig.get("/api/v1/sites/dc/racks?class=server", VIEW).await;
    assert_eq!(status, 200);
    assert!(!racks.as_array().unwrap().is_empty());
    assert!(
        racks
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["class"] == "server")
    );
    let (status, body) = rig.get("/api/v1/sites/dc/racks?class=gpu", VIEW).await;
    assert_error(status, &body, 400, "bad_request");
    let (status, body) = rig.get("/api/v1/sites/dc/racks?room=nowhere", VIEW).await;
    assert_error(status, &body, 400, "bad_request");

    let (status, devices) = rig.get("/api/v1/sites/dc/devices?kind=ups", VIEW).await;
    assert_eq!(status, 200);
    let ups = devices.as_array().unwrap();
    assert!(!ups.is_empty() && ups.iter().all(|d| d["kind"] == "ups"));
    let ups_id = ups[0]["id"].as_str().unwrap().to_owned();
    let (status, body) = rig.get("/api/v1/sites/dc/devices?kind=toaster", VIEW).await;
    assert_error(status, &body, 400, "bad_request");
    let (status, body) = rig.get("/api/v1/sites/dc/devices?colour=red", VIEW).await;
    assert_error(status, &body, 400, "bad_request");

    let (status, device) = rig
        .get(&format!("/api/v1/sites/dc/devices/{ups_id}"), VIEW)
        .await;
    assert_eq!(status, 200);
    assert_eq!(device["device"]["id"], ups_id.as_str());
    assert!(!device["points"].as_array().unwrap().is_empty());
    let (status, body) = rig.get("/api/v1/sites/dc/devices/ghost-9", VIEW).await;
    assert_error(status, &body, 404, "not_found");

    let (status, points) = rig
        .get("/api/v1/sites/dc/points?role=env.temperature_c", VIEW)
        .await;
    assert_eq!(status, 200);
    let any = &points.as_array().unwrap()[0];
    assert_eq!(any["unit"], "degC");
    assert!(any["limits"]["high"].as_f64().is_some(), "{any}");
    let (status, body) = rig.get("/api/v1/sites/dc/points?quality=nice", VIEW).await;
    assert_error(status, &body, 400, "bad_request");
    let (status, body) = rig
        .get("/api/v1/sites/dc/points?role=ups.coffee", VIEW)
        .await;
    assert_error(status, &body, 400, "bad_request");
    let (status, body) = rig
        .get("/api/v1/sites/dc/points?device=ghost-9", VIEW)
        .await;
    assert_error(status, &body, 400, "bad_request");

    let (status, power) = rig.get("/api/v1/sites/dc/power", VIEW).await;
    assert_eq!(status, 200);
    assert!(!power["ups"].as_array().unwrap().is_empty(), "{power}");
    assert!(!power["gensets"].as_array().unwrap().is_empty(), "{power}");
    assert!(power["fuel"]["tank_l"].as_f64().unwrap() > 0.0, "{power}");
    let (status, body) = rig.get("/api/v1/sites/nowhere/power", VIEW).await;
    assert_error(status, &body, 404, "not_found");

    let (status, cooling) = rig.get("/api/v1/sites/dc/cooling", VIEW).await;
    assert_eq!(status, 200);
    assert!(
        !cooling["units"].as_array().unwrap().is_empty(),
        "{cooling}"
    );
    assert!(
        cooling["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["limits"].is_object())
    );
    let (status, body) = rig.get("/api/v1/sites/nowhere/cooling", VIEW).await;
    assert_error(status, &body, 404, "not_found");
    rig.stop().await;
}

fn alarm_body(key: &(String, String, String), extra: Value) -> Value {
    let mut body = json!({ "site": key.0, "rule": key.1, "scope": key.2 });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// An active VESDA alarm through the list and every operator action, with the refusals
/// the alarm book gives (409 for a state that refuses, 400 for bad input, 404 for an
/// unknown alarm); each write is in the audit chain with actor, object and result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarm_actions_change_state_and_refuse_what_the_book_refuses() {
    let rig = ApiRig::start(RigOptions::default()).await;
    let key = rig.raise_smoke("vesda-dh1-1").await;
    let id = format!("{}/{}/{}", key.0, key.1, key.2);

    let (status, list) = rig.get("/api/v1/alarms?site=dc&state=active", VIEW).await;
    assert_eq!(status, 200);
    let listed = list["alarms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} not listed: {list}"))
        .clone();
    assert_eq!(listed["state"], "active_unacked");
    assert_eq!(listed["class"], "fire");
    for bad in [
        "/api/v1/alarms?state=angry",
        "/api/v1/alarms?priority=P9",
        "/api/v1/alarms?class=weather",
        "/api/v1/alarms?site=atlantis",
        "/api/v1/alarms?shelved=maybe",
    ] {
        let (status, body) = rig.get(bad, VIEW).await;
        assert_error(status, &body, 400, "bad_request");
    }

    let ack = "/api/v1/alarms/acknowledge";
    let (status, body) = rig
        .post(ack, OP, &alarm_body(&key, json!({"comment": " "})))
        .await;
    assert_error(status, &body, 400, "bad_request");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("comment:")
    );
    let (status, body) = rig
        .post(
            ack,
            OP,
            &json!({"site": "dc", "rule": "no_rule", "comment": "x"}),
        )
        .await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = rig.post(ack, OP, &json!({"site": "dc"})).await;
    assert_error(status, &body, 400, "bad_request");
    let (status, body) = rig
        .post(
            ack,
            OP,
            &alarm_body(&key, json!({"comment": "on my way", "extra": 1})),
        )
        .await;
    assert_error(status, &body, 400, "bad_request");
    let (status, body) = rig
        .post(ack, OP, &alarm_body(&key, json!({"comment": "on my way"})))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"], "acknowledged");
    assert_eq!(body["alarm"]["state"], "active_acked");
    let (status, body) = rig
        .post(ack, OP, &alarm_body(&key, json!({"comment": "again"})))
        .await;
    assert_error(status, &body, 409, "conflict");

    let shelve = "/api/v1/alarms/shelve";
    let (status, body) = rig
        .post(
            shelve,
            OP,
            &alarm_body(
                &key,
                json!({"reason": "detector test", "duration_secs": 86400}),
            ),
        )
        .await;
    assert_error(status, &body, 400, "bad_request");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("maximum"),
        "{body}"
    );
    let (status, body) = rig
        .post(
            shelve,
            OP,
            &alarm_body(&key, json!({"reason": "detector test", "duration_secs": 0})),
        )
        .await;
    assert_error(status, &body, 400, "bad_request");
    let (status, body) = rig
        .post(
            shelve,
            OP,
            &alarm_body(
                &key,
                json!({"reason": "detector test", "duration_secs": -5}),
            ),
        )
        .await;
    assert_error(status, &body, 400, "bad_request");
    let (status, body) = rig
        .post(
            shelve,
            OP,
            &alarm_body(
                &key,
                json!({"reason": "detector test", "duration_secs": 600}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["alarm"]["shelved"]["by"], "test-operator");
    let (status, list) = rig.get("/api/v1/alarms?shelved=true", VIEW).await;
    assert_eq!(status, 200);
    assert!(
        list["alarms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == id.as_str())
    );

    let unshelve = "/api/v1/alarms/unshelve";
    let (status, body) = rig.post(unshelve, OP, &alarm_body(&key, json!({}))).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["alarm"]["shelved"].is_null());
    let (status, body) = rig.post(unshelve, OP, &alarm_body(&key, json!({}))).await;
    assert_error(status, &body, 409, "conflict");

    let oos = "/api/v1/alarms/out-of-service";
    let (status, body) = rig
        .post(oos, OP, &alarm_body(&key, json!({"reason": ""})))
        .await;
    assert_error(status, &body, 400, "bad_request");
    let (status, body) = rig
        .post(
            oos,
            OP,
            &alarm_body(&key, json!({"reason": "detector replaced"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["alarm"]["out_of_service"]["reason"],
        "detector replaced"
    );
    let (status, body) = rig
        .post(oos, OP, &alarm_body(&key, json!({"reason": "again"})))
        .await;
    assert_error(status, &body, 409, "conflict");
    let back = "/api/v1/alarms/return-to-service";
    let (status, body) = rig.post(back, OP, &alarm_body(&key, json!({}))).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = rig.post(back, OP, &alarm_body(&key, json!({}))).await;
    assert_error(status, &body, 409, "conflict");

    // The chain has each write with actor, object and result.
    let records = rig.audit_records();
    let acks: Vec<&Value> = records
        .iter()
        .filter(|r| r["payload"]["action"] == "POST /api/v1/alarms/acknowledge")
        .collect();
    assert!(acks.iter().any(|r| r["actor"] == "test-operator"
        && r["payload"]["object"] == id.as_str()
        && r["payload"]["result"] == "ok"
        && r["payload"]["role"] == "operator"));
    assert!(acks.iter().any(|r| r["payload"]["result"] == "conflict"));
    for action in [
        "POST /api/v1/alarms/shelve",
        "POST /api/v1/alarms/unshelve",
        "POST /api/v1/alarms/out-of-service",
        "POST /api/v1/alarms/return-to-service",
    ] {
        assert!(
            records
                .iter()
                .any(|r| r["payload"]["action"] == action && r["payload"]["result"] == "ok"),
            "{action} not audited"
        );
    }
    rig.stop().await;
}

/// Maintenance windows: planned, listed, refused when duplicate or malformed, ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_windows_are_planned_listed_and_ended() {
    let rig = ApiRig::start(RigOptions::default()).await;
    let now = chrono::Utc::now();
    let start = (now + chrono::TimeDelta::hours(1)).to_rfc3339();
    let end = (now + chrono::TimeDelta::hours(3)).to_rfc3339();
    let path = "/api/v1/maintenance-windows";
    let window = json!({
        "id": "WO-2026-118", "site": "dc", "start": start, "end": end,
        "reason": "monthly genset load test",
    });
    let (status, body) = rig.post(path, OP, &window).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "planned");
    assert_eq!(
        body["scope"]["classes"],
        json!(["utility", "ups", "genset"])
    );
    let (status, body) = rig.post(path, OP, &window).await;
    assert_error(status, &body, 409, "conflict");

    let mut bad = window.clone();
    bad["id"] = json!("WO-2");
    bad["end"] = json!(start);
    let (status, body) = rig.post(path, OP, &bad).await;
    assert_error(status, &body, 400, "bad_request");
    bad["end"] = json!((now + chrono::TimeDelta::days(9)).to_rfc3339());
    let (status, body) = rig.post(path, OP, &bad).await;
    assert_error(status, &body, 400, "bad_request");
    bad["end"] = json!(end);
    bad["site"] = json!("atlantis");
    let (status, body) = rig.post(path, OP, &bad).await;
    assert_error(status, &body, 400, "bad_request");
    bad["site"] = json!("dc");
    bad["scope"] = json!({"classes": ["weather"]});
    let (status, body) = rig.post(path, OP, &bad).await;
    assert_error(status, &body, 400, "bad_request");
    bad["scope"] = json!({"rooms": ["nowhere"]});
    let (status, body) = rig.post(path, OP, &bad).await;
    assert_error(status, &body, 400, "bad_request");
    bad["scope"] = json!({"devices": ["ghost"]});
    let (status, body) = rig.post(path, OP, &bad).await;
    assert_error(status, &body, 400, "bad_request");
    bad["id"] = json!("bad id/with slash");
    bad["scope"] = Value::Null;
    let (status, body) = rig.post(path, OP, &bad).await;
    assert_error(status, &body, 400, "bad_request");
    bad["id"] = json!("WO-3");
    bad["start"] = json!("yesterday");
    let (status, body) = rig.post(path, OP, &bad).await;
    assert_error(status, &body, 400, "bad_request");

    let (status, list) = rig.get("/api/v1/maintenance-windows?site=dc", VIEW).await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["id"], "WO-2026-118");
    let (status, body) = rig
        .get("/api/v1/maintenance-windows?site=atlantis", VIEW)
        .await;
    assert_error(status, &body, 400, "bad_request");

    let (status, body) = rig
        .post(
            "/api/v1/maintenance-windows/WO-2026-118/end",
            OP,
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = rig
        .post(
            "/api/v1/maintenance-windows/WO-2026-118/end",
            OP,
            &json!({}),
        )
        .await;
    assert_error(status, &body, 404, "not_found");
    let (_, list) = rig.get("/api/v1/maintenance-windows", VIEW).await;
    assert!(list.as_array().unwrap().is_empty(), "{list}");
    assert!(rig.audit_records().iter().any(|r| {
        r["payload"]["action"] == "POST /api/v1/maintenance-windows"
            && r["payload"]["object"] == "maintenance window WO-2026-118"
            && r["payload"]["status"] == 201
    }));
    rig.stop().await;
}

/// An incident from a VESDA alarm, delivered to a webhook that first rejects it (parked),
/// shown with its transitions and delivery state, listed as parked, retried after the
/// receiver is fixed, and delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incidents_show_transitions_and_parked_deliveries_can_be_retried() {
    let rig = ApiRig::start(RigOptions {
        webhook: true,
        ..RigOptions::default()
    })
    .await;
    let receiver = rig.receiver.as_ref().unwrap();
    receiver.set_behaviour(Behaviour::Status(422));
    rig.raise_smoke("vesda-dh2-1").await;

    // The incident and its parked delivery.
    let mut parked = Value::Null;
    for _ in 0..300 {
        let (status, body) = rig
            .get("/api/v1/deliveries/parked?adapter=webhook", VIEW)
            .await;
        assert_eq!(status, 200);
        if !body.as_array().unwrap().is_empty() {
            parked = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = &parked[0];
    assert_eq!(first["delivery"]["state"], "parked", "{parked}");
    assert!(first["delivery"]["last_error"].is_string(), "{parked}");
    let incident = first["incident_id"].as_str().unwrap().to_owned();
    let delivery = first["delivery"]["id"].as_i64().unwrap();
    let (status, body) = rig
        .get("/api/v1/deliveries/parked?adapter=telex", VIEW)
        .await;
    assert_error(status, &body, 400, "bad_request");

    let (status, list) = rig
        .get("/api/v1/incidents?site=dc&state=unresolved", VIEW)
        .await;
    assert_eq!(status, 200);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|i| i["id"] == incident.as_str()),
        "{list}"
    );
    for bad in [
        "/api/v1/incidents?limit=0",
        "/api/v1/incidents?limit=abc",
        "/api/v1/incidents?state=sleeping",
        "/api/v1/incidents?priority=P0",
        "/api/v1/incidents?site=atlantis",
    ] {
        let (status, body) = rig.get(bad, VIEW).await;
        assert_error(status, &body, 400, "bad_request");
    }

    let (status, detail) = rig
        .get(&format!("/api/v1/incidents/{incident}"), VIEW)
        .await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["incident"]["site"], "dc");
    let opened = &detail["transitions"][0];
    assert_eq!(opened["kind"], "opened");
    assert_eq!(opened["deliveries"][0]["adapter"], "webhook");
    assert_eq!(opened["deliveries"][0]["state"], "parked");
    assert!(!detail["members"].as_array().unwrap().is_empty());
    let (status, body) = rig
        .get("/api/v1/incidents/inc-0000000000000000", VIEW)
        .await;
    assert_error(status, &body, 404, "not_found");

    // Fix the receiver, retry: delivered.
    receiver.set_behaviour(Behaviour::Normal);
    let retry = format!("/api/v1/deliveries/{delivery}/retry");
    let (status, body) = rig.post(&retry, OP, &json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"], "scheduled");
    assert!(
        wait_for(|| !receiver.applied().is_empty()).await,
        "never delivered"
    );
    let delivered = || async {
        let (_, d) = rig
            .get(&format!("/api/v1/incidents/{incident}"), VIEW)
            .await;
        d["transitions"][0]["deliveries"][0]["state"] == "delivered"
    };
    let mut done = false;
    for _ in 0..300 {
        if delivered().await {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(done, "the delivery never showed delivered");
    let (status, body) = rig.post(&retry, OP, &json!({})).await;
    assert_error(status, &body, 409, "conflict");
    let (status, body) = rig
        .post("/api/v1/deliveries/999999/retry", OP, &json!({}))
        .await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = rig
        .post("/api/v1/deliveries/abc/retry", OP, &json!({}))
        .await;
    assert_error(status, &body, 400, "bad_request");
    assert!(rig.audit_records().iter().any(|r| {
        r["payload"]["action"] == "POST /api/v1/deliveries/{id}/retry"
            && r["payload"]["object"] == format!("delivery {delivery}").as_str()
            && r["payload"]["result"] == "ok"
    }));
    rig.stop().await;
}

/// Posts ATTLOG lines (PIN, minutes ago) from reader `serial` of the DC (Asia/Jakarta).
async fn push_attlog(rig: &ApiRig, serial: &str, lines: &[(&str, i64)]) {
    let jakarta = chrono::FixedOffset::east_opt(7 * 3600).unwrap();
    let body: String = lines
        .iter()
        .map(|(pin, ago)| {
            let t = (chrono::Utc::now() - chrono::TimeDelta::minutes(*ago)).with_timezone(&jakarta);
            format!("{pin}\t{}\t0\t1\n", t.format("%Y-%m-%d %H:%M:%S"))
        })
        .collect();
    let resp = rig
        .client
        .post(rig.url(&format!("/iclock/cdata?SN={serial}&table=ATTLOG")))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.text().await.unwrap().starts_with("OK"));
}

/// Access events (JSON with filters, CSV export audited with its row count), findings with
/// filters, and the audit chain's status; bad filters in the error shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_routes_show_events_findings_and_the_audit_chain() {
    let rig = ApiRig::start(RigOptions::default()).await;
    const SEC: Option<Role> = Some(Role::Security);
    push_attlog(&rig, "DC-MT-OUT-01", &[("77001", 10), ("77002", 9)]).await;

    let (status, events) = rig.get("/api/v1/access/events?site=dc", SEC).await;
    assert_eq!(status, 200, "{events}");
    let events = events.as_array().unwrap().clone();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["credential"], "77001");
    assert_eq!(events[0]["reader"], "DC-MT-OUT-01");
    assert_eq!(events[0]["kind"], "granted");
    assert!(events[0]["device_time"].as_str().unwrap().ends_with('Z'));
    let (_, one) = rig
        .get("/api/v1/access/events?credential=77002&limit=1", SEC)
        .await;
    assert_eq!(one.as_array().unwrap().len(), 1, "{one}");
    assert_eq!(one[0]["credential"], "77002");
    let (_, none) = rig
        .get("/api/v1/access/events?until=2000-01-01T00:00:00Z", SEC)
        .await;
    assert_eq!(none, json!([]));
    for bad in [
        "site=atlantis",
        "limit=0",
        "limit=10001",
        "from=yesterday",
        "from=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
        "colour=red",
    ] {
        let (status, body) = rig.get(&format!("/api/v1/access/events?{bad}"), SEC).await;
        assert_error(status, &body, 400, "bad_request");
    }

    let (status, headers, csv) = rig
        .call(
            "GET",
            "/api/v1/access/events.csv?site=dc",
            Some(rig.token(Role::Security)),
            None,
        )
        .await;
    assert_eq!(status, 200, "{csv}");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 3, "{csv}");
    assert!(
        rows[0].starts_with("id,source,reader,credential,kind"),
        "{csv}"
    );
    assert!(rows[1].contains("77001"), "{csv}");
    let (status, body) = rig.get("/api/v1/access/events.csv?limit=-1", SEC).await;
    assert_error(status, &body, 400, "bad_request");

    // Findings: two unknown PINs at the mantrap make findings once reconciled.
    let mut findings = Value::Null;
    let found = {
        let guard = tokio::time::Instant::now() + common_api::HANG;
        loop {
            let (status, body) = rig.get("/api/v1/findings?site=dc", SEC).await;
            assert_eq!(status, 200, "{body}");
            if !body.as_array().unwrap().is_empty() {
                findings = body;
                break true;
            }
            if tokio::time::Instant::now() > guard {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    assert!(found, "no finding for unknown credentials");
    let first = &findings[0];
    assert_eq!(first["site"], "dc");
    assert!(!first["evidence"].as_array().unwrap().is_empty(), "{first}");
    let rule = first["rule"].as_str().unwrap().to_owned();
    let (_, by_rule) = rig.get(&format!("/api/v1/findings?rule={rule}"), SEC).await;
    assert!(!by_rule.as_array().unwrap().is_empty());
    assert!(
        by_rule
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["rule"] == rule.as_str())
    );
    let (_, by_ticket) = rig.get("/api/v1/findings?ticket=NO-SUCH-TICKET", SEC).await;
    assert_eq!(by_ticket, json!([]));
    let (_, old) = rig
        .get("/api/v1/findings?until=2000-01-01T00:00:00Z", SEC)
        .await;
    assert_eq!(old, json!([]));
    for bad in [
        "rule=jaywalking",
        "site=atlantis",
        "limit=0",
        "person=a&colour=red",
    ] {
        let (status, body) = rig.get(&format!("/api/v1/findings?{bad}"), SEC).await;
        assert_error(status, &body, 400, "bad_request");
        let (status, body) = rig.get(&format!("/api/v1/findings.csv?{bad}"), SEC).await;
        assert_error(status, &body, 400, "bad_request");
    }
    // The same findings as CSV, newest first, with the finding ids of the JSON (read
    // between two equal JSON answers: the reconciler may still be adding one).
    let ids_of = |v: &Value| -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|f| f["id"].as_i64().unwrap())
            .collect()
    };
    let (status, headers, csv, json_ids) = loop {
        let (_, before) = rig.get("/api/v1/findings?site=dc", SEC).await;
        let (status, headers, csv) = rig
            .call(
                "GET",
                "/api/v1/findings.csv?site=dc",
                Some(rig.token(Role::Security)),
                None,
            )
            .await;
        let (_, after) = rig.get("/api/v1/findings?site=dc", SEC).await;
        if before == after {
            break (status, headers, csv, ids_of(&after));
        }
    };
    assert_eq!(status, 200, "{csv}");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    assert_eq!(
        reader.headers().unwrap().iter().take(3).collect::<Vec<_>>(),
        vec!["id", "site", "rule"]
    );
    let ids: Vec<i64> = reader
        .records()
        .map(|r| r.unwrap()[0].parse().unwrap())
        .collect();
    assert_eq!(ids, json_ids, "{csv}");
    let (status, _, _) = rig
        .call(
            "GET",
            "/api/v1/findings.csv",
            Some(rig.token(Role::Operator)),
            None,
        )
        .await;
    assert_eq!(status, 403, "operators read no findings");

    // The audit chain: intact, with the events and the export in it.
    let (status, chain) = rig.get("/api/v1/audit/status", SEC).await;
    assert_eq!(status, 200, "{chain}");
    assert_eq!(chain["intact"], true, "{chain}");
    assert!(chain["records"].as_u64().unwrap() >= 3, "{chain}");
    assert_eq!(chain["head_hash"].as_str().unwrap().len(), 64, "{chain}");
    assert_eq!(chain["segments"], 1, "{chain}");
    // Sealed monthly segments are verified too: a forged one breaks the chain, named by
    // its file name, never by its path.
    let forged = rig.data.join("access-audit.00000000000000000001.log");
    std::fs::write(&forged, "{\"not\": \"a record\"}\n").unwrap();
    let (status, broken) = rig.get("/api/v1/audit/status", SEC).await;
    std::fs::remove_file(&forged).unwrap();
    assert_eq!(status, 200, "{broken}");
    assert_eq!(broken["intact"], false, "{broken}");
    let problem = broken["problem"].as_str().unwrap();
    assert!(
        problem.contains("segment access-audit.00000000000000000001.log"),
        "{problem}"
    );
    assert!(!problem.contains(&*rig.data.to_string_lossy()), "{problem}");
    let records = rig.audit_records();
    let export = records
        .iter()
        .find(|r| {
            r["payload"]["action"] == "GET /api/v1/access/events.csv"
                && r["payload"]["result"] == "ok"
        })
        .expect("the export is audited");
    assert_eq!(export["actor"], "test-security");
    assert!(
        export["payload"]["object"]
            .as_str()
            .unwrap()
            .contains("rows=2"),
        "{export}"
    );
    let export = records
        .iter()
        .rev()
        .find(|r| {
            r["payload"]["action"] == "GET /api/v1/findings.csv" && r["payload"]["result"] == "ok"
        })
        .expect("the findings export is audited");
    assert!(
        export["payload"]["object"]
            .as_str()
            .unwrap()
            .contains(&format!(
                "site=dc rule=* room=* person=* ticket=* reviewed=* from=* until=* rows={}",
                json_ids.len()
            )),
        "{export}"
    );
    // Ingestion shows in /metrics by outcome (counts only).
    let (status, _, metrics) = rig.call("GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    let count = |outcome: &str| -> u64 {
        let prefix = format!("dcguard_access_ingest_total{{outcome=\"{outcome}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in /metrics"))
    };
    assert!(count("event_new") >= 2, "{metrics}");
    assert!(count("batch_accepted") >= 1, "{metrics}");
    assert_eq!(count("persist_failure"), 0);
    rig.stop().await;
}

/// A visit ticket for the DC whose window holds now: PIC 70001 escorts vendor 70002.
fn visit(id: &str, plan: &str) -> Value {
    // One window for the whole test, so a re-sent ticket is the same ticket.
    static NOW: std::sync::OnceLock<chrono::DateTime<chrono::Utc>> = std::sync::OnceLock::new();
    let now = *NOW.get_or_init(chrono::Utc::now);
    json!({
        "id": id, "site": "dc", "rooms": ["dh1"],
        "window_start": (now - chrono::TimeDelta::hours(1)).to_rfc3339(),
        "window_end": (now + chrono::TimeDelta::hours(2)).to_rfc3339(),
        "pic": {"name": "Budi PIC", "identity_number": "PIC-1", "organisation": "Pusintek",
                "credentials": ["70001"]},
        "visitors": [{"name": "Vendor One", "identity_number": "V-1",
                      "organisation": "PT Vendor", "kind": "third_party",
                      "credentials": ["70002"], "pic": "PIC-1"}],
        "activity_plan": plan, "approver": "Kepala Bagian",
    })
}

/// Polls GET `path` as `role` until `found` holds for the JSON (or the hang guard `hang`).
async fn poll(
    rig: &ApiRig,
    path: &str,
    role: Role,
    hang: Duration,
    found: impl Fn(&Value) -> bool,
) -> Value {
    let guard = tokio::time::Instant::now() + hang;
    loop {
        let (status, body) = rig.get(path, Some(role)).await;
        assert_eq!(status, 200, "{path}: {body}");
        if found(&body) || tokio::time::Instant::now() > guard {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The access service routes: the service desk creates, updates and cancels a visit
/// ticket; another reader system sends a batch in which the vendor enters alone; the
/// vendor shows in occupancy under the ticket, the finding appears and security reviews
/// it; the visit's report lists the entry. Bad input answers in the error shape, and
/// every write is in the audit chain under its token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visits_batches_reviews_and_occupancy_go_through_the_access_service() {
    let rig = ApiRig::start(RigOptions::default()).await;
    const INT: Option<Role> = Some(Role::Integrator);
    const SEC: Option<Role> = Some(Role::Security);

    // Create: 201, then the same again 200; other content under the id 409.
    let (status, created) = rig.post("/api/v1/visits", INT, &visit("T-1", "PDU")).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["state"], "approved");
    assert_eq!(created["history"].as_array().unwrap().len(), 1, "{created}");
    assert_eq!(created["visitors"][0]["kind"], "third_party");
    let (status, again) = rig.post("/api/v1/visits", INT, &visit("T-1", "PDU")).await;
    assert_eq!(status, 200, "{again}");
    let (status, body) = rig.post("/api/v1/visits", INT, &visit("T-1", "UPS")).await;
    assert_error(status, &body, 409, "conflict");
    // Invalid tickets list what is wrong.
    let mut bad = visit("T-2", "PDU");
    bad["visitors"][0]["pic"] = Value::Null;
    bad["window_end"] = bad["window_start"].clone();
    let (status, body) = rig.post("/api/v1/visits", INT, &bad).await;
    assert_error(status, &body, 400, "bad_request");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("T-2"),
        "{body}"
    );
    let mut unknown_site = visit("T-3", "PDU");
    unknown_site["site"] = json!("atlantis");
    let (status, body) = rig.post("/api/v1/visits", INT, &unknown_site).await;
    assert_error(status, &body, 400, "bad_request");
    let mut extra = visit("T-4", "PDU");
    extra["colour"] = json!("red");
    let (status, body) = rig.post("/api/v1/visits", INT, &extra).await;
    assert_error(status, &body, 400, "bad_request");

    // Update: a new revision; the path and the body must name the same ticket.
    let (status, _, text) = rig
        .call(
            "PUT",
            "/api/v1/visits/T-1",
            Some(rig.token(Role::Integrator)),
            Some(&visit("T-1", "PDU and cabling")),
        )
        .await;
    assert_eq!(status, 201, "{text}");
    let updated = common_api::parse(&text);
    assert_eq!(updated["activity_plan"], "PDU and cabling");
    assert_eq!(updated["history"][1]["change"], "updated", "{updated}");
    for (path, want, code) in [
        ("/api/v1/visits/T-9", 400, "bad_request"),
        ("/api/v1/visits/T-1", 400, "bad_request"),
    ] {
        let body = if path.ends_with("T-9") {
            visit("T-1", "x")
        } else {
            visit("T-9", "x")
        };
        let (status, _, text) = rig
            .call("PUT", path, Some(rig.token(Role::Integrator)), Some(&body))
            .await;
        assert_error(status, &common_api::parse(&text), want, code);
    }
    let (status, _, text) = rig
        .call(
            "PUT",
            "/api/v1/visits/T-9",
            Some(rig.token(Role::Integrator)),
            Some(&visit("T-9", "x")),
        )
        .await;
    assert_error(status, &common_api::parse(&text), 404, "not_found");

    // Reading visits is security's, not the integrator's.
    let (status, body) = rig.get("/api/v1/visits", INT).await;
    assert_error(status, &body, 403, "forbidden");
    let (status, list) = rig.get("/api/v1/visits?site=dc&state=approved", SEC).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["id"], "T-1");
    let (_, by_person) = rig.get("/api/v1/visits?person=70002", SEC).await;
    assert_eq!(by_person.as_array().unwrap().len(), 1, "{by_person}");
    let (_, nobody) = rig.get("/api/v1/visits?person=99999", SEC).await;
    assert_eq!(nobody, json!([]));
    for bad in ["state=open", "site=atlantis", "from=soon"] {
        let (status, body) = rig.get(&format!("/api/v1/visits?{bad}"), SEC).await;
        assert_error(status, &body, 400, "bad_request");
    }

    // Another reader system: the vendor badges into the mantrap alone (after the ticket
    // was recorded: a passage is judged by the tickets known at its time).
    let at = chrono::Utc::now().to_rfc3339();
    let batch = json!({"events": [{"reader": "DC-MT-OUT-01", "credential": "70002",
        "kind": "granted", "direction": "entry", "time": at}]});
    let (status, receipt) = rig.post("/api/v1/access/events", INT, &batch).await;
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt, json!({"received": 1, "new": 1}));
    let (_, receipt) = rig.post("/api/v1/access/events", INT, &batch).await;
    assert_eq!(receipt, json!({"received": 1, "new": 0}), "a re-sent batch");
    let bad_batch = json!({"events": [{"reader": "DC-MT-OUT-01", "credential": "70002",
        "kind": "granted", "time": "yesterday"}]});
    let (status, body) = rig.post("/api/v1/access/events", INT, &bad_batch).await;
    assert_error(status, &body, 400, "bad_request");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("events[0]: time: found \"yesterday\""),
        "{body}"
    );
    let (status, body) = rig.post("/api/v1/access/events", SEC, &batch).await;
    assert_error(status, &body, 403, "forbidden");

    // Occupancy: the vendor is inside under the ticket; operators may see it, viewers not.
    let inside = poll(
        &rig,
        "/api/v1/occupancy?site=dc",
        Role::Operator,
        common_api::HANG,
        |b| {
            b.as_array()
                .unwrap()
                .iter()
                .any(|o| o["credential"] == "70002")
        },
    )
    .await;
    let vendor = inside
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["credential"] == "70002")
        .unwrap_or_else(|| panic!("vendor not inside: {inside}"));
    assert_eq!(vendor["ticket"], "T-1", "{vendor}");
    assert_eq!(vendor["role"], "third_party", "{vendor}");
    assert_eq!(vendor["site"], "dc");
    let (status, body) = rig.get("/api/v1/occupancy", VIEW).await;
    assert_error(status, &body, 403, "forbidden");
    let (status, body) = rig.get("/api/v1/occupancy?site=atlantis", SEC).await;
    assert_error(status, &body, 400, "bad_request");

    // The finding of the unescorted entry (raised once the PIC has not followed within
    // the site's escort gap, 30 s, and the 10 s settle time), reviewed by security.
    let findings = poll(
        &rig,
        "/api/v1/findings?ticket=T-1",
        Role::Security,
        ESCORT_HANG,
        |b| !b.as_array().unwrap().is_empty(),
    )
    .await;
    let finding = findings
        .as_array()
        .unwrap()
        .first()
        .unwrap_or_else(|| panic!("no finding for T-1: {findings}"))
        .clone();
    assert_eq!(finding["reviews"], json!([]));
    let id = finding["id"].as_i64().unwrap();

    // The access log by visit ticket, person and room (through the access service), and
    // the findings by credential.
    let (status, by_ticket) = rig.get("/api/v1/access/events?ticket=T-1", SEC).await;
    assert_eq!(status, 200, "{by_ticket}");
    let by_ticket = by_ticket.as_array().unwrap().clone();
    assert!(
        by_ticket.iter().any(|e| e["credential"] == "70002"),
        "{by_ticket:?}"
    );
    let (_, by_person) = rig.get("/api/v1/access/events?person=70002", SEC).await;
    let by_person = by_person.as_array().unwrap().clone();
    assert!(!by_person.is_empty());
    assert!(
        by_person.iter().all(|e| e["credential"] == "70002"),
        "{by_person:?}"
    );
    let (_, by_room) = rig
        .get("/api/v1/access/events?site=dc&room=mantrap", SEC)
        .await;
    let by_room = by_room.as_array().unwrap().clone();
    assert!(
        by_room.iter().any(|e| e["reader"] == "DC-MT-OUT-01"),
        "{by_room:?}"
    );
    assert!(
        by_room
            .iter()
            .all(|e| e["reader"].as_str().unwrap().starts_with("DC-MT-")),
        "{by_room:?}"
    );
    let (status, csv) = rig.get("/api/v1/access/events.csv?ticket=T-1", SEC).await;
    assert_eq!(status, 200, "{csv}");
    assert!(csv.as_str().unwrap().contains("70002"), "{csv}");
    let (_, by_cred) = rig.get("/api/v1/findings?person=70002", SEC).await;
    assert!(
        by_cred.as_array().unwrap().iter().any(|f| f["id"] == id),
        "{by_cred}"
    );

    // The findings opened a security incident (one per site and grouping window), raised
    // to the priority the DC gives unescorted third parties (`[access.incidents]`: P1).
    let is_p1 = |i: &Value| i["class"] == "access" && i["priority"] == "P1";
    let incidents = poll(
        &rig,
        "/api/v1/incidents?site=dc",
        Role::Viewer,
        ESCORT_HANG,
        |b| b.as_array().unwrap().iter().any(is_p1),
    )
    .await;
    let incident = incidents
        .as_array()
        .unwrap()
        .iter()
        .find(|i| is_p1(i))
        .unwrap()
        .clone();
    assert_eq!(
        incident["condition"], "access_unescorted_third_party",
        "{incident}"
    );
    assert!(
        incident["summary"]
            .as_str()
            .unwrap()
            .contains("(unescorted_third_party)"),
        "{incident}"
    );
    let incident_path = format!("/api/v1/incidents/{}", incident["id"].as_str().unwrap());
    let note = json!({"note": "PIC was at the gate; vendor turned back"});
    let path = format!("/api/v1/findings/{id}/review");
    let (status, reviewed) = rig.post(&path, SEC, &note).await;
    assert_eq!(status, 201, "{reviewed}");
    assert_eq!(reviewed["created"], true);
    assert_eq!(reviewed["review"]["reviewer"], "test-security");
    let (status, again) = rig.post(&path, SEC, &note).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["created"], false);
    let (status, body) = rig.post(&path, SEC, &json!({"note": "  "})).await;
    assert_error(status, &body, 400, "bad_request");
    let (status, body) = rig
        .post("/api/v1/findings/999999999/review", SEC, &note)
        .await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = rig.post("/api/v1/findings/x/review", SEC, &note).await;
    assert_error(status, &body, 400, "bad_request");
    let (status, body) = rig.post(&path, OP, &note).await;
    assert_error(status, &body, 403, "forbidden");
    // Reviewing every finding of the visit resolves their incident, naming the reviewer.
    let (_, all) = rig.get("/api/v1/findings?ticket=T-1", SEC).await;
    for f in all.as_array().unwrap() {
        let path = format!("/api/v1/findings/{}/review", f["id"]);
        let (status, body) = rig.post(&path, SEC, &note).await;
        assert!(status == 200 || status == 201, "{body}");
    }
    let resolved = poll(&rig, &incident_path, Role::Viewer, common_api::HANG, |b| {
        b["incident"]["state"] == "resolved"
    })
    .await;
    assert!(resolved.to_string().contains("test-security"), "{resolved}");
    let (_, done) = rig.get("/api/v1/findings?reviewed=true", SEC).await;
    assert!(
        done.as_array().unwrap().iter().any(|f| f["id"] == id),
        "{done}"
    );
    let (_, open) = rig.get("/api/v1/findings?reviewed=false", SEC).await;
    assert!(
        !open.as_array().unwrap().iter().any(|f| f["id"] == id),
        "{open}"
    );

    // The visit with its report: the vendor's entry and the finding.
    let (status, detail) = rig.get("/api/v1/visits/T-1", SEC).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["visit"]["id"], "T-1");
    assert_eq!(detail["report"]["ticket"], "T-1", "{detail}");
    assert!(
        !detail["report"]["findings"].as_array().unwrap().is_empty(),
        "{detail}"
    );
    let (status, body) = rig.get("/api/v1/visits/NOPE", SEC).await;
    assert_error(status, &body, 404, "not_found");

    // Cancel: 201, then 200 unchanged.
    let (status, cancelled) = rig
        .post("/api/v1/visits/T-1/cancel", INT, &json!(null))
        .await;
    assert_eq!(status, 201, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled");
    let (status, _) = rig
        .post("/api/v1/visits/T-1/cancel", INT, &json!(null))
        .await;
    assert_eq!(status, 200);
    let (status, body) = rig
        .post("/api/v1/visits/NOPE/cancel", INT, &json!(null))
        .await;
    assert_error(status, &body, 404, "not_found");

    // Every write is in the audit chain with its actor and object.
    let records = rig.audit_records();
    for (action, actor, object) in [
        ("POST /api/v1/visits", "test-integrator", "visit T-1"),
        (
            "PUT /api/v1/visits/{ticket}",
            "test-integrator",
            "visit T-1",
        ),
        (
            "POST /api/v1/visits/{ticket}/cancel",
            "test-integrator",
            "visit T-1",
        ),
        (
            "POST /api/v1/access/events",
            "test-integrator",
            "access event batch received=1 new=1",
        ),
        (
            "POST /api/v1/findings/{id}/review",
            "test-security",
            &format!("finding {id}"),
        ),
    ] {
        assert!(
            records.iter().any(|r| r["payload"]["action"] == action
                && r["actor"] == actor
                && r["payload"]["object"] == object),
            "{action} by {actor} on {object} not audited"
        );
    }
    rig.stop().await;
}

/// `[alarms] shelve_max_h` bounds a shelve: the route refuses a longer one in the error
/// shape before it reaches the alarm task, and the alarm book (asked directly) refuses it
/// too; the maximum itself is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shelve_maximum_is_configured_and_enforced() {
    let rig = ApiRig::start(RigOptions {
        daemon_toml: "\n[alarms]\nshelve_max_h = 1\n".to_owned(),
        ..RigOptions::default()
    })
    .await;
    assert_eq!(
        rig.config.alarms.shelve_max,
        Duration::from_secs(3600),
        "the configured maximum"
    );
    let key = rig.raise_smoke("vesda-dh1-1").await;
    let shelve = "/api/v1/alarms/shelve";
    let (status, body) = rig
        .post(
            shelve,
            OP,
            &alarm_body(
                &key,
                json!({"reason": "detector test", "duration_secs": 3601}),
            ),
        )
        .await;
    assert_error(status, &body, 400, "bad_request");
    assert_eq!(
        body,
        json!({"error": {
            "code": "bad_request",
            "message": "duration_secs: found 3601; expected at most 3600 (the maximum shelve, \
                        [alarms] shelve_max_h = 1)"
        }})
    );
    // Not shelved by the refused request.
    let (_, list) = rig.get("/api/v1/alarms?shelved=true", VIEW).await;
    assert_eq!(list["alarms"].as_array().map(Vec::len), Some(0), "{list}");

    // The alarm book itself holds the same maximum.
    let refused = rig
        .alarms
        .shelve(
            dcguard::alarms::AlarmKey::new(&key.1, &key.0, &key.2),
            "test-operator",
            "detector test",
            Duration::from_secs(7200),
        )
        .await;
    assert!(
        matches!(
            refused,
            Err(dcguard::alarms::task::CommandError::Alarm(
                dcguard::alarms::AlarmError::ShelveTooLong { max, .. }
            )) if max == Duration::from_secs(3600)
        ),
        "{refused:?}"
    );

    let (status, body) = rig
        .post(
            shelve,
            OP,
            &alarm_body(
                &key,
                json!({"reason": "detector test", "duration_secs": 3600}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["alarm"]["shelved"]["by"], "test-operator");
    rig.stop().await;
}
