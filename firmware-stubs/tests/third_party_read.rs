//! A third-party Modbus client, `mbpoll` (Debian package), reads the simulators serving the
//! SHIPPED `config/`, and the raw words it gets match what the profiles say for the values
//! the test forces. Expected words are computed here from std (`to_be_bytes` plus an
//! explicit byte permutation per order), not with the stubs' encoder.
//!
//! The points are discovered from the shipped profiles (one device per Modbus profile),
//! so the test keeps covering whatever is shipped; it asserts that every data type and
//! every word order of the configuration contract is among them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::process::Command;

use firmware_stubs::sim::{RunningSim, Sim, SimOptions};
use firmware_stubs::spec::{DeviceSpec, PointSpec, Transport};
use firmware_stubs::world::SimValue;

const ALL_TYPES: [&str; 11] = [
    "u16", "i16", "u32", "i32", "u64", "i64", "f32", "f64", "bool", "bit", "string",
];
const ALL_ORDERS: [&str; 4] = ["ABCD", "CDAB", "BADC", "DCBA"];
/// Registers (or bits) per mbpoll request; mbpoll accepts 1..=125.
const MAX_BLOCK: u32 = 100;
/// Largest run of unused addresses read through inside one block.
const MAX_GAP: u32 = 16;

/// What one address must read as.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cell {
    Word(u16),
    Bit(bool),
}

impl std::fmt::Debug for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cell::Word(w) => write!(f, "{w:#06X}"),
            Cell::Bit(b) => write!(f, "{}", u8::from(*b)),
        }
    }
}

/// One point's forced value and the cells it must produce.
struct Probe {
    point: String,
    value: SimValue,
    table: String,
    /// address -> (mask of the bits this point owns, expected bits); whole words have
    /// mask 0xFFFF; coils/discrete inputs use `Cell::Bit`.
    cells: Vec<(u32, u16, Cell)>,
}

fn config_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config")
}

fn mbpoll_available() {
    match Command::new("mbpoll").arg("-V").output() {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
            "mbpoll is not installed; run scripts/test.sh, which installs it \
             (Debian package `mbpoll`), then run the tests again"
        ),
        Err(error) => panic!("cannot run mbpoll: {error}"),
    }
}

/// The value bytes, most significant first, laid out as the transmitted registers.
/// Written out per order from the table in docs/configuration.md.
fn registers(bytes: &[u8], order: &str) -> Vec<u16> {
    let n = bytes.len();
    assert!(n % 2 == 0 && n > 0);
    let words = n / 2;
    let mut out = Vec::with_capacity(words);
    for i in 0..words {
        let (hi, lo) = match order {
            // W0.hi W0.lo W1.hi W1.lo ...
            "ABCD" => (bytes[2 * i], bytes[2 * i + 1]),
            // word order reversed: register i carries value word (words - 1 - i)
            "CDAB" => {
                let w = words - 1 - i;
                (bytes[2 * w], bytes[2 * w + 1])
            }
            // bytes swapped inside each register
            "BADC" => (bytes[2 * i + 1], bytes[2 * i]),
            // fully reversed: register i carries bytes n-1-2i, n-2-2i
            "DCBA" => (bytes[n - 1 - 2 * i], bytes[n - 2 - 2 * i]),
            other => panic!("unknown order {other}"),
        };
        out.push(u16::from_be_bytes([hi, lo]));
    }
    out
}

