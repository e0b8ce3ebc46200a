//! The simulator runner: loads `config/`, builds one [`World`] per site, binds one Modbus
//! listener per configured endpoint, runs the world's clock, and shuts it all down.
//!
//! Used by the `dcguard-sim` binary, by `dcguard demo` and by tests (with
//! [`BindMode::Ephemeral`], every endpoint on a free loopback port; [`RunningSim`] maps
//! each configured endpoint to the address actually bound).
//!
//! Only loopback addresses are ever bound or dialled: a site file naming any other
//! address is refused.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::modbus::{self, EndpointServer, FunctionCodeLog, ModbusError};
use crate::mqtt;
use crate::scenario::{self, Scenario, ScenarioError};
use crate::spec::{self, SiteSpec, SpecError, Transport};
use crate::world::{SharedWorld, World};

/// Where the endpoints listen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindMode {
    /// The address of the site files, with `port_offset` added to every port.
    Configured { port_offset: u16 },
    /// The configured loopback IP with port 0: the OS picks a free port per endpoint.
    Ephemeral,
}

/// Which sites to simulate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteSelection {
    All,
    Only(Vec<String>),
}

/// What to start. Build with [`SimOptions::new`] and the `with_*` methods.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub config_dir: PathBuf,
    pub sites: SiteSelection,
    /// Drives every random choice of the worlds (noise, drift); default: the scenario's
    /// seed, else 0.
    pub seed: Option<u64>,
    /// A scenario timeline file (`firmware-stubs/scenarios/*.toml`).
    pub scenario: Option<PathBuf>,
    /// The MQTT broker the sensor stubs publish to; no publishing when `None`.
    pub mqtt_broker: Option<SocketAddr>,
    pub bind: BindMode,
    /// The world's clock step (simulated time advances by this every tick of tokio time).
    pub tick: Duration,
}

impl SimOptions {
    /// All sites of `config_dir`, default seed, no scenario, no MQTT, configured ports,
    /// 100 ms tick.
    pub fn new(config_dir: impl Into<PathBuf>) -> SimOptions {
        SimOptions {
            config_dir: config_dir.into(),
            sites: SiteSelection::All,
            seed: None,
            scenario: None,
            mqtt_broker: None,
            bind: BindMode::Configured { port_offset: 0 },
            tick: Duration::from_millis(100),
        }
    }

    pub fn with_sites(mut self, sites: SiteSelection) -> SimOptions {
        self.sites = sites;
        self
    }

    /// Only this site (`dc`, `smart-dc`, `drc`).
    pub fn with_site(self, site: &str) -> SimOptions {
        self.with_sites(SiteSelection::Only(vec![site.to_owned()]))
    }

    pub fn with_seed(mut self, seed: u64) -> SimOptions {
        self.seed = Some(seed);
        self
    }

    pub fn with_scenario(mut self, scenario: impl Into<PathBuf>) -> SimOptions {
        self.scenario = Some(scenario.into());
        self
    }

    pub fn with_mqtt_broker(mut self, broker: SocketAddr) -> SimOptions {
        self.mqtt_broker = Some(broker);
        self
    }

    pub fn with_bind(mut self, bind: BindMode) -> SimOptions {
        self.bind = bind;
        self
    }

    /// Every endpoint on a free loopback port (tests).
    pub fn ephemeral(self) -> SimOptions {
        self.with_bind(BindMode::Ephemeral)
    }

