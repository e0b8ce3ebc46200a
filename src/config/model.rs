//! Validated configuration: the domain types every other module reads. No IO here.
//!
//! Everything in these types has passed validation: references resolve, ranges are
//! expanded, limits are resolved (rack override, else the site's class limit; room
//! override, else the site's data-hall defaults), and each device holds its profile.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, NaiveTime, Weekday};
use chrono_tz::Tz;
use serde::Deserialize;

pub use super::roles::{DeviceKind, Role, Unit};

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[daemon]`.
    pub daemon: Daemon,
    /// `[calendar]`: the working-hour clock.
    pub calendar: Calendar,
    /// `[priority]`: matrix and targets.
    pub priority: PriorityPolicy,
    /// `[[mqtt_brokers]]`, by id.
    pub brokers: BTreeMap<String, Broker>,
    /// `[influxdb]`, when present.
    pub influxdb: Option<Influxdb>,
    /// `[ticketing.webhook]`, when present.
    pub webhook: Option<Webhook>,
    /// `[ticketing.servicenow]`, when present.
    pub servicenow: Option<ServiceNow>,
    /// `[ticketing.pagerduty]`, when present.
    pub pagerduty: Option<PagerDuty>,
    /// `[ticketing.dispatch]` (defaults when absent).
    pub dispatch: Dispatch,
    /// `[auth]`, when present.
    pub auth: Option<Auth>,
    /// `[access]` of `dcguard.toml` (defaults when absent).
    pub access: AccessSettings,
    /// `[modbus]` (defaults when absent).
    pub modbus: ModbusPolling,
    /// `[alarms]`: alarm-management settings.
    pub alarms: AlarmSettings,
    /// Every profile, by id.
    pub profiles: BTreeMap<String, Arc<Profile>>,
    /// The sites, in file-name order.
    pub sites: Vec<Site>,
}

/// `[daemon]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Daemon {
    /// State directory: store, spools, audit log.
    pub data_dir: PathBuf,
    /// Web pages, API and `/metrics`.
    pub listen: SocketAddr,
    /// How long shutdown waits for tasks to finish.
    pub shutdown_grace: Duration,
    /// A point without a good reading for this many poll intervals is stale.
    pub stale_after_intervals: u32,
}

/// The working-hour calendar of P2-P5 targets.
#[derive(Debug, Clone, PartialEq)]
pub struct Calendar {
    /// Site-independent office time zone (Asia/Jakarta).
    pub time_zone: Tz,
    /// Working days of the week.
    pub working_days: BTreeSet<WeekdayOrd>,
    /// Start of the working day, local time.
    pub working_hours_start: NaiveTime,
    /// End of the working day, local time; after the start.
    pub working_hours_end: NaiveTime,
    /// Days that are not working days.
    pub holidays: BTreeSet<NaiveDate>,
}

/// A `chrono::Weekday` ordered Monday first, so it can live in a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WeekdayOrd(pub u8);

impl WeekdayOrd {
    /// Wraps a weekday.
    pub fn new(d: Weekday) -> Self {
        WeekdayOrd(d.num_days_from_monday() as u8)
    }

    /// The weekday.
    pub fn weekday(self) -> Weekday {
        match self.0 {
            0 => Weekday::Mon,
            1 => Weekday::Tue,
            2 => Weekday::Wed,
            3 => Weekday::Thu,
            4 => Weekday::Fri,
            5 => Weekday::Sat,
            _ => Weekday::Sun,
        }
    }
}

impl Calendar {
    /// True when `date` is a working day (a working weekday and not a holiday).
    pub fn is_working_day(&self, date: NaiveDate) -> bool {
        use chrono::Datelike;
        self.working_days.contains(&WeekdayOrd::new(date.weekday()))
            && !self.holidays.contains(&date)
    }
}

/// Incident priority, P1 (most urgent) to P5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
pub enum Priority {
    /// P1.
    P1,
    /// P2.
    P2,
    /// P3.
    P3,
    /// P4.
    P4,
    /// P5.
    P5,
}

impl Priority {
    /// All priorities in order.
    pub const ALL: [Priority; 5] = [
        Priority::P1,
        Priority::P2,
        Priority::P3,
        Priority::P4,
        Priority::P5,
    ];

    /// `P1`..`P5`.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::P1 => "P1",
            Priority::P2 => "P2",
            Priority::P3 => "P3",
            Priority::P4 => "P4",
            Priority::P5 => "P5",
        }
    }
}

