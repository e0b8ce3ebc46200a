//! The outbox area of the store: incident transitions waiting for delivery, one queue per
//! ticketing adapter, in order per incident.
//!
//! ## Design constraints
//!
//! - **Durable before raised.** An incident transition is in the outbox (committed with
//!   `synchronous = FULL`) before it counts as raised: [`Store::outbox_enqueue`] writes
//!   every adapter's copy of every transition of a batch in ONE transaction, and
//!   [`enqueue_in`] lets another area (the alarm commit) put them in its own transaction.
//! - **Leaves only when acknowledged.** An item is marked delivered only after its
//!   receiver acknowledged it ([`Store::outbox_mark_delivered`] is called after the 2xx).
//!   A crash at any point before that commit leaves the item pending, and it is sent
//!   again after the restart: delivery is **at-least-once**, and exactly-once at the
//!   receiver comes from its deduplication (the webhook's `Idempotency-Key`, PagerDuty's
//!   `dedup_key`, ServiceNow's lookup by `correlation_id`).
//! - **Idempotent enqueue.** `(adapter, idempotency_key)` is unique: enqueuing a
//!   transition again (a replay after a crash) is a no-op, also when the first copy was
//!   already delivered (delivered rows are kept until [`Store::outbox_prune_delivered`]).
//! - **Strict order per incident.** Per `(adapter, incident)`, only the undelivered item
//!   with the lowest sequence (the head) is ever due. A retry or a parked head holds back
//!   the later transitions of that incident for that adapter only; other incidents and
//!   other adapters go on.
//! - **Rejected items are parked, not dropped**: they stay visible
//!   ([`Store::outbox_parked`]) until an operator retries them
//!   ([`Store::outbox_retry_parked`]).
//! - **Explicit time.** Every method takes `now`; nothing here reads the clock.
//!
//! ## On-disk format
//!
//! One table, `outbox` (migration `outbox_1`), one row per (adapter, transition):
//!
//! | column | meaning |
//! |---|---|
//! | `id` | row id, increasing with enqueue order |
//! | `adapter` | queue name (`webhook`, `servicenow`, `pagerduty`) |
//! | `incident_id`, `sequence` | the order key: heads are the lowest undelivered sequence |
//! | `idempotency_key` | `{dedup_key}:{sequence}`, unique per adapter |
//! | `payload` | the `IncidentTransition` as JSON (its serde form) |
//! | `state` | `pending`, `parked` or `delivered` |
//! | `attempts` | delivery attempts that ended (delivered, retried or parked) |
//! | `next_at_ms` | earliest next attempt, Unix ms (UTC) |
//! | `last_error` | the last failure, for operators (never a secret) |
//! | `enqueued_at_ms`, `delivered_at_ms` | Unix ms |
//!
//! An unreadable payload (a row written by a newer version, or damaged) is parked with
//! the reason instead of being sent or dropped.

use chrono::{DateTime, TimeZone as _, Utc};
use rusqlite::{OptionalExtension as _, params};

use super::{Migration, Store, StoreError};
use crate::incidents::incident::IncidentTransition;

/// The migrations of the outbox area.
pub const MIGRATIONS: &[Migration] = &[Migration {
    name: "outbox_1",
    sql: "CREATE TABLE outbox (
              id INTEGER PRIMARY KEY AUTOINCREMENT,
              adapter TEXT NOT NULL,
              incident_id TEXT NOT NULL,
              sequence INTEGER NOT NULL,
              idempotency_key TEXT NOT NULL,
              payload TEXT NOT NULL,
              state TEXT NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending', 'parked', 'delivered')),
              attempts INTEGER NOT NULL DEFAULT 0,
              next_at_ms INTEGER NOT NULL,
              last_error TEXT,
              enqueued_at_ms INTEGER NOT NULL,
              delivered_at_ms INTEGER,
              UNIQUE (adapter, idempotency_key)
          );
          CREATE INDEX outbox_by_incident ON outbox (adapter, incident_id, sequence);
          CREATE INDEX outbox_by_state ON outbox (adapter, state, next_at_ms);",
}];

/// Where an item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemState {
    /// Waiting for (another) attempt.
    Pending,
    /// Rejected by the receiver; waits for an operator.
    Parked,
    /// Acknowledged by the receiver.
    Delivered,
}

impl ItemState {
    fn from_db(s: &str) -> ItemState {
        match s {
            "parked" => ItemState::Parked,
            "delivered" => ItemState::Delivered,
            _ => ItemState::Pending,
        }
    }
}

