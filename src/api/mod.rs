//! The REST API (`/api/v1`), its guard and the daemon's HTTP surface around it: the only
//! module that knows our REST DTOs (invariant 3: domain types are never serialized
//! directly; `dto` maps them).
//!
//! # How a request goes
//!
//! 1. [`outer`]: a declared body (`Content-Length`) over the limit is refused 413 on every
//!    route; a deadline of [`REQUEST_TIMEOUT`] for the whole request (503 `timeout`),
//!    the request counter, and [`error::normalise`], which gives every error answer that
//!    axum produced itself (404, 405, 413, 415) the one error shape.
//! 2. [`guard`] (a route layer, so it knows the matched route): looks the (method, route)
//!    up in [`matrix::MATRIX`]; a route the matrix does not list is refused (fail closed).
//!    Token routes: a locked source address or token is answered 429 with `Retry-After`
//!    (`ratelimit`); then `Authorization: Bearer` is checked (401 `unauthenticated` or
//!    `invalid_token`) and the role against the row (403 `forbidden`). Each refusal counts
//!    towards the rate limit and goes into the audit chain (`audit`). `/metrics` is served
//!    to loopback clients or to tokens, per `[auth] metrics_access`; the ZKTeco routes are
//!    authorised by reader serial in `access::ingest`.
//! 3. The handler, with the caller's [`auth::Principal`] in the request extensions. Routes
//!    the matrix marks audited (every write) run to completion in their own task even if
//!    the client goes away or the deadline passes, and their record (actor, action, object,
//!    result, time) is on disk before the answer is sent.
//!
//! Bodies are limited per route by [`body_limit`] (413): [`MAX_BODY_BYTES`], 4 MiB for
//! event batches, the readers' own limit on `/iclock`. Answers carry no stack trace, path, SQL
//! or token: handlers log the cause of an internal error and answer 500 `internal`.
//!
//! # Adding a route (the pattern for the access routes and the web pages)
//!
//! 1. Add a row to [`matrix::MATRIX`] (method, route, roles, audit, one line).
//! 2. Write the handler in a module under `api/` with a `#[utoipa::path(...)]` attribute
//!    (path, params, request body, every response with [`error::ErrorBody`] for errors)
//!    and DTOs in [`dto`] deriving `ToSchema`; take inputs through [`error::ApiJson`],
//!    [`error::ApiQuery`] and [`error::ApiPath`] so a bad input answers in the error shape.
//! 3. Register it in [`api_router`] with `.routes(routes!(handler))`.
//! 4. Run `cargo test --test api_matrix` (it walks the new row with every role) and
//!    `DCGUARD_BLESS=1 cargo test --test api_matrix` to refresh `docs/security.md`.

pub(crate) mod access;
pub(crate) mod alarms;
pub mod audit;
pub mod auth;
pub mod dto;
pub mod error;
pub(crate) mod facility;
pub(crate) mod incidents;
pub mod matrix;
pub mod ratelimit;
mod system;
pub(crate) mod visits;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use utoipa::OpenApi as _;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::audit::{ApiAudit, AuditEntry, source_text};
use self::auth::{Principal, TokenStore, fingerprint, token_hash};
use self::error::{ApiError, ApiResult, ErrorCode};
use self::matrix::{Audit, Guard, RouteRule};
use self::ratelimit::{FailureLimiter, LimitKey, LimitSettings, retry_secs};
use crate::alarms::task::AlarmHandle;
use crate::app::LiveState;
use crate::config::model::{Config, MetricsAccess};
use crate::http::RenderMetrics;
use crate::incidents::outbox::Outbox;
use crate::sources::health::HealthRegistry;
use crate::store::Store;
use crate::telemetry::metrics::ApiMetrics;

/// Largest accepted request body of an API route (the ZKTeco routes have their own).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Default deadline of one request, body included ([`LimitSettings::request_timeout`]).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Queue of audit records waiting for their append.
const AUDIT_QUEUE: usize = 1024;

/// What `/readyz` checks beyond the store: flags the daemon sets as it starts.
#[derive(Debug, Default)]
pub struct Readiness {
    /// Every source task was spawned.
    pub sources_started: AtomicBool,
}

impl Readiness {
    /// Marks the sources started.
    pub fn set_sources_started(&self) {
        self.sources_started.store(true, Ordering::Release);
    }
}

