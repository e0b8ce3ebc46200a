//! Physical access: visit tickets, reader events, escort reconciliation, occupancy, audit chain.

pub mod audit;
pub mod cli;
pub mod escalate;
pub mod event;
pub mod http;
pub mod import;
pub mod ingest;
pub mod occupancy;
pub mod reconcile;
pub mod report;
pub mod rewind;
pub mod service;
pub mod ticket;
pub mod zkteco;
