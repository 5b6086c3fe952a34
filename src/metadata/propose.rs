//! What a proposer computes from its view of the state before it proposes: a new topic's
//! placement, added partitions, the moves that drain a node, and the leaders to restore.
//! None of this changes the state; the commands it builds are checked again when applied.

use std::collections::BTreeMap;

use crate::ids::{GroupId, NodeId};

use super::command::{Command, CreateTopic};
use super::config::TopicConfig;
use super::error::MetaError;
use super::placement::{place_partitions, replace_replica, topic_seed};
use super::state::{BrokerState, MetadataState, NodeLoad};

/// A partition whose leader should change: to its preferred leader, or, when that one is
/// not active, to the first active replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderMove {
    pub group: GroupId,
    /// Who leads now (`None`: no leader known).
    pub from: Option<NodeId>,
    pub to: NodeId,
}

impl MetadataState {
    /// The command that creates topic `name`, placed on the active brokers. Partitions and
    /// replication factor default to the cluster settings (the factor to at most the active
    /// brokers). `now_ms` is the proposer's clock; the command carries it.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: Option<u32>,
        replication_factor: Option<u16>,
        config: TopicConfig,
        internal: bool,
        now_ms: u64,
    ) -> Result<Command, MetaError> {
        let count = partitions.unwrap_or(self.settings.default_partitions);
        self.check_new_topic(name, internal, count.into())?;
        let factor = usize::from(replication_factor.unwrap_or_else(|| self.default_replication_factor()));
        let replicas = place_partitions(&self.active_load(), &[], topic_seed(name), count as usize, factor)?;
        let create = CreateTopic { name: name.to_string(), internal, created_at_ms: now_ms, config, replicas };
        self.check_create(&create)?;
        Ok(Command::CreateTopic(create))
    }

    /// The replication factor of a topic created without one: the setting, but no more
    /// than the active brokers (at least 1, so that the error names the missing brokers).
    pub fn default_replication_factor(&self) -> u16 {
        let active = u16::try_from(self.active_brokers().len()).unwrap_or(u16::MAX);
        self.settings.default_replication_factor.min(active).max(1)
    }

    /// The command that grows topic `name` to `count` partitions, placing the new ones with
    /// the topic's replication factor.
    pub fn add_partitions(&self, name: &str, count: u32) -> Result<Command, MetaError> {
        let topic = self.growable(name, count)?;
        let current = topic.partitions.len() as u32;
        let existing: Vec<Vec<NodeId>> = topic.partitions.iter().map(|p| p.replicas.clone()).collect();
        let factor = existing[0].len();
        let adding = (count - current) as usize;
        let replicas = place_partitions(&self.active_load(), &existing, topic_seed(name), adding, factor)?;
        Ok(Command::AddPartitions { name: name.to_string(), count, replicas })
    }

    /// The moves that take every replica off `node` (issue 17's decommission): for each
    /// partition it is a replica of, its place goes to the least-loaded other active broker.
    /// Partitions already moving are left out; propose again once their moves finish.
    pub fn drain_moves(&self, node: NodeId) -> Result<Vec<Command>, MetaError> {
        let mut candidates = self.active_load();
        candidates.remove(&node);
        let mut moves = Vec::new();
        for (topic, partition, p) in self.partitions_iter() {
            if p.target.is_some() || !p.replicas.contains(&node) {
                continue;
            }
            let cannot = || MetaError::CannotDrain {
                node,
                topic: topic.name.clone(),
                partition,
                factor: p.replicas.len(),
                others: candidates.len(),
            };
            let target = replace_replica(&candidates, &p.replicas, node).ok_or_else(cannot)?;
            let newcomer = target.iter().find(|n| !p.replicas.contains(n)).expect("one node was replaced");
            let load = candidates.get_mut(newcomer).expect("the newcomer is a candidate");
            load.replicas += 1;
            load.leaders += u32::from(target[0] == *newcomer);
            moves.push(Command::MovePartition { group: p.group, target });
        }
        Ok(moves)
    }

    /// For leader balancing: the partitions whose leader should change, given who leads
    /// each group now (`leaders`). A partition should be led by its preferred leader (the
    /// first replica) or, when that broker is draining or removed, by its first active
    /// replica. The caller moves leadership only to a replica that is up and caught up.
    pub fn leader_moves(&self, leaders: &BTreeMap<GroupId, NodeId>) -> Vec<LeaderMove> {
        let active = |n: &&NodeId| self.broker(**n).is_some_and(|b| b.state == BrokerState::Active);
        let mut moves = Vec::new();
        for (_, _, p) in self.partitions_iter() {
            let Some(&to) = p.replicas.iter().find(active) else { continue };
            let from = leaders.get(&p.group).copied();
            if from != Some(to) {
                moves.push(LeaderMove { group: p.group, from, to });
            }
        }
        moves
    }

    /// The load of every active broker: the candidates for new replicas.
    fn active_load(&self) -> BTreeMap<NodeId, NodeLoad> {
        let mut load = self.load_per_node();
        load.retain(|node, _| self.broker(*node).is_some_and(|b| b.state == BrokerState::Active));
        load
    }
}
