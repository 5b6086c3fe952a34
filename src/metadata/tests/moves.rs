//! Broker states, replica moves, draining a node and leader balancing.

use std::collections::BTreeMap;

use crate::ids::{GroupId, NodeId};
use crate::metadata::*;

use super::{Harness, nodes, register};

fn set_state(node: u64, state: BrokerState) -> Command {
    Command::SetBrokerState { node: NodeId(node), state }
}

fn move_to(group: u64, target: &[u64]) -> Command {
    Command::MovePartition { group: GroupId(group), target: nodes(target) }
}

fn finish(group: u64, replicas: &[u64]) -> Command {
    Command::FinishMove { group: GroupId(group), replicas: nodes(replicas) }
}

/// Brokers 1..=4 and topic `t` with one partition (group 1) on 1, 2, 3.
fn one_partition_on_three_of_four() -> Harness {
    let mut h = Harness::new(4);
    let placed = Command::CreateTopic(CreateTopic {
        name: "t".into(),
        internal: false,
        created_at_ms: 0,
        config: TopicConfig::default(),
        replicas: vec![nodes(&[1, 2, 3])],
    });
    h.apply(placed).unwrap();
    h
}

#[test]
fn a_broker_drains_and_comes_back() {
    let mut h = Harness::new(2);
    assert_eq!(
        h.apply(set_state(2, BrokerState::Draining)),
        Ok(Applied::BrokerStateSet { node: NodeId(2), state: BrokerState::Draining })
    );
    assert_eq!(h.state.active_brokers(), nodes(&[1]));
    h.apply(set_state(2, BrokerState::Active)).unwrap();
    h.apply(set_state(2, BrokerState::Active)).expect("setting the state it has changes nothing and is fine");
    assert_eq!(h.state.active_brokers(), nodes(&[1, 2]));
}

#[test]
fn a_broker_that_hosts_replicas_cannot_be_removed() {
    let mut h = one_partition_on_three_of_four();
    let error = h.refused(set_state(3, BrokerState::Removed));
    assert_eq!(error, MetaError::BrokerNotEmpty { node: NodeId(3), groups: 1 });
    assert!(error.to_string().contains("drain it"), "{error}");
    h.apply(set_state(4, BrokerState::Removed)).unwrap();
}

#[test]
fn a_removed_broker_comes_back_only_by_registering_again() {
    let mut h = Harness::new(2);
    h.apply(set_state(2, BrokerState::Removed)).unwrap();
    let error = h.refused(set_state(2, BrokerState::Active));
    assert!(error.to_string().contains("register it again"), "{error}");
    h.refused(set_state(2, BrokerState::Draining));
    assert_eq!(h.apply(register(2)), Ok(Applied::BrokerRegistered { node: NodeId(2), new: false }));
    assert_eq!(h.state.broker(NodeId(2)).unwrap().state, BrokerState::Active);
    assert_eq!(h.refused(set_state(9, BrokerState::Draining)), MetaError::UnknownBroker(NodeId(9)));
}

#[test]
fn a_drain_the_other_brokers_cannot_absorb_is_refused() {
    let mut h = Harness::new(3);
    h.create("t", 2, 3);
    let error = h.refused(set_state(2, BrokerState::Draining));
    assert!(matches!(error, MetaError::CannotDrain { node: NodeId(2), factor: 3, others: 2, .. }), "{error}");
    assert!(error.to_string().contains("add a broker first"), "{error}");
    h.apply(register(4)).unwrap();
    h.apply(set_state(2, BrokerState::Draining)).expect("with a fourth broker the replicas have somewhere to go");
}

