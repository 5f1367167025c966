//! Frames for each program: valid ones as its hook sees them (built here, not by the
//! programs' code), then mutated — truncated at a header boundary or anywhere, bad
//! IPv4 and UDP lengths, IP options, fragments, VLAN tags, other VNIs, bad checksums,
//! wrong MACs, TTL 0 and 1, unknown peers, replies and ICMP errors to masqueraded
//! flows — and the config and `skb->mark` to run them with.

use std::net::Ipv4Addr;

use weft_common::config::{
    DataplaneConfig, FLAG_BRIDGE_BYPASS, FLAG_FAST_PATH, FLAG_MASQUERADE, FLAG_SOURCE_CHECK, FLAG_XDP_DECAP,
};

use super::model::{ICMP, NatOut, Prog, TCP, UDP, World};
use crate::{
    packet::checksum,
    testrun::{A_IP, A_MAC, B_IP, B_MAC, ROGUE_IP, UPLINK_MAC},
};

/// SplitMix64: small, seedable, and the same on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// True with probability `pct` percent.
    pub fn pct(&mut self, pct: u64) -> bool {
        self.next_u64() % 100 < pct
    }
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

pub const C_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 3);
pub const C_MAC: [u8; 6] = [0x0a, 0x58, 0x0a, 0xf4, 0x03, 0x00];
pub const POD_A_MAC: [u8; 6] = [0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x05];
pub const POD_A6_MAC: [u8; 6] = [0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x06];
pub const GW_A_MAC: [u8; 6] = [0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x01];
pub const TUNNEL_A: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 0);
pub const EXT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

const LOCAL: [Ipv4Addr; 4] = [Ipv4Addr::new(10, 244, 1, 5), Ipv4Addr::new(10, 244, 1, 6), Ipv4Addr::new(10, 244, 1, 9), TUNNEL_A];
const REMOTE: [Ipv4Addr; 4] =
    [Ipv4Addr::new(10, 244, 2, 7), Ipv4Addr::new(10, 244, 2, 0), Ipv4Addr::new(10, 244, 3, 4), Ipv4Addr::new(10, 244, 3, 0)];
const OTHER: [Ipv4Addr; 11] = [
    Ipv4Addr::new(10, 244, 9, 9),
    Ipv4Addr::new(10, 96, 0, 10),
    EXT,
    Ipv4Addr::new(8, 8, 8, 8),
    Ipv4Addr::new(203, 0, 113, 5),
    Ipv4Addr::new(239, 1, 1, 1),
    Ipv4Addr::BROADCAST,
    A_IP,
    B_IP,
    C_IP,
    ROGUE_IP,
];
const SPORTS: [u16; 3] = [40000, 40001, 40002];
const DPORTS: [u16; 4] = [80, 5000, 53, 8472];

/// A frame for one program, with the config and mark to run it with.
pub struct Case {
    pub frame: Vec<u8>,
    pub mark: u32,
    pub cfg: DataplaneConfig,
}

/// Node a's config as the fuzzing installs it, before per-case flags.
pub fn base_config() -> DataplaneConfig {
    DataplaneConfig {
        weft0_mtu: 1450,
        masq_ip: A_IP.octets(),
        cluster_net: [10, 244, 0, 0],
        cluster_prefix: 16,
        nat_port_min: 1024,
        nat_port_max: 32767,
        nat_port_min2: 61000,
        nat_port_max2: 65535,
        ..crate::testrun::config()
    }
}

/// A packet under construction, with the offsets truncation likes to cut at.
struct Built {
    bytes: Vec<u8>,
    cuts: Vec<usize>,
}

fn addr(rng: &mut Rng, local: u64, remote: u64) -> Ipv4Addr {
    let r = rng.next_u64() % 100;
    if r < local {
        rng.pick(&LOCAL)
    } else if r < local + remote {
        rng.pick(&REMOTE)
    } else {
        rng.pick(&OTHER)
    }
}

fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16) -> Vec<u8> {
    [&dst[..], &src[..], &ethertype.to_be_bytes()[..]].concat()
}

