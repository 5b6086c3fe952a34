//! The metadata group's own members (issue 17): nodes added to a running cluster
//! (`keel serve --join`, `keel node add`) and metadata voters added and removed. The brokers
//! the metadata registers say what group 0 should be: every broker that is not removed is
//! a member, and those with the voter flag are its voters. The metadata leader compares
//! that with group 0's configuration every round (`moves::MOVE_ROUND_PERIOD`) and takes
//! one step, as the partition moves do (`moves.rs`), so it keeps no state of its own:
//!
//! 1. a registered node that is not a member is added as a learner (with its address, so
//!    the leader reaches it); it receives the metadata, by snapshot if the log was trimmed;
//! 2. a learner that should vote is promoted once within `CATCH_UP_LAG_MAX` of the commit,
//!    in one joint change: a learner that is down never gets there, so the group never
//!    enters a joint configuration it could not leave; it stays a learner, visible in
//!    `keel node list`;
//! 3. a voter whose broker is removed (decommissioned) or lost its voter flag leaves the
//!    voters in one joint change; the leader hands leadership to another voter first when
//!    it is the one leaving. A removed broker's learner is dropped.
//!
//! The voters never go below one: a change that would leave none is not taken.

use std::collections::BTreeSet;

use tracing::{debug, info, warn};

use super::moves::caught_up;
use super::{Broker, BrokerError};
use crate::ids::NodeId as Node;
use crate::metadata::{BrokerState, Command, MetadataState};
use crate::raft::{MembershipChange, NodeId, Role};
use crate::server::status::GroupStatus;

/// What the metadata says group 0 should be.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    /// Every registered broker that is not removed, with its address.
    pub members: Vec<(NodeId, String)>,
    /// Those with the voter flag.
    pub voters: BTreeSet<NodeId>,
    /// Removed brokers: they leave the group.
    pub removed: BTreeSet<NodeId>,
}

impl Wanted {
    pub fn of(state: &MetadataState) -> Wanted {
        let mut wanted = Wanted::default();
        for b in state.brokers() {
            let id = b.id.get();
            if b.state == BrokerState::Removed {
                wanted.removed.insert(id);
                continue;
            }
            wanted.members.push((id, b.address.clone()));
            if b.voter {
                wanted.voters.insert(id);
            }
        }
        wanted
    }
}

/// The next step for group 0, from its leader's configuration (pure).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberStep {
    /// Nothing to do, or waiting (an uncommitted or joint configuration, a learner
    /// catching up: `behind`).
    Wait { behind: Vec<NodeId> },
    /// Learner-only changes: take effect in one step.
    Learners(Vec<MembershipChange>),
    /// A change of the voters (promotions and removals): a joint configuration.
    Voters(Vec<MembershipChange>),
    /// The leader itself leaves the voters: it hands leadership to `to` first.
    HandOver { to: NodeId },
}

pub fn member_step(status: &GroupStatus, wanted: &Wanted) -> MemberStep {
    let config = &status.membership;
    if config.is_joint() || !status.membership_committed {
        return MemberStep::Wait { behind: Vec::new() };
    }
    let is_member = |id: NodeId| config.voters.contains(&id) || config.learners.contains(&id);
    let add: Vec<MembershipChange> = wanted
        .members
        .iter()
        .filter(|(id, _)| !is_member(*id))
        .map(|(id, _)| MembershipChange::AddLearner(*id))
        .collect();
    let drop: Vec<MembershipChange> = config
        .learners
        .iter()
        .filter(|l| wanted.removed.contains(l))
        .map(|l| MembershipChange::RemoveLearner(*l))
        .collect();
    if !add.is_empty() || !drop.is_empty() {
        return MemberStep::Learners(add.into_iter().chain(drop).collect());
    }
    // A voter leaves only when the metadata says so: a voter no broker names (the metadata
    // lags) stays.
    let leaving: Vec<NodeId> = config
        .voters
        .iter()
        .copied()
        .filter(|v| {
            wanted.removed.contains(v) || (wanted.members.iter().any(|(id, _)| id == v) && !wanted.voters.contains(v))
        })
        .collect();
    let promoting: Vec<NodeId> = config.learners.iter().copied().filter(|l| wanted.voters.contains(l)).collect();
    let (ready, behind): (Vec<NodeId>, Vec<NodeId>) = promoting.into_iter().partition(|l| caught_up(status, *l));
    let remaining = config.voters.len() - leaving.len() + ready.len();
    if remaining == 0 {
        return MemberStep::Wait { behind };
    }
    if leaving.contains(&status.node_id) {
        let staying = config.voters.iter().copied().filter(|v| !leaving.contains(v));
        let to = staying.chain(ready.iter().copied()).find(|v| caught_up(status, *v));
        return match to {
            Some(to) => MemberStep::HandOver { to },
            None => MemberStep::Wait { behind },
        };
    }
    if leaving.is_empty() && ready.is_empty() {
        return MemberStep::Wait { behind };
    }
    let promote = ready.into_iter().map(MembershipChange::PromoteLearner);
    MemberStep::Voters(promote.chain(leaving.into_iter().map(MembershipChange::RemoveVoter)).collect())
}

