//! Applying a committed command to the state. Every handler checks the whole command
//! first and changes the state only once nothing can refuse it, so that a refused command
//! changes nothing and every node, refusing the same commands, stays equal.

use crate::ids::{GroupId, Index, NodeId};

use super::command::{Applied, Command, CreateTopic};
use super::config::{ClusterSettings, ConfigKey, PARTITIONS_PER_TOPIC_MAX, TopicConfig};
use super::error::MetaError;
use super::names;
use super::state::{BROKERS_MAX, Broker, BrokerState, MetadataState, Partition, Topic, TopicId};

/// Ids one `AllocateProducerIds` may hand out.
pub const PRODUCER_ID_BLOCK_MAX: u32 = 1 << 20;
/// Kafka's producer ids are non-negative 64-bit signed integers.
pub const PRODUCER_ID_LIMIT: u64 = i64::MAX as u64;

impl MetadataState {
    /// Applies the command committed at `index` (the same on every node). A refused command
    /// changes nothing; its error tells the proposer which rule it broke.
    pub fn apply(&mut self, index: Index, command: &Command) -> Result<Applied, MetaError> {
        let applied = match command {
            Command::RegisterBroker { node, address, kafka_address, voter } => {
                self.register_broker(*node, address, kafka_address.as_deref(), *voter)
            }
            Command::SetBrokerState { node, state } => self.set_broker_state(*node, *state),
            Command::CreateTopic(create) => self.apply_create_topic(index, create),
            Command::DeleteTopic { name } => self.delete_topic(name),
            Command::AlterTopicConfig { name, set, reset } => self.alter_topic_config(name, set, reset),
            Command::AddPartitions { name, count, replicas } => self.apply_add_partitions(name, *count, replicas),
            Command::MovePartition { group, target } => self.move_partition(*group, target),
            Command::FinishMove { group, replicas } => self.finish_move(*group, replicas),
            Command::AllocateProducerIds { node, count } => self.allocate_producer_ids(*node, *count),
            Command::SetClusterSettings(settings) => self.set_cluster_settings(settings),
        }?;
        debug_assert_eq!(self.check(), Ok(()), "the command at index {index} broke an invariant: {command:?}");
        Ok(applied)
    }

    fn register_broker(
        &mut self,
        node: NodeId,
        address: &str,
        kafka_address: Option<&str>,
        voter: bool,
    ) -> Result<Applied, MetaError> {
        if node.get() == 0 {
            return Err(MetaError::ZeroNodeId);
        }
        names::check_address(address)?;
        if let Some(kafka) = kafka_address {
            names::check_address(kafka)?;
        }
        for other in self.brokers.values().filter(|b| b.id != node) {
            let same = other.address == address
                || (kafka_address.is_some() && other.kafka_address.as_deref() == kafka_address);
            if same {
                let address = if other.address == address { address } else { kafka_address.unwrap_or_default() };
                return Err(MetaError::AddressInUse { address: address.to_string(), node: other.id });
            }
        }
        let known = self.brokers.get(&node).map(|b| b.state);
        if known.is_none() && self.brokers.len() >= BROKERS_MAX {
            return Err(MetaError::TooManyBrokers { max: BROKERS_MAX });
        }
        let state = match known {
            Some(BrokerState::Removed) | None => BrokerState::Active,
            Some(state) => state,
        };
        let broker = Broker {
            id: node,
            address: address.to_string(),
            kafka_address: kafka_address.map(str::to_string),
            state,
            voter,
        };
        self.brokers.insert(node, broker);
        Ok(Applied::BrokerRegistered { node, new: known.is_none() })
    }

    fn set_broker_state(&mut self, node: NodeId, to: BrokerState) -> Result<Applied, MetaError> {
        let from = self.brokers.get(&node).ok_or(MetaError::UnknownBroker(node))?.state;
        let refuse = |hint| Err(MetaError::BrokerStateChange { node, from, to, hint });
        match (from, to) {
            _ if from == to => {}
            (BrokerState::Removed, _) => return refuse("; register it again to bring it back"),
            (BrokerState::Active, BrokerState::Draining) => self.check_drain(node)?,
            (BrokerState::Draining, BrokerState::Active) => {}
            (_, BrokerState::Removed) => {
                let groups = self.groups_hosted_by(node).len();
                if groups > 0 {
                    return Err(MetaError::BrokerNotEmpty { node, groups });
                }
            }
            (_, BrokerState::Active | BrokerState::Draining) => return refuse(""),
        }
        self.brokers.get_mut(&node).expect("looked up above").state = to;
        Ok(Applied::BrokerStateSet { node, state: to })
    }

