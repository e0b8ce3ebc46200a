//! The alarm task: readings and operator actions in, durable alarm and incident transitions
//! out. The only async code around the pure rule engine, alarm book and incident book.
//!
//! # One loop
//!
//! Inputs form one closed enum, [`AlarmInput`]: readings (from the readings consumer, on a
//! bounded channel whose sender **waits** when it is full: the alarm path never drops a
//! reading), operator actions (acknowledge, shelve, unshelve, out of service and back,
//! maintenance windows; from [`AlarmHandle`], each answered once its transitions are on
//! disk) and explicit ticks. The loop:
//!
//! 1. a reading goes to [`RuleEngine::observe`]; the readings already queued are taken too
//!    (up to [`MAX_BATCH`]), then the rules are evaluated once at `now` (at most every
//!    [`AlarmTaskOptions::eval_min_interval`], 50 ms: later readings wait for the next
//!    evaluation);
//! 2. every [`AlarmTaskOptions::tick`] (1 s) the rules are evaluated as well, and the books
//!    are ticked (delays, shelve expiry, chattering, maintenance-window ends, IT disaster);
//! 3. every condition goes to [`AlarmBook::apply`] with its rule's [`AlarmParams`]; each
//!    alarm transition with an incident signal goes to [`IncidentBook::apply`]
//!    (`Open` -> open, `Update` caused by `Acknowledge` -> incident acknowledged, other
//!    `Update` of an active alarm -> update, `Resolve` -> resolve);
//! 4. **durability order (invariant 4)**: the alarm transitions, the incident transitions
//!    and the new snapshots of both books are written in ONE SQLite transaction
//!    ([`Store::commit_alarms`]); only then do they count as raised: the read-only
//!    [`AlarmView`] is published, the metrics move and the operator's call returns. A failed
//!    commit keeps the batch and retries it, in order, before anything newer.
//!
//! # Restart
//!
//! [`AlarmTask::start`] restores both books from the latest snapshot. An alarm active
//! before is active after; it already has its incident, so re-applying its condition
//! opens none. While inputs are unknown (no reading yet) nothing clears (invariant 5).
//!
//! # Suppression by design: PAC standby
//!
//! While a PAC's `pac.operating_state` reads `standby`, every alarm of that PAC is
//! suppressed by design (recorded, not annunciated, no incident; Fire and Water are never
//! suppressed). The suppression is lifted by the next good reading that is not `standby`.
//! Bad data changes nothing either way.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::book::{Alarm, AlarmBook};
use super::kpi::Kpis;
use super::suppression::{MaintenanceWindow, Scope, SuppressTarget};
use super::types::{AlarmError, AlarmKey, BookConfig, Cause, IncidentSignal, Transition};
use crate::config::model::{
    Config, DeviceKind, Impact, PriorityPolicy, ProfileTransport, Role, Urgency,
};
use crate::incidents::incident::{
    AlarmFacts, AlarmId, AlarmSignal, BookState, Incident, IncidentBook, IncidentSettings,
    IncidentTransition,
};
use crate::incidents::outbox::Outbox;
use crate::incidents::sla::WorkingClock;
use crate::model::{PointId, Reading, Value};
use crate::rules::catalogue;
use crate::rules::condition::{AlarmParams, Condition};
use crate::rules::engine::{RuleEngine, RuleSettings};
use crate::store::alarms::{AlarmBatch, AlarmRecord, BooksSnapshot, IncidentRecord};
use crate::store::{Store, StoreError};
use crate::telemetry::metrics::AlarmMetrics;

/// Readings taken from the channel before one evaluation.
pub const MAX_BATCH: usize = 4096;

/// Changes the lifecycle parameters of a condition (tests and the demo shorten delays).
pub type ParamsHook = Arc<dyn Fn(&Condition, AlarmParams) -> AlarmParams + Send + Sync>;

/// Who is badged in a room now: `(site, room)` -> one line per person. The daemon gives
/// the access occupancy (`app`); fire incidents list them (life safety). No IO: an
/// in-memory read.
pub type OccupantsFn = Arc<dyn Fn(&str, &str) -> Vec<String> + Send + Sync>;

/// Knobs of the alarm task. `Default` is what `dcguard run` uses.
#[derive(Clone)]
pub struct AlarmTaskOptions {
    /// Capacity of the readings channel into the task (full: the consumer waits).
    pub capacity: usize,
    /// Evaluation and book tick period.
    pub tick: Duration,
    /// A snapshot is written with every batch of transitions, and at least this often
    /// while the books change without transitions (delays in progress, counters). At the
    /// full shipped inventory the alarm book is ~3.7 MB of JSON, hence 30 s by default: a
    /// restart within it loses only the progress of pending delays, never a transition.
    pub snapshot_every: Duration,
    /// Retry period of a failed commit.
    pub retry_every: Duration,
    /// Readings are evaluated at most this often (they are observed at once); bounds the
    /// CPU of the alarm task under a steady stream of readings, adds at most this much to
    /// the detection latency.
    pub eval_min_interval: Duration,
    /// Resolved incidents are dropped from the incident book (not from the log) this long
    /// after resolving.
    pub keep_resolved: TimeDelta,
    /// Alarm book settings (shelve maximum, flood window, ...).
    pub book: BookConfig,
    /// Incident book settings (grouping window, DRC).
    pub incidents: IncidentSettings,
    /// Rule settings.
    pub rules: RuleSettings,
    /// Optional change of the catalogue's lifecycle parameters.
    pub params: Option<ParamsHook>,
    /// Who is in a room (fire incidents list them); `None` when no site has readers.
    pub occupants: Option<OccupantsFn>,
}

impl fmt::Debug for AlarmTaskOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlarmTaskOptions")
            .field("capacity", &self.capacity)
            .field("tick", &self.tick)
            .field("snapshot_every", &self.snapshot_every)
            .field("book", &self.book)
            .field("params", &self.params.as_ref().map(|_| "hook"))
            .field("occupants", &self.occupants.as_ref().map(|_| "lookup"))
            .finish_non_exhaustive()
    }
}

