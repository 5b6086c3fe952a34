//! What one group adds to the node's metrics (`metrics.rs` has the table and the rule on
//! labels). Counters simply add up across groups. Node aggregates (groups hosted and led,
//! under-replicated groups, each peer's lag over the groups this node leads) are gauges to
//! which every group adds its share and takes it back when it changes or stops. The gauges
//! that describe one group (term, role, commit index, log offsets) come from the single
//! group the node names for them (`node_gauges`), so that they never flap between groups.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use crate::metrics as m;
use crate::raft::{Message, NodeId, Role, SoftState};
use crate::replica::Replica;
use crate::replica::backend::SharedLog;
use crate::replica::hard_state::HardStateFile;
use segments::Entry;
use tracing::info;

/// Round-trip samples remembered per peer.
const RTT_SAMPLES_MAX: usize = 256;

pub struct GroupMetrics {
    id: NodeId,
    node_gauges: bool,
    rtt: BTreeMap<NodeId, VecDeque<(u64, Instant)>>,
    /// This group's share of the node aggregates, as last added.
    led: bool,
    quiet: bool,
    under_replicated: bool,
    barrier: bool,
    lag: BTreeMap<NodeId, f64>,
}

impl GroupMetrics {
    pub fn new(id: NodeId, node_gauges: bool) -> GroupMetrics {
        metrics::gauge!(m::GROUPS_HOSTED).increment(1.0);
        GroupMetrics {
            id,
            node_gauges,
            rtt: BTreeMap::new(),
            led: false,
            quiet: false,
            under_replicated: false,
            barrier: false,
            lag: BTreeMap::new(),
        }
    }

    pub fn register_peers(&self, members: &[NodeId]) {
        m::register_peers(members.iter().copied().filter(|&id| id != self.id));
    }

    pub fn observe_outgoing(&mut self, to: NodeId, msg: &Message) {
        match msg {
            Message::Append { entries, .. } if !entries.is_empty() => {
                let bytes: usize = entries.iter().map(Entry::encoded_len).sum();
                metrics::counter!(m::APPEND_BATCHES_SENT).increment(1);
                metrics::counter!(m::APPEND_ENTRIES_SENT).increment(entries.len() as u64);
                metrics::histogram!(m::APPEND_BATCH_BYTES).record(bytes as f64);
                let last = entries.last().map_or(0, Entry::index);
                self.remember_send(to, last);
            }
            Message::Heartbeat { .. } => self.remember_send(to, 0),
            _ => {}
        }
    }

    /// Remembers when a message that will be answered left, for round-trip times.
    fn remember_send(&mut self, to: NodeId, index: u64) {
        let samples = self.rtt.entry(to).or_default();
        if samples.len() == RTT_SAMPLES_MAX {
            samples.pop_front();
        }
        samples.push_back((index, Instant::now()));
    }

    pub fn observe_incoming(&mut self, from: NodeId, msg: &Message) {
        match msg {
            Message::Append { entries, .. } if !entries.is_empty() => {
                metrics::counter!(m::APPEND_BATCHES_RECEIVED).increment(1);
                metrics::counter!(m::APPEND_ENTRIES_RECEIVED).increment(entries.len() as u64);
            }
            Message::PreVoteResponse { granted: false, .. } => metrics::counter!(m::PRE_VOTES_REJECTED).increment(1),
            Message::AppendResponse { index, reject: None, .. } => self.observe_rtt(from, |i| i > 0 && i <= *index),
            Message::HeartbeatResponse { .. } => self.observe_rtt(from, |i| i == 0),
            _ => {}
        }
    }

    fn observe_rtt(&mut self, from: NodeId, answered: impl Fn(u64) -> bool) {
        let Some(samples) = self.rtt.get_mut(&from) else { return };
        if let Some(pos) = samples.iter().position(|(i, _)| answered(*i)) {
            let (_, sent) = samples[pos];
            samples.drain(..=pos);
            metrics::histogram!(m::REPLICATION_RTT, "peer" => from.to_string()).record(sent.elapsed().as_secs_f64());
        }
    }

    /// Counts elections and leader changes as the role moves from (`role`, `leader`) to `soft`.
    pub fn role_changed(&mut self, role: Role, leader: Option<NodeId>, soft: &SoftState) {
        if soft.role == Role::Candidate && role != Role::Candidate {
            metrics::counter!(m::ELECTIONS_STARTED).increment(1);
        }
        if soft.role == Role::Leader && role != Role::Leader {
            metrics::counter!(m::ELECTIONS_WON).increment(1);
            info!(term = soft.term, "became leader");
        }
        // As etcd's leader_changes_seen_total: a leader became known that is not the last one seen.
        if let Some(new) = soft.leader
            && soft.leader != leader
        {
            metrics::counter!(m::LEADER_CHANGES).increment(1);
            info!(leader = new, term = soft.term, "leader known");
        }
        let leads = soft.role == Role::Leader;
        if leads != self.led {
            metrics::gauge!(m::GROUPS_LED).increment(if leads { 1.0 } else { -1.0 });
            self.led = leads;
        }
        if !leads {
            // What the leader knows of each follower is 0 elsewhere, not what it last knew.
            self.set_under_replicated(false);
            for (peer, lag) in std::mem::take(&mut self.lag) {
                metrics::gauge!(m::REPLICATION_LAG_ENTRIES, "peer" => peer.to_string()).decrement(lag);
            }
            if self.node_gauges {
                self.zero_peer_gauges();
            }
        }
    }

