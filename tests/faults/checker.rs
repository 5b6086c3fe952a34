//! The checker, after Jepsen's queue checker: it reads a history and counts what went
//! wrong. Six anomalies fail a run (plus a seventh, a record that was never sent or was
//! refused yet is in the log): lost writes, inconsistent offsets, divergent replicas,
//! aborted reads, polls that skip or go back, and duplicates (a record at two offsets: the
//! producers are idempotent, so a resent batch must be appended once, whether its send
//! ended acknowledged or indeterminate). Indeterminate writes are allowed and counted.
//! Availability is reported per fault: the longest stretch without a successful produce
//! that overlaps it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use super::history::{Op, Outcome, Phase};

/// Examples kept per anomaly; the count covers all of them.
const EXAMPLES_MAX: usize = 10;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Anomalies {
    pub count: usize,
    pub examples: Vec<String>,
}

impl Anomalies {
    fn add(&mut self, example: impl FnOnce() -> String) {
        self.count += 1;
        if self.examples.len() < EXAMPLES_MAX {
            self.examples.push(example());
        }
    }
}

/// How long produce could not commit around one fault.
#[derive(Clone, Debug, PartialEq)]
pub struct Availability {
    pub fault: String,
    pub start: f64,
    pub heal: f64,
    /// The longest time without a successful produce among the stretches that overlap
    /// `start..heal` (it may run past `heal`, until produce commits again).
    pub longest_gap: f64,
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub sends: usize,
    pub sends_ok: usize,
    pub sends_failed: usize,
    pub records_acked: usize,
    pub polls: usize,
    pub polls_failed: usize,
    pub records_polled: usize,
    pub final_records: usize,
    pub faults: usize,
    pub lost: Anomalies,
    pub inconsistent: Anomalies,
    pub divergent: Anomalies,
    pub aborted: Anomalies,
    pub non_monotonic: Anomalies,
    /// Records in the log that were never sent, or whose send was known to fail.
    pub unexpected: Anomalies,
    pub duplicates: Anomalies,
    /// Sends whose outcome is unknown, and how many of their records are in the log.
    pub indeterminate: usize,
    pub indeterminate_present: usize,
    /// Node crashes, no convergence after healing, final reads that did not complete.
    pub incomplete: Anomalies,
    pub availability: Vec<Availability>,
}

impl Report {
    /// Whether the run must fail.
    pub fn failed(&self) -> bool {
        [
            &self.lost,
            &self.inconsistent,
            &self.divergent,
            &self.aborted,
            &self.non_monotonic,
            &self.unexpected,
            &self.duplicates,
        ]
        .iter()
        .any(|a| a.count > 0)
            || self.incomplete.count > 0
    }
}

