//! Who leads each partition, as far as this node knows, and the offsets its leader last
//! reported: what a metadata answer says about partitions, whichever node gives it. The
//! metadata group places replicas but does not record leaders (they change with every
//! election); instead each node reports the groups it hosts here, and every node tells the
//! others, about once a second and at once on a change, what the groups it leads look
//! like (`LeaderReport`s on the peer links). A report of a higher term replaces a lower
//! one; in one term, the leader's own report is the freshest.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Instant;

use tokio::sync::Notify;

use crate::raft::NodeId;

/// What is known of one group's leadership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderReport {
    pub group: u64,
    pub term: u64,
    pub leader: Option<NodeId>,
    /// Known when the report comes from the leader itself.
    pub offsets: Option<Offsets>,
}

/// A partition's offsets and in-sync replicas, as its leader saw them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offsets {
    pub log_start_offset: u64,
    /// The offset after the last committed record.
    pub high_watermark: u64,
    /// The replicas caught up with the leader's commit (the leader first).
    pub in_sync: Vec<NodeId>,
}

#[derive(Clone, Debug)]
struct Known {
    report: LeaderReport,
    at: Instant,
}

#[derive(Default)]
pub struct LeaderTable {
    groups: RwLock<HashMap<u64, Known>>,
    /// Woken when this node starts or stops leading a group: the others should hear soon.
    changed: Notify,
}

impl LeaderTable {
    /// Takes a report in if it is newer than what is known: a higher term, or the same term
    /// with the leader's own offsets.
    pub fn report(&self, report: LeaderReport) {
        let mut groups = self.groups.write().expect("leaders lock");
        let newer = match groups.get(&report.group) {
            None => true,
            Some(known) => {
                report.term > known.report.term
                    || (report.term == known.report.term
                        && (report.offsets.is_some() || known.report.leader.is_none())
                        && report.leader.is_some())
            }
        };
        if newer {
            groups.insert(report.group, Known { report, at: Instant::now() });
        }
    }

    /// A report about a group this node leads (or just stopped leading): kept, and the
    /// other nodes told soon.
    pub fn report_own(&self, report: LeaderReport) {
        self.report(report);
        self.changed.notify_one();
    }

    pub fn get(&self, group: u64) -> Option<LeaderReport> {
        self.groups.read().expect("leaders lock").get(&group).map(|k| k.report.clone())
    }

    pub fn leader(&self, group: u64) -> Option<NodeId> {
        self.get(group).and_then(|r| r.leader)
    }

    /// The reports of the groups `node` leads, with offsets: what `node` tells the others.
    pub fn led_by(&self, node: NodeId) -> Vec<LeaderReport> {
        let groups = self.groups.read().expect("leaders lock");
        groups
            .values()
            .filter(|k| k.report.leader == Some(node) && k.report.offsets.is_some())
            .map(|k| k.report.clone())
            .collect()
    }

    /// Forgets a group (it is no longer in the metadata).
    pub fn forget(&self, group: u64) {
        self.groups.write().expect("leaders lock").remove(&group);
    }

    /// Resolves when this node's own leadership changed since the last call.
    pub async fn own_changed(&self) {
        self.changed.notified().await;
    }

    /// How long ago the group's report arrived.
    pub fn age(&self, group: u64) -> Option<std::time::Duration> {
        self.groups.read().expect("leaders lock").get(&group).map(|k| k.at.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(term: u64, leader: Option<NodeId>, hw: Option<u64>) -> LeaderReport {
        let offsets = hw.map(|high_watermark| Offsets { log_start_offset: 0, high_watermark, in_sync: vec![] });
        LeaderReport { group: 7, term, leader, offsets }
    }

    #[test]
    fn a_higher_term_wins_and_a_lower_one_is_ignored() {
        let table = LeaderTable::default();
        table.report(report(3, Some(1), Some(10)));
        table.report(report(2, Some(2), Some(99)));
        assert_eq!(table.leader(7), Some(1));
        table.report(report(4, Some(2), None));
        assert_eq!(table.leader(7), Some(2), "a follower's word on a newer term beats the old leader's");
        table.report(report(4, Some(2), Some(12)));
        assert_eq!(table.get(7).unwrap().offsets.unwrap().high_watermark, 12, "the leader's own offsets");
        table.report(report(4, None, None));
        assert_eq!(table.leader(7), Some(2), "not knowing the leader does not forget it");
    }

    #[test]
    fn a_node_tells_only_of_the_groups_it_leads() {
        let table = LeaderTable::default();
        table.report(LeaderReport {
            group: 1,
            term: 1,
            leader: Some(1),
            offsets: Some(Offsets { log_start_offset: 0, high_watermark: 5, in_sync: vec![1] }),
        });
        table.report(LeaderReport { group: 2, term: 1, leader: Some(2), offsets: None });
        assert_eq!(table.led_by(1).iter().map(|r| r.group).collect::<Vec<_>>(), vec![1]);
        assert!(table.led_by(2).is_empty(), "node 2's leadership is known, but not from node 2");
    }
}
