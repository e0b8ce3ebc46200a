//! The delivery dispatcher: one task per ticketing adapter, taking due items from the
//! durable outbox and handing them to the adapter, at most `max_in_flight` at a time.
//!
//! - **Order**: the outbox only offers the head of each incident's queue, and an item in
//!   flight is skipped, so per (adapter, incident) transitions go out one after the other
//!   in sequence order; different incidents go out in parallel.
//! - **Bounded attempts**: every attempt ends at the request timeout (the adapter's HTTP
//!   client has it; a guard here covers adapters that would not).
//! - **Errors sorted once** by the adapter ([`SendError`]): `Ok` marks the item delivered;
//!   `Retryable` schedules it again after exponential backoff with jitter
//!   ([`backoff`]: `retry_min * 2^(attempts-1)`, capped at `retry_max`, drawn uniformly
//!   in the upper half, never below `retry_min`), or exactly at the receiver's
//!   `Retry-After` when it gave one (never earlier); `Rejected` parks it after that one
//!   attempt. A retry that would come later than `retry_horizon` after the item was
//!   enqueued parks it instead (scenario I8: never retry past the receiver's key TTL).
//! - **"Incident delivery failing"**: [`DispatcherStatus`] (a `watch` channel) carries the
//!   parked count, since when attempts fail without a success in between
//!   (`failing_since`) and the last error, for the alarm side and the metrics; the
//!   transitions into failing and every park are logged at warn.
//! - **Wakes** on every enqueue (the outbox's signal), when the soonest retry is due, when
//!   an attempt ends, and at least every `idle_poll`. Stops on the cancellation token;
//!   items in flight then stay pending and are sent again at the next start.
//! - Alarm evaluation never waits on this: it runs in its own task and only the outbox
//!   (a short SQLite transaction) sits between them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::SeedableRng as _;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::outbox::Outbox;
use crate::store::StoreError;
use crate::ticketing::{Adapter, SendError};

/// Delivery settings (from `[ticketing.dispatch]`, or shorter in tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DispatchSettings {
    /// Bound of one attempt.
    pub request_timeout: Duration,
    /// First retry delay.
    pub retry_min: Duration,
    /// Backoff cap.
    pub retry_max: Duration,
    /// Concurrent attempts.
    pub max_in_flight: usize,
    /// Longest sleep without a wake-up (a safety net; enqueues wake the task at once).
    pub idle_poll: Duration,
    /// A transition still undelivered this long after it was enqueued is parked instead
    /// of retried (receivers forget idempotency keys after about 24 h).
    pub retry_horizon: Duration,
}

impl From<&crate::config::model::Dispatch> for DispatchSettings {
    fn from(d: &crate::config::model::Dispatch) -> Self {
        DispatchSettings {
            request_timeout: d.request_timeout,
            retry_min: d.retry_min,
            retry_max: d.retry_max,
            max_in_flight: d.max_in_flight.max(1),
            idle_poll: Duration::from_secs(30),
            retry_horizon: d.retry_horizon,
        }
    }
}

/// What the dispatcher of one adapter reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatcherStatus {
    /// The adapter.
    pub adapter: &'static str,
    /// Items waiting for delivery (due or not).
    pub pending: u64,
    /// Parked items of this adapter.
    pub parked: u64,
    /// Attempts under way.
    pub in_flight: usize,
    /// Items delivered since this dispatcher started.
    pub delivered: u64,
    /// Attempts that failed since this dispatcher started.
    pub failed_attempts: u64,
    /// Since when attempts fail without a delivery in between, or items are parked.
    pub failing_since: Option<DateTime<Utc>>,
    /// The last failure (no secrets: status codes and transport errors).
    pub last_error: Option<String>,
}

impl DispatcherStatus {
    fn new(adapter: &'static str) -> Self {
        DispatcherStatus {
            adapter,
            pending: 0,
            parked: 0,
            in_flight: 0,
            delivered: 0,
            failed_attempts: 0,
            failing_since: None,
            last_error: None,
        }
    }

    /// The internal "incident delivery failing" condition: something is parked, or
    /// attempts have been failing for at least `grace`.
    pub fn is_failing(&self, now: DateTime<Utc>, grace: Duration) -> bool {
        self.parked > 0
            || self
                .failing_since
                .is_some_and(|since| (now - since).to_std().unwrap_or(Duration::ZERO) >= grace)
    }
}

