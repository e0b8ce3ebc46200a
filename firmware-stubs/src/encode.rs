//! The stubs' own encoder: engineering value -> Modbus register words or coil bits.
//!
//! This is deliberately independent of the daemon's decoder (the crate does not depend
//! on `dcguard`), so a word-order or scaling bug cannot hide on both sides of the wire.
//! It follows `docs/configuration.md`:
//!
//! * `raw = round((value - offset) / scale)` for integer types (floats are not rounded);
//! * types `u16 i16 u32 i32 u64 i64 f32 f64 bit string bool`;
//! * orders `ABCD` (big endian), `CDAB` (word order reversed), `BADC` (bytes swapped in
//!   each register), `DCBA` (fully reversed);
//! * `SimValue::Raw` is written as it is (sentinels), `SimValue::Text` on an enum point
//!   writes the enum's key.
//!
//! Values that do not fit are saturated and flagged (`Encoded::saturated`); input that
//! cannot be encoded at all is an [`EncodeError`]. Nothing here panics.

use std::collections::BTreeMap;

use crate::spec::PointSpec;
use crate::world::SimValue;

/// The four Modbus tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RegisterKind {
    Coil,
    Discrete,
    Holding,
    Input,
}

impl RegisterKind {
    pub fn parse(text: &str) -> Option<RegisterKind> {
        match text {
            "coil" => Some(RegisterKind::Coil),
            "discrete" => Some(RegisterKind::Discrete),
            "holding" => Some(RegisterKind::Holding),
            "input" => Some(RegisterKind::Input),
            _ => None,
        }
    }

    /// Coils and discrete inputs hold bits; holding and input registers hold words.
    pub fn is_bit_table(self) -> bool {
        matches!(self, RegisterKind::Coil | RegisterKind::Discrete)
    }
}

/// A point's data type with the parameters its width depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    /// `count` bits starting at bit `bit` (0 = lowest) of one register.
    Bit {
        bit: u8,
        count: u8,
    },
    /// `registers` registers, two characters each.
    String {
        registers: u16,
    },
    /// One coil or discrete input.
    Bool,
}

impl DataType {
    /// Width in registers (or in bits, for `Bool`).
    pub fn width(self) -> u16 {
        match self {
            DataType::U16 | DataType::I16 | DataType::Bit { .. } | DataType::Bool => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
            DataType::String { registers } => registers,
        }
    }

    /// The type name as written in profiles.
    pub fn name(self) -> &'static str {
        match self {
            DataType::U16 => "u16",
            DataType::I16 => "i16",
            DataType::U32 => "u32",
            DataType::I32 => "i32",
            DataType::U64 => "u64",
            DataType::I64 => "i64",
            DataType::F32 => "f32",
            DataType::F64 => "f64",
            DataType::Bit { .. } => "bit",
            DataType::String { .. } => "string",
            DataType::Bool => "bool",
        }
    }
}

/// Word and byte order of multi-byte values (see the table in `docs/configuration.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Order {
    #[default]
    Abcd,
    Cdab,
    Badc,
    Dcba,
}

impl Order {
    pub fn parse(text: &str) -> Option<Order> {
        match text {
            "ABCD" => Some(Order::Abcd),
            "CDAB" => Some(Order::Cdab),
            "BADC" => Some(Order::Badc),
            "DCBA" => Some(Order::Dcba),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Order::Abcd => "ABCD",
            Order::Cdab => "CDAB",
            Order::Badc => "BADC",
            Order::Dcba => "DCBA",
        }
    }

    /// Lays out `bytes` (the value, most significant byte first, even length) as
    /// transmitted registers.
    pub fn to_words(self, bytes: &[u8]) -> Vec<u16> {
        let ordered: Vec<u8> = match self {
            Order::Abcd => bytes.to_vec(),
            Order::Cdab => bytes.chunks(2).rev().flatten().copied().collect(),
            Order::Badc => bytes
                .chunks(2)
                .flat_map(|pair| pair.iter().rev())
                .copied()
                .collect(),
            Order::Dcba => bytes.iter().rev().copied().collect(),
        };
        ordered
            .chunks(2)
            .map(|pair| {
                let hi = pair.first().copied().unwrap_or(0);
                let lo = pair.get(1).copied().unwrap_or(0);
                u16::from_be_bytes([hi, lo])
            })
            .collect()
    }
}

