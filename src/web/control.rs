//! The control room page: the three sites side by side (room climate against limits,
//! utility, UPS, gensets with fuel autonomy, cooling), the active alarms with priority, age
//! and SLA due time (acknowledge and shelve for operators), the open incidents with their
//! delivery state; and its live updates (an SSE stream that says when to re-fetch the live
//! fragment). Reads through the API handlers; writes through `api::alarms`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::response::sse::{Event, KeepAlive, Sse};
use chrono::Utc;
use futures_util::Stream;
use maud::{Markup, html};
use serde::Deserialize;

use super::i18n::{L, Lang};
use super::session::WebSession;
use super::{PageLang, after_write, age, check_csrf, layout, local, page_response, read_form};
use crate::api::ApiState;
use crate::api::auth::Role;
use crate::api::dto::{
    AckRequest, AlarmDto, AlarmQuery, CoolingDto, IncidentDto, IncidentQuery, PlantDto, PowerDto,
    RoomDto, ShelveRequest, SiteSummary,
};
use crate::api::error::{ApiPath, ApiQuery};
use crate::api::{alarms, facility, incidents};

/// Most incidents shown (newest change first).
const MAX_INCIDENTS: u32 = 30;
/// An SSE stream ends after this; the browser reconnects by itself.
const STREAM_LIFETIME: Duration = Duration::from_secs(300);
/// A `tick` event this often, so values that move without an alarm change are refreshed.
const TICK: Duration = Duration::from_secs(15);

/// One site's state as the page shows it.
struct SiteView {
    summary: SiteSummary,
    power: Option<PowerDto>,
    cooling: Option<CoolingDto>,
}

/// Everything the live part shows.
struct ControlData {
    sites: Vec<SiteView>,
    alarms: Vec<AlarmDto>,
    incidents: Vec<(IncidentDto, Vec<String>)>,
    zones: BTreeMap<String, chrono_tz::Tz>,
    /// The longest shelve (`[alarms] shelve_max_h`), minutes.
    shelve_max_min: u64,
}

async fn gather(state: &ApiState) -> ControlData {
    let axum::Json(summaries) = facility::sites(State(state.clone())).await;
    let mut sites = Vec::new();
    for summary in summaries {
        let id = summary.id.clone();
        let power = facility::power(State(state.clone()), ApiPath(id.clone()))
            .await
            .ok()
            .map(|j| j.0);
        let cooling = facility::cooling(State(state.clone()), ApiPath(id))
            .await
            .ok()
            .map(|j| j.0);
        sites.push(SiteView {
            summary,
            power,
            cooling,
        });
    }
    let alarms = alarms::list(State(state.clone()), ApiQuery(AlarmQuery::default()))
        .await
        .map(|j| j.0.alarms)
        .unwrap_or_default();
    let listed = incidents::list(
        State(state.clone()),
        ApiQuery(IncidentQuery {
            state: Some("unresolved".to_owned()),
            limit: Some(MAX_INCIDENTS),
            ..IncidentQuery::default()
        }),
    )
    .await
    .map(|j| j.0)
    .unwrap_or_default();
    let mut incidents = Vec::new();
    for incident in listed {
        // The delivery state of the latest transition, per receiver.
        let deliveries = incidents::detail(State(state.clone()), ApiPath(incident.id.clone()))
            .await
            .ok()
            .and_then(|d| d.0.transitions.last().cloned())
            .map(|t| {
                t.deliveries
                    .iter()
                    .map(|d| format!("{}: {}", d.adapter, d.state))
                    .collect()
            })
            .unwrap_or_default();
        incidents.push((incident, deliveries));
    }
    let zones = state
        .config
        .sites
        .iter()
        .map(|s| (s.id.clone(), s.time_zone))
        .collect();
    ControlData {
        sites,
        alarms,
        incidents,
        zones,
        shelve_max_min: state.config.alarms.shelve_max.as_secs() / 60,
    }
}

fn may_operate(role: Role) -> bool {
    matches!(role, Role::Operator | Role::Admin)
}

