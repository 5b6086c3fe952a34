//! Random sequences of requests, time, commits and failed appends: the partition's records,
//! replayed into a new coordinator (whole or compacted), rebuild the committed state the
//! live coordinator holds, and every acknowledged commit is in the log.

use proptest::prelude::*;

use super::*;

const GROUPS: [&str; 2] = ["g0", "g1"];

/// What the clients know: the member ids they were given and their generations.
#[derive(Default)]
struct Clients {
    /// (group, member id, generation, instance id)
    members: Vec<(String, String, i32, Option<String>)>,
    /// Commits waiting for an answer, with what they asked.
    commits: BTreeMap<Handle, CommitRequest>,
    /// Requests whose answer the clients read.
    joins: BTreeMap<Handle, (String, Option<String>)>,
    /// The last leader each group named, with its generation.
    leaders: BTreeMap<String, (String, String, i32, Option<String>)>,
}

type Op = (u8, u64, u64, u64);

fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec((0u8..10, any::<u64>(), any::<u64>(), any::<u64>()), 0..120)
}

fn pick<T: Clone>(items: &[T], n: u64) -> Option<T> {
    (!items.is_empty()).then(|| items[(n % items.len() as u64) as usize].clone())
}

/// What one run reached, so that a test can check the sequences are not all trivial.
#[derive(Default, Debug)]
struct Reached {
    stable: bool,
    acknowledged_commits: usize,
    group_records: usize,
    tombstones: usize,
    failed_appends: usize,
}

fn run(ops: &[Op]) -> Result<Reached, TestCaseError> {
    let mut reached = Reached::default();
    let retention = Settings { offsets_retention_ms: 2_000, offsets_retention_check_interval_ms: 500, ..settings() };
    let mut h = Harness::with(retention);
    let mut clients = Clients::default();
    for &(kind, a, b, c) in ops {
        let group = GROUPS[(a % 2) as usize].to_string();
        let known: Vec<_> = clients.members.iter().filter(|m| m.0 == group).cloned().collect();
        let member = pick(&known, b);
        match kind {
            0 | 1 => {
                let instance = (b % 3 == 0).then(|| format!("i{}", c % 3));
                let member_id = match (kind, &member) {
                    (1, Some(m)) => m.1.clone(),
                    _ => String::new(),
                };
                let instance = if kind == 1 { member.as_ref().and_then(|m| m.3.clone()) } else { instance };
                let mut request = JoinRequest {
                    group_id: group.clone(),
                    require_known_member_id: c % 2 == 0,
                    ..join_request(&format!("c{}", c % 4), &member_id, instance.as_deref())
                };
                if b % 7 == 0 {
                    request.protocols.insert(0, Protocol { name: "sticky".into(), metadata: Bytes::from("s") });
                }
                let handle = h.join(request);
                clients.joins.insert(handle, (group, instance));
            }
            2 => {
                // Half the time the leader syncs, so that groups get to be stable.
                let leader = clients.leaders.get(&group).cloned().filter(|_| c % 2 == 0);
                if let Some((group, id, generation, instance)) = leader.or(member) {
                    let assignments = known.iter().map(|m| (m.1.clone(), assignment_for(&m.1))).collect();
                    let request = SyncRequest {
                        group_id: group,
                        generation_id: generation,
                        member_id: id,
                        group_instance_id: instance,
                        assignments,
                    };
                    h.sync(request);
                }
            }
            3 => {
                if let Some((group, id, generation, instance)) = member {
                    let request = HeartbeatRequest {
                        group_id: group,
                        generation_id: generation,
                        member_id: id,
                        group_instance_id: instance,
                    };
                    h.c.heartbeat(request, h.now);
                }
            }
            4 => {
                if let Some((group, id, _, instance)) = member {
                    let leaving = LeavingMember { member_id: id, group_instance_id: instance };
                    h.leave(LeaveRequest { group_id: group, members: vec![leaving] });
                }
            }
            5 => {
                let offsets = vec![commit_offset(&format!("t{}", b % 2), (c % 3) as i32, (a % 1000) as i64)];
                let request = match member {
                    Some((group, id, generation, instance)) if c % 5 != 0 => {
                        let generation = if c % 4 == 0 { generation - 1 } else { generation };
                        CommitRequest {
                            group_id: group,
                            generation_id: generation,
                            member_id: id,
                            group_instance_id: instance,
                            offsets,
                        }
                    }
                    _ => CommitRequest { offsets, ..anonymous_commit(&group, &[]) },
                };
                let handle = h.commit(request.clone());
                clients.commits.insert(handle, request);
            }
            6 => h.advance(a % 1_500),
            7 => {
                h.commit_next();
            }
            8 => {
                if a % 4 == 0 {
                    if let Some(append) = h.appends.pop_front() {
                        reached.failed_appends += 1;
                        let out = h.c.append_failed(append.token, GroupError::NotCoordinator, h.now);
                        h.absorb(out);
                    }
                } else {
                    h.commit_next();
                }
            }
            _ => {
                for g in GROUPS {
                    h.c.describe(g).unwrap();
                    h.c.fetch_offsets(g, None).unwrap();
                }
                h.c.list().unwrap();
            }
        }
        reached.acknowledged_commits += learn(&mut h, &mut clients)?;
        check_invariants(&h)?;
        reached.stable |= GROUPS.iter().any(|g| h.c.describe(g).unwrap().state == GroupState::Stable);
    }
    h.commit_appends();
    reached.acknowledged_commits += learn(&mut h, &mut clients)?;
    reached.group_records = h.log.iter().filter(|r| matches!(r, StoredRecord::Group { .. })).count();
    reached.tombstones = h.log.iter().filter(|r| r.is_tombstone()).count();

    let successor = h.successor();
    prop_assert_eq!(successor.c.committed_state(), h.c.committed_state());
    for g in GROUPS {
        prop_assert_eq!(successor.c.fetch_offsets(g, None).unwrap(), h.c.fetch_offsets(g, None).unwrap());
    }
    let mut compacted = Coordinator::new(settings(), 9);
    for record in compact(&h.log) {
        compacted.replay(record.key(), record.value()).unwrap();
    }
    prop_assert_eq!(compacted.committed_state(), h.c.committed_state());
    // With nothing in flight, the checkpoint alone replays to the state: the partition
    // before it may go.
    prop_assert_eq!(h.c.appends_in_flight(), 0);
    let mut checkpointed = Coordinator::new(settings(), 10);
    for record in h.c.checkpoint() {
        checkpointed.replay(record.key(), record.value()).unwrap();
    }
    prop_assert_eq!(checkpointed.committed_state(), h.c.committed_state());
    Ok(reached)
}

