//! Random sequences of append / sync / truncate / drop / reset / reopen against an
//! in-memory model: every read, lookup and bound must match the model.

use proptest::prelude::*;
use segments::{Entry, Log, LogStart};

use crate::common::*;

const PAYLOAD_MAX: usize = 700;

#[derive(Clone, Debug)]
enum Op {
    Append {
        count: u8,
        new_term: bool,
    },
    Sync,
    /// Truncate this many entries from the end (clamped to the start).
    Truncate {
        back: u8,
    },
    /// Drop before a point this far (in 1/256ths) into the log.
    DropBefore {
        at: u8,
    },
    /// Reset to a start this far past the end.
    Reset {
        ahead: u8,
    },
    /// Close and open again; with `drop_indexes`, delete every index file in between.
    Reopen {
        drop_indexes: bool,
    },
    Read {
        at: u8,
        budget: u16,
    },
    Locate {
        at: u16,
    },
    /// Find the first entry at or after a timestamp this far (mod the span) into the log.
    LocateTime {
        at: u16,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u8..25, any::<bool>()).prop_map(|(count, new_term)| Op::Append { count, new_term }),
        2 => Just(Op::Sync),
        2 => (0u8..40).prop_map(|back| Op::Truncate { back }),
        1 => any::<u8>().prop_map(|at| Op::DropBefore { at }),
        1 => (0u8..5).prop_map(|ahead| Op::Reset { ahead }),
        2 => any::<bool>().prop_map(|drop_indexes| Op::Reopen { drop_indexes }),
        3 => (any::<u8>(), any::<u16>()).prop_map(|(at, budget)| Op::Read { at, budget }),
        2 => any::<u16>().prop_map(|at| Op::Locate { at }),
        3 => any::<u16>().prop_map(|at| Op::LocateTime { at }),
    ]
}

struct Model {
    start: LogStart,
    entries: Vec<Entry>,
    term: u64,
}

impl Model {
    fn last(&self) -> u64 {
        self.start.index - 1 + self.entries.len() as u64
    }

    fn next_offset(&self) -> u64 {
        self.entries.last().map_or(self.start.offset, Entry::next_offset)
    }

    fn term_of(&self, index: u64) -> u64 {
        if index + 1 == self.start.index {
            self.start.prev_term
        } else {
            self.entries[(index - self.start.index) as usize].term()
        }
    }

    /// Index `frac`/256 of the way into the log.
    fn point(&self, frac: u64) -> u64 {
        self.start.index + (self.entries.len() as u64 + 1) * frac / 256
    }
}

fn check_bounds(log: &Log, m: &Model) {
    assert_eq!(log.log_start(), m.start);
    assert_eq!((log.first_index(), log.last_index()), (m.start.index, m.last()));
    assert_eq!((log.start_offset(), log.next_offset()), (m.start.offset, m.next_offset()));
    assert_eq!(log.term(m.start.index - 1), Some(m.start.prev_term));
    assert_eq!(log.term(m.last()), Some(m.term_of(m.last())));
    assert!(log.synced_index() <= log.last_index());
}

fn apply(log: &mut Log, m: &mut Model, op: &Op, dir: &std::path::Path) {
    match *op {
        Op::Append { count, new_term } => {
            m.term += u64::from(new_term);
            let added = append_made(log, u64::from(count), m.term, PAYLOAD_MAX);
            m.entries.extend(added);
        }
        Op::Sync => {
            log.sync().unwrap();
            assert_eq!(log.synced_index(), m.last());
        }
        Op::Truncate { back } => {
            let index = m.last().saturating_sub(u64::from(back)).max(m.start.index - 1);
            log.truncate_after(index).unwrap();
            m.entries.truncate((index + 1 - m.start.index) as usize);
            assert!(log.synced_index() <= index);
        }
        Op::DropBefore { at } => {
            let index = m.point(u64::from(at));
            let old_first = m.start.index;
            log.drop_before(index).unwrap();
            let first = log.first_index();
            assert!(first >= old_first && first <= index.max(old_first) && first <= m.last() + 1, "drop to {first}");
            let gone = (first - old_first) as usize;
            m.start = LogStart {
                index: first,
                prev_term: m.term_of(first - 1),
                offset: m.entries.get(gone).map_or(m.next_offset(), Entry::base_offset),
            };
            m.entries.drain(..gone);
        }
        Op::Reset { ahead } => {
            let start =
                LogStart { index: m.last() + 1 + u64::from(ahead), prev_term: m.term, offset: m.next_offset() + 3 };
            log.reset(start).unwrap();
            m.start = start;
            m.entries.clear();
        }
        Op::Reopen { drop_indexes } => {
            let config = *log.config();
            // Swap in a throwaway log first: the directory is locked while `log` lives.
            let scratch = fast_tempdir();
            drop(std::mem::replace(log, open(scratch.path(), config).0));
            if drop_indexes {
                for path in std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()) {
                    if path.extension().is_some_and(|x| x == "idx") {
                        std::fs::remove_file(path).unwrap();
                    }
                }
            }
            let (reopened, report) = open(dir, config);
            *log = reopened;
            assert!(report.is_clean(), "a process that did not crash loses nothing: {report}");
            assert_eq!(log.synced_index(), m.last(), "open makes what it found durable");
            assert_eq!(read_all(log), m.entries);
        }
        Op::Read { at, budget } => {
            let from = m.point(u64::from(at));
            let mut out = Vec::new();
            log.read(from, usize::from(budget), &mut out).unwrap();
            let want = &m.entries[(from - m.start.index) as usize..];
            assert_eq!(out[..], want[..out.len()]);
            assert_eq!(out.is_empty(), want.is_empty());
            let bytes: usize = out.iter().map(Entry::encoded_len).sum();
            assert!(out.len() <= 1 || bytes <= usize::from(budget));
            assert!(out.len() == want.len() || bytes + want[out.len()].encoded_len() > usize::from(budget));
        }
        Op::Locate { at } => {
            let span = m.next_offset() - m.start.offset + 2;
            let offset = m.start.offset + u64::from(at) % span;
            let want =
                m.entries.iter().find(|e| e.base_offset() <= offset && offset < e.next_offset()).map(Entry::index);
            assert_eq!(log.locate_offset(offset).unwrap(), want, "offset {offset}");
        }
        Op::LocateTime { at } => {
            // The linear scan that defines the answer: the first entry whose timestamp is >= T.
            let span = m.entries.iter().filter_map(timestamp).max().unwrap_or(0) + 3;
            let target = u64::from(at) % span;
            let want = m.entries.iter().find(|e| timestamp(e).is_some_and(|t| t >= target)).map(Entry::index);
            assert_eq!(log.locate_timestamp(target).unwrap(), want, "timestamp {target}");
        }
    }
    check_bounds(log, m);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_log_behaves_like_a_vector(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = fast_tempdir();
        let (mut log, _) = open(dir.path(), small_config());
        let mut m = Model { start: LogStart::default(), entries: Vec::new(), term: 1 };
        for op in &ops {
            apply(&mut log, &mut m, op, dir.path());
        }
        assert_eq!(check_consistent(&log), m.entries);
    }
}
