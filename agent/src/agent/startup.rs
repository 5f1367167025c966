//! Startup: the command line and the node source wired into a running [`Agent`]; a
//! start either completes or undoes what *this* start created (a new `weft0`, new pins).

use super::*;
use crate::flannel_leftovers::{self, LeftoverError, Policy};

/// What this start created, to undo if it fails.
#[derive(Default)]
pub(super) struct Created {
    pub(super) weft0: Option<u32>,
    pub(super) pins: Vec<PathBuf>,
    /// The pin directory, if this start made it (removed if left empty).
    pub(super) dir: Option<PathBuf>,
}

impl Created {
    pub(super) async fn roll_back(self, nl: &Netlink) {
        if let Some(index) = self.weft0 {
            // Deleting weft0 also drops its routes, its peer end and its TCX link.
            if let Err(e) = nl.delete_link(index).await {
                tracing::warn!("rollback: deleting {WEFT0}: {e:#}");
            }
        }
        for pin in self.pins {
            if let Err(e) = crate::dataplane::unpin(&pin) {
                tracing::warn!("rollback: removing pin {}: {e}", pin.display());
            }
        }
        if let Some(dir) = self.dir {
            // Fails, harmlessly, if anything this start did not create is in it.
            let _ = std::fs::remove_dir(dir);
        }
    }
}

pub async fn run(args: Args) -> Result<()> {
    for warning in crate::compat::check(&args.flanneld)? {
        tracing::warn!("{warning}");
    }
    privileges::check()?;
    privileges::check_kernel()?;
    // Before anything is touched (the health port included): a second agent on this
    // pin directory fails here, naming the first, and changes nothing.
    let fresh_dir = !args.bpffs_dir.exists();
    bpffs::ensure(&args.bpffs_dir)?;
    let _lock = match crate::lock::lock(&args.bpffs_dir) {
        Ok(lock) => lock,
        Err(e) => {
            if fresh_dir {
                let _ = std::fs::remove_dir(&args.bpffs_dir);
            }
            return Err(e.into());
        }
    };
    let nl = Netlink::connect().context("opening a netlink socket")?;
    let mut created = Created { dir: fresh_dir.then(|| args.bpffs_dir.clone()), ..Created::default() };
    let health = crate::healthz::Health::new(Duration::from_secs(args.resync_seconds));
    // Served before anything can wait (for the API server, the podCIDR): probes see
    // the agent live, and not ready, from the start.
    if args.healthz_port != 0 {
        let addr = std::net::SocketAddr::new(args.healthz_ip, args.healthz_port);
        crate::http::spawn(addr, health.clone(), args.bpffs_dir.clone()).await?;
    }
    let started = match args.peers.clone() {
        Some(path) => start_static(args, path, nl.clone(), health, &mut created).await,
        None => start_kube(args, nl.clone(), health, &mut created).await,
    };
    let agent = match started {
        Ok(agent) => {
            agent.health.started();
            agent
        }
        Err(e) => {
            created.roll_back(&nl).await;
            return Err(e);
        }
    };
    agent.run_loop().await
}

pub(super) fn selector(args: &Args) -> Selector {
    Selector { iface: args.iface.clone(), iface_regex: args.iface_regex.clone() }
}

pub(super) async fn start_static(args: Args, path: PathBuf, nl: Netlink, health: Health, created: &mut Created) -> Result<Agent> {
    let table = peers::load(&path)?;
    let name = args.node_name.clone().context("--node-name (or $NODE_NAME) is required with --peers")?;
    let own = table
        .split(&name)
        .map(|(me, _)| me.clone())
        .ok_or_else(|| peers::PeersError::OwnNodeMissing { path: path.clone(), name: name.clone() })?;
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
    refuse_leftovers(&args, &nl, vni, port).await?;
    let masq = Masq::from_args(&args, None)?;
    let stamp = file_stamp(&path);
    let source = Source::File { path, stamp };
    let mut agent = Agent::bring_up(args, vni, port, None, nl, own, table, up, source, health, masq, created).await?;
    agent.reconcile(true).await?;
    agent.remove_leftovers().await;
    tracing::info!("dataplane up");
    Ok(agent)
}

