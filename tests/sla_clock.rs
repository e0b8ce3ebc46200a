//! The working-hour SLA clock against the SHIPPED calendar: literal cases and properties.

use std::path::Path;
use std::sync::OnceLock;

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, TimeZone, Timelike, Utc, Weekday};
use chrono_tz::Asia::Jakarta;
use dcguard::config::{self, model::Config, model::Priority};
use dcguard::incidents::sla::{WorkingClock, due_at, remaining};
use proptest::prelude::*;

fn shipped() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config")).expect("shipped config")
    })
}

fn clock() -> WorkingClock {
    WorkingClock::new(&shipped().calendar)
}

/// An instant given in WIB (Asia/Jakarta, UTC+7).
fn wib(y: i32, m: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Jakarta
        .with_ymd_and_hms(y, m, d, h, mi, 0)
        .single()
        .expect("valid WIB time")
        .with_timezone(&Utc)
}

fn hours(h: i64) -> TimeDelta {
    TimeDelta::hours(h)
}

#[test]
fn the_shipped_calendar_is_jakarta_eight_to_five() {
    let c = clock();
    assert_eq!(c.time_zone(), Jakarta);
    assert_eq!(c.working_day_length(), hours(9));
}

#[test]
fn friday_afternoon_carries_over_the_weekend() {
    let c = clock();
    // 2026-11-20 is a Friday. One hour is left on Friday, so 8 working hours end at
    // Monday 15:00 and 9 (one full working day) at Monday 16:00.
    let fri = wib(2026, 11, 20, 16, 0);
    assert_eq!(fri.with_timezone(&Jakarta).weekday(), Weekday::Fri);
    assert_eq!(c.add_working_hours(fri, 8), wib(2026, 11, 23, 15, 0));
    assert_eq!(c.add_working_hours(fri, 9), wib(2026, 11, 23, 16, 0));
    assert_eq!(c.add_working_hours(fri, 1), wib(2026, 11, 20, 17, 0));
}

#[test]
fn boundaries_are_exact() {
    let c = clock();
    // Monday 2026-11-23.
    assert_eq!(
        c.add_working_hours(wib(2026, 11, 23, 16, 0), 1),
        wib(2026, 11, 23, 17, 0)
    );
    assert_eq!(
        c.add_working_hours(wib(2026, 11, 23, 17, 0), 1),
        wib(2026, 11, 24, 9, 0)
    );
    assert_eq!(
        c.add_working_hours(wib(2026, 11, 23, 7, 0), 1),
        wib(2026, 11, 23, 9, 0)
    );
    assert_eq!(
        c.add_working_hours(wib(2026, 11, 23, 8, 0), 9),
        wib(2026, 11, 23, 17, 0)
    );
    assert_eq!(
        c.add_working_hours(wib(2026, 11, 23, 8, 0), 10),
        wib(2026, 11, 24, 9, 0)
    );
    // Zero hours: inside working time (both ends included) unchanged, outside moved on.
    assert_eq!(
        c.add_working_hours(wib(2026, 11, 23, 8, 0), 0),
        wib(2026, 11, 23, 8, 0)
    );
    assert_eq!(
        c.add_working_hours(wib(2026, 11, 23, 17, 0), 0),
        wib(2026, 11, 23, 17, 0)
    );
    assert_eq!(
        c.add_working_hours(wib(2026, 11, 23, 17, 1), 0),
        wib(2026, 11, 24, 8, 0)
    );
    assert_eq!(
        c.add_working_hours(wib(2026, 11, 21, 10, 0), 0),
        wib(2026, 11, 23, 8, 0)
    );
    // A start at night begins at the next working start.
    assert_eq!(
        c.add_working_hours(wib(2026, 11, 23, 23, 30), 2),
        wib(2026, 11, 24, 10, 0)
    );
    assert!(c.is_working_time(wib(2026, 11, 23, 8, 0)));
    assert!(c.is_working_time(wib(2026, 11, 23, 17, 0)));
    assert!(!c.is_working_time(wib(2026, 11, 23, 17, 1)));
    assert!(!c.is_working_time(wib(2026, 11, 23, 7, 59)));
}

#[test]
fn a_calendar_without_working_days_saturates_instead_of_hanging() {
    let mut calendar = shipped().calendar.clone();
    calendar.working_days.clear();
    let c = WorkingClock::new(&calendar);
    let t = wib(2026, 11, 23, 10, 0);
    assert_eq!(c.add_working_hours(t, 1), DateTime::<Utc>::MAX_UTC);
    assert_eq!(
        c.working_duration_between(t, t + TimeDelta::days(30)),
        TimeDelta::zero()
    );
}