/// Everything the API reads and acts on. Built once by `app`; shared by every request.
pub struct ApiContext {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Latest reading per point.
    pub live: LiveState,
    /// Device health.
    pub health: HealthRegistry,
    /// The alarm task: view and operator actions.
    pub alarms: AlarmHandle,
    /// The store (incident log).
    pub store: Store,
    /// The delivery outbox.
    pub outbox: Outbox,
    /// Hashed tokens.
    pub tokens: TokenStore,
    /// Who may read `/metrics`.
    pub metrics_access: MetricsAccess,
    /// Failure rate limit.
    pub limiter: FailureLimiter,
    /// Deadline of one request.
    pub request_timeout: Duration,
    /// The data directory (the access audit chain and its key), when the daemon has one.
    pub data_dir: Option<std::path::PathBuf>,
    /// The access service, when a site has readers.
    pub access: Option<crate::access::service::AccessService>,
    /// The audit chain writer.
    pub audit: ApiAudit,
    /// Start-up flags for `/readyz`.
    pub readiness: Arc<Readiness>,
    /// `/metrics` text.
    pub render_metrics: RenderMetrics,
    /// The API's own counters.
    pub metrics: Option<ApiMetrics>,
    /// Signed-in sessions of the web pages (`web::session`).
    pub sessions: crate::web::session::Sessions,
}

impl std::fmt::Debug for ApiContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiContext")
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

/// Shared API state.
pub type ApiState = Arc<ApiContext>;

/// What [`ApiContext::new`] needs from the daemon.
pub struct ApiParts {
    /// Configuration.
    pub config: Arc<Config>,
    /// Live state.
    pub live: LiveState,
    /// Health.
    pub health: HealthRegistry,
    /// Alarm task handle.
    pub alarms: AlarmHandle,
    /// Store.
    pub store: Store,
    /// Outbox.
    pub outbox: Outbox,
    /// Tokens (loaded by [`load_tokens`]).
    pub tokens: TokenStore,
    /// Appends audit records.
    pub append_audit: audit::AppendRecords,
    /// Start-up flags.
    pub readiness: Arc<Readiness>,
    /// `/metrics`.
    pub render_metrics: RenderMetrics,
    /// API counters.
    pub metrics: Option<ApiMetrics>,
    /// Rate-limit settings and the request deadline.
    pub limits: LimitSettings,
    /// The data directory (for `/api/v1/audit/status`).
    pub data_dir: Option<std::path::PathBuf>,
    /// The access service (visits, batches, reviews, occupancy), when a site has readers.
    pub access: Option<crate::access::service::AccessService>,
}

impl ApiContext {
    /// Builds the context and starts the audit writer (needs a tokio runtime).
    pub fn new(parts: ApiParts) -> ApiState {
        let metrics_access = parts
            .config
            .auth
            .as_ref()
            .map(|a| a.metrics_access)
            .unwrap_or_default();
        Arc::new(ApiContext {
            config: parts.config,
            live: parts.live,
            health: parts.health,
            alarms: parts.alarms,
            store: parts.store,
            outbox: parts.outbox,
            tokens: parts.tokens,
            metrics_access,
            limiter: FailureLimiter::new(parts.limits),
            request_timeout: parts.limits.request_timeout,
            data_dir: parts.data_dir,
            access: parts.access,
            audit: ApiAudit::start(parts.append_audit, AUDIT_QUEUE),
            readiness: parts.readiness,
            render_metrics: parts.render_metrics,
            metrics: parts.metrics,
            sessions: crate::web::session::Sessions::default(),
        })
    }
}

/// Why the tokens could not be loaded (the message names the reference, never a secret).
#[derive(Debug, thiserror::Error)]
#[error("API tokens ({reference}): {problem}")]
pub struct LoadTokensError {
    /// `file PATH` or `environment variable NAME`.
    pub reference: String,
    /// What went wrong.
    pub problem: String,
}

/// Loads the tokens of `[auth]`; no `[auth]` gives no tokens (every token route answers
/// 401).
pub fn load_tokens(config: &Config) -> Result<TokenStore, LoadTokensError> {
    use crate::config::model::SecretRef;
    let Some(auth) = &config.auth else {
        return Ok(TokenStore::empty());
    };
    let (reference, text) = match &auth.tokens {
        SecretRef::File(path) => (
            format!("file {}", path.display()),
            std::fs::read_to_string(path).map_err(|e| e.kind().to_string()),
        ),
        SecretRef::Env(var) => (
            format!("environment variable {var}"),
            std::env::var(var).map_err(|_| "not set".to_owned()),
        ),
    };
    let text = text.map_err(|problem| LoadTokensError {
        reference: reference.clone(),
        problem,
    })?;
    TokenStore::parse(&text).map_err(|e| LoadTokensError {
        reference,
        problem: e.to_string(),
    })
}

