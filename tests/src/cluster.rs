//! The topology: an underlay switch, nodes on it (weft or Flannel), pods made by CNI,
//! and external hosts. Underlay 198.19.0.0/24 (RFC 2544 benchmarking space), pod
//! network 10.244.0.0/16 as Flannel's default, node `i` gets 10.244.(i+1).0/24.
//!
//! Dropping a `Cluster` stops the agents, removes its pins and files, then deletes
//! every namespace it made, by name, also when a test panics.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, anyhow, bail};
use ipnetwork::Ipv4Network;
use serde_json::Value;
use weft_agent::maps::Maps;

use crate::{
    agent::{self, AgentProcess},
    cni, flannel,
    kube::{self, ControlPlane},
    netns::{self, Netns},
    prereq,
};

pub const UPLINK_MTU: u32 = 1500;
pub const TUNNEL_MTU: u32 = UPLINK_MTU - 50;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Weft,
    /// Kernel vxlan `flannel.1`, programmed exactly as Flannel's vxlan backend does.
    Flannel,
    /// No encapsulation: routes to the other nodes' pod CIDRs via their underlay
    /// addresses, as Flannel's host-gw backend programs them (the benchmark's baseline).
    HostGw,
}

impl Kind {
    /// The name the sandbox and the benchmark print.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Weft => "weft",
            Kind::Flannel => "flannel",
            Kind::HostGw => "host-gw",
        }
    }

    /// The MTU pods get: the uplink's, less the VXLAN overhead when encapsulating.
    pub fn pod_mtu(self) -> u32 {
        match self {
            Kind::Weft | Kind::Flannel => TUNNEL_MTU,
            Kind::HostGw => UPLINK_MTU,
        }
    }
}

pub struct Node {
    pub name: String,
    pub kind: Kind,
    pub underlay: Ipv4Addr,
    pub pod_cidr: Ipv4Network,
    pub vtep_mac: String,
    pub bpffs_dir: PathBuf,
    /// This node's files: subnet.env, CNI config, host-local's state.
    pub dir: PathBuf,
    /// The conflist pods are made with (Kubernetes-mode weft nodes: the one the agent wrote).
    pub conflist: Value,
    pub agent: Option<AgentProcess>,
    pub ns: Netns,
}

impl Node {
    /// The tunnel device: `weft0` or `flannel.1` (host-gw: the uplink, no tunnel).
    pub fn tunnel_dev(&self) -> &'static str {
        match self.kind {
            Kind::Weft => "weft0",
            Kind::Flannel => "flannel.1",
            Kind::HostGw => "ul0",
        }
    }

    /// The node's own address on the overlay (`<subnet>.0`, on its tunnel device).
    pub fn overlay_ip(&self) -> Ipv4Addr {
        self.pod_cidr.network()
    }

    pub fn table_line(&self) -> String {
        format!("{} {} {} {}", self.name, self.underlay, self.pod_cidr, self.vtep_mac)
    }

    pub fn maps(&self) -> Result<Maps> {
        Ok(Maps::open_pinned(&self.bpffs_dir)?)
    }

    /// What the node's pinned maps hold, as text (or why they could not be read).
    pub fn dataplane_state(&self) -> String {
        let read = || -> Result<String> {
            let maps = self.maps()?;
            let mut out = format!("config: {:?}\n", maps.config()?);
            for (cidr, t) in maps.tunnels()? {
                out += &format!("tunnel {cidr} -> {t:?}\n");
            }
            for (ip, p) in maps.peers()? {
                out += &format!("peer {ip} -> {p:?}\n");
            }
            for (hook, verdict, c) in maps.counters_by_hook()?.iter().filter(|(_, _, c)| c.packets > 0) {
                out += &format!("counter {} {}: {c:?}\n", hook.name(), verdict.name());
            }
            Ok(out)
        };
        read().unwrap_or_else(|e| format!("maps unreadable: {e:#}\n"))
    }

    pub fn cni_dir(&self) -> PathBuf {
        self.dir.join("cni")
    }

    /// The node's libcni cache directory (its runtime's `/var/lib/cni`).
    pub fn cni_cache_dir(&self) -> PathBuf {
        self.dir.join("cni-cache")
    }

    pub fn subnet_file(&self) -> PathBuf {
        self.dir.join("subnet.env")
    }
}

