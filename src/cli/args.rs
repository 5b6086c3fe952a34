//! Every flag of every subcommand, with its default, help text and `KEEL_*` variable.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(name = "keel", version, about = "A replicated, append-only log for stream pipelines")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start a local cluster on loopback (certificates, data and ports made for you).
    Dev(DevArgs),
    /// Create a cluster CA, node certificates and a client certificate.
    Certs(CertsArgs),
    /// Run one node of a cluster.
    Serve(Box<ServeArgs>),
    /// Append records read from stdin, one per line.
    Produce(ProduceArgs),
    /// Read records by offset and print them.
    Consume(ConsumeArgs),
    /// Show the cluster: members, roles, leader, term, offsets, lag.
    Status(StatusArgs),
    /// Measure produce (and optionally consume) throughput and latency.
    Bench(BenchArgs),
    /// Create, list, describe and delete topics.
    Topic(TopicArgs),
    /// List consumer groups and describe one: members, partitions, committed offsets, lag.
    Group(GroupArgs),
    /// Move partition leadership back to the preferred replicas.
    Leader(LeaderArgs),
    /// List the cluster's nodes, and decommission one.
    Node(NodeArgs),
    /// Move a partition's replicas to other nodes.
    Partition(PartitionArgs),
}

#[derive(Args, Debug)]
pub struct DevArgs {
    /// Number of nodes to start.
    #[arg(long, default_value_t = 3)]
    pub nodes: u16,
    /// Directory for certificates (DIR/tls) and node data (DIR/node-ID), kept between runs.
    #[arg(long, default_value = "./keel-data")]
    pub dir: PathBuf,
    /// UDP port of node 1; node N listens on PORT+N-1.
    #[arg(long, default_value_t = 7000)]
    pub port: u16,
    /// HTTP port of node 1's /metrics; node N serves on METRICS_PORT+N-1.
    #[arg(long, default_value_t = 9100)]
    pub metrics_port: u16,
    /// TCP port of node 1's Kafka listener; node N listens on KAFKA_PORT+N-1.
    #[arg(long, default_value_t = 9092)]
    pub kafka_port: u16,
}

#[derive(Args, Debug)]
pub struct CertsArgs {
    /// Directory to write the CA, node and client certificates into.
    #[arg(long)]
    pub dir: PathBuf,
    /// A node id to make a certificate for (repeat for each node).
    #[arg(long = "node", required = true)]
    pub nodes: Vec<u64>,
    /// An extra DNS name or IP address for the node certificates (repeatable).
    #[arg(long = "host")]
    pub hosts: Vec<String>,
    /// Replace an existing CA (every existing certificate stops being trusted).
    #[arg(long)]
    pub force: bool,
}