/// `GET /control-room`.
pub async fn page(
    State(state): State<ApiState>,
    Extension(session): Extension<WebSession>,
    lang: PageLang,
) -> Response {
    let l = lang.lang;
    let data = gather(&state).await;
    let body = html! {
        div #live data-fragment="/control-room/live" data-events="/control-room/events" {
            (live_markup(l, &session, &data))
        }
        p.status #stream-status data-live=(l.t(L::Live)) data-offline=(l.t(L::Offline)) {}
    };
    page_response(
        lang,
        layout(
            l,
            Some(&session),
            l.t(L::ControlRoom),
            "/control-room",
            body,
        ),
    )
}

/// `GET /control-room/live`: the live part alone (the script swaps it in).
pub async fn live(
    State(state): State<ApiState>,
    Extension(session): Extension<WebSession>,
    lang: PageLang,
) -> Response {
    let data = gather(&state).await;
    super::html_response(
        axum::http::StatusCode::OK,
        live_markup(lang.lang, &session, &data),
    )
}

/// What changes the control room: alarm identities and states, shelves, incident states.
fn fingerprint(view: &crate::alarms::task::AlarmView) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for a in &view.alarms {
        a.key.to_string().hash(&mut h);
        format!("{:?}", a.state).hash(&mut h);
        a.shelf.is_some().hash(&mut h);
        a.out_of_service.is_some().hash(&mut h);
    }
    for i in &view.incidents {
        i.id.hash(&mut h);
        format!("{:?}{:?}", i.state, i.priority).hash(&mut h);
    }
    h.finish()
}

/// `GET /control-room/events`: `changed` when alarms or incidents change, `tick` every
/// 15 s; the stream ends after 5 min (the browser reconnects) or when the alarm task stops.
pub async fn events(State(state): State<ApiState>) -> Response {
    use axum::response::IntoResponse as _;
    let mut response = stream(&state).into_response();
    super::secure_headers(&mut response);
    response
}

fn stream(state: &ApiState) -> Sse<impl Stream<Item = Result<Event, Infallible>> + use<>> {
    let watch = state.alarms.watch();
    let last = fingerprint(&watch.borrow());
    let until = tokio::time::Instant::now() + STREAM_LIFETIME;
    let start = futures_util::stream::once(async { Ok(Event::default().event("hello").data("0")) });
    let rest = futures_util::stream::unfold(
        (watch, last, 0u64),
        move |(mut watch, mut last, mut n)| async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + TICK, TICK);
            loop {
                tokio::select! {
                    changed = watch.changed() => {
                        if changed.is_err() {
                            return None;
                        }
                        let now = fingerprint(&watch.borrow_and_update());
                        if now != last {
                            last = now;
                            n += 1;
                            let event = Event::default().event("changed").data(n.to_string());
                            return Some((Ok(event), (watch, last, n)));
                        }
                    }
                    _ = tick.tick() => {
                        n += 1;
                        let event = Event::default().event("tick").data(n.to_string());
                        return Some((Ok(event), (watch, last, n)));
                    }
                    _ = tokio::time::sleep_until(until) => return None,
                }
            }
        },
    );
    use futures_util::StreamExt as _;
    Sse::new(start.chain(rest)).keep_alive(KeepAlive::default())
}

