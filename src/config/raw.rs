//! Serde mirror of the configuration files (`docs/configuration.md`): the field doc
//! comments are the option docs. Unknown keys are errors everywhere.
//!
//! Values here are as written; `validate` turns them into `model` types. Closed sets are
//! already enums (a misspelt value is reported with the valid spellings); ids, times,
//! dates, addresses, units and roles are strings checked by `validate`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::model::{
    BatteryKind, Clock, CoolingKind, DeviceKind, Direction, EscortRule, Feed, GensetRating,
    PollClass, Priority, RackClass, Redundancy, RegisterKind, RoomKind, StaffRole, Transport,
    WordOrder,
};

fn default_shutdown_grace_secs() -> u64 {
    10
}
fn default_stale_after_intervals() -> u32 {
    3
}
fn default_keep_alive_secs() -> u64 {
    30
}
fn default_true() -> bool {
    true
}
fn default_escort_max_gap_secs() -> u64 {
    30
}
fn default_grace_min() -> u64 {
    30
}
fn default_max_registers() -> u16 {
    125
}
fn default_max_bits() -> u16 {
    2000
}
fn default_max_gap() -> u16 {
    8
}
fn default_fast() -> u64 {
    2
}
fn default_normal() -> u64 {
    10
}
fn default_slow() -> u64 {
    60
}
fn default_qos() -> u8 {
    1
}
fn default_max_payload() -> usize {
    4096
}

// ---------------------------------------------------------------------------------------
// dcguard.toml

/// `dcguard.toml`: daemon settings, calendar, priority matrix, brokers, sinks, auth.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDaemonFile {
    /// Process settings. Required (an `Option` only so that a mistake inside it does not
    /// hide the problems of the rest of the file; `validate` reports it missing).
    pub daemon: Option<RawDaemon>,
    /// The working-hour clock of P2-P5 targets. Required.
    pub calendar: Option<RawCalendar>,
    /// Priority matrix and targets (catalog chapter III, table 2). Required.
    pub priority: Option<RawPriority>,
    /// MQTT brokers, referenced by id from devices.
    #[serde(default)]
    pub mqtt_brokers: Vec<RawBroker>,
    /// InfluxDB v2 sink; absent = no time series written.
    pub influxdb: Option<RawInfluxdb>,
    /// Ticketing adapters.
    pub ticketing: Option<RawTicketing>,
    /// API authentication.
    pub auth: Option<RawAuth>,
    /// Access reconciliation and retention (all keys optional).
    pub access: Option<RawAccessSettings>,
    /// How the Modbus poller talks to devices (defaults when absent).
    pub modbus: Option<RawModbus>,
    /// Alarm-management settings (defaults when absent).
    pub alarms: Option<RawAlarms>,
}

fn default_shelve_max_h() -> u64 {
    8
}

/// `[alarms]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlarms {
    /// Longest shelve an operator may ask for, hours, 1..=168 (default 8: one shift).
    #[serde(default = "default_shelve_max_h")]
    pub shelve_max_h: u64,
}

impl Default for RawAlarms {
    fn default() -> Self {
        RawAlarms {
            shelve_max_h: default_shelve_max_h(),
        }
    }
}

fn default_modbus_request_timeout_ms() -> u64 {
    1000
}
fn default_modbus_connect_timeout_ms() -> u64 {
    3000
}
fn default_modbus_backoff_min_ms() -> u64 {
    1000
}
fn default_modbus_backoff_max_secs() -> u64 {
    30
}
fn default_modbus_busy_retries() -> u32 {
    3
}
fn default_modbus_busy_retry_delay_ms() -> u64 {
    100
}
fn default_modbus_max_connections() -> u8 {
    1
}

