//! One Kafka connection: requests read, decoded and served while earlier ones are still
//! being served (pipelining), answers written strictly in request order.
//!
//! Two tasks per connection. The reader reads a frame (its length checked, then the bytes
//! it needs reserved against the connection's and the node's in-flight limits, then the
//! body read), starts serving it, and queues it for the writer; the writer takes answers in
//! queue order and writes them. Both bounds — bytes and requests in flight — stop the
//! reader, so a client that sends faster than it reads stops being read. Anything that
//! cannot be parsed closes the connection once the answers before it are written.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

use super::backend::KafkaBackend;
use super::config::KafkaConfig;
use super::errors::ErrorCode;
use super::frame::{self, FrameError};
use super::wire::{Answer, Request, Serving};
use super::{admin, fetch, groups, guard, metadata, offsets, produce, producer_id, versions};
use crate::metrics;

/// What every connection of a listener shares.
pub struct Shared {
    pub backend: Arc<dyn KafkaBackend>,
    pub config: KafkaConfig,
    /// Request bytes read and not yet answered, over all connections.
    pub bytes_in_flight: Arc<Semaphore>,
}

/// A request being served, in the writer's queue.
struct InFlight {
    task: AbortOnDrop<Result<Answer, FrameError>>,
    api: &'static str,
    started: Instant,
    /// Released once the answer is written.
    _bytes: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

enum Queued {
    Request(InFlight),
    /// The connection is closed once the answers queued before are written.
    Close(FrameError),
}

/// Serves one connection until the client closes it or sends what cannot be parsed.
pub async fn serve<S>(shared: Arc<Shared>, stream: S, peer: std::net::SocketAddr)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (reader, mut writer) = tokio::io::split(stream);
    let (queue, mut queued) = mpsc::channel(shared.config.connection_requests_in_flight_max);
    let _reading = AbortOnDrop(tokio::spawn(read_requests(shared, reader, queue)));
    while let Some(item) = queued.recv().await {
        let request = match item {
            Queued::Request(request) => request,
            Queued::Close(why) => {
                tracing::debug!("kafka connection from {peer} closed: {why}");
                break;
            }
        };
        let answer = match request.task.join().await {
            Ok(answer) => answer,
            Err(why) => {
                tracing::warn!("kafka connection from {peer} closed: {why}");
                break;
            }
        };
        let api = request.api;
        metrics::kafka_request(api, answer.error.label(), request.started.elapsed());
        if let Some(frame) = answer.frame {
            let written = async {
                writer.write_all(&frame).await?;
                writer.flush().await
            };
            if let Err(e) = written.await {
                tracing::debug!("kafka connection from {peer}: write failed: {e}");
                return;
            }
        }
    }
    let _ = writer.shutdown().await;
}

async fn read_requests<S: AsyncRead>(shared: Arc<Shared>, mut reader: ReadHalf<S>, queue: mpsc::Sender<Queued>) {
    let connection_bytes = Arc::new(Semaphore::new(shared.config.connection_bytes_in_flight_max));
    loop {
        let idle = shared.config.connection_idle_max;
        let len = match timeout(idle, frame::read_length(&mut reader, shared.config.request_bytes_max)).await {
            Ok(Ok(Some(len))) => len,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => return refuse(queue, e).await,
            Err(_) => return tracing::debug!("kafka: closing a connection idle for {idle:?}"),
        };
        // Reserve before allocating; the limits are checked at start to hold a largest frame.
        let permits = u32::try_from(len).expect("a frame length is a positive i32");
        let (Ok(own), Ok(all)) = (
            connection_bytes.clone().acquire_many_owned(permits).await,
            shared.bytes_in_flight.clone().acquire_many_owned(permits).await,
        ) else {
            return;
        };
        let body = match timeout(idle, frame::read_body(&mut reader, len)).await {
            Ok(Ok(body)) => body,
            Ok(Err(e)) => return refuse(queue, e).await,
            Err(_) => return refuse(queue, FrameError::Truncated).await,
        };
        let started = Instant::now();
        let item = match start(&shared, body).await {
            Ok((serving, api)) => {
                Queued::Request(InFlight { task: AbortOnDrop(tokio::spawn(serving)), api, started, _bytes: (own, all) })
            }
            Err((e, api)) => {
                metrics::kafka_request(api, failure_label(&e), started.elapsed());
                Queued::Close(e)
            }
        };
        let closing = matches!(item, Queued::Close(_));
        if queue.send(item).await.is_err() || closing {
            return;
        }
    }
}

