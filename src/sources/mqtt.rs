//! MQTT source: one rumqttc session per broker, turning sensor messages into readings.
//!
//! [`plans`] groups the configured MQTT devices by broker; [`spawn`] runs one broker:
//!
//! * **Session.** Persistent (`clean_session = false`, the configured stable client id),
//!   subscriptions at the profile's QoS (1 for the shipped sensors), so messages
//!   published while the daemon was disconnected or stopped are delivered when it comes
//!   back, within the broker's queue (Mosquitto `max_queued_messages`, default 1000 per
//!   client: size it to at least twice the worst expected backlog). Every profile's topic
//!   pattern is subscribed with `+` for `{site}`, `{room}` and `{device}`, again after
//!   **every** ConnAck, whatever the broker says about the session. TCP_NODELAY is on;
//!   TLS uses rustls with the platform's root certificates; the password comes from the
//!   broker's `SecretRef` and is never logged (rumqttc's `MqttOptions` Debug prints
//!   credentials, so the options are never logged either).
//! * **Routing.** A message belongs to the device whose configured topic is exactly its
//!   topic (a map built at start); other topics are counted (`unknown_topic`) and dropped.
//! * **Payloads** are decoded by [`payload`]. A message that is too large or not JSON
//!   gives a **bad reading (`Decode`) for every point of its device**: the consumers see
//!   at once that the sensor sends garbage, and no number. A field missing or of the
//!   wrong type makes that point bad; a value outside the profile's range is
//!   `OutOfRange`. Each problem is counted and logged at most once a minute per topic.
//! * **Deduplication.** For profiles with `sequence_json`, a message whose sequence
//!   number and body were both seen among the device's last [`SourceOptions::dedup_window`]
//!   messages is a redelivery (QoS 1 after a reconnect, or a publisher's retry) and is
//!   dropped and counted. The body is part of the key so that a sensor that restarts
//!   and counts from 1 again is not mistaken for a duplicate. Jumps forward in the
//!   sequence are counted as `sequence_gaps` (messages the broker dropped or never got).
//! * **Retained messages** (delivered because of a subscription, flag `retain`) without a
//!   payload `ts` are ignored and counted: their age is unknown, and stamping them with
//!   the receive time would present an old value as fresh.
//! * **Hand-over and acks.** Acks are manual: a QoS 1 message is acknowledged to the
//!   broker only after all its readings were accepted by the bounded readings channel
//!   (awaiting `send` is the backpressure; nothing is dropped). A crash between the two
//!   means a redelivery, never a loss. Three tasks share the work: the *network* task
//!   polls rumqttc and decodes; a *delivery* task hands readings over; an *ack* task
//!   passes the acks to rumqttc. Acks never hold up the hand-over: rumqttc takes at most
//!   one request (ack) from its channel per poll, and while messages keep arriving most
//!   polls return messages, so acks are taken more slowly than messages arrive, and
//!   Mosquitto 2.0.11 was seen sending over 1000 unacknowledged messages with
//!   `max_inflight_messages` 20 or 100. When the delivery task itself awaited each ack,
//!   rumqttc's request channel filled, the delivery task stopped, the network task
//!   stopped on the full hand-over queue, nobody polled rumqttc, and the source stalled
//!   for good (test `a_burst_with_a_wide_broker_window_never_stalls`). Now the pending
//!   acks wait in the ack task's queue (packet id and QoS, 4 bytes each; at most 65,535
//!   can be outstanding, one per MQTT packet id), and the only thing that holds the
//!   network task back is the readings consumer: a full readings channel stops the
//!   hand-over, then the network task, then reading from the socket (TCP backpressure),
//!   which does not depend on the broker's window.
//! * **Errors** never end the task: it reconnects with exponential backoff and jitter
//!   ([`SourceOptions::backoff_min`] doubling up to `backoff_max`). Only the
//!   cancellation token ends it: the source stops taking messages, delivers and acks
//!   what it already took, disconnects, and gives up after `shutdown_drain` (anything
//!   unacknowledged is redelivered to the next run).
//! * A rumqttc packet larger than [`SourceOptions::max_packet_bytes`] breaks the
//!   connection before the profile limit can reject it, and QoS 1 would redeliver it
//!   forever: set the broker's `message_size_limit` below that (1 MiB is a good value).

pub mod payload;

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, NetworkOptions, Outgoing, Packet,
    Publish, QoS, SubscribeFilter, SubscribeReasonCode, Transport,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::model::{Broker, Config, Device, DeviceTransport, ProfileTransport, SecretRef};
