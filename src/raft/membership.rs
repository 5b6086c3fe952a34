//! Cluster configurations (Raft §6): who votes, who learns, how quorums are counted in a
//! joint configuration, the configuration entry's byte format, and the configurations a
//! node's log holds.

use super::NodeId;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Members in one configuration, voters and learners together; bounds the decoder too.
pub const MEMBERS_MAX: usize = 64;

/// Longest member address a configuration carries.
pub const ADDRESS_BYTES_MAX: usize = 255;

/// Version byte at the start of an encoded configuration. Version 2 added the members'
/// addresses; version 1 (none) is still read.
const FORMAT_VERSION: u8 = 2;

/// A configuration. With `voters_outgoing` non-empty it is the joint configuration
/// C_old,new (Raft §6): `voters` is C_new, `voters_outgoing` is C_old, and every decision
/// (election, commit) needs a majority of each.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    pub voters: BTreeSet<NodeId>,
    pub voters_outgoing: BTreeSet<NodeId>,
    /// Receive the log but never vote; promoted to voters once caught up.
    pub learners: BTreeSet<NodeId>,
    /// Where members listen (`host:port`), opaque to the core. A member added later is
    /// known only to the leader that added it; carried in the configuration entry, its
    /// address reaches every replica, so the next leader can reach it too.
    pub addresses: BTreeMap<NodeId, String>,
}

/// One change; `Raft::propose_membership` takes several at once. Changes that alter the
/// voters go through a joint configuration; learner-only changes take effect in one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    AddVoter(NodeId),
    RemoveVoter(NodeId),
    AddLearner(NodeId),
    PromoteLearner(NodeId),
    RemoveLearner(NodeId),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    #[error("configuration bytes are malformed: {0}")]
    Malformed(&'static str),
    #[error("unknown configuration format version {0} (this build reads version {FORMAT_VERSION})")]
    Version(u8),
    #[error("invalid configuration: {0}")]
    Invalid(&'static str),
    #[error("change {0:?} does not apply to the current configuration")]
    Change(MembershipChange),
}

/// How a vote count stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum VoteResult {
    Won,
    Lost,
    Pending,
}

impl Membership {
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> Membership {
        Membership { voters: voters.into_iter().collect(), ..Membership::default() }
    }

    pub fn is_joint(&self) -> bool {
        !self.voters_outgoing.is_empty()
    }

