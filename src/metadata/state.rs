//! The metadata state: brokers, topics and their partitions, the id counters and the
//! cluster's settings, with the queries that nodes and front ends ask of it. Commands change
//! it (`apply.rs`); nothing else does.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::ids::{GroupId, NodeId};

use super::config::{ClusterSettings, EffectiveConfig, PARTITIONS_PER_TOPIC_MAX, TopicConfig};
use super::names;

/// Brokers the registry holds, removed ones included.
pub const BROKERS_MAX: usize = 1000;

/// Where a broker is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BrokerState {
    /// Hosts replicas and receives new ones.
    Active,
    /// Keeps what it hosts while its replicas move elsewhere; receives no new replicas.
    Draining,
    /// Hosts nothing; registering again makes it active.
    Removed,
}

impl BrokerState {
    pub fn name(self) -> &'static str {
        match self {
            BrokerState::Active => "active",
            BrokerState::Draining => "draining",
            BrokerState::Removed => "removed",
        }
    }
}

impl fmt::Display for BrokerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A node of the cluster as the registry knows it. Addresses live here and nowhere else.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broker {
    pub id: NodeId,
    /// The node's one QUIC endpoint (`host:port`), for peers and clients.
    pub address: String,
    /// `host:port` that Kafka clients are told to connect to, when the node serves Kafka.
    pub kafka_address: Option<String>,
    pub state: BrokerState,
    /// Whether it votes in the metadata group (the others are brokers only). The metadata
    /// group's Raft configuration decides; this records it for the registry's readers.
    pub voter: bool,
}

/// A topic's stable id: 16 bytes, as Kafka's Metadata v10+ and Fetch v13+ name topics.
/// A topic deleted and created again gets another id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicId(pub [u8; 16]);

impl fmt::Display for TopicId {
    /// The form Kafka's tools print: URL-safe base64 without padding.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use base64::Engine;
        f.write_str(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.0))
    }
}

/// One partition: its Raft group and the nodes that hold its replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    pub group: GroupId,
    /// The replicas; the first is the preferred leader.
    pub replicas: Vec<NodeId>,
    /// While the replicas move: the list they move to. The group's own Raft configuration
    /// changes (learners, then joint consensus), and a `FinishMove` command records the end.
    pub target: Option<Vec<NodeId>>,
}

impl Partition {
    pub fn preferred_leader(&self) -> NodeId {
        self.replicas[0]
    }

    /// Every node that must hold a replica now: the replicas, then the nodes a move adds.
    pub fn hosts(&self) -> Vec<NodeId> {
        let mut hosts = self.replicas.clone();
        for node in self.target.iter().flatten() {
            if !hosts.contains(node) {
                hosts.push(*node);
            }
        }
        hosts
    }

    pub fn is_hosted_by(&self, node: NodeId) -> bool {
        self.replicas.contains(&node) || self.target.as_ref().is_some_and(|t| t.contains(&node))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topic {
    pub name: String,
    pub id: TopicId,
    /// Time of creation in ms since the Unix epoch, as the proposer's clock read it.
    pub created_at_ms: u64,
    /// An internal topic (`__consumer_offsets`) is hidden from listings and cannot be deleted.
    pub internal: bool,
    pub config: TopicConfig,
    /// Partition `p` is `partitions[p]`.
    pub partitions: Vec<Partition>,
}

/// What the metadata says of a Raft group, so that a node knows whether it may delete a
/// replica directory it finds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Group 0, the metadata group itself: never deleted on the metadata's word.
    Metadata,
    /// A partition of a topic; `replicas` are every node that must host it (the replicas,
    /// then those a move in progress adds).
    Assigned { topic: String, partition: u32, replicas: Vec<NodeId> },
    /// Allocated once, and its topic (or the partition's place on a node) is gone: its data
    /// can be deleted.
    Removed,
    /// Not allocated yet as far as this state knows: the state lags the cluster, so the
    /// replica must be kept until the state catches up.
    Unknown,
}

/// What a node must change on its disk to match the metadata (`MetadataState::local_plan`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalPlan {
    /// Groups the node must host and has no replica of yet.
    pub create: Vec<GroupId>,
    /// Local replicas of deleted topics, or of partitions that no longer include this node.
    pub delete: Vec<GroupId>,
    /// Local replicas of groups this state does not know yet: keep them.
    pub unknown: Vec<GroupId>,
}

