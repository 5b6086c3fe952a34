//! The log: an ordered list of segments, the last one active. Appends, reads,
//! group commit, truncation, retention and reset. FORMAT.md explains why each
//! step is crash-safe; the comments here name the rule a step relies on.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::SystemTime;

use crate::config::Config;
use crate::entry::{Entry, HEADER_LEN};
use crate::error::Error;
use crate::files;
use crate::format::{Checkpoint, INDEX_HEADER_LEN, INDEX_RECORD_LEN, LogStart, Record, SegmentHeader, SyncMark};
use crate::recovery::{self, RecoveryReport};
use crate::segment::SegmentState;
use crate::sync::{NO_FLOOR, Poison, SyncDone, SyncJob, lower_floor};
use crate::sync_mark::MarkFile;
use crate::writer::Writer;

/// A durable, replicated-log-shaped store of entries in segment files.
pub struct Log {
    pub(crate) dir: PathBuf,
    pub(crate) config: Config,
    /// Held (with an exclusive lock) for the life of the log.
    pub(crate) _lock: File,
    pub(crate) start: LogStart,
    /// In index order, never empty, the first at `start.index`; the last is active.
    pub(crate) segments: Vec<Segment>,
    pub(crate) writer: Writer,
    /// Segments this process wrote whose data or index records are not yet durable,
    /// in index order; the active segment is always the last.
    pub(crate) open: Vec<OpenSegment>,
    pub(crate) synced: u64,
    pub(crate) sync_seq: u64,
    pub(crate) floors: Vec<Weak<Mutex<SyncMark>>>,
    pub(crate) poison: Poison,
    /// The sync-mark file, shared with running sync jobs (which raise it).
    pub(crate) mark: Arc<Mutex<MarkFile>>,
    /// Serializes lazy loads of sealed segments (readers share `&Log`).
    pub(crate) load_lock: Mutex<()>,
    /// Reused to encode index records.
    pub(crate) index_buf: Vec<u8>,
}

pub(crate) struct Segment {
    pub first_index: u64,
    /// Set at open for the segments recovery read, on first use for older sealed ones.
    pub state: OnceLock<SegmentState>,
}

pub(crate) struct OpenSegment {
    pub first_index: u64,
    pub data: Arc<File>,
    pub index: Arc<File>,
    /// Checkpoints already written to the index file.
    pub persisted: usize,
    /// The sync sequence number current when the seal record was written.
    pub sealed_at: Option<u64>,
}

/// An entry that does not read back intact (`Log::verify`): the log must be truncated
/// before `index`, and the entries from there fetched again.
#[derive(Debug)]
pub struct Damage {
    pub index: u64,
    pub error: Error,
}

/// What `Log::segments` reports about one segment (for retention by size and age).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    pub path: PathBuf,
    pub first_index: u64,
    pub last_index: u64,
    pub first_offset: u64,
    pub next_offset: u64,
    /// Bytes of header and entries.
    pub bytes_used: u64,
    /// Size of the (preallocated) file.
    pub file_bytes: u64,
    pub sealed: bool,
    pub modified: Option<SystemTime>,
    /// False when the segment could not be loaded (see the log); the sizes are then 0.
    pub readable: bool,
}

