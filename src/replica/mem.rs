//! The in-memory storage a `Replica` runs on in the simulator, the core's tests and the
//! benchmarks: a `MemStore` (a live and a durable image of the log) whose writes become
//! durable only when the harness says the disk finished them, and a hard-state store that
//! keeps what was saved. A crash keeps both durable parts and loses the rest.

use std::collections::VecDeque;

use rand::Rng;
use segments::SyncMark;

use super::backend::{Damage, DamageSeen, LogBackend, StorageError};
use super::hard_state::{HardStateStore, Persisted, StateError};
use crate::raft::memstore::MemStore;
use crate::raft::{Entry, LogStart, LogStore, Snapshot};

/// A log write the disk has not finished: once synced, the core hears `persisted(index, term)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingWrite {
    pub seq: u64,
    pub index: u64,
    pub term: u64,
}

/// An in-memory log with one pending write per Ready that changed it, and a sync mark
/// kept as `segments::Log` keeps its own (raised by syncs, lowered by truncations and
/// resets, raised to the recovered end by a crash), which survives damage to the log.
#[derive(Clone, Debug, Default)]
pub struct MemLog {
    pub store: MemStore,
    writes: VecDeque<PendingWrite>,
    mark: SyncMark,
}

impl MemLog {
    pub fn new(store: MemStore) -> MemLog {
        let mut log = MemLog { store, writes: VecDeque::new(), mark: SyncMark::default() };
        log.raise_mark();
        log
    }

    /// Raises the mark to the durable image's end, if it is higher.
    fn raise_mark(&mut self) {
        let durable = self.store.durable();
        let last = durable.last_index();
        if last > self.mark.index {
            self.mark = SyncMark { index: last, term: durable.term(last).expect("the last index has a term") };
        }
    }

    /// Damage to synced entries that recovery cuts at start (a node that is down): the
    /// log keeps entries up to `keep`, and the sync mark still names what was synced.
    pub fn damage_after(&mut self, keep: u64) {
        self.store.lose_after(keep);
        self.writes.clear();
    }

    pub fn pending_writes(&self) -> usize {
        self.writes.len()
    }

    /// The disk finished the oldest pending write: it is durable now. Returns what to
    /// report to `Replica::persisted`.
    pub fn complete_write(&mut self) -> Option<PendingWrite> {
        let write = self.writes.pop_front()?;
        self.store.sync(write.seq);
        self.raise_mark();
        Some(write)
    }

    /// Power loss: unsynced writes are gone, but for an in-order prefix (maybe torn).
    pub fn crash(&mut self, rng: &mut impl Rng, torn: bool) {
        self.store.crash(rng, torn);
        self.writes.clear();
        // Recovery takes what survived as synced (it fsyncs what it read).
        self.raise_mark();
    }
}

impl DamageSeen for &MemStore {
    fn damage_seen(&self) -> Option<u64> {
        None
    }
}

impl LogBackend for MemLog {
    type View<'a> = &'a MemStore;

    fn view(&self) -> &MemStore {
        &self.store
    }

    fn write(
        &mut self,
        reset: Option<LogStart>,
        truncate_after: Option<u64>,
        entries: &[Entry],
    ) -> Result<(), StorageError> {
        // Resets and truncations lower the mark first, as `segments::Log` does (after a
        // reset, a truncation is at or after its start: the mark is low enough already).
        let reset_kept = reset.map(|s| SyncMark { index: s.index - 1, term: s.prev_term });
        let truncation_kept = truncate_after.map(|index| SyncMark { index, term: self.store.term(index).unwrap_or(0) });
        for kept in [reset_kept, truncation_kept].into_iter().flatten() {
            if kept.index < self.mark.index {
                self.mark = kept;
            }
        }
        if self.store.write_changes(reset, truncate_after, entries) {
            let index = self.store.last_index();
            let term = self.store.term(index).expect("the last index has a term");
            self.writes.push_back(PendingWrite { seq: self.store.written(), index, term });
        }
        Ok(())
    }

    fn synced_index(&self) -> u64 {
        self.store.durable().last_index()
    }

    fn sync_mark(&self) -> SyncMark {
        self.mark
    }

    fn sync_now(&mut self) -> Result<(), StorageError> {
        self.store.sync(self.store.written());
        self.writes.clear();
        self.raise_mark();
        Ok(())
    }

    fn drop_before(&mut self, index: u64) -> Result<usize, StorageError> {
        if index <= self.store.first_index() {
            return Ok(0);
        }
        self.store.compact(index - 1);
        Ok(1)
    }

    /// The harness says which entries are damaged; they stay so while the log holds them.
    fn still_damaged(&self, index: u64) -> bool {
        index >= self.store.first_index() && index <= self.store.last_index()
    }

    fn find_damage(&self, _from: u64) -> Option<Damage> {
        None
    }

    /// The harness's damage leaves the bytes in memory: a copy the core accepted must be
    /// exactly them (Log Matching), or the core's checks are wrong, which this asserts.
    fn rewrite_damaged(&mut self, entry: &Entry) -> Result<Result<(), String>, StorageError> {
        let mut held = Vec::new();
        if self.store.entries(entry.index(), 1, 1, &mut held).is_err() || held.is_empty() {
            return Ok(Err(format!("entry {} is no longer in the log", entry.index())));
        }
        assert_eq!(held.first(), Some(entry), "a peer's copy of damaged entry {} is not the entry", entry.index());
        Ok(Ok(()))
    }
}

/// Hard state and a snapshot that are durable as soon as they are saved.
#[derive(Clone, Debug)]
pub struct MemHardState {
    pub persisted: Persisted,
    pub snapshot: Option<Snapshot>,
}

impl MemHardState {
    pub fn new(persisted: Persisted) -> MemHardState {
        MemHardState { persisted, snapshot: None }
    }
}

impl HardStateStore for MemHardState {
    fn persisted(&self) -> &Persisted {
        &self.persisted
    }

    fn save(&mut self, next: Persisted) -> Result<(), StateError> {
        assert!(next.hard_state.term >= self.persisted.hard_state.term, "term never goes backwards");
        self.persisted = next;
        Ok(())
    }

    fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    fn save_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StateError> {
        assert!(snapshot.is_intact(), "a snapshot's bytes match its description");
        self.snapshot = Some(snapshot);
        Ok(())
    }
}
