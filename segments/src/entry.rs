//! The entry codec: one Raft entry as it lies on disk and travels on the wire.
//!
//! The leader encodes an entry once (header + payload + CRC); the same bytes are
//! written to segment files, sent to followers and served to consumers. Every
//! decode checks the CRC, so corrupt bytes are an error, never data. Layout
//! (all integers little-endian), documented in FORMAT.md:
//!
//! ```text
//! offset size field
//!      0    4 crc           CRC-32 (crc32fast) of bytes 4..len
//!      4    4 len           whole entry length, header included (>= HEADER_LEN)
//!      8    1 version       ENTRY_VERSION
//!      9    1 kind          opaque to segments (keel: data, no-op, configuration)
//!     10    2 flags         reserved, 0
//!     12    4 record_count  records in this entry (0 for control entries)
//!     16    8 index         Raft index
//!     24    8 term          Raft term
//!     32    8 base_offset   offset of the entry's first record
//!     40    . payload
//! ```

use bytes::{BufMut, Bytes, BytesMut};

pub const ENTRY_VERSION: u8 = 1;

const CRC_AT: usize = 0;
const LEN_AT: usize = CRC_AT + 4;
const VERSION_AT: usize = LEN_AT + 4;
const KIND_AT: usize = VERSION_AT + 1;
const FLAGS_AT: usize = KIND_AT + 1;
const RECORD_COUNT_AT: usize = FLAGS_AT + 2;
const INDEX_AT: usize = RECORD_COUNT_AT + 4;
const TERM_AT: usize = INDEX_AT + 8;
const BASE_OFFSET_AT: usize = TERM_AT + 8;
/// Bytes before the payload.
pub const HEADER_LEN: usize = BASE_OFFSET_AT + 8;

/// The fields of an entry besides its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryMeta {
    pub index: u64,
    pub term: u64,
    pub kind: u8,
    pub base_offset: u64,
    pub record_count: u32,
}

/// Why a byte string is not a valid entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("entry truncated: {available} bytes available, at least {needed} needed")]
    Truncated { needed: usize, available: usize },
    #[error("entry length field {len} is below the {HEADER_LEN}-byte header (zero-filled or garbage bytes)")]
    BadLength { len: u32 },
    #[error("entry length {len} exceeds the limit of {max} bytes")]
    TooLarge { len: u32, max: u32 },
    #[error("unknown entry format version {version} (this build reads version {ENTRY_VERSION})")]
    BadVersion { version: u8 },
    #[error("entry CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc { stored: u32, computed: u32 },
}

/// One encoded, CRC-verified entry. Cloning is cheap (a reference count).
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    bytes: Bytes,
}

impl Entry {
    /// Encodes an entry; the one place an entry's CRC is computed.
    pub fn encode(meta: EntryMeta, payload: &[u8]) -> Entry {
        let len = HEADER_LEN + payload.len();
        let len32 = u32::try_from(len).expect("entry length fits in u32: callers bound payloads by entry_bytes_max");
        let mut buf = BytesMut::with_capacity(len);
        buf.put_u32_le(0);
        buf.put_u32_le(len32);
        buf.put_u8(ENTRY_VERSION);
        buf.put_u8(meta.kind);
        buf.put_u16_le(0);
        buf.put_u32_le(meta.record_count);
        buf.put_u64_le(meta.index);
        buf.put_u64_le(meta.term);
        buf.put_u64_le(meta.base_offset);
        buf.put_slice(payload);
        let crc = crc32fast::hash(&buf[LEN_AT..]);
        buf[CRC_AT..LEN_AT].copy_from_slice(&crc.to_le_bytes());
        Entry { bytes: buf.freeze() }
    }