/// Impact of an incident (matrix column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Impact {
    /// Wide scope, leadership, very critical / critical services.
    High,
    /// Services of medium criticality.
    Medium,
    /// Low criticality.
    Low,
}

/// Urgency of an incident (matrix row).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Urgency {
    /// Users cannot work; widens if not solved within 3 h.
    High,
    /// Within 8 h.
    Medium,
    /// Within 16 h.
    Low,
}

/// Which clock a target runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum Clock {
    /// Clock hours, 24/7 (`"24x7"`).
    #[serde(rename = "24x7")]
    TwentyFourSeven,
    /// Working hours of the calendar (`"working_hours"`).
    #[serde(rename = "working_hours")]
    WorkingHours,
}

/// Target resolution time of one priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// Target in hours on `clock`.
    pub hours: u32,
    /// The clock the hours run on.
    pub clock: Clock,
}

/// The priority matrix and the targets, complete.
#[derive(Debug, Clone, PartialEq)]
pub struct PriorityPolicy {
    /// `matrix[urgency][impact]`, indices high = 0, medium = 1, low = 2.
    pub matrix: [[Priority; 3]; 3],
    /// `targets[p]` for P1..P5 at indices 0..4.
    pub targets: [Target; 5],
}

impl PriorityPolicy {
    /// Priority for an urgency and an impact.
    pub fn priority(&self, urgency: Urgency, impact: Impact) -> Priority {
        let u = match urgency {
            Urgency::High => 0,
            Urgency::Medium => 1,
            Urgency::Low => 2,
        };
        let i = match impact {
            Impact::High => 0,
            Impact::Medium => 1,
            Impact::Low => 2,
        };
        self.matrix[u][i]
    }

    /// Target of a priority.
    pub fn target(&self, p: Priority) -> Target {
        self.targets[p as usize]
    }
}

/// A secret given by reference, never by value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// Read from this environment variable at start.
    Env(String),
    /// Read from this file at start (e.g. a systemd credential).
    File(PathBuf),
}

/// An MQTT broker.
#[derive(Debug, Clone, PartialEq)]
pub struct Broker {
    /// Broker id, referenced by `mqtt.broker` of devices.
    pub id: String,
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// TLS (rustls) on the connection.
    pub tls: bool,
    /// MQTT client id.
    pub client_id: String,
    /// Keep-alive interval.
    pub keep_alive: Duration,
    /// User name, not a secret.
    pub username: Option<String>,
    /// Password reference.
    pub password: Option<SecretRef>,
}

/// `[influxdb]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Influxdb {
    /// Whether readings are written.
    pub enabled: bool,
    /// Base URL of the v2 API.
    pub url: String,
    /// Organisation.
    pub org: String,
    /// Bucket.
    pub bucket: String,
    /// API token reference.
    pub token: Option<SecretRef>,
    /// Lines per write request at most.
    pub batch_max_points: usize,
    /// A batch is written at the latest this long after its first line.
    pub flush_interval: Duration,
    /// Readings queued for the sink (full: drop newest, counted).
    pub queue_capacity: usize,
    /// Disk budget of the spool, bytes.
    pub spool_max_bytes: u64,
    /// Spooled data older than this is dropped.
    pub spool_max_age: Duration,
    /// gzip request bodies.
    pub gzip: bool,
    /// Write requests in flight at once.
    pub max_in_flight: usize,
}

/// `[ticketing.webhook]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    /// Whether incidents are sent.
    pub enabled: bool,
    /// Receiver URL.
    pub url: String,
    /// HMAC-SHA256 key reference.
    pub hmac_secret: Option<SecretRef>,
}

/// `[ticketing.servicenow]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceNow {
    /// Whether incidents are sent.
    pub enabled: bool,
    /// Instance base URL.
    pub instance_url: String,
    /// Table of the Table API (`incident`).
    pub table: String,
    /// Integration user, not a secret.
    pub username: String,
    /// Its password reference.
    pub password: Option<SecretRef>,
    /// `assignment_group` of created incidents.
    pub assignment_group: Option<String>,
    /// `caller_id` of created incidents.
    pub caller_id: Option<String>,
}

/// `[ticketing.pagerduty]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PagerDuty {
    /// Whether incidents are sent.
    pub enabled: bool,
    /// Events API v2 endpoint.
    pub events_url: String,
    /// Routing key reference.
    pub routing_key: Option<SecretRef>,
}

/// `[alarms]` of `dcguard.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlarmSettings {
    /// Longest shelve an operator may ask for (default 8 h).
    pub shelve_max: Duration,
}

