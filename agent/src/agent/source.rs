//! The node table's two sources: a file (static mode) or the API server's Nodes
//! (Kubernetes mode), behind one [`Source`]; what each change means for the table.

use super::*;

pub(super) type NodeEvents = Pin<Box<dyn Stream<Item = Result<watcher::Event<WatchedNode>, watcher::Error>> + Send>>;

/// The API server side of Kubernetes mode.
pub(super) struct Kube {
    pub(super) api: Api<Node>,
    pub(super) store: Store<WatchedNode>,
    pub(super) events: NodeEvents,
    pub(super) network: Ipv4Network,
    /// What this agent last published on its Node, and when; when it last cleared
    /// NetworkUnavailable.
    pub(super) advertised: Option<Advert>,
    pub(super) advertised_at: Option<Instant>,
    pub(super) available_at: Option<Instant>,
    /// Skipped nodes and why, to warn once per node and reason.
    pub(super) warned: BTreeMap<String, Skip>,
    /// Events on Nodes, posted once per change.
    pub(super) recorder: Recorder,
    pub(super) own_uid: Option<String>,
    /// Why our own Node's address could not be read, to warn once per reason.
    pub(super) own_error: Option<String>,
    /// Why the podCIDR this node serves is no longer its Node's own, reported once per change.
    pub(super) own_cidr: Option<crate::own_cidr::OwnCidrProblem>,
    /// The last resync failure reported, to report once per distinct error.
    pub(super) resync_error: Option<String>,
    pub(super) last_watch_error: Option<Instant>,
}

pub(super) enum Source {
    File { path: PathBuf, stamp: Option<FileStamp> },
    Kube(Box<Kube>),
}

/// What tells one version of the node table file from another: mtime and size, and
/// the inode, because mtime is only as fine as the kernel's clock tick and an atomic
/// replace (write a temporary file, rename it over) of a same-sized table within one
/// tick keeps both.
pub(super) fn file_stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}

pub(super) type FileStamp = (SystemTime, u64, u64);

/// The table from the watch store, warning once per skipped node and reason: in the
/// log, and with an Event on the Node when it is unusable rather than not ready.
pub(super) fn kube_table(own: &NodeEntry, source: &mut Source, vni: u32) -> NodeTable {
    let Source::Kube(kube) = source else { unreachable!("kube_table in static mode") };
    let nodes = kube.store.state();
    let peers = kube_sync::peers(own, &nodes, kube.network, vni);
    let regarding = |name: &str| {
        let node = nodes.iter().find(|n| n.metadata.name.as_deref() == Some(name));
        Regarding { name: name.into(), uid: node.and_then(|n| n.metadata.uid.clone()) }
    };
    for (name, skip) in &peers.skipped {
        if kube.warned.get(name) != Some(skip) {
            match skip {
                Skip::Malformed(why) => {
                    tracing::warn!(node = %name, "skipping node: {why}");
                    kube.recorder.report(regarding(name), Reason::PeerSkipped, format!("not a VXLAN peer: {why}"));
                }
                Skip::NotVxlan(why) => tracing::info!(node = %name, "not a peer (yet): {why}"),
            }
        }
    }
    for entry in &peers.entries {
        if let Some(Skip::Malformed(why)) = kube.warned.get(&entry.name) {
            tracing::info!(node = %entry.name, "a VXLAN peer again");
            let note = format!("a VXLAN peer again (was: {why})");
            kube.recorder.report(regarding(&entry.name), Reason::PeerAccepted, note);
        }
    }
    kube.warned = peers.skipped.clone();
    kube_sync::table(own, &peers)
}

impl Kube {
    fn own(&self, name: &str) -> Regarding {
        Regarding { name: name.into(), uid: self.own_uid.clone() }
    }

    /// Why this node's address cannot be read from its Node (None: it can), logged
    /// and reported once per reason.
    pub(super) fn own_address_error(&mut self, name: &str, keeping: Ipv4Addr, error: Option<String>) {
        if let Some(e) = &error
            && self.own_error.as_ref() != Some(e)
        {
            tracing::warn!(keeping = %keeping, "this node's address: {e}");
            self.recorder.report(self.own(name), Reason::InvalidAddress, format!("{e}; keeping {keeping}"));
        }
        self.own_error = error;
    }

    /// This node's podCIDR problem now (None: none), reported once per change: log,
    /// Event on the Node as it is now (a recreated Node has a new uid), `/readyz`.
    pub(super) fn own_cidr_result(
        &mut self,
        node: Option<&WatchedNode>,
        problem: Option<crate::own_cidr::OwnCidrProblem>,
        health: &Health,
    ) {
        if problem == self.own_cidr {
            return;
        }
        match &problem {
            Some(p) => {
                tracing::error!("this node's podCIDR: {p}");
                if let Some(node) = node.filter(|_| p.on_the_node()) {
                    self.recorder.report(Regarding::of(node), Reason::PodCIDRConflict, p.to_string());
                }
            }
            None => tracing::info!("this node's podCIDR is its own again"),
        }
        health.set_own_cidr_problem(problem.as_ref().map(ToString::to_string));
        self.own_cidr = problem;
    }

    /// A resync failed (Some) or succeeded (None); reported once per distinct error.
    pub(super) fn resync_result(&mut self, name: &str, error: Option<String>) {
        if let Some(e) = &error
            && self.resync_error.as_ref() != Some(e)
        {
            self.recorder.report(self.own(name), Reason::ResyncFailed, format!("{e}; retrying every resync"));
        }
        self.resync_error = error;
    }
}

pub(super) async fn next_node_event(source: &mut Source) -> Option<Result<watcher::Event<WatchedNode>, watcher::Error>> {
    match source {
        Source::Kube(kube) => kube.events.next().await,
        Source::File { .. } => std::future::pending().await,
    }
}

impl Agent {
    /// Recomputes this node and the table from the source (Kubernetes mode). A bad
    /// address on our own Node (a mistyped `public-ip-overwrite`) keeps the one in
    /// use, with a warning, rather than stopping every other update.
    pub(super) fn refresh_from_store(&mut self) {
        let Source::Kube(kube) = &mut self.source else {
            return;
        };
        let nodes = kube.store.state();
        let own_node = nodes.iter().find(|n| n.metadata.name.as_deref() == Some(&self.own.name));
        let problem = crate::own_cidr::check(&self.own.name, self.own.pod_cidr, &nodes);
        kube.own_cidr_result(own_node.map(std::sync::Arc::as_ref), problem, &self.health);
        if let Some(node) = own_node {
            match address::advertised(node.as_ref(), self.args.public_ip, self.uplink_address, kube.network) {
                Ok(ip) => {
                    kube.own_address_error(&self.own.name, ip, None);
                    if ip != self.own.underlay_ip {
                        tracing::info!(old = %self.own.underlay_ip, new = %ip, "this node's public address changed");
                        self.own.underlay_ip = ip;
                    }
                }
                Err(e) => kube.own_address_error(&self.own.name, self.own.underlay_ip, Some(e)),
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

    pub(super) fn reload_file(&mut self) {
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
}
