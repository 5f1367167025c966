//! Migration from Flannel, node by node (the README's runbook, end to end): a
//! Kubernetes-mode cluster whose nodes `a` and `b` run Flannel's vxlan backend as
//! flanneld configures a node (kernel `flannel.1`, flanneld's `--ip-masq` and forward
//! iptables rules, subnet.env, pods on `cni0` through Flannel's CNI configuration) and
//! whose node `c` already runs weft. Node `a` moves to weft while its pods keep their
//! addresses and pings run both ways between a pod on `a` and one on `b`; the test
//! measures what the switch costs in lost pings.

use std::{
    net::Ipv4Addr,
    path::Path,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, ensure};
use ipnetwork::Ipv4Network;
use weft_e2e::{
    agent,
    cluster::{Cluster, Kind, TUNNEL_MTU},
    flannel, kube,
    netns::Netns,
    traffic::{ping_ok, tcp_transfer},
    wait_for,
};

const P: &str = "flannel.alpha.coreos.com";
/// Ping interval: each lost ping stands for this much interruption.
const INTERVAL_MS: u64 = 10;
/// How long each ping runs at the interval asked for (a busy machine stretches it);
/// the switch starts [`LEAD`] in and must be done while both still run.
const PING_SECONDS: u64 = 15;
/// Pings sent: `-c`, not `-w`: with a deadline, ping exits at the first ICMP error
/// (an unreachable destination during a bad switch) and the rest would go uncounted.
const PING_COUNT: u64 = PING_SECONDS * 1000 / INTERVAL_MS;
const LEAD: Duration = Duration::from_secs(2);
/// The goal: under a second of lost pings in each direction.
const MAX_INTERRUPTION_MS: u64 = 1000;

/// A running `ping -i 0.01 -c PING_COUNT`, its output going to a file (a pipe would
/// fill and stall it).
struct Pinger {
    child: Child,
    out: std::path::PathBuf,
    what: String,
}

#[derive(Debug)]
struct Loss {
    transmitted: u64,
    received: u64,
    /// The longest run of unanswered sequence numbers, in pings.
    longest_gap: u64,
    /// ping's own "time" (first send to last), in ms.
    elapsed_ms: u64,
}

impl Loss {
    /// The time between two pings: the interval asked for, or the one ping achieved
    /// when a busy machine stretched it (whichever is longer, so the loss is not
    /// understated).
    fn interval_ms(&self) -> f64 {
        let achieved = self.elapsed_ms as f64 / (self.transmitted.max(2) - 1) as f64;
        achieved.max(INTERVAL_MS as f64)
    }

    fn lost(&self) -> u64 {
        self.transmitted - self.received
    }

    /// The interruption: lost pings × the interval between them.
    fn lost_ms(&self) -> f64 {
        self.lost() as f64 * self.interval_ms()
    }
}

impl Pinger {
    fn start(from: &Netns, to: Ipv4Addr, what: String, out: std::path::PathBuf) -> Result<Pinger> {
        let file = std::fs::File::create(&out).with_context(|| format!("creating {}", out.display()))?;
        let child = from
            .exec(&format!("ping -n -i {} -W 1 -c {PING_COUNT} {to}", INTERVAL_MS as f64 / 1000.0))
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("starting ping")?;
        Ok(Pinger { child, out, what })
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits (bounded) for ping's end and reads its statistics and sequence numbers.
    fn finish(mut self) -> Result<Loss> {
        let done = wait_for(Duration::from_secs(3 * PING_SECONDS + 10), || self.child.try_wait().ok().flatten());
        if done.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            anyhow::bail!("{}: ping did not end", self.what);
        }
        let loss = parse_ping(&std::fs::read_to_string(&self.out)?).with_context(|| format!("{}: ping output", self.what))?;
        ensure!(loss.transmitted == PING_COUNT, "{}: ping sent {} of {PING_COUNT}", self.what, loss.transmitted);
        Ok(loss)
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn parse_ping(text: &str) -> Result<Loss> {
    let stats = text.lines().find(|l| l.contains("packets transmitted")).ok_or_else(|| anyhow!("no statistics in:\n{text}"))?;
    let num = |key: &str| -> Option<u64> { stats.split(',').find(|p| p.contains(key))?.split_whitespace().next()?.parse().ok() };
    let (transmitted, received) = (num("transmitted").unwrap_or(0), num("received").unwrap_or(0));
    let elapsed_ms =
        stats.rsplit("time ").next().and_then(|t| t.trim().strip_suffix("ms")).and_then(|t| t.parse().ok()).unwrap_or(0);
    let mut seqs: Vec<u64> = text
        .lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("icmp_seq="))?.parse().ok())
        .collect();
    seqs.sort_unstable();
    seqs.dedup();
    // Sequence numbers start at 1; a gap also at the start or the end counts.
    let mut longest_gap = 0;
    let mut prev = 0;
    for s in seqs.iter().copied().chain([transmitted + 1]) {
        longest_gap = longest_gap.max(s.saturating_sub(prev + 1));
        prev = s;
    }
    ensure!(transmitted > 0, "nothing transmitted:\n{text}");
    Ok(Loss { transmitted, received, longest_gap, elapsed_ms })
}

