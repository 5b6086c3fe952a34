//! One durable member of one Raft group: the core, its log and its hard state, with no
//! tokio and no network — what quinn-proto is to quinn. The caller feeds it ticks, peer
//! messages, proposals and the disk's sync reports, and calls `apply_ready`, which carries
//! out the core's Ready in the contract's order (`raft/ready.rs`): hard state durable when
//! it must be, then the log written; the caller then sends the Ready's messages and makes
//! the writes durable (group commit), reporting back with `persisted`.
//!
//! The server drives a `Replica<SharedLog, HardStateFile>` from a tokio task
//! (`server/group.rs`); the simulator and the core's tests drive a `Replica<MemLog,
//! MemHardState>` (`replica/testkit.rs`): the same code, so the simulator checks what ships.
//!
//! Files: `backend.rs` (the storage trait and the segments log behind it), `mem.rs` (the
//! in-memory storage), `hard_state.rs` (the hard-state file, and the snapshot file beside
//! it), `snapshot.rs` (the snapshot's format, finishing an install after a crash),
//! `store.rs` (the core's view of a segments log), `repair.rs` (cutting damaged entries,
//! the vote barrier), `retention.rs` (which prefix to delete), `testkit.rs` (an in-memory
//! cluster of replicas).

pub mod backend;
pub mod hard_state;
pub mod mem;
pub mod repair;
pub mod retention;
pub mod snapshot;
pub mod store;
pub mod testkit;

use std::collections::BTreeSet;

use bytes::Bytes;

use crate::raft::{
    self, LogStart, LogStore, MembershipChange, Message, NodeId, Proposal, ProposeError, Raft, Ready, Snapshot,
    SnapshotMeta, TransferError, WakeReason,
};
use backend::{DamageSeen, LogBackend, StorageError};
use hard_state::{HardStateStore, Persisted, StateError};
use repair::RepairError;
use snapshot::{SnapshotError, WithSnapshot};

/// What readers may serve: the committed prefix of the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Committed {
    pub index: u64,
    /// The offset after the last committed record.
    pub next_offset: u64,
}

/// What `Replica::repair_damage` did about a damaged entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repair {
    /// The entry is no longer in the log, or no longer damaged.
    Gone,
    /// Kept in place with the entries after it, and fetched again from the peers
    /// (`raft/refetch.rs`); the core and its role are unchanged.
    Hole,
    /// The log was cut before it and a fresh core started as a follower (`repair`).
    Cut,
}

