//! dcguard: facility monitoring and escorted-access gating for the DC, the Smart DC and the DRC.
//!
//! Modules, in reading order:
//!
//! * `config`: the configuration contract (`docs/configuration.md`). `config::load(dir)`
//!   reads `dcguard.toml`, `sites/*.toml` and `profiles/*.toml`; `config::raw` mirrors the
//!   files (serde, unknown keys rejected), `config::model` holds the validated domain types
//!   (sites, rooms, racks, devices with their `Arc<Profile>`, register encodings), and every
//!   problem is reported at once as `FILE:LINE: KEY.PATH: found FOUND; expected EXPECTED`.
//! * `model`: readings, the plain data every source produces.
//! * `sources`: telemetry acquisition.
//! * `cli`: the command-line surface (`run`, `demo`, `check-config`).

pub mod cli;
pub mod config;
pub mod model;
pub mod sources;
