//! System routes: `/healthz`, `/readyz`, `/metrics`, the OpenAPI document, and the
//! document's top level (title, security scheme, tags).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa::Modify;
use utoipa::openapi::OpenApi as Doc;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use super::ApiState;
use super::dto::ReadyDto;
use super::error::{ApiError, ErrorBody};

/// The document's top level; the paths come from the handlers' attributes.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "dcguard API",
        version = "1",
        description = "Facility state, alarms, incidents and deliveries of the ministry's \
                       data centers. Errors always have the shape \
                       {\"error\":{\"code\":\"...\",\"message\":\"...\"}}. Token routes take \
                       `Authorization: Bearer <token>`; who may call what is the access \
                       matrix of docs/security.md."
    ),
    modifiers(&BearerScheme),
    components(schemas(ErrorBody)),
    tags(
        (name = "system", description = "Liveness, readiness, metrics, this document"),
        (name = "facility", description = "Sites, rooms, racks, devices, points, power, cooling"),
        (name = "alarms", description = "Alarms, operator actions, maintenance windows"),
        (name = "incidents", description = "Incidents and their delivery to the service desk"),
        (name = "access", description = "Reader events, findings, the access audit chain")
    )
)]
pub struct ApiDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut Doc) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "system",
    responses((status = 200, description = "alive", body = String, content_type = "text/plain"))
)]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the configuration is loaded (it is, once this answers), the store answers,
/// every source was started and the alarm task runs.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "system",
    responses(
        (status = 200, description = "ready", body = ReadyDto),
        (status = 503, description = "not ready; the message names the failing checks", body = ErrorBody)
    )
)]
pub async fn readyz(State(state): State<ApiState>) -> Response {
    let mut checks = BTreeMap::new();
    checks.insert("config".to_owned(), "ok".to_owned());
    let store = state.store.clone();
    let store_ok = matches!(
        tokio::task::spawn_blocking(move || store.applied_migrations()).await,
        Ok(Ok(_))
    );
    checks.insert("store".to_owned(), ok(store_ok, "not answering"));
    let sources = state.readiness.sources_started.load(Ordering::Acquire);
    checks.insert("sources".to_owned(), ok(sources, "not started"));
    let alarms = state.alarms.watch().has_changed().is_ok();
    checks.insert("alarms".to_owned(), ok(alarms, "stopped"));
    let failing: Vec<String> = checks
        .iter()
        .filter(|(_, v)| *v != "ok")
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    if failing.is_empty() {
        Json(ReadyDto {
            status: "ready".to_owned(),
            checks,
            api_tokens: state.tokens.len(),
        })
        .into_response()
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            format!("not ready: {}", failing.join(", ")),
        )
        .into_response()
    }
}

fn ok(good: bool, bad: &str) -> String {
    if good {
        "ok".to_owned()
    } else {
        bad.to_owned()
    }
}

/// Prometheus metrics (text format 0.0.4).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "system",
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "the metrics", body = String, content_type = "text/plain"),
        (status = 401, description = "token mode: no or an unknown token", body = ErrorBody),
        (status = 403, description = "not a loopback client, or a role without access", body = ErrorBody),
        (status = 429, description = "too many failed authentications", body = ErrorBody)
    )
)]
pub async fn metrics(State(state): State<ApiState>) -> Response {
    let render = state.render_metrics.clone();
    // Rendering thousands of series is CPU work: keep it off the async workers.
    match tokio::task::spawn_blocking(move || render()).await {
        Ok(Ok(text)) => (
            [(
                header::CONTENT_TYPE,
                crate::telemetry::metrics::CONTENT_TYPE,
            )],
            text,
        )
            .into_response(),
        Ok(Err(error)) => {
            tracing::error!(%error, "Metrics rendering failed.");
            ApiError::internal().into_response()
        }
        Err(error) => {
            tracing::error!(%error, "Metrics rendering task failed.");
            ApiError::internal().into_response()
        }
    }
}

/// This API's OpenAPI 3 document, generated from the code.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "system",
    responses((status = 200, description = "the OpenAPI document", content_type = "application/json"))
)]
pub async fn openapi_json(Extension(doc): Extension<Arc<Doc>>) -> Json<Doc> {
    Json((*doc).clone())
}
