//! Reconciliation of access events against visit tickets: one test per rule with explicit
//! times on the shipped sites, ticket validation and history, occupancy, ordering and
//! idempotency, and a generated synthetic day per site (recall 1.0, no false positive, batch
//! re-run equal to the live run).

mod common_access;

use std::collections::BTreeSet;

use chrono::{DateTime, TimeDelta, Utc};
use common_access::{Events, Layout, book, local, shipped, site, synthetic_day};
use dcguard::access::event::{AccessEvent, DeviceOp, Direction};
use dcguard::access::reconcile::{Finding, ReconcileSettings, Reconciler, Rule, Severity};
use dcguard::access::ticket::{
    Person, TicketBook, TicketBookError, TicketChange, TicketError, TicketState, VisitTicket,
    Visitor, VisitorKind, validate,
};
use dcguard::config::model::Site;

const ENTRY: Direction = Direction::Entry;
const EXIT: Direction = Direction::Exit;

/// A small scenario on one shipped site: events built by hand, tickets in a book.
struct Fx {
    site: Site,
    l: Layout,
    ev: Events,
    book: TicketBook,
}

fn s(n: i64) -> TimeDelta {
    TimeDelta::seconds(n)
}

fn min(n: i64) -> TimeDelta {
    TimeDelta::minutes(n)
}

impl Fx {
    fn new(site_id: &str) -> Self {
        let site = site(&shipped(), site_id);
        let mut ev = Events::new(site_id, 7);
        ev.max_delay_s = 0;
        Self {
            l: Layout::of(&site),
            site,
            ev,
            book: TicketBook::new(),
        }
    }

    fn at(&self, h: u32, m: u32) -> DateTime<Utc> {
        local(&self.site, h, m, 0)
    }

    fn person(n: u32, kind: VisitorKind, pic: Option<&str>) -> Visitor {
        Visitor {
            name: format!("Visitor {n}"),
            identity_number: format!("ID{n}"),
            organisation: "PT Vendor".into(),
            kind,
            credentials: vec![format!("7{n:04}")],
            pic: pic.map(str::to_string),
        }
    }

    fn pic(n: u32) -> Person {
        Person {
            name: format!("PIC {n}"),
            identity_number: format!("ID{n}"),
            organisation: "Pusintek".into(),
            credentials: vec![format!("7{n:04}")],
        }
    }

    /// Ticket `id`: PIC `ID1` (credential 70001) and the given visitors, 09:00-11:00 local.
    fn ticket(&self, id: &str, rooms: &[&str], visitors: Vec<Visitor>) -> VisitTicket {
        VisitTicket {
            id: id.into(),
            site: self.site.id.clone(),
            rooms: rooms.iter().map(|r| (*r).to_string()).collect(),
            window_start: self.at(9, 0),
            window_end: self.at(11, 0),
            pic: Self::pic(1),
            visitors,
            activity_plan: "replace a PDU".into(),
            approver: "Kepala Bagian".into(),
            state: TicketState::Approved,
            history: Vec::new(),
        }
    }

    fn create(&mut self, t: VisitTicket) {
        let at = self.at(0, 0) - TimeDelta::days(1);
        if let Err(e) = self.book.create(t, &self.site, at) {
            panic!("fixture ticket refused: {e}");
        }
    }

    /// The technical escort (first one of the shipped roster, 08:00-17:00) inside 08:00-17:00.
    fn escort_all_day(&mut self) {
        let te = self.te();
        let l = self.l.clone();
        self.ev.walk_in(&l, None, &[&te], self.at(8, 0));
        self.ev.walk_out(&l, None, &[&te], self.at(16, 50));
    }

    fn te(&self) -> String {
        self.site
            .access
            .staff
            .iter()
            .find(|s| s.role == dcguard::config::model::StaffRole::TechnicalEscort)
            .map(|s| s.credentials[0].clone())
            .expect("shipped roster has a technical escort")
    }

    fn run(&self) -> Vec<Finding> {
        Reconciler::run_batch(
            &self.site,
            ReconcileSettings::default(),
            self.ev.events.clone(),
            &self.book,
            self.at(23, 59),
        )
    }

    fn rules(&self) -> Vec<Rule> {
        self.run().iter().map(|f| f.rule).collect()
    }

    fn walk_in(
        &mut self,
        hall: Option<usize>,
        members: &[&str],
        t: DateTime<Utc>,
    ) -> Vec<Vec<std::sync::Arc<str>>> {
        let l = self.l.clone();
        let hall = hall.map(|i| l.halls[i].clone());
        self.ev.walk_in(&l, hall.as_ref(), members, t).0
    }

    fn walk_out(
        &mut self,
        hall: Option<usize>,
        members: &[&str],
        t: DateTime<Utc>,
    ) -> Vec<Vec<std::sync::Arc<str>>> {
        let l = self.l.clone();
        let hall = hall.map(|i| l.halls[i].clone());
        self.ev.walk_out(&l, hall.as_ref(), members, t).0
    }
}

fn only(findings: &[Finding], rule: Rule) -> &Finding {
    assert_eq!(
        findings.iter().map(|f| f.rule).collect::<Vec<_>>(),
        vec![rule],
        "{findings:#?}"
    );
    &findings[0]
}

