//! The simulators' Modbus TCP server against a small fixture configuration, read with
//! tokio-modbus's client (and raw MBAP frames where the client cannot express the test).

use std::net::SocketAddr;
use std::path::Path;

use firmware_stubs::scenario::Action;
use firmware_stubs::sim::{RunningSim, Sim, SimOptions};
use firmware_stubs::world::SimValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{ExceptionCode, Slave};

const ENDPOINT: &str = "127.0.0.1:15001";
const OTHER_ENDPOINT: &str = "127.0.0.1:15002";

const PROFILE: &str = r#"
[profile]
id = "fixture-ups"
kind = "ups"
transport = "modbus"
imitates = "nothing: a test fixture with one point of each shape"

[modbus]
never_read = [{ register = "holding", start = 30, count = 2 }]

[[points]]
name = "status"
register = "input"
address = 0
type = "u16"
enum = { "3" = "normal", "5" = "battery" }

[[points]]
name = "voltage"
register = "input"
address = 1
type = "u16"
scale = 0.1

[[points]]
name = "temperature"
register = "input"
address = 2
type = "i16"
scale = 0.1

# input 3 is a gap: inside the span, read as 0

[[points]]
name = "power"
register = "input"
address = 4
type = "f32"
order = "CDAB"

[[points]]
name = "energy"
register = "input"
address = 6
type = "u64"
order = "DCBA"

[[points]]
name = "alarm_a"
register = "holding"
address = 10
type = "bit"
bit = 0
bit_count = 4

[[points]]
name = "alarm_b"
register = "holding"
address = 10
type = "bit"
bit = 4
bit_count = 4

[[points]]
name = "model"
register = "holding"
address = 11
type = "string"
length = 4

[[points]]
name = "precise"
register = "holding"
address = 15
type = "f64"
order = "BADC"

[[points]]
name = "counter"
register = "holding"
address = 32
type = "i32"
offset = -100.0

[[points]]
name = "on_battery"
register = "discrete"
address = 0
type = "bool"

[[points]]
name = "running"
register = "coil"
address = 2
type = "bool"

[[points]]
name = "bypass"
register = "coil"
address = 4
type = "bool"
"#;

fn site() -> String {
    format!(
        r#"
[site]
id = "dc"

[[rooms]]
id = "ups1"
kind = "ups_room"

[[devices]]
id = "ups-1"
profile = "fixture-ups"
room = "ups1"
modbus = {{ endpoint = "{ENDPOINT}", unit = 1 }}

[[devices]]
id = "ups-2"
profile = "fixture-ups"
room = "ups1"
modbus = {{ endpoint = "{ENDPOINT}", unit = 2 }}

[[devices]]
id = "ups-3"
profile = "fixture-ups"
room = "ups1"
modbus = {{ endpoint = "{OTHER_ENDPOINT}", unit = 7 }}
"#
    )
}

fn write_config(dir: &Path, site: &str) {
    std::fs::create_dir_all(dir.join("profiles")).unwrap();
    std::fs::create_dir_all(dir.join("sites")).unwrap();
    std::fs::write(dir.join("profiles/fixture-ups.toml"), PROFILE).unwrap();
    std::fs::write(dir.join("sites/dc.toml"), site).unwrap();
}

async fn start() -> (tempfile::TempDir, RunningSim) {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &site());
    let sim = Sim::start(SimOptions::new(dir.path()).ephemeral())
        .await
        .unwrap();
    (dir, sim)
}

fn endpoint(sim: &RunningSim, configured: &str) -> SocketAddr {
    sim.endpoint(configured.parse().unwrap()).unwrap()
}

async fn client(sim: &RunningSim, unit: u8) -> Context {
    tokio_modbus::client::tcp::connect_slave(endpoint(sim, ENDPOINT), Slave(unit))
        .await
        .unwrap()
}

fn set(sim: &RunningSim, device: &str, point: &str, value: SimValue) {
    sim.world("dc")
        .unwrap()
        .lock()
        .unwrap()
        .set_point(device, point, value);
}