fn live_markup(l: Lang, session: &WebSession, data: &ControlData) -> Markup {
    let now = Utc::now();
    let operate = may_operate(session.principal.role);
    let due: BTreeMap<&str, &IncidentDto> = data
        .incidents
        .iter()
        .map(|(i, _)| (i.id.as_str(), i))
        .collect();
    let zone = |site: &str| data.zones.get(site).copied().unwrap_or(chrono_tz::Tz::UTC);
    html! {
        section.panel #alarms {
            h2 { (l.t(L::ActiveAlarms)) " (" (data.alarms.len()) ")" }
            @if data.alarms.is_empty() {
                p.quiet { (l.t(L::NoAlarms)) }
            } @else {
                table.alarms {
                    thead { tr {
                        th { (l.t(L::Priority)) } th { (l.t(L::Site)) } th { (l.t(L::Alarm)) }
                        th { (l.t(L::State)) } th { (l.t(L::Age)) } th { (l.t(L::SlaDue)) }
                        @if operate { th { (l.t(L::Actions)) } }
                    } }
                    tbody {
                        @for a in &data.alarms {
                            tr.alarm data-alarm=(a.id) data-state=(a.state) data-priority=(a.priority) {
                                td { span class={ "prio " (a.priority.to_lowercase()) } { (a.priority) } }
                                td { (a.site) }
                                td {
                                    div.summary { (a.summary) }
                                    div.quiet { (a.id) }
                                }
                                td.state {
                                    span class={ "state " (a.state) } { (a.state.replace('_', " ")) }
                                    @if let Some(s) = &a.shelved {
                                        div.quiet { (l.t(L::Shelved)) " " (local(s.until, zone(&a.site))) }
                                    }
                                }
                                td { @if let Some(at) = a.activated_at { (age((now - at).num_seconds())) } }
                                td {
                                    @if let Some(i) = a.incident_id.as_deref().and_then(|id| due.get(id)) {
                                        span class=[(i.due_at < now).then_some("overdue")] { (local(i.due_at, zone(&a.site))) }
                                    } @else { "-" }
                                }
                                @if operate {
                                    td.actions { (actions(l, session, a, data.shelve_max_min)) }
                                }
                            }
                        }
                    }
                }
            }
        }
        section.panel #incidents {
            h2 { (l.t(L::Incidents)) " (" (data.incidents.len()) ")" }
            @if data.incidents.is_empty() {
                p.quiet { (l.t(L::NoIncidents)) }
            } @else {
                table {
                    thead { tr {
                        th { (l.t(L::Priority)) } th { (l.t(L::Site)) } th { (l.t(L::Summary)) }
                        th { (l.t(L::State)) } th { (l.t(L::Opened)) } th { (l.t(L::SlaDue)) }
                        th { (l.t(L::Delivery)) }
                    } }
                    tbody {
                        @for (i, deliveries) in &data.incidents {
                            tr.incident data-incident=(i.id) data-state=(i.state) {
                                td { span class={ "prio " (i.priority.to_lowercase()) } { (i.priority) } }
                                td { (i.site) }
                                td { div.summary { (i.summary) } div.quiet { (i.id) } }
                                td { span class={ "state " (i.state) } { (i.state) } }
                                td { (local(i.opened_at, zone(&i.site))) }
                                td { span class=[(i.due_at < now).then_some("overdue")] { (local(i.due_at, zone(&i.site))) } }
                                td {
                                    @if deliveries.is_empty() { "-" }
                                    @for d in deliveries { div { (d) } }
                                }
                            }
                        }
                    }
                }
            }
        }
        section.sites {
            @for site in &data.sites {
                (site_markup(l, site))
            }
        }
    }
}

fn actions(l: Lang, session: &WebSession, a: &AlarmDto, shelve_max_min: u64) -> Markup {
    let unacked = a.state == "active_unacked" || a.state == "returned_unacked";
    html! {
        @if unacked {
            form.action.ack method="post" action="/control-room/acknowledge" {
                input type="hidden" name="csrf" value=(session.csrf);
                input type="hidden" name="site" value=(a.site);
                input type="hidden" name="rule" value=(a.rule);
                input type="hidden" name="scope" value=(a.scope);
                input type="text" name="comment" required maxlength="500"
                    placeholder=(l.t(L::Comment)) aria-label=(l.t(L::Comment));
                button type="submit" { (l.t(L::Acknowledge)) }
            }
        }
        @if a.shelved.is_none() && shelve_max_min >= 15 {
            form.action.shelve method="post" action="/control-room/shelve" {
                input type="hidden" name="csrf" value=(session.csrf);
                input type="hidden" name="site" value=(a.site);
                input type="hidden" name="rule" value=(a.rule);
                input type="hidden" name="scope" value=(a.scope);
                input type="text" name="reason" required maxlength="500"
                    placeholder=(l.t(L::Reason)) aria-label=(l.t(L::Reason));
                select name="minutes" aria-label=(l.t(L::Minutes)) {
                    // Only durations the alarm book accepts ([alarms] shelve_max_h).
                    @for m in [15u64, 30, 60, 120, 240, 480].into_iter().filter(|m| *m <= shelve_max_min) {
                        option value=(m) selected[m == 60] { (m) " " (l.t(L::Minutes)) }
                    }
                }
                button type="submit" { (l.t(L::Shelve)) }
            }
        }
    }
}

