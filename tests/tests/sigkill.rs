//! The agent SIGKILLed and started again, five times, under steady traffic (issue 16):
//! no signal handler, no clean-up, as after an OOM kill or a forced pod deletion. The
//! pinned programs and maps must carry every packet while no agent runs, and the next
//! agent must take them over without a gap.
//!
//! Kubernetes mode (the production one): weft nodes a and b, Flannel node c, a pod on
//! each. Through node a, whose agent is killed: sequenced UDP at 1,000 datagrams/s
//! each way to b (weft ↔ weft) and to c (weft ↔ Flannel), and paced TCP transfers
//! a → b and c → a whose every byte is checked. Once on the default attach path (TCX
//! here), once on clsact filters with the fast path (kernels before 6.6). After the
//! five, four more kills land while the new agent is still starting.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use weft_common::counters::Verdict;
use weft_e2e::{
    cluster::{Cluster, Kind},
    stream::{PacedTransfer, UdpReport, UdpStream},
    traffic::ping_ok,
};

const RESTARTS: usize = 5;
const UDP_RATE: u32 = 1000;
/// 4 MiB/s per transfer: a steady flow that leaves the 2-CPU machine to the agent.
const TCP_RATE: u64 = 4 << 20;
/// Traffic through each new agent before the next kill.
const SETTLE: Duration = Duration::from_secs(1);
/// After the restarts, the agent is killed again as soon as it logs each of these:
/// programs loading, maps adopted, the encap program swapped in, the pods' programs.
const KILLED_AFTER: [&str; 4] =
    ["TC programs attach through", "state=Adopted", "program=\"weft_encap\"", "program=\"weft_bridge_egress\""];

