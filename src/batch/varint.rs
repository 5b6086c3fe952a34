//! Kafka's variable-length integers: zigzag-encoded, 7 bits a byte, least significant
//! group first (protobuf's `sint32`/`sint64`). Reads are bounded (at most 5 bytes for a
//! varint, 10 for a varlong) and refuse values that do not fit, so no input can make a
//! reader loop or overflow.

use bytes::BufMut;

/// Why a varint could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VarintError {
    Truncated,
    TooLong,
}

/// Reads an unsigned LEB128 value of at most `bits` bits from the front of `buf`, advancing it.
fn read_unsigned(buf: &mut &[u8], bits: u32) -> Result<u64, VarintError> {
    let max_bytes = bits.div_ceil(7) as usize;
    let mut value = 0u64;
    for i in 0..max_bytes {
        let (&byte, rest) = buf.split_first().ok_or(VarintError::Truncated)?;
        *buf = rest;
        let group = u64::from(byte & 0x7f);
        let shift = 7 * i as u32;
        // The last byte may only carry the bits that are left.
        if shift + 7 > bits && group >> (bits - shift) != 0 {
            return Err(VarintError::TooLong);
        }
        value |= group << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(VarintError::TooLong)
}

pub(crate) fn read_varint(buf: &mut &[u8]) -> Result<i32, VarintError> {
    let v = read_unsigned(buf, 32)? as u32;
    Ok(((v >> 1) as i32) ^ -((v & 1) as i32))
}

pub(crate) fn read_varlong(buf: &mut &[u8]) -> Result<i64, VarintError> {
    let v = read_unsigned(buf, 64)?;
    Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
}

fn put_unsigned(buf: &mut impl BufMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

pub(crate) fn put_varint(buf: &mut impl BufMut, v: i32) {
    put_unsigned(buf, u64::from(((v << 1) ^ (v >> 31)) as u32));
}

pub(crate) fn put_varlong(buf: &mut impl BufMut, v: i64) {
    put_unsigned(buf, ((v << 1) ^ (v >> 63)) as u64);
}

/// Bytes `put_varint` writes for `v`.
pub(crate) fn varint_len(v: i32) -> usize {
    unsigned_len(u64::from(((v << 1) ^ (v >> 31)) as u32))
}

/// Bytes `put_varlong` writes for `v`.
pub(crate) fn varlong_len(v: i64) -> usize {
    unsigned_len(((v << 1) ^ (v >> 63)) as u64)
}

fn unsigned_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros()).div_ceil(7) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings() {
        // From the Kafka protocol guide's zigzag examples.
        let cases: [(i32, &[u8]); 5] = [(0, &[0]), (-1, &[1]), (1, &[2]), (-64, &[0x7f]), (64, &[0x80, 1])];
        for (v, bytes) in cases {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            assert_eq!(buf, bytes, "{v}");
            assert_eq!(read_varint(&mut &bytes[..]), Ok(v));
        }
    }

    #[test]
    fn overlong_and_truncated_are_refused() {
        assert_eq!(read_varint(&mut &[0x80u8, 0x80, 0x80, 0x80, 0x80, 0x01][..]), Err(VarintError::TooLong));
        // A fifth byte may carry 4 bits only.
        assert_eq!(read_varint(&mut &[0xffu8, 0xff, 0xff, 0xff, 0x1f][..]), Err(VarintError::TooLong));
        assert_eq!(read_varint(&mut &[0xffu8, 0xff, 0xff, 0xff, 0x0f][..]), Ok(i32::MIN));
        assert_eq!(read_varlong(&mut &[0x80u8; 10][..]), Err(VarintError::TooLong));
        assert_eq!(read_varint(&mut &[0x80u8][..]), Err(VarintError::Truncated));
        assert_eq!(read_varint(&mut &[][..]), Err(VarintError::Truncated));
    }

    proptest! {
        #[test]
        fn round_trips(a: i32, b: i64) {
            let mut buf = Vec::new();
            put_varint(&mut buf, a);
            prop_assert_eq!(buf.len(), varint_len(a));
            put_varlong(&mut buf, b);
            prop_assert_eq!(buf.len(), varint_len(a) + varlong_len(b));
            let mut r = &buf[..];
            prop_assert_eq!(read_varint(&mut r), Ok(a));
            prop_assert_eq!(read_varlong(&mut r), Ok(b));
            prop_assert!(r.is_empty());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..12)) {
            let _ = read_varint(&mut &bytes[..]);
            let _ = read_varlong(&mut &bytes[..]);
        }
    }
}
