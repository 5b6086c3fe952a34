//! ListOffsets (v1–4) and OffsetForLeaderEpoch (v2–4).
//!
//! keel advertises real leader epochs (the Raft term of the partition's leader, which the
//! leader also stamps into every batch as `partitionLeaderEpoch`), so consumers can ask,
//! after a leader change, where their epoch ended and find out whether the log they read
//! was cut. The answers come from the backend; this file only moves them on and off the
//! wire.

use std::sync::Arc;

use futures_util::future::join_all;
use kafka_protocol::messages::list_offsets_request::ListOffsetsRequest;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_request::OffsetForLeaderEpochRequest;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderEpochResponse, OffsetForLeaderTopicResult,
};

use super::backend::{KafkaBackend, ListedOffset, OffsetQuery};
use super::errors::ErrorCode;
use super::frame::FrameError;
use super::wire::{self, Answer, FirstError, Request};

/// ListOffsets' special timestamps.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;

pub async fn list_offsets(backend: Arc<dyn KafkaBackend>, mut req: Request) -> Result<Answer, FrameError> {
    let version = req.version;
    let request: ListOffsetsRequest = req.decode()?;
    let mut first = FirstError::new();
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let name = topic.name.0.to_string();
        let answers = join_all(topic.partitions.iter().map(|p| {
            let backend = &backend;
            let name = &name;
            async move {
                let query = match p.timestamp {
                    LATEST => OffsetQuery::Latest,
                    EARLIEST => OffsetQuery::Earliest,
                    t if t >= 0 => OffsetQuery::ByTimestamp(t),
                    _ => return (p.partition_index, Err(ErrorCode::InvalidRequest)),
                };
                let position = match wire::position(name, p.partition_index, 0, p.current_leader_epoch) {
                    Ok(position) => position,
                    Err(code) => return (p.partition_index, Err(code)),
                };
                (p.partition_index, backend.list_offset(position, query).await.map_err(|e| (&e).into()))
            }
        }))
        .await;
        let partitions = answers
            .into_iter()
            .map(|(index, answer): (i32, Result<ListedOffset, ErrorCode>)| {
                let response = ListOffsetsPartitionResponse::default().with_partition_index(index);
                match answer {
                    Ok(listed) => {
                        let response = response.with_offset(listed.offset).with_timestamp(listed.timestamp);
                        // The epoch is on the wire from v4 on (and may not be set before).
                        if version >= 4 {
                            response.with_leader_epoch(listed.leader_epoch.map_or(-1, wire::epoch))
                        } else {
                            response
                        }
                    }
                    Err(code) => response.with_error_code(first.note(code)).with_offset(-1).with_timestamp(-1),
                }
            })
            .collect();
        topics.push(ListOffsetsTopicResponse::default().with_name(topic.name.clone()).with_partitions(partitions));
    }
    let response = ListOffsetsResponse::default().with_topics(topics);
    req.answer(&response, first.0)
}

pub async fn offset_for_leader_epoch(backend: Arc<dyn KafkaBackend>, mut req: Request) -> Result<Answer, FrameError> {
    let request: OffsetForLeaderEpochRequest = req.decode()?;
    let mut first = FirstError::new();
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let name = topic.topic.0.to_string();
        let answers = join_all(topic.partitions.iter().map(|p| {
            let backend = &backend;
            let name = &name;
            async move {
                let position = match wire::position(name, p.partition, 0, p.current_leader_epoch) {
                    Ok(position) => position,
                    Err(code) => return (p.partition, Err(code)),
                };
                // An undefined epoch (-1) has no end: Kafka answers -1, -1 without an error.
                let Some(epoch) = wire::term(p.leader_epoch) else {
                    return (p.partition, Ok(None));
                };
                (p.partition, backend.epoch_end_offset(position, epoch).await.map(Some).map_err(|e| (&e).into()))
            }
        }))
        .await;
        let partitions = answers
            .into_iter()
            .map(|(index, answer)| {
                let response = EpochEndOffset::default().with_partition(index);
                match answer {
                    Ok(Some(end)) => {
                        response.with_leader_epoch(wire::epoch(end.epoch)).with_end_offset(wire::offset(end.end_offset))
                    }
                    Ok(None) => response.with_leader_epoch(-1).with_end_offset(-1),
                    Err(code) => response.with_error_code(first.note(code)).with_leader_epoch(-1).with_end_offset(-1),
                }
            })
            .collect();
        topics.push(OffsetForLeaderTopicResult::default().with_topic(topic.topic.clone()).with_partitions(partitions));
    }
    let response = OffsetForLeaderEpochResponse::default().with_topics(topics);
    req.answer(&response, first.0)
}
