//! The alarm area of the store: snapshots of the alarm book and the incident book, the alarm
//! transition log and the incident transition log, written together in one transaction.
//!
//! **Durability order (invariant 4).** [`Store::commit_alarms`] writes, in ONE SQLite
//! transaction committed with `synchronous = FULL`: the alarm transitions (append), the
//! incident transitions (append to the log, and into the delivery outbox once per enabled
//! adapter, through `outbox::enqueue_in` in the same transaction) and the latest snapshot
//! of both books. Only after it returned do the
//! transitions count as raised (the alarm task publishes them then). A crash before the
//! commit loses the batch *and* the book changes that produced it: at the next start the
//! books restore from the previous snapshot and the same conditions produce the same
//! transitions again. A crash after the commit finds snapshot and transitions together.
//! Either way each transition is stored exactly once; the incident log has a unique
//! idempotency key as the last guard.
//!
//! The books are stored as JSON (their serde form): the snapshot is one row, replaced at
//! every commit.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension as _, params};

use super::{Migration, Store, StoreError};
use crate::incidents::incident::IncidentTransition;
use crate::rules::LoadTestRecord;

/// The migrations of the alarm area.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        name: "alarms_1",
        sql:
            "CREATE TABLE alarm_snapshot (
              id INTEGER PRIMARY KEY CHECK (id = 1),
              alarm_book TEXT NOT NULL,
              incident_book TEXT NOT NULL,
              saved_at TEXT NOT NULL
          );
          CREATE TABLE alarm_transitions (
              seq INTEGER PRIMARY KEY AUTOINCREMENT,
              at TEXT NOT NULL,
              alarm TEXT NOT NULL,
              cause TEXT NOT NULL,
              incident_key TEXT,
              body TEXT NOT NULL
          );
          CREATE INDEX alarm_transitions_by_alarm ON alarm_transitions (alarm, seq);
          CREATE TABLE incident_transitions (
              seq INTEGER PRIMARY KEY AUTOINCREMENT,
              idempotency_key TEXT NOT NULL UNIQUE,
              incident_id TEXT NOT NULL,
              at TEXT NOT NULL,
              kind TEXT NOT NULL,
              body TEXT NOT NULL
          );
          CREATE INDEX incident_transitions_by_incident ON incident_transitions (incident_id, seq);",
    },
    Migration {
        name: "alarms_2",
        sql: "CREATE TABLE genset_load_tests (
              id INTEGER PRIMARY KEY AUTOINCREMENT,
              site TEXT NOT NULL,
              started TEXT NOT NULL,
              ended TEXT NOT NULL,
              max_load_pct REAL NOT NULL,
              avg_load_pct REAL NOT NULL,
              qualifying INTEGER NOT NULL,
              UNIQUE (site, started)
          );",
    },
];

/// One alarm transition, serialized by the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmRecord {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// The alarm (`site/rule[/scope]`).
    pub alarm: String,
    /// Why (`Debug` name of the cause).
    pub cause: String,
    /// The incident it belongs to, when it does.
    pub incident_key: Option<String>,
    /// The transition as JSON.
    pub body: String,
}

/// One incident transition, serialized by the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentRecord {
    /// Its idempotency key (`{dedup_key}:{sequence}`).
    pub idempotency_key: String,
    /// The incident id.
    pub incident_id: String,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// What happened (`opened`, `joined`, ...).
    pub kind: String,
    /// The transition as JSON.
    pub body: String,
}

/// What one commit writes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlarmBatch {
    /// Alarm transitions, in order.
    pub alarms: Vec<AlarmRecord>,
    /// Incident transitions, in order.
    pub incidents: Vec<IncidentRecord>,
    /// The snapshot of both books after these transitions.
    pub snapshot: Option<BooksSnapshot>,
    /// The incident transitions to put into the delivery outbox, once per adapter of
    /// `adapters` (the same transitions as `incidents`, in their domain form).
    pub outbox: Vec<IncidentTransition>,
    /// The ticketing adapters enabled (outbox queues); none: nothing is enqueued.
    pub adapters: Vec<&'static str>,
    /// Genset load tests detected since the last commit (the overdue rule's evidence).
    pub load_tests: Vec<LoadTestRecord>,
}

impl AlarmBatch {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.alarms.is_empty()
            && self.incidents.is_empty()
            && self.snapshot.is_none()
            && self.load_tests.is_empty()
    }
}

/// Both books, serialized.
#[derive(Debug, Clone, PartialEq)]
pub struct BooksSnapshot {
    /// The alarm book as JSON.
    pub alarm_book: String,
    /// The incident book state as JSON.
    pub incident_book: String,
    /// When it was taken.
    pub saved_at: DateTime<Utc>,
}

/// Counts of the stored logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlarmLogCounts {
    /// Alarm transitions stored.
    pub alarm_transitions: u64,
    /// Incident transitions stored.
    pub incident_transitions: u64,
}

