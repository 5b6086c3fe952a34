//! JoinGroup, SyncGroup, Heartbeat and LeaveGroup: Kafka's classic group protocol (its
//! `GroupCoordinator`), rule for rule unless a comment says otherwise. The rebalance they
//! drive is in `rebalance.rs`.

use bytes::Bytes;

use super::api::{
    GroupState, Handle, HeartbeatRequest, HeartbeatResponse, JoinRequest, JoinResponse, LeaveRequest, LeaveResponse,
    Output, Reply, SyncRequest, SyncResponse,
};
use super::coordinator::{Coordinator, join_error, sync_error, truncated};
use super::error::{GroupError, check_group_id};
use super::group::{Group, Member};
use super::settings::{CLIENT_TEXT_BYTES_MAX, MEMBER_ID_BYTES_MAX, PROTOCOL_NAME_BYTES_MAX, PROTOCOLS_PER_MEMBER_MAX};

impl Coordinator {
    /// JoinGroup. The answer comes at once (an error, MEMBER_ID_REQUIRED, or the current
    /// generation for a member that changed nothing), or once the rebalance completes.
    pub fn join(&mut self, handle: Handle, request: JoinRequest, now_ms: u64) -> Output {
        let now = self.now(now_ms);
        if let Err(error) = self.try_join(handle, &request, now) {
            self.reply(handle, Reply::Join(join_error(&request.member_id, error)));
        }
        self.take_output()
    }

    fn try_join(&mut self, handle: Handle, request: &JoinRequest, now: u64) -> Result<(), GroupError> {
        self.check_loaded()?;
        check_group_id(&request.group_id, false)?;
        self.check_join_fields(request)?;
        if request.member_id.len() > MEMBER_ID_BYTES_MAX {
            return Err(GroupError::UnknownMemberId);
        }
        if !self.groups.contains_key(&request.group_id) {
            if !request.member_id.is_empty() {
                return Err(GroupError::UnknownMemberId);
            }
            if self.groups.len() >= self.settings.groups_max {
                return Err(GroupError::CoordinatorFull { what: "groups_max groups", setting: "groups_max" });
            }
        }
        self.with_group(&request.group_id, now, |c, g| {
            c.join_group(g, handle, request, now)?;
            if g.state == GroupState::PreparingRebalance {
                c.try_complete_join(g, now);
            }
            Ok(())
        })
    }

    fn check_join_fields(&self, request: &JoinRequest) -> Result<(), GroupError> {
        let s = &self.settings;
        let timeout = request.session_timeout_ms;
        if u32::try_from(timeout).map_or(true, |t| t < s.session_timeout_ms_min || t > s.session_timeout_ms_max) {
            return Err(GroupError::InvalidSessionTimeout {
                given: timeout,
                min: s.session_timeout_ms_min,
                max: s.session_timeout_ms_max,
            });
        }
        let invalid = |what| Err(GroupError::InvalidRequest { what });
        if request.group_instance_id.as_ref().is_some_and(|i| i.is_empty() || i.len() > MEMBER_ID_BYTES_MAX) {
            return invalid("a group.instance.id has 1 to 255 bytes");
        }
        if request.protocol_type.len() > PROTOCOL_NAME_BYTES_MAX {
            return invalid("a protocol type has at most 255 bytes");
        }
        if request.protocols.len() > PROTOCOLS_PER_MEMBER_MAX {
            return invalid("a member offers at most 32 protocols");
        }
        if request.protocols.iter().any(|p| p.name.len() > PROTOCOL_NAME_BYTES_MAX) {
            return invalid("a protocol name has at most 255 bytes");
        }
        if request.protocols.iter().map(|p| p.metadata.len()).sum::<usize>() > s.protocol_metadata_bytes_max {
            return invalid("the protocols' metadata is over protocol_metadata_bytes_max");
        }
        Ok(())
    }

