//! Quiescence (`raft/quiesce.rs`; CockroachDB's quiesced ranges): an idle group stops its
//! timers, its followers keep their leader lease, and a failure detector outside the core
//! wakes it when a node goes down. Each rule of the module documentation, one test each.

use keel::raft::{Config, LogStore, Message, NodeId, Role};
use keel::replica::testkit::Cluster;
use rand::SeedableRng;
use rand::rngs::SmallRng;

const QUIESCE_AFTER_TICKS: u32 = 10;

fn quiet(config: &mut Config) {
    config.quiesce_after_ticks = Some(QUIESCE_AFTER_TICKS);
}

/// Three nodes led by 1 that went quiet.
fn quiet_three() -> Cluster {
    let mut c = Cluster::new(&[1, 2, 3], quiet);
    c.elect(1);
    c.deliver();
    c.run(3 * QUIESCE_AFTER_TICKS);
    for id in 1..=3 {
        assert!(c.node(id).is_quiesced(), "node {id} went quiet: {:?}", c.raft(id));
    }
    c
}

/// Ticks every running node `ticks` times, delivering what they send; returns how many
/// messages the ticks made the nodes send.
fn ticks_sending(c: &mut Cluster, ticks: u32) -> usize {
    let mut sent = 0;
    for _ in 0..ticks {
        for id in c.nodes.keys().copied().collect::<Vec<NodeId>>() {
            if c.node(id).is_up() {
                c.tick(id);
            }
        }
        sent += c.network.len();
        c.deliver();
    }
    sent
}

#[test]
fn an_idle_leader_and_its_followers_go_quiet_and_send_nothing() {
    let mut c = quiet_three();
    let term = c.raft(1).term();
    assert_eq!(ticks_sending(&mut c, 20 * 30), 0, "twenty election timeouts without a message");
    assert_eq!((c.leader(), c.raft(1).term()), (Some(1), term), "and nobody campaigned");
    for id in [2, 3] {
        assert_eq!((c.raft(id).role(), c.raft(id).leader()), (Role::Follower, Some(1)));
        assert_eq!(c.raft(id).commit(), c.raft(1).commit());
    }
    // Without quiescence the same idle group heartbeats all along.
    let mut awake = Cluster::new(&[1, 2, 3], |_| {});
    awake.elect(1);
    awake.deliver();
    assert!(ticks_sending(&mut awake, 30) > 0);
}

#[test]
fn a_proposal_wakes_the_group_and_commits_then_it_goes_quiet_again() {
    let mut c = quiet_three();
    let index = c.propose(1, b"wake up").unwrap().index;
    assert!(!c.node(1).is_quiesced(), "a proposal wakes the leader");
    c.deliver();
    assert!((2..=3).all(|id| !c.node(id).is_quiesced()), "the leader's Append woke the followers");
    // The next heartbeat tells the followers the commit index.
    c.run(QUIESCE_AFTER_TICKS / 2);
    for id in 1..=3 {
        assert_eq!(c.raft(id).commit(), index, "node {id} committed the proposal");
    }
    c.run(3 * QUIESCE_AFTER_TICKS);
    for id in 1..=3 {
        assert!(c.node(id).is_quiesced(), "node {id} is quiet again");
    }
}

#[test]
fn when_a_quiet_leader_crashes_the_woken_followers_elect_another() {
    let mut c = quiet_three();
    let term = c.raft(1).term();
    c.node_mut(1).crash(&mut SmallRng::seed_from_u64(1), false);
    c.run(10 * 30);
    assert_eq!(c.leader(), None, "quiet followers do not notice a dead leader by themselves");
    // Node 2's detector alone: node 3 still holds its lease on 1 and refuses node 2.
    c.wake(2, 1);
    c.run(5 * 30);
    assert_eq!(c.leader(), None, "one detector is not a quorum");
    assert_eq!(c.raft(2).term(), term, "pre-votes refused: no term was spent");
    c.wake(3, 1);
    let mut ticks = 0;
    while c.leader().is_none() {
        c.run(1);
        ticks += 1;
        assert!(ticks < 3 * 30, "every detector says 1 is down: an election within a few timeouts");
    }
    let leader = c.leader().unwrap();
    let index = c.propose(leader, b"after failover").unwrap().index;
    c.run(QUIESCE_AFTER_TICKS / 2);
    assert!([2, 3].iter().all(|id| c.raft(*id).commit() >= index));
}

