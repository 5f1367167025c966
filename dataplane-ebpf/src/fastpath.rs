//! The opt-in fast path (`--fast-path`): pod-to-pod traffic between nodes without
//! the host stack at either end.
//!
//! - [`tc_pod_egress`], at the TC ingress of each pod's host-side veth (what the pod
//!   sends, before the bridge — and before `br_netfilter` runs PREROUTING, where
//!   kube-proxy's DNAT would already have rewritten a Service address to a pod's):
//!   parse; decide — a remote pod CIDR, TTL left, fits `weft0`'s
//!   MTU; rewrite — lower the TTL as a router does, then [`encap::encapsulate`];
//!   redirect to the uplink. Anything else (the node itself, a Service address, the
//!   outside world, a packet the stack must answer with ICMP) goes on to the stack.
//! - [`deliver_to_pod`], where decap would redirect into `weft0`: a whole TCP/UDP
//!   packet for a pod in `WEFT_ENDPOINTS` is addressed to the pod, its TTL lowered,
//!   and redirected into the pod's namespace (`bpf_redirect_peer`: no backlog, no
//!   bridge, no second pass through the stack).
//! - [`remember_stack_flow`], at `weft0`'s egress: a flow that left through the stack
//!   (a Service's DNAT happens there) is remembered, and [`deliver_to_pod`] sends its
//!   replies through `weft0` too, so conntrack reverses the NAT.
//!
//! What the host stack would have done and no longer does — netfilter (NetworkPolicy,
//! host firewalls), conntrack for these flows, the bridge's forwarding — is the
//! trade-off an operator opts into; the README lists it.

use aya_ebpf::{
    bindings::TC_ACT_REDIRECT,
    helpers::{
        bpf_ktime_get_ns,
        generated::{bpf_redirect_peer, bpf_skb_change_type},
    },
    maps::lpm_trie::Key,
    programs::TcContext,
};
use weft_common::{
    config::FLAG_FAST_PATH,
    counters::Verdict,
    fastpath::{FlowKey, FlowSeen},
    wire::{ETH_HLEN, ETH_P_IPV4, IPPROTO_TCP, IPPROTO_UDP},
};

use crate::{
    csum, encap, maps, mtu,
    parse::{EthHdr, Ipv4Hdr, L4Ports, Packet},
};

/// `PACKET_HOST` (`linux/if_packet.h`).
const PACKET_HOST: u32 = 0;

/// TC ingress of a pod's host-side veth: a pod's packet for a remote pod, encapsulated here.
pub fn tc_pod_egress(ctx: &TcContext) -> Result<Verdict, Verdict> {
    // parse: anything we do not fully understand is the stack's.
    let Some(cfg) = maps::config().filter(|c| c.flags & FLAG_FAST_PATH != 0) else {
        return Ok(Verdict::Passed);
    };
    let pkt = Packet::new(ctx.data(), ctx.data_end());
    let Some(eth) = pkt.header::<EthHdr>(0) else {
        return Ok(Verdict::Passed);
    };
    if u16::from_be_bytes(eth.ethertype) != ETH_P_IPV4 {
        return Ok(Verdict::Passed);
    }
    let Some(ip) = pkt.header_mut::<Ipv4Hdr>(ETH_HLEN) else {
        return Ok(Verdict::Passed);
    };
    if !ip.is_valid() {
        return Ok(Verdict::Passed);
    }

    // decide
    let Some(peer) = maps::WEFT_TUNNELS.get(&Key::new(32, ip.daddr)).copied() else {
        return Ok(Verdict::Passed);
    };
    // TTL expiring here, or too big for the tunnel: the stack forwards it to weft0,
    // which answers with time-exceeded or frag-needed (or fragments it) as it does
    // without the fast path.
    if ip.ttl <= 1 || !mtu::fits(ctx, cfg.weft0_ifindex) {
        return Ok(Verdict::Passed);
    }

    // rewrite + redirect
    decrement_ttl(ip);
    let tos = ip.tos;
    encap::encapsulate(ctx, cfg, &peer, tos)?;
    Ok(Verdict::FastEncapsulated)
}

