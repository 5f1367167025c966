//! The running agent: its state, the event loop and resync, for both sources of the
//! node table. One duty per submodule:
//! - [`startup`]: command line and source wired into a running [`Agent`], with rollback;
//! - [`source`]: the node table's sources (file, API server) behind one [`Source`];
//! - [`address`]: the uplink as it is now, and the tunnel's own underlay address;
//! - [`device`]: `weft0` and its peer, and the attach plan (`weft0`, uplink, pods);
//! - [`publish`]: `subnet.env`, the CNI conflist and this node's Node object;
//! - here: the config, reconcile, resync and the loop that drives them.
//!
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
    config::{
        DataplaneConfig, FLAG_BRIDGE_BYPASS, FLAG_DECAP_L4_UDP, FLAG_FAST_PATH, FLAG_MASQUERADE, FLAG_SOURCE_CHECK,
        FLAG_XDP_DECAP, NodeName,
    },
    maps as spec,
};

use crate::{
    annotations::{self, Advert, Skip},
    bpffs, cni,
    config::{Args, CniConf, DecapMode, STATIC_DEFAULTS, TcAttach},
    dataplane::{Attached, Dataplane, TcPath},
    ethtool::{self, Feature},
    events::{Reason, Recorder, Regarding},
    healthz::Health,
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

mod address;
mod device;
mod masq;
mod publish;
mod source;
mod startup;

use device::ensure_device;
use source::*;
use startup::Created;
pub use startup::run;

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
    health: Health,
    /// `--ip-masq`: the cluster network and the NAT table's collector.
    masq: Option<Masq>,
    /// The CNI config that sorts before ours, last warned about.
    cni_shadowed_by: Option<std::path::PathBuf>,
    /// More remote nodes than `--max-nodes`, last reported.
    over_limit: Option<node::TooManyNodes>,
}

/// Masquerade's settings and its collector.
pub(super) struct Masq {
    network: Ipv4Network,
    collector: crate::nat::Collector,
}

impl Agent {
    pub(super) fn write_config(&mut self) -> Result<()> {
        let config = DataplaneConfig {
            abi_version: ABI_VERSION,
            vni: self.vni,
            underlay_ip: self.tunnel_ip.octets(),
            udp_port: self.port,
            vtep_mac: self.own.vtep_mac.0,
            uplink_ifindex: self.uplink.index,
            weft0_ifindex: self.weft0.index,
            flags: flag(self.args.fast_path, FLAG_FAST_PATH)
                | flag(self.args.pod_source_check, FLAG_SOURCE_CHECK)
                | flag(self.pods.as_ref().is_some_and(Pods::bypass), FLAG_BRIDGE_BYPASS)
                | flag(self.decap_l4_udp, FLAG_DECAP_L4_UDP)
                | flag(self.masq.is_some(), FLAG_MASQUERADE)
                | flag(self.xdp, FLAG_XDP_DECAP),
            weft0_peer_ifindex: self.weft0_peer,
            weft0_mtu: self.tunnel_mtu(),
            pod_cidr: self.own.pod_cidr.network().octets(),
            pod_prefix: self.own.pod_cidr.prefix(),
            node_name: NodeName::new(&self.own.name),
            ..Default::default()
        };
        let (port_min, port_max, port_min2, port_max2) = self.args.nat_port_range.config();
        let config = match &self.masq {
            // MASQUERADE's choice: the address of the interface the packet leaves by.
            Some(m) => DataplaneConfig {
                masq_ip: self.uplink_address.unwrap_or(self.tunnel_ip).octets(),
                cluster_net: m.network.network().octets(),
                cluster_prefix: m.network.prefix(),
                nat_port_min: port_min,
                nat_port_max: port_max,
                nat_port_min2: port_min2,
                nat_port_max2: port_max2,
                ..config
            },
            None => config,
        };
        if self.dataplane.maps.config()? != config {
            self.dataplane.maps.set_config(config)?;
        }
        Ok(())
    }

    /// What the maps and routes should hold: the remote nodes that fit `--max-nodes`.
    /// The rest are reported (log, metric, `/readyz`) once per change, never fatal: a
    /// restart would not make them fit, and would stop serving those that do.
    fn desired(&mut self) -> node::Desired {
        let others = self.table.nodes.iter().filter(|n| n.name != self.own.name);
        let (fit, over) = node::within_limit(others, self.args.max_nodes);
        let desired = node::desired(fit, self.vni);
        if over != self.over_limit {
            // One error when the table outgrows the maps, not one per Node that joins
            // past the limit (a growing cluster's every pass): /readyz and the metric
            // follow the count.
            match (&over, &self.over_limit) {
                (Some(e), None) => tracing::error!("{e}"),
                (Some(e), Some(_)) => tracing::debug!("still {e}"),
                (None, _) => tracing::info!(max_nodes = self.args.max_nodes, "every node fits the maps again"),
            }
            self.health.set_over_limit(over.as_ref().map(|e| (e.to_string(), e.left_out() as u64)));
            self.over_limit = over;
        }
        desired
    }

