//! Detection-latency benchmark (docs/benchmarks.md, "Alarm pipeline"): from a value change
//! in a firmware stub to the incident at the fake webhook receiver, at the full shipped
//! inventory (all three sites simulated, every device polled, sensors through Mosquitto).
//!
//! Each trial raises the smoke of one VESDA detector past its Alert level in the stub's
//! world and measures until the receiver has the `opened` transition of its incident; the
//! smoke is then cleared and the incident resolved before the next trial. On-delay and
//! off-delay are 0 for the measurement (the goal: p99 <= poll interval + 50 ms
//! with on-delay 0); the VESDA alarm level is polled every 2 s (fast class).
//!
//! Run: `cargo run --release -p dcguard --example alarm_latency -- [TRIALS]` (default 30).
//! Needs `/usr/sbin/mosquitto`; everything listens on 127.0.0.1 only.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dcguard::alarms::task::AlarmTaskOptions;
use dcguard::app::{App, RunOptions};
use firmware_stubs::receivers::webhook::WebhookReceiver;
use firmware_stubs::scenario::Action;
use firmware_stubs::sim::{Sim, SimOptions};
use tokio_util::sync::CancellationToken;

const KEY: &str = "bench-only-webhook-key";
const DETECTOR: &str = "vesda-dh1-1";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Copies `config/` into `dir` with the simulators' ports, the broker's port, a free HTTP
/// port and the webhook enabled towards `url`.
fn config_copy(
    dir: &Path,
    endpoints: &std::collections::BTreeMap<SocketAddr, SocketAddr>,
    broker: u16,
    url: &str,
) -> std::io::Result<()> {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    for sub in ["profiles", "sites"] {
        std::fs::create_dir_all(dir.join(sub))?;
        for entry in std::fs::read_dir(from.join(sub))? {
            let path = entry?.path();
            let mut text = std::fs::read_to_string(&path)?;
            for (configured, actual) in endpoints {
                text = text.replace(&format!("\"{configured}\""), &format!("\"{actual}\""));
            }
            if let Some(name) = path.file_name() {
                std::fs::write(dir.join(sub).join(name), text)?;
            }
        }
    }
    let secret = dir.join("webhook.key");
    std::fs::write(&secret, KEY)?;
    let main = std::fs::read_to_string(from.join("dcguard.toml"))?
        .replace("port = 1883", &format!("port = {broker}"))
        .replace(
            "listen = \"127.0.0.1:8080\"",
            &format!("listen = \"127.0.0.1:{}\"", free_port()),
        )
        .replace(
            "enabled = false\nurl = \"http://127.0.0.1:9800/incidents\"\n\
             hmac_secret_env = \"DCGUARD_WEBHOOK_SECRET\"",
            &format!(
                "enabled = true\nurl = \"{url}\"\nhmac_secret_file = \"{}\"",
                secret.display()
            ),
        );
    std::fs::write(dir.join("dcguard.toml"), main)
}

