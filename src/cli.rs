//! The command-line surface of the `dcguard` binary: `run`, `demo`, `check-config`.
//!
//! PLACEHOLDER: replaced by the configuration work.

/// Entry point used by `src/main.rs`.
pub fn main() -> std::process::ExitCode {
    std::process::ExitCode::SUCCESS
}
