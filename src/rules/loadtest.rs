//! Genset load-test detection from the data: utility off and gensets carrying the load,
//! recorded with duration and load so the overdue rule has evidence (NFPA 110 monthly
//! exercise: at least 30 continuous minutes at >= 30 % of nameplate kW).
//!
//! Any period in which every utility feed is off and the gensets carry the load is a run;
//! whether it was planned is not visible in the data, and a real outage exercises the
//! gensets just as well (NFPA 110 credits it when it meets the same criteria). A run is
//! **qualifying** when its load stayed at or above the minimum percentage for at least the
//! minimum duration without a break.
//!
//! The detector is fed samples with explicit instants. Between two samples the load is
//! taken as the earlier sample's (left rectangles); a run ends at the first sample that
//! is no longer a run.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// One detected load test (or outage run) of a site's gensets.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadTestRecord {
    /// Site id.
    pub site: Arc<str>,
    /// First instant utility was off with the gensets carrying the load.
    pub started: DateTime<Utc>,
    /// First instant it no longer was.
    pub ended: DateTime<Utc>,
    /// Highest load seen, percent of the carrying gensets' nameplate kW.
    pub max_load_pct: f64,
    /// Time-weighted average load, percent of nameplate.
    pub avg_load_pct: f64,
    /// At least `min_duration` without a break at `min_load_pct` or more.
    pub qualifying: bool,
}

/// What makes a run qualify (NFPA 110 monthly exercise by default).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadTestCriteria {
    /// Minimum continuous duration at or above `min_load_pct`: 30 min.
    pub min_duration: Duration,
    /// Minimum load, percent of nameplate kW: 30 %.
    pub min_load_pct: f64,
}

impl Default for LoadTestCriteria {
    fn default() -> Self {
        LoadTestCriteria {
            min_duration: Duration::from_secs(30 * 60),
            min_load_pct: 30.0,
        }
    }
}

#[derive(Debug, Clone)]
struct Run {
    started: DateTime<Utc>,
    last_at: DateTime<Utc>,
    last_pct: f64,
    /// Integral of load pct over seconds.
    pct_seconds: f64,
    max_pct: f64,
    above_since: Option<DateTime<Utc>>,
    longest_above: chrono::Duration,
}

/// Detects load tests of one site from a sequence of samples.
#[derive(Debug, Clone)]
pub struct LoadTestDetector {
    site: Arc<str>,
    criteria: LoadTestCriteria,
    run: Option<Run>,
}

impl LoadTestDetector {
    /// A detector for `site`.
    pub fn new(site: Arc<str>, criteria: LoadTestCriteria) -> Self {
        LoadTestDetector {
            site,
            criteria,
            run: None,
        }
    }

    /// True while a run is in progress.
    pub fn running(&self) -> bool {
        self.run.is_some()
    }

    /// Start of the run in progress.
    pub fn running_since(&self) -> Option<DateTime<Utc>> {
        self.run.as_ref().map(|r| r.started)
    }

    /// Feeds the site's state at `at`: `Some(load_pct)` while every utility feed is off and
    /// the gensets carry the load at `load_pct` of their nameplate, `None` when not.
    /// Returns the record of a run that ended at `at`. Samples older than the previous
    /// one are ignored.
    pub fn sample(&mut self, at: DateTime<Utc>, load_pct: Option<f64>) -> Option<LoadTestRecord> {
        let min = self.criteria.min_load_pct;
        match (&mut self.run, load_pct) {
            (None, None) => None,
            (None, Some(p)) => {
                self.run = Some(Run {
                    started: at,
                    last_at: at,
                    last_pct: p,
                    pct_seconds: 0.0,
                    max_pct: p,
                    above_since: (p >= min).then_some(at),
                    longest_above: chrono::Duration::zero(),
                });
                None
            }
            (Some(run), Some(p)) => {
                if at < run.last_at {
                    return None;
                }
                run.pct_seconds += run.last_pct * seconds(at - run.last_at);
                if p >= min {
                    run.above_since.get_or_insert(at);
                } else if let Some(since) = run.above_since.take() {
                    run.longest_above = run.longest_above.max(at - since);
                }
                run.max_pct = run.max_pct.max(p);
                run.last_at = at;
                run.last_pct = p;
                None
            }
            (Some(run), None) => {
                if at < run.last_at {
                    return None;
                }
                run.pct_seconds += run.last_pct * seconds(at - run.last_at);
                if let Some(since) = run.above_since.take() {
                    run.longest_above = run.longest_above.max(at - since);
                }
                let total = seconds(at - run.started);
                let avg = if total > 0.0 {
                    run.pct_seconds / total
                } else {
                    run.last_pct
                };
                let min_duration = chrono::Duration::from_std(self.criteria.min_duration)
                    .unwrap_or(chrono::Duration::MAX);
                let record = LoadTestRecord {
                    site: self.site.clone(),
                    started: run.started,
                    ended: at,
                    max_load_pct: run.max_pct,
                    avg_load_pct: avg,
                    qualifying: run.longest_above >= min_duration,
                };
                self.run = None;
                Some(record)
            }
        }
    }
}

fn seconds(d: chrono::Duration) -> f64 {
    d.num_milliseconds() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(min: i64, sec: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH
            + chrono::Duration::minutes(min)
            + chrono::Duration::seconds(sec)
    }

    fn run(samples: &[(DateTime<Utc>, Option<f64>)]) -> Vec<LoadTestRecord> {
        let mut d = LoadTestDetector::new(Arc::from("dc"), LoadTestCriteria::default());
        samples
            .iter()
            .filter_map(|&(at, p)| d.sample(at, p))
            .collect()
    }

    #[test]
    fn thirty_minutes_at_thirty_percent_qualifies() {
        let r = run(&[(t(0, 0), Some(30.0)), (t(30, 0), None)]);
        assert_eq!(r.len(), 1);
        assert!(r[0].qualifying);
        assert_eq!(r[0].started, t(0, 0));
        assert_eq!(r[0].ended, t(30, 0));
        assert!((r[0].avg_load_pct - 30.0).abs() < 1e-9);
    }

    #[test]
    fn one_second_short_or_just_below_the_load_does_not() {
        let short = run(&[(t(0, 0), Some(45.0)), (t(29, 59), None)]);
        assert!(!short[0].qualifying);
        let light = run(&[(t(0, 0), Some(29.9)), (t(40, 0), None)]);
        assert!(!light[0].qualifying);
        assert!((light[0].max_load_pct - 29.9).abs() < 1e-9);
    }

    #[test]
    fn a_dip_breaks_the_continuous_run() {
        // 20 min at 50 %, 1 min at 20 %, 20 min at 50 %: 41 min in all, never 30 in a row.
        let r = run(&[
            (t(0, 0), Some(50.0)),
            (t(20, 0), Some(20.0)),
            (t(21, 0), Some(50.0)),
            (t(41, 0), None),
        ]);
        assert!(!r[0].qualifying);
        assert!((r[0].max_load_pct - 50.0).abs() < 1e-9);
        let avg = (40.0 * 50.0 + 20.0) / 41.0;
        assert!(
            (r[0].avg_load_pct - avg).abs() < 1e-9,
            "{}",
            r[0].avg_load_pct
        );
    }

    #[test]
    fn no_run_no_record_and_old_samples_ignored() {
        assert!(run(&[(t(0, 0), None), (t(1, 0), None)]).is_empty());
        let r = run(&[(t(10, 0), Some(40.0)), (t(5, 0), None), (t(45, 0), None)]);
        assert_eq!(r.len(), 1);
        assert!(r[0].qualifying);
    }
}