/// `keel serve` settings. Each one is a flag, a `KEEL_*` variable and a key of the
/// `--config` TOML file (same name, underscores); flags and variables win over the file.
#[derive(Args, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeArgs {
    /// This node's id (must appear in --peers).
    #[arg(long, env = "KEEL_ID", conflicts_with = "id_from_hostname")]
    pub id: Option<u64>,
    /// Take the id from the host name's trailing number plus one (keel-0 is node 1), as a
    /// Kubernetes StatefulSet names its pods.
    #[arg(long, env = "KEEL_ID_FROM_HOSTNAME")]
    pub id_from_hostname: bool,
    /// Data directory (segments, hard state, node identity).
    #[arg(long, env = "KEEL_DIR")]
    pub dir: Option<PathBuf>,
    /// UDP address to listen on for peers and clients.
    #[arg(long, env = "KEEL_LISTEN")]
    pub listen: Option<String>,
    /// Every voter of the initial cluster: ID=HOST:PORT,...
    #[arg(long, env = "KEEL_PEERS", conflicts_with = "join")]
    pub peers: Option<String>,
    /// Join a running cluster through any of these nodes (HOST:PORT,...): on first start the
    /// node registers and receives the metadata as a learner. Instead of --peers; a node
    /// that joined restarts with neither.
    #[arg(long, env = "KEEL_JOIN")]
    pub join: Option<String>,
    /// With --join: become a voter of the metadata group once caught up (default: a broker
    /// that hosts partitions and votes on no metadata).
    #[arg(long, env = "KEEL_VOTER", requires = "join")]
    pub voter: bool,
    /// Directory with ca.pem, node-ID.pem and node-ID.key (from `keel certs`).
    #[arg(long, env = "KEEL_TLS")]
    pub tls: Option<PathBuf>,
    /// Address for the Prometheus /metrics endpoint (none by default).
    #[arg(long, env = "KEEL_METRICS")]
    pub metrics: Option<String>,
    /// Accept clients without a certificate signed by the cluster CA (default: required).
    #[arg(long, env = "KEEL_ALLOW_ANONYMOUS_CLIENTS")]
    pub allow_anonymous_clients: bool,
    /// Delete the oldest sealed segments once the log is larger than this many bytes.
    #[arg(long, env = "KEEL_RETENTION_BYTES")]
    pub retention_bytes: Option<u64>,
    /// Delete sealed segments whose newest record is older than this many milliseconds.
    #[arg(long, env = "KEEL_RETENTION_MS")]
    pub retention_ms: Option<u64>,
    /// Size at which a segment file is sealed and a new one started (default 128 MiB).
    #[arg(long, env = "KEEL_SEGMENT_BYTES")]
    pub segment_bytes: Option<u64>,
    /// Segment size of the metadata log (default 8 MiB); it is trimmed a segment at a time
    /// once a snapshot of the metadata covers the segment.
    #[arg(long, env = "KEEL_METADATA_SEGMENT_BYTES")]
    pub metadata_segment_bytes: Option<u64>,
    /// Largest record a producer may send (default 1 MiB).
    #[arg(long, env = "KEEL_RECORD_BYTES_MAX")]
    pub record_bytes_max: Option<u32>,
    /// Refuse produce while the data directory's file system has less free space than this
    /// many bytes (default 256 MiB); reads go on.
    #[arg(long, env = "KEEL_DISK_FREE_BYTES_MIN")]
    pub disk_free_bytes_min: Option<u64>,
    /// TOML file with the keys above.
    #[arg(long, env = "KEEL_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// On a new cluster: producing to an unknown topic creates it.
    #[arg(long, env = "KEEL_AUTO_CREATE_TOPICS")]
    pub auto_create_topics: bool,
    /// On a new cluster: partitions of the topic `default` (default 1).
    #[arg(long, env = "KEEL_DEFAULT_PARTITIONS")]
    pub default_partitions: Option<u32>,
    /// On a new cluster: a partition forgets an idempotent producer idle for this many
    /// milliseconds of its log's time (default 604800000, 7 days; Kafka's
    /// producer.id.expiration.ms). Kept in the cluster's metadata, the same for every replica.
    #[arg(long, env = "KEEL_PRODUCER_ID_EXPIRATION_MS")]
    pub producer_id_expiration_ms: Option<u64>,
    /// On a new cluster: idempotent producers one partition tracks (default 10000); past it
    /// the least recently active is forgotten. Kept in the cluster's metadata.
    #[arg(long, env = "KEEL_PRODUCERS_MAX")]
    pub producers_max: Option<u32>,
    /// TCP address to serve Kafka clients on (none by default), e.g. 0.0.0.0:9092.
    #[arg(long, env = "KEEL_KAFKA")]
    pub kafka: Option<String>,
    /// `host:port` Kafka clients reach this node at (default: --kafka, unless it is a
    /// wildcard address).
    #[arg(long, env = "KEEL_KAFKA_ADVERTISED")]
    pub kafka_advertised: Option<String>,
    /// Serve Kafka clients over TLS with the node's certificate (clients trust ca.pem).
    #[arg(long, env = "KEEL_KAFKA_TLS")]
    pub kafka_tls: bool,
    /// Log format.
    #[arg(long, value_enum, env = "KEEL_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// How often, in milliseconds, the metadata leader moves leadership back to each
    /// partition's preferred replica once it is caught up (default 30000; 0: only on
    /// `keel leader balance`).
    #[arg(long, env = "KEEL_LEADER_BALANCE_MS")]
    pub leader_balance_ms: Option<u64>,
}

/// Where a client finds the cluster and how it proves who it is.
#[derive(Args, Debug)]
pub struct ClientArgs {
    /// Addresses of one or more nodes, comma-separated.
    #[arg(long, env = "KEEL_BOOTSTRAP", default_value = "127.0.0.1:7000", value_delimiter = ',')]
    pub bootstrap: Vec<String>,
    /// Directory with ca.pem and the client certificate (client.pem, client.key).
    #[arg(long, env = "KEEL_TLS", default_value = "./keel-data/tls")]
    pub tls: PathBuf,
    /// How long to keep trying before giving up, e.g. 500ms, 30s, 2m (a bare number is
    /// seconds). produce, consume, bench: 120 s without an answer that moves on; records
    /// still pending then are not acknowledged. status: 1 s per node.
    #[arg(long, env = "KEEL_TIMEOUT", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
}

