//! Startup, the event loop and resync.
//!
//! Startup either completes or undoes what *this* start created (a new `weft0`, new
//! pins) and nothing else: state adopted from an earlier agent keeps forwarding.
//! Once up, the agent re-reads the node table on SIGHUP and when the file changes,
//! and resyncs everything every `--resync-seconds`. On SIGTERM/SIGINT it exits and
//! leaves the dataplane in place: pinned links keep the programs attached and pinned
//! maps keep their entries, for the next agent to adopt.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result, anyhow, bail};
use aya::programs::TcAttachType;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};
use weft_common::{ABI_VERSION, config::DataplaneConfig, maps as spec};

use crate::{
    bpffs,
    config::Args,
    dataplane::{Attached, Dataplane},
    maps::PinState,
    netlink::{Link, Netlink},
    node::{self, WEFT0, WEFT0_PEER},
    peers::{self, NodeEntry, NodeTable},
    privileges, reconcile, sysctl,
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

pub struct Agent {
    args: Args,
    nl: Netlink,
    dataplane: Dataplane,
    table: NodeTable,
    uplink: Link,
    weft0: Link,
    table_stamp: Option<(SystemTime, u64)>,
}

pub async fn run(args: Args) -> Result<()> {
    privileges::check()?;
    let table = peers::load(&args.peers)?;
    let nl = Netlink::connect().context("opening a netlink socket")?;
    let mut created = Created::default();
    let agent = match Agent::start(args, table, nl.clone(), &mut created).await {
        Ok(agent) => agent,
        Err(e) => {
            created.roll_back(&nl).await;
            return Err(e);
        }
    };
    agent.run_loop().await
}

fn own_entry<'a>(table: &'a NodeTable, args: &Args) -> Result<&'a NodeEntry> {
    table
        .split(&args.node_name)
        .map(|(me, _)| me)
        .ok_or_else(|| peers::PeersError::OwnNodeMissing { path: args.peers.clone(), name: args.node_name.clone() }.into())
}

fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl Agent {
    async fn start(args: Args, table: NodeTable, nl: Netlink, created: &mut Created) -> Result<Agent> {
        let own = own_entry(&table, &args)?.clone();
        let uplink = find_uplink(&nl, &args, &own).await?;
        tracing::info!(node = %own.name, uplink = %uplink.name, underlay = %own.underlay_ip, pod_cidr = %own.pod_cidr, "starting");

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

        let table_stamp = file_stamp(&args.peers);
        let weft0 = ensure_device(&nl, &own, &uplink, created).await?;
        let mut agent = Agent { args, nl, dataplane, table, uplink, weft0, table_stamp };
        agent.write_config(&own)?;
        agent.attach(created)?;
        agent.reconcile().await?;
        tracing::info!("dataplane up");
        Ok(agent)
    }

    fn write_config(&mut self, own: &NodeEntry) -> Result<()> {
        let config = DataplaneConfig {
            abi_version: ABI_VERSION,
            vni: self.args.vni,
            underlay_ip: own.underlay_ip.octets(),
            udp_port: self.args.port,
            vtep_mac: own.vtep_mac.0,
            uplink_ifindex: self.uplink.index,
            weft0_ifindex: self.weft0.index,
            ..Default::default()
        };
        if self.dataplane.maps.config()? != config {
            self.dataplane.maps.set_config(config)?;
        }
        Ok(())
    }

    /// Attaches both programs; records links this start pinned anew.
    fn attach(&mut self, created: &mut Created) -> Result<()> {
        let hooks = [
            (spec::programs::ENCAP, self.weft0.name.clone(), TcAttachType::Egress, spec::links::ENCAP),
            (spec::programs::DECAP, self.uplink.name.clone(), TcAttachType::Ingress, spec::links::DECAP),
        ];
        for (prog, iface, hook, pin) in hooks {
            let how = self.dataplane.attach(prog, &iface, hook, pin)?;
            tracing::info!(program = prog, iface = %iface, how = ?how, "attached");
            if how == Attached::Created {
                created.pins.push(self.dataplane.link_pin(pin));
            }
        }
        Ok(())
    }

    async fn reconcile(&mut self) -> Result<()> {
        let (_, others) = self
            .table
            .split(&self.args.node_name)
            .ok_or_else(|| anyhow!("node {} vanished from the table", self.args.node_name))?;
        let desired = node::desired(others, self.args.vni);
        let changes = reconcile::apply(&mut self.dataplane.maps, &self.nl, self.weft0.index, &desired).await?;
        if changes != reconcile::Changes::default() {
            tracing::info!(upserted = changes.upserted, removed = changes.removed, "reconciled");
        }
        Ok(())
    }

    /// Brings the device, config, attachments, maps and routes back to the table.
    async fn resync(&mut self) -> Result<()> {
        let own = own_entry(&self.table, &self.args)?.clone();
        self.uplink = self
            .nl
            .link_by_index(self.uplink.index)
            .await?
            .ok_or_else(|| anyhow!("uplink {} disappeared", self.uplink.name))?;
        let mut created = Created::default();
        self.weft0 = ensure_device(&self.nl, &own, &self.uplink, &mut created).await?;
        self.write_config(&own)?;
        let attached = self.dataplane.is_attached(spec::programs::ENCAP, &self.weft0.name, TcAttachType::Egress)?
            && self.dataplane.is_attached(spec::programs::DECAP, &self.uplink.name, TcAttachType::Ingress)?;
        if !attached {
            tracing::warn!("a program is no longer attached (interface recreated?): attaching again");
            self.attach(&mut created)?;
        }
        self.reconcile().await
    }

    fn reload_table(&mut self) {
        match peers::load(&self.args.peers) {
            Ok(table) if table.split(&self.args.node_name).is_none() => {
                tracing::error!(
                    "{}: this node ({}) is missing: keeping the previous node table",
                    self.args.peers.display(),
                    self.args.node_name
                );
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
        // The node table is polled (one stat per second): it works for every editor
        // and for ConfigMap volumes, which swap a symlink rather than write the file.
        let mut poll = tokio::time::interval(Duration::from_secs(1));
        let mut logger = match self.dataplane.logger.take() {
            // SAFETY: the logger owns its ring buffer's fd and returns that same open fd
            // from every `as_raw_fd` call until it is dropped, with the AsyncFd.
            Some(l) => Some(unsafe { AsyncFd::register_with_interest(l, tokio::io::Interest::READABLE) }.map_err(|e| anyhow!("watching the eBPF log: {e}"))?),
            None => None,
        };
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: re-reading the node table");
                    self.table_stamp = file_stamp(&self.args.peers);
                    self.reload_table();
                    self.resync_logged().await;
                }
                _ = poll.tick() => {
                    let stamp = file_stamp(&self.args.peers);
                    if stamp != self.table_stamp {
                        self.table_stamp = stamp;
                        self.reload_table();
                        self.resync_logged().await;
                    }
                }
                _ = resync.tick() => self.resync_logged().await,
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

    async fn resync_logged(&mut self) {
        if let Err(e) = self.resync().await {
            tracing::error!("resync: {e:#}");
        }
    }
}

async fn find_uplink(nl: &Netlink, args: &Args, own: &NodeEntry) -> Result<Link> {
    match &args.iface {
        Some(name) => {
            let link = nl.link_by_name(name).await?.ok_or_else(|| anyhow!("interface {name} (--iface) does not exist"))?;
            if !nl.addresses(link.index).await?.iter().any(|(a, _)| *a == own.underlay_ip) {
                tracing::warn!(iface = %name, underlay = %own.underlay_ip, "the interface does not hold this node's underlay address");
            }
            Ok(link)
        }
        None => nl.link_with_address(own.underlay_ip).await?.ok_or_else(|| {
            anyhow!(
                "no interface holds this node's underlay address {} (from {}); pass --iface",
                own.underlay_ip,
                args.peers.display()
            )
        }),
    }
}

/// Creates `weft0` (and its peer end) if missing, and brings it to the spec.
async fn ensure_device(nl: &Netlink, own: &NodeEntry, uplink: &Link, created: &mut Created) -> Result<Link> {
    let spec = node::device_spec(own, uplink.mtu);
    let link = match nl.link_by_name(WEFT0).await? {
        Some(link) if link.kind == Some(rtnetlink::packet_route::link::InfoKind::Veth) => link,
        Some(link) => bail!(
            "a link named {WEFT0} exists but is a {:?}, not weft's veth: remove it (`ip link del {WEFT0}`)",
            link.kind
        ),
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
    if peer.mtu != spec.mtu || !peer.up || !peer.noarp {
        nl.configure_link(peer.index, None, spec.mtu, false).await?;
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
    Ok(nl.link_by_index(link.index).await?.ok_or_else(|| anyhow!("{WEFT0} vanished"))?)
}
