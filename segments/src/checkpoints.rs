//! The sparse index of one segment in memory: checkpoints sorted by index,
//! either owned (segments this process wrote or rebuilt) or read in place from a
//! mapped index file (sealed segments loaded from disk, so they cost no heap).

use memmap2::Mmap;

use crate::format::{Checkpoint, INDEX_HEADER_LEN, INDEX_RECORD_LEN, record_fields};

pub(crate) enum Checkpoints {
    Owned(Vec<Checkpoint>),
    /// The first `count` records of a mapped index file, validated when it was loaded.
    Mapped {
        map: Mmap,
        count: usize,
    },
}

impl Checkpoints {
    pub fn len(&self) -> usize {
        match self {
            Checkpoints::Owned(v) => v.len(),
            Checkpoints::Mapped { count, .. } => *count,
        }
    }

    pub fn get(&self, i: usize) -> Checkpoint {
        match self {
            Checkpoints::Owned(v) => v[i],
            Checkpoints::Mapped { map, count } => {
                assert!(i < *count, "checkpoint {i} of {count}");
                let at = INDEX_HEADER_LEN + i * INDEX_RECORD_LEN;
                record_fields(&map[at..at + INDEX_RECORD_LEN])
            }
        }
    }

    pub fn last(&self) -> Option<Checkpoint> {
        self.len().checked_sub(1).map(|i| self.get(i))
    }

    /// The last checkpoint whose `key` is at most `target` (keys are non-decreasing).
    pub fn floor(&self, target: u64, key: impl Fn(&Checkpoint) -> u64) -> Option<Checkpoint> {
        self.count_while(|c| key(c) <= target).checked_sub(1).map(|i| self.get(i))
    }

    /// Forgets checkpoints of entries after `index` (the log was truncated there).
    pub fn retain_through(&mut self, index: u64) {
        let keep = self.count_while(|c| c.index <= index);
        match self {
            Checkpoints::Owned(v) => v.truncate(keep),
            Checkpoints::Mapped { count, .. } => *count = keep,
        }
    }

    /// How many leading checkpoints satisfy `pred` (which holds for a prefix): a binary search.
    fn count_while(&self, pred: impl Fn(&Checkpoint) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(&self.get(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The owned list, copying a mapped one first (only segments being scanned need this).
    pub fn owned_mut(&mut self) -> &mut Vec<Checkpoint> {
        if let Checkpoints::Mapped { .. } = self {
            let v = (0..self.len()).map(|i| self.get(i)).collect();
            *self = Checkpoints::Owned(v);
        }
        match self {
            Checkpoints::Owned(v) => v,
            Checkpoints::Mapped { .. } => unreachable!("converted above"),
        }
    }

    /// Checkpoints from position `from` on, for writing to the index file.
    pub fn owned_from(&self, from: usize) -> impl Iterator<Item = Checkpoint> + '_ {
        (from..self.len()).map(|i| self.get(i))
    }
}