/// Everything needed to place one point in a register table.
#[derive(Debug, Clone, PartialEq)]
pub struct PointLayout {
    pub kind: RegisterKind,
    pub address: u16,
    pub ty: DataType,
    pub order: Order,
    pub scale: f64,
    pub offset: f64,
    /// Enum value name -> raw key.
    pub enum_keys: BTreeMap<String, u64>,
}

impl PointLayout {
    /// Reads the Modbus placement of a profile point. Lenient like the rest of the stubs'
    /// config reading, but refuses what it cannot place (no register, unknown type, a
    /// width that does not fit in the 16-bit address space).
    pub fn from_spec(point: &PointSpec) -> Result<PointLayout, LayoutError> {
        let bad = |what: String| LayoutError {
            point: point.name.clone(),
            problem: what,
        };
        let register = point
            .register
            .as_deref()
            .ok_or_else(|| bad("no `register`".into()))?;
        let kind = RegisterKind::parse(register)
            .ok_or_else(|| bad(format!("unknown register kind {register:?}")))?;
        let address = point.address.ok_or_else(|| bad("no `address`".into()))?;
        let ty = match point.ty.as_str() {
            "u16" => DataType::U16,
            "i16" => DataType::I16,
            "u32" => DataType::U32,
            "i32" => DataType::I32,
            "u64" => DataType::U64,
            "i64" => DataType::I64,
            "f32" => DataType::F32,
            "f64" => DataType::F64,
            "bool" => DataType::Bool,
            "bit" => {
                let bit = point.bit.unwrap_or(0);
                let count = point.bit_count.unwrap_or(1);
                if bit > 15 || count == 0 || u16::from(bit) + u16::from(count) > 16 {
                    return Err(bad(format!(
                        "bit {bit} with bit_count {count} leaves the register"
                    )));
                }
                DataType::Bit { bit, count }
            }
            "string" => DataType::String {
                registers: point
                    .length
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad("string without `length`".into()))?,
            },
            other => return Err(bad(format!("unknown type {other:?}"))),
        };
        if (ty == DataType::Bool) != kind.is_bit_table() {
            return Err(bad(format!(
                "type {} does not fit register kind {register}",
                ty.name()
            )));
        }
        if u32::from(address) + u32::from(ty.width()) > 65536 {
            return Err(bad(format!(
                "address {address} + width {} passes 65535",
                ty.width()
            )));
        }
        let order = match point.order.as_deref() {
            None => Order::Abcd,
            Some(text) => {
                Order::parse(text).ok_or_else(|| bad(format!("unknown order {text:?}")))?
            }
        };
        let scale = point.scale.unwrap_or(1.0);
        if scale == 0.0 || !scale.is_finite() {
            return Err(bad(format!("scale {scale} cannot be inverted")));
        }
        let offset = point.offset.unwrap_or(0.0);
        let enum_keys = point
            .enum_names
            .iter()
            .filter_map(|(key, name)| parse_key(key).map(|raw| (name.clone(), raw)))
            .collect();
        Ok(PointLayout {
            kind,
            address,
            ty,
            order,
            scale,
            offset,
            enum_keys,
        })
    }

    /// The registers (or bits) the point occupies: `address..address + width`.
    pub fn span(&self) -> std::ops::Range<u32> {
        let start = u32::from(self.address);
        start..start + u32::from(self.ty.width())
    }
}

