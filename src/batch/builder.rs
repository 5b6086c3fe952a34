//! `BatchBuilder`: how keel's client writes a RecordBatch v2.

use bytes::{BufMut, Bytes};

use super::header::{self, HEADER_LEN, LENGTH_OVERHEAD, MAGIC};
use super::{BatchError, Compression, Record, compression, record};

/// Kafka's "no value" for producer id, epoch, sequence and leader epoch.
const NONE: i64 = -1;

/// Collects records and writes them as one batch. Offsets are deltas from 0 (the leader
/// stamps the real base offset); baseTimestamp is the first record's timestamp, as the
/// Java client writes it.
#[derive(Clone, Debug)]
pub struct BatchBuilder {
    compression: Compression,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    /// Room for the header, then the records so far, encoded and uncompressed: an
    /// uncompressed batch is finished in place, without a copy.
    buf: Vec<u8>,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
}

impl BatchBuilder {
    /// An empty batch of a non-idempotent producer (producer id, epoch and base sequence -1).
    pub fn new(compression: Compression) -> BatchBuilder {
        BatchBuilder {
            compression,
            producer_id: NONE,
            producer_epoch: NONE as i16,
            base_sequence: NONE as i32,
            buf: vec![0; HEADER_LEN],
            count: 0,
            base_timestamp: NONE,
            max_timestamp: NONE,
        }
    }

    /// Sets the idempotent producer's id, epoch and the sequence number of the first record.
    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> BatchBuilder {
        (self.producer_id, self.producer_epoch, self.base_sequence) = (producer_id, producer_epoch, base_sequence);
        self
    }

    /// Adds a record. Its timestamp must be -1 (none) or non-negative, as in Kafka.
    pub fn push(&mut self, record: &Record) -> Result<(), BatchError> {
        let timestamp = record.timestamp_ms;
        if timestamp < NONE {
            return Err(BatchError::InvalidTimestamp { timestamp });
        }
        if self.count == 0 {
            self.base_timestamp = timestamp;
            self.max_timestamp = timestamp;
        }
        // Both are >= -1, so the difference fits unless one is i64::MAX and the other -1.
        let delta = timestamp.checked_sub(self.base_timestamp).ok_or(BatchError::InvalidTimestamp { timestamp })?;
        record::encode(&mut self.buf, record, delta, self.count);
        self.max_timestamp = self.max_timestamp.max(timestamp);
        self.count += 1;
        Ok(())
    }

    /// Records pushed so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes the batch would take uncompressed, for a producer deciding when a batch is
    /// full. Exact without compression; for compressed batches an upper bound in practice
    /// (only incompressible records grow, by a few bytes per block).
    pub fn estimated_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Bytes `record` would add to the batch (uncompressed), before it is pushed.
    pub fn record_bytes(&self, record: &Record) -> usize {
        let base = if self.count == 0 { record.timestamp_ms } else { self.base_timestamp };
        record::encoded_len(record, record.timestamp_ms.wrapping_sub(base), self.count)
    }

    /// The batch: baseOffset 0 and partitionLeaderEpoch -1, which the leader stamps.
    ///
    /// Panics when no record was pushed: a batch holds at least one.
    pub fn finish(self) -> Bytes {
        assert!(self.count > 0, "a batch holds at least one record");
        let mut buf = match self.compression {
            Compression::None => self.buf,
            codec => {
                let body = compression::compress(codec, &self.buf[HEADER_LEN..]);
                let mut buf = Vec::with_capacity(HEADER_LEN + body.len());
                buf.extend_from_slice(&self.buf[..HEADER_LEN]);
                buf.extend_from_slice(&body);
                buf
            }
        };
        let batch_length = i32::try_from(buf.len() - LENGTH_OVERHEAD).expect("batches are bounded far below 2 GiB");
        let mut h = &mut buf[..HEADER_LEN];
        h.put_i64(0);
        h.put_i32(batch_length);
        h.put_i32(NONE as i32);
        h.put_i8(MAGIC);
        h.put_u32(0); // the CRC, filled in below
        h.put_i16(header::attributes_for(self.compression));
        h.put_i32(self.count - 1);
        h.put_i64(self.base_timestamp);
        h.put_i64(self.max_timestamp);
        h.put_i64(self.producer_id);
        h.put_i16(self.producer_epoch);
        h.put_i32(self.base_sequence);
        h.put_i32(self.count);
        debug_assert!(h.is_empty(), "every header field written");
        let crc = crc32c::crc32c(&buf[header::CRC_FROM..]);
        buf[header::CRC_AT..header::ATTRIBUTES_AT].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(buf)
    }
}
