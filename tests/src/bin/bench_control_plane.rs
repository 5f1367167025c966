//! Control-plane scale: one weft agent against the test API server holding thousands
//! of Nodes (annotated as Flannel/weft nodes publish them). Prints
//! - time from the agent's start to a fully programmed node (every tunnel entry and
//!   every route via weft0),
//! - time from a single Node creation to its tunnel entry (repeated; p50 and max),
//! - the agent's resident memory once settled.
//!
//! Targets (issue 4): ≤ 2 s, ≤ 100 ms, ≤ 30 MiB. Figures only: nothing here passes or
//! fails on them. Run it through `cargo xtask bench`, which builds the release agent.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use ipnetwork::Ipv4Network;
use weft_e2e::{
    cluster::{Cluster, Kind},
    kube::{SYNTHETIC_NETWORK, synthetic_node},
    wait_for,
};

#[derive(Parser)]
#[command(about = "weft control-plane scale benchmark")]
struct Cli {
    /// Nodes in the cluster besides the one under test.
    #[arg(long, default_value_t = 5000)]
    nodes: u32,
    /// Single-node events to time.
    #[arg(long, default_value_t = 20)]
    events: u32,
}

fn create(c: &Cluster, i: u32) -> Result<Ipv4Network> {
    let (name, cidr, node) = synthetic_node(i);
    c.control().api.create_node(node).map_err(|e| anyhow!("creating {name}: {e:?}"))?;
    Ok(cidr)
}

fn routes_via_weft0(c: &Cluster) -> Result<usize> {
    Ok(c.node("a").ns.ip("route show dev weft0")?.lines().filter(|l| l.contains(" via ")).count())
}

/// A `/proc/PID/status` field in KiB (VmRSS, RssAnon, RssFile).
fn status_kib(pid: i32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no {field} for {pid}"))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if cli.nodes + cli.events > 19 * 256 + 4000 {
        bail!("at most {} nodes", 19 * 256 + 4000);
    }
    let agent_bin = weft_e2e::agent_binary();
    println!("agent: {}", agent_bin.display());
    if agent_bin.to_string_lossy().contains("/debug/") {
        println!("warning: a debug agent; `cargo xtask bench` uses the release build (WEFT_AGENT_BIN)");
    }
    // One weft node in Kubernetes mode; its network must hold all the fake podCIDRs.
    let mut c = Cluster::new_kube(&[("a", Kind::Weft)])?;
    let cp = c.control();
    std::fs::write(&cp.net_conf, format!(r#"{{"Network":"{SYNTHETIC_NETWORK}","Backend":{{"Type":"vxlan"}}}}"#))?;
    let a = c.node_index("a");
    c.nodes[a].agent.as_mut().expect("agent").stop()?;

    let t = Instant::now();
    for i in 0..cli.nodes {
        create(&c, i)?;
    }
    println!("created {} Nodes in the API server in {:.2} s", cli.nodes, t.elapsed().as_secs_f64());

    // Start: the agent lists everything, programs maps and routes.
    let start = Instant::now();
    c.start_agent(a, &[])?;
    let want = cli.nodes as usize;
    let mut map_done = None;
    let programmed = wait_for(Duration::from_secs(120), || {
        let tunnels = c.node("a").maps().ok()?.tunnels().ok()?.len();
        if tunnels >= want && map_done.is_none() {
            map_done = Some(start.elapsed());
        }
        (tunnels >= want && routes_via_weft0(&c).ok()? >= want).then(|| start.elapsed())
    })
    .ok_or_else(|| anyhow!("not programmed within 120 s\n{}", c.agent_log("a")))?;
    let map_done = map_done.unwrap_or(programmed);

    // Single events: one new Node at a time, timed to its tunnel entry.
    let mut latencies = Vec::new();
    for k in 0..cli.events {
        let i = cli.nodes + k;
        let t = Instant::now();
        let cidr = create(&c, i)?;
        let probe = cidr.nth(1).expect("a /24 has hosts");
        let maps = c.node("a").maps()?;
        // Polled every 0.2 ms (wait_for's 50 ms would be the resolution otherwise).
        let seen = loop {
            if maps.tunnel_for(probe).is_some() {
                break Some(t.elapsed());
            }
            if t.elapsed() > Duration::from_secs(10) {
                break None;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        .with_context(|| format!("node {i}'s entry never appeared"))?;
        latencies.push(seen);
    }
    latencies.sort();
    let p50 = latencies[latencies.len() / 2];
    let max = *latencies.last().expect("events > 0");

    std::thread::sleep(Duration::from_secs(2));
    let pid = c.nodes[a].agent.as_ref().and_then(|p| p.pid()).ok_or_else(|| anyhow!("agent not running"))?;
    let rss = status_kib(pid.as_raw(), "VmRSS")?;
    let (anon, file) = (status_kib(pid.as_raw(), "RssAnon")?, status_kib(pid.as_raw(), "RssFile")?);

    println!("\ncontrol plane, {} Nodes (one weft agent, test API server):", cli.nodes);
    println!("  {:<44} {:>10}   target", "metric", "measured");
    println!("  {:<44} {:>8.0} ms   ≤ 2000 ms", "start → tunnel map complete", map_done.as_secs_f64() * 1e3);
    println!("  {:<44} {:>8.0} ms   ≤ 2000 ms", "start → map and routes complete", programmed.as_secs_f64() * 1e3);
    println!(
        "  {:<44} {:>8.1} ms   ≤ 100 ms (max {:.1} ms over {})",
        "Node event → tunnel entry (p50)",
        p50.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        cli.events
    );
    println!(
        "  {:<44} {:>7.1} MiB   ≤ 30 MiB (heap and stacks {:.1}, mapped files {:.1})",
        "agent RSS (VmRSS)",
        rss as f64 / 1024.0,
        anon as f64 / 1024.0,
        file as f64 / 1024.0
    );
    Ok(())
}
