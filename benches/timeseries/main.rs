//! The time-series benchmarks of issue 5 (`cargo bench -p dcguard --bench timeseries -- [encode|spool|write|scrape|outage|all]`); see docs/benchmarks.md.
//!
//! * `encode`: line-protocol encoding rate of the shipped inventory's points.
//! * `spool`: spool append rate (one fsync per batch, as the sink does) and replay rate
//!   (reading and committing records), in lines/s and MB/s.
//! * `write`: end-to-end write rate of the sink (readings in, lines accepted by a real
//!   VictoriaMetrics) against VictoriaMetrics' own ingest limit measured in the same run
//!   by a raw client posting pre-encoded batches of the same lines over 4 connections
//!   (the two interleaved ABBA in each run); and the rate at which the sink replays a
//!   spooled backlog into it.
//! * `outage`: the release daemon on the full shipped inventory against `dcguard-sim`
//!   and Mosquitto, writing to VictoriaMetrics; VictoriaMetrics is killed for the outage
//!   (default 600 s) while the daemon's RSS, its spool on disk and its reading rate are
//!   sampled every 10 s; then VictoriaMetrics comes back and the backlog is replayed.
//! * `scrape`: the cost of one `/metrics` render at full inventory (every point of the
//!   shipped configuration observed, the facility facts, the alarm, load-test and access
//!   metrics registered): ms and CPU per scrape, bytes and series.
//!
//! The orchestrator is this process; VictoriaMetrics, the daemon, the simulator and the
//! broker are child processes killed afterwards. Every loop is bounded in count and in
//! time; only 127.0.0.1 is used. The report goes to stdout and to
//! `target/bench/timeseries/report.md`. Run by `cargo bench` only (it passes `--bench`).

#[allow(dead_code)]
#[path = "../acquisition/common.rs"]
mod common;
mod outage;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use chrono::{DateTime, Utc};
use dcguard::config::Config;
use dcguard::config::model::ProfileTransport;
use dcguard::model::{PointId, Reading, Value};
use dcguard::sinks::influxdb::{self, InfluxOptions, SeriesIndex};
use dcguard::sinks::line_protocol::{self, SeriesKey};
use dcguard::sinks::spool::{Spool, SpoolConfig};

use common::{
    Proc, cpu_secs_ticks, fmt, free_port, loadavg, machine, parse_f64, root, scratch, summary,
};

pub const VICTORIA_METRICS: &str = "/usr/bin/victoria-metrics";
/// Lines per batch: the shipped `batch_max_points`.
const BATCH: usize = 5000;
/// Concurrent connections of the raw client measuring VictoriaMetrics' ingest limit.
const RAW_CONNECTIONS: usize = 4;

#[derive(Debug, Clone)]
struct Settings {
    runs: usize,
    /// Seconds per measurement of `encode` and `write`.
    secs: f64,
    /// Seconds of the outage in `outage`.
    outage_secs: f64,
    out: PathBuf,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        println!(
            "time-series benchmarks: run with scripts/bench.sh timeseries or `cargo bench --bench timeseries`"
        );
        return Ok(());
    }
    let mut settings = Settings {
        runs: 5,
        secs: 5.0,
        outage_secs: 600.0,
        out: scratch("timeseries")?.join("report.md"),
    };
    let mut chosen: Vec<String> = Vec::new();
    let mut it = args.iter().filter(|a| *a != "--bench");
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--runs" => settings.runs = parse_f64(it.next(), "--runs")?.clamp(1.0, 50.0) as usize,
            "--secs" => settings.secs = parse_f64(it.next(), "--secs")?.clamp(1.0, 120.0),
            "--outage-secs" => {
                settings.outage_secs = parse_f64(it.next(), "--outage-secs")?.clamp(10.0, 3600.0)
            }
            "--out" => settings.out = PathBuf::from(it.next().context("--out needs a path")?),
            "encode" | "spool" | "write" | "outage" | "scrape" => chosen.push(arg.clone()),
            "all" => {
                chosen.extend(["encode", "spool", "write", "scrape", "outage"].map(String::from))
            }
            other => bail!(
                "unknown argument {other:?}; benchmarks: encode spool write scrape outage all"
            ),
        }
    }
    if chosen.is_empty() {
        chosen.extend(["encode", "spool", "write", "scrape", "outage"].map(String::from));
    }
    let mut report = String::new();
    writeln!(report, "# Time-series benchmark report\n")?;
    writeln!(report, "Machine: {}\n", machine())?;
    writeln!(report, "Settings: {settings:?}\n")?;
    for bench in &chosen {
        eprintln!("== {bench} (load average {})", loadavg());
        let (title, body) = match bench.as_str() {
            "encode" => ("1. Line-protocol encoding", encode(&settings)),
            "spool" => ("3. Spool append and replay", spool(&settings)),
            "write" => (
                "2. End-to-end write rate vs VictoriaMetrics' ingest limit",
                write(&settings),
            ),
            "scrape" => (
                "5. /metrics scrape cost at full inventory",
                scrape(&settings),
            ),
            "outage" => (
                "4. Daemon memory during an InfluxDB outage at full inventory",
                outage::run(settings.runs, settings.outage_secs),
            ),
            _ => continue,
        };
        let body = body.unwrap_or_else(|e| format!("FAILED: {e:#}\n"));
        writeln!(report, "## {title}\n\n{body}")?;
        println!("## {title}\n\n{body}");
        if let Some(parent) = settings.out.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&settings.out, &report)?;
    }
    eprintln!("report written to {}", settings.out.display());
    Ok(())
}

