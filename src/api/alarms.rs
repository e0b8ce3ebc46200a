//! Alarm routes: the filtered list, the operator actions (acknowledge, shelve, unshelve,
//! out of service and back) and maintenance windows. Actions go through the alarm task's
//! [`AlarmHandle`](crate::alarms::task::AlarmHandle) and are answered once on disk.

use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, State};
use axum::response::Response;
use chrono::{TimeDelta, Utc};

use super::auth::Principal;
use super::dto::*;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorBody};
use super::facility::clip;
use super::{ApiState, audited};
use crate::alarms::task::{AlarmView, CommandError};
use crate::alarms::{AlarmError, AlarmKey, AlarmState, MaintenanceWindow, Scope};
use crate::config::model::Priority;

/// Longest accepted comment or reason.
const MAX_TEXT: usize = 500;
/// Longest accepted maintenance window.
const MAX_WINDOW: TimeDelta = TimeDelta::days(7);

fn text(field: &str, value: &str) -> ApiResult<String> {
    let value = value.trim();
    if value.is_empty() || value.chars().count() > MAX_TEXT {
        return Err(ApiError::bad_request(format!(
            "{field}: expected 1 to {MAX_TEXT} characters, found {}",
            value.chars().count()
        )));
    }
    Ok(value.to_owned())
}

fn known_site(state: &ApiState, site: &str) -> ApiResult<()> {
    if state.config.sites.iter().any(|s| s.id == site) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "site: no site {:?}",
            clip(site)
        )))
    }
}

fn priority_of(state: &ApiState, a: &crate::alarms::Alarm) -> Priority {
    state
        .config
        .priority
        .priority(a.info.urgency, a.info.impact)
}

fn incident_of(view: &AlarmView, key: &AlarmKey) -> Option<String> {
    view.incidents
        .iter()
        .find(|i| {
            i.is_open()
                && i.members.iter().any(|m| {
                    m.alarm.rule == key.rule
                        && m.alarm.site == key.site
                        && m.alarm.scope == key.scope
                })
        })
        .map(|i| i.id.clone())
}

fn dto_of(state: &ApiState, view: &AlarmView, key: &AlarmKey) -> Option<AlarmDto> {
    view.alarms
        .iter()
        .find(|a| &a.key == key)
        .map(|a| AlarmDto::new(a, priority_of(state, a), incident_of(view, key)))
}

fn state_filter(state: AlarmState, filter: &str) -> ApiResult<bool> {
    Ok(match filter {
        "active" => state.is_active(),
        "unacked" => state.is_unacked(),
        "normal" | "active_unacked" | "active_acked" | "returned_unacked" => {
            state_name(state) == filter
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "state: found {:?}; expected active, unacked, normal, active_unacked, \
                 active_acked or returned_unacked",
                clip(other)
            )));
        }
    })
}

/// Alarms that are not plainly normal (active, waiting for an acknowledgement, shelved or
/// out of service), highest priority first.
#[utoipa::path(
    get,
    path = "/api/v1/alarms",
    tag = "alarms",
    security(("bearer" = [])),
    params(AlarmQuery),
    responses(
        (status = 200, description = "the alarms", body = AlarmList),
        (status = 400, description = "a bad filter", body = ErrorBody),
        (status = 401, description = "no or an unknown token", body = ErrorBody),
        (status = 403, description = "the role may not", body = ErrorBody)
    )
)]
pub async fn list(
    State(state): State<ApiState>,
    ApiQuery(q): ApiQuery<AlarmQuery>,
) -> ApiResult<Json<AlarmList>> {
    // The daemon's own alarms (incident delivery failing) have the pseudo-site `daemon`.
    if let Some(site) = &q.site
        && !crate::alarms::internal::is_internal(site)
    {
        known_site(&state, site)?;
    }
    if let Some(s) = &q.state {
        state_filter(AlarmState::Normal, s)?;
    }
    if let Some(p) = &q.priority
        && !Priority::ALL.iter().any(|x| x.as_str() == p)
    {
        return Err(ApiError::bad_request(format!(
            "priority: found {:?}; expected P1, P2, P3, P4 or P5",
            clip(p)
        )));
    }
    if let Some(c) = &q.class
        && parse_class(c).is_none()
    {
        let known: Vec<&str> = CLASSES.iter().map(|c| class_name(*c)).collect();
        return Err(ApiError::bad_request(format!(
            "class: found {:?}; expected one of {}",
            clip(c),
            known.join(", ")
        )));
    }
    let view = state.alarms.view();
    let mut alarms = Vec::new();
    for a in &view.alarms {
        let priority = priority_of(&state, a);
        let keep = q.site.as_ref().is_none_or(|s| &a.key.site == s)
            && match &q.state {
                Some(s) => state_filter(a.state, s)?,
                None => true,
            }
            && q.priority.as_deref().is_none_or(|p| priority.as_str() == p)
            && q.class
                .as_deref()
                .is_none_or(|c| class_name(a.info.class) == c)
            && q.room
                .as_ref()
                .is_none_or(|r| a.info.room.as_ref() == Some(r))
            && q.device
                .as_ref()
                .is_none_or(|d| a.info.device.as_ref() == Some(d))
            && q.shelved.is_none_or(|s| a.shelf.is_some() == s);
        if keep {
            alarms.push((priority, a));
        }
    }
    alarms.sort_by(|(pa, a), (pb, b)| {
        pa.cmp(pb)
            .then(a.activated_at.cmp(&b.activated_at))
            .then(a.key.cmp(&b.key))
    });
    Ok(Json(AlarmList {
        as_of: view.at,
        alarms: alarms
            .into_iter()
            .map(|(p, a)| AlarmDto::new(a, p, incident_of(&view, &a.key)))
            .collect(),
    }))
}

