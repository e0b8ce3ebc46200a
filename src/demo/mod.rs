//! `dcguard demo`: the whole product in one process on loopback. Starts the firmware
//! stubs of the three sites at their full shipped inventory, an embedded MQTT broker, the
//! built-in incident receiver and the daemon on an embedded store, prints where to look
//! and the generated tokens, plays a scripted timeline ([`timeline`]) and shuts down in
//! order on Ctrl-C or SIGTERM.
//!
//! * `config`: the shipped configuration embedded in the binary, written into the data
//!   directory with the demo's changes.
//! * `broker`: the embedded MQTT broker (rumqttd).
//! * `receiver`: the incident receiver writing `incidents.jsonl`, relaying to `--webhook`.
//! * `timeline`: the scripted story, driven through the simulators, the ZKTeco reader
//!   stub and the daemon's own API.
//!
//! Tokens are generated at start, printed once to the terminal and stored only as SHA-256
//! hashes (`tokens.toml` in the data directory); they are never logged.

pub mod broker;
pub mod config;
pub mod receiver;
pub mod timeline;

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::api::auth::{NewToken, Role, new_token};
use crate::app::{App, RunOptions};
use crate::cli::{EXIT_FAILURE, EXIT_INVALID_CONFIG};

/// How long the daemon may take to stop in order (`daemon.shutdown_grace` of the demo).
/// The full inventory's final alarm snapshot takes a few seconds on a loaded machine.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// How many ports after a busy `--listen` port are tried.
const PORT_TRIES: u16 = 20;

/// `dcguard demo` options.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Address of the web pages, the API and /metrics (a loopback address; port 0: any
    /// free port). A busy port is replaced by the next free one, with a message.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// The data directory (store, audit chain, incidents.jsonl, the configuration used);
    /// default: a new directory under the system temp dir.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Also deliver every incident event to this webhook (CloudEvents, HMAC-SHA256
    /// signature as `[ticketing.webhook]` sends it).
    #[arg(long, value_name = "URL")]
    pub webhook: Option<String>,
    /// The environment variable holding the external webhook's signing secret.
    #[arg(long, value_name = "NAME", default_value = "DCGUARD_WEBHOOK_SECRET")]
    pub webhook_secret_env: String,
    /// Log level or filter for the daemon's log on stderr (default: warn).
    #[arg(long, value_name = "LEVEL", default_value = "warn,rumqttd=off")]
    pub log_level: String,
}

/// Prints one line to the terminal; a closed pipe is not worth a panic.
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// A usage error: what was given and what was expected.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Usage(String);

/// Entry point of `dcguard demo`.
pub fn main(args: DemoArgs) -> ExitCode {
    let checked = match check_args(&args) {
        Ok(checked) => checked,
        Err(Usage(problem)) => {
            eprintln!("dcguard demo: {problem}");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    if let Err(error) = crate::telemetry::init_logging(Some(&args.log_level)) {
        eprintln!("dcguard demo: {error}");
        return ExitCode::from(EXIT_INVALID_CONFIG);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("dcguard demo: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let code = match runtime.block_on(run(checked)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("dcguard demo: {error:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    };
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

/// The arguments, checked before anything starts.
#[derive(Debug)]
struct Checked {
    listen: SocketAddr,
    data_dir: PathBuf,
    relay: Option<receiver::Relay>,
}

fn check_args(args: &DemoArgs) -> Result<Checked, Usage> {
    let listen: SocketAddr = args.listen.trim().parse().map_err(|_| {
        Usage(format!(
            "--listen: found {:?}; expected a loopback address and port such as 127.0.0.1:8080",
            args.listen
        ))
    })?;
    if !listen.ip().is_loopback() {
        return Err(Usage(format!(
            "--listen: found {listen}; expected a loopback address (127.0.0.1 or [::1]): the demo \
             prints its tokens and serves simulated data to this machine only"
        )));
    }
    let relay = match &args.webhook {
        None => None,
        Some(url) => {
            let parsed = reqwest::Url::parse(url)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .ok_or_else(|| {
                    Usage(format!(
                        "--webhook: found {url:?}; expected an http:// or https:// URL"
                    ))
                })?;
            let key = std::env::var(&args.webhook_secret_env)
                .ok()
                .filter(|k| !k.is_empty())
                .ok_or_else(|| {
                    Usage(format!(
                        "--webhook needs its signing secret in the environment variable {}, \
                         which is not set (or name another with --webhook-secret-env)",
                        args.webhook_secret_env
                    ))
                })?;
            Some(receiver::Relay {
                url: parsed,
                key: key.into_bytes(),
            })
        }
    };
    let data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!(
            "dcguard-demo-{}-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
            std::process::id()
        )),
    };
    Ok(Checked {
        listen,
        data_dir,
        relay,
    })
}

/// Creates the data directory and proves it writable.
fn prepare_data_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "--data-dir: cannot create {}; expected a directory the demo can write to",
            dir.display()
        )
    })?;
    let probe = dir.join(".dcguard-demo-write-test");
    std::fs::write(&probe, b"ok").with_context(|| {
        format!(
            "--data-dir: {} is not writable; expected a directory the demo can write to",
            dir.display()
        )
    })?;
    let _ = std::fs::remove_file(&probe);
    Ok(std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned()))
}