// ---------------------------------------------------------------- tickets

#[test]
fn valid_ticket_passes_and_every_problem_is_reported_at_once() {
    let fx = Fx::new("smart-dc");
    let tp = Fx::person(2, VisitorKind::ThirdParty, Some("ID1"));
    assert_eq!(
        validate(&fx.ticket("T1", &["storage"], vec![tp]), &fx.site),
        Ok(())
    );

    let mut bad = fx.ticket("", &[], vec![]);
    bad.window_end = bad.window_start;
    bad.visitors = vec![
        Fx::person(2, VisitorKind::ThirdParty, None),
        Fx::person(3, VisitorKind::ThirdParty, Some("ID9")),
        Visitor {
            credentials: vec![],
            identity_number: String::new(),
            ..Fx::person(4, VisitorKind::Employee, None)
        },
    ];
    let errors = validate(&bad, &fx.site).expect_err("invalid");
    for expected in [
        TicketError::MissingId,
        TicketError::DestinationRoomRequired {
            site: "smart-dc".into(),
        },
        TicketError::WindowNotAfterStart {
            start: bad.window_start,
            end: bad.window_end,
        },
        TicketError::ThirdPartyWithoutPic {
            who: "visitors[0] \"Visitor 2\"".into(),
        },
        TicketError::PicNotOnTicket {
            who: "visitors[1] \"Visitor 3\"".into(),
            pic: "ID9".into(),
        },
        TicketError::MissingIdentity {
            who: "visitors[2] \"Visitor 4\"".into(),
            field: "identity_number",
        },
        TicketError::MissingCredentials {
            who: "visitors[2] \"Visitor 4\"".into(),
        },
    ] {
        assert!(
            errors.contains(&expected),
            "{expected:?} missing from {errors:#?}"
        );
    }
    assert_eq!(errors.len(), 7, "{errors:#?}");

    let mut unknown_room = fx.ticket("T2", &["storage", "roof"], vec![]);
    unknown_room.pic.credentials.clear(); // no third party: the PIC needs no credential
    assert_eq!(
        validate(&unknown_room, &fx.site),
        Err(vec![TicketError::UnknownRoom {
            room: "roof".into(),
            site: "smart-dc".into()
        }])
    );
    // A third party's PIC must be an employee, and needs a credential.
    let mut t = fx.ticket(
        "T3",
        &["storage"],
        vec![
            Fx::person(2, VisitorKind::ThirdParty, Some("ID3")),
            Fx::person(3, VisitorKind::ThirdParty, Some("ID1")),
        ],
    );
    t.pic.credentials.clear();
    let errors = validate(&t, &fx.site).expect_err("invalid");
    assert!(errors.contains(&TicketError::PicIsThirdParty {
        who: "visitors[0] \"Visitor 2\"".into(),
        pic: "ID3".into()
    }));
    assert!(errors.contains(&TicketError::MissingCredentials {
        who: "pic \"PIC 1\"".into()
    }));
    // The DC does not require destination rooms.
    let dc = Fx::new("dc");
    assert_eq!(validate(&dc.ticket("T4", &[], vec![]), &dc.site), Ok(()));
}

#[test]
fn ticket_book_keeps_every_revision_and_refuses_changes_to_inactive_tickets() {
    let mut fx = Fx::new("dc");
    let t0 = fx.at(7, 0);
    let ticket = fx.ticket("T1", &[], vec![]);
    fx.book.create(ticket.clone(), &fx.site, t0).expect("valid");
    // A re-sent create with the same content changes nothing; other content is refused.
    fx.book
        .create(ticket.clone(), &fx.site, t0 + min(1))
        .expect("idempotent");
    let mut other = ticket.clone();
    other.activity_plan = "something else".into();
    assert!(matches!(
        fx.book.create(other, &fx.site, t0),
        Err(TicketBookError::Duplicate(_))
    ));
    let mut later = ticket.clone();
    later.window_end = fx.at(12, 0);
    fx.book
        .update(later.clone(), &fx.site, t0 + min(10))
        .expect("valid update");
    // A re-sent identical update adds no revision.
    fx.book
        .update(later, &fx.site, t0 + min(10))
        .expect("idempotent update");
    let mut broken = ticket.clone();
    broken.window_end = broken.window_start - min(1);
    assert!(matches!(
        fx.book.update(broken, &fx.site, t0 + min(11)),
        Err(TicketBookError::Invalid { .. })
    ));
    fx.book.close("T1", t0 + min(20)).expect("approved");
    fx.book
        .close("T1", t0 + min(21))
        .expect("closing twice is harmless");
    assert_eq!(
        fx.book.cancel("T1", t0 + min(30)),
        Err(TicketBookError::NotActive {
            id: "T1".into(),
            state: TicketState::Closed
        })
    );
    assert!(matches!(
        fx.book.close("T9", t0),
        Err(TicketBookError::NotFound(_))
    ));

    let t = fx.book.get("T1").expect("kept");
    let changes: Vec<_> = t.history.iter().map(|r| (r.number, r.change)).collect();
    assert_eq!(
        changes,
        vec![
            (1, TicketChange::Created),
            (2, TicketChange::Updated),
            (3, TicketChange::Closed)
        ]
    );
    assert_eq!(t.state, TicketState::Closed);
    // As of a time, the ticket is what it was then.
    assert!(t.as_of(t0 - min(1)).is_none());
    assert_eq!(
        t.as_of(t0 + min(5)).map(|v| v.window_end),
        Some(fx.at(11, 0))
    );
    assert_eq!(
        t.as_of(t0 + min(15)).map(|v| v.window_end),
        Some(fx.at(12, 0))
    );
    assert_eq!(
        t.as_of(t0 + min(25)).map(|v| v.state),
        Some(TicketState::Closed)
    );
}

