//! Test support for access reconciliation: event and ticket builders on the shipped sites, and
//! the seeded "synthetic day" generator (clean traffic plus planted anomalies of every rule).
//!
//! The generator is deterministic (its own SplitMix64, no dependency on `rand`'s stream) and
//! returns plain data: ticket operations with their times, events in arrival order and the
//! planted anomalies with the rule, ticket and key event a finding must carry. The HTTP
//! end-to-end test pushes the same day through the ZKTeco reader stub.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, TimeDelta, TimeZone, Utc};
use dcguard::access::event::{AccessEvent, DeviceOp, Direction, EventKind, EventSource};
use dcguard::access::reconcile::{Finding, Rule};
use dcguard::access::ticket::{Person, TicketBook, TicketState, VisitTicket, Visitor, VisitorKind};
use dcguard::config::model::{self, Config, RoomKind, Site, StaffRole};

/// The shipped configuration (`config/`).
pub fn shipped() -> Config {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    match dcguard::config::load(&dir) {
        Ok(config) => config,
        Err(errors) => panic!("the shipped configuration must load:\n{errors}"),
    }
}

/// One shipped site.
pub fn site(config: &Config, id: &str) -> Site {
    config
        .sites
        .iter()
        .find(|s| s.id == id)
        .cloned()
        .unwrap_or_else(|| panic!("site {id} is shipped"))
}

/// Site local time on the synthetic day (Monday 2026-11-23) to UTC.
pub fn local(site: &Site, h: u32, m: u32, s: u32) -> DateTime<Utc> {
    let date = NaiveDate::from_ymd_opt(2026, 11, 23).expect("valid date");
    let naive = date.and_hms_opt(h, m, s).expect("valid time");
    site.time_zone
        .from_local_datetime(&naive)
        .single()
        .expect("Asia/Jakarta has no DST")
        .with_timezone(&Utc)
}

/// Deterministic SplitMix64.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + i64::try_from(self.below(u64::try_from(hi - lo + 1).unwrap_or(1))).unwrap_or(0)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A hall (a room with its own reader pair).
#[derive(Debug, Clone)]
pub struct Hall {
    pub room: String,
    pub entry: String,
    pub exit: String,
}

/// The reader layout of a site: mantrap, corridor, halls.
#[derive(Debug, Clone)]
pub struct Layout {
    pub mantrap_in: String,
    pub mantrap_out: String,
    pub corridor_in: String,
    pub corridor_out: String,
    pub halls: Vec<Hall>,
}

impl Layout {
    pub fn of(site: &Site) -> Self {
        let kind = |room: &str| site.rooms.iter().find(|r| r.id == room).map(|r| r.kind);
        let reader = |k: RoomKind, d: model::Direction| {
            site.access
                .readers
                .iter()
                .find(|r| kind(&r.room) == Some(k) && r.direction == d)
                .map(|r| r.serial.clone())
                .expect("shipped sites have mantrap and corridor readers")
        };
        let mut halls: Vec<Hall> = Vec::new();
        for r in &site.access.readers {
            let k = kind(&r.room);
            if matches!(k, Some(RoomKind::Mantrap | RoomKind::Corridor)) {
                continue;
            }
            let pos = match halls.iter().position(|h| h.room == r.room) {
                Some(p) => p,
                None => {
                    halls.push(Hall {
                        room: r.room.clone(),
                        entry: String::new(),
                        exit: String::new(),
                    });
                    halls.len() - 1
                }
            };
            match r.direction {
                model::Direction::Entry => halls[pos].entry = r.serial.clone(),
                model::Direction::Exit => halls[pos].exit = r.serial.clone(),
            }
        }
        Self {
            mantrap_in: reader(RoomKind::Mantrap, model::Direction::Entry),
            mantrap_out: reader(RoomKind::Mantrap, model::Direction::Exit),
            corridor_in: reader(RoomKind::Corridor, model::Direction::Entry),
            corridor_out: reader(RoomKind::Corridor, model::Direction::Exit),
            halls,
        }
    }
}

