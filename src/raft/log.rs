//! The log as the core sees it: the caller's store, plus the changes the core asked for
//! that the caller has not received yet (etcd's "unstable" part), plus the two indexes
//! that matter for safety: what is committed and what is durable.

use super::{Entry, LogStore, Membership, Snapshot, StoreError};
use super::{LogStart, kind};

/// Changes to the store not yet handed out in a Ready. They compose: a later truncation
/// cuts pending entries, a reset replaces everything, so the caller always receives one
/// reset, then one truncation, then one run of entries.
#[derive(Debug, Default)]
struct Pending {
    reset: Option<(LogStart, Membership)>,
    /// The snapshot that comes with `reset`, for a state machine that is not the log.
    snapshot: Option<Snapshot>,
    /// The index to truncate after, and the record offset that follows its entry.
    truncate_after: Option<(u64, u64)>,
    entries: Vec<Entry>,
}

/// What `take` hands out for the Ready.
pub(super) type StorageChanges = (Option<(LogStart, Membership)>, Option<u64>, Vec<Entry>);

#[derive(Debug)]
pub(super) struct RaftLog {
    pending: Pending,
    /// Entries through here are known committed (Raft §5.3); never decreases.
    commit: u64,
    /// Entries through here are durable on this node, as `persisted` reported. Zero while
    /// a reset is not durable yet: nothing of the new log may be acknowledged before.
    persisted: u64,
    /// The store's last index once the caller has applied every Ready handed out.
    store_last_expected: u64,
}

impl RaftLog {
    /// At start every entry in the store is durable: the caller recovered it from disk.
    pub(super) fn new(store: &impl LogStore, commit: u64) -> RaftLog {
        let last = store.last_index();
        assert!(commit <= last, "the commit index is within the log");
        RaftLog { pending: Pending::default(), commit, persisted: last, store_last_expected: last }
    }

    /// The pairing check across the Ready boundary: the store holds what we handed out.
    pub(super) fn check_store(&self, store: &impl LogStore) {
        assert_eq!(
            store.last_index(),
            self.store_last_expected,
            "the caller must apply each Ready's reset, truncate_after and entries before calling the core again"
        );
        assert!(store.first_index() <= self.commit + 1, "the caller compacted entries that were not committed");
        if let Some(snapshot) = store.snapshot() {
            let meta = &snapshot.meta;
            assert_eq!(snapshot.data.len() as u64, meta.bytes, "a snapshot's bytes are as long as it says");
            assert!(meta.index() <= self.commit, "a snapshot covers committed entries only");
            assert!(store.first_index() <= meta.start.index, "the log is compacted no further than its snapshot");
        }
    }

    pub(super) fn commit(&self) -> u64 {
        self.commit
    }

    pub(super) fn persisted(&self) -> u64 {
        self.persisted
    }

    /// Committed and durable here: what the caller may serve and persist as the commit index.
    pub(super) fn durable_commit(&self) -> u64 {
        self.commit.min(self.persisted)
    }

    /// The index after which pending entries follow.
    fn base(&self, store: &impl LogStore) -> u64 {
        match (&self.pending.reset, self.pending.truncate_after) {
            (Some((start, _)), _) => start.index - 1,
            (None, Some((index, _))) => index,
            (None, None) => store.last_index(),
        }
    }

    pub(super) fn first_index(&self, store: &impl LogStore) -> u64 {
        self.pending.reset.as_ref().map_or_else(|| store.first_index(), |(start, _)| start.index)
    }

    pub(super) fn last_index(&self, store: &impl LogStore) -> u64 {
        self.pending.entries.last().map_or_else(|| self.base(store), Entry::index)
    }

    /// The term of the entry at `index`, for `first_index - 1 ..= last_index`.
    pub(super) fn term(&self, store: &impl LogStore, index: u64) -> Option<u64> {
        let base = self.base(store);
        if index > base {
            let at = usize::try_from(index - base - 1).ok()?;
            return self.pending.entries.get(at).map(Entry::term);
        }
        match &self.pending.reset {
            Some((start, _)) => (index == start.index - 1).then_some(start.prev_term),
            None => store.term(index),
        }
    }

