//! The bytes of metadata commands (the payload of a metadata log entry) and of the
//! whole-state snapshot, encoded by hand.
//!
//! Conventions: integers are **little-endian**. The entry around a command already carries
//! a CRC (`segments/FORMAT.md`), and a snapshot travels and rests inside CRC-checked frames
//! and files, so neither has one of its own. Each starts with a version byte; this describes
//! version 1 of both, and a decoder refuses a version it does not know. Decoding never
//! panics, and every count is checked against the bytes left before anything is allocated
//! (`codec::Reader::count`). Decoding checks the form only; whether a command may be
//! applied is `apply`'s decision, with a message that names the rule.
//!
//! Version history, of commands and snapshots alike:
//! - 1: the first; `settings` took 39 bytes, without the producer limits. Still read (a
//!   cluster's log and snapshots outlive an upgrade): its settings get the default producer
//!   limits, which are those every partition ran with before they were settings.
//! - 2 (written now): `settings` adds the producer limits, 51 bytes.
//!
//! ## Field types
//!
//! | type | bytes |
//! |---|---|
//! | `u8`, `u16`, `u32`, `u64` | 1, 2, 4, 8 bytes |
//! | `i64` | 8 bytes, two's complement |
//! | `bool` | 1 byte: 0 or 1 (any other value is refused) |
//! | `str` | `u32` length, then that many bytes of UTF-8 |
//! | `opt<T>` | `u8` 0 (absent), or `u8` 1 then a `T` |
//! | `nodes` | `u32` count, then count × `u64` node id |
//! | `placement` | `u32` count, then count × `nodes` (one per partition, in order) |
//! | `state` | `u8`: 1 active, 2 draining, 3 removed |
//! | `config` | `u32` count, then count × (`u8` key, `u64` value), keys strictly ascending |
//! | `keys` | `u32` count, then count × `u8` key |
//! | `settings` | 51 bytes (39 in version 1), below |
//!
//! Config keys and their values: 1 `retention.bytes` (`i64`, -1 = unlimited),
//! 2 `retention.ms` (`i64`, -1 = unlimited), 3 `max.message.bytes` (at most `u32::MAX`),
//! 4 `segment.bytes`, 5 `cleanup.policy` (0 delete, 1 compact). A key not listed is the
//! cluster's default. An unknown key number is refused.
//!
//! `settings`:
//!
//! ```text
//! offset size field
//!      0    1 auto_create_topics          bool
//!      1    4 default_partitions          u32
//!      5    2 default_replication_factor  u16
//!      7    4 cluster_partitions_max      u32
//!     11    8 default retention.bytes     i64
//!     19    8 default retention.ms        i64
//!     27    4 default max.message.bytes   u32
//!     31    8 default segment.bytes       u64
//!     39    8 producer_id_expiration_ms   u64 (version 2; version 1 ends at 39)
//!     47    4 producers_max               u32 (version 2)
//!     51      (end)
//! ```
//!
//! ## Command
//!
//! ```text
//! offset size field
//!      0    1 version   COMMAND_VERSION = 2 (1 is read too)
//!      1    1 kind      below
//!      2    . fields    the kind's fields, in the order listed, nothing after them
//! ```
//!
//! | kind | command | fields |
//! |---|---|---|
//! | 1 | RegisterBroker | `u64` node, `str` address, `opt<str>` kafka address, `bool` voter |
//! | 2 | SetBrokerState | `u64` node, `state` |
//! | 3 | CreateTopic | `str` name, `bool` internal, `u64` created at (ms), `config`, `placement` |
//! | 4 | DeleteTopic | `str` name |
//! | 5 | AlterTopicConfig | `str` name, `config` set, `keys` reset |
//! | 6 | AddPartitions | `str` name, `u32` partition count after, `placement` of the new ones |
//! | 7 | MovePartition | `u64` group, `nodes` target |
//! | 8 | FinishMove | `u64` group, `nodes` replicas |
//! | 9 | AllocateProducerIds | `u64` node, `u32` count |
//! | 10 | SetClusterSettings | `settings` |
//!
//! ## Snapshot
//!
//! ```text
//! offset size field
//!      0    1 version           SNAPSHOT_VERSION = 2 (1 is read too)
//!      1    8 next group id     u64
//!      9    8 next producer id  u64
//!     17   51 settings          (39 bytes in version 1, which shifts what follows)
//!     68    4 broker count      u32, then each broker:
//!               u64 id, str address, opt<str> kafka address, state, bool voter
//!       .   4 topic count       u32, then each topic:
//!               str name, 16 bytes topic id, u64 created at (ms), bool internal, config,
//!               u32 partition count, then each partition:
//!                   u64 group, nodes replicas, opt<nodes> move target
//! ```
//!
//! Brokers are in ascending id order and topics in ascending name order (bytewise), each
//! at most once, so that one state has exactly one encoding. A snapshot is restored only
//! if the state it holds keeps every invariant (`MetadataState::check`).

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{DecodeError, Reader, put_bytes};
use crate::ids::{GroupId, NodeId};

