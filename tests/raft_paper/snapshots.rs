//! Raft §7 (log compaction, InstallSnapshot) for a state machine that is not the log: a
//! follower behind the leader's first index is sent the leader's snapshot in chunks,
//! installs it, and continues with the entries after it.

use bytes::Bytes;
use keel::raft::{Config, LogStart, LogStore, Membership, Message, NodeId, Snapshot};
use keel::replica::testkit::Cluster;
use rand::SeedableRng;
use rand::rngs::SmallRng;

const CHUNK_BYTES: usize = 64;

fn small_chunks(config: &mut Config) {
    config.snapshot_chunk_bytes_max = CHUNK_BYTES;
}

/// The state machine's bytes through `index`, as a test stands them in.
fn state_through(index: u64) -> Bytes {
    (0..1000u64).map(|k| (k * 7 + index) as u8).collect::<Vec<u8>>().into()
}

/// Node 1 leads; node 3 missed entries 2..=31, which nodes 1 and 2 dropped after a
/// snapshot through 25 (1000 bytes: sixteen chunks). Node 3 is still cut off.
fn node_3_behind_a_snapshot() -> Cluster {
    let mut c = Cluster::new(&[1, 2, 3], small_chunks);
    c.elect(1);
    c.deliver();
    c.isolate(3);
    c.propose_entries(1, 30);
    c.run(10);
    for id in [1, 2] {
        assert_eq!(c.node(id).reported_commit(), 31);
        c.node_mut(id).save_snapshot(25, state_through(25)).unwrap();
        c.node_mut(id).store_mut().compact(25);
    }
    assert_eq!(c.node(3).store().last_index(), 1);
    c
}

/// Node 3 holds node 1's snapshot and, after it, the same log.
fn assert_caught_up_from_the_snapshot(c: &Cluster) {
    let (leader, follower) = (c.node(1), c.node(3));
    assert_eq!(follower.snapshot(), leader.snapshot(), "node 3 keeps the leader's snapshot");
    assert_eq!(follower.snapshot().unwrap().data, state_through(25));
    let (ours, theirs) = (follower.store().live(), leader.store().live());
    assert_eq!(ours.start(), LogStart { index: 26, prev_term: 1, offset: 24 }, "the log starts after it");
    assert_eq!(ours.last_index(), theirs.last_index());
    for index in 26..=theirs.last_index() {
        assert_eq!(ours.entry(index), theirs.entry(index), "entry {index}");
    }
    assert_eq!(c.raft(3).commit(), c.raft(1).commit());
    assert_eq!(follower.persisted_membership(), (1, Membership::new([1, 2, 3])));
}

fn snapshot_chunks_to(c: &Cluster, to: NodeId) -> usize {
    c.network.iter().filter(|(_, t, m)| *t == to && matches!(m, Message::Snapshot { .. })).count()
}

// Raft §7, Figure 13: the leader sends a follower that needs compacted entries its
// snapshot, then the entries after it.
#[test]
fn a_follower_far_behind_catches_up_from_a_snapshot_and_the_entries_after_it() {
    let mut c = node_3_behind_a_snapshot();
    c.heal();
    let mut most_in_flight = 0;
    for _ in 0..40 {
        for id in 1..=3 {
            c.tick(id);
        }
        while !c.network.is_empty() {
            most_in_flight = most_in_flight.max(snapshot_chunks_to(&c, 3));
            c.deliver_one();
        }
    }
    assert_eq!(most_in_flight, 1, "one chunk in flight at a time");
    assert_caught_up_from_the_snapshot(&c);
    // A restart starts from the snapshot and the log after it; the commit index, written
    // lazily, covers the snapshot at least, and the leader tells it the rest.
    c.node_mut(3).crash(&mut SmallRng::seed_from_u64(3), false);
    c.node_mut(3).restart().unwrap();
    assert!(c.raft(3).commit() >= 25, "everything in the snapshot is committed");
    c.run(10);
    assert_caught_up_from_the_snapshot(&c);
}

// Raft §7: chunks travel over a network that loses and duplicates them; the follower
// keeps what continues its bytes, says where it stands, and the leader resumes from there.
#[test]
fn a_snapshot_arrives_in_chunks_despite_losses_and_duplicates() {
    let mut c = node_3_behind_a_snapshot();
    c.heal();
    let (mut k, mut lost, mut doubled) = (0u64, 0, 0);
    for _ in 0..400 {
        for id in 1..=3 {
            c.tick(id);
        }
        while let Some((from, to, msg)) = c.network.pop_front() {
            k += 1;
            let snapshot_traffic = matches!(msg, Message::Snapshot { .. } | Message::SnapshotResponse { .. });
            let started_over = matches!(msg, Message::SnapshotResponse { received: 0, .. });
            assert!(!started_over, "a lost or doubled chunk never makes the follower start over");
            if snapshot_traffic && k % 3 == 0 {
                lost += 1;
                continue;
            }
            if snapshot_traffic && k % 5 == 0 {
                doubled += 1;
                c.network.push_back((from, to, msg.clone()));
            }
            c.node_mut(to).step(from, msg);
            c.flush(to);
        }
        if c.node(3).snapshot().is_some() && c.raft(3).commit() == c.raft(1).commit() {
            break;
        }
    }
    assert!(lost > 5 && doubled > 5, "the network lost {lost} and doubled {doubled} messages");
    c.run(10);
    assert_caught_up_from_the_snapshot(&c);
}

