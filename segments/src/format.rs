//! The bytes of every file besides entries: segment header, index file, log-start file,
//! sync-mark file.
//!
//! Pure codecs, no I/O. Every structure carries a magic, a version and a CRC-32
//! (crc32fast) over the bytes before it; all integers are little-endian. FORMAT.md
//! draws each layout; the offsets below are built from the previous one.

use std::fmt;

/// Version of the segment, index and log-start layouts (entries carry their own).
pub const FORMAT_VERSION: u32 = 2;

const MAGIC_LEN: usize = 8;
pub(crate) const SEGMENT_MAGIC: &[u8; MAGIC_LEN] = b"KEELSEG\0";
pub(crate) const INDEX_MAGIC: &[u8; MAGIC_LEN] = b"KEELIDX\0";
pub(crate) const START_MAGIC: &[u8; MAGIC_LEN] = b"KEELSTRT";
pub(crate) const MARK_MAGIC: &[u8; MAGIC_LEN] = b"KEELSYNC";

// Segment header (64 bytes), then entries back to back.
const SEG_MAGIC_AT: usize = 0;
const SEG_VERSION_AT: usize = SEG_MAGIC_AT + MAGIC_LEN;
const SEG_FLAGS_AT: usize = SEG_VERSION_AT + 4;
const SEG_ID_AT: usize = SEG_FLAGS_AT + 4;
const SEG_FIRST_INDEX_AT: usize = SEG_ID_AT + 8;
const SEG_BASE_OFFSET_AT: usize = SEG_FIRST_INDEX_AT + 8;
const SEG_PREV_TERM_AT: usize = SEG_BASE_OFFSET_AT + 8;
const SEG_RESERVED_AT: usize = SEG_PREV_TERM_AT + 8;
const SEG_CRC_AT: usize = SEG_RESERVED_AT + 12;
/// Bytes before the first entry of a segment file.
pub const SEGMENT_HEADER_LEN: usize = SEG_CRC_AT + 4;

// Index file header (40 bytes), then fixed-size records.
const IDX_MAGIC_AT: usize = 0;
const IDX_VERSION_AT: usize = IDX_MAGIC_AT + MAGIC_LEN;
const IDX_FLAGS_AT: usize = IDX_VERSION_AT + 4;
const IDX_ID_AT: usize = IDX_FLAGS_AT + 4;
const IDX_FIRST_INDEX_AT: usize = IDX_ID_AT + 8;
const IDX_RESERVED_AT: usize = IDX_FIRST_INDEX_AT + 8;
const IDX_CRC_AT: usize = IDX_RESERVED_AT + 4;
pub(crate) const INDEX_HEADER_LEN: usize = IDX_CRC_AT + 4;

// Index record (48 bytes).
const REC_INDEX_AT: usize = 0;
const REC_TERM_AT: usize = REC_INDEX_AT + 8;
const REC_OFFSET_AT: usize = REC_TERM_AT + 8;
const REC_POSITION_AT: usize = REC_OFFSET_AT + 8;
const REC_MAX_TIMESTAMP_AT: usize = REC_POSITION_AT + 8;
const REC_KIND_AT: usize = REC_MAX_TIMESTAMP_AT + 8;
const REC_CRC_AT: usize = REC_KIND_AT + 4;
pub(crate) const INDEX_RECORD_LEN: usize = REC_CRC_AT + 4;
const KIND_CHECKPOINT: u32 = 1;
const KIND_SEAL: u32 = 2;
/// Index header flag: the records' max timestamps come from the log's timestamp function.
const IDX_FLAG_TIMESTAMPS: u32 = 1;

// Log-start file (48 bytes).
const START_MAGIC_AT: usize = 0;
const START_VERSION_AT: usize = START_MAGIC_AT + MAGIC_LEN;
const START_FLAGS_AT: usize = START_VERSION_AT + 4;
const START_INDEX_AT: usize = START_FLAGS_AT + 4;
const START_PREV_TERM_AT: usize = START_INDEX_AT + 8;
const START_OFFSET_AT: usize = START_PREV_TERM_AT + 8;
const START_RESERVED_AT: usize = START_OFFSET_AT + 8;
const START_CRC_AT: usize = START_RESERVED_AT + 4;
pub(crate) const LOG_START_LEN: usize = START_CRC_AT + 4;

