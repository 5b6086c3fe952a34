//! Tests of the group coordinator, named after the rule each checks: membership and
//! rebalances (`membership.rs`), refusals and their error codes (`errors.rs`), offsets and
//! their expiry (`offsets.rs`), the record codec (`records.rs`), compaction
//! (`compaction.rs`), and random sequences replayed from the log (`replay.rs`).

mod compaction;
mod errors;
mod membership;
mod offsets;
mod records;
mod replay;

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use super::*;

pub(super) const GROUP: &str = "orders-app";
pub(super) const SESSION_MS: i32 = 1_000;
pub(super) const REBALANCE_MS: i32 = 2_000;
pub(super) const DELAY_MS: u64 = 100;
pub(super) const START_MS: u64 = 1_000_000;

/// Small timeouts, so that tests move time in steps of milliseconds.
pub(super) fn settings() -> Settings {
    Settings {
        initial_rebalance_delay_ms: DELAY_MS,
        session_timeout_ms_min: 10,
        session_timeout_ms_max: 60_000,
        new_member_join_timeout_ms: 5_000,
        offsets_retention_ms: 50_000,
        offsets_retention_check_interval_ms: 1_000,
        ..Settings::default()
    }
}

/// A coordinator with a log: appends wait in `appends` until the test commits them, and
/// the committed records form `log`, the partition.
pub(super) struct Harness {
    pub c: Coordinator,
    pub now: u64,
    next_handle: u64,
    pub appends: VecDeque<Append>,
    pub log: Vec<StoredRecord>,
    pub replies: BTreeMap<Handle, Reply>,
}

impl Harness {
    /// A loaded coordinator with nothing in its partition.
    pub fn new() -> Harness {
        Harness::with(settings())
    }

    pub fn with(settings: Settings) -> Harness {
        let mut c = Coordinator::new(settings, 7);
        c.finish_loading(START_MS);
        Harness::around(c, START_MS)
    }

    pub fn around(c: Coordinator, now: u64) -> Harness {
        Harness { c, now, next_handle: 0, appends: VecDeque::new(), log: Vec::new(), replies: BTreeMap::new() }
    }

    pub fn absorb(&mut self, out: Output) {
        for (handle, reply) in out.replies {
            assert!(self.replies.insert(handle, reply).is_none(), "{handle:?} answered twice");
        }
        self.appends.extend(out.appends);
    }

    fn handle(&mut self) -> Handle {
        self.next_handle += 1;
        Handle(self.next_handle)
    }

    pub fn join(&mut self, request: JoinRequest) -> Handle {
        let handle = self.handle();
        let out = self.c.join(handle, request, self.now);
        self.absorb(out);
        handle
    }

    pub fn sync(&mut self, request: SyncRequest) -> Handle {
        let handle = self.handle();
        let out = self.c.sync(handle, request, self.now);
        self.absorb(out);
        handle
    }

    pub fn leave(&mut self, request: LeaveRequest) -> LeaveResponse {
        let handle = self.handle();
        let out = self.c.leave(handle, request, self.now);
        self.absorb(out);
        match self.take(handle) {
            Some(Reply::Leave(r)) => r,
            other => panic!("LeaveGroup is answered at once, got {other:?}"),
        }
    }

    pub fn commit(&mut self, request: CommitRequest) -> Handle {
        let handle = self.handle();
        let out = self.c.commit(handle, request, self.now);
        self.absorb(out);
        handle
    }

    pub fn heartbeat(&mut self, member: &Joined) -> Option<i16> {
        let request = HeartbeatRequest {
            group_id: GROUP.into(),
            generation_id: member.generation,
            member_id: member.id.clone(),
            group_instance_id: member.instance.clone(),
        };
        let code = error_code(&self.c.heartbeat(request, self.now).error);
        (code != 0).then_some(code)
    }

    /// Commits offsets and the appends waiting: the error codes of the answer.
    pub fn commit_now(&mut self, request: CommitRequest) -> Vec<i16> {
        let handle = self.commit(request);
        self.commit_appends();
        codes(&self.commit_reply(handle))
    }

    pub fn take(&mut self, handle: Handle) -> Option<Reply> {
        self.replies.remove(&handle)
    }

    pub fn join_reply(&mut self, handle: Handle) -> JoinResponse {
        match self.take(handle) {
            Some(Reply::Join(r)) => r,
            other => panic!("expected a JoinGroup answer to {handle:?}, got {other:?}"),
        }
    }

    pub fn sync_reply(&mut self, handle: Handle) -> SyncResponse {
        match self.take(handle) {
            Some(Reply::Sync(r)) => r,
            other => panic!("expected a SyncGroup answer to {handle:?}, got {other:?}"),
        }
    }

    pub fn commit_reply(&mut self, handle: Handle) -> CommitResponse {
        match self.take(handle) {
            Some(Reply::Commit(r)) => r,
            other => panic!("expected an OffsetCommit answer to {handle:?}, got {other:?}"),
        }
    }

    /// Commits the oldest waiting append: its records join the log.
    pub fn commit_next(&mut self) -> bool {
        let Some(append) = self.appends.pop_front() else { return false };
        self.log.extend(append.records.iter().cloned());
        let out = self.c.committed(append.token, self.now);
        self.absorb(out);
        true
    }

