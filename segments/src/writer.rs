//! How entry bytes reach the active segment file:
//! `pwrite` into the page cache; segments are mapped read-only for readers. FORMAT.md,
//! "Write path", has the measurements against memcpy into a writable map.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::entry::Entry;

/// Entries are gathered into one `pwrite` up to this many bytes.
const STAGING_BYTES_MAX: usize = 1 << 20;

pub(crate) struct Writer {
    file: Arc<File>,
    /// Reused for every batch: no allocation per entry.
    staging: Vec<u8>,
}

impl Writer {
    pub fn new(file: Arc<File>) -> Writer {
        Writer { file, staging: Vec::new() }
    }

    /// Points the writer at a new active segment.
    pub fn retarget(&mut self, file: Arc<File>) {
        self.file = file;
    }

    /// Writes `entries` back to back from `position`, which is past every byte a
    /// reader can see; the caller has checked that they fit in the file.
    pub fn write(&mut self, mut position: u64, entries: &[Entry]) -> io::Result<()> {
        self.staging.clear();
        for e in entries {
            let b = e.as_bytes();
            if self.staging.len() + b.len() > STAGING_BYTES_MAX && !self.staging.is_empty() {
                self.file.write_all_at(&self.staging, position)?;
                position += self.staging.len() as u64;
                self.staging.clear();
            }
            if b.len() >= STAGING_BYTES_MAX {
                self.file.write_all_at(b, position)?;
                position += b.len() as u64;
            } else {
                self.staging.extend_from_slice(b);
            }
        }
        if !self.staging.is_empty() {
            self.file.write_all_at(&self.staging, position)?;
        }
        Ok(())
    }
}
