//! The node table from the Kubernetes API server, and this node's advertisement.
//!
//! Every node's pod CIDR is `spec.podCIDR(s)`, assigned by kube-controller-manager;
//! how to reach it is in Flannel's annotations, which Flannel nodes and weft nodes
//! both publish. A node whose annotations are unusable, whose pod CIDR lies outside
//! the cluster network, or overlaps another node's, is skipped with a warning; the
//! others are unaffected.

use std::{collections::BTreeMap, path::Path, sync::Arc, time::Duration};

use ipnetwork::Ipv4Network;
use k8s_openapi::api::core::v1::Node;
use kube::{
    Api, Client, Config,
    api::{Patch, PatchParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use thiserror::Error;

use crate::{
    annotations::{self, Advert, Skip},
    node_object::{NodeFields, WatchedNode},
    peers::{Mac, NodeEntry, NodeTable},
};

#[derive(Debug, Error)]
pub enum KubeError {
    #[error("reading kubeconfig {path}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("inferring the API server config (in-cluster or $KUBECONFIG); pass --kubeconfig-file")]
    Infer(#[source] kube::config::InferConfigError),
    #[error("creating the API client")]
    Client(#[source] kube::Error),
    #[error("--kube-api-url {0:?} is not a URL")]
    ApiUrl(String),
    #[error("env variables POD_NAME and POD_NAMESPACE must be set (or NODE_NAME, or --node-name): this node's name is unknown")]
    NoPodName,
    #[error("retrieving pod spec for '{namespace}/{name}' (to learn this node's name)")]
    OwnPod {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("node name not present in pod spec '{namespace}/{name}'")]
    OwnPodUnscheduled { namespace: String, name: String },
    #[error("node {name}: {reason}")]
    OwnNode { name: String, uid: Option<String>, reason: String },
    #[error("{op} node {name}")]
    Api {
        op: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
}

pub async fn client(kubeconfig: Option<&Path>, api_url: Option<&str>) -> Result<Client, KubeError> {
    let url = api_url.map(|u| u.parse::<axum::http::Uri>().map_err(|_| KubeError::ApiUrl(u.into()))).transpose()?;
    let mut config = match (kubeconfig, &url) {
        (Some(path), _) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|source| KubeError::Kubeconfig { path: path.display().to_string(), source })?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|source| KubeError::Kubeconfig { path: path.display().to_string(), source })?
        }
        // flanneld's --kube-api-url alone: that server, with the in-cluster credentials if any.
        (None, Some(url)) => Config::infer().await.unwrap_or_else(|_| Config::new(url.clone())),
        (None, None) => Config::infer().await.map_err(KubeError::Infer)?,
    };
    if let Some(url) = url {
        config.cluster_url = url;
    }
    Client::try_from(config).map_err(KubeError::Client)
}

/// This node's name as flanneld finds it without `NODE_NAME`: the `spec.nodeName` of
/// the agent's own Pod, named by `POD_NAME` and `POD_NAMESPACE` (the downward API).
pub async fn own_pod_node(client: &Client) -> Result<String, KubeError> {
    let (Some(name), Some(namespace)) =
        (std::env::var("POD_NAME").ok().filter(|v| !v.is_empty()), std::env::var("POD_NAMESPACE").ok().filter(|v| !v.is_empty()))
    else {
        return Err(KubeError::NoPodName);
    };
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &namespace);
    let pod =
        pods.get(&name).await.map_err(|source| KubeError::OwnPod { namespace: namespace.clone(), name: name.clone(), source })?;
    pod.spec.and_then(|s| s.node_name).filter(|n| !n.is_empty()).ok_or(KubeError::OwnPodUnscheduled { namespace, name })
}

/// Watch reconnects: 0.5 s doubling to at most 5 s, so a node catches up within
/// seconds of the API server's return (kube's default waits up to 30 s).
#[derive(Clone, Debug)]
pub struct Reconnect {
    next: Duration,
}

impl Reconnect {
    const MIN: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(5);
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect { next: Self::MIN }
    }
}

impl Iterator for Reconnect {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let now = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        Some(now)
    }
}

impl kube::runtime::utils::Backoff for Reconnect {
    fn reset(&mut self) {
        self.next = Self::MIN;
    }
}