pub fn shipped() -> Result<Config> {
    dcguard::config::load(&root().join("config"))
        .map_err(|e| anyhow!("the shipped configuration does not load:\n{e}"))
}

/// Every point of the shipped inventory with its series key.
fn inventory(config: &Config) -> Vec<(SeriesKey, PointId)> {
    let mut out = Vec::new();
    for site in &config.sites {
        for device in &site.devices {
            let rack = device.rack.as_deref().unwrap_or("");
            let tags = [
                ("site", site.id.as_str(), false),
                ("room", device.room.as_str(), false),
                ("rack", rack, true),
                ("device", device.id.as_str(), false),
            ];
            let Ok(key) = SeriesKey::new(device.kind().as_str(), &tags) else {
                continue;
            };
            let points: Vec<&str> = match &device.profile.transport {
                ProfileTransport::Modbus(p) => p.points.iter().map(|p| p.name.as_str()).collect(),
                ProfileTransport::Mqtt(p) => p.points.iter().map(|p| p.name.as_str()).collect(),
            };
            for point in points {
                out.push((key.clone(), PointId::new(&site.id, &device.id, point)));
            }
        }
    }
    out
}

/// Reading `round` of point `i`: a number that changes, one millisecond per round.
fn reading(id: &PointId, i: usize, round: usize, base: DateTime<Utc>) -> Reading {
    let at = base + chrono::Duration::milliseconds(round as i64);
    Reading::good(
        id.clone(),
        Value::Number(20.0 + ((i + round) % 1000) as f64 / 8.0),
        at,
    )
}

fn base_time() -> DateTime<Utc> {
    // An hour ago, so VictoriaMetrics (retention 1 month) accepts every sample.
    Utc::now() - chrono::Duration::hours(1)
}

