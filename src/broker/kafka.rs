//! The broker service as the Kafka front end sees it: `KafkaBackend` over [`Broker`].
//!
//! Everything here translates; the decisions stay in `Broker` (which node leads, batch
//! checks and stamping, offsets) and in the metadata group (topics, placement). A Kafka
//! leader epoch is the partition group's Raft term.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use segments::Entry;
use tokio::task::JoinSet;

use super::groups::Coordinators;
use super::{Broker, BrokerError};
use crate::groups::{GroupError, GroupListing};
use crate::ids::{NodeId, Offset, Term};
use crate::kafka::backend::{
    Appended, BackendError, BackendFuture, ClusterMetadata, EpochEnd, FetchedRecords, GroupAnswer, GroupCall,
    KafkaBackend, ListedOffset, NewTopic, OffsetQuery, PartitionMetadata, PartitionPosition, PendingCommit,
    ProduceBatch, ProducerSession, TopicMetadata, TopicSettingOverrides, TopicSettingsInForce,
};
use crate::metadata::{MetaError, MetadataState, TopicConfig};
use crate::producers::ProducerError;
use crate::raft::kind as entry_kind;
use crate::server::registry::GroupHandle;

/// Largest inflated size of one batch read to answer ListOffsets by time.
const INFLATED_BYTES_MAX: usize = 64 << 20;

/// The Kafka backend of one node.
pub struct KafkaService {
    broker: Arc<Broker>,
    groups: Arc<Coordinators>,
}

impl KafkaService {
    pub fn new(broker: Arc<Broker>, groups: Arc<Coordinators>) -> Arc<KafkaService> {
        Arc::new(KafkaService { broker, groups })
    }

    /// The Kafka brokers: every registered node with a Kafka address, this one included
    /// even before its registration is applied.
    fn brokers(&self, state: &MetadataState) -> Vec<crate::kafka::backend::Broker> {
        let mut brokers: Vec<_> = state
            .brokers()
            .filter(|b| b.id.get() != self.broker.node_id)
            .filter_map(|b| kafka_broker(b.id.get(), b.kafka_address.as_deref()?))
            .collect();
        if let Some(own) = self.broker.kafka_address.as_deref().and_then(|a| kafka_broker(self.broker.node_id, a)) {
            brokers.push(own);
        }
        brokers.sort_by_key(|b| b.id);
        brokers
    }

    fn topic_metadata(&self, state: &MetadataState, name: &str, listed: &[NodeId]) -> TopicMetadata {
        let Some(topic) = state.topic(name) else {
            return TopicMetadata {
                name: name.into(),
                error: Some(BackendError::UnknownTopicOrPartition),
                internal: false,
                partitions: Vec::new(),
            };
        };
        let partitions = topic
            .partitions
            .iter()
            .enumerate()
            .map(|(index, p)| {
                let report = self.broker.leaders.get(p.group.get());
                // A leader that Kafka clients cannot reach is no leader to them.
                let leader = report.as_ref().and_then(|r| r.leader).map(NodeId).filter(|l| listed.contains(l));
                let in_sync = report
                    .as_ref()
                    .and_then(|r| r.offsets.as_ref())
                    .map(|o| o.in_sync.iter().map(|&n| NodeId(n)).collect())
                    .unwrap_or_else(|| leader.into_iter().collect());
                PartitionMetadata {
                    index: index as u32,
                    error: leader.is_none().then_some(BackendError::LeaderNotAvailable),
                    leader,
                    leader_epoch: Term(report.as_ref().map_or(0, |r| r.term)),
                    replicas: p.replicas.iter().map(|n| NodeId(n.get())).collect(),
                    in_sync,
                    offline: Vec::new(),
                }
            })
            .collect();
        TopicMetadata { name: name.into(), error: None, internal: topic.internal, partitions }
    }

    /// Creates the topics that do not exist, with the cluster's defaults, when the
    /// cluster creates topics on first use. Failures are left for the listing to show.
    async fn auto_create(&self, names: &[String]) {
        let state = self.broker.state();
        if !state.settings().auto_create_topics {
            return;
        }
        for name in names.iter().filter(|n| state.topic(n).is_none()) {
            match self.broker.create_topic_anywhere(name, None, None, &[]).await {
                Ok(()) | Err(BrokerError::TopicExists(_)) => {}
                Err(e) => tracing::debug!(topic = %name, error = %e, "kafka: automatic topic creation failed"),
            }
        }
        let wanted = |s: &MetadataState| names.iter().all(|n| s.topic(n).is_some());
        self.until(Duration::from_secs(2), wanted).await;
    }

