//! Produce (v3–7): each partition's records split into whole RecordBatch v2 and handed to
//! the backend as they came.
//!
//! acks=1 and acks=-1 are answered alike, once every batch is committed — durable on a
//! majority of the partition's replicas — which is stronger than Kafka's acks=1 (the
//! leader's log only). acks=0 gets no response at all, as Kafka's clients expect.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::future::join_all;
use kafka_protocol::messages::produce_request::ProduceRequest;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, ProduceResponse, TopicProduceResponse};

use super::backend::{Appended, BackendError, KafkaBackend, PendingCommit, ProduceBatch};
use super::config::KafkaConfig;
use super::errors::ErrorCode;
use super::frame::FrameError;
use super::wire::{self, Answer, FirstError, Request, Serving};

/// Bytes before a batch's `batchLength` field ends: baseOffset (8) and batchLength (4).
const BATCH_LENGTH_END: usize = 12;

/// What became of one partition's records once their batches were placed in the log.
enum Placed {
    /// Refused before anything was appended.
    Refused(ErrorCode),
    /// Batches placed in order; `refused` is why a later batch of the same records was not.
    Pending { commits: Vec<PendingCommit>, refused: Option<BackendError> },
}

/// Places every batch of the request in its partition's log, in request order, and returns
/// the rest of the work: waiting for the commits and answering. The caller awaits this
/// before it starts the connection's next request, so that batches keep the order of the
/// requests that carried them.
pub async fn start(
    backend: Arc<dyn KafkaBackend>,
    config: &KafkaConfig,
    mut req: Request,
) -> Result<Serving, FrameError> {
    let request: ProduceRequest = req.decode()?;
    let acks = request.acks;
    let timeout = Duration::from_millis(u64::try_from(request.timeout_ms).unwrap_or(0)).min(config.produce_timeout_max);
    let mut topics = Vec::with_capacity(request.topic_data.len());
    for topic in request.topic_data {
        let name = topic.name.0.to_string();
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for data in topic.partition_data {
            let placed = if !matches!(acks, -1..=1) {
                Placed::Refused(ErrorCode::InvalidRequiredAcks)
            } else {
                match (wire::partition(data.index), split_batches(data.records.unwrap_or_default())) {
                    (None, _) => Placed::Refused(ErrorCode::UnknownTopicOrPartition),
                    (_, Err(why)) => {
                        tracing::debug!("kafka produce to {name}/{}: {why}", data.index);
                        Placed::Refused(ErrorCode::CorruptMessage)
                    }
                    (Some(partition), Ok(batches)) => place(&*backend, &name, partition, batches, timeout).await,
                }
            };
            partitions.push((data.index, placed));
        }
        topics.push((name, partitions));
    }
    if acks == 0 {
        // No answer; the commits go on without anyone waiting for them.
        let mut first = FirstError::new();
        for (_, partitions) in &topics {
            for (_, placed) in partitions {
                match placed {
                    Placed::Refused(code) => drop(first.note(*code)),
                    Placed::Pending { refused: Some(e), .. } => drop(first.note(e.into())),
                    Placed::Pending { .. } => {}
                }
            }
        }
        return Ok(Box::pin(async move { Ok(Answer { frame: None, error: first.0 }) }));
    }
    Ok(Box::pin(async move {
        let mut first = FirstError::new();
        let mut responses = Vec::with_capacity(topics.len());
        for (name, partitions) in topics {
            let outcomes = join_all(
                partitions.into_iter().map(|(index, placed)| async move { (index, committed(placed, timeout).await) }),
            )
            .await;
            let partition_responses = outcomes
                .into_iter()
                .map(|(index, outcome)| {
                    let response = PartitionProduceResponse::default().with_index(index).with_log_append_time_ms(-1);
                    match outcome {
                        Ok(appended) => response
                            .with_base_offset(wire::offset(appended.base_offset))
                            .with_log_start_offset(wire::offset(appended.log_start_offset)),
                        Err(code) => {
                            response.with_error_code(first.note(code)).with_base_offset(-1).with_log_start_offset(-1)
                        }
                    }
                })
                .collect();
            responses.push(
                TopicProduceResponse::default()
                    .with_name(wire::topic_name(&name))
                    .with_partition_responses(partition_responses),
            );
        }
        let response = ProduceResponse::default().with_responses(responses);
        req.answer(&response, first.0)
    }))
}

