//! Occupancy: who is inside a site and in which room, from granted entry / exit passages.
//! Pure state, kept by the reconciler; read by the API and by life-safety incidents (a VESDA
//! Fire 1/2 or gas-discharge alarm in a room lists the people inside that room).
//!
//! Rooms nest along the way in: mantrap, then corridor, then a hall. A person's rooms are a
//! stack, outermost first; entering a room pushes it, leaving it pops it (and any inner room
//! whose exit was not badged). The current room is the innermost one. A person is inside the
//! site while the stack is not empty.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::access::ticket::TicketRole;
use crate::config::model::StaffRole;

/// Who an occupant is, as resolved when they entered the site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "role")]
pub enum OccupantRole {
    /// Site staff on the roster (on shift).
    Staff(#[serde(serialize_with = "staff_role")] StaffRole),
    /// A person listed on a visit ticket.
    Visitor(TicketRole),
    /// Not resolved (no ticket, unknown credential): still counted for life safety.
    Unresolved,
}

impl OccupantRole {
    /// `staff`, `pic`, `employee`, `third_party` or `unresolved`: the API's and the fire
    /// incidents' word for it.
    pub fn as_str(&self) -> &'static str {
        use crate::access::ticket::TicketRole;
        match self {
            OccupantRole::Staff(_) => "staff",
            OccupantRole::Visitor(TicketRole::Pic) => "pic",
            OccupantRole::Visitor(TicketRole::Employee) => "employee",
            OccupantRole::Visitor(TicketRole::ThirdParty) => "third_party",
            OccupantRole::Unresolved => "unresolved",
        }
    }
}

fn staff_role<S: serde::Serializer>(role: &StaffRole, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match role {
        StaffRole::ControlRoom => "control_room",
        StaffRole::TechnicalEscort => "technical_escort",
        StaffRole::Security => "security",
    })
}

/// One person inside a site.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Occupant {
    /// Credential used at the readers.
    pub credential: Arc<str>,
    /// Name (staff name, ticket name) or the credential when unresolved.
    pub person: String,
    /// Staff id or identity number, when resolved.
    pub person_id: Option<String>,
    /// Role.
    pub role: OccupantRole,
    /// Ticket the visit runs under, when any.
    pub ticket: Option<String>,
    /// For a third party: the identity number of the PIC who escorts them.
    pub escorted_by: Option<String>,
    /// Rooms, outermost first; the last is the current room.
    pub rooms: Vec<String>,
    /// Site entry time.
    pub entered_at: DateTime<Utc>,
    /// Site entry event.
    pub entry_event: Arc<str>,
    /// Last granted passage.
    pub last_event: Arc<str>,
    /// Sequence number of this stay in the site (distinguishes re-entries).
    pub stay: u64,
}

impl Occupant {
    /// The room the person is in now.
    pub fn room(&self) -> Option<&str> {
        self.rooms.last().map(String::as_str)
    }
}

/// Result of a granted exit.
#[derive(Debug, Clone, PartialEq)]
pub enum ExitOutcome {
    /// The person was not inside that room (anti-passback).
    NotInside,
    /// Left the room, still inside the site.
    Exited,
    /// Left the room and with it the site.
    LeftSite(Occupant),
}

/// Who is inside one site.
#[derive(Debug, Clone, Default)]
pub struct Occupancy {
    people: BTreeMap<Arc<str>, Occupant>,
    next_stay: u64,
}

impl Occupancy {
    /// Nobody inside.
    pub fn new() -> Self {
        Self::default()
    }

    /// The occupant using this credential, when inside.
    pub fn get(&self, credential: &str) -> Option<&Occupant> {
        self.people.get(credential)
    }

    /// True when the credential's holder is inside the site.
    pub fn is_inside(&self, credential: &str) -> bool {
        self.people.contains_key(credential)
    }

    /// A person enters the site into `occupant.rooms` (usually one room). Returns the stay
    /// number given to them. Replaces any previous record of the credential.
    pub fn arrive(&mut self, mut occupant: Occupant) -> u64 {
        self.next_stay += 1;
        occupant.stay = self.next_stay;
        let stay = occupant.stay;
        self.people.insert(occupant.credential.clone(), occupant);
        stay
    }