    pub fn with_tick(mut self, tick: Duration) -> SimOptions {
        self.tick = tick;
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Config(#[from] SpecError),
    #[error("no site {requested:?} in the configuration (sites: {available})")]
    UnknownSite {
        requested: String,
        available: String,
    },
    #[error(
        "site {site}: device {device} is at {endpoint}, which is not a loopback address; \
         the simulators only ever listen on loopback"
    )]
    NotLoopback {
        site: String,
        device: String,
        endpoint: SocketAddr,
    },
    #[error("MQTT broker {0} is not a loopback address; the simulators only dial loopback")]
    BrokerNotLoopback(SocketAddr),
    #[error("endpoint {endpoint} is used by both site {first} and site {second}")]
    SharedEndpoint {
        endpoint: SocketAddr,
        first: String,
        second: String,
    },
    #[error("endpoint {endpoint} with port offset {offset} passes port 65535")]
    PortOverflow { endpoint: SocketAddr, offset: u16 },
    #[error(
        "cannot listen on {address} (endpoint {endpoint}): {source}; is another simulator running? try --port-offset"
    )]
    Bind {
        endpoint: SocketAddr,
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Modbus(#[from] ModbusError),
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error("scenario {scenario} is for site {site}, which is not simulated here")]
    ScenarioSiteNotRunning { scenario: String, site: String },
    #[error("{}", .0.join("; "))]
    ScenarioMismatch(Vec<String>),
}

/// One simulated site.
pub struct RunningSite {
    pub spec: SiteSpec,
    pub world: SharedWorld,
}

/// The simulators, running until [`RunningSim::shutdown`].
pub struct RunningSim {
    sites: Vec<RunningSite>,
    endpoints: BTreeMap<SocketAddr, SocketAddr>,
    endpoint_site: BTreeMap<SocketAddr, String>,
    log: FunctionCodeLog,
    cancel: CancellationToken,
    servers: Vec<EndpointServer>,
    tasks: Vec<JoinHandle<()>>,
}

/// Starts simulators from a configuration directory.
pub struct Sim;

impl Sim {
    /// Loads the configuration, binds every endpoint, starts the clocks. Returns once
    /// every listener is bound, so clients may connect right away.
    pub async fn start(options: SimOptions) -> Result<RunningSim, SimError> {
        let mut all = spec::load_sites(&options.config_dir)?;
        let sites: Vec<SiteSpec> = match &options.sites {
            SiteSelection::All => all,
            SiteSelection::Only(wanted) => {
                let mut chosen = Vec::new();
                for id in wanted {
                    if chosen.iter().any(|s: &SiteSpec| &s.id == id) {
                        continue;
                    }
                    let Some(i) = all.iter().position(|s| &s.id == id) else {
                        return Err(SimError::UnknownSite {
                            requested: id.clone(),
                            available: all
                                .iter()
                                .map(|s| s.id.as_str())
                                .collect::<Vec<_>>()
                                .join(", "),
                        });
                    };
                    chosen.push(all.remove(i));
                }
                chosen
            }
        };
        if let Some(broker) = options.mqtt_broker
            && !broker.ip().is_loopback()
        {
            return Err(SimError::BrokerNotLoopback(broker));
        }
        let scenario = match &options.scenario {
            None => None,
            Some(path) => {
                let scenario = Scenario::load(path)?;
                let Some(site) = sites.iter().find(|s| s.id == scenario.site) else {
                    return Err(SimError::ScenarioSiteNotRunning {
                        scenario: scenario.name,
                        site: scenario.site,
                    });
                };
                let problems = scenario.check_against(site);
                if !problems.is_empty() {
                    return Err(SimError::ScenarioMismatch(problems));
                }
                Some(scenario)
            }
        };
        let seed = options
            .seed
            .or(scenario.as_ref().and_then(|s| s.seed))
            .unwrap_or(0);

        // Check everything before binding anything.
        let mut plans = Vec::new();
        let mut endpoint_site: BTreeMap<SocketAddr, String> = BTreeMap::new();
        for site in &sites {
            for device in &site.devices {
                if let Transport::Modbus { endpoint, .. } = device.transport
                    && !endpoint.ip().is_loopback()
                {
                    return Err(SimError::NotLoopback {
                        site: site.id.clone(),
                        device: device.id.clone(),
                        endpoint,
                    });
                }
            }
            let site_plans = modbus::plan_site(site)?;
            for plan in &site_plans {
                if let Some(first) = endpoint_site.insert(plan.configured, site.id.clone()) {
                    return Err(SimError::SharedEndpoint {
                        endpoint: plan.configured,
                        first,
                        second: site.id.clone(),
                    });
                }
            }
            plans.push(site_plans);
        }

        let cancel = CancellationToken::new();
        let log = FunctionCodeLog::default();
        let mut running = RunningSim {
            sites: Vec::new(),
            endpoints: BTreeMap::new(),
            endpoint_site,
            log: log.clone(),
            cancel: cancel.clone(),
            servers: Vec::new(),
            tasks: Vec::new(),
        };
        for (site, site_plans) in sites.into_iter().zip(plans) {
            let world: SharedWorld = Arc::new(Mutex::new(World::new(&site, seed)));
            for plan in site_plans {
                let configured = plan.configured;
                let address = match options.bind {
                    BindMode::Ephemeral => SocketAddr::new(configured.ip(), 0),
                    BindMode::Configured { port_offset } => {
                        let port = configured.port().checked_add(port_offset).ok_or(
                            SimError::PortOverflow {
                                endpoint: configured,
                                offset: port_offset,
                            },
                        )?;
                        SocketAddr::new(configured.ip(), port)
                    }
                };
                let bound = match TcpListener::bind(address).await {
                    Ok(listener) => modbus::spawn_endpoint(
                        listener,
                        plan,
                        world.clone(),
                        log.clone(),
                        cancel.child_token(),
                    ),
                    Err(source) => Err(source),
                };
                let server = match bound {
                    Ok(server) => server,
                    Err(source) => {
                        running.shutdown().await;
                        return Err(SimError::Bind {
                            endpoint: configured,
                            address,
                            source,
                        });
                    }
                };
                running.endpoints.insert(configured, server.local);
                running.servers.push(server);
            }
            let timeline = scenario.clone().filter(|s| s.site == site.id);
            running.tasks.push(scenario::spawn_clock(
                world.clone(),
                timeline,
                options.tick,
                cancel.child_token(),
            ));
            if let Some(broker) = options.mqtt_broker {
                running.tasks.push(mqtt::spawn_publisher(
                    Arc::new(site.clone()),
                    world.clone(),
                    broker,
                    cancel.child_token(),
                ));
            }
            running.sites.push(RunningSite { spec: site, world });
        }
        Ok(running)
    }
}

