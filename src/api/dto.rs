//! The REST DTOs: every JSON shape the API reads or writes, with its OpenAPI schema, and
//! the mapping from the domain types. The only place that decides wire names (invariant
//! 3); domain types are never serialized directly.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::alarms::{Alarm, AlarmState, MaintenanceWindow};
use crate::config::model::{ClimateLimits, Impact, Priority, Urgency};
use crate::incidents::incident::{IncidentSnapshot, IncidentState, IncidentTransition};
use crate::model::{Quality, Reading, Value};
use crate::rules::condition::ConditionClass;
use crate::store::outbox::{ItemState, OutboxItem};

// === names ==============================================================================

/// Wire name of a condition class.
pub fn class_name(c: ConditionClass) -> &'static str {
    match c {
        ConditionClass::Temperature => "temperature",
        ConditionClass::Humidity => "humidity",
        ConditionClass::RackPower => "rack_power",
        ConditionClass::Utility => "utility",
        ConditionClass::Ups => "ups",
        ConditionClass::Genset => "genset",
        ConditionClass::Fuel => "fuel",
        ConditionClass::Cooling => "cooling",
        ConditionClass::Fire => "fire",
        ConditionClass::Water => "water",
        ConditionClass::Communication => "communication",
        ConditionClass::LoadTest => "load_test",
        ConditionClass::Access => "access",
    }
}

/// Every condition class, for parsing wire names.
pub const CLASSES: [ConditionClass; 13] = ConditionClass::ALL;

/// A condition class by wire name.
pub fn parse_class(name: &str) -> Option<ConditionClass> {
    CLASSES.into_iter().find(|c| class_name(*c) == name)
}

fn impact_name(i: Impact) -> &'static str {
    match i {
        Impact::High => "high",
        Impact::Medium => "medium",
        Impact::Low => "low",
    }
}

fn urgency_name(u: Urgency) -> &'static str {
    match u {
        Urgency::High => "high",
        Urgency::Medium => "medium",
        Urgency::Low => "low",
    }
}

/// Wire name of an alarm state.
pub fn state_name(s: AlarmState) -> &'static str {
    match s {
        AlarmState::Normal => "normal",
        AlarmState::ActiveUnacked => "active_unacked",
        AlarmState::ActiveAcked => "active_acked",
        AlarmState::ReturnedUnacked => "returned_unacked",
    }
}

fn incident_state_name(s: IncidentState) -> &'static str {
    s.as_str()
}

fn item_state_name(s: ItemState) -> &'static str {
    match s {
        ItemState::Pending => "pending",
        ItemState::Parked => "parked",
        ItemState::Delivered => "delivered",
    }
}

// === facility ===========================================================================

/// Counts of points by the quality of their latest reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct PointCounts {
    /// Latest reading good.
    pub good: usize,
    /// Latest reading bad.
    pub bad: usize,
    /// Latest reading stale.
    pub stale: usize,
    /// Configured, no reading yet.
    pub missing: usize,
}

/// A site in the list.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SiteSummary {
    /// Site id (`dc`, `smart-dc`, `drc`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Building.
    pub building: String,
    /// IANA time zone of the site.
    pub time_zone: String,
    /// Rooms.
    pub rooms: usize,
    /// Racks.
    pub racks: usize,
    /// Devices.
    pub devices: usize,
    /// Points by quality.
    pub points: PointCounts,
    /// Alarms in an active state.
    pub alarms_active: usize,
    /// Alarms waiting for an acknowledgement.
    pub alarms_unacked: usize,
    /// Open incidents.
    pub incidents_open: usize,
}

/// Temperature and humidity limits.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct ClimateLimitsDto {
    /// Lowest temperature, degC.
    pub temperature_min_c: f64,
    /// Highest temperature, degC.
    pub temperature_max_c: f64,
    /// Lowest relative humidity, %.
    pub humidity_min_pct: f64,
    /// Highest relative humidity, %.
    pub humidity_max_pct: f64,
}

impl From<&ClimateLimits> for ClimateLimitsDto {
    fn from(l: &ClimateLimits) -> Self {
        ClimateLimitsDto {
            temperature_min_c: l.temperature_min_c,
            temperature_max_c: l.temperature_max_c,
            humidity_min_pct: l.humidity_min_pct,
            humidity_max_pct: l.humidity_max_pct,
        }
    }
}

/// One site with its facts.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SiteDetail {
    /// The summary.
    pub site: SiteSummary,
    /// Maximum rack positions.
    pub rack_positions: u32,
    /// Utility feeds.
    pub utility_feeds: u32,
    /// Clean agent of the data hall.
    pub fire_suppression: String,
    /// UPS design bridge time, seconds.
    pub ups_backup_time_secs: u64,
    /// UPS redundancy (`N`, `N+1`, `2N`).
    pub ups_redundancy: String,
    /// Genset redundancy.
    pub genset_redundancy: String,
    /// Design fuel autonomy, hours.
    pub genset_autonomy_min_h: f64,
    /// Genset load test interval, months.
    pub genset_load_test_interval_months: u32,
    /// Cooling redundancy.
    pub cooling_redundancy: String,
    /// Data hall climate limits (defaults of the rooms).
    pub data_hall_limits: ClimateLimitsDto,
    /// Rack limit per class, kW.
    pub rack_limits_kw: BTreeMap<String, f64>,
}

