//! One access event from a reader, normalised: the input of reconciliation and the access log.
//!
//! This file is the contract between ingestion (ZKTeco ATTLOG/RTLOG/OPERLOG, JSON batches, CSV
//! imports) and reconciliation (`access::reconcile`). Fields may be added, none removed or renamed.

use std::sync::Arc;

use chrono::{DateTime, Utc};

/// Where an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventSource {
    ZktecoAttlog,
    ZktecoRtlog,
    ZktecoOperlog,
    JsonBatch,
    CsvImport,
}

/// What happened at the reader.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum EventKind {
    /// Access granted; `direction` from the reader map (entry/exit) or the device's in/out state.
    Granted,
    /// Access denied (wrong credential, outside schedule, ...), with the device's reason code.
    Denied { reason: Option<Arc<str>> },
    /// Device operation log: power on/off, set time, delete records, door forced, duress, tamper...
    Operation { op: DeviceOp },
}

/// A device operation (ZKTeco OPERLOG and RTLOG alarm events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceOp {
    PowerOn,
    PowerOff,
    SetTime,
    DeleteRecords,
    DoorForced,
    Duress,
    Tamper,
    AlarmCancelled,
    Other,
}

impl DeviceOp {
    /// True for the operations that are a `device_tamper` finding: they change the device's
    /// clock or records, or report forced entry, duress or enclosure tamper.
    pub fn is_tamper(self) -> bool {
        matches!(
            self,
            Self::SetTime | Self::DeleteRecords | Self::DoorForced | Self::Duress | Self::Tamper
        )
    }
}

/// Which way a granted passage went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Entry,
    Exit,
}

/// One event. `id` is a stable content hash so a re-sent batch creates no duplicate.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AccessEvent {
    /// Stable id: hex SHA-256 of (reader serial, credential, device time, kind, raw line). Idempotency key.
    pub id: Arc<str>,
    pub source: EventSource,
    /// Reader device serial number (ZKTeco `SN`).
    pub reader: Arc<str>,
    /// PIN / card / biometric id as the reader reports it; None for device operations without a user.
    pub credential: Option<Arc<str>>,
    pub kind: EventKind,
    /// From the reader map (or the device's in/out state when the firmware reports it).
    pub direction: Option<Direction>,
    /// The device's own time converted from site local time to UTC.
    pub device_time: DateTime<Utc>,
    /// When the daemon received it.
    pub received_at: DateTime<Utc>,
    /// The raw line as received, for evidence.
    pub raw: Arc<str>,
    /// Part of a reader's backlog: it happened while the reader was out of contact and was
    /// uploaded when it came back, so its device time is trusted although far from the
    /// receive time (`access::rewind`). Decided by the daemon at ingestion, never by a
    /// reader; stored with the event so every re-run times it the same way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub backlog: bool,
}
