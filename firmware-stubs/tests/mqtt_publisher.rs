//! The sensor publisher against a real Mosquitto: topics, JSON fields, sequence numbers,
//! silence, and reconnecting after the broker restarts.

mod scenario_fixture;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use firmware_stubs::mqtt::spawn_publisher;
use firmware_stubs::scenario::Action;
use firmware_stubs::world::World;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// A Mosquitto process on a loopback port, killed on drop (also when a test fails).
struct Broker {
    child: Child,
    addr: SocketAddr,
}

impl Broker {
    async fn start(dir: &Path, port: u16) -> Broker {
        assert!(
            Path::new(MOSQUITTO).exists(),
            "{MOSQUITTO} is missing: run scripts/test.sh, which installs the test peers"
        );
        let conf: PathBuf = dir.join(format!("mosquitto-{port}.conf"));
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
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
        let broker = Broker { child, addr };
        // Readiness wait (not a timing assertion): up to 10 s for the listener.
        for _ in 0..200 {
            if TcpStream::connect(addr).await.is_ok() {
                return broker;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("mosquitto did not listen on {addr}");
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

/// Subscribes to everything under `dcguard/fx/`, re-subscribing after every reconnect.
fn subscriber(
    addr: SocketAddr,
    cancel: CancellationToken,
) -> mpsc::UnboundedReceiver<(String, Value)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut options = MqttOptions::new("fx-test-subscriber", addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                _ = cancel.cancelled() => break,
                e = eventloop.poll() => e,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    client
                        .subscribe("dcguard/fx/#", QoS::AtLeastOnce)
                        .await
                        .unwrap();
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = tx.send(("$suback".to_owned(), Value::Null));
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let json: Value = serde_json::from_slice(&p.payload).expect("payload is JSON");
                    let _ = tx.send((p.topic.clone(), json));
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    rx
}

/// Receives until `done` says so; fails after 30 s (a hang guard, not a timing assertion).
async fn collect(
    rx: &mut mpsc::UnboundedReceiver<(String, Value)>,
    seen: &mut Vec<(String, Value)>,
    mut done: impl FnMut(&[(String, Value)]) -> bool,
) {
    let guard = tokio::time::sleep(Duration::from_secs(30));
    tokio::pin!(guard);
    while !done(seen) {
        tokio::select! {
            _ = &mut guard => panic!("messages did not arrive; got {seen:#?}"),
            m = rx.recv() => seen.push(m.expect("subscriber alive")),
        }
    }
}

fn count(seen: &[(String, Value)], topic: &str) -> usize {
    seen.iter().filter(|(t, _)| t == topic).count()
}

const TH1: &str = "dcguard/fx/dh1/th/th-dh1-01";
const TH2: &str = "dcguard/fx/dh1/th/th-dh1-02";
const LEAK: &str = "dcguard/fx/dh1/leak/leak-dh1-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensors_publish_json_with_sequence_numbers_and_survive_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut broker = Some(Broker::start(dir.path(), port).await);
    let addr = broker.as_ref().unwrap().addr;
    let cancel = CancellationToken::new();

    let mut rx = subscriber(addr, cancel.clone());
    let mut seen = Vec::new();
    collect(&mut rx, &mut seen, |s| {
        s.iter().any(|(t, _)| t == "$suback")
    })
    .await;
    seen.clear();

    let site = scenario_fixture::site(4);
    let world = Arc::new(Mutex::new(World::new(&site, 1)));
    let publisher = spawn_publisher(site.clone(), world.clone(), addr, cancel.clone());

    collect(&mut rx, &mut seen, |s| {
        [TH1, TH2, LEAK].iter().all(|t| count(s, t) >= 3)
    })
    .await;
    let topics: std::collections::BTreeSet<&str> = seen.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(topics.into_iter().collect::<Vec<_>>(), [LEAK, TH1, TH2]);

    let mut last_seq: BTreeMap<String, u64> = BTreeMap::new();
    for (topic, json) in &seen {
        let seq = json["seq"].as_u64().expect("seq is a number");
        let previous = last_seq.insert(topic.clone(), seq);
        assert_eq!(
            seq,
            previous.map_or(1, |p| p + 1),
            "{topic}: sequence from 1, +1 each"
        );
        let ts = json["ts"].as_str().expect("ts");
        assert!(ts.ends_with('Z'), "UTC: {ts}");
        chrono::DateTime::parse_from_rfc3339(ts).expect("ISO-8601 ts");
        if topic.contains("/th/") {
            let t = json["temperature_c"].as_f64().expect("temperature_c");
            assert!((19.0..=25.0).contains(&t), "{t}");
            let rh = json["humidity_pct"].as_f64().expect("humidity_pct");
            assert!((30.0..=60.0).contains(&rh), "{rh}");
            let battery = json["status"]["battery_pct"].as_f64().expect("nested path");
            assert!((0.0..=100.0).contains(&battery));
            assert_eq!(json.as_object().unwrap().len(), 5, "{json}");
        } else {
            assert_eq!(json["leak"], Value::Bool(false));
        }
    }

    // A leak shows in the next payloads; a silenced sensor stops publishing.
    {
        let mut w = world.lock().unwrap();
        w.apply(&Action::Leak {
            device: "leak-dh1-01".into(),
            on: true,
        })
        .unwrap();
        w.apply(&Action::Silence {
            device: "th-dh1-02".into(),
        })
        .unwrap();
    }
    let th2_before = count(&seen, TH2);
    let leak_before = count(&seen, LEAK);
    collect(&mut rx, &mut seen, |s| count(s, LEAK) >= leak_before + 4).await;
    assert_eq!(
        seen.iter().rev().find(|(t, _)| t == LEAK).unwrap().1["leak"],
        Value::Bool(true)
    );
    assert!(
        count(&seen, TH2) <= th2_before + 1,
        "silenced sensor stopped publishing"
    );

    // Broker restart on the same port: the publisher reconnects and carries on counting.
    let th1_seq = last_th1_seq(&seen);
    drop(broker.take());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    broker = Some(Broker::start(dir.path(), port).await);
    let th1_before = count(&seen, TH1);
    collect(&mut rx, &mut seen, |s| count(s, TH1) >= th1_before + 2).await;
    assert!(
        last_th1_seq(&seen) > th1_seq + 1,
        "sequence continues after the reconnect"
    );
    assert!(
        !publisher.is_finished(),
        "publisher survived the broker restart"
    );

    cancel.cancel();
    publisher.await.unwrap();
    drop(broker);
}

fn last_th1_seq(seen: &[(String, Value)]) -> u64 {
    seen.iter()
        .rev()
        .find(|(t, _)| t == TH1)
        .and_then(|(_, j)| j["seq"].as_u64())
        .unwrap()
}
