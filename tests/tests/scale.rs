//! A cluster larger than the agents' maps (issue 16): 9,000 Nodes in the test API
//! server against agents with the default `--max-nodes` (8,192 remote nodes: the size
//! of the tunnel and peer maps). Every agent stays live and keeps forwarding between
//! the real pods; it programs the 8,192 oldest remote nodes, says why in one error
//! line, exports the excess as `weft_peers_skipped{reason="over_limit"}` and reports
//! `/readyz` 503 degraded. An agent killed and started into that cluster does the
//! same. Deleting old Nodes lets the newest in (deletions first, into a full map)
//! and, once everything fits, it is ready again.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, ensure};
use weft_e2e::{
    cluster::{Cluster, Kind},
    kube::{SYNTHETIC_NETWORK, synthetic_node},
    traffic::{http_get, ping_ok, tcp_transfer},
    wait_for,
};

/// Nodes besides the test's own two.
const SYNTHETIC: u32 = 9_000;
const MAX_NODES: usize = weft_common::maps::MAX_NODES as usize;
/// Remote nodes per agent: the other real node and every synthetic one.
const REMOTE: usize = SYNTHETIC as usize + 1;
const HEALTH: [&str; 4] = ["--healthz-ip", "127.0.0.1", "--healthz-port", "8471"];

