//! The MQTT source against a real Mosquitto started by the test on a free loopback port:
//! readings from the shipped profiles, rejected payloads, staleness, and the issue's test
//! (0 lost and 0 duplicate readings across a broker restart and a source restart).

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use dcguard::config::{self, Config};
use dcguard::model::{BadReason, PointId, Quality, Reading, Value};
use dcguard::sources::mqtt::{self, BrokerPlan, MqttCounters, MqttSource, SourceOptions};
use dcguard::sources::stale::StaleTracker;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const MOSQUITTO: &str = "/usr/sbin/mosquitto";
const MOSQUITTO_PUB: &str = "/usr/bin/mosquitto_pub";
const TH_A: &str = "dcguard/dc/dh1/th/th-a";
const LEAK: &str = "dcguard/dc/dh1/leak/leak-dh1-1";
/// Hang guard for every wait (not a timing assertion).
const HANG: Duration = Duration::from_secs(90);

/// A Mosquitto process with persistence in `dir`, killed on drop (also when a test fails).
struct Broker {
    child: Child,
}

impl Broker {
    async fn start(dir: &Path, port: u16) -> Broker {
        Broker::start_with(dir, port, "allow_anonymous true\n").await
    }

    /// A broker whose configuration ends with `extra` lines (they override earlier ones).
    async fn start_with(dir: &Path, port: u16, extra: &str) -> Broker {
        for tool in [MOSQUITTO, MOSQUITTO_PUB] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: run scripts/test.sh, which installs the test peers"
            );
        }
        let conf: PathBuf = dir.join("mosquitto.conf");
        // `user root`: started as root, Mosquitto would otherwise switch to the user
        // `mosquitto`, which cannot write its persistence file into our temporary
        // directory (as another user the setting has no effect).
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nuser root\npersistence true\n\
                 persistence_location {}/\nlog_dest file {}\nset_tcp_nodelay true\n{extra}",
                dir.display(),
                dir.join("mosquitto.log").display()
            ),
        )
        .unwrap();
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let broker = Broker { child };
        // Readiness wait: up to 10 s for the listener.
        for _ in 0..200 {
            if TcpStream::connect(addr).await.is_ok() {
                return broker;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("mosquitto did not listen on {addr}");
    }

    /// SIGTERM, so Mosquitto writes its persistence file, then waits for the exit.
    fn stop(mut self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success());
        let exit = self.child.wait().expect("wait for mosquitto");
        assert!(exit.success(), "mosquitto exit: {exit:?}");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn shipped() -> Config {
    config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config")).expect("shipped config")
}

/// The shipped `sim` broker plan, pointed at the test's broker with a test client id.
fn plan(config: &Config, port: u16, client_id: &str) -> BrokerPlan {
    let mut plans = mqtt::plans(config);
    assert_eq!(plans.len(), 1, "the shipped config has one broker");
    let mut plan = plans.remove(0);
    plan.broker.port = port;
    plan.broker.client_id = client_id.to_owned();
    plan
}

fn options() -> SourceOptions {
    SourceOptions {
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_millis(500),
        shutdown_drain: Duration::from_secs(3),
        ..SourceOptions::default()
    }
}

fn start(plan: BrokerPlan, tx: mpsc::Sender<Reading>, cancel: CancellationToken) -> MqttSource {
    mqtt::spawn(plan, options(), tx, cancel).expect("source starts")
}

/// Waits until the source's counters satisfy `done`.
async fn until(source: &MqttSource, what: &str, done: impl Fn(&MqttCounters) -> bool) {
    let stats = source.stats();
    let guard = tokio::time::Instant::now() + HANG;
    while !done(&stats.snapshot()) {
        assert!(
            tokio::time::Instant::now() < guard,
            "{what}: never happened; counters {:?}",
            stats.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Publishes one QoS 1 message; true once the broker acknowledged it.
async fn publish(port: u16, topic: &str, body: &str) -> bool {
    tokio::process::Command::new(MOSQUITTO_PUB)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            topic,
        ])
        .arg("-m")
        .arg(body)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

async fn must_publish(port: u16, topic: &str, body: &str) {
    assert!(publish(port, topic, body).await, "publish to {topic}");
}

/// Receives readings until `done` holds for what was received.
async fn collect(
    rx: &mut mpsc::Receiver<Reading>,
    seen: &mut Vec<Reading>,
    done: impl Fn(&[Reading]) -> bool,
) {
    let guard = tokio::time::sleep(HANG);
    tokio::pin!(guard);
    while !done(seen) {
        tokio::select! {
            _ = &mut guard => panic!("readings did not arrive; got {seen:#?}"),
            r = rx.recv() => seen.push(r.expect("source alive")),
        }
    }
}

fn of<'a>(seen: &'a [Reading], device: &str, point: &str) -> Vec<&'a Reading> {
    seen.iter()
        .filter(|r| &*r.point().device == device && &*r.point().point == point)
        .collect()
}

fn ts(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_rejections_and_staleness_against_mosquitto() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let broker = Broker::start(dir.path(), port).await;
    let config = shipped();
    let (tx, mut rx) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    let source = start(plan(&config, port, "dcguard-test-a"), tx, cancel.clone());
    until(&source, "subscribed", |c| c.subscribe_acks >= 1).await;

    // The stale tracker expects th-a and th-b from now on (profile interval 10 s, x3).
    let t0 = Utc::now();
    let interval = Duration::from_secs(10);
    let mut stale = StaleTracker::new(config.daemon.stale_after_intervals);
    for device in ["th-a", "th-b"] {
        for point in ["temperature", "humidity", "battery"] {
            stale.expect(PointId::new("dc", device, point), interval, t0);
        }
    }

    // Good readings, values and the payload's ts as the sampling instant.
    let sampled = t0 + chrono::Duration::seconds(20);
    must_publish(
        port,
        TH_A,
        &format!(
            r#"{{"seq":1,"temperature_c":23.4,"humidity_pct":48.2,"battery_pct":87,"ts":"{}"}}"#,
            ts(sampled)
        ),
    )
    .await;
    must_publish(port, LEAK, r#"{"seq":1,"leak":true,"battery_pct":90}"#).await;
    let mut seen = Vec::new();
    collect(&mut rx, &mut seen, |s| s.len() >= 5).await;
    let temperature = of(&seen, "th-a", "temperature");
    assert_eq!(temperature.len(), 1);
    assert_eq!(temperature[0].value(), Some(&Value::Number(23.4)));
    assert_eq!(temperature[0].sampled_at(), sampled.trunc_subsecs(3));
    assert_eq!(
        of(&seen, "th-a", "humidity")[0].value(),
        Some(&Value::Number(48.2))
    );
    assert_eq!(
        of(&seen, "th-a", "battery")[0].value(),
        Some(&Value::Number(87.0))
    );
    let leak = of(&seen, "leak-dh1-1", "leak");
    assert_eq!(leak[0].value(), Some(&Value::Bool(true)));
    assert!(leak[0].quality().is_good());
    assert!(leak[0].sampled_at() >= t0, "no ts: the receive time");
    for r in &seen {
        stale.observe(r);
    }

    // Rejections: malformed JSON, oversize, a wrong type and an implausible value, an
    // unknown topic; then a good marker message (per-topic order is kept by the broker).
    seen.clear();
    must_publish(port, TH_A, "{\"seq\":2,\"temperature_c\":").await;
    // 1 MiB: far over the profile's 4096 bytes (and over a command-line argument).
    let oversize = dir.path().join("oversize.json");
    std::fs::write(
        &oversize,
        format!(r#"{{"seq":3,"pad":"{}"}}"#, "x".repeat(1 << 20)),
    )
    .unwrap();
    let status = tokio::process::Command::new(MOSQUITTO_PUB)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            TH_A,
        ])
        .arg("-f")
        .arg(&oversize)
        .status()
        .await
        .unwrap();
    assert!(status.success());
    must_publish(
        port,
        TH_A,
        r#"{"seq":4,"temperature_c":"hot","humidity_pct":140,"battery_pct":86}"#,
    )
    .await;
    must_publish(port, "dcguard/dc/dh1/th/no-such-sensor", r#"{"seq":1}"#).await;
    must_publish(
        port,
        TH_A,
        r#"{"seq":5,"temperature_c":23.0,"humidity_pct":47,"battery_pct":86}"#,
    )
    .await;
    collect(&mut rx, &mut seen, |s| s.len() >= 12).await;
    until(&source, "unknown topic counted", |c| c.unknown_topic == 1).await;
    assert!(
        seen.iter().all(|r| &*r.point().device == "th-a"),
        "no reading for the unknown topic: {seen:#?}"
    );
    let temperature = of(&seen, "th-a", "temperature");
    let reasons: Vec<&Quality> = temperature.iter().map(|r| r.quality()).collect();
    assert!(
        matches!(reasons[0], Quality::Bad(BadReason::Decode(m)) if m.contains("not JSON")),
        "{reasons:?}"
    );
    assert!(
        matches!(reasons[1], Quality::Bad(BadReason::Decode(m)) if m.contains("exceeds the limit")),
        "{reasons:?}"
    );
    assert!(
        matches!(reasons[2], Quality::Bad(BadReason::Decode(m)) if m.contains("found a string")),
        "{reasons:?}"
    );
    assert_eq!(temperature[3].value(), Some(&Value::Number(23.0)));
    assert!(temperature[..3].iter().all(|r| r.value().is_none()));
    let humidity = of(&seen, "th-a", "humidity");
    assert_eq!(
        humidity[2].quality(),
        &Quality::Bad(BadReason::OutOfRange { value: 140.0 })
    );
    assert_eq!(humidity[2].value(), None);
    let c = source.stats().snapshot();
    assert_eq!(
        (
            c.malformed,
            c.oversize,
            c.point_errors,
            c.out_of_range,
            c.unknown_topic,
            c.duplicates
        ),
        (1, 1, 1, 1, 1, 0),
        "{c:?}"
    );
    assert!(source.is_running(), "bad input never ends the source");

    // Staleness, driven by the readings with explicit time. th-b never spoke; th-a's
    // newest good sample is seq 1's ts (t0 + 20 s) or seq 5's arrival, whichever is later.
    for r in &seen {
        stale.observe(r);
    }
    let latest = sampled.max(of(&seen, "th-a", "temperature")[3].sampled_at());
    let went_stale = stale.tick(t0 + chrono::Duration::seconds(31));
    let stale_points: Vec<String> = went_stale.iter().map(|r| r.point().to_string()).collect();
    assert_eq!(
        stale_points,
        ["dc/th-b/battery", "dc/th-b/humidity", "dc/th-b/temperature"]
    );
    assert!(went_stale.iter().all(|r| r.value().is_none()));
    assert!(stale.tick(t0 + chrono::Duration::seconds(32)).is_empty());
    // th-a stops publishing: stale 3 intervals after its last good reading, once.
    assert!(
        stale
            .tick(latest + chrono::Duration::seconds(29))
            .is_empty()
    );
    let at = latest + chrono::Duration::seconds(31);
    let th_a: Vec<String> = stale
        .tick(at)
        .iter()
        .map(|r| r.point().to_string())
        .collect();
    assert_eq!(
        th_a,
        ["dc/th-a/battery", "dc/th-a/humidity", "dc/th-a/temperature"]
    );
    assert!(stale.tick(at + chrono::Duration::seconds(60)).is_empty());

    cancel.cancel();
    source.join().await;
    drop(broker);
}

/// The sequence number the test encodes in the temperature (seq / 100 degrees).
fn seq_of(r: &Reading) -> u64 {
    match r.value() {
        Some(Value::Number(t)) => (t * 100.0).round() as u64,
        other => panic!("unexpected reading {other:?}"),
    }
}

fn body(seq: u64) -> String {
    format!(
        r#"{{"seq":{seq},"temperature_c":{},"humidity_pct":50,"battery_pct":90}}"#,
        seq as f64 / 100.0
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_reading_lost_or_duplicated_across_broker_and_source_restarts() {
    const N: u64 = 240;
    // Away from the phase boundaries (40, 80, 120, 160), so that both copies reach the
    // same run of the source: the deduplication window lives in memory.
    const DOUBLED: [u64; 4] = [10, 100, 140, 200];
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut broker = Some(Broker::start(dir.path(), port).await);
    let config = shipped();
    let client_id = "dcguard-test-restarts";

    // Every temperature reading that reaches the consumer, in arrival order.
    let (tx, mut rx) = mpsc::channel::<Reading>(16);
    let received: Arc<std::sync::Mutex<Vec<u64>>> = Arc::default();
    let consumer = {
        let received = received.clone();
        tokio::spawn(async move {
            while let Some(r) = rx.recv().await {
                if &*r.point().point == "temperature" && &*r.point().device == "th-a" {
                    assert!(r.quality().is_good(), "{r:?}");
                    received.lock().unwrap().push(seq_of(&r));
                }
            }
        })
    };

    let cancel_a = CancellationToken::new();
    let source_a = start(plan(&config, port, client_id), tx.clone(), cancel_a.clone());
    until(&source_a, "subscribed", |c| c.subscribe_acks >= 1).await;

    // The sensor: messages 1..=N in order, each retried until the broker acknowledged it.
    let published = Arc::new(AtomicU64::new(0));
    let publisher = {
        let published = published.clone();
        tokio::spawn(async move {
            for seq in 1..=N {
                // A few messages go out twice, as a gateway does when a PUBACK is lost.
                let copies = if DOUBLED.contains(&seq) { 2 } else { 1 };
                for _ in 0..copies {
                    while !publish(port, TH_A, &body(seq)).await {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                published.store(seq, Ordering::SeqCst);
            }
        })
    };
    let reached = |n: u64| {
        let published = published.clone();
        async move {
            let guard = tokio::time::Instant::now() + HANG;
            while published.load(Ordering::SeqCst) < n {
                assert!(
                    tokio::time::Instant::now() < guard,
                    "publisher stuck before {n}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };

    // 1. The daemon's source stops while the sensor keeps publishing (queued by the broker).
    reached(N / 6).await;
    let stats_a = source_a.stats();
    cancel_a.cancel();
    source_a.join().await;

    // 2. The broker restarts (graceful stop, same persistence dir and port) while the
    //    source is away and the sensor retries.
    reached(2 * N / 6).await;
    broker.take().expect("broker running").stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    broker = Some(Broker::start(dir.path(), port).await);

    // 3. The source comes back with the same client id: the queued messages arrive.
    reached(3 * N / 6).await;
    let cancel_b = CancellationToken::new();
    let source_b = start(plan(&config, port, client_id), tx.clone(), cancel_b.clone());
    until(&source_b, "reconnected", |c| c.subscribe_acks >= 1).await;

    // 4. The broker restarts again while the source is connected: it reconnects,
    //    resubscribes, and gets what was published meanwhile.
    reached(4 * N / 6).await;
    broker.take().expect("broker running").stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    broker = Some(Broker::start(dir.path(), port).await);
    until(&source_b, "reconnected after the restart", |c| {
        c.connects >= 2
    })
    .await;

    publisher.await.unwrap();
    // A final message: the broker delivers a topic's messages in order, so any
    // redelivery of an earlier one comes before it.
    must_publish(port, TH_A, &body(N + 1)).await;
    let guard = tokio::time::Instant::now() + HANG;
    while !received.lock().unwrap().contains(&(N + 1)) {
        assert!(
            tokio::time::Instant::now() < guard,
            "final message never arrived; counters {:?}",
            source_b.stats().snapshot()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for seq in received.lock().unwrap().iter() {
        *counts.entry(*seq).or_default() += 1;
    }
    let lost: Vec<u64> = (1..=N + 1).filter(|s| !counts.contains_key(s)).collect();
    let duplicated: Vec<(u64, usize)> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(s, n)| (*s, *n))
        .collect();
    let stats_b = source_b.stats().snapshot();
    assert_eq!(
        lost,
        Vec::<u64>::new(),
        "lost readings; counters {stats_b:?}"
    );
    assert_eq!(duplicated, Vec::<(u64, usize)>::new(), "duplicate readings");
    assert_eq!(counts.len() as u64, N + 1);
    assert_eq!(stats_b.sequence_gaps, 0, "{stats_b:?}");
    assert!(stats_b.connects >= 2, "{stats_b:?}");
    assert!(
        stats_b.subscribe_acks >= 2,
        "resubscribed after the restart"
    );
    let duplicates = stats_a.snapshot().duplicates + stats_b.duplicates;
    assert!(
        duplicates >= DOUBLED.len() as u64,
        "every doubled message was dropped as a duplicate: {duplicates}"
    );
    println!("source B counters after the restarts: {stats_b:?}");

    cancel_b.cancel();
    source_b.join().await;
    drop(tx);
    consumer.await.unwrap();
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_simulated_sensor_of_a_site_gives_good_readings() {
    use firmware_stubs::{mqtt::spawn_publisher, spec, world::World};

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let broker = Broker::start(dir.path(), port).await;
    let config = shipped();
    let (tx, mut rx) = mpsc::channel(256);
    let cancel = CancellationToken::new();
    let source = start(plan(&config, port, "dcguard-test-sim"), tx, cancel.clone());
    until(&source, "subscribed", |c| c.subscribe_acks >= 1).await;

    // The stubs' own reader of config/ and their publisher: every sensor publishes at once.
    let sites =
        spec::load_sites(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config")).expect("specs");
    let site = Arc::new(sites.into_iter().find(|s| s.id == "dc").expect("site dc"));
    let world = Arc::new(std::sync::Mutex::new(World::new(&site, 7)));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let publisher = spawn_publisher(site, world, addr, cancel.clone());

    let expected: Vec<PointId> = config
        .sites
        .iter()
        .filter(|s| s.id == "dc")
        .flat_map(|s| &s.devices)
        .filter(|d| matches!(d.transport, config::DeviceTransport::Mqtt { .. }))
        .flat_map(|d| match &d.profile.transport {
            config::ProfileTransport::Mqtt(m) => m
                .points
                .iter()
                .map(|p| PointId::new("dc", &d.id, &p.name))
                .collect::<Vec<_>>(),
            config::ProfileTransport::Modbus(_) => Vec::new(),
        })
        .collect();
    assert!(expected.len() >= 40, "{} MQTT points", expected.len());
    let mut seen = Vec::new();
    collect(&mut rx, &mut seen, |s| {
        expected.iter().all(|p| s.iter().any(|r| r.point() == p))
    })
    .await;
    for r in &seen {
        assert!(r.quality().is_good(), "{r:?}");
        assert!(r.value().is_some());
    }
    let c = source.stats().snapshot();
    assert_eq!(
        (c.unknown_topic, c.malformed, c.point_errors, c.out_of_range),
        (0, 0, 0, 0),
        "{c:?}"
    );

    cancel.cancel();
    publisher.await.unwrap();
    source.join().await;
    drop(broker);
}

/// Collects everything logged by the process (all tests of this binary), for the canary.
#[derive(Clone, Default)]
struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_from_a_file_authenticates_and_never_shows_in_logs() {
    const CANARY: &str = "canary-Zq8v1-secret";
    let logs = LogBuffer::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .try_init()
        .expect("the only test that installs a subscriber");

    let dir = tempfile::tempdir().unwrap();
    let passwords = dir.path().join("passwords");
    let status = Command::new("/usr/bin/mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&passwords)
        .args(["dcguard", CANARY])
        .status()
        .expect("mosquitto_passwd (run scripts/test.sh)");
    assert!(status.success());
    let port = free_port();
    let broker = Broker::start_with(
        dir.path(),
        port,
        &format!(
            "allow_anonymous false\npassword_file {}\n",
            passwords.display()
        ),
    )
    .await;
    let secret = dir.path().join("mqtt-password");
    std::fs::write(&secret, format!("{CANARY}\n")).unwrap();
    let wrong = dir.path().join("wrong-password");
    std::fs::write(&wrong, "not-it").unwrap();

    let config = shipped();
    let with_password = |client: &str, file: &Path| {
        let mut p = plan(&config, port, client);
        p.broker.username = Some("dcguard".into());
        p.broker.password = Some(config::SecretRef::File(file.to_path_buf()));
        p
    };
    let (tx, _rx) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    let good = start(
        with_password("dcguard-test-auth", &secret),
        tx.clone(),
        cancel.clone(),
    );
    until(&good, "authenticated and subscribed", |c| {
        c.subscribe_acks >= 1
    })
    .await;
    let refused = start(
        with_password("dcguard-test-refused", &wrong),
        tx.clone(),
        cancel.clone(),
    );
    until(&refused, "refused twice", |c| c.connection_errors >= 2).await;
    assert_eq!(refused.stats().snapshot().connects, 0);
    assert!(
        refused.is_running(),
        "a refused login is retried, not fatal"
    );
    // No password reference at all: refused by the broker too.
    let anonymous = start(plan(&config, port, "dcguard-test-anon"), tx, cancel.clone());
    until(&anonymous, "anonymous refused", |c| {
        c.connection_errors >= 1
    })
    .await;
    assert_eq!(anonymous.stats().snapshot().connects, 0);

    cancel.cancel();
    good.join().await;
    refused.join().await;
    anonymous.join().await;
    drop(broker);
    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(
        text.contains("connected to the MQTT broker") && text.contains("connection failed"),
        "the log is captured: {text}"
    );
    assert!(!text.contains(CANARY), "the password leaked into the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubscribes_after_every_broker_restart_even_without_a_session() {
    // No persistence: each restart forgets the session and its subscriptions, so only
    // the source's own resubscription makes messages flow again.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let without_session = "allow_anonymous true\npersistence false\n";
    let mut broker = Some(Broker::start_with(dir.path(), port, without_session).await);
    let config = shipped();
    let (tx, mut rx) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    let source = start(
        plan(&config, port, "dcguard-test-resub"),
        tx,
        cancel.clone(),
    );
    let mut seen = Vec::new();
    for round in 1..=4u64 {
        until(&source, "connected and subscribed", |c| {
            c.connects >= round && c.subscribe_acks >= round
        })
        .await;
        must_publish(port, TH_A, &body(round)).await;
        collect(&mut rx, &mut seen, |s| {
            s.iter()
                .any(|r| &*r.point().point == "temperature" && seq_of(r) == round)
        })
        .await;
        if round < 4 {
            broker.take().expect("broker running").stop();
            broker = Some(Broker::start_with(dir.path(), port, without_session).await);
        }
    }
    let c = source.stats().snapshot();
    assert_eq!(c.connects, 4, "{c:?}");
    assert!(c.connection_errors >= 3, "{c:?}");
    assert!(source.is_running());
    cancel.cancel();
    source.join().await;
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_not_handed_over_are_redelivered_to_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let broker = Broker::start(dir.path(), port).await;
    let config = shipped();
    let client_id = "dcguard-test-handover";
    let quick_drain = SourceOptions {
        shutdown_drain: Duration::from_millis(300),
        ..options()
    };

    // Run A: a consumer that takes one reading and then stops reading (backpressure).
    let (tx_a, mut rx_a) = mpsc::channel(1);
    let cancel_a = CancellationToken::new();
    let source_a = mqtt::spawn(
        plan(&config, port, client_id),
        quick_drain.clone(),
        tx_a,
        cancel_a.clone(),
    )
    .unwrap();
    until(&source_a, "subscribed", |c| c.subscribe_acks >= 1).await;
    for seq in 1..=5 {
        must_publish(port, TH_A, &body(seq)).await;
    }
    until(&source_a, "all five taken from the broker", |c| {
        c.messages >= 5
    })
    .await;
    let first = rx_a.recv().await.expect("one reading");
    assert_eq!(seq_of(&first), 1);
    // Stopping while the consumer is stuck still ends (after the drain time).
    cancel_a.cancel();
    source_a.join().await;
    let left = source_a_readings(&mut rx_a);
    assert!(left <= 1, "at most what fit in the channel: {left}");

    // Run B, same session: every message that was not acknowledged comes again.
    let (tx_b, mut rx_b) = mpsc::channel(64);
    let cancel_b = CancellationToken::new();
    let source_b = mqtt::spawn(
        plan(&config, port, client_id),
        quick_drain,
        tx_b,
        cancel_b.clone(),
    )
    .unwrap();
    let mut seen = Vec::new();
    collect(&mut rx_b, &mut seen, |s| {
        (1..=5).all(|seq| {
            s.iter()
                .any(|r| &*r.point().point == "temperature" && seq_of(r) == seq)
        })
    })
    .await;
    cancel_b.cancel();
    source_b.join().await;
    drop(broker);
}

/// Readings left in a stopped run's channel.
fn source_a_readings(rx: &mut mpsc::Receiver<Reading>) -> usize {
    let mut n = 0;
    while rx.try_recv().is_ok() {
        n += 1;
    }
    n
}

/// Publishes `n` QoS 1 messages as fast as the broker takes them (100 in flight), round
/// robin over the shipped temperature sensors, each with its own sequence from 1.
async fn burst(port: u16, topics: Vec<String>, n: u64) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let mut options = MqttOptions::new("dcguard-test-burst", "127.0.0.1", port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_inflight(100);
    let (client, mut eventloop) = AsyncClient::new(options, 1000);
    let acked = Arc::new(AtomicU64::new(0));
    let driver = {
        let acked = acked.clone();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(e) => panic!("burst publisher: {e}"),
                }
            }
        })
    };
    for i in 0..n {
        let topic = &topics[(i as usize) % topics.len()];
        let seq = 1 + i / topics.len() as u64;
        // The message's number per sensor in the last three decimals: 20.001, 20.002 ...
        let body = format!(
            r#"{{"seq":{seq},"temperature_c":{:.3},"humidity_pct":50,"battery_pct":90}}"#,
            20.0 + (seq % 1000) as f64 / 1000.0
        );
        client
            .publish(topic.as_str(), QoS::AtLeastOnce, false, body)
            .await
            .unwrap();
    }
    let guard = tokio::time::Instant::now() + HANG;
    while acked.load(Ordering::Relaxed) < n {
        assert!(
            tokio::time::Instant::now() < guard,
            "the broker did not take the burst"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    driver.abort();
}

/// A burst of 20,000 QoS 1 messages published as fast as Mosquitto takes them, with the
/// broker's in-flight window at its default (20) and raised to 100 (the benchmark that
/// found the stall). Before the fix the source acked each message from its hand-over
/// task: rumqttc takes at most one ack per poll while messages pour in, its request
/// channel filled, the hand-over stopped, the network task stopped on it, and the source
/// received nothing more (within a few thousand messages, every run). Proves: every
/// reading arrives, none twice, every message is acked, and the source never goes 5 s
/// without progress (a hang guard, not a timing assertion).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_with_a_wide_broker_window_never_stalls() {
    const N: u64 = 20_000;
    for window in [20, 100] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let broker = Broker::start_with(
            dir.path(),
            port,
            &format!(
                "allow_anonymous true\nmax_inflight_messages {window}\nmax_queued_messages 0\n"
            ),
        )
        .await;
        let config = shipped();
        let mut plan = plan(&config, port, "dcguard-test-burst-source");
        plan.devices
            .retain(|d| d.device.profile.id == "env-th-json");
        let topics: Vec<String> = plan
            .devices
            .iter()
            .filter_map(|d| match &d.device.transport {
                dcguard::config::model::DeviceTransport::Mqtt { topic, .. } => Some(topic.clone()),
                dcguard::config::model::DeviceTransport::Modbus { .. } => None,
            })
            .collect();
        assert!(topics.len() >= 10, "{topics:?}");
        let (tx, mut rx) = mpsc::channel::<Reading>(4096);
        let cancel = CancellationToken::new();
        let source = start(plan, tx, cancel.clone());
        until(&source, "subscribed", |c| c.subscribe_acks >= 1).await;
        // Temperature readings per device: each sequence number exactly once.
        let seen: Arc<std::sync::Mutex<BTreeMap<(String, u64), u32>>> = Arc::default();
        let received = Arc::new(AtomicU64::new(0));
        let consumer = {
            let (seen, received) = (seen.clone(), received.clone());
            tokio::spawn(async move {
                while let Some(r) = rx.recv().await {
                    assert!(r.quality().is_good(), "{r:?}");
                    if &*r.point().point == "temperature" {
                        let Some(Value::Number(t)) = r.value() else {
                            panic!("{r:?}")
                        };
                        let seq = (t * 1000.0).round() as u64 % 1000;
                        *seen
                            .lock()
                            .unwrap()
                            .entry((format!("{}/{}", r.point().site, r.point().device), seq))
                            .or_default() += 1;
                    }
                    received.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let publisher = tokio::spawn(burst(port, topics.clone(), N));
        let mut last = (0, tokio::time::Instant::now());
        loop {
            let now = received.load(Ordering::Relaxed);
            if now >= 3 * N {
                break;
            }
            if now != last.0 {
                last = (now, tokio::time::Instant::now());
            }
            assert!(
                last.1.elapsed() < Duration::from_secs(5),
                "window {window}: stalled at {now} readings of {}; counters {:?}",
                3 * N,
                source.stats().snapshot()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        publisher.await.unwrap();
        let stats = source.stats();
        until(&source, "every message acked", |c| c.acks == N).await;
        cancel.cancel();
        source.join().await;
        consumer.await.unwrap();
        let c = stats.snapshot();
        assert_eq!(
            (c.messages, c.readings, c.duplicates, c.sequence_gaps),
            (N, 3 * N, 0, 0),
            "window {window}: {c:?}"
        );
        // Every (sensor, message) once: the publisher encodes the message number in the
        // temperature's last three decimals.
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len() as u64, N, "window {window}");
        assert!(seen.values().all(|n| *n == 1), "window {window}");
        drop(broker);
    }
}
