//! The Kubernetes side of the harness: a control-plane namespace on the underlay
//! running the project's API server, Node objects as a kubelet registers them, and
//! "flanneld" for the Flannel-style nodes: it publishes their annotations and
//! programs their `flannel.1` from what the other nodes' annotations say — nothing else.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr, TcpListener},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, anyhow, bail};
use ipnetwork::Ipv4Network;
use serde_json::{Value, json};

use crate::{apiserver::ApiServer, flannel, netns::Netns};

pub const API_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);
pub const API_PORT: u16 = 6443;
pub const NETWORK: &str = "10.244.0.0/16";

pub struct ControlPlane {
    pub api: ApiServer,
    pub kubeconfig: PathBuf,
    pub net_conf: PathBuf,
    pub ns: Netns,
}

/// Binds the API server's listener inside `ns` (the socket stays in that namespace).
pub fn listen_in(ns: &Netns) -> Result<TcpListener> {
    ns.spawn(|| Ok(TcpListener::bind(SocketAddr::from((API_IP, API_PORT)))?))
        .join()
        .map_err(|_| anyhow!("bind thread panicked"))?
}

impl ControlPlane {
    /// Starts the API server in `ns` (already wired to the underlay at [`API_IP`]).
    pub fn start(ns: Netns, dir: &Path) -> Result<ControlPlane> {
        let api = ApiServer::serve(listen_in(&ns)?).context("starting the API server")?;
        let kubeconfig = dir.join("kubeconfig");
        api.write_kubeconfig(&kubeconfig)?;
        let net_conf = dir.join("net-conf.json");
        std::fs::write(&net_conf, json!({ "Network": NETWORK, "Backend": { "Type": "vxlan" } }).to_string())?;
        Ok(ControlPlane { api, kubeconfig, net_conf, ns })
    }

    /// Outage: the API server stops answering; its state is kept.
    pub fn stop(&self) {
        self.api.stop();
    }

    pub fn resume(&self) -> Result<()> {
        self.api.resume(listen_in(&self.ns)?)?;
        Ok(())
    }

    /// The real kubectl, from the control-plane namespace.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        let kc = self.kubeconfig.to_str().expect("utf-8 path");
        let mut full = vec!["kubectl", "--kubeconfig", kc];
        full.extend_from_slice(args);
        let out = crate::run(&mut self.ns.exec_args(&full))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `kubectl create -f` of a Node manifest written to a file.
    pub fn kubectl_create(&self, manifest: &Value, dir: &Path) -> Result<String> {
        let name = manifest["metadata"]["name"].as_str().unwrap_or("node");
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, serde_json::to_string_pretty(manifest)?)?;
        self.kubectl(&["create", "-f", path.to_str().expect("utf-8 path")])
    }
}

/// A Node as a kubelet registers it, with the podCIDR kube-controller-manager assigned.
pub fn node_manifest(name: &str, internal_ip: Ipv4Addr, pod_cidr: Ipv4Network) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": name, "labels": { "kubernetes.io/hostname": name, "kubernetes.io/os": "linux" } },
        "spec": { "podCIDR": pod_cidr.to_string(), "podCIDRs": [pod_cidr.to_string()] },
        "status": {
            "addresses": [
                { "type": "InternalIP", "address": internal_ip.to_string() },
                { "type": "Hostname", "address": name }
            ],
            "conditions": [
                { "type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status" },
                { "type": "NetworkUnavailable", "status": "True", "reason": "NoRouteCreated", "message": "no network plugin yet" }
            ],
            "nodeInfo": {
                "kubeletVersion": "v1.34.0",
                "osImage": "Debian GNU/Linux 12 (bookworm)",
                "kernelVersion": "6.18",
                "containerRuntimeVersion": "containerd://2.0.0",
                "operatingSystem": "linux",
                "architecture": "amd64"
            }
        }
    })
}

const P: &str = "flannel.alpha.coreos.com";

/// The annotations flanneld publishes for a vxlan node.
pub fn flannel_annotations(public_ip: Ipv4Addr, vtep_mac: &str) -> Value {
    json!({
        format!("{P}/backend-type"): "vxlan",
        format!("{P}/backend-data"): json!({ "VNI": 1, "VtepMAC": vtep_mac }).to_string(),
        format!("{P}/public-ip"): public_ip.to_string(),
        format!("{P}/kube-subnet-manager"): "true",
    })
}

pub use crate::flannel_lease::{Lease, Rejected};

