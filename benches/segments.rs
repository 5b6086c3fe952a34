//! Storage-engine benchmark: append throughput beside raw `write` + `fdatasync` of
//! the same bytes, the sync mark's cost, sequential reads from the maps, lookups by
//! offset, open time, and heap allocations per entry. `cargo bench --bench segments`
//! (`-- sync-mark` for the sync mark's table alone); prints a table.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fs::File;
use std::hint::black_box;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use segments::{Config, Entry, EntryMeta, Log};

/// Counts heap allocations, to show that appends and reads make none per entry.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// Bytes appended per throughput case.
const CASE_BYTES: usize = 128 << 20;
/// Each case runs raw, log, raw, log and keeps the best of each (the disk is shared).
const REPEATS: usize = 2;
/// Bytes per `append` call (one Raft batch).
const BATCH_BYTES: usize = 64 << 10;

/// Entries for one case, pre-encoded, in append batches; and the same bytes per batch for the raw writer.
fn workload(entry_bytes: usize) -> (Vec<Vec<Entry>>, Vec<Vec<u8>>) {
    let payload = vec![0xa5u8; entry_bytes - segments::HEADER_LEN];
    let per_batch = (BATCH_BYTES / entry_bytes).max(1);
    let count = CASE_BYTES / entry_bytes;
    let mut batches = Vec::new();
    let mut raw = Vec::new();
    let mut index = 1;
    while index <= count as u64 {
        let batch: Vec<Entry> = (index..(index + per_batch as u64).min(count as u64 + 1))
            .map(|i| {
                Entry::encode(EntryMeta { index: i, term: 1, kind: 0, base_offset: i - 1, record_count: 1 }, &payload)
            })
            .collect();
        index += batch.len() as u64;
        raw.push(batch.iter().flat_map(|e| e.as_bytes().iter().copied()).collect());
        batches.push(batch);
    }
    (batches, raw)
}

struct AppendRun {
    seconds: f64,
    allocations: u64,
}

fn run_log(dir: &Path, config: Config, batches: &[Vec<Entry>], sync_every: usize) -> AppendRun {
    let (mut log, _) = Log::open(dir, config).unwrap();
    let before = allocations();
    let start = Instant::now();
    let mut unsynced = 0;
    for batch in batches {
        log.append(batch).unwrap();
        unsynced += batch.iter().map(Entry::encoded_len).sum::<usize>();
        if unsynced >= sync_every {
            log.sync().unwrap();
            unsynced = 0;
        }
    }
    log.sync().unwrap();
    let seconds = start.elapsed().as_secs_f64();
    AppendRun { seconds, allocations: allocations() - before }
}

fn run_raw(path: &Path, raw: &[Vec<u8>], sync_every: usize) -> f64 {
    let mut file = File::create(path).unwrap();
    let start = Instant::now();
    let mut unsynced = 0;
    for batch in raw {
        file.write_all(batch).unwrap();
        unsynced += batch.len();
        if unsynced >= sync_every {
            file.sync_data().unwrap();
            unsynced = 0;
        }
    }
    file.sync_data().unwrap();
    start.elapsed().as_secs_f64()
}

fn mb_per_s(bytes: usize, seconds: f64) -> f64 {
    bytes as f64 / seconds / 1e6
}