/// The retry delay after `attempts` failed attempts (1 for the first failure).
pub fn backoff(settings: &DispatchSettings, attempts: u32, rng: &mut impl rand::Rng) -> Duration {
    let exp = attempts.saturating_sub(1).min(30);
    let base = settings
        .retry_min
        .saturating_mul(1u32 << exp)
        .min(settings.retry_max)
        .max(settings.retry_min);
    let low = (base / 2).max(settings.retry_min).min(base);
    if low >= base {
        return base;
    }
    let span = (base - low).as_millis().min(u128::from(u64::MAX)) as u64;
    low + Duration::from_millis(rng.random_range(0..=span))
}

/// A running dispatcher.
#[derive(Debug)]
pub struct DispatcherHandle {
    /// Its status.
    pub status: watch::Receiver<DispatcherStatus>,
    /// The task; ends after the token was cancelled.
    pub task: tokio::task::JoinHandle<Result<(), StoreError>>,
}

/// Starts the dispatcher of `adapter` on the current runtime.
pub fn spawn(
    outbox: Outbox,
    adapter: Arc<dyn Adapter>,
    settings: DispatchSettings,
    cancel: CancellationToken,
) -> DispatcherHandle {
    let (tx, status) = watch::channel(DispatcherStatus::new(adapter.name()));
    let d = Dispatcher {
        outbox,
        adapter,
        settings,
        status: tx,
    };
    let task = tokio::spawn(async move { d.run(cancel, false).await });
    DispatcherHandle { status, task }
}

/// Delivers until no item of `adapter` is pending (parked ones stay), or until
/// cancelled: "deliver now" for operators and for tests. Returns the final status.
pub async fn drain(
    outbox: Outbox,
    adapter: Arc<dyn Adapter>,
    settings: DispatchSettings,
    cancel: CancellationToken,
) -> Result<DispatcherStatus, StoreError> {
    let (tx, status) = watch::channel(DispatcherStatus::new(adapter.name()));
    let d = Dispatcher {
        outbox,
        adapter,
        settings,
        status: tx,
    };
    d.run(cancel, true).await?;
    let last = status.borrow().clone();
    Ok(last)
}

/// Why [`deliver_now`] failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliverNowError {
    /// An enabled adapter could not be built (its secret).
    #[error(transparent)]
    Setup(#[from] crate::ticketing::AdapterSetupError),
    /// The outbox could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// "Deliver now": drains the outbox of every enabled adapter of `config`, concurrently,
/// and returns their final statuses (in [`crate::ticketing::enabled_names`] order).
/// For an operator command; the daemon runs [`spawn`] per adapter instead.
pub async fn deliver_now(
    config: &crate::config::model::Config,
    outbox: Outbox,
    cancel: CancellationToken,
) -> Result<Vec<DispatcherStatus>, DeliverNowError> {
    let settings = DispatchSettings::from(&config.dispatch);
    let adapters = crate::ticketing::from_config(config)?;
    let mut set = JoinSet::new();
    for (i, adapter) in adapters.into_iter().enumerate() {
        let (outbox, cancel) = (outbox.clone(), cancel.clone());
        set.spawn(async move { (i, drain(outbox, adapter, settings, cancel).await) });
    }
    let mut done = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((i, status)) => done.push((i, status?)),
            Err(e) => return Err(StoreError::Task(e.to_string()).into()),
        }
    }
    done.sort_by_key(|(i, _)| *i);
    Ok(done.into_iter().map(|(_, s)| s).collect())
}

struct Dispatcher {
    outbox: Outbox,
    adapter: Arc<dyn Adapter>,
    settings: DispatchSettings,
    status: watch::Sender<DispatcherStatus>,
}

/// An attempt under way.
struct Flight {
    key: String,
    attempts: u32,
    enqueued_at: DateTime<Utc>,
}

