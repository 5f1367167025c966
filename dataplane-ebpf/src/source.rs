//! Pod source checks (`--pod-source-check`, the default), at the TC ingress of each
//! pod's host-side veth: a pod sends only as itself.
//!
//! "Itself" is the endpoint its CNI result recorded (`WEFT_ENDPOINTS`: address → veth,
//! MAC), never what the pod claims: an IPv4 packet must come from an address whose
//! endpoint is this veth, with that endpoint's MAC; an ARP packet must name that
//! address and MAC as its sender, so no neighbour table (the host's, or a neighbour
//! pod's through the bridge) learns a pod's address at another pod's MAC. The agent
//! attaches the program only to veths whose endpoint it knows. Everything else a pod
//! may send (IPv6, LLDP, ...) is not routed by weft and passes.

use aya_ebpf::programs::TcContext;
use weft_common::{
    MacAddr,
    counters::Verdict,
    wire::{ETH_HLEN, ETH_P_ARP, ETH_P_IPV4},
};

use crate::{
    maps,
    parse::{ArpHdr, EthHdr, Ipv4Hdr, Packet},
};

/// What a pod's frame is, as far as the source check and the fast path care.
pub enum PodFrame {
    /// IPv4 from the veth's own pod (which may take the fast path).
    OwnIpv4,
    /// IPv4 the check does not judge (switched off, or a header the stack will discard).
    OtherIpv4,
    /// Anything else that may pass: ARP from the pod itself, non-IPv4 protocols.
    Other,
}

/// Judges a frame a pod sent on its veth: `Err(DropSpoofedSource)` when it claims an
/// address or MAC that is not the pod's, with `check` on.
#[inline(always)]
pub fn pod_frame(ctx: &TcContext, check: bool) -> Result<PodFrame, Verdict> {
    let pkt = Packet::new(ctx.data(), ctx.data_end());
    let Some(eth) = pkt.header::<EthHdr>(0) else {
        // Shorter than an Ethernet header: nothing the stack will take.
        return Ok(PodFrame::Other);
    };
    // SAFETY: reading a field of the context the kernel passed us.
    let veth = unsafe { (*ctx.skb.skb).ifindex };
    match u16::from_be_bytes(eth.ethertype) {
        ETH_P_IPV4 => {
            let Some(ip) = pkt.header::<Ipv4Hdr>(ETH_HLEN) else {
                return if check { Err(Verdict::DropMalformed) } else { Ok(PodFrame::OtherIpv4) };
            };
            if !ip.is_valid() {
                // The stack's own checks discard it; it carries no address to judge.
                return Ok(PodFrame::OtherIpv4);
            }
            if is_own(ip.saddr, veth, &eth.src) {
                Ok(PodFrame::OwnIpv4)
            } else if check {
                Err(Verdict::DropSpoofedSource)
            } else {
                Ok(PodFrame::OtherIpv4)
            }
        }
        ETH_P_ARP if check => {
            let Some(arp) = pkt.header::<ArpHdr>(ETH_HLEN) else {
                return Err(Verdict::DropMalformed);
            };
            // The sender pair is what neighbour tables learn from requests and replies
            // alike; it must be this pod's, and the frame must come from its MAC.
            if arp.sha == eth.src && is_own(arp.spa, veth, &arp.sha) {
                Ok(PodFrame::Other)
            } else {
                Err(Verdict::DropSpoofedSource)
            }
        }
        _ => Ok(PodFrame::Other),
    }
}

/// Whether `addr` is the pod behind `veth`, with MAC `mac`.
#[inline(always)]
fn is_own(addr: [u8; 4], veth: u32, mac: &MacAddr) -> bool {
    let Some(pod) = maps::WEFT_ENDPOINTS.get_ptr(addr) else {
        return false;
    };
    // SAFETY: a value pointer from a successful lookup; the agent replaces values whole.
    let pod = unsafe { *pod };
    pod.ifindex == veth && pod.mac == *mac
}
