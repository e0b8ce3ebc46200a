//! InfluxDB line protocol: the only module that knows its syntax (escaping, field types,
//! timestamps). Pure functions, no IO.
//!
//! One reading becomes one line (the schema is `docs/timeseries.md`):
//!
//! ```text
//! ups,site=dc,room=ups-room,device=ups-1 load_pct=41.5,load_pct_quality=0i 1763730000000000000
//! ```
//!
//! * measurement: the device kind (`ups`, `pac`, `genset`, ...);
//! * tags: `site`, `room`, `rack` (omitted when the device has none), `device`;
//! * fields: `<point>` with the value (numbers as floats, booleans, enum states as their
//!   raw integer `Ni` plus `<point>_name` with the profile's name, text as a string) only
//!   when the reading is good, and always `<point>_quality` = `0i` good, `1i` bad,
//!   `2i` stale;
//! * timestamp: the reading's `sampled_at` in nanoseconds, so a replay overwrites the same
//!   point and never adds a second one.
//!
//! Escaping follows the InfluxDB v2 reference: `,` and space in measurements; `,`, `=`
//! and space in tag keys, tag values and field keys; `"` and `\` in string field values.
//! Two things line protocol cannot carry are refused instead of guessed: a backslash or
//! a control character in an identifier (measurement, tag, field key; ids come from the
//! validated configuration, so this is a configuration bug) and an empty tag value.
//! Line breaks in text values become spaces (a line break ends a line).

use std::fmt::Write as _;

use crate::model::{Quality, Reading, Value};

/// Why a reading has no line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// An identifier holds a character line protocol cannot carry.
    #[error("{what} {text:?} holds a backslash or a control character")]
    Unrepresentable {
        /// `measurement`, `tag key`, `tag value` or `field key`.
        what: &'static str,
        /// The identifier.
        text: String,
    },
    /// A tag value is empty (line protocol has no empty tag).
    #[error("tag {0} is empty")]
    EmptyTag(String),
    /// The sampling instant lies outside 1677..2262 (no nanosecond timestamp).
    #[error("the sampling instant is outside the nanosecond range")]
    TimestampRange,
    /// A number is NaN or infinite (readings never hold one; defensive).
    #[error("field {0} is not a finite number")]
    NotFinite(String),
}

/// The measurement and the escaped tag set of one device, computed once per device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesKey {
    /// `measurement,tag=value,...` already escaped, without the trailing space.
    prefix: String,
}

impl SeriesKey {
    /// The key of a device: measurement `kind`, tags in the order given; a tag with an
    /// empty value is left out when `optional`, else refused.
    pub fn new(kind: &str, tags: &[(&str, &str, bool)]) -> Result<SeriesKey, LineError> {
        check_identifier("measurement", kind)?;
        if kind.is_empty() {
            return Err(LineError::EmptyTag("measurement".to_owned()));
        }
        let mut prefix = String::with_capacity(64);
        escape_into(&mut prefix, kind, &[',', ' ']);
        for (key, value, optional) in tags {
            check_identifier("tag key", key)?;
            check_identifier("tag value", value)?;
            if value.is_empty() {
                if *optional {
                    continue;
                }
                return Err(LineError::EmptyTag((*key).to_owned()));
            }
            prefix.push(',');
            escape_into(&mut prefix, key, &[',', '=', ' ']);
            prefix.push('=');
            escape_into(&mut prefix, value, &[',', '=', ' ']);
        }
        Ok(SeriesKey { prefix })
    }

