//! Facility routes: sites, rooms, racks, devices, points with their latest readings, and
//! the power-chain and cooling summaries, read from the configuration and the live state.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::State;

use super::ApiState;
use super::dto::*;
use super::error::{ApiError, ApiPath, ApiQuery, ApiResult, ErrorBody};
use crate::config::model::{
    Device, DeviceKind, DeviceTransport, Feed, ProfileTransport, Redundancy, Role, Site,
};
use crate::model::Reading;

/// The latest readings of one site, by (device, point).
type SiteReadings = HashMap<(String, String), Reading>;

fn find_site<'a>(state: &'a ApiState, id: &str) -> ApiResult<&'a Site> {
    state
        .config
        .sites
        .iter()
        .find(|s| s.id == id)
        .ok_or_else(|| {
            let known: Vec<&str> = state.config.sites.iter().map(|s| s.id.as_str()).collect();
            ApiError::not_found(format!(
                "no site {:?}; expected one of: {}",
                clip(id),
                known.join(", ")
            ))
        })
}

/// A client's text in a message: at most 64 characters.
pub(super) fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if s.chars().count() > 64 {
        out.push_str("...");
    }
    out
}

fn readings_of(state: &ApiState, site: &str) -> SiteReadings {
    state
        .live
        .snapshot()
        .into_iter()
        .filter(|(id, _)| &*id.site == site)
        .map(|(id, r)| ((id.device.to_string(), id.point.to_string()), r))
        .collect()
}

struct PointSpec<'a> {
    name: &'a str,
    role: &'a Role,
    unit: String,
    valid_min: Option<f64>,
    valid_max: Option<f64>,
}

fn point_specs(device: &Device) -> Vec<PointSpec<'_>> {
    match &device.profile.transport {
        ProfileTransport::Modbus(p) => p
            .points
            .iter()
            .map(|p| PointSpec {
                name: &p.name,
                role: &p.role,
                unit: p.unit.to_string(),
                valid_min: p.valid_min,
                valid_max: p.valid_max,
            })
            .collect(),
        ProfileTransport::Mqtt(p) => p
            .points
            .iter()
            .map(|p| PointSpec {
                name: &p.name,
                role: &p.role,
                unit: p.unit.to_string(),
                valid_min: p.valid_min,
                valid_max: p.valid_max,
            })
            .collect(),
    }
}

/// Facility limits of a point: room climate for temperature and humidity, the rack's
/// rating for a rack feed's power.
fn facility_limits(site: &Site, device: &Device, role: &Role) -> (Option<f64>, Option<f64>) {
    let climate = || {
        site.rooms
            .iter()
            .find(|r| r.id == device.room)
            .and_then(|r| r.climate)
    };
    match role {
        Role::EnvTemperatureC | Role::PacReturnAirC => climate()
            .map(|c| (Some(c.temperature_min_c), Some(c.temperature_max_c)))
            .unwrap_or_default(),
        Role::EnvHumidityPct | Role::PacReturnHumidityPct => climate()
            .map(|c| (Some(c.humidity_min_pct), Some(c.humidity_max_pct)))
            .unwrap_or_default(),
        Role::RackFeedPowerKw => {
            let limit = device
                .rack
                .as_ref()
                .and_then(|rack| site.racks.iter().find(|r| &r.id == rack))
                .map(|r| r.limit_kw);
            (None, limit)
        }
        _ => (None, None),
    }
}

fn point_dto(site: &Site, device: &Device, spec: &PointSpec<'_>, r: &SiteReadings) -> PointDto {
    let reading = r.get(&(device.id.clone(), spec.name.to_owned()));
    let (quality, bad_reason, value, display, sampled_at) = reading_fields(reading);
    let (low, high) = facility_limits(site, device, spec.role);
    PointDto {
        device: device.id.clone(),
        point: spec.name.to_owned(),
        role: spec.role.name(),
        unit: spec.unit.clone(),
        room: device.room.clone(),
        quality,
        bad_reason,
        value,
        display,
        sampled_at,
        limits: PointLimitsDto {
            plausible_min: spec.valid_min,
            plausible_max: spec.valid_max,
            low,
            high,
        },
    }
}

