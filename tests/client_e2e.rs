//! The client protocol and the CLI end to end, against real `keel serve` processes.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Cluster, KEEL, keel};

fn client_args<'a>(cluster: &'a Cluster, bootstrap: &'a str) -> Vec<&'a str> {
    vec!["--bootstrap", bootstrap, "--tls", cluster.tls.to_str().unwrap()]
}

fn consume(cluster: &Cluster, bootstrap: &str, extra: &[&str]) -> (std::process::ExitStatus, String, String) {
    let mut args = vec!["consume"];
    args.extend(client_args(cluster, bootstrap));
    args.extend(extra);
    keel(&args, b"")
}

fn produce(
    cluster: &Cluster,
    bootstrap: &str,
    extra: &[&str],
    input: &[u8],
) -> (std::process::ExitStatus, String, String) {
    let mut args = vec!["produce"];
    args.extend(client_args(cluster, bootstrap));
    args.extend(extra);
    keel(&args, input)
}

fn lines(n: usize) -> String {
    (1..=n).map(|i| format!("line-{i}\n")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_produced_through_a_follower_read_back_identically_from_every_node() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader(Duration::from_secs(10), &[]).await.expect("leader");
    let follower = if leader == 1 { 2 } else { 1 };
    let input = lines(10_000);
    let (status, out, err) = produce(&cluster, &cluster.node(follower).addr, &["--print-offsets"], input.as_bytes());
    assert!(status.success(), "produce failed: {err}\n{}", cluster.logs());
    let offsets: Vec<u64> = out.lines().map(|l| l.parse().expect("an offset")).collect();
    assert_eq!(offsets, (0..10_000).collect::<Vec<u64>>(), "one offset per line, dense, in input order");
    let mut outputs = Vec::new();
    for id in 1..=3 {
        let (status, out, err) = consume(&cluster, &cluster.node(id).addr, &["--from", "0", "--format", "json"]);
        assert!(status.success(), "consume from node {id}: {err}");
        outputs.push(out);
    }
    // A follower serves what it has committed; each read stops at the end the leader gave.
    for (i, out) in outputs.iter().enumerate() {
        let rows: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(rows.len(), 10_000, "node {} returned {} records", i + 1, rows.len());
        for (n, row) in rows.iter().enumerate() {
            assert_eq!(row["offset"], n as u64);
            assert_eq!(row["value"], format!("line-{}", n + 1));
        }
        assert_eq!(out, &outputs[0], "node {} differs from node 1", i + 1);
    }
    // The middle of the log.
    let (status, out, _) = consume(&cluster, &cluster.bootstrap_arg(), &["--from", "5000", "--count", "10"]);
    assert!(status.success());
    assert_eq!(out, (5001..=5010).map(|i| format!("line-{i}\n")).collect::<String>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_the_end_sees_new_records_and_a_bad_offset_is_a_clear_error() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_leader(Duration::from_secs(10), &[]).await.expect("leader");
    let boot = cluster.bootstrap_arg();
    let (status, _, err) = produce(&cluster, &boot, &[], lines(100).as_bytes());
    assert!(status.success(), "{err}");
    // --from latest --follow waits at the end, then prints what arrives.
    let mut follower = Command::new(KEEL)
        .args(["consume", "--bootstrap", &boot, "--tls", cluster.tls.to_str().unwrap()])
        .args(["--from", "latest", "--follow", "--count", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn consume");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(follower.try_wait().unwrap().is_none(), "consume --follow must wait at the end of the log");
    let (status, _, err) = produce(&cluster, &boot, &[], b"new-1\nnew-2\nnew-3\n");
    assert!(status.success(), "{err}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while follower.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "consume --follow did not see the new records");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = follower.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "new-1\nnew-2\nnew-3\n");
    // Exactly at the end without --follow: nothing to print, success.
    let (status, out, _) = consume(&cluster, &boot, &["--from", "103"]);
    assert!(status.success());
    assert!(out.is_empty());
    // Beyond the end: the valid range is named.
    let (status, _, err) = consume(&cluster, &boot, &["--from", "5000"]);
    assert!(!status.success());
    assert!(err.contains("out of range") && err.contains("0..103"), "unclear error: {err}");
    // Not an offset at all: a usage error.
    for bad in ["-5", "ten", "1e3"] {
        let (status, _, err) = consume(&cluster, &boot, &["--from", bad]);
        assert_eq!(status.code(), Some(2), "--from {bad}");
        assert!(err.contains("is not an offset"), "unclear error for --from {bad}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_record_is_refused_by_name_and_the_rest_is_produced() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_leader(Duration::from_secs(10), &[]).await.expect("leader");
    let boot = cluster.bootstrap_arg();
    let mut input = b"before\n".to_vec();
    input.extend(std::iter::repeat_n(b'x', 2 << 20));
    input.extend(b"\nafter\n");
    let (status, out, err) = produce(&cluster, &boot, &["--print-offsets"], &input);
    assert!(!status.success(), "a 2 MiB record must make produce fail");
    assert!(err.contains("1 of 3 records were not acknowledged"), "{err}");
    assert!(err.contains("over the 1 MiB limit (record_bytes_max)"), "the error must name the limit: {err}");
    let printed: Vec<&str> = out.lines().collect();
    assert_eq!(printed.len(), 3, "one line per input line: {out}");
    assert_eq!(printed[1], "-");
    let (status, out, err) = consume(&cluster, &boot, &["--from", "earliest"]);
    assert!(status.success(), "consume failed: {err}");
    assert_eq!(out, "before\nafter\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_while_producing_loses_no_printed_offset() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader(Duration::from_secs(10), &[]).await.expect("leader");
    let boot = cluster.bootstrap_arg();
    let mut producer = Command::new(KEEL)
        .args(["produce", "--bootstrap", &boot, "--tls", cluster.tls.to_str().unwrap(), "--print-offsets"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn produce");
    let mut stdin = producer.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        for i in 1..=50_000 {
            writeln!(stdin, "rec-{i}").unwrap();
            if i % 5_000 == 0 {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    });
    // Drain stdout while stdin is written, or both pipes fill and everything stops.
    let output = std::thread::spawn(move || producer.wait_with_output());
    tokio::time::sleep(Duration::from_millis(400)).await;
    cluster.kill(leader);
    writer.join().unwrap();
    let out = output.join().unwrap().unwrap();
    let printed: Vec<String> = BufReader::new(&out.stdout[..]).lines().map(Result::unwrap).collect();
    assert_eq!(printed.len(), 50_000, "one line per input line");
    let unacked = printed.iter().filter(|l| *l == "-").count();
    let err = String::from_utf8_lossy(&out.stderr);
    if unacked > 0 {
        assert!(!out.status.success());
        assert!(err.contains(&format!("{unacked} of 50000 records were not acknowledged")), "{err}");
    }
    println!("{unacked} of 50000 records not acknowledged after kill -9 of the leader");
    cluster.restart(leader);
    let (status, consumed, err) = consume(&cluster, &boot, &["--from", "0", "--format", "json"]);
    assert!(status.success(), "{err}");
    let by_offset: std::collections::HashMap<u64, String> = consumed
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| (v["offset"].as_u64().unwrap(), v["value"].as_str().unwrap().to_string()))
        .collect();
    for (i, line) in printed.iter().enumerate() {
        if let Ok(offset) = line.parse::<u64>() {
            assert_eq!(by_offset.get(&offset), Some(&format!("rec-{}", i + 1)), "acknowledged offset {offset} lost");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_moves_the_log_start_and_a_lagging_follower_is_reset_to_it() {
    let mut cluster = Cluster::start(3, &["--segment-bytes", "2097152", "--retention-bytes", "6291456"]);
    let leader = cluster.wait_leader(Duration::from_secs(10), &[]).await.expect("leader");
    let lagging = if leader == 3 { 2 } else { 3 };
    cluster.kill(lagging);
    let client = cluster.client().await;
    let value = vec![b'r'; 1000];
    for _ in 0..300 {
        let batch = (0..50).map(|_| keel::batch::Record::new(value.clone())).collect();
        client.produce(batch).await.expect("produce");
    }
    // Retention runs once a second on each node.
    let deadline = Instant::now() + Duration::from_secs(10);
    let start = loop {
        let view = cluster.view(leader).await.expect("leader view");
        if view.log_start_offset > 0 {
            break view.log_start_offset;
        }
        assert!(Instant::now() < deadline, "retention deleted nothing\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let boot = cluster.node(leader).addr.clone();
    let (status, _, err) = consume(&cluster, &boot, &["--from", "0", "--count", "1"]);
    assert!(!status.success());
    assert!(err.contains("out of range") && err.contains(&format!("{start}..")), "unclear error: {err}");
    cluster.restart(lagging);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let leader_view = cluster.view(leader).await.expect("leader view");
        if let Some(v) = cluster.view(lagging).await
            && v.last_index == leader_view.last_index
            && v.log_start_offset > 0
        {
            break;
        }
        assert!(Instant::now() < deadline, "the lagging follower did not catch up\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, out, err) = consume(&cluster, &cluster.node(lagging).addr, &["--from", "earliest", "--count", "5"]);
    assert!(status.success(), "{err}");
    assert_eq!(out.lines().count(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_a_client_stream_closes_that_connection_and_the_node_keeps_serving() {
    let cluster = Cluster::start(1, &[]);
    cluster.wait_leader(Duration::from_secs(10), &[]).await.expect("leader");
    let tls = keel::net::tls::client_config(&cluster.tls).unwrap();
    let endpoint = keel::net::endpoint::client_endpoint(tls).unwrap();
    let addr = cluster.node(1).addr.parse().unwrap();
    let conn = keel::net::endpoint::connect(&endpoint, addr, keel::net::tls::ANY_NODE_NAME).await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    // A length prefix that claims 16 bytes, then a wrong version and junk.
    send.write_all(&[16, 0, 0, 0, 99, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]).await.unwrap();
    let _ = send.finish();
    let _ = recv.read_to_end(1024).await;
    let reason = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await.expect("the node closes it");
    let text = reason.to_string();
    assert!(text.contains("bad frame"), "the close says why: {text}");
    // The node goes on serving other connections.
    let client = cluster.client().await;
    client.produce(vec![keel::batch::Record::new("still here")]).await.expect("produce after garbage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_from_another_ca_is_refused() {
    let cluster = Cluster::start(1, &[]);
    cluster.wait_leader(Duration::from_secs(10), &[]).await.expect("leader");
    let other = tempfile::tempdir_in(common::test_tmp()).unwrap();
    keel::net::certs::generate(&other.path().join("theirs"), &[9], &[], false).unwrap();
    // Trusts our CA (so the server is accepted) but presents their client certificate.
    let mixed = other.path().join("mixed");
    std::fs::create_dir_all(&mixed).unwrap();
    std::fs::copy(cluster.tls.join("ca.pem"), mixed.join("ca.pem")).unwrap();
    for f in ["client.pem", "client.key"] {
        std::fs::copy(other.path().join("theirs").join(f), mixed.join(f)).unwrap();
    }
    let boot = cluster.bootstrap_arg();
    let (status, _, err) = keel(&["status", "--bootstrap", &boot, "--tls", mixed.to_str().unwrap()], b"");
    assert!(!status.success(), "a foreign client certificate must be refused");
    assert!(err.to_lowercase().contains("certificate") || err.contains("alert"), "unclear error: {err}");
    let ok = keel(&["status", "--bootstrap", &boot, "--tls", cluster.tls.to_str().unwrap(), "--timeout", "10s"], b"");
    assert!(ok.0.success(), "our own client certificate works: {}", ok.2);
}

// Regression: records were reordered across pipelined batches (each batch travelled on its
// own stream and was retried on its own), and a record that closed a full batch was dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_keeps_the_input_order_across_batches_and_a_redirect() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader(Duration::from_secs(10), &[]).await.expect("leader");
    let follower = if leader == 1 { 2 } else { 1 };
    // Mixed sizes: every seventh line is 100 KiB, so batches close early and carry over.
    let input: String = (0..3_000)
        .map(|i| if i % 7 == 0 { format!("{i}-{}\n", "y".repeat(100 << 10)) } else { format!("{i}\n") })
        .collect();
    let (status, _, err) = produce(&cluster, &cluster.node(follower).addr, &[], input.as_bytes());
    assert!(status.success(), "{err}");
    let (status, out, err) = consume(&cluster, &cluster.bootstrap_arg(), &["--from", "earliest"]);
    assert!(status.success(), "{err}");
    assert!(out == input, "consumed records differ from the input (order or count)");
}

/// A paused (or dead) leader is left as soon as another node names a new one, not at the
/// connection's idle timeout. Without idempotence the request in flight to it ends "outcome
/// unknown", saying where the leader went. With it (the default) the same batch is resent to
/// the new leader and acknowledged, and once the old leader is back, each record is in the
/// log exactly once. Both the one-batch call and a `Producer` are checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_left_for_the_one_the_other_nodes_name() {
    for idempotence in [false, true] {
        paused_leader_left(idempotence).await;
    }
}

async fn paused_leader_left(idempotence: bool) {
    use keel::batch::Record;
    use keel::client::{Client, ClientConfig, ClientError, Offset, ProducerConfig};
    let cluster = Cluster::start(3, &[]);
    let mut config = ClientConfig::new(cluster.bootstrap(), &cluster.tls);
    // Longer than the idle timeout, so that without the check the failure would be the timeout.
    config.request_timeout = Duration::from_secs(10);
    config.idempotence = idempotence;
    let client = Client::connect(config.clone()).await.expect("client");
    // Its own client (connections are shared within one), so that each finds out by itself.
    let producer_config = ProducerConfig { idempotence, ..ProducerConfig::default() };
    let producer = Client::connect(config).await.expect("client").producer("default", producer_config);
    // Both clients learn the leader from a produce; the leader must not change meanwhile.
    let mut stable = None;
    for _ in 0..5 {
        let leader = cluster.wait_leader(Duration::from_secs(10), &[]).await.expect("leader");
        let term = cluster.view(leader).await.expect("view").term;
        client.produce(vec![Record::new("before")]).await.expect("produce to the leader");
        producer.send(Record::new("before, batched")).await.await.expect("answered").expect("batched produce");
        let view = cluster.view(leader).await.expect("view");
        if view.role == "leader" && view.term == term {
            stable = Some(leader);
            break;
        }
    }
    let old = stable.expect("a leader that stays put for two produces");

    cluster.pause(old);
    let one = client.produce(vec![Record::new("during")]);
    let batched =
        async { producer.send(Record::new("during, batched")).await.await.expect("answered").map(|d| d.offset) };
    let (one, batched) = tokio::join!(one, batched);
    cluster.signal(old, libc::SIGCONT);
    for (what, result) in [("one batch", one), ("producer", batched)] {
        match result {
            Ok(_) if idempotence => {}
            Err(ClientError::OutcomeUnknown(why)) if !idempotence => {
                assert!(why.contains("another node names"), "{what}: left the leader for another reason: {why}")
            }
            other => panic!("{what} (idempotence {idempotence}): a produce to a paused leader ended {other:?}"),
        }
    }
    let after = client.produce(vec![Record::new("after")]).await.expect("produce at the new leader");
    // The end offset comes from the node the client takes for the leader; the old one, just
    // resumed, may answer until it learns of the new term: asked again, bounded.
    let deadline = Instant::now() + Duration::from_secs(5);
    let end = loop {
        let end = client.end_offset("default", 0).await.expect("end offset");
        if after < end {
            break end;
        }
        assert!(Instant::now() < deadline, "the produce after the pause is not in the log (end {end})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if !idempotence {
        return;
    }
    // The old leader, back, catches up; its log then has each record once, as every node's.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut consumer = client.consumer(Offset::At(0));
    let mut values = Vec::new();
    while (values.len() as u64) < end {
        assert!(Instant::now() < deadline, "read {} of {end} records", values.len());
        for (_, record) in consumer.poll().await.expect("poll") {
            values.push(String::from_utf8_lossy(record.value_bytes()).into_owned());
        }
    }
    for value in ["during", "during, batched"] {
        let copies = values.iter().filter(|v| *v == value).count();
        assert_eq!(copies, 1, "{value:?} is in the log {copies} times: {values:?}");
    }
}