    /// Waits until this node's metadata satisfies `done`, at most `timeout`.
    async fn until(&self, timeout: Duration, done: impl Fn(&MetadataState) -> bool) -> bool {
        let mut metadata = self.broker.metadata.clone();
        tokio::time::timeout(timeout, metadata.wait_for(|s| done(s))).await.is_ok_and(|r| r.is_ok())
    }

    /// This node's replica of a partition, which must lead it; checks the client's epoch.
    fn leader_replica(&self, position: &PartitionPosition) -> Result<Arc<GroupHandle>, BackendError> {
        let group = self.replica(position)?;
        if !group.leader().me {
            return Err(not_leader(&self.broker, group.id));
        }
        Ok(group)
    }

    /// This node's replica of a partition (any role); checks the client's epoch.
    fn replica(&self, position: &PartitionPosition) -> Result<Arc<GroupHandle>, BackendError> {
        let group = self.broker.replica(&position.topic, position.partition).map_err(backend_error)?;
        if let (Some(asked), Some(report)) = (position.current_leader_epoch, self.broker.leaders.get(group.id))
            && group.leader().me
        {
            if asked.get() < report.term {
                return Err(BackendError::FencedLeaderEpoch);
            }
            if asked.get() > report.term {
                return Err(BackendError::UnknownLeaderEpoch);
            }
        }
        Ok(group)
    }
}

fn kafka_broker(id: u64, address: &str) -> Option<crate::kafka::backend::Broker> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some(crate::kafka::backend::Broker { id: NodeId(id), host: host.into(), port: port.parse().ok()?, rack: None })
}

fn not_leader(broker: &Broker, group: u64) -> BackendError {
    if broker.leaders.leader(group).is_some() { BackendError::NotLeader } else { BackendError::LeaderNotAvailable }
}

/// A broker error as the Kafka front end reports it.
fn backend_error(e: BrokerError) -> BackendError {
    match e {
        BrokerError::NotLeader { leader: Some(_), .. } => BackendError::NotLeader,
        BrokerError::NotLeader { leader: None, .. } => BackendError::LeaderNotAvailable,
        BrokerError::UnknownTopic(_) | BrokerError::UnknownPartition { .. } => BackendError::UnknownTopicOrPartition,
        BrokerError::TopicExists(_) => BackendError::TopicAlreadyExists,
        BrokerError::Invalid(why) => BackendError::InvalidConfig(why),
        BrokerError::Batch(e) if e.is_too_large() => BackendError::MessageTooLarge,
        BrokerError::Batch(e) => BackendError::CorruptMessage(e.to_string()),
        BrokerError::OffsetOutOfRange { .. } => BackendError::OffsetOutOfRange,
        // Retriable: the client refreshes its metadata and tries again.
        BrokerError::Busy(_) => BackendError::LeaderNotAvailable,
        BrokerError::DiskFull { .. } => BackendError::StorageError(e.to_string()),
        BrokerError::Refused(why) => BackendError::InvalidRecord(why),
        BrokerError::OutcomeUnknown(_) => BackendError::RequestTimedOut,
        BrokerError::Producer(e @ ProducerError::OutOfOrderSequence { .. }) => {
            BackendError::OutOfOrderSequenceNumber(e.to_string())
        }
        BrokerError::Producer(e @ ProducerError::InvalidProducerEpoch { .. }) => {
            BackendError::InvalidProducerEpoch(e.to_string())
        }
        BrokerError::Internal(why) => BackendError::Internal(why),
    }
}

/// A metadata rule broken by a topic to create, as Kafka names it.
fn create_error(e: MetaError) -> BackendError {
    let why = e.to_string();
    match e {
        MetaError::TopicExists { .. } => BackendError::TopicAlreadyExists,
        MetaError::InvalidTopicName { .. } => BackendError::InvalidTopic(why),
        MetaError::PartitionCount { .. } | MetaError::ClusterPartitionsMax { .. } => {
            BackendError::InvalidPartitions(why)
        }
        MetaError::ReplicationFactor { .. } => BackendError::InvalidReplicationFactor(why),
        _ => BackendError::InvalidConfig(why),
    }
}