// Sync-mark record (48 bytes), one per slot of the sync-mark file.
const MARK_MAGIC_AT: usize = 0;
const MARK_VERSION_AT: usize = MARK_MAGIC_AT + MAGIC_LEN;
const MARK_FLAGS_AT: usize = MARK_VERSION_AT + 4;
const MARK_SEQ_AT: usize = MARK_FLAGS_AT + 4;
const MARK_INDEX_AT: usize = MARK_SEQ_AT + 8;
const MARK_TERM_AT: usize = MARK_INDEX_AT + 8;
const MARK_RESERVED_AT: usize = MARK_TERM_AT + 8;
const MARK_CRC_AT: usize = MARK_RESERVED_AT + 4;
pub(crate) const MARK_RECORD_LEN: usize = MARK_CRC_AT + 4;

/// Why a segment header, index header or log-start file was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("file is {len} bytes, shorter than its {needed}-byte header")]
    Truncated { len: usize, needed: usize },
    #[error("wrong magic bytes (not a keel file of this kind)")]
    BadMagic,
    #[error("unknown format version {version} (this build reads version {FORMAT_VERSION})")]
    BadVersion { version: u32 },
    #[error("header CRC mismatch")]
    BadCrc,
    #[error("header names first index {found}, but the file name says {expected}")]
    WrongFirstIndex { expected: u64, found: u64 },
}

/// Where a log begins: entry `index` is its first, `prev_term` is the term of
/// `index - 1`, and `offset` is the offset of its first record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogStart {
    pub index: u64,
    pub prev_term: u64,
    pub offset: u64,
}

impl Default for LogStart {
    fn default() -> Self {
        LogStart { index: 1, prev_term: 0, offset: 0 }
    }
}

impl fmt::Display for LogStart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "index {} (previous term {}), offset {}", self.index, self.prev_term, self.offset)
    }
}

/// The fixed header at the start of every segment file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    /// Random per file: binds the index file to this very data file, so an index
    /// left over from a replaced segment of the same name is never trusted.
    pub id: u64,
    pub first_index: u64,
    /// Offset of the segment's first record.
    pub base_offset: u64,
    /// Term of entry `first_index - 1`.
    pub prev_term: u64,
}

impl SegmentHeader {
    pub fn start(&self) -> LogStart {
        LogStart { index: self.first_index, prev_term: self.prev_term, offset: self.base_offset }
    }

    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[SEG_MAGIC_AT..SEG_VERSION_AT].copy_from_slice(SEGMENT_MAGIC);
        put_u32(&mut b, SEG_VERSION_AT, FORMAT_VERSION);
        put_u64(&mut b, SEG_ID_AT, self.id);
        put_u64(&mut b, SEG_FIRST_INDEX_AT, self.first_index);
        put_u64(&mut b, SEG_BASE_OFFSET_AT, self.base_offset);
        put_u64(&mut b, SEG_PREV_TERM_AT, self.prev_term);
        seal_crc(&mut b);
        b
    }

    pub fn decode(buf: &[u8]) -> Result<SegmentHeader, HeaderError> {
        let b = check_framed(buf, SEGMENT_HEADER_LEN, SEGMENT_MAGIC)?;
        Ok(SegmentHeader {
            id: get_u64(b, SEG_ID_AT),
            first_index: get_u64(b, SEG_FIRST_INDEX_AT),
            base_offset: get_u64(b, SEG_BASE_OFFSET_AT),
            prev_term: get_u64(b, SEG_PREV_TERM_AT),
        })
    }
}

/// The header of an index file: which data file its records describe, and whether
/// their timestamps are real (`timestamps`: the log has a timestamp function).
pub(crate) fn encode_index_header(segment: &SegmentHeader, timestamps: bool) -> [u8; INDEX_HEADER_LEN] {
    let mut b = [0u8; INDEX_HEADER_LEN];
    b[IDX_MAGIC_AT..IDX_VERSION_AT].copy_from_slice(INDEX_MAGIC);
    put_u32(&mut b, IDX_VERSION_AT, FORMAT_VERSION);
    put_u32(&mut b, IDX_FLAGS_AT, if timestamps { IDX_FLAG_TIMESTAMPS } else { 0 });
    put_u64(&mut b, IDX_ID_AT, segment.id);
    put_u64(&mut b, IDX_FIRST_INDEX_AT, segment.first_index);
    seal_crc(&mut b);
    b
}

/// Returns whether `buf` starts with a valid index header for `segment`, written with
/// (`timestamps`) or without a timestamp function, as this log is opened.
pub(crate) fn index_header_matches(buf: &[u8], segment: &SegmentHeader, timestamps: bool) -> bool {
    check_framed(buf, INDEX_HEADER_LEN, INDEX_MAGIC).is_ok_and(|b| {
        get_u64(b, IDX_ID_AT) == segment.id
            && get_u64(b, IDX_FIRST_INDEX_AT) == segment.first_index
            && get_u32(b, IDX_FLAGS_AT) == if timestamps { IDX_FLAG_TIMESTAMPS } else { 0 }
    })
}

