//! Load and checks shared by the membership tests (`moves.rs`, `grow.rs`): a producer that
//! records what was acked, reading every acked record back, the command line off the async
//! threads, and polling for a condition.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keel::batch::Record;
use keel::client::Client;
use keel::net::client_codec::{ClusterMetadata, PartitionView};

use super::Cluster;

/// Acked records: (topic, partition, offset) -> value.
pub type Acked = Arc<Mutex<BTreeMap<(String, u32, u64), String>>>;

pub async fn metadata(client: &Client) -> ClusterMetadata {
    client.metadata_from_leader(None).await.expect("metadata")
}

pub async fn partition(client: &Client, topic: &str, p: u32) -> PartitionView {
    metadata(client).await.topic(topic).expect("topic").partitions[p as usize].clone()
}

/// Produces small batches round-robin to `topic`'s partitions until `stop`, recording what
/// was acked. A batch whose outcome is unknown may be stored or not: it is not recorded.
pub fn spawn_producer(
    client: Client,
    topic: &str,
    partitions: u32,
    acked: Acked,
    stop: Arc<AtomicBool>,
) -> JoinProducer {
    let topic = topic.to_string();
    tokio::spawn(async move {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let p = (n % u64::from(partitions)) as u32;
            let values: Vec<String> = (0..5).map(|i| format!("{topic}-{n}-{i}")).collect();
            let records: Vec<Record> = values.iter().map(|v| Record::new(v.clone())).collect();
            match client.produce_to(&topic, p, records).await {
                Ok(base) => {
                    let mut acked = acked.lock().unwrap();
                    for (i, v) in values.into_iter().enumerate() {
                        acked.insert((topic.clone(), p, base + i as u64), v);
                    }
                }
                Err(e) => println!("produce to {topic}/{p}: {e}"),
            }
            n += 1;
        }
        n
    })
}

pub type JoinProducer = tokio::task::JoinHandle<u64>;

/// Every acked record is in its partition at its offset.
pub async fn check_acked(client: &Client, acked: &Acked) {
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty(), "the producer had nothing acked");
    let partitions: std::collections::BTreeSet<(String, u32)> = acked.keys().map(|(t, p, _)| (t.clone(), *p)).collect();
    for (topic, partition) in partitions {
        let want: BTreeMap<u64, &String> = acked
            .iter()
            .filter(|((t, p, _), _)| *t == topic && *p == partition)
            .map(|((_, _, o), v)| (*o, v))
            .collect();
        super::assert_acked_read_back(client, &topic, partition, &want).await;
    }
}

/// Runs the keel command line off the async threads (the producer keeps running).
pub async fn keel(args: Vec<String>) -> (std::process::ExitStatus, String, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        super::keel(&args, b"")
    })
    .await
    .expect("keel ran")
}

/// The flags that point `keel` at the cluster.
pub fn client_args(cluster: &Cluster) -> Vec<String> {
    vec!["--bootstrap".into(), cluster.bootstrap_arg(), "--tls".into(), cluster.tls.to_str().unwrap().into()]
}

/// Waits until `check` holds, polling, or fails naming `what`.
pub async fn wait_until(cluster: &Cluster, what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} not within {limit:?}\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