/// The API routes with their OpenAPI document, before the guard and the state.
pub fn api_router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(system::ApiDoc::openapi())
        .routes(routes!(system::healthz))
        .routes(routes!(system::readyz))
        .routes(routes!(system::metrics))
        .routes(routes!(system::openapi_json))
        .routes(routes!(facility::sites))
        .routes(routes!(facility::site))
        .routes(routes!(facility::rooms))
        .routes(routes!(facility::racks))
        .routes(routes!(facility::devices))
        .routes(routes!(facility::device))
        .routes(routes!(facility::points))
        .routes(routes!(facility::power))
        .routes(routes!(facility::cooling))
        .routes(routes!(alarms::list))
        .routes(routes!(alarms::acknowledge))
        .routes(routes!(alarms::shelve))
        .routes(routes!(alarms::unshelve))
        .routes(routes!(alarms::out_of_service))
        .routes(routes!(alarms::return_to_service))
        .routes(routes!(alarms::windows, alarms::add_window))
        .routes(routes!(alarms::end_window))
        .routes(routes!(incidents::list))
        .routes(routes!(incidents::detail))
        .routes(routes!(incidents::parked))
        .routes(routes!(incidents::retry))
        .routes(routes!(access::events, visits::batch))
        .routes(routes!(access::events_csv))
        .routes(routes!(access::findings))
        .routes(routes!(access::findings_csv))
        .routes(routes!(access::audit_status))
        .routes(routes!(visits::list, visits::create))
        .routes(routes!(visits::detail, visits::update))
        .routes(routes!(visits::cancel))
        .routes(routes!(visits::review))
        .routes(routes!(visits::occupancy))
}

/// The generated OpenAPI document.
pub fn openapi() -> OpenApi {
    api_router().split_for_parts().1
}

/// The daemon's whole HTTP router: the API, `/healthz`, `/readyz`, `/metrics`, the
/// OpenAPI document and `extra` (the ZKTeco routes), behind the guard and the deadline.
pub fn router(state: ApiState, extra: Router) -> Router {
    let (api, doc) = api_router().split_for_parts();
    let doc = Arc::new(doc);
    let api: Router = api
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::Extension(doc))
        .with_state(state.clone());
    api.merge(extra)
        .merge(crate::web::router(state.clone()))
        .route_layer(middleware::from_fn_with_state(state.clone(), guard))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state, outer))
}

