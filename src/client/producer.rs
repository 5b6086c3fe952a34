//! Producing: one batch with retries (`produce_batch`), and a `Producer` that spreads a
//! topic's records over its partitions (`partitioner.rs`) and, per partition, gathers them
//! into batches (linger and batch size, as Kafka's producer does) and keeps a bounded
//! window of batches in flight on one ordered stream to the partition's leader.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::conn::{ENTRY_BYTES_MAX, Failure, LEADER_CHECK_AFTER, Partition, RESPONSE_BYTES_MAX, resolve};
use super::idempotence::{Sequencer, init_producer_id};
use super::partitioner::{Sticky, partition_of_key};
use super::{Client, ClientError, Notice};
use crate::batch::{BatchBuilder, Compression, Record};
use crate::net::Connection;
use crate::net::client_codec::{ErrorReply, Request, Response};
use crate::net::endpoint::{read_frame, write_frame};
use crate::producers::WINDOW;

const BACKOFF_MIN: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_millis(500);

/// Encodes `records` as one Kafka RecordBatch v2; a record without a timestamp gets the
/// time now (CreateTime, as a Kafka producer sets it).
pub(super) fn encode_batch(records: &[Record], compression: Compression) -> Result<Bytes, ClientError> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let mut builder = BatchBuilder::new(compression);
    for r in records {
        let pushed =
            if r.timestamp_ms < 0 { builder.push(&Record { timestamp_ms: now, ..r.clone() }) } else { builder.push(r) };
        pushed.map_err(|e| ClientError::Refused(e.to_string()))?;
    }
    Ok(builder.finish())
}

