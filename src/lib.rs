//! dcguard: facility monitoring and escorted-access gating for the DC, the Smart DC and the DRC.
//!
//! Modules, in reading order:
//!
//! * `config`: the configuration contract. Raw serde types mirror the files under
//!   `config/`; one validation step turns them into domain types or a list of every
//!   problem found (file, line, key path, value found, what was expected).
//! * `cli`: the command-line surface (`run`, `demo`, `check-config`).

pub mod cli;
pub mod config;