/// The whole metadata. Every node applies the same committed commands in the same order
/// and so holds the same state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetadataState {
    pub(crate) brokers: BTreeMap<NodeId, Broker>,
    pub(crate) topics: BTreeMap<String, Topic>,
    /// Where each partition's group is: derived from `topics`, kept beside it for lookups.
    pub(crate) groups: BTreeMap<GroupId, (String, u32)>,
    /// Groups are allocated in order and never reused.
    pub(crate) next_group_id: GroupId,
    /// Producer ids are handed out in blocks, in order, and never reused.
    pub(crate) next_producer_id: u64,
    pub(crate) settings: ClusterSettings,
}

impl Default for MetadataState {
    fn default() -> MetadataState {
        MetadataState::new()
    }
}

impl MetadataState {
    /// The state before the first command: no brokers, no topics, default settings.
    pub fn new() -> MetadataState {
        MetadataState {
            brokers: BTreeMap::new(),
            topics: BTreeMap::new(),
            groups: BTreeMap::new(),
            next_group_id: GroupId(GroupId::METADATA.get() + 1),
            next_producer_id: 0,
            settings: ClusterSettings::default(),
        }
    }

    pub fn settings(&self) -> &ClusterSettings {
        &self.settings
    }

    pub fn next_group_id(&self) -> GroupId {
        self.next_group_id
    }

    pub fn next_producer_id(&self) -> u64 {
        self.next_producer_id
    }

    pub fn broker(&self, node: NodeId) -> Option<&Broker> {
        self.brokers.get(&node)
    }

    /// Every registered broker, removed ones included, by id.
    pub fn brokers(&self) -> impl Iterator<Item = &Broker> {
        self.brokers.values()
    }

    /// The brokers that receive new replicas, by id.
    pub fn active_brokers(&self) -> Vec<NodeId> {
        self.brokers.values().filter(|b| b.state == BrokerState::Active).map(|b| b.id).collect()
    }

    pub fn topic(&self, name: &str) -> Option<&Topic> {
        self.topics.get(name)
    }

    /// Every topic, internal ones included, by name.
    pub fn topics(&self) -> impl Iterator<Item = &Topic> {
        self.topics.values()
    }

    pub fn partitions(&self, topic: &str) -> Option<&[Partition]> {
        self.topics.get(topic).map(|t| t.partitions.as_slice())
    }

    /// The values topic `name` runs with.
    pub fn effective_config(&self, name: &str) -> Option<EffectiveConfig> {
        self.topics.get(name).map(|t| t.config.effective(&self.settings.topic_defaults))
    }

    /// The topic, partition number and partition of a group.
    pub fn group(&self, group: GroupId) -> Option<(&Topic, u32, &Partition)> {
        let (name, p) = self.groups.get(&group)?;
        let topic = &self.topics[name];
        Some((topic, *p, &topic.partitions[*p as usize]))
    }

    /// The replicas of a group, preferred leader first.
    pub fn replicas(&self, group: GroupId) -> Option<&[NodeId]> {
        self.group(group).map(|(_, _, p)| p.replicas.as_slice())
    }

    /// Partitions of all topics together.
    pub fn partition_count(&self) -> u64 {
        self.groups.len() as u64
    }

    /// The groups `node` must host, in order: every partition it is a replica of, or that a
    /// move in progress adds it to.
    pub fn groups_hosted_by(&self, node: NodeId) -> Vec<GroupId> {
        self.partitions_iter().filter(|(_, _, p)| p.is_hosted_by(node)).map(|(_, _, p)| p.group).collect()
    }

    /// For every registered broker, the replicas it hosts (moves in progress count on both
    /// sides) and the partitions whose preferred leader it is.
    pub fn load_per_node(&self) -> BTreeMap<NodeId, NodeLoad> {
        let mut load: BTreeMap<NodeId, NodeLoad> = self.brokers.keys().map(|n| (*n, NodeLoad::default())).collect();
        for (_, _, p) in self.partitions_iter() {
            for node in p.hosts() {
                load.entry(node).or_default().replicas += 1;
            }
            load.entry(p.preferred_leader()).or_default().leaders += 1;
        }
        load
    }

