//! The safety invariants (Raft Figure 3 and the durability promises), checked as the run
//! goes: most incrementally on every Ready, the costlier ones whenever a durable image
//! could have lost something.

use keel::raft::{Entry, LogStore, Membership, NodeId, Ready, Role, kind};
use keel::replica::testkit::Node;
use std::collections::{BTreeMap, HashMap};

/// What was last seen of a running node, to check that nothing goes backwards.
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    term: u64,
    vote: Option<NodeId>,
    commit: u64,
}

#[derive(Debug)]
pub struct Checker {
    initial: Membership,
    /// Election Safety: the leader of each term.
    leaders: BTreeMap<u64, NodeId>,
    /// Log Matching: the entry and its predecessor's term for every (index, term) ever written.
    written: HashMap<(u64, u64), (Entry, u64)>,
    /// State Machine Safety: every entry some node reported committed.
    pub committed: BTreeMap<u64, Entry>,
    /// For each committed index, the lowest term in which a node reported it committed:
    /// it was committed in that term or earlier, so every leader of a later term holds it.
    committed_by_term: BTreeMap<u64, u64>,
    /// Per node: the commit index up to which its committed entries were compared.
    compared: BTreeMap<NodeId, u64>,
    seen: BTreeMap<NodeId, Seen>,
    /// Seeds with a state machine: its hash once entries through the index were applied.
    states: HashMap<u64, u64>,
}

pub type Violation = String;

impl Checker {
    pub fn new(initial: Membership) -> Checker {
        Checker {
            initial,
            leaders: BTreeMap::new(),
            written: HashMap::new(),
            committed: BTreeMap::new(),
            committed_by_term: BTreeMap::new(),
            compared: BTreeMap::new(),
            seen: BTreeMap::new(),
            states: HashMap::new(),
        }
    }

    /// Every node's state machine at index `applied` equals every other's there, whether
    /// it applied the entries, installed a snapshot, or restarted from one and the log.
    pub fn state_machine(&mut self, id: NodeId, applied: u64, hash: u64) -> Result<(), Violation> {
        match self.states.insert(applied, hash) {
            Some(other) if other != hash => {
                Err(format!("node {id}'s state machine at {applied} is {hash:x}, another node's was {other:x}"))
            }
            _ => Ok(()),
        }
    }

    /// After a node applied a Ready (its store already holds the changes).
    pub fn on_ready(&mut self, node: &Node, ready: &Ready) -> Result<(), Violation> {
        let id = node.id();
        let raft = node.raft();
        let log = node.store().live();
        if ready.soft_state.is_some_and(|s| s.role == Role::Leader) {
            // Election Safety (§5.2): at most one leader per term.
            let term = raft.term();
            if let Some(other) = self.leaders.insert(term, id).filter(|other| *other != id) {
                return Err(format!("two leaders in term {term}: {other} and {id}"));
            }
            // Leader Completeness (§5.4): a leader holds every entry committed in an earlier
            // term. (A late election can still end in an older term; that leader cannot
            // commit anything, and is not held to entries committed after its term.)
            for (index, entry) in self.committed.range(log.first_index()..) {
                let earlier = self.committed_by_term.get(index).is_some_and(|t| *t < term);
                if earlier && log.entry(*index) != Some(entry) {
                    return Err(format!("leader {id} of term {term} lacks committed entry {index}"));
                }
            }
        }
        if let Some(after) = ready.truncate_after {
            // Compared with the commit before this step: the step may have committed more.
            let before = self.seen.get(&id).map_or(0, |s| s.commit);
            if after < before {
                return Err(format!("node {id} truncated after {after}, below its commit {before}"));
            }
        }
        if raft.role() == Role::Leader {
            self.config_changes(node, ready)?;
        }
        // Log Matching (§5.3): the same (index, term) means the same entry after the same history.
        for entry in &ready.entries {
            let prev_term = log.term(entry.index() - 1).expect("an appended entry has a predecessor");
            let key = (entry.index(), entry.term());
            match self.written.get(&key) {
                Some((first, first_prev)) if first != entry || *first_prev != prev_term => {
                    return Err(format!("node {id} holds a different entry at index {} term {}", key.0, key.1));
                }
                Some(_) => {}
                None => {
                    self.written.insert(key, (entry.clone(), prev_term));
                }
            }
        }
        // A log change must leave what this node considers committed untouched.
        if ready.has_storage() {
            let changed_from = match (&ready.reset, ready.truncate_after, ready.entries.first()) {
                (Some((start, _)), _, _) => start.index,
                (None, Some(after), _) => after + 1,
                (None, None, Some(first)) => first.index(),
                (None, None, None) => log.last_index() + 1,
            };
            let through = raft.commit().min(log.last_index());
            for index in changed_from.max(log.first_index())..=through {
                if let Some(entry) = self.committed.get(&index).filter(|c| log.entry(index) != Some(*c)) {
                    return Err(format!("node {id} replaced committed entry {index} ({entry:?})"));
                }
            }
        }
        if let Some(commit) = ready.commit {
            self.on_commit(node, commit)?;
        }
        Ok(())
    }

