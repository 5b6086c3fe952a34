//! Serves client connections (`keel-client/1`): requests on bidirectional streams, answered
//! in order per stream (a producer keeps one stream and pipelines its batches on it). A thin
//! front end over the broker service (`broker/`): this version's protocol addresses the one
//! partition of topic `default`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::debug;

use super::group::Event;
use super::produce::ProduceResult;
use super::status::{GroupStatus, role_name};
use crate::broker::{Broker, BrokerError};
use crate::metrics as m;
use crate::net::Connection;
use crate::net::client_codec::{ClusterView, ErrorReply, MemberView, REQUEST_BYTES_MAX_DEFAULT, Request, Response};
use crate::net::endpoint::{read_frame_budgeted, write_frame};
use crate::record;

/// Application close codes on client connections.
pub const CLOSE_BAD_FRAME: u32 = 0x21;
pub const CLOSE_TOO_MANY_CONNECTIONS: u32 = 0x22;
/// The topic every cluster has from its first start; `keel-client/1` reads and writes its
/// one partition.
pub const DEFAULT_TOPIC: &str = "default";

pub struct ClientService {
    pub broker: Arc<Broker>,
    pub connections: Arc<Semaphore>,
    /// Numbers client streams, so the groups can tell their batches apart (0 is "none").
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
        let budget = Arc::new(Semaphore::new(self.broker.limits.connection_bytes_max));
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
        let max = (self.broker.limits.batch_bytes_max + 64).max(REQUEST_BYTES_MAX_DEFAULT);
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
                            let this = self.clone();
                            tokio::spawn(async move {
                                let response = this.finish_produce(reply).await;
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
        if let Ok(group) = self.broker.replica(DEFAULT_TOPIC, 0) {
            let _ = group.events.send(Event::StreamEnded(stream)).await;
        }
    }

    async fn handle(&self, request: Request) -> Response {
        match request {
            Request::Produce { record_count, records } => match self.start_produce(record_count, records, 0).await {
                Ok(reply) => self.finish_produce(reply).await,
                Err(response) => response,
            },
            Request::Fetch { offset, max_bytes, max_wait_ms } => {
                let wait = Duration::from_millis(u64::from(max_wait_ms));
                match self.broker.fetch(DEFAULT_TOPIC, 0, offset, max_bytes as usize, wait).await {
                    Ok(f) => Response::Fetched {
                        log_start_offset: f.log_start_offset,
                        high_watermark: f.high_watermark,
                        entries: f.entries,
                    },
                    Err(e) => Response::Error(error_reply(e)),
                }
            }
            Request::Metadata => self.metadata().await,
            Request::Disk => Response::Disk(self.broker.free_space.view()),
        }
    }

    /// Checks a batch and hands it to its partition's group; the receiver answers once it commits.
    async fn start_produce(
        &self,
        record_count: u32,
        records: Bytes,
        stream: u64,
    ) -> Result<oneshot::Receiver<ProduceResult>, Response> {
        let limits = &self.broker.limits;
        let refuse = |kind: &'static str, err: ErrorReply| {
            metrics::counter!(m::PRODUCE_REQUESTS).increment(1);
            m::produce_error(kind);
            Response::Error(err)
        };
        if records.len() > limits.batch_bytes_max {
            let msg = format!(
                "batch of {} bytes exceeds the limit of {} bytes (batch_bytes_max)",
                records.len(),
                limits.batch_bytes_max
            );
            return Err(refuse("too_large", ErrorReply::Refused(msg)));
        }
        if let Err(e) = record::validate(&records, record_count, limits.record_bytes_max) {
            let kind = if matches!(e, record::BatchError::RecordTooLarge { .. }) { "too_large" } else { "malformed" };
            return Err(refuse(kind, ErrorReply::Refused(e.to_string())));
        }
        let payload = record::batch_payload(now_ms(), &records).freeze();
        self.broker
            .produce(DEFAULT_TOPIC, 0, payload, record_count, stream)
            .await
            .map_err(|e| Response::Error(error_reply(e)))
    }

    /// The answer to a produce once its group replied.
    async fn finish_produce(&self, reply: oneshot::Receiver<ProduceResult>) -> Response {
        match self.broker.produced(DEFAULT_TOPIC, 0, reply).await {
            Ok((base_offset, record_count)) => Response::Produced { base_offset, record_count },
            Err(e) => Response::Error(error_reply(e)),
        }
    }

    /// The partition's view, from this node's replica of it.
    async fn metadata(&self) -> Response {
        let group = match self.broker.replica(DEFAULT_TOPIC, 0) {
            Ok(group) => group,
            Err(e) => return Response::Error(error_reply(e)),
        };
        match group.status().await {
            Some(status) => Response::Metadata(self.view(status)),
            None => Response::Error(ErrorReply::Busy("the node is shutting down".into())),
        }
    }

    /// The wire form of a group's status, with the members' addresses.
    fn view(&self, status: GroupStatus) -> ClusterView {
        let members = status
            .members
            .iter()
            .map(|m| MemberView {
                id: m.id,
                address: self.broker.address_of(m.id).unwrap_or_default(),
                voter: m.voter,
                match_index: m.match_index,
            })
            .collect();
        ClusterView {
            cluster_id: self.broker.cluster_id,
            node_id: status.node_id,
            role: role_name(status.role).into(),
            leader: status.leader,
            term: status.term,
            commit_index: status.commit_index,
            last_index: status.last_index,
            log_start_offset: status.log_start_offset,
            log_end_offset: status.log_end_offset,
            members,
        }
    }
}

/// The wire form of a broker error. The topic `default` is made by the cluster's first
/// metadata leader: until then its absence only means "starting".
fn error_reply(e: BrokerError) -> ErrorReply {
    match e {
        BrokerError::NotLeader { leader, address, .. } => ErrorReply::NotLeader { leader, address },
        BrokerError::UnknownTopic(_) | BrokerError::UnknownPartition { .. } => {
            ErrorReply::Busy("the cluster is starting: topic default is not there yet".into())
        }
        BrokerError::OffsetOutOfRange { requested, start, end } => {
            ErrorReply::OffsetOutOfRange { requested, start, end }
        }
        BrokerError::Busy(why) => ErrorReply::Busy(why),
        BrokerError::DiskFull { node, free_bytes, reserve_bytes } => {
            ErrorReply::DiskFull { node, free_bytes, reserve_bytes }
        }
        BrokerError::Refused(why) => ErrorReply::Refused(why),
        BrokerError::OutcomeUnknown(reason) => ErrorReply::OutcomeUnknown { reason },
        BrokerError::Internal(why) => ErrorReply::Internal(why),
    }
}

/// Closes a connection that sent a frame the protocol does not allow; the node goes on.
fn reject(conn: &Connection, why: &str) {
    metrics::counter!(m::FRAMES_REJECTED, "protocol" => "client").increment(1);
    debug!(addr = %conn.remote_address(), why, "closing client connection after a bad frame");
    let reason = format!("bad frame: {why}");
    conn.close(CLOSE_BAD_FRAME.into(), reason.as_bytes());
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
