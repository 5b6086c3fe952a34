//! What a replica keeps beside its log: Raft's hard state (term, vote, commit, the last
//! committed configuration, the vote barrier), in a CRC-checked file of two slots
//! rewritten in turn (one write and one fdatasync per save: elections write it on every
//! replica of every group), and the latest snapshot of a state machine that is not the
//! log (`snapshot.rs`).

use std::path::{Path, PathBuf};

use super::snapshot::{self, KIND_SNAPSHOT, SNAPSHOT_FILE, SNAPSHOT_VERSION};
use crate::codec::{DecodeError, Reader};
use crate::raft::{HardState, Membership, Snapshot, VoteBarrier};

use segments::state_file::{self, SLOT_BYTES_MIN, SlotFile, StateFileError};

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

/// Where a replica keeps its hard state and its snapshot: saved durably, read back at start.
pub trait HardStateStore {
    /// What was last saved (on a first start: the initial state).
    fn persisted(&self) -> &Persisted;
    /// Makes `next` durable before returning.
    fn save(&mut self, next: Persisted) -> Result<(), StateError>;
    /// The snapshot last saved, if any.
    fn snapshot(&self) -> Option<&Snapshot>;
    /// Makes `snapshot` durable before returning, in place of the one kept.
    fn save_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StateError>;
}

pub struct HardStateFile {
    dir: PathBuf,
    /// `None` until the first save of a node's first start.
    file: Option<SlotFile>,
    last: Persisted,
    snapshot_path: PathBuf,
    snapshot: Option<Snapshot>,
}

impl HardStateFile {
    /// Opens the file in `dir`; a node's first start uses `initial` (the --peers voters).
    pub fn open(dir: &Path, initial: Membership) -> Result<HardStateFile, StateError> {
        let path = dir.join(HARD_STATE_FILE);
        let (file, read) = match std::fs::metadata(&path) {
            // Written by an earlier keel, replaced whole at every save: read it, and
            // rewrite it in the slotted layout at once.
            Ok(meta) if meta.len() < 2 * SLOT_BYTES_MIN => {
                let (version, payload) = state_file::read(&path, KIND_HARD_STATE)?
                    .ok_or_else(|| StateError::Malformed { path: path.clone(), why: "vanished".into() })?;
                let persisted = decode(version, payload)
                    .map_err(|e| StateError::Malformed { path: path.clone(), why: e.to_string() })?;
                let file = SlotFile::create(&path, KIND_HARD_STATE, HARD_STATE_VERSION, &encode(&persisted))?;
                (Some(file), Some(persisted))
            }
            _ => match SlotFile::open(&path, KIND_HARD_STATE)? {
                None => (None, None),
                Some((file, version, payload)) => {
                    let persisted = decode(version, payload)
                        .map_err(|e| StateError::Malformed { path: path.clone(), why: e.to_string() })?;
                    (Some(file), Some(persisted))
                }
            },
        };
        let last = read.unwrap_or(Persisted {
            hard_state: HardState::default(),
            membership_index: 0,
            membership: initial,
            vote_barrier: None,
        });
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let snapshot = match state_file::read(&snapshot_path, KIND_SNAPSHOT)? {
            None => None,
            Some((version, payload)) => Some(
                snapshot::decode(version, payload)
                    .map_err(|e| StateError::Malformed { path: snapshot_path.clone(), why: e.to_string() })?,
            ),
        };
        Ok(HardStateFile { dir: dir.into(), file, last, snapshot_path, snapshot })
    }
}

impl HardStateStore for HardStateFile {
    fn persisted(&self) -> &Persisted {
        &self.last
    }

    /// Writes and fdatasyncs the new state (a no-op when nothing changed).
    fn save(&mut self, next: Persisted) -> Result<(), StateError> {
        if next == self.last {
            return Ok(());
        }
        assert!(next.hard_state.term >= self.last.hard_state.term, "term never goes backwards");
        let payload = encode(&next);
        match &mut self.file {
            Some(file) => file.write(HARD_STATE_VERSION, &payload)?,
            None => {
                let path = self.dir.join(HARD_STATE_FILE);
                self.file = Some(SlotFile::create(&path, KIND_HARD_STATE, HARD_STATE_VERSION, &payload)?);
            }
        }
        self.last = next;
        Ok(())
    }

    fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    /// Replaces the snapshot file (write a new one, fsync, rename, fsync the directory).
    fn save_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StateError> {
        state_file::write(&self.snapshot_path, KIND_SNAPSHOT, SNAPSHOT_VERSION, &snapshot::encode(&snapshot))?;
        self.snapshot = Some(snapshot);
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
        assert_eq!(reopened.snapshot(), None);
    }

    #[test]
    fn a_snapshot_survives_reopen_beside_the_hard_state() {
        let dir = tempfile::tempdir().unwrap();
        let initial = Membership::new([1, 2, 3]);
        let mut file = HardStateFile::open(dir.path(), initial.clone()).unwrap();
        let start = crate::raft::LogStart { index: 8, prev_term: 2, offset: 30 };
        let first = Snapshot::new(start, (1, initial.clone()), bytes::Bytes::from_static(b"first"));
        file.save_snapshot(first).unwrap();
        let second = Snapshot::new(start, (1, initial.clone()), bytes::Bytes::from(vec![7; 5000]));
        file.save_snapshot(second.clone()).unwrap();
        let reopened = HardStateFile::open(dir.path(), initial.clone()).unwrap();
        assert_eq!(reopened.snapshot(), Some(&second), "the newer snapshot replaced the older");
        let mut bytes = std::fs::read(dir.path().join(SNAPSHOT_FILE)).unwrap();
        bytes[100] ^= 1;
        std::fs::write(dir.path().join(SNAPSHOT_FILE), bytes).unwrap();
        assert!(HardStateFile::open(dir.path(), initial).is_err(), "a damaged snapshot file is refused");
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
        // Rewritten in the slotted layout at once, and read back the same.
        let path = dir.path().join(HARD_STATE_FILE);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * SLOT_BYTES_MIN);
        assert_eq!(HardStateFile::open(dir.path(), Membership::default()).unwrap().persisted(), &want);
    }

    #[test]
    fn saves_rewrite_the_file_in_place_and_the_newest_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let initial = Membership::new([1, 2, 3]);
        let mut file = HardStateFile::open(dir.path(), initial.clone()).unwrap();
        let mut last = file.persisted().clone();
        for term in 1..=5 {
            last.hard_state = HardState { term, vote: Some(term % 3 + 1), commit: term * 10 };
            file.save(last.clone()).unwrap();
            assert_eq!(HardStateFile::open(dir.path(), initial.clone()).unwrap().persisted(), &last);
        }
        let path = dir.path().join(HARD_STATE_FILE);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * SLOT_BYTES_MIN, "never replaced");
    }
}
