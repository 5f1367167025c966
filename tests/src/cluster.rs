//! The topology: an underlay switch, nodes on it (weft or Flannel), pods made by CNI,
//! and external hosts. Underlay 198.19.0.0/24 (RFC 2544 benchmarking space), pod
//! network 10.244.0.0/16 as Flannel's default, node `i` gets 10.244.(i+1).0/24.
//!
//! Dropping a `Cluster` stops the agents, removes its pins and files, then deletes
//! every namespace it made, by name, also when a test panics.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, anyhow};
use ipnetwork::Ipv4Network;
use serde_json::Value;
use weft_agent::maps::Maps;

use crate::{
    agent::{self, AgentProcess},
    cni, flannel,
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
}

pub struct Node {
    pub name: String,
    pub kind: Kind,
    pub underlay: Ipv4Addr,
    pub pod_cidr: Ipv4Network,
    pub vtep_mac: String,
    pub bpffs_dir: PathBuf,
    pub conflist: Value,
    pub agent: Option<AgentProcess>,
    pub ns: Netns,
}

impl Node {
    /// The tunnel device: `weft0` or `flannel.1`.
    pub fn tunnel_dev(&self) -> &'static str {
        match self.kind {
            Kind::Weft => "weft0",
            Kind::Flannel => "flannel.1",
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
}

pub struct Pod {
    pub name: String,
    pub node: String,
    pub ip: Ipv4Addr,
    pub container_id: String,
    pub ns: Netns,
}

/// A host outside the cluster, routed to the pod network through one node.
pub struct External {
    pub ip: Ipv4Addr,
    pub ns: Netns,
}

pub struct Cluster {
    pub id: String,
    pub dir: PathBuf,
    pub bpffs_root: PathBuf,
    pub peers_file: PathBuf,
    // Field order is drop order: pods and hosts before the nodes they hang off.
    pub pods: Vec<Pod>,
    pub externals: Vec<External>,
    pub nodes: Vec<Node>,
    pub underlay: Netns,
}

impl Cluster {
    /// Builds nodes on one underlay; weft nodes get an agent each, Flannel nodes are
    /// programmed from the same node table. No pods yet.
    pub fn new(spec: &[(&str, Kind)]) -> Result<Cluster> {
        prereq::require();
        netns::sweep_stale();
        let id = netns::run_id();
        let dir = PathBuf::from("/run/weft-e2e").join(&id);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let underlay = Netns::new(format!("{}{id}-ul", netns::PREFIX))?;
        underlay.ip("link add br0 type bridge")?;
        underlay.ip("link set br0 up")?;
        let mut cluster = Cluster {
            bpffs_root: PathBuf::from(format!("/sys/fs/bpf/weft-e2e-{id}")),
            peers_file: dir.join("nodes"),
            dir,
            id,
            pods: Vec::new(),
            externals: Vec::new(),
            nodes: Vec::new(),
            underlay,
        };
        for (i, (name, kind)) in spec.iter().enumerate() {
            cluster.add_node_ns(name, *kind, i)?;
        }
        cluster.write_peers(&cluster.nodes.iter().map(Node::table_line).collect::<Vec<_>>())?;
        for i in 0..cluster.nodes.len() {
            match cluster.nodes[i].kind {
                Kind::Weft => cluster.start_agent(i, &[])?,
                Kind::Flannel => cluster.program_flannel(i)?,
            }
        }
        Ok(cluster)
    }

    fn add_node_ns(&mut self, name: &str, kind: Kind, i: usize) -> Result<()> {
        let ns = Netns::new(format!("{}{}-{name}", netns::PREFIX, self.id))?;
        let port = format!("u-{name}");
        let underlay = Ipv4Addr::new(198, 19, 0, 10 + i as u8);
        crate::run(&mut crate::cmd(&format!(
            "ip link add ul0 netns {} mtu {UPLINK_MTU} type veth peer name {port} netns {} mtu {UPLINK_MTU}",
            ns.name, self.underlay.name
        )))?;
        self.underlay.ip(&format!("link set {port} master br0 up"))?;
        ns.ip(&format!("addr add {underlay}/24 dev ul0"))?;
        ns.ip("link set ul0 up")?;
        let pod_cidr = Ipv4Network::new(Ipv4Addr::new(10, 244, i as u8 + 1, 0), 24)?;
        let ipam = self.dir.join("ipam").join(name);
        self.nodes.push(Node {
            name: name.to_owned(),
            kind,
            underlay,
            pod_cidr,
            vtep_mac: format!("0a:58:0a:f4:{:02x}:00", i + 1),
            bpffs_dir: self.bpffs_root.join(name),
            conflist: cni::bridge_conflist(pod_cidr, TUNNEL_MTU, &ipam),
            agent: None,
            ns,
        });
        Ok(())
    }

