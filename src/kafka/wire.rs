//! Conversions between keel's types and the Kafka wire's, and the small pieces every
//! handler shares.

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use kafka_protocol::messages::{ApiKey, BrokerId, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

use super::backend::PartitionPosition;
use super::errors::ErrorCode;
use super::frame::FrameError;
use crate::ids::{NodeId, Offset, Term};

/// A request of an advertised api and version, its header read.
pub struct Request {
    pub api: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    pub body: Bytes,
}

impl Request {
    pub fn decode<T: Decodable>(&mut self) -> Result<T, FrameError> {
        super::frame::body(self.api, self.version, &mut self.body)
    }

    /// The answer frame: `response` in the request's version, counted under `error`.
    pub fn answer<T: Encodable + HeaderVersion>(&self, response: &T, error: ErrorCode) -> Result<Answer, FrameError> {
        answer(super::frame::response(self.api, self.correlation_id, self.version, response), error)
    }
}

/// A served request: the response frame (`None`: the client expects no answer, as for a
/// produce with acks=0) and the error code that the metrics count it under.
pub struct Answer {
    pub frame: Option<BytesMut>,
    pub error: ErrorCode,
}

/// A request being served; it yields its answer or the reason to close the connection.
pub type Serving = BoxFuture<'static, Result<Answer, FrameError>>;

pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

pub fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

pub fn broker_id(id: NodeId) -> BrokerId {
    BrokerId(i32::try_from(id.get()).unwrap_or(i32::MAX))
}

/// A Raft term as a Kafka leader epoch (an i32 on the wire).
pub fn epoch(term: Term) -> i32 {
    i32::try_from(term.get()).unwrap_or(i32::MAX)
}

/// A leader epoch from the wire: -1 (or any negative) means the client has none.
pub fn term(epoch: i32) -> Option<Term> {
    u64::try_from(epoch).ok().map(Term)
}

pub fn offset(offset: Offset) -> i64 {
    i64::try_from(offset.get()).unwrap_or(i64::MAX)
}

/// A partition index from the wire; a negative one names no partition.
pub fn partition(index: i32) -> Option<u32> {
    u32::try_from(index).ok()
}

/// A partition and position as the wire names them: a negative partition names none
/// (UNKNOWN_TOPIC_OR_PARTITION), a negative offset is OFFSET_OUT_OF_RANGE, a negative
/// epoch means the client has none (no check).
pub fn position(
    topic: &str,
    partition: i32,
    offset: i64,
    current_leader_epoch: i32,
) -> Result<PartitionPosition, ErrorCode> {
    let partition = self::partition(partition).ok_or(ErrorCode::UnknownTopicOrPartition)?;
    let offset = u64::try_from(offset).map_err(|_| ErrorCode::OffsetOutOfRange)?;
    Ok(PartitionPosition {
        topic: topic.to_owned(),
        partition,
        offset: Offset(offset),
        current_leader_epoch: term(current_leader_epoch),
    })
}

/// The first error among a response's parts: what the request is counted under.
#[derive(Debug, Clone, Copy)]
pub struct FirstError(pub ErrorCode);

impl FirstError {
    pub fn new() -> FirstError {
        FirstError(ErrorCode::None)
    }

    /// Notes `code` and passes it through, for use inside a response builder.
    pub fn note(&mut self, code: ErrorCode) -> i16 {
        if self.0 == ErrorCode::None {
            self.0 = code;
        }
        code.code()
    }
}

impl Default for FirstError {
    fn default() -> FirstError {
        FirstError::new()
    }
}

/// An answer frame encoded by `frame::response`; an encoding failure is our bug, and the
/// connection is closed rather than sent a wrong frame.
pub fn answer(frame: Result<BytesMut, String>, error: ErrorCode) -> Result<Answer, FrameError> {
    match frame {
        Ok(frame) => Ok(Answer { frame: Some(frame), error }),
        Err(why) => {
            tracing::error!("cannot encode a kafka response: {why}");
            Err(FrameError::Encode(why))
        }
    }
}
