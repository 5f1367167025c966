//! The opt-in fast path (`--fast-path`): its two maps.
//!
//! Pod → remote pod is encapsulated at the TC ingress of the pod's veth and sent to the
//! uplink; remote pod → local pod is delivered from the uplink's TC ingress straight
//! into the pod's namespace. Neither end's routing, conntrack or netfilter sees it.
//! Flows the host stack has carried at this node, either way (out through `weft0`: a
//! Service's DNAT; in to a pod's veth: a hostPort's), are remembered as [`FlowKey`]s
//! and stay on the stack both ways, so conntrack can reverse its NAT.

use crate::{Ipv4Octets, MacAddr};

/// Value of `WEFT_ENDPOINTS`, a hash keyed by a local pod's IPv4 address (network
/// order): where the fast path and the bridge's program deliver that pod's packets,
/// and what the source check lets the pod send as. The agent fills it from the pods'
/// CNI results (libcni's cache), never from what a pod sends.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalEndpoint {
    /// The host end of the pod's veth (its peer, the pod's `eth0`, receives).
    pub ifindex: u32,
    /// The pod's `eth0` MAC: destination of delivered frames.
    pub mac: MacAddr,
    /// The pod bridge's MAC (the pod's gateway): source of delivered frames.
    pub gw_mac: MacAddr,
}

const _: () = assert!(core::mem::size_of::<LocalEndpoint>() == 16);

/// Key of `WEFT_STACK_FLOWS`, an LRU hash: a TCP or UDP flow as the stack forwarded it
/// (after any NAT) to `weft0` or to a pod's veth, addresses and ports in network order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowKey {
    pub saddr: Ipv4Octets,
    pub daddr: Ipv4Octets,
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub protocol: u8,
    pub _pad: [u8; 3],
}

const _: () = assert!(core::mem::size_of::<FlowKey>() == 16);

impl FlowKey {
    /// The same flow seen from the other end.
    #[inline(always)]
    pub fn reversed(&self) -> FlowKey {
        FlowKey {
            saddr: self.daddr,
            daddr: self.saddr,
            sport: self.dport,
            dport: self.sport,
            protocol: self.protocol,
            _pad: [0; 3],
        }
    }
}

/// Value of `WEFT_STACK_FLOWS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowSeen {
    /// `bpf_ktime_get_ns` when the stack was first seen forwarding the flow (for
    /// `bpftool` readers; the programs only test for the key).
    pub first_ns: u64,
}

#[cfg(feature = "user")]
// SAFETY: repr(C), only integer fields, explicit padding: every bit pattern is valid.
unsafe impl aya::Pod for LocalEndpoint {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for FlowKey {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for FlowSeen {}