/// `[modbus]`: how the poller talks to every Modbus endpoint (a device or a gateway),
/// unless a site's `[[modbus_endpoints]]` or a device says otherwise.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModbus {
    /// Longest wait for one response, ms, 10..=60000 (default 1000). A timeout drops the
    /// connection (a late reply is never taken for the next request).
    #[serde(default = "default_modbus_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Longest wait for a TCP connection, ms, 10..=60000 (default 3000).
    #[serde(default = "default_modbus_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// First wait after a failed connection, or after a unit stopped answering, ms,
    /// 10..=60000 (default 1000); it doubles, with up to 20 % taken off at random.
    #[serde(default = "default_modbus_backoff_min_ms")]
    pub backoff_min_ms: u64,
    /// Longest of those waits, seconds, 1..=3600 and not below `backoff_min_ms`
    /// (default 30).
    #[serde(default = "default_modbus_backoff_max_secs")]
    pub backoff_max_secs: u64,
    /// Retries after exception 0x06 (device busy), 0..=10 (default 3).
    #[serde(default = "default_modbus_busy_retries")]
    pub busy_retries: u32,
    /// Wait before each busy retry, ms, 0..=10000 (default 100).
    #[serde(default = "default_modbus_busy_retry_delay_ms")]
    pub busy_retry_delay_ms: u64,
    /// Connections per endpoint, 1..=16 (default 1). Each connection carries one request
    /// at a time; the units behind an endpoint are spread over its connections.
    #[serde(default = "default_modbus_max_connections")]
    pub max_connections_per_endpoint: u8,
    /// Quiet time between two requests on a connection, ms, 0..=10000 (default 0), for
    /// slow serial gateways.
    #[serde(default)]
    pub pause_between_requests_ms: u64,
    /// Close the connection after every scan (default false), for devices with few
    /// sockets shared with other masters.
    #[serde(default)]
    pub close_after_scan: bool,
}

impl Default for RawModbus {
    fn default() -> Self {
        RawModbus {
            request_timeout_ms: default_modbus_request_timeout_ms(),
            connect_timeout_ms: default_modbus_connect_timeout_ms(),
            backoff_min_ms: default_modbus_backoff_min_ms(),
            backoff_max_secs: default_modbus_backoff_max_secs(),
            busy_retries: default_modbus_busy_retries(),
            busy_retry_delay_ms: default_modbus_busy_retry_delay_ms(),
            max_connections_per_endpoint: default_modbus_max_connections(),
            pause_between_requests_ms: 0,
            close_after_scan: false,
        }
    }
}

/// `[daemon]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDaemon {
    /// State directory: store, spools, audit log.
    pub data_dir: String,
    /// `IP:PORT` for web pages, API and `/metrics`.
    pub listen: String,
    /// Grace period for an orderly shutdown, seconds (default 10).
    #[serde(default = "default_shutdown_grace_secs")]
    pub shutdown_grace_secs: u64,
    /// A point without a good reading for N poll intervals is stale (default 3).
    #[serde(default = "default_stale_after_intervals")]
    pub stale_after_intervals: u32,
}

/// `[calendar]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCalendar {
    /// IANA time zone name, e.g. `Asia/Jakarta` (WIB = UTC+7).
    pub time_zone: String,
    /// Working days: `mon` .. `sun`.
    pub working_days: Vec<String>,
    /// `HH:MM`, local time.
    pub working_hours_start: String,
    /// `HH:MM`, local time, after the start.
    pub working_hours_end: String,
    /// ISO dates (`YYYY-MM-DD`) that are not working days.
    #[serde(default)]
    pub holidays: Vec<String>,
}

/// `[priority]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPriority {
    /// Urgency (table) x impact (key) -> priority. Must be complete.
    pub matrix: RawMatrix,
    /// Target resolution time per priority. All of P1..P5 must be present.
    pub targets: RawTargets,
}

/// `[priority.matrix]`: one row per urgency.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatrix {
    /// Urgency high.
    pub high: Option<RawMatrixRow>,
    /// Urgency medium.
    pub medium: Option<RawMatrixRow>,
    /// Urgency low.
    pub low: Option<RawMatrixRow>,
}

/// One urgency row: priority per impact.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatrixRow {
    /// Impact high.
    pub high: Option<Priority>,
    /// Impact medium.
    pub medium: Option<Priority>,
    /// Impact low.
    pub low: Option<Priority>,
}

/// `[priority.targets]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTargets {
    /// P1.
    #[serde(rename = "P1")]
    pub p1: Option<RawTarget>,
    /// P2.
    #[serde(rename = "P2")]
    pub p2: Option<RawTarget>,
    /// P3.
    #[serde(rename = "P3")]
    pub p3: Option<RawTarget>,
    /// P4.
    #[serde(rename = "P4")]
    pub p4: Option<RawTarget>,
    /// P5.
    #[serde(rename = "P5")]
    pub p5: Option<RawTarget>,
}

