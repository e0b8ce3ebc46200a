//! The store's access area: reader events keyed by their content-hash id, and findings.
//!
//! * [`AccessStore::insert_events`] writes a batch in ONE transaction with `INSERT OR
//!   IGNORE` on the event id, so a re-sent batch creates no duplicate; it returns the events
//!   that were new. The commit is `synchronous = FULL`: when it returns, the batch is on disk
//!   and the device may get its `OK`.
//! * Each event row carries `audit_seq`, the sequence number of its record in the audit chain,
//!   set once the chain append was fsynced; rows without one (a crash between the two
//!   writes) are appended to the chain at the next start ([`AccessStore::unaudited`]).
//! * Events have no update or delete path (the `audit_seq` bookkeeping aside).
//! * Findings are keyed by [`Finding::key`], so a finding raised again is stored once.

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{OptionalExtension, params};

use super::{Migration, Store, StoreError};
use crate::access::event::AccessEvent;
use crate::access::reconcile::Finding;

/// The access area's migrations.
pub const MIGRATIONS: &[Migration] = &[Migration {
    name: "access_1",
    sql: "CREATE TABLE access_events (
              id TEXT PRIMARY KEY,
              site TEXT NOT NULL,
              reader TEXT NOT NULL,
              credential TEXT,
              device_time TEXT NOT NULL,
              received_at TEXT NOT NULL,
              event_json TEXT NOT NULL,
              audit_seq INTEGER
          );
          CREATE INDEX access_events_site_time ON access_events (site, device_time);
          CREATE INDEX access_events_reader_time ON access_events (reader, device_time);
          CREATE INDEX access_events_credential_time ON access_events (credential, device_time);
          CREATE INDEX access_events_unaudited ON access_events (received_at)
              WHERE audit_seq IS NULL;
          CREATE TABLE access_findings (
              key TEXT PRIMARY KEY,
              site TEXT NOT NULL,
              rule TEXT NOT NULL,
              at TEXT NOT NULL,
              finding_json TEXT NOT NULL
          );
          CREATE INDEX access_findings_site_time ON access_findings (site, at);",
}];

/// An exclusive lock on a small SQLite file, held until dropped or the process ends (even by
/// SIGKILL: SQLite's file locks go with the process). Makes one process at a time the
/// appender of the access audit chain.
#[derive(Debug)]
pub struct FileLock {
    _conn: rusqlite::Connection,
}

/// Why a [`FileLock`] was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another connection holds it (after waiting).
    #[error("held by another process")]
    Held,
    /// The file could not be opened or written.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

/// Takes the lock file `path`, waiting up to `wait` for another holder to let go.
pub fn lock_file(path: &std::path::Path, wait: std::time::Duration) -> Result<FileLock, LockError> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(wait)?;
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
    // The first write takes the exclusive lock; in EXCLUSIVE mode it is kept after COMMIT.
    let taken = conn.execute_batch(
        "BEGIN EXCLUSIVE;
         CREATE TABLE IF NOT EXISTS holder (pid INTEGER);
         DELETE FROM holder;
         COMMIT;",
    );
    match taken {
        Ok(()) => {
            conn.execute(
                "INSERT INTO holder (pid) VALUES (?1)",
                [i64::from(std::process::id())],
            )?;
            Ok(FileLock { _conn: conn })
        }
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::DatabaseBusy
                || e.code == rusqlite::ErrorCode::DatabaseLocked =>
        {
            Err(LockError::Held)
        }
        Err(e) => Err(e.into()),
    }
}

/// A query over stored events; every given field must match. Results by device time, id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventQuery {
    pub site: Option<String>,
    pub reader: Option<String>,
    pub credential: Option<String>,
    /// Device time at or after this.
    pub from: Option<DateTime<Utc>>,
    /// Device time before this.
    pub until: Option<DateTime<Utc>>,
    /// At most this many rows (default: all).
    pub limit: Option<usize>,
}

/// The access area of a [`Store`]. Blocking: call from `spawn_blocking` in async code.
#[derive(Debug, Clone)]
pub struct AccessStore {
    store: Store,
}

