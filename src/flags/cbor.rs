//! The hash of `fractional` v3: MurmurHash3 x86_32 (seed 0) of the
//! deterministic CBOR encoding (RFC 8949 §4.2) of the bucketing value, as
//! flagd's "fractional-non-string-rand-units" design specifies: shortest
//! heads, map keys in the order of their encodings, floats in the shortest
//! of half/single/double that keeps the value, and whole floats within
//! [-2^63, 2^64) written as integers (so `1.0` and `1` bucket alike).
//!
//! Hand-written rather than taken from a crate: the encoder needed is about
//! eighty lines, and the common case, a string (or the shorthand's
//! `[flagKey, targetingKey]`), is hashed straight from a few stack bytes and
//! the string's own bytes with no allocation at all, which tests/allocations.rs
//! pins. The CBOR crates serialize into a buffer first (`ciborium` through
//! serde into a `Write`; neither it nor `minicbor` orders map keys
//! deterministically by itself), which is an allocation, or a fixed buffer
//! bounding the key length, per evaluation. Measured (benches/flags.rs, a
//! noisy 2-core machine, BENCHMARKS.md): a v3 split takes 1.08–1.24× a v2
//! split in the same run (170–242 ns), allocation-free. The nested-value path
//! (arrays, objects) allocates one buffer, as a crate would.
//! Checked against cbor2's canonical encoding through `openfeature-flagd-core`
//! (tests/api/flags_python.rs) and the flagd-testbed v3 vectors.

use serde_json::{Map, Number, Value};

use super::murmur::murmur3_32;

/// A CBOR head: major type and argument in the shortest form, at most 9
/// bytes.
struct Head {
    bytes: [u8; 9],
    len: usize,
}

impl Head {
    fn new(major: u8, argument: u64) -> Self {
        let mut bytes = [0u8; 9];
        let top = major << 5;
        let len = if argument < 24 {
            bytes[0] = top | argument as u8;
            1
        } else if argument <= u64::from(u8::MAX) {
            bytes[0] = top | 24;
            bytes[1] = argument as u8;
            2
        } else if argument <= u64::from(u16::MAX) {
            bytes[0] = top | 25;
            bytes[1..3].copy_from_slice(&(argument as u16).to_be_bytes());
            3
        } else if argument <= u64::from(u32::MAX) {
            bytes[0] = top | 26;
            bytes[1..5].copy_from_slice(&(argument as u32).to_be_bytes());
            5
        } else {
            bytes[0] = top | 27;
            bytes[1..9].copy_from_slice(&argument.to_be_bytes());
            9
        };
        Head { bytes, len }
    }

