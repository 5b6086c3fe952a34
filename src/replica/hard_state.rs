//! What a replica keeps beside its log: Raft's hard state (term, vote, commit, the last
//! committed configuration, the vote barrier), in a CRC-checked file replaced atomically.

use std::path::{Path, PathBuf};

use crate::codec::{DecodeError, Reader};
use crate::raft::{HardState, Membership, VoteBarrier};

use segments::state_file::{self, StateFileError};

const HARD_STATE_FILE: &str = "hard-state";
const KIND_HARD_STATE: u8 = 2;
/// Version 2 of the hard state adds the vote barrier.
const HARD_STATE_VERSION: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    File(#[from] StateFileError),
    #[error("{path} is malformed: {why}")]
    Malformed { path: PathBuf, why: String },
}

/// The persisted hard state and the last committed configuration (with its index).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Persisted {
    pub hard_state: HardState,
    pub membership_index: u64,
    pub membership: Membership,
    /// Where the log ended before damage was cut from it (`Raft::set_vote_barrier`).
    pub vote_barrier: Option<VoteBarrier>,
}

/// Where a replica keeps its hard state: saved durably, read back at start.
pub trait HardStateStore {
    /// What was last saved (on a first start: the initial state).
    fn persisted(&self) -> &Persisted;
    /// Makes `next` durable before returning.
    fn save(&mut self, next: Persisted) -> Result<(), StateError>;
}

pub struct HardStateFile {
    path: PathBuf,
    last: Persisted,
}

impl HardStateFile {
    /// Opens the file in `dir`; a node's first start uses `initial` (the --peers voters).
    pub fn open(dir: &Path, initial: Membership) -> Result<HardStateFile, StateError> {
        let path = dir.join(HARD_STATE_FILE);
        let last = match state_file::read(&path, KIND_HARD_STATE)? {
            None => Persisted {
                hard_state: HardState::default(),
                membership_index: 0,
                membership: initial,
                vote_barrier: None,
            },
            Some((version, payload)) => decode(version, payload)
                .map_err(|e| StateError::Malformed { path: path.clone(), why: e.to_string() })?,
        };
        Ok(HardStateFile { path, last })
    }
}

impl HardStateStore for HardStateFile {
    fn persisted(&self) -> &Persisted {
        &self.last
    }

    /// Writes and fsyncs the new state (a no-op when nothing changed).
    fn save(&mut self, next: Persisted) -> Result<(), StateError> {
        if next == self.last {
            return Ok(());
        }
        assert!(next.hard_state.term >= self.last.hard_state.term, "term never goes backwards");
        state_file::write(&self.path, KIND_HARD_STATE, HARD_STATE_VERSION, &encode(&next))?;
        self.last = next;
        Ok(())
    }
}

fn encode(p: &Persisted) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&p.hard_state.term.to_le_bytes());
    out.extend_from_slice(&p.hard_state.vote.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&p.hard_state.commit.to_le_bytes());
    out.extend_from_slice(&p.membership_index.to_le_bytes());
    let barrier = p.vote_barrier.unwrap_or_default();
    out.extend_from_slice(&barrier.index.to_le_bytes());
    out.extend_from_slice(&barrier.term.to_le_bytes());
    out.extend_from_slice(&p.membership.encode());
    out
}

/// Version 1 has no vote barrier; version 2 has its index and term (0 and 0 for none)
/// after the membership index.
fn decode(version: u8, payload: Vec<u8>) -> Result<Persisted, DecodeError> {
    let mut r = Reader::new(payload.into());
    let term = r.u64("term")?;
    let vote = r.u64("vote")?;
    let commit = r.u64("commit")?;
    let membership_index = r.u64("membership index")?;
    let vote_barrier = match version {
        1 => None,
        2 => {
            let (index, term) = (r.u64("vote barrier index")?, r.u64("vote barrier term")?);
            (index > 0).then_some(VoteBarrier { term, index })
        }
        _ => return Err(DecodeError::Invalid { what: "hard state version" }),
    };
    let membership = Membership::decode(&r.rest()).map_err(|_| DecodeError::Invalid { what: "membership" })?;
    Ok(Persisted {
        hard_state: HardState { term, vote: (vote != 0).then_some(vote), commit },
        membership_index,
        membership,
        vote_barrier,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let initial = Membership { voters: [1, 2, 3].into(), ..Membership::default() };
        let mut file = HardStateFile::open(dir.path(), initial.clone()).unwrap();
        assert_eq!(file.persisted().membership, initial);
        let next = Persisted {
            hard_state: HardState { term: 4, vote: Some(2), commit: 9 },
            membership_index: 3,
            membership: Membership { voters: [1, 2].into(), ..Membership::default() },
            vote_barrier: Some(VoteBarrier { term: 3, index: 12 }),
        };
        file.save(next.clone()).unwrap();
        let reopened = HardStateFile::open(dir.path(), initial).unwrap();
        assert_eq!(reopened.persisted(), &next);
    }

    #[test]
    fn a_version_1_hard_state_reads_with_no_vote_barrier() {
        let dir = tempfile::tempdir().unwrap();
        let membership = Membership { voters: [1, 2, 3].into(), ..Membership::default() };
        let mut v1 = Vec::new();
        for n in [5u64, 2, 40, 1] {
            v1.extend_from_slice(&n.to_le_bytes());
        }
        v1.extend_from_slice(&membership.encode());
        state_file::write(&dir.path().join(HARD_STATE_FILE), KIND_HARD_STATE, 1, &v1).unwrap();
        let file = HardStateFile::open(dir.path(), Membership::default()).unwrap();
        let want = Persisted {
            hard_state: HardState { term: 5, vote: Some(2), commit: 40 },
            membership_index: 1,
            membership,
            vote_barrier: None,
        };
        assert_eq!(file.persisted(), &want);
    }
}