/// The route paths a router serves. axum has no route listing; its `Debug` output names
/// every path (`RouteId(n): "/path"`), which is what this reads. Used to check that the
/// daemon serves no route the access matrix does not list (`tests/api_matrix.rs`).
pub fn served_paths(router: &Router) -> Vec<String> {
    let text = format!("{router:?}");
    // The fallback router (`/` and a catch-all) serves only the 404 answer.
    let text = text.split("fallback_router:").next().unwrap_or_default();
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("RouteId(") {
        rest = &rest[i + "RouteId(".len()..];
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 || !rest[digits..].starts_with("): \"") {
            continue;
        }
        let close = digits;
        let after = &rest[close + 4..];
        if let Some(end) = after.find('"') {
            let path = after[..end].to_owned();
            if !out.contains(&path) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

/// The client's address, when the server was started with connect info.
pub(crate) fn client_ip(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// The body limit of a route (`route` as the matrix writes it): the readers' `/iclock`
/// limit, the event-batch limit for `POST /api/v1/access/events`, else [`MAX_BODY_BYTES`].
pub fn body_limit(method: &str, route: &str) -> usize {
    if route.starts_with("/iclock/") {
        crate::access::http::BODY_LIMIT
    } else if method == "POST" && route == "/api/v1/access/events" {
        visits::BATCH_BODY_BYTES
    } else {
        MAX_BODY_BYTES
    }
}

/// Deadline, request counter and error shape around everything.
async fn outer(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    // A declared body over the limit is refused before anything reads it, on every route
    // (the extractors enforce the same limit on bodies without a length).
    let limit = body_limit(&method, route.as_deref().unwrap_or_default());
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let timeout = state.request_timeout;
    let response = if declared.is_some_and(|n| n > limit as u64) {
        let mut refused = if limit != crate::access::http::BODY_LIMIT {
            error::too_large_for(limit).into_response()
        } else {
            // Readers get plain text, as from their own routes.
            (StatusCode::PAYLOAD_TOO_LARGE, "body too large\n").into_response()
        };
        // The unread body makes the connection unusable: say so, so that no client
        // reuses it for its next request (which would meet a closed socket).
        refused.headers_mut().insert(
            header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
        refused
    } else {
        run_with_deadline(timeout, route.as_deref(), next, req).await
    };
    if let Some(m) = &state.metrics {
        // The label is the matrix route (bounded), never the path a client chose.
        let route = route
            .as_deref()
            .and_then(|r| matrix::lookup(&method, r).map(|row| row.path))
            .unwrap_or("unmatched");
        let method = match method.as_str() {
            "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "PATCH" | "OPTIONS" => method.as_str(),
            _ => "other",
        };
        m.requests
            .with_label_values(&[method, route, response.status().as_str()])
            .inc();
    }
    response
}

/// Runs the rest of the stack within `timeout` (503 `timeout` past it).
async fn run_with_deadline(
    timeout: Duration,
    route: Option<&str>,
    next: Next,
    req: Request,
) -> Response {
    match tokio::time::timeout(timeout, next.run(req)).await {
        // The readers' routes answer plain text (a JSON reply makes devices re-send).
        Ok(response) if route.is_some_and(|r| r.starts_with("/iclock/")) => response,
        Ok(response) => error::normalise(response),
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "the request did not complete within {} ms",
                timeout.as_millis()
            ),
        )
        .into_response(),
    }
}

/// The object a write acted on, for its audit record (set by write handlers on their
/// answer, success or error).
#[derive(Debug, Clone)]
pub struct AuditObject(pub String);

/// A write's answer with the object it acted on, for its audit record.
pub(crate) fn audited<T: IntoResponse>(object: String, result: ApiResult<T>) -> Response {
    let mut response = match result {
        Ok(v) => v.into_response(),
        Err(e) => e.into_response(),
    };
    response.extensions_mut().insert(AuditObject(object));
    response
}

/// Enforces the matrix; see the module documentation.
async fn guard(
    State(state): State<ApiState>,
    matched: MatchedPath,
    req: Request,
    next: Next,
) -> Response {
    let method = req.method().as_str().to_owned();
    let route = matched.as_str().to_owned();
    let Some(rule) = matrix::lookup(&method, &route) else {
        if matrix::lists_path(&route) {
            // A listed route with another method: axum answers 405 with `Allow`.
            return next.run(req).await;
        }
        tracing::error!(
            route = %route,
            method = %method,
            "A route missing from the access matrix was called; refused."
        );
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this route is not in the access matrix",
        )
        .into_response();
    };
    let ip = client_ip(&req);
    let path = req.uri().path().to_owned();
    let mut web_session = None;
    let principal = match rule.guard {
        Guard::Public | Guard::DeviceSerial => None,
        // Web pages: a signed-in session (cookie), not a bearer token.
        Guard::Session(_) => {
            match crate::web::session::admit(&state, rule, &path, ip, req.headers()) {
                Ok(session) => {
                    let principal = session.principal.clone();
                    web_session = Some(session);
                    Some(principal)
                }
                Err(response) => return response,
            }
        }
        Guard::Metrics(_) if state.metrics_access == MetricsAccess::Loopback => {
            if ip.is_some_and(|ip| ip.is_loopback()) {
                None
            } else {
                let error = ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "/metrics is served to loopback clients only ([auth] metrics_access)",
                );
                deny(&state, rule, &path, ip, None, None, &error, false);
                return error.into_response();
            }
        }
        Guard::Roles(_) | Guard::Metrics(_) => {
            match authorize(&state, rule, &path, ip, req.headers()) {
                Ok(principal) => Some(principal),
                Err(error) => return error.into_response(),
            }
        }
    };
    let mut req = req;
    if let Some(p) = &principal {
        req.extensions_mut().insert(p.clone());
    }
    if let Some(s) = web_session {
        req.extensions_mut().insert(s);
    }
    if rule.audit != Audit::Always {
        return next.run(req).await;
    }
    // An audited call runs to its end in its own task: a client that goes away, or the
    // deadline, cannot leave a write done but unrecorded.
    let task = tokio::spawn(async move {
        let response = next.run(req).await;
        let object = response
            .extensions()
            .get::<AuditObject>()
            .map_or(path, |o| o.0.clone());
        let entry = AuditEntry {
            actor: principal
                .as_ref()
                .map_or_else(|| "anonymous".to_owned(), |p| p.id.clone()),
            role: principal.as_ref().map(|p| p.role.as_str().to_owned()),
            action: format!("{} {}", rule.method, rule.path),
            object,
            result: result_of(&response),
            status: response.status().as_u16(),
            source: source_text(ip),
            token_fingerprint: None,
            at: Utc::now(),
        };
        if !state.audit.record(entry).await
            && let Some(m) = &state.metrics
        {
            m.audit_failures.inc();
        }
        response
    });
    match task.await {
        Ok(response) => response,
        Err(error) => {
            tracing::error!(%error, route = %rule.path, "An audited API call failed.");
            ApiError::internal().into_response()
        }
    }
}

/// `ok` for a success, else the error code of the answer (`conflict`, `bad_request`...).
fn result_of(response: &Response) -> String {
    // A page's form post answers a success with a redirect (303) to the page.
    if response.status().is_success() || response.status().is_redirection() {
        return "ok".to_owned();
    }
    response
        .extensions()
        .get::<ErrorCode>()
        .map_or_else(|| response.status().as_str().to_owned(), |c| c.0.to_owned())
}

/// Checks rate limit, token and role for a token route.
pub(crate) fn authorize(
    state: &ApiState,
    rule: &'static RouteRule,
    path: &str,
    ip: Option<IpAddr>,
    headers: &HeaderMap,
) -> Result<Principal, ApiError> {
    let now = Instant::now();
    let presented = bearer(headers);
    let presented_key = presented.map(|t| LimitKey::UnknownToken(token_hash(t)));
    let locked = ip
        .and_then(|ip| state.limiter.locked(&LimitKey::Source(ip), now))
        .into_iter()
        .chain(
            presented_key
                .as_ref()
                .and_then(|k| state.limiter.locked(k, now)),
        )
        .max();
    let principal = presented.and_then(|t| state.tokens.authenticate(t));
    let locked = locked.or_else(|| {
        principal
            .as_ref()
            .and_then(|p| state.limiter.locked(&LimitKey::Token(p.id.clone()), now))
    });
    if let Some(wait) = locked {
        let error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many failed authentications from this client or with this token; retry later",
        )
        .retry_after(retry_secs(wait));
        deny(
            state,
            rule,
            path,
            ip,
            principal.as_ref(),
            presented,
            &error,
            false,
        );
        return Err(error);
    }
    let error = match (&principal, presented) {
        (Some(p), _) if rule.allows(p.role) => return Ok(p.clone()),
        (Some(p), _) => ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("role {} may not {} {}", p.role, rule.method, rule.path),
        ),
        (None, None) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "this route needs a bearer token (Authorization: Bearer <token>)",
        ),
        (None, Some(_)) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "the bearer token is not valid",
        ),
    };
    deny(
        state,
        rule,
        path,
        ip,
        principal.as_ref(),
        presented,
        &error,
        true,
    );
    Err(error)
}

