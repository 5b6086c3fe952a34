//! What a leader knows about one follower's log, and the flow control of AppendEntries to
//! it (etcd's Progress): probe one message at a time until the logs are known to match,
//! then replicate with a bounded window of messages in flight.

use super::{NodeId, Snapshot};
use std::collections::VecDeque;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// Where the follower's log matches is unknown: send one Append, wait for its answer
    /// (or the next heartbeat answer), and back off using the conflict hint.
    Probe,
    /// The logs match through `match_index`: stream Appends, at most `inflight_max` unanswered.
    Replicate,
    /// The follower needs entries before our first index: send our snapshot, one chunk at
    /// a time, until it acknowledges the install.
    Snapshot,
}

/// Where the sending of a snapshot to one follower stands.
#[derive(Debug)]
pub(super) struct SnapshotSend {
    /// What is sent: the leader's snapshot when sending began (its bytes shared, not copied).
    pub(super) snapshot: Snapshot,
    /// The follower holds this many bytes, as it last said: the next chunk starts here.
    pub(super) acked: u64,
    /// A chunk ending here is unanswered: send no other until the follower holds this
    /// much (a heartbeat answer gives up on it).
    pub(super) inflight: Option<u64>,
}

/// A follower's progress, for metrics and status pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgressView {
    pub id: NodeId,
    pub match_index: u64,
    pub next_index: u64,
    pub state: ProgressState,
    /// Append messages sent and not yet answered.
    pub inflight: usize,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
}

#[derive(Debug)]
pub(super) struct Progress {
    /// The follower's log matches the leader's and is durable through here. Never goes
    /// down, unless the follower lost entries to storage damage (`lost_entries`).
    pub(super) match_index: u64,
    /// The next index to send.
    pub(super) next_index: u64,
    pub(super) state: ProgressState,
    /// In probe: an Append was sent and is unanswered.
    pub(super) probe_sent: bool,
    /// In replicate: the last index of each Append in flight, oldest first.
    inflight: VecDeque<u64>,
    pub(super) recent_active: bool,
    /// In snapshot: the snapshot being sent.
    snapshot: Option<SnapshotSend>,
}