    /// Votes in at least one half of the (possibly joint) configuration.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.voters_outgoing.contains(&id)
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.learners.contains(&id)
    }

    /// Every voter of either half, once each.
    pub fn all_voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.union(&self.voters_outgoing).copied()
    }

    /// Every member: voters of both halves and learners.
    pub fn members(&self) -> BTreeSet<NodeId> {
        self.all_voters().chain(self.learners.iter().copied()).collect()
    }

    /// The rules every configuration obeys, whether built here or decoded from a peer.
    pub fn validate(&self) -> Result<(), MembershipError> {
        let invalid = |why| Err(MembershipError::Invalid(why));
        if self.voters.is_empty() {
            return invalid("no voters");
        }
        if self.voters.len() + self.voters_outgoing.len() + self.learners.len() > MEMBERS_MAX {
            return invalid("more than MEMBERS_MAX members");
        }
        if self.members().contains(&0) {
            return invalid("node id 0");
        }
        if self.learners.iter().any(|l| self.is_voter(*l)) {
            return invalid("a node is both a voter and a learner");
        }
        if self.addresses.keys().any(|id| !self.contains(*id)) {
            return invalid("an address for a node that is not a member");
        }
        if self.addresses.values().any(|a| a.len() > ADDRESS_BYTES_MAX) {
            return invalid("an address longer than ADDRESS_BYTES_MAX");
        }
        Ok(())
    }

    /// The configuration to append for `changes`: joint (C_old,new) when the voters change,
    /// else the new configuration itself. Only a non-joint configuration can change.
    pub fn apply(&self, changes: &[MembershipChange]) -> Result<Membership, MembershipError> {
        if self.is_joint() {
            return Err(MembershipError::Invalid("a joint configuration must be left before the next change"));
        }
        let mut next = self.clone();
        for &change in changes {
            let ok = match change {
                MembershipChange::AddVoter(id) => !next.learners.contains(&id) && next.voters.insert(id),
                MembershipChange::RemoveVoter(id) => next.voters.remove(&id),
                MembershipChange::AddLearner(id) => !next.voters.contains(&id) && next.learners.insert(id),
                MembershipChange::PromoteLearner(id) => next.learners.remove(&id) && next.voters.insert(id),
                MembershipChange::RemoveLearner(id) => next.learners.remove(&id),
            };
            if !ok {
                return Err(MembershipError::Change(change));
            }
        }
        if next.voters != self.voters {
            next.voters_outgoing = self.voters.clone();
        }
        next.forget_former_addresses();
        next.validate()?;
        Ok(next)
    }

    /// C_new: the configuration that leaves a joint one.
    pub fn leave_joint(&self) -> Membership {
        let mut next = Membership {
            voters: self.voters.clone(),
            voters_outgoing: BTreeSet::new(),
            learners: self.learners.clone(),
            addresses: self.addresses.clone(),
        };
        next.forget_former_addresses();
        next
    }

    /// Drops the addresses of nodes that are no longer members.
    fn forget_former_addresses(&mut self) {
        let members = self.members();
        self.addresses.retain(|id, _| members.contains(id));
    }

    /// The highest index a quorum has reached, given each voter's match index: in a joint
    /// configuration the lower of the two halves' (Raft §6: agreement needs both majorities).
    pub(super) fn quorum_index(&self, match_of: impl Fn(NodeId) -> u64) -> u64 {
        let half = |set: &BTreeSet<NodeId>| {
            if set.is_empty() {
                return u64::MAX;
            }
            let mut matched: Vec<u64> = set.iter().map(|id| match_of(*id)).collect();
            matched.sort_unstable_by(|a, b| b.cmp(a));
            matched[set.len() / 2]
        };
        half(&self.voters).min(half(&self.voters_outgoing))
    }

    /// The outcome of an election given the answers so far (`true` = granted).
    pub(super) fn vote_result(&self, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
        let half = |set: &BTreeSet<NodeId>| {
            if set.is_empty() {
                return VoteResult::Won;
            }
            let granted = set.iter().filter(|id| votes.get(id) == Some(&true)).count();
            let rejected = set.iter().filter(|id| votes.get(id) == Some(&false)).count();
            let majority = set.len() / 2 + 1;
            if granted >= majority {
                VoteResult::Won
            } else if set.len() - rejected < majority {
                VoteResult::Lost
            } else {
                VoteResult::Pending
            }
        };
        match (half(&self.voters), half(&self.voters_outgoing)) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }

    /// Whether the voters for which `active` holds form a quorum (check-quorum).
    pub(super) fn has_quorum(&self, active: impl Fn(NodeId) -> bool) -> bool {
        let votes = self.all_voters().map(|id| (id, active(id))).collect();
        self.vote_result(&votes) == VoteResult::Won
    }

    /// The payload of a configuration entry: a version byte, then voters, outgoing voters and
    /// learners, each as a little-endian u32 count followed by that many little-endian u64 ids;
    /// then (version 2) the addresses: a u32 count, and for each a u64 id, a u16 length and
    /// that many bytes of UTF-8, all little-endian.
    pub fn encode(&self) -> Vec<u8> {
        let sets = [&self.voters, &self.voters_outgoing, &self.learners];
        let addresses: usize = self.addresses.values().map(|a| 10 + a.len()).sum();
        let mut out = Vec::with_capacity(1 + 16 + 8 * sets.iter().map(|s| s.len()).sum::<usize>() + addresses);
        out.push(FORMAT_VERSION);
        for set in sets {
            out.extend_from_slice(&(set.len() as u32).to_le_bytes());
            for id in set {
                out.extend_from_slice(&id.to_le_bytes());
            }
        }
        out.extend_from_slice(&(self.addresses.len() as u32).to_le_bytes());
        for (id, address) in &self.addresses {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&(address.len() as u16).to_le_bytes());
            out.extend_from_slice(address.as_bytes());
        }
        out
    }

    /// Decodes `encode`'s bytes; any other input is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Membership, MembershipError> {
        let malformed = MembershipError::Malformed;
        let (&version, mut rest) = bytes.split_first().ok_or(malformed("empty"))?;
        if !(1..=FORMAT_VERSION).contains(&version) {
            return Err(MembershipError::Version(version));
        }
        let mut take = |n: usize| -> Result<&[u8], MembershipError> {
            if rest.len() < n {
                return Err(malformed("truncated"));
            }
            let (head, tail) = rest.split_at(n);
            rest = tail;
            Ok(head)
        };
        let mut sets: [BTreeSet<NodeId>; 3] = Default::default();
        for set in &mut sets {
            let count = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
            if count > MEMBERS_MAX {
                return Err(malformed("member count over MEMBERS_MAX"));
            }
            for _ in 0..count {
                if !set.insert(u64::from_le_bytes(take(8)?.try_into().expect("8 bytes"))) {
                    return Err(malformed("duplicate member"));
                }
            }
        }
        let mut addresses = BTreeMap::new();
        if version >= 2 {
            let count = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
            if count > MEMBERS_MAX {
                return Err(malformed("address count over MEMBERS_MAX"));
            }
            for _ in 0..count {
                let id = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
                let len = u16::from_le_bytes(take(2)?.try_into().expect("2 bytes")) as usize;
                let text = std::str::from_utf8(take(len)?).map_err(|_| malformed("address is not UTF-8"))?;
                if addresses.insert(id, text.to_owned()).is_some() {
                    return Err(malformed("duplicate address"));
                }
            }
        }
        if !rest.is_empty() {
            return Err(malformed("trailing bytes"));
        }
        let [voters, voters_outgoing, learners] = sets;
        let membership = Membership { voters, voters_outgoing, learners, addresses };
        membership.validate()?;
        Ok(membership)
    }
}

