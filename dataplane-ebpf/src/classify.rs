//! Classification shared by the pipelines: what a decapsulated frame is, for the
//! choice of its way into `weft0`.

use weft_common::wire::{ETH_HLEN, IPPROTO_TCP};

use crate::parse::{Ipv4Hdr, Packet, TcpHdr};

/// Whether weft0's GRO could merge this inner frame with others: TCP carrying data.
/// Not a handshake segment or bare ACK: GRO has nothing to merge, and when one
/// overtakes its flow's data still in the peer's ring, the receiver takes it all the
/// same (a segment without data never waits in the out-of-order queue; conntrack
/// accepts sequence numbers anywhere in the window). A FIN or RST keeps the data's
/// path: it ends the stream after that data.
#[inline(always)]
pub fn aggregatable(pkt: Packet) -> bool {
    let Some(ip) = pkt.header::<Ipv4Hdr>(ETH_HLEN) else {
        return false;
    };
    if ip.protocol != IPPROTO_TCP {
        return false;
    }
    // Fragments carry data (and a later one no TCP header to read); a zero total
    // length is a BIG TCP super-packet's.
    if ip.is_fragment() || ip.tot_len == [0, 0] {
        return true;
    }
    let tcp_off = ETH_HLEN + ip.header_len();
    let Some(tcp) = pkt.header::<TcpHdr>(tcp_off) else {
        // Not in the linear head: keep the data path.
        return true;
    };
    let payload = usize::from(u16::from_be_bytes(ip.tot_len)) > ip.header_len() + tcp.header_len();
    payload || tcp.flags & (TcpHdr::FIN | TcpHdr::RST) != 0
}