impl Default for AlarmTaskOptions {
    fn default() -> Self {
        AlarmTaskOptions {
            capacity: 4096,
            tick: Duration::from_secs(1),
            snapshot_every: Duration::from_secs(30),
            retry_every: Duration::from_secs(1),
            eval_min_interval: Duration::from_millis(50),
            keep_resolved: TimeDelta::hours(1),
            book: BookConfig::default(),
            incidents: IncidentSettings::default(),
            rules: RuleSettings::default(),
            params: None,
            occupants: None,
        }
    }
}

/// The answer to an operator action.
pub type Reply = oneshot::Sender<Result<(), CommandError>>;

/// Everything the alarm task takes. Closed: there is no other way in.
#[derive(Debug)]
pub enum AlarmInput {
    /// A reading from the consumer.
    Reading(Reading),
    /// Acknowledge an alarm.
    Ack {
        /// The alarm.
        key: AlarmKey,
        /// Who.
        user: String,
        /// Their comment.
        comment: String,
        /// Answered once on disk.
        reply: Reply,
    },
    /// Shelve an alarm for a time (at most the book's maximum).
    Shelve {
        /// The alarm.
        key: AlarmKey,
        /// Who.
        user: String,
        /// Why.
        reason: String,
        /// How long.
        duration: Duration,
        /// Answered once on disk.
        reply: Reply,
    },
    /// Unshelve an alarm.
    Unshelve {
        /// The alarm.
        key: AlarmKey,
        /// Who.
        user: String,
        /// Answered once on disk.
        reply: Reply,
    },
    /// Take an alarm out of service (`in_service: false`) or return it (`true`).
    OutOfService {
        /// The alarm.
        key: AlarmKey,
        /// Who.
        user: String,
        /// Why (taking it out of service).
        reason: String,
        /// `false`: out of service; `true`: back in service.
        in_service: bool,
        /// Answered once on disk.
        reply: Reply,
    },
    /// Add a planned maintenance window.
    MaintenanceWindowAdd {
        /// The window.
        window: MaintenanceWindow,
        /// Answered once on disk.
        reply: Reply,
    },
    /// End (remove) a maintenance window.
    MaintenanceWindowEnd {
        /// Its id.
        id: String,
        /// Answered once on disk.
        reply: Reply,
    },
    /// Evaluate and tick at an explicit instant (tests; the task ticks itself too).
    Tick(DateTime<Utc>),
    /// A condition of the daemon itself ([`internal`](super::internal)), e.g. incident
    /// delivery failing; kept and re-applied at every evaluation until replaced.
    Internal(Condition),
    /// Open (or join) the security incident of a physical-access finding.
    Finding {
        /// The finding as an incident member.
        finding: SecurityFinding,
        /// Answered once on disk.
        reply: Reply,
    },
    /// A finding was reviewed: its member of the security incident is acknowledged and
    /// resolved (the incident resolves with its last member).
    FindingReviewed {
        /// The finding's member, as [`SecurityFinding::rule`], `site` and `scope` name it.
        rule: String,
        /// Site id.
        site: String,
        /// `finding:<id>`.
        scope: String,
        /// Who reviewed.
        reviewer: String,
        /// Their note.
        note: String,
        /// Answered once on disk.
        reply: Reply,
    },
}

/// A physical-access finding as a security incident member (built by
/// `access::escalate`). It goes to the incident book only: a finding is an event, not a
/// facility condition, so it has no place in the alarm list; it stays open until security
/// reviews the finding.
#[derive(Debug, Clone, PartialEq)]
pub struct SecurityFinding {
    /// `access_<rule>`, e.g. `access_no_ticket`.
    pub rule: String,
    /// Site id.
    pub site: String,
    /// `finding:<id>`: the finding's store id, so one finding is one member.
    pub scope: String,
    /// Impact (a cell of the priority matrix with the configured priority).
    pub impact: Impact,
    /// Urgency.
    pub urgency: Urgency,
    /// Room, when the finding names one.
    pub room: Option<String>,
    /// One line for the ticket (rule, reader, ticket; the finding's own summary).
    pub summary: String,
}

/// Why an operator action failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommandError {
    /// The book refused it.
    #[error(transparent)]
    Alarm(#[from] AlarmError),
    /// The alarm task has stopped.
    #[error("the alarm task has stopped")]
    Stopped,
}

/// What the API and the web pages read: every alarm that is not plainly normal, the open
/// incidents and the KPIs, as of the latest commit.
#[derive(Debug, Clone, Default)]
pub struct AlarmView {
    /// The instant of the latest commit.
    pub at: Option<DateTime<Utc>>,
    /// Alarms that are active, waiting for an acknowledgement, shelved or out of service.
    pub alarms: Vec<Alarm>,
    /// Open incidents.
    pub incidents: Vec<Incident>,
    /// Alarm-management KPIs.
    pub kpis: Option<Kpis>,
    /// Maintenance windows planned or running.
    pub windows: Vec<MaintenanceWindow>,
}

/// Sends operator actions to the task and reads its view. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AlarmHandle {
    commands: mpsc::Sender<AlarmInput>,
    view: watch::Receiver<Arc<AlarmView>>,
}

impl AlarmHandle {
    /// The latest committed view.
    pub fn view(&self) -> Arc<AlarmView> {
        self.view.borrow().clone()
    }

    /// A receiver that sees every new view.
    pub fn watch(&self) -> watch::Receiver<Arc<AlarmView>> {
        self.view.clone()
    }

