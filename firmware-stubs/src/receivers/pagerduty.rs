//! A fake PagerDuty Events API v2 endpoint (`POST /v2/enqueue`) for the PagerDuty
//! adapter's tests.
//!
//! What it emulates, as PagerDuty documents it:
//!
//! - One routing key; an event for another key, an unknown `event_action`, a trigger
//!   without `payload.summary`/`source`/a valid `severity`, a `summary` over 1024 or a
//!   `dedup_key` over 255 characters, or a body over 512 KB is refused with 400
//!   (`{"status":"invalid event",...}`).
//! - Alerts by `dedup_key`: a `trigger` whose key has an open (triggered or
//!   acknowledged) alert is folded into it (its trigger count rises, its status stays);
//!   otherwise it opens a new alert (also after the old one was resolved); a trigger
//!   without a key always opens a new alert. `acknowledge` and `resolve` change an open
//!   alert and are dropped silently for unknown or resolved keys.
//! - Accepted events get 202 `{"status":"success","message":"Event processed","dedup_key":...}`.
//!
//! Faults are the ServiceNow fake's ([`Fault`], [`Faults`]).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::servicenow::answer_with;
pub use super::servicenow::{Fault, Faults, Logged};

/// Longest `dedup_key`.
pub const DEDUP_KEY_MAX: usize = 255;
/// Longest `payload.summary`.
pub const SUMMARY_MAX: usize = 1024;
/// Largest event body.
pub const BODY_MAX: usize = 512 * 1024;

/// An alert's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertStatus {
    /// Open, not acknowledged.
    Triggered,
    /// Open, acknowledged.
    Acknowledged,
    /// Closed.
    Resolved,
}

/// One alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Its dedup key.
    pub dedup_key: String,
    /// Its status.
    pub status: AlertStatus,
    /// Triggers folded into it (1 for a fresh alert).
    pub triggers: u32,
    /// Every accepted event action applied to it, in order.
    pub actions: Vec<String>,
    /// The payload of its first trigger.
    pub first_payload: Value,
    /// The payload of its latest trigger.
    pub last_payload: Value,
}

#[derive(Debug, Default)]
struct Inner {
    alerts: Vec<Alert>,
    dropped: usize,
    faults: Faults,
    log: Vec<Logged>,
}

#[derive(Debug)]
struct Shared {
    routing_key: String,
    cancel: CancellationToken,
    inner: Mutex<Inner>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The fake endpoint, serving on a loopback port until dropped.
#[derive(Debug)]
pub struct FakePagerDuty {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Drop for FakePagerDuty {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
    }
}

impl FakePagerDuty {
    /// Starts an endpoint on 127.0.0.1 (a free port) accepting one routing key.
    pub async fn start(routing_key: &str) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let shared = Arc::new(Shared {
            routing_key: routing_key.to_owned(),
            cancel: cancel.clone(),
            inner: Mutex::new(Inner::default()),
        });
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(cancel.cancelled_owned())
                .await;
        });
        Ok(FakePagerDuty { addr, shared })
    }

    /// `http://127.0.0.1:<port>/v2/enqueue`.
    pub fn events_url(&self) -> String {
        format!("http://{}/v2/enqueue", self.addr)
    }

    /// Every alert, in opening order.
    pub fn alerts(&self) -> Vec<Alert> {
        self.shared.lock().alerts.clone()
    }

    /// The alerts with this dedup key (several when one was resolved and triggered again).
    pub fn alerts_with(&self, dedup_key: &str) -> Vec<Alert> {
        self.shared
            .lock()
            .alerts
            .iter()
            .filter(|a| a.dedup_key == dedup_key)
            .cloned()
            .collect()
    }

    /// Acknowledge/resolve events dropped because no open alert had their key.
    pub fn dropped(&self) -> usize {
        self.shared.lock().dropped
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<Logged> {
        self.shared.lock().log.clone()
    }

    /// Changes the fault plan.
    pub fn faults(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.shared.lock().faults);
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let fault = {
        let mut inner = shared.lock();
        let fault = inner.faults.take_next();
        inner.log.push(Logged {
            method: method.to_string(),
            path: uri.path().to_owned(),
            fault: fault.clone(),
        });
        fault
    };
    let cancel = shared.cancel.clone();
    answer_with(fault, &cancel, || serve(&shared, &method, &uri, &body)).await
}

