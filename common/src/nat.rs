//! Masquerade (`--ip-masq`): the NAT table's layout, states and timeouts.
//!
//! A masqueraded flow has two entries, one per direction, in two LRU hashes keyed
//! by the packet's own 5-tuple as it is seen there:
//! - `WEFT_NAT_OUT`, keyed by the pod's original tuple (pod → outside), holds the
//!   translated source (node address, NAT port) and the flow's state and times;
//! - `WEFT_NAT_IN`, keyed by the reply's tuple (outside → node address, NAT port),
//!   holds the original source to restore.
//!
//! For ICMP echo the identifier plays the port: (identifier, 0) on the way out,
//! (0, identifier) on the way back. Addresses and ports are in network order, as in
//! the packet. Times are `bpf_ktime_get_ns` (CLOCK_MONOTONIC), which the agent's
//! collector reads too.

use crate::Ipv4Octets;

/// Key of both NAT maps: a flow's tuple as one direction's packets carry it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct NatKey {
    pub saddr: Ipv4Octets,
    pub daddr: Ipv4Octets,
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub protocol: u8,
    pub _pad: [u8; 3],
}

const _: () = assert!(core::mem::size_of::<NatKey>() == 16);

/// Value of both NAT maps: the address and port to write (the source on the way
/// out, the destination on the way back), and the flow's state.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatEntry {
    pub addr: Ipv4Octets,
    pub port: [u8; 2],
    /// `STATE_*`; kept in the `WEFT_NAT_OUT` entry (the reply path updates it there).
    pub state: u8,
    /// `FLAG_*`.
    pub flags: u8,
    /// When the flow's first packet was translated.
    pub created_ns: u64,
    /// When a packet of the flow (either way) was last translated.
    pub seen_ns: u64,
}

const _: () = assert!(core::mem::size_of::<NatEntry>() == 24);

/// A `WEFT_NAT_OUT` entry for a flow the outside opened to a pod (at this node, or
/// routed through it to another node's): the pod's replies leave untranslated, as
/// netfilter's NAT leaves a connection it did not translate at its first packet.
pub const FLAG_INBOUND: u8 = 1;

/// Only the pod has sent (TCP: SYN sent; UDP, ICMP: no reply yet).
pub const STATE_NEW: u8 = 0;
/// The outside has answered.
pub const STATE_ESTABLISHED: u8 = 1;
/// TCP: a FIN or RST was seen, either way.
pub const STATE_CLOSING: u8 = 2;

/// Seconds a flow lives past its last packet, per protocol and state: TCP as
/// Cilium's conntrack (a long idle TCP connection outlives Linux's 2 h keepalive),
/// UDP and ICMP as netfilter's.
pub const fn timeout_secs(protocol: u8, state: u8) -> u64 {
    match (protocol, state) {
        (crate::wire::IPPROTO_TCP, STATE_NEW) => 60,
        (crate::wire::IPPROTO_TCP, STATE_ESTABLISHED) => 21_600,
        (crate::wire::IPPROTO_TCP, _) => 10,
        (crate::wire::IPPROTO_UDP, STATE_NEW) => 30,
        (crate::wire::IPPROTO_UDP, _) => 120,
        _ => 30,
    }
}

/// kube-proxy's masquerade mark (`--iptables-masquerade-bit`, default 14): its own
/// rules masquerade such packets, so Flannel's (and weft's) leave them alone.
pub const KUBE_PROXY_MASQ_MARK: u32 = 0x4000;

/// Default NAT source ports: below and above Linux's default ephemeral range
/// (32768–60999), so the node's own outgoing connections never pick one (the agent
/// also reserves them in `net.ipv4.ip_local_reserved_ports`), and as many as
/// possible besides: 36,280 concurrent flows to one outside ip:port, as many as
/// MASQUERADE gives beside the node's own connections.
pub const DEFAULT_PORT_RANGES: &str = "1024-32767,61000-65535";

/// Random picks of a NAT port before a new flow is dropped (`nat_exhausted`).
pub const PORT_TRIES: u32 = 32;

/// Default entries per NAT map (`--nat-max-entries`).
pub const DEFAULT_MAX_ENTRIES: u32 = 65_536;

/// Entries of the non-masquerade list (`--non-masquerade-cidrs` and the cluster network).
pub const MAX_NO_MASQ: u32 = 64;

#[cfg(feature = "user")]
// SAFETY: repr(C), only integer fields, explicit padding: every bit pattern is valid.
unsafe impl aya::Pod for NatKey {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for NatEntry {}
