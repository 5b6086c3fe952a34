//! Group commit: `begin_sync` under the log's write lock, `run` on any thread
//! without it, `finish_sync` under the lock again.

use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::Error;
use crate::format::SyncMark;
use crate::sync_mark::MarkFile;

/// Set once, by the first failed write or fsync: the log then refuses writes.
pub(crate) type Poison = Arc<OnceLock<&'static str>>;

/// The fsyncs that make every entry appended before `begin_sync` durable.
/// `Send + 'static`: it holds its own handles to the files, not the log.
#[must_use = "a sync job does nothing until it is run"]
pub struct SyncJob {
    pub(crate) files: Vec<(Arc<File>, PathBuf)>,
    pub(crate) covers: u64,
    /// The term of entry `covers`.
    pub(crate) covers_term: u64,
    pub(crate) seq: u64,
    /// Lowered by truncations and resets that happen while the job runs: the last
    /// entry they kept (`Floor::NONE` while there was none).
    pub(crate) floor: Floor,
    pub(crate) poison: Poison,
    pub(crate) mark: Arc<Mutex<MarkFile>>,
}

/// Proof that a `SyncJob` ran; hand it to `Log::finish_sync`.
#[must_use = "durability is only recorded by Log::finish_sync"]
pub struct SyncDone {
    pub(crate) covers: u64,
    pub(crate) seq: u64,
    pub(crate) floor: Floor,
}

/// The lowest truncation point since a sync job began, with the term of the entry kept
/// there (so the job can raise the sync mark to it).
pub(crate) type Floor = Arc<Mutex<SyncMark>>;

/// A floor no truncation lowered yet.
pub(crate) const NO_FLOOR: SyncMark = SyncMark { index: u64::MAX, term: 0 };

/// Lowers `floor` to `to`, if it is higher.
pub(crate) fn lower_floor(floor: &Floor, to: SyncMark) {
    let mut floor = floor.lock().unwrap_or_else(|e| e.into_inner());
    if to.index < floor.index {
        *floor = to;
    }
}

fn floor_of(floor: &Floor) -> SyncMark {
    *floor.lock().unwrap_or_else(|e| e.into_inner())
}

impl SyncJob {
    /// The last index this job makes durable (unless the log is truncated meanwhile).
    pub fn covers(&self) -> u64 {
        self.covers
    }

    /// Runs the fsyncs (data files first, then index files), then writes and fsyncs the
    /// sync mark if this job covers more than it says. After an error nothing since the
    /// last successful sync is known to be durable (an fsync error may have dropped dirty
    /// pages), so the log is poisoned: drop it and reopen to recover.
    pub fn run(self) -> Result<SyncDone, Error> {
        if let Some(op) = self.poison.get() {
            return Err(Error::Poisoned { op });
        }
        for (file, path) in &self.files {
            if let Err(e) = file.sync_data() {
                let _ = self.poison.set("fsync");
                return Err(Error::io("fsync", path.clone())(e));
            }
        }
        self.write_mark()?;
        Ok(SyncDone { covers: self.covers, seq: self.seq, floor: self.floor })
    }
}

impl SyncJob {
    /// Raises the sync mark to what this job made durable, before the caller hears of it
    /// (and acknowledges entries): `covers`, or the last entry a truncation since
    /// `begin_sync` kept. Under the mark's lock: a truncation lowers the floor before it
    /// takes that lock to lower the mark, so the two never disagree.
    fn write_mark(&self) -> Result<(), Error> {
        let mut mark = self.mark.lock().unwrap_or_else(|e| e.into_inner());
        let floor = floor_of(&self.floor);
        let durable =
            if floor.index < self.covers { floor } else { SyncMark { index: self.covers, term: self.covers_term } };
        if durable.index <= mark.mark().index {
            return Ok(());
        }
        mark.write(durable).inspect_err(|_| {
            let _ = self.poison.set("write the sync mark");
        })
    }
}

impl SyncDone {
    /// The index this job made durable: what it covered, cut at any truncation since it began.
    pub(crate) fn durable(&self) -> u64 {
        self.covers.min(floor_of(&self.floor).index)
    }
}
