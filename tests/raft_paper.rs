//! Scenarios from the Raft paper (Ongaro & Ousterhout, 2014) and Ongaro's thesis (2014),
//! each named after the section or figure it reproduces, run on the in-memory testkit.

use keel::raft::{Config, HardState, LogStore, MembershipChange, NodeId, Role};
use keel::replica::testkit::Cluster;

fn log_terms(c: &Cluster, id: NodeId) -> Vec<u64> {
    let log = c.node(id).store().live();
    (log.first_index()..=log.last_index()).map(|i| log.term(i).expect("in the log")).collect()
}

fn hard_state(term: u64, vote: Option<NodeId>, commit: u64) -> HardState {
    HardState { term, vote, commit }
}

/// Three nodes with `tweak`ed configs, settled under leader 1.
fn three_led_by_1(tweak: impl Fn(&mut Config)) -> Cluster {
    let mut c = Cluster::new(&[1, 2, 3], tweak);
    c.elect(1);
    c.run(10);
    c
}

// Raft §5.3, Figure 7: when the leader of term 8 comes to power, followers may be missing
// entries (a, b), have extra uncommitted entries (c, d), or both (e, f). The leader forces
// every follower's log to duplicate its own.
#[test]
fn figure_7_followers_with_missing_and_extra_entries_converge() {
    let leader: &[u64] = &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
    let followers: [&[u64]; 6] = [
        &[1, 1, 1, 4, 4, 5, 5, 6, 6],
        &[1, 1, 1, 4],
        &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
        &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
        &[1, 1, 1, 4, 4, 4, 4],
        &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
    ];
    let mut c = Cluster::new(&[1, 2, 3, 4, 5, 6, 7], |_| {});
    c.load_log(1, leader, hard_state(7, None, 3));
    for (k, log) in followers.iter().enumerate() {
        c.load_log(k as NodeId + 2, log, hard_state(7, None, 3));
    }
    // (a), (b), (e) and (f) vote for the leader: its log is at least as up to date as theirs.
    c.elect(1);
    assert_eq!(c.raft(1).term(), 8);
    c.deliver();
    c.run(10);
    let expected = [leader, &[8]].concat();
    for id in 1..=7 {
        assert_eq!(log_terms(&c, id), expected, "node {id}'s log duplicates the leader's");
        assert_eq!(c.raft(id).commit(), 11, "node {id} knows everything is committed");
    }
}

/// The history of Figure 8 (c): S1 leads term 4 holding index 2 from term 2, which S2 has
/// too; S5 holds a conflicting index 2 from term 3. Append batches carry one entry, so
/// index 2 reaches S3 and S4 before S1's own no-op does.
fn figure_8_at_c() -> Cluster {
    let mut c = Cluster::new(&[1, 2, 3, 4, 5], |config| {
        config.append_entries_max = 1;
        config.check_quorum = false;
    });
    c.load_log(1, &[1, 2], hard_state(2, Some(1), 1));
    c.load_log(2, &[1, 2], hard_state(2, Some(1), 1));
    c.load_log(3, &[1], hard_state(3, Some(5), 1));
    c.load_log(4, &[1], hard_state(3, Some(5), 1));
    c.load_log(5, &[1, 3], hard_state(3, Some(5), 1));
    c.isolate(5);
    c.elect(1);
    assert_eq!(c.raft(1).term(), 4, "term 3 was S5's; S1 wins term 4 with S2, S3 and S4");
    c
}

// Raft §5.4.2, Figure 8 (c) and (d): an entry from an earlier term can be on a majority
// and still be overwritten, so a leader never commits it by counting replicas; only an
// entry of its own term commits by counting (and commits the earlier ones with it).
#[test]
fn figure_8_an_old_term_entry_is_not_committed_by_counting_replicas() {
    let mut c = figure_8_at_c();
    let on_majority =
        |c: &Cluster| [3, 4].iter().all(|id| c.raft(1).progress().iter().any(|p| p.id == *id && p.match_index >= 2));
    assert!(c.deliver_until(on_majority), "index 2 reaches S3 and S4");
    // Index 2 (term 2) is on S1, S2, S3 and S4, but S1's term-4 entry is not on a majority.
    assert!(c.raft(1).commit() < 2, "S1 must not commit index 2 by counting replicas");
    // (d) S1 crashes; S5 wins term 5 with votes from S3 and S4 (their last term 2 < 3) and
    // replaces index 2 everywhere: it had never been committed.
    c.isolate(1);
    c.cut.retain(|(a, b)| *a == 1 || *b == 1);
    c.elect(5);
    c.deliver();
    c.run(10);
    for id in 2..=5 {
        assert_eq!(log_terms(&c, id)[..2], [1, 3], "S{id} holds S5's index 2");
    }
    assert!(c.raft(5).commit() >= 2);
}

