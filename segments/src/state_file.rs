//! Small state files beside a log. Two kinds (FORMAT.md, "State files"):
//!
//! - **Replaced whole** (`write`, `read`: a replica's identity, a snapshot): write a
//!   temporary file, fsync it, rename it over the old one, fsync the directory. A reader
//!   sees the old or the new contents, never a mix.
//! - **Rewritten in place** (`SlotFile`: the hard state, written at every term and vote
//!   change): two slots, written in turn, each with a sequence number; one write and one
//!   fdatasync, where a replacement costs two fsyncs and a rename.
//!
//! A CRC catches a file the medium damaged. Layout of a file replaced whole
//! (little-endian):
//!
//! ```text
//! offset size field
//!      0    4 magic    b"KEEL"
//!      4    1 kind     what the payload is (identity, hard state)
//!      5    1 version  of the payload layout
//!      6    4 len      payload bytes
//!     10  len payload
//! 10+len    4 crc      CRC-32 of bytes 0..10+len
//! ```

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::files;

const MAGIC: &[u8; 4] = b"KEEL";
const HEADER_LEN: usize = 10;

const SLOT_MAGIC: &[u8; 4] = b"KSLT";
/// magic, kind, version, 2 reserved, seq, len.
const SLOT_HEADER_LEN: usize = 20;
/// The smallest slot: a page, so no write touches both slots.
pub const SLOT_BYTES_MIN: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error(transparent)]
    Io(#[from] Error),
    #[error("{path} is damaged ({why}); restore it from a backup or remove the node's data directory and re-add it")]
    Damaged { path: PathBuf, why: String },
}

/// Replaces `path` with `payload`, durably.
pub fn write(path: &Path, kind: u8, version: u8, payload: &[u8]) -> Result<(), StateFileError> {
    let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len() + 4);
    bytes.extend_from_slice(MAGIC);
    bytes.push(kind);
    bytes.push(version);
    bytes.extend_from_slice(&u32::try_from(payload.len()).expect("state files are small").to_le_bytes());
    bytes.extend_from_slice(payload);
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    files::write_atomic(path, &bytes)?;
    files::sync_dir(path.parent().unwrap_or(Path::new(".")))?;
    Ok(())
}

/// Reads `path`: `None` if it does not exist; the payload and its version otherwise.
pub fn read(path: &Path, kind: u8) -> Result<Option<(u8, Vec<u8>)>, StateFileError> {
    let Some(bytes) = files::read_if_exists(path)? else { return Ok(None) };
    let damaged = |why: String| StateFileError::Damaged { path: path.into(), why };
    if bytes.len() < HEADER_LEN + 4 || &bytes[..4] != MAGIC {
        return Err(damaged("not a keel state file".into()));
    }
    if bytes[4] != kind {
        return Err(damaged(format!("holds kind {} where {kind} was expected", bytes[4])));
    }
    let len = u32::from_le_bytes(bytes[6..10].try_into().expect("4 bytes")) as usize;
    if bytes.len() != HEADER_LEN + len + 4 {
        return Err(damaged(format!("length {} does not match its header ({len})", bytes.len())));
    }
    let stored = u32::from_le_bytes(bytes[HEADER_LEN + len..].try_into().expect("4 bytes"));
    if stored != crc32fast::hash(&bytes[..HEADER_LEN + len]) {
        return Err(damaged("CRC mismatch".into()));
    }
    Ok(Some((bytes[5], bytes[HEADER_LEN..HEADER_LEN + len].to_vec())))
}

/// A small file rewritten in place: two slots of `slot_bytes` each (the file is twice
/// that long), written in turn. Layout of a slot (little-endian):
///
/// ```text
/// offset size field
///      0    4 magic    b"KSLT"
///      4    1 kind     what the payload is
///      5    1 version  of the payload layout
///      6    2 reserved 0
///      8    8 seq      sequence number of this write; slot `seq % 2` holds it
///     16    4 len      payload bytes
///     20  len payload
/// 20+len    4 crc      CRC-32 of bytes 0..20+len
/// ```
///
/// The contents are the valid slot with the higher `seq`. Writes are serialized (`&mut
/// self`) and each is fdatasync'd before it returns, so while one slot is being written
/// the other holds the last contents a write returned: a write torn by a crash spoils
/// only its own slot. A payload too large for the slots replaces the file whole with
/// larger slots (rare: a hard state grows only with the membership).
pub struct SlotFile {
    file: File,
    path: PathBuf,
    kind: u8,
    slot_bytes: u64,
    /// Sequence number of the newest slot written; the next write goes to the other one.
    seq: u64,
}

