//! Benchmark 5: MQTT QoS 1 readings/s of `sources::mqtt` against a bare rumqttc subscriber on the same Mosquitto, same publisher load.

use std::fmt::Write as _;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use dcguard::config::model::DeviceTransport;
use dcguard::sources::mqtt::{self, BrokerPlan, SourceOptions};
use rumqttc::{AsyncClient, Event, MqttOptions, NetworkOptions, Packet, QoS};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::common::{Proc, fmt, free_port, num, root, scratch, self_exe, summary, wait_listening};
use crate::modbus::load_config;

const MOSQUITTO: &str = "/usr/sbin/mosquitto";
/// The profile whose sensors the publisher imitates, and its points per message.
const PROFILE: &str = "env-th-json";
const POINTS_PER_MESSAGE: u64 = 3;
/// A subscriber gives up after this long without a message.
const SILENCE: Duration = Duration::from_secs(3);

/// The shipped broker plan, pointed at `port`, with only the temperature/humidity
/// sensors (the ones the publisher imitates).
fn th_plan(port: u16, client_id: &str) -> Result<BrokerPlan> {
    let config = load_config(&root().join("config"))?;
    let mut plans = mqtt::plans(&config);
    if plans.is_empty() {
        bail!("the shipped configuration has no MQTT broker");
    }
    let mut plan = plans.remove(0);
    plan.broker.port = port;
    plan.broker.host = "127.0.0.1".to_owned();
    plan.broker.client_id = client_id.to_owned();
    plan.devices.retain(|d| d.device.profile.id == PROFILE);
    Ok(plan)
}

fn topics(plan: &BrokerPlan) -> Vec<String> {
    plan.devices
        .iter()
        .filter_map(|d| match &d.device.transport {
            DeviceTransport::Mqtt { topic, .. } => Some(topic.clone()),
            DeviceTransport::Modbus { .. } => None,
        })
        .collect()
}