// Raft §5.4.2, Figure 8 (e): once S1 replicated an entry of its own term to a majority,
// that entry and index 2 before it are committed, and S5 can no longer win an election.
#[test]
fn figure_8_an_entry_of_the_current_term_commits_the_earlier_ones() {
    let mut c = figure_8_at_c();
    c.deliver();
    c.run(10);
    assert_eq!(c.raft(1).commit(), 3, "S1's no-op of term 4 commits, and index 2 with it");
    c.isolate(1);
    c.cut.retain(|(a, b)| *a == 1 || *b == 1);
    for _ in 0..20 * 30 {
        c.tick(5);
        c.deliver();
    }
    assert_ne!(c.raft(5).role(), Role::Leader, "S5's log is behind a majority's");
}

// Raft §5.2: when candidates time out together each votes for itself and nobody wins.
// Identical timeouts split the vote forever; randomized ones resolve it quickly.
#[test]
fn split_votes_are_resolved_by_randomized_timeouts() {
    let fixed = |config: &mut Config| {
        config.pre_vote = false;
        config.election_ticks_max = config.election_ticks_min;
    };
    let mut c = Cluster::new(&[1, 2, 3, 4, 5], fixed);
    c.run(20 * 15);
    assert_eq!(c.leader(), None, "five simultaneous candidates, twenty split votes");
    assert!(c.raft(1).term() >= 20);

    let mut c = Cluster::new(&[1, 2, 3, 4, 5], |config| config.pre_vote = false);
    let mut ticks = 0;
    while c.leader().is_none() {
        c.run(1);
        ticks += 1;
        assert!(ticks < 5 * 30, "randomized timeouts elect a leader within a few timeouts");
    }
}

// Raft §5.4.1: a voter denies its vote to a candidate whose log is less up to date than
// its own (last term, then last index), so a node that missed committed entries cannot
// become leader. No lease and no pre-vote here: the vote rule alone decides.
#[test]
fn election_restriction_a_node_with_a_stale_log_cannot_win() {
    let mut c = Cluster::new(&[1, 2, 3], |config| {
        config.pre_vote = false;
        config.check_quorum = false;
    });
    c.elect(1);
    c.deliver();
    c.isolate(3);
    c.propose_entries(1, 5);
    c.run(10);
    assert_eq!(c.raft(2).commit(), 6);
    // S1 crashes; S3 comes back with a stale log and campaigns.
    c.heal();
    c.isolate(1);
    for _ in 0..3 * 30 {
        c.tick(3);
        c.deliver();
    }
    assert_ne!(c.raft(3).role(), Role::Leader, "S2 denies the stale candidate");
    assert_eq!(c.raft(2).term(), c.raft(3).term(), "S2 heard the request");
    assert_ne!(c.raft(2).vote(), Some(3));
    c.elect(2);
}

// Thesis §9.6 (pre-vote) with §4.2.3: a node cut off from the cluster keeps timing out,
// but it never gathers a quorum of pre-votes, so its term does not grow and on return it
// does not depose the healthy leader. Without pre-vote the same history disrupts.
#[test]
fn a_partitioned_node_rejoining_does_not_disrupt_the_cluster() {
    for pre_vote in [true, false] {
        let mut c = three_led_by_1(|config| config.pre_vote = pre_vote);
        let term = c.raft(1).term();
        c.isolate(3);
        c.run(20 * 30);
        assert_eq!(c.raft(3).term() == term, pre_vote, "pre-vote {pre_vote}: the isolated node's term");
        c.heal();
        c.run(5 * 30);
        let undisturbed = c.leader() == Some(1) && c.raft(1).term() == term;
        assert_eq!(undisturbed, pre_vote, "pre-vote {pre_vote}: the leader keeps its term");
        assert_eq!(c.raft(3).leader(), c.leader(), "the returning node follows the leader");
    }
}

