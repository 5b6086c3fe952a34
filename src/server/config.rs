//! A node's settings, as the library takes them (the CLI builds this from flags, `KEEL_*`
//! variables and the TOML file).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::raft::NodeId;
pub use crate::replica::retention::Retention;

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: NodeId,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Every voter of the initial cluster, this node included. A node that joins (or
    /// restarts after joining) lists only itself, at the address the others reach it.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// How this node comes into the cluster: as an initial member, by joining, or from what
    /// its data directory already holds.
    pub entry: ClusterEntry,
    pub tls_dir: PathBuf,
    pub metrics: Option<SocketAddr>,
    /// Clients must present a certificate signed by the cluster CA.
    pub require_client_cert: bool,
    pub limits: Limits,
    pub retention: Retention,
    /// Period of the Raft core's clock; election timeouts and heartbeats count these.
    pub tick: Duration,
    pub segment_bytes: u64,
    /// Segment size of the metadata group's log: after a snapshot, the metadata log is
    /// trimmed a whole sealed segment at a time (`group::METADATA_SNAPSHOT_ENTRIES`).
    pub metadata_segment_bytes: u64,
    /// A new cluster: produce to an unknown topic creates it.
    pub auto_create_topics: bool,
    /// A new cluster: partitions of the topic `default`.
    pub default_partitions: u32,
    /// A new cluster: the limits of every partition's producer table, which the cluster
    /// keeps in its settings (`metadata::ClusterSettings`) from then on.
    pub producers: crate::producers::ProducerConfig,
    /// The Kafka listener, if the node serves Kafka clients.
    pub kafka: Option<KafkaListenerConfig>,
    /// How often the metadata leader moves leadership back to preferred replicas
    /// (`broker/balance.rs`); `None`: only on `keel leader balance`.
    pub leader_balance_every: Option<Duration>,
}

/// How a node comes into its cluster (`keel serve --peers`, `--join`, or neither).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ClusterEntry {
    /// An initial member: `peers` are the metadata group's first voters.
    #[default]
    Initial,
    /// A node added to a running cluster: on first start it asks one of `bootstrap` (client
    /// addresses, `host:port`) to register it and add it to the metadata group as a learner;
    /// with `voter` it is promoted to a metadata voter once caught up.
    Join { bootstrap: Vec<String>, voter: bool },
    /// Neither: the data directory must already hold the metadata group (a node that joined
    /// earlier, restarted).
    Existing,
}

/// `leader_balance_every` unless configured.
pub const LEADER_BALANCE_EVERY_DEFAULT: Duration = Duration::from_secs(30);

/// Where a node serves Kafka clients.
#[derive(Clone, Debug)]
pub struct KafkaListenerConfig {
    pub listen: SocketAddr,
    /// `host:port` as Kafka clients reach it (what metadata answers name).
    pub advertised: String,
    /// TLS with the cluster's certificates (clients verify the node against the cluster CA).
    pub tls: bool,
}

/// Every bound a node enforces, with its default.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest record (key, value and headers encoded).
    pub record_bytes_max: usize,
    /// Largest produce batch; also the largest entry.
    pub batch_bytes_max: usize,
    /// Bytes of requests a client connection may have buffered in the node at once.
    pub connection_bytes_max: usize,
    /// Concurrent client connections.
    pub client_connections_max: usize,
    /// Longest wait a fetch may ask for at the end of the log.
    pub fetch_wait_max: Duration,
    /// Largest fetch response.
    pub fetch_bytes_max: usize,
    /// Produce is refused while the data directory's file system has less free space.
    pub disk_free_bytes_min: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            record_bytes_max: 1 << 20,
            batch_bytes_max: 4 << 20,
            connection_bytes_max: 64 << 20,
            client_connections_max: 1024,
            fetch_wait_max: Duration::from_secs(30),
            fetch_bytes_max: 8 << 20,
            disk_free_bytes_min: 256 << 20,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--peers: `{0}` is not ID=HOST:PORT")]
    PeerSyntax(String),
    #[error("--peers: node id 0 is not allowed (ids start at 1)")]
    ZeroId,
    #[error("--peers: node {0} is listed twice")]
    DuplicatePeer(NodeId),
    #[error("--peers: cannot resolve `{addr}` for node {id}: {why}")]
    Resolve { id: NodeId, addr: String, why: String },
    #[error("this node's id {0} is not in --peers; list every voter, this node included")]
    SelfMissing(NodeId),
    #[error(
        "the data directory {dir} holds no cluster yet: start the node with --peers (a new cluster's \
         members) or --join HOST:PORT (a node added to a running cluster)"
    )]
    NoCluster { dir: PathBuf },
    #[error(
        "--listen {0} listens on every address: a node that joins needs the address the others reach it at \
         (e.g. --listen 10.0.0.4:7000)"
    )]
    JoinUnspecifiedListen(SocketAddr),
    #[error(
        "segment_bytes {segment_bytes} is too small for record_bytes_max {record_bytes_max}: \
         a segment must hold a whole batch; raise segment_bytes or lower record_bytes_max"
    )]
    SegmentTooSmall { segment_bytes: u64, record_bytes_max: usize },
    #[error(
        "metadata_segment_bytes {0} is below {METADATA_SEGMENT_BYTES_MIN}: a metadata segment must hold the \
         largest metadata command (a topic's placement); raise it"
    )]
    MetadataSegmentTooSmall(u64),
}

