//! Masquerade (`--ip-masq`): pods' traffic leaving the cluster network gets the
//! node's address as its source on the uplink's TC egress ([`tc_masq`]); replies get
//! the pod's back on the uplink's TC ingress ([`tc_unmasq`]), before the host stack.
//! Netfilter sits between the two and sees the pod's own addresses both ways, so its
//! conntrack (kube-proxy's, NetworkPolicy's) works as without masquerade.
//!
//! Flannel's rules decide what is masqueraded (see the README): a source in the
//! cluster network, a destination neither in the non-masquerade list (the cluster
//! network and `--non-masquerade-cidrs`) nor multicast, no kube-proxy masquerade
//! mark. Flows the outside opened to a pod stay untranslated both ways: the uplink's
//! ingress records them ([`note_inbound`]) as `FLAG_INBOUND` entries, which the
//! pod's replies find.
//!
//! The overlay case (Flannel's last rule): a flow from outside the cluster network
//! to another node's pod, routed through this node, gets this node's tunnel address
//! (`weft0`'s, the pod CIDR's network address, as `flannel.1`'s) as its source at
//! `weft0`'s egress before encapsulation ([`masq_to_tunnel`]), so the other node
//! answers through this one; the answer gets the client's address back right after
//! decapsulation ([`unmasq_from_tunnel`]), before the host stack sees it.
//!
//! The connection table is two LRU hashes (`weft_common::nat`): the pod's tuple →
//! the translated source, and the reply's tuple → the pod's. A new flow's port is
//! picked at random from the range (`--random-fully`), reserving the reply's tuple
//! with `BPF_NOEXIST`, so two flows can never share a reply tuple: a collision is a
//! retry, and `PORT_TRIES` collisions a counted drop. Checksums are updated by the
//! kernel's helpers, which know partial (offloaded) checksums from complete ones.
//!
//! Fragments: a datagram's later fragments carry no port. On the way out they get
//! the node's address like their first fragment (the receiver reassembles them
//! under it); on the way in a reply's fragments cannot be told apart, so its first
//! fragment is dropped and counted, and the rest expire in the host's queue.

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, BPF_NOEXIST},
    helpers::generated::{bpf_get_prandom_u32, bpf_ktime_get_ns},
    maps::lpm_trie::Key,
    programs::TcContext,
};
use weft_common::{
    Ipv4Octets,
    config::{DataplaneConfig, FLAG_MASQUERADE},
    counters::Verdict,
    nat::{FLAG_INBOUND, KUBE_PROXY_MASQ_MARK, NatEntry, NatKey, PORT_TRIES, STATE_CLOSING, STATE_ESTABLISHED, STATE_NEW},
    wire::{ETH_HLEN, ETH_P_IPV4, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, UDP_HLEN},
};

use crate::{
    csum,
    maps::{self, WEFT_NAT_IN, WEFT_NAT_OUT, WEFT_NO_MASQ},
    parse::{EthHdr, IcmpHdr, Ipv4Hdr, L4Ports, Packet, TcpHdr},
};

const ICMP_ECHO_REPLY: u8 = 0;
/// A TCP header without options.
const TCP_HLEN: usize = 20;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_ECHO: u8 = 8;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAMETERPROB: u8 = 12;
/// Offsets in the frame of the IPv4 source, destination and checksum.
const IP_SADDR: usize = ETH_HLEN + 12;
const IP_DADDR: usize = ETH_HLEN + 16;
const IP_CHECK: usize = ETH_HLEN + 10;

/// A packet's flow as the NAT tables see it, and where its fields are.
struct Flow {
    key: NatKey,
    /// Offset of the L4 header.
    l4: usize,
    /// Offset of the L4 checksum, if the protocol has one we keep.
    check: Option<usize>,
    /// TCP flags (0 for other protocols).
    tcp_flags: u8,
}

