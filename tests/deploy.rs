//! What the deployment files rely on: `keel status --ready` (the readiness probe and the
//! Compose health check) and `keel serve --id-from-hostname` (StatefulSet pods).

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, keel};

fn ready(cluster: &Cluster, id: u64) -> (Option<i32>, String) {
    let tls = cluster.tls.to_str().unwrap();
    let (status, out, err) = keel(&["status", "--ready", "--bootstrap", &cluster.node(id).addr, "--tls", tls], b"");
    (status.code(), format!("{out}{err}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_is_ready_while_it_knows_a_leader() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_leader(Duration::from_secs(10), &[]).await.expect("a leader");
    // Ready means: knows the metadata group's leader (which need not lead the partition).
    // Node 1 may not have applied the metadata yet (it answers "starting" until then).
    let deadline = Instant::now() + Duration::from_secs(10);
    let leader = loop {
        if let Some(leader) = cluster.status(1).await.and_then(|v| v.leader) {
            break leader;
        }
        assert!(Instant::now() < deadline, "node 1 names no metadata leader within 10 s\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for id in 1..=3 {
        // A follower learns of the leader from its first AppendEntries or heartbeat.
        let deadline = Instant::now() + Duration::from_secs(5);
        let (code, out) = loop {
            let (code, out) = ready(&cluster, id);
            if code == Some(0) || Instant::now() > deadline {
                break (code, out);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(code, Some(0), "node {id} is not ready:\n{out}\n{}", cluster.logs());
        assert!(out.contains(&format!("knows leader node {leader}")), "node {id}: {out}");
    }
    // Cut a node off from the quorum: it soon knows no leader, and says so.
    let survivor = if leader == 1 { 2 } else { 1 };
    for id in (1..=3).filter(|&id| id != survivor) {
        cluster.kill(id);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let (code, out) = loop {
        let (code, out) = ready(&cluster, survivor);
        if code != Some(0) || Instant::now() > deadline {
            break (code, out);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(code, Some(1), "node {survivor} alone still claims to be ready:\n{out}");
    assert!(out.contains("not ready") && out.contains("knows no leader"), "{out}");
    // A node that does not answer is not ready either.
    cluster.kill(survivor);
    let (code, out) = ready(&cluster, survivor);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("not ready"), "{out}");
}

#[test]
fn id_from_hostname_and_id_are_one_setting() {
    let (status, _, err) = keel(&["serve", "--id", "1", "--id-from-hostname"], b"");
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("cannot be used with"), "{err}");
}

#[test]
fn a_host_name_without_an_ordinal_is_a_usage_error() {
    // This machine's host name is not a StatefulSet pod's (unless it ends in -N).
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    if host.rsplit_once('-').is_some_and(|(_, n)| n.parse::<u64>().is_ok()) {
        return;
    }
    let dir = tempfile::tempdir_in(common::test_tmp()).unwrap();
    let data = dir.path().join("data");
    let args = ["serve", "--id-from-hostname", "--listen", "127.0.0.1:0", "--peers", "1=127.0.0.1:1", "--tls", "x"];
    let (status, _, err) = keel(&[&args[..], &["--dir", data.to_str().unwrap()]].concat(), b"");
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("host name `{host}` does not end in -N")), "{err}");
}
