//! The node model: what this node's tunnel device, routes and maps should hold.
//!
//! `weft0` takes the place of Flannel's `flannel.1`: MAC = this node's VtepMAC,
//! address `<pod CIDR network>/32`, MTU = uplink MTU − 50, and every remote pod CIDR
//! routed `via <its network address> dev weft0 onlink`. It is one end of a veth pair
//! (this kernel has no `dummy`/`netkit`; Cilium pairs cilium_host/cilium_net the same
//! way) and has ARP off, so the kernel sends routed frames straight to it with no
//! neighbour entry per peer: the encap program writes the real L2 addresses anyway.

use std::{collections::BTreeMap, net::Ipv4Addr};

use ipnetwork::Ipv4Network;
use weft_common::{
    tunnel::{PeerNode, TunnelEndpoint},
    wire::ENCAP_OVERHEAD,
};

use crate::peers::NodeEntry;

pub const WEFT0: &str = "weft0";
/// The other end of `weft0`'s veth pair; it carries no traffic.
pub const WEFT0_PEER: &str = "weft0_peer";

/// `weft0` as it should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceSpec {
    pub mac: [u8; 6],
    pub mtu: u32,
    pub address: Ipv4Addr,
}

/// `mtu_override` is net-conf.json's `Backend.MTU`, if set.
pub fn device_spec(own: &NodeEntry, uplink_mtu: u32, mtu_override: Option<u32>) -> DeviceSpec {
    DeviceSpec {
        mac: own.vtep_mac.0,
        mtu: mtu_override.unwrap_or(uplink_mtu.saturating_sub(ENCAP_OVERHEAD as u32)),
        address: own.pod_cidr.network(),
    }
}

/// `Backend.MTU` above what the uplink carries once VXLAN's 50 bytes are added: every
/// full-sized outer packet would exceed the uplink's MTU (the redirect to the uplink
/// does not fragment), so the agent refuses to start.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "Backend.MTU {backend} (net-conf.json) is larger than the uplink {uplink}'s MTU {uplink_mtu} minus the \
     {ENCAP_OVERHEAD}-byte VXLAN overhead, {max}: set Backend.MTU to {max} or less, or leave it out (the default is {max})"
)]
pub struct TunnelMtuTooLarge {
    pub backend: u32,
    pub uplink: String,
    pub uplink_mtu: u32,
    pub max: u32,
}

/// Checks `Backend.MTU` (if set) against the uplink's MTU.
pub fn check_tunnel_mtu(backend: Option<u32>, uplink: &str, uplink_mtu: u32) -> Result<(), TunnelMtuTooLarge> {
    let max = uplink_mtu.saturating_sub(ENCAP_OVERHEAD as u32);
    match backend {
        Some(backend) if backend > max => Err(TunnelMtuTooLarge { backend, uplink: uplink.to_owned(), uplink_mtu, max }),
        _ => Ok(()),
    }
}

/// Maps and routes as they should be for a set of remote nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub tunnels: BTreeMap<Ipv4Network, TunnelEndpoint>,
    pub peers: BTreeMap<Ipv4Addr, PeerNode>,
    /// Remote pod CIDR → on-link gateway (the CIDR's network address), via `weft0`.
    pub routes: BTreeMap<Ipv4Network, Ipv4Addr>,
}

/// More remote nodes than the tunnel and peer maps hold.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "too many nodes: {wanted} > --max-nodes {max}: the {max} oldest (the node table file's first) are programmed, \
     {} are left out; raise --max-nodes",
    wanted - max
)]
pub struct TooManyNodes {
    /// Remote nodes in the table.
    pub wanted: usize,
    pub max: usize,
}

impl TooManyNodes {
    pub fn left_out(&self) -> usize {
        self.wanted - self.max
    }
}

/// The first `max` of `others` (the table is oldest Node first, or in the file's
/// order): a newcomer past the limit never displaces a node already served.
pub fn within_limit<'a>(others: impl IntoIterator<Item = &'a NodeEntry>, max: u32) -> (Vec<&'a NodeEntry>, Option<TooManyNodes>) {
    let mut fit: Vec<&NodeEntry> = others.into_iter().collect();
    let (wanted, max) = (fit.len(), max as usize);
    if wanted <= max {
        return (fit, None);
    }
    fit.truncate(max);
    (fit, Some(TooManyNodes { wanted, max }))
}