    /// A node may drain only if every partition it hosts can keep its replica count on the
    /// other active brokers; otherwise the drain could never finish.
    fn check_drain(&self, node: NodeId) -> Result<(), MetaError> {
        let others = self.active_brokers().iter().filter(|n| **n != node).count();
        for (topic, partition, p) in self.partitions_iter().filter(|(_, _, p)| p.is_hosted_by(node)) {
            let factor = p.target.as_ref().unwrap_or(&p.replicas).len();
            if factor > others {
                return Err(MetaError::CannotDrain { node, topic: topic.name.clone(), partition, factor, others });
            }
        }
        Ok(())
    }

    fn apply_create_topic(&mut self, index: Index, create: &CreateTopic) -> Result<Applied, MetaError> {
        self.check_create(create)?;
        let groups = self.allocate_groups(create.replicas.len())?;
        let partitions = groups
            .iter()
            .zip(&create.replicas)
            .map(|(group, replicas)| Partition { group: *group, replicas: replicas.clone(), target: None })
            .collect();
        let id = topic_id(index, create);
        let topic = Topic {
            name: create.name.clone(),
            id,
            created_at_ms: create.created_at_ms,
            internal: create.internal,
            config: create.config.clone(),
            partitions,
        };
        self.topics.insert(create.name.clone(), topic);
        self.index_groups(&create.name, 0, &groups);
        Ok(Applied::TopicCreated { id, groups })
    }

    /// Every rule a new topic must meet; the proposer runs the same checks before proposing.
    pub(crate) fn check_create(&self, create: &CreateTopic) -> Result<(), MetaError> {
        self.check_new_topic(&create.name, create.internal, create.replicas.len() as u64)?;
        self.check_cap(create.replicas.len())?;
        self.check_placement(&create.replicas, 0, create.replicas[0].len())?;
        create.config.check(create.internal, &self.settings.topic_defaults)?;
        self.group_range(create.replicas.len())?;
        Ok(())
    }

    /// The rules a new topic's name and size meet, before its placement is known.
    pub(crate) fn check_new_topic(&self, name: &str, internal: bool, count: u64) -> Result<(), MetaError> {
        names::check_topic_name(name, internal)?;
        if self.topics.contains_key(name) {
            return Err(MetaError::TopicExists { name: name.to_string() });
        }
        if count == 0 || count > u64::from(PARTITIONS_PER_TOPIC_MAX) {
            return Err(MetaError::PartitionCount { count });
        }
        Ok(())
    }

    fn delete_topic(&mut self, name: &str) -> Result<Applied, MetaError> {
        let topic = self.topics.get(name).ok_or_else(|| MetaError::UnknownTopic { name: name.to_string() })?;
        if topic.internal {
            return Err(MetaError::InternalTopic { name: name.to_string() });
        }
        let topic = self.topics.remove(name).expect("looked up above");
        let groups: Vec<GroupId> = topic.partitions.iter().map(|p| p.group).collect();
        for group in &groups {
            self.groups.remove(group);
        }
        Ok(Applied::TopicDeleted { groups })
    }

    fn alter_topic_config(&mut self, name: &str, set: &TopicConfig, reset: &[ConfigKey]) -> Result<Applied, MetaError> {
        let topic = self.topics.get(name).ok_or_else(|| MetaError::UnknownTopic { name: name.to_string() })?;
        let set_keys: Vec<ConfigKey> = set.raw().into_iter().map(|(key, _)| key).collect();
        if let Some(key) = reset.iter().find(|k| set_keys.contains(k)) {
            return Err(MetaError::ConfigSetAndReset { key: *key });
        }
        let mut config = topic.config.clone();
        for key in reset {
            config.reset(*key);
        }
        let config = config.overlaid(set);
        config.check(topic.internal, &self.settings.topic_defaults)?;
        self.topics.get_mut(name).expect("looked up above").config = config;
        Ok(Applied::TopicConfigAltered)
    }

    fn apply_add_partitions(&mut self, name: &str, count: u32, replicas: &[Vec<NodeId>]) -> Result<Applied, MetaError> {
        let topic = self.growable(name, count)?;
        let current = topic.partitions.len() as u32;
        let needed = count - current;
        if replicas.len() != needed as usize {
            let topic = name.to_string();
            return Err(MetaError::PlacementCount { topic, current, requested: count, needed, given: replicas.len() });
        }
        self.check_cap(replicas.len())?;
        self.check_placement(replicas, current, topic.partitions[0].replicas.len())?;
        let groups = self.allocate_groups(replicas.len())?;
        let topic = self.topics.get_mut(name).expect("looked up above");
        for (group, list) in groups.iter().zip(replicas) {
            topic.partitions.push(Partition { group: *group, replicas: list.clone(), target: None });
        }
        self.index_groups(name, current, &groups);
        Ok(Applied::PartitionsAdded { groups })
    }