use super::command::{Command, CreateTopic};
use super::config::{ClusterSettings, ConfigKey, TopicConfig, TopicDefaults};
use super::state::{Broker, BrokerState, MetadataState, Partition, Topic, TopicId};

pub const COMMAND_VERSION: u8 = 2;
pub const SNAPSHOT_VERSION: u8 = 2;
/// The first version, still read: its settings lack the producer limits.
const VERSION_WITHOUT_PRODUCER_LIMITS: u8 = 1;

const KIND_REGISTER_BROKER: u8 = 1;
const KIND_SET_BROKER_STATE: u8 = 2;
const KIND_CREATE_TOPIC: u8 = 3;
const KIND_DELETE_TOPIC: u8 = 4;
const KIND_ALTER_TOPIC_CONFIG: u8 = 5;
const KIND_ADD_PARTITIONS: u8 = 6;
const KIND_MOVE_PARTITION: u8 = 7;
const KIND_FINISH_MOVE: u8 = 8;
const KIND_ALLOCATE_PRODUCER_IDS: u8 = 9;
const KIND_SET_CLUSTER_SETTINGS: u8 = 10;

/// Smallest encodings, for bounding counts before allocating.
const NODE_LEN_MIN: usize = 8;
const NODES_LEN_MIN: usize = 4;
const CONFIG_ENTRY_LEN: usize = 9;
const BROKER_LEN_MIN: usize = 8 + 4 + 1 + 1 + 1;
const TOPIC_LEN_MIN: usize = 4 + 16 + 8 + 1 + 4 + 4;
const PARTITION_LEN_MIN: usize = 8 + NODES_LEN_MIN + 1;

