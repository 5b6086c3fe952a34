//! The 61-byte header of a Kafka RecordBatch v2 (kafka.apache.org/42/implementation/message-format),
//! the one place that knows where each field lies. All integers are big-endian.
//!
//! ```text
//! offset size field
//!      0    8 baseOffset             stamped by the leader (outside the CRC)
//!      8    4 batchLength            bytes after this field: the batch is batchLength + 12 bytes
//!     12    4 partitionLeaderEpoch   stamped by the leader (outside the CRC): the Raft term
//!     16    1 magic                  2
//!     17    4 crc                    CRC-32C of bytes 21..end
//!     21    2 attributes             bits 0-2 codec, 3 LogAppendTime, 4 transactional, 5 control,
//!                                    6 delete horizon (set by compaction only)
//!     23    4 lastOffsetDelta
//!     27    8 baseTimestamp
//!     35    8 maxTimestamp
//!     43    8 producerId
//!     51    2 producerEpoch
//!     53    4 baseSequence
//!     57    4 recordsCount
//!     61    . records (compressed as one blob when the codec is not none)
//! ```

use super::{BatchError, Compression, TimestampType};
use crate::ids::{Offset, Term};

pub(crate) const BASE_OFFSET_AT: usize = 0;
pub(crate) const BATCH_LENGTH_AT: usize = BASE_OFFSET_AT + 8;
pub(crate) const LEADER_EPOCH_AT: usize = BATCH_LENGTH_AT + 4;
pub(crate) const MAGIC_AT: usize = LEADER_EPOCH_AT + 4;
pub(crate) const CRC_AT: usize = MAGIC_AT + 1;
pub(crate) const ATTRIBUTES_AT: usize = CRC_AT + 4;
pub(crate) const LAST_OFFSET_DELTA_AT: usize = ATTRIBUTES_AT + 2;
pub(crate) const BASE_TIMESTAMP_AT: usize = LAST_OFFSET_DELTA_AT + 4;
pub(crate) const MAX_TIMESTAMP_AT: usize = BASE_TIMESTAMP_AT + 8;
pub(crate) const PRODUCER_ID_AT: usize = MAX_TIMESTAMP_AT + 8;
pub(crate) const PRODUCER_EPOCH_AT: usize = PRODUCER_ID_AT + 8;
pub(crate) const BASE_SEQUENCE_AT: usize = PRODUCER_EPOCH_AT + 2;
pub(crate) const RECORDS_COUNT_AT: usize = BASE_SEQUENCE_AT + 4;
/// Bytes before the first record.
pub const HEADER_LEN: usize = RECORDS_COUNT_AT + 4;
/// Bytes that `batchLength` does not count (baseOffset and batchLength themselves).
pub const LENGTH_OVERHEAD: usize = LEADER_EPOCH_AT;
/// The CRC covers the batch from here to its end.
pub(crate) const CRC_FROM: usize = ATTRIBUTES_AT;

/// The only RecordBatch version keel reads and writes.
pub const MAGIC: i8 = 2;

const CODEC_MASK: i16 = 0b111;
const LOG_APPEND_TIME: i16 = 1 << 3;
const TRANSACTIONAL: i16 = 1 << 4;
const CONTROL: i16 = 1 << 5;
const DELETE_HORIZON: i16 = 1 << 6;
/// Bits 7-15 have no meaning in RecordBatch v2.
const UNKNOWN_BITS: i16 = !(CODEC_MASK | LOG_APPEND_TIME | TRANSACTIONAL | CONTROL | DELETE_HORIZON);

