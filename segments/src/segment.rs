//! One segment: its mapped file, its sparse index, and the walks over its entries
//! (lookup, recovery scan). Knows nothing of its neighbours; `log.rs` does.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use memmap2::{Mmap, MmapOptions, MmapRaw};

use crate::checkpoints::Checkpoints;
use crate::config::Config;
use crate::entry::{DecodeError, Entry};
use crate::error::Error;
use crate::files;
use crate::format::{
    Checkpoint, INDEX_HEADER_LEN, INDEX_RECORD_LEN, Record, SEGMENT_HEADER_LEN, SegmentHeader, encode_index_header,
    index_header_matches,
};

/// Recovery looks this far past a stop for bytes that are not zero (to tell a clean
/// end from lost or torn data), one page at a time, up to the first all-zero page.
const PAGE_BYTES: usize = 4096;

/// Owner of a mapping inside `Bytes::from_owner`: every entry handed out keeps it alive.
struct MapOwner(Arc<MmapRaw>);

impl AsRef<[u8]> for MapOwner {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the mapping lives as long as `self`. Bytes inside it that a reader can
        // see are never written again (FORMAT.md, "Bytes are never overwritten"); the
        // writer only fills (by pwrite) the part past every view handed out.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr(), self.0.len()) }
    }
}

/// What a segment holds, as far as this process knows.
pub(crate) struct SegmentState {
    pub path: PathBuf,
    pub header: SegmentHeader,
    /// The whole file, mapped once; entries are slices of it.
    pub map: Bytes,
    pub checkpoints: Checkpoints,
    /// Position after the last entry.
    pub end: u64,
    /// Last entry in this file (`first_index - 1` when empty). The log may end the
    /// segment earlier: at the next segment's first index minus one.
    pub last_index: u64,
    pub last_term: u64,
    pub next_offset: u64,
    /// The largest timestamp of the entries through `last_index` (0 when none has one).
    pub max_timestamp: u64,
}

/// Why a recovery scan stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Zero-filled bytes: the end of what was written.
    End,
    /// The next segment begins here; the rest of this file is not part of the log.
    Limit,
    /// An entry that does not decode (torn write, lost page, flipped bits).
    Torn(DecodeError),
    /// An intact entry that does not continue the log (stale bytes).
    Misplaced { expected_index: u64, found_index: u64 },
}

/// What a recovery scan read.
#[derive(Clone, Debug)]
pub(crate) struct Scanned {
    pub from: u64,
    pub to: u64,
    pub entries: u64,
    pub stop: Stop,
    /// Non-zero bytes found at and after the stop, up to the first all-zero page.
    pub bytes_after: u64,
}

/// A segment read from disk, with what it took to trust it.
pub(crate) struct Loaded {
    pub state: SegmentState,
    pub file: File,
    /// The index file holds a valid seal: the data is durable through it, nothing was scanned.
    pub sealed: bool,
    pub scanned: Option<Scanned>,
    /// The index file lacks a seal (or more): it must be rewritten once the data is durable.
    pub index_stale: bool,
    /// The index file was missing, foreign or damaged (not just behind its segment).
    pub index_damaged: bool,
}

fn map_bytes(raw: Arc<MmapRaw>) -> Bytes {
    Bytes::from_owner(MapOwner(raw))
}

impl SegmentState {
    fn empty(path: PathBuf, header: SegmentHeader, map: Bytes, checkpoints: Checkpoints) -> SegmentState {
        SegmentState {
            path,
            header,
            map,
            checkpoints,
            end: SEGMENT_HEADER_LEN as u64,
            last_index: header.first_index - 1,
            last_term: header.prev_term,
            next_offset: header.base_offset,
            max_timestamp: 0,
        }
    }

    /// Creates a new, empty segment file and its index file (durably: the directory
    /// is fsync'd), replacing any of the same name. Returns the state (with the file
    /// mapped read-only) and the data and index files.
    pub fn create(dir: &Path, header: SegmentHeader, config: &Config) -> Result<(SegmentState, File, File), Error> {
        let path = files::segment_path(dir, header.first_index);
        let index_path = files::index_path(dir, header.first_index);
        let index_header = encode_index_header(&header, config.timestamp.is_some());
        let idx = files::create_preallocated(&index_path, &index_header, INDEX_HEADER_LEN as u64)?;
        let data = files::create_preallocated(&path, &header.encode(), config.segment_bytes)?;
        files::sync_dir(dir)?;
        let raw = Arc::new(MmapOptions::new().map_raw_read_only(&data).map_err(Error::io("map", &path))?);
        let capacity = (config.segment_bytes / u64::from(config.index_interval_bytes)).min(1 << 16) as usize + 16;
        let checkpoints = Checkpoints::Owned(Vec::with_capacity(capacity));
        Ok((SegmentState::empty(path, header, map_bytes(raw), checkpoints), data, idx))
    }