use crate::model::{BadReason, PointId, Reading};

use payload::PayloadError;

/// Capacity of rumqttc's request channel (subscribes, acks, disconnect).
const REQUEST_CAPACITY: usize = 1024;
/// Decoded messages waiting for the readings channel.
const FORWARD_CAPACITY: usize = 64;
/// At most one log line per topic and problem kind per this long.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// The rate limiter forgets everything beyond this many topics (bounds its memory).
const LOG_LIMITER_TOPICS: usize = 10_000;

/// Tunables of a broker task. `Default` is what the daemon uses.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
    /// Largest MQTT packet rumqttc accepts.
    pub max_packet_bytes: usize,
    /// Messages remembered per device for deduplication.
    pub dedup_window: usize,
    /// How long shutdown waits for the last readings and acks.
    pub shutdown_drain: Duration,
    /// TCP connect (and TLS handshake) timeout.
    pub connect_timeout: Duration,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            max_packet_bytes: 4 * 1024 * 1024,
            dedup_window: 1024,
            shutdown_drain: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a broker task could not start. Never contains a secret.
#[derive(Debug, thiserror::Error)]
pub enum MqttSourceError {
    /// `password_env` names a variable that is not set or not Unicode.
    #[error("broker `{broker}`: environment variable {var} (password_env) is not set")]
    PasswordEnv {
        /// Broker id.
        broker: String,
        /// Variable name.
        var: String,
    },
    /// `password_file` cannot be read.
    #[error("broker `{broker}`: cannot read password_file {}: {kind}", path.display())]
    PasswordFile {
        /// Broker id.
        broker: String,
        /// The file.
        path: PathBuf,
        /// What went wrong (no content).
        kind: std::io::ErrorKind,
    },
    /// The platform's root certificates could not be loaded for TLS.
    #[error("broker `{broker}`: cannot set up TLS: the platform's root certificates did not load")]
    Tls {
        /// Broker id.
        broker: String,
    },
    /// Two devices of one broker have the same topic.
    #[error("broker `{broker}`: topic `{topic}` belongs to `{first}` and `{second}`")]
    DuplicateTopic {
        /// Broker id.
        broker: String,
        /// The topic.
        topic: String,
        /// `site/device` of the first device.
        first: String,
        /// `site/device` of the second device.
        second: String,
    },
}

/// One MQTT device: its site and its validated configuration.
#[derive(Debug, Clone)]
pub struct MqttDevice {
    /// Site id.
    pub site: String,
    /// The device (transport `Mqtt`, profile transport `Mqtt`).
    pub device: Device,
}

/// One broker and the devices read through it.
#[derive(Debug, Clone)]
pub struct BrokerPlan {
    /// The broker.
    pub broker: Broker,
    /// Its devices.
    pub devices: Vec<MqttDevice>,
}

/// The brokers that have at least one MQTT device, each with its devices, by broker id.
pub fn plans(config: &Config) -> Vec<BrokerPlan> {
    let mut by_broker: BTreeMap<&str, Vec<MqttDevice>> = BTreeMap::new();
    for site in &config.sites {
        for device in &site.devices {
            if let DeviceTransport::Mqtt { broker, .. } = &device.transport {
                by_broker.entry(broker).or_default().push(MqttDevice {
                    site: site.id.clone(),
                    device: device.clone(),
                });
            }
        }
    }
    by_broker
        .into_iter()
        .filter_map(|(id, devices)| {
            let broker = config.brokers.get(id)?.clone();
            Some(BrokerPlan { broker, devices })
        })
        .collect()
}

/// Counters of one broker task, shared with whoever exposes them (metrics, API).
#[derive(Debug, Default)]
pub struct MqttStats {
    connects: AtomicU64,
    connection_errors: AtomicU64,
    subscribe_acks: AtomicU64,
    subscribe_failures: AtomicU64,
    messages: AtomicU64,
    readings: AtomicU64,
    unknown_topic: AtomicU64,
    oversize: AtomicU64,
    malformed: AtomicU64,
    point_errors: AtomicU64,
    out_of_range: AtomicU64,
    duplicates: AtomicU64,
    sequence_gaps: AtomicU64,
    retained_ignored: AtomicU64,
    acks: AtomicU64,
}

