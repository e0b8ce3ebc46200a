//! Incidents: priority from the matrix, SLA clocks, the durable outbox and delivery.

pub mod incident;
pub mod sla;
