//! The network under test: each node in its own network namespace, the harness's
//! clients in another, all joined through a router namespace by veth pairs. The harness
//! creates and removes all of it (names carry its pid). Faults are routing and filtering
//! in the router: partitions are policy-routing blackholes (iproute2 only); loss is an
//! nftables rule dropping a random share of a link's packets; a slow or reordering link
//! sends a random share of packets to a node through a narrow HTB class (a queue that
//! delays them behind each other while the rest overtake). `tc netem` would be the usual
//! tool, but this machine's kernel is built without it (CONFIG_NET_SCH_NETEM unset).
//!
//! Addresses: node `i` is 10.77.i.2 behind the router's 10.77.i.1; the clients are
//! 10.77.200.2. Nothing is added to the root namespace, so runs in parallel do not meet.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::process::Command;

/// Prefix of every namespace this harness creates: `keelf<pid>r`, `keelf<pid>c`, `keelf<pid>n<i>`.
pub const PREFIX: &str = "keelf";
const CLIENT_NET: u8 = 200;
/// Policy-routing priorities of partition rules start here.
const RULE_PRIORITY_BASE: u32 = 1000;
/// The narrow class that slows (and, for a share of packets, reorders) a link.
const SLOW_RATE: &str = "4mbit";
const SLOW_QUEUE_PACKETS: &str = "100";

/// What the network does to traffic between nodes right now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetState {
    /// Directed (from, to) pairs of nodes whose packets are dropped.
    pub blocked: BTreeSet<(u64, u64)>,
    /// (from, to) → percent of packets dropped.
    pub loss: BTreeMap<(u64, u64), u32>,
    /// node → percent of the packets to and from it sent through the slow class.
    pub slow: BTreeMap<u64, u32>,
}

pub struct Topology {
    tag: String,
    /// nftables is installed: loss and slow links are possible.
    pub nft: bool,
    namespaces: Vec<String>,
    rules: Vec<u32>,
    filtered: bool,
}

/// Runs a command; its stderr on failure.
pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program).args(args).output().map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

pub fn node_ip(id: u64) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, id as u8, 2)
}

/// Why namespaces cannot be used here, if they cannot.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root".into());
    }
    run("ip", &["-V"]).err().map(|e| format!("iproute2 is missing ({e}); install it (apt-get install iproute2)"))
}

/// Removes what earlier runs killed before their clean-up left behind: namespaces whose
/// harness process is gone (their processes are killed by pid first).
pub fn remove_stale() {
    let Ok(list) = run("ip", &["netns", "list"]) else { return };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix(PREFIX) else { continue };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if pid.is_empty() || std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        eprintln!("removing namespace {name} left by process {pid}, which is gone");
        kill_all_in(name);
        let _ = run("ip", &["netns", "del", name]);
    }
}

