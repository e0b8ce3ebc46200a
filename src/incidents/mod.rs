//! Incidents: priority from the matrix, SLA clocks, the durable outbox and delivery.

pub mod dispatcher;
pub mod incident;
pub mod outbox;
pub mod sla;
