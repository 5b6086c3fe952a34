//! OffsetCommit, OffsetFetch, and the expiry of offsets past their retention.
//!
//! A commit is checked against the group (member, generation, state), appended as one
//! record per partition, and answered only once that append commits: an acknowledged
//! offset is replicated and survives the coordinator. keel does not check that the member
//! owns the partitions it commits, and neither does Kafka: the assignment is the
//! assignor's bytes, which the coordinator never reads. It does not check that the topic
//! exists either: that needs the cluster's metadata, which is the front end's to consult
//! (Kafka answers UNKNOWN_TOPIC_OR_PARTITION there).

use super::api::{CommitRequest, FetchedOffset, GroupState, Handle, Output, PartitionResult};
use super::coordinator::{Coordinator, Effect};
use super::error::{GroupError, check_group_id};
use super::group::Group;
use super::records::{OffsetKey, OffsetValue, StoredRecord};
use crate::metadata::{INTERNAL_PREFIX, check_topic_name};

impl Coordinator {
    /// OffsetCommit: answered once the offsets are committed, or at once with an error.
    pub fn commit(&mut self, handle: Handle, request: CommitRequest, now_ms: u64) -> Output {
        let now = self.now(now_ms);
        if let Err(error) = self.try_commit(handle, &request, now) {
            let results = request
                .offsets
                .iter()
                .map(|o| PartitionResult { topic: o.topic.clone(), partition: o.partition, error: Some(error.clone()) })
                .collect();
            self.commit_response(handle, results);
        }
        self.take_output()
    }

    fn try_commit(&mut self, handle: Handle, request: &CommitRequest, now: u64) -> Result<(), GroupError> {
        self.check_loaded()?;
        check_group_id(&request.group_id, true)?;
        if !self.groups.contains_key(&request.group_id) {
            // Kafka: a commit without a generation creates the group (a consumer that only
            // stores offsets); one with a generation comes from a group that is gone.
            if request.generation_id >= 0 {
                return Err(GroupError::IllegalGeneration { given: request.generation_id, current: 0 });
            }
            if self.groups.len() >= self.settings.groups_max {
                return Err(GroupError::CoordinatorFull { what: "groups_max groups", setting: "groups_max" });
            }
        }
        self.with_group(&request.group_id, now, |c, g| c.commit_to_group(g, handle, request, now))
    }

    fn commit_to_group(
        &mut self,
        g: &mut Group,
        handle: Handle,
        request: &CommitRequest,
        now: u64,
    ) -> Result<(), GroupError> {
        self.check_committer(g, request)?;
        let mut results = Vec::with_capacity(request.offsets.len());
        let mut records = Vec::new();
        for o in &request.offsets {
            let error = match self.check_offset(&o.topic, o.partition, o.metadata.as_deref()) {
                Err(error) => Some(error),
                Ok(partition) => {
                    let key = OffsetKey { group: g.id.clone(), topic: o.topic.clone(), partition };
                    let value = OffsetValue {
                        offset: o.offset,
                        leader_epoch: o.leader_epoch,
                        metadata: o.metadata.clone().unwrap_or_default(),
                        commit_timestamp_ms: now,
                    };
                    records.push(StoredRecord::Offset { key, value: Some(value) });
                    None
                }
            };
            results.push(PartitionResult { topic: o.topic.clone(), partition: o.partition, error });
        }
        if records.is_empty() {
            self.commit_response(handle, results);
            return Ok(());
        }
        let bytes: usize = records.iter().map(StoredRecord::encoded_len).sum();
        if bytes > self.settings.append_bytes_max {
            return Err(GroupError::InvalidCommitOffsetSize { bytes, max: self.settings.append_bytes_max });
        }
        let new_keys = records
            .iter()
            .filter(|r| match r {
                StoredRecord::Offset { key, .. } => {
                    !g.committed.offsets.contains_key(&(key.topic.clone(), key.partition))
                }
                StoredRecord::Group { .. } => false,
            })
            .count();
        if self.offsets_total() + new_keys > self.settings.offsets_max {
            return Err(GroupError::CoordinatorFull { what: "offsets_max offsets", setting: "offsets_max" });
        }
        if self.appends_full() {
            return Err(GroupError::CoordinatorFull {
                what: "appends_in_flight_max appends waiting",
                setting: "appends_in_flight_max",
            });
        }
        let effect = Effect::Commit { handle, group: g.id.clone(), results };
        self.append(records, effect).expect("room was checked");
        g.commits_in_flight += 1;
        // A commit is a sign of life too (Kafka counts it as a heartbeat).
        if let Some(m) = g.members.get_mut(&request.member_id) {
            m.deadline_ms = now.saturating_add(u64::from(m.session_timeout_ms));
        }
        Ok(())
    }

    /// Who may commit, in Kafka's order: any member of the current generation while the
    /// group is not waiting for its assignment; anyone without a generation or member id
    /// while the group has no members.
    fn check_committer(&self, g: &Group, request: &CommitRequest) -> Result<(), GroupError> {
        let instance = request.group_instance_id.as_deref();
        let anonymous = request.generation_id < 0 && request.member_id.is_empty() && instance.is_none();
        if anonymous {
            if g.state == GroupState::Dead {
                return Err(GroupError::GroupDeleting { group: g.id.clone() });
            }
            if g.state != GroupState::Empty {
                return Err(GroupError::UnknownMemberId);
            }
            return Ok(());
        }
        self.check_member(g, &request.member_id, instance, request.generation_id)?;
        if instance.is_some() && g.static_member(instance).is_none() {
            return Err(GroupError::UnknownMemberId);
        }
        match g.state {
            // The member has its generation from JoinGroup but not its assignment yet.
            GroupState::CompletingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::Empty | GroupState::Dead => Err(GroupError::UnknownMemberId),
            // During PreparingRebalance a member may still commit what it consumed before
            // it rejoins (Kafka allows it).
            GroupState::Stable | GroupState::PreparingRebalance => Ok(()),
        }
    }

