//! The in-memory storage a `Replica` runs on in the simulator, the core's tests and the
//! benchmarks: a `MemStore` (a live and a durable image of the log) whose writes become
//! durable only when the harness says the disk finished them, and a hard-state store that
//! keeps what was saved. A crash keeps both durable parts and loses the rest.

use std::collections::VecDeque;

use rand::Rng;

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

/// An in-memory log with one pending write per Ready that changed it.
#[derive(Clone, Debug, Default)]
pub struct MemLog {
    pub store: MemStore,
    writes: VecDeque<PendingWrite>,
}

impl MemLog {
    pub fn new(store: MemStore) -> MemLog {
        MemLog { store, writes: VecDeque::new() }
    }

    pub fn pending_writes(&self) -> usize {
        self.writes.len()
    }

    /// The disk finished the oldest pending write: it is durable now. Returns what to
    /// report to `Replica::persisted`.
    pub fn complete_write(&mut self) -> Option<PendingWrite> {
        let write = self.writes.pop_front()?;
        self.store.sync(write.seq);
        Some(write)
    }

    /// Power loss: unsynced writes are gone, but for an in-order prefix (maybe torn).
    pub fn crash(&mut self, rng: &mut impl Rng, torn: bool) {
        self.store.crash(rng, torn);
        self.writes.clear();
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

    fn sync_now(&mut self) -> Result<(), StorageError> {
        self.store.sync(self.store.written());
        self.writes.clear();
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
