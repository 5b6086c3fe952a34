//! The simulator's state machine, for seeds that snapshot: a running hash of every entry
//! applied (index, term, payload) and the last few data payloads, so that a snapshot
//! spans several chunks. Two nodes that applied the same entries hold the same hash.

use bytes::{BufMut, Bytes};
use keel::raft::{Entry, kind};
use std::collections::VecDeque;

/// Data payloads kept in the state (and so in its snapshots).
const RECENT_MAX: usize = 16;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateMachine {
    pub applied: u64,
    pub hash: u64,
    recent: VecDeque<Bytes>,
}

/// FNV-1a, 64 bits, continuing from `hash`.
fn fnv(mut hash: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

impl StateMachine {
    /// Applies the entry after the last one applied.
    pub fn apply(&mut self, entry: &Entry) {
        assert_eq!(entry.index(), self.applied + 1, "entries are applied in order");
        let mut hash = fnv(self.hash ^ 0xcbf2_9ce4_8422_2325, &entry.index().to_le_bytes());
        hash = fnv(hash, &entry.term().to_le_bytes());
        self.hash = fnv(hash, &entry.payload());
        if entry.kind() == kind::DATA {
            if self.recent.len() == RECENT_MAX {
                self.recent.pop_front();
            }
            self.recent.push_back(entry.payload());
        }
        self.applied = entry.index();
    }

    pub fn encode(&self) -> Bytes {
        let mut out = Vec::new();
        out.put_u64_le(self.applied);
        out.put_u64_le(self.hash);
        for payload in &self.recent {
            out.put_u32_le(payload.len() as u32);
            out.put_slice(payload);
        }
        out.into()
    }

    pub fn decode(bytes: &[u8]) -> Option<StateMachine> {
        let word = |at: usize| bytes.get(at..at + 8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
        let (applied, hash) = (word(0)?, word(8)?);
        let (mut recent, mut at) = (VecDeque::new(), 16);
        while at < bytes.len() {
            let len = u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().expect("4 bytes")) as usize;
            recent.push_back(Bytes::copy_from_slice(bytes.get(at + 4..at + 4 + len)?));
            at += 4 + len;
        }
        Some(StateMachine { applied, hash, recent })
    }
}