/// Benchmark 1: lines/s and MB/s of `line_protocol::encode` over the inventory's points.
fn encode(settings: &Settings) -> Result<String> {
    let config = shipped()?;
    let points = inventory(&config);
    let base = base_time();
    let rounds = 20usize;
    // Readings are built before timing: the encoder is measured, not the allocations of
    // the test data.
    let readings: Vec<(usize, Reading)> = (0..rounds)
        .flat_map(|r| {
            points
                .iter()
                .enumerate()
                .map(move |(i, (_, id))| (i, reading(id, i, r, base)))
        })
        .collect();
    let mut rates = Vec::new();
    let mut bytes_per_line = 0.0;
    let load0 = loadavg();
    for run in 0..settings.runs {
        let mut body = String::with_capacity(BATCH * 160);
        let mut lines = 0u64;
        let mut bytes = 0u64;
        let t0 = Instant::now();
        let limit = Duration::from_secs_f64(settings.secs);
        while t0.elapsed() < limit {
            for chunk in readings.chunks(BATCH) {
                for (i, r) in chunk {
                    line_protocol::encode(&points[*i].0, r, &mut body)
                        .map_err(|e| anyhow!("encode: {e}"))?;
                }
                lines += chunk.len() as u64;
                bytes += body.len() as u64;
                body.clear();
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        rates.push(lines as f64 / secs);
        bytes_per_line = bytes as f64 / lines as f64;
        eprintln!("encode run {run}: {:.0} lines/s", lines as f64 / secs);
    }
    let s = summary(&rates);
    let mut out = String::new();
    writeln!(
        out,
        "{} points of the shipped inventory (numbers), {:.0} bytes per line on average, batches of {BATCH} lines into a reused buffer, {} runs x {} s.\n",
        points.len(),
        bytes_per_line,
        settings.runs,
        settings.secs
    )?;
    writeln!(out, "| measure | median (min-max) |")?;
    writeln!(out, "|---|---|")?;
    writeln!(out, "| lines/s, one core | {} |", fmt(s, 0))?;
    writeln!(
        out,
        "| MB/s of line protocol | {} |",
        fmt(
            summary(
                &rates
                    .iter()
                    .map(|r| r * bytes_per_line / 1e6)
                    .collect::<Vec<_>>()
            ),
            1
        )
    )?;
    writeln!(
        out,
        "| ns per line | {} |",
        fmt(
            summary(&rates.iter().map(|r| 1e9 / r).collect::<Vec<_>>()),
            0
        )
    )?;
    writeln!(out, "\nLoad average before/after: {load0} / {}.", loadavg())?;
    Ok(out)
}

/// `n` batches of [`BATCH`] lines of the inventory, distinct timestamps.
fn batches(points: &[(SeriesKey, PointId)], n: usize, base: DateTime<Utc>) -> Result<Vec<String>> {
    let mut out = Vec::with_capacity(n);
    let mut k = 0usize;
    for _ in 0..n {
        let mut body = String::with_capacity(BATCH * 130);
        for _ in 0..BATCH {
            let i = k % points.len();
            let round = k / points.len();
            line_protocol::encode(
                &points[i].0,
                &reading(&points[i].1, i, round, base),
                &mut body,
            )
            .map_err(|e| anyhow!("encode: {e}"))?;
            k += 1;
        }
        out.push(body);
    }
    Ok(out)
}

fn spool_config(dir: &Path) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_owned(),
        max_bytes: 8 << 30,
        max_age: Duration::from_secs(3600 * 24),
        // The shipped default: 1 GiB / 16.
        segment_bytes: 64 << 20,
    }
}

/// Benchmark 3: spool append (fsync per batch) and replay rates.
fn spool(settings: &Settings) -> Result<String> {
    let config = shipped()?;
    let points = inventory(&config);
    let n_batches = 60usize;
    let bodies = batches(&points, n_batches, base_time())?;
    let bytes: usize = bodies.iter().map(String::len).sum();
    let lines = (n_batches * BATCH) as f64;
    let dir = scratch("timeseries")?.join("spool");
    let load0 = loadavg();
    let (mut write_rates, mut read_rates, mut reopen_ms) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..settings.runs {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        let mut spool = Spool::open(spool_config(&dir))?;
        let t0 = Instant::now();
        for body in &bodies {
            spool.append(body, BATCH as u32, Utc::now().timestamp_millis())?;
        }
        let write = t0.elapsed().as_secs_f64();
        drop(spool);
        let t1 = Instant::now();
        let mut spool = Spool::open(spool_config(&dir))?;
        let reopen = t1.elapsed().as_secs_f64();
        let t2 = Instant::now();
        let mut replayed = 0u64;
        while let Some(record) = spool.front()? {
            replayed += u64::from(record.lines);
            spool.commit_front()?;
        }
        let read = t2.elapsed().as_secs_f64();
        if replayed != lines as u64 {
            bail!("replayed {replayed} of {lines} lines");
        }
        write_rates.push(lines / write);
        read_rates.push(lines / read);
        reopen_ms.push(reopen * 1000.0);
        eprintln!(
            "spool run {run}: append {:.0} lines/s, replay {:.0} lines/s, reopen {:.1} ms",
            lines / write,
            lines / read,
            reopen * 1000.0
        );
    }
    std::fs::remove_dir_all(&dir).ok();
    let mb = |rates: &[f64]| -> Vec<f64> {
        rates
            .iter()
            .map(|r| r / lines * bytes as f64 / 1e6)
            .collect()
    };
    let mut out = String::new();
    writeln!(
        out,
        "{n_batches} batches of {BATCH} lines ({:.1} MB) appended with one fsync each (as the sink spools a batch), then the spool reopened (header walk) and replayed record by record (CRC check, commit, segment deletion). Disk: the machine's virtual disk (ext4); the page cache is warm for the replay. {} runs.\n",
        bytes as f64 / 1e6,
        settings.runs
    )?;
    writeln!(out, "| measure | lines/s | MB/s |")?;
    writeln!(out, "|---|---|---|")?;
    writeln!(
        out,
        "| append (fsync per {BATCH}-line batch) | {} | {} |",
        fmt(summary(&write_rates), 0),
        fmt(summary(&mb(&write_rates)), 1)
    )?;
    writeln!(
        out,
        "| replay from disk (read + CRC + commit) | {} | {} |",
        fmt(summary(&read_rates), 0),
        fmt(summary(&mb(&read_rates)), 1)
    )?;
    writeln!(
        out,
        "\nReopen of the {:.0} MB spool: {} ms. Load average before/after: {load0} / {}.",
        bytes as f64 / 1e6,
        fmt(summary(&reopen_ms), 1),
        loadavg()
    )?;
    Ok(out)
}

