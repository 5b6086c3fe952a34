//! The Raft core's read-only view of a segments log.

use segments::{Entry, Log};

use crate::raft::{LogStart, LogStore, StoreError};

/// Borrows a log (through its lock guard) for one call into the core.
pub struct SegmentStore<'a>(pub &'a Log);

pub fn to_raft_start(start: segments::LogStart) -> LogStart {
    LogStart { index: start.index, prev_term: start.prev_term, offset: start.offset }
}

pub fn to_segments_start(start: LogStart) -> segments::LogStart {
    segments::LogStart { index: start.index, prev_term: start.prev_term, offset: start.offset }
}

impl LogStore for SegmentStore<'_> {
    fn first_index(&self) -> u64 {
        self.0.first_index()
    }

    fn last_index(&self) -> u64 {
        self.0.last_index()
    }

    fn term(&self, index: u64) -> Option<u64> {
        self.0.term(index)
    }

    fn entries(&self, from: u64, max_bytes: usize, max_count: usize, out: &mut Vec<Entry>) -> Result<(), StoreError> {
        let start = out.len();
        self.0.read(from, max_bytes, out).map_err(|e| match e {
            segments::Error::Corrupt { .. } => StoreError::Corrupt { index: from, detail: e.to_string() },
            segments::Error::OutOfRange { .. } if from < self.0.first_index() => {
                StoreError::Compacted { index: from, first_index: self.0.first_index() }
            }
            other => StoreError::Unavailable { index: from, detail: other.to_string() },
        })?;
        out.truncate(start + max_count.max(1));
        Ok(())
    }

    fn next_offset(&self) -> u64 {
        self.0.next_offset()
    }

    fn start(&self) -> LogStart {
        to_raft_start(self.0.log_start())
    }
}