impl Log {
    /// Opens (creating if needed) the log in `dir`, recovering from any crash.
    pub fn open(dir: &Path, config: Config) -> Result<(Log, RecoveryReport), Error> {
        recovery::open(dir, config)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn first_index(&self) -> u64 {
        self.start.index
    }

    pub fn last_index(&self) -> u64 {
        self.active().last_index
    }

    pub fn start_offset(&self) -> u64 {
        self.start.offset
    }

    pub fn next_offset(&self) -> u64 {
        self.active().next_offset
    }

    /// Where the log begins (what `reset` and `drop_before` persist).
    pub fn log_start(&self) -> LogStart {
        self.start
    }

    /// Every entry at or below this index is durable.
    pub fn synced_index(&self) -> u64 {
        self.synced
    }

    /// The highest entry a finished sync made durable, as the sync-mark file says
    /// (FORMAT.md, "Sync-mark file"). Syncs raise it, truncations and resets lower it.
    /// Above `last_index()` right after `open`, it says that recovery cut entries that
    /// had been synced: damage, not a crash (the caller may have acknowledged them).
    pub fn sync_mark(&self) -> SyncMark {
        self.mark.lock().unwrap_or_else(|e| e.into_inner()).mark()
    }

    /// Appends entries that continue the log: indices contiguous from
    /// `last_index() + 1`, base offsets chained from `next_offset()`. Validates the
    /// whole batch before writing any of it. Entries are visible to `read` on return,
    /// durable after a later `sync`.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), Error> {
        self.check_poison()?;
        self.validate(entries)?;
        let config = self.config;
        let mut rest = entries;
        while !rest.is_empty() {
            let active = self.active();
            let room = active.map.len() as u64 - active.end;
            let mut bytes = 0;
            let fit = rest.iter().take_while(|e| (bytes += e.encoded_len() as u64, bytes <= room).1).count();
            if fit == 0 {
                self.roll()?;
                continue;
            }
            let (chunk, tail) = rest.split_at(fit);
            let position = active.end;
            if let Err(e) = self.writer.write(position, chunk) {
                let _ = self.poison.set("write");
                return Err(Error::io("write", &self.active().path)(e));
            }
            let active = self.active_mut();
            for e in chunk {
                active.push(e, &config);
            }
            rest = tail;
        }
        Ok(())
    }

    fn validate(&self, entries: &[Entry]) -> Result<(), Error> {
        let (mut index, mut offset) = (self.last_index() + 1, self.next_offset());
        for e in entries {
            if e.index() != index {
                return Err(Error::NonContiguous { expected: index, got: e.index() });
            }
            if e.encoded_len() > self.config.entry_bytes_max as usize {
                return Err(Error::EntryTooLarge { index, len: e.encoded_len(), max: self.config.entry_bytes_max });
            }
            if e.base_offset() != offset {
                return Err(Error::OffsetMismatch { index, expected: offset, got: e.base_offset() });
            }
            index += 1;
            offset = e.next_offset();
        }
        Ok(())
    }

    /// Seals the active segment and starts the next one.
    fn roll(&mut self) -> Result<(), Error> {
        let a = self.active();
        let header = SegmentHeader {
            id: files::random_u64(),
            first_index: a.last_index + 1,
            base_offset: a.next_offset,
            prev_term: a.last_term,
        };
        self.start_segment(header)
    }

    /// Creates a segment file (durably) and makes it the active one.
    fn start_segment(&mut self, header: SegmentHeader) -> Result<(), Error> {
        let fresh = new_segment(&self.dir, header, &self.config)?;
        self.install(fresh);
        Ok(())
    }

    fn install(&mut self, (segment, open): NewSegment) {
        self.writer.retarget(open.data.clone());
        self.segments.push(segment);
        self.open.push(open);
    }

    /// Durably syncs every entry appended so far.
    pub fn sync(&mut self) -> Result<(), Error> {
        let done = self.begin_sync().run()?;
        self.finish_sync(done);
        Ok(())
    }

    /// Captures what a sync must flush: every data file written since it was last
    /// made durable, index files holding a new seal, and the last index, which the
    /// job will cover.
    pub fn begin_sync(&mut self) -> SyncJob {
        self.sync_seq += 1;
        let floor = Arc::new(Mutex::new(NO_FLOOR));
        self.floors.retain(|w| w.strong_count() > 0);
        self.floors.push(Arc::downgrade(&floor));
        let data = self.open.iter().map(|o| (o.data.clone(), files::segment_path(&self.dir, o.first_index)));
        // Index files are fsync'd once they hold their seal, not on every sync: an index
        // record is written only after the data it names is durable, so whenever it
        // reaches the disk it is true; its durability only shortens recovery's scan.
        // (A second growing file per sync would cost a second journal commit.)
        let sealed = self.open.iter().filter(|o| o.sealed_at.is_some());
        let index = sealed.map(|o| (o.index.clone(), files::index_path(&self.dir, o.first_index)));
        SyncJob {
            files: data.chain(index).collect(),
            covers: self.last_index(),
            covers_term: self.active().last_term,
            seq: self.sync_seq,
            floor,
            poison: self.poison.clone(),
            mark: self.mark.clone(),
        }
    }