fn iptables_save(ns: &Netns) -> Result<String> {
    ns.sh("iptables-save")
}

fn network() -> Ipv4Network {
    kube::NETWORK.parse().expect("the test network")
}

/// Flannel's CNI configuration on node `node` of `c` (host-local's state in the node's
/// own directory, where the agent's conflist will point it too).
fn flannel_conflist(c: &Cluster, node: &str) -> serde_json::Value {
    let n = c.node(node);
    flannel::cni_conflist(network(), n.pod_cidr, TUNNEL_MTU, true, &n.dir.join("ipam"))
}

/// subnet.env as flanneld writes it (pkg/subnet/config.go `WriteSubnetFile`, IPv4 only).
fn flanneld_subnet_env(pod_cidr: Ipv4Network) -> String {
    let first = pod_cidr.nth(1).expect("a /24");
    format!(
        "FLANNEL_NETWORK={}\nFLANNEL_SUBNET={first}/{}\nFLANNEL_MTU={TUNNEL_MTU}\nFLANNEL_IPMASQ=true\n",
        network(),
        pod_cidr.prefix()
    )
}

fn pod_has_address(ns: &Netns, ip: Ipv4Addr) -> bool {
    ns.ip("-4 -o addr show dev eth0").is_ok_and(|o| o.contains(&format!("inet {ip}/")))
}

/// Runs `switch` while pod `from` and the first pod on `b` ping each other; prints
/// what each direction lost and fails if either lost a second or more.
fn measure_switch(c: &mut Cluster, from: usize, to_what: &str, switch: impl FnOnce(&mut Cluster) -> Result<()>) -> Result<()> {
    let (pa, pb) = (&c.pods[from], c.pod_on("b"));
    let mut pingers = vec![
        Pinger::start(&pa.ns, pb.ip, format!("{} -> {}", pa.name, pb.name), c.dir.join(format!("ping-{to_what}-ab")))?,
        Pinger::start(&pb.ns, pa.ip, format!("{} -> {}", pb.name, pa.name), c.dir.join(format!("ping-{to_what}-ba")))?,
    ];
    std::thread::sleep(LEAD);
    let t = Instant::now();
    switch(c)?;
    let took = t.elapsed();
    for p in &mut pingers {
        ensure!(p.running(), "{}: ping ended before the switch was done ({took:?}): lengthen PING_SECONDS", p.what);
    }
    let mut report = Vec::new();
    for p in pingers {
        let what = p.what.clone();
        let loss = p.finish()?;
        println!(
            "migration to {to_what}: {what}: {}/{} answered, lost {} = {:.0} ms of interruption (pings every {:.1} ms), longest gap {} pings; the switch took {took:?}",
            loss.received,
            loss.transmitted,
            loss.lost(),
            loss.lost_ms(),
            loss.interval_ms(),
            loss.longest_gap,
        );
        report.push((what, loss));
    }
    for (what, loss) in &report {
        ensure!(
            loss.lost_ms() < MAX_INTERRUPTION_MS as f64,
            "to {to_what}: {what}: {:.0} ms of pings lost, the goal is under {MAX_INTERRUPTION_MS} ms: {loss:?}\n{}",
            loss.lost_ms(),
            c.logs()
        );
    }
    Ok(())
}