    /// Reads a segment from disk. Trusts a valid sealed index; otherwise scans from
    /// the last valid checkpoint to the end of the data, or up to `limit` (the index
    /// before the next segment), rebuilding the checkpoints.
    pub fn load(dir: &Path, first_index: u64, limit: Option<u64>, config: &Config) -> Result<Loaded, Error> {
        let path = files::segment_path(dir, first_index);
        let file = files::open_read(&path)?;
        let len = file.metadata().map_err(Error::io("stat", &path))?.len();
        let bad = |reason| Error::BadFile { path: path.clone(), reason };
        if len < SEGMENT_HEADER_LEN as u64 {
            return Err(bad(crate::HeaderError::Truncated { len: len as usize, needed: SEGMENT_HEADER_LEN }));
        }
        let raw = Arc::new(MmapOptions::new().map_raw_read_only(&file).map_err(Error::io("map", &path))?);
        let map = map_bytes(raw);
        let header = SegmentHeader::decode(&map).map_err(bad)?;
        if header.first_index != first_index {
            return Err(bad(crate::HeaderError::WrongFirstIndex { expected: first_index, found: header.first_index }));
        }
        let (checkpoints, seal, index_damaged) = read_index(dir, &header, len, config.timestamp.is_some())?;
        let index_stale = seal.is_none();
        let mut state = SegmentState::empty(path, header, map, checkpoints);
        match seal {
            Some(s) if limit.is_none_or(|l| s.index >= l) => {
                state.resume_at(s, false);
                return Ok(Loaded { state, file, sealed: true, scanned: None, index_stale, index_damaged });
            }
            Some(s) => state.resume_at(s, false),
            None => {
                if let Some(c) = state.checkpoints.last() {
                    state.resume_at(c, true);
                }
            }
        }
        let scanned = state.scan(limit, config);
        Ok(Loaded { state, file, sealed: false, scanned: Some(scanned), index_stale: true, index_damaged })
    }

    /// Positions the state at a trusted point: the entry a checkpoint names (`at_entry`,
    /// which the scan reads again) or the end a seal names.
    fn resume_at(&mut self, c: Checkpoint, at_entry: bool) {
        self.end = c.position;
        self.last_term = c.term;
        self.next_offset = c.base_offset;
        self.max_timestamp = c.max_timestamp;
        self.last_index = if at_entry { c.index - 1 } else { c.index };
    }

    /// Reads entries from `end` on while they decode and continue the log, stopping
    /// after `limit`; records checkpoints as appending would have.
    pub fn scan(&mut self, limit: Option<u64>, config: &Config) -> Scanned {
        let from = self.end;
        let mut entries = 0;
        let stop = loop {
            if limit.is_some_and(|l| self.last_index >= l) {
                break Stop::Limit;
            }
            match self.decode_at(self.end, config.entry_bytes_max) {
                Err(e) => break Stop::Torn(e),
                Ok(e) if e.index() != self.last_index + 1 || e.base_offset() != self.next_offset => {
                    break Stop::Misplaced { expected_index: self.last_index + 1, found_index: e.index() };
                }
                Ok(e) => {
                    self.push(&e, config);
                    entries += 1;
                }
            }
        };
        let bytes_after = if stop == Stop::Limit { 0 } else { self.nonzero_extent(self.end) };
        let stop = if bytes_after == 0 && stop != Stop::Limit { Stop::End } else { stop };
        Scanned { from, to: self.end, entries, stop, bytes_after }
    }

    /// Accounts for entry `e`, just written (or found) at `end`. Checkpoints the
    /// segment's first entry, every entry that starts a new term (so `term_of` needs
    /// no data), and the first entry at least `index_interval_bytes` past the last
    /// checkpoint; each checkpoint keeps the largest timestamp before its entry.
    pub fn push(&mut self, e: &Entry, config: &Config) {
        let position = self.end;
        let wanted = match self.checkpoints.last() {
            None => true,
            Some(c) => e.term() != self.last_term || position - c.position >= u64::from(config.index_interval_bytes),
        };
        if wanted {
            let (index, term, base_offset, max_timestamp) = (e.index(), e.term(), e.base_offset(), self.max_timestamp);
            self.checkpoints.owned_mut().push(Checkpoint { index, term, base_offset, position, max_timestamp });
        }
        self.end += e.encoded_len() as u64;
        self.last_index = e.index();
        self.last_term = e.term();
        self.next_offset = e.next_offset();
        self.max_timestamp = self.max_timestamp.max(timestamp(e, config));
    }