/// A point of the sparse index: entry `index` (of `term`, first record `base_offset`)
/// starts at byte `position` of the segment file, and the largest timestamp of the
/// segment's entries before it is `max_timestamp` (0 when none has one). A seal record
/// reuses the fields for the end of the segment: last index, last term, next offset,
/// end position, and the largest timestamp of the whole segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub index: u64,
    pub term: u64,
    pub base_offset: u64,
    pub position: u64,
    pub max_timestamp: u64,
}

/// One decoded index record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Record {
    Checkpoint(Checkpoint),
    /// The segment is durable through this point: no recovery scan needed.
    Seal(Checkpoint),
}

impl Record {
    pub fn encode(&self, segment_id: u64) -> [u8; INDEX_RECORD_LEN] {
        let (kind, c) = match self {
            Record::Checkpoint(c) => (KIND_CHECKPOINT, c),
            Record::Seal(c) => (KIND_SEAL, c),
        };
        let mut b = [0u8; INDEX_RECORD_LEN];
        put_u64(&mut b, REC_INDEX_AT, c.index);
        put_u64(&mut b, REC_TERM_AT, c.term);
        put_u64(&mut b, REC_OFFSET_AT, c.base_offset);
        put_u64(&mut b, REC_POSITION_AT, c.position);
        put_u64(&mut b, REC_MAX_TIMESTAMP_AT, c.max_timestamp);
        put_u32(&mut b, REC_KIND_AT, kind);
        let crc = record_crc(&b, segment_id);
        put_u32(&mut b, REC_CRC_AT, crc);
        b
    }

    /// Decodes a record; `None` for anything invalid (torn, zero-filled, foreign).
    pub fn decode(buf: &[u8], segment_id: u64) -> Option<Record> {
        let b = buf.get(..INDEX_RECORD_LEN)?;
        if get_u32(b, REC_CRC_AT) != record_crc(b, segment_id) {
            return None;
        }
        let c = record_fields(b);
        match get_u32(b, REC_KIND_AT) {
            KIND_CHECKPOINT => Some(Record::Checkpoint(c)),
            KIND_SEAL => Some(Record::Seal(c)),
            _ => None,
        }
    }
}

/// Reads only the fields of a checkpoint record (validated earlier, when the index was loaded).
pub(crate) fn record_fields(b: &[u8]) -> Checkpoint {
    Checkpoint {
        index: get_u64(b, REC_INDEX_AT),
        term: get_u64(b, REC_TERM_AT),
        base_offset: get_u64(b, REC_OFFSET_AT),
        position: get_u64(b, REC_POSITION_AT),
        max_timestamp: get_u64(b, REC_MAX_TIMESTAMP_AT),
    }
}

/// The record CRC also covers the segment id, so a record from another file never validates.
fn record_crc(b: &[u8], segment_id: u64) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&segment_id.to_le_bytes());
    h.update(&b[..REC_CRC_AT]);
    h.finalize()
}

pub(crate) fn encode_log_start(s: &LogStart) -> [u8; LOG_START_LEN] {
    let mut b = [0u8; LOG_START_LEN];
    b[START_MAGIC_AT..START_VERSION_AT].copy_from_slice(START_MAGIC);
    put_u32(&mut b, START_VERSION_AT, FORMAT_VERSION);
    put_u64(&mut b, START_INDEX_AT, s.index);
    put_u64(&mut b, START_PREV_TERM_AT, s.prev_term);
    put_u64(&mut b, START_OFFSET_AT, s.offset);
    seal_crc(&mut b);
    b
}

pub(crate) fn decode_log_start(buf: &[u8]) -> Result<LogStart, HeaderError> {
    let b = check_framed(buf, LOG_START_LEN, START_MAGIC)?;
    Ok(LogStart {
        index: get_u64(b, START_INDEX_AT),
        prev_term: get_u64(b, START_PREV_TERM_AT),
        offset: get_u64(b, START_OFFSET_AT),
    })
}

/// The highest entry a finished sync made durable (FORMAT.md, "Sync-mark file"): a
/// recovered log that ends before it lost synced entries to damage, not to a crash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct SyncMark {
    pub index: u64,
    /// The term of entry `index` when the mark was written.
    pub term: u64,
}

