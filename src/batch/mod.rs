//! Kafka RecordBatch v2 for keel: the payload of a data entry, byte for byte.
//!
//! A producer (keel's client, or a Kafka client through the Kafka front end) sends
//! batches; the leader runs [`check`] on each, [`stamp`]s its baseOffset and
//! partitionLeaderEpoch (both outside the CRC, so the client's CRC stays valid) and
//! proposes the bytes; consumers get them back unchanged and read them with
//! [`BatchReader`]. [`BatchBuilder`] is how keel's client writes a batch, and [`split`]
//! cuts a Produce request's `records` field into its batches.
//!
//! The codec is keel's own, not kafka-protocol's `RecordBatchEncoder/Decoder` (0.18),
//! which is kept as a dev-dependency to cross-check this one. Measured and read
//! (`cargo test --release --test batch_codec -- --ignored --nocapture --test-threads=1`,
//! 2 shared cores, so the figures vary by ~2x from run to run):
//! - its decoder trusts counts from the wire: `Vec::reserve(recordsCount)` and
//!   `IndexMap::with_capacity(headerCount)` before reading a record, so a 61-byte batch
//!   that claims 2^31 - 1 records makes it ask for 377,957,121,872 bytes and the
//!   process aborts; its decompressors inflate without a bound;
//! - records carry headers in an `IndexMap`, so a header name that repeats (Kafka allows
//!   it: headers are a list) keeps only its last value, on both encode and decode;
//! - speed is no reason either way: 1000 records of ~1 KiB, MB/s of uncompressed batch,
//!   encode 3100-4900 here against 4700-8600 there; reading every record 2600-4200
//!   against 1500-3900, and `check`, which walks without building records, 12500-13900.
//!   With lz4, encoding here is 5-10x faster only because kafka-protocol compresses at
//!   level 4 (high compression).

mod builder;
mod compression;
mod header;
mod reader;
mod record;
mod varint;

use bytes::Bytes;

pub use builder::BatchBuilder;
pub use compression::Compression;
pub use header::{BatchHeader, HEADER_LEN, LENGTH_OVERHEAD, MAGIC, index_timestamp, stamp, stamp_producer};
pub use reader::{BatchReader, ReadRecord, first_offset_at_or_after, first_record_at_or_after};
pub use record::Record;

/// How a batch's timestamps are meant (attribute bit 3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimestampType {
    /// Each record carries the time its producer gave it: baseTimestamp + its delta.
    #[default]
    CreateTime,
    /// Every record's time is the batch's maxTimestamp, set when it was appended.
    LogAppendTime,
}

/// The limits a leader applies to an incoming batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest batch, header included.
    pub batch_bytes_max: usize,
    /// Largest record of an uncompressed batch, its length field included; the largest
    /// compressed batch (see [`check`]).
    pub record_bytes_max: usize,
}

impl Default for Limits {
    /// Kafka's defaults: `message.max.bytes` is 1 MiB (plus a header), and a batch is one message.
    fn default() -> Limits {
        Limits { batch_bytes_max: 1 << 20, record_bytes_max: 1 << 20 }
    }
}

/// What a broker needs from a checked batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchInfo {
    /// Records in the batch; the batch takes this many offsets.
    pub record_count: u32,
    /// Always `record_count - 1` in a checked batch.
    pub last_offset_delta: u32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    /// -1 when the producer is not idempotent.
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub compression: Compression,
    pub timestamp_type: TimestampType,
}