/// Builds events with unique ids and a small receive delay.
#[derive(Debug, Clone)]
pub struct Events {
    pub site: String,
    pub n: u64,
    pub events: Vec<AccessEvent>,
    /// Receive delay range in seconds (inclusive), below the reconciler's settle time.
    pub max_delay_s: i64,
    pub rng: Rng,
}

impl Events {
    pub fn new(site: &str, seed: u64) -> Self {
        Self {
            site: site.to_string(),
            n: 0,
            events: Vec::new(),
            max_delay_s: 8,
            rng: Rng::new(seed),
        }
    }

    fn push(
        &mut self,
        reader: &str,
        credential: Option<&str>,
        kind: EventKind,
        direction: Option<Direction>,
        device_time: DateTime<Utc>,
        received_at: DateTime<Utc>,
    ) -> Arc<str> {
        self.n += 1;
        let id: Arc<str> = format!("{}-{:05}", self.site, self.n).into();
        let raw = format!(
            "{}\t{}\t{}\t{:?}",
            credential.unwrap_or(""),
            device_time.format("%Y-%m-%d %H:%M:%S"),
            reader,
            kind
        );
        self.events.push(AccessEvent {
            id: id.clone(),
            source: EventSource::ZktecoRtlog,
            reader: reader.into(),
            credential: credential.map(Into::into),
            kind,
            direction,
            device_time,
            received_at,
            raw: raw.into(),
            backlog: false,
        });
        id
    }

    fn delay(&mut self) -> TimeDelta {
        TimeDelta::seconds(self.rng.range(0, self.max_delay_s))
    }

    /// A granted passage.
    pub fn pass(&mut self, reader: &str, cred: &str, dir: Direction, t: DateTime<Utc>) -> Arc<str> {
        let r = t + self.delay();
        self.push(reader, Some(cred), EventKind::Granted, Some(dir), t, r)
    }

    /// A denied attempt.
    pub fn deny(&mut self, reader: &str, cred: Option<&str>, t: DateTime<Utc>) -> Arc<str> {
        let r = t + self.delay();
        let kind = EventKind::Denied {
            reason: Some("not authorised".into()),
        };
        self.push(reader, cred, kind, None, t, r)
    }

    /// A device operation; `skew` is device time minus receive time.
    pub fn op(
        &mut self,
        reader: &str,
        op: DeviceOp,
        t: DateTime<Utc>,
        skew: TimeDelta,
    ) -> Arc<str> {
        let r = t + self.delay();
        self.push(reader, None, EventKind::Operation { op }, None, r + skew, r)
    }

    /// Members pass the readers in order, 5 s apart, readers 40 s apart. Returns the ids per
    /// reader (outer first) and the time after the last reader.
    pub fn walk(
        &mut self,
        readers: &[(&str, Direction)],
        members: &[&str],
        t0: DateTime<Utc>,
    ) -> (Vec<Vec<Arc<str>>>, DateTime<Utc>) {
        let mut t = t0;
        let mut ids = Vec::new();
        for (reader, dir) in readers {
            let mut at_reader = Vec::new();
            for (i, m) in members.iter().enumerate() {
                let dt = TimeDelta::seconds(5 * i64::try_from(i).unwrap_or(0));
                at_reader.push(self.pass(reader, m, *dir, t + dt));
            }
            ids.push(at_reader);
            t += TimeDelta::seconds(40);
        }
        (ids, t)
    }

    /// Enter the site (mantrap, corridor and optionally a hall).
    pub fn walk_in(
        &mut self,
        l: &Layout,
        hall: Option<&Hall>,
        members: &[&str],
        t0: DateTime<Utc>,
    ) -> (Vec<Vec<Arc<str>>>, DateTime<Utc>) {
        let mut readers = vec![
            (l.mantrap_in.as_str(), Direction::Entry),
            (l.corridor_in.as_str(), Direction::Entry),
        ];
        if let Some(h) = hall {
            readers.push((h.entry.as_str(), Direction::Entry));
        }
        self.walk(&readers, members, t0)
    }