    pub fn commit_appends(&mut self) {
        while self.commit_next() {}
    }

    /// Moves time on by `ms` and ticks.
    pub fn advance(&mut self, ms: u64) {
        self.now += ms;
        let out = self.c.tick(self.now);
        self.absorb(out);
    }

    pub fn state(&self) -> GroupState {
        self.c.describe(GROUP).unwrap().state
    }

    /// A new coordinator loaded from this one's log (the next leader's).
    pub fn successor(&self) -> Harness {
        let mut c = Coordinator::new(settings(), 8);
        for record in &self.log {
            c.replay(record.key(), record.value()).unwrap();
        }
        c.finish_loading(self.now);
        let mut h = Harness::around(c, self.now);
        h.log = self.log.clone();
        h
    }

    /// A member joining the way JoinGroup v4+ clients do: an empty member id, the id it is
    /// given with MEMBER_ID_REQUIRED, then the join that waits for the rebalance.
    pub fn join_new(&mut self, client: &str) -> (String, Handle) {
        let first = self.join(join_request(client, "", None));
        let answer = self.join_reply(first);
        assert_eq!(error_code(&answer.error), 79, "a first join is asked for a member id");
        let id = answer.member_id;
        let handle = self.join(join_request(client, &id, None));
        (id, handle)
    }

    /// Three members joined, the leader's assignment synced and committed: generation 1.
    pub fn stable_group_of_three(&mut self) -> Vec<Joined> {
        let joins: Vec<(String, Handle)> = ["a", "b", "c"].into_iter().map(|c| self.join_new(c)).collect();
        self.advance(DELAY_MS);
        let members: Vec<Joined> = joins.into_iter().map(|(_, h)| Joined::from(self.join_reply(h))).collect();
        self.sync_all(&members);
        members
    }

    /// Every member syncs (the leader with an assignment naming each member), and the
    /// group record commits.
    pub fn sync_all(&mut self, members: &[Joined]) {
        let handles: Vec<Handle> = members.iter().map(|m| self.sync(m.sync_request(members))).collect();
        self.commit_appends();
        for (m, h) in members.iter().zip(handles) {
            let answer = self.sync_reply(h);
            assert_eq!(answer.error, None);
            assert_eq!(answer.assignment, assignment_for(&m.id));
        }
    }
}

/// What a member knows after its JoinGroup answer.
#[derive(Clone, Debug)]
pub(super) struct Joined {
    pub id: String,
    pub instance: Option<String>,
    pub generation: i32,
    pub leader: String,
}

impl From<JoinResponse> for Joined {
    fn from(r: JoinResponse) -> Joined {
        assert_eq!(r.error, None, "the join succeeded");
        Joined { id: r.member_id, instance: None, generation: r.generation_id, leader: r.leader }
    }
}

impl Joined {
    pub fn is_leader(&self) -> bool {
        self.id == self.leader
    }

    /// Its SyncGroup: the leader's carries an assignment for each of `members`.
    pub fn sync_request(&self, members: &[Joined]) -> SyncRequest {
        let assignments = if self.is_leader() {
            members.iter().map(|m| (m.id.clone(), assignment_for(&m.id))).collect()
        } else {
            vec![]
        };
        SyncRequest {
            group_id: GROUP.into(),
            generation_id: self.generation,
            member_id: self.id.clone(),
            group_instance_id: self.instance.clone(),
            assignments,
        }
    }

    pub fn commit_request(&self, offsets: &[(&str, i32, i64)]) -> CommitRequest {
        CommitRequest {
            group_id: GROUP.into(),
            generation_id: self.generation,
            member_id: self.id.clone(),
            group_instance_id: self.instance.clone(),
            offsets: offsets.iter().map(|&(t, p, o)| commit_offset(t, p, o)).collect(),
        }
    }
}

pub(super) fn assignment_for(member: &str) -> Bytes {
    Bytes::from(format!("partitions of {member}"))
}

pub(super) fn join_request(client: &str, member_id: &str, instance: Option<&str>) -> JoinRequest {
    JoinRequest {
        group_id: GROUP.into(),
        member_id: member_id.into(),
        group_instance_id: instance.map(str::to_string),
        protocol_type: "consumer".into(),
        protocols: vec![Protocol { name: "range".into(), metadata: Bytes::from(format!("subscription of {client}")) }],
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        require_known_member_id: true,
        client_id: client.into(),
        client_host: "/127.0.0.1".into(),
    }
}

pub(super) fn commit_offset(topic: &str, partition: i32, offset: i64) -> CommitOffset {
    CommitOffset { topic: topic.into(), partition, offset, leader_epoch: -1, metadata: Some(format!("at {offset}")) }
}

/// A commit without a generation or member: a consumer that assigns itself partitions.
pub(super) fn anonymous_commit(group: &str, offsets: &[(&str, i32, i64)]) -> CommitRequest {
    CommitRequest {
        group_id: group.into(),
        generation_id: -1,
        member_id: String::new(),
        group_instance_id: None,
        offsets: offsets.iter().map(|&(t, p, o)| commit_offset(t, p, o)).collect(),
    }
}

pub(super) fn codes(response: &CommitResponse) -> Vec<i16> {
    response.partitions.iter().map(|p| error_code(&p.error)).collect()
}
