//! A node's data directory:
//!
//! ```text
//! DIR/identity                 the cluster id and node id, fixed at first start
//! DIR/groups/<group>/hard-state   one group's Raft hard state (`replica/hard_state.rs`)
//! DIR/groups/<group>/log/      one group's segments log
//! ```
//!
//! `<group>` is the group id in decimal. A directory of keel's first layout (one log:
//! `DIR/log`, `DIR/hard-state`) is refused with a message saying what to do.

use std::path::{Path, PathBuf};

use segments::state_file::{self, StateFileError};

use crate::codec::Reader;

const IDENTITY_FILE: &str = "identity";
const KIND_IDENTITY: u8 = 1;
const IDENTITY_VERSION: u8 = 1;
const GROUPS_DIR: &str = "groups";
const LOG_DIR: &str = "log";

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error(transparent)]
    File(#[from] StateFileError),
    #[error("cannot use the data directory {dir}: {source}")]
    Io { dir: PathBuf, source: std::io::Error },
    #[error(
        "{dir} belongs to cluster {found:016x}, but this node's certificates are for cluster {expected:016x}; \
         use the data directory of this cluster, or an empty one"
    )]
    OtherCluster { dir: PathBuf, found: u64, expected: u64 },
    #[error("{dir} belongs to node {found}, not node {expected}; point --dir at node {expected}'s data")]
    OtherNode { dir: PathBuf, found: u64, expected: u64 },
    #[error("{path} is malformed: {why}")]
    Malformed { path: PathBuf, why: String },
    #[error(
        "{dir} holds data in the layout of an older keel (one log in {dir}/log); this version keeps one \
         directory per Raft group under {dir}/groups. Start the node on an empty directory (keel has no \
         migration for that layout)"
    )]
    OldLayout { dir: PathBuf },
}

/// A node's data directory, checked to belong to this cluster and node.
#[derive(Clone, Debug)]
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    /// Creates the directory if needed, refuses an old layout, and records (first start) or
    /// checks the cluster and node id.
    pub fn open(dir: &Path, cluster_id: u64, node_id: u64) -> Result<Layout, LayoutError> {
        let io = |source| LayoutError::Io { dir: dir.into(), source };
        std::fs::create_dir_all(dir.join(GROUPS_DIR)).map_err(io)?;
        if dir.join("log").exists() || dir.join("hard-state").exists() {
            return Err(LayoutError::OldLayout { dir: dir.into() });
        }
        check_identity(dir, cluster_id, node_id)?;
        Ok(Layout { dir: dir.into() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of one group's hard state and log.
    pub fn group_dir(&self, group: u64) -> PathBuf {
        group_dir(&self.dir, group)
    }

    /// The groups that have a directory here, in order.
    pub fn groups(&self) -> Result<Vec<u64>, LayoutError> {
        let path = self.dir.join(GROUPS_DIR);
        let io = |source| LayoutError::Io { dir: path.clone(), source };
        let mut groups = Vec::new();
        for entry in std::fs::read_dir(&path).map_err(io)? {
            let entry = entry.map_err(io)?;
            if let Some(id) = entry.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) {
                groups.push(id);
            }
        }
        groups.sort_unstable();
        Ok(groups)
    }

    /// Deletes one group's directory (the group no longer has a replica here).
    pub fn remove_group(&self, group: u64) -> Result<(), LayoutError> {
        let path = self.group_dir(group);
        match std::fs::remove_dir_all(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(LayoutError::Io { dir: path, source }),
        }
    }
}

/// The directory of group `group`'s hard state and log in the data directory `dir`.
pub fn group_dir(dir: &Path, group: u64) -> PathBuf {
    dir.join(GROUPS_DIR).join(group.to_string())
}

/// The segments log of group `group` in the data directory `dir`.
pub fn group_log_dir(dir: &Path, group: u64) -> PathBuf {
    group_dir(dir, group).join(LOG_DIR)
}

/// Records the cluster and node id in `dir` at first start, and checks them afterwards.
fn check_identity(dir: &Path, cluster_id: u64, node_id: u64) -> Result<(), LayoutError> {
    let path = dir.join(IDENTITY_FILE);
    match state_file::read(&path, KIND_IDENTITY)? {
        None => {
            let mut payload = cluster_id.to_le_bytes().to_vec();
            payload.extend_from_slice(&node_id.to_le_bytes());
            state_file::write(&path, KIND_IDENTITY, IDENTITY_VERSION, &payload)?;
            Ok(())
        }
        Some((_, payload)) => {
            let mut r = Reader::new(payload.into());
            let parsed = (r.u64("cluster id"), r.u64("node id"));
            let (Ok(found_cluster), Ok(found_node)) = parsed else {
                return Err(LayoutError::Malformed { path, why: "too short".into() });
            };
            if found_cluster != cluster_id {
                return Err(LayoutError::OtherCluster { dir: dir.into(), found: found_cluster, expected: cluster_id });
            }
            if found_node != node_id {
                return Err(LayoutError::OtherNode { dir: dir.into(), found: found_node, expected: node_id });
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_fixed_at_first_start() {
        let dir = tempfile::tempdir().unwrap();
        Layout::open(dir.path(), 7, 1).unwrap();
        Layout::open(dir.path(), 7, 1).unwrap();
        assert!(matches!(Layout::open(dir.path(), 8, 1), Err(LayoutError::OtherCluster { .. })));
        assert!(matches!(Layout::open(dir.path(), 7, 2), Err(LayoutError::OtherNode { .. })));
    }

    #[test]
    fn the_first_layout_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("log")).unwrap();
        let err = Layout::open(dir.path(), 7, 1).unwrap_err();
        assert!(matches!(err, LayoutError::OldLayout { .. }));
        assert!(err.to_string().contains("empty directory"), "{err}");
    }

    #[test]
    fn groups_are_listed_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::open(dir.path(), 7, 1).unwrap();
        for g in [3, 1, 20] {
            std::fs::create_dir_all(layout.group_dir(g)).unwrap();
        }
        assert_eq!(layout.groups().unwrap(), vec![1, 3, 20]);
        layout.remove_group(3).unwrap();
        layout.remove_group(3).unwrap();
        assert_eq!(layout.groups().unwrap(), vec![1, 20]);
    }
}