fn commit(conn: &mut rusqlite::Connection, batch: &AlarmBatch) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO alarm_transitions (at, alarm, cause, incident_key, body)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for a in &batch.alarms {
            insert.execute(params![
                a.at.to_rfc3339(),
                a.alarm,
                a.cause,
                a.incident_key,
                a.body
            ])?;
        }
        // A key already stored means this exact transition is already durable: keep one.
        let mut insert = tx.prepare_cached(
            "INSERT INTO incident_transitions (idempotency_key, incident_id, at, kind, body)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (idempotency_key) DO NOTHING",
        )?;
        for i in &batch.incidents {
            insert.execute(params![
                i.idempotency_key,
                i.incident_id,
                i.at.to_rfc3339(),
                i.kind,
                i.body
            ])?;
        }
        if !batch.adapters.is_empty() && !batch.outbox.is_empty() {
            let now = batch
                .snapshot
                .as_ref()
                .map_or_else(Utc::now, |s| s.saved_at);
            super::outbox::enqueue_in(&tx, &batch.adapters, &batch.outbox, now)?;
        }
        let mut insert = tx.prepare_cached(
            "INSERT INTO genset_load_tests
                 (site, started, ended, max_load_pct, avg_load_pct, qualifying)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (site, started) DO NOTHING",
        )?;
        for r in &batch.load_tests {
            insert.execute(params![
                &*r.site,
                r.started.to_rfc3339(),
                r.ended.to_rfc3339(),
                r.max_load_pct,
                r.avg_load_pct,
                r.qualifying
            ])?;
        }
        if let Some(s) = &batch.snapshot {
            tx.execute(
                "INSERT INTO alarm_snapshot (id, alarm_book, incident_book, saved_at)
                 VALUES (1, ?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET alarm_book = excluded.alarm_book,
                     incident_book = excluded.incident_book, saved_at = excluded.saved_at",
                params![s.alarm_book, s.incident_book, s.saved_at.to_rfc3339()],
            )?;
        }
    }
    tx.commit()
}

impl Store {
    /// Writes a batch in one transaction (see the module documentation); returns once it
    /// is on disk.
    pub async fn commit_alarms(&self, batch: AlarmBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.run(move |conn| commit(conn, &batch)).await
    }

    /// [`Store::commit_alarms`] on the calling thread.
    pub fn commit_alarms_blocking(&self, batch: &AlarmBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.with_conn(|conn| commit(conn, batch))
    }

    /// The latest snapshot of both books, if one was ever written.
    pub fn alarm_snapshot(&self) -> Result<Option<BooksSnapshot>, StoreError> {
        self.with_conn(|conn| {
            conn.query_row(
                "SELECT alarm_book, incident_book, saved_at FROM alarm_snapshot WHERE id = 1",
                [],
                |row| {
                    let saved: String = row.get(2)?;
                    let saved_at = DateTime::parse_from_rfc3339(&saved)
                        .map(|t| t.with_timezone(&Utc))
                        .map_err(|e| {
                            rusqlite::Error::FromSqlConversionFailure(
                                2,
                                rusqlite::types::Type::Text,
                                Box::new(e),
                            )
                        })?;
                    Ok(BooksSnapshot {
                        alarm_book: row.get(0)?,
                        incident_book: row.get(1)?,
                        saved_at,
                    })
                },
            )
            .optional()
        })
    }

