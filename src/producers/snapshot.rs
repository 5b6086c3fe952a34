//! The bytes of a producer table snapshot, encoded by hand.
//!
//! Integers are **little-endian**; `i16`, `i32` and `i64` are two's complement. A snapshot rests
//! in a CRC-checked file beside the segments (written by `segments`, like the hard state), so it
//! carries no CRC of its own. It starts with a version byte; this is version 1, and a decoder
//! refuses a version it does not know. Decoding never panics, the producer count is checked
//! against the bytes left before anything is allocated (`codec::Reader::count`: a producer
//! takes at least 59 bytes), and a snapshot that breaks an invariant of the table is refused.
//!
//! ```text
//! offset size field
//!      0    1 version         SNAPSHOT_VERSION = 1
//!      1    8 applied index   u64: the table is the log's state up to and including this entry
//!      9    8 clock (ms)      i64: the highest timestamp applied
//!     17    4 producer count  u32, then each producer:
//!  +0    8 producer id      i64, >= 0, strictly ascending
//!  +8    2 epoch            i16, >= 0
//! +10    8 last index       u64: the entry of its last batch, > 0, <= applied index,
//!                           different for every producer
//! +18    8 last seen (ms)   i64: <= clock, and never lower than that of a producer whose
//!                           last index is lower
//! +26    1 batch count      u8, 1..=WINDOW, then each batch, oldest first:
//!     +0    4 first sequence   i32, >= 0
//!     +4    4 last sequence    i32, >= 0
//!     +8    8 base offset      u64
//!    +16    8 last offset      u64, >= base offset
//!    +24    8 timestamp (ms)   i64
//!    +32      (end of batch: 32 bytes)
//! ```
//!
//! Nothing follows the last producer. Producers are in ascending id order, so one table has
//! exactly one encoding. The limits (`ProducerConfig`) are not stored: they come from the
//! cluster settings, and `restore` evicts down to `producers_max` if a snapshot holds more.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{DecodeError, Reader};
use crate::ids::{Index, Offset};

use super::table::{BatchMeta, Producer, ProducerTable, Window};
use super::{ProducerConfig, WINDOW};

pub const SNAPSHOT_VERSION: u8 = 1;

const HEADER_LEN: usize = 1 + 8 + 8 + 4;
const BATCH_LEN: usize = 4 + 4 + 8 + 8 + 8;
const PRODUCER_LEN_MIN: usize = 8 + 2 + 8 + 8 + 1 + BATCH_LEN;

impl ProducerTable {
    /// The whole table and the index it covers, as bytes.
    pub fn snapshot(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(HEADER_LEN + self.producers.len() * (PRODUCER_LEN_MIN + BATCH_LEN));
        b.put_u8(SNAPSHOT_VERSION);
        b.put_u64_le(self.applied.get());
        b.put_i64_le(self.clock_ms);
        b.put_u32_le(u32::try_from(self.producers.len()).expect("producers_max is far below u32::MAX"));
        for (&producer_id, p) in &self.producers {
            b.put_i64_le(producer_id);
            b.put_i16_le(p.epoch);
            b.put_u64_le(p.last_index.get());
            b.put_i64_le(p.last_seen_ms);
            let batches = p.window.as_slice();
            b.put_u8(u8::try_from(batches.len()).expect("a window holds at most WINDOW batches"));
            for batch in batches {
                b.put_i32_le(batch.first_seq);
                b.put_i32_le(batch.last_seq);
                b.put_u64_le(batch.base_offset.get());
                b.put_u64_le(batch.last_offset.get());
                b.put_i64_le(batch.timestamp_ms);
            }
        }
        b.freeze()
    }

    /// The table a snapshot holds, under `config`. Refuses bytes that are malformed or hold a
    /// table that breaks an invariant.
    pub fn restore(bytes: Bytes, config: ProducerConfig) -> Result<ProducerTable, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8("producer snapshot version")?;
        if version != SNAPSHOT_VERSION {
            return Err(DecodeError::Invalid { what: "producer snapshot version (this build reads version 1)" });
        }
        // The reader gives unsigned fields; `as` takes their bits as two's complement.
        let mut table = ProducerTable::new(config);
        table.applied = Index(r.u64("applied index")?);
        table.clock_ms = r.u64("clock")? as i64;
        let count = r.count(PRODUCER_LEN_MIN, "producer count")?;
        for _ in 0..count {
            let (producer_id, producer) = read_producer(&mut r, &table)?;
            if table.producers.last_key_value().is_some_and(|(&last, _)| last >= producer_id) {
                return Err(DecodeError::Invalid { what: "producer ids (not strictly ascending)" });
            }
            if table.by_recency.insert(producer.last_index, producer_id).is_some() {
                return Err(DecodeError::Invalid { what: "last index (shared by two producers)" });
            }
            table.producers.insert(producer_id, producer);
        }
        r.end()?;
        check_recency(&table.producers, &table.by_recency)?;
        table.evict();
        Ok(table)
    }
}

fn read_producer(r: &mut Reader, table: &ProducerTable) -> Result<(i64, Producer), DecodeError> {
    let producer_id = r.u64("producer id")? as i64;
    let epoch = r.u16("producer epoch")? as i16;
    let last_index = Index(r.u64("last index")?);
    let last_seen_ms = r.u64("last seen")? as i64;
    if producer_id < 0 || epoch < 0 {
        return Err(DecodeError::Invalid { what: "producer id or epoch (negative)" });
    }
    if last_index.get() == 0 || last_index > table.applied || last_seen_ms > table.clock_ms {
        return Err(DecodeError::Invalid { what: "last index or last seen (beyond what the table applied)" });
    }
    let batches = usize::from(r.u8("batch count")?);
    if !(1..=WINDOW).contains(&batches) {
        return Err(DecodeError::Invalid { what: "batch count (not 1..=5)" });
    }
    let mut window = Window::new();
    for _ in 0..batches {
        let batch = BatchMeta {
            first_seq: r.u32("first sequence")? as i32,
            last_seq: r.u32("last sequence")? as i32,
            base_offset: Offset(r.u64("base offset")?),
            last_offset: Offset(r.u64("last offset")?),
            timestamp_ms: r.u64("batch timestamp")? as i64,
        };
        if batch.first_seq < 0 || batch.last_seq < 0 || batch.last_offset < batch.base_offset {
            return Err(DecodeError::Invalid { what: "batch (negative sequence, or offsets out of order)" });
        }
        window.push(batch);
    }
    Ok((producer_id, Producer { epoch, window, last_index, last_seen_ms }))
}

/// Last-seen times never go back in recency order: the table's clock only moves forward.
fn check_recency(producers: &BTreeMap<i64, Producer>, by_recency: &BTreeMap<Index, i64>) -> Result<(), DecodeError> {
    let mut seen_ms = i64::MIN;
    for producer_id in by_recency.values() {
        let last_seen_ms = producers[producer_id].last_seen_ms;
        if last_seen_ms < seen_ms {
            return Err(DecodeError::Invalid { what: "last seen times (out of order with last indexes)" });
        }
        seen_ms = last_seen_ms;
    }
    Ok(())
}