    async fn ask(&self, make: impl FnOnce(Reply) -> AlarmInput) -> Result<(), CommandError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| CommandError::Stopped)?;
        rx.await.map_err(|_| CommandError::Stopped)?
    }

    /// Opens or joins the security incident of an access finding; returns once on disk.
    pub async fn raise_finding(&self, finding: SecurityFinding) -> Result<(), CommandError> {
        self.ask(|reply| AlarmInput::Finding { finding, reply })
            .await
    }

    /// Resolves a reviewed finding's incident member; returns once on disk.
    pub async fn finding_reviewed(
        &self,
        finding: &SecurityFinding,
        reviewer: &str,
        note: &str,
    ) -> Result<(), CommandError> {
        let (rule, site, scope) = (
            finding.rule.clone(),
            finding.site.clone(),
            finding.scope.clone(),
        );
        let (reviewer, note) = (reviewer.to_owned(), note.to_owned());
        self.ask(|reply| AlarmInput::FindingReviewed {
            rule,
            site,
            scope,
            reviewer,
            note,
            reply,
        })
        .await
    }

    /// Acknowledges an alarm; returns once on disk.
    pub async fn acknowledge(
        &self,
        key: AlarmKey,
        user: &str,
        comment: &str,
    ) -> Result<(), CommandError> {
        let (user, comment) = (user.to_owned(), comment.to_owned());
        self.ask(|reply| AlarmInput::Ack {
            key,
            user,
            comment,
            reply,
        })
        .await
    }

    /// Shelves an alarm; returns once on disk.
    pub async fn shelve(
        &self,
        key: AlarmKey,
        user: &str,
        reason: &str,
        duration: Duration,
    ) -> Result<(), CommandError> {
        let (user, reason) = (user.to_owned(), reason.to_owned());
        self.ask(|reply| AlarmInput::Shelve {
            key,
            user,
            reason,
            duration,
            reply,
        })
        .await
    }

    /// Unshelves an alarm; returns once on disk.
    pub async fn unshelve(&self, key: AlarmKey, user: &str) -> Result<(), CommandError> {
        let user = user.to_owned();
        self.ask(|reply| AlarmInput::Unshelve { key, user, reply })
            .await
    }

    /// Takes an alarm out of service (`in_service: false`) or back; returns once on disk.
    pub async fn set_in_service(
        &self,
        key: AlarmKey,
        user: &str,
        reason: &str,
        in_service: bool,
    ) -> Result<(), CommandError> {
        let (user, reason) = (user.to_owned(), reason.to_owned());
        self.ask(|reply| AlarmInput::OutOfService {
            key,
            user,
            reason,
            in_service,
            reply,
        })
        .await
    }

    /// Adds a maintenance window; returns once on disk.
    pub async fn add_window(&self, window: MaintenanceWindow) -> Result<(), CommandError> {
        self.ask(|reply| AlarmInput::MaintenanceWindowAdd { window, reply })
            .await
    }

    /// Ends a maintenance window; returns once on disk.
    pub async fn end_window(&self, id: &str) -> Result<(), CommandError> {
        let id = id.to_owned();
        self.ask(|reply| AlarmInput::MaintenanceWindowEnd { id, reply })
            .await
    }

    /// Reports a condition of the daemon itself (no answer: it is applied in order with
    /// everything else and committed with the next batch).
    pub async fn report(&self, condition: Condition) -> Result<(), CommandError> {
        self.commands
            .send(AlarmInput::Internal(condition))
            .await
            .map_err(|_| CommandError::Stopped)
    }
}

/// Watches the dispatchers' status and reports one "incident delivery failing" condition
/// per adapter to the alarm task: at start (so an alarm restored active clears once
/// delivery works), whenever it changes (failing or not, parked count), and checks the
/// grace period twice a second. Ends on `cancel` or when the alarm task has stopped.
pub fn watch_delivery(
    handle: AlarmHandle,
    statuses: Vec<watch::Receiver<crate::incidents::dispatcher::DispatcherStatus>>,
    grace: Duration,
    cancel: tokio_util::sync::CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut last: Vec<Option<(bool, u64)>> = vec![None; statuses.len()];
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = Utc::now();
            for (status, last) in statuses.iter().zip(last.iter_mut()) {
                let condition = {
                    let s = status.borrow();
                    super::internal::delivery_condition(&s, now, grace)
                };
                let seen = (
                    condition.verdict == crate::rules::condition::Verdict::Active,
                    condition.value.unwrap_or(0.0) as u64,
                );
                if *last == Some(seen) {
                    continue;
                }
                *last = Some(seen);
                if handle.report(condition).await.is_err() {
                    return;
                }
            }
        }
    })
}

/// Reports the "time-series data lost" alarm of the InfluxDB sink (pseudo-site `daemon`)
/// to the alarm task from the sink's counters, once a second; ends with `cancel` or the
/// alarm task.
pub fn watch_timeseries(
    handle: AlarmHandle,
    stats: Arc<crate::sinks::influxdb::InfluxStats>,
    cancel: tokio_util::sync::CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut last_total = 0;
        let mut last_loss_at = None;
        let mut last_seen: Option<(bool, u64)> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = Utc::now();
            let s = stats.sample();
            let lost = super::internal::DataLoss {
                budget: s.spool.dropped_bytes_lines,
                age: s.spool.dropped_age_lines,
                queue_full: s.dropped_queue_full,
                spool_errors: s.spool_error_lines + s.spool.corrupt_lines,
            };
            if lost.total() > last_total {
                last_total = lost.total();
                last_loss_at = Some(now);
            }
            let condition =
                super::internal::data_loss_condition("influxdb", lost, last_loss_at, now);
            let seen = (
                condition.verdict == crate::rules::condition::Verdict::Active,
                lost.total(),
            );
            if last_seen == Some(seen) {
                continue;
            }
            last_seen = Some(seen);
            if handle.report(condition).await.is_err() {
                return;
            }
        }
    })
}

/// Why the task could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored snapshot cannot be read back (a newer or damaged format).
    #[error("the stored alarm snapshot cannot be read: {0}")]
    Snapshot(#[from] serde_json::Error),
}

/// A started alarm task.
#[derive(Debug)]
pub struct AlarmTask {
    /// Readings in (bounded; `send().await` waits when full). The task ends once every
    /// clone of this sender is dropped and the queue is empty.
    pub readings: mpsc::Sender<AlarmInput>,
    /// Operator actions and the view.
    pub handle: AlarmHandle,
    /// The task; ends after its final commit.
    pub join: JoinHandle<()>,
}

