//! Where replicas go: pure functions of the load each node carries. The proposer calls
//! them (through `propose.rs`) and puts their answer in the command; applying the command
//! checks the answer's rules but never recomputes it, so placement may improve without
//! changing what committed commands mean.
//!
//! New partitions go to the least-loaded nodes. "Load" counts first within the topic (so a
//! topic spreads over the nodes even when their other load differs), then over the cluster:
//! replicas hosted, then preferred leaderships. Ties are broken by a rotation that starts
//! at a point derived from the topic's name and moves one node per partition, so equal
//! nodes take turns and partitions land on different subsets.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use crate::ids::NodeId;

use super::MetaError;
use super::state::NodeLoad;

/// A seed for the tie-breaking rotation, from the topic's name (FNV-1a): two topics of the
/// same size on an idle cluster do not both start on the lowest node id.
pub fn topic_seed(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Replica lists for `count` new partitions of a topic, preferred leader first.
///
/// `nodes` are the candidates (the active brokers) with the load they carry now; `topic`
/// holds the replica lists of the topic's existing partitions (empty for a new topic).
/// Each partition's replicas go to the nodes holding the fewest replicas of this topic
/// (then of all topics). Its preferred leader is, among the nodes that hold no more
/// replicas than the last of those, the one leading the fewest partitions of this topic
/// (then of all topics); of equally loaded followers, those leading the most are taken.
pub fn place_partitions(
    nodes: &BTreeMap<NodeId, NodeLoad>,
    topic: &[Vec<NodeId>],
    seed: u64,
    count: usize,
    factor: usize,
) -> Result<Vec<Vec<NodeId>>, MetaError> {
    let ids: Vec<NodeId> = nodes.keys().copied().collect();
    let n = ids.len();
    if factor == 0 || factor > n {
        return Err(MetaError::ReplicationFactor { factor, active: n });
    }
    let mut total: Vec<NodeLoad> = nodes.values().copied().collect();
    let mut mine = vec![NodeLoad::default(); n];
    for list in topic {
        for (rank, node) in list.iter().enumerate() {
            if let Ok(i) = ids.binary_search(node) {
                mine[i].replicas += 1;
                mine[i].leaders += u32::from(rank == 0);
            }
        }
    }
    let mut placed = Vec::with_capacity(count);
    for k in 0..count {
        let turn = (seed.wrapping_add((topic.len() + k) as u64) % n as u64) as usize;
        let rotation = |i: usize| (i + n - turn) % n;
        let replica_load = |i: usize| (mine[i].replicas, total[i].replicas);
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| (replica_load(i), total[i].leaders, rotation(i)));
        // Any node as lightly loaded in replicas as the last one the replicas need may lead:
        // choosing the leader among those spreads leadership without costing replica balance.
        let bar = replica_load(order[factor - 1]);
        let leader = order
            .iter()
            .copied()
            .take_while(|&i| replica_load(i) <= bar)
            .min_by_key(|&i| (mine[i].leaders, total[i].leaders, rotation(i)))
            .expect("the first node is within the bar");
        // Of equally loaded followers, those that lead more go first: the nodes that lead
        // less stay free to lead the next partitions.
        let mut followers: Vec<usize> = order.into_iter().filter(|&i| i != leader).collect();
        followers.sort_by_key(|&i| (replica_load(i), Reverse(mine[i].leaders), Reverse(total[i].leaders), rotation(i)));
        let chosen: Vec<usize> = std::iter::once(leader).chain(followers.into_iter().take(factor - 1)).collect();
        for (rank, &i) in chosen.iter().enumerate() {
            let leads = u32::from(rank == 0);
            mine[i].replicas += 1;
            mine[i].leaders += leads;
            total[i].replicas += 1;
            total[i].leaders += leads;
        }
        placed.push(chosen.iter().map(|&i| ids[i]).collect());
    }
    Ok(placed)
}

/// `replicas` with `leaving` replaced by the least-loaded candidate that is not a replica
/// already (fewest replicas, then fewest preferred leaderships, then lowest id), in the
/// same position: the newcomer catches up before the move finishes, so it can lead as well
/// as the node it replaces. `None` if no candidate is left.
pub fn replace_replica(
    candidates: &BTreeMap<NodeId, NodeLoad>,
    replicas: &[NodeId],
    leaving: NodeId,
) -> Option<Vec<NodeId>> {
    let (&newcomer, _) = candidates
        .iter()
        .filter(|(node, _)| **node != leaving && !replicas.contains(node))
        .min_by_key(|(node, load)| (load.replicas, load.leaders, **node))?;
    Some(replicas.iter().map(|&n| if n == leaving { newcomer } else { n }).collect())
}