#[tokio::test]
async fn values_read_back_as_the_profile_encodes_them() {
    let (_dir, sim) = start().await;
    set(&sim, "ups-1", "status", SimValue::Text("battery".into()));
    set(&sim, "ups-1", "voltage", SimValue::Number(230.4));
    set(&sim, "ups-1", "temperature", SimValue::Number(-12.3));
    set(&sim, "ups-1", "power", SimValue::Number(1.5));
    set(&sim, "ups-1", "energy", SimValue::Number(305_419_896.0));
    set(&sim, "ups-1", "alarm_a", SimValue::Number(3.0));
    set(&sim, "ups-1", "alarm_b", SimValue::Number(2.0));
    set(&sim, "ups-1", "model", SimValue::Text("Galaxy".into()));
    set(&sim, "ups-1", "precise", SimValue::Number(1.5));
    set(&sim, "ups-1", "counter", SimValue::Number(-1.0));
    set(&sim, "ups-1", "on_battery", SimValue::Bool(true));
    set(&sim, "ups-1", "running", SimValue::Bool(true));
    // The other unit on the same gateway has its own values.
    set(&sim, "ups-2", "voltage", SimValue::Number(400.0));

    let mut ctx = client(&sim, 1).await;
    let input = ctx.read_input_registers(0, 10).await.unwrap().unwrap();
    assert_eq!(
        input,
        [
            5,      // status "battery" -> enum key 5
            0x0900, // 230.4 / 0.1 = 2304
            0xFF85, // -12.3 / 0.1 = -123
            0,      // gap
            0x0000, 0x3FC0, // f32 1.5 = 0x3FC00000, CDAB
            0x7856, 0x3412, 0x0000, 0x0000, // u64 0x12345678, DCBA
        ]
    );
    let holding = ctx.read_holding_registers(10, 9).await.unwrap().unwrap();
    assert_eq!(
        holding,
        [
            0x0023, // nibbles 3 (bits 0-3) and 2 (bits 4-7) share the register
            0x4761, 0x6C61, 0x7879, 0x0000, // "Galaxy" NUL padded
            0xF83F, 0x0000, 0x0000, 0x0000, // f64 1.5 = 0x3FF8000000000000, BADC
        ]
    );
    // i32 with offset -100: raw = -1 + 100 = 99
    let counter = ctx.read_holding_registers(32, 2).await.unwrap().unwrap();
    assert_eq!(counter, [0x0000, 0x0063]);
    assert_eq!(
        ctx.read_discrete_inputs(0, 1).await.unwrap().unwrap(),
        [true]
    );
    set(&sim, "ups-1", "bypass", SimValue::Bool(false));
    assert_eq!(
        ctx.read_coils(2, 3).await.unwrap().unwrap(),
        [true, false, false]
    );
    set(&sim, "ups-1", "bypass", SimValue::Number(1.0));
    assert_eq!(
        ctx.read_coils(2, 3).await.unwrap().unwrap(),
        [true, false, true]
    );

    ctx.set_slave(Slave(2));
    let input = ctx.read_input_registers(1, 1).await.unwrap().unwrap();
    assert_eq!(input, [4000]);
    sim.shutdown().await;
}