/// Role `mqtt-sub source|bare PORT N SECS CLIENT_ID`: subscribes, prints `ready`, then
/// counts messages until `N` arrived, `SILENCE` passed without one, or `SECS` ran out.
pub fn subscriber(kind: &str, port: u16, n: u64, secs: f64, client_id: &str) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let limit = Duration::from_secs_f64(secs);
    let result = runtime.block_on(async move {
        let messages = Arc::new(AtomicU64::new(0));
        let cancel = CancellationToken::new();
        let first: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
        let mut source = None;
        let mut bare = None;
        if kind == "source" {
            let plan = th_plan(port, client_id)?;
            let (tx, mut rx) = tokio::sync::mpsc::channel(4096);
            let started = mqtt::spawn(plan, SourceOptions::default(), tx, cancel.clone())?;
            let stats = started.stats();
            let (messages, first) = (messages.clone(), first.clone());
            // Readings of one message arrive together; a message is counted at its last.
            tokio::spawn(async move {
                let mut readings = 0u64;
                while let Some(reading) = rx.recv().await {
                    let _: dcguard::model::Reading = reading;
                    readings += 1;
                    if readings == 1
                        && let Ok(mut f) = first.lock()
                    {
                        *f = Some(Instant::now());
                    }
                    if readings % POINTS_PER_MESSAGE == 0 {
                        messages.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
            let until = Instant::now() + Duration::from_secs(10);
            while stats.snapshot().subscribe_acks == 0 {
                if Instant::now() > until {
                    bail!("the source did not subscribe within 10 s");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            source = Some((started, stats));
        } else {
            let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
            options
                .set_keep_alive(Duration::from_secs(30))
                .set_clean_session(true);
            let (client, mut eventloop) = AsyncClient::new(options, 1024);
            let mut network = NetworkOptions::new();
            network.set_tcp_nodelay(true);
            eventloop.set_network_options(network);
            client
                .subscribe("dcguard/+/+/th/+", QoS::AtLeastOnce)
                .await?;
            let (messages, first) = (messages.clone(), first.clone());
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
            let cancel = cancel.clone();
            let task = tokio::spawn(async move {
                let mut ready = Some(ready_tx);
                loop {
                    let event = tokio::select! {
                        () = cancel.cancelled() => return,
                        event = eventloop.poll() => event,
                    };
                    match event {
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            if let Some(r) = ready.take() {
                                let _ = r.send(());
                            }
                        }
                        Ok(Event::Incoming(Packet::Publish(_))) => {
                            if messages.fetch_add(1, Ordering::Relaxed) == 0
                                && let Ok(mut f) = first.lock()
                            {
                                *f = Some(Instant::now());
                            }
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            });
            tokio::time::timeout(Duration::from_secs(10), ready_rx)
                .await
                .map_err(|_| anyhow!("no SubAck within 10 s"))??;
            bare = Some((client, task));
        }
        println!("ready");
        let cpu0 = crate::common::own_cpu_secs();
        let t0 = Instant::now();
        let (mut last_count, mut last_change) = (0, Instant::now());
        let mut last_at = None;
        while t0.elapsed() < limit {
            let count = messages.load(Ordering::Relaxed);
            if count != last_count {
                last_count = count;
                last_change = Instant::now();
                last_at = Some(last_change);
            }
            if count >= n || (count > 0 && last_change.elapsed() > SILENCE) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let cpu = crate::common::own_cpu_secs() - cpu0;
        let first = first.lock().ok().and_then(|f| *f);
        let span = match (first, last_at) {
            (Some(a), Some(b)) if b > a => (b - a).as_secs_f64(),
            _ => f64::NAN,
        };
        let mut extra = json!({});
        if let Some((started, stats)) = source {
            let c = stats.snapshot();
            extra = json!({"duplicates": c.duplicates, "sequence_gaps": c.sequence_gaps,
                           "readings": c.readings, "mqtt_messages": c.messages});
            cancel.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(6), started.join()).await;
        }
        if let Some((client, task)) = bare {
            let _ = client.try_disconnect();
            cancel.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
        anyhow::Ok(
            json!({"kind": kind, "messages": last_count, "span_secs": span,
                          "rate": (last_count.saturating_sub(1)) as f64 / span, "extra": extra, "cpu_secs": cpu}),
        )
    })?;
    println!("{result}");
    Ok(())
}

/// Publishes `n` QoS 1 messages round-robin over `topics` (each topic its own sequence
/// from `seq0`), at most 100 in flight, within `limit`. Returns the seconds taken.
async fn publish(port: u16, topics: &[String], n: u64, seq0: u64, limit: Duration) -> Result<f64> {
    let mut options = MqttOptions::new(
        format!("bench-pub-{}", std::process::id()),
        "127.0.0.1",
        port,
    );
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_inflight(100);
    let (client, mut eventloop) = AsyncClient::new(options, 1000);
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
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
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        })
    };
    let t0 = Instant::now();
    for i in 0..n {
        if t0.elapsed() > limit {
            break;
        }
        let topic = &topics[(i as usize) % topics.len()];
        let seq = seq0 + i / topics.len() as u64;
        let body = format!(
            r#"{{"seq":{seq},"temperature_c":{:.2},"humidity_pct":{:.1},"battery_pct":90}}"#,
            20.0 + (i % 500) as f64 / 100.0,
            40.0 + (i % 100) as f64 / 10.0
        );
        client
            .publish(topic.as_str(), QoS::AtLeastOnce, false, body)
            .await?;
    }
    while acked.load(Ordering::Relaxed) < n && t0.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let _ = client.try_disconnect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    driver.abort();
    Ok(secs)
}

/// Runs benchmark 5: `runs` rounds of both subscribers (order alternating) under the
/// same burst of `n` messages. Returns the Markdown section.
pub fn run(runs: usize, n: u64) -> Result<String> {
    let dir = scratch("mqtt")?;
    let load0 = crate::common::loadavg();
    let port = free_port()?;
    let conf = dir.join("mosquitto.conf");
    // BENCH_MQTT_INFLIGHT=N sets the broker's max_inflight_messages (default 20).
    let inflight = std::env::var("BENCH_MQTT_INFLIGHT")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .map(|n| format!("max_inflight_messages {n}\n"))
        .unwrap_or_default();
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nuser root\nallow_anonymous true\npersistence false\n\
             set_tcp_nodelay true\nmax_queued_messages 0\nlog_dest stderr\nlog_type error\n\
             log_type warning\nlog_type notice\n{inflight}"
        ),
    )?;
    let _broker = Proc::spawn(
        "mosquitto",
        Command::new(MOSQUITTO).arg("-c").arg(&conf),
        &dir.join("mosquitto.log"),
    )?;
    wait_listening(([127, 0, 0, 1], port).into(), Duration::from_secs(10))?;
    let topics = topics(&th_plan(port, "unused")?);
    if topics.is_empty() {
        bail!("no {PROFILE} sensors in the shipped configuration");
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let exe = self_exe()?;
    let mut rows: Vec<(String, serde_json::Value, f64)> = Vec::new();
    let mut ratios = Vec::new();
    let mut seq0 = 1u64;
    for run in 0..runs {
        let order: [&str; 2] = if run % 2 == 0 {
            ["bare", "source"]
        } else {
            ["source", "bare"]
        };
        let mut rates = std::collections::BTreeMap::new();
        for kind in order {
            let client_id = format!("bench-{kind}-{}-{run}", std::process::id());
            let mut sub = Proc::spawn(
                kind,
                Command::new(&exe).args([
                    "role",
                    "mqtt-sub",
                    kind,
                    &port.to_string(),
                    &n.to_string(),
                    "60",
                    &client_id,
                ]),
                &dir.join(format!("sub-{kind}-{run}.log")),
            )?;
            let ready = sub.read_line()?;
            if ready != "ready" {
                bail!("{kind} subscriber: {ready}");
            }
            let publish_secs =
                runtime.block_on(publish(port, &topics, n, seq0, Duration::from_secs(60)))?;
            seq0 += n / topics.len() as u64 + 1;
            let result = sub.finish().with_context(|| format!("{kind} subscriber"))?;
            eprintln!("mqtt run {run} {kind}: {result} (publisher {publish_secs:.2} s)");
            rates.insert(kind, num(&result, "rate"));
            rows.push((kind.to_owned(), result, publish_secs));
        }
        ratios.push(rates["source"] / rates["bare"]);
    }
    let mut out = String::new();
    writeln!(
        out,
        "| subscriber | messages/s | readings/s | lost messages per run | duplicates | publisher msg/s | subscriber CPU µs per message |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|")?;
    for kind in ["bare", "source"] {
        let mine: Vec<&(String, serde_json::Value, f64)> =
            rows.iter().filter(|r| r.0 == kind).collect();
        let rates: Vec<f64> = mine.iter().map(|r| num(&r.1, "rate")).collect();
        let lost: Vec<f64> = mine
            .iter()
            .map(|r| n as f64 - num(&r.1, "messages"))
            .collect();
        let pub_rates: Vec<f64> = mine.iter().map(|r| n as f64 / r.2).collect();
        let dups: Vec<f64> = mine
            .iter()
            .map(|r| r.1.get("extra").map_or(f64::NAN, |e| num(e, "duplicates")))
            .collect();
        let name = if kind == "bare" {
            "bare rumqttc 0.25 (auto ack)"
        } else {
            "dcguard sources::mqtt (manual ack after hand-over, decode, dedup)"
        };
        let readings = if kind == "source" {
            fmt(
                summary(
                    &rates
                        .iter()
                        .map(|r| r * POINTS_PER_MESSAGE as f64)
                        .collect::<Vec<_>>(),
                ),
                0,
            )
        } else {
            "-".to_owned()
        };
        writeln!(
            out,
            "| {name} | {} | {readings} | {} | {} | {} | {} |",
            fmt(summary(&rates), 0),
            fmt(summary(&lost), 0),
            if kind == "source" {
                fmt(summary(&dups), 0)
            } else {
                "-".to_owned()
            },
            fmt(summary(&pub_rates), 0),
            fmt(
                summary(
                    &mine
                        .iter()
                        .map(|r| 1e6 * num(&r.1, "cpu_secs") / num(&r.1, "messages"))
                        .collect::<Vec<_>>()
                ),
                1
            ),
        )?;
    }
    let ratio = summary(&ratios);
    writeln!(
        out,
        "\nRatio source / bare (per run): {}. Goal >= 0.9 with 0 lost: {}.",
        fmt(ratio, 2),
        {
            let lost_any = rows.iter().any(|r| num(&r.1, "messages") < n as f64);
            if ratio.median >= 0.9 && !lost_any {
                "MET"
            } else {
                "MISSED"
            }
        }
    )?;
    writeln!(
        out,
        "Messages per run: {n}, over {} sensor topics; QoS 1; runs: {runs}, order alternating; \
         broker {}. Load average before/after: {load0} / {}.",
        topics.len(),
        if inflight.is_empty() {
            "max_inflight_messages default (20)".to_owned()
        } else {
            inflight.trim().to_owned()
        },
        crate::common::loadavg()
    )?;
    Ok(out)
}
