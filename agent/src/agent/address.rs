//! This node's addresses, decided here alone: which interface is the uplink (by
//! the addresses the node is known by), the address it advertises (Kubernetes mode;
//! the node table file's in static mode), and the tunnel's own underlay address (the
//! advertised one, or the uplink's own behind NAT).

use super::*;
use crate::node_object::NodeFields;

/// The addresses that tell which interface is the uplink, best first: one the node
/// was told to advertise is the better hint (after a move the InternalIP may lag
/// behind, and behind NAT it is never local).
pub(super) fn uplink_hints(node: &impl NodeFields, flag: Option<Ipv4Addr>, network: Ipv4Network) -> Vec<Ipv4Addr> {
    let overwrite = annotations::public_ip_overwrite(node, network).ok().flatten();
    [overwrite, flag, annotations::internal_ip(node)].into_iter().flatten().collect()
}

/// The address this node advertises: `public-ip-overwrite`, else `--public-ip`,
/// else the uplink's. Err: the annotation is unusable (unparsable, or an address no
/// peer can tunnel to: [`annotations::unusable_address`]), or nothing is left.
pub(super) fn advertised(
    node: &impl NodeFields,
    flag: Option<Ipv4Addr>,
    uplink: Option<Ipv4Addr>,
    network: Ipv4Network,
) -> Result<Ipv4Addr, String> {
    if let Some(ip) = annotations::public_ip_overwrite(node, network)? {
        return Ok(ip);
    }
    flag.or(uplink).ok_or_else(|| "no address to advertise: the uplink has no IPv4 address; pass --public-ip".into())
}

/// At start: a mistyped `public-ip-overwrite` must not keep the node down (the
/// running agent keeps its address, see `refresh_from_store`), so the address is
/// what it would be without it, with the annotation's error to report.
pub(super) fn advertised_at_start(
    node: &impl NodeFields,
    flag: Option<Ipv4Addr>,
    uplink: Option<Ipv4Addr>,
    network: Ipv4Network,
) -> Result<(Ipv4Addr, Option<String>), String> {
    match advertised(node, flag, uplink, network) {
        Ok(ip) => Ok((ip, None)),
        Err(e) => flag.or(uplink).map(|ip| (ip, Some(e.clone()))).ok_or(e),
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node_object::WatchedNode;

    const NET: Ipv4Network = Ipv4Network::new_checked(Ipv4Addr::new(10, 244, 0, 0), 16).expect("a valid network");

    fn node(overwrite: Option<&str>, internal: Option<&str>) -> WatchedNode {
        let mut n = WatchedNode::default();
        n.metadata.name = Some("a".into());
        if let Some(ip) = overwrite {
            n.metadata.annotations = Some([(annotations::PUBLIC_IP_OVERWRITE.to_string(), ip.to_string())].into());
        }
        if let Some(ip) = internal {
            let address = k8s_openapi::api::core::v1::NodeAddress { type_: "InternalIP".into(), address: ip.into() };
            n.status = Some(crate::node_object::WatchedStatus { addresses: Some(vec![address]), ..Default::default() });
        }
        n
    }

    #[test]
    fn public_ip_overwrite_wins() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let (flag, up) = (Some(ip("192.0.2.1")), Some(ip("198.19.0.10")));
        assert_eq!(advertised(&node(None, None), None, up, NET), Ok(ip("198.19.0.10")));
        assert_eq!(advertised(&node(None, None), flag, up, NET), Ok(ip("192.0.2.1")));
        assert_eq!(advertised(&node(Some("192.0.2.99"), None), flag, up, NET), Ok(ip("192.0.2.99")));
        assert!(advertised(&node(Some("nope"), None), None, up, NET).is_err());
        assert!(advertised(&node(None, None), None, None, NET).is_err());
        // At start a bad annotation is reported, not fatal, while an address is left.
        let (at, error) = advertised_at_start(&node(Some("nope"), None), flag, up, NET).unwrap();
        assert_eq!(at, ip("192.0.2.1"));
        assert!(error.is_some_and(|e| e.contains("nope")));
        assert!(advertised_at_start(&node(Some("nope"), None), None, None, NET).is_err());
        // An address no peer could tunnel to is as bad as a typo: reported, the flag's kept.
        for bad in ["127.0.0.1", "169.254.169.254", "10.244.5.5"] {
            let (at, error) = advertised_at_start(&node(Some(bad), None), flag, up, NET).unwrap();
            assert_eq!(at, ip("192.0.2.1"), "{bad}");
            assert!(error.is_some_and(|e| e.contains(bad)), "{bad}");
        }
        assert_eq!(uplink_hints(&node(Some("127.0.0.1"), None), None, NET), Vec::<Ipv4Addr>::new(), "no hint from it either");
    }

    #[test]
    fn hints_put_what_the_node_was_told_first() {
        let n = node(Some("192.0.2.99"), Some("198.19.0.10"));
        let hints = uplink_hints(&n, Some("192.0.2.1".parse().unwrap()), NET);
        assert_eq!(hints, ["192.0.2.99", "192.0.2.1", "198.19.0.10"].map(|s| s.parse::<Ipv4Addr>().unwrap()));
        assert_eq!(uplink_hints(&node(Some("bad"), None), None, NET), Vec::<Ipv4Addr>::new());
    }
}
