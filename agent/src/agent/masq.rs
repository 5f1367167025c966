//! `--ip-masq`: the cluster network it goes by, and what the programs need besides
//! the config — the non-masquerade list, the NAT ports kept from the node's sockets.

use super::*;

impl Masq {
    /// Masquerade over `network` (net-conf.json's `Network`), if `--ip-masq`.
    pub(super) fn from_args(args: &Args, network: Option<Ipv4Network>) -> Result<Option<Masq>> {
        if !args.ip_masq {
            return Ok(None);
        }
        let network = match network {
            Some(n) => n,
            None => netconf::load(&args.net_config_path).context("--ip-masq needs the cluster network")?.network,
        };
        Ok(Some(Masq { network, collector: crate::nat::Collector::default() }))
    }
}

impl Agent {
    /// The non-masquerade list and the reserved ports, as the flags say; without
    /// `--ip-masq`, an earlier agent's masquerade program comes off the uplink.
    pub(super) fn keep_masq(&mut self) -> Result<()> {
        let Some(m) = &self.masq else {
            if self.dataplane.detach_pinned(spec::links::MASQ)? {
                tracing::info!(iface = %self.uplink.name, "masquerade off (no --ip-masq): removed its program");
            }
            return Ok(());
        };
        let list = crate::nat::no_masq(m.network, &self.args.non_masquerade_cidrs);
        if self.dataplane.maps.no_masq()? != list {
            self.dataplane.maps.set_no_masq(&list)?;
        }
        if crate::nat::reserve_ports(&self.args.nat_port_range)? {
            tracing::info!(ports = %self.args.nat_port_range, "reserved the NAT ports (net.ipv4.ip_local_reserved_ports)");
        }
        Ok(())
    }
}
