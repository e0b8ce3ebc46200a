//! The Modbus poller at scale against the firmware stubs over real TCP: 200 devices, 10 of
//! them dead, and the live ones keep their schedule while each dead one costs at most one
//! timeout (or one refused connect) per backoff slot.
//!
//! The site (written to a temporary directory, served by the stubs on free ports):
//!
//! * 19 gateways (`127.0.0.1:16001..=16019`), each with 5 racks of two rack meters: 190
//!   units, 10 per gateway. Four of them (one on each of the first four gateways) are
//!   silenced in the stubs' world: they never answer, their gateway siblings must not
//!   suffer.
//! * 5 small endpoints (`127.0.0.1:16101..=16105`), one rack of two meters each: two
//!   refuse connections (a port nobody listens on), one accepts connections and never
//!   answers (a hung device), two are alive.
//!
//! So 200 devices: 190 live, 10 dead (4 silent units, 4 behind refused endpoints, 2 behind
//! the hung one). Every device is polled every 500 ms. Counts only, with wide margins:
//! the test waits (with a deadline) until every live device has read good a number of
//! times, then checks the dead devices' counters against the most attempts the backoff
//! allows in the time that took. Nothing asserts speed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dcguard::config::model::PollIntervals;
use dcguard::model::{BadReason, Quality};
use dcguard::sources::health::HealthRegistry;
use dcguard::sources::modbus::backoff::BackoffPolicy;
use dcguard::sources::modbus::poller::{self, PollerOptions};
use firmware_stubs::scenario::Action;
use firmware_stubs::sim::{Sim, SimOptions};
use tokio::io::AsyncReadExt as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/config/minimal");

const SITE_HEAD: &str = r#"
[site]
id = "dc"
name = "DC"
building = "Test building"
time_zone = "Asia/Jakarta"
rack_positions = 100
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

[[racks]]
id = "R001..R100"
room = "dh1"
class = "server"
"#;

const GATEWAYS: u16 = 19;
const RACKS_PER_GATEWAY: u16 = 5;
const SMALL_ENDPOINTS: u16 = 5;
const INTERVAL: Duration = Duration::from_millis(500);
/// Good readings every live device must reach after the warm-up.
const POLLS: u64 = 8;

fn rack(n: u16) -> String {
    format!("R{n:03}")
}

fn gateway(g: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 16001 + g))
}

fn small(s: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 16101 + s))
}

/// The site file: 19 gateways of 5 racks, then 5 endpoints of one rack.
fn site() -> String {
    let mut site = SITE_HEAD.to_owned();
    for g in 0..GATEWAYS {
        let first = 1 + g * RACKS_PER_GATEWAY;
        let last = first + RACKS_PER_GATEWAY - 1;
        site.push_str(&format!(
            "\n[[rack_meters]]\nracks = \"{}..{}\"\nprofile = \"rack-meter\"\nendpoint = \"{}\"\nunit_start = 1\n",
            rack(first),
            rack(last),
            gateway(g)
        ));
    }
    for s in 0..SMALL_ENDPOINTS {
        let r = 1 + GATEWAYS * RACKS_PER_GATEWAY + s;
        site.push_str(&format!(
            "\n[[rack_meters]]\nracks = \"{}\"\nprofile = \"rack-meter\"\nendpoint = \"{}\"\nunit_start = 1\n",
            rack(r),
            small(s)
        ));
    }
    site
}

fn write_config(dir: &Path) {
    std::fs::create_dir_all(dir.join("profiles")).unwrap();
    std::fs::create_dir_all(dir.join("sites")).unwrap();
    let fixture = Path::new(FIXTURE);
    std::fs::copy(fixture.join("dcguard.toml"), dir.join("dcguard.toml")).unwrap();
    std::fs::copy(
        fixture.join("profiles/rack-meter.toml"),
        dir.join("profiles/rack-meter.toml"),
    )
    .unwrap();
    std::fs::write(dir.join("sites/dc.toml"), site()).unwrap();
}

/// Good readings and bad ones by reason, per device.
#[derive(Debug, Clone, Default)]
struct Tally {
    good: u64,
    timeout: u64,
    connection_lost: u64,
    other_bad: u64,
}

type Tallies = Arc<Mutex<BTreeMap<String, Tally>>>;

/// A device that accepts connections and never answers (hung firmware): reads and
/// discards every request.
fn hung_device() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let address = listener.local_addr().unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 512];
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    (address, task)
}

/// The most attempts that fit in `window` when each costs `cost` and is followed by the
/// shortest wait `policy` allows (jitter taken off), plus one already under way when
/// the window opened.
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