/// Every field of a batch header, as it lies in the bytes (nothing checked but their presence).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Reads the header at the start of `bytes`; only a buffer shorter than the header is refused.
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        let Some(b) = bytes.get(..HEADER_LEN) else {
            return Err(BatchError::ShorterThanHeader { len: bytes.len() });
        };
        Ok(BatchHeader {
            base_offset: i64::from_be_bytes(field(b, BASE_OFFSET_AT)),
            batch_length: i32::from_be_bytes(field(b, BATCH_LENGTH_AT)),
            partition_leader_epoch: i32::from_be_bytes(field(b, LEADER_EPOCH_AT)),
            magic: b[MAGIC_AT] as i8,
            crc: u32::from_be_bytes(field(b, CRC_AT)),
            attributes: i16::from_be_bytes(field(b, ATTRIBUTES_AT)),
            last_offset_delta: i32::from_be_bytes(field(b, LAST_OFFSET_DELTA_AT)),
            base_timestamp: i64::from_be_bytes(field(b, BASE_TIMESTAMP_AT)),
            max_timestamp: i64::from_be_bytes(field(b, MAX_TIMESTAMP_AT)),
            producer_id: i64::from_be_bytes(field(b, PRODUCER_ID_AT)),
            producer_epoch: i16::from_be_bytes(field(b, PRODUCER_EPOCH_AT)),
            base_sequence: i32::from_be_bytes(field(b, BASE_SEQUENCE_AT)),
            records_count: i32::from_be_bytes(field(b, RECORDS_COUNT_AT)),
        })
    }

    /// The codec of the records, or the unknown number found in bits 0-2.
    pub fn compression(&self) -> Result<Compression, BatchError> {
        let codec = (self.attributes & CODEC_MASK) as u8;
        Compression::from_id(codec).ok_or(BatchError::UnknownCompression { codec })
    }

    pub fn timestamp_type(&self) -> TimestampType {
        match self.attributes & LOG_APPEND_TIME {
            0 => TimestampType::CreateTime,
            _ => TimestampType::LogAppendTime,
        }
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL != 0
    }

    pub fn has_delete_horizon(&self) -> bool {
        self.attributes & DELETE_HORIZON != 0
    }

    /// Attribute bits that RecordBatch v2 does not define.
    pub fn unknown_bits(&self) -> i16 {
        self.attributes & UNKNOWN_BITS
    }

    /// Bytes of the whole batch according to `batchLength` (None when it is negative).
    pub fn total_len(&self) -> Option<usize> {
        usize::try_from(self.batch_length).ok().map(|n| n + LENGTH_OVERHEAD)
    }
}

/// The timestamp of a stored batch for the time index (`segments::Config::timestamp`,
/// behind `Log::locate_timestamp`): its maxTimestamp, which is every record's time in a
/// LogAppendTime batch and the largest in a CreateTime one, so the first batch whose
/// maxTimestamp reaches T holds the first record that does. None when the bytes are no
/// RecordBatch v2 or the batch has no timestamp (-1).
pub fn index_timestamp(batch: &[u8]) -> Option<u64> {
    let h = BatchHeader::parse(batch).ok().filter(|h| h.magic == MAGIC)?;
    u64::try_from(h.max_timestamp).ok()
}

/// The attributes of a batch that keel's builder writes: a codec and CreateTime.
pub(crate) fn attributes_for(compression: Compression) -> i16 {
    i16::from(compression.id())
}

fn field<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    b[at..at + N].try_into().expect("the header slice holds every field")
}

/// Overwrites baseOffset and partitionLeaderEpoch, and nothing else. Both lie outside
/// the CRC, so the batch stays valid; the leader calls this on a checked batch just
/// before proposing it.
///
/// Panics when `batch` is shorter than a header (it was not checked), or when the
/// offset or term does not fit Kafka's i64 and i32 (2^31 elections do not happen).
pub fn stamp(batch: &mut [u8], base_offset: Offset, leader_epoch: Term) {
    assert!(batch.len() >= HEADER_LEN, "stamp on {} bytes: only a checked batch is stamped", batch.len());
    let offset = i64::try_from(base_offset.get()).expect("offsets stay below 2^63");
    let epoch = i32::try_from(leader_epoch.get()).expect("terms stay below 2^31");
    batch[BASE_OFFSET_AT..BATCH_LENGTH_AT].copy_from_slice(&offset.to_be_bytes());
    batch[LEADER_EPOCH_AT..MAGIC_AT].copy_from_slice(&epoch.to_be_bytes());
}

/// Writes an idempotent producer's id, epoch and base sequence into a batch `BatchBuilder`
/// finished, and its CRC again (those fields are inside the CRC): a producer encodes a
/// batch once and stamps it when the batch takes its sequence, before it is first sent.
///
/// Panics on fewer than `HEADER_LEN` bytes: only a finished batch is stamped.
pub fn stamp_producer(batch: &mut [u8], producer_id: i64, producer_epoch: i16, base_sequence: i32) {
    assert!(batch.len() >= HEADER_LEN, "stamp_producer on {} bytes: only a finished batch is stamped", batch.len());
    batch[PRODUCER_ID_AT..PRODUCER_EPOCH_AT].copy_from_slice(&producer_id.to_be_bytes());
    batch[PRODUCER_EPOCH_AT..BASE_SEQUENCE_AT].copy_from_slice(&producer_epoch.to_be_bytes());
    batch[BASE_SEQUENCE_AT..RECORDS_COUNT_AT].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = crc32c::crc32c(&batch[CRC_FROM..]);
    batch[CRC_AT..ATTRIBUTES_AT].copy_from_slice(&crc.to_be_bytes());
}
