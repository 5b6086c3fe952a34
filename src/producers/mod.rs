//! Idempotent producers: the per-partition producer state (issue 16). For every producer id
//! that wrote to a partition, its epoch and its last `WINDOW` batches, so that a retried batch
//! is answered with its original offsets instead of being appended twice, a gap in the
//! sequence is refused, and a producer fenced by a newer epoch can write no more.
//!
//! The module is pure, like the Raft core and the metadata state machine: no I/O, no clock
//! (times arrive as arguments, read from the log), no randomness. Every replica applies the
//! same committed entries in the same order and so holds the same `ProducerTable`; a new
//! leader has the state it needs without asking anyone.
//!
//! # The rules (Kafka's, KIP-98; `../shared/research/kafka-and-multiraft.md` §4)
//!
//! A batch names its producer id, epoch and base sequence in its RecordBatch v2 header
//! (bytes 43, 51, 53); its last sequence is base + lastOffsetDelta, wrapping from `i32::MAX`
//! to 0. Checked against what the partition knows of the producer (`Verdict`):
//! - producer id -1: not idempotent, always appended;
//! - unknown producer id: appended whatever its sequence (the producer may have expired);
//! - an epoch older than the producer's: fenced (INVALID_PRODUCER_EPOCH);
//! - a newer epoch: appended only at sequence 0 (else OUT_OF_ORDER_SEQUENCE_NUMBER);
//! - the same epoch: a batch with the same first and last sequence as one of the last
//!   `WINDOW` is a duplicate, answered with the original offsets; the sequence after the last
//!   batch is appended; anything else is out of order. A retry older than the window is out of
//!   order too, as Kafka answers it: not DUPLICATE_SEQUENCE_NUMBER, which would be taken for
//!   success without the offsets we no longer have.
//!
//! Memory is bounded: a producer idle for longer than `producer_id_expiration_ms` (in the
//! log's time, below) is forgotten, and at most `producers_max` are tracked per partition; the
//! least recently active one is evicted to make room (`table.rs` says why not refuse).
//!
//! # Driving it
//!
//! **Applying (every replica).** For each committed entry, in index order: a data entry calls
//! `table.apply(index, &batch, base_offset, timestamp_ms)` with the `ProducerBatch` read from
//! the RecordBatch header (non-idempotent batches too: they advance the log's time), the
//! entry's base offset, and the batch's maxTimestamp (header byte 35); any other entry
//! (no-op, configuration) calls `table.advance(index)`. An index the table already covers is
//! ignored, so replaying from before a snapshot is harmless.
//!
//! **Proposing (the leader).** On winning term T, whose no-op sits at index `i`, the leader
//! makes `InFlight::new(i, inflight_batches_max)`. For each produced batch, before proposing:
//! `inflight.check(&table, &batch)`. `Append`: propose it, then `inflight.proposed(index,
//! &batch)`. `Duplicate`: answer success with its offsets, propose nothing.
//! `InFlightDuplicate { index }`: answer as the entry at `index` is answered, once it commits.
//! `NotReady`: the table has not yet applied the leader's own no-op, so entries of earlier
//! terms may be missing from it: wait or answer a retriable error. The rest are refusals
//! (`Verdict::kafka_error_code`). After applying committed entries, `inflight.forget_applied(
//! table.applied_index())`. On losing leadership, drop the `InFlight`: its entries are answered
//! as outcome unknown, and the client's retry meets the next leader's table.
//!
//! **Snapshots.** `table.snapshot()` is the whole table and the index it covers, as bytes
//! (`snapshot.rs`); `ProducerTable::restore` gives it back. A node that starts restores the
//! latest snapshot and applies the entries after its index: it ends with the table of a
//! replica that never stopped. Keep snapshots beside the segments, and never let retention
//! delete entries after the latest snapshot's index: the producers only they mention would be
//! forgotten on the next rebuild. For the same reason a follower reset to the leader's log
//! start needs the leader's snapshot too.
//!
//! **Producer ids.** `IdBlocks` (`ids.rs`) hands out the ids of the blocks the metadata group
//! allocated to this node; `init_producer_id` answers InitProducerId (KIP-360) from them and
//! from the tables the node holds.
//!
//! # Time
//!
//! The table's clock is the highest timestamp it has applied, never a wall clock: replicas
//! applying an entry at different moments, or a node replaying its log a week later, must
//! forget the same producers at the same entry. A producer's last-seen time is the table's
//! clock when its last batch was applied, so a client whose clock lags cannot make its own
//! state look idle; a client whose clock runs ahead moves the table's clock, so the leader
//! must refuse timestamps too far in the future before it proposes (Kafka's
//! `message.timestamp.after.max.ms`). An idle partition forgets nothing until it is written
//! to again; it gains no producers meanwhile either, so its memory stays bounded.

