//! The daemon's wiring: sources -> readings channel -> consumer (live state, metrics, log),
//! the stale-tracker tick, the HTTP server, and the ordered, deadline-bound shutdown.
//!
//! **Edges.** Every source (one Modbus poller task per endpoint, one MQTT task per
//! broker) and the stale tick send into one bounded `mpsc` channel of
//! [`RunOptions::readings_capacity`]. Policy **Block**: a full channel makes the sources
//! wait (pollers poll later, MQTT acknowledges later), so a reading on the alarm path is
//! never dropped. The single consumer updates the [`LiveState`] (latest reading per
//! point), the metrics and the debug log; rules and the API (issues 4 and 7) read the
//! live state.
//!
//! **Staleness.** The consumer shows every reading to a shared `StaleTracker`; a tick
//! task asks it every [`RunOptions::stale_tick`] for points without a good reading for
//! `daemon.stale_after_intervals` intervals and sends their stale readings into the same
//! channel. A stale reading overtaken by a good one in the channel is ignored.
//!
//! **Shutdown** ([`App::run_until`]), ordered and bound by `daemon.shutdown_grace`:
//! 1. cancel the sources and the tick; wait for them (MQTT acknowledges what it
//!    delivered). Their senders drop with them;
//! 2. the consumer drains what is left in the channel and ends when it is empty;
//! 3. the HTTP server stops last, so `/metrics` answers until the end.
//!
//! Tasks still running at the deadline are logged by name and aborted, and `run`
//! returns an error (the binary exits non-zero).
//!
//! `once` gives one scan of one device for commissioning (`dcguard run --once`).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::access;
use crate::alarms::task::{AlarmHandle, AlarmInput, AlarmTask, AlarmTaskOptions, Delivery};
use crate::config::model::{Broker, Config, DeviceTransport, ProfileTransport, SecretRef, Unit};
use crate::http::{HttpServer, RenderMetrics};
use crate::incidents::dispatcher::{self, DispatchSettings, DispatcherHandle, DispatcherStatus};
use crate::incidents::outbox::Outbox;
use crate::model::{BadReason, PointId, Quality, Reading, Value};
use crate::sinks::influxdb::{
    self as influx, InfluxOptions, InfluxSender, InfluxSink, InfluxStats,
};
use crate::sources::health::{DeviceHealth, DeviceKey, HealthRegistry};
use crate::sources::modbus::poller::{self, PollerOptions};
use crate::sources::mqtt::{self, MqttCounters, MqttStats, SourceOptions, payload};
use crate::sources::stale::StaleTracker;
use crate::store::Store;
use crate::telemetry::metrics::{
    AlarmMetrics, DashboardMetrics, DeviceSample, EndpointSample, Metrics, MetricsError,
    MqttSample, PointLabels,
};
use crate::ticketing::Adapter;

/// The store's file in the data directory.
pub const STORE_FILE: &str = "dcguard.sqlite";

/// How often shutdown logs the tasks it still waits for.
const REPORT_EVERY: Duration = Duration::from_secs(5);

/// Knobs of one run. `Default` is what `dcguard run` uses; tests and the demo override
/// addresses and make timeouts short.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Capacity of the readings channel (sources -> consumer). Full means the sources wait.
    pub readings_capacity: usize,
    /// The HTTP address instead of `daemon.listen` (port 0: any free port).
    pub listen: Option<SocketAddr>,
    /// Configured Modbus endpoint -> the address to dial instead (simulators, tests).
    pub endpoint_overrides: BTreeMap<SocketAddr, SocketAddr>,
    /// Broker id -> (host, port) to connect to instead of the configured ones.
    pub broker_overrides: BTreeMap<String, (String, u16)>,
    /// Modbus poller settings. Left at `PollerOptions::default()`, the daemon takes them
    /// from the configuration's `[modbus]` ([`RunOptions::poller_for`]); anything else
    /// (tests, the demo) replaces that section.
    pub poller: PollerOptions,
    /// MQTT source settings.
    pub mqtt: SourceOptions,
    /// Period of the stale check.
    pub stale_tick: Duration,
    /// The state directory (store) instead of `daemon.data_dir`.
    pub data_dir: Option<std::path::PathBuf>,
    /// The alarm task's settings (test hooks: shorter delays).
    pub alarms: AlarmTaskOptions,
    /// Delivery settings instead of `[ticketing.dispatch]` (tests: short retries).
    pub dispatch: Option<DispatchSettings>,
    /// The API's rate limit on authentication failures.
    pub api_limits: crate::api::ratelimit::LimitSettings,
}

impl RunOptions {
    /// The poller settings of a run of `config`: `self.poller` when it was changed from
    /// the default, else those of `[modbus]`.
    pub fn poller_for(&self, config: &Config) -> PollerOptions {
        if self.poller == PollerOptions::default() {
            PollerOptions::from_config(&config.modbus)
        } else {
            self.poller.clone()
        }
    }
}

impl Default for RunOptions {
    /// 4096 readings in flight, the configured addresses, the sources' defaults, a stale
    /// check every second.
    fn default() -> Self {
        RunOptions {
            readings_capacity: 4096,
            listen: None,
            endpoint_overrides: BTreeMap::new(),
            broker_overrides: BTreeMap::new(),
            poller: PollerOptions::default(),
            mqtt: SourceOptions::default(),
            stale_tick: Duration::from_secs(1),
            data_dir: None,
            alarms: AlarmTaskOptions::default(),
            dispatch: None,
            api_limits: crate::api::ratelimit::LimitSettings::default(),
        }
    }
}

/// The latest reading of every point, shared by the consumer (writer) and the API and
/// rules (readers). Clones share the data. The lock is held only for a map operation,
/// never across an `.await`.
#[derive(Debug, Clone, Default)]
pub struct LiveState {
    points: Arc<RwLock<HashMap<PointId, Reading>>>,
}

impl LiveState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `reading` unless the point already has a newer one (an MQTT backlog can
    /// deliver old samples late). Returns whether it was stored.
    pub fn update(&self, reading: Reading) -> bool {
        let mut points = self.points.write().unwrap_or_else(|e| e.into_inner());
        match points.get(reading.point()) {
            Some(current) if current.sampled_at() > reading.sampled_at() => false,
            _ => {
                points.insert(reading.point().clone(), reading);
                true
            }
        }
    }

    /// The latest reading of one point.
    pub fn get(&self, point: &PointId) -> Option<Reading> {
        self.read().get(point).cloned()
    }

    /// The latest readings of one device, by point name.
    pub fn device(&self, site: &str, device: &str) -> BTreeMap<String, Reading> {
        self.read()
            .iter()
            .filter(|(id, _)| &*id.site == site && &*id.device == device)
            .map(|(id, r)| (id.point.to_string(), r.clone()))
            .collect()
    }

    /// Every point's latest reading.
    pub fn snapshot(&self) -> BTreeMap<PointId, Reading> {
        self.read()
            .iter()
            .map(|(id, r)| (id.clone(), r.clone()))
            .collect()
    }

    /// Number of points with a reading.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// True before the first reading.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<PointId, Reading>> {
        // Plain data: a panic elsewhere leaves it readable.
        self.points.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where a device's readings come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Modbus,
    Mqtt,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Modbus => "modbus",
            Source::Mqtt => "mqtt",
        }
    }
}