// ---------------------------------------------------------------- one test per rule

#[test]
fn no_ticket_for_a_known_person_and_for_staff_off_shift_but_not_for_staff_on_shift() {
    let mut fx = Fx::new("dc");
    fx.escort_all_day();
    // Credential 70002 is known from a ticket of next week only.
    let mut next_week = fx.ticket(
        "T-NEXT",
        &[],
        vec![Fx::person(2, VisitorKind::Employee, None)],
    );
    next_week.window_start += TimeDelta::days(7);
    next_week.window_end += TimeDelta::days(7);
    fx.create(next_week);
    let key = fx.walk_in(None, &["70002"], fx.at(10, 0))[0][0].clone();
    fx.walk_out(None, &["70002"], fx.at(10, 30));
    let findings = fx.run();
    let f = only(&findings, Rule::NoTicket);
    assert_eq!((f.ticket.as_deref(), f.severity), (None, Severity::High));
    assert_eq!(f.evidence, vec![key]);
    assert_eq!(f.credential.as_deref(), Some("70002"));

    // Siti Rahmawati works 19:00-07:00: on shift at 20:00, off shift at 12:00.
    let mut fx = Fx::new("dc");
    fx.walk_in(None, &["10002"], fx.at(20, 0));
    assert_eq!(fx.rules(), vec![]);
    fx.walk_out(None, &["10002"], fx.at(21, 0));
    fx.walk_in(None, &["10002"], fx.at(12, 0));
    fx.walk_out(None, &["10002"], fx.at(12, 30));
    let findings = fx.run();
    let f = only(&findings, Rule::NoTicket);
    assert_eq!(f.person.as_deref(), Some("Siti Rahmawati"));
}

#[test]
fn outside_window_before_the_grace_or_after_the_end() {
    for (minutes, expect) in [(-45_i64, true), (-29, false), (60, false), (121, true)] {
        let mut fx = Fx::new("dc");
        fx.escort_all_day();
        let t = fx.ticket("T1", &[], vec![]);
        fx.create(t);
        let at = fx.at(9, 0) + min(minutes);
        fx.walk_in(Some(0), &["70001"], at);
        fx.walk_out(Some(0), &["70001"], at + min(5));
        let findings = fx.run();
        if expect {
            let f = only(&findings, Rule::OutsideWindow);
            assert_eq!(f.ticket.as_deref(), Some("T1"), "{minutes}");
            assert_eq!(f.severity, Severity::Medium);
        } else {
            assert_eq!(findings, vec![], "{minutes}");
        }
    }
}

#[test]
fn wrong_room_is_a_hall_not_on_the_ticket() {
    let mut fx = Fx::new("smart-dc");
    fx.escort_all_day();
    let storage =
        fx.l.halls
            .iter()
            .position(|h| h.room == "storage")
            .expect("hall");
    let server1 =
        fx.l.halls
            .iter()
            .position(|h| h.room == "server1")
            .expect("hall");
    let t = fx.ticket("T1", &["storage"], vec![]);
    fx.create(t);
    fx.walk_in(Some(storage), &["70001"], fx.at(9, 10));
    fx.walk_out(Some(storage), &["70001"], fx.at(9, 30));
    assert_eq!(
        fx.rules(),
        vec![],
        "the listed room, mantrap and corridor are fine"
    );
    let key = fx.walk_in(Some(server1), &["70001"], fx.at(10, 0))[2][0].clone();
    fx.walk_out(Some(server1), &["70001"], fx.at(10, 20));
    let findings = fx.run();
    let f = only(&findings, Rule::WrongRoom);
    assert_eq!(
        (f.ticket.as_deref(), f.room.as_deref(), &f.evidence),
        (Some("T1"), Some("server1"), &vec![key])
    );
}

fn escort_fixture(site_id: &str) -> Fx {
    let mut fx = Fx::new(site_id);
    fx.escort_all_day();
    let tp = Fx::person(2, VisitorKind::ThirdParty, Some("ID1"));
    let t = fx.ticket("T1", &[], vec![tp]);
    fx.create(t);
    fx
}

