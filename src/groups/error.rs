//! Why the coordinator refused a request. Each error is one Kafka error code (`code`), so
//! the Kafka front end passes it on as it is, and its message says what happened and what
//! to do, for keel's own client and the logs.

use super::settings::GROUP_ID_BYTES_MAX;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("the coordinator is still reading its partition of __consumer_offsets; retry shortly")]
    CoordinatorLoadInProgress,
    #[error("group {group:?} is being deleted (its offsets expired); retry shortly")]
    GroupDeleting { group: String },
    #[error("the coordinator holds {what} (the most {setting} allows); retry later, or raise {setting}")]
    CoordinatorFull { what: &'static str, setting: &'static str },
    #[error("this node no longer coordinates the group; find the coordinator again (FindCoordinator)")]
    NotCoordinator,
    /// For `append_failed` when the partition refused the records but this node still
    /// leads it (a nearly full disk, say).
    #[error("the coordinator could not write to its partition ({reason}); retry shortly")]
    CoordinatorNotAvailable { reason: String },
    #[error("generation {given} is not the group's generation {current}; rejoin the group")]
    IllegalGeneration { given: i32, current: i32 },
    #[error("the protocol type or protocols do not match the group's; every member must use the same ones")]
    InconsistentGroupProtocol,
    #[error("invalid group id: {rule}")]
    InvalidGroupId { rule: &'static str },
    #[error("the member id is not a member of the group; rejoin with an empty member id")]
    UnknownMemberId,
    #[error("session timeout {given} ms is outside {min}..={max} ms (session_timeout_ms_min/max)")]
    InvalidSessionTimeout { given: i32, min: u32, max: u32 },
    #[error("the group is rebalancing; rejoin the group")]
    RebalanceInProgress,
    #[error("the offsets of this commit take {bytes} bytes, over append_bytes_max ({max}); commit fewer at a time")]
    InvalidCommitOffsetSize { bytes: usize, max: usize },
    #[error("the offset's metadata is {bytes} bytes, over offset_metadata_bytes_max ({max})")]
    OffsetMetadataTooLarge { bytes: usize, max: usize },
    #[error("not a valid topic name or partition number")]
    UnknownTopicOrPartition,
    #[error("a first join needs a member id: join again with the member id of this response")]
    MemberIdRequired,
    #[error("the group has {max} members, the most members_per_group_max allows")]
    GroupMaxSizeReached { max: usize },
    #[error("another member joined with this group.instance.id; this one is fenced and must stop")]
    FencedInstanceId,
    #[error("malformed request: {what}")]
    InvalidRequest { what: &'static str },
    #[error(
        "the group's assignment record would take {bytes} bytes, over append_bytes_max ({max}); \
         assign less per member or run fewer members"
    )]
    GroupRecordTooLarge { bytes: usize, max: usize },
    /// An error a coordinator on another node sent over keel's protocol, by its Kafka code
    /// and message (the variants without fields come back as themselves: `from_wire`).
    #[error("{message}")]
    Remote { code: i16, message: String },
}

impl GroupError {
    /// The Kafka error code this error is sent as.
    pub fn code(&self) -> i16 {
        match self {
            GroupError::CoordinatorLoadInProgress => 14,
            GroupError::GroupDeleting { .. }
            | GroupError::CoordinatorFull { .. }
            | GroupError::CoordinatorNotAvailable { .. } => 15,
            GroupError::NotCoordinator => 16,
            GroupError::IllegalGeneration { .. } => 22,
            GroupError::InconsistentGroupProtocol => 23,
            GroupError::InvalidGroupId { .. } => 24,
            GroupError::UnknownMemberId => 25,
            GroupError::InvalidSessionTimeout { .. } => 26,
            GroupError::RebalanceInProgress => 27,
            GroupError::InvalidCommitOffsetSize { .. } => 28,
            GroupError::OffsetMetadataTooLarge { .. } => 12,
            GroupError::UnknownTopicOrPartition => 3,
            GroupError::MemberIdRequired => 79,
            GroupError::GroupMaxSizeReached { .. } => 81,
            GroupError::FencedInstanceId => 82,
            GroupError::InvalidRequest { .. } => 42,
            // Kafka answers a group record it could not append with UNKNOWN_SERVER_ERROR.
            GroupError::GroupRecordTooLarge { .. } => -1,
            GroupError::Remote { code, .. } => *code,
        }
    }

    /// The error a coordinator sent as `code` and `message`: the variant itself when it has
    /// no fields, so a client can match on it, else `Remote`.
    pub fn from_wire(code: i16, message: String) -> GroupError {
        match code {
            3 => GroupError::UnknownTopicOrPartition,
            14 => GroupError::CoordinatorLoadInProgress,
            16 => GroupError::NotCoordinator,
            23 => GroupError::InconsistentGroupProtocol,
            25 => GroupError::UnknownMemberId,
            27 => GroupError::RebalanceInProgress,
            79 => GroupError::MemberIdRequired,
            82 => GroupError::FencedInstanceId,
            _ => GroupError::Remote { code, message },
        }
    }
}

/// The error code of an optional error: 0 (NONE) for none.
pub fn error_code(error: &Option<GroupError>) -> i16 {
    error.as_ref().map_or(0, GroupError::code)
}

/// Checks a group id: at most `GROUP_ID_BYTES_MAX` bytes, and not empty unless `empty_ok`
/// (Kafka accepts the empty id in OffsetCommit, OffsetFetch and DescribeGroups, for
/// consumers that only store offsets, and nowhere else).
pub fn check_group_id(group_id: &str, empty_ok: bool) -> Result<(), GroupError> {
    if group_id.len() > GROUP_ID_BYTES_MAX {
        return Err(GroupError::InvalidGroupId { rule: "a group id has at most 255 bytes" });
    }
    if group_id.is_empty() && !empty_ok {
        return Err(GroupError::InvalidGroupId { rule: "a group that joins needs a non-empty group id" });
    }
    Ok(())
}
