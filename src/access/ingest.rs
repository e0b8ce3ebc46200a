//! Durable biometric ingestion: ZKTeco PUSH requests in, events stored, chained and reconciled.
//!
//! One request of a reader (`POST /iclock/cdata?SN=..&table=ATTLOG|rtlog|OPERLOG`) goes:
//!
//! 1. **Allowlist**: the serial must be a reader of a site's `[[access.readers]]`; any other
//!    serial is refused (`403`, counted) and nothing is stored.
//! 2. **Parse** with the site's time zone and the reader's direction (`access::zkteco`).
//!    Malformed lines are counted and logged, the good lines of the batch are kept, and the
//!    reply is still `OK`: a device re-sends a refused batch forever, and a bad line would
//!    never become good by being re-sent. The raw bad line is not logged (it may hold a PIN);
//!    its line number and field are.
//! 3. **Persist** (under one lock, on a blocking thread): the batch goes into the store in one
//!    `INSERT OR IGNORE` transaction (synchronous FULL); the events that were new are appended
//!    to the audit chain with one write and one fsync, then marked with their chain sequence
//!    number. A crash between the store commit and the chain append leaves rows without a
//!    sequence number; they are appended at the next start ([`Ingest::start`]).
//! 4. **Reply** `OK:<n>` (`text/plain`, n = records processed) only after step 3 returned;
//!    if the store or the chain failed the reply is `503`, so the device keeps the batch and
//!    re-sends it, which is harmless (idempotent ids).
//! 5. **Reconcile**: the new events go to the site's live [`Reconciler`]; a ticker
//!    (every second) runs it and logs, counts, stores and keeps the findings. Until the visit
//!    API feeds tickets, the ticket book is empty. The live reconciler starts empty at each
//!    start (nobody inside).
//!
//! Command polls (`/iclock/getrequest`) always get plain `OK`: the daemon never commands a
//! reader (invariant 1: it never commands a door).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::audit::{AuditError, AuditKey, AuditLog, CheckpointPolicy};
use super::event::{AccessEvent, Direction};
use super::reconcile::{Finding, ReconcileSettings, Reconciler};
use super::ticket::TicketBook;
use super::zkteco::{self, CdataQuery, ParseContext, QueryError};
use crate::config::model::{self, Config};
use crate::store::access::{AccessStore, FileLock, LockError, lock_file};
use crate::store::{Store, StoreError};

/// The audit chain's file in the data directory.
pub const AUDIT_FILE: &str = "access-audit.log";
/// Environment variable naming the audit key's credential file.
pub const KEY_FILE_ENV: &str = "DCGUARD_AUDIT_KEY_FILE";
/// The key's name in a systemd credentials directory (`$CREDENTIALS_DIRECTORY`).
pub const KEY_CREDENTIAL_NAME: &str = "dcguard-audit-key";
/// The key generated in the data directory when no credential file is given.
pub const GENERATED_KEY_FILE: &str = "audit.key";
/// Findings kept in memory for a quick look (all of them are in the store).
const RECENT_FINDINGS: usize = 1000;

/// Why ingestion could not start or persist a batch.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("audit key: {0}")]
    Key(String),
    #[error("ingestion task failed: {0}")]
    Task(String),
    #[error("{path}: {problem}")]
    Lock { path: PathBuf, problem: String },
    #[error("import {path}: {problem}")]
    Import { path: PathBuf, problem: String },
}

/// The lock file that makes one process at a time the audit chain's appender.
pub const LOCK_FILE: &str = "access-audit.lock";

/// Takes the appender lock of `data_dir` (released when the process ends, even by SIGKILL),
/// waiting up to `wait` for another holder: a second appender would fork the chain.
pub fn lock_appender(data_dir: &Path, wait: Duration) -> Result<FileLock, IngestError> {
    let path = data_dir.join(LOCK_FILE);
    lock_file(&path, wait).map_err(|e| IngestError::Lock {
        path: path.clone(),
        problem: match e {
            LockError::Held => {
                "another dcguard process appends to this audit log (is the daemon running?)"
                    .to_owned()
            }
            LockError::Sqlite(e) => e.to_string(),
        },
    })
}