    /// Records a finished sync: `synced_index` advances to what the job covered, but
    /// never past a truncation or reset made since it began. Then writes the index
    /// records of newly durable entries (they reach the disk with the next sync).
    pub fn finish_sync(&mut self, done: SyncDone) {
        self.synced = self.synced.max(done.durable()).min(self.last_index());
        self.persist_index_records();
        let seq = done.seq;
        let active_first = self.active().header.first_index;
        self.open.retain(|o| o.first_index == active_first || o.sealed_at.is_none_or(|s| s >= seq));
    }

    /// Appends to each open segment's index file the checkpoints of durable entries
    /// and, for a sealed segment durable to its end, the seal. An index record is
    /// only ever written after the data it names is durable, so recovery can trust it.
    fn persist_index_records(&mut self) {
        let active_first = self.active().header.first_index;
        for i in 0..self.open.len() {
            let o = &self.open[i];
            let k = self.segments.partition_point(|s| s.first_index < o.first_index);
            let state = self.segments[k].state.get().expect("open segments are loaded");
            let mut buf = std::mem::take(&mut self.index_buf);
            buf.clear();
            let mut written = 0;
            for c in state.checkpoints.owned_from(o.persisted).take_while(|c| c.index <= self.synced) {
                buf.extend_from_slice(&Record::Checkpoint(c).encode(state.header.id));
                written += 1;
            }
            let seal = o.first_index != active_first && o.sealed_at.is_none() && state.last_index <= self.synced;
            if seal {
                buf.extend_from_slice(&Record::Seal(state.seal()).encode(state.header.id));
            }
            if !buf.is_empty() {
                let at = (INDEX_HEADER_LEN + o.persisted * INDEX_RECORD_LEN) as u64;
                match std::os::unix::fs::FileExt::write_all_at(&*o.index, &buf, at) {
                    Ok(()) => {
                        let o = &mut self.open[i];
                        o.persisted += written;
                        if seal {
                            o.sealed_at = Some(self.sync_seq);
                        }
                    }
                    // Not fatal: the data is durable; recovery scans a little more.
                    Err(e) => tracing::warn!(segment = %state.path.display(), error = %e, "index write failed"),
                }
            }
            self.index_buf = buf;
        }
    }

    /// Appends entries from `from_index` to `out`, up to `max_bytes` of encoded
    /// entries but at least one. Entries are views of the mapped files (no copy); each
    /// is CRC-checked as it is read.
    pub fn read(&self, from_index: u64, max_bytes: usize, out: &mut Vec<Entry>) -> Result<(), Error> {
        let (first, last) = (self.first_index(), self.last_index());
        if from_index < first || from_index > last + 1 {
            return Err(Error::OutOfRange { requested: from_index, first, last });
        }
        let max_len = self.config.entry_bytes_max;
        let (mut index, mut bytes, mut k) = (from_index, 0usize, self.segment_of(from_index));
        while index <= last {
            let state = self.state(k)?;
            let seg_last = self.last_of(k);
            let mut position = state.position_of(index, max_len)?;
            while index <= seg_last {
                let e = state.entry_at(position, index, max_len)?;
                if index > from_index && bytes + e.encoded_len() > max_bytes {
                    return Ok(());
                }
                bytes += e.encoded_len();
                position += e.encoded_len() as u64;
                out.push(e);
                index += 1;
            }
            k += 1;
        }
        Ok(())
    }

