//! Joining, rebalancing and leaving, as Kafka's classic group protocol does them.

use super::*;

#[test]
fn three_members_join_one_generation_and_each_gets_the_assignment_the_leader_sent() {
    let mut h = Harness::new();
    let joins: Vec<(String, Handle)> = ["a", "b", "c"].into_iter().map(|c| h.join_new(c)).collect();
    assert!(h.replies.is_empty(), "joins wait for the rebalance");
    h.advance(DELAY_MS);
    let answers: Vec<JoinResponse> = joins.iter().map(|(_, handle)| h.join_reply(*handle)).collect();
    for (answer, (id, _)) in answers.iter().zip(&joins) {
        assert_eq!(answer.error, None);
        assert_eq!(answer.generation_id, 1);
        assert_eq!(&answer.member_id, id);
        assert_eq!(answer.leader, joins[0].0, "the first member to join leads");
        assert_eq!(answer.protocol_name.as_deref(), Some("range"));
    }
    assert_eq!(answers[0].members.len(), 3, "the leader is sent every member");
    assert_eq!(answers[0].members[1].metadata, Bytes::from("subscription of b"));
    assert!(answers[1].members.is_empty() && answers[2].members.is_empty());
    assert_eq!(h.state(), GroupState::CompletingRebalance);

    let members: Vec<Joined> = answers.into_iter().map(Joined::from).collect();
    let follower = h.sync(members[1].sync_request(&members));
    let leader = h.sync(members[0].sync_request(&members));
    assert!(h.replies.is_empty(), "SyncGroups wait for the assignment's record to commit");
    assert_eq!(h.appends.len(), 1);
    h.commit_appends();
    assert_eq!(h.sync_reply(follower).assignment, assignment_for(&members[1].id));
    assert_eq!(h.sync_reply(leader).assignment, assignment_for(&members[0].id));
    let late = h.sync(members[2].sync_request(&members));
    assert_eq!(h.sync_reply(late).assignment, assignment_for(&members[2].id), "a stable group answers at once");
    assert_eq!(h.state(), GroupState::Stable);
    let described = h.c.describe(GROUP).unwrap();
    assert_eq!(described.members.len(), 3);
    assert_eq!(described.members[2].assignment, assignment_for(&members[2].id));

    // A fourth member: everyone rejoins into generation 2.
    let (_, fourth) = h.join_new("d");
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    assert_eq!(h.heartbeat(&members[1]), Some(27), "heartbeats tell the members to rejoin");
    let rejoins: Vec<Handle> = members.iter().map(|m| h.join(join_request("x", &m.id, None))).collect();
    assert_eq!(h.join_reply(fourth).generation_id, 2, "all four rejoined: the rebalance completes");
    for handle in rejoins {
        assert_eq!(h.join_reply(handle).generation_id, 2);
    }
}

#[test]
fn an_expired_session_rebalances_the_others_into_a_new_generation() {
    let mut h = Harness::new();
    let members = h.stable_group_of_three();
    let (alive, silent) = (&members[..2], &members[2]);
    h.advance(SESSION_MS as u64 / 2);
    for m in alive {
        assert_eq!(h.heartbeat(m), None);
    }
    assert_eq!(h.state(), GroupState::Stable);
    h.advance(SESSION_MS as u64 / 2);
    assert_eq!(h.state(), GroupState::PreparingRebalance, "the silent member's session ran out");
    assert_eq!(h.heartbeat(silent), Some(25), "it is no longer a member");
    assert_eq!(h.heartbeat(&alive[0]), Some(27));
    let rejoins: Vec<Handle> = alive.iter().map(|m| h.join(join_request("x", &m.id, None))).collect();
    let answers: Vec<JoinResponse> = rejoins.into_iter().map(|r| h.join_reply(r)).collect();
    assert!(answers.iter().all(|a| a.generation_id == 2));
    let leader = answers.iter().find(|a| !a.members.is_empty()).expect("one leader");
    let ids: Vec<&str> = leader.members.iter().map(|m| m.member_id.as_str()).collect();
    assert_eq!(ids, [alive[0].id.as_str(), alive[1].id.as_str()]);
}

