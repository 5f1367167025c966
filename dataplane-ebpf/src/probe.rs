//! Questions to the running kernel that only a helper call can answer.

use aya_ebpf::{
    bindings::{BPF_F_ADJ_ROOM_FIXED_GSO, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC},
    programs::TcContext,
};
use weft_common::wire::{ENCAP_OVERHEAD, F_ADJ_ROOM_DECAP_L4_UDP};

/// Decapsulates the frame as TC decap would, with `BPF_F_ADJ_ROOM_DECAP_L4_UDP`;
/// returns 0 if the kernel took the flag, else the helper's (negative) error: a
/// kernel that does not know a flag answers `-EINVAL`.
pub fn decap_l4_udp(ctx: &TcContext) -> i32 {
    let flags = u64::from(BPF_F_ADJ_ROOM_FIXED_GSO) | F_ADJ_ROOM_DECAP_L4_UDP;
    match ctx.adjust_room(-(ENCAP_OVERHEAD as i32), BPF_ADJ_ROOM_MAC, flags) {
        Ok(()) => 0,
        Err(e) => e as i32,
    }
}
