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

/// Maps and routes as they should be for a set of remote nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub tunnels: BTreeMap<Ipv4Network, TunnelEndpoint>,
    pub peers: BTreeMap<Ipv4Addr, PeerNode>,
    /// Remote pod CIDR → on-link gateway (the CIDR's network address), via `weft0`.
    pub routes: BTreeMap<Ipv4Network, Ipv4Addr>,
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
}