/// Enum keys are decimal (`"5"`) or hexadecimal (`"0x10"`).
fn parse_key(key: &str) -> Option<u64> {
    let key = key.trim();
    match key.strip_prefix("0x").or_else(|| key.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => key.parse().ok(),
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("point {point}: {problem}")]
pub struct LayoutError {
    pub point: String,
    pub problem: String,
}

/// What cannot be encoded at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeError {
    #[error("{value:?} is not a value of a {ty} point")]
    WrongKind { ty: &'static str, value: SimValue },
    #[error("{name:?} is not one of the point's enum names")]
    UnknownEnumName { name: String },
    #[error("NaN cannot be written to an integer point")]
    NotANumber,
}

/// The encoded form of one point.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub data: EncodedData,
    /// The value did not fit and was clamped (or a string was truncated).
    pub saturated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodedData {
    /// Whole registers, starting at the point's address.
    Words(Vec<u16>),
    /// A bit field: `register = (register & !mask) | bits`.
    Bits { mask: u16, bits: u16 },
    /// One coil or discrete input.
    Bool(bool),
}

impl EncodedData {
    /// Merges this point into a word image whose index 0 is register `base`.
    /// Words outside the image are ignored.
    pub fn merge_into_words(&self, image: &mut [u16], base: u32, address: u16) {
        let len = image.len();
        let slot = |offset: usize| -> Option<usize> {
            let position = (u32::from(address) + offset as u32).checked_sub(base)? as usize;
            (position < len).then_some(position)
        };
        match self {
            EncodedData::Words(words) => {
                for (i, word) in words.iter().enumerate() {
                    if let Some(p) = slot(i) {
                        image[p] = *word;
                    }
                }
            }
            EncodedData::Bits { mask, bits } => {
                if let Some(p) = slot(0) {
                    image[p] = (image[p] & !mask) | (bits & mask);
                }
            }
            EncodedData::Bool(_) => {}
        }
    }
}

/// Encodes one engineering value for a point.
pub fn encode(layout: &PointLayout, value: &SimValue) -> Result<Encoded, EncodeError> {
    let ty = layout.ty;
    match ty {
        DataType::Bool => {
            let bit = match value {
                SimValue::Bool(b) => *b,
                SimValue::Number(n) => *n != 0.0 && !n.is_nan(),
                SimValue::Raw(raw) => *raw != 0,
                SimValue::Text(name) => match layout.enum_keys.get(name) {
                    Some(raw) => *raw != 0,
                    None => match name.as_str() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(EncodeError::UnknownEnumName { name: name.clone() }),
                    },
                },
            };
            Ok(Encoded {
                data: EncodedData::Bool(bit),
                saturated: false,
            })
        }
        DataType::String { registers } => {
            let SimValue::Text(text) = value else {
                return Err(EncodeError::WrongKind {
                    ty: ty.name(),
                    value: value.clone(),
                });
            };
            let capacity = usize::from(registers) * 2;
            let mut bytes = text.as_bytes().to_vec();
            let saturated = bytes.len() > capacity;
            bytes.resize(capacity, 0);
            // Strings have no word order, only the byte order inside each register.
            let order = match layout.order {
                Order::Badc | Order::Dcba => Order::Badc,
                Order::Abcd | Order::Cdab => Order::Abcd,
            };
            Ok(Encoded {
                data: EncodedData::Words(order.to_words(&bytes)),
                saturated,
            })
        }
        DataType::Bit { bit, count } => {
            let max = (1u64 << count) - 1;
            let (raw, mut saturated) = integer_raw(layout, value, 0, max as i128)?;
            let raw = if raw > max as i128 {
                saturated = true;
                max
            } else {
                raw as u64
            };
            let mut mask = (max as u16) << bit;
            let mut bits = (raw as u16) << bit;
            // Bits count in the register's value after its order: with a byte-swapped
            // order the field sits in the other byte of the register as transmitted.
            if matches!(layout.order, Order::Badc | Order::Dcba) {
                mask = mask.swap_bytes();
                bits = bits.swap_bytes();
            }
            Ok(Encoded {
                data: EncodedData::Bits { mask, bits },
                saturated,
            })
        }
        DataType::F32 | DataType::F64 => {
            let (bytes, saturated) = match value {
                SimValue::Raw(raw) => (raw_bytes(*raw, ty.width()), *raw > width_max(ty.width())),
                _ => {
                    let engineering = number_of(layout, value)?;
                    let scaled = match value {
                        // An enum key is already raw.
                        SimValue::Text(_) => engineering,
                        _ => (engineering - layout.offset) / layout.scale,
                    };
                    if ty == DataType::F32 {
                        let narrow = scaled as f32;
                        let saturated = scaled.is_finite() && !narrow.is_finite();
                        let narrow = if saturated {
                            narrow.clamp(f32::MIN, f32::MAX)
                        } else {
                            narrow
                        };
                        (narrow.to_be_bytes().to_vec(), saturated)
                    } else {
                        (scaled.to_be_bytes().to_vec(), false)
                    }
                }
            };
            Ok(Encoded {
                data: EncodedData::Words(layout.order.to_words(&bytes)),
                saturated,
            })
        }
        DataType::U16
        | DataType::I16
        | DataType::U32
        | DataType::I32
        | DataType::U64
        | DataType::I64 => {
            let (bytes, saturated) = match value {
                SimValue::Raw(raw) => (raw_bytes(*raw, ty.width()), *raw > width_max(ty.width())),
                _ => {
                    let (min, max): (i128, i128) = match ty {
                        DataType::U16 => (0, u16::MAX.into()),
                        DataType::I16 => (i16::MIN.into(), i16::MAX.into()),
                        DataType::U32 => (0, u32::MAX.into()),
                        DataType::I32 => (i32::MIN.into(), i32::MAX.into()),
                        DataType::U64 => (0, u64::MAX.into()),
                        _ => (i64::MIN.into(), i64::MAX.into()),
                    };
                    let (raw, saturated) = integer_raw(layout, value, min, max)?;
                    let bytes = match ty {
                        DataType::U16 => (raw as u16).to_be_bytes().to_vec(),
                        DataType::I16 => (raw as i16).to_be_bytes().to_vec(),
                        DataType::U32 => (raw as u32).to_be_bytes().to_vec(),
                        DataType::I32 => (raw as i32).to_be_bytes().to_vec(),
                        DataType::U64 => (raw as u64).to_be_bytes().to_vec(),
                        _ => (raw as i64).to_be_bytes().to_vec(),
                    };
                    (bytes, saturated)
                }
            };
            // One-register types have no word order: CDAB reads as ABCD, DCBA as BADC.
            Ok(Encoded {
                data: EncodedData::Words(layout.order.to_words(&bytes)),
                saturated,
            })
        }
    }
}