/// A Ready whose hard state and log changes were carried out.
#[derive(Debug)]
#[must_use = "the Ready's messages must be sent"]
pub struct Applied {
    /// Send `messages` now; `commit`, `soft_state` and the rest say what changed. With
    /// `snapshot`, the replica saved a leader's snapshot durably and restarted the log
    /// right after it: a driver with a state machine restores it from those bytes, then
    /// applies committed entries from the snapshot's `start.index` on. `quiesced` says
    /// whether the ticker may skip this replica (`Raft::is_quiesced`).
    pub ready: Ready,
    /// The committed prefix, when it advanced.
    pub committed: Option<Committed>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("hard state: {0}")]
    HardState(#[from] StateError),
    #[error(transparent)]
    Repair(#[from] RepairError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

pub struct Replica<L: LogBackend, H: HardStateStore> {
    raft: Raft,
    log: L,
    hard: H,
    /// The hard state to persist: ahead of `hard.persisted()` while `hard_dirty`.
    next_hard: Persisted,
    hard_dirty: bool,
    committed: Committed,
    /// A read came across damaged bytes at or after the checkpoint before this index.
    damage_hint: Option<u64>,
    /// Holes whose intact copy the storage refused to write back: cut at the next repair.
    /// At most `raft::HOLES_MAX`; emptied by a cut.
    rewrite_refused: BTreeSet<u64>,
}

impl<L: LogBackend, H: HardStateStore> Replica<L, H> {
    /// Starts a replica on what the disk holds. A log that lost committed or synced
    /// entries, or whose configuration entries are damaged, is cut and the vote barrier
    /// set (`repair.rs`).
    pub fn open(config: raft::Config, mut log: L, mut hard: H) -> Result<Self, ReplicaError> {
        // The sync mark as recovery left it: finishing a snapshot's install may reset the
        // log, which lowers the mark, and must not hide what recovery lost.
        let mark = log.sync_mark();
        snapshot::restart_log_after_snapshot(&mut log, &mut hard)?;
        repair::check_log_lost_nothing(&log, &mut hard, mark)?;
        let mut next_hard = hard.persisted().clone();
        let commit = next_hard.hard_state.commit;
        let raft = repair::start_core(config, &mut log, &mut hard, &mut next_hard, commit)?;
        let mut replica = Replica {
            raft,
            log,
            hard,
            next_hard,
            hard_dirty: false,
            committed: Committed::default(),
            damage_hint: None,
            rewrite_refused: BTreeSet::new(),
        };
        replica.committed = replica.committed_at(replica.raft.commit());
        Ok(replica)
    }

    /// Gives back the storage (a crash in the simulator; the core's memory is gone).
    pub fn into_parts(self) -> (L, H) {
        (self.log, self.hard)
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    pub fn log(&self) -> &L {
        &self.log
    }

    /// The storage, for what the core does not decide: retention, tests that damage it.
    pub fn log_mut(&mut self) -> &mut L {
        &mut self.log
    }

    /// The hard-state store: what it holds is durable (the lazily written part may be ahead).
    pub fn hard(&self) -> &H {
        &self.hard
    }

    pub fn committed(&self) -> Committed {
        self.committed
    }

    /// The offset the next proposed batch's first record gets (the core's log, its changes
    /// not handed out yet included).
    pub fn next_offset(&self) -> u64 {
        self.raft.next_offset(&self.log.view())
    }

    /// The snapshot kept: a driver with a state machine starts from it, then applies the
    /// committed entries after it.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.hard.snapshot()
    }

    /// The driver's state machine, with every entry through `index` applied, is `data`:
    /// keep it as this replica's snapshot (durably, in place of the last), so that the log
    /// may drop the entries through `index` (`log_mut().drop_before(index + 1)`) and a
    /// follower that needs them is sent the snapshot instead. `index` must be committed and
    /// durable here (`committed()`), still known to the log, and past the snapshot kept.
    pub fn save_snapshot(&mut self, index: u64, data: Bytes) -> Result<SnapshotMeta, ReplicaError> {
        let committed = self.committed.index;
        if index > committed {
            return Err(SnapshotError::NotCommitted { index, committed }.into());
        }
        if let Some(kept) = self.hard.snapshot().map(|s| s.meta.index()).filter(|kept| index <= *kept) {
            return Err(SnapshotError::Older { index, kept }.into());
        }
        let (bytes, max) = (data.len() as u64, self.raft.config().snapshot_bytes_max);
        if bytes > max {
            return Err(SnapshotError::TooLarge { bytes, max }.into());
        }
        let view = self.log.view();
        let (term, offset) = (view.term(index), self.raft.offset_after(index, &view));
        let (Some(prev_term), Ok(offset)) = (term, offset) else {
            return Err(SnapshotError::Compacted { index, first_index: view.first_index() }.into());
        };
        drop(view);
        // The configuration committed here: persisted before any commit at or above it.
        let membership = (self.next_hard.membership_index, self.next_hard.membership.clone());
        let snapshot = Snapshot::new(LogStart { index: index + 1, prev_term, offset }, membership, data);
        let meta = snapshot.meta.clone();
        self.hard.save_snapshot(snapshot)?;
        Ok(meta)
    }

    /// The group is quiet here: the ticker may skip it (`Raft::is_quiesced`).
    pub fn is_quiesced(&self) -> bool {
        self.raft.is_quiesced()
    }

    /// The node's failure detector decided a node is down (`Raft::wake`).
    pub fn wake(&mut self, reason: WakeReason) {
        self.core(|raft, store| raft.wake(reason, store));
    }

    pub fn tick(&mut self) {
        self.core(|raft, store| raft.tick(store));
    }

    pub fn step(&mut self, from: NodeId, msg: Message) {
        self.core(|raft, store| raft.step(from, msg, store));
    }

    pub fn propose(&mut self, payload: &[u8], record_count: u32) -> Result<Proposal, ProposeError> {
        self.core(|raft, store| raft.propose(payload, record_count, store))
    }

    pub fn propose_membership(
        &mut self,
        changes: &[MembershipChange],
        addresses: &[(NodeId, String)],
    ) -> Result<u64, ProposeError> {
        self.core(|raft, store| raft.propose_membership(changes, addresses, store))
    }

    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), TransferError> {
        self.core(|raft, store| raft.transfer_leadership(to, store))
    }

    /// A sync made the log durable through `index`, whose entry has `term`. The log's own
    /// synced index is the truth: a cut since this sync began (a repair, a conflict)
    /// lowered it, and entries written again after the cut are not durable until the next
    /// sync, which will say so.
    pub fn persisted(&mut self, index: u64, term: u64) {
        let durable = self.log.synced_index();
        let (index, term) =
            if index <= durable { (index, term) } else { (durable, self.log.view().term(durable).unwrap_or(0)) };
        self.core(|raft, store| raft.persisted(index, term, store));
    }

    pub fn has_ready(&self) -> bool {
        self.raft.has_ready()
    }

    /// Carries out the core's outputs in the contract's order, up to the point where the
    /// messages may leave: the hard state is durable if it must be (written lazily if only
    /// the commit moved), the committed configuration is persisted, the log is written.
    pub fn apply_ready(&mut self) -> Result<Option<Applied>, ReplicaError> {
        if !self.raft.has_ready() {
            return Ok(None);
        }
        let rewrote = self.write_back_holes()?;
        if !self.raft.has_ready() {
            // A hole closed: the committed prefix may read further now, and the state
            // machines that stopped at the hole go on.
            let committed = rewrote.then(|| self.refresh_committed());
            return Ok(committed.map(|committed| Applied { ready: Ready::default(), committed: Some(committed) }));
        }
        let ready = self.raft.take_ready();
        // 0. A leader's snapshot: durable before the hard state and the log refer to it.
        if let Some(snapshot) = &ready.snapshot {
            self.hard.save_snapshot(snapshot.clone())?;
        }
        if self.raft.vote_barrier().is_none() && self.next_hard.vote_barrier.is_some() {
            // Lifted: the entries up to it are durable again. Forgetting it may be lazy.
            self.next_hard.vote_barrier = None;
            self.hard_dirty = true;
        }
        // 1. Hard state: durable before any message of this Ready leaves.
        let mut save_now = false;
        if let Some(hs) = ready.hard_state {
            self.next_hard.hard_state = hs;
            save_now |= ready.hard_state_must_sync;
            self.hard_dirty = true;
        }
        if let Some((index, membership)) = &ready.committed_membership {
            self.next_hard.membership_index = *index;
            self.next_hard.membership = membership.clone();
            save_now = true;
        }
        if save_now {
            self.hard.save(self.next_hard.clone())?;
            self.hard_dirty = false;
        }
        // 2. The log: reset, truncate, append. Written now, made durable by a later sync.
        if ready.has_storage() {
            if let Some(index) = ready.truncate_after {
                assert!(index >= self.committed.index, "a committed entry is never truncated");
            }
            self.log.write(ready.reset.as_ref().map(|(start, _)| *start), ready.truncate_after, &ready.entries)?;
        }
        let committed = ready
            .commit
            .map(|commit| {
                assert!(commit >= self.committed.index, "the commit index never decreases");
                self.committed = self.committed_at(commit);
                self.committed
            })
            .or_else(|| rewrote.then(|| self.refresh_committed()));
        Ok(Some(Applied { ready, committed }))
    }

    /// Writes the peers' intact copies of damaged entries back in place, durably, and tells
    /// the core, before anything it says next goes out: only then may it count them. Then
    /// the scrub looks again from there (damage may continue after a written-back entry).
    /// A copy the storage refuses stays a hole, and the next repair cuts the log there, as
    /// for a hole no peer filled for long (`Raft::take_unfilled`).
    /// Answers whether it wrote any back.
    fn write_back_holes(&mut self) -> Result<bool, ReplicaError> {
        let mut rewrote = false;
        for index in self.raft.take_unfilled() {
            if self.rewrite_refused.len() < raft::HOLES_MAX {
                self.rewrite_refused.insert(index);
            }
            self.damage_hint = Some(self.damage_hint.map_or(index, |h| h.min(index)));
        }
        for entry in self.raft.take_rewrites() {
            let index = entry.index();
            match self.log.rewrite_damaged(&entry)? {
                Ok(()) => {
                    rewrote = true;
                    metrics::counter!(crate::metrics::STORAGE_REPAIRS).increment(1);
                    self.core(|raft, store| raft.rewritten(index, store));
                }
                Err(why) => {
                    tracing::warn!(index, why, "a damaged entry cannot be written back; the log will be cut there");
                    if self.rewrite_refused.len() < raft::HOLES_MAX {
                        self.rewrite_refused.insert(index);
                    }
                }
            }
            self.damage_hint = Some(self.damage_hint.map_or(index, |h| h.min(index)));
        }
        Ok(rewrote)
    }

    /// The committed prefix at the same commit index, read again (after a write-back).
    fn refresh_committed(&mut self) -> Committed {
        self.committed = self.committed_at(self.committed.index);
        self.committed
    }

    /// Writes the lazily kept hard state (only the commit index or a lifted barrier moved).
    pub fn flush_lazy(&mut self) -> Result<(), ReplicaError> {
        if self.hard_dirty {
            self.hard.save(self.next_hard.clone())?;
            self.hard_dirty = false;
        }
        Ok(())
    }

    /// Makes everything durable: the log and the hard state (a clean stop).
    pub fn sync_all(&mut self) -> Result<(), ReplicaError> {
        self.log.sync_now()?;
        self.flush_lazy()
    }

    /// Holes this replica will cut at its next repair (`repair_damage`), lowest first.
    pub fn holes_to_cut(&self) -> Vec<u64> {
        self.rewrite_refused.iter().copied().filter(|i| self.raft.holes().contains(i)).collect()
    }

    /// Where the last reads came across damaged bytes, once: search from here.
    pub fn take_damage_hint(&mut self) -> Option<u64> {
        self.damage_hint.take()
    }

    /// Damage found at entry `index`: the replica stops serving and voting with what it
    /// cannot trust. The log is cut before it (ARCHITECTURE.md, "Corruption"), and a fresh
    /// core starts on it as a follower in the same term, with the same vote, the lowered
    /// commit index and, if the cut took entries it may have acknowledged, the vote
    /// barrier; the leader sends the entries again. False if the entry is no longer there
    /// or no longer damaged.
    pub fn repair(&mut self, index: u64) -> Result<bool, ReplicaError> {
        if !self.log.still_damaged(index) {
            return Ok(false);
        }
        let commit = repair::cut_before(&mut self.log, &mut self.hard, &mut self.next_hard, index, self.raft.commit())?;
        let config = self.raft.config().clone();
        self.raft = repair::start_core(config, &mut self.log, &mut self.hard, &mut self.next_hard, commit)?;
        self.hard_dirty = false;
        self.committed = self.committed_at(self.raft.commit());
        Ok(true)
    }

    /// Damage found at entry `index`: kept as a hole, with the intact entries after it,
    /// while the core can fetch it again from a peer and the storage can write it back
    /// (ARCHITECTURE.md, "Corruption"; `raft/refetch.rs`); otherwise cut as `repair` does.
    pub fn repair_damage(&mut self, index: u64) -> Result<Repair, ReplicaError> {
        if !self.log.still_damaged(index) {
            return Ok(Repair::Gone);
        }
        let refused = self.rewrite_refused.contains(&index);
        if !refused && (self.raft.holes().contains(&index) || self.core(|raft, store| raft.add_hole(index, store))) {
            return Ok(Repair::Hole);
        }
        self.rewrite_refused.clear();
        // A cut starts a fresh core, which knows no holes: it goes below every hole still
        // open, or the new core would count those damaged entries as held.
        let index =
            self.raft.holes().iter().copied().find(|h| *h < index && self.log.still_damaged(*h)).unwrap_or(index);
        Ok(if self.repair(index)? { Repair::Cut } else { Repair::Gone })
    }

    /// The committed prefix through `index`.
    fn committed_at(&self, index: u64) -> Committed {
        let view = self.log.view();
        // Entry `index` unreadable (a hole): the prefix already known, never a lower one
        // at the same or a higher commit (that would hide committed records from readers).
        let known = if index >= self.committed.index { self.committed.next_offset } else { view.start().offset };
        let next_offset = self.raft.offset_after(index, &view).unwrap_or(known);
        Committed { index, next_offset }
    }

    /// Calls into the core with a view of the log and the snapshot; damage a read came
    /// across is remembered.
    fn core<R>(&mut self, f: impl FnOnce(&mut Raft, &WithSnapshot<'_, L::View<'_>>) -> R) -> R {
        let view = WithSnapshot::new(self.log.view(), self.hard.snapshot());
        let out = f(&mut self.raft, &view);
        if let Some(index) = view.damage_seen() {
            tracing::warn!(index, "reading entries found damaged bytes");
            self.damage_hint = Some(self.damage_hint.map_or(index, |h| h.min(index)));
        }
        out
    }
}
