//! A fake receiver of dcguard's generic incident webhook (CloudEvents + HMAC-SHA256) for
//! the delivery tests: a well-behaved receiver that can be told to misbehave.
//!
//! What a well-behaved receiver does, and this one does:
//!
//! - Verifies `X-Dcguard-Signature: sha256=<hex>` (HMAC-SHA256 of the exact body with the
//!   shared key) before looking at the body: a missing or wrong signature gets 401 and
//!   nothing is applied. Implemented here independently of the daemon's code.
//! - **Deduplicates by `Idempotency-Key`**: the first request with a key is applied
//!   (recorded in [`WebhookReceiver::applied`]); later ones get 200 with
//!   `{"status":"duplicate"}` and change nothing. A request without the header gets 400.
//! - Records every request it read ([`WebhookReceiver::requests`]), so a test can count
//!   what was offered against what was applied, and every connection it reset.
//!
//! What it can be told to do ([`Behaviour`], changed at run time): answer a status
//! (503, 400, ...) without applying, 429 with `Retry-After`, time out (sleep past the
//! client's timeout, then 504, not applied), black-hole (read the request and never
//! answer), apply and then answer late, or be flaky (a seeded share of 503 answers and of
//! connections reset (RST) as soon as they are accepted). It can also go down (stop
//! listening: connections are refused) and come back up on the same port.
//!
//! Every answer carries `Connection: close`, so each request comes on a new connection
//! and a connection-level fault can hit any of them.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use sha2::Sha256;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How the receiver answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// Verify, deduplicate, apply, 200.
    Normal,
    /// Answer this status without applying (503, 500, 400, 422, ...).
    Status(u16),
    /// 429 with `Retry-After: <secs>`, not applied.
    RateLimited {
        /// The `Retry-After` value, seconds.
        retry_after_secs: u64,
    },
    /// Sleep this long (past the client's timeout), then 504; not applied.
    Timeout(Duration),
    /// Read the request and never answer; not applied.
    BlackHole,
    /// Apply, then answer 200 after this long (past the client's timeout: the client
    /// sees a timeout although the receiver applied it).
    SlowAfterApply(Duration),
    /// Per request, `error_pct` % answer 503 (not applied); per connection, `reset_pct` %
    /// are reset when accepted. Seeded, so a run repeats.
    Flaky {
        /// Share of 503 answers, percent.
        error_pct: u8,
        /// Share of connections reset, percent.
        reset_pct: u8,
        /// RNG seed.
        seed: u64,
    },
}

/// One request as read, whatever was answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// `Idempotency-Key`.
    pub key: Option<String>,
    /// The signature verified.
    pub signature_ok: bool,
    /// CloudEvents `type`.
    pub event_type: Option<String>,
    /// `data.incident_id`.
    pub incident_id: Option<String>,
    /// `data.sequence`.
    pub sequence: Option<u64>,
    /// The status answered (`None`: never answered).
    pub status: Option<u16>,
    /// When it arrived.
    pub at: Instant,
}

/// One applied transition.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// `Idempotency-Key`.
    pub key: String,
    /// CloudEvents `type`.
    pub event_type: String,
    /// `data.incident_id`.
    pub incident_id: String,
    /// `data.sequence`.
    pub sequence: u64,
    /// The whole envelope.
    pub envelope: serde_json::Value,
}

#[derive(Debug)]
struct Inner {
    behaviour: Behaviour,
    rng: ChaCha8Rng,
    requests: Vec<Request>,
    applied: Vec<Applied>,
    seen: HashSet<String>,
    duplicates: usize,
    resets: usize,
}

#[derive(Debug)]
struct Shared {
    key: Vec<u8>,
    inner: Mutex<Inner>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The fake webhook receiver. Stops when dropped.
#[derive(Debug)]
pub struct WebhookReceiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        if let Some(task) = self.server_slot().take() {
            task.abort();
        }
    }
}

