//! An in-memory log store with a live and a durable image, for tests, the simulator and
//! the benchmarks. Writes change the live image at once; `sync` makes them durable in
//! order; `crash` throws away what was not synced, keeping at most an in-order prefix of
//! it (a torn suffix), as a log-structured writer on a real disk would.

use super::{Entry, LogStart, LogStore, Ready, StoreError};
use rand::Rng;
use std::cell::Cell;
use std::collections::VecDeque;

/// One image of a log: what the core reads, or what a crash would leave.
#[derive(Clone, Debug)]
pub struct LogImage {
    start: LogStart,
    entries: VecDeque<Entry>,
}

/// One write to the log, kept until it is durable.
#[derive(Clone, Debug)]
enum Write {
    Reset(LogStart),
    TruncateAfter(u64),
    Append(Vec<Entry>),
    Compact(u64),
}

impl LogImage {
    fn new(start: LogStart) -> LogImage {
        LogImage { start, entries: VecDeque::new() }
    }

    pub fn entry(&self, index: u64) -> Option<&Entry> {
        let at = index.checked_sub(self.start.index)?;
        self.entries.get(usize::try_from(at).ok()?)
    }

    /// Applies one write, asserting what the core promises: contiguous appends with dense
    /// offsets, truncations inside the log, compaction of a prefix it holds.
    fn apply(&mut self, write: &Write) {
        match write {
            Write::Reset(start) => *self = LogImage::new(*start),
            Write::TruncateAfter(index) => {
                assert!(*index + 1 >= self.start.index && *index < self.last_index(), "truncation inside the log");
                self.entries.truncate((*index + 1 - self.start.index) as usize);
            }
            Write::Append(entries) => {
                for entry in entries {
                    assert_eq!(entry.index(), self.last_index() + 1, "appends are contiguous");
                    assert!(entry.term() >= self.term(self.last_index()).unwrap_or(0), "terms never decrease");
                    assert_eq!(entry.base_offset(), self.next_offset(), "record offsets are dense");
                    self.entries.push_back(entry.clone());
                }
            }
            Write::Compact(through) => {
                assert!(*through <= self.last_index(), "compaction keeps the last entry's position");
                while self.start.index <= *through {
                    let gone = self.entries.pop_front().expect("compacted entries exist");
                    self.start =
                        LogStart { index: gone.index() + 1, prev_term: gone.term(), offset: gone.next_offset() };
                }
            }
        }
    }
}

impl LogStore for LogImage {
    fn first_index(&self) -> u64 {
        self.start.index
    }

    fn last_index(&self) -> u64 {
        self.start.index + self.entries.len() as u64 - 1
    }

    fn term(&self, index: u64) -> Option<u64> {
        if index + 1 == self.start.index {
            return Some(self.start.prev_term);
        }
        self.entry(index).map(Entry::term)
    }

    fn entries(&self, from: u64, max_bytes: usize, max_count: usize, out: &mut Vec<Entry>) -> Result<(), StoreError> {
        if from < self.start.index {
            return Err(StoreError::Compacted { index: from, first_index: self.start.index });
        }
        let (mut bytes, mut count) = (0usize, 0usize);
        let skip = (from - self.start.index) as usize;
        for entry in self.entries.iter().skip(skip) {
            if count >= max_count || (count > 0 && bytes + entry.encoded_len() > max_bytes) {
                break;
            }
            bytes += entry.encoded_len();
            count += 1;
            out.push(entry.clone());
        }
        Ok(())
    }

    fn next_offset(&self) -> u64 {
        self.entries.back().map_or(self.start.offset, Entry::next_offset)
    }

    fn start(&self) -> LogStart {
        self.start
    }
}

/// The in-memory store: a live image, a durable image, and the writes between them.
#[derive(Clone, Debug)]
pub struct MemStore {
    live: LogImage,
    durable: LogImage,
    /// Writes applied to `live` but not yet to `durable`, with their sequence numbers.
    unsynced: VecDeque<(u64, Write)>,
    written: u64,
    /// Truncations and resets that reached the durable image.
    durable_cuts: u64,
    /// Reads of entries left to fail (injected faults).
    failing_reads: Cell<u32>,
}

impl Default for MemStore {
    fn default() -> MemStore {
        MemStore::new(LogStart::INITIAL)
    }
}

impl MemStore {
    pub fn new(start: LogStart) -> MemStore {
        MemStore {
            live: LogImage::new(start),
            durable: LogImage::new(start),
            unsynced: VecDeque::new(),
            written: 0,
            durable_cuts: 0,
            failing_reads: Cell::new(0),
        }
    }

    /// Applies a Ready's storage changes in the contract's order; true if anything changed.
    pub fn apply(&mut self, ready: &Ready) -> bool {
        self.write_changes(ready.reset.as_ref().map(|(start, _)| *start), ready.truncate_after, &ready.entries)
    }

    /// Applies log changes in the contract's order: reset, truncate, append; true if any.
    pub fn write_changes(&mut self, reset: Option<LogStart>, truncate_after: Option<u64>, entries: &[Entry]) -> bool {
        if let Some(start) = reset {
            self.write(Write::Reset(start));
        }
        if let Some(index) = truncate_after {
            self.write(Write::TruncateAfter(index));
        }
        if !entries.is_empty() {
            self.write(Write::Append(entries.to_vec()));
        }
        reset.is_some() || truncate_after.is_some() || !entries.is_empty()
    }

