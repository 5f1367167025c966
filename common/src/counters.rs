//! Hooks, verdicts, actions and drop reasons, and their counters.
//!
//! Every packet a program sees leaves through one exit that counts it, per CPU, in
//! [`crate::maps::COUNTERS`] under (hook, verdict): [`counter_index`]. A verdict is
//! an [`Action`] (pass, redirect, drop) with, for a drop, its [`DropReason`], or for
//! the others what was done (encapsulated, decapsulated, …). Numbers are stable: a
//! retired hook, verdict or reason keeps its number (renamed `Unused*`), a new one
//! takes the next free number. The agent labels its metrics from the `ALL` lists and
//! the `name`s.

/// Where a program runs: the counters' first dimension.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hook {
    /// `weft0`'s TC egress: encapsulation of what the stack routes to the tunnel.
    Weft0Egress = 0,
    /// The uplink's TC ingress: decapsulation, and delivery of XDP's aggregates.
    UplinkIngress = 1,
    /// The uplink's XDP: decapsulation before GRO.
    UplinkXdp = 2,
    /// A pod veth's TC ingress (what the pod sends; `--fast-path`).
    PodVethIngress = 3,
    /// A pod veth's TC egress (what the stack delivers to the pod; `--fast-path`).
    PodVethEgress = 4,
    /// `weft0`'s TC ingress (`--fast-path`): aggregates after `weft0`'s GRO.
    Weft0Ingress = 5,
    /// The pod bridge's TC egress: routed packets for local pods.
    BridgeEgress = 6,
    /// The uplink's TC egress (`--ip-masq`): masquerade.
    UplinkEgress = 7,
}

/// Room for hooks added later without resizing the counters map.
pub const HOOK_SLOTS: u32 = 8;

impl Hook {
    pub const ALL: [Hook; 8] = [
        Hook::Weft0Egress,
        Hook::UplinkIngress,
        Hook::UplinkXdp,
        Hook::PodVethIngress,
        Hook::PodVethEgress,
        Hook::Weft0Ingress,
        Hook::BridgeEgress,
        Hook::UplinkEgress,
    ];

    pub const fn index(self) -> u32 {
        self as u32
    }

    /// Metric label; stable like the number.
    pub const fn name(self) -> &'static str {
        match self {
            Hook::Weft0Egress => "weft0_egress",
            Hook::UplinkIngress => "uplink_ingress",
            Hook::UplinkXdp => "uplink_xdp",
            Hook::PodVethIngress => "pod_veth_ingress",
            Hook::PodVethEgress => "pod_veth_egress",
            Hook::Weft0Ingress => "weft0_ingress",
            Hook::BridgeEgress => "bridge_egress",
            Hook::UplinkEgress => "uplink_egress",
        }
    }
}

/// What a program did with a packet.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Handed on unchanged (`TCX_NEXT`, `XDP_PASS`).
    Pass = 0,
    /// Sent elsewhere, rewritten or not (`TC_ACT_REDIRECT`; XDP: passed on rewritten).
    Redirect = 1,
    /// Dropped, for a [`DropReason`].
    Drop = 2,
    /// Rewritten in place and handed on (`TCX_NEXT`): masquerade.
    Rewrite = 3,
}

impl Action {
    pub const fn name(self) -> &'static str {
        match self {
            Action::Pass => "pass",
            Action::Redirect => "redirect",
            Action::Drop => "drop",
            Action::Rewrite => "rewrite",
        }
    }
}

