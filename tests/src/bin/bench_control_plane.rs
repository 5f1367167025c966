//! Control-plane scale: one weft agent against the test API server holding thousands
//! of Nodes (annotated as Flannel/weft nodes publish them). Prints
//! - time from the agent's start to a fully programmed node (every tunnel entry and
//!   every route via weft0),
//! - time from a single Node creation to its tunnel entry (repeated; p50 and max),
//! - the agent's resident memory once settled.
//!
//!
//! Then the node CIDR allocator (`weft-agent allocate-node-cidrs`, one replica)
//! against its own API server holding thousands of Nodes without podCIDRs: the time
//! from its start to every Node assigned, and its resident memory then.
//!
//! Targets (issue 4): ≤ 2 s, ≤ 100 ms, ≤ 30 MiB. Figures only: nothing here passes or
//! fails on them. Run it through `cargo xtask bench`, which builds the release agent
//! (`--part allocator` runs the allocator's part alone).

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
    /// Nodes without podCIDRs for the allocator.
    #[arg(long, default_value_t = 5000)]
    allocator_nodes: u32,
    #[arg(long, value_enum, default_value_t = Part::All)]
    part: Part,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
enum Part {
    All,
    Agent,
    Allocator,
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
    if cli.part != Part::Allocator {
        agent_part(&cli)?;
    }
    if cli.part != Part::Agent {
        allocator_part(cli.allocator_nodes)?;
    }
    Ok(())
}

/// The allocator, one replica with the default timings, against an API server of its
/// own holding `count` Nodes without podCIDRs (Network 10.0.0.0/8: 65,535 /24 blocks).
fn allocator_part(count: u32) -> Result<()> {
    use weft_e2e::{
        allocator::Replica,
        apiserver::ApiServer,
        netns::{self, Netns, PREFIX},
    };
    netns::sweep_stale();
    let id = netns::run_id();
    let ns = Netns::new(format!("{PREFIX}bench-alloc-{id}"))?;
    let listener =
        ns.spawn(|| Ok(std::net::TcpListener::bind("127.0.0.1:0")?)).join().map_err(|_| anyhow!("bind thread panicked"))??;
    let api = ApiServer::serve(listener)?;
    let dir = std::env::temp_dir().join(format!("{PREFIX}bench-alloc-{id}"));
    std::fs::create_dir_all(&dir)?;
    let kubeconfig = dir.join("kubeconfig");
    api.write_kubeconfig(&kubeconfig)?;
    let net_conf = dir.join("net-conf.json");
    std::fs::write(&net_conf, r#"{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}"#)?;
    for i in 0..count {
        // The agent part's Nodes, without their podCIDRs.
        let (name, _, mut node) = synthetic_node(i);
        node["spec"] = serde_json::json!({});
        api.create_node(node).map_err(|e| anyhow!("creating {name}: {e:?}"))?;
    }
    let assigned = |api: &ApiServer| api.nodes().iter().filter(|n| n["spec"]["podCIDR"].is_string()).count();
    let start = Instant::now();
    let replica = Replica::start(&ns, "bench", &kubeconfig, &net_conf, 18080, &[], &dir)?;
    let done = wait_for(Duration::from_secs(300), || (assigned(&api) == count as usize).then(|| start.elapsed()))
        .ok_or_else(|| anyhow!("{} of {count} assigned after 300 s\n{}", assigned(&api), replica.log()))?;
    let distinct: std::collections::BTreeSet<String> =
        api.nodes().iter().filter_map(|n| n["spec"]["podCIDR"].as_str().map(String::from)).collect();
    anyhow::ensure!(distinct.len() == count as usize, "{} distinct podCIDRs for {count} Nodes", distinct.len());
    std::thread::sleep(Duration::from_secs(2));
    let pid = replica.process.pid().ok_or_else(|| anyhow!("allocator not running"))?;
    let rss = status_kib(pid.as_raw(), "VmRSS")?;
    let (anon, file) = (status_kib(pid.as_raw(), "RssAnon")?, status_kib(pid.as_raw(), "RssFile")?);
    println!("\nnode CIDR allocator, {count} Nodes without podCIDRs (one replica, test API server):");
    println!("  {:<44} {:>10}", "metric", "measured");
    println!("  {:<44} {:>8.0} ms", "start → every Node assigned", done.as_secs_f64() * 1e3);
    println!(
        "  {:<44} {:>7.1} MiB   (heap and stacks {:.1}, mapped files {:.1})",
        "allocator RSS (VmRSS)",
        rss as f64 / 1024.0,
        anon as f64 / 1024.0,
        file as f64 / 1024.0
    );
    drop(replica);
    drop(api);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn agent_part(cli: &Cli) -> Result<()> {
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
