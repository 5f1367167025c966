//! Startup, the event loop and resync, for both sources of the node table: a file
//! (static mode) or the Kubernetes API server.
//!
//! Startup either completes or undoes what *this* start created (a new `weft0`, new
//! pins) and nothing else: state adopted from an earlier agent keeps forwarding.
//! Once up, the agent recomputes the node table on every change (file edit or SIGHUP;
//! Node watch event) and resyncs everything every `--resync-seconds`. Losing the API
//! server changes nothing: the last known table stays in force and the watcher
//! retries with backoff; a relist replaces the table whole, which sweeps nodes that
//! vanished meanwhile. On SIGTERM/SIGINT the agent exits and leaves the dataplane in
//! place (pinned links and maps) for the next agent to adopt.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    pin::Pin,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result, anyhow, bail};
use aya::programs::TcAttachType;
use futures::{FutureExt, Stream, StreamExt};
use ipnetwork::Ipv4Network;
use k8s_openapi::api::core::v1::Node;
use kube::{
    Api,
    runtime::{WatchStreamExt, reflector, reflector::Store, watcher},
};
use rtnetlink::packet_route::link::InfoKind;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};
use weft_common::{
    ABI_VERSION,
    config::{DataplaneConfig, FLAG_BRIDGE_BYPASS, FLAG_DECAP_L4_UDP, FLAG_FAST_PATH},
    maps as spec,
};

use crate::{
    annotations::{self, Advert, Skip},
    bpffs, cni,
    config::{Args, CniConf, DecapMode, STATIC_DEFAULTS},
    dataplane::{Attached, Dataplane},
    ethtool::{self, Feature},
    kube_sync,
    maps::PinState,
    netconf,
    netlink::{Link, Netlink},
    node::{self, WEFT0, WEFT0_PEER},
    node_object::WatchedNode,
    peers::{self, NodeEntry, NodeTable},
    pods::{self, Pods},
    privileges, reconcile, sysctl,
    uplink::{self, Selector},
};

/// What this start created, to undo if it fails.
#[derive(Default)]
struct Created {
    weft0: Option<u32>,
    pins: Vec<PathBuf>,
}

impl Created {
    async fn roll_back(self, nl: &Netlink) {
        if let Some(index) = self.weft0 {
            // Deleting weft0 also drops its routes, its peer end and its TCX link.
            if let Err(e) = nl.delete_link(index).await {
                tracing::warn!("rollback: deleting {WEFT0}: {e:#}");
            }
        }
        for pin in self.pins {
            if let Err(e) = std::fs::remove_file(&pin) {
                tracing::warn!("rollback: removing pin {}: {e}", pin.display());
            }
        }
    }
}

type NodeEvents = Pin<Box<dyn Stream<Item = Result<watcher::Event<WatchedNode>, watcher::Error>> + Send>>;

/// The API server side of Kubernetes mode.
struct Kube {
    api: Api<Node>,
    store: Store<WatchedNode>,
    events: NodeEvents,
    network: Ipv4Network,
    /// What this agent last published on its Node, and when; when it last cleared
    /// NetworkUnavailable.
    advertised: Option<Advert>,
    advertised_at: Option<Instant>,
    available_at: Option<Instant>,
    /// Skipped nodes and why, to warn once per node and reason.
    warned: BTreeMap<String, Skip>,
    /// Why our own Node's address could not be read, to warn once per reason.
    own_error: Option<String>,
    last_watch_error: Option<Instant>,
}

enum Source {
    File { path: PathBuf, stamp: Option<FileStamp> },
    Kube(Box<Kube>),
}

pub struct Agent {
    args: Args,
    vni: u32,
    port: u16,
    mtu: Option<u32>,
    nl: Netlink,
    dataplane: Dataplane,
    own: NodeEntry,
    table: NodeTable,
    uplink: Link,
    uplink_address: Option<Ipv4Addr>,
    /// The address the tunnel uses on the underlay (outer source, what decap accepts),
    /// and the advertised address it was chosen for; see [`Agent::refresh_tunnel_ip`].
    tunnel_ip: Ipv4Addr,
    tunnel_for: Ipv4Addr,
    weft0: Link,
    /// Ifindex of `weft0`'s veth peer (TC decap sends inner frames out of it).
    weft0_peer: u32,
    /// Whether XDP decap runs on the uplink (else TC alone decapsulates).
    xdp: bool,
    /// The TC placement was logged once (re-attaches do not repeat it).
    xdp_choice_logged: bool,
    /// What the last reconcile applied (None: read the kernel next time).
    applied: Option<node::Desired>,
    source: Source,
    /// The local pods: endpoints, the bridge's egress program, `--fast-path`'s programs.
    pods: Option<Pods>,
    /// The kernel clears the tunnel's GSO state at decap (`BPF_F_ADJ_ROOM_DECAP_L4_UDP`).
    decap_l4_udp: bool,
    /// What `/healthz` reports: whether resyncs keep succeeding.
    health: crate::healthz::Health,
}

