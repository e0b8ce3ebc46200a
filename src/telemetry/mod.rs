//! Observability: logging setup and the Prometheus metrics of the daemon.
//!
//! `metrics` defines every metric name once ([`metrics::Metrics`]); [`init_logging`]
//! sets up `tracing` for the binary (tests and library users bring their own).

pub mod metrics;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// `--log-level` is not a level or a filter directive.
    #[error(
        "invalid log level `{level}`: expected error, warn, info, debug, trace or a filter like `dcguard=debug`"
    )]
    Level {
        /// What was given.
        level: String,
    },
    /// A global subscriber is already installed.
    #[error("logging is already set up")]
    AlreadySet,
}

/// The level when neither `--log-level` nor `RUST_LOG` says otherwise.
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// Logs to stderr at `level` (`info`, `debug`, ... or an `EnvFilter` directive such as
/// `dcguard=debug,rumqttc=warn`); without one, `RUST_LOG`, else [`DEFAULT_LOG_LEVEL`].
pub fn init_logging(level: Option<&str>) -> Result<(), LoggingError> {
    let directives = match level {
        Some(level) => level.to_owned(),
        None => std::env::var("RUST_LOG")
            .ok()
            .filter(|d| !d.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_owned()),
    };
    let bare = !directives.contains(['=', ',']);
    let levels = ["off", "error", "warn", "info", "debug", "trace"];
    if bare && !levels.contains(&directives.trim().to_ascii_lowercase().as_str()) {
        // A bare word would parse as a target name and silently log nothing useful.
        return Err(LoggingError::Level { level: directives });
    }
    let filter = EnvFilter::try_new(&directives).map_err(|_| LoggingError::Level {
        level: directives.clone(),
    })?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal, never in journald or a log file.
        .with_ansi(std::io::stderr().is_terminal())
        .try_init()
        .map_err(|_| LoggingError::AlreadySet)
}