/// Why a packet was dropped (Cilium's `DROP_*` codes are the model). Never renumbered.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Encap: no tunnel entry covers the inner destination.
    NoTunnel = 1,
    /// Decap: VXLAN for our port and VNI from a source that is not a known node.
    UnknownPeer = 2,
    /// Headers of a packet addressed to the tunnel are truncated or invalid.
    Malformed = 3,
    /// Encap: a non-IPv4 frame on `weft0`; decap: an inner frame that is not IPv4.
    NotIpv4 = 4,
    /// Encap: the agent has not written the dataplane config yet.
    NoConfig = 5,
    /// The kernel refused to grow or shrink the packet (`bpf_skb_adjust_room`).
    Resize = 6,
    /// The redirect helper refused the packet.
    Redirect = 7,
    /// Decap: outer header marked CE, inner packet not ECN-capable (RFC 6040).
    EcnNotEct = 8,
    /// A frame from the underlay addressed to our VtepMAC (`weft0`'s MAC, never on
    /// the wire as a destination): on the uplink, only XDP decap's inner frames are.
    ToVtepMac = 9,
    /// Masquerade: no free NAT port for a new flow after `PORT_TRIES` random picks.
    NatExhausted = 10,
    /// Masquerade: the first fragment of a datagram to a NAT port. A fragmented reply
    /// cannot be translated (later fragments carry no port to find their flow by);
    /// they pass, and expire unreassembled in the host's queue.
    NatFragment = 11,
    /// Masquerade: the kernel refused a NAT map update or a rewrite of the packet.
    NatError = 12,
    /// Decap: VXLAN from a known node whose inner source is no address that node may
    /// send from — in no node's pod CIDR, and not the sender's own underlay address
    /// (e.g. forged by a pod whose hand-made VXLAN its node masqueraded).
    InnerSource = 13,
    /// Decap: VXLAN from a known node whose inner destination is neither on this node
    /// (its pod CIDR, tunnel address included) nor in another node's pod CIDR.
    InnerDestination = 14,
    /// A pod veth's TC ingress: a frame from a pod with a source that is not the
    /// pod's own — an IPv4 source or ARP sender address, or a MAC, other than what
    /// its CNI result recorded for that veth.
    SpoofedSource = 15,
}

impl DropReason {
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::NoTunnel => "no_tunnel",
            DropReason::UnknownPeer => "unknown_peer",
            DropReason::Malformed => "malformed",
            DropReason::NotIpv4 => "not_ipv4",
            DropReason::NoConfig => "no_config",
            DropReason::Resize => "resize",
            DropReason::Redirect => "redirect",
            DropReason::EcnNotEct => "ecn_not_ect",
            DropReason::ToVtepMac => "to_vtep_mac",
            DropReason::NatExhausted => "nat_exhausted",
            DropReason::NatFragment => "nat_fragment",
            DropReason::NatError => "nat_error",
            DropReason::InnerSource => "inner_source",
            DropReason::InnerDestination => "inner_destination",
            DropReason::SpoofedSource => "spoofed_source",
        }
    }
}

/// Slot of (hook, verdict) in the counters map.
#[inline(always)]
pub const fn counter_index(hook: Hook, verdict: Verdict) -> u32 {
    hook.index() * VERDICT_SLOTS + verdict.index()
}

/// Entries of the counters map.
pub const COUNTER_SLOTS: u32 = HOOK_SLOTS * VERDICT_SLOTS;

/// Packets and bytes for one (hook, verdict) on one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    /// Bytes as seen by the program on entry (`skb->len`: L2 frame, before encap/decap).
    pub bytes: u64,
}

const _: () = assert!(core::mem::size_of::<Counter>() == 16);

#[cfg(feature = "user")]
// SAFETY: repr(C), two u64 fields, no padding: every bit pattern is valid.
unsafe impl aya::Pod for Counter {}