/// Writes `text` readable by the owner only.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The requested address, or the next free port after it when it is busy.
fn pick_listen(requested: SocketAddr) -> anyhow::Result<SocketAddr> {
    if requested.port() == 0 {
        return Ok(requested);
    }
    for offset in 0..=PORT_TRIES {
        let Some(port) = requested.port().checked_add(offset) else {
            break;
        };
        let candidate = SocketAddr::new(requested.ip(), port);
        if TcpListener::bind(candidate).is_ok() {
            if offset > 0 {
                say(&format!(
                    "{requested} is in use; the demo listens on {candidate} instead."
                ));
            }
            return Ok(candidate);
        }
    }
    anyhow::bail!(
        "--listen: {requested} and the {PORT_TRIES} ports after it are in use; \
         expected a free port (or give --listen 127.0.0.1:0 for any free port)"
    )
}

/// The tokens of the demo: printed ones (operator, security) and the demo's own
/// integrator token (the timeline records a visit ticket with it, as a service desk does).
struct Tokens {
    operator: NewToken,
    security: NewToken,
    integrator: NewToken,
}

fn tokens() -> anyhow::Result<Tokens> {
    let make = |id: &str, role: Role| new_token(id, role).map_err(|e| anyhow::anyhow!(e));
    Ok(Tokens {
        operator: make("demo-operator", Role::Operator)?,
        security: make("demo-security", Role::Security)?,
        integrator: make("demo-ticketing", Role::Integrator)?,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn run(checked: Checked) -> anyhow::Result<()> {
    let Checked {
        listen,
        data_dir,
        relay,
    } = checked;
    // Signals are ours from here on: a Ctrl-C while starting stops the demo in order once
    // it has started, instead of killing it halfway.
    let mut signalled = tokio::spawn(async {
        let name = wait_for_signal().await;
        say(&format!(
            "\n{name}: shutting down in order (deadline {}s): timeline, daemon, simulators, receiver.",
            SHUTDOWN_GRACE.as_secs()
        ));
    });
    let data_dir = prepare_data_dir(&data_dir)?;
    say(&format!("dcguard demo: starting in {}", data_dir.display()));

    // Tokens: hashes into the tokens file, the tokens themselves only to the terminal.
    let tokens = tokens()?;
    let tokens_file = data_dir.join("tokens.toml");
    write_private(
        &tokens_file,
        &format!(
            "# dcguard demo: SHA-256 hashes of this run's tokens (the tokens are not stored).\n{}{}{}",
            tokens.operator.entry, tokens.security.entry, tokens.integrator.entry
        ),
    )?;
    // The built-in receiver and its signing key (loopback only, new every run).
    let receiver_key = hex(&rand::random::<[u8; 32]>());
    let receiver_key_file = data_dir.join("receiver.key");
    write_private(&receiver_key_file, &receiver_key)?;
    let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
    let has_relay = relay.as_ref().map(|r| r.url.to_string());
    let receiver =
        receiver::Receiver::start(&data_dir, receiver_key.into_bytes(), relay, events_tx).await?;

    // The configuration: the shipped one, embedded, with the demo's changes.
    let config_dir = data_dir.join("config");
    config::write(
        &config_dir,
        &config::Changes {
            tokens_file: &tokens_file,
            receiver_url: &receiver.url,
            receiver_key_file: &receiver_key_file,
            shutdown_grace_secs: SHUTDOWN_GRACE.as_secs(),
        },
    )?;
    let config = crate::config::load(&config_dir).map_err(|errors| {
        anyhow::anyhow!("the embedded configuration is invalid (a bug):\n{errors}")
    })?;
    let config = Arc::new(config);

    // The broker, then the simulators (sensors publish to the broker).
    let broker = broker::start(Duration::from_secs(10)).await?;
    let sim = firmware_stubs::sim::Sim::start(
        firmware_stubs::sim::SimOptions::new(&config_dir)
            .ephemeral()
            .with_mqtt_broker(broker),
    )
    .await
    .context("cannot start the simulated devices")?;

    // The daemon.
    let listen = pick_listen(listen)?;
    let broker_ids: Vec<String> = config.brokers.keys().cloned().collect();
    let options = RunOptions {
        listen: Some(listen),
        endpoint_overrides: sim.endpoints().clone(),
        broker_overrides: broker_ids
            .into_iter()
            .map(|id| (id, (broker.ip().to_string(), broker.port())))
            .collect(),
        data_dir: Some(data_dir.clone()),
        alarms: timeline::alarm_options(),
        ..RunOptions::default()
    };
    let app = match App::start(config.clone(), options).await {
        Ok(app) => app,
        Err(error) => {
            sim.shutdown().await;
            receiver.stop(Duration::from_secs(2)).await;
            return Err(error.context("cannot start the daemon"));
        }
    };
    let addr = app.http_addr();
    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn(app.run_until(shutdown.clone()));

    // A Ctrl-C while starting: no banner, no tokens on the screen, straight to the stop.
    if !signalled.is_finished() {
        banner(
            addr,
            &tokens,
            &data_dir,
            &receiver,
            broker,
            has_relay.as_deref(),
        );
    }

    let story = CancellationToken::new();
    let timeline = tokio::spawn(timeline::play(
        timeline::Context {
            base: format!("http://{addr}"),
            operator: tokens.operator.token.clone(),
            security: tokens.security.token.clone(),
            integrator: tokens.integrator.token.clone(),
            dc: sim.world("dc"),
            drc: sim.world("drc"),
        },
        events_rx,
        story.clone(),
    ));
    drop(tokens);

    // Until Ctrl-C or SIGTERM (or the daemon ending on its own).
    let mut daemon = daemon;
    let early = tokio::select! {
        _ = &mut signalled => None,
        ended = &mut daemon => Some(ended),
    };
    signalled.abort();
    story.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), timeline).await;
    let daemon_result = match early {
        Some(ended) => {
            say("The daemon stopped on its own; stopping the rest.");
            ended.map_err(anyhow::Error::from).and_then(|r| r)
        }
        None => {
            shutdown.cancel();
            match tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(5), &mut daemon).await {
                Ok(joined) => joined.map_err(anyhow::Error::from).and_then(|r| r),
                Err(_) => {
                    daemon.abort();
                    Err(anyhow::anyhow!(
                        "the daemon did not stop within {}s",
                        SHUTDOWN_GRACE.as_secs() + 5
                    ))
                }
            }
        }
    };
    match &daemon_result {
        Ok(()) => say("  daemon stopped (sources, readings, alarms, deliveries, HTTP)."),
        Err(error) => say(&format!("  daemon: {error:#}")),
    }
    // Invariant 1, read-only towards equipment: the stubs log every function code they got.
    let codes = sim.function_codes().codes_seen();
    let writes: Vec<u8> = codes
        .iter()
        .copied()
        .filter(|c| !(1..=4).contains(c))
        .collect();
    let listed: Vec<String> = codes.iter().map(u8::to_string).collect();
    let listed = if listed.is_empty() {
        vec!["none".to_owned()]
    } else {
        listed
    };
    if writes.is_empty() {
        say(&format!(
            "  Modbus function codes the stubs received: {} (reads only).",
            listed.join(", ")
        ));
    } else {
        say(&format!(
            "  ! Modbus function codes the stubs received: {}: {writes:?} are not reads.",
            listed.join(", ")
        ));
    }
    if tokio::time::timeout(Duration::from_secs(10), sim.shutdown())
        .await
        .is_ok()
    {
        say("  simulators stopped.");
    } else {
        say("  simulators did not stop within 10s; left to the process exit.");
    }
    if receiver.stop(Duration::from_secs(10)).await {
        say("  incident receiver stopped.");
    } else {
        say("  incident receiver: the relay did not finish within 10s.");
    }
    daemon_result?;
    anyhow::ensure!(
        writes.is_empty(),
        "a Modbus function code other than a read reached the stubs: {writes:?}"
    );
    say(&format!(
        "dcguard demo shut down cleanly. Data kept in {}",
        data_dir.display()
    ));
    Ok(())
}

