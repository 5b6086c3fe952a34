//! Partition moves and node decommission (issue 17). The metadata records a move's target
//! (`Command::MovePartition`); the nodes named there start empty replicas of the group
//! (`server/controller.rs`); the group's leader then drives its Raft configuration from the
//! old replicas to the target, one step per round, and records the end in the metadata
//! (`Command::FinishMove`). Each round reads the group's configuration afresh and takes
//! the next step from it, so the driver keeps no state of its own: a move survives any
//! crash or change of leader, and whichever node leads the group next carries it on.
//!
//! The steps, from the leader's configuration (`MovePhase`):
//! 1. the voters are the old replicas: add the target's new nodes as learners;
//! 2. wait until every learner's match index is within `CATCH_UP_LAG_MAX` entries of the
//!    commit. A learner that is down never gets there, and the move waits here, where it
//!    can still be abandoned: the group never enters a joint configuration it could not
//!    leave (etcd #12136);
//! 3. promote the learners and remove the leaving voters in one change: Raft appends the
//!    joint configuration and, once that commits, the final one by itself (`raft/leader.rs`);
//!    a leader that is not in the target steps down once the final configuration commits
//!    and hands over to a caught-up new voter, which carries on from here;
//! 4. the voters are the target and committed: propose `FinishMove { target }`; the nodes
//!    that left then delete their replicas.
//!
//! Aborting (`abort_move`) is allowed only before step 3, and is done by the group's leader
//! under the same lock as the rounds: it removes the learners, waits for that
//! configuration to commit, then proposes `FinishMove { old replicas }`.
//!
//! Decommission: the metadata leader marks the node draining, moves leadership off it,
//! and proposes the moves `MetadataState::drain_moves` places; every round it proposes the
//! moves still missing and marks the node removed once it hosts nothing.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{debug, info, warn};

use super::{Broker, BrokerError};
use crate::ids::{GroupId, NodeId as Node};
use crate::metadata::{BrokerState, Command, MetaError};
use crate::metrics as m;
use crate::raft::{MembershipChange, NodeId, Role};
use crate::server::registry::GroupHandle;
use crate::server::status::GroupStatus;

/// A learner this many entries behind the commit counts as caught up: under load the
/// commit moves on while the learner answers, and the joint configuration commits once a
/// majority of each half has it, which a learner this close reaches at once.
pub const CATCH_UP_LAG_MAX: u64 = 64;
/// How often the driver looks at the moves this node leads.
pub const MOVE_ROUND_PERIOD: Duration = Duration::from_millis(300);
/// How long an abort waits for the configuration without the learners to commit.
const ABORT_COMMIT_WAIT: Duration = Duration::from_secs(5);

/// Where a move stands, as its group's leader sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MovePhase {
    /// The new nodes are not all learners yet.
    AddingLearners,
    /// Learners are catching up; `behind` are those not within `CATCH_UP_LAG_MAX` of the
    /// commit (down, or still copying the log). Abortable.
    CatchingUp { behind: Vec<NodeId> },
    /// The group is in (or leaving) a joint configuration: Raft completes it by itself
    /// once a majority of both the old and the new voters answer. Not abortable.
    Joint,
    /// The target's configuration is committed; the metadata is being told.
    Finishing,
}

impl MovePhase {
    pub fn name(&self) -> &'static str {
        match self {
            MovePhase::AddingLearners => "adding learners",
            MovePhase::CatchingUp { .. } => "learners catching up",
            MovePhase::Joint => "joint consensus",
            MovePhase::Finishing => "finishing",
        }
    }
}

/// The driver's lock and the groups an abort holds (their rounds are skipped meanwhile).
#[derive(Default)]
pub struct MoveDriver {
    round: tokio::sync::Mutex<()>,
    aborting: Mutex<HashSet<u64>>,
}

/// The next step of a move, computed from the leader's configuration (pure).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Wait(MovePhase),
    Propose(Vec<MembershipChange>, MovePhase),
    Finish,
    /// The configuration is neither the old replicas, the target, nor between them.
    Stuck(String),
}