/// Which protocols are translated, and how: TCP and UDP by port, ICMP echo by
/// identifier; anything else by address alone (one flow per outside host). A TCP or
/// UDP header cut short of its checksum field (a header is whole or not at all: TCP
/// 20 bytes, UDP 8) is no flow: the packet passes untranslated, as every other
/// truncated one does, instead of taking a NAT entry and port and then failing the
/// checksum update (`nat_error`). Found by the reference-model fuzzing (issue 16).
#[inline(always)]
fn flow(pkt: Packet, ip: &Ipv4Hdr, l4: usize, outbound: bool) -> Option<Flow> {
    let mut key = NatKey { saddr: ip.saddr, daddr: ip.daddr, protocol: ip.protocol, ..Default::default() };
    let (check, tcp_flags) = match ip.protocol {
        IPPROTO_TCP => {
            pkt.header::<[u8; TCP_HLEN]>(l4)?;
            let tcp: &TcpHdr = pkt.header(l4)?;
            (key.sport, key.dport) = (tcp.source, tcp.dest);
            (Some(l4 + 16), tcp.flags)
        }
        IPPROTO_UDP => {
            pkt.header::<[u8; UDP_HLEN]>(l4)?;
            let ports: &L4Ports = pkt.header(l4)?;
            (key.sport, key.dport) = (ports.source, ports.dest);
            (Some(l4 + 6), 0)
        }
        IPPROTO_ICMP => {
            let icmp: &IcmpHdr = pkt.header(l4)?;
            match (icmp.kind, outbound) {
                (ICMP_ECHO, true) => key.sport = icmp.id,
                (ICMP_ECHO_REPLY, false) => key.dport = icmp.id,
                // Errors are translated by what they quote (`icmp_error`); the rest
                // passes as it is.
                _ => return None,
            }
            (Some(l4 + 2), 0)
        }
        _ => (None, 0),
    };
    Some(Flow { key, l4, check, tcp_flags })
}

#[inline(always)]
fn in_cluster(addr: Ipv4Octets, cfg: &DataplaneConfig) -> bool {
    let prefix = u32::from(cfg.cluster_prefix);
    if prefix == 0 || prefix > 32 {
        return false;
    }
    let mask = u32::MAX << (32 - prefix);
    u32::from_be_bytes(addr) & mask == u32::from_be_bytes(cfg.cluster_net) & mask
}

#[inline(always)]
fn now() -> u64 {
    // SAFETY: plain helper call.
    unsafe { bpf_ktime_get_ns() }
}

/// The TCP state after a packet with `flags`, from `state`.
#[inline(always)]
fn next_state(state: u8, tcp_flags: u8, reply: bool) -> u8 {
    if tcp_flags & (TcpHdr::FIN | TcpHdr::RST) != 0 {
        STATE_CLOSING
    } else if reply && state == STATE_NEW {
        STATE_ESTABLISHED
    } else {
        state
    }
}

/// The uplink's TC egress: masquerades what Flannel's rules would.
pub fn tc_masq(ctx: &TcContext) -> Result<Verdict, Verdict> {
    let Some(cfg) = maps::config() else {
        return Ok(Verdict::Passed);
    };
    if cfg.flags & FLAG_MASQUERADE == 0 {
        return Ok(Verdict::Passed);
    }
    let pkt = Packet::new(ctx.data(), ctx.data_end());
    let Some(eth) = pkt.header::<EthHdr>(0) else {
        return Ok(Verdict::Passed);
    };
    if u16::from_be_bytes(eth.ethertype) != ETH_P_IPV4 {
        return Ok(Verdict::Passed);
    }
    let Some(ip) = pkt.header::<Ipv4Hdr>(ETH_HLEN) else {
        return Ok(Verdict::Passed);
    };
    // SAFETY: reading a field of the context the kernel passed us.
    let mark = unsafe { (*ctx.skb.skb).mark };
    if !ip.is_valid()
        || !in_cluster(ip.saddr, cfg)
        || ip.daddr[0] & 0xf0 == 0xe0
        || mark & KUBE_PROXY_MASQ_MARK != 0
        || WEFT_NO_MASQ.get(&Key::new(32, ip.daddr)).is_some()
    {
        return Ok(Verdict::Passed);
    }
    masquerade(ctx, pkt, ip, cfg, cfg.masq_ip)
}

