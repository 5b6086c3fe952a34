//! The cluster's figures, measured in one run on this machine so that they can be compared:
//!
//! (a) raw QUIC: one stream between two local endpoints built as a node builds its own
//!     (`net::endpoint::node_endpoint`, mutual TLS with `keel certs` certificates);
//! (b) raw disk: sequential 256 KiB writes, each followed by fdatasync, into a file sized up
//!     front (as a segment is), in the directory the cluster below keeps its data;
//! (c) keel: 1 KiB records produced through the client library's `Producer` (a window of
//!     64 batches of up to 256 KiB in flight) to 3 `keel serve` processes, MB/s committed,
//!     and its ratio to min(raw QUIC / 2, raw disk / 3): the leader sends every byte twice
//!     and the three replicas share one disk here (the aim is >= 0.5);
//! (d) commit latency with one proposal in flight (one 1 KiB record per produce);
//! (e) kill -9 of the leader to the first acknowledged produce, median of several. A round
//!     that starts soon after the previous restart can take seconds: the node that dials a
//!     restarted peer keeps its dead connection until QUIC's idle timeout, and the two
//!     survivors may be cut from each other until then (the median is robust to that).
//!
//! (f) many groups: (c) again into a topic of 64 partitions (64 Raft groups, records spread
//!     by the producer's sticky partitioner), as a ratio to (c): many groups should not cost
//!     throughput;
//! (g) head of line: (d) on a partition of its own while a producer floods another topic's
//!     partition on the same nodes, as a ratio to (d) measured idle;
//! (h) the latency baseline: 1 KiB write + fdatasync, p50 and p99, with (d) as a ratio to it
//!     (the aim: p50 and p99 each within 2x);
//! (i) consume: what (c) committed, read back from one node with the client library's
//!     `Consumer` (page cache), MB/s and its ratio to (a) (the aim: >= 0.8).
//!
//! `cargo bench --bench cluster` (about a minute here); `KEEL_BENCH_QUICK=1` for a shorter run.
//! MB are 10^6 bytes. The last line printed is one JSON object with every figure.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Cluster;
use hdrhistogram::Histogram;
use keel::batch::Record;
use keel::client::{Client, ClientConfig, ProducerConfig};
use keel::net::endpoint::{connect, node_endpoint};
use keel::net::tls::{NodeTls, node_name};

/// What `Producer::send` returns: the record's offset once committed.
use keel::client::Ack;

const MB: f64 = 1e6;
const RECORD_BYTES: usize = 1024;
const DISK_WRITE_BYTES: usize = 256 << 10;

struct Sizes {
    quic_bytes: u64,
    disk_bytes: u64,
    keel_records: u64,
    latency_samples: u64,
    failovers: usize,
}

fn sizes() -> Sizes {
    if std::env::var_os("KEEL_BENCH_QUICK").is_some() {
        Sizes { quic_bytes: 128 << 20, disk_bytes: 64 << 20, keel_records: 50_000, latency_samples: 500, failovers: 3 }
    } else {
        Sizes {
            quic_bytes: 1 << 30,
            disk_bytes: 256 << 20,
            keel_records: 200_000,
            latency_samples: 3000,
            failovers: 10,
        }
    }
}

