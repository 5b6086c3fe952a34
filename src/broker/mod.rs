//! The broker service: what clients ask of a node — produce to a partition, fetch from one,
//! learn the cluster's metadata, create and delete topics — whatever protocol they speak.
//! `server/clients.rs` (keel's own protocol over QUIC) and the Kafka listener are thin
//! front ends over it: neither holds logic the other would have to copy.
//!
//! A partition is served by the node that hosts its group: produce only by its leader,
//! fetch by any replica up to what it committed. A request for a partition this node does
//! not host, or does not lead, is answered with the leader it knows of (`leaders.rs`).

pub mod balance;
pub mod groups;
pub mod kafka;
pub mod leaders;
pub mod members;
pub mod moves;
pub mod producer_ids;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use segments::Entry;
use tokio::sync::{oneshot, watch};
use tracing::{debug, warn};

use crate::metadata::{Applied, Command, MetaError, MetadataState};
use crate::metrics as m;
use crate::raft::NodeId;
use crate::replica::Committed;
use crate::replica::store::is_damage;
use crate::server::config::Limits;
use crate::server::disk::FreeSpace;
use crate::server::group::Event;
use crate::server::metadata::CommandError;
use crate::server::produce::{ProduceError, ProduceResult};
use crate::server::registry::{GroupHandle, Registry};
use leaders::LeaderTable;

/// The metadata group's id.
pub const METADATA_GROUP: u64 = 0;

/// Why a request was not served. Each front end turns it into its own error codes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    #[error("this node does not lead {what} (leader: {})", leader_text(*leader, address))]
    NotLeader { what: String, leader: Option<NodeId>, address: Option<String> },
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    /// A request that breaks a rule (a topic name, a config value, a partition count, a
    /// malformed batch): the message names the rule.
    #[error("{0}")]
    Invalid(String),
    /// A produced batch that breaks a rule of the RecordBatch format or a size limit.
    #[error("{0}")]
    Batch(crate::batch::BatchError),
    #[error("topic {topic:?} has no partition {partition} (it has {count})")]
    UnknownPartition { topic: String, partition: u32, count: u32 },
    #[error("offset {requested} is out of range: valid offsets are {start}..={end} (end = next offset to be written)")]
    OffsetOutOfRange { requested: u64, start: u64, end: u64 },
    /// Not appended; the same request may succeed later.
    #[error("the node is busy: {0}; retry later")]
    Busy(String),
    /// Not appended: the leader's disk is nearly full (`disk_free_bytes_min`).
    #[error("disk nearly full on node {node}: {free_bytes} bytes free, below the {reserve_bytes}-byte reserve")]
    DiskFull { node: NodeId, free_bytes: u64, reserve_bytes: u64 },
    /// Not done, and sending it again will not help (a malformed or oversized batch, a
    /// refused metadata command: the message names the rule).
    #[error("{0}")]
    Refused(String),
    #[error("the outcome is unknown: {0}; the request may or may not have taken effect")]
    OutcomeUnknown(String),
    /// Not appended: an idempotent producer's batch breaks its sequence or epoch.
    #[error(transparent)]
    Producer(crate::producers::ProducerError),
    #[error("the node failed: {0}")]
    Internal(String),
}

fn leader_text(leader: Option<NodeId>, address: &Option<String>) -> String {
    match (leader, address) {
        (Some(id), Some(addr)) => format!("node {id} at {addr}"),
        (Some(id), None) => format!("node {id}"),
        _ => "not known yet".into(),
    }
}

/// Committed entries of a partition, as a fetch returns them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    pub log_start_offset: u64,
    /// The offset after the last committed record this node can serve.
    pub high_watermark: u64,
    /// Entries whose records include the offset asked for and what follows (the first may
    /// start before it). Control entries may be among them.
    pub entries: Vec<Entry>,
}

