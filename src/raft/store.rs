//! The core's read-only view of the log the caller keeps.

use super::{Entry, LogStart, Snapshot};

/// The entries the caller has written, durable or not. The core owns no storage: it reads
/// through this trait and asks for changes in `Ready` (reset, truncate_after, entries),
/// which the caller applies before calling the core again.
pub trait LogStore {
    /// The first index held; an empty log has `last_index() == first_index() - 1`.
    fn first_index(&self) -> u64;
    fn last_index(&self) -> u64;
    /// The term of the entry at `index`: `Some` for `first_index() - 1 ..= last_index()`
    /// (the entry before the first is known through `start().prev_term`), else `None`.
    fn term(&self, index: u64) -> Option<u64>;
    /// Appends to `out` the entries from `from` on, stopping before `max_bytes` encoded bytes
    /// or `max_count` entries, but always at least one if `from <= last_index()`.
    fn entries(&self, from: u64, max_bytes: usize, max_count: usize, out: &mut Vec<Entry>) -> Result<(), StoreError>;
    /// The record offset after the last entry (the log start's offset if empty).
    fn next_offset(&self) -> u64;
    fn start(&self) -> LogStart;
    /// The latest snapshot the caller keeps of a state machine that is not the log itself
    /// (`snapshot.rs`): it covers every entry through `meta.index()`, which is committed,
    /// and the log holds every entry after it (`first_index() <= meta.start.index`). Its
    /// bytes are kept in memory (bounded by `snapshot_bytes_max`), and the core holds on to
    /// them while it sends them. `None`, the default: the log is its own state machine, and
    /// a follower behind the first index is reset to it instead (`Message::Reset`).
    fn snapshot(&self) -> Option<&Snapshot> {
        None
    }
}

/// Why the store could not hand out entries. The core never crashes on one: it skips the
/// send that needed them and retries on a later tick or response; the caller repairs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("entry {index} is corrupt: {detail}")]
    Corrupt { index: u64, detail: String },
    #[error("entries from {index} are unavailable: {detail}")]
    Unavailable { index: u64, detail: String },
    #[error("entry {index} was compacted away (the log starts at {first_index})")]
    Compacted { index: u64, first_index: u64 },
}

/// A reference to a store is a store (views handed out by reference).
impl<T: LogStore + ?Sized> LogStore for &T {
    fn first_index(&self) -> u64 {
        (**self).first_index()
    }

    fn last_index(&self) -> u64 {
        (**self).last_index()
    }

    fn term(&self, index: u64) -> Option<u64> {
        (**self).term(index)
    }

    fn entries(&self, from: u64, max_bytes: usize, max_count: usize, out: &mut Vec<Entry>) -> Result<(), StoreError> {
        (**self).entries(from, max_bytes, max_count, out)
    }

    fn next_offset(&self) -> u64 {
        (**self).next_offset()
    }

    fn start(&self) -> LogStart {
        (**self).start()
    }

    fn snapshot(&self) -> Option<&Snapshot> {
        (**self).snapshot()
    }
}
