//! This node's addresses: the uplink as it is now, and the tunnel's own underlay
//! address (the advertised one, or the uplink's own behind NAT).

use super::*;

impl Agent {
    /// The tunnel's own underlay address: the advertised one when an interface of
    /// this node holds it; else (behind NAT: a `--public-ip` or `public-ip-overwrite`
    /// no interface here holds) the uplink's own, which peers' packets to the
    /// advertised address arrive at once translated, and which our packets must leave
    /// from — as Flannel's vxlan device, bound to the interface's address, does. The
    /// uplink's own address is read again each time: it may have changed (DHCP, an
    /// uplink recreated).
    pub(super) async fn refresh_tunnel_ip(&mut self) -> Result<()> {
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

    /// The uplink as it is now. One deleted and created again under the same name (a
    /// bond or VLAN rebuilt by the network manager, a driver rebind) is taken up under
    /// its new index: the config and the attachment check below follow it.
    pub(super) async fn find_uplink(&self) -> Result<Link> {
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
}
