//! The commands of the metadata log (one per entry) and what applying one reports.

use crate::ids::{GroupId, NodeId};

use super::config::{ClusterSettings, ConfigKey, TopicConfig};
use super::state::{BrokerState, TopicId};

/// One record of the metadata log. A proposer builds it from its view of the state;
/// `MetadataState::apply` checks it again against the state at its place in the log, since
/// other commands may have been committed in between.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Registers a node, or updates the addresses and voter flag of a registered one. A
    /// new node, or a removed one registering again, becomes active.
    RegisterBroker {
        node: NodeId,
        address: String,
        kafka_address: Option<String>,
        voter: bool,
    },
    /// Drains a broker (it takes no new replicas), makes it active again, or removes it
    /// once it hosts nothing.
    SetBrokerState {
        node: NodeId,
        state: BrokerState,
    },
    CreateTopic(CreateTopic),
    DeleteTopic {
        name: String,
    },
    /// Sets the keys `set` sets and returns the keys in `reset` to the cluster defaults;
    /// the other keys keep their values.
    AlterTopicConfig {
        name: String,
        set: TopicConfig,
        reset: Vec<ConfigKey>,
    },
    /// Grows topic `name` to `count` partitions; `replicas` places the new ones, in order.
    /// Carrying the total (as Kafka's CreatePartitions does) makes two racing requests
    /// for the same growth add the partitions once.
    AddPartitions {
        name: String,
        count: u32,
        replicas: Vec<Vec<NodeId>>,
    },
    /// Starts moving a partition's replicas to `target` (first = preferred leader). The
    /// nodes in `target` start hosting the group at once; the group's own Raft
    /// configuration then changes, and `FinishMove` records the end.
    MovePartition {
        group: GroupId,
        target: Vec<NodeId>,
    },
    /// Ends a move: the group's Raft configuration committed `replicas`, which is either the
    /// target (the move is done) or the replicas it had (the move was abandoned). Nodes in
    /// neither then delete their replica of the group.
    FinishMove {
        group: GroupId,
        replicas: Vec<NodeId>,
    },
    /// Hands a block of `count` producer ids to `node`.
    AllocateProducerIds {
        node: NodeId,
        count: u32,
    },
    /// Replaces the cluster settings.
    SetClusterSettings(ClusterSettings),
}

/// A new topic with its placement, computed by the proposer (`MetadataState::create_topic`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateTopic {
    pub name: String,
    pub internal: bool,
    /// The proposer's clock when it proposed; applying never reads a clock.
    pub created_at_ms: u64,
    pub config: TopicConfig,
    /// One replica list per partition, preferred leader first.
    pub replicas: Vec<Vec<NodeId>>,
}

/// What an applied command did, for its proposer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    BrokerRegistered {
        node: NodeId,
        new: bool,
    },
    BrokerStateSet {
        node: NodeId,
        state: BrokerState,
    },
    /// The topic's id and its partitions' groups, partition 0 first.
    TopicCreated {
        id: TopicId,
        groups: Vec<GroupId>,
    },
    /// The groups that are gone with the topic.
    TopicDeleted {
        groups: Vec<GroupId>,
    },
    TopicConfigAltered,
    /// The new partitions' groups, in partition order.
    PartitionsAdded {
        groups: Vec<GroupId>,
    },
    MoveStarted {
        group: GroupId,
    },
    /// `dropped` are the nodes that no longer host the group.
    MoveFinished {
        group: GroupId,
        dropped: Vec<NodeId>,
    },
    /// The ids `first..first + count` now belong to `node`.
    ProducerIds {
        node: NodeId,
        first: u64,
        count: u32,
    },
    ClusterSettingsSet,
}
