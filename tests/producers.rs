//! The producer limits are cluster settings (issue 16), against real `keel serve` processes:
//! a cluster whose config file says `producer_id_expiration_ms = 2000` forgets an idle
//! idempotent producer on every replica once a newer batch moves the partition's log time
//! past the expiry, and a cluster with the default (7 days) does not.
//!
//! The batches carry their own timestamps, so the log's time is the test's to move: the
//! expiry follows the log, never a node's clock (`producers/mod.rs`, "Time"), and nothing
//! here waits for the wall clock.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::Cluster;
use keel::batch::Record;
use keel::client::Client;

const NODES: u64 = 3;
const TRACKED: &str = "keel_producers_tracked";

/// A cluster of `NODES` nodes started with `config` as their `--config` file; the file's
/// directory lives as long as the cluster.
fn start(config: &str) -> (tempfile::TempDir, Cluster) {
    let dir = tempfile::tempdir_in(common::test_tmp()).expect("tmp");
    let path = dir.path().join("keel.toml");
    std::fs::write(&path, config).expect("write the config file");
    let cluster = Cluster::start(NODES, &["--config", path.to_str().expect("utf-8 path")]);
    (dir, cluster)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_millis() as i64
}

/// One idempotent batch of one record stamped `timestamp_ms`, to `default`/0.
async fn produce_at(client: &Client, timestamp_ms: i64, value: &str) {
    let record = Record { timestamp_ms, ..Record::new(value.to_string()) };
    client.produce(vec![record]).await.expect("produce");
}

/// Waits until every node has committed (and so applied to its producer table) what the
/// partition's leader has committed now, then returns each node's `keel_producers_tracked`.
async fn tracked_after_commit(cluster: &Cluster) -> Vec<f64> {
    let leader = cluster.wait_leader(Duration::from_secs(10), &[]).await.expect("a partition leader");
    let target = cluster.view(leader).await.expect("the leader answers").commit_index;
    let deadline = Instant::now() + Duration::from_secs(10);
    for id in 1..=NODES {
        loop {
            match cluster.view(id).await {
                Some(view) if view.commit_index >= target => break,
                _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
                other => panic!("node {id} did not commit index {target} in 10 s: {other:?}\n{}", cluster.logs()),
            }
        }
    }
    (1..=NODES).map(|id| cluster.metric(id, TRACKED).expect("the node serves /metrics")).collect()
}

/// Producer A writes at t, B at t + 1 s, then B again at t + 3 s, on a cluster started with
/// `config`: A has then been idle for 3 s of log time. Every node must track both producers
/// after B's first batch, and `tracked_at_the_end` after its second.
async fn a_idle_for_three_seconds(config: &str, tracked_at_the_end: f64) {
    let (_config, cluster) = start(config);
    cluster.wait_leader(Duration::from_secs(10), &[]).await.expect("leader");
    let t = now_ms();
    let a = cluster.client().await;
    produce_at(&a, t, "a").await;
    let b = cluster.client().await;
    produce_at(&b, t + 1000, "b-1").await;
    let everywhere = |n: f64| vec![n; NODES as usize];
    let tracked = tracked_after_commit(&cluster).await;
    assert_eq!(tracked, everywhere(2.0), "A idle for 1 s: both tracked\n{}", cluster.logs());
    produce_at(&b, t + 3000, "b-2").await;
    let tracked = tracked_after_commit(&cluster).await;
    assert_eq!(tracked, everywhere(tracked_at_the_end), "A idle for 3 s ({config:?})\n{}", cluster.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_forgets_a_producer_idle_past_the_clusters_expiry() {
    a_idle_for_three_seconds("producer_id_expiration_ms = 2000\n", 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_default_expiry_a_producer_idle_for_seconds_is_kept() {
    a_idle_for_three_seconds("", 2.0).await;
}