pub struct Broker {
    pub node_id: NodeId,
    pub cluster_id: u64,
    /// Where this node serves clients, as the other nodes and clients reach it.
    pub own_address: String,
    /// Where this node serves Kafka clients, as they reach it (`--kafka-advertised`).
    pub kafka_address: Option<String>,
    /// How this node asks the metadata leader what only the leader can do.
    pub forwarder: Forwarder,
    pub registry: Arc<Registry>,
    pub metadata: watch::Receiver<Arc<MetadataState>>,
    pub leaders: Arc<LeaderTable>,
    pub limits: Limits,
    pub free_space: FreeSpace,
    /// The producer ids this node hands out (`producer_ids.rs`).
    pub producer_ids: producer_ids::ProducerIds,
    /// The partition moves this node drives as their groups' leader (`moves.rs`).
    pub moves: moves::MoveDriver,
}

/// A client of the cluster that a node uses to ask the metadata group's leader, when it
/// is not the leader itself (to register its addresses, to create a topic a Kafka client
/// asked for). It presents the node's own certificate.
pub struct Forwarder {
    pub tls_dir: std::path::PathBuf,
    client: tokio::sync::OnceCell<crate::client::Client>,
}

/// How long a request forwarded to the metadata leader keeps trying.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a node that lacks a topic a client named waits to learn what the metadata
/// leader already has (`Broker::catch_up_metadata`).
const CATCH_UP_MAX: Duration = Duration::from_secs(2);
/// How often `catch_up_metadata` looks again for a metadata leader that answers.
const CATCH_UP_POLL: Duration = Duration::from_millis(50);
/// How long `catch_up_metadata` waits for one leader's answer: a leader that died is
/// replaced within about an election timeout.
const CATCH_UP_ASK_MAX: Duration = Duration::from_millis(500);

impl Forwarder {
    pub fn new(tls_dir: std::path::PathBuf) -> Forwarder {
        Forwarder { tls_dir, client: tokio::sync::OnceCell::new() }
    }
}

impl Broker {
    /// The client that reaches the metadata leader from here.
    async fn controller_client(&self) -> Result<&crate::client::Client, BrokerError> {
        self.forwarder
            .client
            .get_or_try_init(|| async {
                let mut bootstrap: Vec<String> = self.state().brokers().map(|b| b.address.clone()).collect();
                bootstrap.push(self.own_address.clone());
                let mut config = crate::client::ClientConfig::new(bootstrap, &self.forwarder.tls_dir);
                config.as_node = Some(self.node_id);
                config.timeout = FORWARD_TIMEOUT;
                crate::client::Client::connect(config).await.map_err(|e| BrokerError::Internal(e.to_string()))
            })
            .await
    }

    /// Whether this node leads the metadata group.
    pub fn leads_metadata(&self) -> bool {
        self.metadata_group().is_some_and(|g| g.leader().me)
    }

    /// Registers node `node` as a broker, or updates its addresses; a registered node
    /// keeps its voter flag. On the metadata leader only.
    pub async fn register_broker(
        &self,
        node: NodeId,
        address: String,
        kafka_address: Option<String>,
    ) -> Result<(), BrokerError> {
        self.applied_on_leader().await?;
        let voter = self.state().broker(crate::ids::NodeId(node)).is_some_and(|b| b.voter);
        let command = Command::RegisterBroker { node: crate::ids::NodeId(node), address, kafka_address, voter };
        self.command(command).await.map(|_| ())
    }

    /// Registers this node's own addresses, through the metadata leader wherever it is.
    pub async fn register_self(&self) -> Result<(), BrokerError> {
        if self.leads_metadata() {
            return self.register_broker(self.node_id, self.own_address.clone(), self.kafka_address.clone()).await;
        }
        let client = self.controller_client().await?;
        client
            .register_broker(self.node_id, &self.own_address, self.kafka_address.as_deref())
            .await
            .map_err(|e| BrokerError::Busy(e.to_string()))
    }

    /// Creates a topic through the metadata leader, wherever it is (a Kafka client may ask
    /// any node).
    pub async fn create_topic_anywhere(
        &self,
        name: &str,
        partitions: Option<u32>,
        replicas: Option<u16>,
        configs: &[(String, String)],
    ) -> Result<(), BrokerError> {
        if self.leads_metadata() {
            return self.create_topic(name, partitions, replicas, configs).await;
        }
        let client = self.controller_client().await?;
        client.create_topic(name, partitions, replicas, configs).await.map(|_| ()).map_err(forwarded)
    }