/// The largest raw value that fits in `width` registers.
fn width_max(width: u16) -> u64 {
    if width >= 4 {
        u64::MAX
    } else {
        (1u64 << (16 * u32::from(width))) - 1
    }
}

/// The low `width` registers' worth of `raw`, most significant byte first.
fn raw_bytes(raw: u64, width: u16) -> Vec<u8> {
    let all = raw.to_be_bytes();
    let keep = (usize::from(width) * 2).min(all.len());
    all[all.len() - keep..].to_vec()
}

/// The engineering number of a value (an enum name gives its raw key).
fn number_of(layout: &PointLayout, value: &SimValue) -> Result<f64, EncodeError> {
    match value {
        SimValue::Number(n) => Ok(*n),
        SimValue::Bool(b) => Ok(if *b { 1.0 } else { 0.0 }),
        SimValue::Raw(raw) => Ok(*raw as f64),
        SimValue::Text(name) => layout
            .enum_keys
            .get(name)
            .map(|raw| *raw as f64)
            .ok_or_else(|| EncodeError::UnknownEnumName { name: name.clone() }),
    }
}

/// The rounded raw integer of a value, clamped to `min..=max`; `true` when clamped.
/// `Raw` and enum names are raw already; `Bool` is 0/1 raw; numbers are scaled.
fn integer_raw(
    layout: &PointLayout,
    value: &SimValue,
    min: i128,
    max: i128,
) -> Result<(i128, bool), EncodeError> {
    let raw: f64 = match value {
        SimValue::Number(n) => {
            if n.is_nan() {
                return Err(EncodeError::NotANumber);
            }
            ((n - layout.offset) / layout.scale).round()
        }
        SimValue::Raw(raw) => return Ok(clamp(i128::from(*raw), min, max)),
        SimValue::Bool(b) => return Ok(clamp(i128::from(*b), min, max)),
        SimValue::Text(_) => number_of(layout, value)?,
    };
    // f64 -> i128 saturates at the i128 bounds (and maps infinities there).
    Ok(clamp(raw as i128, min, max))
}

