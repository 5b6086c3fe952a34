//! The free-space guard: produce is refused with a clear error while the data directory's
//! file system is nearly full, so the node keeps serving reads and never fails a write
//! half-way (a failed log write stops the node, see `group.rs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const CHECK_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct FreeSpace {
    dir: PathBuf,
    free: Arc<AtomicU64>,
    min: u64,
}

impl FreeSpace {
    /// Starts a task that measures the free bytes under `dir` every second.
    pub fn watch(dir: &Path, min: u64) -> FreeSpace {
        let this = FreeSpace { dir: dir.into(), free: Arc::new(AtomicU64::new(u64::MAX)), min };
        this.refresh();
        let task = this.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(CHECK_EVERY);
            loop {
                every.tick().await;
                task.refresh();
            }
        });
        this
    }

    fn refresh(&self) {
        if let Some(free) = free_bytes(&self.dir) {
            self.free.store(free, Ordering::Relaxed);
        }
    }

    /// Why produce must be refused now, if it must.
    pub fn too_low(&self) -> Option<String> {
        let free = self.free.load(Ordering::Relaxed);
        (free < self.min).then(|| {
            format!(
                "disk nearly full: {} MiB free under {}, below the {} MiB reserve (disk_free_bytes_min); \
                 free space or lower retention_bytes",
                free >> 20,
                self.dir.display(),
                self.min >> 20
            )
        })
    }
}

/// Free bytes available to this user on the file system holding `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid NUL-terminated string and `stat` a valid out-pointer.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
    (rc == 0).then(|| stat.f_bavail as u64 * stat.f_frsize as u64)
}