/// A target: hours on a clock.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    /// Target resolution time, hours, at least 1.
    pub target_hours: u32,
    /// `24x7` (clock hours) or `working_hours` (the calendar's).
    pub clock: Clock,
}

/// `[[mqtt_brokers]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBroker {
    /// Broker id, referenced by `mqtt.broker` of devices.
    pub id: String,
    /// Host name or address.
    pub host: String,
    /// TCP port, 1..=65535.
    pub port: u16,
    /// TLS (rustls), default false.
    #[serde(default)]
    pub tls: bool,
    /// MQTT client id.
    pub client_id: String,
    /// Keep-alive, seconds (default 30).
    #[serde(default = "default_keep_alive_secs")]
    pub keep_alive_secs: u64,
    /// User name (not a secret).
    pub username: Option<String>,
    /// Environment variable holding the password.
    pub password_env: Option<String>,
    /// File holding the password.
    pub password_file: Option<String>,
}

/// `[influxdb]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInfluxdb {
    /// Write readings (default false).
    #[serde(default)]
    pub enabled: bool,
    /// Base URL, `http://` or `https://`.
    pub url: String,
    /// Organisation.
    pub org: String,
    /// Bucket.
    pub bucket: String,
    /// Environment variable holding the API token.
    pub token_env: Option<String>,
    /// File holding the API token.
    pub token_file: Option<String>,
    /// Lines per write request at most (default 5000).
    #[serde(default = "default_influx_batch_max_points")]
    pub batch_max_points: u64,
    /// A batch is written at the latest this long after its first line (default 1000).
    #[serde(default = "default_influx_flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// Readings queued for the sink; when full the newest is dropped and counted
    /// (default 65536).
    #[serde(default = "default_influx_queue_capacity")]
    pub queue_capacity: u64,
    /// Disk budget of the spool in MiB; past it the oldest data is dropped (default 1024).
    #[serde(default = "default_influx_spool_max_mib")]
    pub spool_max_mib: u64,
    /// Spooled data older than this is dropped (default 72).
    #[serde(default = "default_influx_spool_max_age_h")]
    pub spool_max_age_h: u64,
    /// gzip request bodies (default true).
    #[serde(default = "default_true")]
    pub gzip: bool,
    /// Write requests in flight at once (default 4).
    #[serde(default = "default_influx_max_in_flight")]
    pub max_in_flight: u64,
}

fn default_influx_batch_max_points() -> u64 {
    5000
}
fn default_influx_flush_interval_ms() -> u64 {
    1000
}
fn default_influx_queue_capacity() -> u64 {
    65536
}
fn default_influx_spool_max_mib() -> u64 {
    1024
}
fn default_influx_spool_max_age_h() -> u64 {
    72
}
fn default_influx_max_in_flight() -> u64 {
    4
}

/// `[ticketing]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTicketing {
    /// Generic CloudEvents webhook.
    pub webhook: Option<RawWebhook>,
    /// ServiceNow Table API.
    pub servicenow: Option<RawServiceNow>,
    /// PagerDuty Events API v2.
    pub pagerduty: Option<RawPagerDuty>,
    /// Delivery settings shared by every adapter (all keys optional).
    pub dispatch: Option<RawDispatch>,
}

fn default_servicenow_table() -> String {
    "incident".to_owned()
}
fn default_pagerduty_events_url() -> String {
    "https://events.pagerduty.com/v2/enqueue".to_owned()
}
fn default_request_timeout_secs() -> u64 {
    10
}
fn default_retry_min_secs() -> u64 {
    1
}
fn default_retry_max_secs() -> u64 {
    300
}
fn default_max_in_flight() -> usize {
    4
}
fn default_retry_horizon_h() -> u64 {
    12
}
fn default_delivery_failing_after_secs() -> u64 {
    60
}

/// `[ticketing.servicenow]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServiceNow {
    /// Send incidents (default false).
    #[serde(default)]
    pub enabled: bool,
    /// Instance base URL, `http://` or `https://`, e.g. `https://example.service-now.com`.
    pub instance_url: String,
    /// Table of the Table API (default `incident`).
    #[serde(default = "default_servicenow_table")]
    pub table: String,
    /// User of the integration account (not a secret).
    pub username: String,
    /// Environment variable holding its password (one of `_env`/`_file` when enabled).
    pub password_env: Option<String>,
    /// File holding its password.
    pub password_file: Option<String>,
    /// `assignment_group` of created incidents (name or sys_id).
    pub assignment_group: Option<String>,
    /// `caller_id` of created incidents (user name or sys_id).
    pub caller_id: Option<String>,
}

