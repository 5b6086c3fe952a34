//! Records and the batch format: the payload of a data entry.
//!
//! A producer sends a batch of records; the leader prefixes the batch with its append
//! time and makes it one Raft entry. Consumers get the entry bytes unchanged and walk
//! the records here. Layout (little-endian):
//!
//! ```text
//! batch   := append_time_ms:u64  record*            (record_count in the entry header)
//! record  := len:u32  body                          (len = bytes of body)
//! body    := timestamp_ms:u64  flags:u8  [key_len:u32 key]  header_count:u16  header*  value
//! header  := name_len:u16 name  value_len:u32 value
//! flags   := bit 0: has key
//! ```
//! `timestamp_ms` 0 means "the producer gave none": readers use the batch's append time.
//! The value is the rest of the body, so it needs no length of its own.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{DecodeError, Reader};

/// Bytes of a record besides its key, headers and value.
pub const RECORD_OVERHEAD: usize = 4 + 8 + 1 + 2;
pub const BATCH_HEADER_LEN: usize = 8;
const FLAG_KEY: u8 = 1;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    pub key: Option<Bytes>,
    pub value: Bytes,
    pub headers: Vec<(String, Bytes)>,
    /// Milliseconds since the Unix epoch; 0 = let the leader stamp it.
    pub timestamp_ms: u64,
}

impl Record {
    pub fn new(value: impl Into<Bytes>) -> Record {
        Record { value: value.into(), ..Record::default() }
    }

    /// Bytes this record takes in a batch.
    pub fn encoded_len(&self) -> usize {
        RECORD_OVERHEAD
            + self.key.as_ref().map_or(0, |k| 4 + k.len())
            + self.headers.iter().map(|(n, v)| 2 + n.len() + 4 + v.len()).sum::<usize>()
            + self.value.len()
    }

    pub fn encode(&self, buf: &mut BytesMut) {
        let body = self.encoded_len() - 4;
        buf.reserve(body + 4);
        buf.put_u32_le(u32::try_from(body).expect("records are bounded by record_bytes_max"));
        buf.put_u64_le(self.timestamp_ms);
        buf.put_u8(if self.key.is_some() { FLAG_KEY } else { 0 });
        if let Some(key) = &self.key {
            buf.put_u32_le(key.len() as u32);
            buf.put_slice(key);
        }
        buf.put_u16_le(u16::try_from(self.headers.len()).expect("header count checked by the producer"));
        for (name, value) in &self.headers {
            buf.put_u16_le(u16::try_from(name.len()).expect("header name length checked by the producer"));
            buf.put_slice(name.as_bytes());
            buf.put_u32_le(value.len() as u32);
            buf.put_slice(value);
        }
        buf.put_slice(&self.value);
    }
}

/// Why a batch from a producer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("record {index} is {len} bytes, over the limit of {max} bytes (record_bytes_max)")]
    RecordTooLarge { index: usize, len: usize, max: usize },
    #[error("malformed record {index}: {source}")]
    Malformed { index: usize, source: DecodeError },
    #[error("the batch says {declared} records but holds {found}")]
    CountMismatch { declared: u32, found: u32 },
    #[error("an empty batch")]
    Empty,
}

/// Checks a producer's records (the batch without its append-time prefix) and counts them.
/// Every record must parse and be within `record_bytes_max`.
pub fn validate(records: &Bytes, declared: u32, record_bytes_max: usize) -> Result<u32, BatchError> {
    let mut reader = Reader::new(records.clone());
    let mut found = 0u32;
    while reader.remaining() > 0 {
        let index = found as usize;
        let len = reader.u32("record length").map_err(|source| BatchError::Malformed { index, source })? as usize;
        if len + 4 > record_bytes_max {
            return Err(BatchError::RecordTooLarge { index, len: len + 4, max: record_bytes_max });
        }
        let body = reader.take(len, "record body").map_err(|source| BatchError::Malformed { index, source })?;
        parse_body(body, 0).map_err(|source| BatchError::Malformed { index, source })?;
        found += 1;
    }
    if found == 0 {
        return Err(BatchError::Empty);
    }
    if found != declared {
        return Err(BatchError::CountMismatch { declared, found });
    }
    Ok(found)
}

