//! Exact-message tests of `dcguard::config::load`: one small config directory per mistake,
//! written inline so the line numbers in the expected messages can be checked by eye.

use std::fs;
use std::path::{Path, PathBuf};

use dcguard::config::{self, ConfigErrors};
use tempfile::TempDir;

const DAEMON: &str = r#"[daemon]
data_dir = "/var/lib/dcguard"
listen = "127.0.0.1:8080"

[calendar]
time_zone = "Asia/Jakarta"
working_days = ["mon", "tue", "wed", "thu", "fri"]
working_hours_start = "08:00"
working_hours_end = "17:00"
holidays = ["2026-01-01", "2026-08-17"]

[priority.matrix]
high   = { high = "P1", medium = "P2", low = "P3" }
medium = { high = "P2", medium = "P3", low = "P4" }
low    = { high = "P3", medium = "P4", low = "P5" }

[priority.targets]
P1 = { target_hours = 3,  clock = "24x7" }
P2 = { target_hours = 8,  clock = "working_hours" }
P3 = { target_hours = 16, clock = "working_hours" }
P4 = { target_hours = 24, clock = "working_hours" }
P5 = { target_hours = 80, clock = "working_hours" }

[[mqtt_brokers]]
id = "sim"
host = "127.0.0.1"
port = 1883
client_id = "dcguard"

[influxdb]
url = "http://127.0.0.1:8086"
org = "kemenkeu"
bucket = "dcguard"
token_env = "DCGUARD_INFLUX_TOKEN"
"#;

/// The first 20 lines of every site file in these tests; the body starts on line 21.
const SITE_HEAD: &str = r#"[site]
id = "dc"
name = "DC"
building = "Gd. Syafrudin Prawiranegara I"
time_zone = "Asia/Jakarta"
rack_positions = 4
floor_load_max_kg_m2 = 1200
utility_feeds = 2
fire_suppression = "FM200/NOVEC"
ups = { backup_time_min = 10, battery = "vrla", redundancy = "N+1" }
genset = { rating = "prime", redundancy = "N+1", autonomy_min_h = 12, load_test_interval_months = 1 }
cooling = { kind = "pac", redundancy = "N+1" }
data_hall = { temperature_min_c = 18.0, temperature_max_c = 27.0, humidity_min_pct = 30.0, humidity_max_pct = 60.0 }
rack_limit_kw = { storage = 5.0, server = 5.0, network = 5.0 }

[access]
third_party_escort = "required"
destination_room_required = false

# body
"#;

/// A valid body: line 21 is `[[rooms]]`.
const SITE_BODY: &str = r#"[[rooms]]
id = "dh1"
name = "Data Hall 1"
kind = "data_hall"

[[rooms]]
id = "ups1"
name = "UPS Room 1"
kind = "ups_room"

[[racks]]
id = "A01..A02"
room = "dh1"
class = "server"

[[rack_meters]]
racks = "A01..A02"
profile = "rack-meter"
endpoint = "127.0.0.1:15010"
unit_start = 1

[[devices]]
id = "ups-1"
profile = "ups"
room = "ups1"
modbus = { endpoint = "127.0.0.1:15001", unit = 1 }

[[devices]]
id = "th-1"
profile = "th"
room = "dh1"
mqtt = { broker = "sim", topic = "dcguard/dc/dh1/th/th-1" }
"#;

const UPS: &str = r#"[profile]
id = "ups"
kind = "ups"
transport = "modbus"
imitates = "a UPS-MIB-like map"

[[points]]
name = "output_source"
role = "ups.output_source"
register = "input"
address = 0
type = "u16"

[[points]]
name = "output_kw"
role = "ups.output_kw"
register = "input"
address = 1
type = "f32"
order = "CDAB"
unit = "kW"
"#;

const RACK_METER: &str = r#"[profile]
id = "rack-meter"
kind = "rack_meter"
transport = "modbus"
imitates = "a rack PDU meter"

[[points]]
name = "power_kw"
role = "rack_feed.power_kw"
register = "holding"
address = 0
type = "u16"
scale = 0.01
unit = "kW"
"#;

const TH: &str = r#"[profile]
id = "th"
kind = "env_sensor"
transport = "mqtt"
imitates = "a JSON temperature/humidity sensor"

[mqtt]
topic = "dcguard/{site}/{room}/th/{device}"
interval_secs = 10

[[points]]
name = "temperature"
role = "env.temperature_c"
json = "temperature_c"
type = "f64"
unit = "degC"
"#;

/// A valid configuration directory whose files the tests overwrite one at a time.
struct Fixture {
    tmp: TempDir,
}

