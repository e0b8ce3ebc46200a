//! The command-line surface of the `dcguard` binary: `run`, `demo`, `check-config`,
//! `audit`, `access`, `token`.
//!
//! Exit codes follow sysexits: 0 ok (a clean shutdown; for `run --once`, every point
//! good), 1 a failure while starting or running (for `run --once`, a point not good),
//! 64 (EX_USAGE) invalid configuration or arguments, 69 (EX_UNAVAILABLE) a subcommand
//! that has not arrived yet.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::app::{self, OnceError, OnceTarget, RunOptions};
use crate::config::{self, Config};
use crate::telemetry;

/// Exit code for an invalid configuration (EX_USAGE).
pub const EXIT_INVALID_CONFIG: u8 = 64;
/// Exit code for a subcommand that is not available yet (EX_UNAVAILABLE).
pub const EXIT_UNAVAILABLE: u8 = 69;
/// Exit code for a failure while starting or running, and for `run --once` when a point
/// did not read good.
pub const EXIT_FAILURE: u8 = 1;

/// Facility monitoring and escorted-access gating for the DC, the Smart DC and the DRC.
#[derive(Debug, Parser)]
#[command(name = "dcguard", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon with a configuration directory until SIGINT or SIGTERM.
    Run {
        /// Configuration directory (dcguard.toml, sites/, profiles/).
        #[arg(long, value_name = "DIR", default_value = "config")]
        config: PathBuf,
        /// Log level (error, warn, info, debug, trace) or a filter such as
        /// `dcguard=debug,rumqttc=warn`; default: RUST_LOG, else info. Readings are
        /// logged at debug.
        #[arg(long, value_name = "LEVEL")]
        log_level: Option<String>,
        /// Read one scan of one device, print it as a table and exit (0 when every
        /// point is good, 1 otherwise): for commissioning a device.
        #[arg(long, value_name = "DEVICE[@SITE]")]
        once: Option<OnceTarget>,
        /// State directory (the store) instead of `daemon.data_dir`.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Start simulators, a broker and the daemon, and play a scripted timeline.
    Demo(crate::demo::DemoArgs),
    /// The tamper-evident access audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Access events.
    #[command(subcommand)]
    Access(AccessCommand),
    /// API bearer tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Validate a configuration directory and print every problem at once.
    CheckConfig {
        /// Configuration directory (dcguard.toml, sites/, profiles/).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

/// `dcguard audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the hash chain and its signed checkpoints; exit 0 with a summary, or 1
    /// naming the first bad record.
    Verify {
        /// The daemon's state directory (holds `access-audit.log`).
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The checkpoint key's credential file (default: `$DCGUARD_AUDIT_KEY_FILE`, then
        /// `$CREDENTIALS_DIRECTORY/dcguard-audit-key`, then `DIR/audit.key`).
        #[arg(long, value_name = "FILE")]
        key_file: Option<PathBuf>,
    },
}

/// `dcguard token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a fresh random token and the entry that admits it, to append to the tokens
    /// file of `[auth]`. The token is shown once and stored nowhere: dcguard keeps only
    /// its SHA-256.
    New {
        /// The role: viewer, operator, security, integrator or admin.
        #[arg(long, value_name = "ROLE")]
        role: crate::api::auth::Role,
        /// A name for the token's holder (A-Z a-z 0-9 - _ .), shown in the audit chain.
        #[arg(long, value_name = "NAME")]
        id: String,
    },
}

/// `dcguard access ...`.
#[derive(Debug, Subcommand)]
pub enum AccessCommand {
    /// Import reader events from a CSV export (format: `access::import`); idempotent.
    /// Refused while the daemon runs on the same data directory.
    Import {
        /// The CSV file.
        #[arg(value_name = "FILE.csv")]
        file: PathBuf,
        /// Record readers that are in no site's reader map at this site (an
        /// `unknown_reader` finding each) instead of refusing the file.
        #[arg(long, value_name = "SITE")]
        site: Option<String>,
        #[command(flatten)]
        common: crate::access::cli::Common,
    },
    /// Query the access log (reader events); a table, or CSV with --csv.
    Events {
        #[command(flatten)]
        filter: crate::access::cli::EventArgs,
        #[command(flatten)]
        common: crate::access::cli::Common,
    },
    /// Query findings with their reviews; a table, or CSV with --csv.
    Findings {
        #[command(flatten)]
        filter: crate::access::cli::FindingArgs,
        #[command(flatten)]
        common: crate::access::cli::Common,
    },
    /// The visit report of a ticket: each person's entries and exits, time inside,
    /// escort pairing and findings (as of now; --json for the data sent to ticketing).
    VisitReport {
        /// The ticket id.
        #[arg(value_name = "TICKET")]
        ticket: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: crate::access::cli::Common,
    },
    /// Mark a finding reviewed with a note (appended to the audit chain). Refused while the
    /// daemon runs on the same data directory (use the API then).
    Review {
        /// The finding id.
        #[arg(value_name = "FINDING")]
        finding: i64,
        /// Who reviewed it.
        #[arg(long)]
        reviewer: String,
        /// What was found out or done.
        #[arg(long)]
        note: String,
        #[command(flatten)]
        common: crate::access::cli::Common,
    },
}

