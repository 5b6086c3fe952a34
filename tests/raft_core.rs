//! Behaviours of the Raft core one at a time: backtracking, flow control, resets,
//! learners, transfer, backpressure, store errors and hostile messages.

use bytes::Bytes;
use keel::raft::{
    BusyReason, Config, Conflict, Entry, EntryMeta, HardState, LogStart, LogStore, Membership, MembershipChange,
    Message, NUMBER_MAX, NodeId, ProgressState, ProposeError, Role, Snapshot, SnapshotMeta, TransferError, VoteBarrier,
    kind,
};
use keel::replica::snapshot::SnapshotError;
use keel::replica::testkit::Cluster;
use keel::replica::{Repair, ReplicaError};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::SmallRng;

fn progress_of(c: &Cluster, leader: NodeId, id: NodeId) -> keel::raft::ProgressView {
    c.raft(leader).progress().into_iter().find(|p| p.id == id).expect("a follower of the leader")
}

/// Messages queued from `from` to `to` that satisfy `which`.
fn queued(c: &Cluster, from: NodeId, to: NodeId, which: impl Fn(&Message) -> bool) -> usize {
    c.network.iter().filter(|(f, t, m)| *f == from && *t == to && which(m)).count()
}

// Thesis §5.3.2 (fast backtracking): a follower holding 50 entries of a term the leader
// does not have is repaired in one rejection, not fifty.
#[test]
fn fast_backtracking_skips_a_conflicting_term_in_one_round_trip() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    let ours = [vec![1; 3], vec![3; 50]].concat();
    c.load_log(1, &ours, HardState { term: 3, vote: None, commit: 3 });
    c.load_log(3, &ours, HardState { term: 3, vote: None, commit: 3 });
    c.load_log(2, &[vec![1; 3], vec![2; 50]].concat(), HardState { term: 3, vote: None, commit: 3 });
    c.elect(1);
    let mut rejections = 0;
    while let Some((from, _, msg)) = c.network.front() {
        if *from == 2 && matches!(msg, Message::AppendResponse { reject: Some(_), .. }) {
            rejections += 1;
        }
        c.deliver_one();
    }
    assert_eq!(rejections, 1, "one hint takes the leader back to the end of term 1");
    c.run(10);
    assert_eq!(c.node(2).store().live().entry(53), c.node(1).store().live().entry(53));
    assert_eq!(c.raft(2).commit(), 54);
}

// etcd's Progress: a new leader probes each follower with one Append at a time; once an
// answer shows where the logs match it streams, at most `inflight_max` Appends unanswered.
#[test]
fn a_follower_is_probed_then_replicated_to_within_the_inflight_window() {
    let mut c = Cluster::new(&[1, 2, 3], |config| {
        config.inflight_max = 2;
        config.append_entries_max = 1;
    });
    c.elect(1);
    assert_eq!(progress_of(&c, 1, 2).state, ProgressState::Probe);
    assert_eq!(queued(&c, 1, 2, |m| matches!(m, Message::Append { .. })), 1, "one probe in flight");
    c.deliver();
    assert_eq!(progress_of(&c, 1, 2).state, ProgressState::Replicate);
    for k in 0..10u8 {
        c.propose(1, &[k]).unwrap();
    }
    assert_eq!(queued(&c, 1, 2, |m| matches!(m, Message::Append { .. })), 2, "the window holds two Appends");
    assert_eq!(progress_of(&c, 1, 2).inflight, 2);
    c.deliver();
    assert_eq!(c.raft(1).commit(), 11, "acks reopen the window until everything is sent");
    // A lost Append does not stall a full window: a heartbeat answer frees a slot and the
    // follower's rejection sends the leader back to probing.
    c.propose(1, b"a").unwrap();
    c.propose(1, b"b").unwrap();
    c.network.retain(|(_, to, _)| *to != 2);
    c.run(10);
    assert_eq!(progress_of(&c, 1, 2).match_index, 13);
}

// The log is its own state machine, so a follower behind the leader's first index (the
// prefix was deleted by retention) restarts its log at the leader's start.
#[test]
fn a_follower_behind_the_leaders_log_start_is_reset_to_it() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    c.elect(1);
    c.deliver();
    c.isolate(3);
    c.propose_entries(1, 30);
    c.run(10);
    assert_eq!(c.node(1).reported_commit(), 31);
    for id in [1, 2] {
        c.node_mut(id).store_mut().compact(20);
    }
    c.heal();
    c.run(20);
    let (leader, follower) = (c.node(1).store().live(), c.node(3).store().live());
    assert_eq!(follower.start(), LogStart { index: 21, prev_term: 1, offset: 19 });
    assert_eq!(follower.last_index(), leader.last_index());
    assert_eq!(follower.entry(31), leader.entry(31));
    assert_eq!(follower.next_offset(), leader.next_offset());
    assert_eq!(c.raft(3).commit(), 31);
    let bootstrap = (1, Membership::new([1, 2, 3]));
    assert_eq!(c.node(3).persisted_membership(), bootstrap, "the reset carried the configuration, from entry 1");
}