impl Default for AlarmSettings {
    fn default() -> Self {
        AlarmSettings {
            shelve_max: Duration::from_secs(8 * 3600),
        }
    }
}

/// `[ticketing.dispatch]`: delivery settings shared by every adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dispatch {
    /// Bound of one delivery attempt.
    pub request_timeout: Duration,
    /// First retry delay.
    pub retry_min: Duration,
    /// Longest retry delay (backoff cap).
    pub retry_max: Duration,
    /// Concurrent requests per adapter.
    pub max_in_flight: usize,
    /// An undelivered transition older than this is parked instead of retried.
    pub retry_horizon: Duration,
    /// Attempts failing this long raise "incident delivery failing" (parked: at once).
    pub delivery_failing_after: Duration,
}

impl Default for Dispatch {
    fn default() -> Self {
        Dispatch {
            request_timeout: Duration::from_secs(10),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            max_in_flight: 4,
            retry_horizon: Duration::from_secs(12 * 3600),
            delivery_failing_after: Duration::from_secs(60),
        }
    }
}

/// Least access log retention, months (PCI DSS v4.0 10.5.1: audit log history for at least
/// 12 months).
pub const MIN_ACCESS_LOG_RETENTION_MONTHS: u32 = 12;
/// Least visitor log retention, months (PCI DSS v4.0 9.3.4: visitor log for at least three
/// months).
pub const MIN_VISITOR_LOG_RETENTION_MONTHS: u32 = 3;

/// `[access]` of `dcguard.toml`: daemon-wide reconciliation thresholds and retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessSettings {
    /// Out-of-order tolerance of live reconciliation.
    pub settle: Duration,
    /// A reader clock further than this from the receive time is `clock_skew`.
    pub max_clock_skew: Duration,
    /// `repeated_denied`: this many denials ...
    pub repeated_denied_count: usize,
    /// ... within this window.
    pub repeated_denied_window: Duration,
    /// Staff count as on shift this long before and after their shift.
    pub shift_grace: Duration,
    /// Months the access log (events, findings, reviews, audit chain) is kept.
    pub access_log_retention_months: u32,
    /// Months the visitor log (tickets with history, visit reports) is kept after the visit.
    pub visitor_log_retention_months: u32,
}

impl Default for AccessSettings {
    fn default() -> Self {
        AccessSettings {
            settle: Duration::from_secs(10),
            max_clock_skew: Duration::from_secs(300),
            repeated_denied_count: 3,
            repeated_denied_window: Duration::from_secs(300),
            shift_grace: Duration::from_secs(3600),
            access_log_retention_months: 12,
            visitor_log_retention_months: 12,
        }
    }
}

/// `[modbus]`: how the poller talks to Modbus endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModbusPolling {
    /// Longest wait for one response.
    pub request_timeout: Duration,
    /// Longest wait for a TCP connection.
    pub connect_timeout: Duration,
    /// First wait after a failed connection or a unit that stopped answering.
    pub backoff_min: Duration,
    /// Longest such wait.
    pub backoff_max: Duration,
    /// Retries after exception 0x06 (busy).
    pub busy_retries: u32,
    /// Wait before each busy retry.
    pub busy_retry_delay: Duration,
    /// Settings of every endpoint a site does not list in `[[modbus_endpoints]]`.
    pub endpoint: EndpointSettings,
}

impl Default for ModbusPolling {
    /// 1 s per request, 3 s per connect, backoff 1 s to 30 s, 3 busy retries 100 ms
    /// apart, and [`EndpointSettings::default`].
    fn default() -> Self {
        ModbusPolling {
            request_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(3),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            busy_retries: 3,
            busy_retry_delay: Duration::from_millis(100),
            endpoint: EndpointSettings::default(),
        }
    }
}

/// How the poller treats one Modbus endpoint (a device or a gateway at `IP:PORT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointSettings {
    /// Connections to the endpoint, at least 1. Each carries one request at a time; the
    /// units behind the endpoint are spread over them.
    pub max_connections: u8,
    /// Quiet time between two requests on a connection.
    pub pause_between_requests: Duration,
    /// Close the connection after every scan.
    pub close_after_scan: bool,
    /// Longest wait for one response; `None`: `[modbus] request_timeout_ms`.
    pub request_timeout: Option<Duration>,
}