/// The L4 checksum over the pseudo-header and `seg`.
fn l4_checksum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, seg: &[u8]) -> u16 {
    let mut p = Vec::with_capacity(12 + seg.len());
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&[0, proto]);
    p.extend_from_slice(&(seg.len() as u16).to_be_bytes());
    p.extend_from_slice(seg);
    checksum(&p)
}

fn payload(rng: &mut Rng) -> Vec<u8> {
    let n = if rng.pct(4) { 1380 + rng.below(120) } else { rng.below(48) };
    rng.bytes(n)
}

/// An L4 segment of `proto` from `src` to `dst` (ports from small pools, so flows repeat).
fn l4(rng: &mut Rng, src: Ipv4Addr, dst: Ipv4Addr, proto: u8, ports: Option<(u16, u16)>) -> Vec<u8> {
    let (sport, dport) = ports.unwrap_or_else(|| (rng.pick(&SPORTS), rng.pick(&DPORTS)));
    match proto {
        TCP => {
            let opts = if rng.pct(15) { 4 * (1 + rng.below(3)) } else { 0 };
            let flags = rng.pick(&[0x02u8, 0x10, 0x18, 0x18, 0x11, 0x04]);
            let data = if flags == 0x18 || rng.pct(20) { payload(rng) } else { vec![] };
            let mut t = Vec::new();
            t.extend_from_slice(&sport.to_be_bytes());
            t.extend_from_slice(&dport.to_be_bytes());
            t.extend_from_slice(&rng.bytes(8));
            t.push((((20 + opts) / 4) as u8) << 4);
            t.push(flags);
            t.extend_from_slice(&[0xfa, 0xf0, 0, 0, 0, 0]);
            t.extend(std::iter::repeat_n(1u8, opts));
            t.extend_from_slice(&data);
            let c = l4_checksum(src, dst, TCP, &t);
            t[16..18].copy_from_slice(&c.to_be_bytes());
            t
        }
        UDP => {
            let data = payload(rng);
            let mut u = Vec::new();
            u.extend_from_slice(&sport.to_be_bytes());
            u.extend_from_slice(&dport.to_be_bytes());
            u.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
            u.extend_from_slice(&[0, 0]);
            u.extend_from_slice(&data);
            if rng.pct(80) {
                let c = l4_checksum(src, dst, UDP, &u);
                u[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
            }
            u
        }
        ICMP => {
            let kind = if rng.pct(50) { 8 } else { rng.pick(&[0u8, 0, 3, 11, 5]) };
            let mut i = vec![kind, 0, 0, 0];
            i.extend_from_slice(&sport.to_be_bytes());
            i.extend_from_slice(&[0, 1]);
            if kind == 3 || kind == 11 {
                let quoted = l4(rng, dst, src, UDP, None);
                i.extend_from_slice(&ipv4(rng, dst, src, UDP, &quoted[..8]).bytes);
            } else {
                i.extend_from_slice(&payload(rng));
            }
            let c = checksum(&i);
            i[2..4].copy_from_slice(&c.to_be_bytes());
            i
        }
        _ => payload(rng),
    }
}

fn proto(rng: &mut Rng) -> u8 {
    rng.pick(&[TCP, TCP, TCP, UDP, UDP, UDP, ICMP, ICMP, 47])
}

/// An IPv4 packet around `seg`: options, TOS/ECN, TTL and fragment bits at random;
/// lengths and checksum right (mutations break them later).
fn ipv4(rng: &mut Rng, src: Ipv4Addr, dst: Ipv4Addr, proto: u8, seg: &[u8]) -> Built {
    let opts = if rng.pct(8) { 4 * (1 + rng.below(10)) } else { 0 };
    let hlen = 20 + opts;
    let tos = if rng.pct(30) { rng.next_u64() as u8 } else { rng.pick(&[0u8, 1, 2, 3]) };
    let ttl = if rng.pct(80) { 64 } else { rng.pick(&[0u8, 1, 2, 255]) };
    let frag: u16 =
        if rng.pct(85) { rng.pick(&[0x4000u16, 0]) } else { rng.pick(&[0x2000u16, 185, 0x2000 | 185, 0x4000 | 0x2000]) };
    let mut h = vec![0x40 | (hlen / 4) as u8, tos];
    h.extend_from_slice(&((hlen + seg.len()) as u16).to_be_bytes());
    h.extend_from_slice(&(rng.next_u64() as u16).to_be_bytes());
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[ttl, proto, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend(std::iter::repeat_n(1u8, opts));
    let c = checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(seg);
    Built { bytes: h, cuts: vec![0, 10, 20, hlen, hlen + 4, hlen + 8, hlen + 14, hlen + 18, hlen + 20] }
}

/// `ip` behind an Ethernet header.
fn framed(dst: [u8; 6], src: [u8; 6], ip: Built) -> Built {
    let mut bytes = eth(dst, src, 0x0800);
    bytes.extend_from_slice(&ip.bytes);
    Built { bytes, cuts: ip.cuts.iter().map(|c| c + 14).collect() }
}

fn packet(rng: &mut Rng, src: Ipv4Addr, dst: Ipv4Addr) -> Built {
    let p = proto(rng);
    let seg = l4(rng, src, dst, p, None);
    ipv4(rng, src, dst, p, &seg)
}

/// VXLAN on the underlay around an inner Ethernet frame, from `from`.
fn vxlan(rng: &mut Rng, from: Ipv4Addr, from_mac: [u8; 6], inner: Built) -> Built {
    let dport = if rng.pct(92) { 8472 } else { rng.pick(&[4789u16, 8473]) };
    let vni: u32 = if rng.pct(92) { 1 } else { rng.pick(&[0u32, 2, 0xffffff]) };
    let flags = if rng.pct(95) { 0x08 } else { rng.pick(&[0u8, 0x80]) };
    let inner_dst = if rng.pct(90) { A_MAC } else { rng.pick(&[UPLINK_MAC, [0xff; 6]]) };
    let inner_type: u16 = if rng.pct(96) { 0x0800 } else { rng.pick(&[0x0806u16, 0x86dd, 0x8100]) };
    let mut v = eth(inner_dst, from_mac, inner_type);
    v.extend_from_slice(&inner.bytes);
    let v = [&[flags, 0, 0, 0][..], &vni.to_be_bytes()[1..], &[0], &v].concat();
    let mut u = Vec::new();
    u.extend_from_slice(&(49152 + rng.below(16384) as u16).to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + v.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(&v);
    let dst = if rng.pct(92) { A_IP } else { rng.pick(&[B_IP, Ipv4Addr::new(198, 19, 0, 9)]) };
    let mut outer = ipv4(rng, from, dst, UDP, &u);
    if rng.pct(5) {
        outer.bytes[1] |= 3; // CE on the way
        fix_ip_checksum(&mut outer.bytes, 0);
    }
    let hlen = usize::from(outer.bytes[0] & 0x0f) * 4;
    let mut f = framed(UPLINK_MAC, [0x02, 0, 0, 0, 0, 0xbb], outer);
    let inner_off = 14 + hlen + 8 + 8 + 14;
    f.cuts.extend([14 + hlen + 8 + 4, inner_off - 14, inner_off - 2]);
    f.cuts.extend(inner.cuts.iter().map(|c| c + inner_off));
    f
}

fn fix_ip_checksum(ip: &mut [u8], off: usize) {
    let hlen = usize::from(ip[off] & 0x0f) * 4;
    if hlen < 20 || ip.len() < off + hlen {
        return;
    }
    ip[off + 10..off + 12].copy_from_slice(&[0, 0]);
    let c = checksum(&ip[off..off + hlen]);
    ip[off + 10..off + 12].copy_from_slice(&c.to_be_bytes());
}

/// A reply from the outside to one of the world's translations (or an ICMP error
/// quoting a translated packet), as it arrives: plain on the uplink when translated
/// to the node's address, in VXLAN from the pod's node when to the tunnel address.
fn nat_reply(rng: &mut Rng, w: &World) -> Option<Built> {
    let flows: Vec<_> =
        w.nat_out.iter().filter_map(|(k, v)| if let NatOut::To(a, p) = v { Some((*k, *a, *p)) } else { None }).collect();
    if flows.is_empty() {
        return None;
    }
    let ((_, remote, _, dport, p), to, port) = flows[rng.below(flows.len())];
    let ip = if rng.pct(75) {
        let seg = match p {
            ICMP => {
                let mut i = vec![0, 0, 0, 0];
                i.extend_from_slice(&port.to_be_bytes());
                i.extend_from_slice(&[0, 1]);
                i.extend_from_slice(&payload(rng));
                let c = checksum(&i);
                i[2..4].copy_from_slice(&c.to_be_bytes());
                i
            }
            TCP | UDP => l4(rng, remote, to, p, Some((dport, port))),
            _ => payload(rng),
        };
        ipv4(rng, remote, to, p, &seg)
    } else {
        // An ICMP error from a router, quoting what left translated.
        let quoted_seg = match p {
            ICMP => {
                let mut i = vec![8, 0, 0, 0];
                i.extend_from_slice(&port.to_be_bytes());
                i.extend_from_slice(&[0, 1]);
                let c = checksum(&i);
                i[2..4].copy_from_slice(&c.to_be_bytes());
                i
            }
            TCP | UDP => l4(rng, to, remote, p, Some((port, dport))),
            _ => payload(rng),
        };
        let mut quote = ipv4(rng, to, remote, p, &quoted_seg).bytes;
        let qhlen = usize::from(quote[0] & 0x0f) * 4;
        quote.truncate(qhlen + rng.pick(&[8usize, 8, 20, 28]));
        let mut i = vec![rng.pick(&[3u8, 11, 12]), rng.pick(&[0u8, 4]), 0, 0, 0, 0, 0x05, 0x78];
        i.extend_from_slice(&quote);
        let c = checksum(&i);
        i[2..4].copy_from_slice(&c.to_be_bytes());
        ipv4(rng, Ipv4Addr::new(192, 0, 2, 1), to, ICMP, &i)
    };
    Some(if to == A_IP {
        framed(UPLINK_MAC, [0x02, 0, 0, 0, 0, 0x01], ip)
    } else {
        let (from, mac) =
            if w.tunnel(remote).is_some_and(|t| t.underlay_ip == C_IP.octets()) { (C_IP, C_MAC) } else { (B_IP, B_MAC) };
        vxlan(rng, from, mac, ip)
    })
}

/// A frame as the uplink receives it.
fn uplink_frame(rng: &mut Rng, w: &World) -> Built {
    let r = rng.below(100);
    if r < 20
        && let Some(f) = nat_reply(rng, w)
    {
        return f;
    }
    if r < 65 {
        let (from, mac) =
            rng.pick(&[(B_IP, B_MAC), (B_IP, B_MAC), (C_IP, C_MAC), (ROGUE_IP, [2, 0, 0, 0, 0, 0x66]), (A_IP, A_MAC)]);
        let src = if rng.pct(80) { addr(rng, 10, 70) } else { rng.pick(&[from, B_IP, C_IP, EXT]) };
        let dst = addr(rng, 65, 20);
        let inner = packet(rng, src, dst);
        return vxlan(rng, from, mac, inner);
    }
    if r < 80 {
        // The outside to a pod (noted, with --ip-masq), or to the node.
        let src = rng.pick(&[EXT, Ipv4Addr::new(8, 8, 8, 8), B_IP]);
        let dst = addr(rng, 60, 20);
        return framed(UPLINK_MAC, [0x02, 0, 0, 0, 0, 0x01], packet(rng, src, dst));
    }
    if r < 92 {
        // XDP's inner frame (or a forged one) to our VtepMAC.
        let src = addr(rng, 0, 80);
        let dst = addr(rng, 80, 10);
        let mut f = framed(A_MAC, B_MAC, packet(rng, src, dst));
        if rng.pct(10) {
            f.bytes[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        }
        return f;
    }
    // Not IPv4 at all.
    let t = rng.pick(&[0x0806u16, 0x86dd, 0x88cc, 0x0042]);
    let n = 28 + rng.below(60);
    let body = rng.bytes(n);
    Built { bytes: [eth(UPLINK_MAC, B_MAC, t), body].concat(), cuts: vec![14, 20] }
}

/// The valid frame a program's hook sees, before mutation.
fn valid(rng: &mut Rng, w: &World, prog: Prog) -> Built {
    match prog {
        Prog::Encap => {
            let src = if rng.pct(60) { addr(rng, 100, 0) } else { rng.pick(&[EXT, Ipv4Addr::new(8, 8, 8, 8), A_IP]) };
            let dst = addr(rng, 5, 75);
            framed(A_MAC, A_MAC, packet(rng, src, dst))
        }
        Prog::Decap | Prog::DecapXdp => uplink_frame(rng, w),
        Prog::PodEgress => {
            let src_mac = if rng.pct(85) { POD_A_MAC } else { rng.pick(&[POD_A6_MAC, [2, 0, 0, 0, 0, 0x66]]) };
            let src = if rng.pct(80) { LOCAL[0] } else { addr(rng, 60, 20) };
            if rng.pct(12) {
                // ARP from the pod: the sender pair its own, or a neighbour's / another MAC's.
                let sha = if rng.pct(80) { src_mac } else { rng.pick(&[POD_A_MAC, POD_A6_MAC, [2, 0, 0, 0, 0, 0x66]]) };
                let mut bytes = eth([0xff; 6], src_mac, 0x0806);
                bytes.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, rng.pick(&[1u8, 2])]);
                bytes.extend_from_slice(&sha);
                bytes.extend_from_slice(&src.octets());
                bytes.extend_from_slice(&[0; 6]);
                bytes.extend_from_slice(&LOCAL[1].octets());
                return Built { bytes, cuts: vec![14, 14 + 8, 14 + 27] };
            }
            let dst = addr(rng, 5, 75);
            framed(GW_A_MAC, src_mac, packet(rng, src, dst))
        }
        Prog::PodIngress => {
            let (src, dst) = (addr(rng, 10, 70), addr(rng, 85, 5));
            framed(POD_A_MAC, GW_A_MAC, packet(rng, src, dst))
        }
        Prog::Weft0Ingress => {
            let (src, dst) = (addr(rng, 5, 80), addr(rng, 85, 5));
            framed(A_MAC, B_MAC, packet(rng, src, dst))
        }
        Prog::BridgeEgress => {
            let dst_mac = rng.pick(&[POD_A_MAC, POD_A_MAC, POD_A6_MAC, [0xff; 6], [0x01, 0, 0x5e, 0, 0, 1], [2, 0, 0, 0, 0, 9]]);
            let (src, dst) = (addr(rng, 10, 70), addr(rng, 80, 5));
            framed(dst_mac, GW_A_MAC, packet(rng, src, dst))
        }
        Prog::Masq => {
            let src = if rng.pct(80) { addr(rng, 60, 30) } else { rng.pick(&[A_IP, EXT]) };
            let dst = if rng.pct(70) {
                rng.pick(&[EXT, EXT, Ipv4Addr::new(8, 8, 8, 8), Ipv4Addr::new(203, 0, 113, 5)])
            } else {
                addr(rng, 30, 30)
            };
            framed(UPLINK_MAC, [0x02, 0, 0, 0, 0, 0x01], packet(rng, src, dst))
        }
    }
}

/// Breaks a valid frame the ways the issue lists, each with some probability.
fn mutate(rng: &mut Rng, mut f: Built) -> Vec<u8> {
    let ip_offs: Vec<usize> = {
        // Every IPv4 header the frame carries (outer, inner, quoted): where truncation
        // cut points say one starts.
        let mut v = vec![14];
        if f.bytes.len() > 14 + 20 + 16 + 14 {
            let hlen = usize::from(f.bytes[14] & 0x0f) * 4;
            v.push(14 + hlen + 8 + 8 + 14);
        }
        v
    };
    let pick_ip = |rng: &mut Rng| rng.pick(&ip_offs);
    if rng.pct(5) {
        // A VLAN tag (outer, or on the inner frame).
        let at = if rng.pct(60) || ip_offs.len() < 2 { 12 } else { ip_offs[1] - 2 };
        if at + 2 <= f.bytes.len() {
            f.bytes.splice(at..at, [0x81, 0x00, 0x00, rng.next_u64() as u8]);
        }
    }
    let ip = pick_ip(rng);
    if ip + 20 <= f.bytes.len() {
        if rng.pct(5) {
            let v = rng.next_u64() as u16;
            f.bytes[ip + 2..ip + 4].copy_from_slice(&v.to_be_bytes());
            fix_ip_checksum(&mut f.bytes, ip);
        }
        if rng.pct(5) {
            f.bytes[ip + 10] ^= 1 << rng.below(8); // bad checksum
        }
        if rng.pct(4) {
            f.bytes[ip] = rng.pick(&[0x44u8, 0x40, 0x65, 0x4f, 0x46]);
            fix_ip_checksum(&mut f.bytes, ip);
        }
        if rng.pct(4) {
            f.bytes[ip + 8] = rng.pick(&[0u8, 1]);
            fix_ip_checksum(&mut f.bytes, ip);
        }
        if rng.pct(3) {
            f.bytes[ip + 6..ip + 8].copy_from_slice(&rng.pick(&[0x2000u16, 185, 0x20b9]).to_be_bytes());
            fix_ip_checksum(&mut f.bytes, ip);
        }
        let hlen = usize::from(f.bytes[ip] & 0x0f) * 4;
        if rng.pct(3) && f.bytes.len() >= ip + hlen + 8 && hlen >= 20 {
            let v = rng.next_u64() as u16;
            f.bytes[ip + hlen + 4..ip + hlen + 6].copy_from_slice(&v.to_be_bytes()); // UDP length
        }
    }
    if rng.pct(6) {
        let at = rng.below(f.bytes.len().min(90));
        f.bytes[at] ^= 1 << rng.below(8);
    }
    if rng.pct(3) {
        let mac = rng.pick(&[A_MAC, [0xff; 6], [0x01, 0, 0x5e, 0, 0, 1], POD_A_MAC]);
        f.bytes[..6].copy_from_slice(&mac);
    }
    if rng.pct(20) {
        let cut = rng.pick(&f.cuts).max(14);
        let cut = if rng.pct(20) { cut + rng.below(4) } else { cut };
        f.bytes.truncate(cut.max(14));
    } else if rng.pct(4) {
        let n = 14 + rng.below(f.bytes.len() - 13);
        f.bytes.truncate(n);
    }
    f.bytes
}

/// The flags a program is run with: mostly what makes it work, sometimes what turns it off.
fn flags(rng: &mut Rng, prog: Prog) -> u32 {
    let on = match prog {
        Prog::Encap | Prog::Decap | Prog::DecapXdp | Prog::BridgeEgress => {
            let mut f = 0;
            for flag in [FLAG_FAST_PATH, FLAG_MASQUERADE, FLAG_XDP_DECAP, FLAG_BRIDGE_BYPASS] {
                if rng.pct(50) {
                    f |= flag;
                }
            }
            return f;
        }
        // The source check alone (the default), with the fast path, or the fast path alone.
        Prog::PodEgress => rng.pick(&[FLAG_SOURCE_CHECK, FLAG_SOURCE_CHECK | FLAG_FAST_PATH, FLAG_FAST_PATH]),
        Prog::PodIngress | Prog::Weft0Ingress => FLAG_FAST_PATH,
        Prog::Masq => FLAG_MASQUERADE,
    };
    if rng.pct(90) { on | if rng.pct(50) { FLAG_MASQUERADE } else { 0 } } else { 0 }
}

/// One case for `prog`.
pub fn case(rng: &mut Rng, w: &World, prog: Prog) -> Case {
    let frame = valid(rng, w, prog);
    let frame = mutate(rng, frame);
    let mut cfg = DataplaneConfig { flags: flags(rng, prog), weft0_peer_ifindex: rng.pick(&[0u32, 1]), ..base_config() };
    if rng.pct(3) {
        cfg = DataplaneConfig::default();
    }
    let mark = if rng.pct(10) { rng.pick(&[0x4000u32, 0x1000, 0x4000 | 0x8]) } else { 0 };
    Case { frame, mark, cfg }
}