    /// The escaped `measurement,tags` part.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// The quality code of the `<point>_quality` field.
pub fn quality_code(quality: &Quality) -> i64 {
    match quality {
        Quality::Good => 0,
        Quality::Bad(_) => 1,
        Quality::Stale => 2,
    }
}

/// Appends the line of `reading` (with its trailing `\n`) to `out`. On error `out` is
/// left as it was.
pub fn encode(key: &SeriesKey, reading: &Reading, out: &mut String) -> Result<(), LineError> {
    let point = &*reading.point().point;
    check_identifier("field key", point)?;
    let ts = reading
        .sampled_at()
        .timestamp_nanos_opt()
        .ok_or(LineError::TimestampRange)?;
    let start = out.len();
    out.push_str(&key.prefix);
    out.push(' ');
    let field_key = |out: &mut String, suffix: &str| {
        escape_into(out, point, &[',', '=', ' ']);
        out.push_str(suffix);
        out.push('=');
    };
    match reading.value() {
        Some(Value::Number(n)) => {
            if !n.is_finite() {
                out.truncate(start);
                return Err(LineError::NotFinite(point.to_owned()));
            }
            field_key(out, "");
            // `{}` prints the shortest text that reads back as the same f64, never with
            // an exponent and without an `i`, so it stays a float field.
            let _ = write!(out, "{n}");
            out.push(',');
        }
        Some(Value::Bool(b)) => {
            field_key(out, "");
            out.push_str(if *b { "true," } else { "false," });
        }
        Some(Value::State { raw, name }) => {
            field_key(out, "");
            let _ = write!(out, "{raw}i,");
            if let Some(name) = name {
                field_key(out, "_name");
                string_into(out, name);
                out.push(',');
            }
        }
        Some(Value::Text(text)) => {
            field_key(out, "");
            string_into(out, text);
            out.push(',');
        }
        None => {}
    }
    field_key(out, "_quality");
    let _ = writeln!(out, "{}i {ts}", quality_code(reading.quality()));
    Ok(())
}

/// Refuses what no escaping can carry: backslashes and control characters.
fn check_identifier(what: &'static str, text: &str) -> Result<(), LineError> {
    // ASCII letters, digits, `_`, `-`, `.` and spaces need no look at each character's
    // class (the usual point id); anything else takes the full check.
    if text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b' '))
    {
        return Ok(());
    }
    if text.chars().any(|c| c == '\\' || c.is_control()) {
        return Err(LineError::Unrepresentable {
            what,
            text: text.to_owned(),
        });
    }
    Ok(())
}

fn escape_into(out: &mut String, text: &str, special: &[char]) {
    if !text.contains(special) {
        // The usual case (`supply_temp`): one copy, not a push per character.
        out.push_str(text);
        return;
    }
    for c in text.chars() {
        if special.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
}

/// A quoted string field value: `"` and `\` escaped, line breaks as spaces.
fn string_into(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BadReason, PointId};
    use chrono::{DateTime, Utc};
    use std::sync::Arc;

    fn key() -> SeriesKey {
        SeriesKey::new(
            "ups",
            &[
                ("site", "dc", false),
                ("room", "ups room", false),
                ("rack", "", true),
                ("device", "ups-1", false),
            ],
        )
        .unwrap()
    }

    fn at() -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::nanoseconds(1_700_000_000_123_456_789)
    }

    #[test]
    fn lines_by_value_kind() {
        let id = PointId::new("dc", "ups-1", "load_pct");
        let mut out = String::new();
        encode(
            &key(),
            &Reading::good(id.clone(), Value::Number(41.0), at()),
            &mut out,
        )
        .unwrap();
        encode(
            &key(),
            &Reading::good(
                id.clone(),
                Value::State {
                    raw: 3,
                    name: Some(Arc::from("on \"battery\"")),
                },
                at(),
            ),
            &mut out,
        )
        .unwrap();
        encode(
            &key(),
            &Reading::bad(id.clone(), BadReason::Timeout, at()),
            &mut out,
        )
        .unwrap();
        encode(
            &key(),
            &Reading::good(id, Value::Bool(true), at()),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            out,
            "ups,site=dc,room=ups\\ room,device=ups-1 load_pct=41,load_pct_quality=0i 1700000000123456789\n\
             ups,site=dc,room=ups\\ room,device=ups-1 load_pct=3i,load_pct_name=\"on \\\"battery\\\"\",load_pct_quality=0i 1700000000123456789\n\
             ups,site=dc,room=ups\\ room,device=ups-1 load_pct_quality=1i 1700000000123456789\n\
             ups,site=dc,room=ups\\ room,device=ups-1 load_pct=true,load_pct_quality=0i 1700000000123456789\n"
        );
    }

    #[test]
    fn unrepresentable_identifiers_are_refused() {
        assert!(SeriesKey::new("ups", &[("site", "a\\", false)]).is_err());
        assert!(SeriesKey::new("ups", &[("site", "a\nb", false)]).is_err());
        assert_eq!(
            SeriesKey::new("ups", &[("site", "", false)]),
            Err(LineError::EmptyTag("site".into()))
        );
        let mut out = String::from("x");
        let id = PointId::new("dc", "ups-1", "bad\tname");
        assert!(
            encode(
                &key(),
                &Reading::good(id, Value::Bool(true), at()),
                &mut out
            )
            .is_err()
        );
        assert_eq!(out, "x");
    }
}
