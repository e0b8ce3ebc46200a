//! Visit tickets (service ITSM.3): the ticket model, its validation against a site, and the
//! ticket book that keeps create / update / cancel / close with every revision. Pure code.
//!
//! The ticket is independent of the HTTP DTO (`POST /api/v1/visits`); the API layer converts
//! its JSON into a [`VisitTicket`] and hands it to the [`TicketBook`] with an explicit time.
//! A person is identified by their identity number: a visitor's `pic` names the identity number
//! of the PIC who escorts them (the ticket's PIC or an employee listed on the ticket).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::model::{RoomKind, Site};

/// Whether a visitor is ministry staff or a third party.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VisitorKind {
    /// Ministry employee.
    Employee,
    /// Anyone who is not ministry staff: must be escorted by the PIC of their unit.
    ThirdParty,
}

/// The person in charge (PIC) of the requesting unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    /// Full name.
    pub name: String,
    /// Identity number (national id, employee number): the person id.
    pub identity_number: String,
    /// Organisation (unit or company).
    pub organisation: String,
    /// PIN / card / biometric ids on the readers; needed when the PIC escorts a third party.
    pub credentials: Vec<String>,
}

/// One person listed on a ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Visitor {
    /// Full name.
    pub name: String,
    /// Identity number: the person id.
    pub identity_number: String,
    /// Organisation (unit or company).
    pub organisation: String,
    /// Employee or third party.
    pub kind: VisitorKind,
    /// PIN / card / biometric ids on the readers.
    pub credentials: Vec<String>,
    /// Identity number of the PIC who escorts this visitor; required for third parties.
    pub pic: Option<String>,
}

/// Lifecycle state of a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketState {
    /// Approved: the visit may take place in its window.
    Approved,
    /// Cancelled before or during the visit.
    Cancelled,
    /// Closed after the visit (one working day after the activity).
    Closed,
}

/// What a revision changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketChange {
    Created,
    Updated,
    Cancelled,
    Closed,
}

/// One revision of a ticket: what changed, when, and the ticket as it was afterwards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TicketRevision {
    /// 1 for the creation, then +1 per change.
    pub number: u32,
    /// When the change was recorded (explicit time).
    pub at: DateTime<Utc>,
    /// The change.
    pub change: TicketChange,
    /// The ticket after the change (its own `history` is empty).
    pub snapshot: VisitTicket,
}

/// A visit ticket from the ticketing system.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisitTicket {
    /// Ticket id in the ticketing system.
    pub id: String,
    /// Site id (`dc`, `smart-dc`, `drc`).
    pub site: String,
    /// Destination room ids (required at the Smart DC).
    pub rooms: Vec<String>,
    /// Start of the activity.
    pub window_start: DateTime<Utc>,
    /// End of the activity.
    pub window_end: DateTime<Utc>,
    /// PIC of the requesting unit.
    pub pic: Person,
    /// Employees and third parties on the visit.
    pub visitors: Vec<Visitor>,
    /// Activity plan.
    pub activity_plan: String,
    /// Who approved the request (the requester's supervisor, at least echelon IV).
    pub approver: String,
    /// Lifecycle state.
    pub state: TicketState,
    /// Revisions, oldest first; filled by the [`TicketBook`].
    #[serde(default)]
    pub history: Vec<TicketRevision>,
}

/// The role a credential plays on a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketRole {
    /// The ticket's PIC.
    Pic,
    /// An employee visitor.
    Employee,
    /// A third-party visitor.
    ThirdParty,
}

/// A person on a ticket found by credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TicketHolder<'a> {
    /// Name.
    pub name: &'a str,
    /// Identity number.
    pub identity_number: &'a str,
    /// Role on the ticket.
    pub role: TicketRole,
    /// For a third party: the identity number of their escorting PIC.
    pub pic: Option<&'a str>,
}