/// `weft0`'s TC egress, before encapsulation (`--ip-masq`): a flow from outside the
/// cluster network to another node's pod leaves with this node's tunnel address.
/// Traffic kube-proxy marked is left to kube-proxy's own MASQUERADE, as on the uplink.
#[inline(always)]
pub fn masq_to_tunnel(ctx: &TcContext, cfg: &DataplaneConfig, pkt: Packet, ip: &Ipv4Hdr) -> Result<(), Verdict> {
    if cfg.flags & FLAG_MASQUERADE == 0 || cfg.pod_prefix == 0 {
        return Ok(());
    }
    // Pods' own traffic (nearly all of weft0's) leaves on the first test.
    if in_cluster(ip.saddr, cfg) || !in_cluster(ip.daddr, cfg) {
        return Ok(());
    }
    // SAFETY: reading a field of the context the kernel passed us.
    if unsafe { (*ctx.skb.skb).mark } & KUBE_PROXY_MASQ_MARK != 0 {
        return Ok(());
    }
    masquerade(ctx, pkt, ip, cfg, cfg.pod_cidr).map(|_| ())
}

/// Source NAT of `ip`'s packet to `to` (the uplink's address or the tunnel's): the
/// flow's entry, or a new one with a free port; then the rewrite.
#[inline(always)]
fn masquerade(ctx: &TcContext, pkt: Packet, ip: &Ipv4Hdr, cfg: &DataplaneConfig, to: Ipv4Octets) -> Result<Verdict, Verdict> {
    let saddr = ip.saddr;
    if ip.is_later_fragment() {
        rewrite_addr(ctx, IP_SADDR, saddr, to, None, IPPROTO_UDP)?;
        return Ok(Verdict::Masqueraded);
    }
    let l4 = ETH_HLEN + ip.header_len();
    let Some(flow) = flow(pkt, ip, l4, true) else {
        return Ok(Verdict::Passed);
    };
    let protocol = ip.protocol;
    let t = now();
    let nat = match WEFT_NAT_OUT.get_ptr_mut(flow.key) {
        Some(entry) => {
            // SAFETY: a live map value; concurrent writers only store whole fields.
            let e = unsafe { &mut *entry };
            e.seen_ns = t;
            e.state = next_state(e.state, flow.tcp_flags, false);
            if e.flags & FLAG_INBOUND != 0 {
                return Ok(Verdict::Passed);
            }
            keep_reply_entry(&flow.key, e, cfg, to, t)?
        }
        None => new_flow(&flow.key, cfg, to, t, flow.tcp_flags)?,
    };
    if protocol == IPPROTO_ICMP {
        rewrite_port(ctx, flow.l4 + 4, flow.key.sport, nat.port, flow.check, IPPROTO_ICMP)?;
    } else if flow.check.is_some() {
        rewrite_port(ctx, flow.l4, flow.key.sport, nat.port, flow.check, protocol)?;
    }
    rewrite_addr(ctx, IP_SADDR, saddr, nat.addr, flow.check, protocol)?;
    Ok(Verdict::Masqueraded)
}

/// The reply's tuple for a translation: from the outside to (`addr`, `port`).
#[inline(always)]
fn reply_key(orig: &NatKey, addr: Ipv4Octets, port: [u8; 2]) -> NatKey {
    let mut key = NatKey { saddr: orig.daddr, daddr: addr, protocol: orig.protocol, ..Default::default() };
    if orig.protocol == IPPROTO_ICMP {
        key.dport = port; // an echo reply carries the identifier we sent
    } else {
        (key.sport, key.dport) = (orig.dport, port);
    }
    key
}

/// A new flow: a NAT port whose reply tuple is free, reserved in `WEFT_NAT_IN`, then
/// the flow's own entry.
#[inline(always)]
fn new_flow(orig: &NatKey, cfg: &DataplaneConfig, to: Ipv4Octets, t: u64, tcp_flags: u8) -> Result<NatEntry, Verdict> {
    let back = NatEntry { addr: orig.saddr, port: orig.sport, created_ns: t, seen_ns: t, ..Default::default() };
    let port = reserve(orig, cfg, to, &back)?;
    let state = next_state(STATE_NEW, tcp_flags, false);
    let nat = NatEntry { addr: to, port, state, flags: 0, created_ns: t, seen_ns: t };
    if WEFT_NAT_OUT.insert(orig, nat, u64::from(BPF_ANY)).is_err() {
        let _ = WEFT_NAT_IN.remove(reply_key(orig, to, port));
        return Err(Verdict::DropNatError);
    }
    Ok(nat)
}