#[test]
fn unescorted_third_party_at_a_reader_unless_the_pic_passes_within_the_gap() {
    // The shipped gap at the DC is 30 s (docs/configuration.md: finding latency).
    let gap = escort_fixture("dc").site.access.escort_max_gap.as_secs() as i64;
    assert_eq!(gap, 30);
    // (PIC offset from the third party at the mantrap in seconds, finding expected)
    for (offset, expect) in [
        (-gap, false),
        (0, false),
        (gap, false),
        (gap + 1, true),
        (-gap - 1, true),
    ] {
        let mut fx = escort_fixture("dc");
        let t = fx.at(9, 10);
        let l = fx.l.clone();
        let key = fx.ev.pass(&l.mantrap_in, "70002", ENTRY, t);
        fx.ev.pass(&l.mantrap_in, "70001", ENTRY, t + s(offset));
        fx.ev.walk(
            &[(l.mantrap_out.as_str(), EXIT)],
            &["70001", "70002"],
            t + min(5),
        );
        let findings = fx.run();
        if expect {
            let f = only(&findings, Rule::UnescortedThirdParty);
            assert_eq!(
                (f.ticket.as_deref(), f.severity, &f.evidence),
                (Some("T1"), Severity::High, &vec![key]),
                "{offset}"
            );
            assert_eq!(f.at, t + s(gap), "raised when the gap runs out");
        } else {
            assert_eq!(findings, vec![], "{offset}");
        }
    }
}

#[test]
fn unescorted_third_party_is_informational_at_the_drc() {
    let mut fx = escort_fixture("drc");
    fx.walk_in(Some(0), &["70002"], fx.at(9, 10));
    fx.walk_out(Some(0), &["70002"], fx.at(9, 30));
    let findings = fx.run();
    assert_eq!(
        findings.len(),
        3,
        "mantrap, corridor and hall: {findings:#?}"
    );
    assert!(
        findings
            .iter()
            .all(|f| f.rule == Rule::UnescortedThirdParty && f.severity == Severity::Info)
    );
}

#[test]
fn unescorted_third_party_when_the_pic_leaves_first() {
    let mut fx = escort_fixture("dc");
    fx.walk_in(Some(0), &["70001", "70002"], fx.at(9, 10));
    // Leaving together (PIC first, third party 5 s later) is fine.
    fx.walk_out(Some(0), &["70001", "70002"], fx.at(9, 30));
    assert_eq!(fx.rules(), vec![]);
    fx.walk_in(Some(0), &["70001", "70002"], fx.at(10, 0));
    let pic_exit = fx.walk_out(Some(0), &["70001"], fx.at(10, 10))[2][0].clone();
    fx.walk_out(Some(0), &["70002"], fx.at(10, 30));
    let findings = fx.run();
    let f = only(&findings, Rule::UnescortedThirdParty);
    assert!(f.evidence.contains(&pic_exit));
    assert_eq!(f.room.as_deref(), Some(fx.l.halls[0].room.as_str()));
}

#[test]
fn no_technical_escort_inside_during_a_visit() {
    let te;
    {
        let mut fx = Fx::new("dc");
        te = fx.te();
        let t = fx.ticket("T1", &[], vec![]);
        fx.create(t);
        // No escort at all.
        let key = fx.walk_in(Some(0), &["70001"], fx.at(9, 10))[0][0].clone();
        fx.walk_out(Some(0), &["70001"], fx.at(9, 40));
        let findings = fx.run();
        let f = only(&findings, Rule::NoTechnicalEscort);
        assert_eq!((f.ticket.as_deref(), &f.evidence), (Some("T1"), &vec![key]));
        assert_eq!(f.person.as_deref(), Some("PIC 1"));

        // The policy switch turns it off.
        let mut off = fx.site.clone();
        off.access.technical_escort_required = false;
        let findings = Reconciler::run_batch(
            &off,
            ReconcileSettings::default(),
            fx.ev.events.clone(),
            &fx.book,
            fx.at(23, 0),
        );
        assert_eq!(findings, vec![]);
    }
    // The escort arrives 30 s after the visitor: fine.
    let mut fx = Fx::new("dc");
    let t = fx.ticket("T1", &[], vec![]);
    fx.create(t);
    fx.walk_in(None, &["70001"], fx.at(9, 10));
    fx.walk_in(None, &[&te], fx.at(9, 10) + s(30));
    fx.walk_out(None, &["70001", te.as_str()], fx.at(9, 40));
    assert_eq!(fx.rules(), vec![]);
    // The escort leaves while the visitor stays.
    let mut fx = Fx::new("dc");
    let t = fx.ticket("T1", &[], vec![]);
    fx.create(t);
    fx.walk_in(None, &[&te], fx.at(9, 0));
    fx.walk_in(None, &["70001"], fx.at(9, 10));
    let te_exit = fx.walk_out(None, &[&te], fx.at(9, 20))[1][0].clone();
    fx.walk_out(None, &["70001"], fx.at(9, 40));
    let findings = fx.run();
    let f = only(&findings, Rule::NoTechnicalEscort);
    assert_eq!(f.evidence, vec![te_exit]);
    let gap = fx.site.access.escort_max_gap.as_secs() as i64;
    assert_eq!(f.at, fx.at(9, 20) + s(40) + s(gap));
}

