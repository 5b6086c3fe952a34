//! Each command applied, and each rule that refuses one.

use crate::ids::{GroupId, NodeId};
use crate::metadata::*;

use super::{Harness, nodes, register};

fn create(name: &str, replicas: Vec<Vec<NodeId>>) -> Command {
    Command::CreateTopic(CreateTopic {
        name: name.into(),
        internal: name.starts_with("__"),
        created_at_ms: 1,
        config: TopicConfig::default(),
        replicas,
    })
}

#[test]
fn register_adds_an_active_broker_and_updates_a_known_one() {
    let mut h = Harness::new(0);
    assert_eq!(h.apply(register(1)), Ok(Applied::BrokerRegistered { node: NodeId(1), new: true }));
    let broker = h.state.broker(NodeId(1)).unwrap().clone();
    assert_eq!((broker.state, broker.voter, broker.address.as_str()), (BrokerState::Active, true, "10.0.0.1:7000"));
    let update =
        Command::RegisterBroker { node: NodeId(1), address: "n1:7000".into(), kafka_address: None, voter: false };
    assert_eq!(h.apply(update), Ok(Applied::BrokerRegistered { node: NodeId(1), new: false }));
    let broker = h.state.broker(NodeId(1)).unwrap();
    assert_eq!((broker.address.as_str(), broker.kafka_address.as_deref(), broker.voter), ("n1:7000", None, false));
}

#[test]
fn register_refuses_node_zero_and_bad_addresses() {
    let mut h = Harness::new(1);
    let with = |node, address: &str, kafka: Option<&str>| Command::RegisterBroker {
        node: NodeId(node),
        address: address.into(),
        kafka_address: kafka.map(String::from),
        voter: false,
    };
    assert_eq!(h.refused(with(0, "h:1", None)), MetaError::ZeroNodeId);
    assert!(matches!(h.refused(with(2, "no-port", None)), MetaError::InvalidAddress { .. }));
    assert!(matches!(h.refused(with(2, "h:1", Some("h:0"))), MetaError::InvalidAddress { .. }));
}

#[test]
fn register_refuses_an_address_another_node_has() {
    let mut h = Harness::new(2);
    let clash =
        Command::RegisterBroker { node: NodeId(3), address: "10.0.0.1:7000".into(), kafka_address: None, voter: false };
    assert_eq!(h.refused(clash), MetaError::AddressInUse { address: "10.0.0.1:7000".into(), node: NodeId(1) });
    let kafka_clash = Command::RegisterBroker {
        node: NodeId(3),
        address: "10.0.0.3:7000".into(),
        kafka_address: Some("10.0.0.2:9092".into()),
        voter: false,
    };
    assert_eq!(h.refused(kafka_clash), MetaError::AddressInUse { address: "10.0.0.2:9092".into(), node: NodeId(2) });
}

#[test]
fn register_refuses_more_than_brokers_max() {
    let mut h = Harness::new(BROKERS_MAX as u64);
    assert_eq!(h.refused(register(BROKERS_MAX as u64 + 1)), MetaError::TooManyBrokers { max: BROKERS_MAX });
    h.apply(register(1)).expect("a known broker may still update itself");
}

#[test]
fn create_topic_places_partitions_and_allocates_groups_in_order() {
    let mut h = Harness::new(3);
    let groups = h.create("orders", 4, 3);
    assert_eq!(groups, (1..=4).map(GroupId).collect::<Vec<_>>());
    assert_eq!(h.create("clicks", 2, 1), vec![GroupId(5), GroupId(6)]);
    assert_eq!(h.state.next_group_id(), GroupId(7));
    let topic = h.state.topic("orders").unwrap();
    assert_eq!((topic.created_at_ms, topic.internal, topic.partitions.len()), (7, false, 4));
    for (i, p) in topic.partitions.iter().enumerate() {
        assert_eq!(p.replicas.len(), 3);
        assert_eq!(h.state.group(p.group).map(|(t, n, _)| (t.name.as_str(), n)), Some(("orders", i as u32)));
        assert_eq!(h.state.replicas(p.group), Some(p.replicas.as_slice()));
    }
    assert_eq!(h.state.partition_count(), 6);
    let leaders: Vec<NodeId> = topic.partitions.iter().map(|p| p.preferred_leader()).collect();
    assert!(
        leaders[..3].contains(&NodeId(1)) && leaders[..3].contains(&NodeId(2)) && leaders[..3].contains(&NodeId(3))
    );
}

