//! Group commit: `begin_sync` under the log's write lock, `run` on any thread
//! without it, `finish_sync` under the lock again.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::error::Error;

/// Set once, by the first failed write or fsync: the log then refuses writes.
pub(crate) type Poison = Arc<OnceLock<&'static str>>;

/// The fsyncs that make every entry appended before `begin_sync` durable.
/// `Send + 'static`: it holds its own handles to the files, not the log.
#[must_use = "a sync job does nothing until it is run"]
pub struct SyncJob {
    pub(crate) files: Vec<(Arc<File>, PathBuf)>,
    pub(crate) covers: u64,
    pub(crate) seq: u64,
    /// Lowered by truncations and resets that happen while the job runs.
    pub(crate) floor: Arc<AtomicU64>,
    pub(crate) poison: Poison,
}

/// Proof that a `SyncJob` ran; hand it to `Log::finish_sync`.
#[must_use = "durability is only recorded by Log::finish_sync"]
pub struct SyncDone {
    pub(crate) covers: u64,
    pub(crate) seq: u64,
    pub(crate) floor: Arc<AtomicU64>,
}

impl SyncJob {
    /// The last index this job makes durable (unless the log is truncated meanwhile).
    pub fn covers(&self) -> u64 {
        self.covers
    }

    /// Runs the fsyncs (data files first, then index files). After an error nothing
    /// since the last successful sync is known to be durable (an fsync error may have
    /// dropped dirty pages), so the log is poisoned: drop it and reopen to recover.
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
        Ok(SyncDone { covers: self.covers, seq: self.seq, floor: self.floor })
    }
}

impl SyncDone {
    /// The index this job made durable: what it covered, cut at any truncation since it began.
    pub(crate) fn durable(&self) -> u64 {
        self.covers.min(self.floor.load(Ordering::Acquire))
    }
}