impl SlotFile {
    /// Opens `path`: `None` if it does not exist; the file and the version and payload of
    /// its newest valid slot otherwise. A file with no valid slot is damage (a write
    /// spoils one slot at most), reported as such.
    #[allow(clippy::type_complexity)]
    pub fn open(path: &Path, kind: u8) -> Result<Option<(SlotFile, u8, Vec<u8>)>, StateFileError> {
        let Some(bytes) = files::read_if_exists(path)? else { return Ok(None) };
        let damaged = |why: String| StateFileError::Damaged { path: path.into(), why };
        let len = bytes.len() as u64;
        if len < 2 * SLOT_BYTES_MIN || !len.is_multiple_of(2 * SLOT_BYTES_MIN) {
            return Err(damaged(format!("length {len} is not two slots")));
        }
        let slot_bytes = len / 2;
        let slots = [0u64, 1].map(|k| decode_slot(&bytes[(k * slot_bytes) as usize..((k + 1) * slot_bytes) as usize]));
        let Some((seq, slot_kind, version, payload)) = slots.into_iter().flatten().max_by_key(|s| s.0) else {
            return Err(damaged("neither slot holds a valid record".into()));
        };
        if slot_kind != kind {
            return Err(damaged(format!("holds kind {slot_kind} where {kind} was expected")));
        }
        let file = files::open_write(path)?;
        Ok(Some((SlotFile { file, path: path.into(), kind, slot_bytes, seq }, version, payload.to_vec())))
    }

    /// Creates `path` durably (replacing any file of that name) holding `payload` in slot 0.
    pub fn create(path: &Path, kind: u8, version: u8, payload: &[u8]) -> Result<SlotFile, StateFileError> {
        Self::create_at(path, kind, version, payload, 0)
    }

    fn create_at(path: &Path, kind: u8, version: u8, payload: &[u8], seq: u64) -> Result<SlotFile, StateFileError> {
        let slot_bytes = slot_bytes_for(payload.len());
        let record = encode_slot(kind, version, seq, payload);
        let mut bytes = vec![0; 2 * slot_bytes as usize];
        let at = ((seq % 2) * slot_bytes) as usize;
        bytes[at..at + record.len()].copy_from_slice(&record);
        files::write_atomic(path, &bytes)?;
        files::sync_dir(path.parent().unwrap_or(Path::new(".")))?;
        let file = files::open_write(path)?;
        Ok(SlotFile { file, path: path.into(), kind, slot_bytes, seq })
    }

    /// Writes `payload` to the slot not holding the newest contents and fdatasyncs it.
    /// After an error the file still reads as before this write or as this write; the
    /// caller must not go on as if either were certain (a replica stops).
    pub fn write(&mut self, version: u8, payload: &[u8]) -> Result<(), StateFileError> {
        let seq = self.seq + 1;
        if (SLOT_HEADER_LEN + payload.len() + 4) as u64 > self.slot_bytes {
            *self = Self::create_at(&self.path, self.kind, version, payload, seq)?;
            return Ok(());
        }
        let at = (seq % 2) * self.slot_bytes;
        let record = encode_slot(self.kind, version, seq, payload);
        self.file.write_all_at(&record, at).map_err(Error::io("write", &self.path))?;
        self.file.sync_data().map_err(Error::io("fsync", &self.path))?;
        self.seq = seq;
        Ok(())
    }
}

/// Slots hold a record of `payload_len` bytes: a page, or the next power of two.
fn slot_bytes_for(payload_len: usize) -> u64 {
    ((SLOT_HEADER_LEN + payload_len + 4) as u64).next_power_of_two().max(SLOT_BYTES_MIN)
}