#[derive(Debug)]
struct DeviceInfo {
    room: String,
    rack: String,
    source: Source,
}

/// What the consumer and the exporter need to know about devices: labels and transport.
#[derive(Debug, Default)]
struct Inventory {
    devices: HashMap<DeviceKey, DeviceInfo>,
    mqtt_devices: Vec<DeviceKey>,
    sites: Vec<String>,
}

impl Inventory {
    fn new(config: &Config) -> Inventory {
        let mut inventory = Inventory::default();
        for site in &config.sites {
            inventory.sites.push(site.id.clone());
            for device in &site.devices {
                let source = match device.transport {
                    DeviceTransport::Modbus { .. } => Source::Modbus,
                    DeviceTransport::Mqtt { .. } => Source::Mqtt,
                };
                let key = DeviceKey::new(&site.id, &device.id);
                if source == Source::Mqtt {
                    inventory.mqtt_devices.push(key.clone());
                }
                inventory.devices.insert(
                    key,
                    DeviceInfo {
                        room: device.room.clone(),
                        rack: device.rack.clone().unwrap_or_default(),
                        source,
                    },
                );
            }
        }
        inventory
    }

    fn key_of(point: &PointId) -> DeviceKey {
        DeviceKey {
            site: point.site.clone(),
            device: point.device.clone(),
        }
    }
}

/// Registers every configured point with its expected interval.
fn stale_tracker(config: &Config, now: DateTime<Utc>) -> StaleTracker {
    let mut tracker = StaleTracker::new(config.daemon.stale_after_intervals);
    for site in &config.sites {
        for device in &site.devices {
            match (&device.transport, &device.profile.transport) {
                (DeviceTransport::Modbus { poll, .. }, ProfileTransport::Modbus(profile)) => {
                    for point in &profile.points {
                        let id = PointId::new(&site.id, &device.id, &point.name);
                        tracker.expect(id, poll.of(point.class), now);
                    }
                }
                (DeviceTransport::Mqtt { .. }, ProfileTransport::Mqtt(profile)) => {
                    for point in &profile.points {
                        let id = PointId::new(&site.id, &device.id, &point.name);
                        tracker.expect(id, profile.interval, now);
                    }
                }
                // Validation pairs transports; a mismatch has no points to expect.
                _ => {}
            }
        }
    }
    tracker
}

/// `value` of a reading for the log: the value, or `-`.
struct ValueText<'a>(Option<&'a Value>);

impl fmt::Display for ValueText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(value) => value.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// A quality for logs and tables: `good`, `bad: REASON`, `stale`.
struct QualityText<'a>(&'a Quality);

impl fmt::Display for QualityText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Quality::Good => f.write_str("good"),
            Quality::Bad(reason) => write!(f, "bad: {reason}"),
            Quality::Stale => f.write_str("stale"),
        }
    }
}

/// The single reader of the readings channel.
struct Consumer {
    inventory: Arc<Inventory>,
    live: LiveState,
    metrics: Arc<Metrics>,
    stale: Arc<Mutex<StaleTracker>>,
    /// The InfluxDB sink's queue: offered without waiting (full: dropped, counted).
    influx: Option<InfluxSender>,
    /// The alarm task's readings channel: waited on when full (never dropped).
    alarms: Option<mpsc::Sender<AlarmInput>>,
}

impl Consumer {
    /// Runs until every sender is gone and the channel is empty (that is the drain).
    async fn run(mut self, mut readings_rx: mpsc::Receiver<Reading>) {
        let mut handled: u64 = 0;
        while let Some(reading) = readings_rx.recv().await {
            let forward = self.alarms.is_some().then(|| reading.clone());
            if self.handle(reading)
                && let (Some(alarms), Some(reading)) = (&self.alarms, forward)
                && alarms.send(AlarmInput::Reading(reading)).await.is_err()
            {
                // `run_until` sees the task's end and shuts the daemon down.
                tracing::error!("The alarm task has stopped; readings no longer reach it.");
                self.alarms = None;
            }
            handled += 1;
        }
        tracing::debug!(readings = handled, "Readings consumer stopped.");
    }

    /// Handles one reading; false when it is ignored (overtaken stale reading, unknown
    /// device), so it does not go on to the alarm task either.
    fn handle(&self, reading: Reading) -> bool {
        {
            let mut stale = self.stale.lock().unwrap_or_else(|e| e.into_inner());
            if matches!(reading.quality(), Quality::Stale) {
                if !stale.is_stale(reading.point()) {
                    // A good reading overtook this one in the channel.
                    return false;
                }
            } else {
                stale.observe(&reading);
            }
        }
        if let Some(sink) = &self.influx {
            sink.offer(reading.clone());
        }
        tracing::debug!(
            point = %reading.point(),
            value = %ValueText(reading.value()),
            quality = %QualityText(reading.quality()),
            "Reading."
        );
        let key = Inventory::key_of(reading.point());
        let Some(info) = self.inventory.devices.get(&key) else {
            // Every source builds its ids from the configuration: not reachable, but
            // never worth a panic.
            tracing::warn!(point = %reading.point(), "Reading of an unknown device ignored.");
            return false;
        };
        let labels = PointLabels {
            site: &reading.point().site,
            room: &info.room,
            rack: &info.rack,
            device: &reading.point().device,
            point: &reading.point().point,
        };
        // Metrics follow the live state: an old sample delivered late changes neither.
        let newest = self
            .live
            .get(reading.point())
            .is_none_or(|current| current.sampled_at() <= reading.sampled_at());
        if newest {
            self.metrics.observe(&reading, labels, info.source.as_str());
            self.live.update(reading);
        }
        true
    }
}

/// Copies the sources' health and counters into the metrics at scrape time.
struct Exporter {
    metrics: Arc<Metrics>,
    /// `[ticketing.dispatch] delivery_failing_after_secs`.
    delivery_failing_after: Duration,
    health: HealthRegistry,
    mqtt: Vec<(String, Arc<MqttStats>)>,
    live: LiveState,
    inventory: Arc<Inventory>,
    influx: Option<Arc<InfluxStats>>,
    /// The alarm metrics and the dispatchers' status, copied at scrape time.
    alarms: Option<(Arc<AlarmMetrics>, Vec<watch::Receiver<DispatcherStatus>>)>,
    /// Load tests (from the store) and access occupancy and findings, copied at scrape time.
    dashboard: Option<DashboardSource>,
}

/// Where the load-test and access metrics come from.
struct DashboardSource {
    metrics: DashboardMetrics,
    store: Store,
    ingest: Option<access::ingest::Ingest>,
    /// When the load tests were last read from the store (they change rarely).
    load_tests_read: Mutex<Option<std::time::Instant>>,
}

/// How often a scrape re-reads the recorded load tests from the store.
const LOAD_TESTS_REFRESH: Duration = Duration::from_secs(10);

