//! Escort reconciliation (service ITSM.3): access events + visit tickets + explicit time in,
//! findings out. Pure code: no clock, no I/O. The live daemon and a batch re-run over any
//! period go through the same two calls, [`Reconciler::push`] and [`Reconciler::tick`].
//!
//! # Time and ordering
//!
//! Every event gets an *effective time*: its device time, or its receive time when the device
//! clock is off by more than `max_clock_skew` (a `clock_skew` finding says so once per reader;
//! a skewed clock is not trusted for ordering or windows). `push` only buffers (dropping a
//! repeated event id, so re-sent batches are harmless); `tick(now)` processes, in effective-time
//! order (ties by event id), every buffered event at or before the watermark `now - settle`,
//! then fires the timers (escort gaps, PIC departures, technical-escort presence, overstay)
//! whose deadline is before the watermark. Events that arrive out of order by less than
//! `settle` are therefore reconciled exactly as if they had arrived in order. An event older
//! than the watermark when it arrives ("late") is still reconciled, at the next tick and with
//! its own time, but timers already fired are not re-opened; the batch re-run of the same
//! period may then differ for that event, and only for it.
//!
//! A batch re-run is `push` of every event of the period, then one `tick(end)`. It starts
//! from an empty site: run it from a moment when nobody is inside (for example from the
//! start of the live run), or the first exits are reported as `anti_passback`.
//!
//! # Rules
//!
//! People: a credential on the site's staff roster, on shift (site local time, widened by
//! `shift_grace`), is staff and needs no ticket. Anyone else entering the site (a granted
//! entry while not inside) is matched to the site's tickets listing the credential *as the
//! tickets were at that time* (their revision history), which keeps re-runs identical after
//! later ticket changes. Checks at site entry: `outside_window`, `ticket_not_active`,
//! `no_ticket` (a known person: staff off shift, or listed on tickets only for other sites or
//! times), `unknown_credential` (granted to a credential no roster or ticket knows). Checks
//! at every room entry: `wrong_room` (a non-passage room not on a ticket that names rooms),
//! `unescorted_third_party` (the PIC's credential passes the same reader within
//! `escort_max_gap` before or after), `anti_passback`. When a PIC leaves the site while a
//! third party they escort is still inside and stays inside for `escort_max_gap`:
//! `unescorted_third_party`. `no_technical_escort`: `escort_max_gap` after a ticket holder
//! enters, or after the last on-duty technical escort leaves, no on-duty technical escort is
//! inside while people of the ticket are (once per ticket until an escort enters).
//! `overstay`: a timer at window end + `overstay_grace`. `repeated_denied`: N denials within
//! M minutes by one credential, else at one reader (each denial counts in one finding only).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveTime, TimeDelta, Timelike, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::access::event::{AccessEvent, Direction, EventKind};
use crate::access::occupancy::{ExitOutcome, Occupancy, Occupant, OccupantRole};
use crate::access::ticket::{TicketBook, TicketRole, TicketState, VisitTicket, is_passage};
use crate::config::model::{self, EscortRule, RoomKind, Site, StaffRole};

/// The reconciliation rules of issue 6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    NoTicket,
    OutsideWindow,
    WrongRoom,
    UnescortedThirdParty,
    NoTechnicalEscort,
    Overstay,
    AntiPassback,
    RepeatedDenied,
    TicketNotActive,
    UnknownCredential,
    UnknownReader,
    ClockSkew,
    DeviceTamper,
}

impl Rule {
    /// Every rule.
    pub const ALL: [Rule; 13] = [
        Rule::NoTicket,
        Rule::OutsideWindow,
        Rule::WrongRoom,
        Rule::UnescortedThirdParty,
        Rule::NoTechnicalEscort,
        Rule::Overstay,
        Rule::AntiPassback,
        Rule::RepeatedDenied,
        Rule::TicketNotActive,
        Rule::UnknownCredential,
        Rule::UnknownReader,
        Rule::ClockSkew,
        Rule::DeviceTamper,
    ];

    /// The snake_case name used in findings, incidents and configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::NoTicket => "no_ticket",
            Rule::OutsideWindow => "outside_window",
            Rule::WrongRoom => "wrong_room",
            Rule::UnescortedThirdParty => "unescorted_third_party",
            Rule::NoTechnicalEscort => "no_technical_escort",
            Rule::Overstay => "overstay",
            Rule::AntiPassback => "anti_passback",
            Rule::RepeatedDenied => "repeated_denied",
            Rule::TicketNotActive => "ticket_not_active",
            Rule::UnknownCredential => "unknown_credential",
            Rule::UnknownReader => "unknown_reader",
            Rule::ClockSkew => "clock_skew",
            Rule::DeviceTamper => "device_tamper",
        }
    }

    /// Default severity of a finding of this rule (the incident pipeline maps it to a
    /// priority per kind).
    pub fn default_severity(self) -> Severity {
        match self {
            Rule::NoTicket
            | Rule::WrongRoom
            | Rule::UnescortedThirdParty
            | Rule::TicketNotActive
            | Rule::UnknownCredential
            | Rule::DeviceTamper => Severity::High,
            Rule::OutsideWindow
            | Rule::NoTechnicalEscort
            | Rule::Overstay
            | Rule::RepeatedDenied
            | Rule::UnknownReader => Severity::Medium,
            Rule::AntiPassback | Rule::ClockSkew => Severity::Low,
        }
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Severity of a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
}

/// One broken rule, with its evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The rule.
    pub rule: Rule,
    /// Site id.
    pub site: String,
    /// Severity.
    pub severity: Severity,
    /// Person name (staff or ticket name), when resolved.
    pub person: Option<String>,
    /// Credential involved, when any.
    pub credential: Option<Arc<str>>,
    /// Ticket involved, when any.
    pub ticket: Option<String>,
    /// Room involved, when known.
    pub room: Option<String>,
    /// Reader involved, when one.
    pub reader: Option<Arc<str>>,
    /// Ids of the evidence events, oldest first.
    pub evidence: Vec<Arc<str>>,
    /// When the rule was broken (effective event time, or the timer's deadline).
    pub at: DateTime<Utc>,
    /// One line for people.
    pub summary: String,
}