fn banner(
    addr: SocketAddr,
    tokens: &Tokens,
    data_dir: &Path,
    receiver: &receiver::Receiver,
    broker: SocketAddr,
    relay: Option<&str>,
) {
    let host = match addr.ip() {
        IpAddr::V6(ip) => format!("[{ip}]:{}", addr.port()),
        IpAddr::V4(ip) => format!("{ip}:{}", addr.port()),
    };
    let lines = [
        String::new(),
        "dcguard demo is running: three simulated data centers (DC, Smart DC, DRC) on loopback.".to_owned(),
        String::new(),
        format!("  web pages:       http://{host}/"),
        format!("  API:             http://{host}/api/v1/   (OpenAPI: http://{host}/api/v1/openapi.json)"),
        format!("  metrics:         http://{host}/metrics   (no token needed from loopback)"),
        format!("  operator token:  {}", tokens.operator.token),
        format!("  security token:  {}", tokens.security.token),
        "                   (new every run, shown only here; send as `Authorization: Bearer TOKEN`)".to_owned(),
        format!("  try:             curl -H \"Authorization: Bearer $TOKEN\" http://{host}/api/v1/incidents"),
        format!("  incidents:       {} (built-in receiver)", receiver.path.display()),
        format!(
            "  external webhook: {}",
            relay.unwrap_or("none (give --webhook URL to relay incidents)")
        ),
        format!("  data directory:  {}", data_dir.display()),
        format!("  MQTT broker:     {broker} (embedded)"),
        String::new(),
        "Ctrl-C stops the demo in order. The timeline follows.".to_owned(),
        String::new(),
    ];
    for line in lines {
        say(&line);
    }
}

/// Waits for SIGINT or SIGTERM; returns its name.
async fn wait_for_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            return tokio::select! {
                _ = tokio::signal::ctrl_c() => "Ctrl-C (SIGINT)",
                _ = term.recv() => "SIGTERM",
            };
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    "Ctrl-C (SIGINT)"
}
