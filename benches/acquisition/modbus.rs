//! The Modbus roles of the benchmarks, each run as its own process: a tokio-modbus stub server, request loops of the daemon's client and of a raw tokio-modbus client, a scheduled raw client, and an unthrottled poller.

use std::collections::BTreeMap;
use std::future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};
use dcguard::config::model::{
    Config, DataType, DeviceTransport, PollClass, PollIntervals, ProfileTransport, RegisterKind,
};
use dcguard::sources::health::HealthRegistry;
use dcguard::sources::modbus::client::{ClientOptions, ReadOnlyClient};
use dcguard::sources::modbus::plan::plan_classes;
use dcguard::sources::modbus::poller::{self, PollerOptions};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_modbus::prelude::*;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use tokio_util::sync::CancellationToken;

use crate::common::own_cpu_secs;

/// Registers of the stub server; register `i` holds `i`.
pub const STUB_REGISTERS: u16 = 10_000;
/// Registers per request of benchmark 3.
pub const BLOCK: u16 = 125;

struct Stub {
    registers: Arc<Vec<u16>>,
}

impl tokio_modbus::server::Service for Stub {
    type Request = Request<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = future::Ready<Result<Response, ExceptionCode>>;

    fn call(&self, request: Self::Request) -> Self::Future {
        let read = |a: u16, c: u16| -> Result<Vec<u16>, ExceptionCode> {
            let (a, c) = (usize::from(a), usize::from(c));
            match self.registers.get(a..a + c) {
                Some(words) if c > 0 && c <= 125 => Ok(words.to_vec()),
                _ => Err(ExceptionCode::IllegalDataAddress),
            }
        };
        future::ready(match request {
            Request::ReadHoldingRegisters(a, c) => read(a, c).map(Response::ReadHoldingRegisters),
            Request::ReadInputRegisters(a, c) => read(a, c).map(Response::ReadInputRegisters),
            _ => Err(ExceptionCode::IllegalFunction),
        })
    }
}

/// Role `stub-server LIFETIME_SECS`: the tokio-modbus server of perf-limits.md (multi
/// thread runtime, 10,000 holding registers) on a free loopback port, printed on stdout;
/// exits after `LIFETIME_SECS` at the latest.
pub fn stub_server(lifetime: Duration) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        println!("{}", listener.local_addr()?.port());
        let registers: Arc<Vec<u16>> = Arc::new((0..STUB_REGISTERS).collect());
        let server = Server::new(listener);
        let new_service = move |_peer| {
            Ok(Some(Stub {
                registers: registers.clone(),
            }))
        };
        let on_connected = |stream, peer| {
            let new_service = new_service.clone();
            async move { accept_tcp_connection(stream, peer, new_service) }
        };
        let serve = server.serve(&on_connected, |e| eprintln!("stub: {e}"));
        match tokio::time::timeout(lifetime, serve).await {
            Ok(result) => result.map_err(anyhow::Error::from),
            Err(_) => Ok(()),
        }
    })
}

/// Role `loop raw|dcguard PORT SECS MAX`: one connection, sequential 125-register FC3
/// requests stepping through the stub, as fast as they come back, for at most `SECS`
/// seconds and `MAX` requests. Prints requests, errors, seconds and CPU seconds.
pub fn request_loop(kind: &str, port: u16, secs: f64, max: u64) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Duration::from_secs_f64(secs);
    let (requests, errors, elapsed, cpu) = runtime.block_on(async move {
        let mut raw = None;
        let mut ours = None;
        if kind == "raw" {
            raw = Some(tcp::connect_slave(addr, Slave(1)).await?);
        } else {
            let mut client = ReadOnlyClient::new(addr, ClientOptions::default());
            client.connect().await?;
            ours = Some(client);
        }
        let (mut requests, mut errors, mut start) = (0u64, 0u64, 0u16);
        let cpu0 = own_cpu_secs();
        let t0 = Instant::now();
        while requests < max && t0.elapsed() < deadline {
            let words = match (&mut raw, &mut ours) {
                (Some(ctx), _) => ctx
                    .read_holding_registers(start, BLOCK)
                    .await
                    .ok()
                    .and_then(Result::ok),
                (_, Some(client)) => client.read_holding_registers(1, start, BLOCK).await.ok(),
                _ => None,
            };
            match words {
                Some(w) if w.len() == usize::from(BLOCK) && w[0] == start => {}
                _ => errors += 1,
            }
            requests += 1;
            start = (start + BLOCK) % (STUB_REGISTERS - BLOCK);
        }
        let elapsed = t0.elapsed().as_secs_f64();
        anyhow::Ok((requests, errors, elapsed, own_cpu_secs() - cpu0))
    })?;
    println!(
        "{}",
        json!({"kind": kind, "requests": requests, "errors": errors, "secs": elapsed, "cpu_secs": cpu})
    );
    Ok(())
}

