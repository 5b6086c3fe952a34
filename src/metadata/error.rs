//! Why a metadata command is refused. Each message names the rule it broke, so that the
//! proposer can pass it on to the user as it is.

use crate::ids::{GroupId, NodeId};

use super::config::ConfigKey;
use super::state::BrokerState;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    #[error("invalid topic name {name:?}: {rule}")]
    InvalidTopicName { name: String, rule: &'static str },
    #[error("topic {name:?} already exists")]
    TopicExists { name: String },
    #[error("unknown topic {name:?}")]
    UnknownTopic { name: String },
    #[error("group {0} is not a partition of any topic")]
    UnknownGroup(GroupId),
    #[error("a topic has 1 to 10000 partitions, not {count}")]
    PartitionCount { count: u64 },
    #[error(
        "topic {topic:?} has {current} partitions: asking for {requested} in all adds none \
         (partitions are never removed)"
    )]
    PartitionsNotAdded { topic: String, current: u32, requested: u32 },
    #[error("adding partitions {current}..{requested} to {topic:?} needs {needed} replica lists, not {given}")]
    PlacementCount { topic: String, current: u32, requested: u32, needed: u32, given: usize },
    #[error("{topic:?} is internal: its partition count is fixed, because group coordinators are found by it")]
    InternalPartitionsFixed { topic: String },
    #[error(
        "the cluster holds at most {max} partitions (cluster_partitions_max): {existing} exist and {adding} more \
         were asked for; delete topics or raise the cap"
    )]
    ClusterPartitionsMax { max: u32, existing: u64, adding: u64 },
    #[error("replication factor {factor} is outside 1..={active} (the active brokers)")]
    ReplicationFactor { factor: usize, active: usize },
    #[error(
        "the partitions of a topic share one replication factor: partition {partition} has {found} replicas, \
         not {expected}"
    )]
    UnevenReplication { partition: u32, found: usize, expected: usize },
    #[error("node {node} is listed twice in the replicas of partition {partition}")]
    DuplicateReplica { partition: u32, node: NodeId },
    #[error("node {0} is not a registered broker")]
    UnknownBroker(NodeId),
    #[error("node {node} is {state}: {rule}")]
    BrokerNotActive { node: NodeId, state: BrokerState, rule: &'static str },
    #[error("node id 0 is not allowed (ids start at 1)")]
    ZeroNodeId,
    #[error("invalid address {address:?}: {rule}")]
    InvalidAddress { address: String, rule: &'static str },
    #[error("address {address:?} is already registered by node {node}; every node has its own")]
    AddressInUse { address: String, node: NodeId },
    #[error("the cluster registers at most {max} brokers; remove one first")]
    TooManyBrokers { max: usize },
    #[error("node {node} cannot go from {from} to {to}{hint}")]
    BrokerStateChange { node: NodeId, from: BrokerState, to: BrokerState, hint: &'static str },
    #[error("node {node} still hosts {groups} partition replicas; move them off (drain it) before removing it")]
    BrokerNotEmpty { node: NodeId, groups: usize },
    #[error(
        "cannot drain node {node}: partition {partition} of {topic:?} has {factor} replicas and only {others} \
         other brokers are active; add a broker first"
    )]
    CannotDrain { node: NodeId, topic: String, partition: u32, factor: usize, others: usize },
    #[error("group {group} is already moving to {target:?}; finish that move first")]
    MoveInProgress { group: GroupId, target: Vec<NodeId> },
    #[error("group {group} already has the replicas {replicas:?}")]
    MoveToSame { group: GroupId, replicas: Vec<NodeId> },
    #[error("group {group} has no replica move in progress")]
    NoMove { group: GroupId },
    #[error("group {group} is moving from {from:?} to {to:?}; it cannot end with {given:?}")]
    MoveMismatch { group: GroupId, from: Vec<NodeId>, to: Vec<NodeId>, given: Vec<NodeId> },
    #[error("topic {name:?} is internal and cannot be deleted")]
    InternalTopic { name: String },
    #[error(
        "unknown config key {key:?}; keel knows retention.bytes, retention.ms, max.message.bytes, segment.bytes \
         and cleanup.policy"
    )]
    UnknownConfigKey { key: String },
    #[error("invalid value {value:?} for {key}: {rule}")]
    InvalidConfig { key: ConfigKey, value: String, rule: &'static str },
    #[error("{key} is both set and reset in one change; say one or the other")]
    ConfigSetAndReset { key: ConfigKey },
    #[error("invalid cluster setting {setting} = {value}: {rule}")]
    InvalidSetting { setting: &'static str, value: u64, rule: &'static str },
    #[error("invalid cluster setting: {0}")]
    ProducerSetting(#[from] crate::producers::ConfigError),
    #[error("a block of producer ids holds 1 to {max} ids, not {count}")]
    ProducerIdBlock { count: u32, max: u32 },
    #[error("producer ids are exhausted: {next} + {count} passes the largest id Kafka allows")]
    ProducerIdsExhausted { next: u64, count: u32 },
    #[error("group ids are exhausted")]
    GroupIdsExhausted,
    #[error("these topic defaults do not suit topic {topic:?}: {error}")]
    DefaultsConflict { topic: String, error: Box<MetaError> },
}