/// Where the audit key comes from: `explicit`, else `$DCGUARD_AUDIT_KEY_FILE`, else
/// `$CREDENTIALS_DIRECTORY/dcguard-audit-key`, else `<data_dir>/audit.key`.
pub fn key_path(data_dir: &Path, explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_owned();
    }
    if let Some(p) = std::env::var_os(KEY_FILE_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(dir).join(KEY_CREDENTIAL_NAME);
        if p.exists() {
            return p;
        }
    }
    data_dir.join(GENERATED_KEY_FILE)
}

/// Loads the audit key (see [`key_path`]). When no credential file is configured and
/// `<data_dir>/audit.key` does not exist, a random key is generated there (mode 0600) and a
/// warning says so: a key kept beside the log protects against edits by a process without
/// it, not against someone who can read the data directory.
pub fn load_or_create_key(data_dir: &Path) -> Result<AuditKey, IngestError> {
    let path = key_path(data_dir, None);
    if path == data_dir.join(GENERATED_KEY_FILE) && !path.exists() {
        create_key_file(&path)
            .map_err(|e| IngestError::Key(format!("cannot create {}: {e}", path.display())))?;
        tracing::warn!(
            path = %path.display(),
            "No audit key credential given ({KEY_FILE_ENV}); generated one in the data directory."
        );
    }
    Ok(AuditKey::from_file(&path)?)
}

fn create_key_file(path: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let bytes: [u8; 32] = rand::random();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(zkteco::hex(&bytes).as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// A configured reader, as ingestion needs it.
#[derive(Debug, Clone)]
struct ReaderEntry {
    site: String,
    time_zone: Tz,
    direction: Direction,
}

/// Counters since start.
#[derive(Debug, Default)]
struct Counters {
    batches: AtomicU64,
    events_new: AtomicU64,
    events_duplicate: AtomicU64,
    lines_malformed: AtomicU64,
    records_skipped: AtomicU64,
    unknown_serial: AtomicU64,
    persist_failures: AtomicU64,
    findings: AtomicU64,
}

/// A snapshot of the ingestion counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestStats {
    /// Event batches accepted (`OK` sent).
    pub batches: u64,
    /// Events stored for the first time.
    pub events_new: u64,
    /// Events already stored (a re-sent batch).
    pub events_duplicate: u64,
    /// Malformed lines dropped (the rest of their batch kept).
    pub lines_malformed: u64,
    /// Valid non-event records (`USER`, `FP`, ...) skipped.
    pub records_skipped: u64,
    /// Requests refused because of an unknown or invalid serial.
    pub unknown_serial: u64,
    /// Batches answered 503 because the store or the chain failed.
    pub persist_failures: u64,
    /// Findings raised.
    pub findings: u64,
    /// Findings by rule name.
    pub findings_by_rule: BTreeMap<String, u64>,
}

/// What a CSV import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportSummary {
    /// Rows read.
    pub read: usize,
    /// Events stored for the first time (the rest were already stored).
    pub new: usize,
}

/// The reply to one `/iclock` request: status code and `text/plain` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IclockReply {
    pub status: u16,
    pub body: String,
}

impl IclockReply {
    fn ok(body: impl Into<String>) -> Self {
        Self {
            status: 200,
            body: body.into(),
        }
    }

    fn refused(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            body: body.into(),
        }
    }
}

struct Live {
    reconcilers: HashMap<String, Reconciler>,
    tickets: TicketBook,
}

/// The receive clock of the HTTP routes (the real clock unless a test sets one).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

struct Inner {
    /// The appender lock, held as long as the service lives ([`lock_appender`]).
    appender_lock: Mutex<Option<FileLock>>,
    clock: Mutex<Option<Clock>>,
    readers: HashMap<String, ReaderEntry>,
    store: AccessStore,
    audit: Mutex<AuditLog>,
    live: Mutex<Live>,
    recent: Mutex<VecDeque<Finding>>,
    by_rule: Mutex<BTreeMap<String, u64>>,
    counters: Counters,
}

