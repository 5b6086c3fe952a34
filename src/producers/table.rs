//! `ProducerTable`: what one partition's committed log says about its producers.
//!
//! Bounded two ways, both decided at `apply` from the log alone, so every replica forgets the
//! same producers at the same entry:
//! - expiry: a producer idle for longer than `producer_id_expiration_ms` of log time;
//! - `producers_max`: once more producers are tracked, the least recently active one is
//!   evicted. Refusing new producers instead would lock every new client out of a partition
//!   for up to the expiry time after a burst of short-lived ones (each `keel produce` run is a
//!   new producer). Eviction costs only the least recently active producer its window: if it
//!   is still alive, its next batch is taken as an unknown producer's, and a retry of its last
//!   batch could then be appended twice. Redpanda evicts the same way
//!   (`max_concurrent_producer_ids`). `Forgotten` counts both, for the node's metrics.
//!
//! Recency is the index of a producer's last applied batch: unique per producer, the same on
//! every replica, and in the order of last-seen times (the table's clock never goes back), so
//! one ordered map serves both expiry and eviction.

use std::collections::BTreeMap;

use crate::ids::{Index, Offset};

use super::check::{Seen, Verdict, decide};
use super::{ProducerBatch, ProducerConfig, WINDOW};

/// One committed batch of a producer, as a duplicate is answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: Offset,
    pub last_offset: Offset,
    /// The timestamp the batch was applied with (its maxTimestamp).
    pub timestamp_ms: i64,
}

/// The last `WINDOW` batches of one producer's current epoch, oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Window {
    batches: [BatchMeta; WINDOW],
    len: usize,
}

impl Window {
    pub(super) fn new() -> Window {
        Window { batches: [BatchMeta::default(); WINDOW], len: 0 }
    }

    pub(super) fn push(&mut self, batch: BatchMeta) {
        if self.len == WINDOW {
            self.batches.rotate_left(1);
            self.batches[WINDOW - 1] = batch;
        } else {
            self.batches[self.len] = batch;
            self.len += 1;
        }
    }

    pub(super) fn as_slice(&self) -> &[BatchMeta] {
        &self.batches[..self.len]
    }
}

/// What the table holds of one producer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Producer {
    pub(super) epoch: i16,
    /// Never empty: a producer enters the table with a batch.
    pub(super) window: Window,
    /// The index of its last applied batch: its place in the recency order.
    pub(super) last_index: Index,
    /// The table's clock when its last batch was applied.
    pub(super) last_seen_ms: i64,
}

/// Producers forgotten by one `apply`, for the node's metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Forgotten {
    /// Idle for longer than `producer_id_expiration_ms`.
    pub expired: usize,
    /// The least recently active, evicted at `producers_max`.
    pub evicted: usize,
}

/// The producer state of one partition, derived from its committed log only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerTable {
    pub(super) config: ProducerConfig,
    /// The last entry applied: the table is the log's state up to and including it.
    pub(super) applied: Index,
    /// The highest timestamp applied; never goes back.
    pub(super) clock_ms: i64,
    pub(super) producers: BTreeMap<i64, Producer>,
    /// Producer ids by the index of their last batch, least recently active first.
    pub(super) by_recency: BTreeMap<Index, i64>,
}

impl ProducerTable {
    /// The table of an empty log.
    pub fn new(config: ProducerConfig) -> ProducerTable {
        ProducerTable {
            config,
            applied: Index(0),
            clock_ms: 0,
            producers: BTreeMap::new(),
            by_recency: BTreeMap::new(),
        }
    }

    pub fn config(&self) -> ProducerConfig {
        self.config
    }

    /// The last entry applied.
    pub fn applied_index(&self) -> Index {
        self.applied
    }

    /// The log's time: the highest timestamp applied.
    pub fn clock_ms(&self) -> i64 {
        self.clock_ms
    }

    /// Producers tracked (a gauge for the node's metrics).
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// The epoch the log last saw for `producer_id`, if it is tracked.
    pub fn epoch_of(&self, producer_id: i64) -> Option<i16> {
        self.producers.get(&producer_id).map(|p| p.epoch)
    }