/// This node's Node and its podCIDR, waited for: the Node may not exist yet, or have
/// no podCIDR until kube-controller-manager (`--allocate-node-cidrs`) or weft's
/// allocator (`weft-agent allocate-node-cidrs`) assigns one. Meanwhile the agent is
/// live but not ready (`/readyz` says what it waits for) and logs one line per
/// change of reason. It watches its own Node (a field selector on its name), so it
/// starts as soon as the podCIDR is written; the watch relists after errors.
pub async fn wait_for_own_node(
    api: &Api<Node>,
    name: &str,
    health: &crate::healthz::Health,
) -> Result<(Node, Ipv4Network), KubeError> {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let stream = watcher(api.clone(), config).default_backoff();
    tokio::pin!(stream);
    let mut last = String::new();
    let mut listed_any = false;
    let mut report = |why: String| {
        if why != last {
            tracing::info!(node = name, "{why}");
            health.starting(format!("node {name}: {why}"));
            last = why;
        }
    };
    report("waiting for the API server".to_string());
    while let Some(event) = stream.next().await {
        let node = match event {
            Ok(watcher::Event::Init) => {
                listed_any = false;
                continue;
            }
            Ok(watcher::Event::InitApply(n) | watcher::Event::Apply(n)) => {
                listed_any = true;
                n
            }
            Ok(watcher::Event::InitDone) if !listed_any => {
                report("the Node object does not exist yet; waiting".to_string());
                continue;
            }
            Ok(watcher::Event::Delete(_)) => {
                report("the Node object does not exist yet; waiting".to_string());
                continue;
            }
            Ok(watcher::Event::InitDone) => continue,
            Err(e) => {
                report(format!("API server unavailable ({e}); retrying"));
                continue;
            }
        };
        match annotations::pod_cidr(&node) {
            Ok(Some(cidr)) => return Ok((node, cidr)),
            Ok(None) => report(
                "no spec.podCIDR yet: waiting for kube-controller-manager (--allocate-node-cidrs) or weft's allocator \
                 (weft-agent allocate-node-cidrs) to assign one"
                    .to_string(),
            ),
            Err(reason) => return Err(KubeError::OwnNode { name: name.into(), uid: node.metadata.uid.clone(), reason }),
        }
    }
    // The backoff never ends the stream.
    Err(KubeError::OwnNode { name: name.into(), uid: None, reason: "the Node watch ended".into() })
}

/// What the cluster's node list means for this node: its peers, and who was skipped why.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Peers {
    pub entries: Vec<NodeEntry>,
    pub skipped: BTreeMap<String, Skip>,
}

/// Peers from a snapshot of all nodes. Conflicts are settled by age: of two nodes
/// with overlapping pod CIDRs, or advertising one `public-ip`, the newer one is
/// skipped (the older one was fine until the newcomer arrived), and nothing may
/// overlap this node's own CIDR or claim its address. A `public-ip` no tunnel can
/// reach ([`annotations::unusable_address`]) is skipped too.
pub fn peers(own: &NodeEntry, nodes: &[Arc<WatchedNode>], network: Ipv4Network, vni: u32) -> Peers {
    let mut sorted: Vec<&WatchedNode> = nodes.iter().map(Arc::as_ref).collect();
    sorted.sort_by_cached_key(|n| (n.metadata.creation_timestamp.clone().map(|t| t.0), n.metadata.name.clone()));
    let mut out = Peers::default();
    let mut taken = Taken::default();
    taken.insert(own.pod_cidr, &own.name);
    let mut addresses = BTreeMap::from([(own.underlay_ip, own.name.clone())]);
    for node in sorted {
        let Some(name) = node.metadata.name.clone() else {
            continue;
        };
        if name == own.name {
            continue;
        }
        let skip = |out: &mut Peers, s: Skip| {
            out.skipped.insert(name.clone(), s);
        };
        let pod_cidr = match annotations::pod_cidr(node) {
            Ok(Some(c)) => c,
            Ok(None) => {
                skip(&mut out, Skip::NotVxlan("no podCIDR yet".into()));
                continue;
            }
            Err(reason) => {
                skip(&mut out, Skip::Malformed(reason));
                continue;
            }
        };
        if !(network.contains(pod_cidr.network()) && pod_cidr.prefix() >= network.prefix()) {
            skip(&mut out, Skip::Malformed(format!("podCIDR {pod_cidr} lies outside the cluster network {network}")));
            continue;
        }
        if let Some((other, owner)) = taken.overlapping(pod_cidr) {
            skip(&mut out, Skip::Malformed(format!("podCIDR {pod_cidr} overlaps {other} of node {owner}")));
            continue;
        }
        let (public_ip, vtep_mac) = match annotations::parse_peer(node, vni) {
            Ok(Advert { public_ip, vtep_mac, .. }) => (public_ip, vtep_mac),
            Err(s) => {
                skip(&mut out, s);
                continue;
            }
        };
        if let Some(why) = annotations::unusable_address(public_ip, network) {
            skip(&mut out, Skip::Malformed(format!("{}: {public_ip} {why}", annotations::PUBLIC_IP)));
            continue;
        }
        // Two nodes behind one address: decap could not tell them apart, and encap
        // would send both nodes' pods to one of them.
        if let Some(owner) = addresses.get(&public_ip) {
            skip(&mut out, Skip::Malformed(format!("{}: {public_ip} is already node {owner}'s", annotations::PUBLIC_IP)));
            continue;
        }
        taken.insert(pod_cidr, &name);
        addresses.insert(public_ip, name.clone());
        out.entries.push(NodeEntry { name, underlay_ip: public_ip, pod_cidr, vtep_mac });
    }
    out
}