#[test]
fn the_day_before_a_holiday() {
    let c = clock();
    // Thursday 24 December 2026; Friday 25 December is Christmas. Cuti bersama (24
    // December) is deliberately not in the shipped list, so the 24th is a working day.
    let thu = wib(2026, 12, 24, 15, 0);
    assert!(c.is_working_time(thu));
    assert_eq!(c.add_working_hours(thu, 8), wib(2026, 12, 28, 14, 0));
    assert_eq!(
        c.working_duration_between(thu, wib(2026, 12, 28, 14, 0)),
        hours(8)
    );
    // Wednesday 18 March 2026, then Nyepi (19 March, Thursday): Friday 20 March continues.
    assert_eq!(
        c.add_working_hours(wib(2026, 3, 18, 16, 0), 2),
        wib(2026, 3, 20, 9, 0)
    );
}

#[test]
fn independence_day_2026_is_not_a_working_day() {
    let c = clock();
    // 17 August 2026 is a Monday and a national holiday.
    let day = wib(2026, 8, 17, 10, 0);
    assert_eq!(day.with_timezone(&Jakarta).weekday(), Weekday::Mon);
    assert!(!c.is_working_time(day));
    assert_eq!(c.add_working_hours(day, 1), wib(2026, 8, 18, 9, 0));
    // Friday 14 August 16:00 + 8 h: 1 h on Friday, the weekend, the holiday, then 7 h on
    // Tuesday.
    assert_eq!(
        c.add_working_hours(wib(2026, 8, 14, 16, 0), 8),
        wib(2026, 8, 18, 15, 0)
    );
    assert_eq!(
        c.working_duration_between(wib(2026, 8, 14, 0, 0), wib(2026, 8, 19, 0, 0)),
        hours(18)
    );
}

#[test]
fn due_times_follow_the_priority_targets() {
    let c = clock();
    let policy = &shipped().priority;
    // P1 at 02:00 on a Sunday: 3 clock hours, due 05:00 the same night.
    let sunday = wib(2026, 11, 22, 2, 0);
    assert_eq!(sunday.with_timezone(&Jakarta).weekday(), Weekday::Sun);
    assert_eq!(
        due_at(sunday, Priority::P1, policy, &c),
        wib(2026, 11, 22, 5, 0)
    );
    // The same instant for P2-P5 starts on Monday 08:00.
    assert_eq!(
        due_at(sunday, Priority::P2, policy, &c),
        wib(2026, 11, 23, 16, 0)
    );
    assert_eq!(
        due_at(sunday, Priority::P3, policy, &c),
        wib(2026, 11, 24, 15, 0)
    );
    assert_eq!(
        due_at(sunday, Priority::P4, policy, &c),
        wib(2026, 11, 25, 14, 0)
    );
    // 80 h = 8 full days (Mon 23 Nov to Wed 2 Dec) + 8 h on Thursday 3 December.
    assert_eq!(
        due_at(sunday, Priority::P5, policy, &c),
        wib(2026, 12, 3, 16, 0)
    );
    // P1 ignores holidays and nights.
    let holiday_night = wib(2026, 8, 17, 23, 0);
    assert_eq!(
        due_at(holiday_night, Priority::P1, policy, &c),
        wib(2026, 8, 18, 2, 0)
    );
}

#[test]
fn remaining_time_runs_on_the_target_clock() {
    let c = clock();
    let policy = &shipped().priority;
    let sunday = wib(2026, 11, 22, 2, 0);
    let due = due_at(sunday, Priority::P2, policy, &c);
    // The weekend does not count for a P2; 30 min into Monday, 7.5 h are left.
    assert_eq!(remaining(sunday, due, Priority::P2, policy, &c), hours(8));
    let monday = wib(2026, 11, 23, 8, 30);
    assert_eq!(
        remaining(monday, due, Priority::P2, policy, &c),
        TimeDelta::minutes(450)
    );
    // Overdue: 17:30 is after working hours, so only one working hour (16-17) is late.
    let late = wib(2026, 11, 23, 17, 30);
    assert_eq!(remaining(late, due, Priority::P2, policy, &c), -hours(1));
    // P1 counts clock time, nights and weekends included.
    let p1_due = due_at(sunday, Priority::P1, policy, &c);
    assert_eq!(
        remaining(wib(2026, 11, 22, 6, 0), p1_due, Priority::P1, policy, &c),
        -hours(1)
    );
}

