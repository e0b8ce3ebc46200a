//! Telemetry sources: turn configured devices into readings (Modbus TCP now; MQTT per issue 3).

pub mod health;
pub mod modbus;
pub mod mqtt;
pub mod stale;
