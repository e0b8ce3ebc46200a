//! Readings: the plain data every source produces and every consumer reads. No IO here.
//!
//! A [`Reading`] is one sample of one point: its id, its [`Quality`], the UTC instant it
//! was sampled, and a [`Value`] **only when the quality is good**. Invariant 5 of
//! DESIGN.md ("bad data is never a number") holds by construction: the fields are
//! private and the only constructors are [`Reading::good`], [`Reading::bad`] and
//! [`Reading::stale`], so a bad or stale reading cannot carry a value for a rule, a
//! sink or a dashboard to mistake for data.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};

/// Which point a reading belongs to: site id, device id, point name.
///
/// Cheap to clone (three reference-counted strings); sources build one per point once
/// and clone it into every reading.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PointId {
    /// Site id (`dc`, `smart-dc`, `drc`).
    pub site: Arc<str>,
    /// Device id, unique in the site.
    pub device: Arc<str>,
    /// Point name, unique in the device's profile.
    pub point: Arc<str>,
}

impl PointId {
    /// Builds an id from its three parts.
    pub fn new(site: &str, device: &str, point: &str) -> Self {
        PointId {
            site: Arc::from(site),
            device: Arc::from(device),
            point: Arc::from(point),
        }
    }
}

impl fmt::Display for PointId {
    /// `site/device/point`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.site, self.device, self.point)
    }
}

/// A good value of a point.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A measurement in engineering units (`raw * scale + offset`), always finite.
    Number(f64),
    /// A coil, a discrete input, a one-bit field or a JSON boolean.
    Bool(bool),
    /// Text (e.g. a model string), trailing NUL and spaces trimmed.
    Text(Arc<str>),
    /// A point with enum names: the raw integer and its name when the profile has one.
    State {
        /// The raw integer read from the device (not scaled).
        raw: i64,
        /// The profile's name for `raw`; `None` for a value the profile does not name.
        name: Option<Arc<str>>,
    },
}

impl Value {
    /// The value as a number for threshold rules: numbers as they are, booleans as 0/1,
    /// states as their raw integer, text as `None`.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            Value::State { raw, .. } => Some(*raw as f64),
            Value::Text(_) => None,
        }
    }
}

impl fmt::Display for Value {
    /// Numbers as Rust prints them, booleans as `true`/`false`, states as `name (raw)`
    /// or `raw`, text as it is.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Number(n) => write!(f, "{n}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Text(t) => f.write_str(t),
            Value::State {
                raw,
                name: Some(name),
            } => write!(f, "{name} ({raw})"),
            Value::State { raw, name: None } => write!(f, "{raw}"),
        }
    }
}

/// Why a reading is bad. Diagnostic only: the fields describe the fault, they are never
/// a value of the point.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BadReason {
    /// The device sent a raw value its profile declares as "not data".
    #[error("sentinel 0x{raw:X}: {reason}")]
    Sentinel {
        /// The raw unsigned value, before sign, scale and offset.
        raw: u64,
        /// The profile's reason, e.g. "transducer fault".
        reason: Arc<str>,
    },
    /// The device answered with a Modbus exception (0x02 illegal address, 0x06 busy,
    /// 0x0B gateway target failed, ...).
    #[error("Modbus exception 0x{0:02X}")]
    Exception(u8),
    /// No answer within the request timeout.
    #[error("timeout")]
    Timeout,
    /// The connection to the device or broker is down.
    #[error("connection lost")]
    ConnectionLost,
    /// The engineering value lies outside the profile's `valid_min..valid_max`.
    #[error("{value} outside the plausible range")]
    OutOfRange {
        /// The implausible engineering value, for the log only.
        value: f64,
    },
    /// A float register held NaN or an infinity (or scaling overflowed).
    #[error("not a finite number")]
    NotFinite,
    /// The data could not be decoded: wrong number of registers, a malformed payload,
    /// a missing JSON field.
    #[error("cannot decode: {0}")]
    Decode(String),
}