/// The value of the sample `series` (name and labels, as exposed) in a `/metrics` response.
fn sample(response: &str, series: &str) -> Option<f64> {
    response.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// What node `n`'s agent exports as `weft_peers_skipped{reason="over_limit"}`.
fn skipped(c: &Cluster, n: &str) -> Result<Option<f64>> {
    Ok(sample(&http_get(&c.node(n).ns, 8471, "/metrics")?, r#"weft_peers_skipped{reason="over_limit"}"#))
}

/// Node `n`'s tunnel entries and routes via `weft0`.
fn programmed(c: &Cluster, n: &str) -> Result<(usize, usize)> {
    let tunnels = c.node(n).maps()?.tunnels()?.len();
    let routes = c.node(n).ns.ip("route show dev weft0")?.lines().filter(|l| l.contains(" via ")).count();
    Ok((tunnels, routes))
}

/// Waits until both agents hold `want` tunnel entries and routes; how long it took.
fn wait_programmed(c: &Cluster, want: usize, within: Duration) -> Result<Duration> {
    let t = Instant::now();
    wait_for(within, || ["a", "b"].iter().all(|n| programmed(c, n).ok() == Some((want, want))).then_some(())).ok_or_else(
        || {
            anyhow!(
                "not {want} entries and routes within {within:?}: a {:?}, b {:?}\n{}",
                programmed(c, "a"),
                programmed(c, "b"),
                c.logs()
            )
        },
    )?;
    Ok(t.elapsed())
}

/// Whether node `n` tunnels to synthetic node `i`.
fn tunnels_to(c: &Cluster, n: &str, i: u32) -> Result<bool> {
    let (_, cidr, _) = synthetic_node(i);
    Ok(c.node(n).maps()?.tunnel_for(cidr.network()).is_some())
}

fn pods_talk(c: &Cluster) -> Result<()> {
    for (from, to) in [("a", "b"), ("b", "a")] {
        let (src, dst) = (c.pod_on(from), c.pod_on(to));
        ping_ok(&src.ns, dst.ip, 2).map_err(|e| anyhow!("{from} -> {to}: {e}\n{}", c.logs()))?;
        let t = tcp_transfer(&src.ns, &dst.ns, dst.ip, 4 << 20).map_err(|e| anyhow!("{from} -> {to}: {e:#}"))?;
        println!("pod {from} -> pod {to}: 4 MiB, every byte checked, in {:.2} s", t.elapsed.as_secs_f64());
    }
    Ok(())
}

#[test]
fn nine_thousand_nodes_leave_the_agents_live_and_degraded_with_the_limit_reported() -> Result<()> {
    let test = Instant::now();
    let mut c = Cluster::new_kube(&[("a", Kind::Weft), ("b", Kind::Weft)])?;
    // A cluster network that holds the synthetic podCIDRs.
    std::fs::write(&c.control().net_conf, format!(r#"{{"Network":"{SYNTHETIC_NETWORK}","Backend":{{"Type":"vxlan"}}}}"#))?;
    for n in ["a", "b"] {
        let i = c.node_index(n);
        c.restart_agent(i, &HEALTH)?;
        c.add_pod(n)?;
    }
    pods_talk(&c)?;
    // The synthetic Nodes are younger than a and b (creationTimestamp has seconds).
    std::thread::sleep(Duration::from_millis(1100));

    // The cluster grows past the limit while the agents run.
    let t = Instant::now();
    for i in 0..SYNTHETIC {
        let (name, _, node) = synthetic_node(i);
        c.control().api.create_node(node).map_err(|e| anyhow!("creating {name}: {e:?}"))?;
    }
    let created = t.elapsed();
    let over = REMOTE - MAX_NODES;
    let took = wait_programmed(&c, MAX_NODES, Duration::from_secs(300))?;
    // The maps fill before the last Nodes are seen: the count is final once every
    // Node has been taken in.
    let counted = wait_for(Duration::from_secs(120), || {
        ["a", "b"].iter().all(|n| skipped(&c, n).ok().flatten() == Some(over as f64)).then(|| t.elapsed())
    })
    .ok_or_else(|| anyhow!("over_limit never reached {over}: a {:?}, b {:?}", skipped(&c, "a"), skipped(&c, "b")))?;
    println!(
        "{SYNTHETIC} Nodes created in {:.1} s; both agents at {MAX_NODES} tunnel entries and routes {:.1} s later, \
         counting all {over} left out {:.1} s after the first creation",
        created.as_secs_f64(),
        took.as_secs_f64(),
        counted.as_secs_f64()
    );
    let error = format!("too many nodes: {REMOTE} > --max-nodes {MAX_NODES}");
    for n in ["a", "b"] {
        let node = c.node(n);
        // The oldest: the other real node and the first synthetic ones.
        let other = c.node(if n == "a" { "b" } else { "a" });
        let maps = node.maps()?;
        ensure!(maps.tunnel_for(other.pod_cidr.network()).is_some(), "{n} lost its real peer");
        let last_in = (MAX_NODES - 2) as u32;
        ensure!(tunnels_to(&c, n, 0)? && tunnels_to(&c, n, last_in)?, "{n}: the oldest synthetic nodes are programmed");
        ensure!(!tunnels_to(&c, n, last_in + 1)? && !tunnels_to(&c, n, SYNTHETIC - 1)?, "{n}: the newest are left out");
        ensure!(maps.peers()?.len() == MAX_NODES, "{n}: {} peers", maps.peers()?.len());
        let skipped = skipped(&c, n)?;
        println!("agent {n}: weft_peers_skipped{{reason=\"over_limit\"}} {skipped:?}");
        ensure!(skipped == Some(over as f64), "{n}: {over} over the limit, exported {skipped:?}");
        let ready = http_get(&node.ns, 8471, "/readyz")?;
        ensure!(ready.starts_with("HTTP/1.1 503") && ready.contains(&format!("degraded: {error}")), "{n}: {ready}");
        ensure!(http_get(&node.ns, 8471, "/healthz")?.starts_with("HTTP/1.1 200 OK"), "{n} is live");
    }
    pods_talk(&c)?;
    // Resyncs (every 2 s here) against 8,192 entries and routes: still running, still
    // one error line each, however the 9,000 additions were batched.
    std::thread::sleep(Duration::from_secs(5));
    for n in ["a", "b"] {
        let i = c.node_index(n);
        let running = c.nodes[i].agent.as_mut().is_some_and(|a| a.is_running());
        let log = c.agent_log(n);
        ensure!(running, "agent {n} ended:\n{log}");
        let lines: Vec<&str> = log.lines().filter(|l| l.contains("too many nodes")).collect();
        let context: Vec<&str> = log.lines().filter(|l| !l.contains("tunnel entry") && !l.contains("route ")).collect();
        // Its count is the one that first went past the limit; /readyz and the metric follow.
        let said = format!("> --max-nodes {MAX_NODES}: the {MAX_NODES} oldest");
        ensure!(lines.len() == 1 && lines[0].contains(&said), "agent {n}: {lines:#?}\n{}", context.join("\n"));
        ensure!(!log.contains("ERROR resync"), "agent {n}:\n{log}");
        println!("agent {n} logged once: {}", lines[0]);
        println!("agent {n}: {} passes applied node changes", log.matches("reconciled upserted").count());
    }

    // An agent starting into the cluster (a crash, an upgrade) starts, not crash-loops:
    // the full list first, the oldest programmed, one error with the whole count.
    let a = c.node_index("a");
    let t = Instant::now();
    c.kill_and_spawn_agent(a, &HEALTH)?;
    // Longer than the harness's 20 s: a debug build programs 8,192 nodes on a busy machine.
    let started = wait_for(Duration::from_secs(120), || c.agent_log("a").contains("dataplane up").then(|| t.elapsed()))
        .ok_or_else(|| anyhow!("restarted agent a never came up:\n{}", c.agent_log("a")))?;
    let log = c.agent_log("a");
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("too many nodes")).collect();
    ensure!(lines.len() == 1 && lines[0].contains(&error), "restarted agent a: {lines:#?}");
    ensure!(programmed(&c, "a")? == (MAX_NODES, MAX_NODES), "restarted agent a: {:?}", programmed(&c, "a"));
    ensure!(tunnels_to(&c, "a", (MAX_NODES - 2) as u32)? && !tunnels_to(&c, "a", (MAX_NODES - 1) as u32)?, "the same nodes");
    ensure!(skipped(&c, "a")? == Some(over as f64), "restarted agent a exports {:?}", skipped(&c, "a"));
    println!("agent a SIGKILLed and started into {} Nodes: dataplane up in {:.1} s", SYNTHETIC + 2, started.as_secs_f64());
    pods_talk(&c)?;

    // The oldest synthetic Nodes go: the newest take their places in full maps, and
    // every node fits again.
    let t = Instant::now();
    for i in 0..over as u32 {
        c.control().api.delete_node(&synthetic_node(i).0).map_err(|e| anyhow!("deleting n{i:05}: {e:?}"))?;
    }
    let took = wait_for(Duration::from_secs(120), || {
        ["a", "b"].iter().all(|n| tunnels_to(&c, n, SYNTHETIC - 1).unwrap_or(false)).then_some(t.elapsed())
    })
    .ok_or_else(|| anyhow!("the newest node never got in\n{}", c.logs()))?;
    wait_programmed(&c, MAX_NODES, Duration::from_secs(60))?;
    println!("{over} oldest synthetic Nodes deleted: the newest programmed {:.1} s after the first deletion", took.as_secs_f64());
    for n in ["a", "b"] {
        let node = c.node(n);
        ensure!(!tunnels_to(&c, n, 0)?, "{n}: a deleted node is still programmed");
        ensure!(http_get(&node.ns, 8471, "/readyz")?.starts_with("HTTP/1.1 200 OK"), "{n} ready again");
        ensure!(skipped(&c, n)? == Some(0.0), "{n}: {:?} left out", skipped(&c, n));
        ensure!(c.agent_log(n).contains("every node fits the maps again"), "{}", c.agent_log(n));
    }
    pods_talk(&c)?;
    println!("test time {:.0} s", test.elapsed().as_secs_f64());
    Ok(())
}