impl DashboardSource {
    fn copy(&self) {
        {
            let mut read = self
                .load_tests_read
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if read.is_none_or(|at| at.elapsed() >= LOAD_TESTS_REFRESH) {
                match self.store.load_tests() {
                    Ok(records) => {
                        self.metrics.set_load_tests(&records);
                        *read = Some(std::time::Instant::now());
                    }
                    Err(error) => {
                        tracing::warn!(%error, "Cannot read the recorded load tests for /metrics.");
                    }
                }
            }
        }
        match &self.ingest {
            Some(ingest) => self.metrics.set_access(
                &ingest.occupancy_counts(),
                &ingest.findings_by_site_rule(),
                &ingest.stats(),
            ),
            None => self
                .metrics
                .set_access(&[], &BTreeMap::new(), &Default::default()),
        }
    }
}

impl Exporter {
    fn render(&self) -> Result<String, MetricsError> {
        if let Some(dashboard) = &self.dashboard {
            dashboard.copy();
        }
        if let Some((metrics, dispatchers)) = &self.alarms {
            let now = Utc::now();
            for d in dispatchers {
                let s = d.borrow();
                let failing = s.is_failing(now, self.delivery_failing_after);
                metrics.set_outbox(s.adapter, s.pending, s.parked, failing);
            }
        }
        if let Some(stats) = &self.influx {
            self.metrics.set_influx(&stats.sample());
        }
        for (key, health) in self.health.devices() {
            self.metrics
                .set_device(&key.site, &key.device, &device_sample(&health));
        }
        for (endpoint, health) in self.health.endpoints() {
            self.metrics.set_endpoint(
                &endpoint.to_string(),
                &EndpointSample {
                    connected: health.connected,
                    connects: health.connects,
                    connect_failures: health.connect_failures,
                    drops: health.drops,
                },
            );
        }
        for (broker, stats) in &self.mqtt {
            self.metrics
                .set_mqtt(broker, &mqtt_sample(&stats.snapshot()));
        }
        // One pass over the live state: stale points per site, MQTT device freshness.
        let mut stale_by_site: HashMap<String, usize> = HashMap::new();
        let mut mqtt_status: HashMap<DeviceKey, (bool, bool)> = HashMap::new();
        for (id, reading) in self.live.snapshot() {
            let stale = matches!(reading.quality(), Quality::Stale);
            if stale {
                *stale_by_site.entry(id.site.to_string()).or_default() += 1;
            }
            let key = Inventory::key_of(&id);
            if self
                .inventory
                .devices
                .get(&key)
                .is_some_and(|d| d.source == Source::Mqtt)
            {
                let status = mqtt_status.entry(key).or_default();
                status.0 |= reading.quality().is_good();
                status.1 |= stale;
            }
        }
        for site in &self.inventory.sites {
            self.metrics
                .set_points_stale(site, stale_by_site.get(site).copied().unwrap_or(0));
        }
        // An MQTT device is up while it has a good point and no stale one.
        for key in &self.inventory.mqtt_devices {
            let (good, stale) = mqtt_status.get(key).copied().unwrap_or_default();
            self.metrics
                .set_device_up(&key.site, &key.device, good && !stale);
        }
        self.metrics.render()
    }
}

fn device_sample(health: &DeviceHealth) -> DeviceSample {
    let e = &health.errors;
    let mut errors: Vec<(String, u64)> = [
        ("timeout", e.timeout),
        ("mismatch", e.mismatch),
        ("malformed", e.malformed),
        ("io", e.io),
        ("connect", e.connect),
        ("decode", e.decode),
    ]
    .into_iter()
    // Kinds appear once they happen: 1600 devices x 7 kinds of zeros would bloat
    // every scrape.
    .filter(|(_, n)| *n > 0)
    .map(|(k, n)| (k.to_owned(), n))
    .collect();
    for (code, n) in &e.exception {
        errors.push((format!("exception_0x{code:02x}"), *n));
    }
    DeviceSample {
        up: health.up,
        errors,
        requests: health.requests,
        scan_duration_seconds: health.last_scan_duration.map(|d| d.as_secs_f64()),
        requests_last_scan: health.requests_last_scan,
        last_success_seconds: health
            .last_success
            .map(|t| t.timestamp_millis() as f64 / 1000.0),
        config_problems: health.config_problems.len(),
    }
}

fn mqtt_sample(c: &MqttCounters) -> MqttSample {
    MqttSample {
        connects: c.connects,
        connection_errors: c.connection_errors,
        messages: c.messages,
        unknown_topic: c.unknown_topic,
        oversize: c.oversize,
        malformed: c.malformed,
        duplicate: c.duplicates,
        retained_ignored: c.retained_ignored,
        point_decode: c.point_errors,
        point_out_of_range: c.out_of_range,
        sequence_gaps: c.sequence_gaps,
    }
}

/// A started daemon. [`App::start`] returns once the HTTP listener is bound and every
/// source task is spawned; [`App::run_until`] waits for the shutdown signal and stops
/// everything in order.
pub struct App {
    http_addr: SocketAddr,
    http_routes: Vec<String>,
    live: LiveState,
    health: HealthRegistry,
    metrics: Arc<Metrics>,
    render: RenderMetrics,
    grace: Duration,
    sources_token: CancellationToken,
    http_token: CancellationToken,
    sources: Vec<(String, JoinHandle<()>)>,
    consumer: JoinHandle<()>,
    influx: Option<InfluxSink>,
    alarm_task: JoinHandle<()>,
    alarm_handle: AlarmHandle,
    store: Store,
    dispatch_token: CancellationToken,
    dispatchers: Vec<(String, DispatcherHandle)>,
    http: JoinHandle<()>,
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field("http_addr", &self.http_addr)
            .field("sources", &self.sources.len())
            .finish_non_exhaustive()
    }
}

