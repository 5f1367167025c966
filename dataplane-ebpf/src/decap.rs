//! Decapsulation at the uplink's TC ingress.
//!
//! [`inspect`] decides on the raw bytes, without touching the packet, so the same
//! decision can run from TC or XDP. A frame is weft's only if it is a whole IPv4/UDP
//! datagram to our underlay address and VXLAN port with our VNI; everything else
//! (including other VNIs, which another VXLAN device may own) passes untouched. Ours,
//! but from a source that is no known node, or malformed: dropped and counted — the
//! kernel's vxlan device would accept it from anyone. From a known node, the inner
//! packet must also be one a node may send us ([`check_inner_addresses`]): its source
//! in the cluster's pod CIDRs (or the sender's own address), its destination on this
//! node (or in another node's pod CIDR); else dropped and counted, by reason. The
//! first fragment of an outer datagram to our port passes, counted `tunnel_fragment`:
//! the stack reassembles, the agent decapsulates (agent `reassembly`).
//!
//! [`tc_decap`] then strips outer IPv4/UDP/VXLAN and the inner Ethernet header,
//! keeping the outer Ethernet header, rewrites it as a frame to `weft0`'s MAC (the
//! VtepMAC) and delivers it to `weft0`: TCP data out of `weft0`'s veth peer, so it
//! arrives through the veth's NAPI and GRO aggregates the inner flows, the rest
//! straight into `weft0`'s ingress ([`deliver`]). Either way routing, conntrack and
//! netfilter see the inner packet arrive on `weft0`, as on `flannel.1`.
//!
//! With `--ip-masq`, an answer to a flow masqueraded to this node's tunnel address
//! is translated back before delivery ([`nat::unmasq_from_tunnel`]).
//!
//! [`xdp_decap`] makes the same decision before GRO, at the uplink's native XDP hook:
//! it strips outer Ethernet/IPv4/UDP/VXLAN, leaving the inner frame (to our VtepMAC),
//! and passes it on, so the uplink's GRO aggregates the inner flow as the vxlan
//! socket's GRO does for `flannel.1`. [`tc_decap`] then redirects the aggregate into
//! `weft0`. What tells TC an inner frame is XDP's: its destination, our VtepMAC, which
//! no frame on the wire may carry — XDP drops any that does, and TC trusts the address
//! only while the agent says XDP is attached (`FLAG_XDP_DECAP`). No XDP metadata is
//! needed, so every driver with native XDP works, as do kernels that refuse
//! `bpf_xdp_adjust_meta`. (Passing, not redirecting, from XDP keeps the skb's
//! checksum state, which a veth carries partial.)

use aya_ebpf::{
    bindings::{
        BPF_CSUM_LEVEL_DEC, BPF_F_ADJ_ROOM_FIXED_GSO, BPF_F_INGRESS, TC_ACT_REDIRECT, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
    },
    helpers::generated::{bpf_csum_level, bpf_get_smp_processor_id, bpf_redirect, bpf_xdp_adjust_head},
    maps::lpm_trie::Key,
    programs::{TcContext, XdpContext},
};
use aya_log_ebpf::warn;
use weft_common::{
    Ipv4Octets, MacAddr,
    config::{DataplaneConfig, FLAG_BRIDGE_BYPASS, FLAG_DECAP_L4_UDP, FLAG_FAST_PATH, FLAG_XDP_DECAP},
    counters::Verdict,
    wire::{ETH_HLEN, ETH_P_IPV4, F_ADJ_ROOM_DECAP_L4_UDP, IPPROTO_UDP, UDP_HLEN, VXLAN_FLAG_VNI, VXLAN_HLEN},
};

use crate::{
    classify, csum, fastpath, maps, mtu, nat,
    parse::{EthHdr, Ipv4Hdr, Packet, UdpHdr, VxlanHdr},
};

/// What to do with a frame that is ours.
pub struct DecapPlan {
    /// Outer IPv4 + UDP + VXLAN + inner Ethernet: bytes between the outer Ethernet
    /// header and the inner IPv4 header.
    pub strip: usize,
    /// Offset of the inner IPv4 header in the original frame.
    pub inner_ip_off: usize,
    /// The sender's VtepMAC, kept as the source of the delivered frame.
    pub inner_src: MacAddr,
    /// RFC 6040: the outer header carries CE, to be copied into the inner one.
    pub mark_ce: u8,
}

