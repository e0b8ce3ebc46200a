//! Late events: snapshots of a site's reconciler, so a reader's late upload is reconciled in
//! its place in time rather than at the moment it arrived.
//!
//! A reader that was offline (network down, PoE switch rebooted) keeps its events and uploads
//! them when it is back. The live reconciler has moved past their times by then; judged at
//! arrival they would raise false findings (the exit of a visitor whose entry is in the
//! backlog becomes an `anti_passback`, the PIC's pass an hour late breaks the escort pairing)
//! and miss true ones. So the access service keeps, per site, a [`Rewind`]: a copy of the
//! live reconciler every [`SNAPSHOT_EVERY`] of reconciled time, the last [`SNAPSHOT_KEEP`] of
//! them. An event older than the live watermark makes the service
//!
//! 1. take the last snapshot from before the event ([`Rewind::before`]),
//! 2. push every stored event of the site since that snapshot's watermark into it (the
//!    reconciler drops the ids it has seen) and tick it to now: the period is reconciled
//!    again in effective-time order with the late events in their place,
//! 3. replace the live reconciler with it and forget the snapshots taken after the late
//!    event (they were built on the wrong order),
//! 4. store the findings of the re-run (a finding stored before has the same key and is not
//!    stored twice), and withdraw the findings the live reconciler raised after that
//!    snapshot ([`Rewind::raised_after`]) that the re-run no longer raises ([`withdrawn`])
//!    and nobody has reviewed yet: a review by dcguard saying why, chained like any review;
//!    the finding itself is never changed.
//!
//! **Backlog or skewed clock?** An event whose device time is far behind its receive time is
//! either a backlog (the reader was out of contact when it happened) or a reader whose clock
//! is wrong. [`Contact`] tells them apart by the reader's own requests: a ZKTeco reader
//! polls every few seconds while it is connected, so a silence longer than [`CONTACT_GAP`]
//! is a gap; an old event whose time falls in a gap and that arrives within
//! [`BACKLOG_UPLOAD`] of the gap's end is a backlog (its device time is
//! trusted: [`crate::access::event::AccessEvent::backlog`]), any other is timed by receipt
//! and raises `clock_skew` as before. A reader whose clock was set back while connected
//! stays a skewed clock, and a clock set wrong shows as an `OPERLOG` set-time
//! (`device_tamper`).
//!
//! An event older than the oldest snapshot is replayed from an empty site
//! [`super::ingest::REPLAY_HORIZON`] before it, as at a restart; its new findings are stored
//! but nothing is withdrawn, since an empty start does not know who was inside before it.
//!
//! Pure code over reconcilers and findings; the store reads and writes are the caller's.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::event::AccessEvent;
use super::reconcile::{Finding, Reconciler};

/// A reader silent for longer than this was out of contact (it polls every 10 s while
/// connected: the handshake's `Delay`).
pub const CONTACT_GAP: Duration = Duration::from_secs(60);
/// Contact gaps are remembered this long after they end.
pub const GAPS_KEPT: Duration = Duration::from_secs(48 * 3600);
/// A reader back in contact uploads its backlog at once: only events received this soon
/// after a gap ended can be a backlog of it (later, an old event is a wrong clock).
pub const BACKLOG_UPLOAD: Duration = Duration::from_secs(10 * 60);

/// When one reader was in contact with the daemon, and the recent gaps.
#[derive(Debug, Clone, Default)]
pub struct Contact {
    last: Option<DateTime<Utc>>,
    gaps: VecDeque<(DateTime<Utc>, DateTime<Utc>)>,
}

impl Contact {
    /// A reader last heard from at `last` (before a restart: its newest stored event's
    /// receive time), or never.
    pub fn since(last: Option<DateTime<Utc>>) -> Self {
        Self {
            last,
            gaps: VecDeque::new(),
        }
    }

    /// The reader made a request at `at`: a silence before it longer than
    /// [`CONTACT_GAP`] is recorded as a gap.
    pub fn seen(&mut self, at: DateTime<Utc>) {
        let gap = TimeDelta::from_std(CONTACT_GAP).unwrap_or(TimeDelta::MAX);
        if let Some(last) = self.last {
            if at - last > gap {
                self.gaps.push_back((last, at));
            }
        }
        self.last = Some(self.last.map_or(at, |l| l.max(at)));
        let kept = TimeDelta::from_std(GAPS_KEPT).unwrap_or(TimeDelta::MAX);
        while self.gaps.front().is_some_and(|(_, end)| at - *end > kept) {
            self.gaps.pop_front();
        }
    }

