//! The acquisition benchmarks of issue 3 (`cargo bench -p dcguard --bench acquisition -- [plan|one-conn|python|daemon|mqtt|all]`); see docs/benchmarks.md.
//!
//! One binary, several roles: without `role` it is the orchestrator, which starts every
//! process a benchmark needs (the stub server, client loops, `dcguard-sim`, the daemon,
//! Mosquitto, the Python peer), reads their CPU and memory from /proc, kills each one
//! afterwards, and prints a Markdown report (also written to `target/bench/report.md`).
//! With `role NAME ...` it is one of those processes (see `modbus.rs`, `mqtt.rs`).
//! Every loop is bounded in count and in time; only 127.0.0.1 is used.
//!
//! Run by `cargo bench` only (it passes `--bench`); under `cargo test` it does nothing.

mod common;
mod daemon;
mod modbus;
mod mqtt;
mod planning;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use common::{
    Proc, fmt, machine, num, parse_f64, release_binary, root, scratch, self_exe, summary,
    wait_listening,
};

/// Settings of one orchestrator run.
#[derive(Debug, Clone)]
struct Settings {
    runs: usize,
    /// Seconds per measurement of benchmarks 3 and 4.
    secs: f64,
    /// Seconds per measurement of benchmark 2.
    daemon_secs: f64,
    /// Messages per run of benchmark 5.
    messages: u64,
    out: PathBuf,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "role") {
        return role(&args[1..]);
    }
    if !args.iter().any(|a| a == "--bench") {
        println!(
            "acquisition benchmarks: run with scripts/bench.sh or `cargo bench --bench acquisition`"
        );
        return Ok(());
    }
    let mut settings = Settings {
        runs: 5,
        secs: 3.0,
        daemon_secs: 60.0,
        messages: 50_000,
        out: root().join("target").join("bench").join("report.md"),
    };
    let mut chosen = Vec::new();
    let mut it = args.iter().filter(|a| *a != "--bench");
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--runs" => settings.runs = parse_f64(it.next(), "--runs")?.clamp(1.0, 50.0) as usize,
            "--secs" => settings.secs = parse_f64(it.next(), "--secs")?.clamp(0.5, 60.0),
            "--daemon-secs" => {
                settings.daemon_secs = parse_f64(it.next(), "--daemon-secs")?.clamp(5.0, 600.0)
            }
            "--messages" => {
                settings.messages = parse_f64(it.next(), "--messages")?.clamp(100.0, 1e6) as u64
            }
            "--out" => settings.out = PathBuf::from(it.next().context("--out needs a path")?),
            "plan" | "one-conn" | "python" | "daemon" | "mqtt" => chosen.push(arg.clone()),
            "all" => {
                chosen.extend(["plan", "one-conn", "python", "mqtt", "daemon"].map(String::from))
            }
            other => bail!(
                "unknown argument {other:?}; benchmarks: plan one-conn python daemon mqtt all"
            ),
        }
    }
    if chosen.is_empty() {
        chosen.extend(["plan", "one-conn", "python", "mqtt", "daemon"].map(String::from));
    }
    let mut report = String::new();
    writeln!(report, "# Acquisition benchmark report\n")?;
    writeln!(report, "Machine: {}\n", machine())?;
    writeln!(report, "Settings: {settings:?}\n")?;
    for bench in &chosen {
        eprintln!("== {bench}");
        let section = match bench.as_str() {
            "plan" => (
                "1. Requests per scan vs the theoretical minimum",
                planning::run(),
            ),
            "one-conn" => ("3. One connection, unthrottled", one_connection(&settings)),
            "python" => (
                "4. CPU per polled point vs a pymodbus loop",
                python_peer(&settings),
            ),
            "daemon" => (
                "2. Full inventory at the shipped intervals",
                daemon::run(settings.runs, settings.daemon_secs),
            ),
            "mqtt" => ("5. MQTT QoS 1", mqtt::run(settings.runs, settings.messages)),
            _ => continue,
        };
        let body = section.1.unwrap_or_else(|e| format!("FAILED: {e:#}\n"));
        writeln!(report, "## {}\n\n{body}", section.0)?;
        println!("## {}\n\n{body}", section.0);
    }
    if let Some(parent) = settings.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&settings.out, &report)?;
    eprintln!("report written to {}", settings.out.display());
    Ok(())
}

