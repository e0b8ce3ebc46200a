//! The access service API: what the REST routes under `/api/v1` (issue 7) and the `dcguard
//! access` commands call. Typed inputs, typed results, [`ServiceError`] with an HTTP status
//! per variant. The routes own their JSON DTOs and authentication; nothing here knows HTTP.
//!
//! Every method is on [`AccessService`] (the [`Ingest`] handle the daemon starts, cheap to
//! clone) and is **blocking** (SQLite commits with `synchronous = FULL`, fsync of the audit
//! chain): call it from `tokio::task::spawn_blocking`. Times are explicit (`now` = the
//! request's receive time, from [`Ingest::now`]).
//!
//! | call | route (issue 7) | errors |
//! |---|---|---|
//! | [`Ingest::create_visit`] | `POST /api/v1/visits` | 400 invalid, 409 exists with other content |
//! | [`Ingest::update_visit`] | `PUT /api/v1/visits/{id}` | 400, 404, 409 not approved |
//! | [`Ingest::cancel_visit`] | `POST /api/v1/visits/{id}/cancel` | 404, 409 |
//! | [`Ingest::close_visit`] | (the daemon, a working day after the visit) | 404, 409 |
//! | [`Ingest::visit`], [`Ingest::visits`] | `GET /api/v1/visits[/{id}]` | 404 |
//! | [`Ingest::ingest_json_batch`] | `POST /api/v1/access/events` | 400 |
//! | [`Ingest::events`], [`Ingest::export_events_csv`] | `GET /api/v1/access/events[.csv]` | 400, 404 ticket |
//! | [`Ingest::findings`], [`Ingest::finding`], [`Ingest::export_findings_csv`] | `GET /api/v1/findings`, `dcguard access findings` | 400, 404 |
//! | [`Ingest::review_finding`] | `POST /api/v1/findings/{id}/review` | 400, 404 |
//! | [`Ingest::occupancy`], [`Ingest::people_in_room`] | `GET /api/v1/occupancy` | 400 unknown site |
//! | [`Ingest::visit_report`], [`Ingest::stored_report`] | `GET /api/v1/visits/{id}` | 404 |
//!
//! Every change (ticket revision, event, review) is stored and appended to the audit chain
//! before the call returns `Ok`; a call that returns [`ServiceError::Storage`] (503) changed
//! nothing the caller can rely on and may be repeated: ticket changes, batches and reviews
//! are idempotent.

use std::collections::BTreeSet;
use std::io::Write;

use chrono::{DateTime, Months, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::event::AccessEvent;
use super::import::{BatchError, parse_json_batch_with_site};
use super::ingest::{IngestError, Mark, lock, report_record, review_record, revision_record};
use super::occupancy::Occupant;
use super::reconcile::{Passage, Reconciler, Rule};
use super::report::{self, VisitReport};
use super::ticket::{
    Person, Prepared, TicketBook, TicketBookError, TicketError, TicketRevision, TicketState,
    VisitTicket, Visitor,
};
use crate::store::StoreError;
use crate::store::access::{EventQuery, FindingQuery, Review, StoredFinding, StoredReport};

pub use super::ingest::Ingest;

/// The actor of the ticket revision that closes a visit with its report.
pub const CLOSER: &str = "dcguard";

/// The access service handle (the same value as [`Ingest`]).
pub type AccessService = Ingest;

/// Longest review note accepted.
pub const MAX_NOTE_LEN: usize = 4000;
/// Visit reports are produced for visits whose report fell due at most this long ago (a
/// restored or imported book does not flood the ticketing system with old reports).
pub const REPORT_BACKLOG: TimeDelta = TimeDelta::days(30);
/// Most reports produced per housekeeping pass.
const REPORTS_PER_PASS: usize = 50;

/// Why a service call failed. [`ServiceError::status`] is the HTTP status for the API.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// 400: the ticket is invalid; every problem is listed.
    #[error("ticket {id}: {}", .problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    InvalidTicket {
        id: String,
        problems: Vec<TicketError>,
    },
    /// 400: a JSON event batch is malformed or invalid (nothing of it was stored).
    #[error(transparent)]
    InvalidBatch(#[from] BatchError),
    /// 400: a batch names readers that are in no site's reader map and gives no `site`.
    #[error(
        "readers not in any site's [[access.readers]]: {}; give \"site\" to record them as unknown readers of a site",
        .0.join(", ")
    )]
    UnknownReaders(Vec<String>),
    /// 400: a site id that is not configured.
    #[error("site {found:?} is not configured; expected one of: {expected}")]
    UnknownSite { found: String, expected: String },
    /// 400: another invalid input (a query field, a review), naming the field.
    #[error("{field}: {problem}")]
    InvalidInput { field: String, problem: String },
    /// 404.
    #[error("ticket {0}: not found")]
    TicketNotFound(String),
    /// 404.
    #[error("finding {0}: not found")]
    FindingNotFound(i64),
    /// 409: a create for an existing ticket id with other content (use update).
    #[error("ticket {0}: already exists with other content; expected a new ticket id (use update)")]
    TicketExists(String),
    /// 409: the ticket is cancelled or closed (or the change contradicts its state).
    #[error("ticket {id}: is {state:?}; expected an approved ticket")]
    TicketNotActive { id: String, state: TicketState },
    /// 503: the store or the audit chain failed; nothing was acknowledged, retry.
    #[error("access store or audit chain unavailable: {0}")]
    Storage(String),
}

