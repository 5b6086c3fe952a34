//! Every metric keel exports: its name, unit and description in one table, and the
//! Prometheus endpoint. Names follow Prometheus conventions: a `keel_` prefix, base units
//! (seconds, bytes), `_total` counters, histograms with explicit buckets so they aggregate
//! across nodes. Only per-peer metrics carry a label naming a node (`peer`); every other
//! label takes a small, fixed set of values.
//!
//! The per-topic counters (`keel_topic_*`) carry a `topic` label: one series per topic
//! this node served, at most `TOPIC_SERIES_MAX` topics, the rest counted under
//! `topic="(other)"` (`topic_label`).
//!
//! The rule for a node hosting many Raft groups, so that a node's series stay bounded
//! however many groups it hosts: no series is labelled with a group. Counters and
//! histograms add up across groups (fsyncs, appends, produce requests). Node aggregates
//! say how the node's groups fare: groups hosted, groups led, under-replicated groups led
//! here, and each peer's lag summed over the groups led here. The gauges that describe
//! one group (term, role, leader, commit index, log offsets and sizes) describe the one
//! group the node names for them (`server/group_metrics.rs`).

use std::net::SocketAddr;

use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

pub const BUILD_INFO: &str = "keel_build_info";
pub const RAFT_TERM: &str = "keel_raft_term";
pub const RAFT_ROLE: &str = "keel_raft_role";
pub const RAFT_LEADER_ID: &str = "keel_raft_leader_id";
pub const RAFT_COMMIT_INDEX: &str = "keel_raft_commit_index";
pub const RAFT_LAST_INDEX: &str = "keel_raft_last_index";
pub const LOG_START_OFFSET: &str = "keel_log_start_offset";
pub const LOG_END_OFFSET: &str = "keel_log_end_offset";
pub const REPLICATION_MATCH_INDEX: &str = "keel_replication_match_index";
pub const REPLICATION_LAG_ENTRIES: &str = "keel_replication_lag_entries";
pub const REPLICATION_LAG_BYTES: &str = "keel_replication_lag_bytes";
pub const REPLICATION_INFLIGHT: &str = "keel_replication_inflight_appends";
pub const REPLICATION_RTT: &str = "keel_replication_round_trip_seconds";
pub const ELECTIONS_STARTED: &str = "keel_raft_elections_started_total";
pub const ELECTIONS_WON: &str = "keel_raft_elections_won_total";
pub const LEADER_CHANGES: &str = "keel_raft_leader_changes_total";
pub const PRE_VOTES_REJECTED: &str = "keel_raft_pre_votes_rejected_total";
pub const APPEND_BATCHES_SENT: &str = "keel_append_batches_sent_total";
pub const APPEND_ENTRIES_SENT: &str = "keel_append_entries_sent_total";
pub const APPEND_BATCHES_RECEIVED: &str = "keel_append_batches_received_total";
pub const APPEND_ENTRIES_RECEIVED: &str = "keel_append_entries_received_total";
pub const APPEND_BATCH_BYTES: &str = "keel_append_batch_bytes";
pub const FSYNC_SECONDS: &str = "keel_fsync_seconds";
pub const FSYNCS: &str = "keel_fsyncs_total";
pub const LOG_SEGMENTS: &str = "keel_log_segments";
pub const LOG_BYTES: &str = "keel_log_bytes";
pub const LOG_DISK_BYTES: &str = "keel_log_disk_bytes";
pub const DISK_FREE_BYTES: &str = "keel_disk_free_bytes";
pub const DISK_RESERVE_BYTES: &str = "keel_disk_reserve_bytes";
pub const DISK_NEARLY_FULL: &str = "keel_disk_nearly_full";
pub const RETENTION_DELETED_SEGMENTS: &str = "keel_retention_deleted_segments_total";
pub const METADATA_SNAPSHOTS: &str = "keel_metadata_snapshots_total";
pub const PRODUCE_REQUESTS: &str = "keel_produce_requests_total";
pub const PRODUCE_RECORDS: &str = "keel_produce_records_total";
pub const PRODUCE_BYTES: &str = "keel_produce_bytes_total";
pub const PRODUCE_LATENCY: &str = "keel_produce_latency_seconds";
pub const PRODUCE_ERRORS: &str = "keel_produce_errors_total";
pub const PRODUCER_DUPLICATES: &str = "keel_producer_duplicates_total";
pub const PRODUCER_OUT_OF_ORDER: &str = "keel_producer_out_of_order_total";
pub const PRODUCERS_TRACKED: &str = "keel_producers_tracked";
pub const FETCH_REQUESTS: &str = "keel_fetch_requests_total";
pub const FETCH_BYTES: &str = "keel_fetch_bytes_total";
pub const TOPIC_PRODUCE_RECORDS: &str = "keel_topic_produce_records_total";
pub const TOPIC_PRODUCE_BYTES: &str = "keel_topic_produce_bytes_total";
pub const TOPIC_FETCH_BYTES: &str = "keel_topic_fetch_bytes_total";
pub const FETCH_LONG_POLLS: &str = "keel_fetch_long_polls_total";
pub const GROUP_COORDINATORS: &str = "keel_group_coordinators";
pub const GROUP_REBALANCES: &str = "keel_group_rebalances_total";
pub const GROUP_OFFSET_COMMITS: &str = "keel_group_offset_commits_total";
pub const CONSUMER_LAG: &str = "keel_consumer_group_lag_records";
pub const CONSUMER_LAG_MAX: &str = "keel_consumer_group_lag_max_records";
pub const QUIC_CONNECTIONS: &str = "keel_quic_connections";
pub const QUIC_HANDSHAKE_FAILURES: &str = "keel_quic_handshake_failures_total";
pub const FRAMES_REJECTED: &str = "keel_frames_rejected_total";
pub const PEER_FRAMES_DROPPED: &str = "keel_peer_frames_dropped_total";
pub const STORAGE_CORRUPTIONS: &str = "keel_storage_corruptions_total";
pub const STORAGE_REPAIRS: &str = "keel_storage_repairs_total";
pub const GROUPS_VOTE_BARRIER: &str = "keel_groups_vote_barrier";
pub const GROUPS_HOSTED: &str = "keel_groups_hosted";
pub const GROUPS_LED: &str = "keel_groups_led";
pub const GROUPS_QUIET: &str = "keel_groups_quiet";
pub const RAFT_TICK: &str = "keel_raft_tick_seconds";
pub const GROUPS_UNDER_REPLICATED: &str = "keel_groups_under_replicated";
pub const PEER_FRAMES_UNROUTED: &str = "keel_peer_frames_unrouted_total";
pub const KAFKA_REQUESTS: &str = "keel_kafka_requests_total";
pub const KAFKA_REQUEST_LATENCY: &str = "keel_kafka_request_seconds";
pub const KAFKA_CONNECTIONS: &str = "keel_kafka_connections";
pub const PARTITION_MOVES: &str = "keel_partition_moves";
pub const PARTITION_MOVES_FINISHED: &str = "keel_partition_moves_finished_total";
pub const PARTITION_MOVES_ABORTED: &str = "keel_partition_moves_aborted_total";
pub const NODES_DRAINING: &str = "keel_nodes_draining";
pub const DRAINING_REPLICAS: &str = "keel_draining_replicas";

