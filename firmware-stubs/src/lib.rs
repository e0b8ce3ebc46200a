//! Firmware stubs: simulated UPS, PAC, genset, VESDA, meters and sensors for dcguard's tests and demo.
//!
//! * `spec`: the stubs' own lenient reading of `config/` (sites, profiles).
//! * `world`: the simulated physics of a site and the values of every point.
//! * `scenario`: timelines of faults and changes applied to the world.

pub mod scenario;
pub mod spec;
pub mod world;
