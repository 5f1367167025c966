//! Wire constants of Flannel's vxlan backend, which weft speaks.

/// Flannel's default VNI.
pub const DEFAULT_VNI: u32 = 1;
/// Flannel's default VXLAN port (the Linux kernel's, not IANA's 4789).
pub const DEFAULT_PORT: u16 = 8472;

pub const ETH_HLEN: usize = 14;
pub const IPV4_HLEN: usize = 20;
pub const UDP_HLEN: usize = 8;
pub const VXLAN_HLEN: usize = 8;
/// Bytes encap adds in front of the inner IPv4 packet, beyond the frame's own
/// Ethernet header: outer IPv4 + UDP + VXLAN + inner Ethernet.
pub const ENCAP_OVERHEAD: usize = IPV4_HLEN + UDP_HLEN + VXLAN_HLEN + ETH_HLEN;
const _: () = assert!(ENCAP_OVERHEAD == 50);

/// VXLAN flags byte with the I bit ("VNI valid", RFC 7348 §5).
pub const VXLAN_FLAG_VNI: u8 = 0x08;

/// RFC 7348 §5: the source port SHOULD come from the dynamic range 49152–65535.
pub const SRC_PORT_MIN: u16 = 49152;
/// Number of ports in that range (a power of two, so a mask picks one).
pub const SRC_PORT_SPAN: u32 = 16384;

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// `BPF_F_ADJ_ROOM_DECAP_L4_UDP` (bpf-next, 2026; in no released kernel checked, 6.18
/// included): a decapsulating `bpf_skb_adjust_room` also clears the UDP tunnel's GSO
/// type and `skb->encapsulation`. Kernels without it refuse the flag (`-EINVAL`).
pub const F_ADJ_ROOM_DECAP_L4_UDP: u64 = 1 << 10;