/// Closes the connection over a frame that could not be read (its api unknown), once the
/// answers before it are written.
async fn refuse(queue: mpsc::Sender<Queued>, e: FrameError) {
    metrics::kafka_request(versions::UNSUPPORTED_LABEL, failure_label(&e), std::time::Duration::ZERO);
    let _ = queue.send(Queued::Close(e)).await;
}

/// The error label a request that closes the connection is counted under.
fn failure_label(e: &FrameError) -> &'static str {
    match e {
        FrameError::UnsupportedVersion { .. } | FrameError::UnknownApi(_) => ErrorCode::UnsupportedVersion.label(),
        FrameError::Encode(_) | FrameError::Internal(_) => ErrorCode::UnknownServerError.label(),
        _ => ErrorCode::InvalidRequest.label(),
    }
}

/// Starts serving one request frame: everything that must happen in request order happens
/// before this returns (a produce's batches are placed in their logs); the rest is the
/// returned future. The error names the api label the failure is counted under.
async fn start(shared: &Arc<Shared>, mut frame: Bytes) -> Result<(Serving, &'static str), (FrameError, &'static str)> {
    let prefix = frame::prefix(&frame);
    let Some(api) = versions::advertised(prefix.api_key) else {
        return Err((FrameError::UnknownApi(prefix.api_key), versions::UNSUPPORTED_LABEL));
    };
    let label = api.label;
    let version = prefix.version;
    tracing::trace!(api = label, version, "kafka request");
    let mut req = Request { api: api.key, version, correlation_id: prefix.correlation_id, body: Bytes::new() };
    if api.key == ApiKey::ApiVersions && version > api.max {
        // Answered, not closed: the client learns our versions and asks again in v0's form.
        return Ok((Box::pin(async move { versions::answer(&req) }), label));
    }
    if version < api.min || version > api.max {
        return Err((FrameError::UnsupportedVersion { api_key: prefix.api_key, version }, label));
    }
    let header = frame::header(api.key, version, &mut frame).map_err(|e| (e, label))?;
    guard::check(api.key, version, &frame).map_err(|why| (FrameError::Body { api: api.key, version, why }, label))?;
    req.body = frame;
    let s = shared.clone();
    let backend = shared.backend.clone();
    let serving: Serving = match api.key {
        ApiKey::Produce => produce::start(backend, &shared.config, req).await.map_err(|e| (e, label))?,
        ApiKey::Fetch => Box::pin(async move { fetch::serve(backend, &s.config, req).await }),
        ApiKey::ListOffsets => Box::pin(offsets::list_offsets(backend, req)),
        ApiKey::Metadata => Box::pin(metadata::serve(backend, req)),
        ApiKey::ApiVersions => Box::pin(async move { versions::answer(&req) }),
        ApiKey::CreateTopics => Box::pin(async move { admin::create_topics(backend, &s.config, req).await }),
        ApiKey::DeleteTopics => Box::pin(async move { admin::delete_topics(backend, &s.config, req).await }),
        ApiKey::DescribeConfigs => Box::pin(admin::describe_configs(backend, req)),
        ApiKey::OffsetForLeaderEpoch => Box::pin(offsets::offset_for_leader_epoch(backend, req)),
        ApiKey::FindCoordinator => Box::pin(groups::find_coordinator(backend, req)),
        ApiKey::JoinGroup => {
            let client_id = header.client_id.as_ref().map(ToString::to_string).unwrap_or_default();
            Box::pin(groups::join_group(backend, client_id, req))
        }
        ApiKey::SyncGroup => Box::pin(groups::sync_group(backend, req)),
        ApiKey::Heartbeat => Box::pin(groups::heartbeat(backend, req)),
        ApiKey::LeaveGroup => Box::pin(groups::leave_group(backend, req)),
        ApiKey::OffsetCommit => Box::pin(groups::offset_commit(backend, req)),
        ApiKey::OffsetFetch => Box::pin(groups::offset_fetch(backend, req)),
        ApiKey::DescribeGroups => Box::pin(groups::describe_groups(backend, req)),
        ApiKey::ListGroups => Box::pin(groups::list_groups(backend, req)),
        ApiKey::InitProducerId => Box::pin(producer_id::init_producer_id(backend, req)),
        other => unreachable!("{other:?} is advertised in versions::APIS but has no handler"),
    };
    Ok((serving, label))
}

/// A spawned task that is aborted when its handle is dropped: a closed connection stops
/// what it was still serving (a produce's batches stay placed and commit regardless).
struct AbortOnDrop<T>(JoinHandle<T>);

impl AbortOnDrop<Result<Answer, FrameError>> {
    async fn join(mut self) -> Result<Answer, FrameError> {
        match (&mut self.0).await {
            Ok(result) => result,
            Err(e) => Err(FrameError::Internal(e.to_string())),
        }
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