impl Default for EndpointSettings {
    /// One connection, no pause, kept open, the daemon-wide request timeout.
    fn default() -> Self {
        EndpointSettings {
            max_connections: 1,
            pause_between_requests: Duration::ZERO,
            close_after_scan: false,
            request_timeout: None,
        }
    }
}

/// A site's `[[modbus_endpoints]]` entry: what it changes of `[modbus]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointOverrides {
    /// `max_connections`.
    pub max_connections: Option<u8>,
    /// `pause_between_requests_ms`.
    pub pause_between_requests: Option<Duration>,
    /// `close_after_scan`.
    pub close_after_scan: Option<bool>,
    /// `request_timeout_ms`.
    pub request_timeout: Option<Duration>,
}

impl EndpointOverrides {
    /// `base` with these overrides applied.
    pub fn apply(&self, base: EndpointSettings) -> EndpointSettings {
        EndpointSettings {
            max_connections: self.max_connections.unwrap_or(base.max_connections),
            pause_between_requests: self
                .pause_between_requests
                .unwrap_or(base.pause_between_requests),
            close_after_scan: self.close_after_scan.unwrap_or(base.close_after_scan),
            request_timeout: self.request_timeout.or(base.request_timeout),
        }
    }
}

/// `[auth]`: where the hashed bearer tokens by role are.
#[derive(Debug, Clone, PartialEq)]
pub struct Auth {
    /// The tokens file or variable.
    pub tokens: SecretRef,
    /// Who may read `/metrics`.
    pub metrics_access: MetricsAccess,
}

/// `[auth] metrics_access`: who may read `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MetricsAccess {
    /// Any client connected from a loopback address, without a token (the default: the
    /// Prometheus on the same host, or a reverse proxy that adds its own access control).
    #[default]
    Loopback,
    /// A bearer token of a role the access matrix allows, from any address.
    Token,
}

/// Redundancy of a plant (UPS, gensets, cooling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum Redundancy {
    /// No redundant unit.
    N,
    /// One spare unit.
    #[serde(rename = "N+1")]
    NPlus1,
    /// Two complete systems.
    #[serde(rename = "2N")]
    TwoN,
}

/// UPS battery chemistry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatteryKind {
    /// Valve-regulated lead-acid.
    Vrla,
    /// Lithium-ion.
    Lithium,
}

/// Genset rating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GensetRating {
    /// Prime rated: unlimited hours at variable load.
    Prime,
    /// Standby rated: emergency use only.
    Standby,
}

/// Cooling technology.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CoolingKind {
    /// Room precision air conditioners.
    Pac,
    /// In-row precision air conditioners.
    InrowPac,
}

/// `[site.ups]`.
#[derive(Debug, Clone, PartialEq)]
pub struct UpsFacts {
    /// Design bridge time; runtime left below it is an alarm.
    pub backup_time: Duration,
    /// Battery chemistry.
    pub battery: BatteryKind,
    /// Redundancy.
    pub redundancy: Redundancy,
}

/// `[site.genset]`.
#[derive(Debug, Clone, PartialEq)]
pub struct GensetFacts {
    /// Rating.
    pub rating: GensetRating,
    /// Redundancy.
    pub redundancy: Redundancy,
    /// Fuel autonomy without refuelling, hours.
    pub autonomy_min_h: f64,
    /// Load test every this many months.
    pub load_test_interval_months: u32,
}

/// `[site.cooling]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CoolingFacts {
    /// Technology.
    pub kind: CoolingKind,
    /// Redundancy.
    pub redundancy: Redundancy,
}

/// Temperature and humidity limits of a room.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClimateLimits {
    /// Lowest allowed temperature, degC.
    pub temperature_min_c: f64,
    /// Highest allowed temperature, degC.
    pub temperature_max_c: f64,
    /// Lowest allowed relative humidity, %RH.
    pub humidity_min_pct: f64,
    /// Highest allowed relative humidity, %RH.
    pub humidity_max_pct: f64,
}

/// Rack power limit per class, kW, each feed rated at it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RackLimits {
    /// Storage racks.
    pub storage_kw: f64,
    /// Server racks.
    pub server_kw: f64,
    /// Network racks.
    pub network_kw: f64,
}

impl RackLimits {
    /// The limit of a class.
    pub fn of(&self, class: RackClass) -> f64 {
        match class {
            RackClass::Storage => self.storage_kw,
            RackClass::Server => self.server_kw,
            RackClass::Network => self.network_kw,
        }
    }
}

/// Third-party escort rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscortRule {
    /// Third parties must be accompanied by their unit's PIC.
    Required,
    /// May be accompanied: an unescorted entry is an info finding.
    Optional,
}

