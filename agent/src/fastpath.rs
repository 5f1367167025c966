//! `--fast-path`: attaches the pod-egress program to every pod's veth and keeps
//! `WEFT_ENDPOINTS` (local pod → its veth) in step with the kernel.
//!
//! The program sits at the host end of each pod's veth (TC ingress: what the pod
//! sends), before the bridge: there a packet is still as the pod sent it, before
//! `br_netfilter` runs PREROUTING (and kube-proxy's DNAT) for the bridge. Each
//! attachment is a TCX link pinned as `link_pod_egress_<ifindex>`, so the fast path
//! outlives the agent like the rest of the dataplane; pins of veths that are gone
//! are swept.
//!
//! The endpoints come from what the kernel has already validated, not from packets:
//! the bridge's neighbour table (pod IP → MAC, learned by ARP as for any routed
//! traffic) joined with the bridge's FDB (MAC → port, learned by the bridge). A pod
//! the join does not cover yet (no ARP exchanged, or its veth just went) takes the
//! stack path, which resolves it and so fills the tables for the next packet.
//! Link and neighbour events trigger a rescan; the periodic resync catches anything
//! missed. The bridge and the veths are the CNI plugin's: weft never creates or
//! removes them.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::PathBuf,
};

use anyhow::{Context, Result};
use aya::programs::TcAttachType;
use futures::channel::mpsc::UnboundedReceiver;
use ipnetwork::Ipv4Network;
use rtnetlink::{
    MulticastGroup,
    packet_core::NetlinkMessage,
    packet_route::{RouteNetlinkMessage, link::InfoKind},
    sys::SocketAddr,
};
use weft_common::{
    fastpath::LocalEndpoint,
    maps::{links, programs},
};

use crate::{
    dataplane::{Attached, Dataplane},
    netlink::Netlink,
};

type Events = UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>;

pub struct FastPath {
    /// The pod bridge's name (the CNI conflist's `bridge`).
    bridge: String,
    /// Link and neighbour notifications of this network namespace.
    events: Events,
    /// Veths this agent has seen carrying our program (checked again on every resync).
    attached: BTreeSet<u32>,
}

impl FastPath {
    /// Subscribes to link and neighbour events (before the first scan, so nothing
    /// between the scan and the subscription is missed).
    pub fn new(bridge: &str) -> Result<Self> {
        let (conn, _, events) = rtnetlink::new_multicast_connection(&[MulticastGroup::Link, MulticastGroup::Neigh])
            .context("subscribing to link and neighbour events")?;
        tokio::spawn(conn);
        Ok(FastPath { bridge: bridge.to_owned(), events, attached: BTreeSet::new() })
    }

    /// Waits for the next link or neighbour event, then takes every queued one with it:
    /// a burst costs one rescan.
    pub async fn changed(&mut self) {
        use futures::StreamExt;
        if self.events.next().await.is_none() {
            // The subscription ended: only the periodic resync rescans from now on.
            std::future::pending::<()>().await;
        }
        while self.events.try_recv().is_ok() {}
    }

    /// Forgets which veths carry the program: the next [`FastPath::sync`] asks the kernel.
    pub fn recheck(&mut self) {
        self.attached.clear();
    }