#[test]
fn members_that_do_not_rejoin_within_the_rebalance_timeout_are_removed() {
    let mut h = Harness::new();
    let members = h.stable_group_of_three();
    let (_, fourth) = h.join_new("d");
    let rejoin = h.join(join_request("a", &members[0].id, None));
    // b and c stay alive (their heartbeats say REBALANCE_IN_PROGRESS) but never rejoin.
    for _ in 0..3 {
        h.advance(REBALANCE_MS as u64 / 4);
        assert_eq!((h.heartbeat(&members[1]), h.heartbeat(&members[2])), (Some(27), Some(27)));
    }
    h.advance(REBALANCE_MS as u64 / 4 - 1);
    assert!(h.replies.is_empty(), "the rebalance waits for b and c");
    h.advance(1);
    assert_eq!(h.join_reply(rejoin).generation_id, 2);
    assert_eq!(h.join_reply(fourth).generation_id, 2);
    assert_eq!(h.c.describe(GROUP).unwrap().members.len(), 2, "b and c were removed");
}

#[test]
fn a_static_member_that_restarts_takes_its_place_without_a_rebalance() {
    // KIP-345: the restarted instance gets a new member id (as Kafka gives it), the old id
    // is fenced so that a zombie of the old process stops, and the group stays stable.
    let mut h = Harness::new();
    let mut members = static_group(&mut h);
    let records = h.log.len();
    let restarted = h.join(join_request("c2", "", Some("instance-c")));
    let answer = h.join_reply(restarted);
    assert_eq!(answer.error, None);
    assert_eq!(answer.generation_id, 1, "no new generation");
    assert_ne!(answer.member_id, members[2].id);
    assert_eq!(answer.leader, members[0].id);
    assert_eq!(h.state(), GroupState::Stable, "no rebalance");
    let old = members[2].clone();
    members[2].id = answer.member_id;
    let sync = h.sync(members[2].sync_request(&members));
    assert_eq!(h.sync_reply(sync).assignment, assignment_for(&old.id), "it keeps its assignment");
    assert_eq!(h.heartbeat(&old), Some(82), "the old process is fenced");
    assert_eq!(h.heartbeat(&members[0]), None);
    assert_eq!(h.log.len(), records);
    assert!(h.appends.is_empty());
}

#[test]
fn a_static_member_that_rejoins_with_its_member_id_keeps_it_without_a_rebalance() {
    let mut h = Harness::new();
    let members = static_group(&mut h);
    let rejoin = h.join(join_request("b", &members[1].id, Some("instance-b")));
    let answer = h.join_reply(rejoin);
    assert_eq!((answer.error, answer.generation_id), (None, 1));
    assert_eq!(answer.member_id, members[1].id, "the same member id");
    assert_eq!(h.state(), GroupState::Stable, "no rebalance");
}

/// A stable group of three static members, instances a, b and c.
fn static_group(h: &mut Harness) -> Vec<Joined> {
    let handles: Vec<Handle> =
        ["a", "b", "c"].into_iter().map(|c| h.join(join_request(c, "", Some(&format!("instance-{c}"))))).collect();
    h.advance(DELAY_MS);
    let members: Vec<Joined> = handles
        .into_iter()
        .zip(["a", "b", "c"])
        .map(|(handle, c)| Joined { instance: Some(format!("instance-{c}")), ..Joined::from(h.join_reply(handle)) })
        .collect();
    h.sync_all(&members);
    members
}

#[test]
fn kip_394_a_first_join_is_given_a_member_id_and_forgotten_if_it_never_returns() {
    let mut h = Harness::new();
    let first = h.join(join_request("a", "", None));
    let answer = h.join_reply(first);
    assert_eq!(error_code(&answer.error), 79);
    assert!(answer.member_id.starts_with("a-"), "the id names the client: {}", answer.member_id);
    assert_eq!(h.c.describe(GROUP).unwrap().members.len(), 0, "not a member until it joins with the id");
    h.advance(SESSION_MS as u64);
    let late = h.join(join_request("a", &answer.member_id, None));
    assert_eq!(error_code(&h.join_reply(late).error), 25, "its id lapsed with its session timeout");
}