/// Reader direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Passing the reader enters its room.
    Entry,
    /// Passing the reader leaves its room.
    Exit,
}

/// Role of site staff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StaffRole {
    /// Operating control room shift.
    ControlRoom,
    /// Technical escort officer.
    TechnicalEscort,
    /// Security guard.
    Security,
}

/// A biometric/RFID reader.
#[derive(Debug, Clone, PartialEq)]
pub struct Reader {
    /// Device serial number as reported by the reader.
    pub serial: String,
    /// The room it guards.
    pub room: String,
    /// Entry or exit.
    pub direction: Direction,
}

/// Site staff who need no ticket.
#[derive(Debug, Clone, PartialEq)]
pub struct Staff {
    /// Staff id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Role.
    pub role: StaffRole,
    /// Credentials on the readers.
    pub credentials: Vec<String>,
    /// Shift, site local time, when given.
    pub shift: Option<(NaiveTime, NaiveTime)>,
}

/// `[access]`: service ITSM.3.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessPolicy {
    /// Third-party escort rule.
    pub third_party_escort: EscortRule,
    /// Tickets must name destination rooms.
    pub destination_room_required: bool,
    /// A technical escort officer inside during every visit.
    pub technical_escort_required: bool,
    /// The PIC must pass the same reader within this of the third party.
    pub escort_max_gap: Duration,
    /// Entry allowed this long before the ticket window.
    pub entry_grace_before: Duration,
    /// Still inside this long after the window: overstay.
    pub overstay_grace: Duration,
    /// Readers.
    pub readers: Vec<Reader>,
    /// Staff roster.
    pub staff: Vec<Staff>,
    /// Security-incident priority per finding rule (rule name -> priority, `None`: no
    /// incident); rules not listed take the default of their finding's severity.
    pub incidents: BTreeMap<String, Option<Priority>>,
}

/// Room kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomKind {
    /// Data hall (white space).
    DataHall,
    /// UPS room.
    UpsRoom,
    /// Battery room.
    BatteryRoom,
    /// Genset room.
    GensetRoom,
    /// Electrical room (switchgear, ATS).
    ElectricalRoom,
    /// Mantrap before the data center area.
    Mantrap,
    /// Operating control room.
    ControlRoom,
    /// Fuel store.
    FuelStore,
    /// Corridor.
    Corridor,
}

/// A room.
#[derive(Debug, Clone, PartialEq)]
pub struct Room {
    /// Room id, unique in the site.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Kind.
    pub kind: RoomKind,
    /// Resolved limits: data halls always (site defaults, overridden per room); other
    /// rooms only when the room file sets any limit.
    pub climate: Option<ClimateLimits>,
}

/// Rack class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RackClass {
    /// Storage.
    Storage,
    /// Server.
    Server,
    /// Network.
    Network,
}

/// A rack, expanded from its range.
#[derive(Debug, Clone, PartialEq)]
pub struct Rack {
    /// Rack id, e.g. `A01`.
    pub id: String,
    /// Room id.
    pub room: String,
    /// Class.
    pub class: RackClass,
    /// Limit, kW: the rack's override, else the site's class limit. Each feed is rated
    /// at it and the sum of A and B must stay at or under it.
    pub limit_kw: f64,
}

/// Utility or rack feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum Feed {
    /// Feed A.
    A,
    /// Feed B.
    B,
}

/// Modbus register table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegisterKind {
    /// Holding registers (function 3).
    Holding,
    /// Input registers (function 4).
    Input,
    /// Coils (function 1).
    Coil,
    /// Discrete inputs (function 2).
    Discrete,
}

impl RegisterKind {
    /// True for coils and discrete inputs (one bit per address).
    pub fn is_bit_table(self) -> bool {
        matches!(self, RegisterKind::Coil | RegisterKind::Discrete)
    }

    /// The TOML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RegisterKind::Holding => "holding",
            RegisterKind::Input => "input",
            RegisterKind::Coil => "coil",
            RegisterKind::Discrete => "discrete",
        }
    }
}

