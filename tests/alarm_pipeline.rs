//! The alarm pipeline inside `dcguard run`, end to end: the firmware stubs drive the
//! shipped three-site configuration (Modbus on ephemeral ports, sensors through a real
//! Mosquitto), the daemon runs in-process (and once as a child process killed with
//! SIGKILL), readings become alarms, alarms become incidents, and incidents reach the fake
//! webhook receiver through the durable outbox.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use common::{Broker, config_copy, free_port, shipped_dir};
use dcguard::alarms::task::{AlarmTaskOptions, AlarmView};
use dcguard::alarms::{AlarmKey, AlarmState};
use dcguard::app::{App, RunOptions};
use dcguard::config::model::Dispatch;
use dcguard::config::{self, Config};
use dcguard::incidents::dispatcher::DispatchSettings;
use dcguard::sources::modbus::backoff::BackoffPolicy;
use dcguard::sources::modbus::poller::PollerOptions;
use dcguard::sources::mqtt::SourceOptions;
use dcguard::store::Store;
use firmware_stubs::receivers::webhook::WebhookReceiver;
use firmware_stubs::scenario::{Action, Scenario, Timeline};
use firmware_stubs::sim::{RunningSim, Sim, SimOptions};
use tokio_util::sync::CancellationToken;

/// Hang guard for every wait (not a timing assertion).
const HANG: Duration = Duration::from_secs(90);
const WEBHOOK_KEY: &str = "test-only-webhook-key";

/// Waits (up to [`HANG`]) until `done` holds; false if it never did.
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

fn fast_poller() -> PollerOptions {
    let mut options = PollerOptions::default();
    options.client.request_timeout = Duration::from_millis(500);
    options.client.connect_timeout = Duration::from_millis(500);
    options.reconnect = BackoffPolicy {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(500),
        jitter: 0.2,
    };
    options
}

fn fast_mqtt() -> SourceOptions {
    SourceOptions {
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_millis(500),
        shutdown_drain: Duration::from_secs(1),
        ..SourceOptions::default()
    }
}

/// Simulators of every site publishing to a Mosquitto, and a configuration directory
/// pointing at them (HTTP on a free port, the state in `data`).
struct Rig {
    dir: tempfile::TempDir,
    _broker: Broker,
    sim: RunningSim,
    config_dir: PathBuf,
    data: PathBuf,
}

impl Rig {
    async fn start(webhook: Option<&str>) -> Rig {
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
        let main = config_dir.join("dcguard.toml");
        let mut text = std::fs::read_to_string(&main).unwrap();
        let listen = "listen = \"127.0.0.1:8080\"";
        assert!(text.contains(listen), "shipped listen address moved");
        text = text.replace(listen, &format!("listen = \"127.0.0.1:{}\"", free_port()));
        // A hang guard, not a timing claim: on a loaded machine draining the pipeline
        // can take longer than the shipped 10 s, which would abort tasks mid-test.
        let grace = "shutdown_grace_secs = 10";
        assert!(text.contains(grace), "shipped shutdown grace moved");
        text = text.replace(grace, "shutdown_grace_secs = 90");
        if let Some(url) = webhook {
            let shipped = "enabled = false\nurl = \"http://127.0.0.1:9800/incidents\"\n\
                           hmac_secret_env = \"DCGUARD_WEBHOOK_SECRET\"";
            assert!(text.contains(shipped), "shipped webhook block moved");
            let secret = dir.path().join("webhook.key");
            std::fs::write(&secret, WEBHOOK_KEY).unwrap();
            text = text.replace(
                shipped,
                &format!(
                    "enabled = true\nurl = \"{url}\"\nhmac_secret_file = \"{}\"",
                    secret.display()
                ),
            );
        }
        std::fs::write(&main, text).unwrap();
        let data = dir.path().join("data");
        Rig {
            dir,
            _broker: broker,
            sim,
            config_dir,
            data,
        }
    }

    fn config(&self) -> Arc<Config> {
        match config::load(&self.config_dir) {
            Ok(config) => Arc::new(config),
            Err(errors) => panic!("test config invalid: {errors}"),
        }
    }

    fn options(&self, alarms: AlarmTaskOptions) -> RunOptions {
        // Short retries; whatever else the delivery settings hold keeps its default.
        let mut dispatch = DispatchSettings::from(&Dispatch::default());
        dispatch.request_timeout = Duration::from_secs(2);
        dispatch.retry_min = Duration::from_millis(100);
        dispatch.retry_max = Duration::from_millis(500);
        dispatch.idle_poll = Duration::from_millis(500);
        RunOptions {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            poller: fast_poller(),
            mqtt: fast_mqtt(),
            data_dir: Some(self.data.clone()),
            alarms,
            dispatch: Some(dispatch),
            ..RunOptions::default()
        }
    }