/// Lowers the TTL by one, as forwarding does, keeping the header checksum right.
#[inline(always)]
fn decrement_ttl(ip: &mut Ipv4Hdr) {
    let old = u16::from_be_bytes([ip.ttl, ip.protocol]);
    ip.ttl -= 1;
    let new = u16::from_be_bytes([ip.ttl, ip.protocol]);
    ip.check = csum::replace16(ip.check, old, new);
}

/// The TCP/UDP flow of the IPv4 header `ip` at `ip_off` in `pkt`, if this packet
/// carries its ports (TCP or UDP, and not a later fragment).
#[inline(always)]
fn flow_of(pkt: Packet, ip_off: usize, ip: &Ipv4Hdr) -> Option<FlowKey> {
    if (ip.protocol != IPPROTO_TCP && ip.protocol != IPPROTO_UDP) || ip.is_later_fragment() {
        return None;
    }
    let ports: &L4Ports = pkt.header(ip_off + ip.header_len())?;
    Some(FlowKey {
        saddr: ip.saddr,
        daddr: ip.daddr,
        sport: ports.source,
        dport: ports.dest,
        protocol: ip.protocol,
        _pad: [0; 3],
    })
}

/// `weft0`'s egress: remembers the flow of a packet leaving through the stack.
/// Looked up first: an update per packet would take the LRU's locks on every one.
#[inline(always)]
pub fn remember_stack_flow(pkt: Packet, ip: &Ipv4Hdr) {
    let Some(key) = flow_of(pkt, ETH_HLEN, ip) else {
        return;
    };
    if maps::WEFT_STACK_FLOWS.get_ptr(key).is_none() {
        // SAFETY: plain helper call.
        let seen = FlowSeen { first_ns: unsafe { bpf_ktime_get_ns() } };
        // A full map evicts its least recently used flow; failure leaves the flow on
        // the fast path, which is where it would be without this map.
        let _ = maps::WEFT_STACK_FLOWS.insert(key, seen, 0);
    }
}

/// After decap, at the uplink's TC ingress, with the inner frame at the start of the
/// packet: delivers it straight into its local pod if it may skip the stack.
/// `Ok(false)`: it may not (not TCP/UDP, a fragment, TTL expiring, no such pod, or a
/// reply of a flow that left through the stack); the caller delivers it into `weft0`.
#[inline(always)]
pub fn deliver_to_pod(ctx: &TcContext) -> Result<bool, Verdict> {
    let pkt = Packet::new(ctx.data(), ctx.data_end());
    let ip: &mut Ipv4Hdr = pkt.header_mut(ETH_HLEN).ok_or(Verdict::DropMalformed)?;
    if ip.is_fragment() || ip.ttl <= 1 {
        return Ok(false);
    }
    let Some(flow) = flow_of(pkt, ETH_HLEN, ip) else {
        return Ok(false);
    };
    let Some(pod) = maps::WEFT_ENDPOINTS.get_ptr(ip.daddr) else {
        return Ok(false);
    };
    if maps::WEFT_STACK_FLOWS.get_ptr(flow.reversed()).is_some() {
        return Ok(false);
    }
    // SAFETY: a value pointer from a successful lookup; the agent replaces values whole.
    let pod = unsafe { *pod };

    decrement_ttl(ip);
    let eth: &mut EthHdr = pkt.header_mut(0).ok_or(Verdict::DropMalformed)?;
    eth.dst = pod.mac;
    eth.src = pod.gw_mac;
    // The uplink classified the frame by its first destination MAC (our VtepMAC, not
    // the uplink's: PACKET_OTHERHOST); a peer redirect does not classify it again.
    // SAFETY: plain helper calls on this program's own context.
    unsafe {
        bpf_skb_change_type(ctx.skb.skb, PACKET_HOST);
        if bpf_redirect_peer(pod.ifindex, 0) != i64::from(TC_ACT_REDIRECT) {
            return Err(Verdict::DropRedirect);
        }
    }
    Ok(true)
}
