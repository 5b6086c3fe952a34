//! The Rust client library: produce and consume records, read cluster metadata.
//!
//! ```no_run
//! # async fn demo() -> Result<(), keel::client::ClientError> {
//! use keel::client::{Client, ClientConfig, Offset};
//! use keel::record::Record;
//!
//! let client = Client::connect(ClientConfig::new(["127.0.0.1:7000"], "./keel-data/tls")).await?;
//! let offset = client.produce(vec![Record::new("hello")]).await?;
//! let mut consumer = client.consumer(Offset::At(offset));
//! let batch = consumer.poll().await?;
//! assert_eq!(batch[0].1.value, "hello");
//! # Ok(()) }
//! ```
//!
//! Delivery is **at least once**. A produce is acknowledged only once its records are
//! committed (fsync'd on a majority). When a request fails in a way that proves the
//! records were not appended (the node was not the leader, the node was busy, the
//! connection could not be made), the client retries it by itself. When the outcome
//! cannot be known (the connection broke after the request left, the leader lost its
//! leadership before committing), the error is [`ClientError::OutcomeUnknown`]: the
//! records may or may not be in the log, and producing them again may duplicate them.

mod conn;
mod consumer;
mod producer;

use std::path::PathBuf;
use std::time::Duration;

pub use consumer::{Consumer, Offset};
pub use producer::{Producer, ProducerConfig};

use crate::net::client_codec::{ClusterView, ErrorReply};
use crate::record::Record;
use conn::Nodes;

/// How to reach a cluster.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `host:port` of one or more nodes.
    pub bootstrap: Vec<String>,
    /// Directory with ca.pem (and client.pem/client.key, presented when present).
    pub tls_dir: PathBuf,
    /// How long one request may take before its outcome is unknown.
    pub request_timeout: Duration,
    /// How long a request whose failure is known keeps being retried.
    pub retry_for: Duration,
}

impl ClientConfig {
    pub fn new<S: Into<String>>(bootstrap: impl IntoIterator<Item = S>, tls_dir: impl Into<PathBuf>) -> ClientConfig {
        ClientConfig {
            bootstrap: bootstrap.into_iter().map(Into::into).collect(),
            tls_dir: tls_dir.into(),
            request_timeout: Duration::from_secs(15),
            retry_for: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Config(String),
    #[error(
        "the outcome is unknown: {0}; the records may or may not have been appended \
         (at-least-once: retrying may duplicate them)"
    )]
    OutcomeUnknown(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("offset {requested} is out of range: the log holds offsets {start}..{end}")]
    OffsetOutOfRange { requested: u64, start: u64, end: u64 },
    #[error("no node could serve the request: {0}")]
    Unavailable(String),
}

impl ClientError {
    /// True when the records are known not to have been appended.
    pub fn known_failed(&self) -> bool {
        !matches!(self, ClientError::OutcomeUnknown(_))
    }
}

impl From<ErrorReply> for ClientError {
    fn from(e: ErrorReply) -> ClientError {
        match e {
            ErrorReply::OutcomeUnknown { .. } => ClientError::OutcomeUnknown(e.to_string()),
            ErrorReply::OffsetOutOfRange { requested, start, end } => {
                ClientError::OffsetOutOfRange { requested, start, end }
            }
            ErrorReply::Refused(msg) => ClientError::Refused(msg),
            other => ClientError::Unavailable(other.to_string()),
        }
    }
}

/// A connection pool to one cluster. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    nodes: Nodes,
    config: ClientConfig,
}

impl Client {
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let nodes = Nodes::new(&config)?;
        Ok(Client { nodes, config })
    }

    /// The cluster as the first reachable bootstrap node sees it.
    pub async fn metadata(&self) -> Result<ClusterView, ClientError> {
        self.nodes.metadata_any(self.config.request_timeout).await
    }

    /// The cluster as the node at `addr` sees it.
    pub async fn metadata_from(&self, addr: &str) -> Result<ClusterView, ClientError> {
        self.nodes.metadata_at(addr, self.config.request_timeout).await
    }

    /// The offset after the last committed record, from the leader: a follower may lag it
    /// by a heartbeat, and a node that just restarted knows only the commit it saved. The
    /// bootstrap nodes are asked in turn until one is, or names, a leader that answers;
    /// while none does (an election), it asks again for up to a second, then settles for
    /// the highest end any node gave.
    pub async fn end_offset(&self) -> Result<u64, ClientError> {
        let timeout = self.config.request_timeout;
        let mut best: Result<u64, ClientError> = Err(ClientError::Unavailable("no bootstrap address".into()));
        for round in 0..5 {
            if round > 0 {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            for addr in &self.config.bootstrap {
                let view = match self.nodes.metadata_at(addr, timeout).await {
                    Ok(view) => view,
                    Err(e) => {
                        best = best.or(Err(e));
                        continue;
                    }
                };
                best = Ok(best.map_or(view.log_end_offset, |b| b.max(view.log_end_offset)));
                if view.leader == Some(view.node_id) {
                    return Ok(view.log_end_offset);
                }
                if let Some(leader) = view.leader_address()
                    && let Ok(lv) = self.nodes.metadata_at(leader, timeout).await
                    && lv.leader == Some(lv.node_id)
                {
                    return Ok(lv.log_end_offset);
                }
            }
        }
        best
    }

    /// Appends `records` as one batch; returns the offset of the first once committed.
    pub async fn produce(&self, records: Vec<Record>) -> Result<u64, ClientError> {
        producer::produce_batch(&self.nodes, &self.config, &records).await
    }

    /// A producer that batches records and keeps several batches in flight.
    pub fn producer(&self, config: ProducerConfig) -> Producer {
        Producer::new(self.clone(), config)
    }

    /// A consumer reading committed records from `from`.
    pub fn consumer(&self, from: Offset) -> Consumer {
        Consumer::new(self.clone(), from)
    }
}