/// A snapshot of [`MqttStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MqttCounters {
    /// Successful connections (ConnAck accepted).
    pub connects: u64,
    /// Connection attempts or sessions that ended in an error.
    pub connection_errors: u64,
    /// SubAcks received.
    pub subscribe_acks: u64,
    /// Topic filters the broker refused.
    pub subscribe_failures: u64,
    /// Publishes received, all kinds.
    pub messages: u64,
    /// Readings handed to the readings channel.
    pub readings: u64,
    /// Messages on a topic no device has.
    pub unknown_topic: u64,
    /// Messages larger than the profile's `max_payload_bytes`.
    pub oversize: u64,
    /// Messages that are not UTF-8 JSON.
    pub malformed: u64,
    /// Points missing or of the wrong type in an otherwise good message.
    pub point_errors: u64,
    /// Points outside their plausible range.
    pub out_of_range: u64,
    /// Redeliveries dropped by sequence number.
    pub duplicates: u64,
    /// Sequence numbers skipped (messages that never arrived).
    pub sequence_gaps: u64,
    /// Retained messages without a `ts`, ignored.
    pub retained_ignored: u64,
    /// QoS 1/2 messages acknowledged to the broker (handed to rumqttc).
    pub acks: u64,
}

impl MqttStats {
    /// The current values.
    pub fn snapshot(&self) -> MqttCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MqttCounters {
            connects: get(&self.connects),
            connection_errors: get(&self.connection_errors),
            subscribe_acks: get(&self.subscribe_acks),
            subscribe_failures: get(&self.subscribe_failures),
            messages: get(&self.messages),
            readings: get(&self.readings),
            unknown_topic: get(&self.unknown_topic),
            oversize: get(&self.oversize),
            malformed: get(&self.malformed),
            point_errors: get(&self.point_errors),
            out_of_range: get(&self.out_of_range),
            duplicates: get(&self.duplicates),
            sequence_gaps: get(&self.sequence_gaps),
            retained_ignored: get(&self.retained_ignored),
            acks: get(&self.acks),
        }
    }
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// A running broker task.
#[derive(Debug)]
pub struct MqttSource {
    stats: Arc<MqttStats>,
    task: JoinHandle<()>,
}

impl MqttSource {
    /// The task's counters.
    pub fn stats(&self) -> Arc<MqttStats> {
        self.stats.clone()
    }

    /// False once the task has ended (it ends only on cancellation or when the readings
    /// channel is closed).
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    /// Waits for the task to end (after its cancellation token fired).
    pub async fn join(self) {
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "MQTT source task failed");
        }
    }
}

/// Starts the task of one broker: readings go to `tx`, `cancel` stops it.
///
/// Fails only on configuration problems found at start (secrets, TLS roots, duplicate
/// topics); a broker that is down is retried forever.
pub fn spawn(
    plan: BrokerPlan,
    options: SourceOptions,
    tx: mpsc::Sender<Reading>,
    cancel: CancellationToken,
) -> Result<MqttSource, MqttSourceError> {
    let router = Router::new(&plan, options.dedup_window)?;
    let filters = router.filters();
    let mqtt_options = mqtt_options(&plan.broker, &options)?;
    let (client, mut eventloop) = AsyncClient::new(mqtt_options, REQUEST_CAPACITY);
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    network.set_connection_timeout(options.connect_timeout.as_secs().max(1));
    eventloop.set_network_options(network);
    let stats = Arc::new(MqttStats::default());
    let task = tokio::spawn(run(
        Session {
            broker: plan.broker.id.clone(),
            client,
            filters,
            options,
            stats: stats.clone(),
            cancel,
        },
        eventloop,
        router,
        tx,
    ));
    Ok(MqttSource { stats, task })
}

fn mqtt_options(broker: &Broker, options: &SourceOptions) -> Result<MqttOptions, MqttSourceError> {
    let mut o = MqttOptions::new(broker.client_id.clone(), broker.host.clone(), broker.port);
    o.set_keep_alive(broker.keep_alive.max(Duration::from_secs(1)))
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_request_channel_capacity(REQUEST_CAPACITY)
        .set_max_packet_size(options.max_packet_bytes, options.max_packet_bytes);
    if broker.username.is_some() || broker.password.is_some() {
        let password = match &broker.password {
            Some(secret) => read_secret(&broker.id, secret)?,
            None => String::new(),
        };
        o.set_credentials(broker.username.clone().unwrap_or_default(), password);
    }
    if broker.tls {
        // rumqttc panics when the platform's certificates do not load; that happens once,
        // at start, and becomes a configuration error here instead of a crash.
        let transport =
            std::panic::catch_unwind(Transport::tls_with_default_config).map_err(|_| {
                MqttSourceError::Tls {
                    broker: broker.id.clone(),
                }
            })?;
        o.set_transport(transport);
    }
    Ok(o)
}

