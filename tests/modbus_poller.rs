//! The Modbus poller against the firmware stubs over real TCP (loopback, ephemeral ports).
//!
//! A small site is written to a temporary directory: three UPS units behind one gateway
//! (`127.0.0.1:15001`, units 1-3), one UPS alone (`15002`), two rack meters. dcguard
//! loads it with `config::load`; the stubs serve the same directory on free ports. The
//! UPS test profile uses all four tables and all three poll classes. Faults are injected
//! through the stubs' world (`World::apply`) and every test ends by checking, from the
//! stubs' own function-code log, that only read function codes 1-4 arrived.
//!
//! Timing: real time, short intervals (50 ms), bounded waits. Assertions count schedule
//! events (requests, timeouts, scans) with wide margins, never speed.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use chrono::{DateTime, Utc};
use dcguard::config::model::{
    Config, DataType, PollIntervals, Profile, ProfileTransport, RegisterKind,
};
use dcguard::model::{BadReason, Quality, Reading, Value};
use dcguard::sources::health::{DeviceHealth, HealthRegistry};
use dcguard::sources::modbus::backoff::BackoffPolicy;
use dcguard::sources::modbus::client::ClientError;
use dcguard::sources::modbus::poller::{self, EndpointSpec, PollerOptions};
use firmware_stubs::scenario::Action;
use firmware_stubs::sim::{RunningSim, Sim, SimOptions};
use firmware_stubs::world::{SimValue, WireCorruption};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/config/minimal");

const SITE: &str = r#"
[site]
id = "dc"
name = "DC"
building = "Test building"
time_zone = "Asia/Jakarta"
rack_positions = 4
floor_load_max_kg_m2 = 1200
utility_feeds = 2
fire_suppression = "FM200/NOVEC"
ups = { backup_time_min = 10, battery = "vrla", redundancy = "N+1" }
genset = { rating = "prime", redundancy = "N+1", autonomy_min_h = 12, load_test_interval_months = 1 }
cooling = { kind = "pac", redundancy = "N+1" }
data_hall = { temperature_min_c = 18.0, temperature_max_c = 27.0, humidity_min_pct = 30.0, humidity_max_pct = 60.0 }
rack_limit_kw = { storage = 5.0, server = 5.0, network = 5.0 }

[access]
third_party_escort = "required"
destination_room_required = false

[[rooms]]
id = "dh1"
name = "Data Hall 1"
kind = "data_hall"

[[rooms]]
id = "ups1"
name = "UPS Room 1"
kind = "ups_room"

[[racks]]
id = "A01"
room = "dh1"
class = "server"

[[rack_meters]]
racks = "A01"
profile = "rack-meter"
endpoint = "127.0.0.1:15010"
unit_start = 1

[[devices]]
id = "ups-1"
profile = "ups"
room = "ups1"
modbus = { endpoint = "127.0.0.1:15001", unit = 1 }

[[devices]]
id = "ups-2"
profile = "ups"
room = "ups1"
modbus = { endpoint = "127.0.0.1:15001", unit = 2 }

[[devices]]
id = "ups-3"
profile = "ups"
room = "ups1"
modbus = { endpoint = "127.0.0.1:15001", unit = 3 }

[[devices]]
id = "ups-4"
profile = "ups"
room = "ups1"
modbus = { endpoint = "127.0.0.1:15002", unit = 1 }
"#;

/// Every table, every poll class; requests per scan: fast 2, normal 3, slow 1.
const UPS_PROFILE: &str = r#"
[profile]
id = "ups"
kind = "ups"
transport = "modbus"
imitates = "a test map using every table and poll class"

[modbus]
max_gap_registers = 4

[[points]]
name = "output_source"
role = "ups.output_source"
register = "input"
address = 0
type = "u16"
class = "fast"

[[points]]
name = "fault"
role = "ups.fault"
register = "coil"
address = 0
type = "bool"
class = "fast"

[[points]]
name = "output_kw"
role = "ups.output_kw"
register = "input"
address = 1
type = "f32"
order = "CDAB"
unit = "kW"

[[points]]
name = "load_pct"
role = "ups.load_pct"
register = "holding"
address = 10
type = "u16"
scale = 0.1
unit = "%"

[[points]]
name = "battery_temperature_c"
role = "ups.battery_temperature_c"
register = "holding"
address = 11
type = "i16"
scale = 0.1
unit = "degC"

[[points]]
name = "on_battery"
role = "ups.on_battery"
register = "discrete"
address = 0
type = "bool"

[[points]]
name = "energy_kwh"
role = "ups.energy_kwh"
register = "holding"
address = 40
type = "u32"
unit = "kWh"
class = "slow"
"#;

/// Forced values per point (name, world value, expected decoded value).
fn forced(seed: f64) -> Vec<(&'static str, SimValue, Value)> {
    vec![
        (
            "output_source",
            SimValue::Number(3.0 + seed),
            Value::Number(3.0 + seed),
        ),
        ("fault", SimValue::Bool(true), Value::Bool(true)),
        (
            "output_kw",
            SimValue::Number(12.5 + seed),
            Value::Number(12.5 + seed),
        ),
        (
            "load_pct",
            SimValue::Number(73.5 + seed),
            Value::Number(73.5 + seed),
        ),
        (
            "battery_temperature_c",
            SimValue::Number(-4.2 - seed),
            Value::Number(-4.2 - seed),
        ),
        ("on_battery", SimValue::Bool(true), Value::Bool(true)),
        (
            "energy_kwh",
            SimValue::Number(123_456.0 + seed),
            Value::Number(123_456.0 + seed),
        ),
    ]
}