fn counts<'a>(points: impl Iterator<Item = &'a PointDto>) -> PointCounts {
    let mut c = PointCounts::default();
    for p in points {
        match p.quality.as_str() {
            "good" => c.good += 1,
            "bad" => c.bad += 1,
            "stale" => c.stale += 1,
            _ => c.missing += 1,
        }
    }
    c
}

fn device_points(site: &Site, device: &Device, r: &SiteReadings) -> Vec<PointDto> {
    point_specs(device)
        .iter()
        .map(|s| point_dto(site, device, s, r))
        .collect()
}

fn device_dto(state: &ApiState, site: &Site, device: &Device, points: &[PointDto]) -> DeviceDto {
    let (transport, up, last_success) = match &device.transport {
        DeviceTransport::Modbus { .. } => {
            let h = state.health.device(&site.id, &device.id);
            (
                "modbus",
                h.as_ref()
                    .and_then(|h| (h.last_success.is_some() || !h.up).then_some(h.up)),
                h.and_then(|h| h.last_success),
            )
        }
        DeviceTransport::Mqtt { .. } => {
            let c = counts(points.iter());
            let up = (c.good + c.bad + c.stale > 0).then_some(c.good > 0 && c.stale == 0);
            ("mqtt", up, None)
        }
    };
    DeviceDto {
        id: device.id.clone(),
        name: device.name.clone(),
        kind: device.kind().as_str().to_owned(),
        room: device.room.clone(),
        rack: device.rack.clone(),
        profile: device.profile.id.clone(),
        transport: transport.to_owned(),
        up,
        points: counts(points.iter()),
        last_success,
    }
}

fn redundancy(r: Redundancy) -> String {
    match r {
        Redundancy::N => "N",
        Redundancy::NPlus1 => "N+1",
        Redundancy::TwoN => "2N",
    }
    .to_owned()
}

fn summary(state: &ApiState, site: &Site, r: &SiteReadings) -> SiteSummary {
    let mut points = PointCounts::default();
    for d in &site.devices {
        let c = counts(device_points(site, d, r).iter());
        points.good += c.good;
        points.bad += c.bad;
        points.stale += c.stale;
        points.missing += c.missing;
    }
    let view = state.alarms.view();
    let alarms = view.alarms.iter().filter(|a| a.key.site == site.id);
    let (mut active, mut unacked) = (0, 0);
    for a in alarms {
        active += usize::from(a.state.is_active());
        unacked += usize::from(a.state.is_unacked());
    }
    SiteSummary {
        id: site.id.clone(),
        name: site.name.clone(),
        building: site.building.clone(),
        time_zone: site.time_zone.name().to_owned(),
        rooms: site.rooms.len(),
        racks: site.racks.len(),
        devices: site.devices.len(),
        points,
        alarms_active: active,
        alarms_unacked: unacked,
        incidents_open: view.incidents.iter().filter(|i| i.site == site.id).count(),
    }
}

/// Every site with live counts.
#[utoipa::path(
    get,
    path = "/api/v1/sites",
    tag = "facility",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the sites", body = [SiteSummary]),
        (status = 401, description = "no or an unknown token", body = ErrorBody),
        (status = 403, description = "the role may not", body = ErrorBody)
    )
)]
pub async fn sites(State(state): State<ApiState>) -> Json<Vec<SiteSummary>> {
    let all: Vec<SiteSummary> = state
        .config
        .sites
        .iter()
        .map(|s| summary(&state, s, &readings_of(&state, &s.id)))
        .collect();
    Json(all)
}

