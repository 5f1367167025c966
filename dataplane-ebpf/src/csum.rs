//! Internet checksum arithmetic (RFC 1071, RFC 1624).

use crate::parse::Ipv4Hdr;

#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// The checksum of an option-less IPv4 header (its `check` field is ignored).
#[inline(always)]
pub fn ipv4_header(h: &Ipv4Hdr) -> [u8; 2] {
    let w = |b: [u8; 2]| u32::from(u16::from_be_bytes(b));
    let sum = w([h.version_ihl, h.tos])
        + w(h.tot_len)
        + w(h.id)
        + w(h.frag_off)
        + w([h.ttl, h.protocol])
        + w([h.saddr[0], h.saddr[1]])
        + w([h.saddr[2], h.saddr[3]])
        + w([h.daddr[0], h.daddr[1]])
        + w([h.daddr[2], h.daddr[3]]);
    (!fold(sum)).to_be_bytes()
}

/// Incremental update of `check` for one 16-bit word changing from `old` to `new`
/// (RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m')).
#[inline(always)]
pub fn replace16(check: [u8; 2], old: u16, new: u16) -> [u8; 2] {
    let hc = u32::from(!u16::from_be_bytes(check));
    let sum = hc + u32::from(!old) + u32::from(new);
    (!fold(sum)).to_be_bytes()
}
