//! Disk faults, applied to the log directory of a node that was just killed (-9); the
//! harness restarts it afterwards. They read the files as `segments/FORMAT.md` lays them
//! out: entries from byte 64 of a segment (`len` at +4, `index` at +16, a CRC over
//! bytes 4..len), index files of 48-byte records after a 40-byte header (format version 2).
//!
//! - `FlipSealed`: one byte in the middle of an entry of a segment before the last one
//!   (recovery sealed it; it is never scanned at open, so a read or the scrub finds it).
//! - `FlipSealedOnTwo`: the same on two nodes at once, at different entries (the nemesis
//!   picks the nodes; `flip_sealed` with the first one's entry to avoid).
//! - `TruncateActive`: the last segment holding entries is cut short (truncate(2)) at an
//!   entry boundary: synced entries are lost, maybe committed ones.
//! - `DeleteIndexes`: every `.idx` file is deleted (recovery rebuilds them).
//! - `LoseUnsynced`: a power loss. Each segment keeps what its index file proves durable
//!   (an index record is written only after the data it names is synced: a seal keeps
//!   the segment, a checkpoint the entry it names and everything before), the rest of
//!   its entries become zeros, as unwritten preallocated space reads. Entries synced but
//!   not yet named by a record (up to ~4 KiB per segment) go too: a little harsher than
//!   a real power loss, never milder.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rand::Rng;
use rand::rngs::SmallRng;

const SEGMENT_HEADER_LEN: u64 = 64;
const ENTRY_HEADER_LEN: u64 = 40;
const INDEX_HEADER_LEN: u64 = 40;
const INDEX_RECORD_LEN: usize = 48;
/// Where an index record's kind and CRC lie (after index, term, base offset, position, max timestamp).
const RECORD_KIND_AT: usize = 40;
const RECORD_CRC_AT: usize = RECORD_KIND_AT + 4;
const INDEX_MAGIC: &[u8; 8] = b"KEELIDX\0";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskFault {
    FlipSealed,
    FlipSealedOnTwo,
    TruncateActive,
    DeleteIndexes,
    LoseUnsynced,
}

impl DiskFault {
    pub const ALL: [DiskFault; 5] = [
        DiskFault::FlipSealed,
        DiskFault::FlipSealedOnTwo,
        DiskFault::TruncateActive,
        DiskFault::DeleteIndexes,
        DiskFault::LoseUnsynced,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DiskFault::FlipSealed => "flip a byte in a sealed segment",
            DiskFault::FlipSealedOnTwo => "flip a byte in a sealed segment on two nodes, at different entries",
            DiskFault::TruncateActive => "truncate the active segment's tail",
            DiskFault::DeleteIndexes => "delete the index files",
            DiskFault::LoseUnsynced => "lose unsynced data",
        }
    }
}

/// One entry found in a segment file.
#[derive(Clone, Copy, Debug)]
struct Found {
    position: u64,
    len: u64,
    index: u64,
}

fn files_with(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == ext));
    files.sort(); // names are zero-padded first indexes
    files
}

