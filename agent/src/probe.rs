//! What the running kernel's BPF helpers accept, asked by running a program once
//! (`BPF_PROG_TEST_RUN`) rather than guessed from the kernel version: distributions
//! backport, and a helper flag is only known to work once the kernel took it.

use weft_common::{
    maps::programs,
    wire::{DEFAULT_PORT, ETH_HLEN, ETH_P_IPV4, IPPROTO_UDP, IPV4_HLEN, UDP_HLEN, VXLAN_FLAG_VNI, VXLAN_HLEN},
};

use crate::dataplane::Dataplane;

/// Whether `bpf_skb_adjust_room` takes `BPF_F_ADJ_ROOM_DECAP_L4_UDP` (bpf-next, 2026),
/// which clears a decapsulated packet's tunnel GSO state. An error of the probe
/// itself counts as no: decap then works as on kernels without the flag.
pub fn decap_l4_udp(dataplane: &mut Dataplane) -> bool {
    match dataplane.test_run(programs::PROBE_DECAP_L4_UDP, &vxlan_frame()) {
        Ok(0) => {
            tracing::info!("the kernel clears the tunnel's GSO state at decap (BPF_F_ADJ_ROOM_DECAP_L4_UDP)");
            true
        }
        Ok(rc) => {
            let err = std::io::Error::from_raw_os_error(-rc);
            tracing::info!(
                "no BPF_F_ADJ_ROOM_DECAP_L4_UDP in this kernel ({err}): decapsulated super-packets keep the tunnel's GSO type"
            );
            false
        }
        Err(e) => {
            tracing::warn!("probing for BPF_F_ADJ_ROOM_DECAP_L4_UDP: {e:#}; assuming the kernel lacks it");
            false
        }
    }
}

/// A minimal VXLAN frame (documentation addresses): outer Ethernet, IPv4, UDP to the
/// VXLAN port, VXLAN, inner Ethernet, inner IPv4/UDP with a few bytes of payload.
pub fn vxlan_frame() -> Vec<u8> {
    const PAYLOAD: usize = 8;
    let inner_ip_len = IPV4_HLEN + UDP_HLEN + PAYLOAD;
    let outer_ip_len = IPV4_HLEN + UDP_HLEN + VXLAN_HLEN + ETH_HLEN + inner_ip_len;
    let mut f = Vec::with_capacity(ETH_HLEN + outer_ip_len);
    ethernet(&mut f);
    ipv4(&mut f, outer_ip_len, [192, 0, 2, 1], [192, 0, 2, 2]);
    udp(&mut f, 49152, DEFAULT_PORT, UDP_HLEN + VXLAN_HLEN + ETH_HLEN + inner_ip_len);
    f.extend_from_slice(&[VXLAN_FLAG_VNI, 0, 0, 0, 0, 0, 1, 0]);
    ethernet(&mut f);
    ipv4(&mut f, inner_ip_len, [198, 51, 100, 1], [198, 51, 100, 2]);
    udp(&mut f, 1024, 1024, UDP_HLEN + PAYLOAD);
    f.extend_from_slice(&[0; PAYLOAD]);
    f
}

fn ethernet(f: &mut Vec<u8>) {
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1]);
    f.extend_from_slice(&ETH_P_IPV4.to_be_bytes());
}

fn ipv4(f: &mut Vec<u8>, total_len: usize, src: [u8; 4], dst: [u8; 4]) {
    let start = f.len();
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&(total_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, IPPROTO_UDP, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    let sum = checksum(&f[start..]);
    f[start + 10..start + 12].copy_from_slice(&sum.to_be_bytes());
}

fn udp(f: &mut Vec<u8>, sport: u16, dport: u16, len: usize) {
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&(len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
}

/// The Internet checksum of an IPv4 header.
fn checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_frame_is_well_formed() {
        let f = vxlan_frame();
        assert_eq!(f.len(), ETH_HLEN + 50 + IPV4_HLEN + UDP_HLEN + 8);
        // Outer and inner IPv4 headers check to zero.
        assert_eq!(checksum(&f[ETH_HLEN..ETH_HLEN + IPV4_HLEN]), 0);
        let inner = ETH_HLEN + 50;
        assert_eq!(checksum(&f[inner..inner + IPV4_HLEN]), 0);
        assert_eq!(u16::from_be_bytes([f[ETH_HLEN + 22], f[ETH_HLEN + 23]]), DEFAULT_PORT);
    }
}