    /// A person already inside the site enters `room`. `None`: not inside the site (call
    /// [`Occupancy::arrive`]); `Some(false)`: already inside that room (anti-passback), the
    /// stack is cut back to it; `Some(true)`: entered.
    pub fn enter_room(&mut self, credential: &str, room: &str, event: &Arc<str>) -> Option<bool> {
        let occupant = self.people.get_mut(credential)?;
        occupant.last_event = event.clone();
        if let Some(pos) = occupant.rooms.iter().position(|r| r == room) {
            occupant.rooms.truncate(pos + 1);
            return Some(false);
        }
        occupant.rooms.push(room.to_string());
        Some(true)
    }

    /// A person leaves `room`.
    pub fn exit_room(&mut self, credential: &str, room: &str, event: &Arc<str>) -> ExitOutcome {
        let Some(occupant) = self.people.get_mut(credential) else {
            return ExitOutcome::NotInside;
        };
        let Some(pos) = occupant.rooms.iter().position(|r| r == room) else {
            return ExitOutcome::NotInside;
        };
        occupant.last_event = event.clone();
        occupant.rooms.truncate(pos);
        if occupant.rooms.is_empty() {
            match self.people.remove(credential) {
                Some(gone) => ExitOutcome::LeftSite(gone),
                None => ExitOutcome::Exited,
            }
        } else {
            ExitOutcome::Exited
        }
    }

    /// Everyone inside the site, by credential.
    pub fn inside(&self) -> impl Iterator<Item = &Occupant> {
        self.people.values()
    }

    /// Number of people inside the site.
    pub fn count(&self) -> usize {
        self.people.len()
    }

    /// The people whose current room is `room` (life safety).
    pub fn in_room(&self, room: &str) -> Vec<&Occupant> {
        self.people
            .values()
            .filter(|o| o.room() == Some(room))
            .collect()
    }

    /// People per current room.
    pub fn by_room(&self) -> BTreeMap<&str, Vec<&Occupant>> {
        let mut rooms: BTreeMap<&str, Vec<&Occupant>> = BTreeMap::new();
        for o in self.people.values() {
            if let Some(room) = o.room() {
                rooms.entry(room).or_default().push(o);
            }
        }
        rooms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn occupant(cred: &str, room: &str) -> Occupant {
        Occupant {
            credential: cred.into(),
            person: cred.to_string(),
            person_id: None,
            role: OccupantRole::Unresolved,
            ticket: None,
            escorted_by: None,
            rooms: vec![room.to_string()],
            entered_at: DateTime::<Utc>::UNIX_EPOCH,
            entry_event: "e0".into(),
            last_event: "e0".into(),
            stay: 0,
        }
    }

    #[test]
    fn rooms_nest_and_unwind() {
        let ev: Arc<str> = "e".into();
        let mut occ = Occupancy::new();
        assert_eq!(occ.arrive(occupant("1", "mantrap")), 1);
        assert_eq!(occ.enter_room("1", "corridor", &ev), Some(true));
        assert_eq!(occ.enter_room("1", "dh1", &ev), Some(true));
        assert_eq!(occ.in_room("dh1").len(), 1);
        assert!(occ.in_room("corridor").is_empty());
        assert_eq!(occ.enter_room("1", "dh1", &ev), Some(false));
        assert_eq!(occ.exit_room("1", "dh2", &ev), ExitOutcome::NotInside);
        // Leaving the corridor without badging out of the hall leaves both.
        assert_eq!(occ.exit_room("1", "corridor", &ev), ExitOutcome::Exited);
        assert_eq!(occ.get("1").and_then(Occupant::room), Some("mantrap"));
        assert!(matches!(
            occ.exit_room("1", "mantrap", &ev),
            ExitOutcome::LeftSite(_)
        ));
        assert_eq!(occ.count(), 0);
        assert_eq!(occ.enter_room("1", "dh1", &ev), None);
    }
}
