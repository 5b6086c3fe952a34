//! The Rust client library: produce and consume records, read cluster metadata.
//!
//! ```no_run
//! # async fn demo() -> Result<(), keel::client::ClientError> {
//! use keel::batch::Record;
//! use keel::client::{Client, ClientConfig, Offset, ProducerConfig};
//!
//! let client = Client::connect(ClientConfig::new(["127.0.0.1:7000"], "./keel-data/tls")).await?;
//! client.create_topic("orders", Some(8), None, &[]).await?;
//! let producer = client.producer("orders", ProducerConfig::default());
//! let delivered = producer.send(Record::new("hello").with_key("customer-7")).await.await.unwrap()?;
//! let mut consumer = client.consumer_of("orders", delivered.partition, Offset::At(delivered.offset));
//! let batch = consumer.poll().await?;
//! assert_eq!(batch[0].1.value_bytes(), b"hello");
//! # Ok(()) }
//! ```
//!
//! A topic has partitions, each a replicated log of its own; a record with a key always goes
//! to the same partition (Kafka's murmur2 of the key), records without one are spread over
//! the partitions in batches. Offsets are per partition.
//!
//! Delivery is **at least once**. A produce is acknowledged only once its records are
//! committed (fsync'd on a majority). When a request fails in a way that proves the
//! records were not appended (the node was not the leader, the node was busy, the
//! connection could not be made), the client retries it by itself. When the outcome
//! cannot be known (the connection broke after the request left, the leader lost its
//! leadership before committing), the error is [`ClientError::OutcomeUnknown`]: the
//! records may or may not be in the log, and producing them again may duplicate them.
//!
//! **Every call has a deadline**, [`ClientConfig::timeout`] (120 s by default, as Kafka's
//! `delivery.timeout.ms`): a call retries what failed without effect until then, and then
//! returns [`ClientError::TimedOut`] (nothing was appended) — or `OutcomeUnknown` when the
//! last request had left and got no answer. A record given to a [`Producer`] gets its
//! answer within `timeout` of joining a batch; [`Consumer::poll`] returns within `timeout`
//! plus its max wait. A certificate mistake ends a call at once with [`ClientError::Certificate`].
//! While a call waits, [`Client::notices`] says why (no node answers, no leader, the
//! leader's disk is nearly full).

mod conn;
mod consumer;
mod error;
mod group;
mod idempotence;
mod notice;
pub mod partitioner;
mod producer;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use consumer::{Consumer, Offset};
pub use error::{CertificateError, ClientError};
pub use group::{GroupConfig, GroupConsumer, GroupRecord, GroupReport};
pub use notice::Notice;
pub use producer::{Ack, Delivered, Producer, ProducerConfig};
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::batch::Record;
use crate::net::client_codec::{
    ClusterMetadata, ClusterView, DiskView, ErrorReply, LeaderMoveView, Request, Response, TopicView,
};
use conn::{Failure, Nodes, resolve};

/// The topic every cluster has from its first start (one partition): what `produce` and
/// `consumer` use when no topic is named.
pub const DEFAULT_TOPIC: &str = "default";
/// How long `metadata_from_leader` waits for one node's answer.
const LEADER_ASK_MAX: Duration = Duration::from_secs(2);

/// How to reach a cluster, and how long to try.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `host:port` of one or more nodes.
    pub bootstrap: Vec<String>,
    /// Directory with ca.pem (and client.pem/client.key, presented when present).
    pub tls_dir: PathBuf,
    /// How long one request may go unanswered; a produce request's outcome is then unknown.
    pub request_timeout: Duration,
    /// How long a QUIC handshake with a node may take before that node counts as not
    /// answering (without a bound, a node that is down is noticed only at the 4 s idle
    /// timeout).
    pub connect_timeout: Duration,
    /// The deadline of every call (see the module documentation): failures known to leave
    /// the log untouched are retried until then.
    pub timeout: Duration,
    /// A node of the cluster asking as a client presents its own node certificate
    /// (node-ID.pem in `tls_dir`) instead of client.pem.
    pub as_node: Option<u64>,
    /// One-batch produce calls (`produce_to`) as an idempotent producer: a batch whose
    /// outcome is unknown is sent again as the same batch, and appended once (on by default).
    pub idempotence: bool,
}

impl ClientConfig {
    pub fn new<S: Into<String>>(bootstrap: impl IntoIterator<Item = S>, tls_dir: impl Into<PathBuf>) -> ClientConfig {
        ClientConfig {
            bootstrap: bootstrap.into_iter().map(Into::into).collect(),
            tls_dir: tls_dir.into(),
            request_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(120),
            as_node: None,
            idempotence: true,
        }
    }
}

