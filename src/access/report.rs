//! Visit reports (ITSM.3): per ticket, each person's entries and exits, time inside, escort
//! pairing and findings, produced the working day after the visit and handed to the
//! ticketing system as an update for the ticket's closure.
//!
//! * [`build`] is pure: the ticket, the passages of a reconciliation trace
//!   ([`crate::access::reconcile::Reconciler::with_trace`]) and the ticket's findings in, a
//!   [`VisitReport`] out.
//! * [`due_at`] is when a report is due: the start of the first working day (the
//!   `[calendar]` of `dcguard.toml`: working days, holidays, working hours) after the local
//!   date of the window's end.
//! * [`ReportSender`] delivers stored reports to the ticketing webhook as `dcguard.visit.report`
//!   CloudEvents (`ticketing::visit_report`) from the store's report queue: retried with
//!   backoff on timeouts, connection errors, 408, 429 and 5xx, parked on any other answer or
//!   when older than `retry_horizon_h`; kept until acknowledged.

use std::time::Duration;

use chrono::{DateTime, Days, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::event::Direction;
use super::ingest::Ingest;
use super::reconcile::{Passage, PassageKind, Rule, Severity};
use super::service::ServiceError;
use super::ticket::{TicketRole, TicketState, VisitTicket, VisitorKind};
use crate::config::model::{Calendar, Dispatch, Webhook};
use crate::store::access::{ReportAttempt, StoredFinding};
use crate::ticketing::SendError;

/// The visit report of one ticket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisitReport {
    pub ticket: String,
    pub site: String,
    /// The ticket's state when the report was made.
    pub state: TicketState,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    /// Destination rooms on the ticket.
    pub rooms: Vec<String>,
    pub activity_plan: String,
    pub approver: String,
    /// When the report was made; stays still open then have no exit.
    pub produced_at: DateTime<Utc>,
    /// The PIC first, then the visitors in ticket order.
    pub people: Vec<PersonReport>,
    /// The ticket's findings, by time.
    pub findings: Vec<ReportFinding>,
    pub summary: ReportSummary,
}

/// One person of the ticket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonReport {
    pub name: String,
    pub identity_number: String,
    pub organisation: String,
    pub role: TicketRole,
    /// For a third party: the name of the PIC who escorts them.
    pub escorted_by: Option<String>,
    /// Stays in the site under this ticket, in order.
    pub stays: Vec<Stay>,
    /// Seconds inside the site over the stays that ended.
    pub time_inside_secs: i64,
    /// For a third party: each entry through a door and who escorted it.
    pub escort: Vec<EscortPairing>,
}

/// One stay in the site: from a site entry to the site exit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stay {
    pub entered_at: DateTime<Utc>,
    /// `None`: still inside (or no exit badged) when the report was made.
    pub left_at: Option<DateTime<Utc>>,
    /// Rooms entered, in order, with entry and exit times.
    pub rooms: Vec<RoomVisit>,
}

/// A room entered during a stay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomVisit {
    pub room: String,
    pub entered_at: DateTime<Utc>,
    pub left_at: Option<DateTime<Utc>>,
}

/// A third party's entry through a reader and its escort.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EscortPairing {
    pub room: String,
    pub reader: String,
    pub at: DateTime<Utc>,
    /// The PIC's passage at the same reader within the escort gap, if any.
    pub pic_at: Option<DateTime<Utc>>,
    /// `pic_at - at` in seconds (negative: the PIC passed first).
    pub pic_offset_secs: Option<i64>,
}

/// A finding as the report lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportFinding {
    /// Id in the daemon's store.
    pub id: i64,
    pub rule: Rule,
    pub severity: Severity,
    pub at: DateTime<Utc>,
    pub person: Option<String>,
    pub room: Option<String>,
    pub summary: String,
    /// Reviewed by security (with the last reviewer's note).
    pub reviewed_by: Option<String>,
    pub review_note: Option<String>,
}