pub fn desired<'a>(others: impl IntoIterator<Item = &'a NodeEntry>, vni: u32) -> Desired {
    let mut d = Desired::default();
    for n in others {
        d.tunnels.insert(
            n.pod_cidr,
            TunnelEndpoint { underlay_ip: n.underlay_ip.octets(), vni, vtep_mac: n.vtep_mac.0, _pad: [0; 2] },
        );
        d.peers.insert(n.underlay_ip, PeerNode { vtep_mac: n.vtep_mac.0, _pad: [0; 2], _reserved: 0 });
        d.routes.insert(n.pod_cidr, n.pod_cidr.network());
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::parse;

    /// Should refuse a Backend.MTU that does not fit the uplink, naming both numbers.
    #[test]
    fn backend_mtu_must_fit_the_uplink() {
        assert_eq!(check_tunnel_mtu(None, "eth0", 1280), Ok(()));
        assert_eq!(check_tunnel_mtu(Some(1450), "eth0", 1500), Ok(()));
        assert_eq!(check_tunnel_mtu(Some(1200), "eth0", 1500), Ok(()));
        let e = check_tunnel_mtu(Some(1451), "eth0", 1500).unwrap_err();
        assert_eq!(e, TunnelMtuTooLarge { backend: 1451, uplink: "eth0".into(), uplink_mtu: 1500, max: 1450 });
        let msg = e.to_string();
        for part in ["Backend.MTU 1451", "eth0", "MTU 1500", "50-byte VXLAN overhead, 1450"] {
            assert!(msg.contains(part), "{part:?} missing from: {msg}");
        }
    }

    #[test]
    fn device_follows_own_entry_and_uplink_mtu() {
        let t = parse("a 192.0.2.1 10.244.1.0/24 0a:00:00:00:00:01").unwrap();
        let spec = device_spec(&t.nodes[0], 1500, None);
        assert_eq!(spec, DeviceSpec { mac: [0x0a, 0, 0, 0, 0, 1], mtu: 1450, address: Ipv4Addr::new(10, 244, 1, 0) });
        assert_eq!(device_spec(&t.nodes[0], 9000, Some(1400)).mtu, 1400, "net-conf's Backend.MTU wins");
    }

    #[test]
    fn desired_state_has_one_tunnel_peer_and_route_per_remote_node() {
        let t = parse("a 192.0.2.1 10.244.1.0/24 0a:00:00:00:00:01\nb 192.0.2.2 10.244.2.0/24 0a:00:00:00:00:02").unwrap();
        let (_, others) = t.split("a").unwrap();
        let d = desired(others, 1);
        let cidr: Ipv4Network = "10.244.2.0/24".parse().unwrap();
        assert_eq!(
            d.tunnels[&cidr],
            TunnelEndpoint { underlay_ip: [192, 0, 2, 2], vni: 1, vtep_mac: [0x0a, 0, 0, 0, 0, 2], _pad: [0; 2] }
        );
        assert_eq!(d.peers.keys().copied().collect::<Vec<_>>(), [Ipv4Addr::new(192, 0, 2, 2)]);
        assert_eq!(d.routes[&cidr], Ipv4Addr::new(10, 244, 2, 0));
        assert_eq!((d.tunnels.len(), d.routes.len()), (1, 1));
    }

    #[test]
    fn past_max_nodes_the_first_nodes_are_kept_and_the_error_names_the_flag() {
        let t = parse(
            "a 192.0.2.1 10.244.1.0/24 0a:00:00:00:00:01\nb 192.0.2.2 10.244.2.0/24 0a:00:00:00:00:02\n\
             c 192.0.2.3 10.244.3.0/24 0a:00:00:00:00:03\nd 192.0.2.4 10.244.4.0/24 0a:00:00:00:00:04",
        )
        .unwrap();
        let others = || t.split("a").unwrap().1;
        let (fit, over) = within_limit(others(), 2);
        assert_eq!(fit.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["b", "c"]);
        let over = over.expect("over the limit");
        assert_eq!((over.wanted, over.max, over.left_out()), (3, 2, 1));
        assert!(over.to_string().starts_with("too many nodes: 3 > --max-nodes 2"), "{over}");
        assert_eq!(desired(fit, 1).tunnels.len(), 2);
        let (fit, over) = within_limit(others(), 3);
        assert_eq!((fit.len(), over), (3, None), "exactly at the limit is fine");
    }
}