impl Fixture {
    fn new() -> Self {
        let f = Fixture {
            tmp: TempDir::new().unwrap(),
        };
        f.write("dcguard.toml", DAEMON);
        f.write("sites/dc.toml", &site(SITE_BODY));
        f.write("profiles/ups.toml", UPS);
        f.write("profiles/rack-meter.toml", RACK_METER);
        f.write("profiles/th.toml", TH);
        f
    }

    fn dir(&self) -> PathBuf {
        self.tmp.path().join("config")
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.dir().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    /// The problems, one per line, with the temp directory replaced by `config`.
    fn problems(&self) -> Vec<String> {
        let errors: ConfigErrors = match config::load(&self.dir()) {
            Ok(_) => panic!("expected the configuration to be invalid"),
            Err(e) => e,
        };
        let dir = self.dir();
        errors
            .iter()
            .map(|e| {
                let rel = e.file.strip_prefix(&dir).unwrap_or(&e.file);
                let shown = Path::new("config").join(rel);
                let mut e = e.clone();
                e.file = shown;
                e.to_string()
            })
            .collect()
    }

    /// Asserts exactly one problem with this message.
    fn assert_one(&self, expected: &str) {
        assert_eq!(self.problems(), vec![expected.to_string()]);
    }
}

fn site(body: &str) -> String {
    format!("{SITE_HEAD}{body}")
}

#[test]
fn the_fixture_is_valid() {
    let f = Fixture::new();
    let cfg = config::load(&f.dir()).unwrap();
    let s = cfg.summary();
    assert_eq!(s.sites.len(), 1);
    let dc = &s.sites[0];
    assert_eq!((dc.rooms, dc.racks, dc.devices), (2, 2, 6));
    // 4 rack meters x 1 point + UPS 2 points + sensor 1 point.
    assert_eq!(dc.points, 7);
    assert_eq!((dc.modbus_endpoints, dc.mqtt_devices), (2, 1));
}

#[test]
fn unknown_key_names_the_key_and_the_allowed_keys() {
    let f = Fixture::new();
    f.write(
        "sites/dc.toml",
        &site(SITE_BODY).replace("utility_feeds = 2\n", "utility_feeds = 2\nrack_limit = 5\n"),
    );
    f.assert_one(
        "config/sites/dc.toml:9: site.rack_limit: found unknown key \"rack_limit\"; expected one of: id, name, building, time_zone, rack_positions, floor_load_max_kg_m2, utility_feeds, fire_suppression, ups, genset, cooling, data_hall, rack_limit_kw",
    );
}

#[test]
fn wrong_type() {
    let f = Fixture::new();
    f.write(
        "sites/dc.toml",
        &site(SITE_BODY).replace("15001\", unit = 1 }", "15001\", unit = \"ten\" }"),
    );
    f.assert_one(
        "config/sites/dc.toml:46: devices[0].modbus.unit: found string \"ten\"; expected an integer",
    );
}

#[test]
fn missing_required_key() {
    let f = Fixture::new();
    f.write(
        "sites/dc.toml",
        &site(SITE_BODY).replace("profile = \"ups\"\n", ""),
    );
    f.assert_one(
        "config/sites/dc.toml:42: devices[0].profile: found nothing; expected a value for required key \"profile\"",
    );
}

#[test]
fn bad_enum_value() {
    let f = Fixture::new();
    f.write(
        "sites/dc.toml",
        &site(SITE_BODY).replace(
            "battery = \"vrla\", redundancy = \"N+1\"",
            "battery = \"vrla\", redundancy = \"N+2\"",
        ),
    );
    f.assert_one(
        "config/sites/dc.toml:10: site.ups.redundancy: found \"N+2\"; expected one of: N, N+1, 2N",
    );
}

#[test]
fn bad_time_zone() {
    let f = Fixture::new();
    f.write(
        "sites/dc.toml",
        &site(SITE_BODY).replace("\"Asia/Jakarta\"", "\"Asia/Djakarta\""),
    );
    f.assert_one(
        "config/sites/dc.toml:5: site.time_zone: found \"Asia/Djakarta\"; expected an IANA time zone name such as \"Asia/Jakarta\"",
    );
}

#[test]
fn bad_unit() {
    let f = Fixture::new();
    f.write(
        "profiles/ups.toml",
        &UPS.replace("unit = \"kW\"", "unit = \"kw\""),
    );
    f.assert_one(
        "config/profiles/ups.toml:21: points[1].unit: found \"kw\"; expected one of: degC, %RH, %, kW, kWh, W, Wh, kVA, V, A, Hz, PF, s, min, h, L, kPa, rpm, %obs/m, count, \"\"",
    );
}

#[test]
fn rack_to_unknown_room() {
    let f = Fixture::new();
    f.write(
        "sites/dc.toml",
        &site(&SITE_BODY.replace(
            "id = \"A01..A02\"\nroom = \"dh1\"",
            "id = \"A01..A02\"\nroom = \"dh9\"",
        )),
    );
    f.assert_one(
        "config/sites/dc.toml:33: racks[0].room: found \"dh9\"; expected a room id of site dc (one of: dh1, ups1)",
    );
}

#[test]
fn device_to_unknown_profile() {
    let f = Fixture::new();
    f.write(
        "sites/dc.toml",
        &site(&SITE_BODY.replace("profile = \"ups\"", "profile = \"ups-galaxi\"")),
    );
    f.assert_one(
        "config/sites/dc.toml:44: devices[0].profile: found \"ups-galaxi\"; expected a profile id (one of: rack-meter, th, ups)",
    );
}

#[test]
fn reader_to_unknown_room() {
    let f = Fixture::new();
    let body = format!(
        "{SITE_BODY}\n[[access.readers]]\nserial = \"DC-MT-OUT-01\"\nroom = \"mantrap\"\ndirection = \"entry\"\n"
    );
    f.write("sites/dc.toml", &site(&body));
    f.assert_one(
        "config/sites/dc.toml:56: access.readers[0].room: found \"mantrap\"; expected a room id of site dc (one of: dh1, ups1)",
    );
}

#[test]
fn device_to_unknown_broker() {
    let f = Fixture::new();
    f.write(
        "sites/dc.toml",
        &site(&SITE_BODY.replace("broker = \"sim\"", "broker = \"main\"")),
    );
    f.assert_one(
        "config/sites/dc.toml:52: devices[1].mqtt.broker: found \"main\"; expected a broker id from dcguard.toml (one of: sim)",
    );
}

#[test]
fn duplicate_device_id() {
    let f = Fixture::new();
    f.write(
        "sites/dc.toml",
        &site(&SITE_BODY.replace("id = \"th-1\"", "id = \"ups-1\"")),
    );
    f.assert_one(
        "config/sites/dc.toml:49: devices[1].id: found duplicate device id \"ups-1\" (also devices[0]); expected each device id once in the site",
    );
}

#[test]
fn register_out_of_range() {
    let f = Fixture::new();
    f.write(
        "profiles/ups.toml",
        &UPS.replace("address = 1\n", "address = 65535\n"),
    );
    f.assert_one(
        "config/profiles/ups.toml:18: points[1].address: found 65535 with type f32 (2 registers, up to 65536); expected address + width within 0..=65535",
    );
}

#[test]
fn overlapping_points() {
    let f = Fixture::new();
    f.write(
        "profiles/ups.toml",
        &UPS.replace("address = 1\ntype = \"f32\"", "address = 0\ntype = \"f32\""),
    );
    f.assert_one(
        "config/profiles/ups.toml:18: points[1].address: found input 0..=1 overlapping point \"output_source\" (0..=0); expected points that do not share registers (bit points only with disjoint bits)",
    );
}

#[test]
fn order_that_does_not_fit_the_width() {
    let f = Fixture::new();
    f.write(
        "profiles/rack-meter.toml",
        &RACK_METER.replace("type = \"u16\"", "type = \"u16\"\norder = \"CDAB\""),
    );
    f.assert_one(
        "config/profiles/rack-meter.toml:13: points[0].order: found \"CDAB\" on type u16; expected ABCD or BADC (one register: no word order to swap)",
    );
}

#[test]
fn smart_dc_without_a_reader_for_each_data_hall() {
    let f = Fixture::new();
    f.write(
        "sites/dc.toml",
        &site(SITE_BODY).replace(
            "destination_room_required = false",
            "destination_room_required = true",
        ),
    );
    f.assert_one(
        "config/sites/dc.toml:18: access.destination_room_required: found true, but no entry reader for data hall dh1; expected an [[access.readers]] entry with direction = \"entry\" for every data hall of site dc",
    );
}

#[test]
fn secret_written_literally_is_reported_without_its_value() {
    let f = Fixture::new();
    f.write(
        "dcguard.toml",
        &DAEMON.replace(
            "token_env = \"DCGUARD_INFLUX_TOKEN\"",
            "token = \"s3cr3t-v4lue\"",
        ),
    );
    let problems = f.problems();
    assert_eq!(
        problems,
        vec![
            "config/dcguard.toml:34: influxdb.token: found a secret written literally; expected a reference: token_env = \"VAR\" or token_file = \"PATH\""
        ]
    );
    assert!(!problems.concat().contains("s3cr3t"));
}

#[test]
fn bad_rack_range() {
    let f = Fixture::new();
    f.write(
        "sites/dc.toml",
        &site(&SITE_BODY.replace("id = \"A01..A02\"", "id = \"A02..A1\"")),
    );
    let p = f.problems();
    assert_eq!(
        p[0],
        "config/sites/dc.toml:32: racks[0].id: found \"A02..A1\"; expected a rack id, or a range PREFIX+NN..PREFIX+NN with the same prefix and width, first <= last (e.g. \"A01..A22\")"
    );
}

#[test]
fn duplicate_endpoint_and_unit() {
    let f = Fixture::new();
    f.write(
        "sites/dc.toml",
        &site(&SITE_BODY.replace("127.0.0.1:15001\", unit = 1", "127.0.0.1:15010\", unit = 3")),
    );
    f.assert_one(
        "config/sites/dc.toml:46: devices[0].modbus.unit: found 127.0.0.1:15010 unit 3, already used by rack meter A02-a of site dc; expected a unique (endpoint, unit) pair per device",
    );
}

#[test]
fn more_racks_than_rack_positions() {
    let f = Fixture::new();
    f.write(
        "sites/dc.toml",
        &site(&SITE_BODY.replace("id = \"A01..A02\"", "id = \"A01..A05\"")),
    );
    f.assert_one(
        "config/sites/dc.toml:31: racks: found 5 racks; expected at most site.rack_positions (4) racks",
    );
}

#[test]
fn calendar_mistakes() {
    let f = Fixture::new();
    f.write(
        "dcguard.toml",
        &DAEMON
            .replace("\"17:00\"", "\"7:00\"")
            .replace(
                "\"2026-08-17\"]",
                "\"2026-08-17\", \"2026-01-01\", \"2026-02-30\"]",
            )
            .replace(
                "low    = { high = \"P3\", medium = \"P4\", low = \"P5\" }",
                "low    = { high = \"P3\", low = \"P5\" }",
            )
            .replace(
                "P4 = { target_hours = 24, clock = \"working_hours\" }\n",
                "",
            ),
    );
    assert_eq!(
        f.problems(),
        vec![
            "config/dcguard.toml:9: calendar.working_hours_end: found \"7:00\"; expected a time HH:MM such as \"08:00\"",
            "config/dcguard.toml:10: calendar.holidays[2]: found \"2026-01-01\" again; expected each holiday once",
            "config/dcguard.toml:10: calendar.holidays[3]: found \"2026-02-30\"; expected a date YYYY-MM-DD such as \"2026-01-01\"",
            "config/dcguard.toml:15: priority.matrix.low.medium: found nothing; expected a priority P1..P5 for urgency low x impact medium",
            "config/dcguard.toml:17: priority.targets.P4: found nothing; expected a target P4 = { target_hours = N, clock = \"24x7\" | \"working_hours\" }",
        ]
    );
}

#[test]
fn profile_point_mistakes() {
    let f = Fixture::new();
    let text = r#"[profile]
id = "ups"
kind = "ups"
transport = "modbus"
imitates = "a UPS-MIB-like map"

[[points]]
name = "output_source"
role = "pac.status"
register = "coil"
address = 0
type = "u16"

[[points]]
name = "output_kw"
role = "ups.output_kw"
register = "input"
address = 1
type = "f32"
scale = 0.0
unit = "kW"
valid_min = 10.0
valid_max = 0.0

[[points]]
name = "fault_bits"
role = "ups.fault"
register = "input"
address = 4
type = "bit"
"#;
    f.write("profiles/ups.toml", text);
    assert_eq!(
        f.problems(),
        vec![
            "config/profiles/ups.toml:9: points[0].role: found \"pac.status\" (a role of kind pac); expected a role of kind ups (one of: ups.output_source, ups.on_battery, ups.battery_status, ups.runtime_remaining_min, ups.seconds_on_battery, ups.battery_charge_pct, ups.load_pct, ups.output_kw, ...)",
            "config/profiles/ups.toml:12: points[0].type: found \"u16\"; expected type \"bool\" on register = \"coil\"",
            "config/profiles/ups.toml:20: points[1].scale: found 0; expected a scale other than 0",
            "config/profiles/ups.toml:23: points[1].valid_max: found 0; expected a value at or above valid_min (10)",
            "config/profiles/ups.toml:25: points[2].bit: found nothing; expected a value for key \"bit\" (0..=15) with type = \"bit\"",
        ]
    );
}

#[test]
fn several_mistakes_in_several_files_are_reported_at_once() {
    let f = Fixture::new();
    f.write(
        "dcguard.toml",
        &DAEMON
            .replace("port = 1883", "port = \"1883\"")
            .replace("[daemon]\n", "[daemon]\npassword = \"hunter2\"\n"),
    );
    f.write(
        "sites/dc.toml",
        &site(
            &SITE_BODY
                .replace("kind = \"ups_room\"", "kind = \"ups-room\"")
                .replace(
                    "class = \"server\"",
                    "class = \"server\"\ncolour = \"grey\"",
                )
                .replace("unit_start = 1", "unit_start = 1\npoll_interval_secs = -5")
                .replace("room = \"ups1\"\nmodbus", "room = \"ups2\"\nmodbus"),
        ),
    );
    f.write(
        "profiles/th.toml",
        &TH.replace("type = \"f64\"", "type = \"u16\""),
    );
    assert_eq!(
        f.problems(),
        vec![
            "config/dcguard.toml:2: daemon.password: found a secret written literally; expected a reference: password_env = \"VAR\" or password_file = \"PATH\"",
            "config/dcguard.toml:28: mqtt_brokers[0].port: found string \"1883\"; expected an integer",
            "config/profiles/th.toml:15: points[0].type: found \"u16\"; expected \"f64\" (a JSON number) or \"bool\" in an MQTT profile",
            "config/sites/dc.toml:29: rooms[1].kind: found \"ups-room\"; expected one of: data_hall, ups_room, battery_room, genset_room, electrical_room, mantrap, control_room, fuel_store, corridor",
            "config/sites/dc.toml:35: racks[0].colour: found unknown key \"colour\"; expected one of: id, room, class, limit_kw",
            "config/sites/dc.toml:42: rack_meters[0].poll_interval_secs: found integer -5; expected a non-negative integer",
            "config/sites/dc.toml:47: devices[0].room: found \"ups2\"; expected a room id of site dc (one of: dh1)",
        ]
    );
}

#[test]
fn ticketing_mistakes() {
    let f = Fixture::new();
    // DAEMON has 34 lines; this starts on line 35.
    let ticketing = r#"[ticketing.webhook]
enabled = true
url = "ftp://127.0.0.1/incidents"

[ticketing.servicenow]
enabled = true
instance_url = "https://example.service-now.com"
username = ""

[ticketing.pagerduty]
enabled = true
routing_key_env = "DCGUARD_PD_KEY"
routing_key_file = "/run/credentials/dcguard/pd"

[ticketing.dispatch]
request_timeout_secs = 0
retry_min_secs = 10
retry_max_secs = 86400
max_in_flight = 0
retry_horizon_h = 24
"#;
    f.write("dcguard.toml", &format!("{DAEMON}{ticketing}"));
    assert_eq!(
        f.problems(),
        vec![
            "config/dcguard.toml:35: ticketing.webhook: found an enabled webhook without a signing key; expected hmac_secret_env = \"VAR\" or hmac_secret_file = \"PATH\"",
            "config/dcguard.toml:37: ticketing.webhook.url: found \"ftp://127.0.0.1/incidents\"; expected an http:// or https:// URL",
            "config/dcguard.toml:39: ticketing.servicenow: found an enabled ServiceNow adapter without a password; expected password_env = \"VAR\" or password_file = \"PATH\"",
            "config/dcguard.toml:42: ticketing.servicenow.username: found \"\"; expected a user name",
            "config/dcguard.toml:44: ticketing.pagerduty: found an enabled PagerDuty adapter without a routing key; expected routing_key_env = \"VAR\" or routing_key_file = \"PATH\"",
            "config/dcguard.toml:47: ticketing.pagerduty.routing_key_file: found both routing_key_env and routing_key_file; expected one of routing_key_env and routing_key_file",
            "config/dcguard.toml:50: ticketing.dispatch.request_timeout_secs: found 0; expected 1 to 60 seconds",
            "config/dcguard.toml:52: ticketing.dispatch.retry_max_secs: found 86400; expected retry_min_secs (10) to 3600 seconds (the receivers keep idempotency keys for 24 h)",
            "config/dcguard.toml:53: ticketing.dispatch.max_in_flight: found 0; expected 1 to 64 concurrent requests",
            "config/dcguard.toml:54: ticketing.dispatch.retry_horizon_h: found 24; expected 1 to 23 hours (below the receivers' 24 h idempotency-key retention)",
        ]
    );
}

#[test]
fn a_literal_routing_key_is_reported_without_its_value() {
    let f = Fixture::new();
    let pd = "[ticketing.pagerduty]\nrouting_key = \"R0UT1NGK3Y\"\n";
    f.write("dcguard.toml", &format!("{DAEMON}{pd}"));
    let problems = f.problems();
    assert_eq!(
        problems,
        vec![
            "config/dcguard.toml:36: ticketing.pagerduty.routing_key: found a secret written literally; expected a reference: routing_key_env = \"VAR\" or routing_key_file = \"PATH\""
        ]
    );
    assert!(!problems.concat().contains("R0UT1NGK3Y"));
}

#[test]
fn ticketing_defaults_apply_when_the_sections_are_left_out() {
    let f = Fixture::new();
    let cfg = config::load(&f.dir()).unwrap();
    assert_eq!(cfg.dispatch, config::model::Dispatch::default());
    assert!(cfg.servicenow.is_none() && cfg.pagerduty.is_none());
    let pd = "[ticketing.pagerduty]\nrouting_key_env = \"DCGUARD_PD_KEY\"\n";
    f.write("dcguard.toml", &format!("{DAEMON}{pd}"));
    let cfg = config::load(&f.dir()).unwrap();
    let pd = cfg.pagerduty.unwrap();
    assert_eq!(pd.events_url, "https://events.pagerduty.com/v2/enqueue");
    assert!(!pd.enabled);
}

#[test]
fn enabled_ticketing_adapters_are_named_and_a_missing_secret_is_reported_by_reference() {
    let f = Fixture::new();
    let cfg = config::load(&f.dir()).unwrap();
    assert!(dcguard::ticketing::enabled_names(&cfg).is_empty());
    let hook = "[ticketing.webhook]\nenabled = true\nurl = \"http://127.0.0.1:9800/incidents\"\nhmac_secret_env = \"DCGUARD_TEST_UNSET_WEBHOOK_KEY\"\n";
    f.write("dcguard.toml", &format!("{DAEMON}{hook}"));
    let cfg = config::load(&f.dir()).unwrap();
    assert_eq!(dcguard::ticketing::enabled_names(&cfg), ["webhook"]);
    let err = dcguard::ticketing::from_config(&cfg)
        .err()
        .expect("the variable is not set");
    assert_eq!(
        err.to_string(),
        "ticketing adapter webhook: environment variable DCGUARD_TEST_UNSET_WEBHOOK_KEY is not set"
    );
}

#[test]
fn modbus_timing_and_fragile_device_keys_are_checked() {
    let f = Fixture::new();
    // DAEMON has 34 lines; this starts on line 35.
    let modbus = r#"[modbus]
request_timeout_ms = 5
connect_timeout_ms = 0
backoff_min_ms = 5000
backoff_max_secs = 2
busy_retries = 11
busy_retry_delay_ms = 20000
max_connections_per_endpoint = 0
pause_between_requests_ms = 10001
"#;
    f.write("dcguard.toml", &format!("{DAEMON}{modbus}"));
    // SITE_BODY ends on line 52; the additions start on line 53.
    let endpoints = r#"
[[devices]]
id = "ups-2"
profile = "ups"
room = "ups1"
modbus = { endpoint = "127.0.0.1:15001", unit = 2, request_timeout_ms = 60001 }

[[modbus_endpoints]]
endpoint = "127.0.0.1:15010"
max_connections = 17
pause_between_requests_ms = 10001
request_timeout_ms = 9

[[modbus_endpoints]]
endpoint = "127.0.0.1:15999"
close_after_scan = true

[[modbus_endpoints]]
endpoint = "127.0.0.1:15001"
max_connections = 2

[[modbus_endpoints]]
endpoint = "127.0.0.1:15001"
close_after_scan = true
"#;
    f.write("sites/dc.toml", &site(&format!("{SITE_BODY}{endpoints}")));
    assert_eq!(
        f.problems(),
        vec![
            "config/dcguard.toml:36: modbus.request_timeout_ms: found 5; expected 10 to 60000 ms",
            "config/dcguard.toml:37: modbus.connect_timeout_ms: found 0; expected 10 to 60000 ms",
            "config/dcguard.toml:39: modbus.backoff_max_secs: found 2; expected 5 to 3600 seconds (not below backoff_min_ms)",
            "config/dcguard.toml:40: modbus.busy_retries: found 11; expected 0 to 10 retries",
            "config/dcguard.toml:41: modbus.busy_retry_delay_ms: found 20000; expected 0 to 10000 ms",
            "config/dcguard.toml:42: modbus.max_connections_per_endpoint: found 0; expected 1 to 16 connections (each carries one request at a time)",
            "config/dcguard.toml:43: modbus.pause_between_requests_ms: found 10001; expected 0 to 10000 ms",
            "config/sites/dc.toml:58: devices[2].modbus.request_timeout_ms: found 60001; expected 10 to 60000 ms",
            "config/sites/dc.toml:62: modbus_endpoints[0].max_connections: found 17; expected 1 to 16 connections (each carries one request at a time)",
            "config/sites/dc.toml:63: modbus_endpoints[0].pause_between_requests_ms: found 10001; expected 0 to 10000 ms",
            "config/sites/dc.toml:64: modbus_endpoints[0].request_timeout_ms: found 9; expected 10 to 60000 ms",
            "config/sites/dc.toml:67: modbus_endpoints[1].endpoint: found \"127.0.0.1:15999\"; expected the endpoint of a Modbus device or rack meter of this site (one of: 127.0.0.1:15001, 127.0.0.1:15010)",
            "config/sites/dc.toml:75: modbus_endpoints[3].endpoint: found 127.0.0.1:15001 listed twice; expected each endpoint once in [[modbus_endpoints]]",
        ]
    );
}

#[test]
fn modbus_settings_resolve_daemon_wide_then_per_endpoint_then_per_device() {
    use dcguard::config::model::{DeviceTransport, EndpointSettings, ModbusPolling};
    use dcguard::sources::modbus::poller::{self, PollerOptions};
    use std::time::Duration;

    let f = Fixture::new();
    let cfg = config::load(&f.dir()).unwrap();
    assert_eq!(cfg.modbus, ModbusPolling::default());
    assert_eq!(
        PollerOptions::from_config(&cfg.modbus),
        PollerOptions::default()
    );
    let shipped = PollerOptions::default();
    assert_eq!(shipped.client.request_timeout, Duration::from_secs(1));
    assert_eq!(shipped.reconnect.initial, Duration::from_secs(1));
    assert_eq!(shipped.reconnect.max, Duration::from_secs(30));
    assert_eq!(shipped.unit_backoff, shipped.reconnect);

    let modbus = "[modbus]
request_timeout_ms = 800
backoff_min_ms = 500
backoff_max_secs = 10
pause_between_requests_ms = 5
";
    f.write("dcguard.toml", &format!("{DAEMON}{modbus}"));
    let extra = r#"
[[modbus_endpoints]]
endpoint = "127.0.0.1:15010"
max_connections = 2
close_after_scan = true
request_timeout_ms = 2000

[[devices]]
id = "ups-2"
profile = "ups"
room = "ups1"
modbus = { endpoint = "127.0.0.1:15001", unit = 2, request_timeout_ms = 3000 }
"#;
    f.write("sites/dc.toml", &site(&format!("{SITE_BODY}{extra}")));
    let cfg = config::load(&f.dir()).unwrap();
    let options = PollerOptions::from_config(&cfg.modbus);
    assert_eq!(options.client.request_timeout, Duration::from_millis(800));
    assert_eq!(options.reconnect.initial, Duration::from_millis(500));
    assert_eq!(options.unit_backoff.max, Duration::from_secs(10));
    let gateway = "127.0.0.1:15010".parse().unwrap();
    let ups = "127.0.0.1:15001".parse().unwrap();
    assert_eq!(
        cfg.endpoint_settings(gateway),
        EndpointSettings {
            max_connections: 2,
            pause_between_requests: Duration::from_millis(5),
            close_after_scan: true,
            request_timeout: Some(Duration::from_secs(2)),
        }
    );
    assert_eq!(
        cfg.endpoint_settings(ups),
        EndpointSettings {
            pause_between_requests: Duration::from_millis(5),
            ..EndpointSettings::default()
        }
    );
    let ups2 = &cfg
        .site("dc")
        .unwrap()
        .devices
        .iter()
        .find(|d| d.id == "ups-2")
        .unwrap();
    assert!(matches!(
        ups2.transport,
        DeviceTransport::Modbus { request_timeout: Some(t), .. } if t == Duration::from_secs(3)
    ));
    let specs = poller::endpoints(&cfg);
    let spec = specs.iter().find(|s| s.configured == gateway).unwrap();
    assert_eq!(spec.settings.max_connections, 2);
    // Rack meters A01-a/b and A02-a/b: four units over two connections, two each.
    let groups = spec.connection_groups();
    assert_eq!(groups.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 2]);
}

