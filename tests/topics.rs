//! Topics with many partitions through keel's own CLI, against real `keel serve` processes:
//! keyed records stay together, every replica of every partition holds the same log, a
//! topic is known everywhere once its creation is reported, and a deleted topic's files
//! go from a node that was down when it was deleted.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Cluster, keel, read_log};
use keel::client::{Client, ClientConfig};
use keel::server::layout::group_log_dir;

fn cli(cluster: &Cluster, command: &[&str], bootstrap: &str, input: &[u8]) -> (bool, String, String) {
    let mut args: Vec<&str> = command.to_vec();
    args.extend(["--bootstrap", bootstrap, "--tls", cluster.tls.to_str().unwrap()]);
    let (status, out, err) = keel(&args, input);
    (status.success(), out, err)
}

/// The group ids a node hosts (its `groups/` directory).
fn hosted_groups(dir: &Path) -> BTreeSet<u64> {
    let entries = std::fs::read_dir(dir.join("groups")).into_iter().flatten().flatten();
    entries.filter_map(|e| e.file_name().to_str()?.parse().ok()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_records_stay_in_one_partition_and_every_replica_holds_the_same_log() {
    let mut cluster = Cluster::start(3, &[]);
    for (topic, partitions) in [("one", 1u32), ("eight", 8), ("sixty-four", 64)] {
        let count = partitions.to_string();
        let (ok, out, err) =
            cli(&cluster, &["topic", "create", topic, "--partitions", &count], &cluster.node(1).addr, b"");
        assert!(ok, "create {topic}: {err}\n{}", cluster.logs());
        assert!(out.contains(topic), "{out}");
        // Once a creation is reported, every node serves the topic, however far its
        // metadata lagged the leader's; `topic describe` shows it from any node.
        for id in 1..=3 {
            let addr = &cluster.node(id).addr;
            let (ok, out, err) = cli(&cluster, &["consume", "--topic", topic], addr, b"");
            assert!(
                ok && out.is_empty(),
                "consume {topic} at node {id} right after its creation: {err}\n{}",
                cluster.logs()
            );
            let (ok, out, err) = cli(&cluster, &["topic", "describe", topic, "--format", "json"], addr, b"");
            assert!(ok, "describe {topic} at node {id} right after its creation: {err}");
            let described: serde_json::Value = serde_json::from_str(&out).expect("json");
            assert_eq!(described["partitions"].as_array().map(Vec::len), Some(partitions as usize), "{out}");
        }
        let input: String = (0..3000).map(|i| format!("key-{}:{topic}-{i}\n", i % 100)).collect();
        let produce = ["produce", "--topic", topic, "--key-separator", ":"];
        let (ok, _, err) = cli(&cluster, &produce, &cluster.node(2).addr, input.as_bytes());
        assert!(ok, "produce to {topic}: {err}\n{}", cluster.logs());

        let (ok, out, err) =
            cli(&cluster, &["consume", "--topic", topic, "--format", "json"], &cluster.node(3).addr, b"");
        assert!(ok, "consume {topic}: {err}");
        let mut partition_of_key = BTreeMap::new();
        let mut values = BTreeSet::new();
        for line in out.lines() {
            let row: serde_json::Value = serde_json::from_str(line).expect("json line");
            assert_eq!(row["topic"], topic);
            let partition = row["partition"].as_u64().expect("partition");
            assert!(partition < u64::from(partitions), "{row}");
            let key = row["key"].as_str().expect("key").to_string();
            let first = *partition_of_key.entry(key.clone()).or_insert(partition);
            assert_eq!(first, partition, "key {key} is in partitions {first} and {partition}");
            assert!(values.insert(row["value"].as_str().expect("value").to_string()), "{row} read twice");
        }
        assert_eq!(values.len(), 3000, "{topic}: every record once");
        // Right after, `topic describe` counts them all (its offsets come from the leaders).
        let (ok, out, err) =
            cli(&cluster, &["topic", "describe", topic, "--format", "json"], &cluster.node(1).addr, b"");
        assert!(ok, "describe {topic}: {err}");
        let described: serde_json::Value = serde_json::from_str(&out).expect("json");
        let held: u64 = described["partitions"]
            .as_array()
            .expect("partitions")
            .iter()
            .map(|p| p["log_end_offset"].as_u64().unwrap_or(0) - p["log_start_offset"].as_u64().unwrap_or(0))
            .sum();
        assert_eq!(held, 3000, "{topic}: describe right after produce: {out}");
        let used: BTreeSet<u64> = partition_of_key.values().copied().collect();
        // 100 keys hashed over P partitions: all used for 1 and 8, most for 64.
        assert!(used.len() >= (partitions as usize).min(32), "{topic}: keys used only partitions {used:?}");
    }

    let groups = hosted_groups(&cluster.node(1).dir);
    // Metadata, __consumer_offsets (16), default, and the 73 partitions created here.
    assert!(groups.len() >= 1 + 16 + 1 + 73, "node 1 hosts {} groups", groups.len());
    for id in 2..=3 {
        assert_eq!(hosted_groups(&cluster.node(id).dir), groups, "node {id} hosts other groups than node 1");
    }
    // Logs are compared once every replica has the whole of each log: wait until each
    // partition's end offset is the same on every node, then stop the nodes cleanly.
    let deadline = Instant::now() + Duration::from_secs(20);
    for topic in ["one", "eight", "sixty-four"] {
        loop {
            let ends: Vec<String> = (1..=3)
                .map(|id| cli(&cluster, &["topic", "describe", topic, "--format", "json"], &cluster.node(id).addr, b""))
                .map(|(_, out, _)| out)
                .collect();
            let view = |out: &str| {
                let v: serde_json::Value = serde_json::from_str(out).unwrap_or_default();
                v["partitions"].as_array().map(|ps| ps.iter().map(|p| p["in_sync"].clone()).collect::<Vec<_>>())
            };
            let full = ends
                .iter()
                .all(|out| view(out).is_some_and(|isr| isr.iter().all(|r| r.as_array().map(Vec::len) == Some(3))));
            if full {
                break;
            }
            assert!(Instant::now() < deadline, "{topic}: replicas not all in sync: {ends:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    cluster.stop_all();
    for group in groups {
        let reference = read_log(&cluster.node(1).dir, group);
        for id in 2..=3 {
            let other = read_log(&cluster.node(id).dir, group);
            // A replica stopped early may lack the no-ops of the terms that its stop and the
            // next one began (leadership is handed over on SIGTERM); the rest must be the same.
            let both = reference.len().min(other.len());
            assert!(both + 2 >= reference.len().max(other.len()), "group {group}: node {id} lacks entries");
            assert!(reference[..both] == other[..both], "group {group}: node {id}'s log differs from node 1's");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_deleted_while_a_node_is_down_is_removed_from_it_when_it_returns() {
    let mut cluster = Cluster::start(3, &[]);
    let before = {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let groups = hosted_groups(&cluster.node(3).dir);
            // The metadata group, __consumer_offsets and default.
            if groups.len() >= 18 {
                break groups;
            }
            assert!(Instant::now() < deadline, "node 3 hosts only {groups:?}\n{}", cluster.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let (ok, _, err) =
        cli(&cluster, &["topic", "create", "doomed", "--partitions", "4"], &cluster.bootstrap_arg(), b"");
    assert!(ok, "create: {err}");
    let (ok, _, err) = cli(&cluster, &["produce", "--topic", "doomed"], &cluster.bootstrap_arg(), b"a\nb\nc\n");
    assert!(ok, "produce: {err}");
    let doomed: BTreeSet<u64> = {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let new: BTreeSet<u64> = hosted_groups(&cluster.node(3).dir).difference(&before).copied().collect();
            if new.len() == 4 {
                break new;
            }
            assert!(Instant::now() < deadline, "node 3 hosts {new:?} of the new topic");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };

    cluster.kill(3);
    let alive = format!("{},{}", cluster.node(1).addr, cluster.node(2).addr);
    let (ok, _, err) = cli(&cluster, &["topic", "delete", "doomed"], &alive, b"");
    assert!(ok, "delete with node 3 down: {err}\n{}", cluster.logs());
    let (ok, _, err) = cli(&cluster, &["topic", "describe", "doomed"], &alive, b"");
    assert!(!ok && err.contains("unknown topic"), "describe after delete: {err}");
    let dirs: Vec<_> = cluster.nodes.iter().map(|n| n.dir.clone()).collect();
    let gone = |id: u64| hosted_groups(&dirs[id as usize - 1]).is_disjoint(&doomed);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(gone(1) && gone(2)) {
        assert!(Instant::now() < deadline, "the running nodes keep the deleted topic's files");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!gone(3), "node 3 was down: its files are still there until it returns");

    cluster.restart(3);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !gone(3) {
        assert!(Instant::now() < deadline, "node 3 keeps {:?} after its return\n{}", doomed, cluster.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The node is whole: it still serves the topic every cluster has.
    let (ok, _, err) = cli(&cluster, &["produce", "--topic", "default"], &cluster.node(3).addr, b"after\n");
    assert!(ok, "produce through node 3 after its return: {err}");
    cluster.stop_all();
}

/// The segment files of a stopped or running node's metadata log (group 0), by first index.
fn metadata_segments(dir: &Path) -> Vec<u64> {
    let entries = std::fs::read_dir(group_log_dir(dir, 0)).into_iter().flatten().flatten();
    let names: Vec<String> = entries.filter_map(|e| e.file_name().to_str().map(str::to_string)).collect();
    let mut firsts: Vec<u64> =
        names.iter().filter(|n| n.ends_with(".seg")).filter_map(|n| n[..20].parse().ok()).collect();
    firsts.sort_unstable();
    firsts
}

/// Waits (30 s at most) until node `id` knows as many topics as node 1 and hosts the same
/// groups: its own metadata, not a client's view through another node.
async fn wait_until_known(cluster: &Cluster, id: u64, why: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let topics = |n| async move { cluster.status(n).await.map(|v| v.topics) };
        let (mine, reference) = (topics(id).await, topics(1).await);
        let hosted = hosted_groups(&cluster.node(id).dir) == hosted_groups(&cluster.node(1).dir);
        if mine.is_some() && mine == reference && hosted {
            return;
        }
        assert!(Instant::now() < deadline, "{why}: {mine:?} topics, not {reference:?}\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_log_is_trimmed_after_a_snapshot_and_a_node_down_meanwhile_catches_up_from_it() {
    // Metadata segments of 256 KiB: a few thousand commands fill one.
    let mut cluster = Cluster::start(3, &["--metadata-segment-bytes", "262144"]);
    cluster.client().await.metadata(Some(&["default"])).await.expect("the cluster starts");
    cluster.kill(3);
    let alive = [cluster.node(1).addr.clone(), cluster.node(2).addr.clone()];
    let client = Client::connect(ClientConfig::new(alive, &cluster.tls)).await.expect("client");

    // Thousands of metadata commands (blocks of producer ids) while node 3 is down.
    let changes = 12_000;
    let client = std::sync::Arc::new(client);
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..32 {
        let client = client.clone();
        tasks.spawn(async move {
            for _ in (t..changes).step_by(32) {
                client.allocate_producer_ids(1, 1).await.expect("a metadata command");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("task");
    }
    let (ok, _, err) = cli(&cluster, &["topic", "create", "late", "--partitions", "2"], &cluster.bootstrap_arg(), b"");
    assert!(ok, "create with node 3 down: {err}");

    // The metadata leader snapshots and trims its log: its first segment goes.
    let deadline = Instant::now() + Duration::from_secs(20);
    let trimmed = |id: u64| metadata_segments(&cluster.node(id).dir).first().is_some_and(|first| *first > 1);
    while !(trimmed(1) || trimmed(2)) {
        assert!(Instant::now() < deadline, "no metadata log trimmed: {:?}", metadata_segments(&cluster.node(1).dir));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        cluster.metric(1, "keel_metadata_snapshots_total").unwrap_or(0.0) >= 1.0
            || cluster.metric(2, "keel_metadata_snapshots_total").unwrap_or(0.0) >= 1.0
    );

    // Node 3 lacks what was trimmed: it is sent the snapshot, then the entries after it.
    cluster.restart(3);
    wait_until_known(&cluster, 3, "node 3 never learned the topic created while it was down").await;
    let log = std::fs::read_to_string(&cluster.node(3).log).unwrap_or_default();
    assert!(log.contains("metadata restored from the leader's snapshot"), "node 3 did not install a snapshot");
    assert!(cluster.node(3).dir.join("groups/0/snapshot").exists(), "node 3 keeps no metadata snapshot");
    // It also holds the new topic's replicas and serves it.
    let (ok, _, err) =
        cli(&cluster, &["produce", "--topic", "late", "--partition", "1"], &cluster.node(3).addr, b"x\n");
    assert!(ok, "produce through node 3: {err}");

    // A restart starts from the snapshot kept, then the entries after it.
    cluster.stop(3, Duration::from_secs(10));
    cluster.restart(3);
    wait_until_known(&cluster, 3, "node 3 lost the metadata across a restart").await;
    cluster.stop_all();
}