mod check;
mod ids;
mod inflight;
mod snapshot;
mod table;

#[cfg(test)]
mod tests;

/// The Kafka error codes the verdicts map to (the protocol's `ErrorCode` table).
mod error_code {
    pub const NONE: i16 = 0;
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub const REQUEST_TIMED_OUT: i16 = 7;
    pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
    pub const INVALID_REQUEST: i16 = 42;
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    pub const INVALID_RECORD: i16 = 87;
}

pub use check::Verdict;
pub use ids::{ID_BLOCK_IDS_DEFAULT, IdBlockError, IdBlocks, InitOutcome, init_producer_id};
pub use inflight::InFlight;
pub use snapshot::SNAPSHOT_VERSION;
pub use table::{BatchMeta, Forgotten, ProducerTable};

/// Why a leader refused an idempotent producer's batch: nothing was appended. Every layer
/// (group, broker, both protocols) carries it as it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProducerError {
    /// The batch does not follow the producer's last one (a gap, or a retry older than the
    /// last `WINDOW` batches). Kafka's OUT_OF_ORDER_SEQUENCE_NUMBER (45).
    #[error(
        "producer {producer_id}: a batch from sequence {first_seq} is out of order, the partition expects \
         {expected}; batches were lost, so the producer must start a new session"
    )]
    OutOfOrderSequence { producer_id: i64, first_seq: i32, expected: i32 },
    /// A newer session of the producer took over. Kafka's INVALID_PRODUCER_EPOCH (47).
    #[error(
        "producer {producer_id}: epoch {epoch} is fenced, the partition has seen epoch {current}; a newer \
         session of this producer took over"
    )]
    InvalidProducerEpoch { producer_id: i64, epoch: i16, current: i16 },
}

/// The producer id of a batch that is not idempotent (Kafka's `NO_PRODUCER_ID`).
pub const NO_PRODUCER_ID: i64 = -1;
/// Batches remembered per producer: Kafka's `NUM_BATCHES_TO_RETAIN`, which matches the client
/// limit `max.in.flight.requests.per.connection <= 5`.
pub const WINDOW: usize = 5;
/// keel's default idle time before a producer is forgotten: 7 days, as issue 16 asks and as
/// Redpanda's `transactional_id_expiration_ms`. Kafka 3's `producer.id.expiration.ms` is
/// 1 day; keel keeps the longer one, so that a producer idle over a weekend is not taken for
/// a new one (its memory is bounded by `producers_max` either way).
pub const PRODUCER_ID_EXPIRATION_MS_DEFAULT: u64 = 7 * 24 * 60 * 60 * 1000;
/// The longest `producer_id_expiration_ms` a configuration may ask for: 365 days.
pub const PRODUCER_ID_EXPIRATION_MS_LIMIT: u64 = 365 * 24 * 60 * 60 * 1000;
/// Producers tracked per partition by default. A producer with a full window takes about 400
/// bytes with its map entries (measured: 10 000 took 4.06 MB), so the default bounds one
/// partition's table near 4 MB.
pub const PRODUCERS_MAX_DEFAULT: usize = 10_000;
/// The largest `producers_max` a configuration may ask for.
pub const PRODUCERS_MAX_LIMIT: usize = 1 << 20;

/// The producer fields of one RecordBatch v2 header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerBatch {
    /// Header byte 43; -1 (`NO_PRODUCER_ID`) for a batch that is not idempotent.
    pub producer_id: i64,
    /// Header byte 51.
    pub epoch: i16,
    /// Header byte 53: the sequence of the first record.
    pub first_seq: i32,
    /// The offsets the batch takes: lastOffsetDelta (header byte 23) + 1.
    pub record_count: i32,
}