/// One site: facts, limits and live counts.
#[utoipa::path(
    get,
    path = "/api/v1/sites/{site}",
    tag = "facility",
    security(("bearer" = [])),
    params(("site" = String, Path, description = "site id")),
    responses(
        (status = 200, description = "the site", body = SiteDetail),
        (status = 401, description = "no or an unknown token", body = ErrorBody),
        (status = 404, description = "no such site", body = ErrorBody)
    )
)]
pub async fn site(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<SiteDetail>> {
    let site = find_site(&state, &id)?;
    let r = readings_of(&state, &site.id);
    let mut rack_limits_kw = BTreeMap::new();
    rack_limits_kw.insert("storage".to_owned(), site.rack_limits.storage_kw);
    rack_limits_kw.insert("server".to_owned(), site.rack_limits.server_kw);
    rack_limits_kw.insert("network".to_owned(), site.rack_limits.network_kw);
    Ok(Json(SiteDetail {
        site: summary(&state, site, &r),
        rack_positions: site.rack_positions,
        utility_feeds: site.utility_feeds,
        fire_suppression: site.fire_suppression.clone(),
        ups_backup_time_secs: site.ups.backup_time.as_secs(),
        ups_redundancy: redundancy(site.ups.redundancy),
        genset_redundancy: redundancy(site.genset.redundancy),
        genset_autonomy_min_h: site.genset.autonomy_min_h,
        genset_load_test_interval_months: site.genset.load_test_interval_months,
        cooling_redundancy: redundancy(site.cooling.redundancy),
        data_hall_limits: (&site.data_hall).into(),
        rack_limits_kw,
    }))
}

fn spread(values: &[Option<f64>]) -> SpreadDto {
    let good: Vec<f64> = values.iter().flatten().copied().collect();
    SpreadDto {
        min: good.iter().copied().reduce(f64::min),
        max: good.iter().copied().reduce(f64::max),
        good: good.len(),
        sensors: values.len(),
    }
}

fn room_dtos(site: &Site, r: &SiteReadings) -> Vec<RoomDto> {
    site.rooms
        .iter()
        .map(|room| {
            let mut temps = Vec::new();
            let mut hums = Vec::new();
            let mut devices = 0;
            for d in site.devices.iter().filter(|d| d.room == room.id) {
                devices += 1;
                for p in device_points(site, d, r) {
                    let good = (p.quality == "good").then_some(p.value).flatten();
                    if p.role == Role::EnvTemperatureC.name() {
                        temps.push(good);
                    } else if p.role == Role::EnvHumidityPct.name() {
                        hums.push(good);
                    }
                }
            }
            RoomDto {
                id: room.id.clone(),
                name: room.name.clone(),
                kind: room_kind(room.kind),
                limits: room.climate.as_ref().map(Into::into),
                temperature_c: spread(&temps),
                humidity_pct: spread(&hums),
                devices,
            }
        })
        .collect()
}

fn room_kind(kind: crate::config::model::RoomKind) -> String {
    use crate::config::model::RoomKind as K;
    match kind {
        K::DataHall => "data_hall",
        K::UpsRoom => "ups_room",
        K::BatteryRoom => "battery_room",
        K::GensetRoom => "genset_room",
        K::ElectricalRoom => "electrical_room",
        K::Mantrap => "mantrap",
        K::ControlRoom => "control_room",
        K::FuelStore => "fuel_store",
        K::Corridor => "corridor",
    }
    .to_owned()
}

/// The rooms of a site with their climate against the limits.
#[utoipa::path(
    get,
    path = "/api/v1/sites/{site}/rooms",
    tag = "facility",
    security(("bearer" = [])),
    params(("site" = String, Path, description = "site id")),
    responses(
        (status = 200, description = "the rooms", body = [RoomDto]),
        (status = 401, description = "no or an unknown token", body = ErrorBody),
        (status = 404, description = "no such site", body = ErrorBody)
    )
)]
pub async fn rooms(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Vec<RoomDto>>> {
    let site = find_site(&state, &id)?;
    Ok(Json(room_dtos(site, &readings_of(&state, &site.id))))
}

fn rack_class(c: crate::config::model::RackClass) -> &'static str {
    use crate::config::model::RackClass as C;
    match c {
        C::Storage => "storage",
        C::Server => "server",
        C::Network => "network",
    }
}