fn append_table(root: &Path) {
    println!(
        "\nappend throughput, {} MiB per case, {} KiB per append call, best of {REPEATS} interleaved runs",
        CASE_BYTES >> 20,
        BATCH_BYTES >> 10
    );
    println!(
        "{:>6} {:>6} {:>8} | {:>7} {:>7} {:>6} | {:>10}",
        "entry", "sync", "entries", "log", "raw", "ratio", "allocs/ent"
    );
    for entry_bytes in [100, 1024, 16 << 10] {
        let (batches, raw) = workload(entry_bytes);
        let bytes: usize = raw.iter().map(Vec::len).sum();
        let entries: usize = batches.iter().map(Vec::len).sum();
        for sync_every in [1 << 20, 16 << 20] {
            let (mut log_best, mut raw_best, mut allocs) = (f64::MAX, f64::MAX, u64::MAX);
            for _ in 0..REPEATS {
                let raw_file = root.join("raw");
                raw_best = raw_best.min(run_raw(&raw_file, &raw, sync_every));
                std::fs::remove_file(&raw_file).unwrap();
                let dir = root.join("append");
                let run = run_log(&dir, Config::default(), &batches, sync_every);
                std::fs::remove_dir_all(&dir).unwrap();
                log_best = log_best.min(run.seconds);
                allocs = allocs.min(run.allocations);
            }
            let (ours, theirs) = (mb_per_s(bytes, log_best), mb_per_s(bytes, raw_best));
            println!(
                "{entry_bytes:>6} {:>4}Mi {entries:>8} | {ours:>7.0} {theirs:>7.0} {:>6.2} | {:>10.4}",
                sync_every >> 20,
                ours / theirs,
                allocs as f64 / entries as f64
            );
        }
    }
    println!("(MB/s; ratio = log / raw write+fdatasync of the same bytes; allocations are per sync, not per entry)");
}

/// Raw `write` + `fdatasync` as in `run_raw`, plus what the log's sync mark adds to each
/// sync: a 48-byte `pwrite` into a second file, alternating between two slots a page
/// apart, and its `fdatasync`.
fn run_raw_with_mark(path: &Path, raw: &[Vec<u8>], sync_every: usize) -> f64 {
    use std::os::unix::fs::FileExt;
    let mut file = File::create(path).unwrap();
    let mark = File::create(path.with_extension("mark")).unwrap();
    mark.set_len(8192).unwrap();
    mark.sync_all().unwrap();
    let (mut seq, record) = (0u64, [0x5au8; 48]);
    let start = Instant::now();
    let mut unsynced = 0;
    let mut sync = |file: &File| {
        file.sync_data().unwrap();
        seq += 1;
        mark.write_all_at(&record, (seq % 2) * 4096).unwrap();
        mark.sync_data().unwrap();
    };
    for batch in raw {
        file.write_all(batch).unwrap();
        unsynced += batch.len();
        if unsynced >= sync_every {
            sync(&file);
            unsynced = 0;
        }
    }
    sync(&file);
    let seconds = start.elapsed().as_secs_f64();
    std::fs::remove_file(path.with_extension("mark")).unwrap();
    seconds
}

/// The cost of the sync mark (FORMAT.md, "Sync-mark file"): one more small write and
/// fdatasync per sync. Measured as raw with the mark's write against raw without it,
/// in one run (interleaved, best of each), at group commits from small to large, with
/// the log (which writes the mark) beside them.
fn sync_mark_cost(root: &Path) {
    const BYTES: usize = 16 << 20;
    println!(
        "
sync mark cost, {} MiB of 1 KiB entries per case, best of {REPEATS} interleaved runs",
        BYTES >> 20
    );
    println!(
        "{:>8} {:>6} | {:>7} {:>9} {:>7} | {:>10} {:>8}",
        "sync", "syncs", "raw", "raw+mark", "log", "mark/raw", "log/raw"
    );
    let (batches, raw) = workload(1024);
    for sync_every in [4 << 10, 64 << 10, 1 << 20] {
        // 4 KiB per sync: 4 batches of 1 KiB entries are 4 appends, so the workload's
        // 64 KiB batches are split to match.
        let (batches, raw): (Vec<Vec<Entry>>, Vec<Vec<u8>>) = if sync_every < BATCH_BYTES {
            let per = sync_every / 1024;
            let b: Vec<Vec<Entry>> = batches.iter().flat_map(|b| b.chunks(per).map(<[Entry]>::to_vec)).collect();
            let r = b.iter().map(|b| b.iter().flat_map(|e| e.as_bytes().iter().copied()).collect()).collect();
            (b, r)
        } else {
            (batches.clone(), raw.clone())
        };
        let take = BYTES / BATCH_BYTES.min(sync_every);
        let (batches, raw) = (&batches[..take.min(batches.len())], &raw[..take.min(raw.len())]);
        let bytes: usize = raw.iter().map(Vec::len).sum();
        let (mut plain, mut marked, mut log) = (f64::MAX, f64::MAX, f64::MAX);
        for _ in 0..REPEATS {
            let raw_file = root.join("raw");
            plain = plain.min(run_raw(&raw_file, raw, sync_every));
            std::fs::remove_file(&raw_file).unwrap();
            marked = marked.min(run_raw_with_mark(&raw_file, raw, sync_every));
            std::fs::remove_file(&raw_file).unwrap();
            let dir = root.join("append");
            log = log.min(run_log(&dir, Config::default(), batches, sync_every).seconds);
            std::fs::remove_dir_all(&dir).unwrap();
        }
        let [plain, marked, log] = [plain, marked, log].map(|s| mb_per_s(bytes, s));
        println!(
            "{:>6}Ki {:>6} | {plain:>7.1} {marked:>9.1} {log:>7.1} | {:>10.2} {:>8.2}",
            sync_every >> 10,
            bytes / sync_every,
            marked / plain,
            log / plain
        );
    }
    println!(
        "(MB/s; mark/raw = raw with the mark's write and fdatasync / raw; log/raw = the log, mark included / raw)"
    );
}

