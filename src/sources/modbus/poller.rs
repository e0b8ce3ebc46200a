//! The Modbus poller: one task per endpoint, per-device schedules by poll class, readings out.
//!
//! **Shape.** [`endpoints`] groups the configured Modbus devices by endpoint (host:port)
//! with the endpoint's [`EndpointSettings`]; [`poll_endpoint`] (or [`spawn`]) runs one
//! task per endpoint. That task opens `max_connections` connections (default 1), each
//! with its own [`ReadOnlyClient`] and its own share of the units behind the endpoint
//! (spread by planned request rate), and **each connection carries at most one request
//! at a time**: a request is sent only after the previous one was answered or timed out.
//! Each device has one job per poll class with points (fast, normal, slow) at the
//! interval of its `PollIntervals`; the requests of each job are planned once at start
//! ([`plan_classes`]). A connection runs whichever of its jobs is due first.
//!
//! **Readings.** Every request gives one [`Reading`] per point it carries, sampled at the
//! UTC instant the request was sent: decoded values when the device answered, a bad
//! reading with the reason for every point of the request when it did not (exception,
//! timeout, connection lost, rejected frame). Never a number from a failed request.
//!
//! **Faults, and how one dead thing never delays the others.**
//!
//! * 0x06 busy: retried up to `busy_retries` times after `busy_retry_delay`, then bad.
//! * 0x0B / 0x0A (gateway target or path failed), or a timeout: that *unit* is down. The
//!   rest of its scan is answered bad without IO, and it backs off on its own
//!   (`unit_backoff`, 1 s doubling to 30 s with jitter): while it waits its scans give
//!   bad readings without IO, then one scan probes it. So a dead unit costs the units
//!   sharing its connection at most one request timeout per backoff slot.
//! * 0x02 illegal address: the request names registers the device does not have, a
//!   configuration problem. It is reported once (warn log naming device and points,
//!   `config_problems` in health) and disabled; its points read bad (exception 0x02)
//!   without IO from then on; the rest of the device keeps its schedule.
//! * Connection refused or unreachable: the connection backs off (`reconnect`, 1 s to
//!   30 s, jitter); meanwhile due scans give `ConnectionLost` readings without IO.
//! * A connection that failed under a request (reset, closed by an idle timer, a stray
//!   or malformed frame) was dropped by the client; the request is retried once on a
//!   new connection, so an idle close or one stray frame costs no data.
//!
//! **Fragile devices** ([`EndpointSettings`], from `[modbus]` and `[[modbus_endpoints]]`):
//! a pause between requests, closing the connection after each scan, the number of
//! connections, and a request timeout per endpoint or per device.
//!
//! The task stops when its cancellation token is cancelled or the readings channel is
//! closed. A full channel holds the task back (backpressure, nothing dropped): the
//! consumer must keep up, or readings queue behind it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::model::{
    Config, DeviceTransport, EndpointSettings, ModbusPolling, ModbusProfile, PollClass,
    PollIntervals, Profile, ProfileTransport,
};
use crate::model::{BadReason, PointId, Reading};
use crate::sources::health::{DeviceKey, HealthRegistry};
use crate::sources::modbus::backoff::{Backoff, BackoffPolicy};
use crate::sources::modbus::client::{
    ClientCounters, ClientError, ClientOptions, ReadData, ReadOnlyClient,
};
use crate::sources::modbus::decode::{decode_bits_in, decode_in};
use crate::sources::modbus::plan::{ReadRequest, plan_classes};

/// Exception 0x02: illegal data address.
const ILLEGAL_ADDRESS: u8 = 0x02;
/// Exception 0x06: server device busy.
const BUSY: u8 = 0x06;
/// Exception 0x0A: gateway path unavailable.
const GATEWAY_PATH: u8 = 0x0A;
/// Exception 0x0B: gateway target device failed to respond.
const GATEWAY_TARGET: u8 = 0x0B;