    /// Deletes a topic through the metadata leader, wherever it is.
    pub async fn delete_topic_anywhere(&self, name: &str) -> Result<(), BrokerError> {
        if self.leads_metadata() {
            return self.delete_topic(name).await;
        }
        let client = self.controller_client().await?;
        client.delete_topic(name).await.map_err(forwarded)
    }

    pub fn state(&self) -> Arc<MetadataState> {
        self.metadata.borrow().clone()
    }

    /// Where node `id` serves clients: the broker registry's word, or this node's own.
    pub fn address_of(&self, id: NodeId) -> Option<String> {
        if id == self.node_id {
            return Some(self.own_address.clone());
        }
        self.state().broker(crate::ids::NodeId(id)).map(|b| b.address.clone())
    }

    /// The metadata group's replica on this node.
    pub fn metadata_group(&self) -> Option<Arc<GroupHandle>> {
        self.registry.get(METADATA_GROUP)
    }

    /// Whether this node has applied the metadata group's set-up (the topic `default` is its
    /// last step): before, a node that knows no topic cannot tell "none" from "not yet".
    pub fn metadata_ready(&self) -> bool {
        self.state().topic(crate::server::controller::DEFAULT_TOPIC).is_some()
    }

    /// On the metadata leader, before a command is built from its state: waits until every
    /// entry its log held when asked is committed and applied here (a leader's read index),
    /// so the state includes whatever was committed before, also under a previous leader —
    /// a newly elected leader learns that only once its own first entry commits. Busy if
    /// that takes longer than `CATCH_UP_MAX`; the client retries.
    async fn applied_on_leader(&self) -> Result<(), BrokerError> {
        let group = self.metadata_group().ok_or_else(BrokerError::starting)?;
        // A follower's state may lag: it names the leader rather than judge the request.
        let hint = group.leader();
        if !hint.me {
            return Err(self.metadata_not_leader(hint.leader));
        }
        let status = group.status().await.ok_or_else(|| BrokerError::Busy("the node is shutting down".into()))?;
        let mut committed = group.committed.clone();
        match tokio::time::timeout(CATCH_UP_MAX, committed.wait_for(|c| c.index >= status.last_index)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(BrokerError::Busy("the metadata leader is catching up with its log".into())),
        }
    }

    fn metadata_not_leader(&self, leader: Option<NodeId>) -> BrokerError {
        let address = leader.and_then(|id| self.address_of(id));
        BrokerError::NotLeader { what: "the metadata group".into(), leader, address }
    }

    /// Brings this node's metadata up to the metadata leader's commit index, as it was when
    /// asked (Raft's read index), within `CATCH_UP_MAX`. Called before a node answers that
    /// a topic a client named is unknown: a follower learns a commit only with the leader's
    /// next message, so a topic the leader has just reported created could otherwise be
    /// unknown here for a moment, and a client told "created" would be told "unknown".
    pub async fn catch_up_metadata(&self) {
        let Some(group) = self.metadata_group() else { return };
        let deadline = tokio::time::Instant::now() + CATCH_UP_MAX;
        let Ok(Ok(client)) = tokio::time::timeout_at(deadline, self.controller_client()).await else { return };
        // A node just restarted may know no leader yet, or name one that died: it asks again
        // until a leader answers (bounded), rather than call a topic unknown from a state
        // that may lack it.
        let view = loop {
            let hint = group.leader();
            if hint.me {
                return;
            }
            if let Some(addr) = hint.leader.and_then(|id| self.address_of(id)) {
                let ask_by = deadline.min(tokio::time::Instant::now() + CATCH_UP_ASK_MAX);
                match tokio::time::timeout_at(ask_by, client.status_from(&addr)).await {
                    Ok(Ok(view)) => break view,
                    Ok(Err(e)) => debug!(%addr, error = %e, "cannot ask the metadata leader its commit index"),
                    Err(_) => debug!(%addr, "the metadata leader did not say its commit index in time"),
                }
            }
            if tokio::time::Instant::now() + CATCH_UP_POLL >= deadline {
                return debug!("no metadata leader answered in time");
            }
            tokio::time::sleep(CATCH_UP_POLL).await;
        };
        let mut committed = group.committed.clone();
        let caught_up = tokio::time::timeout_at(deadline, committed.wait_for(|c| c.index >= view.commit_index)).await;
        debug!(leader_commit = view.commit_index, caught_up = caught_up.is_ok(), "metadata caught up");
    }

