//! Test support for the Prometheus and dashboard tests: the daemon in-process against the
//! firmware stubs of the three sites and a real Mosquitto, scraped every two seconds by a real
//! Prometheus (Debian's `/usr/bin/prometheus`) on a free loopback port, and a small client
//! for its HTTP API. Every process is killed on drop, also when a test fails.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use dcguard::app::{App, RunOptions};
use dcguard::config::{self, Config};
use firmware_stubs::sim::{RunningSim, Sim, SimOptions};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::common::{Broker, free_port, http_get, shipped_dir};

pub const PROMETHEUS: &str = "/usr/bin/prometheus";
pub const PROMTOOL: &str = "/usr/bin/promtool";
/// Hang guard for each wait (not a timing assertion).
pub const HANG: Duration = Duration::from_secs(90);
/// Scrape interval and timeout. A debug-build scrape of the full inventory (about 20 000
/// series) takes close to a second on a loaded 2-core machine, so 1 s would flake.
pub const SCRAPE_SECS: u64 = 2;
/// The scrape job of the daemon.
pub const JOB: &str = "dcguard";

/// Waits (up to [`HANG`]) until `done` holds; false if it never did.
pub async fn wait_until<F, Fut>(done: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait_for(HANG, done).await
}

/// Waits (up to `limit`, a hang guard) until `done` holds; false if it never did.
pub async fn wait_for<F, Fut>(limit: Duration, mut done: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let guard = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < guard {
        if done().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    done().await
}

/// One sample of an instant query: its labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A Prometheus process on 127.0.0.1:`port` with its TSDB in `dir`, scraping `targets`
/// every [`SCRAPE_SECS`] seconds.
pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    client: reqwest::Client,
}