/// Kills (by pid) every process still inside namespace `ns`.
fn kill_all_in(ns: &str) {
    let Ok(pids) = run("ip", &["netns", "pids", ns]) else { return };
    let me = std::process::id() as i32;
    for pid in pids.lines().filter_map(|l| l.trim().parse::<i32>().ok()).filter(|p| *p != me) {
        // SAFETY: kill(2) on a pid listed in a namespace this harness created.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

impl Topology {
    pub fn create(nodes: &[u64]) -> Result<Topology, String> {
        let tag = format!("{PREFIX}{}", std::process::id());
        let mut t = Topology {
            tag,
            nft: run("nft", &["--version"]).is_ok(),
            namespaces: Vec::new(),
            rules: Vec::new(),
            filtered: false,
        };
        let router = t.router();
        t.add_namespace(&router)?;
        t.exec(&router, "sh", &["-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])?;
        for &id in nodes {
            let ns = t.node_ns(id);
            t.link(&ns, &format!("n{id}"), id as u8)?;
            if t.nft {
                // The slow class for this link; nftables picks which packets take it.
                let dev = format!("n{id}");
                let tc = |args: &[&str]| {
                    let mut all = vec!["-n", router.as_str()];
                    all.extend_from_slice(args);
                    run("tc", &all)
                };
                tc(&["qdisc", "add", "dev", &dev, "root", "handle", "1:", "htb", "default", "10"])?;
                tc(&["class", "add", "dev", &dev, "parent", "1:", "classid", "1:10", "htb", "rate", "10gbit"])?;
                let slow = ["class", "add", "dev", &dev, "parent", "1:", "classid", "1:20", "htb", "rate", SLOW_RATE];
                tc(&slow)?;
                tc(&[
                    "qdisc",
                    "add",
                    "dev",
                    &dev,
                    "parent",
                    "1:20",
                    "handle",
                    "20:",
                    "pfifo",
                    "limit",
                    SLOW_QUEUE_PACKETS,
                ])?;
            }
        }
        let client = t.client_ns();
        t.link(&client, "c", CLIENT_NET)?;
        Ok(t)
    }

    fn router(&self) -> String {
        format!("{}r", self.tag)
    }

    pub fn node_ns(&self, id: u64) -> String {
        format!("{}n{id}", self.tag)
    }

    pub fn client_ns(&self) -> String {
        format!("{}c", self.tag)
    }

    fn add_namespace(&mut self, name: &str) -> Result<(), String> {
        run("ip", &["netns", "add", name])?;
        self.namespaces.push(name.to_string());
        run("ip", &["-n", name, "link", "set", "lo", "up"]).map(drop)
    }

    /// Namespace `ns` behind router port `port` on subnet 10.77.`net`.0/24.
    fn link(&mut self, ns: &str, port: &str, net: u8) -> Result<(), String> {
        self.add_namespace(ns)?;
        let router = self.router();
        let ip = |args: &[&str]| run("ip", args).map(drop);
        ip(&["link", "add", "name", port, "netns", &router, "type", "veth", "peer", "name", "eth0", "netns", ns])?;
        ip(&["-n", &router, "addr", "add", &format!("10.77.{net}.1/24"), "dev", port])?;
        ip(&["-n", &router, "link", "set", port, "up"])?;
        ip(&["-n", ns, "addr", "add", &format!("10.77.{net}.2/24"), "dev", "eth0"])?;
        ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", ns, "route", "add", "default", "via", &format!("10.77.{net}.1")])
    }

    fn exec(&self, ns: &str, program: &str, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["netns", "exec", ns, program];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Moves the calling thread into the clients' namespace. Call it before any other
    /// thread starts (threads inherit it): the async runtime and its sockets live there.
    pub fn enter_client_namespace(&self) -> Result<(), String> {
        use std::os::fd::AsRawFd;
        let path = format!("/var/run/netns/{}", self.client_ns());
        let file = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
        // SAFETY: setns(2) with a namespace file this harness created.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(format!("setns {path}: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Makes the network behave as `state` says, replacing what was in force.
    pub fn set(&mut self, state: &NetState) -> Result<(), String> {
        let router = self.router();
        for priority in std::mem::take(&mut self.rules) {
            run("ip", &["-n", &router, "rule", "del", "priority", &priority.to_string()])?;
        }
        for (k, (from, to)) in state.blocked.iter().enumerate() {
            let priority = RULE_PRIORITY_BASE + k as u32;
            let (from, to) = (node_ip(*from).to_string(), node_ip(*to).to_string());
            let p = priority.to_string();
            run("ip", &["-n", &router, "rule", "add", "from", &from, "to", &to, "blackhole", "priority", &p])?;
            self.rules.push(priority);
        }
        let filtering = !state.loss.is_empty() || !state.slow.is_empty();
        if !self.nft {
            return if filtering { Err("nftables is not installed: no loss or slow links".into()) } else { Ok(()) };
        }
        if filtering || self.filtered {
            let mut rules = String::new();
            // `numgen random mod 100 < p` picks p% of the packets (nothing for 100%: all).
            let share = |percent: u32| match percent {
                100.. => String::new(),
                p => format!("numgen random mod 100 < {p} "),
            };
            for ((from, to), percent) in &state.loss {
                let (from, to) = (node_ip(*from), node_ip(*to));
                rules += &format!("    ip saddr {from} ip daddr {to} {}drop\n", share(*percent));
            }
            for (node, percent) in &state.slow {
                let ip = node_ip(*node);
                for way in ["saddr", "daddr"] {
                    rules += &format!("    ip {way} {ip} {}meta priority set 1:20\n", share(*percent));
                }
            }
            let script = format!(
                "flush ruleset\ntable inet keelfaults {{\n  chain faults {{\n    \
                 type filter hook forward priority 0; policy accept;\n{rules}  }}\n}}\n"
            );
            nft(&router, &script)?;
            self.filtered = filtering;
        }
        Ok(())
    }
}

fn nft(ns: &str, script: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft: {e}"))?;
    child.stdin.take().expect("stdin").write_all(script.as_bytes()).map_err(|e| format!("nft: {e}"))?;
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if out.status.success() { Ok(()) } else { Err(format!("nft: {}", String::from_utf8_lossy(&out.stderr))) }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            kill_all_in(ns);
            if let Err(e) = run("ip", &["netns", "del", ns]) {
                eprintln!("could not remove namespace {ns}: {e}");
            }
        }
    }
}