// Regression (simulator seed 180464): the bootstrap configuration was in no entry, so a
// node that joined later and learned everything from the log had no committed
// configuration to put in a Reset. The first leader now records it as its first entry.
#[test]
fn the_first_leader_records_the_bootstrap_configuration_in_the_log() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    c.elect(1);
    c.deliver();
    let first = c.node(2).store().live().entry(1).cloned().expect("entry 1");
    assert_eq!(first.kind(), kind::CONFIG);
    assert_eq!(Membership::decode(&first.payload()), Ok(Membership::new([1, 2, 3])));
    c.node_mut(1).transfer_leadership(2).unwrap();
    c.run(10);
    assert_eq!(c.leader(), Some(2));
    let second = c.node(2).store().live().entry(2).cloned().expect("entry 2");
    assert_eq!(second.kind(), kind::NOOP, "later leaders append a no-op");
}

// Raft thesis §4.2.1: a new server joins as a learner, catches up without counting toward
// any quorum or campaigning, and is then promoted to voter (through a joint configuration).
#[test]
fn a_learner_replicates_without_voting_and_can_be_promoted() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    c.add_node(4, Membership::default(), |_| {});
    c.elect(1);
    c.deliver();
    c.node_mut(1).propose_membership(&[MembershipChange::AddLearner(4)]).unwrap();
    c.flush(1);
    c.deliver();
    c.run(10);
    assert_eq!(c.raft(4).role(), Role::Learner);
    assert_eq!(c.raft(4).commit(), c.raft(1).commit());
    // With both other voters cut off, the learner's acknowledgement commits nothing.
    c.isolate(2);
    c.isolate(3);
    let before = c.raft(1).commit();
    c.propose(1, b"x").unwrap();
    c.deliver();
    let last = |id: NodeId| c.node(id).store().live().last_index();
    assert_eq!(last(4), last(1), "the learner has the entry");
    assert_eq!(c.raft(1).commit(), before, "a learner is not part of any quorum");
    c.heal();
    c.run(10);
    assert_eq!(c.raft(1).commit(), before + 1);
    // Cut off, a learner never campaigns.
    c.isolate(4);
    c.run(10 * 30);
    assert_eq!((c.raft(4).role(), c.raft(4).term()), (Role::Learner, c.raft(1).term()));
    c.heal();
    c.node_mut(1).propose_membership(&[MembershipChange::PromoteLearner(4)]).unwrap();
    c.flush(1);
    c.run(10);
    let membership = c.raft(1).membership().clone();
    assert_eq!((membership.is_joint(), membership.voters), (false, [1, 2, 3, 4].into()));
    assert_eq!(c.raft(4).role(), Role::Follower);
}

// Thesis §3.10: the leader brings the target up to date, then tells it to campaign at
// once (TimeoutNow); the target's vote requests pass the other followers' lease.
#[test]
fn leadership_transfer_hands_over_once_the_target_caught_up() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    c.elect(1);
    c.deliver();
    let term = c.raft(1).term();
    assert_eq!(c.node_mut(2).transfer_leadership(3), Err(TransferError::NotLeader { leader: Some(1) }));
    assert_eq!(c.node_mut(1).transfer_leadership(9), Err(TransferError::NotVoter(9)));
    c.isolate(3);
    c.propose_entries(1, 10);
    c.node_mut(1).transfer_leadership(3).unwrap();
    assert_eq!(c.propose(1, b"late"), Err(ProposeError::Busy(BusyReason::LeadershipTransfer)));
    c.heal();
    c.run(10);
    assert_eq!(c.leader(), Some(3));
    assert_eq!(c.raft(3).term(), term + 1);
    assert_eq!(c.raft(2).leader(), Some(3));
    assert_eq!(c.raft(3).commit(), 12, "nothing was lost on the way");
}

