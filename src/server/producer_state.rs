//! A partition group's producer state as its task drives it (`producers/mod.rs`, "Driving
//! it"): every replica applies its committed entries to a `ProducerTable` in index order,
//! reading their batch headers back from the log, so every replica holds the same table and
//! a new leader needs nothing from the old one. The leader checks each batch before it
//! proposes it against the table and the batches it proposed since (`InFlight`, one per
//! term, dropped when leadership is lost).
//!
//! The table is snapshotted to `producers`, beside the group's `log/` directory, every
//! `SNAPSHOT_EVERY_ENTRIES` applied entries and whenever retention would drop entries the
//! latest snapshot does not cover (`retention_floor`): the log after the snapshot's index
//! is always kept. On start the table is restored from the snapshot and the committed
//! entries after it are applied, which gives the table of a replica that never stopped. A
//! snapshot that cannot be read is logged and the table rebuilt from the log's first entry;
//! so is a log that starts past the snapshot (a follower reset to its leader's log start,
//! which has no way yet to receive the leader's producer snapshot): producers only the
//! missing entries mention are then unknown, and Kafka's rules take their next batch at
//! any sequence.
//!
//! The file `groups/<group>/producers` is a `segments::state_file`, replaced atomically
//! (written to a temporary file, fsync'd, renamed over the old one, the directory fsync'd:
//! a crash leaves the old snapshot or the new one). Integers little-endian:
//!
//! ```text
//! offset size field
//!      0    4 magic     b"KEEL"
//!      4    1 kind      4 (a producer snapshot; 1 identity, 2 hard state, 3 Raft snapshot)
//!      5    1 version   1, `producers::SNAPSHOT_VERSION` (a file of another version is not used)
//!      6    4 len       u32: payload bytes
//!     10  len payload   the table: `ProducerTable::snapshot`, whose bytes `producers/snapshot.rs`
//!                       documents (its own version byte, the applied index it covers, the
//!                       table's clock, then each producer and its last 5 batches)
//! 10+len    4 crc       CRC-32 (IEEE) of bytes 0..10+len
//! ```

use std::path::{Path, PathBuf};

use segments::state_file::{self, StateFileError};
use tracing::{info, warn};

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
/// The producer snapshot's file name, in the group's directory (beside `log/`).
pub const PRODUCERS_FILE: &str = "producers";
/// `segments::state_file` kinds: 1 identity, 2 hard state, 3 Raft snapshot, 4 this.
const KIND_PRODUCERS: u8 = 4;
/// Entries applied after the latest snapshot before housekeeping writes the next: bounds
/// the replay at a start. A table of a full `producers_max` is about 4 MB to write.
pub const SNAPSHOT_EVERY_ENTRIES: u64 = 50_000;

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
    /// Where the snapshot is kept (`None`: nowhere, the table lives in memory only).
    path: Option<PathBuf>,
    /// The index the snapshot on disk covers (0: none).
    snapshot_index: u64,
}

impl GroupProducers {
    /// A table kept in memory only: rebuilt from the log's first entry at each start.
    pub fn new(config: ProducerConfig) -> GroupProducers {
        let table = ProducerTable::new(config);
        GroupProducers { table, in_flight: None, reported: 0, path: None, snapshot_index: 0 }
    }

    /// The table of the group whose log is in `log_dir`, restored from the snapshot beside
    /// it if there is one that can be read; `apply_committed` then applies what follows.
    pub fn open(config: ProducerConfig, log_dir: &Path) -> GroupProducers {
        let path = log_dir.parent().unwrap_or(log_dir).join(PRODUCERS_FILE);
        let mut producers = GroupProducers::new(config);
        match read_snapshot(&path, config) {
            Ok(Some(table)) => {
                producers.snapshot_index = table.applied_index().get();
                producers.table = table;
            }
            Ok(None) => {}
            Err(why) => {
                warn!(path = %path.display(), %why, "the producer snapshot is not used; rebuilding from the log")
            }
        }
        producers.path = Some(path);
        producers
    }

    /// The index the snapshot on disk covers (0: none).
    pub fn snapshot_index(&self) -> u64 {
        self.snapshot_index
    }

    /// Writes the table to the snapshot file (durable on return).
    pub fn save_snapshot(&mut self) -> Result<(), StateFileError> {
        let Some(path) = &self.path else { return Ok(()) };
        let index = self.table.applied_index().get();
        if index == self.snapshot_index {
            return Ok(());
        }
        state_file::write(path, KIND_PRODUCERS, crate::producers::SNAPSHOT_VERSION, &self.table.snapshot())?;
        self.snapshot_index = index;
        Ok(())
    }

    /// Housekeeping: a snapshot once `SNAPSHOT_EVERY_ENTRIES` entries were applied after
    /// the latest.
    pub fn snapshot_if_due(&mut self) {
        if self.table.applied_index().get() >= self.snapshot_index + SNAPSHOT_EVERY_ENTRIES
            && let Err(e) = self.save_snapshot()
        {
            warn!(error = %e, "cannot write the producer snapshot");
        }
    }

