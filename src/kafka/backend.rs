//! The contract between the Kafka front end and the broker service behind it.
//!
//! The front end decodes requests, budgets response sizes, splits produce payloads into
//! batches and encodes answers; everything that decides something about the data (the
//! leader check, batch validation and stamping, offsets, epochs, topic rules) belongs to
//! the backend, so that keel's QUIC front end can serve the same service without copying
//! any of it.
//!
//! The trait is object-safe: the front end holds an `Arc<dyn KafkaBackend>`, and every
//! asynchronous method returns a boxed future (`BackendFuture`), not an `async fn`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;

use crate::groups::{
    CommitRequest, CommitResponse, FetchedOffset, GroupDescription, GroupError, GroupListing, HeartbeatRequest,
    HeartbeatResponse, JoinRequest, JoinResponse, LeaveRequest, LeaveResponse, SyncRequest, SyncResponse,
};
use crate::ids::{NodeId, Offset, Term};

/// What an asynchronous backend method returns.
pub type BackendFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, BackendError>> + Send + 'a>>;

/// The broker service that the Kafka front end serves.
pub trait KafkaBackend: Send + Sync + 'static {
    /// The brokers and the asked-for topics (`None`: every topic). A topic that does not
    /// exist is listed with `UnknownTopicOrPartition`, unless `auto_create` is set and the
    /// cluster allows automatic creation: then the backend creates it with the cluster's
    /// defaults and lists it (its partitions may still have no leader:
    /// `LeaderNotAvailable`, and the client asks again).
    fn metadata(&self, topics: Option<Vec<String>>, auto_create: bool) -> BackendFuture<'_, ClusterMetadata>;

    /// Appends one RecordBatch v2 (`batch.records`: its exact bytes, as the client sent
    /// them) to a partition, on its leader only. The backend checks magic, length, CRC-32C
    /// and the size limits, stamps `baseOffset` and `partitionLeaderEpoch`, and stores the
    /// bytes otherwise unchanged (compressed batches stay compressed).
    ///
    /// Two stages, so that a connection's batches keep their order while their commits
    /// overlap: the returned future resolves once the batch has its place in the
    /// partition's log (every later `produce` call to the same partition lands after it),
    /// and yields a second future that resolves once the batch is committed — durable on a
    /// majority — or failed. The front end awaits the first stage of each batch in request
    /// order before it starts the next request's batches. The commit wait is bounded by
    /// `batch.timeout` (`RequestTimedOut` after it; the batch may still commit later).
    /// Dropping the second future does not withdraw the batch: an acks=0 produce, or one
    /// whose connection closed, is placed all the same.
    fn produce(&self, batch: ProduceBatch) -> BackendFuture<'_, PendingCommit>;

    /// Whole batches of a partition from the one holding `position.offset` on, committed
    /// ones only. Their total size stays within `max_bytes`, except that the first batch is
    /// returned whole even when larger when `first_batch_whole` is set (a consumer must
    /// always be able to make progress). An offset equal to the high watermark yields no
    /// bytes; one outside `[log_start_offset, high_watermark]` is `OffsetOutOfRange`.
    /// Any replica may answer, up to what it has committed.
    fn fetch(
        &self,
        position: PartitionPosition,
        max_bytes: usize,
        first_batch_whole: bool,
    ) -> BackendFuture<'_, FetchedRecords>;

    /// Resolves once the committed end (high watermark) of any of `positions` is past its
    /// `offset`, or after `timeout`, whichever comes first. A long-polling fetch waits here
    /// and then fetches again. Unknown partitions are ignored.
    fn wait_for_commit(&self, positions: Vec<PartitionPosition>, timeout: Duration) -> BackendFuture<'_, ()>;

    /// The offset that `query` names in a partition (ListOffsets). `Latest` answers the
    /// high watermark; `ByTimestamp` the first record whose timestamp is at or after it,
    /// with that record's timestamp (none: `ListedOffset::NONE`).
    fn list_offset(&self, position: PartitionPosition, query: OffsetQuery) -> BackendFuture<'_, ListedOffset>;

    /// OffsetForLeaderEpoch: the largest epoch at or below `epoch` that the partition's
    /// leader knows and the offset after its last record (the start of the next epoch, or
    /// the log end for the current epoch). The front end advertises real leader epochs (the
    /// Raft term), so consumers ask this after a leader change to detect a truncated log.
    fn epoch_end_offset(&self, position: PartitionPosition, epoch: Term) -> BackendFuture<'_, EpochEnd>;

    /// Creates a topic (or, with `validate_only`, only checks that it could be).
    fn create_topic(&self, topic: NewTopic, validate_only: bool, timeout: Duration) -> BackendFuture<'_, ()>;

    /// Deletes a topic and its partitions' data.
    fn delete_topic(&self, name: String, timeout: Duration) -> BackendFuture<'_, ()>;

    /// A topic's settings: what is in force and what was set on the topic itself.
    fn topic_settings(&self, name: String) -> BackendFuture<'_, TopicSettingsInForce>;

    /// The consumer group APIs. A backend without a group coordinator keeps these
    /// defaults, which answer COORDINATOR_NOT_AVAILABLE to every request.
    ///
    /// FindCoordinator: the Kafka listener of the node that coordinates `group_id` now;
    /// `NotCoordinator` or `CoordinatorNotAvailable` while that is unknown.
    fn find_coordinator(&self, group_id: String) -> BackendFuture<'_, Broker> {
        let _ = group_id;
        Box::pin(async { Err(no_coordinator()) })
    }

    /// JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch and
    /// DescribeGroups, served by the group's coordinator (`crate::groups`); a node that is
    /// not it answers `NotCoordinator`.
    fn group_call(&self, call: GroupCall) -> BackendFuture<'_, GroupAnswer> {
        let _ = call;
        Box::pin(async { Err(no_coordinator()) })
    }

    /// ListGroups: the groups every coordinator on this node holds (a Kafka client asks
    /// every broker and merges the answers).
    fn list_groups(&self) -> BackendFuture<'_, Vec<GroupListing>> {
        Box::pin(async { Err(no_coordinator()) })
    }

    /// InitProducerId for an idempotent producer (no transactional id): `current` is
    /// `ProducerSession::NONE` for a new producer, or the session a producer holds, whose
    /// epoch is then bumped (KIP-360). No id at hand yet is `CoordinatorLoadInProgress`.
    fn init_producer_id(&self, current: ProducerSession) -> BackendFuture<'_, ProducerSession>;
}

