//! `weft-agent allocate-node-cidrs` against the test API server: replicas as
//! processes in a namespace (nothing in the root namespace), Nodes created with
//! the real kubectl, and every claim checked from the server: the end state and
//! its history of writes (no block ever held by two Nodes at once).

use std::{
    net::{Ipv4Addr, TcpListener},
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail, ensure};
use ipnetwork::Ipv4Network;
use serde_json::{Value, json};
use weft_e2e::{
    allocator::{self, ANNOTATION, Replica, TEST_TIMINGS, check_history, pod_cidrs, wait_for_holder, within},
    apiserver::ApiServer,
    netns::{self, Netns, PREFIX, run_id},
    wait_for,
};

const LEASE: &str = "weft-node-cidr-allocator";

struct Fixture {
    api: ApiServer,
    dir: PathBuf,
    kubeconfig: PathBuf,
    net_conf: PathBuf,
    replicas: Vec<Replica>,
    // Last: the namespace goes after the server and the replicas.
    ns: Netns,
}

impl Fixture {
    fn new(net_conf: Value) -> Result<Fixture> {
        weft_e2e::prereq::require();
        netns::sweep_stale();
        let id = run_id();
        let ns = Netns::new(format!("{PREFIX}alloc-{id}"))?;
        let listener = ns.spawn(|| Ok(TcpListener::bind("127.0.0.1:0")?)).join().map_err(|_| anyhow!("bind panicked"))??;
        let api = ApiServer::serve(listener)?;
        let dir = std::env::temp_dir().join(format!("{PREFIX}allocator-{id}"));
        std::fs::create_dir_all(&dir)?;
        let kubeconfig = dir.join("kubeconfig");
        api.write_kubeconfig(&kubeconfig)?;
        let path = dir.join("net-conf.json");
        std::fs::write(&path, net_conf.to_string())?;
        Ok(Fixture { api, dir, kubeconfig, net_conf: path, replicas: Vec::new(), ns })
    }

    fn start(&mut self, n: usize, extra: &[&str]) -> Result<()> {
        for i in 0..n {
            let name = format!("alloc-{}", self.replicas.len());
            let r = Replica::start(&self.ns, &name, &self.kubeconfig, &self.net_conf, 18080 + i as u16, extra, &self.dir)?;
            self.replicas.push(r);
        }
        Ok(())
    }

    /// The replica holding the Lease now.
    fn leader(&self, timeout: Duration) -> Result<usize> {
        let (holder, _) = wait_for_holder(&self.api, LEASE, None, timeout)?;
        self.replicas.iter().position(|r| holder.starts_with(&format!("{}_", r.name))).context("the holder is a replica")
    }

    fn kubectl(&self, args: &[&str]) -> Result<String> {
        let kc = self.kubeconfig.display().to_string();
        let cache = self.dir.join("cache").display().to_string();
        let mut full = vec!["timeout", "60", "kubectl", "--kubeconfig", &kc, "--cache-dir", &cache];
        full.extend_from_slice(args);
        let out = self.ns.exec_args(&full).env("HOME", &self.dir).stdin(Stdio::null()).output()?;
        ensure!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8(out.stdout)?)
    }

    /// One `kubectl create -f` of a file holding Nodes without podCIDRs (one
    /// document each: kubectl's validation knows no schema for a `List`).
    fn create_nodes(&self, names: &[String]) -> Result<()> {
        let docs: Vec<String> = names.iter().map(|n| node(n).to_string()).collect();
        let path = self.dir.join(format!("nodes-{}.yaml", names.first().map_or("none", String::as_str)));
        std::fs::write(&path, docs.join("\n---\n"))?;
        self.kubectl(&["create", "-f", path.to_str().context("utf-8")?])?;
        Ok(())
    }

    /// Waits until every Node named has a podCIDR; returns name → podCIDR.
    fn wait_assigned(&self, names: &[String], timeout: Duration) -> Result<Vec<(String, Ipv4Network)>> {
        let done = wait_for(timeout, || {
            let got: Vec<(String, Ipv4Network)> = names
                .iter()
                .filter_map(|n| {
                    let node = self.api.get_node(n)?;
                    Some((n.clone(), node["spec"]["podCIDR"].as_str()?.parse().ok()?))
                })
                .collect();
            (got.len() == names.len()).then_some(got)
        });
        done.ok_or_else(|| {
            let missing: Vec<&String> =
                names.iter().filter(|n| self.api.get_node(n).is_none_or(|x| x["spec"]["podCIDR"].is_null())).collect();
            anyhow!("{} Nodes still without a podCIDR after {timeout:?}: {missing:?}\n{}", missing.len(), self.logs())
        })
    }

    fn logs(&self) -> String {
        self.replicas.iter().map(|r| format!("--- {}:\n{}", r.name, r.log())).collect::<Vec<_>>().join("\n")
    }

    /// Warning Events about `node` with `reason`.
    fn warnings(&self, node: &str, reason: &str) -> Vec<Value> {
        self.api
            .events()
            .into_iter()
            .filter(|e| e["involvedObject"]["name"] == node && e["reason"] == reason && e["type"] == "Warning")
            .collect()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.replicas.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Node as a kubelet registers it where no controller assigns podCIDRs.
fn node(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady",
                                    "message": "container runtime network not ready: cni plugin not initialized"}]},
    })
}

