//! The API's entries in the audit chain (`access::audit`, record kind `api_request`): every
//! write and every denied request, with actor, action, object, result and time.
//!
//! One task appends, in batches (one write and one fsync per batch, however many requests
//! arrived meanwhile), so a burst of denied requests costs the disk one fsync, not one per
//! request. A **write** waits until its record is on disk before it is answered. A
//! **denial** is queued without waiting; when the bounded queue is full (a flood), the
//! denial is counted instead, and the next batch carries one `api_request` record with
//! `action = "denials_not_recorded"` and the count: nothing is lost silently, and an
//! attacker cannot make the daemon fsync per request.
//!
//! Never in a record: a token. A presented token that is not ours appears only as its
//! fingerprint (8 hex digits of its SHA-256).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::access::audit::{NewRecord, RecordKind};

/// Appends records to the chain with one fsync; blocking (run off the async workers).
pub type AppendRecords = Arc<dyn Fn(Vec<NewRecord>) -> Result<(), String> + Send + Sync>;

/// Records taken into one append at most.
const MAX_BATCH: usize = 512;

/// One API call as the chain records it (the record's payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// Who: the token's id, or `anonymous`.
    #[serde(skip)]
    pub actor: String,
    /// The role of the token, when it was valid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// `METHOD /route` as the matrix lists it.
    pub action: String,
    /// What it acted on (an alarm key, a window id, a delivery id) or the request path.
    pub object: String,
    /// `ok`, or the error code of the answer (`forbidden`, `conflict`, ...).
    pub result: String,
    /// The HTTP status of the answer.
    pub status: u16,
    /// The client's address.
    pub source: String,
    /// For a token that is not ours: the first 8 hex digits of its SHA-256.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_fingerprint: Option<String>,
    /// When the answer was given.
    #[serde(skip)]
    pub at: DateTime<Utc>,
}

impl AuditEntry {
    fn into_record(mut self) -> Result<NewRecord, serde_json::Error> {
        // The object comes from the client (a path, an alarm key it sent).
        self.object = super::auth::redact(&self.object).into_owned();
        Ok(NewRecord {
            kind: RecordKind::ApiRequest,
            actor: self.actor.clone(),
            payload: serde_json::to_value(&self)?,
            at: self.at,
        })
    }
}

struct Job {
    entry: AuditEntry,
    done: Option<oneshot::Sender<bool>>,
}

/// The handle requests use. Cheap to clone.
#[derive(Clone)]
pub struct ApiAudit {
    tx: mpsc::Sender<Job>,
    overflow: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
}

impl std::fmt::Debug for ApiAudit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiAudit").finish_non_exhaustive()
    }
}

impl ApiAudit {
    /// Spawns the appending task over `append`; it ends when every handle is dropped and
    /// the queue is written.
    pub fn start(append: AppendRecords, capacity: usize) -> ApiAudit {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let overflow = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(AtomicU64::new(0));
        tokio::spawn(run(rx, append, overflow.clone(), failures.clone()));
        ApiAudit {
            tx,
            overflow,
            failures,
        }
    }

    /// Records a write and waits until it is on disk; false when it could not be written
    /// (logged and counted; the write itself already happened and is answered anyway).
    pub async fn record(&self, entry: AuditEntry) -> bool {
        let (done, wait) = oneshot::channel();
        let job = Job {
            entry,
            done: Some(done),
        };
        if self.tx.send(job).await.is_err() {
            self.failures.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        wait.await.unwrap_or(false)
    }

    /// Queues a denial without waiting; a full queue counts it for the summary record.
    pub fn record_denial(&self, entry: AuditEntry) {
        if self.tx.try_send(Job { entry, done: None }).is_err() {
            self.overflow.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records that failed to reach the chain so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

async fn run(
    mut rx: mpsc::Receiver<Job>,
    append: AppendRecords,
    overflow: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let mut records = Vec::with_capacity(jobs.len() + 1);
        let mut waiters = Vec::new();
        for job in jobs {
            match job.entry.into_record() {
                Ok(record) => records.push(record),
                Err(error) => {
                    tracing::error!(%error, "Cannot encode an API audit record.");
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
            waiters.extend(job.done);
        }
        let dropped = overflow.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            records.push(NewRecord {
                kind: RecordKind::ApiRequest,
                actor: "system".to_owned(),
                payload: serde_json::json!({
                    "action": "denials_not_recorded",
                    "object": "api",
                    "result": format!("{dropped} denied requests arrived while the audit queue was full"),
                    "count": dropped,
                }),
                at: Utc::now(),
            });
        }
        let n = records.len() as u64;
        let append = append.clone();
        let written = tokio::task::spawn_blocking(move || append(records)).await;
        let ok = match written {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                tracing::error!(%error, records = n, "API audit records not written.");
                false
            }
            Err(error) => {
                tracing::error!(%error, records = n, "API audit writer failed.");
                false
            }
        };
        if !ok {
            failures.fetch_add(n, Ordering::Relaxed);
        }
        for w in waiters {
            let _ = w.send(ok);
        }
    }
}

/// The client address for a record.
pub fn source_text(ip: Option<IpAddr>) -> String {
    ip.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn entry(n: u16) -> AuditEntry {
        AuditEntry {
            actor: "anonymous".into(),
            role: None,
            action: "GET /api/v1/alarms".into(),
            object: "/api/v1/alarms".into(),
            result: "unauthenticated".into(),
            status: n,
            source: "127.0.0.1".into(),
            token_fingerprint: None,
            at: Utc::now(),
        }
    }

    /// Writes wait for their append; a flood of denials beyond the queue becomes one
    /// counted summary record, so the total is exact.
    #[tokio::test]
    async fn writes_wait_and_overflow_is_counted() {
        let seen: Arc<Mutex<Vec<NewRecord>>> = Arc::default();
        let sink = seen.clone();
        let gate = Arc::new(std::sync::Barrier::new(2));
        let first = Arc::new(AtomicU64::new(0));
        let (g, f) = (gate.clone(), first.clone());
        let append: AppendRecords = Arc::new(move |records| {
            // Hold the first batch until the test has flooded the queue.
            if f.fetch_add(1, Ordering::SeqCst) == 0 {
                g.wait();
            }
            sink.lock().unwrap().extend(records);
            Ok(())
        });
        let audit = ApiAudit::start(append, 4);
        audit.record_denial(entry(401));
        // Wait until the task took that first record (and blocks in the append).
        while first.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        for _ in 0..20 {
            audit.record_denial(entry(403));
        }
        gate.wait();
        assert!(audit.record(entry(200)).await);
        let records = seen.lock().unwrap().clone();
        let individual = records
            .iter()
            .filter(|r| r.payload["action"] == "GET /api/v1/alarms")
            .count() as u64;
        let summarised: u64 = records
            .iter()
            .filter(|r| r.payload["action"] == "denials_not_recorded")
            .map(|r| r.payload["count"].as_u64().unwrap())
            .sum();
        assert_eq!(individual - 1 + summarised, 21, "{records:#?}");
        assert!(summarised > 0);
        assert!(records.iter().all(|r| r.kind == RecordKind::ApiRequest));
    }
}