/// How long `produce`, `consume` and `bench` keep trying (Kafka's `delivery.timeout.ms`).
pub const TIMEOUT_DEFAULT: Duration = Duration::from_secs(120);
/// How long `status` waits for each node.
pub const STATUS_TIMEOUT_DEFAULT: Duration = Duration::from_secs(1);

/// `500ms`, `1.5s`, `2m` or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t, 1.0)
    };
    let seconds = number.trim().parse::<f64>().ok().map(|n| n * scale).filter(|s| s.is_finite() && *s > 0.0);
    seconds
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| format!("`{text}` is not a duration: give e.g. 500ms, 30s, 2m or a number of seconds"))
}

/// Which topic a command reads or writes, and which of its partitions.
#[derive(Args, Debug)]
pub struct TopicSelect {
    /// The topic (every cluster has `default`, with one partition).
    #[arg(long, env = "KEEL_TOPIC", default_value = "default")]
    pub topic: String,
    /// One partition; without it, produce spreads records by key (or in batches when they
    /// have none) and consume reads every partition.
    #[arg(long)]
    pub partition: Option<u32>,
}

/// A batch compression codec (stored as sent; every reader decompresses).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompressionArg {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl From<CompressionArg> for keel::batch::Compression {
    fn from(c: CompressionArg) -> keel::batch::Compression {
        use keel::batch::Compression as C;
        match c {
            CompressionArg::None => C::None,
            CompressionArg::Gzip => C::Gzip,
            CompressionArg::Snappy => C::Snappy,
            CompressionArg::Lz4 => C::Lz4,
            CompressionArg::Zstd => C::Zstd,
        }
    }
}

#[derive(Args, Debug)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub select: TopicSelect,
    /// How batches are compressed.
    #[arg(long, value_enum, default_value_t = CompressionArg::None)]
    pub compression: CompressionArg,
    /// Split each line at the first occurrence of this character into key and value.
    #[arg(long)]
    pub key_separator: Option<char>,
    /// Print one line per input line: the record's offset once committed, or `-`.
    #[arg(long)]
    pub print_offsets: bool,
    /// Produce without producer ids and sequence numbers: a batch whose outcome is unknown
    /// is then not resent, so a record may be missing (and a rerun may append it twice).
    #[arg(long)]
    pub no_idempotence: bool,
}

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub select: TopicSelect,
    /// First offset to read (in each partition read): a number, `earliest` or `latest`.
    #[arg(long, default_value = "earliest", allow_hyphen_values = true)]
    pub from: String,
    /// Stop after this many records.
    #[arg(long)]
    pub count: Option<u64>,
    /// Keep waiting for new records at the end of the log.
    #[arg(long)]
    pub follow: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    /// Consume as a member of this consumer group: read only the partitions the group
    /// assigns this member, from the group's committed offsets (`--from` only where it has
    /// none), committing after printing; `--partition` does not apply.
    #[arg(long, conflicts_with = "partition")]
    pub group: Option<String>,
}