/// Hands the batches to the backend one after the other; stops at the first refused.
async fn place(
    backend: &dyn KafkaBackend,
    topic: &str,
    partition: u32,
    batches: Vec<Bytes>,
    timeout: Duration,
) -> Placed {
    let mut commits = Vec::with_capacity(batches.len());
    for records in batches {
        let batch = ProduceBatch { topic: topic.to_owned(), partition, records, timeout };
        match backend.produce(batch).await {
            Ok(pending) => commits.push(pending),
            Err(e) if commits.is_empty() => return Placed::Refused((&e).into()),
            Err(e) => return Placed::Pending { commits, refused: Some(e) },
        }
    }
    Placed::Pending { commits, refused: None }
}

/// Waits for a partition's batches to commit: the first batch's offset, or the first error.
/// A batch refused after earlier ones were placed fails the partition, although those
/// earlier batches will commit (a client that retries then writes them twice; Kafka appends
/// a partition's records at once, but keel appends batch by batch).
async fn committed(placed: Placed, timeout: Duration) -> Result<Appended, ErrorCode> {
    let (commits, refused) = match placed {
        Placed::Refused(code) => return Err(code),
        Placed::Pending { commits, refused } => (commits, refused),
    };
    let waited = tokio::time::timeout(timeout, join_all(commits)).await;
    let results = waited.map_err(|_| ErrorCode::RequestTimedOut)?;
    let mut first: Option<Appended> = None;
    let mut last_start = None;
    for result in results {
        let appended = result.map_err(|e| ErrorCode::from(&e))?;
        first.get_or_insert(appended);
        last_start = Some(appended.log_start_offset);
    }
    if let Some(e) = refused {
        return Err((&e).into());
    }
    let mut appended = first.ok_or(ErrorCode::CorruptMessage)?;
    appended.log_start_offset = last_start.unwrap_or(appended.log_start_offset);
    Ok(appended)
}

/// Splits a partition's records into whole batches by their length fields alone (the
/// backend checks everything else). Empty records, or a batch that runs past the end, are
/// refused whole.
pub fn split_batches(mut records: Bytes) -> Result<Vec<Bytes>, String> {
    if records.is_empty() {
        return Err("no record batch in the partition's records".into());
    }
    let mut batches = Vec::new();
    while !records.is_empty() {
        if records.len() < BATCH_LENGTH_END {
            return Err(format!("{} trailing bytes, too few for a batch header", records.len()));
        }
        let length = (&records[8..BATCH_LENGTH_END]).get_i32();
        let total = usize::try_from(length).ok().and_then(|l| l.checked_add(BATCH_LENGTH_END));
        match total {
            Some(total) if total <= records.len() => batches.push(records.split_to(total)),
            _ => return Err(format!("batch length {length} runs past the {} bytes left", records.len())),
        }
    }
    Ok(batches)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(body_len: usize, fill: u8) -> Vec<u8> {
        let mut b = vec![0u8; 8];
        b.extend_from_slice(&i32::try_from(body_len).unwrap().to_be_bytes());
        b.extend(std::iter::repeat_n(fill, body_len));
        b
    }

    #[test]
    fn records_split_into_whole_batches_and_bad_lengths_are_refused() {
        let mut two = batch(60, 1);
        two.extend(batch(70, 2));
        let split = split_batches(Bytes::from(two)).unwrap();
        assert_eq!(split.iter().map(Bytes::len).collect::<Vec<_>>(), vec![72, 82]);
        assert_eq!(split[1][12], 2);
        assert!(split_batches(Bytes::new()).is_err());
        let mut long = batch(60, 1);
        long.truncate(50);
        assert!(split_batches(Bytes::from(long)).is_err());
        let mut negative = batch(60, 1);
        negative[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(split_batches(Bytes::from(negative)).is_err());
        let mut trailing = batch(60, 1);
        trailing.extend([0; 5]);
        assert!(split_batches(Bytes::from(trailing)).is_err());
    }
}