/// Lowest and highest good value of a quantity over a room's sensors.
#[derive(Debug, Clone, Copy, Default, Serialize, ToSchema)]
pub struct SpreadDto {
    /// Lowest good value.
    pub min: Option<f64>,
    /// Highest good value.
    pub max: Option<f64>,
    /// Sensors with a good reading.
    pub good: usize,
    /// Sensors in the room.
    pub sensors: usize,
}

/// A room.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RoomDto {
    /// Room id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Kind (`data_hall`, `ups_room`, ...).
    pub kind: String,
    /// Climate limits, where the room has them.
    pub limits: Option<ClimateLimitsDto>,
    /// Temperature over the room's sensors, degC.
    pub temperature_c: SpreadDto,
    /// Relative humidity over the room's sensors, %.
    pub humidity_pct: SpreadDto,
    /// Devices in the room.
    pub devices: usize,
}

/// One feed of a rack.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RackFeedDto {
    /// `A` or `B`.
    pub feed: String,
    /// The rack meter.
    pub device: String,
    /// Latest good power, kW.
    pub power_kw: Option<f64>,
}

/// A rack.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RackDto {
    /// Rack id.
    pub id: String,
    /// Room id.
    pub room: String,
    /// Class (`storage`, `server`, `network`).
    pub class: String,
    /// Limit, kW (each feed is rated at it; A + B must stay at or under it).
    pub limit_kw: f64,
    /// A + B, kW, when every feed reads good.
    pub power_kw: Option<f64>,
    /// The feeds.
    pub feeds: Vec<RackFeedDto>,
}

/// Query of `GET /api/v1/sites/{site}/racks`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RackQuery {
    /// Only racks of this room.
    pub room: Option<String>,
    /// Only racks of this class.
    pub class: Option<String>,
}

/// A device.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeviceDto {
    /// Device id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Kind (`ups`, `pac`, `genset`, ...).
    pub kind: String,
    /// Room id.
    pub room: String,
    /// Rack id, for rack meters and rack sensors.
    pub rack: Option<String>,
    /// Profile id.
    pub profile: String,
    /// `modbus` or `mqtt`.
    pub transport: String,
    /// Modbus: the device answers; MQTT: fresh good data. `None` before the first poll.
    pub up: Option<bool>,
    /// Points by quality.
    pub points: PointCounts,
    /// Last answer with data (Modbus).
    pub last_success: Option<DateTime<Utc>>,
}

/// Query of `GET /api/v1/sites/{site}/devices`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeviceQuery {
    /// Only devices of this room.
    pub room: Option<String>,
    /// Only devices of this kind.
    pub kind: Option<String>,
}

/// Limits of a point.
#[derive(Debug, Clone, Copy, Default, Serialize, ToSchema)]
pub struct PointLimitsDto {
    /// Plausibility range of the profile: outside it a value is bad data.
    pub plausible_min: Option<f64>,
    /// See `plausible_min`.
    pub plausible_max: Option<f64>,
    /// Facility limit below which the value alarms (room climate).
    pub low: Option<f64>,
    /// Facility limit above which the value alarms (room climate, rack feed rating).
    pub high: Option<f64>,
}

/// A point with its latest reading.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PointDto {
    /// Device id.
    pub device: String,
    /// Point name in the profile.
    pub point: String,
    /// Role (`env.temperature_c`, `ups.load_pct`, ...).
    pub role: String,
    /// Unit.
    pub unit: String,
    /// Room of the device.
    pub room: String,
    /// `good`, `bad`, `stale`, or `missing` (no reading yet).
    pub quality: String,
    /// Why the reading is bad.
    pub bad_reason: Option<String>,
    /// The value as a number (booleans 0/1, states their raw value); only when good.
    pub value: Option<f64>,
    /// The value as text (`on_battery (2)`, `true`, a model string); only when good.
    pub display: Option<String>,
    /// When the latest reading was sampled.
    pub sampled_at: Option<DateTime<Utc>>,
    /// Limits.
    pub limits: PointLimitsDto,
}

/// Query of `GET /api/v1/sites/{site}/points`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PointQuery {
    /// Only points of this device.
    pub device: Option<String>,
    /// Only points of devices in this room.
    pub room: Option<String>,
    /// Only points with this role.
    pub role: Option<String>,
    /// Only points of this quality (`good`, `bad`, `stale`, `missing`).
    pub quality: Option<String>,
}

/// A device with its points.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeviceDetail {
    /// The device.
    pub device: DeviceDto,
    /// Its points.
    pub points: Vec<PointDto>,
}

/// A plant (UPS, genset, PAC, meter, transfer switch) with its values by role.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PlantDto {
    /// The device.
    pub device: DeviceDto,
    /// Rated power (cooling capacity for a PAC), kW.
    pub rated_kw: Option<f64>,
    /// Utility meter: which feed.
    pub feed: Option<String>,
    /// Latest reading per role.
    pub values: BTreeMap<String, PointDto>,
}

/// Fuel of a site's gensets.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct FuelDto {
    /// Usable fuel now (tank x level of the gensets reading good), L.
    pub usable_l: Option<f64>,
    /// Tank capacity of all gensets, L.
    pub tank_l: f64,
    /// Autonomy if every genset ran at rated load: usable fuel / consumption at rated
    /// load, h (a lower bound; the fuel-autonomy alarm uses the present load).
    pub autonomy_at_rated_h: Option<f64>,
    /// The site's design autonomy, h.
    pub autonomy_design_h: f64,
}