impl ServiceError {
    /// The HTTP status: 400 invalid input, 404 unknown ticket or finding, 409 conflict with
    /// the ticket's state, 503 storage.
    pub fn status(&self) -> u16 {
        match self {
            Self::InvalidTicket { .. }
            | Self::InvalidBatch(_)
            | Self::UnknownReaders(_)
            | Self::UnknownSite { .. }
            | Self::InvalidInput { .. } => 400,
            Self::TicketNotFound(_) | Self::FindingNotFound(_) => 404,
            Self::TicketExists(_) | Self::TicketNotActive { .. } => 409,
            Self::Storage(_) => 503,
        }
    }

    fn input(field: &str, problem: impl Into<String>) -> Self {
        Self::InvalidInput {
            field: field.to_owned(),
            problem: problem.into(),
        }
    }
}

impl From<IngestError> for ServiceError {
    fn from(e: IngestError) -> Self {
        Self::Storage(e.to_string())
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        Self::Storage(e.to_string())
    }
}

impl From<TicketBookError> for ServiceError {
    fn from(e: TicketBookError) -> Self {
        match e {
            TicketBookError::Invalid { id, errors } => Self::InvalidTicket {
                id,
                problems: errors,
            },
            TicketBookError::Duplicate(id) => Self::TicketExists(id),
            TicketBookError::NotFound(id) => Self::TicketNotFound(id),
            TicketBookError::NotActive { id, state } => Self::TicketNotActive { id, state },
        }
    }
}

/// A visit ticket as the ticketing system sends it (`POST /api/v1/visits`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisitInput {
    /// Ticket id in the ticketing system.
    pub id: String,
    /// Site id (`dc`, `smart-dc`, `drc`).
    pub site: String,
    /// Destination room ids (required where the site says so: the Smart DC).
    pub rooms: Vec<String>,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    /// The PIC of the requesting unit (with credentials when escorting third parties).
    pub pic: Person,
    /// Employees and third parties (each third party names their PIC's identity number).
    pub visitors: Vec<Visitor>,
    pub activity_plan: String,
    /// Who approved the request (the requester's supervisor, at least echelon IV).
    pub approver: String,
}

impl VisitInput {
    fn into_ticket(self) -> VisitTicket {
        VisitTicket {
            id: self.id,
            site: self.site,
            rooms: self.rooms,
            window_start: self.window_start,
            window_end: self.window_end,
            pic: self.pic,
            visitors: self.visitors,
            activity_plan: self.activity_plan,
            approver: self.approver,
            state: TicketState::Approved,
            history: Vec::new(),
        }
    }
}

/// The result of a ticket change.
#[derive(Debug, Clone, PartialEq)]
pub struct VisitOutcome {
    /// The ticket after the call, with its whole history.
    pub ticket: VisitTicket,
    /// False when the call changed nothing (a re-sent identical create, update, cancel or
    /// close): the API may answer 200 instead of 201.
    pub changed: bool,
}

/// A query over tickets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VisitFilter {
    pub site: Option<String>,
    pub state: Option<TicketState>,
    /// Only tickets whose window overlaps `[from, until)`.
    pub from: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Only tickets listing this person (credential, identity number or name).
    pub person: Option<String>,
}

