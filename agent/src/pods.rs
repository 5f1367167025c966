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
//! Each pod veth carries weft's programs at its host end: with `--pod-source-check`
//! (the default) or `--fast-path`, one at TC ingress (what the pod sends, before the
//! bridge and before `br_netfilter` runs PREROUTING, where kube-proxy's DNAT happens:
//! the source check, then the fast path's encapsulation); with `--fast-path`, one at
//! TC egress too (what the stack delivers to the pod, whose flows then stay on the
//! stack). Each attachment is a link pinned as `link_pod_egress_<ifindex>` /
//! `link_pod_ingress_<ifindex>`, so the programs outlive the agent like the rest of the
//! dataplane; pins of veths that are gone, or of programs no longer wanted, are swept.
//! A veth that cannot be attached is logged and retried on the next scan.
//!
//! The endpoints come from the pods' CNI results ([`crate::cni_results`]): the address
//! IPAM gave each pod and its `eth0` MAC, on the veth the bridge plugin made — never
//! from what a pod sends, so a pod cannot claim a neighbour's address, before or after
//! the neighbour exists. Only a veth whose endpoint is known carries the programs (the
//! source check would drop everything else it sends); until its result is read — the
//! runtime writes it just after ADD returns, so a new veth is rescanned every 250 ms
//! until it is — its pod takes the stack path unchecked, and one that stays so is
//! logged. Once known, an endpoint stays while its veth exists. Link events trigger a
//! rescan; the periodic resync catches anything missed. The bridge and the veths are
//! the CNI plugin's: weft never creates or removes them.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::programs::TcAttachType;
use futures::channel::mpsc::UnboundedReceiver;
use ipnetwork::Ipv4Network;
use rtnetlink::{
    MulticastGroup,
    packet_core::NetlinkMessage,
    packet_route::{RouteNetlinkMessage, link::InfoKind},
    sys::SocketAddr,
};
use thiserror::Error;
use weft_common::{
    MacAddr,
    fastpath::LocalEndpoint,
    maps::{links, programs},
};