    pub(super) fn last_term(&self, store: &impl LogStore) -> u64 {
        self.term(store, self.last_index(store)).expect("the last index of a log always has a term")
    }

    pub(super) fn start(&self, store: &impl LogStore) -> LogStart {
        self.pending.reset.as_ref().map_or_else(|| store.start(), |(start, _)| *start)
    }

    /// The record offset after the entry at `index` (`first_index - 1 ..= last_index`).
    pub(super) fn offset_after(&self, store: &impl LogStore, index: u64) -> Result<u64, StoreError> {
        let base = self.base(store);
        if index > base {
            return Ok(self.pending.entries[(index - base - 1) as usize].next_offset());
        }
        if index == base {
            return Ok(match (&self.pending.reset, self.pending.truncate_after) {
                (Some((start, _)), _) => start.offset,
                (None, Some((_, offset))) => offset,
                (None, None) => store.next_offset(),
            });
        }
        if self.pending.reset.is_some() || index < store.first_index() - 1 {
            return Err(StoreError::Compacted { index, first_index: self.first_index(store) });
        }
        if index + 1 == store.first_index() {
            return Ok(store.start().offset);
        }
        let mut one = Vec::with_capacity(1);
        store.entries(index, usize::MAX, 1, &mut one)?;
        match one.first() {
            Some(entry) if entry.index() == index => Ok(entry.next_offset()),
            _ => Err(StoreError::Corrupt { index, detail: "the store returned another entry".into() }),
        }
    }

    /// Appends to `out` entries from `from`, bounded by `max_bytes` (at least one entry) and
    /// `max_count`. The store's answer is checked: it must be the contiguous run asked for.
    pub(super) fn entries(
        &self,
        store: &impl LogStore,
        from: u64,
        max_bytes: usize,
        max_count: usize,
        out: &mut Vec<Entry>,
    ) -> Result<(), StoreError> {
        let first = self.first_index(store);
        if from < first {
            return Err(StoreError::Compacted { index: from, first_index: first });
        }
        let base = self.base(store);
        let at = out.len();
        if from <= base {
            store.entries(from, max_bytes, max_count, out)?;
            // A pending truncation hides the store's entries after `base`.
            while out.len() > at && out.last().is_some_and(|e| e.index() > base) {
                out.pop();
            }
            let got = &out[at..];
            let contiguous = got.iter().enumerate().all(|(k, e)| e.index() == from + k as u64);
            if got.is_empty() || !contiguous {
                return Err(StoreError::Corrupt {
                    index: from,
                    detail: "the store returned a gap or no entries".into(),
                });
            }
            if got.last().is_some_and(|e| e.index() < base) {
                return Ok(());
            }
        }
        let mut bytes: usize = out[at..].iter().map(Entry::encoded_len).sum();
        let skip = from.max(base + 1) - base - 1;
        for entry in self.pending.entries.iter().skip(skip as usize) {
            let count = out.len() - at;
            if count >= max_count || (count > 0 && bytes + entry.encoded_len() > max_bytes) {
                break;
            }
            bytes += entry.encoded_len();
            out.push(entry.clone());
        }
        Ok(())
    }

    /// Appends entries that continue the log: contiguous indexes, terms that never go down,
    /// dense record offsets. Callers validate peer input first; this asserts.
    pub(super) fn append(&mut self, store: &impl LogStore, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        let mut last = self.last_index(store);
        let mut last_term = self.last_term(store);
        let mut next_offset = self.offset_after(store, last).expect("the last entry's offset is known");
        assert_eq!(first.index(), last + 1, "appended entries continue the log");
        for entry in entries {
            assert_eq!(entry.index(), last + 1, "appended entries are contiguous");
            assert!(entry.term() >= last_term, "terms never decrease along the log");
            assert_eq!(entry.base_offset(), next_offset, "record offsets are dense");
            assert!(entry.kind() == kind::DATA || entry.record_count() == 0, "control entries hold no records");
            last = entry.index();
            last_term = entry.term();
            next_offset = entry.next_offset();
            self.pending.entries.push(entry.clone());
        }
    }

