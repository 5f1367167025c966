//! The opt-in fast path (`--fast-path`): pod-to-pod traffic between nodes without
//! the host stack at either end.
//!
//! The decision is per flow and the same both ways: a TCP or UDP flow (whole
//! datagrams only) takes the fast path at this node unless it has been through this
//! node's stack in either direction — then conntrack may hold NAT state for it (a
//! Service's DNAT on the client's node, a hostPort's or NodePort's on the server's),
//! and all of it stays on the stack. The stack's traffic is seen at its two exits
//! towards the tunnel and the pods, and remembered in `WEFT_STACK_FLOWS`:
//! [`remember_stack_flow`] at `weft0`'s egress, [`tc_pod_ingress`] at the egress of
//! each pod's host-side veth (what the stack delivers to the pod).
//!
//! - [`tc_pod_egress`], at the TC ingress of each pod's host-side veth (what the pod
//!   sends, before the bridge — and before `br_netfilter` runs PREROUTING, where
//!   kube-proxy's DNAT would already have rewritten a Service address to a pod's):
//!   parse; decide — from the pod's own address and MAC on its own veth (no spoofed
//!   source), to a remote pod CIDR, a flow never seen on the stack, TTL left, fits
//!   `weft0`'s MTU; rewrite — lower the TTL as a router does, then
//!   [`tunnel::encapsulate`]; redirect to the uplink. Anything else goes on to the
//!   stack, which handles it as without the fast path.
//! - [`deliver_to_pod`], where decap would redirect into `weft0`: the same decision
//!   for a packet to a pod in `WEFT_ENDPOINTS`, then the pod's MAC, a lowered TTL,
//!   and `bpf_redirect_peer` into the pod's namespace (no backlog, no bridge, no
//!   second pass through the stack). It runs on an aggregate, after GRO: at the
//!   uplink's TC ingress for XDP decap's aggregates, and at `weft0`'s TC ingress
//!   ([`tc_weft0_ingress`]) for what TC decap sends through `weft0`'s veth peer.
//!
//! What the host stack would have done and no longer does for these flows —
//! netfilter (NetworkPolicy, host firewalls), conntrack, the bridge's forwarding — is
//! the trade-off an operator opts into; the README lists it.

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
    config::{FLAG_FAST_PATH, FLAG_SOURCE_CHECK},
    counters::Verdict,
    fastpath::{FlowKey, FlowSeen},
    wire::{ETH_HLEN, ETH_P_IPV4, IPPROTO_TCP, IPPROTO_UDP},
};

use crate::{
    classify, csum, maps, mtu,
    parse::{EthHdr, Ipv4Hdr, L4Ports, Packet},
    source::{self, PodFrame},
    tunnel,
};

/// `PACKET_HOST` (`linux/if_packet.h`).
const PACKET_HOST: u32 = 0;

/// TC ingress of a pod's host-side veth: first the source check ([`source`]); then,
/// with `--fast-path`, a pod's packet for a remote pod is encapsulated here.
pub fn tc_pod_egress(ctx: &TcContext) -> Result<Verdict, Verdict> {
    let Some(cfg) = maps::config() else {
        return Ok(Verdict::Passed);
    };
    let fast = cfg.flags & FLAG_FAST_PATH != 0;
    let check = cfg.flags & FLAG_SOURCE_CHECK != 0;
    if !fast && !check {
        return Ok(Verdict::Passed);
    }
    // classify: the pod's own IPv4 (from its own address and MAC on its own veth) may
    // take the fast path; a spoofed source is dropped here, or with the check off never
    // gets past the stack's checks (rp_filter, the firewall) by way of the fast path.
    let PodFrame::OwnIpv4 = source::pod_frame(ctx, check)? else {
        return Ok(Verdict::Passed);
    };
    if !fast {
        return Ok(Verdict::Passed);
    }

    // parse: anything we do not fully understand is the stack's.
    let pkt = Packet::new(ctx.data(), ctx.data_end());
    let Some(ip) = pkt.header_mut::<Ipv4Hdr>(ETH_HLEN) else {
        return Ok(Verdict::Passed);
    };
    let Some(flow) = fast_flow(pkt, ip) else {
        return Ok(Verdict::Passed);
    };

    // decide
    let Some(peer) = maps::WEFT_TUNNELS.get(&Key::new(32, ip.daddr)).copied() else {
        return Ok(Verdict::Passed);
    };
    // TTL expiring here, or too big for the tunnel: the stack forwards it to weft0,
    // which answers with time-exceeded or frag-needed as it does without the fast path.
    if ip.ttl <= 1 || seen_on_stack(&flow) || !mtu::fits_weft0(ctx, cfg) {
        return Ok(Verdict::Passed);
    }

    // rewrite + redirect
    decrement_ttl(ip);
    let tos = ip.tos;
    tunnel::encapsulate(ctx, cfg, &peer, tos)?;
    Ok(Verdict::FastEncapsulated)
}

