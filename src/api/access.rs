//! Access routes over what the access service already stores: reader events (query and CSV
//! export), findings with filters, and the audit chain's verification status. Visits,
//! event batches, finding reviews and occupancy go through the access service (`visits`).

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::Utc;

use super::dto::{AccessEventDto, AccessEventQuery, AuditStatusDto, FindingDto, FindingQuery};
use super::error::{ApiError, ApiQuery, ApiResult, ErrorBody};
use super::facility::clip;
use super::{ApiState, audited};
use crate::access::audit::{AuditKey, Problem, verify_segments};
use crate::access::ingest::{AUDIT_FILE, key_path};
use crate::access::reconcile::Rule;
use crate::store::access::{AccessStore, EventQuery};

/// Rows of a JSON event query at most.
const MAX_EVENTS: u32 = 10_000;
/// Rows of a CSV export at most.
const MAX_CSV_ROWS: u32 = 100_000;

/// Runs a blocking call off the async workers; a failure is logged and answered 500
/// without details.
async fn blocking<T: Send + 'static, E: std::fmt::Display + Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> ApiResult<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(error)) => {
            tracing::error!(%error, "{what} for the API failed.");
            Err(ApiError::internal())
        }
        Err(error) => {
            tracing::error!(%error, "{what} task for the API failed.");
            Err(ApiError::internal())
        }
    }
}

fn check_site(state: &ApiState, site: Option<&String>) -> ApiResult<()> {
    if let Some(site) = site
        && !state.config.sites.iter().any(|s| &s.id == site)
    {
        return Err(ApiError::bad_request(format!(
            "site: no site {:?}",
            clip(site)
        )));
    }
    Ok(())
}

fn check_limit(limit: Option<u32>, default: u32, max: u32) -> ApiResult<u32> {
    let limit = limit.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit: found {limit}; expected 1 to {max}"
        )));
    }
    Ok(limit)
}

fn check_period(
    from: Option<chrono::DateTime<Utc>>,
    until: Option<chrono::DateTime<Utc>>,
) -> ApiResult<()> {
    if let (Some(f), Some(u)) = (from, until)
        && u <= f
    {
        return Err(ApiError::bad_request(
            "until: must be after from".to_owned(),
        ));
    }
    Ok(())
}

/// The validated store query of `q` with at most `limit` rows.
fn event_query(
    state: &ApiState,
    q: &AccessEventQuery,
    default: u32,
    max: u32,
) -> ApiResult<EventQuery> {
    check_site(state, q.site.as_ref())?;
    check_period(q.from, q.until)?;
    let limit = check_limit(q.limit, default, max)?;
    Ok(EventQuery {
        site: q.site.clone(),
        reader: q.reader.clone(),
        credential: q.credential.clone(),
        from: q.from,
        until: q.until,
        limit: Some(limit as usize),
        ..EventQuery::default()
    })
}

/// Reader events, oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/access/events",
    tag = "access",
    security(("bearer" = [])),
    params(AccessEventQuery),
    responses(
        (status = 200, description = "the events", body = [AccessEventDto]),
        (status = 400, description = "a bad filter", body = ErrorBody),
        (status = 401, description = "no or an unknown token", body = ErrorBody),
        (status = 403, description = "the role may not", body = ErrorBody)
    )
)]
pub async fn events(
    State(state): State<ApiState>,
    ApiQuery(q): ApiQuery<AccessEventQuery>,
) -> ApiResult<Json<Vec<AccessEventDto>>> {
    let events = query_events(&state, &q, 1000, MAX_EVENTS).await?;
    Ok(Json(events.iter().map(AccessEventDto::from).collect()))
}

/// The events of `q`: straight from the store, or through the access service when the
/// query names a room, a person or a ticket (the service knows readers, people and
/// visits).
async fn query_events(
    state: &ApiState,
    q: &AccessEventQuery,
    default: u32,
    max: u32,
) -> ApiResult<Vec<crate::access::event::AccessEvent>> {
    let query = event_query(state, q, default, max)?;
    if q.room.is_none() && q.person.is_none() && q.ticket.is_none() {
        let store = AccessStore::new(state.store.clone());
        return blocking("Access event query", move || store.events(&query)).await;
    }
    let access = super::visits::service(state)?;
    let filter = crate::access::service::EventFilter {
        site: query.site,
        room: q.room.clone(),
        person: q.person.clone(),
        ticket: q.ticket.clone(),
        reader: query.reader,
        credential: query.credential,
        from: query.from,
        until: query.until,
        limit: query.limit,
    };
    super::visits::call(move || access.events(&filter)).await
}

