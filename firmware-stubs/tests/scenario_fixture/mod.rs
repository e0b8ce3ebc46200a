//! A small fixture site for the physics, scenario and MQTT tests, written to a temp dir.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use firmware_stubs::spec::{self, DeviceSpec, PointSpec, SiteSpec};
use firmware_stubs::world::{SimValue, World};

/// Profiles: one point per role of each kind (Modbus details are irrelevant to the physics).
const PROFILES: &[(&str, &str, &str, &[&str])] = &[
    (
        "fx-ups",
        "ups",
        "modbus",
        &[
            "ups.output_source",
            "ups.on_battery",
            "ups.battery_status",
            "ups.runtime_remaining_min",
            "ups.seconds_on_battery",
            "ups.battery_charge_pct",
            "ups.load_pct",
            "ups.output_kw",
            "ups.input_voltage_v",
            "ups.output_voltage_v",
            "ups.battery_voltage_v",
            "ups.battery_temperature_c",
            "ups.fault",
            "ups.alarm_count",
            "ups.energy_kwh",
            "ups.model",
            "ups.heartbeat",
        ],
    ),
    (
        "fx-pac",
        "pac",
        "modbus",
        &[
            "pac.operating_state",
            "pac.status",
            "pac.fault",
            "pac.supply_air_c",
            "pac.return_air_c",
            "pac.return_humidity_pct",
            "pac.return_dew_point_c",
            "pac.fan_speed_pct",
            "pac.cooling_kw",
            "pac.compressor_running",
            "pac.run_hours",
            "pac.model",
        ],
    ),
    (
        "fx-genset",
        "genset",
        "modbus",
        &[
            "genset.control_mode",
            "genset.engine_running",
            "genset.breaker_closed",
            "genset.load_kw",
            "genset.load_pct",
            "genset.fuel_level_pct",
            "genset.oil_pressure_kpa",
            "genset.coolant_c",
            "genset.battery_v",
            "genset.engine_rpm",
            "genset.frequency_hz",
            "genset.l1_n_voltage_v",
            "genset.l1_current_a",
            "genset.run_hours",
            "genset.starts",
            "genset.alarm.fail_to_start",
            "genset.alarm.low_fuel_level",
            "genset.alarm.high_coolant_temperature",
        ],
    ),
    (
        "fx-vesda",
        "vesda",
        "modbus",
        &[
            "vesda.smoke_pct_obs_m",
            "vesda.alarm_level",
            "vesda.fault",
            "vesda.airflow_pct",
            "vesda.heartbeat",
        ],
    ),
    (
        "fx-meter",
        "rack_meter",
        "modbus",
        &[
            "rack_feed.power_kw",
            "rack_feed.current_a",
            "rack_feed.voltage_v",
            "rack_feed.energy_kwh",
            "rack_feed.power_factor",
        ],
    ),
    (
        "fx-utility",
        "utility_meter",
        "modbus",
        &[
            "utility.available",
            "utility.voltage_v",
            "utility.frequency_hz",
            "utility.power_kw",
            "utility.energy_kwh",
        ],
    ),
    (
        "fx-ats",
        "ats",
        "modbus",
        &[
            "ats.position",
            "ats.utility_a_available",
            "ats.utility_b_available",
            "ats.genset_available",
            "ats.in_auto",
        ],
    ),
];

fn point_type(role: &str) -> &'static str {
    match role {
        "ups.model" | "pac.model" => "string",
        "ups.on_battery"
        | "ups.fault"
        | "pac.fault"
        | "pac.compressor_running"
        | "genset.engine_running"
        | "genset.breaker_closed"
        | "vesda.fault"
        | "utility.available"
        | "ats.utility_a_available"
        | "ats.utility_b_available"
        | "ats.genset_available"
        | "ats.in_auto" => "bool",
        _ => "f32",
    }
}