/// Why a frame is not decapsulated: not ours (pass), the first fragment of a datagram
/// to our port (pass, to the stack's reassembly), or ours but bad (drop).
pub enum Skip {
    NotOurs,
    Fragment,
    Drop(Verdict),
}

impl From<Verdict> for Skip {
    fn from(v: Verdict) -> Self {
        Skip::Drop(v)
    }
}

/// Decides whether `pkt`, a frame from the underlay, is VXLAN for this node.
#[inline(always)]
pub fn inspect(pkt: Packet, cfg: &DataplaneConfig) -> Result<DecapPlan, Skip> {
    // Not provably ours: leave it to the stack, which judges runts and bad headers.
    let eth: &EthHdr = pkt.header(0).ok_or(Skip::NotOurs)?;
    if u16::from_be_bytes(eth.ethertype) != ETH_P_IPV4 {
        return Err(Skip::NotOurs);
    }
    let ip: &Ipv4Hdr = pkt.header(ETH_HLEN).ok_or(Skip::NotOurs)?;
    if !ip.is_valid() || ip.protocol != IPPROTO_UDP || ip.daddr != cfg.underlay_ip || ip.is_later_fragment() {
        return Err(Skip::NotOurs);
    }
    let udp_off = ETH_HLEN + ip.header_len();
    let udp: &UdpHdr = pkt.header(udp_off).ok_or(Skip::NotOurs)?;
    if u16::from_be_bytes(udp.dest) != cfg.udp_port {
        return Err(Skip::NotOurs);
    }
    // An outer fragment (a smaller-MTU hop fragmented a DF-clear packet, as it may
    // Flannel's): the stack reassembles it after this hook and the agent's tunnel
    // socket decapsulates the datagram (agent `reassembly`). Only the first fragment
    // shows our port; later ones pass as `NotOurs` above.
    if ip.is_fragment() {
        return Err(Skip::Fragment);
    }

    // Addressed to our tunnel port: from here on, bad means drop.
    let vxlan: &VxlanHdr = pkt.header(udp_off + UDP_HLEN).ok_or(Verdict::DropMalformed)?;
    if vxlan.flags & VXLAN_FLAG_VNI == 0 {
        return Err(Verdict::DropMalformed.into());
    }
    if vxlan.vni() != cfg.vni {
        return Err(Skip::NotOurs);
    }
    if maps::WEFT_PEERS.get_ptr(ip.saddr).is_none() {
        return Err(Verdict::DropUnknownPeer.into());
    }

    let inner_eth_off = udp_off + UDP_HLEN + VXLAN_HLEN;
    let inner_eth: &EthHdr = pkt.header(inner_eth_off).ok_or(Verdict::DropMalformed)?;
    if u16::from_be_bytes(inner_eth.ethertype) != ETH_P_IPV4 {
        return Err(Verdict::DropNotIpv4.into());
    }
    let inner_ip_off = inner_eth_off + ETH_HLEN;
    let inner_ip: &Ipv4Hdr = pkt.header(inner_ip_off).ok_or(Verdict::DropMalformed)?;
    if !inner_ip.is_valid() {
        return Err(Verdict::DropMalformed.into());
    }
    check_inner_addresses(ip, inner_ip, cfg)?;

    // RFC 6040 (as the kernel's IP_ECN_decapsulate): CE outside must not be lost.
    let outer_ce = ip.tos & 0x03 == 0x03;
    let inner_ecn = inner_ip.tos & 0x03;
    if outer_ce && inner_ecn == 0 {
        return Err(Verdict::DropEcnNotEct.into());
    }
    Ok(DecapPlan {
        strip: inner_ip_off - ETH_HLEN,
        inner_ip_off,
        inner_src: inner_eth.src,
        mark_ce: u8::from(outer_ce && inner_ecn != 0x03),
    })
}