    /// The topic `name`, if it may grow to `count` partitions (placement aside).
    pub(crate) fn growable(&self, name: &str, count: u32) -> Result<&Topic, MetaError> {
        let topic = self.topics.get(name).ok_or_else(|| MetaError::UnknownTopic { name: name.to_string() })?;
        if topic.internal {
            return Err(MetaError::InternalPartitionsFixed { topic: name.to_string() });
        }
        let current = topic.partitions.len() as u32;
        if count <= current {
            return Err(MetaError::PartitionsNotAdded { topic: name.to_string(), current, requested: count });
        }
        if count > PARTITIONS_PER_TOPIC_MAX {
            return Err(MetaError::PartitionCount { count: count.into() });
        }
        Ok(topic)
    }

    fn move_partition(&mut self, group: GroupId, target: &[NodeId]) -> Result<Applied, MetaError> {
        let (_, partition, p) = self.group(group).ok_or(MetaError::UnknownGroup(group))?;
        if let Some(moving) = &p.target {
            return Err(MetaError::MoveInProgress { group, target: moving.clone() });
        }
        if target.is_empty() {
            return Err(MetaError::ReplicationFactor { factor: 0, active: self.active_brokers().len() });
        }
        self.check_replica_list(partition, target, &p.replicas)?;
        if target == p.replicas.as_slice() {
            return Err(MetaError::MoveToSame { group, replicas: target.to_vec() });
        }
        self.partition_mut(group).target = Some(target.to_vec());
        Ok(Applied::MoveStarted { group })
    }

    fn finish_move(&mut self, group: GroupId, replicas: &[NodeId]) -> Result<Applied, MetaError> {
        let (_, _, p) = self.group(group).ok_or(MetaError::UnknownGroup(group))?;
        let Some(target) = p.target.clone() else {
            return Err(MetaError::NoMove { group });
        };
        let dropped: Vec<NodeId> = if replicas == target.as_slice() {
            p.replicas.iter().filter(|n| !target.contains(n)).copied().collect()
        } else if replicas == p.replicas.as_slice() {
            target.iter().filter(|n| !p.replicas.contains(n)).copied().collect()
        } else {
            let (from, to, given) = (p.replicas.clone(), target, replicas.to_vec());
            return Err(MetaError::MoveMismatch { group, from, to, given });
        };
        let p = self.partition_mut(group);
        p.replicas = replicas.to_vec();
        p.target = None;
        Ok(Applied::MoveFinished { group, dropped })
    }

    fn allocate_producer_ids(&mut self, node: NodeId, count: u32) -> Result<Applied, MetaError> {
        let broker = self.brokers.get(&node).ok_or(MetaError::UnknownBroker(node))?;
        if broker.state == BrokerState::Removed {
            let rule = "a removed broker gets no producer ids";
            return Err(MetaError::BrokerNotActive { node, state: broker.state, rule });
        }
        if count == 0 || count > PRODUCER_ID_BLOCK_MAX {
            return Err(MetaError::ProducerIdBlock { count, max: PRODUCER_ID_BLOCK_MAX });
        }
        let first = self.next_producer_id;
        match first.checked_add(count.into()) {
            Some(next) if next <= PRODUCER_ID_LIMIT => self.next_producer_id = next,
            _ => return Err(MetaError::ProducerIdsExhausted { next: first, count }),
        }
        Ok(Applied::ProducerIds { node, first, count })
    }