pub async fn run(args: Args) -> Result<()> {
    privileges::check()?;
    privileges::check_kernel()?;
    let nl = Netlink::connect().context("opening a netlink socket")?;
    let mut created = Created::default();
    let started = match args.peers.clone() {
        Some(path) => start_static(args, path, nl.clone(), &mut created).await,
        None => start_kube(args, nl.clone(), &mut created).await,
    };
    let agent = match started {
        Ok(agent) => agent,
        Err(e) => {
            created.roll_back(&nl).await;
            return Err(e);
        }
    };
    agent.run_loop().await
}

fn selector(args: &Args) -> Selector {
    Selector { iface: args.iface.clone(), iface_regex: args.iface_regex.clone() }
}

/// What tells one version of the node table file from another: mtime and size, and
/// the inode, because mtime is only as fine as the kernel's clock tick and an atomic
/// replace (write a temporary file, rename it over) of a same-sized table within one
/// tick keeps both.
fn file_stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}

type FileStamp = (SystemTime, u64, u64);

async fn start_static(args: Args, path: PathBuf, nl: Netlink, created: &mut Created) -> Result<Agent> {
    let table = peers::load(&path)?;
    let own = table
        .split(&args.node_name)
        .map(|(me, _)| me.clone())
        .ok_or_else(|| peers::PeersError::OwnNodeMissing { path: path.clone(), name: args.node_name.clone() })?;
    let up = uplink::select(&nl, &selector(&args), &[own.underlay_ip]).await.map_err(|e| match e {
        uplink::UplinkError::NotFound(ip) => {
            anyhow!("no interface holds this node's underlay address {ip} (from {}); pass --iface", path.display())
        }
        e => e.into(),
    })?;
    if up.address != Some(own.underlay_ip) && !nl.addresses(up.link.index).await?.iter().any(|(a, _)| *a == own.underlay_ip) {
        tracing::warn!(
            iface = %up.link.name, underlay = %own.underlay_ip,
            "the interface does not hold this node's underlay address"
        );
    }
    let (vni, port) = (args.vni.unwrap_or(STATIC_DEFAULTS.0), args.port.unwrap_or(STATIC_DEFAULTS.1));
    let stamp = file_stamp(&path);
    let source = Source::File { path, stamp };
    let mut agent = Agent::bring_up(args, vni, port, None, nl, own, table, up, source, created).await?;
    agent.reconcile(true).await?;
    tracing::info!("dataplane up");
    Ok(agent)
}

async fn start_kube(args: Args, nl: Netlink, created: &mut Created) -> Result<Agent> {
    let conf = netconf::load(&args.net_config_path)?;
    if !conf.ignored.is_empty() {
        tracing::warn!("{}: ignoring {}", args.net_config_path.display(), conf.ignored.join(", "));
    }
    for (flag, cli, file) in
        [("--vni", args.vni.map(u64::from), u64::from(conf.vni)), ("--port", args.port.map(u64::from), u64::from(conf.port))]
    {
        if cli.is_some_and(|v| v != file) {
            bail!("{flag} {} contradicts {} ({file})", cli.unwrap_or_default(), args.net_config_path.display());
        }
    }
    let client = kube_sync::client(args.kubeconfig_file.as_deref()).await?;
    let api: Api<Node> = Api::all(client);
    let (own_node, pod_cidr) = kube_sync::wait_for_own_node(&api, &args.node_name).await?;
    if !(conf.network.contains(pod_cidr.network()) && pod_cidr.prefix() >= conf.network.prefix()) {
        bail!(
            "node {}: podCIDR {pod_cidr} lies outside the cluster network {} ({}); refusing to start",
            args.node_name,
            conf.network,
            args.net_config_path.display()
        );
    }
    // An address the node was told to advertise is the better hint: after a move the
    // InternalIP may lag behind (or, behind NAT, never be local).
    let overwrite = annotations::public_ip_overwrite(&own_node).ok().flatten();
    let hints: Vec<Ipv4Addr> = [overwrite, args.public_ip, annotations::internal_ip(&own_node)].into_iter().flatten().collect();
    let up = uplink::select(&nl, &selector(&args), &hints).await?;
    let existing_mac = nl.link_by_name(WEFT0).await?.and_then(|l| l.mac).map(peers::Mac);
    let vtep_mac = kube_sync::choose_vtep_mac(&own_node, existing_mac);
    // A mistyped public-ip-overwrite must not keep the node down (the running agent
    // keeps its address, see refresh_from_store): advertise what it would without it.
    let (public_ip, own_error) = match kube_sync::own_public_ip(&own_node, args.public_ip, up.address) {
        Ok(ip) => (ip, None),
        Err(e) => match args.public_ip.or(up.address) {
            Some(ip) => {
                tracing::warn!(using = %ip, "this node's address: {e}");
                (ip, Some(e))
            }
            None => bail!(e),
        },
    };
    let own = NodeEntry { name: args.node_name.clone(), underlay_ip: public_ip, pod_cidr, vtep_mac };
    tracing::info!(node = %own.name, %pod_cidr, %public_ip, %vtep_mac, "own node");

    // The full node list before anything is programmed: a start never begins from
    // an empty table.
    let (store, writer) = reflector::store();
    let mut events: NodeEvents = Box::pin(
        reflector(
            writer,
            watcher(Api::<WatchedNode>::all(api.clone().into_client()), watcher::Config::default()).modify({
                let own = args.node_name.clone();
                move |n| kube_sync::slim(&own, n)
            }),
        )
        .backoff(kube_sync::Reconnect::default()),
    );
    let ready = store.clone();
    let wait = ready.wait_until_ready();
    tokio::pin!(wait);
    loop {
        tokio::select! {
            r = &mut wait => { r.context("node watch ended")?; break; }
            item = events.next() => match item {
                Some(Err(e)) => tracing::warn!("watching nodes: {e}; retrying"),
                Some(Ok(_)) => {}
                None => bail!("node watch ended"),
            },
        }
    }
    let kube = Kube {
        api,
        store,
        events,
        network: conf.network,
        advertised: None,
        advertised_at: None,
        available_at: None,
        warned: BTreeMap::new(),
        own_error,
        last_watch_error: None,
    };
    let mut source = Source::Kube(Box::new(kube));
    let table = kube_table(&own, &mut source, conf.vni);
    let mut agent = Agent::bring_up(args, conf.vni, conf.port, conf.mtu, nl, own, table, up, source, created).await?;
    agent.reconcile(true).await?;
    agent.write_cni_files()?;
    agent.sync_node_object().await;
    tracing::info!("dataplane up");
    Ok(agent)
}