    /// What the metadata says of `group` (see `Fate`).
    pub fn group_fate(&self, group: GroupId) -> Fate {
        if group == GroupId::METADATA {
            return Fate::Metadata;
        }
        if let Some((topic, partition, p)) = self.group(group) {
            return Fate::Assigned { topic: topic.name.clone(), partition, replicas: p.hosts() };
        }
        if group < self.next_group_id { Fate::Removed } else { Fate::Unknown }
    }

    /// What `node` must create and delete so that its replicas (`local`, the group
    /// directories it has) match this state. A replica is deleted only when the state
    /// knows its group and no longer places it on `node`.
    pub fn local_plan(&self, node: NodeId, local: impl IntoIterator<Item = GroupId>) -> LocalPlan {
        let local: BTreeSet<GroupId> = local.into_iter().collect();
        let mut plan = LocalPlan::default();
        for group in self.groups_hosted_by(node) {
            if !local.contains(&group) {
                plan.create.push(group);
            }
        }
        for group in local {
            match self.group_fate(group) {
                Fate::Metadata => {}
                Fate::Assigned { replicas, .. } if replicas.contains(&node) => {}
                Fate::Assigned { .. } | Fate::Removed => plan.delete.push(group),
                Fate::Unknown => plan.unknown.push(group),
            }
        }
        plan
    }

    pub(crate) fn partitions_iter(&self) -> impl Iterator<Item = (&Topic, u32, &Partition)> {
        self.topics.values().flat_map(|t| t.partitions.iter().enumerate().map(move |(i, p)| (t, i as u32, p)))
    }

    /// Checks every invariant of the state; `Err` names the first one broken. Commands
    /// keep them all (asserted after each in debug builds); a restored snapshot is refused
    /// if it breaks one.
    pub fn check(&self) -> Result<(), &'static str> {
        let fail = |ok: bool, what| if ok { Ok(()) } else { Err(what) };
        fail(self.next_group_id > GroupId::METADATA, "next group id is above the metadata group")?;
        fail(self.settings.check().is_ok(), "cluster settings out of range")?;
        fail(self.brokers.len() <= BROKERS_MAX, "more brokers than BROKERS_MAX")?;
        let mut addresses = BTreeSet::new();
        for (id, b) in &self.brokers {
            fail(*id == b.id && id.get() != 0, "broker ids")?;
            fail(names::check_address(&b.address).is_ok(), "broker address")?;
            fail(b.kafka_address.as_deref().is_none_or(|a| names::check_address(a).is_ok()), "kafka address")?;
            fail(addresses.insert(b.address.as_str()), "two brokers share an address")?;
        }
        let mut groups = BTreeMap::new();
        for (name, t) in &self.topics {
            fail(*name == t.name && names::check_topic_name(name, t.internal).is_ok(), "topic name")?;
            fail(t.config.check(t.internal, &self.settings.topic_defaults).is_ok(), "topic config")?;
            let count = t.partitions.len();
            fail((1..=PARTITIONS_PER_TOPIC_MAX as usize).contains(&count), "partitions per topic")?;
            for (i, p) in t.partitions.iter().enumerate() {
                fail(p.group > GroupId::METADATA && p.group < self.next_group_id, "group id allocated")?;
                fail(groups.insert(p.group, (name.clone(), i as u32)).is_none(), "a group id used twice")?;
                for list in std::iter::once(&p.replicas).chain(&p.target) {
                    fail(!list.is_empty(), "a partition without replicas")?;
                    fail(list.iter().collect::<BTreeSet<_>>().len() == list.len(), "a replica listed twice")?;
                    for node in list {
                        let broker = self.brokers.get(node).ok_or("a replica on an unregistered node")?;
                        fail(broker.state != BrokerState::Removed, "a replica on a removed broker")?;
                    }
                }
                fail(p.target.as_ref() != Some(&p.replicas), "a move to the replicas it has")?;
            }
        }
        fail(groups == self.groups, "the group index disagrees with the topics")?;
        fail(groups.len() <= self.settings.cluster_partitions_max as usize, "more partitions than the cap")?;
        Ok(())
    }
}

/// How much a node hosts: replicas, and partitions whose preferred leader it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct NodeLoad {
    pub replicas: u32,
    pub leaders: u32,
}
