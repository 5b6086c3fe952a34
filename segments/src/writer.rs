//! How entry bytes reach the active segment file.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use memmap2::MmapRaw;

use crate::entry::Entry;

/// The two write paths FORMAT.md compares. Reads always go through the map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WritePath {
    /// `pwrite` into the page cache; the segment is mapped read-only.
    #[default]
    Pwrite,
    /// `memcpy` into a writable shared mapping.
    Mmap,
}

/// Entries are gathered into one `pwrite` up to this many bytes.
const STAGING_BYTES_MAX: usize = 1 << 20;

pub(crate) struct Writer {
    file: Arc<File>,
    map: Arc<MmapRaw>,
    path: WritePath,
    /// Reused for every batch: no allocation per entry.
    staging: Vec<u8>,
}

impl Writer {
    pub fn new(file: Arc<File>, map: Arc<MmapRaw>, path: WritePath) -> Writer {
        Writer { file, map, path, staging: Vec::new() }
    }

    /// Points the writer at a new active segment.
    pub fn retarget(&mut self, file: Arc<File>, map: Arc<MmapRaw>) {
        self.file = file;
        self.map = map;
    }

    /// Writes `entries` back to back from `position`, which is past every byte a
    /// reader can see; the caller has checked that they fit in the file.
    pub fn write(&mut self, position: u64, entries: &[Entry]) -> io::Result<()> {
        match self.path {
            WritePath::Pwrite => self.pwrite(position, entries),
            WritePath::Mmap => {
                let mut at = position as usize;
                for e in entries {
                    let b = e.as_bytes();
                    assert!(at + b.len() <= self.map.len(), "write past the end of the segment map");
                    // SAFETY: in bounds (checked above); no reader can see this range yet,
                    // and the source is a distinct heap buffer.
                    unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), self.map.as_mut_ptr().add(at), b.len()) };
                    at += b.len();
                }
                Ok(())
            }
        }
    }

    fn pwrite(&mut self, mut position: u64, entries: &[Entry]) -> io::Result<()> {
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
