//! MTU checks, GSO-aware, against a device's current MTU.

use aya_ebpf::{bindings::bpf_check_mtu_flags::BPF_MTU_CHK_SEGS, helpers::generated::bpf_check_mtu, programs::TcContext};
use weft_common::{config::DataplaneConfig, wire::ETH_HLEN};

/// Whether the packet as it stands (every segment, if it is GSO) fits `ifindex`'s MTU.
#[inline(always)]
fn fits(ctx: &TcContext, ifindex: u32) -> bool {
    let mut mtu_len: u32 = 0;
    // SAFETY: plain helper call on this program's own context; `mtu_len` is ours.
    let rc = unsafe { bpf_check_mtu(ctx.skb.skb as *mut _, ifindex, &mut mtu_len, 0, u64::from(BPF_MTU_CHK_SEGS)) };
    rc == 0
}

/// Whether the packet fits `weft0`'s MTU. A packet on its own is compared with the MTU
/// the agent recorded in the config, as the kernel would compare it (L3 length against
/// the MTU): the helper looks the device up by index for every packet. A GSO packet
/// (each segment must fit), or a config from an agent that predates the field, asks
/// the kernel.
#[inline(always)]
pub fn fits_weft0(ctx: &TcContext, cfg: &DataplaneConfig) -> bool {
    // SAFETY: reading a field of the context the kernel passed us.
    let gso = unsafe { (*ctx.skb.skb).gso_size } != 0;
    if !gso && cfg.weft0_mtu != 0 {
        return ctx.len() <= cfg.weft0_mtu + ETH_HLEN as u32;
    }
    fits(ctx, cfg.weft0_ifindex)
}