impl VisitTicket {
    /// The person listed with this credential, if any (the PIC first, then the visitors).
    pub fn holder(&self, credential: &str) -> Option<TicketHolder<'_>> {
        if self.pic.credentials.iter().any(|c| c == credential) {
            return Some(TicketHolder {
                name: &self.pic.name,
                identity_number: &self.pic.identity_number,
                role: TicketRole::Pic,
                pic: None,
            });
        }
        self.visitors
            .iter()
            .find(|v| v.credentials.iter().any(|c| c == credential))
            .map(|v| TicketHolder {
                name: &v.name,
                identity_number: &v.identity_number,
                role: match v.kind {
                    VisitorKind::Employee => TicketRole::Employee,
                    VisitorKind::ThirdParty => TicketRole::ThirdParty,
                },
                pic: v.pic.as_deref(),
            })
    }

    /// The credentials of the person with this identity number (the PIC or a visitor).
    pub fn credentials_of(&self, identity_number: &str) -> &[String] {
        if self.pic.identity_number == identity_number {
            return &self.pic.credentials;
        }
        self.visitors
            .iter()
            .find(|v| v.identity_number == identity_number)
            .map_or(&[], |v| &v.credentials)
    }

    /// Every credential on the ticket.
    pub fn all_credentials(&self) -> impl Iterator<Item = &str> {
        self.pic
            .credentials
            .iter()
            .chain(self.visitors.iter().flat_map(|v| v.credentials.iter()))
            .map(String::as_str)
    }

    /// The ticket as it was at `t`: the snapshot of the latest revision recorded at or before
    /// `t`, or `None` when the ticket did not exist yet. A ticket without history (never put
    /// in a book) is taken as it is.
    pub fn as_of(&self, t: DateTime<Utc>) -> Option<&VisitTicket> {
        if self.history.is_empty() {
            return Some(self);
        }
        self.history
            .iter()
            .rev()
            .find(|r| r.at <= t)
            .map(|r| &r.snapshot)
    }

    fn without_history(&self) -> VisitTicket {
        VisitTicket {
            history: Vec::new(),
            ..self.clone()
        }
    }
}

/// A validation problem of a ticket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("ticket id: found an empty id; expected the ticketing system's ticket id")]
    MissingId,
    #[error("site: found {found:?}; expected {expected:?}")]
    WrongSite { found: String, expected: String },
    #[error(
        "rooms: found none; expected at least one destination room (site {site} requires destination rooms)"
    )]
    DestinationRoomRequired { site: String },
    #[error("rooms: found {room:?}; expected a room of site {site}")]
    UnknownRoom { room: String, site: String },
    #[error(
        "window: found end {end} not after start {start}; expected window_end after window_start"
    )]
    WindowNotAfterStart {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
    #[error("{who}: found an empty {field}; expected a name and an identity number")]
    MissingIdentity { who: String, field: &'static str },
    #[error("{who}: found no credentials; expected the PIN / card / biometric id on the readers")]
    MissingCredentials { who: String },
    #[error(
        "{who}: found a third party without a PIC; expected the identity number of the PIC who escorts them"
    )]
    ThirdPartyWithoutPic { who: String },
    #[error(
        "{who}: found PIC {pic:?} not on the ticket; expected the ticket's PIC or an employee listed on it"
    )]
    PicNotOnTicket { who: String, pic: String },
    #[error("{who}: found PIC {pic:?}, a third party; expected the ticket's PIC or an employee")]
    PicIsThirdParty { who: String, pic: String },
    #[error(
        "{who}: found identity number {identity:?} twice on the ticket; expected one entry per person"
    )]
    DuplicateIdentity { who: String, identity: String },
    #[error(
        "credential {credential:?}: found on two people of the ticket; expected one person per credential"
    )]
    DuplicateCredential { credential: String },
}