fn fmt_value(p: &crate::api::dto::PointDto) -> String {
    match (&p.value, &p.display) {
        (Some(v), _) if p.unit.is_empty() => format!("{v:.1}"),
        (Some(v), _) => format!("{v:.1} {}", p.unit),
        (None, Some(d)) => d.clone(),
        (None, None) => p.quality.clone(),
    }
}

/// A few values of a plant by role, as `label value`.
fn plant_values(plant: &PlantDto, roles: &[(&str, &str)]) -> Vec<(String, String, bool)> {
    roles
        .iter()
        .filter_map(|(role, label)| {
            plant.values.get(*role).map(|p| {
                // A fault input that is set reads as bad, like a bad reading.
                let fault = role.ends_with(".fault") && p.value.is_some_and(|v| v != 0.0);
                let good = p.quality == "good" && !fault;
                let text = if p.role.ends_with("_c")
                    || p.role.ends_with("_pct")
                    || p.role.ends_with("_kw")
                    || p.role.ends_with("_min")
                {
                    fmt_value(p)
                } else {
                    p.display.clone().unwrap_or_else(|| p.quality.clone())
                };
                ((*label).to_owned(), text, good)
            })
        })
        .collect()
}

fn plant_markup(l: Lang, plant: &PlantDto, roles: &[(&str, &str)]) -> Markup {
    let status = match plant.device.up {
        Some(true) => ("up", l.t(L::Up)),
        Some(false) => ("down", l.t(L::Down)),
        None => ("unknown", l.t(L::Unknown)),
    };
    html! {
        li.plant {
            span.name { (plant.device.name) }
            " "
            span class={ "health " (status.0) } { (status.1) }
            @for (label, value, good) in plant_values(plant, roles) {
                " · " span.k { (label) } " " span class=[(!good).then_some("bad")] { (value) }
            }
        }
    }
}

fn room_markup(l: Lang, room: &RoomDto) -> Markup {
    let t = &room.temperature_c;
    let h = &room.humidity_pct;
    let (t_class, t_word) = match (&room.limits, t.min, t.max) {
        (_, None, _) | (_, _, None) => ("nodata", l.t(L::NoData)),
        (Some(lim), _, Some(max)) if max > lim.temperature_max_c => ("high", l.t(L::High)),
        (Some(lim), Some(min), _) if min < lim.temperature_min_c => ("low", l.t(L::Low)),
        _ => ("ok", l.t(L::Ok)),
    };
    let (h_class, h_word) = match (&room.limits, h.min, h.max) {
        (_, None, _) | (_, _, None) => ("nodata", l.t(L::NoData)),
        (Some(lim), _, Some(max)) if max > lim.humidity_max_pct => ("high", l.t(L::High)),
        (Some(lim), Some(min), _) if min < lim.humidity_min_pct => ("low", l.t(L::Low)),
        _ => ("ok", l.t(L::Ok)),
    };
    let spread = |min: Option<f64>, max: Option<f64>, unit: &str| match (min, max) {
        (Some(a), Some(b)) if (a - b).abs() < 0.05 => format!("{a:.1} {unit}"),
        (Some(a), Some(b)) => format!("{a:.1}–{b:.1} {unit}"),
        _ => "-".to_owned(),
    };
    html! {
        tr.room data-room=(room.id) data-temperature=(t_class) {
            td { (room.name) }
            td {
                span class={ "badge " (t_class) } { (t_word) } " "
                (spread(t.min, t.max, "°C"))
                @if let Some(lim) = &room.limits {
                    div.quiet { (l.t(L::Limits)) " " (format!("{:.0}–{:.0} °C", lim.temperature_min_c, lim.temperature_max_c)) }
                }
            }
            td {
                span class={ "badge " (h_class) } { (h_word) } " "
                (spread(h.min, h.max, "%"))
                @if let Some(lim) = &room.limits {
                    div.quiet { (l.t(L::Limits)) " " (format!("{:.0}–{:.0} %", lim.humidity_min_pct, lim.humidity_max_pct)) }
                }
            }
        }
    }
}