/// Totals of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportSummary {
    /// People listed on the ticket (PIC included).
    pub people_listed: usize,
    /// People who entered the site under it.
    pub people_entered: usize,
    /// Third-party door entries without their PIC within the escort gap.
    pub unescorted_entries: usize,
    /// Stays without an exit when the report was made.
    pub open_stays: usize,
    pub findings: usize,
    /// Findings not reviewed yet.
    pub findings_unreviewed: usize,
}

/// Builds the report of `ticket` from the passages of a trace covering the visit (all of the
/// site's passages: the escort pairing looks at the PIC's passages even under another
/// ticket) and the ticket's findings. `escort_gap` is the site's PIC gap. Pure.
pub fn build(
    ticket: &VisitTicket,
    passages: &[Passage],
    findings: &[StoredFinding],
    escort_gap: Duration,
    produced_at: DateTime<Utc>,
) -> VisitReport {
    let gap = chrono::TimeDelta::from_std(escort_gap).unwrap_or(chrono::TimeDelta::MAX);
    let mine: Vec<&Passage> = passages
        .iter()
        .filter(|p| p.ticket.as_deref() == Some(ticket.id.as_str()))
        .collect();
    struct Listed<'a> {
        name: &'a str,
        identity: &'a str,
        organisation: &'a str,
        role: TicketRole,
        credentials: &'a [String],
        pic: Option<&'a str>,
    }
    let mut listed = vec![Listed {
        name: &ticket.pic.name,
        identity: &ticket.pic.identity_number,
        organisation: &ticket.pic.organisation,
        role: TicketRole::Pic,
        credentials: &ticket.pic.credentials,
        pic: None,
    }];
    listed.extend(ticket.visitors.iter().map(|v| Listed {
        name: &v.name,
        identity: &v.identity_number,
        organisation: &v.organisation,
        role: match v.kind {
            VisitorKind::Employee => TicketRole::Employee,
            VisitorKind::ThirdParty => TicketRole::ThirdParty,
        },
        credentials: &v.credentials,
        pic: v.pic.as_deref(),
    }));
    let name_of = |identity: &str| -> Option<String> {
        listed
            .iter()
            .find(|l| l.identity == identity)
            .map(|l| l.name.to_owned())
    };

    let mut people = Vec::new();
    let mut unescorted_entries = 0;
    let mut open_stays = 0;
    for l in &listed {
        let own: Vec<&&Passage> = mine
            .iter()
            .filter(|p| l.credentials.iter().any(|c| **c == *p.credential))
            .collect();
        let mut stays: Vec<Stay> = Vec::new();
        for p in &own {
            match p.kind {
                PassageKind::SiteEntry => stays.push(Stay {
                    entered_at: p.at,
                    left_at: None,
                    rooms: vec![RoomVisit {
                        room: p.room.clone(),
                        entered_at: p.at,
                        left_at: None,
                    }],
                }),
                PassageKind::RoomEntry => {
                    if let Some(stay) = stays.last_mut() {
                        stay.rooms.push(RoomVisit {
                            room: p.room.clone(),
                            entered_at: p.at,
                            left_at: None,
                        });
                    }
                }
                PassageKind::RoomExit | PassageKind::SiteExit => {
                    if let Some(stay) = stays.last_mut() {
                        // Leaving a room also leaves the rooms entered from it.
                        let mut leaving = false;
                        for visit in &mut stay.rooms {
                            leaving |= visit.room == p.room;
                            if leaving && visit.left_at.is_none() {
                                visit.left_at = Some(p.at);
                            }
                        }
                        if p.kind == PassageKind::SiteExit {
                            stay.left_at = Some(p.at);
                        }
                    }
                }
                PassageKind::Refused => {}
            }
        }
        let time_inside_secs = stays
            .iter()
            .filter_map(|s| s.left_at.map(|l| (l - s.entered_at).num_seconds()))
            .sum();
        open_stays += stays.iter().filter(|s| s.left_at.is_none()).count();
        let mut escort = Vec::new();
        if l.role == TicketRole::ThirdParty {
            let pic_credentials: &[String] = l.pic.map_or(&[], |pic| ticket.credentials_of(pic));
            for p in own.iter().filter(|p| {
                matches!(p.kind, PassageKind::SiteEntry | PassageKind::RoomEntry)
                    && p.direction == Direction::Entry
            }) {
                let pic_pass = passages
                    .iter()
                    .filter(|q| {
                        q.reader == p.reader
                            && pic_credentials.iter().any(|c| **c == *q.credential)
                            && (q.at - p.at).abs() <= gap
                    })
                    .min_by_key(|q| (q.at - p.at).abs());
                if pic_pass.is_none() {
                    unescorted_entries += 1;
                }
                escort.push(EscortPairing {
                    room: p.room.clone(),
                    reader: p.reader.to_string(),
                    at: p.at,
                    pic_at: pic_pass.map(|q| q.at),
                    pic_offset_secs: pic_pass.map(|q| (q.at - p.at).num_seconds()),
                });
            }
        }
        people.push(PersonReport {
            name: l.name.to_owned(),
            identity_number: l.identity.to_owned(),
            organisation: l.organisation.to_owned(),
            role: l.role,
            escorted_by: l.pic.and_then(name_of),
            stays,
            time_inside_secs,
            escort,
        });
    }
    let mut listed_findings: Vec<ReportFinding> = findings
        .iter()
        .map(|s| {
            let last = s.reviews.last();
            ReportFinding {
                id: s.id,
                rule: s.finding.rule,
                severity: s.finding.severity,
                at: s.finding.at,
                person: s.finding.person.clone(),
                room: s.finding.room.clone(),
                summary: s.finding.summary.clone(),
                reviewed_by: last.map(|r| r.reviewer.clone()),
                review_note: last.map(|r| r.note.clone()),
            }
        })
        .collect();
    listed_findings.sort_by_key(|f| (f.at, f.id));
    let summary = ReportSummary {
        people_listed: people.len(),
        people_entered: people.iter().filter(|p| !p.stays.is_empty()).count(),
        unescorted_entries,
        open_stays,
        findings: listed_findings.len(),
        findings_unreviewed: listed_findings
            .iter()
            .filter(|f| f.reviewed_by.is_none())
            .count(),
    };
    VisitReport {
        ticket: ticket.id.clone(),
        site: ticket.site.clone(),
        state: ticket.state,
        window_start: ticket.window_start,
        window_end: ticket.window_end,
        rooms: ticket.rooms.clone(),
        activity_plan: ticket.activity_plan.clone(),
        approver: ticket.approver.clone(),
        produced_at,
        people,
        findings: listed_findings,
        summary,
    }
}

