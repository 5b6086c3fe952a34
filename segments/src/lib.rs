//! keel's storage engine: memory-mapped, CRC-checked segment files.
//!
//! Entries are opaque to this crate beyond their header (Raft index, term, base
//! record offset, record count, kind) and, when the caller gives one, a function that
//! tells an entry's timestamp (`Config::timestamp`, for `Log::locate_timestamp`); see
//! `FORMAT.md` for the bytes on disk, the assumptions about the medium and why a crash
//! at any step is safe.
//!
//! One [`Log`] per directory (locked). Appends copy into the page cache; `sync`
//! (or `begin_sync` / [`SyncJob::run`] / `finish_sync` for group commit without the
//! log's lock) makes them durable; reads hand out [`Entry`] values that are views of
//! the mapped files, CRC-checked on every read.

mod checkpoints;
mod config;
mod entry;
mod error;
mod files;
mod format;
mod log;
mod recovery;
mod segment;
pub mod state_file;
mod sync;
mod sync_mark;
mod writer;

pub use config::{Config, SEGMENT_BYTES_MAX, TimestampFn};
pub use entry::{DecodeError, ENTRY_VERSION, Entry, EntryMeta, HEADER_LEN, peek_len};
pub use error::Error;
pub use format::{FORMAT_VERSION, HeaderError, LogStart, SEGMENT_HEADER_LEN, SyncMark};
pub use log::{Damage, Log, SegmentInfo};
pub use recovery::{Discarded, RecoveryReport, TailScan};
pub use segment::Stop;
pub use sync::{SyncDone, SyncJob};
