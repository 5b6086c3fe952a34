//! Serves client connections (`keel-client/2`): requests on bidirectional streams, answered
//! in order per stream (a producer keeps one stream per partition and pipelines its
//! batches on it). A thin front end over the broker service (`broker/`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::debug;

use super::group::Event;
use super::status::{GroupStatus, role_name};
use crate::broker::groups::Coordinators;
use crate::broker::moves::MovePhase;
use crate::broker::{Broker, BrokerError, PendingProduce};
use crate::groups::GroupError;
use crate::kafka::backend::GroupCall;
use crate::metrics as m;
use crate::net::Connection;
use crate::net::client_codec::{BrokerView, ClusterMetadata, PartitionView, TopicView};
use crate::net::client_codec::{ClusterView, ErrorReply, MemberView, REQUEST_BYTES_MAX_DEFAULT, Request, Response};
use crate::net::endpoint::{read_frame_budgeted, write_frame};
use crate::producers::ProducerBatch;

/// Application close codes on client connections.
pub const CLOSE_BAD_FRAME: u32 = 0x21;
pub const CLOSE_TOO_MANY_CONNECTIONS: u32 = 0x22;
/// Partitions whose groups a stream tells of its end (a producer's stream serves one).
const PARTITIONS_PER_STREAM_MAX: usize = 64;