/// The switch, measured: pods on `a` keep their addresses, pings between a pod on `a`
/// and one on `b` lose under a second each way, weft takes `a`'s VtepMAC over and
/// removes `flannel.1` and flanneld's chains (saying so), peers' state stays valid,
/// bulk TCP works both ways afterwards, and a new pod on `a` gets an address no old
/// pod holds. Then the rollback, measured and checked the same way.
#[test]
fn a_flannel_node_moves_to_weft_and_back_with_its_pods_and_traffic() -> Result<()> {
    let mut c = Cluster::new_kube(&[("a", Kind::Flannel), ("b", Kind::Flannel), ("c", Kind::Weft)])?;
    let ai = c.node_index("a");
    // Two pods on a, so host-local's state there has something a new pod must avoid.
    for node in ["a", "a", "b"] {
        let conf = flannel_conflist(&c, node);
        c.add_pod_with(node, conf)?;
    }
    c.add_pod("c")?;
    std::fs::write(c.node("a").subnet_file(), flanneld_subnet_env(c.node("a").pod_cidr))?;

    // Before: Flannel's node as flanneld leaves it.
    let a = c.node("a");
    let before_env = std::fs::read_to_string(a.subnet_file())?;
    let before_data = kube::annotation(&c.control().api, "a", &format!("{P}/backend-data"));
    let before_ip = kube::annotation(&c.control().api, "a", &format!("{P}/public-ip"));
    ensure!(before_data.as_deref().is_some_and(|d| d.contains(&a.vtep_mac)), "a's annotation: {before_data:?}");
    ensure!(a.ns.ip("-br link show flannel.1")?.contains(&a.vtep_mac), "flannel.1 carries a's VtepMAC");
    let rules = iptables_save(&a.ns)?;
    for needed in ["-j FLANNEL-POSTRTG", "-j FLANNEL-FWD", ":FLANNEL-POSTRTG", ":FLANNEL-FWD", "flanneld masq"] {
        ensure!(rules.contains(needed), "flanneld's rules lack {needed}:\n{rules}");
    }
    let fdb_on_b = |c: &Cluster| c.node("b").ns.bridge("fdb show dev flannel.1").unwrap_or_default();
    let b_fdb_before = fdb_on_b(&c);
    ensure!(b_fdb_before.contains(&format!("{} dst {}", a.vtep_mac, a.underlay)), "b's FDB for a: {b_fdb_before}");
    for from in &c.pods {
        for to in c.pods.iter().filter(|p| p.node != from.node) {
            ping_ok(&from.ns, to.ip, 2).with_context(|| format!("before: {} -> {}\n{}", from.name, to.name, c.logs()))?;
        }
    }
    let ports_before = c.node("a").ns.ip("-o link show master cni0")?.lines().count();
    ensure!(ports_before == 2, "a's two pods on cni0: {}", c.node("a").ns.ip("-o link show master cni0")?);
    let old: Vec<(usize, Ipv4Addr)> = c.pods.iter().enumerate().filter(|(_, p)| p.node == "a").map(|(i, p)| (i, p.ip)).collect();

    // The switch, with pings running both ways.
    // kube-flannel.yml's args (the harness adds --ip-masq and the node's paths).
    measure_switch(&mut c, old[0].0, "weft", |c| c.switch_to_weft(ai, &["--kube-subnet-mgr"]))?;
    let log = c.agent_log("a");
    println!("migration: what the agent removed:");
    for line in log.lines().filter(|l| l.contains("Flannel's")) {
        println!("  {line}");
    }

    // After: the pods kept their addresses, Flannel's leftovers are gone and said so.
    let a = c.node("a");
    for (i, ip) in &old {
        ensure!(pod_has_address(&c.pods[*i].ns, *ip), "pod {} lost {ip}", c.pods[*i].name);
        // (No CNI CHECK: Flannel's cniVersion 0.3.1 predates it; the runtime never asks.)
    }
    ensure!(a.ns.ip("-o link show master cni0")?.lines().count() == ports_before, "a's pod veths left cni0");
    ensure!(a.ns.ip("-br link show flannel.1").is_err(), "flannel.1 still there: {}", a.ns.ip("-br link")?);
    let rules = iptables_save(&a.ns)?;
    ensure!(!rules.contains("FLANNEL"), "flanneld's iptables rules left:\n{rules}");
    for removed in [
        "removed Flannel's vxlan device flannel.1",
        "removed Flannel's iptables (nf_tables) rule `-t nat -A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG`",
        "removed Flannel's iptables (nf_tables) rule `-t filter -A FORWARD -m comment --comment \"flanneld forward\" -j FLANNEL-FWD`",
        "removed Flannel's iptables (nf_tables) chain FLANNEL-POSTRTG in table nat (6 rules)",
        "removed Flannel's iptables (nf_tables) chain FLANNEL-FWD in table filter (2 rules)",
    ] {
        ensure!(log.contains(removed), "no \"{removed}\" in the agent's log:\n{log}");
    }
    // Routes to the other nodes through weft0 only.
    let routes = a.ns.ip("route show")?;
    for peer in ["b", "c"] {
        let cidr = c.node(peer).pod_cidr;
        let via = format!("{cidr} via {} dev weft0 ", cidr.network());
        ensure!(routes.lines().any(|r| r.starts_with(&via) && r.contains("onlink")), "no weft0 route to {cidr}:\n{routes}");
    }
    ensure!(!routes.contains("flannel.1"), "routes through flannel.1 left:\n{routes}");
    // weft took a's VtepMAC over: the annotation is unchanged and b's FDB still valid.
    ensure!(
        a.ns.ip("-br link show weft0")?.contains(&a.vtep_mac),
        "weft0 lacks a's VtepMAC: {}",
        a.ns.ip("-br link show weft0")?
    );
    ensure!(kube::annotation(&c.control().api, "a", &format!("{P}/backend-data")) == before_data, "backend-data changed");
    ensure!(kube::annotation(&c.control().api, "a", &format!("{P}/public-ip")) == before_ip, "public-ip changed");
    c.sync_flannel()?;
    ensure!(fdb_on_b(&c) == b_fdb_before, "b's FDB changed: {} -> {}", b_fdb_before, fdb_on_b(&c));
    // subnet.env: weft rewrites it in flanneld's format, so it reads the same.
    ensure!(std::fs::read_to_string(a.subnet_file())? == before_env, "subnet.env changed");

    // Bulk TCP, content verified, both ways, to the Flannel node and the weft node.
    let pa = &c.pods[old[0].0];
    for peer in [c.pod_on("b"), c.pod_on("c")] {
        tcp_transfer(&pa.ns, &peer.ns, peer.ip, 32 << 20)
            .with_context(|| format!("{} -> {}\n{}", pa.name, peer.name, c.logs()))?;
        tcp_transfer(&peer.ns, &pa.ns, pa.ip, 32 << 20).with_context(|| format!("{} -> {}\n{}", peer.name, pa.name, c.logs()))?;
    }

    // A new pod on a: weft's conflist continues Flannel's host-local state.
    let conf_path = a.cni_dir().join(weft_agent::cni::CONFLIST_NAME);
    ensure!(Path::new(&conf_path).exists(), "the agent wrote no conflist");
    let cidr = a.pod_cidr;
    let new = c.add_pod("a")?;
    let new_ip = c.pods[new].ip;
    println!(
        "migration: pods made under Flannel on a: {:?}; new pod under weft: {new_ip}",
        old.iter().map(|o| o.1).collect::<Vec<_>>()
    );
    ensure!(cidr.contains(new_ip), "new pod {new_ip} outside {cidr}");
    ensure!(old.iter().all(|(_, ip)| *ip != new_ip), "new pod got {new_ip}, which a pod made under Flannel holds");
    for from in &c.pods {
        for to in c.pods.iter().filter(|p| p.node != from.node) {
            ping_ok(&from.ns, to.ip, 2).with_context(|| format!("after: {} -> {}\n{}", from.name, to.name, c.logs()))?;
        }
    }

    // And back (the README's rollback): flanneld finds flannel.1 made with a's
    // VtepMAC and keeps it, so peers' state stays valid this way round too.
    let mut uninstalled = String::new();
    measure_switch(&mut c, old[0].0, "flannel", |c| {
        uninstalled = c.switch_to_flannel(ai)?;
        Ok(())
    })?;
    println!("rollback: weft-agent uninstall printed:\n{uninstalled}");
    let a = c.node("a");
    ensure!(a.ns.ip("-br link show flannel.1")?.contains(&a.vtep_mac), "flannel.1 lacks a's VtepMAC");
    ensure!(a.ns.ip("-br link show weft0").is_err(), "weft0 left after uninstall");
    ensure!(!a.bpffs_dir.exists() || std::fs::read_dir(&a.bpffs_dir)?.next().is_none(), "pins left in {}", a.bpffs_dir.display());
    ensure!(kube::annotation(&c.control().api, "a", &format!("{P}/backend-data")) == before_data, "backend-data changed");
    ensure!(fdb_on_b(&c) == b_fdb_before, "b's FDB changed on rollback");
    ensure!(std::fs::read_to_string(a.subnet_file())? == before_env, "subnet.env not kept");
    let routes = a.ns.ip("route show")?;
    ensure!(!routes.contains("weft0") && routes.contains("dev flannel.1"), "routes after rollback:\n{routes}");
    let pa = &c.pods[old[0].0];
    for peer in [c.pod_on("b"), c.pod_on("c")] {
        tcp_transfer(&pa.ns, &peer.ns, peer.ip, 32 << 20).with_context(|| format!("rollback: {} -> {}", pa.name, peer.name))?;
        tcp_transfer(&peer.ns, &pa.ns, pa.ip, 32 << 20).with_context(|| format!("rollback: {} -> {}", peer.name, pa.name))?;
    }
    Ok(())
}