impl Finding {
    /// A stable key for this finding: the same finding from a live run and from any re-run
    /// of the same events has the same key (for idempotent incidents and the audit log).
    pub fn key(&self) -> String {
        let evidence: Vec<&str> = self.evidence.iter().map(|e| &**e).collect();
        format!(
            "{}/{}/{}/{}",
            self.site,
            self.rule,
            self.ticket.as_deref().unwrap_or("-"),
            evidence.join("+")
        )
    }
}

/// Thresholds not (yet) in the site configuration; defaults from issue 6.
#[derive(Debug, Clone, PartialEq)]
pub struct ReconcileSettings {
    /// `repeated_denied`: this many denials ...
    pub repeated_denied_count: usize,
    /// ... within this window, by one credential or at one reader.
    pub repeated_denied_window: Duration,
    /// `clock_skew`: device time further than this from the receive time.
    pub max_clock_skew: Duration,
    /// Out-of-order tolerance: events are reconciled once `now - settle` has passed them.
    pub settle: Duration,
    /// An approved ticket whose window is within this of an entry makes it
    /// `outside_window` (a cancelled / closed one `ticket_not_active`); further away, the
    /// entry is `no_ticket`.
    pub ticket_horizon: Duration,
    /// Staff count as on shift this long before their shift starts and after it ends.
    pub shift_grace: Duration,
    /// Event ids are remembered this long (by effective time) to drop re-sent events.
    pub dedupe_horizon: Duration,
}