/// A topic's own settings in the text form the metadata group takes.
fn settings_text(o: &TopicSettingOverrides) -> Vec<(String, String)> {
    let limit = |v: Option<u64>| v.map_or_else(|| "-1".to_string(), |v| v.to_string());
    let mut out = Vec::new();
    if let Some(v) = o.retention_ms {
        out.push(("retention.ms".into(), limit(v)));
    }
    if let Some(v) = o.retention_bytes {
        out.push(("retention.bytes".into(), limit(v)));
    }
    if let Some(v) = o.max_message_bytes {
        out.push(("max.message.bytes".into(), v.to_string()));
    }
    if let Some(v) = o.segment_bytes {
        out.push(("segment.bytes".into(), v.to_string()));
    }
    out
}

fn overrides(config: &TopicConfig) -> TopicSettingOverrides {
    let limit = |v: Option<i64>| v.map(|v| u64::try_from(v).ok());
    TopicSettingOverrides {
        retention_ms: limit(config.retention_ms),
        retention_bytes: limit(config.retention_bytes),
        max_message_bytes: config.max_message_bytes,
        segment_bytes: config.segment_bytes,
    }
}

/// The records of data entries, whole batches back to back; within `max_bytes` except
/// for the first batch when `first_whole`. One entry is passed on without a copy.
fn batches(entries: &[Entry], max_bytes: usize, first_whole: bool) -> Bytes {
    let data: Vec<&Entry> = entries.iter().filter(|e| e.kind() == entry_kind::DATA).collect();
    let mut take = 0;
    let mut bytes = 0;
    for e in &data {
        let len = e.payload().len();
        if bytes + len > max_bytes && !(take == 0 && first_whole) {
            break;
        }
        take += 1;
        bytes += len;
    }
    match &data[..take] {
        [] => Bytes::new(),
        [one] => one.payload(),
        many => {
            let mut out = BytesMut::with_capacity(bytes);
            for e in many {
                out.extend_from_slice(&e.payload());
            }
            out.freeze()
        }
    }
}