    /// Every recorded genset load test, oldest first (rows that cannot be read are skipped
    /// with a warning: evidence, not state).
    pub fn load_tests(&self) -> Result<Vec<LoadTestRecord>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare(
                "SELECT site, started, ended, max_load_pct, avg_load_pct, qualifying
                 FROM genset_load_tests ORDER BY started",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, f64>(3)?,
                    r.get::<_, f64>(4)?,
                    r.get::<_, bool>(5)?,
                ))
            })?;
            let time = |s: &str| {
                DateTime::parse_from_rfc3339(s)
                    .ok()
                    .map(|t| t.with_timezone(&Utc))
            };
            let mut out = Vec::new();
            for row in rows {
                let (site, started, ended, max_load_pct, avg_load_pct, qualifying) = row?;
                match (time(&started), time(&ended)) {
                    (Some(started), Some(ended)) => out.push(LoadTestRecord {
                        site: site.as_str().into(),
                        started,
                        ended,
                        max_load_pct,
                        avg_load_pct,
                        qualifying,
                    }),
                    _ => tracing::warn!(site, "A stored load test has unreadable times."),
                }
            }
            Ok(out)
        })
    }

    /// How many alarm and incident transitions are stored.
    pub fn alarm_log_counts(&self) -> Result<AlarmLogCounts, StoreError> {
        self.with_conn(|conn| {
            let count = |table: &str| -> rusqlite::Result<u64> {
                conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| {
                    r.get::<_, i64>(0)
                })
                .map(|n| u64::try_from(n).unwrap_or(0))
            };
            Ok(AlarmLogCounts {
                alarm_transitions: count("alarm_transitions")?,
                incident_transitions: count("incident_transitions")?,
            })
        })
    }

    /// The latest stored transition of each incident (its JSON body), newest first, at
    /// most `limit`: the incident list of the API.
    pub fn incidents_latest(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT body FROM incident_transitions WHERE seq IN
                     (SELECT MAX(seq) FROM incident_transitions GROUP BY incident_id)
                 ORDER BY seq DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit], |r| r.get(0))?;
            rows.collect()
        })
    }

    /// Every stored transition of one incident (JSON bodies), oldest first.
    pub fn incident_log(&self, incident_id: &str) -> Result<Vec<String>, StoreError> {
        let id = incident_id.to_owned();
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT body FROM incident_transitions WHERE incident_id = ?1 ORDER BY seq",
            )?;
            let rows = stmt.query_map([id], |r| r.get(0))?;
            rows.collect()
        })
    }

    /// The stored incident transitions of one kind (`opened`, `resolved`, ...), oldest
    /// first, as their JSON bodies.
    pub fn incident_transitions_of_kind(&self, kind: &str) -> Result<Vec<String>, StoreError> {
        let kind = kind.to_owned();
        self.with_conn(move |conn| {
            let mut stmt =
                conn.prepare("SELECT body FROM incident_transitions WHERE kind = ?1 ORDER BY seq")?;
            let rows = stmt.query_map([kind], |r| r.get(0))?;
            rows.collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u32) -> AlarmRecord {
        AlarmRecord {
            at: Utc::now(),
            alarm: format!("dc/rule/{n}"),
            cause: "Condition".to_owned(),
            incident_key: None,
            body: "{}".to_owned(),
        }
    }

    fn incident(key: &str) -> IncidentRecord {
        IncidentRecord {
            idempotency_key: key.to_owned(),
            incident_id: "inc-1".to_owned(),
            at: Utc::now(),
            kind: "opened".to_owned(),
            body: format!("{{\"k\":\"{key}\"}}"),
        }
    }

    fn snapshot(tag: &str) -> BooksSnapshot {
        BooksSnapshot {
            alarm_book: format!("a{tag}"),
            incident_book: format!("i{tag}"),
            saved_at: Utc::now(),
        }
    }

    #[test]
    fn a_batch_is_written_whole_and_the_snapshot_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.alarm_snapshot().unwrap(), None);
        let batch = AlarmBatch {
            alarms: vec![record(1), record(2)],
            incidents: vec![incident("k:1")],
            snapshot: Some(snapshot("1")),
            ..AlarmBatch::default()
        };
        store.commit_alarms_blocking(&batch).unwrap();
        let second = AlarmBatch {
            alarms: vec![record(3)],
            incidents: vec![incident("k:1"), incident("k:2")],
            snapshot: Some(snapshot("2")),
            ..AlarmBatch::default()
        };
        store.commit_alarms_blocking(&second).unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        let snap = store.alarm_snapshot().unwrap().unwrap();
        assert_eq!(
            (snap.alarm_book.as_str(), snap.incident_book.as_str()),
            ("a2", "i2")
        );
        assert_eq!(
            store.alarm_log_counts().unwrap(),
            AlarmLogCounts {
                alarm_transitions: 3,
                incident_transitions: 2
            },
            "a repeated idempotency key is stored once"
        );
        assert_eq!(
            store.incident_transitions_of_kind("opened").unwrap(),
            vec!["{\"k\":\"k:1\"}".to_owned(), "{\"k\":\"k:2\"}".to_owned()]
        );
    }

    #[test]
    fn load_tests_are_kept_once_and_read_back() {
        let store = Store::in_memory().unwrap();
        let record = LoadTestRecord {
            site: "dc".into(),
            started: Utc::now(),
            ended: Utc::now() + chrono::TimeDelta::minutes(35),
            max_load_pct: 41.0,
            avg_load_pct: 38.5,
            qualifying: true,
        };
        let batch = AlarmBatch {
            load_tests: vec![record.clone()],
            ..AlarmBatch::default()
        };
        store.commit_alarms_blocking(&batch).unwrap();
        store.commit_alarms_blocking(&batch).unwrap();
        let back = store.load_tests().unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].site, record.site);
        assert_eq!(
            back[0].started.timestamp_micros(),
            record.started.timestamp_micros()
        );
        assert_eq!(back[0].avg_load_pct, 38.5);
        assert!(back[0].qualifying);
    }

    #[test]
    fn a_failing_batch_leaves_nothing_behind() {
        let store = Store::in_memory().unwrap();
        store
            .with_conn(|c| {
                c.execute_batch(
                    "CREATE TRIGGER no_k2 BEFORE INSERT ON incident_transitions
                     WHEN NEW.idempotency_key = 'k:2' BEGIN SELECT RAISE(ABORT, 'no'); END;",
                )
            })
            .unwrap();
        let batch = AlarmBatch {
            alarms: vec![record(1)],
            incidents: vec![incident("k:1"), incident("k:2")],
            snapshot: Some(snapshot("1")),
            ..AlarmBatch::default()
        };
        assert!(store.commit_alarms_blocking(&batch).is_err());
        assert_eq!(store.alarm_log_counts().unwrap(), AlarmLogCounts::default());
        assert_eq!(store.alarm_snapshot().unwrap(), None);
    }
}
