//! Access routes over the access service (`access::service`): visit tickets from the service
//! desk (create, update, cancel, list, detail with the visit report), JSON event batches
//! from other reader systems, finding reviews and occupancy now. Every write is on disk and
//! in the audit chain before it is answered (the service's contract); the guard audits the
//! request as well.

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::auth::Principal;
use super::dto::{
    BatchReceiptDto, OccupancyQuery, OccupantDto, ReportDeliveryDto, ReviewDto, ReviewRequest,
    ReviewResult, VisitDetailDto, VisitDto, VisitQuery, VisitRequest,
};
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorBody};
use super::facility::clip;
use super::{ApiState, audited};
use crate::access::service::{AccessService, ServiceError, VisitFilter, VisitOutcome};
use crate::access::ticket::TicketState;

/// Largest JSON event batch body (10 000 events of about 200 bytes, with room to spare).
pub const BATCH_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The access service, or 503 when no site has readers (the daemon keeps no access log).
pub(super) fn service(state: &ApiState) -> ApiResult<AccessService> {
    state.access.clone().ok_or_else(|| {
        ApiError::unavailable("access control is not configured: no site has [[access.readers]]")
    })
}

/// The answer of a failed service call: its status and message; a storage failure is
/// logged and answered without details.
fn service_error(error: ServiceError) -> ApiError {
    match error.status() {
        400 => ApiError::bad_request(error.to_string()),
        404 => ApiError::not_found(error.to_string()),
        409 => ApiError::conflict(error.to_string()),
        _ => {
            tracing::error!(%error, "Access service call for the API failed.");
            ApiError::unavailable("the access store is unavailable; nothing was changed, retry")
                .retry_after(5)
        }
    }
}

/// Runs a blocking service call off the async workers.
pub(super) async fn call<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ServiceError> + Send + 'static,
) -> ApiResult<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(service_error),
        Err(error) => {
            tracing::error!(%error, "Access service task for the API failed.");
            Err(ApiError::internal())
        }
    }
}

/// 201 with the ticket when the call changed it, 200 when it was a repeat.
fn outcome(result: ApiResult<VisitOutcome>) -> ApiResult<Response> {
    result.map(|o| {
        let status = if o.changed {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        (status, Json(VisitDto::from(&o.ticket))).into_response()
    })
}

/// Creates an approved visit ticket (the service desk). Validated against its site; every
/// problem is listed. The same ticket sent again answers 200 unchanged.
#[utoipa::path(
    post,
    path = "/api/v1/visits",
    tag = "access",
    security(("bearer" = [])),
    request_body = VisitRequest,
    responses(
        (status = 201, description = "created (on disk, live for reconciliation)", body = VisitDto),
        (status = 200, description = "the same ticket was created before", body = VisitDto),
        (status = 400, description = "an invalid ticket; every problem listed", body = ErrorBody),
        (status = 401, description = "no or an unknown token", body = ErrorBody),
        (status = 403, description = "the role may not", body = ErrorBody),
        (status = 409, description = "the id exists with other content (use PUT)", body = ErrorBody),
        (status = 503, description = "access control not configured, or the store failed", body = ErrorBody)
    )
)]
pub async fn create(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    ApiJson(body): ApiJson<VisitRequest>,
) -> Response {
    let object = format!("visit {}", clip(&body.id));
    let result = async {
        let access = service(&state)?;
        let now = access.now();
        call(move || access.create_visit(body.into(), &who.id, now)).await
    }
    .await;
    audited(object, outcome(result))
}

/// Replaces an approved ticket's content (a new revision; the history is kept).
#[utoipa::path(
    put,
    path = "/api/v1/visits/{ticket}",
    tag = "access",
    security(("bearer" = [])),
    params(("ticket" = String, Path, description = "ticket id")),
    request_body = VisitRequest,
    responses(
        (status = 201, description = "updated (a new revision on disk)", body = VisitDto),
        (status = 200, description = "the same content again: unchanged", body = VisitDto),
        (status = 400, description = "an invalid ticket, or a body id other than the path's", body = ErrorBody),
        (status = 401, description = "no or an unknown token", body = ErrorBody),
        (status = 403, description = "the role may not", body = ErrorBody),
        (status = 404, description = "no such ticket", body = ErrorBody),
        (status = 409, description = "the ticket is cancelled or closed", body = ErrorBody),
        (status = 503, description = "access control not configured, or the store failed", body = ErrorBody)
    )
)]
pub async fn update(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    ApiPath(ticket): ApiPath<String>,
    ApiJson(body): ApiJson<VisitRequest>,
) -> Response {
    let object = format!("visit {}", clip(&ticket));
    let result = async {
        if body.id != ticket {
            return Err(ApiError::bad_request(format!(
                "id: found {:?}; expected the ticket of the path, {:?}",
                clip(&body.id),
                clip(&ticket)
            )));
        }
        let access = service(&state)?;
        let now = access.now();
        call(move || access.update_visit(body.into(), &who.id, now)).await
    }
    .await;
    audited(object, outcome(result))
}

