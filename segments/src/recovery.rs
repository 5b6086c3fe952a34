//! Opening a log directory: lock it, find the segments that form the log, scan
//! only what may not be durable, and report what was cut. FORMAT.md, "Recovery",
//! states the rules; this file applies them in order.

use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use crate::config::Config;
use crate::error::Error;
use crate::files::{self, LOCK_FILE, LOG_START_FILE};
use crate::format::{
    INDEX_HEADER_LEN, INDEX_RECORD_LEN, LogStart, SEGMENT_HEADER_LEN, SegmentHeader, SyncMark, decode_log_start,
    encode_index_header, encode_log_start,
};
use crate::log::{Log, Segment, index_records, new_segment};
use crate::segment::{Loaded, SegmentState, Stop};
use crate::sync_mark::MarkFile;
use crate::writer::Writer;

/// What recovery found and did. Empty lists mean a clean open.
#[derive(Clone, Debug, Default)]
pub struct RecoveryReport {
    pub dir: PathBuf,
    pub start: LogStart,
    pub first_index: u64,
    pub last_index: u64,
    /// Segments in the log after recovery.
    pub segments: usize,
    /// Segment files recovery opened; the other sealed segments load on first use,
    /// so this stays small however many there are.
    pub segments_read: usize,
    /// Segments read past their last durable checkpoint, and where each read stopped.
    pub scans: Vec<TailScan>,
    /// Segment files deleted because they were not part of the log.
    pub discarded: Vec<Discarded>,
    /// Index files rewritten (missing, damaged, or behind their segment).
    pub indexes_rebuilt: Vec<PathBuf>,
    /// The sync mark found (FORMAT.md, "Sync-mark file"): the highest entry a finished
    /// sync made durable. Above `last_index`, recovery cut synced entries (`lost_synced`).
    pub sync_mark: SyncMark,
    /// Anything else worth a line (e.g. a rebuilt log-start file).
    pub notes: Vec<String>,
}

/// One segment scanned on open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TailScan {
    pub segment: PathBuf,
    /// Byte range read and the entries found in it.
    pub from: u64,
    pub to: u64,
    pub entries: u64,
    /// Why the scan stopped; `Torn` and `Misplaced` mean the rest of the file was cut.
    pub stop: Stop,
    /// Non-zero bytes dropped at the cut (up to the first all-zero 4 KiB page).
    pub bytes_dropped: u64,
}

impl TailScan {
    /// Whether bytes were cut (not just a clean end of data).
    pub fn is_cut(&self) -> bool {
        matches!(self.stop, Stop::Torn(_) | Stop::Misplaced { .. })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discarded {
    pub segment: PathBuf,
    pub reason: &'static str,
}

impl RecoveryReport {
    /// True when nothing was cut, discarded or rebuilt.
    pub fn is_clean(&self) -> bool {
        !self.scans.iter().any(TailScan::is_cut) && self.discarded.is_empty() && self.lost_synced().is_none()
    }

    /// The sync mark, when the recovered log ends before it: entries `last_index + 1 ..=
    /// mark.index` had been made durable by a sync (and may have been acknowledged), and
    /// recovery cut them as damaged. A crash alone never does this; damage does.
    pub fn lost_synced(&self) -> Option<SyncMark> {
        (self.sync_mark.index > self.last_index).then_some(self.sync_mark)
    }
}

impl fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "opened {}: {} segment(s) ({} read), entries {}..={}, start {}",
            self.dir.display(),
            self.segments,
            self.segments_read,
            self.first_index,
            self.last_index,
            self.start
        )?;
        for s in &self.scans {
            write!(f, "\n  scanned {} bytes {}..{}: {} entries", s.segment.display(), s.from, s.to, s.entries)?;
            match &s.stop {
                Stop::End | Stop::Limit => write!(f, ", clean end")?,
                Stop::Torn(e) => write!(f, "; CUT at byte {}: {e}; {} bytes dropped", s.to, s.bytes_dropped)?,
                Stop::Misplaced { expected_index, found_index } => write!(
                    f,
                    "; CUT at byte {}: entry {found_index} where {expected_index} belongs; {} bytes dropped",
                    s.to, s.bytes_dropped
                )?,
            }
        }
        for d in &self.discarded {
            write!(f, "\n  discarded {}: {}", d.segment.display(), d.reason)?;
        }
        for p in &self.indexes_rebuilt {
            write!(f, "\n  rebuilt index {}", p.display())?;
        }
        if let Some(mark) = self.lost_synced() {
            let (from, to) = (self.last_index + 1, mark.index);
            write!(f, "\n  LOST entries {from}..={to}: a sync had made them durable (damage, not a crash)")?;
        }
        for n in &self.notes {
            write!(f, "\n  {n}")?;
        }
        Ok(())
    }
}

