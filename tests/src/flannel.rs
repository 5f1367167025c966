//! A node configured exactly as Flannel's vxlan backend configures one: the interop
//! peer. `flannel.1` is a kernel vxlan device (VNI 1, dstport 8472, nolearning, local
//! = the underlay address, dev = the uplink), MTU = uplink − 50, address
//! `<subnet>.0/32`; per remote node a permanent neighbour (its `<subnet>.0` → its
//! VtepMAC), an FDB entry (VtepMAC → its underlay address) and an on-link route, the
//! route last (pkg/backend/vxlan: neighbour and FDB first, or the kernel ARPs).

use anyhow::Result;

use crate::netns::Netns;

pub struct Peer {
    pub underlay: std::net::Ipv4Addr,
    pub pod_cidr: ipnetwork::Ipv4Network,
    pub vtep_mac: String,
}

/// Creates `flannel.1` in `node`.
pub fn setup_device(
    node: &Netns,
    underlay: std::net::Ipv4Addr,
    own_cidr: ipnetwork::Ipv4Network,
    vtep_mac: &str,
    uplink_mtu: u32,
) -> Result<()> {
    node.ip(&format!("link add flannel.1 address {vtep_mac} type vxlan id 1 local {underlay} dev ul0 dstport 8472 nolearning"))?;
    node.ip(&format!("link set flannel.1 mtu {}", uplink_mtu - 50))?;
    node.ip(&format!("addr add {}/32 dev flannel.1", own_cidr.network()))?;
    node.ip("link set flannel.1 up")?;
    Ok(())
}

/// Programs one remote node, as Flannel does on a subnet lease event.
pub fn add_peer(node: &Netns, peer: &Peer) -> Result<()> {
    add_peer_on(node, "flannel.1", peer)
}

/// As [`add_peer`], on a vxlan device of another name.
pub fn add_peer_on(node: &Netns, dev: &str, peer: &Peer) -> Result<()> {
    let gw = peer.pod_cidr.network();
    node.ip(&format!("neigh replace {gw} lladdr {} dev {dev} nud permanent", peer.vtep_mac))?;
    node.bridge(&format!("fdb replace {} dev {dev} dst {} self permanent", peer.vtep_mac, peer.underlay))?;
    node.ip(&format!("route replace {} via {gw} dev {dev} onlink", peer.pod_cidr))?;
    Ok(())
}

/// flanneld `--ip-masq`'s rules (pkg/trafficmngr/iptables, `masqRules`), as
/// `iptables -t nat` arguments in order: a FLANNEL-POSTRTG chain jumped to from
/// POSTROUTING; kube-proxy's masquerade mark returns; pod ↔ cluster returns both
/// ways; outside → this node's pods returns; cluster → not multicast masquerades;
/// outside → cluster masquerades; both with `--random-fully`.
pub fn masquerade_rules(network: ipnetwork::Ipv4Network, own_cidr: ipnetwork::Ipv4Network) -> Vec<String> {
    let c = "-m comment --comment flanneld-masq";
    vec![
        "-N FLANNEL-POSTRTG".to_string(),
        format!("-A POSTROUTING {c} -j FLANNEL-POSTRTG"),
        format!("-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 {c} -j RETURN"),
        format!("-A FLANNEL-POSTRTG -s {own_cidr} -d {network} {c} -j RETURN"),
        format!("-A FLANNEL-POSTRTG -s {network} -d {own_cidr} {c} -j RETURN"),
        format!("-A FLANNEL-POSTRTG ! -s {network} -d {own_cidr} {c} -j RETURN"),
        format!("-A FLANNEL-POSTRTG -s {network} ! -d 224.0.0.0/4 {c} -j MASQUERADE --random-fully"),
        format!("-A FLANNEL-POSTRTG ! -s {network} -d {network} {c} -j MASQUERADE --random-fully"),
    ]
}

/// Installs [`masquerade_rules`] in `node`'s nat table.
pub fn masquerade(node: &Netns, network: ipnetwork::Ipv4Network, own_cidr: ipnetwork::Ipv4Network) -> Result<()> {
    for rule in masquerade_rules(network, own_cidr) {
        crate::run(&mut node.exec(&format!("iptables -t nat {rule}")))?;
    }
    Ok(())
}
