//! Local pods: the pod bridge's egress program and `WEFT_ENDPOINTS` (local pod → its
//! veth), always; with `--fast-path`, the fast path's two programs on every pod veth.
//!
//! The bridge program ([`weft_common::maps::programs::BRIDGE_EGRESS`], on `cni0`'s
//! TC egress, through the pinned link `link_bridge_egress`) hands a routed packet for
//! a local pod to that pod's veth instead of the bridge's transmit, which would
//! segment a decapsulated super-packet in software. While it is attached, the config
//! says so (`FLAG_BRIDGE_BYPASS`) and TC decap sends super-packets straight into
//! `weft0`. The bridge is made by the CNI plugin with the first pod, and may be made
//! again: every scan attaches to the bridge there is.
//!
//! `--fast-path` puts its programs at the host end of each pod's veth: TC ingress
//! (what the pod sends, before the bridge and before `br_netfilter` runs PREROUTING,
//! where kube-proxy's DNAT happens) and TC egress (what the stack delivers to the
//! pod, whose flows then stay on the stack). Each attachment is a TCX link pinned as
//! `link_pod_egress_<ifindex>` / `link_pod_ingress_<ifindex>`, so the fast path
//! outlives the agent like the rest of the dataplane; pins of veths that are gone
//! are swept. A veth that cannot be attached is logged and retried on the next scan;
//! without its programs its pod simply takes the stack path (and is no endpoint).
//!
//! The endpoints come from the kernel's own tables, as the stack path would use them:
//! the bridge's neighbour table (pod IP → MAC, learned by ARP as for any routed
//! traffic) joined with the bridge's FDB (MAC → port, learned by the bridge). A pod
//! the join does not cover yet (no ARP exchanged) takes the bridge (and the stack
//! path), which resolves it and so fills the tables for the next packet. Once known,
//! an endpoint stays while its veth exists: fast traffic no longer refreshes the FDB
//! (its entry ages out) and a forged ARP or frame from another pod must not move it;
//! it goes with its veth (the pod's deletion). Link and neighbour events on the bridge
//! and its ports trigger a rescan; the periodic resync catches anything missed. The
//! bridge and the veths are the CNI plugin's: weft never creates or removes them.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::PathBuf,
};

use aya::programs::TcAttachType;
use futures::channel::mpsc::UnboundedReceiver;
use ipnetwork::Ipv4Network;
use rtnetlink::{
    MulticastGroup,
    packet_core::{NetlinkMessage, NetlinkPayload},
    packet_route::{RouteNetlinkMessage, link::InfoKind, neighbour::NeighbourAttribute},
    sys::SocketAddr,
};
use thiserror::Error;
use weft_common::{
    MacAddr,
    fastpath::LocalEndpoint,
    maps::{links, programs},
};

use crate::{
    dataplane::{Attached, Dataplane},
    netlink::{Link, Netlink},
};