    fn world(&self, site: &str, f: impl FnOnce(&mut firmware_stubs::world::World)) {
        let world = self.sim.world(site).expect("site simulated");
        let mut guard = world.lock().unwrap();
        f(&mut guard);
    }
}

/// Short snapshot period so a restart finds recent state.
fn quick_alarms() -> AlarmTaskOptions {
    AlarmTaskOptions {
        tick: Duration::from_millis(250),
        snapshot_every: Duration::from_millis(250),
        ..AlarmTaskOptions::default()
    }
}

/// What must survive a restart, per alarm: state, acknowledgement, shelve, activation and
/// incident number; per open incident: id, state, priority and members.
#[derive(Debug, Clone, PartialEq)]
struct Projection {
    alarms: BTreeMap<String, AlarmFacts>,
    incidents: BTreeMap<String, (String, String, usize)>,
}

#[derive(Debug, Clone, PartialEq)]
struct AlarmFacts {
    state: AlarmState,
    shelf: Option<(String, DateTime<Utc>)>,
    activation: u64,
    incident: Option<u64>,
}

fn project(view: &AlarmView, only: impl Fn(&AlarmKey) -> bool) -> Projection {
    Projection {
        alarms: view
            .alarms
            .iter()
            .filter(|a| only(&a.key))
            .map(|a| {
                (
                    a.key.to_string(),
                    AlarmFacts {
                        state: a.state,
                        shelf: a.shelf.as_ref().map(|s| (s.user.clone(), s.until)),
                        activation: a.activation,
                        incident: a.incident,
                    },
                )
            })
            .collect(),
        incidents: view
            .incidents
            .iter()
            .filter(|i| i.members.iter().any(|m| i.site == m.alarm.site))
            .filter(|i| {
                i.members
                    .iter()
                    .any(|m| only(&AlarmKey::new(&m.alarm.rule, &m.alarm.site, &m.alarm.scope)))
            })
            .map(|i| {
                (
                    i.id.clone(),
                    (
                        i.state.as_str().to_owned(),
                        i.priority.as_str().to_owned(),
                        i.members.len(),
                    ),
                )
            })
            .collect(),
    }
}

fn is_vesda(key: &AlarmKey) -> bool {
    key.site == "dc" && key.rule.starts_with("vesda_")
}

fn count(p: &Projection, f: impl Fn(&AlarmFacts) -> bool) -> usize {
    p.alarms.values().filter(|a| f(a)).count()
}

fn opened_count(data: &Path) -> usize {
    let store = Store::open(&data.join(dcguard::app::STORE_FILE)).unwrap();
    store.incident_transitions_of_kind("opened").unwrap().len()
}