/// Waits (polling every 0.2 ms, at most 20 s) until node `i`'s agent has logged
/// `marker`; its log then. Fails if the agent ends first.
fn wait_for_log(c: &mut Cluster, i: usize, marker: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = c.agent_log(&c.nodes[i].name);
        if log.contains(marker) {
            return Ok(log);
        }
        let agent = c.nodes[i].agent.as_mut().ok_or_else(|| anyhow!("no agent"))?;
        if !agent.is_running() || Instant::now() > deadline {
            return Err(anyhow!("the agent never logged {marker:?}:\n{log}"));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Node a's drop counters (verdict name → packets), summed over hooks and CPUs.
fn drops(c: &Cluster) -> Result<Vec<(&'static str, u64)>> {
    let counters = c.node("a").maps()?.counters()?;
    Ok(counters.into_iter().filter(|(v, _)| v.is_drop()).map(|(v, n)| (Verdict::name(v), n.packets)).collect())
}

fn kill_restarts_lose_nothing(label: &str, agent_args: &[&str]) -> Result<()> {
    let mut c = Cluster::new_kube(&[("a", Kind::Weft), ("b", Kind::Weft), ("c", Kind::Flannel)])?;
    let a = c.node_index("a");
    if !agent_args.is_empty() {
        for n in ["a", "b"] {
            let i = c.node_index(n);
            c.restart_agent(i, agent_args)?;
        }
    }
    for n in ["a", "b", "c"] {
        c.add_pod(n)?;
    }
    for (from, to) in [("a", "b"), ("b", "a"), ("a", "c"), ("c", "a")] {
        ping_ok(&c.pod_on(from).ns, c.pod_on(to).ip, 2).map_err(|e| anyhow!("{from} -> {to}: {e}\n{}", c.logs()))?;
    }

    let udp_pairs = [("a", "b"), ("b", "a"), ("a", "c"), ("c", "a")];
    let mut udp = Vec::new();
    for (from, to) in udp_pairs {
        let (src, dst) = (c.pod_on(from), c.pod_on(to));
        udp.push(UdpStream::start(&src.ns, &dst.ns, dst.ip, UDP_RATE)?);
    }
    let tcp_pairs = [("a", "b"), ("c", "a")];
    let mut tcp = Vec::new();
    for (from, to) in tcp_pairs {
        let (src, dst) = (c.pod_on(from), c.pod_on(to));
        tcp.push(PacedTransfer::start(&src.ns, &dst.ns, dst.ip, TCP_RATE)?);
    }
    let drops_before = drops(&c)?;
    std::thread::sleep(SETTLE);
    let mut restarts = Vec::new();
    for _ in 0..RESTARTS {
        let t = Instant::now();
        c.kill_and_restart_agent(a, agent_args)?;
        restarts.push(t.elapsed());
        std::thread::sleep(SETTLE);
    }
    // Then killed while it starts, just after each stage of its start (the log line
    // that ends the stage, polled every 0.2 ms; the next stage follows within
    // milliseconds, so where exactly the kill lands is printed), and started again.
    let mut midway = Vec::new();
    for marker in KILLED_AFTER {
        c.kill_and_spawn_agent(a, agent_args)?;
        wait_for_log(&mut c, a, marker)?;
        c.nodes[a].agent.as_mut().ok_or_else(|| anyhow!("no agent"))?.kill()?;
        midway.push((marker, c.agent_log("a").lines().last().unwrap_or_default().to_owned()));
        c.start_agent(a, agent_args)?;
        std::thread::sleep(SETTLE);
    }
    let udp: Vec<UdpReport> = udp.into_iter().map(UdpStream::finish).collect::<Result<_>>()?;
    let tcp = tcp.into_iter().map(PacedTransfer::finish).collect::<Vec<_>>();
    let drops_after = drops(&c)?;

    let ms = |d: &Duration| format!("{:.0}", d.as_secs_f64() * 1e3);
    println!("{label}: {RESTARTS} SIGKILL restarts of node a's agent, kill → dataplane up (ms): {}", {
        restarts.iter().map(ms).collect::<Vec<_>>().join(", ")
    });
    for (marker, last) in &midway {
        println!("{label}: killed starting, on {marker:?}; its last line: {last}");
    }
    for ((from, to), r) in udp_pairs.iter().zip(&udp) {
        println!("{label}: UDP {from} -> {to} at {UDP_RATE}/s: {r}");
    }
    for ((from, to), r) in tcp_pairs.iter().zip(&tcp) {
        match r {
            Ok(r) => println!("{label}: TCP {from} -> {to}: {r}"),
            Err(e) => println!("{label}: TCP {from} -> {to}: FAILED: {e:#}"),
        }
    }
    let dropped: Vec<_> = drops_after
        .iter()
        .zip(&drops_before)
        .filter(|((_, after), (_, before))| after > before)
        .map(|((name, after), (_, before))| format!("{name} {}", after - before))
        .collect();
    println!(
        "{label}: node a's drop counters meanwhile: {}",
        if dropped.is_empty() { "none".into() } else { dropped.join(", ") }
    );

    for ((from, to), r) in udp_pairs.iter().zip(&udp) {
        // Several seconds of the stream, whatever the machine's load.
        assert!(r.sent >= u64::from(UDP_RATE) * 5, "{label}: UDP {from} -> {to} ran only {r}");
        assert_eq!(r.send_errors, 0, "{label}: UDP {from} -> {to}: {r}");
        assert_eq!(r.lost, 0, "{label}: UDP {from} -> {to} lost datagrams: {r}\n{}", c.logs());
    }
    for ((from, to), r) in tcp_pairs.iter().zip(tcp) {
        let r = r.map_err(|e| anyhow!("{label}: TCP {from} -> {to}: {e:#}\n{}", c.logs()))?;
        assert!(r.bytes >= 4 * TCP_RATE, "{label}: TCP {from} -> {to} carried only {r}");
    }
    assert!(dropped.is_empty(), "{label}: node a dropped packets: {dropped:?}\n{}", c.logs());
    Ok(())
}

#[test]
fn sigkill_restarts_under_udp_and_tcp_lose_nothing_on_the_default_path() -> Result<()> {
    kill_restarts_lose_nothing("default", &[])
}

#[test]
fn sigkill_restarts_under_udp_and_tcp_lose_nothing_on_clsact_with_the_fast_path() -> Result<()> {
    kill_restarts_lose_nothing("netlink+fast-path", &["--tc-attach", "netlink", "--fast-path"])
}