/// The forced value of a point and the cells it must read as.
fn probe(point: &PointSpec, index: usize) -> Probe {
    let ty = point.ty.as_str();
    let order = point.order.clone().unwrap_or_else(|| "ABCD".to_owned());
    let scale = point.scale.unwrap_or(1.0);
    let offset = point.offset.unwrap_or(0.0);
    let address = u32::from(point.address.expect("a Modbus point has an address"));
    let table = point
        .register
        .clone()
        .expect("a Modbus point has a register");
    let i = index as i64;
    // Enum points are forced by name; the wire carries the key.
    let enum_pick = |limit: u64| -> Option<(String, u64)> {
        point
            .enum_names
            .iter()
            .filter_map(|(key, name)| {
                let raw = match key.strip_prefix("0x") {
                    Some(hex) => u64::from_str_radix(hex, 16).ok()?,
                    None => key.parse().ok()?,
                };
                (raw > 0 && raw <= limit).then(|| (name.clone(), raw))
            })
            .max_by_key(|(_, raw)| *raw)
    };
    // An integer raw value as the engineering number that encodes to it.
    let engineering = |raw: i64| SimValue::Number(raw as f64 * scale + offset);
    let words = |bytes: &[u8]| {
        registers(bytes, &order)
            .into_iter()
            .enumerate()
            .map(|(k, w)| (address + k as u32, 0xFFFF, Cell::Word(w)))
            .collect::<Vec<_>>()
    };
    let (value, cells) = match ty {
        "u16" | "i16" | "u32" | "i32" | "u64" | "i64" => {
            let limit = match ty {
                "u16" | "i16" => 0x7FFF,
                "u32" | "i32" => 0x7FFF_FFFF,
                _ => 0x7FFF_FFFF_FFFF,
            };
            let (value, raw): (SimValue, i64) = match enum_pick(limit) {
                Some((name, raw)) => (SimValue::Text(name), raw as i64),
                None => {
                    let raw = match ty {
                        "u16" => 0x1234 + i,
                        "i16" => -(0x1234 + i),
                        "u32" => 0x1234_5678 + i,
                        "i32" => -(0x1234_5678 + i),
                        "u64" => 0x1234_5678_9ABC + i,
                        _ => -(0x1234_5678_9ABC + i),
                    };
                    (engineering(raw), raw)
                }
            };
            let bytes = match ty {
                "u16" => (raw as u16).to_be_bytes().to_vec(),
                "i16" => (raw as i16).to_be_bytes().to_vec(),
                "u32" => (raw as u32).to_be_bytes().to_vec(),
                "i32" => (raw as i32).to_be_bytes().to_vec(),
                "u64" => (raw as u64).to_be_bytes().to_vec(),
                _ => raw.to_be_bytes().to_vec(),
            };
            (value, words(&bytes))
        }
        "f32" | "f64" => {
            let raw = -1234.5678 + i as f64;
            let value = raw * scale + offset;
            // The profile's formula, engineering = raw * scale + offset, inverted.
            let wire = (value - offset) / scale;
            let bytes = if ty == "f32" {
                (wire as f32).to_be_bytes().to_vec()
            } else {
                wire.to_be_bytes().to_vec()
            };
            (SimValue::Number(value), words(&bytes))
        }
        "bit" => {
            let bit = u32::from(point.bit.unwrap_or(0));
            let count = u32::from(point.bit_count.unwrap_or(1));
            let field_max = (1u64 << count) - 1;
            let (value, raw) = match enum_pick(field_max) {
                Some((name, raw)) => (SimValue::Text(name), raw),
                None => {
                    // 1, 10 (0b1010), ... : alternating bits, never all ones or zeros.
                    let raw = if count == 1 {
                        1
                    } else {
                        0xAAAA_u64 & field_max
                    };
                    (engineering(raw as i64), raw)
                }
            };
            let mask = (field_max as u16) << bit;
            (
                value,
                vec![(address, mask, Cell::Word((raw as u16) << bit))],
            )
        }
        "string" => {
            let registers_len = usize::from(point.length.expect("a string has a length"));
            let alphabet = b"DCGUARD-SIM-0123456789abcdefghijklmnopqrstuvwxyz";
            // One character short of full, so the NUL padding is on the wire too.
            let text: String = alphabet
                .iter()
                .cycle()
                .skip(index % 7)
                .take(registers_len * 2 - 1)
                .map(|b| char::from(*b))
                .collect();
            let mut bytes = text.as_bytes().to_vec();
            bytes.push(0);
            assert!(
                order == "ABCD" || order == "BADC",
                "point {}: strings take ABCD or BADC only",
                point.name
            );
            (SimValue::Text(text), words(&bytes))
        }
        "bool" => {
            let on = index % 2 == 0;
            (SimValue::Bool(on), vec![(address, 1, Cell::Bit(on))])
        }
        other => panic!("point {}: unknown type {other}", point.name),
    };
    Probe {
        point: point.name.clone(),
        value,
        table,
        cells,
    }
}