/// 20 active alarms (four VESDA levels on five detectors), 5 acknowledged and 3 shelved
/// survive a graceful restart and a kill -9 of `dcguard run` identically, and no new
/// incident is opened for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarm_state_survives_a_graceful_restart_and_a_kill_9() {
    let rig = Rig::start(None).await;
    let config = rig.config();

    // Run 1: raise, acknowledge, shelve; graceful stop.
    let app = App::start(config.clone(), rig.options(quick_alarms()))
        .await
        .unwrap();
    let alarms = app.alarms();
    let detectors = [
        "vesda-dh1-1",
        "vesda-dh1-2",
        "vesda-dh2-1",
        "vesda-dh2-2",
        "vesda-ups1-1",
    ];
    rig.world("dc", |w| {
        for d in detectors {
            w.apply(&Action::Smoke {
                device: d.to_owned(),
                to: 2.5,
                over_secs: 0.0,
            })
            .unwrap();
        }
    });
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(app.run_until(shutdown.clone()));
    assert!(
        wait_for(|| {
            let p = project(&alarms.view(), is_vesda);
            count(&p, |a| a.state.is_active()) == 20
        })
        .await,
        "20 VESDA alarms never became active: {:#?}",
        project(&alarms.view(), is_vesda)
    );
    let keys: Vec<AlarmKey> = alarms
        .view()
        .alarms
        .iter()
        .filter(|a| is_vesda(&a.key))
        .map(|a| a.key.clone())
        .collect();
    for key in &keys[..5] {
        alarms
            .acknowledge(key.clone(), "operator-1", "seen, going to look")
            .await
            .unwrap();
    }
    for key in &keys[5..8] {
        alarms
            .shelve(
                key.clone(),
                "operator-1",
                "detector under maintenance",
                Duration::from_secs(3600),
            )
            .await
            .unwrap();
    }
    let before = project(&alarms.view(), is_vesda);
    assert_eq!(count(&before, |a| a.state.is_active()), 20);
    assert_eq!(count(&before, |a| a.state == AlarmState::ActiveAcked), 5);
    assert_eq!(count(&before, |a| a.shelf.is_some()), 3);
    assert!(
        before.alarms.values().all(|a| a.incident.is_some()),
        "{before:#?}"
    );
    let full_before = project(&alarms.view(), |_| true);
    shutdown.cancel();
    running.await.unwrap().unwrap();
    let opened = opened_count(&rig.data);
    assert!(opened >= 1, "no incident was opened");

    // Run 2 (in-process): the restored state is the state before, alarm for alarm, and
    // stays so with fresh readings; no incident opens.
    let app = App::start(config.clone(), rig.options(quick_alarms()))
        .await
        .unwrap();
    let alarms = app.alarms();
    assert_eq!(project(&alarms.view(), |_| true), full_before);
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(app.run_until(shutdown.clone()));
    let mut watch = alarms.watch();
    for _ in 0..8 {
        tokio::time::timeout(HANG, watch.changed())
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(project(&alarms.view(), is_vesda), before);
    shutdown.cancel();
    running.await.unwrap().unwrap();
    assert_eq!(
        opened_count(&rig.data),
        opened,
        "a restart opened an incident"
    );

    // Run 3: the real binary with --data-dir, killed with SIGKILL once it has written a
    // snapshot of its own.
    let started = Utc::now();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_dcguard"))
        .arg("run")
        .arg("--config")
        .arg(&rig.config_dir)
        .arg("--data-dir")
        .arg(&rig.data)
        .args(["--log-level", "warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(rig.dir.path().join("child.log")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let store = Store::open(&rig.data.join(dcguard::app::STORE_FILE)).unwrap();
    let snapshot_written = wait_for(|| {
        store
            .alarm_snapshot()
            .unwrap()
            .is_some_and(|s| s.saved_at > started)
    })
    .await;
    assert!(
        snapshot_written,
        "the child never wrote a snapshot: {}",
        std::fs::read_to_string(rig.dir.path().join("child.log")).unwrap_or_default()
    );
    // Let it run (poll, evaluate, commit) a little longer, then SIGKILL mid-run.
    tokio::time::sleep(Duration::from_secs(2)).await;
    child.start_kill().unwrap();
    let status = child.wait().await.unwrap();
    assert!(!status.success(), "SIGKILL ends the child: {status:?}");
    drop(store);

    // Run 4: after the kill -9, the same alarms, acknowledgements and shelves.
    let app = App::start(config.clone(), rig.options(quick_alarms()))
        .await
        .unwrap();
    let alarms = app.alarms();
    assert_eq!(project(&alarms.view(), is_vesda), before);
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(app.run_until(shutdown.clone()));
    let mut watch = alarms.watch();
    for _ in 0..4 {
        tokio::time::timeout(HANG, watch.changed())
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(project(&alarms.view(), is_vesda), before);
    shutdown.cancel();
    running.await.unwrap().unwrap();
    assert_eq!(
        opened_count(&rig.data),
        opened,
        "a kill -9 and restart opened an incident"
    );
}

/// The `dc-cooling-failure` scenario (two PACs of DC data hall 1 fail), sped up by
/// stepping the simulated world: the early warning opens an incident, the breach of
/// 27 degC escalates it to P1, and exactly one P1 incident arrives at the webhook with
/// site, room, value, limit, priority and due time right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pac_failure_in_a_dc_hall_gives_exactly_one_p1_incident_at_the_webhook() {
    let receiver = WebhookReceiver::start(WEBHOOK_KEY).await.unwrap();
    let rig = Rig::start(Some(&receiver.url())).await;
    let config = rig.config();
    let scenario = Scenario::load(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("firmware-stubs/scenarios/dc-cooling-failure.toml"),
    )
    .unwrap();
    let mut timeline = Timeline::new(Some(&scenario));
    // On-delays shortened to 1 s (the shipped 60 s/120 s would make the test minutes long).
    let options = AlarmTaskOptions {
        params: Some(Arc::new(|_, mut p| {
            p.on_delay = p.on_delay.min(Duration::from_secs(1));
            p
        })),
        ..quick_alarms()
    };
    let app = App::start(config.clone(), rig.options(options))
        .await
        .unwrap();
    let alarms = app.alarms();
    let metrics = app.metrics();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(app.run_until(shutdown.clone()));

    // Fast-forward the hall to the early-warning band (26-27 degC), hold it there.
    let hall = |w: &firmware_stubs::world::World| w.room_temperature_c("dh1").unwrap();
    let mut advance_to = |target: f64| {
        rig.world("dc", |w| {
            for _ in 0..2000 {
                if hall(w) >= target {
                    break;
                }
                timeline.advance(w, Duration::from_secs(2));
            }
        })
    };
    advance_to(26.4);
    let temperature_incident = |view: &AlarmView, priority: &str| {
        view.incidents.iter().any(|i| {
            i.site == "dc"
                && i.room.as_deref() == Some("dh1")
                && i.condition.starts_with("hall_temperature")
                && i.priority.as_str() == priority
        })
    };
    assert!(
        wait_for(|| temperature_incident(&alarms.view(), "P3")
            || temperature_incident(&alarms.view(), "P1"))
        .await,
        "no temperature incident: {:#?}",
        alarms.view().incidents
    );
    // The breach.
    advance_to(27.8);
    assert!(
        wait_for(|| temperature_incident(&alarms.view(), "P1")).await,
        "no P1 temperature incident: {:#?}",
        alarms.view().incidents
    );
    let p1 =
        |a: &firmware_stubs::receivers::webhook::Applied| a.envelope["data"]["priority"] == "P1";
    assert!(
        wait_for(|| receiver.applied().iter().any(p1)).await,
        "no P1 at the receiver: {:#?}",
        receiver.requests()
    );
    // The metrics show the P1 incident and a P1 alarm of the site.
    let scrape = metrics.render().unwrap();
    let series = |name: &str| -> Vec<String> {
        scrape
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .filter(|l| l.contains("priority=\"P1\"") && l.contains("site=\"dc\""))
            .filter(|l| !l.ends_with(" 0"))
            .map(str::to_owned)
            .collect()
    };
    assert!(!series("dcguard_incidents").is_empty(), "{scrape}");
    assert!(!series("dcguard_alarms").is_empty(), "{scrape}");
    shutdown.cancel();
    running.await.unwrap().unwrap();

    // Exactly one incident at the receiver was ever P1, and it is the DC hall's.
    let applied = receiver.applied();
    let p1_incidents: std::collections::BTreeSet<String> = applied
        .iter()
        .filter(|a| p1(a))
        .map(|a| a.incident_id.clone())
        .collect();
    assert_eq!(p1_incidents.len(), 1, "{applied:#?}");
    let id = p1_incidents.into_iter().next().unwrap();
    let ours: Vec<_> = applied.iter().filter(|a| a.incident_id == id).collect();
    let sequences: Vec<u64> = ours.iter().map(|a| a.sequence).collect();
    assert_eq!(
        sequences,
        (1..=ours.len() as u64).collect::<Vec<_>>(),
        "delivered in order, once each"
    );
    assert_eq!(ours[0].event_type, "dcguard.incident.opened");
    // The first transition that made it P1 (opened as P1, or escalated to P1).
    let first_p1 = ours.iter().find(|a| p1(a)).unwrap();
    let data = &first_p1.envelope["data"];
    assert_eq!(data["site"], "dc");
    assert_eq!(data["room"], "dh1");
    assert_eq!(data["limit"].as_f64(), Some(27.0), "{data:#}");
    assert!(data["value"].as_f64().unwrap() > 27.0, "{data:#}");
    assert!(
        data["condition"] == "hall_temperature_high",
        "the breach leads the incident: {data:#}"
    );
    let time = |v: &serde_json::Value| {
        DateTime::parse_from_rfc3339(v.as_str().unwrap())
            .unwrap()
            .with_timezone(&Utc)
    };
    let p1_at = time(&first_p1.envelope["time"]);
    let due = time(&data["due_at"]);
    let opened = time(&data["opened_at"]);
    // P1: 3 clock hours (24x7) from the instant it became P1: its opening when it opened
    // as P1, else its escalation (the incident model takes the earlier of the old due time
    // and the new target counted from the escalation). The CloudEvents `time` is in ms.
    let due_from = (due - TimeDelta::hours(3)).timestamp_millis();
    assert_eq!(due_from, p1_at.timestamp_millis(), "{data:#}");
    assert!(
        opened.timestamp_millis() <= p1_at.timestamp_millis(),
        "{data:#}"
    );
    // The early warning is part of this incident, not a ticket of its own.
    let other_temperature_tickets: Vec<_> = applied
        .iter()
        .filter(|a| a.incident_id != id && a.event_type == "dcguard.incident.opened")
        .filter(|a| {
            a.envelope["data"]["class"] == "temperature"
                || a.envelope["data"]["condition"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("hall_temperature"))
        })
        .filter(|a| a.envelope["data"]["room"] == "dh1")
        .collect();
    assert!(
        other_temperature_tickets.is_empty(),
        "{other_temperature_tickets:#?}"
    );
    let members = &ours.last().unwrap().envelope["data"]["details"];
    assert!(
        members
            .as_str()
            .is_some_and(|d| d.contains("hall_temperature_near_high")),
        "the early warning joined the incident: {members:#}"
    );
    assert_eq!(receiver.duplicates_offered(), 0);
}