/// What a JSON batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BatchReceipt {
    /// Events in the batch.
    pub received: usize,
    /// Stored for the first time (the rest were stored before: a re-sent batch).
    pub new: usize,
}

/// A query over the access log. Every given field must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    pub site: Option<String>,
    /// A room id: the events of its readers (of `site`, or of every site with that room).
    pub room: Option<String>,
    /// A credential, an identity number, a staff id or a name (case-insensitive): the
    /// events of the credentials of that person on any ticket or roster.
    pub person: Option<String>,
    /// The events reconciliation attributed to this ticket (its people's passages during
    /// the stays under it) and the evidence of its findings.
    pub ticket: Option<String>,
    pub reader: Option<String>,
    pub credential: Option<String>,
    /// Device time at or after this.
    pub from: Option<DateTime<Utc>>,
    /// Device time before this.
    pub until: Option<DateTime<Utc>>,
    pub limit: Option<usize>,
}

/// A query over findings. Every given field must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FindingFilter {
    pub site: Option<String>,
    pub room: Option<String>,
    /// A credential, an identity number, a staff id or a name.
    pub person: Option<String>,
    pub ticket: Option<String>,
    pub rule: Option<Rule>,
    /// Finding time at or after this.
    pub from: Option<DateTime<Utc>>,
    /// Finding time before this.
    pub until: Option<DateTime<Utc>>,
    /// Only reviewed (`true`) or unreviewed (`false`) findings.
    pub reviewed: Option<bool>,
    pub limit: Option<usize>,
}

/// What retention removed ([`Ingest::apply_retention`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionSummary {
    /// The access log cut-off (events, findings, chain segments older than it went).
    pub access_cutoff: Option<DateTime<Utc>>,
    /// The visitor log cut-off (tickets whose window ended before it went).
    pub visitor_cutoff: Option<DateTime<Utc>>,
    pub events: usize,
    pub findings: usize,
    pub reviews: usize,
    pub tickets: usize,
    pub reports: usize,
    /// Sealed chain segments removed.
    pub segments: usize,
    /// The segment sealed by the monthly rotation, if one was.
    pub rotated: Option<std::path::PathBuf>,
}