fn invalid(errors: &[&str]) -> Response {
    let body =
        json!({"status": "invalid event", "message": "Event object is invalid", "errors": errors});
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn serve(shared: &Shared, method: &Method, uri: &Uri, body: &[u8]) -> Response {
    if uri.path() != "/v2/enqueue" {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    }
    if method != Method::POST {
        return (StatusCode::METHOD_NOT_ALLOWED, "method not allowed").into_response();
    }
    if body.len() > BODY_MAX {
        return invalid(&["Event is larger than 512 KB"]);
    }
    let Ok(event) = serde_json::from_slice::<Value>(body) else {
        return invalid(&["Event is not valid JSON"]);
    };
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    if text(&event, "routing_key").as_deref() != Some(shared.routing_key.as_str()) {
        return invalid(&["Invalid routing key"]);
    }
    let key = text(&event, "dedup_key");
    if key
        .as_ref()
        .is_some_and(|k| k.chars().count() > DEDUP_KEY_MAX)
    {
        return invalid(&["'dedup_key' is longer than 255 characters"]);
    }
    let action = text(&event, "event_action").unwrap_or_default();
    let payload = event.get("payload").cloned().unwrap_or(Value::Null);
    let mut inner = shared.lock();
    let open = |inner: &Inner, k: &str| {
        inner
            .alerts
            .iter()
            .rposition(|a| a.dedup_key == k && a.status != AlertStatus::Resolved)
    };
    let key = match action.as_str() {
        "trigger" => {
            let summary = text(&payload, "summary").unwrap_or_default();
            let severity = text(&payload, "severity").unwrap_or_default();
            if summary.is_empty() || text(&payload, "source").is_none_or(|s| s.is_empty()) {
                return invalid(&["'payload.summary' and 'payload.source' are required"]);
            }
            if summary.chars().count() > SUMMARY_MAX {
                return invalid(&["'payload.summary' is longer than 1024 characters"]);
            }
            if !["critical", "error", "warning", "info"].contains(&severity.as_str()) {
                return invalid(&["'payload.severity' is invalid"]);
            }
            let key = key.unwrap_or_else(|| format!("pd-{:032x}", inner.alerts.len() + 1));
            match open(&inner, &key) {
                Some(i) => {
                    let a = &mut inner.alerts[i];
                    a.triggers += 1;
                    a.actions.push(action.clone());
                    a.last_payload = payload;
                }
                None => inner.alerts.push(Alert {
                    dedup_key: key.clone(),
                    status: AlertStatus::Triggered,
                    triggers: 1,
                    actions: vec![action.clone()],
                    first_payload: payload.clone(),
                    last_payload: payload,
                }),
            }
            key
        }
        "acknowledge" | "resolve" => {
            let Some(key) = key.filter(|k| !k.is_empty()) else {
                return invalid(&["'dedup_key' is required for acknowledge and resolve"]);
            };
            match open(&inner, &key) {
                Some(i) => {
                    let a = &mut inner.alerts[i];
                    a.actions.push(action.clone());
                    a.status = if action == "resolve" {
                        AlertStatus::Resolved
                    } else {
                        AlertStatus::Acknowledged
                    };
                }
                None => inner.dropped += 1,
            }
            key
        }
        _ => return invalid(&["'event_action' must be trigger, acknowledge or resolve"]),
    };
    let body = json!({"status": "success", "message": "Event processed", "dedup_key": key});
    (
        StatusCode::ACCEPTED,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