/// Reader events as CSV (the columns of `dcguard access import`), oldest first. Every
/// export is audited with its filters and row count.
#[utoipa::path(
    get,
    path = "/api/v1/access/events.csv",
    tag = "access",
    security(("bearer" = [])),
    params(AccessEventQuery),
    responses(
        (status = 200, description = "the events as CSV with a header row", body = String, content_type = "text/csv"),
        (status = 400, description = "a bad filter", body = ErrorBody),
        (status = 401, description = "no or an unknown token", body = ErrorBody),
        (status = 403, description = "the role may not", body = ErrorBody)
    )
)]
pub async fn events_csv(
    State(state): State<ApiState>,
    ApiQuery(q): ApiQuery<AccessEventQuery>,
) -> Response {
    let object = format!(
        "access events site={} room={} person={} ticket={} reader={} credential={} from={} until={}",
        any(&q.site),
        any(&q.room),
        any(&q.person),
        any(&q.ticket),
        any(&q.reader),
        any(&q.credential),
        any_time(q.from),
        any_time(q.until),
    );
    let result = async {
        let events = query_events(&state, &q, MAX_CSV_ROWS, MAX_CSV_ROWS).await?;
        blocking("Access event export", move || {
            let mut out = Vec::new();
            crate::access::import::write_csv(&mut out, &events).map_err(|e| e.to_string())?;
            Ok::<_, String>((events.len(), out))
        })
        .await
    }
    .await;
    csv_export(object, "access-events.csv", result)
}

/// Findings, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/findings",
    tag = "access",
    security(("bearer" = [])),
    params(FindingQuery),
    responses(
        (status = 200, description = "the findings", body = [FindingDto]),
        (status = 400, description = "a bad filter", body = ErrorBody),
        (status = 401, description = "no or an unknown token", body = ErrorBody),
        (status = 403, description = "the role may not", body = ErrorBody)
    )
)]
pub async fn findings(
    State(state): State<ApiState>,
    ApiQuery(q): ApiQuery<FindingQuery>,
) -> ApiResult<Json<Vec<FindingDto>>> {
    let found = query_findings(&state, &q, 1000, MAX_EVENTS).await?;
    Ok(Json(found.iter().map(FindingDto::from).collect()))
}

/// The findings of `q`, newest first, at most `q.limit` (`default` when absent, `max` at
/// most).
async fn query_findings(
    state: &ApiState,
    q: &FindingQuery,
    default: u32,
    max: u32,
) -> ApiResult<Vec<crate::store::access::StoredFinding>> {
    check_site(state, q.site.as_ref())?;
    check_period(q.from, q.until)?;
    let limit = check_limit(q.limit, default, max)?;
    let rule = match &q.rule {
        None => None,
        Some(name) => Some(
            Rule::ALL
                .into_iter()
                .find(|r| r.as_str() == name)
                .ok_or_else(|| {
                    let names: Vec<&str> = Rule::ALL.iter().map(|r| r.as_str()).collect();
                    ApiError::bad_request(format!(
                        "rule: found {:?}; expected one of {}",
                        clip(name),
                        names.join(", ")
                    ))
                })?,
        ),
    };
    let person = q.person.as_ref().map(|p| p.to_lowercase());
    let store = AccessStore::new(state.store.clone());
    let query = crate::store::access::FindingQuery {
        site: q.site.clone(),
        rule,
        ticket: q.ticket.clone(),
        room: q.room.clone(),
        from: q.from,
        until: q.until,
        reviewed: q.reviewed,
        ..Default::default()
    };
    let all = blocking("Findings query", move || store.findings(&query)).await?;
    let out = all
        .into_iter()
        .rev()
        .filter(|stored| {
            person.as_ref().is_none_or(|p| {
                let f = &stored.finding;
                f.person
                    .as_ref()
                    .is_some_and(|name| name.to_lowercase().contains(p))
                    || f.credential
                        .as_deref()
                        .is_some_and(|c| c.to_lowercase() == *p)
            })
        })
        .take(limit as usize)
        .collect();
    Ok(out)
}

