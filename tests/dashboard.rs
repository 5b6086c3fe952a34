//! The Grafana dashboard never shows a dead panel: every metric that an expression in
//! `deploy/grafana/dashboards/keel.json` names is exported by a live node. And every metric
//! operators need (the list below) is exported, from start, with Prometheus conventions.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::Cluster;
use keel::batch::Record;
use keel::client::Offset;

const DASHBOARD: &str = include_str!("../deploy/grafana/dashboards/keel.json");

/// The metrics operators need, with their types: written out here, not taken from
/// `src/metrics.rs`, so that dropping one there fails this test.
const REQUIRED: &[(&str, &str)] = &[
    ("keel_build_info", "gauge"),
    ("keel_raft_term", "gauge"),
    ("keel_raft_role", "gauge"),
    ("keel_raft_leader_id", "gauge"),
    ("keel_raft_commit_index", "gauge"),
    ("keel_raft_last_index", "gauge"),
    ("keel_log_start_offset", "gauge"),
    ("keel_log_end_offset", "gauge"),
    ("keel_replication_match_index", "gauge"),
    ("keel_replication_lag_entries", "gauge"),
    ("keel_replication_lag_bytes", "gauge"),
    ("keel_replication_inflight_appends", "gauge"),
    ("keel_replication_round_trip_seconds", "histogram"),
    ("keel_raft_elections_started_total", "counter"),
    ("keel_raft_elections_won_total", "counter"),
    ("keel_raft_leader_changes_total", "counter"),
    ("keel_raft_pre_votes_rejected_total", "counter"),
    ("keel_append_batches_sent_total", "counter"),
    ("keel_append_entries_sent_total", "counter"),
    ("keel_append_batches_received_total", "counter"),
    ("keel_append_entries_received_total", "counter"),
    ("keel_append_batch_bytes", "histogram"),
    ("keel_fsync_seconds", "histogram"),
    ("keel_fsyncs_total", "counter"),
    ("keel_log_segments", "gauge"),
    ("keel_log_bytes", "gauge"),
    ("keel_disk_free_bytes", "gauge"),
    ("keel_disk_reserve_bytes", "gauge"),
    ("keel_disk_nearly_full", "gauge"),
    ("keel_retention_deleted_segments_total", "counter"),
    ("keel_metadata_snapshots_total", "counter"),
    ("keel_produce_requests_total", "counter"),
    ("keel_produce_records_total", "counter"),
    ("keel_produce_bytes_total", "counter"),
    ("keel_produce_latency_seconds", "histogram"),
    ("keel_produce_errors_total", "counter"),
    ("keel_producer_duplicates_total", "counter"),
    ("keel_producer_out_of_order_total", "counter"),
    ("keel_producers_tracked", "gauge"),
    ("keel_fetch_requests_total", "counter"),
    ("keel_fetch_bytes_total", "counter"),
    ("keel_fetch_long_polls_total", "counter"),
    ("keel_topic_produce_records_total", "counter"),
    ("keel_topic_produce_bytes_total", "counter"),
    ("keel_topic_fetch_bytes_total", "counter"),
    ("keel_quic_connections", "gauge"),
    ("keel_quic_handshake_failures_total", "counter"),
    ("keel_frames_rejected_total", "counter"),
];

/// Label names a keel metric may carry, each with a bounded set of values.
const LABELS: &[&str] = &["version", "role", "peer", "kind", "reason", "protocol", "api", "error", "topic"];

#[derive(Default, Debug)]
struct Exposition {
    /// Family name to its `# TYPE`.
    types: BTreeMap<String, String>,
    helps: BTreeSet<String>,
    samples: Vec<Sample>,
}

#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