fn first_index_of(path: &Path) -> u64 {
    path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The intact, contiguous entries of a segment file, up to (not including) index `limit`.
fn entries(file: &File, first_index: u64, limit: u64) -> Vec<Found> {
    let len = file.metadata().map_or(0, |m| m.len());
    let mut out = Vec::new();
    let (mut position, mut index) = (SEGMENT_HEADER_LEN, first_index);
    let mut header = [0u8; ENTRY_HEADER_LEN as usize];
    while index < limit && position + ENTRY_HEADER_LEN <= len {
        if file.read_exact_at(&mut header, position).is_err() {
            break;
        }
        let entry_len = u64::from(u32_at(&header, 4));
        if entry_len < ENTRY_HEADER_LEN || position + entry_len > len || u64_at(&header, 16) != index {
            break;
        }
        let mut bytes = vec![0u8; entry_len as usize];
        if file.read_exact_at(&mut bytes, position).is_err() || u32_at(&bytes, 0) != crc32fast::hash(&bytes[4..]) {
            break;
        }
        out.push(Found { position, len: entry_len, index });
        position += entry_len;
        index += 1;
    }
    out
}

/// Each segment with its entries (a segment ends where the next one begins).
fn segments(dir: &Path) -> Vec<(PathBuf, Vec<Found>)> {
    let files = files_with(dir, "seg");
    let mut out = Vec::new();
    for (k, path) in files.iter().enumerate() {
        let limit = files.get(k + 1).map_or(u64::MAX, |next| first_index_of(next));
        let Ok(file) = File::open(path) else { continue };
        out.push((path.clone(), entries(&file, first_index_of(path), limit)));
    }
    out
}

fn open_rw(path: &Path) -> Result<File, String> {
    OpenOptions::new().read(true).write(true).open(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Damages the log in `log_dir` (the node is not running); says what it did.
pub fn damage(log_dir: &Path, fault: DiskFault, rng: &mut SmallRng) -> Result<String, String> {
    if !log_dir.is_dir() {
        return Err(format!("{} is not a log directory: the data layout changed?", log_dir.display()));
    }
    match fault {
        DiskFault::FlipSealed | DiskFault::FlipSealedOnTwo => flip_sealed(log_dir, rng, None).map(|(what, _)| what),
        DiskFault::TruncateActive => truncate_active(log_dir, rng),
        DiskFault::DeleteIndexes => {
            let files = files_with(log_dir, "idx");
            for f in &files {
                std::fs::remove_file(f).map_err(|e| format!("{}: {e}", f.display()))?;
            }
            Ok(format!("deleted {} index files", files.len()))
        }
        DiskFault::LoseUnsynced => lose_unsynced(log_dir),
    }
}

/// Flips a bit of an entry of a sealed segment other than entry `avoid`; says what it did
/// and which entry it damaged (none if no sealed segment holds another entry).
pub fn flip_sealed(dir: &Path, rng: &mut SmallRng, avoid: Option<u64>) -> Result<(String, Option<u64>), String> {
    if !dir.is_dir() {
        return Err(format!("{} is not a log directory: the data layout changed?", dir.display()));
    }
    let all = segments(dir);
    let sealed: Vec<(&PathBuf, Vec<Found>)> = all
        .iter()
        .take(all.len().saturating_sub(1))
        .map(|(p, e)| (p, e.iter().copied().filter(|e| Some(e.index) != avoid).collect::<Vec<_>>()))
        .filter(|(_, e)| !e.is_empty())
        .collect();
    if sealed.is_empty() {
        return Ok(("nothing done: no sealed segment holds entries yet".into(), None));
    }
    let (path, found) = &sealed[rng.random_range(0..sealed.len())];
    let e = found[rng.random_range(0..found.len())];
    let at = e.position + 4 + rng.random_range(0..e.len - 4);
    let file = open_rw(path)?;
    let mut b = [0u8];
    file.read_exact_at(&mut b, at).map_err(|e| e.to_string())?;
    file.write_all_at(&[b[0] ^ (1 << rng.random_range(0..8))], at).map_err(|e| e.to_string())?;
    Ok((format!("flipped a bit of entry {} at byte {at} of {}", e.index, name(path)), Some(e.index)))
}

fn truncate_active(dir: &Path, rng: &mut SmallRng) -> Result<String, String> {
    let all = segments(dir);
    let Some((path, found)) = all.iter().rev().find(|(_, e)| !e.is_empty()) else {
        return Ok("nothing done: no segment holds entries yet".into());
    };
    let keep = rng.random_range(0..found.len());
    let cut = found[keep].position;
    open_rw(path)?.set_len(cut).map_err(|e| e.to_string())?;
    let (first, last) = (found[keep].index, found[found.len() - 1].index);
    Ok(format!("cut {} at byte {cut}: entries {first}..={last} gone", name(path)))
}

/// Where the durable part of a segment ends, by its index file: `None` if the file is
/// missing or names nothing (then the segment is left alone).
fn durable_end(seg: &Path, found: &[Found]) -> Option<u64> {
    let bytes = std::fs::read(seg.with_extension("idx")).ok()?;
    let header = bytes.get(..INDEX_HEADER_LEN as usize)?;
    if &header[..8] != INDEX_MAGIC || u32_at(header, 36) != crc32fast::hash(&header[..36]) {
        return None;
    }
    let segment_id = u64_at(header, 16);
    let mut end = None;
    for rec in bytes[INDEX_HEADER_LEN as usize..].chunks_exact(INDEX_RECORD_LEN) {
        let mut h = crc32fast::Hasher::new();
        h.update(&segment_id.to_le_bytes());
        h.update(&rec[..RECORD_CRC_AT]);
        if u32_at(rec, RECORD_CRC_AT) != h.finalize() {
            break;
        }
        let (index, position, kind) = (u64_at(rec, 0), u64_at(rec, 24), u32_at(rec, RECORD_KIND_AT));
        match kind {
            1 => {
                if let Some(e) = found.iter().find(|e| e.index == index && e.position == position) {
                    end = Some(e.position + e.len);
                }
            }
            2 => return Some(position),
            _ => break,
        }
    }
    end.or(Some(SEGMENT_HEADER_LEN))
}

fn lose_unsynced(dir: &Path) -> Result<String, String> {
    let mut lost = Vec::new();
    for (path, found) in segments(dir) {
        let (Some(end), Some(last)) = (durable_end(&path, &found), found.last()) else { continue };
        let data_end = last.position + last.len;
        if end >= data_end {
            continue;
        }
        open_rw(&path)?.write_all_at(&vec![0u8; (data_end - end) as usize], end).map_err(|e| e.to_string())?;
        let gone: Vec<u64> = found.iter().filter(|e| e.position >= end).map(|e| e.index).collect();
        if let (Some(a), Some(b)) = (gone.first(), gone.last()) {
            lost.push(format!("{}: entries {a}..={b} zeroed", name(&path)));
        }
    }
    Ok(if lost.is_empty() { "nothing unsynced to lose".into() } else { lost.join("; ") })
}

fn name(path: &Path) -> String {
    path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}