/// A VictoriaMetrics process on a free loopback port, killed on drop.
pub struct Victoria {
    pub proc: Option<Proc>,
    pub port: u16,
    data: PathBuf,
    log: PathBuf,
}

impl Victoria {
    pub fn start(dir: &Path, name: &str) -> Result<Victoria> {
        if !Path::new(VICTORIA_METRICS).exists() {
            bail!("{VICTORIA_METRICS} is missing: apt-get install victoria-metrics");
        }
        let mut vm = Victoria {
            proc: None,
            port: free_port()?,
            data: dir.join(format!("{name}-data")),
            log: dir.join(format!("{name}.log")),
        };
        if vm.data.exists() {
            std::fs::remove_dir_all(&vm.data)?;
        }
        vm.restart()?;
        Ok(vm)
    }

    pub fn restart(&mut self) -> Result<()> {
        let proc = Proc::spawn_logged(
            "victoria-metrics",
            Command::new(VICTORIA_METRICS)
                .arg(format!("-httpListenAddr=127.0.0.1:{}", self.port))
                .arg(format!("-storageDataPath={}", self.data.display()))
                .arg("-retentionPeriod=1")
                .arg("-loggerLevel=ERROR"),
            &self.log,
        )?;
        self.proc = Some(proc);
        common::wait_listening(([127, 0, 0, 1], self.port).into(), Duration::from_secs(20))
    }

    /// SIGKILL: the outage.
    pub fn kill(&mut self) {
        self.proc = None;
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }
}