/// The power chain of a site.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PowerDto {
    /// Site id.
    pub site: String,
    /// Utility (PLN) feed meters.
    pub utility: Vec<PlantDto>,
    /// Transfer switches.
    pub transfer_switches: Vec<PlantDto>,
    /// UPS modules.
    pub ups: Vec<PlantDto>,
    /// Gensets.
    pub gensets: Vec<PlantDto>,
    /// Fuel.
    pub fuel: FuelDto,
    /// UPS redundancy.
    pub ups_redundancy: String,
    /// Genset redundancy.
    pub genset_redundancy: String,
}

/// Cooling of a site.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CoolingDto {
    /// Site id.
    pub site: String,
    /// Cooling redundancy.
    pub redundancy: String,
    /// Precision cooling units.
    pub units: Vec<PlantDto>,
    /// Rooms with climate limits, against them.
    pub rooms: Vec<RoomDto>,
}

/// A reading's fields as the DTOs show them: quality, bad reason, value as a number,
/// value as text, sampling instant.
pub type ReadingFields = (
    String,
    Option<String>,
    Option<f64>,
    Option<String>,
    Option<DateTime<Utc>>,
);

/// One point's reading as the DTO shows it.
pub fn reading_fields(reading: Option<&Reading>) -> ReadingFields {
    match reading {
        None => ("missing".to_owned(), None, None, None, None),
        Some(r) => {
            let (quality, reason) = match r.quality() {
                Quality::Good => ("good", None),
                Quality::Bad(reason) => ("bad", Some(reason.to_string())),
                Quality::Stale => ("stale", None),
            };
            let value = r.value();
            (
                quality.to_owned(),
                reason,
                value.and_then(Value::as_f64),
                value.map(ToString::to_string),
                Some(r.sampled_at()),
            )
        }
    }
}

// === alarms =============================================================================

/// Query of `GET /api/v1/alarms`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AlarmQuery {
    /// Only this site.
    pub site: Option<String>,
    /// Only this state (`active_unacked`, `active_acked`, `returned_unacked`, `normal`),
    /// or `active` (both active states), `unacked` (waiting for an acknowledgement).
    pub state: Option<String>,
    /// Only this priority (`P1`..`P5`).
    pub priority: Option<String>,
    /// Only this condition class (`temperature`, `ups`, ...).
    pub class: Option<String>,
    /// Only this room.
    pub room: Option<String>,
    /// Only this device.
    pub device: Option<String>,
    /// Only shelved (`true`) or unshelved (`false`) alarms.
    pub shelved: Option<bool>,
}

/// A shelve in force.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ShelfDto {
    /// Who.
    pub by: String,
    /// Why.
    pub reason: String,
    /// Since.
    pub since: DateTime<Utc>,
    /// Until (it ends by itself then).
    pub until: DateTime<Utc>,
}

/// Out of service.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OutOfServiceDto {
    /// Who.
    pub by: String,
    /// Why.
    pub reason: String,
    /// Since.
    pub since: DateTime<Utc>,
}

/// An alarm.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AlarmDto {
    /// `site/rule[/scope]`: the alarm's identity for people.
    pub id: String,
    /// Site id.
    pub site: String,
    /// Rule id of the catalogue.
    pub rule: String,
    /// Scope (`room:dh1`, `device:ups-1`, `rack:A01/A`; empty for site-wide).
    pub scope: String,
    /// ISA-18.2 state.
    pub state: String,
    /// Priority from the matrix (urgency x impact).
    pub priority: String,
    /// Condition class.
    pub class: String,
    /// Impact.
    pub impact: String,
    /// Urgency.
    pub urgency: String,
    /// The value that decided.
    pub value: Option<f64>,
    /// Its limit.
    pub limit: Option<f64>,
    /// Their unit.
    pub unit: String,
    /// Room.
    pub room: Option<String>,
    /// Rack.
    pub rack: Option<String>,
    /// Device.
    pub device: Option<String>,
    /// Point.
    pub point: Option<String>,
    /// One line for people.
    pub summary: String,
    /// When the current or latest activation raised.
    pub activated_at: Option<DateTime<Utc>>,
    /// Activations so far.
    pub activations: u64,
    /// Chattering now.
    pub chattering: bool,
    /// Shelved.
    pub shelved: Option<ShelfDto>,
    /// Out of service.
    pub out_of_service: Option<OutOfServiceDto>,
    /// The open incident of this alarm, when it has one.
    pub incident_id: Option<String>,
}

impl AlarmDto {
    /// Maps an alarm with its priority and incident.
    pub fn new(a: &Alarm, priority: Priority, incident_id: Option<String>) -> AlarmDto {
        AlarmDto {
            id: a.key.to_string(),
            site: a.key.site.clone(),
            rule: a.key.rule.clone(),
            scope: a.key.scope.clone(),
            state: state_name(a.state).to_owned(),
            priority: priority.as_str().to_owned(),
            class: class_name(a.info.class).to_owned(),
            impact: impact_name(a.info.impact).to_owned(),
            urgency: urgency_name(a.info.urgency).to_owned(),
            value: a.info.value,
            limit: a.info.limit,
            unit: a.info.unit.clone(),
            room: a.info.room.clone(),
            rack: a.info.rack.clone(),
            device: a.info.device.clone(),
            point: a.info.point.clone(),
            summary: a.info.summary.clone(),
            activated_at: a.activated_at,
            activations: a.activation,
            chattering: a.chattering,
            shelved: a.shelf.as_ref().map(|s| ShelfDto {
                by: s.user.clone(),
                reason: s.reason.clone(),
                since: s.since,
                until: s.until,
            }),
            out_of_service: a.out_of_service.as_ref().map(|o| OutOfServiceDto {
                by: o.user.clone(),
                reason: o.reason.clone(),
                since: o.since,
            }),
            incident_id,
        }
    }
}