/// Waits up to `limit` for `done`; the instant it held.
async fn until(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Instant> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if done() {
            return Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let trials: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(30);
    let dir = tempfile::tempdir()?;
    let port = free_port();
    std::fs::write(
        dir.path().join("mosquitto.conf"),
        format!("listener {port} 127.0.0.1\nuser root\nallow_anonymous true\n"),
    )?;
    let mut broker = Command::new("/usr/sbin/mosquitto")
        .arg("-c")
        .arg(dir.path().join("mosquitto.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let broker_addr = SocketAddr::from(([127, 0, 0, 1], port));
    let sim = Sim::start(
        SimOptions::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("config"))
            .ephemeral()
            .with_mqtt_broker(broker_addr),
    )
    .await?;
    let receiver = WebhookReceiver::start(KEY).await?;
    let config_dir = dir.path().join("config");
    config_copy(&config_dir, sim.endpoints(), port, &receiver.url())?;
    let config = dcguard::config::load(&config_dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    let options = RunOptions {
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        data_dir: Some(dir.path().join("data")),
        alarms: AlarmTaskOptions {
            params: Some(Arc::new(|_, mut p| {
                p.on_delay = Duration::ZERO;
                p.off_delay = Duration::ZERO;
                // Trials raise the same alarm again and again: not chattering here.
                p.chatter_transitions = 0;
                p
            })),
            ..AlarmTaskOptions::default()
        },
        ..RunOptions::default()
    };
    let app = App::start(Arc::new(config), options).await?;
    let live = app.live();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(app.run_until(shutdown.clone()));
    let world = sim
        .world("dc")
        .ok_or_else(|| anyhow::anyhow!("dc not simulated"))?;
    let set_smoke = |to: f64| {
        let mut w = world.lock().unwrap_or_else(|e| e.into_inner());
        w.apply(&Action::Smoke {
            device: DETECTOR.to_owned(),
            to,
            over_secs: 0.0,
        })
    };
    // Settle: every device read once, start-up incidents (if any) delivered.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let opened_for = |receiver: &WebhookReceiver| {
        receiver
            .applied()
            .iter()
            .filter(|a| {
                a.event_type == "dcguard.incident.opened"
                    && a.envelope["data"]["device"] == DETECTOR
            })
            .count()
    };
    let resolved_for = |receiver: &WebhookReceiver| {
        receiver
            .applied()
            .iter()
            .filter(|a| {
                a.event_type == "dcguard.incident.resolved"
                    && a.envelope["data"]["device"] == DETECTOR
            })
            .count()
    };
    // The detector's alarm level as the daemon's consumer holds it: not `normal` once the
    // first reading of the new value went through the pipeline's first stage.
    let raised_in_daemon = move || {
        live.device("dc", DETECTOR)
            .get("alarm_level")
            .and_then(|r| r.value().cloned())
            .is_some_and(|v| matches!(v, dcguard::model::Value::State { raw, .. } if raw != 0))
    };
    let mut latencies = Vec::new();
    let mut pipeline = Vec::new();
    for trial in 0..trials {
        let before = opened_for(&receiver);
        // A random phase against the 2 s poll.
        tokio::time::sleep(Duration::from_millis(137 * (trial as u64 % 15))).await;
        set_smoke(0.1).map_err(|e| anyhow::anyhow!(e))?;
        let t0 = Instant::now();
        // Watched every 1 ms on its own task while the main task waits for the receiver.
        let watch = raised_in_daemon.clone();
        let seen = tokio::spawn(async move {
            let end = Instant::now() + Duration::from_secs(20);
            while Instant::now() < end {
                if watch() {
                    return Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            None
        });
        let Some(_) = until(Duration::from_secs(20), || opened_for(&receiver) > before).await
        else {
            anyhow::bail!("trial {trial}: no incident at the receiver");
        };
        let seen = seen.await?.ok_or_else(|| {
            anyhow::anyhow!("trial {trial}: the new value never reached the daemon")
        })?;
        // The receiver's own arrival instant of that opened transition.
        let key = receiver
            .applied()
            .iter()
            .filter(|a| {
                a.event_type == "dcguard.incident.opened"
                    && a.envelope["data"]["device"] == DETECTOR
            })
            .nth(before)
            .map(|a| a.key.clone());
        let arrived = receiver
            .requests()
            .iter()
            .filter(|r| r.key.is_some() && r.key == key)
            .map(|r| r.at)
            .min()
            .ok_or_else(|| anyhow::anyhow!("no request recorded"))?;
        latencies.push(arrived - t0);
        pipeline.push(arrived.saturating_duration_since(seen));
        let resolved = resolved_for(&receiver);
        set_smoke(0.0).map_err(|e| anyhow::anyhow!(e))?;
        if until(Duration::from_secs(20), || {
            resolved_for(&receiver) > resolved
        })
        .await
        .is_none()
        {
            anyhow::bail!("trial {trial}: the incident never resolved");
        }
    }
    shutdown.cancel();
    running.await??;
    let _ = broker.kill();
    let _ = broker.wait();
    latencies.sort();
    pipeline.sort();
    let pct = |v: &[Duration], p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("trials: {trials} (VESDA alarm level polled every 2 s, on-delay 0)");
    println!(
        "stub change -> webhook received: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        ms(pct(&latencies, 0.5)),
        ms(pct(&latencies, 0.99)),
        ms(latencies[latencies.len() - 1])
    );
    println!(
        "first reading of the new value in the daemon -> webhook received: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(pct(&pipeline, 0.5)),
        ms(pct(&pipeline, 0.99)),
        ms(pipeline[pipeline.len() - 1])
    );
    Ok(())
}