    /// Rewrites the node table every weft agent reads.
    pub fn write_peers(&self, lines: &[String]) -> Result<()> {
        let tmp = self.peers_file.with_extension("tmp");
        std::fs::write(&tmp, format!("# NAME UNDERLAY POD_CIDR VTEP_MAC\n{}\n", lines.join("\n")))?;
        std::fs::rename(&tmp, &self.peers_file)?;
        Ok(())
    }

    pub fn agent_command(&self, i: usize, extra: &[&str]) -> std::process::Command {
        let n = &self.nodes[i];
        agent::command(&n.ns, &self.peers_file, &n.name, &n.bpffs_dir, extra)
    }

    pub fn start_agent(&mut self, i: usize, extra: &[&str]) -> Result<()> {
        let cmd = self.agent_command(i, extra);
        let log = self.dir.join(format!("agent-{}.log", self.nodes[i].name));
        let agent = AgentProcess::start(cmd, &self.nodes[i].name, log)?;
        self.nodes[i].agent = Some(agent);
        Ok(())
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

    pub fn node_index(&self, name: &str) -> usize {
        self.nodes.iter().position(|n| n.name == name).unwrap_or_else(|| panic!("no node {name}"))
    }

    pub fn node(&self, name: &str) -> &Node {
        &self.nodes[self.node_index(name)]
    }

    /// Creates a pod on `node` through CNI ADD; returns its index.
    pub fn add_pod(&mut self, node: &str) -> Result<usize> {
        let k = self.pods.iter().filter(|p| p.node == node).count();
        let name = format!("{node}-{k}");
        let ns = Netns::new(format!("{}{}-pod-{name}", netns::PREFIX, self.id))?;
        let n = self.node(node);
        let container_id = format!("weft-e2e-{}-{name}", self.id);
        let ip = cni::add(&n.ns, &n.conflist, &container_id, &ns)?;
        self.pods.push(Pod { name, node: node.to_owned(), ip, container_id, ns });
        Ok(self.pods.len() - 1)
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
        crate::run(&mut crate::cmd(&format!(
            "ip link add x{k} netns {} type veth peer name eth0 netns {}",
            n.ns.name, ns.name
        )))?;
        n.ns.ip(&format!("addr add {node_ip}/24 dev x{k}"))?;
        n.ns.ip(&format!("link set x{k} up"))?;
        ns.ip(&format!("addr add {ext_ip}/24 dev eth0"))?;
        ns.ip("link set eth0 up")?;
        ns.ip(&format!("route add 10.244.0.0/16 via {node_ip}"))?;
        self.externals.push(External { ip: ext_ip, ns });
        Ok(self.externals.len() - 1)
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

    pub fn agent_log(&self, node: &str) -> String {
        self.node(node).agent.as_ref().map(|a| a.log_text()).unwrap_or_default()
    }

    /// Agent logs, for a failing assertion's message.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .filter_map(|n| n.agent.as_ref().map(|a| format!("--- agent {} ---\n{}", n.name, a.log_text())))
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn weft_node(&self, name: &str) -> Result<&Node> {
        let n = self.node(name);
        (n.kind == Kind::Weft).then_some(n).ok_or_else(|| anyhow!("{name} is not a weft node"))
    }
}

fn remove_tree(path: &Path) {
    if path.exists() {
        if let Err(e) = std::fs::remove_dir_all(path) {
            eprintln!("cleanup: removing {}: {e}", path.display());
        }
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
