//! Consumer groups over keel's own protocol, against three real `keel serve` processes:
//! `keel consume --group` resumes from the group's committed offsets, `keel group
//! describe` and `list` show the group and its lag, and two `GroupConsumer`s of the
//! Rust client share a topic's partitions. A group's partition of `__consumer_offsets` is
//! trimmed below its coordinator's checkpoints, and a new coordinator keeps its offsets.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Cluster, keel};
use keel::batch::Record;
use keel::client::{Client, GroupConfig, Offset};
use keel::groups::{CommitOffset, CommitRequest, coordinator_partition};
use keel::kafka::backend::{GroupAnswer, GroupCall};
use keel::metadata::CONSUMER_OFFSETS;

const PARTITIONS: u32 = 3;

async fn cluster_with_topic(topic: &str) -> (Cluster, Client) {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_leader(Duration::from_secs(10), &[]).await.expect("leader");
    let client = cluster.client().await;
    // The nodes register as brokers a moment after the first leader is elected.
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(e) = client.create_topic(topic, Some(PARTITIONS), None, &[]).await {
        assert!(Instant::now() < deadline, "create topic {topic}: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (cluster, client)
}

/// Appends `count` records to every partition, valued `p<partition>-<n>` from `first`.
async fn produce(client: &Client, topic: &str, first: u32, count: u32) {
    for partition in 0..PARTITIONS {
        let records: Vec<Record> =
            (first..first + count).map(|n| Record::new(format!("p{partition}-{n}").into_bytes())).collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        // Every node learns of a new topic from the metadata group, a moment apart.
        loop {
            match client.produce_to(topic, partition, records.clone()).await {
                Ok(_) => break,
                Err(e) if Instant::now() < deadline => eprintln!("produce: {e}; again"),
                Err(e) => panic!("produce to {topic}/{partition}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `keel consume --group` until it exits by itself (read to the end); its JSON lines.
fn consume_group(cluster: &Cluster, topic: &str, group: &str) -> Vec<serde_json::Value> {
    let bootstrap = cluster.bootstrap_arg();
    let tls = cluster.tls.to_string_lossy().into_owned();
    let args =
        ["consume", "--bootstrap", &bootstrap, "--tls", &tls, "--topic", topic, "--group", group, "--format", "json"];
    let (status, stdout, stderr) = keel(&args, b"");
    assert!(status.success(), "keel consume --group failed: {stderr}");
    stdout.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
}

/// Waits (at most 20 s) until the consumer lag the nodes export, summed, is `lag`.
async fn wait_for_lag(cluster: &Cluster, lag: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let sum: f64 = (1..=3).filter_map(|id| cluster.metric(id, "keel_consumer_group_lag_records")).sum();
        let max: f64 = (1..=3).filter_map(|id| cluster.metric(id, "keel_consumer_group_lag_max_records")).sum();
        if sum == lag && max == lag {
            return;
        }
        assert!(Instant::now() < deadline, "consumer lag {sum} (largest group {max}), not {lag}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn group_json(cluster: &Cluster, args: &[&str]) -> serde_json::Value {
    let bootstrap = cluster.bootstrap_arg();
    let tls = cluster.tls.to_string_lossy().into_owned();
    let mut all = vec!["group"];
    all.extend_from_slice(args);
    all.extend(["--bootstrap", &bootstrap, "--tls", &tls, "--format", "json"]);
    let (status, stdout, stderr) = keel(&all, b"");
    assert!(status.success(), "keel group {args:?} failed: {stderr}");
    serde_json::from_str(&stdout).expect("JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn consume_group_twice_reads_each_record_once_and_leaves_no_lag() {
    let (cluster, client) = cluster_with_topic("orders").await;
    produce(&client, "orders", 0, 10).await;

    let first = consume_group(&cluster, "orders", "billing");
    produce(&client, "orders", 10, 4).await;
    // The coordinator's node exports the group's lag: 4 records behind on each partition.
    wait_for_lag(&cluster, 12.0).await;
    let second = consume_group(&cluster, "orders", "billing");
    wait_for_lag(&cluster, 0.0).await;
    let values = |lines: &[serde_json::Value]| -> Vec<String> {
        lines.iter().map(|l| l["value"].as_str().expect("value").to_string()).collect()
    };
    let (first, second) = (values(&first), values(&second));
    assert_eq!(first.len(), 30, "the first run reads everything there was: {first:?}");
    assert_eq!(second.len(), 12, "the second run reads only what came after: {second:?}");
    let all: BTreeSet<&String> = first.iter().chain(&second).collect();
    assert_eq!(all.len(), 42, "no record is read twice across the two runs");
    assert!(
        second.iter().all(|v| v.ends_with("-10") || v.ends_with("-11") || v.ends_with("-12") || v.ends_with("-13"))
    );

    let described = group_json(&cluster, &["describe", "billing"]);
    let partitions = described["partitions"].as_array().expect("partitions");
    assert_eq!(partitions.len(), PARTITIONS as usize, "{described}");
    for p in partitions {
        assert_eq!(p["committed"], 14, "{described}");
        assert_eq!(p["end"], 14, "{described}");
        assert_eq!(p["lag"], 0, "{described}");
    }
    assert_eq!(described["lag"], 0);
    assert_eq!(described["members"].as_array().map(Vec::len), Some(0), "both runs left the group: {described}");

    let listed = group_json(&cluster, &["list"]);
    let names: Vec<&str> = listed.as_array().expect("a list").iter().filter_map(|g| g["group"].as_str()).collect();
    assert_eq!(names, ["billing"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_group_consumers_share_the_partitions_and_describe_shows_who_reads_what() {
    let (_cluster, client) = cluster_with_topic("events").await;
    produce(&client, "events", 0, 5).await;
    let config = GroupConfig { from: Offset::Earliest, max_wait: Duration::from_millis(100), ..GroupConfig::default() };
    let mut a = client.group_consumer("shared", &["events"], config.clone());
    let mut b = client.group_consumer("shared", &["events"], config);
    let mut read: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Both poll until they are in the same stable generation and everything is read.
    loop {
        let (ra, rb) = tokio::join!(a.poll(), b.poll());
        for r in ra.expect("poll a").into_iter().chain(rb.expect("poll b")) {
            read.push(String::from_utf8(r.record.value_bytes().to_vec()).expect("utf-8"));
        }
        a.commit().await.ok();
        b.commit().await.ok();
        let stable = !a.must_join() && !b.must_join() && a.generation() == b.generation();
        if stable && read.len() >= 15 && !a.assignment().is_empty() && !b.assignment().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "no stable split in time: a {:?}, b {:?}", a.assignment(), b.assignment());
    }
    let (pa, pb): (BTreeSet<_>, BTreeSet<_>) =
        (a.assignment().into_iter().collect(), b.assignment().into_iter().collect());
    assert!(pa.is_disjoint(&pb), "a partition assigned twice: {pa:?} {pb:?}");
    assert_eq!(pa.len() + pb.len(), PARTITIONS as usize, "every partition assigned: {pa:?} {pb:?}");
    assert_eq!(read.iter().collect::<BTreeSet<_>>().len(), 15, "every record read: {read:?}");

    let described = client.describe_group("shared").await.expect("describe");
    assert_eq!(described.description.members.len(), 2);
    for (topic, partition) in pa.iter().chain(&pb) {
        let owner = described.owner(topic, *partition).expect("an owner");
        let expected = if pa.contains(&(topic.clone(), *partition)) { a.member_id() } else { b.member_id() };
        assert_eq!(owner, expected, "{topic}/{partition}");
    }
    a.leave().await.expect("a leaves");
    b.leave().await.expect("b leaves");
}

/// A group that commits far more than `__consumer_offsets` segments hold: the
/// coordinator's checkpoints let every replica of its partition drop the segments before
/// them, so the partition's log start moves on all three nodes; kill -9 of the coordinator's
/// node, and the new coordinator, loading what is left, answers the latest committed
/// offsets (none goes back).
#[tokio::test(flavor = "multi_thread")]
async fn checkpoints_trim_consumer_offsets_on_every_replica_and_a_new_coordinator_keeps_the_offsets() {
    // Segments of 256 KiB; a commit of 200 offsets is about 11 KB of records, so a
    // checkpoint is due every two dozen commits.
    let mut cluster = Cluster::start(3, &["--segment-bytes", "262144", "--record-bytes-max", "65536"]);
    cluster.wait_leader(Duration::from_secs(10), &[]).await.expect("leader");
    let client = cluster.client().await;
    let group = "trimmed";
    let offsets_partitions = client.partitions(CONSUMER_OFFSETS).await.expect("__consumer_offsets");
    let partition = coordinator_partition(group, offsets_partitions);
    // Only keel writes its internal topics: a client's record there could pass for a
    // coordinator's (a checkpoint marker would let the replicas drop committed offsets).
    let forged = client.produce_to(CONSUMER_OFFSETS, partition, vec![Record::new(b"forged".to_vec())]).await;
    assert!(forged.as_ref().is_err_and(|e| e.to_string().contains("internal")), "{forged:?}");
    const ROUNDS: i64 = 150;
    const PARTITIONS_COMMITTED: i32 = 200;
    const ONCE: i64 = 7;
    for round in 1..=ROUNDS {
        let commit = |partition, offset| CommitOffset {
            topic: "orders".into(),
            partition,
            offset,
            leader_epoch: -1,
            metadata: None,
        };
        let mut offsets: Vec<CommitOffset> = (0..PARTITIONS_COMMITTED).map(|p| commit(p, round)).collect();
        // Committed once, in the first segment: only the checkpoints carry it on.
        if round == 1 {
            offsets.push(commit(PARTITIONS_COMMITTED, ONCE));
        }
        let request = CommitRequest {
            group_id: group.into(),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
            offsets,
        };
        match client.group_call(GroupCall::Commit(request), Duration::ZERO).await {
            Ok(GroupAnswer::Commit(r)) => assert!(r.partitions.iter().all(|p| p.error.is_none()), "{r:?}"),
            other => panic!("commit {round}: {other:?}"),
        }
    }

    // Every replica trims: its log start moves past the first checkpoint.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut coordinator = None;
    loop {
        let mut starts = Vec::new();
        for id in 1..=3 {
            let node = cluster.client_of(id).await;
            let view = node.partition_status_from(&cluster.node(id).addr, CONSUMER_OFFSETS, partition).await;
            let view = view.expect("a replica's status");
            if view.role == "leader" {
                coordinator = Some(id);
            }
            starts.push((view.log_start_offset, view.log_end_offset));
        }
        if starts.iter().all(|(start, _)| *start > 0) {
            println!("__consumer_offsets/{partition} (start, end) on the three nodes: {starts:?}");
            break;
        }
        assert!(Instant::now() < deadline, "__consumer_offsets/{partition} is not trimmed everywhere: {starts:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let coordinator = coordinator.expect("the partition's leader");

    cluster.kill(coordinator);
    let client = cluster.client_of(coordinator % 3 + 1).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.committed_offsets(group, None).await {
            Ok(offsets) => {
                let once = offsets.get(&("orders".to_string(), PARTITIONS_COMMITTED as u32));
                assert_eq!(once, Some(&ONCE), "the offset committed once before the trimmed segments is kept");
                assert_eq!(offsets.len(), PARTITIONS_COMMITTED as usize + 1, "{offsets:?}");
                let back: Vec<_> = offsets.iter().filter(|(_, o)| **o != ROUNDS && **o != ONCE).collect();
                assert!(back.is_empty(), "offsets went back: {back:?}");
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "no new coordinator answered: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