    /// Checks entries for damage, a bounded amount at a time (a scrub, or a search for
    /// the first bad entry after a read failed): from the checkpoint at or before `from`
    /// (so damage in the walk a read from `from` makes is found too) to the end of that
    /// segment, stopping once `max_bytes` past `from` were checked. Returns the index to
    /// continue from (`last_index() + 1` at the end), or the first entry that does not
    /// read back intact: the index to truncate before, and why.
    pub fn verify(&self, from: u64, max_bytes: usize) -> Result<u64, Damage> {
        let (first, last) = (self.first_index(), self.last_index());
        let from = from.max(first);
        if from > last {
            return Ok(last + 1);
        }
        let k = self.segment_of(from);
        let segment_first = self.segments[k].first_index;
        let state = self.state(k).map_err(|error| Damage { index: segment_first, error })?;
        let (max_len, segment_last) = (self.config.entry_bytes_max, self.last_of(k));
        let ((mut position, mut index), mut bytes) = (state.walk_start(from), 0usize);
        while index <= segment_last && (index < from || bytes < max_bytes) {
            let e = state.entry_at(position, index, max_len).map_err(|error| Damage { index, error })?;
            position += e.encoded_len() as u64;
            bytes += if index >= from { e.encoded_len() } else { 0 };
            index += 1;
        }
        Ok(index)
    }

    /// Writes back damaged entry `entry.index()` with an intact copy of it, in place, and
    /// makes it durable (FORMAT.md, "Damage: writing an entry back"). The copy has the
    /// same bytes as the one it replaces (an entry is encoded once, by the leader, and the
    /// caller checked it is the same entry), so it ends where the next entry begins; that
    /// is checked, with its term, before a byte is written. Only durable entries whose
    /// start a walk from a checkpoint reaches are written back, and only while damaged:
    /// no reader can hold a view of bytes that fail their CRC. False if the entry reads
    /// back intact already.
    pub fn rewrite_damaged(&mut self, entry: &Entry) -> Result<bool, Error> {
        self.check_poison()?;
        let index = entry.index();
        let refuse = |why| Err(Error::RewriteRefused { index, why });
        if index < self.first_index() || index > self.synced {
            return refuse("it is not a durable entry of the log");
        }
        if self.term(index) != Some(entry.term()) {
            return refuse("the copy's term differs from the log's");
        }
        let max_len = self.config.entry_bytes_max;
        let k = self.segment_of(index);
        let segment_last = self.last_of(k);
        let state = self.state(k)?;
        let position = state.position_of(index, max_len)?;
        if state.entry_at(position, index, max_len).is_ok() {
            return Ok(false);
        }
        let end = position + entry.encoded_len() as u64;
        let fits = if index < state.last_index {
            // The next entry's header: its index and first record offset follow the copy.
            let next = state.map.get(end as usize..end as usize + HEADER_LEN);
            let field = |at: usize| next.map(|h| u64::from_le_bytes(h[at..at + 8].try_into().expect("8 bytes")));
            field(16) == Some(index + 1) && field(32) == Some(entry.next_offset())
        } else {
            index == state.last_index && end == state.end && entry.next_offset() == state.next_offset
        };
        if !fits || index > segment_last {
            return refuse("the copy does not end where the next entry begins");
        }
        let path = state.path.clone();
        let file = std::fs::OpenOptions::new().write(true).open(&path).map_err(Error::io("open", &path))?;
        // As for appends, a failed write or fdatasync leaves the disk unknown: poisoned.
        let written = std::os::unix::fs::FileExt::write_all_at(&file, entry.as_bytes(), position)
            .map_err(Error::io("write", &path))
            .and_then(|()| file.sync_data().map_err(Error::io("fdatasync", &path)));
        if let Err(e) = written {
            let _ = self.poison.set("write back a damaged entry");
            return Err(e);
        }
        // The map shares the page cache: the entry reads back intact now.
        self.state(k)?.entry_at(position, index, max_len)?;
        Ok(true)
    }