impl App {
    /// Binds HTTP, spawns the consumer, the sources and the stale tick.
    pub async fn start(config: Arc<Config>, options: RunOptions) -> anyhow::Result<App> {
        let metrics = Arc::new(Metrics::new()?);
        // Limits, rack classes and design figures from the config: the dashboards draw
        // their thresholds from these, not from numbers written into the JSON.
        metrics.set_facility(&config);
        let inventory = Arc::new(Inventory::new(&config));
        let health = HealthRegistry::new();
        let live = LiveState::new();
        let stale = Arc::new(Mutex::new(stale_tracker(&config, Utc::now())));
        let (readings_tx, readings_rx) = mpsc::channel(options.readings_capacity.max(1));
        let sources_token = CancellationToken::new();
        let http_token = CancellationToken::new();
        // The InfluxDB sink: its own tasks and queue, fed by the consumer without waiting.
        let (influx_tx, influx_sink) = match InfluxOptions::from_config(&config)? {
            Some(mut opts) => {
                if let Some(dir) = &options.data_dir {
                    opts.spool.dir = dir.join("spool").join("influxdb");
                }
                let index = influx::SeriesIndex::from_config(&config);
                let (tx, sink) = influx::start(opts, index)?;
                (Some(tx), Some(sink))
            }
            None => (None, None),
        };
        // The store and the alarm task: alarm state restored before any reading arrives.
        let data_dir = options
            .data_dir
            .clone()
            .unwrap_or_else(|| config.daemon.data_dir.clone());
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
        let store = Store::open(&data_dir.join(STORE_FILE))?;
        let outbox = Outbox::new(store.clone());
        let alarm_metrics = Arc::new(metrics.alarm_metrics()?);
        let adapters = ticketing_adapters(&config)?;
        // Biometric ingestion (`/iclock`), when a site has readers: chain and store first.
        let ingest = match access::ingest::Ingest::start(
            &config,
            store.clone(),
            &data_dir,
            http_token.clone(),
        ) {
            Ok(ingest) => ingest,
            Err(error) => {
                sources_token.cancel();
                return Err(error).context("cannot start access ingestion");
            }
        };
        // The shelve maximum is configuration (`[alarms] shelve_max_h`), not a test knob.
        let mut alarm_options = options.alarms.clone();
        alarm_options.book.max_shelve = config.alarms.shelve_max;
        // Fire incidents name who is badged in the room (the access occupancy).
        if let Some(ingest) = &ingest {
            let ingest = ingest.clone();
            alarm_options.occupants = Some(Arc::new(move |site: &str, room: &str| {
                ingest
                    .people_in_room(site, room)
                    .unwrap_or_default()
                    .iter()
                    .map(occupant_line)
                    .collect()
            }));
        }
        let alarm_task = AlarmTask::start(
            &config,
            store.clone(),
            alarm_options,
            Some(alarm_metrics.clone()),
            Some(Delivery {
                outbox: outbox.clone(),
                adapters: adapters.iter().map(|a| a.name()).collect(),
            }),
        )?;
        // One dispatcher per enabled adapter, delivering from the outbox (stopped again if
        // the start fails below).
        let dispatch_token = CancellationToken::new();
        let dispatch_guard = dispatch_token.clone().drop_guard();
        let settings = options
            .dispatch
            .unwrap_or_else(|| DispatchSettings::from(&config.dispatch));
        let dispatchers: Vec<(String, DispatcherHandle)> = adapters
            .into_iter()
            .map(|adapter| {
                let name = format!("dispatch:{}", adapter.name());
                let handle =
                    dispatcher::spawn(outbox.clone(), adapter, settings, dispatch_token.clone());
                (name, handle)
            })
            .collect();
        // The internal alarm "incident delivery failing" (pseudo-site `daemon`), one per
        // adapter, from the dispatchers' status; ends with the dispatchers.
        let _delivery_watch = crate::alarms::task::watch_delivery(
            alarm_task.handle.clone(),
            dispatchers.iter().map(|(_, d)| d.status.clone()).collect(),
            config.dispatch.delivery_failing_after,
            dispatch_token.clone(),
        );

        // The internal alarm "time-series data lost", from the InfluxDB sink's counters.
        if let Some(sink) = &influx_sink {
            let _data_loss_watch = crate::alarms::task::watch_timeseries(
                alarm_task.handle.clone(),
                sink.stats(),
                dispatch_token.clone(),
            );
        }

        // MQTT sources first: their only failures (secrets, TLS roots) are start-up
        // errors, reported before anything else runs.
        let mut sources: Vec<(String, JoinHandle<()>)> = Vec::new();
        let mut mqtt_stats = Vec::new();
        let mut mqtt_sources = Vec::new();
        for mut plan in mqtt::plans(&config) {
            if let Some((host, port)) = options.broker_overrides.get(&plan.broker.id) {
                plan.broker.host.clone_from(host);
                plan.broker.port = *port;
            }
            let broker = plan.broker.id.clone();
            let source = match mqtt::spawn(
                plan,
                options.mqtt.clone(),
                readings_tx.clone(),
                sources_token.child_token(),
            ) {
                Ok(source) => source,
                Err(error) => {
                    sources_token.cancel();
                    return Err(error).context("cannot start an MQTT source");
                }
            };
            mqtt_stats.push((broker.clone(), source.stats()));
            mqtt_sources.push((broker, source));
        }

        let dashboard = DashboardSource {
            metrics: metrics.dashboard_metrics(&config)?,
            store: store.clone(),
            ingest: ingest.clone(),
            load_tests_read: Mutex::new(None),
        };
        let exporter = Arc::new(Exporter {
            metrics: metrics.clone(),
            health: health.clone(),
            mqtt: mqtt_stats,
            live: live.clone(),
            inventory: inventory.clone(),
            influx: influx_sink.as_ref().map(InfluxSink::stats),
            delivery_failing_after: config.dispatch.delivery_failing_after,
            alarms: Some((
                alarm_metrics,
                dispatchers.iter().map(|(_, d)| d.status.clone()).collect(),
            )),
            dashboard: Some(dashboard),
        });
        let render: RenderMetrics = Arc::new(move || exporter.render().map_err(|e| e.to_string()));
        let listen = options.listen.unwrap_or(config.daemon.listen);
        // The REST API: tokens, the audit chain (the ingestion's, or our own when no site
        // has readers), the guard.
        let append_audit = match &ingest {
            Some(ingest) => {
                let ingest = ingest.clone();
                let append: crate::api::audit::AppendRecords = Arc::new(move |records| {
                    ingest.append_audit(records).map_err(|e| e.to_string())
                });
                append
            }
            None => match own_audit_chain(&data_dir) {
                Ok(append) => append,
                Err(error) => {
                    sources_token.cancel();
                    return Err(error).context("cannot open the audit chain for the API");
                }
            },
        };
        let tokens = match crate::api::load_tokens(&config) {
            Ok(tokens) => tokens,
            Err(error) => {
                tracing::error!(
                    %error,
                    "API tokens not loaded; every route that needs a token answers 401."
                );
                crate::api::auth::TokenStore::empty()
            }
        };
        let readiness = Arc::new(crate::api::Readiness::default());
        let api_state = crate::api::ApiContext::new(crate::api::ApiParts {
            config: config.clone(),
            live: live.clone(),
            health: health.clone(),
            alarms: alarm_task.handle.clone(),
            store: store.clone(),
            outbox: outbox.clone(),
            tokens,
            append_audit,
            readiness: readiness.clone(),
            render_metrics: render.clone(),
            metrics: Some(metrics.api_metrics()?),
            limits: options.api_limits,
            data_dir: Some(data_dir.clone()),
            access: ingest.clone(),
        });
        let ingest_for_incidents = ingest.clone();
        let iclock = ingest.map(access::http::router).unwrap_or_default();
        let router = crate::api::router(api_state, iclock);
        let http_routes = crate::api::served_paths(&router);
        let server = match HttpServer::serve(listen, router, http_token.clone()).await {
            Ok(server) => server,
            Err(error) => {
                sources_token.cancel();
                return Err(error.into());
            }
        };
        let http_addr = server.local_addr();
        let http = server.into_task();

        let consumer = tokio::spawn(
            Consumer {
                inventory: inventory.clone(),
                live: live.clone(),
                metrics: metrics.clone(),
                stale: stale.clone(),
                influx: influx_tx,
                alarms: Some(alarm_task.readings),
            }
            .run(readings_rx),
        );

        for (broker, source) in mqtt_sources {
            sources.push((format!("mqtt:{broker}"), tokio::spawn(source.join())));
        }
        let mut endpoints = poller::endpoints(&config);
        for spec in &mut endpoints {
            if let Some(actual) = options.endpoint_overrides.get(&spec.configured) {
                spec.address = *actual;
            }
        }
        let names: Vec<String> = endpoints
            .iter()
            .map(|s| format!("modbus:{}", s.configured))
            .collect();
        let n_endpoints = endpoints.len();
        let pollers = poller::spawn(
            endpoints,
            &options.poller_for(&config),
            readings_tx.clone(),
            &health,
            &sources_token,
        );
        sources.extend(names.into_iter().zip(pollers));
        sources.push((
            "stale-tick".to_owned(),
            tokio::spawn(stale_tick(
                stale,
                options.stale_tick,
                readings_tx,
                sources_token.clone(),
            )),
        ));

        // Access findings into the incident pipeline (security incidents), an intake like
        // the sources: stopped with them.
        if let Some(ingest) = &ingest_for_incidents {
            sources.push((
                "access-incidents".to_owned(),
                access::escalate::spawn(
                    ingest.clone(),
                    alarm_task.handle.clone(),
                    config.clone(),
                    sources_token.child_token(),
                ),
            ));
        }
        readiness.set_sources_started();
        tracing::info!(
            listen = %http_addr,
            modbus_endpoints = n_endpoints,
            mqtt_brokers = sources.iter().filter(|(n, _)| n.starts_with("mqtt:")).count(),
            devices = inventory.devices.len(),
            "Daemon started."
        );
        Ok(App {
            http_addr,
            http_routes,
            live,
            health,
            metrics,
            render,
            grace: config.daemon.shutdown_grace,
            sources_token,
            http_token,
            sources,
            consumer,
            influx: influx_sink,
            alarm_task: alarm_task.join,
            alarm_handle: alarm_task.handle,
            store,
            dispatch_token: dispatch_guard.disarm(),
            dispatchers,
            http,
        })
    }