/// The ingestion service. Cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("readers", &self.inner.readers.len())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock leaves plain data behind; keep going with it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Ingest {
    /// The service for `config`'s readers over `store` and the chain `audit`. Appends to
    /// the chain any stored event that is not in it yet (a crash between the two writes).
    /// Blocking: call at start-up or from a blocking thread.
    pub fn open(config: &Config, store: Store, audit: AuditLog) -> Result<Self, IngestError> {
        let mut readers = HashMap::new();
        let mut reconcilers = HashMap::new();
        for site in &config.sites {
            for r in &site.access.readers {
                let direction = match r.direction {
                    model::Direction::Entry => Direction::Entry,
                    model::Direction::Exit => Direction::Exit,
                };
                readers.entry(r.serial.clone()).or_insert(ReaderEntry {
                    site: site.id.clone(),
                    time_zone: site.time_zone,
                    direction,
                });
            }
            if !site.access.readers.is_empty() {
                reconcilers.insert(
                    site.id.clone(),
                    Reconciler::new(site, ReconcileSettings::default()),
                );
            }
        }
        let ingest = Self {
            inner: Arc::new(Inner {
                appender_lock: Mutex::new(None),
                clock: Mutex::new(None),
                readers,
                store: AccessStore::new(store),
                audit: Mutex::new(audit),
                live: Mutex::new(Live {
                    reconcilers,
                    tickets: TicketBook::new(),
                }),
                recent: Mutex::new(VecDeque::new()),
                by_rule: Mutex::new(BTreeMap::new()),
                counters: Counters::default(),
            }),
        };
        let missing = ingest.inner.store.unaudited()?;
        if !missing.is_empty() {
            tracing::warn!(
                events = missing.len(),
                "Access events stored but not in the audit chain (a crash between the writes); appending them now."
            );
            ingest.audit_and_mark(&missing)?;
        }
        Ok(ingest)
    }

    /// Starts ingestion for the daemon: `None` when no site has readers. Opens the chain
    /// `<data_dir>/access-audit.log` with the key of [`load_or_create_key`] and spawns the
    /// reconciliation ticker, which stops with `shutdown`.
    pub fn start(
        config: &Config,
        store: Store,
        data_dir: &Path,
        shutdown: CancellationToken,
    ) -> Result<Option<Self>, IngestError> {
        if config.sites.iter().all(|s| s.access.readers.is_empty()) {
            return Ok(None);
        }
        let ingest = Self::open_locked(config, store, data_dir, Duration::from_secs(10))?;
        ingest.spawn_ticker(Duration::from_secs(1), shutdown);
        tracing::info!(
            readers = ingest.inner.readers.len(),
            "Access ingestion ready on /iclock."
        );
        Ok(Some(ingest))
    }

    /// [`Ingest::open`] on `<data_dir>/access-audit.log` with the appender lock (waiting up
    /// to `wait` for it) and the key of [`load_or_create_key`]. Blocking.
    pub fn open_locked(
        config: &Config,
        store: Store,
        data_dir: &Path,
        wait: Duration,
    ) -> Result<Self, IngestError> {
        let lock_file = lock_appender(data_dir, wait)?;
        let key = load_or_create_key(data_dir)?;
        let audit = AuditLog::open(
            &data_dir.join(AUDIT_FILE),
            key,
            CheckpointPolicy::default(),
            Utc::now(),
        )?;
        let ingest = Self::open(config, store, audit)?;
        *lock(&ingest.inner.appender_lock) = Some(lock_file);
        Ok(ingest)
    }

    /// Imports a CSV export (`dcguard access import`): every reader must be configured
    /// (the site comes from the reader map); zone-less times use the sites' zone when all
    /// sites share one. All or nothing on a bad row; idempotent on a re-import. Blocking.
    pub fn import_csv(&self, config: &Config, file: &Path) -> Result<ImportSummary, IngestError> {
        let import_err = |problem: String| IngestError::Import {
            path: file.to_owned(),
            problem,
        };
        let input = std::fs::File::open(file).map_err(|e| import_err(e.to_string()))?;
        let zones: std::collections::BTreeSet<String> = config
            .sites
            .iter()
            .map(|s| s.time_zone.name().to_owned())
            .collect();
        let zone = match (zones.len(), config.sites.first()) {
            (1, Some(site)) => Some(site.time_zone),
            _ => None,
        };
        let events = super::import::read_csv(std::io::BufReader::new(input), zone, self.now())
            .map_err(|e| import_err(e.to_string()))?;
        let unknown: std::collections::BTreeSet<&str> = events
            .iter()
            .filter(|e| !self.inner.readers.contains_key(&*e.reader))
            .map(|e| &*e.reader)
            .collect();
        if !unknown.is_empty() {
            let list: Vec<&str> = unknown.into_iter().collect();
            return Err(import_err(format!(
                "readers not in any site's [[access.readers]]: {}; nothing imported",
                list.join(", ")
            )));
        }
        let mut by_site: BTreeMap<&str, Vec<AccessEvent>> = BTreeMap::new();
        for e in &events {
            if let Some(entry) = self.inner.readers.get(&*e.reader) {
                by_site.entry(&entry.site).or_default().push(e.clone());
            }
        }
        let mut new = 0;
        for (site, batch) in by_site {
            new += self.persist(site, &batch)?.len();
        }
        Ok(ImportSummary {
            read: events.len(),
            new,
        })
    }

    /// Spawns the task that runs the live reconcilers every `period` until `shutdown`.
    /// The task holds only a weak reference: when the HTTP server drops the routes, the
    /// service (and its appender lock) goes at once and the task ends at its next tick.
    pub fn spawn_ticker(&self, period: Duration, shutdown: CancellationToken) -> JoinHandle<()> {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = interval.tick() => {}
                }
                let Some(inner) = weak.upgrade() else { break };
                let this = Self { inner };
                let done = tokio::task::spawn_blocking(move || this.tick(this.now())).await;
                match done {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => tracing::error!(%error, "Storing access findings failed."),
                    Err(error) => tracing::error!(%error, "The reconciliation tick failed."),
                }
            }
        })
    }

    /// Runs every live reconciler up to `now`: the new findings are logged, counted, kept in
    /// memory and stored. Blocking.
    pub fn tick(&self, now: DateTime<Utc>) -> Result<Vec<Finding>, IngestError> {
        let findings: Vec<Finding> = {
            let mut live = lock(&self.inner.live);
            let Live {
                reconcilers,
                tickets,
            } = &mut *live;
            reconcilers
                .values_mut()
                .flat_map(|r| r.tick(now, tickets))
                .collect()
        };
        if findings.is_empty() {
            return Ok(findings);
        }
        {
            let mut by_rule = lock(&self.inner.by_rule);
            let mut recent = lock(&self.inner.recent);
            for f in &findings {
                tracing::warn!(
                    site = %f.site,
                    rule = %f.rule,
                    severity = ?f.severity,
                    reader = f.reader.as_deref().unwrap_or("-"),
                    ticket = f.ticket.as_deref().unwrap_or("-"),
                    "Access finding: {}",
                    f.summary
                );
                *by_rule.entry(f.rule.as_str().to_owned()).or_default() += 1;
                if recent.len() == RECENT_FINDINGS {
                    recent.pop_front();
                }
                recent.push_back(f.clone());
            }
        }
        self.inner
            .counters
            .findings
            .fetch_add(findings.len() as u64, Ordering::Relaxed);
        self.inner.store.insert_findings(&findings)?;
        Ok(findings)
    }

    /// Replaces the receive clock of the HTTP routes (a simulated day in tests).
    pub fn set_clock(&self, clock: Clock) {
        *lock(&self.inner.clock) = Some(clock);
    }

    /// The receive time of a request now.
    pub fn now(&self) -> DateTime<Utc> {
        let clock = lock(&self.inner.clock).clone();
        clock.map_or_else(Utc::now, |c| c())
    }

    /// The most recent findings (at most 1000), oldest first.
    pub fn recent_findings(&self) -> Vec<Finding> {
        lock(&self.inner.recent).iter().cloned().collect()
    }

    /// The access area of the store.
    pub fn store(&self) -> &AccessStore {
        &self.inner.store
    }

    /// Replaces the live ticket book (the visit API will feed it).
    pub fn set_tickets(&self, tickets: TicketBook) {
        lock(&self.inner.live).tickets = tickets;
    }

    /// The counters.
    pub fn stats(&self) -> IngestStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        IngestStats {
            batches: get(&c.batches),
            events_new: get(&c.events_new),
            events_duplicate: get(&c.events_duplicate),
            lines_malformed: get(&c.lines_malformed),
            records_skipped: get(&c.records_skipped),
            unknown_serial: get(&c.unknown_serial),
            persist_failures: get(&c.persist_failures),
            findings: get(&c.findings),
            findings_by_rule: lock(&self.inner.by_rule).clone(),
        }
    }

    /// The configured reader of a query's `SN`, or the refusal to send.
    fn reader_of(&self, raw_query: &str) -> Result<(CdataQuery, ReaderEntry), IclockReply> {
        let query = match CdataQuery::parse(raw_query) {
            Ok(q) => q,
            Err(error) => {
                self.inner
                    .counters
                    .unknown_serial
                    .fetch_add(1, Ordering::Relaxed);
                let shown = match &error {
                    QueryError::MissingSerial => "no SN".to_owned(),
                    QueryError::BadSerial(_) => "invalid SN".to_owned(),
                };
                tracing::warn!("Refused an /iclock request: {shown}.");
                return Err(IclockReply::refused(400, format!("ERROR: {shown}")));
            }
        };
        match self.inner.readers.get(&query.serial) {
            Some(entry) => {
                let entry = entry.clone();
                Ok((query, entry))
            }
            None => {
                self.inner
                    .counters
                    .unknown_serial
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(serial = %query.serial, "Refused a reader that is not in [[access.readers]].");
                Err(IclockReply::refused(403, "ERROR: unknown device"))
            }
        }
    }

    /// `GET /iclock/cdata?SN=..&options=all`: the handshake, for a configured reader.
    pub fn handshake(&self, raw_query: &str, now: DateTime<Utc>) -> IclockReply {
        match self.reader_of(raw_query) {
            Ok((query, entry)) => {
                IclockReply::ok(zkteco::handshake_reply(&query.serial, entry.time_zone, now))
            }
            Err(reply) => reply,
        }
    }

    /// `GET /iclock/getrequest`, `GET /iclock/ping`, `POST /iclock/devicecmd`: plain `OK`
    /// for a configured reader. No command is ever queued.
    pub fn poll(&self, raw_query: &str) -> IclockReply {
        match self.reader_of(raw_query) {
            Ok(_) => IclockReply::ok(zkteco::REPLY_OK),
            Err(reply) => reply,
        }
    }

    /// `POST /iclock/cdata?SN=..&table=..`: parse, persist, reconcile, reply (see the
    /// module documentation).
    pub async fn cdata(&self, raw_query: &str, body: &[u8], now: DateTime<Utc>) -> IclockReply {
        let (query, entry) = match self.reader_of(raw_query) {
            Ok(found) => found,
            Err(reply) => return reply,
        };
        let Some(table) = query.table.clone() else {
            // A POST without a table: nothing to store; acknowledge.
            return IclockReply::ok(zkteco::REPLY_OK);
        };
        if table.source().is_none() {
            // options, ATTPHOTO, rtstate, ...: acknowledged, nothing to store.
            return IclockReply::ok(zkteco::REPLY_OK);
        }
        let ctx = ParseContext {
            reader: Arc::from(query.serial.as_str()),
            time_zone: entry.time_zone,
            reader_direction: Some(entry.direction),
            received_at: now,
        };
        let parsed = zkteco::parse_cdata(&table, body, &ctx);
        let c = &self.inner.counters;
        if !parsed.errors.is_empty() {
            c.lines_malformed
                .fetch_add(parsed.errors.len() as u64, Ordering::Relaxed);
            let first = &parsed.errors[0];
            tracing::warn!(
                serial = %query.serial,
                table = ?table,
                bad_lines = parsed.errors.len(),
                first_line = first.line,
                first_field = first.field,
                "Malformed lines dropped; the rest of the batch is kept and acknowledged."
            );
        }
        c.records_skipped
            .fetch_add(parsed.skipped as u64, Ordering::Relaxed);
        let processed = parsed.processed();
        let total = parsed.events.len();
        let this = self.clone();
        let site = entry.site.clone();
        let events = parsed.events;
        let persisted = tokio::task::spawn_blocking(move || this.persist(&site, &events)).await;
        let new = match persisted {
            Ok(Ok(new)) => new,
            Ok(Err(error)) => {
                c.persist_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(serial = %query.serial, %error, "Cannot persist an access batch; the device will re-send it.");
                return IclockReply::refused(503, "ERROR: store unavailable");
            }
            Err(error) => {
                c.persist_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(serial = %query.serial, %error, "The persist task failed; the device will re-send.");
                return IclockReply::refused(503, "ERROR: store unavailable");
            }
        };
        c.batches.fetch_add(1, Ordering::Relaxed);
        c.events_new.fetch_add(new.len() as u64, Ordering::Relaxed);
        c.events_duplicate
            .fetch_add((total - new.len()) as u64, Ordering::Relaxed);
        if !new.is_empty() {
            let mut live = lock(&self.inner.live);
            if let Some(r) = live.reconcilers.get_mut(&entry.site) {
                for e in new {
                    r.push(e);
                }
            }
        }
        IclockReply::ok(zkteco::reply_ok_count(processed))
    }

    /// Stores a batch of `site` and appends its new events to the chain, under the chain's
    /// lock so the chain order is the store's insertion order. Blocking.
    pub fn persist(
        &self,
        site: &str,
        events: &[AccessEvent],
    ) -> Result<Vec<AccessEvent>, IngestError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut audit = lock(&self.inner.audit);
        let new = self.inner.store.insert_events(site, events)?;
        if !new.is_empty() {
            Self::append_and_mark(&mut audit, &self.inner.store, &new)?;
        }
        Ok(new)
    }

    fn audit_and_mark(&self, events: &[AccessEvent]) -> Result<(), IngestError> {
        let mut audit = lock(&self.inner.audit);
        Self::append_and_mark(&mut audit, &self.inner.store, events)
    }

    fn append_and_mark(
        audit: &mut AuditLog,
        store: &AccessStore,
        events: &[AccessEvent],
    ) -> Result<(), IngestError> {
        let appended = audit.append_access_events(events)?;
        let marks: Vec<(&str, u64)> = events
            .iter()
            .zip(&appended)
            .map(|(e, a)| (&*e.id, a.seq))
            .collect();
        store.mark_audited(&marks)?;
        Ok(())
    }
}

