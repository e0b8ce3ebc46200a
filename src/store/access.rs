//! The store's access area: reader events, findings with their reviews, visit-ticket
//! revisions, visit reports and the live reconcilers' watermarks.
//!
//! * [`AccessStore::insert_events`] writes a batch in ONE transaction with `INSERT OR
//!   IGNORE` on the event id, so a re-sent batch creates no duplicate; it returns the events
//!   that were new. The commit is `synchronous = FULL`: when it returns, the batch is on disk
//!   and the device may get its `OK`.
//! * Every row that the audit chain records (events, findings, reviews, ticket revisions,
//!   visit reports) carries `audit_seq`, the sequence number of its chain record, set once
//!   the chain append was fsynced; rows without one (a crash between the two writes) are
//!   appended to the chain at the next start ([`AccessStore::unaudited`]).
//! * Events, findings, reviews and revisions have no update or delete path (the
//!   `audit_seq` bookkeeping aside) except retention ([`AccessStore::prune`]), which removes
//!   whole rows older than the configured periods.
//! * Findings are keyed by [`Finding::key`], so a finding raised again is stored once; each
//!   gets an increasing id (never reused: `AUTOINCREMENT`), the cursor of
//!   [`AccessStore::findings_after`]. A review is a new row, never a change of the finding.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{OptionalExtension, params, params_from_iter};
use serde::{Deserialize, Serialize};

use super::{Migration, Store, StoreError};
use crate::access::event::{AccessEvent, Direction, EventKind, EventSource};
use crate::access::reconcile::{Finding, Rule, Severity};
use crate::access::ticket::{TicketChange, TicketRevision};

/// The access area's migrations.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
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
    },
    Migration {
        name: "access_2",
        sql: "CREATE TABLE access_findings_2 (
              id INTEGER PRIMARY KEY AUTOINCREMENT,
              key TEXT NOT NULL UNIQUE,
              site TEXT NOT NULL,
              rule TEXT NOT NULL,
              severity TEXT NOT NULL,
              at TEXT NOT NULL,
              raised_at TEXT NOT NULL,
              ticket TEXT,
              room TEXT,
              reader TEXT,
              credential TEXT,
              person TEXT,
              finding_json TEXT NOT NULL,
              audit_seq INTEGER
          );
          INSERT INTO access_findings_2
              (key, site, rule, severity, at, raised_at, ticket, room, reader, credential,
               person, finding_json)
              SELECT key, site, rule, json_extract(finding_json, '$.severity'), at, at,
                     json_extract(finding_json, '$.ticket'),
                     json_extract(finding_json, '$.room'),
                     json_extract(finding_json, '$.reader'),
                     json_extract(finding_json, '$.credential'),
                     json_extract(finding_json, '$.person'),
                     finding_json
              FROM access_findings ORDER BY at, key;
          DROP TABLE access_findings;
          ALTER TABLE access_findings_2 RENAME TO access_findings;
          CREATE INDEX access_findings_site_time ON access_findings (site, at);
          CREATE INDEX access_findings_ticket ON access_findings (ticket);
          CREATE INDEX access_findings_unaudited ON access_findings (id) WHERE audit_seq IS NULL;
          CREATE TABLE access_finding_reviews (
              id INTEGER PRIMARY KEY AUTOINCREMENT,
              finding_id INTEGER NOT NULL,
              reviewer TEXT NOT NULL,
              at TEXT NOT NULL,
              note TEXT NOT NULL,
              audit_seq INTEGER
          );
          CREATE INDEX access_finding_reviews_finding ON access_finding_reviews (finding_id);
          CREATE TABLE access_ticket_revisions (
              ticket_id TEXT NOT NULL,
              number INTEGER NOT NULL,
              site TEXT NOT NULL,
              at TEXT NOT NULL,
              change TEXT NOT NULL,
              window_end TEXT NOT NULL,
              actor TEXT NOT NULL,
              revision_json TEXT NOT NULL,
              audit_seq INTEGER,
              PRIMARY KEY (ticket_id, number)
          );
          CREATE TABLE access_reconcile_state (
              site TEXT PRIMARY KEY,
              watermark TEXT NOT NULL
          );
          CREATE TABLE access_visit_reports (
              ticket_id TEXT PRIMARY KEY,
              site TEXT NOT NULL,
              produced_at TEXT NOT NULL,
              window_end TEXT NOT NULL,
              report_json TEXT NOT NULL,
              audit_seq INTEGER,
              delivery TEXT NOT NULL
                  CHECK (delivery IN ('none', 'pending', 'parked', 'delivered')),
              attempts INTEGER NOT NULL DEFAULT 0,
              next_at TEXT NOT NULL,
              last_error TEXT,
              delivered_at TEXT
          );
          CREATE INDEX access_visit_reports_due ON access_visit_reports (delivery, next_at);",
    },
    Migration {
        name: "access_3",
        sql: "CREATE TABLE access_incident_cursor (
              id INTEGER PRIMARY KEY CHECK (id = 1),
              finding_id INTEGER NOT NULL,
              review_id INTEGER NOT NULL
          );",
    },
];

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
    /// Any of these readers (empty: any reader).
    pub readers: Vec<String>,
    /// Any of these credentials (empty: any credential).
    pub credentials: Vec<String>,
    /// Device time at or after this.
    pub from: Option<DateTime<Utc>>,
    /// Device time before this.
    pub until: Option<DateTime<Utc>>,
    /// Device time or receive time at or after this (the replay of a reconciler: a skewed
    /// reader's events are timed by receipt).
    pub effective_from: Option<DateTime<Utc>>,
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