enum Kind {
    Counter,
    Gauge,
    Histogram(&'static [f64]),
}

/// The labels a metric carries. Every label takes a bounded set of values: a fixed list,
/// or the ids of the cluster's nodes (`peer`, for what the leader knows of each follower).
enum Labels {
    None,
    Peer,
    /// `topic`: one value per topic served here, bounded (`topic_label`); the topic
    /// `default`, which every cluster has, is registered from start.
    Topic,
    Fixed(&'static str, &'static [&'static str]),
    /// Two labels, every pair of their values.
    Fixed2(&'static str, &'static [&'static str], &'static str, &'static [&'static str]),
}

/// The `version` label of `keel_build_info`.
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Values of `keel_raft_role`'s `role` label: one 0/1 series per role (a state set).
pub const ROLES: &[&str] = &["leader", "follower", "candidate", "pre_candidate", "learner"];
/// `keel_raft_role`'s label for a role: finer than what `keel status` shows (a
/// pre-candidate is shown apart from a candidate).
pub fn role_label(role: crate::raft::Role) -> &'static str {
    use crate::raft::Role;
    match role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Candidate => "candidate",
        Role::PreCandidate => "pre_candidate",
        Role::Learner => "learner",
    }
}
/// Values of `keel_peer_frames_unrouted_total`'s `reason` label.
pub const UNROUTED_REASONS: &[&str] = &["unknown_group", "queue_full"];
/// Values of `keel_produce_errors_total`'s `kind` label.
pub const PRODUCE_ERROR_KINDS: &[&str] = &[
    "not_leader",
    "busy",
    "refused",
    "outcome_unknown",
    "too_large",
    "malformed",
    "disk_full",
    "shutting_down",
    "out_of_order_sequence",
    "invalid_producer_epoch",
];
/// Values of `keel_quic_handshake_failures_total`'s `reason` label.
pub const HANDSHAKE_FAILURE_REASONS: &[&str] =
    &["bad_certificate", "wrong_alpn", "timeout", "peer_identity", "too_many_connections", "other"];
/// Values of the `kind` label of `keel_quic_connections` and the `protocol` label of
/// `keel_frames_rejected_total`.
pub const PROTOCOLS: &[&str] = &["peer", "client"];
/// Values of the `error` label of `keel_kafka_requests_total` (`none` for success).
use crate::kafka::errors::LABELS as KAFKA_ERRORS;
/// Values of the `api` label of the Kafka metrics.
use crate::kafka::versions::API_LABELS as KAFKA_APIS;

const LATENCY_BUCKETS: &[f64] =
    &[0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0];
const BYTES_BUCKETS: &[f64] = &[256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0];

use Kind::{Counter, Gauge, Histogram};
use Labels::{Fixed, Fixed2, Peer, Topic};
const NONE: Labels = Labels::None;
const LAT: Kind = Histogram(LATENCY_BUCKETS);
const SIZE: Kind = Histogram(BYTES_BUCKETS);
const N: Unit = Unit::Count;
const B: Unit = Unit::Bytes;
const S: Unit = Unit::Seconds;

/// name, kind, unit, labels, description.
#[rustfmt::skip]
const METRICS: &[(&str, Kind, Unit, Labels, &str)] = &[
    (BUILD_INFO, Gauge, N, Fixed("version", &[VERSION]), "Always 1; the version label names the running build."),
    (RAFT_TERM, Gauge, N, NONE, "The node's current Raft term."),
    (RAFT_ROLE, Gauge, N, Fixed("role", ROLES), "1 for the node's current role (label role), 0 for the others."),
    (RAFT_LEADER_ID, Gauge, N, NONE, "The leader this node knows of (0: none)."),
    (RAFT_COMMIT_INDEX, Gauge, N, NONE, "Highest Raft index committed and durable on this node."),
    (RAFT_LAST_INDEX, Gauge, N, NONE, "Highest Raft index in this node's log."),
    (LOG_START_OFFSET, Gauge, N, NONE, "Offset of the first record this node still holds."),
    (LOG_END_OFFSET, Gauge, N, NONE, "Offset after the last committed record on this node."),
    (REPLICATION_MATCH_INDEX, Gauge, N, Peer, "Highest index known replicated to the peer (leader; 0 elsewhere)."),
    (REPLICATION_LAG_ENTRIES, Gauge, N, Peer, "Entries the peer is missing, summed over the groups led here."),
    (REPLICATION_LAG_BYTES, Gauge, B, Peer, "Bytes of entries the peer is missing (leader; 0 elsewhere)."),
    (REPLICATION_INFLIGHT, Gauge, N, Peer, "AppendEntries in flight to the peer (leader; 0 elsewhere)."),
    (REPLICATION_RTT, LAT, S, Peer, "Round trip of AppendEntries and heartbeats to the peer."),
    (ELECTIONS_STARTED, Counter, N, NONE, "Elections this node started as a candidate (after a won pre-vote)."),
    (ELECTIONS_WON, Counter, N, NONE, "Elections this node won."),
    (LEADER_CHANGES, Counter, N, NONE, "Times this node learned of a new leader."),
    (PRE_VOTES_REJECTED, Counter, N, NONE, "Pre-vote requests of this node that a peer rejected."),
    (APPEND_BATCHES_SENT, Counter, N, NONE, "AppendEntries messages with entries sent."),
    (APPEND_ENTRIES_SENT, Counter, N, NONE, "Entries sent in AppendEntries messages."),
    (APPEND_BATCHES_RECEIVED, Counter, N, NONE, "AppendEntries messages with entries received."),
    (APPEND_ENTRIES_RECEIVED, Counter, N, NONE, "Entries received in AppendEntries messages."),
    (APPEND_BATCH_BYTES, SIZE, B, NONE, "Entry bytes per AppendEntries sent."),
    (FSYNC_SECONDS, LAT, S, NONE, "Time of one log fsync (group commit)."),
    (FSYNCS, Counter, N, NONE, "Log fsyncs."),
    (LOG_SEGMENTS, Gauge, N, NONE, "Segment files in the log."),
    (LOG_BYTES, Gauge, B, NONE, "Bytes of headers and entries in the log's segment files."),
    (LOG_DISK_BYTES, Gauge, B, NONE, "Size of the log's segment files on disk (preallocated)."),
    (DISK_FREE_BYTES, Gauge, B, NONE, "Free bytes on the file system of the data directory."),
    (DISK_RESERVE_BYTES, Gauge, B, NONE, "Free bytes below which produce is refused (disk_free_bytes_min)."),
    (DISK_NEARLY_FULL, Gauge, N, NONE, "1 while free space is below the reserve and produce is refused; else 0."),
    (RETENTION_DELETED_SEGMENTS, Counter, N, NONE, "Segments deleted by retention."),
    (METADATA_SNAPSHOTS, Counter, N, NONE, "Snapshots of the metadata taken here (the metadata log is trimmed after)."),
    (PRODUCE_REQUESTS, Counter, N, NONE, "Produce requests received."),
    (PRODUCE_RECORDS, Counter, N, NONE, "Records acknowledged to producers."),
    (PRODUCE_BYTES, Counter, B, NONE, "Record bytes acknowledged to producers."),
    (PRODUCE_LATENCY, LAT, S, NONE, "Produce request received to acknowledged (committed)."),
    (PRODUCE_ERRORS, Counter, N, Fixed("kind", PRODUCE_ERROR_KINDS), "Produce requests answered with an error."),
    (PRODUCER_DUPLICATES, Counter, N, NONE, "Retried idempotent batches answered with their original offsets."),
    (PRODUCER_OUT_OF_ORDER, Counter, N, NONE, "Idempotent batches refused for a gap in their sequence."),
    (PRODUCERS_TRACKED, Gauge, N, NONE, "Idempotent producers tracked, summed over this node's partitions."),
    (FETCH_REQUESTS, Counter, N, NONE, "Fetch requests received."),
    (FETCH_BYTES, Counter, B, NONE, "Entry bytes returned by fetches."),
    (TOPIC_PRODUCE_RECORDS, Counter, N, Topic, "Records acknowledged to producers, by topic."),
    (TOPIC_PRODUCE_BYTES, Counter, B, Topic, "Record batch bytes acknowledged to producers, by topic."),
    (TOPIC_FETCH_BYTES, Counter, B, Topic, "Entry bytes returned by fetches, by topic."),
    (FETCH_LONG_POLLS, Counter, N, NONE, "Fetches that waited at the end of the log."),
    (QUIC_CONNECTIONS, Gauge, N, Fixed("kind", PROTOCOLS), "Open QUIC connections, by kind."),
    (QUIC_HANDSHAKE_FAILURES, Counter, N, Fixed("reason", HANDSHAKE_FAILURE_REASONS), "Refused connections."),
    (FRAMES_REJECTED, Counter, N, Fixed("protocol", PROTOCOLS), "Malformed frames received, by protocol."),
    (PEER_FRAMES_DROPPED, Counter, N, NONE, "Frames to peers dropped because their queue was full."),
    (STORAGE_CORRUPTIONS, Counter, N, NONE, "Corrupt entries found on disk (then repaired)."),
    (STORAGE_REPAIRS, Counter, N, NONE, "Damaged entries repaired: written back from a peer's copy, or cut."),
    (GROUPS_VOTE_BARRIER, Gauge, N, NONE,
        "Groups in which this node cut damaged entries and votes only once it holds them again."),
    (GROUPS_HOSTED, Gauge, N, NONE, "Raft groups this node hosts a replica of."),
    (GROUPS_LED, Gauge, N, NONE, "Raft groups this node leads."),
    (GROUPS_QUIET, Gauge, N, NONE, "Raft groups quiet here: idle, no heartbeats or timers until woken."),
    (RAFT_TICK, Gauge, S, NONE,
        "The Raft clock's tick here: every election and heartbeat timeout is a number of ticks."),
    (GROUPS_UNDER_REPLICATED, Gauge, N, NONE, "Groups led here with a voter that lacks entries the leader has."),
    (PEER_FRAMES_UNROUTED, Counter, N, Fixed("reason", UNROUTED_REASONS),
        "Peer frames dropped on arrival: for a group this node does not host, or whose queue was full."),
    (KAFKA_REQUESTS, Counter, N, Fixed2("api", KAFKA_APIS, "error", KAFKA_ERRORS),
        "Kafka requests answered (or refused by closing the connection), by API and first error code."),
    (KAFKA_REQUEST_LATENCY, LAT, S, Fixed("api", KAFKA_APIS), "Kafka request read to its answer ready, by API."),
    (KAFKA_CONNECTIONS, Gauge, N, NONE, "Open Kafka protocol connections."),
    (PARTITION_MOVES, Gauge, N, NONE, "Partitions moving to other replicas, as the metadata this node applied says."),
    (PARTITION_MOVES_FINISHED, Counter, N, NONE, "Partition moves this node, leading the group, recorded as done."),
    (PARTITION_MOVES_ABORTED, Counter, N, NONE, "Partition moves this node, leading the group, abandoned."),
    (NODES_DRAINING, Gauge, N, NONE, "Nodes being decommissioned, as the metadata this node applied says."),
    (DRAINING_REPLICAS, Gauge, N, NONE, "Partition replicas still on nodes being decommissioned."),
    (GROUP_COORDINATORS, Gauge, N, NONE,
        "Partitions of __consumer_offsets this node leads and runs a group coordinator for."),
    (GROUP_REBALANCES, Counter, N, NONE, "Consumer group generations completed by coordinators on this node."),
    (GROUP_OFFSET_COMMITS, Counter, N, NONE, "Partition offsets committed by consumer groups, acknowledged here."),
    (CONSUMER_LAG, Gauge, N, NONE,
        "Records behind the ends of their partitions, over the committed offsets of the groups coordinated here."),
    (CONSUMER_LAG_MAX, Gauge, N, NONE,
        "The lag of the group furthest behind among those coordinated here (its partitions summed)."),
];

/// Every metric name, for tests that check the dashboard against what is exported.
pub fn names() -> impl Iterator<Item = &'static str> {
    METRICS.iter().map(|(name, ..)| *name)
}

