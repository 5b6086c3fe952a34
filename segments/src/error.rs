//! The one error type of the crate. Operational faults (I/O, damaged bytes, bad
//! requests) are values of it; broken internal invariants panic instead.

use std::io;
use std::path::PathBuf;

use crate::entry::DecodeError;
use crate::format::HeaderError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "log directory {} is locked: another process (or another Log in this one) has it open; \
         stop that one or use another directory",
        dir.display()
    )]
    Locked { dir: PathBuf },

    #[error(
        "corrupt entry in {} at byte {position}: {reason}; truncate the log before this entry \
         and fetch it again from the leader",
        segment.display()
    )]
    Corrupt { segment: PathBuf, position: u64, reason: DecodeError },

    #[error(
        "entry in {} at byte {position} is intact but out of place: expected index {expected}, \
         found {found}; truncate the log before it and fetch it again from the leader",
        segment.display()
    )]
    Misplaced { segment: PathBuf, position: u64, expected: u64, found: u64 },

    #[error("damaged or foreign file {}: {reason}; restore it or remove the log directory", path.display())]
    BadFile { path: PathBuf, reason: HeaderError },

    #[error("entry {index} is {len} bytes, over entry_bytes_max = {max}; split the batch or raise the limit")]
    EntryTooLarge { index: u64, len: usize, max: u32 },

    #[error("entry index {got} does not continue the log: the next index must be {expected}")]
    NonContiguous { expected: u64, got: u64 },

    #[error("entry {index} has base offset {got}, but the log's next record offset is {expected}")]
    OffsetMismatch { index: u64, expected: u64, got: u64 },

    #[error("index {requested} is outside the log, which holds {first}..={last} (a read may also start at {last} + 1)")]
    OutOfRange { requested: u64, first: u64, last: u64 },

    #[error("offset {requested} is below the log's start offset {start}: retention removed it")]
    OffsetBelowStart { requested: u64, start: u64 },

    #[error("cannot truncate after index {index}: the log starts at {first}, so the lowest allowed is {first} - 1")]
    TruncateBelowStart { index: u64, first: u64 },

    #[error(
        "entry {index} cannot be written back in place: {why}; truncate the log before it and fetch \
         it again from the leader"
    )]
    RewriteRefused { index: u64, why: &'static str },

    #[error("invalid configuration: {reason}")]
    InvalidConfig { reason: String },

    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "the log refuses writes after an earlier failure to {op}: what reached the disk is unknown; \
         drop the Log and open the directory again to recover"
    )]
    Poisoned { op: &'static str },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }
}