#[derive(Args, Debug)]
pub struct GroupArgs {
    #[command(subcommand)]
    pub command: GroupCommand,
}

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// List the consumer groups (Kafka clients' and `keel consume --group`'s).
    List {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Show a group: its state, members and their partitions, and per partition the
    /// committed offset, the end of the log and the lag.
    Describe {
        #[command(flatten)]
        client: ClientArgs,
        group: String,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Output format (the JSON form is a stable contract for scripts).
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    /// Ask only the first --bootstrap node whether it knows a leader; exit 0 if it does, 1 if
    /// not or if it does not answer (a readiness probe).
    #[arg(long)]
    pub ready: bool,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The topic to write (created with --partitions partitions if it does not exist).
    #[arg(long, default_value = "default")]
    pub topic: String,
    /// Spread the load over this many partitions of --topic (created if needed); by
    /// default every partition the topic has.
    #[arg(long)]
    pub partitions: Option<u32>,
    /// How batches are compressed.
    #[arg(long, value_enum, default_value_t = CompressionArg::None)]
    pub compression: CompressionArg,
    /// Number of records to produce.
    #[arg(long)]
    pub records: u64,
    /// Size of each record value in bytes.
    #[arg(long)]
    pub size: usize,
    /// Batches in flight per producer.
    #[arg(long, default_value_t = 64)]
    pub window: usize,
    /// Records per batch: as many as fit in this many bytes (at least one).
    #[arg(long, default_value_t = 65536)]
    pub batch_bytes: usize,
    /// Concurrent producers.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Read every record back afterwards and verify its bytes.
    #[arg(long)]
    pub consume: bool,
}

#[derive(Args, Debug)]
pub struct TopicArgs {
    #[command(subcommand)]
    pub command: TopicCommand,
}

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        #[command(flatten)]
        client: ClientArgs,
        /// The topic's name: letters, digits, `.`, `_` and `-`, at most 249 characters.
        name: String,
        /// Partitions (default: the cluster's, 1).
        #[arg(long)]
        partitions: Option<u32>,
        /// Replicas of each partition (default: min(3, nodes)).
        #[arg(long)]
        replicas: Option<u16>,
        /// Delete the oldest records once a partition holds more than this many bytes.
        #[arg(long)]
        retention_bytes: Option<i64>,
        /// Delete records older than this many milliseconds.
        #[arg(long)]
        retention_ms: Option<i64>,
        /// Largest record (or compressed batch) a producer may send, in bytes.
        #[arg(long)]
        max_message_bytes: Option<u32>,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// List the topics.
    List {
        #[command(flatten)]
        client: ClientArgs,
        /// Include internal topics (`__consumer_offsets`).
        #[arg(long)]
        internal: bool,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Show a topic's partitions (leader, replicas, in-sync replicas, offsets) and settings.
    Describe {
        #[command(flatten)]
        client: ClientArgs,
        name: String,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Delete a topic and its data on every node.
    Delete {
        #[command(flatten)]
        client: ClientArgs,
        name: String,
    },
}

#[derive(Args, Debug)]
pub struct LeaderArgs {
    #[command(subcommand)]
    pub command: LeaderCommand,
}

#[derive(Subcommand, Debug)]
pub enum LeaderCommand {
    /// Hand each partition's leadership to its preferred replica (its first) where that
    /// replica is up and caught up, and print what moved.
    Balance {
        #[command(flatten)]
        client: ClientArgs,
        /// How long to wait for the new leaders to show, e.g. 10s.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        wait: Duration,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
}

#[derive(Args, Debug)]
pub struct NodeArgs {
    #[command(subcommand)]
    pub command: NodeCommand,
}

#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// Every registered node: addresses, metadata role (voter or broker), partitions hosted
    /// and led, and whether it answers (active or down, within --timeout, 1 s by default).
    List {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Register node ID (before or after starting it with `keel serve --join`): it is added
    /// to the metadata group as a learner, and with --voter promoted to a voter once caught up.
    Add {
        #[command(flatten)]
        client: ClientArgs,
        /// The new node's id (its certificate is node-ID.pem from `keel certs --node ID`).
        id: u64,
        /// Where the node serves peers and clients (HOST:PORT, its --listen).
        #[arg(long)]
        address: String,
        /// Where it serves Kafka clients, if it does (its --kafka-advertised).
        #[arg(long)]
        kafka_address: Option<String>,
        /// Make it a voter of the metadata group once it has caught up.
        #[arg(long)]
        voter: bool,
    },
    /// Move every replica off node ID (leadership first), then mark it removed. Refused
    /// when the other active nodes cannot hold a partition's replicas.
    Decommission {
        #[command(flatten)]
        client: ClientArgs,
        /// The node to take out of service.
        id: u64,
        /// Wait this long for the node to host nothing, printing progress (e.g. 120s);
        /// without it, start the decommission and return.
        #[arg(long, value_parser = parse_duration)]
        wait: Option<Duration>,
    },
}

#[derive(Args, Debug)]
pub struct PartitionArgs {
    #[command(subcommand)]
    pub command: PartitionCommand,
}

#[derive(Subcommand, Debug)]
pub enum PartitionCommand {
    /// Move TOPIC/PARTITION's replicas to the nodes --to names (the first is the preferred
    /// leader): the new nodes join as learners, catch up, then the group's configuration
    /// changes in one joint-consensus step. Exits 0 once the move finished.
    Move {
        #[command(flatten)]
        client: ClientArgs,
        /// The partition, as TOPIC/PARTITION (e.g. orders/0).
        partition: String,
        /// The new replicas, comma-separated node ids (e.g. 1,4,5).
        #[arg(long, value_delimiter = ',', required_unless_present = "abort")]
        to: Vec<u64>,
        /// How long to wait for the move to finish, printing progress.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        wait: Duration,
        /// Abandon the move in progress: allowed until it enters joint consensus.
        #[arg(long, conflicts_with = "to")]
        abort: bool,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_or_without_a_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        for bad in ["", "0", "-1s", "ten", "1h", "nan"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