fn site_markup(l: Lang, site: &SiteView) -> Markup {
    let s = &site.summary;
    html! {
        article.site data-site=(s.id) {
            h2 {
                (s.name)
                @if s.alarms_active > 0 {
                    " " span.badge.high { (s.alarms_active) " " (l.t(L::ActiveAlarms).to_lowercase()) }
                }
            }
            @if let Some(cooling) = &site.cooling {
                table.rooms {
                    thead { tr { th { (l.t(L::Room)) } th { (l.t(L::Temperature)) } th { (l.t(L::Humidity)) } } }
                    tbody {
                        @for room in cooling.rooms.iter().filter(|r| r.limits.is_some()) {
                            (room_markup(l, room))
                        }
                    }
                }
            }
            @if let Some(p) = &site.power {
                h3 { (l.t(L::Power)) }
                ul.plants {
                    @for u in &p.utility {
                        (plant_markup(l, u, &[("utility.available", "PLN"), ("utility.power_kw", "kW")]))
                    }
                    @for u in &p.ups {
                        (plant_markup(l, u, &[("ups.output_source", "src"), ("ups.load_pct", "load"), ("ups.runtime_remaining_min", "runtime"), ("ups.battery_charge_pct", "batt")]))
                    }
                    @for g in &p.gensets {
                        (plant_markup(l, g, &[("genset.engine_running", "run"), ("genset.load_pct", "load"), ("genset.fuel_level_pct", "fuel")]))
                    }
                }
                p.fuel {
                    span.k { (l.t(L::FuelAutonomy)) } " "
                    @match p.fuel.autonomy_at_rated_h {
                        Some(h) => {
                            span class=[(h < p.fuel.autonomy_design_h).then_some("bad")] { (format!("{h:.1} h")) }
                        }
                        None => { span.bad { (l.t(L::NoData)) } }
                    }
                    " (" (l.t(L::Design)) " " (format!("{:.0} h", p.fuel.autonomy_design_h)) ")"
                }
            }
            @if let Some(c) = &site.cooling {
                h3 { (l.t(L::Cooling)) " (" (c.redundancy) ")" }
                ul.plants {
                    @for u in &c.units {
                        (plant_markup(l, u, &[("pac.operating_state", "state"), ("pac.fault", "fault"), ("pac.supply_air_c", "supply")]))
                    }
                }
            }
        }
    }
}

#[derive(Deserialize)]
struct AckForm {
    csrf: String,
    site: String,
    rule: String,
    #[serde(default)]
    scope: String,
    comment: String,
}

/// `POST /control-room/acknowledge`: `api::alarms::acknowledge` with the session's
/// principal.
pub async fn acknowledge(
    State(state): State<ApiState>,
    Extension(session): Extension<WebSession>,
    lang: PageLang,
    req: Request,
) -> Response {
    let l = lang.lang;
    let form: AckForm = match read_form(l, req).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    if let Err(r) = check_csrf(l, &session, &form.csrf) {
        return r;
    }
    let body = AckRequest {
        site: form.site,
        rule: form.rule,
        scope: form.scope,
        comment: form.comment,
    };
    let response = alarms::acknowledge(
        State(state),
        Extension(session.principal.clone()),
        crate::api::error::ApiJson(body),
    )
    .await;
    after_write(response, l, "/control-room").await
}

#[derive(Deserialize)]
struct ShelveForm {
    csrf: String,
    site: String,
    rule: String,
    #[serde(default)]
    scope: String,
    reason: String,
    minutes: u64,
}

/// `POST /control-room/shelve`: `api::alarms::shelve` with the session's principal.
pub async fn shelve(
    State(state): State<ApiState>,
    Extension(session): Extension<WebSession>,
    lang: PageLang,
    req: Request,
) -> Response {
    let l = lang.lang;
    let form: ShelveForm = match read_form(l, req).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    if let Err(r) = check_csrf(l, &session, &form.csrf) {
        return r;
    }
    let body = ShelveRequest {
        site: form.site,
        rule: form.rule,
        scope: form.scope,
        reason: form.reason,
        duration_secs: form.minutes.saturating_mul(60),
    };
    let response = alarms::shelve(
        State(state),
        Extension(session.principal.clone()),
        crate::api::error::ApiJson(body),
    )
    .await;
    after_write(response, l, "/control-room").await
}