/// Counts a refusal (towards the rate limit when `counts`), logs it without secrets and
/// queues its audit record.
#[allow(clippy::too_many_arguments)]
pub(crate) fn deny(
    state: &ApiState,
    rule: &RouteRule,
    path: &str,
    ip: Option<IpAddr>,
    principal: Option<&Principal>,
    presented: Option<&str>,
    error: &ApiError,
    counts: bool,
) {
    let now = Instant::now();
    if counts {
        let mut locked = Vec::new();
        if let Some(ip) = ip {
            locked.extend(state.limiter.fail(LimitKey::Source(ip), now));
        }
        match principal {
            Some(p) => locked.extend(state.limiter.fail(LimitKey::Token(p.id.clone()), now)),
            None => {
                if let Some(t) = presented {
                    locked.extend(
                        state
                            .limiter
                            .fail(LimitKey::UnknownToken(token_hash(t)), now),
                    );
                }
            }
        }
        if !locked.is_empty() {
            tracing::warn!(
                source = %source_text(ip),
                token = principal.map_or("-", |p| p.id.as_str()),
                "Too many failed authentications; client locked out for a while."
            );
        }
    }
    // A presented token that is not ours is only ever shown as a fingerprint.
    let fingerprint = match (principal, presented) {
        (None, Some(t)) => Some(fingerprint(t)),
        _ => None,
    };
    tracing::info!(
        source = %source_text(ip),
        route = %rule.path,
        method = rule.method,
        code = error.code,
        token = principal.map_or("-", |p| p.id.as_str()),
        "API request refused."
    );
    if let Some(m) = &state.metrics {
        m.auth_failures.with_label_values(&[error.code]).inc();
    }
    state.audit.record_denial(AuditEntry {
        actor: principal.map_or_else(|| "anonymous".to_owned(), |p| p.id.clone()),
        role: principal.map(|p| p.role.as_str().to_owned()),
        action: format!("{} {}", rule.method, rule.path),
        object: path.chars().take(200).collect(),
        result: error.code.to_owned(),
        status: error.status.as_u16(),
        source: source_text(ip),
        token_fingerprint: fingerprint,
        at: Utc::now(),
    });
}

/// The token of `Authorization: Bearer <token>`; `None` when absent or another scheme.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}