/// `[ticketing.pagerduty]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPagerDuty {
    /// Send incidents (default false).
    #[serde(default)]
    pub enabled: bool,
    /// Events API v2 endpoint (default `https://events.pagerduty.com/v2/enqueue`).
    #[serde(default = "default_pagerduty_events_url")]
    pub events_url: String,
    /// Environment variable holding the integration's routing key (one of `_env`/`_file`
    /// when enabled).
    pub routing_key_env: Option<String>,
    /// File holding the routing key.
    pub routing_key_file: Option<String>,
}

/// `[ticketing.dispatch]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDispatch {
    /// Bound of one delivery attempt (connect, send, reply), seconds, 1..=60 (default 10).
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// First retry delay, seconds, at least 1 (default 1).
    #[serde(default = "default_retry_min_secs")]
    pub retry_min_secs: u64,
    /// Longest retry delay (backoff cap), seconds, retry_min_secs..=3600 (default 300).
    #[serde(default = "default_retry_max_secs")]
    pub retry_max_secs: u64,
    /// Concurrent requests per adapter, 1..=64 (default 4).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Hours after which an undelivered transition is parked instead of retried, 1..=23
    /// (default 12): below the 24 h for which receivers keep idempotency keys, so a retry
    /// never comes after the receiver forgot the key.
    #[serde(default = "default_retry_horizon_h")]
    pub retry_horizon_h: u64,
    /// Attempts failing this long without a delivery raise the internal "incident delivery
    /// failing" alarm (a parked transition raises it at once), seconds, 1..=3600 (default 60).
    #[serde(default = "default_delivery_failing_after_secs")]
    pub delivery_failing_after_secs: u64,
}

impl Default for RawDispatch {
    fn default() -> Self {
        RawDispatch {
            request_timeout_secs: default_request_timeout_secs(),
            retry_min_secs: default_retry_min_secs(),
            retry_max_secs: default_retry_max_secs(),
            max_in_flight: default_max_in_flight(),
            retry_horizon_h: default_retry_horizon_h(),
            delivery_failing_after_secs: default_delivery_failing_after_secs(),
        }
    }
}

/// `[ticketing.webhook]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    /// Send incidents (default false).
    #[serde(default)]
    pub enabled: bool,
    /// Receiver URL, `http://` or `https://`.
    pub url: String,
    /// Environment variable holding the HMAC-SHA256 key (required when enabled).
    pub hmac_secret_env: Option<String>,
    /// File holding the HMAC-SHA256 key.
    pub hmac_secret_file: Option<String>,
}

/// `[access]` of `dcguard.toml`: daemon-wide access settings (the per-site policy is in
/// the site files).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessSettings {
    /// Out-of-order tolerance of live reconciliation, seconds, 0..=30 (default 10).
    #[serde(default = "default_settle_secs")]
    pub settle_secs: u64,
    /// A reader clock further than this from the receive time is `clock_skew`, seconds,
    /// at least 1 (default 300).
    #[serde(default = "default_max_clock_skew_secs")]
    pub max_clock_skew_secs: u64,
    /// `repeated_denied`: this many denials (at least 2, default 3) ...
    #[serde(default = "default_repeated_denied_count")]
    pub repeated_denied_count: u64,
    /// ... within this many minutes, by one credential or at one reader (default 5).
    #[serde(default = "default_repeated_denied_window_min")]
    pub repeated_denied_window_min: u64,
    /// Staff count as on shift this many minutes before and after their shift (default 60).
    #[serde(default = "default_shift_grace_min")]
    pub shift_grace_min: u64,
    /// Access log (events, findings, reviews, the audit chain) kept this many months, at
    /// least 12 (PCI DSS 10.5.1; default 12).
    #[serde(default = "default_access_log_retention_months")]
    pub access_log_retention_months: u32,
    /// Visitor log (visit tickets, their history and visit reports) kept this many months
    /// after the visit, at least 3 (PCI DSS 9.3.4; default 12).
    #[serde(default = "default_visitor_log_retention_months")]
    pub visitor_log_retention_months: u32,
}