/// Cancels an approved ticket; reconciliation treats its people as unticketed from now.
#[utoipa::path(
    post,
    path = "/api/v1/visits/{ticket}/cancel",
    tag = "access",
    security(("bearer" = [])),
    params(("ticket" = String, Path, description = "ticket id")),
    responses(
        (status = 201, description = "cancelled (on disk)", body = VisitDto),
        (status = 200, description = "already cancelled", body = VisitDto),
        (status = 401, description = "no or an unknown token", body = ErrorBody),
        (status = 403, description = "the role may not", body = ErrorBody),
        (status = 404, description = "no such ticket", body = ErrorBody),
        (status = 409, description = "the ticket is closed", body = ErrorBody),
        (status = 503, description = "access control not configured, or the store failed", body = ErrorBody)
    )
)]
pub async fn cancel(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    ApiPath(ticket): ApiPath<String>,
) -> Response {
    let object = format!("visit {}", clip(&ticket));
    let result = async {
        let access = service(&state)?;
        let now = access.now();
        call(move || access.cancel_visit(&ticket, &who.id, now)).await
    }
    .await;
    audited(object, outcome(result))
}

/// Visit tickets, by window start.
#[utoipa::path(
    get,
    path = "/api/v1/visits",
    tag = "access",
    security(("bearer" = [])),
    params(VisitQuery),
    responses(
        (status = 200, description = "the tickets", body = [VisitDto]),
        (status = 400, description = "a bad filter", body = ErrorBody),
        (status = 401, description = "no or an unknown token", body = ErrorBody),
        (status = 403, description = "the role may not", body = ErrorBody),
        (status = 503, description = "access control not configured", body = ErrorBody)
    )
)]
pub async fn list(
    State(state): State<ApiState>,
    ApiQuery(q): ApiQuery<VisitQuery>,
) -> ApiResult<Json<Vec<VisitDto>>> {
    let access = service(&state)?;
    let ticket_state = match q.state.as_deref() {
        None => None,
        Some("approved") => Some(TicketState::Approved),
        Some("cancelled") => Some(TicketState::Cancelled),
        Some("closed") => Some(TicketState::Closed),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "state: found {:?}; expected approved, cancelled or closed",
                clip(other)
            )));
        }
    };
    let filter = VisitFilter {
        site: q.site,
        state: ticket_state,
        from: q.from,
        until: q.until,
        person: q.person,
    };
    let visits = call(move || access.visits(&filter)).await?;
    Ok(Json(visits.iter().map(VisitDto::from).collect()))
}

/// One visit with its report as of now (who entered and left when, escort pairing,
/// findings) and the scheduled report's delivery.
#[utoipa::path(
    get,
    path = "/api/v1/visits/{ticket}",
    tag = "access",
    security(("bearer" = [])),
    params(("ticket" = String, Path, description = "ticket id")),
    responses(
        (status = 200, description = "the visit", body = VisitDetailDto),
        (status = 401, description = "no or an unknown token", body = ErrorBody),
        (status = 403, description = "the role may not", body = ErrorBody),
        (status = 404, description = "no such ticket", body = ErrorBody),
        (status = 503, description = "access control not configured, or the store failed", body = ErrorBody)
    )
)]
pub async fn detail(
    State(state): State<ApiState>,
    ApiPath(ticket): ApiPath<String>,
) -> ApiResult<Json<VisitDetailDto>> {
    let access = service(&state)?;
    let now = access.now();
    let (visit, report, stored) = call(move || {
        let visit = access.visit(&ticket)?;
        let report = access.visit_report(&ticket, now)?;
        let stored = access.stored_report(&ticket)?;
        Ok((visit, report, stored))
    })
    .await?;
    let report = serde_json::to_value(&report).map_err(|error| {
        tracing::error!(%error, "A visit report did not serialise.");
        ApiError::internal()
    })?;
    Ok(Json(VisitDetailDto {
        visit: VisitDto::from(&visit),
        report,
        delivery: stored.map(|s| ReportDeliveryDto {
            produced_at: s.produced_at,
            delivery: format!("{:?}", s.delivery).to_lowercase(),
            attempts: s.attempts,
            last_error: s.last_error,
            delivered_at: s.delivered_at,
        }),
    }))
}