/// The readers of a configuration, by serial: `(site, serial)` pairs (for a stub or a test).
pub fn configured_readers(config: &Config) -> Vec<(String, String)> {
    config
        .sites
        .iter()
        .flat_map(|s| {
            s.access
                .readers
                .iter()
                .map(|r| (s.id.clone(), r.serial.clone()))
        })
        .collect()
}

/// `dcguard audit verify`: verifies `<data_dir>/access-audit.log` with the key of
/// [`key_path`] (never generated here). `Ok` is a summary; `Err` names the first bad record
/// or why the chain could not be read.
pub fn verify_chain(data_dir: &Path, key_file: Option<&Path>) -> Result<String, String> {
    let path = data_dir.join(AUDIT_FILE);
    let key_path = key_path(data_dir, key_file);
    let key = AuditKey::from_file(&key_path).map_err(|e| e.to_string())?;
    if !path.exists() {
        return Err(format!("no audit log at {}", path.display()));
    }
    match super::audit::verify(&path, &key) {
        Ok(report) => {
            let head = report
                .head
                .map(|h| format!("record {} hash {}", h.seq, h.hash_hex()))
                .unwrap_or_else(|| "empty".to_owned());
            let signed = report
                .last_checkpoint_seq
                .map_or_else(|| "none".to_owned(), |s| s.to_string());
            Ok(format!(
                "audit log {} is intact: {} records, {} checkpoints, head {head}, signed through record {signed}, {} unsigned at the tail",
                path.display(),
                report.records,
                report.checkpoints,
                report.unsigned_tail
            ))
        }
        Err(error) => Err(format!("audit log {}: {error}", path.display())),
    }
}

/// `dcguard access import`: opens the store and the chain of `data_dir` (refused while the
/// daemon holds the appender lock) and imports `file`. Blocking.
pub fn run_import(
    config: &Config,
    data_dir: &Path,
    file: &Path,
) -> Result<ImportSummary, IngestError> {
    std::fs::create_dir_all(data_dir).map_err(|e| IngestError::Lock {
        path: data_dir.to_owned(),
        problem: e.to_string(),
    })?;
    let store = Store::open(&data_dir.join(crate::app::STORE_FILE))?;
    let ingest = Ingest::open_locked(config, store, data_dir, Duration::ZERO)?;
    ingest.import_csv(config, file)
}
