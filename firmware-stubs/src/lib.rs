//! Firmware stubs: simulated UPS, PAC, genset, VESDA, meters and sensors for dcguard's tests and demo.
//!
//! * `spec`: the stubs' own lenient reading of `config/` (sites, profiles).
//! * `world`: the simulated physics of a site and the values of every point.
//! * `scenario`: timelines of faults and changes applied to the world, and the clock task.
//! * `mqtt`: the MQTT publisher of the simulated sensors.
//! * `encode`: the stubs' own value -> register encoder (independent of the daemon's decoder).
//! * `modbus`: Modbus TCP servers, one per configured endpoint, serving the world's values.
//! * `reader`: a ZKTeco PUSH reader (real HTTP client) that pushes badge events to the daemon.
//! * `sim`: the runner that loads a config, builds the worlds and starts every server.

pub mod encode;
pub mod modbus;
pub mod mqtt;
pub mod reader;
pub mod receivers;
pub mod scenario;
pub mod sim;
pub mod spec;
pub mod world;
