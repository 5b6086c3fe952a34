//! Serves client connections (`keel-client/1`): requests on bidirectional streams, answered
//! in order per stream (a producer keeps one stream and pipelines its batches on it).
//! Produce goes to the group loop and waits for the commit; fetch and metadata are read
//! here, from the shared log and the loop's published state, so reads scale with nodes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use segments::{Entry, Log};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tracing::{debug, warn};

use super::config::Limits;
use super::disk::FreeSpace;
use super::group::{Committed, Event, LeaderHint, ProduceResult};
use crate::metrics as m;
use crate::net::Connection;
use crate::net::client_codec::{ErrorReply, REQUEST_BYTES_MAX_DEFAULT, Request, Response};
use crate::net::endpoint::{read_frame_budgeted, write_frame};
use crate::record;
use crate::replica::store::is_damage;

/// Application close codes on client connections.
pub const CLOSE_BAD_FRAME: u32 = 0x21;
pub const CLOSE_TOO_MANY_CONNECTIONS: u32 = 0x22;

pub struct ClientService {
    pub events: mpsc::Sender<Event>,
    pub log: Arc<RwLock<Log>>,
    pub committed: watch::Receiver<Committed>,
    pub leader: watch::Receiver<LeaderHint>,
    pub limits: Limits,
    pub free_space: FreeSpace,
    pub connections: Arc<Semaphore>,
    /// Numbers client streams, so the loop can tell their batches apart (0 is "none").
    pub streams: AtomicU64,
}

/// Requests of one stream whose answers are pending at once.
const STREAM_PIPELINE_MAX: usize = 128;

impl ClientService {
    /// Serves one client connection until it closes.
    pub async fn serve(self: Arc<Self>, conn: Connection) {
        let Ok(_slot) = self.connections.clone().try_acquire_owned() else {
            m::handshake_failure("too_many_connections");
            conn.close(CLOSE_TOO_MANY_CONNECTIONS.into(), b"too many client connections; retry later");
            return;
        };
        let _open = m::OpenConnection::new("client");
        let budget = Arc::new(Semaphore::new(self.limits.connection_bytes_max));
        while let Ok((send, recv)) = conn.accept_bi().await {
            let stream = self.streams.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(self.clone().serve_stream(conn.clone(), stream, send, recv, budget.clone()));
        }
    }