fn write_config(dir: &Path) {
    write_config_with(dir, "");
}

/// The test site with `site_extra` appended to its file (e.g. `[[modbus_endpoints]]`).
fn write_config_with(dir: &Path, site_extra: &str) {
    std::fs::create_dir_all(dir.join("profiles")).unwrap();
    std::fs::create_dir_all(dir.join("sites")).unwrap();
    let fixture = Path::new(FIXTURE);
    std::fs::copy(fixture.join("dcguard.toml"), dir.join("dcguard.toml")).unwrap();
    for profile in ["rack-meter.toml", "th.toml"] {
        std::fs::copy(
            fixture.join("profiles").join(profile),
            dir.join("profiles").join(profile),
        )
        .unwrap();
    }
    std::fs::write(dir.join("profiles/ups.toml"), UPS_PROFILE).unwrap();
    std::fs::write(dir.join("sites/dc.toml"), format!("{SITE}\n{site_extra}")).unwrap();
}

fn configured(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Options for tests: short timeouts and backoffs.
fn fast_options() -> PollerOptions {
    let mut options = PollerOptions::default();
    options.client.request_timeout = Duration::from_millis(250);
    options.client.connect_timeout = Duration::from_millis(500);
    options.busy_retry_delay = Duration::from_millis(20);
    options.reconnect = BackoffPolicy {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(400),
        jitter: 0.2,
    };
    options.unit_backoff = BackoffPolicy {
        initial: Duration::from_millis(400),
        max: Duration::from_millis(800),
        jitter: 0.2,
    };
    options
}

const INTERVALS: PollIntervals = PollIntervals {
    fast: Duration::from_millis(50),
    normal: Duration::from_millis(50),
    slow: Duration::from_millis(100),
};

struct Harness {
    sim: RunningSim,
    health: HealthRegistry,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    collector: JoinHandle<()>,
    readings: Arc<Mutex<Vec<Reading>>>,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// Starts the stubs and the poller; `adjust` may change the endpoints first.
    async fn start(options: PollerOptions, adjust: impl FnOnce(&mut Vec<EndpointSpec>)) -> Self {
        Harness::start_with(options, "", adjust).await
    }

    /// [`Harness::start`] with `site_extra` appended to the site's file.
    async fn start_with(
        options: PollerOptions,
        site_extra: &str,
        adjust: impl FnOnce(&mut Vec<EndpointSpec>),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        write_config_with(dir.path(), site_extra);
        let config: Config = match dcguard::config::load(dir.path()) {
            Ok(config) => config,
            Err(errors) => panic!("fixture config invalid: {errors}"),
        };
        let sim = Sim::start(SimOptions::new(dir.path()).ephemeral())
            .await
            .unwrap();
        let mut endpoints = poller::endpoints(&config);
        for endpoint in &mut endpoints {
            endpoint.address = sim.endpoint(endpoint.configured).unwrap();
            for device in &mut endpoint.devices {
                device.poll = INTERVALS;
            }
        }
        adjust(&mut endpoints);
        let health = HealthRegistry::new();
        let cancel = CancellationToken::new();
        let (tx, mut rx) = mpsc::channel(1024);
        let tasks = poller::spawn(endpoints, &options, tx, &health, &cancel);
        let readings = Arc::new(Mutex::new(Vec::new()));
        let sink = readings.clone();
        let collector = tokio::spawn(async move {
            while let Some(reading) = rx.recv().await {
                sink.lock().unwrap().push(reading);
            }
        });
        Harness {
            sim,
            health,
            cancel,
            tasks,
            collector,
            readings,
            _dir: dir,
        }
    }

    fn apply(&self, action: Action) {
        let world = self.sim.world("dc").unwrap();
        world.lock().unwrap().apply(&action).unwrap();
    }

    fn force(&self, device: &str, values: &[(&'static str, SimValue, Value)]) {
        let world = self.sim.world("dc").unwrap();
        let mut world = world.lock().unwrap();
        for (point, value, _) in values {
            world.set_point(device, point, value.clone());
        }
    }

    fn health(&self, device: &str) -> DeviceHealth {
        self.health.device("dc", device).unwrap()
    }

    /// Readings of one device (optionally one point) sampled at or after `since`.
    fn readings(&self, device: &str, point: Option<&str>, since: DateTime<Utc>) -> Vec<Reading> {
        self.readings
            .lock()
            .unwrap()
            .iter()
            .filter(|r| &*r.point().device == device)
            .filter(|r| point.is_none_or(|p| &*r.point().point == p))
            .filter(|r| r.sampled_at() >= since)
            .cloned()
            .collect()
    }

    fn good(&self, device: &str, point: &str, since: DateTime<Utc>) -> usize {
        self.readings(device, Some(point), since)
            .iter()
            .filter(|r| r.quality().is_good())
            .count()
    }

    /// Waits (at most `limit`) until `done` holds; returns whether it did.
    async fn wait_for(&self, limit: Duration, mut done: impl FnMut(&Self) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if done(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops everything and checks invariant 1 on the stubs' own log.
    async fn finish(self) -> BTreeSet<u8> {
        self.cancel.cancel();
        for task in self.tasks {
            task.await.unwrap();
        }
        self.collector.await.unwrap();
        let codes = self.sim.function_codes().codes_seen();
        assert!(!codes.is_empty(), "the stubs saw no request at all");
        assert!(
            codes.iter().all(|c| (1..=4).contains(c)),
            "only read function codes may reach a device, saw {codes:?}"
        );
        self.sim.shutdown().await;
        codes
    }
}

/// Asserts every good reading of `device` since `since` equals its forced value.
fn assert_values(
    h: &Harness,
    device: &str,
    values: &[(&'static str, SimValue, Value)],
    since: DateTime<Utc>,
) {
    for reading in h.readings(device, None, since) {
        let Some(value) = reading.value() else {
            continue;
        };
        let (_, _, expected) = values
            .iter()
            .find(|(p, _, _)| *p == &*reading.point().point)
            .unwrap();
        match (value, expected) {
            (Value::Number(a), Value::Number(b)) => {
                assert!((a - b).abs() < 1e-6, "{}: {a} != {b}", reading.point())
            }
            _ => assert_eq!(value, expected, "{}", reading.point()),
        }
    }
}

/// The most attempts that fit in `window` when each costs `cost` and is followed by
/// the shortest backoff `policy` allows (jitter taken off), plus one for an attempt
/// already under way when the window opened.
fn max_attempts(window: Duration, cost: Duration, policy: &BackoffPolicy) -> u64 {
    let mut used = Duration::ZERO;
    let mut attempts = 0u64;
    while used <= window {
        attempts += 1;
        let wait = policy
            .base_delay(attempts as u32)
            .mul_f64(1.0 - policy.jitter);
        used += cost + wait;
    }
    attempts + 1
}

fn all_points_good(h: &Harness, device: &str, since: DateTime<Utc>) -> bool {
    forced(0.0)
        .iter()
        .all(|(p, _, _)| h.good(device, p, since) > 0)
}

#[tokio::test]
async fn decoded_values_equal_the_worlds_values_and_only_reads_arrive() {
    let h = Harness::start(fast_options(), |_| {}).await;
    let one = forced(0.0);
    let four = forced(1.0);
    h.force("ups-1", &one);
    h.force("ups-4", &four);
    let since = Utc::now();
    assert!(
        h.wait_for(Duration::from_secs(5), |h| all_points_good(
            h, "ups-1", since
        ) && all_points_good(
            h, "ups-4", since
        ))
        .await,
        "every point of ups-1 and ups-4 read good"
    );
    assert_values(&h, "ups-1", &one, since);
    assert_values(&h, "ups-4", &four, since);
    // Rack meters behind their own gateway are read too.
    assert!(
        h.wait_for(Duration::from_secs(5), |h| h
            .good("A01-a", "power_kw", since)
            > 0)
            .await
    );

    let health = h.health("ups-1");
    assert!(health.up);
    assert!(health.last_success.is_some());
    assert_eq!(health.errors.total(), 0, "{health:?}");
    assert!(health.requests_last_scan >= 1 && health.requests_last_scan <= 3);
    let endpoint = h.health.endpoint(configured(15001)).unwrap();
    assert_eq!(endpoint.connects, 1, "three units share one connection");
    assert_eq!(endpoint.drops, 0);

    let codes = h.finish().await;
    assert_eq!(
        codes,
        BTreeSet::from([1, 2, 3, 4]),
        "all four tables were read"
    );
}

#[tokio::test]
async fn a_silent_unit_delays_neither_its_siblings_nor_another_endpoint() {
    let options = fast_options();
    let timeout = options.client.request_timeout;
    let h = Harness::start(options, |_| {}).await;
    assert!(
        h.wait_for(Duration::from_secs(5), |h| h.health("ups-2").up)
            .await
    );
    h.apply(Action::Silence {
        device: "ups-2".into(),
    });
    let since = Utc::now();
    let started = Instant::now();
    // Counts, not time: wait (with a deadline) until the siblings and the other endpoint
    // have read good 20 times each, then bound the silent unit's cost in that window.
    assert!(
        h.wait_for(Duration::from_secs(60), |h| {
            ["ups-1", "ups-3", "ups-4"]
                .iter()
                .all(|d| h.good(d, "output_source", since) >= 20)
                && h.health("ups-2").errors.timeout >= 1
        })
        .await,
        "the siblings and ups-4 keep reading while ups-2 is silent"
    );
    let elapsed = started.elapsed();

    let silent = h.health("ups-2");
    assert!(!silent.up);
    // At most one timeout per backoff slot (one per 50 ms scan would be far more).
    let most = max_attempts(elapsed, timeout, &fast_options().unit_backoff);
    assert!(
        silent.errors.timeout <= most,
        "{} timeouts in {elapsed:?}, at most {most} possible with backoff",
        silent.errors.timeout
    );
    let bad = h.readings("ups-2", Some("output_source"), since);
    assert!(!bad.is_empty());
    assert!(
        bad.iter()
            .skip(1)
            .all(|r| r.quality() == &Quality::Bad(BadReason::Timeout)),
        "{bad:?}"
    );
    for sibling in ["ups-1", "ups-3"] {
        assert!(h.health(sibling).up);
    }

    h.apply(Action::Unsilence {
        device: "ups-2".into(),
    });
    let back = Utc::now();
    assert!(
        h.wait_for(Duration::from_secs(3), |h| h.good(
            "ups-2",
            "output_source",
            back
        ) > 0)
            .await,
        "the unit is probed again and comes back"
    );
    h.finish().await;
}

#[tokio::test]
async fn busy_is_retried_then_recovers_and_exhausted_retries_read_bad() {
    let h = Harness::start(fast_options(), |_| {}).await;
    assert!(
        h.wait_for(Duration::from_secs(5), |h| h.health("ups-4").up)
            .await
    );
    let values = forced(0.0);
    h.force("ups-4", &values);

    // Two busy answers: the retries absorb them, no bad reading.
    let since = Utc::now();
    h.apply(Action::Exception {
        device: "ups-4".into(),
        code: 0x06,
        times: Some(2),
    });
    assert!(
        h.wait_for(Duration::from_secs(3), |h| h.health("ups-4").busy_retries
            == 2)
            .await
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let readings = h.readings("ups-4", None, since);
    assert!(
        readings.iter().all(|r| r.quality().is_good()),
        "{readings:?}"
    );
    assert_values(&h, "ups-4", &values, since);

    // Eight: two requests exhaust 1 + 3 attempts each and read bad (never a number).
    h.apply(Action::Exception {
        device: "ups-4".into(),
        code: 0x06,
        times: Some(8),
    });
    assert!(
        h.wait_for(Duration::from_secs(3), |h| {
            h.health("ups-4").errors.exception.get(&0x06) == Some(&10)
        })
        .await,
        "busy counter = injected count: {:?}",
        h.health("ups-4").errors
    );
    let after = Utc::now();
    assert!(
        h.wait_for(Duration::from_secs(3), |h| all_points_good(
            h, "ups-4", after
        ))
        .await
    );
    let busy_bad: Vec<Reading> = h
        .readings("ups-4", None, since)
        .into_iter()
        .filter(|r| r.quality() == &Quality::Bad(BadReason::Exception(0x06)))
        .collect();
    assert!(!busy_bad.is_empty());
    assert!(busy_bad.iter().all(|r| r.value().is_none()));
    assert_values(&h, "ups-4", &values, since);
    let health = h.health("ups-4");
    assert_eq!(health.busy_retries, 2 + 6);
    assert!(health.up);
    h.finish().await;
}

#[tokio::test]
async fn gateway_target_failed_marks_only_that_unit_down() {
    let h = Harness::start(fast_options(), |_| {}).await;
    assert!(
        h.wait_for(Duration::from_secs(5), |h| h.health("ups-3").up)
            .await
    );
    h.apply(Action::Exception {
        device: "ups-3".into(),
        code: 0x0B,
        times: None,
    });
    let since = Utc::now();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let elapsed = started.elapsed();

    let down = h.health("ups-3");
    assert!(!down.up);
    assert!(
        down.down_reason.as_deref().unwrap_or("").contains("0x0B"),
        "{down:?}"
    );
    let answered = down.errors.exception.get(&0x0B).copied().unwrap_or(0);
    assert!(answered >= 1);
    // One request per backoff slot (an exception answers at once: no timeout cost).
    let most = max_attempts(elapsed, Duration::ZERO, &fast_options().unit_backoff);
    assert!(
        answered <= most,
        "{answered} requests to a failed unit in {elapsed:?}, at most {most} with backoff"
    );
    let bad = h.readings("ups-3", Some("load_pct"), since);
    assert!(
        bad.iter()
            .skip(1)
            .all(|r| r.quality() == &Quality::Bad(BadReason::Exception(0x0B)))
    );
    for sibling in ["ups-1", "ups-2"] {
        assert!(h.health(sibling).up, "{sibling}");
        assert!(h.good(sibling, "load_pct", since) >= 10, "{sibling}");
        assert_eq!(h.health(sibling).errors.total(), 0);
    }
    h.apply(Action::ClearException {
        device: "ups-3".into(),
    });
    let back = Utc::now();
    assert!(
        h.wait_for(Duration::from_secs(3), |h| all_points_good(
            h, "ups-3", back
        ))
        .await
    );
    assert!(h.health("ups-3").up);
    h.finish().await;
}

#[tokio::test]
async fn illegal_address_is_reported_once_and_the_rest_of_the_device_keeps_reading() {
    // dcguard's copy of ups-1's profile names a register the device does not have.
    let h = Harness::start(fast_options(), |endpoints| {
        let ups1 = endpoints
            .iter_mut()
            .flat_map(|e| e.devices.iter_mut())
            .find(|d| &*d.key.device == "ups-1")
            .unwrap();
        let mut profile: Profile = (*ups1.profile).clone();
        let ProfileTransport::Modbus(modbus) = &mut profile.transport else {
            panic!("ups is a Modbus profile");
        };
        let mut ghost = modbus
            .points
            .iter()
            .find(|p| p.name == "load_pct")
            .unwrap()
            .clone();
        ghost.name = "ghost".into();
        ghost.address = 200;
        ghost.data_type = DataType::U16;
        assert_eq!(ghost.register, RegisterKind::Holding);
        modbus.points.push(ghost);
        ups1.profile = Arc::new(profile);
    })
    .await;
    let since = Utc::now();
    assert!(
        h.wait_for(Duration::from_secs(5), |h| h
            .good("ups-1", "load_pct", since)
            >= 10)
            .await
    );
    let health = h.health("ups-1");
    assert_eq!(health.errors.exception.get(&0x02), Some(&1), "sent once");
    assert_eq!(
        health.config_problems.len(),
        1,
        "{:?}",
        health.config_problems
    );
    assert!(health.config_problems[0].contains("ghost"));
    assert!(health.config_problems[0].contains("holding 200..201"));
    let ghost = h.readings("ups-1", Some("ghost"), since);
    assert!(ghost.len() >= 5, "the point keeps reading bad, without IO");
    assert!(
        ghost
            .iter()
            .all(|r| r.quality() == &Quality::Bad(BadReason::Exception(0x02)))
    );
    assert!(health.up);
    assert!(all_points_good(&h, "ups-1", since));
    h.finish().await;
}

#[tokio::test]
async fn a_late_reply_is_never_taken_for_the_next_request() {
    let options = fast_options();
    let h = Harness::start(options, |_| {}).await;
    let values = forced(2.0);
    h.force("ups-4", &values);
    assert!(
        h.wait_for(Duration::from_secs(5), |h| h.health("ups-4").up)
            .await
    );
    let since = Utc::now();
    let connects_before = h.health.endpoint(configured(15002)).unwrap().connects;
    // Replies come 100 ms after the client gave up (timeout 250 ms).
    h.apply(Action::Delay {
        device: "ups-4".into(),
        millis: 350,
    });
    assert!(
        h.wait_for(Duration::from_secs(5), |h| h.health("ups-4").errors.timeout
            >= 3)
            .await
    );
    h.apply(Action::ClearDelay {
        device: "ups-4".into(),
    });
    let back = Utc::now();
    assert!(
        h.wait_for(Duration::from_secs(3), |h| all_points_good(
            h, "ups-4", back
        ))
        .await
    );
    // No late reply ever became a value: every good reading is the forced value.
    assert_values(&h, "ups-4", &values, since);
    let timeouts = h.readings("ups-4", None, since);
    assert!(
        timeouts
            .iter()
            .any(|r| r.quality() == &Quality::Bad(BadReason::Timeout))
    );
    let endpoint = h.health.endpoint(configured(15002)).unwrap();
    assert!(
        endpoint.drops >= 3,
        "a connection is dropped after each timeout"
    );
    assert!(endpoint.connects >= connects_before + 3, "and reopened");
    let health = h.health("ups-4");
    assert_eq!(
        health.errors.mismatch, 0,
        "no stray frame ever reached a request"
    );
    h.finish().await;
}

#[tokio::test]
async fn a_dropped_connection_is_reopened() {
    let h = Harness::start(fast_options(), |_| {}).await;
    let values = forced(3.0);
    h.force("ups-4", &values);
    assert!(
        h.wait_for(Duration::from_secs(5), |h| h.health("ups-4").up)
            .await
    );
    let before = h.health.endpoint(configured(15002)).unwrap().connects;
    h.apply(Action::DropConnection {
        device: "ups-4".into(),
    });
    let since = Utc::now();
    assert!(
        h.wait_for(Duration::from_secs(3), |h| {
            h.health.endpoint(configured(15002)).unwrap().connects > before
                && all_points_good(h, "ups-4", since)
        })
        .await
    );
    assert_values(&h, "ups-4", &values, since);
    // The closed connection is noticed by the next request, which is retried at once
    // on a new connection: no bad reading.
    let bad: Vec<Reading> = h
        .readings("ups-4", None, since)
        .into_iter()
        .filter(|r| !r.quality().is_good())
        .collect();
    assert!(bad.is_empty(), "{bad:?}");
    h.finish().await;
}

#[tokio::test]
async fn an_unreachable_endpoint_is_retried_with_backoff() {
    // A port nobody listens on: connections are refused.
    let dead = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let h = Harness::start(fast_options(), |endpoints| {
        let endpoint = endpoints
            .iter_mut()
            .find(|e| e.configured == configured(15002))
            .unwrap();
        endpoint.address = dead;
    })
    .await;
    let since = Utc::now();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let elapsed = started.elapsed();
    let endpoint = h.health.endpoint(configured(15002)).unwrap();
    // Backoff 100, 200, 400, 400 ... ms (jitter -20 %): about 5 attempts in 1.5 s, where
    // one per scan would be ~60.
    let most = 2 + (elapsed.as_millis() / 80) as u64 / 2;
    assert!(
        endpoint.connect_failures >= 2 && endpoint.connect_failures <= most.min(12),
        "{} attempts in {elapsed:?}",
        endpoint.connect_failures
    );
    assert_eq!(endpoint.connects, 0);
    let health = h.health("ups-4");
    assert!(!health.up);
    let readings = h.readings("ups-4", Some("output_source"), since);
    assert!(readings.len() >= 10, "due scans still report, without IO");
    assert!(
        readings
            .iter()
            .all(|r| r.quality() == &Quality::Bad(BadReason::ConnectionLost))
    );
    // The other endpoints are not affected.
    assert!(h.good("ups-1", "output_source", since) >= 10);
    h.finish().await;
}

#[tokio::test]
async fn damaged_frames_are_rejected_counted_and_never_become_values() {
    let h = Harness::start(fast_options(), |_| {}).await;
    let values = forced(4.0);
    h.force("ups-4", &values);
    assert!(
        h.wait_for(Duration::from_secs(5), |h| h.health("ups-4").up)
            .await
    );
    let since = Utc::now();
    let kinds = [
        (WireCorruption::TransactionId, true),
        (WireCorruption::Unit, true),
        (WireCorruption::FunctionCode, true),
        (WireCorruption::ProtocolId, false),
        (WireCorruption::ByteCount, false),
        (WireCorruption::Length, false),
    ];
    let (mut mismatch, mut malformed) = (0, 0);
    for (kind, is_mismatch) in kinds {
        if is_mismatch {
            mismatch += 1;
        } else {
            malformed += 1;
        }
        h.apply(Action::Corrupt {
            device: "ups-4".into(),
            frame: kind,
            times: Some(1),
        });
        assert!(
            h.wait_for(Duration::from_secs(3), |h| {
                let errors = h.health("ups-4").errors;
                errors.mismatch == mismatch && errors.malformed == malformed
            })
            .await,
            "{kind:?}: {:?}",
            h.health("ups-4").errors
        );
    }
    let endpoint = h.health.endpoint(configured(15002)).unwrap();
    assert!(
        endpoint.drops >= 6,
        "each damaged frame closes its connection"
    );
    let after = Utc::now();
    assert!(
        h.wait_for(Duration::from_secs(3), |h| all_points_good(
            h, "ups-4", after
        ))
        .await
    );
    // One damaged frame is retried on a new connection: values stay correct and no
    // point read bad.
    assert_values(&h, "ups-4", &values, since);
    let bad: Vec<Reading> = h
        .readings("ups-4", None, since)
        .into_iter()
        .filter(|r| !r.quality().is_good())
        .collect();
    assert!(bad.is_empty(), "{bad:?}");
    h.finish().await;
}

#[tokio::test]
async fn scan_once_reads_every_point_of_an_endpoint_once() {
    let h = Harness::start(fast_options(), |endpoints| endpoints.clear()).await;
    let values = forced(5.0);
    h.force("ups-2", &values);
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    let config = dcguard::config::load(dir.path()).unwrap();
    let mut spec = poller::endpoints(&config)
        .into_iter()
        .find(|e| e.configured == configured(15001))
        .unwrap();
    spec.address = h.sim.endpoint(spec.configured).unwrap();
    let health = HealthRegistry::new();
    let readings = poller::scan_once(spec, fast_options(), &health).await;
    // Three units x seven points, each once, all good.
    assert_eq!(readings.len(), 21, "{readings:?}");
    assert!(readings.iter().all(|r| r.quality().is_good()));
    let ups2: Vec<&Reading> = readings
        .iter()
        .filter(|r| &*r.point().device == "ups-2")
        .collect();
    assert_eq!(ups2.len(), 7);
    for reading in ups2 {
        let (_, _, expected) = values
            .iter()
            .find(|(p, _, _)| *p == &*reading.point().point)
            .unwrap();
        match (reading.value().unwrap(), expected) {
            (Value::Number(a), Value::Number(b)) => assert!((a - b).abs() < 1e-6),
            (a, b) => assert_eq!(a, b),
        }
    }
    let endpoint = h.sim.function_codes().counts(configured(15001));
    // Per unit: fast 2 requests (input, coil), normal 3, slow 1 = 6; three units.
    assert_eq!(endpoint.values().sum::<u64>(), 18, "{endpoint:?}");
    assert!(health.device("dc", "ups-3").unwrap().up);
    h.finish().await;
}

#[tokio::test]
async fn garbage_on_the_wire_is_an_error_never_a_value_or_a_panic() {
    use dcguard::sources::modbus::client::{ClientOptions, ReadOnlyClient};
    use rand::{Rng, SeedableRng};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // A fake device: reads one request, answers with random bytes (half of them behind
    // a plausible MBAP header with the right transaction id), then closes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let device = tokio::spawn(async move {
        let mut rng = rand::rngs::StdRng::seed_from_u64(324);
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut request = [0u8; 12];
            if stream.read_exact(&mut request).await.is_err() {
                continue;
            }
            let length = rng.random_range(0..300usize);
            let mut reply: Vec<u8> = (0..length).map(|_| rng.random()).collect();
            if rng.random_bool(0.5) && reply.len() >= 8 {
                reply[..2].copy_from_slice(&request[..2]);
                reply[2..4].copy_from_slice(&[0, 0]);
                let claimed = rng.random_range(0..=(reply.len() as u16 - 4));
                reply[4..6].copy_from_slice(&claimed.to_be_bytes());
                reply[6] = request[6];
                reply[7] = request[7] | if rng.random_bool(0.2) { 0x80 } else { 0 };
            }
            let _ = stream.write_all(&reply).await;
        }
    });
    let mut client = ReadOnlyClient::new(
        address,
        ClientOptions {
            request_timeout: Duration::from_millis(500),
            ..ClientOptions::default()
        },
    );
    let mut accepted = 0;
    for i in 0..300u16 {
        match client.read_holding_registers(1, i, 2).await {
            Ok(words) => {
                assert_eq!(words.len(), 2);
                accepted += 1;
            }
            Err(error) => assert!(
                error.dropped_connection() || matches!(error, ClientError::Exception(_)),
                "{error}"
            ),
        }
        // Each answer ends its connection; the next read opens a new one.
        client.disconnect();
    }
    assert!(
        accepted <= 3,
        "random bytes are almost never a valid answer"
    );
    assert!(client.counters().connects >= 300);
    device.abort();
}

/// The fragile-device keys of `[[modbus_endpoints]]`, loaded from the site file: every
/// scan opens and closes its own connection, and requests are at least the pause apart.
#[tokio::test]
async fn fragile_devices_get_pauses_and_a_connection_per_scan() {
    let pause = Duration::from_millis(30);
    let h = Harness::start_with(
        fast_options(),
        r#"
[[modbus_endpoints]]
endpoint = "127.0.0.1:15002"
pause_between_requests_ms = 30
close_after_scan = true
"#,
        |endpoints| {
            endpoints.retain(|e| e.configured == configured(15002));
            assert_eq!(endpoints[0].settings.pause_between_requests, pause);
            assert!(endpoints[0].settings.close_after_scan);
        },
    )
    .await;
    let since = Utc::now();
    assert!(
        h.wait_for(Duration::from_secs(5), |h| h.health("ups-4").scans >= 8)
            .await
    );
    let health = h.health("ups-4");
    let endpoint = h.health.endpoint(configured(15002)).unwrap();
    // Every scan opened its own connection and closed it.
    assert!(
        endpoint.connects >= health.scans.saturating_sub(1),
        "{endpoint:?} for {} scans",
        health.scans
    );
    assert!(!endpoint.connected);
    // Requests (distinct sampling instants) are at least one pause apart, within a scan
    // and across scans.
    let mut sent: Vec<DateTime<Utc>> = h
        .readings("ups-4", None, since)
        .iter()
        .map(|r| r.sampled_at())
        .collect();
    sent.sort();
    sent.dedup();
    assert!(sent.len() >= 10);
    let min_gap = sent
        .windows(2)
        .map(|w| (w[1] - w[0]).to_std().unwrap())
        .min()
        .unwrap();
    assert!(min_gap >= pause - Duration::from_millis(1), "{min_gap:?}");
    assert!(all_points_good(&h, "ups-4", since));
    assert_eq!(health.errors.total(), 0);
    h.finish().await;
}

#[tokio::test]
async fn one_scan_of_the_shipped_inventory_reads_every_point_good() {
    // Every shipped profile, decoded by dcguard, encoded by the stubs' own encoder.
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config"));
    let config = dcguard::config::load(dir).unwrap();
    let sim = Sim::start(SimOptions::new(dir).ephemeral()).await.unwrap();
    let health = HealthRegistry::new();
    let mut readings = Vec::new();
    let endpoints = poller::endpoints(&config);
    let mut expected = 0;
    for mut spec in endpoints {
        spec.address = sim.endpoint(spec.configured).unwrap();
        expected += spec
            .devices
            .iter()
            .map(|d| d.profile.point_count())
            .sum::<usize>();
        readings.extend(poller::scan_once(spec, fast_options(), &health).await);
    }
    let bad: Vec<String> = readings
        .iter()
        .filter(|r| !r.quality().is_good())
        .map(|r| format!("{}: {:?}", r.point(), r.quality()))
        .collect();
    assert!(bad.is_empty(), "{} bad: {bad:#?}", bad.len());
    // Every point of every Modbus device of the three sites, exactly once.
    assert_eq!(readings.len(), expected);
    let distinct: BTreeSet<String> = readings.iter().map(|r| r.point().to_string()).collect();
    assert_eq!(distinct.len(), expected);
    assert!(health.devices().values().all(|h| h.up));
    let codes = sim.function_codes().codes_seen();
    assert!(codes.iter().all(|c| (1..=4).contains(c)), "{codes:?}");
    sim.shutdown().await;
}

/// What [`WireWatch`] saw.
#[derive(Debug, Clone, Default)]
struct WireStats {
    /// Connections open now, and the most at once.
    open: u32,
    peak_open: u32,
    /// Units addressed on each connection accepted, in accept order.
    units: Vec<BTreeSet<u8>>,
    /// The most requests outstanding (sent, not yet answered) on any one connection.
    peak_outstanding: u32,
    /// Requests seen.
    requests: u64,
}

/// A TCP proxy in front of one stub endpoint that follows the MBAP framing both ways:
/// connections open at once and requests outstanding per connection, as the wire saw
/// them. A response frame is counted before its bytes are passed on, so a client that
/// waits for each answer is never seen with two requests outstanding.
struct WireWatch {
    address: SocketAddr,
    stats: Arc<Mutex<WireStats>>,
    task: JoinHandle<()>,
}

impl WireWatch {
    /// Listens on a free loopback port (call inside the runtime).
    fn start(upstream: SocketAddr) -> WireWatch {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let stats = Arc::new(Mutex::new(WireStats::default()));
        let shared = stats.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    continue;
                };
                let index = {
                    let mut s = shared.lock().unwrap();
                    s.open += 1;
                    s.peak_open = s.peak_open.max(s.open);
                    s.units.push(BTreeSet::new());
                    s.units.len() - 1
                };
                tokio::spawn(Self::pipe(client, server, index, shared.clone()));
            }
        });
        WireWatch {
            address,
            stats,
            task,
        }
    }

    async fn pipe(
        client: tokio::net::TcpStream,
        server: tokio::net::TcpStream,
        index: usize,
        stats: Arc<Mutex<WireStats>>,
    ) {
        use std::sync::atomic::{AtomicI64, Ordering};
        let outstanding = Arc::new(AtomicI64::new(0));
        let (mut client_rx, mut client_tx) = client.into_split();
        let (mut server_rx, mut server_tx) = server.into_split();
        let up = {
            let (stats, outstanding) = (stats.clone(), outstanding.clone());
            async move {
                let mut frames = Frames::default();
                let mut buf = [0u8; 1024];
                while let Ok(n) = client_rx.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    for unit in frames.feed(&buf[..n]) {
                        let now = outstanding.fetch_add(1, Ordering::SeqCst) + 1;
                        let mut s = stats.lock().unwrap();
                        s.requests += 1;
                        s.peak_outstanding = s.peak_outstanding.max(now as u32);
                        s.units[index].insert(unit);
                    }
                    if server_tx.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        };
        let down = async move {
            let mut frames = Frames::default();
            let mut buf = [0u8; 1024];
            while let Ok(n) = server_rx.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                for _ in frames.feed(&buf[..n]) {
                    outstanding.fetch_sub(1, Ordering::SeqCst);
                }
                if client_tx.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        };
        // Either side closing ends the connection (the halves drop, closing both).
        tokio::select! {
            () = up => {}
            () = down => {}
        }
        stats.lock().unwrap().open -= 1;
    }

    fn stats(&self) -> WireStats {
        self.stats.lock().unwrap().clone()
    }
}

impl Drop for WireWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// MBAP frames in a byte stream: yields each complete frame's unit id.
#[derive(Default)]
struct Frames {
    pending: Vec<u8>,
}

impl Frames {
    fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.pending.extend_from_slice(bytes);
        let mut units = Vec::new();
        while self.pending.len() >= 7 {
            let length = usize::from(u16::from_be_bytes([self.pending[4], self.pending[5]]));
            let total = 6 + length;
            if self.pending.len() < total {
                break;
            }
            units.push(self.pending[6]);
            self.pending.drain(..total);
        }
        units
    }
}

/// Counts what reached the wire of the three-unit gateway with `site_extra` in the site
/// file, after every unit read good 10 times.
async fn watch_gateway(site_extra: &str) -> (Harness, WireWatch) {
    let mut watch = None;
    let h = Harness::start_with(fast_options(), site_extra, |endpoints| {
        endpoints.retain(|e| e.configured == configured(15001));
        let gateway = &mut endpoints[0];
        let proxy = WireWatch::start(gateway.address);
        gateway.address = proxy.address;
        watch = Some(proxy);
    })
    .await;
    let since = Utc::now();
    assert!(
        h.wait_for(Duration::from_secs(10), |h| ["ups-1", "ups-2", "ups-3"]
            .iter()
            .all(|d| h.good(d, "output_source", since) >= 10))
            .await,
        "every unit reads good"
    );
    (h, watch.expect("the gateway is configured"))
}

/// Default: one connection per endpoint, carrying the three units, one request at a time.
#[tokio::test]
async fn one_connection_and_one_outstanding_request_per_endpoint_by_default() {
    let (h, watch) = watch_gateway("").await;
    let wire = watch.stats();
    assert_eq!(wire.peak_open, 1, "{wire:?}");
    assert_eq!(wire.units, vec![BTreeSet::from([1, 2, 3])], "{wire:?}");
    assert_eq!(wire.peak_outstanding, 1, "{wire:?}");
    assert!(wire.requests >= 30);
    let endpoint = h.health.endpoint(configured(15001)).unwrap();
    assert_eq!((endpoint.open_connections, endpoint.connects), (1, 1));
    h.finish().await;
}

/// `max_connections = 2` (from the site file): two connections, the units spread over
/// them (each unit on one connection only), still one request outstanding on each.
#[tokio::test]
async fn max_connections_spreads_units_and_keeps_one_request_per_connection() {
    let (h, watch) = watch_gateway(
        r#"
[[modbus_endpoints]]
endpoint = "127.0.0.1:15001"
max_connections = 2
"#,
    )
    .await;
    let wire = watch.stats();
    assert_eq!(wire.peak_open, 2, "{wire:?}");
    assert_eq!(wire.units.len(), 2, "no reconnects: {wire:?}");
    assert!(wire.units.iter().all(|u| !u.is_empty()), "{wire:?}");
    assert!(wire.units[0].is_disjoint(&wire.units[1]), "{wire:?}");
    let all: BTreeSet<u8> = wire.units.iter().flatten().copied().collect();
    assert_eq!(all, BTreeSet::from([1, 2, 3]));
    assert_eq!(wire.peak_outstanding, 1, "{wire:?}");
    let endpoint = h.health.endpoint(configured(15001)).unwrap();
    assert_eq!((endpoint.open_connections, endpoint.connects), (2, 2));
    assert!(endpoint.connected);
    h.finish().await;
}