/// The quality of a reading.
#[derive(Debug, Clone, PartialEq)]
pub enum Quality {
    /// The value is data.
    Good,
    /// No value: the sample failed, and why.
    Bad(BadReason),
    /// No good sample for too long (N poll or publish intervals).
    Stale,
}

impl Quality {
    /// True for [`Quality::Good`].
    pub fn is_good(&self) -> bool {
        matches!(self, Quality::Good)
    }
}

/// One sample of one point.
///
/// Carries a [`Value`] exactly when its quality is [`Quality::Good`]; the constructors
/// are the only way to build one, so bad and stale readings never hold a number.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    point: PointId,
    value: Option<Value>,
    quality: Quality,
    sampled_at: DateTime<Utc>,
}

impl Reading {
    /// A good reading holding `value`.
    pub fn good(point: PointId, value: Value, sampled_at: DateTime<Utc>) -> Self {
        Reading {
            point,
            value: Some(value),
            quality: Quality::Good,
            sampled_at,
        }
    }

    /// A bad reading: no value, and the reason.
    pub fn bad(point: PointId, reason: BadReason, sampled_at: DateTime<Utc>) -> Self {
        Reading {
            point,
            value: None,
            quality: Quality::Bad(reason),
            sampled_at,
        }
    }

    /// A stale reading: no value.
    pub fn stale(point: PointId, sampled_at: DateTime<Utc>) -> Self {
        Reading {
            point,
            value: None,
            quality: Quality::Stale,
            sampled_at,
        }
    }

    /// Good or bad from a decoder's result.
    pub fn from_result(
        point: PointId,
        result: Result<Value, BadReason>,
        sampled_at: DateTime<Utc>,
    ) -> Self {
        match result {
            Ok(value) => Reading::good(point, value, sampled_at),
            Err(reason) => Reading::bad(point, reason, sampled_at),
        }
    }

    /// The point.
    pub fn point(&self) -> &PointId {
        &self.point
    }

    /// The value; `Some` exactly when the quality is good.
    pub fn value(&self) -> Option<&Value> {
        self.value.as_ref()
    }

    /// The quality.
    pub fn quality(&self) -> &Quality {
        &self.quality
    }

    /// The UTC instant the sample was taken (the poll instant or the message's arrival).
    pub fn sampled_at(&self) -> DateTime<Utc> {
        self.sampled_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> PointId {
        PointId::new("dc", "gen-1", "oil_pressure")
    }

    #[test]
    fn only_good_readings_carry_a_value() {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let good = Reading::good(id(), Value::Number(412.0), at);
        assert_eq!(good.value(), Some(&Value::Number(412.0)));
        assert!(good.quality().is_good());

        let reason = BadReason::Sentinel {
            raw: 0xFFFC,
            reason: Arc::from("transducer fault"),
        };
        let bad = Reading::from_result(id(), Err(reason.clone()), at);
        assert_eq!(bad.value(), None);
        assert_eq!(bad.quality(), &Quality::Bad(reason));

        let stale = Reading::stale(id(), at);
        assert_eq!(stale.value(), None);
        assert_eq!(stale.quality(), &Quality::Stale);
    }

    #[test]
    fn display_forms() {
        assert_eq!(id().to_string(), "dc/gen-1/oil_pressure");
        let state = Value::State {
            raw: 3,
            name: Some(Arc::from("shutdown")),
        };
        assert_eq!(state.to_string(), "shutdown (3)");
        assert_eq!(state.as_f64(), Some(3.0));
        assert_eq!(Value::Text(Arc::from("x")).as_f64(), None);
        assert_eq!(
            BadReason::Sentinel {
                raw: 0xFFFC,
                reason: Arc::from("transducer fault")
            }
            .to_string(),
            "sentinel 0xFFFC: transducer fault"
        );
        assert_eq!(
            BadReason::Exception(0x0B).to_string(),
            "Modbus exception 0x0B"
        );
    }
}
