//! The workload: producers that send uniquely named records (`w<writer>-<sequence>`, then
//! `|` and padding) through any node, each to a partition of its own, and consumers that
//! follow one partition's log from offset 0 through one node each. Every operation goes to
//! the history with its partition and outcome.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use keel::batch::Record;
use keel::client::{Client, ClientConfig, Offset};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::history::{Op, Outcome, Part, Recorder, id_of};

/// Records per batch: 1..=this.
const BATCH_RECORDS_MAX: usize = 4;
const PADDING_BYTES: usize = 1000;
/// A producer's pause between sends: the workload measures, it does not saturate.
const SEND_PAUSE: Duration = Duration::from_millis(10);
const ERROR_PAUSE: Duration = Duration::from_millis(100);
const POLL_WAIT: Duration = Duration::from_millis(500);

pub fn client_config(addrs: Vec<String>, tls: &std::path::Path) -> ClientConfig {
    let mut config = ClientConfig::new(addrs, tls);
    // Short, so that unavailability shows as failed operations rather than long waits.
    config.request_timeout = Duration::from_secs(4);
    config.timeout = Duration::from_secs(4);
    config
}

/// A consumer: the partition it follows and the node it prefers to read through (its
/// index among the nodes). It reads through the others where that one holds no replica.
pub struct Reader {
    pub part: Part,
    pub prefer: usize,
}

struct Following {
    part: Part,
    /// The consumer stops once it reaches this offset (`u64::MAX` until the end is known).
    until: Arc<AtomicU64>,
    task: JoinHandle<u64>,
}

pub struct Workload {
    stop_producers: watch::Sender<bool>,
    producers: Vec<JoinHandle<()>>,
    consumers: Vec<Following>,
}

impl Workload {
    /// One producer per partition in `writers` (writer k+1 sends to `writers[k]`) through
    /// all `addrs`; one consumer per reader, also through all `addrs` (ids `nodes`, in order).
    pub async fn start(
        writers: Vec<Part>,
        addrs: Vec<String>,
        readers: Vec<Reader>,
        nodes: Vec<u64>,
        tls: PathBuf,
        recorder: Recorder,
        seed: u64,
    ) -> Workload {
        let (stop_producers, stop) = watch::channel(false);
        let mut producers = Vec::new();
        for (w, part) in (1..).zip(writers) {
            let client = Client::connect(client_config(addrs.clone(), &tls)).await.expect("client");
            let rng = SmallRng::seed_from_u64(seed ^ u64::from(w));
            producers.push(tokio::spawn(produce(w, part, client, recorder.clone(), stop.clone(), rng)));
        }
        let mut consumers = Vec::new();
        for (k, reader) in (1..).zip(readers) {
            let client = Client::connect(client_config(addrs.clone(), &tls)).await.expect("client");
            let until = Arc::new(AtomicU64::new(u64::MAX));
            let part = reader.part.clone();
            let follow = Follow { consumer: k, part: reader.part, nodes: nodes.clone(), prefer: reader.prefer };
            let task = tokio::spawn(consume(follow, client, recorder.clone(), until.clone()));
            consumers.push(Following { part, until, task });
        }
        Workload { stop_producers, producers, consumers }
    }

    pub async fn stop_producers(&mut self) {
        let _ = self.stop_producers.send(true);
        for p in self.producers.drain(..) {
            let _ = p.await;
        }
    }

    /// Lets each consumer read up to its partition's end (`end_of`), waiting at most
    /// `within`; returns each one's partition, end and position (those that did not get
    /// there are aborted).
    pub async fn finish_consumers(
        &mut self,
        end_of: impl Fn(&Part) -> u64,
        within: Duration,
    ) -> Vec<(Part, u64, Option<u64>)> {
        for c in &self.consumers {
            c.until.store(end_of(&c.part), Ordering::SeqCst);
        }
        let deadline = tokio::time::Instant::now() + within;
        let mut out = Vec::new();
        for mut c in self.consumers.drain(..) {
            let end = c.until.load(Ordering::SeqCst);
            match tokio::time::timeout_at(deadline, &mut c.task).await {
                Ok(Ok(position)) => out.push((c.part, end, Some(position))),
                _ => {
                    c.task.abort();
                    out.push((c.part, end, None));
                }
            }
        }
        out
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.producers.iter().for_each(JoinHandle::abort);
        self.consumers.iter().for_each(|c| c.task.abort());
    }
}