impl ProducerBatch {
    /// A batch that is not idempotent, of `record_count` records.
    pub fn plain(record_count: i32) -> ProducerBatch {
        ProducerBatch { producer_id: NO_PRODUCER_ID, epoch: -1, first_seq: -1, record_count }
    }

    /// The producer fields of a RecordBatch v2 header. A header that is not a v2 batch's
    /// (only a leader bug could store one) is a plain batch, as Kafka reads a batch without a
    /// producer id.
    pub fn from_header(h: &crate::batch::BatchHeader) -> ProducerBatch {
        let record_count = h.last_offset_delta.saturating_add(1);
        if h.magic != crate::batch::MAGIC {
            return ProducerBatch::plain(record_count);
        }
        ProducerBatch { producer_id: h.producer_id, epoch: h.producer_epoch, first_seq: h.base_sequence, record_count }
    }

    /// Whether the producer table tracks this batch: Kafka treats every negative producer
    /// id as "none" (`RecordBatch.hasProducerId`).
    pub fn is_idempotent(&self) -> bool {
        self.producer_id >= 0
    }

    /// Why an idempotent batch's fields cannot be tracked, if they cannot.
    pub(crate) fn malformed(&self) -> Option<&'static str> {
        if self.epoch < 0 {
            Some("an idempotent batch has a negative producer epoch")
        } else if self.first_seq < 0 {
            Some("an idempotent batch has a negative base sequence")
        } else if self.record_count < 1 {
            Some("a batch holds no records")
        } else {
            None
        }
    }

    /// The sequence of the last record (valid once `malformed` is `None`).
    pub fn last_seq(&self) -> i32 {
        sequence_after(self.first_seq, self.record_count - 1)
    }
}

/// The sequence `delta` records after `seq`: sequences run 0..=i32::MAX and wrap to 0, as
/// Kafka's `DefaultRecordBatch.incrementSequence`. Both arguments are non-negative.
pub fn sequence_after(seq: i32, delta: i32) -> i32 {
    let span = i64::from(i32::MAX) + 1;
    let wrapped = (i64::from(seq) + i64::from(delta)).rem_euclid(span);
    i32::try_from(wrapped).expect("a remainder below 2^31 fits in i32")
}

/// Limits of one partition's producer table. Every replica of a partition must use the same
/// values, or they would forget different producers: they come from the cluster settings in
/// the metadata group (`metadata::ClusterSettings`), never from a node's own flags, which
/// only seed those settings when the cluster first starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerConfig {
    producer_id_expiration_ms: u64,
    producers_max: usize,
}

/// Why a producer configuration was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("producers_max must be from 1 to {PRODUCERS_MAX_LIMIT} producers per partition, not {0}")]
    ProducersMax(usize),
    #[error(
        "producer_id_expiration_ms must be from 1 to {PRODUCER_ID_EXPIRATION_MS_LIMIT} (365 days), not {0}: \
         a producer idle for longer is forgotten"
    )]
    ProducerIdExpirationMs(u64),
}

impl ProducerConfig {
    pub fn new(producer_id_expiration_ms: u64, producers_max: usize) -> Result<ProducerConfig, ConfigError> {
        if producers_max == 0 || producers_max > PRODUCERS_MAX_LIMIT {
            return Err(ConfigError::ProducersMax(producers_max));
        }
        if producer_id_expiration_ms == 0 || producer_id_expiration_ms > PRODUCER_ID_EXPIRATION_MS_LIMIT {
            return Err(ConfigError::ProducerIdExpirationMs(producer_id_expiration_ms));
        }
        Ok(ProducerConfig { producer_id_expiration_ms, producers_max })
    }

    pub fn producer_id_expiration_ms(&self) -> u64 {
        self.producer_id_expiration_ms
    }

    pub fn producers_max(&self) -> usize {
        self.producers_max
    }
}

impl Default for ProducerConfig {
    fn default() -> ProducerConfig {
        ProducerConfig {
            producer_id_expiration_ms: PRODUCER_ID_EXPIRATION_MS_DEFAULT,
            producers_max: PRODUCERS_MAX_DEFAULT,
        }
    }
}
