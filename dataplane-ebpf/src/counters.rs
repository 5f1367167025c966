//! One count per packet and hook, by verdict (with XDP decap a frame counts once in
//! XDP as `decapsulated`, and its GRO aggregate once in TC as `delivered_from_xdp`).

use weft_common::counters::Verdict;

use crate::maps::WEFT_COUNTERS;

#[inline(always)]
pub fn count(verdict: Verdict, bytes: u32) {
    if let Some(c) = WEFT_COUNTERS.get_ptr_mut(verdict.index()) {
        // SAFETY: the pointer comes from a successful per-CPU array lookup, so it points
        // at this CPU's slot; no other CPU writes it and this program is not re-entered
        // on the same CPU while it runs, so the plain adds do not race.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += u64::from(bytes);
        }
    }
}