#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {addr}: {why}")]
pub struct MetricsError {
    addr: SocketAddr,
    why: String,
}

/// Installs the process-wide recorder and serves `/metrics` on `addr` over HTTP. Every
/// series, those about each of `peers` too, is registered before the first scrape is
/// answered. Must run inside a tokio runtime.
pub fn serve(addr: SocketAddr, peers: impl IntoIterator<Item = u64>) -> Result<(), MetricsError> {
    let failed = |why: String| MetricsError { addr, why };
    let mut builder = PrometheusBuilder::new().with_http_listener(addr);
    for (name, kind, ..) in METRICS {
        if let Histogram(buckets) = kind {
            builder = builder
                .set_buckets_for_metric(Matcher::Full((*name).into()), buckets)
                .map_err(|e| failed(e.to_string()))?;
        }
    }
    let (recorder, exporter) = builder.build().map_err(|e| failed(e.to_string()))?;
    metrics::set_global_recorder(recorder).map_err(|e| failed(e.to_string()))?;
    describe();
    register_peers(peers);
    tokio::spawn(exporter);
    Ok(())
}

/// Describes every metric and registers every series that does not name a peer, at zero,
/// so that a scrape of a node that just started already lists them all (the exporter
/// leaves out a series until it is first touched).
fn describe() {
    for (name, kind, unit, labels, help) in METRICS {
        match kind {
            Counter => metrics::describe_counter!(*name, *unit, *help),
            Gauge => metrics::describe_gauge!(*name, *unit, *help),
            Histogram(_) => metrics::describe_histogram!(*name, *unit, *help),
        }
        match labels {
            Labels::None => register(name, kind, &[]),
            Fixed(label, values) => {
                for value in *values {
                    register(name, kind, &[(label, value)]);
                }
            }
            Fixed2(first, firsts, second, seconds) => {
                for a in *firsts {
                    for b in *seconds {
                        register(name, kind, &[(first, a), (second, b)]);
                    }
                }
            }
            Peer => {}
            Topic => register(name, kind, &[("topic", "default")]),
        }
    }
    metrics::gauge!(BUILD_INFO, "version" => VERSION).set(1.0);
}