impl WebhookReceiver {
    /// Starts a receiver on 127.0.0.1 (a free port) verifying signatures with `key`.
    pub async fn start(key: impl Into<Vec<u8>>) -> io::Result<WebhookReceiver> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            key: key.into(),
            inner: Mutex::new(Inner {
                behaviour: Behaviour::Normal,
                rng: ChaCha8Rng::seed_from_u64(0),
                requests: Vec::new(),
                applied: Vec::new(),
                seen: HashSet::new(),
                duplicates: 0,
                resets: 0,
            }),
        });
        let r = WebhookReceiver {
            addr,
            shared,
            server: Mutex::new(None),
        };
        r.serve(listener);
        Ok(r)
    }

    fn server_slot(&self) -> MutexGuard<'_, Option<JoinHandle<()>>> {
        self.server.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn serve(&self, listener: TcpListener) {
        let app = Router::new()
            .fallback(receive)
            .with_state(Arc::clone(&self.shared));
        let listener = Resetting {
            inner: listener,
            shared: Arc::clone(&self.shared),
        };
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        if let Some(old) = self.server_slot().replace(task) {
            old.abort();
        }
    }

    /// The URL to configure: `http://127.0.0.1:PORT/incidents`.
    pub fn url(&self) -> String {
        format!("http://{}/incidents", self.addr)
    }

    /// The address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes how the next requests are answered.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        let mut inner = self.shared.lock();
        if let Behaviour::Flaky { seed, .. } = behaviour {
            inner.rng = ChaCha8Rng::seed_from_u64(seed);
        }
        inner.behaviour = behaviour;
    }

    /// Stops listening: new connections are refused until [`WebhookReceiver::come_up`].
    pub async fn go_down(&self) {
        let task = self.server_slot().take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens again on the same port.
    pub async fn come_up(&self) -> io::Result<()> {
        let listener = TcpListener::bind(self.addr).await?;
        self.serve(listener);
        Ok(())
    }

    /// Every request read, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.lock().requests.clone()
    }

    /// Every applied transition, in the order applied.
    pub fn applied(&self) -> Vec<Applied> {
        self.shared.lock().applied.clone()
    }

    /// Requests with a valid signature whose key had already been applied.
    pub fn duplicates_offered(&self) -> usize {
        self.shared.lock().duplicates
    }

    /// Connections reset on purpose.
    pub fn resets(&self) -> usize {
        self.shared.lock().resets
    }

    /// Applied transitions per incident, in the order applied (sequence numbers).
    pub fn sequences_by_incident(&self) -> HashMap<String, Vec<u64>> {
        let mut by: HashMap<String, Vec<u64>> = HashMap::new();
        for a in self.shared.lock().applied.iter() {
            by.entry(a.incident_id.clone())
                .or_default()
                .push(a.sequence);
        }
        by
    }
}

/// The listener that resets a share of connections in flaky mode.
struct Resetting {
    inner: TcpListener,
    shared: Arc<Shared>,
}

