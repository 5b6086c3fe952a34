//! Compaction of a `__consumer_offsets` partition: only the latest record of each key
//! matters (`records.rs`), so the others can go, and the partition stops growing with the
//! number of commits: it holds at most one record per live offset and group.
//!
//! The rule: in a run of records that starts at the beginning of the partition, keep a
//! record if and only if it is the last of its key in the run and not a tombstone. A
//! tombstone can go with the rest because nothing of its key is left before it; that is
//! why the run must start at the beginning (or at the start of an earlier compacted
//! run's output). Records after the run are untouched, so a rewrite of the sealed prefix
//! while the coordinator appends is fine, as long as the prefix is replaced at once.
//! Replaying the compacted partition gives the same state as replaying the whole one (a
//! property the tests check).
//!
//! `Compaction` does it in two passes over the run with memory for one position per
//! distinct key, never for the records themselves: the lead's rewrite reads the sealed
//! segments once to `scan`, then again to copy what `keeps`.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::records::StoredRecord;

#[derive(Debug, Default)]
pub struct Compaction {
    /// The position of the last record of each key seen by `scan`.
    last: BTreeMap<Bytes, u64>,
}

impl Compaction {
    pub fn new() -> Compaction {
        Compaction::default()
    }

    /// First pass: the record at `position` (any increasing number, an offset) has `key`.
    pub fn scan(&mut self, position: u64, key: &[u8]) {
        match self.last.get_mut(key) {
            Some(last) => *last = (*last).max(position),
            None => {
                self.last.insert(Bytes::copy_from_slice(key), position);
            }
        }
    }

    /// Second pass: whether the record at `position` stays. `tombstone`: its value is null
    /// or empty. A record without a key is not one a coordinator wrote, and goes.
    pub fn keeps(&self, position: u64, key: Option<&[u8]>, tombstone: bool) -> bool {
        let Some(key) = key else { return false };
        !tombstone && self.last.get(key) == Some(&position)
    }

    /// Distinct keys seen: the memory the compaction holds.
    pub fn keys(&self) -> usize {
        self.last.len()
    }
}

/// Compacts records held in memory, in order.
pub fn compact(records: &[StoredRecord]) -> Vec<StoredRecord> {
    let keys: Vec<Bytes> = records.iter().map(StoredRecord::key).collect();
    let mut compaction = Compaction::new();
    for (position, key) in keys.iter().enumerate() {
        compaction.scan(position as u64, key);
    }
    records
        .iter()
        .zip(&keys)
        .enumerate()
        .filter(|(position, (record, key))| compaction.keeps(*position as u64, Some(key), record.is_tombstone()))
        .map(|(_, (record, _))| record.clone())
        .collect()
}