fn names(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}{i:02}")).collect()
}

fn net_conf(network: &str, extra: Value) -> Value {
    let mut v = json!({"Network": network, "Backend": {"Type": "vxlan"}});
    v.as_object_mut().expect("object").extend(extra.as_object().cloned().unwrap_or_default());
    v
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("an address")
}

/// Three replicas, 50 Nodes created at once with kubectl: each Node gets
/// exactly one podCIDR, all distinct, inside Network and SubnetMin..SubnetMax,
/// written once each (the history and the replicas' counters agree).
#[test]
fn three_replicas_assign_fifty_nodes_created_at_once() -> Result<()> {
    let conf = net_conf("10.244.0.0/16", json!({"SubnetLen": 24, "SubnetMin": "10.244.10.0", "SubnetMax": "10.244.99.0"}));
    let mut fx = Fixture::new(conf)?;
    // Longer than TEST_TIMINGS: this test is about allocation, not failover, on a busy machine.
    fx.start(3, &["--lease-duration", "6s", "--renew-deadline", "4s", "--retry-period", "1s"])?;
    let leader = fx.leader(Duration::from_secs(20))?;
    let all = names("node-", 0..50);
    let started = Instant::now();
    fx.create_nodes(&all)?;
    let assigned = fx.wait_assigned(&all, Duration::from_secs(60))?;
    eprintln!("50 Nodes assigned {:?} after kubectl create began", started.elapsed());
    let mut seen = std::collections::BTreeSet::new();
    for (name, cidr) in &assigned {
        let stored = fx.api.get_node(name).context("node")?;
        assert_eq!(pod_cidrs(&stored), [cidr.to_string()], "{name}: exactly one podCIDR, podCIDRs = [podCIDR]");
        assert!(within(*cidr, "10.244.0.0/16".parse()?, 24, ip("10.244.10.0"), ip("10.244.99.0")), "{name}: {cidr}");
        assert_eq!(stored["metadata"]["annotations"][ANNOTATION], cidr.to_string());
        assert!(seen.insert(*cidr), "{cidr} assigned twice");
    }
    assert_eq!(check_history(&fx.api)?, 50, "one write per Node in the server's history");
    // Each write counted once, when its answer is handled (a moment after the server shows it).
    let total = || -> Result<f64> {
        fx.replicas.iter().map(|r| r.metric(&fx.ns, "weft_allocator_assignments_total")).sum::<Result<f64>>()
    };
    let settled = wait_for(Duration::from_secs(5), || total().ok().filter(|t| *t == 50.0));
    assert!(settled.is_some(), "the replicas wrote {:?} podCIDRs between them, want 50\n{}", total(), fx.logs());
    let r = &fx.replicas[leader];
    r.await_metric(&fx.ns, "weft_allocator_nodes{state=\"assigned\"}", 50.0, Duration::from_secs(5))?;
    r.await_metric(&fx.ns, "weft_allocator_subnets{state=\"free\"}", 40.0, Duration::from_secs(5))?;
    let leases = fx.kubectl(&["get", "leases", "-n", "kube-system"])?;
    assert!(leases.contains(LEASE) && leases.contains("alloc-"), "{leases}");
    Ok(())
}

