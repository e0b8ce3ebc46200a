//! `dcguard run` end to end: the shipped three-site configuration against the firmware
//! stubs (Modbus on ephemeral ports) and a real Mosquitto on a free port. The daemon runs
//! in-process (`app::App`) for the live state, health, `/metrics` (checked by promtool),
//! a silenced device and the ordered shutdown; the real binary runs `--once`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::{Broker, config_copy, free_port, http_get, shipped_dir};
use dcguard::app::{App, RunOptions};
use dcguard::config::model::{DeviceTransport, PollIntervals, ProfileTransport};
use dcguard::config::{self, Config};
use dcguard::model::{PointId, Quality, Reading};
use dcguard::sources::modbus::backoff::BackoffPolicy;
use dcguard::sources::modbus::poller::PollerOptions;
use dcguard::sources::mqtt::SourceOptions;
use firmware_stubs::scenario::Action;
use firmware_stubs::sim::{RunningSim, Sim, SimOptions};
use tokio_util::sync::CancellationToken;

const PROMTOOL: &str = "/usr/bin/promtool";
/// Hang guard for every wait (not a timing assertion).
const HANG: Duration = Duration::from_secs(90);
const SITES: [&str; 3] = ["dc", "smart-dc", "drc"];

fn shipped() -> Config {
    match config::load(&shipped_dir()) {
        Ok(config) => config,
        Err(errors) => panic!("shipped config invalid: {errors}"),
    }
}

/// Short timeouts and backoffs, so a silenced device is noticed quickly.
fn fast_poller() -> PollerOptions {
    let mut options = PollerOptions::default();
    options.client.request_timeout = Duration::from_millis(300);
    options.client.connect_timeout = Duration::from_millis(500);
    options.reconnect = BackoffPolicy {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(500),
        jitter: 0.2,
    };
    options.unit_backoff = BackoffPolicy {
        initial: Duration::from_millis(300),
        max: Duration::from_millis(600),
        jitter: 0.2,
    };
    options
}

fn fast_mqtt() -> SourceOptions {
    SourceOptions {
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_millis(500),
        shutdown_drain: Duration::from_secs(2),
        ..SourceOptions::default()
    }
}

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

/// Runs `promtool check metrics` on a scrape; panics with its findings.
fn promtool_check(scrape: &str) {
    assert!(
        Path::new(PROMTOOL).exists(),
        "{PROMTOOL} is missing: run scripts/test.sh, which installs the test peers"
    );
    use std::io::Write;
    let mut child = std::process::Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && findings.trim().is_empty(),
        "promtool check metrics: {:?}\n{findings}",
        out.status
    );
}

/// The Modbus devices of the configuration, as (site, device).
fn modbus_devices(config: &Config) -> BTreeSet<(String, String)> {
    config
        .sites
        .iter()
        .flat_map(|s| {
            s.devices
                .iter()
                .filter(|d| matches!(d.transport, DeviceTransport::Modbus { .. }))
                .map(|d| (s.id.clone(), d.id.clone()))
        })
        .collect()
}

/// The MQTT devices publishing at least every 10 s, as (site, device).
fn frequent_mqtt_devices(config: &Config) -> BTreeSet<(String, String)> {
    config
        .sites
        .iter()
        .flat_map(|s| {
            s.devices
                .iter()
                .filter(|d| match &d.profile.transport {
                    ProfileTransport::Mqtt(p) => p.interval <= Duration::from_secs(10),
                    ProfileTransport::Modbus(_) => false,
                })
                .map(|d| (s.id.clone(), d.id.clone()))
        })
        .collect()
}

/// Devices with at least one good reading in `live`.
fn devices_with_good(live: &BTreeMap<PointId, Reading>) -> BTreeSet<(String, String)> {
    live.iter()
        .filter(|(_, r)| r.quality().is_good())
        .map(|(id, _)| (id.site.to_string(), id.device.to_string()))
        .collect()
}

