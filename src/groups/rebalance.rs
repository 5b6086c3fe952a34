//! The rebalance: how a group goes from one generation to the next, and what ends one
//! when a member goes quiet.
//!
//! A member joins, leaves, changes its protocols or times out, and the group goes to
//! PreparingRebalance. Every member must join again within the rebalance timeout (the
//! longest of the members'); their JoinGroups wait. When all have, or the time is up, the
//! generation goes up by one, the dynamic members that did not rejoin are removed (static
//! ones stay: their instance may be restarting, KIP-345), a protocol is chosen and every
//! waiting JoinGroup is answered; the leader's answer lists the members. The group is then
//! CompletingRebalance until the leader's SyncGroup brings the assignment, which is
//! appended as a group record; once it commits, every member's SyncGroup is answered with
//! its part and the group is Stable. Members answered that never send SyncGroup are
//! removed after the rebalance timeout, and the group rebalances without them.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::api::{GroupState, Handle, Reply, SyncResponse};
use super::coordinator::{Coordinator, Effect, join_error, sync_error};
use super::error::GroupError;
use super::group::{Group, Rebalance};
use super::records::{GroupValue, StoredRecord};

impl Coordinator {
    /// Appends the leader's assignment as the group record. Members it leaves out get an
    /// empty assignment; ids that are not members are ignored (as Kafka does).
    pub(super) fn store_assignment(&mut self, g: &mut Group, given: Vec<(String, Bytes)>, now: u64) {
        let given: BTreeMap<String, Bytes> = given.into_iter().collect();
        let assignments: BTreeMap<String, Bytes> =
            g.members.keys().map(|id| (id.clone(), given.get(id).cloned().unwrap_or_default())).collect();
        let protocol = g.protocol_name.clone();
        let value = GroupValue {
            generation: g.generation,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol_name: protocol.clone(),
            leader: g.leader.clone(),
            written_at_ms: now,
            members: g
                .by_arrival()
                .into_iter()
                .map(|m| m.value(protocol.as_deref(), assignments[&m.id].clone()))
                .collect(),
        };
        let record = StoredRecord::Group { group: g.id.clone(), value: Some(value) };
        let bytes = record.encoded_len();
        let max = self.settings.append_bytes_max;
        let error = if bytes > max {
            GroupError::GroupRecordTooLarge { bytes, max }
        } else {
            let effect = Effect::Assignment { group: g.id.clone(), generation: g.generation, assignments };
            if self.append(vec![record], effect).is_some() {
                g.assignment_in_flight = true;
                return;
            }
            GroupError::CoordinatorFull {
                what: "appends_in_flight_max appends waiting",
                setting: "appends_in_flight_max",
            }
        };
        self.assignment_failed(g, g.generation, error, now);
    }

    /// The group record of `generation` committed: the members get their assignments.
    pub(super) fn assignment_committed(
        &mut self,
        g: &mut Group,
        generation: i32,
        assignments: &BTreeMap<String, Bytes>,
        now: u64,
    ) {
        g.assignment_in_flight = false;
        // The group may have moved on while the record was on its way (a member left, say):
        // then this generation is over and its assignment is for no one.
        if g.state != GroupState::CompletingRebalance || g.generation != generation {
            return;
        }
        for m in g.members.values_mut() {
            m.assignment = assignments.get(&m.id).cloned().unwrap_or_default();
            if let Some(handle) = m.sync.take() {
                m.deadline_ms = now.saturating_add(u64::from(m.session_timeout_ms));
                self.out_sync(handle, SyncResponse { error: None, assignment: m.assignment.clone() });
            }
        }
        g.set_state(GroupState::Stable, now);
    }

    /// The group record of `generation` could not be appended: the members waiting in
    /// SyncGroup get `error`, and the group rebalances (as Kafka does).
    pub(super) fn assignment_failed(&mut self, g: &mut Group, generation: i32, error: GroupError, now: u64) {
        g.assignment_in_flight = false;
        if g.state != GroupState::CompletingRebalance || g.generation != generation {
            return;
        }
        for m in g.members.values_mut() {
            m.assignment = Bytes::new();
            if let Some(handle) = m.sync.take() {
                self.out_sync(handle, sync_error(error.clone()));
            }
        }
        self.prepare_rebalance(g, now);
    }

    fn out_sync(&mut self, handle: Handle, response: SyncResponse) {
        self.reply(handle, Reply::Sync(response));
    }

    /// Removes a member; its waiting requests are answered UNKNOWN_MEMBER_ID, so that a
    /// client still there joins again.
    pub(super) fn remove_member(&mut self, g: &mut Group, id: &str) {
        let Some(m) = g.members.remove(id) else { return };
        if let Some(handle) = m.join {
            self.reply(handle, Reply::Join(join_error("", GroupError::UnknownMemberId)));
        }
        if let Some(handle) = m.sync {
            self.reply(handle, Reply::Sync(sync_error(GroupError::UnknownMemberId)));
        }
        if let Some(instance) = &m.instance_id
            && g.statics.get(instance).is_some_and(|current| current == id)
        {
            g.statics.remove(instance);
        }
        if g.leader.as_deref() == Some(id) {
            g.leader = g.by_arrival().first().map(|m| m.id.clone());
        }
    }