#[test]
fn no_technical_escort_once_per_ticket_inside_when_the_last_escort_leaves() {
    let mut fx = Fx::new("dc");
    let te = fx.te();
    let t1 = fx.ticket("T1", &[], vec![]);
    fx.create(t1);
    let mut t2 = fx.ticket("T2", &[], vec![]);
    t2.pic = Fx::pic(5);
    fx.create(t2);
    fx.walk_in(None, &[&te], fx.at(9, 0));
    fx.walk_in(Some(0), &["70001"], fx.at(9, 10));
    fx.walk_in(Some(1), &["70005"], fx.at(9, 12));
    let te_exit = fx.walk_out(None, &[&te], fx.at(9, 20))[1][0].clone();
    // Still no escort when the visitors move on: no second finding per ticket.
    fx.walk_out(Some(0), &["70001"], fx.at(9, 40));
    fx.walk_out(Some(1), &["70005"], fx.at(9, 45));
    let findings = fx.run();
    assert_eq!(
        findings
            .iter()
            .map(|f| (f.rule, f.ticket.clone(), f.evidence.clone()))
            .collect::<Vec<_>>(),
        vec![
            (
                Rule::NoTechnicalEscort,
                Some("T1".into()),
                vec![te_exit.clone()]
            ),
            (Rule::NoTechnicalEscort, Some("T2".into()), vec![te_exit]),
        ]
    );
    assert_ne!(findings[0].key(), findings[1].key());
}

#[test]
fn overstay_is_raised_by_the_timer_before_any_exit() {
    let mut fx = Fx::new("dc");
    fx.escort_all_day();
    let t = fx.ticket("T1", &[], vec![]);
    fx.create(t);
    let entry = fx.walk_in(Some(0), &["70001"], fx.at(10, 0))[0][0].clone();
    let mut r = Reconciler::new(&fx.site, ReconcileSettings::default());
    for e in fx.ev.events.clone() {
        r.push(e);
    }
    let settle = s(10);
    // Window ends 11:00, grace 30 min.
    let before = r.tick(fx.at(11, 29) + settle, &fx.book);
    assert_eq!(before, vec![]);
    assert_eq!(r.occupancy().in_room(&fx.l.halls[0].room).len(), 1);
    let at_deadline = r.tick(fx.at(11, 30) + s(1) + settle, &fx.book);
    let f = only(&at_deadline, Rule::Overstay);
    assert_eq!((f.ticket.as_deref(), f.at), (Some("T1"), fx.at(11, 30)));
    assert_eq!(f.evidence[0], entry);
    assert_eq!(f.room.as_deref(), Some(fx.l.halls[0].room.as_str()));

    // An extension of the window before the deadline moves the timer.
    let mut fx2 = Fx::new("dc");
    fx2.escort_all_day();
    let t = fx2.ticket("T1", &[], vec![]);
    fx2.create(t.clone());
    let mut longer = t;
    longer.window_end = fx2.at(13, 0);
    fx2.book
        .update(longer, &fx2.site, fx2.at(10, 30))
        .expect("valid");
    fx2.walk_in(Some(0), &["70001"], fx2.at(10, 0));
    fx2.walk_out(Some(0), &["70001"], fx2.at(12, 0));
    assert_eq!(fx2.rules(), vec![]);
}

#[test]
fn anti_passback_entry_while_inside_and_exit_while_outside() {
    let mut fx = Fx::new("dc");
    let l = fx.l.clone();
    let t = fx.at(10, 0);
    fx.ev.pass(&l.mantrap_in, "10006", ENTRY, t);
    let twice = fx.ev.pass(&l.mantrap_in, "10006", ENTRY, t + s(30));
    fx.ev.pass(&l.mantrap_out, "10006", EXIT, t + s(60));
    let outside = fx.ev.pass(&l.mantrap_out, "10006", EXIT, t + s(90));
    let findings = fx.run();
    assert_eq!(
        findings
            .iter()
            .map(|f| (f.rule, f.evidence.clone()))
            .collect::<Vec<_>>(),
        vec![
            (Rule::AntiPassback, vec![twice]),
            (Rule::AntiPassback, vec![outside])
        ]
    );
    assert_eq!(findings[0].person.as_deref(), Some("Agus Wibowo"));
}

#[test]
fn repeated_denied_by_credential_or_at_reader() {
    let fx0 = Fx::new("dc");
    let reader = fx0.l.corridor_in.clone();
    let t = fx0.at(10, 0);
    // Three denials of one credential within 5 min: one finding with all three as evidence.
    let mut fx = Fx::new("dc");
    let ids: Vec<_> = (0..3)
        .map(|k| fx.ev.deny(&reader, Some("555"), t + min(2 * k)))
        .collect();
    let findings = fx.run();
    let f = only(&findings, Rule::RepeatedDenied);
    assert_eq!((&f.evidence, f.credential.as_deref()), (&ids, Some("555")));
    // Spread over more than 5 min: nothing.
    let mut fx = Fx::new("dc");
    for k in 0..3 {
        fx.ev.deny(&reader, Some("555"), t + min(3 * k));
    }
    assert_eq!(fx.rules(), vec![]);
    // Three credentials at one reader: one finding, for the reader.
    let mut fx = Fx::new("dc");
    for k in 0..3 {
        fx.ev.deny(&reader, Some(&format!("55{k}")), t + min(k));
    }
    let findings = fx.run();
    let f = only(&findings, Rule::RepeatedDenied);
    assert_eq!(
        (f.credential.as_deref(), f.reader.as_deref()),
        (None, Some(reader.as_str()))
    );
    // Six denials of one credential: two findings, none for the reader.
    let mut fx = Fx::new("dc");
    for k in 0..6 {
        fx.ev.deny(&reader, Some("555"), t + s(20 * k));
    }
    assert_eq!(fx.rules(), vec![Rule::RepeatedDenied, Rule::RepeatedDenied]);
}

