//! Committing and fetching offsets, their expiry, lag, and which partition coordinates.

use super::*;

#[test]
fn a_commit_is_acknowledged_only_once_its_record_is_committed() {
    let mut h = Harness::new();
    let members = h.stable_group_of_three();
    let handle = h.commit(members[0].commit_request(&[("orders", 0, 10), ("orders", 1, 20)]));
    assert!(h.take(handle).is_none(), "not before the record is committed");
    assert_eq!(h.c.fetch_offsets(GROUP, None).unwrap(), vec![], "not visible before either");
    assert_eq!(h.appends.len(), 1);
    assert_eq!(h.appends[0].records.len(), 2, "one record per partition, in one append");
    h.commit_appends();
    assert_eq!(codes(&h.commit_reply(handle)), [0, 0]);
    let fetched = h.c.fetch_offsets(GROUP, Some(&[("orders".into(), vec![1, 0, 7])])).unwrap();
    let offsets: Vec<(i32, i64, &str)> = fetched.iter().map(|f| (f.partition, f.offset, f.metadata.as_str())).collect();
    assert_eq!(offsets, [(1, 20, "at 20"), (0, 10, "at 10"), (7, -1, "")]);
}

#[test]
fn a_commit_whose_append_fails_is_answered_with_the_error_and_stores_nothing() {
    let mut h = Harness::new();
    let handle = h.commit(anonymous_commit("tools", &[("orders", 0, 10)]));
    let append = h.appends.pop_front().unwrap();
    let out = h.c.append_failed(append.token, GroupError::NotCoordinator, h.now);
    h.absorb(out);
    assert_eq!(codes(&h.commit_reply(handle)), [16]);
    assert!(h.c.committed_state().is_empty());
    assert!(h.c.list().unwrap().is_empty(), "the group the commit made is gone with it");
}

#[test]
fn a_consumer_without_a_group_protocol_commits_and_fetches_offsets() {
    let mut h = Harness::new();
    assert_eq!(h.commit_now(anonymous_commit("tools", &[("orders", 3, 300)])), [0]);
    let all = h.c.fetch_offsets("tools", None).unwrap();
    assert_eq!((all[0].partition, all[0].offset), (3, 300));
    assert_eq!(h.c.fetch_offsets("unknown", Some(&[("orders".into(), vec![3])])).unwrap()[0].offset, -1);
    let listed = h.c.list().unwrap();
    assert_eq!((listed[0].group_id.as_str(), listed[0].state), ("tools", GroupState::Empty));
}

#[test]
fn offsets_of_an_empty_group_expire_after_the_retention_and_the_group_with_them() {
    let retention = settings().offsets_retention_ms;
    let mut h = Harness::new();
    let members = h.stable_group_of_three();
    assert_eq!(h.commit_now(members[0].commit_request(&[("orders", 0, 10)])), [0]);
    let everyone = members.iter().map(|m| LeavingMember { member_id: m.id.clone(), group_instance_id: None }).collect();
    h.leave(LeaveRequest { group_id: GROUP.into(), members: everyone });
    h.commit_appends();
    h.advance(retention - 1_000);
    assert!(h.appends.is_empty(), "not before the retention");
    h.advance(1_000);
    assert_eq!(h.appends.len(), 1, "tombstones for the offset and the group");
    assert!(h.appends[0].records.iter().all(StoredRecord::is_tombstone));
    assert_eq!(h.state(), GroupState::Dead, "nothing joins a group being deleted");
    h.commit_appends();
    assert!(h.c.committed_state().is_empty());
    assert_eq!(h.state(), GroupState::Dead, "an unknown group is described as dead");
    assert!(h.c.list().unwrap().is_empty());
    assert!(h.successor().c.committed_state().is_empty(), "the log says the same");
}

#[test]
fn offsets_of_a_group_with_members_never_expire() {
    let retention = settings().offsets_retention_ms;
    let mut h = Harness::new();
    let members = h.stable_group_of_three();
    assert_eq!(h.commit_now(members[0].commit_request(&[("orders", 0, 10)])), [0]);
    for _ in 0..(2 * retention / 500) {
        h.advance(500);
        members.iter().for_each(|m| assert_eq!(h.heartbeat(m), None));
    }
    assert!(h.appends.is_empty());
    assert_eq!(h.c.fetch_offsets(GROUP, None).unwrap()[0].offset, 10);
}

#[test]
fn offsets_of_a_consumer_without_a_group_expire_one_by_one_after_their_commit() {
    let retention = settings().offsets_retention_ms;
    let mut h = Harness::new();
    assert_eq!(h.commit_now(anonymous_commit("tools", &[("orders", 0, 1)])), [0]);
    h.advance(retention / 2);
    assert_eq!(h.commit_now(anonymous_commit("tools", &[("orders", 1, 2)])), [0]);
    h.advance(retention / 2);
    h.commit_appends();
    let left = h.c.fetch_offsets("tools", None).unwrap();
    assert_eq!(left.iter().map(|f| f.partition).collect::<Vec<_>>(), [1], "partition 0 expired, 1 not yet");
}

#[test]
fn an_offset_with_a_commit_on_the_way_does_not_expire_under_it() {
    let retention = settings().offsets_retention_ms;
    let mut h = Harness::new();
    assert_eq!(h.commit_now(anonymous_commit("tools", &[("orders", 0, 1)])), [0]);
    h.advance(retention - 1);
    let fresh = h.commit(anonymous_commit("tools", &[("orders", 0, 2)]));
    h.advance(1_000);
    assert_eq!(h.appends.len(), 1, "only the commit: no tombstone may follow it and erase it");
    h.commit_appends();
    assert_eq!(codes(&h.commit_reply(fresh)), [0]);
    assert_eq!(h.c.fetch_offsets("tools", None).unwrap()[0].offset, 2);
}

#[test]
fn lag_is_the_end_minus_the_committed_offset_and_unknown_without_either() {
    let committed = BTreeMap::from([
        (("orders".to_string(), 0), 90),
        (("orders".to_string(), 1), 120),
        (("gone".to_string(), 0), 5),
        (("orders".to_string(), 3), -1),
    ]);
    let ends = BTreeMap::from([
        (("orders".to_string(), 0), 100),
        (("orders".to_string(), 1), 110),
        (("orders".to_string(), 2), 7),
        (("orders".to_string(), 3), 4),
    ]);
    let lags = lag(&committed, &ends);
    let rows: Vec<(&str, u32, Option<u64>)> = lags.iter().map(|l| (l.topic.as_str(), l.partition, l.lag)).collect();
    assert_eq!(
        rows,
        [("gone", 0, None), ("orders", 0, Some(10)), ("orders", 1, Some(0)), ("orders", 2, None), ("orders", 3, None)]
    );
    assert_eq!(total_lag(&lags), 10);
}

#[test]
fn the_coordinator_partition_of_a_group_never_changes() {
    // These values are stored: every committed offset sits in the partition they name.
    let pinned: Vec<u32> =
        ["", "orders-app", "connect-sink", "g"].iter().map(|g| coordinator_partition(g, 16)).collect();
    assert_eq!(pinned, [5, 6, 7, 6]);
    let spread: std::collections::BTreeSet<u32> =
        (0..200).map(|i| coordinator_partition(&format!("group-{i}"), 16)).collect();
    assert_eq!(spread.len(), 16, "groups spread over every partition");
}
