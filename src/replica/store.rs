//! The Raft core's read-only view of a segments log.

use std::cell::Cell;
use std::ops::Deref;

use segments::{Entry, Log};

use super::backend::DamageSeen;
use crate::raft::{LogStart, LogStore, StoreError};

/// Borrows a log (through its lock guard, or a plain reference) for one call into the
/// core, and remembers the lowest index at which a read found damaged bytes, for the
/// caller to repair.
pub struct SegmentStore<G: Deref<Target = Log>> {
    log: G,
    damaged: Cell<Option<u64>>,
}

impl<G: Deref<Target = Log>> SegmentStore<G> {
    pub fn new(log: G) -> SegmentStore<G> {
        SegmentStore { log, damaged: Cell::new(None) }
    }
}

impl<G: Deref<Target = Log>> DamageSeen for SegmentStore<G> {
    /// Where a read through this view found damage: the first bad entry is at or after
    /// the checkpoint before this index (`Log::verify` finds it).
    fn damage_seen(&self) -> Option<u64> {
        self.damaged.get()
    }
}

pub fn to_raft_start(start: segments::LogStart) -> LogStart {
    LogStart { index: start.index, prev_term: start.prev_term, offset: start.offset }
}

pub fn to_segments_start(start: LogStart) -> segments::LogStart {
    segments::LogStart { index: start.index, prev_term: start.prev_term, offset: start.offset }
}

/// Whether a storage error means damaged bytes (to cut and fetch again), not an
/// operational fault such as an I/O error.
pub fn is_damage(e: &segments::Error) -> bool {
    matches!(e, segments::Error::Corrupt { .. } | segments::Error::Misplaced { .. } | segments::Error::BadFile { .. })
}

impl<G: Deref<Target = Log>> LogStore for SegmentStore<G> {
    fn first_index(&self) -> u64 {
        self.log.first_index()
    }

    fn last_index(&self) -> u64 {
        self.log.last_index()
    }

    fn term(&self, index: u64) -> Option<u64> {
        self.log.term(index)
    }

    fn entries(&self, from: u64, max_bytes: usize, max_count: usize, out: &mut Vec<Entry>) -> Result<(), StoreError> {
        let start = out.len();
        self.log.read(from, max_bytes, out).map_err(|e| match e {
            e if is_damage(&e) => {
                self.damaged.set(Some(self.damaged.get().map_or(from, |d| d.min(from))));
                StoreError::Corrupt { index: from, detail: e.to_string() }
            }
            segments::Error::OutOfRange { .. } if from < self.log.first_index() => {
                StoreError::Compacted { index: from, first_index: self.log.first_index() }
            }
            other => StoreError::Unavailable { index: from, detail: other.to_string() },
        })?;
        out.truncate(start + max_count.max(1));
        Ok(())
    }

    fn next_offset(&self) -> u64 {
        self.log.next_offset()
    }

    fn start(&self) -> LogStart {
        to_raft_start(self.log.log_start())
    }
}
