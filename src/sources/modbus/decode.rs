//! The Modbus register wire format: one point's registers or bits -> a good value or a bad reason.
//!
//! Pure and total: every input (any number of words, any values, any point) gives a
//! `Result`, never a panic. Steps, as `docs/configuration.md` defines them:
//!
//! 1. the slice must hold exactly the point's width, else [`BadReason::Decode`];
//! 2. the registers are assembled into the raw unsigned value by the point's order
//!    (`ABCD` big endian, `CDAB` word swap, `BADC` byte swap, `DCBA` little endian;
//!    on one register `CDAB` reads as `ABCD` and `DCBA` as `BADC`);
//! 3. sentinels are compared with that raw unsigned value, before sign, scale and
//!    offset (for a `bit` point: the raw field, e.g. a DSE nibble);
//! 4. the raw value is read as the type (two's complement, IEEE 754); a NaN or an
//!    infinity is [`BadReason::NotFinite`];
//! 5. points with enum names give [`Value::State`] with the raw integer (not scaled);
//!    a one-bit field without names gives [`Value::Bool`];
//! 6. everything else is `raw * scale + offset`, checked against
//!    `valid_min..=valid_max` ([`BadReason::OutOfRange`] outside).
//!
//! Strings are two characters per register (`ABCD`/`CDAB`: high byte first;
//! `BADC`/`DCBA`: low byte first), trailing NUL and spaces trimmed, bytes that are not
//! UTF-8 replaced by U+FFFD.

use std::sync::Arc;

use crate::config::model::{DataType, ModbusPoint, WordOrder};
use crate::model::{BadReason, Value};

/// Decodes a point held in registers (every type but `bool`) from exactly its words.
pub fn decode(point: &ModbusPoint, words: &[u16]) -> Result<Value, BadReason> {
    let ty = point.data_type;
    if ty == DataType::Bool {
        return Err(BadReason::Decode(
            "a bool point is a coil or discrete input, not a register".to_string(),
        ));
    }
    let width = ty.width() as usize;
    if words.len() != width {
        return Err(BadReason::Decode(format!(
            "type {} needs {width} register(s), got {}",
            ty.as_str(),
            words.len()
        )));
    }
    match ty {
        DataType::String { .. } => Ok(Value::Text(text(words, point.order))),
        DataType::Bit { bit, count } => {
            let Some(raw) = bit_field(raw_unsigned(words, point.order), bit, count) else {
                return Err(BadReason::Decode(format!(
                    "bit {bit} with bit_count {count} leaves the register"
                )));
            };
            check_sentinels(point, u64::from(raw))?;
            let raw = i64::from(raw);
            if !point.enum_names.is_empty() {
                Ok(state(point, raw))
            } else if count == 1 {
                Ok(Value::Bool(raw != 0))
            } else {
                engineering(point, raw as f64)
            }
        }
        _ => {
            let raw = raw_unsigned(words, point.order);
            check_sentinels(point, raw)?;
            let number = match ty {
                DataType::F32 => f64::from(f32::from_bits(raw as u32)),
                DataType::F64 => f64::from_bits(raw),
                DataType::U16 | DataType::U32 | DataType::U64 if point.enum_names.is_empty() => {
                    raw as f64
                }
                _ => {
                    let Some(int) = integer(ty, raw) else {
                        return Err(BadReason::Decode(format!(
                            "raw value {raw} does not fit an enum key"
                        )));
                    };
                    if !point.enum_names.is_empty() {
                        return Ok(state(point, int));
                    }
                    int as f64
                }
            };
            if !number.is_finite() {
                return Err(BadReason::NotFinite);
            }
            engineering(point, number)
        }
    }
}

/// Decodes a `bool` point (one coil or discrete input) from exactly one bit.
pub fn decode_bits(point: &ModbusPoint, bits: &[bool]) -> Result<Value, BadReason> {
    if point.data_type != DataType::Bool {
        return Err(BadReason::Decode(format!(
            "type {} is read from registers, not from a coil or discrete input",
            point.data_type.as_str()
        )));
    }
    match bits {
        [bit] => Ok(Value::Bool(*bit)),
        _ => Err(BadReason::Decode(format!(
            "a bool point needs 1 bit, got {}",
            bits.len()
        ))),
    }
}

/// Decodes a register point found at `offset` in a whole response (the words of one
/// read request). A response too short for the point is [`BadReason::Decode`].
pub fn decode_in(point: &ModbusPoint, response: &[u16], offset: u16) -> Result<Value, BadReason> {
    decode(point, window(response, offset, point.data_type.width()))
}

/// Decodes a `bool` point found at `offset` in a whole bit response.
pub fn decode_bits_in(
    point: &ModbusPoint,
    response: &[bool],
    offset: u16,
) -> Result<Value, BadReason> {
    decode_bits(point, window(response, offset, point.data_type.width()))
}

/// `response[offset..offset + width]`, clipped to what the response holds.
fn window<T>(response: &[T], offset: u16, width: u32) -> &[T] {
    let rest = response.get(usize::from(offset)..).unwrap_or(&[]);
    rest.get(..width as usize).unwrap_or(rest)
}

/// The raw unsigned value of up to four registers, assembled by `order`. Only the low
/// 64 bits are kept for longer slices (callers pass at most four).
fn raw_unsigned(words: &[u16], order: WordOrder) -> u64 {
    let push = |acc: u64, w: u16| (acc << 16) | u64::from(w);
    match order {
        WordOrder::Abcd => words.iter().fold(0, |acc, w| push(acc, *w)),
        WordOrder::Cdab => words.iter().rev().fold(0, |acc, w| push(acc, *w)),
        WordOrder::Badc => words.iter().fold(0, |acc, w| push(acc, w.swap_bytes())),
        WordOrder::Dcba => words
            .iter()
            .rev()
            .fold(0, |acc, w| push(acc, w.swap_bytes())),
    }
}

