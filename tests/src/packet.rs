//! Crafting and reading frames for BPF_PROG_TEST_RUN, independent of the programs'
//! own parsing code (a second implementation, so a shared mistake cannot hide).

use std::net::Ipv4Addr;

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

pub fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// RFC 1071 checksum of `bytes` (odd length padded with zero).
pub fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An option-less IPv4 packet with a correct header checksum.
pub struct Ipv4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub ttl: u8,
    pub tos: u8,
    pub frag_off: u16,
}

impl Ipv4 {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, proto: u8) -> Self {
        Ipv4 { src, dst, proto, ttl: 64, tos: 0, frag_off: 0x4000 }
    }

    pub fn build(&self, payload: &[u8]) -> Vec<u8> {
        let total = (20 + payload.len()) as u16;
        let mut h = vec![0x45, self.tos];
        h.extend_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&0x1234u16.to_be_bytes());
        h.extend_from_slice(&self.frag_off.to_be_bytes());
        h.extend_from_slice(&[self.ttl, self.proto, 0, 0]);
        h.extend_from_slice(&self.src.octets());
        h.extend_from_slice(&self.dst.octets());
        let c = checksum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h.extend_from_slice(payload);
        h
    }
}

pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + payload.len());
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

pub fn vxlan(flags: u8, vni: u32, payload: &[u8]) -> Vec<u8> {
    let v = vni.to_be_bytes();
    let mut x = vec![flags, 0, 0, 0, v[1], v[2], v[3], 0];
    x.extend_from_slice(payload);
    x
}

/// A frame as Flannel's `flannel.1` (or a weft peer) puts it on the wire.
pub struct VxlanFrame<'a> {
    pub outer_src: Ipv4Addr,
    pub outer_dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub vni: u32,
    pub inner_src_mac: [u8; 6],
    pub inner_dst_mac: [u8; 6],
    pub inner: &'a [u8],
}

impl VxlanFrame<'_> {
    pub fn build(&self) -> Vec<u8> {
        let inner_eth = eth(self.inner_dst_mac, self.inner_src_mac, ETH_P_IPV4, self.inner);
        let outer = Ipv4 { ttl: 64, ..Ipv4::new(self.outer_src, self.outer_dst, IPPROTO_UDP) }.build(&udp(
            self.sport,
            self.dport,
            &vxlan(0x08, self.vni, &inner_eth),
        ));
        eth([0x02, 0, 0, 0, 0, 0xaa], [0x02, 0, 0, 0, 0, 0xbb], ETH_P_IPV4, &outer)
    }
}

/// Fields of an encapsulated frame, read at fixed offsets (option-less outer header).
#[derive(Debug)]
pub struct Encapsulated<'a> {
    pub outer_ethertype: u16,
    pub outer_ip: &'a [u8],
    pub udp: &'a [u8],
    pub vxlan: &'a [u8],
    pub inner_eth: &'a [u8],
    pub inner_ip: &'a [u8],
}

impl<'a> Encapsulated<'a> {
    pub fn parse(f: &'a [u8]) -> Option<Self> {
        if f.len() < 64 {
            return None;
        }
        Some(Encapsulated {
            outer_ethertype: u16::from_be_bytes([f[12], f[13]]),
            outer_ip: &f[14..34],
            udp: &f[34..42],
            vxlan: &f[42..50],
            inner_eth: &f[50..64],
            inner_ip: &f[64..],
        })
    }
    pub fn be16(b: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([b[at], b[at + 1]])
    }
}

/// An ARP packet for IPv4 over Ethernet (RFC 826); `oper` 1 request, 2 reply.
pub fn arp(oper: u16, sha: [u8; 6], spa: Ipv4Addr, tha: [u8; 6], tpa: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 0x08, 0x00, 6, 4];
    a.extend_from_slice(&oper.to_be_bytes());
    a.extend_from_slice(&sha);
    a.extend_from_slice(&spa.octets());
    a.extend_from_slice(&tha);
    a.extend_from_slice(&tpa.octets());
    a
}
