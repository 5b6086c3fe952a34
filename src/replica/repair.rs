//! Storage damage (ARCHITECTURE.md, "Corruption"): cutting the log before a damaged entry,
//! so the entries are fetched again from the leader, and starting a core on what is left.
//! A cut that removes entries this node may have acknowledged sets the vote barrier first
//! (`Raft::set_vote_barrier`). Finding the damage is the backend's (`LogBackend::find_damage`).

use std::collections::BTreeSet;

use segments::SyncMark;
use tracing::error;

use super::backend::{Damage, LogBackend, StorageError};
use super::hard_state::{HardStateStore, Persisted, StateError};
use super::snapshot::WithSnapshot;
use crate::metrics as m;
use crate::raft::{self, HardState, LogStore, Raft, StartError, StoreError, VoteBarrier};

#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error("cutting the log before damaged entry {index}: {source}")]
    Log { index: u64, source: StorageError },
    #[error(transparent)]
    HardState(#[from] StateError),
    #[error("cannot start Raft: {0}")]
    Start(#[from] StartError),
}

/// Cuts the log before damaged entry `bad`, in the order that keeps it safe across a
/// crash at any step: (1) the vote barrier and the lowered commit index are persisted,
/// (2) the log is truncated, (3) what it keeps is synced, so a core restarted on it may
/// take every entry as durable. The barrier covers every entry this node may have
/// acknowledged: all it made durable, and the commit index it knew (`commit`). Returns
/// the commit index to restart the core with.
pub fn cut_before<L: LogBackend, H: HardStateStore>(
    log: &mut L,
    hard: &mut H,
    next: &mut Persisted,
    bad: u64,
    commit: u64,
) -> Result<u64, RepairError> {
    let keep = bad - 1;
    let (synced, last) = (log.synced_index(), log.view().last_index());
    let acked = synced.max(commit).max(next.hard_state.commit);
    if acked > keep {
        // The log's own term of the entry when it still holds it (terms come from the
        // index, not the damaged bytes), else the current term: never lower than the truth.
        let term = (acked <= last).then(|| log.view().term(acked)).flatten();
        raise_barrier(next, VoteBarrier { term: term.unwrap_or(next.hard_state.term), index: acked });
    }
    next.hard_state.commit = next.hard_state.commit.min(keep);
    hard.save(next.clone())?;
    let failed = |source| RepairError::Log { index: bad, source };
    log.write(None, Some(keep), &[]).map_err(failed)?;
    log.sync_now().map_err(failed)?;
    metrics::counter!(m::STORAGE_REPAIRS).increment(1);
    error!(
        bad,
        lost_through = acked.max(keep),
        vote_barrier = ?next.vote_barrier,
        "cut the log before a damaged entry; fetching it again from the leader"
    );
    Ok(commit.min(keep))
}

/// At start: a log that ends below the persisted commit index, or below the sync mark,
/// lost entries this node may have acknowledged: recovery cut damaged bytes in its tail
/// (which the mark tells from an unsynced tail: a sync had made them durable), or the
/// disk lost them. The node restarts from the log it has, and votes only once it holds
/// them again; the barrier is the mark's entry (its own term, exact) unless the commit
/// index reaches further (then the current term, never lower than the truth). `mark` is
/// the log's sync mark as recovery found it.
pub fn check_log_lost_nothing<L: LogBackend, H: HardStateStore>(
    log: &L,
    hard: &mut H,
    mark: SyncMark,
) -> Result<(), StateError> {
    let mut next = hard.persisted().clone();
    let (commit, last) = (next.hard_state.commit, log.view().last_index());
    if commit <= last && mark.index <= last {
        return Ok(());
    }
    metrics::counter!(m::STORAGE_CORRUPTIONS).increment(1);
    let barrier = if mark.index >= commit {
        error!(
            synced = mark.index,
            last, "the log lost entries a sync had made durable; no votes until they are fetched again"
        );
        VoteBarrier { term: mark.term, index: mark.index }
    } else {
        error!(commit, last, "the log lost committed entries; no votes until they are fetched again");
        VoteBarrier { term: next.hard_state.term, index: commit }
    };
    raise_barrier(&mut next, barrier);
    next.hard_state.commit = commit.min(last);
    hard.save(next)
}

/// Starts a core on `log` from the persisted state `next`, with `commit`, and sets its
/// vote barrier. `Raft::new` reads the configuration entries after the commit index: one
/// that is damaged starts as a hole (`Raft::with_holes`), fetched from the peers while
/// the entries after it are kept; past `raft::HOLES_MAX` holes, the log is cut before it
/// (as above), and the start is tried again. Cutting there would raise the vote barrier
/// over every entry after it, which the surviving peers may all lack: no leader then.
pub fn start_core<L: LogBackend, H: HardStateStore>(
    config: raft::Config,
    log: &mut L,
    hard: &mut H,
    next: &mut Persisted,
    commit: u64,
) -> Result<Raft, RepairError> {
    let mut commit = commit;
    let mut holes = BTreeSet::new();
    loop {
        let hard_state = HardState { commit, ..next.hard_state };
        let membership = (next.membership_index, next.membership.clone());
        let started = {
            let store = WithSnapshot::new(log.view(), hard.snapshot());
            Raft::with_holes(config.clone(), hard_state, membership, &store, &holes)
        };
        match started {
            Ok(mut raft) => {
                raft.set_vote_barrier(next.vote_barrier);
                return Ok(raft);
            }
            Err(StartError::Store(StoreError::Corrupt { index, detail })) => {
                // The search starts at a checkpoint, which may lie before a hole already known.
                let found = log.find_damage(index).filter(|d| !holes.contains(&d.index));
                let damage = found.unwrap_or(Damage { index, detail });
                if damage.index > log.view().last_index() || holes.contains(&damage.index) {
                    return Err(StartError::Store(StoreError::Corrupt { index, detail: damage.detail }).into());
                }
                metrics::counter!(m::STORAGE_CORRUPTIONS).increment(1);
                if holes.len() < raft::HOLES_MAX {
                    error!(index = damage.index, detail = %damage.detail, "damaged entry in the log, read at start");
                    holes.insert(damage.index);
                    continue;
                }
                commit = cut_before(log, hard, next, damage.index, commit)?;
                holes.retain(|h| *h < damage.index);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn raise_barrier(next: &mut Persisted, barrier: VoteBarrier) {
    next.vote_barrier = Some(next.vote_barrier.map_or(barrier, |b| b.max(barrier)));
}
