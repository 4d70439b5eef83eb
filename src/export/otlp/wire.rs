//! Protocol Buffers wire primitives for the OTLP batch: varints, field keys, strings, OTLP
//! `KeyValue` attributes, and nested messages whose length prefix is patched in afterwards.
//!
//! Why by hand: building opentelemetry-proto's structs first allocated an owned `String` for
//! every attribute key and value (~8 per point, ~1000 points per push at 8 GPUs) only to
//! encode and drop them; writing the bytes straight into a reused buffer makes a push cost
//! about what a `/metrics` render does (issue 19). The field numbers are those of
//! opentelemetry-proto's generated code, and the tests decode what is written here with
//! those generated types (prost), so the wire format stays checked against the official
//! definitions.

/// Wire type of a varint field (int64, uint32, bool, enum).
pub(super) const VARINT: u8 = 0;
/// Wire type of a 64-bit fixed field (fixed64, sfixed64, double).
pub(super) const FIXED64: u8 = 1;
/// Wire type of a length-delimited field (string, bytes, message, packed repeated).
pub(super) const LEN: u8 = 2;

/// Bytes the varint encoding of `v` takes.
pub(super) const fn varint_len(v: u64) -> usize {
    // 1 byte per started 7 bits; 0 takes one byte.
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// `v` as a varint: 7 bits a byte, low first, the high bit set on all but the last; the
/// bytes and how many of them.
fn varint(mut v: u64) -> ([u8; 10], usize) {
    let mut out = [0; 10];
    let mut n = 0;
    while v >= 0x80 {
        out[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    out[n] = v as u8;
    (out, n + 1)
}

pub(super) fn put_varint(buf: &mut Vec<u8>, v: u64) {
    let (bytes, n) = varint(v);
    buf.extend_from_slice(&bytes[..n]);
}

/// The key of field `field` (all of OTLP's fit one byte up to field 15).
pub(super) fn put_key(buf: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(buf, (u64::from(field) << 3) | u64::from(wire));
}

pub(super) fn put_fixed64(buf: &mut Vec<u8>, field: u32, v: u64) {
    put_key(buf, field, FIXED64);
    buf.extend_from_slice(&v.to_le_bytes());
}

pub(super) fn put_double(buf: &mut Vec<u8>, field: u32, v: f64) {
    put_fixed64(buf, field, v.to_bits());
}

pub(super) fn put_uint(buf: &mut Vec<u8>, field: u32, v: u64) {
    put_key(buf, field, VARINT);
    put_varint(buf, v);
}

/// A length-delimited field holding `bytes` (a string, or an already encoded message).
pub(super) fn put_bytes(buf: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(buf, field, LEN);
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

/// Bytes a length-delimited field with a body of `len` bytes takes (keys below field 16).
pub(super) const fn len_field(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// A nested message as field `field`: `body` writes it, then its length is put in front.
/// One byte is kept for the length; a longer body moves up by what the prefix needs more
/// (a point's few hundred bytes, once).
pub(super) fn put_message(buf: &mut Vec<u8>, field: u32, body: impl FnOnce(&mut Vec<u8>)) {
    put_key(buf, field, LEN);
    let at = buf.len();
    buf.push(0);
    body(buf);
    let (prefix, n) = varint((buf.len() - at - 1) as u64);
    if n == 1 {
        buf[at] = prefix[0];
    } else {
        buf.splice(at..at + 1, prefix[..n].iter().copied());
    }
}

/// `KeyValue` field numbers and `AnyValue`'s: the attribute as field `field` of its message.
const KV_KEY: u32 = 1;
const KV_VALUE: u32 = 2;
const ANY_STRING: u32 = 1;
const ANY_INT: u32 = 3;

/// A string attribute (`KeyValue{key, AnyValue{string_value}}`) as field `field`.
pub(super) fn put_text_attribute(buf: &mut Vec<u8>, field: u32, key: &str, value: &str) {
    put_attribute(buf, field, key, len_field(value.len()), |buf| {
        put_bytes(buf, ANY_STRING, value.as_bytes());
    });
}

/// An integer attribute (`KeyValue{key, AnyValue{int_value}}`) as field `field`.
pub(super) fn put_int_attribute(buf: &mut Vec<u8>, field: u32, key: &str, value: i64) {
    // int64 is a varint of the two's complement: negatives take 10 bytes.
    let v = value as u64;
    put_attribute(buf, field, key, 1 + varint_len(v), |buf| {
        put_uint(buf, ANY_INT, v);
    });
}

/// A `KeyValue` as field `field` whose `AnyValue` body, `any` bytes long, `value` writes: both
/// lengths are known up front, so nothing is moved.
fn put_attribute(
    buf: &mut Vec<u8>,
    field: u32,
    key: &str,
    any: usize,
    value: impl FnOnce(&mut Vec<u8>),
) {
    put_key(buf, field, LEN);
    put_varint(buf, (len_field(key.len()) + len_field(any)) as u64);
    put_bytes(buf, KV_KEY, key.as_bytes());
    put_key(buf, KV_VALUE, LEN);
    put_varint(buf, any as u64);
    let at = buf.len();
    value(buf);
    debug_assert_eq!(buf.len() - at, any);
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use prost::Message as _;

    #[test]
    fn varint_lengths_match_prost() {
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            assert_eq!(buf.len(), varint_len(v), "{v}");
            assert_eq!(buf.len(), prost::encoding::encoded_len_varint(v), "{v}");
            let mut slice = buf.as_slice();
            assert_eq!(prost::encoding::decode_varint(&mut slice).unwrap(), v);
        }
    }

    /// `KeyValue` as field 1 of a wrapper, so the bytes decode as a repeated attribute list.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Attributes {
        #[prost(message, repeated, tag = "1")]
        list: Vec<KeyValue>,
    }

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue { value: Some(value) }),
            ..KeyValue::default()
        }
    }

    #[test]
    fn attributes_decode_as_the_generated_types_and_match_their_bytes() {
        let long = "x".repeat(300);
        let mut buf = Vec::new();
        put_text_attribute(&mut buf, 1, "hw.id", "GPU-1234");
        put_text_attribute(&mut buf, 1, "", "");
        put_text_attribute(&mut buf, 1, "long", &long);
        put_int_attribute(&mut buf, 1, "gpulse.gpu.index", 7);
        put_int_attribute(&mut buf, 1, "neg", -1);
        let expected = Attributes {
            list: vec![
                kv("hw.id", any_value::Value::StringValue("GPU-1234".into())),
                kv("", any_value::Value::StringValue(String::new())),
                kv("long", any_value::Value::StringValue(long.clone())),
                kv("gpulse.gpu.index", any_value::Value::IntValue(7)),
                kv("neg", any_value::Value::IntValue(-1)),
            ],
        };
        assert_eq!(Attributes::decode(buf.as_slice()).unwrap(), expected);
        // prost leaves empty strings out; everything else is the same bytes.
        let mut without_empty = Vec::new();
        put_text_attribute(&mut without_empty, 1, "hw.id", "GPU-1234");
        let one = Attributes {
            list: vec![expected.list[0].clone()],
        };
        assert_eq!(without_empty, one.encode_to_vec());
    }

    #[test]
    fn a_nested_message_gets_its_length_whatever_its_size() {
        for size in [0, 1, 127, 128, 300, 16_383, 16_384, 70_000] {
            let mut buf = vec![0xAA];
            put_message(&mut buf, 3, |b| b.extend(std::iter::repeat_n(7u8, size)));
            let mut expected = vec![0xAA];
            put_bytes(&mut expected, 3, &vec![7u8; size]);
            assert_eq!(buf, expected, "{size}");
        }
    }
}