/// The table from the watch store, warning once per skipped node and reason.
fn kube_table(own: &NodeEntry, source: &mut Source, vni: u32) -> NodeTable {
    let Source::Kube(kube) = source else { unreachable!("kube_table in static mode") };
    let peers = kube_sync::peers(own, &kube.store.state(), kube.network, vni);
    for (name, skip) in &peers.skipped {
        if kube.warned.get(name) != Some(skip) {
            match skip {
                Skip::Malformed(why) => tracing::warn!(node = %name, "skipping node: {why}"),
                Skip::NotVxlan(why) => tracing::info!(node = %name, "not a peer (yet): {why}"),
            }
        }
    }
    kube.warned = peers.skipped.clone();
    kube_sync::table(own, &peers)
}

impl Agent {
    #[expect(clippy::too_many_arguments, reason = "one call site per mode; a struct would only rename them")]
    async fn bring_up(
        args: Args,
        vni: u32,
        port: u16,
        mtu: Option<u32>,
        nl: Netlink,
        own: NodeEntry,
        table: NodeTable,
        up: uplink::Uplink,
        source: Source,
        created: &mut Created,
    ) -> Result<Agent> {
        tracing::info!(node = %own.name, uplink = %up.link.name, underlay = %own.underlay_ip, pod_cidr = %own.pod_cidr, "starting");
        bpffs::ensure(&args.bpffs_dir)?;
        let (dataplane, pins) = Dataplane::load(&args.bpffs_dir, args.bpf_log.aya_level())?;
        for (name, state) in &pins {
            tracing::info!(map = name, state = ?state, "map");
        }
        created.pins.extend(
            spec::ALL
                .iter()
                .filter(|s| pins.iter().any(|(n, st)| n == &s.name && *st != PinState::Adopted))
                .map(|s| args.bpffs_dir.join(s.pin)),
        );
        let (weft0, weft0_peer) = ensure_device(&nl, &own, &up.link, mtu, created).await?;
        let health = crate::healthz::Health::new(Duration::from_secs(args.resync_seconds));
        let mut agent = Agent {
            args,
            vni,
            port,
            mtu,
            nl,
            dataplane,
            own,
            table,
            uplink: up.link,
            uplink_address: up.address,
            tunnel_ip: Ipv4Addr::UNSPECIFIED,
            tunnel_for: Ipv4Addr::UNSPECIFIED,
            weft0,
            weft0_peer,
            xdp: false,
            xdp_choice_logged: false,
            applied: None,
            source,
            pods: None,
            decap_l4_udp: false,
            health,
        };
        agent.decap_l4_udp = crate::probe::decap_l4_udp(&mut agent.dataplane);
        agent.refresh_tunnel_ip().await?;
        agent.write_config()?;
        let others = agent.table.nodes.iter().filter(|n| n.name != agent.own.name);
        reconcile::seed(&mut agent.dataplane.maps, &node::desired(others, vni))?;
        agent.attach(created)?;
        agent.start_pods(created).await?;
        Ok(agent)
    }

