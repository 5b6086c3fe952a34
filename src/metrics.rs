//! Every metric keel exports: its name, unit and description in one table, and the
//! Prometheus endpoint. Names follow Prometheus conventions: a `keel_` prefix, base units
//! (seconds, bytes), `_total` counters, histograms with explicit buckets so they aggregate
//! across nodes. Only per-peer metrics carry a label naming a node (`peer`); every other
//! label takes a small, fixed set of values.

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
pub const RETENTION_DELETED_SEGMENTS: &str = "keel_retention_deleted_segments_total";
pub const PRODUCE_REQUESTS: &str = "keel_produce_requests_total";
pub const PRODUCE_RECORDS: &str = "keel_produce_records_total";
pub const PRODUCE_BYTES: &str = "keel_produce_bytes_total";
pub const PRODUCE_LATENCY: &str = "keel_produce_latency_seconds";
pub const PRODUCE_ERRORS: &str = "keel_produce_errors_total";
pub const FETCH_REQUESTS: &str = "keel_fetch_requests_total";
pub const FETCH_BYTES: &str = "keel_fetch_bytes_total";
pub const FETCH_LONG_POLLS: &str = "keel_fetch_long_polls_total";
pub const QUIC_CONNECTIONS: &str = "keel_quic_connections";
pub const QUIC_HANDSHAKE_FAILURES: &str = "keel_quic_handshake_failures_total";
pub const FRAMES_REJECTED: &str = "keel_frames_rejected_total";
pub const PEER_FRAMES_DROPPED: &str = "keel_peer_frames_dropped_total";
pub const STORAGE_CORRUPTIONS: &str = "keel_storage_corruptions_total";
pub const STORAGE_REPAIRS: &str = "keel_storage_repairs_total";
pub const RAFT_VOTE_BARRIER: &str = "keel_raft_vote_barrier_index";

