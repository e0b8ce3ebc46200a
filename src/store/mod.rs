//! The embedded store: one SQLite file (WAL, `synchronous = FULL`), the only module that touches it.
//!
//! ## Design constraints
//!
//! - **Durable before accepted** (invariant 4): every write method returns only after
//!   SQLite committed the transaction with `synchronous = FULL`, so an alarm transition,
//!   an incident, an access event or a finding that a caller saw accepted survives a
//!   kill -9 or a power cut.
//! - **A narrow interface**: callers see domain-level methods (in the area submodules,
//!   e.g. `store::outbox`, `store::access`), never SQL or `rusqlite` types, so a
//!   PostgreSQL store for central review is a new implementation of the same methods.
//! - **Blocking IO off the runtime**: SQLite calls block; async callers go through
//!   [`Store::run`], which moves the work to tokio's blocking pool. One connection,
//!   behind a mutex, serialises writers (SQLite allows one writer at a time anyway).
//! - **Migrations by area**: each area (outbox, alarms, access, ...) owns a list of
//!   named migrations in its submodule; [`Store::open`] applies the ones not yet recorded
//!   in the `migrations` table, in order, each in its own transaction. Areas can be added
//!   independently without renumbering anyone else's.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use rusqlite;

pub mod access;
pub mod alarms;
pub mod outbox;

/// A named schema change of one area, applied once.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Unique across the store, e.g. `"outbox_1"`.
    pub name: &'static str,
    /// The SQL to run (one or more statements).
    pub sql: &'static str,
}

/// Every area's migrations, in the order they are applied on a new store.
fn migrations() -> Vec<Migration> {
    // Areas append their lists here (e.g. `outbox::MIGRATIONS`).
    [alarms::MIGRATIONS, outbox::MIGRATIONS, access::MIGRATIONS].concat()
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or created.
    #[error("cannot open the store {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// A migration failed; the store is left at the previous migration.
    #[error("store migration {name} failed: {source}")]
    Migration {
        /// The migration's name.
        name: &'static str,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// A query or a commit failed.
    #[error("store query failed: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The blocking task running the query panicked or was cancelled.
    #[error("store task failed: {0}")]
    Task(String),
}

/// The store. Cheap to clone; clones share the one connection.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<rusqlite::Connection>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store at `path` and applies pending migrations.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = rusqlite::Connection::open(path).map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        Store::setup(conn, path)
    }

    /// A private in-memory store, for tests of the areas' methods.
    pub fn in_memory() -> Result<Store, StoreError> {
        let conn = rusqlite::Connection::open_in_memory().map_err(|source| StoreError::Open {
            path: PathBuf::from(":memory:"),
            source,
        })?;
        Store::setup(conn, Path::new(":memory:"))
    }

    fn setup(conn: rusqlite::Connection, path: &Path) -> Result<Store, StoreError> {
        let open_error = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        // WAL: readers do not block the writer. synchronous=FULL: a commit is on disk
        // (fsync of the WAL) before it returns, the durability invariant 4 needs.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_error)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_error)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_error)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_error)?;
        let mut conn = conn;
        apply_migrations(&mut conn, &migrations())?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the connection, on the calling thread (for blocking contexts and tests).
    pub fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> Result<T, rusqlite::Error>,
    ) -> Result<T, StoreError> {
        // A panic while holding the lock leaves the connection usable: SQLite rolls back
        // the open transaction when the `Transaction` guard is dropped during unwinding.
        let mut conn = self
            .conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(f(&mut conn)?)
    }

    /// Runs `f` on the connection in tokio's blocking pool.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.with_conn(f))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Names of the migrations applied, in order.
    pub fn applied_migrations(&self) -> Result<Vec<String>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare("SELECT name FROM migrations ORDER BY id")?;
            let names = stmt.query_map([], |row| row.get(0))?;
            names.collect()
        })
    }
}

fn apply_migrations(
    conn: &mut rusqlite::Connection,
    migrations: &[Migration],
) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS migrations (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             name TEXT NOT NULL UNIQUE,
             applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
         );",
    )?;
    for migration in migrations {
        let done: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM migrations WHERE name = ?1)",
            [migration.name],
            |row| row.get(0),
        )?;
        if done {
            continue;
        }
        let as_migration_error = |source| StoreError::Migration {
            name: migration.name,
            source,
        };
        let tx = conn.transaction().map_err(as_migration_error)?;
        tx.execute_batch(migration.sql)
            .map_err(as_migration_error)?;
        tx.execute(
            "INSERT INTO migrations (name) VALUES (?1)",
            [migration.name],
        )
        .map_err(as_migration_error)?;
        tx.commit().map_err(as_migration_error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const AREA: &[Migration] = &[
        Migration {
            name: "test_1",
            sql: "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL);",
        },
        Migration {
            name: "test_2",
            sql: "ALTER TABLE t ADD COLUMN w INTEGER;",
        },
    ];

    #[test]
    fn migrations_apply_once_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.sqlite");
        let conn = rusqlite::Connection::open(&path).unwrap();
        let mut conn = conn;
        apply_migrations(&mut conn, &AREA[..1]).unwrap();
        conn.execute("INSERT INTO t (v) VALUES ('kept')", [])
            .unwrap();
        drop(conn);

        let mut conn = rusqlite::Connection::open(&path).unwrap();
        apply_migrations(&mut conn, AREA).unwrap();
        apply_migrations(&mut conn, AREA).unwrap();
        let (v, w): (String, Option<i64>) = conn
            .query_row("SELECT v, w FROM t", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        assert_eq!((v.as_str(), w), ("kept", None));
        let count: i64 = conn
            .query_row("SELECT COUNT(*) FROM migrations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 2);
    }

    #[test]
    fn a_failing_migration_is_reported_by_name_and_not_recorded() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        let bad = [Migration {
            name: "bad_1",
            sql: "CREATE TABLE x (;",
        }];
        let err = apply_migrations(&mut conn, &bad).unwrap_err();
        assert!(
            err.to_string().starts_with("store migration bad_1 failed"),
            "{err}"
        );
        let count: i64 = conn
            .query_row("SELECT COUNT(*) FROM migrations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 0);
    }

    #[test]
    fn a_file_store_runs_in_wal_with_full_sync() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.sqlite")).unwrap();
        let (mode, sync): (String, i64) = store
            .with_conn(|c| {
                let mode = c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
                let sync = c.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
                Ok((mode, sync))
            })
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(sync, 2, "synchronous = FULL");
    }
}