/// Picks a free reply tuple to `to` at random and reserves it for `back`.
#[inline(always)]
fn reserve(orig: &NatKey, cfg: &DataplaneConfig, to: Ipv4Octets, back: &NatEntry) -> Result<[u8; 2], Verdict> {
    // Protocols without ports have one tuple per outside host.
    let ported = matches!(orig.protocol, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMP);
    let span1 = u32::from(cfg.nat_port_max.saturating_sub(cfg.nat_port_min)) + 1;
    let span2 = if cfg.nat_port_max2 == 0 { 0 } else { u32::from(cfg.nat_port_max2.saturating_sub(cfg.nat_port_min2)) + 1 };
    for _ in 0..PORT_TRIES {
        let port = if ported {
            // SAFETY: plain helper call.
            let r = unsafe { bpf_get_prandom_u32() } % (span1 + span2);
            let port = if r < span1 {
                cfg.nat_port_min.wrapping_add(r as u16)
            } else {
                cfg.nat_port_min2.wrapping_add((r - span1) as u16)
            };
            port.to_be_bytes()
        } else {
            [0; 2]
        };
        // Never the VXLAN port on our underlay address: decap takes every UDP datagram
        // to it for a tunnel frame before this flow's reply could be translated (the
        // default ranges hold 8472; Flannel's conntrack un-NATs before its vxlan socket).
        // (No `continue`: Linux 6.1's verifier refused the loop it compiled to, a
        // fall-through back-edge.)
        let tunnel_port = orig.protocol == IPPROTO_UDP && to == cfg.underlay_ip && port == cfg.udp_port.to_be_bytes();
        if !tunnel_port && WEFT_NAT_IN.insert(reply_key(orig, to, port), *back, u64::from(BPF_NOEXIST)).is_ok() {
            return Ok(port);
        }
        if !ported {
            break;
        }
    }
    Err(Verdict::DropNatExhausted)
}

/// An existing flow whose reply entry the LRU may have evicted: put it back (same
/// port if still free, else a new one).
#[inline(always)]
fn keep_reply_entry(orig: &NatKey, e: &mut NatEntry, cfg: &DataplaneConfig, to: Ipv4Octets, t: u64) -> Result<NatEntry, Verdict> {
    let key = reply_key(orig, e.addr, e.port);
    if WEFT_NAT_IN.get_ptr(key).is_some() {
        return Ok(*e);
    }
    let back = NatEntry { addr: orig.saddr, port: orig.sport, created_ns: e.created_ns, seen_ns: t, ..Default::default() };
    if WEFT_NAT_IN.insert(key, back, u64::from(BPF_NOEXIST)).is_err() {
        e.port = reserve(orig, cfg, to, &back)?;
        e.addr = to;
    }
    Ok(*e)
}

/// The uplink's TC ingress, for what is not VXLAN: a reply to a masqueraded flow
/// gets its pod's address and port back; a flow the outside opens to a pod is noted.
#[inline(always)]
pub fn tc_unmasq(ctx: &TcContext, cfg: &DataplaneConfig) -> Result<Verdict, Verdict> {
    if cfg.flags & FLAG_MASQUERADE == 0 {
        return Ok(Verdict::Passed);
    }
    let pkt = Packet::new(ctx.data(), ctx.data_end());
    let Some(eth) = pkt.header::<EthHdr>(0) else {
        return Ok(Verdict::Passed);
    };
    if u16::from_be_bytes(eth.ethertype) != ETH_P_IPV4 {
        return Ok(Verdict::Passed);
    }
    let Some(ip) = pkt.header::<Ipv4Hdr>(ETH_HLEN) else {
        return Ok(Verdict::Passed);
    };
    if !ip.is_valid() || ip.is_later_fragment() {
        return Ok(Verdict::Passed);
    }
    let l4 = ETH_HLEN + ip.header_len();
    if ip.daddr != cfg.masq_ip {
        if in_cluster(ip.daddr, cfg) && !in_cluster(ip.saddr, cfg) {
            note_inbound(pkt, ip, l4)?;
        }
        return Ok(Verdict::Passed);
    }
    unmasq(ctx, pkt, ip, l4)
}