    /// Attaches to every pod veth on the bridge that lacks the program, sweeps the pins
    /// of veths that are gone, and brings `WEFT_ENDPOINTS` to the kernel's view of the
    /// local pods in `pod_cidr`. Returns the pins it created.
    pub async fn sync(&mut self, nl: &Netlink, dataplane: &mut Dataplane, pod_cidr: Ipv4Network) -> Result<Vec<PathBuf>> {
        let links = nl.links().await?;
        let bridge = links.iter().find(|l| l.name == self.bridge && l.kind == Some(InfoKind::Bridge));
        let ports: Vec<_> = links
            .iter()
            .filter(|l| bridge.is_some_and(|b| l.master == Some(b.index)) && l.kind == Some(InfoKind::Veth))
            .collect();
        self.attached.retain(|i| ports.iter().any(|p| p.index == *i));
        let mut created = Vec::new();
        for port in &ports {
            if self.attached.contains(&port.index) {
                continue;
            }
            let pin = format!("{}{}", links::POD_EGRESS_PREFIX, port.index);
            if !dataplane.is_attached(programs::POD_EGRESS, &port.name, TcAttachType::Ingress)? {
                let how = dataplane.attach(programs::POD_EGRESS, &port.name, TcAttachType::Ingress, &pin)?;
                tracing::info!(program = programs::POD_EGRESS, iface = %port.name, how = ?how, "attached (fast path)");
                if how == Attached::Created {
                    created.push(dataplane.link_pin(&pin));
                }
            }
            self.attached.insert(port.index);
        }
        sweep(dataplane, |ifindex| ports.iter().any(|p| p.index == ifindex))?;

        let desired = match bridge.and_then(|b| b.mac.map(|mac| (b.index, mac))) {
            // No pod yet (the CNI plugin makes the bridge with the first one).
            None => BTreeMap::new(),
            Some((index, gw_mac)) => {
                let fdb: BTreeMap<_, _> =
                    nl.bridge_fdb(index).await?.into_iter().filter(|(_, port)| ports.iter().any(|p| p.index == *port)).collect();
                nl.neighbours(index)
                    .await?
                    .into_iter()
                    .filter(|(ip, _)| pod_cidr.contains(*ip) && *ip != pod_cidr.network() && *ip != pod_cidr.broadcast())
                    .filter_map(|(ip, mac)| fdb.get(&mac).map(|&ifindex| (ip, LocalEndpoint { ifindex, mac, gw_mac })))
                    .collect()
            }
        };
        apply(dataplane, desired)?;
        Ok(created)
    }
}

/// Removes the pinned pod-veth links whose veth `keep` does not name (the veth is
/// gone: its link is defunct and only the pin holds it).
fn sweep(dataplane: &Dataplane, keep: impl Fn(u32) -> bool) -> Result<()> {
    for (ifindex, path) in pod_link_pins(dataplane)? {
        if !keep(ifindex) {
            std::fs::remove_file(&path).with_context(|| format!("unpinning {}", path.display()))?;
            tracing::info!(pin = %path.display(), "fast path: veth gone, link unpinned");
        }
    }
    Ok(())
}

/// The pinned pod-veth links: (veth ifindex, pin path).
fn pod_link_pins(dataplane: &Dataplane) -> Result<Vec<(u32, PathBuf)>> {
    let dir = dataplane.link_pin("");
    let entries = std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?;
    Ok(entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let ifindex = name.strip_prefix(links::POD_EGRESS_PREFIX)?.parse().ok()?;
            Some((ifindex, e.path()))
        })
        .collect())
}

/// Writes the difference between `WEFT_ENDPOINTS` and `desired`.
fn apply(dataplane: &mut Dataplane, desired: BTreeMap<Ipv4Addr, LocalEndpoint>) -> Result<()> {
    let maps = &mut dataplane.maps;
    let current = maps.endpoints()?;
    for ip in current.keys().filter(|ip| !desired.contains_key(ip)) {
        maps.remove_endpoint(*ip)?;
        tracing::debug!(pod = %ip, "fast path: endpoint removed");
    }
    for (ip, ep) in desired.iter().filter(|(ip, ep)| current.get(ip) != Some(ep)) {
        maps.set_endpoint(*ip, *ep)?;
        tracing::debug!(pod = %ip, ifindex = ep.ifindex, "fast path: endpoint");
    }
    Ok(())
}

/// `--fast-path` off: takes the program off every pod veth (their pinned links go)
/// and empties the endpoints; weft0's encap stops remembering flows with the config flag.
pub fn disable(dataplane: &mut Dataplane) -> Result<()> {
    let pins = pod_link_pins(dataplane)?;
    if !pins.is_empty() {
        sweep(dataplane, |_| false)?;
        tracing::info!(veths = pins.len(), "removed the fast path from the pod veths (--fast-path off)");
    }
    apply(dataplane, BTreeMap::new())
}
