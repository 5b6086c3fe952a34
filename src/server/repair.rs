//! Storage damage (ARCHITECTURE.md, "Corruption"): finding the first damaged entry (a
//! scrub after start, a search after a read failed) and cutting the log before it, so
//! the entries are fetched again from the leader. A cut that removes entries this node
//! may have acknowledged sets the vote barrier first (`Raft::set_vote_barrier`).

use std::sync::RwLock;

use segments::Log;
use tracing::{error, warn};

use crate::metrics as m;
use crate::raft::{self, HardState, Raft, StartError, StoreError, VoteBarrier};
use crate::replica::hard_state::{HardStateFile, Persisted, StateError};
use crate::replica::store::{SegmentStore, is_damage};

/// Bytes one `Log::verify` call checks while it holds the log's read lock.
const VERIFY_CHUNK_BYTES: usize = 4 << 20;

/// A damaged entry: the log must be cut before `index`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    pub index: u64,
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error("cutting the log before damaged entry {index}: {source}")]
    Log { index: u64, source: segments::Error },
    #[error(transparent)]
    HardState(#[from] StateError),
    #[error("cannot start Raft: {0}")]
    Start(#[from] StartError),
}

/// Checks every entry from the checkpoint before `from` to the end of the log, a chunk
/// at a time (appends wait at most for one chunk): the first damaged entry, if any.
/// Blocking: run it off the async runtime.
pub fn find_damage(log: &RwLock<Log>, from: u64) -> Option<Damage> {
    let mut next = from;
    loop {
        let log = log.read().expect("log lock");
        if next > log.last_index() {
            return None;
        }
        match log.verify(next, VERIFY_CHUNK_BYTES) {
            Ok(after) => next = after,
            Err(d) if is_damage(&d.error) => return Some(Damage { index: d.index, detail: d.error.to_string() }),
            Err(d) => {
                warn!(index = d.index, error = %d.error, "the log could not be checked for damage");
                return None;
            }
        }
    }
}

/// Whether entry `index` is still damaged (the log may have been cut or rewritten there
/// since the damage was found).
pub fn still_damaged(log: &Log, index: u64) -> bool {
    index >= log.first_index() && index <= log.last_index() && log.verify(index, 1).is_err_and(|d| d.index <= index)
}

/// Cuts the log before damaged entry `bad`, in the order that keeps it safe across a
/// crash at any step: (1) the vote barrier and the lowered commit index are persisted,
/// (2) the log is truncated, (3) what it keeps is synced, so a core restarted on it may
/// take every entry as durable. The barrier covers every entry this node may have
/// acknowledged: all it made durable, and the commit index it knew (`commit`). Returns
/// the commit index to restart the core with.
pub fn cut_before(
    log: &RwLock<Log>,
    hard: &mut HardStateFile,
    next: &mut Persisted,
    bad: u64,
    commit: u64,
) -> Result<u64, RepairError> {
    let keep = bad - 1;
    let (synced, last) = {
        let log = log.read().expect("log lock");
        (log.synced_index(), log.last_index())
    };
    let acked = synced.max(commit).max(next.hard_state.commit);
    if acked > keep {
        // The log's own term of the entry when it still holds it (terms come from the
        // index, not the damaged bytes), else the current term: never lower than the truth.
        let term = (acked <= last).then(|| log.read().expect("log lock").term(acked)).flatten();
        raise_barrier(next, VoteBarrier { term: term.unwrap_or(next.hard_state.term), index: acked });
    }
    next.hard_state.commit = next.hard_state.commit.min(keep);
    hard.save(next.clone())?;
    let mut log = log.write().expect("log lock");
    let failed = |source| RepairError::Log { index: bad, source };
    log.truncate_after(keep).map_err(failed)?;
    log.sync().map_err(failed)?;
    metrics::counter!(m::STORAGE_REPAIRS).increment(1);
    error!(
        bad,
        lost_through = acked.max(keep),
        vote_barrier = ?next.vote_barrier,
        "cut the log before a damaged entry; fetching it again from the leader"
    );
    Ok(commit.min(keep))
}

/// At start: a log that ends below the persisted commit index lost committed entries
/// (recovery cut damaged bytes in its tail, or the disk lost them). The node restarts
/// from the log it has, and votes only once it holds the old commit index again.
pub fn check_commit_within_log(log: &Log, hard: &mut HardStateFile) -> Result<(), StateError> {
    let mut next = hard.persisted().clone();
    let (commit, last) = (next.hard_state.commit, log.last_index());
    if commit <= last {
        return Ok(());
    }
    metrics::counter!(m::STORAGE_CORRUPTIONS).increment(1);
    error!(commit, last, "the log lost committed entries; no votes until they are fetched again");
    let barrier = VoteBarrier { term: next.hard_state.term, index: commit };
    raise_barrier(&mut next, barrier);
    next.hard_state.commit = last;
    hard.save(next)
}

/// Starts a core on `log` from the persisted state `next`, with `commit`, and sets its
/// vote barrier. `Raft::new` reads the configuration entries after the commit index: if
/// one is damaged, the log is cut before it (as above) and the start tried again.
pub fn start_core(
    config: raft::Config,
    log: &RwLock<Log>,
    hard: &mut HardStateFile,
    next: &mut Persisted,
    commit: u64,
) -> Result<Raft, RepairError> {
    let mut commit = commit;
    loop {
        let hard_state = HardState { commit, ..next.hard_state };
        let membership = (next.membership_index, next.membership.clone());
        let started = {
            let log = log.read().expect("log lock");
            Raft::new(config.clone(), hard_state, membership, &SegmentStore::new(&log))
        };
        match started {
            Ok(mut raft) => {
                raft.set_vote_barrier(next.vote_barrier);
                return Ok(raft);
            }
            Err(StartError::Store(StoreError::Corrupt { index, detail })) => {
                let damage = find_damage(log, index).unwrap_or(Damage { index, detail });
                let last = log.read().expect("log lock").last_index();
                if damage.index > last {
                    return Err(StartError::Store(StoreError::Corrupt { index, detail: damage.detail }).into());
                }
                metrics::counter!(m::STORAGE_CORRUPTIONS).increment(1);
                commit = cut_before(log, hard, next, damage.index, commit)?;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn raise_barrier(next: &mut Persisted, barrier: VoteBarrier) {
    next.vote_barrier = Some(next.vote_barrier.map_or(barrier, |b| b.max(barrier)));
}