async fn start_publishers(sim: &RunningSim, broker: SocketAddr, cancel: &CancellationToken) {
    for site in sim.sites() {
        firmware_stubs::mqtt::spawn_publisher(
            Arc::new(site.spec.clone()),
            site.world.clone(),
            broker,
            cancel.child_token(),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_reads_all_three_sites_exports_metrics_and_shuts_down_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), free_port()).await;
    let sim = Sim::start(SimOptions::new(shipped_dir()).ephemeral())
        .await
        .unwrap();

    let mut config = shipped();
    // The device silenced below polls all its classes every second, so every one of its
    // points is due again soon after the silence (the shipped slow class is 60 s).
    for site in &mut config.sites {
        for device in &mut site.devices {
            if site.id == "dc"
                && device.id == "ups-1"
                && let DeviceTransport::Modbus { poll, .. } = &mut device.transport
            {
                *poll = PollIntervals {
                    fast: Duration::from_secs(1),
                    normal: Duration::from_secs(1),
                    slow: Duration::from_secs(1),
                };
            }
        }
    }
    let config = Arc::new(config);
    let options = RunOptions {
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        endpoint_overrides: sim.endpoints().clone(),
        broker_overrides: BTreeMap::from([(
            "sim".to_owned(),
            ("127.0.0.1".to_owned(), broker.addr.port()),
        )]),
        poller: fast_poller(),
        mqtt: fast_mqtt(),
        // Never the shipped /var/lib/dcguard: tests keep their state in a temp dir.
        data_dir: Some(dir.path().join("data")),
        ..RunOptions::default()
    };
    let app = App::start(config.clone(), options).await.unwrap();
    let addr = app.http_addr();
    assert!(addr.ip().is_loopback() && addr.port() != 0);
    let live = app.live();
    let health = app.health();
    let metrics = app.metrics();
    let render = {
        let app = &app;
        move || app.render_metrics().unwrap()
    };
    // Publishers start once the daemon's session is up, so their first messages count.
    assert!(
        wait_for(|| render().contains("dcguard_mqtt_connects_total{broker=\"sim\"} 1")).await,
        "the daemon never connected to the broker"
    );
    let publishers = CancellationToken::new();
    start_publishers(&sim, broker.addr, &publishers).await;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(app.run_until(shutdown.clone()));

    // Every Modbus device of the three sites is up with good readings, and every
    // frequently publishing sensor has delivered.
    let modbus = modbus_devices(&config);
    let mqtt = frequent_mqtt_devices(&config);
    assert!(
        modbus.len() > 1000 && mqtt.len() > 30,
        "{} {}",
        modbus.len(),
        mqtt.len()
    );
    let arrived = wait_for(|| {
        let good = devices_with_good(&live.snapshot());
        let devices = health.devices();
        modbus.iter().all(|(s, d)| {
            good.contains(&(s.clone(), d.clone()))
                && devices
                    .iter()
                    .any(|(k, h)| &*k.site == s && &*k.device == d && h.up)
        }) && mqtt.is_subset(&good)
    })
    .await;
    if !arrived {
        let good = devices_with_good(&live.snapshot());
        let missing: Vec<_> = modbus
            .union(&mqtt)
            .filter(|d| !good.contains(d))
            .take(20)
            .collect();
        panic!("devices without good readings: {missing:?}");
    }
    let sites_seen: BTreeSet<String> = live
        .snapshot()
        .keys()
        .map(|id| id.site.to_string())
        .collect();
    assert_eq!(sites_seen, SITES.iter().map(|s| s.to_string()).collect());

    // /healthz and /metrics over real HTTP; the scrape passes promtool.
    let (status, _, body) = http_get(addr, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, content_type, scrape) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    for site in SITES {
        assert!(
            scrape
                .lines()
                .any(|l| l.starts_with("dcguard_reading_value{")
                    && l.contains(&format!("site=\"{site}\""))),
            "no reading value of {site}"
        );
    }
    for line in [
        "dcguard_device_up{device=\"ups-1\",site=\"dc\"} 1",
        "dcguard_device_up{device=\"th-a\",site=\"dc\"} 1",
    ] {
        assert!(scrape.contains(line), "{line} missing");
    }
    for name in [
        "dcguard_reading_good{",
        "dcguard_readings_total{quality=\"good\",source=\"modbus\"}",
        "dcguard_readings_total{quality=\"good\",source=\"mqtt\"}",
        "dcguard_device_scan_duration_seconds{",
        "dcguard_device_requests_per_scan{",
        "dcguard_device_requests_total{",
        "dcguard_modbus_endpoint_connects_total{",
        "dcguard_mqtt_messages_total{broker=\"sim\"}",
        "dcguard_points_stale{site=\"drc\"}",
    ] {
        assert!(scrape.contains(name), "{name} missing");
    }
    promtool_check(&scrape);

    // A silenced device goes down and none of its points keeps a value.
    let world = sim.world("dc").unwrap();
    world
        .lock()
        .unwrap()
        .apply(&Action::Silence {
            device: "ups-1".into(),
        })
        .unwrap();
    let silenced_at = chrono::Utc::now();
    let ups_points = config
        .site("dc")
        .and_then(|s| s.devices.iter().find(|d| d.id == "ups-1"))
        .map(|d| d.profile.point_count())
        .unwrap();
    let went_bad = wait_for(|| {
        let readings = live.device("dc", "ups-1");
        let down = health.device("dc", "ups-1").is_some_and(|h| !h.up);
        down && readings.len() == ups_points
            && readings.values().all(|r| {
                r.sampled_at() >= silenced_at
                    && r.value().is_none()
                    && matches!(r.quality(), Quality::Bad(_) | Quality::Stale)
            })
    })
    .await;
    assert!(went_bad, "ups-1: {:#?}", live.device("dc", "ups-1"));
    let down = health.device("dc", "ups-1").unwrap();
    assert!(
        down.down_reason.is_some() && down.errors.timeout > 0,
        "{down:?}"
    );
    let (_, _, scrape) = http_get(addr, "/metrics").await;
    assert!(scrape.contains("dcguard_device_up{device=\"ups-1\",site=\"dc\"} 0"));
    assert!(
        !scrape
            .lines()
            .any(|l| l.starts_with("dcguard_reading_value{device=\"ups-1\",")
                && l.contains("site=\"dc\"")),
        "a silent device still exports a number"
    );
    let load = dcguard::telemetry::metrics::PointLabels {
        site: "dc",
        room: "ups1",
        rack: "",
        device: "ups-1",
        point: "load",
    };
    assert_eq!(metrics.reading_value(load), None);
    // Its sibling on another endpoint is unaffected.
    assert!(health.device("dc", "ups-2").is_some_and(|h| h.up));

    // Ordered shutdown completes, and the sources are gone afterwards.
    shutdown.cancel();
    let stopped = tokio::time::timeout(HANG, running).await;
    assert!(
        matches!(stopped, Ok(Ok(Ok(())))),
        "shutdown did not complete cleanly: {stopped:?}"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "HTTP still up"
    );
    let requests_after = health.device("dc", "ups-2").unwrap().requests;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        health.device("dc", "ups-2").unwrap().requests,
        requests_after
    );
    let codes = sim.function_codes().codes_seen();
    assert!(codes.iter().all(|c| (1..=4).contains(c)), "{codes:?}");
    publishers.cancel();
    sim.shutdown().await;
    drop(broker);
}

