//! Staleness: which points have had no good reading for too long. Pure code, time passed in.
//!
//! A [`StaleTracker`] is told which points to expect and at which interval
//! ([`StaleTracker::expect`]), then every reading ([`StaleTracker::observe`]). On
//! [`StaleTracker::tick`] it returns a [`Reading::stale`] for every point whose last
//! **good** reading is older than `stale_after_intervals x interval` (config
//! `daemon.stale_after_intervals`, default 3), once per transition: a point that is
//! already stale yields nothing on later ticks. A good reading clears the point, so the
//! next silence is a new transition.
//!
//! Rules of the clock:
//! * A point never seen good counts from the instant it was registered (`expect`), so a
//!   sensor that never publishes goes stale too.
//! * Bad readings do not refresh a point: a sensor that only sends garbage is stale after
//!   the same time as a silent one (its bad readings are reported as they come, too).
//! * The age is measured from the reading's `sampled_at`. A good reading that is already
//!   older than the limit (a message queued by the broker during an outage) clears the
//!   point, and the next tick reports it stale again: two transitions, which is what
//!   happened to the data.
//! * The stale reading is stamped with the tick's `now`.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::model::{PointId, Reading};

#[derive(Debug, Clone)]
struct Entry {
    /// `stale_after_intervals x interval`, precomputed.
    limit: chrono::Duration,
    /// The newest `sampled_at` of a good reading, or the registration instant.
    last_good: DateTime<Utc>,
    stale: bool,
}

/// Tracks the age of the last good reading of every expected point.
#[derive(Debug, Clone)]
pub struct StaleTracker {
    after_intervals: u32,
    points: HashMap<PointId, Entry>,
}

impl StaleTracker {
    /// A tracker that declares a point stale after `stale_after_intervals` intervals
    /// without a good reading (0 is treated as 1).
    pub fn new(stale_after_intervals: u32) -> Self {
        StaleTracker {
            after_intervals: stale_after_intervals.max(1),
            points: HashMap::new(),
        }
    }

    /// Registers `point` with its expected `interval`, counting from `now` until its first
    /// good reading. Registering a known point again only changes its interval.
    pub fn expect(&mut self, point: PointId, interval: Duration, now: DateTime<Utc>) {
        let limit = limit(interval, self.after_intervals);
        self.points
            .entry(point)
            .and_modify(|e| e.limit = limit)
            .or_insert(Entry {
                limit,
                last_good: now,
                stale: false,
            });
    }

    /// Takes note of a reading. Good readings of expected points refresh them and clear
    /// their stale state; bad and stale readings, and unknown points, change nothing.
    pub fn observe(&mut self, reading: &Reading) {
        if !reading.quality().is_good() {
            return;
        }
        if let Some(entry) = self.points.get_mut(reading.point()) {
            entry.last_good = entry.last_good.max(reading.sampled_at());
            entry.stale = false;
        }
    }

    /// The points that became stale since the last tick, as stale readings stamped `now`,
    /// sorted by point id (deterministic output).
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<Reading> {
        let mut out = Vec::new();
        for (point, entry) in &mut self.points {
            if !entry.stale && now - entry.last_good > entry.limit {
                entry.stale = true;
                out.push(Reading::stale(point.clone(), now));
            }
        }
        out.sort_by(|a, b| a.point().cmp(b.point()));
        out
    }

    /// True when `point` is currently stale.
    pub fn is_stale(&self, point: &PointId) -> bool {
        self.points.get(point).is_some_and(|e| e.stale)
    }

    /// Number of points tracked.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// True when no point is tracked.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}

/// `intervals x interval` as a chrono duration, saturating on absurd values.
fn limit(interval: Duration, intervals: u32) -> chrono::Duration {
    let total = interval.saturating_mul(intervals);
    chrono::Duration::from_std(total).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BadReason, Quality, Value};

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::seconds(secs)
    }

    fn th() -> PointId {
        PointId::new("dc", "th-1", "temperature")
    }

    fn good(secs: i64) -> Reading {
        Reading::good(th(), Value::Number(22.0), t(secs))
    }

    fn tracker() -> StaleTracker {
        let mut s = StaleTracker::new(3);
        s.expect(th(), Duration::from_secs(10), t(0));
        s
    }

    #[test]
    fn stale_after_three_intervals_once_per_transition() {
        let mut s = tracker();
        s.observe(&good(5));
        assert!(
            s.tick(t(35)).is_empty(),
            "exactly 3 intervals is not yet stale"
        );
        let stale = s.tick(t(36));
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].point(), &th());
        assert_eq!(stale[0].quality(), &Quality::Stale);
        assert_eq!(stale[0].value(), None);
        assert_eq!(stale[0].sampled_at(), t(36));
        assert!(s.is_stale(&th()));
        assert!(s.tick(t(37)).is_empty(), "not repeated while still stale");
        assert!(s.tick(t(1000)).is_empty());
    }

    #[test]
    fn good_reading_clears_and_the_next_silence_is_a_new_transition() {
        let mut s = tracker();
        assert_eq!(
            s.tick(t(31)).len(),
            1,
            "never seen: counts from registration"
        );
        s.observe(&good(40));
        assert!(!s.is_stale(&th()));
        assert!(s.tick(t(60)).is_empty());
        assert_eq!(s.tick(t(71)).len(), 1);
    }

    #[test]
    fn bad_readings_do_not_refresh() {
        let mut s = tracker();
        s.observe(&good(0));
        for at in [10, 20, 30] {
            s.observe(&Reading::bad(
                th(),
                BadReason::Decode("not JSON".into()),
                t(at),
            ));
        }
        assert_eq!(s.tick(t(31)).len(), 1);
    }

    #[test]
    fn old_good_reading_clears_then_goes_stale_again() {
        let mut s = tracker();
        assert_eq!(s.tick(t(100)).len(), 1);
        // A message queued during an outage arrives with its old timestamp.
        s.observe(&good(50));
        assert!(!s.is_stale(&th()));
        assert_eq!(s.tick(t(101)).len(), 1);
        // An older reading never moves the clock backwards.
        s.observe(&good(95));
        s.observe(&good(60));
        assert!(s.tick(t(120)).is_empty());
        assert_eq!(s.tick(t(126)).len(), 1);
    }

    #[test]
    fn unknown_points_are_ignored_and_intervals_can_change() {
        let mut s = tracker();
        s.observe(&Reading::good(
            PointId::new("dc", "other", "x"),
            Value::Bool(true),
            t(0),
        ));
        assert_eq!(s.len(), 1);
        s.expect(th(), Duration::from_secs(60), t(500));
        assert!(
            s.tick(t(179)).is_empty(),
            "registration time kept, limit now 180 s"
        );
        assert_eq!(s.tick(t(181)).len(), 1);
        assert!(StaleTracker::new(0).is_empty());
    }

    #[test]
    fn several_points_sorted_and_independent() {
        let mut s = StaleTracker::new(2);
        let a = PointId::new("dc", "a", "t");
        let b = PointId::new("dc", "b", "t");
        s.expect(b.clone(), Duration::from_secs(5), t(0));
        s.expect(a.clone(), Duration::from_secs(5), t(0));
        s.observe(&Reading::good(b.clone(), Value::Number(1.0), t(8)));
        let first = s.tick(t(11));
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].point(), &a);
        let second = s.tick(t(19));
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].point(), &b);
    }
}