    /// The index of the entry whose records contain `offset`; `None` at or past `next_offset()`.
    pub fn locate_offset(&self, offset: u64) -> Result<Option<u64>, Error> {
        if offset < self.start.offset {
            return Err(Error::OffsetBelowStart { requested: offset, start: self.start.offset });
        }
        if offset >= self.next_offset() {
            return Ok(None);
        }
        // The last segment whose base offset is at most `offset` holds it: a binary
        // search that loads only the sealed segments it probes.
        let (mut lo, mut hi) = (1, self.segments.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.state(mid)?.header.base_offset <= offset {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let k = lo - 1;
        self.state(k)?.index_of_offset(offset, self.last_of(k), self.config.entry_bytes_max)
    }

    /// The index of the first entry, in log order, whose timestamp (by the configured
    /// `Config::timestamp`) is at least `target`: Kafka's ListOffsets by time, "the
    /// earliest offset whose timestamp is >= T", even when timestamps go backwards.
    /// Entries without a timestamp are passed over; `None` when no entry qualifies.
    ///
    /// Segments are tried oldest first and passed over when their largest timestamp (a
    /// field of the seal, or kept in memory) is below `target`, as Kafka passes over its
    /// segments; within the first segment that can hold the answer, a binary search of
    /// the checkpoints and a walk of at most about `index_interval_bytes` find it.
    pub fn locate_timestamp(&self, target: u64) -> Result<Option<u64>, Error> {
        if self.config.timestamp.is_none() {
            let reason = "locate_timestamp needs a timestamp function: set Config::timestamp".into();
            return Err(Error::InvalidConfig { reason });
        }
        for k in 0..self.segments.len() {
            let state = self.state(k)?;
            // An over-estimate (a seal that reaches past a later truncation) only costs a walk.
            if state.max_timestamp < target {
                continue;
            }
            if let Some(index) = state.locate_timestamp(target, self.last_of(k), &self.config)? {
                return Ok(Some(index));
            }
        }
        Ok(None)
    }

    /// The term of entry `index`, for `first_index() - 1 ..= last_index()`. Reads no
    /// entry: every term change has a checkpoint.
    pub fn term(&self, index: u64) -> Option<u64> {
        if index + 1 == self.first_index() {
            return Some(self.start.prev_term);
        }
        if index < self.first_index() || index > self.last_index() {
            return None;
        }
        let k = self.segment_of(index);
        match self.state(k) {
            Ok(state) => state.term_of(index),
            Err(e) => {
                tracing::error!(index, error = %e, "cannot read the term of an entry");
                None
            }
        }
    }

    /// Keeps entries up to and including `index`, durably: on return a crash cannot
    /// bring back what was removed. The bytes after `index` are not touched (readers
    /// may hold them): the log continues in a new segment named `index + 1`, and
    /// recovery ends every segment before the next one's first index.
    pub fn truncate_after(&mut self, index: u64) -> Result<(), Error> {
        let first = self.first_index();
        if index + 1 < first {
            return Err(Error::TruncateBelowStart { index, first });
        }
        if index >= self.last_index() {
            return Ok(());
        }
        self.check_poison()?;
        let (config, max_len) = (self.config, self.config.entry_bytes_max);
        let keep = self.segments.partition_point(|s| s.first_index <= index);
        let (prev_term, base_offset) = if keep == 0 {
            (self.start.prev_term, self.start.offset)
        } else {
            let state = self.state(keep - 1)?;
            let e = state.entry_at(state.position_of(index, max_len)?, index, max_len)?;
            (e.term(), e.next_offset())
        };
        // No sync, finished or running, may claim more; then the mark comes down first, so
        // a crash at any later step leaves a mark no higher than the log (FORMAT.md).
        let kept = SyncMark { index, term: prev_term };
        self.lower_synced(kept);
        self.lower_mark(kept)?;
        let header = SegmentHeader { id: files::random_u64(), first_index: index + 1, base_offset, prev_term };
        let removed = self.replace_tail(keep, header)?;
        if keep > 0 {
            let state = self.segments[keep - 1].state.get_mut().expect("loaded above");
            state.cut_after(index, &config)?;
            let len = state.checkpoints.len();
            if let Some(o) = self.open.iter_mut().find(|o| o.first_index == self.segments[keep - 1].first_index) {
                o.persisted = o.persisted.min(len);
            }
        }
        self.remove_files(removed, index + 1)?;
        Ok(())
    }

    /// Replaces segments `keep..` with a new empty segment described by `header`.
    /// The new file is created (atomically, by rename) before any old one is deleted,
    /// so a crash in between leaves old segments after a gap, which recovery removes.
    /// Returns the first indices of the segments whose files the caller must delete.
    fn replace_tail(&mut self, keep: usize, header: SegmentHeader) -> Result<Vec<u64>, Error> {
        // The rename may have replaced a file of the log before a later step failed:
        // what is on disk is then unknown to this process, so it refuses writes.
        let fresh = new_segment(&self.dir, header, &self.config).inspect_err(|_| {
            let _ = self.poison.set("create a segment");
        })?;
        let removed: Vec<u64> = self.segments.drain(keep..).map(|s| s.first_index).collect();
        let last_kept = keep.checked_sub(1).map(|k| self.segments[k].first_index);
        self.open.retain(|o| Some(o.first_index) <= last_kept);
        self.install(fresh);
        Ok(removed)
    }

    /// Deletes the files of replaced segments (except `kept`, replaced by rename) durably.
    fn remove_files(&self, removed: Vec<u64>, kept: u64) -> Result<(), Error> {
        for first in removed.into_iter().filter(|&f| f != kept) {
            files::remove_segment(&self.dir, first)?;
        }
        files::sync_dir(&self.dir)
    }

    /// Before a truncation that keeps entries up to `kept`: no sync, finished or
    /// running, may claim more.
    fn lower_synced(&mut self, kept: SyncMark) {
        self.synced = self.synced.min(kept.index);
        for floor in self.floors.iter().filter_map(Weak::upgrade) {
            lower_floor(&floor, kept);
        }
    }

    /// Lowers the sync mark to `to` (durably), if it is higher: the entries after `to`
    /// are leaving the log. Called after `lower_synced`, so a sync job still running
    /// sees the lowered floor and leaves this mark alone.
    fn lower_mark(&self, to: SyncMark) -> Result<(), Error> {
        let mut mark = self.mark.lock().unwrap_or_else(|e| e.into_inner());
        if mark.mark().index <= to.index {
            return Ok(());
        }
        mark.write(to).inspect_err(|_| {
            let _ = self.poison.set("write the sync mark");
        })
    }

    /// Deletes whole sealed segments whose entries are all below `index`, oldest
    /// first; never the active one. The new log start is written (atomically)
    /// before any file is deleted. Entries already read stay valid: their map does.
    pub fn drop_before(&mut self, index: u64) -> Result<usize, Error> {
        let active = self.segments.len() - 1;
        let n = (0..active).take_while(|&k| self.last_of(k) < index).count();
        if n == 0 {
            return Ok(0);
        }
        let start = self.state(n)?.header.start();
        recovery::write_log_start(&self.dir, &start)?;
        for s in &self.segments[..n] {
            files::remove_segment(&self.dir, s.first_index)?;
        }
        files::sync_dir(&self.dir)?;
        self.segments.drain(..n);
        self.open.retain(|o| o.first_index >= start.index);
        self.start = start;
        self.synced = self.synced.max(start.index - 1);
        Ok(n)
    }

    /// Empties the log so that it starts at `start` (a follower behind the leader's
    /// log start). Durable on return. The new start is the commit point: written
    /// first, atomically; recovery discards segments that do not begin there.
    pub fn reset(&mut self, start: LogStart) -> Result<(), Error> {
        if start.index == 0 {
            return Err(Error::InvalidConfig { reason: "a log start index must be at least 1".into() });
        }
        self.check_poison()?;
        let kept = SyncMark { index: start.index - 1, term: start.prev_term };
        self.lower_synced(kept);
        self.lower_mark(kept)?;
        recovery::write_log_start(&self.dir, &start)?;
        let header = SegmentHeader {
            id: files::random_u64(),
            first_index: start.index,
            base_offset: start.offset,
            prev_term: start.prev_term,
        };
        let removed = self.replace_tail(0, header)?;
        self.start = start;
        self.remove_files(removed, start.index)?;
        self.synced = start.index - 1;
        Ok(())
    }

    /// Every segment, oldest first; loads sealed segments not used yet.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        (0..self.segments.len())
            .map(|k| {
                let first_index = self.segments[k].first_index;
                let last_index = self.last_of(k);
                let sealed = k + 1 < self.segments.len();
                let path = files::segment_path(&self.dir, first_index);
                let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
                match self.state(k) {
                    Ok(s) => SegmentInfo {
                        first_index,
                        last_index,
                        first_offset: s.header.base_offset,
                        next_offset: if sealed {
                            self.state(k + 1).map_or(0, |n| n.header.base_offset)
                        } else {
                            s.next_offset
                        },
                        bytes_used: s.end,
                        file_bytes: s.map.len() as u64,
                        sealed,
                        modified,
                        readable: true,
                        path,
                    },
                    Err(e) => {
                        tracing::error!(segment = %path.display(), error = %e, "cannot load segment");
                        SegmentInfo {
                            first_index,
                            last_index,
                            first_offset: 0,
                            next_offset: 0,
                            bytes_used: 0,
                            file_bytes: 0,
                            sealed,
                            modified,
                            readable: false,
                            path,
                        }
                    }
                }
            })
            .collect()
    }

    /// The file and byte position of entry `index`: for tests that damage files.
    #[doc(hidden)]
    pub fn position_of(&self, index: u64) -> Result<(PathBuf, u64), Error> {
        let (first, last) = (self.first_index(), self.last_index());
        if index < first || index > last {
            return Err(Error::OutOfRange { requested: index, first, last });
        }
        let state = self.state(self.segment_of(index))?;
        Ok((state.path.clone(), state.position_of(index, self.config.entry_bytes_max)?))
    }

    fn check_poison(&self) -> Result<(), Error> {
        match self.poison.get() {
            Some(op) => Err(Error::Poisoned { op }),
            None => Ok(()),
        }
    }

    pub(crate) fn active(&self) -> &SegmentState {
        self.segments.last().and_then(|s| s.state.get()).expect("the active segment is always loaded")
    }

    fn active_mut(&mut self) -> &mut SegmentState {
        self.segments.last_mut().and_then(|s| s.state.get_mut()).expect("the active segment is always loaded")
    }

    /// The segment holding `index` (`first_index() <= index <= last_index()`).
    fn segment_of(&self, index: u64) -> usize {
        self.segments.partition_point(|s| s.first_index <= index) - 1
    }

    /// The last index of segment `k`: the next segment's first index decides.
    fn last_of(&self, k: usize) -> u64 {
        match self.segments.get(k + 1) {
            Some(next) => next.first_index - 1,
            None => self.active().last_index,
        }
    }

    /// Segment `k`'s state, loading a sealed segment on first use (scanning it only if
    /// its index file is missing or damaged, and then rewriting that).
    fn state(&self, k: usize) -> Result<&SegmentState, Error> {
        let segment = &self.segments[k];
        if let Some(s) = segment.state.get() {
            return Ok(s);
        }
        let _guard = self.load_lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = segment.state.get() {
            return Ok(s);
        }
        let limit = self.last_of(k);
        let loaded = SegmentState::load(&self.dir, segment.first_index, Some(limit), &self.config)?;
        if loaded.index_stale {
            let seal = loaded.state.last_index >= limit;
            recovery::persist_index(&self.dir, &loaded.state, &loaded.file, seal, &self.config)?;
            let segment = loaded.state.path.display();
            tracing::warn!(%segment, sealed = seal, damaged = loaded.index_damaged, "rebuilt a segment's index file");
        }
        Ok(segment.state.get_or_init(|| loaded.state))
    }
}

pub(crate) type NewSegment = (Segment, OpenSegment);

/// Creates a segment file (durably): the parts that become the log's active segment.
pub(crate) fn new_segment(dir: &Path, header: SegmentHeader, config: &Config) -> Result<NewSegment, Error> {
    let (state, data, index) = SegmentState::create(dir, header, config)?;
    let first_index = header.first_index;
    let open = OpenSegment { first_index, data: Arc::new(data), index: Arc::new(index), persisted: 0, sealed_at: None };
    Ok((Segment { first_index, state: OnceLock::from(state) }, open))
}

/// A seal or checkpoint as stored: used by recovery to write whole index files.
pub(crate) fn index_records(state: &SegmentState, seal: bool) -> impl Iterator<Item = Record> + '_ {
    let seal: Option<Checkpoint> = seal.then(|| state.seal());
    state.checkpoints.owned_from(0).map(Record::Checkpoint).chain(seal.map(Record::Seal))
}