    fn join_group(&mut self, g: &mut Group, handle: Handle, request: &JoinRequest, now: u64) -> Result<(), GroupError> {
        if g.state == GroupState::Dead {
            return Err(GroupError::GroupDeleting { group: g.id.clone() });
        }
        if !g.supports(&request.protocol_type, &request.protocols) {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        let instance = request.group_instance_id.as_deref();
        if request.member_id.is_empty() {
            if let Some(old) = g.static_member(instance).cloned() {
                let new = self.new_member_id(&request.client_id);
                self.replace_static_member(g, &old, new, handle, request, now);
                return Ok(());
            }
            self.check_room(g)?;
            let id = self.new_member_id(&request.client_id);
            if request.require_known_member_id && instance.is_none() {
                // KIP-394: the member is remembered for one session timeout and must come
                // back with its id, so that a client whose JoinGroup timed out and retried
                // does not leave a member behind on each attempt.
                let deadline = now.saturating_add(session_ms(request));
                g.pending.insert(id.clone(), deadline);
                let mut answer = join_error(&id, GroupError::MemberIdRequired);
                answer.member_id = id;
                self.reply(handle, Reply::Join(answer));
            } else {
                self.add_member(g, id, handle, request, now);
            }
            return Ok(());
        }
        if g.pending.contains_key(&request.member_id) {
            if g.static_member(instance).is_some() {
                return Err(GroupError::FencedInstanceId);
            }
            g.pending.remove(&request.member_id);
            self.add_member(g, request.member_id.clone(), handle, request, now);
            return Ok(());
        }
        if g.is_fenced(&request.member_id, instance) {
            return Err(GroupError::FencedInstanceId);
        }
        let Some(member) = g.members.get(&request.member_id) else { return Err(GroupError::UnknownMemberId) };
        if instance.is_some() && g.static_member(instance).is_none() {
            return Err(GroupError::UnknownMemberId);
        }
        let unchanged = member.same_protocols(&request.protocols);
        let is_leader = g.leader.as_deref() == Some(request.member_id.as_str());
        match g.state {
            GroupState::PreparingRebalance => self.update_member(g, handle, request),
            // The member lost the answer it was sent: send it again.
            GroupState::CompletingRebalance if unchanged => {
                let answer = self.current_generation(g, &request.member_id, is_leader);
                self.reply(handle, Reply::Join(answer));
            }
            // A follower that changed nothing learns the generation; the leader rejoining
            // is how it asks for a new assignment (the topics changed, say).
            GroupState::Stable if unchanged && !is_leader => {
                let answer = self.current_generation(g, &request.member_id, false);
                self.reply(handle, Reply::Join(answer));
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.update_member(g, handle, request);
                self.prepare_rebalance(g, now);
            }
            GroupState::Empty | GroupState::Dead => return Err(GroupError::UnknownMemberId),
        }
        Ok(())
    }

    fn check_room(&self, g: &Group) -> Result<(), GroupError> {
        if g.size() >= self.settings.members_per_group_max {
            return Err(GroupError::GroupMaxSizeReached { max: self.settings.members_per_group_max });
        }
        if self.members_total() >= self.settings.members_max {
            return Err(GroupError::CoordinatorFull { what: "members_max members", setting: "members_max" });
        }
        Ok(())
    }

    pub(super) fn current_generation(&self, g: &Group, member_id: &str, with_members: bool) -> JoinResponse {
        JoinResponse {
            error: None,
            generation_id: g.generation,
            protocol_type: g.protocol_type.clone(),
            protocol_name: g.protocol_name.clone(),
            leader: g.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members: if with_members { g.joined_members() } else { Vec::new() },
        }
    }

    fn add_member(&mut self, g: &mut Group, id: String, handle: Handle, request: &JoinRequest, now: u64) {
        let member = Member {
            id: id.clone(),
            instance_id: request.group_instance_id.clone(),
            client_id: truncated(&request.client_id, CLIENT_TEXT_BYTES_MAX).to_string(),
            client_host: truncated(&request.client_host, CLIENT_TEXT_BYTES_MAX).to_string(),
            session_timeout_ms: session_ms(request) as u32,
            rebalance_timeout_ms: rebalance_ms(request),
            protocols: request.protocols.clone(),
            assignment: Bytes::new(),
            seq: self.next_seq,
            join: Some(handle),
            sync: None,
            is_new: true,
            must_sync: false,
            deadline_ms: now.saturating_add(self.settings.new_member_join_timeout_ms),
        };
        self.next_seq += 1;
        if g.members.is_empty() {
            g.protocol_type = Some(request.protocol_type.clone());
        }
        if g.leader.is_none() {
            g.leader = Some(id.clone());
        }
        if let Some(instance) = &request.group_instance_id {
            g.statics.insert(instance.clone(), id.clone());
        }
        g.members.insert(id, member);
        // Members arriving during an empty group's first wait push it out, so that a
        // fleet starting together lands in one generation.
        if let Some(r) = g.rebalance.as_mut().filter(|r| r.initial) {
            r.deadline_ms =
                r.deadline_ms.max(now.saturating_add(self.settings.initial_rebalance_delay_ms).min(r.limit_ms));
        }
        self.maybe_prepare_rebalance(g, now);
    }

    fn update_member(&mut self, g: &mut Group, handle: Handle, request: &JoinRequest) {
        let member = g.members.get_mut(&request.member_id).expect("the caller checked it is a member");
        member.protocols = request.protocols.clone();
        member.session_timeout_ms = session_ms(request) as u32;
        member.rebalance_timeout_ms = rebalance_ms(request);
        // A JoinGroup sent again replaces the one that waits: its client gave up on it.
        if let Some(old) = member.join.replace(handle) {
            self.reply(old, Reply::Join(join_error(&request.member_id, GroupError::RebalanceInProgress)));
        }
    }

    /// A static member restarted (it joins with its instance id and no member id): it
    /// takes the place of its old self under a new member id, and the old id is fenced
    /// (FENCED_INSTANCE_ID), so that a zombie of the old process stops. A stable group
    /// whose protocol this does not change does not rebalance: the member gets the current
    /// generation and, with SyncGroup, its old assignment (KIP-345).
    fn replace_static_member(
        &mut self,
        g: &mut Group,
        old: &str,
        new: String,
        handle: Handle,
        request: &JoinRequest,
        now: u64,
    ) {
        let leader_before = g.leader.clone().unwrap_or_default();
        let mut member = g.members.remove(old).expect("a static member is a member");
        if let Some(h) = member.join.take() {
            self.reply(h, Reply::Join(join_error(old, GroupError::FencedInstanceId)));
        }
        if let Some(h) = member.sync.take() {
            self.reply(h, Reply::Sync(sync_error(GroupError::FencedInstanceId)));
        }
        member.id = new.clone();
        member.client_id = truncated(&request.client_id, CLIENT_TEXT_BYTES_MAX).to_string();
        member.client_host = truncated(&request.client_host, CLIENT_TEXT_BYTES_MAX).to_string();
        member.protocols = request.protocols.clone();
        member.session_timeout_ms = session_ms(request) as u32;
        member.rebalance_timeout_ms = rebalance_ms(request);
        member.deadline_ms = now.saturating_add(u64::from(member.session_timeout_ms));
        if g.leader.as_deref() == Some(old) {
            g.leader = Some(new.clone());
        }
        let instance = member.instance_id.clone().expect("a static member has an instance id");
        g.statics.insert(instance, new.clone());
        g.members.insert(new.clone(), member);
        match g.state {
            GroupState::Stable if g.select_protocol() == g.protocol_name => {
                // The old leader id goes back, so that a restarted leader does not take
                // itself for the leader and compute an assignment nobody would be sent.
                let mut answer = self.current_generation(g, &new, false);
                answer.leader = leader_before;
                self.reply(handle, Reply::Join(answer));
            }
            GroupState::Stable | GroupState::CompletingRebalance => {
                g.members.get_mut(&new).expect("just inserted").join = Some(handle);
                self.prepare_rebalance(g, now);
            }
            GroupState::PreparingRebalance => g.members.get_mut(&new).expect("just inserted").join = Some(handle),
            GroupState::Empty | GroupState::Dead => unreachable!("a group with a static member has members"),
        }
    }

    /// SyncGroup. A follower's waits for the leader's assignment; the leader's appends the
    /// group record, and every waiting SyncGroup is answered once it commits.
    pub fn sync(&mut self, handle: Handle, request: SyncRequest, now_ms: u64) -> Output {
        let now = self.now(now_ms);
        if let Err(error) = self.try_sync(handle, request, now) {
            self.reply(handle, Reply::Sync(sync_error(error)));
        }
        self.take_output()
    }

    fn try_sync(&mut self, handle: Handle, request: SyncRequest, now: u64) -> Result<(), GroupError> {
        // While loading, the rebalance in progress was lost with the old coordinator:
        // REBALANCE_IN_PROGRESS sends the member back to JoinGroup (what Kafka answers;
        // older clients do not expect COORDINATOR_LOAD_IN_PROGRESS here).
        if self.loading {
            return Err(GroupError::RebalanceInProgress);
        }
        check_group_id(&request.group_id, false)?;
        if !self.groups.contains_key(&request.group_id) {
            return Err(GroupError::UnknownMemberId);
        }
        let group_id = request.group_id.clone();
        self.with_group(&group_id, now, |c, g| c.sync_group(g, handle, request, now))
    }

    fn sync_group(&mut self, g: &mut Group, handle: Handle, request: SyncRequest, now: u64) -> Result<(), GroupError> {
        self.check_member(g, &request.member_id, request.group_instance_id.as_deref(), request.generation_id)?;
        let member = g.members.get_mut(&request.member_id).expect("checked");
        match g.state {
            GroupState::Empty | GroupState::Dead => Err(GroupError::UnknownMemberId),
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::Stable => {
                member.must_sync = false;
                member.deadline_ms = now.saturating_add(u64::from(member.session_timeout_ms));
                let assignment = member.assignment.clone();
                self.reply(handle, Reply::Sync(SyncResponse { error: None, assignment }));
                Ok(())
            }
            GroupState::CompletingRebalance => {
                member.must_sync = false;
                if let Some(old) = member.sync.replace(handle) {
                    self.reply(old, Reply::Sync(sync_error(GroupError::RebalanceInProgress)));
                }
                if g.leader.as_deref() == Some(request.member_id.as_str()) && !g.assignment_in_flight {
                    self.store_assignment(g, request.assignments, now);
                }
                Ok(())
            }
        }
    }

    /// The checks every request of a member makes, in Kafka's order.
    pub(super) fn check_member(
        &self,
        g: &Group,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
    ) -> Result<(), GroupError> {
        if g.state == GroupState::Dead {
            return Err(GroupError::GroupDeleting { group: g.id.clone() });
        }
        if g.is_fenced(member_id, instance) {
            return Err(GroupError::FencedInstanceId);
        }
        if !g.members.contains_key(member_id) {
            return Err(GroupError::UnknownMemberId);
        }
        if generation != g.generation {
            return Err(GroupError::IllegalGeneration { given: generation, current: g.generation });
        }
        Ok(())
    }

    /// Heartbeat: keeps the member's session alive and tells it whether to rejoin.
    pub fn heartbeat(&mut self, request: HeartbeatRequest, now_ms: u64) -> HeartbeatResponse {
        let now = self.now(now_ms);
        // Kafka answers blindly while loading: older clients do not expect
        // COORDINATOR_LOAD_IN_PROGRESS, and the member finds out at its next request.
        if self.loading {
            return HeartbeatResponse { error: None };
        }
        if let Err(error) = check_group_id(&request.group_id, false) {
            return HeartbeatResponse { error: Some(error) };
        }
        let Some(g) = self.groups.get(&request.group_id) else {
            return HeartbeatResponse { error: Some(GroupError::UnknownMemberId) };
        };
        let instance = request.group_instance_id.as_deref();
        if let Err(error) = self.check_member(g, &request.member_id, instance, request.generation_id) {
            return HeartbeatResponse { error: Some(error) };
        }
        let g = self.groups.get_mut(&request.group_id).expect("just found");
        let error = match g.state {
            GroupState::Empty | GroupState::Dead => {
                return HeartbeatResponse { error: Some(GroupError::UnknownMemberId) };
            }
            GroupState::PreparingRebalance => Some(GroupError::RebalanceInProgress),
            // A member may heartbeat between its JoinGroup answer and its SyncGroup.
            GroupState::CompletingRebalance | GroupState::Stable => None,
        };
        let member = g.members.get_mut(&request.member_id).expect("checked");
        member.deadline_ms = now.saturating_add(u64::from(member.session_timeout_ms));
        HeartbeatResponse { error }
    }

    /// LeaveGroup: each member named leaves at once, and the group rebalances.
    pub fn leave(&mut self, handle: Handle, request: LeaveRequest, now_ms: u64) -> Output {
        let now = self.now(now_ms);
        let response = self
            .try_leave(request, now)
            .unwrap_or_else(|error| LeaveResponse { error: Some(error), members: Vec::new() });
        self.reply(handle, Reply::Leave(response));
        self.take_output()
    }

    fn try_leave(&mut self, request: LeaveRequest, now: u64) -> Result<LeaveResponse, GroupError> {
        self.check_loaded()?;
        check_group_id(&request.group_id, false)?;
        let Some(g) = self.groups.get(&request.group_id) else {
            let members = request.members.into_iter().map(|m| (m, Some(GroupError::UnknownMemberId))).collect();
            return Ok(LeaveResponse { error: None, members });
        };
        if g.state == GroupState::Dead {
            return Err(GroupError::GroupDeleting { group: request.group_id });
        }
        let members = self.with_group(&request.group_id, now, |c, g| {
            let mut results = Vec::with_capacity(request.members.len());
            for leaving in request.members {
                let error = c.leave_one(g, &leaving.member_id, leaving.group_instance_id.as_deref(), now);
                results.push((leaving, error));
            }
            results
        });
        Ok(LeaveResponse { error: None, members })
    }

    fn leave_one(&mut self, g: &mut Group, member_id: &str, instance: Option<&str>, now: u64) -> Option<GroupError> {
        if !member_id.is_empty() && g.is_fenced(member_id, instance) {
            return Some(GroupError::FencedInstanceId);
        }
        if g.pending.remove(member_id).is_some() {
            self.try_complete_join(g, now);
            return None;
        }
        let id = match g.static_member(instance) {
            Some(id) => id.clone(),
            None if g.members.contains_key(member_id) => member_id.to_string(),
            None => return Some(GroupError::UnknownMemberId),
        };
        self.remove_member(g, &id);
        self.member_left(g, now);
        None
    }
}

/// The session timeout of a request that passed `check_join_fields` (so it is positive).
fn session_ms(request: &JoinRequest) -> u64 {
    u64::try_from(request.session_timeout_ms).expect("checked positive")
}

fn rebalance_ms(request: &JoinRequest) -> u32 {
    u32::try_from(request.rebalance_timeout_ms).unwrap_or(request.session_timeout_ms as u32)
}