/// Reads a secret by reference. The value is returned, never logged or put in an error.
fn read_secret(broker: &str, secret: &SecretRef) -> Result<String, MqttSourceError> {
    match secret {
        SecretRef::Env(var) => std::env::var(var).map_err(|_| MqttSourceError::PasswordEnv {
            broker: broker.to_owned(),
            var: var.clone(),
        }),
        SecretRef::File(path) => std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
            .map_err(|e| MqttSourceError::PasswordFile {
                broker: broker.to_owned(),
                path: path.clone(),
                kind: e.kind(),
            }),
    }
}

fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// Per-device memory of recent messages, for deduplication and gap counting.
#[derive(Debug)]
struct SeqWindow {
    order: VecDeque<(u64, u64)>,
    seen: HashSet<(u64, u64)>,
    capacity: usize,
    highest: Option<u64>,
}

enum SeqCheck {
    Duplicate,
    New { gap: u64 },
}

impl SeqWindow {
    fn new(capacity: usize) -> Self {
        SeqWindow {
            order: VecDeque::new(),
            seen: HashSet::new(),
            capacity: capacity.max(1),
            highest: None,
        }
    }

    fn check(&mut self, seq: u64, body: &[u8]) -> SeqCheck {
        let key = (seq, body_hash(body));
        if self.seen.contains(&key) {
            return SeqCheck::Duplicate;
        }
        if self.order.len() >= self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        self.order.push_back(key);
        self.seen.insert(key);
        let gap = match self.highest {
            Some(h) if seq > h => seq - h - 1,
            _ => 0,
        };
        self.highest = Some(match self.highest {
            Some(h) if seq > h => seq,
            // Back to the start, or far below: the sensor restarted its count.
            Some(h) if seq <= 1 || seq.saturating_add(self.capacity as u64) < h => seq,
            Some(h) => h,
            None => seq,
        });
        SeqCheck::New { gap }
    }
}

/// A fixed-key hash of a message body (same body, same hash, within a process).
fn body_hash(body: &[u8]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    body.hash(&mut h);
    h.finish()
}

/// At most one log line per key per [`LOG_EVERY`].
#[derive(Debug, Default)]
struct LogLimiter {
    last: HashMap<String, tokio::time::Instant>,
}

impl LogLimiter {
    fn allow(&mut self, key: &str) -> bool {
        self.allow_at(key, tokio::time::Instant::now())
    }

    fn allow_at(&mut self, key: &str, now: tokio::time::Instant) -> bool {
        match self.last.get(key) {
            Some(at) if now.duration_since(*at) < LOG_EVERY => false,
            _ => {
                if self.last.len() >= LOG_LIMITER_TOPICS {
                    self.last.clear();
                }
                self.last.insert(key.to_owned(), now);
                true
            }
        }
    }
}

/// One device as the router knows it.
#[derive(Debug)]
struct Route {
    label: String,
    profile: crate::config::model::MqttProfile,
    points: Vec<PointId>,
    window: SeqWindow,
}

/// Topic -> device, payload decoding, deduplication. Synchronous; the task feeds it.
#[derive(Debug)]
struct Router {
    routes: Vec<Route>,
    by_topic: HashMap<String, usize>,
    logs: LogLimiter,
}

impl Router {
    fn new(plan: &BrokerPlan, dedup_window: usize) -> Result<Router, MqttSourceError> {
        let mut routes = Vec::new();
        let mut by_topic = HashMap::new();
        for d in &plan.devices {
            let (DeviceTransport::Mqtt { topic, .. }, ProfileTransport::Mqtt(profile)) =
                (&d.device.transport, &d.device.profile.transport)
            else {
                continue;
            };
            let label = format!("{}/{}", d.site, d.device.id);
            if let Some(&i) = by_topic.get(topic) {
                let first: &Route = &routes[i];
                return Err(MqttSourceError::DuplicateTopic {
                    broker: plan.broker.id.clone(),
                    topic: topic.clone(),
                    first: first.label.clone(),
                    second: label,
                });
            }
            by_topic.insert(topic.clone(), routes.len());
            routes.push(Route {
                label,
                profile: profile.clone(),
                points: profile
                    .points
                    .iter()
                    .map(|p| PointId::new(&d.site, &d.device.id, &p.name))
                    .collect(),
                window: SeqWindow::new(dedup_window),
            });
        }
        Ok(Router {
            routes,
            by_topic,
            logs: LogLimiter::default(),
        })
    }