/// Findings as CSV (id, site, rule, severity, times, person, credential, ticket, room,
/// reader, summary, evidence, latest review), newest first, spreadsheet-safe cells; the
/// same filters as `GET /api/v1/findings`. Every export is audited with its filters and
/// row count.
#[utoipa::path(
    get,
    path = "/api/v1/findings.csv",
    tag = "access",
    security(("bearer" = [])),
    params(FindingQuery),
    responses(
        (status = 200, description = "the findings as CSV with a header row", body = String, content_type = "text/csv"),
        (status = 400, description = "a bad filter", body = ErrorBody),
        (status = 401, description = "no or an unknown token", body = ErrorBody),
        (status = 403, description = "the role may not", body = ErrorBody)
    )
)]
pub async fn findings_csv(
    State(state): State<ApiState>,
    ApiQuery(q): ApiQuery<FindingQuery>,
) -> Response {
    let object = format!(
        "findings site={} rule={} room={} person={} ticket={} reviewed={} from={} until={}",
        any(&q.site),
        any(&q.rule),
        any(&q.room),
        any(&q.person),
        any(&q.ticket),
        q.reviewed.map_or_else(|| "*".to_owned(), |r| r.to_string()),
        any_time(q.from),
        any_time(q.until),
    );
    let result = async {
        let found = query_findings(&state, &q, MAX_CSV_ROWS, MAX_CSV_ROWS).await?;
        blocking("Findings export", move || {
            let mut out = Vec::new();
            crate::access::import::write_findings_csv(&mut out, &found)
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((found.len(), out))
        })
        .await
    }
    .await;
    csv_export(object, "findings.csv", result)
}

/// A filter value for an export's audit record: clipped, `*` when absent.
fn any(value: &Option<String>) -> String {
    value.as_deref().map_or_else(|| "*".to_owned(), clip)
}

/// A time filter for an export's audit record, `*` when absent.
fn any_time(value: Option<chrono::DateTime<chrono::Utc>>) -> String {
    value.map_or_else(|| "*".to_owned(), |t| t.to_rfc3339())
}

/// The answer of a CSV export (`rows` and the CSV bytes) as an attachment named
/// `filename`, audited with `object` and the row count.
fn csv_export(mut object: String, filename: &str, result: ApiResult<(usize, Vec<u8>)>) -> Response {
    let result = result.map(|(rows, csv)| {
        object.push_str(&format!(" rows={rows}"));
        (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{filename}\""),
                ),
            ],
            csv,
        )
            .into_response()
    });
    audited(object, result)
}

/// The access audit chain, verified now from its first record: every sealed monthly
/// segment and the active one, links, hashes and checkpoint signatures (as
/// `dcguard audit verify`).
#[utoipa::path(
    get,
    path = "/api/v1/audit/status",
    tag = "access",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the chain's state; `intact` false names the first bad record", body = AuditStatusDto),
        (status = 401, description = "no or an unknown token", body = ErrorBody),
        (status = 403, description = "the role may not", body = ErrorBody),
        (status = 503, description = "the daemon keeps no audit chain (no data directory)", body = ErrorBody)
    )
)]
pub async fn audit_status(State(state): State<ApiState>) -> ApiResult<Json<AuditStatusDto>> {
    let Some(data_dir) = state.data_dir.clone() else {
        return Err(ApiError::unavailable(
            "this daemon keeps no audit chain (no data directory)",
        ));
    };
    // A record being appended while we read shows as a truncated last line: read again.
    let mut attempt = 0;
    let verified = loop {
        let dir = data_dir.clone();
        let verified = blocking("Audit chain verification", move || {
            let key = AuditKey::from_file(&key_path(&dir, None)).map_err(|e| e.to_string())?;
            Ok::<_, String>(verify_segments(&dir.join(AUDIT_FILE), &key))
        })
        .await?;
        attempt += 1;
        match &verified {
            Err(e)
                if attempt < 3
                    && matches!(e.error.problem(), Some(Problem::TruncatedLastLine { .. })) =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            _ => break verified,
        }
    };
    let status = match verified {
        Ok(report) => AuditStatusDto {
            intact: true,
            problem: None,
            segments: report.segments.len(),
            records: report.records,
            checkpoints: report.checkpoints,
            head_seq: report.head.as_ref().map(|h| h.seq),
            head_hash: report.head.as_ref().map(|h| h.hash_hex()),
            signed_through: report.last_checkpoint_seq,
            unsigned_tail: report.unsigned_tail,
            verified_at: Utc::now(),
        },
        Err(error) => {
            tracing::error!(%error, "The access audit chain does not verify.");
            AuditStatusDto {
                intact: false,
                // The segment's file name, never its path (answers reveal no paths).
                problem: Some(format!(
                    "{} (segment {})",
                    error.error,
                    error
                        .segment
                        .file_name()
                        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
                )),
                segments: 0,
                records: 0,
                checkpoints: 0,
                head_seq: None,
                head_hash: None,
                signed_through: None,
                unsigned_tail: 0,
                verified_at: Utc::now(),
            }
        }
    };
    Ok(Json(status))
}