impl AlarmTask {
    /// Restores both books from `store`'s latest snapshot and spawns the loop.
    pub fn start(
        config: &Config,
        store: Store,
        options: AlarmTaskOptions,
        metrics: Option<Arc<AlarmMetrics>>,
        delivery: Option<Delivery>,
    ) -> Result<AlarmTask, StartError> {
        let mut core = Core::new(config, &options);
        for record in store.load_tests()? {
            core.engine.record_load_test(record);
        }
        if let Some(snapshot) = store.alarm_snapshot()? {
            core.restore(&snapshot, &options)?;
            tracing::info!(
                saved_at = %snapshot.saved_at,
                alarms = core.book.alarms().filter(|a| a.state.is_active()).count(),
                incidents = core.incidents.incidents().iter().filter(|i| i.is_open()).count(),
                "Alarm state restored: active alarms and open incidents."
            );
        }
        let (readings_tx, readings_rx) = mpsc::channel(options.capacity.max(1));
        let (commands_tx, commands_rx) = mpsc::channel(64);
        let (view_tx, view_rx) = watch::channel(Arc::new(core.view(None)));
        if let Some(m) = &metrics {
            core.export(m, Utc::now());
        }
        let runner = Runner {
            core,
            store,
            options,
            metrics,
            view: view_tx,
            pending: Pending::default(),
            replies: Vec::new(),
            delivery,
        };
        let join = tokio::spawn(runner.run(readings_rx, commands_rx));
        Ok(AlarmTask {
            readings: readings_tx,
            handle: AlarmHandle {
                commands: commands_tx,
                view: view_rx,
            },
            join,
        })
    }
}

/// The pure part: engine and books, and the mapping between them.
pub struct Core {
    engine: RuleEngine,
    book: AlarmBook,
    incidents: IncidentBook,
    params: HashMap<&'static str, AlarmParams>,
    hook: Option<ParamsHook>,
    occupants: Option<OccupantsFn>,
    /// The daemon's own conditions, latest per key, re-applied at every evaluation.
    internal: std::collections::BTreeMap<crate::rules::ConditionKey, Condition>,
    /// `pac.operating_state` points -> (site, device).
    pac_states: HashMap<PointId, (String, String)>,
    keep_resolved: TimeDelta,
    policy: PriorityPolicy,
    clock: WorkingClock,
}

/// Transitions produced and not yet committed.
#[derive(Debug, Default)]
struct Pending {
    alarms: Vec<Transition>,
    incidents: Vec<IncidentTransition>,
    /// Genset load tests detected, to record.
    load_tests: Vec<crate::rules::LoadTestRecord>,
    /// The books changed since the last snapshot.
    dirty: bool,
}

impl Core {
    /// An engine for `config` and empty books.
    pub fn new(config: &Config, options: &AlarmTaskOptions) -> Core {
        let clock = WorkingClock::new(&config.calendar);
        let mut pac_states = HashMap::new();
        for site in &config.sites {
            for device in site.devices.iter().filter(|d| d.kind() == DeviceKind::Pac) {
                if let ProfileTransport::Modbus(p) = &device.profile.transport {
                    for point in p
                        .points
                        .iter()
                        .filter(|p| p.role == Role::PacOperatingState)
                    {
                        pac_states.insert(
                            PointId::new(&site.id, &device.id, &point.name),
                            (site.id.clone(), device.id.clone()),
                        );
                    }
                }
            }
        }
        Core {
            engine: RuleEngine::with_settings(config, options.rules.clone()),
            book: AlarmBook::new(options.book.clone()),
            incidents: IncidentBook::new(
                options.incidents.clone(),
                config.priority.clone(),
                clock.clone(),
            ),
            params: catalogue::CATALOGUE
                .iter()
                .chain(super::internal::INTERNAL)
                .map(|r| (r.id, r.params.clone()))
                .collect(),
            hook: options.params.clone(),
            occupants: options.occupants.clone(),
            internal: std::collections::BTreeMap::new(),
            pac_states,
            keep_resolved: options.keep_resolved,
            policy: config.priority.clone(),
            clock,
        }
    }

    fn restore(
        &mut self,
        snapshot: &BooksSnapshot,
        options: &AlarmTaskOptions,
    ) -> Result<(), serde_json::Error> {
        let mut book: AlarmBook = serde_json::from_str(&snapshot.alarm_book)?;
        book.set_config(options.book.clone());
        let state: BookState = serde_json::from_str(&snapshot.incident_book)?;
        self.incidents = IncidentBook::restore(
            options.incidents.clone(),
            self.policy.clone(),
            self.clock.clone(),
            state,
        );
        self.book = book;
        Ok(())
    }

    /// One step of the loop without the store: observes `readings`, evaluates and ticks
    /// at `now`; returns the numbers of alarm and incident transitions (benchmarks).
    pub fn run_batch(&mut self, readings: &[Reading], now: DateTime<Utc>) -> (usize, usize) {
        let mut pending = Pending::default();
        for r in readings {
            self.observe(r, now, &mut pending);
        }
        self.evaluate(now, &mut pending);
        (pending.alarms.len(), pending.incidents.len())
    }

    /// The alarm book.
    pub fn book(&self) -> &AlarmBook {
        &self.book
    }

    /// The incident book.
    pub fn incidents(&self) -> &IncidentBook {
        &self.incidents
    }

    /// Takes a reading; PAC standby changes the suppression by design.
    fn observe(&mut self, reading: &Reading, now: DateTime<Utc>, pending: &mut Pending) {
        self.engine.observe(reading);
        let Some((site, device)) = self.pac_states.get(reading.point()) else {
            return;
        };
        let standby = match reading.value() {
            Some(Value::State { name: Some(n), .. }) => &**n == "standby",
            Some(_) => false,
            // Bad or stale: no evidence either way.
            None => return,
        };
        let id = format!("standby:{site}/{device}");
        let present = self.book.suppressions().iter().any(|s| s.id == id);
        let result = match (standby, present) {
            (true, false) => self.book.suppress(
                &id,
                SuppressTarget::Matching {
                    site: site.clone(),
                    scope: Scope {
                        classes: Vec::new(),
                        rooms: Vec::new(),
                        devices: vec![device.clone()],
                    },
                },
                &format!("{device} in standby"),
                now,
            ),
            (false, true) => self.book.unsuppress(&id, now),
            _ => return,
        };
        match result {
            Ok(ts) => self.take(ts, now, pending),
            Err(e) => tracing::warn!(error = %e, "PAC standby suppression not changed."),
        }
    }