/// What a known node may send us inside VXLAN (issue 16): the outer source only says
/// which node sent the frame, and anything that can send from a node's address — a pod
/// on a Flannel node, whose hand-made VXLAN flanneld masquerades to the node's address
/// — could otherwise inject any inner packet.
///
/// - **Destination**: on this node — in its pod CIDR, which holds its tunnel address
///   (the CIDR's network address, `weft0`'s, where answers to masqueraded flows come
///   back) — or in another node's pod CIDR. Anything else (this node's underlay address
///   and host services, Service addresses, the outside world) never arrives through the
///   tunnel from a node: `DropInnerDestination`.
/// - **Source**: in a node's pod CIDR (a pod; a node's tunnel address, the source of its
///   host's traffic to pods and of what it masquerades into the overlay), or the sending
///   node's own underlay address (its host's traffic to a Service whose DNAT picked a
///   pod here, when kube-proxy does not masquerade it). Anything else — this node's own
///   pod CIDR (remote nodes are in `WEFT_TUNNELS`, we are not), other hosts, the
///   outside world — is forged: `DropInnerSource`.
///
/// Why "a node's pod CIDR" and not only the sender's: a detour. A packet a node
/// decapsulated and routed on into the tunnel (a Flannel peer's stale FDB entry sends a
/// third node's traffic to us; README, "Forwarded overlay traffic") reaches its node
/// from us with the first node's pod as source, and nothing in it tells it apart from a
/// forgery of that source by us. So the destination admits other nodes' pod CIDRs (we
/// forward those) and the source admits every node's; what is closed is every source
/// and destination outside the cluster's pod CIDRs. A node can still claim another
/// node's pod as source: closing that means giving up detours.
///
/// This node's pod CIDR is in the config (the agent writes it; prefix 0 would make the
/// first test match every destination, but no agent that writes this object leaves it
/// unset). Cost: the common case (a pod's or node's packet to a pod here) does one
/// LPM lookup, for the source.
#[inline(always)]
fn check_inner_addresses(outer: &Ipv4Hdr, inner: &Ipv4Hdr, cfg: &DataplaneConfig) -> Result<(), Verdict> {
    if inner.saddr != outer.saddr && maps::WEFT_TUNNELS.get(&Key::new(32, inner.saddr)).is_none() {
        return Err(Verdict::DropInnerSource);
    }
    if !in_pod_cidr(inner.daddr, cfg) && maps::WEFT_TUNNELS.get(&Key::new(32, inner.daddr)).is_none() {
        return Err(Verdict::DropInnerDestination);
    }
    Ok(())
}

/// `addr` is in this node's pod CIDR.
#[inline(always)]
fn in_pod_cidr(addr: Ipv4Octets, cfg: &DataplaneConfig) -> bool {
    let prefix = u32::from(cfg.pod_prefix).min(32);
    // A shift by 32 would overflow: prefix 0 is the empty mask.
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    u32::from_be_bytes(addr) & mask == u32::from_be_bytes(cfg.pod_cidr) & mask
}

/// Sets CE in the inner IPv4 header, keeping its checksum right.
#[inline(always)]
fn mark_ce(pkt: Packet, plan: &DecapPlan) -> Result<(), Verdict> {
    let ip: &mut Ipv4Hdr = pkt.header_mut(plan.inner_ip_off).ok_or(Verdict::DropMalformed)?;
    let old = u16::from_be_bytes([ip.version_ihl, ip.tos]);
    ip.tos |= 0x03;
    let new = u16::from_be_bytes([ip.version_ihl, ip.tos]);
    ip.check = csum::replace16(ip.check, old, new);
    Ok(())
}

