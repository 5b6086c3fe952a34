//! Reading the records of one stored batch, for consumers and for ListOffsets by time.

use bytes::Bytes;

use super::header::HEADER_LEN;
use super::record::{self, RawRecord};
use super::{BatchError, BatchHeader, Compression, Record, TimestampType, compression};

/// A record with its place in the partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadRecord {
    /// baseOffset + the record's offset delta.
    pub offset: i64,
    /// CreateTime: baseTimestamp + the record's delta; LogAppendTime: the batch's maxTimestamp.
    pub record: Record,
}

/// The records of one batch, in order. Checks what a reader relies on (magic, length,
/// CRC-32C, codec) before the first record, and inflates compressed records at most to
/// `inflated_bytes_max`; then each record is parsed as it is asked for, and the views
/// it hands out (key, value, header values) share the batch's memory or the inflated
/// buffer. After an error the iterator ends.
pub struct BatchReader {
    header: BatchHeader,
    records: Bytes,
    at: usize,
    index: usize,
    failed: bool,
}

impl BatchReader {
    pub fn new(batch: Bytes, inflated_bytes_max: usize) -> Result<BatchReader, BatchError> {
        // What is stored was checked once; the CRC is checked again because it is cheap and
        // a reader may hold bytes from anywhere. The size bound is the leader's business.
        let header = super::framed(&batch, usize::MAX)?;
        let records =
            match header.compression()? {
                Compression::None => batch.slice(HEADER_LEN..),
                codec => compression::inflate(codec, &batch[HEADER_LEN..], inflated_bytes_max)
                    .map(Bytes::from)
                    .map_err(|e| match e {
                        compression::InflateError::Damaged(reason) => {
                            BatchError::Damaged { compression: codec, reason }
                        }
                        compression::InflateError::TooLarge => {
                            BatchError::InflatedTooLarge { compression: codec, max: inflated_bytes_max }
                        }
                    })?,
            };
        Ok(BatchReader { header, records, at: 0, index: 0, failed: false })
    }

    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    fn read_next(&mut self) -> Result<ReadRecord, BatchError> {
        let index = self.index;
        let declared = self.header.records_count;
        if self.at == self.records.len() {
            return Err(BatchError::MissingRecords { declared, found: index });
        }
        let mut rest = &self.records[self.at..];
        let raw = record::parse(&mut rest).map_err(|what| BatchError::Malformed { index, what })?;
        let record = self.materialize(index, &raw)?;
        self.at = self.records.len() - rest.len();
        self.index += 1;
        Ok(record)
    }

    fn materialize(&self, index: usize, raw: &RawRecord<'_>) -> Result<ReadRecord, BatchError> {
        let h = &self.header;
        let view = |b: &[u8]| self.records.slice_ref(b);
        let timestamp_ms = match h.timestamp_type() {
            TimestampType::CreateTime => super::record_timestamp(h, index, raw.timestamp_delta)?,
            TimestampType::LogAppendTime => h.max_timestamp,
        };
        let offset = h
            .base_offset
            .checked_add(i64::from(raw.offset_delta))
            .ok_or(BatchError::OffsetDelta { index, found: raw.offset_delta })?;
        let mut headers = Vec::with_capacity(raw.header_count.min(raw.headers.len()));
        let mut walk = raw.headers;
        for _ in 0..raw.header_count {
            let (name, value) = record::next_header(&mut walk).map_err(|what| BatchError::Malformed { index, what })?;
            headers.push((name.to_owned(), value.map(view)));
        }
        let record = Record { timestamp_ms, key: raw.key.map(view), value: raw.value.map(view), headers };
        Ok(ReadRecord { offset, record })
    }
}

impl Iterator for BatchReader {
    type Item = Result<ReadRecord, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if self.index >= self.header.records_count.max(0) as usize {
            // Every declared record was read: anything left over is damage too.
            let extra = self.records.len() - self.at;
            self.failed = true;
            let declared = self.header.records_count;
            return (extra > 0).then_some(Err(BatchError::TrailingBytes { declared, extra }));
        }
        let item = self.read_next();
        self.failed = item.is_err();
        Some(item)
    }
}

/// The offset of the first record of `batch` whose timestamp is at least `timestamp_ms`
/// (ListOffsets by time), or None when every record is earlier.
pub fn first_offset_at_or_after(
    batch: Bytes,
    timestamp_ms: i64,
    inflated_bytes_max: usize,
) -> Result<Option<i64>, BatchError> {
    Ok(first_record_at_or_after(batch, timestamp_ms, inflated_bytes_max)?.map(|(offset, _)| offset))
}

/// The offset and timestamp of the first record of `batch` whose timestamp is at least
/// `timestamp_ms`, or None when every record is earlier. A batch whose maxTimestamp is
/// earlier is answered from its header alone, without inflating it; so is a LogAppendTime
/// batch, whose records all have its maxTimestamp.
pub fn first_record_at_or_after(
    batch: Bytes,
    timestamp_ms: i64,
    inflated_bytes_max: usize,
) -> Result<Option<(i64, i64)>, BatchError> {
    let header = BatchHeader::parse(&batch)?;
    if header.max_timestamp < timestamp_ms {
        return Ok(None);
    }
    if header.timestamp_type() == TimestampType::LogAppendTime {
        return Ok(Some((header.base_offset, header.max_timestamp)));
    }
    for r in BatchReader::new(batch, inflated_bytes_max)? {
        let r = r?;
        if r.record.timestamp_ms >= timestamp_ms {
            return Ok(Some((r.offset, r.record.timestamp_ms)));
        }
    }
    Ok(None)
}
