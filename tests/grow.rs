//! Growing and repairing a cluster on real `keel serve` processes (issue 17): nodes join a
//! running cluster with `keel serve --join` (a learner of the metadata group, a voter with
//! `--voter` once caught up) and take replicas and leadership under produce load; a node
//! whose disk was lost is decommissioned while down and replaced; a `--voter` node that is
//! down stays a learner, and the metadata group keeps committing.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::Cluster;
use common::load::{Acked, check_acked, client_args, keel, metadata, wait_until};
use keel::client::Client;
use keel::net::client_codec::MemberView;

/// The metadata group's members as its leader sees them (empty while no leader answers).
async fn metadata_members(cluster: &Cluster) -> Vec<MemberView> {
    for node in cluster.nodes.iter().filter(|n| cluster.running(n.id)) {
        if let Some(view) = cluster.status(node.id).await
            && view.leader == Some(view.node_id)
        {
            return view.members;
        }
    }
    Vec::new()
}

/// The metadata group's voters and learners, as its leader sees them.
async fn voters_and_learners(cluster: &Cluster) -> (Vec<u64>, Vec<u64>) {
    let members = metadata_members(cluster).await;
    let voters = members.iter().filter(|m| m.voter).map(|m| m.id).collect();
    let learners = members.iter().filter(|m| !m.voter).map(|m| m.id).collect();
    (voters, learners)
}

/// Acked records per second over `window`.
async fn rate(acked: &Acked, window: Duration) -> f64 {
    let before = acked.lock().unwrap().len();
    tokio::time::sleep(window).await;
    (acked.lock().unwrap().len() - before) as f64 / window.as_secs_f64()
}

async fn run_keel(cluster: &Cluster, what: &str, args: &[&str]) -> String {
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    all.extend(client_args(cluster));
    let (status, out, err) = keel(all).await;
    assert!(status.success(), "keel {what} failed: {out}{err}\n{}", cluster.logs());
    out
}

