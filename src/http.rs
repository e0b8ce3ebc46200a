//! The daemon's HTTP server on `daemon.listen` (loopback by default): it binds, serves a
//! router with the client's address available to it (`ConnectInfo`, for the guard's
//! loopback check and rate limit), and stops gracefully when its token is cancelled; it
//! never blocks a source.
//!
//! `dcguard run` serves `api::router` (the REST API, `/healthz`, `/readyz`, `/metrics` and
//! the ZKTeco routes, all behind the access matrix) through [`HttpServer::serve`].
//! [`HttpServer::start`] and [`HttpServer::start_with`] serve the bare `/metrics` and
//! `/healthz` without any guard: for component tests only.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Renders the metrics text for one scrape; an `Err` is a 500 with the message.
pub type RenderMetrics = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// The HTTP server could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for HTTP on {address}: {source}")]
pub struct BindError {
    /// The address asked for.
    pub address: SocketAddr,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// A running server.
#[derive(Debug)]
pub struct HttpServer {
    local: SocketAddr,
    task: JoinHandle<()>,
}

impl HttpServer {
    /// Binds `address` (port 0: any free port) and serves until `shutdown` is cancelled;
    /// in-flight requests are finished first.
    pub async fn start(
        address: SocketAddr,
        render: RenderMetrics,
        shutdown: CancellationToken,
    ) -> Result<HttpServer, BindError> {
        Self::start_with(address, render, Router::new(), shutdown).await
    }

    /// [`HttpServer::start`] with more routes merged in (e.g. the `/iclock` ingestion).
    pub async fn start_with(
        address: SocketAddr,
        render: RenderMetrics,
        extra: Router,
        shutdown: CancellationToken,
    ) -> Result<HttpServer, BindError> {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| BindError { address, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| BindError { address, source })?;
        let app = router(render).merge(extra);
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "HTTP server failed.");
            }
        });
        Ok(HttpServer { local, task })
    }

    /// Binds `address` and serves `app` (with `ConnectInfo<SocketAddr>`) until `shutdown`
    /// is cancelled; in-flight requests are finished first.
    pub async fn serve(
        address: SocketAddr,
        app: Router,
        shutdown: CancellationToken,
    ) -> Result<HttpServer, BindError> {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| BindError { address, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| BindError { address, source })?;
        let task = tokio::spawn(async move {
            let served = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
            if let Err(error) = served {
                tracing::error!(%error, "HTTP server failed.");
            }
        });
        Ok(HttpServer { local, task })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The serving task: ends after the shutdown token fired and in-flight requests
    /// finished, or (logged) when serving failed.
    pub fn into_task(self) -> JoinHandle<()> {
        self.task
    }
}

/// The routes: `GET /metrics`, `GET /healthz`.
pub fn router(render: RenderMetrics) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(render)
}

async fn metrics(State(render): State<RenderMetrics>) -> Response {
    // Rendering thousands of series is CPU work: keep it off the async workers.
    let rendered = tokio::task::spawn_blocking(move || render()).await;
    match rendered {
        Ok(Ok(text)) => (
            [(
                header::CONTENT_TYPE,
                crate::telemetry::metrics::CONTENT_TYPE,
            )],
            text,
        )
            .into_response(),
        Ok(Err(message)) => (StatusCode::INTERNAL_SERVER_ERROR, message).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics rendering failed".to_owned(),
        )
            .into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}
