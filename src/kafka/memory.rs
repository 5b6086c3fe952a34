//! An in-memory `KafkaBackend` for tests and development: one node, leader of every
//! partition, every append committed at once. It does what the contract asks of the real
//! broker service (checks and stamps batches, offsets, epochs, topic rules) in the simplest
//! way, so the front end can be tested, and real Kafka clients pointed at it
//! (`examples/kafka_memory.rs`), before the broker service exists.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::records::{Compression, RecordBatchDecoder};

use super::backend::*;
use crate::ids::{NodeId, Offset, Term};

/// The epoch every partition of the memory backend has (it never changes leader).
pub const EPOCH: Term = Term(1);

/// Byte positions in a RecordBatch v2 header (see the research notes, §1.4).
const BATCH_LENGTH_AT: usize = 8;
const LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const LAST_OFFSET_DELTA_AT: usize = 23;
const MAX_TIMESTAMP_AT: usize = 35;
const RECORDS_COUNT_AT: usize = 57;
const HEADER_BYTES: usize = 61;

/// The memory backend's settings.
#[derive(Debug, Clone)]
pub struct MemoryConfig {
    /// This node, as clients reach its Kafka listener.
    pub broker: Broker,
    /// Partitions of a topic created by a client's metadata request; `None`: no automatic
    /// creation (unknown topics are `UnknownTopicOrPartition`).
    pub auto_create_partitions: Option<u32>,
    /// Partitions of a topic created without a count.
    pub default_partitions: u32,
    /// Largest batch a topic accepts unless it sets its own `max.message.bytes`.
    pub max_message_bytes: u32,
    /// All batches together; appends are refused past it (`StorageError`).
    pub bytes_max: usize,
}

impl MemoryConfig {
    pub fn new(broker: Broker) -> MemoryConfig {
        MemoryConfig {
            broker,
            auto_create_partitions: Some(1),
            default_partitions: 1,
            max_message_bytes: 4 << 20,
            bytes_max: 1 << 30,
        }
    }
}

pub struct MemoryBackend {
    config: MemoryConfig,
    state: Mutex<State>,
    /// Bumped after every append, for long polls.
    appended: tokio::sync::watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    topics: BTreeMap<String, Topic>,
    bytes: usize,
    /// The producer id InitProducerId hands out next.
    next_producer_id: i64,
}

struct Topic {
    overrides: TopicSettingOverrides,
    partitions: Vec<Partition>,
}

#[derive(Default)]
struct Partition {
    batches: Vec<Stored>,
    end: u64,
}

struct Stored {
    base: u64,
    /// The offset after its last record.
    end: u64,
    max_timestamp: i64,
    bytes: Bytes,
}

