//! Producing: one batch with retries (`produce_batch`), and a `Producer` that gathers
//! records into batches (linger and batch size, as Kafka's producer does) and keeps a
//! bounded window of batches in flight.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::conn::{ENTRY_BYTES_MAX, Failure, LEADER_CHECK_AFTER, Nodes, RESPONSE_BYTES_MAX, resolve};
use super::{Client, ClientConfig, ClientError};
use crate::net::Connection;
use crate::net::client_codec::{ErrorReply, Request, Response};
use crate::net::endpoint::{read_frame, write_frame};
use crate::record::Record;

const BACKOFF_MIN: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_millis(500);

/// Sends `records` as one batch to the leader, following redirects and retrying while the
/// failure is known to have left the log untouched, until `config.timeout`.
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
    let deadline = Instant::now() + config.timeout;
    let mut backoff = BACKOFF_MIN;
    let mut last;
    loop {
        let target = match nodes.leader() {
            Some(addr) => addr,
            None => nodes.find_leader(deadline).await?,
        };
        // A request that times out has left: its outcome is unknown.
        let timeout = config.request_timeout.min(deadline.saturating_duration_since(Instant::now()));
        let mut redirected = false;
        match nodes.request_to_leader(target, &request, timeout).await {
            Ok(Response::Produced { base_offset, .. }) => {
                nodes.set_leader(Some(target));
                nodes.notices().produce_accepted();
                return Ok(base_offset);
            }
            Ok(Response::Error(ErrorReply::NotLeader { address, leader })) => {
                let next: Option<SocketAddr> = address.as_deref().and_then(|a| resolve(a).ok());
                redirected = next.is_some() && next != Some(target);
                nodes.set_leader(next.filter(|a| *a != target));
                last = format!("node at {target} is not the leader (leader: {leader:?})");
            }
            Ok(Response::Error(e @ ErrorReply::DiskFull { .. })) => {
                last = e.to_string();
                nodes.notices().produce_refused(&e);
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
                nodes.forget_leader(target);
                last = why;
            }
            Err(Failure::Lost(why)) => {
                nodes.forget_leader(target);
                return Err(ClientError::OutcomeUnknown(why));
            }
            Err(Failure::Certificate(e)) => return Err(e.into()),
        }
        // Given up before the deadline rather than sent just before it: a request cut off
        // by the deadline would end "outcome unknown" for a batch that was never taken.
        let pause = if redirected { Duration::ZERO } else { backoff };
        if Instant::now() + pause + BACKOFF_MIN >= deadline {
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

/// Batches records and keeps a window of batches in flight on one ordered stream to the
/// leader, so records are appended in the order they were sent. When the leader refuses a
/// batch (it is not the leader, it is busy), it refuses every later batch of the stream too;
/// the producer then resends from the refused batch, in order, on a new stream. Only a batch
/// whose outcome is unknown (the connection broke while it was in flight) may leave a gap
/// or a duplicate; its records are reported as [`ClientError::OutcomeUnknown`].
pub struct Producer {
    tx: mpsc::Sender<Queued>,
    task: tokio::task::JoinHandle<()>,
}

impl Producer {
    pub(super) fn new(client: Client, config: ProducerConfig) -> Producer {
        let (tx, rx) = mpsc::channel(4096);
        let (batches_tx, batches_rx) = mpsc::channel(config.in_flight.max(1));
        tokio::spawn(gather(rx, batches_tx, config.clone(), client.config.timeout));
        let task = tokio::spawn(drive(client, config, batches_rx));
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

    /// Stops at once: every record not answered yet is dropped, its ack an error. A batch
    /// that was in flight may still be appended (its outcome is unknown).
    pub fn abort(self) {
        self.task.abort();
    }
}

/// One batch on its way: the request and who waits for each record's offset.
struct Batch {
    request: Request,
    replies: Vec<oneshot::Sender<Result<u64, ClientError>>>,
    give_up: Instant,
}

impl Batch {
    fn resolve(self, result: Result<u64, ClientError>) {
        for (i, reply) in self.replies.into_iter().enumerate() {
            let _ = reply.send(result.clone().map(|base| base + i as u64));
        }
    }
}

/// Turns records into batches: a batch closes after `linger` or at `batch_bytes`; a record
/// that would overflow a non-empty batch starts the next one.
async fn gather(
    mut rx: mpsc::Receiver<Queued>,
    batches: mpsc::Sender<Batch>,
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
        let mut bytes = first.0.encoded_len();
        let mut batch = vec![first];
        let linger = Instant::now() + config.linger;
        while bytes < config.batch_bytes {
            match tokio::time::timeout_at(linger, rx.recv()).await {
                Ok(Some(next)) if bytes + next.0.encoded_len() > config.batch_bytes => {
                    carry = Some(next);
                    break;
                }
                Ok(Some(next)) => {
                    bytes += next.0.encoded_len();
                    batch.push(next);
                }
                _ => break,
            }
        }
        let (records, replies): (Vec<Record>, Vec<_>) = batch.into_iter().unzip();
        let mut buf = BytesMut::with_capacity(bytes);
        for r in &records {
            r.encode(&mut buf);
        }
        let request = Request::Produce { record_count: records.len() as u32, records: buf.freeze() };
        let batch = Batch { request, replies, give_up: Instant::now() + timeout };
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

/// Sends batches in order on one stream at a time, resending refused ones in order.
async fn drive(client: Client, config: ProducerConfig, mut batches: mpsc::Receiver<Batch>) {
    let mut queue: VecDeque<Batch> = VecDeque::new();
    let mut open = true;
    let mut backoff = BACKOFF_MIN;
    // Why the last session or search ended: what a batch that then gives up reports.
    let mut why = String::from("not sent yet");
    loop {
        // A batch past its deadline before it could be sent was not appended.
        let now = Instant::now();
        while queue.front().is_some_and(|b| b.give_up <= now) {
            let late = queue.pop_front().expect("non-empty");
            late.resolve(Err(ClientError::TimedOut { after: client.config.timeout, last: why.clone() }));
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
        let target = match client.nodes.leader() {
            Some(addr) => Ok(addr),
            None => client.nodes.find_leader(give_up).await,
        };
        let ended = match target {
            Ok(target) => match client.nodes.open_stream(target).await {
                Ok((conn, send, recv)) => {
                    let streams = Session { target, conn, send, recv };
                    session(&client, &config, streams, &mut queue, &mut batches, &mut open).await
                }
                Err(Failure::Certificate(e)) => {
                    fail_all(&mut queue, e.into());
                    Ended::Retry { pause: Duration::ZERO, why: "a certificate was refused".into() }
                }
                Err(failure) => {
                    client.nodes.forget_leader(target);
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

/// A stream open to the node believed to lead, and its connection.
struct Session {
    target: SocketAddr,
    conn: Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
}

/// One ordered stream to the leader: keeps up to `in_flight` batches on it and takes the
/// answers in order. Batches to resend go back to the front of `queue`, in order.
async fn session(
    client: &Client,
    config: &ProducerConfig,
    Session { target, conn, mut send, recv }: Session,
    queue: &mut VecDeque<Batch>,
    batches: &mut mpsc::Receiver<Batch>,
    open: &mut bool,
) -> Ended {
    let (answers_tx, mut answers) = mpsc::channel(config.in_flight.max(1) + 1);
    let reader = tokio::spawn(read_answers(recv, answers_tx));
    let mut inflight: VecDeque<Batch> = VecDeque::new();
    // When to ask the other nodes whether the leader moved, if no answer came by then.
    let mut check = Instant::now() + LEADER_CHECK_AFTER;
    let ended = loop {
        while inflight.len() < config.in_flight.max(1)
            && let Some(batch) = queue.pop_front()
        {
            if batch.give_up <= Instant::now() {
                let why = "not sent in time: the batches before it were still unanswered".to_string();
                batch.resolve(Err(ClientError::TimedOut { after: client.config.timeout, last: why }));
                continue;
            }
            if inflight.is_empty() {
                check = Instant::now() + LEADER_CHECK_AFTER;
            }
            if write_frame(&mut send, &mut batch.request.encode()).await.is_err() {
                // The answers (or the broken stream) tell what became of those before it.
                queue.push_front(batch);
                break;
            }
            inflight.push_back(batch);
        }
        if inflight.is_empty() && queue.is_empty() && !*open {
            break Ended::Done;
        }
        let room = inflight.len() < config.in_flight.max(1) && queue.is_empty() && *open;
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
                        client.nodes.set_leader(Some(target));
                        client.nodes.notices().produce_accepted();
                        batch.resolve(Ok(base_offset));
                    }
                    Some(Ok(Response::Error(e @ ErrorReply::OutcomeUnknown { .. }))) => batch.resolve(Err(e.into())),
                    Some(Ok(Response::Error(ErrorReply::NotLeader { leader, address }))) => {
                        let next = address.as_deref().and_then(|a| resolve(a).ok()).filter(|a| *a != target);
                        client.nodes.set_leader(next);
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
                    Some(Ok(Response::Error(e))) => {
                        // Refused for good (too large, malformed): the later ones go again.
                        batch.resolve(Err(e.into()));
                        requeue_rest(queue, &mut inflight);
                        break Ended::Retry { pause: Duration::ZERO, why: "an earlier batch was refused".into() };
                    }
                    Some(Ok(other)) => {
                        batch.resolve(Err(ClientError::OutcomeUnknown(format!("unexpected answer: {other:?}"))));
                        unknown(&mut inflight, "the session broke");
                        break Ended::Retry { pause: BACKOFF_MIN, why: "unexpected answer".into() };
                    }
                    broke => {
                        let why = match broke {
                            Some(Err(why)) => why,
                            _ => format!("{target} closed the stream"),
                        };
                        client.nodes.set_leader(None);
                        match client.nodes.session_broke(&conn, why) {
                            Failure::Certificate(e) => {
                                // Refused at the handshake: nothing reached the node.
                                inflight.push_front(batch);
                                fail_all(&mut inflight, e.clone().into());
                                fail_all(queue, e.into());
                                break Ended::Retry { pause: Duration::ZERO, why: "a certificate was refused".into() };
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
                match client.nodes.leader_check(target).await {
                    Some(leader) => {
                        client.nodes.leave(target, leader);
                        let why = format!("{target} did not answer; another node names {leader} the leader");
                        unknown(&mut inflight, &why);
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
                break Ended::Retry { pause: Duration::ZERO, why };
            }
            more = batches.recv(), if room => match more {
                Some(batch) => queue.push_back(batch),
                None => *open = false,
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
