//! The InfluxDB v2 sink: batches readings as line protocol, writes them with
//! `POST /api/v2/write`, spools what cannot be written to disk and replays it, and
//! quarantines lines the server refuses.
//!
//! **Why plain reqwest and not the `influxdb2` crate.** The crate's write call returns
//! the status and body of a failed request but not its headers, so `Retry-After` on 429
//! and 503 is out of reach; it cannot gzip a line-protocol body; its default features
//! pull in OpenSSL. Its `write_line_protocol` is a thin POST (the peer figures in
//! `perf-limits.md` section 3 show the same rate for both), so this module makes that POST
//! itself with reqwest on rustls (the platform's root certificates). The token is sent
//! as `Authorization: Token ...` and never logged ([`Token`] prints as `***`).
//!
//! ## Design constraints
//!
//! * **Never slows the alarm path.** The consumer offers readings with `try_send`
//!   ([`InfluxSender::offer`]); a full queue drops the newest reading and counts it.
//! * **Two tasks.** The *batcher* encodes readings and cuts a batch at
//!   `batch_max_points` lines or `flush_interval` after its first line; it hands the
//!   batch to the *writer* through a channel of [`InfluxOptions::pending_batches`],
//!   waiting up to `flush_interval` for room, or appends it to the spool itself when
//!   the writer takes nothing for that long. The writer posts
//!   batches, up to [`InfluxOptions::max_in_flight`] requests at once (a round trip per
//!   batch would otherwise cap the rate well below the server's); a batch that fails for
//!   a retryable reason goes to the spool. Concurrent batches may land out of order,
//!   which changes nothing stored: every line carries its sampling instant.
//! * **The spool is replayed first, oldest first.** While the spool holds anything the
//!   writer moves new batches into it, so replay keeps its order and the backlog lives
//!   on disk; replay is one record at a time. Memory holds at most the readings queue,
//!   one batch being built, the pending batches, the batches in flight and the segment
//!   being replayed.
//! * **Retries.** 429 and 503 honour `Retry-After` (seconds or an HTTP date, capped at
//!   `retry_after_max`); other 5xx, timeouts and connection failures back off
//!   exponentially with jitter from `backoff_min` to `backoff_max`. There is no give-up:
//!   only the spool's byte and age budgets drop data, oldest first, counted.
//! * **Refused lines never block the rest.** A 400, 413 or 422 splits the batch in halves
//!   (bisection) until the refused lines are isolated; they go to the quarantine file,
//!   counted, and are never retried. 401, 403 and 404 are configuration faults (token,
//!   org, bucket): the data stays in the spool and the writer retries at `backoff_max`,
//!   logging an error each time, so fixing the token loses nothing.
//! * **Shutdown.** When the readings queue closes the batcher cuts its last batch; the
//!   writer tries each pending batch once when the spool is empty, else spools it, and
//!   ends. A backlog stays on disk for the next run.
//! * **gzip if it pays** (`Content-Encoding: gzip`, fastest level), on by default: a
//!   batch of readings compresses about 8.5:1 for 0.5 µs per line (see
//!   `docs/timeseries.md`). Bodies under [`GZIP_MIN_BYTES`] (a few lines: the tail of a
//!   quiet interval, the single lines of a bisection) and bodies that would not shrink
//!   are sent plain.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::model::{Config, SecretRef};
use crate::model::Reading;
use crate::sinks::line_protocol::{self, SeriesKey};
use crate::sinks::spool::{Spool, SpoolConfig, SpoolCounters, SpoolError};

/// Bodies shorter than this are sent uncompressed: a few lines gain a few hundred bytes
/// at most, less than gzip's own header and the server's inflate cost.
pub const GZIP_MIN_BYTES: usize = 1024;

/// Readings the batcher takes off the queue at once at most.
const RECV_CHUNK: usize = 256;