    /// Where retention may drop the log before, when it would drop before `index`: the
    /// entries after the snapshot's index must stay, so a snapshot is written first if the
    /// latest does not reach `index - 1`.
    pub fn retention_floor(&mut self, index: u64) -> u64 {
        if self.path.is_none() {
            return index;
        }
        if self.snapshot_index + 1 < index {
            match self.save_snapshot() {
                Ok(()) => info!(index = self.snapshot_index, "producer snapshot written before retention"),
                Err(e) => warn!(error = %e, "cannot write the producer snapshot; retention waits"),
            }
        }
        index.min(self.snapshot_index + 1)
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

/// The table the snapshot at `path` holds: `None` if there is no file.
fn read_snapshot(path: &Path, config: ProducerConfig) -> Result<Option<ProducerTable>, String> {
    let Some((version, payload)) = state_file::read(path, KIND_PRODUCERS).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    if version != crate::producers::SNAPSHOT_VERSION {
        return Err(format!("version {version}, this build reads {}", crate::producers::SNAPSHOT_VERSION));
    }
    ProducerTable::restore(payload.into(), config).map(Some).map_err(|e| e.to_string())
}

impl Drop for GroupProducers {
    /// A group that stops takes its producers out of the node's sum.
    fn drop(&mut self) {
        metrics::gauge!(m::PRODUCERS_TRACKED).decrement(self.reported as f64);
    }
}

#[cfg(test)]
mod tests {
    use segments::{Entry, EntryMeta, Log};

    use super::*;
    use crate::batch::{BatchBuilder, Compression, Record};

    /// A partition's log of `n` data entries: batches of 1-3 records from five idempotent
    /// producers in turn, every fourth entry a batch without a producer id.
    fn write_log(dir: &Path, n: u64) -> SharedLog {
        let config = segments::Config { segment_bytes: 4096, entry_bytes_max: 1024, ..segments::Config::default() };
        let (mut log, _) = Log::open(dir, config).unwrap();
        let mut next_seq = [0i32; 5];
        let mut offset = 0u64;
        let entries: Vec<Entry> = (1..=n)
            .map(|index| {
                let records = 1 + (index % 3) as i32;
                let producer = (index % 5) as usize;
                let mut builder = BatchBuilder::new(Compression::None);
                if index % 4 != 0 {
                    builder = builder.producer(100 + producer as i64, 0, next_seq[producer]);
                    next_seq[producer] += records;
                }
                for r in 0..records {
                    let record = Record { timestamp_ms: 1_000 * index as i64, ..Record::new(format!("{index}-{r}")) };
                    builder.push(&record).unwrap();
                }
                let meta =
                    EntryMeta { index, term: 1, kind: kind::DATA, base_offset: offset, record_count: records as u32 };
                offset += records as u64;
                Entry::encode(meta, &builder.finish())
            })
            .collect();
        log.append(&entries).unwrap();
        log.sync().unwrap();
        SharedLog::new(log)
    }

    /// A group directory with a log of `n` entries: the directory, its `log/` and the log.
    fn group_dir(n: u64) -> (tempfile::TempDir, PathBuf, SharedLog) {
        let dir = tempfile::tempdir().unwrap();
        let log_dir = dir.path().join("log");
        let log = write_log(&log_dir, n);
        (dir, log_dir, log)
    }

    #[test]
    fn a_table_restored_from_its_snapshot_and_the_log_after_it_equals_one_that_never_restarted() {
        let (_dir, log_dir, log) = group_dir(300);
        let config = ProducerConfig::default();
        let mut never = GroupProducers::new(config);
        never.apply_committed(&log, 300);
        assert_eq!(never.table().len(), 5);

        // Applied through 120, then retention wants the log dropped up to 200: a snapshot at
        // 120 is written first, and nothing after it is dropped.
        let mut first = GroupProducers::open(config, &log_dir);
        first.apply_committed(&log, 120);
        assert_eq!(first.retention_floor(200), 121);
        assert_eq!(first.snapshot_index(), 120);
        let dropped = log.write_lock().drop_before(121).unwrap();
        assert!(dropped > 0, "retention dropped segments");
        let start = log.read().first_index();
        assert!(start > 1 && start <= 121, "the log starts at {start}");
        drop(first);

        let mut restarted = GroupProducers::open(config, &log_dir);
        assert_eq!(restarted.table().applied_index(), Index(120), "restored from the snapshot");
        restarted.apply_committed(&log, 300);
        assert_eq!(restarted.table(), never.table());
    }

    #[test]
    fn a_snapshot_that_cannot_be_read_is_not_used_and_the_log_is_replayed() {
        let (dir, log_dir, log) = group_dir(40);
        let config = ProducerConfig::default();
        let mut first = GroupProducers::open(config, &log_dir);
        first.apply_committed(&log, 40);
        first.save_snapshot().unwrap();
        let path = dir.path().join(PRODUCERS_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 5;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let mut restarted = GroupProducers::open(config, &log_dir);
        assert_eq!(restarted.table().applied_index(), Index(0), "the damaged snapshot is not used");
        restarted.apply_committed(&log, 40);
        assert_eq!(restarted.table(), first.table());
    }

    #[test]
    fn housekeeping_snapshots_every_so_many_entries() {
        let (_dir, log_dir, log) = group_dir(10);
        let mut producers = GroupProducers::open(ProducerConfig::default(), &log_dir);
        producers.apply_committed(&log, 10);
        producers.snapshot_if_due();
        assert_eq!(producers.snapshot_index(), 0, "10 entries are not SNAPSHOT_EVERY_ENTRIES");
        producers.table.advance(Index(SNAPSHOT_EVERY_ENTRIES));
        producers.snapshot_if_due();
        assert_eq!(producers.snapshot_index(), SNAPSHOT_EVERY_ENTRIES);
    }
}
