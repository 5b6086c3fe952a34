//! The client protocol (`keel-client/2`): one request and one response per bidirectional
//! stream, each a frame (see `frame.rs`); a producer pipelines its batches on one stream.
//! Produce and fetch name a topic and a partition; a produce carries one Kafka RecordBatch
//! v2 (`batch/`), and fetch responses carry entries as the exact bytes stored on disk (the
//! client checks each entry's CRC, then the batch's).

use bytes::{BufMut, Bytes};
use segments::Entry;

use super::frame::{self, DecodeError, FrameBuilder, FrameError, Reader, put_bytes};
use super::group_codec;
use crate::groups::{GroupError, GroupListing};
use crate::kafka::backend::{GroupAnswer, GroupCall};
use crate::producers::ProducerError;

/// Largest request a node reads (a produce batch plus framing).
pub const REQUEST_BYTES_MAX_DEFAULT: usize = 16 << 20;

mod kind {
    pub const PRODUCE: u8 = 1;
    pub const FETCH: u8 = 2;
    pub const METADATA: u8 = 3;
    pub const DISK: u8 = 4;
    pub const STATUS: u8 = 5;
    pub const CREATE_TOPIC: u8 = 6;
    pub const DELETE_TOPIC: u8 = 7;
    pub const OFFSETS: u8 = 8;
    pub const PARTITION_STATUS: u8 = 9;
    pub const REGISTER_BROKER: u8 = 10;
    pub const ALLOCATE_PRODUCER_IDS: u8 = 11;
    pub const GROUP: u8 = 12;
    pub const LIST_GROUPS: u8 = 13;
    pub const INIT_PRODUCER_ID: u8 = 14;
    // Cluster operations (issue 17) number from 40 and 140, apart from other additions.
    pub const TRANSFER_LEADER: u8 = 40;
    pub const BALANCE_LEADERS: u8 = 41;
    pub const MOVE_PARTITION: u8 = 42;
    pub const ABORT_MOVE: u8 = 43;
    pub const MOVE_STATUS: u8 = 44;
    pub const FINISH_MOVE: u8 = 45;
    pub const DECOMMISSION: u8 = 46;
    pub const ADD_NODE: u8 = 47;
    pub const PRODUCED: u8 = 101;
    pub const FETCHED: u8 = 102;
    pub const METADATA_OK: u8 = 103;
    pub const DISK_OK: u8 = 104;
    pub const STATUS_OK: u8 = 105;
    pub const TOPIC_CREATED: u8 = 106;
    pub const TOPIC_DELETED: u8 = 107;
    pub const OFFSETS_OK: u8 = 108;
    pub const BROKER_REGISTERED: u8 = 110;
    pub const PRODUCER_IDS: u8 = 111;
    pub const GROUP_OK: u8 = 112;
    pub const GROUPS_OK: u8 = 113;
    pub const PRODUCER_SESSION: u8 = 114;
    pub const LEADER_TRANSFERRING: u8 = 140;
    pub const LEADERS_BALANCED: u8 = 141;
    pub const MOVE_STARTED: u8 = 142;
    pub const MOVE_ABORTED: u8 = 143;
    pub const MOVE_STATUS_OK: u8 = 144;
    pub const MOVE_FINISHED: u8 = 145;
    pub const DECOMMISSIONING: u8 = 146;
    pub const ERROR: u8 = 127;
}

/// Topics a metadata request names at most, and config entries a create carries.
pub const NAMES_MAX: usize = 10_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// One Kafka RecordBatch v2 for `topic`/`partition`, to its leader.
    Produce {
        topic: String,
        partition: u32,
        batch: Bytes,
    },
    /// Committed records of `topic`/`partition` from `offset`; waits up to `max_wait_ms`
    /// at the end of the log.
    Fetch {
        topic: String,
        partition: u32,
        offset: u64,
        max_bytes: u32,
        max_wait_ms: u32,
    },
    /// The brokers and the topics asked for (`None`: every topic, internal ones flagged).
    Metadata {
        topics: Option<Vec<String>>,
    },
    /// The node's free disk space and its reserve (see `DiskView`).
    Disk,
    /// The node's view of the metadata group and of the cluster (`keel status`).
    Status,
    CreateTopic {
        name: String,
        /// `None`: the cluster's default.
        partitions: Option<u32>,
        replicas: Option<u16>,
        /// Kafka's config keys and their values as text (`retention.ms` = `86400000`).
        configs: Vec<(String, String)>,
        /// Create it only if the cluster creates topics on first use (`auto_create_topics`);
        /// else the answer is `UnknownTopic`. A producer asks so for a topic it cannot find.
        auto: bool,
    },
    DeleteTopic {
        name: String,
    },
    /// The partition's first offset and the offset after its last committed record, as
    /// this node's replica has them (exact on the leader).
    Offsets {
        topic: String,
        partition: u32,
    },
    /// This node's replica of a partition: its role, term, indexes and members (answered
    /// as `Status`, `topics` and `under_replicated_partitions` 0).
    PartitionStatus {
        topic: String,
        partition: u32,
    },
    /// A node registers as a broker, or updates its addresses (to the metadata leader).
    RegisterBroker {
        node: u64,
        address: String,
        kafka_address: Option<String>,
    },
    /// A node asks for a block of `count` producer ids (to the metadata leader).
    AllocateProducerIds {
        node: u64,
        count: u32,
    },
    /// A call for a consumer group's coordinator (`group_codec.rs`): served by the node
    /// that leads the group's partition of `__consumer_offsets`; any other node answers
    /// `NotLeader` naming it.
    Group(GroupCall),
    /// The groups of the coordinators on this node (a client asks every node).
    ListGroups,
    /// An idempotent producer's session (Kafka's InitProducerId, KIP-360): `(-1, -1)` for a
    /// new producer id, or the id and epoch the producer holds to have its epoch bumped. Any
    /// node answers, from the ids the metadata group allocated to it.
    InitProducerId {
        producer_id: i64,
        epoch: i16,
    },
    /// To a partition's leader: hand leadership to replica `to`, which must be a voter
    /// caught up with the commit (answered once the transfer started).
    TransferLeader {
        topic: String,
        partition: u32,
        to: u64,
    },
    /// To the metadata leader: move every partition's leadership to its preferred replica
    /// where that replica is caught up (`keel leader balance`).
    BalanceLeaders,
    /// To the metadata leader: start moving a partition's replicas to `target` (first =
    /// preferred leader; `keel partition move`).
    MovePartition {
        topic: String,
        partition: u32,
        target: Vec<u64>,
    },
    /// To a partition's leader: abandon its move, if it has not entered joint consensus.
    AbortMove {
        topic: String,
        partition: u32,
    },
    /// To a partition's leader: where its move stands.
    MoveStatus {
        topic: String,
        partition: u32,
    },
    /// A group's leader records the end of a move (to the metadata leader).
    FinishMove {
        group: u64,
        replicas: Vec<u64>,
    },
    /// To the metadata leader: drain node `node` and remove it once it hosts nothing.
    Decommission {
        node: u64,
    },
    /// To the metadata leader: register node `node` (a node that joins, or `keel node add`)
    /// and add it to the metadata group as a learner; with `voter`, promote it once caught up.
    AddNode {
        node: u64,
        address: String,
        kafka_address: Option<String>,
        voter: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    Produced {
        base_offset: u64,
        record_count: u32,
    },
    /// Entries whose records include `offset` and what follows (the first entry may start
    /// before it: the client trims). `high_watermark` is the offset after the last
    /// committed record this node can serve.
    Fetched {
        log_start_offset: u64,
        high_watermark: u64,
        entries: Vec<Entry>,
    },
    Metadata(ClusterMetadata),
    Status(ClusterView),
    Disk(DiskView),
    TopicCreated(TopicView),
    TopicDeleted,
    Offsets {
        log_start_offset: u64,
        log_end_offset: u64,
    },
    BrokerRegistered,
    /// The producer ids `first..first + count` belong to the node that asked.
    ProducerIds {
        first: u64,
        count: u32,
    },
    LeaderTransferring,
    /// The partitions not led by their preferred replica, and what was done for each.
    LeadersBalanced(Vec<LeaderMoveView>),
    Error(ErrorReply),
    Group(GroupAnswer),
    Groups(Vec<GroupListing>),
    /// The producer id and epoch an idempotent producer stamps on its batches.
    ProducerSession {
        producer_id: i64,
        epoch: i16,
    },
    MoveStarted,
    MoveAborted,
    /// `phase` is empty when no move is in progress; `behind` lists the learners not
    /// caught up yet.
    MoveStatus {
        phase: String,
        behind: Vec<u64>,
    },
    MoveFinished,
    /// The partition replicas the draining node still hosts, each moving off.
    Decommissioning {
        moves: u32,
    },
}