/// One queued transition for one adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxItem {
    /// Row id.
    pub id: i64,
    /// Adapter name.
    pub adapter: String,
    /// `{dedup_key}:{sequence}`.
    pub idempotency_key: String,
    /// Incident id.
    pub incident_id: String,
    /// Sequence within the incident.
    pub sequence: u32,
    /// State.
    pub state: ItemState,
    /// Attempts that ended so far.
    pub attempts: u32,
    /// Earliest next attempt.
    pub next_at: DateTime<Utc>,
    /// The last failure.
    pub last_error: Option<String>,
    /// When it was enqueued.
    pub enqueued_at: DateTime<Utc>,
    /// The transition (`None` only for parked rows whose payload cannot be read).
    pub transition: Option<IncidentTransition>,
}

/// Items per state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    /// Waiting for delivery (due or not).
    pub pending: u64,
    /// Parked.
    pub parked: u64,
    /// Delivered and not yet pruned.
    pub delivered: u64,
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(v: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(v)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

const COLUMNS: &str = "id, adapter, idempotency_key, incident_id, sequence, state, attempts, \
                       next_at_ms, last_error, payload, enqueued_at_ms";

fn item_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(OutboxItem, String)> {
    let state: String = row.get(5)?;
    let sequence: i64 = row.get(4)?;
    let attempts: i64 = row.get(6)?;
    Ok((
        OutboxItem {
            id: row.get(0)?,
            adapter: row.get(1)?,
            idempotency_key: row.get(2)?,
            incident_id: row.get(3)?,
            sequence: u32::try_from(sequence).unwrap_or(u32::MAX),
            state: ItemState::from_db(&state),
            attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            next_at: from_ms(row.get(7)?),
            last_error: row.get(8)?,
            enqueued_at: from_ms(row.get(10)?),
            transition: None,
        },
        row.get(9)?,
    ))
}

/// Enqueues `transitions` for every adapter in `adapters` inside the caller's transaction
/// (for areas that commit incident transitions together with their own state). Returns
/// the number of rows added; rows already present are left alone.
pub(crate) fn enqueue_in(
    tx: &rusqlite::Transaction<'_>,
    adapters: &[&str],
    transitions: &[IncidentTransition],
    now: DateTime<Utc>,
) -> rusqlite::Result<usize> {
    let mut stmt = tx.prepare_cached(
        "INSERT OR IGNORE INTO outbox
             (adapter, incident_id, sequence, idempotency_key, payload, next_at_ms, enqueued_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
    )?;
    let mut added = 0;
    for t in transitions {
        let payload = serde_json::to_string(t)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        for adapter in adapters {
            added += stmt.execute(params![
                adapter,
                t.incident.id,
                i64::from(t.sequence),
                t.idempotency_key,
                payload,
                ms(now),
            ])?;
        }
    }
    Ok(added)
}

/// The heads (lowest undelivered sequence per incident) that are pending, soonest first.
const HEADS: &str = "FROM outbox o
     WHERE o.adapter = ?1 AND o.state = 'pending'
       AND NOT EXISTS (
           SELECT 1 FROM outbox p
           WHERE p.adapter = o.adapter AND p.incident_id = o.incident_id
             AND p.state != 'delivered' AND p.sequence < o.sequence)";

impl Store {
    /// Enqueues `transitions` for every adapter in ONE transaction; idempotent on
    /// `(adapter, idempotency_key)`. Returns the number of rows added.
    pub fn outbox_enqueue(
        &self,
        adapters: &[&str],
        transitions: &[IncidentTransition],
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        self.with_conn(|conn| {
            let tx = conn.transaction()?;
            let added = enqueue_in(&tx, adapters, transitions, now)?;
            tx.commit()?;
            Ok(added)
        })
    }

    /// Up to `limit` items of `adapter` that are due at `now`, soonest first, leaving out
    /// the ids in `skip` (items in flight). Only heads of their incident's queue are due.
    /// An item whose payload cannot be read is parked here and not returned.
    pub fn outbox_due(
        &self,
        adapter: &str,
        now: DateTime<Utc>,
        limit: usize,
        skip: &[i64],
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let (items, broken) = self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} {HEADS} AND o.next_at_ms <= ?2
                 ORDER BY o.next_at_ms, o.id LIMIT ?3"
            ))?;
            let want = i64::try_from(limit.saturating_add(skip.len())).unwrap_or(i64::MAX);
            let rows = stmt.query_map(params![adapter, ms(now), want], item_from_row)?;
            let mut items = Vec::new();
            let mut broken = Vec::new();
            for row in rows {
                let (mut item, payload) = row?;
                if skip.contains(&item.id) {
                    continue;
                }
                match serde_json::from_str::<IncidentTransition>(&payload) {
                    Ok(t) => {
                        item.transition = Some(t);
                        if items.len() < limit {
                            items.push(item);
                        }
                    }
                    Err(e) => broken.push((item.id, format!("unreadable payload: {e}"))),
                }
            }
            Ok((items, broken))
        })?;
        for (id, error) in broken {
            self.outbox_park(id, &error, now)?;
        }
        Ok(items)
    }

    /// When the soonest pending head of `adapter` not in `skip` becomes due.
    pub fn outbox_next_due(
        &self,
        adapter: &str,
        skip: &[i64],
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT o.id, o.next_at_ms {HEADS} ORDER BY o.next_at_ms, o.id LIMIT ?2"
            ))?;
            let want = i64::try_from(skip.len() + 1).unwrap_or(i64::MAX);
            let rows = stmt.query_map(params![adapter, want], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
            })?;
            for row in rows {
                let (id, at) = row?;
                if !skip.contains(&id) {
                    return Ok(Some(from_ms(at)));
                }
            }
            Ok(None)
        })
    }

    /// The receiver acknowledged item `id`. False when it was not pending.
    pub fn outbox_mark_delivered(&self, id: i64, now: DateTime<Utc>) -> Result<bool, StoreError> {
        self.with_conn(|conn| {
            let n = conn.execute(
                "UPDATE outbox SET state = 'delivered', attempts = attempts + 1,
                     delivered_at_ms = ?2, last_error = NULL
                 WHERE id = ?1 AND state = 'pending'",
                params![id, ms(now)],
            )?;
            Ok(n == 1)
        })
    }

    /// An attempt of item `id` failed retryably: try again at `next_at`.
    pub fn outbox_schedule_retry(
        &self,
        id: i64,
        next_at: DateTime<Utc>,
        error: &str,
    ) -> Result<bool, StoreError> {
        self.with_conn(|conn| {
            let n = conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_at_ms = ?2, last_error = ?3
                 WHERE id = ?1 AND state = 'pending'",
                params![id, ms(next_at), error],
            )?;
            Ok(n == 1)
        })
    }

    /// The receiver rejected item `id`: park it (its incident's later items for this
    /// adapter wait behind it).
    pub fn outbox_park(
        &self,
        id: i64,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.with_conn(|conn| {
            let n = conn.execute(
                "UPDATE outbox SET state = 'parked', attempts = attempts + 1,
                     next_at_ms = ?2, last_error = ?3
                 WHERE id = ?1 AND state = 'pending'",
                params![id, ms(now), error],
            )?;
            Ok(n == 1)
        })
    }

    /// Parked items, oldest first (of every adapter when `adapter` is `None`).
    pub fn outbox_parked(&self, adapter: Option<&str>) -> Result<Vec<OutboxItem>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM outbox
                 WHERE state = 'parked' AND (?1 IS NULL OR adapter = ?1) ORDER BY id"
            ))?;
            let rows = stmt.query_map(params![adapter], item_from_row)?;
            let mut items = Vec::new();
            for row in rows {
                let (mut item, payload) = row?;
                item.transition = serde_json::from_str(&payload).ok();
                items.push(item);
            }
            Ok(items)
        })
    }

    /// An operator retries parked item `id` now. False when it was not parked.
    pub fn outbox_retry_parked(&self, id: i64, now: DateTime<Utc>) -> Result<bool, StoreError> {
        self.with_conn(|conn| {
            let n = conn.execute(
                "UPDATE outbox SET state = 'pending', next_at_ms = ?2
                 WHERE id = ?1 AND state = 'parked'",
                params![id, ms(now)],
            )?;
            Ok(n == 1)
        })
    }

    /// One item by id, any state.
    pub fn outbox_item(&self, id: i64) -> Result<Option<OutboxItem>, StoreError> {
        self.with_conn(|conn| {
            conn.query_row(
                &format!("SELECT {COLUMNS} FROM outbox WHERE id = ?1"),
                [id],
                item_from_row,
            )
            .optional()
        })
        .map(|found| {
            found.map(|(mut item, payload)| {
                item.transition = serde_json::from_str(&payload).ok();
                item
            })
        })
    }

    /// Every item of one incident, any state, by adapter and sequence (the delivery
    /// status the API shows with an incident).
    pub fn outbox_of_incident(&self, incident_id: &str) -> Result<Vec<OutboxItem>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM outbox WHERE incident_id = ?1 ORDER BY adapter, sequence"
            ))?;
            let rows = stmt.query_map([incident_id], item_from_row)?;
            let mut items = Vec::new();
            for row in rows {
                let (item, _payload) = row?;
                items.push(item);
            }
            Ok(items)
        })
    }

    /// Items per state (of every adapter when `adapter` is `None`).
    pub fn outbox_counts(&self, adapter: Option<&str>) -> Result<OutboxCounts, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT state, COUNT(*) FROM outbox
                 WHERE (?1 IS NULL OR adapter = ?1) GROUP BY state",
            )?;
            let rows = stmt.query_map(params![adapter], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })?;
            let mut counts = OutboxCounts::default();
            for row in rows {
                let (state, n) = row?;
                let n = u64::try_from(n).unwrap_or(0);
                match ItemState::from_db(&state) {
                    ItemState::Pending => counts.pending = n,
                    ItemState::Parked => counts.parked = n,
                    ItemState::Delivered => counts.delivered = n,
                }
            }
            Ok(counts)
        })
    }

    /// Removes delivered items delivered before `before`; returns how many. (After that,
    /// enqueuing the same transition again would send it again: keep `before` well past
    /// any replay horizon.)
    pub fn outbox_prune_delivered(&self, before: DateTime<Utc>) -> Result<usize, StoreError> {
        self.with_conn(|conn| {
            conn.execute(
                "DELETE FROM outbox WHERE state = 'delivered' AND delivered_at_ms < ?1",
                [ms(before)],
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::{Impact, Priority, Urgency};
    use crate::incidents::incident::{IncidentSnapshot, IncidentState, TransitionKind};
    use crate::rules::condition::ConditionClass;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 21, 8, 0, 0).unwrap()
    }

    fn transition(incident: &str, sequence: u32) -> IncidentTransition {
        IncidentTransition {
            idempotency_key: format!("dc/{incident}:{sequence}"),
            sequence,
            at: t0(),
            kind: if sequence == 1 {
                TransitionKind::Opened
            } else {
                TransitionKind::Resolved
            },
            note: "n".into(),
            incident: IncidentSnapshot {
                id: incident.into(),
                dedup_key: format!("dc/{incident}"),
                state: IncidentState::Open,
                priority: Priority::P1,
                impact: Impact::High,
                urgency: Urgency::High,
                opened_at: t0(),
                due_at: t0(),
                site: "dc".into(),
                room: None,
                rack: None,
                device: None,
                point: None,
                condition: "r".into(),
                class: ConditionClass::Temperature,
                value: None,
                limit: None,
                unit: String::new(),
                summary: "s".into(),
                details: String::new(),
            },
        }
    }

    fn keys(items: &[OutboxItem]) -> Vec<&str> {
        items.iter().map(|i| i.idempotency_key.as_str()).collect()
    }

    #[test]
    fn enqueue_is_idempotent_per_adapter_and_key() {
        let s = Store::in_memory().unwrap();
        let batch = [transition("a", 1), transition("a", 2)];
        assert_eq!(
            s.outbox_enqueue(&["webhook", "pagerduty"], &batch, t0())
                .unwrap(),
            4
        );
        assert_eq!(
            s.outbox_enqueue(&["webhook", "pagerduty"], &batch, t0())
                .unwrap(),
            0
        );
        let due = s.outbox_due("webhook", t0(), 10, &[]).unwrap();
        s.outbox_mark_delivered(due[0].id, t0()).unwrap();
        // A replay after delivery does not queue it again.
        assert_eq!(s.outbox_enqueue(&["webhook"], &batch, t0()).unwrap(), 0);
        let c = s.outbox_counts(Some("webhook")).unwrap();
        assert_eq!((c.pending, c.delivered, c.parked), (1, 1, 0));
        assert_eq!(s.outbox_counts(None).unwrap().pending, 3);
    }

    #[test]
    fn only_the_head_of_each_incident_is_due() {
        let s = Store::in_memory().unwrap();
        let batch = [transition("a", 1), transition("a", 2), transition("b", 1)];
        s.outbox_enqueue(&["webhook"], &batch, t0()).unwrap();
        let due = s.outbox_due("webhook", t0(), 10, &[]).unwrap();
        assert_eq!(keys(&due), ["dc/a:1", "dc/b:1"]);
        assert_eq!(due[0].transition.as_ref().unwrap(), &batch[0]);
        // In flight items are skipped, and their successors stay behind them.
        let skip = [due[0].id];
        assert_eq!(
            keys(&s.outbox_due("webhook", t0(), 10, &skip).unwrap()),
            ["dc/b:1"]
        );
        // A retry in the future holds back the next one of the same incident.
        let later = t0() + chrono::TimeDelta::seconds(30);
        s.outbox_schedule_retry(due[0].id, later, "HTTP 503")
            .unwrap();
        assert_eq!(
            keys(&s.outbox_due("webhook", t0(), 10, &[]).unwrap()),
            ["dc/b:1"]
        );
        assert_eq!(
            s.outbox_next_due("webhook", &[due[1].id]).unwrap(),
            Some(later)
        );
        let again = s.outbox_due("webhook", later, 10, &[]).unwrap();
        assert_eq!(keys(&again), ["dc/b:1", "dc/a:1"]);
        assert_eq!(again[1].attempts, 1);
        assert_eq!(again[1].last_error.as_deref(), Some("HTTP 503"));
        s.outbox_mark_delivered(again[1].id, later).unwrap();
        let next = s.outbox_due("webhook", later, 10, &[]).unwrap();
        assert_eq!(keys(&next), ["dc/a:2", "dc/b:1"]);
    }

    #[test]
    fn a_parked_head_stops_its_incident_until_retried() {
        let s = Store::in_memory().unwrap();
        let batch = [transition("a", 1), transition("a", 2)];
        s.outbox_enqueue(&["webhook", "servicenow"], &batch, t0())
            .unwrap();
        let head = s.outbox_due("webhook", t0(), 10, &[]).unwrap().remove(0);
        assert!(s.outbox_park(head.id, "HTTP 400", t0()).unwrap());
        assert!(s.outbox_due("webhook", t0(), 10, &[]).unwrap().is_empty());
        assert_eq!(s.outbox_next_due("webhook", &[]).unwrap(), None);
        // The other adapter's queue is not affected.
        assert_eq!(
            keys(&s.outbox_due("servicenow", t0(), 10, &[]).unwrap()),
            ["dc/a:1"]
        );
        let parked = s.outbox_parked(Some("webhook")).unwrap();
        assert_eq!(keys(&parked), ["dc/a:1"]);
        assert_eq!(parked[0].state, ItemState::Parked);
        assert_eq!(parked[0].attempts, 1);
        assert!(
            !s.outbox_mark_delivered(head.id, t0()).unwrap(),
            "parked is not pending"
        );
        assert!(s.outbox_retry_parked(head.id, t0()).unwrap());
        assert!(!s.outbox_retry_parked(head.id, t0()).unwrap());
        assert_eq!(
            keys(&s.outbox_due("webhook", t0(), 10, &[]).unwrap()),
            ["dc/a:1"]
        );
    }

    #[test]
    fn an_unreadable_payload_is_parked_not_sent() {
        let s = Store::in_memory().unwrap();
        s.outbox_enqueue(&["webhook"], &[transition("a", 1)], t0())
            .unwrap();
        s.with_conn(|c| c.execute("UPDATE outbox SET payload = '{\"x\":1}'", []))
            .unwrap();
        assert!(s.outbox_due("webhook", t0(), 10, &[]).unwrap().is_empty());
        let parked = s.outbox_parked(None).unwrap();
        assert_eq!(parked.len(), 1);
        assert!(parked[0].transition.is_none());
        assert!(
            parked[0]
                .last_error
                .as_deref()
                .unwrap()
                .starts_with("unreadable payload")
        );
    }

    #[test]
    fn pruning_removes_only_old_delivered_items() {
        let s = Store::in_memory().unwrap();
        s.outbox_enqueue(
            &["webhook"],
            &[transition("a", 1), transition("b", 1)],
            t0(),
        )
        .unwrap();
        let due = s.outbox_due("webhook", t0(), 10, &[]).unwrap();
        s.outbox_mark_delivered(due[0].id, t0()).unwrap();
        let day = t0() + chrono::TimeDelta::days(1);
        assert_eq!(s.outbox_prune_delivered(t0()).unwrap(), 0);
        assert_eq!(s.outbox_prune_delivered(day).unwrap(), 1);
        assert_eq!(s.outbox_item(due[0].id).unwrap(), None);
        assert_eq!(
            s.outbox_item(due[1].id).unwrap().unwrap().state,
            ItemState::Pending
        );
    }
}
