//! Small state files beside a log (a replica's identity and hard state), replaced
//! atomically: write a temporary file, fsync it, rename it over the old one, fsync the
//! directory. A reader sees the old or the new contents, never a mix; a CRC catches a
//! file the medium damaged. Layout (little-endian):
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

use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::files;

const MAGIC: &[u8; 4] = b"KEEL";
const HEADER_LEN: usize = 10;

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
}
