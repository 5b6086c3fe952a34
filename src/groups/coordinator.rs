//! The `Coordinator`: the groups of one `__consumer_offsets` partition. This file holds its
//! state, loading, the appends it asked for, time (`tick`) and the read-only queries; the
//! requests of the group protocol are in `membership.rs` and `offsets.rs`.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::codec::DecodeError;

use super::api::{
    Append, AppendToken, CommitResponse, GroupDescription, GroupListing, GroupState, Handle, JoinResponse,
    MemberDescription, Output, PartitionResult, Reply, SyncResponse,
};
use super::error::{GroupError, check_group_id};
use super::group::{CommittedGroup, Group};
use super::records::{GroupValue, OffsetKey, StoredRecord};
use super::settings::{MEMBER_ID_PREFIX_BYTES_MAX, Settings};

/// The groups whose coordinator is one partition of `__consumer_offsets`: see `mod.rs`
/// for how to drive it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Coordinator {
    pub(super) settings: Settings,
    /// Unique to this coordinator among all that ever lead the partition (the Raft term of
    /// its leadership): it goes into every member id, so that a member id made by an
    /// earlier coordinator is never made again.
    instance: u64,
    pub(super) loading: bool,
    /// The latest `now_ms` given: time never goes back, even if the caller's clock does.
    clock_ms: u64,
    pub(super) groups: BTreeMap<String, Group>,
    next_member_id: u64,
    pub(super) next_seq: u64,
    next_token: u64,
    in_flight: BTreeMap<u64, InFlight>,
    pub(super) next_cleanup_ms: u64,
    out: Output,
}

/// An append asked for, and what waits on it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct InFlight {
    records: Vec<StoredRecord>,
    effect: Effect,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Effect {
    /// An offset commit: answered once the offsets are committed. `results` holds the
    /// answer for every partition; those with no error are the ones appended.
    Commit { handle: Handle, group: String, results: Vec<PartitionResult> },
    /// The leader's assignment: the members' SyncGroups are answered once it is committed.
    Assignment { group: String, generation: i32, assignments: BTreeMap<String, Bytes> },
    /// The record of a group that became empty: nothing waits on it.
    EmptyGroup,
    /// Tombstones of expired offsets and deleted groups.
    Expiry { groups: Vec<String> },
}

impl Coordinator {
    /// A coordinator that is loading: `replay` the partition's records, then
    /// `finish_loading`. `instance` must differ for every coordinator of the partition
    /// (the Raft term of this node's leadership is).
    pub fn new(settings: Settings, instance: u64) -> Coordinator {
        Coordinator {
            settings,
            instance,
            loading: true,
            clock_ms: 0,
            groups: BTreeMap::new(),
            next_member_id: 0,
            next_seq: 0,
            next_token: 0,
            in_flight: BTreeMap::new(),
            next_cleanup_ms: 0,
            out: Output::default(),
        }
    }

