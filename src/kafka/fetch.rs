//! Fetch (v4–11): whole stored batches, byte for byte, with a long poll at the end of the
//! log (`max_wait_ms` / `min_bytes`).
//!
//! Fetch sessions (KIP-227, v7+) are answered with session id 0: keel keeps no session, so
//! clients send full fetches every time, which the protocol allows.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::fetch_request::FetchRequest;
use kafka_protocol::messages::fetch_response::{FetchResponse, FetchableTopicResponse, PartitionData};
use tokio::time::Instant;

use super::backend::{FetchedRecords, KafkaBackend, PartitionPosition};
use super::config::KafkaConfig;
use super::errors::ErrorCode;
use super::frame::FrameError;
use super::wire::{self, Answer, FirstError, Request};

/// One partition asked for, as the wire gave it.
struct Asked {
    index: i32,
    /// Or why it names no position: a negative partition or offset.
    position: Result<PartitionPosition, ErrorCode>,
    max_bytes: usize,
}

pub async fn serve(
    backend: Arc<dyn KafkaBackend>,
    config: &KafkaConfig,
    mut req: Request,
) -> Result<Answer, FrameError> {
    let request: FetchRequest = req.decode()?;
    if request.session_id != 0 {
        // We never hand out a session, so an incremental fetch names one we do not have.
        let response = FetchResponse::default().with_error_code(ErrorCode::FetchSessionIdNotFound.code());
        return req.answer(&response, ErrorCode::FetchSessionIdNotFound);
    }
    let topics: Vec<(String, Vec<Asked>)> = request
        .topics
        .iter()
        .map(|t| {
            let name = t.topic.0.to_string();
            let asked = t
                .partitions
                .iter()
                .map(|p| Asked {
                    index: p.partition,
                    position: wire::position(&name, p.partition, p.fetch_offset, p.current_leader_epoch),
                    max_bytes: usize::try_from(p.partition_max_bytes).unwrap_or(0),
                })
                .collect();
            (name, asked)
        })
        .collect();
    let wait = Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0)).min(config.fetch_wait_max);
    let deadline = Instant::now() + wait;
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    let budget = usize::try_from(request.max_bytes).unwrap_or(0).min(config.fetch_response_bytes_max);
    let mut last_round = false;
    loop {
        let round = fetch_round(&*backend, &topics, budget).await;
        let waits: Vec<PartitionPosition> = round
            .iter()
            .flat_map(|(_, parts)| parts)
            .filter_map(|(asked, result)| match (asked.position.as_ref(), result) {
                (Ok(position), Ok(fetched)) => {
                    Some(PartitionPosition { offset: fetched.high_watermark.max(position.offset), ..position.clone() })
                }
                _ => None,
            })
            .collect();
        let total: usize =
            round.iter().flat_map(|(_, parts)| parts).map(|(_, r)| r.as_ref().map_or(0, |f| f.records.len())).sum();
        let failed = round.iter().flat_map(|(_, parts)| parts).any(|(_, r)| r.is_err());
        let now = Instant::now();
        // Errors are answered at once, as Kafka does, so the client can act on them.
        if total >= min_bytes || failed || now >= deadline || waits.is_empty() || last_round {
            let mut first = FirstError::new();
            let response = response(round, &mut first);
            return req.answer(&response, first.0);
        }
        if let Err(e) = backend.wait_for_commit(waits, deadline - now).await {
            tracing::warn!("kafka fetch: waiting for commits failed: {e}");
            last_round = true;
        }
    }
}

type Round<'a> = Vec<(&'a str, Vec<(&'a Asked, Result<FetchedRecords, ErrorCode>)>)>;

/// Fetches every asked partition once, in request order, within the response budget: the
/// first partition with data gets at least one whole batch, later ones what is left.
async fn fetch_round<'a>(backend: &dyn KafkaBackend, topics: &'a [(String, Vec<Asked>)], budget: usize) -> Round<'a> {
    let mut used = 0usize;
    let mut round = Vec::with_capacity(topics.len());
    for (name, asked) in topics {
        let mut parts = Vec::with_capacity(asked.len());
        for a in asked {
            let result = match &a.position {
                Err(code) => Err(*code),
                Ok(position) => {
                    let max_bytes = a.max_bytes.min(budget.saturating_sub(used));
                    let first_batch_whole = used == 0 && a.max_bytes > 0;
                    backend.fetch(position.clone(), max_bytes, first_batch_whole).await.map_err(|e| (&e).into())
                }
            };
            if let Ok(fetched) = &result {
                used += fetched.records.len();
            }
            parts.push((a, result));
        }
        round.push((name.as_str(), parts));
    }
    round
}

fn response(round: Round<'_>, first: &mut FirstError) -> FetchResponse {
    let responses = round
        .into_iter()
        .map(|(name, parts)| {
            let partitions = parts
                .into_iter()
                .map(|(asked, result)| {
                    let data = PartitionData::default().with_partition_index(asked.index);
                    match result {
                        Ok(f) => {
                            crate::metrics::fetched(name, f.records.len());
                            data.with_high_watermark(wire::offset(f.high_watermark))
                                .with_last_stable_offset(wire::offset(f.last_stable_offset))
                                .with_log_start_offset(wire::offset(f.log_start_offset))
                                // Never null: librdkafka refuses a MessageSetSize of -1.
                                .with_records(Some(f.records))
                        }
                        Err(code) => data.with_error_code(first.note(code)).with_high_watermark(-1),
                    }
                })
                .collect();
            FetchableTopicResponse::default().with_topic(wire::topic_name(name)).with_partitions(partitions)
        })
        .collect();
    FetchResponse::default().with_responses(responses)
}
