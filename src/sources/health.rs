//! Device and endpoint health: up/down, last success, error counters by kind, scan timing.
//!
//! Plain data behind one shared registry ([`HealthRegistry`], an `Arc<Mutex<..>>`). The
//! sources write to it after each request or scan; the API, the rules and the metrics
//! export (issue 5) read snapshots. The lock is only ever held for a map update or a
//! clone, never across an `.await`, so readers cannot stall a poller.
//!
//! This answers the "frozen last values look live" complaint of today's tools: a device
//! that stopped answering is `up == false` with the reason, whatever its last readings.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// A device: site id and device id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceKey {
    /// Site id.
    pub site: Arc<str>,
    /// Device id, unique in the site.
    pub device: Arc<str>,
}

impl DeviceKey {
    /// A key from its parts.
    pub fn new(site: &str, device: &str) -> Self {
        DeviceKey {
            site: Arc::from(site),
            device: Arc::from(device),
        }
    }
}

/// Errors of a device, counted by kind since start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorCounters {
    /// Requests without a response in time.
    pub timeout: u64,
    /// Modbus exception responses, by exception code (after busy retries: each
    /// response counts).
    pub exception: BTreeMap<u8, u64>,
    /// Responses whose transaction id, unit or function code was not the request's.
    pub mismatch: u64,
    /// Frames breaking the protocol (length, protocol id, byte count).
    pub malformed: u64,
    /// Connection failures during a request (reset, closed).
    pub io: u64,
    /// Failed connection attempts while this device was due.
    pub connect: u64,
    /// Points whose data could not be decoded.
    pub decode: u64,
}

impl ErrorCounters {
    /// All errors of all kinds.
    pub fn total(&self) -> u64 {
        self.timeout
            + self.exception.values().sum::<u64>()
            + self.mismatch
            + self.malformed
            + self.io
            + self.connect
            + self.decode
    }
}

/// The health of one device.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceHealth {
    /// True after a request answered with data; false after a timeout, a connection
    /// failure or a gateway "target failed". False until the first answer.
    pub up: bool,
    /// Why the device is down (the last failure), `None` while up.
    pub down_reason: Option<String>,
    /// UTC instant of the last request answered with data.
    pub last_success: Option<DateTime<Utc>>,
    /// Errors by kind.
    pub errors: ErrorCounters,
    /// Busy (0x06) retries made.
    pub busy_retries: u64,
    /// Wall time of the last scan (all requests of one poll class).
    pub last_scan_duration: Option<Duration>,
    /// Requests sent in the last scan (retries included).
    pub requests_last_scan: u32,
    /// Scans run (including those answered without IO while the device backs off).
    pub scans: u64,
    /// Requests sent since start.
    pub requests: u64,
    /// Configuration problems found while polling (e.g. exception 0x02 for a request
    /// naming points the device does not have), each reported once.
    pub config_problems: Vec<String>,
}

impl DeviceHealth {
    /// Marks the device up after an answer with data.
    pub fn mark_up(&mut self, at: DateTime<Utc>) {
        self.up = true;
        self.down_reason = None;
        self.last_success = Some(at);
    }

    /// Marks the device down, with why.
    pub fn mark_down(&mut self, reason: impl Into<String>) {
        self.up = false;
        self.down_reason = Some(reason.into());
    }
}

/// The health of one Modbus endpoint (the TCP connections its devices share); the
/// counters add up every connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointHealth {
    /// A connection is open now.
    pub connected: bool,
    /// Connections open now (at most the endpoint's `max_connections`).
    pub open_connections: u32,
    /// Connections opened.
    pub connects: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
    /// Connections dropped after a fault (timeout, IO, mismatch, malformed frame).
    pub drops: u64,
    /// Requests sent.
    pub requests: u64,
}

#[derive(Debug, Default)]
struct State {
    devices: BTreeMap<DeviceKey, DeviceHealth>,
    endpoints: BTreeMap<SocketAddr, EndpointHealth>,
}

/// The shared health registry; clones share the same data.
#[derive(Debug, Clone, Default)]
pub struct HealthRegistry {
    state: Arc<Mutex<State>>,
}

impl HealthRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain counters: a panic elsewhere leaves them readable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a device (down, no data yet) so it is listed before its first scan.
    pub fn register(&self, key: &DeviceKey) {
        self.lock().devices.entry(key.clone()).or_default();
    }

    /// Changes one device's health.
    pub fn update_device<R>(
        &self,
        key: &DeviceKey,
        change: impl FnOnce(&mut DeviceHealth) -> R,
    ) -> R {
        let mut state = self.lock();
        change(state.devices.entry(key.clone()).or_default())
    }

    /// Changes one endpoint's health (keyed by its configured address).
    pub fn update_endpoint<R>(
        &self,
        endpoint: SocketAddr,
        change: impl FnOnce(&mut EndpointHealth) -> R,
    ) -> R {
        let mut state = self.lock();
        change(state.endpoints.entry(endpoint).or_default())
    }

    /// One device's health now.
    pub fn device(&self, site: &str, device: &str) -> Option<DeviceHealth> {
        self.lock()
            .devices
            .get(&DeviceKey::new(site, device))
            .cloned()
    }

    /// Every device's health now.
    pub fn devices(&self) -> BTreeMap<DeviceKey, DeviceHealth> {
        self.lock().devices.clone()
    }

    /// One endpoint's health now (by configured address).
    pub fn endpoint(&self, endpoint: SocketAddr) -> Option<EndpointHealth> {
        self.lock().endpoints.get(&endpoint).cloned()
    }

    /// Every endpoint's health now.
    pub fn endpoints(&self) -> BTreeMap<SocketAddr, EndpointHealth> {
        self.lock().endpoints.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_one_registry() {
        let registry = HealthRegistry::new();
        let key = DeviceKey::new("dc", "ups-1");
        registry.register(&key);
        assert_eq!(
            registry.device("dc", "ups-1"),
            Some(DeviceHealth::default())
        );
        let writer = registry.clone();
        writer.update_device(&key, |h| {
            h.errors.timeout += 1;
            *h.errors.exception.entry(0x06).or_default() += 2;
            h.mark_down("timeout");
        });
        let seen = registry.device("dc", "ups-1").unwrap();
        assert!(!seen.up);
        assert_eq!(seen.down_reason.as_deref(), Some("timeout"));
        assert_eq!(seen.errors.total(), 3);
        let at = DateTime::<Utc>::UNIX_EPOCH;
        writer.update_device(&key, |h| h.mark_up(at));
        let seen = registry.device("dc", "ups-1").unwrap();
        assert!(seen.up && seen.down_reason.is_none());
        assert_eq!(seen.last_success, Some(at));
        assert_eq!(registry.device("dc", "nope"), None);
    }
}