    /// `full`: against what the kernel holds; else against what the last pass applied.
    async fn reconcile(&mut self, full: bool) -> Result<()> {
        let desired = self.desired();
        // Taken in both cases: if this pass fails, the next one reads the kernel.
        let known = self.applied.take().filter(|_| !full);
        let changes = reconcile::apply(&mut self.dataplane.maps, &self.nl, self.weft0.index, &desired, known.as_ref()).await?;
        self.applied = Some(desired);
        if changes != reconcile::Changes::default() {
            tracing::info!(upserted = changes.upserted, removed = changes.removed, "reconciled");
        }
        Ok(())
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
            && (!self.xdp || self.uplink.xdp_drv_prog == Some(self.dataplane.xdp_program_id()?))
            && (self.masq.is_none()
                || self.dataplane.is_attached(spec::programs::MASQ, &self.uplink.name, TcAttachType::Egress)?);
        if !attached {
            tracing::warn!("a program is no longer attached (interface recreated?): attaching again");
            self.attach(&mut created)?;
        }
        self.reconcile(true).await?;
        self.keep_masq()?;
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

    async fn run_loop(mut self) -> Result<()> {
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut resync = tokio::time::interval(Duration::from_secs(self.args.resync_seconds));
        // The node table file is polled (one stat per second): it works for every
        // editor and for ConfigMap volumes, which swap a symlink rather than write.
        let mut poll = tokio::time::interval(Duration::from_secs(1));
        let mut collect = tokio::time::interval(crate::nat::COLLECT_EVERY);
        let mut logger = match self.dataplane.logger.take() {
            // SAFETY: the logger owns its ring buffer's fd and returns that same open fd
            // from every `as_raw_fd` call until it is dropped, with the AsyncFd.
            Some(l) => Some(
                unsafe { AsyncFd::register_with_interest(l, tokio::io::Interest::READABLE) }
                    .map_err(|e| anyhow!("watching the eBPF log: {e}"))?,
            ),
            None => None,
        };
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
                _ = collect.tick(), if self.masq.is_some() => {
                    if let Some(m) = &mut self.masq {
                        m.collector.run(&mut self.dataplane.maps);
                        self.health.set_nat_reclaimed(m.collector.totals.expired, m.collector.totals.orphans);
                    }
                }
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
                    relisted |= drain_burst(&mut kube.events).await;
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
        let error = match self.resync().await {
            Ok(()) => {
                self.health.resync_ok();
                None
            }
            Err(e) => {
                tracing::error!("resync: {e:#}");
                self.health.resync_failed(format!("{e:#}"));
                Some(format!("{e:#}"))
            }
        };
        if let Source::Kube(kube) = &mut self.source {
            kube.resync_result(&self.own.name, error);
        }
    }
}

/// The longest a burst of Node events is drained before it is applied: other work
/// (signals, resyncs, pods) waits meanwhile.
const BURST_MAX: Duration = Duration::from_millis(250);
/// Empty looks in a row that end a burst: a watch line may take the connection task
/// more than one turn (a frame split across reads).
const BURST_EMPTY_LOOKS: u32 = 3;

/// Takes every Node event the watch already holds into the store; whether one ended
/// a (re)list.
///
/// The watch's bytes are read by hyper's connection task, which on this
/// current-thread runtime runs only while this task waits, and it hands over one
/// chunk at a time (one event, as API servers send them). So `now_or_never` alone
/// saw one event per pass: 9,000 Nodes created in a few seconds cost 9,000 full
/// passes over a growing table, minutes of work (tests/tests/scale.rs). Yielding
/// between looks lets the connection task read on: the pass takes what the socket
/// has, and a slow pass makes the next burst larger instead of the backlog longer.
async fn drain_burst(events: &mut NodeEvents) -> bool {
    let (started, mut relisted, mut empty) = (Instant::now(), false, 0);
    while empty < BURST_EMPTY_LOOKS && started.elapsed() < BURST_MAX {
        match events.next().now_or_never() {
            Some(Some(Ok(e))) => {
                relisted |= matches!(e, watcher::Event::InitDone);
                empty = 0;
            }
            Some(Some(Err(e))) => {
                tracing::debug!("watching nodes: {e}");
                break;
            }
            Some(None) => break,
            None => {
                empty += 1;
                tokio::task::yield_now().await;
            }
        }
    }
    relisted
}

/// `bit` when `on`.
fn flag(on: bool, bit: u32) -> u32 {
    if on { bit } else { 0 }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;
    use crate::node_object::WatchedNode;

    /// A watch as hyper delivers it on a current-thread runtime: another task feeds a
    /// one-slot channel, so each event is there only after this task has waited.
    /// Counts the events taken.
    fn watch_fed_by_another_task(events: usize, taken: Arc<AtomicUsize>) -> NodeEvents {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            for _ in 0..events {
                if tx.send(Ok(watcher::Event::Apply(WatchedNode::default()))).await.is_err() {
                    return;
                }
            }
            std::future::pending::<()>().await;
        });
        let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        Box::pin(stream.inspect(move |_| {
            taken.fetch_add(1, Ordering::Relaxed);
        }))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_burst_is_drained_whole_though_another_task_hands_it_over_one_event_at_a_time() {
        let taken = Arc::new(AtomicUsize::new(0));
        let mut events = watch_fed_by_another_task(1000, taken.clone());
        assert!(events.next().await.is_some(), "the burst's first event");
        let started = Instant::now();
        drain_burst(&mut events).await;
        // All of it in one pass, not the one event more a `now_or_never` loop saw.
        assert_eq!(taken.load(Ordering::Relaxed), 1000, "drained in {:?}", started.elapsed());
        // And the pass ends after a few empty looks, not at BURST_MAX.
        assert!(started.elapsed() < BURST_MAX, "{:?}", started.elapsed());
    }
}
