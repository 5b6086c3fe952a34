//! The storage a replica writes its log to: the four writes the Ready contract asks for,
//! and what the replica needs to know about durability and damage. `SharedLog` is the
//! real one (a `segments::Log` that readers share); `replica::mem` has the in-memory one
//! the simulator and the core's tests run on, so both drive the same `Replica`.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use segments::{Entry, Log, SyncMark};

use super::store::{SegmentStore, is_damage, to_segments_start};
use crate::raft::{LogStart, LogStore};

/// Bytes one `Log::verify` call checks while it holds the log's read lock.
const VERIFY_CHUNK_BYTES: usize = 4 << 20;

/// A log write or sync failed: the replica stops, so that it never acknowledges what it
/// may not have written (ARCHITECTURE.md, "a failed log write or fsync stops the node").
#[derive(Debug, thiserror::Error)]
#[error("log storage failed: {0}; the node stops so that it never acknowledges what it did not write")]
pub struct StorageError(#[from] pub segments::Error);

/// A damaged entry: the log must be cut before `index`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    pub index: u64,
    pub detail: String,
}

/// What a replica needs from the storage under its log.
pub trait LogBackend {
    /// The core's read-only view for one call.
    type View<'a>: LogStore + DamageSeen
    where
        Self: 'a;

    fn view(&self) -> Self::View<'_>;

    /// Applies one Ready's log changes, in the contract's order: reset, truncate, append.
    /// Written, not yet durable: a sync covers them later and reports `synced_index`.
    fn write(
        &mut self,
        reset: Option<LogStart>,
        truncate_after: Option<u64>,
        entries: &[Entry],
    ) -> Result<(), StorageError>;

    /// The last index known durable.
    fn synced_index(&self) -> u64;

    /// The highest entry a finished sync made durable, kept durably by every sync that
    /// covers more (`segments::Log::sync_mark`). Above the last index at open, the log
    /// lost synced entries to damage: entries this node may have acknowledged.
    fn sync_mark(&self) -> SyncMark;

    /// Makes everything written so far durable, now (repairs, shutdown).
    fn sync_now(&mut self) -> Result<(), StorageError>;

    /// Deletes whole sealed segments before `index` (retention); how many went.
    fn drop_before(&mut self, index: u64) -> Result<usize, StorageError>;

    /// Whether entry `index` is still damaged (the log may have been cut or written again
    /// there since the damage was found).
    fn still_damaged(&self, index: u64) -> bool;

    /// The first damaged entry from the checkpoint before `from` on, if any. Blocking: on
    /// a real disk it reads the rest of the log.
    fn find_damage(&self, from: u64) -> Option<Damage>;

    /// Writes damaged entry `entry.index()` back in place with `entry`, an intact copy of
    /// it, durably (`segments::Log::rewrite_damaged`). `Ok(Err(why))`: the storage refuses
    /// (the copy does not fit where the entry was); the log must be cut before it instead.
    fn rewrite_damaged(&mut self, entry: &Entry) -> Result<Result<(), String>, StorageError>;
}

/// Whether a read through a view came across damaged bytes.
pub trait DamageSeen {
    /// The first bad entry is at or after the checkpoint before this index.
    fn damage_seen(&self) -> Option<u64>;
}

/// A `segments::Log` behind a lock: the replica writes it, fetches read it directly.
/// Cloning shares the log.
#[derive(Clone)]
pub struct SharedLog(Arc<RwLock<Log>>);

impl SharedLog {
    pub fn new(log: Log) -> SharedLog {
        SharedLog(Arc::new(RwLock::new(log)))
    }

    pub fn read(&self) -> RwLockReadGuard<'_, Log> {
        self.0.read().expect("log lock")
    }

    pub fn write_lock(&self) -> RwLockWriteGuard<'_, Log> {
        self.0.write().expect("log lock")
    }

    pub fn arc(&self) -> &Arc<RwLock<Log>> {
        &self.0
    }
}

impl LogBackend for SharedLog {
    type View<'a> = SegmentStore<RwLockReadGuard<'a, Log>>;

    fn view(&self) -> Self::View<'_> {
        SegmentStore::new(self.read())
    }

    fn write(
        &mut self,
        reset: Option<LogStart>,
        truncate_after: Option<u64>,
        entries: &[Entry],
    ) -> Result<(), StorageError> {
        let mut log = self.write_lock();
        if let Some(start) = reset {
            tracing::info!(index = start.index, offset = start.offset, "log reset to the leader's log start");
            log.reset(to_segments_start(start))?;
        }
        if let Some(index) = truncate_after {
            log.truncate_after(index)?;
        }
        if !entries.is_empty() {
            log.append(entries)?;
        }
        Ok(())
    }

    fn synced_index(&self) -> u64 {
        self.read().synced_index()
    }

    fn sync_mark(&self) -> SyncMark {
        self.read().sync_mark()
    }

    fn sync_now(&mut self) -> Result<(), StorageError> {
        Ok(self.write_lock().sync()?)
    }

    fn drop_before(&mut self, index: u64) -> Result<usize, StorageError> {
        Ok(self.write_lock().drop_before(index)?)
    }

    fn still_damaged(&self, index: u64) -> bool {
        let log = self.read();
        index >= log.first_index() && index <= log.last_index() && log.verify(index, 1).is_err_and(|d| d.index <= index)
    }

    fn rewrite_damaged(&mut self, entry: &Entry) -> Result<Result<(), String>, StorageError> {
        match self.write_lock().rewrite_damaged(entry) {
            Ok(_) => Ok(Ok(())),
            Err(e) if is_damage(&e) || matches!(e, segments::Error::RewriteRefused { .. }) => Ok(Err(e.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    /// Checks a chunk at a time under the read lock, so appends wait at most for one chunk.
    fn find_damage(&self, from: u64) -> Option<Damage> {
        let mut next = from;
        loop {
            let log = self.read();
            if next > log.last_index() {
                return None;
            }
            match log.verify(next, VERIFY_CHUNK_BYTES) {
                Ok(after) => next = after,
                Err(d) if is_damage(&d.error) => return Some(Damage { index: d.index, detail: d.error.to_string() }),
                Err(d) => {
                    tracing::warn!(index = d.index, error = %d.error, "the log could not be checked for damage");
                    return None;
                }
            }
        }
    }
}