    /// A simple value or float: the first byte and up to eight more.
    fn raw(first: u8, rest: &[u8]) -> Self {
        let mut bytes = [0u8; 9];
        bytes[0] = first;
        bytes[1..=rest.len()].copy_from_slice(rest);
        Head {
            bytes,
            len: 1 + rest.len(),
        }
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

const MAJOR_UNSIGNED: u8 = 0;
const MAJOR_NEGATIVE: u8 = 1;
const MAJOR_TEXT: u8 = 3;
const MAJOR_ARRAY: u8 = 4;
const MAJOR_MAP: u8 = 5;

/// The v3 hash of a bucketing value.
pub fn hash(value: &Value) -> u32 {
    match value {
        Value::String(s) => {
            let head = Head::new(MAJOR_TEXT, s.len() as u64);
            murmur3_32(&[head.as_slice(), s.as_bytes()], 0)
        }
        Value::Array(_) | Value::Object(_) => {
            let mut out = Vec::new();
            encode(value, &mut out);
            murmur3_32(&[&out], 0)
        }
        scalar => murmur3_32(&[scalar_head(scalar).as_slice()], 0),
    }
}

/// The v3 hash of the shorthand's `[flag_key, targeting_key]`, without
/// building the array.
pub fn hash_pair(flag_key: &str, targeting_key: &str) -> u32 {
    let array = Head::new(MAJOR_ARRAY, 2);
    let first = Head::new(MAJOR_TEXT, flag_key.len() as u64);
    let second = Head::new(MAJOR_TEXT, targeting_key.len() as u64);
    murmur3_32(
        &[
            array.as_slice(),
            first.as_slice(),
            flag_key.as_bytes(),
            second.as_slice(),
            targeting_key.as_bytes(),
        ],
        0,
    )
}

/// Appends the deterministic encoding of `value` to `out`.
pub fn encode(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::String(s) => {
            out.extend_from_slice(Head::new(MAJOR_TEXT, s.len() as u64).as_slice());
            out.extend_from_slice(s.as_bytes());
        }
        Value::Array(items) => {
            out.extend_from_slice(Head::new(MAJOR_ARRAY, items.len() as u64).as_slice());
            for item in items {
                encode(item, out);
            }
        }
        Value::Object(map) => encode_map(map, out),
        scalar => out.extend_from_slice(scalar_head(scalar).as_slice()),
    }
}

/// Keys ordered by their encoded bytes: for text keys that is shorter first,
/// then bytewise (the head grows with the length).
fn encode_map(map: &Map<String, Value>, out: &mut Vec<u8>) {
    out.extend_from_slice(Head::new(MAJOR_MAP, map.len() as u64).as_slice());
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by(|(a, _), (b, _)| {
        a.len()
            .cmp(&b.len())
            .then_with(|| a.as_bytes().cmp(b.as_bytes()))
    });
    for (key, item) in entries {
        out.extend_from_slice(Head::new(MAJOR_TEXT, key.len() as u64).as_slice());
        out.extend_from_slice(key.as_bytes());
        encode(item, out);
    }
}

/// null, booleans and numbers.
fn scalar_head(value: &Value) -> Head {
    match value {
        Value::Bool(false) => Head::raw(0xf4, &[]),
        Value::Bool(true) => Head::raw(0xf5, &[]),
        Value::Number(n) => number_head(n),
        _ => Head::raw(0xf6, &[]),
    }
}

/// 2^63 and 2^64 as floats (exact).
const TWO_63: f64 = 9_223_372_036_854_775_808.0;
const TWO_64: f64 = 18_446_744_073_709_551_616.0;

fn number_head(n: &Number) -> Head {
    if let Some(u) = n.as_u64() {
        return Head::new(MAJOR_UNSIGNED, u);
    }
    if let Some(i) = n.as_i64() {
        // i < 0 here: CBOR writes -1 - i.
        return Head::new(MAJOR_NEGATIVE, (-(i + 1)) as u64);
    }
    let f = n.as_f64().unwrap_or(f64::NAN);
    if f.fract() == 0.0 && (-TWO_63..TWO_64).contains(&f) {
        return if f >= 0.0 {
            Head::new(MAJOR_UNSIGNED, f as u64)
        } else {
            Head::new(MAJOR_NEGATIVE, (-(f + 1.0)) as u64)
        };
    }
    float_head(f)
}

/// The shortest IEEE 754 form that keeps `f` exactly.
fn float_head(f: f64) -> Head {
    if f.is_nan() {
        return Head::raw(0xf9, &[0x7e, 0x00]);
    }
    let single = f as f32;
    if f64::from(single) != f {
        return Head::raw(0xfb, &f.to_bits().to_be_bytes());
    }
    match half_bits(single) {
        Some(half) => Head::raw(0xf9, &half.to_be_bytes()),
        None => Head::raw(0xfa, &single.to_bits().to_be_bytes()),
    }
}

/// `f` as IEEE 754 half precision bits, when that is exact.
fn half_bits(f: f32) -> Option<u16> {
    let bits = f.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exponent = ((bits >> 23) & 0xff) as i32;
    let mantissa = bits & 0x7f_ffff;
    if exponent == 0xff {
        // Infinities (NaN is handled before).
        return (mantissa == 0).then_some(sign | 0x7c00);
    }
    if exponent == 0 {
        // Zero (single subnormals are far below half's range).
        return (mantissa == 0).then_some(sign);
    }
    let e = exponent - 127;
    if (-14..=15).contains(&e) {
        // Normal half: the 13 low mantissa bits must be zero.
        return (mantissa & 0x1fff == 0)
            .then(|| sign | (((e + 15) as u16) << 10) | (mantissa >> 13) as u16);
    }
    if (-24..-14).contains(&e) {
        // Subnormal half: value = fraction * 2^-24.
        let significand = (1u32 << 23) | mantissa;
        let shift = (-(e + 1)) as u32;
        let fraction = significand >> shift;
        return (fraction << shift == significand).then_some(sign | fraction as u16);
    }
    None
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn bytes(value: &Value) -> String {
        let mut out = Vec::new();
        encode(value, &mut out);
        out.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Encodings from RFC 8949 Appendix A (those in its deterministic form).
    #[test]
    fn encodes_the_rfc_examples_deterministically() {
        for (value, hex) in [
            (json!(0), "00"),
            (json!(23), "17"),
            (json!(24), "1818"),
            (json!(1000), "1903e8"),
            (json!(1_000_000), "1a000f4240"),
            (json!(1_000_000_000_000u64), "1b000000e8d4a51000"),
            (json!(u64::MAX), "1bffffffffffffffff"),
            (json!(-1), "20"),
            (json!(-1000), "3903e7"),
            (json!(1.5), "f93e00"),
            (json!(65504.5), "fa477fe080"),
            (json!(100000.5), "fa47c35040"),
            (json!(1.1), "fb3ff199999999999a"),
            (json!(5.960464477539063e-8), "f90001"),
            (json!(-4.1), "fbc010666666666666"),
            (json!(1e300), "fb7e37e43c8800759c"),
            (json!(false), "f4"),
            (json!(true), "f5"),
            (json!(null), "f6"),
            (json!(""), "60"),
            (json!("a"), "6161"),
            (json!("\u{00fc}"), "62c3bc"),
            (json!([1, [2, 3], [4, 5]]), "8301820203820405"),
            (json!({"a": 1, "b": [2, 3]}), "a26161016162820203"),
            (json!({"z": 1, "aa": 2}), "a2617a0162616102"),
        ] {
            assert_eq!(bytes(&value), hex, "{value}");
        }
    }

    #[test]
    fn whole_floats_are_integers() {
        assert_eq!(bytes(&json!(1.0)), "01");
        assert_eq!(bytes(&json!(-2.0)), "21");
        assert_eq!(bytes(&json!(-0.0)), "00");
        assert_eq!(bytes(&json!(9_007_199_254_740_992.0)), "1b0020000000000000");
        // 1e20 is past 2^64: stays a float.
        assert_eq!(bytes(&json!(1e20)), "fb4415af1d78b58c40");
    }

    #[test]
    fn hashing_the_pair_equals_hashing_the_encoded_array() {
        let mut out = Vec::new();
        encode(&json!(["flag", "user-1"]), &mut out);
        assert_eq!(hash_pair("flag", "user-1"), murmur3_32(&[&out], 0));
        assert_eq!(hash(&json!("x")), murmur3_32(&[&[0x61, b'x']], 0));
    }
}