fn parse_body(body: Bytes, append_time_ms: u64) -> Result<Record, DecodeError> {
    let mut r = Reader::new(body);
    let timestamp = r.u64("timestamp")?;
    let flags = r.u8("flags")?;
    if flags & !FLAG_KEY != 0 {
        return Err(DecodeError::Invalid { what: "record flags" });
    }
    let key = if flags & FLAG_KEY != 0 { Some(r.bytes("key")?) } else { None };
    let header_count = r.u16("header count")? as usize;
    let mut headers = Vec::with_capacity(header_count.min(r.remaining() / 6));
    for _ in 0..header_count {
        let name_len = r.u16("header name length")? as usize;
        let name = r.take(name_len, "header name")?;
        let name = String::from_utf8(name.to_vec()).map_err(|_| DecodeError::Invalid { what: "header name" })?;
        headers.push((name, r.bytes("header value")?));
    }
    let value = r.rest();
    let timestamp_ms = if timestamp == 0 { append_time_ms } else { timestamp };
    Ok(Record { key, value, headers, timestamp_ms })
}

/// Builds a data entry's payload: the leader's append time, then the producer's records.
pub fn batch_payload(append_time_ms: u64, records: &[u8]) -> BytesMut {
    let mut payload = BytesMut::with_capacity(BATCH_HEADER_LEN + records.len());
    payload.put_u64_le(append_time_ms);
    payload.put_slice(records);
    payload
}

/// Iterates over the records of a data entry's payload.
pub struct BatchIter {
    reader: Reader,
    append_time_ms: u64,
    failed: bool,
}

impl BatchIter {
    pub fn new(payload: Bytes) -> Result<BatchIter, DecodeError> {
        let mut reader = Reader::new(payload);
        let append_time_ms = reader.u64("batch append time")?;
        Ok(BatchIter { reader, append_time_ms, failed: false })
    }
}

impl Iterator for BatchIter {
    type Item = Result<Record, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.reader.remaining() == 0 {
            return None;
        }
        let record = self.reader.bytes("record").and_then(|b| parse_body(b, self.append_time_ms));
        // After a malformed record the rest cannot be framed: stop.
        self.failed = record.is_err();
        Some(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode_all(records: &[Record]) -> Bytes {
        let mut buf = BytesMut::new();
        for r in records {
            r.encode(&mut buf);
        }
        buf.freeze()
    }

    #[test]
    fn records_round_trip_through_a_batch() {
        let records = vec![
            Record::new("plain"),
            Record {
                key: Some(Bytes::from("k")),
                value: Bytes::from("v"),
                headers: vec![("h".into(), Bytes::from("x"))],
                timestamp_ms: 5,
            },
        ];
        let raw = encode_all(&records);
        assert_eq!(raw.len(), records.iter().map(Record::encoded_len).sum::<usize>());
        assert_eq!(validate(&raw, 2, 1 << 20), Ok(2));
        let payload = batch_payload(1000, &raw).freeze();
        let back: Vec<Record> = BatchIter::new(payload).unwrap().map(Result::unwrap).collect();
        assert_eq!(back[0].timestamp_ms, 1000, "an unset timestamp takes the append time");
        assert_eq!(back[0].value, records[0].value);
        assert_eq!(back[1], records[1]);
    }

    #[test]
    fn oversized_and_malformed_records_are_refused() {
        let raw = encode_all(&[Record::new(vec![0u8; 100])]);
        assert!(matches!(validate(&raw, 1, 64), Err(BatchError::RecordTooLarge { index: 0, .. })));
        assert!(matches!(validate(&raw.slice(..raw.len() - 1), 1, 1 << 20), Err(BatchError::Malformed { .. })));
        assert_eq!(validate(&raw, 2, 1 << 20), Err(BatchError::CountMismatch { declared: 2, found: 1 }));
        assert_eq!(validate(&Bytes::new(), 0, 1 << 20), Err(BatchError::Empty));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let bytes = Bytes::from(bytes);
            let _ = validate(&bytes, 1, 1 << 20);
            if let Ok(iter) = BatchIter::new(bytes) {
                for _ in iter {}
            }
        }
    }
}