impl Command {
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(COMMAND_VERSION);
        match self {
            Command::RegisterBroker { node, address, kafka_address, voter } => {
                b.put_u8(KIND_REGISTER_BROKER);
                b.put_u64_le(node.get());
                put_bytes(&mut b, address.as_bytes());
                put_opt_str(&mut b, kafka_address.as_deref());
                b.put_u8(u8::from(*voter));
            }
            Command::SetBrokerState { node, state } => {
                b.put_u8(KIND_SET_BROKER_STATE);
                b.put_u64_le(node.get());
                b.put_u8(state_code(*state));
            }
            Command::CreateTopic(create) => {
                b.put_u8(KIND_CREATE_TOPIC);
                put_bytes(&mut b, create.name.as_bytes());
                b.put_u8(u8::from(create.internal));
                b.put_u64_le(create.created_at_ms);
                put_config(&mut b, &create.config);
                put_placement(&mut b, &create.replicas);
            }
            Command::DeleteTopic { name } => {
                b.put_u8(KIND_DELETE_TOPIC);
                put_bytes(&mut b, name.as_bytes());
            }
            Command::AlterTopicConfig { name, set, reset } => {
                b.put_u8(KIND_ALTER_TOPIC_CONFIG);
                put_bytes(&mut b, name.as_bytes());
                put_config(&mut b, set);
                put_count(&mut b, reset.len());
                for key in reset {
                    b.put_u8(key.code());
                }
            }
            Command::AddPartitions { name, count, replicas } => {
                b.put_u8(KIND_ADD_PARTITIONS);
                put_bytes(&mut b, name.as_bytes());
                b.put_u32_le(*count);
                put_placement(&mut b, replicas);
            }
            Command::MovePartition { group, target } => {
                b.put_u8(KIND_MOVE_PARTITION);
                b.put_u64_le(group.get());
                put_nodes(&mut b, target);
            }
            Command::FinishMove { group, replicas } => {
                b.put_u8(KIND_FINISH_MOVE);
                b.put_u64_le(group.get());
                put_nodes(&mut b, replicas);
            }
            Command::AllocateProducerIds { node, count } => {
                b.put_u8(KIND_ALLOCATE_PRODUCER_IDS);
                b.put_u64_le(node.get());
                b.put_u32_le(*count);
            }
            Command::SetClusterSettings(settings) => {
                b.put_u8(KIND_SET_CLUSTER_SETTINGS);
                put_settings(&mut b, settings);
            }
        }
        b.freeze()
    }

    pub fn decode(bytes: Bytes) -> Result<Command, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = read_version(&mut r, COMMAND_VERSION, "metadata command version (this node knows 1 and 2)")?;
        let command = match r.u8("metadata command kind")? {
            KIND_REGISTER_BROKER => Command::RegisterBroker {
                node: NodeId(r.u64("node id")?),
                address: r.string("broker address")?,
                kafka_address: opt_str(&mut r, "kafka address")?,
                voter: r.bool("voter flag")?,
            },
            KIND_SET_BROKER_STATE => {
                Command::SetBrokerState { node: NodeId(r.u64("node id")?), state: read_state(&mut r)? }
            }
            KIND_CREATE_TOPIC => Command::CreateTopic(CreateTopic {
                name: r.string("topic name")?,
                internal: r.bool("internal flag")?,
                created_at_ms: r.u64("creation time")?,
                config: read_config(&mut r)?,
                replicas: read_placement(&mut r)?,
            }),
            KIND_DELETE_TOPIC => Command::DeleteTopic { name: r.string("topic name")? },
            KIND_ALTER_TOPIC_CONFIG => {
                let name = r.string("topic name")?;
                let set = read_config(&mut r)?;
                let count = r.count(1, "config keys to reset")?;
                let mut reset = Vec::with_capacity(count);
                for _ in 0..count {
                    reset.push(read_key(&mut r)?);
                }
                Command::AlterTopicConfig { name, set, reset }
            }
            KIND_ADD_PARTITIONS => Command::AddPartitions {
                name: r.string("topic name")?,
                count: r.u32("partition count")?,
                replicas: read_placement(&mut r)?,
            },
            KIND_MOVE_PARTITION => {
                Command::MovePartition { group: GroupId(r.u64("group id")?), target: read_nodes(&mut r)? }
            }
            KIND_FINISH_MOVE => {
                Command::FinishMove { group: GroupId(r.u64("group id")?), replicas: read_nodes(&mut r)? }
            }
            KIND_ALLOCATE_PRODUCER_IDS => {
                Command::AllocateProducerIds { node: NodeId(r.u64("node id")?), count: r.u32("producer id count")? }
            }
            KIND_SET_CLUSTER_SETTINGS => Command::SetClusterSettings(read_settings(&mut r, version)?),
            _ => return Err(DecodeError::Invalid { what: "metadata command kind" }),
        };
        r.end()?;
        Ok(command)
    }
}