/// One slot of the sync-mark file: the mark and the sequence number that orders slots.
pub(crate) fn encode_mark(seq: u64, mark: SyncMark) -> [u8; MARK_RECORD_LEN] {
    let mut b = [0u8; MARK_RECORD_LEN];
    b[MARK_MAGIC_AT..MARK_VERSION_AT].copy_from_slice(MARK_MAGIC);
    put_u32(&mut b, MARK_VERSION_AT, FORMAT_VERSION);
    put_u64(&mut b, MARK_SEQ_AT, seq);
    put_u64(&mut b, MARK_INDEX_AT, mark.index);
    put_u64(&mut b, MARK_TERM_AT, mark.term);
    seal_crc(&mut b);
    b
}

/// A slot's (sequence number, mark), or why it is not valid (torn, zeros, another file).
pub(crate) fn decode_mark(buf: &[u8]) -> Result<(u64, SyncMark), HeaderError> {
    let b = check_framed(buf, MARK_RECORD_LEN, MARK_MAGIC)?;
    let mark = SyncMark { index: get_u64(b, MARK_INDEX_AT), term: get_u64(b, MARK_TERM_AT) };
    Ok((get_u64(b, MARK_SEQ_AT), mark))
}

/// Checks length, magic, version and the trailing CRC of a fixed-size header.
fn check_framed<'a>(buf: &'a [u8], len: usize, magic: &[u8; MAGIC_LEN]) -> Result<&'a [u8], HeaderError> {
    let b = buf.get(..len).ok_or(HeaderError::Truncated { len: buf.len(), needed: len })?;
    if &b[..MAGIC_LEN] != magic {
        return Err(HeaderError::BadMagic);
    }
    if get_u32(b, len - 4) != crc32fast::hash(&b[..len - 4]) {
        return Err(HeaderError::BadCrc);
    }
    let version = get_u32(b, MAGIC_LEN);
    if version != FORMAT_VERSION {
        return Err(HeaderError::BadVersion { version });
    }
    Ok(b)
}

/// Writes the CRC of everything before the last four bytes into them.
fn seal_crc(b: &mut [u8]) {
    let at = b.len() - 4;
    let crc = crc32fast::hash(&b[..at]);
    put_u32(b, at, crc);
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn get_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header() -> SegmentHeader {
        SegmentHeader { id: 0xfeed, first_index: 42, base_offset: 1000, prev_term: 7 }
    }

    #[test]
    fn layouts_have_the_documented_sizes() {
        assert_eq!(SEGMENT_HEADER_LEN, 64);
        assert_eq!(INDEX_HEADER_LEN, 40);
        assert_eq!(INDEX_RECORD_LEN, 48);
        assert_eq!(LOG_START_LEN, 48);
        assert_eq!(MARK_RECORD_LEN, 48);
    }

    #[test]
    fn headers_round_trip_and_every_flip_is_caught() {
        let h = header();
        let bytes = h.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(h));
        for i in 0..bytes.len() * 8 {
            let mut b = bytes;
            b[i / 8] ^= 1 << (i % 8);
            assert!(SegmentHeader::decode(&b).is_err(), "bit {i}");
        }
        let s = LogStart { index: 9, prev_term: 3, offset: 77 };
        assert_eq!(decode_log_start(&encode_log_start(&s)), Ok(s));
        let m = SyncMark { index: 12, term: 4 };
        let bytes = encode_mark(3, m);
        assert_eq!(decode_mark(&bytes), Ok((3, m)));
        for i in 0..bytes.len() * 8 {
            let mut b = bytes;
            b[i / 8] ^= 1 << (i % 8);
            assert!(decode_mark(&b).is_err(), "bit {i}");
        }
        assert!(index_header_matches(&encode_index_header(&h, true), &h, true));
        assert!(!index_header_matches(&encode_index_header(&h, true), &SegmentHeader { id: 1, ..h }, true));
        // An index written without timestamps is not one with them, and the other way round.
        assert!(!index_header_matches(&encode_index_header(&h, false), &h, true));
        assert!(!index_header_matches(&encode_index_header(&h, true), &h, false));
    }

    #[test]
    fn records_are_bound_to_their_segment() {
        let c = Checkpoint { index: 5, term: 2, base_offset: 10, position: 64, max_timestamp: 1_700_000_000_000 };
        let b = Record::Seal(c).encode(11);
        assert_eq!(Record::decode(&b, 11), Some(Record::Seal(c)));
        assert_eq!(Record::decode(&b, 12), None);
        assert_eq!(Record::decode(&[0u8; INDEX_RECORD_LEN], 11), None);
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = SegmentHeader::decode(&bytes);
            let _ = decode_log_start(&bytes);
            let _ = decode_mark(&bytes);
            let _ = Record::decode(&bytes, 1);
            let _ = index_header_matches(&bytes, &header(), true);
        }
    }
}