    /// Leave the site (optionally a hall, corridor, mantrap).
    pub fn walk_out(
        &mut self,
        l: &Layout,
        hall: Option<&Hall>,
        members: &[&str],
        t0: DateTime<Utc>,
    ) -> (Vec<Vec<Arc<str>>>, DateTime<Utc>) {
        let mut readers = Vec::new();
        if let Some(h) = hall {
            readers.push((h.exit.as_str(), Direction::Exit));
        }
        readers.push((l.corridor_out.as_str(), Direction::Exit));
        readers.push((l.mantrap_out.as_str(), Direction::Exit));
        self.walk(&readers, members, t0)
    }
}

/// A change to the ticket book, with its time.
#[derive(Debug, Clone)]
pub enum TicketOp {
    Create(Box<VisitTicket>, DateTime<Utc>),
    Cancel(String, DateTime<Utc>),
    Close(String, DateTime<Utc>),
}

/// Applies ticket operations to a fresh book; panics on a refused one (generator bug).
pub fn book(site: &Site, ops: &[TicketOp]) -> TicketBook {
    let mut book = TicketBook::new();
    for op in ops {
        let result = match op {
            TicketOp::Create(t, at) => book.create((**t).clone(), site, *at).map(|_| ()),
            TicketOp::Cancel(id, at) => book.cancel(id, *at).map(|_| ()),
            TicketOp::Close(id, at) => book.close(id, *at).map(|_| ()),
        };
        if let Err(e) = result {
            panic!("generated ticket operation refused: {e}");
        }
    }
    book
}

/// Applies ticket operations through the access service (stored, chained, live), each at its
/// time, actor `ticketing`; panics on a refused one (generator bug).
pub fn apply_to_service(service: &dcguard::access::service::AccessService, ops: &[TicketOp]) {
    use dcguard::access::service::VisitInput;
    for op in ops {
        let result = match op {
            TicketOp::Create(t, at) => {
                let t = (**t).clone();
                let input = VisitInput {
                    id: t.id,
                    site: t.site,
                    rooms: t.rooms,
                    window_start: t.window_start,
                    window_end: t.window_end,
                    pic: t.pic,
                    visitors: t.visitors,
                    activity_plan: t.activity_plan,
                    approver: t.approver,
                };
                service.create_visit(input, "ticketing", *at)
            }
            TicketOp::Cancel(id, at) => service.cancel_visit(id, "ticketing", *at),
            TicketOp::Close(id, at) => service.close_visit(id, "ticketing", *at),
        };
        if let Err(e) = result {
            panic!("generated ticket operation refused: {e}");
        }
    }
}

/// The time a finding's latency is measured from: the deadline for `overstay` (no event
/// triggers it), else the latest effective time (device time, or receive time for a skewed
/// clock) among its evidence events.
pub fn trigger_time(
    f: &Finding,
    events: &std::collections::HashMap<Arc<str>, AccessEvent>,
    max_skew: TimeDelta,
) -> DateTime<Utc> {
    if f.rule == Rule::Overstay {
        return f.at;
    }
    f.evidence
        .iter()
        .filter_map(|id| events.get(id))
        .map(|e| {
            if (e.device_time - e.received_at).abs() > max_skew {
                e.received_at
            } else {
                e.device_time
            }
        })
        .max()
        .unwrap_or(f.at)
}

/// An anomaly the generator planted: a finding must carry this rule, this ticket and this
/// event among its evidence.
#[derive(Debug, Clone, PartialEq)]
pub struct Planted {
    pub rule: Rule,
    pub ticket: Option<String>,
    pub key_event: Arc<str>,
    pub note: String,
}

impl Planted {
    pub fn matches(&self, f: &Finding) -> bool {
        f.rule == self.rule && f.ticket == self.ticket && f.evidence.contains(&self.key_event)
    }
}