/// `POST /api/v1/alarms/acknowledge`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    /// Site id.
    pub site: String,
    /// Rule id.
    pub rule: String,
    /// Scope (empty for site-wide alarms).
    #[serde(default)]
    pub scope: String,
    /// What the operator does about it (1-500 characters).
    pub comment: String,
}

/// `POST /api/v1/alarms/shelve`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShelveRequest {
    /// Site id.
    pub site: String,
    /// Rule id.
    pub rule: String,
    /// Scope (empty for site-wide alarms).
    #[serde(default)]
    pub scope: String,
    /// Why (1-500 characters).
    pub reason: String,
    /// How long, seconds: at least 1, at most `[alarms] shelve_max_h` (8 h by default).
    pub duration_secs: u64,
}

/// `POST /api/v1/alarms/out-of-service`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutOfServiceRequest {
    /// Site id.
    pub site: String,
    /// Rule id.
    pub rule: String,
    /// Scope (empty for site-wide alarms).
    #[serde(default)]
    pub scope: String,
    /// Why (1-500 characters).
    pub reason: String,
}

/// `POST /api/v1/alarms/unshelve` and `/return-to-service`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlarmRefRequest {
    /// Site id.
    pub site: String,
    /// Rule id.
    pub rule: String,
    /// Scope (empty for site-wide alarms).
    #[serde(default)]
    pub scope: String,
}

/// What the alarms list says.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AlarmList {
    /// The instant of the alarm state shown (the latest commit).
    pub as_of: Option<DateTime<Utc>>,
    /// The alarms, highest priority first, then oldest activation first.
    pub alarms: Vec<AlarmDto>,
}

/// The scope of a maintenance window: each non-empty list must match; all empty covers
/// the whole site (never its fire and water alarms).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowScopeDto {
    /// Condition classes (`utility`, `ups`, `genset`, ...).
    #[serde(default)]
    pub classes: Vec<String>,
    /// Room ids.
    #[serde(default)]
    pub rooms: Vec<String>,
    /// Device ids.
    #[serde(default)]
    pub devices: Vec<String>,
}

/// A maintenance window.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WindowDto {
    /// Id (e.g. the work order).
    pub id: String,
    /// Site id.
    pub site: String,
    /// Start, inclusive.
    pub start: DateTime<Utc>,
    /// End, exclusive.
    pub end: DateTime<Utc>,
    /// Why.
    pub reason: String,
    /// What it covers.
    pub scope: WindowScopeDto,
    /// `planned`, `running` or `ended`.
    pub status: String,
}

impl WindowDto {
    /// Maps a window at `now`.
    pub fn new(w: &MaintenanceWindow, now: DateTime<Utc>) -> WindowDto {
        let status = if w.is_open(now) {
            "running"
        } else if now < w.start {
            "planned"
        } else {
            "ended"
        };
        WindowDto {
            id: w.id.clone(),
            site: w.site.clone(),
            start: w.start,
            end: w.end,
            reason: w.reason.clone(),
            scope: WindowScopeDto {
                classes: w
                    .scope
                    .classes
                    .iter()
                    .map(|c| class_name(*c).to_owned())
                    .collect(),
                rooms: w.scope.rooms.clone(),
                devices: w.scope.devices.clone(),
            },
            status: status.to_owned(),
        }
    }
}

/// `POST /api/v1/maintenance-windows`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowRequest {
    /// Id, unique (e.g. the work order): 1-100 of `A-Z a-z 0-9 - _ .`.
    pub id: String,
    /// Site id.
    pub site: String,
    /// Start (RFC 3339).
    pub start: DateTime<Utc>,
    /// End (RFC 3339), after the start and at most 7 days later.
    pub end: DateTime<Utc>,
    /// Why (1-500 characters).
    pub reason: String,
    /// What it covers; absent: the genset load test scope (utility, UPS, genset).
    pub scope: Option<WindowScopeDto>,
}

/// Query of `GET /api/v1/maintenance-windows`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WindowQuery {
    /// Only this site.
    pub site: Option<String>,
}

/// The answer to an operator action.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActionResult {
    /// What was done (`acknowledged`, `shelved`, ...).
    pub result: String,
    /// The alarm afterwards, when it is still listed (not plainly normal).
    pub alarm: Option<AlarmDto>,
}

// === incidents ==========================================================================

/// Query of `GET /api/v1/incidents`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct IncidentQuery {
    /// Only this site.
    pub site: Option<String>,
    /// Only this state (`open`, `acknowledged`, `escalated`, `resolved`), or `unresolved`.
    pub state: Option<String>,
    /// Only this priority (`P1`..`P5`).
    pub priority: Option<String>,
    /// At most this many (1-1000, default 100), newest change first.
    pub limit: Option<u32>,
}