/// What saving a replica's hard state costs (every replica of a group saves it at each
/// term and vote change: an election on a node hosting a thousand groups saves it a
/// thousand times): a file of two slots rewritten in place (one write, one fdatasync)
/// against a file replaced whole (write, fsync, rename, fsync the directory). Interleaved
/// in one run, median of each.
fn state_file_cost(root: &Path) {
    use segments::state_file::{self, SlotFile};
    const SAVES: usize = 200;
    let payload = [7u8; 120];
    let (mut slotted, mut replaced) = (Vec::with_capacity(SAVES), Vec::with_capacity(SAVES));
    let slots_path = root.join("slots");
    let mut slots = SlotFile::create(&slots_path, 2, 1, &payload).unwrap();
    let whole_path = root.join("whole");
    for _ in 0..SAVES {
        let started = Instant::now();
        slots.write(1, &payload).unwrap();
        slotted.push(started.elapsed().as_secs_f64());
        let started = Instant::now();
        state_file::write(&whole_path, 2, 1, &payload).unwrap();
        replaced.push(started.elapsed().as_secs_f64());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2] * 1e6
    };
    let (slotted, replaced) = (median(&mut slotted), median(&mut replaced));
    println!(
        "\nhard-state save, median of {SAVES}: two slots in place {slotted:.0} us, replaced whole {replaced:.0} us \
         (ratio {:.2})",
        slotted / replaced
    );
}