pub(crate) fn open(dir: &Path, config: Config) -> Result<(Log, RecoveryReport), Error> {
    config.validate()?;
    std::fs::create_dir_all(dir).map_err(Error::io("create directory", dir))?;
    let lock = lock(dir)?;
    let listing = files::list(dir)?;
    let mut report = RecoveryReport { dir: dir.to_path_buf(), ..RecoveryReport::default() };
    let mut segs = listing.segments;

    let start_path = dir.join(LOG_START_FILE);
    let start = match files::read_if_exists(&start_path)? {
        Some(b) => decode_log_start(&b).map_err(|reason| Error::BadFile { path: start_path, reason })?,
        None => {
            let start = match segs.first() {
                Some(&first) => {
                    report.notes.push("log-start file missing: rebuilt from the first segment's header".into());
                    read_header(dir, first)?.start()
                }
                None => LogStart::default(),
            };
            write_log_start(dir, &start)?;
            start
        }
    };

    // Segments below the start are left by an interrupted drop_before or reset; a
    // first segment that does not begin exactly at the start, by an interrupted reset.
    let below = segs.partition_point(|&f| f < start.index);
    discard(dir, &mut report, segs.drain(..below), "below the log start (interrupted drop_before or reset)")?;
    if let Some(&first) = segs.first()
        && (first != start.index || read_header(dir, first)?.start() != start)
    {
        discard(dir, &mut report, segs.drain(..), "does not begin at the log start (interrupted reset)")?;
    }

    // Walk back from the newest segment until one whose index holds a seal: a seal
    // is written only once its segment is durable, and a sync covers every file, so
    // everything before it is durable too. Segments after it may have lost writes.
    let mut loaded: Vec<Option<Loaded>> = segs.iter().map(|_| None).collect();
    let mut k = segs.len();
    while k > 0 {
        k -= 1;
        let limit = segs.get(k + 1).map(|&next| next - 1);
        let l = SegmentState::load(dir, segs[k], limit, &config)?;
        report.segments_read += 1;
        if let Some(s) = &l.scanned {
            report.scans.push(TailScan {
                segment: l.state.path.clone(),
                from: s.from,
                to: s.to,
                entries: s.entries,
                stop: s.stop.clone(),
                bytes_dropped: s.bytes_after,
            });
        }
        if limit.is_some_and(|limit| l.state.last_index < limit) {
            // Entries before the next segment are missing: they were never synced, so
            // neither was anything after them (a sync covers all earlier appends).
            loaded.truncate(k + 1);
            discard(dir, &mut report, segs.drain(k + 1..), "follows entries lost in a crash (never synced)")?;
        }
        let sealed = l.sealed;
        loaded[k] = Some(l);
        if sealed {
            break;
        }
    }
    // Older sealed segments are loaded on first use; those without an index file
    // (the listing shows it) are rebuilt now, so the report can say so.
    for k in 0..segs.len() {
        if loaded[k].is_none() && !listing.indexes.contains(&segs[k]) {
            loaded[k] = Some(SegmentState::load(dir, segs[k], Some(segs[k + 1] - 1), &config)?);
            report.segments_read += 1;
        }
    }

    // What recovery read may sit in the page cache only (after kill -9): make it
    // durable, then index it, sealing every segment that reaches its end.
    let count = loaded.len();
    for (k, l) in loaded.iter().enumerate() {
        let Some(l) = l.as_ref().filter(|l| l.index_stale) else { continue };
        if l.state.last_index + 1 == l.state.header.first_index {
            continue; // empty: nothing to index (and replaced below if last)
        }
        let seal = k + 1 == count || l.state.last_index >= segs[k + 1] - 1;
        persist_index(dir, &l.state, &l.file, seal, &config)?;
        if l.index_damaged {
            report.indexes_rebuilt.push(files::index_path(dir, segs[k]));
        }
    }

    // New entries always go to a fresh segment: never after bytes that an earlier
    // process wrote (they may hide stale entries past a lost page).
    let (last_index, last_term, next_offset) = match loaded.last().and_then(Option::as_ref) {
        Some(l) => (l.state.last_index, l.state.last_term, l.state.next_offset),
        None => (start.index - 1, start.prev_term, start.offset),
    };
    if loaded.last().and_then(Option::as_ref).is_some_and(|l| l.state.last_index + 1 == l.state.header.first_index) {
        // An empty last segment is replaced by the new one of the same name.
        segs.pop();
        loaded.pop();
    }
    let header = SegmentHeader {
        id: files::random_u64(),
        first_index: last_index + 1,
        base_offset: next_offset,
        prev_term: last_term,
    };
    let (active, open) = new_segment(dir, header, &config)?;
    files::sync_dir(dir)?;
    let mark = match MarkFile::open(dir)? {
        // Recovery made the log durable through `last_index` (the new log takes every
        // entry as synced), so the mark must reach it; above it, it tells of a loss.
        Some(mut mark) if mark.mark().index < last_index => {
            mark.write(SyncMark { index: last_index, term: last_term })?;
            mark
        }
        Some(mark) => mark,
        None => {
            if !segs.is_empty() || last_index >= start.index {
                report.notes.push(
                    "sync-mark file missing or damaged: a new one holds the recovered end, so damage to \
                     synced entries before this open was not told from an unsynced tail"
                        .into(),
                );
            }
            MarkFile::create(dir, SyncMark { index: last_index, term: last_term })?
        }
    };
    report.sync_mark = mark.mark();

    let mut segments: Vec<Segment> = segs
        .iter()
        .zip(loaded)
        .map(|(&first_index, l)| Segment { first_index, state: l.map(|l| OnceLock::from(l.state)).unwrap_or_default() })
        .collect();
    segments.push(active);
    assert_eq!(segments[0].first_index, start.index, "the log begins at its start");
    assert!(segments.windows(2).all(|w| w[0].first_index < w[1].first_index), "segments in index order");

    let writer = Writer::new(open.data.clone());
    let log = Log {
        dir: dir.to_path_buf(),
        config,
        _lock: lock,
        start,
        segments,
        writer,
        open: vec![open],
        synced: last_index,
        sync_seq: 0,
        floors: Vec::new(),
        poison: Arc::default(),
        mark: Arc::new(Mutex::new(mark)),
        load_lock: Mutex::new(()),
        index_buf: Vec::new(),
    };
    report.start = start;
    report.first_index = log.first_index();
    report.last_index = log.last_index();
    report.segments = log.segments.len();
    if report.is_clean() {
        tracing::info!("{report}");
    } else {
        tracing::warn!("{report}");
    }
    Ok((log, report))
}