impl Default for RawAccessSettings {
    fn default() -> Self {
        RawAccessSettings {
            settle_secs: default_settle_secs(),
            max_clock_skew_secs: default_max_clock_skew_secs(),
            repeated_denied_count: default_repeated_denied_count(),
            repeated_denied_window_min: default_repeated_denied_window_min(),
            shift_grace_min: default_shift_grace_min(),
            access_log_retention_months: default_access_log_retention_months(),
            visitor_log_retention_months: default_visitor_log_retention_months(),
        }
    }
}

fn default_settle_secs() -> u64 {
    10
}
fn default_max_clock_skew_secs() -> u64 {
    300
}
fn default_repeated_denied_count() -> u64 {
    3
}
fn default_repeated_denied_window_min() -> u64 {
    5
}
fn default_shift_grace_min() -> u64 {
    60
}
fn default_access_log_retention_months() -> u32 {
    12
}
fn default_visitor_log_retention_months() -> u32 {
    12
}

/// `[auth]`: exactly one of the two.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// File of hashed bearer tokens by role.
    pub tokens_file: Option<String>,
    /// Environment variable holding that file's content.
    pub tokens_env: Option<String>,
    /// Who may read `/metrics`: `"loopback"` (default: any client on a loopback address,
    /// no token) or `"token"` (a bearer token of a role allowed by the access matrix).
    pub metrics_access: Option<String>,
}

// ---------------------------------------------------------------------------------------
// sites/<id>.toml

/// `sites/<id>.toml`: one site.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSiteFile {
    /// The site's facts. Required (an `Option` only so that a mistake inside it does not
    /// hide the problems of the rest of the file; `validate` reports it missing).
    pub site: Option<RawSite>,
    /// Access policy (service ITSM.3). Required.
    pub access: Option<RawAccess>,
    /// Rooms.
    #[serde(default)]
    pub rooms: Vec<RawRoom>,
    /// Racks, single ids or ranges.
    #[serde(default)]
    pub racks: Vec<RawRack>,
    /// A/B rack power meters behind Modbus gateways.
    #[serde(default)]
    pub rack_meters: Vec<RawRackMeters>,
    /// Other devices.
    #[serde(default)]
    pub devices: Vec<RawDevice>,
    /// Settings of individual Modbus endpoints (fragile devices, gateways that allow
    /// more than one connection); the others follow `[modbus]` of `dcguard.toml`.
    #[serde(default)]
    pub modbus_endpoints: Vec<RawModbusEndpoint>,
    /// Overrides of the rule catalogue's defaults for this site, a room, a rack or a device.
    #[serde(default)]
    pub rule_overrides: Vec<RawRuleOverride>,
}

/// `[[rule_overrides]]`: one rule's defaults changed for this site or a part of it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuleOverride {
    /// The rule id of the catalogue, e.g. `hall_temperature_high`.
    pub rule: String,
    /// Only this room (at most one of `room`, `rack`, `device`; none: the whole site).
    pub room: Option<String>,
    /// Only this rack.
    pub rack: Option<String>,
    /// Only this device.
    pub device: Option<String>,
    /// `false` disables the rule there.
    pub enabled: Option<bool>,
    /// Priority of its incidents, `P1`..`P5`.
    pub priority: Option<Priority>,
    /// Threshold in the rule's unit (numeric rules only).
    pub limit: Option<f64>,
    /// On-delay, seconds.
    pub on_delay_secs: Option<u64>,
    /// Off-delay, seconds.
    pub off_delay_secs: Option<u64>,
    /// Deadband in the rule's unit.
    pub deadband: Option<f64>,
}

/// `[[modbus_endpoints]]`: overrides of `[modbus]` for one endpoint of this site.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModbusEndpoint {
    /// The endpoint, `IP:PORT`, as the site's devices or rack meters name it.
    pub endpoint: String,
    /// Connections to it, 1..=16.
    pub max_connections: Option<u8>,
    /// Quiet time between two requests on a connection, ms, 0..=10000.
    pub pause_between_requests_ms: Option<u64>,
    /// Close the connection after every scan.
    pub close_after_scan: Option<bool>,
    /// Longest wait for one response, ms, 10..=60000.
    pub request_timeout_ms: Option<u64>,
}