/// Entry point used by `src/main.rs`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { dir } => check_config(&dir),
        Command::Access(command) => crate::access::cli::run(command),
        Command::Token(TokenCommand::New { role, id }) => token_new(role, &id),
        Command::Audit(AuditCommand::Verify { data_dir, key_file }) => {
            match crate::access::ingest::verify_chain(&data_dir, key_file.as_deref()) {
                Ok(summary) => {
                    let _ = writeln!(std::io::stdout().lock(), "{summary}");
                    ExitCode::SUCCESS
                }
                Err(problem) => {
                    eprintln!("dcguard audit verify: {problem}");
                    ExitCode::from(EXIT_FAILURE)
                }
            }
        }
        Command::Run {
            config,
            log_level,
            once,
            data_dir,
        } => run(&config, log_level.as_deref(), once, data_dir),
        Command::Demo(args) => crate::demo::main(args),
    }
}

fn run(
    dir: &Path,
    log_level: Option<&str>,
    once: Option<OnceTarget>,
    data_dir: Option<PathBuf>,
) -> ExitCode {
    let config = match config::load(dir) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    if let Err(error) = telemetry::init_logging(log_level) {
        eprintln!("dcguard run: {error}");
        return ExitCode::from(EXIT_INVALID_CONFIG);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("dcguard run: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let code = match once {
        Some(target) => runtime.block_on(run_once(&config, &target)),
        None => runtime.block_on(run_daemon(config, data_dir)),
    };
    // Blocking work left behind (a scrape being rendered) must not hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

async fn run_daemon(config: Config, data_dir: Option<PathBuf>) -> ExitCode {
    let shutdown = CancellationToken::new();
    let signals = tokio::spawn(wait_for_signal(shutdown.clone()));
    let options = RunOptions {
        data_dir,
        ..RunOptions::default()
    };
    let result = app::run(Arc::new(config), options, shutdown).await;
    signals.abort();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "Daemon failed.");
            eprintln!("dcguard run: {error:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Cancels `shutdown` on the first SIGINT (Ctrl-C) or SIGTERM.
async fn wait_for_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(term) => term,
            Err(error) => {
                tracing::warn!(%error, "Cannot listen for SIGTERM; Ctrl-C only.");
                let _ = tokio::signal::ctrl_c().await;
                tracing::info!(
                    signal = "SIGINT",
                    "Signal received; shutting down in order."
                );
                shutdown.cancel();
                return;
            }
        };
        let name = tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        tracing::info!(signal = name, "Signal received; shutting down in order.");
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!(
            signal = "Ctrl-C",
            "Signal received; shutting down in order."
        );
    }
    shutdown.cancel();
}

async fn run_once(config: &Config, target: &OnceTarget) -> ExitCode {
    match app::once(config, target, &RunOptions::default()).await {
        Ok(report) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(report.table().as_bytes());
            if report.all_good() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_FAILURE)
            }
        }
        Err(error @ (OnceError::UnknownDevice { .. } | OnceError::Ambiguous { .. })) => {
            eprintln!("dcguard run --once: {error}");
            ExitCode::from(EXIT_INVALID_CONFIG)
        }
        Err(error) => {
            eprintln!("dcguard run --once: {error}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn token_new(role: crate::api::auth::Role, id: &str) -> ExitCode {
    match crate::api::auth::new_token(id, role) {
        Ok(new) => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "# Token for {id} (role {role}). Give it to its holder over a secure channel;\n\
                 # it is shown once and stored nowhere.\n{}\n\n\
                 # Append to the tokens file of [auth] (tokens_file), then restart dcguard:\n{}",
                new.token, new.entry
            );
            ExitCode::SUCCESS
        }
        Err(problem) => {
            eprintln!("dcguard token new: {problem}");
            ExitCode::from(EXIT_INVALID_CONFIG)
        }
    }
}

fn check_config(dir: &Path) -> ExitCode {
    match config::load(dir) {
        Ok(cfg) => {
            // A closed pipe (`| head`) is not an error worth a panic.
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "config {} is valid", dir.display());
            let _ = writeln!(out, "{}", cfg.summary());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::from(EXIT_INVALID_CONFIG)
        }
    }
}