    /// Serves the requests of one stream in order. Produce requests are pipelined: each is
    /// handed to the loop as soon as it is read, and the answers are written in request
    /// order as the batches commit. After a refused batch, later batches of the stream are
    /// refused too (here and in the loop), so a producer that resends from the refused one
    /// keeps its records in order.
    async fn serve_stream(
        self: Arc<Self>,
        conn: Connection,
        stream: u64,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
        budget: Arc<Semaphore>,
    ) {
        let refused = Arc::new(AtomicBool::new(false));
        let (answers_tx, mut answers) = mpsc::channel::<(oneshot::Receiver<Response>, bool)>(STREAM_PIPELINE_MAX);
        let writer_refused = refused.clone();
        let writer = tokio::spawn(async move {
            while let Some((answer, is_produce)) = answers.recv().await {
                let response = answer.await.unwrap_or_else(|_| {
                    Response::Error(ErrorReply::OutcomeUnknown { reason: "the node stopped".into() })
                });
                if is_produce && matches!(response, Response::Error(_)) {
                    writer_refused.store(true, Ordering::Relaxed);
                }
                if write_frame(&mut send, &mut response.encode()).await.is_err() {
                    return;
                }
            }
            let _ = send.finish();
        });
        let max = (self.limits.batch_bytes_max + 64).max(REQUEST_BYTES_MAX_DEFAULT);
        loop {
            let (frame, permit) = match read_frame_budgeted(&mut recv, max, &budget).await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    reject(&conn, &e.to_string());
                    break;
                }
            };
            let request = match Request::decode(frame) {
                Ok(r) => r,
                Err(e) => {
                    reject(&conn, &e.to_string());
                    break;
                }
            };
            let (answer_tx, answer) = oneshot::channel();
            let is_produce = matches!(request, Request::Produce { .. });
            match request {
                Request::Produce { record_count, records } => {
                    let pending = if refused.load(Ordering::Relaxed) {
                        m::produce_error("busy");
                        let why = "an earlier batch on this stream was refused; resend from it".to_string();
                        Err(Response::Error(ErrorReply::Busy(why)))
                    } else {
                        self.start_produce(record_count, records, stream).await
                    };
                    match pending {
                        Ok(reply) => {
                            tokio::spawn(async move {
                                let response = finish_produce(reply).await;
                                drop(permit);
                                let _ = answer_tx.send(response);
                            });
                        }
                        Err(response) => {
                            refused.store(true, Ordering::Relaxed);
                            let _ = answer_tx.send(response);
                        }
                    }
                }
                other => {
                    let this = self.clone();
                    tokio::spawn(async move {
                        let response = this.handle(other).await;
                        drop(permit);
                        let _ = answer_tx.send(response);
                    });
                }
            }
            if answers_tx.send((answer, is_produce)).await.is_err() {
                break;
            }
        }
        drop(answers_tx);
        let _ = writer.await;
        let _ = self.events.send(Event::StreamEnded(stream)).await;
    }

    async fn handle(&self, request: Request) -> Response {
        match request {
            Request::Produce { record_count, records } => match self.start_produce(record_count, records, 0).await {
                Ok(reply) => finish_produce(reply).await,
                Err(response) => response,
            },
            Request::Fetch { offset, max_bytes, max_wait_ms } => self.fetch(offset, max_bytes, max_wait_ms).await,
            Request::Metadata => self.metadata().await,
            Request::Disk => Response::Disk(self.free_space.view()),
        }
    }

    /// Checks a batch and hands it to the loop; the receiver answers once it commits.
    async fn start_produce(
        &self,
        record_count: u32,
        records: Bytes,
        stream: u64,
    ) -> Result<oneshot::Receiver<ProduceResult>, Response> {
        let received = Instant::now();
        metrics::counter!(m::PRODUCE_REQUESTS).increment(1);
        let refuse = |kind: &'static str, err: ErrorReply| {
            m::produce_error(kind);
            Response::Error(err)
        };
        let hint = *self.leader.borrow();
        if !hint.me {
            let address = hint.address.map(|a| a.to_string());
            return Err(refuse("not_leader", ErrorReply::NotLeader { leader: hint.leader, address }));
        }
        let limit = self.limits.batch_bytes_max;
        if records.len() > limit {
            let msg = format!("batch of {} bytes exceeds the limit of {limit} bytes (batch_bytes_max)", records.len());
            return Err(refuse("too_large", ErrorReply::Refused(msg)));
        }
        if let Err(e) = record::validate(&records, record_count, self.limits.record_bytes_max) {
            let kind = if matches!(e, record::BatchError::RecordTooLarge { .. }) { "too_large" } else { "malformed" };
            return Err(refuse(kind, ErrorReply::Refused(e.to_string())));
        }
        if let Some(disk) = self.free_space.too_low() {
            // `hint.me`: the leader the hint names is this node.
            let node = hint.leader.unwrap_or_default();
            let (free_bytes, reserve_bytes) = (disk.free_bytes, disk.reserve_bytes);
            return Err(refuse("disk_full", ErrorReply::DiskFull { node, free_bytes, reserve_bytes }));
        }
        let payload = record::batch_payload(now_ms(), &records).freeze();
        let (reply, rx) = oneshot::channel();
        let event = Event::Propose { payload, record_count, stream, received, reply };
        if self.events.send(event).await.is_err() {
            return Err(refuse("shutting_down", ErrorReply::Busy("the node is shutting down".into())));
        }
        Ok(rx)
    }

    async fn fetch(&self, offset: u64, max_bytes: u32, max_wait_ms: u32) -> Response {
        metrics::counter!(m::FETCH_REQUESTS).increment(1);
        let wait = Duration::from_millis(u64::from(max_wait_ms)).min(self.limits.fetch_wait_max);
        let deadline = tokio::time::Instant::now() + wait;
        let max_bytes = (max_bytes as usize).clamp(1, self.limits.fetch_bytes_max);
        let mut committed = self.committed.clone();
        let mut waited = false;
        loop {
            let c = *committed.borrow_and_update();
            match self.read_committed(offset, max_bytes, c) {
                Ok(Some(response)) => return response,
                Ok(None) => {}
                Err(response) => return response,
            }
            if !waited {
                waited = true;
                metrics::counter!(m::FETCH_LONG_POLLS).increment(1);
            }
            let start = self.log.read().expect("log lock").start_offset();
            let empty = Response::Fetched { log_start_offset: start, high_watermark: c.next_offset, entries: vec![] };
            match tokio::time::timeout_at(deadline, committed.changed()).await {
                Ok(Ok(())) => {}
                _ => return empty,
            }
        }
    }

    /// The entries holding `offset` and after, up to the commit; `None` when there is
    /// nothing committed at `offset` yet; `Err` with the response for a bad offset.
    fn read_committed(&self, offset: u64, max_bytes: usize, c: Committed) -> Result<Option<Response>, Response> {
        let log = self.log.read().expect("log lock");
        let start = log.start_offset();
        let out_of_range =
            || Response::Error(ErrorReply::OffsetOutOfRange { requested: offset, start, end: c.next_offset });
        if offset < start {
            return Err(out_of_range());
        }
        if offset >= c.next_offset {
            // Beyond what this node committed: wait if the log (or the cluster) may get there.
            return if offset > c.next_offset && offset > log.next_offset() { Err(out_of_range()) } else { Ok(None) };
        }
        let index = match log.locate_offset(offset) {
            Ok(Some(index)) => index,
            Ok(None) => return Ok(None),
            Err(segments::Error::OffsetBelowStart { .. }) => return Err(out_of_range()),
            Err(e) => return Err(self.read_failed(e, start_index(&log, offset))),
        };
        let mut entries: Vec<Entry> = Vec::new();
        if let Err(e) = log.read(index, max_bytes, &mut entries) {
            return Err(self.read_failed(e, index));
        }
        entries.retain(|e| e.index() <= c.index);
        if entries.is_empty() {
            return Ok(None);
        }
        let bytes: usize = entries.iter().map(Entry::encoded_len).sum();
        metrics::counter!(m::FETCH_BYTES).increment(bytes as u64);
        Ok(Some(Response::Fetched { log_start_offset: start, high_watermark: c.next_offset, entries }))
    }

    /// A failed read; corruption is reported to the loop, which repairs from `from_index` on.
    fn read_failed(&self, e: segments::Error, from_index: u64) -> Response {
        if is_damage(&e) {
            let _ = self.events.try_send(Event::Corrupt { from_index, detail: e.to_string() });
        }
        warn!(error = %e, "fetch failed");
        Response::Error(ErrorReply::Internal(format!("{e}; this node is repairing its log, read from another node")))
    }

    async fn metadata(&self) -> Response {
        let (reply, rx) = oneshot::channel();
        if self.events.send(Event::Status(reply)).await.is_err() {
            return Response::Error(ErrorReply::Busy("the node is shutting down".into()));
        }
        match rx.await {
            Ok(view) => Response::Metadata(view),
            Err(_) => Response::Error(ErrorReply::Busy("the node is shutting down".into())),
        }
    }
}

/// Where to start looking for a corrupt entry that broke an offset lookup.
fn start_index(log: &Log, _offset: u64) -> u64 {
    log.first_index()
}

/// Closes a connection that sent a frame the protocol does not allow; the node goes on.
/// The answer to a produce once the loop replied.
async fn finish_produce(reply: oneshot::Receiver<ProduceResult>) -> Response {
    match reply.await {
        Ok(Ok((base_offset, record_count))) => Response::Produced { base_offset, record_count },
        Ok(Err(e)) => Response::Error(e),
        Err(_) => Response::Error(ErrorReply::OutcomeUnknown { reason: "the node stopped".into() }),
    }
}

fn reject(conn: &Connection, why: &str) {
    metrics::counter!(m::FRAMES_REJECTED, "protocol" => "client").increment(1);
    debug!(addr = %conn.remote_address(), why, "closing client connection after a bad frame");
    let reason = format!("bad frame: {why}");
    conn.close(CLOSE_BAD_FRAME.into(), reason.as_bytes());
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