/// The configurations a node knows: the last one committed (and reported to the caller)
/// and the configuration entries after it in the log. Raft §6: a server uses the latest
/// configuration in its log, committed or not, and falls back when that entry is truncated.
#[derive(Debug)]
pub(super) struct Configs {
    committed: (u64, Membership),
    pending: VecDeque<(u64, Membership)>,
}

impl Configs {
    pub(super) fn new(committed: (u64, Membership)) -> Configs {
        Configs { committed, pending: VecDeque::new() }
    }

    pub(super) fn active(&self) -> &Membership {
        self.pending.back().map_or(&self.committed.1, |(_, m)| m)
    }

    /// The index of the entry that holds the active configuration.
    pub(super) fn active_index(&self) -> u64 {
        self.pending.back().map_or(self.committed.0, |(i, _)| *i)
    }

    /// Whether `id` votes in the committed configuration or any later one in the log.
    pub(super) fn any_has_voter(&self, id: NodeId) -> bool {
        self.committed.1.is_voter(id) || self.pending.iter().any(|(_, m)| m.is_voter(id))
    }

    pub(super) fn committed(&self) -> &(u64, Membership) {
        &self.committed
    }

    /// A configuration entry was appended at `index`. One at or below the committed
    /// configuration's index is older than what we know (the log is catching up after a reset).
    pub(super) fn push(&mut self, index: u64, membership: Membership) {
        if index <= self.committed.0 {
            return;
        }
        assert!(index > self.active_index(), "configuration entries are appended in index order");
        self.pending.push_back((index, membership));
    }

    /// A configuration entry at `index`, below entries already pushed, was read only now
    /// (it was a hole, `refetch.rs`): kept in index order.
    pub(super) fn insert(&mut self, index: u64, membership: Membership) {
        if index <= self.committed.0 || self.pending.iter().any(|(i, _)| *i == index) {
            return;
        }
        let at = self.pending.partition_point(|(i, _)| *i < index);
        self.pending.insert(at, (index, membership));
    }

    /// The log was truncated after `index`: its configurations after it are gone.
    pub(super) fn truncate_after(&mut self, index: u64) {
        assert!(index >= self.committed.0, "a committed configuration is never truncated");
        while self.pending.back().is_some_and(|(i, _)| *i > index) {
            self.pending.pop_back();
        }
    }

    pub(super) fn reset(&mut self, committed: (u64, Membership)) {
        self.committed = committed;
        self.pending.clear();
    }