/// Why a batch was refused, worded for the user who sent it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("record timestamp {timestamp} is invalid: a timestamp is -1 (none) or milliseconds since 1970")]
    InvalidTimestamp { timestamp: i64 },
    #[error("the batch is {len} bytes, shorter than the {HEADER_LEN}-byte RecordBatch header")]
    ShorterThanHeader { len: usize },
    #[error(
        "the batch has magic byte {magic}: keel accepts only RecordBatch v2 (magic 2, Kafka >= 0.11); \
         use a client or message format that writes v2"
    )]
    BadMagic { magic: i8 },
    #[error(
        "batchLength says the batch is {declared} bytes but {actual} were given: exactly one whole batch \
         is expected"
    )]
    LengthMismatch { declared: i64, actual: usize },
    #[error("the batch is {}, over the {} limit (batch_bytes_max)", size(*len), size(*max))]
    BatchTooLarge { len: usize, max: usize },
    #[error(
        "CRC mismatch: the batch was damaged in transit (CRC-32C stored {stored:#010x}, computed {computed:#010x})"
    )]
    BadCrc { stored: u32, computed: u32 },
    #[error("attribute bits {bits:#06x} are not defined by RecordBatch v2")]
    UnknownAttributes { bits: i16 },
    #[error("the batch is transactional: keel has no transactions; produce without a transactional.id")]
    Transactional,
    #[error("the batch is a control batch (a transaction marker): keel has no transactions")]
    Control,
    #[error("the batch has the delete-horizon bit, which only log compaction sets, never a producer")]
    DeleteHorizon,
    #[error("compression codec {codec} is unknown (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd)")]
    UnknownCompression { codec: u8 },
    #[error("the batch holds no records (recordsCount = {records_count}): a batch needs at least one")]
    NoRecords { records_count: i32 },
    #[error(
        "recordsCount {records_count} does not match lastOffsetDelta {last_offset_delta}: keel's offsets \
         are dense, so lastOffsetDelta must be recordsCount - 1"
    )]
    CountMismatch { records_count: i32, last_offset_delta: i32 },
    #[error("record {index} is {}, over the {} limit (record_bytes_max)", size(*len), size(*max))]
    RecordTooLarge { index: usize, len: usize, max: usize },
    #[error(
        "the {compression} batch is {}, over the {} limit (record_bytes_max): a compressed batch counts \
         as one record, as in Kafka's max.message.bytes",
        size(*len), size(*max)
    )]
    CompressedTooLarge { compression: Compression, len: usize, max: usize },
    #[error("record {index} is malformed: {what}")]
    Malformed { index: usize, what: &'static str },
    #[error("record {index} has offset delta {found}, but offsets in a batch must run 0, 1, 2, ...")]
    OffsetDelta { index: usize, found: i32 },
    #[error("recordsCount says {declared} records, but the records end after {found}")]
    MissingRecords { declared: i32, found: usize },
    #[error("the batch has {extra} bytes after its last record (recordsCount = {declared})")]
    TrailingBytes { declared: i32, extra: usize },
    #[error("record {index}'s timestamp overflows (baseTimestamp {base} + delta {delta})")]
    TimestampOverflow { index: usize, base: i64, delta: i64 },
    #[error("maxTimestamp is {header}, but the largest record timestamp is {records}")]
    MaxTimestamp { header: i64, records: i64 },
    #[error("the {compression} records cannot be decompressed: {reason}")]
    Damaged { compression: Compression, reason: String },
    #[error("the {compression} records inflate to more than {} (inflated_bytes_max)", size(*max))]
    InflatedTooLarge { compression: Compression, max: usize },
    #[error(
        "the records field ends inside a batch at byte {at}: {needed} bytes needed, {available} left \
         (a truncated request)"
    )]
    Truncated { at: usize, needed: usize, available: usize },
}

impl BatchError {
    /// Whether the batch was refused for its size (it is well formed).
    pub fn is_too_large(&self) -> bool {
        matches!(
            self,
            BatchError::BatchTooLarge { .. }
                | BatchError::RecordTooLarge { .. }
                | BatchError::CompressedTooLarge { .. }
                | BatchError::InflatedTooLarge { .. }
        )
    }
}

/// `n` bytes for a person: `2 MiB` when exact, else `2.0 MiB (2097165 bytes)`.
fn size(n: usize) -> String {
    let units = [(30, "GiB"), (20, "MiB"), (10, "KiB")];
    match units.into_iter().find(|&(shift, _)| n >> shift > 0) {
        Some((shift, unit)) if n.is_multiple_of(1 << shift) => format!("{} {unit}", n >> shift),
        Some((shift, unit)) => format!("{:.1} {unit} ({n} bytes)", n as f64 / (1u64 << shift) as f64),
        None => format!("{n} bytes"),
    }
}

/// Checks that `bytes` are exactly one RecordBatch v2 that keel can store, and returns
/// what the broker needs from it. Never panics, whatever the bytes.
///
/// An uncompressed batch is walked record by record (every length bounded by the batch,
/// offsets dense, counts and maxTimestamp consistent, each record within
/// `record_bytes_max`). A compressed batch is not inflated here: its records are opaque
/// until a consumer reads them, so the bound is the batch itself, which must be within
/// `record_bytes_max` as a whole (Kafka's max.message.bytes applies to the compressed
/// batch the same way). Inflating every batch on the leader would put a decompression
/// on the path of every produce, and a crafted batch's inflated size on the leader's
/// memory; readers inflate with a bound of their own ([`BatchReader`]).
pub fn check(bytes: &[u8], limits: &Limits) -> Result<BatchInfo, BatchError> {
    let h = framed(bytes, limits.batch_bytes_max)?;
    let info = check_header(&h)?;
    let records = &bytes[HEADER_LEN..];
    if info.compression != Compression::None {
        if bytes.len() > limits.record_bytes_max {
            let (compression, len, max) = (info.compression, bytes.len(), limits.record_bytes_max);
            return Err(BatchError::CompressedTooLarge { compression, len, max });
        }
        return Ok(info);
    }
    let largest = walk(records, &h, |index, r| {
        if r.encoded_len > limits.record_bytes_max {
            return Err(BatchError::RecordTooLarge { index, len: r.encoded_len, max: limits.record_bytes_max });
        }
        Ok(())
    })?;
    if info.timestamp_type == TimestampType::CreateTime && largest != h.max_timestamp {
        return Err(BatchError::MaxTimestamp { header: h.max_timestamp, records: largest });
    }
    Ok(info)
}