/// One partition whose leadership should move, as a leader balance saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderMoveView {
    pub topic: String,
    pub partition: u32,
    /// Who led it (`None`: no leader known).
    pub from: Option<u64>,
    pub to: u64,
    /// Whether the transfer started; if not, `note` says why.
    pub started: bool,
    pub note: String,
}

/// The brokers and topics as the answering node knows them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterMetadata {
    pub cluster_id: u64,
    /// The node that answered.
    pub node_id: u64,
    /// The metadata group's leader, if known.
    pub controller: Option<u64>,
    pub brokers: Vec<BrokerView>,
    pub topics: Vec<TopicView>,
}

impl ClusterMetadata {
    pub fn broker(&self, id: u64) -> Option<&BrokerView> {
        self.brokers.iter().find(|b| b.id == id)
    }

    pub fn topic(&self, name: &str) -> Option<&TopicView> {
        self.topics.iter().find(|t| t.name == name)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BrokerView {
    pub id: u64,
    /// Where it serves peers and keel clients (QUIC).
    pub address: String,
    /// Where it serves Kafka clients, if it does.
    pub kafka_address: Option<String>,
    /// `active`, `draining` or `removed` (the metadata's word; whether it answers is
    /// another matter).
    pub state: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicView {
    pub name: String,
    pub internal: bool,
    pub partitions: Vec<PartitionView>,
    /// The settings in force, by Kafka's names.
    pub config: Vec<(String, String)>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionView {
    pub partition: u32,
    /// The Raft group that replicates it: its data lies in `DIR/groups/<group>/` on each replica.
    pub group: u64,
    /// The leader as far as the answering node knows, and the term it leads in.
    pub leader: Option<u64>,
    pub leader_term: u64,
    /// The first is the preferred leader.
    pub replicas: Vec<u64>,
    /// The replicas caught up with the leader (as the leader last said).
    pub in_sync: Vec<u64>,
    /// As the leader last said, when it did.
    pub log_start_offset: Option<u64>,
    pub log_end_offset: Option<u64>,
    /// The replicas it is moving to (empty: no move in progress).
    pub target: Vec<u64>,
}

/// One node's disk: a node refuses produce while `free_bytes` is below `reserve_bytes`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskView {
    /// Free bytes (available to the node's user) on the file system of its data directory.
    pub free_bytes: u64,
    /// The node's `disk_free_bytes_min`.
    pub reserve_bytes: u64,
}

impl DiskView {
    /// Whether the node refuses produce (it still serves reads).
    pub fn refuses_produce(&self) -> bool {
        self.free_bytes < self.reserve_bytes
    }
}

/// One node's view of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterView {
    pub cluster_id: u64,
    pub node_id: u64,
    pub role: String,
    pub leader: Option<u64>,
    pub term: u64,
    pub commit_index: u64,
    pub last_index: u64,
    pub log_start_offset: u64,
    /// The offset after the last committed record.
    pub log_end_offset: u64,
    pub members: Vec<MemberView>,
    /// Topics in the cluster (internal ones included).
    pub topics: u32,
    /// Partitions whose leader, as far as this node knows, misses a replica in sync.
    pub under_replicated_partitions: u32,
}

impl ClusterView {
    /// The address of the leader this node knows of, as its membership lists it.
    pub fn leader_address(&self) -> Option<&str> {
        let leader = self.leader?;
        self.members.iter().find(|m| m.id == leader).map(|m| m.address.as_str())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberView {
    pub id: u64,
    pub address: String,
    pub voter: bool,
    /// Known on the leader: the highest index replicated to this member.
    pub match_index: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ErrorReply {
    #[error("this node is not the leader (leader: {})", leader_text(*leader, address))]
    NotLeader { leader: Option<u64>, address: Option<String> },
    #[error("the outcome is unknown: {reason}; the records may or may not have been appended")]
    OutcomeUnknown { reason: String },
    #[error("offset {requested} is out of range: valid offsets are {start}..={end} (end = next offset to be written)")]
    OffsetOutOfRange { requested: u64, start: u64, end: u64 },
    #[error("{0}")]
    Refused(String),
    #[error("the node is busy: {0}; retry later")]
    Busy(String),
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    #[error("topic {topic:?} has no partition {partition} (it has {count})")]
    UnknownPartition { topic: String, partition: u32, count: u32 },
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    /// A request that breaks a rule (a topic name, a config value, a partition count): the
    /// message names the rule.
    #[error("{0}")]
    Invalid(String),
    /// The leader's disk is below its reserve: produce is refused until space is freed.
    #[error(
        "disk nearly full on node {node}: {} MiB free, below the {} MiB reserve (disk_free_bytes_min); \
         free space on it or lower its retention_bytes",
        free_bytes >> 20,
        reserve_bytes >> 20
    )]
    DiskFull { node: u64, free_bytes: u64, reserve_bytes: u64 },
    /// Not appended: an idempotent producer's batch breaks its sequence or epoch.
    #[error(transparent)]
    Producer(crate::producers::ProducerError),
    #[error("the node failed: {0}")]
    Internal(String),
    /// The group coordinator refused the call as a whole (an invalid group id, say).
    #[error("{0}")]
    Group(GroupError),
}

fn leader_text(leader: Option<u64>, address: &Option<String>) -> String {
    match (leader, address) {
        (Some(id), Some(addr)) => format!("node {id} at {addr}"),
        (Some(id), None) => format!("node {id}"),
        _ => "not known yet".into(),
    }
}

mod error_code {
    pub const NOT_LEADER: u8 = 1;
    pub const OUTCOME_UNKNOWN: u8 = 2;
    pub const OUT_OF_RANGE: u8 = 3;
    pub const REFUSED: u8 = 4;
    pub const BUSY: u8 = 5;
    pub const INTERNAL: u8 = 6;
    pub const DISK_FULL: u8 = 7;
    pub const UNKNOWN_TOPIC: u8 = 8;
    pub const UNKNOWN_PARTITION: u8 = 9;
    pub const TOPIC_EXISTS: u8 = 10;
    pub const INVALID: u8 = 11;
    pub const OUT_OF_ORDER_SEQUENCE: u8 = 12;
    pub const INVALID_PRODUCER_EPOCH: u8 = 13;
    pub const GROUP: u8 = 14;
}

impl Request {
    pub fn encode(&self) -> Vec<Bytes> {
        match self {
            Request::Produce { topic, partition, batch } => {
                let mut b = FrameBuilder::new(kind::PRODUCE, 8 + topic.len());
                put_bytes(b.body(), topic.as_bytes());
                b.body().put_u32_le(*partition);
                b.finish_with(vec![batch.clone()])
            }
            Request::Fetch { topic, partition, offset, max_bytes, max_wait_ms } => {
                let mut b = FrameBuilder::new(kind::FETCH, 24 + topic.len());
                put_bytes(b.body(), topic.as_bytes());
                b.body().put_u32_le(*partition);
                b.body().put_u64_le(*offset);
                b.body().put_u32_le(*max_bytes);
                b.body().put_u32_le(*max_wait_ms);
                vec![b.finish()]
            }
            Request::Metadata { topics } => {
                let mut b = FrameBuilder::new(kind::METADATA, 8);
                b.body().put_u8(topics.is_some() as u8);
                put_strings(b.body(), topics.as_deref().unwrap_or(&[]));
                vec![b.finish()]
            }
            Request::Disk => vec![FrameBuilder::new(kind::DISK, 0).finish()],
            Request::Status => vec![FrameBuilder::new(kind::STATUS, 0).finish()],
            Request::CreateTopic { name, partitions, replicas, configs, auto } => {
                let mut b = FrameBuilder::new(kind::CREATE_TOPIC, 32 + name.len());
                put_bytes(b.body(), name.as_bytes());
                b.body().put_u8(*auto as u8);
                put_opt_u64(b.body(), partitions.map(u64::from));
                put_opt_u64(b.body(), replicas.map(u64::from));
                b.body().put_u32_le(configs.len() as u32);
                for (key, value) in configs {
                    put_bytes(b.body(), key.as_bytes());
                    put_bytes(b.body(), value.as_bytes());
                }
                vec![b.finish()]
            }
            Request::DeleteTopic { name } => {
                let mut b = FrameBuilder::new(kind::DELETE_TOPIC, 4 + name.len());
                put_bytes(b.body(), name.as_bytes());
                vec![b.finish()]
            }
            Request::RegisterBroker { node, address, kafka_address } => {
                let mut b = FrameBuilder::new(kind::REGISTER_BROKER, 32 + address.len());
                b.body().put_u64_le(*node);
                put_bytes(b.body(), address.as_bytes());
                b.body().put_u8(kafka_address.is_some() as u8);
                put_bytes(b.body(), kafka_address.as_deref().unwrap_or("").as_bytes());
                vec![b.finish()]
            }
            Request::AllocateProducerIds { node, count } => {
                let mut b = FrameBuilder::new(kind::ALLOCATE_PRODUCER_IDS, 12);
                b.body().put_u64_le(*node);
                b.body().put_u32_le(*count);
                vec![b.finish()]
            }
            Request::Group(call) => {
                let mut b = FrameBuilder::new(kind::GROUP, 128);
                group_codec::encode_call(b.body(), call);
                vec![b.finish()]
            }
            Request::ListGroups => vec![FrameBuilder::new(kind::LIST_GROUPS, 0).finish()],
            Request::InitProducerId { producer_id, epoch } => {
                let mut b = FrameBuilder::new(kind::INIT_PRODUCER_ID, 10);
                b.body().put_i64_le(*producer_id);
                b.body().put_i16_le(*epoch);
                vec![b.finish()]
            }
            Request::TransferLeader { topic, partition, to } => {
                let mut b = FrameBuilder::new(kind::TRANSFER_LEADER, 16 + topic.len());
                put_bytes(b.body(), topic.as_bytes());
                b.body().put_u32_le(*partition);
                b.body().put_u64_le(*to);
                vec![b.finish()]
            }
            Request::BalanceLeaders => vec![FrameBuilder::new(kind::BALANCE_LEADERS, 0).finish()],
            Request::MovePartition { topic, partition, target } => {
                let mut b = FrameBuilder::new(kind::MOVE_PARTITION, 12 + topic.len() + 8 * target.len());
                put_bytes(b.body(), topic.as_bytes());
                b.body().put_u32_le(*partition);
                put_ids(b.body(), target);
                vec![b.finish()]
            }
            Request::AbortMove { topic, partition } | Request::MoveStatus { topic, partition } => {
                let k = if matches!(self, Request::AbortMove { .. }) { kind::ABORT_MOVE } else { kind::MOVE_STATUS };
                let mut b = FrameBuilder::new(k, 8 + topic.len());
                put_bytes(b.body(), topic.as_bytes());
                b.body().put_u32_le(*partition);
                vec![b.finish()]
            }
            Request::FinishMove { group, replicas } => {
                let mut b = FrameBuilder::new(kind::FINISH_MOVE, 12 + 8 * replicas.len());
                b.body().put_u64_le(*group);
                put_ids(b.body(), replicas);
                vec![b.finish()]
            }
            Request::Decommission { node } => {
                let mut b = FrameBuilder::new(kind::DECOMMISSION, 8);
                b.body().put_u64_le(*node);
                vec![b.finish()]
            }
            Request::AddNode { node, address, kafka_address, voter } => {
                let mut b = FrameBuilder::new(kind::ADD_NODE, 32 + address.len());
                b.body().put_u64_le(*node);
                put_bytes(b.body(), address.as_bytes());
                b.body().put_u8(kafka_address.is_some() as u8);
                put_bytes(b.body(), kafka_address.as_deref().unwrap_or("").as_bytes());
                b.body().put_u8(*voter as u8);
                vec![b.finish()]
            }
            Request::Offsets { topic, partition } | Request::PartitionStatus { topic, partition } => {
                let k = if matches!(self, Request::Offsets { .. }) { kind::OFFSETS } else { kind::PARTITION_STATUS };
                let mut b = FrameBuilder::new(k, 8 + topic.len());
                put_bytes(b.body(), topic.as_bytes());
                b.body().put_u32_le(*partition);
                vec![b.finish()]
            }
        }
    }

    pub fn decode(frame: Bytes) -> Result<Request, FrameError> {
        let (k, mut r) = frame::open(frame)?;
        let req = match k {
            kind::PRODUCE => {
                Request::Produce { topic: r.string("topic")?, partition: r.u32("partition")?, batch: r.rest() }
            }
            kind::FETCH => Request::Fetch {
                topic: r.string("topic")?,
                partition: r.u32("partition")?,
                offset: r.u64("offset")?,
                max_bytes: r.u32("max bytes")?,
                max_wait_ms: r.u32("max wait")?,
            },
            kind::METADATA => {
                let some = r.bool("topics given")?;
                let topics = strings(&mut r, "topics")?;
                Request::Metadata { topics: some.then_some(topics) }
            }
            kind::DISK => Request::Disk,
            kind::STATUS => Request::Status,
            kind::CREATE_TOPIC => {
                let name = r.string("topic")?;
                let auto = r.bool("auto")?;
                let partitions = opt_u64(&mut r, "partitions")?;
                let replicas = opt_u64(&mut r, "replicas")?;
                let n = r.count(8, "config count")?;
                if n > NAMES_MAX {
                    return Err(DecodeError::Invalid { what: "config count" }.into());
                }
                let configs = (0..n)
                    .map(|_| Ok((r.string("config key")?, r.string("config value")?)))
                    .collect::<Result<_, FrameError>>()?;
                let bounded = |v: Option<u64>, max: u64, what| match v {
                    Some(v) if v > max => Err(FrameError::from(DecodeError::Invalid { what })),
                    v => Ok(v),
                };
                Request::CreateTopic {
                    name,
                    partitions: bounded(partitions, u32::MAX.into(), "partitions")?.map(|v| v as u32),
                    replicas: bounded(replicas, u16::MAX.into(), "replicas")?.map(|v| v as u16),
                    configs,
                    auto,
                }
            }
            kind::DELETE_TOPIC => Request::DeleteTopic { name: r.string("topic")? },
            kind::OFFSETS => Request::Offsets { topic: r.string("topic")?, partition: r.u32("partition")? },
            kind::PARTITION_STATUS => {
                Request::PartitionStatus { topic: r.string("topic")?, partition: r.u32("partition")? }
            }
            kind::REGISTER_BROKER => {
                let node = r.u64("node")?;
                let address = r.string("address")?;
                let has_kafka = r.bool("kafka address given")?;
                let kafka = r.string("kafka address")?;
                Request::RegisterBroker { node, address, kafka_address: has_kafka.then_some(kafka) }
            }
            kind::ALLOCATE_PRODUCER_IDS => {
                Request::AllocateProducerIds { node: r.u64("node")?, count: r.u32("producer id count")? }
            }
            kind::GROUP => Request::Group(group_codec::decode_call(&mut r)?),
            kind::LIST_GROUPS => Request::ListGroups,
            kind::INIT_PRODUCER_ID => Request::InitProducerId {
                producer_id: r.u64("producer id")? as i64,
                epoch: r.u16("producer epoch")? as i16,
            },
            kind::TRANSFER_LEADER => Request::TransferLeader {
                topic: r.string("topic")?,
                partition: r.u32("partition")?,
                to: r.u64("new leader")?,
            },
            kind::BALANCE_LEADERS => Request::BalanceLeaders,
            kind::MOVE_PARTITION => Request::MovePartition {
                topic: r.string("topic")?,
                partition: r.u32("partition")?,
                target: ids(&mut r, "target")?,
            },
            kind::ABORT_MOVE => Request::AbortMove { topic: r.string("topic")?, partition: r.u32("partition")? },
            kind::MOVE_STATUS => Request::MoveStatus { topic: r.string("topic")?, partition: r.u32("partition")? },
            kind::FINISH_MOVE => Request::FinishMove { group: r.u64("group")?, replicas: ids(&mut r, "replicas")? },
            kind::DECOMMISSION => Request::Decommission { node: r.u64("node")? },
            kind::ADD_NODE => {
                let node = r.u64("node")?;
                let address = r.string("address")?;
                let has_kafka = r.bool("kafka address given")?;
                let kafka = r.string("kafka address")?;
                Request::AddNode {
                    node,
                    address,
                    kafka_address: has_kafka.then_some(kafka),
                    voter: r.bool("voter flag")?,
                }
            }
            other => return Err(FrameError::Kind(other)),
        };
        r.end()?;
        Ok(req)
    }
}

impl Response {
    pub fn encode(&self) -> Vec<Bytes> {
        match self {
            Response::Produced { base_offset, record_count } => {
                let mut b = FrameBuilder::new(kind::PRODUCED, 12);
                b.body().put_u64_le(*base_offset);
                b.body().put_u32_le(*record_count);
                vec![b.finish()]
            }
            Response::Fetched { log_start_offset, high_watermark, entries } => {
                let mut b = FrameBuilder::new(kind::FETCHED, 20);
                b.body().put_u64_le(*log_start_offset);
                b.body().put_u64_le(*high_watermark);
                b.body().put_u32_le(entries.len() as u32);
                b.finish_with(entries.iter().map(|e| e.as_bytes().clone()).collect())
            }
            Response::Metadata(metadata) => {
                let mut b = FrameBuilder::new(kind::METADATA_OK, 256);
                encode_metadata(b.body(), metadata);
                vec![b.finish()]
            }
            Response::Status(view) => {
                let mut b = FrameBuilder::new(kind::STATUS_OK, 128);
                encode_view(b.body(), view);
                vec![b.finish()]
            }
            Response::TopicCreated(topic) => {
                let mut b = FrameBuilder::new(kind::TOPIC_CREATED, 128);
                encode_topic(b.body(), topic);
                vec![b.finish()]
            }
            Response::TopicDeleted => vec![FrameBuilder::new(kind::TOPIC_DELETED, 0).finish()],
            Response::BrokerRegistered => vec![FrameBuilder::new(kind::BROKER_REGISTERED, 0).finish()],
            Response::ProducerIds { first, count } => {
                let mut b = FrameBuilder::new(kind::PRODUCER_IDS, 12);
                b.body().put_u64_le(*first);
                b.body().put_u32_le(*count);
                vec![b.finish()]
            }
            Response::LeaderTransferring => vec![FrameBuilder::new(kind::LEADER_TRANSFERRING, 0).finish()],
            Response::MoveStarted => vec![FrameBuilder::new(kind::MOVE_STARTED, 0).finish()],
            Response::MoveAborted => vec![FrameBuilder::new(kind::MOVE_ABORTED, 0).finish()],
            Response::MoveFinished => vec![FrameBuilder::new(kind::MOVE_FINISHED, 0).finish()],
            Response::MoveStatus { phase, behind } => {
                let mut b = FrameBuilder::new(kind::MOVE_STATUS_OK, 8 + phase.len() + 8 * behind.len());
                put_bytes(b.body(), phase.as_bytes());
                put_ids(b.body(), behind);
                vec![b.finish()]
            }
            Response::Decommissioning { moves } => {
                let mut b = FrameBuilder::new(kind::DECOMMISSIONING, 4);
                b.body().put_u32_le(*moves);
                vec![b.finish()]
            }
            Response::LeadersBalanced(moves) => {
                let mut b = FrameBuilder::new(kind::LEADERS_BALANCED, 4 + 48 * moves.len());
                b.body().put_u32_le(moves.len() as u32);
                for m in moves {
                    put_bytes(b.body(), m.topic.as_bytes());
                    b.body().put_u32_le(m.partition);
                    put_opt_u64(b.body(), m.from);
                    b.body().put_u64_le(m.to);
                    b.body().put_u8(m.started as u8);
                    put_bytes(b.body(), m.note.as_bytes());
                }
                vec![b.finish()]
            }
            Response::Offsets { log_start_offset, log_end_offset } => {
                let mut b = FrameBuilder::new(kind::OFFSETS_OK, 16);
                b.body().put_u64_le(*log_start_offset);
                b.body().put_u64_le(*log_end_offset);
                vec![b.finish()]
            }
            Response::Disk(disk) => {
                let mut b = FrameBuilder::new(kind::DISK_OK, 16);
                b.body().put_u64_le(disk.free_bytes);
                b.body().put_u64_le(disk.reserve_bytes);
                vec![b.finish()]
            }
            Response::Error(err) => {
                let mut b = FrameBuilder::new(kind::ERROR, 64);
                encode_error(b.body(), err);
                vec![b.finish()]
            }
            Response::Group(answer) => {
                let mut b = FrameBuilder::new(kind::GROUP_OK, 128);
                group_codec::encode_answer(b.body(), answer);
                vec![b.finish()]
            }
            Response::Groups(groups) => {
                let mut b = FrameBuilder::new(kind::GROUPS_OK, 64);
                group_codec::encode_listings(b.body(), groups);
                vec![b.finish()]
            }
            Response::ProducerSession { producer_id, epoch } => {
                let mut b = FrameBuilder::new(kind::PRODUCER_SESSION, 10);
                b.body().put_i64_le(*producer_id);
                b.body().put_i16_le(*epoch);
                vec![b.finish()]
            }
        }
    }

    /// Decodes a response; `entry_bytes_max` bounds each entry's length field.
    pub fn decode(frame: Bytes, entry_bytes_max: u32) -> Result<Response, FrameError> {
        let (k, mut r) = frame::open(frame)?;
        let resp = match k {
            kind::PRODUCED => Response::Produced { base_offset: r.u64("base offset")?, record_count: r.u32("count")? },
            kind::FETCHED => {
                let log_start_offset = r.u64("log start")?;
                let high_watermark = r.u64("high watermark")?;
                let n = r.count(segments::HEADER_LEN, "entry count")?;
                let mut rest = r.rest();
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let (entry, len) = Entry::decode_prefix(&rest, entry_bytes_max)
                        .map_err(|_| DecodeError::Invalid { what: "entry (bad length or CRC)" })?;
                    entries.push(entry);
                    let _ = rest.split_to(len);
                }
                r = Reader::new(rest);
                Response::Fetched { log_start_offset, high_watermark, entries }
            }
            kind::METADATA_OK => Response::Metadata(decode_metadata(&mut r)?),
            kind::STATUS_OK => Response::Status(decode_view(&mut r)?),
            kind::TOPIC_CREATED => Response::TopicCreated(decode_topic(&mut r)?),
            kind::TOPIC_DELETED => Response::TopicDeleted,
            kind::BROKER_REGISTERED => Response::BrokerRegistered,
            kind::PRODUCER_IDS => Response::ProducerIds { first: r.u64("first producer id")?, count: r.u32("count")? },
            kind::LEADER_TRANSFERRING => Response::LeaderTransferring,
            kind::MOVE_STARTED => Response::MoveStarted,
            kind::MOVE_ABORTED => Response::MoveAborted,
            kind::MOVE_FINISHED => Response::MoveFinished,
            kind::MOVE_STATUS_OK => Response::MoveStatus { phase: r.string("phase")?, behind: ids(&mut r, "behind")? },
            kind::DECOMMISSIONING => Response::Decommissioning { moves: r.u32("moves")? },
            kind::LEADERS_BALANCED => {
                let n = r.count(4 + 4 + 9 + 8 + 1 + 4, "leader move count")?;
                let mut moves = Vec::with_capacity(n);
                for _ in 0..n {
                    moves.push(LeaderMoveView {
                        topic: r.string("topic")?,
                        partition: r.u32("partition")?,
                        from: opt_u64(&mut r, "old leader")?,
                        to: r.u64("new leader")?,
                        started: r.bool("started")?,
                        note: r.string("note")?,
                    });
                }
                Response::LeadersBalanced(moves)
            }
            kind::OFFSETS_OK => {
                Response::Offsets { log_start_offset: r.u64("log start")?, log_end_offset: r.u64("log end")? }
            }
            kind::DISK_OK => {
                Response::Disk(DiskView { free_bytes: r.u64("free bytes")?, reserve_bytes: r.u64("reserve")? })
            }
            kind::ERROR => Response::Error(decode_error(&mut r)?),
            kind::GROUP_OK => Response::Group(group_codec::decode_answer(&mut r)?),
            kind::GROUPS_OK => Response::Groups(group_codec::decode_listings(&mut r)?),
            kind::PRODUCER_SESSION => Response::ProducerSession {
                producer_id: r.u64("producer id")? as i64,
                epoch: r.u16("producer epoch")? as i16,
            },
            other => return Err(FrameError::Kind(other)),
        };
        r.end()?;
        Ok(resp)
    }
}

fn put_opt_u64(buf: &mut bytes::BytesMut, v: Option<u64>) {
    buf.put_u8(v.is_some() as u8);
    buf.put_u64_le(v.unwrap_or(0));
}

fn opt_u64(r: &mut Reader, what: &'static str) -> Result<Option<u64>, FrameError> {
    let some = r.bool(what)?;
    let v = r.u64(what)?;
    Ok(some.then_some(v))
}

fn put_strings(buf: &mut bytes::BytesMut, items: &[String]) {
    buf.put_u32_le(items.len() as u32);
    for item in items {
        put_bytes(buf, item.as_bytes());
    }
}

fn strings(r: &mut Reader, what: &'static str) -> Result<Vec<String>, FrameError> {
    let n = r.count(4, what)?;
    if n > NAMES_MAX {
        return Err(DecodeError::Invalid { what }.into());
    }
    (0..n).map(|_| r.string(what).map_err(FrameError::from)).collect()
}

fn put_ids(buf: &mut bytes::BytesMut, ids: &[u64]) {
    buf.put_u32_le(ids.len() as u32);
    for id in ids {
        buf.put_u64_le(*id);
    }
}

fn ids(r: &mut Reader, what: &'static str) -> Result<Vec<u64>, FrameError> {
    let n = r.count(8, what)?;
    (0..n).map(|_| r.u64(what).map_err(FrameError::from)).collect()
}

fn encode_metadata(buf: &mut bytes::BytesMut, m: &ClusterMetadata) {
    buf.put_u64_le(m.cluster_id);
    buf.put_u64_le(m.node_id);
    put_opt_u64(buf, m.controller);
    buf.put_u32_le(m.brokers.len() as u32);
    for b in &m.brokers {
        buf.put_u64_le(b.id);
        put_bytes(buf, b.address.as_bytes());
        buf.put_u8(b.kafka_address.is_some() as u8);
        put_bytes(buf, b.kafka_address.as_deref().unwrap_or("").as_bytes());
        put_bytes(buf, b.state.as_bytes());
    }
    buf.put_u32_le(m.topics.len() as u32);
    for t in &m.topics {
        encode_topic(buf, t);
    }
}

fn decode_metadata(r: &mut Reader) -> Result<ClusterMetadata, FrameError> {
    let mut m = ClusterMetadata {
        cluster_id: r.u64("cluster id")?,
        node_id: r.u64("node id")?,
        controller: opt_u64(r, "controller")?,
        ..ClusterMetadata::default()
    };
    let n = r.count(8 + 4 + 1 + 4 + 4, "broker count")?;
    for _ in 0..n {
        let id = r.u64("broker id")?;
        let address = r.string("broker address")?;
        let has_kafka = r.bool("kafka address given")?;
        let kafka = r.string("kafka address")?;
        let state = r.string("broker state")?;
        m.brokers.push(BrokerView { id, address, kafka_address: has_kafka.then_some(kafka), state });
    }
    let n = r.count(4 + 1 + 4 + 4, "topic count")?;
    for _ in 0..n {
        m.topics.push(decode_topic(r)?);
    }
    Ok(m)
}

fn encode_topic(buf: &mut bytes::BytesMut, t: &TopicView) {
    put_bytes(buf, t.name.as_bytes());
    buf.put_u8(t.internal as u8);
    buf.put_u32_le(t.partitions.len() as u32);
    for p in &t.partitions {
        buf.put_u32_le(p.partition);
        buf.put_u64_le(p.group);
        put_opt_u64(buf, p.leader);
        buf.put_u64_le(p.leader_term);
        put_ids(buf, &p.replicas);
        put_ids(buf, &p.in_sync);
        put_opt_u64(buf, p.log_start_offset);
        put_opt_u64(buf, p.log_end_offset);
        put_ids(buf, &p.target);
    }
    buf.put_u32_le(t.config.len() as u32);
    for (key, value) in &t.config {
        put_bytes(buf, key.as_bytes());
        put_bytes(buf, value.as_bytes());
    }
}

fn decode_topic(r: &mut Reader) -> Result<TopicView, FrameError> {
    let mut t = TopicView { name: r.string("topic")?, internal: r.bool("internal")?, ..TopicView::default() };
    let n = r.count(4 + 8 + 9 + 8 + 4 + 4 + 9 + 9 + 4, "partition count")?;
    for _ in 0..n {
        t.partitions.push(PartitionView {
            partition: r.u32("partition")?,
            group: r.u64("group")?,
            leader: opt_u64(r, "leader")?,
            leader_term: r.u64("leader term")?,
            replicas: ids(r, "replicas")?,
            in_sync: ids(r, "in sync")?,
            log_start_offset: opt_u64(r, "log start")?,
            log_end_offset: opt_u64(r, "log end")?,
            target: ids(r, "target")?,
        });
    }
    let n = r.count(8, "config count")?;
    for _ in 0..n {
        t.config.push((r.string("config key")?, r.string("config value")?));
    }
    Ok(t)
}

fn encode_view(buf: &mut bytes::BytesMut, v: &ClusterView) {
    buf.put_u64_le(v.cluster_id);
    buf.put_u64_le(v.node_id);
    put_bytes(buf, v.role.as_bytes());
    put_opt_u64(buf, v.leader);
    buf.put_u64_le(v.term);
    buf.put_u64_le(v.commit_index);
    buf.put_u64_le(v.last_index);
    buf.put_u64_le(v.log_start_offset);
    buf.put_u64_le(v.log_end_offset);
    buf.put_u32_le(v.members.len() as u32);
    for m in &v.members {
        buf.put_u64_le(m.id);
        put_bytes(buf, m.address.as_bytes());
        buf.put_u8(m.voter as u8);
        put_opt_u64(buf, m.match_index);
    }
    buf.put_u32_le(v.topics);
    buf.put_u32_le(v.under_replicated_partitions);
}

fn decode_view(r: &mut Reader) -> Result<ClusterView, FrameError> {
    let mut v = ClusterView {
        cluster_id: r.u64("cluster id")?,
        node_id: r.u64("node id")?,
        role: r.string("role")?,
        leader: opt_u64(r, "leader")?,
        term: r.u64("term")?,
        commit_index: r.u64("commit index")?,
        last_index: r.u64("last index")?,
        log_start_offset: r.u64("log start")?,
        log_end_offset: r.u64("log end")?,
        members: Vec::new(),
        topics: 0,
        under_replicated_partitions: 0,
    };
    let n = r.count(8 + 4 + 1 + 9, "member count")?;
    for _ in 0..n {
        v.members.push(MemberView {
            id: r.u64("member id")?,
            address: r.string("member address")?,
            voter: r.bool("member voter")?,
            match_index: opt_u64(r, "member match")?,
        });
    }
    v.topics = r.u32("topics")?;
    v.under_replicated_partitions = r.u32("under-replicated partitions")?;
    Ok(v)
}

fn encode_error(buf: &mut bytes::BytesMut, err: &ErrorReply) {
    match err {
        ErrorReply::NotLeader { leader, address } => {
            buf.put_u8(error_code::NOT_LEADER);
            put_opt_u64(buf, *leader);
            put_bytes(buf, address.as_deref().unwrap_or("").as_bytes());
        }
        ErrorReply::OutcomeUnknown { reason } => {
            buf.put_u8(error_code::OUTCOME_UNKNOWN);
            put_bytes(buf, reason.as_bytes());
        }
        ErrorReply::OffsetOutOfRange { requested, start, end } => {
            buf.put_u8(error_code::OUT_OF_RANGE);
            buf.put_u64_le(*requested);
            buf.put_u64_le(*start);
            buf.put_u64_le(*end);
        }
        ErrorReply::DiskFull { node, free_bytes, reserve_bytes } => {
            buf.put_u8(error_code::DISK_FULL);
            buf.put_u64_le(*node);
            buf.put_u64_le(*free_bytes);
            buf.put_u64_le(*reserve_bytes);
        }
        ErrorReply::Producer(ProducerError::OutOfOrderSequence { producer_id, first_seq, expected }) => {
            buf.put_u8(error_code::OUT_OF_ORDER_SEQUENCE);
            buf.put_i64_le(*producer_id);
            buf.put_i32_le(*first_seq);
            buf.put_i32_le(*expected);
        }
        ErrorReply::Producer(ProducerError::InvalidProducerEpoch { producer_id, epoch, current }) => {
            buf.put_u8(error_code::INVALID_PRODUCER_EPOCH);
            buf.put_i64_le(*producer_id);
            buf.put_i16_le(*epoch);
            buf.put_i16_le(*current);
        }
        ErrorReply::UnknownPartition { topic, partition, count } => {
            buf.put_u8(error_code::UNKNOWN_PARTITION);
            put_bytes(buf, topic.as_bytes());
            buf.put_u32_le(*partition);
            buf.put_u32_le(*count);
        }
        ErrorReply::Group(e) => {
            buf.put_u8(error_code::GROUP);
            group_codec::put_error(buf, Some(e));
        }
        ErrorReply::Refused(msg)
        | ErrorReply::Busy(msg)
        | ErrorReply::Internal(msg)
        | ErrorReply::UnknownTopic(msg)
        | ErrorReply::TopicExists(msg)
        | ErrorReply::Invalid(msg) => {
            let code = match err {
                ErrorReply::Refused(_) => error_code::REFUSED,
                ErrorReply::Busy(_) => error_code::BUSY,
                ErrorReply::UnknownTopic(_) => error_code::UNKNOWN_TOPIC,
                ErrorReply::TopicExists(_) => error_code::TOPIC_EXISTS,
                ErrorReply::Invalid(_) => error_code::INVALID,
                _ => error_code::INTERNAL,
            };
            buf.put_u8(code);
            put_bytes(buf, msg.as_bytes());
        }
    }
}

fn decode_error(r: &mut Reader) -> Result<ErrorReply, FrameError> {
    Ok(match r.u8("error code")? {
        error_code::NOT_LEADER => {
            let leader = opt_u64(r, "leader")?;
            let address = r.string("leader address")?;
            ErrorReply::NotLeader { leader, address: (!address.is_empty()).then_some(address) }
        }
        error_code::OUTCOME_UNKNOWN => ErrorReply::OutcomeUnknown { reason: r.string("reason")? },
        error_code::OUT_OF_RANGE => {
            ErrorReply::OffsetOutOfRange { requested: r.u64("offset")?, start: r.u64("start")?, end: r.u64("end")? }
        }
        error_code::REFUSED => ErrorReply::Refused(r.string("message")?),
        error_code::BUSY => ErrorReply::Busy(r.string("message")?),
        error_code::INTERNAL => ErrorReply::Internal(r.string("message")?),
        error_code::UNKNOWN_TOPIC => ErrorReply::UnknownTopic(r.string("topic")?),
        error_code::TOPIC_EXISTS => ErrorReply::TopicExists(r.string("topic")?),
        error_code::INVALID => ErrorReply::Invalid(r.string("message")?),
        error_code::UNKNOWN_PARTITION => ErrorReply::UnknownPartition {
            topic: r.string("topic")?,
            partition: r.u32("partition")?,
            count: r.u32("count")?,
        },
        error_code::DISK_FULL => ErrorReply::DiskFull {
            node: r.u64("node")?,
            free_bytes: r.u64("free bytes")?,
            reserve_bytes: r.u64("reserve")?,
        },
        error_code::OUT_OF_ORDER_SEQUENCE => ErrorReply::Producer(ProducerError::OutOfOrderSequence {
            producer_id: r.u64("producer id")? as i64,
            first_seq: r.u32("sequence")? as i32,
            expected: r.u32("expected sequence")? as i32,
        }),
        error_code::INVALID_PRODUCER_EPOCH => ErrorReply::Producer(ProducerError::InvalidProducerEpoch {
            producer_id: r.u64("producer id")? as i64,
            epoch: r.u16("epoch")? as i16,
            current: r.u16("current epoch")? as i16,
        }),
        error_code::GROUP => match group_codec::error(r)? {
            Some(e) => ErrorReply::Group(e),
            None => return Err(DecodeError::Invalid { what: "group error code" }.into()),
        },
        _ => return Err(DecodeError::Invalid { what: "error code" }.into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use segments::EntryMeta;

    fn join(chunks: Vec<Bytes>) -> Bytes {
        let all: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let len = frame::check_len(all[..4].try_into().unwrap(), 1 << 24).unwrap();
        assert_eq!(len, all.len() - 4, "length prefix covers the whole frame");
        Bytes::from(all).slice(4..)
    }

    #[test]
    fn every_message_round_trips() {
        let requests = [
            Request::Produce { topic: "orders".into(), partition: 3, batch: Bytes::from_static(b"abc") },
            Request::Fetch { topic: "orders".into(), partition: 1, offset: 7, max_bytes: 1 << 20, max_wait_ms: 500 },
            Request::Metadata { topics: None },
            Request::Metadata { topics: Some(vec!["a".into(), "b".into()]) },
            Request::Disk,
            Request::Status,
            Request::CreateTopic {
                name: "orders".into(),
                partitions: Some(8),
                replicas: None,
                configs: vec![("retention.ms".into(), "1000".into())],
                auto: false,
            },
            Request::DeleteTopic { name: "orders".into() },
            Request::Offsets { topic: "orders".into(), partition: 2 },
            Request::PartitionStatus { topic: "orders".into(), partition: 2 },
            Request::RegisterBroker { node: 4, address: "10.0.0.4:7000".into(), kafka_address: Some("k:9092".into()) },
            Request::RegisterBroker { node: 4, address: "10.0.0.4:7000".into(), kafka_address: None },
            Request::AllocateProducerIds { node: 4, count: 1000 },
            Request::InitProducerId { producer_id: -1, epoch: -1 },
            Request::InitProducerId { producer_id: 7000, epoch: 3 },
            Request::TransferLeader { topic: "orders".into(), partition: 5, to: 3 },
            Request::BalanceLeaders,
            Request::MovePartition { topic: "t".into(), partition: 2, target: vec![2, 3, 4] },
            Request::AbortMove { topic: "t".into(), partition: 2 },
            Request::MoveStatus { topic: "t".into(), partition: 0 },
            Request::FinishMove { group: 9, replicas: vec![1, 4] },
            Request::Decommission { node: 3 },
            Request::AddNode { node: 4, address: "10.0.0.4:7000".into(), kafka_address: None, voter: true },
            Request::AddNode { node: 5, address: "h:7000".into(), kafka_address: Some("k:9092".into()), voter: false },
        ];
        for req in requests {
            assert_eq!(Request::decode(join(req.encode())).unwrap(), req);
        }
        let entry = Entry::encode(EntryMeta { index: 3, term: 2, kind: 0, base_offset: 9, record_count: 1 }, b"x");
        let responses = [
            Response::Produced { base_offset: 5, record_count: 3 },
            Response::Fetched { log_start_offset: 0, high_watermark: 10, entries: vec![entry.clone(), entry] },
            Response::Status(ClusterView {
                cluster_id: 1,
                node_id: 2,
                role: "leader".into(),
                leader: Some(2),
                members: vec![MemberView { id: 1, address: "127.0.0.1:7000".into(), voter: true, match_index: None }],
                topics: 3,
                under_replicated_partitions: 1,
                ..ClusterView::default()
            }),
            Response::Metadata(ClusterMetadata {
                cluster_id: 1,
                node_id: 2,
                controller: Some(1),
                brokers: vec![BrokerView {
                    id: 1,
                    address: "a:1".into(),
                    kafka_address: Some("a:9092".into()),
                    state: "draining".into(),
                }],
                topics: vec![TopicView {
                    name: "orders".into(),
                    internal: false,
                    partitions: vec![PartitionView {
                        partition: 0,
                        group: 7,
                        leader: Some(1),
                        leader_term: 4,
                        replicas: vec![1, 2, 3],
                        in_sync: vec![1, 2],
                        log_start_offset: Some(0),
                        log_end_offset: None,
                        target: vec![2, 3, 4],
                    }],
                    config: vec![("retention.ms".into(), "-1".into())],
                }],
            }),
            Response::TopicCreated(TopicView { name: "t".into(), ..TopicView::default() }),
            Response::TopicDeleted,
            Response::Offsets { log_start_offset: 3, log_end_offset: 10 },
            Response::BrokerRegistered,
            Response::ProducerIds { first: 3000, count: 1000 },
            Response::ProducerSession { producer_id: 3001, epoch: 0 },
            Response::LeaderTransferring,
            Response::MoveStarted,
            Response::MoveAborted,
            Response::MoveFinished,
            Response::MoveStatus { phase: "learners catching up".into(), behind: vec![4] },
            Response::Decommissioning { moves: 5 },
            Response::LeadersBalanced(vec![
                LeaderMoveView {
                    topic: "a".into(),
                    partition: 1,
                    from: Some(2),
                    to: 1,
                    started: true,
                    note: "".into(),
                },
                LeaderMoveView { topic: "b".into(), partition: 0, from: None, to: 3, started: false, note: "x".into() },
            ]),
            Response::Error(ErrorReply::UnknownTopic("nope".into())),
            Response::Error(ErrorReply::UnknownPartition { topic: "t".into(), partition: 9, count: 8 }),
            Response::Error(ErrorReply::TopicExists("t".into())),
            Response::Error(ErrorReply::Invalid("bad name".into())),
            Response::Error(ErrorReply::NotLeader { leader: Some(1), address: Some("127.0.0.1:7000".into()) }),
            Response::Error(ErrorReply::OffsetOutOfRange { requested: 9, start: 10, end: 20 }),
            Response::Error(ErrorReply::Busy("too many bytes in flight".into())),
            Response::Error(ErrorReply::DiskFull { node: 2, free_bytes: 137 << 20, reserve_bytes: 256 << 20 }),
            Response::Error(ErrorReply::Producer(ProducerError::OutOfOrderSequence {
                producer_id: 7,
                first_seq: 9,
                expected: 5,
            })),
            Response::Error(ErrorReply::Producer(ProducerError::InvalidProducerEpoch {
                producer_id: -2,
                epoch: 1,
                current: 3,
            })),
            Response::Disk(DiskView { free_bytes: 1 << 40, reserve_bytes: 256 << 20 }),
        ];
        for resp in responses {
            assert_eq!(Response::decode(join(resp.encode()), 1 << 20).unwrap(), resp);
        }
    }

    #[test]
    fn every_group_message_round_trips() {
        use crate::groups::*;
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        let member = LeavingMember { member_id: "m-1".into(), group_instance_id: Some("i-1".into()) };
        let calls = [
            GroupCall::Join(JoinRequest {
                group_id: "g".into(),
                member_id: String::new(),
                group_instance_id: None,
                protocol_type: "consumer".into(),
                protocols: vec![Protocol { name: "range".into(), metadata: b("sub") }],
                session_timeout_ms: 10_000,
                rebalance_timeout_ms: -1,
                require_known_member_id: true,
                client_id: "keel".into(),
                client_host: "127.0.0.1".into(),
            }),
            GroupCall::Sync(SyncRequest {
                group_id: "g".into(),
                generation_id: 3,
                member_id: "m-1".into(),
                group_instance_id: Some("i".into()),
                assignments: vec![("m-1".into(), b("a")), ("m-2".into(), Bytes::new())],
            }),
            GroupCall::Heartbeat(HeartbeatRequest {
                group_id: "g".into(),
                generation_id: -1,
                member_id: "m".into(),
                group_instance_id: None,
            }),
            GroupCall::Leave(LeaveRequest { group_id: "g".into(), members: vec![member.clone()] }),
            GroupCall::Commit(CommitRequest {
                group_id: "g".into(),
                generation_id: 2,
                member_id: "m".into(),
                group_instance_id: None,
                offsets: vec![CommitOffset {
                    topic: "t".into(),
                    partition: 5,
                    offset: -1,
                    leader_epoch: 7,
                    metadata: Some("x".into()),
                }],
            }),
            GroupCall::FetchOffsets { group_id: "g".into(), partitions: None },
            GroupCall::FetchOffsets { group_id: "g".into(), partitions: Some(vec![("t".into(), vec![0, 3])]) },
            GroupCall::Describe { group_id: "g".into() },
        ];
        for call in calls {
            let req = Request::Group(call);
            assert_eq!(Request::decode(join(req.encode())).unwrap(), req);
        }
        assert_eq!(Request::decode(join(Request::ListGroups.encode())).unwrap(), Request::ListGroups);
        let remote = GroupError::Remote { code: 22, message: "generation 1 is not 2".into() };
        let answers = [
            GroupAnswer::Join(JoinResponse {
                error: Some(GroupError::MemberIdRequired),
                generation_id: 4,
                protocol_type: Some("consumer".into()),
                protocol_name: None,
                leader: "m-1".into(),
                member_id: "m-2".into(),
                members: vec![JoinedMember { member_id: "m-1".into(), group_instance_id: None, metadata: b("md") }],
            }),
            GroupAnswer::Sync(SyncResponse { error: None, assignment: b("assigned") }),
            GroupAnswer::Heartbeat(HeartbeatResponse { error: Some(remote.clone()) }),
            GroupAnswer::Leave(LeaveResponse {
                error: None,
                members: vec![(member, Some(GroupError::UnknownMemberId))],
            }),
            GroupAnswer::Commit(CommitResponse {
                partitions: vec![PartitionResult { topic: "t".into(), partition: 1, error: Some(remote) }],
            }),
            GroupAnswer::FetchOffsets(vec![FetchedOffset {
                topic: "t".into(),
                partition: 0,
                offset: 42,
                leader_epoch: -1,
                metadata: String::new(),
            }]),
            GroupAnswer::Describe(GroupDescription {
                group_id: "g".into(),
                state: GroupState::Stable,
                protocol_type: "consumer".into(),
                protocol_name: "range".into(),
                members: vec![MemberDescription {
                    member_id: "m".into(),
                    group_instance_id: None,
                    client_id: "keel".into(),
                    client_host: "/127.0.0.1".into(),
                    metadata: b("md"),
                    assignment: b("as"),
                }],
            }),
        ];
        for answer in answers {
            let resp = Response::Group(answer);
            assert_eq!(Response::decode(join(resp.encode()), 1 << 20).unwrap(), resp);
        }
        let listing = GroupListing { group_id: "g".into(), protocol_type: "consumer".into(), state: GroupState::Empty };
        for resp in [
            Response::Groups(vec![listing]),
            Response::Error(ErrorReply::Group(GroupError::InvalidGroupId { rule: "too long" })),
        ] {
            let decoded = Response::decode(join(resp.encode()), 1 << 20).unwrap();
            assert_eq!(decoded.encode(), resp.encode(), "the same bytes again");
        }
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Request::decode(Bytes::from(bytes.clone()));
            let _ = Response::decode(Bytes::from(bytes), 1 << 20);
        }

        #[test]
        fn decoding_a_truncated_response_fails_cleanly(cut in 0usize..200) {
            let entry = Entry::encode(EntryMeta { index: 1, term: 1, kind: 0, base_offset: 0, record_count: 1 }, b"v");
            let fetched = Response::Fetched { log_start_offset: 0, high_watermark: 1, entries: vec![entry] };
            let frame = join(fetched.encode());
            let cut = cut.min(frame.len().saturating_sub(1));
            prop_assert!(Response::decode(frame.slice(..cut), 1 << 20).is_err());
        }
    }
}