impl Dispatcher {
    async fn run(self, cancel: CancellationToken, until_idle: bool) -> Result<(), StoreError> {
        let name = self.adapter.name();
        let max = self.settings.max_in_flight.max(1);
        let mut wake = self.outbox.subscribe();
        let mut in_flight: JoinSet<(i64, Result<(), SendError>)> = JoinSet::new();
        let mut flights: HashMap<i64, Flight> = HashMap::new();
        let mut rng = rand::rngs::StdRng::from_os_rng();
        self.refresh(flights.len()).await?;
        loop {
            if cancel.is_cancelled() {
                break;
            }
            let mut pause = self.settings.idle_poll;
            let filled = self.fill(&mut in_flight, &mut flights, max).await;
            if let Err(e) = filled {
                if until_idle {
                    return Err(e);
                }
                tracing::warn!(adapter = name, error = %e, "outbox read failed; retrying");
                pause = self.settings.retry_min;
            } else if flights.len() < max {
                let skip: Vec<i64> = flights.keys().copied().collect();
                match self.outbox.next_due(name, skip).await {
                    Ok(Some(at)) => {
                        pause = (at - Utc::now())
                            .to_std()
                            .unwrap_or(Duration::ZERO)
                            .min(pause);
                    }
                    Ok(None) => {
                        if until_idle && flights.is_empty() {
                            break;
                        }
                    }
                    Err(e) => {
                        if until_idle {
                            return Err(e);
                        }
                        tracing::warn!(adapter = name, error = %e, "outbox read failed; retrying");
                    }
                }
            }
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => {
                    match joined {
                        Ok((id, outcome)) => {
                            if let Some(flight) = flights.remove(&id) {
                                self.settle(id, flight, outcome, &mut rng).await;
                            }
                        }
                        Err(e) => {
                            // A panicking adapter: the item stays pending and goes again
                            // after a restart; forget every flight the set no longer has.
                            tracing::warn!(adapter = name, error = %e, "delivery task failed");
                            flights.clear();
                            in_flight.abort_all();
                            in_flight = JoinSet::new();
                        }
                    }
                    let _ = self.refresh(flights.len()).await;
                }
                changed = wake.changed() => {
                    if changed.is_err() {
                        // Unreachable while we hold the outbox (it owns the sender).
                        tokio::time::sleep(pause).await;
                    }
                }
                () = tokio::time::sleep(pause) => {}
            }
        }
        in_flight.abort_all();
        let _ = self.refresh(0).await;
        Ok(())
    }

    /// Starts attempts for due items until `max` are in flight.
    async fn fill(
        &self,
        in_flight: &mut JoinSet<(i64, Result<(), SendError>)>,
        flights: &mut HashMap<i64, Flight>,
        max: usize,
    ) -> Result<(), StoreError> {
        let room = max.saturating_sub(flights.len());
        if room == 0 {
            return Ok(());
        }
        let skip: Vec<i64> = flights.keys().copied().collect();
        let items = self
            .outbox
            .due(self.adapter.name(), Utc::now(), room, skip)
            .await?;
        for item in items {
            let Some(transition) = item.transition else {
                continue;
            };
            flights.insert(
                item.id,
                Flight {
                    key: item.idempotency_key,
                    attempts: item.attempts,
                    enqueued_at: item.enqueued_at,
                },
            );
            let adapter = Arc::clone(&self.adapter);
            // The adapter's client bounds the request; this guard covers an adapter that
            // would not, with a little slack so the client's own timeout error wins.
            let guard = self.settings.request_timeout + Duration::from_millis(500);
            let id = item.id;
            in_flight.spawn(async move {
                let outcome = match tokio::time::timeout(guard, adapter.send(&transition)).await {
                    Ok(r) => r,
                    Err(_) => Err(SendError::retryable("timed out")),
                };
                (id, outcome)
            });
        }
        let n = flights.len();
        self.status.send_modify(|s| s.in_flight = n);
        Ok(())
    }

    /// Records the outcome of one attempt.
    async fn settle(
        &self,
        id: i64,
        flight: Flight,
        outcome: Result<(), SendError>,
        rng: &mut impl rand::Rng,
    ) {
        let name = self.adapter.name();
        let now = Utc::now();
        let stored = match &outcome {
            Ok(()) => self.outbox.mark_delivered(id, now).await,
            Err(SendError::Retryable {
                reason,
                retry_after,
            }) => {
                let delay = retry_after
                    .unwrap_or_else(|| backoff(&self.settings, flight.attempts + 1, rng));
                let next = chrono::TimeDelta::from_std(delay)
                    .ok()
                    .and_then(|d| now.checked_add_signed(d))
                    .unwrap_or(now);
                // `None`: a horizon beyond the calendar, i.e. none.
                let horizon = chrono::TimeDelta::from_std(self.settings.retry_horizon)
                    .ok()
                    .and_then(|h| flight.enqueued_at.checked_add_signed(h));
                if horizon.is_some_and(|h| next > h) {
                    let error = format!(
                        "retry horizon of {:?} exceeded; last error: {reason}",
                        self.settings.retry_horizon
                    );
                    tracing::warn!(adapter = name, key = %flight.key, error = %error, "incident delivery given up; parked");
                    self.outbox.park(id, error, now).await
                } else {
                    tracing::debug!(adapter = name, key = %flight.key, error = %reason, ?delay, "delivery will be retried");
                    self.outbox.schedule_retry(id, next, reason.clone()).await
                }
            }
            Err(SendError::Rejected { reason, .. }) => {
                tracing::warn!(adapter = name, key = %flight.key, error = %reason, "incident delivery rejected; parked");
                self.outbox.park(id, reason.clone(), now).await
            }
        };
        if let Err(e) = stored {
            // The attempt's outcome is lost: the item stays pending and is offered again
            // (the receiver deduplicates).
            tracing::warn!(adapter = name, key = %flight.key, error = %e, "cannot record a delivery outcome");
        }
        let mut became_failing = false;
        self.status.send_modify(|s| match &outcome {
            Ok(()) => {
                s.delivered += 1;
                s.failing_since = None;
            }
            Err(e) => {
                s.failed_attempts += 1;
                s.last_error = Some(e.to_string());
                if s.failing_since.is_none() {
                    s.failing_since = Some(now);
                    became_failing = true;
                }
            }
        });
        if became_failing {
            tracing::warn!(adapter = name, key = %flight.key, error = %outcome.err().map(|e| e.to_string()).unwrap_or_default(), "incident delivery failing");
        }
    }

    /// Re-reads the counts into the status; a parked item keeps `failing_since` set.
    async fn refresh(&self, in_flight: usize) -> Result<(), StoreError> {
        let counts = self.outbox.counts(Some(self.adapter.name())).await?;
        let now = Utc::now();
        self.status.send_modify(|s| {
            s.pending = counts.pending;
            s.parked = counts.parked;
            s.in_flight = in_flight;
            if counts.parked > 0 && s.failing_since.is_none() {
                s.failing_since = Some(now);
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn settings(min_ms: u64, max_ms: u64) -> DispatchSettings {
        DispatchSettings {
            request_timeout: Duration::from_secs(1),
            retry_min: Duration::from_millis(min_ms),
            retry_max: Duration::from_millis(max_ms),
            max_in_flight: 4,
            idle_poll: Duration::from_secs(1),
            retry_horizon: Duration::from_secs(3600),
        }
    }

    #[test]
    fn backoff_doubles_within_min_and_max_with_jitter() {
        let s = settings(100, 3_000);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for attempts in 1..40 {
            let base =
                Duration::from_millis(100 * (1u64 << (attempts - 1).min(20))).min(s.retry_max);
            for _ in 0..50 {
                let d = backoff(&s, attempts, &mut rng);
                assert!(d >= s.retry_min && d <= s.retry_max, "{attempts}: {d:?}");
                assert!(
                    d <= base && d >= (base / 2).max(s.retry_min),
                    "{attempts}: {d:?}"
                );
            }
        }
        let draws: std::collections::BTreeSet<Duration> =
            (0..50).map(|_| backoff(&s, 10, &mut rng)).collect();
        assert!(draws.len() > 10, "jittered: {draws:?}");
    }

    #[test]
    fn failing_means_parked_or_failing_for_the_grace_period() {
        let now = Utc::now();
        let mut st = DispatcherStatus::new("webhook");
        assert!(!st.is_failing(now, Duration::from_secs(60)));
        st.failing_since = Some(now - chrono::TimeDelta::seconds(30));
        assert!(!st.is_failing(now, Duration::from_secs(60)));
        assert!(st.is_failing(now, Duration::from_secs(30)));
        st.failing_since = None;
        st.parked = 1;
        assert!(st.is_failing(now, Duration::from_secs(60)));
    }
}
