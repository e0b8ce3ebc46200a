//! Benchmark 2: the release daemon (`dcguard run`) on the full shipped 3-site inventory against `dcguard-sim`: CPU, memory, and CPU per Modbus request against a scheduled raw tokio-modbus client.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::SIM_OFFSET;
use crate::common::{
    Proc, copy_dir, cpu_secs, cpu_secs_ticks, fmt, free_port, memory_kib, num, pause,
    release_binary, root, scratch, self_exe, shift_ports, summary, wait_listening,
};
use crate::modbus::{load_config, modbus_endpoints, planned_rate};

/// Seconds after start before measuring (connections, first scans).
const WARMUP_SECS: f64 = 5.0;
/// Bytes of one Modbus TCP read request (MBAP 7 + function 1 + start 2 + count 2).
const REQUEST_BYTES: f64 = 12.0;

/// The shipped configuration, copied with the Modbus ports moved by [`SIM_OFFSET`], the
/// broker on `mqtt_port`, the web listener on `listen_port` and the data directory in
/// the scratch folder. Nothing else changes: same devices, profiles and intervals.
fn bench_config(dir: &Path, mqtt_port: u16, listen_port: u16) -> Result<PathBuf> {
    let config = dir.join("config");
    if config.exists() {
        std::fs::remove_dir_all(&config)?;
    }
    copy_dir(&root().join("config"), &config)?;
    for entry in std::fs::read_dir(config.join("sites"))? {
        let path = entry?.path();
        let text = std::fs::read_to_string(&path)?;
        std::fs::write(&path, shift_ports(&text, SIM_OFFSET))?;
    }
    let main = config.join("dcguard.toml");
    let data = dir.join("data");
    std::fs::create_dir_all(&data)?;
    let text = std::fs::read_to_string(&main)?;
    let replaced = text
        .replacen("port = 1883", &format!("port = {mqtt_port}"), 1)
        .replacen(
            "\"127.0.0.1:8080\"",
            &format!("\"127.0.0.1:{listen_port}\""),
            1,
        )
        .replacen(
            "\"/var/lib/dcguard\"",
            &format!("{:?}", data.display().to_string()),
            1,
        );
    if replaced.matches(&mqtt_port.to_string()).count() == 0 {
        bail!("could not move the broker port in {}", main.display());
    }
    std::fs::write(&main, replaced)?;
    Ok(config)
}

/// Bytes sent by process `pid` on its established connections to `ports`, from `ss`.
fn bytes_sent(pid: u32, ports: &BTreeSet<u16>) -> Option<f64> {
    let output = Command::new("ss")
        .args(["-tinpH", "state", "established"])
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let mut total = 0.0;
    let mut counting = false;
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) {
            // A socket line: local and peer address, then users:((..,pid=N,..)).
            let fields: Vec<&str> = line.split_whitespace().collect();
            let peer_port = fields
                .get(3)
                .and_then(|p| p.rsplit_once(':'))
                .and_then(|(_, p)| p.parse::<u16>().ok());
            counting = line.contains(&format!("pid={pid},"))
                && peer_port.is_some_and(|p| ports.contains(&p));
        } else if counting {
            if let Some(v) = line
                .split_whitespace()
                .find_map(|f| f.strip_prefix("bytes_sent:"))
                .and_then(|v| v.parse::<f64>().ok())
            {
                total += v;
            }
            counting = false;
        }
    }
    Some(total)
}