    fn decode_at(&self, position: u64, max_len: u32) -> Result<Entry, DecodeError> {
        let from = (position as usize).min(self.map.len());
        Entry::decode_prefix(&self.map.slice(from..), max_len).map(|(e, _)| e)
    }

    /// The entry at `position`, which must be entry `index`: CRC-checked, never trusted.
    pub fn entry_at(&self, position: u64, index: u64, max_len: u32) -> Result<Entry, Error> {
        let e = self.decode_at(position, max_len).map_err(|reason| self.corrupt(position, reason))?;
        if e.index() != index {
            return Err(Error::Misplaced { segment: self.path.clone(), position, expected: index, found: e.index() });
        }
        Ok(e)
    }

    pub fn corrupt(&self, position: u64, reason: DecodeError) -> Error {
        Error::Corrupt { segment: self.path.clone(), position, reason }
    }

    /// Where entry `index` (of this segment) starts: a binary search of the
    /// checkpoints, then a short walk that checks every entry it passes.
    pub fn position_of(&self, index: u64, max_len: u32) -> Result<u64, Error> {
        let (mut position, mut at) = self.walk_start(index);
        while at < index {
            position += self.entry_at(position, at, max_len)?.encoded_len() as u64;
            at += 1;
        }
        Ok(position)
    }

    /// Where a walk to entry `index` starts: the checkpoint at or before it, else the
    /// segment's first entry (a segment rebuilt by a scan that stopped at its first
    /// entry has no checkpoint; the walk then reports that entry's damage).
    pub fn walk_start(&self, index: u64) -> (u64, u64) {
        let first = (SEGMENT_HEADER_LEN as u64, self.header.first_index);
        self.checkpoints.floor(index, |c| c.index).map_or(first, |c| (c.position, c.index))
    }

    /// The index of the entry whose records contain `offset`, which the caller knows
    /// lies in this segment (at or before entry `last`).
    pub fn index_of_offset(&self, offset: u64, last: u64, max_len: u32) -> Result<Option<u64>, Error> {
        let (mut position, mut at) = match self.checkpoints.floor(offset, |c| c.base_offset) {
            Some(c) => (c.position, c.index),
            None if offset >= self.header.base_offset => (SEGMENT_HEADER_LEN as u64, self.header.first_index),
            None => return Ok(None),
        };
        while at <= last {
            let e = self.entry_at(position, at, max_len)?;
            if offset < e.next_offset() {
                return Ok((e.base_offset() <= offset).then_some(at));
            }
            position += e.encoded_len() as u64;
            at += 1;
        }
        Ok(None)
    }

    /// Term of entry `index` of this segment, from the checkpoints alone.
    pub fn term_of(&self, index: u64) -> Option<u64> {
        self.checkpoints.floor(index, |c| c.index).map(|c| c.term)
    }

    /// The seal record: the segment's end as this process knows it.
    pub fn seal(&self) -> Checkpoint {
        Checkpoint {
            index: self.last_index,
            term: self.last_term,
            base_offset: self.next_offset,
            position: self.end,
            max_timestamp: self.max_timestamp,
        }
    }

    /// Ends the segment after entry `index` (a truncation), which lies in it.
    pub fn cut_after(&mut self, index: u64, config: &Config) -> Result<(), Error> {
        assert!(index >= self.header.first_index, "cut_after({index}) before segment {}", self.header.first_index);
        let max_len = config.entry_bytes_max;
        // Walk from the checkpoint at or before `index`, as `position_of` does, taking the
        // largest timestamp of what is kept on the way.
        let (mut position, mut at) = self.walk_start(index);
        let mut max_timestamp = self.checkpoints.floor(index, |c| c.index).map_or(0, |c| c.max_timestamp);
        let e = loop {
            let e = self.entry_at(position, at, max_len)?;
            max_timestamp = max_timestamp.max(timestamp(&e, config));
            if at == index {
                break e;
            }
            position += e.encoded_len() as u64;
            at += 1;
        };
        self.checkpoints.retain_through(index);
        self.end = position + e.encoded_len() as u64;
        self.last_index = index;
        self.last_term = e.term();
        self.next_offset = e.next_offset();
        self.max_timestamp = max_timestamp;
        Ok(())
    }