    /// One subscription per distinct topic pattern, placeholders as `+`, highest QoS.
    fn filters(&self) -> Vec<SubscribeFilter> {
        let mut by_filter: BTreeMap<String, u8> = BTreeMap::new();
        for r in &self.routes {
            let filter = r
                .profile
                .topic
                .split('/')
                .map(|level| {
                    if level.starts_with('{') && level.ends_with('}') {
                        "+"
                    } else {
                        level
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            let q = by_filter.entry(filter).or_insert(0);
            *q = (*q).max(r.profile.qos);
        }
        by_filter
            .into_iter()
            .map(|(path, q)| SubscribeFilter::new(path, qos(q)))
            .collect()
    }

    /// The readings of one message (possibly none), counting what it finds.
    fn handle(
        &mut self,
        topic: &str,
        body: &[u8],
        retain: bool,
        received_at: DateTime<Utc>,
        stats: &MqttStats,
    ) -> Vec<Reading> {
        bump(&stats.messages, 1);
        let Some(&index) = self.by_topic.get(topic) else {
            bump(&stats.unknown_topic, 1);
            if self.logs.allow(&format!("unknown {topic}")) {
                tracing::warn!(topic = ?topic, "MQTT message on a topic no device has; ignored");
            }
            return Vec::new();
        };
        let route = &mut self.routes[index];
        let decoded = match payload::decode(&route.profile, body, received_at) {
            Ok(d) => d,
            Err(e) => {
                let counter = match e {
                    PayloadError::TooLarge { .. } => &stats.oversize,
                    PayloadError::NotJson(_) => &stats.malformed,
                };
                bump(counter, 1);
                if self.logs.allow(&format!("payload {topic}")) {
                    tracing::warn!(device = %route.label, topic = ?topic, error = %e,
                        "MQTT payload rejected; its points are bad (logged once a minute per topic)");
                }
                let reason = e.reason();
                return route
                    .points
                    .iter()
                    .map(|p| Reading::bad(p.clone(), reason.clone(), received_at))
                    .collect();
            }
        };
        if retain && !decoded.ts_from_payload {
            bump(&stats.retained_ignored, 1);
            return Vec::new();
        }
        if let Some(seq) = decoded.sequence {
            match route.window.check(seq, body) {
                SeqCheck::Duplicate => {
                    bump(&stats.duplicates, 1);
                    return Vec::new();
                }
                SeqCheck::New { gap } if gap > 0 => {
                    bump(&stats.sequence_gaps, gap);
                    if self.logs.allow(&format!("gap {topic}")) {
                        tracing::warn!(device = %route.label, missing = gap, seq,
                            "MQTT sequence gap: messages never arrived (logged once a minute per topic)");
                    }
                }
                SeqCheck::New { .. } => {}
            }
        }
        let mut point_problem = None;
        let readings = route
            .points
            .iter()
            .zip(decoded.values)
            .map(|(point, value)| {
                match &value {
                    Err(BadReason::OutOfRange { .. }) => bump(&stats.out_of_range, 1),
                    Err(reason) => {
                        bump(&stats.point_errors, 1);
                        point_problem.get_or_insert_with(|| reason.clone());
                    }
                    Ok(_) => {}
                }
                Reading::from_result(point.clone(), value, decoded.sampled_at)
            })
            .collect();
        if let Some(reason) = point_problem
            && self.logs.allow(&format!("point {topic}"))
        {
            tracing::warn!(device = %route.label, topic = ?topic, error = %reason,
                "MQTT payload field unusable; that point is bad (logged once a minute per topic)");
        }
        readings
    }
}

/// Exponential backoff with jitter: each delay is in `[d/2, d]`, `d` doubling to the max.
#[derive(Debug)]
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    random: RandomState,
    attempt: u64,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            next: min,
            random: RandomState::new(),
            attempt: 0,
        }
    }

    fn reset(&mut self) {
        self.next = self.min;
    }

    fn delay(&mut self) -> Duration {
        let d = self.next;
        self.next = d.saturating_mul(2).min(self.max);
        self.attempt += 1;
        let fraction = (self.random.hash_one(self.attempt) % 1000) as f64 / 1000.0;
        d.mul_f64(0.5 + fraction / 2.0)
    }
}

