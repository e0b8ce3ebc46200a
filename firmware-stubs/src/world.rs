//! The simulated physical world of one site: rooms, racks, power chain, cooling, fire, water.
//!
//! [`World`] holds the state of one site and advances it with [`World::step`]. The Modbus
//! servers and the MQTT publisher read it through [`World::point_value`] (by the point's
//! `role`, see `docs/configuration.md`), scenarios change it through [`World::apply`].
//! Everything random comes from the seed: per-device parameters (base loads, offsets) from
//! a hash of `(seed, id)`, so adding a device does not change the others; step noise from a
//! ChaCha stream consumed in a fixed order. Same seed + same steps + same actions = same
//! values. Steps longer than 1 s are integrated in 1 s sub-steps.
//!
//! # Model and constants
//!
//! **Racks.** Base IT load per rack is 30-70 % of its limit (site `rack_limit_kw` by class,
//! or the rack's own `limit_kw`, default 5 kW), split 45-55 % onto feed A, rest on B. A
//! slow mean-reverting drift (sigma 2 % of base, time constant 15 min) and a per-feed
//! noise of +-0.5 % ride on it. A rack meter that `fail`s is the feed's breaker tripping:
//! the rack's whole load moves to the other feed. Meter voltage 230 V +-3 V (seeded),
//! power factor 0.95-0.99 (seeded).
//!
//! **Data hall air** (lumped model). `C dT/dt = Q_it + Q_env - Q_cool`, with
//! `C = 500 kJ/K + 50 kJ/K per rack` (hall air, about 12 m3 per rack position, plus the
//! share of IT equipment and raised-floor mass that follows the air within minutes),
//! `Q_env = 0.1 kW/K per rack x (26 degC - T)` (exchange with the surrounding building).
//! PACs control to a 22 degC setpoint: they deliver
//! `Q_cool = clamp(Q_it + Q_env + C (T - 22) / 120 s, 0, running capacity)`. With enough
//! capacity the hall sits at 22 degC; with a deficit D it warms at D / C: a 22-rack hall
//! (1.6 MJ/K) at ~60 kW warms ~0.3 degC/min when 13 % short and ~2.2 degC/min with no
//! cooling at all, which is the range seen in real cooling losses. Rooms without PACs are
//! held at their base temperature by building cooling.
//!
//! **PACs.** Capacity `rated_kw`, else 1.3 x the hall's initial IT load / duty units,
//! rounded up to 5 kW. N+1: in each room with two or more PACs, the last by id starts in
//! standby; when fewer units than the duty count are running (a failure), the first
//! standby unit starts and cools after 60 s. A restored unit returns as standby. PACs are
//! not on UPS: they stop with the mechanical bus and cool again 15 s after it returns.
//! Electrical draw `Q_cool / 3.0` (COP) + 2 % of capacity for fans. Return air = hall +
//! 5 degC, supply = return - 12 degC x the unit's load fraction.
//!
//! **Humidity.** Each room has a seeded base of 42-50 %RH and a slow random walk. The lost
//! cooling fraction f (the larger of the heat deficit and the share of the duty capacity
//! not running) moves the target up by 20 %RH x f (no
//! dehumidification, humid tropical infiltration) with a 10 min time constant; recovery
//! runs with 20 min. Dew point and the PAC return humidity come from the Magnus formula.
//!
//! **Utility and ATS.** Feeds A and B are up unless cut (or their utility meter failed).
//! The ATS prefers A, then B; with both lost it opens. Gensets get a start signal 10 s
//! after both feeds are lost, crank 4 s, are available 3 s after firing (~17 s from loss
//! to load, NFPA 110 Type 10 + controller delay), then the ATS transfers to genset. When a
//! feed returns and stays 30 s, the ATS retransfers; the gensets cool down unloaded 60 s and
//! stop. A failed ATS sticks where it is.
//!
//! **UPS modules.** The IT load is shared by every module with an output. A module outputs
//! `normal` while its source is live, `battery` without source while charge remains,
//! `bypass` when failed with a live source, `none` otherwise. Battery: runtime at 100 % load
//! from full charge = site `backup_time_min` (default 10); discharge rate per second =
//! `max(load fraction, 0.02)^1.15 / (backup_time x 60)` (Peukert-like: higher loads drain
//! more than proportionally); estimated runtime = charge x backup / load^1.15 (capped at
//! 999 min). Recharge to full in 8 h (VRLA) or 2 h (lithium). Battery string voltage:
//! float 545 V on mains; on battery 420 + 100 x charge - 20 x load fraction. Status `low`
//! below 20 % charge or 2 min runtime, `depleted` at 0. Efficiency 0.95.
//!
//! **Gensets.** Capacity `rated_kw`, else 1.3 x the initial site load / (units - 1), rounded
//! up to 50 kW. Fuel at full load `fuel_l_per_h_full`, else 0.27 L/kWh x rating; tank
//! `fuel_tank_l`, else site autonomy (default 12 h) x full-load rate. Consumption follows the
//! Willans line of a diesel: `rate = full x (0.1 + 0.9 x load fraction)`, so fuel burnt
//! grows in proportion to load above the 10 % no-load consumption. Load is shared equally by
//! the available gensets while the ATS is on genset (site load = IT / 0.95 + PAC draw).
//! Coolant 40 degC stopped (jacket heater), approaching 80 + 10 x load degC running (4 min
//! time constant); oil pressure 0 stopped, ~400 kPa at 1500 rpm; starter battery 27.2 V,
//! 22 V while cranking, 27.8 V running. DSE-style alarm nibbles: 1 (not active), 2 warning
//! (fuel < 25 %, coolant > 95 degC, starter battery < 23 V), 3 shutdown (fail to start when
//! failed, fuel < 10 %, coolant > 105 degC). A genset without fuel stops.
//!
//! **VESDA.** Background smoke 0.005-0.015 %obs/m (seeded) with small noise; the `smoke`
//! action ramps a level; reported = max(ramp, background). Simulator thresholds Alert 0.08,
//! Action 0.14, Fire 1 0.20, Fire 2 2.0 %obs/m (no delays). Airflow 100 % +-2; a failed
//! detector reports a fault and 60 % airflow. Heartbeats count seconds and freeze on failure.
//!
//! **Sensors.** Env sensors read the room air with a seeded offset (+-0.8 degC, +-3 %RH)
//! and AR(1) noise (~0.1 degC, ~0.5 %RH). Battery 60-100 %, draining 0.001 %/min. Leak
//! sensors report what `leak` actions set.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::scenario::{Action, ScenarioValue};
use crate::spec::{DeviceSpec, PointSpec, SiteSpec, Transport};

/// A simulated engineering value, before encoding into registers or JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum SimValue {
    Number(f64),
    Bool(bool),
    Text(String),
    /// Raw register value(s) to serve as they are, bypassing scale and offset: used for
    /// sentinels (e.g. 0xFFFC "transducer fault") and for exact-word tests.
    Raw(u64),
}

impl SimValue {
    /// The value as a number, when it is one (bools as 0/1).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            SimValue::Number(n) => Some(*n),
            SimValue::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            SimValue::Raw(r) => Some(*r as f64),
            SimValue::Text(_) => None,
        }
    }
}

/// How a device currently misbehaves on the wire (set by scenario actions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceFault {
    #[default]
    None,
    /// Never answers (requests time out; the connection stays open).
    Silent,
    /// Answers every request with this Modbus exception code (0x02, 0x06, 0x0B, ...).
    Exception(u8),
    /// Answers correctly, but only after this delay.
    Delay(Duration),
    /// Answers with a response frame damaged on the wire (see [`WireCorruption`]).
    Corrupt(WireCorruption),
}

/// How a response frame is damaged on its way out (issue 3: the poller must reject such
/// frames, count them, and never take a value from them). Every kind keeps the frame's
/// length, so the client reads a whole frame and has to notice the damage itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireCorruption {
    /// The MBAP transaction id is not the request's (a stray or late reply).
    TransactionId,
    /// The MBAP unit id is not the request's.
    Unit,
    /// The function code is not the request's (nor its exception form).
    FunctionCode,
    /// The MBAP protocol id is not 0.
    ProtocolId,
    /// The PDU's byte count disagrees with the frame length.
    ByteCount,
    /// The MBAP length field claims a frame longer than Modbus allows (> 260 bytes).
    Length,
}

/// The world shared by the clock task, the Modbus servers and the MQTT publisher.
pub type SharedWorld = Arc<Mutex<World>>;

// ---- constants (see the module doc) ----