/// `[site]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSite {
    /// Site id (`A-Z a-z 0-9 - _ .`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Building.
    pub building: String,
    /// IANA time zone of the site.
    pub time_zone: String,
    /// The site's maximum rack positions; racks declared must not exceed it.
    pub rack_positions: u32,
    /// Floor load limit, kg/m2.
    pub floor_load_max_kg_m2: f64,
    /// Active-active utility substations.
    pub utility_feeds: u32,
    /// Free text: the hall's clean agent.
    pub fire_suppression: String,
    /// UPS facts.
    pub ups: RawUps,
    /// Genset facts.
    pub genset: RawGenset,
    /// Cooling facts.
    pub cooling: RawCooling,
    /// Defaults for every room of kind `data_hall`.
    pub data_hall: RawClimate,
    /// Per-rack limit by class; each of feed A and B is rated at it.
    pub rack_limit_kw: RawRackLimits,
}

/// `[site.ups]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUps {
    /// Design bridge time, minutes; runtime left below it is an alarm.
    pub backup_time_min: u64,
    /// `vrla` | `lithium`.
    pub battery: BatteryKind,
    /// `N` | `N+1` | `2N`.
    pub redundancy: Redundancy,
}

/// `[site.genset]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGenset {
    /// `prime` | `standby`.
    pub rating: GensetRating,
    /// `N` | `N+1` | `2N`.
    pub redundancy: Redundancy,
    /// Fuel autonomy without refuelling, hours.
    pub autonomy_min_h: f64,
    /// Load test interval, months.
    pub load_test_interval_months: u32,
}

/// `[site.cooling]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCooling {
    /// `pac` | `inrow_pac`.
    pub kind: CoolingKind,
    /// `N` | `N+1` | `2N`.
    pub redundancy: Redundancy,
}

/// `[site.data_hall]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClimate {
    /// degC.
    pub temperature_min_c: f64,
    /// degC.
    pub temperature_max_c: f64,
    /// %RH.
    pub humidity_min_pct: f64,
    /// %RH.
    pub humidity_max_pct: f64,
}

/// `[site.rack_limit_kw]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRackLimits {
    /// kW per storage rack.
    pub storage: f64,
    /// kW per server rack.
    pub server: f64,
    /// kW per network rack.
    pub network: f64,
}

/// `[access]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccess {
    /// `required` | `optional` (finding severity info when optional).
    pub third_party_escort: EscortRule,
    /// Tickets must name destination rooms (true at the Smart DC); then every data hall
    /// needs a reader.
    pub destination_room_required: bool,
    /// A technical escort officer inside during every visit (default true).
    #[serde(default = "default_true")]
    pub technical_escort_required: bool,
    /// The PIC must pass the same reader within this of the third party (default 30).
    #[serde(default = "default_escort_max_gap_secs")]
    pub escort_max_gap_secs: u64,
    /// Entry allowed this long before the ticket window, minutes (default 30).
    #[serde(default = "default_grace_min")]
    pub entry_grace_before_min: u64,
    /// Still inside this long after the window ends: overstay, minutes (default 30).
    #[serde(default = "default_grace_min")]
    pub overstay_grace_min: u64,
    /// Reader serial -> room and direction.
    #[serde(default)]
    pub readers: Vec<RawReader>,
    /// Site staff who need no ticket.
    #[serde(default)]
    pub staff: Vec<RawStaff>,
    /// `[access.incidents]`: rule name -> `"P1"`..`"P5"` or `"none"`, the priority of the
    /// security incident a finding of that rule opens (default from its severity).
    #[serde(default)]
    pub incidents: BTreeMap<String, String>,
}

/// `[[access.readers]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReader {
    /// Device serial, unique across all sites (a push is routed by serial alone).
    pub serial: String,
    /// Room the reader guards.
    pub room: String,
    /// `entry` | `exit`.
    pub direction: Direction,
}

/// `[[access.staff]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStaff {
    /// Staff id, unique in the site.
    pub id: String,
    /// Name.
    pub name: String,
    /// `control_room` | `technical_escort` | `security`.
    pub role: StaffRole,
    /// PIN / card / biometric ids on the readers.
    pub credentials: Vec<String>,
    /// `HH:MM`, site local time (optional, with `shift_end`).
    pub shift_start: Option<String>,
    /// `HH:MM`, site local time (optional, with `shift_start`).
    pub shift_end: Option<String>,
}