/// What flanneld makes of every Node: the leases it programs and those it skips, by name.
#[derive(Clone, Debug, Default)]
pub struct Leases {
    pub valid: BTreeMap<String, Lease>,
    pub rejected: BTreeMap<String, Rejected>,
}

/// A Node's lease as flanneld reads it (None: no lease, or one flanneld rejects).
pub fn lease(node: &Value) -> Option<Lease> {
    crate::flannel_lease::lease(node)?.ok()
}

/// Every node's lease, as flanneld sees them.
pub fn leases(api: &ApiServer) -> Leases {
    let mut out = Leases::default();
    for n in api.nodes() {
        let (Some(name), Some(l)) = (n["metadata"]["name"].as_str(), crate::flannel_lease::lease(&n)) else {
            continue;
        };
        match l {
            Ok(l) => {
                out.valid.insert(name.to_string(), l);
            }
            Err(r) => {
                out.rejected.insert(name.to_string(), r);
            }
        }
    }
    out
}

/// flanneld's work on one node: program `flannel.1` for every other node's valid lease,
/// skip the ones it rejects (they were logged by [`leases`]' caller), and remove routes
/// of nodes that are gone. A rejected update keeps what flanneld programmed before for
/// that node, as flanneld ignores the event.
pub fn flanneld_sync(ns: &Netns, own: &str, leases: &Leases) -> Result<()> {
    for (name, l) in leases.valid.iter().filter(|(n, _)| n.as_str() != own) {
        flannel::add_peer(ns, &flannel::Peer { underlay: l.public_ip, pod_cidr: l.pod_cidr, vtep_mac: l.vtep_mac.clone() })
            .with_context(|| format!("programming {name}"))?;
    }
    let routes = ns.ip("-o route show dev flannel.1")?;
    for line in routes.lines() {
        let dst = line.split_whitespace().next().unwrap_or_default();
        let Ok(cidr) = dst.parse::<Ipv4Network>() else {
            continue;
        };
        let known =
            leases.valid.values().any(|l| l.pod_cidr == cidr) || leases.rejected.values().any(|r| r.pod_cidr == Some(cidr));
        if cidr.prefix() < 32 && !known {
            ns.ip(&format!("route del {cidr} dev flannel.1"))?;
        }
    }
    Ok(())
}

/// Reads one annotation of a node.
pub fn annotation(api: &ApiServer, node: &str, key: &str) -> Option<String> {
    api.get_node(node)?["metadata"]["annotations"][key].as_str().map(str::to_string)
}

pub fn require_lease(api: &ApiServer, node: &str) -> Result<Lease> {
    let n = api.get_node(node).ok_or_else(|| anyhow!("no node {node}"))?;
    match crate::flannel_lease::lease(&n) {
        Some(Ok(l)) => Ok(l),
        Some(Err(r)) => bail!("node {node}'s lease is one flanneld rejects: {}", r.why),
        None => bail!("node {node} has no vxlan lease: {}", n["metadata"]["annotations"]),
    }
}

/// The network that holds every [`synthetic_node`]'s podCIDR and the harness's own
/// (a net-conf.json `Network` for scale tests).
pub const SYNTHETIC_NETWORK: &str = "10.0.0.0/8";

/// Node `i` of a large cluster, as a kubelet registers it and flanneld annotates it,
/// for scale tests and the control-plane bench: named `n00042`, podCIDR 10.1.0.0/24
/// upwards (inside [`SYNTHETIC_NETWORK`], below the harness's 10.244/16), an address
/// in 172.16/12 that nobody routes here (only map entries and on-link routes follow
/// from it). At most 62,208 of them.
pub fn synthetic_node(i: u32) -> (String, Ipv4Network, Value) {
    assert!(i < 243 * 256, "synthetic node {i}: its podCIDR would reach 10.244.0.0/16");
    let pod_cidr = Ipv4Network::new(Ipv4Addr::new(10, 1 + (i / 256) as u8, (i % 256) as u8, 0), 24).expect("valid /24");
    let ip = Ipv4Addr::new(172, 16 + (i / 65536) as u8, ((i / 256) % 256) as u8, (i % 256) as u8);
    let mac = format!("0a:58:{:02x}:{:02x}:{:02x}:00", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff);
    let name = format!("n{i:05}");
    let mut node = node_manifest(&name, ip, pod_cidr);
    node["metadata"]["annotations"] = flannel_annotations(ip, &mac);
    (name, pod_cidr, node)
}