// Raft §7: "If existing log entry has same index and term as snapshot's last included
// entry, retain log entries following it and reply"; a snapshot that covers no more than
// what the follower committed changes nothing.
#[test]
fn a_snapshot_older_than_the_followers_log_is_ignored() {
    let mut c = Cluster::new(&[1, 2, 3], small_chunks);
    c.elect(1);
    c.propose_entries(1, 30);
    c.run(10);
    let term = c.raft(1).term();
    let before = c.node(3).store().live().clone();
    let membership = (1, Membership::new([1, 2, 3]));
    let old = Snapshot::new(LogStart { index: 21, prev_term: term, offset: 19 }, membership, state_through(20));
    c.network.clear();
    c.node_mut(3).step(1, Message::Snapshot { term, meta: old.meta, offset: 0, data: old.data.slice(..CHUNK_BYTES) });
    c.flush(3);
    assert_eq!(c.node(3).snapshot(), None, "nothing installed");
    assert_eq!(c.node(3).store().live().start(), before.start());
    assert_eq!(c.node(3).store().last_index(), before.last_index(), "the log is kept");
    let answer = c.network.iter().find(|(f, t, _)| (*f, *t) == (3, 1)).map(|(_, _, m)| m.clone());
    assert_eq!(answer, Some(Message::AppendResponse { term, index: 31, reject: None }), "it says where it is");
}

// A crash while chunks arrive loses them (they were only in memory): the follower comes
// back with the log it had, and the leader starts the snapshot over.
#[test]
fn a_crash_while_receiving_a_snapshot_leaves_the_old_log_and_the_transfer_starts_over() {
    let mut c = node_3_behind_a_snapshot();
    c.heal();
    let before = c.node(3).store().live().clone();
    let mut delivered = 0;
    while delivered < 5 {
        for id in 1..=3 {
            c.tick(id);
        }
        while let Some((_, to, msg)) = c.network.front() {
            if delivered == 5 {
                c.network.clear();
                break;
            }
            delivered += usize::from(*to == 3 && matches!(msg, Message::Snapshot { .. }));
            c.deliver_one();
        }
    }
    assert_eq!(c.node(3).snapshot(), None, "five chunks of sixteen: nothing installed yet");
    c.node_mut(3).crash(&mut SmallRng::seed_from_u64(5), true);
    c.node_mut(3).restart().unwrap();
    assert_eq!(c.node(3).snapshot(), None);
    assert_eq!((c.node(3).store().first_index(), c.node(3).store().last_index()), (1, before.last_index()));
    c.run(60);
    assert_caught_up_from_the_snapshot(&c);
}

// A crash right after the snapshot was saved, before the log reset that follows it was
// durable, leaves a snapshot ahead of the log: the restart finishes the install.
#[test]
fn a_crash_in_the_middle_of_an_install_is_finished_on_restart() {
    for seed in 0..8 {
        let mut c = node_3_behind_a_snapshot();
        c.heal();
        c.auto_sync = false;
        for id in [1, 2] {
            c.sync(id);
        }
        let mut ticks = 0;
        while c.node(3).snapshot().is_none() {
            c.run(1);
            for id in [1, 2] {
                c.sync(id);
            }
            ticks += 1;
            assert!(ticks < 100, "the snapshot reaches node 3");
        }
        assert!(c.node(3).pending_writes() > 0, "the log reset is written, not yet durable");
        c.node_mut(3).crash(&mut SmallRng::seed_from_u64(seed), seed % 2 == 0);
        c.node_mut(3).restart().unwrap();
        let store = c.node(3).store().live();
        assert_eq!(store.start(), LogStart { index: 26, prev_term: 1, offset: 24 }, "seed {seed}: log after snapshot");
        assert!(c.raft(3).commit() >= 25);
        assert_eq!(c.node(3).snapshot().map(|s| s.data.clone()), Some(state_through(25)));
        c.auto_sync = true;
        c.run(10);
        assert_caught_up_from_the_snapshot(&c);
    }
}
