//! Benchmark 4: the release daemon on the full shipped inventory writing to VictoriaMetrics, which is killed for the outage: RSS, spool on disk and reading rate every 10 s, then the replay.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::Victoria;
use crate::common::{
    Proc, copy_dir, fmt, free_port, loadavg, memory_kib, pause, release_binary, root, scratch,
    shift_ports, summary, wait_listening,
};

/// Port offset of the simulator (the shipped 15000-15299 move to 27000-27299, away from
/// the acquisition benchmarks' 25000 and below the ephemeral range).
const SIM_OFFSET: u16 = 12_000;
/// Warm-up before the first sample, and the span of the reading rate before the outage.
const WARM_SECS: u64 = 30;
const BEFORE_SECS: u64 = 30;
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Longest wait for the replay after the outage.
const REPLAY_LIMIT: Duration = Duration::from_secs(600);

/// The shipped configuration with the Modbus ports shifted, the broker, listener and
/// data directory moved, and `[influxdb]` enabled towards `influx_url`. Same devices,
/// profiles, intervals and sink settings (batch, flush, queue, spool budget) as shipped.
fn bench_config(dir: &Path, mqtt_port: u16, listen_port: u16, influx_url: &str) -> Result<PathBuf> {
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
    let text = std::fs::read_to_string(&main)?;
    let data = dir.join("data");
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
        )
        .replacen(
            "[influxdb]\nenabled = false\nurl = \"http://127.0.0.1:8086\"",
            &format!("[influxdb]\nenabled = true\nurl = \"{influx_url}\""),
            1,
        );
    if !replaced.contains(influx_url) || !replaced.contains(&format!("port = {mqtt_port}")) {
        bail!("could not rewrite {} for the benchmark", main.display());
    }
    std::fs::write(&main, replaced)?;
    Ok(config)
}

/// `GET /metrics` of the daemon: every sample as (name{labels}, value).
fn scrape(addr: SocketAddr) -> Result<BTreeMap<String, f64>> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    let mut out = BTreeMap::new();
    for line in body.lines().filter(|l| l.starts_with("dcguard_")) {
        if let Some((name, value)) = line.rsplit_once(' ')
            && let Ok(v) = value.parse::<f64>()
        {
            out.insert(name.to_owned(), v);
        }
    }
    Ok(out)
}