    fn set_cluster_settings(&mut self, settings: &ClusterSettings) -> Result<Applied, MetaError> {
        settings.check()?;
        let existing = self.partition_count();
        if u64::from(settings.cluster_partitions_max) < existing {
            return Err(MetaError::InvalidSetting {
                setting: "cluster_partitions_max",
                value: settings.cluster_partitions_max.into(),
                rule: "the cap is below the partitions that exist; delete topics first",
            });
        }
        // Each partition replica opens its producer table with the limits of the metadata it
        // has applied (`server/controller.rs`); were they to change while partitions exist,
        // replicas opened before and after would forget different producers.
        if existing > 0 {
            let fixed = "producer limits are fixed once a partition exists: its replicas run with the first ones";
            if settings.producer_id_expiration_ms != self.settings.producer_id_expiration_ms {
                let value = settings.producer_id_expiration_ms;
                return Err(MetaError::InvalidSetting { setting: "producer_id_expiration_ms", value, rule: fixed });
            }
            if settings.producers_max != self.settings.producers_max {
                let value = settings.producers_max.into();
                return Err(MetaError::InvalidSetting { setting: "producers_max", value, rule: fixed });
            }
        }
        for topic in self.topics.values() {
            topic
                .config
                .check(topic.internal, &settings.topic_defaults)
                .map_err(|error| MetaError::DefaultsConflict { topic: topic.name.clone(), error: Box::new(error) })?;
        }
        self.settings = settings.clone();
        Ok(Applied::ClusterSettingsSet)
    }

    /// The cluster-wide cap on partitions, for `adding` more.
    fn check_cap(&self, adding: usize) -> Result<(), MetaError> {
        let (existing, adding) = (self.partition_count(), adding as u64);
        let max = self.settings.cluster_partitions_max;
        if existing + adding > u64::from(max) {
            return Err(MetaError::ClusterPartitionsMax { max, existing, adding });
        }
        Ok(())
    }

    /// New partitions `first..`: each with `factor` replicas, within the active brokers.
    fn check_placement(&self, lists: &[Vec<NodeId>], first: u32, factor: usize) -> Result<(), MetaError> {
        let active = self.active_brokers().len();
        if factor == 0 || factor > active {
            return Err(MetaError::ReplicationFactor { factor, active });
        }
        for (i, list) in lists.iter().enumerate() {
            let partition = first + i as u32;
            if list.len() != factor {
                return Err(MetaError::UnevenReplication { partition, found: list.len(), expected: factor });
            }
            self.check_replica_list(partition, list, &[])?;
        }
        Ok(())
    }

    /// A replica list names each node once, only registered brokers, and only active ones
    /// except for those already in `current` (a draining node may keep its replica).
    pub(crate) fn check_replica_list(
        &self,
        partition: u32,
        list: &[NodeId],
        current: &[NodeId],
    ) -> Result<(), MetaError> {
        for (i, node) in list.iter().enumerate() {
            if list[..i].contains(node) {
                return Err(MetaError::DuplicateReplica { partition, node: *node });
            }
            let broker = self.brokers.get(node).ok_or(MetaError::UnknownBroker(*node))?;
            if broker.state != BrokerState::Active && !current.contains(node) {
                let rule = "new replicas go to active brokers only";
                return Err(MetaError::BrokerNotActive { node: *node, state: broker.state, rule });
            }
        }
        Ok(())
    }

    /// The next `n` group ids, if the counter can give them.
    fn group_range(&self, n: usize) -> Result<GroupId, MetaError> {
        let first = self.next_group_id;
        first.get().checked_add(n as u64).map(|_| first).ok_or(MetaError::GroupIdsExhausted)
    }

    fn allocate_groups(&mut self, n: usize) -> Result<Vec<GroupId>, MetaError> {
        let first = self.group_range(n)?.get();
        self.next_group_id = GroupId(first + n as u64);
        Ok((first..first + n as u64).map(GroupId).collect())
    }

    /// Records that `groups` are partitions `first..` of topic `name`.
    fn index_groups(&mut self, name: &str, first: u32, groups: &[GroupId]) {
        for (i, group) in groups.iter().enumerate() {
            self.groups.insert(*group, (name.to_string(), first + i as u32));
        }
    }

    fn partition_mut(&mut self, group: GroupId) -> &mut Partition {
        let (name, p) = &self.groups[&group];
        &mut self.topics.get_mut(name).expect("the group index names a topic").partitions[*p as usize]
    }
}

/// A topic's id, from the entry that created it: two topics of one name created at two
/// indices get two ids, and every node derives the same one. It is a version-8 UUID
/// (RFC 9562, vendor-specific), which is never Kafka's reserved zero or metadata id.
fn topic_id(index: Index, create: &CreateTopic) -> TopicId {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"keel topic id\0");
    ctx.update(&index.get().to_le_bytes());
    ctx.update(&create.created_at_ms.to_le_bytes());
    ctx.update(create.name.as_bytes());
    let mut id = [0u8; 16];
    id.copy_from_slice(&ctx.finish().as_ref()[..16]);
    id[6] = (id[6] & 0x0f) | 0x80;
    id[8] = (id[8] & 0x3f) | 0x80;
    TopicId(id)
}
