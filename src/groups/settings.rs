//! The coordinator's settings and limits. Defaults follow Kafka's broker settings where
//! Kafka has one (named beside each); every other limit exists because nothing in memory
//! may grow without bound.

/// The longest group id, in bytes. Kafka allows any id its i16-length string holds
/// (32 767 bytes); keel caps it at 255, a little above Kafka's topic-name cap of 249, which
/// leaves room for the usual `connect-<connector>` and Kafka Streams application ids while
/// keeping every offset key (which holds the group id) small.
pub const GROUP_ID_BYTES_MAX: usize = 255;
/// The longest member id or group.instance.id a client may send, in bytes. Ids the
/// coordinator makes are far shorter (`MEMBER_ID_PREFIX_BYTES_MAX` + 38).
pub const MEMBER_ID_BYTES_MAX: usize = 255;
/// How much of the client id goes into a member id it is given (Kafka uses the whole).
pub const MEMBER_ID_PREFIX_BYTES_MAX: usize = 64;
/// How much of the client id and client host a member keeps for DescribeGroups.
pub const CLIENT_TEXT_BYTES_MAX: usize = 255;
/// The longest protocol type or protocol (assignor) name.
pub const PROTOCOL_NAME_BYTES_MAX: usize = 255;
/// Protocols (assignors) one member may offer; Kafka consumers offer one to three.
pub const PROTOCOLS_PER_MEMBER_MAX: usize = 32;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// How long a rebalance of an empty group waits for more members before it completes;
    /// each member that joins meanwhile pushes it this far again, up to the rebalance
    /// timeout (Kafka `group.initial.rebalance.delay.ms`, 3 s).
    pub initial_rebalance_delay_ms: u64,
    /// The session timeouts a member may ask for (Kafka `group.min.session.timeout.ms`
    /// 6 s, `group.max.session.timeout.ms` 30 min).
    pub session_timeout_ms_min: u32,
    pub session_timeout_ms_max: u32,
    /// How long a new member that waits for its JoinGroup answer is kept without a
    /// heartbeat (Kafka's fixed 5 minutes): it cannot heartbeat before it has a member id.
    pub new_member_join_timeout_ms: u64,
    /// How long committed offsets are kept once their group is empty, or since their
    /// commit for a group that never joined (Kafka `offsets.retention.minutes`, 7 days).
    pub offsets_retention_ms: u64,
    /// How often `tick` looks for expired offsets (Kafka
    /// `offsets.retention.check.interval.ms`, 10 min).
    pub offsets_retention_check_interval_ms: u64,
    /// Groups one coordinator holds (those with members, offsets or a group record).
    pub groups_max: usize,
    /// Members of one group, those waiting to rejoin with their new member id included
    /// (Kafka `group.max.size`, unlimited there).
    pub members_per_group_max: usize,
    /// Members of all the groups of one coordinator.
    pub members_max: usize,
    /// Committed offsets one coordinator holds, all groups together.
    pub offsets_max: usize,
    /// Bytes of protocol metadata one member may send, all its protocols together.
    pub protocol_metadata_bytes_max: usize,
    /// The metadata string of one committed offset (Kafka `offset.metadata.max.bytes`).
    pub offset_metadata_bytes_max: usize,
    /// Bytes of records in one append (their keys and values). Keep it at or below the
    /// partition's `record_bytes_max` and `batch_bytes_max`, so every append fits a batch.
    pub append_bytes_max: usize,
    /// Appends asked for and not yet committed or failed.
    pub appends_in_flight_max: usize,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            initial_rebalance_delay_ms: 3_000,
            session_timeout_ms_min: 6_000,
            session_timeout_ms_max: 1_800_000,
            new_member_join_timeout_ms: 300_000,
            offsets_retention_ms: 7 * 24 * 3_600_000,
            offsets_retention_check_interval_ms: 600_000,
            groups_max: 10_000,
            members_per_group_max: 1_000,
            members_max: 10_000,
            offsets_max: 1_000_000,
            protocol_metadata_bytes_max: 64 << 10,
            offset_metadata_bytes_max: 4_096,
            append_bytes_max: 1 << 20,
            appends_in_flight_max: 1_024,
        }
    }
}