#[tokio::test]
async fn values_follow_the_world_between_requests() {
    let (_dir, sim) = start().await;
    let mut ctx = client(&sim, 1).await;
    set(&sim, "ups-1", "voltage", SimValue::Number(1.0));
    assert_eq!(ctx.read_input_registers(1, 1).await.unwrap().unwrap(), [10]);
    set(&sim, "ups-1", "voltage", SimValue::Number(2.0));
    assert_eq!(ctx.read_input_registers(1, 1).await.unwrap().unwrap(), [20]);
    // A sentinel is served as it is.
    set(&sim, "ups-1", "voltage", SimValue::Raw(0xFFFC));
    assert_eq!(
        ctx.read_input_registers(1, 1).await.unwrap().unwrap(),
        [0xFFFC]
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn reads_outside_the_span_or_in_never_read_are_illegal_addresses() {
    let (_dir, sim) = start().await;
    let mut ctx = client(&sim, 1).await;
    // input span is 0..10
    assert_eq!(
        ctx.read_input_registers(9, 2).await.unwrap(),
        Err(ExceptionCode::IllegalDataAddress)
    );
    assert_eq!(
        ctx.read_input_registers(100, 1).await.unwrap(),
        Err(ExceptionCode::IllegalDataAddress)
    );
    // holding span 10..34, never_read 30..32
    assert_eq!(
        ctx.read_holding_registers(9, 1).await.unwrap(),
        Err(ExceptionCode::IllegalDataAddress)
    );
    assert_eq!(
        ctx.read_holding_registers(28, 4).await.unwrap(),
        Err(ExceptionCode::IllegalDataAddress)
    );
    assert_eq!(
        ctx.read_holding_registers(31, 1).await.unwrap(),
        Err(ExceptionCode::IllegalDataAddress)
    );
    assert!(ctx.read_holding_registers(28, 2).await.unwrap().is_ok());
    assert!(ctx.read_holding_registers(32, 2).await.unwrap().is_ok());
    // coils span 2..5, discrete inputs 0..1
    assert_eq!(
        ctx.read_coils(1, 2).await.unwrap(),
        Err(ExceptionCode::IllegalDataAddress)
    );
    assert_eq!(
        ctx.read_discrete_inputs(1, 1).await.unwrap(),
        Err(ExceptionCode::IllegalDataAddress)
    );
    // above the protocol limit of one read
    assert_eq!(
        ctx.read_holding_registers(10, 126).await.unwrap(),
        Err(ExceptionCode::IllegalDataValue)
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn unknown_unit_on_a_gateway_is_a_gateway_target_failure() {
    let (_dir, sim) = start().await;
    let mut ctx = client(&sim, 3).await;
    assert_eq!(
        ctx.read_input_registers(0, 1).await.unwrap(),
        Err(ExceptionCode::GatewayTargetDevice)
    );
    // unit 7 lives on the other endpoint only
    ctx.set_slave(Slave(7));
    assert_eq!(
        ctx.read_input_registers(0, 1).await.unwrap(),
        Err(ExceptionCode::GatewayTargetDevice)
    );
    let mut other =
        tokio_modbus::client::tcp::connect_slave(endpoint(&sim, OTHER_ENDPOINT), Slave(7))
            .await
            .unwrap();
    assert!(other.read_input_registers(0, 1).await.unwrap().is_ok());
    sim.shutdown().await;
}

/// Writes are sent as raw frames: the project's clippy configuration forbids the client's
/// write methods everywhere (read-only towards equipment), and this is the simulator
/// checking that it refuses what a daemon must never send.
#[tokio::test]
async fn writes_are_illegal_functions_and_are_logged() {
    let (_dir, sim) = start().await;
    let mut stream = TcpStream::connect(endpoint(&sim, ENDPOINT)).await.unwrap();
    let writes: [(u8, &[u8]); 3] = [
        (0x06, &[0, 10, 0, 1]),                // write single register 10 = 1
        (0x10, &[0, 10, 0, 2, 4, 0, 1, 0, 2]), // write registers 10..12
        (0x05, &[0, 2, 0xFF, 0]),              // write single coil 2 = on
    ];
    for (i, (function, data)) in writes.iter().enumerate() {
        let transaction = 100 + i as u16;
        let mut frame = transaction.to_be_bytes().to_vec();
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(&(data.len() as u16 + 2).to_be_bytes());
        frame.extend_from_slice(&[1, *function]);
        frame.extend_from_slice(data);
        stream.write_all(&frame).await.unwrap();
        assert_eq!(
            read_frame(&mut stream).await,
            (transaction, 1, vec![function | 0x80, 0x01]),
            "function {function:#04x}"
        );
    }
    let mut ctx = client(&sim, 1).await;
    assert!(ctx.read_holding_registers(10, 1).await.unwrap().is_ok());
    assert!(ctx.read_input_registers(0, 1).await.unwrap().is_ok());
    assert!(ctx.read_input_registers(0, 1).await.unwrap().is_ok());

    let log = sim.function_codes();
    let configured: SocketAddr = ENDPOINT.parse().unwrap();
    assert_eq!(
        log.counts(configured).into_iter().collect::<Vec<_>>(),
        [(3, 1), (4, 2), (5, 1), (6, 1), (0x10, 1)]
    );
    assert!(log.counts(OTHER_ENDPOINT.parse().unwrap()).is_empty());
    assert!(log.codes_seen().iter().any(|fc| !(1..=4).contains(fc)));
    sim.shutdown().await;
}

/// One request frame: transaction id, unit, FC 4 read input registers.
fn read_input_frame(transaction: u16, unit: u8, address: u16, count: u16) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&transaction.to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 6, unit, 4]);
    frame.extend_from_slice(&address.to_be_bytes());
    frame.extend_from_slice(&count.to_be_bytes());
    frame
}

/// Reads one response frame: (transaction id, unit, PDU).
async fn read_frame(stream: &mut TcpStream) -> (u16, u8, Vec<u8>) {
    let mut head = [0u8; 7];
    stream.read_exact(&mut head).await.unwrap();
    let length = usize::from(u16::from_be_bytes([head[4], head[5]]));
    let mut pdu = vec![0u8; length - 1];
    stream.read_exact(&mut pdu).await.unwrap();
    (u16::from_be_bytes([head[0], head[1]]), head[6], pdu)
}

#[tokio::test]
async fn requests_are_counted_even_when_tokio_modbus_cannot_decode_them() {
    let (_dir, sim) = start().await;
    let mut stream = TcpStream::connect(endpoint(&sim, ENDPOINT)).await.unwrap();
    // FC 0x17 (read/write multiple registers) with a byte count that does not match.
    stream
        .write_all(&[0, 9, 0, 0, 0, 8, 1, 0x17, 0, 0, 0, 1, 0, 0])
        .await
        .unwrap();
    // The server drops the connection on an undecodable frame.
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest).await;
    assert_eq!(
        sim.function_codes()
            .counts(ENDPOINT.parse().unwrap())
            .get(&0x17),
        Some(&1)
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn raw_frames_keep_their_transaction_ids() {
    let (_dir, sim) = start().await;
    set(&sim, "ups-1", "status", SimValue::Number(3.0));
    let mut stream = TcpStream::connect(endpoint(&sim, ENDPOINT)).await.unwrap();
    stream
        .write_all(&read_input_frame(0x1234, 1, 0, 1))
        .await
        .unwrap();
    assert_eq!(read_frame(&mut stream).await, (0x1234, 1, vec![4, 2, 0, 3]));
    stream
        .write_all(&read_input_frame(0x1235, 9, 0, 1))
        .await
        .unwrap();
    assert_eq!(read_frame(&mut stream).await, (0x1235, 9, vec![0x84, 0x0B]));
    sim.shutdown().await;
}

fn apply(sim: &RunningSim, action: Action) {
    sim.world("dc")
        .unwrap()
        .lock()
        .unwrap()
        .apply(&action)
        .unwrap();
}

#[tokio::test]
async fn exception_fault_answers_with_its_code_until_cleared() {
    let (_dir, sim) = start().await;
    let mut ctx = client(&sim, 1).await;
    apply(
        &sim,
        Action::Exception {
            device: "ups-1".into(),
            code: 6,
            times: None,
        },
    );
    assert_eq!(
        ctx.read_input_registers(0, 1).await.unwrap(),
        Err(ExceptionCode::ServerDeviceBusy)
    );
    // Even for a request that would otherwise be refused for its address.
    assert_eq!(
        ctx.read_input_registers(500, 1).await.unwrap(),
        Err(ExceptionCode::ServerDeviceBusy)
    );
    // The other unit behind the same gateway is not affected.
    ctx.set_slave(Slave(2));
    assert!(ctx.read_input_registers(0, 1).await.unwrap().is_ok());
    apply(
        &sim,
        Action::ClearException {
            device: "ups-1".into(),
        },
    );
    ctx.set_slave(Slave(1));
    assert!(ctx.read_input_registers(0, 1).await.unwrap().is_ok());
    sim.shutdown().await;
}

#[tokio::test]
async fn a_silent_device_never_answers_but_the_connection_stays_open() {
    let (_dir, sim) = start().await;
    set(&sim, "ups-2", "status", SimValue::Number(3.0));
    apply(
        &sim,
        Action::Silence {
            device: "ups-1".into(),
        },
    );
    let mut stream = TcpStream::connect(endpoint(&sim, ENDPOINT)).await.unwrap();
    stream
        .write_all(&read_input_frame(1, 1, 0, 1))
        .await
        .unwrap();
    stream
        .write_all(&read_input_frame(2, 2, 0, 1))
        .await
        .unwrap();
    // The first answer on the connection is the one to unit 2: unit 1 stayed silent.
    assert_eq!(read_frame(&mut stream).await, (2, 2, vec![4, 2, 0, 3]));
    apply(
        &sim,
        Action::Unsilence {
            device: "ups-1".into(),
        },
    );
    stream
        .write_all(&read_input_frame(3, 1, 1, 1))
        .await
        .unwrap();
    let (transaction, unit, pdu) = read_frame(&mut stream).await;
    assert_eq!((transaction, unit, pdu[0]), (3, 1, 4));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_delayed_device_answers_correctly_after_its_delay() {
    let (_dir, sim) = start().await;
    set(&sim, "ups-1", "voltage", SimValue::Number(230.0));
    apply(
        &sim,
        Action::Delay {
            device: "ups-1".into(),
            millis: 300,
        },
    );
    let mut ctx = client(&sim, 1).await;
    let started = std::time::Instant::now();
    assert_eq!(
        ctx.read_input_registers(1, 1).await.unwrap().unwrap(),
        [2300]
    );
    // A lower bound only: the answer cannot come before the delay.
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    sim.shutdown().await;
}

#[tokio::test]
async fn drop_connection_closes_the_endpoints_connections_only() {
    let (_dir, sim) = start().await;
    let mut idle = TcpStream::connect(endpoint(&sim, ENDPOINT)).await.unwrap();
    let mut ctx = client(&sim, 1).await;
    assert!(ctx.read_input_registers(0, 1).await.unwrap().is_ok());
    let mut other =
        tokio_modbus::client::tcp::connect_slave(endpoint(&sim, OTHER_ENDPOINT), Slave(7))
            .await
            .unwrap();
    assert!(other.read_input_registers(0, 1).await.unwrap().is_ok());

    apply(
        &sim,
        Action::DropConnection {
            device: "ups-2".into(),
        },
    );
    // An idle connection is closed by the server without any request: EOF.
    let mut rest = Vec::new();
    assert_eq!(idle.read_to_end(&mut rest).await.unwrap(), 0);
    // The client's next request fails on the closed connection...
    assert!(ctx.read_input_registers(0, 1).await.is_err());
    // ...a new connection is served...
    let mut again = client(&sim, 1).await;
    assert!(again.read_input_registers(0, 1).await.unwrap().is_ok());
    // ...and the other endpoint's connection was not touched.
    assert!(other.read_input_registers(0, 1).await.unwrap().is_ok());
    sim.shutdown().await;
}

#[tokio::test]
async fn endpoints_off_loopback_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &site().replace(OTHER_ENDPOINT, "192.0.2.10:502"),
    );
    let error = Sim::start(SimOptions::new(dir.path()).ephemeral())
        .await
        .err()
        .expect("a non-loopback endpoint is refused");
    assert_eq!(
        error.to_string(),
        "site dc: device ups-3 is at 192.0.2.10:502, which is not a loopback address; \
         the simulators only ever listen on loopback"
    );
    let error = Sim::start(
        SimOptions::new(dir.path())
            .ephemeral()
            .with_mqtt_broker("10.0.0.1:1883".parse().unwrap()),
    )
    .await
    .err()
    .expect("a non-loopback broker is refused");
    assert!(error.to_string().contains("10.0.0.1:1883"), "{error}");
}

#[tokio::test]
async fn unknown_sites_and_duplicate_units_are_errors() {
    let (dir, sim) = start().await;
    sim.shutdown().await;
    let error = Sim::start(SimOptions::new(dir.path()).ephemeral().with_site("drc"))
        .await
        .err()
        .expect("drc is not in the fixture");
    assert_eq!(
        error.to_string(),
        "no site \"drc\" in the configuration (sites: dc)"
    );
    write_config(dir.path(), &site().replace("unit = 2", "unit = 1"));
    let error = Sim::start(SimOptions::new(dir.path()).ephemeral())
        .await
        .err()
        .expect("two devices on one unit");
    assert_eq!(
        error.to_string(),
        "site dc: endpoint 127.0.0.1:15001 unit 1 is used by both ups-1 and ups-2"
    );
}