/// Poller settings shared by every endpoint: `[modbus]` of `dcguard.toml`
/// ([`PollerOptions::from_config`]); tests shorten them.
#[derive(Debug, Clone, PartialEq)]
pub struct PollerOptions {
    /// Connection and request timeouts, keepalive. `request_timeout` applies where
    /// neither the endpoint nor the device sets one.
    pub client: ClientOptions,
    /// Retries after exception 0x06 (busy).
    pub busy_retries: u32,
    /// Wait before each busy retry.
    pub busy_retry_delay: Duration,
    /// Backoff between failed connection attempts to an endpoint.
    pub reconnect: BackoffPolicy,
    /// Backoff of a unit that timed out or that its gateway reported failed.
    pub unit_backoff: BackoffPolicy,
}

impl Default for PollerOptions {
    /// The shipped defaults: those of an absent `[modbus]` section.
    fn default() -> Self {
        PollerOptions::from_config(&ModbusPolling::default())
    }
}

impl PollerOptions {
    /// The options `[modbus]` describes: its timeouts, busy retries, and one backoff
    /// (`backoff_min` doubling to `backoff_max`, 20 % jitter) for reconnects and for
    /// units that stopped answering.
    pub fn from_config(modbus: &ModbusPolling) -> Self {
        let backoff = BackoffPolicy {
            initial: modbus.backoff_min,
            max: modbus.backoff_max.max(modbus.backoff_min),
            jitter: 0.2,
        };
        PollerOptions {
            client: ClientOptions {
                request_timeout: modbus.request_timeout,
                connect_timeout: modbus.connect_timeout,
                ..ClientOptions::default()
            },
            busy_retries: modbus.busy_retries,
            busy_retry_delay: modbus.busy_retry_delay,
            reconnect: backoff,
            unit_backoff: backoff,
        }
    }
}

/// One device to poll.
#[derive(Debug, Clone)]
pub struct PolledDevice {
    /// Site and device id.
    pub key: DeviceKey,
    /// Unit id behind the endpoint.
    pub unit: u8,
    /// The device's profile (a Modbus one).
    pub profile: Arc<Profile>,
    /// Interval per poll class.
    pub poll: PollIntervals,
    /// The device's own request timeout, if it has one.
    pub request_timeout: Option<Duration>,
}

impl PolledDevice {
    /// Requests per second its schedule plans (every class), for spreading units over
    /// connections.
    fn planned_rate(&self) -> f64 {
        let ProfileTransport::Modbus(profile) = &self.profile.transport else {
            return 0.0;
        };
        let plans = plan_classes(profile);
        [PollClass::Fast, PollClass::Normal, PollClass::Slow]
            .into_iter()
            .map(|class| {
                let interval = self.poll.of(class).max(Duration::from_millis(1));
                plans.of(class).requests.len() as f64 / interval.as_secs_f64()
            })
            .sum()
    }
}

/// One endpoint and the devices behind it.
#[derive(Debug, Clone)]
pub struct EndpointSpec {
    /// The endpoint as configured: the key of its health.
    pub configured: SocketAddr,
    /// The address dialled (the configured one, or a test's ephemeral port).
    pub address: SocketAddr,
    /// Devices by unit id.
    pub devices: Vec<PolledDevice>,
    /// Connections, pause, close after scan, request timeout.
    pub settings: EndpointSettings,
}

impl EndpointSpec {
    /// The devices of each connection: `max_connections` groups at most (never more
    /// than there are devices), balanced by planned request rate (largest first, each to
    /// the least loaded group). Deterministic.
    pub fn connection_groups(&self) -> Vec<Vec<PolledDevice>> {
        let n = usize::from(self.settings.max_connections).clamp(1, self.devices.len().max(1));
        if n == 1 {
            return vec![self.devices.clone()];
        }
        let mut by_rate: Vec<(f64, &PolledDevice)> =
            self.devices.iter().map(|d| (d.planned_rate(), d)).collect();
        by_rate.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.unit.cmp(&b.1.unit)));
        let mut groups: Vec<(f64, Vec<PolledDevice>)> = vec![(0.0, Vec::new()); n];
        for (rate, device) in by_rate {
            if let Some(least) = groups.iter_mut().min_by(|a, b| a.0.total_cmp(&b.0)) {
                least.0 += rate;
                least.1.push(device.clone());
            }
        }
        groups
            .into_iter()
            .map(|(_, mut devices)| {
                devices.sort_by_key(|d| d.unit);
                devices
            })
            .collect()
    }
}