    /// Decodes the entry at the start of `buf`, returning it and its length.
    /// `max_len` bounds the length field before anything is trusted.
    pub fn decode_prefix(buf: &Bytes, max_len: u32) -> Result<(Entry, usize), DecodeError> {
        let len = peek_len(buf)?;
        if len > max_len {
            return Err(DecodeError::TooLarge { len, max: max_len });
        }
        let len = len as usize;
        if buf.len() < len {
            return Err(DecodeError::Truncated { needed: len, available: buf.len() });
        }
        let version = buf[VERSION_AT];
        let stored = u32::from_le_bytes(buf[CRC_AT..LEN_AT].try_into().expect("4 bytes"));
        let computed = crc32fast::hash(&buf[LEN_AT..len]);
        if stored != computed {
            return Err(DecodeError::BadCrc { stored, computed });
        }
        // The version is checked after the CRC: a torn entry is reported as such,
        // and only an intact entry from another format version is BadVersion.
        if version != ENTRY_VERSION {
            return Err(DecodeError::BadVersion { version });
        }
        Ok((Entry { bytes: buf.slice(..len) }, len))
    }

    /// Decodes a buffer that holds exactly one entry.
    pub fn decode(buf: Bytes, max_len: u32) -> Result<Entry, DecodeError> {
        let (entry, len) = Entry::decode_prefix(&buf, max_len)?;
        if len != buf.len() {
            return Err(DecodeError::BadLength { len: buf.len() as u32 });
        }
        Ok(entry)
    }

    pub fn meta(&self) -> EntryMeta {
        EntryMeta {
            index: self.index(),
            term: self.term(),
            kind: self.kind(),
            base_offset: self.base_offset(),
            record_count: self.record_count(),
        }
    }

    pub fn index(&self) -> u64 {
        self.u64_at(INDEX_AT)
    }

    pub fn term(&self) -> u64 {
        self.u64_at(TERM_AT)
    }

    pub fn kind(&self) -> u8 {
        self.bytes[KIND_AT]
    }

    pub fn base_offset(&self) -> u64 {
        self.u64_at(BASE_OFFSET_AT)
    }

    pub fn record_count(&self) -> u32 {
        u32::from_le_bytes(self.bytes[RECORD_COUNT_AT..INDEX_AT].try_into().expect("4 bytes"))
    }

    /// The offset after this entry's last record.
    pub fn next_offset(&self) -> u64 {
        self.base_offset() + u64::from(self.record_count())
    }

    /// The payload, as a zero-copy view.
    pub fn payload(&self) -> Bytes {
        self.bytes.slice(HEADER_LEN..)
    }

    /// The whole encoded entry (header, CRC and payload): what is written and sent.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn encoded_len(&self) -> usize {
        self.bytes.len()
    }

    fn u64_at(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.bytes[at..at + 8].try_into().expect("8 bytes"))
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("index", &self.index())
            .field("term", &self.term())
            .field("kind", &self.kind())
            .field("base_offset", &self.base_offset())
            .field("record_count", &self.record_count())
            .field("payload_len", &(self.encoded_len() - HEADER_LEN))
            .finish()
    }
}

/// Reads the length field of the entry at the start of `buf` without trusting it further.
pub fn peek_len(buf: &[u8]) -> Result<u32, DecodeError> {
    if buf.len() < HEADER_LEN {
        return Err(DecodeError::Truncated { needed: HEADER_LEN, available: buf.len() });
    }
    let len = u32::from_le_bytes(buf[LEN_AT..VERSION_AT].try_into().expect("4 bytes"));
    if (len as usize) < HEADER_LEN {
        return Err(DecodeError::BadLength { len });
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn meta(index: u64) -> EntryMeta {
        EntryMeta { index, term: 3, kind: 0, base_offset: 10, record_count: 2 }
    }

    #[test]
    fn round_trip() {
        let e = Entry::encode(meta(7), b"hello");
        let back = Entry::decode(e.as_bytes().clone(), 1 << 20).unwrap();
        assert_eq!(back.meta(), meta(7));
        assert_eq!(&back.payload()[..], b"hello");
        assert_eq!(back.next_offset(), 12);
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let e = Entry::encode(meta(1), b"payload bytes");
        let bytes = e.as_bytes().to_vec();
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(Entry::decode(Bytes::from(b), 1 << 20).is_err(), "bit {i} flip went unnoticed");
        }
    }

    #[test]
    fn zero_filled_is_bad_length() {
        let zeros = Bytes::from(vec![0u8; 64]);
        assert_eq!(Entry::decode_prefix(&zeros, 1 << 20).unwrap_err(), DecodeError::BadLength { len: 0 });
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Entry::decode_prefix(&Bytes::from(bytes), 1 << 20);
        }
    }
}
