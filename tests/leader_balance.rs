//! Leader balance on real `keel serve` processes (issues 13 and 17): after a kill -9 and a
//! restart, leadership goes back to every partition's preferred replica (its first), by
//! the metadata leader's periodic balance or by `keel leader balance`, and no acknowledged
//! record is lost on the way; on 5 nodes replicas and leaders spread and a kill moves only
//! the leaders the killed node held. And `keel node list`, which shows where the leaders are.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::Cluster;
use keel::batch::Record;
use keel::client::{Client, ClientError};
use keel::net::client_codec::ClusterMetadata;

const TOPIC: &str = "orders";
const PARTITIONS: u32 = 6;
/// How long leadership may take to come back once the restarted node is up.
const BALANCE_WAIT: Duration = Duration::from_secs(30);

/// The partitions (of every topic) not led by their preferred replica, as `metadata` says.
fn unbalanced(metadata: &ClusterMetadata) -> Vec<String> {
    let mut out = Vec::new();
    for t in &metadata.topics {
        for p in &t.partitions {
            if p.leader.is_none() || p.leader != p.replicas.first().copied() {
                out.push(format!("{}/{} led by {:?}, replicas {:?}", t.name, p.partition, p.leader, p.replicas));
            }
        }
    }
    out
}

/// The metadata as node `id` sees it.
async fn metadata_of(cluster: &Cluster, id: u64) -> Option<ClusterMetadata> {
    let client = cluster.client_of(id).await;
    tokio::time::timeout(Duration::from_secs(2), client.metadata(None)).await.ok()?.ok()
}