    /// Raft §6: a leader appends a configuration only once the previous one is committed
    /// (one change pending at most), and changes the voters only through a joint
    /// configuration C_old,new that it leaves for C_new and nothing else.
    fn config_changes(&self, node: &Node, ready: &Ready) -> Result<(), Violation> {
        let (id, raft, log) = (node.id(), node.raft(), node.store().live());
        let appended = ready.entries.iter().filter(|e| e.kind() == kind::CONFIG && e.term() == raft.term());
        for entry in appended {
            let index = entry.index();
            let previous = (log.first_index()..index).rev().find_map(|i| {
                let e = log.entry(i).filter(|e| e.kind() == kind::CONFIG)?;
                Some((i, Membership::decode(&e.payload()).expect("configurations in a log decode")))
            });
            let persisted = node.persisted_membership();
            let Some((at, before)) = previous.or((persisted.0 < index).then_some(persisted)) else { continue };
            let after = Membership::decode(&entry.payload()).expect("configurations in a log decode");
            if at > raft.commit() {
                return Err(format!(
                    "leader {id} appended configuration {index} while {at} is not committed (commit {}): \
                     two changes pending",
                    raft.commit()
                ));
            }
            let joint_left = before.is_joint() && after == before.leave_joint();
            let joint_entered = !before.is_joint() && after.voters_outgoing == before.voters;
            let voters_kept = !before.is_joint() && !after.is_joint() && after.voters == before.voters;
            if !(joint_left || joint_entered || voters_kept) {
                return Err(format!(
                    "leader {id} went from configuration {at} {before:?} to {index} {after:?} \
                     without a joint configuration between them"
                ));
            }
        }
        Ok(())
    }

