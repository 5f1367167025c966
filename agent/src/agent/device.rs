//! The device and attach plan: `weft0` and its veth peer, the programs on `weft0`,
//! the uplink (TC, and XDP as `--decap` says) and the pods.

use super::*;

/// Creates `weft0` (and its peer end) if missing, and brings it to the spec; returns
/// `weft0` and its peer's ifindex.
pub(super) async fn ensure_device(
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
    // Every CPU the kernel may run decap on, not the CPUs this agent may use: a CPU
    // limit (Flannel's manifest gives 100m) or an affinity mask would leave the other
    // CPUs' frames without their queue.
    let cpus = possible_cpus();
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

impl Agent {
    /// Attaches the programs (masquerade's with `--ip-masq`); records links this start pinned anew.
    pub(super) fn attach(&mut self, created: &mut Created) -> Result<()> {
        let mut hooks = vec![
            (spec::programs::ENCAP, self.weft0.name.clone(), TcAttachType::Egress, spec::links::ENCAP),
            (spec::programs::DECAP, self.uplink.name.clone(), TcAttachType::Ingress, spec::links::DECAP),
        ];
        if self.masq.is_some() {
            hooks.push((spec::programs::MASQ, self.uplink.name.clone(), TcAttachType::Egress, spec::links::MASQ));
        }
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
    pub(super) fn attach_xdp(&mut self, created: &mut Created) -> Result<()> {
        let pin = spec::links::DECAP_XDP;
        let tc = match self.args.decap {
            DecapMode::Tc => Some("--decap tc"),
            DecapMode::Auto if self.uplink.kind == Some(InfoKind::Veth) => Some("--decap auto on a veth uplink"),
            _ => None,
        };
        if let Some(why) = tc {
            // TC stops trusting frames to the VtepMAC before XDP (which drops such frames
            // from the wire) goes.
            self.xdp = false;
            self.write_config()?;
            if self.dataplane.detach_pinned(pin)? {
                tracing::info!(iface = %self.uplink.name, "removed XDP decap ({why})");
            }
            if !self.xdp_choice_logged {
                tracing::info!(iface = %self.uplink.name, "decapsulating in TC ({why})");
                self.xdp_choice_logged = true;
            }
            return Ok(());
        }
        match self.dataplane.attach_xdp(&self.uplink.name, self.uplink.xdp_drv_prog, pin) {
            Ok(how) => {
                tracing::info!(program = spec::programs::DECAP_XDP, iface = %self.uplink.name, how = ?how, "attached (native XDP)");
                if how == Attached::Created {
                    created.pins.push(self.dataplane.link_pin(pin));
                }
                // Only now does TC take frames to the VtepMAC for XDP's.
                self.xdp = true;
                self.write_config()?;
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

    /// Subscribes to the pods' link events, attaches to the bridge there is and to the
    /// pod veths with a CNI result, fills the endpoints. First undoes what an earlier
    /// agent with other settings left.
    pub(super) async fn start_pods(&mut self, created: &mut Created) -> Result<()> {
        let (fast, check) = (self.args.fast_path, self.args.pod_source_check);
        pods::disable_unused(&mut self.dataplane, fast, check)?;
        let mut pods = Pods::new(cni::BRIDGE, fast, check, &self.args.cni_cache_dir)?;
        pods.sync(&self.nl, &mut self.dataplane, self.own.pod_cidr, &mut created.pins).await?;
        self.pods = Some(pods);
        self.write_config()
    }

    /// Rescans the pods; the config follows the bridge program's attachment.
    pub(super) async fn sync_pods(&mut self) {
        let Some(pods) = &mut self.pods else { return };
        // After start, new pins are this agent's to keep: nothing rolls them back.
        if let Err(e) = pods.sync(&self.nl, &mut self.dataplane, self.own.pod_cidr, &mut Vec::new()).await {
            tracing::error!("pods: {e:#}");
        }
        if let Err(e) = self.write_config() {
            tracing::error!("writing the dataplane config: {e:#}");
        }
    }
}

/// Ids the kernel may give a CPU, highest + 1 (`/sys/devices/system/cpu/possible`,
/// e.g. `0-3` or `0,2-5`): decap picks `weft0`'s queue by CPU id.
fn possible_cpus() -> u32 {
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| parse_cpu_list(&s))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()) as u32)
}

/// The highest id in a kernel CPU list, + 1.
fn parse_cpu_list(s: &str) -> Option<u32> {
    let last = s.trim().split(',').filter_map(|r| r.rsplit('-').next()?.trim().parse::<u32>().ok()).max()?;
    Some(last + 1)
}

#[cfg(test)]
mod tests {
    use super::parse_cpu_list;

    #[test]
    fn cpu_lists_give_the_highest_id_plus_one() {
        assert_eq!(parse_cpu_list("0-1\n"), Some(2));
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("0,2-5,7"), Some(8));
        assert_eq!(parse_cpu_list(""), None);
    }
}
