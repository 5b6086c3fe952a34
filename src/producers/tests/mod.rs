//! Tests of the producer state, each named after the rule it checks: the sequence rules
//! (`rules.rs`), the leader's in-flight layer (`inflight.rs`), expiry and the bound
//! (`bounds.rs`), snapshots (`snapshot.rs`), producer ids (`ids.rs`), and random produce
//! streams through a leader that changes (`streams.rs`).

mod bounds;
mod ids;
mod inflight;
mod rules;
mod snapshot;
mod streams;

use crate::ids::{Index, Offset};

use super::{ProducerBatch, ProducerConfig, ProducerTable};

pub(super) fn batch(producer_id: i64, epoch: i16, first_seq: i32, record_count: i32) -> ProducerBatch {
    ProducerBatch { producer_id, epoch, first_seq, record_count }
}

/// One committed entry: a data entry's batch, first offset and timestamp, or a control entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Entry {
    Data { batch: ProducerBatch, base_offset: Offset, timestamp_ms: i64 },
    Control,
}

impl Entry {
    /// Applies this entry, committed at `index`, as a replica does.
    pub fn apply(&self, table: &mut ProducerTable, index: Index) -> super::Forgotten {
        match self {
            Entry::Data { batch, base_offset, timestamp_ms } => table.apply(index, batch, *base_offset, *timestamp_ms),
            Entry::Control => {
                table.advance(index);
                super::Forgotten::default()
            }
        }
    }
}

/// A partition's committed log as a replica applies it: entry `i` has index `i + 1`, and each
/// batch's records take the next offsets.
pub(super) struct Log {
    pub table: ProducerTable,
    pub entries: Vec<Entry>,
    next_offset: u64,
}

impl Log {
    pub fn new(config: ProducerConfig) -> Log {
        Log { table: ProducerTable::new(config), entries: Vec::new(), next_offset: 0 }
    }

    pub fn next_index(&self) -> Index {
        Index(self.entries.len() as u64 + 1)
    }

    /// Commits and applies `batch` at `timestamp_ms`; returns its first offset.
    pub fn commit_at(&mut self, batch: ProducerBatch, timestamp_ms: i64) -> (Offset, super::Forgotten) {
        let base_offset = Offset(self.next_offset);
        self.next_offset += batch.record_count as u64;
        let entry = Entry::Data { batch, base_offset, timestamp_ms };
        let index = self.next_index();
        let forgotten = entry.apply(&mut self.table, index);
        self.entries.push(entry);
        (base_offset, forgotten)
    }

    pub fn commit(&mut self, batch: ProducerBatch) -> Offset {
        let timestamp_ms = self.table.clock_ms();
        self.commit_at(batch, timestamp_ms).0
    }

    /// Commits and applies a control entry (a leader's no-op); returns its index.
    pub fn commit_control(&mut self) -> Index {
        let index = self.next_index();
        Entry::Control.apply(&mut self.table, index);
        self.entries.push(Entry::Control);
        index
    }
}

/// A replica that applies `entries[from..]` to `table`; entry `i` has index `i + 1`.
pub(super) fn replay(table: &mut ProducerTable, entries: &[Entry], from: usize) {
    for (i, entry) in entries.iter().enumerate().skip(from) {
        entry.apply(table, Index(i as u64 + 1));
    }
}