/// Groups the Modbus devices of every site of `config` by endpoint, each with its
/// settings (`[modbus]` and the site's `[[modbus_endpoints]]`).
pub fn endpoints(config: &Config) -> Vec<EndpointSpec> {
    let mut by_endpoint: BTreeMap<SocketAddr, EndpointSpec> = BTreeMap::new();
    for site in &config.sites {
        for device in &site.devices {
            let DeviceTransport::Modbus {
                endpoint,
                unit,
                poll,
                request_timeout,
            } = &device.transport
            else {
                continue;
            };
            if !matches!(device.profile.transport, ProfileTransport::Modbus(_)) {
                continue;
            }
            by_endpoint
                .entry(*endpoint)
                .or_insert_with(|| EndpointSpec {
                    configured: *endpoint,
                    address: *endpoint,
                    devices: Vec::new(),
                    settings: config.endpoint_settings(*endpoint),
                })
                .devices
                .push(PolledDevice {
                    key: DeviceKey::new(&site.id, &device.id),
                    unit: *unit,
                    profile: device.profile.clone(),
                    poll: *poll,
                    request_timeout: *request_timeout,
                });
        }
    }
    by_endpoint.into_values().collect()
}

/// Spawns one poller task per endpoint. Every device is in `health` (down, no data
/// yet) when this returns.
pub fn spawn(
    endpoints: Vec<EndpointSpec>,
    options: &PollerOptions,
    readings: mpsc::Sender<Reading>,
    health: &HealthRegistry,
    cancel: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    for spec in &endpoints {
        health.update_endpoint(spec.configured, |_| ());
        for device in &spec.devices {
            health.register(&device.key);
        }
    }
    endpoints
        .into_iter()
        .map(|spec| {
            tokio::spawn(poll_endpoint(
                spec,
                options.clone(),
                readings.clone(),
                health.clone(),
                cancel.clone(),
            ))
        })
        .collect()
}

/// Polls every device of one endpoint until `cancel` is cancelled or `readings` closes:
/// one connection per group of [`EndpointSpec::connection_groups`], all in this task.
pub async fn poll_endpoint(
    spec: EndpointSpec,
    options: PollerOptions,
    readings: mpsc::Sender<Reading>,
    health: HealthRegistry,
    cancel: CancellationToken,
) {
    let mut groups = spec.connection_groups();
    if groups.len() <= 1 {
        let devices = groups.pop().unwrap_or_default();
        poll_connection(spec, devices, options, readings, health, cancel).await;
        return;
    }
    let mut connections = tokio::task::JoinSet::new();
    for devices in groups {
        connections.spawn(poll_connection(
            spec.clone(),
            devices,
            options.clone(),
            readings.clone(),
            health.clone(),
            cancel.clone(),
        ));
    }
    while let Some(ended) = connections.join_next().await {
        if let Err(error) = ended {
            tracing::error!(endpoint = %spec.configured, error = %error, "Modbus connection task failed.");
        }
    }
}

/// Polls `devices` over one connection to `spec`'s endpoint.
async fn poll_connection(
    spec: EndpointSpec,
    devices: Vec<PolledDevice>,
    options: PollerOptions,
    readings: mpsc::Sender<Reading>,
    health: HealthRegistry,
    cancel: CancellationToken,
) {
    let mut poller = EndpointPoller::new(spec, devices, options, readings, health);
    if poller.jobs.is_empty() {
        return;
    }
    loop {
        let Some((job, due)) = poller.next_job() else {
            return;
        };
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            () = tokio::time::sleep_until(due) => {}
        }
        let keep_going = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            keep_going = poller.run_job(job) => keep_going,
        };
        if !keep_going {
            break;
        }
        poller.reschedule(job, due);
    }
    poller.client.disconnect();
    poller.report_endpoint();
}