/// Checks a ticket against its site's configuration; every problem is reported at once.
pub fn validate(ticket: &VisitTicket, site: &Site) -> Result<(), Vec<TicketError>> {
    let mut errors = Vec::new();
    if ticket.id.trim().is_empty() {
        errors.push(TicketError::MissingId);
    }
    if ticket.site != site.id {
        errors.push(TicketError::WrongSite {
            found: ticket.site.clone(),
            expected: site.id.clone(),
        });
    }
    if site.access.destination_room_required && ticket.rooms.is_empty() {
        errors.push(TicketError::DestinationRoomRequired {
            site: site.id.clone(),
        });
    }
    for room in &ticket.rooms {
        if !site.rooms.iter().any(|r| &r.id == room) {
            errors.push(TicketError::UnknownRoom {
                room: room.clone(),
                site: site.id.clone(),
            });
        }
    }
    if ticket.window_end <= ticket.window_start {
        errors.push(TicketError::WindowNotAfterStart {
            start: ticket.window_start,
            end: ticket.window_end,
        });
    }

    let pic_who = format!("pic {:?}", ticket.pic.name);
    identity_errors(
        &pic_who,
        &ticket.pic.name,
        &ticket.pic.identity_number,
        &mut errors,
    );
    let mut identities = BTreeSet::new();
    identities.insert(ticket.pic.identity_number.as_str());
    let mut escorting_pics = BTreeSet::new();
    for (i, v) in ticket.visitors.iter().enumerate() {
        let who = format!("visitors[{i}] {:?}", v.name);
        identity_errors(&who, &v.name, &v.identity_number, &mut errors);
        if !v.identity_number.trim().is_empty() && !identities.insert(v.identity_number.as_str()) {
            errors.push(TicketError::DuplicateIdentity {
                who: who.clone(),
                identity: v.identity_number.clone(),
            });
        }
        if v.credentials.iter().all(|c| c.trim().is_empty()) {
            errors.push(TicketError::MissingCredentials { who: who.clone() });
        }
        if v.kind == VisitorKind::ThirdParty {
            match v.pic.as_deref() {
                None | Some("") => errors.push(TicketError::ThirdPartyWithoutPic { who }),
                Some(pic) if pic == ticket.pic.identity_number => {
                    escorting_pics.insert(pic);
                }
                Some(pic) => match ticket.visitors.iter().find(|o| o.identity_number == pic) {
                    None => errors.push(TicketError::PicNotOnTicket {
                        who,
                        pic: pic.to_string(),
                    }),
                    Some(o) if o.kind == VisitorKind::ThirdParty => {
                        errors.push(TicketError::PicIsThirdParty {
                            who,
                            pic: pic.to_string(),
                        });
                    }
                    Some(_) => {
                        escorting_pics.insert(pic);
                    }
                },
            }
        }
    }
    if escorting_pics.contains(ticket.pic.identity_number.as_str())
        && ticket.pic.credentials.iter().all(|c| c.trim().is_empty())
    {
        errors.push(TicketError::MissingCredentials { who: pic_who });
    }
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    let people = std::iter::once((&ticket.pic.identity_number, &ticket.pic.credentials)).chain(
        ticket
            .visitors
            .iter()
            .map(|v| (&v.identity_number, &v.credentials)),
    );
    for (identity, credentials) in people {
        for c in credentials {
            if let Some(other) = seen.insert(c, identity)
                && other != identity
            {
                errors.push(TicketError::DuplicateCredential {
                    credential: c.clone(),
                });
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn identity_errors(who: &str, name: &str, identity: &str, errors: &mut Vec<TicketError>) {
    if name.trim().is_empty() {
        errors.push(TicketError::MissingIdentity {
            who: who.to_string(),
            field: "name",
        });
    }
    if identity.trim().is_empty() {
        errors.push(TicketError::MissingIdentity {
            who: who.to_string(),
            field: "identity_number",
        });
    }
}

/// True for rooms a visitor passes through on the way to a destination (mantrap, corridor):
/// they are never destination rooms and never `wrong_room`.
pub fn is_passage(kind: RoomKind) -> bool {
    matches!(kind, RoomKind::Mantrap | RoomKind::Corridor)
}

/// Why the ticket book refused a change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TicketBookError {
    #[error("ticket {id}: {}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid {
        id: String,
        errors: Vec<TicketError>,
    },
    #[error("ticket {0}: already exists with other content; expected a new ticket id (use update)")]
    Duplicate(String),
    #[error("ticket {0}: not found")]
    NotFound(String),
    #[error("ticket {id}: is {state:?}; expected an approved ticket")]
    NotActive { id: String, state: TicketState },
}

/// What a change would do to the book ([`TicketBook::prepare_create`] and friends).
#[derive(Debug, Clone, PartialEq)]
pub enum Prepared {
    /// The change is already in the book (a re-sent create, update, cancel or close): nothing
    /// to record.
    Unchanged,
    /// The revision to record with [`TicketBook::apply`].
    Record(Box<TicketRevision>),
}

/// Every ticket with its history, indexed by credential. Pure: times are given by the caller.
///
/// A change is validated and turned into a revision by `prepare_*` without touching the book,
/// so a caller can make the revision durable first and then [`TicketBook::apply`] it; the
/// one-step `create` / `update` / `cancel` / `close` do both.
#[derive(Debug, Clone, Default)]
pub struct TicketBook {
    tickets: BTreeMap<String, VisitTicket>,
    /// Credential -> ids of tickets that listed it in any revision.
    by_credential: BTreeMap<String, BTreeSet<String>>,
}

impl TicketBook {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a new approved ticket after validating it against its site. A re-sent create
    /// with the same content is accepted and changes nothing.
    pub fn create(
        &mut self,
        ticket: VisitTicket,
        site: &Site,
        at: DateTime<Utc>,
    ) -> Result<&VisitTicket, TicketBookError> {
        let id = ticket.id.clone();
        self.prepare_create(ticket, site, at)
            .map(|p| self.apply_prepared(p, &id))
    }

    /// Replaces the content of an approved ticket (rooms, window, people, plan), keeping its
    /// history. The same content again changes nothing.
    pub fn update(
        &mut self,
        ticket: VisitTicket,
        site: &Site,
        at: DateTime<Utc>,
    ) -> Result<&VisitTicket, TicketBookError> {
        let id = ticket.id.clone();
        self.prepare_update(ticket, site, at)
            .map(|p| self.apply_prepared(p, &id))
    }

    /// Cancels an approved ticket (a cancelled one stays as it is).
    pub fn cancel(&mut self, id: &str, at: DateTime<Utc>) -> Result<&VisitTicket, TicketBookError> {
        self.prepare_cancel(id, at)
            .map(|p| self.apply_prepared(p, id))
    }

    /// Closes an approved ticket after the visit (a closed one stays as it is).
    pub fn close(&mut self, id: &str, at: DateTime<Utc>) -> Result<&VisitTicket, TicketBookError> {
        self.prepare_close(id, at)
            .map(|p| self.apply_prepared(p, id))
    }

    fn apply_prepared(&mut self, prepared: Prepared, id: &str) -> &VisitTicket {
        if let Prepared::Record(revision) = prepared {
            self.apply(*revision);
        }
        // Invariant: the ticket existed (Unchanged) or was just recorded.
        &self.tickets[id]
    }

    /// Validates a new ticket: `Record` of its first revision, or `Unchanged` when a ticket
    /// with this id and the same content is already approved (a re-sent create).
    pub fn prepare_create(
        &self,
        ticket: VisitTicket,
        site: &Site,
        at: DateTime<Utc>,
    ) -> Result<Prepared, TicketBookError> {
        if let Some(old) = self.tickets.get(&ticket.id) {
            if old.state == TicketState::Approved && same_content(old, &ticket) {
                return Ok(Prepared::Unchanged);
            }
            return Err(TicketBookError::Duplicate(ticket.id));
        }
        validate(&ticket, site).map_err(|errors| TicketBookError::Invalid {
            id: ticket.id.clone(),
            errors,
        })?;
        Ok(Prepared::Record(Box::new(TicketRevision {
            number: 1,
            at,
            change: TicketChange::Created,
            snapshot: VisitTicket {
                state: TicketState::Approved,
                history: Vec::new(),
                ..ticket
            },
        })))
    }

    /// Validates new content for an approved ticket (`Unchanged` when it is the same).
    pub fn prepare_update(
        &self,
        ticket: VisitTicket,
        site: &Site,
        at: DateTime<Utc>,
    ) -> Result<Prepared, TicketBookError> {
        let old = self.active(&ticket.id)?;
        validate(&ticket, site).map_err(|errors| TicketBookError::Invalid {
            id: ticket.id.clone(),
            errors,
        })?;
        if same_content(old, &ticket) {
            return Ok(Prepared::Unchanged);
        }
        Ok(Prepared::Record(Box::new(Self::next_revision(
            old,
            VisitTicket {
                state: TicketState::Approved,
                history: Vec::new(),
                ..ticket
            },
            TicketChange::Updated,
            at,
        ))))
    }

    /// Cancels an approved ticket (`Unchanged` when it is already cancelled).
    pub fn prepare_cancel(&self, id: &str, at: DateTime<Utc>) -> Result<Prepared, TicketBookError> {
        self.prepare_transition(id, TicketState::Cancelled, TicketChange::Cancelled, at)
    }

    /// Closes an approved ticket (`Unchanged` when it is already closed).
    pub fn prepare_close(&self, id: &str, at: DateTime<Utc>) -> Result<Prepared, TicketBookError> {
        self.prepare_transition(id, TicketState::Closed, TicketChange::Closed, at)
    }

    fn prepare_transition(
        &self,
        id: &str,
        state: TicketState,
        change: TicketChange,
        at: DateTime<Utc>,
    ) -> Result<Prepared, TicketBookError> {
        let current = self
            .tickets
            .get(id)
            .ok_or_else(|| TicketBookError::NotFound(id.to_string()))?;
        if current.state == state {
            return Ok(Prepared::Unchanged);
        }
        let old = self.active(id)?;
        let snapshot = VisitTicket {
            state,
            ..old.without_history()
        };
        Ok(Prepared::Record(Box::new(Self::next_revision(
            old, snapshot, change, at,
        ))))
    }

    /// The revision after `old`: the next number, never earlier than the last revision (a
    /// clock stepping back must not reorder a ticket's history).
    fn next_revision(
        old: &VisitTicket,
        snapshot: VisitTicket,
        change: TicketChange,
        at: DateTime<Utc>,
    ) -> TicketRevision {
        let last = old.history.last();
        TicketRevision {
            number: last.map_or(1, |r| r.number.saturating_add(1)),
            at: last.map_or(at, |r| r.at.max(at)),
            change,
            snapshot,
        }
    }

    /// Records a prepared (or stored) revision: the ticket becomes its snapshot with the
    /// history so far plus this revision. Used to restore the book from the store, in
    /// revision order; a revision already recorded (same number) is ignored.
    pub fn apply(&mut self, revision: TicketRevision) -> &VisitTicket {
        let id = revision.snapshot.id.clone();
        let mut history = self
            .tickets
            .remove(&id)
            .map(|t| t.history)
            .unwrap_or_default();
        if history.iter().all(|r| r.number != revision.number) {
            history.push(revision.clone());
        }
        let mut ticket = history
            .last()
            .map(|r| r.snapshot.clone())
            .unwrap_or_else(|| revision.snapshot.clone());
        ticket.history = history;
        for c in ticket.all_credentials() {
            self.by_credential
                .entry(c.to_string())
                .or_default()
                .insert(id.clone());
        }
        self.tickets.insert(id.clone(), ticket);
        // Invariant: inserted on the line above.
        &self.tickets[&id]
    }

    /// Removes a ticket and its history (retention of the visitor log). Returns it.
    pub fn remove(&mut self, id: &str) -> Option<VisitTicket> {
        let ticket = self.tickets.remove(id)?;
        let credentials: BTreeSet<&str> = ticket
            .history
            .iter()
            .flat_map(|r| r.snapshot.all_credentials())
            .chain(ticket.all_credentials())
            .collect();
        for c in credentials {
            if let Some(ids) = self.by_credential.get_mut(c) {
                ids.remove(id);
                if ids.is_empty() {
                    self.by_credential.remove(c);
                }
            }
        }
        Some(ticket)
    }

    /// The current version of a ticket.
    pub fn get(&self, id: &str) -> Option<&VisitTicket> {
        self.tickets.get(id)
    }

    /// Every ticket, by id.
    pub fn iter(&self) -> impl Iterator<Item = &VisitTicket> {
        self.tickets.values()
    }

    /// Number of tickets.
    pub fn len(&self) -> usize {
        self.tickets.len()
    }

    /// True when the book holds no ticket.
    pub fn is_empty(&self) -> bool {
        self.tickets.is_empty()
    }

    /// True when any ticket (of any site, in any revision) lists this credential.
    pub fn knows_credential(&self, credential: &str) -> bool {
        self.by_credential.contains_key(credential)
    }

    /// Ids of the tickets that listed this credential in any revision.
    pub fn tickets_of_credential(&self, credential: &str) -> impl Iterator<Item = &str> {
        self.by_credential
            .get(credential)
            .into_iter()
            .flatten()
            .map(String::as_str)
    }

    /// The tickets of `site` that listed `credential` at time `t`, as they were at `t`.
    pub fn listing_at<'a, 's>(
        &'a self,
        site: &'s str,
        credential: &'s str,
        t: DateTime<Utc>,
    ) -> impl Iterator<Item = &'a VisitTicket> + use<'a, 's> {
        self.by_credential
            .get(credential)
            .into_iter()
            .flatten()
            .filter_map(move |id| self.tickets.get(id))
            .filter_map(move |ticket| ticket.as_of(t))
            .filter(move |ticket| ticket.site == site && ticket.holder(credential).is_some())
    }

    fn active(&self, id: &str) -> Result<&VisitTicket, TicketBookError> {
        let ticket = self
            .tickets
            .get(id)
            .ok_or_else(|| TicketBookError::NotFound(id.to_string()))?;
        if ticket.state != TicketState::Approved {
            return Err(TicketBookError::NotActive {
                id: id.to_string(),
                state: ticket.state,
            });
        }
        Ok(ticket)
    }
}

/// True when two tickets carry the same content (everything but state and history).
fn same_content(a: &VisitTicket, b: &VisitTicket) -> bool {
    a.id == b.id
        && a.site == b.site
        && a.rooms == b.rooms
        && a.window_start == b.window_start
        && a.window_end == b.window_end
        && a.pic == b.pic
        && a.visitors == b.visitors
        && a.activity_plan == b.activity_plan
        && a.approver == b.approver
}