/// An incident as of its latest transition.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IncidentDto {
    /// `inc-` and 16 hex digits.
    pub id: String,
    /// Stable deduplication key.
    pub dedup_key: String,
    /// `open`, `acknowledged`, `escalated`, `resolved`.
    pub state: String,
    /// `P1`..`P5`.
    pub priority: String,
    /// Impact.
    pub impact: String,
    /// Urgency.
    pub urgency: String,
    /// Opened.
    pub opened_at: DateTime<Utc>,
    /// SLA due time.
    pub due_at: DateTime<Utc>,
    /// Latest change.
    pub updated_at: DateTime<Utc>,
    /// Site.
    pub site: String,
    /// Room of the leading condition.
    pub room: Option<String>,
    /// Rack.
    pub rack: Option<String>,
    /// Device.
    pub device: Option<String>,
    /// Point.
    pub point: Option<String>,
    /// Rule of the leading condition.
    pub condition: String,
    /// Condition class.
    pub class: String,
    /// Value.
    pub value: Option<f64>,
    /// Limit.
    pub limit: Option<f64>,
    /// Unit.
    pub unit: String,
    /// One line for a ticket list.
    pub summary: String,
}

impl IncidentDto {
    /// Maps the snapshot of a transition.
    pub fn new(s: &IncidentSnapshot, updated_at: DateTime<Utc>) -> IncidentDto {
        IncidentDto {
            id: s.id.clone(),
            dedup_key: s.dedup_key.clone(),
            state: incident_state_name(s.state).to_owned(),
            priority: s.priority.as_str().to_owned(),
            impact: impact_name(s.impact).to_owned(),
            urgency: urgency_name(s.urgency).to_owned(),
            opened_at: s.opened_at,
            due_at: s.due_at,
            updated_at,
            site: s.site.clone(),
            room: s.room.clone(),
            rack: s.rack.clone(),
            device: s.device.clone(),
            point: s.point.clone(),
            condition: s.condition.clone(),
            class: class_name(s.class).to_owned(),
            value: s.value,
            limit: s.limit,
            unit: s.unit.clone(),
            summary: s.summary.clone(),
        }
    }
}

/// The delivery of one transition to one receiver.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryDto {
    /// Outbox item id (for a retry).
    pub id: i64,
    /// Receiver (`webhook`, `servicenow`, `pagerduty`).
    pub adapter: String,
    /// `pending`, `parked` or `delivered`.
    pub state: String,
    /// Attempts that ended.
    pub attempts: u32,
    /// Earliest next attempt (pending).
    pub next_at: DateTime<Utc>,
    /// The last failure.
    pub last_error: Option<String>,
}

impl From<&OutboxItem> for DeliveryDto {
    fn from(i: &OutboxItem) -> Self {
        DeliveryDto {
            id: i.id,
            adapter: i.adapter.clone(),
            state: item_state_name(i.state).to_owned(),
            attempts: i.attempts,
            next_at: i.next_at,
            last_error: i.last_error.clone(),
        }
    }
}

/// One transition of an incident.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IncidentTransitionDto {
    /// 1, 2, 3... per incident.
    pub sequence: u32,
    /// When.
    pub at: DateTime<Utc>,
    /// `opened`, `joined`, `reactivated`, `escalated`, `acknowledged`,
    /// `condition_cleared`, `disaster`, `resolved`.
    pub kind: String,
    /// One line for people.
    pub note: String,
    /// `Idempotency-Key` of its delivery.
    pub idempotency_key: String,
    /// State after it.
    pub state: String,
    /// Priority after it.
    pub priority: String,
    /// Its delivery to each receiver.
    pub deliveries: Vec<DeliveryDto>,
}

impl IncidentTransitionDto {
    /// Maps a transition with its deliveries.
    pub fn new(t: &IncidentTransition, deliveries: Vec<DeliveryDto>) -> Self {
        let kind = serde_json::to_value(&t.kind)
            .ok()
            .and_then(|v| v.get("kind").and_then(|k| k.as_str().map(str::to_owned)))
            .unwrap_or_else(|| "unknown".to_owned());
        IncidentTransitionDto {
            sequence: t.sequence,
            at: t.at,
            kind,
            note: t.note.clone(),
            idempotency_key: t.idempotency_key.clone(),
            state: incident_state_name(t.incident.state).to_owned(),
            priority: t.incident.priority.as_str().to_owned(),
            deliveries,
        }
    }
}

/// A member alarm of an open incident.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MemberDto {
    /// `site/rule[/scope]`.
    pub alarm: String,
    /// Still raised.
    pub active: bool,
    /// Its priority.
    pub priority: String,
    /// One line.
    pub summary: String,
}

/// One incident with its history.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IncidentDetail {
    /// The incident now.
    pub incident: IncidentDto,
    /// Multi-line details (members, acknowledgement, IT-disaster reminder).
    pub details: String,
    /// Member alarms (while the incident is open).
    pub members: Vec<MemberDto>,
    /// Every transition, oldest first, with its deliveries.
    pub transitions: Vec<IncidentTransitionDto>,
}

/// A parked delivery.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ParkedDto {
    /// The delivery.
    pub delivery: DeliveryDto,
    /// Incident id.
    pub incident_id: String,
    /// Sequence of the transition.
    pub sequence: u32,
    /// Its idempotency key.
    pub idempotency_key: String,
    /// When it was queued.
    pub enqueued_at: DateTime<Utc>,
    /// The incident's summary at that transition (absent when the stored payload cannot
    /// be read).
    pub summary: Option<String>,
}