/// Loads a configuration directory.
pub fn load_config(dir: &Path) -> Result<Config> {
    dcguard::config::load(dir)
        .map_err(|e| anyhow!("configuration {} does not load:\n{e}", dir.display()))
}

/// `addr` with `offset` added to its port.
pub fn shifted(addr: SocketAddr, offset: u16) -> SocketAddr {
    SocketAddr::new(addr.ip(), addr.port().wrapping_add(offset))
}

/// One scheduled job of the raw client: a device's poll class.
struct RawJob {
    unit: u8,
    interval: Duration,
    /// Table, start, count, points carried.
    requests: Vec<(RegisterKind, u16, u16, u64)>,
}

/// Modbus requests per second the daemon's plan makes for `config` at its intervals.
pub fn planned_rate(config: &Config) -> (f64, f64) {
    let (mut requests, mut points) = (0.0, 0.0);
    for site in &config.sites {
        for device in &site.devices {
            let (DeviceTransport::Modbus { poll, .. }, ProfileTransport::Modbus(m)) =
                (&device.transport, &device.profile.transport)
            else {
                continue;
            };
            let plans = plan_classes(m);
            for class in [PollClass::Fast, PollClass::Normal, PollClass::Slow] {
                let secs = poll.of(class).as_secs_f64().max(0.001);
                let plan = plans.of(class);
                requests += plan.requests.len() as f64 / secs;
                points += plan.requests.iter().map(|r| r.points.len()).sum::<usize>() as f64 / secs;
            }
        }
    }
    (requests, points)
}