/// The leader SIGKILLed in the middle of a burst of new Nodes: a standby holds
/// the Lease within the lease duration (plus the retry period that paces
/// candidates), every Node is assigned, and the history shows no block ever
/// held by two Nodes.
#[test]
fn leader_killed_mid_burst_standby_takes_over() -> Result<()> {
    let mut fx = Fixture::new(net_conf("10.244.0.0/16", json!({})))?;
    fx.start(3, &TEST_TIMINGS)?;
    let leader = fx.leader(Duration::from_secs(20))?;
    let (first, transitions) = allocator::holder(&fx.api, LEASE).context("a holder")?;
    let all = names("burst-", 0..40);
    for (i, name) in all.iter().enumerate() {
        fx.api.create_node(node(name)).map_err(|e| anyhow!("{e}"))?;
        if i == 20 {
            fx.replicas[leader].kill()?;
            let killed = Instant::now();
            // Keep creating while no one leads.
            let rest = all[21..].to_vec();
            for name in &rest {
                fx.api.create_node(node(name)).map_err(|e| anyhow!("{e}"))?;
                std::thread::sleep(Duration::from_millis(20));
            }
            let (next, at) = wait_for_holder(&fx.api, LEASE, Some(&first), Duration::from_secs(15))?;
            let took = at.duration_since(killed);
            eprintln!("leader {first} killed; {next} took over after {took:?}");
            // A standby may take over once it has seen no renewal for the lease
            // duration (3 s); it tries every retry period (0.5 s, +20% jitter).
            assert!(took <= Duration::from_millis(3000 + 2 * 600 + 500), "takeover took {took:?}\n{}", fx.logs());
            assert!(!next.starts_with(&format!("{}_", fx.replicas[leader].name)));
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let assigned = fx.wait_assigned(&all, Duration::from_secs(30))?;
    let distinct: std::collections::BTreeSet<_> = assigned.iter().map(|(_, c)| *c).collect();
    assert_eq!(distinct.len(), 40);
    assert_eq!(check_history(&fx.api)?, 40, "each Node written once, no block held twice, in the server's history");
    let (_, after) = allocator::holder(&fx.api, LEASE).context("a holder")?;
    assert!(after > transitions, "leaseTransitions counts the takeover ({transitions} → {after})");
    Ok(())
}

/// `Network` 10.244.0.0/22 in /24s: three blocks (Flannel skips the first).
/// A fourth Node stays without a podCIDR, with a Warning Event and the metric,
/// the others untouched; deleting a Node gives its block to the waiting one.
#[test]
fn exhaustion_then_a_deleted_nodes_block_is_reused() -> Result<()> {
    let mut fx = Fixture::new(net_conf("10.244.0.0/22", json!({})))?;
    fx.start(1, &TEST_TIMINGS)?;
    fx.leader(Duration::from_secs(20))?;
    let first = names("n", 1..4);
    fx.create_nodes(&first)?;
    let assigned = fx.wait_assigned(&first, Duration::from_secs(20))?;
    let before: Vec<Value> = first.iter().map(|n| fx.api.get_node(n).expect("node")).collect();
    fx.create_nodes(&["n4".to_string()])?;
    let event = wait_for(Duration::from_secs(10), || fx.warnings("n4", "CIDRNotAvailable").into_iter().next())
        .ok_or_else(|| anyhow!("no CIDRNotAvailable Event for n4\n{}", fx.logs()))?;
    let note = event["message"].as_str().unwrap_or_default();
    assert!(note.contains("no free /24 block left in 10.244.0.0/22 between 10.244.1.0 and 10.244.3.0"), "{note}");
    assert!(fx.replicas[0].log().contains("no free /24 block left"), "{}", fx.logs());
    let r = &fx.replicas[0];
    r.await_metric(&fx.ns, "weft_allocator_nodes{state=\"exhausted\"}", 1.0, Duration::from_secs(5))?;
    r.await_metric(&fx.ns, "weft_allocator_subnets{state=\"free\"}", 0.0, Duration::from_secs(5))?;
    assert!(fx.api.get_node("n4").context("n4")?["spec"]["podCIDR"].is_null(), "never a wrong assignment");
    let after: Vec<Value> = first.iter().map(|n| fx.api.get_node(n).expect("node")).collect();
    assert_eq!(before, after, "the other Nodes untouched (same resourceVersions)");

    let (gone, freed) = assigned[1].clone();
    fx.kubectl(&["delete", "node", &gone])?;
    let got = fx.wait_assigned(&["n4".to_string()], Duration::from_secs(10))?;
    assert_eq!(got[0].1, freed, "the deleted Node's block, reused");
    r.await_metric(&fx.ns, "weft_allocator_nodes{state=\"exhausted\"}", 0.0, Duration::from_secs(5))?;
    fx.create_nodes(&["n5".to_string()])?;
    wait_for(Duration::from_secs(10), || fx.warnings("n5", "CIDRNotAvailable").into_iter().next())
        .ok_or_else(|| anyhow!("no CIDRNotAvailable Event for n5"))?;
    assert_eq!(check_history(&fx.api)?, 4);
    Ok(())
}

/// Another allocator (kube-controller-manager with --allocate-node-cidrs, here
/// kubectl writing as it would) gives a Node a podCIDR: weft's allocator says
/// so (log, Warning Event, metric, /readyz 503) and writes nothing more.
#[test]
fn stands_aside_beside_another_allocator() -> Result<()> {
    let mut fx = Fixture::new(net_conf("10.244.0.0/22", json!({})))?;
    fx.start(1, &TEST_TIMINGS)?;
    fx.leader(Duration::from_secs(20))?;
    let first = names("n", 1..4);
    fx.create_nodes(&first)?;
    fx.wait_assigned(&first, Duration::from_secs(20))?;
    // n4 waits (no free block), then "the controller manager" assigns it one from its own range.
    fx.create_nodes(&["n4".to_string()])?;
    wait_for(Duration::from_secs(10), || fx.warnings("n4", "CIDRNotAvailable").into_iter().next())
        .ok_or_else(|| anyhow!("n4 did not wait"))?;
    assert_eq!(fx.replicas[0].get(&fx.ns, "/readyz")?.0, 200);
    fx.kubectl(&["patch", "node", "n4", "-p", r#"{"spec":{"podCIDR":"10.245.0.0/24","podCIDRs":["10.245.0.0/24"]}}"#])?;
    let event = wait_for(Duration::from_secs(10), || fx.warnings("n4", "OtherAllocator").into_iter().next())
        .ok_or_else(|| anyhow!("no OtherAllocator Event\n{}", fx.logs()))?;
    assert!(event["message"].as_str().unwrap_or_default().contains("stands aside"), "{event}");
    let r = &fx.replicas[0];
    assert!(r.log().contains("was given podCIDR 10.245.0.0/24 by another allocator"), "{}", fx.logs());
    r.await_metric(&fx.ns, "weft_allocator_standing_aside", 1.0, Duration::from_secs(5))?;
    let (code, body) = r.get(&fx.ns, "/readyz")?;
    assert_eq!(code, 503);
    assert!(body.starts_with("standing aside: Node n4 was given podCIDR"), "{body}");
    // A block frees up and a new Node arrives: weft's allocator leaves it to the other one.
    fx.kubectl(&["delete", "node", &first[0]])?;
    fx.create_nodes(&["n5".to_string()])?;
    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline {
        let n5 = fx.api.get_node("n5").context("n5")?;
        if !n5["spec"]["podCIDR"].is_null() {
            bail!("the allocator wrote {} after standing aside\n{}", n5["spec"]["podCIDR"], fx.logs());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// End to end: a cluster whose Nodes start without podCIDRs comes up. Agents
/// wait (live, not ready), the allocator assigns each Node a block, the agents
/// start, pods on every node get addresses from their node's block through the
/// reference CNI plugins, and reach each other.
#[test]
fn a_cluster_without_pod_cidrs_comes_up() -> Result<()> {
    use weft_e2e::{
        cluster::{Cluster, Kind},
        traffic::ping_ok,
    };
    let mut c = Cluster::new_kube_unassigned(&[("a", Kind::Weft), ("b", Kind::Weft), ("c", Kind::Weft)])?;
    let waiting = wait_for(Duration::from_secs(15), || {
        ["a", "b", "c"].iter().all(|n| c.agent_log(n).contains("no spec.podCIDR yet")).then_some(())
    });
    waiting.ok_or_else(|| anyhow!("the agents did not say they wait for a podCIDR\n{}", c.logs()))?;
    for n in ["a", "b", "c"] {
        assert!(!c.agent_log(n).contains("dataplane up"), "{n} started without a podCIDR");
    }
    let cp = c.control();
    let replica = Replica::start(&cp.ns, "alloc-0", &cp.kubeconfig, &cp.net_conf, 18080, &TEST_TIMINGS, &c.dir)?;
    for i in 0..3 {
        c.await_agent(i, Duration::from_secs(40)).map_err(|e| anyhow!("{e}\nallocator:\n{}", replica.log()))?;
    }
    let network: Ipv4Network = weft_e2e::kube::NETWORK.parse()?;
    let blocks: std::collections::BTreeSet<_> = c.nodes.iter().map(|n| n.pod_cidr).collect();
    assert_eq!(blocks.len(), 3, "distinct blocks: {blocks:?}");
    for n in &c.nodes {
        assert!(within(n.pod_cidr, network, 24, ip("10.244.1.0"), ip("10.244.255.0")), "{}: {}", n.name, n.pod_cidr);
    }
    for n in ["a", "b", "c"] {
        c.add_pod(n)?;
    }
    for p in &c.pods {
        let block = c.node(&p.node).pod_cidr;
        assert!(block.contains(p.ip), "pod {} got {} outside its node's block {block}", p.name, p.ip);
    }
    for from in &c.pods {
        for to in c.pods.iter().filter(|p| p.node != from.node) {
            ping_ok(&from.ns, to.ip, 2).map_err(|e| anyhow!("{} -> {}: {e}\n{}", from.name, to.name, c.logs()))?;
        }
    }
    assert_eq!(check_history(&c.control().api)?, 3);
    drop(replica);
    Ok(())
}