/// How a point's value is encoded in its register(s).
///
/// Widths in registers: `U16`/`I16`/`Bit` 1; `U32`/`I32`/`F32` 2; `U64`/`I64`/`F64` 4;
/// `String` `length`; `Bool` is one coil or discrete input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// Unsigned 16-bit.
    U16,
    /// Signed 16-bit, two's complement.
    I16,
    /// Unsigned 32-bit.
    U32,
    /// Signed 32-bit.
    I32,
    /// Unsigned 64-bit.
    U64,
    /// Signed 64-bit.
    I64,
    /// IEEE 754 single.
    F32,
    /// IEEE 754 double.
    F64,
    /// One coil or discrete input.
    Bool,
    /// A bit field in one register: `count` bits starting at bit `bit` (0 = lowest),
    /// read as an unsigned integer. `bit + count <= 16`.
    Bit {
        /// Lowest bit, 0..=15.
        bit: u8,
        /// Number of bits, 1..=16 (4 for a DSE alarm nibble).
        count: u8,
    },
    /// ASCII text, two characters per register, trailing NUL and spaces trimmed.
    String {
        /// Registers, at least 1.
        length: u16,
    },
}

impl DataType {
    /// Width in registers (or in bits for `Bool`).
    pub fn width(self) -> u32 {
        match self {
            DataType::U16 | DataType::I16 | DataType::Bit { .. } | DataType::Bool => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
            DataType::String { length } => u32::from(length),
        }
    }

    /// True for types carrying an integer (enum names apply to them).
    pub fn is_integer(self) -> bool {
        matches!(
            self,
            DataType::U16
                | DataType::I16
                | DataType::U32
                | DataType::I32
                | DataType::U64
                | DataType::I64
                | DataType::Bit { .. }
        )
    }

    /// The TOML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::U16 => "u16",
            DataType::I16 => "i16",
            DataType::U32 => "u32",
            DataType::I32 => "i32",
            DataType::U64 => "u64",
            DataType::I64 => "i64",
            DataType::F32 => "f32",
            DataType::F64 => "f64",
            DataType::Bool => "bool",
            DataType::Bit { .. } => "bit",
            DataType::String { .. } => "string",
        }
    }
}

/// Word and byte order of a multi-byte value. With registers W0, W1, ... as transmitted
/// (each high byte first), the value's bytes, most significant first, are:
///
/// | order | bytes | common name |
/// |---|---|---|
/// | `Abcd` | W0.hi W0.lo W1.hi W1.lo ... | big endian |
/// | `Cdab` | ... W1.hi W1.lo W0.hi W0.lo | word swap |
/// | `Badc` | W0.lo W0.hi W1.lo W1.hi ... | byte swap |
/// | `Dcba` | ... W1.lo W1.hi W0.lo W0.hi | little endian |
///
/// One-register types (and strings, per register) accept `Abcd` and `Badc` only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
pub enum WordOrder {
    /// Big endian.
    #[default]
    #[serde(rename = "ABCD")]
    Abcd,
    /// Fully reversed (little endian).
    #[serde(rename = "DCBA")]
    Dcba,
    /// Bytes swapped inside each register.
    #[serde(rename = "BADC")]
    Badc,
    /// Register order reversed.
    #[serde(rename = "CDAB")]
    Cdab,
}

impl WordOrder {
    /// The TOML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            WordOrder::Abcd => "ABCD",
            WordOrder::Dcba => "DCBA",
            WordOrder::Badc => "BADC",
            WordOrder::Cdab => "CDAB",
        }
    }

    /// True when the order keeps registers in transmitted order (usable on one register).
    pub fn keeps_word_order(self) -> bool {
        matches!(self, WordOrder::Abcd | WordOrder::Badc)
    }
}

/// Poll class of a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PollClass {
    /// Status words.
    Fast,
    /// Measurements.
    #[default]
    Normal,
    /// Energy counters, run hours, strings.
    Slow,
}

/// Poll interval per class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollIntervals {
    /// `fast`.
    pub fast: Duration,
    /// `normal`.
    pub normal: Duration,
    /// `slow`.
    pub slow: Duration,
}

impl PollIntervals {
    /// Interval of a class.
    pub fn of(&self, class: PollClass) -> Duration {
        match class {
            PollClass::Fast => self.fast,
            PollClass::Normal => self.normal,
            PollClass::Slow => self.slow,
        }
    }
}

/// A raw value that is not data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sentinel {
    /// Raw unsigned register value(s), compared before sign, scale and offset.
    pub raw: u64,
    /// Why the value is bad, e.g. "transducer fault".
    pub reason: String,
}

/// A range of a register table never to request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisterRange {
    /// Table.
    pub register: RegisterKind,
    /// First address.
    pub start: u16,
    /// Number of addresses, at least 1.
    pub count: u16,
}