impl MetadataState {
    /// The whole state, for the Raft core to save and send in place of the log before it.
    pub fn snapshot(&self) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(SNAPSHOT_VERSION);
        b.put_u64_le(self.next_group_id.get());
        b.put_u64_le(self.next_producer_id);
        put_settings(&mut b, &self.settings);
        put_count(&mut b, self.brokers.len());
        for broker in self.brokers.values() {
            b.put_u64_le(broker.id.get());
            put_bytes(&mut b, broker.address.as_bytes());
            put_opt_str(&mut b, broker.kafka_address.as_deref());
            b.put_u8(state_code(broker.state));
            b.put_u8(u8::from(broker.voter));
        }
        put_count(&mut b, self.topics.len());
        for topic in self.topics.values() {
            put_bytes(&mut b, topic.name.as_bytes());
            b.put_slice(&topic.id.0);
            b.put_u64_le(topic.created_at_ms);
            b.put_u8(u8::from(topic.internal));
            put_config(&mut b, &topic.config);
            put_count(&mut b, topic.partitions.len());
            for p in &topic.partitions {
                b.put_u64_le(p.group.get());
                put_nodes(&mut b, &p.replicas);
                match &p.target {
                    None => b.put_u8(0),
                    Some(target) => {
                        b.put_u8(1);
                        put_nodes(&mut b, target);
                    }
                }
            }
        }
        b.freeze()
    }

    /// The state a snapshot holds; refused if the bytes are malformed or the state breaks
    /// an invariant.
    pub fn restore(bytes: Bytes) -> Result<MetadataState, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = read_version(&mut r, SNAPSHOT_VERSION, "metadata snapshot version (this node knows 1 and 2)")?;
        let mut state = MetadataState::new();
        state.next_group_id = GroupId(r.u64("next group id")?);
        state.next_producer_id = r.u64("next producer id")?;
        state.settings = read_settings(&mut r, version)?;
        for _ in 0..r.count(BROKER_LEN_MIN, "broker count")? {
            let broker = Broker {
                id: NodeId(r.u64("node id")?),
                address: r.string("broker address")?,
                kafka_address: opt_str(&mut r, "kafka address")?,
                state: read_state(&mut r)?,
                voter: r.bool("voter flag")?,
            };
            if state.brokers.last_key_value().is_some_and(|(last, _)| *last >= broker.id) {
                return Err(DecodeError::Invalid { what: "broker order (ascending ids, each once)" });
            }
            state.brokers.insert(broker.id, broker);
        }
        for _ in 0..r.count(TOPIC_LEN_MIN, "topic count")? {
            let topic = read_topic(&mut r)?;
            if state.topics.last_key_value().is_some_and(|(last, _)| *last >= topic.name) {
                return Err(DecodeError::Invalid { what: "topic order (ascending names, each once)" });
            }
            for (i, p) in topic.partitions.iter().enumerate() {
                state.groups.insert(p.group, (topic.name.clone(), i as u32));
            }
            state.topics.insert(topic.name.clone(), topic);
        }
        r.end()?;
        state.check().map_err(|what| DecodeError::Invalid { what })?;
        Ok(state)
    }
}

fn read_topic(r: &mut Reader) -> Result<Topic, DecodeError> {
    let name = r.string("topic name")?;
    let mut id = [0u8; 16];
    id.copy_from_slice(&r.take(16, "topic id")?);
    let created_at_ms = r.u64("creation time")?;
    let internal = r.bool("internal flag")?;
    let config = read_config(r)?;
    let count = r.count(PARTITION_LEN_MIN, "partition count")?;
    let mut partitions = Vec::with_capacity(count);
    for _ in 0..count {
        let group = GroupId(r.u64("group id")?);
        let replicas = read_nodes(r)?;
        let target = if r.bool("move flag")? { Some(read_nodes(r)?) } else { None };
        partitions.push(Partition { group, replicas, target });
    }
    Ok(Topic { name, id: TopicId(id), created_at_ms, internal, config, partitions })
}

/// The version byte that starts an encoding: 1 up to `newest`; any other is refused.
fn read_version(r: &mut Reader, newest: u8, what: &'static str) -> Result<u8, DecodeError> {
    let version = r.u8(what)?;
    if (VERSION_WITHOUT_PRODUCER_LIMITS..=newest).contains(&version) {
        Ok(version)
    } else {
        Err(DecodeError::Invalid { what })
    }
}

fn put_count(b: &mut BytesMut, n: usize) {
    b.put_u32_le(u32::try_from(n).expect("every count the metadata holds is bounded far below 4 billion"));
}

fn put_opt_str(b: &mut BytesMut, s: Option<&str>) {
    match s {
        None => b.put_u8(0),
        Some(s) => {
            b.put_u8(1);
            put_bytes(b, s.as_bytes());
        }
    }
}

fn opt_str(r: &mut Reader, what: &'static str) -> Result<Option<String>, DecodeError> {
    if r.bool(what)? { Ok(Some(r.string(what)?)) } else { Ok(None) }
}