#[test]
fn of_two_racing_creates_of_one_name_the_second_is_refused() {
    let mut h = Harness::new(3);
    let config = TopicConfig::default;
    let first = h.state.create_topic("orders", Some(2), Some(3), config(), false, 1).unwrap();
    let second = h.state.create_topic("orders", Some(8), Some(1), config(), false, 2).unwrap();
    h.apply(first).unwrap();
    assert_eq!(h.refused(second), MetaError::TopicExists { name: "orders".into() });
    assert_eq!(h.state.partitions("orders").unwrap().len(), 2);
}

#[test]
fn a_create_placed_on_a_broker_that_left_since_is_refused() {
    let mut h = Harness::new(3);
    let command = h.state.create_topic("orders", Some(3), Some(3), TopicConfig::default(), false, 1).unwrap();
    h.apply(Command::SetBrokerState { node: NodeId(2), state: BrokerState::Draining }).unwrap();
    assert!(matches!(
        h.refused(command),
        MetaError::ReplicationFactor { factor: 3, active: 2 } | MetaError::BrokerNotActive { .. }
    ));
    let placed = create("orders", vec![nodes(&[1, 2])]);
    let error = h.refused(placed);
    assert!(matches!(error, MetaError::BrokerNotActive { node: NodeId(2), state: BrokerState::Draining, .. }));
    assert!(error.to_string().contains("new replicas go to active brokers only"), "{error}");
}

#[test]
fn create_refuses_names_kafka_refuses() {
    let mut h = Harness::new(1);
    for name in ["", "..", "a b", &"x".repeat(250)] {
        assert!(matches!(h.refused(create(name, vec![nodes(&[1])])), MetaError::InvalidTopicName { .. }));
    }
    let mut reserved = create("__mine", vec![nodes(&[1])]);
    if let Command::CreateTopic(c) = &mut reserved {
        c.internal = false;
    }
    let error = h.refused(reserved);
    assert!(error.to_string().contains("reserved for internal topics"), "{error}");
}

#[test]
fn create_refuses_partition_counts_outside_1_to_10000() {
    let mut h = Harness::new(1);
    assert_eq!(h.refused(create("t", vec![])), MetaError::PartitionCount { count: 0 });
    let many = vec![nodes(&[1]); PARTITIONS_PER_TOPIC_MAX as usize + 1];
    assert_eq!(h.refused(create("t", many)), MetaError::PartitionCount { count: 10_001 });
    let error = h.state.create_topic("t", Some(0), None, TopicConfig::default(), false, 0).unwrap_err();
    assert!(error.to_string().contains("1 to 10000 partitions"), "{error}");
}

#[test]
fn create_refuses_a_replication_factor_above_the_active_brokers() {
    let mut h = Harness::new(3);
    let error = h.state.create_topic("t", Some(1), Some(4), TopicConfig::default(), false, 0).unwrap_err();
    assert_eq!(error, MetaError::ReplicationFactor { factor: 4, active: 3 });
    assert!(error.to_string().contains("outside 1..=3 (the active brokers)"), "{error}");
    let error = h.state.create_topic("t", Some(1), Some(0), TopicConfig::default(), false, 0).unwrap_err();
    assert_eq!(error, MetaError::ReplicationFactor { factor: 0, active: 3 });
    assert_eq!(h.refused(create("t", vec![vec![]])), MetaError::ReplicationFactor { factor: 0, active: 3 });
}

#[test]
fn create_refuses_partitions_with_different_replication_factors() {
    let mut h = Harness::new(3);
    let error = h.refused(create("t", vec![nodes(&[1, 2]), nodes(&[3])]));
    assert_eq!(error, MetaError::UnevenReplication { partition: 1, found: 1, expected: 2 });
}

#[test]
fn create_refuses_a_node_twice_in_one_partition() {
    let mut h = Harness::new(3);
    let error = h.refused(create("t", vec![nodes(&[1, 2]), nodes(&[3, 3])]));
    assert_eq!(error, MetaError::DuplicateReplica { partition: 1, node: NodeId(3) });
}