    /// The tunnel's own underlay address: the advertised one when an interface of
    /// this node holds it; else (behind NAT: a `--public-ip` or `public-ip-overwrite`
    /// no interface here holds) the uplink's own, which peers' packets to the
    /// advertised address arrive at once translated, and which our packets must leave
    /// from — as Flannel's vxlan device, bound to the interface's address, does. The
    /// uplink's own address is read again each time: it may have changed (DHCP, an
    /// uplink recreated).
    async fn refresh_tunnel_ip(&mut self) -> Result<()> {
        let addresses = self.nl.all_addresses().await?;
        let held = addresses.iter().any(|(_, a)| *a == self.own.underlay_ip);
        let on_uplink: Vec<Ipv4Addr> = addresses.iter().filter(|(i, _)| *i == self.uplink.index).map(|(_, a)| *a).collect();
        if let Some(first) = on_uplink.first()
            && self.uplink_address.is_none_or(|a| !on_uplink.contains(&a))
        {
            tracing::info!(iface = %self.uplink.name, old = ?self.uplink_address, new = %first, "the uplink's address changed");
            self.uplink_address = Some(*first);
        }
        let ip = match self.uplink_address {
            Some(local) if !held => local,
            _ => self.own.underlay_ip,
        };
        if (ip, self.own.underlay_ip) != (self.tunnel_ip, self.tunnel_for) {
            if ip == self.own.underlay_ip {
                tracing::info!(tunnel = %ip, "tunnel endpoint");
            } else {
                tracing::info!(
                    advertised = %self.own.underlay_ip, tunnel = %ip, uplink = %self.uplink.name,
                    "no interface holds the advertised address (NAT?): the tunnel uses the uplink's own"
                );
            }
            (self.tunnel_ip, self.tunnel_for) = (ip, self.own.underlay_ip);
        }
        Ok(())
    }

    fn write_config(&mut self) -> Result<()> {
        let config = DataplaneConfig {
            abi_version: ABI_VERSION,
            vni: self.vni,
            underlay_ip: self.tunnel_ip.octets(),
            udp_port: self.port,
            vtep_mac: self.own.vtep_mac.0,
            uplink_ifindex: self.uplink.index,
            weft0_ifindex: self.weft0.index,
            flags: flag(self.args.fast_path, FLAG_FAST_PATH)
                | flag(self.pods.as_ref().is_some_and(Pods::bypass), FLAG_BRIDGE_BYPASS)
                | flag(self.decap_l4_udp, FLAG_DECAP_L4_UDP),
            weft0_peer_ifindex: self.weft0_peer,
            weft0_mtu: self.tunnel_mtu(),
            pod_cidr: self.own.pod_cidr.network().octets(),
            pod_prefix: self.own.pod_cidr.prefix(),
            ..Default::default()
        };
        if self.dataplane.maps.config()? != config {
            self.dataplane.maps.set_config(config)?;
        }
        Ok(())
    }

    /// Attaches both programs; records links this start pinned anew.
    fn attach(&mut self, created: &mut Created) -> Result<()> {
        let mut hooks = vec![
            (spec::programs::ENCAP, self.weft0.name.clone(), TcAttachType::Egress, spec::links::ENCAP),
            (spec::programs::DECAP, self.uplink.name.clone(), TcAttachType::Ingress, spec::links::DECAP),
        ];
        if self.args.fast_path {
            // First: the config already says fast path, and until this program is on
            // weft0, what TC decap sends through the peer simply takes the stack.
            hooks.insert(
                0,
                (spec::programs::WEFT0_INGRESS, self.weft0.name.clone(), TcAttachType::Ingress, spec::links::WEFT0_INGRESS),
            );
        }
        for (prog, iface, hook, pin) in hooks {
            let how = self.dataplane.attach(prog, &iface, hook, pin)?;
            tracing::info!(program = prog, iface = %iface, how = ?how, "attached");
            if how == Attached::Created {
                created.pins.push(self.dataplane.link_pin(pin));
            }
        }
        self.attach_xdp(created)
    }

    /// XDP decap on the uplink as `--decap` says (TC decap stays attached either way).
    ///
    /// `auto` leaves a veth uplink (a kind-style node) to TC: a veth's XDP copies every
    /// frame into a page of its own first, and attaching it turns off GSO on the peer,
    /// so the other side segments every super-packet — TC decap is ahead there on
    /// every bulk figure (docs/performance.md). `--decap xdp` still forces it.
    fn attach_xdp(&mut self, created: &mut Created) -> Result<()> {
        let pin = spec::links::DECAP_XDP;
        let tc = match self.args.decap {
            DecapMode::Tc => Some("--decap tc"),
            DecapMode::Auto if self.uplink.kind == Some(InfoKind::Veth) => Some("--decap auto on a veth uplink"),
            _ => None,
        };
        if let Some(why) = tc {
            if self.dataplane.detach_pinned(pin)? {
                tracing::info!(iface = %self.uplink.name, "removed XDP decap ({why})");
            }
            if !self.xdp_choice_logged {
                tracing::info!(iface = %self.uplink.name, "decapsulating in TC ({why})");
                self.xdp_choice_logged = true;
            }
            self.xdp = false;
            return Ok(());
        }
        match self.dataplane.attach_xdp(&self.uplink.name, self.uplink.xdp_drv_prog, pin) {
            Ok(how) => {
                tracing::info!(program = spec::programs::DECAP_XDP, iface = %self.uplink.name, how = ?how, "attached (native XDP)");
                if how == Attached::Created {
                    created.pins.push(self.dataplane.link_pin(pin));
                }
                self.xdp = true;
                // The point of decapsulating in XDP is GRO on the inner flows: NICs have
                // it on by default, a veth does not.
                match ethtool::set_gro(&self.uplink.name, true) {
                    Ok(true) => {
                        tracing::info!(iface = %self.uplink.name, "turned GRO on (XDP decap aggregates through it)")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(iface = %self.uplink.name, "cannot turn GRO on ({e}): XDP decap delivers unaggregated")
                    }
                }
            }
            Err(e) if self.args.decap == DecapMode::Auto => {
                tracing::info!(iface = %self.uplink.name, "no native XDP ({e:#}): decapsulating in TC");
                self.xdp = false;
            }
            Err(e) => {
                return Err(e).context("--decap xdp needs a driver with native XDP; --decap tc works everywhere");
            }
        }
        Ok(())
    }