/// The header of a batch that is exactly `bytes`, a RecordBatch v2 of at most `max` bytes
/// whose CRC-32C matches: what both the leader and a reader require.
fn framed(bytes: &[u8], max: usize) -> Result<BatchHeader, BatchError> {
    let h = BatchHeader::parse(bytes)?;
    if h.magic != MAGIC {
        return Err(BatchError::BadMagic { magic: h.magic });
    }
    if h.total_len() != Some(bytes.len()) {
        let declared = i64::from(h.batch_length) + LENGTH_OVERHEAD as i64;
        return Err(BatchError::LengthMismatch { declared, actual: bytes.len() });
    }
    if bytes.len() > max {
        return Err(BatchError::BatchTooLarge { len: bytes.len(), max });
    }
    let computed = crc32c::crc32c(&bytes[header::CRC_FROM..]);
    if computed != h.crc {
        return Err(BatchError::BadCrc { stored: h.crc, computed });
    }
    Ok(h)
}

/// The header rules of `check` that need no records: attributes and counts.
fn check_header(h: &BatchHeader) -> Result<BatchInfo, BatchError> {
    if h.unknown_bits() != 0 {
        return Err(BatchError::UnknownAttributes { bits: h.unknown_bits() });
    }
    if h.is_control() {
        return Err(BatchError::Control);
    }
    if h.is_transactional() {
        return Err(BatchError::Transactional);
    }
    if h.has_delete_horizon() {
        return Err(BatchError::DeleteHorizon);
    }
    let compression = h.compression()?;
    if h.records_count < 1 {
        return Err(BatchError::NoRecords { records_count: h.records_count });
    }
    if h.last_offset_delta != h.records_count - 1 {
        return Err(BatchError::CountMismatch {
            records_count: h.records_count,
            last_offset_delta: h.last_offset_delta,
        });
    }
    Ok(BatchInfo {
        record_count: h.records_count as u32,
        last_offset_delta: h.last_offset_delta as u32,
        base_timestamp: h.base_timestamp,
        max_timestamp: h.max_timestamp,
        producer_id: h.producer_id,
        producer_epoch: h.producer_epoch,
        base_sequence: h.base_sequence,
        compression,
        timestamp_type: h.timestamp_type(),
    })
}

/// Walks uncompressed `records`: exactly `recordsCount` well-formed records with offset
/// deltas 0, 1, 2, ..., timestamps that do not overflow, and nothing after them; `each`
/// sees every record. Returns the largest record timestamp.
fn walk<'a>(
    mut records: &'a [u8],
    h: &BatchHeader,
    mut each: impl FnMut(usize, &record::RawRecord<'a>) -> Result<(), BatchError>,
) -> Result<i64, BatchError> {
    let declared = h.records_count;
    let mut largest = i64::MIN;
    for index in 0..declared.max(0) as usize {
        if records.is_empty() {
            return Err(BatchError::MissingRecords { declared, found: index });
        }
        let r = record::parse(&mut records).map_err(|what| BatchError::Malformed { index, what })?;
        each(index, &r)?;
        if usize::try_from(r.offset_delta) != Ok(index) {
            return Err(BatchError::OffsetDelta { index, found: r.offset_delta });
        }
        largest = largest.max(record_timestamp(h, index, r.timestamp_delta)?);
    }
    if !records.is_empty() {
        return Err(BatchError::TrailingBytes { declared, extra: records.len() });
    }
    Ok(largest)
}

/// baseTimestamp + delta, refusing an overflow.
fn record_timestamp(h: &BatchHeader, index: usize, delta: i64) -> Result<i64, BatchError> {
    let base = h.base_timestamp;
    base.checked_add(delta).ok_or(BatchError::TimestampOverflow { index, base, delta })
}

/// Cuts a Produce request's `records` field into its batches: zero-copy views, one per
/// batch, each as long as its `batchLength` says (check each with [`check`]). Yields an
/// error, then stops, when the bytes end inside a batch.
pub fn split(records: Bytes) -> Split {
    Split { rest: records, at: 0, failed: false }
}

/// The iterator of [`split`].
pub struct Split {
    rest: Bytes,
    at: usize,
    failed: bool,
}

impl Iterator for Split {
    type Item = Result<Bytes, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let available = self.rest.len();
        let needed = match self.rest.get(header::BATCH_LENGTH_AT..LENGTH_OVERHEAD) {
            None => LENGTH_OVERHEAD,
            Some(b) => {
                let len = i32::from_be_bytes(b.try_into().expect("four bytes"));
                // A negative length cannot frame anything: report it as a batch of one more
                // byte than there is, which `check` would refuse anyway.
                usize::try_from(len).map_or(available + 1, |n| n + LENGTH_OVERHEAD)
            }
        };
        if needed > available {
            self.failed = true;
            return Some(Err(BatchError::Truncated { at: self.at, needed, available }));
        }
        self.at += needed;
        Some(Ok(self.rest.split_to(needed)))
    }
}