impl KafkaBackend for KafkaService {
    fn metadata(&self, topics: Option<Vec<String>>, auto_create: bool) -> BackendFuture<'_, ClusterMetadata> {
        Box::pin(async move {
            if !self.broker.metadata_ready() {
                return Err(BackendError::LeaderNotAvailable);
            }
            if let (Some(names), true) = (&topics, auto_create) {
                self.auto_create(names).await;
            }
            if topics.iter().flatten().any(|name| self.broker.state().topic(name).is_none()) {
                self.broker.catch_up_metadata().await;
            }
            let state = self.broker.state();
            let brokers = self.brokers(&state);
            let listed: Vec<NodeId> = brokers.iter().map(|b| b.id).collect();
            let names: Vec<String> = topics.unwrap_or_else(|| state.topics().map(|t| t.name.clone()).collect());
            Ok(ClusterMetadata {
                cluster_id: format!("keel-{:016x}", self.broker.cluster_id),
                // Any node takes admin requests (it forwards them to the metadata leader).
                controller: NodeId(self.broker.node_id),
                topics: names.iter().map(|n| self.topic_metadata(&state, n, &listed)).collect(),
                brokers,
            })
        })
    }

    fn produce(&self, batch: ProduceBatch) -> BackendFuture<'_, PendingCommit> {
        Box::pin(async move {
            let ProduceBatch { topic, partition, records, timeout } = batch;
            // Queued to the group in call order: the place in the log is taken here.
            super::check_client_produce(&topic).map_err(backend_error)?;
            let reply = self.broker.produce(&topic, partition, records, 0).await.map_err(backend_error)?;
            let broker = self.broker.clone();
            let commit: PendingCommit = Box::pin(async move {
                let done = tokio::time::timeout(timeout, broker.produced(&topic, partition, reply)).await;
                let (base_offset, _) = done.map_err(|_| BackendError::RequestTimedOut)?.map_err(backend_error)?;
                let log_start_offset = broker.replica(&topic, partition).map_or(0, |g| g.log.read().start_offset());
                Ok(Appended { base_offset: Offset(base_offset), log_start_offset: Offset(log_start_offset) })
            });
            Ok(commit)
        })
    }

    fn fetch(
        &self,
        position: PartitionPosition,
        max_bytes: usize,
        first_batch_whole: bool,
    ) -> BackendFuture<'_, FetchedRecords> {
        Box::pin(async move {
            self.replica(&position)?;
            let (topic, partition, offset) = (&position.topic, position.partition, position.offset.get());
            let fetched =
                self.broker.fetch(topic, partition, offset, max_bytes, Duration::ZERO).await.map_err(backend_error)?;
            let high_watermark = Offset(fetched.high_watermark);
            Ok(FetchedRecords {
                records: batches(&fetched.entries, max_bytes, first_batch_whole),
                high_watermark,
                last_stable_offset: high_watermark,
                log_start_offset: Offset(fetched.log_start_offset),
            })
        })
    }

    fn wait_for_commit(&self, positions: Vec<PartitionPosition>, timeout: Duration) -> BackendFuture<'_, ()> {
        Box::pin(async move {
            let mut waits = JoinSet::new();
            for p in positions {
                let Ok(group) = self.broker.replica(&p.topic, p.partition) else { continue };
                let mut committed = group.committed.clone();
                let offset = p.offset.get();
                waits.spawn(async move {
                    let _ = committed.wait_for(|c| c.next_offset > offset).await;
                });
            }
            if !waits.is_empty() {
                let _ = tokio::time::timeout(timeout, waits.join_next()).await;
            }
            Ok(())
        })
    }

    fn list_offset(&self, position: PartitionPosition, query: OffsetQuery) -> BackendFuture<'_, ListedOffset> {
        Box::pin(async move {
            let group = self.leader_replica(&position)?;
            let epoch = self.broker.leaders.get(group.id).map(|r| Term(r.term));
            let committed = group.committed();
            let log = group.log.read();
            let listed = |offset: u64| ListedOffset { offset: offset as i64, timestamp: -1, leader_epoch: epoch };
            Ok(match query {
                OffsetQuery::Earliest => listed(log.start_offset()),
                OffsetQuery::Latest => listed(committed.next_offset),
                OffsetQuery::ByTimestamp(at) => {
                    let storage = |e: segments::Error| BackendError::StorageError(e.to_string());
                    let mut index = match log.locate_timestamp(at.max(0) as u64).map_err(storage)? {
                        Some(index) => index,
                        None => return Ok(ListedOffset::NONE),
                    };
                    // The located batch holds a record at or after `at`; walk on in case
                    // only its header's maximum said so.
                    let mut entries = Vec::new();
                    while index <= committed.index {
                        entries.clear();
                        log.read(index, 1, &mut entries).map_err(storage)?;
                        let Some(entry) = entries.first() else { break };
                        let found = if entry.kind() == entry_kind::DATA {
                            crate::batch::first_record_at_or_after(entry.payload(), at, INFLATED_BYTES_MAX)
                                .map_err(|e| BackendError::Internal(format!("a stored batch does not read: {e}")))?
                        } else {
                            None
                        };
                        if let Some((offset, timestamp)) = found {
                            return Ok(ListedOffset { offset, timestamp, leader_epoch: epoch });
                        }
                        index += 1;
                    }
                    ListedOffset::NONE
                }
            })
        })
    }

    fn epoch_end_offset(&self, position: PartitionPosition, epoch: Term) -> BackendFuture<'_, EpochEnd> {
        Box::pin(async move {
            let group = self.leader_replica(&position)?;
            let log = group.log.read();
            let (first, last) = (log.first_index(), log.last_index());
            let term_at = |i: u64| log.term(i).unwrap_or(0);
            if last < first || term_at(last) <= epoch.get() {
                return Ok(EpochEnd { epoch: Term(term_at(last)), end_offset: Offset(log.next_offset()) });
            }
            // Terms grow along the log: the last entry of a term at or below `epoch`.
            let (mut lo, mut hi) = (first - 1, last);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if term_at(mid) <= epoch.get() { lo = mid } else { hi = mid }
            }
            if lo < first {
                // Every entry is of a later term: that epoch ended where the log starts.
                return Ok(EpochEnd { epoch, end_offset: Offset(log.start_offset()) });
            }
            // The entry after it starts at the offset after the term's last record.
            let mut entries = Vec::new();
            log.read(hi, 1, &mut entries).map_err(|e| BackendError::StorageError(e.to_string()))?;
            let end = entries.first().map_or(log.next_offset(), Entry::base_offset);
            Ok(EpochEnd { epoch: Term(term_at(lo)), end_offset: Offset(end) })
        })
    }

    fn create_topic(&self, topic: NewTopic, validate_only: bool, timeout: Duration) -> BackendFuture<'_, ()> {
        Box::pin(async move {
            let settings = settings_text(&topic.settings);
            // Checked here first, so that the answer names the rule in Kafka's terms.
            let mut config = TopicConfig::default();
            for (key, value) in &settings {
                config.set_text(key, value).map_err(create_error)?;
            }
            let check = |state: &crate::metadata::MetadataState| {
                state.create_topic(&topic.name, topic.partitions, topic.replication_factor, config.clone(), false, 0)
            };
            // A node whose metadata lags (a follower just after the cluster's start, when the
            // brokers are not applied here yet) would refuse what the leader accepts: judged
            // again once it has caught up with the metadata leader.
            if check(&self.broker.state()).is_err() {
                self.broker.catch_up_metadata().await;
            }
            check(&self.broker.state()).map_err(create_error)?;
            if validate_only {
                return Ok(());
            }
            self.broker
                .create_topic_anywhere(&topic.name, topic.partitions, topic.replication_factor, &settings)
                .await
                .map_err(backend_error)?;
            // Kafka answers once the topic is in the metadata: a client's next Metadata
            // request to this node lists it.
            let name = topic.name.clone();
            self.until(timeout, |s| s.topic(&name).is_some()).await;
            Ok(())
        })
    }

    fn delete_topic(&self, name: String, timeout: Duration) -> BackendFuture<'_, ()> {
        Box::pin(async move {
            self.broker.delete_topic_anywhere(&name).await.map_err(|e| match e {
                BrokerError::Invalid(why) => BackendError::PolicyViolation(why),
                other => backend_error(other),
            })?;
            self.until(timeout, |s| s.topic(&name).is_none()).await;
            Ok(())
        })
    }

    fn topic_settings(&self, name: String) -> BackendFuture<'_, TopicSettingsInForce> {
        Box::pin(async move {
            let state = self.broker.state();
            let topic = state.topic(&name).ok_or(BackendError::UnknownTopicOrPartition)?;
            let c = state.effective_config(&name).ok_or(BackendError::UnknownTopicOrPartition)?;
            Ok(TopicSettingsInForce {
                retention_ms: c.retention_ms,
                retention_bytes: c.retention_bytes,
                max_message_bytes: c.max_message_bytes,
                segment_bytes: c.segment_bytes,
                overrides: overrides(&topic.config),
            })
        })
    }

    fn find_coordinator(&self, group_id: String) -> BackendFuture<'_, crate::kafka::backend::Broker> {
        Box::pin(async move {
            let node = self.groups.coordinator(&group_id)?;
            let state = self.broker.state();
            let address = if node == self.broker.node_id {
                self.broker.kafka_address.clone()
            } else {
                state.broker(crate::ids::NodeId(node)).and_then(|b| b.kafka_address.clone())
            };
            let not_yet = || GroupError::CoordinatorNotAvailable {
                reason: format!("node {node} coordinates the group but its Kafka listener is not known yet"),
            };
            Ok(address.and_then(|a| kafka_broker(node, &a)).ok_or_else(not_yet)?)
        })
    }

    fn group_call(&self, call: GroupCall) -> BackendFuture<'_, GroupAnswer> {
        Box::pin(async move { Ok(self.groups.call(call).await?) })
    }

    fn list_groups(&self) -> BackendFuture<'_, Vec<GroupListing>> {
        Box::pin(async move { Ok(self.groups.list().await?) })
    }

    fn init_producer_id(&self, current: ProducerSession) -> BackendFuture<'_, ProducerSession> {
        Box::pin(async move {
            match self.broker.init_producer_id((current.producer_id, current.epoch)).await {
                Ok((producer_id, epoch)) => Ok(ProducerSession { producer_id, epoch }),
                // Kafka clients retry InitProducerId on this code.
                Err(BrokerError::Busy(_)) => Err(BackendError::CoordinatorLoadInProgress),
                Err(BrokerError::Invalid(why)) => Err(BackendError::InvalidRequest(why)),
                Err(e) => Err(backend_error(e)),
            }
        })
    }
}
