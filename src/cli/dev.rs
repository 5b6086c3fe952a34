//! `keel dev`: a local cluster on loopback in one command. Certificates are made under
//! DIR/tls if absent; node N runs as a child `keel serve` process (Kafka clients on
//! 127.0.0.1:9091+N) with its data in
//! DIR/node-N (kept between runs) and its log in DIR/node-N.log. Ctrl-C stops them all.

use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use keel::client::{Client, ClientConfig};

use super::args::DevArgs;

pub fn run(args: DevArgs) -> anyhow::Result<ExitCode> {
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let last_port = u32::from(args.port) + u32::from(args.nodes) - 1;
    let last_metrics = u32::from(args.metrics_port) + u32::from(args.nodes) - 1;
    let last_kafka = u32::from(args.kafka_port) + u32::from(args.nodes) - 1;
    if last_port > 65535 || last_metrics > 65535 || last_kafka > 65535 {
        bail!("--port/--metrics-port/--kafka-port plus --nodes runs past port 65535");
    }
    std::fs::create_dir_all(&args.dir).with_context(|| format!("cannot create {}", args.dir.display()))?;
    let tls = args.dir.join("tls");
    let ids: Vec<u64> = (1..=u64::from(args.nodes)).collect();
    if !tls.join("ca.pem").exists() {
        keel::net::certs::generate(&tls, &ids, &[], false).context("cannot make certificates")?;
        println!("made certificates in {}", tls.display());
    } else {
        let missing: Vec<u64> = ids.iter().copied().filter(|id| !tls.join(format!("node-{id}.pem")).exists()).collect();
        if !missing.is_empty() {
            keel::net::certs::generate(&tls, &missing, &[], false).context("cannot make certificates")?;
        }
    }
    let addr = |id: u64| format!("127.0.0.1:{}", u64::from(args.port) + id - 1);
    let kafka = |id: u64| format!("127.0.0.1:{}", u64::from(args.kafka_port) + id - 1);
    let peers: Vec<String> = ids.iter().map(|&id| format!("{id}={}", addr(id))).collect();
    let exe = std::env::current_exe().context("cannot find the keel executable")?;
    let mut children: Vec<(u64, Child)> = Vec::new();
    for &id in &ids {
        let log_path = args.dir.join(format!("node-{id}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let child = Command::new(&exe)
            .arg("serve")
            .args(["--id", &id.to_string()])
            .arg("--dir")
            .arg(args.dir.join(format!("node-{id}")))
            .args(["--listen", &addr(id)])
            .args(["--peers", &peers.join(",")])
            // A playground: producing to a topic that does not exist creates it.
            .arg("--auto-create-topics")
            .arg("--tls")
            .arg(&tls)
            .args(["--metrics", &format!("127.0.0.1:{}", u64::from(args.metrics_port) + id - 1)])
            .args(["--kafka", &kafka(id)])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start a node")?;
        println!(
            "node {id}: {}  kafka {}  metrics http://127.0.0.1:{}/metrics  log {}",
            addr(id),
            kafka(id),
            u64::from(args.metrics_port) + id - 1,
            log_path.display()
        );
        children.push((id, child));
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let bootstrap: Vec<String> = ids.iter().map(|&id| addr(id)).collect();
    let code = runtime.block_on(supervise(&bootstrap, &tls, &mut children));
    stop_all(&mut children);
    Ok(code)
}

async fn supervise(bootstrap: &[String], tls: &Path, children: &mut [(u64, Child)]) -> ExitCode {
    let mut config = ClientConfig::new(bootstrap.iter().cloned(), tls);
    // Each look at the leader is brief, so that the loop keeps watching the nodes and Ctrl-C.
    config.timeout = Duration::from_secs(1);
    let client = match Client::connect(config).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    let mut announced = None;
    let mut hinted = false;
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = super::signals::terminate() => {
                println!("stopping the cluster");
                return ExitCode::SUCCESS;
            }
            _ = ticker.tick() => {}
        }
        for (id, child) in children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                eprintln!("node {id} exited ({status}); see its log. Stopping the cluster.");
                return ExitCode::FAILURE;
            }
        }
        if let Ok(view) = client.status_from(&bootstrap[0]).await
            && let Some(leader) = view.leader
            && announced != Some((leader, view.term))
        {
            announced = Some((leader, view.term));
            println!("metadata leader: node {leader} (term {}) after {:.1?}", view.term, started.elapsed());
            if !hinted {
                hinted = true;
                println!("in another terminal, from this directory:");
                println!("  echo hello | keel produce   then   keel consume --from earliest");
            }
        }
    }
}

/// SIGTERM every node (a leader hands over first), then SIGKILL any still running after 10 s.
fn stop_all(children: &mut [(u64, Child)]) {
    for (_, child) in children.iter() {
        // SAFETY: kill(2) on the pid of a child this process started and has not reaped.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for (id, child) in children.iter_mut() {
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                _ => {
                    eprintln!("node {id} did not stop within 10 s; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
    }
}
