//! One group as the coordinator holds it: the committed part, rebuilt from the partition's
//! records, and the live part (members, timers, waiting requests), which only the
//! coordinator's memory holds.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::api::{GroupState, Handle, JoinedMember, Protocol};
use super::records::{GroupValue, MemberValue, OffsetValue};

/// What the partition's records say about a group: the latest record of each key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommittedGroup {
    /// By (topic, partition).
    pub offsets: BTreeMap<(String, u32), OffsetValue>,
    /// The latest group metadata record.
    pub record: Option<GroupValue>,
}

impl CommittedGroup {
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty() && self.record.is_none()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u32,
    pub rebalance_timeout_ms: u32,
    /// In the member's order of preference.
    pub protocols: Vec<Protocol>,
    pub assignment: Bytes,
    /// Order of arrival in the group: the leader and the protocol vote follow it.
    pub seq: u64,
    /// Its JoinGroup, waiting for the rebalance to complete.
    pub join: Option<Handle>,
    /// Its SyncGroup, waiting for the leader's assignment.
    pub sync: Option<Handle>,
    /// Added and not yet answered: it has no member id to heartbeat with, so it is kept
    /// for `new_member_join_timeout_ms` instead of its session timeout.
    pub is_new: bool,
    /// Answered at the end of the last rebalance and not yet synced.
    pub must_sync: bool,
    /// When it is removed unless it heartbeats (or, new, joins) before.
    pub deadline_ms: u64,
}

impl Member {
    /// Whether its session ran out at `now_ms`. A member whose JoinGroup or SyncGroup waits
    /// on the group is alive by that (Kafka's rule), unless it is new.
    pub fn expired(&self, now_ms: u64) -> bool {
        let waiting = self.join.is_some() || self.sync.is_some();
        now_ms >= self.deadline_ms && (self.is_new || !waiting)
    }

    pub fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols.iter().find(|p| p.name == protocol).map(|p| p.metadata.clone()).unwrap_or_default()
    }

    pub fn same_protocols(&self, protocols: &[Protocol]) -> bool {
        self.protocols == protocols
    }

    pub fn value(&self, protocol: Option<&str>, assignment: Bytes) -> MemberValue {
        MemberValue {
            member_id: self.id.clone(),
            instance_id: self.instance_id.clone(),
            client_id: self.client_id.clone(),
            client_host: self.client_host.clone(),
            session_timeout_ms: self.session_timeout_ms,
            rebalance_timeout_ms: self.rebalance_timeout_ms,
            subscription: protocol.map(|p| self.metadata_for(p)).unwrap_or_default(),
            assignment,
        }
    }
}

/// A rebalance in progress: when it completes unless every member rejoined before.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Rebalance {
    pub deadline_ms: u64,
    /// The rebalance of an empty group: it waits out its deadline even when every member
    /// joined (`initial_rebalance_delay_ms`), so that members starting together land in
    /// one generation rather than one each.
    pub initial: bool,
    /// How far new members may push an initial rebalance.
    pub limit_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Group {
    pub id: String,
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Members given an id by MEMBER_ID_REQUIRED, until they join with it or time out.
    pub pending: BTreeMap<String, u64>,
    /// group.instance.id to member id.
    pub statics: BTreeMap<String, String>,
    pub rebalance: Option<Rebalance>,
    /// When members answered at the end of the last rebalance that have not synced yet
    /// are removed (Kafka 3's pending-sync timeout).
    pub sync_deadline_ms: Option<u64>,
    /// When the group last changed state: offsets of an empty group expire from it.
    pub state_since_ms: u64,
    /// The leader's assignment waits for its group record to commit.
    pub assignment_in_flight: bool,
    /// Commits appended and not yet committed or failed: their offsets must not expire.
    pub commits_in_flight: usize,
    /// Expired offsets' tombstones are appended and not yet committed or failed.
    pub expiring: bool,
    pub committed: CommittedGroup,
}