impl axum::serve::Listener for Resetting {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            let (stream, peer) = match self.inner.accept().await {
                Ok(x) => x,
                Err(_) => {
                    // Out of file descriptors and the like: wait and go on.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let reset = {
                let mut inner = self.shared.lock();
                let pct = match inner.behaviour {
                    Behaviour::Flaky { reset_pct, .. } => reset_pct,
                    _ => 0,
                };
                let hit = pct > 0 && inner.rng.random_range(0..100u8) < pct;
                if hit {
                    inner.resets += 1;
                }
                hit
            };
            if reset {
                // Linger 0: closing sends RST instead of FIN.
                let _ = stream.set_zero_linger();
                drop(stream);
                continue;
            }
            return (stream, peer);
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

fn verify(key: &[u8], body: &[u8], header: Option<&HeaderValue>) -> bool {
    let Some(hex) = header
        .and_then(|h| h.to_str().ok())
        .and_then(|s| s.strip_prefix("sha256="))
    else {
        return false;
    };
    let Some(given) = decode_hex(hex) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let signature_ok = verify(&shared.key, &body, headers.get("x-dcguard-signature"));
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let envelope: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    let field = |f: &dyn Fn(&serde_json::Value) -> Option<&serde_json::Value>| {
        envelope.as_ref().and_then(f).cloned()
    };
    let event_type = field(&|e| e.get("type")).and_then(|v| v.as_str().map(str::to_owned));
    let incident_id =
        field(&|e| e.get("data")?.get("incident_id")).and_then(|v| v.as_str().map(str::to_owned));
    let sequence = field(&|e| e.get("data")?.get("sequence")).and_then(|v| v.as_u64());

    // Decide, and record the request, under one lock.
    let (behaviour, index) = {
        let mut inner = shared.lock();
        let mut behaviour = inner.behaviour.clone();
        if let Behaviour::Flaky { error_pct, .. } = behaviour {
            behaviour = if error_pct > 0 && inner.rng.random_range(0..100u8) < error_pct {
                Behaviour::Status(503)
            } else {
                Behaviour::Normal
            };
        }
        inner.requests.push(Request {
            key: key.clone(),
            signature_ok,
            event_type: event_type.clone(),
            incident_id: incident_id.clone(),
            sequence,
            status: None,
            at: Instant::now(),
        });
        (behaviour, inner.requests.len() - 1)
    };
    let answered = |status: StatusCode| {
        shared.lock().requests[index].status = Some(status.as_u16());
    };

    if !signature_ok {
        answered(StatusCode::UNAUTHORIZED);
        return answer(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"error": "bad signature"}),
        );
    }
    let Some(key) = key else {
        answered(StatusCode::BAD_REQUEST);
        return answer(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": "Idempotency-Key missing"}),
        );
    };
    let apply = |shared: &Shared| -> &'static str {
        let mut inner = shared.lock();
        if !inner.seen.insert(key.clone()) {
            inner.duplicates += 1;
            return "duplicate";
        }
        inner.applied.push(Applied {
            key: key.clone(),
            event_type: event_type.clone().unwrap_or_default(),
            incident_id: incident_id.clone().unwrap_or_default(),
            sequence: sequence.unwrap_or(0),
            envelope: envelope.clone().unwrap_or(serde_json::Value::Null),
        });
        "applied"
    };
    match behaviour {
        Behaviour::Normal | Behaviour::Flaky { .. } => {
            let what = apply(&shared);
            answered(StatusCode::OK);
            answer(StatusCode::OK, serde_json::json!({"status": what}))
        }
        Behaviour::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            answered(status);
            answer(status, serde_json::json!({"error": "told to fail"}))
        }
        Behaviour::RateLimited { retry_after_secs } => {
            answered(StatusCode::TOO_MANY_REQUESTS);
            let mut r = answer(
                StatusCode::TOO_MANY_REQUESTS,
                serde_json::json!({"error": "slow down"}),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            r
        }
        Behaviour::Timeout(d) => {
            tokio::time::sleep(d).await;
            answered(StatusCode::GATEWAY_TIMEOUT);
            answer(StatusCode::GATEWAY_TIMEOUT, serde_json::json!({}))
        }
        Behaviour::BlackHole => std::future::pending().await,
        Behaviour::SlowAfterApply(d) => {
            let what = apply(&shared);
            tokio::time::sleep(d).await;
            answered(StatusCode::OK);
            answer(StatusCode::OK, serde_json::json!({"status": what}))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_check_accepts_the_right_mac_only() {
        // RFC 4231 test case 2.
        let good = "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        let body = b"what do ya want for nothing?";
        let h = |s: &str| HeaderValue::from_str(s).unwrap();
        assert!(verify(b"Jefe", body, Some(&h(good))));
        assert!(!verify(
            b"Jefe",
            b"what do ya want for nothing!",
            Some(&h(good))
        ));
        assert!(!verify(b"jefe", body, Some(&h(good))));
        assert!(!verify(b"Jefe", body, Some(&h(&good[..good.len() - 1]))));
        assert!(!verify(
            b"Jefe",
            body,
            Some(&h(&good.replace("sha256=", "sha1=")))
        ));
        assert!(!verify(b"Jefe", body, None));
    }

    #[tokio::test]
    async fn it_deduplicates_by_key_and_comes_back_on_the_same_port() {
        let r = WebhookReceiver::start(b"k".to_vec()).await.unwrap();
        let body =
            br#"{"type":"dcguard.incident.opened","data":{"incident_id":"inc-1","sequence":1}}"#;
        let post = |key: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert("idempotency-key", HeaderValue::from_static(key));
            let mut mac = Hmac::<Sha256>::new_from_slice(b"k").unwrap();
            mac.update(body);
            let sig: String = mac
                .finalize()
                .into_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            headers.insert(
                "x-dcguard-signature",
                HeaderValue::from_str(&format!("sha256={sig}")).unwrap(),
            );
            receive(
                State(Arc::clone(&r.shared)),
                headers,
                Bytes::from_static(body),
            )
        };
        assert_eq!(post("a:1").await.status(), StatusCode::OK);
        assert_eq!(post("a:1").await.status(), StatusCode::OK);
        assert_eq!(r.applied().len(), 1);
        assert_eq!(r.duplicates_offered(), 1);
        assert_eq!(r.requests().len(), 2);
        assert_eq!(r.sequences_by_incident()["inc-1"], [1]);
        r.set_behaviour(Behaviour::Status(400));
        assert_eq!(post("a:2").await.status(), StatusCode::BAD_REQUEST);
        assert_eq!(r.applied().len(), 1);

        r.go_down().await;
        assert!(TcpStream::connect(r.addr()).await.is_err(), "down");
        r.come_up().await.unwrap();
        assert!(TcpStream::connect(r.addr()).await.is_ok(), "up again");
    }
}