    /// The first entry through `last` whose timestamp is at least `target`, if this
    /// segment holds one. Checkpoints keep the largest timestamp before their entry,
    /// which only grows along the segment: a binary search finds the last checkpoint
    /// before which every timestamp is below `target`, and the answer lies between it
    /// and the next checkpoint (at most ~`index_interval_bytes` of entries, all read
    /// and CRC-checked on the way).
    pub fn locate_timestamp(&self, target: u64, last: u64, config: &Config) -> Result<Option<u64>, Error> {
        let below = target.checked_sub(1).and_then(|t| self.checkpoints.floor(t, |c| c.max_timestamp));
        let (mut position, mut at) =
            below.map_or((SEGMENT_HEADER_LEN as u64, self.header.first_index), |c| (c.position, c.index));
        while at <= last.min(self.last_index) {
            let e = self.entry_at(position, at, config.entry_bytes_max)?;
            if config.timestamp.and_then(|f| f(&e)).is_some_and(|t| t >= target) {
                return Ok(Some(at));
            }
            position += e.encoded_len() as u64;
            at += 1;
        }
        Ok(None)
    }

    /// Counts bytes from `position` to the last non-zero byte before the first all-zero page.
    fn nonzero_extent(&self, position: u64) -> u64 {
        let len = self.map.len();
        let from = (position as usize).min(len);
        let (mut at, mut end) = (from, from);
        while at < len {
            let page_end = (at / PAGE_BYTES + 1).saturating_mul(PAGE_BYTES).min(len);
            match self.map[at..page_end].iter().rposition(|&b| b != 0) {
                Some(last) => end = at + last + 1,
                None => break,
            }
            at = page_end;
        }
        (end - from) as u64
    }
}

/// Reads a segment's index file: the valid prefix of its checkpoints, its seal, and
/// whether it is damaged (missing, foreign, or an invalid record before its end).
/// Anything invalid ends the trusted prefix.
fn read_index(dir: &Path, header: &SegmentHeader, data_len: u64, timestamps: bool) -> Result<IndexRead, Error> {
    let path = files::index_path(dir, header.first_index);
    let none = || Ok((Checkpoints::Owned(Vec::new()), None, true));
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return none(),
        Err(e) => return Err(Error::io("open", &path)(e)),
    };
    let len = file.metadata().map_err(Error::io("stat", &path))?.len();
    if len < INDEX_HEADER_LEN as u64 {
        return none();
    }
    // SAFETY: index files are never written in place once another process's segment
    // is loaded from them: they are only ever replaced by rename.
    let map = unsafe { Mmap::map(&file) }.map_err(Error::io("map", &path))?;
    if !index_header_matches(&map, header, timestamps) {
        return none();
    }
    let mut count = 0;
    let mut prev: Option<Checkpoint> = None;
    let mut seal = None;
    let records = (map.len() - INDEX_HEADER_LEN) / INDEX_RECORD_LEN;
    for rec in map[INDEX_HEADER_LEN..].chunks_exact(INDEX_RECORD_LEN) {
        match Record::decode(rec, header.id) {
            Some(Record::Checkpoint(c)) if follows(prev, c, header, data_len) => {
                prev = Some(c);
                count += 1;
            }
            Some(Record::Seal(s)) if prev.is_none_or(|p| seal_follows(p, s)) => {
                if s.position <= data_len && s.index + 1 >= header.first_index {
                    seal = Some(s);
                }
                break;
            }
            _ => break,
        }
    }
    let damaged = seal.is_none() && count < records;
    Ok((Checkpoints::Mapped { map, count }, seal, damaged))
}

type IndexRead = (Checkpoints, Option<Checkpoint>, bool);

/// Whether checkpoint `c` can follow `prev` in this segment.
fn follows(prev: Option<Checkpoint>, c: Checkpoint, header: &SegmentHeader, data_len: u64) -> bool {
    let in_file = c.position >= SEGMENT_HEADER_LEN as u64 && c.position < data_len;
    in_file
        && match prev {
            None => c.index == header.first_index && c.position == SEGMENT_HEADER_LEN as u64,
            Some(p) => {
                c.index > p.index
                    && c.position > p.position
                    && c.base_offset >= p.base_offset
                    && c.max_timestamp >= p.max_timestamp
            }
        }
}

/// Whether seal `s` can end a segment whose last checkpoint is `p`.
fn seal_follows(p: Checkpoint, s: Checkpoint) -> bool {
    s.index >= p.index && s.position > p.position && s.max_timestamp >= p.max_timestamp
}

/// An entry's timestamp for the index: 0 when it has none (or the log has no function).
fn timestamp(e: &Entry, config: &Config) -> u64 {
    config.timestamp.and_then(|f| f(e)).unwrap_or(0)
}