/// When the report of a visit ending at `window_end` is due: the start of working hours on
/// the first working day after the window's last local day (weekends and holidays of the
/// calendar skipped). Searches at most a year ahead (a calendar without working days never
/// makes a report due).
pub fn due_at(window_end: DateTime<Utc>, calendar: &Calendar) -> Option<DateTime<Utc>> {
    let local_day: NaiveDate = window_end.with_timezone(&calendar.time_zone).date_naive();
    let mut day = local_day;
    for _ in 0..366 {
        day = day.checked_add_days(Days::new(1))?;
        if calendar.is_working_day(day) {
            let start = day.and_time(calendar.working_hours_start);
            return calendar
                .time_zone
                .from_local_datetime(&start)
                .earliest()
                .map(|t| t.with_timezone(&Utc));
        }
    }
    None
}

/// Delivers stored visit reports to the ticketing webhook.
#[derive(Clone)]
pub struct ReportSender {
    client: reqwest::Client,
    url: String,
    key: Vec<u8>,
    retry_min: Duration,
    retry_max: Duration,
    retry_horizon: Duration,
}

impl std::fmt::Debug for ReportSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("ReportSender")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl ReportSender {
    /// A sender posting to `url`, signing with `key`.
    pub fn new(url: impl Into<String>, key: impl Into<Vec<u8>>, dispatch: &Dispatch) -> Self {
        Self {
            client: crate::ticketing::http_client(dispatch.request_timeout),
            url: url.into(),
            key: key.into(),
            retry_min: dispatch.retry_min,
            retry_max: dispatch.retry_max,
            retry_horizon: dispatch.retry_horizon,
        }
    }

