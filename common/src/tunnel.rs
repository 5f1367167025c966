//! The tunnel table (pod CIDR → remote node) and the peer set (underlay IP → node).

use crate::{Ipv4Octets, MacAddr};

/// Value of `WEFT_TUNNELS`, an LPM trie keyed by `Key<[u8; 4]>` (prefix length in host
/// order, address in network order): where to send packets for a remote pod CIDR.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TunnelEndpoint {
    /// The remote node's underlay address (outer destination), network byte order.
    pub underlay_ip: Ipv4Octets,
    /// VNI to put in the VXLAN header (host byte order).
    pub vni: u32,
    /// The remote node's VtepMAC: the inner destination MAC.
    pub vtep_mac: MacAddr,
    pub _pad: [u8; 2],
}

// The LPM trie stores the value right after the 4-byte key data: align ≤ 4.
const _: () = assert!(core::mem::size_of::<TunnelEndpoint>() == 16);
const _: () = assert!(core::mem::align_of::<TunnelEndpoint>() <= 4);

/// Value of `WEFT_PEERS`, a hash keyed by a node's underlay address (network order):
/// decap accepts VXLAN only from these sources.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerNode {
    /// The node's VtepMAC (for `bpftool` readers; decap does not require it to match).
    pub vtep_mac: MacAddr,
    pub _pad: [u8; 2],
    /// Reserved for future versions; zero.
    pub _reserved: u32,
}

const _: () = assert!(core::mem::size_of::<PeerNode>() == 12);

#[cfg(feature = "user")]
// SAFETY: repr(C), only integer fields, explicit padding: every bit pattern is valid.
unsafe impl aya::Pod for TunnelEndpoint {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for PeerNode {}