fn check_period(
    from: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Result<(), ServiceError> {
    if let (Some(from), Some(until)) = (from, until)
        && from >= until
    {
        return Err(ServiceError::input(
            "until",
            format!("found {until} not after from {from}; expected until after from"),
        ));
    }
    Ok(())
}

impl Ingest {
    fn site_or_err(&self, site: &str) -> Result<&crate::config::model::Site, ServiceError> {
        self.inner
            .sites
            .get(site)
            .ok_or_else(|| ServiceError::UnknownSite {
                found: site.to_owned(),
                expected: self
                    .inner
                    .sites
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Records a prepared revision: stored (synchronous FULL) and chained under the chain's
    /// lock, then applied to the live book. The book is re-checked under the lock so two
    /// concurrent calls cannot record the same revision number.
    fn record_revision(
        &self,
        id: &str,
        actor: &str,
        prepare: impl Fn(&TicketBook) -> Result<Prepared, TicketBookError>,
    ) -> Result<VisitOutcome, ServiceError> {
        let mut audit = self.appender()?;
        let prepared = {
            let live = lock(&self.inner.live);
            prepare(&live.tickets)?
        };
        let revision: TicketRevision = match prepared {
            Prepared::Unchanged => {
                let live = lock(&self.inner.live);
                let ticket = live
                    .tickets
                    .get(id)
                    .cloned()
                    .ok_or_else(|| ServiceError::TicketNotFound(id.to_owned()))?;
                return Ok(VisitOutcome {
                    ticket,
                    changed: false,
                });
            }
            Prepared::Record(revision) => *revision,
        };
        self.inner.store.insert_ticket_revision(&revision, actor)?;
        self.chain(
            &mut audit,
            vec![(
                Mark::Revision(revision.snapshot.id.clone(), revision.number),
                revision_record(&revision, actor),
            )],
        )?;
        let ticket = lock(&self.inner.live)
            .tickets
            .apply(revision.clone())
            .clone();
        drop(audit);
        tracing::info!(
            ticket = %ticket.id,
            site = %ticket.site,
            change = ?revision.change,
            revision = revision.number,
            actor,
            "Visit ticket recorded."
        );
        Ok(VisitOutcome {
            ticket,
            changed: true,
        })
    }

    /// Creates an approved visit ticket. Validated against its site (Smart DC destination
    /// rooms, a PIC for every third party, window end after start, identities and
    /// credentials present; every problem listed). A re-sent create with the same content
    /// returns the ticket unchanged. `actor` is who sent it (the API principal). Stored,
    /// chained and live for reconciliation when it returns. Blocking.
    pub fn create_visit(
        &self,
        input: VisitInput,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<VisitOutcome, ServiceError> {
        let site = self.site_or_err(&input.site)?.clone();
        let id = input.id.clone();
        let ticket = input.into_ticket();
        self.record_revision(&id, actor, |book| {
            book.prepare_create(ticket.clone(), &site, now)
        })
    }

    /// Replaces the content of an approved ticket (new revision; history kept). The same
    /// content again changes nothing. The site cannot change. Blocking.
    pub fn update_visit(
        &self,
        input: VisitInput,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<VisitOutcome, ServiceError> {
        let current_site = {
            let live = lock(&self.inner.live);
            live.tickets
                .get(&input.id)
                .map(|t| t.site.clone())
                .ok_or_else(|| ServiceError::TicketNotFound(input.id.clone()))?
        };
        // Validated against the ticket's own site: a different `site` is reported.
        let site = self.site_or_err(&current_site)?.clone();
        let id = input.id.clone();
        let ticket = input.into_ticket();
        self.record_revision(&id, actor, |book| {
            book.prepare_update(ticket.clone(), &site, now)
        })
    }

    /// Cancels an approved ticket (a cancelled one: unchanged; a closed one: 409). Blocking.
    pub fn cancel_visit(
        &self,
        id: &str,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<VisitOutcome, ServiceError> {
        self.record_revision(id, actor, |book| book.prepare_cancel(id, now))
    }

    /// Closes an approved ticket after the visit (a closed one: unchanged; a cancelled one:
    /// 409). Blocking.
    pub fn close_visit(
        &self,
        id: &str,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<VisitOutcome, ServiceError> {
        self.record_revision(id, actor, |book| book.prepare_close(id, now))
    }

    /// A ticket with its whole history.
    pub fn visit(&self, id: &str) -> Result<VisitTicket, ServiceError> {
        lock(&self.inner.live)
            .tickets
            .get(id)
            .cloned()
            .ok_or_else(|| ServiceError::TicketNotFound(id.to_owned()))
    }

    /// Tickets matching `filter`, by window start then id.
    pub fn visits(&self, filter: &VisitFilter) -> Result<Vec<VisitTicket>, ServiceError> {
        if let Some(site) = &filter.site {
            self.site_or_err(site)?;
        }
        check_period(filter.from, filter.until)?;
        let credentials = filter.person.as_deref().map(|p| self.resolve_person(p).0);
        let live = lock(&self.inner.live);
        let mut out: Vec<VisitTicket> = live
            .tickets
            .iter()
            .filter(|t| filter.site.as_ref().is_none_or(|s| &t.site == s))
            .filter(|t| filter.state.is_none_or(|s| t.state == s))
            .filter(|t| filter.from.is_none_or(|f| t.window_end > f))
            .filter(|t| filter.until.is_none_or(|u| t.window_start < u))
            .filter(|t| {
                credentials
                    .as_ref()
                    .is_none_or(|cs| t.all_credentials().any(|c| cs.contains(c)))
            })
            .cloned()
            .collect();
        out.sort_by(|a, b| (a.window_start, &a.id).cmp(&(b.window_start, &b.id)));
        Ok(out)
    }

    /// `POST /api/v1/access/events`: a JSON batch (`access::import`) of other reader systems,
    /// validated whole (400 and nothing stored on any problem), stored and chained before it
    /// returns (the same durable path as `/iclock`), idempotent on a re-sent batch, and
    /// handed to the live reconcilers. Blocking.
    pub fn ingest_json_batch(
        &self,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<BatchReceipt, ServiceError> {
        let (site, events) = parse_json_batch_with_site(body, now)?;
        if let Some(site) = &site {
            self.site_or_err(site)?;
        }
        let by_site = self
            .route(&events, site.as_deref())
            .map_err(ServiceError::UnknownReaders)?;
        let mut new = 0;
        for (site, batch) in by_site {
            let stored = match self.persist(&site, &batch) {
                Ok(stored) => stored,
                Err(error) => {
                    self.count_persist_failure();
                    tracing::error!(%error, "Cannot persist a JSON access batch; the sender gets 503.");
                    return Err(error.into());
                }
            };
            new += stored.len();
            self.count_batch(batch.len(), stored.len());
            self.push_live(&site, stored);
        }
        Ok(BatchReceipt {
            received: events.len(),
            new,
        })
    }

    /// The credentials and names a person query means: the string itself as a credential,
    /// plus the credentials and names of every roster entry (staff id or name) and ticket
    /// holder (identity number or name) it matches, case-insensitively for names.
    fn resolve_person(&self, person: &str) -> (BTreeSet<String>, BTreeSet<String>) {
        let mut credentials = BTreeSet::from([person.to_owned()]);
        let mut names = BTreeSet::new();
        let same = |a: &str| a.eq_ignore_ascii_case(person.trim());
        for site in self.inner.sites.values() {
            for s in &site.access.staff {
                if s.id == person || same(&s.name) || s.credentials.iter().any(|c| c == person) {
                    credentials.extend(s.credentials.iter().cloned());
                    names.insert(s.name.clone());
                }
            }
        }
        let live = lock(&self.inner.live);
        for t in live.tickets.iter() {
            for version in t
                .history
                .iter()
                .map(|r| &r.snapshot)
                .chain(std::iter::once(t))
            {
                let holders = std::iter::once((
                    &version.pic.name,
                    &version.pic.identity_number,
                    &version.pic.credentials,
                ))
                .chain(
                    version
                        .visitors
                        .iter()
                        .map(|v| (&v.name, &v.identity_number, &v.credentials)),
                );
                for (name, identity, creds) in holders {
                    if identity == person || same(name) || creds.iter().any(|c| c == person) {
                        credentials.extend(creds.iter().cloned());
                        names.insert(name.clone());
                    }
                }
            }
        }
        (credentials, names)
    }

    /// The readers of `room` (at `site`, or at every site with that room).
    fn readers_of_room(&self, site: Option<&str>, room: &str) -> Result<Vec<String>, ServiceError> {
        let sites: Vec<&crate::config::model::Site> = match site {
            Some(s) => vec![self.site_or_err(s)?],
            None => self.inner.sites.values().collect(),
        };
        if !sites.iter().any(|s| s.rooms.iter().any(|r| r.id == room)) {
            return Err(ServiceError::input(
                "room",
                format!(
                    "found {room:?}; expected a room of {}",
                    site.unwrap_or("any site")
                ),
            ));
        }
        Ok(sites
            .iter()
            .flat_map(|s| s.access.readers.iter())
            .filter(|r| r.room == room)
            .map(|r| r.serial.clone())
            .collect())
    }

    /// Replays a site's stored events over `[from, until)` with a trace: the passages as
    /// reconciliation sees them (who, under which ticket). Starts from an empty site.
    fn trace(
        &self,
        site_id: &str,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<Passage>, ServiceError> {
        let site = self.site_or_err(site_id)?.clone();
        let events = self.inner.store.events(&EventQuery {
            site: Some(site_id.to_owned()),
            effective_from: Some(from),
            until: Some(until),
            ..EventQuery::default()
        })?;
        let live = lock(&self.inner.live);
        let mut r = Reconciler::new(&site, self.inner.settings.clone()).with_trace();
        for e in events {
            r.push(e);
        }
        let settle = TimeDelta::from_std(self.inner.settings.settle).unwrap_or(TimeDelta::MAX);
        r.tick(until + settle, &live.tickets);
        Ok(r.take_trace())
    }

    /// The period a ticket's trace covers: from its window start minus the entry grace and
    /// the ticket horizon, to its window end plus one day (or `now`, if earlier).
    fn ticket_period(
        &self,
        ticket: &VisitTicket,
        now: DateTime<Utc>,
    ) -> (DateTime<Utc>, DateTime<Utc>) {
        let site = self.inner.sites.get(&ticket.site);
        let grace = site
            .and_then(|s| TimeDelta::from_std(s.access.entry_grace_before).ok())
            .unwrap_or(TimeDelta::zero());
        let horizon =
            TimeDelta::from_std(self.inner.settings.ticket_horizon).unwrap_or(TimeDelta::zero());
        let from = ticket.window_start - grace - horizon;
        let until = (ticket.window_end + TimeDelta::days(1)).min(now.max(ticket.window_start));
        (from, until.max(from + TimeDelta::seconds(1)))
    }

    /// The access log matching `filter`, by device time then id. Blocking.
    pub fn events(&self, filter: &EventFilter) -> Result<Vec<AccessEvent>, ServiceError> {
        check_period(filter.from, filter.until)?;
        if let Some(site) = &filter.site {
            self.site_or_err(site)?;
        }
        let mut query = EventQuery {
            site: filter.site.clone(),
            reader: filter.reader.clone(),
            credential: filter.credential.clone(),
            from: filter.from,
            until: filter.until,
            ..EventQuery::default()
        };
        if let Some(room) = &filter.room {
            query.readers = self.readers_of_room(filter.site.as_deref(), room)?;
            if query.readers.is_empty() {
                return Ok(Vec::new());
            }
        }
        if let Some(person) = &filter.person {
            query.credentials = self.resolve_person(person).0.into_iter().collect();
        }
        let Some(ticket_id) = &filter.ticket else {
            query.limit = filter.limit;
            return Ok(self.inner.store.events(&query)?);
        };
        let ticket = self.visit(ticket_id)?;
        let (from, until) = self.ticket_period(&ticket, DateTime::<Utc>::MAX_UTC);
        let mut ids: BTreeSet<std::sync::Arc<str>> = self
            .trace(&ticket.site, from, until)?
            .into_iter()
            .filter(|p| p.ticket.as_deref() == Some(ticket_id.as_str()))
            .map(|p| p.event)
            .collect();
        for f in self.inner.store.findings(&FindingQuery {
            ticket: Some(ticket_id.clone()),
            ..FindingQuery::default()
        })? {
            ids.extend(f.finding.evidence.iter().cloned());
        }
        let mut out: Vec<AccessEvent> = self
            .inner
            .store
            .events(&query)?
            .into_iter()
            .filter(|e| ids.contains(&e.id))
            .collect();
        if let Some(limit) = filter.limit {
            out.truncate(limit);
        }
        Ok(out)
    }

    /// Writes the access log matching `filter` as CSV (the import format, spreadsheet-safe
    /// cells). Returns the rows written. Blocking.
    pub fn export_events_csv(
        &self,
        filter: &EventFilter,
        out: impl Write,
    ) -> Result<usize, ServiceError> {
        let events = self.events(filter)?;
        super::import::write_csv(out, &events)
            .map_err(|e| ServiceError::Storage(format!("cannot write the CSV: {e}")))?;
        Ok(events.len())
    }

    /// Findings matching `filter`, by time then id, each with its reviews. Blocking.
    pub fn findings(&self, filter: &FindingFilter) -> Result<Vec<StoredFinding>, ServiceError> {
        check_period(filter.from, filter.until)?;
        if let Some(site) = &filter.site {
            self.site_or_err(site)?;
        }
        let (credentials, people) = match &filter.person {
            Some(p) => {
                let (c, n) = self.resolve_person(p);
                (c.into_iter().collect(), n.into_iter().collect())
            }
            None => (Vec::new(), Vec::new()),
        };
        Ok(self.inner.store.findings(&FindingQuery {
            site: filter.site.clone(),
            rule: filter.rule,
            ticket: filter.ticket.clone(),
            room: filter.room.clone(),
            credentials,
            people,
            from: filter.from,
            until: filter.until,
            reviewed: filter.reviewed,
            after_id: None,
            limit: filter.limit,
        })?)
    }

    /// One finding with its reviews.
    pub fn finding(&self, id: i64) -> Result<StoredFinding, ServiceError> {
        self.inner
            .store
            .finding(id)?
            .ok_or(ServiceError::FindingNotFound(id))
    }

    /// Writes findings matching `filter` as CSV (spreadsheet-safe cells). Blocking.
    pub fn export_findings_csv(
        &self,
        filter: &FindingFilter,
        out: impl Write,
    ) -> Result<usize, ServiceError> {
        let findings = self.findings(filter)?;
        super::import::write_findings_csv(out, &findings)
            .map_err(|e| ServiceError::Storage(format!("cannot write the CSV: {e}")))?;
        Ok(findings.len())
    }

    /// Marks a finding reviewed by `reviewer` with a note. The review is a new record
    /// (stored, chained); the finding itself never changes. The same reviewer and note again
    /// returns the stored review and `false`. Blocking.
    pub fn review_finding(
        &self,
        id: i64,
        reviewer: &str,
        note: &str,
        now: DateTime<Utc>,
    ) -> Result<(Review, bool), ServiceError> {
        let reviewer = reviewer.trim();
        let note = note.trim();
        if reviewer.is_empty() {
            return Err(ServiceError::input(
                "reviewer",
                "found nothing; expected who reviewed the finding",
            ));
        }
        if note.is_empty() {
            return Err(ServiceError::input(
                "note",
                "found nothing; expected what was found out or done",
            ));
        }
        if note.chars().count() > MAX_NOTE_LEN {
            return Err(ServiceError::input(
                "note",
                format!(
                    "found {} characters; expected at most {MAX_NOTE_LEN}",
                    note.chars().count()
                ),
            ));
        }
        let mut audit = self.appender()?;
        let (review, new) = self
            .inner
            .store
            .insert_review(id, reviewer, note, now)?
            .ok_or(ServiceError::FindingNotFound(id))?;
        if new {
            self.chain(
                &mut audit,
                vec![(Mark::Review(review.id), review_record(&review))],
            )?;
            tracing::info!(finding_id = id, reviewer, "Access finding reviewed.");
        }
        Ok((review, new))
    }

    /// Who is inside `site` now (as of the live watermark, `settle` behind real time).
    /// Read-only; for the API and life-safety incidents.
    pub fn occupancy(&self, site: &str) -> Result<Vec<Occupant>, ServiceError> {
        self.site_or_err(site)?;
        let live = lock(&self.inner.live);
        Ok(live
            .reconcilers
            .get(site)
            .map(|r| r.occupancy().inside().cloned().collect())
            .unwrap_or_default())
    }

    /// The people whose current room is `room` at `site` (a VESDA Fire 1/2 or gas
    /// discharge lists them). Read-only; an unknown room is empty.
    pub fn people_in_room(&self, site: &str, room: &str) -> Result<Vec<Occupant>, ServiceError> {
        self.site_or_err(site)?;
        let live = lock(&self.inner.live);
        Ok(live
            .reconcilers
            .get(site)
            .map(|r| r.occupancy().in_room(room).into_iter().cloned().collect())
            .unwrap_or_default())
    }

    /// The visit report of a ticket as of `now` (computed from the stored events and
    /// findings; nothing stored). `dcguard access visit-report TICKET`. Blocking.
    pub fn visit_report(
        &self,
        ticket: &str,
        now: DateTime<Utc>,
    ) -> Result<VisitReport, ServiceError> {
        let ticket = self.visit(ticket)?;
        let site = self.site_or_err(&ticket.site)?;
        let gap = site.access.escort_max_gap;
        let (from, until) = self.ticket_period(&ticket, now);
        let passages = self.trace(&ticket.site, from, until)?;
        let findings = self.inner.store.findings(&FindingQuery {
            ticket: Some(ticket.id.clone()),
            ..FindingQuery::default()
        })?;
        Ok(report::build(&ticket, &passages, &findings, gap, now))
    }

    /// The stored (scheduled) report of a ticket with its delivery status, if produced.
    pub fn stored_report(
        &self,
        ticket: &str,
    ) -> Result<Option<StoredReport<VisitReport>>, ServiceError> {
        Ok(self.inner.store.report(ticket)?)
    }

    /// Produces the reports that are due at `now` ([`report::due_at`]: the working day
    /// after the visit) for approved or closed tickets without one, at most 50 per call:
    /// each is stored, chained, queued for the ticketing webhook when it is enabled, and
    /// announced, and its ticket closed (actor [`CLOSER`]). Returns the tickets reported.
    /// Blocking.
    pub fn produce_due_reports(&self, now: DateTime<Utc>) -> Result<Vec<String>, ServiceError> {
        let due: Vec<String> = {
            let live = lock(&self.inner.live);
            let reported = lock(&self.inner.reported);
            live.tickets
                .iter()
                .filter(|t| t.state != TicketState::Cancelled && !reported.contains(&t.id))
                .filter(|t| {
                    report::due_at(t.window_end, &self.inner.calendar)
                        .is_some_and(|due| due <= now && now - due <= REPORT_BACKLOG)
                })
                .map(|t| t.id.clone())
                .take(REPORTS_PER_PASS)
                .collect()
        };
        let mut done = Vec::new();
        for id in due {
            let report = self.visit_report(&id, now)?;
            let json = serde_json::to_value(&report)
                .map_err(|e| ServiceError::Storage(format!("cannot encode report: {e}")))?;
            {
                let mut audit = self.appender()?;
                let new = self.inner.store.insert_report(
                    &id,
                    &report.site,
                    report.window_end,
                    now,
                    &report,
                    self.inner.deliver_reports,
                )?;
                if new {
                    self.chain(
                        &mut audit,
                        vec![(Mark::Report(id.clone()), report_record(&id, now, json))],
                    )?;
                }
            }
            lock(&self.inner.reported).insert(id.clone());
            self.inner.reports_tx.send_modify(|n| *n += 1);
            tracing::info!(
                ticket = %id,
                people_entered = report.summary.people_entered,
                findings = report.summary.findings,
                "Visit report produced."
            );
            // ITSM.3: the ticket closes one working day after the activity, with its
            // report. A badge under it afterwards is `ticket_not_active`.
            if let Err(error) = self.close_visit(&id, CLOSER, now) {
                tracing::error!(ticket = %id, %error, "Visit ticket not closed after its report.");
            }
            done.push(id);
        }
        Ok(done)
    }

    /// Retention at `now` (`[access]` of `dcguard.toml`): rotates the audit chain when its
    /// segment was started in an earlier month (UTC), removes sealed segments whose newest
    /// record is older than the access-log cut-off (a `segment_pruned` record each, so the
    /// chain still verifies), deletes events, findings and reviews older than it, and
    /// tickets (with history and report) whose window ended before the visitor-log
    /// cut-off. Blocking.
    pub fn apply_retention(&self, now: DateTime<Utc>) -> Result<RetentionSummary, ServiceError> {
        let a = &self.inner.access;
        let access_cutoff = now.checked_sub_months(Months::new(a.access_log_retention_months));
        let visitor_cutoff = now.checked_sub_months(Months::new(a.visitor_log_retention_months));
        let mut summary = RetentionSummary {
            access_cutoff,
            visitor_cutoff,
            ..RetentionSummary::default()
        };
        {
            let mut audit = self.appender()?;
            let started = audit.segment_started_at().map_err(IngestError::from)?;
            let month = |t: DateTime<Utc>| t.format("%Y-%m").to_string();
            if started.is_some_and(|s| month(s) < month(now)) {
                summary.rotated = audit.rotate(now).map_err(IngestError::from)?;
                if let Some(sealed) = &summary.rotated {
                    tracing::info!(sealed = %sealed.display(), "Audit chain segment sealed (monthly rotation).");
                }
            }
            if let Some(cutoff) = access_cutoff {
                let pruned = audit.prune_sealed(cutoff, now).map_err(IngestError::from)?;
                for p in &pruned {
                    tracing::info!(segment = %p.segment, last_seq = p.last_seq, cutoff = %cutoff, "Audit chain segment removed by retention.");
                }
                summary.segments = pruned.len();
            }
        }
        let (Some(access_cutoff), Some(visitor_cutoff)) = (access_cutoff, visitor_cutoff) else {
            return Ok(summary);
        };
        let pruned = self.inner.store.prune(access_cutoff, visitor_cutoff)?;
        summary.events = pruned.events;
        summary.findings = pruned.findings;
        summary.reviews = pruned.reviews;
        summary.tickets = pruned.tickets.len();
        summary.reports = pruned.reports;
        if !pruned.tickets.is_empty() {
            let mut live = lock(&self.inner.live);
            let mut reported = lock(&self.inner.reported);
            for t in &pruned.tickets {
                live.tickets.remove(t);
                reported.remove(t);
            }
        }
        if pruned.events + pruned.findings + pruned.tickets.len() > 0 {
            tracing::info!(
                events = pruned.events,
                findings = pruned.findings,
                reviews = pruned.reviews,
                tickets = pruned.tickets.len(),
                "Access log retention applied."
            );
        }
        Ok(summary)
    }
}