#[test]
fn a_move_hosts_the_group_on_both_sets_until_it_finishes() {
    let mut h = one_partition_on_three_of_four();
    assert_eq!(h.apply(move_to(1, &[1, 2, 4])), Ok(Applied::MoveStarted { group: GroupId(1) }));
    let Fate::Assigned { replicas, .. } = h.state.group_fate(GroupId(1)) else { panic!() };
    assert_eq!(replicas, nodes(&[1, 2, 3, 4]));
    assert_eq!(h.state.groups_hosted_by(NodeId(4)), vec![GroupId(1)]);
    assert_eq!(h.state.local_plan(NodeId(3), [GroupId(1)]), LocalPlan::default(), "3 still hosts it");
    assert_eq!(h.state.replicas(GroupId(1)), Some(nodes(&[1, 2, 3]).as_slice()), "the replicas until it finishes");
    let finished = h.apply(finish(1, &[1, 2, 4]));
    assert_eq!(finished, Ok(Applied::MoveFinished { group: GroupId(1), dropped: nodes(&[3]) }));
    assert_eq!(h.state.replicas(GroupId(1)), Some(nodes(&[1, 2, 4]).as_slice()));
    assert_eq!(h.state.local_plan(NodeId(3), [GroupId(1)]).delete, vec![GroupId(1)]);
}

#[test]
fn an_abandoned_move_drops_the_nodes_it_added() {
    let mut h = one_partition_on_three_of_four();
    h.apply(move_to(1, &[4, 2, 3])).unwrap();
    let abandoned = h.apply(finish(1, &[1, 2, 3]));
    assert_eq!(abandoned, Ok(Applied::MoveFinished { group: GroupId(1), dropped: nodes(&[4]) }));
    assert_eq!(h.state.groups_hosted_by(NodeId(4)), vec![]);
    assert_eq!(h.state.partitions("t").unwrap()[0].target, None);
}

#[test]
fn moves_are_refused_for_unknown_groups_while_moving_or_to_the_same_replicas() {
    let mut h = one_partition_on_three_of_four();
    assert_eq!(h.refused(move_to(9, &[1])), MetaError::UnknownGroup(GroupId(9)));
    assert_eq!(
        h.refused(move_to(1, &[1, 2, 3])),
        MetaError::MoveToSame { group: GroupId(1), replicas: nodes(&[1, 2, 3]) }
    );
    assert!(matches!(h.refused(move_to(1, &[])), MetaError::ReplicationFactor { factor: 0, .. }));
    assert_eq!(h.refused(move_to(1, &[1, 4, 4])), MetaError::DuplicateReplica { partition: 0, node: NodeId(4) });
    assert_eq!(h.refused(move_to(1, &[1, 2, 7])), MetaError::UnknownBroker(NodeId(7)));
    h.apply(move_to(1, &[1, 2, 4])).unwrap();
    let error = h.refused(move_to(1, &[2, 3, 4]));
    assert_eq!(error, MetaError::MoveInProgress { group: GroupId(1), target: nodes(&[1, 2, 4]) });
}

#[test]
fn a_move_adds_only_active_brokers_but_keeps_a_draining_replica() {
    let mut h = one_partition_on_three_of_four();
    h.apply(set_state(3, BrokerState::Draining)).unwrap();
    h.apply(move_to(1, &[3, 2, 1])).expect("reordering keeps the draining replica 3");
    h.apply(finish(1, &[3, 2, 1])).unwrap();
    h.apply(set_state(4, BrokerState::Draining)).unwrap();
    let error = h.refused(move_to(1, &[1, 2, 4]));
    assert!(matches!(error, MetaError::BrokerNotActive { node: NodeId(4), state: BrokerState::Draining, .. }));
}

#[test]
fn finishing_is_refused_without_a_move_or_with_other_replicas() {
    let mut h = one_partition_on_three_of_four();
    assert_eq!(h.refused(finish(1, &[1, 2, 4])), MetaError::NoMove { group: GroupId(1) });
    assert_eq!(h.refused(finish(9, &[1])), MetaError::UnknownGroup(GroupId(9)));
    h.apply(move_to(1, &[1, 2, 4])).unwrap();
    let error = h.refused(finish(1, &[1, 4, 2]));
    assert!(matches!(error, MetaError::MoveMismatch { .. }), "{error}");
}