fn command_error(e: CommandError) -> ApiError {
    match e {
        CommandError::Stopped => ApiError::unavailable("the alarm task is not running"),
        CommandError::Alarm(e) => {
            let message = e.to_string();
            match e {
                AlarmError::UnknownAlarm(_) | AlarmError::UnknownWindow(_) => {
                    ApiError::not_found(message)
                }
                AlarmError::NothingToAcknowledge { .. }
                | AlarmError::NotShelved(_)
                | AlarmError::AlreadyOutOfService(_)
                | AlarmError::NotOutOfService(_)
                | AlarmError::DuplicateWindow(_)
                | AlarmError::DuplicateSuppression(_)
                | AlarmError::UnknownSuppression(_) => ApiError::conflict(message),
                AlarmError::ShelveTooLong { .. }
                | AlarmError::ShelveZero
                | AlarmError::Missing(_)
                | AlarmError::WindowEndsBeforeStart(_) => ApiError::bad_request(message),
            }
        }
    }
}

fn key_of(site: &str, rule: &str, scope: &str) -> AlarmKey {
    AlarmKey::new(rule, site, scope)
}

async fn act(
    state: &ApiState,
    key: &AlarmKey,
    done: &str,
    result: Result<(), CommandError>,
) -> ApiResult<Json<ActionResult>> {
    result.map_err(command_error)?;
    let view = state.alarms.view();
    Ok(Json(ActionResult {
        result: done.to_owned(),
        alarm: dto_of(state, &view, key),
    }))
}

/// Acknowledges an alarm with a comment; acknowledges its incident too.
#[utoipa::path(
    post,
    path = "/api/v1/alarms/acknowledge",
    tag = "alarms",
    security(("bearer" = [])),
    request_body = AckRequest,
    responses(
        (status = 200, description = "acknowledged (on disk)", body = ActionResult),
        (status = 400, description = "a bad body", body = ErrorBody),
        (status = 401, description = "no or an unknown token", body = ErrorBody),
        (status = 403, description = "the role may not", body = ErrorBody),
        (status = 404, description = "no such alarm", body = ErrorBody),
        (status = 409, description = "nothing to acknowledge", body = ErrorBody)
    )
)]
pub async fn acknowledge(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    ApiJson(body): ApiJson<AckRequest>,
) -> Response {
    let key = key_of(&body.site, &body.rule, &body.scope);
    let result = async {
        let comment = text("comment", &body.comment)?;
        let r = state
            .alarms
            .acknowledge(key.clone(), &who.id, &comment)
            .await;
        act(&state, &key, "acknowledged", r).await
    }
    .await;
    audited(key.to_string(), result)
}

/// Shelves an alarm for a time within the maximum, with a reason.
#[utoipa::path(
    post,
    path = "/api/v1/alarms/shelve",
    tag = "alarms",
    security(("bearer" = [])),
    request_body = ShelveRequest,
    responses(
        (status = 200, description = "shelved (on disk)", body = ActionResult),
        (status = 400, description = "a bad body or a duration beyond the maximum", body = ErrorBody),
        (status = 401, description = "no or an unknown token", body = ErrorBody),
        (status = 403, description = "the role may not", body = ErrorBody),
        (status = 404, description = "no such alarm", body = ErrorBody)
    )
)]
pub async fn shelve(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    ApiJson(body): ApiJson<ShelveRequest>,
) -> Response {
    let key = key_of(&body.site, &body.rule, &body.scope);
    let result = async {
        let reason = text("reason", &body.reason)?;
        if body.duration_secs == 0 {
            return Err(ApiError::bad_request(
                "duration_secs: expected at least 1 second",
            ));
        }
        let max = state.config.alarms.shelve_max.as_secs();
        if body.duration_secs > max {
            return Err(ApiError::bad_request(format!(
                "duration_secs: found {}; expected at most {max} (the maximum shelve, \
                 [alarms] shelve_max_h = {})",
                body.duration_secs,
                max / 3600
            )));
        }
        let r = state
            .alarms
            .shelve(
                key.clone(),
                &who.id,
                &reason,
                Duration::from_secs(body.duration_secs),
            )
            .await;
        act(&state, &key, "shelved", r).await
    }
    .await;
    audited(key.to_string(), result)
}

