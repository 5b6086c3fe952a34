//! The Kafka error codes the front end answers with, and the one place where a backend
//! error becomes one.

use super::backend::BackendError;
use crate::groups::GroupError;

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
    OffsetMetadataTooLarge = 12, "offset_metadata_too_large";
    CoordinatorNotAvailable = 15, "coordinator_not_available";
    NotCoordinator = 16, "not_coordinator";
    IllegalGeneration = 22, "illegal_generation";
    InconsistentGroupProtocol = 23, "inconsistent_group_protocol";
    InvalidGroupId = 24, "invalid_group_id";
    UnknownMemberId = 25, "unknown_member_id";
    InvalidSessionTimeout = 26, "invalid_session_timeout";
    RebalanceInProgress = 27, "rebalance_in_progress";
    InvalidCommitOffsetSize = 28, "invalid_commit_offset_size";
    MemberIdRequired = 79, "member_id_required";
    GroupMaxSizeReached = 81, "group_max_size_reached";
    FencedInstanceId = 82, "fenced_instance_id";
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
            BackendError::Group(e) => e.into(),
        }
    }
}

/// A group coordinator's refusal: each `GroupError` is one Kafka code already.
impl From<&GroupError> for ErrorCode {
    fn from(error: &GroupError) -> ErrorCode {
        match error {
            GroupError::CoordinatorLoadInProgress => ErrorCode::CoordinatorLoadInProgress,
            GroupError::GroupDeleting { .. }
            | GroupError::CoordinatorFull { .. }
            | GroupError::CoordinatorNotAvailable { .. } => ErrorCode::CoordinatorNotAvailable,
            GroupError::NotCoordinator => ErrorCode::NotCoordinator,
            GroupError::IllegalGeneration { .. } => ErrorCode::IllegalGeneration,
            GroupError::InconsistentGroupProtocol => ErrorCode::InconsistentGroupProtocol,
            GroupError::InvalidGroupId { .. } => ErrorCode::InvalidGroupId,
            GroupError::UnknownMemberId => ErrorCode::UnknownMemberId,
            GroupError::InvalidSessionTimeout { .. } => ErrorCode::InvalidSessionTimeout,
            GroupError::RebalanceInProgress => ErrorCode::RebalanceInProgress,
            GroupError::InvalidCommitOffsetSize { .. } => ErrorCode::InvalidCommitOffsetSize,
            GroupError::OffsetMetadataTooLarge { .. } => ErrorCode::OffsetMetadataTooLarge,
            GroupError::UnknownTopicOrPartition => ErrorCode::UnknownTopicOrPartition,
            GroupError::MemberIdRequired => ErrorCode::MemberIdRequired,
            GroupError::GroupMaxSizeReached { .. } => ErrorCode::GroupMaxSizeReached,
            GroupError::FencedInstanceId => ErrorCode::FencedInstanceId,
            GroupError::InvalidRequest { .. } => ErrorCode::InvalidRequest,
            GroupError::GroupRecordTooLarge { .. } => ErrorCode::UnknownServerError,
            // Only keel's client decodes errors from another node; a coordinator never makes one.
            GroupError::Remote { .. } => ErrorCode::UnknownServerError,
        }
    }
}

/// The code of an optional group error: `None` for none.
pub fn group_code(error: &Option<GroupError>) -> ErrorCode {
    error.as_ref().map_or(ErrorCode::None, ErrorCode::from)
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

    /// Every group error becomes the code the coordinator meant.
    #[test]
    fn group_errors_keep_their_codes() {
        let errors = [
            GroupError::CoordinatorLoadInProgress,
            GroupError::GroupDeleting { group: "g".into() },
            GroupError::NotCoordinator,
            GroupError::IllegalGeneration { given: 1, current: 2 },
            GroupError::UnknownMemberId,
            GroupError::RebalanceInProgress,
            GroupError::OffsetMetadataTooLarge { bytes: 2, max: 1 },
            GroupError::MemberIdRequired,
            GroupError::FencedInstanceId,
            GroupError::InvalidRequest { what: "x" },
            GroupError::GroupRecordTooLarge { bytes: 2, max: 1 },
        ];
        for e in errors {
            assert_eq!(ErrorCode::from(&e).code(), e.code(), "{e:?}");
        }
    }

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
            (ErrorCode::OffsetMetadataTooLarge, R::OffsetMetadataTooLarge),
            (ErrorCode::CoordinatorNotAvailable, R::CoordinatorNotAvailable),
            (ErrorCode::NotCoordinator, R::NotCoordinator),
            (ErrorCode::IllegalGeneration, R::IllegalGeneration),
            (ErrorCode::InconsistentGroupProtocol, R::InconsistentGroupProtocol),
            (ErrorCode::InvalidGroupId, R::InvalidGroupId),
            (ErrorCode::UnknownMemberId, R::UnknownMemberId),
            (ErrorCode::InvalidSessionTimeout, R::InvalidSessionTimeout),
            (ErrorCode::RebalanceInProgress, R::RebalanceInProgress),
            (ErrorCode::InvalidCommitOffsetSize, R::InvalidCommitOffsetSize),
            (ErrorCode::MemberIdRequired, R::MemberIdRequired),
            (ErrorCode::GroupMaxSizeReached, R::GroupMaxSizeReached),
            (ErrorCode::FencedInstanceId, R::FencedInstanceId),
        ];
        assert_eq!(pairs.len() + 1, LABELS.len(), "every code but None is checked");
        for (ours, theirs) in pairs {
            assert_eq!(ours.code(), theirs.code(), "{ours:?}");
        }
    }
}
