//! The checker, after Jepsen's queue checker: it reads a history and counts what went
//! wrong. Six anomalies fail a run (plus a seventh, a record that was never sent or was
//! refused yet is in the log): lost writes, inconsistent offsets, divergent replicas,
//! aborted reads, polls that skip or go back, and duplicates (a record at two offsets: the
//! producers are idempotent, so a resent batch must be appended once, whether its send
//! ended acknowledged or indeterminate). Indeterminate writes are allowed and counted.
//! Offsets are per partition, so every check runs on each partition's operations alone;
//! the report gives totals, with each example naming its partition, and a line per
//! partition. Availability is reported per fault: the longest stretch without a successful
//! produce that overlaps it, in the partition where it was longest.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use super::history::{Op, Outcome, Part, Phase};

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

    /// Adds one partition's anomalies, its examples named by the partition.
    fn absorb(&mut self, part: &Part, other: &Anomalies) {
        self.count += other.count;
        let room = EXAMPLES_MAX.saturating_sub(self.examples.len());
        self.examples.extend(other.examples.iter().take(room).map(|e| format!("{part}: {e}")));
    }
}

/// How long produce could not commit around one fault.
#[derive(Clone, Debug, PartialEq)]
pub struct Availability {
    pub fault: String,
    pub start: f64,
    pub heal: f64,
    /// The longest time without a successful produce among the stretches that overlap
    /// `start..heal` (it may run past `heal`, until produce commits again), in the
    /// partition where it was longest.
    pub longest_gap: f64,
    pub part: Option<Part>,
}

/// One partition's share of a report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionReport {
    pub part: Part,
    pub sends_ok: usize,
    pub records_acked: usize,
    pub indeterminate: usize,
    pub records_polled: usize,
    pub final_records: usize,
    /// The anomalies found in it, by name (only those counted).
    pub anomalies: Vec<(&'static str, usize)>,
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
    /// Per partition, in order.
    pub partitions: Vec<PartitionReport>,
}

impl Report {
    /// Whether the run must fail.
    pub fn failed(&self) -> bool {
        self.rows().iter().any(|(_, a)| a.count > 0)
    }

    /// The anomalies by their names in the report; each one fails the run.
    fn rows(&self) -> [(&'static str, &Anomalies); 8] {
        [
            ("lost writes", &self.lost),
            ("inconsistent offsets", &self.inconsistent),
            ("divergent replicas", &self.divergent),
            ("aborted reads", &self.aborted),
            ("non-monotonic or skipping polls", &self.non_monotonic),
            ("unexpected records (never sent, or refused)", &self.unexpected),
            ("crashes, no convergence, incomplete reads", &self.incomplete),
            ("duplicates (a record at two offsets)", &self.duplicates),
        ]
    }

    fn rows_mut(&mut self) -> [&mut Anomalies; 8] {
        [
            &mut self.lost,
            &mut self.inconsistent,
            &mut self.divergent,
            &mut self.aborted,
            &mut self.non_monotonic,
            &mut self.unexpected,
            &mut self.incomplete,
            &mut self.duplicates,
        ]
    }

    /// Adds one partition's report (made by `check_partition`) to the totals.
    fn absorb(&mut self, part: &Part, p: &Report) {
        self.sends += p.sends;
        self.sends_ok += p.sends_ok;
        self.sends_failed += p.sends_failed;
        self.records_acked += p.records_acked;
        self.polls += p.polls;
        self.polls_failed += p.polls_failed;
        self.records_polled += p.records_polled;
        self.final_records += p.final_records;
        self.indeterminate += p.indeterminate;
        self.indeterminate_present += p.indeterminate_present;
        for (mine, (_, theirs)) in self.rows_mut().into_iter().zip(p.rows()) {
            mine.absorb(part, theirs);
        }
        self.partitions.push(PartitionReport {
            part: part.clone(),
            sends_ok: p.sends_ok,
            records_acked: p.records_acked,
            indeterminate: p.indeterminate,
            records_polled: p.records_polled,
            final_records: p.final_records,
            anomalies: p.rows().iter().filter(|(_, a)| a.count > 0).map(|(n, a)| (*n, a.count)).collect(),
        });
    }
}

/// Checks a whole history: each partition's operations by themselves, then the faults.
pub fn check(ops: &[Op]) -> Report {
    let mut r = Report::default();
    for op in ops {
        match op {
            Op::Problem { what, .. } => r.incomplete.add(|| what.clone()),
            Op::Fault { phase: Phase::Start, .. } => r.faults += 1,
            _ => {}
        }
    }
    let mut by_part: BTreeMap<&Part, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        if let Some(part) = op.part() {
            by_part.entry(part).or_default().push(op);
        }
    }
    if by_part.is_empty() {
        r.incomplete.add(|| "no operation on any partition: the workload never ran".into());
    }
    for (part, ops) in &by_part {
        let p = check_partition(ops);
        r.absorb(part, &p);
    }
    r.availability = availability(ops, &by_part);
    r
}

/// Checks the operations of one partition (offsets are the partition's).
fn check_partition(ops: &[&Op]) -> Report {
    let mut r = Report::default();
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
    r
}

fn count_ops(ops: &[&Op], r: &mut Report) {
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
            _ => {}
        }
    }
}

/// Per fault: the longest stretch without a successful produce that overlaps it, in the
/// partition (of those produced to) where it was longest.
fn availability(ops: &[Op], by_part: &BTreeMap<&Part, Vec<&Op>>) -> Vec<Availability> {
    let mut acks: Vec<(&Part, Vec<f64>)> = Vec::new();
    for (part, ops) in by_part {
        if !ops.iter().any(|op| matches!(op, Op::Send { .. })) {
            continue;
        }
        let mut times: Vec<f64> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Send { outcome: Outcome::Ok { .. }, done, .. } => Some(*done),
                _ => None,
            })
            .collect();
        times.sort_by(f64::total_cmp);
        acks.push((part, times));
    }
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
                    let (longest_gap, part) = acks
                        .iter()
                        .map(|(part, times)| (longest_gap(times, start, *t, end), Some((*part).clone())))
                        .max_by(|a, b| a.0.total_cmp(&b.0))
                        .unwrap_or((0.0, None));
                    out.push(Availability { fault, start, heal: *t, longest_gap, part });
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
             {} polls ({} failed), {} records polled; {} records in the final logs; {} faults",
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
        writeln!(f, "per partition:")?;
        for p in &self.partitions {
            let verdict = if p.anomalies.is_empty() {
                "ok".to_string()
            } else {
                let named: Vec<String> = p.anomalies.iter().map(|(name, n)| format!("{name} {n}")).collect();
                format!("FAIL: {}", named.join(", "))
            };
            writeln!(
                f,
                "  {:<12} {:>6} sends ok, {:>7} records acknowledged, {:>4} indeterminate sends, {:>7} polled, \
                 {:>7} in the final log: {verdict}",
                p.part.to_string(),
                p.sends_ok,
                p.records_acked,
                p.indeterminate,
                p.records_polled,
                p.final_records
            )?;
        }
        for (name, a) in self.rows() {
            let mark = if a.count > 0 { "FAIL" } else { "ok" };
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
            let part = a.part.as_ref().map_or_else(String::new, |p| format!(" ({p})"));
            writeln!(
                f,
                "  {:>8.1}s {:>6.1}s held  {:>6.2}s{part}  {}",
                a.start,
                a.heal - a.start,
                a.longest_gap,
                a.fault
            )?;
        }
        write!(f, "verdict: {}", if self.failed() { "FAIL" } else { "PASS" })
    }
}