/// Runs every scan (every poll class) of every device of one endpoint once and returns
/// the readings, in request order: one table's worth of data for commissioning a
/// device (`dcguard run --once`). One connection, closed afterwards.
pub async fn scan_once(
    spec: EndpointSpec,
    options: PollerOptions,
    health: &HealthRegistry,
) -> Vec<Reading> {
    // Each point is in exactly one class: one scan of each gives at most one reading
    // per point, so the channel never fills.
    let capacity = spec
        .devices
        .iter()
        .map(|d| d.profile.point_count())
        .sum::<usize>()
        .max(1);
    let (tx, mut rx) = mpsc::channel(capacity);
    for device in &spec.devices {
        health.register(&device.key);
    }
    let devices = spec.devices.clone();
    let mut poller = EndpointPoller::new(spec, devices, options, tx, health.clone());
    for job in 0..poller.jobs.len() {
        poller.run_job(job).await;
    }
    poller.client.disconnect();
    poller.report_endpoint();
    drop(poller);
    let mut readings = Vec::with_capacity(capacity);
    while let Some(reading) = rx.recv().await {
        readings.push(reading);
    }
    readings
}

/// One request of a job and whether it is still read.
#[derive(Debug)]
struct PlannedRequest {
    request: Arc<ReadRequest>,
    /// Disabled after exception 0x02 (or a request the protocol refuses).
    disabled: Option<BadReason>,
}

/// All requests of one poll class of one device.
#[derive(Debug)]
struct Job {
    device: usize,
    requests: Vec<PlannedRequest>,
    interval: Duration,
    next_due: Instant,
}

/// A device's state in its endpoint task.
#[derive(Debug)]
struct DeviceRun {
    key: DeviceKey,
    unit: u8,
    profile: Arc<Profile>,
    /// One id per profile point, built once.
    ids: Vec<PointId>,
    backoff: Backoff,
    /// While the unit is down: not before this instant, and the reason its points read bad.
    down_until: Option<(Instant, BadReason)>,
    /// Longest wait for one of its responses.
    request_timeout: Duration,
}

impl DeviceRun {
    fn modbus(&self) -> Option<&ModbusProfile> {
        match &self.profile.transport {
            ProfileTransport::Modbus(m) => Some(m),
            ProfileTransport::Mqtt(_) => None,
        }
    }
}

/// What the last request of a scan did to the unit and the connection.
enum Verdict {
    /// Carry on with the next request.
    Continue,
    /// The unit is down: the rest of its scan reads bad with this reason, without IO.
    UnitDown(BadReason),
    /// The endpoint cannot be reached: the rest of the scan reads `ConnectionLost`.
    EndpointDown,
}

/// One connection to an endpoint and the devices it polls.
struct EndpointPoller {
    configured: SocketAddr,
    options: PollerOptions,
    settings: EndpointSettings,
    client: ReadOnlyClient,
    /// Client counters and connection state already added to the endpoint's health.
    reported: (ClientCounters, bool),
    devices: Vec<DeviceRun>,
    jobs: Vec<Job>,
    readings: mpsc::Sender<Reading>,
    health: HealthRegistry,
    reconnect: Backoff,
    reconnect_at: Option<Instant>,
    last_request_end: Option<Instant>,
    rng: StdRng,
}

