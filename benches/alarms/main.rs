//! Rule-evaluation throughput benchmark (docs/benchmarks.md, "Alarm pipeline"): the pure
//! alarm core (rule engine, alarm book, incident book) fed the whole shipped inventory's
//! readings, on one thread.
//!
//! The values come from the firmware stubs' worlds (the same physics the simulators serve),
//! one reading per configured point per simulated second; each round is one batch, observed
//! and then evaluated once, as the alarm task does with the readings it drains. No store,
//! no network: this is the CPU cost of the alarm path per reading.
//!
//! Run: `cargo bench -p dcguard --bench alarms -- [ROUNDS] [--overrides]` (default 60
//! rounds). `--overrides` adds `[[rule_overrides]]` for every catalogue rule at every site
//! and room (each setting the rule's own on-delay again, so behaviour is unchanged) to
//! measure the cost of resolving overrides.

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use dcguard::alarms::task::{AlarmTaskOptions, Core};
use dcguard::config::model::{DeviceTransport, ProfileTransport};
use dcguard::model::{PointId, Reading, Value};
use firmware_stubs::world::{SimValue, World};

/// One configured point and where its simulated value comes from.
struct Source {
    id: PointId,
    site: usize,
    device: usize,
    point: usize,
    enum_names: Option<std::collections::BTreeMap<i64, String>>,
}