#[test]
fn rule_overrides_name_unknown_rules_places_and_misfits() {
    let f = Fixture::new();
    let overrides = r#"
[[rule_overrides]]
rule = "hall_temperature_hihg"
limit = 26.0

[[rule_overrides]]
rule = "hall_temperature_high"
room = "dh9"
limit = 26.0

[[rule_overrides]]
rule = "rack_feed_overload"
rack = "A07"
priority = "P2"

[[rule_overrides]]
rule = "ups_on_battery"
device = "ups-9"
enabled = false

[[rule_overrides]]
rule = "water_detected"
limit = 1.0

[[rule_overrides]]
rule = "ups_fault"
room = "ups1"
device = "ups-1"
enabled = false

[[rule_overrides]]
rule = "ups_fault"
device = "ups-1"

[[rule_overrides]]
rule = "hall_humidity_high"
room = "dh1"
deadband = 1.0

[[rule_overrides]]
rule = "hall_humidity_high"
room = "dh1"
deadband = 3.0
"#;
    f.write("sites/dc.toml", &site(&format!("{SITE_BODY}{overrides}")));
    let problems = f.problems();
    let expected = [
        "config/sites/dc.toml:55: rule_overrides[0].rule: found \"hall_temperature_hihg\"; expected a rule id of the catalogue (one of: hall_temperature_high, hall_temperature_low, hall_temperature_near_high, hall_temperature_near_low, hall_humidity_high, hall_humidity_low, hall_temperature_rate, rack_feed_overload, ...)",
        "config/sites/dc.toml:60: rule_overrides[1].room: found \"dh9\"; expected a room id of site dc (one of: dh1, ups1)",
        "config/sites/dc.toml:65: rule_overrides[2].rack: found \"A07\"; expected a rack id of site dc (one of: A01, A02)",
        "config/sites/dc.toml:70: rule_overrides[3].device: found \"ups-9\"; expected a device id of site dc (one of: A01-a, A01-b, A02-a, A02-b, ups-1, th-1)",
        "config/sites/dc.toml:75: rule_overrides[4].limit: found 1; expected no limit: rule water_detected has no numeric threshold (discrete input or unit count)",
        "config/sites/dc.toml:77: rule_overrides[5]: found more than one of room, rack and device; expected at most one of room, rack or device (none: the whole site)",
        "config/sites/dc.toml:83: rule_overrides[6]: found nothing to override; expected at least one of enabled, priority, limit, on_delay_secs, off_delay_secs, deadband",
        "config/sites/dc.toml:93: rule_overrides[8].rule: found hall_humidity_high for the same scope as rule_overrides[7]; expected each rule once per site, room, rack or device",
    ];
    assert_eq!(problems, expected);
}