/// Merges the probes' cells per table: address -> expected cell (bit fields combined,
/// bits of a shared register not owned by any point read as 0).
fn expected_cells(probes: &[Probe]) -> BTreeMap<String, BTreeMap<u32, Cell>> {
    let mut tables: BTreeMap<String, BTreeMap<u32, Cell>> = BTreeMap::new();
    for probe in probes {
        let table = tables.entry(probe.table.clone()).or_default();
        for (address, mask, cell) in &probe.cells {
            let merged = match (table.get(address), cell) {
                (Some(Cell::Word(old)), Cell::Word(new)) => Cell::Word((old & !mask) | new),
                _ => *cell,
            };
            table.insert(*address, merged);
        }
    }
    tables
}

/// Splits a table's addresses into read blocks that avoid `never_read` ranges.
fn blocks(addresses: &BTreeSet<u32>, never_read: &[Range<u32>]) -> Vec<Range<u32>> {
    let mut out: Vec<Range<u32>> = Vec::new();
    for &address in addresses {
        if let Some(last) = out.last_mut() {
            let extended = last.start..address + 1;
            let gap = address - (last.end - 1);
            let clean = never_read
                .iter()
                .all(|r| r.end <= extended.start || extended.end <= r.start);
            if extended.len() as u32 <= MAX_BLOCK && gap <= MAX_GAP && clean {
                *last = extended;
                continue;
            }
        }
        out.push(address..address + 1);
    }
    out
}