use crate::{
    cni_results,
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

/// Whether a pod veth carries `program`: the source check needs only the veth's
/// ingress; the flow-remembering egress program is the fast path's alone (it would
/// only cost every packet delivered to the pod a program run).
fn wanted(program: &str, fast: bool) -> bool {
    fast || program == programs::POD_EGRESS
}

pub struct Pods {
    /// The pod bridge's name (the CNI conflist's `bridge`).
    bridge: String,
    /// Link notifications of this network namespace.
    events: Events,
    /// `--fast-path`: the pod veths' programs encapsulate, and only pods whose veth
    /// carries them are endpoints.
    fast: bool,
    /// `--pod-source-check`: the pod veths' programs drop what a pod sends as another.
    source_check: bool,
    /// libcni's cache directory, where the pods' CNI results are.
    cni_cache_dir: PathBuf,
    /// Veths this agent has seen carrying both programs (checked again on every resync).
    attached: BTreeSet<u32>,
    /// The bridge (ifindex) this agent has seen carrying the egress program.
    bypass: Option<u32>,
    /// Ports with no CNI result at the last scan: since when, and whether that was logged.
    unverified: BTreeMap<u32, (Instant, bool)>,
}

/// How often ports without a CNI result are rescanned: a new pod's result is written
/// just after its veth appears, and until it is read the pod goes unchecked.
const RESULT_POLL: Duration = Duration::from_millis(250);

/// How long a new veth may go without a CNI result before that is worth a warning
/// (the runtime writes the result just after the plugins' ADD returns).
const RESULT_GRACE: Duration = Duration::from_secs(10);

impl Pods {
    /// Subscribes to link events (before the first scan, so nothing between the scan
    /// and the subscription is missed).
    pub fn new(bridge: &str, fast: bool, source_check: bool, cni_cache_dir: &Path) -> Result<Self> {
        let (conn, _, events) = rtnetlink::new_multicast_connection(&[MulticastGroup::Link]).map_err(PodsError::Subscribe)?;
        tokio::spawn(conn);
        Ok(Pods {
            bridge: bridge.to_owned(),
            events,
            fast,
            source_check,
            cni_cache_dir: cni_cache_dir.to_owned(),
            attached: BTreeSet::new(),
            bypass: None,
            unverified: BTreeMap::new(),
        })
    }

    /// Whether the pod veths carry weft's programs.
    fn programs(&self) -> bool {
        self.fast || self.source_check
    }

    /// Whether the bridge's egress program was attached at the last scan.
    pub fn bypass(&self) -> bool {
        self.bypass.is_some()
    }

    /// Waits for a link event, then takes every queued one with it (a burst costs one
    /// rescan) — or, while a port has no CNI result yet, for [`RESULT_POLL`].
    pub async fn changed(&mut self) {
        use futures::StreamExt;
        let poll = async {
            if self.unverified.is_empty() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(RESULT_POLL).await;
        };
        tokio::select! {
            () = poll => {}
            event = self.events.next() => {
                if event.is_none() {
                    // The subscription ended: only the periodic resync rescans from now on.
                    return std::future::pending::<()>().await;
                }
                while self.events.try_recv().is_ok() {}
            }
        }
    }

    /// Forgets which links carry the programs: the next [`Pods::sync`] asks the kernel.
    pub fn recheck(&mut self) {
        self.attached.clear();
        self.bypass = None;
    }

    /// Attaches the bridge's egress program and the pod veths' programs where missing,
    /// sweeps the pins of veths that are gone (or have no endpoint), and brings
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
        self.sync_bypass(dataplane, bridge, created);

        let current = dataplane.maps.endpoints()?;
        let known = match bridge.and_then(|b| b.mac) {
            // No pod yet (the CNI plugin makes the bridge with the first one).
            None => BTreeMap::new(),
            Some(gw_mac) => {
                let results =
                    cni_results::read(&self.cni_cache_dir, pod_cidr, &self.bridge, |veth| ports.iter().any(|p| p.name == veth));
                endpoints(&results, &ports, gw_mac, &current)
            }
        };
        let with_endpoint: BTreeSet<u32> = known.values().map(|e| e.ifindex).collect();
        self.note_unverified(&ports, &with_endpoint);

        // Endpoints first: a veth's programs must never run before its pod is known
        // (the source check would drop the pod's first packets).
        apply(dataplane, &current, &known)?;
        self.attached.retain(|i| with_endpoint.contains(i));
        if self.programs() {
            let missing: Vec<&&Link> =
                ports.iter().filter(|p| with_endpoint.contains(&p.index) && !self.attached.contains(&p.index)).collect();
            for port in missing {
                // One veth's failure (a pod going away mid-scan) must not hold up the others.
                match attach(dataplane, port, self.fast, created) {
                    Ok(()) => {
                        self.attached.insert(port.index);
                    }
                    Err(e) => {
                        tracing::warn!(iface = %port.name, "pod programs not attached ({e:#}); its pod takes the stack path, unchecked")
                    }
                }
            }
        }
        // Programs stay only where the pod is known: the source check would drop all
        // that a pod without an endpoint sends.
        let (programs, fast) = (self.programs(), self.fast);
        sweep(dataplane, |ifindex, program| programs && with_endpoint.contains(&ifindex) && wanted(program, fast))?;
        if self.fast && known.values().any(|e| !self.attached.contains(&e.ifindex)) {
            // With the fast path, only pods whose veth carries its programs are
            // endpoints: one that could not be attached takes the stack path both
            // ways, as the warning says.
            let fast: BTreeMap<_, _> =
                known.iter().filter(|(_, e)| self.attached.contains(&e.ifindex)).map(|(k, v)| (*k, *v)).collect();
            apply(dataplane, &known, &fast)?;
        }
        Ok(())
    }

    /// Tracks the ports without a CNI result; warns once about each that stays so.
    fn note_unverified(&mut self, ports: &[&Link], with_endpoint: &BTreeSet<u32>) {
        let now = Instant::now();
        self.unverified.retain(|i, _| ports.iter().any(|p| p.index == *i) && !with_endpoint.contains(i));
        for port in ports.iter().filter(|p| !with_endpoint.contains(&p.index)) {
            let (since, logged) = self.unverified.entry(port.index).or_insert((now, false));
            if !*logged && now.duration_since(*since) >= RESULT_GRACE {
                *logged = true;
                tracing::warn!(
                    iface = %port.name,
                    dir = %self.cni_cache_dir.join("results").display(),
                    "no CNI result names this pod veth: its pod's sources are not checked and it takes the stack path \
                     (is the runtime's CNI cache mounted at --cni-cache-dir?)"
                );
            }
        }
    }
}