impl Prometheus {
    pub async fn start(dir: &Path, targets: &[SocketAddr]) -> Prometheus {
        assert!(
            Path::new(PROMETHEUS).exists(),
            "{PROMETHEUS} is missing: run scripts/test.sh, which installs the test peers"
        );
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let conf = dir.join("prometheus.yml");
        std::fs::write(
            &conf,
            format!(
                "global:\n  scrape_interval: {SCRAPE_SECS}s\n  scrape_timeout: {SCRAPE_SECS}s\n  \
                 evaluation_interval: {SCRAPE_SECS}s\n\
                 scrape_configs:\n  - job_name: {JOB}\n    metrics_path: /metrics\n    \
                 static_configs:\n      - targets: [{}]\n",
                list.join(", ")
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", conf.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let prometheus = Prometheus {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            client,
        };
        let ready = wait_until(|| async {
            matches!(prometheus.get("/-/ready", &[]).await, Some((200, _)))
        })
        .await;
        assert!(
            ready,
            "prometheus not ready on {}: {}",
            prometheus.addr,
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
        prometheus
    }

    /// `GET path?params`: status and body, None when it does not answer.
    pub async fn get(&self, path: &str, params: &[(&str, &str)]) -> Option<(u16, String)> {
        let response = self
            .client
            .get(format!("http://{}{path}", self.addr))
            .query(params)
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    }

    /// The active targets of the daemon's job, as JSON objects.
    pub async fn targets(&self) -> Vec<Value> {
        let Some((200, body)) = self.get("/api/v1/targets", &[("state", "active")]).await else {
            return Vec::new();
        };
        let json: Value = serde_json::from_str(&body).unwrap();
        json["data"]["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t["labels"]["job"] == JOB)
            .collect()
    }

    /// An instant query; panics on an error answer (a malformed query is a test failure).
    pub async fn query(&self, promql: &str) -> Vec<Sample> {
        let (status, body) = self
            .get("/api/v1/query", &[("query", promql)])
            .await
            .expect("prometheus answers");
        let json: Value = serde_json::from_str(&body).unwrap();
        assert!(
            status == 200 && json["status"] == "success",
            "query `{promql}` failed: {status} {body}"
        );
        let data = &json["data"];
        match data["resultType"].as_str() {
            Some("vector") => data["result"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| Sample {
                    labels: s["metric"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                        .collect(),
                    value: s["value"][1].as_str().unwrap().parse().unwrap(),
                })
                .collect(),
            Some("scalar") => vec![Sample {
                labels: BTreeMap::new(),
                value: data["result"][1].as_str().unwrap().parse().unwrap(),
            }],
            other => panic!("query `{promql}`: unexpected result type {other:?}: {body}"),
        }
    }

    /// Waits until Prometheus holds at least three good scrapes of the daemon, the last
    /// taken after `after` (Unix s), so rates have samples to work with.
    pub async fn wait_scrapes_after(&self, after: f64) -> bool {
        let last = format!("timestamp(up{{job=\"{JOB}\"}} == 1)");
        let count = format!("count_over_time(up{{job=\"{JOB}\"}}[1m])");
        wait_until(|| async {
            self.query(&last)
                .await
                .first()
                .is_some_and(|s| s.value > after)
                && self
                    .query(&count)
                    .await
                    .first()
                    .is_some_and(|s| s.value >= 3.0)
        })
        .await
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `promtool check metrics` on a scrape; panics with its findings.
pub fn promtool_check(scrape: &str) {
    use std::io::Write;
    assert!(
        Path::new(PROMTOOL).exists(),
        "{PROMTOOL} is missing: run scripts/test.sh, which installs the test peers"
    );
    let mut child = Command::new(PROMTOOL)
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

/// `GET /metrics` of the daemon at `addr`.
pub async fn scrape(addr: SocketAddr) -> String {
    let (status, _, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The shipped configuration.
pub fn shipped() -> Config {
    match config::load(&shipped_dir()) {
        Ok(config) => config,
        Err(errors) => panic!("shipped config invalid: {errors}"),
    }
}

/// The three simulated sites read by the daemon and scraped by Prometheus.
pub struct Stack {
    pub config: Arc<Config>,
    pub daemon: SocketAddr,
    pub prometheus: Prometheus,
    shutdown: CancellationToken,
    publishers: CancellationToken,
    running: JoinHandle<anyhow::Result<()>>,
    sim: RunningSim,
    broker: Broker,
    _dir: tempfile::TempDir,
}

impl Stack {
    /// Starts everything and returns once Prometheus holds a scrape taken after every
    /// device of the three sites answered.
    pub async fn start() -> Stack {
        Self::start_with(|_| {}).await
    }

    /// [`Stack::start`] with the daemon's options changed by `tune` (e.g. shorter alarm
    /// or load-test settings).
    pub async fn start_with(tune: impl FnOnce(&mut RunOptions)) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::start(dir.path(), free_port()).await;
        let sim = Sim::start(SimOptions::new(shipped_dir()).ephemeral())
            .await
            .unwrap();
        let config = Arc::new(shipped());
        let mut options = RunOptions {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            endpoint_overrides: sim.endpoints().clone(),
            broker_overrides: BTreeMap::from([(
                "sim".to_owned(),
                ("127.0.0.1".to_owned(), broker.addr.port()),
            )]),
            // Never the shipped /var/lib/dcguard: tests keep their state in a temp dir.
            data_dir: Some(dir.path().join("data")),
            ..RunOptions::default()
        };
        tune(&mut options);
        let app = App::start(config.clone(), options).await.unwrap();
        // The facility facts (limits, rack limits, device kinds): idempotent, so this
        // stays right once `App::start` exports them itself.
        app.metrics().set_facility(&config);
        let daemon = app.http_addr();
        // Publishers start once the daemon's MQTT session is up, so their first
        // messages (leak sensors publish once a minute) count.
        let connected = wait_until(|| async {
            scrape(daemon)
                .await
                .contains("dcguard_mqtt_connects_total{broker=\"sim\"} 1")
        })
        .await;
        assert!(connected, "the daemon never connected to the broker");
        let publishers = CancellationToken::new();
        for site in sim.sites() {
            firmware_stubs::mqtt::spawn_publisher(
                Arc::new(site.spec.clone()),
                site.world.clone(),
                broker.addr,
                publishers.child_token(),
            );
        }
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(app.run_until(shutdown.clone()));

        let prometheus = Prometheus::start(dir.path(), &[daemon]).await;
        let devices: usize = config.sites.iter().map(|s| s.devices.len()).sum();
        // Every device answered at least once (on a loaded machine a few time out now and
        // then, so "all up in one scrape" may never be seen).
        // The first pass over the rack meters' serial gateways is long under load: a
        // longer hang guard (not a timing assertion).
        let answered = std::sync::Mutex::new(std::collections::BTreeSet::new());
        let all_up = wait_for(3 * HANG, || async {
            let scrape = scrape(daemon).await;
            let mut answered = answered.lock().unwrap();
            answered.extend(
                scrape
                    .lines()
                    .filter(|l| l.starts_with("dcguard_device_up{") && l.ends_with(" 1"))
                    .map(|l| l.trim_end_matches(" 1").to_owned()),
            );
            answered.len() == devices
        })
        .await;
        if !all_up {
            let scrape = scrape(daemon).await;
            let answered = answered.lock().unwrap();
            let down: Vec<&str> = scrape
                .lines()
                .filter(|l| l.starts_with("dcguard_device_up{"))
                .map(|l| l.trim_end_matches(" 0").trim_end_matches(" 1"))
                .filter(|l| !answered.contains(*l))
                .collect();
            panic!(
                "not every device of the three sites answered ({devices} devices), never: {down:?}"
            );
        }
        let after = Utc::now().timestamp_millis() as f64 / 1000.0;
        assert!(
            prometheus.wait_scrapes_after(after).await,
            "prometheus never scraped the daemon: {:?}",
            prometheus.targets().await
        );
        Stack {
            config,
            daemon,
            prometheus,
            shutdown,
            publishers,
            running,
            sim,
            broker,
            _dir: dir,
        }
    }

    /// The simulated world of `site` (to cut the utility, raise a leak, ...).
    pub fn world(&self, site: &str) -> firmware_stubs::world::SharedWorld {
        self.sim.world(site).expect("a simulated site")
    }

    /// One scrape of the daemon, as `/metrics` serves it.
    pub async fn scrape(&self) -> String {
        scrape(self.daemon).await
    }

    /// Stops the daemon in order (it must stop cleanly), then the peers.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let stopped = tokio::time::timeout(HANG, self.running).await;
        assert!(
            matches!(stopped, Ok(Ok(Ok(())))),
            "shutdown did not complete cleanly: {stopped:?}"
        );
        self.publishers.cancel();
        self.sim.shutdown().await;
        drop(self.prometheus);
        drop(self.broker);
    }
}