/// The API token. Prints as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps a token value.
    pub fn new(value: String) -> Token {
        Token(value)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Everything the sink needs. [`InfluxOptions::from_config`] fills it from
/// `[influxdb]`; tests build it directly.
#[derive(Debug, Clone)]
pub struct InfluxOptions {
    /// Base URL (`http://` or `https://`), without `/api/v2/write`.
    pub url: String,
    /// Organisation.
    pub org: String,
    /// Bucket.
    pub bucket: String,
    /// API token, when the server wants one.
    pub token: Option<Token>,
    /// Compress request bodies.
    pub gzip: bool,
    /// Lines per batch at most.
    pub batch_max_points: usize,
    /// A batch is written at the latest this long after its first line.
    pub flush_interval: Duration,
    /// Readings queued between the consumer and the batcher (full: drop newest).
    pub queue_capacity: usize,
    /// Batches handed from the batcher to the writer in memory.
    pub pending_batches: usize,
    /// Write requests in flight at once on the healthy path (the spool replays one at
    /// a time, in order).
    pub max_in_flight: usize,
    /// Timeout of one write request.
    pub request_timeout: Duration,
    /// First backoff after a failure.
    pub backoff_min: Duration,
    /// Longest backoff.
    pub backoff_max: Duration,
    /// Longest `Retry-After` honoured.
    pub retry_after_max: Duration,
    /// The spool.
    pub spool: SpoolConfig,
}

/// The sink could not start.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The token reference could not be read (the message names the reference only).
    #[error("InfluxDB token: {0}")]
    Token(String),
    /// The HTTP client could not be built (TLS roots).
    #[error("InfluxDB HTTP client: {0}")]
    Client(String),
    /// The spool could not be opened.
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

impl InfluxOptions {
    /// Options from the validated configuration; `None` when `[influxdb]` is absent or
    /// disabled. Reads the token now (start-up error when it is missing).
    pub fn from_config(config: &Config) -> Result<Option<InfluxOptions>, SinkError> {
        let Some(influx) = config.influxdb.as_ref().filter(|i| i.enabled) else {
            return Ok(None);
        };
        let token = match &influx.token {
            Some(secret) => Some(Token(read_secret(secret).map_err(SinkError::Token)?)),
            None => None,
        };
        Ok(Some(InfluxOptions {
            url: influx.url.clone(),
            org: influx.org.clone(),
            bucket: influx.bucket.clone(),
            token,
            gzip: influx.gzip,
            batch_max_points: influx.batch_max_points,
            flush_interval: influx.flush_interval,
            queue_capacity: influx.queue_capacity,
            pending_batches: 4,
            max_in_flight: influx.max_in_flight,
            request_timeout: Duration::from_secs(10),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(120),
            retry_after_max: Duration::from_secs(600),
            spool: SpoolConfig {
                dir: config.daemon.data_dir.join("spool").join("influxdb"),
                max_bytes: influx.spool_max_bytes,
                max_age: influx.spool_max_age,
                segment_bytes: (influx.spool_max_bytes / 16).clamp(64 << 10, 64 << 20),
            },
        }))
    }
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

/// Measurement and tags of every configured device, by site and device.
#[derive(Debug, Clone, Default)]
pub struct SeriesIndex {
    keys: HashMap<Arc<str>, HashMap<Arc<str>, Arc<SeriesKey>>>,
}

/// The series of the last reading looked up: a device's points come one after another
/// (a poll reads a device at once), so most lookups compare two short ids instead of
/// hashing them.
#[derive(Default)]
struct LastSeries {
    site: Option<Arc<str>>,
    device: Option<Arc<str>>,
    key: Option<Arc<SeriesKey>>,
}

impl SeriesIndex {
    /// Every device of the configuration: kind, site, room, rack, device.
    pub fn from_config(config: &Config) -> SeriesIndex {
        let mut index = SeriesIndex::default();
        for site in &config.sites {
            for device in &site.devices {
                let rack = device.rack.as_deref().unwrap_or("");
                index.insert(
                    &site.id,
                    &device.id,
                    device.kind().as_str(),
                    &device.room,
                    rack,
                );
            }
        }
        index
    }

    /// Adds one device; refused ids (see `line_protocol`) are logged and left out, so
    /// their readings count as unencodable.
    pub fn insert(&mut self, site: &str, device: &str, kind: &str, room: &str, rack: &str) {
        let tags = [
            ("site", site, false),
            ("room", room, false),
            ("rack", rack, true),
            ("device", device, false),
        ];
        match SeriesKey::new(kind, &tags) {
            Ok(key) => {
                self.keys
                    .entry(Arc::from(site))
                    .or_default()
                    .insert(Arc::from(device), Arc::new(key));
            }
            Err(error) => {
                tracing::error!(site, device, %error, "Device left out of InfluxDB.");
            }
        }
    }

    fn get(&self, reading: &Reading) -> Option<&Arc<SeriesKey>> {
        let id = reading.point();
        self.keys.get(&*id.site)?.get(&*id.device)
    }

    /// [`SeriesIndex::get`] through `last`.
    fn get_cached<'a>(&self, reading: &Reading, last: &'a mut LastSeries) -> Option<&'a SeriesKey> {
        let id = reading.point();
        let same = |held: &Option<Arc<str>>, now: &Arc<str>| {
            held.as_ref()
                .is_some_and(|h| Arc::ptr_eq(h, now) || **h == **now)
        };
        if !(same(&last.site, &id.site) && same(&last.device, &id.device)) {
            last.key = self.get(reading).cloned();
            last.site = Some(id.site.clone());
            last.device = Some(id.device.clone());
        }
        last.key.as_deref()
    }
}