    /// The address the HTTP server listens on.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Every route path the HTTP server serves (checked against the access matrix).
    pub fn http_routes(&self) -> &[String] {
        &self.http_routes
    }

    /// The live state (latest reading per point).
    pub fn live(&self) -> LiveState {
        self.live.clone()
    }

    /// Device and endpoint health.
    pub fn health(&self) -> HealthRegistry {
        self.health.clone()
    }

    /// Operator actions on alarms and the read-only alarm view.
    pub fn alarms(&self) -> AlarmHandle {
        self.alarm_handle.clone()
    }

    /// The store.
    pub fn store(&self) -> Store {
        self.store.clone()
    }

    /// The metrics registry.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// One scrape, as `/metrics` serves it.
    pub fn render_metrics(&self) -> Result<String, String> {
        (self.render)()
    }

    /// Runs until `shutdown` is cancelled (or a core task dies), then shuts down in
    /// order: sources, drain, consumer, HTTP, all within `daemon.shutdown_grace`.
    pub async fn run_until(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let App {
            grace,
            sources_token,
            http_token,
            sources,
            mut consumer,
            influx,
            mut alarm_task,
            dispatch_token,
            dispatchers,
            mut http,
            ..
        } = self;
        let mut consumer_done = false;
        let mut http_done = false;
        let mut alarms_done = false;
        let died = tokio::select! {
            () = shutdown.cancelled() => None,
            _ = &mut consumer => { consumer_done = true; Some("readings consumer") }
            _ = &mut http => { http_done = true; Some("http") }
            _ = &mut alarm_task => { alarms_done = true; Some("alarm task") }
        };
        match died {
            None => tracing::info!("Shutdown requested: stopping the sources."),
            Some(task) => tracing::error!(
                task,
                "The task {task} died during execution; shutting down: stopping the sources."
            ),
        }
        let deadline = Instant::now() + grace;

        // 1. Stop intake. The sources' senders drop when their tasks end.
        sources_token.cancel();
        let mut stragglers = wait_stage("sources", sources, deadline).await;
        // 2. The consumer drains what is queued and ends when the channel is empty.
        tracing::info!("Sources stopped; the consumer drains the readings channel.");
        if !consumer_done {
            stragglers.extend(
                wait_stage(
                    "consumer",
                    vec![("consumer".to_owned(), consumer)],
                    deadline,
                )
                .await,
            );
        }
        // 2b. The consumer's end dropped the sink's queue: the sink writes or spools
        // its last batch and ends (a backlog stays on disk for the next run).
        if let Some(sink) = influx {
            stragglers.extend(
                wait_stage(
                    "influxdb",
                    vec![("influxdb".to_owned(), tokio::spawn(sink.join()))],
                    deadline,
                )
                .await,
            );
        }
        // 2c. The consumer's end closed the alarm task's input: it commits its last
        // transitions and the final snapshot, then ends.
        if !alarms_done {
            stragglers.extend(
                wait_stage("alarms", vec![("alarms".to_owned(), alarm_task)], deadline).await,
            );
        }
        // 2d. The dispatchers stop; what is not delivered stays in the outbox.
        dispatch_token.cancel();
        let dispatch_tasks = dispatchers
            .into_iter()
            .map(|(name, d)| {
                let task = d.task;
                (
                    name,
                    tokio::spawn(async move {
                        if let Ok(Err(e)) = task.await {
                            tracing::error!(error = %e, "A dispatcher ended with a store error.");
                        }
                    }),
                )
            })
            .collect();
        stragglers.extend(wait_stage("dispatchers", dispatch_tasks, deadline).await);
        tracing::info!("Readings drained; stopping HTTP.");
        // 3. HTTP last: /metrics answers until the end.
        http_token.cancel();
        if !http_done {
            stragglers.extend(wait_stage("http", vec![("http".to_owned(), http)], deadline).await);
        }
        if !stragglers.is_empty() {
            let list = stragglers.join(", ");
            tracing::error!("Shutdown did not complete in {grace:?}; aborting: {list}");
            anyhow::bail!("shutdown did not complete in {grace:?}; aborted: {list}");
        }
        if let Some(task) = died {
            anyhow::bail!("the task {task} died during execution");
        }
        tracing::info!("Shutdown complete.");
        Ok(())
    }
}

/// The enabled ticketing adapters of `[ticketing.*]`, their secrets read now.
fn ticketing_adapters(config: &Config) -> anyhow::Result<Vec<Arc<dyn Adapter>>> {
    use crate::ticketing::webhook::WebhookAdapter;
    use crate::ticketing::{pagerduty::PagerDutyAdapter, servicenow::ServiceNowAdapter};
    let timeout = config.dispatch.request_timeout;
    let mut adapters: Vec<Arc<dyn Adapter>> = Vec::new();
    if let Some(w) = config.webhook.as_ref().filter(|w| w.enabled) {
        let a = WebhookAdapter::from_config(w, timeout).context("ticketing.webhook")?;
        adapters.push(Arc::new(a));
    }
    if let Some(sn) = config.servicenow.as_ref().filter(|s| s.enabled) {
        let a = ServiceNowAdapter::from_config(sn, timeout).context("ticketing.servicenow")?;
        adapters.push(Arc::new(a));
    }
    if let Some(pd) = config.pagerduty.as_ref().filter(|p| p.enabled) {
        let a = PagerDutyAdapter::from_config(pd, timeout).context("ticketing.pagerduty")?;
        adapters.push(Arc::new(a));
    }
    Ok(adapters)
}