    /// Subscribes to the pods' link and neighbour events, attaches to the bridge (and,
    /// with `--fast-path`, to the pod veths) there is, fills the endpoints. Without
    /// `--fast-path`, first undoes what an earlier agent with it on left.
    async fn start_pods(&mut self, created: &mut Created) -> Result<()> {
        if !self.args.fast_path {
            pods::disable_fast_path(&mut self.dataplane)?;
        }
        let mut pods = Pods::new(cni::BRIDGE, self.args.fast_path)?;
        pods.sync(&self.nl, &mut self.dataplane, self.own.pod_cidr, &mut created.pins).await?;
        self.pods = Some(pods);
        self.write_config()
    }

    /// Rescans the pods; the config follows the bridge program's attachment.
    async fn sync_pods(&mut self) {
        let Some(pods) = &mut self.pods else { return };
        // After start, new pins are this agent's to keep: nothing rolls them back.
        if let Err(e) = pods.sync(&self.nl, &mut self.dataplane, self.own.pod_cidr, &mut Vec::new()).await {
            tracing::error!("pods: {e:#}");
        }
        if let Err(e) = self.write_config() {
            tracing::error!("writing the dataplane config: {e:#}");
        }
    }

    /// `full`: against what the kernel holds; else against what the last pass applied.
    async fn reconcile(&mut self, full: bool) -> Result<()> {
        let others = self.table.nodes.iter().filter(|n| n.name != self.own.name);
        let desired = node::desired(others, self.vni);
        // Taken in both cases: if this pass fails, the next one reads the kernel.
        let known = self.applied.take().filter(|_| !full);
        let changes = reconcile::apply(&mut self.dataplane.maps, &self.nl, self.weft0.index, &desired, known.as_ref()).await?;
        self.applied = Some(desired);
        if changes != reconcile::Changes::default() {
            tracing::info!(upserted = changes.upserted, removed = changes.removed, "reconciled");
        }
        Ok(())
    }

    /// Recomputes this node and the table from the source (Kubernetes mode). A bad
    /// address on our own Node (a mistyped `public-ip-overwrite`) keeps the one in
    /// use, with a warning, rather than stopping every other update.
    fn refresh_from_store(&mut self) {
        let Source::Kube(kube) = &mut self.source else {
            return;
        };
        if let Some(node) = kube.store.state().iter().find(|n| n.metadata.name.as_deref() == Some(&self.own.name)) {
            match kube_sync::own_public_ip(node.as_ref(), self.args.public_ip, self.uplink_address) {
                Ok(ip) => {
                    kube.own_error = None;
                    if ip != self.own.underlay_ip {
                        tracing::info!(old = %self.own.underlay_ip, new = %ip, "this node's public address changed");
                        self.own.underlay_ip = ip;
                    }
                }
                Err(e) => {
                    if kube.own_error.as_ref() != Some(&e) {
                        tracing::warn!(keeping = %self.own.underlay_ip, "this node's address: {e}");
                    }
                    kube.own_error = Some(e);
                }
            }
        }
        self.table = kube_table(&self.own.clone(), &mut self.source, self.vni);
        if let Source::Kube(kube) = &self.source {
            let mut skipped = std::collections::BTreeMap::new();
            for skip in kube.warned.values() {
                *skipped.entry(skip.label()).or_insert(0) += 1;
            }
            self.health.set_skipped(skipped);
        }
    }

    /// After Node events: the table, the config (our own address may have moved), maps
    /// and routes, our files and Node object. Device and attachments are the periodic
    /// resync's business.
    async fn sync_nodes(&mut self) -> Result<()> {
        self.refresh_from_store();
        if let Err(e) = self.refresh_tunnel_ip().await {
            tracing::warn!(tunnel = %self.tunnel_ip, "reading this node's addresses: {e:#}; keeping the tunnel address");
        }
        self.write_config()?;
        self.reconcile(false).await?;
        self.write_cni_files()?;
        self.sync_node_object().await;
        Ok(())
    }

