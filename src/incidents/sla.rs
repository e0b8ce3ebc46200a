//! SLA clocks: the working-hour calendar clock (P2-P5) and incident due times.
//!
//! facility-spec "Incident priority": P1 runs on clock hours, 24/7; P2-P5 run on ministry
//! working hours, working days 08:00-17:00 Asia/Jakarta, and outside them the clock stops
//! until the next working day (weekends and public holidays are not working days).
//!
//! Conventions (the property tests in `tests/sla_clock.rs` hold them):
//!
//! * Working time is the closed interval `[start, end]` of each working day, local time.
//! * A start outside working time begins at the next working start.
//! * Hours that finish exactly at the end of a working day end AT that end (16:00 + 1 h =
//!   17:00 the same day), not at the next day's start; an instant at the end of a day
//!   holds no working time, so 17:00 + 1 h = 09:00 on the next working day.
//! * Adding zero hours moves an instant outside working time to the next working start
//!   and leaves an instant inside `[start, end]` unchanged, so adding is additive:
//!   `add(add(t, a), b) == add(t, a + b)` for all non-negative `a`, `b`.
//! * The calendar arithmetic runs on local wall-clock time. Asia/Jakarta has had no
//!   daylight saving since 1964; with a zone that has, a working day crossing a change
//!   would count wall-clock hours (documented limitation, not reachable with the shipped
//!   configuration). A local instant inside a DST gap maps to the first instant after it.

use chrono::{DateTime, Days, NaiveDateTime, NaiveTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

use crate::config::model::{Calendar, Clock, Priority, PriorityPolicy};

/// Upper bound of calendar days scanned when no working day is found (a calendar without
/// working weekdays, which validation allows): the clock then saturates instead of
/// looping forever.
const MAX_IDLE_DAYS: u32 = 3660;

/// The working-hour clock of one calendar.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkingClock {
    calendar: Calendar,
}

impl WorkingClock {
    /// A clock on `calendar` (copied; the clock is immutable).
    pub fn new(calendar: &Calendar) -> Self {
        WorkingClock {
            calendar: calendar.clone(),
        }
    }

    /// The calendar this clock runs on.
    pub fn calendar(&self) -> &Calendar {
        &self.calendar
    }

    /// The time zone of the calendar.
    pub fn time_zone(&self) -> Tz {
        self.calendar.time_zone
    }

    /// Length of one working day.
    pub fn working_day_length(&self) -> TimeDelta {
        self.calendar.working_hours_end - self.calendar.working_hours_start
    }

    /// True when `t` lies inside working time (the closed interval `[start, end]` of a
    /// working day, local time).
    pub fn is_working_time(&self, t: DateTime<Utc>) -> bool {
        let local = self.local(t);
        self.calendar.is_working_day(local.date())
            && local.time() >= self.calendar.working_hours_start
            && local.time() <= self.calendar.working_hours_end
    }

    /// `start` plus `hours` working hours.
    pub fn add_working_hours(&self, start: DateTime<Utc>, hours: u32) -> DateTime<Utc> {
        self.add_working_time(start, TimeDelta::hours(i64::from(hours)))
    }

    /// `start` plus `amount` of working time (negative amounts count as zero). See the
    /// module documentation for the boundary conventions.
    pub fn add_working_time(&self, start: DateTime<Utc>, amount: TimeDelta) -> DateTime<Utc> {
        let day_start = self.calendar.working_hours_start;
        let day_end = self.calendar.working_hours_end;
        let mut remaining = amount.max(TimeDelta::zero());
        let local = self.local(start);
        let mut date = local.date();
        let mut from = local.time();
        let mut idle_days = 0u32;
        loop {
            if self.calendar.is_working_day(date) && from <= day_end {
                idle_days = 0;
                let begin = from.max(day_start);
                let available = day_end - begin;
                if remaining <= available {
                    return self.utc(date.and_time(begin) + remaining);
                }
                remaining -= available;
            } else {
                idle_days += 1;
                if idle_days > MAX_IDLE_DAYS {
                    return DateTime::<Utc>::MAX_UTC;
                }
            }
            match date.checked_add_days(Days::new(1)) {
                Some(next) => date = next,
                None => return DateTime::<Utc>::MAX_UTC,
            }
            from = NaiveTime::MIN;
        }
    }

    /// Working time between `a` and `b` (zero when `b` is not after `a`).
    pub fn working_duration_between(&self, a: DateTime<Utc>, b: DateTime<Utc>) -> TimeDelta {
        if b <= a {
            return TimeDelta::zero();
        }
        let day_start = self.calendar.working_hours_start;
        let day_end = self.calendar.working_hours_end;
        let (la, lb) = (self.local(a), self.local(b));
        let mut total = TimeDelta::zero();
        let mut date = la.date();
        while date <= lb.date() {
            if self.calendar.is_working_day(date) {
                let lo = if date == la.date() {
                    la.time().max(day_start)
                } else {
                    day_start
                };
                let hi = if date == lb.date() {
                    lb.time().min(day_end)
                } else {
                    day_end
                };
                if hi > lo {
                    total += hi - lo;
                }
            }
            match date.checked_add_days(Days::new(1)) {
                Some(next) => date = next,
                None => break,
            }
        }
        total
    }

    fn local(&self, t: DateTime<Utc>) -> NaiveDateTime {
        t.with_timezone(&self.calendar.time_zone).naive_local()
    }

    /// Local wall-clock time to UTC; a time inside a DST gap moves to the first valid
    /// instant after it.
    fn utc(&self, local: NaiveDateTime) -> DateTime<Utc> {
        let tz = self.calendar.time_zone;
        let mut probe = local;
        // A gap is at most a few hours; 48 quarter-hour steps cover any real zone.
        for _ in 0..48 {
            if let Some(t) = tz.from_local_datetime(&probe).earliest() {
                return t.with_timezone(&Utc);
            }
            probe += TimeDelta::minutes(15);
        }
        // No zone has a 12-hour gap; read the wall clock as UTC rather than panic.
        Utc.from_utc_datetime(&local)
    }
}

/// The SLA due time of an incident of `priority` opened at `opened_at`: the priority's
/// target on its clock (shipped: P1 = 3 clock hours, P2-P5 = 8/16/24/80 working hours).
pub fn due_at(
    opened_at: DateTime<Utc>,
    priority: Priority,
    policy: &PriorityPolicy,
    clock: &WorkingClock,
) -> DateTime<Utc> {
    let target = policy.target(priority);
    match target.clock {
        Clock::TwentyFourSeven => opened_at
            .checked_add_signed(TimeDelta::hours(i64::from(target.hours)))
            .unwrap_or(DateTime::<Utc>::MAX_UTC),
        Clock::WorkingHours => clock.add_working_hours(opened_at, target.hours),
    }
}

/// Time left at `now` until `due` on the clock of `priority`'s target: clock time for a
/// 24x7 target, working time for a working-hours target (so a P3 does not "lose" a weekend).
/// Negative once overdue, by the same measure.
pub fn remaining(
    now: DateTime<Utc>,
    due: DateTime<Utc>,
    priority: Priority,
    policy: &PriorityPolicy,
    clock: &WorkingClock,
) -> TimeDelta {
    match policy.target(priority).clock {
        Clock::TwentyFourSeven => due - now,
        Clock::WorkingHours if now <= due => clock.working_duration_between(now, due),
        Clock::WorkingHours => -clock.working_duration_between(due, now),
    }
}