/// Whether member `id` is within `CATCH_UP_LAG_MAX` entries of the leader's commit.
pub(super) fn caught_up(status: &GroupStatus, id: NodeId) -> bool {
    let matched = status.members.iter().find(|m| m.id == id).and_then(|m| m.match_index).unwrap_or(0);
    // Every log holds at least its first configuration or no-op: a member at 0 has not
    // answered yet, however short the log.
    matched > 0 && matched + CATCH_UP_LAG_MAX >= status.commit_index
}

fn next_step(status: &GroupStatus, replicas: &[Node], target: &[Node]) -> Step {
    let config = &status.membership;
    let old: BTreeSet<NodeId> = replicas.iter().map(|n| n.get()).collect();
    let new: BTreeSet<NodeId> = target.iter().map(|n| n.get()).collect();
    if config.is_joint() || (!status.membership_committed && config.voters == new) {
        return Step::Wait(MovePhase::Joint);
    }
    if !status.membership_committed {
        return Step::Wait(MovePhase::AddingLearners);
    }
    // Learners that belong to no side (left over by an abort that lost a race) go first.
    let strays: Vec<MembershipChange> =
        config.learners.iter().filter(|l| !new.contains(l)).map(|l| MembershipChange::RemoveLearner(*l)).collect();
    if !strays.is_empty() {
        return Step::Propose(strays, MovePhase::AddingLearners);
    }
    if config.voters == new {
        return Step::Finish;
    }
    if config.voters != old {
        let voters = &config.voters;
        return Step::Stuck(format!("its voters {voters:?} are neither the replicas {old:?} nor the target {new:?}"));
    }
    let joining: Vec<NodeId> = new.difference(&old).copied().collect();
    let missing: Vec<MembershipChange> =
        joining.iter().filter(|n| !config.learners.contains(n)).map(|n| MembershipChange::AddLearner(*n)).collect();
    if !missing.is_empty() {
        return Step::Propose(missing, MovePhase::AddingLearners);
    }
    let behind: Vec<NodeId> = joining.iter().copied().filter(|n| !caught_up(status, *n)).collect();
    if !behind.is_empty() {
        return Step::Wait(MovePhase::CatchingUp { behind });
    }
    let promote = joining.iter().map(|n| MembershipChange::PromoteLearner(*n));
    let remove = old.difference(&new).map(|n| MembershipChange::RemoveVoter(*n));
    Step::Propose(promote.chain(remove).collect(), MovePhase::Joint)
}

impl Broker {
    /// One round over the moves whose group this node leads, then (on the metadata
    /// leader) the decommissions in progress.
    pub async fn drive_moves(&self) {
        let state = self.state();
        let moving = state.partitions_iter().filter(|(_, _, p)| p.target.is_some()).count();
        metrics::gauge!(m::PARTITION_MOVES).set(moving as f64);
        let draining: Vec<Node> = state.brokers().filter(|b| b.state == BrokerState::Draining).map(|b| b.id).collect();
        let left: usize = draining.iter().map(|n| state.groups_hosted_by(*n).len()).sum();
        metrics::gauge!(m::NODES_DRAINING).set(draining.len() as f64);
        metrics::gauge!(m::DRAINING_REPLICAS).set(left as f64);
        for (_, _, p) in state.partitions_iter() {
            let Some(target) = &p.target else { continue };
            let Some(group) = self.registry.get(p.group.get()) else { continue };
            if !group.leader().me || self.moves.aborting.lock().expect("moves lock").contains(&group.id) {
                continue;
            }
            let _round = self.moves.round.lock().await;
            match self.move_round(&group, &p.replicas, target).await {
                Ok(phase) => debug!(group = group.id, phase = phase.name(), "moving"),
                Err(e) => warn!(group = group.id, error = %e, "a partition move cannot go on now; will retry"),
            }
        }
        if self.leads_metadata() && self.metadata_ready() {
            self.drive_decommissions().await;
            self.drive_metadata_members().await;
        }
    }