    /// Brings the device, config, attachments, maps and routes back to the table.
    async fn resync(&mut self) -> Result<()> {
        // weft0 may be recreated below (routes gone): nothing applied is known any more.
        self.applied = None;
        self.refresh_from_store();
        if let Source::File { path, .. } = &self.source {
            self.own = self
                .table
                .split(&self.own.name)
                .map(|(me, _)| me.clone())
                .ok_or_else(|| anyhow!("{}: this node vanished from the table", path.display()))?;
        }
        self.uplink = self.find_uplink().await?;
        let mut created = Created::default();
        (self.weft0, self.weft0_peer) = ensure_device(&self.nl, &self.own, &self.uplink, self.mtu, &mut created).await?;
        self.refresh_tunnel_ip().await?;
        self.write_config()?;
        let attached = self.dataplane.is_attached(spec::programs::ENCAP, &self.weft0.name, TcAttachType::Egress)?
            && self.dataplane.is_attached(spec::programs::DECAP, &self.uplink.name, TcAttachType::Ingress)?
            && (!self.args.fast_path
                || self.dataplane.is_attached(spec::programs::WEFT0_INGRESS, &self.weft0.name, TcAttachType::Ingress)?)
            && (!self.xdp || self.uplink.xdp_drv_prog == Some(self.dataplane.xdp_program_id()?));
        if !attached {
            tracing::warn!("a program is no longer attached (interface recreated?): attaching again");
            self.attach(&mut created)?;
        }
        self.reconcile(true).await?;
        if let Some(pods) = &mut self.pods {
            pods.recheck();
        }
        self.sync_pods().await;
        if matches!(self.source, Source::Kube(_)) {
            self.write_cni_files()?;
            self.sync_node_object().await;
        }
        Ok(())
    }

    /// The uplink as it is now. One deleted and created again under the same name (a
    /// bond or VLAN rebuilt by the network manager, a driver rebind) is taken up under
    /// its new index: the config and the attachment check below follow it.
    async fn find_uplink(&self) -> Result<Link> {
        if let Some(link) = self.nl.link_by_index(self.uplink.index).await? {
            return Ok(link);
        }
        let link = self
            .nl
            .link_by_name(&self.uplink.name)
            .await?
            .ok_or_else(|| anyhow!("uplink {} (index {}) is gone", self.uplink.name, self.uplink.index))?;
        tracing::warn!(iface = %link.name, old = self.uplink.index, new = link.index, "the uplink was recreated: following it");
        Ok(link)
    }

    fn tunnel_mtu(&self) -> u32 {
        node::device_spec(&self.own, self.uplink.mtu, self.mtu).mtu
    }