fn put_nodes(b: &mut BytesMut, nodes: &[NodeId]) {
    put_count(b, nodes.len());
    for node in nodes {
        b.put_u64_le(node.get());
    }
}

fn read_nodes(r: &mut Reader) -> Result<Vec<NodeId>, DecodeError> {
    let count = r.count(NODE_LEN_MIN, "replica count")?;
    (0..count).map(|_| r.u64("node id").map(NodeId)).collect()
}

fn put_placement(b: &mut BytesMut, lists: &[Vec<NodeId>]) {
    put_count(b, lists.len());
    for list in lists {
        put_nodes(b, list);
    }
}

fn read_placement(r: &mut Reader) -> Result<Vec<Vec<NodeId>>, DecodeError> {
    let count = r.count(NODES_LEN_MIN, "partition count")?;
    (0..count).map(|_| read_nodes(r)).collect()
}

fn state_code(state: BrokerState) -> u8 {
    match state {
        BrokerState::Active => 1,
        BrokerState::Draining => 2,
        BrokerState::Removed => 3,
    }
}

fn read_state(r: &mut Reader) -> Result<BrokerState, DecodeError> {
    match r.u8("broker state")? {
        1 => Ok(BrokerState::Active),
        2 => Ok(BrokerState::Draining),
        3 => Ok(BrokerState::Removed),
        _ => Err(DecodeError::Invalid { what: "broker state" }),
    }
}

fn read_key(r: &mut Reader) -> Result<ConfigKey, DecodeError> {
    ConfigKey::from_code(r.u8("config key")?).ok_or(DecodeError::Invalid { what: "config key" })
}

fn put_config(b: &mut BytesMut, config: &TopicConfig) {
    let raw = config.raw();
    put_count(b, raw.len());
    for (key, value) in raw {
        b.put_u8(key.code());
        b.put_u64_le(value);
    }
}

fn read_config(r: &mut Reader) -> Result<TopicConfig, DecodeError> {
    let mut config = TopicConfig::default();
    let mut last = None;
    for _ in 0..r.count(CONFIG_ENTRY_LEN, "config entry count")? {
        let key = read_key(r)?;
        if last.is_some_and(|last| last >= key) {
            return Err(DecodeError::Invalid { what: "config key order (ascending, each once)" });
        }
        last = Some(key);
        if !config.set_raw(key, r.u64("config value")?) {
            return Err(DecodeError::Invalid { what: "config value" });
        }
    }
    Ok(config)
}

fn put_settings(b: &mut BytesMut, s: &ClusterSettings) {
    b.put_u8(u8::from(s.auto_create_topics));
    b.put_u32_le(s.default_partitions);
    b.put_u16_le(s.default_replication_factor);
    b.put_u32_le(s.cluster_partitions_max);
    let d = &s.topic_defaults;
    b.put_i64_le(d.retention_bytes);
    b.put_i64_le(d.retention_ms);
    b.put_u32_le(d.max_message_bytes);
    b.put_u64_le(d.segment_bytes);
    b.put_u64_le(s.producer_id_expiration_ms);
    b.put_u32_le(s.producers_max);
}

/// The settings as `version` encodes them; version 1's get the default producer limits.
fn read_settings(r: &mut Reader, version: u8) -> Result<ClusterSettings, DecodeError> {
    let mut settings = ClusterSettings {
        auto_create_topics: r.bool("auto_create_topics")?,
        default_partitions: r.u32("default_partitions")?,
        default_replication_factor: r.u16("default_replication_factor")?,
        cluster_partitions_max: r.u32("cluster_partitions_max")?,
        topic_defaults: TopicDefaults {
            retention_bytes: r.u64("default retention.bytes")? as i64,
            retention_ms: r.u64("default retention.ms")? as i64,
            max_message_bytes: r.u32("default max.message.bytes")?,
            segment_bytes: r.u64("default segment.bytes")?,
        },
        ..ClusterSettings::default()
    };
    if version > VERSION_WITHOUT_PRODUCER_LIMITS {
        settings.producer_id_expiration_ms = r.u64("producer_id_expiration_ms")?;
        settings.producers_max = r.u32("producers_max")?;
    }
    Ok(settings)
}
