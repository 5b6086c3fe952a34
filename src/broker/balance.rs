//! Leader balance (issues 13 and 17): a partition's first replica is its preferred leader,
//! and leadership goes back to it once it is up and caught up. The metadata leader finds
//! the partitions led elsewhere (`MetadataState::leader_moves` over the leader table) and
//! asks each one's leader to transfer leadership; the group's leader checks again that the
//! target is a voter whose match index reaches the commit, so a transfer never waits on a
//! replica that is behind (the group would refuse produce for an election timeout).
//!
//! It runs every `NodeConfig::leader_balance_every` on the metadata leader and at once on
//! `keel leader balance`. A move skipped now (the replica is down or behind) is tried again
//! on the next round.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info};

use super::{Broker, BrokerError};
use crate::ids::{GroupId, NodeId as Node};
use crate::metadata::LeaderMove;
use crate::net::client_codec::LeaderMoveView;
use crate::raft::NodeId;

/// How long the metadata leader waits for another node to start one transfer.
const TRANSFER_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

impl Broker {
    /// On the group's leader: hands leadership of `topic`/`partition` to replica `to`, if it
    /// is a voter whose log reaches the commit. Answers once the transfer started.
    pub async fn transfer_leader(&self, topic: &str, partition: u32, to: NodeId) -> Result<(), BrokerError> {
        let what = format!("{topic}/{partition}");
        let group = self.replica(topic, partition)?;
        if !group.leader().me {
            return Err(self.not_leader(group.id, what));
        }
        if to == self.node_id {
            return Ok(());
        }
        let status = group.status().await.ok_or_else(|| BrokerError::Busy("the replica is stopping".into()))?;
        let member = status.members.iter().find(|m| m.id == to);
        let Some(member) = member.filter(|m| m.voter) else {
            return Err(BrokerError::Invalid(format!("node {to} is not a voter of {what}: it cannot lead it")));
        };
        let matched = member.match_index.unwrap_or(0);
        if matched < status.commit_index {
            let commit = status.commit_index;
            return Err(BrokerError::Busy(format!("node {to} is behind on {what} (index {matched} of {commit})")));
        }
        group.transfer_leadership(to).await.map_err(BrokerError::Busy)
    }

    /// On the metadata leader: starts a transfer for every partition not led by its
    /// preferred replica (or, when that one is draining, its first active replica) where
    /// the leader last reported that replica in sync. Says what it did for each.
    pub async fn balance_leaders(&self) -> Result<Vec<LeaderMoveView>, BrokerError> {
        if !self.leads_metadata() {
            let leader = self.metadata_group().and_then(|g| g.leader().leader);
            let address = leader.and_then(|id| self.address_of(id));
            return Err(BrokerError::NotLeader { what: "the metadata group".into(), leader, address });
        }
        if !self.metadata_ready() {
            return Err(BrokerError::starting());
        }
        let state = self.state();
        let leaders: BTreeMap<GroupId, Node> = state
            .partitions_iter()
            .filter_map(|(_, _, p)| self.leaders.leader(p.group.get()).map(|l| (p.group, Node(l))))
            .collect();
        let moves = state.leader_moves(&leaders);
        let attempts = moves.iter().filter_map(|m| {
            let (topic, partition, _) = state.group(m.group)?;
            Some(self.attempt(topic.name.clone(), partition, m))
        });
        Ok(futures_util::future::join_all(attempts).await)
    }

    /// One leader move: checked against the leader's last report, then asked of the leader.
    async fn attempt(&self, topic: String, partition: u32, m: &LeaderMove) -> LeaderMoveView {
        let to = m.to.get();
        let from = m.from.map(Node::get);
        let mut view = LeaderMoveView { topic, partition, from, to, started: false, note: String::new() };
        let Some(from) = from else {
            view.note = "no leader is known".into();
            return view;
        };
        let in_sync = self.leaders.get(m.group.get()).and_then(|r| r.offsets).is_some_and(|o| o.in_sync.contains(&to));
        if !in_sync {
            view.note = format!("node {to} is not in sync (down or catching up)");
            return view;
        }
        let result = if from == self.node_id {
            self.transfer_leader(&view.topic, partition, to).await
        } else {
            self.transfer_leader_at(from, &view.topic, partition, to).await
        };
        match result {
            Ok(()) => view.started = true,
            Err(e) => view.note = e.to_string(),
        }
        view
    }

    /// Asks node `leader` to transfer leadership of `topic`/`partition` to `to`.
    async fn transfer_leader_at(
        &self,
        leader: NodeId,
        topic: &str,
        partition: u32,
        to: NodeId,
    ) -> Result<(), BrokerError> {
        let address =
            self.address_of(leader).ok_or_else(|| BrokerError::Busy(format!("node {leader} has no address")))?;
        let client = self.controller_client().await?;
        let asked = client.transfer_leader_at(&address, topic, partition, to);
        match tokio::time::timeout(TRANSFER_REQUEST_TIMEOUT, asked).await {
            Ok(result) => result.map_err(|e| BrokerError::Busy(format!("node {leader}: {e}"))),
            Err(_) => Err(BrokerError::Busy(format!("node {leader} did not answer in {TRANSFER_REQUEST_TIMEOUT:?}"))),
        }
    }

    /// Balances leaders every `period` while this node leads the metadata group.
    pub async fn balance_leaders_every(self: Arc<Self>, period: Duration) {
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            if !self.leads_metadata() || !self.metadata_ready() {
                continue;
            }
            match self.balance_leaders().await {
                Ok(moves) => {
                    for m in moves.iter().filter(|m| m.started) {
                        let (topic, partition) = (&m.topic, m.partition);
                        info!(%topic, partition, from = ?m.from, to = m.to, "leadership moves back");
                    }
                }
                Err(e) => debug!(error = %e, "leader balance skipped"),
            }
        }
    }
}