    /// Whether `e`, older than `max_skew` at receipt, happened during a gap in contact
    /// (from `max_skew` before the gap began: the reader may not have sent its last events
    /// yet) and so is a backlog rather than a skewed clock.
    pub fn is_backlog(&self, e: &AccessEvent, max_skew: Duration) -> bool {
        let skew = TimeDelta::from_std(max_skew).unwrap_or(TimeDelta::MAX);
        let upload = TimeDelta::from_std(BACKLOG_UPLOAD).unwrap_or(TimeDelta::MAX);
        e.received_at - e.device_time > skew
            && self.gaps.iter().any(|(start, end)| {
                start
                    .checked_sub_signed(skew)
                    .is_none_or(|s| e.device_time >= s)
                    && e.device_time <= *end
                    && e.received_at - *end <= upload
            })
    }
}

/// A snapshot of a site's live reconciler is kept this often (of reconciled time).
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(3600);
/// Snapshots kept per site: late uploads up to about a day old rewind to a snapshot.
pub const SNAPSHOT_KEEP: usize = 24;

/// The snapshots of one site's reconciler, oldest first, and the findings stored since the
/// oldest.
#[derive(Debug, Clone)]
pub struct Rewind {
    every: TimeDelta,
    keep: usize,
    snapshots: VecDeque<Reconciler>,
    /// (live watermark when stored, finding id), in storing order.
    raised: VecDeque<(DateTime<Utc>, i64)>,
}

impl Rewind {
    /// Snapshots every `every` of reconciled time, at most `keep` of them; the first is
    /// `start` (the reconciler as the service starts or restores it).
    pub fn new(start: &Reconciler, every: Duration, keep: usize) -> Self {
        let mut snapshots = VecDeque::new();
        snapshots.push_back(start.clone());
        Self {
            every: TimeDelta::from_std(every).unwrap_or(TimeDelta::MAX),
            keep: keep.max(1),
            snapshots,
            raised: VecDeque::new(),
        }
    }

    /// Keeps a copy of `live` when its watermark is `every` past the last snapshot's (or
    /// the last one has none); drops the oldest past `keep`. Called after each live tick.
    pub fn record(&mut self, live: &Reconciler) {
        let Some(mark) = live.watermark() else {
            return;
        };
        let due = match self.snapshots.back().and_then(Reconciler::watermark) {
            Some(last) => mark - last >= self.every,
            None => true,
        };
        if due {
            self.snapshots.push_back(live.clone());
            while self.snapshots.len() > self.keep {
                self.snapshots.pop_front();
            }
            if let Some(oldest) = self.snapshots.front().and_then(Reconciler::watermark) {
                while self.raised.front().is_some_and(|(mark, _)| *mark <= oldest) {
                    self.raised.pop_front();
                }
            }
        }
    }

    /// Notes findings stored when the live watermark was `mark` (after the tick that raised
    /// them, so after a snapshot taken at that tick).
    pub fn note_raised(&mut self, mark: DateTime<Utc>, ids: impl IntoIterator<Item = i64>) {
        self.raised.extend(ids.into_iter().map(|id| (mark, id)));
    }

    /// The ids of the findings stored after the snapshot whose watermark is `since` (`None`:
    /// the snapshot taken before the first tick): the findings a re-run from that snapshot
    /// raises again or withdraws.
    pub fn raised_after(&self, since: Option<DateTime<Utc>>) -> Vec<i64> {
        self.raised
            .iter()
            .filter(|(mark, _)| since.is_none_or(|w| *mark > w))
            .map(|(_, id)| *id)
            .collect()
    }

    /// A copy of the last snapshot whose watermark is before `t` (a snapshot without one,
    /// taken before the first tick, is before any time). `None` when `t` is older than
    /// every snapshot kept.
    pub fn before(&self, t: DateTime<Utc>) -> Option<Reconciler> {
        self.snapshots
            .iter()
            .rev()
            .find(|s| s.watermark().is_none_or(|w| w < t))
            .cloned()
    }

    /// Forgets the snapshots whose watermark is at or after `t` (they did not see events
    /// from before `t` that arrived since), then keeps `live` as the newest when none is
    /// left.
    pub fn forget_from(&mut self, t: DateTime<Utc>, live: &Reconciler) {
        self.snapshots
            .retain(|s| s.watermark().is_none_or(|w| w < t));
        if self.snapshots.is_empty() {
            self.snapshots.push_back(live.clone());
        }
    }

    /// Snapshots held.
    pub fn len(&self) -> usize {
        self.snapshots.len()
    }

    /// Whether none is held (never, after [`Rewind::new`]).
    pub fn is_empty(&self) -> bool {
        self.snapshots.is_empty()
    }
}