    /// Evaluates the rules and ticks both books at `now`.
    fn evaluate(&mut self, now: DateTime<Utc>, pending: &mut Pending) {
        let conditions = self.engine.evaluate(now);
        pending.load_tests.extend(self.engine.take_new_load_tests());
        for c in &conditions {
            let Some(base) = self.params.get(c.key.rule) else {
                tracing::warn!(rule = c.key.rule, "A condition of an unknown rule ignored.");
                continue;
            };
            let overrides = self.engine.overrides();
            let ts = match (&self.hook, overrides.is_empty()) {
                (None, true) => self.book.apply(c, base, now),
                (hook, _) => {
                    let p = overrides.for_condition(c).params(base.clone());
                    let p = match hook {
                        Some(hook) => hook(c, p),
                        None => p,
                    };
                    self.book.apply(c, &p, now)
                }
            };
            self.take(ts, now, pending);
        }
        let internal: Vec<Condition> = self.internal.values().cloned().collect();
        for c in &internal {
            self.apply_internal(c, now, pending);
        }
        let ts = self.book.tick(now);
        self.take(ts, now, pending);
        pending.incidents.extend(self.incidents.tick(now));
        if let Some(before) = now.checked_sub_signed(self.keep_resolved) {
            self.incidents.prune_resolved(before);
        }
        self.book.prune_windows(now);
        pending.dirty = true;
    }

    /// Applies a condition of the daemon itself with its rule's parameters (no overrides,
    /// no test hook: the grace period is in the condition).
    fn apply_internal(&mut self, c: &Condition, now: DateTime<Utc>, pending: &mut Pending) {
        let Some(params) = self.params.get(c.key.rule) else {
            tracing::warn!(
                rule = c.key.rule,
                "An internal condition of an unknown rule ignored."
            );
            return;
        };
        let ts = self.book.apply(c, params, now);
        self.take(ts, now, pending);
    }

    /// Takes a new condition of the daemon itself: logs a change of verdict, keeps it for
    /// the next evaluations and applies it now.
    fn internal(&mut self, c: Condition, now: DateTime<Utc>, pending: &mut Pending) {
        let active = c.verdict == crate::rules::condition::Verdict::Active;
        let was = self
            .internal
            .get(&c.key)
            .map(|old| old.verdict == crate::rules::condition::Verdict::Active);
        match (was, active) {
            (Some(false) | None, true) => tracing::warn!(
                alarm = %format!("{}/{}/{}", c.key.site, c.key.rule, c.key.scope),
                summary = %c.summary,
                "Internal alarm raised."
            ),
            (Some(true), false) => tracing::info!(
                alarm = %format!("{}/{}/{}", c.key.site, c.key.rule, c.key.scope),
                summary = %c.summary,
                "Internal alarm cleared."
            ),
            _ => {}
        }
        self.apply_internal(&c, now, pending);
        self.internal.insert(c.key.clone(), c);
    }

    /// Maps alarm transitions onto the incident book and queues both.
    fn take(&mut self, transitions: Vec<Transition>, now: DateTime<Utc>, pending: &mut Pending) {
        for t in &transitions {
            pending.incidents.extend(self.signal(t, now));
        }
        pending.alarms.extend(transitions);
        pending.dirty = true;
    }

    fn signal(&mut self, t: &Transition, now: DateTime<Utc>) -> Vec<IncidentTransition> {
        // The daemon's own alarms open no incident (see `internal`).
        if super::internal::is_internal(&t.key.site) {
            return Vec::new();
        }
        let alarm = AlarmId {
            rule: &t.key.rule,
            site: &t.key.site,
            scope: &t.key.scope,
        };
        // Life safety: a fire alarm's incident names who is badged in its room.
        let occupants = match (&self.occupants, t.incident, &t.info.room) {
            (Some(lookup), Some(IncidentSignal::Open), Some(room))
                if t.info.class == crate::rules::condition::ConditionClass::Fire =>
            {
                Some(lookup(&t.key.site, room))
            }
            _ => None,
        };
        let facts = || AlarmFacts {
            alarm,
            occupants: occupants.as_deref(),
            class: t.info.class,
            impact: t.info.impact,
            urgency: t.info.urgency,
            value: t.info.value,
            limit: t.info.limit,
            unit: &t.info.unit,
            room: t.info.room.as_deref(),
            rack: t.info.rack.as_deref(),
            device: t.info.device.as_deref(),
            point: t.info.point.as_deref(),
            summary: &t.info.summary,
        };
        let signal = match t.incident {
            None => return Vec::new(),
            Some(IncidentSignal::Open) => AlarmSignal::Open(facts()),
            Some(IncidentSignal::Update) if t.cause == Cause::Acknowledge => {
                AlarmSignal::Acknowledged {
                    alarm,
                    by: t.actor.as_deref().unwrap_or("unknown"),
                    comment: t.comment.as_deref().unwrap_or(""),
                }
            }
            // An active alarm's incident is refreshed (escalated when its priority rose).
            Some(IncidentSignal::Update) if t.to.is_active() => AlarmSignal::Update(facts()),
            // A chattering alarm that cleared keeps its incident open: nothing to tell.
            Some(IncidentSignal::Update) => return Vec::new(),
            Some(IncidentSignal::Resolve) => AlarmSignal::Resolve(alarm),
        };
        self.incidents.apply(signal, now)
    }