/// The sink's counters and gauges; [`InfluxStats::sample`] copies them for `/metrics`.
#[derive(Debug, Default)]
pub struct InfluxStats {
    offered: AtomicU64,
    dropped_queue_full: AtomicU64,
    unencodable: AtomicU64,
    lines_written: AtomicU64,
    batches_written: AtomicU64,
    failures_transport: AtomicU64,
    failures_status: AtomicU64,
    failures_rejected: AtomicU64,
    spool_lines: AtomicU64,
    spool_bytes: AtomicU64,
    spool_errors: AtomicU64,
    spool_error_lines: AtomicU64,
    spool: Mutex<SpoolCounters>,
}

/// A copy of [`InfluxStats`] at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InfluxSample {
    /// Readings offered by the consumer.
    pub offered: u64,
    /// Readings dropped because the sink's queue was full.
    pub dropped_queue_full: u64,
    /// Readings without a line (unknown device, unrepresentable id).
    pub unencodable: u64,
    /// Lines the server accepted.
    pub lines_written: u64,
    /// Requests the server accepted.
    pub batches_written: u64,
    /// Requests that failed without an answer (connect, timeout).
    pub failures_transport: u64,
    /// Requests answered 429, 5xx, 401, 403 or 404 (retried).
    pub failures_status: u64,
    /// Requests answered 400, 413 or 422 (split, never retried as they were).
    pub failures_rejected: u64,
    /// Lines in the spool now.
    pub spool_lines: u64,
    /// Bytes in the spool now.
    pub spool_bytes: u64,
    /// Spool IO errors (append, replay, expiry).
    pub spool_errors: u64,
    /// Lines lost because the spool could not keep their batch (an append failed).
    pub spool_error_lines: u64,
    /// The spool's own counters (drops by budget and age, corruption, quarantine).
    pub spool: SpoolCounters,
}

