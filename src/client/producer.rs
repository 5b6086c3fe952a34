//! Producing: one batch with retries (`produce_batch`), and a `Producer` that gathers
//! records into batches (linger and batch size, as Kafka's producer does) and keeps a
//! bounded window of batches in flight.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use super::conn::{Failure, Nodes, resolve};
use super::{Client, ClientConfig, ClientError};
use crate::net::client_codec::{ErrorReply, Request, Response};
use crate::record::Record;

const BACKOFF_MIN: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_millis(500);

/// Sends `records` as one batch to the leader, following redirects and retrying while the
/// failure is known to have left the log untouched.
pub(super) async fn produce_batch(
    nodes: &Nodes,
    config: &ClientConfig,
    records: &[Record],
) -> Result<u64, ClientError> {
    if records.is_empty() {
        return Err(ClientError::Refused("an empty batch".into()));
    }
    let mut buf = BytesMut::with_capacity(records.iter().map(Record::encoded_len).sum());
    for r in records {
        r.encode(&mut buf);
    }
    let request = Request::Produce { record_count: records.len() as u32, records: buf.freeze() };
    let deadline = Instant::now() + config.retry_for;
    let mut backoff = BACKOFF_MIN;
    let mut rotation = 0usize;
    let mut last;
    loop {
        let target = match nodes.leader() {
            Some(addr) => addr,
            None => {
                let candidates = nodes.bootstrap();
                if candidates.is_empty() {
                    return Err(ClientError::Config("no bootstrap address resolves".into()));
                }
                rotation += 1;
                candidates[rotation % candidates.len()]
            }
        };
        let mut redirected = false;
        match nodes.request(target, &request, config.request_timeout).await {
            Ok(Response::Produced { base_offset, .. }) => {
                nodes.set_leader(Some(target));
                return Ok(base_offset);
            }
            Ok(Response::Error(ErrorReply::NotLeader { address, leader })) => {
                let next: Option<SocketAddr> = address.as_deref().and_then(|a| resolve(a).ok());
                redirected = next.is_some() && next != Some(target);
                nodes.set_leader(next.filter(|a| *a != target));
                last = format!("node at {target} is not the leader (leader: {leader:?})");
            }
            Ok(Response::Error(ErrorReply::Busy(why))) => last = format!("{target} is busy: {why}"),
            Ok(Response::Error(e @ ErrorReply::OutcomeUnknown { .. })) => {
                nodes.set_leader(None);
                return Err(e.into());
            }
            Ok(Response::Error(e)) => return Err(e.into()),
            Ok(other) => {
                return Err(ClientError::OutcomeUnknown(format!("unexpected answer from {target}: {other:?}")));
            }
            Err(Failure::NotSent(why)) => {
                nodes.set_leader(None);
                last = why;
            }
            Err(Failure::Lost(why)) => {
                nodes.set_leader(None);
                return Err(ClientError::OutcomeUnknown(why));
            }
        }
        if Instant::now() >= deadline {
            return Err(ClientError::Unavailable(format!("gave up after {:?}: {last}", config.retry_for)));
        }
        if !redirected {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

#[derive(Clone, Debug)]
pub struct ProducerConfig {
    /// How long a batch waits for more records before it is sent.
    pub linger: Duration,
    /// A batch is sent once its records take this many bytes.
    pub batch_bytes: usize,
    /// Batches in flight at once (the pipeline window).
    pub in_flight: usize,
}

impl Default for ProducerConfig {
    fn default() -> ProducerConfig {
        ProducerConfig { linger: Duration::from_millis(2), batch_bytes: 256 << 10, in_flight: 16 }
    }
}

/// The offset a record got, once its batch is committed.
pub type Ack = oneshot::Receiver<Result<u64, ClientError>>;

type Queued = (Record, oneshot::Sender<Result<u64, ClientError>>);

/// Batches records and sends them with a bounded window of batches in flight. Acks may
/// complete out of order across batches; within a batch offsets follow the send order.
pub struct Producer {
    tx: mpsc::Sender<Queued>,
    task: tokio::task::JoinHandle<()>,
}

impl Producer {
    pub(super) fn new(client: Client, config: ProducerConfig) -> Producer {
        let (tx, rx) = mpsc::channel(4096);
        let task = tokio::spawn(run(client, config, rx));
        Producer { tx, task }
    }

    /// Queues a record; the returned receiver resolves to its offset (or why it failed).
    /// Waits when the producer's queue is full.
    pub async fn send(&self, record: Record) -> Ack {
        let (reply, ack) = oneshot::channel();
        if let Err(mpsc::error::SendError((_, reply))) = self.tx.send((record, reply)).await {
            let _ = reply.send(Err(ClientError::Unavailable("the producer stopped".into())));
        }
        ack
    }

    /// Sends what is queued and waits until every batch has its answer.
    pub async fn close(self) {
        drop(self.tx);
        let _ = self.task.await;
    }
}

async fn run(client: Client, config: ProducerConfig, mut rx: mpsc::Receiver<Queued>) {
    let window = Arc::new(Semaphore::new(config.in_flight.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(first) = rx.recv().await {
        let mut bytes = first.0.encoded_len();
        let mut batch = vec![first];
        let linger = Instant::now() + config.linger;
        while bytes < config.batch_bytes {
            match tokio::time::timeout_at(linger, rx.recv()).await {
                Ok(Some(next)) => {
                    bytes += next.0.encoded_len();
                    batch.push(next);
                }
                _ => break,
            }
        }
        let permit = window.clone().acquire_owned().await.expect("the window is never closed");
        let client = client.clone();
        tasks.spawn(async move {
            let (records, replies): (Vec<Record>, Vec<_>) = batch.into_iter().unzip();
            let result = client.produce(records).await;
            for (i, reply) in replies.into_iter().enumerate() {
                let _ = reply.send(result.clone().map(|base| base + i as u64));
            }
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}