    pub fn is_loading(&self) -> bool {
        self.loading
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Applies one record of the partition, in the partition's order, while loading. A
    /// record that does not decode is refused and changes nothing: every replica holds
    /// the same bytes, so skip it (it may come from a newer keel) and count it.
    pub fn replay(&mut self, key: Bytes, value: Option<Bytes>) -> Result<(), DecodeError> {
        let record = StoredRecord::decode(key, value)?;
        self.replay_record(&record);
        Ok(())
    }

    pub fn replay_record(&mut self, record: &StoredRecord) {
        assert!(self.loading, "replay is for loading: a live coordinator applies what it appended (committed)");
        self.apply(record);
    }

    /// Ends loading: the groups start empty at their last committed generation, and their
    /// members rejoin (they learn to from UNKNOWN_MEMBER_ID, as after any coordinator move).
    pub fn finish_loading(&mut self, now_ms: u64) {
        let now = self.now(now_ms);
        self.loading = false;
        self.next_cleanup_ms = now.saturating_add(self.settings.offsets_retention_check_interval_ms);
        for g in self.groups.values_mut() {
            g.state_since_ms = now;
            adopt_record(g);
        }
    }

    /// Every group's committed state: what replaying the partition gives.
    pub fn committed_state(&self) -> BTreeMap<String, CommittedGroup> {
        self.groups
            .iter()
            .filter(|(_, g)| !g.committed.is_empty())
            .map(|(id, g)| (id.clone(), g.committed.clone()))
            .collect()
    }

    /// The committed state as records, group by group (its metadata record, then its
    /// offsets): a checkpoint. Replaying these alone gives `committed_state`, so once they
    /// are committed after every record before them took effect, what precedes them in
    /// the partition is no longer needed. Written only while no append is in flight: one
    /// placed before the checkpoint and committed after it was taken would be overridden
    /// by the older value the checkpoint holds.
    pub fn checkpoint(&self) -> Vec<StoredRecord> {
        let mut records = Vec::new();
        for (id, g) in self.groups.iter().filter(|(_, g)| !g.committed.is_empty()) {
            if let Some(value) = &g.committed.record {
                records.push(StoredRecord::Group { group: id.clone(), value: Some(value.clone()) });
            }
            for ((topic, partition), value) in &g.committed.offsets {
                let key = OffsetKey { group: id.clone(), topic: topic.clone(), partition: *partition };
                records.push(StoredRecord::Offset { key, value: Some(value.clone()) });
            }
        }
        records
    }

    /// Appends asked for and not yet committed or failed.
    pub fn appends_in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The batch of `token` is committed: its records take effect and what waited on them
    /// is answered.
    pub fn committed(&mut self, token: AppendToken, now_ms: u64) -> Output {
        let now = self.now(now_ms);
        let in_flight = self.in_flight.remove(&token.0).expect("committed: a token this coordinator gave");
        for record in &in_flight.records {
            self.apply(record);
        }
        match in_flight.effect {
            Effect::Commit { handle, group, results } => {
                self.with_group(&group, now, |_, g| g.commits_in_flight -= 1);
                self.reply(handle, Reply::Commit(CommitResponse { partitions: results }));
            }
            Effect::Assignment { group, generation, assignments } => {
                self.with_group(&group, now, |c, g| c.assignment_committed(g, generation, &assignments, now));
            }
            Effect::EmptyGroup => {}
            Effect::Expiry { groups } => {
                for group in groups {
                    self.with_group(&group, now, |_, g| g.expiring = false);
                }
            }
        }
        self.take_output()
    }

    /// The batch of `token` will never be committed (refused, or lost with the leadership):
    /// what waited on it is answered with `error` (NotCoordinator when this node no longer
    /// leads, CoordinatorFull or another retriable error otherwise).
    pub fn append_failed(&mut self, token: AppendToken, error: GroupError, now_ms: u64) -> Output {
        let now = self.now(now_ms);
        let in_flight = self.in_flight.remove(&token.0).expect("append_failed: a token this coordinator gave");
        match in_flight.effect {
            Effect::Commit { handle, group, mut results } => {
                self.with_group(&group, now, |_, g| g.commits_in_flight -= 1);
                for result in results.iter_mut().filter(|r| r.error.is_none()) {
                    result.error = Some(error.clone());
                }
                self.reply(handle, Reply::Commit(CommitResponse { partitions: results }));
            }
            Effect::Assignment { group, generation, .. } => {
                self.with_group(&group, now, |c, g| c.assignment_failed(g, generation, error, now));
            }
            // Kafka only warns: the group is empty, and its last generation in the log is
            // what a later coordinator starts from; no member of it can exist any more.
            Effect::EmptyGroup => {}
            Effect::Expiry { groups } => {
                for group in groups {
                    self.with_group(&group, now, |_, g| {
                        g.expiring = false;
                        if g.state == GroupState::Dead {
                            g.set_state(GroupState::Empty, now);
                        }
                    });
                }
            }
        }
        self.take_output()
    }

    /// Moves time to `now_ms`: members whose session ran out are removed, rebalances
    /// complete or time out, and offsets past their retention expire.
    pub fn tick(&mut self, now_ms: u64) -> Output {
        let now = self.now(now_ms);
        if self.loading {
            return Output::default();
        }
        let due = |g: &Group| g.next_deadline_ms().is_some_and(|deadline| deadline <= now);
        let ids: Vec<String> = self.groups.iter().filter(|(_, g)| due(g)).map(|(id, _)| id.clone()).collect();
        for id in ids {
            self.with_group(&id, now, |c, g| c.expire_members(g, now));
        }
        if now >= self.next_cleanup_ms {
            self.next_cleanup_ms = now.saturating_add(self.settings.offsets_retention_check_interval_ms);
            self.expire_offsets(now);
        }
        self.take_output()
    }

    /// This node stops coordinating (it lost the leadership): every request still waiting
    /// is answered NOT_COORDINATOR, so that its client finds the new coordinator.
    pub fn shutdown(mut self) -> Vec<(Handle, Reply)> {
        let error = GroupError::NotCoordinator;
        let mut waiting = Vec::new();
        for g in std::mem::take(&mut self.groups).into_values() {
            for m in g.members.into_values() {
                if let Some(handle) = m.join {
                    waiting.push((handle, Reply::Join(join_error(&m.id, error.clone()))));
                }
                if let Some(handle) = m.sync {
                    waiting.push((handle, Reply::Sync(sync_error(error.clone()))));
                }
            }
        }
        for in_flight in std::mem::take(&mut self.in_flight).into_values() {
            if let Effect::Commit { handle, mut results, .. } = in_flight.effect {
                for result in results.iter_mut().filter(|r| r.error.is_none()) {
                    result.error = Some(error.clone());
                }
                waiting.push((handle, Reply::Commit(CommitResponse { partitions: results })));
            }
        }
        waiting
    }

    /// DescribeGroups for one group; an unknown group is `Dead` with no members.
    pub fn describe(&self, group_id: &str) -> Result<GroupDescription, GroupError> {
        self.check_loaded()?;
        check_group_id(group_id, true)?;
        let Some(g) = self.groups.get(group_id) else {
            return Ok(GroupDescription {
                group_id: group_id.to_string(),
                state: GroupState::Dead,
                protocol_type: String::new(),
                protocol_name: String::new(),
                members: Vec::new(),
            });
        };
        let stable = g.state == GroupState::Stable;
        let protocol = g.protocol_name.as_deref().filter(|_| stable);
        let members = g
            .by_arrival()
            .into_iter()
            .map(|m| MemberDescription {
                member_id: m.id.clone(),
                group_instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: protocol.map(|p| m.metadata_for(p)).unwrap_or_default(),
                assignment: if stable { m.assignment.clone() } else { Bytes::new() },
            })
            .collect();
        Ok(GroupDescription {
            group_id: group_id.to_string(),
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol_name: protocol.unwrap_or("").to_string(),
            members,
        })
    }

    /// ListGroups: every group this coordinator holds, by id.
    pub fn list(&self) -> Result<Vec<GroupListing>, GroupError> {
        self.check_loaded()?;
        Ok(self
            .groups
            .iter()
            .map(|(id, g)| GroupListing {
                group_id: id.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                state: g.state,
            })
            .collect())
    }

    pub(super) fn check_loaded(&self) -> Result<(), GroupError> {
        if self.loading { Err(GroupError::CoordinatorLoadInProgress) } else { Ok(()) }
    }

    pub(super) fn now(&mut self, now_ms: u64) -> u64 {
        self.clock_ms = self.clock_ms.max(now_ms);
        self.clock_ms
    }

    pub(super) fn take_output(&mut self) -> Output {
        std::mem::take(&mut self.out)
    }

    pub(super) fn reply(&mut self, handle: Handle, reply: Reply) {
        self.out.replies.push((handle, reply));
    }

    /// Asks for `records` to be appended, unless `appends_in_flight_max` appends already
    /// wait (then `None`, and nothing is asked).
    pub(super) fn append(&mut self, records: Vec<StoredRecord>, effect: Effect) -> Option<AppendToken> {
        if self.in_flight.len() >= self.settings.appends_in_flight_max {
            return None;
        }
        let token = AppendToken(self.next_token);
        self.next_token += 1;
        self.out.appends.push(Append { token, records: records.clone() });
        self.in_flight.insert(token.0, InFlight { records, effect });
        Some(token)
    }

    pub(super) fn appends_full(&self) -> bool {
        self.in_flight.len() >= self.settings.appends_in_flight_max
    }

    /// A member id no coordinator of this partition gave before: the client id (cut
    /// short), this coordinator's instance and a counter.
    pub(super) fn new_member_id(&mut self, client_id: &str) -> String {
        let prefix = truncated(client_id, MEMBER_ID_PREFIX_BYTES_MAX);
        let prefix = if prefix.is_empty() { "member" } else { prefix };
        let id = format!("{prefix}-{:x}-{}", self.instance, self.next_member_id);
        self.next_member_id += 1;
        id
    }

    /// Members (and members-to-be) of every group: what `members_max` counts.
    pub(super) fn members_total(&self) -> usize {
        self.groups.values().map(Group::size).sum()
    }

    /// Runs `f` on the group `id` (a new, empty one if there is none), then keeps the group
    /// unless it is vacant: a request that is refused leaves no trace.
    pub(super) fn with_group<T>(&mut self, id: &str, now: u64, f: impl FnOnce(&mut Self, &mut Group) -> T) -> T {
        let mut g = self.groups.remove(id).unwrap_or_else(|| Group::new(id, now));
        let result = f(self, &mut g);
        if !g.is_vacant() {
            self.groups.insert(id.to_string(), g);
        }
        result
    }

    /// Applies a committed record to the committed state, the same way while loading and
    /// live, so that a replay rebuilds what the live coordinator held.
    fn apply(&mut self, record: &StoredRecord) {
        let now = self.clock_ms;
        let loading = self.loading;
        self.with_group(record.group(), now, |_, g| match record {
            StoredRecord::Offset { key, value: Some(v) } => {
                g.committed.offsets.insert((key.topic.clone(), key.partition), v.clone());
            }
            StoredRecord::Offset { key, value: None } => {
                g.committed.offsets.remove(&(key.topic.clone(), key.partition));
            }
            StoredRecord::Group { value, .. } => {
                g.committed.record = value.clone();
                if value.is_none() && g.state == GroupState::Dead {
                    // The deleted group starts over, as a replay without its record would;
                    // what is on its way to the log still counts.
                    *g = Group {
                        committed: std::mem::take(&mut g.committed),
                        assignment_in_flight: g.assignment_in_flight,
                        commits_in_flight: g.commits_in_flight,
                        expiring: g.expiring,
                        ..Group::new(&g.id, now)
                    };
                }
                if !loading {
                    adopt_record(g);
                }
            }
        });
    }

    pub(super) fn commit_response(&mut self, handle: Handle, results: Vec<PartitionResult>) {
        self.reply(handle, Reply::Commit(CommitResponse { partitions: results }));
    }
}

/// An empty group takes its generation and protocol type from its committed record: after
/// loading, and when the record of a group that was dropped from memory commits.
fn adopt_record(g: &mut Group) {
    if !g.members.is_empty() || g.state != GroupState::Empty {
        return;
    }
    if let Some(GroupValue { generation, protocol_type, members, written_at_ms, .. }) = &g.committed.record {
        g.generation = g.generation.max(*generation);
        if !protocol_type.is_empty() {
            g.protocol_type = Some(protocol_type.clone());
        }
        // A group recorded empty has been empty since the record; one recorded with members
        // was busy until this coordinator took over (its members rejoin).
        if members.is_empty() {
            g.state_since_ms = g.state_since_ms.min(*written_at_ms);
        }
    }
}

pub(super) fn join_error(member_id: &str, error: GroupError) -> JoinResponse {
    JoinResponse {
        error: Some(error),
        generation_id: -1,
        protocol_type: None,
        protocol_name: None,
        leader: String::new(),
        member_id: member_id.to_string(),
        members: Vec::new(),
    }
}

pub(super) fn sync_error(error: GroupError) -> SyncResponse {
    SyncResponse { error: Some(error), assignment: Bytes::new() }
}

/// At most `max` bytes of `s`, cut at a character boundary.
pub(super) fn truncated(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
