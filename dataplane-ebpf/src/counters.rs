//! The one count every packet gets: per (hook, verdict), per CPU. With XDP decap a
//! frame counts once at the XDP hook, and its GRO aggregate once at the uplink's TC
//! ingress (`delivered_from_xdp`).

use weft_common::counters::{Hook, Verdict, counter_index};

use crate::maps::WEFT_COUNTERS;

#[inline(always)]
pub fn count(hook: Hook, verdict: Verdict, bytes: u32) {
    if let Some(c) = WEFT_COUNTERS.get_ptr_mut(counter_index(hook, verdict)) {
        // SAFETY: the pointer comes from a successful per-CPU array lookup, so it points
        // at this CPU's slot; no other CPU writes it and this program is not re-entered
        // on the same CPU while it runs, so the plain adds do not race.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += u64::from(bytes);
        }
    }
}