    pub fn publish_role(&self, role: Role, leader: Option<NodeId>) {
        if !self.node_gauges {
            return;
        }
        let current = m::role_label(role);
        for name in m::ROLES {
            metrics::gauge!(m::RAFT_ROLE, "role" => *name).set(if *name == current { 1.0 } else { 0.0 });
        }
        metrics::gauge!(m::RAFT_LEADER_ID).set(leader.unwrap_or(0) as f64);
    }

    fn set_under_replicated(&mut self, value: bool) {
        if value != self.under_replicated {
            metrics::gauge!(m::GROUPS_UNDER_REPLICATED).increment(if value { 1.0 } else { -1.0 });
            self.under_replicated = value;
        }
    }

    /// Once a second: this group's share of the node aggregates, and the single-group gauges.
    pub fn update_gauges(&mut self, replica: &Replica<SharedLog, HardStateFile>) {
        let raft = replica.raft();
        let barrier = raft.vote_barrier().is_some();
        if barrier != self.barrier {
            metrics::gauge!(m::GROUPS_VOTE_BARRIER).increment(if barrier { 1.0 } else { -1.0 });
            self.barrier = barrier;
        }
        let log = replica.log().read();
        let last = log.last_index();
        if raft.role() == Role::Leader {
            let mut behind = false;
            for p in raft.progress().into_iter().filter(|p| p.id != self.id) {
                let lag = last.saturating_sub(p.match_index) as f64;
                behind |= lag > 0.0 && raft.membership().is_voter(p.id);
                let before = self.lag.insert(p.id, lag).unwrap_or(0.0);
                metrics::gauge!(m::REPLICATION_LAG_ENTRIES, "peer" => p.id.to_string()).increment(lag - before);
            }
            self.set_under_replicated(behind);
        }
        if !self.node_gauges {
            return;
        }
        let committed = replica.committed();
        metrics::gauge!(m::RAFT_TERM).set(raft.term() as f64);
        metrics::gauge!(m::RAFT_COMMIT_INDEX).set(committed.index as f64);
        metrics::gauge!(m::RAFT_LAST_INDEX).set(last as f64);
        metrics::gauge!(m::LOG_START_OFFSET).set(log.start_offset() as f64);
        metrics::gauge!(m::LOG_END_OFFSET).set(committed.next_offset as f64);
        let segments = log.segments();
        metrics::gauge!(m::LOG_SEGMENTS).set(segments.len() as f64);
        metrics::gauge!(m::LOG_BYTES).set(segments.iter().map(|s| s.bytes_used).sum::<u64>() as f64);
        metrics::gauge!(m::LOG_DISK_BYTES).set(segments.iter().map(|s| s.file_bytes).sum::<u64>() as f64);
        if raft.role() != Role::Leader {
            return;
        }
        for p in raft.progress().into_iter().filter(|p| p.id != self.id) {
            let peer = p.id.to_string();
            metrics::gauge!(m::REPLICATION_MATCH_INDEX, "peer" => peer.clone()).set(p.match_index as f64);
            metrics::gauge!(m::REPLICATION_LAG_BYTES, "peer" => peer.clone())
                .set(bytes_after(&segments, p.match_index) as f64);
            metrics::gauge!(m::REPLICATION_INFLIGHT, "peer" => peer).set(p.inflight as f64);
        }
    }

    fn zero_peer_gauges(&self) {
        for peer in self.rtt.keys() {
            let peer = peer.to_string();
            for name in [m::REPLICATION_MATCH_INDEX, m::REPLICATION_LAG_BYTES, m::REPLICATION_INFLIGHT] {
                metrics::gauge!(name, "peer" => peer.clone()).set(0.0);
            }
        }
    }
}

impl GroupMetrics {
    /// The group went quiet here, or woke (`keel_groups_quiet`).
    pub fn set_quiet(&mut self, quiet: bool) {
        if quiet != self.quiet {
            metrics::gauge!(m::GROUPS_QUIET).increment(if quiet { 1.0 } else { -1.0 });
            self.quiet = quiet;
        }
    }
}

impl Drop for GroupMetrics {
    /// A group that stops takes its share of the node aggregates back.
    fn drop(&mut self) {
        metrics::gauge!(m::GROUPS_HOSTED).decrement(1.0);
        self.set_quiet(false);
        if self.led {
            metrics::gauge!(m::GROUPS_LED).decrement(1.0);
        }
        self.set_under_replicated(false);
        if self.barrier {
            metrics::gauge!(m::GROUPS_VOTE_BARRIER).decrement(1.0);
        }
        for (peer, lag) in std::mem::take(&mut self.lag) {
            metrics::gauge!(m::REPLICATION_LAG_ENTRIES, "peer" => peer.to_string()).decrement(lag);
        }
    }
}

/// Bytes of the entries after `index`, from the segment table (whole segments; the
/// segment holding `index` counts in full, an over-estimate of at most one segment).
fn bytes_after(segments: &[segments::SegmentInfo], index: u64) -> u64 {
    segments.iter().filter(|s| s.last_index > index).map(|s| s.bytes_used).sum()
}
