//! MTU checks, GSO-aware, against a device's current MTU.

use aya_ebpf::{bindings::bpf_check_mtu_flags::BPF_MTU_CHK_SEGS, helpers::generated::bpf_check_mtu, programs::TcContext};

/// Whether the packet as it stands (every segment, if it is GSO) fits `ifindex`'s MTU.
#[inline(always)]
pub fn fits(ctx: &TcContext, ifindex: u32) -> bool {
    let mut mtu_len: u32 = 0;
    // SAFETY: plain helper call on this program's own context; `mtu_len` is ours.
    let rc = unsafe { bpf_check_mtu(ctx.skb.skb as *mut _, ifindex, &mut mtu_len, 0, u64::from(BPF_MTU_CHK_SEGS)) };
    rc == 0
}
