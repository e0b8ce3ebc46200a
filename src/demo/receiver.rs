//! The demo's built-in incident receiver: an HTTP endpoint on loopback that the daemon's
//! webhook adapter delivers to. It checks the signature, appends each CloudEvents body to
//! `incidents.jsonl` (one object per line, the bytes as received), tells the timeline,
//! and relays each event to an external webhook when one is configured.
//!
//! The relay is best effort (a few attempts, then a warning on the terminal): the durable
//! outbox is the daemon's, towards this receiver.

use std::collections::HashSet;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::ticketing::webhook::{CONTENT_TYPE, IDEMPOTENCY_HEADER, SIGNATURE_HEADER, signature};

/// The file the receiver writes in the data directory.
pub const INCIDENTS_FILE: &str = "incidents.jsonl";

/// An external webhook the receiver relays to.
#[derive(Clone)]
pub struct Relay {
    /// The receiver's URL.
    pub url: reqwest::Url,
    /// The HMAC-SHA256 key (from the environment variable named on the command line).
    pub key: Vec<u8>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Relay").field("url", &self.url).finish()
    }
}

struct Shared {
    key: Vec<u8>,
    file: Mutex<std::fs::File>,
    seen: Mutex<HashSet<String>>,
    events: mpsc::UnboundedSender<serde_json::Value>,
    relay: Option<mpsc::UnboundedSender<(String, Bytes)>>,
}

/// A running receiver.
pub struct Receiver {
    /// Where the daemon posts.
    pub url: String,
    /// The file written.
    pub path: PathBuf,
    token: CancellationToken,
    server: JoinHandle<()>,
    relay: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Binds a free loopback port; `events` gets every new envelope.
    pub async fn start(
        data_dir: &Path,
        key: Vec<u8>,
        relay: Option<Relay>,
        events: mpsc::UnboundedSender<serde_json::Value>,
    ) -> anyhow::Result<Receiver> {
        let path = data_dir.join(INCIDENTS_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let (relay_tx, relay_task) = match relay {
            Some(relay) => {
                let (tx, rx) = mpsc::unbounded_channel();
                (Some(tx), Some(tokio::spawn(relay_loop(relay, rx))))
            }
            None => (None, None),
        };
        let shared = Arc::new(Shared {
            key,
            file: Mutex::new(file),
            seen: Mutex::new(HashSet::new()),
            events,
            relay: relay_tx,
        });
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .context("cannot bind the built-in incident receiver on loopback")?;
        let addr = listener.local_addr()?;
        let token = CancellationToken::new();
        let router = Router::new()
            .route("/incidents", post(receive))
            .with_state(shared);
        let stop = token.clone();
        let server = tokio::spawn(async move {
            let serve = axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.cancelled().await });
            if let Err(error) = serve.await {
                tracing::error!(%error, "The built-in incident receiver failed.");
            }
        });
        Ok(Receiver {
            url: format!("http://{addr}/incidents"),
            path,
            token,
            server,
            relay: relay_task,
        })
    }

    /// Stops serving, then lets the relay finish what is queued (at most `deadline`).
    pub async fn stop(self, deadline: Duration) -> bool {
        self.token.cancel();
        let server = tokio::time::timeout(deadline, self.server).await.is_ok();
        // The server's end dropped the last relay sender: the relay drains and ends.
        let relay = match self.relay {
            Some(task) => {
                let abort = task.abort_handle();
                let done = tokio::time::timeout(deadline, task).await.is_ok();
                if !done {
                    abort.abort();
                }
                done
            }
            None => true,
        };
        server && relay
    }
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let presented = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if presented != signature(&shared.key, &body) {
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(envelope) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let key = headers
        .get(IDEMPOTENCY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| envelope["id"].as_str().map(str::to_owned))
        .unwrap_or_default();
    // A re-delivery (our answer was lost) is acknowledged again, written once.
    if !shared
        .seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key.clone())
    {
        return StatusCode::OK;
    }
    {
        let mut file = shared.file.lock().unwrap_or_else(|e| e.into_inner());
        let mut line = body.to_vec();
        line.push(b'\n');
        if file.write_all(&line).and_then(|()| file.flush()).is_err() {
            // Not written: let the daemon's outbox retry it.
            shared
                .seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
            return StatusCode::SERVICE_UNAVAILABLE;
        }
    }
    if let Some(relay) = &shared.relay {
        let _ = relay.send((key, body));
    }
    let _ = shared.events.send(envelope);
    StatusCode::OK
}

/// Posts each event to the external webhook, signed with its key; three attempts.
async fn relay_loop(relay: Relay, mut rx: mpsc::UnboundedReceiver<(String, Bytes)>) {
    let client = crate::ticketing::http_client(Duration::from_secs(10));
    while let Some((key, body)) = rx.recv().await {
        let sig = signature(&relay.key, &body);
        let mut last = String::new();
        let mut delivered = false;
        for attempt in 0..3u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
            }
            let sent = client
                .post(relay.url.clone())
                .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
                .header(IDEMPOTENCY_HEADER, &key)
                .header(SIGNATURE_HEADER, &sig)
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => {
                    delivered = true;
                    break;
                }
                Ok(r) => last = format!("HTTP {}", r.status().as_u16()),
                Err(e) => last = e.without_url().to_string(),
            }
        }
        if !delivered {
            super::say(&format!(
                "  ! the external webhook {} did not take event {key}: {last}",
                relay.url
            ));
        }
    }
}
