//! `dcguard-sim`: serves the simulated devices of one or all sites on loopback until Ctrl-C.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use firmware_stubs::sim::{BindMode, RunningSim, Sim, SimOptions, SiteSelection};
use firmware_stubs::spec::Transport;

/// Device simulators for dcguard: Modbus TCP UPS, PAC, genset, VESDA, rack and utility
/// meters with plausible physics, served on the loopback endpoints of the site files.
#[derive(Debug, Parser)]
#[command(name = "dcguard-sim", version)]
struct Args {
    /// Configuration directory (with `sites/` and `profiles/`).
    #[arg(long, value_name = "DIR", default_value = "config")]
    config: PathBuf,
    /// Which site to simulate.
    #[arg(long, value_enum, default_value_t = SiteArg::All)]
    site: SiteArg,
    /// Seed of every random choice (noise, drift): same seed, same values.
    /// Default: the scenario's seed, else 0.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Scenario timeline to play (firmware-stubs/scenarios/*.toml).
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,
    /// MQTT broker for the sensor stubs (loopback only), e.g. 127.0.0.1:1883.
    #[arg(long, value_name = "ADDR")]
    mqtt: Option<SocketAddr>,
    /// Added to every configured Modbus port (to run beside another simulator).
    #[arg(long, value_name = "N", default_value_t = 0)]
    port_offset: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SiteArg {
    Dc,
    SmartDc,
    Drc,
    All,
}

impl SiteArg {
    fn selection(self) -> SiteSelection {
        let one = |id: &str| SiteSelection::Only(vec![id.to_owned()]);
        match self {
            SiteArg::Dc => one("dc"),
            SiteArg::SmartDc => one("smart-dc"),
            SiteArg::Drc => one("drc"),
            SiteArg::All => SiteSelection::All,
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("dcguard-sim: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("dcguard-sim: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut options = SimOptions::new(&args.config)
        .with_sites(args.site.selection())
        .with_bind(BindMode::Configured {
            port_offset: args.port_offset,
        });
    if let Some(seed) = args.seed {
        options = options.with_seed(seed);
    }
    if let Some(scenario) = &args.scenario {
        options = options.with_scenario(scenario);
    }
    if let Some(broker) = args.mqtt {
        options = options.with_mqtt_broker(broker);
    }
    let sim = Sim::start(options).await?;
    for line in summary(&sim) {
        println!("{line}");
    }
    println!("serving; Ctrl-C to stop");
    stop_signal().await?;
    eprintln!("dcguard-sim: stopping");
    sim.shutdown().await;
    Ok(())
}

/// Ctrl-C (SIGINT), or SIGTERM from a service manager.
async fn stop_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result,
            _ = terminate.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

/// One line per site: endpoints (as bound), units, devices.
fn summary(sim: &RunningSim) -> Vec<String> {
    sim.sites()
        .iter()
        .map(|site| {
            let mut endpoints = BTreeSet::new();
            let mut units = 0usize;
            let mut mqtt = 0usize;
            for device in &site.spec.devices {
                match &device.transport {
                    Transport::Modbus { endpoint, .. } => {
                        units += 1;
                        endpoints.insert(sim.endpoint(*endpoint).unwrap_or(*endpoint));
                    }
                    Transport::Mqtt { .. } => mqtt += 1,
                }
            }
            format!(
                "site {}: {} Modbus endpoints ({}), {} units, {} devices ({} on MQTT)",
                site.spec.id,
                endpoints.len(),
                compact(&endpoints),
                units,
                site.spec.devices.len(),
                mqtt
            )
        })
        .collect()
}

/// `127.0.0.1:15001-15003,15005` for a set of addresses: runs of ports collapsed per IP.
fn compact(addresses: &BTreeSet<SocketAddr>) -> String {
    let mut by_ip: BTreeMap<IpAddr, Vec<u16>> = BTreeMap::new();
    for address in addresses {
        by_ip.entry(address.ip()).or_default().push(address.port());
    }
    let mut parts = Vec::new();
    for (ip, ports) in by_ip {
        let mut runs: Vec<(u16, u16)> = Vec::new();
        for port in ports {
            match runs.last_mut() {
                Some((_, end)) if end.checked_add(1) == Some(port) => *end = port,
                _ => runs.push((port, port)),
            }
        }
        let runs: Vec<String> = runs
            .iter()
            .map(|(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        let host = match ip {
            IpAddr::V6(v6) => format!("[{v6}]"),
            IpAddr::V4(v4) => v4.to_string(),
        };
        parts.push(format!("{host}:{}", runs.join(",")));
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_lists_collapse_port_runs() {
        let addresses: BTreeSet<SocketAddr> = [
            "127.0.0.1:15001",
            "127.0.0.1:15002",
            "127.0.0.1:15003",
            "127.0.0.1:15010",
            "[::1]:502",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        assert_eq!(compact(&addresses), "127.0.0.1:15001-15003,15010 [::1]:502");
    }
}