impl Drop for Victoria {
    fn drop(&mut self) {
        self.proc = None;
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

fn sink_options(url: &str, spool_dir: &Path, gzip: bool) -> InfluxOptions {
    InfluxOptions {
        url: url.to_owned(),
        org: "bench".into(),
        bucket: "bench".into(),
        token: Some(influxdb::Token::new("bench-token".into())),
        gzip,
        batch_max_points: BATCH,
        flush_interval: Duration::from_secs(1),
        queue_capacity: 65536,
        pending_batches: 4,
        max_in_flight: 4,
        request_timeout: Duration::from_secs(10),
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_secs(2),
        retry_after_max: Duration::from_secs(10),
        spool: spool_config(spool_dir),
    }
}

/// VictoriaMetrics' ingest limit: [`RAW_CONNECTIONS`] tasks posting `bodies` round robin
/// for `secs`; lines accepted per second.
async fn raw_rate(url: &str, bodies: Arc<Vec<String>>, secs: f64) -> Result<f64> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let endpoint = format!("{url}/api/v2/write?org=bench&bucket=bench&precision=ns");
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..RAW_CONNECTIONS {
        let (client, endpoint, bodies) = (client.clone(), endpoint.clone(), bodies.clone());
        tasks.push(tokio::spawn(async move {
            let mut lines = 0u64;
            let mut k = c;
            while Instant::now() < until && k < 1_000_000 {
                let body = bodies[k % bodies.len()].clone();
                let r = client
                    .post(&endpoint)
                    .header("Authorization", "Token bench-token")
                    .body(body)
                    .send()
                    .await?;
                if !r.status().is_success() {
                    bail!("VictoriaMetrics answered {}", r.status());
                }
                lines += BATCH as u64;
                k += RAW_CONNECTIONS;
            }
            Ok(lines)
        }));
    }
    let mut lines = 0u64;
    for t in tasks {
        lines += t.await??;
    }
    Ok(lines as f64 / t0.elapsed().as_secs_f64())
}

/// The sink's end-to-end rate: readings offered as fast as the sink takes them (at most
/// 50 000 in flight, so the queue never overflows), lines accepted per second after 1 s.
async fn sink_rate(
    url: &str,
    config: &Config,
    points: &[(SeriesKey, PointId)],
    spool_dir: &Path,
    gzip: bool,
    secs: f64,
) -> Result<(f64, u64)> {
    if spool_dir.exists() {
        std::fs::remove_dir_all(spool_dir)?;
    }
    let (tx, sink) = influxdb::start(
        sink_options(url, spool_dir, gzip),
        SeriesIndex::from_config(config),
    )?;
    let stats = sink.stats();
    let base = base_time();
    let warm = Duration::from_secs(1);
    let measure = Duration::from_secs_f64(secs);
    let t0 = Instant::now();
    let mut mark: Option<(Instant, u64)> = None;
    let mut k = 0usize;
    let mut result = None;
    while t0.elapsed() < warm + measure + Duration::from_secs(30) {
        let s = stats.sample();
        if mark.is_none() && t0.elapsed() >= warm {
            mark = Some((Instant::now(), s.lines_written));
        }
        if let Some((at, written)) = mark
            && at.elapsed() >= measure
        {
            result = Some((s.lines_written - written) as f64 / at.elapsed().as_secs_f64());
            break;
        }
        if s.offered - s.lines_written - s.dropped_queue_full > 50_000 {
            tokio::time::sleep(Duration::from_micros(500)).await;
            continue;
        }
        for _ in 0..1000 {
            let i = k % points.len();
            tx.offer(reading(&points[i].1, i, k / points.len(), base));
            k += 1;
        }
    }
    drop(tx);
    sink.join().await;
    let s = stats.sample();
    let lost = s.dropped_queue_full + s.spool_error_lines + s.spool.dropped_bytes_lines;
    result
        .map(|r| (r, lost))
        .ok_or_else(|| anyhow!("the sink did not finish its measurement"))
}

/// Benchmark 2: the sink against the raw client, and the replay of a backlog.
fn write(settings: &Settings) -> Result<String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(write_async(settings))
}