/// Reads the answers: join answers teach member ids and generations; an acknowledged
/// commit must already be in the log. Returns the partitions acknowledged.
fn learn(h: &mut Harness, clients: &mut Clients) -> Result<usize, TestCaseError> {
    let mut acknowledged = 0;
    for (handle, reply) in std::mem::take(&mut h.replies) {
        match reply {
            Reply::Join(answer) => {
                let Some((group, instance)) = clients.joins.remove(&handle) else { continue };
                if answer.member_id.is_empty() {
                    continue;
                }
                clients.members.retain(|m| !(m.0 == group && m.1 == answer.member_id));
                let member = (group.clone(), answer.member_id.clone(), answer.generation_id, instance);
                if answer.leader == answer.member_id {
                    clients.leaders.insert(group, member.clone());
                }
                clients.members.push(member);
            }
            Reply::Commit(answer) => {
                let request = clients.commits.remove(&handle).expect("a commit this test sent");
                prop_assert_eq!(answer.partitions.len(), request.offsets.len());
                for (asked, result) in request.offsets.iter().zip(&answer.partitions) {
                    if result.error.is_some() {
                        continue;
                    }
                    let in_log = h.log.iter().any(|r| match r {
                        StoredRecord::Offset { key, value: Some(v) } => {
                            key.group == request.group_id
                                && key.topic == asked.topic
                                && i64::from(key.partition) == i64::from(asked.partition)
                                && v.offset == asked.offset
                        }
                        _ => false,
                    });
                    prop_assert!(in_log, "an acknowledged commit is not in the log: {:?}", asked);
                    acknowledged += 1;
                }
            }
            Reply::Sync(_) | Reply::Leave(_) => {}
        }
    }
    Ok(acknowledged)
}

fn check_invariants(h: &Harness) -> Result<(), TestCaseError> {
    prop_assert_eq!(h.c.appends_in_flight(), h.appends.len());
    for listing in h.c.list().unwrap() {
        let described = h.c.describe(&listing.group_id).unwrap();
        prop_assert!(described.members.len() <= h.c.settings().members_per_group_max);
        let group = &h.c.groups[&listing.group_id];
        if group.state == GroupState::Stable {
            // A stable group's generation and assignment are in the log.
            let record = group.committed.record.as_ref();
            prop_assert_eq!(record.map(|r| r.generation), Some(group.generation));
        }
        if group.state == GroupState::Empty {
            prop_assert!(group.members.is_empty());
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn replaying_the_log_rebuilds_the_committed_state_of_the_live_coordinator(ops in ops()) {
        run(&ops)?;
    }
}

/// The property above means something only if the sequences reach stable groups,
/// acknowledged commits, group records, tombstones and failed appends often enough.
#[test]
fn the_random_sequences_reach_every_kind_of_outcome() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let runs: Vec<Reached> = (0..200).map(|_| run(&ops().new_tree(&mut runner).unwrap().current()).unwrap()).collect();
    let share = |f: &dyn Fn(&Reached) -> bool| runs.iter().filter(|r| f(r)).count() * 100 / runs.len();
    let shares = [
        share(&|r| r.stable),
        share(&|r| r.acknowledged_commits > 0),
        share(&|r| r.group_records > 0),
        share(&|r| r.tombstones > 0),
        share(&|r| r.failed_appends > 0),
    ];
    println!("percent of runs reaching stable, acked commit, group record, tombstone, failed append: {shares:?}");
    assert!(shares.iter().all(|&s| s >= 10), "{shares:?}");
}
