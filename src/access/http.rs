//! The ZKTeco PUSH routes (`/iclock/*`) served by `dcguard run` on `daemon.listen`.
//!
//! Every reply is `text/plain` (a JSON reply makes devices re-send). Bodies are limited to
//! [`BODY_LIMIT`] bytes (`413` beyond; a device then re-sends smaller batches or not at
//! all, which shows in its own log). The `.aspx` aliases are used by older firmware.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::ingest::{IclockReply, Ingest};

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// The `/iclock` routes over `ingest`.
pub fn router(ingest: Ingest) -> Router {
    Router::new()
        .route("/iclock/cdata", get(cdata_get).post(cdata_post))
        .route("/iclock/cdata.aspx", get(cdata_get).post(cdata_post))
        .route("/iclock/getrequest", get(poll))
        .route("/iclock/getrequest.aspx", get(poll))
        .route("/iclock/ping", get(poll))
        .route("/iclock/devicecmd", post(devicecmd))
        .route("/iclock/devicecmd.aspx", post(devicecmd))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(ingest)
}

fn respond(reply: IclockReply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        reply.body,
    )
        .into_response()
}

async fn cdata_get(State(ingest): State<Ingest>, RawQuery(query): RawQuery) -> Response {
    respond(ingest.handshake(query.as_deref().unwrap_or(""), ingest.now()))
}

async fn cdata_post(
    State(ingest): State<Ingest>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    respond(
        ingest
            .cdata(query.as_deref().unwrap_or(""), &body, ingest.now())
            .await,
    )
}

async fn poll(State(ingest): State<Ingest>, RawQuery(query): RawQuery) -> Response {
    respond(ingest.poll(query.as_deref().unwrap_or("")))
}

async fn devicecmd(
    State(ingest): State<Ingest>,
    RawQuery(query): RawQuery,
    _body: Bytes,
) -> Response {
    respond(ingest.poll(query.as_deref().unwrap_or("")))
}