#[test]
fn joins_before_v4_are_added_at_once() {
    let mut h = Harness::new();
    let old_client = JoinRequest { require_known_member_id: false, ..join_request("a", "", None) };
    let handle = h.join(old_client);
    h.advance(DELAY_MS);
    let answer = h.join_reply(handle);
    assert_eq!((answer.error, answer.generation_id), (None, 1));
}

#[test]
fn the_initial_rebalance_waits_for_members_starting_together() {
    let mut h = Harness::new();
    let (_, a) = h.join_new("a");
    h.advance(DELAY_MS - 10);
    let (_, b) = h.join_new("b");
    h.advance(10);
    assert!(h.replies.is_empty(), "b pushed the first rebalance out by another delay");
    h.advance(DELAY_MS - 10);
    assert_eq!(h.join_reply(a).generation_id, 1);
    assert_eq!(h.join_reply(b).generation_id, 1, "both landed in the first generation");
}

#[test]
fn leave_group_v3_removes_several_members_at_once() {
    let mut h = Harness::new();
    let members = h.stable_group_of_three();
    let leaving = |m: &Joined| LeavingMember { member_id: m.id.clone(), group_instance_id: None };
    let unknown = LeavingMember { member_id: "nobody".into(), group_instance_id: None };
    let response = h.leave(LeaveRequest {
        group_id: GROUP.into(),
        members: vec![leaving(&members[1]), unknown, leaving(&members[2])],
    });
    let codes: Vec<i16> = response.members.iter().map(|(_, e)| error_code(e)).collect();
    assert_eq!((response.error, codes), (None, vec![0, 25, 0]));
    let rejoin = h.join(join_request("a", &members[0].id, None));
    let answer = h.join_reply(rejoin);
    assert_eq!((answer.generation_id, answer.members.len()), (2, 1), "the one left rebalanced alone");
}

#[test]
fn the_last_member_leaving_empties_the_group_and_records_its_generation() {
    let mut h = Harness::new();
    let members = h.stable_group_of_three();
    let all = members.iter().map(|m| LeavingMember { member_id: m.id.clone(), group_instance_id: None }).collect();
    h.leave(LeaveRequest { group_id: GROUP.into(), members: all });
    assert_eq!(h.state(), GroupState::Empty);
    h.commit_appends();
    let record = h.c.committed_state()[GROUP].record.clone().expect("a group record");
    assert_eq!((record.generation, record.members.len()), (2, 0));
}

#[test]
fn members_that_never_sync_are_removed_after_the_rebalance_timeout() {
    let mut h = Harness::new();
    let joins: Vec<(String, Handle)> = ["a", "b"].into_iter().map(|c| h.join_new(c)).collect();
    h.advance(DELAY_MS);
    let members: Vec<Joined> = joins.iter().map(|(_, handle)| Joined::from(h.join_reply(*handle))).collect();
    let leader = h.sync(members[0].sync_request(&members));
    h.commit_appends();
    assert_eq!(h.sync_reply(leader).error, None);
    for _ in 0..4 {
        h.advance(REBALANCE_MS as u64 / 4);
        h.heartbeat(&members[0]);
        h.heartbeat(&members[1]);
    }
    assert_eq!(h.state(), GroupState::PreparingRebalance, "b never asked for its assignment");
    assert_eq!(h.heartbeat(&members[1]), Some(25));
}