impl MemoryBackend {
    pub fn new(config: MemoryConfig) -> MemoryBackend {
        MemoryBackend { config, state: Mutex::new(State::default()), appended: tokio::sync::watch::channel(0).0 }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn settings(&self, overrides: TopicSettingOverrides) -> TopicSettingsInForce {
        TopicSettingsInForce {
            retention_ms: overrides.retention_ms.flatten(),
            retention_bytes: overrides.retention_bytes.flatten(),
            max_message_bytes: overrides.max_message_bytes.unwrap_or(self.config.max_message_bytes),
            segment_bytes: overrides.segment_bytes.unwrap_or(128 << 20),
            overrides,
        }
    }

    fn append(&self, batch: ProduceBatch) -> Result<Appended, BackendError> {
        let mut state = self.state();
        let max_message_bytes = {
            let topic = state.topics.get(&batch.topic).ok_or(BackendError::UnknownTopicOrPartition)?;
            self.settings(topic.overrides).max_message_bytes
        };
        let header = check_batch(&batch.records)?;
        if batch.records.len() > max_message_bytes as usize {
            return Err(BackendError::MessageTooLarge);
        }
        if state.bytes + batch.records.len() > self.config.bytes_max {
            return Err(BackendError::StorageError("the memory backend is full (bytes_max)".into()));
        }
        state.bytes += batch.records.len();
        let topic = state.topics.get_mut(&batch.topic).ok_or(BackendError::UnknownTopicOrPartition)?;
        let partition =
            topic.partitions.get_mut(batch.partition as usize).ok_or(BackendError::UnknownTopicOrPartition)?;
        let base = partition.end;
        let mut bytes = BytesMut::from(&batch.records[..]);
        // Both stamps lie outside the CRC, which covers attributes onwards.
        bytes[..BATCH_LENGTH_AT].copy_from_slice(&(base as i64).to_be_bytes());
        bytes[LEADER_EPOCH_AT..MAGIC_AT].copy_from_slice(&(EPOCH.get() as i32).to_be_bytes());
        partition.end = base + header.records;
        partition.batches.push(Stored {
            base,
            end: partition.end,
            max_timestamp: header.max_timestamp,
            bytes: bytes.freeze(),
        });
        drop(state);
        self.appended.send_modify(|n| *n += 1);
        Ok(Appended { base_offset: Offset(base), log_start_offset: Offset(0) })
    }

    /// Runs `f` on a partition, after the epoch check the contract asks for.
    fn partition<T>(
        &self,
        position: &PartitionPosition,
        f: impl FnOnce(&Partition) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        match position.current_leader_epoch {
            Some(e) if e < EPOCH => return Err(BackendError::FencedLeaderEpoch),
            Some(e) if e > EPOCH => return Err(BackendError::UnknownLeaderEpoch),
            _ => {}
        }
        let state = self.state();
        let topic = state.topics.get(&position.topic).ok_or(BackendError::UnknownTopicOrPartition)?;
        f(topic.partitions.get(position.partition as usize).ok_or(BackendError::UnknownTopicOrPartition)?)
    }

    fn create(&self, topic: NewTopic, validate_only: bool) -> Result<(), BackendError> {
        valid_name(&topic.name)?;
        let partitions = topic.partitions.unwrap_or(self.config.default_partitions);
        if partitions == 0 || partitions > 10_000 {
            return Err(BackendError::InvalidPartitions(format!("{partitions}: use 1 to 10000")));
        }
        if topic.replication_factor.is_some_and(|r| r != 1) {
            return Err(BackendError::InvalidReplicationFactor("the memory backend has one node".into()));
        }
        let mut state = self.state();
        if state.topics.contains_key(&topic.name) {
            return Err(BackendError::TopicAlreadyExists);
        }
        if !validate_only {
            let partitions = (0..partitions).map(|_| Partition::default()).collect();
            state.topics.insert(topic.name, Topic { overrides: topic.settings, partitions });
        }
        Ok(())
    }

    fn describe(&self, state: &State, name: &str) -> TopicMetadata {
        let node = self.config.broker.id;
        let Some(topic) = state.topics.get(name) else {
            return TopicMetadata {
                name: name.to_owned(),
                error: Some(BackendError::UnknownTopicOrPartition),
                internal: false,
                partitions: Vec::new(),
            };
        };
        let partitions = (0..topic.partitions.len() as u32)
            .map(|index| PartitionMetadata {
                index,
                error: None,
                leader: Some(node),
                leader_epoch: EPOCH,
                replicas: vec![node],
                in_sync: vec![node],
                offline: Vec::new(),
            })
            .collect();
        TopicMetadata { name: name.to_owned(), error: None, internal: false, partitions }
    }
}

/// What the backend reads from a batch header it accepted.
struct BatchHeader {
    records: u64,
    max_timestamp: i64,
}

/// The checks the contract asks of `produce`: one whole RecordBatch v2, its CRC-32C right,
/// its record count consistent with its last offset delta.
fn check_batch(batch: &Bytes) -> Result<BatchHeader, BackendError> {
    let corrupt = |why: String| BackendError::CorruptMessage(why);
    if batch.len() < HEADER_BYTES {
        return Err(corrupt(format!("{} bytes, shorter than a batch header", batch.len())));
    }
    if batch[MAGIC_AT] != 2 {
        return Err(corrupt(format!("magic {}: only RecordBatch v2 is accepted", batch[MAGIC_AT])));
    }
    let length = (&batch[BATCH_LENGTH_AT..]).get_i32();
    if usize::try_from(length).ok().and_then(|l| l.checked_add(12)) != Some(batch.len()) {
        return Err(corrupt(format!("batch length {length} does not match its {} bytes", batch.len())));
    }
    let infos = RecordBatchDecoder::decode_batch_info(&mut batch.clone()).map_err(|e| corrupt(e.to_string()))?;
    let [info] = infos.as_slice() else { return Err(corrupt("not exactly one batch".into())) };
    let last_offset_delta = (&batch[LAST_OFFSET_DELTA_AT..]).get_i32();
    let count = (&batch[RECORDS_COUNT_AT..]).get_i32();
    if count < 1 || count != info.record_count || i64::from(last_offset_delta) != i64::from(count) - 1 {
        return Err(corrupt(format!("{count} records with last offset delta {last_offset_delta}")));
    }
    if info.transactional || info.control {
        return Err(BackendError::InvalidRecord("transactions are not supported".into()));
    }
    Ok(BatchHeader { records: count as u64, max_timestamp: (&batch[MAX_TIMESTAMP_AT..]).get_i64() })
}

/// The first offset in `batch` whose record's timestamp is at or after `at`: decoded when
/// the batch is not compressed, else the batch's first offset (the memory backend cannot
/// decompress; the real one keeps a time index).
fn first_at_or_after(batch: &Stored, at: i64) -> (u64, i64) {
    let mut bytes = batch.bytes.clone();
    if let Ok(set) = RecordBatchDecoder::decode(&mut bytes)
        && set.compression == Compression::None
        && let Some(record) = set.records.iter().find(|r| r.timestamp >= at)
    {
        return (record.offset as u64, record.timestamp);
    }
    (batch.base, batch.max_timestamp)
}

/// Kafka's rule for topic names.
fn valid_name(name: &str) -> Result<(), BackendError> {
    let legal = name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if name.is_empty() || name.len() > 249 || name == "." || name == ".." || !legal {
        return Err(BackendError::InvalidTopic(format!("`{name}`: use 1 to 249 of [a-zA-Z0-9._-]")));
    }
    Ok(())
}

impl KafkaBackend for MemoryBackend {
    fn metadata(&self, topics: Option<Vec<String>>, auto_create: bool) -> BackendFuture<'_, ClusterMetadata> {
        Box::pin(async move {
            if let (Some(names), true, Some(partitions)) = (&topics, auto_create, self.config.auto_create_partitions) {
                for name in names {
                    let new = NewTopic {
                        name: name.clone(),
                        partitions: Some(partitions),
                        replication_factor: None,
                        settings: TopicSettingOverrides::default(),
                    };
                    // An invalid name is listed as unknown below; one that exists stays.
                    let _ = self.create(new, false);
                }
            }
            let state = self.state();
            let names: Vec<String> = topics.unwrap_or_else(|| state.topics.keys().cloned().collect());
            Ok(ClusterMetadata {
                cluster_id: "keel-memory".into(),
                controller: self.config.broker.id,
                brokers: vec![self.config.broker.clone()],
                topics: names.iter().map(|n| self.describe(&state, n)).collect(),
            })
        })
    }