#[test]
fn create_refuses_a_replica_on_an_unknown_node() {
    let mut h = Harness::new(3);
    assert_eq!(h.refused(create("t", vec![nodes(&[1, 9])])), MetaError::UnknownBroker(NodeId(9)));
}

#[test]
fn create_refuses_more_partitions_than_the_cluster_cap() {
    let mut h = Harness::new(3);
    let settings = ClusterSettings { cluster_partitions_max: 10, ..ClusterSettings::default() };
    h.apply(Command::SetClusterSettings(settings)).unwrap();
    h.create("a", 8, 1);
    let error = h.state.create_topic("b", Some(3), Some(1), TopicConfig::default(), false, 0).unwrap_err();
    assert_eq!(error, MetaError::ClusterPartitionsMax { max: 10, existing: 8, adding: 3 });
    assert_eq!(h.refused(create("b", vec![nodes(&[1]); 3])), error);
    assert!(error.to_string().contains("cluster_partitions_max"), "{error}");
    h.create("b", 2, 1);
}

#[test]
fn create_refuses_an_invalid_config() {
    let mut h = Harness::new(1);
    let config = TopicConfig { retention_ms: Some(-7), ..TopicConfig::default() };
    let error = h.state.create_topic("t", Some(1), None, config, false, 0).unwrap_err();
    assert!(matches!(error, MetaError::InvalidConfig { key: ConfigKey::RetentionMs, .. }));
    let compact = TopicConfig { cleanup_policy: Some(CleanupPolicy::Compact), ..TopicConfig::default() };
    assert!(h.state.create_topic("t", Some(1), None, compact.clone(), false, 0).is_err());
    let command = h.state.create_topic(CONSUMER_OFFSETS, Some(16), None, compact, true, 0).unwrap();
    h.apply(command).expect("the internal offsets topic may be compacted");
}

#[test]
fn a_topic_created_again_gets_another_id_and_every_node_derives_the_same() {
    let mut a = Harness::new(1);
    let mut b = Harness::new(1);
    let command = a.state.create_topic("t", Some(1), None, TopicConfig::default(), false, 5).unwrap();
    let created = a.apply(command.clone()).unwrap();
    assert_eq!(b.apply(command.clone()), Ok(created.clone()), "the same entry gives the same id on every node");
    let Applied::TopicCreated { id: first, .. } = created else { panic!("{created:?}") };
    a.apply(Command::DeleteTopic { name: "t".into() }).unwrap();
    let Ok(Applied::TopicCreated { id: second, .. }) = a.apply(command) else { panic!() };
    assert_ne!(first, second);
    assert_eq!(first.0[6] >> 4, 8, "a version-8 UUID");
    assert_eq!(first.to_string().len(), 22, "Kafka prints topic ids as 22 characters of base64");
}

#[test]
fn a_deleted_topics_groups_are_removed_and_never_reused() {
    let mut h = Harness::new(2);
    let groups = h.create("t", 2, 2);
    assert_eq!(
        h.apply(Command::DeleteTopic { name: "t".into() }),
        Ok(Applied::TopicDeleted { groups: groups.clone() })
    );
    assert_eq!(h.state.topic("t"), None);
    for g in &groups {
        assert_eq!(h.state.group_fate(*g), Fate::Removed);
        assert_eq!(h.state.group(*g), None);
    }
    assert_eq!(h.create("t", 1, 1), vec![GroupId(3)]);
    assert_eq!(h.state.partition_count(), 1);
}

#[test]
fn delete_refuses_an_unknown_or_internal_topic() {
    let mut h = Harness::new(1);
    assert_eq!(h.refused(Command::DeleteTopic { name: "t".into() }), MetaError::UnknownTopic { name: "t".into() });
    let command = h.state.create_topic(CONSUMER_OFFSETS, Some(1), None, TopicConfig::default(), true, 0).unwrap();
    h.apply(command).unwrap();
    let error = h.refused(Command::DeleteTopic { name: CONSUMER_OFFSETS.into() });
    assert_eq!(error, MetaError::InternalTopic { name: CONSUMER_OFFSETS.into() });
}

