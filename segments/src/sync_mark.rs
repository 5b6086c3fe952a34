//! The sync-mark file: the highest entry a finished sync made durable, written (and
//! fsync'd) by every sync that covers more, after the data it names is durable and
//! before the sync reports back. Recovery cuts the tail at the first entry that does
//! not decode, which after a power loss may be an unsynced write; the mark tells that
//! apart from damage to synced entries, which may have been acknowledged (FORMAT.md,
//! "Sync-mark file").
//!
//! Two slots, one page apart, written in turn, each with a sequence number: a write
//! torn by a crash spoils only its own slot, and the other holds the mark before it.
//! Writes are serialized by the mutex that owns the file, and each is fsync'd before
//! the next begins, so the slot not being written always holds a durable mark.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::files::{self, SYNC_MARK_FILE};
use crate::format::{MARK_RECORD_LEN, SyncMark, decode_mark, encode_mark};

/// Bytes between the starts of the two slots: a page, so no write touches both.
pub(crate) const MARK_SLOT_BYTES: u64 = 4096;
const _: () = assert!(MARK_RECORD_LEN as u64 <= MARK_SLOT_BYTES);

/// The open sync-mark file and the mark it holds.
pub(crate) struct MarkFile {
    file: File,
    path: PathBuf,
    /// Sequence number of the newest slot written; the next write goes to the other slot.
    seq: u64,
    mark: SyncMark,
}

impl MarkFile {
    /// Opens the mark file of `dir`: the valid slot with the highest sequence number.
    /// `None` when the file is missing or neither slot is valid.
    pub fn open(dir: &Path) -> Result<Option<MarkFile>, Error> {
        let path = dir.join(SYNC_MARK_FILE);
        let Some(bytes) = files::read_if_exists(&path)? else { return Ok(None) };
        let slot = |k: u64| bytes.get((k * MARK_SLOT_BYTES) as usize..).and_then(|b| decode_mark(b).ok());
        let Some((seq, mark)) = [slot(0), slot(1)].into_iter().flatten().max_by_key(|(seq, _)| *seq) else {
            return Ok(None);
        };
        let file = files::open_write(&path)?;
        Ok(Some(MarkFile { file, path, seq, mark }))
    }

    /// Creates the mark file of `dir` durably (replacing any), holding `mark`.
    pub fn create(dir: &Path, mark: SyncMark) -> Result<MarkFile, Error> {
        let path = dir.join(SYNC_MARK_FILE);
        // Sequence number 0 lives in slot 0: slot `seq % 2` always holds mark `seq`.
        let file = files::create_preallocated(&path, &encode_mark(0, mark), 2 * MARK_SLOT_BYTES)?;
        files::sync_dir(dir)?;
        Ok(MarkFile { file, path, seq: 0, mark })
    }

    pub fn mark(&self) -> SyncMark {
        self.mark
    }

    /// Writes `mark` to the slot not holding the current one and fsyncs it. On an error
    /// the caller poisons the log: the slot may be torn, and the other still holds the
    /// mark before (which the next open reads).
    pub fn write(&mut self, mark: SyncMark) -> Result<(), Error> {
        let seq = self.seq + 1;
        let at = (seq % 2) * MARK_SLOT_BYTES;
        self.file.write_all_at(&encode_mark(seq, mark), at).map_err(Error::io("write", &self.path))?;
        self.file.sync_data().map_err(Error::io("fsync", &self.path))?;
        self.seq = seq;
        self.mark = mark;
        Ok(())
    }
}