// Thesis §6.2 (check-quorum): a leader that hears from no majority for an election timeout
// steps down, so clients stop talking to a leader that cannot commit.
#[test]
fn a_leader_isolated_from_the_majority_steps_down() {
    for check_quorum in [true, false] {
        let mut c = three_led_by_1(|config| config.check_quorum = check_quorum);
        c.isolate(1);
        c.run(3 * 30);
        let stepped_down = c.raft(1).role() != Role::Leader;
        assert_eq!(stepped_down, check_quorum, "check-quorum {check_quorum}: the isolated leader");
        assert!(c.leader().is_some_and(|l| l != 1), "the majority elected a new leader");
    }
}

/// Node 1 leads `voters` (plus `newcomer`, not yet a member) and proposes `changes`; runs
/// until it commits C_old,new (one message at a time), then cuts node 1 off, dropping the
/// C_new it appended on that commit.
fn commit_joint_then_isolate_leader(voters: &[NodeId], newcomer: NodeId, changes: &[MembershipChange]) -> Cluster {
    let mut c = Cluster::new(voters, |_| {});
    c.add_node(newcomer, Default::default(), |_| {});
    c.elect(1);
    c.deliver();
    let joint = c.node_mut(1).propose_membership(changes).unwrap();
    c.flush(1);
    assert!(c.deliver_until(|c| c.raft(1).commit() >= joint), "the joint configuration commits");
    assert!(!c.raft(1).membership().is_joint(), "the leader appended C_new on commit");
    c.isolate(1);
    c
}

// Raft §6: once C_old,new is committed the leader appends C_new. If the leader changes
// in between, the next leader (which has C_old,new, being elected by both majorities)
// appends C_new itself.
#[test]
fn joint_consensus_leave_step_completes_when_the_leader_changes() {
    let changes = [MembershipChange::AddVoter(4), MembershipChange::RemoveVoter(3)];
    let mut c = commit_joint_then_isolate_leader(&[1, 2, 3], 4, &changes);
    // S1 and S2 were majorities of both halves; S3 and S4 may not have it yet.
    assert!(c.raft(2).membership().is_joint(), "S2 has C_old,new, not C_new");
    let mut rounds = 0;
    while !c.leader().is_some_and(|l| l != 1 && !c.raft(l).membership().is_joint()) {
        c.run(1);
        rounds += 1;
        assert!(rounds < 20 * 30, "a new leader finishes the change");
    }
    c.run(10);
    let leader = c.leader().unwrap();
    assert_eq!(c.raft(leader).membership().voters, [1, 2, 4].into());
    assert!(c.raft(leader).commit() >= c.raft(leader).membership_index(), "C_new is committed");
}

// Regression (simulator seeds 160 and 242): a node whose latest configuration removes it
// must still campaign while that configuration is uncommitted, since the others may need
// its vote (thesis §4.2.2). Here C_old = {1, 2}: only S1 holds C_new, its log is the
// longest, and the joint configuration needs S1 and S2 to elect anyone else.
#[test]
fn a_node_removed_by_an_uncommitted_configuration_still_campaigns() {
    let changes = [MembershipChange::AddVoter(3), MembershipChange::RemoveVoter(1)];
    let mut c = commit_joint_then_isolate_leader(&[1, 2], 3, &changes);
    c.run(3 * 30);
    assert_ne!(c.raft(1).role(), Role::Leader, "cut off, S1 stepped down (check-quorum)");
    c.heal();
    let mut rounds = 0;
    while !c.leader().is_some_and(|l| l != 1 && c.raft(l).commit() >= c.raft(l).membership_index()) {
        c.run(1);
        rounds += 1;
        assert!(rounds < 20 * 30, "S1 campaigns, commits C_new, and hands over to S2 or S3");
    }
    assert_eq!(c.raft(c.leader().unwrap()).membership().voters, [2, 3].into());
}

#[path = "raft_paper/quiescence.rs"]
mod quiescence;
#[path = "raft_paper/snapshots.rs"]
mod snapshots;