impl Broker {
    /// On the metadata leader: registers node `node` (a node that joins, `keel node add`);
    /// the next round adds it to the metadata group as a learner. `voter` sets the voter
    /// flag (never clears it: a node stops voting by being decommissioned). Registering a
    /// node again with the same address is harmless; another node's id is refused.
    pub async fn add_node(
        &self,
        node: NodeId,
        address: String,
        kafka_address: Option<String>,
        voter: bool,
    ) -> Result<(), BrokerError> {
        self.applied_on_leader().await?;
        if !self.metadata_ready() {
            return Err(BrokerError::starting());
        }
        if node == 0 {
            return Err(BrokerError::Invalid("node id 0 is not allowed (ids start at 1)".into()));
        }
        if address.parse::<std::net::SocketAddr>().is_err() {
            let why = format!("the address {address:?} of node {node} is not IP:PORT (the others dial it as given)");
            return Err(BrokerError::Invalid(why));
        }
        let state = self.state();
        let existing = state.broker(Node(node));
        if let Some(b) = existing
            && b.state != BrokerState::Removed
            && b.address != address
        {
            return Err(BrokerError::Invalid(format!(
                "node {node} is already registered at {} ({}): ids name one node each; give the new node an id of \
                 its own, or decommission node {node} first to replace it",
                b.address, b.state
            )));
        }
        let voter = voter || existing.is_some_and(|b| b.voter && b.state != BrokerState::Removed);
        let command = Command::RegisterBroker { node: Node(node), address, kafka_address, voter };
        self.command(command).await?;
        info!(node, voter, "node added: it joins the metadata group as a learner");
        Ok(())
    }

