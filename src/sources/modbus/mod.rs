//! Modbus TCP source: the pure request planner and register decoder (the poller builds on them).

pub mod decode;
pub mod plan;