/// Right after decapsulation (`--ip-masq`): an answer to a flow [`masq_to_tunnel`]
/// translated (to this node's tunnel address) gets its client's address back.
#[inline(always)]
pub fn unmasq_from_tunnel(ctx: &TcContext, cfg: &DataplaneConfig) -> Result<(), Verdict> {
    if cfg.flags & FLAG_MASQUERADE == 0 || cfg.pod_prefix == 0 {
        return Ok(());
    }
    let pkt = Packet::new(ctx.data(), ctx.data_end());
    let Some(ip) = pkt.header::<Ipv4Hdr>(ETH_HLEN) else {
        return Ok(());
    };
    if ip.daddr != cfg.pod_cidr || !ip.is_valid() || ip.is_later_fragment() {
        return Ok(());
    }
    unmasq(ctx, pkt, ip, ETH_HLEN + ip.header_len()).map(|_| ())
}

/// Destination NAT of a packet to a translated address (`ip`'s destination) back to
/// its flow's original source, if it belongs to one; ICMP errors by what they quote.
#[inline(always)]
fn unmasq(ctx: &TcContext, pkt: Packet, ip: &Ipv4Hdr, l4: usize) -> Result<Verdict, Verdict> {
    if ip.protocol == IPPROTO_ICMP
        && let Some(icmp) = pkt.header::<IcmpHdr>(l4)
        && matches!(icmp.kind, ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETERPROB)
    {
        return icmp_error(ctx, pkt, l4);
    }
    let Some(flow) = flow(pkt, ip, l4, false) else {
        return Ok(Verdict::Passed);
    };
    let Some(back) = WEFT_NAT_IN.get_ptr(flow.key) else {
        return Ok(Verdict::Passed);
    };
    if ip.is_fragment() {
        return Err(Verdict::DropNatFragment);
    }
    // SAFETY: a live map value, copied out.
    let back = unsafe { *back };
    let (daddr, protocol) = (ip.daddr, ip.protocol);
    let t = now();
    let orig = NatKey {
        saddr: back.addr,
        daddr: flow.key.saddr,
        sport: back.port,
        dport: if protocol == IPPROTO_ICMP { [0; 2] } else { flow.key.sport },
        protocol,
        _pad: [0; 3],
    };
    if let Some(entry) = WEFT_NAT_OUT.get_ptr_mut(orig) {
        // SAFETY: a live map value; concurrent writers only store whole fields.
        let e = unsafe { &mut *entry };
        e.seen_ns = t;
        e.state = next_state(e.state, flow.tcp_flags, true);
    }
    if protocol == IPPROTO_ICMP {
        rewrite_port(ctx, flow.l4 + 4, flow.key.dport, back.port, flow.check, IPPROTO_ICMP)?;
    } else if flow.check.is_some() {
        rewrite_port(ctx, flow.l4 + 2, flow.key.dport, back.port, flow.check, protocol)?;
    }
    rewrite_addr(ctx, IP_DADDR, daddr, back.addr, flow.check, protocol)?;
    Ok(Verdict::Unmasqueraded)
}