impl Exposition {
    /// Parses the Prometheus text format (version 0.0.4); panics on a line it cannot read.
    fn parse(text: &str) -> Exposition {
        let mut out = Exposition::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("bad TYPE line: {line}"));
                assert!(out.types.insert(name.into(), kind.into()).is_none(), "{name} has two TYPE lines");
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or_else(|| panic!("bad HELP line: {line}"));
                assert!(!help.trim().is_empty(), "{name} has an empty HELP");
                out.helps.insert(name.into());
            } else if !line.starts_with('#') {
                out.samples.push(parse_sample(line));
            }
        }
        out
    }

    /// Whether `name`, as a PromQL expression would write it, is exported: a family, or the
    /// `_bucket` series of a histogram, or the `_count` / `_sum` series of a histogram or
    /// summary. Suffixes are stripped only where the family's type makes them series of it.
    fn exports(&self, name: &str) -> bool {
        if self.types.contains_key(name) {
            return true;
        }
        let of = |suffix: &str, kinds: &[&str]| {
            name.strip_suffix(suffix).and_then(|family| self.types.get(family)).is_some_and(|k| kinds.contains(&&**k))
        };
        of("_bucket", &["histogram"])
            || of("_count", &["histogram", "summary"])
            || of("_sum", &["histogram", "summary"])
    }

    fn samples_of<'a>(&'a self, family: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| series_family(&s.name) == family)
    }
}

/// The family a series name belongs to (histogram series carry a suffix).
fn series_family(name: &str) -> &str {
    ["_bucket", "_count", "_sum"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name)
}

fn bad(line: &str) -> ! {
    panic!("bad sample line: {line}")
}

fn parse_sample(line: &str) -> Sample {
    let name_end = line.find(['{', ' ']).unwrap_or_else(|| bad(line));
    let name = &line[..name_end];
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(mut body) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = body.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = body.split_once("=\"").unwrap_or_else(|| bad(line));
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next().unwrap_or_else(|| bad(line)) {
                    (_, '\\') => value.push(chars.next().unwrap_or_else(|| bad(line)).1),
                    (i, '"') => break i,
                    (_, c) => value.push(c),
                }
            };
            labels.insert(key.trim_start_matches(',').to_string(), value);
            body = after[end + 1..].trim_start_matches(',');
        }
    }
    let value = rest.split_whitespace().next().unwrap_or_else(|| bad(line));
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().unwrap_or_else(|_| bad(line)),
    };
    Sample { name: name.into(), labels, value }
}

/// Every `keel_*` metric name in the dashboard's PromQL: panel and variable queries.
fn dashboard_metrics(dashboard: &str) -> BTreeSet<String> {
    let json: serde_json::Value = serde_json::from_str(dashboard).expect("keel.json is JSON");
    let mut exprs = Vec::new();
    collect_queries(&json, &mut exprs);
    assert!(!exprs.is_empty(), "the dashboard has no queries");
    let mut names = BTreeSet::new();
    for expr in exprs {
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("keel_") {
            let before = rest[..at].chars().next_back();
            let tail = &rest[at..];
            let len =
                tail.find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')).unwrap_or(tail.len());
            if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                names.insert(tail[..len].to_string());
            }
            rest = &tail[len..];
        }
    }
    names
}

fn collect_queries(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr" | "definition" | "query", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_queries(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_queries(v, out)),
        _ => {}
    }
}

/// The dashboard's metric names that `exposition` does not export.
fn dead(dashboard: &str, exposition: &Exposition) -> Vec<String> {
    dashboard_metrics(dashboard).into_iter().filter(|name| !exposition.exports(name)).collect()
}