/// The endpoints the CNI results name on live `ports`, plus the known ones (`current`)
/// whose veth still lives and that no result contradicts: a result removed while its
/// pod runs (an operator cleaning the cache) must not cut the pod off.
fn endpoints(
    results: &BTreeMap<Ipv4Addr, cni_results::Attachment>,
    ports: &[&Link],
    gw_mac: MacAddr,
    current: &BTreeMap<Ipv4Addr, LocalEndpoint>,
) -> BTreeMap<Ipv4Addr, LocalEndpoint> {
    let mut known: BTreeMap<Ipv4Addr, LocalEndpoint> = results
        .iter()
        .filter_map(|(ip, a)| {
            let port = ports.iter().find(|p| p.name == a.host_veth)?;
            Some((*ip, LocalEndpoint { ifindex: port.index, mac: a.mac, gw_mac }))
        })
        .collect();
    let named: BTreeSet<u32> = known.values().map(|e| e.ifindex).collect();
    for (ip, e) in current {
        if ports.iter().any(|p| p.index == e.ifindex) && !named.contains(&e.ifindex) && !known.contains_key(ip) {
            known.insert(*ip, *e);
        }
    }
    known
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

/// The programs `port` needs (both with `fast`), each through its pinned link (adopted
/// if an earlier agent pinned it); new pins go to `created`.
fn attach(dataplane: &mut Dataplane, port: &Link, fast: bool, created: &mut Vec<PathBuf>) -> Result<()> {
    for (program, hook, prefix) in HOOKS.into_iter().filter(|(program, _, _)| wanted(program, fast)) {
        if dataplane.is_attached(program, &port.name, hook)? {
            continue;
        }
        let pin = format!("{prefix}{}", port.index);
        let how = dataplane.attach(program, &port.name, hook, &pin)?;
        tracing::info!(program, iface = %port.name, how = ?how, "attached (pod veth)");
        if how == Attached::Created {
            created.push(dataplane.link_pin(&pin));
        }
    }
    Ok(())
}

/// Removes the pinned pod-veth links that `keep` (veth ifindex, program) refuses: the
/// veth is gone (its links are defunct and only the pins hold them), its pod unknown,
/// or the program no longer wanted.
fn sweep(dataplane: &Dataplane, keep: impl Fn(u32, &str) -> bool) -> Result<()> {
    for (ifindex, program, path) in pod_link_pins(dataplane)? {
        if !keep(ifindex, program) {
            crate::dataplane::unpin(&path).map_err(|source| PodsError::Pins { op: "unpinning", path: path.clone(), source })?;
            tracing::info!(pin = %path.display(), "pod veth gone or unknown: its link unpinned");
        }
    }
    Ok(())
}

/// The pinned pod-veth links: (veth ifindex, program, pin path).
fn pod_link_pins(dataplane: &Dataplane) -> Result<Vec<(u32, &'static str, PathBuf)>> {
    let dir = dataplane.link_pin("");
    let entries = std::fs::read_dir(&dir).map_err(|source| PodsError::Pins { op: "listing", path: dir.clone(), source })?;
    Ok(entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let (program, ifindex) =
                HOOKS.iter().find_map(|(program, _, prefix)| Some((*program, name.strip_prefix(prefix)?.parse().ok()?)))?;
            Some((ifindex, program, e.path()))
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

/// Undoes what an earlier agent with other settings left: without `--fast-path` and
/// `--pod-source-check`, the programs come off every pod veth (their pinned links go);
/// without `--fast-path`, off `weft0`'s ingress (weft0's encap stops remembering flows
/// with the config flag). The endpoints stay for the bridge's program.
pub fn disable_unused(dataplane: &mut Dataplane, fast: bool, source_check: bool) -> Result<()> {
    let pins = pod_link_pins(dataplane)?;
    if !fast && !source_check && !pins.is_empty() {
        sweep(dataplane, |_, _| false)?;
        tracing::info!(links = pins.len(), "removed the programs from the pod veths (--fast-path and --pod-source-check off)");
    }
    if !fast && dataplane.detach_pinned(links::WEFT0_INGRESS)? {
        tracing::info!("removed the fast path from weft0's ingress (--fast-path off)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn ep(ifindex: u32, last: u8) -> LocalEndpoint {
        LocalEndpoint { ifindex, mac: [2, 0, 0, 0, 0, last], gw_mac: [2, 0, 0, 0, 0, 1] }
    }

    fn port(index: u32) -> Link {
        Link {
            index,
            name: format!("veth{index}"),
            mtu: 1450,
            mac: None,
            kind: Some(InfoKind::Veth),
            up: true,
            noarp: false,
            xdp_drv_prog: None,
            master: Some(3),
            peer: None,
        }
    }

    #[test]
    fn endpoints_come_from_results_and_stay_with_their_veth() {
        let ip = |d| Ipv4Addr::new(10, 244, 1, d);
        let result = |veth: u32, last: u8| cni_results::Attachment {
            ip: ip(last),
            mac: ep(veth, last).mac,
            host_veth: format!("veth{veth}"),
            written: SystemTime::UNIX_EPOCH,
        };
        let ports = [port(7), port(8), port(10), port(11)];
        let ports: Vec<&Link> = ports.iter().collect();
        // What the map held: pod 9's veth is gone; veth 11 held address 11, whose
        // result was removed from the cache while the pod runs.
        let current = BTreeMap::from([(ip(5), ep(7, 5)), (ip(9), ep(9, 9)), (ip(11), ep(11, 11))]);
        let results = BTreeMap::from([(ip(5), result(7, 5)), (ip(6), result(8, 6)), (ip(10), result(10, 10))]);
        let known = endpoints(&results, &ports, [2, 0, 0, 0, 0, 1], &current);
        assert_eq!(known, BTreeMap::from([(ip(5), ep(7, 5)), (ip(6), ep(8, 6)), (ip(10), ep(10, 10)), (ip(11), ep(11, 11))]));
        // A new result for veth 11 (another address) replaces what it held.
        let results = BTreeMap::from([(ip(12), result(11, 12))]);
        let known = endpoints(&results, &ports, [2, 0, 0, 0, 0, 1], &current);
        assert_eq!(known, BTreeMap::from([(ip(5), ep(7, 5)), (ip(12), ep(11, 12))]));
    }
}
