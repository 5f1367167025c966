//! What the agent publishes: `subnet.env` and the CNI conflist, and its own Node
//! object (Flannel's annotations, `NetworkUnavailable`).

use super::*;

impl Agent {
    pub(super) fn tunnel_mtu(&self) -> u32 {
        node::device_spec(&self.own, self.uplink.mtu, self.mtu).mtu
    }

    /// subnet.env always; the conflist as `--cni-conf` says. Rewritten only on change.
    pub(super) fn write_cni_files(&mut self) -> Result<()> {
        let Source::Kube(kube) = &self.source else {
            return Ok(());
        };
        let env = cni::subnet_env(kube.network, self.own.pod_cidr, self.tunnel_mtu(), self.args.ip_masq);
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
            let (cidr, mtu, data_dir) = (self.own.pod_cidr, self.tunnel_mtu(), self.args.cni_ipam_data_dir.as_deref());
            let list = match &self.args.cni_conf_template {
                None => cni::conflist(cidr, mtu, data_dir),
                Some(file) => {
                    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
                    let template = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", file.display()))?;
                    cni::conflist_from_template(&template, cidr, mtu, data_dir)
                        .with_context(|| format!("CNI conflist template {}", file.display()))?
                }
            };
            let text = serde_json::to_string_pretty(&list)? + "\n";
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                cni::write_atomic(&path, &text)?;
                tracing::info!(path = %path.display(), "wrote CNI conflist");
            }
            // Ours is written, but the runtime takes the first file: say so, once per file.
            let first = cni::first_config(dir).filter(|p| *p != path);
            if first.is_some() && first != self.cni_shadowed_by {
                let other = first.as_deref().unwrap_or(&path).display();
                tracing::warn!(
                    "{other} sorts before {}: the container runtime uses it, not weft's conflist, for new pods",
                    path.display()
                );
            }
            self.cni_shadowed_by = first;
        }
        Ok(())
    }

    /// Publishes our annotations and clears NetworkUnavailable, level-triggered: the
    /// Node object as the watch last saw it is compared with what it should say, so
    /// an edit by someone else is put right and a failed patch is retried. A patch
    /// not yet seen in the watch is not repeated within a resync period.
    pub(super) async fn sync_node_object(&mut self) {
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
        if self.args.set_node_network_unavailable
            && (already_published || kube.advertised.is_some())
            && !available
            && due(kube.available_at)
        {
            match kube_sync::set_network_available(&kube.api, &self.own.name).await {
                Ok(()) => kube.available_at = Some(Instant::now()),
                Err(e) => tracing::warn!("{e:#}; will retry"),
            }
        }
    }
}
