//! keel's storage engine: memory-mapped, CRC-checked segment files.
//!
//! Entries are opaque to this crate beyond their header (Raft index, term, base
//! record offset, record count, kind); see `FORMAT.md` for the bytes on disk.

mod entry;

pub use entry::{DecodeError, ENTRY_VERSION, Entry, EntryMeta, HEADER_LEN, peek_len};