impl RegisterRange {
    /// True when `[start, start + count)` intersects this range.
    pub fn overlaps(&self, register: RegisterKind, start: u32, count: u32) -> bool {
        let (a0, a1) = (
            u32::from(self.start),
            u32::from(self.start) + u32::from(self.count),
        );
        register == self.register && start < a1 && a0 < start + count
    }
}

/// One point of a Modbus profile.
#[derive(Debug, Clone, PartialEq)]
pub struct ModbusPoint {
    /// Name, unique in the profile.
    pub name: String,
    /// Meaning.
    pub role: Role,
    /// Register table.
    pub register: RegisterKind,
    /// 0-based PDU address.
    pub address: u16,
    /// Encoding.
    pub data_type: DataType,
    /// Word/byte order (fits the width).
    pub order: WordOrder,
    /// engineering = raw * scale + offset; never 0.
    pub scale: f64,
    /// See `scale`.
    pub offset: f64,
    /// Engineering unit.
    pub unit: Unit,
    /// Poll class.
    pub class: PollClass,
    /// Names of integer values.
    pub enum_names: BTreeMap<i64, String>,
    /// Raw values that are not data.
    pub sentinels: Vec<Sentinel>,
    /// Plausibility range in engineering units.
    pub valid_min: Option<f64>,
    /// See `valid_min`.
    pub valid_max: Option<f64>,
}

/// Read planning limits of a Modbus profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// At most this many registers per request (1..=125).
    pub max_registers_per_read: u16,
    /// At most this many bits per request (1..=2000).
    pub max_bits_per_read: u16,
    /// Gaps up to this many registers may be read and discarded.
    pub max_gap_registers: u16,
}

/// A Modbus register map.
#[derive(Debug, Clone, PartialEq)]
pub struct ModbusProfile {
    /// Request limits.
    pub limits: ReadLimits,
    /// Ranges never requested.
    pub never_read: Vec<RegisterRange>,
    /// Default interval per class.
    pub poll: PollIntervals,
    /// Points.
    pub points: Vec<ModbusPoint>,
}

/// Value type of an MQTT point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MqttValueType {
    /// A JSON number.
    Number,
    /// A JSON boolean.
    Bool,
}

/// One point of an MQTT profile.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttPoint {
    /// Name, unique in the profile.
    pub name: String,
    /// Meaning.
    pub role: Role,
    /// Dot path into the JSON payload; `"."` is the payload itself.
    pub json: String,
    /// JSON type.
    pub value_type: MqttValueType,
    /// Unit.
    pub unit: Unit,
    /// Plausibility range.
    pub valid_min: Option<f64>,
    /// See `valid_min`.
    pub valid_max: Option<f64>,
}

/// An MQTT payload map.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttProfile {
    /// Topic pattern; `{site}`, `{room}`, `{device}` and `+` match one level, `#` the rest.
    pub topic: String,
    /// Subscription QoS, 0..=2.
    pub qos: u8,
    /// Larger payloads are rejected.
    pub max_payload_bytes: usize,
    /// JSON field with a per-sensor sequence number.
    pub sequence_json: Option<String>,
    /// Expected publish interval (staleness).
    pub interval: Duration,
    /// Points.
    pub points: Vec<MqttPoint>,
}

impl MqttProfile {
    /// True when a concrete `topic` matches the pattern.
    pub fn topic_matches(&self, topic: &str) -> bool {
        topic_matches(&self.topic, topic)
    }
}

/// Matches a concrete topic against a pattern (`{name}` or `+`: one level, `#`: the rest).
pub fn topic_matches(pattern: &str, topic: &str) -> bool {
    let mut t = topic.split('/');
    for p in pattern.split('/') {
        if p == "#" {
            return true;
        }
        let Some(level) = t.next() else {
            return false;
        };
        let wildcard = p == "+" || (p.starts_with('{') && p.ends_with('}'));
        if wildcard {
            if level.is_empty() {
                return false;
            }
        } else if p != level {
            return false;
        }
    }
    t.next().is_none()
}

/// Transport-specific part of a profile.
#[derive(Debug, Clone, PartialEq)]
pub enum ProfileTransport {
    /// Register map.
    Modbus(ModbusProfile),
    /// Payload map.
    Mqtt(MqttProfile),
}

/// Profile transport, as written in `[profile] transport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// Modbus TCP.
    Modbus,
    /// MQTT.
    Mqtt,
}