#[test]
fn alter_config_sets_and_resets_keys_and_keeps_the_others() {
    let mut h = Harness::new(1);
    let config = TopicConfig { retention_ms: Some(1000), retention_bytes: Some(5), ..TopicConfig::default() };
    let command = h.state.create_topic("t", Some(1), None, config, false, 0).unwrap();
    h.apply(command).unwrap();
    let set = TopicConfig { max_message_bytes: Some(100), ..TopicConfig::default() };
    let alter = Command::AlterTopicConfig { name: "t".into(), set, reset: vec![ConfigKey::RetentionMs] };
    assert_eq!(h.apply(alter), Ok(Applied::TopicConfigAltered));
    let expected = TopicConfig { retention_bytes: Some(5), max_message_bytes: Some(100), ..TopicConfig::default() };
    assert_eq!(h.state.topic("t").unwrap().config, expected);
    assert_eq!(h.state.effective_config("t").unwrap().retention_ms, None);
}

#[test]
fn alter_config_refuses_a_key_both_set_and_reset_a_bad_value_and_an_unknown_topic() {
    let mut h = Harness::new(1);
    h.create("t", 1, 1);
    let set = TopicConfig { retention_ms: Some(1), ..TopicConfig::default() };
    let both = Command::AlterTopicConfig { name: "t".into(), set, reset: vec![ConfigKey::RetentionMs] };
    assert_eq!(h.refused(both), MetaError::ConfigSetAndReset { key: ConfigKey::RetentionMs });
    let bad = TopicConfig { segment_bytes: Some(1), ..TopicConfig::default() };
    let alter = Command::AlterTopicConfig { name: "t".into(), set: bad, reset: vec![] };
    assert!(matches!(h.refused(alter), MetaError::InvalidConfig { key: ConfigKey::SegmentBytes, .. }));
    let unknown = Command::AlterTopicConfig { name: "u".into(), set: TopicConfig::default(), reset: vec![] };
    assert_eq!(h.refused(unknown), MetaError::UnknownTopic { name: "u".into() });
}

#[test]
fn add_partitions_grows_a_topic_with_new_groups() {
    let mut h = Harness::new(3);
    h.create("t", 2, 2);
    h.create("u", 1, 1);
    let command = h.state.add_partitions("t", 5).unwrap();
    assert_eq!(h.apply(command), Ok(Applied::PartitionsAdded { groups: vec![GroupId(4), GroupId(5), GroupId(6)] }));
    let partitions = h.state.partitions("t").unwrap();
    assert_eq!(partitions.len(), 5);
    assert!(partitions.iter().all(|p| p.replicas.len() == 2));
    assert_eq!(h.state.group(GroupId(6)).map(|(t, p, _)| (t.name.as_str(), p)), Some(("t", 4)));
}

#[test]
fn of_two_racing_adds_to_one_total_the_second_is_refused() {
    let mut h = Harness::new(3);
    h.create("t", 2, 1);
    let first = h.state.add_partitions("t", 4).unwrap();
    let second = h.state.add_partitions("t", 4).unwrap();
    h.apply(first).unwrap();
    let error = h.refused(second);
    assert_eq!(error, MetaError::PartitionsNotAdded { topic: "t".into(), current: 4, requested: 4 });
    assert!(error.to_string().contains("partitions are never removed"), "{error}");
}

#[test]
fn add_partitions_refuses_a_placement_that_does_not_fit_the_topic() {
    let mut h = Harness::new(3);
    h.create("t", 2, 2);
    let add = |count, replicas| Command::AddPartitions { name: "t".into(), count, replicas };
    let error = h.refused(add(4, vec![nodes(&[1, 2])]));
    assert!(matches!(error, MetaError::PlacementCount { needed: 2, given: 1, .. }));
    let error = h.refused(add(3, vec![nodes(&[1, 2, 3])]));
    assert_eq!(error, MetaError::UnevenReplication { partition: 2, found: 3, expected: 2 });
    assert_eq!(h.refused(add(10_001, vec![])), MetaError::PartitionCount { count: 10_001 });
    assert_eq!(
        h.refused(add(1, vec![])),
        MetaError::PartitionsNotAdded { topic: "t".into(), current: 2, requested: 1 }
    );
    let unknown = Command::AddPartitions { name: "u".into(), count: 3, replicas: vec![] };
    assert_eq!(h.refused(unknown), MetaError::UnknownTopic { name: "u".into() });
    let settings = ClusterSettings { cluster_partitions_max: 3, ..ClusterSettings::default() };
    h.apply(Command::SetClusterSettings(settings)).unwrap();
    let error = h.refused(add(4, vec![nodes(&[1, 2]), nodes(&[2, 3])]));
    assert_eq!(error, MetaError::ClusterPartitionsMax { max: 3, existing: 2, adding: 2 });
}