    fn produce(&self, batch: ProduceBatch) -> BackendFuture<'_, PendingCommit> {
        // Committed as soon as appended: the second stage is already done.
        let result = self.append(batch);
        Box::pin(async move { Ok(Box::pin(async move { result }) as PendingCommit) })
    }

    fn fetch(
        &self,
        position: PartitionPosition,
        max_bytes: usize,
        first_batch_whole: bool,
    ) -> BackendFuture<'_, FetchedRecords> {
        let result = self.partition(&position, |p| {
            let offset = position.offset.get();
            if offset > p.end {
                return Err(BackendError::OffsetOutOfRange);
            }
            let first = p.batches.partition_point(|b| b.end <= offset);
            let mut records = BytesMut::new();
            for batch in &p.batches[first..] {
                let whole_first = records.is_empty() && first_batch_whole;
                if records.len() + batch.bytes.len() > max_bytes && !whole_first {
                    break;
                }
                records.extend_from_slice(&batch.bytes);
            }
            let end = Offset(p.end);
            Ok(FetchedRecords {
                records: records.freeze(),
                high_watermark: end,
                last_stable_offset: end,
                log_start_offset: Offset(0),
            })
        });
        Box::pin(async move { result })
    }

    fn wait_for_commit(&self, positions: Vec<PartitionPosition>, timeout: Duration) -> BackendFuture<'_, ()> {
        let mut appended = self.appended.subscribe();
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                // Subscribed before looking: an append after the look wakes the wait below.
                appended.borrow_and_update();
                let moved = positions.iter().any(|p| {
                    self.partition(&PartitionPosition { current_leader_epoch: None, ..p.clone() }, |part| {
                        Ok(part.end > p.offset.get())
                    })
                    .unwrap_or(false)
                });
                if moved {
                    return Ok(());
                }
                match tokio::time::timeout_at(deadline, appended.changed()).await {
                    Ok(Ok(())) => continue,
                    _ => return Ok(()),
                }
            }
        })
    }

    fn list_offset(&self, position: PartitionPosition, query: OffsetQuery) -> BackendFuture<'_, ListedOffset> {
        let result = self.partition(&position, |p| {
            Ok(match query {
                OffsetQuery::Earliest => ListedOffset { offset: 0, timestamp: -1, leader_epoch: Some(EPOCH) },
                OffsetQuery::Latest => ListedOffset { offset: p.end as i64, timestamp: -1, leader_epoch: Some(EPOCH) },
                OffsetQuery::ByTimestamp(at) => match p.batches.iter().find(|b| b.max_timestamp >= at) {
                    Some(batch) => {
                        let (offset, timestamp) = first_at_or_after(batch, at);
                        ListedOffset { offset: offset as i64, timestamp, leader_epoch: Some(EPOCH) }
                    }
                    None => ListedOffset::NONE,
                },
            })
        });
        Box::pin(async move { result })
    }

    fn epoch_end_offset(&self, position: PartitionPosition, epoch: Term) -> BackendFuture<'_, EpochEnd> {
        let result = self.partition(&position, |p| {
            Ok(if epoch >= EPOCH {
                EpochEnd { epoch: EPOCH, end_offset: Offset(p.end) }
            } else {
                // No batch has an older epoch: that epoch ended where the log starts.
                EpochEnd { epoch, end_offset: Offset(0) }
            })
        });
        Box::pin(async move { result })
    }

    fn create_topic(&self, topic: NewTopic, validate_only: bool, _timeout: Duration) -> BackendFuture<'_, ()> {
        let result = self.create(topic, validate_only);
        Box::pin(async move { result })
    }

    fn delete_topic(&self, name: String, _timeout: Duration) -> BackendFuture<'_, ()> {
        let mut state = self.state();
        let result = match state.topics.remove(&name) {
            Some(topic) => {
                let freed: usize = topic.partitions.iter().flat_map(|p| &p.batches).map(|b| b.bytes.len()).sum();
                state.bytes -= freed;
                Ok(())
            }
            None => Err(BackendError::UnknownTopicOrPartition),
        };
        Box::pin(async move { result })
    }

    fn topic_settings(&self, name: String) -> BackendFuture<'_, TopicSettingsInForce> {
        let result = self.state().topics.get(&name).map(|t| t.overrides).ok_or(BackendError::UnknownTopicOrPartition);
        Box::pin(async move { result.map(|o| self.settings(o)) })
    }

    /// New ids in order, epochs bumped as asked; this backend checks no sequences.
    fn init_producer_id(&self, current: ProducerSession) -> BackendFuture<'_, ProducerSession> {
        let mut state = self.state();
        let session = match current.epoch.checked_add(1) {
            Some(epoch) if current.producer_id >= 0 => ProducerSession { producer_id: current.producer_id, epoch },
            _ => {
                state.next_producer_id += 1;
                ProducerSession { producer_id: state.next_producer_id - 1, epoch: 0 }
            }
        };
        Box::pin(async move { Ok(session) })
    }
}

/// A broker on this machine, for examples and tests.
pub fn local_broker(addr: std::net::SocketAddr) -> Broker {
    Broker { id: NodeId(1), host: addr.ip().to_string(), port: addr.port(), rack: None }
}