impl InfluxStats {
    /// The current values.
    pub fn sample(&self) -> InfluxSample {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        InfluxSample {
            offered: l(&self.offered),
            dropped_queue_full: l(&self.dropped_queue_full),
            unencodable: l(&self.unencodable),
            lines_written: l(&self.lines_written),
            batches_written: l(&self.batches_written),
            failures_transport: l(&self.failures_transport),
            failures_status: l(&self.failures_status),
            failures_rejected: l(&self.failures_rejected),
            spool_lines: l(&self.spool_lines),
            spool_bytes: l(&self.spool_bytes),
            spool_errors: l(&self.spool_errors),
            spool_error_lines: l(&self.spool_error_lines),
            spool: *self.spool.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }
}

/// The consumer's end of the sink: offer readings without waiting.
#[derive(Debug, Clone)]
pub struct InfluxSender {
    tx: mpsc::Sender<Reading>,
    stats: Arc<InfluxStats>,
}

impl InfluxSender {
    /// Queues a reading; when the queue is full the reading is dropped and counted.
    pub fn offer(&self, reading: Reading) {
        self.stats.offered.fetch_add(1, Ordering::Relaxed);
        if self.tx.try_send(reading).is_err() {
            self.stats
                .dropped_queue_full
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The sink's statistics.
    pub fn stats(&self) -> Arc<InfluxStats> {
        self.stats.clone()
    }
}

/// A running sink: drop every [`InfluxSender`] and await [`InfluxSink::join`] to stop.
#[derive(Debug)]
pub struct InfluxSink {
    batcher: JoinHandle<()>,
    writer: JoinHandle<()>,
    stats: Arc<InfluxStats>,
}

impl InfluxSink {
    /// The sink's statistics.
    pub fn stats(&self) -> Arc<InfluxStats> {
        self.stats.clone()
    }

    /// Waits until both tasks ended (after every sender was dropped).
    pub async fn join(self) {
        let _ = self.batcher.await;
        let _ = self.writer.await;
    }
}

struct Batch {
    body: String,
    lines: u32,
    created_ms: i64,
}

type SharedSpool = Arc<Mutex<Spool>>;

/// Opens the spool and spawns the batcher and the writer.
pub fn start(
    options: InfluxOptions,
    index: SeriesIndex,
) -> Result<(InfluxSender, InfluxSink), SinkError> {
    let spool = Spool::open(options.spool.clone())?;
    let client = reqwest::Client::builder()
        .timeout(options.request_timeout)
        .connect_timeout(options.request_timeout)
        .build()
        .map_err(|e| SinkError::Client(e.to_string()))?;
    let stats = Arc::new(InfluxStats::default());
    let spool = Arc::new(Mutex::new(spool));
    publish(&stats, &lock(&spool));
    let (tx, rx) = mpsc::channel(options.queue_capacity.max(1));
    let (batch_tx, batch_rx) = mpsc::channel(options.pending_batches.max(1));
    let stop = CancellationToken::new();
    let options = Arc::new(options);
    let batcher = tokio::spawn(batcher(
        options.clone(),
        index,
        rx,
        batch_tx,
        spool.clone(),
        stats.clone(),
        stop.clone(),
    ));
    let writer = tokio::spawn(
        Writer {
            poster: Arc::new(Poster {
                url: format!(
                    "{}/api/v2/write?org={}&bucket={}&precision=ns",
                    options.url.trim_end_matches('/'),
                    encode_query(&options.org),
                    encode_query(&options.bucket)
                ),
                client,
                options,
                spool,
                stats: stats.clone(),
            }),
            backoff_step: 0,
            not_before: Instant::now(),
            failed_at: None,
            failing: false,
        }
        .run(batch_rx, stop),
    );
    Ok((
        InfluxSender {
            tx,
            stats: stats.clone(),
        },
        InfluxSink {
            batcher,
            writer,
            stats,
        },
    ))
}

fn encode_query(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn lock(spool: &SharedSpool) -> std::sync::MutexGuard<'_, Spool> {
    // The spool's state stays consistent between calls; a panic elsewhere leaves it usable.
    spool.lock().unwrap_or_else(|e| e.into_inner())
}

fn publish(stats: &InfluxStats, spool: &Spool) {
    stats.spool_lines.store(spool.lines(), Ordering::Relaxed);
    stats.spool_bytes.store(spool.bytes(), Ordering::Relaxed);
    *stats.spool.lock().unwrap_or_else(|e| e.into_inner()) = spool.counters();
}

/// Runs `f` on the spool in a blocking task (file IO and fsync stay off the runtime's
/// workers), then publishes the spool's figures.
async fn with_spool<T: Send + 'static>(
    spool: &SharedSpool,
    stats: &Arc<InfluxStats>,
    f: impl FnOnce(&mut Spool) -> Result<T, SpoolError> + Send + 'static,
) -> Option<T> {
    let spool = spool.clone();
    let stats2 = stats.clone();
    let result = tokio::task::spawn_blocking(move || {
        let mut guard = lock(&spool);
        let result = f(&mut guard);
        publish(&stats2, &guard);
        result
    })
    .await;
    match result {
        Ok(Ok(value)) => Some(value),
        Ok(Err(error)) => {
            stats.spool_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(%error, "InfluxDB spool failed.");
            None
        }
        Err(error) => {
            stats.spool_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(%error, "InfluxDB spool task failed.");
            None
        }
    }
}

async fn spool_batch(spool: &SharedSpool, stats: &Arc<InfluxStats>, batch: Batch) {
    let lines = batch.lines;
    if with_spool(spool, stats, move |s| {
        s.append(&batch.body, batch.lines, batch.created_ms)
    })
    .await
    .is_none()
    {
        stats
            .spool_error_lines
            .fetch_add(u64::from(lines), Ordering::Relaxed);
        tracing::error!(lines, "A batch could not be spooled and is lost.");
    }
}

async fn batcher(
    options: Arc<InfluxOptions>,
    index: SeriesIndex,
    mut rx: mpsc::Receiver<Reading>,
    batch_tx: mpsc::Sender<Batch>,
    spool: SharedSpool,
    stats: Arc<InfluxStats>,
    stop: CancellationToken,
) {
    let max_lines = options.batch_max_points.max(1);
    let mut body = String::new();
    let mut lines: u32 = 0;
    let mut first_at = Instant::now();
    let tick_every = (options.flush_interval / 4).max(Duration::from_millis(10));
    let mut tick = tokio::time::interval(tick_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_expire = Instant::now();
    // How long a cut batch waits for the writer before it goes to the spool.
    let wait = options.flush_interval;
    // Readings are taken off the queue in chunks (one wake-up and one lock per chunk, not
    // per reading), never more than the batch has room for.
    let mut chunk: Vec<Reading> = Vec::with_capacity(RECV_CHUNK);
    let mut last = LastSeries::default();
    loop {
        let room = max_lines
            .saturating_sub(lines as usize)
            .clamp(1, RECV_CHUNK);
        let cut = tokio::select! {
            got = rx.recv_many(&mut chunk, room) => {
                if got == 0 {
                    break;
                }
                for reading in chunk.drain(..) {
                    match index.get_cached(&reading, &mut last) {
                        Some(key) => match line_protocol::encode(key, &reading, &mut body) {
                            Ok(()) => {
                                if lines == 0 {
                                    first_at = Instant::now();
                                }
                                lines += 1;
                            }
                            Err(error) => {
                                stats.unencodable.fetch_add(1, Ordering::Relaxed);
                                tracing::debug!(point = %reading.point(), %error, "Reading has no line.");
                            }
                        },
                        None => {
                            stats.unencodable.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                lines as usize >= max_lines
            },
            _ = tick.tick() => {
                if last_expire.elapsed() >= Duration::from_secs(1) {
                    last_expire = Instant::now();
                    let now = Utc::now().timestamp_millis();
                    with_spool(&spool, &stats, move |s| s.expire(now)).await;
                }
                lines > 0 && first_at.elapsed() >= options.flush_interval
            }
        };
        if cut {
            hand_off(&mut body, &mut lines, &batch_tx, wait, &spool, &stats).await;
        }
    }
    hand_off(&mut body, &mut lines, &batch_tx, wait, &spool, &stats).await;
    stop.cancel();
}

/// Hands a cut batch to the writer, waiting up to `wait` for room (the writer busy with
/// its requests in flight: backpressure, the readings queue buffers meanwhile); a writer
/// that takes nothing for that long is failing or replaying, and the batch goes to the
/// spool. Spilling at once would turn a burst into a serial replay from disk.
async fn hand_off(
    body: &mut String,
    lines: &mut u32,
    batch_tx: &mpsc::Sender<Batch>,
    wait: Duration,
    spool: &SharedSpool,
    stats: &Arc<InfluxStats>,
) {
    if *lines == 0 {
        return;
    }
    // The next batch starts with room for one like this one: no regrowth copies.
    let room = body.len() + body.len() / 8;
    let batch = Batch {
        body: std::mem::replace(body, String::with_capacity(room)),
        lines: std::mem::take(lines),
        created_ms: Utc::now().timestamp_millis(),
    };
    match tokio::time::timeout(wait, batch_tx.reserve()).await {
        Ok(Ok(permit)) => permit.send(batch),
        // Timed out, or the writer is gone.
        Ok(Err(_)) | Err(_) => spool_batch(spool, stats, batch).await,
    }
}

/// What one write attempt (with bisection) came to.
enum Sent {
    /// Every line was accepted or quarantined.
    Done,
    /// A retryable failure; the lines from byte `from` on are still to be written.
    Retry {
        /// Byte offset of the first unwritten line in the body.
        from: usize,
        /// Lines from `from` on.
        lines: u32,
        /// The server's `Retry-After`, when it gave one.
        after: Option<Duration>,
        /// Back off at the maximum (a configuration fault).
        slow: bool,
    },
}

/// One request's outcome.
enum Outcome {
    Ok,
    Retry { after: Option<Duration>, slow: bool },
    Refused { status: u16, text: String },
}

/// What the writer's requests share: the target, the client, the spool for quarantine.
struct Poster {
    url: String,
    client: reqwest::Client,
    options: Arc<InfluxOptions>,
    spool: SharedSpool,
    stats: Arc<InfluxStats>,
}

/// A batch written by a request task, with what became of it.
struct Attempt {
    batch: Batch,
    sent: Sent,
    /// When its first request left.
    started: Instant,
}

struct Writer {
    poster: Arc<Poster>,
    backoff_step: u32,
    not_before: Instant,
    /// When the last retryable failure was seen: a success of a request sent before it
    /// says nothing about the server now.
    failed_at: Option<Instant>,
    /// Between the first failure and the next success (logs the transitions once).
    failing: bool,
}

impl Writer {
    /// Posts new batches with up to `max_in_flight` requests at once while the spool is
    /// empty; replays the spool one record at a time, oldest first, otherwise. Batches
    /// may land out of order: every line carries its sampling instant, so the stored set
    /// is the same.
    async fn run(mut self, mut batch_rx: mpsc::Receiver<Batch>, stop: CancellationToken) {
        let limit = self.poster.options.max_in_flight.max(1);
        let mut in_flight: JoinSet<Attempt> = JoinSet::new();
        loop {
            let spooled = !lock(&self.poster.spool).is_empty();
            if spooled {
                // Settle the requests still out first: a failed one spools its rest.
                if let Some(done) = in_flight.join_next().await {
                    self.settle(done).await;
                    continue;
                }
                if self.replay_one(&mut batch_rx, &stop).await {
                    return;
                }
                continue;
            }
            tokio::select! {
                biased;
                Some(done) = in_flight.join_next() => self.settle(done).await,
                batch = batch_rx.recv(), if in_flight.len() < limit => {
                    let Some(batch) = batch else {
                        while let Some(done) = in_flight.join_next().await {
                            self.settle(done).await;
                        }
                        return;
                    };
                    if Instant::now() < self.not_before {
                        // Still backing off (the spool was emptied by its budget): keep
                        // the order.
                        spool_batch(&self.poster.spool, &self.poster.stats, batch).await;
                        continue;
                    }
                    let poster = self.poster.clone();
                    in_flight.spawn(async move {
                        let started = Instant::now();
                        let sent = poster.send_all(&batch.body, batch.lines).await;
                        Attempt { batch, sent, started }
                    });
                }
            }
        }
    }

    /// One step of the replay: moves new batches to disk behind the backlog, waits out
    /// the backoff, or writes the spool's oldest record. True when the writer is done
    /// (stopping: the backlog stays on disk for the next run).
    async fn replay_one(
        &mut self,
        batch_rx: &mut mpsc::Receiver<Batch>,
        stop: &CancellationToken,
    ) -> bool {
        let poster = self.poster.clone();
        let (spool, stats) = (&poster.spool, &poster.stats);
        // Keep the replay order: new batches queue behind the spool, on disk.
        while let Ok(batch) = batch_rx.try_recv() {
            spool_batch(spool, stats, batch).await;
        }
        if stop.is_cancelled() {
            // The batcher's last hand-off happened before it cancelled `stop`.
            while let Ok(batch) = batch_rx.try_recv() {
                spool_batch(spool, stats, batch).await;
            }
            return true;
        }
        if Instant::now() < self.not_before {
            tokio::select! {
                () = tokio::time::sleep_until(self.not_before) => {}
                () = stop.cancelled() => {}
                // Wake to move new batches to disk while waiting.
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
            return false;
        }
        let front = with_spool(spool, stats, |s| {
            Ok(s.front()?.map(|r| (r.body.clone(), r.lines)))
        })
        .await;
        let (body, lines) = match front {
            Some(Some(record)) => record,
            // Emptied meanwhile (budget, age, only corrupt records left).
            Some(None) => return false,
            None => {
                // Unreadable spool (logged and counted): wait rather than spin.
                self.not_before = Instant::now() + self.poster.options.backoff_max;
                return false;
            }
        };
        let started = Instant::now();
        match poster.send_all(&body, lines).await {
            Sent::Done => {
                self.succeed(started);
                with_spool(spool, stats, |s| s.commit_front()).await;
            }
            Sent::Retry {
                from,
                lines,
                after,
                slow,
            } => {
                if from > 0 {
                    let rest = body.get(from..).unwrap_or_default().to_owned();
                    with_spool(spool, stats, move |s| {
                        s.replace_front(rest, lines);
                        Ok(())
                    })
                    .await;
                }
                self.fail(after, slow);
            }
        }
        false
    }

    /// Takes in a request task's result: a retryable failure spools what is left.
    async fn settle(&mut self, done: Result<Attempt, tokio::task::JoinError>) {
        let Attempt {
            batch,
            sent,
            started,
        } = match done {
            Ok(attempt) => attempt,
            Err(error) => {
                // Nothing in a request task panics by design; if one did, its batch is
                // gone: say so loudly.
                self.poster
                    .stats
                    .spool_errors
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(%error, "An InfluxDB write task failed; its batch is lost.");
                return;
            }
        };
        match sent {
            Sent::Done => self.succeed(started),
            Sent::Retry {
                from,
                lines,
                after,
                slow,
            } => {
                self.fail(after, slow);
                let rest = Batch {
                    body: batch.body.get(from..).unwrap_or_default().to_owned(),
                    lines,
                    created_ms: batch.created_ms,
                };
                spool_batch(&self.poster.spool, &self.poster.stats, rest).await;
            }
        }
    }

    /// A request that left at `started` was accepted.
    fn succeed(&mut self, started: Instant) {
        if self.failed_at.is_some_and(|failed| started < failed) {
            // Sent before the last failure: it does not show the server is back, and must
            // not cut a `Retry-After` short.
            return;
        }
        if self.backoff_step > 0 || self.failing {
            tracing::info!(
                spooled_lines = self.poster.stats.spool_lines.load(Ordering::Relaxed),
                "InfluxDB answers again; replaying the spool."
            );
        }
        self.failing = false;
        self.backoff_step = 0;
        self.not_before = Instant::now();
    }

    /// Sets when the next attempt may start.
    fn fail(&mut self, after: Option<Duration>, slow: bool) {
        let o = &self.poster.options;
        if !self.failing {
            tracing::warn!(
                url = %o.url,
                "InfluxDB write failed; spooling to disk and retrying."
            );
            self.failing = true;
        }
        let wait = match after {
            Some(after) => after.min(o.retry_after_max),
            None if slow => o.backoff_max,
            None => {
                let wait = backoff(
                    self.backoff_step,
                    o.backoff_min,
                    o.backoff_max,
                    rand::random::<f64>(),
                );
                self.backoff_step = self.backoff_step.saturating_add(1);
                wait
            }
        };
        let now = Instant::now();
        self.failed_at = Some(now);
        // Concurrent failures keep the longest wait any of them asked for.
        self.not_before = self.not_before.max(now + wait);
    }
}

impl Poster {
    /// Writes `body`; on a refusal, bisects to isolate and quarantine the refused lines.
    async fn send_all(&self, body: &str, lines: u32) -> Sent {
        // Ranges still to write, the next one last; they partition body[start..] in
        // order, so on a retryable failure everything from the current range on remains.
        let mut stack: Vec<(usize, usize, u32)> = vec![(0, body.len(), lines)];
        while let Some((start, end, n)) = stack.pop() {
            let chunk = body.get(start..end).unwrap_or_default();
            match self.post(chunk).await {
                Outcome::Ok => {
                    self.stats
                        .lines_written
                        .fetch_add(u64::from(n), Ordering::Relaxed);
                    self.stats.batches_written.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Retry { after, slow } => {
                    let remaining = n + stack.iter().map(|r| r.2).sum::<u32>();
                    return Sent::Retry {
                        from: start,
                        lines: remaining,
                        after,
                        slow,
                    };
                }
                Outcome::Refused { status, text } => {
                    if n <= 1 {
                        let why = format!("HTTP {status}: {text}");
                        let chunk = chunk.to_owned();
                        tracing::warn!(status, "InfluxDB refused a line; quarantined.");
                        with_spool(&self.spool, &self.stats, move |s| {
                            s.quarantine(&chunk, n, &why)
                        })
                        .await;
                        continue;
                    }
                    // Split after the middle line.
                    let half = n / 2;
                    let mut split = start;
                    for _ in 0..half {
                        split = match body.get(split..end).and_then(|s| s.find('\n')) {
                            Some(p) => split + p + 1,
                            None => end,
                        };
                    }
                    stack.push((split, end, n - half));
                    stack.push((start, split, half));
                }
            }
        }
        Sent::Done
    }

    async fn post(&self, chunk: &str) -> Outcome {
        let mut request = self
            .client
            .post(&self.url)
            .header("Content-Type", "text/plain; charset=utf-8");
        if let Some(token) = &self.options.token {
            request = request.header("Authorization", format!("Token {}", token.0));
        }
        request = match self.options.gzip.then(|| compress(chunk)).flatten() {
            Some(bytes) => request.header("Content-Encoding", "gzip").body(bytes),
            None => request.body(chunk.to_owned()),
        };
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                self.stats
                    .failures_transport
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %error.without_url(), "InfluxDB write failed.");
                return Outcome::Retry {
                    after: None,
                    slow: false,
                };
            }
        };
        let status = response.status().as_u16();
        if response.status().is_success() {
            return Outcome::Ok;
        }
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let text: String = response
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        match status {
            400 | 413 | 422 => {
                self.stats.failures_rejected.fetch_add(1, Ordering::Relaxed);
                Outcome::Refused { status, text }
            }
            401 | 403 | 404 => {
                self.stats.failures_status.fetch_add(1, Ordering::Relaxed);
                tracing::error!(status, %text, "InfluxDB refused the credentials or target; keeping the data and retrying.");
                Outcome::Retry {
                    after: None,
                    slow: true,
                }
            }
            _ => {
                self.stats.failures_status.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(status, %text, "InfluxDB write failed; retrying.");
                Outcome::Retry {
                    after: if status == 429 || status == 503 {
                        retry_after
                    } else {
                        None
                    },
                    slow: false,
                }
            }
        }
    }
}

/// The wait after the `step`-th consecutive failure: `min * 2^step`, plus up to 50 %
/// jitter (`unit` in `0..1`), never above `max`. The first wait is at least `min`.
fn backoff(step: u32, min: Duration, max: Duration, unit: f64) -> Duration {
    let base = min.saturating_mul(1u32 << step.min(16)).min(max);
    (base + base.mul_f64(unit.clamp(0.0, 1.0) * 0.5)).min(max)
}

/// The gzip body of `chunk` when compressing pays: at least [`GZIP_MIN_BYTES`] long and
/// smaller once compressed.
fn compress(chunk: &str) -> Option<Vec<u8>> {
    if chunk.len() < GZIP_MIN_BYTES {
        return None;
    }
    gzip(chunk.as_bytes())
        .ok()
        .filter(|bytes| bytes.len() < chunk.len())
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4),
        flate2::Compression::fast(),
    );
    encoder.write_all(data)?;
    encoder.finish()
}

/// `Retry-After`: delay seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let delta = at.with_timezone(&Utc) - Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("30"), Some(Duration::from_secs(30)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(120));
        assert_eq!(backoff(0, min, max, 0.0), min);
        assert_eq!(backoff(0, min, max, 1.0), Duration::from_millis(1500));
        assert_eq!(backoff(3, min, max, 0.0), Duration::from_secs(8));
        assert_eq!(backoff(7, min, max, 0.0), max);
        assert_eq!(backoff(40, min, max, 1.0), max);
    }