/// Most distinct reader serials and credentials one query shares (beyond it, each row gets
/// its own copy): bounds the decoder's memory on a query over many people.
const MAX_SHARED_NAMES: usize = 1 << 16;

/// A stored event's JSON read in place: strings borrowed from the row where they need no
/// unescaping (serde's `Arc<str>` goes through a `Box<str>` copy first).
#[derive(Deserialize)]
struct EventRow<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    source: EventSource,
    #[serde(borrow)]
    reader: Cow<'a, str>,
    #[serde(borrow)]
    credential: Option<Cow<'a, str>>,
    kind: EventKind,
    direction: Option<Direction>,
    #[serde(deserialize_with = "utc_time")]
    device_time: DateTime<Utc>,
    #[serde(deserialize_with = "utc_time")]
    received_at: DateTime<Utc>,
    #[serde(borrow)]
    raw: Cow<'a, str>,
    #[serde(default)]
    backlog: bool,
}

/// A stored time: what chrono's serde gives (`DateTime<FixedOffset>` parsed from RFC 3339,
/// in UTC), with the form chrono writes for UTC (`2026-12-06T19:36:00Z`, up to nine
/// fraction digits) read without its general parser.
fn utc_time<'de, D: serde::Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    struct Text;
    impl serde::de::Visitor<'_> for Text {
        type Value = DateTime<Utc>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an RFC 3339 time")
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<DateTime<Utc>, E> {
            match plain_utc(text) {
                Some(t) => Ok(t),
                None => text
                    .parse::<DateTime<chrono::FixedOffset>>()
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(E::custom),
            }
        }
    }
    d.deserialize_str(Text)
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z`, else `None` (leap seconds, offsets and anything else
/// are left to chrono).
fn plain_utc(text: &str) -> Option<DateTime<Utc>> {
    let b = text.as_bytes();
    if b.len() < 20 || b[b.len() - 1] != b'Z' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        b.get(range)?.iter().try_fold(0_u32, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let nanos = match b.len() {
        20 => 0,
        n if b[19] == b'.' && (22..=30).contains(&n) => {
            let digits = n - 21;
            num(20..n - 1)? * 10_u32.pow(u32::try_from(9 - digits).ok()?)
        }
        _ => return None,
    };
    let (second, minute, hour) = (num(17..19)?, num(14..16)?, num(11..13)?);
    if second > 59 {
        return None;
    }
    let date =
        chrono::NaiveDate::from_ymd_opt(i32::try_from(num(0..4)?).ok()?, num(5..7)?, num(8..10)?)?;
    Some(
        date.and_hms_nano_opt(hour, minute, second, nanos)?
            .and_utc(),
    )
}

/// Decodes the event rows of one query: the same [`AccessEvent`] as [`decode`], with one
/// allocation for the id and the raw line, and the reader serial and credential shared
/// (one `Arc<str>` per distinct value) between the rows.
#[derive(Default)]
struct EventDecoder {
    names: HashSet<Arc<str>>,
}

impl EventDecoder {
    fn share(&mut self, name: &str) -> Arc<str> {
        if let Some(shared) = self.names.get(name) {
            return shared.clone();
        }
        let shared: Arc<str> = Arc::from(name);
        if self.names.len() < MAX_SHARED_NAMES {
            self.names.insert(shared.clone());
        }
        shared
    }

    fn decode(&mut self, json: &str) -> Result<AccessEvent, rusqlite::Error> {
        let row: EventRow<'_> = serde_json::from_str(json).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })?;
        Ok(AccessEvent {
            id: Arc::from(&*row.id),
            source: row.source,
            reader: self.share(&row.reader),
            credential: row.credential.map(|c| self.share(&c)),
            kind: row.kind,
            direction: row.direction,
            device_time: row.device_time,
            received_at: row.received_at,
            raw: Arc::from(&*row.raw),
            backlog: row.backlog,
        })
    }
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

    /// Events matching `query`, by device time then id.
    pub fn events(&self, query: &EventQuery) -> Result<Vec<AccessEvent>, StoreError> {
        let mut out = Vec::new();
        self.for_each_event(query, |e| out.push(e))?;
        Ok(out)
    }

    /// Streams the events matching `query` to `f`, by device time then id, without holding
    /// them: the batch re-run of a long period reads a year of events in constant memory.
    /// Returns how many were passed. The store's connection is held for the whole scan, so
    /// a long scan while the daemon runs belongs on a connection of its own
    /// ([`Store::open`] on the same file; WAL readers do not block the writer).
    pub fn for_each_event(
        &self,
        query: &EventQuery,
        mut f: impl FnMut(AccessEvent),
    ) -> Result<usize, StoreError> {
        let mut sql = String::from("SELECT event_json, device_time FROM access_events WHERE 1 = 1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        let mut push = |sql: &mut String, clause: &str, value: rusqlite::types::Value| {
            args.push(value);
            sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
        };
        if let Some(site) = &query.site {
            push(&mut sql, " AND site = ?", site.clone().into());
        }
        if let Some(reader) = &query.reader {
            push(&mut sql, " AND reader = ?", reader.clone().into());
        }
        if let Some(credential) = &query.credential {
            push(&mut sql, " AND credential = ?", credential.clone().into());
        }
        if let Some(from) = query.from {
            push(&mut sql, " AND device_time >= ?", time_text(from).into());
        }
        if let Some(until) = query.until {
            push(&mut sql, " AND device_time < ?", time_text(until).into());
        }
        if let Some(from) = query.effective_from {
            let text = time_text(from);
            push(&mut sql, " AND (device_time >= ?", text.clone().into());
            push(&mut sql, " OR received_at >= ?)", text.into());
        }
        for (column, list) in [
            ("reader", &query.readers),
            ("credential", &query.credentials),
        ] {
            if list.is_empty() {
                continue;
            }
            sql.push_str(&format!(" AND {column} IN ("));
            for (i, v) in list.iter().enumerate() {
                push(&mut sql, if i == 0 { "?" } else { ", ?" }, v.clone().into());
            }
            sql.push(')');
        }
        // Without a limit, the order by id among equal device times is made here: SQLite
        // then walks the (site, device_time) index in order instead of sorting the whole
        // result in a temporary B-tree. With a limit, the cut must fall as the full order
        // says, so SQLite sorts.
        let ties_here = query.limit.is_none();
        if ties_here {
            sql.push_str(" ORDER BY device_time");
        } else {
            sql.push_str(" ORDER BY device_time, id");
        }
        if let Some(limit) = query.limit {
            push(
                &mut sql,
                " LIMIT ?",
                i64::try_from(limit).unwrap_or(i64::MAX).into(),
            );
        }
        self.store.with_conn(|conn| {
            let mut stmt = conn.prepare(&sql)?;
            let mut rows = stmt.query(params_from_iter(args.iter()))?;
            let mut decoder = EventDecoder::default();
            let mut passed = 0;
            // The events of one device time (the column's text), until the next one.
            let (mut tied, mut tied_time) = (Vec::<AccessEvent>::new(), String::new());
            let mut pass = |tied: &mut Vec<AccessEvent>| {
                // Ids are unique: SQLite's binary order of TEXT is byte order, as here.
                tied.sort_unstable_by(|a, b| a.id.cmp(&b.id));
                passed += tied.len();
                tied.drain(..).for_each(&mut f);
            };
            while let Some(row) = rows.next()? {
                let text = |i: usize| {
                    row.get_ref(i)?.as_str().map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(
                            i,
                            rusqlite::types::Type::Text,
                            Box::new(e),
                        )
                    })
                };
                let event = decoder.decode(text(0)?)?;
                if !ties_here {
                    tied.push(event);
                    pass(&mut tied);
                    continue;
                }
                let time = text(1)?;
                if time != tied_time {
                    pass(&mut tied);
                    tied_time.clear();
                    tied_time.push_str(time);
                }
                tied.push(event);
            }
            pass(&mut tied);
            Ok(passed)
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

    /// Stores findings raised at `raised_at` (a key already stored is ignored); returns the
    /// new ones with their ids, in order.
    pub fn insert_findings(
        &self,
        findings: &[Finding],
        raised_at: DateTime<Utc>,
    ) -> Result<Vec<StoredFinding>, StoreError> {
        self.store.with_conn(|conn| {
            let tx = conn.transaction()?;
            let mut new = Vec::new();
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT OR IGNORE INTO access_findings
                         (key, site, rule, severity, at, raised_at, ticket, room, reader,
                          credential, person, finding_json)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )?;
                for f in findings {
                    let inserted = stmt.execute(params![
                        f.key(),
                        f.site,
                        f.rule.as_str(),
                        severity_name(f.severity),
                        time_text(f.at),
                        time_text(raised_at),
                        f.ticket,
                        f.room,
                        f.reader.as_deref(),
                        f.credential.as_deref(),
                        f.person,
                        encode(f)?,
                    ])?;
                    if inserted == 1 {
                        new.push(StoredFinding {
                            id: tx.last_insert_rowid(),
                            finding: f.clone(),
                            raised_at,
                            reviews: Vec::new(),
                        });
                    }
                }
            }
            tx.commit()?;
            Ok(new)
        })
    }

    /// Records the chain records of findings (`(finding id, record seq)`).
    pub fn mark_findings_audited(&self, marks: &[(i64, u64)]) -> Result<(), StoreError> {
        self.mark("access_findings", "id", marks)
    }

    /// Records the chain records of reviews (`(review id, record seq)`).
    pub fn mark_reviews_audited(&self, marks: &[(i64, u64)]) -> Result<(), StoreError> {
        self.mark("access_finding_reviews", "id", marks)
    }

    fn mark(&self, table: &str, key: &str, marks: &[(i64, u64)]) -> Result<(), StoreError> {
        let sql =
            format!("UPDATE {table} SET audit_seq = ?2 WHERE {key} = ?1 AND audit_seq IS NULL");
        self.store.with_conn(|conn| {
            let tx = conn.transaction()?;
            {
                let mut stmt = tx.prepare_cached(&sql)?;
                for (id, seq) in marks {
                    stmt.execute(params![id, i64::try_from(*seq).unwrap_or(i64::MAX)])?;
                }
            }
            tx.commit()
        })
    }

    /// Findings matching `query`, by time then id, each with its reviews.
    pub fn findings(&self, query: &FindingQuery) -> Result<Vec<StoredFinding>, StoreError> {
        let mut sql =
            String::from("SELECT id, raised_at, finding_json FROM access_findings WHERE 1 = 1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        let mut eq = |sql: &mut String, column: &str, value: &Option<String>| {
            if let Some(v) = value {
                args.push(v.clone().into());
                sql.push_str(&format!(" AND {column} = ?{}", args.len()));
            }
        };
        eq(&mut sql, "site", &query.site);
        eq(&mut sql, "rule", &query.rule.map(|r| r.as_str().to_owned()));
        eq(&mut sql, "ticket", &query.ticket);
        eq(&mut sql, "room", &query.room);
        if let Some(from) = query.from {
            args.push(time_text(from).into());
            sql.push_str(&format!(" AND at >= ?{}", args.len()));
        }
        if let Some(until) = query.until {
            args.push(time_text(until).into());
            sql.push_str(&format!(" AND at < ?{}", args.len()));
        }
        if let Some(after) = query.after_id {
            args.push(after.into());
            sql.push_str(&format!(" AND id > ?{}", args.len()));
        }
        if !query.credentials.is_empty() || !query.people.is_empty() {
            let mut alternatives = Vec::new();
            for c in &query.credentials {
                args.push(c.clone().into());
                alternatives.push(format!("credential = ?{}", args.len()));
            }
            for p in &query.people {
                args.push(p.clone().into());
                alternatives.push(format!("person = ?{} COLLATE NOCASE", args.len()));
            }
            sql.push_str(&format!(" AND ({})", alternatives.join(" OR ")));
        }
        match query.reviewed {
            Some(true) => sql.push_str(
                " AND EXISTS (SELECT 1 FROM access_finding_reviews r WHERE r.finding_id = access_findings.id)",
            ),
            Some(false) => sql.push_str(
                " AND NOT EXISTS (SELECT 1 FROM access_finding_reviews r WHERE r.finding_id = access_findings.id)",
            ),
            None => {}
        }
        sql.push_str(if query.after_id.is_some() {
            " ORDER BY id"
        } else {
            " ORDER BY at, id"
        });
        if let Some(limit) = query.limit {
            args.push(i64::try_from(limit).unwrap_or(i64::MAX).into());
            sql.push_str(&format!(" LIMIT ?{}", args.len()));
        }
        self.store.with_conn(|conn| {
            let rows: Vec<(i64, String, String)> = {
                let mut stmt = conn.prepare(&sql)?;
                let rows = stmt.query_map(params_from_iter(args.iter()), |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
                rows.collect::<Result<_, _>>()?
            };
            let mut out = Vec::with_capacity(rows.len());
            let mut reviews = conn.prepare_cached(
                "SELECT id, finding_id, reviewer, at, note FROM access_finding_reviews
                 WHERE finding_id = ?1 ORDER BY id",
            )?;
            for (id, raised_at, json) in rows {
                let list = reviews
                    .query_map([id], review_row)?
                    .collect::<Result<Vec<_>, _>>()?;
                out.push(StoredFinding {
                    id,
                    finding: decode_json(&json)?,
                    raised_at: parse_time(&raised_at)?,
                    reviews: list,
                });
            }
            Ok(out)
        })
    }

    /// One finding by id, with its reviews.
    pub fn finding(&self, id: i64) -> Result<Option<StoredFinding>, StoreError> {
        let found = self.findings(&FindingQuery {
            after_id: Some(id - 1),
            limit: Some(1),
            ..FindingQuery::default()
        })?;
        Ok(found.into_iter().next().filter(|f| f.id == id))
    }

    /// The findings stored after `id` (the feed of the incident pipeline), oldest first.
    pub fn findings_after(&self, id: i64, limit: usize) -> Result<Vec<StoredFinding>, StoreError> {
        self.findings(&FindingQuery {
            after_id: Some(id),
            limit: Some(limit),
            ..FindingQuery::default()
        })
    }

    /// The highest finding id stored (0 when none).
    pub fn last_finding_id(&self) -> Result<i64, StoreError> {
        self.store.with_conn(|conn| {
            conn.query_row(
                "SELECT COALESCE(MAX(id), 0) FROM access_findings",
                [],
                |r| r.get(0),
            )
        })
    }

    /// The reviews stored after review `id`, oldest first (the incident pipeline resolves
    /// the reviewed findings' incident members from them).
    pub fn reviews_after(&self, id: i64, limit: usize) -> Result<Vec<Review>, StoreError> {
        self.store.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, finding_id, reviewer, at, note FROM access_finding_reviews
                 WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![id, limit as i64], review_row)?;
            rows.collect()
        })
    }

    /// The highest review id stored (0 when none).
    pub fn last_review_id(&self) -> Result<i64, StoreError> {
        self.store.with_conn(|conn| {
            conn.query_row(
                "SELECT COALESCE(MAX(id), 0) FROM access_finding_reviews",
                [],
                |r| r.get(0),
            )
        })
    }

    /// How far the incident pipeline has got: (last finding id, last review id) it handed
    /// to the alarm task, `None` before its first run.
    pub fn incident_cursor(&self) -> Result<Option<(i64, i64)>, StoreError> {
        self.store.with_conn(|conn| {
            conn.query_row(
                "SELECT finding_id, review_id FROM access_incident_cursor WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
        })
    }

    /// Saves the incident pipeline's cursor (never moves it back).
    pub fn set_incident_cursor(&self, finding_id: i64, review_id: i64) -> Result<(), StoreError> {
        self.store.with_conn(|conn| {
            conn.execute(
                "INSERT INTO access_incident_cursor (id, finding_id, review_id) VALUES (1, ?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET
                     finding_id = MAX(finding_id, excluded.finding_id),
                     review_id = MAX(review_id, excluded.review_id)",
                params![finding_id, review_id],
            )?;
            Ok(())
        })
    }

    /// Adds a review to finding `finding_id`. The same reviewer with the same note again
    /// (a re-sent request) returns the stored review and `false`. `None` when there is no
    /// such finding.
    pub fn insert_review(
        &self,
        finding_id: i64,
        reviewer: &str,
        note: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<(Review, bool)>, StoreError> {
        self.store.with_conn(|conn| {
            let tx = conn.transaction()?;
            let exists: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM access_findings WHERE id = ?1)",
                [finding_id],
                |r| r.get(0),
            )?;
            if !exists {
                return Ok(None);
            }
            let same: Option<Review> = tx
                .query_row(
                    "SELECT id, finding_id, reviewer, at, note FROM access_finding_reviews
                     WHERE finding_id = ?1 AND reviewer = ?2 AND note = ?3",
                    params![finding_id, reviewer, note],
                    review_row,
                )
                .optional()?;
            if let Some(review) = same {
                return Ok(Some((review, false)));
            }
            tx.execute(
                "INSERT INTO access_finding_reviews (finding_id, reviewer, at, note)
                 VALUES (?1, ?2, ?3, ?4)",
                params![finding_id, reviewer, time_text(at), note],
            )?;
            let review = Review {
                id: tx.last_insert_rowid(),
                finding_id,
                reviewer: reviewer.to_owned(),
                at,
                note: note.to_owned(),
            };
            tx.commit()?;
            Ok(Some((review, true)))
        })
    }

    /// Stores a ticket revision recorded by `actor`; `false` when this revision number of
    /// the ticket is already stored.
    pub fn insert_ticket_revision(
        &self,
        revision: &TicketRevision,
        actor: &str,
    ) -> Result<bool, StoreError> {
        let t = &revision.snapshot;
        self.store.with_conn(|conn| {
            let n = conn.execute(
                "INSERT OR IGNORE INTO access_ticket_revisions
                     (ticket_id, number, site, at, change, window_end, actor, revision_json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    t.id,
                    revision.number,
                    t.site,
                    time_text(revision.at),
                    change_name(revision.change),
                    time_text(t.window_end),
                    actor,
                    encode(revision)?,
                ],
            )?;
            Ok(n == 1)
        })
    }

    /// Records the chain record of a ticket revision.
    pub fn mark_revision_audited(
        &self,
        ticket_id: &str,
        number: u32,
        seq: u64,
    ) -> Result<(), StoreError> {
        self.store.with_conn(|conn| {
            conn.execute(
                "UPDATE access_ticket_revisions SET audit_seq = ?3
                 WHERE ticket_id = ?1 AND number = ?2 AND audit_seq IS NULL",
                params![ticket_id, number, i64::try_from(seq).unwrap_or(i64::MAX)],
            )?;
            Ok(())
        })
    }

    /// Every stored ticket revision with its actor, in recording order (by time, ticket,
    /// number): what rebuilds the ticket book at start.
    pub fn ticket_revisions(&self) -> Result<Vec<(TicketRevision, String)>, StoreError> {
        self.store.with_conn(|conn| {
            let mut stmt = conn.prepare(
                "SELECT revision_json, actor FROM access_ticket_revisions
                 ORDER BY at, ticket_id, number",
            )?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            rows.map(|row| {
                let (json, actor) = row?;
                Ok((decode_json(&json)?, actor))
            })
            .collect()
        })
    }

    /// Saves how far a site's live reconciler has got (see `access::ingest`).
    pub fn set_watermark(&self, site: &str, watermark: DateTime<Utc>) -> Result<(), StoreError> {
        self.store.with_conn(|conn| {
            conn.execute(
                "INSERT INTO access_reconcile_state (site, watermark) VALUES (?1, ?2)
                 ON CONFLICT (site) DO UPDATE SET watermark = excluded.watermark
                 WHERE excluded.watermark > access_reconcile_state.watermark",
                params![site, time_text(watermark)],
            )?;
            Ok(())
        })
    }

    /// The newest receive time of each reader's stored events (when each was last heard
    /// from, as far as the store knows).
    pub fn last_received_by_reader(
        &self,
    ) -> Result<std::collections::HashMap<String, DateTime<Utc>>, StoreError> {
        self.store.with_conn(|conn| {
            let mut stmt =
                conn.prepare("SELECT reader, MAX(received_at) FROM access_events GROUP BY reader")?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            rows.map(|row| {
                let (reader, text) = row?;
                Ok((reader, parse_time(&text)?))
            })
            .collect()
        })
    }

    /// How far the live reconciler of `site` had got, when saved.
    pub fn watermark(&self, site: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.store.with_conn(|conn| {
            let text: Option<String> = conn
                .query_row(
                    "SELECT watermark FROM access_reconcile_state WHERE site = ?1",
                    [site],
                    |r| r.get(0),
                )
                .optional()?;
            text.map(|t| parse_time(&t)).transpose()
        })
    }

    /// Stores a visit report (once per ticket: `false` when one is stored already), queued
    /// for delivery when `deliver` is true.
    pub fn insert_report<T: Serialize>(
        &self,
        ticket_id: &str,
        site: &str,
        window_end: DateTime<Utc>,
        produced_at: DateTime<Utc>,
        report: &T,
        deliver: bool,
    ) -> Result<bool, StoreError> {
        self.store.with_conn(|conn| {
            let n = conn.execute(
                "INSERT OR IGNORE INTO access_visit_reports
                     (ticket_id, site, produced_at, window_end, report_json, delivery, next_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?3)",
                params![
                    ticket_id,
                    site,
                    time_text(produced_at),
                    time_text(window_end),
                    encode(report)?,
                    if deliver { "pending" } else { "none" },
                ],
            )?;
            Ok(n == 1)
        })
    }

    /// Records the chain record of a visit report.
    pub fn mark_report_audited(&self, ticket_id: &str, seq: u64) -> Result<(), StoreError> {
        self.store.with_conn(|conn| {
            conn.execute(
                "UPDATE access_visit_reports SET audit_seq = ?2
                 WHERE ticket_id = ?1 AND audit_seq IS NULL",
                params![ticket_id, i64::try_from(seq).unwrap_or(i64::MAX)],
            )?;
            Ok(())
        })
    }

    /// The stored visit report of a ticket, with its delivery status.
    pub fn report<T: serde::de::DeserializeOwned>(
        &self,
        ticket_id: &str,
    ) -> Result<Option<StoredReport<T>>, StoreError> {
        self.store.with_conn(|conn| {
            conn.query_row(
                &format!("{REPORT_COLUMNS} WHERE ticket_id = ?1"),
                [ticket_id],
                report_row,
            )
            .optional()
        })
    }

    /// Ids of the tickets that have a stored report.
    pub fn reported_tickets(&self) -> Result<Vec<String>, StoreError> {
        self.store.with_conn(|conn| {
            let mut stmt = conn.prepare("SELECT ticket_id FROM access_visit_reports")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect()
        })
    }

    /// Reports waiting for delivery whose next attempt is due at `now`, oldest first.
    pub fn reports_due<T: serde::de::DeserializeOwned>(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<StoredReport<T>>, StoreError> {
        self.store.with_conn(|conn| {
            let mut stmt = conn.prepare(&format!(
                "{REPORT_COLUMNS} WHERE delivery = 'pending' AND next_at <= ?1
                 ORDER BY next_at, ticket_id LIMIT ?2"
            ))?;
            let rows = stmt.query_map(
                params![time_text(now), i64::try_from(limit).unwrap_or(i64::MAX)],
                report_row,
            )?;
            rows.collect()
        })
    }

    /// The earliest next delivery attempt of a pending report.
    pub fn next_report_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.store.with_conn(|conn| {
            let text: Option<String> = conn.query_row(
                "SELECT MIN(next_at) FROM access_visit_reports WHERE delivery = 'pending'",
                [],
                |r| r.get(0),
            )?;
            text.map(|t| parse_time(&t)).transpose()
        })
    }

    /// Records the outcome of a delivery attempt of a report.
    pub fn report_attempted(
        &self,
        ticket_id: &str,
        outcome: ReportAttempt,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (delivery, next_at, error, delivered_at) = match outcome {
            ReportAttempt::Delivered => ("delivered", now, None, Some(time_text(now))),
            ReportAttempt::Retry { next_at, error } => ("pending", next_at, Some(error), None),
            ReportAttempt::Parked { error } => ("parked", now, Some(error), None),
        };
        self.store.with_conn(|conn| {
            conn.execute(
                "UPDATE access_visit_reports
                 SET delivery = ?2, next_at = ?3, last_error = ?4, delivered_at = ?5,
                     attempts = attempts + 1
                 WHERE ticket_id = ?1",
                params![ticket_id, delivery, time_text(next_at), error, delivered_at],
            )?;
            Ok(())
        })
    }

    /// Rows stored but not yet in the audit chain (a crash between the writes), events
    /// first, each table in storing order.
    pub fn unaudited(&self) -> Result<Vec<Unaudited>, StoreError> {
        self.store.with_conn(|conn| {
            let mut out = Vec::new();
            {
                let mut stmt = conn.prepare(
                    "SELECT event_json FROM access_events WHERE audit_seq IS NULL
                     ORDER BY received_at, id",
                )?;
                for json in stmt.query_map([], |r| r.get::<_, String>(0))? {
                    out.push(Unaudited::Event(decode(&json?)?));
                }
            }
            {
                let mut stmt = conn.prepare(
                    "SELECT revision_json, actor FROM access_ticket_revisions
                     WHERE audit_seq IS NULL ORDER BY at, ticket_id, number",
                )?;
                let rows =
                    stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
                for row in rows {
                    let (json, actor) = row?;
                    out.push(Unaudited::Revision(Box::new(decode_json(&json)?), actor));
                }
            }
            {
                let mut stmt = conn.prepare(
                    "SELECT id, raised_at, finding_json FROM access_findings
                     WHERE audit_seq IS NULL ORDER BY id",
                )?;
                let rows = stmt.query_map([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })?;
                for row in rows {
                    let (id, raised_at, json) = row?;
                    out.push(Unaudited::Finding(Box::new(StoredFinding {
                        id,
                        finding: decode_json(&json)?,
                        raised_at: parse_time(&raised_at)?,
                        reviews: Vec::new(),
                    })));
                }
            }
            {
                let mut stmt = conn.prepare(
                    "SELECT id, finding_id, reviewer, at, note FROM access_finding_reviews
                     WHERE audit_seq IS NULL ORDER BY id",
                )?;
                for review in stmt.query_map([], review_row)? {
                    out.push(Unaudited::Review(review?));
                }
            }
            {
                let mut stmt = conn.prepare(
                    "SELECT ticket_id, produced_at, report_json FROM access_visit_reports
                     WHERE audit_seq IS NULL ORDER BY produced_at, ticket_id",
                )?;
                let rows = stmt.query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })?;
                for row in rows {
                    let (ticket, produced_at, json) = row?;
                    let report: serde_json::Value = decode_json(&json)?;
                    out.push(Unaudited::Report {
                        ticket,
                        produced_at: parse_time(&produced_at)?,
                        report,
                    });
                }
            }
            Ok(out)
        })
    }

    /// Retention: deletes events with a device time before `access_before`, findings (and
    /// their reviews) raised for a time before it, and the revisions and reports of tickets
    /// whose window ended before `visitor_before`. One transaction. Returns what went.
    pub fn prune(
        &self,
        access_before: DateTime<Utc>,
        visitor_before: DateTime<Utc>,
    ) -> Result<Pruned, StoreError> {
        let access = time_text(access_before);
        let visitor = time_text(visitor_before);
        self.store.with_conn(|conn| {
            let tx = conn.transaction()?;
            let tickets: Vec<String> = {
                let mut stmt = tx.prepare(
                    "SELECT ticket_id FROM access_ticket_revisions GROUP BY ticket_id
                     HAVING MAX(window_end) < ?1",
                )?;
                let rows = stmt.query_map([&visitor], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            let events = tx.execute(
                "DELETE FROM access_events WHERE device_time < ?1",
                [&access],
            )?;
            let reviews = tx.execute(
                "DELETE FROM access_finding_reviews WHERE finding_id IN
                     (SELECT id FROM access_findings WHERE at < ?1)",
                [&access],
            )?;
            let findings = tx.execute("DELETE FROM access_findings WHERE at < ?1", [&access])?;
            let mut revisions = 0;
            let mut reports = 0;
            for t in &tickets {
                revisions += tx.execute(
                    "DELETE FROM access_ticket_revisions WHERE ticket_id = ?1",
                    [t],
                )?;
                reports +=
                    tx.execute("DELETE FROM access_visit_reports WHERE ticket_id = ?1", [t])?;
            }
            tx.commit()?;
            Ok(Pruned {
                events,
                findings,
                reviews,
                revisions,
                reports,
                tickets,
            })
        })
    }
}

const REPORT_COLUMNS: &str = "SELECT ticket_id, site, produced_at, report_json, delivery, attempts,
        last_error, delivered_at FROM access_visit_reports";

fn report_row<T: serde::de::DeserializeOwned>(
    r: &rusqlite::Row<'_>,
) -> Result<StoredReport<T>, rusqlite::Error> {
    let delivery: String = r.get(4)?;
    let delivered_at: Option<String> = r.get(7)?;
    Ok(StoredReport {
        ticket_id: r.get(0)?,
        site: r.get(1)?,
        produced_at: parse_time(&r.get::<_, String>(2)?)?,
        report: decode_json(&r.get::<_, String>(3)?)?,
        delivery: match delivery.as_str() {
            "pending" => ReportDelivery::Pending,
            "parked" => ReportDelivery::Parked,
            "delivered" => ReportDelivery::Delivered,
            _ => ReportDelivery::NotSent,
        },
        attempts: r.get(5)?,
        last_error: r.get(6)?,
        delivered_at: delivered_at.map(|t| parse_time(&t)).transpose()?,
    })
}

fn review_row(r: &rusqlite::Row<'_>) -> Result<Review, rusqlite::Error> {
    Ok(Review {
        id: r.get(0)?,
        finding_id: r.get(1)?,
        reviewer: r.get(2)?,
        at: parse_time(&r.get::<_, String>(3)?)?,
        note: r.get(4)?,
    })
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, rusqlite::Error> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })
}

fn decode_json<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, rusqlite::Error> {
    serde_json::from_str(json).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Low => "low",
        Severity::Medium => "medium",
        Severity::High => "high",
    }
}

fn change_name(c: TicketChange) -> &'static str {
    match c {
        TicketChange::Created => "created",
        TicketChange::Updated => "updated",
        TicketChange::Cancelled => "cancelled",
        TicketChange::Closed => "closed",
    }
}

/// A stored finding: its id (increasing, never reused), when it was raised and its reviews.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredFinding {
    /// The finding's id in this store (the API's finding id and the feed cursor).
    pub id: i64,
    pub finding: Finding,
    /// When the live reconciler (or a re-run) raised it: `raised_at - finding.at` is its
    /// latency.
    pub raised_at: DateTime<Utc>,
    /// Reviews, oldest first.
    pub reviews: Vec<Review>,
}

/// "Reviewed, with a note": a security officer's review of a finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    pub id: i64,
    pub finding_id: i64,
    /// Who reviewed (the API's principal or the operator's name).
    pub reviewer: String,
    pub at: DateTime<Utc>,
    pub note: String,
}

/// A query over findings; every given field must match. Results by time then id (by id
/// when `after_id` is set).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FindingQuery {
    pub site: Option<String>,
    pub rule: Option<Rule>,
    pub ticket: Option<String>,
    pub room: Option<String>,
    /// Any of these credentials, or any of `people` (names, case-insensitive).
    pub credentials: Vec<String>,
    pub people: Vec<String>,
    /// Finding time at or after this.
    pub from: Option<DateTime<Utc>>,
    /// Finding time before this.
    pub until: Option<DateTime<Utc>>,
    /// Only reviewed (`true`) or only unreviewed (`false`) findings.
    pub reviewed: Option<bool>,
    /// Only findings with a larger id (the feed).
    pub after_id: Option<i64>,
    pub limit: Option<usize>,
}

/// Where a visit report's delivery to the ticketing system stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportDelivery {
    /// No receiver configured.
    NotSent,
    /// Waiting for (another) attempt.
    Pending,
    /// Refused by the receiver; kept for an operator.
    Parked,
    /// Acknowledged by the receiver.
    Delivered,
}

/// A stored visit report.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredReport<T> {
    pub ticket_id: String,
    pub site: String,
    pub produced_at: DateTime<Utc>,
    pub report: T,
    pub delivery: ReportDelivery,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// The outcome of one delivery attempt of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportAttempt {
    Delivered,
    Retry {
        next_at: DateTime<Utc>,
        error: String,
    },
    Parked {
        error: String,
    },
}

/// A stored row whose audit-chain record is missing.
#[derive(Debug, Clone, PartialEq)]
pub enum Unaudited {
    Event(AccessEvent),
    /// A ticket revision and the actor who recorded it.
    Revision(Box<TicketRevision>, String),
    Finding(Box<StoredFinding>),
    Review(Review),
    Report {
        ticket: String,
        produced_at: DateTime<Utc>,
        report: serde_json::Value,
    },
}

/// What retention removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    pub events: usize,
    pub findings: usize,
    pub reviews: usize,
    pub revisions: usize,
    pub reports: usize,
    /// Tickets removed with their whole history.
    pub tickets: Vec<String>,
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
            backlog: false,
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
    fn the_row_decoder_gives_the_event_serde_gives() {
        let t = Utc.timestamp_opt(1_780_000_000, 123_456_789).unwrap();
        let mut events = vec![event("R1", "1", 0), event("R\\\"2", "p\\n", 5)];
        let mut e = event("R1", "1", 7);
        e.kind = EventKind::Denied {
            reason: Some(Arc::from("rtlog event 27: unregistered personnel")),
        };
        e.direction = None;
        e.device_time = t;
        e.raw = Arc::from("line with \"quotes\" and \t tab");
        events.push(e);
        let mut e = event("R1", "1", 9);
        e.kind = EventKind::Operation {
            op: crate::access::event::DeviceOp::Tamper,
        };
        e.credential = None;
        e.source = EventSource::ZktecoOperlog;
        events.push(e);
        let mut e = event("R2", "7", 11);
        e.backlog = true;
        events.push(e);
        let mut decoder = EventDecoder::default();
        for e in events {
            let json = encode(&e).unwrap();
            let fast = decoder.decode(&json).unwrap();
            assert_eq!(fast, decode(&json).unwrap());
            assert_eq!(fast, e);
        }
    }

    #[test]
    fn events_of_one_device_time_come_by_id_with_or_without_a_limit() {
        let store = AccessStore::new(Store::in_memory().unwrap());
        let mut batch: Vec<AccessEvent> = (0..20)
            .map(|i| event("R1", &i.to_string(), i64::from(i / 5)))
            .collect();
        batch.reverse();
        store.insert_events("dc", &batch).unwrap();
        let mut expected = batch.clone();
        expected.sort_by(|a, b| (a.device_time, &a.id).cmp(&(b.device_time, &b.id)));
        let all = store.events(&EventQuery::default()).unwrap();
        assert_eq!(all, expected);
        let first = store
            .events(&EventQuery {
                limit: Some(7),
                ..EventQuery::default()
            })
            .unwrap();
        assert_eq!(first, expected[..7]);
        let mut streamed = Vec::new();
        let n = store
            .for_each_event(
                &EventQuery {
                    site: Some("dc".into()),
                    ..EventQuery::default()
                },
                |e| streamed.push(e),
            )
            .unwrap();
        assert_eq!((n, streamed), (20, expected));
    }

    #[test]
    fn stored_times_read_as_chrono_reads_them() {
        for text in [
            "2026-12-06T19:36:00Z",
            "2026-12-06T19:36:00.5Z",
            "2026-12-06T19:36:00.123Z",
            "2026-12-06T19:36:00.123456789Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999999Z",
            "2024-02-29T12:00:00Z",
            "2026-12-06T19:36:00+07:00",
            "2026-12-06T19:36:60Z",
            "2026-12-06 19:36:00Z",
            "2026-02-30T19:36:00Z",
            "2026-12-06T19:36:00.1234567891Z",
            "2026-12-06T19:36:00.Z",
            "2026-12-06T19:3a:00Z",
        ] {
            let chrono: Result<DateTime<Utc>, _> = serde_json::from_value(text.into());
            let ours = utc_time(serde_json::Value::from(text));
            assert_eq!(ours.ok(), chrono.ok(), "{text}");
        }
        assert_eq!(
            plain_utc("2026-12-06T19:36:00.25Z"),
            Some(Utc.timestamp_opt(1_796_585_760, 250_000_000).unwrap())
        );
    }

    #[test]
    fn unaudited_events_are_listed_until_marked() {
        let store = AccessStore::new(Store::in_memory().unwrap());
        let batch = vec![event("R1", "1", 0), event("R1", "2", 10)];
        store.insert_events("dc", &batch).unwrap();
        assert_eq!(store.unaudited().unwrap().len(), 2);
        store.mark_audited(&[(&batch[0].id, 7)]).unwrap();
        let left = store.unaudited().unwrap();
        assert_eq!(left, vec![Unaudited::Event(batch[1].clone())]);
    }
}