/// GET http://ADDR/metrics, by hand (HTTP/1.0: the body ends where the connection does),
/// waiting a few seconds for a node that is still starting.
fn scrape(addr: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match std::net::TcpStream::connect(addr) {
            Ok(stream) => break stream,
            Err(e) if Instant::now() > deadline => panic!("connect {addr}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read /metrics");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.") && head.contains(" 200 "), "GET {addr}/metrics: {head}");
    body.to_string()
}

/// Conventions a whole exposition must follow (what `promtool check metrics` also checks,
/// and what it cannot: explicit buckets, bounded labels).
fn check_conventions(e: &Exposition, peers: &BTreeSet<String>) {
    for (family, kind) in e.types.iter().filter(|(n, _)| n.starts_with("keel_")) {
        assert!(e.helps.contains(family), "{family} has no description");
        assert_ne!(kind, "summary", "{family} is a summary: summaries cannot be aggregated across nodes");
        assert_eq!(kind == "counter", family.ends_with("_total"), "{family} ({kind}): _total is for counters");
        if kind == "histogram" {
            let buckets = e.samples_of(family).filter(|s| s.name.ends_with("_bucket")).count();
            assert!(buckets > 1, "{family} has no explicit buckets");
        }
        for s in e.samples_of(family) {
            for (label, value) in &s.labels {
                assert!(label == "le" || LABELS.contains(&label.as_str()), "{}: unexpected label {label}", s.name);
                let allowed: &[&str] = match label.as_str() {
                    "role" => keel::metrics::ROLES,
                    "reason" if family == "keel_peer_frames_unrouted_total" => keel::metrics::UNROUTED_REASONS,
                    "reason" => keel::metrics::HANDSHAKE_FAILURE_REASONS,
                    "protocol" => keel::metrics::PROTOCOLS,
                    "kind" if family == "keel_produce_errors_total" => keel::metrics::PRODUCE_ERROR_KINDS,
                    "kind" => keel::metrics::PROTOCOLS,
                    "api" => keel::kafka::versions::API_LABELS,
                    "error" => keel::kafka::errors::LABELS,
                    _ => &[],
                };
                assert!(allowed.is_empty() || allowed.contains(&value.as_str()), "{}: {label}={value}", s.name);
                if label == "peer" {
                    assert!(peers.contains(value), "{}: peer={value} is not another node of the cluster", s.name);
                }
            }
        }
    }
}

fn count(e: &Exposition, series: &str) -> f64 {
    e.samples.iter().filter(|s| s.name == series).map(|s| s.value).sum()
}

/// The value of `series` for one topic.
fn of_topic(e: &Exposition, series: &str, topic: &str) -> f64 {
    let of = |s: &&Sample| s.name == series && s.labels.get("topic").is_some_and(|t| t == topic);
    e.samples.iter().filter(of).map(|s| s.value).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_metric_and_every_required_metric_is_exported() {
    let cluster = Cluster::start(3, &[]);
    // A node that just started lists everything already (before any traffic, any leader).
    let fresh = Exposition::parse(&scrape(&cluster.node(3).metrics));
    let missing: Vec<&str> = keel::metrics::names().filter(|n| !fresh.exports(n)).collect();
    assert!(missing.is_empty(), "a fresh node does not export {missing:?}");

    let leader = cluster.wait_leader(Duration::from_secs(10), &[]).await.expect("a leader");
    let client = cluster.client().await;
    for batch in 0..20 {
        let records = (0..10).map(|i| Record::new(format!("record {batch}-{i}"))).collect();
        client.produce(records).await.expect("produce");
    }
    let mut consumer = client.consumer(Offset::Earliest);
    let mut read = 0;
    while read < 200 {
        read += consumer.poll().await.expect("fetch").len();
    }
    // The Raft gauges describe the metadata group, which holds the brokers and the topic
    // `default` (at least 5 entries). Gauges are refreshed once a second, and a follower
    // learns the last commit from the leader's next message: wait (bounded) until every
    // node published the same commit index.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let commit = |id: u64| count(&Exposition::parse(&scrape(&cluster.node(id).metrics)), "keel_raft_commit_index");
    // Every node hosts the metadata group, `default`'s partition and, with three replicas,
    // every partition of `__consumer_offsets`, created right after `default`.
    let hosted_all = 2.0 + f64::from(keel::server::controller::OFFSETS_PARTITIONS);
    let hosted = |id: u64| count(&Exposition::parse(&scrape(&cluster.node(id).metrics)), "keel_groups_hosted");
    while !((1..=3).all(|id| commit(id) >= 5.0)
        && (1..=3).all(|id| commit(id) == commit(1))
        && (1..=3).all(|id| hosted(id) == hosted_all))
    {
        assert!(std::time::Instant::now() < deadline, "the metadata group's commit index is not published");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut metadata_leaders = 0.0;
    let mut fetched_default = 0.0;

    for id in 1..=3 {
        let node = cluster.node(id);
        let text = scrape(&node.metrics);
        let exposition = Exposition::parse(&text);
        let peers: BTreeSet<String> = (1..=3).filter(|&p| p != id).map(|p| p.to_string()).collect();
        check_conventions(&exposition, &peers);
        let dead = dead(DASHBOARD, &exposition);
        assert!(dead.is_empty(), "keel.json uses metrics node {id} does not export: {dead:?}\n{text}");
        for (name, kind) in REQUIRED {
            assert_eq!(exposition.types.get(*name).map(String::as_str), Some(*kind), "node {id}: {name}");
        }
        let missing: Vec<&str> = keel::metrics::names().filter(|n| !exposition.exports(n)).collect();
        assert!(missing.is_empty(), "node {id} does not export {missing:?}");
        assert!(count(&exposition, "keel_fsync_seconds_count") > 0.0, "node {id}: no fsync was timed");
        assert!(count(&exposition, "keel_groups_hosted") == hosted_all, "node {id}: metadata, default, offsets");
        if id == leader {
            assert!(count(&exposition, "keel_produce_latency_seconds_count") >= 20.0, "no produce latency");
            assert!(count(&exposition, "keel_replication_round_trip_seconds_count") > 0.0, "no round trip");
            assert_eq!(count(&exposition, "keel_produce_records_total"), 200.0);
            assert_eq!(of_topic(&exposition, "keel_topic_produce_records_total", "default"), 200.0);
            let bytes = of_topic(&exposition, "keel_topic_produce_bytes_total", "default");
            assert!(bytes >= 200.0 * 10.0, "the topic's produce bytes: {bytes}");
        }
        fetched_default += of_topic(&exposition, "keel_topic_fetch_bytes_total", "default");
        let leads = exposition.samples.iter().find(|s| s.labels.get("role").is_some_and(|r| r == "leader"));
        metadata_leaders += leads.map_or(0.0, |s| s.value);
    }
    assert_eq!(metadata_leaders, 1.0, "one node's role gauge says it leads the metadata group");
    assert!(fetched_default > 0.0, "no node counted the consumer's fetches of topic default");
}

/// The checks above must be able to fail: a misspelt metric, a suffix on the wrong type.
#[test]
fn the_checks_catch_a_dead_panel() {
    let exposition = Exposition::parse(
        "# HELP keel_a_seconds A.\n# TYPE keel_a_seconds histogram\nkeel_a_seconds_bucket{le=\"1\"} 0\n\
         keel_a_seconds_bucket{le=\"+Inf\"} 0\nkeel_a_seconds_sum 0\nkeel_a_seconds_count 0\n\
         # HELP keel_b A.\n# TYPE keel_b gauge\nkeel_b{peer=\"2\",role=\"a \\\"b\\\"\"} 1\n\
         # HELP keel_c_total C.\n# TYPE keel_c_total counter\nkeel_c_total 3\n",
    );
    assert_eq!(exposition.samples[4].labels["role"], "a \"b\"");
    let panel = |expr: &str| format!(r#"{{"panels": [{{"targets": [{{"expr": "{expr}"}}]}}]}}"#);
    let dead_in = |expr: &str| dead(&panel(expr), &exposition);
    assert!(dead_in("histogram_quantile(0.9, sum by (le) (rate(keel_a_seconds_bucket[1m])))").is_empty());
    assert!(dead_in("rate(keel_a_seconds_sum[1m]) / rate(keel_a_seconds_count[1m])").is_empty());
    assert!(dead_in("keel_b + rate(keel_c_total[1m])").is_empty());
    assert_eq!(dead_in("rate(keel_a_secnds_bucket[1m])"), ["keel_a_secnds_bucket"]);
    assert_eq!(dead_in("keel_b_bucket"), ["keel_b_bucket"], "a gauge has no _bucket series");
    assert_eq!(dead_in("rate(keel_c[1m])"), ["keel_c"], "a counter is named with its _total");
    assert_eq!(dead_in("not_keel_b"), Vec::<String>::new(), "only whole keel_ names count");
    let templated = r#"{"templating": {"list": [{"definition": "label_values(keel_x, instance)"}]}}"#;
    assert_eq!(dead(templated, &exposition), ["keel_x"], "variable queries count too");
    // The real dashboard names metrics at all.
    assert!(dashboard_metrics(DASHBOARD).len() > 20);
}