#[test]
fn an_internal_topics_partition_count_is_fixed() {
    let mut h = Harness::new(1);
    let command = h.state.create_topic(CONSUMER_OFFSETS, Some(4), None, TopicConfig::default(), true, 0).unwrap();
    h.apply(command).unwrap();
    let error = h.state.add_partitions(CONSUMER_OFFSETS, 5).unwrap_err();
    assert_eq!(error, MetaError::InternalPartitionsFixed { topic: CONSUMER_OFFSETS.into() });
    let add = Command::AddPartitions { name: CONSUMER_OFFSETS.into(), count: 5, replicas: vec![nodes(&[1])] };
    assert_eq!(h.refused(add), error);
}

#[test]
fn producer_id_blocks_follow_each_other_and_never_overlap() {
    let mut h = Harness::new(2);
    let allocate = |node, count| Command::AllocateProducerIds { node: NodeId(node), count };
    assert_eq!(h.apply(allocate(1, 1000)), Ok(Applied::ProducerIds { node: NodeId(1), first: 0, count: 1000 }));
    assert_eq!(h.apply(allocate(2, 10)), Ok(Applied::ProducerIds { node: NodeId(2), first: 1000, count: 10 }));
    assert_eq!(h.state.next_producer_id(), 1010);
}

#[test]
fn producer_id_blocks_are_refused_when_empty_too_large_exhausted_or_for_no_broker() {
    let mut h = Harness::new(2);
    let allocate = |node, count| Command::AllocateProducerIds { node: NodeId(node), count };
    let max = PRODUCER_ID_BLOCK_MAX;
    assert_eq!(h.refused(allocate(1, 0)), MetaError::ProducerIdBlock { count: 0, max });
    assert_eq!(h.refused(allocate(1, max + 1)), MetaError::ProducerIdBlock { count: max + 1, max });
    assert_eq!(h.refused(allocate(9, 1)), MetaError::UnknownBroker(NodeId(9)));
    h.apply(Command::SetBrokerState { node: NodeId(2), state: BrokerState::Removed }).unwrap();
    assert!(matches!(h.refused(allocate(2, 1)), MetaError::BrokerNotActive { state: BrokerState::Removed, .. }));
    h.state.next_producer_id = PRODUCER_ID_LIMIT - 5;
    let error = h.refused(allocate(1, 6));
    assert_eq!(error, MetaError::ProducerIdsExhausted { next: PRODUCER_ID_LIMIT - 5, count: 6 });
    h.apply(allocate(1, 5)).expect("the last ids up to the limit can be handed out");
}

#[test]
fn cluster_settings_are_replaced_as_a_whole() {
    let mut h = Harness::new(3);
    assert_eq!(h.state.default_replication_factor(), 3);
    let settings = ClusterSettings {
        auto_create_topics: true,
        default_partitions: 6,
        default_replication_factor: 5,
        ..ClusterSettings::default()
    };
    assert_eq!(h.apply(Command::SetClusterSettings(settings.clone())), Ok(Applied::ClusterSettingsSet));
    assert_eq!(h.state.settings(), &settings);
    assert_eq!(h.state.default_replication_factor(), 3, "no more than the active brokers");
    let command = h.state.create_topic("t", None, None, TopicConfig::default(), false, 0).unwrap();
    h.apply(command).unwrap();
    assert_eq!(h.state.partitions("t").unwrap().len(), 6);
}