#[test]
fn ticket_not_active_when_cancelled_or_closed_before_use_but_not_after() {
    for (change_at_min, cancel, expect) in
        [(-60_i64, true, true), (-60, false, true), (30, true, false)]
    {
        let mut fx = Fx::new("dc");
        fx.escort_all_day();
        let t = fx.ticket("T1", &[], vec![]);
        fx.create(t);
        let at = fx.at(9, 30) + min(change_at_min);
        if cancel {
            fx.book.cancel("T1", at).expect("approved");
        } else {
            fx.book.close("T1", at).expect("approved");
        }
        fx.walk_in(Some(0), &["70001"], fx.at(9, 30));
        fx.walk_out(Some(0), &["70001"], fx.at(9, 50));
        let findings = fx.run();
        if expect {
            let f = only(&findings, Rule::TicketNotActive);
            assert_eq!(f.ticket.as_deref(), Some("T1"));
        } else {
            // Cancelled while inside: the entry was valid when it happened.
            assert_eq!(findings, vec![]);
        }
    }
}

#[test]
fn unknown_credential_and_unknown_reader() {
    let mut fx = Fx::new("dc");
    let l = fx.l.clone();
    let t = fx.at(10, 0);
    let granted = fx.ev.pass(&l.mantrap_in, "424242", ENTRY, t);
    fx.ev.pass(&l.mantrap_out, "424242", EXIT, t + min(1));
    let rogue = fx.ev.pass("ROGUE-1", "10006", ENTRY, t + min(2));
    let findings = fx.run();
    assert_eq!(
        findings
            .iter()
            .map(|f| (f.rule, f.evidence.clone()))
            .collect::<Vec<_>>(),
        vec![
            (Rule::UnknownCredential, vec![granted]),
            (Rule::UnknownReader, vec![rogue])
        ]
    );
    // A denied unknown credential is the reader doing its job.
    let mut fx = Fx::new("dc");
    fx.ev.deny(&l.mantrap_in, Some("424242"), t);
    assert_eq!(fx.rules(), vec![]);
}

#[test]
fn clock_skew_once_per_reader_until_its_clock_is_right_again() {
    let mut fx = Fx::new("dc");
    let l = fx.l.clone();
    let t = fx.at(10, 0);
    let first = fx.ev.op(&l.mantrap_in, DeviceOp::PowerOn, t, min(-6));
    fx.ev
        .op(&l.mantrap_in, DeviceOp::PowerOn, t + min(1), min(-6));
    // 4 min off: trusted again (timed by its device clock, t + 1.5 min).
    fx.ev.op(
        &l.mantrap_in,
        DeviceOp::PowerOn,
        t + min(2),
        s(-30) + min(-4) + min(4),
    );
    let again = fx
        .ev
        .op(&l.mantrap_in, DeviceOp::PowerOn, t + min(3), min(7));
    let findings = fx.run();
    assert_eq!(
        findings
            .iter()
            .map(|f| (f.rule, f.evidence.clone()))
            .collect::<Vec<_>>(),
        vec![
            (Rule::ClockSkew, vec![first]),
            (Rule::ClockSkew, vec![again])
        ]
    );
}

