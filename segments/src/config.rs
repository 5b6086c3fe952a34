//! Limits of a log, with their defaults.

use crate::entry::{Entry, HEADER_LEN};
use crate::error::Error;
use crate::format::SEGMENT_HEADER_LEN;

/// The largest segment file this crate will create.
pub const SEGMENT_BYTES_MAX: u64 = 64 << 30;

/// The timestamp of an entry (milliseconds, or any unit that only grows with time), or
/// None for entries that have none (keel: control entries). The log knows nothing of
/// what a payload holds: the caller says where its timestamp is. It runs on every
/// append and every entry a scan reads, so it should only look at bytes: read the
/// payload through `Entry::as_bytes` (a borrow) rather than `payload()` (a reference count).
pub type TimestampFn = fn(&Entry) -> Option<u64>;

/// Not `PartialEq`: it holds a function pointer, and those do not compare meaningfully.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Size of each segment file; a segment rolls when the next entry does not fit.
    pub segment_bytes: u64,
    /// Largest encoded entry (header + payload) the log accepts.
    pub entry_bytes_max: u32,
    /// Bytes of entries between two points of the sparse index: a lookup scans at most this far.
    pub index_interval_bytes: u32,
    /// Makes the sparse index keep timestamps, for `Log::locate_timestamp`. A log must be
    /// opened with the same function every time: an index written with none is rebuilt
    /// when one is given, but one function cannot be told from another.
    pub timestamp: Option<TimestampFn>,
}

impl Default for Config {
    fn default() -> Self {
        Config { segment_bytes: 128 << 20, entry_bytes_max: 4 << 20, index_interval_bytes: 4096, timestamp: None }
    }
}

impl Config {
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let bad = |reason: String| Err(Error::InvalidConfig { reason });
        if (self.entry_bytes_max as usize) < HEADER_LEN {
            return bad(format!(
                "entry_bytes_max = {} is below the {HEADER_LEN}-byte entry header",
                self.entry_bytes_max
            ));
        }
        let needed = SEGMENT_HEADER_LEN as u64 + u64::from(self.entry_bytes_max);
        if self.segment_bytes < needed {
            return bad(format!(
                "segment_bytes = {} cannot hold one entry of entry_bytes_max = {} after the {SEGMENT_HEADER_LEN}-byte \
                 segment header (needs >= {needed})",
                self.segment_bytes, self.entry_bytes_max
            ));
        }
        if self.segment_bytes > SEGMENT_BYTES_MAX {
            return bad(format!("segment_bytes = {} is over the maximum {SEGMENT_BYTES_MAX}", self.segment_bytes));
        }
        if self.index_interval_bytes == 0 {
            return bad("index_interval_bytes must be at least 1".into());
        }
        Ok(())
    }
}