pub fn tc_decap(ctx: &TcContext) -> Result<Verdict, Verdict> {
    // Not configured yet: the uplink must keep working, so everything passes.
    let Some(cfg) = maps::config() else {
        return Ok(Verdict::Passed);
    };
    let pkt = Packet::new(ctx.data(), ctx.data_end());
    // XDP's inner frames are addressed to our VtepMAC (weft0's MAC, never the
    // uplink's); XDP dropped every other frame to it. Without XDP, such a frame came
    // from the wire as it is: never delivered unchecked.
    if let Some(eth) = pkt.header::<EthHdr>(0)
        && eth.dst == cfg.vtep_mac
    {
        if cfg.flags & FLAG_XDP_DECAP == 0 || u16::from_be_bytes(eth.ethertype) != ETH_P_IPV4 {
            return Err(Verdict::DropToVtepMac);
        }
        return deliver(ctx, cfg, Verdict::DeliveredFromXdp);
    }
    let plan = match inspect(pkt, cfg) {
        Ok(plan) => plan,
        // Not the tunnel's: a reply to a masqueraded flow is translated back.
        Err(Skip::NotOurs) => return nat::tc_unmasq(ctx, cfg),
        Err(Skip::Fragment) => return Ok(Verdict::TunnelFragment),
        Err(Skip::Drop(reason)) => {
            if reason == Verdict::DropUnknownPeer
                && let Some(ip) = pkt.header::<Ipv4Hdr>(ETH_HLEN)
            {
                warn!(ctx, "weft: VXLAN from unknown source {:i} dropped", u32::from_be_bytes(ip.saddr));
            }
            if (reason == Verdict::DropInnerSource || reason == Verdict::DropInnerDestination)
                && let Some(ip) = pkt.header::<Ipv4Hdr>(ETH_HLEN)
                && let Some(inner) = pkt.header::<Ipv4Hdr>(ETH_HLEN + ip.header_len() + UDP_HLEN + VXLAN_HLEN + ETH_HLEN)
            {
                let (from, src, dst) =
                    (u32::from_be_bytes(ip.saddr), u32::from_be_bytes(inner.saddr), u32::from_be_bytes(inner.daddr));
                if reason == Verdict::DropInnerSource {
                    warn!(ctx, "weft: VXLAN from node {:i} with inner source {:i} (to {:i}) dropped", from, src, dst);
                } else {
                    warn!(ctx, "weft: VXLAN from node {:i} with inner destination {:i} (from {:i}) dropped", from, dst, src);
                }
            }
            return Err(reason);
        }
    };
    if plan.mark_ce != 0 {
        mark_ce(pkt, &plan)?;
    }

    // Where the kernel can, it also forgets the tunnel (GSO type, `encapsulation`).
    let mut flags = u64::from(BPF_F_ADJ_ROOM_FIXED_GSO);
    if cfg.flags & FLAG_DECAP_L4_UDP != 0 {
        flags |= F_ADJ_ROOM_DECAP_L4_UDP;
    }
    ctx.adjust_room(-(plan.strip as i32), BPF_ADJ_ROOM_MAC, flags).map_err(|_| Verdict::DropResize)?;
    // A NIC's "checksum verified" for the outer UDP header must not vouch for the inner
    // packet: consume one level, as the kernel's UDP tunnel receive does.
    // SAFETY: plain helper call on this program's own context.
    unsafe { bpf_csum_level(ctx.skb.skb, u64::from(BPF_CSUM_LEVEL_DEC)) };
    let pkt = Packet::new(ctx.data(), ctx.data_end());
    let eth: &mut EthHdr = pkt.header_mut(0).ok_or(Verdict::DropMalformed)?;
    // weft0's MAC is the VtepMAC: re-running eth_type_trans on weft0 sees a frame for
    // the host (not PACKET_OTHERHOST), so IP accepts it.
    *eth = EthHdr { dst: cfg.vtep_mac, src: plan.inner_src, ethertype: ETH_P_IPV4.to_be_bytes() };

    deliver(ctx, cfg, Verdict::Decapsulated)
}