/// PodCIDRs already given out, as disjoint address ranges by first address: an
/// overlap check is one ordered lookup, so a table of thousands of nodes is built in
/// O(n log n) (a pairwise check cost 60 ms per Node event at 5,000 nodes).
#[derive(Default)]
struct Taken(std::collections::BTreeMap<u32, (Ipv4Network, String)>);

impl Taken {
    fn insert(&mut self, cidr: Ipv4Network, owner: &str) {
        self.0.insert(u32::from(cidr.network()), (cidr, owner.to_owned()));
    }

    /// The given-out CIDR `cidr` overlaps, if any. The ranges are disjoint, so only the
    /// one starting last at or before `cidr`'s end can reach into it.
    fn overlapping(&self, cidr: Ipv4Network) -> Option<&(Ipv4Network, String)> {
        let end = u32::from(cidr.broadcast());
        let (_, found) = self.0.range(..=end).next_back()?;
        (u32::from(found.0.broadcast()) >= u32::from(cidr.network())).then_some(found)
    }
}

/// Drops what the agent never reads from a watched Node before the store keeps it
/// ([`WatchedNode`] already left out the spec and status fields weft does not read):
/// managed fields, labels and others' annotations are most of what remains, and the
/// store holds every Node of the cluster. The own node keeps its conditions
/// (NetworkUnavailable is ours to clear).
pub fn slim(own: &str, node: &mut WatchedNode) {
    node.metadata.managed_fields = None;
    node.metadata.labels = None;
    if let Some(a) = node.metadata.annotations.as_mut() {
        a.retain(|k, _| k.starts_with(annotations::PREFIX) && k.as_bytes().get(annotations::PREFIX.len()) == Some(&b'/'));
    }
    let is_own = node.metadata.name.as_deref() == Some(own);
    if let Some(status) = node.status.as_mut()
        && !is_own
    {
        status.conditions = None;
    }
}

/// The table the reconciler works from: this node first, then its peers.
pub fn table(own: &NodeEntry, peers: &Peers) -> NodeTable {
    let mut nodes = vec![own.clone()];
    nodes.extend(peers.entries.iter().cloned());
    NodeTable { nodes }
}

/// Publishes this node's VXLAN endpoint in Flannel's format (through nodes/status,
/// as Flannel does).
pub async fn advertise(api: &Api<Node>, name: &str, advert: &Advert) -> Result<(), KubeError> {
    api.patch_status(name, &PatchParams::default(), &Patch::Strategic(annotations::advert_patch(advert)))
        .await
        .map(|_| ())
        .map_err(|source| KubeError::Api { op: "advertising on", name: name.into(), source })
}

/// Clears `NetworkUnavailable` (the condition kubelet and the scheduler wait for).
pub async fn set_network_available(api: &Api<Node>, name: &str) -> Result<(), KubeError> {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    api.patch_status(name, &PatchParams::default(), &Patch::Strategic(annotations::network_available_patch(&now)))
        .await
        .map(|_| ())
        .map_err(|source| KubeError::Api { op: "setting NetworkUnavailable=False on", name: name.into(), source })
}

/// The VtepMAC to use: the one advertised before (so peers' state stays valid across
/// restarts), else the existing device's, else a new locally administered unicast one.
pub fn choose_vtep_mac(node: &impl NodeFields, existing: Option<Mac>) -> Mac {
    annotations::own_vtep_mac(node).or(existing).unwrap_or_else(random_mac)
}