    /// subnet.env always; the conflist as `--cni-conf` says. Rewritten only on change.
    fn write_cni_files(&self) -> Result<()> {
        let Source::Kube(kube) = &self.source else {
            return Ok(());
        };
        let env = cni::subnet_env(kube.network, self.own.pod_cidr, self.tunnel_mtu());
        if std::fs::read_to_string(&self.args.subnet_file).ok().as_deref() != Some(env.as_str()) {
            cni::write_atomic(&self.args.subnet_file, &env)?;
            tracing::info!(path = %self.args.subnet_file.display(), "wrote subnet.env");
        }
        let dir = &self.args.cni_conf_dir;
        let write = match self.args.cni_conf {
            CniConf::Never => false,
            CniConf::Always => true,
            CniConf::Auto => {
                let others = cni::other_configs(dir);
                if !others.is_empty() {
                    tracing::debug!(?others, "another CNI config is present: not writing ours");
                }
                others.is_empty()
            }
        };
        if write {
            let path = dir.join(cni::CONFLIST_NAME);
            let list = cni::conflist(self.own.pod_cidr, self.tunnel_mtu(), self.args.cni_ipam_data_dir.as_deref());
            let text = serde_json::to_string_pretty(&list)? + "\n";
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                cni::write_atomic(&path, &text)?;
                tracing::info!(path = %path.display(), "wrote CNI conflist");
            }
        }
        Ok(())
    }

    /// Publishes our annotations and clears NetworkUnavailable, level-triggered: the
    /// Node object as the watch last saw it is compared with what it should say, so
    /// an edit by someone else is put right and a failed patch is retried. A patch
    /// not yet seen in the watch is not repeated within a resync period.
    async fn sync_node_object(&mut self) {
        let Source::Kube(kube) = &mut self.source else {
            return;
        };
        let advert = Advert { public_ip: self.own.underlay_ip, vni: self.vni, vtep_mac: self.own.vtep_mac };
        let node = kube.store.state().into_iter().find(|n| n.metadata.name.as_deref() == Some(&self.own.name));
        let published = node.as_deref().and_then(|n| annotations::parse_peer(n, self.vni).ok());
        let available = node.as_deref().is_some_and(annotations::network_available);
        let quiet = Duration::from_secs(self.args.resync_seconds);
        let due = |last: Option<Instant>| last.is_none_or(|t| t.elapsed() >= quiet);

        let already_published = published.as_ref() == Some(&advert);
        if !already_published && (kube.advertised.as_ref() != Some(&advert) || due(kube.advertised_at)) {
            match kube_sync::advertise(&kube.api, &self.own.name, &advert).await {
                Ok(()) => {
                    tracing::info!(public_ip = %advert.public_ip, vtep_mac = %advert.vtep_mac, "advertised this node");
                    kube.advertised = Some(advert);
                    kube.advertised_at = Some(Instant::now());
                }
                Err(e) => tracing::warn!("{e:#}; will retry"),
            }
        }
        // Advertised (by us, or by the agent before us: a restart finds it published),
        // so peers can reach this node: its network is available.
        if (already_published || kube.advertised.is_some()) && !available && due(kube.available_at) {
            match kube_sync::set_network_available(&kube.api, &self.own.name).await {
                Ok(()) => kube.available_at = Some(Instant::now()),
                Err(e) => tracing::warn!("{e:#}; will retry"),
            }
        }
    }

    fn reload_file(&mut self) {
        let Source::File { path, .. } = &self.source else {
            return;
        };
        match peers::load(path) {
            Ok(table) if table.split(&self.own.name).is_none() => {
                tracing::error!("{}: this node ({}) is missing: keeping the previous node table", path.display(), self.own.name);
            }
            Ok(table) => {
                if table != self.table {
                    tracing::info!(nodes = table.nodes.len(), "node table changed");
                    self.table = table;
                }
            }
            Err(e) => tracing::error!("{e}: keeping the previous node table"),
        }
    }

    async fn run_loop(mut self) -> Result<()> {
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut resync = tokio::time::interval(Duration::from_secs(self.args.resync_seconds));
        // The node table file is polled (one stat per second): it works for every
        // editor and for ConfigMap volumes, which swap a symlink rather than write.
        let mut poll = tokio::time::interval(Duration::from_secs(1));
        let mut logger = match self.dataplane.logger.take() {
            // SAFETY: the logger owns its ring buffer's fd and returns that same open fd
            // from every `as_raw_fd` call until it is dropped, with the AsyncFd.
            Some(l) => Some(
                unsafe { AsyncFd::register_with_interest(l, tokio::io::Interest::READABLE) }
                    .map_err(|e| anyhow!("watching the eBPF log: {e}"))?,
            ),
            None => None,
        };
        if self.args.healthz_port != 0 {
            let addr = std::net::SocketAddr::new(self.args.healthz_ip, self.args.healthz_port);
            crate::http::spawn(addr, self.health.clone(), self.args.bpffs_dir.clone()).await?;
        }
        loop {
            let is_kube = matches!(self.source, Source::Kube(_));
            tokio::select! {
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: re-reading the node table");
                    if let Source::File { path, stamp } = &mut self.source {
                        *stamp = file_stamp(path);
                    }
                    self.reload_file();
                    self.resync_logged().await;
                }
                _ = poll.tick(), if !is_kube => {
                    let changed = match &mut self.source {
                        Source::File { path, stamp } => {
                            let now = file_stamp(path);
                            std::mem::replace(stamp, now) != now
                        }
                        Source::Kube(_) => false,
                    };
                    if changed {
                        self.reload_file();
                        self.resync_logged().await;
                    }
                }
                item = next_node_event(&mut self.source), if is_kube => self.on_node_event(item).await,
                _ = resync.tick() => self.resync_logged().await,
                _ = async { self.pods.as_mut().expect("guarded").changed().await }, if self.pods.is_some() => {
                    self.sync_pods().await;
                }
                ready = async { logger.as_mut().expect("guarded").readable_mut().await }, if logger.is_some() => {
                    let mut guard = ready?;
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        tracing::info!("exiting; the dataplane stays attached through its pinned links");
        Ok(())
    }

    async fn on_node_event(&mut self, item: Option<Result<watcher::Event<WatchedNode>, watcher::Error>>) {
        match item {
            // A relist's objects land in the store all at once, at InitDone.
            Some(Ok(watcher::Event::Init | watcher::Event::InitApply(_))) => {}
            Some(Ok(event)) => {
                // A (re)list ended: mark and sweep against what the kernel holds.
                let mut relisted = matches!(event, watcher::Event::InitDone);
                // One pass for a burst: whatever the watch already has goes into the
                // store first (a thousand nodes' updates cost one reconcile, not a thousand).
                if let Source::Kube(kube) = &mut self.source {
                    while let Some(Some(more)) = kube.events.next().now_or_never() {
                        match more {
                            Ok(e) => relisted |= matches!(e, watcher::Event::InitDone),
                            Err(e) => {
                                tracing::debug!("watching nodes: {e}");
                                break;
                            }
                        }
                    }
                }
                if relisted {
                    self.resync_logged().await;
                } else if let Err(e) = self.sync_nodes().await {
                    tracing::error!("applying node changes: {e:#}");
                }
            }
            Some(Err(e)) => {
                self.health.api_error();
                let Source::Kube(kube) = &mut self.source else {
                    return;
                };
                if kube.last_watch_error.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!("watching nodes: {e}; keeping the last known table and retrying");
                    kube.last_watch_error = Some(Instant::now());
                }
            }
            None => {
                tracing::error!("the node watch ended; resyncing on the timer only");
            }
        }
    }

    async fn resync_logged(&mut self) {
        match self.resync().await {
            Ok(()) => self.health.resync_ok(),
            Err(e) => {
                tracing::error!("resync: {e:#}");
                self.health.resync_failed(format!("{e:#}"));
            }
        }
    }
}

