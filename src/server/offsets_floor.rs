//! How far a replica of a `__consumer_offsets` partition may be trimmed. The coordinator
//! (`broker/groups.rs`) writes its whole state as a checkpoint now and then and, once the
//! checkpoint is committed, a marker record naming the offset replay may start from
//! (`groups::checkpoint_marker`). Every replica reads the markers from its own committed
//! log, so followers trim as the leader does, without a message of their own, and a
//! replica trims only what a marker it holds covers: the checkpoint lies before the
//! marker, so it is committed and kept. Replaying what is left gives the whole state, which
//! is what a coordinator elected later (on any replica) rebuilds from.

use tracing::warn;

use crate::batch::BatchReader;
use crate::groups::checkpoint_floor;
use crate::raft::kind;
use crate::replica::backend::SharedLog;

/// Bytes of entries read for markers per call (once a second), so that a replica that
/// restarts with a long log reads it over a few seconds, not all at once in its task.
const SCAN_BYTES_MAX: usize = 4 << 20;
/// Largest inflated batch read (the coordinator writes uncompressed ones).
const INFLATED_BYTES_MAX: usize = 64 << 20;

#[derive(Debug, Default)]
pub struct OffsetsFloor {
    /// The last index read for markers.
    scanned: u64,
    /// The highest floor read: an offset replay may start from.
    floor: u64,
}

impl OffsetsFloor {
    pub fn new() -> OffsetsFloor {
        OffsetsFloor::default()
    }

    /// The index to drop the log before, if the markers committed up to `safe` allow it:
    /// whole sealed segments, all at or below `safe`, that end before the entry holding the
    /// floor.
    pub fn drop_before(&mut self, log: &SharedLog, safe: u64) -> Option<u64> {
        self.scan(log, safe);
        let log = log.read();
        if self.floor <= log.start_offset() {
            return None;
        }
        let keep = log.locate_offset(self.floor).ok().flatten()?;
        let mut drop_before = None;
        for s in log.segments().iter().take_while(|s| s.sealed && s.last_index < keep && s.last_index <= safe) {
            drop_before = Some(s.last_index + 1);
        }
        drop_before
    }

    /// Reads the markers of the entries after the last read, up to `safe` and at most
    /// `SCAN_BYTES_MAX` of them.
    fn scan(&mut self, log: &SharedLog, safe: u64) {
        let log = log.read();
        let from = (self.scanned + 1).max(log.first_index());
        if from > safe {
            return;
        }
        let mut entries = Vec::new();
        if let Err(e) = log.read(from, SCAN_BYTES_MAX, &mut entries) {
            // The group's repair finds and cuts damage; the entries are read again after.
            warn!(index = from, error = %e, "cannot read __consumer_offsets entries for checkpoint markers");
            return;
        }
        for entry in entries.iter().take_while(|e| e.index() <= safe) {
            self.scanned = entry.index();
            if entry.kind() != kind::DATA {
                continue;
            }
            let Ok(reader) = BatchReader::new(entry.payload(), INFLATED_BYTES_MAX) else { continue };
            for read in reader.flatten() {
                let key = read.record.key.unwrap_or_default();
                if let Some(floor) = checkpoint_floor(&key, read.record.value.as_deref()) {
                    self.floor = self.floor.max(floor);
                }
            }
        }
    }
}