// Everything is bounded: a leader that cannot commit refuses proposals past
// uncommitted_bytes_max, and takes them again once the backlog commits.
#[test]
fn proposals_are_refused_when_uncommitted_bytes_reach_the_limit() {
    let mut c = Cluster::new(&[1, 2, 3], |config| {
        config.append_bytes_max = 1024;
        config.uncommitted_bytes_max = 4096;
    });
    c.elect(1);
    c.deliver();
    assert_eq!(c.node_mut(1).propose(&[0; 1024], 1), Err(ProposeError::TooLarge { bytes: 1064, max: 1024 }));
    assert_eq!(c.node_mut(1).propose(b"x", 0), Err(ProposeError::Empty));
    assert_eq!(c.node_mut(2).propose(b"x", 1), Err(ProposeError::NotLeader { leader: Some(1) }));
    c.isolate(2);
    c.isolate(3);
    let mut accepted = 0;
    let refusal = loop {
        match c.propose(1, &[7; 100]) {
            Ok(_) => accepted += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(refusal, ProposeError::Busy(BusyReason::UncommittedBytes { max: 4096, .. })));
    assert_eq!(accepted, 4096 / 140, "140-byte entries up to the 4096-byte limit");
    c.heal();
    c.run(10);
    assert!(c.propose(1, &[7; 100]).is_ok(), "committing the backlog makes room");
}

// A store read error is an operational fault: the leader skips the send and retries.
#[test]
fn a_store_read_error_delays_replication_without_a_crash() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    c.elect(1);
    c.deliver();
    c.node(1).store().fail_reads(100);
    c.isolate(2);
    c.propose(1, b"x").unwrap();
    c.heal();
    c.run(10);
    assert_eq!(c.raft(2).commit(), 1, "no entries could be read for node 2 yet");
    c.node(1).store().fail_reads(0);
    c.run(10);
    assert_eq!(c.raft(2).commit(), 2);
}

// A crash loses what was not durable, but never the term or the vote: they are fsync'd
// before any message depending on them leaves.
#[test]
fn term_and_vote_survive_a_restart() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    c.elect(1);
    c.deliver();
    let (term, vote) = (c.raft(2).term(), c.raft(2).vote());
    assert_eq!(vote, Some(1));
    c.node_mut(2).crash(&mut SmallRng::seed_from_u64(7), true);
    c.node_mut(2).restart().unwrap();
    assert_eq!((c.raft(2).term(), c.raft(2).vote()), (term, vote));
}

// Raft Figure 2 (votedFor is persistent state): a vote cast in a term the node already
// knew must be fsync'd before the answer leaves, or a crash lets it vote twice in a term.
#[test]
fn a_vote_without_a_term_change_is_synced_before_the_answer() {
    let mut c = Cluster::new(&[1, 2, 3], |config| config.check_quorum = false);
    c.elect(1);
    c.propose_entries(1, 3);
    let term = c.raft(2).term() + 1;
    // A stale candidate brings S2 into the next term without its vote...
    c.node_mut(2).step(3, Message::Vote { term, last_index: 0, last_term: 0, transfer: false });
    c.flush(2);
    assert_eq!((c.raft(2).term(), c.raft(2).vote()), (term, None));
    // ...then an up-to-date one gets it, in the same term.
    let (last_index, last_term) = (c.node(1).store().last_index(), c.raft(1).term());
    c.node_mut(2).step(1, Message::Vote { term, last_index, last_term, transfer: false });
    c.flush(2);
    assert_eq!(c.raft(2).vote(), Some(1));
    c.node_mut(2).crash(&mut SmallRng::seed_from_u64(7), false);
    c.node_mut(2).restart().unwrap();
    assert_eq!(c.raft(2).vote(), Some(1), "the vote survived the crash");
}

// The Ready contract: a follower's AppendResponse covering entries only leaves once
// `persisted` reported them durable; written is not enough.
#[test]
fn a_follower_acknowledges_only_durable_entries() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    c.elect(1);
    c.deliver();
    c.auto_sync = false;
    let index = c.propose(1, b"x").unwrap().index;
    assert!(c.deliver_until(|c| c.node(2).store().last_index() == index), "S2 wrote the entry");
    let acks = |c: &Cluster| queued(c, 2, 1, |m| matches!(m, Message::AppendResponse { index: i, .. } if *i >= index));
    assert_eq!(acks(&c), 0, "written, not durable: no acknowledgement yet");
    c.sync(2);
    assert_eq!(acks(&c), 1, "durable: acknowledged");
}

/// S1 alone holds committed entries 12..=16 that S2 lost to damage (and S3 never had):
/// while S1 is away, S2 never campaigns and S2 and S3 elect no leader; once it is back,
/// S1 leads and S2 gets the entries again.
fn no_leader_without_s1_until_it_is_back(c: &mut Cluster) {
    c.isolate(1);
    c.cut.retain(|(a, b)| *a == 1 || *b == 1);
    for _ in 0..20 {
        c.run(5);
        for id in [2, 3] {
            assert_ne!(c.raft(id).role(), Role::Leader, "S{id} leads without committed entries 12..=16");
        }
        assert!(matches!(c.raft(2).role(), Role::Follower), "S2 never campaigns below its barrier");
    }
    c.heal();
    c.run(40);
    assert_eq!(c.leader(), Some(1), "only S1 holds every committed entry");
    assert_eq!(c.raft(2).vote_barrier(), None, "S2 caught up and votes as usual again");
}

