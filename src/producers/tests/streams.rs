//! Random produce streams through a leader: clients pipeline, retry any batch they sent (an
//! older epoch's too), skip sequences, bump epochs and let their clocks lag; entries commit in
//! order; leaders change, keeping a prefix of what was in flight; time jumps past the expiry.
//! Then:
//! - the committed log holds no batch twice and every producer's batches in order, as long as
//!   no producer was forgotten (expiry and eviction trade that away, by design);
//! - a replica restored from a snapshot taken at any entry, fed the entries after it (or a
//!   few before it too), ends equal to the table that never stopped.

use std::collections::HashSet;

use proptest::prelude::*;

use crate::ids::{Index, Offset};
use crate::producers::*;

use super::{Entry, batch, replay};

const CLIENTS: usize = 4;

struct Client {
    producer_id: i64,
    epoch: i16,
    next_seq: i32,
    sent: Vec<ProducerBatch>,
}

/// A leader, its log (committed and not) and its clients.
struct Sim {
    table: ProducerTable,
    inflight: InFlight,
    /// Entry `i` has index `i + 1`; the first `committed` are committed.
    log: Vec<Entry>,
    committed: usize,
    next_offset: u64,
    clock_ms: i64,
    clients: Vec<Client>,
    forgot: bool,
}

impl Sim {
    fn new(config: ProducerConfig) -> Sim {
        let clients = (0..CLIENTS)
            .map(|i| Client {
                producer_id: i as i64 * 3,
                epoch: 0,
                // One client starts just below the wrap.
                next_seq: if i == 2 { i32::MAX - 4 } else { 0 },
                sent: Vec::new(),
            })
            .collect();
        let mut sim = Sim {
            table: ProducerTable::new(config),
            inflight: InFlight::new(Index(1), 1000),
            log: Vec::new(),
            committed: 0,
            next_offset: 0,
            clock_ms: 0,
            clients,
            forgot: false,
        };
        sim.log.push(Entry::Control);
        sim.commit(1);
        sim
    }

    fn send(&mut self, b: ProducerBatch, timestamp_ms: i64) {
        if self.inflight.check(&self.table, &b) == Verdict::Append {
            let index = Index(self.log.len() as u64 + 1);
            let base_offset = Offset(self.next_offset);
            self.next_offset += b.record_count as u64;
            self.log.push(Entry::Data { batch: b, base_offset, timestamp_ms });
            self.inflight.proposed(index, &b);
        }
    }

    fn send_new(&mut self, client: usize, count: i32, skip: i32, timestamp_ms: i64) {
        let c = &mut self.clients[client];
        let b = batch(c.producer_id, c.epoch, sequence_after(c.next_seq, skip), count);
        c.next_seq = sequence_after(b.last_seq(), 1);
        c.sent.push(b);
        self.send(b, timestamp_ms);
    }

    fn commit(&mut self, n: usize) {
        let end = self.committed.saturating_add(n).min(self.log.len());
        for i in self.committed..end {
            let forgotten = self.log[i].apply(&mut self.table, Index(i as u64 + 1));
            self.forgot |= forgotten != Forgotten::default();
        }
        self.committed = end;
        self.inflight.forget_applied(self.table.applied_index());
    }

    /// A new leader whose log kept `kept` of the uncommitted entries; its no-op follows them.
    fn change_leader(&mut self, kept: usize) {
        let end = self.committed + kept.min(self.log.len() - self.committed);
        if let Some(Entry::Data { base_offset, .. }) = self.log[end..].iter().find(|e| matches!(e, Entry::Data { .. }))
        {
            self.next_offset = base_offset.get();
        }
        self.log.truncate(end);
        self.log.push(Entry::Control);
        self.inflight = InFlight::new(Index(self.log.len() as u64), 1000);
    }

    fn step(&mut self, (kind, a, b): (u8, u64, u64)) {
        let client = (a % CLIENTS as u64) as usize;
        let small = (b % 4) as i32;
        match kind {
            0..=3 => self.send_new(client, small + 1, 0, self.clock_ms),
            4 | 5 => {
                let sent = &self.clients[client].sent;
                if !sent.is_empty() {
                    let b = sent[sent.len() - 1 - (b as usize % sent.len().min(8))];
                    self.send(b, self.clock_ms);
                }
            }
            6 => self.send_new(client, 1, small + 1, self.clock_ms),
            7 => {
                let c = &mut self.clients[client];
                c.epoch += 1;
                c.next_seq = 0;
            }
            8 => self.send_new(client, 1, 0, self.clock_ms - (b % 100_000) as i64),
            9 | 10 => self.commit(small as usize + 1),
            11 => self.change_leader(b as usize),
            12 => self.clock_ms += (b % 3000) as i64,
            _ => self.send(ProducerBatch::plain(small + 1), self.clock_ms),
        }
    }

    fn committed(&self) -> &[Entry] {
        &self.log[..self.committed]
    }
}

/// No batch twice; each producer's batches in sequence within an epoch, a new epoch from 0.
fn check_exactly_once_in_order(entries: &[Entry]) -> Result<(), TestCaseError> {
    let mut seen = HashSet::new();
    let mut last = std::collections::HashMap::new();
    for entry in entries {
        let Entry::Data { batch: b, .. } = entry else { continue };
        if !b.is_idempotent() {
            continue;
        }
        prop_assert!(seen.insert((b.producer_id, b.epoch, b.first_seq, b.last_seq())), "appended twice: {:?}", b);
        if let Some((epoch, last_seq)) = last.insert(b.producer_id, (b.epoch, b.last_seq())) {
            if epoch == b.epoch {
                prop_assert_eq!(b.first_seq, sequence_after(last_seq, 1), "out of order: {:?}", b);
            } else {
                prop_assert!(epoch < b.epoch && b.first_seq == 0, "bad epoch change to {:?}", b);
            }
        }
    }
    Ok(())
}

fn steps() -> impl Strategy<Value = Vec<(u8, u64, u64)>> {
    proptest::collection::vec((0u8..14, any::<u64>(), any::<u64>()), 0..200)
}

proptest! {
    #[test]
    fn a_retried_batch_is_committed_once_and_in_order(steps in steps()) {
        let mut sim = Sim::new(ProducerConfig::default());
        for step in steps {
            sim.step(step);
        }
        sim.commit(usize::MAX);
        prop_assert!(!sim.forgot);
        check_exactly_once_in_order(sim.committed())?;
    }

    #[test]
    fn snapshot_and_replay_equal_a_replica_that_never_stopped(
        steps in steps(),
        expiration_ms in 500u64..5000,
        producers_max in 1usize..6,
        cut in any::<usize>(),
        overlap in 0usize..4,
    ) {
        let config = ProducerConfig::new(expiration_ms, producers_max).unwrap();
        let mut sim = Sim::new(config);
        for step in steps {
            sim.step(step);
        }
        let entries = sim.committed();
        let mut never_stopped = ProducerTable::new(config);
        replay(&mut never_stopped, entries, 0);
        prop_assert_eq!(&never_stopped, &sim.table, "a follower applying at once agrees with the leader");
        let cut = cut % (entries.len() + 1);
        let mut before = ProducerTable::new(config);
        replay(&mut before, &entries[..cut], 0);
        let mut restored = ProducerTable::restore(before.snapshot(), config).unwrap();
        prop_assert_eq!(&restored, &before);
        replay(&mut restored, entries, cut.saturating_sub(overlap));
        prop_assert_eq!(restored, never_stopped);
    }
}
