//! Names and file-system steps: the only place that knows how files are named,
//! created atomically, deleted and made durable.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher, RandomState};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::Error;

pub(crate) const LOCK_FILE: &str = "LOCK";
pub(crate) const LOG_START_FILE: &str = "log-start";
pub(crate) const SYNC_MARK_FILE: &str = "sync-mark";
const SEGMENT_EXT: &str = "seg";
const INDEX_EXT: &str = "idx";
const TMP_EXT: &str = "tmp";

pub(crate) fn segment_path(dir: &Path, first_index: u64) -> PathBuf {
    dir.join(format!("{first_index:020}.{SEGMENT_EXT}"))
}

pub(crate) fn index_path(dir: &Path, first_index: u64) -> PathBuf {
    dir.join(format!("{first_index:020}.{INDEX_EXT}"))
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().expect("a file path").to_os_string();
    name.push(".");
    name.push(TMP_EXT);
    path.with_file_name(name)
}

/// What a directory holds: segment first indices and which of them have an index file.
#[derive(Default)]
pub(crate) struct Listing {
    pub segments: Vec<u64>,
    pub indexes: BTreeSet<u64>,
}

/// Lists the directory and removes leftovers of interrupted atomic writes (`*.tmp`).
pub(crate) fn list(dir: &Path) -> Result<Listing, Error> {
    let mut out = Listing::default();
    for item in fs::read_dir(dir).map_err(Error::io("list", dir))? {
        let path = item.map_err(Error::io("list", dir))?.path();
        let (Some(stem), Some(ext)) = (path.file_stem().and_then(|s| s.to_str()), path.extension()) else {
            continue;
        };
        if ext == TMP_EXT {
            remove(&path)?;
            continue;
        }
        let Ok(first) = stem.parse::<u64>() else { continue };
        if ext == SEGMENT_EXT {
            out.segments.push(first);
        } else if ext == INDEX_EXT {
            out.indexes.insert(first);
        }
    }
    out.segments.sort_unstable();
    Ok(out)
}

/// Writes a whole small file atomically: temp file, fsync, rename over `path`.
/// The caller fsyncs the directory (once, after all its renames).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = tmp_path(path);
    let mut file = create_truncated(&tmp)?;
    file.write_all(bytes).map_err(Error::io("write", &tmp))?;
    file.sync_all().map_err(Error::io("fsync", &tmp))?;
    rename(&tmp, path)
}

/// Creates `path` atomically with `header` at byte 0 and length `len` (zeros after
/// the header), and returns it open for reading and writing. The rename replaces any
/// file of that name; a mapping of the replaced file stays valid.
pub(crate) fn create_preallocated(path: &Path, header: &[u8], len: u64) -> Result<File, Error> {
    let tmp = tmp_path(path);
    let file = create_truncated(&tmp)?;
    file.write_all_at(header, 0).map_err(Error::io("write", &tmp))?;
    file.set_len(len).map_err(Error::io("preallocate", &tmp))?;
    file.sync_all().map_err(Error::io("fsync", &tmp))?;
    rename(&tmp, path)?;
    Ok(file)
}

fn create_truncated(path: &Path) -> Result<File, Error> {
    OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path).map_err(Error::io("create", path))
}

fn rename(from: &Path, to: &Path) -> Result<(), Error> {
    fs::rename(from, to).map_err(Error::io("rename", from))
}

pub(crate) fn open_read(path: &Path) -> Result<File, Error> {
    File::open(path).map_err(Error::io("open", path))
}

pub(crate) fn open_write(path: &Path) -> Result<File, Error> {
    OpenOptions::new().read(true).write(true).open(path).map_err(Error::io("open", path))
}

/// Reads a whole file, or `None` if it does not exist.
pub(crate) fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, Error> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", path)(e)),
    }
}

/// Removes a file; one that is already gone is fine (a crash may have removed it).
pub(crate) fn remove(path: &Path) -> Result<(), Error> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(Error::io("remove", path)(e)),
        _ => Ok(()),
    }
}

/// Removes a segment's data and index files.
pub(crate) fn remove_segment(dir: &Path, first_index: u64) -> Result<(), Error> {
    remove(&segment_path(dir, first_index))?;
    remove(&index_path(dir, first_index))
}

/// Makes creations, renames and deletions in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(Error::io("fsync directory", dir))
}

/// A random 64-bit value (std's per-process random hasher keys; no RNG crate needed).
pub(crate) fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.finish()
}