// FAST'18, "Protocol-Aware Recovery for Consensus-Based Storage": a node whose disk
// damaged committed entries cuts them and fetches them again; meanwhile it must not
// judge candidates by its shorter log, or it and a node that never had those entries
// elect a leader without them. Here S2 and S1 committed 12..=16 while S3 was away; S2
// loses them; S1 goes away: no leader until S1 is back.
#[test]
fn a_node_that_lost_committed_entries_helps_elect_no_leader_without_them() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    c.elect(1);
    c.propose_entries(1, 10);
    c.isolate(3);
    c.propose_entries(1, 5);
    c.run(10);
    assert_eq!(c.raft(2).commit(), 16, "S1 and S2 committed 12..=16 without S3");
    c.node_mut(2).cut_damaged(4).unwrap();
    assert_eq!((c.node(2).store().last_index(), c.raft(2).commit()), (4, 4));
    assert_eq!(c.raft(2).vote_barrier(), Some(VoteBarrier { term: 1, index: 16 }));
    no_leader_without_s1_until_it_is_back(&mut c);
    for index in 1..=16 {
        assert_eq!(c.node(2).store().live().entry(index), c.node(1).store().live().entry(index), "entry {index}");
    }
}

// The same with the damage found by recovery at start, in the tail it scans, where a
// crash leaves unsynced writes too: S2 synced and acknowledged 12..=16 but went down
// before it heard they committed (its commit index on disk says 11); its disk damaged
// them. The sync mark says they were synced, so S2 holds its vote as above.
#[test]
fn a_node_whose_synced_tail_was_damaged_while_down_helps_elect_no_leader_without_it() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    c.elect(1);
    c.propose_entries(1, 10);
    c.isolate(3);
    for k in 0..5 {
        c.propose(1, &[k]).unwrap();
    }
    assert!(c.deliver_until(|c| c.raft(1).commit() == 16), "S1 and S2 commit 12..=16 without S3");
    assert!(c.node(2).hard_state().commit < 16, "S2 has not heard of the commit");
    c.node_mut(2).crash(&mut SmallRng::seed_from_u64(7), false);
    c.node_mut(2).damage_tail(11);
    c.node_mut(2).restart().unwrap();
    assert_eq!(c.node(2).store().last_index(), 11);
    assert_eq!(c.raft(2).vote_barrier(), Some(VoteBarrier { term: 1, index: 16 }));
    c.network.clear();
    no_leader_without_s1_until_it_is_back(&mut c);
}

// A follower that cut damaged entries tells the leader where its log now ends, so an
// idle leader (which sends nothing past the match index it knows) sends them again.
#[test]
fn a_follower_that_lost_entries_gets_them_again_from_an_idle_leader() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    c.elect(1);
    c.propose_entries(1, 8);
    c.run(10);
    c.node_mut(2).cut_damaged(3).unwrap();
    c.run(10);
    assert_eq!(c.leader(), Some(1), "the leader kept its office");
    assert_eq!(c.node(2).store().last_index(), 9, "S2 has its entries again without any new proposal");
    assert_eq!(c.node(2).store().live().entry(9), c.node(1).store().live().entry(9));
    assert_eq!(c.raft(2).vote_barrier(), None);
}

// FAST'18, "Protocol-Aware Recovery for Consensus-Based Storage", §5 (CTRL): S1 and S2
// are damaged at different entries and S3 is gone for good. Each keeps the entries after
// its damaged one, so their logs still say where they end and they elect a leader; each
// fetches the other's copy, proved its own by Raft §5.3 (Log Matching). Cutting instead
// would put each below the other's vote barrier: no leader at all.
#[test]
fn two_nodes_damaged_at_different_entries_with_the_third_gone_elect_and_fetch_each_others_copy() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    c.elect(1);
    c.propose_entries(1, 10);
    c.run(5);
    assert_eq!(c.raft(2).commit(), 11);
    c.isolate(3);
    assert_eq!(c.node_mut(1).damage_entry(4).unwrap(), Repair::Hole);
    assert_eq!(c.node_mut(2).damage_entry(7).unwrap(), Repair::Hole);
    assert_eq!((c.node(1).store().last_index(), c.node(2).store().last_index()), (11, 11), "nothing cut");
    assert_eq!(c.raft(2).vote_barrier(), None);
    // The leader restarts: S1 and S2 must elect a leader between them.
    c.node_mut(1).crash(&mut SmallRng::seed_from_u64(3), false);
    c.node_mut(1).restart().unwrap();
    assert_eq!(c.node_mut(1).damage_entry(4).unwrap(), Repair::Hole, "found again at start");
    c.run(60);
    let leader = c.leader().expect("a leader of the two damaged nodes");
    for id in [1, 2] {
        assert!(c.raft(id).holes().is_empty(), "S{id} wrote its entry back");
        assert_eq!(c.raft(id).vote_barrier(), None);
    }
    c.propose_entries(leader, 3);
    c.run(5);
    let last = c.node(leader).store().last_index();
    assert_eq!((c.raft(1).commit(), c.raft(2).commit()), (last, last));
    for index in 1..=last {
        assert_eq!(c.node(1).store().live().entry(index), c.node(2).store().live().entry(index), "entry {index}");
    }
}

