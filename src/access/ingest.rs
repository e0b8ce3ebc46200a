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
//!    (every second) runs it; the new findings are stored (`INSERT OR IGNORE` on their key),
//!    appended to the chain, counted, logged and announced on [`Ingest::findings_feed`].
//!
//! # Restart
//!
//! Nothing the live state needs is only in memory. [`Ingest::open`] rebuilds the ticket book
//! from the stored revisions, appends to the chain any row stored but not chained, and
//! rebuilds each site's reconciler by replaying the stored events of the last
//! [`REPLAY_HORIZON`] up to the saved watermark (how far the live reconciler had got; saved
//! after the findings up to it were stored, at least every minute). Findings of that replay
//! are dropped: they were stored before, or are artefacts of starting the replay with an
//! empty site. The ticks after the restart go on from the watermark, so a finding due while
//! the daemon was down is raised once, after the restart; one raised again has the same key
//! and is not stored twice. People inside for longer than the horizon are not known after a
//! restart (their exit is an `anti_passback`).
//!
//! Command polls (`/iclock/getrequest`) always get plain `OK`: the daemon never commands a
//! reader (invariant 1: it never commands a door).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::audit::{AuditError, AuditKey, AuditLog, CheckpointPolicy, NewRecord, RecordKind};
use super::event::{AccessEvent, Direction};
use super::reconcile::{Finding, ReconcileSettings, Reconciler};
use super::rewind::{Contact, Rewind, SNAPSHOT_EVERY, SNAPSHOT_KEEP, withdrawn};
use super::ticket::{TicketBook, TicketRevision};
use super::zkteco::{self, CdataQuery, ParseContext, QueryError};
use crate::config::model::{self, Calendar, Config, Site};
use crate::store::access::{
    AccessStore, EventQuery, FileLock, FindingQuery, LockError, Review, StoredFinding, Unaudited,
    lock_file,
};
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
/// How far back the stored events are replayed at start to rebuild who is inside.
pub const REPLAY_HORIZON: Duration = Duration::from_secs(48 * 3600);
/// The reviewer of the findings withdrawn because late events explain them.
pub const WITHDRAWN_BY: &str = "dcguard (late events)";
/// The live reconcilers' watermarks are saved at least this often.
const WATERMARK_EVERY: TimeDelta = TimeDelta::seconds(60);

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
    #[error("cannot encode an audit record: {0}")]
    Encode(#[from] serde_json::Error),
    #[error(
        "the access log is open read-only here (the daemon appends to it); change it through the daemon's API"
    )]
    ReadOnly,
}

/// The locked chain appender of a writable service.
pub(super) struct Appender<'a>(MutexGuard<'a, Option<AuditLog>>);

impl std::ops::Deref for Appender<'_> {
    type Target = AuditLog;
    fn deref(&self) -> &AuditLog {
        // Invariant: an `Appender` is only built around `Some` (`Ingest::appender`).
        self.0.as_ref().expect("an Appender holds a log")
    }
}

impl std::ops::DerefMut for Appender<'_> {
    fn deref_mut(&mut self) -> &mut AuditLog {
        // Invariant: an `Appender` is only built around `Some` (`Ingest::appender`).
        self.0.as_mut().expect("an Appender holds a log")
    }
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
    events_late: AtomicU64,
    late_reruns: AtomicU64,
    findings_withdrawn: AtomicU64,
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
    /// Events that arrived after their time had been reconciled (a reader's backlog).
    pub events_late: u64,
    /// Re-runs of a site's recent period for late events (`access::rewind`).
    pub late_reruns: u64,
    /// Stored findings withdrawn because late events explained them.
    pub findings_withdrawn: u64,
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

pub(super) struct Live {
    pub(super) reconcilers: HashMap<String, Reconciler>,
    pub(super) tickets: TicketBook,
    /// When the watermarks were last saved.
    watermark_saved: Option<DateTime<Utc>>,
    /// Snapshots of each site's reconciler for late events.
    rewinds: HashMap<String, Rewind>,
    /// Sites with late events since the last tick.
    late: HashMap<String, Late>,
}

/// The late events of one site since the last tick.
#[derive(Debug)]
struct Late {
    /// The earliest effective time among them.
    from: DateTime<Utc>,
    events: usize,
    readers: BTreeSet<String>,
}

/// What the re-run of a site for late events found.
struct Rerun {
    site: String,
    late: Late,
    findings: Vec<Finding>,
    /// The stored findings the re-run replaces (raised after its snapshot); `None` when it
    /// started from an empty site (it withdraws nothing).
    replaces: Option<Vec<i64>>,
}

/// The receive clock of the HTTP routes (the real clock unless a test sets one).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