/// `count` bits of `word` starting at bit `bit`; `None` when the field leaves the register.
fn bit_field(word: u64, bit: u8, count: u8) -> Option<u16> {
    if count == 0 || u32::from(bit) + u32::from(count) > 16 {
        return None;
    }
    let mask = (1u64 << count) - 1;
    Some(((word >> bit) & mask) as u16)
}

/// The raw value of an integer type as a signed 64-bit integer (two's complement for
/// the signed types); `None` for a `u64` above `i64::MAX`.
fn integer(ty: DataType, raw: u64) -> Option<i64> {
    match ty {
        DataType::I16 => Some(i64::from(raw as u16 as i16)),
        DataType::I32 => Some(i64::from(raw as u32 as i32)),
        DataType::I64 => Some(raw as i64),
        _ => i64::try_from(raw).ok(),
    }
}

/// Bad when `raw` is one of the point's sentinels.
fn check_sentinels(point: &ModbusPoint, raw: u64) -> Result<(), BadReason> {
    match point.sentinels.iter().find(|s| s.raw == raw) {
        Some(s) => Err(BadReason::Sentinel {
            raw,
            reason: Arc::from(s.reason.as_str()),
        }),
        None => Ok(()),
    }
}

/// An enum point's state: the raw integer and its name.
fn state(point: &ModbusPoint, raw: i64) -> Value {
    Value::State {
        raw,
        name: point.enum_names.get(&raw).map(|n| Arc::from(n.as_str())),
    }
}

/// `raw * scale + offset`, finite and within the plausibility range.
fn engineering(point: &ModbusPoint, raw: f64) -> Result<Value, BadReason> {
    let value = raw * point.scale + point.offset;
    if !value.is_finite() {
        return Err(BadReason::NotFinite);
    }
    let below = point.valid_min.is_some_and(|min| value < min);
    let above = point.valid_max.is_some_and(|max| value > max);
    if below || above {
        return Err(BadReason::OutOfRange { value });
    }
    Ok(Value::Number(value))
}

/// Two characters per register, trailing NUL and spaces trimmed.
fn text(words: &[u16], order: WordOrder) -> Arc<str> {
    let low_first = matches!(order, WordOrder::Badc | WordOrder::Dcba);
    let mut bytes: Vec<u8> = words
        .iter()
        .flat_map(|w| {
            let [hi, lo] = w.to_be_bytes();
            if low_first { [lo, hi] } else { [hi, lo] }
        })
        .collect();
    while bytes.last().is_some_and(|b| *b == 0 || *b == b' ') {
        bytes.pop();
    }
    Arc::from(String::from_utf8_lossy(&bytes).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::{PollClass, RegisterKind, Role, Sentinel, Unit};
    use std::collections::BTreeMap;

    fn point(data_type: DataType, order: WordOrder) -> ModbusPoint {
        ModbusPoint {
            name: "p".to_string(),
            role: Role::UpsLoadPct,
            register: if data_type == DataType::Bool {
                RegisterKind::Coil
            } else {
                RegisterKind::Holding
            },
            address: 0,
            data_type,
            order,
            scale: 1.0,
            offset: 0.0,
            unit: Unit::parse("").expect("the empty unit is in the list"),
            class: PollClass::Normal,
            enum_names: BTreeMap::new(),
            sentinels: Vec::new(),
            valid_min: None,
            valid_max: None,
        }
    }

    #[test]
    fn raw_assembly_follows_the_order_table() {
        let w = [0x1234, 0x5678];
        assert_eq!(raw_unsigned(&w, WordOrder::Abcd), 0x1234_5678);
        assert_eq!(raw_unsigned(&w, WordOrder::Cdab), 0x5678_1234);
        assert_eq!(raw_unsigned(&w, WordOrder::Badc), 0x3412_7856);
        assert_eq!(raw_unsigned(&w, WordOrder::Dcba), 0x7856_3412);
    }

    #[test]
    fn bit_fields_are_checked_not_shifted_out() {
        assert_eq!(bit_field(0xF0F0, 4, 4), Some(0xF));
        assert_eq!(bit_field(0x8000, 15, 1), Some(1));
        assert_eq!(bit_field(0xFFFF, 0, 16), Some(0xFFFF));
        assert_eq!(bit_field(0xFFFF, 15, 2), None);
        assert_eq!(bit_field(0xFFFF, 3, 0), None);
        let mut p = point(
            DataType::Bit {
                bit: 200,
                count: 200,
            },
            WordOrder::Abcd,
        );
        assert!(matches!(decode(&p, &[1]), Err(BadReason::Decode(_))));
        p.data_type = DataType::Bit { bit: 0, count: 1 };
        assert_eq!(decode(&p, &[1]), Ok(Value::Bool(true)));
    }

    #[test]
    fn u64_above_i64_max_is_a_number() {
        let p = point(DataType::U64, WordOrder::Abcd);
        assert_eq!(
            decode(&p, &[0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF]),
            Ok(Value::Number(u64::MAX as f64))
        );
    }

    #[test]
    fn sentinel_wins_over_range_and_enum() {
        let mut p = point(DataType::I16, WordOrder::Abcd);
        p.sentinels = vec![Sentinel {
            raw: 0x7FFF,
            reason: "sensor not fitted".to_string(),
        }];
        p.enum_names.insert(32767, "max".to_string());
        p.valid_max = Some(10.0);
        assert_eq!(
            decode(&p, &[0x7FFF]),
            Err(BadReason::Sentinel {
                raw: 0x7FFF,
                reason: Arc::from("sensor not fitted")
            })
        );
    }
}