impl ReconcileSettings {
    /// The settings of `dcguard.toml`'s `[access]`; the rest at their defaults.
    pub fn from_config(a: &model::AccessSettings) -> Self {
        Self {
            repeated_denied_count: a.repeated_denied_count,
            repeated_denied_window: a.repeated_denied_window,
            max_clock_skew: a.max_clock_skew,
            settle: a.settle,
            shift_grace: a.shift_grace,
            ..Self::default()
        }
    }
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        Self {
            repeated_denied_count: 3,
            repeated_denied_window: Duration::from_secs(5 * 60),
            max_clock_skew: Duration::from_secs(5 * 60),
            settle: Duration::from_secs(10),
            ticket_horizon: Duration::from_secs(12 * 3600),
            shift_grace: Duration::from_secs(3600),
            dedupe_horizon: Duration::from_secs(24 * 3600),
        }
    }
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// `t + d`, saturating: device times come from devices and durations from configuration.
fn plus(t: DateTime<Utc>, d: TimeDelta) -> DateTime<Utc> {
    t.checked_add_signed(d).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `t - d`, saturating.
fn minus(t: DateTime<Utc>, d: TimeDelta) -> DateTime<Utc> {
    t.checked_sub_signed(d).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

#[derive(Debug, Clone)]
struct ReaderInfo {
    room: String,
    direction: Direction,
    passage: bool,
}

#[derive(Debug, Clone)]
struct StaffInfo {
    id: String,
    name: String,
    role: StaffRole,
    shift: Option<(NaiveTime, NaiveTime)>,
}

#[derive(Debug, Clone)]
struct Pass {
    t: DateTime<Utc>,
    credential: Arc<str>,
}

/// One denied attempt, counted for `repeated_denied`.
#[derive(Debug, Clone)]
struct Denial {
    t: DateTime<Utc>,
    id: Arc<str>,
    credential: Option<Arc<str>>,
}

/// A pending third-party escort check at one reader.
#[derive(Debug, Clone)]
struct EscortCheck {
    reader: Arc<str>,
    room: String,
    third_party: Arc<str>,
    person: String,
    ticket: String,
    pic_credentials: Vec<String>,
    event: Arc<str>,
}

#[derive(Debug, Clone)]
enum Timer {
    /// The PIC left the site while this third party was inside.
    PicLeft {
        third_party: Arc<str>,
        stay: u64,
        person: String,
        ticket: String,
        pic_credentials: Vec<String>,
        evidence: Vec<Arc<str>>,
    },
    /// An on-duty technical escort must be inside by the deadline.
    TechnicalEscort {
        ticket: String,
        credential: Arc<str>,
        evidence: Vec<Arc<str>>,
    },
    /// Still inside after window end + grace.
    Overstay {
        credential: Arc<str>,
        stay: u64,
        ticket: String,
    },
}

/// How a non-staff site entry matches the tickets.
enum Match<'a> {
    InWindow(&'a VisitTicket),
    OutsideWindow(&'a VisitTicket),
    NotActive(&'a VisitTicket),
    NoTicket,
    Unknown,
}

/// The reconciler of one site. Cloned as a snapshot for late events (`access::rewind`).
#[derive(Debug, Clone)]
pub struct Reconciler {
    site: String,
    tz: Tz,
    escort_rule: EscortRule,
    technical_escort_required: bool,
    gap: TimeDelta,
    grace_before: TimeDelta,
    overstay_grace: TimeDelta,
    settings: ReconcileSettings,
    denied_window: TimeDelta,
    max_skew: TimeDelta,
    settle: TimeDelta,
    horizon: TimeDelta,
    shift_grace: TimeDelta,
    dedupe_horizon: TimeDelta,
    /// Shared so that reconciling an event takes its reader's entry without copying it.
    readers: HashMap<String, Arc<ReaderInfo>>,
    staff: HashMap<String, StaffInfo>,

    occupancy: Occupancy,
    buffer: BTreeMap<(DateTime<Utc>, Arc<str>), AccessEvent>,
    seen: HashSet<Arc<str>>,
    seen_order: BTreeSet<(DateTime<Utc>, Arc<str>)>,
    clock: Option<DateTime<Utc>>,
    passes: HashMap<Arc<str>, VecDeque<Pass>>,
    escorts: BTreeMap<(DateTime<Utc>, u64), EscortCheck>,
    timers: BTreeMap<(DateTime<Utc>, u64), Timer>,
    seq: u64,
    te_pending: HashSet<String>,
    te_missing: HashSet<String>,
    denied_by_credential: HashMap<Arc<str>, VecDeque<Denial>>,
    denied_by_reader: HashMap<Arc<str>, VecDeque<Denial>>,
    skewed_readers: HashSet<Arc<str>>,
    trace: Option<Vec<Passage>>,
}

/// What a granted passage did ([`Reconciler::with_trace`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PassageKind {
    /// Entered the site (the first room of a stay).
    SiteEntry,
    /// Entered a room while inside the site.
    RoomEntry,
    /// Left a room, still inside the site.
    RoomExit,
    /// Left the site (the last room of a stay).
    SiteExit,
    /// Changed nothing: an exit while not inside, or an entry into a room already entered
    /// (`anti_passback`).
    Refused,
}

/// One granted passage as reconciliation saw it: who (as resolved at site entry), under
/// which ticket, where. The trace is what visit reports and queries by ticket are built from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Passage {
    /// The event.
    pub event: Arc<str>,
    /// Its effective time.
    pub at: DateTime<Utc>,
    pub credential: Arc<str>,
    pub reader: Arc<str>,
    /// The reader's room.
    pub room: String,
    pub direction: Direction,
    pub kind: PassageKind,
    /// Name, when the person was inside (or entered).
    pub person: Option<String>,
    /// Staff id or identity number, when resolved.
    pub person_id: Option<String>,
    /// Role, when the person was inside (or entered).
    pub role: Option<OccupantRole>,
    /// The ticket the stay runs under, when any.
    pub ticket: Option<String>,
}

impl Reconciler {
    /// A reconciler for `site` with nobody inside.
    pub fn new(site: &Site, settings: ReconcileSettings) -> Self {
        let kinds: HashMap<&str, RoomKind> =
            site.rooms.iter().map(|r| (r.id.as_str(), r.kind)).collect();
        let readers = site
            .access
            .readers
            .iter()
            .map(|r| {
                let info = ReaderInfo {
                    room: r.room.clone(),
                    direction: match r.direction {
                        model::Direction::Entry => Direction::Entry,
                        model::Direction::Exit => Direction::Exit,
                    },
                    passage: kinds.get(r.room.as_str()).is_some_and(|k| is_passage(*k)),
                };
                (r.serial.clone(), Arc::new(info))
            })
            .collect();
        let mut staff = HashMap::new();
        for s in &site.access.staff {
            for c in &s.credentials {
                staff.insert(
                    c.clone(),
                    StaffInfo {
                        id: s.id.clone(),
                        name: s.name.clone(),
                        role: s.role,
                        shift: s.shift,
                    },
                );
            }
        }
        let p = &site.access;
        Self {
            site: site.id.clone(),
            tz: site.time_zone,
            escort_rule: p.third_party_escort,
            technical_escort_required: p.technical_escort_required,
            gap: delta(p.escort_max_gap),
            grace_before: delta(p.entry_grace_before),
            overstay_grace: delta(p.overstay_grace),
            denied_window: delta(settings.repeated_denied_window),
            max_skew: delta(settings.max_clock_skew),
            settle: delta(settings.settle),
            horizon: delta(settings.ticket_horizon),
            shift_grace: delta(settings.shift_grace),
            dedupe_horizon: delta(settings.dedupe_horizon),
            settings,
            readers,
            staff,
            occupancy: Occupancy::new(),
            buffer: BTreeMap::new(),
            seen: HashSet::new(),
            seen_order: BTreeSet::new(),
            clock: None,
            passes: HashMap::new(),
            escorts: BTreeMap::new(),
            timers: BTreeMap::new(),
            seq: 0,
            te_pending: HashSet::new(),
            te_missing: HashSet::new(),
            denied_by_credential: HashMap::new(),
            denied_by_reader: HashMap::new(),
            skewed_readers: HashSet::new(),
            trace: None,
        }
    }

    /// Records every granted passage from now on ([`Reconciler::take_trace`]).
    #[must_use]
    pub fn with_trace(mut self) -> Self {
        self.trace = Some(Vec::new());
        self
    }

    /// The passages recorded since the last call (empty without [`Reconciler::with_trace`]).
    pub fn take_trace(&mut self) -> Vec<Passage> {
        self.trace.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The site's escort gap (the PIC passes the same reader within this of a third party).
    pub fn escort_gap(&self) -> Duration {
        self.gap.to_std().unwrap_or(Duration::ZERO)
    }

    /// Replays a period: pushes every event, then one tick at `end`. The same code path as
    /// the live run.
    pub fn run_batch(
        site: &Site,
        settings: ReconcileSettings,
        events: impl IntoIterator<Item = AccessEvent>,
        tickets: &TicketBook,
        end: DateTime<Utc>,
    ) -> Vec<Finding> {
        let mut r = Self::new(site, settings);
        for e in events {
            r.push(e);
        }
        r.tick(end, tickets)
    }

    /// Replays a long period in bounded memory: `events` must come in effective-time order
    /// (see [`Reconciler::effective_time`]; the store's device-time index, with skewed
    /// events at their receive time). Each event is reconciled as soon as it is pushed, so
    /// only the live state is held. Same findings as [`Reconciler::run_batch`] on the same
    /// events.
    pub fn replay(
        site: &Site,
        settings: ReconcileSettings,
        events: impl IntoIterator<Item = AccessEvent>,
        tickets: &TicketBook,
        end: DateTime<Utc>,
        mut sink: impl FnMut(Finding),
    ) {
        let mut r = Self::new(site, settings);
        for e in events {
            let t = r.effective_time(&e);
            if r.push(e) {
                r.tick(plus(t, r.settle), tickets)
                    .into_iter()
                    .for_each(&mut sink);
            }
        }
        r.tick(end, tickets).into_iter().for_each(&mut sink);
    }

    /// The site id.
    pub fn site(&self) -> &str {
        &self.site
    }

    /// The settings in use.
    pub fn settings(&self) -> &ReconcileSettings {
        &self.settings
    }

    /// Who is inside now (as of the last tick).
    pub fn occupancy(&self) -> &Occupancy {
        &self.occupancy
    }

    /// Events buffered, not yet reconciled.
    pub fn pending_events(&self) -> usize {
        self.buffer.len()
    }

    /// The time up to which events and timers have been reconciled.
    pub fn watermark(&self) -> Option<DateTime<Utc>> {
        self.clock
    }

    /// The time an event is reconciled at: device time, or receive time when the device clock
    /// is off by more than `max_clock_skew`.
    pub fn effective_time(&self, e: &AccessEvent) -> DateTime<Utc> {
        if self.is_skewed(e) {
            e.received_at
        } else {
            e.device_time
        }
    }

    fn is_skewed(&self, e: &AccessEvent) -> bool {
        !e.backlog && (e.device_time - e.received_at).abs() > self.max_skew
    }

    /// Buffers an event for the next tick. Returns false (and drops it) when its id was seen.
    pub fn push(&mut self, event: AccessEvent) -> bool {
        if !self.seen.insert(event.id.clone()) {
            return false;
        }
        let t = self.effective_time(&event);
        self.seen_order.insert((t, event.id.clone()));
        self.buffer.insert((t, event.id.clone()), event);
        true
    }

    /// Reconciles every buffered event at or before `now - settle` and fires the timers due
    /// before it. Returns the new findings, in order.
    pub fn tick(&mut self, now: DateTime<Utc>, tickets: &TicketBook) -> Vec<Finding> {
        let mark = minus(now, self.settle);
        let mut out = Vec::new();
        while let Some(entry) = self.buffer.first_entry() {
            if entry.key().0 > mark {
                break;
            }
            let ((t, _), event) = entry.remove_entry();
            self.fire_timers(t, tickets, &mut out);
            self.process(&event, t, tickets, &mut out);
        }
        self.fire_timers(mark, tickets, &mut out);
        if self.clock.is_none_or(|c| c < mark) {
            self.clock = Some(mark);
        }
        // Forget ids older than the dedupe horizon.
        let forget = minus(mark, self.dedupe_horizon);
        while let Some(first) = self.seen_order.first() {
            if first.0 >= forget {
                break;
            }
            if let Some((_, id)) = self.seen_order.pop_first() {
                self.seen.remove(&id);
            }
        }
        out
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn finding(&self, rule: Rule, at: DateTime<Utc>, summary: String) -> Finding {
        Finding {
            rule,
            site: self.site.clone(),
            severity: rule.default_severity(),
            person: None,
            credential: None,
            ticket: None,
            room: None,
            reader: None,
            evidence: Vec::new(),
            at,
            summary,
        }
    }

    fn on_shift(&self, staff: &StaffInfo, t: DateTime<Utc>) -> bool {
        let Some((start, end)) = staff.shift else {
            return true;
        };
        let day = 86_400_i64;
        let secs = |n: NaiveTime| i64::from(n.num_seconds_from_midnight());
        let local = secs(t.with_timezone(&self.tz).time());
        let grace = self.shift_grace.num_seconds();
        let span = (secs(end) - secs(start)).rem_euclid(day);
        let span = if span == 0 { day } else { span } + 2 * grace;
        if span >= day {
            return true;
        }
        (local - (secs(start) - grace)).rem_euclid(day) <= span
    }

    fn on_duty_escort_inside(&self, t: DateTime<Utc>) -> bool {
        self.occupancy.inside().any(|o| {
            o.role == OccupantRole::Staff(StaffRole::TechnicalEscort)
                && self
                    .staff
                    .get(&*o.credential)
                    .is_some_and(|s| self.on_shift(s, t))
        })
    }

    fn process(
        &mut self,
        e: &AccessEvent,
        t: DateTime<Utc>,
        tickets: &TicketBook,
        out: &mut Vec<Finding>,
    ) {
        if self.is_skewed(e) {
            if self.skewed_readers.insert(e.reader.clone()) {
                let skew = e.device_time - e.received_at;
                let mut f = self.finding(
                    Rule::ClockSkew,
                    t,
                    format!(
                        "reader {} clock is {} s off the receive time (limit {} s); its events are timed by receipt",
                        e.reader,
                        skew.num_seconds(),
                        self.max_skew.num_seconds()
                    ),
                );
                f.reader = Some(e.reader.clone());
                f.room = self.readers.get(&*e.reader).map(|r| r.room.clone());
                f.evidence = vec![e.id.clone()];
                out.push(f);
            }
        } else {
            self.skewed_readers.remove(&e.reader);
        }
        let Some(reader) = self.readers.get(&*e.reader).cloned() else {
            let mut f = self.finding(
                Rule::UnknownReader,
                t,
                format!(
                    "event from reader {} which is not in the reader map of site {}",
                    e.reader, self.site
                ),
            );
            f.reader = Some(e.reader.clone());
            f.credential = e.credential.clone();
            f.evidence = vec![e.id.clone()];
            out.push(f);
            return;
        };
        match &e.kind {
            EventKind::Operation { op } => {
                if op.is_tamper() {
                    let mut f = self.finding(
                        Rule::DeviceTamper,
                        t,
                        format!(
                            "reader {} reported {op:?} at room {}",
                            e.reader, reader.room
                        ),
                    );
                    f.reader = Some(e.reader.clone());
                    f.room = Some(reader.room.clone());
                    f.credential = e.credential.clone();
                    f.evidence = vec![e.id.clone()];
                    out.push(f);
                }
            }
            EventKind::Denied { .. } => self.denied(e, t, &reader, out),
            EventKind::Granted => {
                let Some(credential) = e.credential.clone() else {
                    return;
                };
                self.record_pass(&e.reader, &credential, t);
                let before = self
                    .trace
                    .is_some()
                    .then(|| self.occupancy.get(&credential).cloned())
                    .flatten();
                let direction = e.direction.unwrap_or(reader.direction);
                match direction {
                    Direction::Entry => self.entry(e, &credential, t, &reader, tickets, out),
                    Direction::Exit => self.exit(e, &credential, t, &reader, tickets, out),
                }
                if self.trace.is_some() {
                    let passage = self.passage(e, &credential, t, &reader, direction, before);
                    if let Some(trace) = &mut self.trace {
                        trace.push(passage);
                    }
                }
            }
        }
    }

    /// What a granted passage did, for the trace (visit reports, queries by ticket).
    fn passage(
        &self,
        e: &AccessEvent,
        credential: &Arc<str>,
        t: DateTime<Utc>,
        reader: &ReaderInfo,
        direction: Direction,
        before: Option<Occupant>,
    ) -> Passage {
        let after = self.occupancy.get(credential);
        let (kind, who) = match (direction, &before, after) {
            (Direction::Entry, None, Some(a)) => (PassageKind::SiteEntry, Some(a)),
            (Direction::Entry, Some(_), Some(a)) => (PassageKind::RoomEntry, Some(a)),
            (Direction::Exit, Some(b), None) => (PassageKind::SiteExit, Some(b)),
            (Direction::Exit, Some(b), Some(a)) if b.rooms != a.rooms => {
                (PassageKind::RoomExit, Some(a))
            }
            (_, b, a) => (PassageKind::Refused, a.or(b.as_ref())),
        };
        Passage {
            event: e.id.clone(),
            at: t,
            credential: credential.clone(),
            reader: e.reader.clone(),
            room: reader.room.clone(),
            direction,
            kind,
            person: who.map(|o| o.person.clone()),
            person_id: who.and_then(|o| o.person_id.clone()),
            role: who.map(|o| o.role),
            ticket: who.and_then(|o| o.ticket.clone()),
        }
    }

    fn denied(
        &mut self,
        e: &AccessEvent,
        t: DateTime<Utc>,
        reader: &ReaderInfo,
        out: &mut Vec<Finding>,
    ) {
        let n = self.settings.repeated_denied_count.max(1);
        let window = self.denied_window;
        let denial = Denial {
            t,
            id: e.id.clone(),
            credential: e.credential.clone(),
        };
        let prune = |q: &mut VecDeque<Denial>| {
            while q.front().is_some_and(|d| t - d.t > window) {
                q.pop_front();
            }
        };
        let rq = self.denied_by_reader.entry(e.reader.clone()).or_default();
        rq.push_back(denial.clone());
        prune(rq);
        if let Some(c) = &e.credential {
            let cq = self.denied_by_credential.entry(c.clone()).or_default();
            cq.push_back(denial);
            prune(cq);
            if cq.len() >= n {
                let evidence: Vec<Arc<str>> = cq.drain(..).map(|d| d.id).collect();
                if let Some(rq) = self.denied_by_reader.get_mut(&e.reader) {
                    rq.retain(|d| !evidence.contains(&d.id));
                }
                let mut f = self.finding(
                    Rule::RepeatedDenied,
                    t,
                    format!(
                        "credential {c} denied {} times within {} min (last at reader {})",
                        evidence.len(),
                        window.num_minutes(),
                        e.reader
                    ),
                );
                f.credential = Some(c.clone());
                f.person = self.staff.get(&**c).map(|s| s.name.clone());
                f.reader = Some(e.reader.clone());
                f.room = Some(reader.room.clone());
                f.evidence = evidence;
                out.push(f);
                return;
            }
        }
        let Some(rq) = self.denied_by_reader.get_mut(&e.reader) else {
            return;
        };
        if rq.len() >= n {
            let drained: Vec<Denial> = rq.drain(..).collect();
            let evidence: Vec<Arc<str>> = drained.iter().map(|d| d.id.clone()).collect();
            for d in &drained {
                if let Some(cq) = d
                    .credential
                    .as_ref()
                    .and_then(|c| self.denied_by_credential.get_mut(c))
                {
                    cq.retain(|x| !evidence.contains(&x.id));
                }
            }
            let mut f = self.finding(
                Rule::RepeatedDenied,
                t,
                format!(
                    "reader {} denied {} attempts within {} min",
                    e.reader,
                    evidence.len(),
                    window.num_minutes()
                ),
            );
            f.reader = Some(e.reader.clone());
            f.room = Some(reader.room.clone());
            f.evidence = evidence;
            out.push(f);
        }
    }

    fn record_pass(&mut self, reader: &Arc<str>, credential: &Arc<str>, t: DateTime<Utc>) {
        // Resolve pending escort checks at this reader that this credential satisfies.
        let resolved: Vec<(DateTime<Utc>, u64)> = self
            .escorts
            .iter()
            .filter(|((deadline, _), c)| {
                *deadline >= t
                    && c.reader == *reader
                    && c.pic_credentials.iter().any(|p| **p == **credential)
            })
            .map(|(k, _)| *k)
            .collect();
        for k in resolved {
            self.escorts.remove(&k);
        }
        let gap = self.gap;
        let q = self.passes.entry(reader.clone()).or_default();
        while q.front().is_some_and(|p| t - p.t > gap) {
            q.pop_front();
        }
        q.push_back(Pass {
            t,
            credential: credential.clone(),
        });
    }

    fn classify<'a>(
        &self,
        credential: &str,
        t: DateTime<Utc>,
        tickets: &'a TicketBook,
        off_shift_staff: bool,
    ) -> Match<'a> {
        let distance = |tk: &VisitTicket| -> TimeDelta {
            let open = minus(tk.window_start, self.grace_before);
            if t < open {
                open - t
            } else if t > tk.window_end {
                t - tk.window_end
            } else {
                TimeDelta::zero()
            }
        };
        let mut best_active: Option<(TimeDelta, &VisitTicket)> = None;
        let mut best_inactive: Option<(TimeDelta, &VisitTicket)> = None;
        for tk in tickets.listing_at(&self.site, credential, t) {
            let d = distance(tk);
            let slot = if tk.state == TicketState::Approved {
                &mut best_active
            } else {
                &mut best_inactive
            };
            let better = match slot {
                None => true,
                Some((bd, bt)) => (d, &tk.window_start, &tk.id) < (*bd, &bt.window_start, &bt.id),
            };
            if better {
                *slot = Some((d, tk));
            }
        }
        match (best_active, best_inactive) {
            (Some((d, tk)), _) if d == TimeDelta::zero() => Match::InWindow(tk),
            (Some((d, tk)), _) if d <= self.horizon => Match::OutsideWindow(tk),
            (_, Some((d, tk))) if d <= self.horizon => Match::NotActive(tk),
            _ if off_shift_staff || tickets.knows_credential(credential) => Match::NoTicket,
            _ => Match::Unknown,
        }
    }

    fn entry(
        &mut self,
        e: &AccessEvent,
        credential: &Arc<str>,
        t: DateTime<Utc>,
        reader: &ReaderInfo,
        tickets: &TicketBook,
        out: &mut Vec<Finding>,
    ) {
        if let Some(entered) = self.occupancy.enter_room(credential, &reader.room, &e.id) {
            let Some(o) = self.occupancy.get(credential) else {
                return;
            };
            // Room checks are for visitors: staff entering a room they are not in yet raise
            // nothing (and are not copied for it).
            if entered && !matches!(o.role, OccupantRole::Visitor(_)) {
                return;
            }
            let o = o.clone();
            if !entered {
                let mut f = self.finding(
                    Rule::AntiPassback,
                    t,
                    format!(
                        "{} entered {} while already inside it",
                        o.person, reader.room
                    ),
                );
                self.about(&mut f, &o, e, reader);
                f.evidence = vec![e.id.clone()];
                out.push(f);
            }
            self.room_checks(e, &o, t, reader, tickets, out);
            return;
        }

        // Site entry.
        let staff = self.staff.get(&**credential).cloned();
        let on_shift = staff.as_ref().is_some_and(|s| self.on_shift(s, t));
        let mut occupant = Occupant {
            credential: credential.clone(),
            person: staff
                .as_ref()
                .map_or_else(|| credential.to_string(), |s| s.name.clone()),
            person_id: staff.as_ref().map(|s| s.id.clone()),
            role: OccupantRole::Unresolved,
            ticket: None,
            escorted_by: None,
            rooms: vec![reader.room.clone()],
            entered_at: t,
            entry_event: e.id.clone(),
            last_event: e.id.clone(),
            stay: 0,
        };
        if let (Some(s), true) = (&staff, on_shift) {
            occupant.role = OccupantRole::Staff(s.role);
            if s.role == StaffRole::TechnicalEscort {
                self.te_missing.clear();
            }
            self.occupancy.arrive(occupant);
            return;
        }
        let mut window_end = None;
        match self.classify(credential, t, tickets, staff.is_some()) {
            m @ (Match::InWindow(tk) | Match::OutsideWindow(tk)) => {
                if let Some(h) = tk.holder(credential) {
                    occupant.person = h.name.to_string();
                    occupant.person_id = Some(h.identity_number.to_string());
                    occupant.role = OccupantRole::Visitor(h.role);
                    occupant.escorted_by = h.pic.map(str::to_string);
                }
                occupant.ticket = Some(tk.id.clone());
                if t <= tk.window_end {
                    window_end = Some(tk.window_end);
                }
                if matches!(m, Match::OutsideWindow(_)) {
                    let when = if t > tk.window_end {
                        format!("after its end {}", tk.window_end)
                    } else {
                        format!(
                            "before its start {} minus {} min grace",
                            tk.window_start,
                            self.grace_before.num_minutes()
                        )
                    };
                    let mut f = self.finding(
                        Rule::OutsideWindow,
                        t,
                        format!("{} entered under ticket {} {when}", occupant.person, tk.id),
                    );
                    self.about(&mut f, &occupant, e, reader);
                    f.evidence = vec![e.id.clone()];
                    out.push(f);
                }
            }
            Match::NotActive(tk) => {
                if let Some(h) = tk.holder(credential) {
                    occupant.person = h.name.to_string();
                    occupant.person_id = Some(h.identity_number.to_string());
                }
                let mut f = self.finding(
                    Rule::TicketNotActive,
                    t,
                    format!(
                        "{} entered under ticket {} which is {:?}",
                        occupant.person, tk.id, tk.state
                    ),
                );
                self.about(&mut f, &occupant, e, reader);
                f.ticket = Some(tk.id.clone());
                f.evidence = vec![e.id.clone()];
                out.push(f);
            }
            Match::NoTicket => {
                let why = if staff.is_some() {
                    "off shift and with no approved ticket"
                } else {
                    "with no approved ticket listing them for this site and time"
                };
                let mut f = self.finding(
                    Rule::NoTicket,
                    t,
                    format!("{} entered site {} {why}", occupant.person, self.site),
                );
                self.about(&mut f, &occupant, e, reader);
                f.evidence = vec![e.id.clone()];
                out.push(f);
            }
            Match::Unknown => {
                let mut f = self.finding(
                    Rule::UnknownCredential,
                    t,
                    format!(
                        "reader {} granted credential {credential} which no roster or ticket knows",
                        e.reader
                    ),
                );
                self.about(&mut f, &occupant, e, reader);
                f.evidence = vec![e.id.clone()];
                out.push(f);
            }
        }
        let is_visitor = matches!(occupant.role, OccupantRole::Visitor(_));
        let ticket = occupant.ticket.clone();
        let stay = self.occupancy.arrive(occupant);
        let Some(o) = self.occupancy.get(credential).cloned() else {
            return;
        };
        if !is_visitor {
            return;
        }
        if let (Some(ticket), Some(end)) = (&ticket, window_end) {
            let deadline = plus(end, self.overstay_grace);
            let seq = self.next_seq();
            self.timers.insert(
                (deadline, seq),
                Timer::Overstay {
                    credential: credential.clone(),
                    stay,
                    ticket: ticket.clone(),
                },
            );
        }
        if let Some(ticket) = &ticket
            && self.technical_escort_required
            && !self.te_pending.contains(ticket)
            && !self.te_missing.contains(ticket)
            && !self.on_duty_escort_inside(t)
        {
            self.te_pending.insert(ticket.clone());
            let seq = self.next_seq();
            self.timers.insert(
                (plus(t, self.gap), seq),
                Timer::TechnicalEscort {
                    ticket: ticket.clone(),
                    credential: credential.clone(),
                    evidence: vec![e.id.clone()],
                },
            );
        }
        self.room_checks(e, &o, t, reader, tickets, out);
    }

    /// Sets person, credential, ticket, room and reader of a finding from an occupant.
    fn about(&self, f: &mut Finding, o: &Occupant, e: &AccessEvent, reader: &ReaderInfo) {
        f.person = Some(o.person.clone());
        f.credential = Some(o.credential.clone());
        f.ticket = o.ticket.clone();
        f.room = Some(reader.room.clone());
        f.reader = Some(e.reader.clone());
    }

    /// Checks of a visitor at every room entry: wrong room, third-party escort.
    fn room_checks(
        &mut self,
        e: &AccessEvent,
        o: &Occupant,
        t: DateTime<Utc>,
        reader: &ReaderInfo,
        tickets: &TicketBook,
        out: &mut Vec<Finding>,
    ) {
        let OccupantRole::Visitor(role) = o.role else {
            return;
        };
        let Some(ticket) = o
            .ticket
            .as_deref()
            .and_then(|id| tickets.get(id))
            .and_then(|tk| tk.as_of(t))
        else {
            return;
        };
        if !reader.passage && !ticket.rooms.is_empty() && !ticket.rooms.contains(&reader.room) {
            let mut f = self.finding(
                Rule::WrongRoom,
                t,
                format!(
                    "{} entered {} which ticket {} does not list (rooms: {})",
                    o.person,
                    reader.room,
                    ticket.id,
                    ticket.rooms.join(", ")
                ),
            );
            self.about(&mut f, o, e, reader);
            f.evidence = vec![e.id.clone()];
            out.push(f);
        }
        if role != TicketRole::ThirdParty {
            return;
        }
        let pic_credentials: Vec<String> = o
            .escorted_by
            .as_deref()
            .map(|pic| ticket.credentials_of(pic).to_vec())
            .unwrap_or_default();
        let escorted_before = self.passes.get(&e.reader).is_some_and(|q| {
            q.iter().any(|p| {
                t - p.t <= self.gap && pic_credentials.iter().any(|c| **c == *p.credential)
            })
        });
        if escorted_before {
            return;
        }
        let seq = self.next_seq();
        self.escorts.insert(
            (plus(t, self.gap), seq),
            EscortCheck {
                reader: e.reader.clone(),
                room: reader.room.clone(),
                third_party: o.credential.clone(),
                person: o.person.clone(),
                ticket: ticket.id.clone(),
                pic_credentials,
                event: e.id.clone(),
            },
        );
    }

    fn exit(
        &mut self,
        e: &AccessEvent,
        credential: &Arc<str>,
        t: DateTime<Utc>,
        reader: &ReaderInfo,
        tickets: &TicketBook,
        out: &mut Vec<Finding>,
    ) {
        match self.occupancy.exit_room(credential, &reader.room, &e.id) {
            ExitOutcome::Exited => {}
            ExitOutcome::NotInside => {
                let mut f = self.finding(
                    Rule::AntiPassback,
                    t,
                    format!(
                        "credential {credential} left {} without being inside it",
                        reader.room
                    ),
                );
                f.credential = Some(credential.clone());
                f.person = self.staff.get(&**credential).map(|s| s.name.clone());
                if let Some(o) = self.occupancy.get(credential) {
                    f.person = Some(o.person.clone());
                    f.ticket = o.ticket.clone();
                }
                f.room = Some(reader.room.clone());
                f.reader = Some(e.reader.clone());
                f.evidence = vec![e.id.clone()];
                out.push(f);
            }
            ExitOutcome::LeftSite(gone) => self.left_site(e, &gone, t, tickets),
        }
    }

    fn left_site(
        &mut self,
        e: &AccessEvent,
        gone: &Occupant,
        t: DateTime<Utc>,
        tickets: &TicketBook,
    ) {
        match gone.role {
            OccupantRole::Visitor(TicketRole::Pic | TicketRole::Employee) => {
                let (Some(ticket), Some(pic)) = (&gone.ticket, &gone.person_id) else {
                    return;
                };
                let pic_credentials: Vec<String> = tickets
                    .get(ticket)
                    .and_then(|tk| tk.as_of(t))
                    .map(|tk| tk.credentials_of(pic).to_vec())
                    .unwrap_or_default();
                let escorted: Vec<Occupant> = self
                    .occupancy
                    .inside()
                    .filter(|o| {
                        o.role == OccupantRole::Visitor(TicketRole::ThirdParty)
                            && o.ticket.as_ref() == Some(ticket)
                            && o.escorted_by.as_ref() == Some(pic)
                    })
                    .cloned()
                    .collect();
                for o in escorted {
                    let seq = self.next_seq();
                    self.timers.insert(
                        (plus(t, self.gap), seq),
                        Timer::PicLeft {
                            third_party: o.credential.clone(),
                            stay: o.stay,
                            person: o.person.clone(),
                            ticket: ticket.clone(),
                            pic_credentials: pic_credentials.clone(),
                            evidence: vec![o.last_event.clone(), e.id.clone()],
                        },
                    );
                }
            }
            OccupantRole::Staff(StaffRole::TechnicalEscort) if self.technical_escort_required => {
                if self.on_duty_escort_inside(t) {
                    return;
                }
                let visits: BTreeSet<String> = self
                    .occupancy
                    .inside()
                    .filter(|o| matches!(o.role, OccupantRole::Visitor(_)))
                    .filter_map(|o| o.ticket.clone())
                    .collect();
                for ticket in visits {
                    if self.te_pending.contains(&ticket) || self.te_missing.contains(&ticket) {
                        continue;
                    }
                    let Some(credential) = self
                        .occupancy
                        .inside()
                        .find(|o| o.ticket.as_ref() == Some(&ticket))
                        .map(|o| o.credential.clone())
                    else {
                        continue;
                    };
                    self.te_pending.insert(ticket.clone());
                    let seq = self.next_seq();
                    self.timers.insert(
                        (plus(t, self.gap), seq),
                        Timer::TechnicalEscort {
                            ticket,
                            credential,
                            evidence: vec![e.id.clone()],
                        },
                    );
                }
            }
            _ => {}
        }
    }

    /// Fires every escort check and timer whose deadline is before `t`, in deadline order.
    fn fire_timers(&mut self, t: DateTime<Utc>, tickets: &TicketBook, out: &mut Vec<Finding>) {
        loop {
            let next_escort = self.escorts.first_key_value().map(|(k, _)| *k);
            let next_timer = self.timers.first_key_value().map(|(k, _)| *k);
            let (escort_first, key) = match (next_escort, next_timer) {
                (Some(a), Some(b)) => (a <= b, a.min(b)),
                (Some(a), None) => (true, a),
                (None, Some(b)) => (false, b),
                (None, None) => return,
            };
            if key.0 >= t {
                return;
            }
            if escort_first {
                if let Some(check) = self.escorts.remove(&key) {
                    self.escort_expired(check, key.0, out);
                }
            } else if let Some(timer) = self.timers.remove(&key) {
                self.timer_expired(timer, key.0, tickets, out);
            }
        }
    }

    fn escort_severity(&self) -> Severity {
        match self.escort_rule {
            EscortRule::Required => Rule::UnescortedThirdParty.default_severity(),
            EscortRule::Optional => Severity::Info,
        }
    }

    fn escort_expired(&mut self, c: EscortCheck, at: DateTime<Utc>, out: &mut Vec<Finding>) {
        let mut f = self.finding(
            Rule::UnescortedThirdParty,
            at,
            format!(
                "third party {} passed reader {} into {} without their PIC within {} s (ticket {})",
                c.person,
                c.reader,
                c.room,
                self.gap.num_seconds(),
                c.ticket
            ),
        );
        f.severity = self.escort_severity();
        f.person = Some(c.person);
        f.credential = Some(c.third_party);
        f.ticket = Some(c.ticket);
        f.room = Some(c.room);
        f.reader = Some(c.reader);
        f.evidence = vec![c.event];
        out.push(f);
    }

    fn timer_expired(
        &mut self,
        timer: Timer,
        at: DateTime<Utc>,
        tickets: &TicketBook,
        out: &mut Vec<Finding>,
    ) {
        match timer {
            Timer::PicLeft {
                third_party,
                stay,
                person,
                ticket,
                pic_credentials,
                evidence,
            } => {
                let still_inside = self
                    .occupancy
                    .get(&third_party)
                    .is_some_and(|o| o.stay == stay);
                let pic_back = pic_credentials.iter().any(|c| self.occupancy.is_inside(c));
                if !still_inside || pic_back {
                    return;
                }
                let mut f = self.finding(
                    Rule::UnescortedThirdParty,
                    at,
                    format!("the PIC of third party {person} left site {} while they were still inside (ticket {ticket})", self.site),
                );
                f.severity = self.escort_severity();
                f.person = Some(person);
                f.room = self
                    .occupancy
                    .get(&third_party)
                    .and_then(|o| o.room().map(str::to_string));
                f.credential = Some(third_party);
                f.ticket = Some(ticket);
                f.evidence = evidence;
                out.push(f);
            }
            Timer::TechnicalEscort {
                ticket,
                credential,
                evidence,
            } => {
                self.te_pending.remove(&ticket);
                let visitors_inside = self.occupancy.inside().any(|o| {
                    matches!(o.role, OccupantRole::Visitor(_)) && o.ticket.as_ref() == Some(&ticket)
                });
                if !visitors_inside
                    || self.on_duty_escort_inside(at)
                    || !self.te_missing.insert(ticket.clone())
                {
                    return;
                }
                let mut f = self.finding(
                    Rule::NoTechnicalEscort,
                    at,
                    format!(
                        "no on-duty technical escort officer inside site {} during the visit of ticket {ticket}",
                        self.site
                    ),
                );
                if let Some(o) = self.occupancy.get(&credential) {
                    f.person = Some(o.person.clone());
                    f.room = o.room().map(str::to_string);
                }
                f.credential = Some(credential);
                f.ticket = Some(ticket);
                f.evidence = evidence;
                out.push(f);
            }
            Timer::Overstay {
                credential,
                stay,
                ticket,
            } => {
                let Some(o) = self
                    .occupancy
                    .get(&credential)
                    .filter(|o| o.stay == stay)
                    .cloned()
                else {
                    return;
                };
                // The window may have been extended since: follow the ticket as it is now.
                if let Some(tk) = tickets.get(&ticket).and_then(|tk| tk.as_of(at))
                    && plus(tk.window_end, self.overstay_grace) > at
                {
                    let seq = self.next_seq();
                    self.timers.insert(
                        (plus(tk.window_end, self.overstay_grace), seq),
                        Timer::Overstay {
                            credential,
                            stay,
                            ticket,
                        },
                    );
                    return;
                }
                let mut f = self.finding(
                    Rule::Overstay,
                    at,
                    format!(
                        "{} still inside site {} {} min after the end of ticket {ticket}'s window",
                        o.person,
                        self.site,
                        self.overstay_grace.num_minutes()
                    ),
                );
                f.person = Some(o.person.clone());
                f.credential = Some(credential);
                f.ticket = Some(ticket);
                f.room = o.room().map(str::to_string);
                f.evidence = if o.entry_event == o.last_event {
                    vec![o.entry_event.clone()]
                } else {
                    vec![o.entry_event.clone(), o.last_event.clone()]
                };
                out.push(f);
            }
        }
    }
}