fn main() {
    let sizes = sizes();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let root = tempfile::Builder::new().prefix("keel-bench-").tempdir_in(common::test_tmp()).expect("tmp");

    let quic = runtime.block_on(raw_quic(root.path(), sizes.quic_bytes));
    println!("(a) raw QUIC, one stream, mutual TLS: {quic:.0} MB/s ({} MiB)", sizes.quic_bytes >> 20);
    let disk = raw_disk(root.path(), sizes.disk_bytes);
    println!("(b) raw disk, 256 KiB write + fdatasync: {disk:.0} MB/s ({} MiB)", sizes.disk_bytes >> 20);

    let cluster = Cluster::start(3, &[]);
    let figures = runtime.block_on(async {
        cluster.wait_leader(Duration::from_secs(10), &[]).await.expect("a leader");
        let keel = replication(&cluster, "default", sizes.keel_records).await;
        let bound = (quic / 2.0).min(disk / 3.0);
        println!(
            "(c) keel, 3 nodes, 1 KiB records: {keel:.1} MB/s committed ({} records); \
             ratio to min(QUIC/2, disk/3) = {bound:.0} MB/s: {:.2}",
            sizes.keel_records,
            keel / bound
        );
        let (p50, p99) = latency(&cluster, "default", sizes.latency_samples).await;
        println!(
            "(d) commit latency, one in flight: p50 {p50:.2} ms, p99 {p99:.2} ms ({} produces)",
            sizes.latency_samples
        );
        let client = cluster.client().await;
        for (topic, partitions) in [("many", 64), ("quiet", 1), ("flood", 1)] {
            client.create_topic(topic, Some(partitions), Some(3), &[]).await.expect("create topic");
        }
        let many = replication(&cluster, "many", sizes.keel_records).await;
        println!("(f) (c) into 64 partitions: {many:.1} MB/s committed; ratio to (c): {:.2}", many / keel);
        let (idle, _) = latency(&cluster, "quiet", sizes.latency_samples).await;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flood = tokio::spawn(flood(cluster.client().await, stop.clone()));
        let (busy, _) = latency(&cluster, "quiet", sizes.latency_samples).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let flooded = flood.await.expect("flood");
        println!(
            "(g) commit latency p50 of one partition: idle {idle:.2} ms, while another floods ({:.0} MB/s): \
             {busy:.2} ms; ratio {:.2}",
            flooded,
            busy / idle
        );
        let (sync_p50, sync_p99) = fdatasync_latency(root.path(), sizes.latency_samples);
        println!(
            "(h) 1 KiB write + fdatasync: p50 {sync_p50:.2} ms, p99 {sync_p99:.2} ms; (d) as a ratio: p50 {:.2}, \
             p99 {:.2}",
            p50 / sync_p50,
            p99 / sync_p99
        );
        let consumed = consume(&cluster, "default", sizes.keel_records).await;
        println!(
            "(i) consume from one node, {} records of (c): {consumed:.0} MB/s; ratio to (a): {:.2}",
            sizes.keel_records,
            consumed / quic
        );
        let latency_ratios = (p50 / sync_p50, p99 / sync_p99);
        (keel, bound, p50, p99, many / keel, busy / idle, latency_ratios, consumed)
    });
    let (keel, bound, p50, p99, many_ratio, hol_ratio, latency_ratios, consumed) = figures;
    let mut cluster = cluster;
    let mut failovers = runtime.block_on(failovers(&mut cluster, sizes.failovers));
    failovers.sort_by(f64::total_cmp);
    let median = failovers[failovers.len() / 2];
    let all: Vec<String> = failovers.iter().map(|ms| format!("{ms:.0}")).collect();
    println!(
        "(e) kill -9 of the leader to the next acknowledged produce: median {median:.0} ms ({} ms)",
        all.join(", ")
    );
    let json = serde_json::json!({
        "quic_mb_s": round(quic),
        "disk_mb_s": round(disk),
        "keel_mb_s": round(keel),
        "keel_ratio": round(keel / bound),
        "commit_p50_ms": round(p50),
        "commit_p99_ms": round(p99),
        "many_groups_ratio": round(many_ratio),
        "head_of_line_ratio": round(hol_ratio),
        "commit_p50_to_fdatasync": round(latency_ratios.0),
        "commit_p99_to_fdatasync": round(latency_ratios.1),
        "consume_mb_s": round(consumed),
        "consume_to_quic": round(consumed / quic),
        "failover_median_ms": round(median),
        "failover_ms": failovers.iter().map(|ms| round(*ms)).collect::<Vec<_>>(),
    });
    println!("{json}");
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// (a) `bytes` over one unidirectional stream between two node endpoints on loopback.
async fn raw_quic(root: &Path, bytes: u64) -> f64 {
    let tls_dir = root.join("quic-tls");
    keel::net::certs::generate(&tls_dir, &[1, 2], &[], false).expect("certificates");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let sender = node_endpoint(any, &NodeTls::load(&tls_dir, 1, true).expect("tls 1")).expect("endpoint 1");
    let receiver = node_endpoint(any, &NodeTls::load(&tls_dir, 2, true).expect("tls 2")).expect("endpoint 2");
    let to = receiver.local_addr().expect("address");
    let accepting = tokio::spawn(async move {
        let conn = receiver.accept().await.expect("incoming").await.expect("handshake");
        let mut stream = conn.accept_uni().await.expect("stream");
        let mut received = 0u64;
        while let Some(chunk) = stream.read_chunk(usize::MAX, true).await.expect("read") {
            received += chunk.bytes.len() as u64;
        }
        (received, Instant::now(), conn)
    });
    let conn = connect(&sender, to, &node_name(2)).await.expect("connect");
    let chunk = Bytes::from(vec![0x5a; 1 << 20]);
    let started = Instant::now();
    let mut stream = conn.open_uni().await.expect("stream");
    for _ in 0..bytes / chunk.len() as u64 {
        stream.write_chunk(chunk.clone()).await.expect("write");
    }
    stream.finish().expect("finish");
    let (received, done, _conn) = accepting.await.expect("receiver");
    assert_eq!(received, bytes / chunk.len() as u64 * chunk.len() as u64);
    received as f64 / MB / (done - started).as_secs_f64()
}

/// (b) `bytes` written in 256 KiB pieces of 1 KiB records, an fdatasync after each piece.
fn raw_disk(root: &Path, bytes: u64) -> f64 {
    let path = root.join("raw-disk");
    let file =
        std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path).expect("file");
    file.set_len(bytes).expect("size the file");
    file.sync_all().expect("sync");
    let piece = vec![0xa5u8; DISK_WRITE_BYTES];
    let started = Instant::now();
    let mut at = 0;
    while at < bytes {
        file.write_all_at(&piece, at).expect("write");
        file.sync_data().expect("fdatasync");
        at += piece.len() as u64;
    }
    let secs = started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path).expect("remove");
    at as f64 / MB / secs
}