/// What happened to a packet. `#[repr(u32)]` only to name the index; never read
/// from packet bytes or maps as an enum (user space converts with [`Verdict::from_index`]).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not weft's: handed on unchanged to the next program or the stack.
    Passed = 0,
    /// Encapsulated and redirected to the uplink.
    Encapsulated = 1,
    /// Decapsulated and redirected into `weft0`'s ingress.
    Decapsulated = 2,
    /// Encap: no tunnel entry covers the inner destination.
    DropNoTunnel = 3,
    /// Decap: VXLAN for our port and VNI from a source that is not a known node.
    DropUnknownPeer = 4,
    /// Headers of a packet addressed to the tunnel are truncated or invalid.
    DropMalformed = 5,
    /// Encap: a non-IPv4 frame on `weft0`; decap: an inner frame that is not IPv4.
    DropNotIpv4 = 6,
    /// Encap: the agent has not written the dataplane config yet.
    DropNoConfig = 7,
    /// The kernel refused to grow or shrink the packet (`bpf_skb_adjust_room`).
    DropResize = 8,
    /// The redirect helper refused the packet.
    DropRedirect = 9,
    /// Decap: outer header marked CE but the inner packet is not ECN-capable (RFC 6040).
    DropEcnNotEct = 10,
    /// An inner frame XDP decapsulated (counted there as `Decapsulated`), after GRO
    /// (one count per aggregate), redirected by TC into `weft0`'s ingress.
    DeliveredFromXdp = 11,
    /// A frame from the underlay addressed to our VtepMAC: dropped by XDP decap
    /// (which addresses its own inner frames so, and TC then delivers every such frame),
    /// or by TC when XDP decap is off. Never delivered.
    DropToVtepMac = 12,
    /// `--fast-path`, a pod veth's TC ingress: a pod's packet to a remote pod,
    /// encapsulated and sent to the uplink without the host's routing and netfilter.
    FastEncapsulated = 13,
    /// `--fast-path`: a decapsulated packet or aggregate delivered straight into its
    /// local pod (`bpf_redirect_peer`) — at the uplink's TC ingress, or at `weft0`'s
    /// after GRO for what TC decap sent through `weft0`'s peer (those frames were
    /// counted `decapsulated` at the uplink first).
    FastDelivered = 14,
    /// The pod bridge's TC egress: a packet the host routed to a local pod, sent to
    /// the pod's host-side veth past the bridge's own transmit (which would segment a
    /// decapsulated super-packet in software).
    BridgeBypassed = 15,
    /// The uplink's TC egress: a pod's packet leaving the cluster network, its source
    /// rewritten to the node's address (and NAT port).
    Masqueraded = 16,
    /// The uplink's TC ingress: a reply to a masqueraded flow, its destination
    /// rewritten back to the pod's address and port.
    Unmasqueraded = 17,
    DropNatExhausted = 18,
    DropNatFragment = 19,
    DropNatError = 20,
    /// Decap: the inner source is no address the sending node may send from.
    DropInnerSource = 21,
    /// Decap: the inner destination is not on this node (nor another node's pod CIDR).
    DropInnerDestination = 22,
    /// A pod veth's TC ingress: the pod sent with an address or MAC not its own.
    DropSpoofedSource = 23,
    /// Decap (TC and XDP): the first fragment of an outer IPv4 datagram to our underlay
    /// address and VXLAN port, passed to the stack, which reassembles it for the agent's
    /// tunnel socket (the slow path; later fragments carry no port and pass as `Passed`).
    TunnelFragment = 24,
}

/// Slots in the counters map: room for verdicts added later without resizing the map.
pub const VERDICT_SLOTS: u32 = 32;

impl Verdict {
    pub const ALL: [Verdict; 25] = [
        Verdict::Passed,
        Verdict::Encapsulated,
        Verdict::Decapsulated,
        Verdict::DropNoTunnel,
        Verdict::DropUnknownPeer,
        Verdict::DropMalformed,
        Verdict::DropNotIpv4,
        Verdict::DropNoConfig,
        Verdict::DropResize,
        Verdict::DropRedirect,
        Verdict::DropEcnNotEct,
        Verdict::DeliveredFromXdp,
        Verdict::DropToVtepMac,
        Verdict::FastEncapsulated,
        Verdict::FastDelivered,
        Verdict::BridgeBypassed,
        Verdict::Masqueraded,
        Verdict::Unmasqueraded,
        Verdict::DropNatExhausted,
        Verdict::DropNatFragment,
        Verdict::DropNatError,
        Verdict::DropInnerSource,
        Verdict::DropInnerDestination,
        Verdict::DropSpoofedSource,
        Verdict::TunnelFragment,
    ];

