//! The API tests' rig: the shipped three-site configuration against the firmware stubs
//! (Modbus on ephemeral ports) and a real Mosquitto, the daemon in-process on a free
//! port with one token per role in a tokens file, and a small JSON client.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dcguard::alarms::task::{AlarmHandle, AlarmTaskOptions};
use dcguard::api::auth::{Role, new_token};
use dcguard::api::ratelimit::LimitSettings;
use dcguard::app::{App, RunOptions};
use dcguard::config::model::Dispatch;
use dcguard::config::{self, Config};
use dcguard::incidents::dispatcher::DispatchSettings;
use dcguard::sources::modbus::backoff::BackoffPolicy;
use dcguard::sources::modbus::poller::PollerOptions;
use dcguard::sources::mqtt::SourceOptions;
use firmware_stubs::receivers::webhook::WebhookReceiver;
use firmware_stubs::sim::{RunningSim, Sim, SimOptions};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::common::{Broker, config_copy, free_port, shipped_dir};

/// Hang guard for every wait (not a timing assertion).
pub const HANG: Duration = Duration::from_secs(30);
pub const WEBHOOK_KEY: &str = "test-only-webhook-key";

/// Waits (up to [`HANG`]) until `done` holds; false if it never did.
pub async fn wait_for(mut done: impl FnMut() -> bool) -> bool {
    let guard = tokio::time::Instant::now() + HANG;
    while tokio::time::Instant::now() < guard {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done()
}

/// How to start the rig.
pub struct RigOptions {
    /// `[auth] metrics_access = "token"` instead of loopback.
    pub metrics_token: bool,
    /// Rate limit (tests that walk many refusals raise it).
    pub limits: LimitSettings,
    /// A webhook receiver (incidents are delivered to it).
    pub webhook: bool,
    /// Extra tokens file entries (e.g. a canary token's).
    pub extra_tokens: String,
    /// Alarm task settings.
    pub alarms: AlarmTaskOptions,
    /// TOML appended to `dcguard.toml` (e.g. an `[alarms]` table).
    pub daemon_toml: String,
}

impl Default for RigOptions {
    fn default() -> Self {
        RigOptions {
            metrics_token: false,
            limits: LimitSettings::default(),
            webhook: false,
            extra_tokens: String::new(),
            daemon_toml: String::new(),
            alarms: AlarmTaskOptions {
                tick: Duration::from_millis(250),
                snapshot_every: Duration::from_millis(250),
                // On-delays of at most 1 s: the shipped ones would make tests minutes long.
                params: Some(Arc::new(|_, mut p| {
                    p.on_delay = p.on_delay.min(Duration::from_secs(1));
                    p
                })),
                ..AlarmTaskOptions::default()
            },
        }
    }
}

/// A running daemon with simulators.
pub struct ApiRig {
    pub dir: tempfile::TempDir,
    _broker: Broker,
    pub sim: RunningSim,
    pub config: Arc<Config>,
    pub data: PathBuf,
    pub addr: SocketAddr,
    pub tokens: BTreeMap<Role, String>,
    pub alarms: AlarmHandle,
    pub receiver: Option<WebhookReceiver>,
    pub client: reqwest::Client,
    /// Every route path the daemon serves.
    pub routes: Vec<String>,
    shutdown: CancellationToken,
    running: JoinHandle<anyhow::Result<()>>,
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

impl ApiRig {
    pub async fn start(options: RigOptions) -> ApiRig {
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

        let mut tokens = BTreeMap::new();
        let mut file = String::new();
        for role in Role::ALL {
            let t = new_token(&format!("test-{role}"), role).unwrap();
            file.push_str(&t.entry);
            tokens.insert(role, t.token);
        }
        file.push_str(&options.extra_tokens);
        let tokens_file = dir.path().join("tokens.toml");
        std::fs::write(&tokens_file, file).unwrap();

        let receiver = if options.webhook {
            Some(WebhookReceiver::start(WEBHOOK_KEY).await.unwrap())
        } else {
            None
        };
        let main = config_dir.join("dcguard.toml");
        let mut text = std::fs::read_to_string(&main).unwrap();
        let shipped = "tokens_file = \"/etc/dcguard/tokens.toml\"";
        assert!(text.contains(shipped), "shipped [auth] moved");
        text = text.replace(
            shipped,
            &format!("tokens_file = \"{}\"", tokens_file.display()),
        );
        // The shutdown bound is a hang guard here: a loaded machine (2 cores, many test
        // processes) may need more than the shipped 10 s to commit the last snapshot.
        let shipped = "shutdown_grace_secs = 10";
        assert!(text.contains(shipped), "shipped shutdown_grace_secs moved");
        text = text.replacen(shipped, "shutdown_grace_secs = 60", 1);
        if options.metrics_token {
            let shipped = "metrics_access = \"loopback\"";
            assert!(text.contains(shipped), "shipped metrics_access moved");
            text = text.replace(shipped, "metrics_access = \"token\"");
        }
        if let Some(r) = &receiver {
            let shipped = "enabled = false\nurl = \"http://127.0.0.1:9800/incidents\"\n\
                           hmac_secret_env = \"DCGUARD_WEBHOOK_SECRET\"";
            assert!(text.contains(shipped), "shipped webhook block moved");
            let secret = dir.path().join("webhook.key");
            std::fs::write(&secret, WEBHOOK_KEY).unwrap();
            text = text.replace(
                shipped,
                &format!(
                    "enabled = true\nurl = \"{}\"\nhmac_secret_file = \"{}\"",
                    r.url(),
                    secret.display()
                ),
            );
        }
        text.push_str(&options.daemon_toml);
        std::fs::write(&main, text).unwrap();
        let config = match config::load(&config_dir) {
            Ok(c) => Arc::new(c),
            Err(errors) => panic!("test config invalid: {errors}"),
        };
        let data = dir.path().join("data");
        let mut dispatch = DispatchSettings::from(&Dispatch::default());
        dispatch.request_timeout = Duration::from_secs(2);
        dispatch.retry_min = Duration::from_millis(100);
        dispatch.retry_max = Duration::from_millis(500);
        dispatch.idle_poll = Duration::from_millis(500);
        let run = RunOptions {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            poller: fast_poller(),
            mqtt: SourceOptions {
                backoff_min: Duration::from_millis(100),
                backoff_max: Duration::from_millis(500),
                shutdown_drain: Duration::from_secs(1),
                ..SourceOptions::default()
            },
            data_dir: Some(data.clone()),
            alarms: options.alarms,
            dispatch: Some(dispatch),
            api_limits: options.limits,
            ..RunOptions::default()
        };
        let app = App::start(config.clone(), run).await.unwrap();
        let addr = app.http_addr();
        let alarms = app.alarms();
        let routes = app.http_routes().to_vec();
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(app.run_until(shutdown.clone()));
        ApiRig {
            dir,
            _broker: broker,
            sim,
            config,
            data,
            addr,
            tokens,
            alarms,
            receiver,
            routes,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            shutdown,
            running,
        }
    }

    pub fn token(&self, role: Role) -> &str {
        &self.tokens[&role]
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Any request: (status, headers, body text).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, reqwest::header::HeaderMap, String) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (status, headers, resp.text().await.unwrap())
    }

    /// GET as a role: (status, JSON).
    pub async fn get(&self, path: &str, role: Option<Role>) -> (u16, Value) {
        let token = role.map(|r| self.token(r).to_owned());
        let (status, _, text) = self.call("GET", path, token.as_deref(), None).await;
        (status, parse(&text))
    }

    /// POST JSON as a role: (status, JSON).
    pub async fn post(&self, path: &str, role: Option<Role>, body: &Value) -> (u16, Value) {
        let token = role.map(|r| self.token(r).to_owned());
        let (status, _, text) = self.call("POST", path, token.as_deref(), Some(body)).await;
        (status, parse(&text))
    }

    /// Raises the VESDA alarms of one DC detector (smoke at 2.5 %/m) and waits until an
    /// alarm of it is active; returns its (site, rule, scope).
    pub async fn raise_smoke(&self, detector: &str) -> (String, String, String) {
        let world = self.sim.world("dc").expect("site simulated");
        world
            .lock()
            .unwrap()
            .apply(&firmware_stubs::scenario::Action::Smoke {
                device: detector.to_owned(),
                to: 2.5,
                over_secs: 0.0,
            })
            .unwrap();
        let scope = format!("device:{detector}");
        let alarms = self.alarms.clone();
        let found = || {
            alarms
                .view()
                .alarms
                .iter()
                .find(|a| a.key.scope == scope && a.state.is_active())
                .map(|a| (a.key.site.clone(), a.key.rule.clone(), a.key.scope.clone()))
        };
        assert!(
            wait_for(|| found().is_some()).await,
            "no alarm of {detector}"
        );
        found().unwrap()
    }

    /// The `api_request` records of the audit chain, as payloads with actor and time.
    pub fn audit_records(&self) -> Vec<Value> {
        audit_records(&self.data)
    }

    /// Stops the daemon in order; returns the temporary directory (with `data`), which
    /// is removed when dropped.
    pub async fn stop(self) -> tempfile::TempDir {
        self.shutdown.cancel();
        self.running.await.unwrap().unwrap();
        self.dir
    }
}

/// The `api_request` records of the chain in `data`.
pub fn audit_records(data: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(data.join("access-audit.log")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|l| l["record"].clone())
        .filter(|r| r["kind"] == "api_request")
        .collect()
}

/// JSON of a body, or the text as a JSON string when it is not JSON.
pub fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// Asserts the one error shape with `code`: exactly `{"error":{"code","message"}}`.
pub fn assert_error(status: u16, body: &Value, want_status: u16, code: &str) {
    assert_eq!(status, want_status, "{body}");
    let obj = body
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {body}"));
    assert_eq!(obj.len(), 1, "{body}");
    let error = body["error"]
        .as_object()
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(error.len(), 2, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(!message.is_empty());
    for leak in ["/src/", ".rs:", "SELECT", "sqlite", "panicked", "/tmp/"] {
        assert!(!message.contains(leak), "{message}");
    }
}