/// What the default group methods answer.
fn no_coordinator() -> BackendError {
    BackendError::Group(GroupError::CoordinatorNotAvailable { reason: "this backend has no group coordinator".into() })
}

/// A request for a group's coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupCall {
    Join(JoinRequest),
    Sync(SyncRequest),
    Heartbeat(HeartbeatRequest),
    Leave(LeaveRequest),
    Commit(CommitRequest),
    /// The partitions asked for, by topic (`None`: every partition the group has).
    FetchOffsets {
        group_id: String,
        partitions: Option<Vec<(String, Vec<i32>)>>,
    },
    Describe {
        group_id: String,
    },
}

impl GroupCall {
    pub fn group_id(&self) -> &str {
        match self {
            GroupCall::Join(r) => &r.group_id,
            GroupCall::Sync(r) => &r.group_id,
            GroupCall::Heartbeat(r) => &r.group_id,
            GroupCall::Leave(r) => &r.group_id,
            GroupCall::Commit(r) => &r.group_id,
            GroupCall::FetchOffsets { group_id, .. } | GroupCall::Describe { group_id } => group_id,
        }
    }
}

/// The coordinator's answer to a `GroupCall` of the same kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupAnswer {
    Join(JoinResponse),
    Sync(SyncResponse),
    Heartbeat(HeartbeatResponse),
    Leave(LeaveResponse),
    Commit(CommitResponse),
    FetchOffsets(Vec<FetchedOffset>),
    Describe(GroupDescription),
}

/// An idempotent producer's id and epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerSession {
    pub producer_id: i64,
    pub epoch: i16,
}

impl ProducerSession {
    /// No session yet: Kafka's -1, -1.
    pub const NONE: ProducerSession = ProducerSession { producer_id: -1, epoch: -1 };
}

/// The second stage of `KafkaBackend::produce`: resolves once the batch is committed.
pub type PendingCommit = BackendFuture<'static, Appended>;

/// Everything a backend can refuse with. The front end maps each to a Kafka error code in
/// one place (`errors.rs`); the messages are for the operator's logs and for the clients
/// that show them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error("this node is not the leader of the partition; the client should refresh its metadata")]
    NotLeader,
    #[error("the partition has no leader yet (an election is under way); retry shortly")]
    LeaderNotAvailable,
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    #[error("the offset is outside the partition's log")]
    OffsetOutOfRange,
    #[error("corrupt record batch: {0}")]
    CorruptMessage(String),
    #[error("record batch larger than the topic's max.message.bytes")]
    MessageTooLarge,
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    #[error("invalid topic: {0}")]
    InvalidTopic(String),
    #[error("the topic already exists")]
    TopicAlreadyExists,
    #[error("invalid partitions: {0}")]
    InvalidPartitions(String),
    #[error("invalid replication factor: {0}")]
    InvalidReplicationFactor(String),
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("the request goes against the cluster's policy: {0}")]
    PolicyViolation(String),
    #[error("not enough replicas in sync to commit; retry once the cluster has recovered")]
    NotEnoughReplicas,
    #[error("timed out before the batch was committed; it may still commit")]
    RequestTimedOut,
    #[error("the client's leader epoch is older than the leader's; refresh metadata")]
    FencedLeaderEpoch,
    #[error("the client's leader epoch is newer than this node knows; retry shortly")]
    UnknownLeaderEpoch,
    #[error("the node's storage refuses writes: {0}")]
    StorageError(String),
    #[error("no producer id at hand yet; retry shortly")]
    CoordinatorLoadInProgress,
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("out of order sequence: {0}")]
    OutOfOrderSequenceNumber(String),
    #[error("invalid producer epoch: {0}")]
    InvalidProducerEpoch(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// A group coordinator's refusal, with its own Kafka code.
    #[error("{0}")]
    Group(#[from] GroupError),
}

/// A partition and a position in it, with the leader epoch the client believes in (`None`
/// when it sent -1: no check). A backend that sees an older epoch than the leader's answers
/// `FencedLeaderEpoch`, a newer one `UnknownLeaderEpoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionPosition {
    pub topic: String,
    pub partition: u32,
    pub offset: Offset,
    pub current_leader_epoch: Option<Term>,
}