impl Group {
    pub fn new(id: &str, now_ms: u64) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            pending: BTreeMap::new(),
            statics: BTreeMap::new(),
            rebalance: None,
            sync_deadline_ms: None,
            state_since_ms: now_ms,
            assignment_in_flight: false,
            commits_in_flight: 0,
            expiring: false,
            committed: CommittedGroup::default(),
        }
    }

    /// Members and members-to-be: what `members_per_group_max` counts.
    pub fn size(&self) -> usize {
        self.members.len() + self.pending.len()
    }

    /// Nothing in it, committed or live: the same as no group at all.
    pub fn is_vacant(&self) -> bool {
        self.committed.is_empty()
            && self.members.is_empty()
            && self.pending.is_empty()
            && self.state == GroupState::Empty
            && !self.assignment_in_flight
            && self.commits_in_flight == 0
            && !self.expiring
    }

    pub fn set_state(&mut self, state: GroupState, now_ms: u64) {
        self.state = state;
        self.state_since_ms = now_ms;
    }

    /// The member id a group.instance.id names, if it is a member.
    pub fn static_member(&self, instance_id: Option<&str>) -> Option<&String> {
        instance_id.and_then(|i| self.statics.get(i))
    }

    /// A static member whose instance id now belongs to another member id (Kafka's
    /// `isStaticMemberFenced`): an older process of the same instance.
    pub fn is_fenced(&self, member_id: &str, instance_id: Option<&str>) -> bool {
        self.static_member(instance_id).is_some_and(|current| current != member_id)
    }

    /// Whether a member with these protocols may join: an empty group takes any non-empty
    /// set; otherwise the type must match and one protocol must be one every member offers.
    pub fn supports(&self, protocol_type: &str, protocols: &[Protocol]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|p| self.members.values().all(|m| m.protocols.iter().any(|q| q.name == p.name)))
    }

    /// Members in order of arrival.
    pub fn by_arrival(&self) -> Vec<&Member> {
        let mut members: Vec<&Member> = self.members.values().collect();
        members.sort_by_key(|m| m.seq);
        members
    }

    /// The protocol for the next generation: among those every member offers, each member
    /// votes for the first in its own order, and the most votes win; a tie goes to the
    /// earlier in the order of the member that arrived first (Kafka leaves ties to a hash
    /// map's order; keel stays deterministic).
    pub fn select_protocol(&self) -> Option<String> {
        let members = self.by_arrival();
        let first = members.first()?;
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|p| p.name.as_str())
            .filter(|name| members.iter().all(|m| m.protocols.iter().any(|p| p.name == *name)))
            .collect();
        // Each member's vote: the first protocol in its own order that every member offers.
        fn vote<'a>(m: &'a Member, candidates: &[&str]) -> Option<&'a str> {
            m.protocols.iter().map(|p| p.name.as_str()).find(|name| candidates.contains(name))
        }
        let mut best: Option<(&str, usize)> = None;
        for &name in &candidates {
            let count = members.iter().filter(|m| vote(m, &candidates) == Some(name)).count();
            if best.is_none_or(|(_, most)| count > most) {
                best = Some((name, count));
            }
        }
        best.map(|(name, _)| name.to_string())
    }

    /// The longest rebalance timeout among the members: how long a rebalance waits.
    pub fn rebalance_timeout_ms(&self) -> u64 {
        self.members.values().map(|m| u64::from(m.rebalance_timeout_ms)).max().unwrap_or(0)
    }

    /// What the leader is sent: every member with its metadata for the chosen protocol.
    pub fn joined_members(&self) -> Vec<JoinedMember> {
        let protocol = self.protocol_name.as_deref().unwrap_or("");
        self.by_arrival()
            .into_iter()
            .map(|m| JoinedMember {
                member_id: m.id.clone(),
                group_instance_id: m.instance_id.clone(),
                metadata: m.metadata_for(protocol),
            })
            .collect()
    }

    /// The earliest time something may happen to the group on its own (a session or a
    /// rebalance ends), so that `tick` skips the groups with nothing due.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        let members = self.members.values().map(|m| m.deadline_ms);
        let rebalance = self.rebalance.as_ref().filter(|_| self.state == GroupState::PreparingRebalance);
        let others = [rebalance.map(|r| r.deadline_ms), self.sync_deadline_ms];
        self.pending.values().copied().chain(members).chain(others.into_iter().flatten()).min()
    }

    pub fn all_joined(&self) -> bool {
        self.pending.is_empty() && self.members.values().all(|m| m.join.is_some())
    }
}