/// An ICMP error to the node's address about a packet a pod sent (its quoted
/// header carries the node's address and NAT port as source): the error goes to the
/// pod with the quote translated back — outer destination, quoted source address
/// and port, and the checksums of the quoted IPv4 and L4 headers and of the ICMP
/// message — so path MTU discovery (fragmentation needed) and traceroute (time
/// exceeded) work through the masquerade, as netfilter's NAT makes them work.
/// An error about anything else passes to the stack.
#[inline(always)]
fn icmp_error(ctx: &TcContext, pkt: Packet, l4: usize) -> Result<Verdict, Verdict> {
    // The quoted packet: its IPv4 header, then at least 8 bytes of its L4 header.
    let q = l4 + 8;
    let Some(quoted) = pkt.header::<Ipv4Hdr>(q) else {
        return Ok(Verdict::Passed);
    };
    if !quoted.is_valid() || quoted.is_later_fragment() {
        return Ok(Verdict::Passed);
    }
    let ql4 = q + quoted.header_len();
    let (protocol, masq, remote, quoted_ip_check) = (quoted.protocol, quoted.saddr, quoted.daddr, quoted.check);
    // The reply tuple of the quoted packet's flow, and where its port and checksum are.
    let mut key = NatKey { saddr: remote, daddr: masq, protocol, ..Default::default() };
    let (port_off, check_off) = match protocol {
        IPPROTO_TCP | IPPROTO_UDP => {
            let Some(ports) = pkt.header::<L4Ports>(ql4) else { return Ok(Verdict::Passed) };
            (key.sport, key.dport) = (ports.dest, ports.source);
            (ql4, if protocol == IPPROTO_UDP { ql4 + 6 } else { ql4 + 16 })
        }
        IPPROTO_ICMP => {
            let Some(echo) = pkt.header::<IcmpHdr>(ql4) else { return Ok(Verdict::Passed) };
            if echo.kind != ICMP_ECHO {
                return Ok(Verdict::Passed);
            }
            key.dport = echo.id;
            (ql4 + 4, ql4 + 2)
        }
        _ => return Ok(Verdict::Passed),
    };
    let Some(back) = WEFT_NAT_IN.get_ptr(key) else {
        return Ok(Verdict::Passed);
    };
    // SAFETY: a live map value, copied out.
    let back = unsafe { *back };
    let nat_port = key.dport;
    // The quoted L4 checksum, when the quote reaches it (TCP's often does not).
    let quoted_check = pkt.header::<[u8; 2]>(check_off).copied();
    let Some(outer) = pkt.header::<Ipv4Hdr>(ETH_HLEN) else {
        return Ok(Verdict::Passed);
    };
    let outer_daddr = outer.daddr;
    // Packet pointers die with the first store: everything is read above.
    let icmp_check = l4 + 2;
    let fix_icmp =
        |from: u64, to: u64, size: u64| ctx.l4_csum_replace(icmp_check, from, to, size).map_err(|_| Verdict::DropNatError);
    let (old_addr, new_addr) = (u64::from(u32::from_ne_bytes(masq)), u64::from(u32::from_ne_bytes(back.addr)));
    let (old_port, new_port) = (u64::from(u16::from_ne_bytes(nat_port)), u64::from(u16::from_ne_bytes(back.port)));
    if let Some(check) = quoted_check
        && !(protocol == IPPROTO_UDP && check == [0, 0])
    {
        let mut new = csum::replace16(check, u16::from_be_bytes(nat_port), u16::from_be_bytes(back.port));
        if protocol != IPPROTO_ICMP {
            new = csum::replace16(new, u16::from_be_bytes([masq[0], masq[1]]), u16::from_be_bytes([back.addr[0], back.addr[1]]));
            new = csum::replace16(new, u16::from_be_bytes([masq[2], masq[3]]), u16::from_be_bytes([back.addr[2], back.addr[3]]));
        }
        fix_icmp(u64::from(u16::from_ne_bytes(check)), u64::from(u16::from_ne_bytes(new)), 2)?;
        ctx.store(check_off, &new, 0).map_err(|_| Verdict::DropNatError)?;
    }
    fix_icmp(old_port, new_port, 2)?;
    ctx.store(port_off, &back.port, 0).map_err(|_| Verdict::DropNatError)?;
    let mut ip_check = csum::replace16(
        quoted_ip_check,
        u16::from_be_bytes([masq[0], masq[1]]),
        u16::from_be_bytes([back.addr[0], back.addr[1]]),
    );
    ip_check =
        csum::replace16(ip_check, u16::from_be_bytes([masq[2], masq[3]]), u16::from_be_bytes([back.addr[2], back.addr[3]]));
    fix_icmp(u64::from(u16::from_ne_bytes(quoted_ip_check)), u64::from(u16::from_ne_bytes(ip_check)), 2)?;
    ctx.store(q + 10, &ip_check, 0).map_err(|_| Verdict::DropNatError)?;
    fix_icmp(old_addr, new_addr, 4)?;
    ctx.store(q + 12, &back.addr, 0).map_err(|_| Verdict::DropNatError)?;
    rewrite_addr(ctx, IP_DADDR, outer_daddr, back.addr, None, IPPROTO_ICMP)?;
    Ok(Verdict::Unmasqueraded)
}