/// Role `scheduled-raw CONFIG_DIR PORT_OFFSET WARMUP SECS [floor]`: a minimal tokio-modbus
/// client making the daemon's planned requests at the configured intervals (one
/// connection and task per endpoint, like the poller), or with `floor` at the poller's
/// 1 ms floor, without decoding. Measures its own CPU over `SECS` after `WARMUP`.
pub fn scheduled_raw(dir: &Path, offset: u16, warmup: f64, secs: f64, floor: bool) -> Result<()> {
    let config = load_config(dir)?;
    let mut by_endpoint: BTreeMap<SocketAddr, Vec<RawJob>> = BTreeMap::new();
    for site in &config.sites {
        for device in &site.devices {
            let (
                DeviceTransport::Modbus {
                    endpoint,
                    unit,
                    poll,
                    ..
                },
                ProfileTransport::Modbus(m),
            ) = (&device.transport, &device.profile.transport)
            else {
                continue;
            };
            let plans = plan_classes(m);
            for class in [PollClass::Fast, PollClass::Normal, PollClass::Slow] {
                let requests: Vec<_> = plans
                    .of(class)
                    .requests
                    .iter()
                    .map(|r| (r.register, r.start, r.count, r.points.len() as u64))
                    .collect();
                if !requests.is_empty() {
                    by_endpoint
                        .entry(shifted(*endpoint, offset))
                        .or_default()
                        .push(RawJob {
                            unit: *unit,
                            interval: if floor {
                                Duration::from_millis(1)
                            } else {
                                poll.of(class).max(Duration::from_millis(1))
                            },
                            requests,
                        });
                }
            }
        }
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let counted = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let carried = Arc::new(AtomicU64::new(0));
    let total_end = Duration::from_secs_f64(warmup + secs + 1.0);
    let (requests, errors, cpu, elapsed, points) = runtime.block_on(async {
        let mut tasks = Vec::new();
        for (addr, jobs) in by_endpoint {
            let counted = counted.clone();
            let failed = failed.clone();
            let carried = carried.clone();
            tasks.push(tokio::spawn(async move {
                let Ok(mut ctx) = tcp::connect_slave(addr, Slave(1)).await else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let start = tokio::time::Instant::now();
                let mut due: Vec<tokio::time::Instant> = jobs.iter().map(|_| start).collect();
                while start.elapsed() < total_end {
                    let Some((i, when)) = due
                        .iter()
                        .copied()
                        .enumerate()
                        .min_by_key(|(i, d)| (*d, *i))
                    else {
                        return;
                    };
                    tokio::time::sleep_until(when).await;
                    let job = &jobs[i];
                    ctx.set_slave(Slave(job.unit));
                    for &(table, first, count, points) in &job.requests {
                        let ok = match table {
                            RegisterKind::Holding => ctx
                                .read_holding_registers(first, count)
                                .await
                                .is_ok_and(|r| r.is_ok()),
                            RegisterKind::Input => ctx
                                .read_input_registers(first, count)
                                .await
                                .is_ok_and(|r| r.is_ok()),
                            RegisterKind::Coil => {
                                ctx.read_coils(first, count).await.is_ok_and(|r| r.is_ok())
                            }
                            RegisterKind::Discrete => ctx
                                .read_discrete_inputs(first, count)
                                .await
                                .is_ok_and(|r| r.is_ok()),
                        };
                        counted.fetch_add(1, Ordering::Relaxed);
                        if ok {
                            carried.fetch_add(points, Ordering::Relaxed);
                        } else {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    let mut next = when + job.interval;
                    let now = tokio::time::Instant::now();
                    if next <= now {
                        next = now + job.interval;
                    }
                    due[i] = next;
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs_f64(warmup)).await;
        let (r0, e0, c0, t0, p0) = (
            counted.load(Ordering::Relaxed),
            failed.load(Ordering::Relaxed),
            own_cpu_secs(),
            Instant::now(),
            carried.load(Ordering::Relaxed),
        );
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        let result = (
            counted.load(Ordering::Relaxed) - r0,
            failed.load(Ordering::Relaxed) - e0,
            own_cpu_secs() - c0,
            t0.elapsed().as_secs_f64(),
            carried.load(Ordering::Relaxed) - p0,
        );
        for task in tasks {
            task.abort();
        }
        result
    });
    println!(
        "{}",
        json!({"requests": requests, "errors": errors, "cpu_secs": cpu, "secs": elapsed, "points": points})
    );
    Ok(())
}

/// Role `poller CONFIG_DIR PORT_OFFSET WARMUP SECS [shipped]`: the daemon's poller over
/// every Modbus device of the configuration, readings counted by a consumer; measures
/// its own CPU. Every interval is at its 1 ms floor (so it polls as fast as the devices
/// answer), or with `shipped` at the configured intervals (the acquisition path of the
/// daemon alone, without its store, rules and MQTT).
pub fn poller_role(dir: &Path, offset: u16, warmup: f64, secs: f64, shipped: bool) -> Result<()> {
    let config = load_config(dir)?;
    let mut endpoints = poller::endpoints(&config);
    for spec in &mut endpoints {
        spec.address = shifted(spec.configured, offset);
        for device in spec.devices.iter_mut().filter(|_| !shipped) {
            device.poll = PollIntervals {
                fast: Duration::from_millis(1),
                normal: Duration::from_millis(1),
                slow: Duration::from_millis(1),
            };
        }
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let (good, bad, cpu, elapsed) = runtime.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::channel(8192);
        let health = HealthRegistry::new();
        let cancel = CancellationToken::new();
        let good = Arc::new(AtomicU64::new(0));
        let bad = Arc::new(AtomicU64::new(0));
        let consumer = {
            let (good, bad) = (good.clone(), bad.clone());
            tokio::spawn(async move {
                while let Some(reading) = rx.recv().await {
                    let reading: dcguard::model::Reading = reading;
                    if reading.quality().is_good() {
                        good.fetch_add(1, Ordering::Relaxed);
                    } else {
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        let tasks = poller::spawn(endpoints, &PollerOptions::default(), tx, &health, &cancel);
        tokio::time::sleep(Duration::from_secs_f64(warmup)).await;
        let (g0, b0, c0, t0) = (
            good.load(Ordering::Relaxed),
            bad.load(Ordering::Relaxed),
            own_cpu_secs(),
            Instant::now(),
        );
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        let result = (
            good.load(Ordering::Relaxed) - g0,
            bad.load(Ordering::Relaxed) - b0,
            own_cpu_secs() - c0,
            t0.elapsed().as_secs_f64(),
        );
        cancel.cancel();
        for task in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        consumer.abort();
        result
    });
    println!(
        "{}",
        json!({"good": good, "bad": bad, "cpu_secs": cpu, "secs": elapsed})
    );
    Ok(())
}

/// The daemon's plan of every Modbus device as JSON for the Python peer: endpoints
/// (shifted by `offset`), units, requests and each point's decoding.
pub fn plan_json(config: &Config, offset: u16) -> serde_json::Value {
    let mut endpoints: BTreeMap<SocketAddr, Vec<serde_json::Value>> = BTreeMap::new();
    for site in &config.sites {
        for device in &site.devices {
            let (DeviceTransport::Modbus { endpoint, unit, .. }, ProfileTransport::Modbus(m)) =
                (&device.transport, &device.profile.transport)
            else {
                continue;
            };
            let plans = plan_classes(m);
            let mut requests = Vec::new();
            for class in [PollClass::Fast, PollClass::Normal, PollClass::Slow] {
                for r in &plans.of(class).requests {
                    let points: Vec<serde_json::Value> = r
                        .points
                        .iter()
                        .filter_map(|(index, at)| {
                            let p = m.points.get(*index)?;
                            let (kind, arg1, arg2) = match p.data_type {
                                DataType::Bit { bit, count } => {
                                    ("bit", u32::from(bit), u32::from(count))
                                }
                                DataType::String { length } => ("string", u32::from(length), 0),
                                other => (other.as_str(), 0, 0),
                            };
                            Some(json!({
                                "at": at, "type": kind, "a": arg1, "b": arg2,
                                "order": p.order.as_str(), "scale": p.scale, "offset": p.offset,
                            }))
                        })
                        .collect();
                    requests.push(json!({
                        "fc": r.function_code(), "start": r.start, "count": r.count, "points": points,
                    }));
                }
            }
            endpoints
                .entry(shifted(*endpoint, offset))
                .or_default()
                .push(json!({"unit": unit, "requests": requests}));
        }
    }
    serde_json::Value::Array(
        endpoints
            .into_iter()
            .map(|(addr, devices)| json!({"host": addr.ip().to_string(), "port": addr.port(), "devices": devices}))
            .collect(),
    )
}

/// Writes [`plan_json`] to `path`.
pub fn write_plan_json(config: &Config, offset: u16, path: &Path) -> Result<()> {
    let text = serde_json::to_string_pretty(&plan_json(config, offset))?;
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

/// Every configured Modbus endpoint.
pub fn modbus_endpoints(config: &Config) -> Vec<SocketAddr> {
    poller::endpoints(config)
        .into_iter()
        .map(|e| e.configured)
        .collect()
}

/// The first configured Modbus endpoint (to wait for the simulator).
pub fn poller_first_endpoint(config: &Config) -> Result<SocketAddr> {
    modbus_endpoints(config)
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("the configuration has no Modbus endpoint"))
}