/// Checks a whole history.
pub fn check(ops: &[Op]) -> Report {
    let mut r = Report::default();
    for op in ops {
        if let Op::Problem { what, .. } = op {
            r.incomplete.add(|| what.clone());
        }
    }
    let finals: BTreeMap<u64, &Vec<String>> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Final { node, ids, .. } => Some((*node, ids)),
            _ => None,
        })
        .collect();
    let Some((&first_node, &reference)) = finals.iter().next() else {
        r.incomplete.add(|| "no final read: the cluster never converged after healing".into());
        count_ops(ops, &mut r);
        return r;
    };
    r.final_records = reference.len();
    // Divergence: every final read equals the first; plus the byte-for-byte comparison.
    for (&node, &ids) in &finals {
        if let Some(at) = (0..ids.len().max(reference.len())).find(|&o| ids.get(o) != reference.get(o)) {
            r.divergent.add(|| {
                format!(
                    "node {node} holds {} records, node {first_node} {}; first difference at offset {at}: {:?} vs {:?}",
                    ids.len(),
                    reference.len(),
                    ids.get(at),
                    reference.get(at)
                )
            });
        }
    }
    for op in ops {
        if let Op::Compare { differences, .. } = op {
            for d in differences {
                r.divergent.add(|| d.clone());
            }
        }
    }
    // Inconsistent offsets: one offset, two records, anywhere.
    let mut seen: HashMap<u64, BTreeSet<&str>> = HashMap::new();
    for op in ops {
        let (offset, ids) = match op {
            Op::Poll { offset, ids, .. } => (*offset, ids),
            Op::Final { ids, .. } => (0, ids),
            _ => continue,
        };
        for (k, id) in ids.iter().enumerate() {
            seen.entry(offset + k as u64).or_default().insert(id);
        }
    }
    let mut offsets: Vec<&u64> = seen.keys().collect();
    offsets.sort_unstable();
    for offset in offsets {
        let ids = &seen[offset];
        if ids.len() > 1 {
            r.inconsistent.add(|| format!("offset {offset} holds {ids:?}"));
        }
    }
    // Where each record is in the log, by the reference final read.
    let mut at: HashMap<&str, Vec<u64>> = HashMap::new();
    for (offset, id) in reference.iter().enumerate() {
        at.entry(id).or_default().push(offset as u64);
    }
    let all_hold = |offset: u64, id: &str| finals.values().all(|ids| ids.get(offset as usize).is_some_and(|x| x == id));
    // Writes: lost, unexpected, indeterminate.
    let mut sent: BTreeSet<&str> = BTreeSet::new();
    for op in ops {
        let Op::Send { ids, outcome, .. } = op else { continue };
        sent.extend(ids.iter().map(String::as_str));
        match outcome {
            Outcome::Ok { offset } => {
                for (k, id) in ids.iter().enumerate() {
                    let want = offset + k as u64;
                    if !all_hold(want, id) {
                        let held = at.get(id.as_str());
                        r.lost
                            .add(|| format!("{id} acknowledged at offset {want}; the final log holds it at {held:?}"));
                    }
                }
            }
            Outcome::Fail { error } => {
                for id in ids.iter().filter(|id| at.contains_key(id.as_str())) {
                    r.unexpected.add(|| format!("{id} is at {:?}, but its send failed: {error}", at[id.as_str()]));
                }
            }
            Outcome::Unknown { .. } => {
                r.indeterminate += 1;
                r.indeterminate_present += usize::from(ids.iter().any(|id| at.contains_key(id.as_str())));
            }
        }
    }
    for (id, offsets) in &at {
        if !sent.contains(id) {
            r.unexpected.add(|| format!("{id} is at {offsets:?} but was never sent"));
        }
        for extra in offsets.iter().skip(1) {
            r.duplicates.add(|| format!("{id} at {} and again at {extra}", offsets[0]));
        }
    }
    // Reads: aborted (seen, then not in the final log there) and skipping or backwards polls.
    let mut next: BTreeMap<u32, u64> = BTreeMap::new();
    let mut aborted: BTreeSet<(u64, &str)> = BTreeSet::new();
    for op in ops {
        let Op::Poll { consumer, node, offset, ids, .. } = op else { continue };
        let expected = next.entry(*consumer).or_insert(0);
        if *offset != *expected {
            r.non_monotonic.add(|| format!("consumer {consumer} (node {node}) read offset {offset} after {expected}"));
        }
        *expected = offset + ids.len() as u64;
        for (k, id) in ids.iter().enumerate() {
            let o = offset + k as u64;
            if !all_hold(o, id) && aborted.insert((o, id)) {
                let held = at.get(id.as_str());
                r.aborted.add(|| format!("consumer {consumer} read {id} at {o}; the final log holds it at {held:?}"));
            }
        }
    }
    count_ops(ops, &mut r);
    r.availability = availability(ops);
    r
}