async fn produce(
    writer: u32,
    part: Part,
    client: Client,
    recorder: Recorder,
    stop: watch::Receiver<bool>,
    mut rng: SmallRng,
) {
    let padding = "x".repeat(PADDING_BYTES);
    let mut seq = 0u64;
    while !*stop.borrow() {
        let n = rng.random_range(1..=BATCH_RECORDS_MAX);
        let ids: Vec<String> = (0..n)
            .map(|_| {
                seq += 1;
                format!("w{writer}-{seq:06}")
            })
            .collect();
        let records = ids.iter().map(|id| Record::new(format!("{id}|{padding}"))).collect();
        let t = recorder.now();
        let result = client.produce_to(&part.topic, part.partition, records).await;
        let done = recorder.now();
        let outcome = match result {
            Ok(offset) => Outcome::Ok { offset },
            Err(e) if e.known_failed() => Outcome::Fail { error: e.to_string() },
            Err(e) => Outcome::Unknown { error: e.to_string() },
        };
        let failed = !matches!(outcome, Outcome::Ok { .. });
        recorder.record(Op::Send { t, part: part.clone(), writer, ids, outcome, done });
        tokio::time::sleep(if failed { ERROR_PAUSE } else { SEND_PAUSE }).await;
    }
}

/// What one consumer follows: its partition, and the nodes it reads through (by index, the
/// one it prefers first).
struct Follow {
    consumer: u32,
    part: Part,
    nodes: Vec<u64>,
    prefer: usize,
}

/// Follows a partition's log from offset 0 until `until`; returns the position. Each poll
/// is recorded with the node that answered it.
async fn consume(follow: Follow, client: Client, recorder: Recorder, until: Arc<AtomicU64>) -> u64 {
    let Follow { consumer, part, nodes, prefer } = follow;
    let mut c = client.consumer_of(&part.topic, part.partition, Offset::At(0)).max_wait(POLL_WAIT).prefer_node(prefer);
    loop {
        let offset = c.position().unwrap_or(0);
        if offset >= until.load(Ordering::SeqCst) {
            return offset;
        }
        let polled = c.poll().await;
        let node = nodes.get(c.node_index()).copied().unwrap_or(0);
        match polled {
            Ok(batch) => record_polls(&recorder, &part, consumer, node, &batch),
            Err(e) => {
                let t = recorder.now();
                let part = part.clone();
                recorder.record(Op::PollFailed { t, part, consumer, node, offset, error: e.to_string() });
                tokio::time::sleep(ERROR_PAUSE).await;
            }
        }
    }
}

/// One Poll op per run of consecutive offsets (so a gap the client let through shows).
fn record_polls(recorder: &Recorder, part: &Part, consumer: u32, node: u64, batch: &[(u64, Record)]) {
    let t = recorder.now();
    let mut run: Option<(u64, Vec<String>)> = None;
    for (offset, record) in batch {
        match &mut run {
            Some((start, ids)) if *start + ids.len() as u64 == *offset => ids.push(id_of(record.value_bytes())),
            _ => {
                if let Some((offset, ids)) = run.take() {
                    recorder.record(Op::Poll { t, part: part.clone(), consumer, node, offset, ids });
                }
                run = Some((*offset, vec![id_of(record.value_bytes())]));
            }
        }
    }
    if let Some((offset, ids)) = run {
        recorder.record(Op::Poll { t, part: part.clone(), consumer, node, offset, ids });
    }
}

/// Node `addr`'s whole committed log of a partition from offset 0 to `end`, record ids in order.
pub async fn read_all(
    addr: String,
    part: &Part,
    tls: &std::path::Path,
    end: u64,
    within: Duration,
) -> Result<Vec<String>, String> {
    let client = Client::connect(client_config(vec![addr.clone()], tls)).await.map_err(|e| e.to_string())?;
    let mut c = client.consumer_of(&part.topic, part.partition, Offset::At(0)).max_wait(POLL_WAIT).max_bytes(8 << 20);
    let mut ids = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    let mut last_error = String::new();
    while c.position().unwrap_or(0) < end {
        if tokio::time::Instant::now() > deadline {
            return Err(format!("{addr} served {} of {end} records; last error: {last_error}", ids.len()));
        }
        match c.poll().await {
            Ok(batch) => {
                for (offset, record) in batch {
                    if offset != ids.len() as u64 {
                        return Err(format!("{addr} returned offset {offset} after {}", ids.len()));
                    }
                    ids.push(id_of(record.value_bytes()));
                }
            }
            Err(e) => {
                last_error = e.to_string();
                tokio::time::sleep(ERROR_PAUSE).await;
            }
        }
    }
    ids.truncate(end as usize);
    Ok(ids)
}