/// Notes a flow from the outside to a pod, so that the pod's replies leave untranslated.
#[inline(always)]
fn note_inbound(pkt: Packet, ip: &Ipv4Hdr, l4: usize) -> Result<(), Verdict> {
    let Some(flow) = flow(pkt, ip, l4, false) else {
        return Ok(());
    };
    let k = &flow.key;
    // An echo request from outside is not a flow key (its reply is not translated).
    if k.protocol == IPPROTO_ICMP {
        return Ok(());
    }
    // The pod's replies, as they will leave.
    let reply = NatKey { saddr: k.daddr, daddr: k.saddr, sport: k.dport, dport: k.sport, protocol: k.protocol, _pad: [0; 3] };
    let t = now();
    match WEFT_NAT_OUT.get_ptr_mut(reply) {
        // SAFETY: a live map value; concurrent writers only store whole fields.
        Some(e) => unsafe {
            (*e).seen_ns = t;
            (*e).state = next_state((*e).state, flow.tcp_flags, false);
        },
        None => {
            let state = next_state(STATE_NEW, flow.tcp_flags, false);
            let e = NatEntry { addr: k.daddr, port: reply.sport, state, flags: FLAG_INBOUND, created_ns: t, seen_ns: t };
            WEFT_NAT_OUT.insert(reply, e, u64::from(BPF_ANY)).map_err(|_| Verdict::DropNatError)?;
        }
    }
    Ok(())
}

/// Writes `new` over the address at `off`, fixing the IPv4 checksum and, with
/// `check`, the L4 checksum's pseudo-header (not ICMP's, which has none).
#[inline(always)]
fn rewrite_addr(
    ctx: &TcContext,
    off: usize,
    old: Ipv4Octets,
    new: Ipv4Octets,
    check: Option<usize>,
    protocol: u8,
) -> Result<(), Verdict> {
    let (from, to) = (u64::from(u32::from_ne_bytes(old)), u64::from(u32::from_ne_bytes(new)));
    if let Some(c) = check
        && protocol != IPPROTO_ICMP
    {
        let flags = u64::from(BPF_F_PSEUDO_HDR) | 4 | mangled_0(protocol);
        ctx.l4_csum_replace(c, from, to, flags).map_err(|_| Verdict::DropNatError)?;
    }
    ctx.l3_csum_replace(IP_CHECK, from, to, 4).map_err(|_| Verdict::DropNatError)?;
    ctx.store(off, &new, 0).map_err(|_| Verdict::DropNatError)
}

/// Writes `new` over the port (or identifier) at `off`, fixing the L4 checksum.
#[inline(always)]
fn rewrite_port(
    ctx: &TcContext,
    off: usize,
    old: [u8; 2],
    new: [u8; 2],
    check: Option<usize>,
    protocol: u8,
) -> Result<(), Verdict> {
    if old == new {
        return Ok(());
    }
    if let Some(c) = check {
        let (from, to) = (u64::from(u16::from_ne_bytes(old)), u64::from(u16::from_ne_bytes(new)));
        ctx.l4_csum_replace(c, from, to, 2 | mangled_0(protocol)).map_err(|_| Verdict::DropNatError)?;
    }
    ctx.store(off, &new, 0).map_err(|_| Verdict::DropNatError)
}

/// UDP's checksum 0 means "none": the helper keeps it 0, and writes a computed 0 as 0xffff.
#[inline(always)]
fn mangled_0(protocol: u8) -> u64 {
    if protocol == IPPROTO_UDP { u64::from(BPF_F_MARK_MANGLED_0) } else { 0 }
}
