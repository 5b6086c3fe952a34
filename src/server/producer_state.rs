//! A partition group's producer state as its task drives it (`producers/mod.rs`, "Driving
//! it"): every replica applies its committed entries to a `ProducerTable` in index order,
//! reading their batch headers back from the log, so every replica holds the same table and
//! a new leader needs nothing from the old one.
//!
//! On start the table is rebuilt by replaying the log from its first entry. No snapshot is
//! kept yet, so a producer that only entries dropped by retention mention is forgotten at a
//! restart; its next batch is then taken as an unknown producer's (ARCHITECTURE.md).

use tracing::warn;

use crate::batch::BatchHeader;
use crate::ids::{Index, Offset};
use crate::metrics as m;
use crate::producers::{ProducerBatch, ProducerConfig, ProducerTable};
use crate::raft::kind;
use crate::replica::backend::SharedLog;

/// Entry bytes read from the log per read while applying.
const APPLY_READ_BYTES: usize = 1 << 20;

/// The producer table of one partition replica.
pub struct GroupProducers {
    table: ProducerTable,
    /// `table.len()` as last added to the node's `keel_producers_tracked` gauge.
    reported: usize,
}

impl GroupProducers {
    pub fn new(config: ProducerConfig) -> GroupProducers {
        GroupProducers { table: ProducerTable::new(config), reported: 0 }
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
        self.report();
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
