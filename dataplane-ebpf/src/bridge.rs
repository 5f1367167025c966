//! The pod bridge's TC egress: what the host routed to a local pod goes to the pod's
//! host-side veth, past the bridge's own transmit.
//!
//! A packet reaches this hook after routing and netfilter (FORWARD, POSTROUTING) and
//! neighbour resolution, just before the bridge would look its destination MAC up in
//! the FDB and transmit it on that port. Decapsulated super-packets still carry the
//! tunnel's GSO type (6.18 cannot clear it from BPF), and a bridge has no
//! `hw_enc_features`: its transmit would segment each one in software. A veth takes
//! them whole. So:
//! 1. parse: Ethernet + IPv4, unicast destination MAC (broadcast, multicast and
//!    everything not IPv4, ARP included, stay the bridge's);
//! 2. decide: the destination is a local pod in `WEFT_ENDPOINTS` and the MAC the
//!    neighbour table chose is that pod's (the bridge's FDB would pick the same port);
//! 3. redirect to the pod's veth (its egress: into the pod), as the bridge would.
//!
//! What the bridge's transmit did besides forwarding and no longer does for these
//! packets: bridge-family netfilter (ebtables/nft `bridge` OUTPUT and POSTROUTING;
//! `br_netfilter` has nothing to do for routed packets) and `cni0`'s own tx
//! counters. Everything else is unchanged.

use aya_ebpf::{bindings::TC_ACT_REDIRECT, helpers::generated::bpf_redirect, programs::TcContext};
use weft_common::{
    counters::Verdict,
    wire::{ETH_HLEN, ETH_P_IPV4},
};

use crate::{
    maps,
    parse::{EthHdr, Ipv4Hdr, Packet},
};

pub fn tc_bridge_egress(ctx: &TcContext) -> Result<Verdict, Verdict> {
    // parse
    let pkt = Packet::new(ctx.data(), ctx.data_end());
    let Some(eth) = pkt.header::<EthHdr>(0) else {
        return Ok(Verdict::Passed);
    };
    // The group bit: broadcast and multicast are flooded by the bridge.
    if eth.dst[0] & 1 != 0 || u16::from_be_bytes(eth.ethertype) != ETH_P_IPV4 {
        return Ok(Verdict::Passed);
    }
    let Some(ip) = pkt.header::<Ipv4Hdr>(ETH_HLEN) else {
        return Ok(Verdict::Passed);
    };

    // decide
    let Some(pod) = maps::WEFT_ENDPOINTS.get_ptr(ip.daddr) else {
        return Ok(Verdict::Passed);
    };
    // SAFETY: a value pointer from a successful lookup; the agent replaces values whole.
    let pod = unsafe { *pod };
    if pod.mac != eth.dst {
        return Ok(Verdict::Passed);
    }

    // redirect: the veth's transmit puts it into the pod's namespace.
    // SAFETY: plain helper call with scalar arguments.
    let rc = unsafe { bpf_redirect(pod.ifindex, 0) };
    if rc != i64::from(TC_ACT_REDIRECT) {
        return Err(Verdict::DropRedirect);
    }
    Ok(Verdict::BridgeBypassed)
}