    /// Takes the next step of one move; answers where it stands.
    async fn move_round(
        &self,
        group: &GroupHandle,
        replicas: &[Node],
        target: &[Node],
    ) -> Result<MovePhase, BrokerError> {
        let status = group.status().await.ok_or_else(|| BrokerError::Busy("the replica is stopping".into()))?;
        if status.role != Role::Leader {
            return Err(BrokerError::Busy("this replica no longer leads".into()));
        }
        match next_step(&status, replicas, target) {
            Step::Wait(phase) => Ok(phase),
            Step::Propose(changes, phase) => {
                let addresses = self.learner_addresses(&changes);
                info!(group = group.id, ?changes, "changing a moving group's configuration");
                group.change_membership(changes, addresses).await.map_err(BrokerError::Busy)?;
                Ok(phase)
            }
            Step::Finish => {
                let command = Command::FinishMove { group: GroupId(group.id), replicas: target.to_vec() };
                self.command_anywhere(command).await?;
                metrics::counter!(m::PARTITION_MOVES_FINISHED).increment(1);
                info!(group = group.id, ?target, "partition move finished");
                Ok(MovePhase::Finishing)
            }
            Step::Stuck(why) => Err(BrokerError::Invalid(format!("group {}: {why}", group.id))),
        }
    }

    /// Where the learners `changes` adds listen, for the configuration entry to carry.
    pub(super) fn learner_addresses(&self, changes: &[MembershipChange]) -> Vec<(NodeId, std::net::SocketAddr)> {
        changes
            .iter()
            .filter_map(|c| match c {
                MembershipChange::AddLearner(id) => Some(*id),
                _ => None,
            })
            .filter_map(|id| Some((id, self.address_of(id)?.parse().ok()?)))
            .collect()
    }

    /// Where the move of `topic`/`partition` stands, on its group's leader.
    pub async fn move_phase(&self, topic: &str, partition: u32) -> Result<Option<MovePhase>, BrokerError> {
        let what = format!("{topic}/{partition}");
        let group = self.replica(topic, partition)?;
        if !group.leader().me {
            return Err(self.not_leader(group.id, what));
        }
        let state = self.state();
        let Some((_, _, p)) = state.group(GroupId(group.id)) else { return Ok(None) };
        let Some(target) = &p.target else { return Ok(None) };
        let status = group.status().await.ok_or_else(|| BrokerError::Busy("the replica is stopping".into()))?;
        Ok(Some(match next_step(&status, &p.replicas, target) {
            Step::Wait(phase) | Step::Propose(_, phase) => phase,
            Step::Finish => MovePhase::Finishing,
            Step::Stuck(why) => return Err(BrokerError::Invalid(why)),
        }))
    }

    /// On the metadata leader: starts moving `topic`/`partition` to `target` (first =
    /// preferred leader).
    pub async fn start_move(&self, topic: &str, partition: u32, target: Vec<NodeId>) -> Result<(), BrokerError> {
        self.applied_on_leader().await?;
        let group = GroupId(self.group_id(topic, partition)?);
        let state = self.state();
        for node in &target {
            if state.broker(Node(*node)).is_none() {
                let known: Vec<u64> = state.brokers().map(|b| b.id.get()).collect();
                return Err(BrokerError::Invalid(format!("node {node} is not a registered broker (known: {known:?})")));
            }
        }
        let replicas = state.replicas(group).map_or(0, <[Node]>::len);
        if target.len() != replicas {
            let n = target.len();
            let why = format!("{topic}/{partition} has {replicas} replicas; the target names {n} (give {replicas})");
            return Err(BrokerError::Invalid(why));
        }
        let target = target.into_iter().map(Node).collect();
        self.command(Command::MovePartition { group, target }).await.map(|_| ())
    }

