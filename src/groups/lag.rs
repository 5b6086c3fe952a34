//! Consumer lag for `keel group describe`: how far a group's committed offsets are behind
//! the ends of their partitions.

use std::collections::{BTreeMap, BTreeSet};

/// One partition of a group's report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: u32,
    /// The group's committed offset: the next one it will read. `None`: nothing committed.
    pub committed: Option<u64>,
    /// The partition's end: the offset the next record will get. `None`: unknown (the
    /// topic was deleted, say).
    pub end: Option<u64>,
    /// `end - committed`, or `None` when either is unknown (`kafka-consumer-groups` prints
    /// "-" then). A commit past the end counts as 0 behind: a replica's end may trail the
    /// leader's for a moment.
    pub lag: Option<u64>,
}

/// The lag of every partition that has a committed offset or an end, by topic and
/// partition. Committed offsets below zero (Kafka's -1, "none") count as none.
pub fn lag(committed: &BTreeMap<(String, u32), i64>, ends: &BTreeMap<(String, u32), u64>) -> Vec<PartitionLag> {
    let keys: BTreeSet<&(String, u32)> = committed.keys().chain(ends.keys()).collect();
    keys.into_iter()
        .map(|key| {
            let committed = committed.get(key).and_then(|&o| u64::try_from(o).ok());
            let end = ends.get(key).copied();
            let lag = committed.zip(end).map(|(c, e)| e.saturating_sub(c));
            PartitionLag { topic: key.0.clone(), partition: key.1, committed, end, lag }
        })
        .collect()
}

/// The sum of the known lags: the group's total, as a metric would show it.
pub fn total_lag(lags: &[PartitionLag]) -> u64 {
    lags.iter().filter_map(|l| l.lag).sum()
}