/// One person of a fire incident's life-safety list: name, role, ticket and entry time.
fn occupant_line(o: &access::occupancy::Occupant) -> String {
    let ticket = o
        .ticket
        .as_deref()
        .map(|t| format!(", ticket {t}"))
        .unwrap_or_default();
    format!(
        "{} ({}{ticket}, in since {})",
        o.person,
        o.role.as_str(),
        o.entered_at.format("%H:%M UTC")
    )
}

/// Opens `<data_dir>/access-audit.log` for the API alone (no site has readers, so no
/// ingestion owns the chain): the appender lock, the key, the log.
fn own_audit_chain(data_dir: &std::path::Path) -> anyhow::Result<crate::api::audit::AppendRecords> {
    use crate::access::audit::{AuditLog, CheckpointPolicy};
    use crate::access::ingest::{AUDIT_FILE, load_or_create_key, lock_appender};
    let lock = lock_appender(data_dir, Duration::from_secs(10))?;
    let key = load_or_create_key(data_dir)?;
    let log = AuditLog::open(
        &data_dir.join(AUDIT_FILE),
        key,
        CheckpointPolicy::default(),
        Utc::now(),
    )?;
    let chain = Arc::new(Mutex::new((log, lock)));
    Ok(Arc::new(move |records| {
        let mut guard = chain.lock().unwrap_or_else(|e| e.into_inner());
        guard
            .0
            .append_batch(records)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }))
}

/// Starts the daemon and runs it until `shutdown` is cancelled; see [`App`].
pub async fn run(
    config: Arc<Config>,
    options: RunOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    App::start(config, options).await?.run_until(shutdown).await
}

/// Sends the stale readings of each tick into the readings channel.
async fn stale_tick(
    stale: Arc<Mutex<StaleTracker>>,
    period: Duration,
    readings_tx: mpsc::Sender<Reading>,
    cancel: CancellationToken,
) {
    let mut interval = tokio::time::interval(period.max(Duration::from_millis(10)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            _ = interval.tick() => {}
        }
        let due = stale
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .tick(Utc::now());
        for reading in due {
            tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                sent = readings_tx.send(reading) => if sent.is_err() { return },
            }
        }
    }
}

/// Waits for `tasks` until `deadline`; logs the ones still running every few seconds;
/// aborts and returns the names of those still running at the deadline.
async fn wait_stage(
    stage: &'static str,
    tasks: Vec<(String, JoinHandle<()>)>,
    deadline: Instant,
) -> Vec<String> {
    let mut set = JoinSet::new();
    let mut running: BTreeMap<usize, (String, AbortHandle)> = BTreeMap::new();
    for (i, (name, handle)) in tasks.into_iter().enumerate() {
        running.insert(i, (name, handle.abort_handle()));
        set.spawn(async move { (i, handle.await) });
    }
    let mut report = tokio::time::interval_at(Instant::now() + REPORT_EVERY, REPORT_EVERY);
    while !running.is_empty() {
        tokio::select! {
            joined = set.join_next() => match joined {
                Some(Ok((i, result))) => {
                    if let Some((name, _)) = running.remove(&i)
                        && let Err(error) = result
                        && error.is_panic()
                    {
                        tracing::error!(task = %name, "The task {name} panicked.");
                    }
                }
                // The wrappers never panic and are not aborted before this point.
                Some(Err(_)) | None => break,
            },
            () = tokio::time::sleep_until(deadline) => {
                for (_, abort) in running.values() {
                    abort.abort();
                }
                set.abort_all();
                return running.into_values().map(|(name, _)| name).collect();
            }
            _ = report.tick() => {
                let names: Vec<&str> = running.values().map(|(n, _)| n.as_str()).collect();
                tracing::info!(stage, "Shutdown still waiting for: {}", names.join(", "));
            }
        }
    }
    Vec::new()
}

// === `dcguard run --once` ===

/// The device of `--once DEVICE[@SITE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnceTarget {
    /// Device id.
    pub device: String,
    /// Site id, needed when the device id exists in several sites.
    pub site: Option<String>,
}

impl std::str::FromStr for OnceTarget {
    type Err = String;

    /// `DEVICE` or `DEVICE@SITE`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (device, site) = match s.rsplit_once('@') {
            Some((device, site)) => (device, Some(site)),
            None => (s, None),
        };
        if device.is_empty() || site.is_some_and(str::is_empty) {
            return Err(format!("expected DEVICE or DEVICE@SITE, found `{s}`"));
        }
        Ok(OnceTarget {
            device: device.to_owned(),
            site: site.map(str::to_owned),
        })
    }
}

/// Why `--once` could not read the device.
#[derive(Debug, thiserror::Error)]
pub enum OnceError {
    /// No such device (in that site).
    #[error("no device `{device}`{}", site.as_deref().map(|s| format!(" in site `{s}`")).unwrap_or_default())]
    UnknownDevice {
        /// Device id.
        device: String,
        /// Site asked for.
        site: Option<String>,
    },
    /// The device id exists in several sites.
    #[error("device `{device}` exists in sites {sites}; name one as {device}@SITE")]
    Ambiguous {
        /// Device id.
        device: String,
        /// The sites, comma separated.
        sites: String,
    },
    /// The MQTT broker could not be used.
    #[error("broker `{broker}`: {message}")]
    Broker {
        /// Broker id.
        broker: String,
        /// What went wrong (never a secret).
        message: String,
    },
    /// No message from the sensor in time.
    #[error("no message on `{topic}` within {waited:?}")]
    NoMessage {
        /// The device's topic.
        topic: String,
        /// How long we waited.
        waited: Duration,
    },
}

/// One row of the `--once` table.
#[derive(Debug, Clone, PartialEq)]
pub struct OnceRow {
    /// Point name.
    pub point: String,
    /// Unit of the point.
    pub unit: Unit,
    /// The reading (`None`: the scan gave nothing for this point).
    pub reading: Option<Reading>,
}

/// One scan of one device.
#[derive(Debug, Clone, PartialEq)]
pub struct OnceReport {
    /// Site id.
    pub site: String,
    /// Device id.
    pub device: String,
    /// How it was read (`modbus 127.0.0.1:15001 unit 1`, `mqtt sim topic ...`).
    pub via: String,
    /// Rows in profile order.
    pub rows: Vec<OnceRow>,
}

impl OnceReport {
    /// True when every point read good.
    pub fn all_good(&self) -> bool {
        self.rows
            .iter()
            .all(|r| r.reading.as_ref().is_some_and(|r| r.quality().is_good()))
    }