pub struct Pod {
    pub name: String,
    pub node: String,
    pub ip: Ipv4Addr,
    pub container_id: String,
    /// The conflist it was made with and the ADD result (for CHECK and DEL).
    pub conflist: Value,
    pub result: Value,
    pub ns: Netns,
}

/// A host outside the cluster, routed to the pod network through one node.
pub struct External {
    pub ip: Ipv4Addr,
    pub ns: Netns,
}

/// The internet: a host (192.0.2.10) behind a router on the underlay (198.19.0.254)
/// that knows no pod addresses, the nodes' default gateway.
pub struct Internet {
    pub host: External,
    pub router: Netns,
}

pub const INTERNET_HOST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

/// A net-conf.json with Flannel's default network, for static-mode agents that need
/// the cluster network (`--ip-masq`); written once, shared.
pub fn static_net_conf() -> Result<PathBuf> {
    let path = PathBuf::from("/run/weft-e2e/net-conf-static.json");
    std::fs::create_dir_all("/run/weft-e2e")?;
    std::fs::write(&path, format!(r#"{{"Network":"{}","Backend":{{"Type":"vxlan"}}}}"#, kube::NETWORK))?;
    Ok(path)
}
pub const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 254);

impl Internet {
    /// Routes `node`'s pod CIDR through that node, as a cloud's route table does for
    /// outside clients of pods.
    pub fn route_pods_via(&self, node: &Node) -> Result<()> {
        self.router.ip(&format!("route replace {} via {}", node.pod_cidr, node.underlay))?;
        Ok(())
    }
}

pub struct Cluster {
    pub id: String,
    pub dir: PathBuf,
    pub bpffs_root: PathBuf,
    pub peers_file: PathBuf,
    // Field order is drop order: pods and hosts before the nodes they hang off.
    pub pods: Vec<Pod>,
    pub externals: Vec<External>,
    pub internet: Option<Internet>,
    pub nodes: Vec<Node>,
    /// Kubernetes mode: the API server's namespace.
    pub control: Option<ControlPlane>,
    pub underlay: Netns,
}

impl Cluster {
    /// Builds nodes on one underlay; weft nodes get an agent each, Flannel and host-gw
    /// nodes are programmed from the same node table (static mode). No pods yet.
    pub fn new(spec: &[(&str, Kind)]) -> Result<Cluster> {
        Cluster::new_with_agent_args(spec, &[])
    }

    /// As [`Cluster::new`], every weft agent started with `extra` arguments too.
    pub fn new_with_agent_args(spec: &[(&str, Kind)], extra: &[&str]) -> Result<Cluster> {
        let mut cluster = Cluster::base(spec)?;
        cluster.write_peers(&cluster.nodes.iter().map(Node::table_line).collect::<Vec<_>>())?;
        for i in 0..cluster.nodes.len() {
            match cluster.nodes[i].kind {
                Kind::Weft => cluster.start_agent(i, extra)?,
                Kind::Flannel => cluster.program_flannel(i)?,
                Kind::HostGw => cluster.program_host_gw(i)?,
            }
        }
        Ok(cluster)
    }

    /// Kubernetes mode: an API server on the underlay, a Node object per node (as the
    /// kubelet registers it, podCIDR assigned), weft agents learning from it, and
    /// Flannel nodes that publish and read annotations as flanneld does. No pods yet.
    pub fn new_kube(spec: &[(&str, Kind)]) -> Result<Cluster> {
        let mut cluster = Cluster::base(spec)?;
        let cp = Netns::new(format!("{}{}-cp", netns::PREFIX, cluster.id))?;
        cluster.wire_to_underlay(&cp, "eth0", "u-cp", kube::API_IP)?;
        cluster.control = Some(ControlPlane::start(cp, &cluster.dir)?);
        for i in 0..cluster.nodes.len() {
            cluster.register_node(i)?;
        }
        for i in 0..cluster.nodes.len() {
            match cluster.nodes[i].kind {
                Kind::Weft => cluster.start_agent(i, &[])?,
                Kind::Flannel => cluster.start_flanneld(i)?,
                // host-gw publishes nothing a peer needs: routes to the nodes known now.
                Kind::HostGw => cluster.program_host_gw(i)?,
            }
        }
        cluster.sync_flannel()?;
        Ok(cluster)
    }

    /// Kubernetes mode where nothing assigns podCIDRs yet: Node objects as kubelets
    /// register them (no `spec.podCIDR`), and a weft agent started on each node,
    /// which waits for its podCIDR ([`Cluster::await_agent`]). Weft nodes only.
    pub fn new_kube_unassigned(spec: &[(&str, Kind)]) -> Result<Cluster> {
        anyhow::ensure!(spec.iter().all(|(_, k)| *k == Kind::Weft), "only weft nodes wait for a podCIDR here");
        let mut cluster = Cluster::base(spec)?;
        let cp = Netns::new(format!("{}{}-cp", netns::PREFIX, cluster.id))?;
        cluster.wire_to_underlay(&cp, "eth0", "u-cp", kube::API_IP)?;
        cluster.control = Some(ControlPlane::start(cp, &cluster.dir)?);
        for i in 0..cluster.nodes.len() {
            let n = &cluster.nodes[i];
            let mut manifest = kube::node_manifest(&n.name, n.underlay, n.pod_cidr);
            manifest["spec"] = serde_json::json!({});
            cluster.control().api.create_node(manifest).map_err(|e| anyhow!("creating node {}: {e:?}", n.name))?;
        }
        for i in 0..cluster.nodes.len() {
            let cmd = cluster.agent_command(i, &[]);
            let name = cluster.nodes[i].name.clone();
            let agent = AgentProcess::spawn(cmd, &name, cluster.dir.join(format!("agent-{name}.log")))?;
            cluster.nodes[i].agent = Some(agent);
        }
        Ok(cluster)
    }

    /// Waits until node `i`'s agent reports its dataplane up, then takes the
    /// podCIDR its Node was given as the node's (and its conflist's).
    pub fn await_agent(&mut self, i: usize, timeout: std::time::Duration) -> Result<()> {
        let name = self.nodes[i].name.clone();
        let up = crate::wait_for(timeout, || self.agent_log(&name).contains("dataplane up").then_some(()));
        if up.is_none() {
            bail!("agent {name} did not come up within {timeout:?}:\n{}", self.agent_log(&name));
        }
        let node = self.control().api.get_node(&name).ok_or_else(|| anyhow!("no Node {name}"))?;
        let cidr: Ipv4Network = node["spec"]["podCIDR"].as_str().ok_or_else(|| anyhow!("Node {name} has no podCIDR"))?.parse()?;
        let n = &mut self.nodes[i];
        n.pod_cidr = cidr;
        n.conflist = weft_agent::cni::conflist(cidr, n.kind.pod_mtu(), Some(&n.dir.join("ipam")));
        Ok(())
    }

    fn base(spec: &[(&str, Kind)]) -> Result<Cluster> {
        prereq::require();
        netns::sweep_stale();
        let id = netns::run_id();
        let dir = PathBuf::from("/run/weft-e2e").join(&id);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let underlay = Netns::new(format!("{}{id}-ul", netns::PREFIX))?;
        underlay.ip("link add br0 type bridge")?;
        underlay.ip("link set br0 up")?;
        // The switch is the wire: with br_netfilter loaded (kube-proxy's nodes have it),
        // the kernel would run iptables for every frame it switches, a cost no real
        // switch adds to any mode. Nodes keep their own setting.
        let status = underlay
            .exec_args(&["sh", "-c", "[ ! -d /proc/sys/net/bridge ] || sysctl -q -w net.bridge.bridge-nf-call-iptables=0"])
            .status()?;
        anyhow::ensure!(status.success(), "turning bridge-nf-call-iptables off on the underlay switch");
        let mut cluster = Cluster {
            bpffs_root: PathBuf::from(format!("/sys/fs/bpf/weft-e2e-{id}")),
            peers_file: dir.join("nodes"),
            dir,
            id,
            pods: Vec::new(),
            externals: Vec::new(),
            internet: None,
            nodes: Vec::new(),
            control: None,
            underlay,
        };
        for (i, (name, kind)) in spec.iter().enumerate() {
            cluster.add_node_ns(name, *kind, i)?;
        }
        Ok(cluster)
    }

    /// Connects `ns` to the underlay switch with `ip`/24 on its end `dev`.
    fn wire_to_underlay(&self, ns: &Netns, dev: &str, port: &str, ip: Ipv4Addr) -> Result<()> {
        crate::run(&mut crate::cmd(&format!(
            "ip link add {dev} netns {} mtu {UPLINK_MTU} type veth peer name {port} netns {} mtu {UPLINK_MTU}",
            ns.name, self.underlay.name
        )))?;
        self.underlay.ip(&format!("link set {port} master br0 up"))?;
        ns.ip(&format!("addr add {ip}/24 dev {dev}"))?;
        ns.ip(&format!("link set {dev} up"))?;
        Ok(())
    }

    pub fn control(&self) -> &ControlPlane {
        self.control.as_ref().expect("a Kubernetes-mode cluster")
    }

    /// Creates node `i`'s Node object, as its kubelet would.
    pub fn register_node(&self, i: usize) -> Result<()> {
        let n = &self.nodes[i];
        self.control()
            .api
            .create_node(kube::node_manifest(&n.name, n.underlay, n.pod_cidr))
            .map_err(|e| anyhow!("creating node {}: {e:?}", n.name))?;
        Ok(())
    }

    /// flanneld's start on a Flannel node: `flannel.1`, its iptables rules, its annotations.
    fn start_flanneld(&self, i: usize) -> Result<()> {
        let n = &self.nodes[i];
        flannel::setup_device(&n.ns, n.underlay, n.pod_cidr, &n.vtep_mac, UPLINK_MTU)?;
        self.flanneld_rules_and_annotations(i)
    }

    /// flanneld's start on a node where its device already exists (it reuses a
    /// compatible `flannel.1`, MAC included): its iptables rules and annotations.
    fn flanneld_rules_and_annotations(&self, i: usize) -> Result<()> {
        let n = &self.nodes[i];
        // kube-flannel.yml runs flanneld with --ip-masq; --iptables-forward-rules is its default.
        flannel::masquerade(&n.ns, kube::NETWORK.parse()?, n.pod_cidr)?;
        flannel::forward(&n.ns, kube::NETWORK.parse()?)?;
        let ann = kube::flannel_annotations(n.underlay, &n.vtep_mac);
        self.control()
            .api
            .update_node(&n.name, |node| {
                let meta = node["metadata"].as_object_mut().expect("metadata");
                let annotations = meta.entry("annotations").or_insert_with(|| serde_json::json!({}));
                for (k, v) in ann.as_object().expect("object") {
                    annotations[k] = v.clone();
                }
            })
            .map_err(|e| anyhow!("annotating {}: {e:?}", n.name))?;
        Ok(())
    }

    /// flanneld's reaction to node changes, on every Flannel node (call after changes).
    /// Returns the Nodes whose lease flanneld rejects and skips, with its reason: the
    /// other nodes are programmed all the same.
    pub fn sync_flannel(&self) -> Result<BTreeMap<String, kube::Rejected>> {
        let leases = kube::leases(&self.control().api);
        for n in self.nodes.iter().filter(|n| n.kind == Kind::Flannel) {
            kube::flanneld_sync(&n.ns, &n.name, &leases)?;
        }
        Ok(leases.rejected)
    }

    /// Adds a node namespace on the underlay (no agent, no Node object): node `i` gets
    /// 198.19.0.(10+i) and 10.244.(i+1).0/24.
    pub fn add_node_ns(&mut self, name: &str, kind: Kind, i: usize) -> Result<usize> {
        let ns = Netns::new(format!("{}{}-{name}", netns::PREFIX, self.id))?;
        let underlay = Ipv4Addr::new(198, 19, 0, 10 + i as u8);
        self.wire_to_underlay(&ns, "ul0", &format!("u-{name}"), underlay)?;
        let pod_cidr = Ipv4Network::new(Ipv4Addr::new(10, 244, i as u8 + 1, 0), 24)?;
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir)?;
        self.nodes.push(Node {
            name: name.to_owned(),
            kind,
            underlay,
            pod_cidr,
            vtep_mac: format!("0a:58:0a:f4:{:02x}:00", i + 1),
            bpffs_dir: self.bpffs_root.join(name),
            // The conflist the agent writes in Kubernetes mode; static-mode, Flannel and
            // host-gw nodes use it too (host-gw pods get the full uplink MTU).
            conflist: weft_agent::cni::conflist(pod_cidr, kind.pod_mtu(), Some(&dir.join("ipam"))),
            dir,
            agent: None,
            ns,
        });
        Ok(self.nodes.len() - 1)
    }

    /// Rewrites the node table every weft agent reads.
    pub fn write_peers(&self, lines: &[String]) -> Result<()> {
        let tmp = self.peers_file.with_extension("tmp");
        std::fs::write(&tmp, format!("# NAME UNDERLAY POD_CIDR VTEP_MAC\n{}\n", lines.join("\n")))?;
        std::fs::rename(&tmp, &self.peers_file)?;
        Ok(())
    }

    pub fn agent_command(&self, i: usize, extra: &[&str]) -> std::process::Command {
        const CNI_CONF_TEMPLATE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/cni-conf.json");
        let n = &self.nodes[i];
        let mut cmd = match &self.control {
            None => agent::command(&n.ns, &self.peers_file, &n.name, &n.bpffs_dir, extra),
            Some(cp) => {
                let (cni, ipam, subnet) = (n.cni_dir(), n.dir.join("ipam"), n.subnet_file());
                let mut args: Vec<&str> = vec![
                    "--kubeconfig-file",
                    cp.kubeconfig.to_str().expect("utf-8"),
                    "--net-config-path",
                    cp.net_conf.to_str().expect("utf-8"),
                    "--subnet-file",
                    subnet.to_str().expect("utf-8"),
                    "--cni-conf-dir",
                    cni.to_str().expect("utf-8"),
                    "--cni-ipam-data-dir",
                    ipam.to_str().expect("utf-8"),
                    // As manifests/weft.yaml runs it.
                    "--ip-masq",
                    "--cni-conf-template",
                    CNI_CONF_TEMPLATE,
                ];
                args.extend_from_slice(extra);
                agent::kube_command(&n.ns, &n.name, &n.bpffs_dir, &args)
            }
        };
        // Where this node's "runtime" caches its pods' CNI results.
        cmd.env("WEFT_CNI_CACHE_DIR", n.cni_cache_dir());
        cmd
    }

    /// `weft-agent uninstall` for node `i` (its agent stopped), with the paths its
    /// agent used; what it printed.
    pub fn uninstall(&self, i: usize) -> Result<String> {
        let n = &self.nodes[i];
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net={}", n.ns.path()))
            .arg(crate::agent_binary())
            .args(["uninstall", "--bpffs-dir"])
            .arg(&n.bpffs_dir)
            .arg("--cni-conf-dir")
            .arg(n.cni_dir())
            .arg("--subnet-file")
            .arg(n.subnet_file())
            .output()?;
        anyhow::ensure!(out.status.success(), "uninstall: {}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8(out.stdout)?)
    }

    pub fn start_agent(&mut self, i: usize, extra: &[&str]) -> Result<()> {
        let cmd = self.agent_command(i, extra);
        let log = self.dir.join(format!("agent-{}.log", self.nodes[i].name));
        let agent = AgentProcess::start(cmd, &self.nodes[i].name, log)?;
        self.nodes[i].agent = Some(agent);
        Ok(())
    }

    /// As [`Cluster::kill_and_restart_agent`], but the new agent is not waited for.
    pub fn kill_and_spawn_agent(&mut self, i: usize, extra: &[&str]) -> Result<()> {
        let n = &mut self.nodes[i];
        n.agent.as_mut().ok_or_else(|| anyhow!("node {} runs no agent", n.name))?.kill()?;
        self.spawn_agent(i, extra)
    }

    /// Starts node `i`'s agent with `extra` arguments without waiting for anything.
    pub fn spawn_agent(&mut self, i: usize, extra: &[&str]) -> Result<()> {
        let cmd = self.agent_command(i, extra);
        let log = self.dir.join(format!("agent-{}.log", self.nodes[i].name));
        self.nodes[i].agent = Some(AgentProcess::spawn(cmd, &self.nodes[i].name, log)?);
        Ok(())
    }

    /// Stops node `i`'s agent (SIGTERM, as a DaemonSet rollout does) and starts a new
    /// one with `extra` arguments; the pinned dataplane carries traffic in between.
    pub fn restart_agent(&mut self, i: usize, extra: &[&str]) -> Result<()> {
        if let Some(agent) = self.nodes[i].agent.as_mut() {
            agent.stop()?;
        }
        self.start_agent(i, extra)
    }

    /// SIGKILLs node `i`'s agent (no clean-up runs, as after an OOM kill) and starts a
    /// new one with `extra` arguments, waited for until its dataplane is up.
    pub fn kill_and_restart_agent(&mut self, i: usize, extra: &[&str]) -> Result<()> {
        let n = &mut self.nodes[i];
        n.agent.as_mut().ok_or_else(|| anyhow!("node {} runs no agent", n.name))?.kill()?;
        self.start_agent(i, extra)
    }

    /// Moves Flannel node `i` to weft as the runbook does: flanneld is gone (nothing
    /// programs the node from the annotations any more: [`Cluster::sync_flannel`] skips
    /// it) and leaves `flannel.1`, its iptables rules and the pods on `cni0` behind; a
    /// weft agent starts on the node with `extra` arguments and is waited for.
    pub fn switch_to_weft(&mut self, i: usize, extra: &[&str]) -> Result<()> {
        anyhow::ensure!(self.nodes[i].kind == Kind::Flannel, "node {} is not a Flannel node", self.nodes[i].name);
        self.nodes[i].kind = Kind::Weft;
        self.start_agent(i, extra)
    }

    /// Moves weft node `i` back to Flannel as the README's rollback does: the agent
    /// stops (its pinned dataplane keeps forwarding); the operator creates `flannel.1`
    /// with the node's VtepMAC, so that flanneld, which reuses a compatible device,
    /// advertises the MAC peers already use; flanneld starts (its rules, annotations,
    /// and routes that replace weft0's); then `weft-agent uninstall --keep-subnet-env`
    /// removes weft's pins, `weft0` and conflist. Returns what uninstall printed.
    pub fn switch_to_flannel(&mut self, i: usize) -> Result<String> {
        anyhow::ensure!(self.nodes[i].kind == Kind::Weft, "node {} is not a weft node", self.nodes[i].name);
        if let Some(mut agent) = self.nodes[i].agent.take() {
            agent.stop()?;
        }
        self.nodes[i].kind = Kind::Flannel;
        let n = &self.nodes[i];
        flannel::setup_device(&n.ns, n.underlay, n.pod_cidr, &n.vtep_mac, UPLINK_MTU)?;
        self.flanneld_rules_and_annotations(i)?;
        kube::flanneld_sync(&n.ns, &n.name, &kube::leases(&self.control().api))?;
        let out = crate::run(
            std::process::Command::new("nsenter")
                .arg(format!("--net={}", n.ns.path()))
                .arg(crate::agent_binary())
                .arg("uninstall")
                .arg("--bpffs-dir")
                .arg(&n.bpffs_dir)
                .arg("--cni-conf-dir")
                .arg(n.cni_dir())
                .arg("--subnet-file")
                .arg(n.subnet_file())
                .arg("--keep-subnet-env"),
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn program_flannel(&self, i: usize) -> Result<()> {
        let n = &self.nodes[i];
        flannel::setup_device(&n.ns, n.underlay, n.pod_cidr, &n.vtep_mac, UPLINK_MTU)?;
        for (j, p) in self.nodes.iter().enumerate() {
            if j != i {
                flannel::add_peer(
                    &n.ns,
                    &flannel::Peer { underlay: p.underlay, pod_cidr: p.pod_cidr, vtep_mac: p.vtep_mac.clone() },
                )?;
            }
        }
        Ok(())
    }

    /// Flannel's host-gw backend on node `i`: forwarding on, and per other node a route
    /// to its pod CIDR via its underlay address on the uplink (no encapsulation).
    fn program_host_gw(&self, i: usize) -> Result<()> {
        let n = &self.nodes[i];
        n.ns.sh("sysctl -q -w net.ipv4.ip_forward=1")?;
        for (j, p) in self.nodes.iter().enumerate() {
            if j != i {
                n.ns.ip(&format!("route add {} via {} dev ul0", p.pod_cidr, p.underlay))?;
            }
        }
        Ok(())
    }

    pub fn node_index(&self, name: &str) -> usize {
        self.nodes.iter().position(|n| n.name == name).unwrap_or_else(|| panic!("no node {name}"))
    }

    pub fn node(&self, name: &str) -> &Node {
        &self.nodes[self.node_index(name)]
    }

    /// Creates a pod on `node` through CNI ADD; returns its index.
    pub fn add_pod(&mut self, node: &str) -> Result<usize> {
        let n = self.node(node);
        let conflist = if self.control.is_some() && n.kind == Kind::Weft {
            // The conflist the agent wrote from the podCIDR the API server gave the node.
            let path = n.cni_dir().join("10-weft.conflist");
            serde_json::from_str(&std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?)?
        } else {
            n.conflist.clone()
        };
        self.add_pod_with(node, conflist)
    }

    /// Creates a pod on `node` through CNI ADD with `conflist` (e.g. Flannel's, from
    /// [`flannel::cni_conflist`]); returns its index.
    pub fn add_pod_with(&mut self, node: &str, conflist: Value) -> Result<usize> {
        let k = self.pods.iter().filter(|p| p.node == node).count();
        let name = format!("{node}-{k}");
        let ns = Netns::new(format!("{}{}-pod-{name}", netns::PREFIX, self.id))?;
        let n = self.node(node);
        let container_id = format!("weft-e2e-{}-{name}", self.id);
        let (ip, result) = cni::add(&n.ns, &conflist, &container_id, &ns, &n.cni_cache_dir())?;
        self.pods.push(Pod { name, node: node.to_owned(), ip, container_id, conflist, result, ns });
        Ok(self.pods.len() - 1)
    }

    /// CNI CHECK of pod `i`, as a runtime does periodically.
    pub fn check_pod(&self, i: usize) -> Result<()> {
        let p = &self.pods[i];
        cni::check(&self.node(&p.node).ns, &p.conflist, &p.container_id, &p.ns, &p.result)
    }

    /// CNI DEL of pod `i` (its address goes back to host-local); the namespace goes too.
    pub fn del_pod(&mut self, i: usize) -> Result<()> {
        let p = &self.pods[i];
        let n = self.node(&p.node);
        cni::del(&n.ns, &p.conflist, &p.container_id, &p.ns, &n.cni_cache_dir())?;
        self.pods.remove(i);
        Ok(())
    }

    /// The first pod on `node`.
    pub fn pod_on(&self, node: &str) -> &Pod {
        self.pods.iter().find(|p| p.node == node).unwrap_or_else(|| panic!("no pod on {node}"))
    }

    /// An external host behind `node` (MTU 1500, routes 10.244.0.0/16 via the node).
    pub fn add_external(&mut self, node: &str) -> Result<usize> {
        let k = self.externals.len() as u8;
        let ns = Netns::new(format!("{}{}-ext{k}", netns::PREFIX, self.id))?;
        let n = self.node(node);
        let (node_ip, ext_ip) = (Ipv4Addr::new(198, 18, k, 1), Ipv4Addr::new(198, 18, k, 2));
        crate::run(&mut crate::cmd(&format!("ip link add x{k} netns {} type veth peer name eth0 netns {}", n.ns.name, ns.name)))?;
        n.ns.ip(&format!("addr add {node_ip}/24 dev x{k}"))?;
        n.ns.ip(&format!("link set x{k} up"))?;
        ns.ip(&format!("addr add {ext_ip}/24 dev eth0"))?;
        ns.ip("link set eth0 up")?;
        ns.ip(&format!("route add 10.244.0.0/16 via {node_ip}"))?;
        self.externals.push(External { ip: ext_ip, ns });
        Ok(self.externals.len() - 1)
    }

    /// Adds [`Internet`]: the router's end of its link to the host has `mtu` (a smaller
    /// one is a path with a smaller MTU, e.g. a VPN: the router answers too-big packets
    /// with ICMP fragmentation-needed); every node's default route is the router.
    pub fn add_internet(&mut self, mtu: u32) -> Result<&Internet> {
        let router = Netns::new(format!("{}{}-rt", netns::PREFIX, self.id))?;
        self.wire_to_underlay(&router, "eth0", "u-rt", ROUTER)?;
        let host = Netns::new(format!("{}{}-inet", netns::PREFIX, self.id))?;
        crate::run(&mut crate::cmd(&format!(
            "ip link add wan netns {} mtu {mtu} type veth peer name eth0 netns {} mtu 1500",
            router.name, host.name
        )))?;
        router.ip("addr add 192.0.2.1/24 dev wan")?;
        router.ip("link set wan up")?;
        crate::run(&mut router.exec("sysctl -q -w net.ipv4.ip_forward=1"))?;
        host.ip(&format!("addr add {INTERNET_HOST}/24 dev eth0"))?;
        host.ip("link set eth0 up")?;
        host.ip("route add default via 192.0.2.1")?;
        for n in &self.nodes {
            n.ns.ip(&format!("route replace default via {ROUTER}"))?;
        }
        self.internet = Some(Internet { host: External { ip: INTERNET_HOST, ns: host }, router });
        Ok(self.internet.as_ref().expect("just set"))
    }

    /// Segmentation on the underlay: on (veth default, GSO super-packets cross) or
    /// off on every node's uplink, so senders put MTU-sized frames on the wire as a NIC does.
    pub fn set_underlay_segmentation(&self, on: bool) -> Result<()> {
        let state = if on { "on" } else { "off" };
        for n in &self.nodes {
            crate::run(&mut n.ns.exec(&format!("ethtool -K ul0 tso {state} gso {state}")))?;
        }
        Ok(())
    }

    /// `weft-agent status|route|nat …` in node `n`'s namespace against its pins: stdout.
    pub fn inspect(&self, n: &str, args: &[&str]) -> Result<String> {
        let node = self.node(n);
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net={}", node.ns.path()))
            .arg(crate::agent_binary())
            .args(args)
            .arg("--bpffs-dir")
            .arg(&node.bpffs_dir)
            .output()?;
        anyhow::ensure!(out.status.success(), "weft-agent {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8(out.stdout)?)
    }

    pub fn agent_log(&self, node: &str) -> String {
        self.node(node).agent.as_ref().map(|a| a.log_text()).unwrap_or_default()
    }

    /// Agent logs and each weft node's maps and counters, for a failing assertion's message.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .filter_map(|n| {
                n.agent.as_ref().map(|a| format!("--- agent {} ---\n{}{}", n.name, a.log_text(), n.dataplane_state()))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn weft_node(&self, name: &str) -> Result<&Node> {
        let n = self.node(name);
        (n.kind == Kind::Weft).then_some(n).ok_or_else(|| anyhow!("{name} is not a weft node"))
    }
}

fn remove_tree(path: &Path) {
    if path.exists()
        && let Err(e) = std::fs::remove_dir_all(path)
    {
        eprintln!("cleanup: removing {}: {e}", path.display());
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut a) = n.agent.take() {
                if std::thread::panicking() {
                    eprintln!("--- agent {} log ---\n{}", n.name, a.log_text());
                }
                let _ = a.stop();
            }
        }
        // Unpinning the links detaches the programs; the maps go with the last user.
        remove_tree(&self.bpffs_root);
        remove_tree(&self.dir);
    }
}
