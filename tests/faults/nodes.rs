//! The `keel serve` processes under test: started in their namespaces (or on loopback),
//! killed, paused, resumed and restarted by pid. Dropping `Nodes` kills what still runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::net::{Topology, node_ip};

/// The binary under test; `KEEL_FAULTS_KEEL` overrides it (a soak runs a copy, so that
/// rebuilding meanwhile does not change the nodes it restarts).
fn keel() -> String {
    std::env::var("KEEL_FAULTS_KEEL").unwrap_or_else(|_| env!("CARGO_BIN_EXE_keel").to_string())
}
const PORT: u16 = 7000;
/// Small segments (the node shrinks its batch limit to fit, still far above the
/// workload's ~4 KB batches): each partition's log, written by one producer, seals its
/// first segment within ~15 s, so disk faults find sealed segments to damage.
pub const SEGMENT_BYTES: u64 = 2 << 20;

struct Node {
    addr: String,
    /// The namespace to run in, if any.
    ns: Option<String>,
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
    /// Started with `--join` (and `--voter`) instead of `--peers`: the node was wiped and
    /// joins the running cluster afresh. Restarted, it keeps `--join`, which a node whose
    /// data directory holds the metadata ignores.
    joins: bool,
}

pub struct Nodes {
    pub tls: PathBuf,
    peers: String,
    nodes: BTreeMap<u64, Node>,
}

impl Nodes {
    /// Makes certificates in `root` and starts one node per id.
    pub fn start(root: &Path, ids: &[u64], net: Option<&Topology>) -> Result<Nodes, String> {
        let tls = root.join("tls");
        let mut certs = Command::new(keel());
        certs.args(["certs", "--dir"]).arg(&tls);
        for id in ids {
            certs.args(["--node", &id.to_string()]);
        }
        let status = certs.stdout(Stdio::null()).status().map_err(|e| format!("keel certs: {e}"))?;
        if !status.success() {
            return Err("keel certs failed".into());
        }
        let addrs: Vec<String> = match net {
            Some(_) => ids.iter().map(|id| format!("{}:{PORT}", node_ip(*id))).collect(),
            None => free_ports(ids.len()).into_iter().map(|p| format!("127.0.0.1:{p}")).collect(),
        };
        let peers = ids.iter().zip(&addrs).map(|(id, a)| format!("{id}={a}")).collect::<Vec<_>>().join(",");
        let mut nodes = BTreeMap::new();
        for (id, addr) in ids.iter().zip(addrs) {
            let node = Node {
                addr,
                ns: net.map(|n| n.node_ns(*id)),
                dir: root.join(format!("node-{id}")),
                log: root.join(format!("node-{id}.log")),
                child: None,
                paused: false,
                joins: false,
            };
            nodes.insert(*id, node);
        }
        let mut this = Nodes { tls, peers, nodes };
        for id in ids {
            this.spawn(*id)?;
        }
        Ok(this)
    }

    fn spawn(&mut self, id: u64) -> Result<(), String> {
        let peers = self.peers.clone();
        let tls = self.tls.clone();
        let others: Vec<String> = self.nodes.iter().filter(|(o, _)| **o != id).map(|(_, n)| n.addr.clone()).collect();
        let node = self.nodes.get_mut(&id).expect("a node");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log).map_err(|e| e.to_string())?;
        let mut cmd = match &node.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, &keel()]);
                c
            }
            None => Command::new(keel()),
        };
        cmd.args(["serve", "--id", &id.to_string(), "--listen", &node.addr]);
        if node.joins {
            cmd.args(["--join", &others.join(","), "--voter"]);
        } else {
            cmd.args(["--peers", &peers]);
        }
        cmd.arg("--dir")
            .arg(&node.dir)
            .arg("--tls")
            .arg(&tls)
            .args(["--segment-bytes", &SEGMENT_BYTES.to_string()])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        // `ip netns exec` execs keel in place: the pid is keel's.
        let child = cmd.spawn().map_err(|e| format!("spawn keel serve: {e}"))?;
        if std::env::var_os("KEEL_FAULTS_TRACE").is_some() {
            println!("    started n{id} (pid {})", child.id());
        }
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    pub fn addr(&self, id: u64) -> String {
        self.nodes[&id].addr.clone()
    }

    pub fn addrs(&self) -> Vec<String> {
        self.nodes.values().map(|n| n.addr.clone()).collect()
    }

    pub fn dir(&self, id: u64) -> PathBuf {
        self.nodes[&id].dir.clone()
    }

    pub fn running(&self, id: u64) -> bool {
        self.nodes[&id].child.is_some()
    }

    pub fn paused(&self, id: u64) -> bool {
        self.nodes[&id].paused
    }

    fn signal(&self, id: u64, signal: i32) {
        if let Some(child) = &self.nodes[&id].child {
            if std::env::var_os("KEEL_FAULTS_TRACE").is_some() {
                println!("    signal {signal} to n{id} (pid {})", child.id());
            }
            // SAFETY: kill(2) on a child this harness started and has not reaped.
            unsafe {
                libc::kill(child.id() as i32, signal);
            }
        }
    }

    /// SIGSTOP: the process freezes with its sockets and files open.
    pub fn pause(&mut self, id: u64) {
        if self.running(id) && !self.paused(id) {
            self.signal(id, libc::SIGSTOP);
            self.nodes.get_mut(&id).expect("a node").paused = true;
        }
    }

    pub fn resume(&mut self, id: u64) {
        if self.paused(id) {
            self.signal(id, libc::SIGCONT);
            self.nodes.get_mut(&id).expect("a node").paused = false;
        }
    }

    /// kill -9 (a paused process dies too) and reap.
    pub fn kill(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("a node");
        if let Some(mut child) = node.child.take() {
            if std::env::var_os("KEEL_FAULTS_TRACE").is_some() {
                println!("    kill -9 n{id} (pid {})", child.id());
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused = false;
    }

    pub fn restart(&mut self, id: u64) -> Result<(), String> {
        if self.running(id) {
            return Ok(());
        }
        self.spawn(id)
    }

    /// Kills node `id`, deletes its data directory and starts it again as a new node that
    /// joins the running cluster (`--join` the others, `--voter`) under the same id and address.
    pub fn wipe_and_join(&mut self, id: u64) -> Result<(), String> {
        self.kill(id);
        let node = self.nodes.get_mut(&id).expect("a node");
        if let Err(e) = std::fs::remove_dir_all(&node.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(format!("cannot delete {}: {e}", node.dir.display()));
        }
        node.joins = true;
        self.spawn(id)
    }

    /// Whether node `id` exited by itself (it crashed); its status if so.
    pub fn exited(&mut self, id: u64) -> Option<std::process::ExitStatus> {
        let node = self.nodes.get_mut(&id).expect("a node");
        let status = node.child.as_mut()?.try_wait().ok()??;
        node.child = None;
        Some(status)
    }

    /// SIGTERM each node and wait up to `timeout` for it to exit; kill what remains.
    pub fn stop_all(&mut self, timeout: Duration) {
        for id in self.ids() {
            self.resume(id);
            self.signal(id, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// The last `lines` lines of node `id`'s log.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[&id].log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(lines).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    pub fn log_path(&self, id: u64) -> PathBuf {
        self.nodes[&id].log.clone()
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for id in self.ids() {
            self.kill(id);
        }
    }
}

/// UDP ports that were free a moment ago, distinct from each other.
fn free_ports(n: usize) -> Vec<u16> {
    let sockets: Vec<std::net::UdpSocket> =
        (0..n).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").expect("bind")).collect();
    sockets.iter().map(|s| s.local_addr().expect("addr").port()).collect()
}