/// Registers the per-peer series for `peers` at zero (see `describe`).
pub fn register_peers(peers: impl IntoIterator<Item = u64>) {
    for peer in peers {
        let peer = peer.to_string();
        for (name, kind, _, labels, _) in METRICS {
            if let Peer = labels {
                register(name, kind, &[("peer", &peer)]);
            }
        }
    }
}

/// Touches a series without changing it: it then appears in the exposition.
fn register(name: &'static str, kind: &Kind, labels: &[(&'static str, &str)]) {
    let labels: Vec<metrics::Label> = labels.iter().map(|(k, v)| metrics::Label::new(*k, v.to_string())).collect();
    match kind {
        Counter => metrics::counter!(name, labels).increment(0),
        Gauge => metrics::gauge!(name, labels).increment(0.0),
        Histogram(_) => drop(metrics::histogram!(name, labels)),
    }
}

/// Topics with series of their own on one node; later ones are counted together.
pub const TOPIC_SERIES_MAX: usize = 1000;
/// The `topic` label of the topics past `TOPIC_SERIES_MAX`: not a valid topic name, so
/// it never stands for one topic.
pub const OTHER_TOPICS: &str = "(other)";

/// The `topic` label for `topic`: its name while fewer than `TOPIC_SERIES_MAX` topics have
/// series on this node, else `OTHER_TOPICS`, so a node's series stay bounded.
pub fn topic_label(topic: &str) -> String {
    static TOPICS: std::sync::Mutex<TopicLabels> = std::sync::Mutex::new(TopicLabels::new(TOPIC_SERIES_MAX));
    TOPICS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).label(topic)
}

