//! The fault-injection harness, in the manner of Jepsen's analyses of
//! Redpanda, Kafka and NATS: real `keel serve` processes, concurrent producers and
//! consumers, faults from a seeded schedule, every operation in a history, and a checker
//! that fails the run on a lost write, an inconsistent offset, divergent replicas, an
//! aborted read or a poll that skips. See `tests/faults/README.md`.
//!
//! ```text
//! cargo test --release --test faults                              # the CI schedule
//! cargo test --release --test faults -- --duration 30m --seed 7   # a soak
//! cargo test --release --test faults -- --check target/faults/history.jsonl
//! ```
//! Options: `--seed N` (default: random, printed), `--duration 90s|30m|1h` (of faults),
//! `--history PATH`, `--summary PATH`, `--no-netns` (process and disk faults only, on
//! loopback), `--keep` (keep the nodes' data after a passing run).

mod checker;
mod disk;
mod history;
mod nemesis;
mod net;
mod nodes;
mod run;
mod schedule;
mod workload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// The CI schedule: faults for this long, then heal, converge and check (~3 minutes in all).
const CI_DURATION: Duration = Duration::from_secs(150);

struct Args {
    seed: Option<u64>,
    duration: Duration,
    history: PathBuf,
    summary: PathBuf,
    netns: bool,
    keep: bool,
    check: Option<PathBuf>,
}

/// `target/faults`, beside the test binaries' temporary directory.
fn out_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("faults")
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number.parse().map_err(|_| format!("bad duration {text:?}: want e.g. 90s, 30m, 1h"))?;
    match unit {
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("bad duration unit in {text:?}: use s, m or h")),
    }
}

fn parse_args() -> Result<Args, String> {
    let out = out_dir();
    let mut args = Args {
        seed: None,
        duration: CI_DURATION,
        history: out.join("history.jsonl"),
        summary: out.join("summary.txt"),
        netns: true,
        keep: false,
        check: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--seed" => args.seed = Some(value()?.parse().map_err(|e| format!("--seed: {e}"))?),
            "--duration" => args.duration = parse_duration(&value()?)?,
            "--history" => args.history = PathBuf::from(value()?),
            "--summary" => args.summary = PathBuf::from(value()?),
            "--check" => args.check = Some(PathBuf::from(value()?)),
            "--no-netns" => args.netns = false,
            "--keep" => args.keep = true,
            // What `cargo test` passes to every test binary.
            "--nocapture" | "--quiet" | "-q" | "--test-threads" | "--color" => {}
            other if other.starts_with("--test-threads=") || other.starts_with("--color=") => {}
            other => return Err(format!("unknown option {other:?} (see tests/faults/README.md)")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("faults: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(path) = &args.check {
        return match history::read(path) {
            Ok(ops) => {
                let report = checker::check(&ops);
                println!("{report}");
                if report.failed() { ExitCode::FAILURE } else { ExitCode::SUCCESS }
            }
            Err(e) => {
                eprintln!("faults: {}: {e}", path.display());
                ExitCode::from(2)
            }
        };
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let out = out_dir();
    let _ = std::fs::create_dir_all(&out);
    for p in [&args.history, &args.summary] {
        if let Some(parent) = p.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
    }

    // The network: namespaces are made before any thread starts, and this thread moves
    // into the clients' namespace so the async runtime's threads are born there.
    let mut topology = None;
    let mut network_note = String::new();
    if args.netns {
        match net::unavailable() {
            Some(why) => network_note = format!("network namespaces unavailable ({why}): process and disk faults only"),
            None => {
                net::remove_stale();
                match net::Topology::create(&run::NODES) {
                    Ok(t) => match t.enter_client_namespace() {
                        Ok(()) => topology = Some(t),
                        Err(e) => network_note = format!("cannot enter the clients' namespace ({e})"),
                    },
                    Err(e) => network_note = format!("cannot build the network namespaces ({e})"),
                }
            }
        }
    } else {
        network_note = "--no-netns: process and disk faults only, on loopback".into();
    }
    if !network_note.is_empty() {
        println!("faults: {network_note}");
    }
    if topology.as_ref().is_some_and(|t| !t.nft) {
        println!("faults: nftables (nft) is not installed: no lossy or slow links");
    }
    let netns = topology.is_some();
    let nft = topology.as_ref().is_some_and(|t| t.nft);
    let schedule = schedule::generate(seed, args.duration, netns, nft, run::PARTITIONS);
    println!(
        "faults: seed {seed} (replay: cargo test --release --test faults -- --seed {seed} --duration {}s)",
        args.duration.as_secs()
    );
    print!("{schedule}");

    let dir = out.join(format!("run-{seed}"));
    let _ = std::fs::remove_dir_all(&dir);
    let options = run::Options { seed, duration: args.duration, dir: dir.clone(), history: args.history.clone() };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let outcome = runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        // Interrupted, the run is dropped: its guards kill the nodes; then the namespaces go.
        tokio::select! {
            outcome = run::run(&options, topology.as_mut(), schedule.clone()) => outcome,
            _ = tokio::signal::ctrl_c() => Err("interrupted (SIGINT)".to_string()),
            _ = term.recv() => Err("interrupted (SIGTERM)".to_string()),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(5));
    drop(topology);

    let summary = match &outcome {
        Ok(o) => format!(
            "keel fault injection: seed {seed}, {}s of faults ({} of {} windows run), {:.0}s in all{}\n{}\n\
             history: {}\nnode logs: {}\n\n{}\n",
            args.duration.as_secs(),
            o.windows_run,
            o.schedule.windows.len(),
            o.elapsed.as_secs_f64(),
            if network_note.is_empty() { String::new() } else { format!("\n{network_note}") },
            o.schedule,
            args.history.display(),
            dir.display(),
            o.report
        ),
        Err(e) => {
            format!("keel fault injection: seed {seed}: the run did not complete: {e}\nnode logs: {}\n", dir.display())
        }
    };
    let _ = std::fs::write(&args.summary, &summary);
    println!("\n{summary}\nsummary: {}", args.summary.display());
    match outcome {
        Ok(o) if !o.report.failed() => {
            if !args.keep {
                // The logs stay; the segment files (preallocated, large) go.
                for id in run::NODES {
                    let _ = std::fs::remove_dir_all(dir.join(format!("node-{id}")));
                }
            }
            ExitCode::SUCCESS
        }
        _ => ExitCode::FAILURE,
    }
}