    /// After a member or member-to-be left: the group rebalances, or the rebalance in
    /// progress may now be complete.
    pub(super) fn member_left(&mut self, g: &mut Group, now: u64) {
        match g.state {
            GroupState::Stable | GroupState::CompletingRebalance => self.prepare_rebalance(g, now),
            GroupState::PreparingRebalance => self.try_complete_join(g, now),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    pub(super) fn maybe_prepare_rebalance(&mut self, g: &mut Group, now: u64) {
        if matches!(g.state, GroupState::Empty | GroupState::Stable | GroupState::CompletingRebalance) {
            self.prepare_rebalance(g, now);
        }
    }

    pub(super) fn prepare_rebalance(&mut self, g: &mut Group, now: u64) {
        if g.state == GroupState::CompletingRebalance {
            for m in g.members.values_mut() {
                m.assignment = Bytes::new();
                if let Some(handle) = m.sync.take() {
                    self.out_sync(handle, sync_error(GroupError::RebalanceInProgress));
                }
            }
        }
        for m in g.members.values_mut() {
            m.must_sync = false;
        }
        let timeout = g.rebalance_timeout_ms();
        let delay = self.settings.initial_rebalance_delay_ms;
        let initial = g.state == GroupState::Empty;
        g.rebalance = Some(if initial {
            Rebalance {
                deadline_ms: now.saturating_add(delay),
                initial,
                limit_ms: now.saturating_add(timeout.max(delay)),
            }
        } else {
            Rebalance { deadline_ms: now.saturating_add(timeout), initial, limit_ms: now.saturating_add(timeout) }
        });
        g.sync_deadline_ms = None;
        g.set_state(GroupState::PreparingRebalance, now);
    }

    /// Completes the rebalance if every member rejoined (not during an initial wait).
    pub(super) fn try_complete_join(&mut self, g: &mut Group, now: u64) {
        let waiting_out = g.rebalance.as_ref().is_some_and(|r| r.initial);
        if g.state == GroupState::PreparingRebalance && !waiting_out && g.all_joined() {
            self.complete_join(g, now);
        }
    }

    /// Ends the PreparingRebalance phase: a new generation, and every waiting JoinGroup
    /// answered.
    pub(super) fn complete_join(&mut self, g: &mut Group, now: u64) {
        let gone: Vec<String> =
            g.members.values().filter(|m| m.join.is_none() && m.instance_id.is_none()).map(|m| m.id.clone()).collect();
        for id in gone {
            self.remove_member(g, &id);
        }
        let timeout = g.rebalance_timeout_ms();
        if !g.members.is_empty() && g.members.values().all(|m| m.join.is_none()) {
            // Only static members are left and none rejoined: wait for them again, until
            // they rejoin or their sessions end (Kafka does the same).
            g.rebalance = Some(Rebalance {
                deadline_ms: now.saturating_add(timeout),
                initial: false,
                limit_ms: now.saturating_add(timeout),
            });
            return;
        }
        let leader_rejoined = g.leader.as_ref().and_then(|l| g.members.get(l)).is_some_and(|m| m.join.is_some());
        if !leader_rejoined {
            g.leader = g.by_arrival().into_iter().find(|m| m.join.is_some()).map(|m| m.id.clone());
        }
        g.generation = if g.generation == i32::MAX { 1 } else { g.generation + 1 };
        g.rebalance = None;
        if g.members.is_empty() {
            g.protocol_name = None;
            g.leader = None;
            g.set_state(GroupState::Empty, now);
            self.store_empty_group(g, now);
            return;
        }
        g.protocol_name = g.select_protocol();
        g.set_state(GroupState::CompletingRebalance, now);
        g.sync_deadline_ms = Some(now.saturating_add(timeout));
        let leader_answer = self.current_generation(g, g.leader.as_deref().unwrap_or(""), true);
        for m in g.members.values_mut() {
            m.is_new = false;
            m.deadline_ms = now.saturating_add(u64::from(m.session_timeout_ms));
            if let Some(handle) = m.join.take() {
                let mut answer = leader_answer.clone();
                answer.member_id = m.id.clone();
                if g.leader.as_deref() != Some(m.id.as_str()) {
                    answer.members = Vec::new();
                }
                m.must_sync = true;
                self.reply(handle, Reply::Join(answer));
            }
        }
    }

    /// Records that the group is empty at its new generation, so that a later coordinator
    /// starts after it. Skipped when too many appends wait: Kafka only warns when this
    /// write fails, since an empty generation has no members to confuse.
    fn store_empty_group(&mut self, g: &Group, now: u64) {
        let value = GroupValue {
            generation: g.generation,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol_name: None,
            leader: None,
            written_at_ms: now,
            members: Vec::new(),
        };
        let record = StoredRecord::Group { group: g.id.clone(), value: Some(value) };
        let _ = self.append(vec![record], Effect::EmptyGroup);
    }

    /// Time for one group: members and members-to-be whose time ran out leave, and the
    /// rebalance in progress, or the wait for SyncGroups, ends if its time is up.
    pub(super) fn expire_members(&mut self, g: &mut Group, now: u64) {
        let before = g.pending.len();
        g.pending.retain(|_, deadline| *deadline > now);
        if g.pending.len() != before {
            self.try_complete_join(g, now);
        }
        let expired: Vec<String> = g.members.values().filter(|m| m.expired(now)).map(|m| m.id.clone()).collect();
        for id in expired {
            self.remove_member(g, &id);
            self.member_left(g, now);
        }
        if g.state == GroupState::PreparingRebalance && g.rebalance.as_ref().is_some_and(|r| now >= r.deadline_ms) {
            self.complete_join(g, now);
        }
        if let Some(deadline) = g.sync_deadline_ms
            && now >= deadline
        {
            g.sync_deadline_ms = None;
            // Members that were answered and never asked for their assignment are gone;
            // the others need a new assignment without them.
            let silent: Vec<String> = g.members.values().filter(|m| m.must_sync).map(|m| m.id.clone()).collect();
            if !silent.is_empty() {
                for id in silent {
                    self.remove_member(g, &id);
                }
                self.member_left(g, now);
            }
        }
    }
}