    /// Raft §6: the index a leader just committed is durable on a majority of the
    /// configuration it used then (the one at `config_index`, the latest in its log before
    /// this step), of both C_old and C_new in a joint one.
    pub fn commit_quorum<'a>(
        &self,
        leader: &Node,
        config_index: u64,
        nodes: impl Iterator<Item = &'a Node> + Clone,
    ) -> Result<(), Violation> {
        let (raft, log) = (leader.raft(), leader.store().live());
        let index = raft.commit();
        let Some(entry) = log.entry(index) else { return Ok(()) };
        let config = if config_index == raft.membership_index() {
            raft.membership().clone()
        } else if config_index == 0 {
            self.initial.clone()
        } else if let Some(e) = log.entry(config_index).filter(|e| e.kind() == kind::CONFIG) {
            Membership::decode(&e.payload()).expect("configurations in a log decode")
        } else {
            return Ok(()); // compacted
        };
        for half in [&config.voters, &config.voters_outgoing].into_iter().filter(|h| !h.is_empty()) {
            let holding = nodes.clone().filter(|n| half.contains(&n.id()) && holds(n, index, entry)).count();
            if holding <= half.len() / 2 {
                return Err(format!(
                    "leader {} committed {index} durable on {holding} of voters {half:?} \
                     (configuration {config_index}: {config:?})",
                    leader.id()
                ));
            }
        }
        Ok(())
    }

    /// State Machine Safety (§5.4.3): no two nodes commit different entries at one index.
    fn on_commit(&mut self, node: &Node, commit: u64) -> Result<(), Violation> {
        let id = node.id();
        let log = node.store().live();
        let term = node.raft().term();
        let from = self.compared.get(&id).copied().unwrap_or(0).max(log.first_index() - 1) + 1;
        for index in from..=commit {
            let entry = log.entry(index).ok_or_else(|| format!("node {id} committed {index} it does not hold"))?;
            match self.committed.get(&index) {
                Some(other) if other != entry => {
                    return Err(format!("index {index} committed as {other:?} and as {entry:?} on node {id}"));
                }
                Some(_) => {}
                None => {
                    self.committed.insert(index, entry.clone());
                }
            }
            let by_term = self.committed_by_term.entry(index).or_insert(term);
            *by_term = (*by_term).min(term);
        }
        let compared = self.compared.entry(id).or_default();
        *compared = (*compared).max(commit);
        Ok(())
    }

    /// Term, vote and commit never go backwards on a running node; a restarted node comes
    /// back with at least the term and vote it had (they were fsync'd before anyone heard).
    pub fn after_event(&mut self, node: &Node) -> Result<(), Violation> {
        let Some(raft) = node.try_raft() else { return Ok(()) };
        let id = node.id();
        let seen = self.seen.entry(id).or_default();
        let now = Seen { term: raft.term(), vote: raft.vote(), commit: raft.commit() };
        if now.term < seen.term {
            return Err(format!("node {id}: term went back from {} to {}", seen.term, now.term));
        }
        if now.term == seen.term && seen.vote.is_some() && now.vote != seen.vote {
            return Err(format!("node {id}: vote in term {} changed from {:?} to {:?}", now.term, seen.vote, now.vote));
        }
        if now.commit < seen.commit {
            return Err(format!("node {id}: commit went back from {} to {}", seen.commit, now.commit));
        }
        // A quiet node's log ends at its commit index, and it knows who leads.
        let last = node.store().last_index();
        if raft.is_quiesced() && (raft.commit() != last || raft.leader().is_none()) {
            return Err(format!("node {id} is quiet with commit {} and last index {last}: {raft:?}", raft.commit()));
        }
        *seen = now;
        Ok(())
    }

    /// A node restarted: its commit may be lower than before the crash (commit is written
    /// lazily) but never below what its disk held.
    pub fn on_restart(&mut self, node: &Node) -> Result<(), Violation> {
        let raft = node.raft();
        if raft.commit() < node.hard_state().commit {
            return Err(format!("node {}: restarted below its persisted commit", node.id()));
        }
        self.seen.entry(node.id()).or_default().commit = raft.commit();
        self.after_event(node)
    }

    /// The newest configuration known committed: from committed entries, or persisted by a node.
    fn committed_membership<'a>(&self, nodes: impl Iterator<Item = &'a Node>) -> Membership {
        let from_log = self.committed.iter().rev().find(|(_, e)| e.kind() == kind::CONFIG);
        let mut newest = (0, self.initial.clone());
        if let Some((index, entry)) = from_log {
            newest = (*index, Membership::decode(&entry.payload()).expect("committed configurations decode"));
        }
        for node in nodes {
            if node.persisted_membership().0 > newest.0 {
                newest = node.persisted_membership();
            }
        }
        newest.1
    }

    /// Every committed entry is durable on a majority of the voters that can elect the next
    /// leader (C_new's voters once a joint configuration committed), or remembered by its
    /// persisted vote barrier (it lost the entry to damage and votes as if it still had
    /// it, ARCHITECTURE.md "Corruption"): crashes and a damaged minority never lose it.
    pub fn durable_majority<'a>(&self, nodes: impl Iterator<Item = &'a Node> + Clone) -> Result<(), Violation> {
        let voters = self.committed_membership(nodes.clone()).voters;
        let majority = voters.len() / 2 + 1;
        let images: Vec<&Node> = nodes.filter(|n| voters.contains(&n.id())).collect();
        for (index, entry) in &self.committed {
            let holding = images.iter().filter(|n| holds(n, *index, entry)).count();
            if holding < majority {
                return Err(format!(
                    "committed entry {index} is durable on {holding} of voters {voters:?}, below a majority"
                ));
            }
        }
        Ok(())
    }

    /// At the end: every pair of logs agrees wherever both hold an entry of the same term.
    pub fn final_log_matching<'a>(&self, nodes: impl Iterator<Item = &'a Node> + Clone) -> Result<(), Violation> {
        for a in nodes.clone() {
            for b in nodes.clone().filter(|b| b.id() > a.id()) {
                let (la, lb) = (a.store().live(), b.store().live());
                let from = la.first_index().max(lb.first_index());
                let to = la.last_index().min(lb.last_index());
                let mut matching = false;
                for index in (from..=to).rev() {
                    let (ea, eb) = (la.entry(index), lb.entry(index));
                    if ea.map(Entry::term) == eb.map(Entry::term) {
                        matching = true;
                    }
                    if matching && ea != eb {
                        return Err(format!("nodes {} and {} differ at index {index} below a match", a.id(), b.id()));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Whether `node`'s durable log holds `entry` at `index`, compacted it (it was there), or
/// remembers it by its persisted vote barrier.
fn holds(node: &Node, index: u64, entry: &Entry) -> bool {
    let durable = node.store().durable();
    index < durable.first_index()
        || durable.entry(index) == Some(entry)
        || node.vote_barrier().is_some_and(|b| index <= b.index)
}
