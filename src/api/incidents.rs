//! Incident routes: the list and one incident with its transitions and their delivery to
//! every receiver, from the store's incident log and outbox; parked deliveries and their
//! retry.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use chrono::Utc;

use super::dto::*;
use super::error::{ApiError, ApiPath, ApiQuery, ApiResult, ErrorBody};
use super::facility::clip;
use super::{ApiState, audited};
use crate::config::model::Priority;
use crate::incidents::incident::IncidentTransition;
use crate::store::outbox::ItemState;

/// Incidents read from the log before filtering.
const SCAN: usize = 5000;

/// Runs a blocking store call off the async workers; a failure is logged and answered
/// 500 without details.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> ApiResult<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(error)) => {
            tracing::error!(%error, "Store read for the API failed.");
            Err(ApiError::internal())
        }
        Err(error) => {
            tracing::error!(%error, "Store task for the API failed.");
            Err(ApiError::internal())
        }
    }
}

fn parse(body: &str) -> Option<IncidentTransition> {
    match serde_json::from_str(body) {
        Ok(t) => Some(t),
        Err(error) => {
            tracing::warn!(%error, "A stored incident transition cannot be read; skipped.");
            None
        }
    }
}

/// Incidents, newest change first.
#[utoipa::path(
    get,
    path = "/api/v1/incidents",
    tag = "incidents",
    security(("bearer" = [])),
    params(IncidentQuery),
    responses(
        (status = 200, description = "the incidents", body = [IncidentDto]),
        (status = 400, description = "a bad filter", body = ErrorBody),
        (status = 401, description = "no or an unknown token", body = ErrorBody),
        (status = 403, description = "the role may not", body = ErrorBody)
    )
)]
pub async fn list(
    State(state): State<ApiState>,
    ApiQuery(q): ApiQuery<IncidentQuery>,
) -> ApiResult<Json<Vec<IncidentDto>>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit: found {limit}; expected 1 to 1000"
        )));
    }
    if let Some(s) = &q.state
        && ![
            "open",
            "acknowledged",
            "escalated",
            "resolved",
            "unresolved",
        ]
        .contains(&s.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "state: found {:?}; expected open, acknowledged, escalated, resolved or unresolved",
            clip(s)
        )));
    }
    if let Some(p) = &q.priority
        && !Priority::ALL.iter().any(|x| x.as_str() == p)
    {
        return Err(ApiError::bad_request(format!(
            "priority: found {:?}; expected P1, P2, P3, P4 or P5",
            clip(p)
        )));
    }
    if let Some(site) = &q.site
        && !state.config.sites.iter().any(|s| &s.id == site)
    {
        return Err(ApiError::bad_request(format!(
            "site: no site {:?}",
            clip(site)
        )));
    }
    let store = state.store.clone();
    let bodies = blocking(move || store.incidents_latest(SCAN)).await?;
    let out = bodies
        .iter()
        .filter_map(|b| parse(b))
        .map(|t| IncidentDto::new(&t.incident, t.at))
        .filter(|i| q.site.as_ref().is_none_or(|s| &i.site == s))
        .filter(|i| match q.state.as_deref() {
            None => true,
            Some("unresolved") => i.state != "resolved",
            Some(s) => i.state == s,
        })
        .filter(|i| q.priority.as_ref().is_none_or(|p| &i.priority == p))
        .take(limit as usize)
        .collect();
    Ok(Json(out))
}

