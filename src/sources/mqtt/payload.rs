//! Sensor payloads: turns one MQTT message body into point values by the MQTT profile.
//!
//! Pure code, no IO. The only place that reads a sensor's JSON (invariant 3 of
//! ARCHITECTURE.md). Rules:
//! * A body larger than the profile's `max_payload_bytes`, not UTF-8 or not JSON is a
//!   [`PayloadError`]: the whole message is rejected and no point gets a number.
//! * Each point is found by its dot path (`"."` = the body itself is the value). A
//!   missing field or a field of the wrong JSON type is a [`BadReason::Decode`] for that
//!   point only; a number outside `valid_min..=valid_max` is [`BadReason::OutOfRange`].
//!   A `f64` point takes JSON numbers only and a `bool` point JSON booleans only: a
//!   sensor that sends `"23.4"` or `1` is misconfigured, and guessing would hide it.
//! * `sequence_json`, when the profile has one, must hold a non-negative integer;
//!   anything else leaves the message without a sequence number (no deduplication).
//! * `ts`, when present, must be an RFC 3339 string no more than [`MAX_FUTURE_TS`]
//!   ahead of the receive time; otherwise the receive time is the sampling instant (a
//!   sensor clock far in the future would otherwise keep a dead sensor fresh).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value as Json;

use crate::config::model::{MqttPoint, MqttProfile, MqttValueType};
use crate::model::{BadReason, Value};

/// How far ahead of the receive time a payload's `ts` may be and still be trusted.
pub const MAX_FUTURE_TS: Duration = Duration::from_secs(60);

/// Why a whole message was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PayloadError {
    /// Larger than the profile allows.
    #[error("payload of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Size received.
        len: usize,
        /// The profile's `max_payload_bytes`.
        max: usize,
    },
    /// Not UTF-8 or not JSON. The text is serde_json's message (line and column, never
    /// the payload itself).
    #[error("payload is not JSON: {0}")]
    NotJson(String),
}

impl PayloadError {
    /// The bad-quality reason given to each point of a rejected message.
    pub fn reason(&self) -> BadReason {
        BadReason::Decode(self.to_string())
    }
}

/// A decoded message.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The per-sensor sequence number, when the profile has one and the payload holds it.
    pub sequence: Option<u64>,
    /// The sampling instant: the payload's valid `ts`, else the receive time.
    pub sampled_at: DateTime<Utc>,
    /// True when `sampled_at` came from the payload.
    pub ts_from_payload: bool,
    /// One result per profile point, in profile order.
    pub values: Vec<Result<Value, BadReason>>,
}

/// Decodes `body` by `profile`; `received_at` is the fallback sampling instant.
pub fn decode(
    profile: &MqttProfile,
    body: &[u8],
    received_at: DateTime<Utc>,
) -> Result<Decoded, PayloadError> {
    if body.len() > profile.max_payload_bytes {
        return Err(PayloadError::TooLarge {
            len: body.len(),
            max: profile.max_payload_bytes,
        });
    }
    let json: Json =
        serde_json::from_slice(body).map_err(|e| PayloadError::NotJson(e.to_string()))?;
    let sequence = profile
        .sequence_json
        .as_deref()
        .and_then(|path| lookup(&json, path))
        .and_then(Json::as_u64);
    let ts = lookup(&json, "ts")
        .filter(|_| json.is_object())
        .and_then(Json::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .filter(|t| {
            chrono::Duration::from_std(MAX_FUTURE_TS).is_ok_and(|max| *t - received_at <= max)
        });
    let values = profile
        .points
        .iter()
        .map(|p| point_value(p, &json))
        .collect();
    Ok(Decoded {
        sequence,
        sampled_at: ts.unwrap_or(received_at),
        ts_from_payload: ts.is_some(),
        values,
    })
}

/// The value at a dot path; `"."` is the root.
fn lookup<'a>(root: &'a Json, path: &str) -> Option<&'a Json> {
    if path == "." {
        return Some(root);
    }
    let mut node = root;
    for part in path.split('.') {
        node = node.as_object()?.get(part)?;
    }
    Some(node)
}

fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