/// Starts node `id` (its data directory empty) joining the cluster under its old id and
/// address, and answers what it said on stderr once it exited refused (fails if it did not
/// exit within 20 s, or exited successfully).
async fn rejoin_refused(cluster: &Cluster, id: u64) -> String {
    let tls = cluster.tls.to_str().unwrap().to_string();
    let (listen, dir) = (cluster.node(id).addr.clone(), cluster.node(id).dir.to_str().unwrap().to_string());
    let serve = [
        "serve",
        "--id",
        &id.to_string(),
        "--listen",
        &listen,
        "--join",
        &cluster.node(1).addr,
        "--tls",
        &tls,
        "--dir",
        &dir,
    ]
    .map(String::from);
    let mut reborn = common::spawn_keel(&serve.iter().map(String::as_str).collect::<Vec<_>>());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let exited = loop {
        if let Some(status) = reborn.try_wait().expect("wait") {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = reborn.kill();
            let _ = reborn.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut reborn.stderr.take().expect("stderr"), &mut err).expect("stderr");
    assert!(exited.is_some_and(|s| !s.success()), "node {id} came back with an empty disk under its old id: {err}");
    assert!(err.contains("must not come back under its old id"), "{err}");
    err
}

/// Starts producing to `topic` round-robin, recording what is acked.
fn produce(client: Client, topic: &str, partitions: u32) -> (Acked, Arc<AtomicBool>, common::load::JoinProducer) {
    let (acked, stop) = (Acked::default(), Arc::new(AtomicBool::new(false)));
    let producer = common::load::spawn_producer(client, topic, partitions, acked.clone(), stop.clone());
    (acked, stop, producer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_grows_from_three_to_five_nodes_under_produce_load() {
    const TOPIC: &str = "growing";
    const PARTITIONS: u32 = 6;
    let mut cluster = Cluster::start(3, &["--leader-balance-ms", "0"]);
    let client = cluster.client().await;
    cluster.create_topic_once_set_up(&client, TOPIC, PARTITIONS).await;
    let (acked, stop, producer) = produce(cluster.client().await, TOPIC, PARTITIONS);
    let before = rate(&acked, Duration::from_secs(3)).await;

    let during_start = Instant::now();
    let acked_at_start = acked.lock().unwrap().len();
    cluster.join(4, &["--voter"]);
    cluster.join(5, &[]);
    wait_until(&cluster, "node 4 a metadata voter and node 5 a learner", Duration::from_secs(40), async || {
        let (voters, learners) = voters_and_learners(&cluster).await;
        voters == [1, 2, 3, 4] && learners == [5]
    })
    .await;
    println!("nodes 4 (voter) and 5 (learner) joined in {:?}", during_start.elapsed());

    // Partitions move onto the new nodes; leadership follows the preferred replicas.
    let m = metadata(&client).await;
    let partitions = &m.topic(TOPIC).expect("topic").partitions;
    for (p, new) in [(0, 4), (1, 5), (2, 4), (3, 5)] {
        let old = &partitions[p as usize].replicas;
        let target: Vec<String> = [new].iter().chain(&old[1..]).map(u64::to_string).collect();
        let to = target.join(",");
        let out = run_keel(
            &cluster,
            "partition move",
            &["partition", "move", &format!("{TOPIC}/{p}"), "--to", &to, "--wait", "60s"],
        )
        .await;
        println!("{}", out.trim());
    }
    run_keel(&cluster, "leader balance", &["leader", "balance"]).await;
    wait_until(&cluster, "nodes 4 and 5 leading partitions", Duration::from_secs(30), async || {
        let m = metadata(&client).await;
        let leaders: Vec<Option<u64>> = m.topic(TOPIC).expect("topic").partitions.iter().map(|p| p.leader).collect();
        leaders.contains(&Some(4)) && leaders.contains(&Some(5))
    })
    .await;
    let during_secs = during_start.elapsed().as_secs_f64();
    let during = (acked.lock().unwrap().len() - acked_at_start) as f64 / during_secs;
    let after = rate(&acked, Duration::from_secs(3)).await;
    println!(
        "acked records/s: before {before:.0}, during the joins, moves and balance ({during_secs:.1} s) {during:.0}, \
         after {after:.0}"
    );

    // A new topic is placed on the new nodes too.
    client.create_topic("fresh", Some(5), Some(3), &[]).await.expect("create a topic after growing");
    let m = metadata(&client).await;
    let placed: Vec<u64> =
        m.topic("fresh").expect("fresh").partitions.iter().flat_map(|p| p.replicas.clone()).collect();
    assert!(placed.contains(&4) && placed.contains(&5), "the new topic's replicas: {placed:?}");
    let hosted =
        |id: u64| m.topic(TOPIC).expect("topic").partitions.iter().filter(|p| p.replicas.contains(&id)).count();
    assert!(hosted(4) >= 2 && hosted(5) >= 2, "replicas on 4: {}, on 5: {}", hosted(4), hosted(5));

    let list = run_keel(&cluster, "node list", &["node", "list", "--format", "json", "--timeout", "10s"]).await;
    let rows: Vec<serde_json::Value> = serde_json::from_str(&list).expect("json");
    let role = |id: u64| rows.iter().find(|r| r["id"] == id).map(|r| r["role"].clone());
    assert_eq!((role(4), role(5)), (Some("voter".into()), Some("learner".into())), "{rows:?}");

    stop.store(true, Ordering::Relaxed);
    producer.await.expect("producer");
    check_acked(&client, &acked).await;

    // Node 5, a metadata learner that hosts replicas (and votes in their groups), lost its
    // disk: it may not come back under its old id either.
    cluster.kill(5);
    std::fs::remove_dir_all(&cluster.node(5).dir).expect("delete node 5's data");
    let err = rejoin_refused(&cluster, 5).await;
    assert!(err.contains("a learner of the cluster's metadata group"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_data_directory_was_deleted_is_decommissioned_and_replaced() {
    const TOPIC: &str = "replaced";
    const PARTITIONS: u32 = 3;
    let mut cluster = Cluster::start(3, &[]);
    let client = cluster.client().await;
    cluster.create_topic_once_set_up(&client, TOPIC, PARTITIONS).await;
    cluster.join(4, &["--voter"]);
    wait_until(&cluster, "node 4 a metadata voter", Duration::from_secs(40), async || {
        voters_and_learners(&cluster).await.0 == [1, 2, 3, 4]
    })
    .await;
    let (acked, stop, producer) = produce(cluster.client().await, TOPIC, PARTITIONS);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Node 3's disk is lost: it is down, and decommissioned while down.
    cluster.kill(3);
    std::fs::remove_dir_all(&cluster.node(3).dir).expect("delete node 3's data");
    // Node 3 may not come back under its old id with an empty disk: it would have
    // forgotten its votes and the records it acknowledged.
    let err = rejoin_refused(&cluster, 3).await;
    assert!(err.contains("is a voter of the cluster's metadata group"), "{err}");
    std::fs::remove_dir_all(&cluster.node(3).dir).ok();
    let out = run_keel(&cluster, "node decommission", &["node", "decommission", "3", "--wait", "90s"]).await;
    println!("{out}");
    assert!(out.contains("node 3 is removed"), "{out}");
    assert!(out.contains("leaves the metadata group, which then has 3 voters"), "{out}");
    wait_until(&cluster, "node 3 out of the metadata voters", Duration::from_secs(30), async || {
        voters_and_learners(&cluster).await == (vec![1, 2, 4], vec![])
    })
    .await;
    cluster.join(5, &["--voter"]);
    wait_until(&cluster, "node 5 a metadata voter", Duration::from_secs(40), async || {
        voters_and_learners(&cluster).await.0 == [1, 2, 4, 5]
    })
    .await;
    let m = metadata(&client).await;
    assert_eq!(m.broker(3).map(|b| b.state.as_str()), Some("removed"));
    for p in &m.topic(TOPIC).expect("topic").partitions {
        assert!(!p.replicas.contains(&3) && p.replicas.len() == 3 && p.target.is_empty(), "{p:?}");
    }

    // One more node lost: the metadata (3 of 4 voters) and every partition (2 of 3) go on.
    cluster.kill(1);
    let before = acked.lock().unwrap().len();
    wait_until(&cluster, "produce after node 1 died", Duration::from_secs(30), async || {
        acked.lock().unwrap().len() > before + 100
    })
    .await;
    let client = Client::connect(keel::client::ClientConfig::new(
        [2, 4, 5].map(|id| cluster.node(id).addr.clone()),
        &cluster.tls,
    ))
    .await
    .expect("client");
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = client.create_topic("after", Some(1), Some(3), &[]).await {
        assert!(Instant::now() < deadline, "no metadata commit after node 1 died: {e}\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    producer.await.expect("producer");
    check_acked(&client, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_that_is_down_stays_a_learner_and_the_metadata_keeps_committing() {
    let mut cluster = Cluster::start(3, &[]);
    let client = cluster.client().await;
    cluster.wait_set_up(1).await;
    let address = cluster.prepare_join(4, &["--voter"]).addr.clone();
    let out = run_keel(&cluster, "node add", &["node", "add", "4", "--address", &address, "--voter"]).await;
    assert!(out.contains("node 4 is registered"), "{out}");
    // Another node's id is refused, saying why.
    let mut args: Vec<String> = ["node", "add", "2", "--address", "127.0.0.1:1"].map(String::from).to_vec();
    args.extend(client_args(&cluster));
    let (status, out, err) = keel(args).await;
    assert!(!status.success() && err.contains("node 2 is already registered at"), "{out}{err}");
    // So is a node that joins with it, and it exits saying so.
    let dir = cluster.root.path().join("intruder");
    let listen = format!("127.0.0.1:{}", common::free_ports(1)[0]);
    let tls = cluster.tls.to_str().unwrap().to_string();
    let serve = ["serve", "--id", "2", "--listen", &listen, "--join", &cluster.node(1).addr, "--tls", &tls, "--dir"];
    let mut args: Vec<String> = serve.map(String::from).to_vec();
    args.push(dir.to_str().unwrap().into());
    let (status, out, err) = keel(args).await;
    assert!(!status.success(), "a node joined with another node's id: {out}{err}");
    assert!(err.contains("refused to add this node") && err.contains("already registered at"), "{out}{err}");

    wait_until(&cluster, "node 4 a learner of the metadata group", Duration::from_secs(20), async || {
        voters_and_learners(&cluster).await == (vec![1, 2, 3], vec![4])
    })
    .await;
    // While it is down it stays a learner (never in a joint configuration), and the
    // metadata group commits: topics are created.
    for i in 0..5 {
        client.create_topic(&format!("t{i}"), Some(1), Some(3), &[]).await.expect("a metadata commit");
        assert_eq!(voters_and_learners(&cluster).await, (vec![1, 2, 3], vec![4]));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let list = run_keel(&cluster, "node list", &["node", "list", "--format", "json"]).await;
    let rows: Vec<serde_json::Value> = serde_json::from_str(&list).expect("json");
    let row = rows.iter().find(|r| r["id"] == 4).expect("node 4 listed");
    assert_eq!((&row["role"], &row["state"]), (&"learner".into(), &"down".into()), "{rows:?}");

    // Up, it catches up and becomes a voter; restarted without --join, it is still one.
    cluster.start_joined(4);
    wait_until(&cluster, "node 4 a metadata voter", Duration::from_secs(40), async || {
        voters_and_learners(&cluster).await.0 == [1, 2, 3, 4]
    })
    .await;
    cluster.stop(4, Duration::from_secs(10));
    cluster.restart(4);
    wait_until(&cluster, "node 4 answering after a restart without --join", Duration::from_secs(30), async || {
        cluster.status(4).await.is_some_and(|v| v.leader.is_some() && v.topics >= 5)
    })
    .await;
    assert_eq!(voters_and_learners(&cluster).await.0, [1, 2, 3, 4]);
}