fn clamp(raw: i128, min: i128, max: i128) -> (i128, bool) {
    if raw < min {
        (min, true)
    } else if raw > max {
        (max, true)
    } else {
        (raw, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(ty: DataType, order: Order) -> PointLayout {
        PointLayout {
            kind: if ty == DataType::Bool {
                RegisterKind::Coil
            } else {
                RegisterKind::Holding
            },
            address: 0,
            ty,
            order,
            scale: 1.0,
            offset: 0.0,
            enum_keys: BTreeMap::new(),
        }
    }

    fn words(layout: &PointLayout, value: SimValue) -> Vec<u16> {
        match encode(layout, &value).unwrap().data {
            EncodedData::Words(w) => w,
            other => panic!("expected words, got {other:?}"),
        }
    }

    fn num(v: f64) -> SimValue {
        SimValue::Number(v)
    }

    const ORDERS: [Order; 4] = [Order::Abcd, Order::Cdab, Order::Badc, Order::Dcba];

    /// (type, value, expected words for ABCD, CDAB, BADC, DCBA), all computed by hand.
    #[test]
    fn every_type_in_every_order() {
        let cases: Vec<(DataType, SimValue, [Vec<u16>; 4])> = vec![
            (
                DataType::U16,
                num(4660.0),
                [vec![0x1234], vec![0x1234], vec![0x3412], vec![0x3412]],
            ),
            (
                DataType::I16,
                num(-2.0),
                [vec![0xFFFE], vec![0xFFFE], vec![0xFEFF], vec![0xFEFF]],
            ),
            (
                DataType::U32,
                num(305_419_896.0), // 0x12345678
                [
                    vec![0x1234, 0x5678],
                    vec![0x5678, 0x1234],
                    vec![0x3412, 0x7856],
                    vec![0x7856, 0x3412],
                ],
            ),
            (
                DataType::I32,
                num(-2.0), // 0xFFFFFFFE
                [
                    vec![0xFFFF, 0xFFFE],
                    vec![0xFFFE, 0xFFFF],
                    vec![0xFFFF, 0xFEFF],
                    vec![0xFEFF, 0xFFFF],
                ],
            ),
            (
                DataType::U64,
                num(5_124_095_576_030_430.0), // 0x00123456789ABCDE, exact in f64
                [
                    vec![0x0012, 0x3456, 0x789A, 0xBCDE],
                    vec![0xBCDE, 0x789A, 0x3456, 0x0012],
                    vec![0x1200, 0x5634, 0x9A78, 0xDEBC],
                    vec![0xDEBC, 0x9A78, 0x5634, 0x1200],
                ],
            ),
            (
                DataType::I64,
                num(-2.0), // 0xFFFFFFFFFFFFFFFE
                [
                    vec![0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE],
                    vec![0xFFFE, 0xFFFF, 0xFFFF, 0xFFFF],
                    vec![0xFFFF, 0xFFFF, 0xFFFF, 0xFEFF],
                    vec![0xFEFF, 0xFFFF, 0xFFFF, 0xFFFF],
                ],
            ),
            (
                DataType::F32,
                num(1.5), // 0x3FC00000
                [
                    vec![0x3FC0, 0x0000],
                    vec![0x0000, 0x3FC0],
                    vec![0xC03F, 0x0000],
                    vec![0x0000, 0xC03F],
                ],
            ),
            (
                DataType::F64,
                num(-2.5), // 0xC004000000000000
                [
                    vec![0xC004, 0x0000, 0x0000, 0x0000],
                    vec![0x0000, 0x0000, 0x0000, 0xC004],
                    vec![0x04C0, 0x0000, 0x0000, 0x0000],
                    vec![0x0000, 0x0000, 0x0000, 0x04C0],
                ],
            ),
        ];
        for (ty, value, expected) in cases {
            for (order, want) in ORDERS.iter().zip(expected) {
                assert_eq!(
                    words(&layout(ty, *order), value.clone()),
                    want,
                    "{} {}",
                    ty.name(),
                    order.name()
                );
            }
        }
    }

    #[test]
    fn scale_and_offset_round_to_the_nearest_raw() {
        let mut l = layout(DataType::U16, Order::Abcd);
        l.scale = 0.1;
        assert_eq!(words(&l, num(230.4)), vec![2304]);
        assert_eq!(words(&l, num(0.06)), vec![1], "0.6 rounds up");
        l.offset = -40.0;
        l.scale = 0.5;
        // raw = (21.5 + 40) / 0.5 = 123
        assert_eq!(words(&l, num(21.5)), vec![123]);
        let mut f = layout(DataType::F32, Order::Abcd);
        f.scale = 0.5;
        f.offset = 1.0;
        // (4.0 - 1.0) / 0.5 = 6.0 = 0x40C00000, not rounded for floats
        assert_eq!(words(&f, num(4.0)), vec![0x40C0, 0x0000]);
        f.scale = 4.0;
        // (3.0 - 1.0) / 4 = 0.5 = 0x3F000000
        assert_eq!(words(&f, num(3.0)), vec![0x3F00, 0x0000]);
    }

    #[test]
    fn negative_numbers_with_scale() {
        let mut l = layout(DataType::I16, Order::Abcd);
        l.scale = 0.1;
        // -12.3 / 0.1 = -123 = 0xFF85
        assert_eq!(words(&l, num(-12.3)), vec![0xFF85]);
        let mut l = layout(DataType::I32, Order::Cdab);
        l.scale = 0.01;
        // -1.5 / 0.01 = -150 = 0xFFFFFF6A, words swapped
        assert_eq!(words(&l, num(-1.5)), vec![0xFF6A, 0xFFFF]);
    }

    #[test]
    fn out_of_range_values_saturate_and_say_so() {
        let l = layout(DataType::U16, Order::Abcd);
        let e = encode(&l, &num(70_000.0)).unwrap();
        assert_eq!(e.data, EncodedData::Words(vec![0xFFFF]));
        assert!(e.saturated);
        let e = encode(&l, &num(-1.0)).unwrap();
        assert_eq!(e.data, EncodedData::Words(vec![0x0000]));
        assert!(e.saturated);
        let e = encode(&layout(DataType::I16, Order::Abcd), &num(-40_000.0)).unwrap();
        assert_eq!(e.data, EncodedData::Words(vec![0x8000]));
        assert!(e.saturated);
        let e = encode(&layout(DataType::U64, Order::Abcd), &num(f64::INFINITY)).unwrap();
        assert_eq!(e.data, EncodedData::Words(vec![0xFFFF; 4]));
        assert!(e.saturated);
        let e = encode(&layout(DataType::F32, Order::Abcd), &num(1e300)).unwrap();
        assert_eq!(e.data, EncodedData::Words(vec![0x7F7F, 0xFFFF]), "f32::MAX");
        assert!(e.saturated);
        let e = encode(&layout(DataType::U32, Order::Abcd), &num(12.0)).unwrap();
        assert!(!e.saturated);
        assert_eq!(
            encode(&layout(DataType::U16, Order::Abcd), &num(f64::NAN)),
            Err(EncodeError::NotANumber)
        );
    }

    #[test]
    fn raw_values_bypass_scale_and_sign() {
        let mut l = layout(DataType::I16, Order::Abcd);
        l.scale = 0.1;
        l.offset = 5.0;
        assert_eq!(words(&l, SimValue::Raw(0xFFFC)), vec![0xFFFC]);
        let l = layout(DataType::U32, Order::Cdab);
        assert_eq!(words(&l, SimValue::Raw(0xFFFF_FFFE)), vec![0xFFFE, 0xFFFF]);
        let l = layout(DataType::F32, Order::Abcd);
        assert_eq!(words(&l, SimValue::Raw(0x7FC0_0000)), vec![0x7FC0, 0x0000]);
        let l = layout(DataType::U64, Order::Dcba);
        assert_eq!(
            words(&l, SimValue::Raw(0x0123_4567_89AB_CDEF)),
            vec![0xEFCD, 0xAB89, 0x6745, 0x2301]
        );
        // Too wide for the point: the low registers are kept, flagged.
        let e = encode(
            &layout(DataType::U16, Order::Abcd),
            &SimValue::Raw(0x1_0002),
        )
        .unwrap();
        assert_eq!(e.data, EncodedData::Words(vec![0x0002]));
        assert!(e.saturated);
    }

    #[test]
    fn bit_fields_are_placed_and_merged() {
        let nibble = layout(DataType::Bit { bit: 4, count: 4 }, Order::Abcd);
        let e = encode(&nibble, &num(3.0)).unwrap();
        assert_eq!(
            e.data,
            EncodedData::Bits {
                mask: 0x00F0,
                bits: 0x0030
            }
        );
        let flag = layout(DataType::Bit { bit: 15, count: 1 }, Order::Abcd);
        let f = encode(&flag, &SimValue::Bool(true)).unwrap();
        assert_eq!(
            f.data,
            EncodedData::Bits {
                mask: 0x8000,
                bits: 0x8000
            }
        );
        let mut image = [0x0F0Fu16];
        e.data.merge_into_words(&mut image, 0, 0);
        f.data.merge_into_words(&mut image, 0, 0);
        assert_eq!(image, [0x8F3F]);
        // Values above the field saturate to all ones of the field.
        let e = encode(&nibble, &num(20.0)).unwrap();
        assert_eq!(
            e.data,
            EncodedData::Bits {
                mask: 0x00F0,
                bits: 0x00F0
            }
        );
        assert!(e.saturated);
        // BADC: bit 4 of the value is bit 12 of the register as transmitted.
        let swapped = layout(DataType::Bit { bit: 4, count: 4 }, Order::Badc);
        assert_eq!(
            encode(&swapped, &num(3.0)).unwrap().data,
            EncodedData::Bits {
                mask: 0xF000,
                bits: 0x3000
            }
        );
        let low = layout(DataType::Bit { bit: 0, count: 16 }, Order::Abcd);
        let e = encode(&low, &num(65535.0)).unwrap();
        assert_eq!(
            e.data,
            EncodedData::Bits {
                mask: 0xFFFF,
                bits: 0xFFFF
            }
        );
        assert!(!e.saturated);
    }

    #[test]
    fn strings_two_characters_per_register_nul_padded() {
        let l = layout(DataType::String { registers: 3 }, Order::Abcd);
        // "UPS" = 55 50 53, padded to 6 bytes
        assert_eq!(
            words(&l, SimValue::Text("UPS".into())),
            vec![0x5550, 0x5300, 0x0000]
        );
        let l = layout(DataType::String { registers: 3 }, Order::Badc);
        assert_eq!(
            words(&l, SimValue::Text("UPS".into())),
            vec![0x5055, 0x0053, 0x0000]
        );
        let l = layout(DataType::String { registers: 1 }, Order::Abcd);
        let e = encode(&l, &SimValue::Text("Galaxy".into())).unwrap();
        assert_eq!(e.data, EncodedData::Words(vec![0x4761]), "\"Ga\"");
        assert!(e.saturated);
        assert!(matches!(
            encode(&l, &num(1.0)),
            Err(EncodeError::WrongKind { ty: "string", .. })
        ));
    }

    #[test]
    fn enum_names_encode_their_key() {
        let mut l = layout(DataType::U16, Order::Abcd);
        l.scale = 0.1; // enum keys are raw: not scaled
        l.enum_keys = [
            ("normal".to_owned(), 3),
            ("battery".to_owned(), 5),
            ("hex".to_owned(), 0x10),
        ]
        .into_iter()
        .collect();
        assert_eq!(words(&l, SimValue::Text("battery".into())), vec![5]);
        assert_eq!(words(&l, SimValue::Text("hex".into())), vec![0x10]);
        assert_eq!(
            encode(&l, &SimValue::Text("flying".into())),
            Err(EncodeError::UnknownEnumName {
                name: "flying".into()
            })
        );
        let mut b = layout(DataType::Bit { bit: 8, count: 4 }, Order::Abcd);
        b.enum_keys = [("shutdown".to_owned(), 3)].into_iter().collect();
        let e = encode(&b, &SimValue::Text("shutdown".into())).unwrap();
        assert_eq!(
            e.data,
            EncodedData::Bits {
                mask: 0x0F00,
                bits: 0x0300
            }
        );
    }

    #[test]
    fn bools_from_bools_numbers_and_raw() {
        let l = layout(DataType::Bool, Order::Abcd);
        for (value, want) in [
            (SimValue::Bool(true), true),
            (SimValue::Bool(false), false),
            (num(1.0), true),
            (num(0.0), false),
            (SimValue::Raw(0), false),
            (SimValue::Raw(7), true),
        ] {
            assert_eq!(
                encode(&l, &value).unwrap().data,
                EncodedData::Bool(want),
                "{value:?}"
            );
        }
    }

    #[test]
    fn enum_keys_parse_decimal_and_hex() {
        assert_eq!(parse_key("5"), Some(5));
        assert_eq!(parse_key("0x1F"), Some(31));
        assert_eq!(parse_key("x"), None);
    }

    #[test]
    fn merge_clips_to_the_image() {
        let data = EncodedData::Words(vec![1, 2, 3, 4]);
        let mut image = [0u16; 2];
        data.merge_into_words(&mut image, 10, 9); // point at 9..13, image 10..12
        assert_eq!(image, [2, 3]);
        let mut image = [0u16; 2];
        data.merge_into_words(&mut image, 10, 11); // point at 11..15
        assert_eq!(image, [0, 1]);
    }
}