/// Redirects the (inner) frame to `weft0` — or, with `--fast-path`, straight into its
/// pod where [`fastpath::deliver_to_pod`] allows.
///
/// A GSO super-packet (a veth underlay's, or a VM's coalesced receive) goes straight
/// into `weft0`'s ingress when something downstream carries it whole: the pod bridge's
/// egress program ([`crate::bridge`], `FLAG_BRIDGE_BYPASS`) or a kernel that cleared
/// the tunnel's GSO state at decap (`FLAG_DECAP_L4_UDP`). Without either it would be
/// segmented in software further on (the bridge has no tunnel offloads), so it takes
/// the peer like MTU-sized frames and is segmented there, keeping its flow's order.
///
/// Otherwise, what TC decapsulated itself (`Decapsulated`), if TCP data
/// ([`classify::aggregatable`]), is sent out of `weft0`'s veth peer when the agent configured
/// one: it then arrives on `weft0` through the veth's NAPI (one queue per CPU), whose
/// GRO aggregates the inner flows — the aggregation XDP decap gets from the uplink's
/// GRO. The agent turns GRO on for `weft0` and TSO off for the peer, without which a
/// veth bypasses its NAPI. XDP's aggregates (always XDP's, for a whole flow), other
/// protocols and TCP segments without data (nothing aggregates them there, so the hop
/// would be pure cost: 64-byte UDP went from 87 to 96 kpps) and a frame too big for
/// `weft0` (a veth would drop it; the kernel's vxlan accepts it) go into `weft0`'s
/// ingress.
///
/// On an underlay carrying super-packets, a flow's short segments between them (a
/// burst's tail) take the peer while its super-packets do not, and one can overtake
/// the other: a trade measured as 2× the throughput, with the receiving pod's
/// out-of-order queueing at Flannel's level (docs/performance.md). The fast path
/// decides here for everything that does not take the peer, super-packets included;
/// at `weft0`'s ingress ([`fastpath::tc_weft0_ingress`]) for what does, after GRO.
#[inline(always)]
fn deliver(ctx: &TcContext, cfg: &DataplaneConfig, verdict: Verdict) -> Result<Verdict, Verdict> {
    // An answer to a flow masqueraded to our tunnel address gets its client's back
    // first: TC's and XDP's inner frames alike.
    nat::unmasq_from_tunnel(ctx, cfg)?;
    let fast = cfg.flags & FLAG_FAST_PATH != 0;
    // SAFETY: reading a field of the context the kernel passed us.
    let gso = unsafe { (*ctx.skb.skb).gso_size } != 0;
    // A super-packet needs no GRO; it only took the peer (and was segmented there) while
    // nothing downstream could carry it whole.
    let whole = gso && cfg.flags & (FLAG_BRIDGE_BYPASS | FLAG_DECAP_L4_UDP) != 0;
    // Only TCP data gains from weft0's GRO: the rest goes straight in (see classify::aggregatable).
    let via_peer = verdict == Verdict::Decapsulated
        && !whole
        && classify::aggregatable(Packet::new(ctx.data(), ctx.data_end()))
        && cfg.weft0_peer_ifindex != 0
        && mtu::fits_weft0(ctx, cfg);
    if fast && (!via_peer || gso) && fastpath::deliver_to_pod(ctx)? {
        return Ok(Verdict::FastDelivered);
    }
    let (ifindex, flags) = if via_peer { (cfg.weft0_peer_ifindex, 0) } else { (cfg.weft0_ifindex, BPF_F_INGRESS) };
    if via_peer {
        // Into the peer's queue of this CPU (a recorded rx queue, + 1, picks the tx
        // queue), so weft0's NAPI for it runs here, right after this receive, as
        // Flannel's per-CPU GRO cells do. By flow hash, a CPU could fill a ring whose
        // NAPI waits on another CPU's softirq; the veth drops what does not fit.
        // SAFETY: queue_mapping is writable from TC; the value is below NO_QUEUE_MAPPING.
        unsafe { (*ctx.skb.skb).queue_mapping = bpf_get_smp_processor_id() + 1 };
    }
    // SAFETY: plain helper call with scalar arguments.
    let rc = unsafe { bpf_redirect(ifindex, u64::from(flags)) };
    if rc != i64::from(TC_ACT_REDIRECT) {
        return Err(Verdict::DropRedirect);
    }
    Ok(verdict)
}

/// XDP: decapsulates a frame that is ours into the inner Ethernet frame, addressed to
/// our VtepMAC, and passes it on to GRO and then [`tc_decap`]; drops a frame that
/// arrives addressed to the VtepMAC (TC would take it for ours). `Passed`: not ours,
/// or ours but bad — TC makes (and counts, and logs) the same decision again.
pub fn xdp_decap(ctx: &XdpContext) -> Result<Verdict, Verdict> {
    let Some(cfg) = maps::config() else {
        return Ok(Verdict::Passed);
    };
    let pkt = Packet::new(ctx.data(), ctx.data_end());
    if pkt.header::<EthHdr>(0).is_some_and(|eth| eth.dst == cfg.vtep_mac) {
        return Err(Verdict::DropToVtepMac);
    }
    let plan = match inspect(pkt, cfg) {
        Ok(plan) => plan,
        Err(Skip::Fragment) => return Ok(Verdict::TunnelFragment),
        Err(_) => return Ok(Verdict::Passed),
    };
    if plan.mark_ce != 0 {
        mark_ce(pkt, &plan)?;
    }
    // Drop everything before the inner Ethernet header.
    let outer = (plan.inner_ip_off - ETH_HLEN) as i32;
    // SAFETY: plain helper call on this program's own context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, outer) } != 0 {
        return Err(Verdict::DropResize);
    }
    let pkt = Packet::new(ctx.data(), ctx.data_end());
    let eth: &mut EthHdr = pkt.header_mut(0).ok_or(Verdict::DropMalformed)?;
    // A Flannel peer addresses us by our VtepMAC already; say so for every sender.
    eth.dst = cfg.vtep_mac;
    Ok(Verdict::Decapsulated)
}