    /// Applies an operator action.
    fn command(
        &mut self,
        input: AlarmInput,
        now: DateTime<Utc>,
        pending: &mut Pending,
    ) -> Option<(Reply, Result<(), CommandError>)> {
        let (reply, result) = match input {
            AlarmInput::Ack {
                key,
                user,
                comment,
                reply,
            } => (reply, self.book.acknowledge(&key, &user, &comment, now)),
            AlarmInput::Shelve {
                key,
                user,
                reason,
                duration,
                reply,
            } => (reply, self.book.shelve(&key, &user, &reason, duration, now)),
            AlarmInput::Unshelve { key, user, reply } => {
                (reply, self.book.unshelve(&key, &user, now))
            }
            AlarmInput::OutOfService {
                key,
                user,
                reason,
                in_service: false,
                reply,
            } => (reply, self.book.out_of_service(&key, &user, &reason, now)),
            AlarmInput::OutOfService {
                key,
                user,
                in_service: true,
                reply,
                ..
            } => (reply, self.book.return_to_service(&key, &user, now)),
            AlarmInput::MaintenanceWindowAdd { window, reply } => (
                reply,
                self.book.add_window(window).map(|()| self.book.tick(now)),
            ),
            AlarmInput::MaintenanceWindowEnd { id, reply } => {
                (reply, self.book.remove_window(&id, now))
            }
            AlarmInput::Reading(r) => {
                self.observe(&r, now, pending);
                return None;
            }
            AlarmInput::Tick(at) => {
                self.evaluate(at, pending);
                return None;
            }
            AlarmInput::Internal(c) => {
                self.internal(c, now, pending);
                return None;
            }
            AlarmInput::Finding { finding, reply } => {
                let f = &finding;
                let facts = AlarmFacts {
                    alarm: AlarmId {
                        rule: &f.rule,
                        site: &f.site,
                        scope: &f.scope,
                    },
                    class: crate::rules::condition::ConditionClass::Access,
                    impact: f.impact,
                    urgency: f.urgency,
                    value: None,
                    limit: None,
                    unit: "",
                    room: f.room.as_deref(),
                    rack: None,
                    device: None,
                    point: None,
                    summary: &f.summary,
                    occupants: None,
                };
                pending
                    .incidents
                    .extend(self.incidents.apply(AlarmSignal::Open(facts), now));
                pending.dirty = true;
                (reply, Ok(Vec::new()))
            }
            AlarmInput::FindingReviewed {
                rule,
                site,
                scope,
                reviewer,
                note,
                reply,
            } => {
                let alarm = AlarmId {
                    rule: &rule,
                    site: &site,
                    scope: &scope,
                };
                let mut ts = self.incidents.apply(
                    AlarmSignal::Acknowledged {
                        alarm,
                        by: &reviewer,
                        comment: &note,
                    },
                    now,
                );
                ts.extend(self.incidents.apply(AlarmSignal::Resolve(alarm), now));
                pending.incidents.extend(ts);
                pending.dirty = true;
                (reply, Ok(Vec::new()))
            }
        };
        match result {
            Ok(ts) => {
                self.take(ts, now, pending);
                Some((reply, Ok(())))
            }
            Err(e) => Some((reply, Err(CommandError::Alarm(e)))),
        }
    }

    fn view(&self, at: Option<DateTime<Utc>>) -> AlarmView {
        AlarmView {
            at,
            alarms: self
                .book
                .alarms()
                .filter(|a| {
                    a.state != super::types::AlarmState::Normal
                        || a.shelf.is_some()
                        || a.out_of_service.is_some()
                })
                .cloned()
                .collect(),
            incidents: self
                .incidents
                .incidents()
                .iter()
                .filter(|i| i.is_open())
                .cloned()
                .collect(),
            kpis: at.map(|now| self.book.kpis(now)),
            windows: self.book.windows().to_vec(),
        }
    }

    fn export(&self, metrics: &AlarmMetrics, now: DateTime<Utc>) {
        let policy = &self.policy;
        metrics.set_alarms(
            self.book.alarms().map(|a| {
                (
                    a,
                    policy.priority(a.info.urgency, a.info.impact),
                    self.book.suppression_of(&a.key, now).is_some(),
                )
            }),
            &self.book.kpis(now),
        );
        metrics.set_incidents(self.incidents.incidents().iter().filter(|i| i.is_open()));
    }
}

struct Runner {
    core: Core,
    store: Store,
    options: AlarmTaskOptions,
    metrics: Option<Arc<AlarmMetrics>>,
    view: watch::Sender<Arc<AlarmView>>,
    pending: Pending,
    /// Operator actions waiting for their commit.
    replies: Vec<(Reply, Result<(), CommandError>)>,
    delivery: Option<Delivery>,
}

/// Where committed incident transitions go: the outbox (enqueued in the alarm commit's
/// own transaction) and the adapters whose queues they join.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The outbox (its signal wakes the dispatchers after each commit).
    pub outbox: Outbox,
    /// The enabled adapters' names.
    pub adapters: Vec<&'static str>,
}