/// Sortable fixed-width UTC time text (years 0000-9999).
fn time_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn decode(json: &str) -> Result<AccessEvent, rusqlite::Error> {
    serde_json::from_str(json).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn encode<T: serde::Serialize>(value: &T) -> Result<String, rusqlite::Error> {
    serde_json::to_string(value).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

impl AccessStore {
    /// The access area of `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Inserts a batch of events of `site` in one transaction; an id already stored is
    /// ignored. Returns the events that were new, in batch order. Committed (fsynced) when
    /// it returns.
    pub fn insert_events(
        &self,
        site: &str,
        events: &[AccessEvent],
    ) -> Result<Vec<AccessEvent>, StoreError> {
        self.store.with_conn(|conn| {
            let tx = conn.transaction()?;
            let mut new = Vec::new();
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT OR IGNORE INTO access_events
                         (id, site, reader, credential, device_time, received_at, event_json)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                for e in events {
                    let inserted = stmt.execute(params![
                        &*e.id,
                        site,
                        &*e.reader,
                        e.credential.as_deref(),
                        time_text(e.device_time),
                        time_text(e.received_at),
                        encode(e)?,
                    ])?;
                    if inserted == 1 {
                        new.push(e.clone());
                    }
                }
            }
            tx.commit()?;
            Ok(new)
        })
    }

    /// Records that events were appended to the audit chain (`(event id, record seq)`).
    pub fn mark_audited(&self, marks: &[(&str, u64)]) -> Result<(), StoreError> {
        self.store.with_conn(|conn| {
            let tx = conn.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "UPDATE access_events SET audit_seq = ?2 WHERE id = ?1 AND audit_seq IS NULL",
                )?;
                for (id, seq) in marks {
                    // Sequence numbers stay far below i64::MAX; saturate rather than wrap.
                    stmt.execute(params![id, i64::try_from(*seq).unwrap_or(i64::MAX)])?;
                }
            }
            tx.commit()
        })
    }

    /// Events stored but not yet in the audit chain, oldest received first.
    pub fn unaudited(&self) -> Result<Vec<AccessEvent>, StoreError> {
        self.store.with_conn(|conn| {
            let mut stmt = conn.prepare(
                "SELECT event_json FROM access_events WHERE audit_seq IS NULL
                 ORDER BY received_at, id",
            )?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            rows.map(|json| decode(&json?)).collect()
        })
    }

    /// Events matching `query`, by device time then id.
    pub fn events(&self, query: &EventQuery) -> Result<Vec<AccessEvent>, StoreError> {
        let from = query.from.map(time_text);
        let until = query.until.map(time_text);
        let limit = query
            .limit
            .and_then(|l| i64::try_from(l).ok())
            .unwrap_or(-1);
        self.store.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT event_json FROM access_events
                 WHERE (?1 IS NULL OR site = ?1)
                   AND (?2 IS NULL OR reader = ?2)
                   AND (?3 IS NULL OR credential = ?3)
                   AND (?4 IS NULL OR device_time >= ?4)
                   AND (?5 IS NULL OR device_time < ?5)
                 ORDER BY device_time, id
                 LIMIT ?6",
            )?;
            let rows = stmt.query_map(
                params![
                    query.site,
                    query.reader,
                    query.credential,
                    from,
                    until,
                    limit
                ],
                |r| r.get::<_, String>(0),
            )?;
            rows.map(|json| decode(&json?)).collect()
        })
    }

    /// How many events are stored.
    pub fn count_events(&self) -> Result<u64, StoreError> {
        self.store.with_conn(|conn| {
            conn.query_row("SELECT COUNT(*) FROM access_events", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| u64::try_from(n).unwrap_or(0))
        })
    }

    /// One event by id.
    pub fn event(&self, id: &str) -> Result<Option<AccessEvent>, StoreError> {
        self.store.with_conn(|conn| {
            let json: Option<String> = conn
                .query_row(
                    "SELECT event_json FROM access_events WHERE id = ?1",
                    [id],
                    |r| r.get(0),
                )
                .optional()?;
            json.map(|j| decode(&j)).transpose()
        })
    }

    /// Stores findings (a key already stored is ignored); returns how many were new.
    pub fn insert_findings(&self, findings: &[Finding]) -> Result<usize, StoreError> {
        self.store.with_conn(|conn| {
            let tx = conn.transaction()?;
            let mut new = 0;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT OR IGNORE INTO access_findings (key, site, rule, at, finding_json)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                for f in findings {
                    new += stmt.execute(params![
                        f.key(),
                        f.site,
                        f.rule.as_str(),
                        time_text(f.at),
                        encode(f)?,
                    ])?;
                }
            }
            tx.commit()?;
            Ok(new)
        })
    }

    /// Findings of `site` (all sites when `None`), by time.
    pub fn findings(&self, site: Option<&str>) -> Result<Vec<Finding>, StoreError> {
        self.store.with_conn(|conn| {
            let mut stmt = conn.prepare(
                "SELECT finding_json FROM access_findings WHERE (?1 IS NULL OR site = ?1)
                 ORDER BY at, key",
            )?;
            let rows = stmt.query_map([site], |r| r.get::<_, String>(0))?;
            rows.map(|json| {
                let json = json?;
                serde_json::from_str(&json).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        0,
                        rusqlite::types::Type::Text,
                        Box::new(e),
                    )
                })
            })
            .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::TimeZone;

    use super::*;
    use crate::access::event::{Direction, EventKind, EventSource};
    use crate::access::zkteco::event_id;

    fn event(reader: &str, pin: &str, secs: i64) -> AccessEvent {
        let t = Utc.timestamp_opt(1_780_000_000 + secs, 0).unwrap();
        let raw = format!("{pin}\t{secs}");
        AccessEvent {
            id: event_id(reader, Some(pin), t, &EventKind::Granted, &raw),
            source: EventSource::ZktecoAttlog,
            reader: Arc::from(reader),
            credential: Some(Arc::from(pin)),
            kind: EventKind::Granted,
            direction: Some(Direction::Entry),
            device_time: t,
            received_at: t,
            raw: Arc::from(raw),
        }
    }

    #[test]
    fn a_resent_batch_creates_no_duplicates_and_queries_filter() {
        let store = AccessStore::new(Store::in_memory().unwrap());
        let batch = vec![
            event("R1", "1", 0),
            event("R1", "2", 10),
            event("R2", "1", 20),
        ];
        assert_eq!(store.insert_events("dc", &batch).unwrap().len(), 3);
        assert_eq!(store.insert_events("dc", &batch).unwrap().len(), 0);
        let more = vec![event("R1", "2", 10), event("R1", "3", 30)];
        let new = store.insert_events("dc", &more).unwrap();
        assert_eq!(new.len(), 1);
        assert_eq!(&*new[0].id, &*more[1].id);
        assert_eq!(store.count_events().unwrap(), 4);

        let by_reader = store
            .events(&EventQuery {
                reader: Some("R1".into()),
                ..EventQuery::default()
            })
            .unwrap();
        assert_eq!(by_reader.len(), 3);
        assert_eq!(by_reader[0], batch[0]);
        let by_cred = store
            .events(&EventQuery {
                credential: Some("1".into()),
                from: Some(batch[0].device_time + chrono::TimeDelta::seconds(1)),
                ..EventQuery::default()
            })
            .unwrap();
        assert_eq!(by_cred, vec![batch[2].clone()]);
        let other_site = store
            .events(&EventQuery {
                site: Some("drc".into()),
                ..EventQuery::default()
            })
            .unwrap();
        assert!(other_site.is_empty());
    }

    #[test]
    fn unaudited_events_are_listed_until_marked() {
        let store = AccessStore::new(Store::in_memory().unwrap());
        let batch = vec![event("R1", "1", 0), event("R1", "2", 10)];
        store.insert_events("dc", &batch).unwrap();
        assert_eq!(store.unaudited().unwrap().len(), 2);
        store.mark_audited(&[(&batch[0].id, 7)]).unwrap();
        let left = store.unaudited().unwrap();
        assert_eq!(left, vec![batch[1].clone()]);
    }
}