/// Sum of every sample whose `name{labels}` starts with `prefix`.
fn total(m: &BTreeMap<String, f64>, prefix: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|it| {
            it.flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

struct Run {
    rss_before: f64,
    rss_max: f64,
    rss_end: f64,
    hwm_end: f64,
    spool_mb: f64,
    spool_lines: f64,
    rate_before: f64,
    rate_during: f64,
    dropped: f64,
    replay_rate: Option<f64>,
    rss_after_replay: f64,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub fn run(runs: usize, outage_secs: f64) -> Result<String> {
    let dir = scratch("timeseries-outage")?;
    let load0 = loadavg();
    let mqtt_port = free_port()?;
    let listen_port = free_port()?;
    let mut vm = Victoria::start(&dir, "vm-outage")?;
    let config_dir = bench_config(&dir, mqtt_port, listen_port, &vm.url())?;
    let config =
        dcguard::config::load(&config_dir).map_err(|e| anyhow::anyhow!("bench config: {e}"))?;
    let points: usize = crate::inventory(&config).len();
    let devices: usize = config.sites.iter().map(|s| s.devices.len()).sum();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {mqtt_port} 127.0.0.1\nuser root\nallow_anonymous true\npersistence false\nlog_dest stderr\n"
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
    pause(Duration::from_secs(3));
    let daemon_bin = release_binary("dcguard")?;
    let http: SocketAddr = ([127, 0, 0, 1], listen_port).into();
    let spool_dir = dir.join("data").join("spool").join("influxdb");
    let mut results = Vec::new();
    let mut series = String::new();
    for run in 0..runs {
        let data = dir.join("data");
        if data.exists() {
            std::fs::remove_dir_all(&data)?;
        }
        std::fs::create_dir_all(&data)?;
        if vm.proc.is_none() {
            vm.restart()?;
        }
        let log = dir.join(format!("daemon-{run}.log"));
        let mut daemon = Proc::spawn_logged(
            "dcguard",
            Command::new(&daemon_bin)
                .arg("run")
                .arg("--config")
                .arg(&config_dir)
                .env("DCGUARD_INFLUX_TOKEN", "bench-token")
                .env("RUST_LOG", "warn"),
            &log,
        )?;
        wait_listening(http, Duration::from_secs(30))?;
        pause(Duration::from_secs(WARM_SECS));
        let pid = daemon.pid();
        let m0 = scrape(http)?;
        if total(&m0, "dcguard_influx_lines_written_total") <= 0.0 {
            bail!(
                "run {run}: the daemon wrote nothing to VictoriaMetrics during warm-up; see {}",
                log.display()
            );
        }
        let t0 = Instant::now();
        pause(Duration::from_secs(BEFORE_SECS));
        let m1 = scrape(http)?;
        let rate_before = (total(&m1, "dcguard_readings_total")
            - total(&m0, "dcguard_readings_total"))
            / t0.elapsed().as_secs_f64();
        let rss_before = mib(memory_kib(pid)?.1);
        // The outage.
        vm.kill();
        let t_out = Instant::now();
        let mut rss_max: f64 = rss_before;
        let mut last = m1.clone();
        writeln!(
            series,
            "\nRun {run}: seconds into the outage, VmRSS MiB, spool on disk MB:"
        )?;
        let mut points_line = Vec::new();
        while t_out.elapsed().as_secs_f64() < outage_secs {
            pause(SAMPLE_EVERY.min(Duration::from_secs_f64(
                (outage_secs - t_out.elapsed().as_secs_f64()).max(0.1),
            )));
            if !daemon.alive() {
                bail!(
                    "run {run}: the daemon exited during the outage; see {}",
                    log.display()
                );
            }
            let rss = mib(memory_kib(pid)?.1);
            rss_max = rss_max.max(rss);
            let bytes = dir_bytes(&spool_dir);
            points_line.push(format!(
                "{:.0}: {rss:.1} / {:.0}",
                t_out.elapsed().as_secs_f64(),
                bytes as f64 / 1e6
            ));
            if let Ok(m) = scrape(http) {
                last = m;
            }
        }
        let outage = t_out.elapsed().as_secs_f64();
        writeln!(series, "{}", points_line.join("; "))?;
        let (hwm_end, rss_end) = memory_kib(pid)?;
        let m2 = scrape(http).unwrap_or(last);
        let rate_during =
            (total(&m2, "dcguard_readings_total") - total(&m1, "dcguard_readings_total")) / outage;
        let spool_lines = total(&m2, "dcguard_influx_spool_lines");
        let spool_mb = dir_bytes(&spool_dir) as f64 / 1e6;
        let dropped = total(&m2, "dcguard_readings_dropped_total{reason=\"queue_full\"")
            + total(&m2, "dcguard_readings_dropped_total{reason=\"spool_");
        // The replay, with live traffic going on.
        vm.restart()?;
        let t_back = Instant::now();
        let mut replay_rate = None;
        let written_at_end = total(&m2, "dcguard_influx_lines_written_total");
        while t_back.elapsed() < REPLAY_LIMIT {
            pause(Duration::from_secs(1));
            let m = scrape(http)?;
            if total(&m, "dcguard_influx_spool_lines") == 0.0 {
                let secs = t_back.elapsed().as_secs_f64();
                let written = total(&m, "dcguard_influx_lines_written_total") - written_at_end;
                replay_rate = Some(written / secs);
                break;
            }
        }
        let rss_after_replay = mib(memory_kib(pid)?.1);
        daemon.terminate(Duration::from_secs(30));
        let r = Run {
            rss_before,
            rss_max,
            rss_end: mib(rss_end),
            hwm_end: mib(hwm_end),
            spool_mb,
            spool_lines,
            rate_before,
            rate_during,
            dropped,
            replay_rate,
            rss_after_replay,
        };
        eprintln!(
            "outage run {run}: rss {:.1} -> max {:.1} / end {:.1} MiB (hwm {:.1}), spool {:.0} MB / {:.0} lines, readings/s {:.0} -> {:.0}, dropped {}, replay {:?} lines/s, rss after replay {:.1}",
            r.rss_before,
            r.rss_max,
            r.rss_end,
            r.hwm_end,
            r.spool_mb,
            r.spool_lines,
            r.rate_before,
            r.rate_during,
            r.dropped,
            r.replay_rate,
            r.rss_after_replay
        );
        results.push(r);
    }
    let _ = std::fs::remove_dir_all(dir.join("data"));
    let pick = |f: fn(&Run) -> f64| summary(&results.iter().map(f).collect::<Vec<_>>());
    let mut out = String::new();
    writeln!(
        out,
        "Full shipped inventory: {devices} devices, {points} points, 3 sites, against `dcguard-sim` and Mosquitto; the release daemon with the shipped `[influxdb]` settings (gzip, 5000-line batches, 1 s flush, 64 Ki queue, 1 GiB spool budget) writing to VictoriaMetrics. Per run: {WARM_SECS} s warm-up, {BEFORE_SECS} s of normal writing, VictoriaMetrics killed (SIGKILL) for {outage_secs:.0} s with VmRSS and the spool directory sampled every {} s, then restarted; the replay is timed until the spool is empty (live readings keep coming). {runs} runs; a fresh data directory each run.\n",
        SAMPLE_EVERY.as_secs()
    )?;
    writeln!(out, "| measure | median (min-max) |")?;
    writeln!(out, "|---|---|")?;
    writeln!(
        out,
        "| VmRSS before the outage, MiB | {} |",
        fmt(pick(|r| r.rss_before), 1)
    )?;
    writeln!(
        out,
        "| VmRSS, highest sample during the outage, MiB | {} |",
        fmt(pick(|r| r.rss_max), 1)
    )?;
    writeln!(
        out,
        "| VmRSS at the end of the outage, MiB | {} |",
        fmt(pick(|r| r.rss_end), 1)
    )?;
    writeln!(
        out,
        "| VmRSS growth over the outage, MiB | {} |",
        fmt(pick(|r| r.rss_end - r.rss_before), 1)
    )?;
    writeln!(
        out,
        "| VmHWM at the end of the outage, MiB | {} |",
        fmt(pick(|r| r.hwm_end), 1)
    )?;
    writeln!(
        out,
        "| backlog on disk at the end, MB | {} |",
        fmt(pick(|r| r.spool_mb), 1)
    )?;
    writeln!(
        out,
        "| backlog on disk at the end, lines | {} |",
        fmt(pick(|r| r.spool_lines), 0)
    )?;
    writeln!(
        out,
        "| readings/s handled before the outage | {} |",
        fmt(pick(|r| r.rate_before), 1)
    )?;
    writeln!(
        out,
        "| readings/s handled during the outage | {} |",
        fmt(pick(|r| r.rate_during), 1)
    )?;
    writeln!(
        out,
        "| ratio during / before (polling not slowed) | {} |",
        fmt(pick(|r| r.rate_during / r.rate_before), 3)
    )?;
    writeln!(
        out,
        "| readings dropped by the sink (queue, spool) | {} |",
        fmt(pick(|r| r.dropped), 0)
    )?;
    let replays: Vec<f64> = results.iter().filter_map(|r| r.replay_rate).collect();
    writeln!(
        out,
        "| replay after the outage, lines/s (live traffic included) | {} ({} of {runs} runs emptied the spool within {} s) |",
        fmt(summary(&replays), 0),
        replays.len(),
        REPLAY_LIMIT.as_secs()
    )?;
    writeln!(
        out,
        "| VmRSS once the spool is empty again, MiB | {} |",
        fmt(pick(|r| r.rss_after_replay), 1)
    )?;
    writeln!(out, "\nSamples:{series}")?;
    writeln!(out, "\nLoad average before/after: {load0} / {}.", loadavg())?;
    Ok(out)
}
