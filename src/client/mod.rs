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
mod notice;
mod producer;

use std::path::PathBuf;
use std::time::Duration;

pub use consumer::{Consumer, Offset};
pub use error::{CertificateError, ClientError};
pub use notice::Notice;
pub use producer::{Ack, Producer, ProducerConfig};
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::net::client_codec::{ClusterView, DiskView};
use crate::record::Record;
use conn::{Nodes, Want};

/// How long `end_offset` waits for a node that answers as leader before it settles for the
/// highest end any node gave (during an election no node is leader).
const END_OFFSET_SETTLE: Duration = Duration::from_secs(1);

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
}

impl ClientConfig {
    pub fn new<S: Into<String>>(bootstrap: impl IntoIterator<Item = S>, tls_dir: impl Into<PathBuf>) -> ClientConfig {
        ClientConfig {
            bootstrap: bootstrap.into_iter().map(Into::into).collect(),
            tls_dir: tls_dir.into(),
            request_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(120),
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

    /// What the client has to say while it keeps trying (see [`Notice`]); a subscriber
    /// that falls far behind misses the oldest.
    pub fn notices(&self) -> broadcast::Receiver<Notice> {
        self.nodes.notices().subscribe()
    }

    /// The cluster as the first node to answer sees it (every known node is asked at once).
    pub async fn metadata(&self) -> Result<ClusterView, ClientError> {
        let deadline = Instant::now() + self.config.timeout;
        Ok(self.nodes.search(Want::Any, deadline).await?.1)
    }

    /// The cluster as the node at `addr` sees it, within `request_timeout` (handshake included).
    pub async fn metadata_from(&self, addr: &str) -> Result<ClusterView, ClientError> {
        self.nodes.metadata_at(addr, self.config.request_timeout).await
    }

    /// The free disk space of the node at `addr` and its reserve, within `request_timeout`.
    pub async fn disk_from(&self, addr: &str) -> Result<DiskView, ClientError> {
        self.nodes.disk_at(addr, self.config.request_timeout).await
    }

    /// The offset after the last committed record, from the leader: a follower may lag it
    /// by a heartbeat, and a node that just restarted knows only the commit it saved. Every
    /// known node is asked at once, and again while none answers as leader; after a second
    /// without a leader (an election) it settles for the highest end any node gave.
    pub async fn end_offset(&self) -> Result<u64, ClientError> {
        let now = Instant::now();
        let want = Want::Leader { settle: Some(now + END_OFFSET_SETTLE) };
        Ok(self.nodes.search(want, now + self.config.timeout).await?.1.log_end_offset)
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