    /// The last batches of `producer_id`'s current epoch, oldest first.
    pub fn batches_of(&self, producer_id: i64) -> Option<&[BatchMeta]> {
        self.producers.get(&producer_id).map(|p| p.window.as_slice())
    }

    /// What to do with `batch` given only what is committed. The leader checks with
    /// `InFlight::check`, which adds what it proposed and has not applied yet.
    pub fn check(&self, batch: &ProducerBatch) -> Verdict {
        decide(batch, self.seen(batch.producer_id), std::iter::empty())
    }

    /// What the table knows of a producer, for `decide`.
    pub(super) fn seen(&self, producer_id: i64) -> Option<(i16, impl DoubleEndedIterator<Item = Seen> + '_)> {
        let producer = self.producers.get(&producer_id)?;
        Some((producer.epoch, producer.window.as_slice().iter().map(|b| Seen::Committed(*b))))
    }

    /// Applies the committed data entry at `index`: its batch's producer fields, the offset of
    /// its first record and its timestamp (the batch's maxTimestamp). Every replica calls it
    /// for every data entry, idempotent or not, in log order. An index the table already
    /// covers changes nothing. The log is the truth: a batch is recorded even if it breaks a
    /// rule `check` enforces (only a leader bug could commit one), so replicas never diverge.
    pub fn apply(&mut self, index: Index, batch: &ProducerBatch, base_offset: Offset, timestamp_ms: i64) -> Forgotten {
        if index <= self.applied {
            return Forgotten::default();
        }
        self.applied = index;
        self.clock_ms = self.clock_ms.max(timestamp_ms);
        if batch.is_idempotent() && batch.malformed().is_none() {
            self.record(index, batch, base_offset, timestamp_ms);
        }
        let expired = self.expire();
        let evicted = self.evict();
        Forgotten { expired, evicted }
    }

    /// Applies a committed entry that carries no batch (a no-op, a configuration).
    pub fn advance(&mut self, index: Index) {
        self.applied = self.applied.max(index);
    }

    fn record(&mut self, index: Index, batch: &ProducerBatch, base_offset: Offset, timestamp_ms: i64) {
        let delta = u64::try_from(batch.record_count - 1).expect("record_count >= 1 was checked");
        let meta = BatchMeta {
            first_seq: batch.first_seq,
            last_seq: batch.last_seq(),
            base_offset,
            last_offset: Offset(base_offset.get().saturating_add(delta)),
            timestamp_ms,
        };
        let clock_ms = self.clock_ms;
        let producer = self.producers.entry(batch.producer_id).or_insert_with(|| Producer {
            epoch: batch.epoch,
            window: Window::new(),
            last_index: index,
            last_seen_ms: clock_ms,
        });
        // A new epoch starts a new sequence: the old epoch's batches can no longer be
        // duplicates (Kafka's `ProducerStateEntry.maybeUpdateProducerEpoch`).
        if producer.epoch != batch.epoch {
            producer.epoch = batch.epoch;
            producer.window = Window::new();
        }
        producer.window.push(meta);
        self.by_recency.remove(&producer.last_index);
        producer.last_index = index;
        producer.last_seen_ms = clock_ms;
        self.by_recency.insert(index, batch.producer_id);
    }

    /// Forgets the producers idle for longer than the expiry, least recently active first.
    fn expire(&mut self) -> usize {
        let mut expired = 0;
        while let Some((&index, &producer_id)) = self.by_recency.first_key_value() {
            let last_seen_ms = self.producers[&producer_id].last_seen_ms;
            let idle_ms = self.clock_ms.saturating_sub(last_seen_ms).unsigned_abs();
            if idle_ms <= self.config.producer_id_expiration_ms() {
                break;
            }
            self.forget(index, producer_id);
            expired += 1;
        }
        expired
    }

    /// Evicts the least recently active producers above `producers_max`.
    pub(super) fn evict(&mut self) -> usize {
        let mut evicted = 0;
        while self.producers.len() > self.config.producers_max() {
            let Some((&index, &producer_id)) = self.by_recency.first_key_value() else { break };
            self.forget(index, producer_id);
            evicted += 1;
        }
        evicted
    }

    fn forget(&mut self, index: Index, producer_id: i64) {
        self.by_recency.remove(&index);
        self.producers.remove(&producer_id);
    }
}
