//! A partition group's producer state as its task drives it (`producers/mod.rs`, "Driving
//! it"): every replica applies its committed entries to a `ProducerTable` in index order,
//! reading their batch headers back from the log, so every replica holds the same table and
//! a new leader needs nothing from the old one. The leader checks each batch before it
//! proposes it against the table and the batches it proposed since (`InFlight`, one per
//! term, dropped when leadership is lost).
//!
//! On start the table is rebuilt by replaying the log from its first entry. No snapshot is
//! kept yet, so a producer that only entries dropped by retention mention is forgotten at a
//! restart; its next batch is then taken as an unknown producer's (ARCHITECTURE.md).

use tracing::warn;

use super::produce::{ProduceError, ProduceResult};
use crate::batch::BatchHeader;
use crate::ids::{Index, Offset};
use crate::metrics as m;
use crate::producers::{InFlight, ProducerBatch, ProducerConfig, ProducerError, ProducerTable, Verdict};
use crate::raft::{Raft, kind};
use crate::replica::backend::SharedLog;

/// Entry bytes read from the log per read while applying.
const APPLY_READ_BYTES: usize = 1 << 20;
/// Idempotent batches a leader holds proposed and not yet applied; past it, produce is
/// answered busy. Raft's `uncommitted_bytes_max` bounds the bytes; this bounds the entries.
pub const INFLIGHT_BATCHES_MAX: usize = 8192;

/// What the leader does with a produced batch, once checked.
#[derive(Debug)]
pub enum Admission {
    Propose,
    /// Answer at once: a retry of a committed batch, with its original offsets.
    Answer(ProduceResult),
    /// Answer as the batch pending at this index is answered.
    Join(u64),
    Refuse(ProduceError),
}

/// The producer table of one partition replica.
pub struct GroupProducers {
    table: ProducerTable,
    /// The leader's batches proposed in term `.0` and not yet applied.
    in_flight: Option<(u64, InFlight)>,
    /// `table.len()` as last added to the node's `keel_producers_tracked` gauge.
    reported: usize,
}

impl GroupProducers {
    pub fn new(config: ProducerConfig) -> GroupProducers {
        GroupProducers { table: ProducerTable::new(config), in_flight: None, reported: 0 }
    }

    pub fn table(&self) -> &ProducerTable {
        &self.table
    }

    /// Applies the committed entries after the table's last through `commit`, in order. A
    /// log whose first entry lies past the table's next one (a reset to the leader's log, or
    /// retention on a replica that restarted) is replayed from its first entry on a new table.
    pub fn apply_committed(&mut self, log: &SharedLog, commit: u64) {
        let first = log.read().first_index();
        if first > self.table.applied_index().get() + 1 {
            self.table = ProducerTable::new(self.table.config());
            self.table.advance(Index(first - 1));
        }
        let mut entries = Vec::new();
        while self.table.applied_index().get() < commit {
            entries.clear();
            let from = self.table.applied_index().get() + 1;
            if let Err(e) = log.read().read(from, APPLY_READ_BYTES, &mut entries) {
                // The group's repair finds and cuts damage; the entries come back from the
                // leader and are applied then.
                warn!(index = from, error = %e, "cannot read entries to apply to the producer table");
                break;
            }
            if entries.is_empty() {
                break;
            }
            for entry in entries.iter().take_while(|e| e.index() <= commit) {
                let index = Index(entry.index());
                let header = (entry.kind() == kind::DATA).then(|| BatchHeader::parse(&entry.payload()).ok()).flatten();
                match header {
                    Some(h) => {
                        let batch = ProducerBatch::from_header(&h);
                        self.table.apply(index, &batch, Offset(entry.base_offset()), h.max_timestamp);
                    }
                    None => self.table.advance(index),
                }
            }
        }
        if let Some((_, in_flight)) = &mut self.in_flight {
            in_flight.forget_applied(self.table.applied_index());
        }
        self.report();
    }

    /// What the leader does with `batch` (`producers::Verdict`). A node that does not lead
    /// says `Append`: proposing will refuse it.
    fn check(&mut self, raft: &Raft, batch: &ProducerBatch) -> Verdict {
        let Some(term_start) = raft.term_start() else { return Verdict::Append };
        let term = raft.term();
        if self.in_flight.as_ref().is_none_or(|(t, _)| *t != term) {
            self.in_flight = Some((term, InFlight::new(Index(term_start), INFLIGHT_BATCHES_MAX)));
        }
        let (_, in_flight) = self.in_flight.as_ref().expect("made above");
        in_flight.check(&self.table, batch)
    }

    /// `check`, with the verdict turned into what the group does, and counted.
    pub fn admit(&mut self, raft: &Raft, batch: &ProducerBatch) -> Admission {
        let error = match self.check(raft, batch) {
            Verdict::Append => return Admission::Propose,
            Verdict::Duplicate { base_offset, last_offset } => {
                metrics::counter!(m::PRODUCER_DUPLICATES).increment(1);
                let count =
                    u32::try_from(last_offset.get() - base_offset.get() + 1).expect("a batch's offsets fit u32");
                return Admission::Answer(Ok((base_offset.get(), count)));
            }
            Verdict::InFlightDuplicate { index } => {
                metrics::counter!(m::PRODUCER_DUPLICATES).increment(1);
                return Admission::Join(index.get());
            }
            Verdict::OutOfOrder { expected } => {
                metrics::counter!(m::PRODUCER_OUT_OF_ORDER).increment(1);
                let (producer_id, first_seq) = (batch.producer_id, batch.first_seq);
                ProducerError::OutOfOrderSequence { producer_id, first_seq, expected }.into()
            }
            Verdict::FencedEpoch { current } => {
                ProducerError::InvalidProducerEpoch { producer_id: batch.producer_id, epoch: batch.epoch, current }
                    .into()
            }
            Verdict::Invalid(why) => ProduceError::Refused(why.into()),
            Verdict::NotReady => {
                ProduceError::Busy("the new leader is still applying its log before it checks producers".into())
            }
            Verdict::Busy => ProduceError::Busy(format!(
                "the leader holds {INFLIGHT_BATCHES_MAX} idempotent batches waiting to commit (inflight_batches_max)"
            )),
        };
        Admission::Refuse(error)
    }

    /// `batch`, checked `Append`, was proposed at `index`.
    pub fn proposed(&mut self, index: u64, batch: &ProducerBatch) {
        if let Some((_, in_flight)) = &mut self.in_flight {
            in_flight.proposed(Index(index), batch);
        }
    }

    /// This node stopped leading: what it proposed is answered as outcome unknown, and the
    /// client's retry meets the next leader's table.
    pub fn leadership_lost(&mut self) {
        self.in_flight = None;
    }

    /// Brings the node's gauge up to date with this table's size.
    fn report(&mut self) {
        let now = self.table.len();
        if now != self.reported {
            metrics::gauge!(m::PRODUCERS_TRACKED).increment(now as f64 - self.reported as f64);
            self.reported = now;
        }
    }
}

impl Drop for GroupProducers {
    /// A group that stops takes its producers out of the node's sum.
    fn drop(&mut self) {
        metrics::gauge!(m::PRODUCERS_TRACKED).decrement(self.reported as f64);
    }
}