/// Instants from 2025-12-01 to 2027-12-31 (the shipped holiday years), to the second.
fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    let lo = wib(2025, 12, 1, 0, 0).timestamp();
    let hi = wib(2027, 12, 31, 0, 0).timestamp();
    (lo..hi).prop_map(|s| Utc.timestamp_opt(s, 0).single().expect("in range"))
}

/// Same, on whole minutes (for the minute-counting oracle).
fn minute_instant() -> impl Strategy<Value = DateTime<Utc>> {
    instant().prop_map(|t| t - TimeDelta::seconds(i64::from(t.second())))
}

fn is_holiday(d: NaiveDate) -> bool {
    shipped().calendar.holidays.contains(&d)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn monotonic_in_start(a in instant(), b in instant(), h in 0u32..200) {
        let c = clock();
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        prop_assert!(c.add_working_hours(lo, h) <= c.add_working_hours(hi, h));
    }

    #[test]
    fn monotonic_in_hours(t in instant(), a in 0u32..200, b in 0u32..200) {
        let c = clock();
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        prop_assert!(c.add_working_hours(t, lo) <= c.add_working_hours(t, hi));
        if lo < hi {
            prop_assert!(c.add_working_hours(t, lo) < c.add_working_hours(t, hi));
        }
    }

    #[test]
    fn additive(t in instant(), a in 0i64..20_000, b in 0i64..20_000) {
        let c = clock();
        let (a, b) = (TimeDelta::minutes(a), TimeDelta::minutes(b));
        prop_assert_eq!(
            c.add_working_time(c.add_working_time(t, a), b),
            c.add_working_time(t, a + b)
        );
    }

    #[test]
    fn result_is_working_time_on_a_working_day(t in instant(), m in 0i64..20_000) {
        let c = clock();
        let r = c.add_working_time(t, TimeDelta::minutes(m));
        prop_assert!(r >= t);
        prop_assert!(c.is_working_time(r), "{r} is outside working time");
        let local = r.with_timezone(&Jakarta);
        prop_assert!(!matches!(local.weekday(), Weekday::Sat | Weekday::Sun));
        prop_assert!(!is_holiday(local.date_naive()));
        let (h, mi, s) = (local.hour(), local.minute(), local.second());
        prop_assert!((8..17).contains(&h) || (h, mi, s) == (17, 0, 0));
        // Only zero hours can end at a day's start (the end boundary convention).
        if m > 0 {
            prop_assert!((h, mi, s) != (8, 0, 0), "{r} ends at a working start");
        }
    }

    #[test]
    fn duration_inverts_addition(t in instant(), m in 0i64..20_000) {
        let c = clock();
        let d = TimeDelta::minutes(m);
        prop_assert_eq!(c.working_duration_between(t, c.add_working_time(t, d)), d);
    }

    #[test]
    fn duration_matches_a_minute_counting_oracle(a in minute_instant(), span in 0i64..(40 * 24 * 60)) {
        let c = clock();
        let b = a + TimeDelta::minutes(span);
        let mut oracle = 0i64;
        let mut m = a;
        while m < b {
            let local = m.with_timezone(&Jakarta);
            let working_day = !matches!(local.weekday(), Weekday::Sat | Weekday::Sun)
                && !is_holiday(local.date_naive());
            if working_day && (8..17).contains(&local.hour()) {
                oracle += 1;
            }
            m += TimeDelta::minutes(1);
        }
        prop_assert_eq!(c.working_duration_between(a, b), TimeDelta::minutes(oracle));
        prop_assert_eq!(c.working_duration_between(b, a), TimeDelta::zero());
    }

    #[test]
    fn due_at_uses_the_right_clock(t in instant()) {
        let c = clock();
        let policy = &shipped().priority;
        prop_assert_eq!(due_at(t, Priority::P1, policy, &c), t + TimeDelta::hours(3));
        for (p, h) in [(Priority::P2, 8), (Priority::P3, 16), (Priority::P4, 24), (Priority::P5, 80)] {
            let due = due_at(t, p, policy, &c);
            prop_assert_eq!(due, c.add_working_hours(t, h));
            prop_assert_eq!(c.working_duration_between(t, due), TimeDelta::hours(h.into()));
            prop_assert_eq!(remaining(t, due, p, policy, &c), TimeDelta::hours(h.into()));
        }
    }
}