    /// On the metadata leader: one step towards the members the metadata wants (module doc).
    pub(super) async fn drive_metadata_members(&self) {
        let Some(group) = self.metadata_group() else { return };
        let Some(status) = group.status().await else { return };
        if status.role != Role::Leader {
            return;
        }
        let wanted = Wanted::of(&self.state());
        match member_step(&status, &wanted) {
            MemberStep::Wait { behind } => {
                if !behind.is_empty() {
                    debug!(?behind, "metadata learners catching up before they vote");
                }
            }
            MemberStep::Learners(changes) | MemberStep::Voters(changes) => {
                let addresses = self.learner_addresses(&changes);
                info!(?changes, "changing the metadata group's members");
                if let Err(e) = group.change_membership(changes, addresses).await {
                    warn!(error = %e, "cannot change the metadata group's members now; will retry");
                }
            }
            MemberStep::HandOver { to } => {
                info!(to, "this node leaves the metadata voters: handing the metadata leadership over first");
                if let Err(e) = group.transfer_leadership(to).await {
                    warn!(to, error = %e, "cannot hand the metadata leadership over; will retry");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::Membership;
    use crate::server::status::MemberStatus;

    /// The leader's status with `config` committed.
    fn status(config: Membership, matched: &[(NodeId, u64)]) -> GroupStatus {
        crate::broker::moves::tests::status(config, true, matched)
    }

    fn wanted(members: &[NodeId], voters: &[NodeId], removed: &[NodeId]) -> Wanted {
        Wanted {
            members: members.iter().map(|id| (*id, format!("127.0.0.1:{}", 7000 + id))).collect(),
            voters: voters.iter().copied().collect(),
            removed: removed.iter().copied().collect(),
        }
    }

    fn learning(voters: &[NodeId], learners: &[NodeId]) -> Membership {
        Membership { learners: learners.iter().copied().collect(), ..Membership::new(voters.iter().copied()) }
    }

    #[test]
    fn a_registered_node_joins_as_a_learner_and_a_voter_is_promoted_only_once_caught_up() {
        let all = [(1, 1000), (2, 1000), (3, 1000)];
        let start = status(Membership::new([1, 2, 3]), &all);
        let want = wanted(&[1, 2, 3, 4, 5], &[1, 2, 3, 5], &[]);
        let add = vec![MembershipChange::AddLearner(4), MembershipChange::AddLearner(5)];
        assert_eq!(member_step(&start, &want), MemberStep::Learners(add));
        // Node 5 (a voter to be) has not answered: it stays a learner, nothing joint.
        let mut down = status(learning(&[1, 2, 3], &[4, 5]), &[(1, 1000), (4, 1000)]);
        down.members.push(MemberStatus { id: 5, voter: false, match_index: None });
        assert_eq!(member_step(&down, &want), MemberStep::Wait { behind: vec![5] });
        let close = status(learning(&[1, 2, 3], &[4, 5]), &[(1, 1000), (4, 1000), (5, 1000 - 64)]);
        assert_eq!(member_step(&close, &want), MemberStep::Voters(vec![MembershipChange::PromoteLearner(5)]));
        // Node 4 is a broker: it stays a learner.
        let done = status(learning(&[1, 2, 3, 5], &[4]), &[(4, 1000), (5, 1000)]);
        assert_eq!(member_step(&done, &want), MemberStep::Wait { behind: vec![] });
    }

    #[test]
    fn a_removed_voter_leaves_in_one_change_after_the_leader_hands_over() {
        let want = wanted(&[1, 2, 4], &[1, 2, 4], &[3]);
        let config = Membership::new([1, 2, 3, 4]);
        let all = [(1, 1000), (2, 1000), (3, 0), (4, 1000)];
        assert_eq!(
            member_step(&status(config.clone(), &all), &want),
            MemberStep::Voters(vec![MembershipChange::RemoveVoter(3)])
        );
        // The leader (node 1) leaving hands over to a caught-up voter first.
        let want = wanted(&[2, 3, 4], &[2, 3, 4], &[1]);
        assert_eq!(member_step(&status(config, &all), &want), MemberStep::HandOver { to: 2 });
        // A removed broker's learner is dropped.
        let want = wanted(&[1, 2, 3], &[1, 2, 3], &[4]);
        let learner = status(learning(&[1, 2, 3], &[4]), &all);
        assert_eq!(member_step(&learner, &want), MemberStep::Learners(vec![MembershipChange::RemoveLearner(4)]));
    }

    #[test]
    fn joint_or_uncommitted_configurations_wait_and_the_last_voter_never_leaves() {
        let want = wanted(&[1, 2], &[1, 2], &[3]);
        let joint = Membership { voters_outgoing: [1, 2, 3].into(), ..Membership::new([1, 2]) };
        assert_eq!(member_step(&status(joint, &[]), &want), MemberStep::Wait { behind: vec![] });
        let mut fresh = status(Membership::new([1, 2, 3]), &[]);
        fresh.membership_committed = false;
        assert_eq!(member_step(&fresh, &want), MemberStep::Wait { behind: vec![] });
        let want = wanted(&[], &[], &[1]);
        assert_eq!(
            member_step(&status(Membership::new([1]), &[(1, 1000)]), &want),
            MemberStep::Wait { behind: vec![] }
        );
        // A voter the metadata does not name yet stays.
        let want = wanted(&[1, 2], &[1, 2], &[]);
        assert_eq!(member_step(&status(Membership::new([1, 2, 3]), &[]), &want), MemberStep::Wait { behind: vec![] });
    }
}