/// Waits (at most `limit`) until `done` holds for the tallies; returns whether it did.
async fn wait_until(
    tallies: &Tallies,
    limit: Duration,
    done: impl Fn(&BTreeMap<String, Tally>) -> bool,
) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done(&tallies.lock().unwrap()) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_devices_keep_their_schedule_while_ten_are_dead() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    let config = match dcguard::config::load(dir.path()) {
        Ok(config) => config,
        Err(errors) => panic!("test site invalid: {errors}"),
    };
    let sim = Sim::start(SimOptions::new(dir.path()).ephemeral())
        .await
        .unwrap();

    let refused: Vec<SocketAddr> = (0..2)
        .map(|_| {
            TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
        })
        .collect();
    let (hung, hung_task) = hung_device();

    let mut endpoints = poller::endpoints(&config);
    assert_eq!(endpoints.len(), usize::from(GATEWAYS + SMALL_ENDPOINTS));
    for endpoint in &mut endpoints {
        endpoint.address = sim.endpoint(endpoint.configured).unwrap();
        if endpoint.configured == small(0) {
            endpoint.address = refused[0];
        } else if endpoint.configured == small(1) {
            endpoint.address = refused[1];
        } else if endpoint.configured == small(2) {
            endpoint.address = hung;
        }
        for device in &mut endpoint.devices {
            device.poll = PollIntervals {
                fast: INTERVAL,
                normal: INTERVAL,
                slow: INTERVAL,
            };
        }
    }
    let all: BTreeSet<String> = endpoints
        .iter()
        .flat_map(|e| e.devices.iter().map(|d| d.key.device.to_string()))
        .collect();
    assert_eq!(all.len(), 200);

    // One unit of each of the first four gateways never answers.
    let silent: Vec<String> = (0..4)
        .map(|g| format!("{}-b", rack(1 + g * RACKS_PER_GATEWAY + 2)))
        .collect();
    {
        let world = sim.world("dc").unwrap();
        let mut world = world.lock().unwrap();
        for device in &silent {
            world
                .apply(&Action::Silence {
                    device: device.clone(),
                })
                .unwrap();
        }
    }
    let behind = |s: u16| {
        let r = rack(1 + GATEWAYS * RACKS_PER_GATEWAY + s);
        [format!("{r}-a"), format!("{r}-b")]
    };
    let refused_devices: Vec<String> = (0..2).flat_map(behind).collect();
    let hung_devices: Vec<String> = behind(2).to_vec();
    let dead: BTreeSet<String> = silent
        .iter()
        .chain(&refused_devices)
        .chain(&hung_devices)
        .cloned()
        .collect();
    assert_eq!(dead.len(), 10);
    let live: Vec<String> = all.difference(&dead).cloned().collect();
    assert_eq!(live.len(), 190);
    // The siblings of the silent units, on the same connections.
    let siblings: Vec<String> = (0..4)
        .flat_map(|g| {
            (0..RACKS_PER_GATEWAY).flat_map(move |r| {
                let id = rack(1 + g * RACKS_PER_GATEWAY + r);
                [format!("{id}-a"), format!("{id}-b")]
            })
        })
        .filter(|d| !dead.contains(d))
        .collect();
    assert_eq!(siblings.len(), 36);

    // Production-shaped timing, shortened: 400 ms per request, backoff 1 s doubling
    // to 4 s with 20 % jitter.
    let mut options = PollerOptions::default();
    options.client.request_timeout = Duration::from_millis(400);
    options.client.connect_timeout = Duration::from_secs(1);
    let backoff = BackoffPolicy {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(4),
        jitter: 0.2,
    };
    options.reconnect = backoff;
    options.unit_backoff = backoff;
    let timeout = options.client.request_timeout;

    let health = HealthRegistry::new();
    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel(4096);
    let tasks = poller::spawn(endpoints, &options, tx, &health, &cancel);
    let tallies: Tallies = Arc::default();
    let sink = tallies.clone();
    let collector = tokio::spawn(async move {
        while let Some(reading) = rx.recv().await {
            let mut tallies = sink.lock().unwrap();
            let tally = tallies
                .entry(reading.point().device.to_string())
                .or_default();
            match reading.quality() {
                q if q.is_good() => tally.good += 1,
                Quality::Bad(BadReason::Timeout) => tally.timeout += 1,
                Quality::Bad(BadReason::ConnectionLost) => tally.connection_lost += 1,
                _ => tally.other_bad += 1,
            }
        }
    });
    let snapshot = || tallies.lock().unwrap().clone();
    let good = |t: &BTreeMap<String, Tally>, d: &str| t.get(d).map_or(0, |t| t.good);

    // Warm-up: every live device answered once.
    assert!(
        wait_until(&tallies, Duration::from_secs(60), |t| live
            .iter()
            .all(|d| good(t, d) >= 1))
        .await,
        "every live device reads good: {:?}",
        live.iter()
            .filter(|d| good(&snapshot(), d) == 0)
            .collect::<Vec<_>>()
    );

    // The window: until every live device has read good POLLS more times.
    let before = snapshot();
    let counters = |devices: &[String]| -> Vec<(u64, u64)> {
        devices
            .iter()
            .map(|d| {
                let h = health.device("dc", d).unwrap();
                (h.errors.timeout, h.requests)
            })
            .collect()
    };
    let refused_endpoints = [small(0), small(1)];
    let connect_failures = || -> Vec<u64> {
        refused_endpoints
            .iter()
            .map(|e| health.endpoint(*e).unwrap().connect_failures)
            .collect()
    };
    let timeouts_before = counters(&silent);
    let hung_before = counters(&hung_devices);
    let connects_before = connect_failures();
    let started = Instant::now();
    let kept_schedule = wait_until(&tallies, Duration::from_secs(120), |t| {
        live.iter().all(|d| good(t, d) >= good(&before, d) + POLLS)
    })
    .await;
    let window = started.elapsed();
    let timeouts_after = counters(&silent);
    let hung_after = counters(&hung_devices);
    let connects_after = connect_failures();
    let after = snapshot();
    let polled = |d: &String| good(&after, d) - good(&before, d);
    assert!(
        kept_schedule,
        "every live device read good {POLLS} times in {window:?}; behind: {:?}",
        live.iter()
            .filter(|d| polled(d) < POLLS)
            .map(|d| (d, polled(d)))
            .collect::<Vec<_>>()
    );

    // Each dead unit cost at most one timeout per backoff slot; one per scan would be
    // about window / 500 ms.
    let most = max_attempts(window, timeout, &backoff);
    for (i, device) in silent.iter().chain(&hung_devices).enumerate() {
        let ((t0, r0), (t1, r1)) = if i < silent.len() {
            (timeouts_before[i], timeouts_after[i])
        } else {
            (hung_before[i - silent.len()], hung_after[i - silent.len()])
        };
        assert!(
            t1 - t0 <= most && r1 - r0 <= most,
            "{device}: {} timeouts, {} requests in {window:?}, at most {most} in backoff slots",
            t1 - t0,
            r1 - r0
        );
        assert!(t1 >= 1, "{device} was tried");
        let h = health.device("dc", device).unwrap();
        assert!(!h.up, "{device} is down");
        let tally = after.get(device).cloned().unwrap_or_default();
        assert_eq!(tally.good, 0, "{device}: {tally:?}");
        assert!(
            tally.timeout >= 1 && tally.other_bad == 0,
            "{device} reads bad (timeout): {tally:?}"
        );
    }
    // Each refused endpoint cost at most one connect attempt per backoff slot.
    let most_connects = max_attempts(window, Duration::ZERO, &backoff);
    for (i, endpoint) in refused_endpoints.iter().enumerate() {
        let tried = connects_after[i] - connects_before[i];
        assert!(
            tried <= most_connects && connects_after[i] >= 1,
            "{endpoint}: {tried} connects in {window:?}, at most {most_connects}"
        );
        assert_eq!(health.endpoint(*endpoint).unwrap().connects, 0);
    }
    for device in &refused_devices {
        let tally = after.get(device).cloned().unwrap_or_default();
        assert!(
            tally.good == 0 && tally.connection_lost >= 1 && tally.other_bad == 0,
            "{device} reads bad (connection lost): {tally:?}"
        );
        assert!(!health.device("dc", device).unwrap().up);
    }

    // The silent units' siblings (same connection) kept up with the devices of the
    // healthy gateways: at least half the median's polls.
    let mut healthy: Vec<u64> = live
        .iter()
        .filter(|d| !siblings.contains(d))
        .map(polled)
        .collect();
    healthy.sort_unstable();
    let median = healthy[healthy.len() / 2];
    for sibling in &siblings {
        assert!(
            polled(sibling) * 2 >= median,
            "{sibling}: {} polls, median of healthy gateways {median}",
            polled(sibling)
        );
        assert!(health.device("dc", sibling).unwrap().up);
    }

    cancel.cancel();
    for task in tasks {
        task.await.unwrap();
    }
    collector.await.unwrap();
    hung_task.abort();
    let codes = sim.function_codes().codes_seen();
    assert!(
        !codes.is_empty() && codes.iter().all(|c| (1..=4).contains(c)),
        "only read function codes reach a device, saw {codes:?}"
    );
    sim.shutdown().await;
}