/// Waits until node `id` sees every partition led by its preferred replica; `nudge` runs
/// before each look (a `keel leader balance`, or nothing when the cluster balances itself).
async fn wait_balanced(cluster: &Cluster, id: u64, nudge: &dyn Fn()) {
    let deadline = Instant::now() + BALANCE_WAIT;
    let mut last = vec!["no metadata".to_string()];
    while Instant::now() < deadline {
        nudge();
        if let Some(metadata) = metadata_of(cluster, id).await {
            last = unbalanced(&metadata);
            if last.is_empty() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("leaders not back on the preferred replicas within {BALANCE_WAIT:?}: {last:#?}\n{}", cluster.logs());
}

/// Produces `n` keyed records to every partition of `TOPIC`; returns what was acked, by
/// partition and offset.
async fn produce(client: &Client, round: u32, n: u32, acked: &mut BTreeMap<(u32, u64), String>) {
    produce_to(client, TOPIC, PARTITIONS, round, n, acked).await
}

async fn produce_to(
    client: &Client,
    topic: &str,
    partitions: u32,
    round: u32,
    n: u32,
    acked: &mut BTreeMap<(u32, u64), String>,
) {
    for partition in 0..partitions {
        let values: Vec<String> = (0..n).map(|i| format!("r{round}-p{partition}-{i}")).collect();
        let records: Vec<Record> =
            values.iter().map(|v| Record::new(v.clone()).with_key(format!("k{partition}"))).collect();
        // A request to a node just killed, or to a leader handing over, may end with its
        // outcome unknown: sent again, it may be stored twice, which this test allows.
        let mut attempts = 0;
        let base = loop {
            match client.produce_to(topic, partition, records.clone()).await {
                Ok(base) => break base,
                Err(ClientError::OutcomeUnknown(why)) if attempts < 5 => {
                    attempts += 1;
                    println!("partition {partition}: outcome unknown ({why}); sending again");
                }
                Err(e) => panic!("produce to partition {partition}: {e}"),
            }
        };
        for (i, v) in values.into_iter().enumerate() {
            acked.insert((partition, base + i as u64), v);
        }
    }
}

/// Every acked record is in its partition at its offset.
async fn check_acked(client: &Client, acked: &BTreeMap<(u32, u64), String>) {
    check_acked_in(client, TOPIC, PARTITIONS, acked).await
}

async fn check_acked_in(client: &Client, topic: &str, partitions: u32, acked: &BTreeMap<(u32, u64), String>) {
    for partition in 0..partitions {
        let want: BTreeMap<u64, &String> =
            acked.iter().filter(|((p, _), _)| *p == partition).map(|((_, o), v)| (*o, v)).collect();
        common::assert_acked_read_back(client, topic, partition, &want).await;
    }
}

/// Kills the node that is preferred leader of partition 0 of `TOPIC`, checks its partitions
/// get other leaders, produces meanwhile, restarts it, and waits for the leaders to return.
async fn kill_restart_and_return(cluster: &mut Cluster, nudge: &dyn Fn()) {
    let client = cluster.client().await;
    cluster.create_topic_once_set_up(&client, TOPIC, PARTITIONS).await;
    wait_balanced(cluster, 1, nudge).await;
    let mut acked = BTreeMap::new();
    produce(&client, 0, 20, &mut acked).await;

    let metadata = metadata_of(cluster, 1).await.expect("metadata");
    let victim = metadata.topic(TOPIC).expect("topic").partitions[0].replicas[0];
    let witness = if victim == 1 { 2 } else { 1 };
    cluster.kill(victim);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metadata = metadata_of(cluster, witness).await;
        let led = metadata.as_ref().map_or(1, |m| {
            m.topic(TOPIC).map_or(1, |t| t.partitions.iter().filter(|p| p.leader == Some(victim)).count())
        });
        if led == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "node {victim}'s partitions still led by it after kill -9");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    produce(&client, 1, 20, &mut acked).await;

    cluster.restart(victim);
    wait_balanced(cluster, witness, nudge).await;
    produce(&client, 2, 20, &mut acked).await;
    check_acked(&client, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaders_return_to_the_preferred_replicas_on_their_own() {
    let mut cluster = Cluster::start(3, &["--leader-balance-ms", "500"]);
    kill_restart_and_return(&mut cluster, &|| {}).await;
}

/// Issue 13's placement test: with 5 nodes and 3 replicas the partitions land on different
/// subsets and no node holds more than ⌈3·P/5⌉+1 of them or leads more than ⌈P/5⌉+1; kill -9
/// of one node changes the leader of exactly the partitions it led; once it is back they
/// return to it, and every acknowledged record is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_spread_replicas_and_a_kill_moves_only_the_leaders_it_held() {
    const SPREAD: &str = "spread";
    const P: u32 = 20;
    let mut cluster = Cluster::start(5, &["--leader-balance-ms", "500"]);
    let client = cluster.client().await;
    cluster.create_topic_once_set_up(&client, SPREAD, P).await;
    wait_balanced(&cluster, 1, &|| {}).await;

    let before = metadata_of(&cluster, 1).await.expect("metadata");
    let partitions = &before.topic(SPREAD).expect("the topic").partitions;
    let (mut hosted, mut led) = (BTreeMap::<u64, u32>::new(), BTreeMap::<u64, u32>::new());
    for p in partitions {
        assert_eq!(p.replicas.len(), 3, "{p:?}");
        for r in &p.replicas {
            *hosted.entry(*r).or_default() += 1;
        }
        *led.entry(p.leader.expect("a leader")).or_default() += 1;
    }
    let (hosted_max, led_max) = ((3 * P).div_ceil(5) + 1, P.div_ceil(5) + 1);
    assert_eq!(hosted.len(), 5, "every node holds replicas: {hosted:?}");
    assert!(hosted.values().all(|&n| n <= hosted_max), "more than {hosted_max} replicas on a node: {hosted:?}");
    assert!(led.values().all(|&n| n <= led_max), "more than {led_max} leaders on a node: {led:?}");
    let subsets: std::collections::BTreeSet<Vec<u64>> = partitions
        .iter()
        .map(|p| {
            let mut r = p.replicas.clone();
            r.sort();
            r
        })
        .collect();
    assert!(subsets.len() > 1, "every partition on the same 3 nodes: {subsets:?}");
    let mut acked = BTreeMap::new();
    produce_to(&client, SPREAD, P, 0, 10, &mut acked).await;

    // The node leading the most partitions (not the one the client and the checks ask).
    let victim = *led.iter().filter(|(id, _)| **id != 1).max_by_key(|(_, n)| **n).expect("a leader").0;
    cluster.kill(victim);
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        if let Some(m) = metadata_of(&cluster, 1).await
            && let Some(t) = m.topic(SPREAD)
            && t.partitions.iter().all(|p| p.leader.is_some_and(|l| l != victim))
        {
            break t.partitions.clone();
        }
        assert!(
            Instant::now() < deadline,
            "node {victim}'s partitions still without another leader\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for (was, now) in partitions.iter().zip(&after) {
        if was.leader != Some(victim) {
            assert_eq!(
                now.leader, was.leader,
                "partition {} changed leader though node {victim} did not lead it",
                was.partition
            );
        }
    }
    produce_to(&client, SPREAD, P, 1, 10, &mut acked).await;

    cluster.restart(victim);
    wait_balanced(&cluster, 1, &|| {}).await;
    let back = metadata_of(&cluster, 1).await.expect("metadata");
    for (was, now) in partitions.iter().zip(&back.topic(SPREAD).expect("the topic").partitions) {
        assert_eq!(now.leader, was.leader, "partition {} did not return to its leader", was.partition);
    }
    produce_to(&client, SPREAD, P, 2, 10, &mut acked).await;
    check_acked_in(&client, SPREAD, P, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keel_leader_balance_returns_leaders_and_says_what_moved() {
    let mut cluster = Cluster::start(3, &["--leader-balance-ms", "0"]);
    let tls = cluster.tls.to_str().expect("utf-8 path").to_string();
    let bootstrap = cluster.bootstrap_arg();
    let balance = move || {
        let args = ["leader", "balance", "--bootstrap", &bootstrap, "--tls", &tls, "--wait", "2s"];
        let (status, out, err) = common::keel(&args, b"");
        assert!(status.success(), "keel leader balance failed: {out}{err}");
    };
    kill_restart_and_return(&mut cluster, &balance).await;

    // Balanced: the command says so, in text and in JSON.
    let args = ["leader", "balance", "--bootstrap", &cluster.bootstrap_arg(), "--tls", cluster.tls.to_str().unwrap()];
    let (status, out, err) = common::keel(&args, b"");
    assert!(status.success(), "{out}{err}");
    assert_eq!(out.trim(), "every partition is led by its preferred replica");
    let (_, json, _) = common::keel(&[&args[..], &["--format", "json"]].concat(), b"");
    assert_eq!(json.trim(), "[]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keel_node_list_shows_roles_replicas_leaders_and_a_node_down() {
    let mut cluster = Cluster::start(3, &[]);
    let tls = cluster.tls.to_str().expect("utf-8 path").to_string();
    // `timeout` bounds each node's status answer: a node that does not answer within it is
    // listed as down. Live nodes get a generous one (CI runs several clusters on 2 cores).
    let list = |bootstrap: &str, timeout: &str| {
        let args = ["node", "list", "--bootstrap", bootstrap, "--tls", &tls, "--format", "json", "--timeout", timeout];
        let (status, out, err) = common::keel(&args, b"");
        assert!(status.success(), "keel node list failed: {out}{err}");
        serde_json::from_str::<Vec<serde_json::Value>>(&out).expect("json")
    };
    // Every partition placed and led (by some replica) once the cluster is set up.
    let m = cluster.wait_set_up(1).await;
    let replicas = m.topics.iter().map(|t| t.partitions.len() * 3).sum::<usize>();
    let rows = list(&cluster.bootstrap_arg(), "10s");
    assert_eq!(rows.len(), 3, "{rows:?}");
    for row in &rows {
        assert_eq!(row["role"], "voter", "{row}");
        assert_eq!(row["state"], "active", "{row}");
    }
    let hosted: u64 = rows.iter().map(|r| r["partitions"].as_u64().unwrap()).sum();
    assert_eq!(hosted as usize, replicas, "{rows:?}");
    let led: u64 = rows.iter().map(|r| r["leaders"].as_u64().unwrap()).sum();
    assert_eq!(led as usize, replicas / 3, "every partition has one leader: {rows:?}");

    cluster.kill(3);
    let rows = list(&cluster.node(1).addr, "1s");
    let three = rows.iter().find(|r| r["id"] == 3).expect("node 3 listed");
    assert_eq!(three["state"], "down", "{rows:?}");
}