/// Delivers what is in flight (50 messages at most), losing every refetch and its answer:
/// holes stay open.
fn deliver_losing_refetches(c: &mut Cluster) {
    for _ in 0..50 {
        c.network.retain(|(_, _, m)| !matches!(m, Message::Refetch { .. } | Message::RefetchResponse { .. }));
        if !c.deliver_one() {
            break;
        }
    }
}

// A cut goes below every hole still open: it starts a fresh core, which knows no holes
// and would count a damaged entry below the cut as held, and acknowledge it.
#[test]
fn a_cut_goes_below_every_hole_still_open() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    c.elect(1);
    c.propose_entries(1, 5);
    c.run(5);
    assert_eq!(c.node_mut(2).damage_entry(3).unwrap(), Repair::Hole);
    // Two more entries, written on S2 but not synced: damage there cannot be a hole.
    c.auto_sync = false;
    for k in 0..2 {
        c.propose(1, &[k]).unwrap();
    }
    deliver_losing_refetches(&mut c);
    let last = c.node(2).store().last_index();
    assert!(c.raft(2).holes().contains(&3) && last >= 8, "S2 holds {last}, holes {:?}", c.raft(2).holes());
    assert_eq!(c.node_mut(2).damage_entry(last).unwrap(), Repair::Cut);
    assert_eq!(c.node(2).store().last_index(), 2, "cut before the hole, not before entry {last}");
}

// A hole counts for nothing until it is written back: a leader with one commits nothing
// past it, and a follower with one acknowledges nothing past it, however many entries
// after it they hold (FAST'18 §5: no replica counts as holding what it has not verified).
#[test]
fn a_hole_counts_for_nothing_until_written_back() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    c.elect(1);
    c.propose_entries(1, 5);
    c.run(5);
    c.isolate(3);
    assert_eq!(c.node_mut(1).damage_entry(3).unwrap(), Repair::Hole);
    assert_eq!(c.node_mut(2).damage_entry(4).unwrap(), Repair::Hole);
    deliver_losing_refetches(&mut c);
    let commit = c.raft(1).commit();
    for k in 0..3 {
        c.propose(1, &[k]).unwrap();
        deliver_losing_refetches(&mut c);
    }
    assert_eq!(c.raft(1).commit(), commit, "nothing new commits while S1 and S2 have holes");
    assert_eq!(c.raft(1).progress().iter().find(|p| p.id == 2).map(|p| p.match_index), Some(commit));
    c.run(5);
    assert!(c.raft(1).holes().is_empty() && c.raft(2).holes().is_empty());
    assert_eq!(c.raft(1).commit(), commit + 3, "committed once both wrote their entries back");
}

// A damaged entry after the commit index, found at start (`Raft::with_holes`): it may be
// a configuration entry, and Raft §6 has a node use the latest configuration in its log.
// Until its copy is written back the node does not campaign (it might count votes in the
// wrong configuration) and takes no configuration past it as committed; then it learns
// the entry's configuration and campaigns as before. Cutting the log at the entry instead
// raises a vote barrier over every entry after it, which may leave no electable node.
#[test]
fn a_hole_found_at_start_after_the_commit_index_holds_campaigns_until_its_configuration_is_known() {
    let (old, new) = (Membership::new([1, 2, 3]), Membership::new([1, 2]));
    let entry = |index: u64, kind: u8, payload: &[u8]| {
        let record_count = u32::from(kind == kind::DATA);
        Entry::encode(EntryMeta { index, term: 1, kind, base_offset: 0, record_count }, payload)
    };
    let entries =
        vec![entry(1, kind::CONFIG, &old.encode()), entry(2, kind::CONFIG, &new.encode()), entry(3, kind::DATA, b"x")];
    let mut store = keel::raft::memstore::MemStore::default();
    store.apply(&keel::raft::Ready { entries: entries.clone(), ..keel::raft::Ready::default() });
    let hard_state = HardState { term: 1, vote: None, commit: 1 };
    let holes = std::collections::BTreeSet::from([2]);
    let mut raft = keel::raft::Raft::with_holes(Config::new(1, 7), hard_state, (1, old.clone()), &store, &holes)
        .expect("starts with a hole");
    assert_eq!(raft.membership(), &old, "the damaged configuration is not known yet");
    for _ in 0..100 {
        raft.tick(&store);
    }
    assert_eq!(raft.role(), Role::Follower, "no campaign with a configuration unknown");
    // Peer 2's copy, proved by its term at index 3 (Raft §5.3, Log Matching).
    let response =
        Message::RefetchResponse { term: 1, proof_index: 3, proof_term: 1, entries: vec![entries[1].clone()] };
    raft.step(2, response, &store);
    assert_eq!(raft.take_rewrites(), vec![entries[1].clone()]);
    raft.rewritten(2, &store);
    assert!(raft.holes().is_empty());
    assert_eq!(raft.membership(), &new, "the written-back configuration is the latest");
    for _ in 0..100 {
        raft.tick(&store);
    }
    assert_ne!(raft.role(), Role::Follower, "campaigns once it knows its configuration");
}