/// A helper role of this binary, started by the orchestrator.
fn role(args: &[String]) -> Result<()> {
    let arg = |i: usize| -> Result<&str> {
        args.get(i)
            .map(String::as_str)
            .with_context(|| format!("role {args:?}: missing argument {i}"))
    };
    let number = |i: usize| -> Result<f64> {
        arg(i)?
            .parse::<f64>()
            .with_context(|| format!("argument {i}"))
    };
    match arg(0)? {
        "stub-server" => modbus::stub_server(Duration::from_secs_f64(number(1)?)),
        "loop" => modbus::request_loop(arg(1)?, number(2)? as u16, number(3)?, number(4)? as u64),
        "scheduled-raw" => modbus::scheduled_raw(
            arg(1)?.as_ref(),
            number(2)? as u16,
            number(3)?,
            number(4)?,
            args.get(5).is_some_and(|a| a == "floor"),
        ),
        "poller" => modbus::poller_role(
            arg(1)?.as_ref(),
            number(2)? as u16,
            number(3)?,
            number(4)?,
            args.get(5).is_some_and(|a| a == "shipped"),
        ),
        "mqtt-sub" => mqtt::subscriber(
            arg(1)?,
            number(2)? as u16,
            number(3)? as u64,
            number(4)?,
            arg(5)?,
        ),
        other => bail!("unknown role {other}"),
    }
}

