//! Retention: which prefix of a log to delete, by size and by age. A pure policy over the
//! segment table; the caller deletes with one `drop_before`.

use std::time::{Duration, SystemTime};

use segments::SegmentInfo;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Delete the oldest sealed segments while the log is larger than this.
    pub bytes: Option<u64>,
    /// Delete sealed segments last written longer ago than this.
    pub age: Option<Duration>,
}

impl Retention {
    pub fn is_unlimited(&self) -> bool {
        self.bytes.is_none() && self.age.is_none()
    }
}

/// The index to drop the log before, if retention asks to: only whole sealed segments
/// whose entries are all at or below `safe` (committed and durable here), oldest first,
/// while the log is over the size limit or the segment is older than the age limit.
pub fn drop_before(segments: &[SegmentInfo], safe: u64, policy: &Retention, now: SystemTime) -> Option<u64> {
    let mut total: u64 = segments.iter().map(|s| s.bytes_used).sum();
    let mut drop_before = None;
    for s in segments.iter().filter(|s| s.sealed && s.last_index <= safe) {
        let too_big = policy.bytes.is_some_and(|max| total > max);
        let too_old =
            policy.age.is_some_and(|age| s.modified.and_then(|m| now.duration_since(m).ok()).is_some_and(|e| e > age));
        if !(too_big || too_old) {
            break;
        }
        total -= s.bytes_used;
        drop_before = Some(s.last_index + 1);
    }
    drop_before
}