impl EndpointPoller {
    fn new(
        spec: EndpointSpec,
        polled: Vec<PolledDevice>,
        options: PollerOptions,
        readings: mpsc::Sender<Reading>,
        health: HealthRegistry,
    ) -> Self {
        let now = Instant::now();
        let mut devices = Vec::new();
        let mut jobs = Vec::new();
        let endpoint_timeout = spec
            .settings
            .request_timeout
            .unwrap_or(options.client.request_timeout);
        for device in polled {
            let ProfileTransport::Modbus(profile) = &device.profile.transport else {
                continue;
            };
            health.register(&device.key);
            let ids = profile
                .points
                .iter()
                .map(|p| PointId {
                    site: device.key.site.clone(),
                    device: device.key.device.clone(),
                    point: Arc::from(p.name.as_str()),
                })
                .collect();
            let plans = plan_classes(profile);
            let index = devices.len();
            for class in [PollClass::Fast, PollClass::Normal, PollClass::Slow] {
                let plan = plans.of(class);
                for unplanned in &plan.unplanned {
                    let name = profile
                        .points
                        .get(unplanned.point)
                        .map_or("?", |p| p.name.as_str());
                    let problem = format!("point {name} is never read: {}", unplanned.problem);
                    tracing::warn!(site = %device.key.site, device = %device.key.device, "{problem}");
                    health.update_device(&device.key, |h| h.config_problems.push(problem));
                }
                if plan.requests.is_empty() {
                    continue;
                }
                jobs.push(Job {
                    device: index,
                    requests: plan
                        .requests
                        .iter()
                        .map(|request| PlannedRequest {
                            request: Arc::new(request.clone()),
                            disabled: None,
                        })
                        .collect(),
                    interval: device.poll.of(class).max(Duration::from_millis(1)),
                    next_due: now,
                });
            }
            devices.push(DeviceRun {
                key: device.key,
                unit: device.unit,
                profile: device.profile,
                ids,
                backoff: Backoff::default(),
                down_until: None,
                request_timeout: device.request_timeout.unwrap_or(endpoint_timeout),
            });
        }
        health.update_endpoint(spec.configured, |_| ());
        EndpointPoller {
            configured: spec.configured,
            client: ReadOnlyClient::new(spec.address, options.client.clone()),
            settings: spec.settings,
            reported: (ClientCounters::default(), false),
            options,
            devices,
            jobs,
            readings,
            health,
            reconnect: Backoff::default(),
            reconnect_at: None,
            last_request_end: None,
            rng: StdRng::from_rng(&mut rand::rng()),
        }
    }

    /// The job due first (ties: the first listed), and when.
    fn next_job(&self) -> Option<(usize, Instant)> {
        self.jobs
            .iter()
            .enumerate()
            .min_by_key(|(i, job)| (job.next_due, *i))
            .map(|(i, job)| (i, job.next_due))
    }

    /// The next slot after `due`; a scan that overran skips missed slots, never bursts.
    fn reschedule(&mut self, job: usize, due: Instant) {
        let now = Instant::now();
        if let Some(job) = self.jobs.get_mut(job) {
            let mut next = due + job.interval;
            if next <= now {
                next = now + job.interval;
            }
            job.next_due = next;
        }
    }

    /// Runs one scan. False when the readings channel is closed.
    async fn run_job(&mut self, job_index: usize) -> bool {
        let Some(job) = self.jobs.get(job_index) else {
            return true;
        };
        let device_index = job.device;
        let request_count = job.requests.len();
        let started = Instant::now();
        let mut sent_in_scan: u32 = 0;
        let mut skip: Option<BadReason> = None;

        // A unit still backing off, or an endpoint still refusing: no IO this scan.
        let now = Instant::now();
        if let Some(device) = self.devices.get(device_index)
            && let Some((until, reason)) = &device.down_until
            && *until > now
        {
            skip = Some(reason.clone());
        }
        if skip.is_none()
            && !self.client.is_connected()
            && self.reconnect_at.is_some_and(|at| at > now)
        {
            skip = Some(BadReason::ConnectionLost);
        }

        for r in 0..request_count {
            let Some(planned) = self.jobs.get(job_index).and_then(|j| j.requests.get(r)) else {
                break;
            };
            let request = Arc::clone(&planned.request);
            let reason = skip.clone().or_else(|| planned.disabled.clone());
            if let Some(reason) = reason {
                if !self
                    .emit_bad(device_index, &request, reason, Utc::now())
                    .await
                {
                    return false;
                }
                continue;
            }
            let (verdict, sent, open) = self
                .read_request(job_index, r, device_index, &request)
                .await;
            sent_in_scan += sent;
            if !open {
                return false;
            }
            match verdict {
                Verdict::Continue => {}
                Verdict::UnitDown(reason) => skip = Some(reason),
                Verdict::EndpointDown => skip = Some(BadReason::ConnectionLost),
            }
        }

        if self.settings.close_after_scan && sent_in_scan > 0 {
            self.client.disconnect();
        }
        let elapsed = started.elapsed();
        if let Some(device) = self.devices.get(device_index) {
            self.health.update_device(&device.key, |h| {
                h.scans += 1;
                h.last_scan_duration = Some(elapsed);
                h.requests_last_scan = sent_in_scan;
            });
        }
        self.report_endpoint();
        true
    }