    /// The group of `topic`/`partition`.
    pub fn group_id(&self, topic: &str, partition: u32) -> Result<u64, BrokerError> {
        if !self.metadata_ready() {
            return Err(BrokerError::starting());
        }
        let state = self.state();
        let partitions = state.partitions(topic).ok_or_else(|| BrokerError::UnknownTopic(topic.into()))?;
        let count = partitions.len() as u32;
        let p = partitions.get(partition as usize).ok_or_else(|| BrokerError::UnknownPartition {
            topic: topic.into(),
            partition,
            count,
        })?;
        Ok(p.group.get())
    }

    /// This node's replica of `topic`/`partition`, or where to go instead.
    pub fn replica(&self, topic: &str, partition: u32) -> Result<Arc<GroupHandle>, BrokerError> {
        let group = self.group_id(topic, partition)?;
        self.registry.get(group).ok_or_else(|| self.not_leader(group, format!("{topic}/{partition}")))
    }

    fn not_leader(&self, group: u64, what: String) -> BrokerError {
        let leader = self.leaders.leader(group);
        BrokerError::NotLeader { what, leader, address: leader.and_then(|id| self.address_of(id)) }
    }

    /// Appends one Kafka RecordBatch v2 to `topic`/`partition` through this node, which
    /// must lead it: the batch is checked (magic, length, CRC-32C, records, sizes) and
    /// stamped with its base offset and the leader's term by the group, then stored as it
    /// came. Answers with the base offset once the entry is committed. `stream` is the
    /// producer's ordered stream (0: none): after one of its batches is refused, its later
    /// ones are too.
    pub async fn produce(
        &self,
        topic: &str,
        partition: u32,
        batch: Bytes,
        stream: u64,
    ) -> Result<PendingProduce, BrokerError> {
        let received = Instant::now();
        metrics::counter!(m::PRODUCE_REQUESTS).increment(1);
        let refuse = |kind: &'static str, err: BrokerError| {
            m::produce_error(kind);
            err
        };
        let group = self.replica(topic, partition).map_err(|e| refuse(kind_of(&e), e))?;
        let record_bytes_max =
            self.state().effective_config(topic).map_or(self.limits.record_bytes_max, |c| c.max_message_bytes as usize);
        let limits = crate::batch::Limits { batch_bytes_max: self.limits.batch_bytes_max, record_bytes_max };
        let info = crate::batch::check(&batch, &limits).map_err(|e| {
            let kind = if e.is_too_large() { "too_large" } else { "malformed" };
            refuse(kind, BrokerError::Batch(e))
        })?;
        if !group.leader().me {
            return Err(refuse("not_leader", self.not_leader(group.id, format!("{topic}/{partition}"))));
        }
        if let Some(disk) = self.free_space.too_low() {
            let (free_bytes, reserve_bytes) = (disk.free_bytes, disk.reserve_bytes);
            return Err(refuse("disk_full", BrokerError::DiskFull { node: self.node_id, free_bytes, reserve_bytes }));
        }
        let (reply, rx) = oneshot::channel();
        let bytes = batch.len();
        let event = Event::Propose { payload: batch, record_count: info.record_count, stream, received, reply };
        if group.events.send(event).await.is_err() {
            return Err(refuse("shutting_down", BrokerError::Busy("the node is shutting down".into())));
        }
        Ok(PendingProduce { reply: rx, bytes })
    }

    /// The answer to a produce once its group replied.
    pub async fn produced(
        &self,
        topic: &str,
        partition: u32,
        placed: PendingProduce,
    ) -> Result<(u64, u32), BrokerError> {
        match placed.reply.await {
            Ok(Ok((base_offset, record_count))) => {
                m::topic_produced(topic, record_count, placed.bytes);
                Ok((base_offset, record_count))
            }
            Ok(Err(e)) => Err(match e {
                ProduceError::NotLeader { leader } => BrokerError::NotLeader {
                    what: format!("{topic}/{partition}"),
                    leader,
                    address: leader.and_then(|id| self.address_of(id)),
                },
                ProduceError::Busy(why) => BrokerError::Busy(why),
                ProduceError::Refused(why) => BrokerError::Refused(why),
                ProduceError::OutcomeUnknown(why) => BrokerError::OutcomeUnknown(why),
                ProduceError::Producer(e) => BrokerError::Producer(e),
            }),
            Err(_) => Err(BrokerError::OutcomeUnknown("the node stopped".into())),
        }
    }

    /// Committed entries of `topic`/`partition` from `offset`, from this node's replica;
    /// waits up to `max_wait` at the end of the log. The front ends count the bytes they
    /// send (`metrics::fetched`): a Kafka fetch may read a partition several times.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
        max_wait: Duration,
    ) -> Result<Fetched, BrokerError> {
        metrics::counter!(m::FETCH_REQUESTS).increment(1);
        let group = self.replica(topic, partition)?;
        let deadline = tokio::time::Instant::now() + max_wait.min(self.limits.fetch_wait_max);
        let max_bytes = max_bytes.clamp(1, self.limits.fetch_bytes_max);
        let mut committed = group.committed.clone();
        let mut waited = false;
        loop {
            let c = *committed.borrow_and_update();
            if let Some(fetched) = read_committed(&group, offset, max_bytes, c)? {
                return Ok(fetched);
            }
            if !waited {
                waited = true;
                metrics::counter!(m::FETCH_LONG_POLLS).increment(1);
            }
            let log_start_offset = group.log.read().start_offset();
            let empty = Fetched { log_start_offset, high_watermark: c.next_offset, entries: vec![] };
            match tokio::time::timeout_at(deadline, committed.changed()).await {
                Ok(Ok(())) => {}
                _ => return Ok(empty),
            }
        }
    }

    /// Creates a topic through this node, which must lead the metadata group: placement is
    /// computed from the metadata as it stands, and checked again when applied.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: Option<u32>,
        replicas: Option<u16>,
        configs: &[(String, String)],
    ) -> Result<(), BrokerError> {
        // Before the set-up is applied the registry may list no broker yet: placement
        // would fail for want of nodes. The client retries `Busy`.
        self.applied_on_leader().await?;
        if !self.metadata_ready() {
            return Err(BrokerError::starting());
        }
        let mut config = crate::metadata::TopicConfig::default();
        for (key, value) in configs {
            config.set_text(key, value).map_err(meta_error)?;
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let command =
            self.state().create_topic(name, partitions, replicas, config, false, now as u64).map_err(meta_error)?;
        self.command(command).await.map(|_| ())
    }

    /// Deletes a topic through this node, which must lead the metadata group; every node
    /// then deletes its replicas' files.
    pub async fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        self.applied_on_leader().await?;
        if self.state().topic(name).is_none() {
            return Err(BrokerError::UnknownTopic(name.into()));
        }
        if name == crate::server::controller::DEFAULT_TOPIC {
            let why =
                "the topic default is the cluster's own (clients use it when they name no topic): it cannot be deleted";
            return Err(BrokerError::Invalid(why.into()));
        }
        self.command(Command::DeleteTopic { name: name.into() }).await.map(|_| ())
    }

    /// Proposes a metadata command through this node, which must lead the metadata group.
    pub async fn command(&self, command: Command) -> Result<Applied, BrokerError> {
        let group = self.metadata_group().ok_or_else(|| BrokerError::Busy("the node is starting".into()))?;
        let (reply, rx) = oneshot::channel();
        group
            .events
            .send(Event::ProposeCommand { command, reply })
            .await
            .map_err(|_| BrokerError::Busy("the node is shutting down".into()))?;
        match rx.await {
            Ok(Ok(applied)) => Ok(applied),
            Ok(Err(CommandError::NotLeader { leader })) => {
                Err(self.metadata_not_leader(leader.or(group.leader().leader)))
            }
            Ok(Err(CommandError::Busy(why))) => Err(BrokerError::Busy(why)),
            Ok(Err(CommandError::Refused(e))) => Err(meta_error(e)),
            Ok(Err(CommandError::OutcomeUnknown(why))) => Err(BrokerError::OutcomeUnknown(why)),
            Err(_) => Err(BrokerError::OutcomeUnknown("the node stopped".into())),
        }
    }
}