// The barrier in isolation: below it a node never campaigns and judges candidates by the
// log it had before the cut: it refuses one that its shorter log would have accepted,
// and grants one at least as up to date as its old log.
#[test]
fn below_its_vote_barrier_a_node_votes_as_its_old_log_would_and_never_campaigns() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    c.elect(1);
    c.propose_entries(1, 4);
    c.node_mut(3).cut_damaged(2).unwrap();
    let barrier = VoteBarrier { term: 1, index: 5 };
    assert_eq!(c.raft(3).vote_barrier(), Some(barrier));
    let answer = |c: &mut Cluster, msg: Message| {
        c.network.clear();
        c.node_mut(3).step(2, msg);
        c.flush(3);
        c.network.iter().any(|(_, to, m)| {
            *to == 2
                && matches!(
                    m,
                    Message::PreVoteResponse { granted: true, .. } | Message::VoteResponse { granted: true, .. }
                )
        })
    };
    let term = c.raft(3).term() + 1;
    assert!(!answer(&mut c, Message::PreVote { term, last_index: 4, last_term: 1 }), "shorter than the old log");
    assert!(!answer(&mut c, Message::Vote { term, last_index: 4, last_term: 1, transfer: false }));
    assert!(answer(&mut c, Message::Vote { term, last_index: 5, last_term: 1, transfer: false }), "as long");
    let term = c.raft(3).term();
    c.network.clear();
    c.node_mut(3).step(1, Message::TimeoutNow { term });
    c.flush(3);
    assert_eq!(c.raft(3).role(), Role::Follower, "not even a leadership transfer makes it campaign");
    c.network.clear();
    c.run(40);
    assert_eq!(c.raft(3).vote_barrier(), None, "the entries came back from the leader");
    assert_eq!(c.node(3).store().last_index(), c.node(c.leader().unwrap()).store().last_index());
}

/// Every node ticks once; what they send stays queued.
fn tick_all(c: &mut Cluster) {
    for id in c.nodes.keys().copied().collect::<Vec<NodeId>>() {
        c.tick(id);
    }
}

/// Node 1 leads; node 3 missed everything after entry 1, which node 1 dropped after a
/// snapshot of `state` through entry 21.
fn behind_a_snapshot(state: Bytes, tweak: impl Fn(&mut Config)) -> Cluster {
    let mut c = Cluster::new(&[1, 2, 3], tweak);
    c.elect(1);
    c.deliver();
    c.isolate(3);
    c.propose_entries(1, 20);
    c.run(10);
    c.node_mut(1).save_snapshot(21, state).unwrap();
    c.node_mut(1).store_mut().compact(21);
    c.heal();
    c
}

// Everything is bounded: no snapshot chunk is larger than snapshot_chunk_bytes_max, nor
// than append_bytes_max (so it fits the frame bound an entry has).
#[test]
fn snapshot_chunks_are_bounded_by_both_limits() {
    for (chunk_max, append_max) in [(100, 4096), (4096, 300)] {
        let mut c = behind_a_snapshot(vec![9; 2000].into(), |config| {
            config.snapshot_chunk_bytes_max = chunk_max;
            config.append_bytes_max = append_max;
        });
        let mut chunks = 0;
        for _ in 0..20 {
            tick_all(&mut c);
            while let Some((_, _, msg)) = c.network.front() {
                if let Message::Snapshot { data, .. } = msg {
                    assert!(data.len() <= chunk_max.min(append_max), "a chunk of {} bytes", data.len());
                    chunks += 1;
                }
                c.deliver_one();
            }
        }
        assert_eq!(chunks, 2000usize.div_ceil(chunk_max.min(append_max)), "no chunk sent twice on a calm network");
        assert_eq!(c.node(3).snapshot().map(|s| s.data.len()), Some(2000));
    }
}