/// Query of `GET /api/v1/deliveries/parked`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ParkedQuery {
    /// Only this receiver (`webhook`, `servicenow`, `pagerduty`).
    pub adapter: Option<String>,
}

/// The answer to a retry.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RetryResult {
    /// `scheduled`: the delivery is pending again and due now.
    pub result: String,
    /// The delivery.
    pub delivery: DeliveryDto,
}

// === system =============================================================================

/// `/readyz` when ready.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReadyDto {
    /// `ready`.
    pub status: String,
    /// Each check: `ok`.
    pub checks: BTreeMap<String, String>,
    /// API tokens loaded (0: every token route answers 401).
    pub api_tokens: usize,
}

// === access =============================================================================

/// Query of `GET /api/v1/access/events` and its CSV export.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AccessEventQuery {
    /// Only this site.
    pub site: Option<String>,
    /// Only this reader (serial).
    pub reader: Option<String>,
    /// Only this credential (PIN or card).
    pub credential: Option<String>,
    /// Only the events of this room's readers.
    pub room: Option<String>,
    /// Only the events of this person's credentials: a credential, an identity number, a
    /// staff id or a name (case-insensitive), on any ticket or roster.
    pub person: Option<String>,
    /// Only the events reconciliation attributed to this visit ticket, and the evidence
    /// of its findings.
    pub ticket: Option<String>,
    /// Device time at or after this (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Device time before this (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// At most this many, oldest first (1-10000, default 1000; the CSV export 1-100000,
    /// default 100000).
    pub limit: Option<u32>,
}

/// One reader event.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AccessEventDto {
    /// Stable content-hash id.
    pub id: String,
    /// `zkteco_attlog`, `zkteco_rtlog`, `zkteco_operlog`, `json_batch`, `csv_import`.
    pub source: String,
    /// Reader serial.
    pub reader: String,
    /// PIN, card or biometric id, when any.
    pub credential: Option<String>,
    /// `granted`, `denied`, `operation`.
    pub kind: String,
    /// The device's reason of a denial.
    pub reason: Option<String>,
    /// The device operation (`door_forced`, `set_time`...).
    pub op: Option<String>,
    /// `entry` or `exit`.
    pub direction: Option<String>,
    /// Device time (UTC).
    pub device_time: DateTime<Utc>,
    /// When the daemon received it.
    pub received_at: DateTime<Utc>,
    /// The raw line as received.
    pub raw: String,
}

/// snake_case wire name of a serde enum of the access module.
fn access_name<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl From<&crate::access::event::AccessEvent> for AccessEventDto {
    fn from(e: &crate::access::event::AccessEvent) -> Self {
        use crate::access::event::EventKind;
        let (kind, reason, op) = match &e.kind {
            EventKind::Granted => ("granted", None, None),
            EventKind::Denied { reason } => ("denied", reason.as_deref().map(str::to_owned), None),
            EventKind::Operation { op } => ("operation", None, Some(access_name(op))),
        };
        AccessEventDto {
            id: e.id.to_string(),
            source: access_name(&e.source),
            reader: e.reader.to_string(),
            credential: e.credential.as_deref().map(str::to_owned),
            kind: kind.to_owned(),
            reason,
            op,
            direction: e.direction.as_ref().map(access_name),
            device_time: e.device_time,
            received_at: e.received_at,
            raw: e.raw.to_string(),
        }
    }
}

/// Query of `GET /api/v1/findings`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FindingQuery {
    /// Only this site.
    pub site: Option<String>,
    /// Only this rule (`no_ticket`, `wrong_room`, `overstay`...).
    pub rule: Option<String>,
    /// Only findings whose person's name contains this (case-insensitive), or whose
    /// credential is this.
    pub person: Option<String>,
    /// Only this ticket.
    pub ticket: Option<String>,
    /// Only findings in this room.
    pub room: Option<String>,
    /// At or after this (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Before this (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// Only reviewed (`true`) or unreviewed (`false`) findings.
    pub reviewed: Option<bool>,
    /// At most this many, newest first (1-10000, default 1000).
    pub limit: Option<u32>,
}

/// One broken access rule with its evidence.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FindingDto {
    /// The finding's id (for `POST /api/v1/findings/{id}/review`).
    pub id: i64,
    /// Security officers' reviews, oldest first; empty while unreviewed.
    pub reviews: Vec<ReviewDto>,
    /// Stable key (site/rule/ticket/evidence).
    pub key: String,
    /// The rule.
    pub rule: String,
    /// Site id.
    pub site: String,
    /// `info`, `low`, `medium`, `high`.
    pub severity: String,
    /// Person, when resolved.
    pub person: Option<String>,
    /// Credential, when any.
    pub credential: Option<String>,
    /// Ticket, when any.
    pub ticket: Option<String>,
    /// Room, when known.
    pub room: Option<String>,
    /// Reader, when one.
    pub reader: Option<String>,
    /// Evidence event ids, oldest first.
    pub evidence: Vec<String>,
    /// When the rule was broken.
    pub at: DateTime<Utc>,
    /// One line for people.
    pub summary: String,
}