/// The topics that have series of their own, at most `max`.
struct TopicLabels {
    named: std::collections::BTreeSet<String>,
    max: usize,
}

impl TopicLabels {
    const fn new(max: usize) -> TopicLabels {
        TopicLabels { named: std::collections::BTreeSet::new(), max }
    }

    fn label(&mut self, topic: &str) -> String {
        if self.named.contains(topic) || self.named.len() < self.max && self.named.insert(topic.to_string()) {
            return topic.to_string();
        }
        OTHER_TOPICS.to_string()
    }
}

/// Counts a produce to `topic` acknowledged: `records` records in `bytes` bytes.
pub fn topic_produced(topic: &str, records: u32, bytes: usize) {
    let label = topic_label(topic);
    metrics::counter!(TOPIC_PRODUCE_RECORDS, "topic" => label.clone()).increment(u64::from(records));
    metrics::counter!(TOPIC_PRODUCE_BYTES, "topic" => label).increment(bytes as u64);
}

/// Counts `bytes` of `topic` sent to a consumer in answer to a fetch.
pub fn fetched(topic: &str, bytes: usize) {
    metrics::counter!(FETCH_BYTES).increment(bytes as u64);
    metrics::counter!(TOPIC_FETCH_BYTES, "topic" => topic_label(topic)).increment(bytes as u64);
}