/// `[[rooms]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoom {
    /// Room id, unique in the site.
    pub id: String,
    /// Display name.
    pub name: String,
    /// `data_hall` | `ups_room` | `battery_room` | `genset_room` | `electrical_room` |
    /// `mantrap` | `control_room` | `fuel_store` | `corridor`.
    pub kind: RoomKind,
    /// Override of `site.data_hall.temperature_min_c`.
    pub temperature_min_c: Option<f64>,
    /// Override of `site.data_hall.temperature_max_c`.
    pub temperature_max_c: Option<f64>,
    /// Override of `site.data_hall.humidity_min_pct`.
    pub humidity_min_pct: Option<f64>,
    /// Override of `site.data_hall.humidity_max_pct`.
    pub humidity_max_pct: Option<f64>,
}

/// `[[racks]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRack {
    /// One id, or a range `PREFIX+NN..PREFIX+NN` (same prefix and width), e.g. `A01..A22`.
    pub id: String,
    /// Room id.
    pub room: String,
    /// `storage` | `server` | `network`.
    pub class: RackClass,
    /// Override of `site.rack_limit_kw` for these racks.
    pub limit_kw: Option<f64>,
}

/// `[[rack_meters]]`: devices `<rack>-a` and `<rack>-b` for each rack.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRackMeters {
    /// Rack id or range.
    pub racks: String,
    /// A Modbus profile of kind `rack_meter`.
    pub profile: String,
    /// The gateway, `IP:PORT`.
    pub endpoint: String,
    /// Unit id of the first rack's feed A; then rack-major, feed-minor.
    pub unit_start: u8,
    /// The "normal" class interval, seconds; default from the profile.
    pub poll_interval_secs: Option<u64>,
}

/// `[[devices]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDevice {
    /// Device id, unique in the site.
    pub id: String,
    /// Display name (default: the id).
    pub name: Option<String>,
    /// Profile id.
    pub profile: String,
    /// Room id.
    pub room: String,
    /// Modbus address (exactly one of `modbus` and `mqtt`).
    pub modbus: Option<RawModbusAddress>,
    /// MQTT address.
    pub mqtt: Option<RawMqttAddress>,
    /// Modbus devices: the "normal" class interval, seconds; default from the profile.
    pub poll_interval_secs: Option<u64>,
    /// UPS, genset, PAC (cooling capacity): rated power, kW.
    pub rated_kw: Option<f64>,
    /// Genset: usable fuel in its tank, L.
    pub fuel_tank_l: Option<f64>,
    /// Genset: consumption at rated load, L/h (autonomy = fuel / rate).
    pub fuel_l_per_h_full: Option<f64>,
    /// Utility meter: which PLN feed, `A` | `B`.
    pub feed: Option<Feed>,
    /// Rack the device is located at.
    pub rack: Option<String>,
}

/// `modbus = { endpoint, unit }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModbusAddress {
    /// Device or gateway, `IP:PORT`.
    pub endpoint: String,
    /// Unit id.
    pub unit: u8,
    /// Longest wait for one response of this unit, ms, 10..=60000 (a slow device behind a
    /// gateway); default: the endpoint's.
    pub request_timeout_ms: Option<u64>,
}

/// `mqtt = { broker, topic }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMqttAddress {
    /// Broker id from `dcguard.toml`.
    pub broker: String,
    /// Concrete topic, matching the profile's pattern.
    pub topic: String,
}

// ---------------------------------------------------------------------------------------
// profiles/<id>.toml

/// `profiles/<id>.toml`: a Modbus register map or an MQTT payload map.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProfileFile {
    /// Identity.
    pub profile: RawProfileHead,
    /// Modbus read planning (Modbus profiles only; defaults apply when absent).
    pub modbus: Option<RawModbusSettings>,
    /// Interval per point class (Modbus profiles only; defaults 2/10/60 s).
    pub poll: Option<RawPoll>,
    /// MQTT topic and payload settings (MQTT profiles only, required there).
    pub mqtt: Option<RawMqttSettings>,
    /// Points.
    #[serde(default)]
    pub points: Vec<RawPoint>,
}

/// `[profile]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProfileHead {
    /// Profile id, unique across `profiles/`.
    pub id: String,
    /// Device kind.
    pub kind: DeviceKind,
    /// `modbus` | `mqtt`.
    pub transport: Transport,
    /// Which real device family this map is modelled on, and what differs.
    pub imitates: String,
}