    /// The newest configuration at or below `commit` that was pending, now committed.
    pub(super) fn take_committed(&mut self, commit: u64) -> Option<(u64, Membership)> {
        let mut newest = None;
        while self.pending.front().is_some_and(|(i, _)| *i <= commit) {
            newest = self.pending.pop_front();
        }
        let newest = newest?;
        self.committed = newest.clone();
        Some(newest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    fn joint(voters: &[NodeId], outgoing: &[NodeId], learners: &[NodeId]) -> Membership {
        Membership {
            voters: set(voters),
            voters_outgoing: set(outgoing),
            learners: set(learners),
            ..Membership::default()
        }
    }

    #[test]
    fn codec_round_trips() {
        let mut m = joint(&[1, 2, 3], &[1, 2, 4], &[9]);
        m.addresses.insert(9, "10.0.0.9:7000".into());
        assert_eq!(Membership::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn version_1_without_addresses_is_still_read() {
        let m = joint(&[1, 2, 3], &[], &[4]);
        let mut v1 = m.encode();
        v1[0] = 1;
        v1.truncate(v1.len() - 4);
        assert_eq!(Membership::decode(&v1).unwrap(), m);
    }

    #[test]
    fn addresses_follow_membership() {
        let mut m = joint(&[1, 2, 3], &[], &[]);
        m.addresses.insert(3, "10.0.0.3:7000".into());
        let removed = m.apply(&[MembershipChange::RemoveVoter(3)]).unwrap();
        assert!(removed.addresses.contains_key(&3), "C_old,new still holds node 3");
        assert!(removed.leave_joint().addresses.is_empty(), "C_new forgets the address of a removed node");
        m.addresses.insert(7, "10.0.0.7:7000".into());
        assert!(m.validate().is_err(), "an address for a non-member");
    }

    #[test]
    fn joint_quorum_needs_both_halves() {
        // Raft §6: C_new = {1, 4, 5} alone would commit index 10; C_old = {1, 2, 3} holds it back.
        let m = joint(&[1, 4, 5], &[1, 2, 3], &[]);
        let matched = |id: NodeId| if [1, 4, 5].contains(&id) { 10 } else { 3 };
        assert_eq!(m.quorum_index(matched), 3);
        assert_eq!(m.leave_joint().quorum_index(matched), 10);
    }

    #[test]
    fn votes_are_counted_per_half() {
        let m = joint(&[1, 2, 3], &[3, 4, 5], &[]);
        let votes = |granted: &[NodeId], rejected: &[NodeId]| {
            granted.iter().map(|i| (*i, true)).chain(rejected.iter().map(|i| (*i, false))).collect()
        };
        assert_eq!(m.vote_result(&votes(&[1, 2], &[])), VoteResult::Pending);
        assert_eq!(m.vote_result(&votes(&[1, 2, 3], &[])), VoteResult::Pending, "C_old has one of three");
        assert_eq!(m.vote_result(&votes(&[1, 2, 3, 4], &[])), VoteResult::Won);
        assert_eq!(m.vote_result(&votes(&[1, 2], &[4, 5])), VoteResult::Lost);
    }

    #[test]
    fn changes_to_voters_go_through_a_joint_configuration() {
        let m = joint(&[1, 2, 3], &[], &[4]);
        let joint = m.apply(&[MembershipChange::PromoteLearner(4), MembershipChange::RemoveVoter(1)]).unwrap();
        assert_eq!(joint.voters, set(&[2, 3, 4]));
        assert_eq!(joint.voters_outgoing, set(&[1, 2, 3]));
        assert!(joint.learners.is_empty());
        assert!(joint.apply(&[MembershipChange::AddLearner(7)]).is_err(), "leave the joint configuration first");
        let learner_only = m.apply(&[MembershipChange::AddLearner(5)]).unwrap();
        assert!(!learner_only.is_joint());
        assert!(m.apply(&[MembershipChange::AddVoter(4)]).is_err(), "4 is a learner: promote it");
        let empty = m.apply(&[1, 2, 3].map(MembershipChange::RemoveVoter));
        assert!(empty.is_err());
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Membership::decode(&bytes);
        }
    }
}
