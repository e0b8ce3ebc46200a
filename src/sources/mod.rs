//! Telemetry sources: turn configured devices into readings (Modbus TCP now; MQTT per issue 3).

pub mod modbus;