fn encode_slot(kind: u8, version: u8, seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SLOT_HEADER_LEN + payload.len() + 4);
    out.extend_from_slice(SLOT_MAGIC);
    out.extend_from_slice(&[kind, version, 0, 0]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&u32::try_from(payload.len()).expect("state files are small").to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// `(seq, kind, version, payload)` of a valid slot; `None` for a torn, empty or damaged one.
fn decode_slot(slot: &[u8]) -> Option<(u64, u8, u8, &[u8])> {
    if slot.len() < SLOT_HEADER_LEN + 4 || &slot[..4] != SLOT_MAGIC {
        return None;
    }
    let seq = u64::from_le_bytes(slot[8..16].try_into().ok()?);
    let len = u32::from_le_bytes(slot[16..20].try_into().ok()?) as usize;
    let end = SLOT_HEADER_LEN.checked_add(len)?;
    let stored = u32::from_le_bytes(slot.get(end..end.checked_add(4)?)?.try_into().ok()?);
    (stored == crc32fast::hash(&slot[..end])).then(|| (seq, slot[4], slot[5], &slot[SLOT_HEADER_LEN..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage_detection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        assert!(read(&path, 1).unwrap().is_none());
        write(&path, 1, 3, b"hello").unwrap();
        assert_eq!(read(&path, 1).unwrap(), Some((3, b"hello".to_vec())));
        assert!(matches!(read(&path, 2), Err(StateFileError::Damaged { .. })));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER_LEN] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(matches!(read(&path, 1), Err(StateFileError::Damaged { .. })));
    }

    #[test]
    fn a_slot_file_reads_back_its_newest_write_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slots");
        assert!(SlotFile::open(&path, 2).unwrap().is_none());
        let mut file = SlotFile::create(&path, 2, 1, b"first").unwrap();
        for (n, text) in ["second", "third", "fourth"].iter().enumerate() {
            file.write(1 + n as u8, text.as_bytes()).unwrap();
            let (_, version, payload) = SlotFile::open(&path, 2).unwrap().unwrap();
            assert_eq!((version, payload.as_slice()), (1 + n as u8, text.as_bytes()));
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * SLOT_BYTES_MIN, "written in place");
        assert!(matches!(SlotFile::open(&path, 3), Err(StateFileError::Damaged { .. })), "another kind");
    }

    #[test]
    fn a_torn_write_leaves_the_write_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slots");
        let mut file = SlotFile::create(&path, 2, 1, b"kept").unwrap();
        file.write(1, b"torn by a crash").unwrap();
        // The second write went to slot 1: spoil its last byte, as a crash mid-write would.
        let mut bytes = std::fs::read(&path).unwrap();
        let end = SLOT_BYTES_MIN as usize + SLOT_HEADER_LEN + b"torn by a crash".len() + 3;
        bytes[end] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (mut reopened, _, payload) = SlotFile::open(&path, 2).unwrap().unwrap();
        assert_eq!(payload, b"kept");
        // The next write goes over the spoiled slot and wins.
        reopened.write(1, b"after").unwrap();
        assert_eq!(SlotFile::open(&path, 2).unwrap().unwrap().2, b"after");
        // Both slots spoiled is damage, never an empty state.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[SLOT_HEADER_LEN] ^= 1;
        bytes[SLOT_BYTES_MIN as usize + SLOT_HEADER_LEN] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(SlotFile::open(&path, 2), Err(StateFileError::Damaged { .. })));
    }

    #[test]
    fn a_payload_larger_than_a_slot_grows_the_slots() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slots");
        let mut file = SlotFile::create(&path, 2, 1, b"small").unwrap();
        let big = vec![7u8; 10_000];
        file.write(1, &big).unwrap();
        assert_eq!(SlotFile::open(&path, 2).unwrap().unwrap().2, big);
        file.write(1, b"small again").unwrap();
        assert_eq!(SlotFile::open(&path, 2).unwrap().unwrap().2, b"small again");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * 16384);
    }
}