impl Progress {
    pub(super) fn new(next_index: u64) -> Progress {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            recent_active: false,
            snapshot: None,
        }
    }

    pub(super) fn view(&self, id: NodeId) -> ProgressView {
        ProgressView {
            id,
            match_index: self.match_index,
            next_index: self.next_index,
            state: self.state,
            inflight: self.inflight.len(),
            recent_active: self.recent_active,
        }
    }

    /// Whether the leader must hold back new Appends to this follower.
    pub(super) fn is_paused(&self, inflight_max: usize) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflight.len() >= inflight_max,
            ProgressState::Snapshot => self.snapshot.as_ref().is_some_and(|s| s.inflight.is_some()),
        }
    }

    /// An Append ending at `last` (with `sent_entries` entries) left for this follower.
    pub(super) fn sent(&mut self, last: u64, sent_entries: bool, inflight_max: usize) {
        match self.state {
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Replicate if sent_entries => {
                assert!(self.inflight.len() < inflight_max, "a paused follower is sent nothing");
                assert!(last >= self.next_index, "pipelined Appends move forward");
                self.next_index = last + 1;
                self.inflight.push_back(last);
            }
            ProgressState::Replicate => {}
            ProgressState::Snapshot => unreachable!("a follower being sent a snapshot is sent no Append"),
        }
    }

    /// The follower acknowledged `index`; true if that is news.
    pub(super) fn maybe_update(&mut self, index: u64) -> bool {
        if self.snapshot.as_ref().is_some_and(|s| index >= s.snapshot.meta.index()) {
            // The follower installed the snapshot (or no longer needs it): probe from here.
            self.become_probe(index.saturating_add(1));
        }
        let updated = index > self.match_index;
        if updated {
            self.match_index = index;
            self.probe_sent = false;
        }
        self.next_index = self.next_index.max(index.saturating_add(1));
        while self.inflight.front().is_some_and(|last| *last <= index) {
            self.inflight.pop_front();
        }
        updated
    }

    /// The follower rejected the Append after `rejected`; the leader's log says it should
    /// resume after `resume_after`. False if the rejection is stale (answers an older Append).
    pub(super) fn maybe_back_off(&mut self, rejected: u64, resume_after: u64) -> bool {
        let stale = match self.state {
            ProgressState::Replicate => rejected <= self.match_index,
            ProgressState::Probe => rejected != self.next_index - 1,
            // No Append was sent since the snapshot began: the rejection answers an older one.
            ProgressState::Snapshot => true,
        };
        if stale {
            return false;
        }
        let next = rejected.min(resume_after.saturating_add(1)).max(self.match_index + 1);
        self.become_probe(next);
        true
    }

    /// The follower's log matches ours only through `matched`, below what it acknowledged
    /// (it lost entries): the one case where the match index goes down. Probe from there.
    pub(super) fn lost_entries(&mut self, matched: u64) {
        self.match_index = self.match_index.min(matched);
        self.become_probe(matched + 1);
    }

    pub(super) fn become_probe(&mut self, next_index: u64) {
        self.state = ProgressState::Probe;
        self.next_index = next_index;
        self.probe_sent = false;
        self.inflight.clear();
        self.snapshot = None;
    }

    pub(super) fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.inflight.clear();
        self.snapshot = None;
    }

    /// The snapshot being sent to this follower, if any.
    pub(super) fn snapshot_sent(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref().map(|s| &s.snapshot)
    }

    /// Sends `snapshot` to this follower: from its first byte unless it is the one being sent.
    pub(super) fn sending_snapshot(&mut self, snapshot: &Snapshot) -> &mut SnapshotSend {
        if self.snapshot.as_ref().is_none_or(|s| s.snapshot.meta != snapshot.meta) {
            self.state = ProgressState::Snapshot;
            self.inflight.clear();
            self.snapshot = Some(SnapshotSend { snapshot: snapshot.clone(), acked: 0, inflight: None });
        }
        self.snapshot.as_mut().expect("set above")
    }

    /// The follower holds `received` bytes of the snapshot ending at `index`; true if that
    /// answers the chunk in flight, so the next may go. Any other answer (a duplicate, a
    /// late one, or one saying the follower lost what it had) only moves where the next
    /// chunk starts: sending on every answer would let duplicates multiply the chunks in
    /// flight. Answers about another snapshot, or past its end, are ignored.
    pub(super) fn snapshot_acked(&mut self, index: u64, received: u64) -> bool {
        let meta = |s: &SnapshotSend| (s.snapshot.meta.index(), s.snapshot.meta.bytes);
        let Some(send) = self.snapshot.as_mut().filter(|s| meta(s).0 == index && received <= meta(s).1) else {
            return false;
        };
        send.acked = received;
        let answered = send.inflight.is_some_and(|end| received >= end);
        if answered {
            send.inflight = None;
        }
        answered
    }

    /// A heartbeat answer proves the follower alive: let one more Append through, so a lost
    /// Append cannot stall a full window (etcd frees the oldest slot the same way).
    pub(super) fn heard_heartbeat(&mut self, inflight_max: usize) {
        self.recent_active = true;
        self.probe_sent = false;
        if let Some(send) = &mut self.snapshot {
            // The chunk in flight may be lost: send again from where the follower stands.
            send.inflight = None;
        }
        if self.inflight.len() >= inflight_max {
            self.inflight.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicate_window_is_bounded_and_freed_by_acks() {
        let mut pr = Progress::new(11);
        pr.maybe_update(10);
        pr.become_replicate();
        for last in [12, 14, 16] {
            assert!(!pr.is_paused(3));
            pr.sent(last, true, 3);
        }
        assert!(pr.is_paused(3), "three Appends in flight fill a window of three");
        assert_eq!(pr.next_index, 17);
        assert!(pr.maybe_update(14));
        assert_eq!(pr.view(2).inflight, 1);
        assert!(!pr.is_paused(3));
    }

    #[test]
    fn probe_sends_one_at_a_time_and_stale_rejections_are_ignored() {
        let mut pr = Progress::new(21);
        pr.sent(20, true, 8);
        assert!(pr.is_paused(8));
        assert!(!pr.maybe_back_off(15, 10), "answers an Append we no longer wait for");
        assert!(pr.maybe_back_off(20, 12));
        assert_eq!((pr.next_index, pr.probe_sent), (13, false));
    }
}