fn check_room(site: &Site, room: Option<&String>) -> ApiResult<()> {
    match room {
        Some(room) if !site.rooms.iter().any(|r| &r.id == room) => Err(ApiError::bad_request(
            format!("room: no room {:?} in site {}", clip(room), site.id),
        )),
        _ => Ok(()),
    }
}

/// The racks of a site with their latest feed power.
#[utoipa::path(
    get,
    path = "/api/v1/sites/{site}/racks",
    tag = "facility",
    security(("bearer" = [])),
    params(("site" = String, Path, description = "site id"), RackQuery),
    responses(
        (status = 200, description = "the racks", body = [RackDto]),
        (status = 400, description = "a bad filter", body = ErrorBody),
        (status = 401, description = "no or an unknown token", body = ErrorBody),
        (status = 404, description = "no such site", body = ErrorBody)
    )
)]
pub async fn racks(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<RackQuery>,
) -> ApiResult<Json<Vec<RackDto>>> {
    let site = find_site(&state, &id)?;
    check_room(site, q.room.as_ref())?;
    if let Some(class) = &q.class
        && !["storage", "server", "network"].contains(&class.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "class: found {:?}; expected storage, server or network",
            clip(class)
        )));
    }
    let r = readings_of(&state, &site.id);
    let out = site
        .racks
        .iter()
        .filter(|rack| q.room.as_ref().is_none_or(|room| &rack.room == room))
        .filter(|rack| {
            q.class
                .as_deref()
                .is_none_or(|c| rack_class(rack.class) == c)
        })
        .map(|rack| {
            let feeds: Vec<RackFeedDto> = site
                .devices
                .iter()
                .filter(|d| d.kind() == DeviceKind::RackMeter && d.rack.as_ref() == Some(&rack.id))
                .map(|d| {
                    let power = device_points(site, d, &r)
                        .into_iter()
                        .find(|p| p.role == Role::RackFeedPowerKw.name())
                        .filter(|p| p.quality == "good")
                        .and_then(|p| p.value);
                    RackFeedDto {
                        feed: match d.facts.feed {
                            Some(Feed::A) => "A",
                            Some(Feed::B) => "B",
                            None => "-",
                        }
                        .to_owned(),
                        device: d.id.clone(),
                        power_kw: power,
                    }
                })
                .collect();
            let power_kw = (!feeds.is_empty())
                .then(|| feeds.iter().map(|f| f.power_kw).sum::<Option<f64>>())
                .flatten();
            RackDto {
                id: rack.id.clone(),
                room: rack.room.clone(),
                class: rack_class(rack.class).to_owned(),
                limit_kw: rack.limit_kw,
                power_kw,
                feeds,
            }
        })
        .collect();
    Ok(Json(out))
}

const KINDS: [DeviceKind; 9] = [
    DeviceKind::Ups,
    DeviceKind::Pac,
    DeviceKind::Genset,
    DeviceKind::Vesda,
    DeviceKind::RackMeter,
    DeviceKind::UtilityMeter,
    DeviceKind::Ats,
    DeviceKind::EnvSensor,
    DeviceKind::LeakSensor,
];

