//! The simulated physical world of one site: rooms, racks, power chain, cooling, fire, water.
//!
//! INTERFACE SKELETON: the signatures below are the contract between the physics
//! (this file, `scenario.rs`, `mqtt.rs`) and the Modbus server (`modbus.rs`, `encode.rs`).
//! The bodies are placeholders to be replaced by the physics model.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::scenario::Action;
use crate::spec::{DeviceSpec, PointSpec, SiteSpec};

/// A simulated engineering value, before encoding into registers or JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum SimValue {
    Number(f64),
    Bool(bool),
    Text(String),
    /// Raw register value(s) to serve as they are, bypassing scale and offset: used for
    /// sentinels (e.g. 0xFFFC "transducer fault") and for exact-word tests.
    Raw(u64),
}

/// How a device currently misbehaves on the wire (set by scenario actions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceFault {
    #[default]
    None,
    /// Never answers (requests time out; the connection stays open).
    Silent,
    /// Answers every request with this Modbus exception code (0x02, 0x06, 0x0B, ...).
    Exception(u8),
    /// Answers correctly, but only after this delay.
    Delay(Duration),
}

/// The world shared by the clock task, the Modbus servers and the MQTT publisher.
pub type SharedWorld = Arc<Mutex<World>>;

pub struct World {
    elapsed: Duration,
}

impl World {
    /// A site in its normal state; `seed` drives every random choice (noise, drift).
    pub fn new(_site: &SiteSpec, _seed: u64) -> World {
        World {
            elapsed: Duration::ZERO,
        }
    }

    /// Simulated time since start.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// Advances the physics by `dt`. Deterministic: same seed, same steps, same values.
    pub fn step(&mut self, dt: Duration) {
        self.elapsed += dt;
    }

    /// The engineering value of one point of one device now: a value forced by
    /// `set_point`, else the physics' value for the point's role, else a stable default.
    pub fn point_value(&self, _device: &DeviceSpec, _point: &PointSpec) -> Option<SimValue> {
        None
    }

    /// Forces a point (by point name) to a value until cleared or re-set.
    pub fn set_point(&mut self, _device_id: &str, _point: &str, _value: SimValue) {}

    /// The device's current wire fault.
    pub fn fault(&self, _device_id: &str) -> DeviceFault {
        DeviceFault::None
    }

    /// Bumped by a "drop connection" action: a Modbus server closes every connection
    /// to `endpoint` that it accepted under an older epoch.
    pub fn disconnect_epoch(&self, _endpoint: SocketAddr) -> u64 {
        0
    }

    /// Applies one scenario action (fail a device, cut a feed, set a value, ...).
    pub fn apply(&mut self, _action: &Action) -> Result<(), String> {
        Ok(())
    }
}
