//! `[[rule_overrides]]` inside `dcguard run`: the firmware stubs drive the shipped
//! configuration (sensors through a real Mosquitto), a site file gains overrides, and a
//! hall temperature that the shipped defaults call an early warning (P3) becomes a breach
//! of the overridden limit with the overridden priority, while the early warning disabled
//! in that hall stays quiet and another hall keeps the shipped limit and early warning.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{Broker, config_copy, free_port, shipped_dir};
use dcguard::alarms::task::{AlarmTaskOptions, AlarmView};
use dcguard::app::{App, RunOptions};
use dcguard::config;
use dcguard::sources::modbus::backoff::BackoffPolicy;
use dcguard::sources::modbus::poller::PollerOptions;
use dcguard::sources::mqtt::SourceOptions;
use firmware_stubs::sim::{Sim, SimOptions};
use firmware_stubs::world::SimValue;
use tokio_util::sync::CancellationToken;

/// Hang guard for every wait (not a timing assertion).
const HANG: Duration = Duration::from_secs(90);

async fn wait_for(mut done: impl FnMut() -> bool) -> bool {
    let guard = tokio::time::Instant::now() + HANG;
    while tokio::time::Instant::now() < guard {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done()
}

const OVERRIDES: &str = r#"

[[rule_overrides]]
rule = "hall_temperature_high"
room = "dh1"
limit = 26.0
priority = "P2"
on_delay_secs = 1

[[rule_overrides]]
rule = "hall_temperature_near_high"
room = "dh1"
enabled = false
"#;

fn active(view: &AlarmView, rule: &str, scope: &str) -> bool {
    view.alarms.iter().any(|a| {
        a.key.site == "dc" && a.key.rule == rule && a.key.scope == scope && a.state.is_active()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_override_turns_a_stub_value_into_a_breach_of_its_own_limit_and_priority() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), free_port()).await;
    let sim = Sim::start(
        SimOptions::new(shipped_dir())
            .ephemeral()
            .with_mqtt_broker(broker.addr),
    )
    .await
    .unwrap();
    let config_dir = dir.path().join("config");
    config_copy(&config_dir, sim.endpoints(), Some(broker.addr.port()));
    let site = config_dir.join("sites/dc.toml");
    let text = std::fs::read_to_string(&site).unwrap();
    std::fs::write(&site, format!("{text}{OVERRIDES}")).unwrap();
    let main = config_dir.join("dcguard.toml");
    let text = std::fs::read_to_string(&main).unwrap();
    std::fs::write(
        &main,
        text.replace(
            "listen = \"127.0.0.1:8080\"",
            &format!("listen = \"127.0.0.1:{}\"", free_port()),
        ),
    )
    .unwrap();
    let config = Arc::new(config::load(&config_dir).unwrap_or_else(|e| panic!("{e}")));
    assert_eq!(
        config
            .sites
            .iter()
            .find(|s| s.id == "dc")
            .unwrap()
            .rule_overrides
            .len(),
        2
    );

    // 26.4 degC: under the shipped 27 degC maximum, inside the shipped 1 degC early-warning
    // band; above the overridden 26 degC limit of dh1. The same value in dh2 (no override).
    {
        let world = sim.world("dc").unwrap();
        let mut w = world.lock().unwrap();
        w.set_point("th-a", "temperature", SimValue::Number(26.4));
    }
    let dh2_sensor = config.sites[0]
        .devices
        .iter()
        .find(|d| d.room == "dh2" && d.id.starts_with("th-"))
        .map(|d| d.id.clone())
        .expect("a sensor in dh2");
    {
        let world = sim.world("dc").unwrap();
        let mut w = world.lock().unwrap();
        w.set_point(&dh2_sensor, "temperature", SimValue::Number(26.4));
    }

    let mut poller = PollerOptions::default();
    poller.client.request_timeout = Duration::from_millis(500);
    poller.client.connect_timeout = Duration::from_millis(500);
    poller.reconnect = BackoffPolicy {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(500),
        jitter: 0.2,
    };
    let options = RunOptions {
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        poller,
        mqtt: SourceOptions {
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_millis(500),
            shutdown_drain: Duration::from_secs(1),
            ..SourceOptions::default()
        },
        data_dir: Some(dir.path().join("data")),
        // Every on-delay at most 1 s (the shipped early-warning 120 s would make the
        // test minutes long); applied after the overrides.
        alarms: AlarmTaskOptions {
            tick: Duration::from_millis(250),
            params: Some(Arc::new(|_, mut p| {
                p.on_delay = p.on_delay.min(Duration::from_secs(1));
                p
            })),
            ..AlarmTaskOptions::default()
        },
        ..RunOptions::default()
    };
    let app = App::start(config.clone(), options).await.unwrap();
    let alarms = app.alarms();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(app.run_until(shutdown.clone()));

    let sensor = "point:th-a/temperature";
    assert!(
        wait_for(|| active(&alarms.view(), "hall_temperature_high", sensor)
            && active(&alarms.view(), "hall_temperature_high", "room:dh1"))
        .await,
        "no breach of the overridden limit: {:#?}",
        alarms.view().alarms
    );
    let view = alarms.view();
    let alarm = view
        .alarms
        .iter()
        .find(|a| a.key.rule == "hall_temperature_high" && a.key.scope.as_str() == sensor)
        .unwrap();
    assert_eq!(alarm.info.limit, Some(26.0), "{alarm:#?}");
    assert!(alarm.info.summary.contains("rule_overrides"), "{alarm:#?}");
    assert!(
        wait_for(|| alarms.view().incidents.iter().any(|i| i.site == "dc"
            && i.room.as_deref() == Some("dh1")
            && i.condition == "hall_temperature_high"))
        .await,
        "no incident: {:#?}",
        alarms.view().incidents
    );
    let view = alarms.view();
    let incident = view
        .incidents
        .iter()
        .find(|i| i.condition == "hall_temperature_high" && i.room.as_deref() == Some("dh1"))
        .unwrap();
    assert_eq!(incident.priority.as_str(), "P2", "{incident:#?}");

    // dh2 reads the same 26.4 degC without overrides: the shipped early warning (P3),
    // no breach of the shipped 27 degC. By the time it is active, dh1's readings have been
    // in for longer than the 1 s on-delay: dh1's disabled early warning stays quiet.
    let dh2_scope = format!("point:{dh2_sensor}/temperature");
    assert!(
        wait_for(|| active(&alarms.view(), "hall_temperature_near_high", &dh2_scope)).await,
        "no shipped early warning in dh2: {:#?}",
        alarms.view().alarms
    );
    let view = alarms.view();
    for (rule, scope) in [
        ("hall_temperature_near_high", sensor),
        ("hall_temperature_near_high", "room:dh1"),
        ("hall_temperature_high", dh2_scope.as_str()),
        ("hall_temperature_high", "room:dh2"),
    ] {
        assert!(!active(&view, rule, scope), "{rule} {scope}: {view:#?}");
    }
    // Its priority is the shipped P3 (it joins dh1's open incident as a cascade of the
    // same site and class: the grouping rule, not the override).
    let priority = |rule: &str, scope: &str| {
        let a = view
            .alarms
            .iter()
            .find(|a| a.key.rule == rule && a.key.scope == scope)
            .unwrap();
        config.priority.priority(a.info.urgency, a.info.impact)
    };
    assert_eq!(
        priority("hall_temperature_near_high", &dh2_scope).as_str(),
        "P3"
    );
    assert_eq!(priority("hall_temperature_high", sensor).as_str(), "P2");
    shutdown.cancel();
    running.await.unwrap().unwrap();
    drop(sim);
}