async fn next_node_event(source: &mut Source) -> Option<Result<watcher::Event<WatchedNode>, watcher::Error>> {
    match source {
        Source::Kube(kube) => kube.events.next().await,
        Source::File { .. } => std::future::pending().await,
    }
}

/// Creates `weft0` (and its peer end) if missing, and brings it to the spec; returns
/// `weft0` and its peer's ifindex.
async fn ensure_device(
    nl: &Netlink,
    own: &NodeEntry,
    uplink: &Link,
    mtu: Option<u32>,
    created: &mut Created,
) -> Result<(Link, u32)> {
    let spec = node::device_spec(own, uplink.mtu, mtu);
    let link = match nl.link_by_name(WEFT0).await? {
        Some(link) if link.kind == Some(InfoKind::Veth) => link,
        Some(link) => {
            bail!("a link named {WEFT0} exists but is a {:?}, not weft's veth: remove it (`ip link del {WEFT0}`)", link.kind)
        }
        None => {
            nl.add_veth(WEFT0, WEFT0_PEER).await?;
            let link = nl.link_by_name(WEFT0).await?.ok_or_else(|| anyhow!("{WEFT0} vanished after creation"))?;
            created.weft0 = Some(link.index);
            tracing::info!(index = link.index, "created {WEFT0}");
            link
        }
    };
    if link.mac != Some(spec.mac) || link.mtu != spec.mtu || !link.up || !link.noarp {
        nl.configure_link(link.index, Some(spec.mac), spec.mtu, false).await?;
    }
    let peer = nl.link_by_name(WEFT0_PEER).await?.ok_or_else(|| anyhow!("{WEFT0_PEER} is missing"))?;
    // TC decap sends inner frames out of the peer: it must be weft0's own other end.
    if link.peer.is_some_and(|p| p != peer.index) {
        bail!("{WEFT0_PEER} (index {}) is not {WEFT0}'s veth peer: remove both (`ip link del {WEFT0}`)", peer.index);
    }
    if peer.mtu != spec.mtu || !peer.up || !peer.noarp {
        nl.configure_link(peer.index, None, spec.mtu, false).await?;
    }
    // TC decap sends inner frames out of the peer, to be aggregated by weft0's GRO (the
    // veth's NAPI), which a veth uses only with GRO on the receiving end and TSO off on
    // the sending one.
    let gro = ethtool::set(WEFT0, Feature::Gro, true).and_then(|a| Ok(a | ethtool::set(WEFT0_PEER, Feature::Tso, false)?));
    match gro {
        Ok(true) => tracing::info!("turned GRO on for {WEFT0}, TSO off for {WEFT0_PEER} (TC decap's frames are aggregated)"),
        Ok(false) => {}
        Err(e) => tracing::warn!("cannot set up GRO on {WEFT0} ({e}): TC decap delivers unaggregated"),
    }
    // One queue (and NAPI instance) per CPU, as the per-CPU backlog had: a veth uses
    // one by default, and every CPU's decap would funnel through its 256-slot ring.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    for dev in [WEFT0_PEER, WEFT0] {
        match ethtool::set_queues(dev, cpus) {
            Ok(Some(n)) => tracing::info!("{dev}: {n} rx/tx queues"),
            Ok(None) => {}
            Err(e) => tracing::warn!("cannot set {dev}'s queue count to {cpus} ({e}): TC decap's frames share one queue"),
        }
    }
    // No IPv6 on the pair: router solicitations and MLD would only meet the encap drop.
    for dev in [WEFT0, WEFT0_PEER] {
        sysctl::ensure(&format!("net.ipv6.conf.{dev}.disable_ipv6"), "1").ok();
    }
    if sysctl::ensure("net.ipv4.ip_forward", "1").context("enabling IPv4 forwarding")? {
        tracing::info!("enabled net.ipv4.ip_forward");
    }

    let addrs = nl.addresses(link.index).await?;
    for (ip, prefix) in &addrs {
        if (*ip, *prefix) != (spec.address, 32) {
            nl.del_address(link.index, *ip, *prefix).await?;
        }
    }
    if !addrs.contains(&(spec.address, 32)) {
        nl.add_address(link.index, spec.address, 32).await?;
    }
    Ok((nl.link_by_index(link.index).await?.ok_or_else(|| anyhow!("{WEFT0} vanished"))?, peer.index))
}

/// `bit` when `on`.
fn flag(on: bool, bit: u32) -> u32 {
    if on { bit } else { 0 }
}