    /// From `[ticketing.webhook]` and `[ticketing.dispatch]`: reads the signing key now.
    pub fn from_config(
        webhook: &Webhook,
        dispatch: &Dispatch,
    ) -> Result<Self, crate::ticketing::webhook::SecretError> {
        let key = match &webhook.hmac_secret {
            Some(r) => crate::ticketing::webhook::read_secret(r)?,
            None => {
                return Err(crate::ticketing::webhook::SecretError::Empty(
                    "ticketing.webhook".to_owned(),
                ));
            }
        };
        Ok(Self::new(webhook.url.clone(), key, dispatch))
    }

    /// The backoff before attempt `attempts + 1`: doubling from `retry_min` up to
    /// `retry_max`, with up to 20 % jitter.
    fn backoff(&self, attempts: u32) -> Duration {
        let base = self
            .retry_min
            .saturating_mul(1u32.checked_shl(attempts.min(20)).unwrap_or(u32::MAX))
            .min(self.retry_max);
        let jitter = rand::random::<f64>() * 0.2;
        base.mul_f64(1.0 + jitter)
            .min(self.retry_max.max(self.retry_min))
    }

    /// Delivers every report due at `ingest.now()`; returns how many were acknowledged.
    pub async fn deliver_due(&self, ingest: &Ingest) -> Result<usize, ServiceError> {
        let now = ingest.now();
        let store = ingest.store().clone();
        let due =
            tokio::task::spawn_blocking(move || store.reports_due::<serde_json::Value>(now, 16))
                .await
                .map_err(|e| ServiceError::Storage(e.to_string()))?
                .map_err(|e| ServiceError::Storage(e.to_string()))?;
        let mut delivered = 0;
        for report in due {
            let sent = crate::ticketing::visit_report::send(
                &self.client,
                &self.url,
                &self.key,
                &report.ticket_id,
                report.produced_at,
                &report.report,
            )
            .await;
            let now = ingest.now();
            let outcome = match sent {
                Ok(()) => {
                    delivered += 1;
                    tracing::info!(ticket = %report.ticket_id, "Visit report delivered to the ticketing system.");
                    ReportAttempt::Delivered
                }
                Err(SendError::Retryable {
                    reason,
                    retry_after,
                }) => {
                    let age = (now - report.produced_at)
                        .to_std()
                        .unwrap_or(Duration::ZERO);
                    if age > self.retry_horizon {
                        tracing::error!(ticket = %report.ticket_id, error = %reason, "Visit report parked: undelivered past the retry horizon.");
                        ReportAttempt::Parked { error: reason }
                    } else {
                        let wait = retry_after.unwrap_or_else(|| self.backoff(report.attempts));
                        tracing::warn!(ticket = %report.ticket_id, error = %reason, retry_in_secs = wait.as_secs(), "Visit report delivery failed; will retry.");
                        ReportAttempt::Retry {
                            next_at: now
                                + chrono::TimeDelta::from_std(wait)
                                    .unwrap_or(chrono::TimeDelta::MAX),
                            error: reason,
                        }
                    }
                }
                Err(SendError::Rejected { reason, .. }) => {
                    tracing::error!(ticket = %report.ticket_id, error = %reason, "Visit report refused by the ticketing system; parked.");
                    ReportAttempt::Parked { error: reason }
                }
            };
            let store = ingest.store().clone();
            let ticket = report.ticket_id.clone();
            tokio::task::spawn_blocking(move || store.report_attempted(&ticket, outcome, now))
                .await
                .map_err(|e| ServiceError::Storage(e.to_string()))?
                .map_err(|e| ServiceError::Storage(e.to_string()))?;
        }
        Ok(delivered)
    }

    /// Spawns the delivery loop: on each new report and at each due retry (checked at least
    /// every 5 s) until `shutdown`.
    pub fn spawn(self, ingest: Ingest, shutdown: CancellationToken) -> JoinHandle<()> {
        let mut feed = ingest.inner.reports_tx.subscribe();
        tokio::spawn(async move {
            loop {
                if let Err(error) = self.deliver_due(&ingest).await {
                    tracing::error!(%error, "Visit report delivery pass failed.");
                }
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = feed.changed() => {}
                    () = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        })
    }
}
