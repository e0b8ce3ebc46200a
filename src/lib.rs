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
//! * `sinks`: the InfluxDB v2 writer with its disk spool (issue 5).
//! * `rules`, `alarms`: facility rules and the alarm lifecycle (issue 4; pure).
//! * `incidents`: priority, SLA clocks, durable outbox and delivery (issue 4).
//! * `access`: visit tickets, reader events, reconciliation, audit chain (issue 6).
//! * `telemetry`: logging setup and every Prometheus metric (`telemetry::metrics`).
//! * `app`: the daemon's wiring: sources, readings channel, live state, metrics, HTTP,
//!   ordered shutdown; `dcguard run --once`.
//! * `api`: the REST API (`/api/v1`), bearer tokens by role, the access matrix, the audit
//!   of writes and denials, `/readyz`, `/metrics` access and the OpenAPI document.
//! * `http`: the HTTP server on `daemon.listen` that serves `api` and the ZKTeco routes.
//! * `store`: the embedded SQLite store (WAL, synchronous FULL) behind a narrow interface.
//! * `demo`: `dcguard demo`: simulators, an embedded broker and the daemon in one process,
//!   and a scripted timeline (issue 8).
//! * `cli`: the command-line surface (`run`, `demo`, `check-config`).

pub mod access;
pub mod alarms;
pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod demo;
pub mod http;
pub mod incidents;
pub mod model;
pub mod rules;
pub mod sinks;
pub mod sources;
pub mod store;
pub mod telemetry;
pub mod ticketing;
pub mod web;