/// A connection pool to one cluster. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    nodes: Nodes,
    config: ClientConfig,
    /// The idle producer sessions of one-batch produce calls.
    sessions: std::sync::Arc<idempotence::SessionPool>,
    /// The node that last served a request of the metadata leader, tried first: with a node
    /// down, starting from the known list would wait out its timeout on every call.
    controller: std::sync::Arc<std::sync::Mutex<Option<SocketAddr>>>,
}

impl Client {
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let nodes = Nodes::new(&config)?;
        Ok(Client { nodes, config, sessions: Default::default(), controller: Default::default() })
    }

    /// What the client has to say while it keeps trying (see [`Notice`]); a subscriber
    /// that falls far behind misses the oldest.
    pub fn notices(&self) -> broadcast::Receiver<Notice> {
        self.nodes.notices().subscribe()
    }

    /// The brokers and topics as the first node to answer knows them (every known node is
    /// asked at once); `None` lists every topic (internal ones are flagged).
    pub async fn metadata(&self, topics: Option<&[&str]>) -> Result<ClusterMetadata, ClientError> {
        let deadline = Instant::now() + self.config.timeout;
        let topics = topics.map(|t| t.iter().map(|s| s.to_string()).collect());
        self.nodes.any_metadata(topics, deadline).await
    }

    /// The metadata as the metadata group's leader has it, for what `keel topic list` and
    /// `describe` show: another node learns of a topic created or deleted a moment after
    /// the leader reported it done. The first node to answer names the leader; when none
    /// does, or the leader does not answer, any node's metadata is given (a node that lacks
    /// a topic named in `topics` first catches up with the metadata leader, bounded).
    pub async fn metadata_from_leader(&self, topics: Option<&[&str]>) -> Result<ClusterMetadata, ClientError> {
        let bound = self.config.request_timeout.min(LEADER_ASK_MAX);
        let names: Option<Vec<String>> = topics.map(|t| t.iter().map(|s| s.to_string()).collect());
        for addr in self.nodes.known() {
            let Ok(view) = self.nodes.status_at(&addr.to_string(), &Request::Status, bound).await else { continue };
            let Some(leader) = view.leader_address().and_then(|a| resolve(a).ok()) else { break };
            if let Ok(metadata) = self.nodes.metadata_of(leader, names.clone(), bound).await {
                return Ok(metadata);
            }
            break;
        }
        self.metadata(topics).await
    }

    /// How many partitions `topic` has.
    pub async fn partitions(&self, topic: &str) -> Result<u32, ClientError> {
        self.partitions_by(topic, Instant::now() + self.config.timeout).await
    }

    async fn partitions_by(&self, topic: &str, deadline: Instant) -> Result<u32, ClientError> {
        let metadata = self.nodes.any_metadata(Some(vec![topic.to_string()]), deadline).await?;
        let t = metadata.topic(topic).ok_or_else(|| ClientError::UnknownTopic(topic.into()))?;
        Ok(t.partitions.len() as u32)
    }

    /// The view of the node at `addr` of the metadata group and the cluster (what `keel
    /// status` shows), within `request_timeout` (handshake included).
    pub async fn status_from(&self, addr: &str) -> Result<ClusterView, ClientError> {
        self.nodes.status_at(addr, &Request::Status, self.config.request_timeout).await
    }

    /// The view of the node at `addr` of its replica of `topic`/`partition`: its role,
    /// term, indexes and offsets, and the group's members.
    pub async fn partition_status_from(
        &self,
        addr: &str,
        topic: &str,
        partition: u32,
    ) -> Result<ClusterView, ClientError> {
        let request = Request::PartitionStatus { topic: topic.into(), partition };
        self.nodes.status_at(addr, &request, self.config.request_timeout).await
    }

    /// The free disk space of the node at `addr` and its reserve, within `request_timeout`.
    pub async fn disk_from(&self, addr: &str) -> Result<DiskView, ClientError> {
        self.nodes.disk_at(addr, self.config.request_timeout).await
    }

    /// The first offset `topic`/`partition` still holds (retention moves it), from any replica.
    pub async fn start_offset(&self, topic: &str, partition: u32) -> Result<u64, ClientError> {
        Ok(self.offsets(topic, partition, false).await?.0)
    }

    /// The offset after the last committed record of `topic`/`partition`, from its leader:
    /// a follower's may lag it by a heartbeat.
    pub async fn end_offset(&self, topic: &str, partition: u32) -> Result<u64, ClientError> {
        Ok(self.offsets(topic, partition, true).await?.1)
    }

    /// (log start, log end) of `topic`/`partition`, from its leader.
    pub async fn log_offsets(&self, topic: &str, partition: u32) -> Result<(u64, u64), ClientError> {
        self.offsets(topic, partition, true).await
    }

    /// (log start, log end) of a partition, from its leader when `from_leader`, else from
    /// the first node that answers.
    async fn offsets(&self, topic: &str, partition: u32, from_leader: bool) -> Result<(u64, u64), ClientError> {
        let deadline = Instant::now() + self.config.timeout;
        let key = (topic.to_string(), partition);
        let request = Request::Offsets { topic: topic.into(), partition };
        let mut last = String::from("no node answered");
        loop {
            let targets = if from_leader {
                vec![match self.nodes.leader(&key) {
                    Some(addr) => addr,
                    None => self.nodes.find_leader(&key, deadline).await?,
                }]
            } else {
                self.nodes.known()
            };
            for addr in targets {
                let timeout = self.config.request_timeout.min(deadline.saturating_duration_since(Instant::now()));
                match self.nodes.request(addr, &request, timeout).await {
                    Ok(Response::Offsets { log_start_offset, log_end_offset }) => {
                        return Ok((log_start_offset, log_end_offset));
                    }
                    Ok(Response::Error(ErrorReply::NotLeader { .. } | ErrorReply::Busy(_))) => {
                        self.nodes.forget_leader(&key, addr);
                        last = format!("{addr} does not host {topic}/{partition}");
                    }
                    Ok(Response::Error(e)) => return Err(e.into()),
                    Ok(other) => last = format!("unexpected answer from {addr}: {other:?}"),
                    Err(Failure::Certificate(e)) => return Err(e.into()),
                    Err(f) => {
                        self.nodes.forget_leader(&key, addr);
                        last = f.message();
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(ClientError::TimedOut { after: self.config.timeout, last });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Appends `records` as one batch to the topic `default`; returns the offset of the
    /// first once committed.
    pub async fn produce(&self, records: Vec<Record>) -> Result<u64, ClientError> {
        self.produce_to(DEFAULT_TOPIC, 0, records).await
    }

    /// Appends `records` as one batch to `topic`/`partition`; returns the offset of the
    /// first once committed.
    pub async fn produce_to(&self, topic: &str, partition: u32, records: Vec<Record>) -> Result<u64, ClientError> {
        self.produce_compressed(topic, partition, records, crate::batch::Compression::None).await
    }

    /// `produce_to`, with the batch compressed.
    pub async fn produce_compressed(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<Record>,
        compression: crate::batch::Compression,
    ) -> Result<u64, ClientError> {
        let key = (topic.to_string(), partition);
        producer::produce_batch(self, &key, &records, compression).await
    }

    /// A producer to `topic` that batches records and keeps several batches in flight.
    pub fn producer(&self, topic: &str, config: ProducerConfig) -> Producer {
        Producer::new(self.clone(), topic, config)
    }

    /// A consumer of the topic `default`'s partition from `from`.
    pub fn consumer(&self, from: Offset) -> Consumer {
        self.consumer_of(DEFAULT_TOPIC, 0, from)
    }

    /// A consumer reading committed records of `topic`/`partition` from `from`.
    pub fn consumer_of(&self, topic: &str, partition: u32, from: Offset) -> Consumer {
        Consumer::new(self.clone(), (topic.to_string(), partition), from)
    }

    /// Creates a topic (`None`: the cluster's default partitions and replication factor);
    /// `configs` are Kafka's config keys with their values (`retention.ms` = `86400000`).
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: Option<u32>,
        replicas: Option<u16>,
        configs: &[(String, String)],
    ) -> Result<TopicView, ClientError> {
        let request =
            Request::CreateTopic { name: name.into(), partitions, replicas, configs: configs.to_vec(), auto: false };
        match self.to_controller(&request).await? {
            Response::TopicCreated(topic) => Ok(topic),
            other => Err(ClientError::Unavailable(format!("unexpected answer: {other:?}"))),
        }
    }

    /// A topic's partition count, the topic created with the cluster's defaults if it does
    /// not exist and the cluster creates topics on first use (`auto_create_topics`).
    pub(super) async fn partitions_or_create(&self, topic: &str, deadline: Instant) -> Result<u32, ClientError> {
        match self.partitions_by(topic, deadline).await {
            Err(ClientError::UnknownTopic(_)) => {
                let request = Request::CreateTopic {
                    name: topic.into(),
                    partitions: None,
                    replicas: None,
                    configs: Vec::new(),
                    auto: true,
                };
                match self.to_controller(&request).await {
                    Ok(Response::TopicCreated(created)) => Ok(created.partitions.len() as u32),
                    // Created meanwhile by another producer.
                    Err(ClientError::TopicExists(_)) => self.partitions_by(topic, deadline).await,
                    Ok(other) => Err(ClientError::Unavailable(format!("unexpected answer: {other:?}"))),
                    Err(e) => Err(e),
                }
            }
            other => other,
        }
    }

    /// Registers node `node` as a broker, or updates its addresses (where it serves peers and
    /// keel clients, and Kafka clients if it does).
    pub async fn register_broker(
        &self,
        node: u64,
        address: &str,
        kafka_address: Option<&str>,
    ) -> Result<(), ClientError> {
        let request =
            Request::RegisterBroker { node, address: address.into(), kafka_address: kafka_address.map(str::to_string) };
        match self.to_controller(&request).await? {
            Response::BrokerRegistered => Ok(()),
            other => Err(ClientError::Unavailable(format!("unexpected answer: {other:?}"))),
        }
    }

    /// Registers node `node` and adds it to the metadata group as a learner (`keel node add`,
    /// and a node that joins); with `voter`, it is promoted to a metadata voter once caught up.
    pub async fn add_node(
        &self,
        node: u64,
        address: &str,
        kafka_address: Option<&str>,
        voter: bool,
    ) -> Result<(), ClientError> {
        let kafka_address = kafka_address.map(str::to_string);
        let request = Request::AddNode { node, address: address.into(), kafka_address, voter };
        match self.to_controller(&request).await? {
            Response::BrokerRegistered => Ok(()),
            other => Err(ClientError::Unavailable(format!("unexpected answer: {other:?}"))),
        }
    }

    /// Allocates a block of `count` producer ids to node `node` (a node asks for itself).
    pub async fn allocate_producer_ids(&self, node: u64, count: u32) -> Result<(u64, u32), ClientError> {
        match self.to_controller(&Request::AllocateProducerIds { node, count }).await? {
            Response::ProducerIds { first, count } => Ok((first, count)),
            other => Err(ClientError::Unavailable(format!("unexpected answer: {other:?}"))),
        }
    }

    /// Asks the node at `addr`, which must lead `topic`/`partition`, to hand leadership to
    /// replica `to` (a voter caught up with the commit); answers once the transfer started.
    pub async fn transfer_leader_at(
        &self,
        addr: &str,
        topic: &str,
        partition: u32,
        to: u64,
    ) -> Result<(), ClientError> {
        let request = Request::TransferLeader { topic: topic.into(), partition, to };
        match self.nodes.request(resolve(addr)?, &request, self.config.request_timeout).await {
            Ok(Response::LeaderTransferring) => Ok(()),
            Ok(Response::Error(e)) => Err(e.into()),
            Ok(other) => Err(ClientError::Unavailable(format!("unexpected answer from {addr}: {other:?}"))),
            Err(f) => Err(f.into_read_error()),
        }
    }

    /// Moves leadership of every partition not led by its preferred replica back to it,
    /// where that replica is caught up (`keel leader balance`): what was started for each.
    pub async fn balance_leaders(&self) -> Result<Vec<LeaderMoveView>, ClientError> {
        match self.to_controller(&Request::BalanceLeaders).await? {
            Response::LeadersBalanced(moves) => Ok(moves),
            other => Err(ClientError::Unavailable(format!("unexpected answer: {other:?}"))),
        }
    }

    /// Starts moving `topic`/`partition` to the replicas `target` (first = preferred
    /// leader). Answers once the metadata recorded the move; the group's leader does it.
    pub async fn move_partition(&self, topic: &str, partition: u32, target: &[u64]) -> Result<(), ClientError> {
        let request = Request::MovePartition { topic: topic.into(), partition, target: target.to_vec() };
        match self.to_controller(&request).await? {
            Response::MoveStarted => Ok(()),
            other => Err(ClientError::Unavailable(format!("unexpected answer: {other:?}"))),
        }
    }

    /// Abandons the move of `topic`/`partition`, through its leader; refused once the move
    /// entered joint consensus (the message says where it stands).
    pub async fn abort_move(&self, topic: &str, partition: u32) -> Result<(), ClientError> {
        let request = Request::AbortMove { topic: topic.into(), partition };
        match self.to_named_node(&request, Duration::ZERO, false).await? {
            Response::MoveAborted => Ok(()),
            other => Err(ClientError::Unavailable(format!("unexpected answer: {other:?}"))),
        }
    }

    /// Where the move of `topic`/`partition` stands, as its leader sees it: the phase
    /// (`None`: no move) and the learners not caught up yet.
    pub async fn move_status(&self, topic: &str, partition: u32) -> Result<Option<(String, Vec<u64>)>, ClientError> {
        let request = Request::MoveStatus { topic: topic.into(), partition };
        match self.to_named_node(&request, Duration::ZERO, true).await? {
            Response::MoveStatus { phase, .. } if phase.is_empty() => Ok(None),
            Response::MoveStatus { phase, behind } => Ok(Some((phase, behind))),
            other => Err(ClientError::Unavailable(format!("unexpected answer: {other:?}"))),
        }
    }

    /// Records the end of a move of group `group` (a node, leading the group, asks).
    pub async fn finish_move(&self, group: u64, replicas: &[u64]) -> Result<(), ClientError> {
        let request = Request::FinishMove { group, replicas: replicas.to_vec() };
        match self.to_controller(&request).await? {
            Response::MoveFinished => Ok(()),
            other => Err(ClientError::Unavailable(format!("unexpected answer: {other:?}"))),
        }
    }

    /// Starts decommissioning node `node`: its replicas move to the other active nodes and
    /// it is marked removed once it hosts nothing. Answers the partition replicas it still
    /// hosts, each moving off.
    pub async fn decommission(&self, node: u64) -> Result<u32, ClientError> {
        match self.to_controller(&Request::Decommission { node }).await? {
            Response::Decommissioning { moves } => Ok(moves),
            other => Err(ClientError::Unavailable(format!("unexpected answer: {other:?}"))),
        }
    }

    /// Deletes a topic and, on every node, its partitions' data.
    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        match self.to_controller(&Request::DeleteTopic { name: name.into() }).await? {
            Response::TopicDeleted => Ok(()),
            other => Err(ClientError::Unavailable(format!("unexpected answer: {other:?}"))),
        }
    }

    /// A request the metadata group's leader serves: sent to any node, then to the one it
    /// names, until the deadline. Only answers proving nothing was done are retried.
    async fn to_controller(&self, request: &Request) -> Result<Response, ClientError> {
        self.to_named_node_from(request, Duration::ZERO, false, Some(&self.controller)).await
    }

    /// A request that one node serves and the others redirect to (`NotLeader` with its
    /// address): sent to any node, then to the one it names, until the deadline, each
    /// attempt allowed `wait` beyond the request timeout. Answers proving nothing was done
    /// are retried; so is a request whose connection broke after it left, if `repeatable`.
    async fn to_named_node(
        &self,
        request: &Request,
        wait: Duration,
        repeatable: bool,
    ) -> Result<Response, ClientError> {
        self.to_named_node_from(request, wait, repeatable, None).await
    }

    /// [`Self::to_named_node`], trying first the node `hint` holds and remembering there
    /// the node that served.
    async fn to_named_node_from(
        &self,
        request: &Request,
        wait: Duration,
        repeatable: bool,
        hint: Option<&std::sync::Mutex<Option<SocketAddr>>>,
    ) -> Result<Response, ClientError> {
        let deadline = Instant::now() + self.config.timeout;
        let mut target = hint.and_then(|h| h.lock().expect("hint lock").take());
        let mut last = String::from("no node answered");
        let remember = |addr| {
            if let Some(h) = hint {
                *h.lock().expect("hint lock") = Some(addr);
            }
        };
        loop {
            let candidates = match target.take() {
                Some(addr) => vec![addr],
                None => self.nodes.known(),
            };
            for addr in candidates {
                let timeout =
                    self.config.request_timeout.min(deadline.saturating_duration_since(Instant::now())) + wait;
                match self.nodes.request(addr, request, timeout).await {
                    Ok(Response::Error(ErrorReply::NotLeader { address, .. })) => {
                        last = format!("{addr} is not the node that serves this request");
                        if let Some(next) = address.as_deref().and_then(|a| resolve(a).ok()) {
                            target = Some(next);
                            break;
                        }
                    }
                    Ok(Response::Error(ErrorReply::Busy(why))) => last = why,
                    Ok(Response::Error(e)) => {
                        remember(addr);
                        return Err(e.into());
                    }
                    Ok(response) => {
                        remember(addr);
                        return Ok(response);
                    }
                    Err(Failure::Certificate(e)) => return Err(e.into()),
                    Err(Failure::Lost(why)) if !repeatable => return Err(ClientError::OutcomeUnknown(why)),
                    Err(f) => last = f.message(),
                }
            }
            if Instant::now() >= deadline {
                return Err(ClientError::TimedOut { after: self.config.timeout, last });
            }
            if target.is_none() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