fn point_value(point: &MqttPoint, json: &Json) -> Result<Value, BadReason> {
    let Some(field) = lookup(json, &point.json) else {
        return Err(BadReason::Decode(format!("field `{}` missing", point.json)));
    };
    match point.value_type {
        MqttValueType::Bool => match field {
            Json::Bool(b) => Ok(Value::Bool(*b)),
            other => Err(BadReason::Decode(format!(
                "field `{}`: expected a boolean, found {}",
                point.json,
                json_kind(other)
            ))),
        },
        MqttValueType::Number => {
            let Some(n) = field.as_f64() else {
                return Err(BadReason::Decode(format!(
                    "field `{}`: expected a number, found {}",
                    point.json,
                    json_kind(field)
                )));
            };
            if !n.is_finite() {
                return Err(BadReason::NotFinite);
            }
            let below = point.valid_min.is_some_and(|min| n < min);
            let above = point.valid_max.is_some_and(|max| n > max);
            if below || above {
                return Err(BadReason::OutOfRange { value: n });
            }
            Ok(Value::Number(n))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::{Role, Unit};

    fn point(name: &str, json: &str, ty: MqttValueType) -> MqttPoint {
        MqttPoint {
            name: name.into(),
            role: Role::EnvTemperatureC,
            json: json.into(),
            value_type: ty,
            unit: Unit::DegC,
            valid_min: Some(-10.0),
            valid_max: Some(60.0),
        }
    }

    fn profile(points: Vec<MqttPoint>) -> MqttProfile {
        MqttProfile {
            topic: "dcguard/{site}/{room}/th/{device}".into(),
            qos: 1,
            max_payload_bytes: 128,
            sequence_json: Some("seq".into()),
            interval: Duration::from_secs(10),
            points,
        }
    }

    fn th() -> MqttProfile {
        profile(vec![
            point("temperature", "temperature_c", MqttValueType::Number),
            point("battery", "status.battery_pct", MqttValueType::Number),
            point("door", "door_open", MqttValueType::Bool),
        ])
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-21T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn fields_by_dot_path_with_sequence_and_ts() {
        let body = br#"{"seq":7,"temperature_c":23.4,"status":{"battery_pct":57},"door_open":false,"ts":"2026-11-21T09:59:58.500Z"}"#;
        let d = decode(&th(), body, now()).unwrap();
        assert_eq!(d.sequence, Some(7));
        assert!(d.ts_from_payload);
        assert_eq!(d.sampled_at, now() - chrono::Duration::milliseconds(1500));
        assert_eq!(
            d.values,
            vec![
                Ok(Value::Number(23.4)),
                Ok(Value::Number(57.0)),
                Ok(Value::Bool(false))
            ]
        );
    }

    #[test]
    fn per_point_problems_stay_per_point() {
        let body = br#"{"temperature_c":"23.4","status":{"battery_pct":99.0},"door_open":1,"seq":-1,"ts":"yesterday"}"#;
        let d = decode(&th(), body, now()).unwrap();
        assert_eq!(d.sequence, None, "a negative sequence is no sequence");
        assert!(!d.ts_from_payload);
        assert_eq!(d.sampled_at, now());
        assert!(matches!(&d.values[0], Err(BadReason::Decode(m)) if m.contains("found a string")));
        assert_eq!(d.values[1], Err(BadReason::OutOfRange { value: 99.0 }));
        assert!(matches!(&d.values[2], Err(BadReason::Decode(m)) if m.contains("found a number")));

        let d = decode(&th(), br#"{"status":7}"#, now()).unwrap();
        assert!(
            d.values
                .iter()
                .all(|v| matches!(v, Err(BadReason::Decode(m)) if m.contains("missing")))
        );
    }

    #[test]
    fn ts_far_in_the_future_is_not_trusted() {
        let body = br#"{"temperature_c":20,"ts":"2026-11-21T11:00:00Z"}"#;
        let d = decode(&th(), body, now()).unwrap();
        assert_eq!(d.sampled_at, now());
        assert!(!d.ts_from_payload);
        let body = br#"{"temperature_c":20,"ts":"2026-11-21T10:00:30+00:00"}"#;
        assert!(decode(&th(), body, now()).unwrap().ts_from_payload);
    }

    #[test]
    fn whole_payload_values() {
        let p = profile(vec![point("leak", ".", MqttValueType::Bool)]);
        let d = decode(&p, b"true", now()).unwrap();
        assert_eq!(d.values, vec![Ok(Value::Bool(true))]);
        assert_eq!(d.sequence, None);
        let p = profile(vec![point("t", ".", MqttValueType::Number)]);
        assert_eq!(
            decode(&p, b" 21.5 ", now()).unwrap().values,
            vec![Ok(Value::Number(21.5))]
        );
        assert_eq!(
            decode(&p, b"75", now()).unwrap().values,
            vec![Err(BadReason::OutOfRange { value: 75.0 })]
        );
    }

    #[test]
    fn rejected_messages() {
        let big = vec![b' '; 129];
        assert_eq!(
            decode(&th(), &big, now()),
            Err(PayloadError::TooLarge { len: 129, max: 128 })
        );
        for body in [
            &b"{\"temperature_c\": 2"[..],
            b"",
            b"\xff\xfe",
            b"NaN",
            b"1e999",
        ] {
            let err = decode(&th(), body, now()).unwrap_err();
            assert!(matches!(err, PayloadError::NotJson(_)), "{body:?}: {err:?}");
            assert!(matches!(err.reason(), BadReason::Decode(_)));
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = decode(&th(), &body, now());
        }

        #[test]
        fn arbitrary_json_text_never_panics(body in "[{}\\[\\]\":,.0-9a-z_ -]{0,120}") {
            let _ = decode(&th(), body.as_bytes(), now());
        }
    }
}