/// One incident with every transition and its delivery to each receiver.
#[utoipa::path(
    get,
    path = "/api/v1/incidents/{id}",
    tag = "incidents",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "incident id (inc-...)")),
    responses(
        (status = 200, description = "the incident", body = IncidentDetail),
        (status = 401, description = "no or an unknown token", body = ErrorBody),
        (status = 403, description = "the role may not", body = ErrorBody),
        (status = 404, description = "no such incident", body = ErrorBody)
    )
)]
pub async fn detail(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<IncidentDetail>> {
    let store = state.store.clone();
    let key = id.clone();
    let (bodies, items) = blocking(move || {
        let log = store.incident_log(&key)?;
        let items = store.outbox_of_incident(&key)?;
        Ok((log, items))
    })
    .await?;
    let transitions: Vec<IncidentTransition> = bodies.iter().filter_map(|b| parse(b)).collect();
    let Some(last) = transitions.last() else {
        return Err(ApiError::not_found(format!("no incident {:?}", clip(&id))));
    };
    let mut by_seq: HashMap<u32, Vec<DeliveryDto>> = HashMap::new();
    for item in &items {
        by_seq.entry(item.sequence).or_default().push(item.into());
    }
    let view = state.alarms.view();
    let open = view.incidents.iter().find(|i| i.id == id);
    let members = open
        .map(|i| {
            i.members
                .iter()
                .map(|m| MemberDto {
                    alarm: m.alarm.to_string(),
                    active: m.active,
                    priority: m.priority.as_str().to_owned(),
                    summary: m.summary.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Json(IncidentDetail {
        incident: IncidentDto::new(&last.incident, last.at),
        details: last.incident.details.clone(),
        members,
        transitions: transitions
            .iter()
            .map(|t| IncidentTransitionDto::new(t, by_seq.remove(&t.sequence).unwrap_or_default()))
            .collect(),
    }))
}

/// Deliveries a receiver rejected, oldest first: they wait for an operator to fix the
/// cause and retry.
#[utoipa::path(
    get,
    path = "/api/v1/deliveries/parked",
    tag = "incidents",
    security(("bearer" = [])),
    params(ParkedQuery),
    responses(
        (status = 200, description = "the parked deliveries", body = [ParkedDto]),
        (status = 400, description = "a bad filter", body = ErrorBody),
        (status = 401, description = "no or an unknown token", body = ErrorBody),
        (status = 403, description = "the role may not", body = ErrorBody)
    )
)]
pub async fn parked(
    State(state): State<ApiState>,
    ApiQuery(q): ApiQuery<ParkedQuery>,
) -> ApiResult<Json<Vec<ParkedDto>>> {
    const ADAPTERS: [&str; 3] = ["webhook", "servicenow", "pagerduty"];
    let adapter: Option<&'static str> = match &q.adapter {
        None => None,
        Some(a) => Some(ADAPTERS.into_iter().find(|x| x == a).ok_or_else(|| {
            ApiError::bad_request(format!(
                "adapter: found {:?}; expected webhook, servicenow or pagerduty",
                clip(a)
            ))
        })?),
    };
    let items = state.outbox.parked(adapter).await.map_err(|error| {
        tracing::error!(%error, "Reading parked deliveries failed.");
        ApiError::internal()
    })?;
    Ok(Json(
        items
            .iter()
            .map(|i| ParkedDto {
                delivery: i.into(),
                incident_id: i.incident_id.clone(),
                sequence: i.sequence,
                idempotency_key: i.idempotency_key.clone(),
                enqueued_at: i.enqueued_at,
                summary: i.transition.as_ref().map(|t| t.incident.summary.clone()),
            })
            .collect(),
    ))
}

/// Retries a parked delivery now (after its cause was fixed); the dispatcher picks it up.
#[utoipa::path(
    post,
    path = "/api/v1/deliveries/{id}/retry",
    tag = "incidents",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "delivery (outbox item) id")),
    responses(
        (status = 200, description = "pending again, due now", body = RetryResult),
        (status = 400, description = "a bad id", body = ErrorBody),
        (status = 401, description = "no or an unknown token", body = ErrorBody),
        (status = 403, description = "the role may not", body = ErrorBody),
        (status = 404, description = "no such delivery", body = ErrorBody),
        (status = 409, description = "the delivery is not parked", body = ErrorBody)
    )
)]
pub async fn retry(State(state): State<ApiState>, ApiPath(id): ApiPath<i64>) -> Response {
    let object = format!("delivery {id}");
    let result = async {
        let retried = state
            .outbox
            .retry_parked(id, Utc::now())
            .await
            .map_err(|error| {
                tracing::error!(%error, "Retrying a parked delivery failed.");
                ApiError::internal()
            })?;
        let store = state.store.clone();
        let item = blocking(move || store.outbox_item(id))
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no delivery {id}")))?;
        if !retried {
            let state = match item.state {
                ItemState::Pending => "pending",
                ItemState::Delivered => "delivered",
                ItemState::Parked => "parked",
            };
            return Err(ApiError::conflict(format!(
                "delivery {id} is {state}, not parked"
            )));
        }
        Ok(Json(RetryResult {
            result: "scheduled".to_owned(),
            delivery: (&item).into(),
        }))
    }
    .await;
    audited(object, result)
}