/// Unshelves an alarm.
#[utoipa::path(
    post,
    path = "/api/v1/alarms/unshelve",
    tag = "alarms",
    security(("bearer" = [])),
    request_body = AlarmRefRequest,
    responses(
        (status = 200, description = "unshelved (on disk)", body = ActionResult),
        (status = 400, description = "a bad body", body = ErrorBody),
        (status = 401, description = "no or an unknown token", body = ErrorBody),
        (status = 403, description = "the role may not", body = ErrorBody),
        (status = 404, description = "no such alarm", body = ErrorBody),
        (status = 409, description = "not shelved", body = ErrorBody)
    )
)]
pub async fn unshelve(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    ApiJson(body): ApiJson<AlarmRefRequest>,
) -> Response {
    let key = key_of(&body.site, &body.rule, &body.scope);
    let r = state.alarms.unshelve(key.clone(), &who.id).await;
    let result = act(&state, &key, "unshelved", r).await;
    audited(key.to_string(), result)
}

/// Takes an alarm out of service, with a reason.
#[utoipa::path(
    post,
    path = "/api/v1/alarms/out-of-service",
    tag = "alarms",
    security(("bearer" = [])),
    request_body = OutOfServiceRequest,
    responses(
        (status = 200, description = "out of service (on disk)", body = ActionResult),
        (status = 400, description = "a bad body", body = ErrorBody),
        (status = 401, description = "no or an unknown token", body = ErrorBody),
        (status = 403, description = "the role may not", body = ErrorBody),
        (status = 404, description = "no such alarm", body = ErrorBody),
        (status = 409, description = "already out of service", body = ErrorBody)
    )
)]
pub async fn out_of_service(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    ApiJson(body): ApiJson<OutOfServiceRequest>,
) -> Response {
    let key = key_of(&body.site, &body.rule, &body.scope);
    let result = async {
        let reason = text("reason", &body.reason)?;
        let r = state
            .alarms
            .set_in_service(key.clone(), &who.id, &reason, false)
            .await;
        act(&state, &key, "out_of_service", r).await
    }
    .await;
    audited(key.to_string(), result)
}

/// Returns an alarm to service.
#[utoipa::path(
    post,
    path = "/api/v1/alarms/return-to-service",
    tag = "alarms",
    security(("bearer" = [])),
    request_body = AlarmRefRequest,
    responses(
        (status = 200, description = "in service (on disk)", body = ActionResult),
        (status = 400, description = "a bad body", body = ErrorBody),
        (status = 401, description = "no or an unknown token", body = ErrorBody),
        (status = 403, description = "the role may not", body = ErrorBody),
        (status = 404, description = "no such alarm", body = ErrorBody),
        (status = 409, description = "not out of service", body = ErrorBody)
    )
)]
pub async fn return_to_service(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    ApiJson(body): ApiJson<AlarmRefRequest>,
) -> Response {
    let key = key_of(&body.site, &body.rule, &body.scope);
    let r = state
        .alarms
        .set_in_service(key.clone(), &who.id, "", true)
        .await;
    let result = act(&state, &key, "in_service", r).await;
    audited(key.to_string(), result)
}

/// Maintenance windows planned or running (ended ones are dropped by the alarm book).
#[utoipa::path(
    get,
    path = "/api/v1/maintenance-windows",
    tag = "alarms",
    security(("bearer" = [])),
    params(WindowQuery),
    responses(
        (status = 200, description = "the windows, by start", body = [WindowDto]),
        (status = 400, description = "a bad filter", body = ErrorBody),
        (status = 401, description = "no or an unknown token", body = ErrorBody),
        (status = 403, description = "the role may not", body = ErrorBody)
    )
)]
pub async fn windows(
    State(state): State<ApiState>,
    ApiQuery(q): ApiQuery<WindowQuery>,
) -> ApiResult<Json<Vec<WindowDto>>> {
    if let Some(site) = &q.site {
        known_site(&state, site)?;
    }
    let now = Utc::now();
    let view = state.alarms.view();
    let mut out: Vec<WindowDto> = view
        .windows
        .iter()
        .filter(|w| q.site.as_ref().is_none_or(|s| &w.site == s))
        .map(|w| WindowDto::new(w, now))
        .collect();
    out.sort_by(|a, b| a.start.cmp(&b.start).then(a.id.cmp(&b.id)));
    Ok(Json(out))
}