async fn write_async(settings: &Settings) -> Result<String> {
    let dir = scratch("timeseries")?;
    let config = shipped()?;
    let points = inventory(&config);
    let vm = Victoria::start(&dir, "vm-write")?;
    let bodies = Arc::new(batches(
        &points,
        40,
        base_time() - chrono::Duration::minutes(5),
    )?);
    let spool_dir = dir.join("write-spool");
    let load0 = loadavg();
    let (mut raw, mut plain, mut gz, mut r_plain, mut r_gz) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut lost = 0u64;
    // Cores used by VictoriaMetrics and by this process (the writer side) per phase.
    let vm_pid = vm
        .pid()
        .ok_or_else(|| anyhow!("VictoriaMetrics has no pid"))?;
    let (mut cores_raw, mut cores_plain, mut cores_gz) = (Vec::new(), Vec::new(), Vec::new());
    let cores = || -> Result<(Instant, f64, f64)> {
        // Ticks of /proc/PID/stat: they keep the time of exited threads (blocking pool).
        Ok((
            Instant::now(),
            cpu_secs_ticks(vm_pid)?,
            cpu_secs_ticks(std::process::id())?,
        ))
    };
    let used = |from: (Instant, f64, f64)| -> Result<(f64, f64)> {
        let to = cores()?;
        let wall = (to.0 - from.0).as_secs_f64();
        Ok(((to.1 - from.1) / wall, (to.2 - from.2) / wall))
    };
    for run in 0..settings.runs {
        // ABBA: raw, sink plain, sink gzip, raw (the raw limit is the mean of both).
        let c = cores()?;
        let a = raw_rate(&vm.url(), bodies.clone(), settings.secs).await?;
        cores_raw.push(used(c)?);
        let c = cores()?;
        let (p, l1) = sink_rate(
            &vm.url(),
            &config,
            &points,
            &spool_dir,
            false,
            settings.secs,
        )
        .await?;
        cores_plain.push(used(c)?);
        let c = cores()?;
        let (g, l2) =
            sink_rate(&vm.url(), &config, &points, &spool_dir, true, settings.secs).await?;
        cores_gz.push(used(c)?);
        let b = raw_rate(&vm.url(), bodies.clone(), settings.secs).await?;
        let limit = (a + b) / 2.0;
        lost += l1 + l2;
        eprintln!("write run {run}: raw {a:.0}/{b:.0}, sink plain {p:.0}, gzip {g:.0} lines/s");
        raw.push(limit);
        plain.push(p);
        gz.push(g);
        r_plain.push(p / limit);
        r_gz.push(g / limit);
    }
    // Replay: a spooled backlog of 300 000 lines written by a sink that starts on it.
    let backlog = batches(&points, 60, base_time() - chrono::Duration::minutes(10))?;
    let lines = (backlog.len() * BATCH) as u64;
    let mut replay = Vec::new();
    for run in 0..settings.runs {
        if spool_dir.exists() {
            std::fs::remove_dir_all(&spool_dir)?;
        }
        let mut spool = Spool::open(spool_config(&spool_dir))?;
        for body in &backlog {
            spool.append(body, BATCH as u32, Utc::now().timestamp_millis())?;
        }
        drop(spool);
        let t0 = Instant::now();
        let (tx, sink) = influxdb::start(
            sink_options(&vm.url(), &spool_dir, true),
            SeriesIndex::from_config(&config),
        )?;
        let stats = sink.stats();
        let deadline = Instant::now() + Duration::from_secs(300);
        while stats.sample().lines_written < lines && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let secs = t0.elapsed().as_secs_f64();
        drop(tx);
        sink.join().await;
        let written = stats.sample().lines_written;
        if written < lines {
            bail!("replay run {run}: {written} of {lines} lines in 300 s");
        }
        replay.push(lines as f64 / secs);
        eprintln!("replay run {run}: {:.0} lines/s", lines as f64 / secs);
    }
    std::fs::remove_dir_all(&spool_dir).ok();
    let mut out = String::new();
    writeln!(
        out,
        "VictoriaMetrics {} on 127.0.0.1 (same 2 cores). Ingest limit: a raw reqwest client posting pre-encoded {BATCH}-line batches of the same inventory's lines over {RAW_CONNECTIONS} concurrent connections, no gzip, measured before and after the sink in every run (mean of the two). Sink: `sinks::influxdb` with the shipped settings ({BATCH}-line batches, 1 s flush, 4 requests in flight), readings offered as fast as it takes them; lines/s accepted after 1 s. {} runs x {} s per measurement.\n",
        vm_version(),
        settings.runs,
        settings.secs
    )?;
    writeln!(
        out,
        "| measure | lines/s | ratio to the ingest limit (per run) |"
    )?;
    writeln!(out, "|---|---|---|")?;
    writeln!(
        out,
        "| VictoriaMetrics ingest limit (raw client) | {} | 1 |",
        fmt(summary(&raw), 0)
    )?;
    writeln!(
        out,
        "| sink, gzip off | {} | {} |",
        fmt(summary(&plain), 0),
        fmt(summary(&r_plain), 2)
    )?;
    writeln!(
        out,
        "| sink, gzip on (shipped default) | {} | {} |",
        fmt(summary(&gz), 0),
        fmt(summary(&r_gz), 2)
    )?;
    writeln!(
        out,
        "| replay of a {lines}-line spooled backlog (gzip on) | {} | - |",
        fmt(summary(&replay), 0)
    )?;
    writeln!(
        out,
        "\nCPU in cores while each phase ran (median of runs; {} cores in all), VictoriaMetrics / the writer's process (reading generation, queue, encoding, gzip, HTTP):\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )?;
    writeln!(out, "| phase | VictoriaMetrics | writer process |")?;
    writeln!(out, "|---|---|---|")?;
    for (name, c) in [
        ("raw client", &cores_raw),
        ("sink, gzip off", &cores_plain),
        ("sink, gzip on", &cores_gz),
    ] {
        let vm: Vec<f64> = c.iter().map(|x| x.0).collect();
        let own: Vec<f64> = c.iter().map(|x| x.1).collect();
        writeln!(
            out,
            "| {name} | {} | {} |",
            fmt(summary(&vm), 2),
            fmt(summary(&own), 2)
        )?;
    }
    let best = summary(&r_plain).median.max(summary(&r_gz).median);
    writeln!(
        out,
        "\nGoal sink / ingest limit >= 0.8: {} (best median {best:.2}). Lines lost by the sink in all runs: {lost}. Load average before/after: {load0} / {}.",
        if best >= 0.8 { "MET" } else { "MISSED" },
        loadavg()
    )?;
    Ok(out)
}

fn vm_version() -> String {
    Command::new(VICTORIA_METRICS)
        .arg("-version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Benchmark 5: one `/metrics` render at full inventory, as the daemon's exporter does it.
fn scrape(settings: &Settings) -> Result<String> {
    use dcguard::telemetry::metrics::{Metrics, PointLabels};
    let config = shipped()?;
    let metrics = Metrics::new().map_err(|e| anyhow!("metrics: {e}"))?;
    metrics.set_facility(&config);
    let _alarms = metrics
        .alarm_metrics()
        .map_err(|e| anyhow!("alarm metrics: {e}"))?;
    let dashboard = metrics
        .dashboard_metrics(&config)
        .map_err(|e| anyhow!("dashboard metrics: {e}"))?;
    dashboard.set_load_tests(&[]);
    dashboard.set_access(&[], &std::collections::BTreeMap::new(), &Default::default());
    let base = base_time();
    let mut points = 0usize;
    for site in &config.sites {
        for device in &site.devices {
            metrics.set_device_up(&site.id, &device.id, true);
            let names: Vec<&str> = match &device.profile.transport {
                ProfileTransport::Modbus(p) => p.points.iter().map(|p| p.name.as_str()).collect(),
                ProfileTransport::Mqtt(p) => p.points.iter().map(|p| p.name.as_str()).collect(),
            };
            for point in names {
                let id = PointId::new(&site.id, &device.id, point);
                let labels = PointLabels {
                    site: &site.id,
                    room: &device.room,
                    rack: device.rack.as_deref().unwrap_or(""),
                    device: &device.id,
                    point,
                };
                let source = match &device.profile.transport {
                    ProfileTransport::Modbus(_) => "modbus",
                    ProfileTransport::Mqtt(_) => "mqtt",
                };
                metrics.observe(&reading(&id, points, 0, base), labels, source);
                points += 1;
            }
        }
        metrics.set_points_stale(&site.id, 0);
    }
    let first = metrics.render().map_err(|e| anyhow!("render: {e}"))?;
    let bytes = first.len();
    let series = first
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count();
    let per_run = 50usize;
    let load0 = loadavg();
    let (mut wall_ms, mut cpu_ms) = (Vec::new(), Vec::new());
    for run in 0..settings.runs {
        let c0 = thread_cpu_ns();
        let t0 = Instant::now();
        for _ in 0..per_run {
            let text = metrics.render().map_err(|e| anyhow!("render: {e}"))?;
            std::hint::black_box(text);
        }
        let wall = t0.elapsed().as_secs_f64() * 1000.0 / per_run as f64;
        let cpu = (thread_cpu_ns() - c0) as f64 / 1e6 / per_run as f64;
        eprintln!("scrape run {run}: {wall:.2} ms wall, {cpu:.2} ms CPU per render");
        wall_ms.push(wall);
        cpu_ms.push(cpu);
    }
    let mut out = String::new();
    writeln!(
        out,
        "The shipped inventory's {points} points observed once each, every device up, the facility facts, the alarm, load-test and access metrics registered; `Metrics::render` (the text the daemon's `/metrics` serves, HTTP excluded) timed {per_run} times per run, {} runs, {} build, one thread. A render is {:.0} KiB with {series} series.\n",
        settings.runs,
        if cfg!(debug_assertions) {
            "debug (unoptimized)"
        } else {
            "release"
        },
        bytes as f64 / 1024.0
    )?;
    writeln!(out, "| measure | per scrape |")?;
    writeln!(out, "|---|---|")?;
    writeln!(out, "| wall time, ms | {} |", fmt(summary(&wall_ms), 2))?;
    writeln!(
        out,
        "| CPU time of the thread, ms | {} |",
        fmt(summary(&cpu_ms), 2)
    )?;
    writeln!(
        out,
        "| CPU share of one core at a 15 s scrape interval, % | {} |",
        fmt(
            summary(
                &cpu_ms
                    .iter()
                    .map(|c| c / 15_000.0 * 100.0)
                    .collect::<Vec<_>>()
            ),
            3
        )
    )?;
    writeln!(out, "\nLoad average before/after: {load0} / {}.", loadavg())?;
    Ok(out)
}

/// CPU time of the calling thread, ns (`/proc/thread-self/schedstat`, first field).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}