/// Counts a produce request answered with an error; `kind` is one of `PRODUCE_ERROR_KINDS`.
pub fn produce_error(kind: &'static str) {
    debug_assert!(PRODUCE_ERROR_KINDS.contains(&kind), "undeclared produce error kind {kind}");
    metrics::counter!(PRODUCE_ERRORS, "kind" => kind).increment(1);
}

/// Counts a refused connection; `reason` is one of `HANDSHAKE_FAILURE_REASONS`.
pub fn handshake_failure(reason: &'static str) {
    debug_assert!(HANDSHAKE_FAILURE_REASONS.contains(&reason), "undeclared handshake failure reason {reason}");
    metrics::counter!(QUIC_HANDSHAKE_FAILURES, "reason" => reason).increment(1);
}

/// Counts one open QUIC connection of `kind` (one of `PROTOCOLS`) in `keel_quic_connections`
/// for as long as it lives; dropping it, also by aborting the task that holds it, uncounts it.
pub struct OpenConnection(metrics::Gauge);

impl OpenConnection {
    pub fn new(kind: &'static str) -> OpenConnection {
        debug_assert!(PROTOCOLS.contains(&kind), "undeclared connection kind {kind}");
        OpenConnection::counting(metrics::gauge!(QUIC_CONNECTIONS, "kind" => kind))
    }