    pub const fn index(self) -> u32 {
        self as u32
    }

    pub fn from_index(index: u32) -> Option<Verdict> {
        Verdict::ALL.into_iter().find(|v| v.index() == index)
    }

    pub const fn is_drop(self) -> bool {
        self.drop_reason().is_some()
    }

    pub const fn action(self) -> Action {
        match self {
            Verdict::Passed | Verdict::TunnelFragment => Action::Pass,
            Verdict::Encapsulated
            | Verdict::Decapsulated
            | Verdict::DeliveredFromXdp
            | Verdict::FastEncapsulated
            | Verdict::FastDelivered
            | Verdict::BridgeBypassed => Action::Redirect,
            Verdict::Masqueraded | Verdict::Unmasqueraded => Action::Rewrite,
            _ => Action::Drop,
        }
    }

    pub const fn drop_reason(self) -> Option<DropReason> {
        match self {
            Verdict::DropNoTunnel => Some(DropReason::NoTunnel),
            Verdict::DropUnknownPeer => Some(DropReason::UnknownPeer),
            Verdict::DropMalformed => Some(DropReason::Malformed),
            Verdict::DropNotIpv4 => Some(DropReason::NotIpv4),
            Verdict::DropNoConfig => Some(DropReason::NoConfig),
            Verdict::DropResize => Some(DropReason::Resize),
            Verdict::DropRedirect => Some(DropReason::Redirect),
            Verdict::DropEcnNotEct => Some(DropReason::EcnNotEct),
            Verdict::DropToVtepMac => Some(DropReason::ToVtepMac),
            Verdict::DropNatExhausted => Some(DropReason::NatExhausted),
            Verdict::DropNatFragment => Some(DropReason::NatFragment),
            Verdict::DropNatError => Some(DropReason::NatError),
            Verdict::DropInnerSource => Some(DropReason::InnerSource),
            Verdict::DropInnerDestination => Some(DropReason::InnerDestination),
            Verdict::DropSpoofedSource => Some(DropReason::SpoofedSource),
            _ => None,
        }
    }

    /// Metric label and log name; stable like the number.
    pub const fn name(self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::Encapsulated => "encapsulated",
            Verdict::Decapsulated => "decapsulated",
            Verdict::DropNoTunnel => "drop_no_tunnel",
            Verdict::DropUnknownPeer => "drop_unknown_peer",
            Verdict::DropMalformed => "drop_malformed",
            Verdict::DropNotIpv4 => "drop_not_ipv4",
            Verdict::DropNoConfig => "drop_no_config",
            Verdict::DropResize => "drop_resize",
            Verdict::DropRedirect => "drop_redirect",
            Verdict::DropEcnNotEct => "drop_ecn_not_ect",
            Verdict::DeliveredFromXdp => "delivered_from_xdp",
            Verdict::DropToVtepMac => "drop_to_vtep_mac",
            Verdict::FastEncapsulated => "fast_encapsulated",
            Verdict::FastDelivered => "fast_delivered",
            Verdict::BridgeBypassed => "bridge_bypassed",
            Verdict::Masqueraded => "masqueraded",
            Verdict::Unmasqueraded => "unmasqueraded",
            Verdict::DropNatExhausted => "drop_nat_exhausted",
            Verdict::DropNatFragment => "drop_nat_fragment",
            Verdict::DropNatError => "drop_nat_error",
            Verdict::DropInnerSource => "drop_inner_source",
            Verdict::DropInnerDestination => "drop_inner_destination",
            Verdict::DropSpoofedSource => "drop_spoofed_source",
            Verdict::TunnelFragment => "tunnel_fragment",
        }
    }
}

const _: () = assert!((Verdict::ALL.len() as u32) <= VERDICT_SLOTS);
const _: () = assert!((Hook::ALL.len() as u32) <= HOOK_SLOTS);