    /// Adds what this connection did since the last report to the endpoint's health
    /// (several connections of one endpoint add up).
    fn report_endpoint(&mut self) {
        let now = (self.client.counters(), self.client.is_connected());
        if now == self.reported {
            return;
        }
        let (was, was_open) = self.reported;
        let (counters, open) = now;
        self.health.update_endpoint(self.configured, |e| {
            e.connects += counters.connects - was.connects;
            e.connect_failures += counters.connect_failures - was.connect_failures;
            e.drops += counters.drops - was.drops;
            e.requests += counters.requests - was.requests;
            match (was_open, open) {
                (false, true) => e.open_connections += 1,
                (true, false) => e.open_connections = e.open_connections.saturating_sub(1),
                _ => {}
            }
            e.connected = e.open_connections > 0;
        });
        self.reported = now;
    }

    /// Sends one request (with its retries), emits its readings, updates health.
    /// Returns the verdict, the requests sent, and false when the channel closed.
    async fn read_request(
        &mut self,
        job_index: usize,
        request_index: usize,
        device_index: usize,
        request: &ReadRequest,
    ) -> (Verdict, u32, bool) {
        let Some((unit, timeout)) = self
            .devices
            .get(device_index)
            .map(|d| (d.unit, d.request_timeout))
        else {
            return (Verdict::Continue, 0, true);
        };
        let mut sent = 0u32;
        let mut busy_left = self.options.busy_retries;
        let mut reconnect_retry_left = 1u32;
        let (sampled_at, result) = loop {
            self.pause().await;
            let was_connected = self.client.is_connected();
            let sampled_at = Utc::now();
            let result = self
                .client
                .read_within(
                    unit,
                    request.register,
                    request.start,
                    request.count,
                    timeout,
                )
                .await;
            self.last_request_end = Some(Instant::now());
            if !matches!(result, Err(ClientError::Connect(_))) {
                // A connection was there or has just been opened.
                sent += 1;
                self.reconnect.reset();
                self.reconnect_at = None;
            }
            let Some(device) = self.devices.get(device_index) else {
                return (Verdict::Continue, sent, true);
            };
            let key = device.key.clone();
            match &result {
                Err(ClientError::Exception(BUSY)) if busy_left > 0 => {
                    busy_left -= 1;
                    self.health.update_device(&key, |h| {
                        *h.errors.exception.entry(BUSY).or_default() += 1;
                        h.busy_retries += 1;
                    });
                    tokio::time::sleep(self.options.busy_retry_delay).await;
                    continue;
                }
                Err(
                    error @ (ClientError::Io(_)
                    | ClientError::Mismatch { .. }
                    | ClientError::Malformed(_)),
                ) if was_connected && reconnect_retry_left > 0 => {
                    // The connection failed under this request (closed while idle, or a
                    // stray frame): it was dropped; one retry on a new connection.
                    reconnect_retry_left -= 1;
                    self.health.update_device(&key, |h| count_error(h, error));
                    tracing::debug!(device = %key.device, %error, "retrying on a new connection");
                    continue;
                }
                _ => break (sampled_at, result),
            }
        };
        let open = self
            .finish_request(
                job_index,
                request_index,
                device_index,
                request,
                sampled_at,
                result,
                sent,
            )
            .await;
        (open.0, sent, open.1)
    }