    /// One partition of a commit: a topic name that can exist, a partition number that can,
    /// and metadata within bounds.
    fn check_offset(&self, topic: &str, partition: i32, metadata: Option<&str>) -> Result<u32, GroupError> {
        let partition = u32::try_from(partition).map_err(|_| GroupError::UnknownTopicOrPartition)?;
        check_topic_name(topic, topic.starts_with(INTERNAL_PREFIX)).map_err(|_| GroupError::UnknownTopicOrPartition)?;
        let bytes = metadata.map_or(0, str::len);
        let max = self.settings.offset_metadata_bytes_max;
        if bytes > max {
            return Err(GroupError::OffsetMetadataTooLarge { bytes, max });
        }
        Ok(partition)
    }

    fn offsets_total(&self) -> usize {
        self.groups.values().map(|g| g.committed.offsets.len()).sum()
    }

    /// OffsetFetch: the committed offsets of the partitions asked for (`None`: all the
    /// group has), in the order asked, or by topic and partition. A partition without one
    /// is -1, whatever the group's state: a consumer may store offsets without joining.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        partitions: Option<&[(String, Vec<i32>)]>,
    ) -> Result<Vec<FetchedOffset>, GroupError> {
        self.check_loaded()?;
        check_group_id(group_id, true)?;
        let offsets = self.groups.get(group_id).map(|g| &g.committed.offsets);
        let fetched = |topic: &str, partition: i32, value: Option<&OffsetValue>| FetchedOffset {
            topic: topic.to_string(),
            partition,
            offset: value.map_or(-1, |v| v.offset),
            leader_epoch: value.map_or(-1, |v| v.leader_epoch),
            metadata: value.map(|v| v.metadata.clone()).unwrap_or_default(),
        };
        let Some(asked) = partitions else {
            let all = offsets.into_iter().flatten();
            return Ok(all.map(|((topic, p), v)| fetched(topic, *p as i32, Some(v))).collect());
        };
        let mut answer = Vec::new();
        for (topic, numbers) in asked {
            for &partition in numbers {
                let key = u32::try_from(partition).ok().map(|p| (topic.clone(), p));
                let value = key.and_then(|k| offsets.and_then(|o| o.get(&k)));
                answer.push(fetched(topic, partition, value));
            }
        }
        Ok(answer)
    }

    /// Appends tombstones for the offsets past their retention, and for the groups left
    /// with nothing that have been empty that long, at most `append_bytes_max` of them per
    /// pass (the rest at the next tick).
    ///
    /// The rule is Kafka's (KIP-211): the offsets of a group that has members never expire;
    /// those of a group that is empty expire together, `offsets_retention_ms` after it
    /// became empty (keel also waits that long after each offset's own commit); those of
    /// a group that never had members (it only stores offsets) expire one by one, that long
    /// after their commit. Offsets with a commit on the way are left for the next pass.
    pub(super) fn expire_offsets(&mut self, now: u64) {
        let retention = self.settings.offsets_retention_ms;
        let max = self.settings.append_bytes_max;
        if self.appends_full() {
            return;
        }
        let mut records = Vec::new();
        let mut bytes = 0;
        let mut groups = Vec::new();
        let mut cut_short = false;
        for (id, g) in self.groups.iter_mut() {
            let busy = g.state == GroupState::Dead || g.expiring || g.commits_in_flight > 0;
            if busy || !g.members.is_empty() || !g.pending.is_empty() || g.state != GroupState::Empty {
                continue;
            }
            let since = if g.protocol_type.is_some() { g.state_since_ms } else { 0 };
            let expired: Vec<(String, u32)> = g
                .committed
                .offsets
                .iter()
                .filter(|(_, v)| now.saturating_sub(since.max(v.commit_timestamp_ms)) >= retention)
                .map(|(k, _)| k.clone())
                .collect();
            let mut taken = Vec::new();
            for (topic, partition) in expired.iter().cloned() {
                let record =
                    StoredRecord::Offset { key: OffsetKey { group: id.clone(), topic, partition }, value: None };
                if bytes + record.encoded_len() > max {
                    cut_short = true;
                    break;
                }
                bytes += record.encoded_len();
                taken.push(record);
            }
            let emptied = taken.len() == g.committed.offsets.len();
            let long_empty = now.saturating_sub(g.state_since_ms) >= retention;
            if emptied && long_empty && g.committed.record.is_some() {
                let tombstone = StoredRecord::Group { group: id.clone(), value: None };
                if bytes + tombstone.encoded_len() <= max {
                    bytes += tombstone.encoded_len();
                    taken.push(tombstone);
                    // Nothing joins or commits until the tombstone is in: a group that
                    // came back meanwhile would be deleted with it.
                    g.set_state(GroupState::Dead, now);
                } else {
                    cut_short = true;
                }
            }
            if !taken.is_empty() {
                g.expiring = true;
                groups.push(id.clone());
                records.extend(taken);
            }
            if cut_short {
                break;
            }
        }
        if cut_short {
            self.next_cleanup_ms = now;
        }
        if !records.is_empty() {
            self.append(records, Effect::Expiry { groups }).expect("room was checked");
        }
    }
}