#[test]
fn device_tamper_on_every_tampering_operation() {
    let mut fx = Fx::new("dc");
    let l = fx.l.clone();
    let t = fx.at(10, 0);
    let mut expected = Vec::new();
    for (k, op) in [
        DeviceOp::PowerOn,
        DeviceOp::PowerOff,
        DeviceOp::SetTime,
        DeviceOp::DeleteRecords,
        DeviceOp::DoorForced,
        DeviceOp::Duress,
        DeviceOp::Tamper,
        DeviceOp::AlarmCancelled,
        DeviceOp::Other,
    ]
    .into_iter()
    .enumerate()
    {
        let id = fx.ev.op(
            &l.mantrap_in,
            op,
            t + min(i64::try_from(k).unwrap_or(0)),
            TimeDelta::zero(),
        );
        if op.is_tamper() {
            expected.push(id);
        }
    }
    let findings = fx.run();
    assert_eq!(expected.len(), 5);
    assert_eq!(
        findings
            .iter()
            .map(|f| (f.rule, f.evidence[0].clone()))
            .collect::<Vec<_>>(),
        expected
            .into_iter()
            .map(|id| (Rule::DeviceTamper, id))
            .collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------- ordering, idempotency, occupancy

fn live(
    site: &Site,
    events: &[AccessEvent],
    tickets: &TicketBook,
    end: DateTime<Utc>,
) -> (Vec<Finding>, Reconciler) {
    let mut r = Reconciler::new(site, ReconcileSettings::default());
    let mut findings = Vec::new();
    for e in events {
        r.push(e.clone());
        findings.extend(r.tick(e.received_at, tickets));
    }
    findings.extend(r.tick(end, tickets));
    (findings, r)
}

#[test]
fn out_of_order_and_resent_events_give_the_same_findings() {
    let mut fx = escort_fixture("dc");
    fx.ev.max_delay_s = 8;
    fx.walk_in(Some(0), &["70002", "70001"], fx.at(9, 10));
    fx.walk_out(Some(0), &["70001"], fx.at(9, 20));
    fx.walk_out(Some(0), &["70002"], fx.at(9, 40));
    let expected = fx.run();
    assert_eq!(
        expected.iter().map(|f| f.rule).collect::<Vec<_>>(),
        vec![Rule::UnescortedThirdParty]
    );
    // Arrival order: by receive time (jittered by up to 8 s, below the 10 s settle time);
    // every event also arrives a second time.
    let mut arrivals = fx.ev.events.clone();
    arrivals.sort_by_key(|e| e.received_at);
    let resent: Vec<AccessEvent> = arrivals
        .iter()
        .flat_map(|e| [e.clone(), e.clone()])
        .collect();
    let (found, r) = live(&fx.site, &resent, &fx.book, fx.at(23, 0));
    assert_eq!(found, expected);
    assert_eq!(r.occupancy().count(), 0);
    // Reversed arrival within one tick: the same again.
    let mut reversed = fx.ev.events.clone();
    reversed.reverse();
    let batch = Reconciler::run_batch(
        &fx.site,
        ReconcileSettings::default(),
        reversed,
        &fx.book,
        fx.at(23, 0),
    );
    assert_eq!(batch, expected);
}

#[test]
fn a_late_event_is_still_reconciled_with_its_own_time() {
    let mut fx = Fx::new("dc");
    let l = fx.l.clone();
    let t = fx.at(10, 0);
    let granted = fx.ev.pass(&l.mantrap_in, "424242", ENTRY, t);
    let mut r = Reconciler::new(&fx.site, ReconcileSettings::default());
    assert_eq!(r.tick(t + min(3), &fx.book), vec![]);
    // Arrives 3 min late (beyond the 10 s settle time, within the 5 min skew limit).
    let mut late = fx.ev.events[0].clone();
    late.received_at = t + min(3);
    assert!(r.push(late.clone()));
    assert!(!r.push(late), "a re-sent event is dropped");
    let found = r.tick(t + min(3) + s(1), &fx.book);
    let f = only(&found, Rule::UnknownCredential);
    assert_eq!((f.at, &f.evidence), (t, &vec![granted]));
    assert_eq!(r.pending_events(), 0);
    assert_eq!(r.watermark(), Some(t + min(3) + s(1) - s(10)));
}

#[test]
fn extreme_times_and_durations_do_not_panic() {
    let mut fx = escort_fixture("dc");
    let l = fx.l.clone();
    let t = fx.at(9, 30);
    fx.walk_in(Some(0), &["70002", "70001"], t - min(20));
    fx.walk_out(Some(0), &["70001"], t - min(10));
    fx.ev.pass(&l.mantrap_in, "424242", ENTRY, t);
    fx.ev.pass(&l.corridor_in, "424242", ENTRY, t + s(30));
    let mut events = fx.ev.events.clone();
    let last = events.len() - 1;
    events[last].device_time = DateTime::<Utc>::MAX_UTC;
    events[last - 1].device_time = DateTime::<Utc>::MIN_UTC;
    events[last - 1].received_at = DateTime::<Utc>::MIN_UTC;
    let mut site = fx.site.clone();
    site.access.escort_max_gap = std::time::Duration::MAX;
    site.access.overstay_grace = std::time::Duration::MAX;
    site.access.entry_grace_before = std::time::Duration::MAX;
    // Huge durations in the site policy, processed up to the end of time.
    let mut r = Reconciler::new(&site, ReconcileSettings::default());
    for e in events.clone() {
        r.push(e);
    }
    let _ = r.tick(DateTime::<Utc>::MAX_UTC, &fx.book);
    assert_eq!(r.pending_events(), 0);
    // Huge settings.
    let settings = ReconcileSettings {
        settle: std::time::Duration::MAX,
        dedupe_horizon: std::time::Duration::MAX,
        shift_grace: std::time::Duration::MAX,
        repeated_denied_window: std::time::Duration::MAX,
        ..ReconcileSettings::default()
    };
    let mut r = Reconciler::new(&fx.site, settings);
    for e in events.clone() {
        r.push(e);
    }
    let _ = r.tick(DateTime::<Utc>::MAX_UTC, &fx.book);
    let _ = r.tick(DateTime::<Utc>::MIN_UTC, &fx.book);
    let findings = Reconciler::run_batch(
        &fx.site,
        ReconcileSettings::default(),
        events,
        &fx.book,
        DateTime::<Utc>::MAX_UTC,
    );
    assert!(findings.iter().any(|f| f.rule == Rule::ClockSkew));
}

#[test]
fn occupancy_lists_the_people_in_each_room() {
    let mut fx = escort_fixture("dc");
    fx.walk_in(Some(0), &["70001", "70002"], fx.at(9, 10));
    fx.walk_in(Some(1), &[&fx.te()], fx.at(9, 15));
    let (_, r) = live(&fx.site, &fx.ev.events, &fx.book, fx.at(9, 30));
    let occ = r.occupancy();
    let names = |room: &str| {
        occ.in_room(room)
            .iter()
            .map(|o| o.person.clone())
            .collect::<BTreeSet<_>>()
    };
    // The technical escort walked in at 08:00 and again at 09:15: still inside.
    assert_eq!(occ.count(), 3);
    assert_eq!(
        names(&fx.l.halls[0].room),
        BTreeSet::from(["PIC 1".to_string(), "Visitor 2".to_string()])
    );
    assert_eq!(
        names(&fx.l.halls[1].room),
        BTreeSet::from(["Budi Santoso".to_string()])
    );
    let visitor = occ.get("70002").expect("inside");
    assert_eq!(visitor.ticket.as_deref(), Some("T1"));
    assert_eq!(visitor.escorted_by.as_deref(), Some("ID1"));
}

// ---------------------------------------------------------------- synthetic day

fn check_day(site_id: &str, seed: u64) {
    let config = shipped();
    let site = site(&config, site_id);
    let day = synthetic_day(&site, seed, 50);
    let tickets = book(&site, &day.ticket_ops);
    assert_eq!(day.tickets_created, 200);
    assert_eq!(tickets.len(), 200);
    assert_eq!(day.planted.len(), 50);
    assert!(
        (900..=1200).contains(&day.events.len()),
        "about 1000 events, got {}",
        day.events.len()
    );
    let kinds: BTreeSet<Rule> = day.planted.iter().map(|p| p.rule).collect();
    assert_eq!(kinds.len(), Rule::ALL.len(), "every rule is planted");

    let batch = Reconciler::run_batch(
        &site,
        ReconcileSettings::default(),
        day.events.clone(),
        &tickets,
        day.end,
    );
    let missed: Vec<_> = day
        .planted
        .iter()
        .filter(|p| !batch.iter().any(|f| p.matches(f)))
        .collect();
    assert!(
        missed.is_empty(),
        "{site_id}: recall below 1.0, missed {missed:#?}"
    );
    let unexpected: Vec<_> = batch
        .iter()
        .filter(|f| !day.planted.iter().any(|p| p.matches(f)))
        .collect();
    assert!(
        unexpected.is_empty(),
        "{site_id}: false positives {unexpected:#?}"
    );
    let keys: BTreeSet<String> = batch.iter().map(Finding::key).collect();
    assert_eq!(
        keys.len(),
        batch.len(),
        "{site_id}: finding keys are unique"
    );
    for p in &day.planted {
        let n = batch.iter().filter(|f| p.matches(f)).count();
        assert_eq!(n, 1, "{site_id}: {p:?} found {n} times");
    }

    // Live: events arrive by receive time, a tick on every arrival; same findings, same order.
    let (live_findings, r) = live(&site, &day.events, &tickets, day.end);
    assert_eq!(
        live_findings, batch,
        "{site_id}: live run differs from the batch re-run"
    );
    assert_eq!(r.pending_events(), 0);
    // Ticks every 5 s instead: the same again.
    let mut r2 = Reconciler::new(&site, ReconcileSettings::default());
    let mut periodic = Vec::new();
    let mut next = day.start;
    let mut events = day.events.iter().peekable();
    while next <= day.end {
        while let Some(e) = events.next_if(|e| e.received_at <= next) {
            r2.push(e.clone());
        }
        periodic.extend(r2.tick(next, &tickets));
        next += s(5);
    }
    assert_eq!(periodic, batch, "{site_id}: periodic ticks differ");

    // Streaming replay in effective-time order (bounded memory): the same again.
    let probe = Reconciler::new(&site, ReconcileSettings::default());
    let mut ordered = day.events.clone();
    ordered.sort_by(|a, b| (probe.effective_time(a), &a.id).cmp(&(probe.effective_time(b), &b.id)));
    let mut replayed = Vec::new();
    Reconciler::replay(
        &site,
        ReconcileSettings::default(),
        ordered,
        &tickets,
        day.end,
        |f| replayed.push(f),
    );
    assert_eq!(replayed, batch, "{site_id}: replay differs");
}

#[test]
fn synthetic_day_dc() {
    check_day("dc", 1);
}

#[test]
fn synthetic_day_smart_dc() {
    check_day("smart-dc", 2);
}

#[test]
fn synthetic_day_drc() {
    check_day("drc", 3);
}

#[test]
fn synthetic_day_is_deterministic() {
    let config = shipped();
    let site = site(&config, "dc");
    let a = synthetic_day(&site, 11, 50);
    let b = synthetic_day(&site, 11, 50);
    assert_eq!(a.events, b.events);
    assert_eq!(a.planted, b.planted);
    let c = synthetic_day(&site, 12, 50);
    assert_ne!(a.events, c.events);
}
