//! Rewrite and redirect into the tunnel: a frame becomes VXLAN to a peer node and
//! leaves through the uplink. Shared by `weft0`'s egress ([`crate::encap`]) and the
//! fast path's pod egress ([`crate::fastpath`]).

use aya_ebpf::{
    bindings::{
        BPF_F_ADJ_ROOM_ENCAP_L2_ETH, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L4_UDP, BPF_F_ADJ_ROOM_FIXED_GSO,
        TC_ACT_REDIRECT, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
    },
    helpers::generated::{bpf_get_hash_recalc, bpf_get_prandom_u32, bpf_redirect_neigh},
    programs::TcContext,
};
use weft_common::{
    config::DataplaneConfig,
    counters::Verdict,
    tunnel::TunnelEndpoint,
    wire::{
        ENCAP_OVERHEAD, ETH_HLEN, ETH_P_IPV4, IPPROTO_UDP, IPV4_HLEN, SRC_PORT_MIN, SRC_PORT_SPAN, UDP_HLEN, VXLAN_FLAG_VNI,
        VXLAN_HLEN,
    },
};

use crate::{
    csum,
    parse::{EthHdr, Ipv4Hdr, Packet, UdpHdr, VxlanHdr},
};

/// `BPF_F_ADJ_ROOM_ENCAP_L2(len)` is a C macro that aya's bindings lack.
const fn encap_l2_len(len: u64) -> u64 {
    (len & 0xff) << 56
}

/// Tell the kernel what the new bytes are (outer IPv4/UDP, inner Ethernet), so GSO
/// packets are segmented as UDP tunnel packets; keep `gso_size` as is (weft0's MTU
/// already leaves room for the 50 bytes) and accept non-TCP GSO.
const ENCAP_FLAGS: u64 = BPF_F_ADJ_ROOM_FIXED_GSO as u64
    | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 as u64
    | BPF_F_ADJ_ROOM_ENCAP_L4_UDP as u64
    | BPF_F_ADJ_ROOM_ENCAP_L2_ETH as u64
    | encap_l2_len(ETH_HLEN as u64);

/// `-EALREADY`: `bpf_skb_adjust_room` met an skb that is already encapsulated.
const EALREADY: i64 = -114;

const OUTER_TTL: u8 = 64;

/// Rewrite and redirect, for `weft0`'s egress and the fast path alike: the frame (an
/// Ethernet header, then the inner IPv4 packet with type of service `inner_tos`)
/// becomes VXLAN to `peer` and leaves through the uplink.
#[inline(always)]
pub fn encapsulate(ctx: &TcContext, cfg: &DataplaneConfig, peer: &TunnelEndpoint, inner_tos: u8) -> Result<(), Verdict> {
    let outer_tos = ecn_encapsulate(inner_tos);
    // The flow hash must be taken from the inner headers now: after adjust_room the
    // kernel may hash the new outer header, and every flow would get the same source port.
    // SAFETY: `ctx.skb.skb` is the context pointer the kernel passed to this program.
    let hash = unsafe { bpf_get_hash_recalc(ctx.skb.skb) };
    // SAFETY: plain helper call, no arguments.
    let ip_id = unsafe { bpf_get_prandom_u32() } as u16;
    match ctx.adjust_room(ENCAP_OVERHEAD as i32, BPF_ADJ_ROOM_MAC, ENCAP_FLAGS) {
        Ok(()) => {}
        // A packet decapsulated here and routed on to another node (forwarded overlay
        // traffic) still carries its first tunnel's state, which 6.18 cannot clear:
        // the kernel refuses to describe a second tunnel. That state is right for ours:
        // the same 50 bytes go back where decap took them from, so the inner header
        // offsets and the UDP-tunnel GSO type still describe the packet.
        Err(EALREADY) => ctx
            .adjust_room(ENCAP_OVERHEAD as i32, BPF_ADJ_ROOM_MAC, u64::from(BPF_F_ADJ_ROOM_FIXED_GSO))
            .map_err(|_| Verdict::DropResize)?,
        Err(_) => return Err(Verdict::DropResize),
    }
    // adjust_room invalidated every packet pointer: derive them again.
    let pkt = Packet::new(ctx.data(), ctx.data_end());
    write_headers(pkt, cfg, peer, Outer { skb_len: ctx.len(), hash, tos: outer_tos, ip_id })?;

    // SAFETY: a null `params` with length 0 asks the helper to look up the next hop itself.
    let rc = unsafe { bpf_redirect_neigh(cfg.uplink_ifindex, core::ptr::null_mut(), 0, 0) };
    if rc != i64::from(TC_ACT_REDIRECT) {
        return Err(Verdict::DropRedirect);
    }
    Ok(())
}