pub(super) struct Inner {
    /// The appender lock, held as long as the service lives ([`lock_appender`]).
    appender_lock: Mutex<Option<FileLock>>,
    clock: Mutex<Option<Clock>>,
    pub(super) sites: BTreeMap<String, Site>,
    pub(super) calendar: Calendar,
    pub(super) access: model::AccessSettings,
    pub(super) settings: ReconcileSettings,
    /// Visit reports are queued for the ticketing webhook.
    pub(super) deliver_reports: bool,
    readers: HashMap<String, ReaderEntry>,
    pub(super) store: AccessStore,
    /// The chain appender; `None` for a read-only service ([`Ingest::open_read_only`]).
    audit: Mutex<Option<AuditLog>>,
    pub(super) live: Mutex<Live>,
    /// Tickets with a stored visit report.
    pub(super) reported: Mutex<HashSet<String>>,
    recent: Mutex<VecDeque<Finding>>,
    by_rule: Mutex<BTreeMap<String, u64>>,
    /// Findings by (site, rule), for the metrics.
    by_site_rule: Mutex<BTreeMap<(String, String), u64>>,
    counters: Counters,
    /// Each reader's contact with the daemon: backlog or skewed clock (`access::rewind`).
    contacts: Mutex<HashMap<String, Contact>>,
    findings_tx: watch::Sender<i64>,
    pub(super) reports_tx: watch::Sender<u64>,
}

/// The access service: ZKTeco ingestion, JSON batches, visit tickets, findings, reviews,
/// queries, visit reports and retention over one store and one audit chain. Cheap to
/// clone. Its methods are blocking (SQLite, fsync) unless `async`: call them from
/// `spawn_blocking` in async code. The service API the REST routes call is documented in
/// `access::service`.
#[derive(Clone)]
pub struct Ingest {
    pub(super) inner: Arc<Inner>,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("readers", &self.inner.readers.len())
            .finish_non_exhaustive()
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock leaves plain data behind; keep going with it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A row to mark as chained once its record is on disk.
pub(super) enum Mark {
    Event(Arc<str>),
    Finding(i64),
    Review(i64),
    Revision(String, u32),
    Report(String),
}

/// The chain record of a ticket revision.
pub(super) fn revision_record(revision: &TicketRevision, actor: &str) -> NewRecord {
    NewRecord {
        kind: RecordKind::TicketChange,
        actor: actor.to_owned(),
        payload: serde_json::json!({
            "ticket": revision.snapshot.id,
            "number": revision.number,
            "change": revision.change,
            "snapshot": revision.snapshot,
        }),
        at: revision.at,
    }
}

/// The chain record of a stored finding.
pub(super) fn finding_record(f: &StoredFinding) -> NewRecord {
    NewRecord {
        kind: RecordKind::Finding,
        actor: "reconcile".to_owned(),
        payload: serde_json::json!({
            "finding_id": f.id,
            "key": f.finding.key(),
            "finding": f.finding,
        }),
        at: f.raised_at,
    }
}

/// The chain record of a review.
pub(super) fn review_record(r: &Review) -> NewRecord {
    NewRecord {
        kind: RecordKind::OperatorAction,
        actor: r.reviewer.clone(),
        payload: serde_json::json!({
            "action": "finding_reviewed",
            "review_id": r.id,
            "finding_id": r.finding_id,
            "note": r.note,
        }),
        at: r.at,
    }
}

/// The chain record of a visit report.
pub(super) fn report_record(
    ticket: &str,
    produced_at: DateTime<Utc>,
    report: serde_json::Value,
) -> NewRecord {
    NewRecord {
        kind: RecordKind::VisitReport,
        actor: "reconcile".to_owned(),
        payload: serde_json::json!({ "ticket": ticket, "report": report }),
        at: produced_at,
    }
}

fn event_record(e: &AccessEvent) -> Result<NewRecord, serde_json::Error> {
    Ok(NewRecord {
        kind: RecordKind::AccessEvent,
        actor: e.reader.to_string(),
        payload: serde_json::to_value(e)?,
        at: e.received_at,
    })
}

impl Ingest {
    /// The service for `config`'s sites over `store` and the chain `audit`: restores the
    /// ticket book, appends to the chain every stored row not in it yet (a crash between the
    /// two writes), and rebuilds the live reconcilers (module documentation, "Restart").
    /// Blocking: call at start-up or from a blocking thread.
    pub fn open(config: &Config, store: Store, audit: AuditLog) -> Result<Self, IngestError> {
        let ingest = Self::build(config, store, Some(audit))?;
        ingest.chain_unaudited()?;
        ingest.restore()?;
        Ok(ingest)
    }

    /// A read-only service over `store` for queries and reports while the daemon runs
    /// (`dcguard access events|findings|visit-report`): tickets are restored, nothing is
    /// appended, the live reconcilers stay empty; every change fails with
    /// [`IngestError::ReadOnly`]. Blocking.
    pub fn open_read_only(config: &Config, store: Store) -> Result<Self, IngestError> {
        let ingest = Self::build(config, store, None)?;
        let revisions = ingest.inner.store.ticket_revisions()?;
        let mut live = lock(&ingest.inner.live);
        for (revision, _) in revisions {
            live.tickets.apply(revision);
        }
        drop(live);
        Ok(ingest)
    }