/// Room a segment needs besides one batch: its header, the entry header, the batch header.
const SEGMENT_OVERHEAD_BYTES: u64 = 64 << 10;
/// The metadata log's segments: small, so that a snapshot lets it be trimmed soon.
pub const METADATA_SEGMENT_BYTES: u64 = 8 << 20;
/// The smallest metadata segment: a command of up to this less the overhead fits.
pub const METADATA_SEGMENT_BYTES_MIN: u64 = 256 << 10;

/// The largest metadata command (encoded entry) a node with these settings accepts: what
/// a metadata segment holds, and no more than a data batch.
pub fn metadata_entry_bytes_max(metadata_segment_bytes: u64, limits: &Limits) -> usize {
    let room = metadata_segment_bytes.saturating_sub(SEGMENT_OVERHEAD_BYTES) as usize;
    room.min(limits.batch_bytes_max + 1024)
}

impl Limits {
    /// Shrinks the batch limit to what one segment can hold; a record that cannot fit in a
    /// segment is a configuration error.
    pub fn fit_segment(&mut self, segment_bytes: u64) -> Result<(), ConfigError> {
        let room = segment_bytes.saturating_sub(SEGMENT_OVERHEAD_BYTES) as usize;
        self.batch_bytes_max = self.batch_bytes_max.min(room);
        if self.record_bytes_max > self.batch_bytes_max {
            return Err(ConfigError::SegmentTooSmall { segment_bytes, record_bytes_max: self.record_bytes_max });
        }
        Ok(())
    }
}

/// Parses `1=host:port,2=host:port,...` and resolves every address.
pub fn parse_peers(text: &str) -> Result<BTreeMap<NodeId, SocketAddr>, ConfigError> {
    resolve_peers(&parse_peer_names(text)?)
}

/// Parses `1=host:port,2=host:port,...` into each node's address as written.
pub fn parse_peer_names(text: &str) -> Result<BTreeMap<NodeId, String>, ConfigError> {
    let mut peers = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('=').ok_or_else(|| ConfigError::PeerSyntax(part.into()))?;
        let id: NodeId = id.trim().parse().map_err(|_| ConfigError::PeerSyntax(part.into()))?;
        if id == 0 {
            return Err(ConfigError::ZeroId);
        }
        if peers.insert(id, addr.trim().to_owned()).is_some() {
            return Err(ConfigError::DuplicatePeer(id));
        }
    }
    if peers.is_empty() {
        return Err(ConfigError::PeerSyntax(text.into()));
    }
    Ok(peers)
}

/// Looks up every peer's address (the first one a name resolves to).
pub fn resolve_peers(names: &BTreeMap<NodeId, String>) -> Result<BTreeMap<NodeId, SocketAddr>, ConfigError> {
    use std::net::ToSocketAddrs;
    let mut peers = BTreeMap::new();
    for (&id, addr) in names {
        let resolved = addr
            .to_socket_addrs()
            .map_err(|e| ConfigError::Resolve { id, addr: addr.clone(), why: e.to_string() })?
            .next()
            .ok_or_else(|| ConfigError::Resolve { id, addr: addr.clone(), why: "no address".into() })?;
        peers.insert(id, resolved);
    }
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_bad_lists_say_why() {
        let peers = parse_peers("1=127.0.0.1:7000, 2=127.0.0.1:7001").unwrap();
        assert_eq!(peers.len(), 2);
        assert!(matches!(parse_peers("1=127.0.0.1:7000,1=127.0.0.1:7001"), Err(ConfigError::DuplicatePeer(1))));
        assert!(matches!(parse_peers("x=127.0.0.1:7000"), Err(ConfigError::PeerSyntax(_))));
        assert!(matches!(parse_peers("0=127.0.0.1:7000"), Err(ConfigError::ZeroId)));
        assert!(matches!(parse_peers("1=nohost.invalid:7000"), Err(ConfigError::Resolve { .. })));
    }
}