    #[tokio::test]
    async fn a_full_queue_drops_the_newest_and_counts_it() {
        let (tx, mut rx) = mpsc::channel(2);
        let sender = InfluxSender {
            tx,
            stats: Arc::new(InfluxStats::default()),
        };
        let at = chrono::DateTime::<Utc>::UNIX_EPOCH;
        for i in 0..5 {
            sender.offer(Reading::good(
                crate::model::PointId::new("dc", "ups-1", "load_pct"),
                crate::model::Value::Number(f64::from(i)),
                at,
            ));
        }
        let sample = sender.stats().sample();
        assert_eq!((sample.offered, sample.dropped_queue_full), (5, 3));
        // The oldest two stayed queued: drop newest.
        let first = rx.recv().await.unwrap();
        assert_eq!(first.value(), Some(&crate::model::Value::Number(0.0)));
    }

    #[test]
    fn gzip_only_when_it_pays() {
        let line = "ups,site=dc,room=ups-room,device=ups-1 load_pct=41.5,load_pct_quality=0i 1763730000123456789\n";
        // One line (a bisection step, a quiet interval's tail): plain.
        assert_eq!(compress(line), None);
        // A batch: compressed, and much smaller.
        let batch = line.repeat(200);
        let gz = compress(&batch).unwrap();
        assert!(
            gz.len() * 4 < batch.len(),
            "{} of {}",
            gz.len(),
            batch.len()
        );
    }