/// `--flannel-leftovers refuse`: the agent will not start on a node Flannel left, names
/// each leftover, and changes nothing (Flannel's node keeps forwarding as before).
#[test]
fn refuse_names_every_leftover_and_changes_nothing() -> Result<()> {
    let mut c = Cluster::new_kube(&[("a", Kind::Flannel), ("b", Kind::Flannel)])?;
    for node in ["a", "b"] {
        let conf = flannel_conflist(&c, node);
        c.add_pod_with(node, conf)?;
    }
    let rules_before = iptables_save(&c.node("a").ns)?;
    let (status, out) =
        agent::run_to_exit(c.agent_command(c.node_index("a"), &["--flannel-leftovers", "refuse"]), Duration::from_secs(20))?;
    ensure!(!status.success(), "the agent started on Flannel's leftovers:\n{out}");
    for named in [
        "--flannel-leftovers refuse",
        "vxlan device flannel.1 (VNI 1, port 8472)",
        "chain FLANNEL-POSTRTG in table nat",
        "chain FLANNEL-FWD in table filter",
        "-j FLANNEL-POSTRTG`",
        "-j FLANNEL-FWD`",
    ] {
        ensure!(out.contains(named), "the refusal does not name {named}:\n{out}");
    }
    println!("refusal: {}", out.lines().find(|l| l.contains("refuse")).unwrap_or_default());
    let a = c.node("a");
    ensure!(a.ns.ip("-br link show flannel.1").is_ok(), "flannel.1 was removed");
    ensure!(a.ns.ip("-br link show weft0").is_err(), "weft0 was created");
    ensure!(
        iptables_save(&a.ns)?.lines().filter(|l| l.contains("FLANNEL")).count()
            == rules_before.lines().filter(|l| l.contains("FLANNEL")).count()
    );
    ping_ok(&c.pod_on("a").ns, c.pod_on("b").ip, 2)?;
    Ok(())
}

#[test]
fn ping_statistics_and_gaps_are_read() -> Result<()> {
    let text = "64 bytes from 10.244.2.2: icmp_seq=1 ttl=62 time=0.1 ms\n\
                64 bytes from 10.244.2.2: icmp_seq=2 ttl=62 time=0.1 ms\n\
                64 bytes from 10.244.2.2: icmp_seq=6 ttl=62 time=0.1 ms\n\n\
                --- 10.244.2.2 ping statistics ---\n\
                7 packets transmitted, 3 received, 57.1429% packet loss, time 60ms\n";
    let l = parse_ping(text)?;
    assert_eq!((l.transmitted, l.received, l.longest_gap, l.elapsed_ms), (7, 3, 3, 60));
    assert_eq!(l.lost_ms(), 40.0, "4 lost at the 10 ms asked for");
    // A busy machine stretched the interval to 20 ms: the loss counts at that.
    let slow = parse_ping(&text.replace("time 60ms", "time 120ms"))?;
    assert_eq!(slow.lost_ms(), 80.0);
    Ok(())
}
