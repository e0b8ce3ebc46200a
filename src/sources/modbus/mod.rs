//! Modbus TCP source: request planner, register decoder, read-only client and the poller.

pub mod backoff;
pub mod client;
pub mod decode;
pub mod plan;
pub mod poller;