    /// Deletes the prefix through `index` (retention), as the glue does for committed entries.
    pub fn compact(&mut self, through: u64) {
        self.write(Write::Compact(through));
    }

    fn write(&mut self, write: Write) {
        self.live.apply(&write);
        self.written += 1;
        self.unsynced.push_back((self.written, write));
    }

    /// The sequence number of the last write; `sync(written())` makes everything durable.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Makes the writes through sequence number `through` durable, in order.
    pub fn sync(&mut self, through: u64) {
        while self.unsynced.front().is_some_and(|(seq, _)| *seq <= through) {
            let (_, write) = self.unsynced.pop_front().expect("checked");
            self.make_durable(&write);
        }
    }

    fn make_durable(&mut self, write: &Write) {
        if matches!(write, Write::Reset(_) | Write::TruncateAfter(_)) {
            self.durable_cuts += 1;
        }
        self.durable.apply(write);
    }

    /// How many truncations or resets reached the durable image: the only synced writes
    /// that remove entries, so a crash test re-checks what the disk holds after each.
    pub fn durable_cuts(&self) -> u64 {
        self.durable_cuts
    }

    /// Loses every write not synced, except an in-order prefix of them that happened to
    /// reach the disk; with `torn`, the last surviving append may be cut short too.
    /// Returns how many unsynced writes were lost (wholly or partly).
    pub fn crash(&mut self, rng: &mut impl Rng, torn: bool) -> usize {
        let pending = self.unsynced.len();
        let survive = rng.random_range(0..=pending);
        for _ in 0..survive {
            let (_, write) = self.unsynced.pop_front().expect("counted");
            self.make_durable(&write);
        }
        if let (true, Some((_, Write::Append(entries)))) = (torn, self.unsynced.front()) {
            let keep = rng.random_range(0..entries.len());
            let part = Write::Append(entries[..keep].to_vec());
            self.durable.apply(&part);
        }
        self.unsynced.clear();
        self.live = self.durable.clone();
        pending - survive
    }

    /// Damage found at start: the durable image loses its entries after `keep` (which
    /// it holds), and the unsynced writes are gone, as after a crash. For a node that is down.
    pub fn lose_after(&mut self, keep: u64) {
        self.unsynced.clear();
        if keep < self.durable.last_index() {
            self.durable.apply(&Write::TruncateAfter(keep));
        }
        self.live = self.durable.clone();
    }

    /// What a crash right now would leave at the least.
    pub fn durable(&self) -> &LogImage {
        &self.durable
    }

    /// The live image (what `LogStore` reads).
    pub fn live(&self) -> &LogImage {
        &self.live
    }

    /// Makes the next `count` reads of entries fail with `StoreError::Unavailable`.
    pub fn fail_reads(&self, count: u32) {
        self.failing_reads.set(count);
    }
}

impl LogStore for MemStore {
    fn first_index(&self) -> u64 {
        self.live.first_index()
    }

    fn last_index(&self) -> u64 {
        self.live.last_index()
    }

    fn term(&self, index: u64) -> Option<u64> {
        self.live.term(index)
    }

    fn entries(&self, from: u64, max_bytes: usize, max_count: usize, out: &mut Vec<Entry>) -> Result<(), StoreError> {
        let failing = self.failing_reads.get();
        if failing > 0 {
            self.failing_reads.set(failing - 1);
            return Err(StoreError::Unavailable { index: from, detail: "injected read fault".into() });
        }
        self.live.entries(from, max_bytes, max_count, out)
    }

    fn next_offset(&self) -> u64 {
        self.live.next_offset()
    }

    fn start(&self) -> LogStart {
        self.live.start()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{EntryMeta, kind};
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn entry(index: u64, term: u64) -> Entry {
        let meta = EntryMeta { index, term, kind: kind::DATA, base_offset: index - 1, record_count: 1 };
        Entry::encode(meta, b"x")
    }

    fn ready(truncate_after: Option<u64>, entries: Vec<Entry>) -> Ready {
        Ready { truncate_after, entries, ..Ready::default() }
    }

    #[test]
    fn a_crash_keeps_what_was_synced() {
        let mut store = MemStore::default();
        store.apply(&ready(None, (1..=3).map(|i| entry(i, 1)).collect()));
        store.sync(store.written());
        store.apply(&ready(Some(1), vec![entry(2, 2)]));
        let mut rng = SmallRng::seed_from_u64(7);
        for _ in 0..20 {
            let mut copy = store.clone();
            copy.crash(&mut rng, true);
            assert_eq!(copy.term(1), Some(1), "synced entry 1 survives");
            assert!(copy.last_index() < 2 || matches!(copy.term(2), Some(1 | 2)));
        }
    }

    #[test]
    fn compaction_moves_the_start() {
        let mut store = MemStore::default();
        store.apply(&ready(None, (1..=3).map(|i| entry(i, 1)).collect()));
        store.compact(2);
        assert_eq!(store.start(), LogStart { index: 3, prev_term: 1, offset: 2 });
        assert_eq!(store.term(2), Some(1));
        assert_eq!(store.term(1), None);
        let mut out = Vec::new();
        assert!(store.entries(1, usize::MAX, 10, &mut out).is_err());
    }
}
