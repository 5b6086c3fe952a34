//! `InFlight`: the batches a leader proposed and has not applied yet, on top of the table.
//!
//! A client pipelines up to 5 batches; the second arrives before the first commits, so the
//! leader must check it against the first, and a retry of a batch still in flight must not
//! be proposed twice. Redpanda's `producer_state` keeps the same `_inflight_requests`.
//!
//! The layer belongs to one leader term. A new leader starts an empty one and refuses to check
//! until its table has applied the leader's own first entry: by then every entry of earlier
//! terms still in its log is committed and applied, so the table holds everything a previous
//! leader appended, and nothing it proposed is lost from view (Raft §5.4.2: a leader knows
//! what is committed only once an entry of its own term is).

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::ids::Index;

use super::check::{Seen, Verdict, decide};
use super::table::ProducerTable;
use super::{ProducerBatch, WINDOW};

/// A proposed batch of one producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Proposed {
    epoch: i16,
    first_seq: i32,
    last_seq: i32,
    index: Index,
}

/// The leader's proposed, not yet applied, idempotent batches.
#[derive(Clone, Debug)]
pub struct InFlight {
    /// The index of this leader's first entry (the no-op of its term).
    ready_at: Index,
    batches_max: usize,
    /// The newest `WINDOW` proposed batches of each producer, oldest first. Older ones can
    /// neither be duplicates (out of the window) nor the last sequence, so they are not kept.
    producers: HashMap<i64, VecDeque<Proposed>>,
    /// Every kept batch by its index, to forget applied ones in order.
    by_index: BTreeMap<Index, i64>,
}

impl InFlight {
    /// The layer of a leader whose term starts at `ready_at` (the index of its no-op), holding
    /// at most `batches_max` batches.
    pub fn new(ready_at: Index, batches_max: usize) -> InFlight {
        InFlight { ready_at, batches_max, producers: HashMap::new(), by_index: BTreeMap::new() }
    }

    /// Batches proposed and not yet forgotten.
    pub fn len(&self) -> usize {
        self.by_index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_index.is_empty()
    }

    /// What to do with `batch`, given the committed `table` and what this leader proposed.
    pub fn check(&self, table: &ProducerTable, batch: &ProducerBatch) -> Verdict {
        // Batches that are not idempotent need nothing from the table.
        if batch.is_idempotent() && table.applied_index() < self.ready_at {
            return Verdict::NotReady;
        }
        let applied = table.applied_index();
        let proposed = self.producers.get(&batch.producer_id).into_iter().flatten().filter(move |p| p.index > applied);
        let in_flight = proposed
            .map(|p| (p.epoch, Seen::InFlight { first_seq: p.first_seq, last_seq: p.last_seq, index: p.index }));
        let verdict = decide(batch, table.seen(batch.producer_id), in_flight);
        if verdict == Verdict::Append && batch.is_idempotent() && self.len() >= self.batches_max {
            return Verdict::Busy;
        }
        verdict
    }

    /// Records that `batch`, checked `Append`, was proposed at `index`. Batches that are not
    /// idempotent are not tracked.
    pub fn proposed(&mut self, index: Index, batch: &ProducerBatch) {
        if !batch.is_idempotent() || batch.malformed().is_some() {
            return;
        }
        let batches = self.producers.entry(batch.producer_id).or_default();
        debug_assert!(batches.back().is_none_or(|b| b.index < index), "proposals come in index order");
        if batches.len() == WINDOW {
            let oldest = batches.pop_front().expect("a full window has an oldest batch");
            self.by_index.remove(&oldest.index);
        }
        let last_seq = batch.last_seq();
        batches.push_back(Proposed { epoch: batch.epoch, first_seq: batch.first_seq, last_seq, index });
        self.by_index.insert(index, batch.producer_id);
    }

    /// Forgets the batches the table has applied (`applied` = `table.applied_index()`): the
    /// table answers for them now.
    pub fn forget_applied(&mut self, applied: Index) {
        while let Some(entry) = self.by_index.first_entry() {
            if *entry.key() > applied {
                break;
            }
            let producer_id = entry.remove();
            let batches = self.producers.get_mut(&producer_id).expect("an indexed batch has its producer");
            batches.pop_front();
            if batches.is_empty() {
                self.producers.remove(&producer_id);
            }
        }
    }
}