/// A metadata rule broken: typed where a client acts on it, else the rule's words.
impl BrokerError {
    /// The answer of a node that has not applied the metadata group's set-up yet.
    pub fn starting() -> BrokerError {
        BrokerError::Busy("the cluster is starting: its metadata is not set up yet".into())
    }
}

/// The metadata leader's refusal of a forwarded request, as this node answers it.
fn forwarded(e: crate::client::ClientError) -> BrokerError {
    use crate::client::ClientError;
    match e {
        ClientError::TopicExists(t) => BrokerError::TopicExists(t),
        ClientError::UnknownTopic(t) => BrokerError::UnknownTopic(t),
        ClientError::Invalid(why) => BrokerError::Invalid(why),
        e => BrokerError::Busy(e.to_string()),
    }
}

fn meta_error(e: MetaError) -> BrokerError {
    match e {
        MetaError::TopicExists { name } => BrokerError::TopicExists(name),
        MetaError::UnknownTopic { name } => BrokerError::UnknownTopic(name),
        other => BrokerError::Invalid(other.to_string()),
    }
}

/// A batch handed to its partition's group: `Broker::produced` waits for its answer.
pub struct PendingProduce {
    reply: oneshot::Receiver<ProduceResult>,
    /// The batch's size, counted per topic once it is acknowledged.
    bytes: usize,
}