/// (h) p50 and p99 in ms of 1 KiB writes each followed by fdatasync, appended to a file
/// sized up front (as a segment is) in the directory of the cluster's data.
fn fdatasync_latency(root: &Path, samples: u64) -> (f64, f64) {
    let path = root.join("raw-latency");
    let file =
        std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path).expect("file");
    file.set_len(samples * RECORD_BYTES as u64).expect("size the file");
    file.sync_all().expect("sync");
    let piece = vec![0x5au8; RECORD_BYTES];
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    for n in 0..samples {
        let started = Instant::now();
        file.write_all_at(&piece, n * RECORD_BYTES as u64).expect("write");
        file.sync_data().expect("fdatasync");
        histogram.record(started.elapsed().as_micros().max(1) as u64).expect("in bounds");
    }
    drop(file);
    std::fs::remove_file(&path).expect("remove");
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    (ms(0.50), ms(0.99))
}

/// (i) MB/s of record values read from partition 0 of `topic`, from offset 0 until
/// `records` records, through one node.
async fn consume(cluster: &Cluster, topic: &str, records: u64) -> f64 {
    let client = cluster.client().await;
    let mut consumer = client.consumer_of(topic, 0, keel::client::Offset::At(0)).max_bytes(8 << 20);
    let (mut read, mut bytes) = (0u64, 0u64);
    let started = Instant::now();
    while read < records {
        let polled = consumer.poll().await.expect("poll");
        assert!(!polled.is_empty(), "the records (c) committed are there to read");
        read += polled.len() as u64;
        bytes += polled.iter().map(|(_, r)| r.value.as_ref().map_or(0, |v| v.len() as u64)).sum::<u64>();
    }
    bytes as f64 / MB / started.elapsed().as_secs_f64()
}

/// (c) MB/s of 1 KiB records committed, from the first send to the last acknowledgement.
async fn replication(cluster: &Cluster, topic: &str, records: u64) -> f64 {
    let client = cluster.client().await;
    client.produce_to(topic, 0, vec![Record::new("warm-up")]).await.expect("warm-up");
    let config = ProducerConfig { in_flight: 64, batch_bytes: 256 << 10, ..Default::default() };
    let producer = client.producer(topic, config);
    let value = Bytes::from(vec![0x3cu8; RECORD_BYTES]);
    let started = Instant::now();
    let (acks_tx, mut acks_rx) = tokio::sync::mpsc::channel::<Ack>(1 << 16);
    let waiter = tokio::spawn(async move {
        let mut acked = 0u64;
        while let Some(ack) = acks_rx.recv().await {
            ack.await.expect("ack").expect("produced");
            acked += 1;
        }
        acked
    });
    for _ in 0..records {
        acks_tx.send(producer.send(Record::new(value.clone())).await).await.expect("waiter");
    }
    drop(acks_tx);
    producer.close().await;
    let acked = waiter.await.expect("waiter");
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(acked, records);
    (records * RECORD_BYTES as u64) as f64 / MB / secs
}

/// (d) p50 and p99 in ms of `samples` produces of one 1 KiB record, one at a time, to
/// partition 0 of `topic`.
async fn latency(cluster: &Cluster, topic: &str, samples: u64) -> (f64, f64) {
    let client = cluster.client().await;
    let value = Bytes::from(vec![0x7eu8; RECORD_BYTES]);
    client.produce_to(topic, 0, vec![Record::new(value.clone())]).await.expect("warm-up");
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    for _ in 0..samples {
        let started = Instant::now();
        client.produce_to(topic, 0, vec![Record::new(value.clone())]).await.expect("produce");
        histogram.record(started.elapsed().as_micros() as u64).expect("in bounds");
    }
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    (ms(0.50), ms(0.99))
}

