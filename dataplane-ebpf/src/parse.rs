//! Header layouts and bounds-checked access to packet bytes.
//!
//! Headers are `#[repr(C)]` structs of byte arrays in wire order (alignment 1, so a
//! pointer to any offset is valid), converted explicitly with `from_be_bytes`.
//! [`Packet::ptr_at`] is the only bounds check against `data_end`: TC and XDP both
//! hand us `[data, data_end)`, so everything built on it works in either.

use core::mem::size_of;

#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ethertype: [u8; 2],
}

#[repr(C)]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub tot_len: [u8; 2],
    pub id: [u8; 2],
    pub frag_off: [u8; 2],
    pub ttl: u8,
    pub protocol: u8,
    pub check: [u8; 2],
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
}

impl Ipv4Hdr {
    /// Header length in bytes; 20..=60 for a valid header.
    #[inline(always)]
    pub fn header_len(&self) -> usize {
        usize::from(self.version_ihl & 0x0f) * 4
    }

    #[inline(always)]
    pub fn is_valid(&self) -> bool {
        self.version_ihl >> 4 == 4 && self.header_len() >= 20
    }

    /// A non-zero fragment offset: no transport header in this packet.
    #[inline(always)]
    pub fn is_later_fragment(&self) -> bool {
        u16::from_be_bytes(self.frag_off) & 0x1fff != 0
    }

    /// More-fragments set or a non-zero offset: not a whole datagram.
    #[inline(always)]
    pub fn is_fragment(&self) -> bool {
        u16::from_be_bytes(self.frag_off) & 0x3fff != 0
    }
}

#[repr(C)]
pub struct UdpHdr {
    pub source: [u8; 2],
    pub dest: [u8; 2],
    pub len: [u8; 2],
    pub check: [u8; 2],
}

/// The first four bytes of TCP and UDP headers alike.
#[repr(C)]
pub struct L4Ports {
    pub source: [u8; 2],
    pub dest: [u8; 2],
}

/// A TCP header up to its flags.
#[repr(C)]
pub struct TcpHdr {
    pub source: [u8; 2],
    pub dest: [u8; 2],
    pub seq: [u8; 4],
    pub ack_seq: [u8; 4],
    /// Data offset (in 32-bit words) in the high nibble.
    pub doff: u8,
    pub flags: u8,
}

impl TcpHdr {
    pub const FIN: u8 = 0x01;
    pub const RST: u8 = 0x04;

    #[inline(always)]
    pub fn header_len(&self) -> usize {
        usize::from(self.doff >> 4) * 4
    }
}

/// An ICMP header with the echo fields (identifier, sequence).
#[repr(C)]
pub struct IcmpHdr {
    pub kind: u8,
    pub code: u8,
    pub check: [u8; 2],
    pub id: [u8; 2],
    pub seq: [u8; 2],
}

/// An ARP packet for IPv4 over Ethernet (RFC 826; the only kind a pod's `eth0` sends).
#[repr(C)]
pub struct ArpHdr {
    pub htype: [u8; 2],
    pub ptype: [u8; 2],
    pub hlen: u8,
    pub plen: u8,
    pub oper: [u8; 2],
    /// Sender hardware and protocol address: what a neighbour table learns.
    pub sha: [u8; 6],
    pub spa: [u8; 4],
    pub tha: [u8; 6],
    pub tpa: [u8; 4],
}

#[repr(C)]
pub struct VxlanHdr {
    pub flags: u8,
    pub _reserved1: [u8; 3],
    /// 24-bit VNI, network order.
    pub vni: [u8; 3],
    pub _reserved2: u8,
}

impl VxlanHdr {
    #[inline(always)]
    pub fn vni(&self) -> u32 {
        u32::from_be_bytes([0, self.vni[0], self.vni[1], self.vni[2]])
    }
}

const _: () = assert!(size_of::<EthHdr>() == 14);
const _: () = assert!(size_of::<Ipv4Hdr>() == 20);
const _: () = assert!(size_of::<UdpHdr>() == 8);
const _: () = assert!(size_of::<VxlanHdr>() == 8);
const _: () = assert!(size_of::<L4Ports>() == 4);
const _: () = assert!(size_of::<IcmpHdr>() == 8);
const _: () = assert!(size_of::<ArpHdr>() == 28);

/// The linear bytes of a packet, `[data, data_end)`.
#[derive(Clone, Copy)]
pub struct Packet {
    data: usize,
    data_end: usize,
}

impl Packet {
    #[inline(always)]
    pub fn new(data: usize, data_end: usize) -> Self {
        Packet { data, data_end }
    }

    /// A pointer to a `T` at `offset`, if all of it lies inside the packet.
    /// `offset` must be bounded (masked or checked) for the verifier to follow it.
    #[inline(always)]
    pub fn ptr_at<T>(&self, offset: usize) -> Option<*mut T> {
        let start = self.data + offset;
        if start + size_of::<T>() > self.data_end {
            return None;
        }
        Some(start as *mut T)
    }

    /// A shared view of a header at `offset`.
    #[inline(always)]
    pub fn header<T>(&self, offset: usize) -> Option<&T> {
        // SAFETY: `ptr_at` checked that `offset..offset + size_of::<T>()` lies within
        // the packet; `T` is an alignment-1 header of byte arrays, valid for any bytes.
        self.ptr_at::<T>(offset).map(|p| unsafe { &*p })
    }

    /// An exclusive view of a header at `offset`.
    #[inline(always)]
    #[expect(clippy::mut_from_ref, reason = "a Packet is two addresses into the kernel's packet buffer, not its owner")]
    pub fn header_mut<T>(&self, offset: usize) -> Option<&mut T> {
        // SAFETY: as in `header`; the program is the only writer of the packet while
        // it runs, and callers hold one view per header at a time.
        self.ptr_at::<T>(offset).map(|p| unsafe { &mut *p })
    }
}