const MAX_SUBSTEP_SECS: f64 = 1.0;
const DEFAULT_RACK_LIMIT_KW: f64 = 5.0;
const RACK_BASE_MIN: f64 = 0.30;
const RACK_BASE_MAX: f64 = 0.70;
const RACK_DRIFT_SIGMA: f64 = 0.02;
const RACK_DRIFT_TAU_SECS: f64 = 900.0;
const RACK_NOISE: f64 = 0.005;
const NOMINAL_V: f64 = 230.0;
const NOMINAL_HZ: f64 = 50.0;

const HALL_SETPOINT_C: f64 = 22.0;
const ROOM_BASE_C: f64 = 24.0;
const BUILDING_C: f64 = 26.0;
const HALL_C_BASE_KJ_PER_K: f64 = 500.0;
const HALL_C_PER_RACK_KJ_PER_K: f64 = 50.0;
const ENVELOPE_UA_KW_PER_K_PER_RACK: f64 = 0.1;
const PULLDOWN_TAU_SECS: f64 = 120.0;
const ROOM_RELAX_TAU_SECS: f64 = 600.0;

const PAC_MARGIN: f64 = 1.3;
const PAC_STANDBY_START_SECS: f64 = 60.0;
const PAC_RESTART_SECS: f64 = 15.0;
const PAC_COP: f64 = 3.0;
const PAC_FAN_FRACTION: f64 = 0.02;
const PAC_RETURN_RISE_C: f64 = 5.0;
const PAC_COIL_DELTA_C: f64 = 12.0;

const RH_RISE_FULL_LOSS_PCT: f64 = 20.0;
const RH_TAU_RISE_SECS: f64 = 600.0;
const RH_TAU_RECOVER_SECS: f64 = 1200.0;

const GENSET_START_DELAY_SECS: f64 = 10.0;
const GENSET_CRANK_SECS: f64 = 4.0;
const GENSET_WARMUP_SECS: f64 = 3.0;
const ATS_RETRANSFER_SECS: f64 = 30.0;
const GENSET_COOLDOWN_SECS: f64 = 60.0;
const GENSET_MARGIN: f64 = 1.3;
const GENSET_L_PER_KWH: f64 = 0.27;
const GENSET_IDLE_FUEL_FRACTION: f64 = 0.1;
const GENSET_RPM: f64 = 1500.0;
const GENSET_COOLANT_TAU_SECS: f64 = 240.0;
const DEFAULT_AUTONOMY_H: f64 = 12.0;

const UPS_EFFICIENCY: f64 = 0.95;
const UPS_PEUKERT: f64 = 1.15;
const UPS_MIN_LOAD_FRACTION: f64 = 0.02;
const UPS_DEFAULT_BACKUP_MIN: f64 = 10.0;
const UPS_RECHARGE_VRLA_SECS: f64 = 8.0 * 3600.0;
const UPS_RECHARGE_LITHIUM_SECS: f64 = 2.0 * 3600.0;
const UPS_LOW_CHARGE: f64 = 0.20;
const UPS_LOW_RUNTIME_MIN: f64 = 2.0;
const UPS_MAX_RUNTIME_MIN: f64 = 999.0;

/// Simulator VESDA thresholds, %obs/m: Alert, Action, Fire 1, Fire 2.
pub const VESDA_THRESHOLDS: [f64; 4] = [0.08, 0.14, 0.20, 2.0];

// ---- state ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ups,
    Pac,
    Genset,
    Vesda,
    RackMeter,
    UtilityMeter,
    Ats,
    EnvSensor,
    LeakSensor,
    Other,
}

impl Kind {
    fn of(device: &DeviceSpec) -> Kind {
        match device.profile.profile.kind.as_str() {
            "ups" => Kind::Ups,
            "pac" => Kind::Pac,
            "genset" => Kind::Genset,
            "vesda" => Kind::Vesda,
            "rack_meter" => Kind::RackMeter,
            "utility_meter" => Kind::UtilityMeter,
            "ats" => Kind::Ats,
            "env_sensor" => Kind::EnvSensor,
            "leak_sensor" => Kind::LeakSensor,
            _ => Kind::Other,
        }
    }
}

#[derive(Debug, Clone)]
struct DeviceState {
    kind: Kind,
    failed: bool,
    wire: DeviceFault,
    /// Requests the wire fault still applies to; `None`: until cleared.
    wire_remaining: Option<u32>,
    endpoint: Option<SocketAddr>,
    /// Index into the kind's own table (racks for meters, pacs, upses, ...).
    slot: usize,
    /// Seconds counted while not failed (heartbeats).
    alive_secs: f64,
    /// Seeded 0..1 for per-device variation of reported values.
    jitter: f64,
}

#[derive(Debug, Clone)]
struct Room {
    id: String,
    hall: bool,
    temp_c: f64,
    rh_pct: f64,
    base_rh: f64,
    rh_walk: f64,
    racks: Vec<usize>,
    pacs: Vec<usize>,
    duty_pacs: usize,
    it_kw: f64,
}