pub(super) async fn start_kube(args: Args, nl: Netlink, health: Health, created: &mut Created) -> Result<Agent> {
    let conf = netconf::load(&args.net_config_path)?;
    for warning in &conf.warnings {
        tracing::warn!("{}: {warning}", args.net_config_path.display());
    }
    for (flag, cli, file) in
        [("--vni", args.vni.map(u64::from), u64::from(conf.vni)), ("--port", args.port.map(u64::from), u64::from(conf.port))]
    {
        if cli.is_some_and(|v| v != file) {
            bail!("{flag} {} contradicts {} ({file})", cli.unwrap_or_default(), args.net_config_path.display());
        }
    }
    refuse_leftovers(&args, &nl, conf.vni, conf.port).await?;
    health.starting("connecting to the API server");
    let client = kube_sync::client(args.kubeconfig_file.as_deref(), args.kube_api_url.as_deref()).await?;
    let node_name = match args.node_name.clone() {
        Some(name) => name,
        None => {
            health.starting("reading this agent's own Pod for the node's name");
            kube_sync::own_pod_node(&client).await?
        }
    };
    tracing::info!(node = %node_name, "this node");
    let args = Args { node_name: Some(node_name.clone()), ..args };
    let recorder = Recorder::new(client.clone(), node_name.clone(), health.clone());
    let api: Api<Node> = Api::all(client);
    let (own_node, pod_cidr) = match kube_sync::wait_for_own_node(&api, &node_name, &health).await {
        Ok(found) => found,
        Err(e) => {
            if let kube_sync::KubeError::OwnNode { name, uid, reason } = &e {
                let regarding = Regarding { name: name.clone(), uid: uid.clone() };
                recorder.post(&regarding, Reason::InvalidPodCIDR, &format!("{reason}; weft-agent exits")).await;
            }
            return Err(e.into());
        }
    };
    if !(conf.network.contains(pod_cidr.network()) && pod_cidr.prefix() >= conf.network.prefix()) {
        let why =
            format!("podCIDR {pod_cidr} lies outside the cluster network {} ({})", conf.network, args.net_config_path.display());
        recorder.post(&Regarding::of(&own_node), Reason::InvalidPodCIDR, &format!("{why}; weft-agent exits")).await;
        bail!("node {node_name}: {why}; refusing to start");
    }
    let up = uplink::select(&nl, &selector(&args), &address::uplink_hints(&own_node, args.public_ip, conf.network)).await?;
    let existing_mac = nl.link_by_name(WEFT0).await?.and_then(|l| l.mac).map(peers::Mac);
    let vtep_mac = kube_sync::choose_vtep_mac(&own_node, existing_mac);
    let (public_ip, own_error) =
        address::advertised_at_start(&own_node, args.public_ip, up.address, conf.network).map_err(|e| anyhow!(e))?;
    let own = NodeEntry { name: node_name.clone(), underlay_ip: public_ip, pod_cidr, vtep_mac };
    tracing::info!(node = %own.name, %pod_cidr, %public_ip, %vtep_mac, "own node");

    // The full node list before anything is programmed: a start never begins from
    // an empty table.
    let (store, writer) = reflector::store();
    let mut events: NodeEvents = Box::pin(
        reflector(
            writer,
            watcher(Api::<WatchedNode>::all(api.clone().into_client()), watcher::Config::default()).modify({
                let own = node_name.clone();
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
    let mut kube = Kube {
        api,
        store,
        events,
        network: conf.network,
        advertised: None,
        advertised_at: None,
        available_at: None,
        warned: BTreeMap::new(),
        recorder,
        own_uid: own_node.metadata.uid.clone(),
        own_error: None,
        own_cidr: None,
        resync_error: None,
        last_watch_error: None,
    };
    kube.own_address_error(&own.name, public_ip, own_error);
    let mut source = Source::Kube(Box::new(kube));
    let table = kube_table(&own, &mut source, conf.vni);
    let masq = Masq::from_args(&args, Some(conf.network))?;
    let mut agent =
        Agent::bring_up(args, conf.vni, conf.port, conf.mtu, nl, own, table, up, source, health, masq, created).await?;
    agent.reconcile(true).await?;
    agent.remove_leftovers().await;
    agent.write_cni_files()?;
    agent.sync_node_object().await;
    tracing::info!("dataplane up");
    Ok(agent)
}

/// `--flannel-leftovers refuse`: fails, naming each leftover, before anything is set up.
async fn refuse_leftovers(args: &Args, nl: &Netlink, vni: u32, port: u16) -> Result<()> {
    if args.flannel_leftovers == Policy::Refuse {
        let found = flannel_leftovers::find(nl, vni, port).await?;
        if !found.is_empty() {
            return Err(LeftoverError::Refused(found).into());
        }
    }
    Ok(())
}

impl Agent {
    /// `--flannel-leftovers remove`: once weft's programs are attached and its routes
    /// have replaced `flannel.1`'s (the reconcile before this), removes what flanneld
    /// left, one line each. Never fails the start: by now weft forwards, and a rollback
    /// would take weft0's routes with it while `flannel.1`'s are already replaced; a
    /// leftover that cannot be found or removed is logged and kept.
    pub(super) async fn remove_leftovers(&mut self) {
        if self.args.flannel_leftovers != Policy::Remove {
            return;
        }
        let found = match flannel_leftovers::find(&self.nl, self.vni, self.port).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!("looking for Flannel's leftovers: {:#}; none removed", anyhow::Error::from(e));
                return;
            }
        };
        for (leftover, outcome) in flannel_leftovers::remove(&self.nl, found).await {
            match outcome {
                Ok(()) => tracing::warn!("removed Flannel's {leftover}"),
                Err(e) => tracing::warn!("could not remove Flannel's {leftover}: {:#}", anyhow::Error::from(e)),
            }
        }
    }

    #[expect(clippy::too_many_arguments, reason = "one call site per mode; a struct would only rename them")]
    pub(super) async fn bring_up(
        args: Args,
        vni: u32,
        port: u16,
        mtu: Option<u32>,
        nl: Netlink,
        own: NodeEntry,
        table: NodeTable,
        up: uplink::Uplink,
        source: Source,
        health: Health,
        masq: Option<Masq>,
        created: &mut Created,
    ) -> Result<Agent> {
        tracing::info!(node = %own.name, uplink = %up.link.name, underlay = %own.underlay_ip, pod_cidr = %own.pod_cidr, "starting");
        node::check_tunnel_mtu(mtu, &up.link.name, up.link.mtu)?;
        let sizes = crate::maps::Sizes { nat: args.nat_max_entries, nodes: args.max_nodes };
        let tc = match args.tc_attach {
            TcAttach::Auto => TcPath::detect(),
            TcAttach::Tcx if TcPath::detect() == TcPath::Netlink => {
                bail!("--tc-attach tcx: this kernel has no TCX (Linux 6.6 or newer); `auto` or `netlink` attach clsact filters")
            }
            TcAttach::Tcx => TcPath::Tcx,
            TcAttach::Netlink => TcPath::Netlink,
        };
        tracing::info!(path = ?tc, "TC programs attach through {}", if tc == TcPath::Tcx { "TCX links" } else { "clsact filters (netlink)" });
        let (dataplane, pins) = Dataplane::load(&args.bpffs_dir, args.bpf_log.aya_level(), &sizes, tc)?;
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
            masq,
            cni_shadowed_by: None,
            over_limit: None,
        };
        agent.decap_l4_udp = crate::probe::decap_l4_udp(&mut agent.dataplane);
        agent.refresh_tunnel_ip().await?;
        agent.write_config()?;
        let desired = agent.desired();
        reconcile::seed(&mut agent.dataplane.maps, &desired)?;
        agent.keep_masq()?;
        agent.attach(created)?;
        agent.start_pods(created).await?;
        // Outer fragments: decap passes them, the stack reassembles, this decapsulates.
        crate::reassembly::spawn(agent.args.bpffs_dir.clone(), agent.health.reassembly().clone());
        Ok(agent)
    }
}
