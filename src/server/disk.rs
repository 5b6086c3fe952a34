//! The free-space guard: produce is refused with a clear error while the data directory's
//! file system is nearly full, so the node keeps serving reads and never fails a write
//! half-way (a failed log write stops the node, see `group.rs`). The free space, the
//! reserve and whether produce is refused are exported as metrics and answered to
//! `Request::Disk` (`keel status`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tracing::{info, warn};

use crate::metrics as m;
use crate::net::client_codec::DiskView;

const CHECK_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct FreeSpace {
    dir: PathBuf,
    free: Arc<AtomicU64>,
    min: u64,
    /// Whether the log says that free space is below the reserve (said once per episode).
    below: Arc<AtomicBool>,
}

impl FreeSpace {
    /// Starts a task that measures the free bytes under `dir` every second.
    pub fn watch(dir: &Path, min: u64) -> FreeSpace {
        let this = FreeSpace {
            dir: dir.into(),
            free: Arc::new(AtomicU64::new(u64::MAX)),
            min,
            below: Arc::new(AtomicBool::new(false)),
        };
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
        let view = self.view();
        metrics::gauge!(m::DISK_FREE_BYTES).set(view.free_bytes as f64);
        metrics::gauge!(m::DISK_RESERVE_BYTES).set(view.reserve_bytes as f64);
        metrics::gauge!(m::DISK_NEARLY_FULL).set(if view.refuses_produce() { 1.0 } else { 0.0 });
        // Said in the log too: a follower never refuses anything, it stops once a write
        // fails for want of space, and this is the warning before that.
        let (free_mib, reserve_mib, dir) = (view.free_bytes >> 20, view.reserve_bytes >> 20, self.dir.display());
        match (view.refuses_produce(), self.below.load(Ordering::Relaxed)) {
            (true, false) => warn!(
                free_mib,
                reserve_mib,
                "disk nearly full under {dir}: produce is refused while this node leads, and the node stops if \
                 a log write fails for want of space; free space or lower retention_bytes"
            ),
            (false, true) => info!(free_mib, reserve_mib, "free space under {dir} is above the reserve again"),
            _ => {}
        }
        self.below.store(view.refuses_produce(), Ordering::Relaxed);
    }

    /// The free space as last measured, and the reserve.
    pub fn view(&self) -> DiskView {
        DiskView { free_bytes: self.free.load(Ordering::Relaxed), reserve_bytes: self.min }
    }

    /// The free space and the reserve when produce must be refused now.
    pub fn too_low(&self) -> Option<DiskView> {
        Some(self.view()).filter(DiskView::refuses_produce)
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
