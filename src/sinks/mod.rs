//! Sinks: where readings go besides the alarm path. Today the InfluxDB v2 writer with its
//! disk spool (`influxdb`), the line-protocol encoder (`line_protocol`) and the spool
//! (`spool`).
//!
//! Edge policy (style anchor 6.3): the readings consumer offers each reading to a sink
//! through the sink's own bounded channel with `try_send`; when it is full the reading is
//! dropped (drop newest) and counted in `dcguard_readings_dropped_total{sink="influxdb"}`.
//! The consumer never awaits a sink, so an InfluxDB outage never slows polling or
//! alarming.

pub mod influxdb;
pub mod line_protocol;
pub mod spool;