    /// Deletes the entries after `index` (a follower's conflicting suffix, Raft §5.3).
    pub(super) fn truncate_after(&mut self, store: &impl LogStore, index: u64) -> Result<(), StoreError> {
        let commit = self.commit;
        assert!(index >= commit, "a committed entry is never truncated (truncate after {index}, commit {commit})");
        assert!(index < self.last_index(store), "truncation removes at least one entry");
        let base = self.base(store);
        if index >= base {
            self.pending.entries.truncate((index - base) as usize);
        } else {
            let offset = self.offset_after(store, index)?;
            self.pending.truncate_after = Some((index, offset));
            self.pending.entries.clear();
        }
        self.persisted = self.persisted.min(index);
        Ok(())
    }

    /// Replaces the log with an empty one at `start`; everything before it is committed.
    pub(super) fn reset(&mut self, start: LogStart, membership: Membership) {
        assert!(start.index > self.commit + 1, "a reset moves the log start past the commit index");
        self.pending = Pending { reset: Some((start, membership)), ..Pending::default() };
        self.persisted = 0;
        self.commit = start.index - 1;
    }

    /// Replaces the log with an empty one right after `snapshot`, which the caller
    /// installs first (Raft §7); everything it covers is committed.
    pub(super) fn install(&mut self, snapshot: Snapshot) {
        self.reset(snapshot.meta.start, snapshot.meta.membership.clone());
        self.pending.snapshot = Some(snapshot);
    }

    /// Raises the commit index; callers check `index > commit` (it never decreases).
    pub(super) fn commit_to(&mut self, store: &impl LogStore, index: u64) {
        assert!(index > self.commit, "the commit index only moves forward ({} to {index})", self.commit);
        assert!(index <= self.last_index(store), "only entries in the log are committed");
        self.commit = index;
    }

    /// The caller made entries through `index` (whose entry has `term`) durable. Stale
    /// reports (the entry was truncated or replaced meanwhile, or is still pending) are ignored.
    pub(super) fn persisted_to(&mut self, store: &impl LogStore, index: u64, term: u64) -> bool {
        let written = self.pending.reset.is_none() && index <= self.base(store);
        if index <= self.persisted || !written || self.term(store, index) != Some(term) {
            return false;
        }
        self.persisted = index;
        true
    }

    /// Hands the snapshot to install to the Ready (before `take`, which clears it).
    pub(super) fn take_snapshot(&mut self) -> Option<Snapshot> {
        self.pending.snapshot.take()
    }

    pub(super) fn has_pending(&self) -> bool {
        self.pending.reset.is_some() || self.pending.truncate_after.is_some() || !self.pending.entries.is_empty()
    }

    /// Hands the pending changes to the Ready; the store is expected to hold them next time.
    pub(super) fn take(&mut self) -> StorageChanges {
        self.store_last_expected = self.last_index_after_pending();
        let pending = std::mem::take(&mut self.pending);
        (pending.reset, pending.truncate_after.map(|(index, _)| index), pending.entries)
    }

    /// The last index as it will be once the pending changes are applied, without a store
    /// (the store holds `store_last_expected`, as `check_store` asserts).
    fn last_index_after_pending(&self) -> u64 {
        match (&self.pending.reset, self.pending.truncate_after, self.pending.entries.last()) {
            (_, _, Some(entry)) => entry.index(),
            (Some((start, _)), _, None) => start.index - 1,
            (None, Some((index, _)), None) => index,
            (None, None, None) => self.store_last_expected,
        }
    }
}