/// The `kind` label of `keel_produce_errors_total` for a refusal before proposing.
fn kind_of(e: &BrokerError) -> &'static str {
    match e {
        BrokerError::NotLeader { .. } => "not_leader",
        BrokerError::Busy(_) => "busy",
        _ => "refused",
    }
}

/// The entries holding `offset` and after, up to the commit; `None` when there is nothing
/// committed at `offset` yet.
fn read_committed(
    group: &GroupHandle,
    offset: u64,
    max_bytes: usize,
    c: Committed,
) -> Result<Option<Fetched>, BrokerError> {
    let log = group.log.read();
    let start = log.start_offset();
    let out_of_range = || BrokerError::OffsetOutOfRange { requested: offset, start, end: c.next_offset };
    if offset < start {
        return Err(out_of_range());
    }
    if offset >= c.next_offset {
        // Beyond what this node committed: wait if the log (or the cluster) may get there.
        return if offset > c.next_offset && offset > log.next_offset() { Err(out_of_range()) } else { Ok(None) };
    }
    let index = match log.locate_offset(offset) {
        Ok(Some(index)) => index,
        Ok(None) => return Ok(None),
        Err(segments::Error::OffsetBelowStart { .. }) => return Err(out_of_range()),
        Err(e) => return Err(read_failed(group, e, log.first_index())),
    };
    let mut entries: Vec<Entry> = Vec::new();
    if let Err(e) = log.read(index, max_bytes, &mut entries) {
        return Err(read_failed(group, e, index));
    }
    entries.retain(|e| e.index() <= c.index);
    if entries.is_empty() {
        return Ok(None);
    }
    Ok(Some(Fetched { log_start_offset: start, high_watermark: c.next_offset, entries }))
}

/// A failed read; damage is reported to the group, which repairs from `from_index` on.
fn read_failed(group: &GroupHandle, e: segments::Error, from_index: u64) -> BrokerError {
    if is_damage(&e) {
        let _ = group.events.try_send(Event::Corrupt { from_index, detail: e.to_string() });
    }
    warn!(error = %e, "fetch failed");
    BrokerError::Internal(format!("{e}; this node is repairing its log, read from another node"))
}

/// Refuses a client's produce to an internal topic: its records are keel's own state (a
/// checkpoint marker a client wrote to `__consumer_offsets` would let every replica drop
/// committed offsets), so only keel writes them.
pub fn check_client_produce(topic: &str) -> Result<(), BrokerError> {
    if !topic.starts_with(crate::metadata::INTERNAL_PREFIX) {
        return Ok(());
    }
    m::produce_error("refused");
    Err(BrokerError::Invalid(format!("topic {topic:?} is internal: only keel writes it; produce to another topic")))
}