#[test]
fn an_assignment_whose_record_fails_is_answered_with_the_error_and_the_group_rebalances() {
    let mut h = Harness::new();
    let joins: Vec<(String, Handle)> = ["a", "b"].into_iter().map(|c| h.join_new(c)).collect();
    h.advance(DELAY_MS);
    let members: Vec<Joined> = joins.iter().map(|(_, handle)| Joined::from(h.join_reply(*handle))).collect();
    let syncs: Vec<Handle> = members.iter().map(|m| h.sync(m.sync_request(&members))).collect();
    let append = h.appends.pop_front().expect("the assignment's record");
    let full_disk = GroupError::CoordinatorNotAvailable { reason: "the disk is nearly full".into() };
    let out = h.c.append_failed(append.token, full_disk, h.now);
    h.absorb(out);
    for sync in syncs {
        assert_eq!(error_code(&h.sync_reply(sync).error), 15);
    }
    assert_eq!(h.state(), GroupState::PreparingRebalance, "the members join again");
    assert!(h.c.committed_state().is_empty(), "nothing was recorded");
}

#[test]
fn a_leader_rejoining_a_stable_group_starts_a_rebalance_and_a_follower_does_not() {
    let mut h = Harness::new();
    let members = h.stable_group_of_three();
    let follower = h.join(join_request("b", &members[1].id, None));
    assert_eq!(h.join_reply(follower).generation_id, 1);
    assert_eq!(h.state(), GroupState::Stable);
    h.join(join_request("a", &members[0].id, None));
    assert_eq!(h.state(), GroupState::PreparingRebalance, "the leader asks for a new assignment");
}

#[test]
fn a_new_coordinator_starts_after_the_last_generation_and_members_rejoin() {
    let mut h = Harness::new();
    let members = h.stable_group_of_three();
    assert_eq!(h.commit_now(members[0].commit_request(&[("orders", 0, 42)])), [0]);

    let mut next = h.successor();
    assert_eq!(next.heartbeat(&members[0]), Some(25), "the members are not carried over: they rejoin");
    assert_eq!(next.state(), GroupState::Empty);
    let rejoins: Vec<(String, Handle)> = ["a", "b", "c"].into_iter().map(|c| next.join_new(c)).collect();
    next.advance(DELAY_MS);
    for (id, handle) in rejoins {
        let answer = next.join_reply(handle);
        assert_eq!(answer.generation_id, 2, "the generation goes on from the log's");
        assert!(members.iter().all(|m| m.id != id), "member ids are never given twice");
    }
    let fetched = next.c.fetch_offsets(GROUP, None).unwrap();
    assert_eq!((fetched.len(), fetched[0].offset), (1, 42));
}

#[test]
fn a_protocol_every_member_offers_is_chosen_by_their_votes() {
    let mut h = Harness::new();
    let offering = |client: &str, names: &[&str]| JoinRequest {
        protocols: names
            .iter()
            .map(|n| Protocol { name: n.to_string(), metadata: Bytes::from(n.to_string()) })
            .collect(),
        require_known_member_id: false,
        ..join_request(client, "", None)
    };
    // range and sticky are common to all; a votes range, b and c vote sticky.
    let a = h.join(offering("a", &["range", "sticky"]));
    h.join(offering("b", &["sticky", "range", "roundrobin"]));
    h.join(offering("c", &["roundrobin", "sticky", "range"]));
    h.advance(DELAY_MS);
    let answer = h.join_reply(a);
    assert_eq!(answer.protocol_name.as_deref(), Some("sticky"));
    assert_eq!(answer.members[0].metadata, Bytes::from("sticky"), "the leader gets each member's sticky metadata");
}

#[test]
fn a_coordinator_that_stops_answers_every_waiting_request_not_coordinator() {
    let mut h = Harness::new();
    let (_, waiting_join) = h.join_new("a");
    let commit = h.commit(anonymous_commit("tools", &[("orders", 0, 1)]));
    let mut answered: Vec<(Handle, i16)> =
        h.c.clone()
            .shutdown()
            .into_iter()
            .map(|(handle, reply)| match reply {
                Reply::Join(r) => (handle, error_code(&r.error)),
                Reply::Commit(r) => (handle, codes(&r)[0]),
                other => panic!("nothing else waits: {other:?}"),
            })
            .collect();
    answered.sort();
    assert_eq!(answered, [(waiting_join, 16), (commit, 16)]);
}