impl Runner {
    async fn run(
        mut self,
        mut readings: mpsc::Receiver<AlarmInput>,
        mut commands: mpsc::Receiver<AlarmInput>,
    ) {
        let mut tick = tokio::time::interval(self.options.tick.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first snapshot is due at once: a (re)started daemon writes the state it
        // restored, evaluated against its first readings, without waiting a full period.
        let start = tokio::time::Instant::now();
        let mut last_snapshot = start
            .checked_sub(self.options.snapshot_every)
            .unwrap_or(start);
        let mut commands_open = true;
        let mut last_eval = start;
        let mut next_eval: Option<tokio::time::Instant> = None;
        loop {
            let snapshot_due = last_snapshot.elapsed() >= self.options.snapshot_every;
            let deadline = next_eval.unwrap_or_else(tokio::time::Instant::now);
            tokio::select! {
                biased;
                () = tokio::time::sleep_until(deadline), if next_eval.is_some() => {
                    self.core.evaluate(Utc::now(), &mut self.pending);
                    last_eval = tokio::time::Instant::now();
                    next_eval = None;
                }
                command = commands.recv(), if commands_open => {
                    match command {
                        Some(c) => self.input(c, Utc::now()),
                        None => commands_open = false,
                    }
                }
                input = readings.recv() => {
                    let Some(input) = input else { break };
                    let now = Utc::now();
                    self.input(input, now);
                    // Take what is queued already, then evaluate once (at most every
                    // `eval_min_interval`: a full evaluation costs ~15 ms at the full
                    // inventory, and readings arrive all the time).
                    let mut n = 1;
                    while n < MAX_BATCH {
                        let Ok(more) = readings.try_recv() else { break };
                        self.input(more, now);
                        n += 1;
                    }
                    let due = last_eval + self.options.eval_min_interval;
                    if tokio::time::Instant::now() >= due {
                        self.core.evaluate(Utc::now(), &mut self.pending);
                        last_eval = tokio::time::Instant::now();
                        next_eval = None;
                    } else {
                        next_eval.get_or_insert(due);
                    }
                }
                _ = tick.tick() => {
                    self.core.evaluate(Utc::now(), &mut self.pending);
                    last_eval = tokio::time::Instant::now();
                    next_eval = None;
                }
            }
            let has_transitions =
                !self.pending.alarms.is_empty() || !self.pending.incidents.is_empty();
            if has_transitions || !self.replies.is_empty() || (snapshot_due && self.pending.dirty) {
                if self.commit().await {
                    last_snapshot = tokio::time::Instant::now();
                } else {
                    tokio::time::sleep(self.options.retry_every).await;
                }
            }
        }
        // The readings are drained: one last commit with the final snapshot.
        self.pending.dirty = true;
        for attempt in 1..=3 {
            if self.commit().await {
                break;
            }
            tracing::error!(attempt, "Final alarm commit failed.");
            tokio::time::sleep(self.options.retry_every).await;
        }
        tracing::debug!("Alarm task stopped.");
    }

    fn input(&mut self, input: AlarmInput, now: DateTime<Utc>) {
        if let Some(answer) = self.core.command(input, now, &mut self.pending) {
            self.replies.push(answer);
        }
    }

    /// Writes the pending transitions and the snapshot in one transaction; on success
    /// publishes them. False when the store failed (the batch stays pending).
    async fn commit(&mut self) -> bool {
        let now = Utc::now();
        let batch = match self.batch(now) {
            Ok(batch) => batch,
            Err(e) => {
                tracing::error!(error = %e, "Cannot serialize the alarm state.");
                return false;
            }
        };
        if let Err(e) = self.store.commit_alarms(batch).await {
            tracing::error!(error = %e, "Alarm commit failed; retrying.");
            if let Some(m) = &self.metrics {
                m.commit_failed();
            }
            return false;
        }
        let alarms = std::mem::take(&mut self.pending.alarms);
        let incidents = std::mem::take(&mut self.pending.incidents);
        self.pending.load_tests.clear();
        self.pending.dirty = false;
        if let Some(d) = &self.delivery
            && !incidents.is_empty()
        {
            d.outbox.notify();
        }
        for t in &alarms {
            tracing::info!(
                alarm = %t.key,
                from = ?t.from,
                to = ?t.to,
                cause = ?t.cause,
                incident = ?t.incident,
                silenced = t.silenced(),
                "Alarm transition."
            );
        }
        for t in &incidents {
            tracing::info!(
                incident = %t.incident.id,
                key = %t.idempotency_key,
                priority = t.incident.priority.as_str(),
                "Incident {}.",
                t.note
            );
        }
        if let Some(m) = &self.metrics {
            m.count_transitions(&alarms, &incidents);
            self.core.export(m, now);
        }
        self.view.send_replace(Arc::new(self.core.view(Some(now))));
        for (reply, result) in self.replies.drain(..) {
            let _ = reply.send(result);
        }
        true
    }

    fn batch(&self, now: DateTime<Utc>) -> Result<AlarmBatch, serde_json::Error> {
        let alarms = self
            .pending
            .alarms
            .iter()
            .map(|t| {
                Ok(AlarmRecord {
                    at: t.at,
                    alarm: t.key.to_string(),
                    cause: format!("{:?}", t.cause),
                    incident_key: t.incident_key(),
                    body: serde_json::to_string(t)?,
                })
            })
            .collect::<Result<_, serde_json::Error>>()?;
        let incidents = self
            .pending
            .incidents
            .iter()
            .map(|t| {
                Ok(IncidentRecord {
                    idempotency_key: t.idempotency_key.clone(),
                    incident_id: t.incident.id.clone(),
                    at: t.at,
                    kind: kind_name(t),
                    body: serde_json::to_string(t)?,
                })
            })
            .collect::<Result<_, serde_json::Error>>()?;
        let (outbox, adapters) = match &self.delivery {
            Some(d) if !d.adapters.is_empty() => {
                (self.pending.incidents.clone(), d.adapters.clone())
            }
            _ => (Vec::new(), Vec::new()),
        };
        Ok(AlarmBatch {
            load_tests: self.pending.load_tests.clone(),
            outbox,
            adapters,
            alarms,
            incidents,
            snapshot: Some(BooksSnapshot {
                alarm_book: serde_json::to_string(&self.core.book)?,
                incident_book: serde_json::to_string(&self.core.incidents.state())?,
                saved_at: now,
            }),
        })
    }
}

/// `opened`, `joined`, `escalated`, ... (the serde tag of the transition kind).
fn kind_name(t: &IncidentTransition) -> String {
    serde_json::to_value(&t.kind)
        .ok()
        .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::{Impact, Urgency};
    use crate::incidents::incident::IncidentState;
    use crate::rules::condition::{ConditionClass, ConditionKey, Verdict};

    fn shipped() -> Config {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        match crate::config::load(&dir) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    fn at(s: u32) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-23T02:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
            + TimeDelta::seconds(i64::from(s))
    }

    fn condition(rule: &'static str, device: &str, class: ConditionClass, t: u32) -> Condition {
        Condition {
            key: ConditionKey {
                rule,
                site: Arc::from("dc"),
                scope: Arc::from(format!("device:{device}").as_str()),
            },
            class,
            verdict: Verdict::Active,
            at: at(t),
            impact: Impact::High,
            urgency: Urgency::High,
            value: Some(28.0),
            limit: Some(27.0),
            unit: "degC",
            room: Some(Arc::from("dh1")),
            rack: None,
            device: Some(Arc::from(device)),
            point: None,
            summary: format!("{rule} on {device}"),
        }
    }

    fn immediate() -> AlarmParams {
        AlarmParams {
            on_delay: Duration::ZERO,
            ..catalogue::default_params("pac_fault").unwrap()
        }
    }

    fn state(name: &str) -> Value {
        Value::State {
            raw: 2,
            name: Some(Arc::from(name)),
        }
    }

    #[test]
    fn a_pac_in_standby_is_suppressed_by_design_and_opens_its_incident_when_it_runs() {
        let config = shipped();
        let mut core = Core::new(&config, &AlarmTaskOptions::default());
        let (point, (_, device)) = core
            .pac_states
            .iter()
            .find(|(p, _)| &*p.site == "dc")
            .map(|(p, d)| (p.clone(), d.clone()))
            .unwrap();
        let mut pending = Pending::default();
        core.observe(
            &Reading::good(point.clone(), state("standby"), at(0)),
            at(0),
            &mut pending,
        );
        assert_eq!(core.book.suppressions().len(), 1);
        let c = condition("pac_fault", &device, ConditionClass::Cooling, 1);
        let ts = core.book.apply(&c, &immediate(), at(1));
        core.take(ts, at(1), &mut pending);
        let raised = pending.alarms.last().unwrap();
        assert!(raised.to.is_active() && raised.suppressed.is_some());
        assert!(pending.incidents.is_empty(), "no incident while in standby");
        // Bad data says nothing about standby.
        let bad = Reading::bad(point.clone(), crate::model::BadReason::Timeout, at(2));
        core.observe(&bad, at(2), &mut pending);
        assert_eq!(core.book.suppressions().len(), 1);
        core.observe(
            &Reading::good(point, state("on"), at(3)),
            at(3),
            &mut pending,
        );
        assert!(core.book.suppressions().is_empty());
        let ts = core.book.tick(at(4));
        core.take(ts, at(4), &mut pending);
        assert_eq!(pending.incidents.len(), 1, "{:#?}", pending.incidents);
        assert_eq!(core.incidents.incidents()[0].priority.as_str(), "P1");
    }

    #[test]
    fn a_fire_incident_names_who_is_badged_in_its_room_and_other_classes_do_not() {
        let config = shipped();
        let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = asked.clone();
        let options = AlarmTaskOptions {
            occupants: Some(Arc::new(move |site: &str, room: &str| {
                seen.lock().unwrap().push(format!("{site}/{room}"));
                vec!["A. Vendor (third_party, ticket T-1, in since 09:00 UTC)".to_owned()]
            })),
            ..AlarmTaskOptions::default()
        };
        let mut core = Core::new(&config, &options);
        let mut pending = Pending::default();
        let heat = condition(
            "hall_temperature_high",
            "th-1",
            ConditionClass::Temperature,
            0,
        );
        let ts = core.book.apply(&heat, &immediate(), at(0));
        core.take(ts, at(0), &mut pending);
        assert!(asked.lock().unwrap().is_empty(), "only fire alarms look");
        let fire = condition("vesda_fire1", "vesda-dh1-1", ConditionClass::Fire, 1);
        let ts = core.book.apply(&fire, &immediate(), at(1));
        core.take(ts, at(1), &mut pending);
        assert_eq!(*asked.lock().unwrap(), ["dc/dh1"]);
        let opened = pending
            .incidents
            .iter()
            .find(|t| t.incident.class == ConditionClass::Fire)
            .unwrap();
        assert!(
            opened.incident.details.contains(
                "LIFE SAFETY: 1 badged in dh1 when it raised: A. Vendor (third_party, ticket T-1"
            ),
            "{}",
            opened.incident.details
        );
    }

    #[test]
    fn a_finding_opens_a_security_incident_and_its_review_resolves_it() {
        let config = shipped();
        let mut core = Core::new(&config, &AlarmTaskOptions::default());
        let mut pending = Pending::default();
        let finding = SecurityFinding {
            rule: "access_no_ticket".to_owned(),
            site: "dc".to_owned(),
            scope: "finding:7".to_owned(),
            impact: Impact::High,
            urgency: Urgency::High,
            room: Some("dh1".to_owned()),
            summary: "Access finding 7 (no_ticket): someone".to_owned(),
        };
        let (reply, _rx) = oneshot::channel();
        let answered = core.command(
            AlarmInput::Finding {
                finding: finding.clone(),
                reply,
            },
            at(0),
            &mut pending,
        );
        assert!(matches!(answered, Some((_, Ok(())))));
        assert!(pending.alarms.is_empty(), "a finding is no alarm");
        let inc = &core.incidents.incidents()[0];
        assert_eq!(inc.class, ConditionClass::Access);
        assert_eq!(inc.priority.as_str(), "P1");
        assert!(inc.is_open());
        let (reply, _rx) = oneshot::channel();
        core.command(
            AlarmInput::FindingReviewed {
                rule: finding.rule.clone(),
                site: finding.site.clone(),
                scope: finding.scope.clone(),
                reviewer: "officer".to_owned(),
                note: "escort was at the door".to_owned(),
                reply,
            },
            at(60),
            &mut pending,
        );
        let inc = &core.incidents.incidents()[0];
        assert!(!inc.is_open(), "{inc:#?}");
        assert_eq!(inc.acknowledged.as_ref().unwrap().by, "officer");
    }

    #[test]
    fn acknowledging_the_alarm_acknowledges_its_incident_and_clearing_resolves_it() {
        let config = shipped();
        let mut core = Core::new(&config, &AlarmTaskOptions::default());
        let mut pending = Pending::default();
        let c = condition(
            "hall_temperature_high",
            "th-1",
            ConditionClass::Temperature,
            0,
        );
        let ts = core.book.apply(&c, &immediate(), at(0));
        core.take(ts, at(0), &mut pending);
        assert_eq!(pending.incidents.len(), 1);
        let key = AlarmKey::from(&c.key);
        let (tx, _rx) = oneshot::channel();
        let ack = AlarmInput::Ack {
            key,
            user: "operator-1".to_owned(),
            comment: "on my way".to_owned(),
            reply: tx,
        };
        let answer = core.command(ack, at(5), &mut pending).unwrap();
        assert_eq!(answer.1, Ok(()));
        assert_eq!(
            core.incidents.incidents()[0].state,
            IncidentState::Acknowledged
        );
        let mut clear = condition(
            "hall_temperature_high",
            "th-1",
            ConditionClass::Temperature,
            10,
        );
        clear.verdict = Verdict::Clear { margin: Some(3.0) };
        let params = AlarmParams {
            off_delay: Duration::ZERO,
            ..immediate()
        };
        let ts = core.book.apply(&clear, &params, at(10));
        core.take(ts, at(10), &mut pending);
        // A clear 10 s after the raise may be the start of chattering: the incident is held
        // until the raise leaves the chatter window (600 s), then resolved.
        assert_eq!(
            core.incidents.incidents()[0].state,
            IncidentState::Acknowledged
        );
        let ts = core.book.tick(at(599));
        core.take(ts, at(599), &mut pending);
        assert_eq!(
            core.incidents.incidents()[0].state,
            IncidentState::Acknowledged
        );
        let ts = core.book.tick(at(600));
        core.take(ts, at(600), &mut pending);
        assert_eq!(core.incidents.incidents()[0].state, IncidentState::Resolved);
        assert!(core.view(Some(at(600))).incidents.is_empty());
    }
}