/// One batch to append (see `KafkaBackend::produce`).
#[derive(Debug, Clone)]
pub struct ProduceBatch {
    pub topic: String,
    pub partition: u32,
    /// One whole RecordBatch v2, exactly as the client sent it.
    pub records: Bytes,
    /// Longest wait for the commit (the request's `timeout_ms`).
    pub timeout: Duration,
}

/// A committed batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: Offset,
    /// The partition's log start offset after the append.
    pub log_start_offset: Offset,
}

/// What `fetch` returns.
#[derive(Debug, Clone, Default)]
pub struct FetchedRecords {
    /// Whole stored batches, byte for byte; empty when nothing is past the offset.
    pub records: Bytes,
    /// The offset after the last committed record.
    pub high_watermark: Offset,
    /// keel has no transactions: equal to the high watermark.
    pub last_stable_offset: Offset,
    pub log_start_offset: Offset,
}

/// What ListOffsets asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetQuery {
    Earliest,
    Latest,
    /// Milliseconds since the Unix epoch.
    ByTimestamp(i64),
}

/// What ListOffsets answers; `NONE` when no record is at or after the asked timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffset {
    /// Kafka's -1 when there is no such record.
    pub offset: i64,
    /// The record's timestamp for a query by time, -1 otherwise.
    pub timestamp: i64,
    pub leader_epoch: Option<Term>,
}

impl ListedOffset {
    pub const NONE: ListedOffset = ListedOffset { offset: -1, timestamp: -1, leader_epoch: None };
}

/// What OffsetForLeaderEpoch answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEnd {
    pub epoch: Term,
    pub end_offset: Offset,
}

/// The cluster as a Kafka client sees it.
#[derive(Debug, Clone, Default)]
pub struct ClusterMetadata {
    pub cluster_id: String,
    /// The node a client sends admin requests to (any node can take them in keel).
    pub controller: NodeId,
    pub brokers: Vec<Broker>,
    pub topics: Vec<TopicMetadata>,
}

/// A node's Kafka listener, as clients must reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    pub id: NodeId,
    /// The advertised host (a name or an IP address literal).
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
}

#[derive(Debug, Clone)]
pub struct TopicMetadata {
    pub name: String,
    /// Why the topic is not listed (then `partitions` is empty).
    pub error: Option<BackendError>,
    /// keel's own topics (such as `__consumer_offsets`).
    pub internal: bool,
    pub partitions: Vec<PartitionMetadata>,
}

#[derive(Debug, Clone)]
pub struct PartitionMetadata {
    pub index: u32,
    /// `LeaderNotAvailable` while it has no leader.
    pub error: Option<BackendError>,
    pub leader: Option<NodeId>,
    /// The leader's Raft term.
    pub leader_epoch: Term,
    pub replicas: Vec<NodeId>,
    /// Replicas caught up with the leader.
    pub in_sync: Vec<NodeId>,
    pub offline: Vec<NodeId>,
}

/// A topic to create. Settings left `None` take the cluster's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    /// `None`: the cluster's default.
    pub partitions: Option<u32>,
    /// `None`: the cluster's default.
    pub replication_factor: Option<u16>,
    pub settings: TopicSettingOverrides,
}

/// The settings a topic can set for itself (their Kafka names are in `admin.rs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicSettingOverrides {
    /// Some(None): unlimited.
    pub retention_ms: Option<Option<u64>>,
    /// Some(None): unlimited.
    pub retention_bytes: Option<Option<u64>>,
    pub max_message_bytes: Option<u32>,
    pub segment_bytes: Option<u64>,
}

/// A topic's settings in force (`None` retention: unlimited) and those set on the topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicSettingsInForce {
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    pub max_message_bytes: u32,
    pub segment_bytes: u64,
    pub overrides: TopicSettingOverrides,
}