    fn build(config: &Config, store: Store, audit: Option<AuditLog>) -> Result<Self, IngestError> {
        let settings = ReconcileSettings::from_config(&config.access);
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
            reconcilers.insert(site.id.clone(), Reconciler::new(site, settings.clone()));
        }
        let store = AccessStore::new(store);
        let last_finding = store.last_finding_id()?;
        // A reader was last heard from at its newest stored event, or while the daemon last
        // ran (its site's saved watermark, kept at least every minute), whichever is later:
        // a reader polling without events then is not out of contact, only the daemon's
        // own downtime is a gap.
        let heard = store.last_received_by_reader()?;
        let mut watermarks: HashMap<String, Option<DateTime<Utc>>> = HashMap::new();
        let mut contacts = HashMap::new();
        for (serial, entry) in &readers {
            let saved = match watermarks.get(&entry.site) {
                Some(w) => *w,
                None => {
                    let w = store.watermark(&entry.site)?;
                    watermarks.insert(entry.site.clone(), w);
                    w
                }
            };
            let last = heard.get(serial).copied().max(saved);
            contacts.insert(serial.clone(), Contact::since(last));
        }
        let ingest = Self {
            inner: Arc::new(Inner {
                appender_lock: Mutex::new(None),
                clock: Mutex::new(None),
                sites: config
                    .sites
                    .iter()
                    .map(|s| (s.id.clone(), s.clone()))
                    .collect(),
                calendar: config.calendar.clone(),
                access: config.access,
                settings,
                deliver_reports: config.webhook.as_ref().is_some_and(|w| w.enabled),
                readers,
                store,
                audit: Mutex::new(audit),
                live: Mutex::new(Live {
                    rewinds: reconcilers
                        .iter()
                        .map(|(site, r)| {
                            (site.clone(), Rewind::new(r, SNAPSHOT_EVERY, SNAPSHOT_KEEP))
                        })
                        .collect(),
                    reconcilers,
                    tickets: TicketBook::new(),
                    watermark_saved: None,
                    late: HashMap::new(),
                }),
                reported: Mutex::new(HashSet::new()),
                recent: Mutex::new(VecDeque::new()),
                by_rule: Mutex::new(BTreeMap::new()),
                by_site_rule: Mutex::new(BTreeMap::new()),
                counters: Counters::default(),
                contacts: Mutex::new(contacts),
                findings_tx: watch::Sender::new(last_finding),
                reports_tx: watch::Sender::new(0),
            }),
        };
        Ok(ingest)
    }