/// TC egress of a pod's host-side veth: what the stack delivers to the pod. A flow
/// from a remote pod (the only kind whose replies could take the fast path) is
/// remembered, so the pod's replies take the stack too; probes, local and outside
/// traffic are not (they would only churn the map). The packet goes on, uncounted
/// (it is the stack's, not weft's).
pub fn tc_pod_ingress(ctx: &TcContext) {
    if maps::config().is_none_or(|c| c.flags & FLAG_FAST_PATH == 0) {
        return;
    }
    let pkt = Packet::new(ctx.data(), ctx.data_end());
    if let Some(eth) = pkt.header::<EthHdr>(0)
        && u16::from_be_bytes(eth.ethertype) == ETH_P_IPV4
        && let Some(ip) = pkt.header::<Ipv4Hdr>(ETH_HLEN)
        && ip.is_valid()
        && maps::WEFT_TUNNELS.get(&Key::new(32, ip.saddr)).is_some()
    {
        remember_stack_flow(pkt, ip);
    }
}

/// TC ingress of `weft0`: what TC decap sent through `weft0`'s veth peer, after
/// `weft0`'s GRO. A flow for a local pod that may skip the stack goes straight into
/// the pod, one aggregate at a time; the rest (`Passed`) goes on into the stack.
/// What the uplink redirected into `weft0`'s ingress passes here too; the uplink
/// already declined it. Only what may have come through the peer (TCP data,
/// [`classify::aggregatable`]) is decided again, so UDP and bare ACKs of flows that stay
/// on the stack do not pay the lookups twice.
pub fn tc_weft0_ingress(ctx: &TcContext) -> Result<Verdict, Verdict> {
    if maps::config().is_none_or(|c| c.flags & FLAG_FAST_PATH == 0) {
        return Ok(Verdict::Passed);
    }
    let pkt = Packet::new(ctx.data(), ctx.data_end());
    if pkt.header::<EthHdr>(0).is_none_or(|eth| u16::from_be_bytes(eth.ethertype) != ETH_P_IPV4) || !classify::aggregatable(pkt) {
        return Ok(Verdict::Passed);
    }
    Ok(if deliver_to_pod(ctx)? { Verdict::FastDelivered } else { Verdict::Passed })
}

/// The flow of a packet the fast path may carry: TCP or UDP, a whole datagram.
#[inline(always)]
fn fast_flow(pkt: Packet, ip: &Ipv4Hdr) -> Option<FlowKey> {
    if ip.is_fragment() {
        return None;
    }
    flow_of(pkt, ETH_HLEN, ip)
}

/// Whether this flow has been through this node's stack, either way.
#[inline(always)]
fn seen_on_stack(flow: &FlowKey) -> bool {
    maps::WEFT_STACK_FLOWS.get_ptr(flow).is_some() || maps::WEFT_STACK_FLOWS.get_ptr(flow.reversed()).is_some()
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

/// Remembers the flow of a packet the stack forwarded (seen at `weft0`'s egress or a
/// pod veth's). Looked up first: an update per packet would take the LRU's locks on
/// every one.
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

/// After decap (at the uplink's or `weft0`'s TC ingress), with the inner frame at the
/// start of the packet: delivers it straight into its local pod if it may skip the stack.
/// `Ok(false)`: it may not (not valid IPv4, not TCP/UDP, a fragment, TTL expiring, no
/// such pod, or a flow this node's stack has seen); the caller delivers it into `weft0`.
#[inline(always)]
pub fn deliver_to_pod(ctx: &TcContext) -> Result<bool, Verdict> {
    let pkt = Packet::new(ctx.data(), ctx.data_end());
    // Not in the linear head (XDP's aggregate): the stack copes, so hand it on.
    let Some(ip) = pkt.header_mut::<Ipv4Hdr>(ETH_HLEN) else {
        return Ok(false);
    };
    // Only a valid header skips the stack's checks (at `weft0`'s ingress nothing else
    // has looked at this frame's version and IHL; found by the reference-model fuzzing).
    if !ip.is_valid() || ip.ttl <= 1 {
        return Ok(false);
    }
    let Some(flow) = fast_flow(pkt, ip) else {
        return Ok(false);
    };
    let Some(pod) = maps::WEFT_ENDPOINTS.get_ptr(ip.daddr) else {
        return Ok(false);
    };
    if seen_on_stack(&flow) {
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
    // (On weft0 it is already PACKET_HOST.)
    // SAFETY: plain helper calls on this program's own context.
    unsafe {
        bpf_skb_change_type(ctx.skb.skb, PACKET_HOST);
        if bpf_redirect_peer(pod.ifindex, 0) != i64::from(TC_ACT_REDIRECT) {
            return Err(Verdict::DropRedirect);
        }
    }
    Ok(true)
}