impl From<&crate::store::access::StoredFinding> for FindingDto {
    fn from(stored: &crate::store::access::StoredFinding) -> Self {
        let f = &stored.finding;
        FindingDto {
            id: stored.id,
            reviews: stored.reviews.iter().map(ReviewDto::from).collect(),
            key: f.key(),
            rule: f.rule.as_str().to_owned(),
            site: f.site.clone(),
            severity: access_name(&f.severity),
            person: f.person.clone(),
            credential: f.credential.as_deref().map(str::to_owned),
            ticket: f.ticket.clone(),
            room: f.room.clone(),
            reader: f.reader.as_deref().map(str::to_owned),
            evidence: f.evidence.iter().map(|e| e.to_string()).collect(),
            at: f.at,
            summary: f.summary.clone(),
        }
    }
}

/// A security officer's review of a finding.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReviewDto {
    /// The review's id.
    pub id: i64,
    /// The finding reviewed.
    pub finding_id: i64,
    /// Who reviewed (the token's id).
    pub reviewer: String,
    /// When.
    pub at: DateTime<Utc>,
    /// What was found out or done.
    pub note: String,
}

impl From<&crate::store::access::Review> for ReviewDto {
    fn from(r: &crate::store::access::Review) -> Self {
        ReviewDto {
            id: r.id,
            finding_id: r.finding_id,
            reviewer: r.reviewer.clone(),
            at: r.at,
            note: r.note.clone(),
        }
    }
}

/// Body of `POST /api/v1/findings/{id}/review`. The reviewer is the caller's token.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewRequest {
    /// What was found out or done (1 to 4000 characters).
    pub note: String,
}

/// The answer of a review: the stored review, and whether this call created it (false: the
/// same reviewer had sent the same note before).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReviewResult {
    pub review: ReviewDto,
    pub created: bool,
}

/// The person in charge (PIC) of the requesting unit on a visit ticket.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VisitPicDto {
    /// Full name.
    pub name: String,
    /// Identity number (national id, employee number).
    pub identity_number: String,
    /// Unit or company.
    pub organisation: String,
    /// PIN / card / biometric ids on the readers (needed to escort third parties).
    #[serde(default)]
    pub credentials: Vec<String>,
}

/// Whether a visitor is ministry staff or a third party.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VisitorKindDto {
    Employee,
    ThirdParty,
}

impl From<VisitorKindDto> for crate::access::ticket::VisitorKind {
    fn from(k: VisitorKindDto) -> Self {
        match k {
            VisitorKindDto::Employee => Self::Employee,
            VisitorKindDto::ThirdParty => Self::ThirdParty,
        }
    }
}

impl From<crate::access::ticket::VisitorKind> for VisitorKindDto {
    fn from(k: crate::access::ticket::VisitorKind) -> Self {
        match k {
            crate::access::ticket::VisitorKind::Employee => Self::Employee,
            crate::access::ticket::VisitorKind::ThirdParty => Self::ThirdParty,
        }
    }
}

/// A visitor on a visit ticket.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VisitorDto {
    /// Full name.
    pub name: String,
    /// Identity number.
    pub identity_number: String,
    /// Unit or company.
    pub organisation: String,
    /// A third party must be escorted by their PIC.
    pub kind: VisitorKindDto,
    /// PIN / card / biometric ids on the readers.
    #[serde(default)]
    pub credentials: Vec<String>,
    /// Identity number of the PIC who escorts this visitor; required for third parties.
    #[serde(default)]
    pub pic: Option<String>,
}

/// Body of `POST /api/v1/visits` and `PUT /api/v1/visits/{ticket}`: an approved visit
/// ticket as the service desk sends it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VisitRequest {
    /// Ticket id in the ticketing system (must equal the path's on update).
    pub id: String,
    /// Site id.
    pub site: String,
    /// Destination room ids (required at the Smart DC).
    #[serde(default)]
    pub rooms: Vec<String>,
    /// Start of the activity (RFC 3339).
    pub window_start: DateTime<Utc>,
    /// End of the activity, after the start.
    pub window_end: DateTime<Utc>,
    /// The PIC of the requesting unit.
    pub pic: VisitPicDto,
    /// Employees and third parties.
    pub visitors: Vec<VisitorDto>,
    /// The activity plan.
    pub activity_plan: String,
    /// Who approved the request.
    pub approver: String,
}

impl From<VisitRequest> for crate::access::service::VisitInput {
    fn from(r: VisitRequest) -> Self {
        use crate::access::ticket::{Person, Visitor};
        crate::access::service::VisitInput {
            id: r.id,
            site: r.site,
            rooms: r.rooms,
            window_start: r.window_start,
            window_end: r.window_end,
            pic: Person {
                name: r.pic.name,
                identity_number: r.pic.identity_number,
                organisation: r.pic.organisation,
                credentials: r.pic.credentials,
            },
            visitors: r
                .visitors
                .into_iter()
                .map(|v| Visitor {
                    name: v.name,
                    identity_number: v.identity_number,
                    organisation: v.organisation,
                    kind: v.kind.into(),
                    credentials: v.credentials,
                    pic: v.pic,
                })
                .collect(),
            activity_plan: r.activity_plan,
            approver: r.approver,
        }
    }
}

/// One revision of a visit ticket.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VisitRevisionDto {
    /// 1 for the creation, then +1 per change.
    pub number: u32,
    /// When it was recorded.
    pub at: DateTime<Utc>,
    /// `created`, `updated`, `cancelled`, `closed`.
    pub change: String,
}