fn window_of(state: &ApiState, body: &WindowRequest) -> ApiResult<MaintenanceWindow> {
    if body.id.is_empty()
        || body.id.chars().count() > 100
        || !body
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(ApiError::bad_request(
            "id: expected 1 to 100 characters of A-Z a-z 0-9 - _ .",
        ));
    }
    let site = state
        .config
        .sites
        .iter()
        .find(|s| s.id == body.site)
        .ok_or_else(|| ApiError::bad_request(format!("site: no site {:?}", clip(&body.site))))?;
    let reason = text("reason", &body.reason)?;
    if body.end <= body.start {
        return Err(ApiError::bad_request("end: expected a time after start"));
    }
    if body.end - body.start > MAX_WINDOW {
        return Err(ApiError::bad_request(
            "end: a maintenance window lasts at most 7 days",
        ));
    }
    if body.end <= Utc::now() {
        return Err(ApiError::bad_request("end: expected a time in the future"));
    }
    let scope = match &body.scope {
        None => Scope::genset_load_test(),
        Some(s) => {
            let mut classes = Vec::new();
            for c in &s.classes {
                classes.push(parse_class(c).ok_or_else(|| {
                    ApiError::bad_request(format!("scope.classes: unknown class {:?}", clip(c)))
                })?);
            }
            for r in &s.rooms {
                if !site.rooms.iter().any(|x| &x.id == r) {
                    return Err(ApiError::bad_request(format!(
                        "scope.rooms: no room {:?} in site {}",
                        clip(r),
                        site.id
                    )));
                }
            }
            for d in &s.devices {
                if !site.devices.iter().any(|x| &x.id == d) {
                    return Err(ApiError::bad_request(format!(
                        "scope.devices: no device {:?} in site {}",
                        clip(d),
                        site.id
                    )));
                }
            }
            Scope {
                classes,
                rooms: s.rooms.clone(),
                devices: s.devices.clone(),
            }
        }
    };
    Ok(MaintenanceWindow {
        id: body.id.clone(),
        site: site.id.clone(),
        scope,
        start: body.start,
        end: body.end,
        reason,
    })
}

/// Plans a maintenance window: the alarms in its scope are recorded, flagged suppressed,
/// and open no incident while it runs (never fire or water alarms).
#[utoipa::path(
    post,
    path = "/api/v1/maintenance-windows",
    tag = "alarms",
    security(("bearer" = [])),
    request_body = WindowRequest,
    responses(
        (status = 201, description = "planned (on disk)", body = WindowDto),
        (status = 400, description = "a bad body", body = ErrorBody),
        (status = 401, description = "no or an unknown token", body = ErrorBody),
        (status = 403, description = "the role may not", body = ErrorBody),
        (status = 409, description = "the id is in use", body = ErrorBody)
    )
)]
pub async fn add_window(
    State(state): State<ApiState>,
    ApiJson(body): ApiJson<WindowRequest>,
) -> Response {
    let object = format!("maintenance window {}", clip(&body.id));
    let result = async {
        let window = window_of(&state, &body)?;
        let dto = WindowDto::new(&window, Utc::now());
        state
            .alarms
            .add_window(window)
            .await
            .map_err(command_error)?;
        Ok((axum::http::StatusCode::CREATED, Json(dto)))
    }
    .await;
    audited(object, result)
}

/// Ends a maintenance window now.
#[utoipa::path(
    post,
    path = "/api/v1/maintenance-windows/{id}/end",
    tag = "alarms",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "window id")),
    responses(
        (status = 200, description = "ended (on disk)", body = ActionResult),
        (status = 401, description = "no or an unknown token", body = ErrorBody),
        (status = 403, description = "the role may not", body = ErrorBody),
        (status = 404, description = "no such window", body = ErrorBody)
    )
)]
pub async fn end_window(State(state): State<ApiState>, ApiPath(id): ApiPath<String>) -> Response {
    let object = format!("maintenance window {}", clip(&id));
    let result = async {
        state.alarms.end_window(&id).await.map_err(command_error)?;
        Ok(Json(ActionResult {
            result: "ended".to_owned(),
            alarm: None,
        }))
    }
    .await;
    audited(object, result)
}