fn main() {
    // `cargo bench` adds `--bench`; take the first number as the rounds.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rounds: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(60);
    let with_overrides = args.iter().any(|a| a == "--overrides");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut config = match dcguard::config::load(&dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(64);
        }
    };
    let specs = match firmware_stubs::spec::load_sites(&dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(64);
        }
    };
    let mut worlds: Vec<World> = specs.iter().map(|s| World::new(s, 7)).collect();
    let mut sources = Vec::new();
    for site in &config.sites {
        let Some(si) = specs.iter().position(|s| s.id == site.id) else {
            continue;
        };
        for device in &site.devices {
            let Some(di) = specs[si].devices.iter().position(|d| d.id == device.id) else {
                continue;
            };
            let spec = &specs[si].devices[di];
            let points: Vec<(String, Option<_>)> =
                match (&device.profile.transport, &device.transport) {
                    (ProfileTransport::Modbus(p), DeviceTransport::Modbus { .. }) => p
                        .points
                        .iter()
                        .map(|pt| {
                            let names = (!pt.enum_names.is_empty()).then(|| pt.enum_names.clone());
                            (pt.name.clone(), names)
                        })
                        .collect(),
                    (ProfileTransport::Mqtt(p), _) => {
                        p.points.iter().map(|pt| (pt.name.clone(), None)).collect()
                    }
                    _ => Vec::new(),
                };
            for (name, enum_names) in points {
                let Some(pi) = spec.profile.points.iter().position(|p| p.name == name) else {
                    continue;
                };
                sources.push(Source {
                    id: PointId::new(&site.id, &device.id, &name),
                    site: si,
                    device: di,
                    point: pi,
                    enum_names,
                });
            }
        }
    }

    let mut overrides = 0;
    if with_overrides {
        use dcguard::rules::catalogue::CATALOGUE;
        use dcguard::rules::{RuleOverride, Selector};
        for site in &mut config.sites {
            let rooms: Vec<String> = site.rooms.iter().map(|r| r.id.clone()).collect();
            for spec in CATALOGUE {
                let selectors = std::iter::once(Selector::Site)
                    .chain(rooms.iter().cloned().map(Selector::Room));
                for selector in selectors {
                    site.rule_overrides.push(RuleOverride {
                        on_delay: Some(spec.params.on_delay),
                        ..RuleOverride::new(&site.id, spec.id, selector)
                    });
                    overrides += 1;
                }
            }
        }
    }

    let mut core = Core::new(&config, &AlarmTaskOptions::default());
    let start = Utc::now();
    let (mut readings_total, mut alarm_ts, mut incident_ts) = (0usize, 0usize, 0usize);
    let mut busy = Duration::ZERO;
    // Thread CPU time of the measured calls, in clock ticks (10 ms): on a loaded machine
    // the wall-clock figure includes time spent waiting for a core.
    let mut cpu_ticks = 0u64;
    let mut evals = Vec::with_capacity(rounds);
    for round in 0..rounds {
        for w in &mut worlds {
            w.step(Duration::from_secs(1));
        }
        let now = start + TimeDelta::seconds(round as i64 + 1);
        let batch: Vec<Reading> = sources
            .iter()
            .filter_map(|s| {
                let dev = &specs[s.site].devices[s.device];
                let value = worlds[s.site].point_value(dev, &dev.profile.points[s.point])?;
                let value = match value {
                    SimValue::Bool(b) => Value::Bool(b),
                    SimValue::Text(t) => Value::Text(t.as_str().into()),
                    SimValue::Number(n) => number(n, s.enum_names.as_ref()),
                    SimValue::Raw(r) => number(r as f64, s.enum_names.as_ref()),
                };
                Some(Reading::good(s.id.clone(), value, now))
            })
            .collect();
        let cpu0 = thread_cpu_ticks();
        let t0 = Instant::now();
        let (a, i) = core.run_batch(&batch, now);
        let took = t0.elapsed();
        if let (Some(c0), Some(c1)) = (cpu0, thread_cpu_ticks()) {
            cpu_ticks += c1.saturating_sub(c0);
        }
        busy += took;
        evals.push(took);
        readings_total += batch.len();
        alarm_ts += a;
        incident_ts += i;
    }
    evals.sort();
    let pct = |p: f64| evals[((evals.len() - 1) as f64 * p).round() as usize];
    println!("points: {}", sources.len());
    println!("rule overrides: {overrides}");
    println!("rounds: {rounds} (one reading per point per round, one evaluation per round)");
    println!(
        "readings: {readings_total} in {:.3} s wall clock, {:.2} s of thread CPU",
        busy.as_secs_f64(),
        cpu_ticks as f64 / TICKS_PER_SEC
    );
    println!(
        "throughput: {:.0} readings/s of wall clock on one thread",
        readings_total as f64 / busy.as_secs_f64()
    );
    if cpu_ticks > 0 {
        println!(
            "throughput: {:.0} readings/s of thread CPU (one core)",
            readings_total as f64 / (cpu_ticks as f64 / TICKS_PER_SEC)
        );
    }
    println!(
        "per round (observe all + evaluate + apply): p50 {:.1} ms, p99 {:.1} ms",
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3
    );
    println!("alarm transitions: {alarm_ts}, incident transitions: {incident_ts}");
    // The snapshot the alarm task writes with each commit (at most every 5 s when only
    // delays and counters changed).
    let t0 = Instant::now();
    let json = serde_json::to_string(core.book()).unwrap_or_default();
    let took = t0.elapsed();
    println!(
        "alarm-book snapshot: {} alarms, {} bytes of JSON, serialized in {:.1} ms",
        core.book().alarms().count(),
        json.len(),
        took.as_secs_f64() * 1e3
    );
}

/// A number, or an enum state with its name when the profile names its values.
fn number(n: f64, names: Option<&std::collections::BTreeMap<i64, String>>) -> Value {
    match names {
        Some(names) if n.fract() == 0.0 => {
            let raw = n as i64;
            Value::State {
                raw,
                name: names.get(&raw).map(|n| n.as_str().into()),
            }
        }
        _ => Value::Number(n),
    }
}

/// Linux `USER_HZ`: the unit of the CPU times in `/proc`.
const TICKS_PER_SEC: f64 = 100.0;

/// User + system CPU time of the calling thread, in clock ticks (`/proc/thread-self/stat`,
/// fields 14 and 15); `None` where there is no such file.
fn thread_cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // The command name (field 2) may hold spaces: count fields after its closing paren.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}