/// The devices of a site with their health.
#[utoipa::path(
    get,
    path = "/api/v1/sites/{site}/devices",
    tag = "facility",
    security(("bearer" = [])),
    params(("site" = String, Path, description = "site id"), DeviceQuery),
    responses(
        (status = 200, description = "the devices", body = [DeviceDto]),
        (status = 400, description = "a bad filter", body = ErrorBody),
        (status = 401, description = "no or an unknown token", body = ErrorBody),
        (status = 404, description = "no such site", body = ErrorBody)
    )
)]
pub async fn devices(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeviceQuery>,
) -> ApiResult<Json<Vec<DeviceDto>>> {
    let site = find_site(&state, &id)?;
    check_room(site, q.room.as_ref())?;
    if let Some(kind) = &q.kind
        && !KINDS.iter().any(|k| k.as_str() == kind)
    {
        let known: Vec<&str> = KINDS.iter().map(|k| k.as_str()).collect();
        return Err(ApiError::bad_request(format!(
            "kind: found {:?}; expected one of {}",
            clip(kind),
            known.join(", ")
        )));
    }
    let r = readings_of(&state, &site.id);
    let out = site
        .devices
        .iter()
        .filter(|d| q.room.as_ref().is_none_or(|room| &d.room == room))
        .filter(|d| q.kind.as_deref().is_none_or(|k| d.kind().as_str() == k))
        .map(|d| device_dto(&state, site, d, &device_points(site, d, &r)))
        .collect();
    Ok(Json(out))
}

/// One device with every point.
#[utoipa::path(
    get,
    path = "/api/v1/sites/{site}/devices/{device}",
    tag = "facility",
    security(("bearer" = [])),
    params(
        ("site" = String, Path, description = "site id"),
        ("device" = String, Path, description = "device id")
    ),
    responses(
        (status = 200, description = "the device", body = DeviceDetail),
        (status = 401, description = "no or an unknown token", body = ErrorBody),
        (status = 404, description = "no such site or device", body = ErrorBody)
    )
)]
pub async fn device(
    State(state): State<ApiState>,
    ApiPath((site_id, device_id)): ApiPath<(String, String)>,
) -> ApiResult<Json<DeviceDetail>> {
    let site = find_site(&state, &site_id)?;
    let device = site
        .devices
        .iter()
        .find(|d| d.id == device_id)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no device {:?} in site {}",
                clip(&device_id),
                site.id
            ))
        })?;
    let r = readings_of(&state, &site.id);
    let points = device_points(site, device, &r);
    Ok(Json(DeviceDetail {
        device: device_dto(&state, site, device, &points),
        points,
    }))
}

/// Points of a site with their latest value, quality and limits.
#[utoipa::path(
    get,
    path = "/api/v1/sites/{site}/points",
    tag = "facility",
    security(("bearer" = [])),
    params(("site" = String, Path, description = "site id"), PointQuery),
    responses(
        (status = 200, description = "the points", body = [PointDto]),
        (status = 400, description = "a bad filter", body = ErrorBody),
        (status = 401, description = "no or an unknown token", body = ErrorBody),
        (status = 404, description = "no such site", body = ErrorBody)
    )
)]
pub async fn points(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<PointQuery>,
) -> ApiResult<Json<Vec<PointDto>>> {
    let site = find_site(&state, &id)?;
    check_room(site, q.room.as_ref())?;
    if let Some(device) = &q.device
        && !site.devices.iter().any(|d| &d.id == device)
    {
        return Err(ApiError::bad_request(format!(
            "device: no device {:?} in site {}",
            clip(device),
            site.id
        )));
    }
    if let Some(quality) = &q.quality
        && !["good", "bad", "stale", "missing"].contains(&quality.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "quality: found {:?}; expected good, bad, stale or missing",
            clip(quality)
        )));
    }
    if let Some(role) = &q.role
        && Role::parse(role).is_none()
    {
        return Err(ApiError::bad_request(format!(
            "role: found {:?}; expected a point role such as env.temperature_c",
            clip(role)
        )));
    }
    let r = readings_of(&state, &site.id);
    let mut out = Vec::new();
    for d in &site.devices {
        if q.device.as_ref().is_some_and(|x| x != &d.id)
            || q.room.as_ref().is_some_and(|x| x != &d.room)
        {
            continue;
        }
        for p in device_points(site, d, &r) {
            if q.role.as_ref().is_some_and(|x| x != &p.role)
                || q.quality.as_ref().is_some_and(|x| x != &p.quality)
            {
                continue;
            }
            out.push(p);
        }
    }
    Ok(Json(out))
}