#[test]
fn draining_moves_every_replica_off_a_node_and_then_it_can_be_removed() {
    let mut h = Harness::new(5);
    h.create("a", 12, 3);
    h.create("b", 5, 2);
    let hosted = h.state.groups_hosted_by(NodeId(2));
    assert!(!hosted.is_empty());
    h.apply(set_state(2, BrokerState::Draining)).unwrap();
    let moves = h.state.drain_moves(NodeId(2)).unwrap();
    assert_eq!(moves.len(), hosted.len());
    for command in moves {
        let Command::MovePartition { group, target } = command.clone() else { panic!("{command:?}") };
        assert!(!target.contains(&NodeId(2)));
        h.apply(command).unwrap();
        h.apply(Command::FinishMove { group, replicas: target }).unwrap();
    }
    assert_eq!(h.state.groups_hosted_by(NodeId(2)), vec![]);
    h.apply(set_state(2, BrokerState::Removed)).unwrap();
    let load = h.state.load_per_node();
    let counts: Vec<u32> = [1, 3, 4, 5].iter().map(|n| load[&NodeId(*n)].replicas).collect();
    let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    assert!(max - min <= 1, "the drained replicas spread over the others: {counts:?}");
}

#[test]
fn a_drain_with_nowhere_to_go_is_refused_by_the_proposer_too() {
    let mut h = Harness::new(2);
    h.create("t", 1, 2);
    let error = h.state.drain_moves(NodeId(1)).unwrap_err();
    assert!(matches!(error, MetaError::CannotDrain { node: NodeId(1), factor: 2, others: 1, .. }), "{error}");
}

#[test]
fn replace_replica_keeps_the_position_and_picks_the_least_loaded() {
    let load = |r, l| NodeLoad { replicas: r, leaders: l };
    let candidates: BTreeMap<NodeId, NodeLoad> =
        [(NodeId(1), load(1, 0)), (NodeId(2), load(5, 5)), (NodeId(3), load(2, 0)), (NodeId(4), load(2, 0))].into();
    assert_eq!(replace_replica(&candidates, &nodes(&[2, 1]), NodeId(2)), Some(nodes(&[3, 1])));
    assert_eq!(replace_replica(&candidates, &nodes(&[1, 3, 4]), NodeId(3)), Some(nodes(&[1, 2, 4])));
    assert_eq!(replace_replica(&candidates, &nodes(&[1, 2, 3, 4]), NodeId(4)), None);
}

#[test]
fn leader_moves_name_partitions_not_led_by_their_preferred_leader() {
    let mut h = Harness::new(3);
    h.create("t", 3, 3);
    let preferred: BTreeMap<GroupId, NodeId> =
        h.state.partitions("t").unwrap().iter().map(|p| (p.group, p.preferred_leader())).collect();
    assert_eq!(h.state.leader_moves(&preferred), vec![]);
    let mut leaders = preferred.clone();
    leaders.insert(GroupId(1), h.state.replicas(GroupId(1)).unwrap()[1]);
    leaders.remove(&GroupId(2));
    let moves = h.state.leader_moves(&leaders);
    assert_eq!(
        moves,
        vec![
            LeaderMove { group: GroupId(1), from: Some(leaders[&GroupId(1)]), to: preferred[&GroupId(1)] },
            LeaderMove { group: GroupId(2), from: None, to: preferred[&GroupId(2)] },
        ]
    );
}

#[test]
fn leadership_moves_off_a_draining_preferred_leader() {
    let mut h = one_partition_on_three_of_four();
    h.apply(set_state(1, BrokerState::Draining)).unwrap();
    let leaders = BTreeMap::from([(GroupId(1), NodeId(1))]);
    let moves = h.state.leader_moves(&leaders);
    assert_eq!(moves, vec![LeaderMove { group: GroupId(1), from: Some(NodeId(1)), to: NodeId(2) }]);
}
