//! Requests that must be refused: each with Kafka's error code, and none changes anything.

use super::*;

/// Runs `request` against `h` and checks it changed nothing: no record, no state.
fn refused<T>(h: &mut Harness, request: impl FnOnce(&mut Harness) -> T) -> T {
    let before = h.c.clone();
    let answer = request(h);
    assert_eq!(h.c, before, "a refused request changed the coordinator");
    assert!(h.appends.is_empty(), "a refused request appended records");
    answer
}

#[test]
fn sync_from_an_unknown_member_is_refused_with_unknown_member_id() {
    let mut h = Harness::new();
    let members = h.stable_group_of_three();
    let stranger = Joined { id: "stranger".into(), ..members[0].clone() };
    let handle = refused(&mut h, |h| h.sync(stranger.sync_request(&members)));
    assert_eq!(error_code(&h.sync_reply(handle).error), 25);
    let unknown_group = SyncRequest { group_id: "no-such-group".into(), ..members[0].sync_request(&members) };
    let handle = refused(&mut h, |h| h.sync(unknown_group));
    assert_eq!(error_code(&h.sync_reply(handle).error), 25);
}

#[test]
fn sync_with_a_stale_generation_is_refused_with_illegal_generation() {
    let mut h = Harness::new();
    let members = h.stable_group_of_three();
    let stale = Joined { generation: 0, ..members[1].clone() };
    let handle = refused(&mut h, |h| h.sync(stale.sync_request(&members)));
    assert_eq!(error_code(&h.sync_reply(handle).error), 22);
}

#[test]
fn a_commit_from_a_member_of_an_old_generation_is_refused_with_illegal_generation() {
    let mut h = Harness::new();
    let members = h.stable_group_of_three();
    let (_, fourth) = h.join_new("d");
    let rejoins: Vec<Handle> = members.iter().map(|m| h.join(join_request("x", &m.id, None))).collect();
    assert_eq!(h.join_reply(fourth).generation_id, 2);
    rejoins.into_iter().for_each(|r| drop(h.join_reply(r)));
    let old = &members[0];
    let handle = refused(&mut h, |h| h.commit(old.commit_request(&[("orders", 0, 5)])));
    assert_eq!(codes(&h.commit_reply(handle)), [22]);
}

#[test]
fn a_commit_while_the_group_awaits_its_assignment_is_refused_with_rebalance_in_progress() {
    let mut h = Harness::new();
    let (_, a) = h.join_new("a");
    h.advance(DELAY_MS);
    let member = Joined::from(h.join_reply(a));
    let handle = refused(&mut h, |h| h.commit(member.commit_request(&[("orders", 0, 5)])));
    assert_eq!(codes(&h.commit_reply(handle)), [27]);
}

#[test]
fn a_commit_from_an_unknown_member_is_refused_with_unknown_member_id() {
    let mut h = Harness::new();
    let members = h.stable_group_of_three();
    let stranger = Joined { id: "stranger".into(), ..members[0].clone() };
    let handle = refused(&mut h, |h| h.commit(stranger.commit_request(&[("orders", 0, 5)])));
    assert_eq!(codes(&h.commit_reply(handle)), [25]);
    // Nor may a consumer without a generation commit to a group that has members.
    let handle = refused(&mut h, |h| h.commit(anonymous_commit(GROUP, &[("orders", 0, 5)])));
    assert_eq!(codes(&h.commit_reply(handle)), [25]);
}

#[test]
fn a_commit_for_a_partition_the_member_was_not_assigned_is_accepted_as_kafka_does() {
    // The assignment is the assignor's bytes, which keel never reads; Kafka does not check
    // ownership either.
    let mut h = Harness::new();
    let members = h.stable_group_of_three();
    assert_eq!(h.commit_now(members[1].commit_request(&[("not-assigned-to-b", 99, 7)])), [0]);
}