/// Sends `records` as one batch to `partition`'s leader, following redirects and retrying
/// until `timeout`. Every failure known to leave the log untouched is retried; with
/// idempotence (`ClientConfig::idempotence`) a send whose outcome is unknown is retried too,
/// as the same batch, which the leader appends once. Calls on one partition at once each
/// use a session of their own (`idempotence.rs`).
pub(super) async fn produce_batch(
    client: &Client,
    partition: &Partition,
    records: &[Record],
    compression: Compression,
) -> Result<u64, ClientError> {
    if records.is_empty() {
        return Err(ClientError::Refused("an empty batch".into()));
    }
    let (nodes, config) = (&client.nodes, &client.config);
    let batch = encode_batch(records, compression)?;
    let record_count = i32::try_from(records.len()).map_err(|_| ClientError::Refused("too many records".into()))?;
    let mut request = Request::Produce { topic: partition.0.clone(), partition: partition.1, batch };
    let deadline = Instant::now() + config.timeout;
    let mut backoff = BACKOFF_MIN;
    // The session the batch is stamped with (idempotence), and whether to bump its epoch
    // before the next send (the partition refused its sequence or epoch).
    let mut sequencer: Option<Sequencer> = None;
    let mut bump = false;
    // Whether a send may have been appended: the call then cannot end "not appended".
    let mut maybe_appended = false;
    let mut last;
    loop {
        if config.idempotence && (sequencer.is_none() || bump) {
            let reuse = if bump { None } else { client.sessions.take(partition) };
            let mut next = match reuse {
                Some(idle) => idle,
                None => {
                    let current = sequencer.filter(|_| bump).map(|s| s.session);
                    let init = init_producer_id(nodes, config.request_timeout, current, deadline, config.timeout);
                    match init.await {
                        Ok(session) => Sequencer::new(session),
                        Err(ClientError::TimedOut { .. }) if maybe_appended => {
                            return Err(ClientError::OutcomeUnknown("no producer session to resend it with".into()));
                        }
                        Err(e) => return Err(e),
                    }
                }
            };
            next.stamp(&mut request, record_count);
            (sequencer, bump) = (Some(next), false);
        }
        let target = match nodes.leader(partition) {
            Some(addr) => addr,
            None => match nodes.find_leader(partition, deadline).await {
                Ok(addr) => addr,
                Err(ClientError::TimedOut { last, .. }) if maybe_appended => {
                    return Err(ClientError::OutcomeUnknown(format!("sent, then no leader to resend it to: {last}")));
                }
                Err(e) => return Err(e),
            },
        };
        // A request that times out has left: its outcome is unknown.
        let timeout = config.request_timeout.min(deadline.saturating_duration_since(Instant::now()));
        let mut redirected = false;
        match nodes.request_to_leader(partition, target, &request, timeout).await {
            Ok(Response::Produced { base_offset, .. }) => {
                nodes.set_leader(partition, Some(target));
                nodes.notices().produce_accepted();
                if let Some(mut settled) = sequencer {
                    settled.confirmed();
                    client.sessions.give_back(partition, settled);
                }
                return Ok(base_offset);
            }
            Ok(Response::Error(ErrorReply::NotLeader { address, leader })) => {
                let next: Option<SocketAddr> = address.as_deref().and_then(|a| resolve(a).ok());
                redirected = next.is_some() && next != Some(target);
                nodes.set_leader(partition, next.filter(|a| *a != target));
                last = format!("node at {target} is not the leader (leader: {leader:?})");
            }
            Ok(Response::Error(e @ ErrorReply::DiskFull { .. })) => {
                last = e.to_string();
                nodes.notices().produce_refused(&e);
            }
            Ok(Response::Error(ErrorReply::Busy(why))) => last = format!("{target} is busy: {why}"),
            Ok(Response::Error(e @ ErrorReply::OutcomeUnknown { .. })) if sequencer.is_some() => {
                nodes.set_leader(partition, None);
                maybe_appended = true;
                last = e.to_string();
            }
            Ok(Response::Error(e @ ErrorReply::OutcomeUnknown { .. })) => {
                nodes.set_leader(partition, None);
                return Err(e.into());
            }
            // Not appended: a retry of an appended batch would be answered as a duplicate.
            // The epoch bump fences whatever the session may still have on its way.
            Ok(Response::Error(e @ ErrorReply::Producer(_))) if sequencer.is_some() => {
                bump = true;
                last = e.to_string();
            }
            Ok(Response::Error(e)) => return Err(e.into()),
            Ok(other) => {
                return Err(ClientError::OutcomeUnknown(format!("unexpected answer from {target}: {other:?}")));
            }
            Err(Failure::NotSent(why)) => {
                nodes.forget_leader(partition, target);
                last = why;
            }
            Err(Failure::Lost(why)) if sequencer.is_some() => {
                nodes.forget_leader(partition, target);
                maybe_appended = true;
                last = why;
            }
            Err(Failure::Lost(why)) => {
                nodes.forget_leader(partition, target);
                return Err(ClientError::OutcomeUnknown(why));
            }
            Err(Failure::Certificate(e)) => return Err(e.into()),
        }
        // Given up before the deadline rather than sent just before it: a request cut off
        // by the deadline would end "outcome unknown" for a batch that was never taken.
        let pause = if redirected { Duration::ZERO } else { backoff };
        if Instant::now() + pause + BACKOFF_MIN >= deadline {
            if maybe_appended {
                return Err(ClientError::OutcomeUnknown(format!("sent, then retried until the deadline: {last}")));
            }
            return Err(ClientError::TimedOut { after: config.timeout, last });
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
    /// Batches in flight at once, per partition (the pipeline window); at most
    /// `producers::WINDOW` (5) with idempotence, the batches a partition remembers per
    /// producer to answer a retry as a duplicate.
    pub in_flight: usize,
    /// How batches are compressed (stored as they are sent).
    pub compression: Compression,
    /// Produce as an idempotent producer (on by default): a batch whose outcome is unknown
    /// is sent again as the same batch, which the leader appends once, so every record is
    /// appended exactly once or reported not appended (or, once its deadline passed while
    /// the cluster could not say, unknown).
    pub idempotence: bool,
}

impl Default for ProducerConfig {
    fn default() -> ProducerConfig {
        ProducerConfig {
            linger: Duration::from_millis(2),
            batch_bytes: 256 << 10,
            in_flight: WINDOW,
            compression: Compression::None,
            idempotence: true,
        }
    }
}

/// Where a record was appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivered {
    pub partition: u32,
    pub offset: u64,
}

/// Where a record was appended, once its batch is committed (or why it was not).
pub type Ack = oneshot::Receiver<Result<Delivered, ClientError>>;

type Reply = oneshot::Sender<Result<Delivered, ClientError>>;
type Queued = (Record, Reply);

/// Records queued for one partition before `send` waits.
const PARTITION_QUEUE_MAX: usize = 4096;
/// Partitions one producer keeps pipelines for.
const PARTITIONS_MAX: usize = 10_000;

/// Produces to one topic. Each record goes to a partition (its key's, or the sticky one:
/// `partitioner.rs`), and each partition's records are batched and kept in flight on one
/// ordered stream to that partition's leader, so a partition's records are appended in
/// the order they were sent. When the leader refuses a batch (it is not the leader, it is
/// busy), every later batch of the stream is refused too (an idempotent one because its
/// sequence then leaves a gap); the producer resends from the refused batch, in order, on a
/// new stream.
///
/// With idempotence (the default) each partition's pipeline is a producer session of its
/// own (`idempotence.rs`), and a batch whose outcome is unknown (the connection broke, the
/// leader moved) is resent with the same sequence until its deadline: the leader appends it
/// once and answers a retry of an appended batch with its original offsets. Only a batch
/// still unsettled at its deadline is reported [`ClientError::OutcomeUnknown`]; the
/// session is then bumped to a new epoch (said by [`Notice::ProducerSessionRenewed`]).
/// Without idempotence a batch whose outcome is unknown is not resent: it may be missing
/// or, resent by the caller, appended twice.
pub struct Producer {
    tx: mpsc::Sender<Sent>,
    dispatcher: tokio::task::JoinHandle<()>,
    /// The client's deadline for each record.
    timeout: Duration,
    /// The topic's partition count once learned (0: not yet).
    partitions: Arc<AtomicU32>,
}

/// A record handed to `send`, with the partition asked for and its deadline.
struct Sent {
    partition: Option<u32>,
    record: Record,
    reply: Reply,
    deadline: Instant,
}

/// How records are spread over the partitions, by the dispatcher task.
struct Spread {
    client: Client,
    topic: String,
    config: ProducerConfig,
    /// The topic's partitions, once known.
    partitions: Option<u32>,
    learned: Arc<AtomicU32>,
    sticky: Sticky,
    pipelines: HashMap<u32, Pipeline>,
}

/// One partition's batching and sending.
struct Pipeline {
    tx: mpsc::Sender<Queued>,
    task: tokio::task::JoinHandle<()>,
}

impl Producer {
    pub(super) fn new(client: Client, topic: &str, config: ProducerConfig) -> Producer {
        let (tx, rx) = mpsc::channel(PARTITION_QUEUE_MAX);
        let partitions = Arc::new(AtomicU32::new(0));
        let timeout = client.config.timeout;
        let spread = Spread {
            client,
            topic: topic.into(),
            config,
            partitions: None,
            learned: partitions.clone(),
            sticky: Sticky::default(),
            pipelines: HashMap::new(),
        };
        let dispatcher = tokio::spawn(spread.dispatch(rx));
        Producer { tx, dispatcher, timeout, partitions }
    }

    /// The topic's partition count, once the producer learned it (at its first send).
    pub fn partitions(&self) -> Option<u32> {
        Some(self.partitions.load(Ordering::Relaxed)).filter(|&n| n > 0)
    }

    /// Queues a record for the partition the partitioner picks; the returned receiver
    /// resolves to where it was appended (or why it was not). Waits when the producer's
    /// queue is full.
    pub async fn send(&self, record: Record) -> Ack {
        self.send_to(None, record).await
    }

    /// Queues a record for `partition` (or, with `None`, the partitioner's pick). Its
    /// deadline runs from now: learning the topic's partitions counts against it.
    pub async fn send_to(&self, partition: Option<u32>, record: Record) -> Ack {
        let (reply, ack) = oneshot::channel();
        let deadline = Instant::now() + self.timeout;
        if let Err(mpsc::error::SendError(sent)) = self.tx.send(Sent { partition, record, reply, deadline }).await {
            let _ = sent.reply.send(Err(ClientError::Unavailable("the producer stopped".into())));
        }
        ack
    }

    /// Sends what is queued and waits until every batch has its answer.
    pub async fn close(self) {
        drop(self.tx);
        let _ = self.dispatcher.await;
    }

    /// Stops at once: every record not answered yet is dropped, its ack an error. A batch
    /// that was in flight may still be appended (its outcome is unknown).
    pub fn abort(self) {
        self.dispatcher.abort();
    }
}

impl Spread {
    /// Routes every record to its partition's pipeline; once the producer is closed, waits
    /// for every pipeline to finish. Aborting it aborts the pipelines too.
    async fn dispatch(mut self, mut rx: mpsc::Receiver<Sent>) {
        let mut abort_on_drop = AbortPipelines(Vec::new());
        while let Some(sent) = rx.recv().await {
            let Sent { partition, record, reply, deadline } = sent;
            match self.pipeline(partition, &record, deadline).await {
                Ok(tx) => {
                    if let Err(mpsc::error::SendError((_, reply))) = tx.send((record, reply)).await {
                        let _ = reply.send(Err(ClientError::Unavailable("the producer stopped".into())));
                    }
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            }
            abort_on_drop.0 = self.pipelines.values().map(|p| p.task.abort_handle()).collect();
        }
        let tasks: Vec<_> = std::mem::take(&mut self.pipelines).into_values().map(|p| p.task).collect();
        drop(self);
        for task in tasks {
            let _ = task.await;
        }
        abort_on_drop.0.clear();
    }

    /// The queue of the partition `record` goes to, its pipeline started on first use.
    async fn pipeline(
        &mut self,
        partition: Option<u32>,
        record: &Record,
        deadline: Instant,
    ) -> Result<mpsc::Sender<Queued>, ClientError> {
        let count = match self.partitions {
            Some(count) => count,
            None if Instant::now() >= deadline => {
                let last = format!("the partitions of {} were not learned in time", self.topic);
                return Err(ClientError::TimedOut { after: self.client.config.timeout, last });
            }
            None => {
                let count = self.client.partitions_or_create(&self.topic, deadline).await?;
                self.partitions = Some(count);
                self.learned.store(count, Ordering::Relaxed);
                count
            }
        };
        let partition = match (partition, &record.key) {
            (Some(p), _) if p >= count => {
                return Err(ClientError::UnknownPartition { topic: self.topic.clone(), partition: p, count });
            }
            (Some(p), _) => p,
            (None, Some(key)) => partition_of_key(key, count),
            (None, None) => self.sticky.next(record_bytes(record), count, self.config.batch_bytes),
        };
        if let Some(p) = self.pipelines.get(&partition) {
            return Ok(p.tx.clone());
        }
        if self.pipelines.len() >= PARTITIONS_MAX {
            return Err(ClientError::Refused(format!("a producer writes to at most {PARTITIONS_MAX} partitions")));
        }
        let (tx, rx) = mpsc::channel(PARTITION_QUEUE_MAX);
        let (batches_tx, batches_rx) = mpsc::channel(self.config.in_flight.max(1));
        let key: Partition = (self.topic.clone(), partition);
        let timeout = self.client.config.timeout;
        tokio::spawn(gather(rx, batches_tx, key.clone(), self.config.clone(), timeout));
        let task = tokio::spawn(drive(self.client.clone(), self.config.clone(), key, batches_rx));
        self.pipelines.insert(partition, Pipeline { tx: tx.clone(), task });
        Ok(tx)
    }
}

/// Aborts the pipelines when the dispatcher is aborted (`Producer::abort`).
struct AbortPipelines(Vec<tokio::task::AbortHandle>);

impl Drop for AbortPipelines {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// What a record adds to a batch, near enough for batching decisions.
fn record_bytes(record: &Record) -> usize {
    record.size()
}

/// One batch on its way: the request and who waits for each record's offset.
struct Batch {
    request: Request,
    /// Records in the batch: the sequence numbers it takes.
    records: i32,
    /// Its first sequence, once stamped (idempotence): kept for every resend. A stamped
    /// batch may have been sent, so it is never reported "not appended".
    sequence: Option<i32>,
    partition: u32,
    replies: Vec<Reply>,
    give_up: Instant,
}

impl Batch {
    fn resolve(self, result: Result<u64, ClientError>) {
        let partition = self.partition;
        for (i, reply) in self.replies.into_iter().enumerate() {
            let _ = reply.send(result.clone().map(|base| Delivered { partition, offset: base + i as u64 }));
        }
    }
}

/// Turns records into batches: a batch closes after `linger` or at `batch_bytes`; a record
/// that would overflow a non-empty batch starts the next one.
async fn gather(
    mut rx: mpsc::Receiver<Queued>,
    batches: mpsc::Sender<Batch>,
    partition: Partition,
    config: ProducerConfig,
    timeout: Duration,
) {
    let mut carry = None;
    loop {
        let first = match carry.take() {
            Some(record) => record,
            None => match rx.recv().await {
                Some(record) => record,
                None => return,
            },
        };
        let mut bytes = record_bytes(&first.0);
        let mut batch = vec![first];
        let linger = Instant::now() + config.linger;
        while bytes < config.batch_bytes {
            match tokio::time::timeout_at(linger, rx.recv()).await {
                Ok(Some(next)) if bytes + record_bytes(&next.0) > config.batch_bytes => {
                    carry = Some(next);
                    break;
                }
                Ok(Some(next)) => {
                    bytes += record_bytes(&next.0);
                    batch.push(next);
                }
                _ => break,
            }
        }
        let (records, replies): (Vec<Record>, Vec<_>) = batch.into_iter().unzip();
        let encoded = match encode_batch(&records, config.compression) {
            Ok(encoded) => encoded,
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
                continue;
            }
        };
        let request = Request::Produce { topic: partition.0.clone(), partition: partition.1, batch: encoded };
        let records = replies.len() as i32;
        let give_up = Instant::now() + timeout;
        let batch = Batch { request, records, sequence: None, partition: partition.1, replies, give_up };
        if batches.send(batch).await.is_err() {
            return;
        }
    }
}

/// How a session with the leader ended.
enum Ended {
    /// Every batch was answered and no more will come.
    Done,
    /// Resend the requeued batches on a new session, after `pause`.
    Retry { pause: Duration, why: String },
}

/// A pipeline's idempotent producer session (`idempotence.rs`).
struct Idempotent {
    /// `None` until InitProducerId answered.
    sequencer: Option<Sequencer>,
    /// Why the session must be bumped to a new epoch before the next batch is stamped: no
    /// batch stamped in it is unsettled any more, and the next one would meet a gap.
    renew: Option<String>,
}

impl Idempotent {
    /// Batches that may be in flight at once, of `window`.
    fn in_flight_max(&self, window: usize) -> usize {
        self.sequencer.map_or(1, |s| s.in_flight_max(window.min(WINDOW)))
    }

    /// Stamps `batch` with the session's next sequence, unless it was stamped already.
    fn stamp(&mut self, batch: &mut Batch) {
        if batch.sequence.is_none() {
            let sequencer = self.sequencer.as_mut().expect("a session is set up before a batch is sent");
            batch.sequence = Some(sequencer.stamp(&mut batch.request, batch.records));
        }
    }

    /// The session's sequence is lost: every stamped batch still waiting (they come first
    /// in `queue`) may have been appended after the ones reported unknown, or not: they are
    /// reported unknown too, and the session renewed before anything else is sent.
    fn lost(&mut self, queue: &mut VecDeque<Batch>, why: &str) {
        while queue.front().is_some_and(|b| b.sequence.is_some()) {
            let batch = queue.pop_front().expect("non-empty");
            batch.resolve(Err(ClientError::OutcomeUnknown(why.to_string())));
        }
        self.renew = Some(format!("a batch's outcome stayed unknown ({why})"));
    }

    /// The partition refused a batch and so every later one (their sequences follow it):
    /// none was appended, so they are stamped again in the renewed session.
    fn refused(&mut self, queue: &mut VecDeque<Batch>, why: String) {
        for batch in queue.iter_mut() {
            batch.sequence = None;
        }
        self.renew = Some(why);
    }

    /// Sets up or renews the session (KIP-360: the same id, the next epoch), if it must be.
    async fn ready(&mut self, client: &Client, partition: &Partition, deadline: Instant) -> Result<(), ClientError> {
        if self.sequencer.is_some() && self.renew.is_none() {
            return Ok(());
        }
        let current = self.sequencer.filter(|_| self.renew.is_some()).map(|s| s.session);
        let config = &client.config;
        let session =
            init_producer_id(&client.nodes, config.request_timeout, current, deadline, config.timeout).await?;
        if let Some(why) = self.renew.take() {
            let (topic, partition) = (partition.0.clone(), partition.1);
            client.nodes.notices().say(Notice::ProducerSessionRenewed { topic, partition, why });
        }
        self.sequencer = Some(Sequencer::new(session));
        Ok(())
    }
}

/// Sends a partition's batches in order on one stream at a time, resending refused ones in
/// order (and, with idempotence, ones whose outcome is unknown, as the same batches).
async fn drive(client: Client, config: ProducerConfig, partition: Partition, mut batches: mpsc::Receiver<Batch>) {
    let mut queue: VecDeque<Batch> = VecDeque::new();
    let mut idempotent = config.idempotence.then_some(Idempotent { sequencer: None, renew: None });
    let mut open = true;
    let mut backoff = BACKOFF_MIN;
    // Why the last session or search ended: what a batch that then gives up reports.
    let mut why = String::from("not sent yet");
    loop {
        // A batch past its deadline before it could be sent was not appended; one that may
        // have been sent before (stamped) has an unknown outcome.
        let now = Instant::now();
        while queue.front().is_some_and(|b| b.give_up <= now) {
            let late = queue.pop_front().expect("non-empty");
            if late.sequence.is_some() {
                let idempotent = idempotent.as_mut().expect("only idempotent batches are stamped");
                late.resolve(Err(ClientError::OutcomeUnknown(why.clone())));
                idempotent.lost(&mut queue, &why);
            } else {
                late.resolve(Err(ClientError::TimedOut { after: client.config.timeout, last: why.clone() }));
            }
        }
        if !open && queue.is_empty() {
            return;
        }
        if queue.is_empty() {
            match batches.recv().await {
                Some(batch) => queue.push_back(batch),
                None => return,
            }
        }
        let give_up = queue.front().expect("non-empty").give_up;
        let ready = match &mut idempotent {
            Some(idempotent) => idempotent.ready(&client, &partition, give_up).await,
            None => Ok(()),
        };
        let target = match ready {
            Ok(()) => match client.nodes.leader(&partition) {
                Some(addr) => Ok(addr),
                None => client.nodes.find_leader(&partition, give_up).await,
            },
            Err(e) => Err(e),
        };
        let ended = match target {
            Ok(target) => match client.nodes.open_stream(&partition, target).await {
                Ok((conn, send, recv)) => {
                    let streams = Session { partition: &partition, target, conn, send, recv };
                    let mut state = SessionState { queue: &mut queue, batches: &mut batches, open: &mut open };
                    session(&client, &config, streams, &mut state, idempotent.as_mut()).await
                }
                Err(Failure::Certificate(e)) => {
                    fail_all(&mut queue, e.into());
                    Ended::Retry { pause: Duration::ZERO, why: "a certificate was refused".into() }
                }
                Err(failure) => {
                    client.nodes.forget_leader(&partition, target);
                    Ended::Retry { pause: backoff, why: failure.message() }
                }
            },
            Err(ClientError::TimedOut { last, .. }) => Ended::Retry { pause: Duration::ZERO, why: last },
            Err(e) => {
                // A certificate refused, or no bootstrap address resolves: no retry can help.
                fail_all(&mut queue, e);
                Ended::Retry { pause: Duration::ZERO, why: "failed".into() }
            }
        };
        match ended {
            Ended::Done => return,
            Ended::Retry { pause, why: ended_why } => {
                why = ended_why;
                if pause.is_zero() {
                    backoff = BACKOFF_MIN;
                } else {
                    // Not past the deadline of the oldest batch: it is failed at the top.
                    let wake = queue.front().map_or(now, |b| b.give_up).min(Instant::now() + pause.max(backoff));
                    tokio::time::sleep_until(wake).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}

fn fail_all(queue: &mut VecDeque<Batch>, error: ClientError) {
    for batch in queue.drain(..) {
        batch.resolve(Err(error.clone()));
    }
}

/// A stream open to the node believed to lead a partition, and its connection.
struct Session<'a> {
    partition: &'a Partition,
    target: SocketAddr,
    conn: Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
}

/// What a session shares with its pipeline: the batches to send, in order, and the channel
/// more come on.
struct SessionState<'a> {
    queue: &'a mut VecDeque<Batch>,
    batches: &'a mut mpsc::Receiver<Batch>,
    open: &'a mut bool,
}

/// One ordered stream to the leader: keeps up to `in_flight` batches on it and takes the
/// answers in order. Batches to resend go back to the front of `queue`, in order.
async fn session(
    client: &Client,
    config: &ProducerConfig,
    Session { partition, target, conn, mut send, recv }: Session<'_>,
    SessionState { queue, batches, open }: &mut SessionState<'_>,
    mut idempotent: Option<&mut Idempotent>,
) -> Ended {
    let (answers_tx, mut answers) = mpsc::channel(config.in_flight.max(1) + 1);
    let reader = tokio::spawn(read_answers(recv, answers_tx));
    let mut inflight: VecDeque<Batch> = VecDeque::new();
    // When to ask the other nodes whether the leader moved, if no answer came by then.
    let mut check = Instant::now() + LEADER_CHECK_AFTER;
    let ended = 'session: loop {
        let window = idempotent.as_ref().map_or(config.in_flight.max(1), |i| i.in_flight_max(config.in_flight.max(1)));
        while inflight.len() < window
            && let Some(mut batch) = queue.pop_front()
        {
            if batch.give_up <= Instant::now() {
                if batch.sequence.is_some() {
                    // It may have been sent on an earlier session: the pipeline reports it.
                    queue.push_front(batch);
                    client.nodes.abandon(target);
                    requeue_rest(queue, &mut inflight);
                    break 'session Ended::Retry { pause: Duration::ZERO, why: "not settled in time".into() };
                }
                let why = "not sent in time: the batches before it were still unanswered".to_string();
                batch.resolve(Err(ClientError::TimedOut { after: client.config.timeout, last: why }));
                continue;
            }
            if inflight.is_empty() {
                check = Instant::now() + LEADER_CHECK_AFTER;
            }
            if let Some(idempotent) = idempotent.as_deref_mut() {
                idempotent.stamp(&mut batch);
            }
            if write_frame(&mut send, &mut batch.request.encode()).await.is_err() {
                // The answers (or the broken stream) tell what became of those before it.
                queue.push_front(batch);
                break;
            }
            inflight.push_back(batch);
        }
        if inflight.is_empty() && queue.is_empty() && !**open {
            break Ended::Done;
        }
        let room = inflight.len() < window && queue.is_empty() && **open;
        // The oldest batch in flight gives up at its deadline, answered or not.
        let give_up = inflight.front().map(|b| b.give_up);
        tokio::select! {
            answer = answers.recv() => {
                check = Instant::now() + LEADER_CHECK_AFTER;
                let Some(batch) = inflight.pop_front() else {
                    break Ended::Retry { pause: Duration::ZERO, why: "an answer nobody asked for".into() };
                };
                match answer {
                    Some(Ok(Response::Produced { base_offset, .. })) => {
                        client.nodes.set_leader(partition, Some(target));
                        client.nodes.notices().produce_accepted();
                        if let Some(sequencer) = idempotent.as_deref_mut().and_then(|i| i.sequencer.as_mut()) {
                            sequencer.confirmed();
                        }
                        batch.resolve(Ok(base_offset));
                    }
                    Some(Ok(Response::Error(e @ ErrorReply::OutcomeUnknown { .. }))) if idempotent.is_some() => {
                        // Resent as it is: the leader answers a duplicate with its offsets.
                        client.nodes.set_leader(partition, None);
                        requeue(queue, batch, &mut inflight);
                        break Ended::Retry { pause: BACKOFF_MIN, why: e.to_string() };
                    }
                    Some(Ok(Response::Error(e @ ErrorReply::OutcomeUnknown { .. }))) => batch.resolve(Err(e.into())),
                    Some(Ok(Response::Error(ErrorReply::NotLeader { leader, address }))) => {
                        let next = address.as_deref().and_then(|a| resolve(a).ok()).filter(|a| *a != target);
                        client.nodes.set_leader(partition, next);
                        requeue(queue, batch, &mut inflight);
                        let pause = if next.is_some() { Duration::ZERO } else { BACKOFF_MIN };
                        break Ended::Retry { pause, why: format!("{target} is not the leader (leader: {leader:?})") };
                    }
                    Some(Ok(Response::Error(e @ ErrorReply::DiskFull { .. }))) => {
                        requeue(queue, batch, &mut inflight);
                        client.nodes.notices().produce_refused(&e);
                        break Ended::Retry { pause: BACKOFF_MIN, why: e.to_string() };
                    }
                    Some(Ok(Response::Error(ErrorReply::Busy(why)))) => {
                        requeue(queue, batch, &mut inflight);
                        break Ended::Retry { pause: BACKOFF_MIN, why: format!("{target} is busy: {why}") };
                    }
                    Some(Ok(Response::Error(e @ ErrorReply::Producer(_))))
                        if let Some(i) = idempotent.as_deref_mut() =>
                    {
                        // Out of sequence or fenced: not appended, nor anything after it.
                        requeue(queue, batch, &mut inflight);
                        i.refused(queue, e.to_string());
                        break Ended::Retry { pause: Duration::ZERO, why: e.to_string() };
                    }
                    Some(Ok(Response::Error(e))) => {
                        // Refused for good (too large, malformed): the later ones go again.
                        batch.resolve(Err(e.into()));
                        requeue_rest(queue, &mut inflight);
                        if let Some(i) = idempotent.as_deref_mut() {
                            i.refused(queue, "a batch was refused, so the next would leave a gap".into());
                        }
                        break Ended::Retry { pause: Duration::ZERO, why: "an earlier batch was refused".into() };
                    }
                    Some(Ok(other)) => {
                        batch.resolve(Err(ClientError::OutcomeUnknown(format!("unexpected answer: {other:?}"))));
                        unknown(&mut inflight, "the session broke");
                        if let Some(i) = idempotent.as_deref_mut() {
                            i.lost(queue, "the session broke");
                        }
                        break Ended::Retry { pause: BACKOFF_MIN, why: "unexpected answer".into() };
                    }
                    broke => {
                        let why = match broke {
                            Some(Err(why)) => why,
                            _ => format!("{target} closed the stream"),
                        };
                        client.nodes.set_leader(partition, None);
                        match client.nodes.session_broke(&conn, why) {
                            Failure::Certificate(e) => {
                                // Refused at the handshake: nothing reached the node.
                                inflight.push_front(batch);
                                fail_all(&mut inflight, e.clone().into());
                                fail_all(queue, e.into());
                                break Ended::Retry { pause: Duration::ZERO, why: "a certificate was refused".into() };
                            }
                            failure if idempotent.is_some() => {
                                requeue(queue, batch, &mut inflight);
                                break Ended::Retry { pause: BACKOFF_MIN, why: failure.message() };
                            }
                            failure => {
                                let why = failure.message();
                                batch.resolve(Err(ClientError::OutcomeUnknown(why.clone())));
                                unknown(&mut inflight, &why);
                                break Ended::Retry { pause: BACKOFF_MIN, why };
                            }
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(check), if !inflight.is_empty() => {
                match client.nodes.leader_check(partition, target).await {
                    Some(leader) => {
                        client.nodes.leave(partition, target, leader);
                        let why = format!("{target} did not answer; another node names {leader} the leader");
                        if idempotent.is_some() {
                            requeue_rest(queue, &mut inflight);
                        } else {
                            unknown(&mut inflight, &why);
                        }
                        break Ended::Retry { pause: Duration::ZERO, why };
                    }
                    None => check = Instant::now() + LEADER_CHECK_AFTER,
                }
            }
            _ = tokio::time::sleep_until(give_up.unwrap_or(check)), if give_up.is_some() => {
                // Closing the connection drops what it still carries, so that nothing sent on
                // it is appended behind what a later session sends.
                client.nodes.abandon(target);
                let why = format!("{target} did not answer within {:?}", client.config.timeout);
                unknown(&mut inflight, &why);
                if let Some(i) = idempotent.as_deref_mut() {
                    i.lost(queue, &why);
                }
                break Ended::Retry { pause: Duration::ZERO, why };
            }
            more = batches.recv(), if room => match more {
                Some(batch) => queue.push_back(batch),
                None => **open = false,
            },
        }
    };
    reader.abort();
    let _ = send.finish();
    ended
}

/// Puts `batch` and every later batch in flight back at the front of `queue`, in order.
fn requeue(queue: &mut VecDeque<Batch>, batch: Batch, inflight: &mut VecDeque<Batch>) {
    requeue_rest(queue, inflight);
    queue.push_front(batch);
}

fn requeue_rest(queue: &mut VecDeque<Batch>, inflight: &mut VecDeque<Batch>) {
    while let Some(b) = inflight.pop_back() {
        queue.push_front(b);
    }
}

/// Batches in flight on a broken session: they may or may not have been appended.
fn unknown(inflight: &mut VecDeque<Batch>, why: &str) {
    for batch in inflight.drain(..) {
        batch.resolve(Err(ClientError::OutcomeUnknown(why.to_string())));
    }
}

/// Reads a session's answers in order until the stream ends or breaks.
async fn read_answers(mut recv: quinn::RecvStream, answers: mpsc::Sender<Result<Response, String>>) {
    loop {
        let answer = match read_frame(&mut recv, RESPONSE_BYTES_MAX).await {
            Ok(Some(frame)) => Response::decode(frame, ENTRY_BYTES_MAX).map_err(|e| format!("bad answer: {e}")),
            Ok(None) => return,
            Err(e) => Err(e.to_string()),
        };
        let stop = answer.is_err();
        if answers.send(answer).await.is_err() || stop {
            return;
        }
    }
}