/// Writes `DIR/profiles/*.toml` and `DIR/sites/fx.toml` with `racks` racks in hall dh1.
pub fn write_config(dir: &Path, racks: usize) {
    let profiles = dir.join("profiles");
    let sites = dir.join("sites");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::create_dir_all(&sites).unwrap();
    for (id, kind, transport, roles) in PROFILES {
        let mut text =
            format!("[profile]\nid = \"{id}\"\nkind = \"{kind}\"\ntransport = \"{transport}\"\n");
        for (i, role) in roles.iter().enumerate() {
            let name = role.rsplit('.').next().unwrap();
            let ty = point_type(role);
            let ty = if ty == "bool" { "bit" } else { ty };
            text += &format!(
                "\n[[points]]\nname = \"{name}\"\nrole = \"{role}\"\nregister = \"holding\"\naddress = {}\ntype = \"{ty}\"\n",
                i * 4
            );
        }
        std::fs::write(profiles.join(format!("{id}.toml")), text).unwrap();
    }
    std::fs::write(
        profiles.join("fx-th.toml"),
        r#"[profile]
id = "fx-th"
kind = "env_sensor"
transport = "mqtt"

[mqtt]
topic = "dcguard/{site}/{room}/th/{device}"
sequence_json = "seq"
interval_secs = 1

[[points]]
name = "temperature"
role = "env.temperature_c"
json = "temperature_c"
type = "f64"

[[points]]
name = "humidity"
role = "env.humidity_pct"
json = "humidity_pct"
type = "f64"

[[points]]
name = "battery"
role = "env.sensor_battery_pct"
json = "status.battery_pct"
type = "f64"
"#,
    )
    .unwrap();
    std::fs::write(
        profiles.join("fx-leak.toml"),
        r#"[profile]
id = "fx-leak"
kind = "leak_sensor"
transport = "mqtt"

[mqtt]
topic = "dcguard/{site}/{room}/leak/{device}"
sequence_json = "seq"
interval_secs = 1

[[points]]
name = "leak"
role = "leak.detected"
json = "leak"
type = "bool"

[[points]]
name = "battery"
role = "leak.sensor_battery_pct"
json = "battery_pct"
type = "f64"
"#,
    )
    .unwrap();

    let mut site = String::from(
        r#"[site]
id = "fx"
[site.ups]
backup_time_min = 10
battery = "vrla"
[site.genset]
redundancy = "N+1"
autonomy_min_h = 12
[site.rack_limit_kw]
server = 5.0

[[rooms]]
id = "dh1"
kind = "data_hall"
[[rooms]]
id = "ups1"
kind = "ups_room"
[[rooms]]
id = "gen1"
kind = "genset_room"
"#,
    );
    site += &format!(
        "\n[[racks]]\nid = \"R01..R{racks:02}\"\nroom = \"dh1\"\nclass = \"server\"\n\n[[rack_meters]]\nracks = \"R01..R{racks:02}\"\nprofile = \"fx-meter\"\nendpoint = \"127.0.0.1:15010\"\nunit_start = 1\n"
    );
    let mut unit = 1;
    let mut device = |id: &str, profile: &str, room: &str, extra: &str| {
        unit += 1;
        site += &format!(
            "\n[[devices]]\nid = \"{id}\"\nprofile = \"{profile}\"\nroom = \"{room}\"\nmodbus = {{ endpoint = \"127.0.0.1:15001\", unit = {unit} }}\n{extra}"
        );
    };
    for i in 1..=4 {
        device(&format!("pac-{i:02}"), "fx-pac", "dh1", "");
    }
    device("ups-1", "fx-ups", "ups1", "rated_kw = 100.0\n");
    device("ups-2", "fx-ups", "ups1", "rated_kw = 100.0\n");
    for i in 1..=3 {
        device(
            &format!("gen-{i}"),
            "fx-genset",
            "gen1",
            "rated_kw = 200.0\nfuel_tank_l = 2000.0\nfuel_l_per_h_full = 54.0\n",
        );
    }
    device("util-a", "fx-utility", "gen1", "feed = \"A\"\n");
    device("util-b", "fx-utility", "gen1", "feed = \"B\"\n");
    device("ats-1", "fx-ats", "gen1", "");
    device("vesda-1", "fx-vesda", "dh1", "");
    site += r#"
[[devices]]
id = "th-dh1-01"
profile = "fx-th"
room = "dh1"
mqtt = { broker = "sim", topic = "dcguard/fx/dh1/th/th-dh1-01" }

[[devices]]
id = "th-dh1-02"
profile = "fx-th"
room = "dh1"
mqtt = { broker = "sim", topic = "dcguard/fx/dh1/th/th-dh1-02" }

[[devices]]
id = "leak-dh1-01"
profile = "fx-leak"
room = "dh1"
mqtt = { broker = "sim", topic = "dcguard/fx/dh1/leak/leak-dh1-01" }
"#;
    std::fs::write(sites.join("fx.toml"), site).unwrap();
}

/// The fixture site with `racks` racks of 5 kW in hall dh1.
pub fn site(racks: usize) -> Arc<SiteSpec> {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), racks);
    let mut sites = spec::load_sites(dir.path()).unwrap();
    assert_eq!(sites.len(), 1);
    Arc::new(sites.remove(0))
}

pub fn device<'a>(site: &'a SiteSpec, id: &str) -> &'a DeviceSpec {
    site.devices
        .iter()
        .find(|d| d.id == id)
        .unwrap_or_else(|| panic!("no device {id}"))
}

pub fn point<'a>(device: &'a DeviceSpec, name: &str) -> &'a PointSpec {
    device
        .profile
        .points
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no point {name} in {}", device.id))
}

/// A point value by device id and point name.
pub fn value(world: &World, site: &SiteSpec, device_id: &str, point_name: &str) -> SimValue {
    let d = device(site, device_id);
    world.point_value(d, point(d, point_name)).unwrap()
}

pub fn number(world: &World, site: &SiteSpec, device_id: &str, point_name: &str) -> f64 {
    match value(world, site, device_id, point_name) {
        SimValue::Number(n) => n,
        other => panic!("{device_id}.{point_name} is {other:?}, not a number"),
    }
}

pub fn text(world: &World, site: &SiteSpec, device_id: &str, point_name: &str) -> String {
    match value(world, site, device_id, point_name) {
        SimValue::Text(s) => s,
        other => panic!("{device_id}.{point_name} is {other:?}, not text"),
    }
}

pub fn boolean(world: &World, site: &SiteSpec, device_id: &str, point_name: &str) -> bool {
    match value(world, site, device_id, point_name) {
        SimValue::Bool(b) => b,
        other => panic!("{device_id}.{point_name} is {other:?}, not a bool"),
    }
}
