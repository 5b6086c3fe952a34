//! Real `keel serve` processes on loopback: election, replication, crashes, catch-up,
//! refused certificates, a paused leader, a leader stopped gracefully, a restarted node
//! reached at once.

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, read_log};
use keel::batch::Record;
use keel::client::ClientError;
use keel::server::node::DEFAULT_GROUP;
use segments::Entry;

fn records(batch: u64, n: u64, size: usize) -> Vec<Record> {
    (0..n).map(|i| Record::new(format!("{batch}-{i}-{}", "x".repeat(size)))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_a_leader_and_hold_identical_logs() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader(Duration::from_secs(10), &[]).await;
    assert!(leader.is_some(), "no leader within 10 s\n{}", cluster.logs());
    let client = cluster.client().await;
    let mut acked = Vec::new();
    for batch in 0..50 {
        acked.push(client.produce(records(batch, 20, 100)).await.expect("produce"));
    }
    assert_eq!(acked, (0..50).map(|b| b * 20).collect::<Vec<u64>>(), "offsets are dense and increasing");
    // Every node reports the commit before it stops, so every log holds all of it.
    let deadline = Instant::now() + Duration::from_secs(10);
    for id in 1..=3 {
        while cluster.view(id).await.map_or(0, |v| v.log_end_offset) < 1000 {
            assert!(Instant::now() < deadline, "node {id} did not catch up\n{}", cluster.logs());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    cluster.stop_all();
    let logs: Vec<Vec<Entry>> = (1..=3).map(|id| read_log(&cluster.node(id).dir, DEFAULT_GROUP)).collect();
    let data = |log: &Vec<Entry>| log.iter().filter(|e| e.record_count() > 0).count();
    assert_eq!(data(&logs[0]), 50, "node 1 holds every batch");
    for id in 1..3 {
        let common = logs[0].len().min(logs[id].len());
        assert!(common >= 51, "node {} holds too few entries", id + 1);
        for (i, (a, b)) in logs[0].iter().zip(&logs[id]).take(common).enumerate() {
            assert_eq!(a.as_bytes(), b.as_bytes(), "entry {} differs on node {}", i + 1, id + 1);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_under_load_loses_no_acknowledged_record() {
    let mut cluster = Cluster::start(3, &[]);
    let old = cluster.wait_leader(Duration::from_secs(10), &[]).await.expect("leader");
    let client = cluster.client().await;
    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut unknown = 0;
            for batch in 0..400u64 {
                match client.produce(records(batch, 5, 50)).await {
                    Ok(offset) => acked.push((batch, offset)),
                    Err(ClientError::OutcomeUnknown(_)) => unknown += 1,
                    Err(e) => panic!("produce failed in a way that is not allowed: {e}"),
                }
            }
            (acked, unknown)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.kill(old);
    let killed = Instant::now();
    let new = cluster.wait_leader(Duration::from_secs(5), &[old]).await;
    let elected = killed.elapsed();
    assert!(new.is_some(), "no new leader\n{}", cluster.logs());
    assert!(elected < Duration::from_secs(1), "a new leader took {elected:?}");
    let (acked, unknown) = writer.await.expect("writer");
    println!("new leader after {elected:?}; {} batches acknowledged, {unknown} with an unknown outcome", acked.len());
    cluster.restart(old);
    // Every acknowledged batch is readable at its offset, from every node, the old leader too.
    for id in 1..=3 {
        let reader = cluster.client_of(id).await;
        let mut consumer = reader.consumer(keel::client::Offset::At(0));
        let mut seen = std::collections::BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        let last = acked.last().map_or(0, |(_, o)| o + 5);
        while consumer.position().unwrap_or(0) < last {
            assert!(Instant::now() < deadline, "node {id} did not serve every acknowledged record\n{}", cluster.logs());
            if let Ok(batch) = consumer.poll().await {
                for (offset, record) in batch {
                    seen.insert(offset, record.value.unwrap_or_default());
                }
            }
        }
        for (batch, offset) in &acked {
            let expected = format!("{batch}-0-{}", "x".repeat(50));
            assert_eq!(seen.get(offset).map(|v| &v[..]), Some(expected.as_bytes()), "node {id}, offset {offset}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_down_while_100_mb_are_written_catches_up() {
    let mut cluster = Cluster::start(3, &["--segment-bytes", "16777216"]);
    let leader = cluster.wait_leader(Duration::from_secs(10), &[]).await.expect("leader");
    let follower = if leader == 1 { 2 } else { 1 };
    cluster.kill(follower);
    let client = cluster.client().await;
    let producer = client.producer("default", keel::client::ProducerConfig { in_flight: 32, ..Default::default() });
    let mut acks = Vec::new();
    let value = bytes::Bytes::from(vec![7u8; 1000]);
    for _ in 0..100_000 {
        acks.push(producer.send(Record::new(value.clone())).await);
    }
    producer.close().await;
    let mut last = 0;
    for ack in acks {
        last = last.max(ack.await.expect("ack").expect("produced").offset);
    }
    let target = cluster.view(leader).await.expect("leader view").last_index;
    cluster.restart(follower);
    let started = Instant::now();
    loop {
        if let Some(v) = cluster.view(follower).await
            && v.last_index >= target
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no catch-up in 60 s\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    println!("catch-up of {} records (~100 MB) in {secs:.2} s: {:.0} MB/s", last + 1, 100.0 / secs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_certificate_from_another_ca_never_joins() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_leader(Duration::from_secs(10), &[]).await.expect("leader");
    // A fourth process claims to be node 1 with certificates from another CA; node 1 dials
    // the others, so they see its handshake.
    let other = tempfile::tempdir_in(common::test_tmp()).expect("tmp");
    let tls = other.path().join("tls");
    let (status, _, err) = common::keel(&["certs", "--dir", tls.to_str().unwrap(), "--node", "1"], b"");
    assert!(status.success(), "{err}");
    let client = cluster.client().await;
    client.produce(records(0, 1, 10)).await.expect("produce");
    let log = other.path().join("impostor.log");
    let port = common::free_ports(1)[0];
    let mut impostor = std::process::Command::new(common::KEEL)
        .args(["serve", "--id", "1", "--listen", &format!("127.0.0.1:{port}"), "--peers"])
        .arg(cluster.peers.replace(&cluster.node(1).addr, &format!("127.0.0.1:{port}")))
        .arg("--dir")
        .arg(other.path().join("data"))
        .arg("--tls")
        .arg(&tls)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = impostor.kill();
    let _ = impostor.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!text.contains("leader known"), "the impostor learned of a leader:\n{text}");
    assert!(!text.contains("peer connected") && !text.contains("connected to peer"), "the impostor connected:\n{text}");
    let refused = cluster.logs().contains("refused a connection");
    assert!(refused, "no node logged the refusal\n{}", cluster.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_steps_down_without_disrupting_the_new_one() {
    let cluster = Cluster::start(3, &[]);
    let old = cluster.wait_leader(Duration::from_secs(10), &[]).await.expect("leader");
    cluster.pause(old);
    let new = cluster.wait_leader(Duration::from_secs(5), &[old]).await;
    let term = match new {
        Some(id) => cluster.view(id).await.expect("view").term,
        None => {
            cluster.signal(old, libc::SIGCONT);
            panic!("no new leader while the old one was paused\n{}", cluster.logs());
        }
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.signal(old, libc::SIGCONT);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let new = new.expect("new leader");
    let view = cluster.view(new).await.expect("new leader answers");
    assert_eq!(view.role, "leader", "the returning node disrupted the new leader\n{}", cluster.logs());
    assert_eq!(view.term, term, "the term moved: the old leader disrupted the cluster");
    let old_view = cluster.view(old).await.expect("old leader answers");
    assert_eq!(old_view.role, "follower");
    assert_eq!(old_view.leader, Some(new));
}

// Regression: empty Appends once travelled apart from entries, overtook them, were rejected,
// and threw the leader's pipeline back to probing: under pipelined load every entry was sent
// many times over (and produce slowed to a crawl).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_load_sends_each_entry_about_once_per_follower() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader(Duration::from_secs(10), &[]).await.expect("leader");
    let client = cluster.client().await;
    // Measure the steady state: start once both followers are replicating.
    client.produce(vec![Record::new("warm-up")]).await.expect("produce");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent_before = common::sample(&common::scrape(&cluster.node(leader).metrics), "keel_append_entries_sent_total");
    let last_before = cluster.view(leader).await.expect("leader view").last_index as f64;
    let config = keel::client::ProducerConfig { in_flight: 64, batch_bytes: 256 << 10, ..Default::default() };
    let producer = client.producer("default", config);
    let mut acks = Vec::new();
    for i in 0..30_000u32 {
        acks.push(producer.send(Record::new(vec![(i % 251) as u8; 1000])).await);
    }
    producer.close().await;
    for ack in acks {
        ack.await.expect("ack").expect("produced");
    }
    let view = cluster.view(leader).await.expect("leader view");
    let metrics = common::scrape(&cluster.node(leader).metrics);
    let sent =
        common::sample(&metrics, "keel_append_entries_sent_total").expect("entries sent") - sent_before.unwrap_or(0.0);
    let entries = view.last_index as f64 - last_before;
    println!("{entries} entries, {sent} entries sent to 2 followers");
    assert!(sent <= 2.5 * entries, "the leader sent {sent} entries to 2 followers for {entries} entries");
}

// Thesis §3.10: a leader told to stop hands leadership over first (TimeoutNow), so the
// cluster does not sit out an election timeout, and the old leader sees its successor
// before it exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_the_leader_hands_over_leadership_and_exits_0() {
    let mut cluster = Cluster::start(3, &[]);
    let old = cluster.wait_leader(Duration::from_secs(10), &[]).await.expect("leader");
    let term = cluster.view(old).await.expect("leader view").term;
    let client = cluster.client().await;
    let mut acked = Vec::new();
    for batch in 0..40 {
        acked.push((batch, client.produce(records(batch, 5, 50)).await.expect("produce")));
    }
    let stopping = Instant::now();
    let status = cluster.stop(old, Duration::from_secs(10));
    let took = stopping.elapsed();
    assert!(status.is_some_and(|s| s.success()), "the leader exited with {status:?}\n{}", cluster.logs());
    assert!(took < Duration::from_secs(3), "the leader took {took:?} to stop");
    let new = cluster.wait_leader(Duration::from_secs(5), &[old]).await.expect("a new leader");
    assert_eq!(cluster.view(new).await.expect("new leader view").term, term + 1, "one election, no more");
    // The old leader saw the next term begin before it stopped: its successor campaigned
    // at its word while it was still up, not after an election timeout once it was gone.
    // (Its lines about the partition's group: the metadata group stops its own way.)
    let log = std::fs::read_to_string(&cluster.node(old).log).expect("old leader's log");
    let group = format!("group{{group={}}}", keel::server::node::DEFAULT_GROUP);
    let log: String = log.lines().filter(|l| l.contains(&group)).map(|l| format!("{l}\n")).collect();
    let Some((_, after)) = log.split_once("transferring leadership") else {
        panic!("node {old} did not try to hand over leadership\n{log}")
    };
    let (stopping, _) = after.split_once("stopped cleanly").expect("the old leader stopped cleanly");
    let next_term = format!("term={}", term + 1);
    let handed_over = stopping.lines().any(|l| l.contains("lost leadership") && l.contains(&next_term));
    assert!(handed_over, "node {old} stopped as the leader\n{}", cluster.logs());
    // Everything acknowledged before the SIGTERM is still there.
    let mut consumer = cluster.client_of(new).await.consumer(keel::client::Offset::At(0));
    let mut seen = std::collections::BTreeMap::new();
    let last = acked.last().map_or(0, |(_, o)| o + 5);
    let deadline = Instant::now() + Duration::from_secs(10);
    while consumer.position().unwrap_or(0) < last {
        assert!(Instant::now() < deadline, "node {new} did not serve every acknowledged record\n{}", cluster.logs());
        if let Ok(batch) = consumer.poll().await {
            seen.extend(batch.into_iter().map(|(offset, record)| (offset, record.value.unwrap_or_default())));
        }
    }
    for (batch, offset) in &acked {
        let expected = format!("{batch}-0-{}", "x".repeat(50));
        assert_eq!(seen.get(offset).map(|v| &v[..]), Some(expected.as_bytes()), "offset {offset}");
    }
}

/// A restarted node is reachable at once: a node still holding a connection to its previous
/// process (here node 1, which dials node 3: the lower id dials) gets a stateless reset at
/// its next packet, because the restarted node derives its reset key from its own private
/// key, and dials again instead of waiting out the 4 s idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_resets_the_connections_to_its_previous_process() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_leader(Duration::from_secs(10), &[]).await.expect("a leader");
    let connected = |log: &str| log.matches("connected to peer peer=3").count();
    let node_1_log = || std::fs::read_to_string(&cluster.node(1).log).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while connected(&node_1_log()) == 0 {
        assert!(Instant::now() < deadline, "node 1 never connected to node 3:\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = connected(&node_1_log());
    cluster.kill(3);
    cluster.restart(3);
    let deadline = Instant::now() + Duration::from_secs(15);
    let closed = loop {
        let log = std::fs::read_to_string(&cluster.node(1).log).unwrap();
        let closed = log.lines().find(|l| l.contains("peer connection closed peer=3")).map(str::to_string);
        if let Some(line) = closed
            && connected(&log) > before
        {
            break line;
        }
        assert!(Instant::now() < deadline, "node 1 did not reconnect to node 3:\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(closed.contains("reset by peer"), "the stale connection was not reset: {closed}");
}

/// Idle, every group goes quiet on every node (no heartbeats, no timers); kill -9 of the
/// partition's leader then: the followers' nodes find out from their pings, wake the group,
/// and one of them is elected, so that a produce succeeds again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_group_elects_a_new_leader_when_its_leader_dies() {
    let mut cluster = Cluster::start(3, &[]);
    let old = cluster.wait_leader(Duration::from_secs(10), &[]).await.expect("leader");
    // Two groups on each node: the metadata group and the topic `default`'s partition.
    let quiet = |cluster: &Cluster| (1..=3).filter_map(|id| cluster.metric(id, "keel_groups_quiet")).sum::<f64>();
    let deadline = Instant::now() + Duration::from_secs(30);
    while quiet(&cluster) < 6.0 {
        assert!(Instant::now() < deadline, "the idle groups never all went quiet\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The leader is the same (nothing changed while the groups were idle).
    assert_eq!(cluster.view(old).await.expect("view").role, "leader");
    let killed = Instant::now();
    cluster.kill(old);
    let new = cluster.wait_leader(Duration::from_secs(10), &[old]).await;
    let new = new.unwrap_or_else(|| panic!("a quiet group never replaced its dead leader\n{}", cluster.logs()));
    println!("node {new} leads {:?} after kill -9 of quiet leader {old}", killed.elapsed());
    let client = cluster.client_of(new).await;
    client.produce(records(0, 1, 10)).await.expect("produce after the failover");
}
