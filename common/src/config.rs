//! The node's own dataplane settings, written by the agent into slot 0 of
//! [`crate::maps::CONFIG`] and read by every program on every packet.

use crate::{Ipv4Octets, MacAddr};

/// Slot 0 of the `WEFT_CONFIG` array.
///
/// All zero until the agent has configured the node: the programs treat
/// `abi_version == 0` as "not configured" (encap drops, decap passes everything).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataplaneConfig {
    /// [`crate::ABI_VERSION`] of the agent that wrote this; 0 = not configured.
    pub abi_version: u32,
    /// VXLAN network identifier (host byte order, 24 bits used).
    pub vni: u32,
    /// Our underlay (outer source) address, network byte order.
    pub underlay_ip: Ipv4Octets,
    /// VXLAN UDP destination port (host byte order).
    pub udp_port: u16,
    pub _pad0: u16,
    /// Our VtepMAC: the MAC of `weft0` and the inner source MAC of encapsulated frames.
    pub vtep_mac: MacAddr,
    /// Prefix length of [`DataplaneConfig::pod_cidr`] (0 from an agent that predates it).
    pub pod_prefix: u8,
    pub _pad1: u8,
    /// Ifindex of the underlay interface (encap redirects here).
    pub uplink_ifindex: u32,
    /// Ifindex of `weft0` (decap redirects into its ingress).
    pub weft0_ifindex: u32,
    /// `FLAG_*` bits; 0 = the default, stack-compatible dataplane.
    pub flags: u32,
    /// Ifindex of `weft0`'s veth peer: TC decap sends inner frames out of it, so they
    /// arrive on `weft0` through its NAPI and GRO (0: into `weft0`'s ingress directly).
    pub weft0_peer_ifindex: u32,
    /// `weft0`'s MTU, so decap checks an MTU-sized frame without a helper call
    /// (0, as an older agent leaves it: ask the kernel, `bpf_check_mtu`).
    pub weft0_mtu: u32,
    /// This node's pod CIDR (network order). Its network address is `weft0`'s own (as
    /// `flannel.1`'s), the source of flows from outside masqueraded into the overlay.
    pub pod_cidr: Ipv4Octets,
    /// `FLAG_MASQUERADE`: the source address of masqueraded packets on the uplink
    /// (the uplink's own, as MASQUERADE picks it).
    pub masq_ip: Ipv4Octets,
    /// The cluster network (`Network` of net-conf.json): sources in it are pods.
    pub cluster_net: Ipv4Octets,
    /// NAT source ports, inclusive (host order): one range, and a second one when
    /// `nat_port_max2 != 0` (by default the ports below and above Linux's
    /// ephemeral range).
    pub nat_port_min: u16,
    pub nat_port_max: u16,
    pub nat_port_min2: u16,
    pub nat_port_max2: u16,
    pub cluster_prefix: u8,
    pub _pad2: [u8; 3],
    /// This node's name, for readers too (NUL-padded UTF-8; a Kubernetes node name
    /// has at most 253 bytes).
    pub node_name: NodeName,
}

/// A node name in a fixed-size, NUL-padded field.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeName(pub [u8; 256]);

impl Default for NodeName {
    fn default() -> Self {
        NodeName([0; 256])
    }
}

impl NodeName {
    /// `name`, cut at 256 bytes (never reached by a valid node name).
    pub fn new(name: &str) -> NodeName {
        let mut out = [0; 256];
        let n = name.len().min(out.len());
        out[..n].copy_from_slice(&name.as_bytes()[..n]);
        NodeName(out)
    }

    /// The name up to its first NUL, or None when it is not UTF-8 (never written so).
    pub fn as_str(&self) -> Option<&str> {
        let end = self.0.iter().position(|b| *b == 0).unwrap_or(self.0.len());
        core::str::from_utf8(&self.0[..end]).ok()
    }
}

/// `--fast-path`: pod-to-pod traffic between nodes bypasses the host stack on both
/// ends (see `crate::fastpath`). Off, the receive side never reads the fast-path maps.
pub const FLAG_FAST_PATH: u32 = 1;

/// A program on the pod bridge's TC egress hands routed packets for local pods to
/// their veths (the bridge's own transmit would segment decapsulated super-packets):
/// TC decap sends super-packets straight into `weft0`'s ingress.
pub const FLAG_BRIDGE_BYPASS: u32 = 2;

/// The kernel takes `BPF_F_ADJ_ROOM_DECAP_L4_UDP` (bpf-next, 2026): TC decap passes
/// it, which clears the tunnel's GSO type and `skb->encapsulation`, so nothing
/// downstream segments a decapsulated super-packet; those go straight into `weft0`.
pub const FLAG_DECAP_L4_UDP: u32 = 4;

/// `--ip-masq`: pods' traffic leaving the cluster network through the uplink is
/// masqueraded to [`DataplaneConfig::masq_ip`] (see `crate::nat`).
pub const FLAG_MASQUERADE: u32 = 8;

/// XDP decap is attached to the uplink: a frame to our VtepMAC at the uplink's TC is
/// one XDP decapsulated (XDP drops any that arrives so from the wire), delivered into
/// `weft0`. Set after the attach, cleared before the detach.
pub const FLAG_XDP_DECAP: u32 = 16;

/// `--pod-source-check` (the default): a pod veth's TC ingress drops the pod's IPv4
/// packets and ARP whose sender is not that pod (`WEFT_ENDPOINTS`, from the pods' CNI
/// results). Only veths with a known endpoint carry the program.
pub const FLAG_SOURCE_CHECK: u32 = 32;

const _: () = assert!(core::mem::size_of::<DataplaneConfig>() == 68 + 256);

#[cfg(feature = "user")]
// SAFETY: repr(C), only integer fields, explicit padding: every bit pattern is valid.
unsafe impl aya::Pod for DataplaneConfig {}