fn random_mac() -> Mac {
    let mut b = [0u8; 6];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    b[0] = (b[0] & 0xfe) | 0x02; // unicast, locally administered
    Mac(b)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::annotations::{BACKEND_DATA, BACKEND_TYPE, PUBLIC_IP, SUBNET_MANAGER};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn node(name: &str, cidr: &str, ip: &str, mac: &str, age: i64) -> Arc<WatchedNode> {
        let mut n = WatchedNode::default();
        n.metadata.name = Some(name.into());
        n.metadata.creation_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + age).unwrap()));
        n.metadata.annotations = Some(
            [
                (BACKEND_TYPE, "vxlan".to_string()),
                (BACKEND_DATA, format!(r#"{{"VNI":1,"VtepMAC":"{mac}"}}"#)),
                (PUBLIC_IP, ip.to_string()),
                (SUBNET_MANAGER, "true".to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        );
        n.spec = Some(crate::node_object::WatchedSpec { pod_cidr: Some(cidr.into()), ..Default::default() });
        Arc::new(n)
    }

    fn own() -> NodeEntry {
        NodeEntry {
            name: "a".into(),
            underlay_ip: Ipv4Addr::new(198, 19, 0, 10),
            pod_cidr: "10.244.1.0/24".parse().unwrap(),
            vtep_mac: "0a:58:0a:f4:01:00".parse().unwrap(),
        }
    }

    fn net() -> Ipv4Network {
        "10.244.0.0/16".parse().unwrap()
    }

    #[test]
    fn valid_nodes_become_peers_and_own_node_is_left_out() {
        let nodes = vec![
            node("a", "10.244.1.0/24", "198.19.0.10", "0a:58:0a:f4:01:00", 0),
            node("b", "10.244.2.0/24", "198.19.0.11", "0a:58:0a:f4:02:00", 1),
        ];
        let p = peers(&own(), &nodes, net(), 1);
        assert_eq!(p.entries.len(), 1);
        assert_eq!(p.entries[0].name, "b");
        assert_eq!(p.entries[0].underlay_ip, Ipv4Addr::new(198, 19, 0, 11));
        assert!(p.skipped.is_empty());
        assert_eq!(table(&own(), &p).nodes.len(), 2);
    }

    #[test]
    fn bad_nodes_are_skipped_each_with_its_reason_others_unaffected() {
        let mut no_cidr = (*node("e", "", "198.19.0.14", "0a:58:0a:f4:05:00", 5)).clone();
        no_cidr.spec = None;
        let mut bare = (*node("f", "10.244.6.0/24", "198.19.0.15", "0a:58:0a:f4:06:00", 6)).clone();
        bare.metadata.annotations = None;
        let nodes = vec![
            node("b", "10.244.2.0/24", "198.19.0.11", "0a:58:0a:f4:02:00", 1),
            node("c", "10.245.0.0/24", "198.19.0.12", "0a:58:0a:f4:03:00", 2),
            node("d", "10.244.2.0/25", "198.19.0.13", "0a:58:0a:f4:04:00", 3),
            node("own-overlap", "10.244.1.128/25", "198.19.0.16", "0a:58:0a:f4:07:00", 4),
            Arc::new(no_cidr),
            Arc::new(bare),
            node("g", "10.244.8.0/24", "198.19.0.17", "zz:58:0a:f4:08:00", 7),
            node("h", "10.244.9.0/24", "198.19.0.18", "0a:58:0a:f4:09:00", 8),
        ];
        let p = peers(&own(), &nodes, net(), 1);
        let names: Vec<&str> = p.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["b", "h"]);
        let reason = |n: &str| format!("{:?}", p.skipped[n]);
        assert!(reason("c").contains("outside the cluster network 10.244.0.0/16"), "{}", reason("c"));
        assert!(reason("d").contains("overlaps 10.244.2.0/24 of node b"), "{}", reason("d"));
        assert!(reason("own-overlap").contains("of node a"), "{}", reason("own-overlap"));
        assert!(matches!(p.skipped["e"], Skip::NotVxlan(_)));
        assert!(matches!(p.skipped["f"], Skip::NotVxlan(_)));
        assert!(matches!(p.skipped["g"], Skip::Malformed(_)));
    }

    #[test]
    fn of_two_overlapping_nodes_the_newer_is_skipped() {
        let older = node("z-old", "10.244.5.0/24", "198.19.0.20", "0a:58:0a:f4:20:00", 1);
        let newer = node("a-new", "10.244.5.0/24", "198.19.0.21", "0a:58:0a:f4:21:00", 9);
        for nodes in [vec![older.clone(), newer.clone()], vec![newer, older]] {
            let p = peers(&own(), &nodes, net(), 1);
            assert_eq!(p.entries.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["z-old"]);
            assert!(p.skipped.contains_key("a-new"));
        }
    }

    #[test]
    fn a_public_ip_no_tunnel_can_reach_is_skipped_with_its_reason() {
        let cases = [
            ("zero", "0.0.0.0", "0.0.0.0/8"),
            ("lo", "127.0.0.1", "loopback"),
            ("metadata", "169.254.169.254", "link-local"),
            ("mcast", "224.0.0.5", "multicast"),
            ("bcast", "255.255.255.255", "broadcast"),
            ("pod", "10.244.200.1", "inside the cluster network 10.244.0.0/16"),
        ];
        let mut nodes = vec![node("b", "10.244.2.0/24", "198.19.0.11", "0a:58:0a:f4:02:00", 1)];
        for (i, (name, ip, _)) in cases.iter().enumerate() {
            nodes.push(node(name, &format!("10.244.{}.0/24", 10 + i), ip, "0a:58:0a:f4:0a:00", 10 + i as i64));
        }
        let p = peers(&own(), &nodes, net(), 1);
        assert_eq!(p.entries.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["b"]);
        for (name, ip, why) in cases {
            match &p.skipped[name] {
                Skip::Malformed(m) => assert!(m.contains(&format!("public-ip: {ip} ")) && m.contains(why), "{name}: {m}"),
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn of_two_nodes_with_one_public_ip_the_newer_is_skipped_and_none_takes_ours() {
        let older = node("z-old", "10.244.5.0/24", "198.19.0.20", "0a:58:0a:f4:20:00", 1);
        let newer = node("a-new", "10.244.6.0/24", "198.19.0.20", "0a:58:0a:f4:21:00", 9);
        let thief = node("m", "10.244.7.0/24", "198.19.0.10", "0a:58:0a:f4:22:00", 0);
        for nodes in [vec![older.clone(), newer.clone(), thief.clone()], vec![thief, newer, older]] {
            let p = peers(&own(), &nodes, net(), 1);
            assert_eq!(p.entries.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["z-old"]);
            let reason = |n: &str| format!("{:?}", p.skipped[n]);
            assert!(reason("a-new").contains("public-ip: 198.19.0.20 is already node z-old's"), "{}", reason("a-new"));
            assert!(reason("m").contains("198.19.0.10 is already node a's"), "this node's own address: {}", reason("m"));
        }
        // Once the older node is gone, the newer one is a peer (its podCIDR was never taken).
        let p = peers(&own(), &[node("a-new", "10.244.6.0/24", "198.19.0.20", "0a:58:0a:f4:21:00", 9)], net(), 1);
        assert_eq!(p.entries.len(), 1);
    }

    #[test]
    fn overlap_index_finds_containment_both_ways_and_not_neighbours() {
        let mut t = Taken::default();
        for (c, o) in [("10.244.4.0/24", "d"), ("10.244.8.0/22", "h"), ("10.244.1.0/24", "a")] {
            t.insert(c.parse().unwrap(), o);
        }
        let owner = |c: &str| t.overlapping(c.parse().unwrap()).map(|(_, o)| o.clone());
        assert_eq!(owner("10.244.4.128/25"), Some("d".into()), "inside a given-out /24");
        assert_eq!(owner("10.244.0.0/21"), Some("d".into()), "around given-out /24s");
        assert_eq!(owner("10.244.11.0/24"), Some("h".into()), "inside the /22's last /24");
        assert_eq!(owner("10.244.0.0/16"), Some("h".into()));
        for free in ["10.244.0.0/24", "10.244.2.0/23", "10.244.5.0/24", "10.244.7.0/24", "10.244.12.0/24"] {
            assert_eq!(owner(free), None, "{free} touches nothing given out");
        }
    }

    #[test]
    fn vtep_mac_is_reused_from_the_annotation() {
        let n = node("a", "10.244.1.0/24", "198.19.0.10", "0a:58:0a:f4:01:00", 0);
        assert_eq!(choose_vtep_mac(n.as_ref(), None).to_string(), "0a:58:0a:f4:01:00");
        let mut fresh = (*n).clone();
        fresh.metadata.annotations = None;
        let existing: Mac = "0a:00:00:00:00:99".parse().unwrap();
        assert_eq!(choose_vtep_mac(&fresh, Some(existing)), existing);
        let m = choose_vtep_mac(&fresh, None);
        assert_eq!(m.0[0] & 0x03, 0x02, "locally administered unicast: {m}");
        assert_ne!(choose_vtep_mac(&fresh, None), m, "random");
    }

    #[test]
    fn reconnect_backoff_doubles_to_five_seconds_and_resets() {
        use kube::runtime::utils::Backoff as _;
        let mut b = Reconnect::default();
        let delays: Vec<u64> = b.by_ref().take(6).map(|d| d.as_millis() as u64).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 5000, 5000]);
        b.reset();
        assert_eq!(b.next(), Some(Duration::from_millis(500)));
    }
}
