//! Architecture checks that read the source tree: the Raft core stays free of I/O, the
//! replica free of tokio and the network, QUIC stays in the files that serve or dial it,
//! and no source line is wider than 120 columns.

use std::path::{Path, PathBuf};

const LINE_COLUMNS_MAX: usize = 120;

/// What `src/raft/` must never name: I/O, wall clocks, global randomness.
const RAFT_FORBIDDEN: &[(&str, &str)] = &[
    ("tokio", "async runtime"),
    ("quinn", "network transport"),
    ("std::net", "network I/O"),
    ("std::fs", "file I/O"),
    ("std::io::stdin", "process I/O"),
    ("std::thread", "threads"),
    ("Instant", "wall clock (time arrives as tick())"),
    ("SystemTime", "wall clock (time arrives as tick())"),
    ("thread_rng", "global RNG (the caller supplies a seed)"),
    ("rand::rng()", "global RNG (the caller supplies a seed)"),
    ("OsRng", "global RNG (the caller supplies a seed)"),
    ("from_os_rng", "global RNG (the caller supplies a seed)"),
    ("from_entropy", "global RNG (the caller supplies a seed)"),
    ("getrandom", "global RNG (the caller supplies a seed)"),
];

/// What `src/replica/` must never name: it runs the same under the server and the simulator.
const REPLICA_FORBIDDEN: &[(&str, &str)] =
    &[("tokio", "async runtime"), ("quinn", "network transport"), ("std::net", "network I/O")];

/// The only files that may name quinn: `src/net/` (the transport), the server's client front
/// end and start-up, and the client library, which dials the nodes.
const QUINN_ALLOWED: &[&str] = &["src/net/", "src/server/clients.rs", "src/server/node.rs", "src/client/"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(read) = std::fs::read_dir(dir) else { return };
    for entry in read.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Violations of the no-I/O rule in one file's text; comments are ignored.
fn raft_violations(text: &str) -> Vec<String> {
    violations(text, RAFT_FORBIDDEN)
}

/// Where `text` names one of `forbidden`, outside comments.
fn violations(text: &str, forbidden: &[(&str, &str)]) -> Vec<String> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        for (needle, why) in forbidden {
            if code.contains(needle) {
                found.push(format!("line {}: `{needle}` ({why})", n + 1));
            }
        }
    }
    found
}

fn long_lines(text: &str) -> Vec<usize> {
    text.lines().enumerate().filter(|(_, l)| l.chars().count() > LINE_COLUMNS_MAX).map(|(n, _)| n + 1).collect()
}

/// Where the Rust files under `dir` name one of `forbidden`, one line per finding.
fn dir_violations(dir: &str, forbidden: &[(&str, &str)]) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(&root().join(dir), &mut files);
    assert!(!files.is_empty(), "{dir} has no Rust files: did it move?");
    let mut report = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for v in violations(&text, forbidden) {
            report.push(format!("{}: {v}", file.display()));
        }
    }
    report
}

#[test]
fn raft_core_does_no_io() {
    let report = dir_violations("src/raft", RAFT_FORBIDDEN);
    assert!(report.is_empty(), "the Raft core must stay free of I/O:\n{}", report.join("\n"));
}

#[test]
fn the_replica_knows_no_tokio_and_no_network() {
    let report = dir_violations("src/replica", REPLICA_FORBIDDEN);
    assert!(report.is_empty(), "the replica must stay free of tokio and the network:\n{}", report.join("\n"));
}

#[test]
fn only_the_transport_and_its_front_ends_know_quic() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let mut report = Vec::new();
    for file in files {
        let relative = file.strip_prefix(root()).unwrap().to_string_lossy().replace('\\', "/");
        if QUINN_ALLOWED.iter().any(|allowed| relative.starts_with(allowed)) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for v in violations(&text, &[("quinn", "QUIC")]) {
            report.push(format!("{relative}: {v}"));
        }
    }
    assert!(report.is_empty(), "only {QUINN_ALLOWED:?} may name quinn:\n{}", report.join("\n"));
}

#[test]
fn no_line_is_wider_than_120_columns() {
    let mut files = Vec::new();
    for dir in ["src", "segments", "tests", "benches", "examples"] {
        rust_files(&root().join(dir), &mut files);
    }
    let mut report = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for n in long_lines(&text) {
            report.push(format!("{}:{n}", file.display()));
        }
    }
    assert!(report.is_empty(), "lines over {LINE_COLUMNS_MAX} columns:\n{}", report.join("\n"));
}

/// The checks above must be able to fail: feed them text that breaks each rule.
#[test]
fn the_checks_catch_what_they_guard_against() {
    assert_eq!(raft_violations("use tokio::sync::mpsc;").len(), 1);
    assert_eq!(raft_violations("let now = std::time::Instant::now();").len(), 1);
    assert_eq!(raft_violations("use std::fs::File;").len(), 1);
    assert_eq!(raft_violations("let mut r = rand::rng();").len(), 1);
    assert!(raft_violations("// a comment naming tokio is fine").is_empty());
    assert_eq!(violations("let e: quinn::Endpoint;", &[("quinn", "QUIC")]).len(), 1);
    assert_eq!(long_lines(&"x".repeat(121)), vec![1]);
    assert!(long_lines(&"x".repeat(120)).is_empty());
}

/// The mutation patches (`tests/mutations/`) still apply to the code they break, so that
/// `tests/mutations/run.sh` can re-check the tests at any time.
#[test]
fn every_mutation_patch_still_applies() {
    let dir = root().join("tests/mutations");
    let mut patches: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/mutations")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "patch"))
        .collect();
    patches.sort();
    assert!(patches.len() >= 6, "mutation patches missing from {}", dir.display());
    let stale: Vec<String> = patches
        .iter()
        .filter(|p| {
            let status = std::process::Command::new("git")
                .args(["apply", "--check"])
                .arg(p)
                .current_dir(root())
                .stderr(std::process::Stdio::null())
                .status()
                .expect("git runs");
            !status.success()
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(stale.is_empty(), "these patches no longer apply; make them again against the code: {stale:?}");
}