/// RFC 6040 normal mode, as the kernel's `INET_ECN_encapsulate`: copy the inner ECN
/// field to the outer header, except CE, which becomes ECT(0). DSCP is not copied
/// (Flannel's `flannel.1` uses TOS 0).
#[inline(always)]
fn ecn_encapsulate(inner_tos: u8) -> u8 {
    match inner_tos & 0x03 {
        0x03 => 0x02,
        ecn => ecn,
    }
}

/// What varies per packet in the outer headers.
struct Outer {
    /// The whole frame after growing; for a GSO packet the lengths are per
    /// super-packet and the kernel rewrites them per segment.
    skb_len: u32,
    /// The inner flow's hash, for the UDP source port.
    hash: u32,
    tos: u8,
    /// The outer IP ID (GSO gives segment n the ID + n, as for the kernel's vxlan).
    ip_id: u16,
}

/// Writes outer IPv4 + UDP + VXLAN + inner Ethernet into the 50 bytes opened after
/// the outer Ethernet header.
#[inline(always)]
fn write_headers(pkt: Packet, cfg: &DataplaneConfig, peer: &TunnelEndpoint, outer: Outer) -> Result<(), Verdict> {
    let Outer { skb_len, hash, tos, ip_id } = outer;
    let outer_len = (skb_len as usize).saturating_sub(ETH_HLEN).min(0xffff) as u16;

    let ip: &mut Ipv4Hdr = pkt.header_mut(ETH_HLEN).ok_or(Verdict::DropMalformed)?;
    *ip = Ipv4Hdr {
        version_ihl: 0x45,
        tos,
        tot_len: outer_len.to_be_bytes(),
        // As Flannel's flannel.1 (a kernel vxlan device without `df`, vxlan_xmit_one):
        // DF clear whatever the inner DF, so a smaller-MTU hop on the underlay fragments
        // instead of dropping; the receiver reassembles (README, "Outer fragments").
        // A fragmentable packet needs an ID its fragments are not confused by: random
        // per packet (the kernel's __ip_select_ident hashes a per-destination counter).
        id: ip_id.to_be_bytes(),
        frag_off: [0, 0],
        ttl: OUTER_TTL,
        protocol: IPPROTO_UDP,
        check: [0, 0],
        saddr: cfg.underlay_ip,
        daddr: peer.underlay_ip,
    };
    ip.check = csum::ipv4_header(ip);

    let udp: &mut UdpHdr = pkt.header_mut(ETH_HLEN + IPV4_HLEN).ok_or(Verdict::DropMalformed)?;
    // Spread flows over RFC 7348's source port range, so the underlay's ECMP spreads them too.
    let sport = SRC_PORT_MIN + (hash & (SRC_PORT_SPAN - 1)) as u16;
    *udp = UdpHdr {
        source: sport.to_be_bytes(),
        dest: cfg.udp_port.to_be_bytes(),
        len: (outer_len - IPV4_HLEN as u16).to_be_bytes(),
        // Zero: RFC 7348 and Flannel's flannel.1 do not checksum IPv4 VXLAN.
        check: [0, 0],
    };

    let vxlan: &mut VxlanHdr = pkt.header_mut(ETH_HLEN + IPV4_HLEN + UDP_HLEN).ok_or(Verdict::DropMalformed)?;
    let vni = peer.vni.to_be_bytes();
    *vxlan = VxlanHdr { flags: VXLAN_FLAG_VNI, _reserved1: [0; 3], vni: [vni[1], vni[2], vni[3]], _reserved2: 0 };

    let inner: &mut EthHdr = pkt.header_mut(ETH_HLEN + IPV4_HLEN + UDP_HLEN + VXLAN_HLEN).ok_or(Verdict::DropMalformed)?;
    *inner = EthHdr { dst: peer.vtep_mac, src: cfg.vtep_mac, ethertype: ETH_P_IPV4.to_be_bytes() };
    Ok(())
}