fn count_ops(ops: &[Op], r: &mut Report) {
    for op in ops {
        match op {
            Op::Send { ids, outcome, .. } => {
                r.sends += 1;
                match outcome {
                    Outcome::Ok { .. } => {
                        r.sends_ok += 1;
                        r.records_acked += ids.len();
                    }
                    Outcome::Fail { .. } => r.sends_failed += 1,
                    Outcome::Unknown { .. } => {}
                }
            }
            Op::Poll { ids, .. } => {
                r.polls += 1;
                r.records_polled += ids.len();
            }
            Op::PollFailed { .. } => r.polls_failed += 1,
            Op::Fault { phase: Phase::Start, .. } => r.faults += 1,
            _ => {}
        }
    }
}

/// Per fault: the longest stretch without a successful produce that overlaps it.
fn availability(ops: &[Op]) -> Vec<Availability> {
    let mut acks: Vec<f64> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Send { outcome: Outcome::Ok { .. }, done, .. } => Some(*done),
            _ => None,
        })
        .collect();
    acks.sort_by(f64::total_cmp);
    let end = ops.iter().map(Op::time).fold(0.0, f64::max);
    let mut out = Vec::new();
    let mut open: Vec<(String, f64)> = Vec::new();
    for op in ops {
        let Op::Fault { t, phase, name, .. } = op else { continue };
        match phase {
            Phase::Start => open.push((name.clone(), *t)),
            Phase::Heal => {
                if let Some(k) = open.iter().position(|(n, _)| n == name) {
                    let (fault, start) = open.remove(k);
                    out.push(Availability { fault, start, heal: *t, longest_gap: longest_gap(&acks, start, *t, end) });
                }
            }
        }
    }
    out
}

/// The longest interval between consecutive acks (or the run's end) that overlaps `from..to`.
fn longest_gap(acks: &[f64], from: f64, to: f64, end: f64) -> f64 {
    let first = acks.partition_point(|a| *a < from);
    let before = first.checked_sub(1).map_or(0.0, |k| acks[k]);
    let mut longest: f64 = 0.0;
    let mut prev = before;
    for &a in &acks[first..] {
        longest = longest.max(a - prev);
        prev = a;
        if a > to {
            return longest;
        }
    }
    longest.max(end - prev)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "operations: {} sends ({} ok, {} failed, {} indeterminate), {} records acknowledged; \
             {} polls ({} failed), {} records polled; {} records in the final log; {} faults",
            self.sends,
            self.sends_ok,
            self.sends_failed,
            self.indeterminate,
            self.records_acked,
            self.polls,
            self.polls_failed,
            self.records_polled,
            self.final_records,
            self.faults
        )?;
        let rows = [
            ("lost writes", &self.lost, true),
            ("inconsistent offsets", &self.inconsistent, true),
            ("divergent replicas", &self.divergent, true),
            ("aborted reads", &self.aborted, true),
            ("non-monotonic or skipping polls", &self.non_monotonic, true),
            ("unexpected records (never sent, or refused)", &self.unexpected, true),
            ("crashes, no convergence, incomplete reads", &self.incomplete, true),
            ("duplicates (a record at two offsets)", &self.duplicates, true),
        ];
        for (name, a, fails) in rows {
            let mark = if fails && a.count > 0 { "FAIL" } else { "ok" };
            writeln!(f, "  {:<46} {:>8}  {mark}", name, a.count)?;
            for e in &a.examples {
                writeln!(f, "      {e}")?;
            }
        }
        writeln!(
            f,
            "  {:<46} {:>8}  ok ({} of them in the log)",
            "indeterminate writes (allowed)", self.indeterminate, self.indeterminate_present
        )?;
        writeln!(f, "availability (longest stretch without a committed produce, per fault):")?;
        for a in &self.availability {
            writeln!(f, "  {:>8.1}s {:>6.1}s held  {:>6.2}s  {}", a.start, a.heal - a.start, a.longest_gap, a.fault)?;
        }
        write!(f, "verdict: {}", if self.failed() { "FAIL" } else { "PASS" })
    }
}