impl RunningSim {
    /// The simulated sites, in the order started.
    pub fn sites(&self) -> &[RunningSite] {
        &self.sites
    }

    /// One site's configuration.
    pub fn site(&self, id: &str) -> Option<&SiteSpec> {
        self.sites.iter().find(|s| s.spec.id == id).map(|s| &s.spec)
    }

    /// One site's world: set points, faults and read values through it.
    pub fn world(&self, site: &str) -> Option<SharedWorld> {
        self.sites
            .iter()
            .find(|s| s.spec.id == site)
            .map(|s| s.world.clone())
    }

    /// Configured endpoint -> the address actually listening.
    pub fn endpoints(&self) -> &BTreeMap<SocketAddr, SocketAddr> {
        &self.endpoints
    }

    /// The address actually listening for a configured endpoint.
    pub fn endpoint(&self, configured: SocketAddr) -> Option<SocketAddr> {
        self.endpoints.get(&configured).copied()
    }

    /// The site serving a configured endpoint.
    pub fn endpoint_site(&self, configured: SocketAddr) -> Option<&str> {
        self.endpoint_site.get(&configured).map(String::as_str)
    }

    /// Function codes received, per configured endpoint.
    pub fn function_codes(&self) -> FunctionCodeLog {
        self.log.clone()
    }

    /// Cancelling this token stops the simulators (as `shutdown` does, without waiting).
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Stops every listener, connection and clock, and waits for their tasks.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        for server in self.servers {
            server.join().await;
        }
        for task in self.tasks {
            if let Err(error) = task.await {
                tracing::warn!(%error, "simulator task failed");
            }
        }
    }
}