#[test]
fn a_quiet_leader_that_restarts_is_followed_again_without_a_detector() {
    let mut c = quiet_three();
    c.node_mut(1).crash(&mut SmallRng::seed_from_u64(1), false);
    c.node_mut(1).restart().unwrap();
    // Its own pre-vote shows the followers it leads no more: their lease on it ends.
    let mut ticks = 0;
    while c.leader().is_none() {
        c.run(1);
        ticks += 1;
        assert!(ticks < 5 * 30, "a leader within a few timeouts: {:?}", c.nodes);
    }
}

#[test]
fn a_follower_cut_off_from_a_quiet_leader_cannot_depose_it() {
    let mut c = quiet_three();
    let term = c.raft(1).term();
    c.cut.extend([(1, 3), (3, 1)]);
    // Each side's detector says the other is down: 3 stops trusting 1, 1 resumes heartbeats.
    c.wake(3, 1);
    c.wake(1, 3);
    c.run(20 * 30);
    assert_eq!((c.leader(), c.raft(1).term()), (Some(1), term), "node 2 keeps its lease on 1");
    assert_eq!(c.raft(2).leader(), Some(1));
    assert_eq!(c.raft(3).term(), term, "node 3's pre-votes all failed");
    assert_ne!(c.raft(3).role(), Role::Leader);
    c.heal();
    c.run(3 * 30);
    assert_eq!((c.leader(), c.raft(1).term()), (Some(1), term));
    assert_eq!(c.raft(3).leader(), Some(1), "node 3 follows the leader again");
    c.run(3 * QUIESCE_AFTER_TICKS);
    assert!((1..=3).all(|id| c.node(id).is_quiesced()), "and the group is quiet again");
}

#[test]
fn a_lagging_follower_keeps_the_group_awake_until_it_caught_up() {
    let mut c = Cluster::new(&[1, 2, 3], quiet);
    c.elect(1);
    c.deliver();
    c.isolate(3);
    c.propose_entries(1, 5);
    c.run(10 * QUIESCE_AFTER_TICKS);
    assert!(!c.node(1).is_quiesced(), "node 3 lacks entries: the leader keeps heartbeating");
    assert!(!c.node(2).is_quiesced());
    c.heal();
    c.run(3 * QUIESCE_AFTER_TICKS);
    let last = c.node(1).store().last_index();
    assert_eq!(c.node(3).store().last_index(), last, "node 3 caught up");
    assert!((1..=3).all(|id| c.node(id).is_quiesced()), "then the group went quiet");
}

#[test]
fn a_follower_that_is_not_caught_up_answers_quiesce_as_a_heartbeat_and_wakes_the_leader() {
    let mut c = quiet_three();
    let (term, last) = (c.raft(1).term(), c.node(1).store().last_index());
    // A Quiesce naming entries node 3 does not hold (as if it had lost them).
    c.node_mut(3).step(1, Message::Quiesce { term, commit: last + 2 });
    c.flush(3);
    assert!(!c.node(3).is_quiesced(), "node 3 does not go quiet");
    let answers: Vec<&Message> = c.network.iter().filter(|(f, t, _)| (*f, *t) == (3, 1)).map(|(_, _, m)| m).collect();
    assert!(answers.iter().any(|m| matches!(m, Message::HeartbeatResponse { .. })), "{answers:?}");
    assert!(answers.iter().any(|m| matches!(m, Message::AppendResponse { reject: Some(_), .. })), "{answers:?}");
    c.deliver_one();
    assert!(!c.node(1).is_quiesced(), "the answer woke the leader");
}

#[test]
fn a_quiet_leader_that_cut_damaged_entries_lets_the_others_elect_a_leader() {
    let mut c = quiet_three();
    c.propose_entries(1, 4);
    c.run(3 * QUIESCE_AFTER_TICKS);
    assert!((1..=3).all(|id| c.node(id).is_quiesced()));
    // The leader's disk damaged its entries: it cuts them and may not campaign (the vote
    // barrier), while its quiet followers still trust it.
    c.node_mut(1).cut_damaged(2).unwrap();
    assert!(c.raft(1).vote_barrier().is_some());
    let mut ticks = 0;
    while c.leader().is_none_or(|l| l == 1) {
        c.run(1);
        ticks += 1;
        assert!(ticks < 5 * 30, "node 2 or 3 leads within a few timeouts: {:?}", c.nodes);
    }
    c.run(3 * 30);
    let leader = c.leader().unwrap();
    assert_eq!(c.node(1).store().last_index(), c.node(leader).store().last_index(), "node 1 got its entries back");
    assert_eq!(c.raft(1).vote_barrier(), None);
}
