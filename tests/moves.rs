//! Partition moves and node decommission on real `keel serve` processes (issue 17): a move
//! under produce load ends with the new replicas byte-identical and the old one deleted; a
//! decommissioned node ends hosting nothing and can be stopped without losing a majority;
//! a move to a node that is down waits before joint consensus, is abandoned by `--abort`,
//! and completes once the node is up.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::load::{Acked, check_acked, client_args, keel, metadata, partition, spawn_producer, wait_until};
use common::{Cluster, read_log};
use keel::batch::Record;
use keel::server::layout::group_log_dir;

/// `keel partition move TOPIC/0 --to TARGET --wait WAIT` with the cluster's client flags.
fn move_args(cluster: &Cluster, topic: &str, target: &[u64], wait: &str) -> Vec<String> {
    let mut args = vec!["partition".into(), "move".into(), format!("{topic}/0"), "--to".into(), ids(target)];
    args.extend(["--wait".into(), wait.into()]);
    args.extend(client_args(cluster));
    args
}

fn ids(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

/// The data entries (records) of `group` on node `id`, by index: the node must be stopped.
fn data_entries(cluster: &Cluster, id: u64, group: u64) -> BTreeMap<u64, bytes::Bytes> {
    let log = read_log(&cluster.node(id).dir, group);
    log.into_iter().filter(|e| e.record_count() > 0).map(|e| (e.index(), e.as_bytes().clone())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_moves_to_another_node_under_produce_load() {
    const TOPIC: &str = "moving";
    let mut cluster = Cluster::start(4, &[]);
    let client = cluster.client().await;
    cluster.create_topic_once_set_up(&client, TOPIC, 1).await;
    let before = partition(&client, TOPIC, 0).await;
    // The preferred leader leaves (it most likely leads: the move hands leadership over),
    // and the one node that hosted nothing of the topic joins.
    let leaving = before.replicas[0];
    let joining = (1..=4).find(|n| !before.replicas.contains(n)).expect("a fourth node");
    let target = vec![before.replicas[1], before.replicas[2], joining];

    let (acked, stop) = (Acked::default(), Arc::new(AtomicBool::new(false)));
    let producer = spawn_producer(cluster.client().await, TOPIC, 1, acked.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let (status, out, err) = keel(move_args(&cluster, TOPIC, &target, "40s")).await;
    assert!(status.success(), "keel partition move failed: {out}{err}\n{}", cluster.logs());
    println!("{out}the move took {:?} under produce load", started.elapsed());
    assert!(out.contains(&format!("moved {TOPIC}/0: replicas {}", ids(&target))), "{out}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let batches = producer.await.expect("producer");
    println!("{batches} batches sent during the move");

    let after = partition(&client, TOPIC, 0).await;
    assert_eq!(after.replicas, target);
    assert!(after.target.is_empty());
    let group = after.group;
    let dir = group_log_dir(&cluster.node(leaving).dir, group);
    wait_until(&cluster, "the old replica deleted", Duration::from_secs(20), async || !dir.exists()).await;
    assert!(group_log_dir(&cluster.node(joining).dir, group).exists());
    check_acked(&client, &acked).await;

    // Byte-identical: the new replica holds every data entry the others hold, the same bytes.
    cluster.stop_all();
    let reference = data_entries(&cluster, target[0], group);
    assert!(!reference.is_empty());
    for id in &target[1..] {
        assert_eq!(data_entries(&cluster, *id, group), reference, "node {id}'s log differs from node {}", target[0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decommissioned_node_hosts_nothing_and_can_be_stopped() {
    const TOPIC: &str = "draining";
    const VICTIM: u64 = 4;
    let mut cluster = Cluster::start(4, &[]);
    let client = cluster.client().await;
    cluster.create_topic_once_set_up(&client, TOPIC, 4).await;
    let (acked, stop) = (Acked::default(), Arc::new(AtomicBool::new(false)));
    let producer = spawn_producer(cluster.client().await, TOPIC, 4, acked.clone(), stop.clone());

    let mut args: Vec<String> = vec!["node".into(), "decommission".into(), VICTIM.to_string()];
    args.extend(["--wait".into(), "45s".into()]);
    args.extend(client_args(&cluster));
    let started = Instant::now();
    let (status, out, err) = keel(args).await;
    assert!(status.success(), "keel node decommission failed: {out}{err}\n{}", cluster.logs());
    println!("{out}the decommission took {:?} under produce load", started.elapsed());
    assert!(out.contains(&format!("node {VICTIM} is removed")), "{out}");

    let m = metadata(&client).await;
    assert_eq!(m.broker(VICTIM).map(|b| b.state.as_str()), Some("removed"));
    for t in &m.topics {
        for p in &t.partitions {
            assert!(!p.replicas.contains(&VICTIM) && p.target.is_empty(), "{}/{}: {p:?}", t.name, p.partition);
            assert_eq!(p.replicas.len(), 3, "{}/{}: {p:?}", t.name, p.partition);
        }
    }
    let groups = cluster.node(VICTIM).dir.join("groups");
    wait_until(&cluster, "every data replica deleted from the node", Duration::from_secs(20), async || {
        let left: Vec<_> = std::fs::read_dir(&groups).into_iter().flatten().flatten().collect();
        left.iter().all(|e| e.file_name() == "0")
    })
    .await;

    // Stopped, it takes no partition's majority away: produce goes on everywhere.
    cluster.stop(VICTIM, Duration::from_secs(10));
    let mut list: Vec<String> = vec!["node".into(), "list".into(), "--format".into(), "json".into()];
    list.extend(client_args(&cluster));
    let (status, out, err) = keel(list).await;
    assert!(status.success(), "keel node list failed: {out}{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).expect("json");
    let row = rows.iter().find(|r| r["id"] == VICTIM).expect("the node listed");
    assert_eq!((&row["state"], &row["partitions"]), (&"removed, down".into(), &0.into()), "{rows:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = acked.lock().unwrap().len();
    wait_until(&cluster, "produce after the node stopped", Duration::from_secs(20), async || {
        acked.lock().unwrap().len() > before + 100
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    producer.await.expect("producer");
    check_acked(&client, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_to_a_down_node_waits_before_joint_consensus_and_can_be_aborted() {
    const TOPIC: &str = "stuck";
    let mut cluster = Cluster::start(4, &[]);
    let client = cluster.client().await;
    cluster.create_topic_once_set_up(&client, TOPIC, 1).await;
    let before = partition(&client, TOPIC, 0).await;
    let down = (1..=4).find(|n| !before.replicas.contains(n)).expect("a fourth node");
    let target = vec![before.replicas[1], before.replicas[2], down];
    cluster.kill(down);

    // Requests that cannot be moves are refused, saying why; so is another move meanwhile.
    let other = [before.replicas[0], before.replicas[1], down];
    let refusals: [(&str, &[u64], &str); 4] = [
        ("nope/0", &target, "unknown topic \"nope\""),
        ("stuck/5", &target, "has no partition 5"),
        ("stuck/0", &[1, 2, 9], "node 9 is not a registered broker"),
        ("stuck/0", &target[..2], "has 3 replicas; the target names 2"),
    ];
    for (what, to, why) in refusals {
        let mut args = vec!["partition".into(), "move".into(), what.into(), "--to".into(), ids(to)];
        args.extend(client_args(&cluster));
        let (status, out, err) = keel(args).await;
        assert!(!status.success() && err.contains(why), "{what} --to {to:?}: {out}{err}");
    }
    let (status, out, err) = keel(move_args(&cluster, TOPIC, &target, "3s")).await;
    assert!(!status.success(), "a move to a down node finished: {out}{err}");
    assert!(err.contains("learners catching up"), "{out}{err}");

    // It stays before joint consensus for as long as the learner is down.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let phase = client.move_status(TOPIC, 0).await.expect("move status").expect("a move");
        assert_eq!(phase, ("learners catching up".to_string(), vec![down]));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, out, err) = keel(move_args(&cluster, TOPIC, &other, "3s")).await;
    assert!(!status.success() && err.contains("is already moving to"), "{out}{err}");
    let mut abort = vec!["partition".into(), "move".into(), format!("{TOPIC}/0"), "--abort".into()];
    abort.extend(client_args(&cluster));
    let (status, out, err) = keel(abort).await;
    assert!(status.success(), "abort failed: {out}{err}\n{}", cluster.logs());
    let after = partition(&client, TOPIC, 0).await;
    assert_eq!((after.replicas, after.target), (before.replicas.clone(), vec![]));

    // With the node up, the same move completes.
    cluster.restart(down);
    let acked = Acked::default();
    let values: Vec<String> = (0..50).map(|i| format!("v{i}")).collect();
    let records = values.iter().map(|v| Record::new(v.clone())).collect();
    let base = client.produce_to(TOPIC, 0, records).await.expect("produce");
    acked.lock().unwrap().extend(values.into_iter().enumerate().map(|(i, v)| ((TOPIC.into(), 0, base + i as u64), v)));
    let (status, out, err) = keel(move_args(&cluster, TOPIC, &target, "40s")).await;
    assert!(status.success(), "the move did not complete with the node up: {out}{err}\n{}", cluster.logs());
    assert_eq!(partition(&client, TOPIC, 0).await.replicas, target);
    check_acked(&client, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decommission_that_would_leave_too_few_nodes_is_refused_and_changes_nothing() {
    let cluster = Cluster::start(3, &[]);
    let client = cluster.client().await;
    cluster.wait_set_up(1).await;
    let mut args: Vec<String> = vec!["node".into(), "decommission".into(), "3".into()];
    args.extend(client_args(&cluster));
    let (status, out, err) = keel(args).await;
    assert!(!status.success() && err.contains("cannot drain node 3"), "{out}{err}");
    assert!(err.contains("add a broker first"), "{err}");
    let m = metadata(&client).await;
    assert_eq!(m.broker(3).map(|b| b.state.as_str()), Some("active"));
    assert!(m.topics.iter().flat_map(|t| &t.partitions).all(|p| p.target.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_resumes_under_the_next_leader_after_its_leader_is_killed() {
    const TOPIC: &str = "resumed";
    let mut cluster = Cluster::start(4, &[]);
    let client = cluster.client().await;
    cluster.create_topic_once_set_up(&client, TOPIC, 1).await;
    let before = partition(&client, TOPIC, 0).await;
    let joining = (1..=4).find(|n| !before.replicas.contains(n)).expect("a fourth node");
    let target = vec![before.replicas[1], before.replicas[2], joining];
    // The move starts while its new node is down, so it waits with a learner added.
    cluster.kill(joining);
    let (status, out, err) = keel(move_args(&cluster, TOPIC, &target, "2s")).await;
    assert!(!status.success() && err.contains("learners catching up"), "{out}{err}");

    // Its leader dies; another takes the partition over, then the new node comes up.
    let leader = partition(&client, TOPIC, 0).await.leader.expect("a leader");
    cluster.kill(leader);
    cluster.restart(joining);
    let (status, out, err) = keel(move_args(&cluster, TOPIC, &target, "40s")).await;
    assert!(status.success(), "the move did not resume after node {leader} died: {out}{err}\n{}", cluster.logs());
    // Done by the next leader: the command may find it finished, or follow it to the end.
    println!("{out}");
    let after = partition(&client, TOPIC, 0).await;
    assert_eq!((after.replicas, after.target), (target, vec![]));
}