enum Kind {
    Counter,
    Gauge,
    Histogram(&'static [f64]),
}

const LATENCY_BUCKETS: &[f64] =
    &[0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0];
const BYTES_BUCKETS: &[f64] = &[256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0];

/// name, kind, unit, description.
const METRICS: &[(&str, Kind, Unit, &str)] = &[
    (BUILD_INFO, Kind::Gauge, Unit::Count, "Always 1; the version label names the running build."),
    (RAFT_TERM, Kind::Gauge, Unit::Count, "The node's current Raft term."),
    (RAFT_ROLE, Kind::Gauge, Unit::Count, "1 for the node's current role (label role), 0 for the others."),
    (RAFT_LEADER_ID, Kind::Gauge, Unit::Count, "The leader this node knows of (0: none)."),
    (RAFT_COMMIT_INDEX, Kind::Gauge, Unit::Count, "Highest Raft index committed and durable on this node."),
    (RAFT_LAST_INDEX, Kind::Gauge, Unit::Count, "Highest Raft index in this node's log."),
    (LOG_START_OFFSET, Kind::Gauge, Unit::Count, "Offset of the first record this node still holds."),
    (LOG_END_OFFSET, Kind::Gauge, Unit::Count, "Offset after the last committed record on this node."),
    (REPLICATION_MATCH_INDEX, Kind::Gauge, Unit::Count, "Leader only: highest index known replicated to peer."),
    (REPLICATION_LAG_ENTRIES, Kind::Gauge, Unit::Count, "Leader only: entries the peer is missing."),
    (REPLICATION_LAG_BYTES, Kind::Gauge, Unit::Bytes, "Leader only: bytes of entries the peer is missing."),
    (REPLICATION_INFLIGHT, Kind::Gauge, Unit::Count, "Leader only: AppendEntries in flight to the peer."),
    (REPLICATION_RTT, Kind::Histogram(LATENCY_BUCKETS), Unit::Seconds, "AppendEntries/heartbeat round trip."),
    (ELECTIONS_STARTED, Kind::Counter, Unit::Count, "Elections this node started as a candidate."),
    (ELECTIONS_WON, Kind::Counter, Unit::Count, "Elections this node won."),
    (LEADER_CHANGES, Kind::Counter, Unit::Count, "Times the leader this node knows of changed."),
    (PRE_VOTES_REJECTED, Kind::Counter, Unit::Count, "Pre-vote requests of this node that a peer rejected."),
    (APPEND_BATCHES_SENT, Kind::Counter, Unit::Count, "AppendEntries messages with entries sent."),
    (APPEND_ENTRIES_SENT, Kind::Counter, Unit::Count, "Entries sent in AppendEntries messages."),
    (APPEND_BATCHES_RECEIVED, Kind::Counter, Unit::Count, "AppendEntries messages with entries received."),
    (APPEND_ENTRIES_RECEIVED, Kind::Counter, Unit::Count, "Entries received in AppendEntries messages."),
    (APPEND_BATCH_BYTES, Kind::Histogram(BYTES_BUCKETS), Unit::Bytes, "Entry bytes per AppendEntries sent."),
    (FSYNC_SECONDS, Kind::Histogram(LATENCY_BUCKETS), Unit::Seconds, "Time of one log fsync (group commit)."),
    (FSYNCS, Kind::Counter, Unit::Count, "Log fsyncs."),
    (LOG_SEGMENTS, Kind::Gauge, Unit::Count, "Segment files in the log."),
    (LOG_BYTES, Kind::Gauge, Unit::Bytes, "Bytes of entries in the log's segment files."),
    (RETENTION_DELETED_SEGMENTS, Kind::Counter, Unit::Count, "Segments deleted by retention."),
    (PRODUCE_REQUESTS, Kind::Counter, Unit::Count, "Produce requests received."),
    (PRODUCE_RECORDS, Kind::Counter, Unit::Count, "Records acknowledged to producers."),
    (PRODUCE_BYTES, Kind::Counter, Unit::Bytes, "Record bytes acknowledged to producers."),
    (PRODUCE_LATENCY, Kind::Histogram(LATENCY_BUCKETS), Unit::Seconds, "Produce request received to acknowledged."),
    (PRODUCE_ERRORS, Kind::Counter, Unit::Count, "Produce requests answered with an error, by kind."),
    (FETCH_REQUESTS, Kind::Counter, Unit::Count, "Fetch requests received."),
    (FETCH_BYTES, Kind::Counter, Unit::Bytes, "Entry bytes returned by fetches."),
    (FETCH_LONG_POLLS, Kind::Counter, Unit::Count, "Fetches that waited at the end of the log."),
    (QUIC_CONNECTIONS, Kind::Gauge, Unit::Count, "Open QUIC connections, by kind (peer, client)."),
    (QUIC_HANDSHAKE_FAILURES, Kind::Counter, Unit::Count, "Refused connections, by reason."),
    (FRAMES_REJECTED, Kind::Counter, Unit::Count, "Malformed frames received, by protocol."),
    (PEER_FRAMES_DROPPED, Kind::Counter, Unit::Count, "Frames to peers dropped because their queue was full."),
    (STORAGE_CORRUPTIONS, Kind::Counter, Unit::Count, "Corrupt entries found on disk (then repaired)."),
    (
        STORAGE_REPAIRS,
        Kind::Counter,
        Unit::Count,
        "Log cuts before a damaged entry, to fetch it again from the leader.",
    ),
    (
        RAFT_VOTE_BARRIER,
        Kind::Gauge,
        Unit::Count,
        "While above the durable log's end: the index this node needs again before it votes (0: none).",
    ),
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

/// Installs the process-wide recorder and serves `/metrics` on `addr` over HTTP.
pub fn serve(addr: SocketAddr) -> Result<(), MetricsError> {
    let mut builder = PrometheusBuilder::new().with_http_listener(addr);
    for (name, kind, ..) in METRICS {
        if let Kind::Histogram(buckets) = kind {
            builder = builder
                .set_buckets_for_metric(Matcher::Full((*name).into()), buckets)
                .map_err(|e| MetricsError { addr, why: e.to_string() })?;
        }
    }
    builder.install().map_err(|e| MetricsError { addr, why: e.to_string() })?;
    describe();
    Ok(())
}

fn describe() {
    for (name, kind, unit, help) in METRICS {
        match kind {
            Kind::Counter => metrics::describe_counter!(*name, *unit, *help),
            Kind::Gauge => metrics::describe_gauge!(*name, *unit, *help),
            Kind::Histogram(_) => metrics::describe_histogram!(*name, *unit, *help),
        }
    }
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}