#[test]
fn rule_overrides_that_fit_are_accepted() {
    let f = Fixture::new();
    let overrides = r#"
[[rule_overrides]]
rule = "hall_temperature_high"
room = "dh1"
limit = 26.0
priority = "P2"
on_delay_secs = 10

[[rule_overrides]]
rule = "rack_feed_overload"
rack = "A01"
off_delay_secs = 5
deadband = 0.2

[[rule_overrides]]
rule = "ups_on_battery"
enabled = false
"#;
    f.write("sites/dc.toml", &site(&format!("{SITE_BODY}{overrides}")));
    let cfg = config::load(&f.dir()).unwrap();
    let o = &cfg.sites[0].rule_overrides;
    assert_eq!(o.len(), 3);
    assert_eq!(o[0].limit, Some(26.0));
    assert_eq!(
        o[1].selector,
        dcguard::rules::Selector::Rack("A01".to_owned())
    );
    assert_eq!(o[2].enabled, Some(false));
}

#[test]
fn shelve_maximum_out_of_range() {
    let f = Fixture::new();
    f.write(
        "dcguard.toml",
        &format!("{DAEMON}\n[alarms]\nshelve_max_h = 0\n"),
    );
    let problems = f.problems();
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].ends_with("alarms.shelve_max_h: found 0; expected 1..=168 hours"),
        "{problems:#?}"
    );
}

#[test]
fn a_reader_serial_at_two_sites() {
    // The shipped configuration, with the DRC's outer mantrap reader renamed to the DC's.
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("config");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    for rel in ["dcguard.toml", "sites/dc.toml", "sites/smart-dc.toml"] {
        fs::create_dir_all(dir.join(rel).parent().unwrap()).unwrap();
        fs::copy(shipped.join(rel), dir.join(rel)).unwrap();
    }
    fs::create_dir_all(dir.join("profiles")).unwrap();
    for entry in fs::read_dir(shipped.join("profiles")).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), dir.join("profiles").join(entry.file_name())).unwrap();
    }
    let drc = fs::read_to_string(shipped.join("sites/drc.toml")).unwrap();
    fs::write(
        dir.join("sites/drc.toml"),
        drc.replace("serial = \"DRC-MT-OUT-01\"", "serial = \"DC-MT-OUT-01\""),
    )
    .unwrap();
    let errors = match config::load(&dir) {
        Ok(_) => panic!("a serial at two sites must be refused"),
        Err(e) => e,
    };
    let problems: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].contains("access.readers[0].serial: found \"DC-MT-OUT-01\", already a reader of sites/dc.toml; expected each reader serial in one site only"),
        "{problems:#?}"
    );
}