/// A visit ticket with its history.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VisitDto {
    pub id: String,
    pub site: String,
    pub rooms: Vec<String>,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub pic: VisitPicDto,
    pub visitors: Vec<VisitorDto>,
    pub activity_plan: String,
    pub approver: String,
    /// `approved`, `cancelled`, `closed`.
    pub state: String,
    /// Revisions, oldest first.
    pub history: Vec<VisitRevisionDto>,
}

impl From<&crate::access::ticket::VisitTicket> for VisitDto {
    fn from(t: &crate::access::ticket::VisitTicket) -> Self {
        VisitDto {
            id: t.id.clone(),
            site: t.site.clone(),
            rooms: t.rooms.clone(),
            window_start: t.window_start,
            window_end: t.window_end,
            pic: VisitPicDto {
                name: t.pic.name.clone(),
                identity_number: t.pic.identity_number.clone(),
                organisation: t.pic.organisation.clone(),
                credentials: t.pic.credentials.clone(),
            },
            visitors: t
                .visitors
                .iter()
                .map(|v| VisitorDto {
                    name: v.name.clone(),
                    identity_number: v.identity_number.clone(),
                    organisation: v.organisation.clone(),
                    kind: v.kind.into(),
                    credentials: v.credentials.clone(),
                    pic: v.pic.clone(),
                })
                .collect(),
            activity_plan: t.activity_plan.clone(),
            approver: t.approver.clone(),
            state: access_name(&t.state),
            history: t
                .history
                .iter()
                .map(|r| VisitRevisionDto {
                    number: r.number,
                    at: r.at,
                    change: access_name(&r.change),
                })
                .collect(),
        }
    }
}

/// Filters of `GET /api/v1/visits`; every given one must match.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VisitQuery {
    /// Site id.
    pub site: Option<String>,
    /// `approved`, `cancelled` or `closed`.
    pub state: Option<String>,
    /// Tickets whose window ends after this (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Tickets whose window starts before this (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// A credential, identity number or name listed on the ticket.
    pub person: Option<String>,
}

/// The delivery of a visit's scheduled report to the ticketing system.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReportDeliveryDto {
    /// When the report was produced (the working day after the visit).
    pub produced_at: DateTime<Utc>,
    /// Delivery state.
    pub delivery: String,
    /// Attempts so far.
    pub attempts: u32,
    /// The last error, while not delivered.
    pub last_error: Option<String>,
    /// When delivered.
    pub delivered_at: Option<DateTime<Utc>>,
}

/// One visit with its report: who entered and left when, escort pairing, findings.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VisitDetailDto {
    pub visit: VisitDto,
    /// The visit report as of now, computed from the stored events and findings: the same
    /// document the ticketing system receives (`docs/integrations.md`), so it is passed
    /// through as that document rather than re-modelled here.
    #[schema(value_type = Object)]
    pub report: serde_json::Value,
    /// The scheduled report's delivery, once produced.
    pub delivery: Option<ReportDeliveryDto>,
}

/// What a JSON event batch did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BatchReceiptDto {
    /// Events in the batch.
    pub received: usize,
    /// Stored for the first time (the rest had been stored before: a re-sent batch).
    pub new: usize,
}

/// One person inside a site now.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OccupantDto {
    pub site: String,
    /// The room the person is in now (the innermost entered).
    pub room: Option<String>,
    /// Rooms entered, outermost first.
    pub rooms: Vec<String>,
    /// Name, or the credential when unresolved.
    pub person: String,
    /// Staff id or identity number, when resolved.
    pub person_id: Option<String>,
    /// Credential used at the readers.
    pub credential: String,
    /// `staff`, `pic`, `employee`, `third_party` or `unresolved`.
    pub role: String,
    /// The visit ticket, when any.
    pub ticket: Option<String>,
    /// For a third party: the identity number of the escorting PIC.
    pub escorted_by: Option<String>,
    /// Site entry time.
    pub entered_at: DateTime<Utc>,
}

impl OccupantDto {
    /// The DTO of an occupant of `site`.
    pub fn of(site: &str, o: &crate::access::occupancy::Occupant) -> Self {
        OccupantDto {
            site: site.to_owned(),
            room: o.rooms.last().cloned(),
            rooms: o.rooms.clone(),
            person: o.person.clone(),
            person_id: o.person_id.clone(),
            credential: o.credential.to_string(),
            role: o.role.as_str().to_owned(),
            ticket: o.ticket.clone(),
            escorted_by: o.escorted_by.clone(),
            entered_at: o.entered_at,
        }
    }
}

/// Filter of `GET /api/v1/occupancy`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OccupancyQuery {
    /// Site id; every site when absent.
    pub site: Option<String>,
}

/// The access audit chain's state, from a full verification.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditStatusDto {
    /// True when every record, link and checkpoint signature verified.
    pub intact: bool,
    /// The first problem (record index and what is wrong), when not intact.
    pub problem: Option<String>,
    /// Chain files verified: the sealed monthly segments, then the active one.
    pub segments: usize,
    /// Records verified.
    pub records: u64,
    /// Signed checkpoints.
    pub checkpoints: u64,
    /// The head: last record's sequence number.
    pub head_seq: Option<u64>,
    /// The head: last record's hash (hex).
    pub head_hash: Option<String>,
    /// The last record covered by a signed checkpoint.
    pub signed_through: Option<u64>,
    /// Records after the last checkpoint.
    pub unsigned_tail: u64,
    /// When this verification ran.
    pub verified_at: DateTime<Utc>,
}