/// A decoded message waiting for the readings channel, with its ack.
struct Batch {
    readings: Vec<Reading>,
    ack: Option<Ack>,
}

/// What an ack needs of its message: the packet id and the QoS (not the payload, which
/// would otherwise stay in memory until the broker got the ack).
#[derive(Debug, Clone, Copy)]
struct Ack {
    qos: QoS,
    pkid: u16,
}

impl Ack {
    fn of(publish: &Publish) -> Option<Ack> {
        (publish.qos != QoS::AtMostOnce).then_some(Ack {
            qos: publish.qos,
            pkid: publish.pkid,
        })
    }

    /// A payload-less message with the same packet id and QoS: all `AsyncClient::ack`
    /// reads of it.
    fn publish(self) -> Publish {
        let mut publish = Publish::new("", self.qos, Vec::new());
        publish.pkid = self.pkid;
        publish
    }
}

/// What the network task and the delivery task share.
struct Session {
    broker: String,
    client: AsyncClient,
    filters: Vec<SubscribeFilter>,
    options: SourceOptions,
    stats: Arc<MqttStats>,
    cancel: CancellationToken,
}

async fn run(
    session: Session,
    mut eventloop: EventLoop,
    mut router: Router,
    tx: mpsc::Sender<Reading>,
) {
    let Session {
        broker,
        client,
        filters,
        options,
        stats,
        cancel,
    } = session;
    let (forward, forwarded) = mpsc::channel(FORWARD_CAPACITY);
    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    let delivery = tokio::spawn(deliver(forwarded, tx, ack_tx, stats.clone()));
    let acknowledger = tokio::spawn(acknowledge(ack_rx, client.clone(), stats.clone()));
    let mut backoff = Backoff::new(options.backoff_min, options.backoff_max);
    let mut connected_once = false;
    let mut connected = false;
    let mut logs = LogLimiter::default();
    loop {
        let event = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                bump(&stats.connects, 1);
                backoff.reset();
                if connected_once && !ack.session_present {
                    tracing::warn!(broker = %broker,
                        "MQTT broker kept no session for us: messages published while we were away are lost");
                } else {
                    tracing::info!(broker = %broker, session_present = ack.session_present,
                        "connected to the MQTT broker");
                }
                connected_once = true;
                connected = true;
                if !filters.is_empty()
                    && let Err(e) = client.try_subscribe_many(filters.clone())
                {
                    tracing::error!(broker = %broker, error = %e, "cannot queue the MQTT subscriptions");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                bump(&stats.subscribe_acks, 1);
                let failed = ack
                    .return_codes
                    .iter()
                    .filter(|c| matches!(c, SubscribeReasonCode::Failure))
                    .count();
                if failed > 0 {
                    bump(&stats.subscribe_failures, failed as u64);
                    tracing::error!(broker = %broker, refused = failed,
                        "the MQTT broker refused subscriptions (ACL?); those sensors will go stale");
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let readings = router.handle(
                    &publish.topic,
                    &publish.payload,
                    publish.retain,
                    Utc::now(),
                    &stats,
                );
                let ack = Ack::of(&publish);
                // Waiting here is the backpressure. On cancellation the message is dropped
                // unacknowledged: the broker delivers it again to the next run.
                let sent = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => break,
                    sent = forward.send(Batch { readings, ack }) => sent,
                };
                if sent.is_err() {
                    tracing::warn!(broker = %broker, "readings channel closed; MQTT source stops");
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => {
                bump(&stats.connection_errors, 1);
                let delay = backoff.delay();
                if connected || logs.allow("connection") {
                    tracing::warn!(broker = %broker, error = %describe(&e), retry_in = ?delay,
                        "MQTT broker connection failed; retrying");
                } else {
                    tracing::debug!(broker = %broker, error = %describe(&e), retry_in = ?delay,
                        "MQTT broker still unreachable");
                }
                connected = false;
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    // Shutdown: take no more messages (unacked ones are redelivered to the next run), let
    // the delivery task hand over what it holds and the ack task ack it; the ack task
    // then asks for a disconnect.
    drop(forward);
    let drain = tokio::time::sleep(options.shutdown_drain);
    tokio::pin!(drain);
    if connected {
        loop {
            tokio::select! {
                _ = &mut drain => {
                    tracing::warn!(broker = %broker, "MQTT shutdown drain timed out");
                    break;
                }
                event = eventloop.poll() => match event {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
    }
    delivery.abort();
    acknowledger.abort();
    tracing::info!(broker = %broker, "MQTT source stopped");
}

/// rumqttc's error text; credentials never appear in it.
fn describe(e: &ConnectionError) -> String {
    e.to_string()
}

/// Hands readings over (awaiting capacity), then queues the message's ack.
async fn deliver(
    mut forwarded: mpsc::Receiver<Batch>,
    tx: mpsc::Sender<Reading>,
    acks: mpsc::UnboundedSender<Ack>,
    stats: Arc<MqttStats>,
) {
    while let Some(batch) = forwarded.recv().await {
        let count = batch.readings.len() as u64;
        for reading in batch.readings {
            if tx.send(reading).await.is_err() {
                // Nobody reads any more: leave the message unacknowledged.
                return;
            }
        }
        bump(&stats.readings, count);
        if let Some(ack) = batch.ack
            && acks.send(ack).is_err()
        {
            return;
        }
    }
}

/// Passes acks to rumqttc in the order the messages were handed over; when the delivery
/// task is done (shutdown), asks for a disconnect after the last ack.
async fn acknowledge(
    mut acks: mpsc::UnboundedReceiver<Ack>,
    client: AsyncClient,
    stats: Arc<MqttStats>,
) {
    while let Some(ack) = acks.recv().await {
        if client.ack(&ack.publish()).await.is_err() {
            return;
        }
        bump(&stats.acks, 1);
    }
    let _ = client.disconnect().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::{MqttPoint, MqttProfile, MqttValueType, Profile, Role, Unit};
    use crate::model::{Quality, Value};

    fn plan(devices: &[(&str, &str)]) -> BrokerPlan {
        let profile = Arc::new(Profile {
            id: "th".into(),
            kind: crate::config::model::DeviceKind::EnvSensor,
            imitates: "test".into(),
            transport: ProfileTransport::Mqtt(MqttProfile {
                topic: "dcguard/{site}/{room}/th/{device}".into(),
                qos: 1,
                max_payload_bytes: 256,
                sequence_json: Some("seq".into()),
                interval: Duration::from_secs(10),
                points: vec![MqttPoint {
                    name: "temperature".into(),
                    role: Role::EnvTemperatureC,
                    json: "t".into(),
                    value_type: MqttValueType::Number,
                    unit: Unit::DegC,
                    valid_min: Some(-10.0),
                    valid_max: Some(60.0),
                }],
            }),
        });
        BrokerPlan {
            broker: Broker {
                id: "sim".into(),
                host: "127.0.0.1".into(),
                port: 1883,
                tls: false,
                client_id: "dcguard".into(),
                keep_alive: Duration::from_secs(30),
                username: None,
                password: None,
            },
            devices: devices
                .iter()
                .map(|(id, topic)| MqttDevice {
                    site: "dc".into(),
                    device: Device {
                        id: (*id).into(),
                        name: (*id).into(),
                        room: "dh1".into(),
                        rack: None,
                        profile: profile.clone(),
                        transport: DeviceTransport::Mqtt {
                            broker: "sim".into(),
                            topic: (*topic).into(),
                        },
                        facts: Default::default(),
                    },
                })
                .collect(),
        }
    }

    const T1: &str = "dcguard/dc/dh1/th/th-1";

    fn router() -> Router {
        Router::new(
            &plan(&[("th-1", T1), ("th-2", "dcguard/dc/dh1/th/th-2")]),
            4,
        )
        .unwrap()
    }

    #[test]
    fn subscribes_each_pattern_once_with_plus() {
        let filters = router().filters();
        assert_eq!(filters.len(), 1);
        assert_eq!(filters[0].path, "dcguard/+/+/th/+");
        assert_eq!(filters[0].qos, QoS::AtLeastOnce);
    }

    #[test]
    fn duplicate_topics_are_a_start_error() {
        let err = Router::new(&plan(&[("a", T1), ("b", T1)]), 4).unwrap_err();
        assert!(err.to_string().contains("dc/a"), "{err}");
    }

    #[tokio::test]
    async fn routing_dedup_gaps_and_rejections() {
        let stats = MqttStats::default();
        let mut r = router();
        let now = Utc::now();
        let good = r.handle(T1, br#"{"seq":1,"t":21.5}"#, false, now, &stats);
        assert_eq!(good.len(), 1);
        assert_eq!(good[0].value(), Some(&Value::Number(21.5)));
        assert_eq!(good[0].point().to_string(), "dc/th-1/temperature");
        assert!(
            r.handle(T1, br#"{"seq":1,"t":21.5}"#, false, now, &stats)
                .is_empty()
        );
        assert_eq!(stats.snapshot().duplicates, 1);
        // Same sequence number, other body: a restarted sensor, not a duplicate.
        assert_eq!(
            r.handle(T1, br#"{"seq":1,"t":22.0}"#, false, now, &stats)
                .len(),
            1
        );
        assert_eq!(
            r.handle(T1, br#"{"seq":5,"t":22.0}"#, false, now, &stats)
                .len(),
            1
        );
        assert_eq!(stats.snapshot().sequence_gaps, 3);
        assert!(r.handle("x/y", b"1", false, now, &stats).is_empty());
        let bad = r.handle(T1, b"{oops", false, now, &stats);
        assert_eq!(bad.len(), 1);
        assert!(matches!(
            bad[0].quality(),
            Quality::Bad(BadReason::Decode(_))
        ));
        assert_eq!(bad[0].value(), None);
        let big = format!(r#"{{"seq":9,"t":1,"pad":"{}"}}"#, "x".repeat(300));
        assert_eq!(r.handle(T1, big.as_bytes(), false, now, &stats).len(), 1);
        let hot = r.handle(T1, br#"{"seq":10,"t":99}"#, false, now, &stats);
        assert_eq!(
            hot[0].quality(),
            &Quality::Bad(BadReason::OutOfRange { value: 99.0 })
        );
        assert!(
            r.handle(T1, br#"{"seq":11,"t":20}"#, true, now, &stats)
                .is_empty()
        );
        let c = stats.snapshot();
        assert_eq!(
            (
                c.messages,
                c.unknown_topic,
                c.malformed,
                c.oversize,
                c.out_of_range,
                c.retained_ignored
            ),
            (9, 1, 1, 1, 1, 1)
        );
    }

    #[test]
    fn window_forgets_the_oldest() {
        let mut w = SeqWindow::new(2);
        assert!(matches!(w.check(1, b"a"), SeqCheck::New { gap: 0 }));
        assert!(matches!(w.check(2, b"b"), SeqCheck::New { gap: 0 }));
        assert!(matches!(w.check(3, b"c"), SeqCheck::New { gap: 0 }));
        assert!(matches!(w.check(3, b"c"), SeqCheck::Duplicate));
        assert!(
            matches!(w.check(1, b"a"), SeqCheck::New { .. }),
            "outside the window"
        );
    }

    #[test]
    fn logs_once_a_minute_per_key() {
        let mut l = LogLimiter::default();
        let t = tokio::time::Instant::now();
        assert!(l.allow_at("payload a", t));
        assert!(!l.allow_at("payload a", t + Duration::from_secs(59)));
        assert!(l.allow_at("payload b", t + Duration::from_secs(1)));
        assert!(l.allow_at("payload a", t + Duration::from_secs(60)));
    }

    #[test]
    fn backoff_doubles_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(4));
        let delays: Vec<Duration> = (0..4).map(|_| b.delay()).collect();
        for (d, nominal) in delays.iter().zip([1, 2, 4, 4]) {
            let nominal = Duration::from_secs(nominal);
            assert!(*d >= nominal / 2 && *d <= nominal, "{d:?} vs {nominal:?}");
        }
        b.reset();
        assert!(b.delay() <= Duration::from_secs(1));
    }

    #[test]
    fn secrets_by_reference_never_in_errors() {
        let var = "DCGUARD_TEST_MQTT_PASSWORD_UNSET_8731";
        let err = read_secret("sim", &SecretRef::Env(var.into())).unwrap_err();
        assert!(err.to_string().contains(var));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "hunter2\n").unwrap();
        assert_eq!(
            read_secret("sim", &SecretRef::File(file)).unwrap(),
            "hunter2"
        );
        let missing = read_secret("sim", &SecretRef::File(dir.path().join("none"))).unwrap_err();
        assert!(missing.to_string().contains("password_file"));
    }

    #[test]
    fn tls_options_build_without_panicking() {
        let mut p = plan(&[]);
        p.broker.tls = true;
        // Either rustls with the platform roots, or a clean configuration error.
        match mqtt_options(&p.broker, &SourceOptions::default()) {
            Ok(o) => assert!(matches!(o.transport(), Transport::Tls(_))),
            Err(e) => assert!(matches!(e, MqttSourceError::Tls { .. })),
        }
    }
}