/// Benchmark 3: one connection, unthrottled, the daemon's client against a raw
/// tokio-modbus client on the same stub server, 125-register FC3.
fn one_connection(settings: &Settings) -> Result<String> {
    let dir = scratch("one-conn")?;
    let exe = self_exe()?;
    let mut server = Proc::spawn(
        "stub-server",
        Command::new(&exe).args(["role", "stub-server", "900"]),
        &dir.join("server.log"),
    )?;
    let port: u16 = server.read_line()?.parse().context("stub server port")?;
    wait_listening(([127, 0, 0, 1], port).into(), Duration::from_secs(5))?;
    let load0 = common::loadavg();
    let (mut raw, mut ours, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    // ABBA within each run (raw, dcguard, dcguard, raw, or the reverse), each half a
    // run long, so that a load change on the shared machine hits both clients alike.
    let half = (settings.secs / 2.0).to_string();
    for run in 0..settings.runs {
        let order: [&str; 4] = if run % 2 == 0 {
            ["raw", "dcguard", "dcguard", "raw"]
        } else {
            ["dcguard", "raw", "raw", "dcguard"]
        };
        let mut totals: std::collections::BTreeMap<&str, (f64, f64, f64, f64)> = Default::default();
        for (slot, kind) in order.into_iter().enumerate() {
            let result = Proc::spawn(
                kind,
                Command::new(&exe).args(["role", "loop", kind, &port.to_string(), &half, "500000"]),
                &dir.join(format!("{kind}-{run}-{slot}.log")),
            )?
            .finish()?;
            eprintln!("one-conn run {run} {kind}: {result}");
            let t = totals.entry(kind).or_default();
            t.0 += num(&result, "requests");
            t.1 += num(&result, "secs");
            t.2 += num(&result, "cpu_secs");
            t.3 += num(&result, "errors");
        }
        let merged = |kind: &str| {
            let t = totals.get(kind).copied().unwrap_or_default();
            serde_json::json!({"requests": t.0, "secs": t.1, "cpu_secs": t.2, "errors": t.3})
        };
        let (r, o) = (merged("raw"), merged("dcguard"));
        ratios.push(
            (num(&o, "requests") / num(&o, "secs")) / (num(&r, "requests") / num(&r, "secs")),
        );
        raw.push(r);
        ours.push(o);
    }
    drop(server);
    let mut out = String::new();
    writeln!(
        out,
        "| client | req/s | client CPU % of one core | client CPU µs/req | errors |"
    )?;
    writeln!(out, "|---|---|---|---|---|")?;
    for (name, results) in [
        ("raw tokio-modbus 0.17 `Context`", &raw),
        ("dcguard `ReadOnlyClient`", &ours),
    ] {
        let rates: Vec<f64> = results
            .iter()
            .map(|r| num(r, "requests") / num(r, "secs"))
            .collect();
        let cpu: Vec<f64> = results
            .iter()
            .map(|r| 100.0 * num(r, "cpu_secs") / num(r, "secs"))
            .collect();
        let per: Vec<f64> = results
            .iter()
            .map(|r| 1e6 * num(r, "cpu_secs") / num(r, "requests"))
            .collect();
        let errors: f64 = results.iter().map(|r| num(r, "errors")).sum();
        writeln!(
            out,
            "| {name} | {} | {} | {} | {errors} |",
            fmt(summary(&rates), 0),
            fmt(summary(&cpu), 0),
            fmt(summary(&per), 1)
        )?;
    }
    let ratio = summary(&ratios);
    writeln!(
        out,
        "\nRatio dcguard / raw request rate (per run, same server): {}. Goal >= 0.9: {}.",
        fmt(ratio, 2),
        if ratio.median >= 0.9 { "MET" } else { "MISSED" }
    )?;
    writeln!(
        out,
        "Runs: {}, each {} s per client as two halves in ABBA order; each response checked (125 words, first = start address). Load average before/after: {load0} / {}.",
        settings.runs,
        settings.secs,
        common::loadavg()
    )?;
    Ok(out)
}

/// Port offset of the simulator in benchmarks 2 and 4 (away from the shipped 15000-15299
/// that other sessions' simulators use), below the ephemeral port range.
pub const SIM_OFFSET: u16 = 10_000;

/// Benchmark 4: CPU per polled point, the daemon's poller against a pymodbus loop, both
/// polling `dcguard-sim` unthrottled.
fn python_peer(settings: &Settings) -> Result<String> {
    let dir = scratch("python")?;
    let load0 = common::loadavg();
    let python = root()
        .join("target")
        .join("bench-venv")
        .join("bin")
        .join("python");
    if !python.exists() {
        bail!(
            "{} is missing: run scripts/bench.sh, which creates the venv with pymodbus",
            python.display()
        );
    }
    let config_dir = root().join("config");
    let config = modbus::load_config(&config_dir)?;
    let plan_file = dir.join("plan.json");
    modbus::write_plan_json(&config, SIM_OFFSET, &plan_file)?;
    let first = modbus::poller_first_endpoint(&config)?;
    let _sim = Proc::spawn(
        "dcguard-sim",
        Command::new(release_binary("dcguard-sim")?)
            .arg("--config")
            .arg(&config_dir)
            .args(["--port-offset", &SIM_OFFSET.to_string()])
            .env("RUST_LOG", "warn"),
        &dir.join("sim.log"),
    )?;
    wait_listening(modbus::shifted(first, SIM_OFFSET), Duration::from_secs(20))?;
    let exe = self_exe()?;
    let peer = root()
        .join("benches")
        .join("acquisition")
        .join("pymodbus_peer.py");
    // Per kind: (points, secs, cpu_secs, bad or failed) of each run.
    let mut results: std::collections::BTreeMap<&str, Vec<[f64; 4]>> = Default::default();
    let (mut ratios, mut raw_ratios) = (Vec::new(), Vec::new());
    let secs = settings.secs.max(3.0).to_string();
    let offset = SIM_OFFSET.to_string();
    for run in 0..settings.runs {
        let order: [&str; 3] = if run % 2 == 0 {
            ["dcguard", "raw", "pymodbus"]
        } else {
            ["pymodbus", "raw", "dcguard"]
        };
        let mut per_point = std::collections::BTreeMap::new();
        for kind in order {
            let mut command = match kind {
                "dcguard" => {
                    let mut c = Command::new(&exe);
                    c.args(["role", "poller"])
                        .arg(&config_dir)
                        .args([&offset, "1", &secs]);
                    c
                }
                "raw" => {
                    let mut c = Command::new(&exe);
                    c.args(["role", "scheduled-raw"])
                        .arg(&config_dir)
                        .args([&offset, "1", &secs, "floor"]);
                    c
                }
                _ => {
                    let mut c = Command::new(&python);
                    c.arg(&peer).arg(&plan_file).args(["1", &secs]);
                    c
                }
            };
            let result = Proc::spawn(kind, &mut command, &dir.join(format!("{kind}-{run}.log")))?
                .finish()?;
            eprintln!("python run {run} {kind}: {result}");
            let row = match kind {
                "dcguard" => [
                    num(&result, "good") + num(&result, "bad"),
                    num(&result, "secs"),
                    num(&result, "cpu_secs"),
                    num(&result, "bad"),
                ],
                _ => [
                    num(&result, "points"),
                    num(&result, "secs"),
                    num(&result, "cpu_secs"),
                    num(&result, "errors"),
                ],
            };
            per_point.insert(kind, row[2] / row[0]);
            results.entry(kind).or_default().push(row);
        }
        ratios.push(per_point["dcguard"] / per_point["pymodbus"]);
        raw_ratios.push(per_point["raw"] / per_point["pymodbus"]);
    }
    let mut out = String::new();
    writeln!(
        out,
        "| poller | points/s | CPU % of one core | CPU µs per point | bad or failed |"
    )?;
    writeln!(out, "|---|---|---|---|---|")?;
    for (kind, name) in [
        (
            "dcguard",
            "dcguard poller (library; all intervals at the 1 ms floor; decodes)",
        ),
        (
            "raw",
            "raw tokio-modbus client, same requests, no decoding (the Rust floor)",
        ),
        (
            "pymodbus",
            "pymodbus 3.16 sync loop, same requests, struct decoding",
        ),
    ] {
        let rows = results.get(kind).cloned().unwrap_or_default();
        let rates: Vec<f64> = rows.iter().map(|r| r[0] / r[1]).collect();
        let cpu: Vec<f64> = rows.iter().map(|r| 100.0 * r[2] / r[1]).collect();
        let per: Vec<f64> = rows.iter().map(|r| 1e6 * r[2] / r[0]).collect();
        let bad: f64 = rows.iter().map(|r| r[3]).sum();
        writeln!(
            out,
            "| {name} | {} | {} | {} | {bad} |",
            fmt(summary(&rates), 0),
            fmt(summary(&cpu), 0),
            fmt(summary(&per), 2)
        )?;
    }
    writeln!(
        out,
        "\nRatio raw tokio-modbus / pymodbus CPU per point (per run): {}.",
        fmt(summary(&raw_ratios), 3)
    )?;
    let ratio = summary(&ratios);
    writeln!(
        out,
        "Ratio dcguard / pymodbus CPU per point (per run): {} = 1/{:.1}. Goal <= 1/20 (0.05): {}.",
        fmt(ratio, 3),
        1.0 / ratio.median,
        if ratio.median <= 0.05 {
            "MET"
        } else {
            "MISSED"
        }
    )?;
    writeln!(
        out,
        "Runs: {}, {secs} s each after 1 s warm-up, order alternating; all shipped Modbus devices of the 3 sites on `dcguard-sim --port-offset {SIM_OFFSET}`. Load average before/after: {load0} / {}.",
        settings.runs,
        common::loadavg()
    )?;
    Ok(out)
}
