//! The Kafka error codes the front end answers with, and the one place where a backend
//! error becomes one.

use super::backend::BackendError;

macro_rules! error_codes {
    ($($variant:ident = $code:literal, $label:literal;)*) => {
        /// A Kafka error code that keel sends (the protocol guide's numbering).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorCode {
            $($variant,)*
        }

        impl ErrorCode {
            pub const fn code(self) -> i16 {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }

            /// The value of the `error` label of `keel_kafka_requests_total`.
            pub const fn label(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $label,)*
                }
            }
        }

        /// Every `ErrorCode::label`, for the metrics table.
        pub const LABELS: &[&str] = &[$($label,)*];
    };
}

error_codes! {
    None = 0, "none";
    UnknownServerError = -1, "unknown_server_error";
    OffsetOutOfRange = 1, "offset_out_of_range";
    CorruptMessage = 2, "corrupt_message";
    UnknownTopicOrPartition = 3, "unknown_topic_or_partition";
    LeaderNotAvailable = 5, "leader_not_available";
    NotLeaderOrFollower = 6, "not_leader_or_follower";
    RequestTimedOut = 7, "request_timed_out";
    MessageTooLarge = 10, "message_too_large";
    CoordinatorLoadInProgress = 14, "coordinator_load_in_progress";
    InvalidTopic = 17, "invalid_topic";
    NotEnoughReplicas = 19, "not_enough_replicas";
    InvalidRequiredAcks = 21, "invalid_required_acks";
    UnsupportedVersion = 35, "unsupported_version";
    TopicAlreadyExists = 36, "topic_already_exists";
    InvalidPartitions = 37, "invalid_partitions";
    InvalidReplicationFactor = 38, "invalid_replication_factor";
    InvalidReplicaAssignment = 39, "invalid_replica_assignment";
    InvalidConfig = 40, "invalid_config";
    InvalidRequest = 42, "invalid_request";
    PolicyViolation = 44, "policy_violation";
    OutOfOrderSequenceNumber = 45, "out_of_order_sequence_number";
    InvalidProducerEpoch = 47, "invalid_producer_epoch";
    KafkaStorageError = 56, "kafka_storage_error";
    FencedLeaderEpoch = 74, "fenced_leader_epoch";
    UnknownLeaderEpoch = 75, "unknown_leader_epoch";
    FetchSessionIdNotFound = 70, "fetch_session_id_not_found";
    InvalidRecord = 87, "invalid_record";
}

impl From<&BackendError> for ErrorCode {
    fn from(error: &BackendError) -> ErrorCode {
        match error {
            BackendError::NotLeader => ErrorCode::NotLeaderOrFollower,
            BackendError::LeaderNotAvailable => ErrorCode::LeaderNotAvailable,
            BackendError::UnknownTopicOrPartition => ErrorCode::UnknownTopicOrPartition,
            BackendError::OffsetOutOfRange => ErrorCode::OffsetOutOfRange,
            BackendError::CorruptMessage(_) => ErrorCode::CorruptMessage,
            BackendError::MessageTooLarge => ErrorCode::MessageTooLarge,
            BackendError::InvalidRecord(_) => ErrorCode::InvalidRecord,
            BackendError::InvalidTopic(_) => ErrorCode::InvalidTopic,
            BackendError::TopicAlreadyExists => ErrorCode::TopicAlreadyExists,
            BackendError::InvalidPartitions(_) => ErrorCode::InvalidPartitions,
            BackendError::InvalidReplicationFactor(_) => ErrorCode::InvalidReplicationFactor,
            BackendError::InvalidConfig(_) => ErrorCode::InvalidConfig,
            BackendError::PolicyViolation(_) => ErrorCode::PolicyViolation,
            BackendError::NotEnoughReplicas => ErrorCode::NotEnoughReplicas,
            BackendError::RequestTimedOut => ErrorCode::RequestTimedOut,
            BackendError::FencedLeaderEpoch => ErrorCode::FencedLeaderEpoch,
            BackendError::UnknownLeaderEpoch => ErrorCode::UnknownLeaderEpoch,
            BackendError::StorageError(_) => ErrorCode::KafkaStorageError,
            BackendError::CoordinatorLoadInProgress => ErrorCode::CoordinatorLoadInProgress,
            BackendError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            BackendError::OutOfOrderSequenceNumber(_) => ErrorCode::OutOfOrderSequenceNumber,
            BackendError::InvalidProducerEpoch(_) => ErrorCode::InvalidProducerEpoch,
            BackendError::Internal(_) => ErrorCode::UnknownServerError,
        }
    }
}

/// The code of a result: `None` for success.
pub fn code_of<T>(result: &Result<T, BackendError>) -> ErrorCode {
    match result {
        Ok(_) => ErrorCode::None,
        Err(e) => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The codes are Kafka's: checked against the kafka-protocol crate's own table.
    #[test]
    fn codes_match_the_protocol_guide() {
        use kafka_protocol::ResponseError as R;
        let pairs = [
            (ErrorCode::UnknownServerError, R::UnknownServerError),
            (ErrorCode::OffsetOutOfRange, R::OffsetOutOfRange),
            (ErrorCode::CorruptMessage, R::CorruptMessage),
            (ErrorCode::UnknownTopicOrPartition, R::UnknownTopicOrPartition),
            (ErrorCode::LeaderNotAvailable, R::LeaderNotAvailable),
            (ErrorCode::NotLeaderOrFollower, R::NotLeaderOrFollower),
            (ErrorCode::RequestTimedOut, R::RequestTimedOut),
            (ErrorCode::MessageTooLarge, R::MessageTooLarge),
            (ErrorCode::CoordinatorLoadInProgress, R::CoordinatorLoadInProgress),
            (ErrorCode::InvalidTopic, R::InvalidTopicException),
            (ErrorCode::NotEnoughReplicas, R::NotEnoughReplicas),
            (ErrorCode::InvalidRequiredAcks, R::InvalidRequiredAcks),
            (ErrorCode::UnsupportedVersion, R::UnsupportedVersion),
            (ErrorCode::TopicAlreadyExists, R::TopicAlreadyExists),
            (ErrorCode::InvalidPartitions, R::InvalidPartitions),
            (ErrorCode::InvalidReplicationFactor, R::InvalidReplicationFactor),
            (ErrorCode::InvalidReplicaAssignment, R::InvalidReplicaAssignment),
            (ErrorCode::InvalidConfig, R::InvalidConfig),
            (ErrorCode::InvalidRequest, R::InvalidRequest),
            (ErrorCode::PolicyViolation, R::PolicyViolation),
            (ErrorCode::OutOfOrderSequenceNumber, R::OutOfOrderSequenceNumber),
            (ErrorCode::InvalidProducerEpoch, R::InvalidProducerEpoch),
            (ErrorCode::KafkaStorageError, R::KafkaStorageError),
            (ErrorCode::FencedLeaderEpoch, R::FencedLeaderEpoch),
            (ErrorCode::UnknownLeaderEpoch, R::UnknownLeaderEpoch),
            (ErrorCode::FetchSessionIdNotFound, R::FetchSessionIdNotFound),
            (ErrorCode::InvalidRecord, R::InvalidRecord),
        ];
        assert_eq!(pairs.len() + 1, LABELS.len(), "every code but None is checked");
        for (ours, theirs) in pairs {
            assert_eq!(ours.code(), theirs.code(), "{ours:?}");
        }
    }
}
