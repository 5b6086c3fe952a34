//! Two-group seeds: the metadata group moves the partition group, as keel's controller does
//! (`broker/moves.rs`). A move is a command committed in the metadata group naming the new
//! replicas; whichever node leads the partition group takes the next step each round from
//! its own configuration (learners, catch-up, joint consensus), and the end is a second
//! command in the metadata group. The metadata state allows one move at a time.

use bytes::{BufMut, Bytes};
use keel::broker::moves::CATCH_UP_LAG_MAX;
use keel::raft::{Entry, MembershipChange, NodeId, Raft, kind};
use std::collections::{BTreeMap, BTreeSet};

/// Starts a command payload; a client's random payload of up to 64 bytes does not start so.
const COMMAND_MAGIC: &[u8] = b"\0keel-sim-metadata\0";

/// A metadata command, carried in a data entry of the metadata group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Move the partition group to these replicas (`Command::MovePartition`).
    Move(BTreeSet<NodeId>),
    /// The partition group's committed configuration is these replicas (`Command::FinishMove`).
    Finish(BTreeSet<NodeId>),
}

impl Command {
    pub fn encode(&self) -> Bytes {
        let (tag, replicas) = match self {
            Command::Move(r) => (b'M', r),
            Command::Finish(r) => (b'F', r),
        };
        let mut out = COMMAND_MAGIC.to_vec();
        out.put_u8(tag);
        replicas.iter().for_each(|id| out.put_u64_le(*id));
        out.into()
    }

    pub fn decode(payload: &[u8]) -> Option<Command> {
        let rest = payload.strip_prefix(COMMAND_MAGIC)?;
        let (tag, ids) = rest.split_first()?;
        let replicas = ids.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).collect();
        match tag {
            b'M' => Some(Command::Move(replicas)),
            b'F' => Some(Command::Finish(replicas)),
            _ => None,
        }
    }
}

/// The partition's entry in the metadata, from the committed metadata log.
#[derive(Clone, Debug)]
pub struct MetaState {
    /// Entries applied so far.
    pub applied: u64,
    pub replicas: BTreeSet<NodeId>,
    /// The move in progress.
    pub target: Option<BTreeSet<NodeId>>,
    /// Every replica set the partition was moved to (the initial one first).
    pub history: Vec<BTreeSet<NodeId>>,
    pub started: u64,
    pub finished: u64,
}

impl MetaState {
    pub fn new(replicas: BTreeSet<NodeId>) -> MetaState {
        MetaState { applied: 0, history: vec![replicas.clone()], replicas, target: None, started: 0, finished: 0 }
    }

    /// Applies committed metadata entries in order; answers what changed, for the trace.
    pub fn apply<'a>(&mut self, committed: impl Iterator<Item = (&'a u64, &'a Entry)>) -> Vec<String> {
        let mut notes = Vec::new();
        for (index, entry) in committed {
            self.applied = *index;
            if entry.kind() != kind::DATA {
                continue;
            }
            match Command::decode(&entry.payload()) {
                // One move at a time: a move proposed while another is in progress is
                // refused when applied, as `MetadataState` refuses it.
                Some(Command::Move(target)) if self.target.is_none() && target != self.replicas => {
                    notes.push(format!("metadata {index}: move {:?} -> {target:?} starts", self.replicas));
                    self.history.push(target.clone());
                    self.target = Some(target);
                    self.started += 1;
                }
                Some(Command::Finish(replicas)) if self.target.as_ref() == Some(&replicas) => {
                    notes.push(format!("metadata {index}: move to {replicas:?} finished"));
                    self.replicas = replicas;
                    self.target = None;
                    self.finished += 1;
                }
                _ => {}
            }
        }
        notes
    }
}

/// The next step of a move, from the configuration of a node that leads the partition
/// group (the simulator's copy of `broker::moves::next_step`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Wait,
    Propose(Vec<MembershipChange>),
    Finish,
    /// The configuration is neither the old replicas, the target, nor between them.
    Stuck(String),
}

pub fn next_step(raft: &Raft, old: &BTreeSet<NodeId>, new: &BTreeSet<NodeId>) -> Step {
    let config = raft.membership();
    let committed = raft.membership_index() <= raft.commit();
    if config.is_joint() || !committed {
        return Step::Wait;
    }
    let strays: Vec<MembershipChange> =
        config.learners.iter().filter(|l| !new.contains(l)).map(|l| MembershipChange::RemoveLearner(*l)).collect();
    if !strays.is_empty() {
        return Step::Propose(strays);
    }
    if config.voters == *new {
        return Step::Finish;
    }
    if config.voters != *old {
        let voters = &config.voters;
        return Step::Stuck(format!("its voters {voters:?} are neither the replicas {old:?} nor the target {new:?}"));
    }
    let joining: Vec<NodeId> = new.difference(old).copied().collect();
    let missing: Vec<MembershipChange> =
        joining.iter().filter(|n| !config.learners.contains(n)).map(|n| MembershipChange::AddLearner(*n)).collect();
    if !missing.is_empty() {
        return Step::Propose(missing);
    }
    let matched: BTreeMap<NodeId, u64> = raft.progress().iter().map(|p| (p.id, p.match_index)).collect();
    let caught_up = |id: &NodeId| matched.get(id).is_some_and(|m| *m > 0 && m + CATCH_UP_LAG_MAX >= raft.commit());
    if !joining.iter().all(caught_up) {
        return Step::Wait;
    }
    let promote = joining.iter().map(|n| MembershipChange::PromoteLearner(*n));
    let remove = old.difference(new).map(|n| MembershipChange::RemoveVoter(*n));
    Step::Propose(promote.chain(remove).collect())
}