/// Takes the directory's exclusive lock (released when the file is closed).
fn lock(dir: &Path) -> Result<File, Error> {
    let path = dir.join(LOCK_FILE);
    let file =
        OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(Error::io("open", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(Error::Locked { dir: dir.to_path_buf() }),
        Err(TryLockError::Error(e)) => Err(Error::io("lock", path)(e)),
    }
}

fn read_header(dir: &Path, first_index: u64) -> Result<SegmentHeader, Error> {
    let path = files::segment_path(dir, first_index);
    let mut buf = [0u8; SEGMENT_HEADER_LEN];
    let file = files::open_read(&path)?;
    let n = std::os::unix::fs::FileExt::read_at(&file, &mut buf, 0).map_err(Error::io("read", &path))?;
    let header = SegmentHeader::decode(&buf[..n]).map_err(|reason| Error::BadFile { path: path.clone(), reason })?;
    if header.first_index != first_index {
        let reason = crate::HeaderError::WrongFirstIndex { expected: first_index, found: header.first_index };
        return Err(Error::BadFile { path, reason });
    }
    Ok(header)
}

fn discard(
    dir: &Path,
    report: &mut RecoveryReport,
    firsts: impl Iterator<Item = u64>,
    reason: &'static str,
) -> Result<(), Error> {
    for first in firsts {
        files::remove_segment(dir, first)?;
        report.discarded.push(Discarded { segment: files::segment_path(dir, first), reason });
    }
    Ok(())
}

/// Writes the log-start file atomically and durably.
pub(crate) fn write_log_start(dir: &Path, start: &LogStart) -> Result<(), Error> {
    files::write_atomic(&dir.join(LOG_START_FILE), &encode_log_start(start))?;
    files::sync_dir(dir)
}

/// Rewrites a segment's whole index file (atomically) after making its data durable:
/// an index record must never name bytes that are not on disk.
pub(crate) fn persist_index(
    dir: &Path,
    state: &SegmentState,
    data: &File,
    seal: bool,
    config: &Config,
) -> Result<(), Error> {
    data.sync_data().map_err(Error::io("fsync", &state.path))?;
    let mut bytes = Vec::with_capacity(INDEX_HEADER_LEN + (state.checkpoints.len() + 1) * INDEX_RECORD_LEN);
    bytes.extend_from_slice(&encode_index_header(&state.header, config.timestamp.is_some()));
    for r in index_records(state, seal) {
        bytes.extend_from_slice(&r.encode(state.header.id));
    }
    files::write_atomic(&files::index_path(dir, state.header.first_index), &bytes)?;
    files::sync_dir(dir)
}
