//! The async face of the durable outbox (`store::outbox`): its blocking store calls moved
//! off the runtime, and a wake-up signal for the dispatchers on every enqueue.
//!
//! Cheap to clone; clones share the store and the signal. The signal is a counter in a
//! `watch` channel, so a dispatcher that was busy when an enqueue happened still sees the
//! change at its next wait (no lost wake-up).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::incidents::incident::IncidentTransition;
use crate::store::outbox::{OutboxCounts, OutboxItem};
use crate::store::{Store, StoreError};

/// The outbox, for async callers.
#[derive(Clone, Debug)]
pub struct Outbox {
    store: Store,
    wake: Arc<watch::Sender<u64>>,
}

impl Outbox {
    /// Wraps a store (its migrations include the outbox area).
    pub fn new(store: Store) -> Outbox {
        let (wake, _) = watch::channel(0);
        Outbox {
            store,
            wake: Arc::new(wake),
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A receiver that changes at every enqueue (and at [`Outbox::notify`]).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.wake.subscribe()
    }

    /// Wakes the dispatchers: call after transitions were enqueued by another area's
    /// transaction (e.g. the alarm commit).
    pub fn notify(&self) {
        self.wake.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Enqueues `transitions` for every adapter in one transaction (idempotent), then
    /// wakes the dispatchers. The transitions count as raised once this returned `Ok`.
    pub async fn enqueue(
        &self,
        adapters: &[&'static str],
        transitions: Vec<IncidentTransition>,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let adapters = adapters.to_vec();
        let added = blocking(&self.store, move |s| {
            s.outbox_enqueue(&adapters, &transitions, now)
        })
        .await?;
        self.notify();
        Ok(added)
    }

    /// See [`Store::outbox_due`].
    pub async fn due(
        &self,
        adapter: &'static str,
        now: DateTime<Utc>,
        limit: usize,
        skip: Vec<i64>,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        blocking(&self.store, move |s| {
            s.outbox_due(adapter, now, limit, &skip)
        })
        .await
    }

    /// See [`Store::outbox_next_due`].
    pub async fn next_due(
        &self,
        adapter: &'static str,
        skip: Vec<i64>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        blocking(&self.store, move |s| s.outbox_next_due(adapter, &skip)).await
    }

    /// See [`Store::outbox_mark_delivered`].
    pub async fn mark_delivered(&self, id: i64, now: DateTime<Utc>) -> Result<bool, StoreError> {
        blocking(&self.store, move |s| s.outbox_mark_delivered(id, now)).await
    }

    /// See [`Store::outbox_schedule_retry`].
    pub async fn schedule_retry(
        &self,
        id: i64,
        next_at: DateTime<Utc>,
        error: String,
    ) -> Result<bool, StoreError> {
        blocking(&self.store, move |s| {
            s.outbox_schedule_retry(id, next_at, &error)
        })
        .await
    }

    /// See [`Store::outbox_park`].
    pub async fn park(
        &self,
        id: i64,
        error: String,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        blocking(&self.store, move |s| s.outbox_park(id, &error, now)).await
    }

    /// See [`Store::outbox_parked`].
    pub async fn parked(
        &self,
        adapter: Option<&'static str>,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        blocking(&self.store, move |s| s.outbox_parked(adapter)).await
    }

    /// See [`Store::outbox_retry_parked`]; wakes the dispatchers.
    pub async fn retry_parked(&self, id: i64, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let done = blocking(&self.store, move |s| s.outbox_retry_parked(id, now)).await?;
        self.notify();
        Ok(done)
    }

    /// See [`Store::outbox_counts`].
    pub async fn counts(&self, adapter: Option<&'static str>) -> Result<OutboxCounts, StoreError> {
        blocking(&self.store, move |s| s.outbox_counts(adapter)).await
    }
}

/// Runs a blocking store method in tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    store: &Store,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
}
