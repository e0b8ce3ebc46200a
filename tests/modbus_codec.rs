//! The Modbus codec against independent peers: the stubs' encoder, arbitrary words, literal vectors, a planning oracle.
//!
//! * Round trips: `decode(stub_encode(x)) == x` for every type and order, where
//!   `stub_encode` is `firmware_stubs::encode::encode`, written separately from the
//!   daemon's decoder.
//! * Arbitrary words and arbitrary point shapes never panic.
//! * Literal vectors computed by hand (f32 1.5 in each order, DSE sentinels, ...).
//! * The request planner against an independent dynamic programme: on every shipped
//!   profile and on random profiles, the plan covers each point exactly once, stays
//!   within the limits and out of `never_read`, and has the minimum number of requests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dcguard::config::model::{
    DataType, ModbusPoint, ModbusProfile, PollClass, PollIntervals, ProfileTransport, ReadLimits,
    RegisterKind, RegisterRange, Role, Sentinel, Unit, WordOrder,
};
use dcguard::model::{BadReason, Value};
use dcguard::sources::modbus::decode::{decode, decode_bits, decode_bits_in, decode_in};
use dcguard::sources::modbus::plan::{Plan, plan, plan_classes};
use firmware_stubs::encode as stub;
use firmware_stubs::world::SimValue;
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------
// points and the stubs' encoder