// A follower accumulates a snapshot in memory, so it refuses one over snapshot_bytes_max
// instead of holding it; the leader keeps offering it.
#[test]
fn a_snapshot_over_the_followers_snapshot_bytes_max_is_refused() {
    let mut c = behind_a_snapshot(vec![9; 2000].into(), |config| {
        config.snapshot_chunk_bytes_max = 256;
        config.snapshot_bytes_max = if config.id == 3 { 1000 } else { 1 << 20 };
    });
    let mut offered = 0;
    for _ in 0..100 {
        tick_all(&mut c);
        while let Some((from, to, msg)) = c.network.front() {
            offered += usize::from(*to == 3 && matches!(msg, Message::Snapshot { .. }));
            assert!(
                !(*from == 3 && matches!(msg, Message::SnapshotResponse { received: 1.., .. })),
                "node 3 keeps none of it"
            );
            c.deliver_one();
        }
    }
    assert_eq!(c.node(3).snapshot(), None);
    assert_eq!(c.node(3).store().last_index(), 1, "node 3 did not move");
    assert!(offered >= 5, "the leader offers it again at every heartbeat answer ({offered} times)");
}

/// A chunk of `snapshot` from node 1 in `term`.
fn chunk(term: u64, snapshot: &Snapshot, offset: usize, len: usize) -> Message {
    let data = snapshot.data.slice(offset..offset + len);
    Message::Snapshot { term, meta: snapshot.meta.clone(), offset: offset as u64, data }
}

/// What node 3 answered node 1 since the network was last cleared.
fn answers(c: &Cluster) -> Vec<Message> {
    c.network.iter().filter(|(f, t, _)| (*f, *t) == (3, 1)).map(|(_, _, m)| m.clone()).collect()
}

// The follower checks what it received as a whole: a chunk past the declared length, or
// bytes that fail the CRC, make it start over, and nothing is installed.
#[test]
fn a_snapshot_that_overruns_its_length_or_fails_its_crc_is_not_installed() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    c.elect(1);
    c.deliver();
    let term = c.raft(3).term();
    let start = LogStart { index: 41, prev_term: term, offset: 40 };
    let snapshot = Snapshot::new(start, (1, Membership::new([1, 2, 3])), vec![5; 100].into());
    let mut overrun = snapshot.clone();
    overrun.meta.bytes = 60;
    let mut bad_crc = snapshot.clone();
    bad_crc.meta.crc ^= 1;
    for (forged, why) in [(overrun, "overruns"), (bad_crc, "fails its CRC")] {
        c.network.clear();
        c.node_mut(3).step(1, chunk(term, &forged, 0, 50));
        c.node_mut(3).step(1, chunk(term, &forged, 50, 50));
        c.flush(3);
        let received = |m: &Message| if let Message::SnapshotResponse { received, .. } = m { *received } else { 99 };
        assert_eq!(answers(&c).iter().map(received).collect::<Vec<_>>(), [50, 0], "a snapshot that {why}");
        assert_eq!(c.node(3).snapshot(), None, "a snapshot that {why} is not installed");
    }
    // The genuine one, with a stale chunk of another snapshot in between, is.
    c.network.clear();
    c.node_mut(3).step(1, chunk(term, &snapshot, 0, 50));
    let other = Snapshot::new(LogStart { index: 31, ..start }, (1, Membership::new([1, 2, 3])), vec![1; 100].into());
    c.node_mut(3).step(1, chunk(term, &other, 50, 50));
    c.node_mut(3).step(1, chunk(term, &snapshot, 50, 50));
    c.flush(3);
    assert_eq!(c.node(3).snapshot(), Some(&snapshot));
    assert_eq!(c.node(3).store().live().start(), start);
}