/// Reads one block with mbpoll: address -> cell.
fn mbpoll(port: u16, unit: u8, table: &str, block: &Range<u32>) -> BTreeMap<u32, Cell> {
    let kind = match table {
        "coil" => "0",
        "discrete" => "1",
        "input" => "3:hex",
        "holding" => "4:hex",
        other => panic!("unknown register table {other}"),
    };
    let output = Command::new("mbpoll")
        .args([
            "-m",
            "tcp",
            "-p",
            &port.to_string(),
            "-a",
            &unit.to_string(),
        ])
        .args(["-r", &block.start.to_string()])
        .args(["-c", &block.len().to_string()])
        .args(["-t", kind, "-1", "-0", "-o", "5", "127.0.0.1"])
        .output()
        .expect("mbpoll runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "mbpoll on port {port} unit {unit} {table} {block:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut cells = BTreeMap::new();
    for line in stdout.lines() {
        // "[128]: \t0x05DC" (registers) or "[2]: \t1" (bits)
        let Some((address, value)) = line.strip_prefix('[').and_then(|l| l.split_once("]:")) else {
            continue;
        };
        let address: u32 = address.parse().expect("mbpoll prints decimal addresses");
        let value = value.trim();
        let cell = match value.strip_prefix("0x") {
            Some(hex) => Cell::Word(u16::from_str_radix(hex, 16).expect("hex word")),
            None => Cell::Bit(value == "1"),
        };
        cells.insert(address, cell);
    }
    assert_eq!(
        cells.len(),
        block.len(),
        "mbpoll printed {} values for {block:?}:\n{stdout}",
        cells.len()
    );
    cells
}

/// One device per Modbus profile of the shipped sites: (site, device).
fn one_device_per_profile(sim: &RunningSim) -> Vec<(String, DeviceSpec)> {
    let mut seen = BTreeSet::new();
    let mut chosen = Vec::new();
    for site in sim.sites() {
        for device in &site.spec.devices {
            if matches!(device.transport, Transport::Modbus { .. })
                && seen.insert(device.profile.profile.id.clone())
            {
                chosen.push((site.spec.id.clone(), device.clone()));
            }
        }
    }
    chosen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mbpoll_reads_the_words_the_profiles_define() {
    mbpoll_available();
    let sim = Sim::start(SimOptions::new(config_dir()).ephemeral())
        .await
        .expect("the shipped config starts");
    let devices = one_device_per_profile(&sim);
    assert!(
        devices.len() >= 6,
        "expected the shipped Modbus profiles (UPS, PAC, genset, VESDA, meters, ATS), found {}",
        devices.len()
    );

    let mut types_seen = BTreeSet::new();
    let mut orders_seen = BTreeSet::new();
    let mut words_compared = 0usize;
    let mut reads = 0usize;
    for (site, device) in &devices {
        let Transport::Modbus { endpoint, unit } = device.transport else {
            unreachable!("chosen for Modbus");
        };
        let actual: SocketAddr = sim.endpoint(endpoint).expect("endpoint is served");
        let probes: Vec<Probe> = device
            .profile
            .points
            .iter()
            .enumerate()
            .map(|(i, p)| probe(p, i))
            .collect();
        {
            let world = sim.world(site).expect("site world");
            let mut world = world.lock().unwrap();
            for probe in &probes {
                world.set_point(&device.id, &probe.point, probe.value.clone());
            }
        }
        for point in &device.profile.points {
            types_seen.insert(point.ty.clone());
            let wide = matches!(
                point.ty.as_str(),
                "u32" | "i32" | "u64" | "i64" | "f32" | "f64"
            );
            if wide {
                orders_seen.insert(point.order.clone().unwrap_or_else(|| "ABCD".into()));
            }
        }
        let never_read: Vec<(String, Range<u32>)> = device
            .profile
            .modbus
            .iter()
            .flat_map(|m| &m.never_read)
            .map(|r| {
                let start = u32::from(r.start);
                (r.register.clone(), start..start + u32::from(r.count))
            })
            .collect();
        for (table, expected) in expected_cells(&probes) {
            let forbidden: Vec<Range<u32>> = never_read
                .iter()
                .filter(|(t, _)| *t == table)
                .map(|(_, r)| r.clone())
                .collect();
            let addresses: BTreeSet<u32> = expected.keys().copied().collect();
            for block in blocks(&addresses, &forbidden) {
                let port = actual.port();
                let block_for_thread = block.clone();
                let table_for_thread = table.clone();
                let got = tokio::task::spawn_blocking(move || {
                    mbpoll(port, unit, &table_for_thread, &block_for_thread)
                })
                .await
                .expect("mbpoll thread");
                reads += 1;
                for address in block {
                    if let Some(want) = expected.get(&address) {
                        assert_eq!(
                            got.get(&address),
                            Some(want),
                            "{} ({}) {table} {address}",
                            device.id,
                            device.profile.profile.id
                        );
                        words_compared += 1;
                    }
                }
            }
        }
    }

    let missing_types: Vec<&str> = ALL_TYPES
        .iter()
        .copied()
        .filter(|t| !types_seen.contains(*t))
        .collect();
    assert!(
        missing_types.is_empty(),
        "the shipped profiles no longer cover types {missing_types:?}"
    );
    let missing_orders: Vec<&str> = ALL_ORDERS
        .iter()
        .copied()
        .filter(|o| !orders_seen.contains(*o))
        .collect();
    assert!(
        missing_orders.is_empty(),
        "the shipped profiles no longer cover multi-register orders {missing_orders:?}"
    );
    assert!(words_compared > 50, "only {words_compared} cells compared");
    eprintln!("{reads} mbpoll reads, {words_compared} cells compared");
    sim.shutdown().await;
}

#[test]
fn registers_follow_the_documented_orders() {
    // f32 1.5 = 0x3FC00000, the example of the brief.
    let bytes = 1.5f32.to_be_bytes();
    assert_eq!(registers(&bytes, "ABCD"), [0x3FC0, 0x0000]);
    assert_eq!(registers(&bytes, "CDAB"), [0x0000, 0x3FC0]);
    assert_eq!(registers(&bytes, "BADC"), [0xC03F, 0x0000]);
    assert_eq!(registers(&bytes, "DCBA"), [0x0000, 0xC03F]);
    let bytes = 0x0102_0304_0506_0708u64.to_be_bytes();
    assert_eq!(registers(&bytes, "CDAB"), [0x0708, 0x0506, 0x0304, 0x0102]);
    assert_eq!(registers(&bytes, "DCBA"), [0x0807, 0x0605, 0x0403, 0x0201]);
}