    /// On the group's leader: abandons the move of `topic`/`partition` if it has not
    /// entered joint consensus (the learners are removed, the metadata goes back to the old
    /// replicas); otherwise says where it stands.
    pub async fn abort_move(&self, topic: &str, partition: u32) -> Result<(), BrokerError> {
        let what = format!("{topic}/{partition}");
        let group = self.replica(topic, partition)?;
        if !group.leader().me {
            return Err(self.not_leader(group.id, what));
        }
        let _round = self.moves.round.lock().await;
        self.moves.aborting.lock().expect("moves lock").insert(group.id);
        let result = self.abort_locked(&group, &what).await;
        self.moves.aborting.lock().expect("moves lock").remove(&group.id);
        result
    }

    async fn abort_locked(&self, group: &GroupHandle, what: &str) -> Result<(), BrokerError> {
        let state = self.state();
        let Some((_, _, p)) = state.group(GroupId(group.id)) else {
            return Err(BrokerError::Invalid(format!("{what} is not in the metadata")));
        };
        let Some(target) = p.target.clone() else {
            return Err(BrokerError::Invalid(format!("{what} has no move in progress")));
        };
        let stopping = || BrokerError::Busy("the replica is stopping".into());
        let status = group.status().await.ok_or_else(stopping)?;
        let old: BTreeSet<NodeId> = p.replicas.iter().map(|n| n.get()).collect();
        let config = &status.membership;
        if config.is_joint() || config.voters != old {
            return Err(BrokerError::Invalid(format!(
                "the move of {what} to {target:?} has entered joint consensus (voters {:?}{}): it can no longer be \
                 abandoned and completes once a majority of the old and of the new replicas answer; bring the \
                 target's nodes up",
                config.voters,
                if config.is_joint() { format!(", leaving {:?}", config.voters_outgoing) } else { String::new() },
            )));
        }
        if !config.learners.is_empty() {
            let changes = config.learners.iter().map(|l| MembershipChange::RemoveLearner(*l)).collect();
            group.change_membership(changes, Vec::new()).await.map_err(BrokerError::Busy)?;
            let deadline = tokio::time::Instant::now() + ABORT_COMMIT_WAIT;
            loop {
                let status = group.status().await.ok_or_else(stopping)?;
                let config = &status.membership;
                if config.is_joint() || config.voters != old {
                    // The removal was lost with a leadership change, and the next leader took
                    // the move on: recording the old replicas now would have the metadata
                    // drop voters the group still counts.
                    return Err(BrokerError::Invalid(format!(
                        "the move of {what} went on under another leader while it was being abandoned \
                         (voters {:?}); it completes once the target's nodes answer",
                        config.voters
                    )));
                }
                if config.learners.is_empty() && status.membership_committed {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    let why = format!("the configuration without the learners of {what} did not commit in time");
                    return Err(BrokerError::Busy(why));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let command = Command::FinishMove { group: GroupId(group.id), replicas: p.replicas.clone() };
        self.command_anywhere(command).await?;
        metrics::counter!(m::PARTITION_MOVES_ABORTED).increment(1);
        info!(group = group.id, replicas = ?p.replicas, "partition move abandoned");
        Ok(())
    }

    /// On the metadata leader: starts decommissioning `node`. Refused when the other
    /// active brokers cannot hold some partition's replicas. Answers the partition replicas
    /// it still hosts, each moving off.
    pub async fn decommission(&self, node: NodeId) -> Result<u32, BrokerError> {
        self.applied_on_leader().await?;
        let state = self.state();
        let broker = state.broker(Node(node)).ok_or_else(|| meta(MetaError::UnknownBroker(Node(node))))?;
        if broker.state == BrokerState::Removed {
            return Ok(0);
        }
        // Checked before the node is drained: a refusal leaves it as it was.
        state.drain_moves(Node(node)).map_err(meta)?;
        self.check_metadata_voters_without(node).await?;
        if broker.state == BrokerState::Active {
            self.command(Command::SetBrokerState { node: Node(node), state: BrokerState::Draining }).await?;
            info!(node, "decommissioning: the node is draining");
        }
        // Leadership off the draining node first: leader balance prefers active replicas.
        if let Err(e) = self.balance_leaders().await {
            debug!(error = %e, "leader balance before a decommission");
        }
        // The periodic drive may have proposed the moves first: answer every replica still
        // on the node (each moving off), not only the moves this call started.
        self.propose_drain(node).await;
        Ok(self.state().groups_hosted_by(Node(node)).len() as u32)
    }

    /// Refuses to decommission the last voter of the metadata group: the cluster's metadata
    /// would have no one to commit it. Fewer voters tolerate fewer failures (a majority of
    /// `n` survives `(n - 1) / 2` down); the operator is told by `keel node decommission`.
    async fn check_metadata_voters_without(&self, node: NodeId) -> Result<(), BrokerError> {
        let group = self.metadata_group().ok_or_else(BrokerError::starting)?;
        let status = group.status().await.ok_or_else(|| BrokerError::Busy("the node is shutting down".into()))?;
        let voters = &status.membership.voters;
        if voters.contains(&node) && voters.len() == 1 {
            return Err(BrokerError::Invalid(format!(
                "node {node} is the metadata group's only voter: without it no one could commit the cluster's \
                 metadata; add a node with `keel node add ID --address ADDR --voter` (or `keel serve --join ... \
                 --voter`) first"
            )));
        }
        Ok(())
    }

    /// Proposes the moves still missing to drain `node`; answers how many started.
    async fn propose_drain(&self, node: NodeId) -> u32 {
        let moves = match self.state().drain_moves(Node(node)) {
            Ok(moves) => moves,
            Err(e) => {
                warn!(node, error = %e, "cannot drain the node");
                return 0;
            }
        };
        let mut started = 0;
        for command in moves {
            match self.command(command).await {
                Ok(_) => started += 1,
                Err(e) => debug!(node, error = %e, "a drain move not started"),
            }
        }
        started
    }

    /// On the metadata leader: carries every decommission on, and marks a drained node
    /// removed once it hosts nothing.
    async fn drive_decommissions(&self) {
        let state = self.state();
        let draining: Vec<NodeId> =
            state.brokers().filter(|b| b.state == BrokerState::Draining).map(|b| b.id.get()).collect();
        for node in draining {
            if !state.groups_hosted_by(Node(node)).is_empty() {
                self.propose_drain(node).await;
                continue;
            }
            match self.command(Command::SetBrokerState { node: Node(node), state: BrokerState::Removed }).await {
                Ok(_) => info!(node, "decommissioned: the node hosts nothing and is removed"),
                Err(e) => warn!(node, error = %e, "cannot mark a drained node removed; will retry"),
            }
        }
    }

    /// Proposes a metadata command through the metadata leader, wherever it is.
    async fn command_anywhere(&self, command: Command) -> Result<(), BrokerError> {
        if self.leads_metadata() {
            self.applied_on_leader().await?;
            return self.command(command).await.map(|_| ());
        }
        let Command::FinishMove { group, replicas } = command else {
            return Err(BrokerError::Internal("only FinishMove is forwarded".into()));
        };
        let client = self.controller_client().await?;
        let replicas: Vec<u64> = replicas.iter().map(|n| n.get()).collect();
        client.finish_move(group.get(), &replicas).await.map_err(super::forwarded)
    }

    /// On the metadata leader: records the end of a move (a group's leader forwards it).
    pub async fn finish_move(&self, group: u64, replicas: Vec<NodeId>) -> Result<(), BrokerError> {
        self.applied_on_leader().await?;
        let replicas = replicas.into_iter().map(Node).collect();
        self.command(Command::FinishMove { group: GroupId(group), replicas }).await.map(|_| ())
    }

    /// Runs a round every `MOVE_ROUND_PERIOD` for as long as the node runs.
    pub async fn drive_moves_every(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(MOVE_ROUND_PERIOD);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.drive_moves().await;
        }
    }
}

fn meta(e: MetaError) -> BrokerError {
    BrokerError::Invalid(e.to_string())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::raft::Membership;
    use crate::server::status::MemberStatus;

    const OLD: [Node; 3] = [Node(1), Node(2), Node(3)];
    const TARGET: [Node; 3] = [Node(2), Node(3), Node(4)];

    /// The leader's status: `config` committed or not, each member's match index.
    pub(in crate::broker) fn status(config: Membership, committed: bool, matched: &[(NodeId, u64)]) -> GroupStatus {
        let members = matched
            .iter()
            .map(|(id, m)| MemberStatus { id: *id, voter: config.is_voter(*id), match_index: Some(*m) })
            .collect();
        GroupStatus {
            node_id: 1,
            role: Role::Leader,
            leader: Some(1),
            term: 2,
            commit_index: 1000,
            last_index: 1000,
            log_start_offset: 0,
            log_end_offset: 0,
            members,
            producers_tracked: 0,
            membership: config,
            membership_committed: committed,
        }
    }

    fn with_learner(learner: NodeId) -> Membership {
        Membership { learners: [learner].into(), ..Membership::new([1, 2, 3]) }
    }

    #[test]
    fn a_move_adds_learners_then_waits_for_them_then_swaps_in_one_joint_change() {
        let start = status(Membership::new([1, 2, 3]), true, &[(1, 1000), (2, 1000), (3, 1000)]);
        assert_eq!(
            next_step(&start, &OLD, &TARGET),
            Step::Propose(vec![MembershipChange::AddLearner(4)], MovePhase::AddingLearners)
        );
        let behind = status(with_learner(4), true, &[(1, 1000), (4, 1000 - CATCH_UP_LAG_MAX - 1)]);
        assert_eq!(next_step(&behind, &OLD, &TARGET), Step::Wait(MovePhase::CatchingUp { behind: vec![4] }));
        let close = status(with_learner(4), true, &[(1, 1000), (4, 1000 - CATCH_UP_LAG_MAX)]);
        let swap = vec![MembershipChange::PromoteLearner(4), MembershipChange::RemoveVoter(1)];
        assert_eq!(next_step(&close, &OLD, &TARGET), Step::Propose(swap, MovePhase::Joint));
    }

    #[test]
    fn a_learner_that_never_answered_keeps_the_move_out_of_joint_consensus() {
        let mut down = status(with_learner(4), true, &[(1, 1000)]);
        down.members.push(MemberStatus { id: 4, voter: false, match_index: None });
        assert_eq!(next_step(&down, &OLD, &TARGET), Step::Wait(MovePhase::CatchingUp { behind: vec![4] }));
        // Even on an empty log (commit 0), a learner that never answered is not caught up.
        down.commit_index = 0;
        assert_eq!(next_step(&down, &OLD, &TARGET), Step::Wait(MovePhase::CatchingUp { behind: vec![4] }));
    }

    #[test]
    fn a_joint_or_uncommitted_configuration_is_left_to_raft_and_the_target_finishes() {
        let joint = Membership { voters_outgoing: [1, 2, 3].into(), ..Membership::new([2, 3, 4]) };
        assert_eq!(next_step(&status(joint, true, &[]), &OLD, &TARGET), Step::Wait(MovePhase::Joint));
        let fresh = status(Membership::new([2, 3, 4]), false, &[]);
        assert_eq!(next_step(&fresh, &OLD, &TARGET), Step::Wait(MovePhase::Joint));
        let learning = status(with_learner(4), false, &[]);
        assert_eq!(next_step(&learning, &OLD, &TARGET), Step::Wait(MovePhase::AddingLearners));
        let done = status(Membership::new([2, 3, 4]), true, &[]);
        assert_eq!(next_step(&done, &OLD, &TARGET), Step::Finish);
    }

    #[test]
    fn stray_learners_go_first_and_a_foreign_configuration_is_reported() {
        let stray = status(with_learner(5), true, &[]);
        let remove = vec![MembershipChange::RemoveLearner(5)];
        assert_eq!(next_step(&stray, &OLD, &TARGET), Step::Propose(remove, MovePhase::AddingLearners));
        let foreign = status(Membership::new([1, 5, 6]), true, &[]);
        assert!(matches!(next_step(&foreign, &OLD, &TARGET), Step::Stuck(_)));
    }
}