// The caller may keep a snapshot only of what is committed and durable here, newer than
// the one it keeps, within the size its followers accept.
#[test]
fn a_snapshot_is_taken_only_of_committed_entries_within_the_limits() {
    let mut c = Cluster::new(&[1, 2, 3], |config| config.snapshot_bytes_max = 100);
    c.elect(1);
    c.propose_entries(1, 5);
    c.run(10);
    let refused = |result: Result<SnapshotMeta, ReplicaError>| match result {
        Err(ReplicaError::Snapshot(e)) => e,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let node = c.node_mut(1);
    assert!(matches!(refused(node.save_snapshot(7, "x".into())), SnapshotError::NotCommitted { committed: 6, .. }));
    assert!(matches!(refused(node.save_snapshot(4, vec![0; 101].into())), SnapshotError::TooLarge { .. }));
    let meta = node.save_snapshot(4, "x".into()).unwrap();
    assert_eq!((meta.index(), meta.term(), meta.bytes), (4, 1, 1));
    assert!(matches!(refused(node.save_snapshot(4, "y".into())), SnapshotError::Older { kept: 4, .. }));
    assert!(node.save_snapshot(6, "y".into()).is_ok());
}

fn number() -> impl Strategy<Value = u64> {
    prop_oneof![0..4u64, 0..64u64, Just(NUMBER_MAX), Just(NUMBER_MAX + 1), Just(u64::MAX), any::<u64>()]
}

fn entry() -> impl Strategy<Value = Entry> {
    let payload = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..16),
        Just(Membership::new([1, 2, 3]).encode()),
        Just(Membership::new([1, 9]).encode()),
    ];
    (number(), number(), 0..4u8, number(), 0..3u32, payload).prop_map(|(index, term, kind, base, records, p)| {
        Entry::encode(EntryMeta { index, term, kind, base_offset: base, record_count: records }, &p)
    })
}

fn message() -> impl Strategy<Value = Message> {
    let entries = proptest::collection::vec(entry(), 0..4);
    let hint = proptest::option::of((number(), number()).prop_map(|(index, term)| Conflict { index, term }));
    let membership = prop_oneof![Just(Membership::new([1, 2, 3])), Just(Membership::default())];
    let start =
        || (number(), number(), number()).prop_map(|(index, prev_term, offset)| LogStart { index, prev_term, offset });
    prop_oneof![
        (number(), number(), number()).prop_map(|(term, i, t)| Message::PreVote { term, last_index: i, last_term: t }),
        (number(), any::<bool>()).prop_map(|(term, granted)| Message::PreVoteResponse { term, granted }),
        (number(), number(), number(), any::<bool>()).prop_map(|(term, i, t, transfer)| Message::Vote {
            term,
            last_index: i,
            last_term: t,
            transfer
        }),
        (number(), any::<bool>()).prop_map(|(term, granted)| Message::VoteResponse { term, granted }),
        (number(), number(), number(), number(), entries).prop_map(|(term, prev_index, prev_term, commit, entries)| {
            Message::Append { term, prev_index, prev_term, commit, entries }
        }),
        (number(), number(), hint).prop_map(|(term, index, reject)| Message::AppendResponse { term, index, reject }),
        (number(), number()).prop_map(|(term, commit)| Message::Heartbeat { term, commit }),
        number().prop_map(|term| Message::HeartbeatResponse { term }),
        number().prop_map(|term| Message::TimeoutNow { term }),
        (number(), start(), number(), membership.clone()).prop_map(|(term, start, membership_index, membership)| {
            Message::Reset { term, start, membership_index, membership }
        }),
        (number(), number()).prop_map(|(term, commit)| Message::Quiesce { term, commit }),
        (number(), start(), number(), membership, number(), any::<u32>(), number(), snapshot_bytes()).prop_map(
            |(term, start, membership_index, membership, bytes, crc, offset, data)| {
                let meta = SnapshotMeta { start, membership_index, membership, bytes, crc };
                Message::Snapshot { term, meta, offset, data }
            }
        ),
        (number(), number(), number()).prop_map(|(term, index, received)| Message::SnapshotResponse {
            term,
            index,
            received
        }),
    ]
}

fn snapshot_bytes() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..8).prop_map(Bytes::from)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    // A peer's message must never crash the core, whatever the role it finds it in: bad
    // messages are dropped or rejected, and what the core asks of the store stays valid
    // (MemStore asserts contiguous appends and truncations inside the log).
    #[test]
    fn garbage_and_out_of_range_messages_never_panic(
        msgs in proptest::collection::vec((1..5u64, message(), 0..40u32), 1..16),
        quiesce in any::<bool>(),
    ) {
        // With quiescence, the ticks often find the group quiet.
        let mut c = Cluster::new(&[1, 2, 3], |config| config.quiesce_after_ticks = quiesce.then_some(3));
        c.load_log(1, &[1, 1, 2], HardState { term: 2, vote: None, commit: 1 });
        c.elect(1);
        c.deliver();
        c.tick(3);
        // Ticks between the messages move nodes through elections while garbage arrives.
        for (k, (from, msg, ticks)) in msgs.into_iter().enumerate() {
            let to = [1, 2, 3][k % 3];
            for _ in 0..ticks {
                c.tick(to);
            }
            c.node_mut(to).step(from, msg);
            c.flush(to);
            c.deliver();
        }
        c.run(3);
    }
}