/// A JSON batch of reader events from another reader system (`docs/integrations.md`):
/// validated whole (400 and nothing stored on any problem), stored and chained before the
/// answer, idempotent when re-sent.
#[utoipa::path(
    post,
    path = "/api/v1/access/events",
    tag = "access",
    security(("bearer" = [])),
    request_body(content = Object, description = "{\"site\"?: id, \"events\": [{reader, credential?, kind, reason?, op?, direction?, time}]}, at most 10 000 events", content_type = "application/json"),
    responses(
        (status = 200, description = "stored (on disk and in the audit chain)", body = BatchReceiptDto),
        (status = 400, description = "a malformed or invalid batch; every problem listed", body = ErrorBody),
        (status = 401, description = "no or an unknown token", body = ErrorBody),
        (status = 403, description = "the role may not", body = ErrorBody),
        (status = 413, description = "a body over 4 MiB", body = ErrorBody),
        (status = 503, description = "access control not configured, or the store failed", body = ErrorBody)
    )
)]
pub async fn batch(State(state): State<ApiState>, body: Body) -> Response {
    let result = async {
        let bytes = axum::body::to_bytes(body, BATCH_BODY_BYTES)
            .await
            .map_err(|_| super::error::too_large_for(BATCH_BODY_BYTES))?;
        let access = service(&state)?;
        let now = access.now();
        call(move || access.ingest_json_batch(&bytes, now)).await
    }
    .await;
    let object = match &result {
        Ok(r) => format!("access event batch received={} new={}", r.received, r.new),
        Err(_) => "access event batch".to_owned(),
    };
    audited(
        object,
        result.map(|r| {
            Json(BatchReceiptDto {
                received: r.received,
                new: r.new,
            })
        }),
    )
}

/// Marks a finding reviewed with a note; the reviewer is the caller's token. The finding
/// itself never changes.
#[utoipa::path(
    post,
    path = "/api/v1/findings/{id}/review",
    tag = "access",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "finding id")),
    request_body = ReviewRequest,
    responses(
        (status = 201, description = "reviewed (on disk and in the audit chain)", body = ReviewResult),
        (status = 200, description = "the same review was recorded before", body = ReviewResult),
        (status = 400, description = "an empty or too long note", body = ErrorBody),
        (status = 401, description = "no or an unknown token", body = ErrorBody),
        (status = 403, description = "the role may not", body = ErrorBody),
        (status = 404, description = "no such finding", body = ErrorBody),
        (status = 503, description = "access control not configured, or the store failed", body = ErrorBody)
    )
)]
pub async fn review(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<ReviewRequest>,
) -> Response {
    let result = async {
        let access = service(&state)?;
        let now = access.now();
        let (review, created) =
            call(move || access.review_finding(id, &who.id, &body.note, now)).await?;
        let status = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok::<_, ApiError>(
            (
                status,
                Json(ReviewResult {
                    review: ReviewDto::from(&review),
                    created,
                }),
            )
                .into_response(),
        )
    }
    .await;
    audited(format!("finding {id}"), result)
}

/// Who is inside each site now, by site then current room.
#[utoipa::path(
    get,
    path = "/api/v1/occupancy",
    tag = "access",
    security(("bearer" = [])),
    params(OccupancyQuery),
    responses(
        (status = 200, description = "the people inside", body = [OccupantDto]),
        (status = 400, description = "an unknown site", body = ErrorBody),
        (status = 401, description = "no or an unknown token", body = ErrorBody),
        (status = 403, description = "the role may not", body = ErrorBody),
        (status = 503, description = "access control not configured", body = ErrorBody)
    )
)]
pub async fn occupancy(
    State(state): State<ApiState>,
    ApiQuery(q): ApiQuery<OccupancyQuery>,
) -> ApiResult<Json<Vec<OccupantDto>>> {
    let access = service(&state)?;
    let sites: Vec<String> = match q.site {
        Some(site) => vec![site],
        None => state.config.sites.iter().map(|s| s.id.clone()).collect(),
    };
    let mut out = Vec::new();
    for site in sites {
        let people = access.occupancy(&site).map_err(service_error)?;
        out.extend(people.iter().map(|o| OccupantDto::of(&site, o)));
    }
    out.sort_by(|a, b| (&a.site, &a.room, &a.person).cmp(&(&b.site, &b.room, &b.person)));
    Ok(Json(out))
}