/// Runs the real binary: `dcguard run --config DIR --once TARGET`.
async fn run_once(config_dir: &Path, target: &str) -> (Option<i32>, String, String) {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_dcguard"))
        .arg("run")
        .arg("--config")
        .arg(config_dir)
        .args(["--log-level", "warn", "--once", target])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start dcguard");
    let out = tokio::time::timeout(HANG + HANG, child.wait_with_output())
        .await
        .expect("dcguard run --once hung")
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_prints_one_scan_of_a_device_as_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let broker_dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(broker_dir.path(), free_port()).await;
    let sim = Sim::start(SimOptions::new(shipped_dir()).ephemeral())
        .await
        .unwrap();
    config_copy(dir.path(), sim.endpoints(), Some(broker.addr.port()));
    let config = config::load(dir.path()).expect("config copy is valid");
    let ups = config
        .site("dc")
        .and_then(|s| s.devices.iter().find(|d| d.id == "ups-1"))
        .unwrap();
    let ProfileTransport::Modbus(profile) = &ups.profile.transport else {
        panic!("ups-1 is a Modbus device");
    };

    // A healthy Modbus device: every point good, exit 0.
    let (code, stdout, stderr) = run_once(dir.path(), "ups-1@dc").await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let mut lines = stdout.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("dc/ups-1 via modbus 127.0.0.1:"),
        "{stdout}"
    );
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["POINT", "VALUE", "UNIT", "QUALITY"]);
    for point in &profile.points {
        let row = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(point.name.as_str()))
            .unwrap_or_else(|| panic!("no row for {}:\n{stdout}", point.name));
        assert!(row.trim_end().ends_with("good"), "{row}");
    }
    let n = profile.points.len();
    assert!(
        stdout.ends_with(&format!("{n} of {n} points good\n")),
        "{stdout}"
    );

    // The same id in two sites needs @SITE; an unknown device is a usage error.
    let (code, _, stderr) = run_once(dir.path(), "ups-1").await;
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("ups-1@SITE"), "{stderr}");
    let (code, _, stderr) = run_once(dir.path(), "nope@dc").await;
    assert_eq!(code, Some(64), "{stderr}");

    // A silent device: every point bad with the reason, never a value; exit 1.
    sim.world("dc")
        .unwrap()
        .lock()
        .unwrap()
        .apply(&Action::Silence {
            device: "ups-2".into(),
        })
        .unwrap();
    let (code, stdout, stderr) = run_once(dir.path(), "ups-2@dc").await;
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("bad: timeout"), "{stdout}");
    assert!(
        stdout.ends_with(&format!("0 of {n} points good\n")),
        "{stdout}"
    );

    // An MQTT sensor: the next message, decoded by its profile.
    let publishers = CancellationToken::new();
    start_publishers(&sim, broker.addr, &publishers).await;
    let (code, stdout, stderr) = run_once(dir.path(), "th-a@dc").await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.starts_with("dc/th-a via mqtt sim topic dcguard/dc/dh1/th/th-a\n"),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("temperature ") && l.contains("degC") && l.ends_with("good")),
        "{stdout}"
    );
    publishers.cancel();
    sim.shutdown().await;
}

#[test]
fn run_rejects_an_invalid_configuration_or_log_level() {
    let dcguard = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_dcguard"))
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run dcguard")
    };
    let out = dcguard(&["run", "--config", "tests/fixtures/config/broken"]);
    assert_eq!(out.status.code(), Some(64));
    let out = dcguard(&["run", "--config", "config", "--log-level", "loud"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid log level `loud`"));
    let out = dcguard(&["run", "--config", "config", "--once", "ups-1@"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "clap rejects a malformed target"
    );
}