/// One generated day at one site.
#[derive(Debug, Clone)]
pub struct SyntheticDay {
    pub site: String,
    pub ticket_ops: Vec<TicketOp>,
    /// In arrival (receive) order.
    pub events: Vec<AccessEvent>,
    pub planted: Vec<Planted>,
    /// Start of the day (site local midnight) and end (next local midnight), UTC.
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub tickets_created: usize,
}

struct Gen<'a> {
    site: &'a Site,
    l: Layout,
    rng: Rng,
    ev: Events,
    ops: Vec<TicketOp>,
    planted: Vec<Planted>,
    next_person: u64,
    next_ticket: u64,
    created_at: DateTime<Utc>,
    cred_base: u64,
}

fn staff_cred(site: &Site, role: StaffRole, start_hour: u32, index: usize) -> String {
    site.access
        .staff
        .iter()
        .find(|s| {
            s.role == role
                && s.shift
                    .is_some_and(|(a, _)| chrono::Timelike::hour(&a) == start_hour)
        })
        .and_then(|s| s.credentials.get(index).cloned())
        .unwrap_or_else(|| panic!("{} has a {role:?} starting at {start_hour}:00", site.id))
}

impl Gen<'_> {
    fn person(&mut self, kind: VisitorKind, pic: Option<&str>) -> Visitor {
        self.next_person += 1;
        let n = self.next_person;
        Visitor {
            name: format!("Person {} {n}", self.site.id),
            identity_number: format!("ID-{}-{n:05}", self.site.id),
            organisation: match kind {
                VisitorKind::Employee => "Pusintek".to_string(),
                VisitorKind::ThirdParty => format!("Vendor {}", n % 7),
            },
            kind,
            credentials: vec![(self.cred_base + n).to_string()],
            pic: pic.map(str::to_string),
        }
    }

    fn pic(&mut self) -> Person {
        let v = self.person(VisitorKind::Employee, None);
        Person {
            name: v.name,
            identity_number: v.identity_number,
            organisation: v.organisation,
            credentials: v.credentials,
        }
    }

    fn ticket(
        &mut self,
        rooms: Vec<String>,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        pic: Person,
        visitors: Vec<Visitor>,
    ) -> String {
        self.next_ticket += 1;
        let id = format!(
            "ITSM-{}-{:04}",
            self.site.id.to_uppercase(),
            self.next_ticket
        );
        let ticket = VisitTicket {
            id: id.clone(),
            site: self.site.id.clone(),
            rooms,
            window_start: start,
            window_end: end,
            pic,
            visitors,
            activity_plan: "maintenance".to_string(),
            approver: "Kepala Subbagian".to_string(),
            state: TicketState::Approved,
            history: Vec::new(),
        };
        self.ops
            .push(TicketOp::Create(Box::new(ticket), self.created_at));
        id
    }

    fn rooms_for(&mut self, hall: &Hall) -> Vec<String> {
        if self.site.access.destination_room_required || self.rng.chance(50) {
            vec![hall.room.clone()]
        } else {
            Vec::new()
        }
    }

    fn plant(&mut self, rule: Rule, ticket: Option<String>, key_event: Arc<str>, note: &str) {
        self.planted.push(Planted {
            rule,
            ticket,
            key_event,
            note: note.to_string(),
        });
    }

    fn hall(&mut self) -> Hall {
        let i = usize::try_from(self.rng.below(self.l.halls.len() as u64)).unwrap_or(0);
        self.l.halls[i].clone()
    }

    /// A single employee visit under a fresh ticket (the PIC alone).
    fn solo_ticket(
        &mut self,
        rooms: Vec<String>,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> (String, String) {
        let pic = self.pic();
        let cred = pic.credentials[0].clone();
        let id = self.ticket(rooms, start, end, pic, Vec::new());
        (id, cred)
    }

    fn minutes(m: i64) -> TimeDelta {
        TimeDelta::minutes(m)
    }
}