/// `[modbus]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModbusSettings {
    /// Registers per request, 1..=125 (default 125).
    #[serde(default = "default_max_registers")]
    pub max_registers_per_read: u16,
    /// Bits per request, 1..=2000 (default 2000).
    #[serde(default = "default_max_bits")]
    pub max_bits_per_read: u16,
    /// The planner may read and discard gaps up to this size (default 8).
    #[serde(default = "default_max_gap")]
    pub max_gap_registers: u16,
    /// Ranges never to request.
    #[serde(default)]
    pub never_read: Vec<RawRegisterRange>,
}

/// `{ register, start, count }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegisterRange {
    /// Table.
    pub register: RegisterKind,
    /// First address.
    pub start: u16,
    /// Number of addresses, at least 1.
    pub count: u16,
}

/// `[poll]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPoll {
    /// Status words, seconds (default 2).
    #[serde(default = "default_fast")]
    pub fast_secs: u64,
    /// Measurements, seconds (default 10); a device's `poll_interval_secs` overrides it.
    #[serde(default = "default_normal")]
    pub normal_secs: u64,
    /// Energy counters, run hours, strings, seconds (default 60).
    #[serde(default = "default_slow")]
    pub slow_secs: u64,
}

/// `[mqtt]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMqttSettings {
    /// Topic pattern; `{site}` `{room}` `{device}` each match one level.
    pub topic: String,
    /// QoS 0..=2 (default 1).
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Larger payloads are rejected (default 4096).
    #[serde(default = "default_max_payload")]
    pub max_payload_bytes: usize,
    /// JSON field carrying a per-sensor sequence number.
    pub sequence_json: Option<String>,
    /// Expected publish interval, seconds (staleness).
    pub interval_secs: u64,
}

/// Data type spelling of a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawDataType {
    /// 1 register.
    U16,
    /// 1 register.
    I16,
    /// 2 registers.
    U32,
    /// 2 registers.
    I32,
    /// 4 registers.
    U64,
    /// 4 registers.
    I64,
    /// 2 registers.
    F32,
    /// 4 registers (Modbus) or a JSON number (MQTT).
    F64,
    /// A coil or discrete input (Modbus) or a JSON boolean (MQTT).
    Bool,
    /// Bit field in one register: needs `bit`, optional `bit_count`.
    Bit,
    /// Text: needs `length` (registers).
    String,
}

/// `[[points]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPoint {
    /// Unique in the profile.
    pub name: String,
    /// Canonical meaning (see the role list).
    pub role: String,
    /// Modbus: `holding` | `input` | `coil` | `discrete`.
    pub register: Option<RegisterKind>,
    /// Modbus: 0-based PDU address.
    pub address: Option<u16>,
    /// MQTT: dot path into the JSON payload; `"."` = the payload is the value.
    pub json: Option<String>,
    /// Data type.
    #[serde(rename = "type")]
    pub data_type: RawDataType,
    /// Modbus: word/byte order, default `ABCD`.
    pub order: Option<WordOrder>,
    /// Modbus: engineering = raw * scale + offset (default 1, never 0).
    pub scale: Option<f64>,
    /// Modbus: see `scale` (default 0).
    pub offset: Option<f64>,
    /// Unit (see the unit list), default `""`.
    #[serde(default)]
    pub unit: String,
    /// Modbus: `fast` | `normal` | `slow`, default `normal`.
    pub class: Option<PollClass>,
    /// Value names for integer types and bit fields: `{ "2" = "none" }`.
    #[serde(rename = "enum")]
    pub enum_names: Option<BTreeMap<String, String>>,
    /// Modbus: raw values that are not data.
    #[serde(default)]
    pub sentinels: Vec<RawSentinel>,
    /// Plausibility minimum, engineering units.
    pub valid_min: Option<f64>,
    /// Plausibility maximum, engineering units.
    pub valid_max: Option<f64>,
    /// `type = "bit"`: lowest bit, 0..=15.
    pub bit: Option<u8>,
    /// `type = "bit"`: number of bits, 1..=16 (default 1).
    pub bit_count: Option<u8>,
    /// `type = "string"`: registers (2 characters each).
    pub length: Option<u16>,
}

/// `{ raw, reason }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSentinel {
    /// Raw unsigned value of the register(s).
    pub raw: u64,
    /// Why it is not data.
    pub reason: String,
}