fn plants(state: &ApiState, site: &Site, r: &SiteReadings, kind: DeviceKind) -> Vec<PlantDto> {
    site.devices
        .iter()
        .filter(|d| d.kind() == kind)
        .map(|d| {
            let points = device_points(site, d, r);
            let device = device_dto(state, site, d, &points);
            PlantDto {
                device,
                rated_kw: d.facts.rated_kw,
                feed: d.facts.feed.map(|f| match f {
                    Feed::A => "A".to_owned(),
                    Feed::B => "B".to_owned(),
                }),
                values: points.into_iter().map(|p| (p.role.clone(), p)).collect(),
            }
        })
        .collect()
}

/// The power chain of a site: utility feeds, transfer switches, UPS, gensets and fuel.
#[utoipa::path(
    get,
    path = "/api/v1/sites/{site}/power",
    tag = "facility",
    security(("bearer" = [])),
    params(("site" = String, Path, description = "site id")),
    responses(
        (status = 200, description = "the power chain", body = PowerDto),
        (status = 401, description = "no or an unknown token", body = ErrorBody),
        (status = 404, description = "no such site", body = ErrorBody)
    )
)]
pub async fn power(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<PowerDto>> {
    let site = find_site(&state, &id)?;
    let r = readings_of(&state, &site.id);
    let gensets = plants(&state, site, &r, DeviceKind::Genset);
    let mut tank_l = 0.0;
    let mut usable: Option<f64> = Some(0.0);
    let mut full_l_per_h = 0.0;
    for (g, d) in gensets.iter().zip(
        site.devices
            .iter()
            .filter(|d| d.kind() == DeviceKind::Genset),
    ) {
        let Some(tank) = d.facts.fuel_tank_l else {
            continue;
        };
        tank_l += tank;
        full_l_per_h += d.facts.fuel_l_per_h_full.unwrap_or(0.0);
        let level = g
            .values
            .get(&Role::GensetFuelLevelPct.name())
            .filter(|p| p.quality == "good")
            .and_then(|p| p.value);
        usable = match (usable, level) {
            (Some(sum), Some(pct)) => Some(sum + tank * pct.clamp(0.0, 100.0) / 100.0),
            _ => None,
        };
    }
    let fuel = FuelDto {
        usable_l: usable.filter(|_| tank_l > 0.0),
        tank_l,
        autonomy_at_rated_h: usable
            .filter(|_| full_l_per_h > 0.0)
            .map(|u| u / full_l_per_h),
        autonomy_design_h: site.genset.autonomy_min_h,
    };
    Ok(Json(PowerDto {
        site: site.id.clone(),
        utility: plants(&state, site, &r, DeviceKind::UtilityMeter),
        transfer_switches: plants(&state, site, &r, DeviceKind::Ats),
        ups: plants(&state, site, &r, DeviceKind::Ups),
        gensets,
        fuel,
        ups_redundancy: redundancy(site.ups.redundancy),
        genset_redundancy: redundancy(site.genset.redundancy),
    }))
}

/// Cooling of a site: precision cooling units and the rooms' climate against limits.
#[utoipa::path(
    get,
    path = "/api/v1/sites/{site}/cooling",
    tag = "facility",
    security(("bearer" = [])),
    params(("site" = String, Path, description = "site id")),
    responses(
        (status = 200, description = "the cooling summary", body = CoolingDto),
        (status = 401, description = "no or an unknown token", body = ErrorBody),
        (status = 404, description = "no such site", body = ErrorBody)
    )
)]
pub async fn cooling(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<CoolingDto>> {
    let site = find_site(&state, &id)?;
    let r = readings_of(&state, &site.id);
    Ok(Json(CoolingDto {
        site: site.id.clone(),
        redundancy: redundancy(site.cooling.redundancy),
        units: plants(&state, site, &r, DeviceKind::Pac),
        rooms: room_dtos(site, &r)
            .into_iter()
            .filter(|room| room.limits.is_some())
            .collect(),
    }))
}