/// Runs benchmark 2 (`runs` runs of `secs` seconds each for the daemon and for the raw
/// client). Returns the Markdown section.
pub fn run(runs: usize, secs: f64) -> Result<String> {
    let dir = scratch("daemon")?;
    let load0 = crate::common::loadavg();
    let mqtt_port = free_port()?;
    let listen_port = free_port()?;
    let config_dir = bench_config(&dir, mqtt_port, listen_port)?;
    let config = load_config(&config_dir)?;
    let (planned_requests, planned_points) = planned_rate(&config);
    let endpoints = modbus_endpoints(&config);
    let ports: BTreeSet<u16> = endpoints.iter().map(|e| e.port()).collect();

    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {mqtt_port} 127.0.0.1\nuser root\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\nlog_dest stderr\n"
        ),
    )?;
    let _broker = Proc::spawn_logged(
        "mosquitto",
        Command::new("/usr/sbin/mosquitto").arg("-c").arg(&conf),
        &dir.join("mosquitto.log"),
    )?;
    wait_listening(([127, 0, 0, 1], mqtt_port).into(), Duration::from_secs(10))?;
    let _sim = Proc::spawn_logged(
        "dcguard-sim",
        Command::new(release_binary("dcguard-sim")?)
            .arg("--config")
            .arg(&config_dir)
            .args(["--mqtt", &format!("127.0.0.1:{mqtt_port}")])
            .env("RUST_LOG", "warn"),
        &dir.join("sim.log"),
    )?;
    for endpoint in &endpoints {
        wait_listening(*endpoint, Duration::from_secs(20))?;
    }
    let daemon_bin = release_binary("dcguard")?;
    let exe = self_exe()?;

    struct DaemonRun {
        cpu_pct: f64,
        cpu_pct_ticks: f64,
        hwm_mib: f64,
        rss_mib: f64,
        requests_per_sec: Option<f64>,
        cpu_us_per_request: f64,
    }
    let (mut daemon_runs, mut raw_runs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut poller_runs, mut poller_ratios) = (Vec::new(), Vec::new());
    for run in 0..runs {
        // A fresh store every run: the daemon's database grows with what it keeps.
        let data = dir.join("data");
        if data.exists() {
            std::fs::remove_dir_all(&data)?;
        }
        std::fs::create_dir_all(&data)?;
        let mut daemon = Proc::spawn_logged(
            "dcguard",
            Command::new(&daemon_bin)
                .arg("run")
                .arg("--config")
                .arg(&config_dir),
            &dir.join(format!("daemon-{run}.log")),
        )?;
        pause(Duration::from_secs_f64(WARMUP_SECS));
        if !daemon.alive() {
            bail!(
                "`dcguard run` exited during warm-up; see {}",
                dir.join(format!("daemon-{run}.log")).display()
            );
        }
        let pid = daemon.pid();
        let (c0, k0, b0) = (
            cpu_secs(pid)?,
            cpu_secs_ticks(pid)?,
            bytes_sent(pid, &ports),
        );
        let t0 = std::time::Instant::now();
        pause(Duration::from_secs_f64(secs));
        let (c1, k1, b1) = (
            cpu_secs(pid)?,
            cpu_secs_ticks(pid)?,
            bytes_sent(pid, &ports),
        );
        let elapsed = t0.elapsed().as_secs_f64();
        let (hwm, rss) = memory_kib(pid)?;
        if !daemon.alive() {
            bail!("`dcguard run` exited during the measurement");
        }
        daemon.terminate(Duration::from_secs(15));
        let measured = match (b0, b1) {
            (Some(a), Some(b)) if b > a => Some((b - a) / REQUEST_BYTES / elapsed),
            _ => None,
        };
        let rate = measured.unwrap_or(planned_requests);
        let d = DaemonRun {
            cpu_pct: 100.0 * (c1 - c0) / elapsed,
            cpu_pct_ticks: 100.0 * (k1 - k0) / elapsed,
            hwm_mib: hwm as f64 / 1024.0,
            rss_mib: rss as f64 / 1024.0,
            requests_per_sec: measured,
            cpu_us_per_request: 1e6 * (c1 - c0) / (rate * elapsed),
        };
        eprintln!(
            "daemon run {run}: cpu {:.2} % (ticks {:.2} %), hwm {:.1} MiB, rss {:.1} MiB, req/s measured {:?} planned {planned_requests:.1}",
            d.cpu_pct, d.cpu_pct_ticks, d.hwm_mib, d.rss_mib, d.requests_per_sec
        );
        let raw = Proc::spawn(
            "scheduled-raw",
            Command::new(&exe)
                .args(["role", "scheduled-raw"])
                .arg(&config_dir)
                .args(["0", &WARMUP_SECS.to_string(), &secs.to_string()]),
            &dir.join(format!("raw-{run}.log")),
        )?
        .finish()?;
        eprintln!("daemon run {run} raw: {raw}");
        let poller = Proc::spawn(
            "poller",
            Command::new(&exe)
                .args(["role", "poller"])
                .arg(&config_dir)
                .args(["0", &WARMUP_SECS.to_string(), &secs.to_string(), "shipped"]),
            &dir.join(format!("poller-{run}.log")),
        )?
        .finish()?;
        eprintln!("daemon run {run} poller alone: {poller}");
        let raw_per = 1e6 * num(&raw, "cpu_secs") / num(&raw, "requests");
        ratios.push(d.cpu_us_per_request / raw_per);
        poller_ratios
            .push(1e6 * num(&poller, "cpu_secs") / (rate * num(&poller, "secs")) / raw_per);
        poller_runs.push(poller);
        daemon_runs.push(d);
        raw_runs.push(raw);
    }
    let pick = |f: fn(&DaemonRun) -> f64| summary(&daemon_runs.iter().map(f).collect::<Vec<_>>());
    let cpu = pick(|d| d.cpu_pct);
    let cpu_ticks = pick(|d| d.cpu_pct_ticks);
    let hwm = pick(|d| d.hwm_mib);
    let rss = pick(|d| d.rss_mib);
    let per = pick(|d| d.cpu_us_per_request);
    let measured: Vec<f64> = daemon_runs
        .iter()
        .filter_map(|d| d.requests_per_sec)
        .collect();
    let raw_rate: Vec<f64> = raw_runs
        .iter()
        .map(|r| num(r, "requests") / num(r, "secs"))
        .collect();
    let raw_cpu: Vec<f64> = raw_runs
        .iter()
        .map(|r| 100.0 * num(r, "cpu_secs") / num(r, "secs"))
        .collect();
    let raw_per: Vec<f64> = raw_runs
        .iter()
        .map(|r| 1e6 * num(r, "cpu_secs") / num(r, "requests"))
        .collect();
    let raw_errors: f64 = raw_runs.iter().map(|r| num(r, "errors")).sum();
    let ratio = summary(&ratios);
    let verdict = |ok: bool| if ok { "MET" } else { "MISSED" };
    let mut out = String::new();
    writeln!(
        out,
        "Inventory: {} Modbus endpoints; planned {planned_requests:.1} requests/s carrying {planned_points:.1} points/s at the shipped intervals (from the planner).\n",
        endpoints.len()
    )?;
    writeln!(
        out,
        "| process | Modbus req/s | CPU % of one core | VmHWM MiB | VmRSS MiB | CPU µs per Modbus request |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|")?;
    writeln!(
        out,
        "| `dcguard run` (whole daemon) | {} | {} | {} | {} | {} |",
        if measured.is_empty() {
            "planned only".to_owned()
        } else {
            fmt(summary(&measured), 1)
        },
        fmt(cpu, 2),
        fmt(hwm, 1),
        fmt(rss, 1),
        fmt(per, 1)
    )?;
    writeln!(
        out,
        "| raw tokio-modbus client, same requests and intervals | {} | {} | - | - | {} |",
        fmt(summary(&raw_rate), 1),
        fmt(summary(&raw_cpu), 2),
        fmt(summary(&raw_per), 1)
    )?;
    let poller_readings: Vec<f64> = poller_runs
        .iter()
        .map(|r| (num(r, "good") + num(r, "bad")) / num(r, "secs"))
        .collect();
    let poller_cpu: Vec<f64> = poller_runs
        .iter()
        .map(|r| 100.0 * num(r, "cpu_secs") / num(r, "secs"))
        .collect();
    // The poller alone makes the daemon's requests on the same schedule: its rate is
    // taken as the daemon's measured one (the planned one when `ss` gave nothing).
    let same_rate = if measured.is_empty() {
        planned_requests
    } else {
        summary(&measured).median
    };
    let poller_per: Vec<f64> = poller_runs
        .iter()
        .map(|r| 1e6 * num(r, "cpu_secs") / (same_rate * num(r, "secs")))
        .collect();
    writeln!(
        out,
        "| dcguard poller alone (library, same intervals; {} readings/s) | as the daemon | {} | - | - | {} |",
        fmt(summary(&poller_readings), 1),
        fmt(summary(&poller_cpu), 2),
        fmt(summary(&poller_per), 1)
    )?;
    writeln!(
        out,
        "\nDaemon CPU % cross-check from /proc/PID/stat ticks (exited threads included, 10 ms resolution): {}.",
        fmt(cpu_ticks, 2)
    )?;
    writeln!(
        out,
        "Ratio daemon / raw CPU per request (per run): {}; poller alone / raw: {}. Load average before/after: {load0} / {}.",
        fmt(ratio, 2),
        fmt(summary(&poller_ratios), 2),
        crate::common::loadavg()
    )?;
    writeln!(
        out,
        "Goals: CPU <= 5 % of one core: {}; memory <= 64 MiB (VmHWM): {}; <= 1.5x raw CPU per request: {}.",
        verdict(cpu.median <= 5.0),
        verdict(hwm.max <= 64.0),
        verdict(ratio.median <= 1.5)
    )?;
    writeln!(
        out,
        "Runs: {runs} x {secs} s after {WARMUP_SECS} s warm-up; raw client errors: {raw_errors}; daemon req/s measured from `ss` bytes_sent / 12 bytes per request."
    )?;
    Ok(out)
}