fn point(data_type: DataType, order: WordOrder) -> ModbusPoint {
    ModbusPoint {
        name: "p".to_string(),
        role: Role::UpsLoadPct,
        register: if data_type == DataType::Bool {
            RegisterKind::Coil
        } else {
            RegisterKind::Holding
        },
        address: 100,
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

/// The point as the stubs' encoder describes it (a translation of fields, no encoding).
fn layout_of(p: &ModbusPoint) -> stub::PointLayout {
    let ty = match p.data_type {
        DataType::U16 => stub::DataType::U16,
        DataType::I16 => stub::DataType::I16,
        DataType::U32 => stub::DataType::U32,
        DataType::I32 => stub::DataType::I32,
        DataType::U64 => stub::DataType::U64,
        DataType::I64 => stub::DataType::I64,
        DataType::F32 => stub::DataType::F32,
        DataType::F64 => stub::DataType::F64,
        DataType::Bool => stub::DataType::Bool,
        DataType::Bit { bit, count } => stub::DataType::Bit { bit, count },
        DataType::String { length } => stub::DataType::String { registers: length },
    };
    let order = match p.order {
        WordOrder::Abcd => stub::Order::Abcd,
        WordOrder::Cdab => stub::Order::Cdab,
        WordOrder::Badc => stub::Order::Badc,
        WordOrder::Dcba => stub::Order::Dcba,
    };
    let kind = match p.register {
        RegisterKind::Holding => stub::RegisterKind::Holding,
        RegisterKind::Input => stub::RegisterKind::Input,
        RegisterKind::Coil => stub::RegisterKind::Coil,
        RegisterKind::Discrete => stub::RegisterKind::Discrete,
    };
    stub::PointLayout {
        kind,
        address: p.address,
        ty,
        order,
        scale: p.scale,
        offset: p.offset,
        enum_keys: p
            .enum_names
            .iter()
            .filter_map(|(raw, name)| Some((name.clone(), u64::try_from(*raw).ok()?)))
            .collect(),
    }
}

/// The registers the stubs serve for `value`; a bit field is merged into `background`.
fn stub_words(p: &ModbusPoint, value: SimValue, background: u16) -> Vec<u16> {
    let encoded = stub::encode(&layout_of(p), &value).expect("the stub encodes the value");
    let mut image = vec![background; p.data_type.width() as usize];
    encoded
        .data
        .merge_into_words(&mut image, u32::from(p.address), p.address);
    image
}

fn number(v: &Value) -> f64 {
    match v {
        Value::Number(n) => *n,
        other => panic!("expected a number, got {other:?}"),
    }
}

fn close(a: f64, b: f64, relative: f64) -> bool {
    (a - b).abs() <= relative * a.abs().max(b.abs()).max(1.0)
}

fn int_types() -> impl Strategy<Value = DataType> {
    prop_oneof![
        Just(DataType::U16),
        Just(DataType::I16),
        Just(DataType::U32),
        Just(DataType::I32),
        Just(DataType::U64),
        Just(DataType::I64),
    ]
}

fn orders() -> impl Strategy<Value = WordOrder> {
    prop_oneof![
        Just(WordOrder::Abcd),
        Just(WordOrder::Cdab),
        Just(WordOrder::Badc),
        Just(WordOrder::Dcba),
    ]
}

/// The inclusive raw range of an integer type.
fn range_of(ty: DataType) -> (i128, i128) {
    match ty {
        DataType::U16 => (0, u16::MAX.into()),
        DataType::I16 => (i16::MIN.into(), i16::MAX.into()),
        DataType::U32 => (0, u32::MAX.into()),
        DataType::I32 => (i32::MIN.into(), i32::MAX.into()),
        DataType::U64 => (0, u64::MAX.into()),
        _ => (i64::MIN.into(), i64::MAX.into()),
    }
}

/// A raw integer of the type from a uniform 64-bit seed.
fn raw_in(ty: DataType, seed: u64) -> i128 {
    let (min, max) = range_of(ty);
    min + i128::from(seed) % (max - min + 1)
}

// ---------------------------------------------------------------------------------------
// round trips through the stubs' encoder

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Integers, unscaled, over the whole range of the type: exact.
    #[test]
    fn integers_round_trip_exactly(ty in int_types(), order in orders(), seed in any::<u64>()) {
        let p = point(ty, order);
        let raw = raw_in(ty, seed);
        // An f64 cannot hold every 64-bit integer: send the nearest one it can.
        let sent = raw as f64;
        let words = stub_words(&p, SimValue::Number(sent), 0);
        prop_assert_eq!(decode(&p, &words), Ok(Value::Number(sent)));
    }

    /// Integers with scale and offset: within float tolerance of the engineering value.
    #[test]
    fn scaled_integers_round_trip(
        ty in int_types(),
        order in orders(),
        seed in any::<u64>(),
        scale in prop_oneof![Just(0.1), Just(0.01), Just(0.5), Just(10.0), Just(-0.1), Just(0.001)],
        offset in prop_oneof![Just(0.0), Just(-40.0), Just(273.15), Just(1.5)],
    ) {
        let mut p = point(ty, order);
        p.scale = scale;
        p.offset = offset;
        // Raw values whose engineering value an f64 holds with room for the division.
        let raw = raw_in(ty, seed).clamp(-(1 << 40), 1 << 40);
        let engineering = raw as f64 * scale + offset;
        let words = stub_words(&p, SimValue::Number(engineering), 0);
        let got = number(&decode(&p, &words).expect("good"));
        prop_assert!(close(got, engineering, 1e-12), "{} vs {}", got, engineering);
    }

    /// Enum points: the raw key and its name, never scaled.
    #[test]
    fn enums_round_trip(ty in int_types(), order in orders(), key in 0i64..=32767, scale in prop_oneof![Just(1.0), Just(0.1)]) {
        let mut p = point(ty, order);
        p.scale = scale;
        p.enum_names.insert(key, "named".to_string());
        p.enum_names.insert(key + 1, "other".to_string());
        let words = stub_words(&p, SimValue::Text("named".into()), 0);
        prop_assert_eq!(
            decode(&p, &words),
            Ok(Value::State { raw: key, name: Some(Arc::from("named")) })
        );
    }

    /// f32 and f64, unscaled: bit-exact for every finite value.
    #[test]
    fn floats_round_trip_exactly(order in orders(), x32 in any::<f32>(), x64 in any::<f64>()) {
        prop_assume!(x32.is_finite() && x64.is_finite());
        let p = point(DataType::F32, order);
        let words = stub_words(&p, SimValue::Number(f64::from(x32)), 0);
        prop_assert_eq!(decode(&p, &words), Ok(Value::Number(f64::from(x32))));
        let p = point(DataType::F64, order);
        let words = stub_words(&p, SimValue::Number(x64), 0);
        prop_assert_eq!(decode(&p, &words), Ok(Value::Number(x64)));
    }

    /// f32 and f64 with scale and offset.
    #[test]
    fn scaled_floats_round_trip(
        order in orders(),
        x in -1.0e6f64..1.0e6,
        scale in prop_oneof![Just(0.1), Just(2.0), Just(-1.0)],
        offset in prop_oneof![Just(0.0), Just(-40.0), Just(100.0)],
    ) {
        for (ty, tolerance) in [(DataType::F32, 1e-6), (DataType::F64, 1e-12)] {
            let mut p = point(ty, order);
            p.scale = scale;
            p.offset = offset;
            let words = stub_words(&p, SimValue::Number(x), 0);
            let got = number(&decode(&p, &words).expect("good"));
            // The raw float carries (x - offset) / scale: its rounding scales with both.
            let error = (got - x).abs();
            prop_assert!(error <= tolerance * (x.abs() + offset.abs() + 1.0), "{:?}: {} vs {}", ty, got, x);
        }
    }

    /// Bit fields in a register whose other bits hold anything.
    #[test]
    fn bit_fields_round_trip(
        bit in 0u8..16,
        count in 1u8..=16,
        seed in any::<u16>(),
        background in any::<u16>(),
        named in any::<bool>(),
        swapped in any::<bool>(),
    ) {
        prop_assume!(u16::from(bit) + u16::from(count) <= 16);
        // Both one-register orders: with BADC the field is cut after the byte swap.
        let order = if swapped { WordOrder::Badc } else { WordOrder::Abcd };
        let mut p = point(DataType::Bit { bit, count }, order);
        let raw = i64::from(seed) % (1i64 << count);
        if named {
            p.enum_names.insert(raw, "state".to_string());
        }
        let words = stub_words(&p, SimValue::Raw(raw as u64), background);
        let expected = if named {
            Value::State { raw, name: Some(Arc::from("state")) }
        } else if count == 1 {
            Value::Bool(raw == 1)
        } else {
            Value::Number(raw as f64)
        };
        prop_assert_eq!(decode(&p, &words), Ok(expected));
    }

    /// Strings of 1..=8 registers in every order; trailing spaces are trimmed.
    #[test]
    fn strings_round_trip(order in orders(), length in 1u16..=8, text in "[ -~]{0,16}") {
        let p = point(DataType::String { length }, order);
        let capacity = usize::from(length) * 2;
        let stored: String = text.chars().take(capacity).collect();
        let words = stub_words(&p, SimValue::Text(stored.clone()), 0);
        prop_assert_eq!(decode(&p, &words), Ok(Value::Text(Arc::from(stored.trim_end_matches(' ')))));
    }

    /// Coils and discrete inputs.
    #[test]
    fn bools_round_trip(value in any::<bool>(), discrete in any::<bool>()) {
        let mut p = point(DataType::Bool, WordOrder::Abcd);
        if discrete {
            p.register = RegisterKind::Discrete;
        }
        let encoded = stub::encode(&layout_of(&p), &SimValue::Bool(value)).expect("encodes");
        let stub::EncodedData::Bool(bit) = encoded.data else {
            panic!("a bool encodes as one bit");
        };
        prop_assert_eq!(decode_bits(&p, &[bit]), Ok(Value::Bool(value)));
    }

    /// A sentinel the stub serves raw is bad in every order, whatever scale and range say.
    #[test]
    fn sentinels_are_bad_in_every_order(
        ty in prop_oneof![int_types(), Just(DataType::F32), Just(DataType::F64)],
        order in orders(),
        seed in any::<u64>(),
    ) {
        let width = ty.width();
        let raw = if width >= 4 { seed } else { seed % (1u64 << (16 * width)) };
        let mut p = point(ty, order);
        p.scale = 0.1;
        p.offset = -40.0;
        p.valid_min = Some(-1.0e300);
        p.sentinels = vec![Sentinel { raw, reason: "not data".to_string() }];
        let words = stub_words(&p, SimValue::Raw(raw), 0);
        prop_assert_eq!(
            decode(&p, &words),
            Err(BadReason::Sentinel { raw, reason: Arc::from("not data") })
        );
    }
}

// ---------------------------------------------------------------------------------------
// arbitrary input never panics

fn any_data_type() -> impl Strategy<Value = DataType> {
    prop_oneof![
        int_types(),
        Just(DataType::F32),
        Just(DataType::F64),
        Just(DataType::Bool),
        (any::<u8>(), any::<u8>()).prop_map(|(bit, count)| DataType::Bit { bit, count }),
        (0u16..12).prop_map(|length| DataType::String { length }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn arbitrary_words_never_panic(
        ty in any_data_type(),
        order in orders(),
        words in proptest::collection::vec(any::<u16>(), 0..10),
        bits in proptest::collection::vec(any::<bool>(), 0..4),
        scale in prop_oneof![Just(1.0), Just(0.1), Just(-3.0), Just(1e300), Just(f64::MIN_POSITIVE)],
        offset in prop_oneof![Just(0.0), Just(-40.0), Just(1e308)],
        range in proptest::option::of((-1e6f64..0.0, 0.0f64..1e6)),
        enum_key in proptest::option::of(any::<i64>()),
        sentinel in proptest::option::of(any::<u64>()),
        offset_in_response in 0u16..12,
    ) {
        let mut p = point(ty, order);
        p.scale = scale;
        p.offset = offset;
        if let Some((min, max)) = range {
            p.valid_min = Some(min);
            p.valid_max = Some(max);
        }
        if let Some(key) = enum_key {
            p.enum_names.insert(key, "k".to_string());
        }
        if let Some(raw) = sentinel {
            p.sentinels.push(Sentinel { raw, reason: "s".to_string() });
        }
        let result = decode(&p, &words);
        if words.len() != ty.width() as usize || ty == DataType::Bool {
            prop_assert!(matches!(result, Err(BadReason::Decode(_))), "{:?}", result);
        }
        if let Ok(Value::Number(n)) = result {
            prop_assert!(n.is_finite());
            if let Some((min, max)) = range {
                prop_assert!(min <= n && n <= max);
            }
        }
        // Bits and responses with any offset: results only.
        let _ = decode_bits(&p, &bits);
        let _ = decode_in(&p, &words, offset_in_response);
        let _ = decode_bits_in(&p, &bits, offset_in_response);
    }
}

// ---------------------------------------------------------------------------------------
// literal vectors

#[test]
fn f32_one_and_a_half_in_each_order() {
    let vectors: [(WordOrder, [u16; 2]); 4] = [
        (WordOrder::Abcd, [0x3FC0, 0x0000]),
        (WordOrder::Cdab, [0x0000, 0x3FC0]),
        (WordOrder::Badc, [0xC03F, 0x0000]),
        (WordOrder::Dcba, [0x0000, 0xC03F]),
    ];
    for (order, words) in vectors {
        assert_eq!(
            decode(&point(DataType::F32, order), &words),
            Ok(Value::Number(1.5)),
            "{order:?}"
        );
    }
}

#[test]
fn thirty_two_and_sixty_four_bit_orders() {
    let u32_vectors = [
        (WordOrder::Abcd, [0x1234, 0x5678]),
        (WordOrder::Cdab, [0x5678, 0x1234]),
        (WordOrder::Badc, [0x3412, 0x7856]),
        (WordOrder::Dcba, [0x7856, 0x3412]),
    ];
    for (order, words) in u32_vectors {
        assert_eq!(
            decode(&point(DataType::U32, order), &words),
            Ok(Value::Number(f64::from(0x1234_5678u32))),
            "{order:?}"
        );
    }
    // -2.5 = 0xC004000000000000
    let f64_vectors = [
        (WordOrder::Abcd, [0xC004, 0, 0, 0]),
        (WordOrder::Cdab, [0, 0, 0, 0xC004]),
        (WordOrder::Badc, [0x04C0, 0, 0, 0]),
        (WordOrder::Dcba, [0, 0, 0, 0x04C0]),
    ];
    for (order, words) in f64_vectors {
        assert_eq!(
            decode(&point(DataType::F64, order), &words),
            Ok(Value::Number(-2.5)),
            "{order:?}"
        );
    }
    assert_eq!(
        decode(&point(DataType::I32, WordOrder::Cdab), &[0xFF6A, 0xFFFF]),
        Ok(Value::Number(-150.0))
    );
    assert_eq!(
        decode(&point(DataType::I64, WordOrder::Abcd), &[0xFFFF; 4]),
        Ok(Value::Number(-1.0))
    );
}

#[test]
fn sixteen_bit_signs_and_scales() {
    assert_eq!(
        decode(&point(DataType::I16, WordOrder::Abcd), &[0xFFFF]),
        Ok(Value::Number(-1.0))
    );
    assert_eq!(
        decode(&point(DataType::U16, WordOrder::Abcd), &[0xFFFF]),
        Ok(Value::Number(65535.0))
    );
    assert_eq!(
        decode(&point(DataType::I16, WordOrder::Badc), &[0xFEFF]),
        Ok(Value::Number(-2.0))
    );
    let mut p = point(DataType::I16, WordOrder::Abcd);
    p.scale = 0.1;
    let got = number(&decode(&p, &[0xFF85]).expect("good")); // -123
    assert!(close(got, -12.3, 1e-12), "{got}");
    // J1939 coolant: 1 degC/bit, offset -40.
    let mut p = point(DataType::U16, WordOrder::Abcd);
    p.offset = -40.0;
    assert_eq!(decode(&p, &[125]), Ok(Value::Number(85.0)));
}

/// DSE GenComm oil pressure: the reserved top codes are sentinels, compared before scale.
fn dse_oil_pressure() -> ModbusPoint {
    let mut p = point(DataType::U16, WordOrder::Abcd);
    p.valid_min = Some(0.0);
    p.valid_max = Some(1000.0);
    p.sentinels = [
        (0xFFFF, "unimplemented"),
        (0xFFFE, "over measurable range"),
        (0xFFFD, "under measurable range"),
        (0xFFFC, "transducer fault"),
    ]
    .into_iter()
    .map(|(raw, reason)| Sentinel {
        raw,
        reason: reason.to_string(),
    })
    .collect();
    p
}

#[test]
fn dse_transducer_fault_is_bad_never_a_number() {
    let p = dse_oil_pressure();
    assert_eq!(
        decode(&p, &[0xFFFC]),
        Err(BadReason::Sentinel {
            raw: 0xFFFC,
            reason: Arc::from("transducer fault")
        })
    );
    assert_eq!(decode(&p, &[412]), Ok(Value::Number(412.0)));
    assert_eq!(
        decode(&p, &[1001]),
        Err(BadReason::OutOfRange { value: 1001.0 })
    );
    // Signed: the same raw 0xFFFC is -4 as an i16, still a sentinel (compared before sign).
    let mut signed = p.clone();
    signed.data_type = DataType::I16;
    signed.valid_min = None;
    assert!(matches!(
        decode(&signed, &[0xFFFC]),
        Err(BadReason::Sentinel { raw: 0xFFFC, .. })
    ));
    // Scaled: compared before scale too.
    let mut scaled = p;
    scaled.scale = 0.1;
    assert!(matches!(
        decode(&scaled, &[0xFFFD]),
        Err(BadReason::Sentinel { raw: 0xFFFD, .. })
    ));
    // A 32-bit sentinel is compared on the assembled value, not on the words as sent.
    let mut wide = point(DataType::U32, WordOrder::Cdab);
    wide.sentinels = vec![Sentinel {
        raw: 0x7FFF_FFFF,
        reason: "n/a".to_string(),
    }];
    assert!(matches!(
        decode(&wide, &[0xFFFF, 0x7FFF]),
        Err(BadReason::Sentinel {
            raw: 0x7FFF_FFFF,
            ..
        })
    ));
    assert_eq!(
        decode(&wide, &[0x7FFF, 0xFFFF]),
        Ok(Value::Number(f64::from(0xFFFF_7FFFu32)))
    );
}

#[test]
fn non_finite_floats_are_bad() {
    let p = point(DataType::F32, WordOrder::Abcd);
    assert_eq!(decode(&p, &[0x7FC0, 0]), Err(BadReason::NotFinite), "NaN");
    assert_eq!(decode(&p, &[0x7F80, 0]), Err(BadReason::NotFinite), "+inf");
    assert_eq!(decode(&p, &[0xFF80, 0]), Err(BadReason::NotFinite), "-inf");
    let p = point(DataType::F64, WordOrder::Dcba);
    assert_eq!(decode(&p, &[0, 0, 0, 0xF87F]), Err(BadReason::NotFinite));
    // Scaling that overflows is not a number either.
    let mut p = point(DataType::F32, WordOrder::Abcd);
    p.scale = 1e300;
    assert_eq!(
        decode(&p, &[0x7F7F, 0xFFFF]),
        Err(BadReason::NotFinite),
        "f32::MAX x 1e300"
    );
}

#[test]
fn wrong_lengths_are_decode_errors() {
    for (ty, width) in [
        (DataType::U16, 1),
        (DataType::F32, 2),
        (DataType::F64, 4),
        (DataType::String { length: 3 }, 3),
        (DataType::Bit { bit: 0, count: 1 }, 1),
    ] {
        let p = point(ty, WordOrder::Abcd);
        for n in 0..8 {
            let result = decode(&p, &vec![0x4142; n]);
            assert_eq!(
                result.is_ok(),
                n == width,
                "{ty:?} with {n} words: {result:?}"
            );
        }
    }
    let coil = point(DataType::Bool, WordOrder::Abcd);
    assert!(matches!(decode(&coil, &[1]), Err(BadReason::Decode(_))));
    assert!(matches!(decode_bits(&coil, &[]), Err(BadReason::Decode(_))));
    assert!(matches!(
        decode_bits(&coil, &[true, false]),
        Err(BadReason::Decode(_))
    ));
    assert!(matches!(
        decode_bits(&point(DataType::U16, WordOrder::Abcd), &[true]),
        Err(BadReason::Decode(_))
    ));
    // In a response: the point's window, or a decode error when the response is short.
    let p = point(DataType::U32, WordOrder::Abcd);
    assert_eq!(
        decode_in(&p, &[9, 0, 1, 9], 1),
        Ok(Value::Number(1.0)),
        "words 1..3"
    );
    assert!(matches!(
        decode_in(&p, &[9, 0, 1], 2),
        Err(BadReason::Decode(_))
    ));
    assert!(matches!(decode_in(&p, &[9], 40), Err(BadReason::Decode(_))));
    assert_eq!(
        decode_bits_in(&coil, &[false, true], 1),
        Ok(Value::Bool(true))
    );
}

#[test]
fn strings_trim_nul_and_spaces() {
    let p = point(DataType::String { length: 5 }, WordOrder::Abcd);
    // "Galaxy VX" + NUL
    let words = [0x4761, 0x6C61, 0x7879, 0x2056, 0x5800];
    assert_eq!(decode(&p, &words), Ok(Value::Text(Arc::from("Galaxy VX"))));
    let p = point(DataType::String { length: 3 }, WordOrder::Badc);
    assert_eq!(
        decode(&p, &[0x5055, 0x2053, 0x2020]),
        Ok(Value::Text(Arc::from("UPS")))
    );
    assert_eq!(decode(&p, &[0, 0, 0]), Ok(Value::Text(Arc::from(""))));
    // Leading spaces are data.
    assert_eq!(
        decode(&p, &[0x2020, 0x0041, 0]),
        Ok(Value::Text(Arc::from("  A")))
    );
    // Not UTF-8: replaced, never a panic.
    let p = point(DataType::String { length: 1 }, WordOrder::Abcd);
    assert_eq!(
        decode(&p, &[0xFF41]),
        Ok(Value::Text(Arc::from("\u{FFFD}A")))
    );
}

#[test]
fn bit_fields_enums_and_flags() {
    // DSE alarm nibble in bits 12-15 of 0x3210: 3 = shutdown.
    let mut nibble = point(DataType::Bit { bit: 12, count: 4 }, WordOrder::Abcd);
    for (raw, name) in [
        (0, "disabled"),
        (1, "not_active"),
        (2, "warning"),
        (3, "shutdown"),
    ] {
        nibble.enum_names.insert(raw, name.to_string());
    }
    assert_eq!(
        decode(&nibble, &[0x3210]),
        Ok(Value::State {
            raw: 3,
            name: Some(Arc::from("shutdown"))
        })
    );
    // A value the profile does not name keeps its raw integer.
    assert_eq!(
        decode(&nibble, &[0x9000]),
        Ok(Value::State { raw: 9, name: None })
    );
    // Nibble sentinel (15 = unimplemented) on the field, not the register.
    nibble.sentinels = vec![Sentinel {
        raw: 15,
        reason: "unimplemented".to_string(),
    }];
    assert!(matches!(
        decode(&nibble, &[0xF000]),
        Err(BadReason::Sentinel { raw: 15, .. })
    ));
    assert!(decode(&nibble, &[0x0FFF]).is_ok());
    // One-bit flags are booleans.
    let flag = point(DataType::Bit { bit: 1, count: 1 }, WordOrder::Abcd);
    assert_eq!(decode(&flag, &[0x0002]), Ok(Value::Bool(true)));
    assert_eq!(decode(&flag, &[0xFFFD]), Ok(Value::Bool(false)));
    // BADC on a bit field: the value is the byte-swapped register, bits count from its
    // lowest bit (docs/configuration.md's order table applied to one register).
    let swapped = point(DataType::Bit { bit: 0, count: 1 }, WordOrder::Badc);
    assert_eq!(decode(&swapped, &[0x0100]), Ok(Value::Bool(true)));
    assert_eq!(decode(&swapped, &[0x0001]), Ok(Value::Bool(false)));
    // Enum on a 16-bit register (UPS output source).
    let mut source = point(DataType::U16, WordOrder::Abcd);
    source.enum_names.insert(5, "battery".to_string());
    source.scale = 0.1; // enums are raw, never scaled
    assert_eq!(
        decode(&source, &[5]),
        Ok(Value::State {
            raw: 5,
            name: Some(Arc::from("battery"))
        })
    );
    // A signed enum keeps its sign.
    let mut signed = point(DataType::I16, WordOrder::Abcd);
    signed.enum_names.insert(-1, "n/a".to_string());
    assert_eq!(
        decode(&signed, &[0xFFFF]),
        Ok(Value::State {
            raw: -1,
            name: Some(Arc::from("n/a"))
        })
    );
    // A u64 enum raw above i64::MAX cannot be a key: bad, not a wrapped number.
    let mut huge = point(DataType::U64, WordOrder::Abcd);
    huge.enum_names.insert(1, "one".to_string());
    assert!(matches!(
        decode(&huge, &[0xFFFF; 4]),
        Err(BadReason::Decode(_))
    ));
}

// ---------------------------------------------------------------------------------------
// the planner against an independent oracle

/// The fewest requests for `points` (table, address, width), by a dynamic programme over
/// the points of each table sorted by address: `best[i]` = fewest requests covering the
/// first `i` spans, where one request may cover spans `j..i` when the window is within
/// `limit`, no gap between covered addresses exceeds `max_gap`, and no `never_read`
/// address lies in the window.
fn oracle_min(
    points: &[(RegisterKind, u32, u32)],
    limits: ReadLimits,
    never_read: &[RegisterRange],
) -> usize {
    let mut total = 0;
    let tables: BTreeSet<RegisterKind> = points.iter().map(|p| p.0).collect();
    for table in tables {
        let limit = if matches!(table, RegisterKind::Coil | RegisterKind::Discrete) {
            u32::from(limits.max_bits_per_read.min(2000))
        } else {
            u32::from(limits.max_registers_per_read.min(125))
        };
        let mut spans: Vec<(u32, u32)> = points
            .iter()
            .filter(|p| p.0 == table)
            .map(|p| (p.1, p.1 + p.2))
            .collect();
        spans.sort_unstable();
        spans.dedup();
        let forbidden: BTreeSet<u32> = never_read
            .iter()
            .filter(|r| r.register == table)
            .flat_map(|r| u32::from(r.start)..u32::from(r.start) + u32::from(r.count))
            .collect();
        let n = spans.len();
        let mut best = vec![usize::MAX; n + 1];
        best[0] = 0;
        for i in 1..=n {
            for j in 0..i {
                if best[j] == usize::MAX {
                    continue;
                }
                let first = spans[j].0;
                let mut reach = spans[j].1;
                let mut ok = true;
                for &(s, e) in &spans[j + 1..i] {
                    if s > reach && s - reach > u32::from(limits.max_gap_registers) {
                        ok = false;
                    }
                    reach = reach.max(e);
                }
                ok &= reach - first <= limit;
                ok &= forbidden.range(first..reach).next().is_none();
                if ok {
                    best[i] = best[i].min(best[j] + 1);
                }
            }
        }
        total += best[n];
    }
    total
}

/// Checks a plan of `profile`'s points accepted by `include`: each covered exactly
/// once at its offset, limits, gaps, never_read; and the minimum number of requests.
fn check_plan(profile: &ModbusProfile, include: impl Fn(PollClass) -> bool, what: &str) -> Plan {
    let plan = plan(profile, &include);
    assert!(plan.unplanned.is_empty(), "{what}: {:?}", plan.unplanned);
    let wanted: Vec<usize> = (0..profile.points.len())
        .filter(|i| include(profile.points[*i].class))
        .collect();
    let mut seen: Vec<usize> = Vec::new();
    for r in &plan.requests {
        let (start, end) = (u32::from(r.start), u32::from(r.start) + u32::from(r.count));
        let limit = if matches!(r.register, RegisterKind::Coil | RegisterKind::Discrete) {
            profile.limits.max_bits_per_read.min(2000)
        } else {
            profile.limits.max_registers_per_read.min(125)
        };
        assert!(
            r.count >= 1 && r.count <= limit,
            "{what}: {r:?} over {limit}"
        );
        for nr in profile
            .never_read
            .iter()
            .filter(|n| n.register == r.register)
        {
            let (a, b) = (
                u32::from(nr.start),
                u32::from(nr.start) + u32::from(nr.count),
            );
            assert!(
                end <= a || b <= start,
                "{what}: {r:?} touches never_read {nr:?}"
            );
        }
        let mut covered = vec![false; usize::from(r.count)];
        for &(index, offset) in &r.points {
            let p = &profile.points[index];
            assert_eq!(
                p.register, r.register,
                "{what}: {} in the wrong table",
                p.name
            );
            assert_eq!(
                u32::from(p.address),
                start + u32::from(offset),
                "{what}: {} at the wrong offset",
                p.name
            );
            let width = p.data_type.width();
            assert!(
                u32::from(p.address) + width <= end,
                "{what}: {} cut off",
                p.name
            );
            for slot in &mut covered[usize::from(offset)..usize::from(offset) + width as usize] {
                *slot = true;
            }
            seen.push(index);
        }
        assert!(
            covered[0] && covered[covered.len() - 1],
            "{what}: {r:?} reads waste at an end"
        );
        let mut gap = 0;
        for c in covered {
            gap = if c { 0 } else { gap + 1 };
            assert!(
                gap <= profile.limits.max_gap_registers,
                "{what}: {r:?} reads a gap over {}",
                profile.limits.max_gap_registers
            );
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, wanted, "{what}: every point exactly once");
    let spans: Vec<(RegisterKind, u32, u32)> = wanted
        .iter()
        .map(|i| {
            let p = &profile.points[*i];
            (p.register, u32::from(p.address), p.data_type.width())
        })
        .collect();
    assert_eq!(
        plan.requests.len(),
        oracle_min(&spans, profile.limits, &profile.never_read),
        "{what}: not the minimum number of requests"
    );
    plan
}

#[test]
fn every_shipped_profile_is_planned_with_the_minimum_number_of_requests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let config = match dcguard::config::load(&dir) {
        Ok(config) => config,
        Err(errors) => panic!("the shipped configuration must load:\n{errors}"),
    };
    let mut modbus_profiles = 0;
    for (id, profile) in &config.profiles {
        let ProfileTransport::Modbus(m) = &profile.transport else {
            continue;
        };
        modbus_profiles += 1;
        for class in [PollClass::Fast, PollClass::Normal, PollClass::Slow] {
            check_plan(m, |c| c == class, &format!("{id} {class:?}"));
        }
        check_plan(m, |_| true, &format!("{id} all classes"));
        // The per-class plans together read every point once.
        let plans = plan_classes(m);
        let planned: usize = [PollClass::Fast, PollClass::Normal, PollClass::Slow]
            .iter()
            .flat_map(|c| &plans.of(*c).requests)
            .map(|r| r.points.len())
            .sum();
        assert_eq!(planned, m.points.len(), "{id}");
    }
    assert!(
        modbus_profiles >= 7,
        "only {modbus_profiles} Modbus profiles shipped"
    );
}

/// A random profile: points laid out left to right with random gaps (bit fields may
/// share a register), `never_read` ranges placed in gaps, random limits.
fn random_profile() -> impl Strategy<Value = ModbusProfile> {
    let item = (
        0u16..14,
        prop_oneof![
            Just(DataType::U16),
            Just(DataType::U32),
            Just(DataType::F64),
            Just(DataType::String { length: 9 }),
            Just(DataType::Bit { bit: 0, count: 4 }),
            Just(DataType::Bool),
        ],
        any::<bool>(),
        0u8..3,
    );
    (
        proptest::collection::vec(item, 1..40),
        proptest::collection::vec((0u16..400, 1u16..4, any::<bool>()), 0..6),
        (9u16..=130, 1u16..=40, 0u16..=10),
    )
        .prop_map(|(items, never, (regs, bits, gap))| {
            let mut next = [0u32; 2]; // words, bits
            let mut points: Vec<ModbusPoint> = Vec::new();
            let mut last_was_bit_field = false;
            for (skip, data_type, input, class) in items {
                let bit_table = data_type == DataType::Bool;
                let cursor = &mut next[usize::from(bit_table)];
                let is_bit_field = matches!(data_type, DataType::Bit { .. });
                // A bit field right after another one shares its register.
                let share = is_bit_field && last_was_bit_field && skip < 7;
                if !bit_table {
                    last_was_bit_field = is_bit_field;
                }
                let address = if share {
                    *cursor - 1
                } else {
                    *cursor + u32::from(skip)
                };
                let mut p = point(data_type, WordOrder::Abcd);
                p.register = match (bit_table, input) {
                    (true, true) => RegisterKind::Discrete,
                    (true, false) => RegisterKind::Coil,
                    (false, _) => RegisterKind::Holding,
                };
                p.address = address as u16;
                p.class = [PollClass::Fast, PollClass::Normal, PollClass::Slow][usize::from(class)];
                *cursor = address + data_type.width();
                points.push(p);
            }
            let never_read = never
                .into_iter()
                .map(|(start, count, coil)| RegisterRange {
                    register: if coil {
                        RegisterKind::Coil
                    } else {
                        RegisterKind::Holding
                    },
                    start,
                    count,
                })
                .filter(|r| {
                    !points
                        .iter()
                        .any(|p| r.overlaps(p.register, u32::from(p.address), p.data_type.width()))
                })
                .collect();
            ModbusProfile {
                limits: ReadLimits {
                    max_registers_per_read: regs,
                    max_bits_per_read: bits,
                    max_gap_registers: gap,
                },
                never_read,
                poll: PollIntervals {
                    fast: Duration::from_secs(2),
                    normal: Duration::from_secs(10),
                    slow: Duration::from_secs(60),
                },
                points,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn random_profiles_are_planned_with_the_minimum_number_of_requests(profile in random_profile()) {
        check_plan(&profile, |_| true, "all");
        check_plan(&profile, |c| c == PollClass::Normal, "normal");
    }
}

#[test]
fn read_requests_use_read_function_codes_only() {
    let mut points = Vec::new();
    for (i, register) in [
        RegisterKind::Coil,
        RegisterKind::Discrete,
        RegisterKind::Holding,
        RegisterKind::Input,
    ]
    .into_iter()
    .enumerate()
    {
        let ty = if register.is_bit_table() {
            DataType::Bool
        } else {
            DataType::U16
        };
        let mut p = point(ty, WordOrder::Abcd);
        p.register = register;
        p.address = i as u16;
        points.push(p);
    }
    let profile = ModbusProfile {
        limits: ReadLimits {
            max_registers_per_read: 125,
            max_bits_per_read: 2000,
            max_gap_registers: 8,
        },
        never_read: Vec::new(),
        poll: PollIntervals {
            fast: Duration::from_secs(2),
            normal: Duration::from_secs(10),
            slow: Duration::from_secs(60),
        },
        points,
    };
    let codes: BTreeSet<u8> = plan(&profile, |_| true)
        .requests
        .iter()
        .map(|r| r.function_code())
        .collect();
    assert_eq!(codes, BTreeSet::from([1, 2, 3, 4]));
}