    /// The chain appender, locked; [`IngestError::ReadOnly`] for a read-only service.
    pub(super) fn appender(&self) -> Result<Appender<'_>, IngestError> {
        let guard = lock(&self.inner.audit);
        if guard.is_none() {
            return Err(IngestError::ReadOnly);
        }
        Ok(Appender(guard))
    }

    /// Appends to the chain the rows stored without their record (a crash between the
    /// store commit and the chain append).
    fn chain_unaudited(&self) -> Result<(), IngestError> {
        let mut audit = self.appender()?;
        let missing = self.inner.store.unaudited()?;
        if missing.is_empty() {
            return Ok(());
        }
        tracing::warn!(
            rows = missing.len(),
            "Access rows stored but not in the audit chain (a crash between the writes); appending them now."
        );
        let mut items = Vec::with_capacity(missing.len());
        for row in missing {
            items.push(match row {
                Unaudited::Event(e) => (Mark::Event(e.id.clone()), event_record(&e)?),
                Unaudited::Revision(rev, actor) => (
                    Mark::Revision(rev.snapshot.id.clone(), rev.number),
                    revision_record(&rev, &actor),
                ),
                Unaudited::Finding(f) => (Mark::Finding(f.id), finding_record(&f)),
                Unaudited::Review(r) => (Mark::Review(r.id), review_record(&r)),
                Unaudited::Report {
                    ticket,
                    produced_at,
                    report,
                } => (
                    Mark::Report(ticket.clone()),
                    report_record(&ticket, produced_at, report),
                ),
            });
        }
        self.chain(&mut audit, items)
    }

    /// Rebuilds the ticket book, the reported set and the live reconcilers from the store.
    fn restore(&self) -> Result<(), IngestError> {
        let store = &self.inner.store;
        let revisions = store.ticket_revisions()?;
        let reported = store.reported_tickets()?;
        let mut live = lock(&self.inner.live);
        for (revision, _) in revisions {
            live.tickets.apply(revision);
        }
        lock(&self.inner.reported).extend(reported);
        let horizon = TimeDelta::from_std(REPLAY_HORIZON).unwrap_or(TimeDelta::MAX);
        let settle = TimeDelta::from_std(self.inner.settings.settle).unwrap_or(TimeDelta::MAX);
        let Live {
            reconcilers,
            tickets,
            rewinds,
            ..
        } = &mut *live;
        // The sites share nothing: each is replayed on its own thread (the store reads take
        // turns on the one connection; the reconciliation runs side by side).
        let tickets: &TicketBook = tickets;
        let sites = &self.inner.sites;
        let settings = &self.inner.settings;
        std::thread::scope(|scope| {
            let replays: Vec<_> = reconcilers
                .iter_mut()
                .map(|(site_id, reconciler)| {
                    scope.spawn(move || -> Result<Option<(String, Rewind)>, IngestError> {
                        let Some(watermark) = store.watermark(site_id)? else {
                            return Ok(None);
                        };
                        let Some(site) = sites.get(site_id) else {
                            return Ok(None);
                        };
                        let events = store.events(&EventQuery {
                            site: Some(site_id.clone()),
                            effective_from: watermark.checked_sub_signed(horizon),
                            ..EventQuery::default()
                        })?;
                        let mut fresh = Reconciler::new(site, settings.clone());
                        let replayed = events.len();
                        for e in events {
                            fresh.push(e);
                        }
                        // Findings up to the watermark were stored before the restart (or are
                        // artefacts of the empty start of the replay): dropped.
                        let dropped = fresh.tick(watermark + settle, tickets).len();
                        tracing::info!(
                            site = %site_id,
                            watermark = %watermark,
                            replayed,
                            pending = fresh.pending_events(),
                            inside = fresh.occupancy().count(),
                            dropped,
                            "Access reconciler restored from the stored events."
                        );
                        let rewind = Rewind::new(&fresh, SNAPSHOT_EVERY, SNAPSHOT_KEEP);
                        *reconciler = fresh;
                        Ok(Some((site_id.clone(), rewind)))
                    })
                })
                .collect();
            replays
                .into_iter()
                .map(|replay| {
                    replay
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect::<Result<Vec<_>, IngestError>>()
        })?
        .into_iter()
        .flatten()
        .for_each(|(site_id, rewind)| {
            rewinds.insert(site_id, rewind);
        });
        Ok(())
    }

    /// Starts the access service for the daemon: `None` when no site has readers. Opens the
    /// chain `<data_dir>/access-audit.log` with the key of [`load_or_create_key`] and spawns
    /// the reconciliation ticker (every second), the housekeeping task (visit reports,
    /// retention, monthly chain rotation; every minute) and, when the ticketing webhook is
    /// enabled, the visit-report sender. All stop with `shutdown`.
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
        ingest.spawn_ticker(Duration::from_secs(1), shutdown.clone());
        ingest.spawn_housekeeping(Duration::from_secs(60), shutdown.clone());
        if let Some(webhook) = config.webhook.as_ref().filter(|w| w.enabled) {
            match super::report::ReportSender::from_config(webhook, &config.dispatch) {
                Ok(sender) => {
                    sender.spawn(ingest.clone(), shutdown);
                }
                Err(error) => {
                    return Err(IngestError::Key(format!(
                        "visit reports to the ticketing webhook: {error}"
                    )));
                }
            }
        }
        tracing::info!(
            readers = ingest.inner.readers.len(),
            tickets = lock(&ingest.inner.live).tickets.len(),
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
    /// (the site comes from the reader map), unless `site` is given: then readers not in any
    /// map are recorded at that site (an `unknown_reader` finding each). Zone-less times
    /// use the site's zone (with `site`), else the sites' zone when all share one. All or
    /// nothing on a bad row; idempotent on a re-import. Blocking.
    pub fn import_csv(
        &self,
        file: &Path,
        site: Option<&str>,
    ) -> Result<ImportSummary, IngestError> {
        let import_err = |problem: String| IngestError::Import {
            path: file.to_owned(),
            problem,
        };
        if let Some(site) = site
            && !self.inner.sites.contains_key(site)
        {
            return Err(import_err(format!(
                "site {site:?} is not configured; expected one of: {}",
                self.inner
                    .sites
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let input = std::fs::File::open(file).map_err(|e| import_err(e.to_string()))?;
        let zone = match site.and_then(|s| self.inner.sites.get(s)) {
            Some(s) => Some(s.time_zone),
            None => {
                let zones: std::collections::BTreeSet<&str> = self
                    .inner
                    .sites
                    .values()
                    .map(|s| s.time_zone.name())
                    .collect();
                match (zones.len(), self.inner.sites.values().next()) {
                    (1, Some(site)) => Some(site.time_zone),
                    _ => None,
                }
            }
        };
        let events = super::import::read_csv(std::io::BufReader::new(input), zone, self.now())
            .map_err(|e| import_err(e.to_string()))?;
        let by_site = self
            .route(&events, site)
            .map_err(|unknown| {
                import_err(format!(
                    "readers not in any site's [[access.readers]]: {}; nothing imported (give --site to record them as unknown readers of a site)",
                    unknown.join(", ")
                ))
            })?;
        let mut new = 0;
        for (site, batch) in by_site {
            let stored = self.persist(&site, &batch)?;
            new += stored.len();
            self.push_live(&site, stored);
        }
        Ok(ImportSummary {
            read: events.len(),
            new,
        })
    }

    /// Groups events by site through the reader map; readers in no map go to `fallback`
    /// when given, else they are returned as the error.
    pub(super) fn route(
        &self,
        events: &[AccessEvent],
        fallback: Option<&str>,
    ) -> Result<BTreeMap<String, Vec<AccessEvent>>, Vec<String>> {
        let mut by_site: BTreeMap<String, Vec<AccessEvent>> = BTreeMap::new();
        let mut unknown = std::collections::BTreeSet::new();
        for e in events {
            match (self.inner.readers.get(&*e.reader), fallback) {
                (Some(entry), _) => by_site
                    .entry(entry.site.clone())
                    .or_default()
                    .push(e.clone()),
                (None, Some(site)) => by_site.entry(site.to_owned()).or_default().push(e.clone()),
                (None, None) => {
                    unknown.insert(e.reader.to_string());
                }
            }
        }
        if unknown.is_empty() {
            Ok(by_site)
        } else {
            Err(unknown.into_iter().collect())
        }
    }

    /// Hands newly stored events to the site's live reconciler.
    pub(super) fn push_live(&self, site: &str, events: Vec<AccessEvent>) {
        if events.is_empty() {
            return;
        }
        let mut live = lock(&self.inner.live);
        let Live {
            reconcilers, late, ..
        } = &mut *live;
        let Some(r) = reconcilers.get_mut(site) else {
            return;
        };
        let watermark = r.watermark();
        for e in events {
            let t = r.effective_time(&e);
            let reader = e.reader.clone();
            if r.push(e) && watermark.is_some_and(|w| t <= w) {
                // Its time is already reconciled: the next tick rewinds the site.
                let entry = late.entry(site.to_owned()).or_insert_with(|| Late {
                    from: t,
                    events: 0,
                    readers: BTreeSet::new(),
                });
                entry.from = entry.from.min(t);
                entry.events += 1;
                entry.readers.insert(reader.to_string());
                self.inner
                    .counters
                    .events_late
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
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

    /// Spawns the housekeeping task: every `period`, visit reports that are due
    /// ([`Ingest::produce_due_reports`]) and retention with the monthly chain rotation
    /// ([`Ingest::apply_retention`]). Holds a weak reference, like the ticker.
    pub fn spawn_housekeeping(
        &self,
        period: Duration,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
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
                let done = tokio::task::spawn_blocking(move || {
                    let now = this.now();
                    let reports = this.produce_due_reports(now);
                    let retention = this.apply_retention(now);
                    (reports, retention)
                })
                .await;
                match done {
                    Ok((reports, retention)) => {
                        if let Err(error) = reports {
                            tracing::error!(%error, "Producing visit reports failed.");
                        }
                        if let Err(error) = retention {
                            tracing::error!(%error, "Access retention failed.");
                        }
                    }
                    Err(error) => tracing::error!(%error, "The access housekeeping task failed."),
                }
            }
        })
    }

    /// Runs every live reconciler up to `now`: the findings not stored before are stored,
    /// appended to the chain, logged, counted, kept in memory and announced on
    /// [`Ingest::findings_feed`]; then the watermarks are saved (when findings were stored,
    /// and at least every minute). Returns the new findings. Blocking.
    pub fn tick(&self, now: DateTime<Utc>) -> Result<Vec<StoredFinding>, IngestError> {
        let (mut findings, reruns, watermarks, save) = {
            let mut live = lock(&self.inner.live);
            let reruns = self.rewind_late(&mut live, now)?;
            let Live {
                reconcilers,
                tickets,
                watermark_saved,
                rewinds,
                ..
            } = &mut *live;
            let mut findings: Vec<Finding> = Vec::new();
            for (site, r) in reconcilers.iter_mut() {
                findings.extend(r.tick(now, tickets));
                if let Some(rewind) = rewinds.get_mut(site) {
                    rewind.record(r);
                }
            }
            let save = !findings.is_empty()
                || !reruns.is_empty()
                || watermark_saved.is_none_or(|at| now - at >= WATERMARK_EVERY || now < at);
            if save {
                *watermark_saved = Some(now);
            }
            let watermarks: Vec<(String, DateTime<Utc>)> = reconcilers
                .iter()
                .filter_map(|(site, r)| r.watermark().map(|w| (site.clone(), w)))
                .collect();
            (findings, reruns, watermarks, save)
        };
        for rerun in &reruns {
            findings.extend(rerun.findings.iter().cloned());
        }
        let stored = if findings.is_empty() {
            Vec::new()
        } else {
            self.store_findings(&findings, now)?
        };
        if !stored.is_empty() {
            let mut live = lock(&self.inner.live);
            let Live {
                reconcilers,
                rewinds,
                ..
            } = &mut *live;
            for (site, rewind) in rewinds.iter_mut() {
                if let Some(mark) = reconcilers.get(site).and_then(Reconciler::watermark) {
                    rewind.note_raised(
                        mark,
                        stored
                            .iter()
                            .filter(|s| &s.finding.site == site)
                            .map(|s| s.id),
                    );
                }
            }
        }
        for rerun in reruns {
            self.withdraw(rerun, now)?;
        }
        if save {
            for (site, watermark) in watermarks {
                self.inner.store.set_watermark(&site, watermark)?;
            }
        }
        Ok(stored)
    }

    /// Re-runs each site with late events since the last tick from the last snapshot before
    /// them, up to `now`, and makes the re-run the live reconciler (`access::rewind`).
    /// Returns the re-runs' findings, stored by the caller.
    fn rewind_late(&self, live: &mut Live, now: DateTime<Utc>) -> Result<Vec<Rerun>, IngestError> {
        let late = std::mem::take(&mut live.late);
        let horizon = TimeDelta::from_std(REPLAY_HORIZON).unwrap_or(TimeDelta::MAX);
        let mut reruns = Vec::new();
        for (site_id, late) in late {
            let (Some(site), Some(current), Some(rewind)) = (
                self.inner.sites.get(&site_id),
                live.reconcilers.get(&site_id),
                live.rewinds.get_mut(&site_id),
            ) else {
                continue;
            };
            if current.watermark().is_none() {
                continue;
            }
            // At most the replay horizon before the late events: the start snapshot (no
            // watermark) of a store holding older, imported history would read it all.
            let floor = late
                .from
                .checked_sub_signed(horizon)
                .unwrap_or(DateTime::<Utc>::MIN_UTC);
            let (mut fresh, effective_from, replaces) = match rewind.before(late.from) {
                Some(snapshot) => {
                    let from = snapshot.watermark();
                    let raised = rewind.raised_after(from);
                    (snapshot, from.unwrap_or(floor), Some(raised))
                }
                None => (
                    Reconciler::new(site, self.inner.settings.clone()),
                    floor,
                    None,
                ),
            };
            let events = match self.inner.store.events(&EventQuery {
                site: Some(site_id.clone()),
                effective_from: Some(effective_from),
                ..EventQuery::default()
            }) {
                Ok(events) => events,
                Err(error) => {
                    // Kept for the next tick; the live reconciler stays as it is meanwhile.
                    tracing::error!(site = %site_id, %error, "Cannot read the events to reconcile late events again; retrying.");
                    live.late.insert(site_id, late);
                    continue;
                }
            };
            let replayed = events.len();
            let mark = fresh.watermark();
            for e in events {
                // The snapshot has judged everything up to its watermark (a late event
                // would have dropped it); an old backlog event received after it, and
                // already forgotten by its dedupe horizon, must not be judged twice.
                if mark.is_some_and(|m| fresh.effective_time(&e) <= m) {
                    continue;
                }
                fresh.push(e);
            }
            let mut findings = fresh.tick(now, &live.tickets);
            if replaces.is_none() {
                // An empty start: what it raises before the late events is an artefact.
                findings.retain(|f| f.at >= late.from);
            }
            rewind.forget_from(late.from, &fresh);
            tracing::warn!(
                site = %site_id,
                late_events = late.events,
                readers = ?late.readers,
                since = %late.from,
                from_snapshot = replaces.is_some(),
                replayed,
                "Late reader events: the site's recent period is reconciled again in time order."
            );
            self.inner
                .counters
                .late_reruns
                .fetch_add(1, Ordering::Relaxed);
            live.reconcilers.insert(site_id.clone(), fresh);
            reruns.push(Rerun {
                site: site_id,
                late,
                findings,
                replaces,
            });
        }
        Ok(reruns)
    }

    /// Withdraws the stored, unreviewed findings of a re-run's period that the re-run no
    /// longer raises: a review by `dcguard`, stored and chained (the finding is kept).
    fn withdraw(&self, rerun: Rerun, now: DateTime<Utc>) -> Result<(), IngestError> {
        let Some(candidates) = rerun.replaces else {
            return Ok(());
        };
        let Some(first) = candidates.iter().min() else {
            return Ok(());
        };
        let candidates: HashSet<i64> = candidates.iter().copied().collect();
        let stored = self.inner.store.findings(&FindingQuery {
            site: Some(rerun.site.clone()),
            reviewed: Some(false),
            after_id: Some(first - 1),
            ..FindingQuery::default()
        })?;
        let ids = withdrawn(
            stored
                .iter()
                .filter(|s| candidates.contains(&s.id))
                .map(|s| (s.id, &s.finding)),
            &rerun.findings,
        );
        if ids.is_empty() {
            return Ok(());
        }
        let readers: Vec<&str> = rerun.late.readers.iter().map(String::as_str).collect();
        let note = format!(
            "Withdrawn: {} late event(s) of reader(s) {} from {} on, reconciled in time order, \
             no longer raise this finding.",
            rerun.late.events,
            readers.join(", "),
            rerun.late.from.format("%Y-%m-%d %H:%M:%S UTC"),
        );
        let mut audit = self.appender()?;
        for id in ids {
            let Some((review, new)) =
                self.inner
                    .store
                    .insert_review(id, WITHDRAWN_BY, &note, now)?
            else {
                continue;
            };
            if new {
                self.chain(
                    &mut audit,
                    vec![(Mark::Review(review.id), review_record(&review))],
                )?;
                self.inner
                    .counters
                    .findings_withdrawn
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    site = %rerun.site,
                    finding_id = id,
                    "Access finding withdrawn: late events explain it."
                );
            }
        }
        Ok(())
    }

    /// Stores and chains findings raised at `now`; the new ones are logged, counted and
    /// announced. Blocking.
    pub(super) fn store_findings(
        &self,
        findings: &[Finding],
        now: DateTime<Utc>,
    ) -> Result<Vec<StoredFinding>, IngestError> {
        let stored = {
            let mut audit = self.appender()?;
            let stored = self.inner.store.insert_findings(findings, now)?;
            let items = stored
                .iter()
                .map(|f| (Mark::Finding(f.id), finding_record(f)))
                .collect();
            self.chain(&mut audit, items)?;
            stored
        };
        if stored.is_empty() {
            return Ok(stored);
        }
        {
            let mut by_rule = lock(&self.inner.by_rule);
            let mut by_site_rule = lock(&self.inner.by_site_rule);
            let mut recent = lock(&self.inner.recent);
            for s in &stored {
                let f = &s.finding;
                tracing::warn!(
                    site = %f.site,
                    rule = %f.rule,
                    finding_id = s.id,
                    severity = ?f.severity,
                    reader = f.reader.as_deref().unwrap_or("-"),
                    ticket = f.ticket.as_deref().unwrap_or("-"),
                    "Access finding: {}",
                    f.summary
                );
                *by_rule.entry(f.rule.as_str().to_owned()).or_default() += 1;
                *by_site_rule
                    .entry((f.site.clone(), f.rule.as_str().to_owned()))
                    .or_default() += 1;
                if recent.len() == RECENT_FINDINGS {
                    recent.pop_front();
                }
                recent.push_back(f.clone());
            }
        }
        self.inner
            .counters
            .findings
            .fetch_add(stored.len() as u64, Ordering::Relaxed);
        if let Some(last) = stored.last() {
            self.inner.findings_tx.send_replace(last.id);
        }
        Ok(stored)
    }

    /// Appends records with one write and one fsync, then marks their rows as chained.
    /// The caller holds the chain's lock (so the chain order is the store's order).
    pub(super) fn chain(
        &self,
        audit: &mut AuditLog,
        items: Vec<(Mark, NewRecord)>,
    ) -> Result<(), IngestError> {
        if items.is_empty() {
            return Ok(());
        }
        let (marks, records): (Vec<Mark>, Vec<NewRecord>) = items.into_iter().unzip();
        let appended = audit.append_batch(records)?;
        let store = &self.inner.store;
        let mut events: Vec<(&str, u64)> = Vec::new();
        let mut findings = Vec::new();
        let mut reviews = Vec::new();
        for (mark, a) in marks.iter().zip(&appended) {
            match mark {
                Mark::Event(id) => events.push((id, a.seq)),
                Mark::Finding(id) => findings.push((*id, a.seq)),
                Mark::Review(id) => reviews.push((*id, a.seq)),
                Mark::Revision(ticket, number) => {
                    store.mark_revision_audited(ticket, *number, a.seq)?;
                }
                Mark::Report(ticket) => store.mark_report_audited(ticket, a.seq)?,
            }
        }
        if !events.is_empty() {
            store.mark_audited(&events)?;
        }
        if !findings.is_empty() {
            store.mark_findings_audited(&findings)?;
        }
        if !reviews.is_empty() {
            store.mark_reviews_audited(&reviews)?;
        }
        Ok(())
    }

    /// Replaces the receive clock of the HTTP routes and the tasks (a simulated day in tests).
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

    /// The id of the latest stored finding, updated after each new finding is stored and
    /// chained. The incident pipeline waits on it (`changed()`) and reads
    /// [`AccessStore::findings_after`] from its own cursor, so a restart loses nothing.
    pub fn findings_feed(&self) -> watch::Receiver<i64> {
        self.inner.findings_tx.subscribe()
    }

    /// Findings raised since start by (site, rule): the metrics' copy.
    pub fn findings_by_site_rule(&self) -> BTreeMap<(String, String), u64> {
        lock(&self.inner.by_site_rule).clone()
    }

    /// How many people are inside each site, by current room: (site, room, people).
    /// Counts only; who they are stays in the reconciler (no personal data in metrics).
    pub fn occupancy_counts(&self) -> Vec<(String, String, usize)> {
        let live = lock(&self.inner.live);
        let mut out = Vec::new();
        for (site, reconciler) in &live.reconcilers {
            for (room, people) in reconciler.occupancy().by_room() {
                out.push((site.clone(), room.to_owned(), people.len()));
            }
        }
        out
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
            events_late: get(&c.events_late),
            late_reruns: get(&c.late_reruns),
            findings_withdrawn: get(&c.findings_withdrawn),
            findings_by_rule: lock(&self.inner.by_rule).clone(),
        }
    }

    /// Counts an accepted batch of `total` events of which `new` were new.
    pub(super) fn count_batch(&self, total: usize, new: usize) {
        let c = &self.inner.counters;
        c.batches.fetch_add(1, Ordering::Relaxed);
        c.events_new.fetch_add(new as u64, Ordering::Relaxed);
        c.events_duplicate
            .fetch_add(total.saturating_sub(new) as u64, Ordering::Relaxed);
    }

    /// Counts a batch refused because the store or the chain failed.
    pub(super) fn count_persist_failure(&self) {
        self.inner
            .counters
            .persist_failures
            .fetch_add(1, Ordering::Relaxed);
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
                let now = self.now();
                lock(&self.inner.contacts)
                    .entry(query.serial.clone())
                    .or_default()
                    .seen(now);
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
        let mut parsed = zkteco::parse_cdata(&table, body, &ctx);
        if let Some(contact) = lock(&self.inner.contacts).get(&query.serial) {
            for e in &mut parsed.events {
                e.backlog = contact.is_backlog(e, self.inner.settings.max_clock_skew);
            }
        }
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
                self.count_persist_failure();
                tracing::error!(serial = %query.serial, %error, "Cannot persist an access batch; the device will re-send it.");
                return IclockReply::refused(503, "ERROR: store unavailable");
            }
            Err(error) => {
                self.count_persist_failure();
                tracing::error!(serial = %query.serial, %error, "The persist task failed; the device will re-send.");
                return IclockReply::refused(503, "ERROR: store unavailable");
            }
        };
        self.count_batch(total, new.len());
        self.push_live(&entry.site, new);
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
        let mut audit = self.appender()?;
        let new = self.inner.store.insert_events(site, events)?;
        let items = new
            .iter()
            .map(|e| Ok((Mark::Event(e.id.clone()), event_record(e)?)))
            .collect::<Result<Vec<_>, serde_json::Error>>()
            .map_err(AuditError::Encode)?;
        self.chain(&mut audit, items)?;
        Ok(new)
    }

    /// Appends records of other areas (the API's writes and denials) to this service's
    /// chain, with one write and one fsync, under the chain's lock. Blocking.
    pub fn append_audit(&self, records: Vec<NewRecord>) -> Result<(), IngestError> {
        self.appender()?.append_batch(records)?;
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

/// `dcguard audit verify`: verifies the chain of `<data_dir>/access-audit.log` (its sealed
/// segments, then the active one) with the key of [`key_path`] (never generated here). `Ok`
/// is a summary; `Err` names the segment and the first bad record, or why the chain could not
/// be read.
pub fn verify_chain(data_dir: &Path, key_file: Option<&Path>) -> Result<String, String> {
    let path = data_dir.join(AUDIT_FILE);
    let key_path = key_path(data_dir, key_file);
    let key = AuditKey::from_file(&key_path).map_err(|e| e.to_string())?;
    let sealed = super::audit::sealed_segments(&path).map_err(|e| e.to_string())?;
    if !path.exists() && sealed.is_empty() {
        return Err(format!("no audit log at {}", path.display()));
    }
    match super::audit::verify_segments(&path, &key) {
        Ok(report) => {
            let head = report
                .head
                .map(|h| format!("record {} hash {}", h.seq, h.hash_hex()))
                .unwrap_or_else(|| "empty".to_owned());
            let signed = report
                .last_checkpoint_seq
                .map_or_else(|| "none".to_owned(), |s| s.to_string());
            let pruned = if report.pruned.is_empty() {
                String::new()
            } else {
                format!(
                    ", {} older segment(s) removed by retention (records {}..={})",
                    report.pruned.len(),
                    report.pruned.iter().map(|p| p.first_seq).min().unwrap_or(0),
                    report.pruned.iter().map(|p| p.last_seq).max().unwrap_or(0),
                )
            };
            Ok(format!(
                "audit log {} is intact: {} records from record {} in {} segment(s), {} checkpoints, head {head}, signed through record {signed}, {} unsigned at the tail{pruned}",
                path.display(),
                report.records,
                report.first_seq,
                report.segments.len(),
                report.checkpoints,
                report.unsigned_tail
            ))
        }
        Err(error) => Err(format!("audit log {error}")),
    }
}

/// Opens the store and the chain of `data_dir` for a command (refused while the daemon
/// holds the appender lock). Blocking.
pub fn open_offline(config: &Config, data_dir: &Path) -> Result<Ingest, IngestError> {
    std::fs::create_dir_all(data_dir).map_err(|e| IngestError::Lock {
        path: data_dir.to_owned(),
        problem: e.to_string(),
    })?;
    let store = Store::open(&data_dir.join(crate::app::STORE_FILE))?;
    Ingest::open_locked(config, store, data_dir, Duration::ZERO)
}

/// `dcguard access import`: opens the store and the chain of `data_dir` (refused while the
/// daemon holds the appender lock) and imports `file`. Blocking.
pub fn run_import(
    config: &Config,
    data_dir: &Path,
    file: &Path,
    site: Option<&str>,
) -> Result<ImportSummary, IngestError> {
    open_offline(config, data_dir)?.import_csv(file, site)
}