/// A device profile, shared by devices through `Arc`.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Profile id, unique across `profiles/`.
    pub id: String,
    /// Device kind.
    pub kind: DeviceKind,
    /// Which real device family the map imitates.
    pub imitates: String,
    /// The map.
    pub transport: ProfileTransport,
}

impl Profile {
    /// Number of points.
    pub fn point_count(&self) -> usize {
        match &self.transport {
            ProfileTransport::Modbus(m) => m.points.len(),
            ProfileTransport::Mqtt(m) => m.points.len(),
        }
    }

    /// Transport.
    pub fn transport_kind(&self) -> Transport {
        match &self.transport {
            ProfileTransport::Modbus(_) => Transport::Modbus,
            ProfileTransport::Mqtt(_) => Transport::Mqtt,
        }
    }
}

/// How the daemon reaches a device.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceTransport {
    /// Modbus TCP.
    Modbus {
        /// Device or gateway.
        endpoint: SocketAddr,
        /// Unit id.
        unit: u8,
        /// Interval per class (profile `[poll]`, `poll_interval_secs` overriding normal).
        poll: PollIntervals,
        /// `modbus.request_timeout_ms` of the device, overriding its endpoint's.
        request_timeout: Option<Duration>,
    },
    /// MQTT.
    Mqtt {
        /// Broker id.
        broker: String,
        /// Concrete topic.
        topic: String,
    },
}

/// Optional facts about a device, by kind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceFacts {
    /// UPS, genset, PAC: rated power (cooling capacity for a PAC), kW.
    pub rated_kw: Option<f64>,
    /// Genset: usable fuel, L.
    pub fuel_tank_l: Option<f64>,
    /// Genset: consumption at rated load, L/h.
    pub fuel_l_per_h_full: Option<f64>,
    /// Utility meter or rack meter: which feed.
    pub feed: Option<Feed>,
}

/// A device, with its profile resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    /// Id, unique in the site.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Room id.
    pub room: String,
    /// Rack id, for rack meters and rack-mounted sensors.
    pub rack: Option<String>,
    /// Register or payload map.
    pub profile: Arc<Profile>,
    /// Address.
    pub transport: DeviceTransport,
    /// Facts by kind.
    pub facts: DeviceFacts,
}

impl Device {
    /// Kind, from the profile.
    pub fn kind(&self) -> DeviceKind {
        self.profile.kind
    }
}

/// A site with everything in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    /// Site id (`dc`, `smart-dc`, `drc`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Building.
    pub building: String,
    /// Site time zone.
    pub time_zone: Tz,
    /// Maximum rack positions.
    pub rack_positions: u32,
    /// Floor load limit.
    pub floor_load_max_kg_m2: f64,
    /// Utility feeds.
    pub utility_feeds: u32,
    /// The hall's clean agent.
    pub fire_suppression: String,
    /// UPS facts.
    pub ups: UpsFacts,
    /// Genset facts.
    pub genset: GensetFacts,
    /// Cooling facts.
    pub cooling: CoolingFacts,
    /// Data hall defaults.
    pub data_hall: ClimateLimits,
    /// Rack limits per class.
    pub rack_limits: RackLimits,
    /// Access policy.
    pub access: AccessPolicy,
    /// Rooms.
    pub rooms: Vec<Room>,
    /// Racks, expanded.
    pub racks: Vec<Rack>,
    /// Devices, rack meters expanded.
    pub devices: Vec<Device>,
    /// `[[modbus_endpoints]]`: per-endpoint overrides of `[modbus]`.
    pub modbus_endpoints: BTreeMap<SocketAddr, EndpointOverrides>,
    /// `[[rule_overrides]]`: the catalogue's defaults changed for this site or a part of it.
    pub rule_overrides: Vec<crate::rules::overrides::RuleOverride>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_patterns() {
        let p = "dcguard/{site}/{room}/th/{device}";
        assert!(topic_matches(p, "dcguard/dc/dh1/th/th-1"));
        assert!(!topic_matches(p, "dcguard/dc/dh1/th"));
        assert!(!topic_matches(p, "dcguard/dc/dh1/leak/th-1"));
        assert!(!topic_matches(p, "dcguard/dc/dh1/th/th-1/x"));
        assert!(topic_matches("a/#", "a/b/c"));
        assert!(topic_matches("a/+/c", "a/b/c"));
    }

    #[test]
    fn data_type_widths() {
        assert_eq!(DataType::F64.width(), 4);
        assert_eq!(DataType::String { length: 8 }.width(), 8);
        assert_eq!(DataType::Bit { bit: 4, count: 4 }.width(), 1);
    }
}