#[test]
fn cluster_settings_are_refused_out_of_range_below_existing_partitions_or_against_a_topic() {
    let mut h = Harness::new(1);
    let error =
        h.refused(Command::SetClusterSettings(ClusterSettings { default_partitions: 0, ..ClusterSettings::default() }));
    assert!(matches!(error, MetaError::InvalidSetting { setting: "default_partitions", .. }));
    h.create("t", 5, 1);
    let low = ClusterSettings { cluster_partitions_max: 4, ..ClusterSettings::default() };
    let error = h.refused(Command::SetClusterSettings(low));
    assert!(error.to_string().contains("below the partitions that exist"), "{error}");
    let alter = Command::AlterTopicConfig {
        name: "t".into(),
        set: TopicConfig { segment_bytes: Some(2 << 20), ..TopicConfig::default() },
        reset: vec![],
    };
    h.apply(alter).unwrap();
    let mut big = ClusterSettings::default();
    big.topic_defaults.max_message_bytes = 4 << 20;
    let error = h.refused(Command::SetClusterSettings(big));
    assert!(matches!(&error, MetaError::DefaultsConflict { topic, .. } if topic == "t"), "{error}");
}

#[test]
fn producer_limits_are_fixed_once_a_partition_exists() {
    let mut h = Harness::new(1);
    let small = ClusterSettings { producer_id_expiration_ms: 2000, producers_max: 7, ..ClusterSettings::default() };
    h.apply(Command::SetClusterSettings(small.clone())).expect("no partition exists yet");
    h.create("t", 1, 1);
    for changed in [
        ClusterSettings { producer_id_expiration_ms: 3000, ..small.clone() },
        ClusterSettings { producers_max: 8, ..small.clone() },
    ] {
        let error = h.refused(Command::SetClusterSettings(changed));
        assert!(error.to_string().contains("producer limits are fixed once a partition exists"), "{error}");
    }
    let other = ClusterSettings { auto_create_topics: true, ..small.clone() };
    assert_eq!(h.apply(Command::SetClusterSettings(other)), Ok(Applied::ClusterSettingsSet));
    assert_eq!(h.state.settings().producer_config(), crate::producers::ProducerConfig::new(2000, 7));
    let error = h.refused(Command::SetClusterSettings(ClusterSettings { producers_max: 0, ..small }));
    assert!(error.to_string().contains("producers_max must be from 1"), "{error}");
}

#[test]
fn group_fate_tells_the_metadata_group_assigned_removed_and_unknown_apart() {
    let mut h = Harness::new(2);
    h.create("a", 1, 2);
    h.create("b", 1, 1);
    h.apply(Command::DeleteTopic { name: "a".into() }).unwrap();
    assert_eq!(h.state.group_fate(GroupId::METADATA), Fate::Metadata);
    assert_eq!(h.state.group_fate(GroupId(1)), Fate::Removed);
    let Fate::Assigned { topic, partition, replicas } = h.state.group_fate(GroupId(2)) else { panic!() };
    assert_eq!((topic.as_str(), partition, replicas.len()), ("b", 0, 1));
    assert_eq!(h.state.group_fate(GroupId(3)), Fate::Unknown, "not allocated yet: from the future");
    assert_eq!(h.state.group_fate(GroupId(u64::MAX)), Fate::Unknown);
}

#[test]
fn a_node_deletes_only_replicas_the_state_knows_it_no_longer_hosts() {
    let mut h = Harness::new(1);
    h.create("a", 2, 1);
    h.create("b", 1, 1);
    h.apply(Command::DeleteTopic { name: "a".into() }).unwrap();
    // Local: group 1 (deleted topic), group 3 (missing before), groups 0, 4 and 9 (metadata and the future).
    let local = [GroupId(0), GroupId(1), GroupId(4), GroupId(9)];
    let plan = h.state.local_plan(NodeId(1), local);
    assert_eq!(
        plan,
        LocalPlan { create: vec![GroupId(3)], delete: vec![GroupId(1)], unknown: vec![GroupId(4), GroupId(9)] }
    );
    assert_eq!(h.state.groups_hosted_by(NodeId(1)), vec![GroupId(3)]);
    assert_eq!(h.state.groups_hosted_by(NodeId(2)), vec![]);
}