/// (g) Produces 1 KiB records to the topic `flood` as fast as a 64-batch window allows
/// until `stop`; the MB/s it got committed.
async fn flood(client: Client, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> f64 {
    let config = ProducerConfig { in_flight: 64, batch_bytes: 256 << 10, ..Default::default() };
    let producer = client.producer("flood", config);
    let value = Bytes::from(vec![0x5au8; RECORD_BYTES]);
    let (acks_tx, mut acks_rx) = tokio::sync::mpsc::channel::<Ack>(1 << 12);
    let waiter = tokio::spawn(async move {
        while let Some(ack) = acks_rx.recv().await {
            ack.await.expect("ack").expect("produced");
        }
    });
    let (started, mut sent) = (Instant::now(), 0u64);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        acks_tx.send(producer.send(Record::new(value.clone())).await).await.expect("waiter");
        sent += 1;
    }
    drop(acks_tx);
    producer.close().await;
    waiter.await.expect("waiter");
    (sent * RECORD_BYTES as u64) as f64 / MB / started.elapsed().as_secs_f64()
}

/// (e) `rounds` times: kill -9 the leader, then produce one record at a time to the two
/// survivors until one acknowledges; the time from the kill to that acknowledgement. The
/// killed node is restarted and caught up before the next round.
///
/// Each attempt uses a fresh client pointed at one survivor (a fresh connection costs a
/// loopback handshake per attempt), so this measures the cluster's failover, not a
/// client's search for the new leader (`tests/client_failover.rs` measures that).
async fn failovers(cluster: &mut Cluster, rounds: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let leader = cluster.wait_leader(Duration::from_secs(10), &[]).await.expect("a leader");
        let survivors: Vec<String> =
            (1..=3).filter(|id| *id != leader).map(|id| cluster.node(id).addr.clone()).collect();
        let killed = Instant::now();
        cluster.kill(leader);
        let acked = loop {
            if let Some(at) = produce_to_any(&survivors, &cluster.tls).await {
                break at;
            }
            assert!(killed.elapsed() < Duration::from_secs(10), "no produce acknowledged 10 s after the kill");
        };
        let ms = (acked - killed).as_secs_f64() * 1000.0;
        print!("  round {}: {ms:.0} ms; ", round + 1);
        cluster.restart(leader);
        let caught_up = caught_up(cluster, leader).await;
        println!("node {leader} restarted and caught up in {caught_up:.1} s");
        out.push(ms);
    }
    let _ = std::io::stdout().flush();
    out
}

/// One produce to each of `nodes` at once; when one is acknowledged, when.
async fn produce_to_any(nodes: &[String], tls: &Path) -> Option<Instant> {
    let mut attempts = tokio::task::JoinSet::new();
    for addr in nodes {
        let mut config = ClientConfig::new([addr.clone()], tls);
        config.request_timeout = Duration::from_millis(200);
        // Each attempt is given up after 250 ms below anyway; the next round tries again.
        config.timeout = Duration::from_millis(250);
        attempts.spawn(async move {
            let client = Client::connect(config).await.ok()?;
            let produce = client.produce(vec![Record::new("after the kill")]);
            match tokio::time::timeout(Duration::from_millis(250), produce).await {
                Ok(Ok(_)) => Some(Instant::now()),
                _ => None,
            }
        });
    }
    let mut acked: Option<Instant> = None;
    while let Some(result) = attempts.join_next().await {
        if let Ok(Some(at)) = result {
            acked = Some(acked.map_or(at, |a| a.min(at)));
        }
    }
    if acked.is_none() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    acked
}

/// Waits until node `id` has the leader's commit index; returns the seconds it took.
async fn caught_up(cluster: &Cluster, id: u64) -> f64 {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    loop {
        let leader = cluster.wait_leader(Duration::from_secs(10), &[]).await.expect("a leader");
        let target = cluster.view(leader).await.map_or(u64::MAX, |v| v.commit_index);
        if cluster.view(id).await.is_some_and(|v| v.commit_index >= target && v.leader.is_some()) {
            return started.elapsed().as_secs_f64();
        }
        assert!(Instant::now() < deadline, "node {id} did not catch up in 30 s\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