#[test]
fn a_group_id_of_10000_bytes_is_refused_with_invalid_group_id_everywhere() {
    let mut h = Harness::new();
    let members = h.stable_group_of_three();
    let long = "g".repeat(10_000);
    let join = refused(&mut h, |h| h.join(JoinRequest { group_id: long.clone(), ..join_request("a", "", None) }));
    assert_eq!(error_code(&h.join_reply(join).error), 24);
    let sync = SyncRequest { group_id: long.clone(), ..members[0].sync_request(&members) };
    let sync = refused(&mut h, |h| h.sync(sync));
    assert_eq!(error_code(&h.sync_reply(sync).error), 24);
    let commit = CommitRequest { group_id: long.clone(), ..members[0].commit_request(&[("orders", 0, 1)]) };
    let commit = refused(&mut h, |h| h.commit(commit));
    assert_eq!(codes(&h.commit_reply(commit)), [24]);
    let anonymous = refused(&mut h, |h| h.commit(anonymous_commit(&long, &[("orders", 0, 1)])));
    assert_eq!(codes(&h.commit_reply(anonymous)), [24]);
    let heartbeat = HeartbeatRequest {
        group_id: long.clone(),
        generation_id: 1,
        member_id: members[0].id.clone(),
        group_instance_id: None,
    };
    let answer = refused(&mut h, |h| h.c.heartbeat(heartbeat, h.now));
    assert_eq!(error_code(&answer.error), 24);
    let leave = LeaveRequest { group_id: long.clone(), members: vec![] };
    assert_eq!(error_code(&refused(&mut h, |h| h.leave(leave)).error), 24);
    assert_eq!(h.c.fetch_offsets(&long, None).unwrap_err().code(), 24);
    assert_eq!(h.c.describe(&long).unwrap_err().code(), 24);
    // The longest id allowed works.
    let longest = "g".repeat(GROUP_ID_BYTES_MAX);
    assert_eq!(h.commit_now(anonymous_commit(&longest, &[("orders", 0, 1)])), [0]);
}

#[test]
fn an_empty_group_id_is_refused_for_joining_and_allowed_for_offsets() {
    let mut h = Harness::new();
    let join = refused(&mut h, |h| h.join(JoinRequest { group_id: String::new(), ..join_request("a", "", None) }));
    assert_eq!(error_code(&h.join_reply(join).error), 24);
    assert_eq!(h.commit_now(anonymous_commit("", &[("orders", 0, 1)])), [0]);
}

#[test]
fn a_session_timeout_outside_the_settings_is_refused_with_invalid_session_timeout() {
    let mut h = Harness::new();
    for timeout in [9, 60_001, -1] {
        let request = JoinRequest { session_timeout_ms: timeout, ..join_request("a", "", None) };
        let handle = refused(&mut h, |h| h.join(request));
        assert_eq!(error_code(&h.join_reply(handle).error), 26, "{timeout} ms");
    }
}

#[test]
fn a_join_with_no_protocol_in_common_is_refused_with_inconsistent_group_protocol() {
    let mut h = Harness::new();
    h.stable_group_of_three();
    let other = JoinRequest {
        protocols: vec![Protocol { name: "roundrobin".into(), metadata: Bytes::new() }],
        ..join_request("d", "", None)
    };
    let handle = refused(&mut h, |h| h.join(other));
    assert_eq!(error_code(&h.join_reply(handle).error), 23);
    let connect = JoinRequest { protocol_type: "connect".into(), ..join_request("d", "", None) };
    let handle = refused(&mut h, |h| h.join(connect));
    assert_eq!(error_code(&h.join_reply(handle).error), 23);
}

#[test]
fn a_full_group_refuses_new_members_with_group_max_size_reached() {
    let mut h = Harness::with(Settings { members_per_group_max: 3, ..settings() });
    h.stable_group_of_three();
    let handle = refused(&mut h, |h| h.join(join_request("d", "", None)));
    assert_eq!(error_code(&h.join_reply(handle).error), 81);
}

#[test]
fn offset_metadata_over_the_limit_is_refused_for_its_partition_only() {
    let mut h = Harness::new();
    let mut request = anonymous_commit("tools", &[("orders", 0, 1), ("orders", 1, 2)]);
    request.offsets[1].metadata = Some("m".repeat(4_097));
    assert_eq!(h.commit_now(request), [0, 12]);
}

#[test]
fn a_loading_coordinator_answers_load_in_progress() {
    let mut loading = Harness::around(Coordinator::new(settings(), 1), START_MS);
    loading.advance(0);
    let join = refused(&mut loading, |h| h.join(join_request("a", "", None)));
    assert_eq!(error_code(&loading.join_reply(join).error), 14);
    let commit = refused(&mut loading, |h| h.commit(anonymous_commit(GROUP, &[("orders", 0, 1)])));
    assert_eq!(codes(&loading.commit_reply(commit)), [14]);
    assert_eq!(loading.c.fetch_offsets(GROUP, None).unwrap_err().code(), 14);
    assert_eq!(loading.c.list().unwrap_err().code(), 14);
    // What Kafka answers older clients that know no COORDINATOR_LOAD_IN_PROGRESS there: a
    // SyncGroup goes back to JoinGroup, and a heartbeat passes.
    let member = Joined { id: "m".into(), instance: None, generation: 1, leader: "m".into() };
    let sync = refused(&mut loading, |h| h.sync(member.sync_request(&[])));
    assert_eq!(error_code(&loading.sync_reply(sync).error), 27);
    assert_eq!(refused(&mut loading, |h| h.heartbeat(&member)), None);
}
