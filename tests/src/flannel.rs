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
/// `iptables -t nat` argument lists in order: a FLANNEL-POSTRTG chain jumped to from
/// POSTROUTING; kube-proxy's masquerade mark returns; pod ↔ cluster returns both
/// ways; outside → this node's pods returns; cluster → not multicast masquerades;
/// outside → cluster masquerades; both with `--random-fully`. Each rule carries
/// flanneld's comment, "flanneld masq".
pub fn masquerade_rules(network: ipnetwork::Ipv4Network, own_cidr: ipnetwork::Ipv4Network) -> Vec<Vec<String>> {
    let rules = [
        "-N FLANNEL-POSTRTG".to_string(),
        "-A POSTROUTING -j FLANNEL-POSTRTG".to_string(),
        "-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -j RETURN".to_string(),
        format!("-A FLANNEL-POSTRTG -s {own_cidr} -d {network} -j RETURN"),
        format!("-A FLANNEL-POSTRTG -s {network} -d {own_cidr} -j RETURN"),
        format!("-A FLANNEL-POSTRTG ! -s {network} -d {own_cidr} -j RETURN"),
        format!("-A FLANNEL-POSTRTG -s {network} ! -d 224.0.0.0/4 -j MASQUERADE --random-fully"),
        format!("-A FLANNEL-POSTRTG ! -s {network} -d {network} -j MASQUERADE --random-fully"),
    ];
    rules.iter().map(|r| commented(r, "flanneld masq")).collect()
}

/// flanneld's `--iptables-forward-rules` (its default; `forwardRules`), as `iptables -t
/// filter` argument lists: FORWARD jumps to FLANNEL-FWD, which accepts from and to the
/// cluster network, each rule with the comment "flanneld forward".
pub fn forward_rules(network: ipnetwork::Ipv4Network) -> Vec<Vec<String>> {
    let rules = [
        "-N FLANNEL-FWD".to_string(),
        "-A FORWARD -j FLANNEL-FWD".to_string(),
        format!("-A FLANNEL-FWD -s {network} -j ACCEPT"),
        format!("-A FLANNEL-FWD -d {network} -j ACCEPT"),
    ];
    rules.iter().map(|r| commented(r, "flanneld forward")).collect()
}

/// `rule`'s words, with `-m comment --comment COMMENT` before its `-j` as flanneld
/// writes it (a chain's creation gets no comment).
fn commented(rule: &str, comment: &str) -> Vec<String> {
    let mut words: Vec<String> = rule.split_whitespace().map(String::from).collect();
    if let Some(j) = words.iter().position(|w| w == "-j") {
        let c = ["-m", "comment", "--comment", comment].map(String::from);
        words.splice(j..j, c);
    }
    words
}

fn iptables(node: &Netns, table: &str, rule: &[String]) -> Result<()> {
    let mut args = vec!["iptables", "-w", "5", "-t", table];
    args.extend(rule.iter().map(String::as_str));
    crate::run(&mut node.exec_args(&args))?;
    Ok(())
}

/// Installs [`masquerade_rules`] in `node`'s nat table.
pub fn masquerade(node: &Netns, network: ipnetwork::Ipv4Network, own_cidr: ipnetwork::Ipv4Network) -> Result<()> {
    for rule in masquerade_rules(network, own_cidr) {
        iptables(node, "nat", &rule)?;
    }
    Ok(())
}

/// Installs [`forward_rules`] in `node`'s filter table.
pub fn forward(node: &Netns, network: ipnetwork::Ipv4Network) -> Result<()> {
    for rule in forward_rules(network) {
        iptables(node, "filter", &rule)?;
    }
    Ok(())
}

/// The network configuration Flannel's CNI plugin (flannel-cni-plugin, `flannel_linux.go`)
/// hands to `bridge` from kube-flannel.yml's cni-conf.json (network `cbr0`,
/// `hairpinMode`, `isDefaultGateway`) and subnet.env: bridge `cni0`, the subnet's MTU,
/// `ipMasq` the opposite of FLANNEL_IPMASQ, host-local over FLANNEL_SUBNET with a route
/// to FLANNEL_NETWORK; `data_dir` stands for host-local's default,
/// `/var/lib/cni/networks/cbr0` (the tests keep each node's state in its own directory).
/// Followed by `portmap`, as in Flannel's conflist.
pub fn cni_conflist(
    network: ipnetwork::Ipv4Network,
    subnet: ipnetwork::Ipv4Network,
    mtu: u32,
    ip_masq: bool,
    data_dir: &std::path::Path,
) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": "0.3.1",
        "name": "cbr0",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "hairpinMode": true,
                "isDefaultGateway": true,
                "isGateway": true,
                "ipMasq": !ip_masq,
                "mtu": mtu,
                "ipam": {
                    "type": "host-local",
                    "dataDir": data_dir,
                    "ranges": [[{ "subnet": subnet.to_string() }]],
                    "routes": [{ "dst": network.to_string() }]
                }
            },
            { "type": "portmap", "capabilities": { "portMappings": true } }
        ]
    })
}