/// A timestamp function that reads the payload, as keel's (a Kafka batch's maxTimestamp)
/// does: through `as_bytes`, a borrow, where `payload()` would count a reference.
fn payload_timestamp(e: &Entry) -> Option<u64> {
    let at = segments::HEADER_LEN;
    e.as_bytes().get(at..at + 8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

/// What the time index costs appends: the smallest entries (the most calls per byte),
/// with and without `Config::timestamp`, runs interleaved.
fn timestamp_cost(root: &Path) {
    let (batches, raw) = workload(100);
    let bytes: usize = raw.iter().map(Vec::len).sum();
    let with = Config { timestamp: Some(payload_timestamp), ..Config::default() };
    let (mut without_best, mut with_best) = (f64::MAX, f64::MAX);
    for _ in 0..REPEATS {
        for (config, best) in [(Config::default(), &mut without_best), (with, &mut with_best)] {
            let dir = root.join("timestamps");
            *best = best.min(run_log(&dir, config, &batches, 16 << 20).seconds);
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
    let (without, with) = (mb_per_s(bytes, without_best), mb_per_s(bytes, with_best));
    println!(
        "
time index, 100 B entries, sync every 16 MiB: {without:.0} MB/s without a timestamp function, \
         {with:.0} MB/s with one ({:.2})",
        with / without
    );
}

fn read_and_lookup(root: &Path) {
    let dir = root.join("read");
    let (batches, _) = workload(1024);
    let (mut log, _) = Log::open(&dir, Config::default()).unwrap();
    for b in &batches {
        log.append(b).unwrap();
    }
    log.sync().unwrap();
    drop(batches);
    let mut out = Vec::with_capacity(4096);
    let mut best = f64::MAX;
    let mut bytes = 0;
    let mut allocs = 0;
    let mut entries = 0;
    for _ in 0..5 {
        let (before, start) = (allocations(), Instant::now());
        let (mut from, mut total) = (log.first_index(), 0usize);
        while from <= log.last_index() {
            out.clear();
            log.read(from, 1 << 20, &mut out).unwrap();
            total += out.iter().map(Entry::encoded_len).sum::<usize>();
            from = out.last().unwrap().index() + 1;
            entries += out.len();
        }
        best = best.min(start.elapsed().as_secs_f64());
        allocs += allocations() - before;
        bytes = black_box(total);
    }
    println!(
        "\nsequential read, 1 KiB entries, {} MiB from the maps (warm page cache), CRC checked: {:.2} GB/s; \
         allocs/entry {:.4}",
        bytes >> 20,
        bytes as f64 / best / 1e9,
        allocs as f64 / entries as f64
    );

    let lookups = 200_000u64;
    let span = log.next_offset();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let start = Instant::now();
    for _ in 0..lookups {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        black_box(log.locate_offset(x % span).unwrap());
    }
    let ns = start.elapsed().as_nanos() as f64 / lookups as f64;
    println!("random lookup by offset over {} entries: {ns:.0} ns/op", log.last_index());
    drop(log);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn open_time(root: &Path) {
    println!("\nopen time (1 MiB segments, 1 KiB entries, all synced; median of 7 opens)");
    let config = Config { segment_bytes: 1 << 20, entry_bytes_max: 4096, ..Config::default() };
    let payload = vec![1u8; 1024 - segments::HEADER_LEN];
    for sealed in [20, 200] {
        let dir = root.join(format!("open-{sealed}"));
        let (mut log, _) = Log::open(&dir, config).unwrap();
        while log.segments().len() <= sealed {
            let i = log.last_index() + 1;
            let e =
                Entry::encode(EntryMeta { index: i, term: 1, kind: 0, base_offset: i - 1, record_count: 1 }, &payload);
            log.append(&[e]).unwrap();
        }
        log.sync().unwrap();
        drop(log);
        let mut times: Vec<Duration> = (0..7)
            .map(|_| {
                let start = Instant::now();
                let (log, report) = Log::open(&dir, config).unwrap();
                let t = start.elapsed();
                black_box((log.last_index(), report.segments_read));
                t
            })
            .collect();
        times.sort();
        let (log, report) = Log::open(&dir, config).unwrap();
        println!(
            "  {:>3} sealed segments ({} entries): {:>7.2} ms (segment files read by recovery: {})",
            log.segments().len() - 1,
            log.last_index(),
            times[3].as_secs_f64() * 1e3,
            report.segments_read
        );
        drop(log);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list; there is nothing to test
    }
    let base = std::env::var_os("SEGMENTS_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let root = tempfile::tempdir_in(base).unwrap();
    println!("segments bench in {} ({} cores)", root.path().display(), std::thread::available_parallelism().unwrap());
    let start = Instant::now();
    if std::env::args().any(|a| a == "sync-mark") {
        sync_mark_cost(root.path()); // alone: `cargo bench --bench segments -- sync-mark`
        return;
    }
    if std::env::args().any(|a| a == "state-file") {
        state_file_cost(root.path()); // alone: `cargo bench --bench segments -- state-file`
        return;
    }
    append_table(root.path());
    sync_mark_cost(root.path());
    state_file_cost(root.path());
    timestamp_cost(root.path());
    read_and_lookup(root.path());
    open_time(root.path());
    println!("\ntotal {:.0} s", start.elapsed().as_secs_f64());
}