    /// Turns a request's final result into readings, health and a verdict.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site; the indices locate the request to disable"
    )]
    async fn finish_request(
        &mut self,
        job_index: usize,
        request_index: usize,
        device_index: usize,
        request: &ReadRequest,
        sampled_at: DateTime<Utc>,
        result: Result<ReadData, ClientError>,
        sent: u32,
    ) -> (Verdict, bool) {
        let Some(device) = self.devices.get_mut(device_index) else {
            return (Verdict::Continue, true);
        };
        let key = device.key.clone();
        self.health
            .update_device(&key, |h| h.requests += u64::from(sent));
        match result {
            Ok(data) => {
                device.backoff.reset();
                device.down_until = None;
                self.health.update_device(&key, |h| h.mark_up(sampled_at));
                let open = self
                    .emit_data(device_index, request, &data, sampled_at)
                    .await;
                (Verdict::Continue, open)
            }
            Err(error) => {
                self.health.update_device(&key, |h| count_error(h, &error));
                let (reason, verdict) = match &error {
                    ClientError::Exception(ILLEGAL_ADDRESS) => {
                        self.disable(job_index, request_index, device_index, request);
                        (BadReason::Exception(ILLEGAL_ADDRESS), Verdict::Continue)
                    }
                    ClientError::Exception(code @ (GATEWAY_TARGET | GATEWAY_PATH)) => {
                        let reason = BadReason::Exception(*code);
                        self.unit_down(device_index, reason.clone(), &error.to_string());
                        (reason.clone(), Verdict::UnitDown(reason))
                    }
                    ClientError::Exception(code) => {
                        (BadReason::Exception(*code), Verdict::Continue)
                    }
                    ClientError::Timeout => {
                        self.unit_down(device_index, BadReason::Timeout, "timeout");
                        (BadReason::Timeout, Verdict::UnitDown(BadReason::Timeout))
                    }
                    ClientError::Connect(_) => {
                        let delay = self.reconnect.fail(&self.options.reconnect, &mut self.rng);
                        self.reconnect_at = Some(Instant::now() + delay);
                        tracing::debug!(endpoint = %self.configured, ?delay, %error, "reconnect backoff");
                        self.mark_endpoint_down(&error.to_string());
                        (BadReason::ConnectionLost, Verdict::EndpointDown)
                    }
                    ClientError::Io(_) => {
                        if let Some(device) = self.devices.get(device_index) {
                            self.health
                                .update_device(&device.key, |h| h.mark_down(error.to_string()));
                        }
                        (BadReason::ConnectionLost, Verdict::Continue)
                    }
                    ClientError::Mismatch { .. } | ClientError::Malformed(_) => {
                        // Twice in a row (the retry on a new connection too): the
                        // device or its gateway answers garbage.
                        if let Some(device) = self.devices.get(device_index) {
                            self.health
                                .update_device(&device.key, |h| h.mark_down(error.to_string()));
                        }
                        (
                            BadReason::Decode(format!("response rejected: {error}")),
                            Verdict::Continue,
                        )
                    }
                    ClientError::InvalidRequest => {
                        self.disable(job_index, request_index, device_index, request);
                        (
                            BadReason::Decode("request outside the protocol limits".into()),
                            Verdict::Continue,
                        )
                    }
                };
                let open = self
                    .emit_bad(device_index, request, reason, sampled_at)
                    .await;
                (verdict, open)
            }
        }
    }

    /// Reports a request's points once as a configuration problem and stops reading it.
    fn disable(
        &mut self,
        job_index: usize,
        request_index: usize,
        device_index: usize,
        request: &ReadRequest,
    ) {
        let Some(device) = self.devices.get(device_index) else {
            return;
        };
        let names: Vec<&str> = request
            .points
            .iter()
            .filter_map(|(i, _)| device.modbus().and_then(|m| m.points.get(*i)))
            .map(|p| p.name.as_str())
            .collect();
        let problem = format!(
            "the device refuses {} {}..{} (exception 0x02, illegal address): points {} \
             are not read; check the profile",
            request.register.as_str(),
            request.start,
            request.end(),
            names.join(", ")
        );
        tracing::warn!(site = %device.key.site, device = %device.key.device, unit = device.unit, "{problem}");
        self.health
            .update_device(&device.key, |h| h.config_problems.push(problem));
        if let Some(planned) = self
            .jobs
            .get_mut(job_index)
            .and_then(|j| j.requests.get_mut(request_index))
        {
            planned.disabled = Some(BadReason::Exception(ILLEGAL_ADDRESS));
        }
    }

    /// The unit stops answering: it backs off on its own; its siblings are unaffected.
    fn unit_down(&mut self, device_index: usize, reason: BadReason, why: &str) {
        let Some(device) = self.devices.get_mut(device_index) else {
            return;
        };
        let delay = device
            .backoff
            .fail(&self.options.unit_backoff, &mut self.rng);
        device.down_until = Some((Instant::now() + delay, reason));
        tracing::debug!(device = %device.key.device, unit = device.unit, ?delay, why, "unit backoff");
        self.health.update_device(&device.key, |h| h.mark_down(why));
    }

    /// Every device of the endpoint is down: the endpoint cannot be reached.
    fn mark_endpoint_down(&self, why: &str) {
        for device in &self.devices {
            self.health.update_device(&device.key, |h| h.mark_down(why));
        }
    }

    /// Waits out the pause between requests, if any.
    async fn pause(&self) {
        if self.settings.pause_between_requests.is_zero() {
            return;
        }
        if let Some(end) = self.last_request_end {
            tokio::time::sleep_until(end + self.settings.pause_between_requests).await;
        }
    }

    /// Decodes and sends the readings of an answered request.
    async fn emit_data(
        &self,
        device_index: usize,
        request: &ReadRequest,
        data: &ReadData,
        sampled_at: DateTime<Utc>,
    ) -> bool {
        let Some(device) = self.devices.get(device_index) else {
            return true;
        };
        let Some(profile) = device.modbus() else {
            return true;
        };
        let mut decode_errors = 0u64;
        for (index, offset) in &request.points {
            let (Some(point), Some(id)) = (profile.points.get(*index), device.ids.get(*index))
            else {
                continue;
            };
            let value = match data {
                ReadData::Words(words) => decode_in(point, words, *offset),
                ReadData::Bits(bits) => decode_bits_in(point, bits, *offset),
            };
            if matches!(value, Err(BadReason::Decode(_))) {
                decode_errors += 1;
            }
            if self
                .readings
                .send(Reading::from_result(id.clone(), value, sampled_at))
                .await
                .is_err()
            {
                return false;
            }
        }
        if decode_errors > 0 {
            self.health
                .update_device(&device.key, |h| h.errors.decode += decode_errors);
        }
        true
    }

    /// Sends a bad reading for every point of a request.
    async fn emit_bad(
        &self,
        device_index: usize,
        request: &ReadRequest,
        reason: BadReason,
        sampled_at: DateTime<Utc>,
    ) -> bool {
        let Some(device) = self.devices.get(device_index) else {
            return true;
        };
        for (index, _) in &request.points {
            let Some(id) = device.ids.get(*index) else {
                continue;
            };
            let reading = Reading::bad(id.clone(), reason.clone(), sampled_at);
            if self.readings.send(reading).await.is_err() {
                return false;
            }
        }
        true
    }
}

/// Counts one client error in a device's health.
fn count_error(health: &mut crate::sources::health::DeviceHealth, error: &ClientError) {
    let errors = &mut health.errors;
    match error {
        ClientError::Timeout => errors.timeout += 1,
        ClientError::Exception(code) => *errors.exception.entry(*code).or_default() += 1,
        ClientError::Mismatch { .. } => errors.mismatch += 1,
        ClientError::Malformed(_) => errors.malformed += 1,
        ClientError::Io(_) => errors.io += 1,
        ClientError::Connect(_) => errors.connect += 1,
        ClientError::InvalidRequest => errors.decode += 1,
    }
}