/// Generates a synthetic day for `site`: about 1000 badge events, 200 tickets and
/// `planted` anomalies (every rule, round robin), deterministic for a seed.
pub fn synthetic_day(site: &Site, seed: u64, planted: usize) -> SyntheticDay {
    let start = local(site, 0, 0, 0);
    let end = start + TimeDelta::days(1);
    let site_no = match site.id.as_str() {
        "dc" => 1,
        "smart-dc" => 2,
        _ => 3,
    };
    let mut g = Gen {
        site,
        l: Layout::of(site),
        rng: Rng::new(seed),
        ev: Events::new(&site.id, seed ^ 0xA5A5),
        ops: Vec::new(),
        planted: Vec::new(),
        next_person: 0,
        next_ticket: 0,
        created_at: start - TimeDelta::days(2),
        cred_base: 500_000 + site_no * 100_000,
    };
    let l = g.l.clone();
    let m = Gen::minutes;

    // Staff: the all-day technical escorts, control room shifts, security patrols.
    let te1 = staff_cred(site, StaffRole::TechnicalEscort, 8, 0);
    let cr_day = staff_cred(site, StaffRole::ControlRoom, 7, 0);
    let cr_night = staff_cred(site, StaffRole::ControlRoom, 19, 0);
    let cr_night_alt = staff_cred(site, StaffRole::ControlRoom, 19, 1);
    let sec_day = staff_cred(site, StaffRole::Security, 7, 0);
    let sec_day_alt = staff_cred(site, StaffRole::Security, 7, 1);
    let sec_night = staff_cred(site, StaffRole::Security, 19, 0);
    g.ev.walk_in(&l, None, &[&te1], local(site, 7, 45, 0));
    g.ev.walk_out(&l, None, &[&te1], local(site, 17, 15, 0));
    g.ev.walk_in(&l, None, &[&cr_day], local(site, 6, 50, 0));
    g.ev.walk_out(&l, None, &[&cr_day], local(site, 19, 10, 0));
    g.ev.walk_in(&l, None, &[&cr_night], local(site, 18, 50, 0));
    for h in [7, 9, 11, 13, 15, 17] {
        let hall = g.hall();
        let (_, t) =
            g.ev.walk_in(&l, Some(&hall), &[&sec_day], local(site, h, 30, 0));
        g.ev.walk_out(&l, Some(&hall), &[&sec_day], t + m(15));
    }
    for h in [19, 21, 23] {
        let hall = g.hall();
        let (_, t) =
            g.ev.walk_in(&l, Some(&hall), &[&sec_night], local(site, h, 20, 0));
        g.ev.walk_out(&l, Some(&hall), &[&sec_night], t + m(15));
    }
    for (i, op) in [DeviceOp::PowerOn, DeviceOp::AlarmCancelled, DeviceOp::Other]
        .into_iter()
        .enumerate()
    {
        let reader = l.halls[i % l.halls.len()].entry.clone();
        let at = local(site, 6 + u32::try_from(i).unwrap_or(0) * 5, 5, 0);
        g.ev.op(&reader, op, at, TimeDelta::zero());
    }

    // Clean visits: PIC plus up to three visitors, inside their window.
    let mut clean_creds = Vec::new();
    for _ in 0..50 {
        let hall = g.hall();
        let rooms = g.rooms_for(&hall);
        let start_min = g.rng.range(8 * 60 + 30, 14 * 60);
        let w_start = local(site, 0, 0, 0) + m(start_min);
        let w_end = w_start + m(g.rng.range(60, 150));
        let pic = g.pic();
        let mut visitors = Vec::new();
        for _ in 0..g.rng.below(4) {
            let kind = if g.rng.chance(60) {
                VisitorKind::ThirdParty
            } else {
                VisitorKind::Employee
            };
            let pic_id = (kind == VisitorKind::ThirdParty).then(|| pic.identity_number.clone());
            let v = g.person(kind, pic_id.as_deref());
            visitors.push(v);
        }
        let mut members: Vec<String> = vec![pic.credentials[0].clone()];
        members.extend(visitors.iter().map(|v| v.credentials[0].clone()));
        clean_creds.extend(members.iter().cloned());
        g.ticket(rooms, w_start, w_end, pic, visitors);
        let enter = w_start + m(g.rng.range(-20, 30));
        let refs: Vec<&str> = members.iter().map(String::as_str).collect();
        g.ev.walk_in(&l, Some(&hall), &refs, enter);
        let leave = w_end - m(g.rng.range(5, 30));
        let mut out_order = refs.clone();
        if g.rng.chance(50) {
            out_order.reverse();
        }
        g.ev.walk_out(&l, Some(&hall), &out_order, leave);
    }
    // Clean single denials at hall readers, far apart.
    for k in 0..15_i64 {
        let hall = l.halls[usize::try_from(k).unwrap_or(0) % l.halls.len()].clone();
        let cred = clean_creds[usize::try_from(g.rng.below(clean_creds.len() as u64)).unwrap_or(0)]
            .clone();
        g.ev.deny(&hall.entry, Some(&cred), local(site, 8, 10, 0) + m(31 * k));
    }

    // Tickets for other days: future ones (some cancelled) and closed past ones.
    let mut other_day_creds = Vec::new();
    while g.next_ticket < 200 - 30 {
        let day = g.rng.range(-3, 6);
        let day = if day == 0 { 1 } else { day };
        let hall = g.hall();
        let rooms = g.rooms_for(&hall);
        let w_start = local(site, 9, 0, 0) + TimeDelta::days(day) + m(g.rng.range(0, 360));
        let w_end = w_start + m(90);
        let pic = g.pic();
        let tp = g.person(VisitorKind::ThirdParty, Some(&pic.identity_number));
        other_day_creds.push(tp.credentials[0].clone());
        let id = g.ticket(rooms, w_start, w_end, pic, vec![tp]);
        if day < 0 {
            let at = w_end + TimeDelta::days(1);
            g.ops.push(TicketOp::Close(id, at.min(start - m(60))));
        } else if g.rng.chance(15) {
            g.ops.push(TicketOp::Cancel(id, start - m(120)));
        }
    }

    // Planted anomalies, rules round robin; daytime slots 9 min apart, evening slots hourly.
    let mut day_slot = 0_i64;
    let mut evening_slot = 0_i64;
    let mut extra = 0_u64;
    for i in 0..planted {
        let rule = Rule::ALL[i % Rule::ALL.len()];
        let v = i / Rule::ALL.len();
        let t = if rule == Rule::NoTechnicalEscort {
            evening_slot += 1;
            local(site, 17, 45, 0) + m(60 * (evening_slot - 1))
        } else {
            day_slot += 1;
            local(site, 8, 40, 0) + m(9 * (day_slot - 1))
        };
        let hall = g.hall();
        match rule {
            Rule::NoTicket => {
                let (cred, note) = if v % 2 == 0 {
                    let c = other_day_creds[v % other_day_creds.len()].clone();
                    (c, "a visitor of another day enters")
                } else {
                    (
                        cr_night_alt.clone(),
                        "night-shift control room staff enters at day time",
                    )
                };
                let (ids, t2) = g.ev.walk_in(&l, None, &[&cred], t);
                g.ev.walk_out(&l, None, &[&cred], t2 + m(5));
                g.plant(rule, None, ids[0][0].clone(), note);
            }
            Rule::OutsideWindow => {
                let (w_start, w_end, note) = if v % 2 == 0 {
                    (t + m(150), t + m(240), "enters 150 min before the window")
                } else {
                    (t - m(180), t - m(60), "enters 60 min after the window")
                };
                let rooms = g.rooms_for(&hall);
                let (id, cred) = g.solo_ticket(rooms, w_start, w_end);
                let (ids, t2) = g.ev.walk_in(&l, Some(&hall), &[&cred], t);
                g.ev.walk_out(&l, Some(&hall), &[&cred], t2 + m(10));
                g.plant(rule, Some(id), ids[0][0].clone(), note);
            }
            Rule::WrongRoom => {
                let listed = l.halls[v % l.halls.len()].clone();
                let other = l.halls[(v + 1) % l.halls.len()].clone();
                let (id, cred) = g.solo_ticket(vec![listed.room.clone()], t - m(30), t + m(60));
                let (ids, t2) = g.ev.walk_in(&l, Some(&other), &[&cred], t);
                g.ev.walk_out(&l, Some(&other), &[&cred], t2 + m(10));
                g.plant(
                    rule,
                    Some(id),
                    ids[2][0].clone(),
                    "enters a hall not on the ticket",
                );
            }
            Rule::UnescortedThirdParty => {
                let rooms = g.rooms_for(&hall);
                let pic = g.pic();
                let tp = g.person(VisitorKind::ThirdParty, Some(&pic.identity_number));
                let (pc, tc) = (pic.credentials[0].clone(), tp.credentials[0].clone());
                let id = g.ticket(rooms, t - m(30), t + m(60), pic, vec![tp]);
                if v % 2 == 0 {
                    // The third party enters the mantrap alone; the PIC follows 3 min later.
                    let key = g.ev.pass(&l.mantrap_in, &tc, Direction::Entry, t);
                    g.ev.pass(&l.mantrap_in, &pc, Direction::Entry, t + m(3));
                    let readers = [
                        (l.corridor_in.as_str(), Direction::Entry),
                        (hall.entry.as_str(), Direction::Entry),
                    ];
                    let (_, t2) = g.ev.walk(&readers, &[&pc, &tc], t + m(4));
                    g.ev.walk_out(&l, Some(&hall), &[&pc, &tc], t2 + m(10));
                    g.plant(rule, Some(id), key, "third party passes the mantrap alone");
                } else {
                    // The PIC leaves the site while the third party stays in the hall.
                    let (_, t2) = g.ev.walk_in(&l, Some(&hall), &[&pc, &tc], t);
                    let (ids, _) = g.ev.walk_out(&l, Some(&hall), &[&pc], t2 + m(5));
                    g.ev.walk_out(&l, Some(&hall), &[&tc], t2 + m(20));
                    g.plant(
                        rule,
                        Some(id),
                        ids[2][0].clone(),
                        "PIC leaves, third party stays",
                    );
                }
            }
            Rule::NoTechnicalEscort => {
                let rooms = g.rooms_for(&hall);
                let (id, cred) = g.solo_ticket(rooms, t, t + m(50));
                let (ids, t2) = g.ev.walk_in(&l, Some(&hall), &[&cred], t + m(5));
                g.ev.walk_out(&l, Some(&hall), &[&cred], t2 + m(20));
                g.plant(
                    rule,
                    Some(id),
                    ids[0][0].clone(),
                    "evening visit, no escort inside",
                );
            }
            Rule::Overstay => {
                let rooms = g.rooms_for(&hall);
                let (id, cred) = g.solo_ticket(rooms, t - m(60), t);
                let (ids, _) = g.ev.walk_in(&l, Some(&hall), &[&cred], t - m(50));
                g.ev.walk_out(&l, Some(&hall), &[&cred], t + m(45));
                g.plant(
                    rule,
                    Some(id),
                    ids[0][0].clone(),
                    "leaves 45 min after the window",
                );
            }
            Rule::AntiPassback => {
                if v % 2 == 0 {
                    let (ids, _) = g.ev.walk(
                        &[
                            (l.mantrap_in.as_str(), Direction::Entry),
                            (l.mantrap_in.as_str(), Direction::Entry),
                        ],
                        &[&sec_day_alt],
                        t,
                    );
                    g.ev.pass(&l.mantrap_out, &sec_day_alt, Direction::Exit, t + m(3));
                    g.plant(rule, None, ids[1][0].clone(), "enters the mantrap twice");
                    extra += 1;
                } else {
                    let key = g.ev.pass(&l.mantrap_out, &sec_day_alt, Direction::Exit, t);
                    g.plant(rule, None, key, "leaves the mantrap without being inside");
                }
            }
            Rule::RepeatedDenied => {
                if v % 2 == 0 {
                    extra += 1;
                    let cred = format!("8{:05}", 1000 * site_no + extra);
                    let mut key = Arc::from("");
                    for k in 0..3 {
                        key =
                            g.ev.deny(&l.corridor_in, Some(&cred), t + TimeDelta::seconds(40 * k));
                    }
                    g.plant(rule, None, key, "one credential denied 3 times in 80 s");
                } else {
                    let mut key = Arc::from("");
                    for k in 0..3 {
                        extra += 1;
                        let cred = format!("8{:05}", 1000 * site_no + extra);
                        key =
                            g.ev.deny(&l.mantrap_in, Some(&cred), t + TimeDelta::seconds(50 * k));
                    }
                    g.plant(
                        rule,
                        None,
                        key,
                        "three credentials denied at one reader in 100 s",
                    );
                }
            }
            Rule::TicketNotActive => {
                let rooms = g.rooms_for(&hall);
                let (id, cred) = g.solo_ticket(rooms, t - m(30), t + m(60));
                if v % 2 == 0 {
                    g.ops.push(TicketOp::Cancel(id.clone(), start - m(60)));
                } else {
                    g.ops.push(TicketOp::Close(id.clone(), start - m(60)));
                }
                let (ids, t2) = g.ev.walk_in(&l, Some(&hall), &[&cred], t);
                g.ev.walk_out(&l, Some(&hall), &[&cred], t2 + m(10));
                g.plant(
                    rule,
                    Some(id),
                    ids[0][0].clone(),
                    "cancelled or closed ticket used",
                );
            }
            Rule::UnknownCredential => {
                extra += 1;
                let cred = format!("9{:05}", 1000 * site_no + extra);
                let key = g.ev.pass(&l.mantrap_in, &cred, Direction::Entry, t);
                g.ev.pass(&l.mantrap_out, &cred, Direction::Exit, t + m(1));
                g.plant(rule, None, key, "granted to a credential nobody knows");
            }
            Rule::UnknownReader => {
                let reader = format!("ROGUE-{}-{v}", site.id.to_uppercase());
                let key = g.ev.pass(&reader, &cr_day, Direction::Entry, t);
                g.plant(rule, None, key, "reader not in the map");
            }
            Rule::ClockSkew => {
                let readers = [
                    &l.mantrap_in,
                    &l.corridor_in,
                    &l.mantrap_out,
                    &l.corridor_out,
                ];
                let reader = readers[v % readers.len()].clone();
                let key =
                    g.ev.op(&reader, DeviceOp::PowerOn, t, TimeDelta::minutes(-20));
                // The reader's clock is set right again before its next plant.
                g.ev.op(&reader, DeviceOp::Other, t + m(2), TimeDelta::zero());
                g.plant(rule, None, key, "device clock 20 min slow");
            }
            Rule::DeviceTamper => {
                let ops = [
                    DeviceOp::DoorForced,
                    DeviceOp::Duress,
                    DeviceOp::SetTime,
                    DeviceOp::DeleteRecords,
                    DeviceOp::Tamper,
                ];
                let key =
                    g.ev.op(&hall.entry, ops[v % ops.len()], t, TimeDelta::zero());
                g.plant(rule, None, key, "device reports tampering");
            }
        }
    }
    // Fill the ticket count up to 200 with unused future tickets.
    while g.next_ticket < 200 {
        let hall = g.hall();
        let rooms = g.rooms_for(&hall);
        let w_start = local(site, 10, 0, 0) + TimeDelta::days(7);
        let pic = g.pic();
        g.ticket(rooms, w_start, w_start + m(60), pic, Vec::new());
    }

    let mut events = g.ev.events;
    events.sort_by(|a, b| (a.received_at, &a.id).cmp(&(b.received_at, &b.id)));
    let tickets_created = g
        .ops
        .iter()
        .filter(|o| matches!(o, TicketOp::Create(..)))
        .count();
    SyntheticDay {
        site: site.id.clone(),
        ticket_ops: g.ops,
        events,
        planted: g.planted,
        start,
        end,
        tickets_created,
    }
}