#[derive(Debug, Clone)]
struct Rack {
    base_kw: f64,
    share_a: f64,
    drift: f64,
    noise: [f64; 2],
    feed_up: [bool; 2],
    energy_kwh: [f64; 2],
    meter_v: [f64; 2],
    meter_pf: [f64; 2],
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum PacState {
    On,
    Standby,
    Starting(f64),
    Failed,
}

#[derive(Debug, Clone)]
struct Pac {
    rated_kw: f64,
    state: PacState,
    cooling_kw: f64,
    run_hours: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UpsOutput {
    Normal,
    Battery,
    Bypass,
    None,
}

#[derive(Debug, Clone)]
struct Ups {
    room: Option<usize>,
    rated_kw: f64,
    charge: f64,
    output: UpsOutput,
    load_kw: f64,
    on_battery_secs: f64,
    energy_kwh: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Engine {
    Stopped,
    Cranking(f64),
    Running(f64),
    CoolingDown(f64),
    Failed,
}

#[derive(Debug, Clone)]
struct Genset {
    rated_kw: f64,
    fuel_tank_l: f64,
    fuel_l: f64,
    full_l_per_h: f64,
    engine: Engine,
    available: bool,
    breaker_closed: bool,
    load_kw: f64,
    coolant_c: f64,
    run_hours: f64,
    starts: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AtsPosition {
    Open,
    UtilityA,
    UtilityB,
    Genset,
}

#[derive(Debug, Clone, Copy)]
struct SmokeRamp {
    from: f64,
    to: f64,
    start: f64,
    over: f64,
}

impl SmokeRamp {
    fn at(&self, t: f64) -> f64 {
        if self.over <= 0.0 {
            return self.to;
        }
        let k = ((t - self.start) / self.over).clamp(0.0, 1.0);
        self.from + (self.to - self.from) * k
    }
}

#[derive(Debug, Clone)]
struct Vesda {
    background: f64,
    noise: f64,
    ramp: Option<SmokeRamp>,
}

#[derive(Debug, Clone)]
struct Sensor {
    offset_t: f64,
    offset_rh: f64,
    noise_t: f64,
    noise_rh: f64,
    battery_pct: f64,
    leak: bool,
}

#[derive(Debug, Clone)]
struct PointRamp {
    device: String,
    point: String,
    from: f64,
    to: f64,
    start: f64,
    over: f64,
}

/// The simulated state of one site.
pub struct World {
    site: SiteSpec,
    rng: ChaCha8Rng,
    elapsed: Duration,
    t: f64,
    devices: HashMap<String, DeviceState>,
    rooms: Vec<Room>,
    room_index: HashMap<String, usize>,
    racks: Vec<Rack>,
    pacs: Vec<Pac>,
    upses: Vec<Ups>,
    gensets: Vec<Genset>,
    vesdas: Vec<Vesda>,
    sensors: Vec<Sensor>,
    utility_cut: [bool; 2],
    feed_up: [bool; 2],
    feed_kw: [f64; 2],
    feed_energy_kwh: [f64; 2],
    utility_lost_since: Option<f64>,
    utility_ok_since: Option<f64>,
    ats: AtsPosition,
    ats_stuck: bool,
    source_live: bool,
    mech_live_since: Option<f64>,
    it_powered: bool,
    site_kw: f64,
    pac_electric_kw: f64,
    mains_noise_v: f64,
    mains_noise_hz: f64,
    forced: HashMap<(String, String), SimValue>,
    ramps: Vec<PointRamp>,
    epochs: HashMap<SocketAddr, u64>,
    backup_min: f64,
    recharge_secs: f64,
}

// ---- seeded helpers ----

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A stable number in [0, 1) for `(seed, key, salt)`.
fn unit(seed: u64, key: &str, salt: u64) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let x = splitmix(seed ^ splitmix(h ^ splitmix(salt)));
    (x >> 11) as f64 / (1u64 << 53) as f64
}

fn between(seed: u64, key: &str, salt: u64, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * unit(seed, key, salt)
}

fn round_up(x: f64, step: f64) -> f64 {
    ((x / step).ceil() * step).max(step)
}

/// Dew point (degC) from temperature and relative humidity, Magnus formula.
pub fn dew_point_c(temp_c: f64, rh_pct: f64) -> f64 {
    const B: f64 = 17.62;
    const C: f64 = 243.12;
    let gamma = (rh_pct.clamp(1.0, 100.0) / 100.0).ln() + B * temp_c / (C + temp_c);
    C * gamma / (B - gamma)
}

fn rh_at(dew_c: f64, temp_c: f64) -> f64 {
    const B: f64 = 17.62;
    const C: f64 = 243.12;
    let e = |t: f64| (B * t / (C + t)).exp();
    (100.0 * e(dew_c) / e(temp_c)).clamp(0.0, 100.0)
}

fn text(name: &str) -> Option<SimValue> {
    Some(SimValue::Text(name.to_owned()))
}

fn num(v: f64) -> Option<SimValue> {
    Some(SimValue::Number(v))
}

fn flag(b: bool) -> Option<SimValue> {
    Some(SimValue::Bool(b))
}

impl World {
    /// A site in its normal state; `seed` drives every random choice (noise, drift).
    pub fn new(site: &SiteSpec, seed: u64) -> World {
        let mut rooms = Vec::new();
        let mut room_index = HashMap::new();
        let mut add_room = |rooms: &mut Vec<Room>, id: &str, hall: bool| -> usize {
            if let Some(&i) = room_index.get(id) {
                return i;
            }
            let base_rh = between(seed, id, 1, 42.0, 50.0);
            rooms.push(Room {
                id: id.to_owned(),
                hall,
                temp_c: if hall { HALL_SETPOINT_C } else { ROOM_BASE_C },
                rh_pct: base_rh,
                base_rh,
                rh_walk: 0.0,
                racks: Vec::new(),
                pacs: Vec::new(),
                duty_pacs: 0,
                it_kw: 0.0,
            });
            room_index.insert(id.to_owned(), rooms.len() - 1);
            rooms.len() - 1
        };
        for room in &site.rooms {
            add_room(&mut rooms, &room.id, room.kind == "data_hall");
        }

        let mut racks = Vec::new();
        let mut rack_index = HashMap::new();
        for rack in &site.racks {
            let room = add_room(&mut rooms, &rack.room, true);
            let limit = rack
                .limit_kw
                .or_else(|| site.facts.rack_limit_kw.get(&rack.class).copied())
                .filter(|l| l.is_finite() && *l > 0.0)
                .unwrap_or(DEFAULT_RACK_LIMIT_KW);
            let base_kw = limit * between(seed, &rack.id, 2, RACK_BASE_MIN, RACK_BASE_MAX);
            rooms[room].racks.push(racks.len());
            rack_index.insert(rack.id.clone(), racks.len());
            racks.push(Rack {
                base_kw,
                share_a: between(seed, &rack.id, 3, 0.45, 0.55),
                drift: 0.0,
                noise: [0.0; 2],
                feed_up: [true; 2],
                energy_kwh: [
                    between(seed, &rack.id, 4, 1_000.0, 20_000.0),
                    between(seed, &rack.id, 5, 1_000.0, 20_000.0),
                ],
                meter_v: [
                    NOMINAL_V + between(seed, &rack.id, 6, -3.0, 3.0),
                    NOMINAL_V + between(seed, &rack.id, 7, -3.0, 3.0),
                ],
                meter_pf: [
                    between(seed, &rack.id, 8, 0.95, 0.99),
                    between(seed, &rack.id, 9, 0.95, 0.99),
                ],
            });
        }
        for room in &mut rooms {
            room.it_kw = room.racks.iter().map(|&r| racks[r].base_kw).sum();
        }
        let it_kw: f64 = racks.iter().map(|r| r.base_kw).sum();

        let count = |kind: Kind| site.devices.iter().filter(|d| Kind::of(d) == kind).count();
        let n_ups = count(Kind::Ups);
        let n_gensets = count(Kind::Genset);
        let n_pacs_in = |room: &str| {
            site.devices
                .iter()
                .filter(|d| Kind::of(d) == Kind::Pac && d.room == room)
                .count()
        };
        let autonomy_h = if site.facts.genset.autonomy_min_h > 0.0 {
            site.facts.genset.autonomy_min_h
        } else {
            DEFAULT_AUTONOMY_H
        };

        let mut devices = HashMap::new();
        let mut pacs = Vec::new();
        let mut upses = Vec::new();
        let mut gensets = Vec::new();
        let mut vesdas = Vec::new();
        let mut sensors = Vec::new();
        for device in &site.devices {
            let kind = Kind::of(device);
            let positive = |v: Option<f64>| v.filter(|x| x.is_finite() && *x > 0.0);
            let slot = match kind {
                Kind::RackMeter => device
                    .rack
                    .as_ref()
                    .and_then(|r| rack_index.get(r).copied())
                    .unwrap_or(usize::MAX),
                Kind::Pac => {
                    let room = add_room(&mut rooms, &device.room, false);
                    let n = n_pacs_in(&device.room).max(1);
                    let duty = if n >= 2 { n - 1 } else { 1 };
                    let design = rooms[room].it_kw.max(10.0);
                    let rated = positive(device.rated_kw)
                        .unwrap_or_else(|| round_up(PAC_MARGIN * design / duty as f64, 5.0));
                    rooms[room].pacs.push(pacs.len());
                    pacs.push(Pac {
                        rated_kw: rated,
                        state: PacState::On,
                        cooling_kw: 0.0,
                        run_hours: between(seed, &device.id, 10, 5_000.0, 40_000.0),
                    });
                    pacs.len() - 1
                }
                Kind::Ups => {
                    let room = room_index_of(&rooms, &device.room);
                    let duty = if n_ups >= 2 { n_ups - 1 } else { 1 };
                    let rated = positive(device.rated_kw).unwrap_or_else(|| {
                        round_up(PAC_MARGIN * it_kw.max(10.0) / duty as f64, 10.0)
                    });
                    upses.push(Ups {
                        room,
                        rated_kw: rated,
                        charge: 1.0,
                        output: UpsOutput::Normal,
                        load_kw: 0.0,
                        on_battery_secs: 0.0,
                        energy_kwh: between(seed, &device.id, 11, 50_000.0, 500_000.0),
                    });
                    upses.len() - 1
                }
                Kind::Genset => {
                    let duty = if n_gensets >= 2 { n_gensets - 1 } else { 1 };
                    let site_kw = it_kw / UPS_EFFICIENCY * (1.0 + 1.0 / PAC_COP);
                    let rated = positive(device.rated_kw).unwrap_or_else(|| {
                        round_up(GENSET_MARGIN * site_kw.max(50.0) / duty as f64, 50.0)
                    });
                    let full =
                        positive(device.fuel_l_per_h_full).unwrap_or(GENSET_L_PER_KWH * rated);
                    let tank = positive(device.fuel_tank_l).unwrap_or(autonomy_h * full);
                    let level = between(seed, &device.id, 12, 0.85, 0.98);
                    gensets.push(Genset {
                        rated_kw: rated,
                        fuel_tank_l: tank,
                        fuel_l: tank * level,
                        full_l_per_h: full,
                        engine: Engine::Stopped,
                        available: false,
                        breaker_closed: false,
                        load_kw: 0.0,
                        coolant_c: 40.0,
                        run_hours: between(seed, &device.id, 13, 200.0, 3_000.0),
                        starts: between(seed, &device.id, 14, 50.0, 400.0).floor(),
                    });
                    gensets.len() - 1
                }
                Kind::Vesda => {
                    vesdas.push(Vesda {
                        background: between(seed, &device.id, 15, 0.005, 0.015),
                        noise: 0.0,
                        ramp: None,
                    });
                    vesdas.len() - 1
                }
                Kind::EnvSensor | Kind::LeakSensor => {
                    sensors.push(Sensor {
                        offset_t: between(seed, &device.id, 16, -0.8, 0.8),
                        offset_rh: between(seed, &device.id, 17, -3.0, 3.0),
                        noise_t: 0.0,
                        noise_rh: 0.0,
                        battery_pct: between(seed, &device.id, 18, 60.0, 100.0),
                        leak: false,
                    });
                    sensors.len() - 1
                }
                Kind::UtilityMeter | Kind::Ats | Kind::Other => 0,
            };
            let endpoint = match device.transport {
                Transport::Modbus { endpoint, .. } => Some(endpoint),
                Transport::Mqtt { .. } => None,
            };
            devices.insert(
                device.id.clone(),
                DeviceState {
                    kind,
                    failed: false,
                    wire: DeviceFault::None,
                    wire_remaining: None,
                    endpoint,
                    slot,
                    alive_secs: between(seed, &device.id, 19, 0.0, 30_000.0).floor(),
                    jitter: unit(seed, &device.id, 20),
                },
            );
        }
        // N+1: the last PAC (by id) of each room with two or more starts in standby.
        for room in &mut rooms {
            let n = room.pacs.len();
            room.duty_pacs = if n >= 2 { n - 1 } else { n };
            if n >= 2 {
                let ids: Vec<(&str, usize)> = site
                    .devices
                    .iter()
                    .filter(|d| Kind::of(d) == Kind::Pac)
                    .filter_map(|d| devices.get(&d.id).map(|s| (d.id.as_str(), s.slot)))
                    .filter(|(_, slot)| room.pacs.contains(slot))
                    .collect();
                if let Some(&(_, slot)) = ids.iter().max_by(|a, b| a.0.cmp(b.0)) {
                    pacs[slot].state = PacState::Standby;
                }
            }
        }

        let backup_min = if site.facts.ups.backup_time_min > 0.0 {
            site.facts.ups.backup_time_min
        } else {
            UPS_DEFAULT_BACKUP_MIN
        };
        let recharge_secs = if site.facts.ups.battery.eq_ignore_ascii_case("lithium") {
            UPS_RECHARGE_LITHIUM_SECS
        } else {
            UPS_RECHARGE_VRLA_SECS
        };

        let mut world = World {
            site: site.clone(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            elapsed: Duration::ZERO,
            t: 0.0,
            devices,
            rooms,
            room_index,
            racks,
            pacs,
            upses,
            gensets,
            vesdas,
            sensors,
            utility_cut: [false; 2],
            feed_up: [true; 2],
            feed_kw: [0.0; 2],
            feed_energy_kwh: [
                between(seed, "utility-a", 21, 1e6, 5e6),
                between(seed, "utility-b", 21, 1e6, 5e6),
            ],
            utility_lost_since: None,
            utility_ok_since: Some(-3600.0),
            ats: AtsPosition::UtilityA,
            ats_stuck: false,
            source_live: true,
            mech_live_since: Some(-3600.0),
            it_powered: true,
            site_kw: 0.0,
            pac_electric_kw: 0.0,
            mains_noise_v: 0.0,
            mains_noise_hz: 0.0,
            forced: HashMap::new(),
            ramps: Vec::new(),
            epochs: HashMap::new(),
            backup_min,
            recharge_secs,
        };
        // Settle derived values (loads, cooling shares) without advancing time.
        world.substep(0.0);
        world
    }

    /// Simulated time since start.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// The site this world simulates.
    pub fn site(&self) -> &SiteSpec {
        &self.site
    }

    /// Advances the physics by `dt`. Deterministic: same seed, same steps, same values.
    pub fn step(&mut self, dt: Duration) {
        let mut remaining = dt.as_secs_f64();
        while remaining > 1e-9 {
            let h = remaining.min(MAX_SUBSTEP_SECS);
            self.substep(h);
            remaining -= h;
        }
        self.elapsed += dt;
    }

    /// The engineering value of one point of one device now: a value forced by
    /// `set_point`, else the physics' value for the point's role, else a stable default.
    pub fn point_value(&self, device: &DeviceSpec, point: &PointSpec) -> Option<SimValue> {
        if !self.forced.is_empty()
            && let Some(v) = self.forced.get(&(device.id.clone(), point.name.clone()))
        {
            return Some(v.clone());
        }
        if let (Some(role), Some(state)) = (&point.role, self.devices.get(&device.id))
            && let Some(v) = self.role_value(device, state, role)
        {
            return Some(v);
        }
        Some(default_value(device, point))
    }

    /// Forces a point (by point name) to a value until cleared or re-set.
    pub fn set_point(&mut self, device_id: &str, point: &str, value: SimValue) {
        self.ramps
            .retain(|r| !(r.device == device_id && r.point == point));
        self.forced
            .insert((device_id.to_owned(), point.to_owned()), value);
    }

    /// Releases a point forced by `set_point` or a ramp.
    pub fn clear_point(&mut self, device_id: &str, point: &str) {
        self.ramps
            .retain(|r| !(r.device == device_id && r.point == point));
        self.forced
            .remove(&(device_id.to_owned(), point.to_owned()));
    }

    /// The device's current wire fault.
    pub fn fault(&self, device_id: &str) -> DeviceFault {
        self.devices
            .get(device_id)
            .map(|d| d.wire)
            .unwrap_or_default()
    }

    /// The wire fault for one request being answered now: like [`World::fault`], and a
    /// fault set for a number of requests (`times`) counts this one and ends after the last.
    pub fn take_wire_fault(&mut self, device_id: &str) -> DeviceFault {
        let Some(state) = self.devices.get_mut(device_id) else {
            return DeviceFault::None;
        };
        let fault = state.wire;
        if let Some(remaining) = state.wire_remaining.as_mut() {
            *remaining = remaining.saturating_sub(1);
            if *remaining == 0 {
                state.wire = DeviceFault::None;
                state.wire_remaining = None;
            }
        }
        fault
    }

    /// True when the device has physically failed (`fail` action).
    pub fn is_failed(&self, device_id: &str) -> bool {
        self.devices.get(device_id).is_some_and(|d| d.failed)
    }

    /// Bumped by a "drop connection" action: a Modbus server closes every connection
    /// to `endpoint` that it accepted under an older epoch.
    pub fn disconnect_epoch(&self, endpoint: SocketAddr) -> u64 {
        self.epochs.get(&endpoint).copied().unwrap_or(0)
    }

    /// Air temperature of a room (degC), for tests and summaries.
    pub fn room_temperature_c(&self, room: &str) -> Option<f64> {
        self.room_index.get(room).map(|&i| self.rooms[i].temp_c)
    }

    /// Relative humidity of a room (%RH).
    pub fn room_humidity_pct(&self, room: &str) -> Option<f64> {
        self.room_index.get(room).map(|&i| self.rooms[i].rh_pct)
    }

    /// Total IT load of the site now (kW).
    pub fn it_load_kw(&self) -> f64 {
        self.rooms.iter().map(|r| r.it_kw).sum()
    }

    /// Applies one scenario action (fail a device, cut a feed, set a value, ...).
    pub fn apply(&mut self, action: &Action) -> Result<(), String> {
        if let Some(device) = action.device()
            && !self.devices.contains_key(device)
        {
            return Err(format!(
                "unknown device {device:?} in site {}",
                self.site.id
            ));
        }
        match action {
            Action::Fail { device } => self.dev(device).failed = true,
            Action::Restore { device } => self.dev(device).failed = false,
            Action::Set {
                device,
                point,
                value,
                raw,
            } => {
                self.point_spec(device, point)?;
                let v = match (value, raw) {
                    (_, Some(raw)) => SimValue::Raw(*raw),
                    (Some(ScenarioValue::Number(n)), None) => SimValue::Number(*n),
                    (Some(ScenarioValue::Bool(b)), None) => SimValue::Bool(*b),
                    (Some(ScenarioValue::Text(s)), None) => SimValue::Text(s.clone()),
                    (None, None) => return Err("set needs `value` or `raw`".to_owned()),
                };
                self.set_point(device, point, v);
            }
            Action::Unset { device, point } => {
                self.point_spec(device, point)?;
                self.clear_point(device, point);
            }
            Action::Ramp {
                device,
                point,
                to,
                over_secs,
            } => {
                let (d, p) = self.point_spec(device, point)?;
                let from = self
                    .point_value(&d, &p)
                    .and_then(|v| v.as_f64())
                    .ok_or_else(|| format!("point {point:?} of {device:?} is not numeric"))?;
                self.set_point(device, point, SimValue::Number(from));
                self.ramps.push(PointRamp {
                    device: device.clone(),
                    point: point.clone(),
                    from,
                    to: *to,
                    start: self.t,
                    over: *over_secs,
                });
                self.update_ramps();
            }
            Action::CutUtility { feed } => self.utility_cut[feed.index()] = true,
            Action::RestoreUtility { feed } => self.utility_cut[feed.index()] = false,
            Action::Silence { device } => set_wire(self.dev(device), DeviceFault::Silent, None),
            Action::Exception {
                device,
                code,
                times,
            } => set_wire(self.dev(device), DeviceFault::Exception(*code), *times),
            Action::Delay { device, millis } => set_wire(
                self.dev(device),
                DeviceFault::Delay(Duration::from_millis(*millis)),
                None,
            ),
            Action::Corrupt {
                device,
                frame,
                times,
            } => set_wire(self.dev(device), DeviceFault::Corrupt(*frame), *times),
            Action::ClearCorrupt { device } => {
                clear_wire(self.dev(device), |f| matches!(f, DeviceFault::Corrupt(_)))
            }
            Action::Unsilence { device } => {
                clear_wire(self.dev(device), |f| matches!(f, DeviceFault::Silent))
            }
            Action::ClearException { device } => {
                clear_wire(self.dev(device), |f| matches!(f, DeviceFault::Exception(_)))
            }
            Action::ClearDelay { device } => {
                clear_wire(self.dev(device), |f| matches!(f, DeviceFault::Delay(_)))
            }
            Action::DropConnection { device } => {
                let endpoint = self
                    .dev(device)
                    .endpoint
                    .ok_or_else(|| format!("device {device:?} is not a Modbus device"))?;
                *self.epochs.entry(endpoint).or_insert(0) += 1;
            }
            Action::Leak { device, on } => {
                let d = self.dev(device);
                if d.kind != Kind::LeakSensor {
                    return Err(format!("device {device:?} is not a leak sensor"));
                }
                let slot = d.slot;
                if let Some(s) = self.sensors.get_mut(slot) {
                    s.leak = *on;
                }
            }
            Action::Smoke {
                device,
                to,
                over_secs,
            } => {
                let d = self.dev(device);
                if d.kind != Kind::Vesda {
                    return Err(format!("device {device:?} is not a VESDA detector"));
                }
                let slot = d.slot;
                let t = self.t;
                if let Some(v) = self.vesdas.get_mut(slot) {
                    let from = v.ramp.map_or(v.background, |r| r.at(t));
                    v.ramp = Some(SmokeRamp {
                        from,
                        to: *to,
                        start: t,
                        over: *over_secs,
                    });
                }
            }
        }
        // Apply the consequences (feeds, ATS, outputs) at once, without advancing time.
        self.substep(0.0);
        Ok(())
    }

    fn dev(&mut self, id: &str) -> &mut DeviceState {
        // `apply` checked presence first; the fallback only keeps this total.
        self.devices
            .entry(id.to_owned())
            .or_insert_with(|| DeviceState {
                kind: Kind::Other,
                failed: false,
                wire: DeviceFault::None,
                wire_remaining: None,
                endpoint: None,
                slot: usize::MAX,
                alive_secs: 0.0,
                jitter: 0.0,
            })
    }

    fn point_spec(&self, device: &str, point: &str) -> Result<(DeviceSpec, PointSpec), String> {
        let d = self
            .site
            .devices
            .iter()
            .find(|d| d.id == device)
            .ok_or_else(|| format!("unknown device {device:?} in site {}", self.site.id))?;
        let p = d
            .profile
            .points
            .iter()
            .find(|p| p.name == point)
            .ok_or_else(|| {
                format!(
                    "device {device:?} (profile {}) has no point {point:?}",
                    d.profile.profile.id
                )
            })?;
        Ok((d.clone(), p.clone()))
    }

    // ---- physics ----

    fn substep(&mut self, h: f64) {
        self.t += h;
        self.update_ramps();
        self.step_noise(h);
        self.step_racks(h);
        self.step_power(h);
        self.step_rooms(h);
        self.step_sensors(h);
    }

    fn update_ramps(&mut self) {
        let t = self.t;
        for r in &self.ramps {
            let k = if r.over <= 0.0 {
                1.0
            } else {
                ((t - r.start) / r.over).clamp(0.0, 1.0)
            };
            self.forced.insert(
                (r.device.clone(), r.point.clone()),
                SimValue::Number(r.from + (r.to - r.from) * k),
            );
        }
        self.ramps.retain(|r| t - r.start < r.over);
    }

    fn noise(&mut self) -> f64 {
        self.rng.random::<f64>() * 2.0 - 1.0
    }

    fn step_noise(&mut self, h: f64) {
        if h <= 0.0 {
            return;
        }
        let a = self.noise();
        let b = self.noise();
        self.mains_noise_v = 0.9 * self.mains_noise_v + 0.1 * 3.0 * a;
        self.mains_noise_hz = 0.9 * self.mains_noise_hz + 0.1 * 0.1 * b;
        for d in self.devices.values_mut() {
            if !d.failed {
                d.alive_secs += h;
            }
        }
    }

    fn step_racks(&mut self, h: f64) {
        // Rack meter failures trip their feed.
        for rack in &mut self.racks {
            rack.feed_up = [true; 2];
        }
        for device in &self.site.devices {
            if let Some(state) = self.devices.get(&device.id)
                && state.kind == Kind::RackMeter
                && state.failed
                && let Some(rack) = self.racks.get_mut(state.slot)
            {
                let feed = usize::from(device.feed.as_deref() == Some("B"));
                rack.feed_up[feed] = false;
            }
        }
        if h <= 0.0 {
            return;
        }
        let decay = h / RACK_DRIFT_TAU_SECS;
        let kick = RACK_DRIFT_SIGMA * (2.0 * decay).sqrt() * 3.0_f64.sqrt();
        for i in 0..self.racks.len() {
            let (a, b, c) = (self.noise(), self.noise(), self.noise());
            let rack = &mut self.racks[i];
            rack.drift += -rack.drift * decay + kick * a;
            rack.noise = [RACK_NOISE * b, RACK_NOISE * c];
        }
    }

    /// The load of one rack feed now (kW), 0 when the feed or the IT bus is down.
    fn rack_feed_kw(&self, rack: &Rack, feed: usize) -> f64 {
        if !self.it_powered || !rack.feed_up[feed] {
            return 0.0;
        }
        let total = rack.base_kw * (1.0 + rack.drift);
        let share = match rack.feed_up {
            [true, true] => {
                if feed == 0 {
                    rack.share_a
                } else {
                    1.0 - rack.share_a
                }
            }
            _ => 1.0,
        };
        (total * share * (1.0 + rack.noise[feed])).max(0.0)
    }

    fn rack_demand_kw(&self, rack: &Rack) -> f64 {
        if rack.feed_up == [false, false] {
            0.0
        } else {
            rack.base_kw * (1.0 + rack.drift)
        }
    }

    fn step_power(&mut self, h: f64) {
        let t = self.t;
        // Utility feeds: cut by scenario or lost with a failed meter of that feed.
        let mut up = [!self.utility_cut[0], !self.utility_cut[1]];
        for device in &self.site.devices {
            if let Some(state) = self.devices.get(&device.id) {
                match state.kind {
                    Kind::UtilityMeter if state.failed => {
                        up[feed_of(device)] = false;
                    }
                    Kind::Ats => self.ats_stuck = state.failed,
                    _ => {}
                }
            }
        }
        self.feed_up = up;
        let utility = up[0] || up[1];
        if utility {
            self.utility_lost_since = None;
            self.utility_ok_since.get_or_insert(t);
        } else {
            self.utility_ok_since = None;
            self.utility_lost_since.get_or_insert(t);
        }
        let demand = self
            .utility_lost_since
            .is_some_and(|s| t - s >= GENSET_START_DELAY_SECS)
            || self.ats == AtsPosition::Genset;

        // Gensets.
        let genset_failed: Vec<bool> = self.kind_failed(Kind::Genset, self.gensets.len());
        for (g, failed) in self.gensets.iter_mut().zip(genset_failed) {
            g.engine = match g.engine {
                _ if failed => Engine::Failed,
                Engine::Failed => Engine::Stopped,
                Engine::Stopped if demand && g.fuel_l > 0.0 => {
                    g.starts += 1.0;
                    Engine::Cranking(t)
                }
                Engine::Stopped => Engine::Stopped,
                Engine::Cranking(_) if !demand => Engine::Stopped,
                Engine::Cranking(s) if t - s >= GENSET_CRANK_SECS => Engine::Running(t),
                Engine::Cranking(s) => Engine::Cranking(s),
                Engine::Running(_) | Engine::CoolingDown(_) if g.fuel_l <= 0.0 => Engine::Stopped,
                Engine::Running(_) if !demand => Engine::CoolingDown(t),
                Engine::Running(s) => Engine::Running(s),
                Engine::CoolingDown(_) if demand => Engine::Running(t - GENSET_WARMUP_SECS),
                Engine::CoolingDown(s) if t - s >= GENSET_COOLDOWN_SECS => Engine::Stopped,
                Engine::CoolingDown(s) => Engine::CoolingDown(s),
            };
            g.available = matches!(g.engine, Engine::Running(s) if t - s >= GENSET_WARMUP_SECS);
        }
        let gen_avail = self.gensets.iter().any(|g| g.available);

        // ATS.
        if !self.ats_stuck {
            let [a, b] = up;
            let utility_pick = if a {
                AtsPosition::UtilityA
            } else if b {
                AtsPosition::UtilityB
            } else {
                AtsPosition::Open
            };
            self.ats = match self.ats {
                AtsPosition::UtilityA if a => AtsPosition::UtilityA,
                AtsPosition::UtilityB if b => AtsPosition::UtilityB,
                AtsPosition::UtilityA | AtsPosition::UtilityB | AtsPosition::Open => {
                    if utility_pick == AtsPosition::Open && gen_avail {
                        AtsPosition::Genset
                    } else {
                        utility_pick
                    }
                }
                AtsPosition::Genset => {
                    let retransfer = self
                        .utility_ok_since
                        .is_some_and(|s| t - s >= ATS_RETRANSFER_SECS);
                    if retransfer || !gen_avail {
                        utility_pick
                    } else {
                        AtsPosition::Genset
                    }
                }
            };
        }
        self.source_live = match self.ats {
            AtsPosition::UtilityA => up[0],
            AtsPosition::UtilityB => up[1],
            AtsPosition::Genset => gen_avail,
            AtsPosition::Open => false,
        };
        if self.source_live {
            self.mech_live_since.get_or_insert(t);
        } else {
            self.mech_live_since = None;
        }

        // UPS modules.
        let ups_failed = self.kind_failed(Kind::Ups, self.upses.len());
        for (u, failed) in self.upses.iter_mut().zip(ups_failed) {
            u.output = match (failed, self.source_live) {
                (true, true) => UpsOutput::Bypass,
                (true, false) => UpsOutput::None,
                (false, true) => UpsOutput::Normal,
                (false, false) if u.charge > 0.0 => UpsOutput::Battery,
                (false, false) => UpsOutput::None,
            };
        }
        let serving = self
            .upses
            .iter()
            .filter(|u| u.output != UpsOutput::None)
            .count();
        self.it_powered = if self.upses.is_empty() {
            true
        } else {
            serving > 0
        };
        let it_demand: f64 = self.racks.iter().map(|r| self.rack_demand_kw(r)).sum();
        let it_load = if self.it_powered { it_demand } else { 0.0 };
        let share = if serving > 0 {
            it_load / serving as f64
        } else {
            0.0
        };
        let mut grid_it = if self.upses.is_empty() && self.source_live {
            it_load
        } else {
            0.0
        };
        for u in &mut self.upses {
            u.load_kw = if u.output == UpsOutput::None {
                0.0
            } else {
                share
            };
            let frac = (u.load_kw / u.rated_kw).max(UPS_MIN_LOAD_FRACTION);
            match u.output {
                UpsOutput::Battery => {
                    u.charge -= h * frac.powf(UPS_PEUKERT) / (self.backup_min * 60.0);
                    u.charge = u.charge.max(0.0);
                    u.on_battery_secs += h;
                }
                UpsOutput::Normal => {
                    u.charge = (u.charge + h / self.recharge_secs).min(1.0);
                    u.on_battery_secs = 0.0;
                    grid_it += u.load_kw;
                }
                UpsOutput::Bypass => {
                    u.on_battery_secs = 0.0;
                    grid_it += u.load_kw;
                }
                UpsOutput::None => u.on_battery_secs = 0.0,
            }
            u.energy_kwh += u.load_kw * h / 3600.0;
        }
        let mech = if self.source_live {
            self.pac_electric_kw
        } else {
            0.0
        };
        self.site_kw = grid_it / UPS_EFFICIENCY + mech;

        // Genset load and fuel.
        let on_genset = self.ats == AtsPosition::Genset && self.source_live;
        let n_avail = self.gensets.iter().filter(|g| g.available).count();
        for g in &mut self.gensets {
            g.breaker_closed = on_genset && g.available;
            g.load_kw = if g.breaker_closed && n_avail > 0 {
                self.site_kw / n_avail as f64
            } else {
                0.0
            };
            let running = matches!(g.engine, Engine::Running(_) | Engine::CoolingDown(_));
            let frac = (g.load_kw / g.rated_kw).clamp(0.0, 1.1);
            if running {
                let rate = g.full_l_per_h
                    * (GENSET_IDLE_FUEL_FRACTION + (1.0 - GENSET_IDLE_FUEL_FRACTION) * frac);
                g.fuel_l = (g.fuel_l - rate * h / 3600.0).max(0.0);
                g.run_hours += h / 3600.0;
            }
            let target = if running { 80.0 + 10.0 * frac } else { 40.0 };
            g.coolant_c += (target - g.coolant_c) * (h / GENSET_COOLANT_TAU_SECS).min(1.0);
        }

        // Utility meters.
        self.feed_kw = [0.0; 2];
        match self.ats {
            AtsPosition::UtilityA if up[0] => self.feed_kw[0] = self.site_kw,
            AtsPosition::UtilityB if up[1] => self.feed_kw[1] = self.site_kw,
            _ => {}
        }
        for i in 0..2 {
            self.feed_energy_kwh[i] += self.feed_kw[i] * h / 3600.0;
        }
        // Rack feed energy.
        for i in 0..self.racks.len() {
            let kw = [
                self.rack_feed_kw(&self.racks[i], 0),
                self.rack_feed_kw(&self.racks[i], 1),
            ];
            for (f, kw) in kw.into_iter().enumerate() {
                self.racks[i].energy_kwh[f] += kw * h / 3600.0;
            }
        }
    }

    fn kind_failed(&self, kind: Kind, n: usize) -> Vec<bool> {
        let mut failed = vec![false; n];
        for state in self.devices.values() {
            if state.kind == kind
                && state.failed
                && let Some(f) = failed.get_mut(state.slot)
            {
                *f = true;
            }
        }
        failed
    }

    fn step_rooms(&mut self, h: f64) {
        let t = self.t;
        let pac_failed = self.kind_failed(Kind::Pac, self.pacs.len());
        for (p, failed) in self.pacs.iter_mut().zip(&pac_failed) {
            p.state = match p.state {
                _ if *failed => PacState::Failed,
                PacState::Failed => PacState::Standby,
                s => s,
            };
        }
        let cooling_ok = self
            .mech_live_since
            .is_some_and(|s| t - s >= PAC_RESTART_SECS);
        let mut pac_electric = 0.0;
        for r in 0..self.rooms.len() {
            let room_pacs = self.rooms[r].pacs.clone();
            // N+1 lead/lag: start standby units while fewer than the duty count run.
            let mut active = room_pacs
                .iter()
                .filter(|&&p| matches!(self.pacs[p].state, PacState::On | PacState::Starting(_)))
                .count();
            for &p in &room_pacs {
                if active >= self.rooms[r].duty_pacs {
                    break;
                }
                if self.pacs[p].state == PacState::Standby {
                    self.pacs[p].state = PacState::Starting(t);
                    active += 1;
                }
            }
            for &p in &room_pacs {
                if let PacState::Starting(s) = self.pacs[p].state
                    && t - s >= PAC_STANDBY_START_SECS
                {
                    self.pacs[p].state = PacState::On;
                }
            }

            let it_kw: f64 = self.rooms[r]
                .racks
                .iter()
                .map(|&i| {
                    self.rack_feed_kw(&self.racks[i], 0) + self.rack_feed_kw(&self.racks[i], 1)
                })
                .sum();
            self.rooms[r].it_kw = it_kw;
            let n_racks = self.rooms[r].racks.len() as f64;
            let capacitance = HALL_C_BASE_KJ_PER_K + HALL_C_PER_RACK_KJ_PER_K * n_racks;
            let setpoint = if self.rooms[r].hall {
                HALL_SETPOINT_C
            } else {
                ROOM_BASE_C
            };
            let temp = self.rooms[r].temp_c;
            let mut deficit_fraction = 0.0;
            if room_pacs.is_empty() {
                // Building cooling holds the room at its base temperature.
                let k = (h / ROOM_RELAX_TAU_SECS).min(1.0);
                self.rooms[r].temp_c += (setpoint - temp) * k;
            } else {
                let ua = ENVELOPE_UA_KW_PER_K_PER_RACK * n_racks.max(1.0);
                let q_env = ua * (BUILDING_C - temp);
                let heat = it_kw + q_env;
                let capacity: f64 = if cooling_ok {
                    room_pacs
                        .iter()
                        .filter(|&&p| self.pacs[p].state == PacState::On)
                        .map(|&p| self.pacs[p].rated_kw)
                        .sum()
                } else {
                    0.0
                };
                let wanted = heat + capacitance * (temp - setpoint) / PULLDOWN_TAU_SECS;
                let q_cool = wanted.clamp(0.0, capacity);
                self.rooms[r].temp_c += (heat - q_cool) / capacitance * h;
                // Dehumidification lost: the larger of the heat deficit and the share of
                // the design (duty) capacity that is not running.
                let installed: f64 = room_pacs.iter().map(|&p| self.pacs[p].rated_kw).sum();
                let design = installed * self.rooms[r].duty_pacs as f64 / room_pacs.len() as f64;
                if design > 0.0 {
                    deficit_fraction = (1.0 - capacity / design).clamp(0.0, 1.0);
                }
                if heat > 0.0 && capacity < heat {
                    deficit_fraction = deficit_fraction.max((heat - capacity) / heat).min(1.0);
                }
                for &p in &room_pacs {
                    let pac = &mut self.pacs[p];
                    let cooling = cooling_ok && pac.state == PacState::On;
                    pac.cooling_kw = if cooling && capacity > 0.0 {
                        q_cool * pac.rated_kw / capacity
                    } else {
                        0.0
                    };
                    if cooling {
                        pac.run_hours += h / 3600.0;
                        pac_electric += pac.cooling_kw / PAC_COP + PAC_FAN_FRACTION * pac.rated_kw;
                    }
                }
            }
            // Humidity.
            if h > 0.0 {
                let n = self.noise();
                let room = &mut self.rooms[r];
                room.rh_walk += -room.rh_walk * h / 3600.0 + 0.05 * h.sqrt() * n;
                let target = room.base_rh + room.rh_walk + RH_RISE_FULL_LOSS_PCT * deficit_fraction;
                let tau = if target > room.rh_pct {
                    RH_TAU_RISE_SECS
                } else {
                    RH_TAU_RECOVER_SECS
                };
                room.rh_pct += (target - room.rh_pct) * (h / tau).min(1.0);
                room.rh_pct = room.rh_pct.clamp(5.0, 95.0);
            }
        }
        self.pac_electric_kw = pac_electric;
    }

    fn step_sensors(&mut self, h: f64) {
        if h <= 0.0 {
            return;
        }
        for i in 0..self.vesdas.len() {
            let n = self.noise();
            let v = &mut self.vesdas[i];
            v.noise = 0.9 * v.noise + 0.1 * 0.003 * n;
        }
        for i in 0..self.sensors.len() {
            let (a, b) = (self.noise(), self.noise());
            let s = &mut self.sensors[i];
            s.noise_t = 0.8 * s.noise_t + 0.2 * 0.3 * a;
            s.noise_rh = 0.8 * s.noise_rh + 0.2 * 1.5 * b;
            s.battery_pct = (s.battery_pct - 0.001 / 60.0 * h).max(0.0);
        }
    }

    // ---- point values by role ----

    fn room_of(&self, device: &DeviceSpec) -> Option<&Room> {
        self.room_index.get(&device.room).map(|&i| &self.rooms[i])
    }

    fn role_value(&self, device: &DeviceSpec, state: &DeviceState, role: &str) -> Option<SimValue> {
        let (kind_prefix, name) = role.split_once('.')?;
        match kind_prefix {
            "ups" => self.ups_value(state, name),
            "pac" => self.pac_value(device, state, name),
            "genset" => self.genset_value(state, name),
            "vesda" => self.vesda_value(state, name),
            "rack_feed" => self.rack_value(device, state, name),
            "utility" => self.utility_value(device, name),
            "ats" => self.ats_value(state, name),
            "env" => self.env_value(device, state, name),
            "leak" => self.leak_value(state, name),
            _ => None,
        }
    }

    fn ups_value(&self, state: &DeviceState, name: &str) -> Option<SimValue> {
        let u = self.upses.get(state.slot)?;
        let frac = (u.load_kw / u.rated_kw).max(UPS_MIN_LOAD_FRACTION);
        let runtime =
            (u.charge * self.backup_min / frac.powf(UPS_PEUKERT)).min(UPS_MAX_RUNTIME_MIN);
        let low = u.charge < UPS_LOW_CHARGE || runtime < UPS_LOW_RUNTIME_MIN;
        let depleted = u.charge <= 0.0;
        let on_battery = u.output == UpsOutput::Battery;
        match name {
            "output_source" => text(match u.output {
                UpsOutput::Normal => "normal",
                UpsOutput::Battery => "battery",
                UpsOutput::Bypass => "bypass",
                UpsOutput::None => "none",
            }),
            "on_battery" => flag(on_battery),
            "battery_status" => text(if depleted {
                "depleted"
            } else if low {
                "low"
            } else {
                "normal"
            }),
            "runtime_remaining_min" => num(runtime.floor()),
            "seconds_on_battery" => num(u.on_battery_secs.floor()),
            "battery_charge_pct" => num(u.charge * 100.0),
            "load_pct" => num(u.load_kw / u.rated_kw * 100.0),
            "output_kw" => num(u.load_kw),
            "input_voltage_v" => num(if self.source_live {
                NOMINAL_V + self.mains_noise_v
            } else {
                0.0
            }),
            "output_voltage_v" => num(if u.output == UpsOutput::None {
                0.0
            } else {
                NOMINAL_V + 0.2 * self.mains_noise_v
            }),
            "battery_voltage_v" => num(if on_battery || depleted {
                (420.0 + 100.0 * u.charge - 20.0 * frac.min(1.0)).max(0.0)
            } else {
                545.0
            }),
            "battery_temperature_c" => {
                let room = u.room.map_or(ROOM_BASE_C, |r| self.rooms[r].temp_c);
                num(room + 1.5 + state.jitter)
            }
            "fault" => flag(state.failed),
            "alarm_count" => num(f64::from(
                u8::from(on_battery) + u8::from(low) + u8::from(state.failed),
            )),
            "energy_kwh" => num(u.energy_kwh),
            "model" => text(&format!("SIM-UPS {:.0} kW", u.rated_kw)),
            "heartbeat" => num(heartbeat(state)),
            _ => None,
        }
    }

    fn pac_value(&self, device: &DeviceSpec, state: &DeviceState, name: &str) -> Option<SimValue> {
        let p = self.pacs.get(state.slot)?;
        let room = self.room_of(device)?;
        let cooling_ok = self
            .mech_live_since
            .is_some_and(|s| self.t - s >= PAC_RESTART_SECS);
        let running = cooling_ok && matches!(p.state, PacState::On);
        let load = if p.rated_kw > 0.0 {
            p.cooling_kw / p.rated_kw
        } else {
            0.0
        };
        let ret = room.temp_c
            + if room.it_kw > 0.0 {
                PAC_RETURN_RISE_C
            } else {
                1.0
            };
        let dew = dew_point_c(room.temp_c, room.rh_pct);
        match name {
            "operating_state" => text(match p.state {
                PacState::Failed => "off",
                _ if !self.source_live => "off",
                PacState::On | PacState::Starting(_) => "on",
                PacState::Standby => "standby",
            }),
            "status" => text(if p.state == PacState::Failed {
                "alarm"
            } else if room.temp_c > 27.0 {
                "warning"
            } else {
                "normal"
            }),
            "fault" => flag(p.state == PacState::Failed),
            "supply_air_c" => num(if running {
                ret - PAC_COIL_DELTA_C * load
            } else {
                ret - 0.3
            }),
            "return_air_c" => num(ret),
            "return_humidity_pct" => num(rh_at(dew, ret)),
            "return_dew_point_c" => num(dew),
            "fan_speed_pct" => num(if running { 40.0 + 60.0 * load } else { 0.0 }),
            "cooling_kw" => num(p.cooling_kw),
            "compressor_running" => flag(running && p.cooling_kw > 0.0),
            "run_hours" => num(p.run_hours.floor()),
            "model" => text(&format!("SIM-PAC {:.0} kW", p.rated_kw)),
            _ => None,
        }
    }

    fn genset_value(&self, state: &DeviceState, name: &str) -> Option<SimValue> {
        let g = self.gensets.get(state.slot)?;
        let running = matches!(g.engine, Engine::Running(_) | Engine::CoolingDown(_));
        let cranking = matches!(g.engine, Engine::Cranking(_));
        let frac = if g.rated_kw > 0.0 {
            g.load_kw / g.rated_kw
        } else {
            0.0
        };
        let fuel_pct = if g.fuel_tank_l > 0.0 {
            g.fuel_l / g.fuel_tank_l * 100.0
        } else {
            0.0
        };
        let battery_v = if cranking {
            22.0
        } else if running {
            27.8
        } else {
            27.2
        };
        if let Some(alarm) = name.strip_prefix("alarm.") {
            let level = if alarm.contains("fail_to_start") && g.engine == Engine::Failed {
                3.0
            } else if alarm.contains("fuel") && alarm.contains("low") {
                if fuel_pct < 10.0 {
                    3.0
                } else if fuel_pct < 25.0 {
                    2.0
                } else {
                    1.0
                }
            } else if alarm.contains("coolant") && alarm.contains("high") {
                if g.coolant_c > 105.0 {
                    3.0
                } else if g.coolant_c > 95.0 {
                    2.0
                } else {
                    1.0
                }
            } else if alarm.contains("battery")
                && alarm.contains("low")
                && battery_v < 23.0
                && !cranking
            {
                2.0
            } else {
                1.0
            };
            return num(level);
        }
        match name {
            "control_mode" => text("auto"),
            "engine_running" => flag(running),
            "breaker_closed" => flag(g.breaker_closed),
            "load_kw" => num(g.load_kw),
            "load_pct" => num(frac * 100.0),
            "fuel_level_pct" => num(fuel_pct),
            "oil_pressure_kpa" => num(if running {
                380.0 + 20.0 * frac + 5.0 * self.mains_noise_hz * 10.0
            } else if cranking {
                120.0
            } else {
                0.0
            }),
            "coolant_c" => num(g.coolant_c),
            "battery_v" => num(battery_v),
            "engine_rpm" => num(if running {
                GENSET_RPM + 30.0 * self.mains_noise_hz
            } else if cranking {
                200.0
            } else {
                0.0
            }),
            "frequency_hz" => num(if running {
                NOMINAL_HZ + self.mains_noise_hz
            } else {
                0.0
            }),
            "l1_n_voltage_v" => num(if running {
                NOMINAL_V + 0.5 * self.mains_noise_v
            } else {
                0.0
            }),
            "l1_current_a" => num(g.load_kw * 1000.0 / (3.0 * NOMINAL_V * 0.9)),
            "run_hours" => num(g.run_hours.floor()),
            "starts" => num(g.starts),
            _ => None,
        }
    }

    fn vesda_value(&self, state: &DeviceState, name: &str) -> Option<SimValue> {
        let v = self.vesdas.get(state.slot)?;
        let background = (v.background + v.noise).max(0.0);
        let smoke = v.ramp.map_or(background, |r| r.at(self.t).max(background));
        match name {
            "smoke_pct_obs_m" => num(smoke),
            "alarm_level" => text(vesda_level(smoke)),
            "fault" => flag(state.failed),
            "airflow_pct" => num(if state.failed {
                60.0
            } else {
                100.0 + 2.0 * (state.jitter - 0.5) + 10.0 * v.noise
            }),
            "heartbeat" => num(heartbeat(state)),
            _ => None,
        }
    }

    fn rack_value(&self, device: &DeviceSpec, state: &DeviceState, name: &str) -> Option<SimValue> {
        let rack = self.racks.get(state.slot)?;
        let feed = feed_of(device);
        let kw = self.rack_feed_kw(rack, feed);
        let v = if self.it_powered && rack.feed_up[feed] {
            rack.meter_v[feed] + 0.3 * self.mains_noise_v
        } else {
            0.0
        };
        let pf = rack.meter_pf[feed];
        match name {
            "power_kw" => num(kw),
            "current_a" => num(if v > 0.0 { kw * 1000.0 / (v * pf) } else { 0.0 }),
            "voltage_v" => num(v),
            "energy_kwh" => num(rack.energy_kwh[feed]),
            "power_factor" => num(if kw > 0.0 { pf } else { 0.0 }),
            _ => None,
        }
    }

    fn utility_value(&self, device: &DeviceSpec, name: &str) -> Option<SimValue> {
        let feed = feed_of(device);
        let up = self.feed_up[feed];
        match name {
            "available" => flag(up),
            "voltage_v" => num(if up {
                NOMINAL_V + self.mains_noise_v
            } else {
                0.0
            }),
            "frequency_hz" => num(if up {
                NOMINAL_HZ + self.mains_noise_hz
            } else {
                0.0
            }),
            "power_kw" => num(self.feed_kw[feed]),
            "energy_kwh" => num(self.feed_energy_kwh[feed]),
            _ => None,
        }
    }

    fn ats_value(&self, state: &DeviceState, name: &str) -> Option<SimValue> {
        match name {
            "position" => text(match self.ats {
                AtsPosition::Open => "open",
                AtsPosition::UtilityA => "utility_a",
                AtsPosition::UtilityB => "utility_b",
                AtsPosition::Genset => "genset",
            }),
            "utility_a_available" => flag(self.feed_up[0]),
            "utility_b_available" => flag(self.feed_up[1]),
            "genset_available" => flag(self.gensets.iter().any(|g| g.available)),
            "in_auto" => flag(!state.failed),
            _ => None,
        }
    }

    fn env_value(&self, device: &DeviceSpec, state: &DeviceState, name: &str) -> Option<SimValue> {
        let s = self.sensors.get(state.slot)?;
        let (temp, rh) = self
            .room_of(device)
            .map_or((ROOM_BASE_C, 50.0), |r| (r.temp_c, r.rh_pct));
        match name {
            "temperature_c" => num(temp + s.offset_t + s.noise_t),
            "humidity_pct" => num((rh + s.offset_rh + s.noise_rh).clamp(0.0, 100.0)),
            "sensor_battery_pct" => num(if state.failed { 0.0 } else { s.battery_pct }),
            _ => None,
        }
    }

    fn leak_value(&self, state: &DeviceState, name: &str) -> Option<SimValue> {
        let s = self.sensors.get(state.slot)?;
        match name {
            "detected" => flag(s.leak),
            "sensor_battery_pct" => num(if state.failed { 0.0 } else { s.battery_pct }),
            _ => None,
        }
    }
}

fn room_index_of(rooms: &[Room], id: &str) -> Option<usize> {
    rooms.iter().position(|r| r.id == id)
}

fn feed_of(device: &DeviceSpec) -> usize {
    match device.feed.as_deref() {
        Some("B" | "b") => 1,
        _ => 0,
    }
}

fn heartbeat(state: &DeviceState) -> f64 {
    (state.alive_secs.floor() as u64 % 65_536) as f64
}

fn clear_wire(state: &mut DeviceState, matches: impl Fn(DeviceFault) -> bool) {
    if matches(state.wire) {
        state.wire = DeviceFault::None;
        state.wire_remaining = None;
    }
}

/// Sets a wire fault for the next `times` requests (`None`: until cleared; `Some(0)`: none).
fn set_wire(state: &mut DeviceState, fault: DeviceFault, times: Option<u32>) {
    if times == Some(0) {
        state.wire = DeviceFault::None;
        state.wire_remaining = None;
    } else {
        state.wire = fault;
        state.wire_remaining = times;
    }
}

/// The VESDA alarm level name for a smoke obscuration (%obs/m).
pub fn vesda_level(smoke: f64) -> &'static str {
    let [alert, action, fire1, fire2] = VESDA_THRESHOLDS;
    if smoke >= fire2 {
        "fire2"
    } else if smoke >= fire1 {
        "fire1"
    } else if smoke >= action {
        "action"
    } else if smoke >= alert {
        "alert"
    } else {
        "normal"
    }
}

/// A stable value for a point without a role (or a role this kind does not know).
fn default_value(device: &DeviceSpec, point: &PointSpec) -> SimValue {
    match point.ty.as_str() {
        "string" => SimValue::Text(device.id.clone()),
        "bool" => SimValue::Bool(false),
        _ => match (point.valid_min, point.valid_max) {
            (Some(lo), Some(hi)) if lo.is_finite() && hi.is_finite() => {
                SimValue::Number((lo + hi) / 2.0)
            }
            _ => SimValue::Number(0.0),
        },
    }
}