#[derive(Debug, Error)]
pub enum PodsError {
    #[error("subscribing to link and neighbour events")]
    Subscribe(#[source] std::io::Error),
    #[error(transparent)]
    Netlink(#[from] crate::netlink::NetlinkError),
    /// Boxed: the loader's errors are large, and this one is returned often.
    #[error(transparent)]
    Dataplane(#[from] Box<crate::dataplane::DataplaneError>),
    #[error(transparent)]
    Maps(#[from] crate::maps::MapsError),
    #[error("{op} {}", path.display())]
    Pins {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, PodsError>;

impl From<crate::dataplane::DataplaneError> for PodsError {
    fn from(e: crate::dataplane::DataplaneError) -> Self {
        PodsError::Dataplane(Box::new(e))
    }
}

type Events = UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>;

/// The programs on each pod veth: (program, hook, pin prefix).
/// The flow-remembering one first: a veth must never carry fast egress without it.
const HOOKS: [(&str, TcAttachType, &str); 2] = [
    (programs::POD_INGRESS, TcAttachType::Egress, links::POD_INGRESS_PREFIX),
    (programs::POD_EGRESS, TcAttachType::Ingress, links::POD_EGRESS_PREFIX),
];

pub struct Pods {
    /// The pod bridge's name (the CNI conflist's `bridge`).
    bridge: String,
    /// Link and neighbour notifications of this network namespace.
    events: Events,
    /// `--fast-path`: the pod veths carry its programs, and only those pods are endpoints.
    fast: bool,
    /// `--fast-path`: veths this agent has seen carrying both programs (checked again
    /// on every resync).
    attached: BTreeSet<u32>,
    /// The bridge (ifindex) this agent has seen carrying the egress program.
    bypass: Option<u32>,
    /// The bridge and its ports at the last scan: whose neighbour events matter.
    watched: BTreeSet<u32>,
}

impl Pods {
    /// Subscribes to link and neighbour events (before the first scan, so nothing
    /// between the scan and the subscription is missed).
    pub fn new(bridge: &str, fast: bool) -> Result<Self> {
        let (conn, _, events) =
            rtnetlink::new_multicast_connection(&[MulticastGroup::Link, MulticastGroup::Neigh]).map_err(PodsError::Subscribe)?;
        tokio::spawn(conn);
        Ok(Pods { bridge: bridge.to_owned(), events, fast, attached: BTreeSet::new(), bypass: None, watched: BTreeSet::new() })
    }

    /// Whether the bridge's egress program was attached at the last scan.
    pub fn bypass(&self) -> bool {
        self.bypass.is_some()
    }

    /// Waits for a link event, or a neighbour event on the bridge or one of its ports
    /// (the uplink's ARP traffic is not ours), then takes every queued one with it: a
    /// burst costs one rescan.
    pub async fn changed(&mut self) {
        use futures::StreamExt;
        loop {
            let Some((msg, _)) = self.events.next().await else {
                // The subscription ended: only the periodic resync rescans from now on.
                return std::future::pending::<()>().await;
            };
            let mut relevant = self.relevant(&msg);
            while let Ok((msg, _)) = self.events.try_recv() {
                relevant |= self.relevant(&msg);
            }
            if relevant {
                return;
            }
        }
    }

    fn relevant(&self, msg: &NetlinkMessage<RouteNetlinkMessage>) -> bool {
        match &msg.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(m) | RouteNetlinkMessage::DelNeighbour(m)) => {
                self.watched.contains(&m.header.ifindex)
                    || m.attributes.iter().any(|a| matches!(a, NeighbourAttribute::Controller(b) if self.watched.contains(b)))
            }
            _ => true,
        }
    }

    /// Forgets which links carry the programs: the next [`Pods::sync`] asks the kernel.
    pub fn recheck(&mut self) {
        self.attached.clear();
        self.bypass = None;
    }

    /// Attaches the bridge's egress program (and, with `--fast-path`, the pod veths'
    /// programs) where missing, sweeps the pins of veths that are gone, and brings
    /// `WEFT_ENDPOINTS` up to date with the local pods in `pod_cidr`. Pins it creates
    /// go into `created` as they are made (a start that fails later rolls them back).
    pub async fn sync(
        &mut self,
        nl: &Netlink,
        dataplane: &mut Dataplane,
        pod_cidr: Ipv4Network,
        created: &mut Vec<PathBuf>,
    ) -> Result<()> {
        let links = nl.links().await?;
        let bridge = links.iter().find(|l| l.name == self.bridge && l.kind == Some(InfoKind::Bridge));
        let ports: Vec<&Link> = links
            .iter()
            .filter(|l| bridge.is_some_and(|b| l.master == Some(b.index)) && l.kind == Some(InfoKind::Veth))
            .collect();
        self.watched = bridge.iter().chain(&ports).map(|l| l.index).collect();
        self.sync_bypass(dataplane, bridge, created);
        self.attached.retain(|i| ports.iter().any(|p| p.index == *i));
        if self.fast {
            for port in &ports {
                if self.attached.contains(&port.index) {
                    continue;
                }
                // One veth's failure (a pod going away mid-scan) must not hold up the others.
                match attach(dataplane, port, created) {
                    Ok(()) => {
                        self.attached.insert(port.index);
                    }
                    Err(e) => {
                        tracing::warn!(iface = %port.name, "fast path: not attached ({e:#}); its pod takes the stack path")
                    }
                }
            }
            sweep(dataplane, |ifindex| ports.iter().any(|p| p.index == ifindex))?;
        }
        // With the fast path, only pods whose veth carries its programs are endpoints:
        // one that could not be attached takes the stack path both ways, as the warning
        // says. Without it, every pod on the bridge is one (for the bridge's program).
        let eligible: BTreeSet<u32> = if self.fast { self.attached.clone() } else { ports.iter().map(|p| p.index).collect() };

        let (learned, fdb) = match bridge.and_then(|b| b.mac.map(|mac| (b.index, mac))) {
            // No pod yet (the CNI plugin makes the bridge with the first one).
            None => (BTreeMap::new(), BTreeMap::new()),
            Some((index, gw_mac)) => {
                let fdb: BTreeMap<_, _> =
                    nl.bridge_fdb(index).await?.into_iter().filter(|(_, port)| ports.iter().any(|p| p.index == *port)).collect();
                let learned = nl
                    .neighbours(index)
                    .await?
                    .into_iter()
                    .filter(|(ip, _)| pod_cidr.contains(*ip) && *ip != pod_cidr.network() && *ip != pod_cidr.broadcast())
                    .filter_map(|(ip, mac)| fdb.get(&mac).map(|&ifindex| (ip, LocalEndpoint { ifindex, mac, gw_mac })))
                    .filter(|(_, e)| eligible.contains(&e.ifindex))
                    .collect();
                (learned, fdb)
            }
        };
        let current = dataplane.maps.endpoints()?;
        let desired = settle(&current, learned, &fdb, |ifindex| eligible.contains(&ifindex));
        apply(dataplane, &current, &desired)
    }
}

impl Pods {
    /// The bridge's egress program on the bridge there is (none before the first pod).
    /// A failure is logged, not fatal: without it the bridge forwards as before, and
    /// decap keeps segmenting super-packets through `weft0`'s peer.
    fn sync_bypass(&mut self, dataplane: &mut Dataplane, bridge: Option<&Link>, created: &mut Vec<PathBuf>) {
        let Some(bridge) = bridge else {
            self.bypass = None;
            return;
        };
        if self.bypass == Some(bridge.index) {
            return;
        }
        let (prog, hook, pin) = (programs::BRIDGE_EGRESS, TcAttachType::Egress, links::BRIDGE_EGRESS);
        let attached = dataplane.is_attached(prog, &bridge.name, hook).and_then(|on| {
            if !on {
                let how = dataplane.attach(prog, &bridge.name, hook, pin)?;
                tracing::info!(program = prog, iface = %bridge.name, how = ?how, "attached (pods past the bridge's transmit)");
                if how == Attached::Created {
                    created.push(dataplane.link_pin(pin));
                }
            }
            Ok(())
        });
        match attached {
            Ok(()) => self.bypass = Some(bridge.index),
            Err(e) => {
                tracing::warn!(iface = %bridge.name, "bridge egress program not attached ({e:#}); the bridge forwards alone");
                self.bypass = None;
            }
        }
    }
}

/// Both programs on `port`, each through its pinned link (adopted if an earlier agent
/// pinned it); new pins go to `created`.
fn attach(dataplane: &mut Dataplane, port: &Link, created: &mut Vec<PathBuf>) -> Result<()> {
    for (program, hook, prefix) in HOOKS {
        if dataplane.is_attached(program, &port.name, hook)? {
            continue;
        }
        let pin = format!("{prefix}{}", port.index);
        let how = dataplane.attach(program, &port.name, hook, &pin)?;
        tracing::info!(program, iface = %port.name, how = ?how, "attached (fast path)");
        if how == Attached::Created {
            created.push(dataplane.link_pin(&pin));
        }
    }
    Ok(())
}

/// The endpoints to hold: what the kernel's tables say (`learned`, from the neighbour
/// table joined with `fdb`), except that a known endpoint whose veth is still a
/// fast-path port (`fast_port`: it exists and carries the programs) is kept while
/// nothing else is known for its address (fast traffic does not refresh
/// the FDB, so its entry ages out), and kept against another veth's claim while its
/// own pod is still on its own port (`fdb` has its MAC there): only a forged ARP
/// reply or frame moves a live pod's address. Once the old pod is silent (its FDB
/// entry aged out, e.g. a veth left behind by a leaked namespace), a new claim with
/// both a neighbour and an FDB entry wins: IPAM has given the address to a new pod.
fn settle(
    current: &BTreeMap<Ipv4Addr, LocalEndpoint>,
    mut learned: BTreeMap<Ipv4Addr, LocalEndpoint>,
    fdb: &BTreeMap<MacAddr, u32>,
    fast_port: impl Fn(u32) -> bool,
) -> BTreeMap<Ipv4Addr, LocalEndpoint> {
    for (ip, known) in current.iter().filter(|(_, e)| fast_port(e.ifindex)) {
        match learned.get(ip) {
            Some(new) if new.ifindex == known.ifindex => {}
            Some(new) if fdb.get(&known.mac) == Some(&known.ifindex) => {
                tracing::warn!(pod = %ip, veth = known.ifindex, claimed_by = new.ifindex,
                    "endpoints: another veth claims this pod's address; keeping the pod's own");
                learned.insert(*ip, *known);
            }
            Some(new) => {
                tracing::info!(pod = %ip, from = known.ifindex, to = new.ifindex, "endpoints: address moved to a new pod");
            }
            None => {
                learned.insert(*ip, *known);
            }
        }
    }
    learned
}

/// Removes the pinned pod-veth links whose veth `keep` does not name (the veth is
/// gone: its links are defunct and only the pins hold them).
fn sweep(dataplane: &Dataplane, keep: impl Fn(u32) -> bool) -> Result<()> {
    for (ifindex, path) in pod_link_pins(dataplane)? {
        if !keep(ifindex) {
            crate::dataplane::unpin(&path).map_err(|source| PodsError::Pins { op: "unpinning", path: path.clone(), source })?;
            tracing::info!(pin = %path.display(), "fast path: veth gone, link unpinned");
        }
    }
    Ok(())
}

/// The pinned pod-veth links: (veth ifindex, pin path).
fn pod_link_pins(dataplane: &Dataplane) -> Result<Vec<(u32, PathBuf)>> {
    let dir = dataplane.link_pin("");
    let entries = std::fs::read_dir(&dir).map_err(|source| PodsError::Pins { op: "listing", path: dir.clone(), source })?;
    Ok(entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let ifindex = HOOKS.iter().find_map(|(_, _, prefix)| name.strip_prefix(prefix))?.parse().ok()?;
            Some((ifindex, e.path()))
        })
        .collect())
}

/// Writes the difference between `current` (what `WEFT_ENDPOINTS` holds) and `desired`.
fn apply(
    dataplane: &mut Dataplane,
    current: &BTreeMap<Ipv4Addr, LocalEndpoint>,
    desired: &BTreeMap<Ipv4Addr, LocalEndpoint>,
) -> Result<()> {
    let maps = &mut dataplane.maps;
    for ip in current.keys().filter(|ip| !desired.contains_key(ip)) {
        maps.remove_endpoint(*ip)?;
        tracing::debug!(pod = %ip, "endpoint removed");
    }
    for (ip, ep) in desired.iter().filter(|(ip, ep)| current.get(ip) != Some(ep)) {
        maps.set_endpoint(*ip, *ep)?;
        tracing::debug!(pod = %ip, ifindex = ep.ifindex, "endpoint");
    }
    Ok(())
}

/// `--fast-path` off: takes the programs off every pod veth (their pinned links go);
/// weft0's encap stops remembering flows with the config flag. The endpoints stay for
/// the bridge's program: the next scan settles them.
pub fn disable_fast_path(dataplane: &mut Dataplane) -> Result<()> {
    let pins = pod_link_pins(dataplane)?;
    if !pins.is_empty() {
        sweep(dataplane, |_| false)?;
        tracing::info!(links = pins.len(), "removed the fast path from the pod veths (--fast-path off)");
    }
    if dataplane.detach_pinned(links::WEFT0_INGRESS)? {
        tracing::info!("removed the fast path from weft0's ingress (--fast-path off)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(ifindex: u32, last: u8) -> LocalEndpoint {
        LocalEndpoint { ifindex, mac: [2, 0, 0, 0, 0, last], gw_mac: [2, 0, 0, 0, 0, 1] }
    }

    #[test]
    fn endpoints_stay_with_their_veth() {
        let ip = |d| Ipv4Addr::new(10, 244, 1, d);
        let current = BTreeMap::from([(ip(5), ep(7, 5)), (ip(6), ep(8, 6)), (ip(9), ep(9, 9)), (ip(11), ep(11, 11))]);
        let learned = BTreeMap::from([
            // A forged claim: pod 6's address from veth 7, while pod 6 is on its port.
            (ip(6), ep(7, 5)),
            // A new pod.
            (ip(10), ep(10, 10)),
            // Pod 5's MAC changed on its own veth.
            (ip(5), ep(7, 55)),
            // Address 11 given to a new pod on veth 12; veth 11 lingers, silent.
            (ip(11), ep(12, 12)),
        ]);
        let fdb = BTreeMap::from([(ep(8, 6).mac, 8), (ep(7, 55).mac, 7), (ep(10, 10).mac, 10), (ep(12, 12).mac, 12)]);
        // Veth 9 is gone (pod 9 deleted).
        let settled = settle(&current, learned, &fdb, |i| [7, 8, 10, 11, 12].contains(&i));
        assert_eq!(settled, BTreeMap::from([(ip(5), ep(7, 55)), (ip(6), ep(8, 6)), (ip(10), ep(10, 10)), (ip(11), ep(12, 12))]));
        // Pod 6 silent (its FDB entry aged out), nobody else claiming: kept.
        let settled = settle(&current, BTreeMap::new(), &BTreeMap::new(), |i| i == 8);
        assert_eq!(settled, BTreeMap::from([(ip(6), ep(8, 6))]));
    }
}
