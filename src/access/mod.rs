//! Physical access: visit tickets, reader events, escort reconciliation, occupancy, audit chain.

pub mod audit;
pub mod event;
pub mod http;
pub mod import;
pub mod ingest;
pub mod occupancy;
pub mod reconcile;
pub mod ticket;
pub mod zkteco;