/// The ids of the `stored` findings (id, finding) that the re-run's findings `rerun` no
/// longer contain, by [`Finding::key`], in the order given. Keys hold the evidence event
/// ids, so a finding whose evidence changed is withdrawn and its successor is new.
pub fn withdrawn<'a>(
    stored: impl IntoIterator<Item = (i64, &'a Finding)>,
    rerun: &[Finding],
) -> Vec<i64> {
    let keys: HashSet<String> = rerun.iter().map(Finding::key).collect();
    stored
        .into_iter()
        .filter(|(_, f)| !keys.contains(&f.key()))
        .map(|(id, _)| id)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::TimeZone;

    use super::*;
    use crate::access::event::{EventKind, EventSource};
    use crate::access::reconcile::{ReconcileSettings, Rule, Severity};
    use crate::access::ticket::TicketBook;

    fn t(minute: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 8, 0, 0).unwrap() + TimeDelta::minutes(minute)
    }

    fn event(id: &str, reader: &str, cred: &str, device: i64, received: i64) -> AccessEvent {
        AccessEvent {
            id: Arc::from(id),
            source: EventSource::ZktecoAttlog,
            reader: Arc::from(reader),
            credential: Some(Arc::from(cred)),
            kind: EventKind::Granted,
            direction: None,
            device_time: t(device),
            received_at: t(received),
            raw: Arc::from(id),
            backlog: false,
        }
    }

    #[test]
    fn an_old_event_is_a_backlog_only_inside_a_gap_in_contact() {
        let skew = Duration::from_secs(300);
        let mut c = Contact::since(Some(t(0)));
        // Polling every 30 s up to minute 10, then silent until minute 60.
        for half_minutes in 1..=20 {
            c.seen(t(0) + TimeDelta::seconds(30 * half_minutes));
        }
        c.seen(t(60));
        // Happened at minute 30, during the silence: a backlog.
        assert!(c.is_backlog(&event("a", "R", "1", 30, 60), skew));
        // Minute 7, while the reader was polling: it would have been sent then; a wrong clock.
        assert!(!c.is_backlog(&event("b", "R", "1", 2, 60), skew));
        // Recent enough to be on time: never a backlog.
        assert!(!c.is_backlog(&event("c", "R", "1", 58, 60), skew));
        // Sent long after the reader came back: not its backlog, a wrong clock.
        assert!(!c.is_backlog(&event("e", "R", "1", 30, 75), skew));
        // A reader never heard from before has no gap: a wrong clock.
        let mut new = Contact::since(None);
        new.seen(t(60));
        assert!(!new.is_backlog(&event("d", "R", "1", 30, 60), skew));
    }

    fn finding(evidence: &str) -> Finding {
        Finding {
            rule: Rule::AntiPassback,
            site: "dc".into(),
            severity: Severity::Low,
            person: None,
            credential: None,
            ticket: None,
            room: None,
            reader: None,
            evidence: vec![Arc::from(evidence)],
            at: t(0),
            summary: String::new(),
        }
    }

    #[test]
    fn only_findings_the_rerun_no_longer_raises_are_withdrawn() {
        let (kept, gone) = (finding("e1"), finding("e2"));
        let rerun = vec![finding("e1"), finding("e3")];
        assert_eq!(withdrawn([(1, &kept), (2, &gone)], &rerun), vec![2]);
    }

    #[test]
    fn snapshots_every_period_and_the_last_one_before_a_time() {
        let config =
            crate::config::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config"))
                .unwrap();
        let site = config.sites.iter().find(|s| s.id == "dc").unwrap();
        let mut live = Reconciler::new(site, ReconcileSettings::default());
        let mut rewind = Rewind::new(&live, Duration::from_secs(3600), 3);
        let book = TicketBook::new();
        let settle = TimeDelta::seconds(10);
        // Ticks every 20 minutes for 5 hours: a snapshot at the first tick, then hourly.
        for m in (0..=300).step_by(20) {
            live.tick(t(m) + settle, &book);
            rewind.record(&live);
        }
        // The start, then minutes 0, 60, ..., 300: the last 3 are kept.
        assert_eq!(rewind.len(), 3);
        let marks = |r: &Rewind| -> Vec<Option<DateTime<Utc>>> {
            r.snapshots.iter().map(Reconciler::watermark).collect()
        };
        assert_eq!(
            marks(&rewind),
            vec![Some(t(180)), Some(t(240)), Some(t(300))]
        );
        assert_eq!(rewind.before(t(250)).unwrap().watermark(), Some(t(240)));
        assert_eq!(rewind.before(t(240)).unwrap().watermark(), Some(t(180)));
        assert!(rewind.before(t(100)).is_none(), "older than every snapshot");
        // Findings noted after the snapshot at 240 are the ones a rewind to it may withdraw.
        rewind.note_raised(t(240), [7]);
        rewind.note_raised(t(260), [8, 9]);
        assert_eq!(rewind.raised_after(Some(t(240))), vec![8, 9]);
        assert_eq!(rewind.raised_after(None), vec![7, 8, 9]);
        // A late event at 250 invalidates the snapshot at 300.
        rewind.forget_from(t(250), &live);
        assert_eq!(marks(&rewind), vec![Some(t(180)), Some(t(240))]);
    }
}