    /// Counts one open Kafka connection in `keel_kafka_connections`.
    pub fn kafka() -> OpenConnection {
        OpenConnection::counting(metrics::gauge!(KAFKA_CONNECTIONS))
    }

    fn counting(gauge: metrics::Gauge) -> OpenConnection {
        gauge.increment(1.0);
        OpenConnection(gauge)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Counts one Kafka request and its latency; `api` is one of the Kafka API labels, `error`
/// one of the Kafka error labels.
pub fn kafka_request(api: &'static str, error: &'static str, latency: std::time::Duration) {
    debug_assert!(KAFKA_APIS.contains(&api) && KAFKA_ERRORS.contains(&error), "undeclared {api} / {error}");
    metrics::counter!(KAFKA_REQUESTS, "api" => api, "error" => error).increment(1);
    metrics::histogram!(KAFKA_REQUEST_LATENCY, "api" => api).record(latency.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_past_the_bound_share_one_series_and_named_ones_keep_theirs() {
        let mut labels = TopicLabels::new(2);
        assert_eq!(labels.label("orders"), "orders");
        assert_eq!(labels.label("clicks"), "clicks");
        assert_eq!(labels.label("audit"), OTHER_TOPICS);
        assert_eq!(labels.label("orders"), "orders");
        assert!(crate::metadata::check_topic_name(OTHER_TOPICS, true).is_err(), "a topic could be named so");
    }

    /// Prometheus conventions that a name can be checked for on its own.
    #[test]
    fn names_follow_prometheus_conventions() {
        let mut seen = std::collections::BTreeSet::new();
        for (name, kind, unit, _, help) in METRICS {
            assert!(seen.insert(*name), "{name} is listed twice");
            assert!(name.starts_with("keel_"), "{name}: no keel_ prefix");
            assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'), "{name}");
            assert_eq!(matches!(kind, Counter), name.ends_with("_total"), "{name}: _total is for counters only");
            let suffix = name.trim_end_matches("_total");
            match unit {
                Unit::Seconds => assert!(suffix.ends_with("_seconds"), "{name}: a time in seconds ends in _seconds"),
                Unit::Bytes => assert!(suffix.ends_with("_bytes"), "{name}: a size in bytes ends in _bytes"),
                _ => assert!(!suffix.ends_with("_seconds") && !suffix.ends_with("_bytes"), "{name}: wrong unit"),
            }
            assert!(help.ends_with('.'), "{name}: the description is a sentence");
        }
    }
}