    fn writer(dir: &std::path::Path) -> Writer {
        let options = InfluxOptions {
            url: "http://127.0.0.1:9".into(),
            org: "o".into(),
            bucket: "b".into(),
            token: None,
            gzip: false,
            batch_max_points: 10,
            flush_interval: Duration::from_secs(1),
            queue_capacity: 10,
            pending_batches: 1,
            max_in_flight: 4,
            request_timeout: Duration::from_secs(1),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(120),
            retry_after_max: Duration::from_secs(600),
            spool: SpoolConfig {
                dir: dir.to_owned(),
                max_bytes: 1 << 20,
                max_age: Duration::from_secs(60),
                segment_bytes: 64 << 10,
            },
        };
        Writer {
            poster: Arc::new(Poster {
                url: options.url.clone(),
                client: reqwest::Client::new(),
                spool: Arc::new(Mutex::new(Spool::open(options.spool.clone()).unwrap())),
                options: Arc::new(options),
                stats: Arc::new(InfluxStats::default()),
            }),
            backoff_step: 0,
            not_before: Instant::now(),
            failed_at: None,
            failing: false,
        }
    }

    #[tokio::test]
    async fn concurrent_answers_keep_the_longest_wait_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path());
        let sent_earlier = Instant::now();
        w.fail(Some(Duration::from_secs(30)), false);
        // Another request in flight fails without Retry-After: a short backoff, but the
        // server's 30 s stand.
        w.fail(None, false);
        assert!(w.not_before >= Instant::now() + Duration::from_secs(29));
        // A request sent before the failure is accepted: no news about the server now.
        w.succeed(sent_earlier);
        assert!(w.not_before >= Instant::now() + Duration::from_secs(29));
        assert!(w.failing);
        // One sent after it is: the server is back, replay at once.
        w.succeed(Instant::now());
        assert!(w.not_before <= Instant::now());
        assert!(!w.failing);
        assert_eq!(w.backoff_step, 0);
    }

    #[test]
    fn tokens_never_print() {
        let t = Token::new("s3cret".into());
        assert_eq!(format!("{t:?}"), "***");
        assert_eq!(encode_query("my org/x"), "my%20org%2Fx");
    }
}