    /// The table: POINT, VALUE, UNIT, QUALITY, aligned, one line per point.
    pub fn table(&self) -> String {
        let mut rows: Vec<[String; 4]> = vec![[
            "POINT".to_owned(),
            "VALUE".to_owned(),
            "UNIT".to_owned(),
            "QUALITY".to_owned(),
        ]];
        for row in &self.rows {
            let (value, quality) = match &row.reading {
                Some(r) => (table_value(r.value()), QualityText(r.quality()).to_string()),
                None => ("-".to_owned(), "no reading".to_owned()),
            };
            rows.push([row.point.clone(), value, row.unit.to_string(), quality]);
        }
        let mut widths = [0usize; 4];
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let good = self
            .rows
            .iter()
            .filter(|r| r.reading.as_ref().is_some_and(|r| r.quality().is_good()))
            .count();
        let mut out = format!("{}/{} via {}\n", self.site, self.device, self.via);
        for row in &rows {
            let line = format!(
                "{:<w0$}  {:<w1$}  {:<w2$}  {}",
                row[0],
                row[1],
                row[2],
                row[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
            );
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out.push_str(&format!("{good} of {} points good\n", self.rows.len()));
        out
    }
}

/// A value for the table: numbers with at most 6 decimals (scaling leaves binary noise
/// such as `27.200000000000003`), everything else as the log shows it.
fn table_value(value: Option<&Value>) -> String {
    match value {
        Some(Value::Number(n)) => {
            let text = format!("{n:.6}");
            let text = text.trim_end_matches('0').trim_end_matches('.');
            if text == "-0" {
                "0".to_owned()
            } else {
                text.to_owned()
            }
        }
        other => ValueText(other).to_string(),
    }
}

/// Reads one scan of one device: every poll class of a Modbus device once, or the
/// next message of an MQTT sensor (waiting up to two publish intervals plus 5 s).
pub async fn once(
    config: &Config,
    target: &OnceTarget,
    options: &RunOptions,
) -> Result<OnceReport, OnceError> {
    let matches: Vec<(&str, &crate::config::model::Device)> = config
        .sites
        .iter()
        .filter(|s| target.site.as_deref().is_none_or(|w| w == s.id))
        .flat_map(|s| {
            s.devices
                .iter()
                .filter(|d| d.id == target.device)
                .map(move |d| (s.id.as_str(), d))
        })
        .collect();
    let (site, device) = match matches.as_slice() {
        [] => {
            return Err(OnceError::UnknownDevice {
                device: target.device.clone(),
                site: target.site.clone(),
            });
        }
        [one] => *one,
        many => {
            return Err(OnceError::Ambiguous {
                device: target.device.clone(),
                sites: many.iter().map(|(s, _)| *s).collect::<Vec<_>>().join(", "),
            });
        }
    };
    let key = DeviceKey::new(site, &device.id);
    let (via, readings, units): (String, Vec<Reading>, Vec<(String, Unit)>) =
        match (&device.transport, &device.profile.transport) {
            (DeviceTransport::Modbus { endpoint, unit, .. }, ProfileTransport::Modbus(profile)) => {
                let spec = poller::endpoints(config)
                    .into_iter()
                    .find(|s| s.configured == *endpoint)
                    .map(|mut spec| {
                        spec.devices.retain(|d| d.key == key);
                        if let Some(actual) = options.endpoint_overrides.get(endpoint) {
                            spec.address = *actual;
                        }
                        spec
                    });
                let readings = match spec {
                    Some(spec) => {
                        poller::scan_once(spec, options.poller_for(config), &HealthRegistry::new())
                            .await
                    }
                    None => Vec::new(),
                };
                (
                    format!("modbus {endpoint} unit {unit}"),
                    readings,
                    profile
                        .points
                        .iter()
                        .map(|p| (p.name.clone(), p.unit))
                        .collect(),
                )
            }
            (DeviceTransport::Mqtt { broker, topic }, ProfileTransport::Mqtt(profile)) => {
                let Some(mut broker_config) = config.brokers.get(broker).cloned() else {
                    return Err(OnceError::Broker {
                        broker: broker.clone(),
                        message: "not configured".to_owned(),
                    });
                };
                if let Some((host, port)) = options.broker_overrides.get(broker) {
                    broker_config.host.clone_from(host);
                    broker_config.port = *port;
                }
                let waited = profile.interval.saturating_mul(2) + Duration::from_secs(5);
                let (sampled_at, values) =
                    once_mqtt(&broker_config, topic, profile, waited).await?;
                let readings = profile
                    .points
                    .iter()
                    .zip(values)
                    .map(|(p, v)| {
                        Reading::from_result(PointId::new(site, &device.id, &p.name), v, sampled_at)
                    })
                    .collect();
                (
                    format!("mqtt {broker} topic {topic}"),
                    readings,
                    profile
                        .points
                        .iter()
                        .map(|p| (p.name.clone(), p.unit))
                        .collect(),
                )
            }
            _ => (
                String::from("nothing (transport and profile disagree)"),
                Vec::new(),
                Vec::new(),
            ),
        };
    let mut by_point: HashMap<String, Reading> = readings
        .into_iter()
        .map(|r| (r.point().point.to_string(), r))
        .collect();
    let rows = units
        .into_iter()
        .map(|(point, unit)| OnceRow {
            reading: by_point.remove(&point),
            point,
            unit,
        })
        .collect();
    Ok(OnceReport {
        site: site.to_owned(),
        device: device.id.clone(),
        via,
        rows,
    })
}

/// Waits for the next message on `topic` with a throw-away clean session (nothing is
/// left queued on the broker for this client), and decodes it by the profile.
async fn once_mqtt(
    broker: &Broker,
    topic: &str,
    profile: &crate::config::model::MqttProfile,
    wait: Duration,
) -> Result<(DateTime<Utc>, Vec<Result<Value, BadReason>>), OnceError> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, Transport};
    let broker_error = |message: String| OnceError::Broker {
        broker: broker.id.clone(),
        message,
    };
    let client_id = format!("{}-once-{}", broker.client_id, std::process::id());
    let mut o = MqttOptions::new(client_id, broker.host.clone(), broker.port);
    o.set_keep_alive(broker.keep_alive.max(Duration::from_secs(5)))
        .set_clean_session(true);
    if broker.username.is_some() || broker.password.is_some() {
        let password = match &broker.password {
            Some(secret) => read_secret(secret).map_err(broker_error)?,
            None => String::new(),
        };
        o.set_credentials(broker.username.clone().unwrap_or_default(), password);
    }
    if broker.tls {
        let transport = std::panic::catch_unwind(Transport::tls_with_default_config)
            .map_err(|_| broker_error("the platform's root certificates did not load".into()))?;
        o.set_transport(transport);
    }
    let (client, mut eventloop) = AsyncClient::new(o, 16);
    let qos = if profile.qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    client
        .subscribe(topic, qos)
        .await
        .map_err(|e| broker_error(e.to_string()))?;
    let deadline = Instant::now() + wait;
    let result = loop {
        let event = match tokio::time::timeout_at(deadline, eventloop.poll()).await {
            Err(_) => {
                break Err(OnceError::NoMessage {
                    topic: topic.to_owned(),
                    waited: wait,
                });
            }
            Ok(event) => event,
        };
        match event {
            Ok(Event::Incoming(Packet::Publish(publish))) if publish.topic == topic => {
                let received_at = Utc::now();
                match payload::decode(profile, &publish.payload, received_at) {
                    // A retained message of unknown age is not a reading of now.
                    Ok(decoded) if publish.retain && !decoded.ts_from_payload => continue,
                    Ok(decoded) => break Ok((decoded.sampled_at, decoded.values)),
                    Err(error) => {
                        let reason = error.reason();
                        break Ok((
                            received_at,
                            profile.points.iter().map(|_| Err(reason.clone())).collect(),
                        ));
                    }
                }
            }
            Ok(_) => {}
            Err(error) => {
                tracing::debug!(%error, "Broker not reachable yet; retrying.");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    let _ = client.try_disconnect();
    result
}

/// Reads a secret by reference; the error names the reference, never the value.
fn read_secret(secret: &SecretRef) -> Result<String, String> {
    match secret {
        SecretRef::Env(var) => {
            std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))
        }
        SecretRef::File(path) => std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
            .map_err(|e| format!("cannot read {}: {}", path.display(), e.kind())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::seconds(secs)
    }

    /// A consumer and exporter for one MQTT sensor `dc/th-a` (room dh1, rack A11).
    fn one_sensor() -> (Consumer, Exporter, Arc<Mutex<StaleTracker>>, PointId) {
        let key = DeviceKey::new("dc", "th-a");
        let mut inventory = Inventory::default();
        inventory.sites.push("dc".into());
        inventory.mqtt_devices.push(key.clone());
        inventory.devices.insert(
            key,
            DeviceInfo {
                room: "dh1".into(),
                rack: "A11".into(),
                source: Source::Mqtt,
            },
        );
        let inventory = Arc::new(inventory);
        let id = PointId::new("dc", "th-a", "temperature");
        let mut tracker = StaleTracker::new(3);
        tracker.expect(id.clone(), Duration::from_secs(10), t(0));
        let stale = Arc::new(Mutex::new(tracker));
        let metrics = Arc::new(Metrics::new().unwrap());
        let live = LiveState::new();
        let consumer = Consumer {
            inventory: inventory.clone(),
            live: live.clone(),
            metrics: metrics.clone(),
            stale: stale.clone(),
            influx: None,
            alarms: None,
        };
        let exporter = Exporter {
            metrics,
            health: HealthRegistry::new(),
            mqtt: Vec::new(),
            live,
            inventory,
            influx: None,
            alarms: None,
            dashboard: None,
            delivery_failing_after: Duration::from_secs(60),
        };
        (consumer, exporter, stale, id)
    }

    #[test]
    fn consumer_feeds_live_state_metrics_and_staleness() {
        let (consumer, exporter, stale, id) = one_sensor();
        let labels = PointLabels {
            site: "dc",
            room: "dh1",
            rack: "A11",
            device: "th-a",
            point: "temperature",
        };
        consumer.handle(Reading::good(id.clone(), Value::Number(22.5), t(1)));
        assert!(consumer.live.get(&id).unwrap().quality().is_good());
        assert_eq!(consumer.metrics.reading_value(labels), Some(22.5));
        let scrape = exporter.render().unwrap();
        assert!(scrape.contains("dcguard_device_up{device=\"th-a\",site=\"dc\"} 1"));
        assert!(scrape.contains("dcguard_points_stale{site=\"dc\"} 0"));

        // A stale reading overtaken in the channel by a (slightly older) good one is
        // ignored: the good reading cleared the tracker.
        let overtaken = stale.lock().unwrap().tick(t(40));
        assert_eq!(overtaken.len(), 1);
        consumer.handle(Reading::good(id.clone(), Value::Number(22.6), t(35)));
        consumer.handle(overtaken.into_iter().next().unwrap());
        assert!(consumer.live.get(&id).unwrap().quality().is_good());

        // A real silence: stale in the live state, no number in the metrics.
        let due = stale.lock().unwrap().tick(t(80));
        assert_eq!(due.len(), 1);
        for reading in due {
            consumer.handle(reading);
        }
        assert_eq!(consumer.live.get(&id).unwrap().quality(), &Quality::Stale);
        assert_eq!(consumer.metrics.reading_value(labels), None);
        let scrape = exporter.render().unwrap();
        assert!(scrape.contains("dcguard_device_up{device=\"th-a\",site=\"dc\"} 0"));
        assert!(scrape.contains("dcguard_points_stale{site=\"dc\"} 1"));
        assert!(scrape.contains("dcguard_readings_total{quality=\"stale\",source=\"mqtt\"} 1"));

        // A late old sample changes nothing; unknown devices are ignored.
        consumer.handle(Reading::good(id.clone(), Value::Number(20.0), t(50)));
        assert_eq!(consumer.live.get(&id).unwrap().quality(), &Quality::Stale);
        consumer.handle(Reading::good(
            PointId::new("dc", "ghost", "x"),
            Value::Bool(true),
            t(90),
        ));
        assert_eq!(consumer.live.len(), 1);
    }

    #[test]
    fn once_targets() {
        let t: OnceTarget = "ups-1@dc".parse().unwrap();
        assert_eq!(t.device, "ups-1");
        assert_eq!(t.site.as_deref(), Some("dc"));
        let t: OnceTarget = "ups-1".parse().unwrap();
        assert_eq!(t.site, None);
        assert!("@dc".parse::<OnceTarget>().is_err());
        assert!("ups-1@".parse::<OnceTarget>().is_err());
    }

    #[test]
    fn live_state_keeps_the_newest_reading() {
        let live = LiveState::new();
        let id = PointId::new("dc", "th-a", "temperature");
        let t = |s| DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::seconds(s);
        assert!(live.update(Reading::good(id.clone(), Value::Number(22.0), t(10))));
        assert!(!live.update(Reading::good(id.clone(), Value::Number(21.0), t(5))));
        assert_eq!(live.get(&id).unwrap().value(), Some(&Value::Number(22.0)));
        assert!(live.update(Reading::stale(id.clone(), t(40))));
        assert_eq!(live.get(&id).unwrap().value(), None);
        assert_eq!(live.device("dc", "th-a").len(), 1);
    }

    #[test]
    fn table_shows_reasons_and_counts() {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let report = OnceReport {
            site: "dc".into(),
            device: "ups-1".into(),
            via: "modbus 127.0.0.1:15001 unit 1".into(),
            rows: vec![
                OnceRow {
                    point: "load_pct".into(),
                    unit: Unit::Pct,
                    reading: Some(Reading::good(
                        PointId::new("dc", "ups-1", "load_pct"),
                        Value::Number(41.5),
                        at,
                    )),
                },
                OnceRow {
                    point: "battery_temp".into(),
                    unit: Unit::DegC,
                    reading: Some(Reading::bad(
                        PointId::new("dc", "ups-1", "battery_temp"),
                        BadReason::Timeout,
                        at,
                    )),
                },
            ],
        };
        assert!(!report.all_good());
        let table = report.table();
        assert!(table.contains("load_pct      41.5   %     good"), "{table}");
        assert!(
            table.contains("battery_temp  -      degC  bad: timeout"),
            "{table}"
        );
        assert!(table.ends_with("1 of 2 points good\n"));
        assert_eq!(
            table_value(Some(&Value::Number(27.200000000000003))),
            "27.2"
        );
        assert_eq!(table_value(Some(&Value::Number(-0.0000001))), "0");
        assert_eq!(table_value(Some(&Value::Number(1500.0))), "1500");
        assert_eq!(table_value(None), "-");
    }
}