pub struct ClientService {
    pub broker: Arc<Broker>,
    /// The consumer group coordinators of this node, for `Request::Group`.
    pub groups: Arc<Coordinators>,
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
    /// order as the batches commit. After a refused batch that is not idempotent, later such
    /// batches of the stream are refused too (here and in the loop), so a producer that
    /// resends from the refused one keeps its records in order. An idempotent batch needs no
    /// such rule: after a refused one, the next breaks its producer's sequence and is refused
    /// by the leader's producer check (`producers/`).
    async fn serve_stream(
        self: Arc<Self>,
        conn: Connection,
        stream: u64,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
        budget: Arc<Semaphore>,
    ) {
        let refused = Arc::new(AtomicBool::new(false));
        // The partitions this stream produced to: their groups forget the stream at its end.
        let mut produced_to: BTreeSet<(String, u32)> = BTreeSet::new();
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
            // Whether a refusal of this request refuses the stream's later batches.
            let is_produce = matches!(&request, Request::Produce { batch, .. } if !is_idempotent(batch));
            let mut request = request;
            if let Request::Group(GroupCall::Join(join)) = &mut request {
                // DescribeGroups shows where a member connects from, as the node saw it.
                join.client_host = format!("/{}", conn.remote_address().ip());
            }
            match request {
                Request::Produce { topic, partition, batch } => {
                    let pending = if is_produce && refused.load(Ordering::Relaxed) {
                        m::produce_error("busy");
                        let why = "an earlier batch on this stream was refused; resend from it".to_string();
                        Err(Response::Error(ErrorReply::Busy(why)))
                    } else {
                        if produced_to.len() < PARTITIONS_PER_STREAM_MAX {
                            produced_to.insert((topic.clone(), partition));
                        }
                        self.start_produce(&topic, partition, batch, stream).await
                    };
                    match pending {
                        Ok(reply) => {
                            let this = self.clone();
                            tokio::spawn(async move {
                                let response = this.finish_produce(&topic, partition, reply).await;
                                drop(permit);
                                let _ = answer_tx.send(response);
                            });
                        }
                        Err(response) => {
                            refused.fetch_or(is_produce, Ordering::Relaxed);
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
        for (topic, partition) in produced_to {
            if let Ok(group) = self.broker.replica(&topic, partition) {
                let _ = group.events.send(Event::StreamEnded(stream)).await;
            }
        }
    }

    async fn handle(&self, request: Request) -> Response {
        // A partition this node's metadata does not know yet may be one the metadata leader
        // has just reported created: learn what it has before answering "unknown".
        let named = match &request {
            Request::Produce { topic, partition, .. }
            | Request::Fetch { topic, partition, .. }
            | Request::Offsets { topic, partition }
            | Request::PartitionStatus { topic, partition } => Some((topic, *partition)),
            _ => None,
        };
        if let Some((topic, partition)) = named
            && self.broker.metadata_ready()
            && self.broker.state().partitions(topic).is_none_or(|ps| ps.len() as u64 <= u64::from(partition))
        {
            self.broker.catch_up_metadata().await;
        }
        let result = match request {
            Request::Produce { topic, partition, batch } => match self.start_produce(&topic, partition, batch, 0).await
            {
                Ok(reply) => return self.finish_produce(&topic, partition, reply).await,
                Err(response) => return response,
            },
            Request::Fetch { topic, partition, offset, max_bytes, max_wait_ms } => {
                let wait = Duration::from_millis(u64::from(max_wait_ms));
                self.broker.fetch(&topic, partition, offset, max_bytes as usize, wait).await.map(|f| {
                    m::fetched(&topic, f.entries.iter().map(segments::Entry::encoded_len).sum());
                    Response::Fetched {
                        log_start_offset: f.log_start_offset,
                        high_watermark: f.high_watermark,
                        entries: f.entries,
                    }
                })
            }
            // Until the metadata is set up, "no such topic" would be a guess: the client asks again.
            Request::Metadata { .. } if !self.broker.metadata_ready() => Err(BrokerError::starting()),
            Request::Metadata { topics } => {
                if topics.iter().flatten().any(|name| self.broker.state().topic(name).is_none()) {
                    self.broker.catch_up_metadata().await;
                }
                Ok(Response::Metadata(self.metadata(topics.as_deref())))
            }
            Request::Status => self.status().await,
            Request::Disk => Ok(Response::Disk(self.broker.free_space.view())),
            Request::CreateTopic { name, partitions, replicas, configs, auto } => {
                if auto && !self.broker.state().settings().auto_create_topics {
                    return Response::Error(ErrorReply::UnknownTopic(name));
                }
                match self.broker.create_topic(&name, partitions, replicas, &configs).await {
                    Ok(()) => Ok(Response::TopicCreated(
                        self.metadata(Some(std::slice::from_ref(&name))).topics.pop().unwrap_or_default(),
                    )),
                    Err(e) => Err(e),
                }
            }
            Request::DeleteTopic { name } => self.broker.delete_topic(&name).await.map(|()| Response::TopicDeleted),
            Request::RegisterBroker { node, address, kafka_address } => {
                self.broker.register_broker(node, address, kafka_address).await.map(|()| Response::BrokerRegistered)
            }
            Request::AllocateProducerIds { node, count } => self
                .broker
                .allocate_producer_ids(node, count)
                .await
                .map(|(first, count)| Response::ProducerIds { first, count }),
            Request::InitProducerId { producer_id, epoch } => self
                .broker
                .init_producer_id((producer_id, epoch))
                .await
                .map(|(producer_id, epoch)| Response::ProducerSession { producer_id, epoch }),
            Request::TransferLeader { topic, partition, to } => {
                self.broker.transfer_leader(&topic, partition, to).await.map(|()| Response::LeaderTransferring)
            }
            Request::BalanceLeaders => self.broker.balance_leaders().await.map(Response::LeadersBalanced),
            Request::MovePartition { topic, partition, target } => {
                self.broker.start_move(&topic, partition, target).await.map(|()| Response::MoveStarted)
            }
            Request::AbortMove { topic, partition } => {
                self.broker.abort_move(&topic, partition).await.map(|()| Response::MoveAborted)
            }
            Request::MoveStatus { topic, partition } => {
                self.broker.move_phase(&topic, partition).await.map(|phase| match phase {
                    Some(MovePhase::CatchingUp { behind }) => {
                        Response::MoveStatus { phase: MovePhase::CatchingUp { behind: vec![] }.name().into(), behind }
                    }
                    Some(phase) => Response::MoveStatus { phase: phase.name().into(), behind: vec![] },
                    None => Response::MoveStatus { phase: String::new(), behind: vec![] },
                })
            }
            Request::FinishMove { group, replicas } => {
                self.broker.finish_move(group, replicas).await.map(|()| Response::MoveFinished)
            }
            Request::AddNode { node, address, kafka_address, voter } => {
                self.broker.add_node(node, address, kafka_address, voter).await.map(|()| Response::BrokerRegistered)
            }
            Request::Decommission { node } => {
                self.broker.decommission(node).await.map(|moves| Response::Decommissioning { moves })
            }
            Request::PartitionStatus { topic, partition } => match self.broker.replica(&topic, partition) {
                Ok(group) => match group.status().await {
                    Some(status) => Ok(Response::Status(self.view(status))),
                    None => Err(BrokerError::Busy("the replica is stopping".into())),
                },
                Err(e) => Err(e),
            },
            Request::Group(call) => return self.group_call(call).await,
            Request::ListGroups => {
                return match self.groups.list().await {
                    Ok(groups) => Response::Groups(groups),
                    Err(e) => Response::Error(ErrorReply::Busy(e.to_string())),
                };
            }
            Request::Offsets { topic, partition } => self.broker.replica(&topic, partition).map(|group| {
                let committed = group.committed();
                Response::Offsets {
                    log_start_offset: group.log.read().start_offset(),
                    log_end_offset: committed.next_offset,
                }
            }),
        };
        result.unwrap_or_else(|e| Response::Error(error_reply(e)))
    }

    /// Serves a group call on this node's coordinator of the group; a node that is not the
    /// coordinator names the one that is, as for a partition's leader.
    async fn group_call(&self, call: GroupCall) -> Response {
        let group_id = call.group_id().to_string();
        let error = match self.groups.call(call).await {
            Ok(answer) => return Response::Group(answer),
            Err(e) => e,
        };
        Response::Error(match error {
            GroupError::NotCoordinator => match self.groups.coordinator(&group_id) {
                Ok(node) if node != self.broker.node_id => {
                    ErrorReply::NotLeader { leader: Some(node), address: self.broker.address_of(node) }
                }
                Ok(_) => ErrorReply::Busy("this node is starting to coordinate the group".into()),
                Err(e) => ErrorReply::Busy(e.to_string()),
            },
            e @ (GroupError::CoordinatorLoadInProgress | GroupError::CoordinatorNotAvailable { .. }) => {
                ErrorReply::Busy(e.to_string())
            }
            e => ErrorReply::Group(e),
        })
    }

    /// Checks a batch and hands it to its partition's group; the receiver answers once it commits.
    async fn start_produce(
        &self,
        topic: &str,
        partition: u32,
        batch: Bytes,
        stream: u64,
    ) -> Result<PendingProduce, Response> {
        crate::broker::check_client_produce(topic).map_err(|e| Response::Error(error_reply(e)))?;
        self.broker.produce(topic, partition, batch, stream).await.map_err(|e| Response::Error(error_reply(e)))
    }

    /// The answer to a produce once its group replied.
    async fn finish_produce(&self, topic: &str, partition: u32, placed: PendingProduce) -> Response {
        match self.broker.produced(topic, partition, placed).await {
            Ok((base_offset, record_count)) => Response::Produced { base_offset, record_count },
            Err(e) => Response::Error(error_reply(e)),
        }
    }

    /// The brokers and the topics asked for (`None`: every topic, internal ones flagged).
    fn metadata(&self, topics: Option<&[String]>) -> ClusterMetadata {
        let state = self.broker.state();
        let brokers = state
            .brokers()
            .map(|b| BrokerView {
                id: b.id.get(),
                address: b.address.clone(),
                kafka_address: b.kafka_address.clone(),
                state: b.state.name().into(),
            })
            .collect();
        let wanted: Vec<&crate::metadata::Topic> = match topics {
            Some(names) => names.iter().filter_map(|n| state.topic(n)).collect(),
            None => state.topics().collect(),
        };
        let topics = wanted
            .into_iter()
            .map(|t| TopicView {
                name: t.name.clone(),
                internal: t.internal,
                partitions: t.partitions.iter().enumerate().map(|(i, p)| self.partition_view(i as u32, p)).collect(),
                config: state.effective_config(&t.name).map(|c| config_text(&c)).unwrap_or_default(),
            })
            .collect();
        let controller = self.broker.metadata_group().and_then(|g| g.leader().leader);
        ClusterMetadata {
            cluster_id: self.broker.cluster_id,
            node_id: self.broker.node_id,
            controller,
            brokers,
            topics,
        }
    }

    fn partition_view(&self, partition: u32, p: &crate::metadata::Partition) -> PartitionView {
        let group = p.group.get();
        let report = self.broker.leaders.get(group);
        let offsets = report.as_ref().and_then(|r| r.offsets.clone());
        PartitionView {
            partition,
            group,
            leader: report.as_ref().and_then(|r| r.leader),
            leader_term: report.as_ref().map_or(0, |r| r.term),
            replicas: p.replicas.iter().map(|n| n.get()).collect(),
            in_sync: offsets.as_ref().map(|o| o.in_sync.clone()).unwrap_or_default(),
            log_start_offset: offsets.as_ref().map(|o| o.log_start_offset),
            log_end_offset: offsets.as_ref().map(|o| o.high_watermark),
            target: p.target.iter().flatten().map(|n| n.get()).collect(),
        }
    }

    /// This node's view of the metadata group, with the cluster's topic counts. A cluster
    /// whose first leader has not set up its metadata yet (the topic `default` is the last
    /// step) answers as starting, so that a script waiting for a leader can then use it.
    async fn status(&self) -> Result<Response, BrokerError> {
        if !self.broker.metadata_ready() {
            return Err(BrokerError::starting());
        }
        let group = self.broker.metadata_group().ok_or_else(|| BrokerError::Busy("the node is starting".into()))?;
        let status = group.status().await.ok_or_else(|| BrokerError::Busy("the node is shutting down".into()))?;
        let mut view = self.view(status);
        let state = self.broker.state();
        view.topics = state.topics().count() as u32;
        view.under_replicated_partitions = state
            .topics()
            .flat_map(|t| &t.partitions)
            .filter(|p| {
                let in_sync = self.broker.leaders.get(p.group.get()).and_then(|r| r.offsets).map(|o| o.in_sync);
                in_sync.is_some_and(|in_sync| p.replicas.iter().any(|r| !in_sync.contains(&r.get())))
            })
            .count() as u32;
        Ok(Response::Status(view))
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
            topics: 0,
            under_replicated_partitions: 0,
        }
    }
}

/// A topic's settings in force, by Kafka's names.
fn config_text(c: &crate::metadata::EffectiveConfig) -> Vec<(String, String)> {
    let signed = |v: Option<u64>| v.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX)).to_string();
    vec![
        ("cleanup.policy".into(), c.cleanup_policy.name().into()),
        ("max.message.bytes".into(), c.max_message_bytes.to_string()),
        ("retention.bytes".into(), signed(c.retention_bytes)),
        ("retention.ms".into(), signed(c.retention_ms)),
        ("segment.bytes".into(), c.segment_bytes.to_string()),
    ]
}

/// The wire form of a broker error.
fn error_reply(e: BrokerError) -> ErrorReply {
    match e {
        BrokerError::NotLeader { leader, address, .. } => ErrorReply::NotLeader { leader, address },
        BrokerError::UnknownTopic(topic) => ErrorReply::UnknownTopic(topic),
        BrokerError::UnknownPartition { topic, partition, count } => {
            ErrorReply::UnknownPartition { topic, partition, count }
        }
        BrokerError::TopicExists(topic) => ErrorReply::TopicExists(topic),
        BrokerError::Invalid(why) => ErrorReply::Invalid(why),
        BrokerError::Batch(e) => ErrorReply::Invalid(e.to_string()),
        BrokerError::OffsetOutOfRange { requested, start, end } => {
            ErrorReply::OffsetOutOfRange { requested, start, end }
        }
        BrokerError::Busy(why) => ErrorReply::Busy(why),
        BrokerError::DiskFull { node, free_bytes, reserve_bytes } => {
            ErrorReply::DiskFull { node, free_bytes, reserve_bytes }
        }
        BrokerError::Refused(why) => ErrorReply::Refused(why),
        BrokerError::OutcomeUnknown(reason) => ErrorReply::OutcomeUnknown { reason },
        BrokerError::Producer(e) => ErrorReply::Producer(e),
        BrokerError::Internal(why) => ErrorReply::Internal(why),
    }
}

/// Whether `batch` is an idempotent producer's (its header names a producer id).
fn is_idempotent(batch: &Bytes) -> bool {
    crate::batch::BatchHeader::parse(batch).is_ok_and(|h| ProducerBatch::from_header(&h).is_idempotent())
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
